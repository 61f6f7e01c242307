"""The particle methods on a SwitchingLDS with resets, against every mode path of a tiny case."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp

from modeshift import SwitchingLDS
from modeshift.smc import particle_filter
from modeshift.smc.rao_blackwell import rao_blackwellised_filter


def _model(resets: str | None = "pair") -> SwitchingLDS:
    """Two modes, a 2-d state, a scalar observation; a switch throws the state far from its flow."""
    model = SwitchingLDS(n_states=2, state_dim=2, obs_dim=1, resets=resets)
    model.startprob_, model.transmat_ = np.array([0.6, 0.4]), np.array([[0.8, 0.2], [0.3, 0.7]])
    model.dynamics_matrices_ = np.array([[[0.9, 0.1], [0.0, 0.8]], [[0.5, -0.3], [0.2, 0.6]]])
    model.dynamics_offsets_ = np.array([[0.3, 0.0], [-0.5, 0.2]])
    model.dynamics_input_matrices_ = np.zeros((2, 2, 0))
    model.dynamics_covariances_ = np.array([0.2 * np.eye(2), [[0.4, 0.1], [0.1, 0.3]]])
    model.observation_matrix_, model.observation_offset_ = np.array([[1.0, 0.5]]), np.array([0.1])
    model.feedthrough_matrix_, model.observation_covariance_ = np.zeros((1, 0)), np.array([[0.3]])
    model.initial_state_mean_, model.initial_state_covariance_ = np.zeros(2), np.eye(2)
    if resets == "pair":  # reset 0 is the switch 0 -> 1, reset 1 the switch 1 -> 0
        model.reset_matrices_ = np.array([-0.8 * np.eye(2), [[0.0, 1.0], [-1.0, 0.0]]])
        model.reset_offsets_ = np.array([[3.0, -1.0], [-2.0, 1.5]])
        model.reset_input_matrices_ = np.zeros((2, 2, 0))
        model.reset_covariances_ = np.array([0.05 * np.eye(2), [[0.1, -0.02], [-0.02, 0.1]]])
    return model


def _with_flows_as_resets(model: SwitchingLDS) -> SwitchingLDS:
    """``model`` (without resets) given resets into each mode equal to that mode's flow."""
    same = copy.deepcopy(model)
    same.resets = "destination"
    same.reset_matrices_, same.reset_offsets_ = model.dynamics_matrices_.copy(), model.dynamics_offsets_.copy()
    same.reset_input_matrices_ = model.dynamics_input_matrices_.copy()
    same.reset_covariances_ = model.dynamics_covariances_.copy()
    return same


