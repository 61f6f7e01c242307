"""Symbol sequences in the one data container: every accepted form, the vocabulary's unknown-symbol
policies, the next-element layout, and every check on user input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from modeshift.data import Sequences, as_sequences
from modeshift.symbols import END, UNKNOWN, Vocabulary, as_symbol_sequences, n_targets, next_targets

# --------------------------------------------------------------------------- forms


@pytest.mark.parametrize(
    "data, symbols, codes, lengths, form",
    [
        ("ACGGA", ("A", "C", "G"), [0, 1, 2, 2, 0], [5], "array"),
        (["home", "cart", "home"], ("home", "cart"), [0, 1, 0], [3], "array"),
        (np.array([3, 1, 3]), (3, 1), [0, 1, 0], [3], "array"),
        (pd.Series(["x", "y"]), ("x", "y"), [0, 1], [2], "array"),
        ([["a", "b"], ["b"]], ("a", "b"), [0, 1, 1], [2, 1], "list"),
        (["ab", list("ba")], ("a", "b"), [0, 1, 1, 0], [2, 2], "list"),  # beside other sequences, a string is one too
        ([np.array([1, 2]), (2, 1, 1)], (1, 2), [0, 1, 1, 0, 0], [2, 3], "list"),
        (np.array([[0, 1], [1, 1]]), (0, 1), [0, 1, 1, 1], [2, 2], "list"),
        ([[(1, 2), (3, 4)], [(1, 2)]], ((1, 2), (3, 4)), [0, 1, 0], [2, 1], "list"),  # tuples stay single symbols
    ],
)
def test_accepted_forms(data, symbols, codes, lengths, form):
    seqs = as_sequences(data, symbols=True)
    assert isinstance(seqs, Sequences) and seqs.form == form
    assert seqs.vocabulary.symbols == symbols
    assert seqs.codes.tolist() == codes and seqs.codes.dtype == np.int64
    assert seqs.values.shape == (len(codes), 1) and seqs.n_features == 1  # the codes are the one column of values
    assert seqs.lengths.tolist() == lengths and len(seqs) == len(lengths)
    assert [s.tolist() for s in seqs] == [codes[a:b] for a, b in zip(seqs.offsets[:-1], seqs.offsets[1:])]
    assert seqs.times is None and seqs.ids is None


def test_a_flat_sequence_cut_by_lengths_and_results_in_input_form():
    seqs = as_sequences(list("abcab"), [2, 3], symbols=True)
    assert seqs.lengths.tolist() == [2, 3] and seqs.codes.tolist() == [0, 1, 2, 0, 1] and seqs.form == "array"
    per_step = np.arange(5)
    np.testing.assert_array_equal(seqs.restore(per_step), per_step)
    listed = as_sequences([list("ab"), list("cab")], symbols=True)
    assert [r.tolist() for r in listed.restore(per_step)] == [[0, 1], [2, 3, 4]]
    with pytest.raises(ValueError, match="lengths sum to 4 but the data have 5 symbols"):
        as_sequences(list("abcab"), [2, 2], symbols=True)
    with pytest.raises(ValueError, match="lengths cannot be given with a list of sequences"):
        as_sequences([list("ab"), list("c")], [2, 1], symbols=True)
    with pytest.raises(ValueError, match="sequence 1 is empty"):
        as_sequences(list("ab"), [2, 0], symbols=True)


def test_event_log_orders_each_case_by_time():
    log = pd.DataFrame(
        {
            "case_id": ["x", "y", "x", "x", "y"],
            "activity": ["pay", "view", "view", "cart", "cart"],
            "timestamp": ["2024-01-01 10:00", "2024-01-01 09:00", "2024-01-01 09:00", "2024-01-02", "2024-01-01 09:30"],
        }
    )
    seqs = as_sequences(log, symbols=True)
    assert seqs.ids == ["x", "y"] and seqs.form == "frame"
    assert [seqs.vocabulary.decode(s) for s in seqs] == [["view", "pay", "cart"], ["view", "cart"]]
    np.testing.assert_allclose(np.diff(seqs.times_of(0)), [3600.0, 50400.0])
    assert seqs.times_of(1)[0] == pd.Timestamp("2024-01-01 09:00", tz="UTC").timestamp()
    seqs.require_times()
    # a per-step result comes back in the log's row order
    assert seqs.vocabulary.decode(seqs.restore(seqs.codes)) == log["activity"].tolist()
    # numeric times and other column names; without a time column the rows keep their order
    numeric = log.assign(t=[5.0, 1.0, 2.0, 9.0, 3.0]).rename(columns={"case_id": "id", "activity": "event"})
    seqs = as_sequences(numeric, symbols=True, id_column="id", symbol_column="event", time_column="t")
    assert seqs.times.tolist() == [2.0, 5.0, 9.0, 1.0, 3.0]
    untimed = as_sequences(log.drop(columns="timestamp"), symbols=True)
    assert [untimed.vocabulary.decode(s) for s in untimed] == [["pay", "view", "cart"], ["view", "cart"]]
    assert untimed.times is None
    one = as_sequences(log.drop(columns="case_id"), symbols=True)  # without a case column: one sequence
    assert one.lengths.tolist() == [5] and one.vocabulary.decode(one[0])[:2] == ["view", "view"]


def test_times_given_per_sequence_or_for_all_steps():
    seqs = as_sequences([["a", "b"], ["c"]], symbols=True, times=[[0.0, 1.5], [2]])
    assert seqs.times.tolist() == [0.0, 1.5, 2.0]
    assert as_sequences("abc", symbols=True, times=[0, 1, 1]).times.tolist() == [0.0, 1.0, 1.0]
    assert as_sequences(list("abc"), [2, 1], symbols=True, times=[0, 1, 0]).times.tolist() == [0.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="sequence 0, time step 1: time stamp repeats the previous one"):
        as_sequences([["a", "b"]], symbols=True, times=[[1.0, 1.0]]).require_times()
    as_sequences([["a", "b"]], symbols=True, times=[[1.0, 1.0]]).require_times(strictly_increasing=False)
    with pytest.raises(ValueError, match="needs time stamps"):
        as_sequences("ab", symbols=True).require_times("MarkovJumpProcess")
    with pytest.raises(ValueError, match="no time stamps"):
        as_sequences("ab", symbols=True).times_of(0)


def test_dates_before_1970_are_time_stamps_too():
    log = pd.DataFrame({"case_id": [1, 1], "activity": ["a", "b"], "timestamp": ["1969-12-31", "1970-01-02"]})
    np.testing.assert_allclose(as_sequences(log, symbols=True).times, [-86400.0, 86400.0])
    assert as_sequences([["a", "b"]], symbols=True, times=[[-5.0, -1.0]]).times.tolist() == [-5.0, -1.0]


# ------------------------------------------------------------------------ vocabulary


def test_vocabulary_policies_for_unseen_symbols():
    vocabulary = Vocabulary(("a", "b"))
    assert len(vocabulary) == 2 and "a" in vocabulary and "z" not in vocabulary
    assert vocabulary.encode(["b", "z", "a"], unknown="map").tolist() == [1, 2, 0]
    assert vocabulary.encode(["b", "z", "a"], unknown="ignore").tolist() == [1, 0]
    with pytest.raises(ValueError, match="time step 1: symbol 'z' is not in the vocabulary"):
        vocabulary.encode(["b", "z"])
    with pytest.raises(ValueError, match="position 1: symbol 'z'"):
        vocabulary.encode(["b", "z"], locate=lambda i: f"position {i}")
    with pytest.raises(ValueError, match="unknown must be one of"):
        vocabulary.encode(["a"], unknown="drop")
    assert vocabulary.decode([1, 2, 0]) == ["b", None, "a"]
    seqs = as_sequences([["a", "q"], ["b"]], vocabulary=vocabulary, unknown="map")  # a vocabulary means symbols
    assert seqs.codes.tolist() == [0, 2, 1] and seqs.vocabulary is vocabulary
    ignored = as_sequences([["a", "q", "b"], ["b"]], vocabulary=vocabulary, unknown="ignore")
    assert ignored.codes.tolist() == [0, 1, 1] and ignored.lengths.tolist() == [2, 1]
    with pytest.raises(ValueError, match="sequence 1, time step 0: symbol 'q'"):
        as_sequences([["a"], ["q"]], vocabulary=vocabulary)
    with pytest.raises(ValueError, match="sequence 1, time step 2: symbol 'q'"):
        as_sequences(list("abaabq"), [3, 3], vocabulary=vocabulary)


def test_numeric_vocabulary_matches_numbers_of_any_integer_type():
    vocabulary = as_sequences(np.array([10, 20, 30]), symbols=True).vocabulary
    assert vocabulary.symbols == (10, 20, 30)
    assert vocabulary.encode(np.array([30, 10], dtype=np.uint8)).tolist() == [2, 0]
    assert vocabulary.encode([20, 40], unknown="map").tolist() == [1, 3]
    assert vocabulary.encode(["10"], unknown="map").tolist() == [3]  # a string is not a number


def test_encoded_sequences_pass_through_or_are_re_encoded():
    seqs = as_sequences([["a", "b"], ["c"]], symbols=True, times=[[0, 1], [5]])
    assert as_sequences(seqs) is seqs and as_sequences(seqs, symbols=True) is seqs
    assert as_sequences(seqs, vocabulary=Vocabulary(("a", "b", "c"))) is seqs
    other = Vocabulary(("c", "b", "a", "d"))
    moved = as_sequences(seqs, vocabulary=other)
    assert moved.codes.tolist() == [2, 1, 0] and moved.vocabulary is other
    assert moved.times.tolist() == [0, 1, 5] and moved.form == "list"
    with pytest.raises(ValueError, match="symbol 'c' is not in the vocabulary"):
        as_sequences(seqs, vocabulary=Vocabulary(("a", "b")))
    mapped = as_sequences(seqs, vocabulary=Vocabulary(("a", "b")), unknown="map")
    assert mapped.codes.tolist() == [0, 1, 2]
    untimed = as_sequences([["a", "b"], ["c", "a"]], symbols=True)
    dropped = as_sequences(untimed, vocabulary=Vocabulary(("a", "b")), unknown="ignore")
    assert dropped.codes.tolist() == [0, 1, 0] and dropped.lengths.tolist() == [2, 1]
    timed = as_sequences([["a", "c"], ["b"]], symbols=True, times=[[0, 1], [5]])
    with pytest.raises(ValueError, match="cannot drop events from time-stamped sequences"):
        as_sequences(timed, vocabulary=Vocabulary(("a", "b")), unknown="ignore")


def test_symbols_and_numbers_do_not_mix():
    numbers = as_sequences(np.zeros(3))
    with pytest.raises(ValueError, match="hold numbers, not symbols"):
        _ = numbers.codes
    with pytest.raises(ValueError, match="hold numbers, not symbols"):
        as_sequences(numbers, symbols=True)
    with pytest.raises(TypeError, match="from_event_log"):
        Sequences.from_symbols(pd.DataFrame({"activity": ["a"]}))


def test_the_old_reader_is_a_deprecated_alias():
    with pytest.warns(DeprecationWarning, match="as_sequences"):
        seqs = as_symbol_sequences([["a", "b"], ["b"]], times=[[0, 1], [2]])
    assert seqs.codes.tolist() == [0, 1, 1] and seqs.times.tolist() == [0, 1, 2]


# ----------------------------------------------------------------- next-element layout


def test_next_targets_and_labels():
    seqs = as_sequences([["a", "b", "a"], ["c"]], symbols=True)
    assert next_targets(seqs).tolist() == [0, 1, 0, 4, 2, 4]
    mapped = as_sequences([["a", "z"]], vocabulary=seqs.vocabulary, unknown="map")
    assert next_targets(mapped).tolist() == [0, 3, 4]
    assert n_targets(mapped) == 3 and n_targets(mapped, "ignore") == 2
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
        ({"a": ["b"]}, {}, TypeError, "got a dict"),
        ([[["a"], ["b"]]], {}, TypeError, r"sequence 0, time step 0: symbol \['a'\] is not hashable"),
        ([["a", "b"], ["a", ["c"]]], {}, TypeError, r"sequence 1, time step 1: symbol \['c'\] is not hashable"),
        ([["a", ("b", ["c"])]], {}, TypeError, r"sequence 0, time step 1: symbol \('b', \['c'\]\) is not hashable"),
        ([["z", "q"]], {"vocabulary": Vocabulary(("a",)), "unknown": "ignore"}, ValueError, "every symbol is outside"),
        ([["a"]], {"vocabulary": Vocabulary(("a",)), "unknown": "skip"}, ValueError, "unknown must be one of"),
        ([["a"]], {"unknown": "skip"}, ValueError, "unknown must be one of"),
        ([["a"]], {"symbol_column": "x"}, TypeError, "symbol_column name columns of a data frame"),
    ],
)
def test_bad_sequences(data, kwargs, error, message):
    with pytest.raises(error, match=message):
        as_sequences(data, symbols=True, **kwargs)


@pytest.mark.parametrize(
    "times, message",
    [
        ([[2.0, 1.0]], "sequence 0, time step 1: time stamps decrease"),
        ([[0.0, np.nan]], "sequence 0, time step 1: time stamp is missing or not finite"),
        ([[0.0, np.inf]], "time stamp is missing or not finite"),
        ([[0.0]], "sequence 0: times for 1 time steps, but the sequence has 2"),
        ([[0.0, 1.0], [2.0]], "2 times arrays given for 1 sequences"),
        ([["soon", "later"]], "sequence 0, time step 0: non-numeric value 'soon'"),
        ([0.0, 1.0, 2.0], "times for 3 time steps, but the data have 2"),
    ],
)
def test_bad_time_stamps(times, message):
    with pytest.raises(ValueError, match=message):
        as_sequences([["a", "b"]], symbols=True, times=times)


def test_ignoring_unknown_symbols_cannot_drop_time_stamped_events():
    with pytest.raises(ValueError, match="cannot drop events from time-stamped sequences"):
        as_sequences([["a", "z"]], vocabulary=Vocabulary(("a",)), unknown="ignore", times=[[0, 1]])
    log = pd.DataFrame({"case_id": [1, 1], "activity": ["a", "z"]})
    with pytest.raises(ValueError, match="cannot drop events from an event log"):
        as_sequences(log, vocabulary=Vocabulary(("a",)), unknown="ignore")


@pytest.mark.parametrize(
    "frame, kwargs, message",
    [
        (pd.DataFrame({"case_id": [1], "event": ["a"]}), {}, "column 'activity' not found"),
        (pd.DataFrame({"case_id": [1], "activity": ["a"]}), {"time_column": "when"}, "column 'when' not found"),
        (pd.DataFrame({"case_id": [1], "activity": ["a"]}), {"id_column": "case"}, "column 'case' not found"),
        (pd.DataFrame({"case_id": [], "activity": []}), {}, "the data frame has no rows"),
        (pd.DataFrame({"case_id": [1, None], "activity": ["a", "b"]}), {}, "row 1: missing value in id column"),
        (
            pd.DataFrame({"case_id": [1, 1], "activity": ["a", None]}),
            {},
            r"sequence 0, time step 1 \(row 1, id 1\), column 'activity': missing symbol",
        ),
        (
            pd.DataFrame({"case_id": [1, 1], "activity": ["a", "b"], "timestamp": ["2024-01-01", "yesterday"]}),
            {},
            "row 1, column 'timestamp': not a time stamp: 'yesterday'",
        ),
        (
            pd.DataFrame({"case_id": [1, 1], "activity": ["a", "b"], "timestamp": [0.0, np.nan]}),
            {},
            "sequence 0, time step 1, column 'timestamp': time stamp is missing or not finite",
        ),
        (
            pd.DataFrame({"case_id": [2, 1, 1], "activity": ["a", "b", "c"], "timestamp": [0.0, 1.0, np.inf]}),
            {},
            "sequence 1, time step 1, column 'timestamp': time stamp is missing or not finite",
        ),
    ],
)
def test_bad_event_logs(frame, kwargs, message):
    with pytest.raises(ValueError, match=message):
        as_sequences(frame, symbols=True, **kwargs)
