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
from modeshift.models.continuous_arhmm import (
    FlowDensities,
    Flows,
    GapGroups,
    GapMoments,
    euler_regression,
    expected_flow_log_likelihood,
    point_moments,
)
from modeshift.models.continuous_slds import StateDependentRates, interval_statistics
from modeshift.models.jump_process import endpoint_statistics
from modeshift.models.streaming import FilterState

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


def _kalman(model: ContinuousSwitchingLDS, Y: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray, list]:
    """A one-mode model's Kalman filter with each gap's law computed by scipy: the filtered means
    (T, n), the log p(y_n | y_<n) (T,) and the last (mean, covariance)."""
    C, d, R = (model.__dict__[name] for name in OBSERVED)
    mean, cov, means, log_liks = model.initial_state_mean_, model.initial_state_covariance_, [], []
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
        log_liks.append(multivariate_normal(C @ mean + d, innovation).logpdf(y))
        gain = cov @ C.T @ np.linalg.inv(innovation)
        mean, cov = mean + gain @ (y - C @ mean - d), cov - gain @ C @ cov
        means.append(mean)
    return np.array(means), np.array(log_liks), [mean, cov]


def test_one_mode_at_irregular_times_has_the_exact_likelihood():
    """With one mode q(x) is the exact posterior, so the ELBO is log p(y): a Kalman filter with
    each gap's law computed by scipy."""
    model = _model(n_states=1)
    rng = np.random.default_rng(2)
    times = np.cumsum(rng.exponential(1.5, 60))
    Y, _ = model.sample(60, random_state=3, times=times)
    assert model.elbo(Y, times=times) == pytest.approx(_kalman(model, Y, times)[1].sum(), abs=1e-8)


def test_flow_moments_summed_per_gap_give_the_row_by_row_likelihood_and_regression():
    """At point masses (observed pairs) the objective from the moments summed per gap is
    sum_n w_n log N(x_n | Φ x_n-1 + c, S) row by row, and the Euler proposal is the weighted
    least squares of (x_n - x_n-1) / Δ_n on [x_n-1, 1] with weights w_n Δ_n."""
    rng = np.random.default_rng(4)
    F, f, Sigma = np.array([[-0.2, 0.4], [-0.4, -0.1]]), np.array([0.3, -0.1]), np.array([[0.2, 0.05], [0.05, 0.1]])
    before, after, weights = rng.normal(size=(30, 2)), rng.normal(size=(30, 2)), rng.random(30)
    gaps = rng.choice([0.5, 1.0, 2.5], 30)  # repeated gaps share one law
    summed = GapMoments.of(GapGroups.of(gaps), weights, *point_moments(before, after))
    assert summed.gaps.tolist() == [0.5, 1.0, 2.5]
    np.testing.assert_allclose(summed.weights, [weights[gaps == g].sum() for g in (0.5, 1.0, 2.5)])
    distinct, group = np.unique(gaps, return_inverse=True)
    densities = FlowDensities.of(Flows.of(F[None], f[None], Sigma[None]), distinct)
    expected = weights @ densities.log_pdf(before, after, group)[:, 0]
    assert expected_flow_log_likelihood(F, f, Sigma, summed) == pytest.approx(expected, rel=1e-12)
    Z = np.hstack([before, np.ones((30, 1))])
    rate, w = (after - before) / gaps[:, None], weights * gaps
    W = np.linalg.lstsq(Z * np.sqrt(w)[:, None], rate * np.sqrt(w)[:, None], rcond=None)[0].T
    residual = rate - Z @ W.T
    A, b, S = euler_regression(summed, 0.0)
    np.testing.assert_allclose(np.column_stack([A, b]), W, atol=1e-10)
    np.testing.assert_allclose(S, (residual * w[:, None]).T @ residual / weights.sum(), atol=1e-10)


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
    # inference sequence by sequence, each with its own steps' laws: q(z) alone is q(z) in the batch
    for i in (0, 1):
        alone = model.predict_proba(sim.observations[i], times=sim.times[i])
        together = model.predict_proba(sim.observations, times=sim.times)[i]
        np.testing.assert_allclose(together, alone, atol=1e-10)


