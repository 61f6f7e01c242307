"""The ``Sequences`` container, its constructors, and every check on user input."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

import modeshift
from modeshift import HMM, NotFittedError, Sequences, as_sequences
from modeshift.data import DataWarning, Schema, TimeAxis, read_table, time_like_columns

# ----------------------------------------------------------------------- construction


def test_one_dimensional_array_is_one_sequence_of_one_feature():
    seqs = as_sequences(np.array([1.0, 2.0, 3.0]))
    assert isinstance(seqs, Sequences)
    assert seqs.n_sequences == len(seqs) == 1
    assert seqs.n_features == 1
    np.testing.assert_array_equal(seqs.offsets, [0, 3])
    np.testing.assert_array_equal(seqs.lengths, [3])
    np.testing.assert_array_equal(seqs.values, [[1.0], [2.0], [3.0]])
    assert seqs.values.dtype == np.float64
    assert seqs.form == "array"


def test_two_dimensional_array_with_hmmlearn_lengths():
    X = np.arange(20, dtype=float).reshape(10, 2)
    seqs = as_sequences(X, lengths=[3, 1, 6])
    np.testing.assert_array_equal(seqs.offsets, [0, 3, 4, 10])
    np.testing.assert_array_equal(seqs.lengths, [3, 1, 6])
    np.testing.assert_array_equal(seqs.starts, [0, 3, 4])
    assert seqs.n_steps == 10 and seqs.n_features == 2
    np.testing.assert_array_equal(seqs.values, X)
    np.testing.assert_array_equal(seqs[1], X[3:4])
    np.testing.assert_array_equal(seqs[2], X[4:])
    assert [len(s) for s in seqs] == [3, 1, 6]
    assert seqs.locate(0) == (0, 0) and seqs.locate(3) == (1, 0) and seqs.locate(9) == (2, 5)
    # array in, one array out, same order
    per_step = np.arange(10)
    np.testing.assert_array_equal(seqs.restore(per_step), per_step)


def test_integer_and_boolean_arrays_become_float():
    seqs = as_sequences(np.array([[1, 0], [2, 1]], dtype=np.int32))
    assert seqs.values.dtype == np.float64
    assert as_sequences(np.array([True, False])).values.dtype == np.float64


def test_input_array_is_copied():
    X = np.zeros((4, 2))
    seqs = as_sequences(X)
    X[0, 0] = 99.0
    assert seqs.values[0, 0] == 0.0


def test_list_of_arrays():
    a = np.arange(6.0).reshape(3, 2)
    b = np.arange(10.0, 12.0).reshape(1, 2)
    c = np.arange(20.0, 28.0).reshape(4, 2)
    seqs = as_sequences([a, b, c])
    np.testing.assert_array_equal(seqs.offsets, [0, 3, 4, 8])
    np.testing.assert_array_equal(seqs.values, np.vstack([a, b, c]))
    assert seqs.form == "list"
    restored = seqs.restore(np.arange(8) * 10)
    assert isinstance(restored, list) and len(restored) == 3
    np.testing.assert_array_equal(restored[0], [0, 10, 20])
    np.testing.assert_array_equal(restored[1], [30])
    np.testing.assert_array_equal(restored[2], [40, 50, 60, 70])


def test_list_of_one_dimensional_sequences_and_python_lists():
    seqs = as_sequences([[1.0, 2.0, 3.0], np.array([4.0, 5.0])])
    np.testing.assert_array_equal(seqs.lengths, [3, 2])
    assert seqs.n_features == 1
    np.testing.assert_array_equal(seqs.values[:, 0], [1, 2, 3, 4, 5])
    # a flat list of numbers is one sequence
    flat = as_sequences([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(flat.lengths, [3])


def test_sequences_object_passes_through():
    seqs = as_sequences(np.zeros((3, 1)))
    assert as_sequences(seqs) is seqs
    with pytest.raises(ValueError, match="lengths"):
        as_sequences(seqs, lengths=[3])


def test_from_arrays_with_times_and_inputs():
    seqs = Sequences.from_arrays(
        [np.zeros(3), np.ones(2)],
        times=[[0.0, 1.0, 1.0], [5.0, 7.5]],  # ties are allowed (non-decreasing)
        inputs=[np.arange(6.0).reshape(3, 2), np.arange(4.0).reshape(2, 2)],
    )
    np.testing.assert_array_equal(seqs.times, [0, 1, 1, 5, 7.5])
    assert seqs.inputs.shape == (5, 2)
    np.testing.assert_array_equal(seqs.inputs[3:], [[0, 1], [2, 3]])


def test_dataframe_groups_by_id_in_order_of_first_appearance():
    frame = pd.DataFrame(
        {
            "id": ["b", "a", "b", "c", "a", "b"],
            "x": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            "y": [10.0, 20.0, 30.0, 40.0, 50.0, 60.0],
        }
    )
    seqs = as_sequences(frame)
    assert seqs.ids == ["b", "a", "c"]
    np.testing.assert_array_equal(seqs.offsets, [0, 3, 5, 6])
    assert seqs.n_features == 2  # "id" is not a value column
    np.testing.assert_array_equal(seqs.values[:, 0], [1, 3, 6, 2, 5, 4])
    np.testing.assert_array_equal(seqs.values[:, 1], [10, 30, 60, 20, 50, 40])
    # per-step results come back in the frame's original row order
    per_step = seqs.values[:, 0] * 100
    np.testing.assert_array_equal(seqs.restore(per_step), frame["x"].to_numpy() * 100)
    per_step_2d = np.column_stack([seqs.values[:, 1], -seqs.values[:, 1]])
    np.testing.assert_array_equal(seqs.restore(per_step_2d), np.column_stack([frame["y"], -frame["y"]]))


def test_dataframe_sorted_by_time_within_id():
    frame = pd.DataFrame(
        {
            "id": [7, 3, 7, 3, 7, 3],
            "t": [2.0, 9.0, 0.0, 1.0, 1.0, 4.0],
            "x": [0.2, 3.9, 0.0, 3.1, 0.1, 3.4],
            "u": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        }
    )
    seqs = as_sequences(frame, time_column="t", input_columns=["u"])
    assert seqs.ids == [7, 3]
    np.testing.assert_array_equal(seqs.offsets, [0, 3, 6])
    np.testing.assert_array_equal(seqs.times, [0, 1, 2, 1, 4, 9])
    np.testing.assert_array_equal(seqs.values[:, 0], [0.0, 0.1, 0.2, 3.1, 3.4, 3.9])
    np.testing.assert_array_equal(seqs.inputs[:, 0], [3, 5, 1, 4, 6, 2])  # moved with their rows
    assert seqs.n_features == 1  # time and input columns are not values
    # restore undoes the sort: row i of the frame gets its own value back
    np.testing.assert_array_equal(seqs.restore(seqs.values[:, 0]), frame["x"].to_numpy())
    np.testing.assert_array_equal(seqs.restore(seqs.inputs[:, 0]), frame["u"].to_numpy())


def test_a_frame_already_in_sequence_order_reads_as_the_same_frame_shuffled():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"id": np.repeat([5, 2, 9], [4, 3, 5]), "t": np.r_[0:4, 0:3, 10:15], "x": rng.normal(size=12)})
    shuffled = frame.sample(frac=1.0, random_state=1)
    ordered, scrambled = as_sequences(frame, time_column="t"), as_sequences(shuffled, time_column="t")
    assert ordered.row_order is None and scrambled.row_order is not None  # recognised in order: no sort, no copy
    assert ordered.ids == [5, 2, 9] and sorted(scrambled.ids) == [2, 5, 9]
    for sequence in range(3):
        np.testing.assert_array_equal(ordered[sequence], scrambled[scrambled.ids.index(ordered.ids[sequence])])
    np.testing.assert_array_equal(ordered.times, frame["t"])
    backwards = frame.copy()
    backwards.loc[[1, 2], "t"] = [2, 1]  # out of order inside sequence 5: sorted, stably
    assert as_sequences(backwards, time_column="t").values[1:3, 0].tolist() == frame["x"][[2, 1]].tolist()


def test_dataframe_datetime_time_column_and_explicit_columns():
    frame = pd.DataFrame(
        {
            "id": [1, 1, 1],
            "when": pd.to_datetime(["2024-01-03", "2024-01-01", "2024-01-02"]),
            "x": [3.0, 1.0, 2.0],
            "ignored": [0.0, 0.0, 0.0],
        }
    )
    seqs = Sequences.from_dataframe(frame, time_column="when", columns=["x"])
    np.testing.assert_array_equal(seqs.values[:, 0], [1.0, 2.0, 3.0])
    assert seqs.n_features == 1
    np.testing.assert_allclose(np.diff(seqs.times), 86400.0)


def test_dataframe_without_id_column_is_one_sequence():
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": [4.0, 5.0, 6.0]})
    seqs = as_sequences(frame)
    np.testing.assert_array_equal(seqs.offsets, [0, 3])
    np.testing.assert_array_equal(seqs.values, frame.to_numpy())


def test_dataframe_missing_values_become_nan():
    frame = pd.DataFrame({"id": [0, 0, 1], "x": [1.0, None, 2.0]})
    seqs = as_sequences(frame)
    assert seqs.has_missing
    assert np.isnan(seqs.values[1, 0])


def test_csv_round_trip(tmp_path):
    frame = pd.DataFrame({"id": ["s2", "s1", "s2", "s1"], "time": [1, 3, 0, 2], "x": [1.5, 2.5, 0.5, 3.5]})
    path = tmp_path / "data.csv"
    frame.to_csv(path, index=False)
    seqs = Sequences.from_csv(path, time_column="time")
    assert seqs.ids == ["s2", "s1"]
    np.testing.assert_array_equal(seqs.values[:, 0], [0.5, 1.5, 3.5, 2.5])
    np.testing.assert_array_equal(seqs.restore(seqs.values[:, 0]), frame["x"].to_numpy())


def test_parquet_round_trip(tmp_path):
    pytest.importorskip("pyarrow")
    frame = pd.DataFrame({"id": [2, 1, 2], "t": [5, 0, 4], "x": [1.0, 2.0, 3.0], "y": [4.0, 5.0, 6.0]})
    path = tmp_path / "data.parquet"
    frame.to_parquet(path)
    seqs = Sequences.from_parquet(path, time_column="t")
    assert seqs.ids == [2, 1]
    np.testing.assert_array_equal(seqs.values, [[3.0, 6.0], [1.0, 4.0], [2.0, 5.0]])


def test_model_results_come_back_in_input_form():
    """predict/predict_proba on an interleaved frame return rows in the frame's own order."""
    rng = np.random.default_rng(0)
    a = np.r_[rng.normal(0, 1, 30), rng.normal(6, 1, 30)]
    b = np.r_[rng.normal(6, 1, 25), rng.normal(0, 1, 25)]
    model = HMM(2, random_state=0).fit([a, b])
    as_list = model.predict_proba([a, b])
    assert isinstance(as_list, list) and [len(p) for p in as_list] == [60, 50]
    stacked = np.vstack(as_list)
    frame = pd.DataFrame(
        {"id": np.r_[np.zeros(60), np.ones(50)], "t": np.r_[np.arange(60), np.arange(50)], "x": np.r_[a, b]}
    )
    # interleave the two sequences, keeping each one's time order (the model reads rows in order)
    keys = np.r_[np.sort(rng.random(60)), np.sort(rng.random(50))]
    interleaved = frame.iloc[np.argsort(keys, kind="stable")]
    proba = model.predict_proba(interleaved[["id", "x"]])
    assert isinstance(proba, np.ndarray) and proba.shape == (110, 2)
    np.testing.assert_allclose(proba, stacked[interleaved.index.to_numpy()], atol=1e-12)
    states = model.predict(interleaved[["id", "x"]])
    np.testing.assert_array_equal(states, np.concatenate(model.predict([a, b]))[interleaved.index.to_numpy()])
    # fully shuffled rows, ordered by a time column through a Sequences object
    shuffled = frame.sample(frac=1.0, random_state=1)
    seqs = as_sequences(shuffled, time_column="t")
    proba = model.predict_proba(seqs)
    np.testing.assert_allclose(proba, stacked[shuffled.index.to_numpy()], atol=1e-12)


