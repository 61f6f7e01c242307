"""ContinuousSwitchingLDS: the SwitchingLDS at unit steps, the exact likelihood with one mode at any
times, its M-step's pieces against the observed-state model's, and the irregular thermostat."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.linalg import expm
from scipy.stats import multivariate_normal

from modeshift import ContinuousSwitchingLDS, SwitchingLDS, load
from modeshift.datasets.simulators import thermostat
from modeshift.metrics import mode_accuracy
from modeshift.models import em
from modeshift.models.continuous_arhmm import _euler_regression, _flow_log_density
from modeshift.models.continuous_slds import (
    StateDependentRates,
    _euler_moments,
    _expected_flow_log_density,
    interval_statistics,
)
from modeshift.models.jump_process import endpoint_statistics

OBSERVED = ("observation_matrix_", "observation_offset_", "observation_covariance_")
INITIAL = ("initial_state_mean_", "initial_state_covariance_", "startprob_")


def _model(n_states: int = 2, seed: int = 0) -> ContinuousSwitchingLDS:
    """Two 2-D flows (a damped rotation, a relaxation), seen in 3 dimensions."""
    rng = np.random.default_rng(seed)
    model = ContinuousSwitchingLDS(n_states=n_states, state_dim=2)
    model.drift_matrices_ = np.array([[[-0.1, 0.5], [-0.5, -0.1]], [[-0.3, 0.0], [0.2, -0.2]]])[:n_states]
    model.drift_offsets_ = np.array([[0.1, 0.0], [0.0, -0.2]])[:n_states]
    model.diffusion_covariances_ = np.array([0.05 * np.eye(2), [[0.1, 0.02], [0.02, 0.04]]])[:n_states]
    model.rate_matrix_ = np.array([[-0.1, 0.1], [0.3, -0.3]]) if n_states == 2 else np.zeros((1, 1))
    model.observation_matrix_, model.observation_offset_ = rng.normal(size=(3, 2)), rng.normal(size=3)
    model.observation_covariance_ = 0.1 * np.eye(3)
    model.initial_state_mean_, model.initial_state_covariance_ = np.zeros(2), np.eye(2)
    model.startprob_ = np.array([0.6, 0.4])[:n_states] / np.array([0.6, 0.4])[:n_states].sum()
    return model


def _exact_law(F: np.ndarray, f: np.ndarray, Sigma: np.ndarray, gap: float) -> tuple[np.ndarray, ...]:
    """Φ, c, S over ``gap`` by scipy's expm of the augmented and Van Loan blocks."""
    n = len(f)
    affine = np.zeros((n + 1, n + 1))
    affine[:n, :n], affine[:n, n] = F, f
    affine = expm(affine * gap)
    block = expm(np.block([[-F, Sigma], [np.zeros((n, n)), F.T]]) * gap)
    return affine[:n, :n], affine[:n, n], affine[:n, :n] @ block[:n, n:]


def test_unit_steps_are_the_discrete_model_with_the_exponentials():
    continuous = _model()
    Y, _ = continuous.sample(200, random_state=1)
    discrete = SwitchingLDS(n_states=2, state_dim=2)
    flows = zip(continuous.drift_matrices_, continuous.drift_offsets_, continuous.diffusion_covariances_)
    laws = [_exact_law(F, f, Sigma, 1.0) for F, f, Sigma in flows]
    discrete.dynamics_matrices_ = np.stack([Phi for Phi, _, _ in laws])
    np.testing.assert_allclose(discrete.dynamics_matrices_, [expm(F) for F in continuous.drift_matrices_])
    discrete.dynamics_offsets_ = np.stack([c for _, c, _ in laws])
    discrete.dynamics_covariances_ = np.stack([S for _, _, S in laws])
    discrete.dynamics_input_matrices_, discrete.feedthrough_matrix_ = np.zeros((2, 2, 0)), np.zeros((3, 0))
    discrete.transmat_ = expm(continuous.rate_matrix_)
    for name in OBSERVED + INITIAL:
        setattr(discrete, name, getattr(continuous, name))
    expected = discrete.elbo(Y)
    assert abs(continuous.elbo(Y) - expected) < 1e-10
    assert abs(continuous.elbo(Y, times=np.arange(200.0) + 7.0) - expected) < 1e-10
    np.testing.assert_allclose(continuous.predict_proba(Y), discrete.predict_proba(Y), atol=1e-10)
    np.testing.assert_allclose(continuous.forecast(Y, 3).means, discrete.forecast(Y, 3).means, atol=1e-10)