def test_bad_times_and_arguments_are_named():
    model = _model()
    Y, _ = model.sample(20, random_state=0)
    with pytest.raises(ValueError, match="time stamps decrease"):
        model.predict(Y, times=np.r_[np.arange(10.0), np.arange(10.0)])
    with pytest.raises(ValueError, match="input_dim=0"):
        model.predict(Y, inputs=np.zeros((20, 1)))
    with pytest.raises(ValueError, match="n_states"):
        ContinuousSwitchingLDS(n_states="many").fit(Y)
    with pytest.raises(ValueError, match="max_states"):
        ContinuousSwitchingLDS(n_states="auto", max_states=0).fit(Y)
    with pytest.raises(ValueError, match="rate_matrix_"):
        model.rate_matrix_ = np.array([[0.1, -0.1], [0.3, -0.3]])
        model._check_parameters()


def test_auto_fits_each_number_of_modes_and_keeps_the_smallest_bic(tmp_path):
    sim = thermostat(120, random_state=0, times="exponential", observation_sd=0.05)
    model = ContinuousSwitchingLDS(n_states="auto", state_dim=1, max_states=2, n_iter=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", em.ConvergenceWarning)
        model.fit(sim.observations, times=sim.times)
    table = model.selection_
    assert table["n_states"].tolist() == [1, 2] and table["chosen"].sum() == 1
    assert model.n_states_ == table["n_states"][table["chosen"]].item()
    assert np.argmin(table["bic"]) == np.flatnonzero(table["chosen"])[0]
    # the candidates were fitted and scored at the data's times, not one time unit apart
    chosen_elbo = table["elbo"][table["chosen"]].item()
    assert model.elbo(sim.observations, times=sim.times) == pytest.approx(chosen_elbo, rel=1e-10)
    assert model.predict_proba(sim.observations, times=sim.times).shape == (120, model.n_states_)
    model.save(tmp_path / "auto.msz")
    np.testing.assert_array_equal(load(tmp_path / "auto.msz").selection_["bic"], table["bic"])


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_auto_finds_the_two_modes_of_an_irregular_thermostat(seed):
    sim = thermostat(400, random_state=seed, times="exponential", observation_sd=0.05)
    model = ContinuousSwitchingLDS(n_states="auto", state_dim=1, max_states=3, n_iter=20, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", em.ConvergenceWarning)
        model.fit(sim.observations, times=sim.times)
    assert model.n_states_ == 2


def test_kept_modes_start_from_their_flows_and_the_rates_among_them():
    """A pruned start keeps the kept modes' flows, their rates to one another (each holding rate
    the sum of those left) and slopes, and p(z_0) renormalised."""
    model = _model()
    model.recurrent, model.rate_weights_ = True, np.array([[[0.0, 0.0], [1.5, -0.5]], [[-1.0, 0.0], [0.0, 0.0]]])
    one = model._kept_modes(np.array([1]))
    assert one.n_states == 1 and one.recurrent
    np.testing.assert_array_equal(one.drift_matrices_, model.drift_matrices_[1:])
    np.testing.assert_array_equal(one.diffusion_covariances_, model.diffusion_covariances_[1:])
    np.testing.assert_array_equal(one.rate_matrix_, [[0.0]])
    np.testing.assert_array_equal(one.rate_weights_, np.zeros((1, 1, 2)))
    np.testing.assert_array_equal(one.startprob_, [1.0])
    np.testing.assert_array_equal(one.observation_matrix_, model.observation_matrix_)
    swapped = model._kept_modes(np.array([1, 0]))
    np.testing.assert_array_equal(swapped.rate_matrix_, [[-0.3, 0.3], [0.1, -0.1]])
    np.testing.assert_array_equal(swapped.rate_weights_[0, 1], model.rate_weights_[1, 0])
    swapped._check_parameters()


def test_prune_starts_each_number_of_modes_from_the_larger_fit_too(tmp_path):
    sim = thermostat(120, random_state=0, times="exponential", observation_sd=0.05)
    model = ContinuousSwitchingLDS(
        n_states="auto", state_dim=1, max_states=2, selection="prune", n_iter=3, random_state=0
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", em.ConvergenceWarning)
        model.fit(sim.observations, times=sim.times)
    table = model.selection_
    assert table["n_states"].tolist() == [2, 1] and table["start"].iloc[0] == "scratch"
    assert {"elbo", "bic", "smallest_occupancy", "vanished", "chosen"} <= set(table.columns)
    assert model.n_states_ == table["n_states"][table["chosen"]].item()
    chosen_elbo = table["elbo"][table["chosen"]].item()  # at the data's times, not one time unit apart
    assert model.elbo(sim.observations, times=sim.times) == pytest.approx(chosen_elbo, rel=1e-10)
    model.save(tmp_path / "pruned.msz")
    assert load(tmp_path / "pruned.msz").selection_.equals(table)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_prune_finds_the_two_modes_of_an_irregular_thermostat(seed):
    sim = thermostat(400, random_state=seed, times="exponential", observation_sd=0.05)
    model = ContinuousSwitchingLDS(
        n_states="auto", state_dim=1, max_states=4, selection="prune", n_iter=20, random_state=0
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", em.ConvergenceWarning)
        model.fit(sim.observations, times=sim.times)
    assert model.n_states_ == 2, model.selection_
    assert mode_accuracy(sim.modes, model.predict(sim.observations, times=sim.times)) > 0.9


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


# ---------------------------------------------------------------- forecasting and streaming at any times
def _from_the_end(model: ContinuousSwitchingLDS, Y: np.ndarray, times: np.ndarray) -> ContinuousSwitchingLDS:
    """A copy whose first step is drawn from q(z, x) at the data's last step (to simulate the future)."""
    posterior = model._infer(model._sequences(model._timed(Y, None, times), None, None))
    start = ContinuousSwitchingLDS(**model.get_params())
    start.__dict__.update(model._snapshot())
    start.initial_state_mean_, start.initial_state_covariance_ = posterior.means[-1], posterior.covs[-1]
    start.startprob_ = posterior.mode_probs[-1]
    return start


@pytest.mark.parametrize("recurrent", [False, True])
def test_forecast_at_irregular_future_times_is_the_simulated_future(recurrent):
    """The exact moments over gaps 0.4, 2.5, 0.1 (Monte Carlo ones for a recurrent model) against
    40,000 simulated futures from q(z, x) at the end: a mean within 4.5 standard errors of both
    estimates (sd / sqrt(n) each), a mode probability within 4.5 sqrt(p (1 - p) (1/n + 1/N))."""
    from modeshift.models.arhmm import FORECAST_PATHS

    model = _model()
    if recurrent:
        model.recurrent, model.random_state = True, 0
        model.rate_weights_ = np.array([[[0.0, 0.0], [1.5, -0.5]], [[-1.0, 0.0], [0.0, 0.0]]])
    times = np.cumsum(np.random.default_rng(4).exponential(1.0, 80))
    Y, _ = model.sample(80, random_state=5, times=times)
    future = times[-1] + np.cumsum([0.4, 2.5, 0.1])
    forecast = model.forecast(Y, times=times, future_times=future)
    N = 40000
    observations, modes = _from_the_end(model, Y, times).sample(4, N, random_state=6, times=np.r_[times[-1], future])
    Yf, Zf = np.stack(observations)[:, 1:], np.stack(modes)[:, 1:]
    sd = np.sqrt(np.diagonal(forecast.covariances, axis1=1, axis2=2))
    paths = FORECAST_PATHS if recurrent else np.inf
    assert np.all(np.abs(Yf.mean(axis=0) - forecast.means) < 4.5 * sd * np.sqrt(1 / N + 1 / paths))
    p = forecast.mode_probabilities[:, 1]
    assert np.all(np.abs((Zf == 1).mean(axis=0) - p) < 4.5 * np.sqrt(p * (1 - p) * (1 / N + 1 / paths)))
    if not recurrent:
        for h in range(3):  # a covariance entry's standard error, about sqrt((S_ii S_jj + S_ij^2) / N)
            scale = np.sqrt((np.outer(sd[h], sd[h]) ** 2 + forecast.covariances[h] ** 2) / N)
            assert np.all(np.abs(np.cov(Yf[:, h].T) - forecast.covariances[h]) < 4.5 * scale)
    # unit gaps are the horizon's steps, and several sequences give lists
    np.testing.assert_array_equal(
        model.forecast(Y, times=times, future_times=times[-1] + np.arange(1.0, 3.0)).means,
        model.forecast(Y, 2, times=times).means,
    )
    several = model.forecast(
        [Y, Y[:40]], times=[times, times[:40]], future_times=[future, times[39] + np.array([0.5, 1.0, 2.0])]
    )
    assert isinstance(several.means, list) and several.means[1].shape == (3, 3)


def test_recurrent_filter_forecast_without_state_dependence_is_the_exact_one_within_monte_carlo_error():
    """With zero rate slopes the recurrent model's switches are expm(Λ Δ) whatever the state: its
    filter is the plain one's, and its Monte Carlo forecast from the filter's mixture (each mode's
    Gaussian started in its mode) estimates the plain model's exact one at irregular future times."""
    from modeshift.models.arhmm import FORECAST_PATHS

    plain = _model()
    recurrent = _model()
    recurrent.recurrent, recurrent.random_state, recurrent.rate_weights_ = True, 0, np.zeros((2, 2, 2))
    times = np.cumsum(np.random.default_rng(4).exponential(1.0, 60))
    Y, _ = plain.sample(60, random_state=5, times=times)
    state = list(recurrent.filter_stream(Y, times=times))[-1].state
    plain_state = list(plain.filter_stream(Y, times=times))[-1].state
    for mine, theirs in zip(state.filtered, plain_state.filtered):
        np.testing.assert_allclose(mine, theirs, rtol=1e-10)
    future = times[-1] + np.cumsum([0.4, 2.5, 0.1])
    got, want = (
        recurrent.filter_forecast(state, future_times=future),
        plain.filter_forecast(plain_state, future_times=future),
    )
    n, sd = FORECAST_PATHS, np.sqrt(np.diagonal(want.covariances, axis1=1, axis2=2))
    assert np.all(np.abs(got.means - want.means) < 4.5 * sd / np.sqrt(n))
    scale = np.sqrt((sd[:, :, None] ** 2 * sd[:, None, :] ** 2 + want.covariances**2) / n)
    assert np.all(np.abs(got.covariances - want.covariances) < 5 * scale)
    p = want.mode_probabilities
    assert np.all(np.abs(got.mode_probabilities - p) < 4.5 * np.sqrt(p * (1 - p) / n))
    assert np.abs(got.means - want.means).max() > 1e-6  # a Monte Carlo estimate, not the exact numbers


def test_bad_future_times_are_named():
    model = _model()
    Y, _ = model.sample(10, random_state=0)
    with pytest.raises(ValueError, match="either horizon"):
        model.forecast(Y)
    with pytest.raises(ValueError, match="either horizon"):
        model.forecast(Y, 2, future_times=[10.0, 11.0])
    with pytest.raises(ValueError, match="after the last time seen, 9"):
        model.forecast(Y, future_times=[9.0, 11.0])
    with pytest.raises(ValueError, match="strictly"):
        model.forecast(Y, future_times=[10.0, 10.0])
    with pytest.raises(ValueError, match="finite"):
        model.forecast(Y, future_times=[10.0, np.nan])
    with pytest.raises(ValueError, match="numbers"):
        model.forecast(Y, future_times=["soon"])
    with pytest.raises(ValueError, match="2 arrays for 1 sequences"):
        model.forecast(Y, future_times=[[10.0], [11.0]])
    with pytest.raises(ValueError, match="horizon must be"):
        model.filter_forecast(model.filter_step(model.filter_init(), Y[0])[0], 0)


def _exact_switching_filter(model: ContinuousSwitchingLDS, Y: np.ndarray, times: np.ndarray) -> tuple:
    """p(z_T-1 | y) and log p(y) at irregular times by enumerating every mode path (a Kalman filter each)."""
    import itertools

    C, d, R = (model.__dict__[name] for name in OBSERVED)
    k, total, last = model.n_states, 0.0, np.zeros(model.n_states)
    for path in itertools.product(range(k), repeat=len(Y)):
        weight, mean, cov, log_lik = (
            model.startprob_[path[0]],
            model.initial_state_mean_,
            model.initial_state_covariance_,
            0.0,
        )
        for n, (z, y) in enumerate(zip(path, Y)):
            if n:
                gap = times[n] - times[n - 1]
                weight *= expm(model.rate_matrix_ * gap)[path[n - 1], z]
                Phi, c, S = _exact_law(
                    model.drift_matrices_[z], model.drift_offsets_[z], model.diffusion_covariances_[z], gap
                )
                mean, cov = Phi @ mean + c, Phi @ cov @ Phi.T + S
            innovation = C @ cov @ C.T + R
            log_lik += multivariate_normal(C @ mean + d, innovation).logpdf(y)
            gain = cov @ C.T @ np.linalg.inv(innovation)
            mean, cov = mean + gain @ (y - C @ mean - d), cov - gain @ C @ cov
        total += weight * np.exp(log_lik)
        last[path[-1]] += weight * np.exp(log_lik)
    return last / total, np.log(total)


def test_streaming_at_irregular_times_is_exact_where_kims_filter_is(tmp_path):
    """Kim's filter is exact with one mode (the Kalman filter at each gap's law) and, with two, for the
    first three steps (every mode path enumerated); a state saved mid-stream resumes identically."""
    times = np.cumsum(np.random.default_rng(7).exponential(1.2, 40))
    one = _model(n_states=1)
    Y, _ = one.sample(40, random_state=8, times=times)
    outs = list(one.filter_stream(Y, times=times))
    means, log_liks, (mean, cov) = _kalman(one, Y, times)
    assert np.abs(np.array([out.mean for out in outs]) - means).max() < 1e-10
    assert np.abs(np.array([out.log_likelihood for out in outs]) - log_liks).max() < 1e-10
    Phi, c, S = _exact_law(one.drift_matrices_[0], one.drift_offsets_[0], one.diffusion_covariances_[0], 2.5)
    C, d, R = (one.__dict__[name] for name in OBSERVED)
    ahead = one.filter_forecast(outs[-1].state, future_times=[times[-1] + 2.5])
    np.testing.assert_allclose(ahead.means[0], C @ (Phi @ mean + c) + d, atol=1e-10)
    np.testing.assert_allclose(ahead.covariances[0], C @ (Phi @ cov @ Phi.T + S) @ C.T + R, atol=1e-10)

    two = _model()
    Y, _ = two.sample(8, random_state=9, times=times[:8])
    outs = list(two.filter_stream(Y, times=times[:8]))
    for T in (1, 2, 3):
        probabilities, log_lik = _exact_switching_filter(two, Y[:T], times[:T])
        np.testing.assert_allclose(outs[T - 1].probabilities, probabilities, atol=1e-12)
        assert abs(sum(out.log_likelihood for out in outs[:T]) - log_lik) < 1e-10
    outs[3].state.save(tmp_path / "state.npz")
    state = FilterState.load(tmp_path / "state.npz")
    for y, time, out in zip(Y[4:], times[4:8], outs[4:]):
        state, again = two.filter_step(state, y, time=time)
        np.testing.assert_array_equal(again.probabilities, out.probabilities)
        assert again.log_likelihood == out.log_likelihood
    # without times the steps are one time unit apart: the discrete model's stream
    regular = list(two.filter_stream(Y))
    np.testing.assert_array_equal(
        regular[-1].probabilities, list(two.filter_stream(Y, times=np.arange(8.0)))[-1].probabilities
    )
    with pytest.raises(ValueError, match="after the last observation's"):
        two.filter_step(outs[-1].state, Y[0], time=times[7])
    with pytest.raises(ValueError, match="input_dim=0"):
        two.filter_step(outs[-1].state, Y[0], [1.0])


def test_a_filter_step_loop_builds_the_filter_once_and_each_gaps_laws_once():
    """Regular times: one recursion and one gap's laws for a loop of filter_step calls (each pair's
    matrices A[laws] built once, not per step); irregular: a bounded number kept; a parameter changed
    in place gives a new filter, the one a new model with it builds."""
    model = _model()
    times = np.cumsum(np.random.default_rng(7).exponential(1.2, 40))
    Y, _ = model.sample(40, random_state=8, times=times)

    def loop(m: ContinuousSwitchingLDS, at: np.ndarray) -> list[tuple[float, np.ndarray, np.ndarray]]:
        state, outs = m.filter_init(), []
        for y, t in zip(Y, at):
            state, out = m.filter_step(state, y, time=t)
            outs.append((out.log_likelihood, out.probabilities, out.mean))
        return outs

    loop(model, np.arange(40.0))
    recursion = model._stream_recursion()
    info = recursion.over.cache_info()
    assert (info.misses, info.hits) == (1, 38)  # the first step has no gap
    unit = recursion.over(1.0)
    law = unit.first(None)
    move = np.array([1.0])
    predicted = unit.predict(law, move)
    np.testing.assert_array_equal(predicted[3], unit.params["A"][unit.laws])
    assert unit.predict(law, move)[3] is predicted[3]
    before = loop(model, times)
    assert model._stream_recursion() is recursion and recursion.over.cache_info().currsize <= 16
    model.diffusion_covariances_[1, 0, 0] += 0.05  # in place
    after = loop(model, times)
    assert model._stream_recursion() is not recursion
    fresh = _model()
    fresh.diffusion_covariances_ = np.array(model.diffusion_covariances_)
    expected = loop(fresh, times)
    assert [out[0] for out in after] == [out[0] for out in expected] != [out[0] for out in before]
    np.testing.assert_array_equal([out[2] for out in after], [out[2] for out in expected])


def test_recurrent_streaming_reads_the_rates_at_each_gap():
    """The second step of a recurrent model's stream by hand: switches expm(Λ(m) Δ) at the first
    step's filtered mean m (all modes share it), over the gap 0.7; zero slopes give the plain stream."""
    times = np.array([0.0, 0.7, 3.0, 3.2])
    plain = _model()
    Y, _ = plain.sample(4, random_state=10, times=times)
    model = _model()
    model.recurrent, model.rate_weights_ = True, np.array([[[0.0, 0.0], [1.5, -0.5]], [[-1.0, 0.0], [0.0, 0.0]]])
    first, second = list(model.filter_stream(Y[:2], times=times[:2]))
    switches = expm(model._guards().generators(first.mean[None])[0] * 0.7)
    C, d, R = (model.__dict__[name] for name in OBSERVED)
    evidence = []
    for F, f, Sigma in zip(model.drift_matrices_, model.drift_offsets_, model.diffusion_covariances_):
        Phi, c, S = _exact_law(F, f, Sigma, 0.7)
        mean, cov = Phi @ first.mean + c, Phi @ first.covariance @ Phi.T + S
        evidence.append(multivariate_normal(C @ mean + d, C @ cov @ C.T + R).pdf(Y[1]))
    joint = first.probabilities @ switches * np.array(evidence)
    np.testing.assert_allclose(second.probabilities, joint / joint.sum(), atol=1e-12)
    assert abs(second.log_likelihood - np.log(joint.sum())) < 1e-10
    model.rate_weights_ = np.zeros((2, 2, 2))
    expected = list(plain.filter_stream(Y, times=times))
    for out, want in zip(model.filter_stream(Y, times=times), expected, strict=True):
        np.testing.assert_allclose(out.probabilities, want.probabilities, atol=1e-12)
        assert abs(out.log_likelihood - want.log_likelihood) < 1e-10