# ------------------------------------------------------------------------- bad input
# Each bad input is tried through as_sequences and through a public model method.


def _both(data, match, lengths=None):
    with pytest.raises(ValueError, match=match):
        as_sequences(data, lengths=lengths)
    with pytest.raises(ValueError, match=match):
        HMM(2).fit(data, lengths=lengths)
    fitted = HMM(1)
    fitted.startprob_ = [1.0]
    fitted.transmat_ = [[1.0]]
    fitted.means_ = [[0.0]]
    fitted.covars_ = [[[1.0]]]
    with pytest.raises(ValueError, match=match):
        fitted.score(data, lengths=lengths)


def test_wrong_dimensionality():
    _both(np.zeros((4, 2, 2)), r"sequence 0\b.*shape \(4, 2, 2\)")
    _both([np.zeros(3), np.zeros((3, 1, 1))], r"sequence 1\b.*shape \(3, 1, 1\)")


def test_inconsistent_feature_counts():
    _both([np.zeros((3, 2)), np.zeros((2, 2)), np.zeros((4, 3))], r"sequence 2\b.*3")


def test_non_numeric_value_in_list():
    bad = np.array([1.0, 2.0, "oops", 4.0], dtype=object)
    _both([np.zeros(3), bad], r"sequence 1, time step 2\b.*non-numeric.*oops")


