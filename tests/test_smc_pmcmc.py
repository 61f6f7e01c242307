"""Particle MCMC: PMMH and particle Gibbs against exact posteriors and known truths."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from scipy.special import logsumexp

from modeshift import LinearGaussianSSM
from modeshift.smc import LinearGaussian, StateSpaceModel, StochasticVolatility
from modeshift.smc.pmcmc import (
    conditional_smc,
    particle_gibbs,
    pmmh,
    stochastic_volatility_gibbs_step,
)

SV_TRUTH = {"mu": -1.0, "phi": 0.95, "sigma": 0.25}
SV_START = {"mu": -0.5, "phi": 0.8, "sigma": 0.4}
SV_TRANSFORMS = {"phi": "tanh", "sigma": "log"}
SV_PRIORS = {"mu_prior": (0.0, 10.0), "phi_prior": (0.0, np.inf), "sigma2_prior": (2.0, 0.1)}


def _ar1(a: float, q: float = 0.5, r: float = 0.5) -> LinearGaussianSSM:
    """x_0 ~ N(0, 1), x_t = a x_t-1 + N(0, q), y_t = x_t + N(0, r)."""
    model = LinearGaussianSSM(state_dim=1, obs_dim=1)
    model.dynamics_matrix_, model.transition_covariance_ = np.array([[a]]), np.array([[q]])
    model.observation_matrix_, model.observation_covariance_ = np.array([[1.0]]), np.array([[r]])
    model.initial_state_mean_, model.initial_state_covariance_ = np.zeros(1), np.eye(1)
    return model


class _AR1(StateSpaceModel):
    """The model of :func:`_ar1` written by hand: the same as ``LinearGaussian(_ar1(a, q, r))``, only faster."""

    def __init__(self, a: float, q: float = 0.5, r: float = 0.5):
        self.a, self.q, self.r = a, q, r

    def sample_initial(self, n, rng):
        return rng.standard_normal((n, 1))

    def sample_transition(self, previous, t, rng):
        return self.a * previous + np.sqrt(self.q) * rng.standard_normal(previous.shape)

    def log_observation(self, states, y, t):
        return -0.5 * (np.log(2 * np.pi * self.r) + (y[0] - states[:, 0]) ** 2 / self.r)

    def log_initial(self, states):
        return -0.5 * (np.log(2 * np.pi) + states[:, 0] ** 2)

    def log_transition(self, previous, states, t):
        return -0.5 * (np.log(2 * np.pi * self.q) + (states[:, 0] - self.a * previous[:, 0]) ** 2 / self.q)


def _ar1_smc(a: float) -> _AR1:
    return _AR1(a)


def test_the_hand_written_model_is_the_adapter():
    mine, adapter = _AR1(0.6, 0.2, 0.4), LinearGaussian(_ar1(0.6, 0.2, 0.4))
    states, y = np.random.default_rng(0).standard_normal((4, 1)), np.array([0.3])
    np.testing.assert_allclose(mine.log_observation(states, y, 1), adapter.log_observation(states, y, 1))
    np.testing.assert_allclose(
        mine.log_transition(states, states[::-1], 1), adapter.log_transition(states, states[::-1], 1)
    )
    np.testing.assert_allclose(mine.log_initial(states), adapter.log_initial(states))


def _flat_prior(a: float) -> float:
    return 0.0 if -1.0 < a < 1.0 else -np.inf


def _simulate_sv(n_steps: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    mu, phi, sigma = SV_TRUTH["mu"], SV_TRUTH["phi"], SV_TRUTH["sigma"]
    rng = np.random.default_rng(seed)
    x = np.empty(n_steps)
    x[0] = mu + sigma / np.sqrt(1 - phi**2) * rng.standard_normal()
    for t in range(1, n_steps):
        x[t] = mu + phi * (x[t - 1] - mu) + sigma * rng.standard_normal()
    return x, np.exp(x / 2) * rng.standard_normal(n_steps)


def _sv_log_prior(mu: float, phi: float, sigma: float) -> float:
    """The priors of ``SV_PRIORS`` on (mu, phi, sigma): N(0, 10^2), U(-1, 1), sigma^2 ~ InverseGamma(2, 0.1)."""
    if not -1.0 < phi < 1.0 or sigma <= 0:
        return -np.inf
    shape, scale = SV_PRIORS["sigma2_prior"]
    # density of sigma = density of sigma^2 times d sigma^2 / d sigma = 2 sigma
    return -0.5 * (mu / 10.0) ** 2 - (shape + 1) * np.log(sigma**2) - scale / sigma**2 + np.log(2 * sigma)


class _Flat(StateSpaceModel):
    """A model whose likelihood is 1 whatever theta: PMMH then samples the prior."""

    def sample_initial(self, n, rng):
        return np.zeros((n, 1))

    def sample_transition(self, previous, t, rng):
        return previous

    def log_observation(self, states, y, t):
        return np.zeros(len(states))


class _Broken(_Flat):
    def log_observation(self, states, y, t):
        return np.full(len(states), np.nan)


class _Impossible(_Flat):
    """Zero likelihood whenever ``bound`` is below 1."""

    def __init__(self, bound=2.0):
        self.bound = bound

    def log_observation(self, states, y, t):
        return np.full(len(states), 0.0 if self.bound > 1.0 else -np.inf)


def _within_sds(samples: dict[str, np.ndarray], discard: int, n_sds: float) -> dict[str, float]:
    """For each parameter, |posterior mean - truth| in posterior standard deviations; asserts below ``n_sds``."""
    distances = {}
    for name, truth in SV_TRUTH.items():
        chain = samples[name][:, discard:]
        distances[name] = abs(chain.mean() - truth) / chain.std()
    assert all(distance < n_sds for distance in distances.values()), distances
    return distances


# --------------------------------------------------------------------------- PMMH


def test_pmmh_is_reproducible_from_one_seed():
    y = _ar1(0.8).sample(20, random_state=0)[0]
    run = lambda seed: pmmh(_ar1_smc, y, {"a": 0.5}, _flat_prior, 30, n_particles=20, n_chains=2, random_state=seed)  # noqa: E731
    first, again, other = run(1), run(1), run(2)
    np.testing.assert_array_equal(first.samples["a"], again.samples["a"])
    np.testing.assert_array_equal(first.log_likelihoods, again.log_likelihoods)
    assert first.samples["a"].shape == first.log_likelihoods.shape == (2, 30)
    assert not np.array_equal(first.samples["a"], other.samples["a"])
    assert not np.array_equal(first.samples["a"][0], first.samples["a"][1])  # chains are independent


def test_pmmh_matches_the_exact_posterior_on_a_grid():
    """Flat prior on the AR coefficient: the exact posterior is the Kalman likelihood, normalised on a grid."""
    y = _ar1(0.7).sample(80, random_state=3)[0]
    grid = np.linspace(-0.99, 0.99, 397)
    log_posterior = np.array([_ar1(a).score(y) for a in grid])
    weights = np.exp(log_posterior - logsumexp(log_posterior))
    exact_mean = weights @ grid
    exact_sd = np.sqrt(weights @ (grid - exact_mean) ** 2)

    result = pmmh(
        _ar1_smc,
        y,
        {"a": 0.0},
        _flat_prior,
        n_iter=1600,
        n_particles=60,
        proposal_scale=0.2,
        transforms={"a": "tanh"},
        random_state=0,
    )
    chain = result.samples["a"][0, result.n_adapt :]
    assert abs(chain.mean() - exact_mean) < 0.3 * exact_sd, (chain.mean(), exact_mean, exact_sd)
    assert 0.75 < chain.std() / exact_sd < 1.3, (chain.std(), exact_sd)
    assert 0.05 < result.acceptance_rate[0] < 0.8


def test_pmmh_transforms_carry_their_jacobians():
    """With a likelihood of 1, the chain samples the prior, on each transform's scale."""

    def log_prior(positive, unit, symmetric):
        # Exponential(1), Beta(2, 3), and (1 + s)/2 ~ Beta(3, 2): means 1, 0.4 and 0.2
        if positive <= 0 or not 0 < unit < 1 or not -1 < symmetric < 1:
            return -np.inf
        return -positive + np.log(unit) + 2 * np.log1p(-unit) + 2 * np.log1p(symmetric) + np.log1p(-symmetric)

    result = pmmh(
        lambda **theta: _Flat(),
        np.zeros(1),
        {"positive": 1.0, "unit": 0.5, "symmetric": 0.0},
        log_prior,
        n_iter=12000,
        n_particles=2,
        proposal_scale=0.8,
        transforms={"positive": "log", "unit": "logit", "symmetric": "tanh"},
        n_chains=2,
        random_state=0,
    )
    means = {name: chain[:, result.n_adapt :].mean() for name, chain in result.samples.items()}
    assert abs(means["positive"] - 1.0) < 0.08, means
    assert abs(means["unit"] - 0.4) < 0.02, means
    assert abs(means["symmetric"] - 0.2) < 0.04, means


