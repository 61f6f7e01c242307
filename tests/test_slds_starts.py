"""The SwitchingLDS starts: change points of a trajectory (models/slds_starts.py) and the start that puts
a short mode there; the subspace start of a state seen in noise (models/subspace.py)."""

from __future__ import annotations

import numpy as np
import pytest

from modeshift import NonlinearSwitchingLDS, SwitchingLDS
from modeshift.data import as_sequences
from modeshift.metrics import mode_accuracy
from modeshift.models import slds_inference, slds_starts, subspace


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


@pytest.mark.parametrize("model_class", [SwitchingLDS, NonlinearSwitchingLDS])
def test_start_puts_the_short_mode_at_the_change_points(model_class):
    """The start's modes are the longer mode everywhere but at the points, and its parameters (learned
    with these modes held) pass the model's checks; its objective is that of its first sweep."""
    rng = np.random.default_rng(3)
    x = np.cumsum(np.r_[5.0, np.zeros(199)])
    velocity, path = 0.5, np.zeros(200, dtype=int)
    for t in range(1, 200):
        if t % 40 == 0:
            velocity, path[t] = -velocity, 1
        x[t] = x[t - 1] + velocity
    y = (x + rng.normal(0, 0.05, 200))[:, None]
    model = model_class(2, state_dim=2, resets="destination", n_iter=0, random_state=0).fit(y)
    seqs = model._sequences(y, None, None)
    points = np.flatnonzero(path)
    objective, start = slds_starts.start_at_change_points(model, seqs, np.tile([0.9, 0.1], (200, 1)), points)
    if model_class is SwitchingLDS:
        modes, first = start, slds_inference.sweep(model._parameters(seqs), seqs, start)
    else:
        modes, first = start[1], model._sweep(model._parameters(), seqs, start[1], start[0])
    np.testing.assert_array_equal(modes.argmax(axis=1), path)
    model._check_parameters()
    assert np.isfinite(model.reset_covariances_).all() and np.isfinite(model.reset_matrices_).all()
    assert objective == first.elbo + model._log_prior()


def _noisy_switching_ar(seed, n_steps=2000, coefficients=(0.95, -0.5), stay=0.98):
    """x_t = a_z x_t-1 + N(0, 1), y_t = x_t + N(0, 1): a state seen in noise as large as its steps."""
    rng = np.random.default_rng(seed)
    modes, x = np.zeros(n_steps, dtype=int), np.zeros(n_steps)
    for t in range(1, n_steps):
        modes[t] = modes[t - 1] if rng.random() < stay else 1 - modes[t - 1]
        x[t] = coefficients[modes[t]] * x[t - 1] + rng.standard_normal()
    return modes, (x + rng.standard_normal(n_steps))[:, None]


def test_the_switching_system_has_the_second_moments_of_a_linear_one_with_k_n_states():
    """With K n = 2 states the subspace estimate of the noisy two-mode AR(1) finds both modes'
    coefficients and R = 1 (with n = 1 it takes the other mode for noise: R near 2)."""
    _, y = _noisy_switching_ar(0)
    lifted = subspace.identify(as_sequences(y), state_dim=2)
    np.testing.assert_allclose(np.sort(np.linalg.eigvals(lifted.dynamics_matrix).real), [-0.5, 0.95], atol=0.05)
    assert lifted.observation_covariance[0, 0] == pytest.approx(1.0, rel=0.1)
    assert subspace.identify(as_sequences(y), state_dim=1).observation_covariance[0, 0] > 1.5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_state_seen_in_noise_as_large_as_its_steps_keeps_the_noise_in_r(seed):
    """The noisy two-mode AR(1): the PCA start took the observations for the states (r = 0.04 to
    0.1, q = 2.1 to 2.6 before the subspace start); now r within 20 % and q within 30 % (measured:
    r 0.85 to 1.07, q 0.96 to 1.24; EM started at the true parameters itself ends with q 1.15 to
    1.19 on seeds 0 and 2) and the modes right >= 0.9."""
    modes, y = _noisy_switching_ar(seed)
    model = SwitchingLDS(2, state_dim=1, n_iter=1000, random_state=seed).fit(y)
    c = model.observation_matrix_[0, 0]
    np.testing.assert_allclose(model.dynamics_covariances_[:, 0, 0] * c**2, 1.0, rtol=0.3)
    assert model.observation_covariance_[0, 0] == pytest.approx(1.0, rel=0.2)
    assert mode_accuracy(modes, model.predict(y)) >= 0.9
