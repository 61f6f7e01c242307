"""Change points of a trajectory: where to propose a short mode when starting a switching model.

A switch that moves the state at once (a ball's velocity reversed at impact, a reset of
:mod:`modeshift.emissions.reset`) lasts a step or two, too short for a model fitted to the
smoothed states to see it: the smoother spreads it over its neighbours. The observations show
it as a break in their local trend. Around every step t, a local quadratic in time
y_s = a + b (s - t) + c (s - t)^2, s = t - w .. t + w, is given one more regressor, the hinge
max(s - t, 0), whose coefficient d is the change of slope at t. Its least-squares estimate is
a fixed linear filter of the window, d_t = f . y[t - w .. t + w], so each observed dimension is
one correlation. Divided by its spread under white noise about a smooth trend (sd ||f||, the
noise sd estimated robustly from third differences), d_t is a z-score (the **kink score**; for
several dimensions the root mean square of theirs). The change points are the local maxima of
the score (none larger within w steps) above a threshold, each moved to the step into which its
kink falls: the kink time fitted to tenths of a step, rounded up, since step t moves the state
from t - 1 to t.

On the bouncing ball (2 cm noise, 10-step windows) d_t has sd 1.1 cm and an impact at speed v
changes the slope by (1 + e) v dt, so an impact below 2 m/s (42 % of them over five seeds) scores
under 3: about half the impacts pass 3, and a quarter to a third of those fall one step off.

>>> import numpy as np
>>> t = np.arange(200.0)
>>> y = np.abs(t - 119.6)[:, None] + np.random.default_rng(0).normal(0, 0.2, (200, 1))  # a bounce at 119.6
>>> from modeshift.data import as_sequences
>>> change_points(as_sequences(y), threshold=5.0).tolist()  # the step into which it falls
[120]
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from modeshift.data import Sequences

__all__ = ["change_point_modes", "change_point_start", "change_points", "kink_scores", "start_at_change_points"]

WINDOW = 10  # steps on each side of the local trend
CHANGE_POINT_THRESHOLD = 3.0  # kink score (a robust z-score) of a change point proposing a short mode
CANDIDATE_THRESHOLD = 1.0  # kink score of a weaker change point tried as one more short mode
CLAMPED_SWEEPS = 20  # rounds of q(x) and M-step with the proposed modes held, before EM frees them


def _hinge_filter(window: int) -> np.ndarray:
    """f with d_t = f . y[t - w .. t + w]: the hinge's row of the least-squares solution."""
    s = np.arange(-window, window + 1, dtype=float)
    design = np.column_stack([np.ones_like(s), s, s * s, np.maximum(s, 0.0)])
    return np.linalg.pinv(design)[-1]


def _noise_scale(seqs: Sequences) -> np.ndarray:
    """A robust estimate of each dimension's white-noise sd about a smooth trend: third
    differences cancel any quadratic, have variance 20 sd^2 under white noise, and a kink touches
    only three of them, so 1.4826 median |diff^3 y| / sqrt(20)."""
    differences = [np.diff(seqs.values[a:b], n=3, axis=0) for a, b in zip(seqs.offsets[:-1], seqs.offsets[1:])]
    stacked = np.concatenate(differences)
    return np.array(
        [1.4826 * np.median(np.abs(c[~np.isnan(c)])) if (~np.isnan(c)).any() else 0.0 for c in stacked.T]
    ) / np.sqrt(20.0)


def kink_scores(seqs: Sequences, window: int = WINDOW) -> np.ndarray:
    """The score of a break in the local trend at every step (n_steps,), 0 within ``window``
    steps of a sequence's ends or where the window has a missing value."""
    f = _hinge_filter(window)
    slopes = np.full(seqs.values.shape, np.nan)
    for first, last in zip(seqs.offsets[:-1], seqs.offsets[1:]):
        if last - first > 2 * window:
            for column in range(seqs.n_features):
                inside = np.correlate(seqs.values[first:last, column], f, mode="valid")
                slopes[first + window : last - window, column] = inside
    noise = _noise_scale(seqs) * np.linalg.norm(f)  # the spread of d_t where there is no break
    known = ~np.isnan(slopes)
    z = np.where(known, slopes, 0.0) / np.where(noise > 0, noise, np.inf)
    return np.sqrt((z * z).sum(axis=1) / np.maximum(known.sum(axis=1), 1))


_KINK_TIMES = np.linspace(-1.0, 1.0, 21)  # where in the step a kink may fall, in tenths


@functools.lru_cache(maxsize=4)
def _residual_makers(window: int) -> np.ndarray:
    """I - H_tau for every kink time tau of ``_KINK_TIMES``, (21, 2w + 1, 2w + 1): the residual of
    the least-squares fit of a window on [1, s, s^2, max(s - tau, 0)] is (I - H_tau) y. The
    designs depend on the window alone, so they are built once (read-only)."""
    s = np.arange(-window, window + 1, dtype=float)
    makers = []
    for tau in _KINK_TIMES:
        design = np.column_stack([np.ones_like(s), s, s * s, np.maximum(s - tau, 0.0)])
        makers.append(np.eye(len(s)) - design @ np.linalg.pinv(design))
    stacked = np.stack(makers)
    stacked.flags.writeable = False
    return stacked


