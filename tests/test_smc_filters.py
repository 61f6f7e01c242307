"""Particle filters against exact answers: the Kalman filter, and enumeration of mode paths."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from modeshift import LinearGaussianSSM, NotFittedError, SwitchingLDS
from modeshift import _kernels as kernels
from modeshift.smc import (
    LinearGaussian,
    NonlinearGrowth,
    StateSpaceModel,
    StochasticVolatility,
    SwitchingLinear,
    particle_filter,
)
from modeshift.smc.adapters import _gaussian_log_density


def _linear_model():
    model = LinearGaussianSSM(state_dim=2, obs_dim=1)
    model.dynamics_matrix_ = np.array([[0.9, 0.2], [-0.1, 0.8]])
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


def _switching_model() -> SwitchingLDS:
    """A plain two-mode SLDS with a scalar state."""
    model = SwitchingLDS(n_states=2, state_dim=1, obs_dim=1)
    model.startprob_, model.transmat_ = np.array([0.6, 0.4]), np.array([[0.8, 0.2], [0.3, 0.7]])
    model.dynamics_matrices_ = np.array([[[0.9]], [[-0.5]]])
    model.dynamics_offsets_ = np.array([[0.5], [-1.0]])
    model.dynamics_input_matrices_ = np.zeros((2, 1, 0))
    model.dynamics_covariances_ = np.array([[[0.2]], [[0.4]]])
    model.observation_matrix_, model.observation_offset_ = np.array([[1.0]]), np.array([0.1])
    model.feedthrough_matrix_, model.observation_covariance_ = np.zeros((1, 0)), np.array([[0.3]])
    model.initial_state_mean_, model.initial_state_covariance_ = np.zeros(1), np.eye(1)
    return model


def _mode_path_log_joints(model: SwitchingLDS, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every mode path (K^T, T) and its log p(path, y): a Kalman filter per path."""
    T, K = len(y), model.n_states
    C, R, d = model.observation_matrix_, model.observation_covariance_, model.observation_offset_
    paths = np.array(list(itertools.product(range(K), repeat=T)))
    terms = []
    for path in paths:
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
    return paths, np.array(terms)


def _exact_switching_log_likelihood(model: SwitchingLDS, y: np.ndarray) -> float:
    """log p(y) by summing over every mode path."""
    return float(np.logaddexp.reduce(_mode_path_log_joints(model, y)[1]))


@pytest.mark.parametrize("missing", [False, True])
def test_switching_lds_adapter_is_unbiased_for_enumeration(missing):
    rng = np.random.default_rng(6)
    model = _switching_model()
    y = rng.normal(size=(5, 1))
    if missing:  # a step without an observation carries no evidence
        y[2] = np.nan
    exact = _exact_switching_log_likelihood(model, y)
    smc = SwitchingLinear(model)
    estimates = np.array([particle_filter(smc, y, 200, random_state=rng).log_likelihood for _ in range(300)])
    _mc_check_unbiased(estimates, exact)


class _ExactPredictive:
    """log p(y_t | x_t-1) = log N(y_t | C (A x_t-1 + B u_t) + D u_t, C Q C^T + R) of a linear-Gaussian model."""

    def __init__(self, smc: LinearGaussian):
        self.smc = smc
        self.covariance = smc.C @ smc.Q @ smc.C.T + smc.R

    def log_predictive_weight(self, previous, y, t):
        drift, feedthrough = self.smc._input(t)
        mean = (previous @ self.smc.A.T + drift) @ self.smc.C.T + feedthrough
        return _gaussian_log_density(y - mean, self.covariance)


def _log_likelihood_estimates(smc, y, n_particles, n_replicates, seed, **options) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.array(
        [particle_filter(smc, y, n_particles, random_state=rng, **options).log_likelihood for _ in range(n_replicates)]
    )