def test_pmmh_recovers_stochastic_volatility_parameters_quickly():
    _, y = _simulate_sv(250, seed=11)
    result = pmmh(
        StochasticVolatility,
        y,
        SV_START,
        _sv_log_prior,
        n_iter=500,
        n_particles=60,
        transforms=SV_TRANSFORMS,
        random_state=0,
    )
    _within_sds(result.samples, result.n_adapt, 2.0)


@pytest.mark.slow
def test_pmmh_recovers_stochastic_volatility_parameters():
    _, y = _simulate_sv(1000, seed=12)
    result = pmmh(
        StochasticVolatility,
        y,
        SV_START,
        _sv_log_prior,
        n_iter=4000,
        n_particles=200,
        transforms=SV_TRANSFORMS,
        n_adapt=1500,
        random_state=0,
    )
    distances = _within_sds(result.samples, result.n_adapt, 2.0)
    print("PMMH", distances, "acceptance", result.acceptance_rate)


def test_pmmh_rejects_proposals_that_no_particle_explains():
    result = pmmh(
        lambda bound: _Impossible(bound),
        np.zeros(3),
        {"bound": 2.0},
        lambda bound: 0.0,
        n_iter=300,
        n_particles=5,
        proposal_scale=1.0,
        adapt=False,
        random_state=0,
    )
    assert result.samples["bound"].min() > 1.0
    assert 0 < result.acceptance_rate[0] < 1


