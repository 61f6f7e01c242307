"""Mode accuracy is invariant to relabelling; segments are the runs of a path."""

import numpy as np
import pandas as pd
import pytest

from modeshift.metrics import match_modes, mode_accuracy, segments


def test_accuracy_is_invariant_to_relabelling():
    rng = np.random.default_rng(0)
    true = rng.integers(0, 4, 300)
    pred = np.where(rng.random(300) < 0.7, true, rng.integers(0, 4, 300))
    accuracy = mode_accuracy(true, pred)
    for _ in range(5):
        assert mode_accuracy(true, rng.permutation(4)[pred]) == pytest.approx(accuracy)
        assert mode_accuracy(rng.permutation(4)[true], pred) == pytest.approx(accuracy)
    assert mode_accuracy(true, rng.permutation(4)[true]) == 1.0


def test_known_small_cases():
    true, pred = [0, 0, 1, 1, 2, 2], [2, 2, 0, 0, 1, 0]
    np.testing.assert_array_equal(match_modes(true, pred), [1, 2, 0])
    assert mode_accuracy(true, pred) == pytest.approx(5 / 6)
    # Matching 0->1 and 1->0 would score 2/6; the identity scores 5/6.
    assert mode_accuracy([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 1, 1]) == pytest.approx(5 / 6)
    assert mode_accuracy([0, 1, 2], [0, 0, 0]) == pytest.approx(1 / 3)


def test_mapping_relabels_predictions():
    rng = np.random.default_rng(1)
    true = rng.integers(0, 3, 100)
    pred = np.array([2, 0, 1])[true]
    mapping = match_modes(true, pred)
    np.testing.assert_array_equal(mapping[pred], true)


def test_more_predicted_labels_than_true():
    true, pred = [0, 0, 1, 1], [0, 1, 2, 2]
    mapping = match_modes(true, pred)
    assert mapping[2] == 1
    assert sorted(mapping[:2]) == [-1, 0]
    assert mode_accuracy(true, pred) == pytest.approx(3 / 4)


def test_ragged_sequences_are_concatenated():
    true = [np.array([0, 0, 1]), np.array([1, 1, 0, 0, 2])]
    pred = [np.array([1, 1, 0]), np.array([0, 0, 1, 2, 2])]
    assert mode_accuracy(true, pred) == mode_accuracy(np.concatenate(true), np.concatenate(pred))
    assert mode_accuracy(true, pred) == pytest.approx(7 / 8)


def test_integral_float_labels_are_accepted():
    assert mode_accuracy(np.array([0.0, 1.0, 1.0]), [1, 0, 0]) == 1.0


@pytest.mark.parametrize(
    ("true", "pred", "message"),
    [
        ([0, 1, 1], [0, 1], "3 steps but pred has 2"),
        ([[0, 1], [1, 0]], [[0, 1], [1]], "sequence 1"),
        ([[0, 1], [1, 0]], [[0, 1]], "2 sequences but pred has 1"),
        ([0, 1], [0.5, 1.0], "integer labels"),
        ([0, 1], ["a", "b"], "integer labels"),
        ([0, -1], [0, 1], "non-negative"),
        (np.zeros((2, 2), dtype=int), np.zeros((2, 2), dtype=int), "1-D"),
        ([], [], "empty"),
    ],
)
def test_bad_labels_are_refused(true, pred, message):
    with pytest.raises(ValueError, match=message):
        mode_accuracy(true, pred)


def test_segments_round_trip():
    rng = np.random.default_rng(2)
    path = np.repeat(rng.integers(0, 3, 40), rng.integers(1, 6, 40))
    table = segments(path)
    assert list(table.columns) == ["start", "end", "mode", "probability"]
    assert table.start.iloc[0] == 0 and table.end.iloc[-1] == path.size
    np.testing.assert_array_equal(table.start.to_numpy()[1:], table.end.to_numpy()[:-1])
    assert (np.diff(table["mode"]) != 0).all()  # runs are maximal
    np.testing.assert_array_equal(np.repeat(table["mode"], table.end - table.start), path)
    assert table.probability.isna().all()
    assert all(table[column].dtype == np.int64 for column in ("start", "end", "mode"))


def test_segments_average_the_probability_of_their_mode():
    path = np.array([1, 1, 0, 0, 0, 1])
    probabilities = np.array([[0.2, 0.8], [0.4, 0.6], [0.9, 0.1], [0.7, 0.3], [0.5, 0.5], [0.0, 1.0]])
    table = segments(path, probabilities)
    expected = pd.DataFrame({"start": [0, 2, 5], "end": [2, 5, 6], "mode": [1, 0, 1], "probability": [0.7, 0.7, 1.0]})
    pd.testing.assert_frame_equal(table, expected)


def test_segments_of_several_paths():
    paths = [np.array([0, 0, 1]), np.array([2]), np.array([1, 0])]
    probabilities = [np.full((3, 2), 0.5), np.eye(3)[[2]], np.array([[0.1, 0.9], [0.6, 0.4]])]
    table = segments(paths, probabilities)
    assert list(table.columns) == ["sequence", "start", "end", "mode", "probability"]
    np.testing.assert_array_equal(table.sequence, [0, 0, 1, 2, 2])
    np.testing.assert_array_equal(table.start, [0, 2, 0, 0, 1])
    np.testing.assert_allclose(table.probability, [0.5, 0.5, 1.0, 0.9, 0.6])
    for s, path in enumerate(paths):
        rows = table[table.sequence == s]
        np.testing.assert_array_equal(np.repeat(rows["mode"], rows.end - rows.start), path)


def test_segments_refuse_bad_input():
    with pytest.raises(ValueError, match=r"shape \(3, n_modes\) with n_modes >= 3"):
        segments([0, 2, 1], np.full((3, 2), 0.5))
    with pytest.raises(ValueError, match="2 paths but 1 probability"):
        segments([[0, 1], [1]], [np.full((2, 2), 0.5)])
    with pytest.raises(ValueError, match="empty"):
        segments([])
