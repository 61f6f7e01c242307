"""ContinuousARHMM's streaming filter at irregular times: the batch filter, one observation at a time."""

import copy

import numpy as np
import pytest

from modeshift import ContinuousARHMM, NotFittedError
from modeshift.models.continuous_arhmm import flow_moments
from modeshift.models.streaming import FilterState


@pytest.fixture(scope="module")
def model() -> ContinuousARHMM:
    """Two 2-D Ornstein-Uhlenbeck flows with distinct equilibria, switching at rates 0.3 and 0.5."""
    m = ContinuousARHMM(n_states=2)
    m.startprob_ = np.array([0.7, 0.3])
    m.rate_matrix_ = np.array([[-0.3, 0.3], [0.5, -0.5]])
    m.drift_matrices_ = np.array([[[-0.8, 0.2], [0.0, -0.5]], [[-0.3, -0.4], [0.4, -0.3]]])
    m.drift_offsets_ = np.array([[1.6, 1.0], [-0.9, 0.3]])
    m.diffusion_covariances_ = np.array([[[0.3, 0.1], [0.1, 0.2]], [[0.5, -0.1], [-0.1, 0.4]]])
    return m


@pytest.fixture(scope="module")
def data(model: ContinuousARHMM) -> tuple[np.ndarray, np.ndarray]:
    """60 observations at exponential gaps (mean 0.7, some far shorter, some longer)."""
    times = np.cumsum(np.random.default_rng(1).exponential(0.7, 60))
    values, _ = model.sample(60, random_state=2, times=times)
    return values, times


def test_the_stream_is_the_batch_filter_at_irregular_times(model, data):
    values, times = data
    outs = list(model.filter_stream(values, times=times))
    assert [out.step for out in outs] == list(range(len(values)))
    assert outs[0].log_likelihood == 0.0  # the first observation is conditioned on, as in score
    total = sum(out.log_likelihood for out in outs)
    assert total == pytest.approx(model.score(values, times=times), abs=1e-10, rel=0)
    probabilities = np.array([out.probabilities for out in outs])
    np.testing.assert_allclose(probabilities, model.filter_proba(values, times=times), atol=1e-10, rtol=0)
    assert outs[-1].state.history.tolist() == [[times[-1], *values[-1]]]  # the last time and observation
    # the gaps matter: the same values one time unit apart are another stream
    regular = sum(out.log_likelihood for out in model.filter_stream(values))
    assert abs(regular - total) > 1.0


def test_filter_step_with_times_is_the_stream(model, data):
    values, times = data
    state = model.filter_init()
    for y, t, out in zip(values, times, model.filter_stream(values, times=times)):
        state, step = model.filter_step(state, y, time=t)
        assert step.log_likelihood == out.log_likelihood
        np.testing.assert_array_equal(step.probabilities, out.probabilities)


def _copy(model: ContinuousARHMM) -> ContinuousARHMM:
    """Another model with the same parameters (copies, nothing else: nothing built for streaming)."""
    other = ContinuousARHMM(n_states=model.n_states)
    for name in ("startprob_", "rate_matrix_", "drift_matrices_", "drift_offsets_", "diffusion_covariances_"):
        setattr(other, name, np.array(getattr(model, name)))
    return other


def _step_loop(model: ContinuousARHMM, values: np.ndarray, times: np.ndarray) -> list:
    state, outs = model.filter_init(), []
    for y, t in zip(values, times):
        state, out = model.filter_step(state, y, time=t)
        outs.append((out.log_likelihood, out.probabilities))
    return outs