def test_non_numeric_value_in_2d_array():
    bad = np.array([[1.0, 2.0], [3.0, "abc"], [5.0, 6.0]], dtype=object)
    _both(bad, r"sequence 0, time step 1\b.*non-numeric")


def test_non_numeric_value_with_lengths_names_the_sequence():
    """With hmmlearn-style lengths, the bad row 4 is sequence 1, time step 1."""
    X = np.array([0.0, 1.0, 2.0, 3.0, "x", 5.0], dtype=object)
    _both(X, r"sequence 1, time step 1\b", lengths=[3, 3])


def test_non_numeric_value_in_dataframe_names_the_sequence():
    """Row 3 of the frame is the second step of sequence 1 (id 'b')."""
    frame = pd.DataFrame({"id": ["a", "a", "b", "b"], "x": [1.0, 2.0, 3.0, "bad"]})
    _both(frame, r"sequence 1, time step 1\b")


def test_complex_values_are_rejected():
    """Complex numbers must not be silently cast to their real part."""
    with pytest.raises(ValueError, match=r"sequence 0"):
        as_sequences(np.array([1.0 + 2.0j, 3.0 + 0.0j]))


@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_infinite_values(value):
    X = np.zeros((5, 2))
    X[3, 1] = value
    _both([np.zeros((2, 2)), X], r"sequence 1, time step 3\b.*infinite")
    _both(np.vstack([np.zeros((2, 2)), X]), r"sequence 1, time step 3\b.*infinite", lengths=[2, 5])
    frame = pd.DataFrame({"id": [0, 0, 1, 1, 1], "x": [0.0, 0.0, 0.0, 0.0, value]})
    _both(frame, r"sequence 1, time step 2\b.*infinite")


@pytest.mark.parametrize("value", [1e151, -3e200])
def test_values_whose_square_overflows_are_refused_with_a_hint(value):
    """Above modeshift.data.MAX_MAGNITUDE a square overflows: refused where it is, not as NaN deep in a fit."""
    X = np.zeros((5, 2))
    X[3, 1] = value
    _both([np.zeros((2, 2)), X], r"sequence 1, time step 3, feature 1: value .* too large.*standardise")
    frame = pd.DataFrame({"id": [0, 0, 1, 1, 1], "x": [0.0, 0.0, 0.0, 0.0, value]})
    _both(frame, r"sequence 1, time step 2, column 'x': value .* too large")
    as_sequences(np.full((3, 1), 1e150))  # the bound itself is allowed
    with pytest.raises(ValueError, match=r"sequence 0, time step 1, input 0: input .* too large"):
        HMM(2, input_dim=1).fit(np.zeros(3), inputs=[0.0, value, 0.0])


def test_ragged_rows_name_the_first_odd_step():
    _both([[[1.0, 2.0], [3.0, 4.0], [5.0]]], r"sequence 0, time step 2 has shape \(1,\), time step 0 \(2,\).*ragged")
    _both([np.zeros(3), [[1.0], [2.0, 3.0]]], r"sequence 1, time step 1 has shape \(2,\).*ragged")


def test_empty_sequences():
    _both([np.zeros(3), np.zeros(0)], r"sequence 1\b.*empty")
    _both(np.zeros((0, 2)), r"sequence 0\b.*empty")
    _both(np.zeros(5), r"sequence 1\b.*empty", lengths=[2, 0, 3])
    with pytest.raises(ValueError, match="empty"):
        as_sequences([])
    with pytest.raises(ValueError, match="no sequences"):
        Sequences.from_arrays([])
    with pytest.raises(ValueError, match="no rows"):
        as_sequences(pd.DataFrame({"id": [], "x": []}))


def test_lengths_that_do_not_sum_to_the_rows():
    _both(np.zeros(5), r"lengths sum to 6 but X has 5 rows", lengths=[2, 4])
    _both(np.zeros(5), r"lengths sum to 4 but X has 5 rows", lengths=[2, 2])
    with pytest.raises(ValueError, match="integers"):
        as_sequences(np.zeros(5), lengths=[2.5, 2.5])
    with pytest.raises(ValueError, match="lengths"):
        as_sequences([np.zeros(2), np.zeros(3)], lengths=[2, 3])
    with pytest.raises(ValueError, match="lengths"):
        as_sequences(pd.DataFrame({"x": [1.0, 2.0]}), lengths=[2])


def test_negative_lengths_are_rejected():
    with pytest.raises(ValueError, match=r"sequence 1\b"):
        as_sequences(np.zeros(5), lengths=[4, -1, 2])