def test_one_mode_at_irregular_times_has_the_exact_likelihood():
    """With one mode q(x) is the exact posterior, so the ELBO is log p(y): a Kalman filter with
    each gap's law computed by scipy."""
    model = _model(n_states=1)
    rng = np.random.default_rng(2)
    times = np.cumsum(rng.exponential(1.5, 60))
    Y, _ = model.sample(60, random_state=3, times=times)
    C, d, R = (model.__dict__[name] for name in OBSERVED)
    mean, cov, log_lik = model.initial_state_mean_, model.initial_state_covariance_, 0.0
    for n, y in enumerate(Y):
        if n:
            Phi, c, S = _exact_law(
                model.drift_matrices_[0],
                model.drift_offsets_[0],
                model.diffusion_covariances_[0],
                times[n] - times[n - 1],
            )
            mean, cov = Phi @ mean + c, Phi @ cov @ Phi.T + S
        innovation = C @ cov @ C.T + R
        log_lik += multivariate_normal(C @ mean + d, innovation).logpdf(y)
        gain = cov @ C.T @ np.linalg.inv(innovation)
        mean, cov = mean + gain @ (y - C @ mean - d), cov - gain @ C @ cov
    assert model.elbo(Y, times=times) == pytest.approx(log_lik, abs=1e-8)


def test_expected_flow_density_at_a_point_mass_is_the_flow_density():
    rng = np.random.default_rng(4)
    F, f, Sigma = np.array([[-0.2, 0.4], [-0.4, -0.1]]), np.array([0.3, -0.1]), np.array([[0.2, 0.05], [0.05, 0.1]])
    before, after, gaps = rng.normal(size=(30, 2)), rng.normal(size=(30, 2)), rng.exponential(1.0, 30)
    z = np.hstack([before, np.ones((30, 1))])
    moments = (after[:, :, None] * after[:, None], after[:, :, None] * z[:, None], z[:, :, None] * z[:, None])
    np.testing.assert_allclose(
        _expected_flow_log_density(F, f, Sigma, gaps, *moments), _flow_log_density(F, f, Sigma, before, after, gaps)
    )
    weights = rng.random(30)
    for mine, theirs in zip(
        _euler_moments(gaps, weights, *moments, 1e-6), _euler_regression(before, after, gaps, weights, 1e-6)
    ):
        np.testing.assert_allclose(mine, theirs, atol=1e-10)