def test_a_filter_step_loop_computes_each_gaps_laws_once_until_a_parameter_changes(model, data):
    """Regular times: one gap's flows and switches for the whole loop (not one per row); irregular:
    a bounded number kept; a parameter changed in place is seen at the next step, as a new model sees it."""
    values, times = data
    mine = _copy(model)
    _step_loop(mine, values[:20], np.arange(20.0))
    over = mine._stream_constants()["over"]
    assert (over.cache_info().misses, over.cache_info().hits) == (1, 18)  # the first step has no gap
    _step_loop(mine, values, times)
    assert mine._stream_constants()["over"] is over and over.cache_info().currsize <= 16
    before = _step_loop(mine, values, times)
    mine.drift_offsets_[0, 0] += 0.5  # in place
    after = _step_loop(mine, values, times)
    assert mine._stream_constants()["over"] is not over
    fresh = _step_loop(_copy(mine), values, times)
    assert [ll for ll, _ in after] == [ll for ll, _ in fresh] != [ll for ll, _ in before]
    np.testing.assert_array_equal([p for _, p in after], [p for _, p in fresh])
    twin = copy.deepcopy(mine)  # a copy keeps nothing of what its original built
    twin.drift_offsets_[1, 1] -= 0.3
    assert [ll for ll, _ in _step_loop(twin, values, times)] == [ll for ll, _ in _step_loop(_copy(twin), values, times)]
    assert [ll for ll, _ in _step_loop(mine, values, times)] == [ll for ll, _ in after]


def test_default_times_are_one_unit_apart_from_zero(model, data):
    values, _ = data
    unit = np.arange(len(values), dtype=float)
    default = list(model.filter_stream(values))
    timed = list(model.filter_stream(values, times=unit))
    assert [out.log_likelihood for out in default] == pytest.approx([out.log_likelihood for out in timed], abs=1e-12)
    np.testing.assert_allclose([out.probabilities for out in default], [out.probabilities for out in timed], atol=1e-12)
    assert sum(out.log_likelihood for out in default) == pytest.approx(model.score(values), abs=1e-10, rel=0)
    state = model.filter_init()
    for y in values[:5]:
        state, _ = model.filter_step(state, y)
    assert state.history[-1, 0] == 4.0


def test_a_saved_state_resumes_bit_identically(model, data, tmp_path):
    values, times = data
    state = model.filter_init(lag=4)
    for y, t in zip(values[:25], times[:25]):
        state, _ = model.filter_step(state, y, time=t)
    state.save(tmp_path / "state.npz")
    loaded = FilterState.load(tmp_path / "state.npz")
    rest = list(zip(values[25:], times[25:]))
    for (y, t), out in zip(rest, model.filter_stream(values[25:], times=times[25:], state=loaded)):
        state, expected = model.filter_step(state, y, time=t)
        assert out.log_likelihood == expected.log_likelihood
        np.testing.assert_array_equal(out.probabilities, expected.probabilities)
        np.testing.assert_array_equal(out.lagged, expected.lagged)