def _switch_step(window_values: np.ndarray, window: int) -> int:
    """The step, relative to the window's centre (0 or 1), into which the kink falls: the kink time
    tau in [-1, 1] whose hinge max(s - tau, 0) fits the window best (least squares, on a grid of
    tenths, beside a quadratic; the first of equal fits), rounded up, since step t moves the state
    from t - 1 to t."""
    residuals = _residual_makers(window) @ np.nan_to_num(window_values)
    tau = _KINK_TIMES[int(np.argmin((residuals**2).sum(axis=(1, 2))))]
    return max(int(np.ceil(tau - 1e-9)), 0)


def change_points(
    seqs: Sequences, threshold: float, window: int = WINDOW, scores: np.ndarray | None = None
) -> np.ndarray:
    """The steps whose :func:`kink_scores` exceed ``threshold`` and are the largest within
    ``window`` steps of the same sequence, in increasing order; ``scores``, if given, are those
    kink scores already computed (with the same ``window``)."""
    scores = kink_scores(seqs, window) if scores is None else scores
    kept = []
    for first, last in zip(seqs.offsets[:-1], seqs.offsets[1:]):
        part = scores[first:last]
        for t in np.flatnonzero(part > threshold):
            if part[t] >= part[max(t - window, 0) : t + window + 1].max():
                kept.append(first + _switch_step(seqs.values[first + t - window : first + t + window + 1], window) + t)
    return np.array(kept, dtype=np.int64)


# The change-point start of a switching model with resets (the SwitchingLDS's and the
# NonlinearSwitchingLDS's). What it reads of ``model``: its parameters (``_snapshot()``, set back
# through ``__dict__``), those of its resets and initial law by name, and ``_clamped_start(seqs,
# path)``, which learns its parameters with the modes held at ``path`` (T,) from the current ones
# and returns the objective of the start's first E-step (ELBO plus log prior) and the start.


def change_point_modes(seqs: Sequences, dwell: np.ndarray) -> tuple[np.ndarray, ...]:
    """A start of q(z) for inference with resets, whose switches can last one step and which the
    generic starts miss: the mode of the shortest ``dwell`` time at the change points of each
    sequence (by the sequence's own noise scale, so that its start does not depend on the others:
    over a cluster, on the partition), the longest elsewhere (everywhere in a sequence without
    change points), (T, K) one-hot, as a tuple of starts: none without dwell times."""
    if not np.isfinite(dwell).all():
        return ()
    points = [  # each sequence alone, a view (Sequences.blocks of one row: one sequence each)
        first + change_points(one, CHANGE_POINT_THRESHOLD) for first, one in zip(seqs.starts, seqs.blocks(1))
    ]
    path = np.full(seqs.n_steps, int(np.argmax(dwell)))
    path[np.concatenate(points)] = int(np.argmin(dwell))
    return (np.eye(len(dwell))[path],)


def start_at_change_points(
    model: Any, seqs: Sequences, mode_probs: np.ndarray, points: np.ndarray
) -> tuple[float, Any]:
    """A start with a short mode at the change ``points`` (steps): the least occupied mode of the
    most likely modes under ``mode_probs`` (T, K) is moved to the points, its other steps going
    to their next most likely mode; the parameters learned with these modes held
    (``model._clamped_start``), from the current ones with resets that forget the state (mean and
    covariance of the initial law) so that q(x) may jump at the points. Returns the start's
    objective and the start."""
    K = mode_probs.shape[1]
    path = mode_probs.argmax(axis=1)
    short = int(np.bincount(path, minlength=K).argmin())
    others = np.where(np.arange(K) == short, -np.inf, mode_probs).argmax(axis=1)
    path = np.where(path == short, others, path)
    path[points] = short
    model.reset_matrices_ = np.zeros_like(model.reset_matrices_)
    model.reset_offsets_ = np.broadcast_to(model.initial_state_mean_, model.reset_offsets_.shape).copy()
    model.reset_covariances_ = np.broadcast_to(model.initial_state_covariance_, model.reset_covariances_.shape).copy()
    return model._clamped_start(seqs, path)


def change_point_start(model: Any, seqs: Sequences, mode_probs: np.ndarray) -> tuple[float, Any] | None:
    """The start of :func:`start_at_change_points` at the change points of the data (kink scores
    above ``CHANGE_POINT_THRESHOLD``), then greedily at each weaker one (above
    ``CANDIDATE_THRESHOLD``, strongest first, not next to a kept one) whose addition raises the
    start's objective: the kink scores alone miss small switches (a low bounce in 2 cm noise), and
    EM cannot add them later. Returns the best start's objective and the start, its parameters
    set; None (the parameters untouched) without change points."""
    scores = kink_scores(seqs)
    points = change_points(seqs, CHANGE_POINT_THRESHOLD, scores=scores)
    if not len(points):
        return None
    base = model._snapshot()

    def objective(chosen: np.ndarray) -> tuple[float, Any]:
        model.__dict__.update(base)
        return start_at_change_points(model, seqs, mode_probs, chosen)

    best, start = objective(points)
    kept = model._snapshot()
    candidates = change_points(seqs, CANDIDATE_THRESHOLD, scores=scores)
    for candidate in candidates[np.argsort(-scores[candidates], kind="stable")]:
        if np.abs(points - candidate).min() <= 1:
            continue
        trial = np.sort(np.r_[points, candidate])
        value, trial_start = objective(trial)
        if value > best:
            best, start, points, kept = value, trial_start, trial, model._snapshot()
    model.__dict__.update(kept)
    return best, start