def _law(model: SwitchingLDS, i: int, j: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(A, b, Q) that x_t follows from mode i to mode j: j's flow, or the reset of the switch i -> j
    (pair ties: the switches in row-major order)."""
    if i == j or model.resets is None:
        return model.dynamics_matrices_[j], model.dynamics_offsets_[j], model.dynamics_covariances_[j]
    r = j if model.resets == "destination" else i * (model.n_states - 1) + (j if j < i else j - 1)
    return model.reset_matrices_[r], model.reset_offsets_[r], model.reset_covariances_[r]


def _exact(model: SwitchingLDS, y: np.ndarray) -> tuple[float, np.ndarray]:
    """log p(y_0..T-1) and the filtered mode probabilities p(z_t | y_0..t) (T, K), summing over
    every mode path with a Kalman filter per path (the pair's law at each step)."""
    T, K = len(y), model.n_states
    C, d, R = model.observation_matrix_, model.observation_offset_, model.observation_covariance_
    paths = np.array(list(itertools.product(range(K), repeat=T)))
    prefixes = np.empty((len(paths), T))  # log p(z_0..t, y_0..t) of each path's prefix
    for row, path in enumerate(paths):
        mean, cov = model.initial_state_mean_, model.initial_state_covariance_
        log_joint = np.log(model.startprob_[path[0]])
        for t in range(T):
            if t > 0:
                A, b, Q = _law(model, path[t - 1], path[t])
                mean, cov = A @ mean + b, A @ cov @ A.T + Q
                log_joint += np.log(model.transmat_[path[t - 1], path[t]])
            S = C @ cov @ C.T + R
            log_joint += stats.multivariate_normal.logpdf(y[t], C @ mean + d, S)
            gain = cov @ C.T @ np.linalg.inv(S)
            mean, cov = mean + gain @ (y[t] - C @ mean - d), cov - gain @ C @ cov
            prefixes[row, t] = log_joint
    # every prefix appears K^(T-1-t) times among the paths: the same factor in each mode's sum
    by_mode = [[logsumexp(prefixes[paths[:, t] == k, t]) for k in range(K)] for t in range(T)]
    mode_probs = np.exp(np.array(by_mode) - logsumexp(prefixes, axis=0)[:, None])
    return float(logsumexp(prefixes[:, -1])), mode_probs


def _data(model: SwitchingLDS, T: int, seed: int) -> np.ndarray:
    return model.sample(T, random_state=seed)[0]


def test_resets_equal_to_the_flows_give_the_same_particles_as_no_resets():
    plain = _model(resets=None)
    same = _with_flows_as_resets(plain)
    y = _data(plain, 50, 0)
    for filtered in (
        lambda model: particle_filter(model.as_state_space_model(), y, 300, random_state=1).log_likelihood,
        lambda model: rao_blackwellised_filter(model, y, 300, random_state=1).log_likelihood,
    ):
        assert filtered(same) == filtered(plain)


def test_the_reference_is_the_kalman_filter_without_switches():
    """One mode path has all its probability: the enumeration is that path's Kalman filter."""
    model = _model()
    model.startprob_, model.transmat_ = np.array([1.0, 0.0]), np.eye(2)
    y = _data(model, 6, 2)
    with np.errstate(divide="ignore"):
        log_likelihood, mode_probs = _exact(model, y)
    single = SwitchingLDS(n_states=1, state_dim=2, obs_dim=1)
    for name in single.parameter_names:
        value = getattr(model, name, None)
        if name != "transmat_" and value is not None:
            setattr(single, name, value[:1] if name.startswith("dynamics") or name == "startprob_" else value)
    single.transmat_ = np.ones((1, 1))
    np.testing.assert_allclose(log_likelihood, single.elbo(y), rtol=1e-8)  # K = 1: the ELBO is the likelihood
    np.testing.assert_allclose(mode_probs[:, 0], 1.0)


@pytest.fixture(scope="module")
def tiny():
    """A path of T = 8 steps from the model with resets, with its exact answers."""
    model = _model()
    y = _data(model, 8, 3)
    return model, y, *_exact(model, y)


def _within_monte_carlo_error(estimates: np.ndarray, exact: float) -> bool:
    """exp(estimate - exact), unbiased for 1, is within 4 standard errors of 1 over the replicates."""
    ratios = np.exp(estimates - exact)
    return abs(ratios.mean() - 1.0) < 4.0 * ratios.std(ddof=1) / np.sqrt(len(ratios))


def test_the_bootstrap_and_rao_blackwellised_filters_are_unbiased_for_the_enumeration(tiny):
    model, y, exact, _ = tiny
    ignored, _ = _exact(_model(resets=None), y)  # the same model with the resets left out
    assert abs(ignored - exact) > 1.0  # the resets matter on these data
    rng, smc = np.random.default_rng(4), model.as_state_space_model()
    bootstrap = np.array([particle_filter(smc, y, 2000, random_state=rng).log_likelihood for _ in range(40)])
    rao_blackwellised = np.array(
        [rao_blackwellised_filter(model, y, 500, random_state=rng).log_likelihood for _ in range(40)]
    )
    for estimates in (bootstrap, rao_blackwellised):
        assert _within_monte_carlo_error(estimates, exact)
        assert abs(estimates.mean() - exact) < 4.0 * estimates.std(ddof=1) / np.sqrt(len(estimates))
        assert not _within_monte_carlo_error(estimates, ignored)


def test_filtered_mode_probabilities_approach_the_enumeration(tiny):
    model, y, _, mode_probs = tiny
    result = particle_filter(model.as_state_space_model(), y, 20000, keep_history=True, random_state=5)
    modes = result.particles[:, :, -1].astype(int)
    estimated = np.stack([(result.weights * (modes == k)).sum(axis=1) for k in range(2)], axis=1)
    np.testing.assert_allclose(estimated, mode_probs, atol=0.02)
    rao_blackwellised = rao_blackwellised_filter(model, y, 5000, random_state=6).mode_probabilities
    np.testing.assert_allclose(rao_blackwellised, mode_probs, atol=0.02)
    assert np.abs(mode_probs - _exact(_model(resets=None), y)[1]).max() > 0.1  # the resets move them


def test_log_transition_is_the_density_of_the_pairs_law():
    model = _model()
    smc = model.as_state_space_model()
    rng = np.random.default_rng(7)
    previous = np.column_stack([rng.normal(size=(4, 2)), [0, 0, 1, 1]])
    states = np.column_stack([rng.normal(size=(4, 2)), [0, 1, 0, 1]])
    expected = []
    for before, after in zip(previous, states):
        i, j = int(before[-1]), int(after[-1])
        A, b, Q = _law(model, i, j)
        density = stats.multivariate_normal.logpdf(after[:2], A @ before[:2] + b, Q)
        expected.append(np.log(model.transmat_[i, j]) + density)
    np.testing.assert_allclose(smc.log_transition(previous, states, 1), expected, rtol=1e-10)
