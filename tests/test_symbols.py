"""Symbol sequences: every accepted form, the vocabulary's unknown-symbol policies, the next-element
layout, and every check on user input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from modeshift.symbols import (
    END,
    UNKNOWN,
    SymbolSequences,
    Vocabulary,
    as_symbol_sequences,
    next_targets,
)

# --------------------------------------------------------------------------- forms


@pytest.mark.parametrize(
    "data, symbols, codes, lengths",
    [
        ("ACGGA", ("A", "C", "G"), [0, 1, 2, 2, 0], [5]),
        (["home", "cart", "home"], ("home", "cart"), [0, 1, 0], [3]),
        (np.array([3, 1, 3]), (3, 1), [0, 1, 0], [3]),
        (pd.Series(["x", "y"]), ("x", "y"), [0, 1], [2]),
        ([["a", "b"], ["b"]], ("a", "b"), [0, 1, 1], [2, 1]),
        (["ab", list("ba")], ("a", "b"), [0, 1, 1, 0], [2, 2]),  # beside other sequences, a string is one too
        ([np.array([1, 2]), (2, 1, 1)], (1, 2), [0, 1, 1, 0, 0], [2, 3]),
        (np.array([[0, 1], [1, 1]]), (0, 1), [0, 1, 1, 1], [2, 2]),
        ([[(1, 2), (3, 4)], [(1, 2)]], ((1, 2), (3, 4)), [0, 1, 0], [2, 1]),  # tuples stay single symbols
    ],
)
def test_accepted_forms(data, symbols, codes, lengths):
    seqs = as_symbol_sequences(data)
    assert isinstance(seqs, SymbolSequences)
    assert seqs.vocabulary.symbols == symbols
    assert seqs.codes.tolist() == codes and seqs.codes.dtype == np.int64
    assert seqs.lengths.tolist() == lengths and len(seqs) == len(lengths)
    assert [s.tolist() for s in seqs] == [codes[a:b] for a, b in zip(seqs.offsets[:-1], seqs.offsets[1:])]
    assert seqs.times is None and seqs.ids is None


def test_event_log_orders_each_case_by_time():
    log = pd.DataFrame(
        {
            "case_id": ["x", "y", "x", "x", "y"],
            "activity": ["pay", "view", "view", "cart", "cart"],
            "timestamp": ["2024-01-01 10:00", "2024-01-01 09:00", "2024-01-01 09:00", "2024-01-02", "2024-01-01 09:30"],
        }
    )
    seqs = as_symbol_sequences(log)
    assert seqs.ids == ["x", "y"]
    assert [seqs.vocabulary.decode(s) for s in seqs] == [["view", "pay", "cart"], ["view", "cart"]]
    np.testing.assert_allclose(np.diff(seqs.times_of(0)), [3600.0, 50400.0])
    assert seqs.times_of(1)[0] == pd.Timestamp("2024-01-01 09:00", tz="UTC").timestamp()
    seqs.require_times()
    # numeric times and other column names; without a time column the rows keep their order
    numeric = log.assign(t=[5.0, 1.0, 2.0, 9.0, 3.0]).rename(columns={"case_id": "id", "activity": "event"})
    seqs = as_symbol_sequences(numeric, id_column="id", symbol_column="event", time_column="t")
    assert seqs.times.tolist() == [2.0, 5.0, 9.0, 1.0, 3.0]
    untimed = as_symbol_sequences(log.drop(columns="timestamp"))
    assert [untimed.vocabulary.decode(s) for s in untimed] == [["pay", "view", "cart"], ["view", "cart"]]
    assert untimed.times is None


def test_times_given_per_sequence():
    seqs = as_symbol_sequences([["a", "b"], ["c"]], times=[[0.0, 1.5], [2]])
    assert seqs.times.tolist() == [0.0, 1.5, 2.0]
    with pytest.raises(ValueError, match="sequence 0, time step 1: time stamp repeats the previous one"):
        as_symbol_sequences([["a", "b"]], times=[[1.0, 1.0]]).require_times()
    as_symbol_sequences([["a", "b"]], times=[[1.0, 1.0]]).require_times(strictly_increasing=False)
    with pytest.raises(ValueError, match="needs time stamps"):
        as_symbol_sequences("ab").require_times("MarkovJumpProcess")
    with pytest.raises(ValueError, match="no time stamps"):
        as_symbol_sequences("ab").times_of(0)


# ------------------------------------------------------------------------ vocabulary


def test_vocabulary_policies_for_unseen_symbols():
    vocabulary = Vocabulary(("a", "b"))
    assert len(vocabulary) == 2 and "a" in vocabulary and "z" not in vocabulary
    assert vocabulary.encode(["b", "z", "a"], unknown="map").tolist() == [1, 2, 0]
    assert vocabulary.encode(["b", "z", "a"], unknown="ignore").tolist() == [1, 0]
    with pytest.raises(ValueError, match="time step 1: symbol 'z' is not in the vocabulary"):
        vocabulary.encode(["b", "z"])
    with pytest.raises(ValueError, match="unknown must be one of"):
        vocabulary.encode(["a"], unknown="drop")
    assert vocabulary.decode([1, 2, 0]) == ["b", None, "a"]
    seqs = as_symbol_sequences([["a", "q"], ["b"]], vocabulary=vocabulary, unknown="map")
    assert seqs.codes.tolist() == [0, 2, 1] and seqs.vocabulary is vocabulary
    with pytest.raises(ValueError, match="sequence 1, time step 0: symbol 'q'"):
        as_symbol_sequences([["a"], ["q"]], vocabulary=vocabulary)


def test_numeric_vocabulary_matches_numbers_of_any_integer_type():
    vocabulary = as_symbol_sequences(np.array([10, 20, 30])).vocabulary
    assert vocabulary.symbols == (10, 20, 30)
    assert vocabulary.encode(np.array([30, 10], dtype=np.uint8)).tolist() == [2, 0]
    assert vocabulary.encode([20, 40], unknown="map").tolist() == [1, 3]
    assert vocabulary.encode(["10"], unknown="map").tolist() == [3]  # a string is not a number


def test_encoded_sequences_pass_through_or_are_re_encoded():
    seqs = as_symbol_sequences([["a", "b"], ["c"]], times=[[0, 1], [5]])
    assert as_symbol_sequences(seqs) is seqs
    assert as_symbol_sequences(seqs, vocabulary=Vocabulary(("a", "b", "c"))) is seqs
    other = Vocabulary(("c", "b", "a", "d"))
    moved = as_symbol_sequences(seqs, vocabulary=other)
    assert moved.codes.tolist() == [2, 1, 0] and moved.vocabulary is other
    assert moved.times.tolist() == [0, 1, 5]
    with pytest.raises(ValueError, match="symbol 'c' is not in the vocabulary"):
        as_symbol_sequences(seqs, vocabulary=Vocabulary(("a", "b")))
    mapped = as_symbol_sequences(seqs, vocabulary=Vocabulary(("a", "b")), unknown="map")
    assert mapped.codes.tolist() == [0, 1, 2]


# ----------------------------------------------------------------- next-element layout


def test_next_targets_and_labels():
    seqs = as_symbol_sequences([["a", "b", "a"], ["c"]])
    assert next_targets(seqs).tolist() == [0, 1, 0, 4, 2, 4]
    mapped = as_symbol_sequences([["a", "z"]], vocabulary=seqs.vocabulary, unknown="map")
    assert next_targets(mapped).tolist() == [0, 3, 4]
    assert seqs.vocabulary.next_labels == ("a", "b", "c", UNKNOWN, END)
    assert repr(END) == str(END) == "END" and repr(UNKNOWN) == "UNKNOWN"
    assert END != "END" and UNKNOWN not in seqs.vocabulary


# ------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "data, kwargs, error, message",
    [
        ([], {}, ValueError, "no sequences given"),
        ("", {}, ValueError, "sequence 0 is empty"),
        ([["a"], []], {}, ValueError, "sequence 1 is empty"),
        ([["a"], np.array([])], {}, ValueError, "sequence 1 is empty"),
        (42, {}, TypeError, "expected symbol sequences, got int"),
        ([1, ["b"]], {}, ValueError, "mixed input"),
        ([{"a": 1}, {"b": 2}], {}, TypeError, "time step 0: symbol {'a': 1} is not hashable"),
        ([["z", "q"]], {"vocabulary": Vocabulary(("a",)), "unknown": "ignore"}, ValueError, "every symbol is outside"),
        ([["a"]], {"vocabulary": Vocabulary(("a",)), "unknown": "skip"}, ValueError, "unknown must be one of"),
    ],
)
def test_bad_sequences(data, kwargs, error, message):
    with pytest.raises(error, match=message):
        as_symbol_sequences(data, **kwargs)


@pytest.mark.parametrize(
    "times, message",
    [
        ([[0.0, -1.0]], "sequence 0, time step 1: time stamp is negative"),
        ([[2.0, 1.0]], "sequence 0, time step 1: time stamps decrease"),
        ([[0.0, np.nan]], "sequence 0, time step 1: time stamp is not finite"),
        ([[0.0, np.inf]], "time stamp is not finite"),
        ([[0.0]], "sequence 0: 1 time stamps for 2 symbols"),
        ([[0.0, 1.0], [2.0]], "2 time arrays given for 1 sequences"),
        ([["soon", "later"]], "sequence 0: time stamps are not numbers"),
    ],
)
def test_bad_time_stamps(times, message):
    with pytest.raises(ValueError, match=message):
        as_symbol_sequences([["a", "b"]], times=times)


def test_ignoring_unknown_symbols_cannot_drop_time_stamped_events():
    with pytest.raises(ValueError, match="cannot drop events from time-stamped sequences"):
        as_symbol_sequences([["a", "z"]], vocabulary=Vocabulary(("a",)), unknown="ignore", times=[[0, 1]])


@pytest.mark.parametrize(
    "frame, kwargs, message",
    [
        (pd.DataFrame({"case_id": [1], "event": ["a"]}), {}, "column 'activity' not found"),
        (pd.DataFrame({"case_id": [1], "activity": ["a"]}), {"time_column": "when"}, "column 'when' not found"),
        (pd.DataFrame({"case_id": [], "activity": []}), {}, "the event log has no rows"),
        (pd.DataFrame({"case_id": [1, None], "activity": ["a", "b"]}), {}, "row 1: missing case id or symbol"),
        (pd.DataFrame({"case_id": [1, 1], "activity": ["a", None]}), {}, "row 1: missing case id or symbol"),
        (
            pd.DataFrame({"case_id": [1, 1], "activity": ["a", "b"], "timestamp": ["2024-01-01", "yesterday"]}),
            {},
            "row 1, column 'timestamp': not a time stamp: 'yesterday'",
        ),
        (
            pd.DataFrame({"case_id": [1, 1], "activity": ["a", "b"], "timestamp": [0.0, np.nan]}),
            {},
            "row 1, column 'timestamp': time stamp is missing or not finite",
        ),
        (
            pd.DataFrame({"case_id": [1, 1], "activity": ["a", "b"], "timestamp": [-5.0, 1.0]}),
            {},
            "sequence 0, time step 0: time stamp is negative",
        ),
    ],
)
def test_bad_event_logs(frame, kwargs, message):
    with pytest.raises(ValueError, match=message):
        as_symbol_sequences(frame, **kwargs)