def test_decreasing_time_stamps():
    with pytest.raises(ValueError, match=r"sequence 1, time step 3\b.*decrease"):
        Sequences.from_arrays([np.zeros(3), np.zeros(4)], times=[[0.0, 1.0, 2.0], [0.0, 1.0, 2.0, 1.5]])
    # a new sequence may start earlier than the previous one ended
    seqs = Sequences.from_arrays([np.zeros(2), np.zeros(2)], times=[[5.0, 6.0], [0.0, 1.0]])
    np.testing.assert_array_equal(seqs.times, [5, 6, 0, 1])
    with pytest.raises(ValueError, match=r"sequence 0, time step 1\b.*not finite"):
        Sequences.from_arrays([np.zeros(2)], times=[[0.0, np.nan]])
    with pytest.raises(ValueError, match="2 time"):
        Sequences.from_arrays([np.zeros(3)], times=[[0.0, 1.0]])


def test_times_attached_to_arrays_and_lists():
    seqs = as_sequences(np.zeros(5), [2, 3], times=[0.0, 1.0, -3.0, -2.0, 4.0])  # one array for all steps
    np.testing.assert_array_equal(seqs.times, [0, 1, -3, -2, 4])
    listed = as_sequences([np.zeros(2), np.zeros(1)], times=[[0.0, 2.0], [7.0]])  # one per sequence
    np.testing.assert_array_equal(listed.times, [0, 2, 7])
    with pytest.raises(ValueError, match=r"sequence 1, time step 1: time stamps decrease"):
        as_sequences(np.zeros(5), [2, 3], times=[0.0, 1.0, 3.0, 2.0, 4.0])
    with pytest.raises(ValueError, match="times for 4 time steps, but the data have 5"):
        as_sequences(np.zeros(5), times=np.arange(4.0))
    with pytest.raises(ValueError, match="times must be one number per time step"):
        as_sequences(np.zeros(2), times=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="times cannot be given with a data frame"):
        as_sequences(pd.DataFrame({"x": [1.0]}), times=[0.0])
    with pytest.raises(ValueError, match="cannot be given with a Sequences object"):
        as_sequences(seqs, times=np.arange(5.0))


def test_one_time_stamp_check_for_numbers_and_symbols():
    """Numbers, symbols, arrays and frames share one check: the same bad stamps, the same message."""
    bad = [[0.0, 1.0, 0.5]]
    messages = set()
    for data in ([np.zeros(3)], [list("abc")]):
        with pytest.raises(ValueError, match="sequence 0, time step 2: time stamps decrease") as error:
            as_sequences(data, symbols=isinstance(data[0], list), times=bad)
        messages.add(str(error.value))
    assert len(messages) == 1
    numbers = pd.DataFrame({"id": [1, 1, 2], "t": [0.0, np.nan, 1.0], "x": [1.0, 2.0, 3.0]})
    symbols = pd.DataFrame({"case_id": [1, 1, 2], "t": [0.0, np.nan, 1.0], "activity": ["a", "b", "c"]})
    expected = "sequence 0, time step 1, column 't': time stamp is missing or not finite"
    with pytest.raises(ValueError, match=expected):
        as_sequences(numbers, time_column="t")
    with pytest.raises(ValueError, match=expected):
        as_sequences(symbols, symbols=True, time_column="t")


def test_date_strings_in_a_numeric_frame_are_time_stamps():
    frame = pd.DataFrame({"t": ["2024-01-02", "2024-01-01"], "x": [2.0, 1.0]})
    seqs = as_sequences(frame, time_column="t")
    np.testing.assert_array_equal(seqs.values[:, 0], [1.0, 2.0])
    np.testing.assert_allclose(np.diff(seqs.times), 86400.0)
    with pytest.raises(ValueError, match="row 1, column 't': not a time stamp: 'later'"):
        as_sequences(frame.assign(t=["2024-01-02", "later"]), time_column="t")


def test_column_names_need_a_data_frame():
    with pytest.raises(TypeError, match="id_column name columns of a data frame, not of ndarray data"):
        as_sequences(np.zeros(3), id_column="id")


def test_symbol_sequences_are_codes_in_the_one_container():
    """A categorical HMM reads symbol sequences as it reads their codes: one container for both."""
    seqs = as_sequences([list("abca"), list("cab")], symbols=True)
    assert seqs.values.dtype == np.int64 and seqs.values.shape == (7, 1)
    np.testing.assert_array_equal(seqs.codes, [0, 1, 2, 0, 2, 0, 1])
    np.testing.assert_array_equal(seqs[1], [2, 0, 1])
    assert seqs.locate(5) == (1, 1) and not seqs.has_missing
    codes = [np.array([0, 1, 2, 0]), np.array([2, 0, 1])]
    by_symbols = HMM(2, emission="categorical", n_iter=5, tol=-np.inf, random_state=0).fit(seqs)
    by_codes = HMM(2, emission="categorical", n_iter=5, tol=-np.inf, random_state=0).fit(codes)
    np.testing.assert_array_equal(by_symbols.emissionprob_, by_codes.emissionprob_)


def test_non_finite_inputs():
    with pytest.raises(ValueError, match=r"sequence 1, time step 0: non-finite input \(input 0\)"):
        Sequences.from_arrays([np.zeros(2), np.zeros(2)], inputs=[np.zeros(2), [np.nan, 0.0]])
    frame = pd.DataFrame({"id": [0, 0, 1], "x": [0.0, 1.0, 2.0], "u": [0.0, np.inf, 1.0]})
    with pytest.raises(ValueError, match=r"sequence 0, time step 1\b.*'u'"):
        as_sequences(frame, input_columns=["u"])


def test_unknown_dataframe_columns_and_missing_ids():
    frame = pd.DataFrame({"id": [0, 1], "x": [0.0, 1.0]})
    with pytest.raises(ValueError, match="'nope'"):
        as_sequences(frame, time_column="nope")
    with pytest.raises(ValueError, match="no value columns"):
        as_sequences(frame, columns=[])
    with pytest.raises(ValueError, match="id"):
        as_sequences(pd.DataFrame({"id": [0, None, 1], "x": [0.0, 1.0, 2.0]}))


# ------------------------------------------------------------------- model requirements


