"""ARHMM with nonlinear flows (``features=``) and recurrent switching (``recurrent=True``):
brute force, equivalence with the linear model, EM, forecasts where linear flows fail, persistence."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats
from scipy.special import softmax

from modeshift import ARHMM, SwitchingLDS, load
from modeshift.datasets import simulators
from modeshift.features import Polynomial, RadialBasis


def switching_oscillators(n_steps: int, seed: int, **keywords: float) -> tuple[np.ndarray, np.ndarray]:
    """(position, velocity) and modes of the switching Van der Pol / Duffing oscillators."""
    sim = simulators.switching_oscillators(n_steps, random_state=seed, **keywords)
    return sim.observations, sim.modes


def _nonlinear_model(rng, data, K=2, recurrent=False):
    model = ARHMM(n_states=K, features=Polynomial(2), recurrent=recurrent)
    model.feature_map_ = Polynomial(2).fit(data)
    if recurrent:
        model.guard_map_ = model.feature_map_
        model.recurrence_biases_ = rng.normal(size=(K, K))
        model.input_weights_ = rng.normal(size=(K, 5))
    else:
        model.transmat_ = rng.dirichlet(np.ones(K), size=K)
    model.startprob_ = rng.dirichlet(np.ones(K))
    model.coefs_ = 0.3 * rng.normal(size=(K, 2, 5))
    model.intercepts_ = rng.normal(size=(K, 2))
    w = rng.normal(size=(K, 2, 2))
    model.covars_ = w @ np.swapaxes(w, 1, 2) + 0.5 * np.eye(2)
    return model


def _brute_force(model, y):
    """log p(y_1.. | y_0) by summing over every mode path, the features computed row by row."""
    phi = model.feature_map_.transform
    total = []
    for path in itertools.product(range(model.n_states), repeat=len(y)):
        log_p = np.log(model.startprob_[path[0]])
        for t in range(1, len(y)):
            u = phi(y[t - 1][None])[0]
            if model.recurrent:
                move = softmax(model.recurrence_biases_ + model.input_weights_ @ u, axis=1)
            else:
                move = model.transmat_
            log_p += np.log(move[path[t - 1], path[t]])
            mean = model.coefs_[path[t]] @ u + model.intercepts_[path[t]]
            log_p += stats.multivariate_normal(mean, model.covars_[path[t]]).logpdf(y[t])
        total.append(log_p)
    return np.logaddexp.reduce(total)


@pytest.mark.parametrize("recurrent", [False, True])
def test_score_matches_brute_force(recurrent):
    rng = np.random.default_rng(7)
    y = rng.normal(size=(6, 2))
    model = _nonlinear_model(rng, rng.normal(size=(50, 2)), recurrent=recurrent)
    assert model.score(y) == pytest.approx(_brute_force(model, y), abs=1e-9)


@pytest.mark.filterwarnings("ignore:.*stopped at its cap")
def test_linear_feature_map_is_the_linear_arhmm():
    rng = np.random.default_rng(2)
    x, _ = switching_oscillators(400, 1)
    linear = ARHMM(n_states=2, order=2)
    linear.startprob_, linear.transmat_ = np.array([0.3, 0.7]), np.array([[0.9, 0.1], [0.2, 0.8]])
    linear.coefs_, linear.intercepts_ = 0.3 * rng.normal(size=(2, 2, 4)), rng.normal(size=(2, 2))
    linear.covars_ = np.array([np.eye(2), 2 * np.eye(2)]) * 0.01
    same = ARHMM(n_states=2, order=2, features="polynomial")
    phi = Polynomial(1).fit(rng.normal(size=(30, 4)))
    same.feature_map_ = phi
    # W u + c = A (location + scale u) + b: the same regression in other coordinates
    same.coefs_ = linear.coefs_ * phi.scale_
    same.intercepts_ = linear.intercepts_ + linear.coefs_ @ phi.location_
    same.startprob_, same.transmat_, same.covars_ = linear.startprob_, linear.transmat_, linear.covars_
    assert same.score(x) == pytest.approx(linear.score(x), abs=1e-10)
    np.testing.assert_allclose(same.predict_proba(x), linear.predict_proba(x), atol=1e-10)

    # and EM takes the same steps from the same start
    linear.n_iter = same.n_iter = 5
    assert same.fit(x).score(x) == pytest.approx(linear.fit(x).score(x), abs=1e-8)
    np.testing.assert_allclose(same.coefs_, linear.coefs_ * phi.scale_, atol=1e-8)


def test_em_is_monotone_and_recovers_the_noise():
    x, _ = switching_oscillators(1500, 3)
    model = ARHMM(n_states=2, features="polynomial", random_state=0).fit(x)
    assert np.all(np.diff(model.history_) > -1e-8)
    assert model.coefs_.shape == (2, 2, 9)
    np.testing.assert_allclose(np.sqrt(np.einsum("kii->ki", model.covars_))[:, 0], 0.01, rtol=0.15)


def _held_out_errors(model, x: np.ndarray, origins: range) -> np.ndarray:
    """RMS error of the predictive mean 1 and 20 steps after each origin, from the model's filter
    state after ``x[:origin]`` (for an ARHMM, the same numbers as ``forecast(x[:origin], h)``)."""
    states = {out.step + 1: out.state for out in model.filter_stream(x[: origins[-1]]) if out.step + 1 in origins}
    errors = [[model.filter_forecast(states[o], h).means[-1] - x[o + h - 1] for o in origins] for h in (1, 20)]
    return np.sqrt(np.mean(np.square(errors), axis=(1, 2)))


LINEAR_MODELS = {  # linear flows: in the observations (1 or 2 lags), or in a latent state of 2 or 4 dimensions
    "ARHMM": lambda: ARHMM(n_states=2, random_state=0),
    "ARHMM, order 2": lambda: ARHMM(n_states=2, order=2, random_state=0),
    "SwitchingLDS": lambda: SwitchingLDS(2, state_dim=2, random_state=0),
    "SwitchingLDS, state_dim=4": lambda: SwitchingLDS(2, state_dim=4, random_state=0),
}


def _error_ratios(
    seed: int, every: int, linear_models: tuple[str, ...] = ("ARHMM",), process_sd: float = 0.01
) -> dict[str, np.ndarray]:
    """Held-out RMS error of each linear model over the nonlinear ARHMM's, 1 and 20 steps ahead, from
    an origin every ``every`` steps of the last third (all fit on the first two thirds)."""
    x, _ = switching_oscillators(3000, seed, process_sd=process_sd)
    train, origins = x[:2000], range(2050, 2950, every)
    nonlinear = _held_out_errors(ARHMM(n_states=2, features="polynomial", random_state=0).fit(train), x, origins)
    return {name: _held_out_errors(LINEAR_MODELS[name]().fit(train), x, origins) / nonlinear for name in linear_models}


def test_nonlinear_flows_predict_where_linear_flows_fail():
    ratios = _error_ratios(0, 60)["ARHMM"]
    assert min(ratios) >= 2.0, ratios


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*stopped at its cap")
@pytest.mark.parametrize("seed", range(4))
def test_nonlinear_flows_predict_better_on_every_seed(seed):
    # An origin every 10 steps (90). With one every 60 (15), a switch in the last few steps
    # before one origin, which no filter can see yet, dominates the 20-step error: on seeds 1
    # and 2 even the true model (its exact filter and flows) is then only 1.4x better than the
    # linear ARHMM, and the fitted nonlinear ARHMM matches it (1.5x, 1.3x).
    ratios = _error_ratios(seed, 10, ("ARHMM", "SwitchingLDS", "SwitchingLDS, state_dim=4"))
    # The SwitchingLDS with the true state's dimension, forecast from its (Kim) filter, fails as
    # the linear ARHMM does (their errors agree to 3 digits: the state is observed without noise).
    assert min(ratios["ARHMM"]) >= 2.0 and min(ratios["SwitchingLDS"]) >= 2.0, ratios
    # Two more latent dimensions give the linear flows a memory of past velocities, a local
    # extrapolation good for one step: then only the 20-step error is 2x lower (1-step: 1.4-1.7x).
    one_step, twenty_steps = ratios["SwitchingLDS, state_dim=4"]
    assert one_step >= 1.25 and twenty_steps >= 2.0, ratios


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*stopped at its cap")
@pytest.mark.parametrize("seed", range(5))
def test_with_little_process_noise_nonlinear_flows_predict_2x_better_than_every_linear_model(seed):
    """Issue 18's 2x at both horizons against every linear model, those with a memory too, once the
    process noise (sd 0.002 instead of 0.01) no longer masks what one step of the flows' curvature
    adds: the 1-step error floor is the noise, which the nonlinear ARHMM reaches (0.0019-0.0026), and
    a linear extrapolation's error of order dt^2 is then well above it. Measured (benchmarks/hybrid.py,
    seeds 0-4): ratios 3.1-38 at 1 step, 2.2-12.6 at 20 steps, the smallest the linear ARHMM's at 20
    steps on seed 0."""
    ratios = _error_ratios(seed, 10, tuple(LINEAR_MODELS), process_sd=0.002)
    assert min(min(pair) for pair in ratios.values()) >= 2.0, ratios


def test_monte_carlo_forecast_agrees_with_the_exact_linear_moments():
    x, _ = switching_oscillators(600, 4)
    linear = ARHMM(n_states=2, random_state=0).fit(x)
    same = ARHMM(n_states=2, features=Polynomial(1), random_state=0)
    same.feature_map_ = phi = Polynomial(1).fit(x)
    same.coefs_, same.intercepts_ = linear.coefs_ * phi.scale_, linear.intercepts_ + linear.coefs_ @ phi.location_
    same.startprob_, same.transmat_, same.covars_ = linear.startprob_, linear.transmat_, linear.covars_
    exact, monte_carlo = linear.forecast(x, 10), same.forecast(x, 10)
    sd = np.sqrt(np.einsum("hii->hi", exact.covariances))
    assert np.all(np.abs(monte_carlo.means - exact.means) < 5 * sd / np.sqrt(2000))
    np.testing.assert_allclose(np.sqrt(np.einsum("hii->hi", monte_carlo.covariances)), sd, rtol=0.1)
    np.testing.assert_allclose(monte_carlo.mode_probabilities, exact.mode_probabilities, atol=1e-12)


def test_recurrent_switching_learns_where_the_mode_changes():
    """Mode 0 climbs, mode 1 falls; the switch happens past thresholds 1 and -1 (a hysteresis)."""
    rng = np.random.default_rng(0)
    y, mode, ys = 0.0, 0, []
    for _ in range(3000):
        if (mode == 0 and rng.random() < 1 / (1 + np.exp(-(y - 1) / 0.05))) or (
            mode == 1 and rng.random() < 1 / (1 + np.exp(-(-1 - y) / 0.05))
        ):
            mode = 1 - mode
        y = y + (0.05 if mode == 0 else -0.05) + 0.01 * rng.standard_normal()
        ys.append(y)
    y = np.array(ys)[:, None]
    model = ARHMM(n_states=2, recurrent=True, random_state=0, transition_penalty=1e-4).fit(y)
    assert model.score(y) > ARHMM(n_states=2, random_state=0).fit(y).score(y)
    paths, _ = model.sample(2000, random_state=1)
    assert -1.3 < paths.min() < -0.7 and 0.7 < paths.max() < 1.3


def test_save_and_load_keep_the_maps(tmp_path):
    x, _ = switching_oscillators(500, 5)
    for model in (
        ARHMM(n_states=2, features=RadialBasis(6), random_state=0).fit(x),
        ARHMM(n_states=2, recurrent=True, random_state=0).fit(x),
    ):
        model.save(tmp_path / "m.msz")
        loaded = load(tmp_path / "m.msz")
        assert loaded.score(x) == pytest.approx(model.score(x), abs=1e-9)
        np.testing.assert_allclose(loaded.forecast(x, 3).means, model.forecast(x, 3).means)


def test_clear_errors():
    x, _ = switching_oscillators(200, 6)
    model = ARHMM(n_states=2, features=lambda a: np.hstack([a, a**3]), random_state=0).fit(x)
    with pytest.raises(TypeError, match="cannot be saved"):
        model.save("/tmp/never-written.msz")
    with pytest.raises(ValueError, match="takes no input_dim"):
        ARHMM(recurrent=True, input_dim=1).fit(x, inputs=np.ones((200, 1)))
    with pytest.raises(ValueError, match=r"expects 2 feature\(s\) per time step, got 1"):
        model.score(x[:, :1])
    with pytest.raises(ValueError, match="set feature_map_ before the parameters"):
        model.feature_map_ = Polynomial(2).fit(x)


@pytest.mark.filterwarnings("ignore:.*stopped at its cap")
def test_a_custom_map_need_not_be_finite_at_zero():
    """The map runs on the lags the data have, never on a row of zeros (the origin here)."""
    x, _ = switching_oscillators(300, 9)

    def direction(a):
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    model = ARHMM(n_states=2, features=direction, n_iter=5, random_state=0).fit(x)
    state = model.filter_init()
    for row in x[:20]:
        state, out = model.filter_step(state, row)
    assert np.isfinite(model.score(x)) and np.isfinite(out.log_likelihood)


def test_a_refit_on_new_data_equals_a_fresh_fit():
    first, _ = switching_oscillators(400, 7)
    second, _ = switching_oscillators(400, 8)
    model = ARHMM(n_states=2, features=Polynomial(2), recurrent=True, random_state=0).fit(first)
    model.fit(second)
    fresh = ARHMM(n_states=2, features=Polynomial(2), recurrent=True, random_state=0).fit(second)
    np.testing.assert_array_equal(model.feature_map_.location_, fresh.feature_map_.location_)
    assert model.score(second) == fresh.score(second)
    assert "features=Polynomial(degree=2)" in repr(model)


def test_random_run_partitions_take_memory_linear_in_the_steps():
    """The starts' random partitions into runs (geometric, mean n / 20): the same modes as the runs
    laid end to end and cut at n, which took memory ~ n^2 / 20 (400 GB at 10^6 steps); below 20
    steps every run is one step."""
    import tracemalloc

    from modeshift.emissions.feature_autoregressive import _runs

    for n, seed in [(20, 0), (57, 1), (5000, 2)]:
        a, b = np.random.default_rng(seed), np.random.default_rng(seed)
        laid = np.repeat(a.integers(3, size=n), a.geometric(20 / n, size=n))[:n]
        np.testing.assert_array_equal(_runs(b, 3, n), laid)
    assert len(_runs(np.random.default_rng(0), 3, 7)) == 7
    tracemalloc.start()
    try:
        _runs(np.random.default_rng(0), 3, 10**6)
        assert tracemalloc.get_traced_memory()[1] < 100e6
    finally:
        tracemalloc.stop()