def test_pmmh_errors_are_clear():
    y = np.zeros(5)
    with pytest.raises(ValueError, match="log_prior is -inf at initial_theta"):
        pmmh(_ar1_smc, y, {"a": 2.0}, _flat_prior, 5)
    with pytest.raises(ValueError, match="unknown transforms"):
        pmmh(_ar1_smc, y, {"a": 0.5}, _flat_prior, 5, transforms={"a": "exp"})
    with pytest.raises(ValueError, match="not in initial_theta"):
        pmmh(_ar1_smc, y, {"a": 0.5}, _flat_prior, 5, transforms={"b": "log"})
    with pytest.raises(ValueError, match="n_adapt must be in"):
        pmmh(_ar1_smc, y, {"a": 0.5}, _flat_prior, 5, n_adapt=6)
    with pytest.raises(ValueError, match="outside the range"):
        pmmh(_ar1_smc, y, {"a": -0.5}, lambda a: 0.0, 5, transforms={"a": "log"})
    with pytest.raises(ValueError, match="particle filter failed at theta"):
        pmmh(lambda a: _Broken(), y, {"a": 0.5}, _flat_prior, 5)
    with pytest.raises(ValueError, match="likelihood estimate at initial_theta"):
        pmmh(lambda bound: _Impossible(bound), y, {"bound": 0.5}, lambda bound: 0.0, 5)


def test_progress_needs_rich(monkeypatch):
    monkeypatch.setitem(sys.modules, "rich.progress", None)  # makes the import fail
    with pytest.raises(ImportError, match="pip install rich"):
        pmmh(_ar1_smc, np.zeros(5), {"a": 0.5}, _flat_prior, 5, progress=True)


def test_progress_bar_runs():
    pytest.importorskip("rich")
    y = np.zeros(5)
    shown = pmmh(_ar1_smc, y, {"a": 0.5}, _flat_prior, 5, n_particles=10, random_state=0, progress=True)
    hidden = pmmh(_ar1_smc, y, {"a": 0.5}, _flat_prior, 5, n_particles=10, random_state=0)
    np.testing.assert_array_equal(shown.samples["a"], hidden.samples["a"])
    update = stochastic_volatility_gibbs_step()
    particle_gibbs(StochasticVolatility, y, SV_START, update, 3, n_particles=5, random_state=0, progress=True)


# ------------------------------------------------------------------ particle Gibbs