def test_require_missing_values():
    seqs = as_sequences([np.zeros((4, 2)), np.array([[0.0, 0.0], [1.0, 2.0], [np.nan, 1.0]])])
    assert seqs.has_missing
    assert seqs.require(allow_missing=True) is seqs
    with pytest.raises(ValueError, match=r"sequence 1, time step 2\b.*missing"):
        seqs.require(allow_missing=False, model="a test model")
    with pytest.raises(ValueError, match="a test model"):
        seqs.require(allow_missing=False, model="a test model")


def test_require_min_length_and_features():
    seqs = as_sequences([np.zeros(5), np.zeros(2), np.zeros(1)])
    assert seqs.require(allow_missing=False, min_length=1) is seqs
    with pytest.raises(ValueError, match=r"sequence 1 has 2 time step\(s\).*at least 3"):
        seqs.require(allow_missing=False, min_length=3)
    with pytest.raises(ValueError, match=r"sequence 2 has 1 time step"):
        seqs.require(allow_missing=True, min_length=2)
    with pytest.raises(ValueError, match="2 feature"):
        seqs.require(allow_missing=True, n_features=2)


def test_model_rejects_wrong_number_of_features_after_fit():
    rng = np.random.default_rng(0)
    model = HMM(2, random_state=0, n_iter=5).fit(rng.normal(size=(50, 2)))
    with pytest.raises(ValueError, match="expects 2 feature"):
        model.score(rng.normal(size=(10, 3)))
    with pytest.raises(ValueError, match="expects 2 feature"):
        model.predict(rng.normal(size=(10, 1)))


def test_require_counts():
    seqs = as_sequences([np.array([0.0, 1.0, np.nan]), np.array([2.0, 3.0, 1.0])])
    assert seqs.require_counts() is seqs
    assert seqs.require_counts(upper=4) is seqs
    with pytest.raises(ValueError, match=r"sequence 1, time step 1\b.*below 3.*got 3"):
        seqs.require_counts(upper=3)
    bad = as_sequences([np.array([0.0, 1.0]), np.array([2.0, 0.5])])
    with pytest.raises(ValueError, match=r"sequence 1, time step 1\b.*non-negative integer.*0.5"):
        bad.require_counts()
    negative = as_sequences(np.array([[0.0, 1.0], [2.0, -1.0]]))
    with pytest.raises(ValueError, match=r"sequence 0, time step 1\b.*-1"):
        negative.require_counts()


def test_poisson_model_rejects_bad_counts():
    good = np.array([[1.0, 0.0], [3.0, 2.0], [0.0, 5.0], [2.0, 2.0]])
    with pytest.raises(ValueError, match=r"sequence 1, time step 2\b.*non-negative integer.*-1"):
        HMM(2, emission="poisson").fit([good, np.array([[1.0, 1.0], [2.0, 0.0], [-1.0, 0.0]])])
    with pytest.raises(ValueError, match=r"sequence 0, time step 3\b.*2.5"):
        HMM(2, emission="poisson").fit(np.r_[good[:3], [[2.5, 0.0]]])
    model = HMM(2, emission="poisson", random_state=0, n_iter=5).fit(good)
    with pytest.raises(ValueError, match=r"sequence 0, time step 1\b.*0.25"):
        model.score(np.array([[1.0, 1.0], [0.25, 1.0]]))


def test_categorical_model_rejects_out_of_range_symbols():
    X = np.array([0, 1, 2, 1, 0, 2, 2, 1])
    model = HMM(2, emission="categorical", n_symbols=3, random_state=0, n_iter=5).fit(X)
    with pytest.raises(ValueError, match=r"sequence 1, time step 2\b.*below 3.*got 3"):
        model.score([np.array([0, 1]), np.array([1, 2, 3])])
    with pytest.raises(ValueError, match=r"sequence 0, time step 1\b.*got -1"):
        HMM(2, emission="categorical").fit(np.array([0, -1, 2]))
    with pytest.raises(ValueError, match=r"sequence 0, time step 2\b.*1.5"):
        HMM(2, emission="categorical").fit(np.array([0, 1, 1.5]))
    with pytest.raises(ValueError, match=r"sequence 0, time step 4\b.*below 3"):
        HMM(2, emission="categorical", n_symbols=3).fit(np.array([0, 1, 2, 1, 4]))
    with pytest.raises(ValueError, match="feature"):
        HMM(2, emission="categorical").fit(np.zeros((4, 2)))


# ----------------------------------------------------------- parameters set by hand


def test_transition_rows_must_sum_to_one():
    model = HMM(2)
    with pytest.raises(ValueError, match=r"sum to 1"):
        model.transmat_ = [[0.5, 0.6], [0.5, 0.5]]
    with pytest.raises(ValueError, match=r"sum to 1"):
        model.startprob_ = [0.7, 0.7]
    with pytest.raises(ValueError, match="negative"):
        model.transmat_ = [[1.5, -0.5], [0.5, 0.5]]
    with pytest.raises(ValueError, match="shape"):
        model.transmat_ = [[0.5, 0.5]]
    with pytest.raises(ValueError, match="shape"):
        model.startprob_ = [0.2, 0.3, 0.5]
    with pytest.raises(ValueError, match="non-finite"):
        model.startprob_ = [np.nan, 1.0]
    # nothing was stored by the failed assignments
    with pytest.raises(AttributeError):
        model.transmat_  # noqa: B018


def test_transition_error_names_the_attribute_and_the_offending_row():
    """The message should name ``transmat_`` (what the user set) and row 1's actual sum 1.1."""
    model = HMM(2)
    with pytest.raises(ValueError) as info:
        model.transmat_ = [[0.5, 0.5], [0.5, 0.6]]
    message = str(info.value)
    assert "row 1" in message
    assert "1.1" in message, message
    assert "transmat_" in message, message


def test_valid_probabilities_are_accepted():
    model = HMM(3)
    model.startprob_ = [0.2, 0.3, 0.5]
    model.transmat_ = np.eye(3)
    np.testing.assert_allclose(model.startprob_, [0.2, 0.3, 0.5])
    np.testing.assert_array_equal(model.transmat_, np.eye(3))