def test_auxiliary_filter_is_unbiased_and_beats_the_bootstrap_filter():
    model = _linear_model()
    # small noises: y_t is predictable from x_t-1, so looking ahead picks better parents
    model.transition_covariance_, model.observation_covariance_ = 0.05 * np.eye(2), np.array([[0.05]])
    y, _ = model.sample(30, random_state=12)
    exact, smc = model.score(y), model.as_state_space_model()
    auxiliary = _log_likelihood_estimates(smc, y, 100, 200, 13, auxiliary=_ExactPredictive(smc))
    bootstrap = _log_likelihood_estimates(smc, y, 100, 200, 14)
    _mc_check_unbiased(auxiliary, exact)
    assert auxiliary.var() < bootstrap.var()


class _OptimalProposal:
    """p(x_t | x_t-1, y_t) of a linear-Gaussian model without inputs (p(x_0 | y_0) at t = 0)."""

    def __init__(self, smc: LinearGaussian):
        self.smc = smc

    def _law(self, previous, y):
        smc = self.smc
        mean, cov = (smc.m0[None], smc.P0) if previous is None else (previous @ smc.A.T, smc.Q)
        gain = cov @ smc.C.T @ np.linalg.inv(smc.C @ cov @ smc.C.T + smc.R)
        return mean + (y - mean @ smc.C.T) @ gain.T, cov - gain @ smc.C @ cov

    def sample(self, previous, y, t, rng):
        mean, cov = self._law(previous, y)
        noise = rng.standard_normal((300 if previous is None else len(previous), 2))
        return mean + noise @ np.linalg.cholesky(cov).T

    def log_density(self, previous, states, y, t):
        mean, cov = self._law(previous, y)
        return _gaussian_log_density(states - mean, cov)


def test_fully_adapted_auxiliary_filter_has_equal_second_stage_weights():
    # resampled every step on p(y_t | x_t-1), moved by p(x_t | x_t-1, y_t): every g f / q equals its parent's eta
    model = _linear_model()
    y, _ = model.sample(20, random_state=17)
    smc = LinearGaussian(model)
    result = particle_filter(
        smc, y, 300, proposal=_OptimalProposal(smc), auxiliary=_ExactPredictive(smc), ess_threshold=1.0, random_state=18
    )
    np.testing.assert_allclose(result.ess, 300)


def test_auxiliary_filter_resamples_on_first_stage_weights_and_reports_the_time_step():
    model = _linear_model()
    y, _ = model.sample(15, random_state=15)
    smc = LinearGaussian(model)
    never = particle_filter(smc, y, 100, auxiliary=_ExactPredictive(smc), ess_threshold=0.0, random_state=16)
    plain = particle_filter(smc, y, 100, ess_threshold=0.0, random_state=16)
    # without resampling the first-stage weights cancel: the bootstrap filter, draw for draw
    assert not never.resampled.any()
    np.testing.assert_allclose(never.log_likelihood_increments, plain.log_likelihood_increments)

    class Hopeless:
        def log_predictive_weight(self, previous, y, t):
            return np.full(len(previous), -np.inf if t == 4 else 0.0)

    with pytest.raises(ValueError, match="time step 4"):
        particle_filter(smc, y, 50, auxiliary=Hopeless(), random_state=0)


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


@pytest.mark.parametrize("model", [LinearGaussianSSM(state_dim=1), SwitchingLDS(n_states=2, state_dim=1)])
def test_adapters_need_every_parameter_of_the_model(model):
    adapter = LinearGaussian if isinstance(model, LinearGaussianSSM) else SwitchingLinear
    with pytest.raises(NotFittedError, match=f"this {type(model).__name__} has no .*: call fit, or set them by hand"):
        adapter(model)


def test_the_linear_gaussian_adapter_refuses_a_covariance_that_is_not_positive_definite():
    model = _linear_model()
    model.transition_covariance_ = np.diag([1.0, -1.0])
    with pytest.raises(ValueError, match="transition_covariance_.* is not positive definite"):
        LinearGaussian(model)


def test_a_diffuse_start_is_refused_by_the_particle_methods():
    model = _linear_model().set_params(diffuse=True)
    with pytest.raises(ValueError, match="proper initial law"):
        LinearGaussian(model)