def test_fit_is_monotone_and_round_trips(tmp_path):
    sim = thermostat(300, random_state=1, times="exponential", observation_sd=0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ContinuousSwitchingLDS(n_states=2, state_dim=1, n_iter=8, tol=-np.inf, random_state=0)
        model.fit(sim.observations, times=sim.times)
    history = np.asarray(model.history_)
    assert (np.diff(history) >= -1e-8 * np.abs(history[1:])).all()
    assert (
        np.allclose(model.rate_matrix_.sum(axis=1), 0.0)
        and (model.rate_matrix_ - np.diag(np.diag(model.rate_matrix_)) >= 0).all()
    )
    model.save(tmp_path / "m.msz")
    again = load(tmp_path / "m.msz")
    assert again.elbo(sim.observations, times=sim.times) == model.elbo(sim.observations, times=sim.times)
    assert list(model.describe().columns) == ["holding_time", "eigenvalues", "equilibrium"]


def test_several_sequences_with_their_own_times():
    sim = thermostat(150, random_state=0, times="exponential", observation_sd=0.05, n_sequences=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ContinuousSwitchingLDS(n_states=2, state_dim=1, n_iter=3, random_state=0)
        model.fit(sim.observations, times=sim.times)
    paths = model.predict(sim.observations, times=sim.times)
    assert [len(path) for path in paths] == [150, 150]
    alone = model.predict(sim.observations[1], times=sim.times[1])
    np.testing.assert_array_equal(paths[1], alone)


def test_bad_times_and_arguments_are_named():
    model = _model()
    Y, _ = model.sample(20, random_state=0)
    with pytest.raises(ValueError, match="time stamps decrease"):
        model.predict(Y, times=np.r_[np.arange(10.0), np.arange(10.0)])
    with pytest.raises(TypeError):
        model.predict(Y, inputs=np.zeros((20, 1)))
    with pytest.raises(ValueError, match="n_states"):
        ContinuousSwitchingLDS(n_states="auto").fit(Y)
    with pytest.raises(ValueError, match="rate_matrix_"):
        model.rate_matrix_ = np.array([[0.1, -0.1], [0.3, -0.3]])
        model._check_parameters()


def test_a_fit_over_shards_is_refused_with_its_reason():
    sim = thermostat(50, random_state=0, times="exponential", observation_sd=0.05)
    model = ContinuousSwitchingLDS(n_states=2, state_dim=1, n_iter=2, random_state=0)
    seqs = model._timed(sim.observations, None, sim.times)
    with pytest.raises(TypeError, match="every gap"):
        model._fit_em(seqs, over=em.in_memory(seqs))


def test_interval_statistics_with_one_generator_are_the_jump_process_ones():
    rates = np.array([[-0.4, 0.3, 0.1], [0.2, -0.2, 0.0], [0.5, 0.5, -1.0]])
    rng = np.random.default_rng(5)
    gaps, pairs = rng.exponential(1.0, 40), rng.dirichlet(np.ones(9), 40).reshape(40, 3, 3)
    jumps, exposure = interval_statistics(np.broadcast_to(rates, (40, 3, 3)), gaps, pairs)
    starts, ends = np.tile(np.repeat(np.arange(3), 3), 40), np.tile(np.arange(3), 120)
    expected = endpoint_statistics(rates, starts, ends, np.repeat(gaps, 9), counts=pairs.reshape(-1))
    np.testing.assert_allclose(jumps.sum(axis=0), expected["jumps"], rtol=1e-9)
    np.testing.assert_allclose(exposure.sum(axis=0), expected["time_at_risk"], rtol=1e-9)
    np.testing.assert_allclose(exposure.sum(axis=1), gaps * pairs.sum(axis=(1, 2)), rtol=1e-9)  # all the time


def test_state_dependent_rates_are_log_linear_and_zero_slopes_are_the_rate_matrix():
    rates = np.array([[-0.1, 0.1], [0.3, -0.3]])
    flat = StateDependentRates(np.ones(2) / 2, rates, np.zeros((2, 2, 1)), np.array([0.5, 2.0]))
    np.testing.assert_allclose(flat.kernel_arrays(np.zeros((2, 1)))[1], [expm(rates * 0.5), expm(rates * 2.0)])
    sloped = StateDependentRates(np.ones(2) / 2, rates, np.array([[[0.0], [2.0]], [[-1.0], [0.0]]]))
    generator = sloped.generators(np.array([[1.5]]))[0]
    np.testing.assert_allclose(
        generator, [[-0.1 * np.exp(3.0), 0.1 * np.exp(3.0)], [0.3 * np.exp(-1.5), -0.3 * np.exp(-1.5)]]
    )


def test_recurrent_fit_finds_the_thermostat_set_points_at_irregular_times(tmp_path):
    sim = thermostat(1000, random_state=3, times="exponential", observation_sd=0.05)
    model = ContinuousSwitchingLDS(n_states=2, state_dim=1, recurrent=True, n_iter=300, random_state=0)
    model.fit(sim.observations, times=sim.times)
    assert mode_accuracy(sim.modes, model.predict(sim.observations, times=sim.times)) > 0.9
    found = model.automaton(sim.observations, times=sim.times)
    c, d = model.observation_matrix_[0, 0], model.observation_offset_[0]
    np.testing.assert_allclose(sorted(float(c * g.thresholds[0] + d) for g in found.guards), [18.0, 22.0], rtol=0.05)
    assert model.rate_weights_.shape == (2, 2, 1) and not model.monotone
    assert list(model.describe().columns) == ["holding_time", "eigenvalues", "equilibrium", "rate_weights"]
    model.save(tmp_path / "recurrent.msz")
    again = load(tmp_path / "recurrent.msz")
    np.testing.assert_array_equal(again.rate_weights_, model.rate_weights_)
    np.testing.assert_array_equal(
        again.predict(sim.observations, times=sim.times), model.predict(sim.observations, times=sim.times)
    )


def _thermostat_accuracy(seed: int, times: str | np.ndarray, model: SwitchingLDS) -> float:
    sim = thermostat(1000, random_state=seed, times=times, observation_sd=0.05)
    timed = {"times": sim.times} if isinstance(model, ContinuousSwitchingLDS) else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(sim.observations, **timed)
    return mode_accuracy(sim.modes, model.predict(sim.observations, **timed))


@pytest.mark.slow
def test_irregular_thermostat_is_as_accurate_as_the_regular_one():
    """Exponential gaps (mean 1) against one-unit steps of the same system, observation sd 0.05,
    5 seeds: the recurrent continuous-time model against itself and against the recurrent
    discrete-time SwitchingLDS at one-unit steps (measured: 0.966, 0.978 and 0.978)."""
    regular_times = np.arange(1000.0)

    def continuous() -> ContinuousSwitchingLDS:
        return ContinuousSwitchingLDS(n_states=2, state_dim=1, recurrent=True, n_iter=300, random_state=0)

    irregular = np.mean([_thermostat_accuracy(seed, "exponential", continuous()) for seed in range(5)])
    regular = np.mean([_thermostat_accuracy(seed, regular_times, continuous()) for seed in range(5)])
    discrete = np.mean(
        [
            _thermostat_accuracy(
                seed, regular_times, SwitchingLDS(n_states=2, state_dim=1, recurrent=True, n_iter=300, random_state=0)
            )
            for seed in range(5)
        ]
    )
    assert irregular >= 0.95 and irregular >= regular - 0.02 and irregular >= discrete - 0.02