def test_covariances_must_be_positive_definite():
    model = HMM(2)
    model.means_ = np.zeros((2, 2))
    with pytest.raises(ValueError, match=r"covars_\[1\].*positive definite"):
        model.covars_ = [np.eye(2), [[1.0, 2.0], [2.0, 1.0]]]
    with pytest.raises(ValueError, match="symmetric"):
        model.covars_ = [np.eye(2), [[1.0, 0.5], [0.0, 1.0]]]
    with pytest.raises(ValueError, match=r"covars_.*shape"):
        model.covars_ = np.stack([np.eye(3)] * 2)  # dimension 3, means have 2
    with pytest.raises(ValueError, match=r"covars_.*shape"):
        model.covars_ = np.stack([np.eye(2)] * 3)  # three states, model has 2
    with pytest.raises(ValueError, match=r"diagonal"):
        HMM(2, covariance="diag").covars_ = [np.eye(2), [[1.0, 0.1], [0.1, 1.0]]]


def test_means_shape_is_checked():
    model = HMM(2)
    with pytest.raises(ValueError, match=r"means_.*shape"):
        model.means_ = np.zeros((3, 2))
    with pytest.raises(ValueError, match=r"means_.*non-finite"):
        model.means_ = [[0.0], [np.inf]]
    model.means_ = np.zeros((2, 2))
    with pytest.raises(ValueError, match=r"means_.*shape"):
        model.means_ = np.zeros((2, 3))  # the dimension is fixed once known


def test_discrete_parameters_are_checked():
    model = HMM(2, emission="categorical")
    with pytest.raises(ValueError, match=r"emissionprob_.*sum to 1"):
        model.emissionprob_ = [[0.5, 0.4], [0.5, 0.5]]
    poisson = HMM(2, emission="poisson")
    with pytest.raises(ValueError, match=r"lambdas_.*non-negative"):
        poisson.lambdas_ = [[1.0], [-2.0]]


def test_unknown_emission_and_states_are_refused_at_fit():
    X = np.zeros((5, 1))
    with pytest.raises(ValueError, match="emission must be one of"):
        HMM(2, emission="laplace").fit(X)
    with pytest.raises(ValueError, match="n_states must be"):
        HMM(0).fit(X)


# --------------------------------------------------------------------------- not fitted


@pytest.mark.parametrize(
    "call",
    [
        lambda m, X: m.score(X),
        lambda m, X: m.predict(X),
        lambda m, X: m.predict_proba(X),
        lambda m, X: m.decode(X),
        lambda m, X: m.sample(5),
        lambda m, X: m.sample_posterior(X),
        lambda m, X: m.aic(X),
        lambda m, X: m.bic(X),
        lambda m, X: m.n_parameters,
    ],
    ids=["score", "predict", "predict_proba", "decode", "sample", "sample_posterior", "aic", "bic", "n_parameters"],
)
def test_use_before_fit_raises_not_fitted(call):
    X = np.zeros((5, 1))
    with pytest.raises(NotFittedError, match="fit"):
        call(HMM(2), X)
    # hand-setting only some parameters is still not enough
    partial = HMM(2)
    partial.transmat_ = np.eye(2)
    with pytest.raises(NotFittedError, match="means_"):
        call(partial, X)


def test_not_fitted_error_is_a_value_error_and_exported():
    assert modeshift.NotFittedError is NotFittedError
    assert issubclass(NotFittedError, ValueError)
    with pytest.raises(NotFittedError):
        HMM(2).save("never-written.msz")


def test_hand_set_model_is_usable_without_fit():
    model = HMM(2)
    model.startprob_ = [0.5, 0.5]
    model.transmat_ = [[0.9, 0.1], [0.1, 0.9]]
    model.means_ = [[0.0], [5.0]]
    model.covars_ = [[[1.0]], [[1.0]]]
    X = np.r_[np.zeros(5), np.full(5, 5.0)]
    np.testing.assert_array_equal(model.predict(X), [0] * 5 + [1] * 5)
    assert np.isfinite(model.score(X))


def test_named_id_column_must_exist():
    frame = pd.DataFrame({"subject": [1, 1, 2], "x": [0.0, 1.0, 2.0]})
    with pytest.raises(ValueError, match="column 'patient' not found"):
        Sequences.from_dataframe(frame, id_column="patient")
    assert Sequences.from_dataframe(frame, id_column="subject").n_sequences == 2
    assert Sequences.from_dataframe(frame).n_sequences == 1  # no 'id' column: one sequence of 'subject' and 'x'


def test_linked_rows_leave_out_each_sequence_start():
    seqs = Sequences.from_array(np.zeros((7, 1)), lengths=[3, 1, 3])
    np.testing.assert_array_equal(seqs.linked_rows, [1, 2, 5, 6])


# ------------------------------------------------------------------ time and schema
@pytest.mark.parametrize(
    "column, kind, frequency, step, labels",
    [
        (pd.Series([1871, 1872, 1873]), "number", None, 1.0, [1871, 1872, 1873]),
        (pd.Series([0.5, 1.0, 1.5]), "number", None, 0.5, [0.5, 1.0, 1.5]),
        (pd.Series(["1958-03-29", "1958-04-05", "1958-04-12"]), "datetime", "W-SAT", 604800.0, None),
        (
            pd.Series(["2024-01-01T00:00", "2024-01-01T06:00", "2024-01-01T12:00"]),
            "datetime",
            "6h",
            21600.0,
            ["2024-01-01T00:00:00", "2024-01-01T06:00:00", "2024-01-01T12:00:00"],
        ),
        (pd.Series(["2000-01-31", "2000-02-29", "2000-03-31"]), "datetime", "ME", None, None),
        (pd.Series(["1959Q2", "1959Q3", "1959Q4"]), "period", "Q-DEC", 1.0, None),
        (pd.Series(["1959-Q2", "1959-Q3", "1959-Q4"]), "period", "Q-DEC", 1.0, ["1959Q2", "1959Q3", "1959Q4"]),
        (pd.Series(["1959-11", "1959-12", "1960-01"]), "period", "M", 1.0, None),
        (pd.Series(pd.period_range("2001-11", periods=3, freq="M")), "period", "M", 1.0, None),
        (pd.Series(pd.date_range("2020-01-01", periods=3, freq="D")), "datetime", "D", 86400.0, None),
    ],
    ids=[
        "years",
        "halves",
        "weeks",
        "hours",
        "month-ends",
        "quarters",
        "quarters-dash",
        "months",
        "period-dtype",
        "dates",
    ],
)
def test_time_axis_reads_and_writes_stamps_as_the_file_does(column, kind, frequency, step, labels):
    axis, numbers = TimeAxis.read(column)
    axis = axis.spaced(numbers, np.array([0, len(numbers)]))
    assert (axis.kind, axis.frequency, axis.step) == (kind, frequency, step)
    written = axis.labels(numbers)
    assert written == (labels if labels is not None else list(column.astype(str)))
    again = TimeAxis.read(pd.Series(written))[1]  # what it writes, it reads back to the same numbers
    np.testing.assert_array_equal(again, numbers)
    # the next stamps continue the axis
    after = axis.after(numbers[-1], 2)
    continued = TimeAxis.read(pd.Series([*written, *after]))[1]
    extended = axis.spaced(continued, np.array([0, len(continued)]))
    assert extended.frequency == axis.frequency and extended.step == axis.step


