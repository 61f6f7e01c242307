"""Particle smoothers against the Rauch-Tung-Striebel smoother of a linear-Gaussian model."""

from __future__ import annotations

import numpy as np
import pytest
from test_smc_filters import _linear_model

from modeshift.smc import LinearGaussian, particle_filter
from modeshift.smc.smoothers import _backward_indices, backward_simulation, paris

N_STEPS = 30


class _Unbounded(LinearGaussian):
    """The linear-Gaussian model without its density bound: backward sampling is exact, O(N^2)."""

    log_transition_bound = None


class _Impossible(LinearGaussian):
    """Every transition into step 5 has zero density."""

    def log_transition(self, previous, states, t):
        return np.full(len(states), -np.inf) if t == 5 else super().log_transition(previous, states, t)


class _ImpossibleUnbounded(_Impossible):
    log_transition_bound = None


@pytest.fixture(scope="module")
def linear():
    """(model, y, RTS smoother result) for the model of test_smc_filters."""
    model = _linear_model()
    y, _ = model.sample(N_STEPS, random_state=0)
    return model, y, model.smooth(y)


def _sum_and_cross(previous, states, t):
    """h_t = (x_t, vec(x_t x_t-1^T)); the cross term is zero at t = 0."""
    n = len(states)
    cross = np.zeros((n, 4)) if previous is None else (states[:, :, None] * previous[:, None, :]).reshape(n, 4)
    return np.hstack([states, cross])


@pytest.mark.parametrize("cls", [_Unbounded, LinearGaussian])
def test_backward_draws_follow_the_backward_kernel(linear, cls):
    smc, rng = cls(linear[0]), np.random.default_rng(0)
    previous = rng.normal(size=(5, 2))
    weights = np.array([0.1, 0.3, 0.2, 0.25, 0.15])
    state = np.array([[0.5, -0.2]])
    kernel = weights * np.exp(smc.log_transition(previous, np.repeat(state, 5, axis=0), 1))
    kernel /= kernel.sum()
    n_draws = 20_000
    draws = _backward_indices(smc, previous, weights, np.repeat(state, n_draws // 2, axis=0), 1, 2, rng)
    frequencies = np.bincount(draws.ravel(), minlength=5) / n_draws
    np.testing.assert_array_less(np.abs(frequencies - kernel), 4 * np.sqrt(kernel * (1 - kernel) / n_draws))


def test_backward_simulation_means_approach_the_rts_means(linear):
    """Averaged over 3 seeds; at N = 2000 the filtering means themselves are off by ~0.1 on
    this model (minimum ESS ~ 250), so the bound on the smoothed means is 0.2."""
    model, y, rts = linear
    smc = LinearGaussian(model)

    def mean_error(n_particles):
        errors = []
        for seed in range(3):
            filtered = particle_filter(smc, y, n_particles, keep_history=True, random_state=seed)
            paths = backward_simulation(smc, filtered, 500, random_state=seed + 10)
            assert paths.shape == (500, N_STEPS, 2)
            errors.append(np.abs(paths.mean(axis=0) - rts.means).max())
        return np.mean(errors)

    large = mean_error(2000)
    assert large < 0.2
    assert large < mean_error(100)


def test_backward_simulation_without_a_bound_samples_exactly(linear):
    model, y, rts = linear
    smc = _Unbounded(model)
    filtered = particle_filter(smc, y, 500, keep_history=True, random_state=0)
    paths = backward_simulation(smc, filtered, 100, random_state=1)
    assert np.abs(paths.mean(axis=0) - rts.means).max() < 0.4


def test_paris_matches_the_rts_sums_and_the_kalman_likelihood(linear):
    """Ten runs with N = 500: the mean estimate of E[sum_t x_t | y] and of
    sum_t E[x_t x_t-1^T | y] is within 4 standard errors of the exact value, per entry."""
    model, y, rts = linear
    means, cross = rts.means, rts.cross_covariances
    exact_cross = sum(cross[t] + np.outer(means[t], means[t - 1]) for t in range(1, N_STEPS))
    exact = np.concatenate([means.sum(axis=0), exact_cross.ravel()])
    runs = [paris(LinearGaussian(model), y, _sum_and_cross, 500, random_state=seed) for seed in range(10)]
    estimates = np.array([run.estimate for run in runs])
    assert runs[0].estimates.shape == (N_STEPS, 6)
    standard_errors = estimates.std(axis=0, ddof=1) / np.sqrt(len(runs))
    np.testing.assert_array_less(np.abs(estimates.mean(axis=0) - exact), 4 * standard_errors)
    log_likelihoods = np.array([run.log_likelihood for run in runs])
    assert np.abs(log_likelihoods - model.score(y)).max() < 1.0
    assert log_likelihoods.mean() == pytest.approx(model.score(y), abs=0.3)


def test_paris_first_estimate_is_the_filtering_mean_of_h0(linear):
    model, y, _ = linear
    result = paris(LinearGaussian(model), y[:1], lambda previous, states, t: states, 20_000, random_state=0)
    np.testing.assert_allclose(result.estimate, model.filter(y[:1]).means[0], atol=0.05)


@pytest.mark.parametrize("cls", [_ImpossibleUnbounded, _Impossible])
def test_zero_backward_weights_name_the_time_step(linear, cls):
    model, y, _ = linear
    smc = cls(model)
    with pytest.raises(ValueError, match="time step 5"):
        paris(smc, y, lambda previous, states, t: states, 300, random_state=0)
    filtered = particle_filter(smc, y, 50, keep_history=True, random_state=0)
    with pytest.raises(ValueError, match="time step 5"):
        backward_simulation(smc, filtered, 10, random_state=0)


def test_a_wrong_bound_is_reported(linear):
    model, y, _ = linear
    smc = LinearGaussian(model)
    smc.log_transition_bound = lambda t: -10.0
    with pytest.raises(ValueError, match="time step 1: log_transition exceeds"):
        paris(smc, y, lambda previous, states, t: states, 500, random_state=0)


def test_invalid_arguments_are_rejected(linear):
    model, y, _ = linear
    smc = LinearGaussian(model)
    with pytest.raises(ValueError, match="keep_history=True"):
        backward_simulation(smc, particle_filter(smc, y, 10, random_state=0), 5)
    with pytest.raises(ValueError, match="n_backward"):
        paris(smc, y, lambda previous, states, t: states, n_backward=0)
    with pytest.raises(ValueError, match="resampling"):
        paris(smc, y, lambda previous, states, t: states, resampling="bogus")
