"""Score decoded modes against the truth, and cut a mode path into segments.

Hidden modes are identified only up to a relabelling, so a decoded path is scored after
matching its labels to the true ones. With confusion counts
N[j, k] = #{t : pred_t = j, true_t = k}, the one-to-one ``mapping`` maximises
sum_j N[j, mapping[j]] (the Hungarian algorithm); predicted labels left over when there
are more of them than true labels map to -1 and count as wrong.

>>> import numpy as np
>>> true = np.array([0, 0, 1, 1, 2, 2])
>>> pred = np.array([2, 2, 0, 0, 1, 0])
>>> match_modes(true, pred)
array([1, 2, 0])
>>> round(mode_accuracy(true, pred), 4)
0.8333
>>> segments(true)
   start  end  mode  probability
0      0    2     0          NaN
1      2    4     1          NaN
2      4    6     2          NaN
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

__all__ = ["match_modes", "mode_accuracy", "segments"]


def mode_accuracy(true: Any, pred: Any) -> float:
    """Fraction of time steps where ``pred``, optimally relabelled, equals ``true``.

    Parameters
    ----------
    true, pred : 1-D arrays of non-negative integer labels, or lists of them
        Lists hold sequences of unequal length; they are scored as if concatenated.

    Returns
    -------
    float
        ``mean(match_modes(true, pred)[pred] == true)`` over all time steps.

    >>> mode_accuracy([0, 0, 1, 1], [1, 1, 0, 0])
    1.0
    """
    true_labels, pred_labels = _paired(true, pred)
    return float(np.mean(_mapping(true_labels, pred_labels)[pred_labels] == true_labels))


def match_modes(true: Any, pred: Any) -> np.ndarray:
    """The relabelling of ``pred`` that best agrees with ``true``.

    Returns
    -------
    mapping : (max(pred) + 1,) int array
        ``mapping[j]`` is the true label matched to predicted label ``j``, or -1 when ``j``
        is left unmatched; ``mapping[pred]`` relabels the predictions.

    >>> match_modes([0, 0, 1, 1, 1], [2, 2, 0, 0, 1])
    array([ 1, -1,  0])
    """
    return _mapping(*_paired(true, pred))


def segments(path: Any, probabilities: Any = None) -> pd.DataFrame:
    """Contiguous runs of one mode in a path.

    Parameters
    ----------
    path : 1-D array of non-negative integer labels, or a list of them
    probabilities : (n_steps, n_modes) array, or a list of them (one per path), optional
        Posterior mode probabilities, e.g. from ``predict_proba``.

    Returns
    -------
    pandas.DataFrame
        One row per segment with columns ``start``, ``end`` (exclusive), ``mode`` and
        ``probability``, the mean posterior probability of the segment's mode over the
        segment (NaN without ``probabilities``). Given a list of paths, a leading
        ``sequence`` column says which path a segment belongs to.

    >>> segments([[0, 0, 1], [2]])
       sequence  start  end  mode  probability
    0         0      0    2     0          NaN
    1         0      2    3     1          NaN
    2         1      0    1     2          NaN
    """
    ragged = _is_ragged(path)
    paths = _labels("path", path)
    if probabilities is None:
        probabilities = [None] * len(paths)
    elif not ragged:
        probabilities = [probabilities]
    elif len(probabilities) != len(paths):
        raise ValueError(f"got {len(paths)} paths but {len(probabilities)} probability arrays")
    parts = [_runs(s, labels, probs) for s, (labels, probs) in enumerate(zip(paths, probabilities))]
    start, end, mode, probability = (np.concatenate(column) for column in zip(*parts))
    frame = pd.DataFrame({"start": start, "end": end, "mode": mode, "probability": probability})
    if ragged:
        frame.insert(0, "sequence", np.repeat(np.arange(len(paths)), [part[0].size for part in parts]))
    return frame


def _runs(index: int, path: np.ndarray, probabilities: Any) -> tuple[np.ndarray, ...]:
    """Starts, ends, modes and mean mode probabilities of the runs in one path."""
    n_steps = path.size
    if n_steps == 0:
        raise ValueError(f"path (sequence {index}) is empty")
    changes = np.flatnonzero(path[1:] != path[:-1]) + 1
    start, end = np.r_[0, changes], np.r_[changes, n_steps]
    mode = path[start]
    if probabilities is None:
        return start, end, mode, np.full(start.size, np.nan)
    probs = np.asarray(probabilities, dtype=np.float64)
    n_modes = path.max() + 1
    if probs.ndim != 2 or probs.shape[0] != n_steps or probs.shape[1] < n_modes:
        raise ValueError(
            f"probabilities for sequence {index} must have shape ({n_steps}, n_modes) with n_modes >= {n_modes}, "
            f"got {probs.shape}"
        )
    return start, end, mode, np.add.reduceat(probs[np.arange(n_steps), path], start) / (end - start)


def _mapping(true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    n_true, n_pred = true.max() + 1, pred.max() + 1
    counts = np.bincount(pred * n_true + true, minlength=n_pred * n_true).reshape(n_pred, n_true)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    mapping = np.full(n_pred, -1, dtype=np.int64)
    mapping[rows] = cols
    return mapping


def _paired(true: Any, pred: Any) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated true and predicted labels, checked to be aligned step for step."""
    true_paths, pred_paths = _labels("true", true), _labels("pred", pred)
    if len(true_paths) != len(pred_paths):
        raise ValueError(f"true has {len(true_paths)} sequences but pred has {len(pred_paths)}")
    for s, (a, b) in enumerate(zip(true_paths, pred_paths)):
        if a.size != b.size:
            raise ValueError(f"sequence {s}: true has {a.size} steps but pred has {b.size}")
    true_labels, pred_labels = np.concatenate(true_paths), np.concatenate(pred_paths)
    if true_labels.size == 0:
        raise ValueError("true and pred are empty: there are no time steps to compare")
    return true_labels, pred_labels


def _is_ragged(value: Any) -> bool:
    """Whether ``value`` is a list of sequences rather than one sequence."""
    return isinstance(value, list | tuple) and len(value) > 0 and all(np.ndim(item) >= 1 for item in value)


def _labels(name: str, value: Any) -> list[np.ndarray]:
    """Sequences of non-negative int64 labels from one 1-D array or a list of them."""
    items = list(value) if _is_ragged(value) else [value]
    out = []
    for s, item in enumerate(items):
        where = f"{name} (sequence {s})" if len(items) > 1 else name
        array = np.asarray(item)
        if array.ndim != 1:
            raise ValueError(f"{where} must be a 1-D array of labels, got shape {array.shape}")
        integral = array.dtype.kind in "biu" or (
            array.dtype.kind == "f" and bool(np.all(np.isfinite(array) & (array == np.round(array))))
        )
        if not integral:
            raise ValueError(f"{where} must hold integer labels, got dtype {array.dtype}")
        labels = array.astype(np.int64)
        if (labels < 0).any():
            raise ValueError(f"{where} must hold non-negative labels, got {labels.min()}")
        out.append(labels)
    return out