def test_periods_are_counted_in_periods():
    _, numbers = TimeAxis.read(pd.Series(["1959Q4", "1960Q1"]))
    assert numbers[1] - numbers[0] == 1.0  # one step is one quarter, across a year's end


def test_time_like_columns_rule():
    frame = pd.DataFrame(
        {
            "YEAR": [1700.0, 1701.0, 1702.0],
            "Unnamed: 0": [0, 1, 2],
            "when": ["2024-01-01", "2024-01-02", "2024-01-03"],
            "quarter_label": ["1959Q1", "1959Q2", "1959Q3"],
            "count": [1, 2, 3],  # increasing numbers are values: only names, dates and written indexes are time
            "level": [0.5, 0.1, 0.7],
        }
    )
    assert time_like_columns(frame) == ["YEAR", "Unnamed: 0", "when", "quarter_label"]


def test_a_column_counting_the_rows_is_modelled_with_a_warning():
    from modeshift.datasets import load_faithful

    with pytest.warns(DataWarning, match="column 'obs' counts the rows \\(1, 2, ...\\): modelled as a value"):
        assert as_sequences(load_faithful()).n_features == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert as_sequences(load_faithful(), columns=["eruptions", "waiting"]).n_features == 2


def test_a_year_column_is_time_never_a_feature():
    """The sunspots case: ``HMM(2).fit(frame)`` must not model the year as a second feature."""
    frame = pd.DataFrame({"YEAR": np.arange(1700.0, 1760.0), "SUNACTIVITY": np.r_[np.zeros(30), np.full(30, 9.0)]})
    shuffled = frame.sample(frac=1.0, random_state=0)
    with pytest.warns(DataWarning, match="'YEAR' taken as the time column, not modelled"):
        seqs = as_sequences(shuffled)
    assert seqs.n_features == 1 and seqs.schema.columns == ("SUNACTIVITY",)
    np.testing.assert_array_equal(seqs.times, frame["YEAR"])  # sorted by year
    np.testing.assert_array_equal(seqs.values[:, 0], frame["SUNACTIVITY"])
    # named explicitly: no warning; time_column=None keeps file order and still does not model the year
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert as_sequences(frame, time_column="YEAR").schema.time_columns == ("YEAR",)
        plain = as_sequences(shuffled, time_column=None)
    assert plain.times is None and plain.n_features == 1
    assert as_sequences(frame, time_column=None, columns=["YEAR", "SUNACTIVITY"]).n_features == 2  # if asked
    model = HMM(2, random_state=0, n_iter=20).fit(shuffled, time_column="YEAR", columns=["SUNACTIVITY"])
    assert model.means_.shape == (2, 1) and sorted(model.means_.ravel().round(6)) == [0.0, 9.0]
    assert model.schema_ == as_sequences(frame, time_column="YEAR").schema


def test_year_and_quarter_columns_read_as_quarters():
    frame = pd.DataFrame({"year": [1959.0, 1959.0, 1959.0, 1960.0], "quarter": [2.0, 3.0, 4.0, 1.0], "x": [1.0] * 4})
    with pytest.warns(DataWarning, match="'year' and 'quarter' taken as the time column"):
        seqs = as_sequences(frame.iloc[::-1])
    assert seqs.schema.time_columns == ("year", "quarter") and seqs.n_features == 1
    assert seqs.schema.time_labels(seqs.times) == ["1959Q2", "1959Q3", "1959Q4", "1960Q1"]
    assert seqs.schema.time.after(seqs.times[-1], 1) == ["1960Q2"]
    with pytest.raises(ValueError, match="row 1, column 'quarter': not a whole number"):
        as_sequences(frame.assign(quarter=[2.0, 2.5, 4.0, 1.0]), time_column=["year", "quarter"])
    with pytest.raises(ValueError, match="columns \\['year', 'quarter', 'when'\\] all look like time stamps"):
        as_sequences(frame.assign(when=["2024-01-01"] * 4))


def test_repeated_time_stamps_are_an_error_and_irregular_ones_a_warning():
    frame = pd.DataFrame({"id": ["a", "a", "b", "b"], "t": [1, 2, 5, 5], "x": [1.0, 2.0, 3.0, 4.0]})
    with pytest.raises(ValueError, match=r"sequence 1 \(id 'b'\), time step 1, column 't': time stamp 5 repeats"):
        as_sequences(frame, time_column="t")
    with pytest.warns(DataWarning, match="column 't': irregular time steps \\(from 1 to 3\\)"):
        seqs = as_sequences(frame.assign(t=[1, 2, 5, 8]), time_column="t")
    assert seqs.schema.time.step is None and seqs.schema.time.after(8.0, 2) is None