def test_fixed_lag_smoothing_is_the_batch_smoother(model, data):
    values, times = data
    lag, state = 3, model.filter_init(lag=3)
    for t, (y, time) in enumerate(zip(values, times)):
        state, out = model.filter_step(state, y, time=time)
        if t < lag:
            assert out.lagged is None
        elif t in (lag, 20, len(values) - 1):  # p(z_t-L | y_0..t): the smoother of the prefix, at t - L
            smoothed = model.predict_proba(values[: t + 1], times=times[: t + 1])[t - lag]
            np.testing.assert_allclose(out.lagged, smoothed, atol=1e-10, rtol=0)
    covering = model.filter_init(lag=len(values))
    *_, last = model.filter_stream(values, times=times, state=covering)
    window = np.array(model.filter_smoothed(last.state))
    np.testing.assert_allclose(window, model.predict_proba(values, times=times), atol=1e-10, rtol=0)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (1.0, "step 3 must be a finite number after"),
        (0.5, "step 3 must be a finite number after"),
        (np.nan, "step 3 must be a finite number"),
        (np.inf, "step 3 must be a finite number"),
        ("soon", "step 3 must be a number"),
    ],
)
def test_bad_times_name_the_step(model, data, bad, message):
    values, _ = data
    state = model.filter_init()
    for y, t in zip(values[:3], [0.0, 0.5, 1.0]):
        state, _ = model.filter_step(state, y, time=t)
    with pytest.raises(ValueError, match=message):
        model.filter_step(state, values[3], time=bad)
    with pytest.raises(ValueError, match="step 2 must be a finite number after"):
        list(model.filter_stream(values[:4], times=[0.0, 1.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="step 0 must be a finite number"):
        model.filter_step(model.filter_init(), values[0], time=np.nan)


def test_bad_rows_are_refused(model, data):
    values, _ = data
    state, _ = model.filter_step(model.filter_init(), values[0])
    with pytest.raises(ValueError, match="missing entry"):
        model.filter_step(state, [np.nan, 1.0])
    with pytest.raises(ValueError, match="expects 2"):
        model.filter_step(state, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="input_dim=0"):
        model.filter_step(state, values[1], inputs=[1.0])


def test_the_next_observation_is_predicted_exactly(model, data):
    """out.prediction: the mixture over the modes at the next step of each mode's flow over one unit."""
    values, times = data
    *_, out = model.filter_stream(values, times=times)
    forecast = out.prediction
    modes = out.probabilities @ model._transitions(np.array([1.0]))[0]
    flows = zip(model.drift_matrices_, model.drift_offsets_, model.diffusion_covariances_)
    laws = [flow_moments(*flow, np.array([1.0])) for flow in flows]
    means = np.array([Phi[0] @ values[-1] + c[0] for Phi, c, _ in laws])
    mean = modes @ means
    second = sum(p * (S[0] + np.outer(m, m)) for p, m, (_, _, S) in zip(modes, means, laws))
    np.testing.assert_allclose(forecast.mode_probabilities[0], modes, atol=1e-12)
    np.testing.assert_allclose(forecast.means[0], mean, atol=1e-12)
    np.testing.assert_allclose(forecast.covariances[0], second - np.outer(mean, mean), atol=1e-12)


def test_forecasts_at_future_times_are_the_simulated_moments(model, data):
    """Three irregular steps ahead against 40000 paths simulated from the filter's law (5 standard errors)."""
    values, times = data
    *_, out = model.filter_stream(values, times=times)
    future = times[-1] + np.array([0.3, 1.8, 2.0])
    forecast = model.filter_forecast(out.state, future_times=future)
    gaps, rng, n = np.diff(np.r_[times[-1], future]), np.random.default_rng(5), 40000
    moves = model._transitions(gaps)
    flows = zip(model.drift_matrices_, model.drift_offsets_, model.diffusion_covariances_)
    laws = [flow_moments(*flow, gaps) for flow in flows]
    modes = rng.choice(2, size=n, p=out.probabilities)
    y = np.tile(values[-1], (n, 1))
    for h in range(3):
        modes = (rng.random(n)[:, None] > np.cumsum(moves[h][modes], axis=1)).sum(axis=1)
        for k, (Phi, c, S) in enumerate(laws):
            at = modes == k
            noise = rng.multivariate_normal(np.zeros(2), S[h], size=at.sum())
            y[at] = y[at] @ Phi[h].T + c[h] + noise
        spread = np.sqrt(np.diag(forecast.covariances[h]) / n)
        np.testing.assert_array_less(np.abs(y.mean(axis=0) - forecast.means[h]), 5 * spread)
        np.testing.assert_allclose(np.cov(y.T), forecast.covariances[h], rtol=0.05)
        np.testing.assert_allclose(np.bincount(modes, minlength=2) / n, forecast.mode_probabilities[h], atol=0.01)
    default = model.filter_forecast(out.state, 2)
    at_units = model.filter_forecast(out.state, future_times=times[-1] + np.array([1.0, 2.0]))
    np.testing.assert_allclose(default.means, at_units.means, atol=1e-12)
    with pytest.raises(ValueError, match="no inputs"):
        model.filter_forecast(out.state, 1, [[1.0]])
    with pytest.raises(ValueError, match="seen no observation"):
        model.filter_forecast(model.filter_init(), 1)


def test_an_unfitted_model_says_so_before_reading_a_row():
    with pytest.raises(NotFittedError, match="call fit, or set them by hand"):
        ContinuousARHMM().filter_step(FilterState(), [1.0, 2.0], time=0.0)
