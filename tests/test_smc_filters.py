"""Particle filters against exact answers: the Kalman filter, and enumeration of mode paths."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from modeshift import LinearGaussianSSM, SwitchingLDS, kernels
from modeshift.smc import (
    LinearGaussian,
    NonlinearGrowth,
    StateSpaceModel,
    StochasticVolatility,
    SwitchingLinear,
    particle_filter,
)


def _linear_model():
    model = LinearGaussianSSM(state_dim=2, obs_dim=1)
    model.transition_matrix_ = np.array([[0.9, 0.2], [-0.1, 0.8]])
    model.transition_covariance_ = 0.3 * np.eye(2)
    model.observation_matrix_ = np.array([[1.0, 0.5]])
    model.observation_covariance_ = np.array([[0.5]])
    model.initial_state_mean_ = np.zeros(2)
    model.initial_state_covariance_ = np.eye(2)
    return model


def _mc_check_unbiased(estimates: np.ndarray, exact: float) -> None:
    """The mean of exp(estimate - exact) over replicates is 1 within 3 Monte Carlo standard errors."""
    ratios = np.exp(estimates - exact)
    assert abs(ratios.mean() - 1.0) < 3.0 * ratios.std(ddof=1) / np.sqrt(len(ratios))


def test_log_likelihood_estimate_is_unbiased_for_the_kalman_value():
    model = _linear_model()
    y, _ = model.sample(40, random_state=0)
    exact = model.score(y)
    smc = LinearGaussian(model)
    rng = np.random.default_rng(1)
    estimates = np.array([particle_filter(smc, y, 100, random_state=rng).log_likelihood for _ in range(300)])
    _mc_check_unbiased(estimates, exact)


@pytest.mark.parametrize("resampling", ["multinomial", "stratified", "systematic", "residual"])
def test_filtering_means_approach_the_kalman_filter(resampling):
    model = _linear_model()
    y, _ = model.sample(30, random_state=2)
    kalman = model.filter(y)
    result = particle_filter(LinearGaussian(model), y, 20_000, resampling=resampling, random_state=3)
    np.testing.assert_allclose(result.means, kalman.means, atol=0.05)
    np.testing.assert_allclose(result.variances, np.diagonal(kalman.covariances, axis1=1, axis2=2), rtol=0.1)
    assert result.log_likelihood == pytest.approx(model.score(y), abs=0.1)


class _WideProposal:
    """A proposal around the prior mean, twice as wide as the transition noise."""

    def __init__(self, smc: LinearGaussian):
        self.smc = smc

    def _law(self, previous):
        if previous is None:
            return self.smc.m0, 4.0 * self.smc.P0
        return previous @ self.smc.A.T, 4.0 * self.smc.Q

    def sample(self, previous, y, t, rng):
        mean, cov = self._law(previous)
        n = 500 if previous is None else len(previous)
        return mean + rng.standard_normal((n, 2)) @ np.linalg.cholesky(cov).T

    def log_density(self, previous, states, y, t):
        mean, cov = self._law(previous)
        residuals = states - mean
        precision = np.linalg.inv(cov)
        return -0.5 * (2 * np.log(2 * np.pi) + np.linalg.slogdet(cov)[1] + np.sum(residuals @ precision * residuals, 1))


def test_guided_filter_is_unbiased_too():
    model = _linear_model()
    y, _ = model.sample(25, random_state=4)
    smc = LinearGaussian(model)
    proposal = _WideProposal(smc)
    rng = np.random.default_rng(5)
    estimates = np.array(
        [particle_filter(smc, y, 500, proposal=proposal, random_state=rng).log_likelihood for _ in range(100)]
    )
    _mc_check_unbiased(estimates, model.score(y))


def _exact_switching_log_likelihood(model: SwitchingLDS, y: np.ndarray) -> float:
    """log p(y) by summing over every mode path: a Kalman filter per path."""
    T, K = len(y), model.n_states
    C, R, d = model.observation_matrix_, model.observation_covariance_, model.observation_offset_
    terms = []
    for path in itertools.product(range(K), repeat=T):
        path = np.array(path)
        log_prior = np.log(model.startprob_[path[0]]) + np.log(model.transmat_[path[:-1], path[1:]]).sum()
        A, Q = model.dynamics_matrices_[path], model.dynamics_covariances_[path]
        b = model.dynamics_offsets_[path]
        # the offsets b_t enter as inputs u_t = 1 with B_t = b_t
        log_lik = kernels.kalman_filter(
            y - d,
            np.array([0, T]),
            model.initial_state_mean_,
            model.initial_state_covariance_,
            A,
            Q,
            C,
            R,
            inputs=np.ones((T, 1)),
            input_matrices=b[:, :, None],
        )[0][0]
        terms.append(log_prior + log_lik)
    return float(np.logaddexp.reduce(terms))


def test_switching_lds_adapter_is_unbiased_for_enumeration():
    rng = np.random.default_rng(6)
    model = SwitchingLDS(n_states=2, state_dim=1, obs_dim=1)
    model.startprob_, model.transmat_ = np.array([0.6, 0.4]), np.array([[0.8, 0.2], [0.3, 0.7]])
    model.dynamics_matrices_ = np.array([[[0.9]], [[-0.5]]])
    model.dynamics_offsets_ = np.array([[0.5], [-1.0]])
    model.dynamics_input_matrices_ = np.zeros((2, 1, 0))
    model.dynamics_covariances_ = np.array([[[0.2]], [[0.4]]])
    model.observation_matrix_, model.observation_offset_ = np.array([[1.0]]), np.array([0.1])
    model.feedthrough_matrix_, model.observation_covariance_ = np.zeros((1, 0)), np.array([[0.3]])
    model.initial_state_mean_, model.initial_state_covariance_ = np.zeros(1), np.eye(1)
    y = rng.normal(size=(5, 1))
    exact = _exact_switching_log_likelihood(model, y)
    smc = SwitchingLinear(model)
    estimates = np.array([particle_filter(smc, y, 200, random_state=rng).log_likelihood for _ in range(300)])
    _mc_check_unbiased(estimates, exact)


def test_stochastic_volatility_and_growth_models_run():
    rng = np.random.default_rng(7)
    sv = StochasticVolatility(mu=-1.0, phi=0.95, sigma=0.3)
    x = sv.sample_initial(1, rng)
    states, returns = [], []
    for t in range(200):
        x = x if t == 0 else sv.sample_transition(x, t, rng)
        states.append(x[0, 0])
        returns.append(np.exp(x[0, 0] / 2) * rng.standard_normal())
    result = particle_filter(sv, np.array(returns), 2000, quantiles=(0.05, 0.5, 0.95), random_state=8)
    lower, median, upper = result.quantiles[:, :, 0].T
    assert np.all(lower <= median) and np.all(median <= upper)
    assert np.mean((lower <= states) & (np.array(states) <= upper)) > 0.75
    growth = particle_filter(NonlinearGrowth(), rng.normal(size=50), 500, random_state=9)
    assert np.isfinite(growth.log_likelihood) and growth.means.shape == (50, 1)


def test_resampling_follows_the_threshold_and_history_is_consistent():
    model = _linear_model()
    y, _ = model.sample(20, random_state=10)
    smc = LinearGaussian(model)
    never = particle_filter(smc, y, 100, ess_threshold=0.0, random_state=11)
    always = particle_filter(smc, y, 100, ess_threshold=1.0, keep_history=True, random_state=11)
    assert not never.resampled.any() and always.resampled[1:].all()
    assert always.particles.shape == (20, 100, 2) and always.ancestors.shape == (20, 100)
    np.testing.assert_allclose(always.weights.sum(axis=1), 1.0)
    np.testing.assert_allclose(always.means, np.einsum("tn,tnd->td", always.weights, always.particles))


class _Broken(StateSpaceModel):
    def sample_initial(self, n, rng):
        return rng.normal(size=(n, 1))

    def sample_transition(self, previous, t, rng):
        return previous + rng.normal(size=previous.shape)

    def log_observation(self, states, y, t):
        return np.full(len(states), -np.inf if t == 3 else 0.0)


def test_a_model_with_no_plausible_particle_names_the_time_step():
    with pytest.raises(ValueError, match="time step 3"):
        particle_filter(_Broken(), np.zeros(6), 50, random_state=0)
    with pytest.raises(ValueError, match="resampling"):
        particle_filter(_Broken(), np.zeros(6), 50, resampling="magic")
