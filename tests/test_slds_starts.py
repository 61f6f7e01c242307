"""Change points of a trajectory (models/slds_starts.py) and the SwitchingLDS start that puts a short mode there."""

from __future__ import annotations

import numpy as np
import pytest

from modeshift import SwitchingLDS
from modeshift.data import as_sequences
from modeshift.models import slds_starts


def test_the_hinge_filter_is_the_least_squares_change_of_slope():
    """d_t = f . window equals the hinge's coefficient of a least-squares fit on that window, whatever
    the window's values; it is 0 on any quadratic and the change of slope on a kinked quadratic."""
    rng = np.random.default_rng(0)
    w = 4
    s = np.arange(-w, w + 1, dtype=float)
    design = np.column_stack([np.ones_like(s), s, s * s, np.maximum(s, 0.0)])
    f = slds_starts._hinge_filter(w)
    for _ in range(5):
        window = rng.normal(size=2 * w + 1)
        assert f @ window == pytest.approx(np.linalg.lstsq(design, window, rcond=None)[0][-1])
    quadratic = 1.0 - 2.0 * s + 0.3 * s * s
    assert f @ quadratic == pytest.approx(0.0, abs=1e-12)
    assert f @ (quadratic + 1.7 * np.maximum(s, 0.0)) == pytest.approx(1.7)


def test_change_points_find_the_kinks_of_each_sequence():
    """Two sequences of noisy bounces (|t - c|, slope -1 then +1): the step into which each kink falls
    (c in (t - 1, t]), not its neighbours, and none near the ends; a missing value silences the
    windows that hold it."""
    rng = np.random.default_rng(1)
    t = np.arange(120.0)
    first = np.abs(t - 39.6) + np.abs(t - 80.3)
    second = np.abs(t[:90] - 49.7)
    y = [(v + rng.normal(0, 0.1, len(v)))[:, None] for v in (first, second)]
    seqs = as_sequences(y)
    np.testing.assert_array_equal(slds_starts.change_points(seqs, threshold=8.0), [40, 81, 120 + 50])
    scores = slds_starts.kink_scores(seqs)
    assert (scores[: slds_starts.WINDOW] == 0).all() and (scores[120 - slds_starts.WINDOW : 120] == 0).all()
    y[1][45] = np.nan
    gapped = slds_starts.kink_scores(as_sequences(y))
    assert (gapped[120 + 45 - slds_starts.WINDOW : 120 + 46 + slds_starts.WINDOW] == 0).all()
    np.testing.assert_array_equal(gapped[:120], scores[:120])


def test_change_points_of_a_series_without_a_kink_are_few():
    """White noise around a parabola: the kink score is a robust z-score, so few steps pass 3."""
    t = np.arange(2000.0)
    y = (0.001 * (t - 1000) ** 2 + np.random.default_rng(2).normal(size=2000))[:, None]
    assert len(slds_starts.change_points(as_sequences(y), threshold=3.0)) < 20


def test_start_puts_the_short_mode_at_the_change_points():
    """The start's modes are the longer mode everywhere but at the points, and its parameters (learned
    with these modes held) pass the model's checks."""
    rng = np.random.default_rng(3)
    x = np.cumsum(np.r_[5.0, np.zeros(199)])
    velocity, path = 0.5, np.zeros(200, dtype=int)
    for t in range(1, 200):
        if t % 40 == 0:
            velocity, path[t] = -velocity, 1
        x[t] = x[t - 1] + velocity
    y = (x + rng.normal(0, 0.05, 200))[:, None]
    model = SwitchingLDS(2, state_dim=2, resets="destination", n_iter=0, random_state=0).fit(y)
    seqs = model._sequences(y, None, None)
    points = np.flatnonzero(path)
    modes = model._start_at_change_points(seqs, np.tile([0.9, 0.1], (200, 1)), points)
    np.testing.assert_array_equal(modes.argmax(axis=1), path)
    model._check_parameters()
    assert np.isfinite(model.reset_covariances_).all() and np.isfinite(model.reset_matrices_).all()