def test_schema_round_trip_and_reading_new_data():
    frame = pd.DataFrame(
        {"id": [1, 1, 2, 2], "when": ["1959Q1", "1959Q2", "1959Q1", "1959Q2"], "u": [1.0, 2, 3, 4], "v": [0.0] * 4}
    )
    schema = as_sequences(frame, time_column="when").schema
    assert Schema.from_json(json.loads(json.dumps(schema.to_json()))) == schema
    assert schema.columns == ("u", "v") and schema.id_column == "id"
    reversed_rows = schema.read(frame.iloc[::-1])  # grouped by id, sorted by time within each
    assert reversed_rows.ids == [2, 1] and reversed_rows.values[:, 0].tolist() == [3.0, 4.0, 1.0, 2.0]
    with pytest.raises(ValueError, match=r"the data lack column\(s\) \['v'\] \(the model reads values \['u', 'v'\]"):
        schema.read(frame.drop(columns="v"))
    with pytest.warns(DataWarning, match=r"columns \['w'\] are not in the model and are ignored"):
        schema.read(frame.assign(w=1.0))
    with pytest.raises(ValueError, match="holds datetimes .* but the model was fit on periods \\(Q-DEC\\)"):
        schema.read(frame.assign(when=["2000-01-01", "2000-01-02"] * 2))
    assert schema.read(frame.drop(columns="v"), columns=["u"]).n_features == 1  # an override


def test_read_table_names_the_file_and_reads_tsv(tmp_path):
    frame = pd.DataFrame({"t": [1, 2], "x": [0.5, 1.5]})
    frame.to_csv(tmp_path / "a.tsv", sep="\t", index=False)
    pd.testing.assert_frame_equal(read_table(tmp_path / "a.tsv"), frame)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match=f"^{tmp_path / 'empty.csv'}: No columns to parse from file$"):
        read_table(tmp_path / "empty.csv")
    with pytest.raises(ValueError, match="unknown data format '.xlsx'; expected .csv, .tsv or .parquet"):
        read_table(tmp_path / "a.xlsx")
    (tmp_path / "bad.csv").write_text("t,x\n1,a\n")
    with pytest.raises(ValueError, match=r"bad.csv: sequence 0, time step 0 \(row 0\), column 'x': non-numeric"):
        Sequences.from_csv(tmp_path / "bad.csv", time_column="t")


def test_blocks_are_runs_of_whole_sequences_as_views():
    lengths = [3, 2, 7, 1, 1, 4]
    seqs = Sequences.from_arrays([np.full((n, 2), float(i)) for i, n in enumerate(lengths)], inputs=None)
    seqs = Sequences(seqs.values, seqs.offsets, inputs=np.arange(18.0)[:, None], ids=list("abcdef"))
    blocks = list(seqs.blocks(5))
    assert [block.lengths.tolist() for block in blocks] == [[3, 2], [7], [1, 1], [4]]  # 7 > 5: alone
    assert [i for block in blocks for i in block.ids] == list("abcdef")
    np.testing.assert_array_equal(np.concatenate([block.values for block in blocks]), seqs.values)
    np.testing.assert_array_equal(np.concatenate([block.inputs for block in blocks]), seqs.inputs)
    assert all(np.shares_memory(block.values, seqs.values) for block in blocks)
    assert list(seqs.blocks(18)) == [seqs]


def test_a_subset_is_the_chosen_sequences_in_order():
    lengths = [3, 2, 7, 1]
    seqs = Sequences.from_arrays([np.full((n, 2), float(i)) for i, n in enumerate(lengths)], inputs=None)
    seqs = Sequences(seqs.values, seqs.offsets, np.arange(13.0), np.arange(13.0)[:, None] + 100, list("abcd"))
    part = seqs.subset(np.array([False, True, True, False]))
    assert part.lengths.tolist() == [2, 7] and part.ids == ["b", "c"]
    np.testing.assert_array_equal(part.values[:, 0], [1.0] * 2 + [2.0] * 7)
    np.testing.assert_array_equal(part.times, np.arange(3.0, 12.0))
    np.testing.assert_array_equal(part.inputs[:, 0], np.arange(103.0, 112.0))
    assert seqs.subset(np.ones(4, dtype=bool)) is seqs


def test_time_of_reads_a_datetime_stamp_as_the_fitted_data_were_read():
    """Schema.time_of's numpy fast path for plain ISO stamps gives TimeAxis.read's seconds bit for bit
    (nanoseconds, both separators, dates alone, the edges of pandas' range), and the text it leaves to
    pandas (zones, other layouts) reads as before; what is not a datetime is named, as before."""
    schema = Schema(("u",), time_columns=("t",), time=TimeAxis("datetime"))
    rng = np.random.default_rng(0)
    low, high = (np.datetime64(day, "ns").astype(np.int64) for day in ("1678-01-01", "2261-12-31"))
    stamps = pd.to_datetime(rng.integers(low, high, 60), unit="ns")
    texts = [str(s) for s in stamps] + [s.isoformat() for s in stamps] + [s.strftime("%Y-%m-%dT%H:%M") for s in stamps]
    texts += ["2026-01-01", "1677-12-31", "2262-01-01", "2020-01-01T00:00:00Z", "2020-01-01 00:00:00+01:00"]
    texts += ["2020-01-01T12:00:00.1234567891", " 2020-01-01"]
    for text in texts:
        expected = TimeAxis.read(pd.Series([text], name="t"))[1][0]
        assert schema.time_of({"t": text}) == expected, text
    for text in ("not-a-date", "2020-02-30", "2020", "1959-03", "1959Q2", "0000-01-01"):
        with pytest.raises(ValueError, match=f"time '{text}' is not a time stamp of the fitted kind"):
            schema.time_of({"t": text})


def test_spread_keeps_every_jth_piece_with_its_times_and_inputs():
    lengths = [2500, 40, 1201]
    values = np.arange(3741.0)[:, None]
    seqs = Sequences.from_array(values, lengths).with_times(values[:, 0] * 0.5).with_inputs(-values, 1)
    part = seqs.spread(1000, 300)  # pieces 0, 4, 8 and 12 of 8 + 1 + 4 (j = 4): a short sequence
    assert part.lengths.tolist() == [300, 300, 40, 301]  # whole, a remainder joined to the last piece
    np.testing.assert_array_equal(part.values[:, 0], np.r_[0:300, 1200:1500, 2500:2540, 3440:3741])
    np.testing.assert_array_equal(part.times, part.values[:, 0] * 0.5)
    np.testing.assert_array_equal(part.inputs, -part.values)
    assert seqs.spread(3741, 500) is seqs