def test_conditional_smc_leaves_the_smoothing_law_invariant():
    """N = 2 particles on a 5-step linear-Gaussian model: the chain's path moments are the RTS ones."""
    exact = _ar1(0.8, q=0.5, r=0.3)
    y = exact.sample(5, random_state=1)[0]
    smoothed = exact.smooth(y)
    model, rng = _AR1(0.8, q=0.5, r=0.3), np.random.default_rng(0)
    path = conditional_smc(model, y, None, 2, rng)
    paths = np.empty((10000, 5))  # the moments within half their tolerances (20,000 draws: a third)
    for k in range(len(paths)):
        path = conditional_smc(model, y, path, 2, rng)
        paths[k] = path[:, 0]
    np.testing.assert_allclose(paths.mean(axis=0), smoothed.means[:, 0], atol=0.03)
    np.testing.assert_allclose(paths.var(axis=0), smoothed.covariances[:, 0, 0], rtol=0.08)


def test_conditional_smc_checks_its_inputs():
    model, rng = StochasticVolatility(), np.random.default_rng(0)
    with pytest.raises(ValueError, match="at least 2 particles"):
        conditional_smc(model, np.zeros(4), None, 1, rng)
    with pytest.raises(ValueError, match="reference_path must have shape"):
        conditional_smc(model, np.zeros(4), np.zeros(3), 5, rng)
    with pytest.raises(ValueError, match="time step 0"):
        conditional_smc(_Broken(), np.zeros(4), np.zeros(4), 5, rng)


def test_stochastic_volatility_gibbs_step_samples_near_the_path_estimates():
    """Given a long path, p(theta | x) sits at the path's least-squares estimates, its spread at their errors."""
    path, _ = _simulate_sv(5000, seed=5)
    slope, intercept = np.polyfit(path[:-1], path[1:], 1)
    residual_sd = np.std(path[1:] - intercept - slope * path[:-1])
    estimates = np.array([intercept / (1 - slope), slope, residual_sd])
    update, rng, theta = stochastic_volatility_gibbs_step(**SV_PRIORS), np.random.default_rng(0), dict(SV_START)
    draws = []
    for _ in range(600):
        theta = update(path, theta, rng)
        draws.append([theta[name] for name in SV_TRUTH])
    draws = np.array(draws[100:])
    assert np.all(np.abs(draws.mean(axis=0) - estimates) < 0.3 * draws.std(axis=0)), (draws.mean(axis=0), estimates)
    # sd of the least-squares slope, sqrt((1 - phi^2) / T), and of the residual sd, sigma / sqrt(2 T)
    np.testing.assert_allclose(draws[:, 1:].std(axis=0), [np.sqrt((1 - slope**2) / 5000), residual_sd / 100], rtol=0.25)


def test_particle_gibbs_is_reproducible_from_one_seed():
    _, y = _simulate_sv(30, seed=0)
    update = stochastic_volatility_gibbs_step(**SV_PRIORS)
    run = lambda seed: particle_gibbs(StochasticVolatility, y, SV_START, update, 20, 10, n_chains=2, random_state=seed)  # noqa: E731
    first, again, other = run(1), run(1), run(2)
    for name in SV_TRUTH:
        np.testing.assert_array_equal(first.samples[name], again.samples[name])
        assert first.samples[name].shape == (2, 20)
        assert not np.array_equal(first.samples[name], other.samples[name])
    np.testing.assert_array_equal(first.path_mean, again.path_mean)
    assert first.path_mean.shape == first.path_variance.shape == first.last_path.shape == (2, 30, 1)


def test_particle_gibbs_checks_update_theta():
    def forgetful(path, theta, rng):
        return {"mu": theta["mu"]}

    with pytest.raises(ValueError, match="update_theta must return the keys"):
        particle_gibbs(StochasticVolatility, np.zeros(5), SV_START, forgetful, 2, 5, random_state=0)


def test_particle_gibbs_recovers_stochastic_volatility_quickly():
    x, y = _simulate_sv(250, seed=11)
    update = stochastic_volatility_gibbs_step(**SV_PRIORS)
    result = particle_gibbs(StochasticVolatility, y, SV_START, update, 400, 15, n_burnin=100, random_state=0)
    _within_sds(result.samples, 100, 2.0)
    assert np.corrcoef(result.path_mean[0, :, 0], x)[0, 1] > 0.7


@pytest.mark.slow
def test_particle_gibbs_recovers_stochastic_volatility():
    x, y = _simulate_sv(1000, seed=12)
    update = stochastic_volatility_gibbs_step(**SV_PRIORS)
    result = particle_gibbs(StochasticVolatility, y, SV_START, update, 3000, 30, n_burnin=500, random_state=0)
    distances = _within_sds(result.samples, 500, 2.0)
    print("particle Gibbs", distances)
    assert np.corrcoef(result.path_mean[0, :, 0], x)[0, 1] > 0.7
