"""Streaming filters equal the batch filters, resume from a saved state, smooth with a fixed lag."""

import itertools
import time

import numpy as np
import pytest

from modeshift import ARHMM, HMM, HSMM, LinearGaussianSSM
from modeshift.features import Custom, Polynomial
from modeshift.models.base import NotFittedError
from modeshift.models.capabilities import Streaming
from modeshift.models.streaming import FilterState, StreamingFilters


def _hmm() -> tuple[HMM, np.ndarray]:
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0, 1, (100, 2)), rng.normal(3, 1, (100, 2))]
    X[5, 0], X[7] = np.nan, np.nan  # a partly and a wholly missing step
    return HMM(n_states=3, random_state=0).fit(X), X


def _arhmm() -> tuple[ARHMM, np.ndarray]:
    model = ARHMM(n_states=2, order=2)
    model.startprob_, model.transmat_ = np.array([0.6, 0.4]), np.array([[0.98, 0.02], [0.02, 0.98]])
    model.coefs_, model.intercepts_ = np.array([[[0.5, 0.2]], [[-0.5, 0.1]]]), np.array([[1.0], [0.0]])
    model.covars_ = np.full((2, 1, 1), 0.1)
    return model, model.sample(300, random_state=1)[0]


def _nonlinear_arhmm(recurrent: bool, features: object = "polynomial", order: int = 2) -> tuple[ARHMM, np.ndarray]:
    """An ARHMM with a nonlinear flow (``features``: a degree-2 polynomial, or a function) and/or a
    recurrent switching law (its guards read the lags' features, or the standardised lags without
    ``features``, as ``fit`` sets them), parameters drawn at random, on a noisy
    sine (any data will do: the stream must give the batch filter's numbers)."""
    rng = np.random.default_rng(5)
    x = np.sin(np.arange(240) / 8.0) + rng.normal(0, 0.2, 240)
    lags = np.column_stack([x[order - i : len(x) - i] for i in range(1, order + 1)])
    spec = {None: Polynomial(1), "polynomial": Polynomial(2)}.get(features) or Custom(features)  # None: as fit
    fitted = spec.fit(lags)
    k = 3
    model = ARHMM(n_states=k, order=order, features=features, recurrent=recurrent, random_state=0)
    if features is not None:
        model.feature_map_ = fitted
    if recurrent:
        model.guard_map_ = fitted
        model.recurrence_biases_ = rng.normal(size=(k, k)) + 3 * np.eye(k)
        model.input_weights_ = rng.normal(size=(k, fitted.n_outputs))
    else:
        model.transmat_ = rng.dirichlet(np.full(k, 5.0), size=k) * 0.3 + 0.7 * np.eye(k)
    model.startprob_ = rng.dirichlet(np.ones(k))
    width = fitted.n_outputs if features is not None else order
    model.coefs_ = 0.3 * rng.normal(size=(k, 1, width))
    model.intercepts_ = rng.normal(0, 0.3, size=(k, 1))
    model.covars_ = rng.uniform(0.05, 0.3, size=(k, 1, 1))
    return model, x


def _arhmm_with_resets(recurrent: bool = False) -> tuple[ARHMM, np.ndarray]:
    """An order-2 ARHMM with a reset per ordered pair of its three modes (and, with ``recurrent``,
    switching read from the lags), parameters drawn at random, on a noisy sine."""
    rng = np.random.default_rng(8)
    x = np.sin(np.arange(200) / 6.0) + rng.normal(0, 0.3, 200)
    k = 3
    model = ARHMM(n_states=k, order=2, resets="pair", recurrent=recurrent, random_state=0)
    if recurrent:
        model.guard_map_ = Polynomial(1).fit(np.column_stack([x[1:-1], x[:-2]]))
        model.recurrence_biases_ = rng.normal(size=(k, k)) + 2 * np.eye(k)
        model.input_weights_ = rng.normal(size=(k, 2))
    else:
        model.transmat_ = 0.7 * np.eye(k) + 0.3 * rng.dirichlet(np.ones(k), size=k)
    model.startprob_ = rng.dirichlet(np.ones(k))
    model.coefs_, model.intercepts_ = 0.4 * rng.normal(size=(k, 1, 2)), rng.normal(0, 0.3, (k, 1))
    model.covars_ = rng.uniform(0.05, 0.3, (k, 1, 1))
    model.reset_coefs_, model.reset_intercepts_ = rng.normal(size=(6, 1, 2)), rng.normal(size=(6, 1))
    model.reset_covars_ = rng.uniform(0.1, 0.5, (6, 1, 1))
    return model, x


def _arhmm_with_inputs() -> tuple[ARHMM, np.ndarray, np.ndarray]:
    """An order-2 ARHMM whose switching is driven by an input."""
    rng = np.random.default_rng(6)
    model = ARHMM(n_states=2, order=2, input_dim=1)
    model.startprob_, model.recurrence_biases_ = np.array([0.5, 0.5]), np.array([[2.0, -2.0], [-2.0, 2.0]])
    model.input_weights_ = np.array([[1.5], [-1.5]])
    model.coefs_, model.intercepts_ = np.array([[[0.5, 0.2]], [[-0.5, 0.1]]]), np.array([[1.0], [0.0]])
    model.covars_ = np.full((2, 1, 1), 0.1)
    U = rng.normal(size=(200, 1))
    return model, model.sample(200, inputs=U, random_state=2)[0], U


def _hsmm(left_censoring: bool = False) -> tuple[HSMM, np.ndarray]:
    model = HSMM(n_states=3, duration="poisson", max_duration=30, left_censoring=left_censoring)
    model.startprob_ = np.array([0.5, 0.3, 0.2])
    model.transmat_ = np.array([[0.0, 0.6, 0.4], [0.5, 0.0, 0.5], [0.3, 0.7, 0.0]])
    model.duration_rates_ = np.array([4.0, 9.0, 2.0])
    model.means_, model.covars_ = np.array([[0.0], [2.0], [4.0]]), np.ones((3, 1, 1))
    X = model.sample(300, random_state=0)[0]
    X[10] = np.nan
    return model, X


def _lds() -> tuple[LinearGaussianSSM, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    model = LinearGaussianSSM(state_dim=2, obs_dim=3, input_dim=1)
    model.dynamics_matrix_, model.transition_covariance_ = np.array([[0.9, 0.1], [0.0, 0.8]]), 0.1 * np.eye(2)
    model.observation_matrix_, model.observation_covariance_ = rng.normal(size=(3, 2)), 0.5 * np.eye(3)
    model.initial_state_mean_, model.initial_state_covariance_ = np.zeros(2), np.eye(2)
    model.control_matrix_, model.feedthrough_matrix_ = np.ones((2, 1)), np.full((3, 1), 0.3)
    U = rng.normal(size=(200, 1))
    Y = model.sample(200, inputs=U, random_state=1)[0]
    Y[3, 1], Y[8] = np.nan, np.nan
    return model, Y, U


CHAINS = {
    "hmm": _hmm,
    "arhmm": _arhmm,
    "arhmm_features": lambda: _nonlinear_arhmm(False),
    "arhmm_recurrent": lambda: _nonlinear_arhmm(True, None),
    "arhmm_features_recurrent": lambda: _nonlinear_arhmm(True, order=1),
    "arhmm_callable": lambda: _nonlinear_arhmm(False, lambda a: np.hstack([a, a**3])),
    "arhmm_resets": _arhmm_with_resets,
    "arhmm_recurrent_resets": lambda: _arhmm_with_resets(True),
    "hsmm": _hsmm,
    "hsmm_left": lambda: _hsmm(True),
}


@pytest.mark.parametrize("name", list(CHAINS))
def test_chain_stream_equals_batch_filter(name):
    model, X = CHAINS[name]()
    assert isinstance(model, Streaming)
    outs = list(model.filter_stream(X))
    probabilities = np.array([out.probabilities for out in outs])
    assert np.abs(probabilities - model.filter_proba(X)).max() < 1e-12
    assert abs(sum(out.log_likelihood for out in outs) - model.score(X)) < 1e-10 * len(X)
    assert [out.step for out in outs] == list(range(len(X)))


@pytest.mark.parametrize("name", ["hmm", "arhmm", "arhmm_features", "arhmm_recurrent", "arhmm_resets", "hsmm"])
def test_chain_prediction_is_the_forecast(name):
    model, X = CHAINS[name]()
    if name == "hsmm":  # a forecast needs no missing last step
        X = X[:200]
    *_, last = model.filter_stream(X)
    expected = model.forecast(X, 1)
    np.testing.assert_allclose(last.prediction.means, expected.means, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(last.prediction.covariances, expected.covariances, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", list(CHAINS))
def test_fixed_lag_covering_the_sequence_is_the_smoother(name):
    model, X = CHAINS[name]()
    state = model.filter_init(lag=len(X))
    for y in X:
        state, out = model.filter_step(state, y)
    smoothed = np.array(model.filter_smoothed(state))
    assert np.abs(smoothed - model.predict_proba(X)).max() < 1e-12


def test_fixed_lag_is_the_smoother_of_the_data_so_far():
    model, X = _hmm()
    lag = 5
    outs = list(model.filter_stream(X, lag=lag))
    assert all(out.lagged is None for out in outs[:lag])
    for t in (lag, 17, 60, len(X) - 1):
        np.testing.assert_allclose(outs[t].lagged, model.predict_proba(X[: t + 1])[t - lag], atol=1e-12)


def test_lds_stream_equals_batch_filter_and_smoother():
    model, Y, U = _lds()
    assert isinstance(model, Streaming)
    outs = list(model.filter_stream(Y, inputs=U))
    batch = model.filter(Y, inputs=U)
    assert np.abs(np.array([out.mean for out in outs]) - batch.means).max() < 1e-10
    assert np.abs(np.array([out.covariance for out in outs]) - batch.covariances).max() < 1e-10
    assert abs(sum(out.log_likelihood for out in outs) - batch.log_likelihood) < 1e-10 * len(Y)
    assert outs[0].probabilities is None
    state = model.filter_init(lag=len(Y))
    for y, u in zip(Y, U):
        state, _ = model.filter_step(state, y, u)
    smoothed = model.smooth(Y, inputs=U)
    laws = model.filter_smoothed(state)
    assert np.abs(np.array([m for m, _ in laws]) - smoothed.means).max() < 1e-10
    assert np.abs(np.array([c for _, c in laws]) - smoothed.covariances).max() < 1e-10
    future = np.ones((2, 1))
    np.testing.assert_allclose(
        model.filter_forecast(state, 2, future).means, model.forecast(Y, 2, inputs=U, future_inputs=future).means
    )


@pytest.mark.parametrize(
    "name",
    ["hmm", "arhmm", "arhmm_recurrent", "arhmm_features_recurrent", "arhmm_callable", "arhmm_resets", "hsmm", "lds"]
    + ["markov_autoregression"],
)
def test_a_saved_state_resumes_the_stream(name, tmp_path):
    if name == "lds":
        model, X, U = _lds()
    elif name == "markov_autoregression":  # its state keeps the last order observations
        from modeshift import MarkovAutoregression
        from modeshift.datasets import load_hamilton_gnp

        X = load_hamilton_gnp()["rgnp_growth"].to_numpy()
        model = MarkovAutoregression(n_states=2, order=4, switching_ar=False, random_state=0).fit(X)
        U = [None] * len(X)
    else:
        model, X = CHAINS[name]()
        U = [None] * len(X)
    whole = list(model.filter_stream(X, inputs=None if name != "lds" else U, lag=3))
    state = model.filter_init(lag=3)
    for y, u in zip(X[:50], U[:50]):
        state, _ = model.filter_step(state, y, u)
    state.save(tmp_path / "state.npz")
    resumed = FilterState.load(tmp_path / "state.npz")
    rest = list(model.filter_stream(X[50:], inputs=None if name != "lds" else U[50:], state=resumed))
    for a, b in zip(whole[50:], rest):
        assert a.step == b.step and a.log_likelihood == b.log_likelihood
        if name == "lds":
            np.testing.assert_array_equal(a.mean, b.mean)
            np.testing.assert_array_equal(a.lagged[1], b.lagged[1])
        else:
            np.testing.assert_array_equal(a.probabilities, b.probabilities)
            np.testing.assert_array_equal(a.lagged, b.lagged)


def _diffuse_lds() -> tuple[LinearGaussianSSM, np.ndarray, np.ndarray]:
    """A local linear trend (two diffuse components) beside a stationary AR(1) component, seen through
    a bivariate observation with correlated noise, driven by an input; missing entries in the
    diffuse steps (the first step wholly, the second partly) delay the handover to step 3."""
    rng = np.random.default_rng(1)
    model = LinearGaussianSSM(state_dim=3, obs_dim=2, input_dim=1, diffuse=[True, True, False])
    model.dynamics_matrix_ = np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.5]])
    model.transition_covariance_ = np.diag([0.3, 0.05, 0.4])
    model.observation_matrix_ = np.array([[1.0, 0.0, 1.0], [0.5, 1.0, 0.0]])
    model.observation_covariance_ = np.array([[0.5, 0.2], [0.2, 0.4]])
    model.initial_state_mean_, model.initial_state_covariance_ = np.array([0.0, 0.0, 0.3]), np.diag([0, 0, 0.4 / 0.75])
    model.control_matrix_, model.feedthrough_matrix_ = np.array([[0.2], [0.0], [1.0]]), np.array([[0.5], [0.0]])
    U = rng.normal(size=(60, 1))
    Y = rng.normal(size=(60, 2)).cumsum(axis=0)
    Y[0], Y[1, 1], Y[20, 0] = np.nan, np.nan, np.nan
    return model, Y, U


def test_lds_with_an_exact_diffuse_start_streams_the_batch_filter(tmp_path):
    model, Y, U = _diffuse_lds()
    outs = list(model.filter_stream(Y, inputs=U))
    batch = model.filter(Y, inputs=U)
    assert np.abs(np.array([out.mean for out in outs]) - batch.means).max() < 1e-10
    assert np.abs(np.array([out.covariance for out in outs]) - batch.covariances).max() < 1e-10
    assert abs(sum(out.log_likelihood for out in outs) - batch.log_likelihood) < 1e-10
    assert [len(out.state.filtered) for out in outs[:4]] == [3, 3, 3, 2]  # (mean, P_*, P_inf), then (mean, P)
    state = model.filter_init()
    for y, u in zip(Y[:2], U[:2]):
        state, _ = model.filter_step(state, y, u)
    with pytest.raises(ValueError, match="not identified yet"):
        model.filter_forecast(state, 1, U[:1])
    state.save(tmp_path / "diffuse.npz")  # mid-diffuse: the law is three arrays
    rest = list(model.filter_stream(Y[2:], inputs=U[2:], state=FilterState.load(tmp_path / "diffuse.npz")))
    for a, b in zip(outs[2:], rest, strict=True):
        assert a.step == b.step and a.log_likelihood == b.log_likelihood
        np.testing.assert_array_equal(a.mean, b.mean)
        np.testing.assert_array_equal(a.covariance, b.covariance)
    future = np.ones((3, 1))
    expected = model.forecast(Y, 3, inputs=U, future_inputs=future)
    np.testing.assert_allclose(model.filter_forecast(rest[-1].state, 3, future).means, expected.means, rtol=1e-10)
    for lag in (1, 2, len(Y)):  # the window keeps the diffuse steps while one of them is needed
        state, lagged = model.filter_init(lag=lag), []
        for y, u in zip(Y, U):
            state, out = model.filter_step(state, y, u)
            lagged.append(out.lagged)
        if lag == 1:  # y_0, y_1 leave a direction without information: no smoothed law of step 0 at 1
            assert lagged[1] is None and lagged[2] is not None
        smoothed = model.smooth(Y, inputs=U)
        laws = model.filter_smoothed(state)
        assert np.abs(np.array([m for m, _ in laws]) - smoothed.means[-len(laws) :]).max() < 1e-10
        assert np.abs(np.array([c for _, c in laws]) - smoothed.covariances[-len(laws) :]).max() < 1e-10
        if lag == 2:
            assert len(state.window) == 3
            for t in (1, 2, 3, 4, 10):  # the smoother of the data up to t + 2 (diffuse steps 1, 2 too)
                expected = model.smooth(Y[: t + 3], inputs=U[: t + 3])
                np.testing.assert_allclose(lagged[t + 2][0], expected.means[t], rtol=1e-10, atol=1e-10)
                np.testing.assert_allclose(lagged[t + 2][1], expected.covariances[t], rtol=1e-10, atol=1e-10)
    state = model.filter_init(lag=5)
    state, out = model.filter_step(state, Y[0], U[0])
    with pytest.raises(ValueError, match="not identified yet"):
        model.filter_smoothed(state)


def test_the_diffuse_stream_of_the_nile_is_statsmodels_exact_diffuse_filter():
    """The local level on the Nile, one observation at a time, against statsmodels' exact diffuse
    filter (``use_exact_diffuse=True``): log-likelihood, filtered means and variances."""
    sm = pytest.importorskip("statsmodels.api")
    from modeshift.datasets import load_nile

    nile = load_nile()["volume"].to_numpy(dtype=float)
    nile[[3, 40]] = np.nan
    model = LinearGaussianSSM(state_dim=1, diffuse=True)
    model.dynamics_matrix_, model.transition_covariance_ = np.eye(1), np.array([[1469.1]])
    model.observation_matrix_, model.observation_covariance_ = np.eye(1), np.array([[15099.0]])
    model.initial_state_mean_, model.initial_state_covariance_ = np.zeros(1), np.zeros((1, 1))
    state, outs = model.filter_init(), []
    for y in nile:
        state, out = model.filter_step(state, y)
        outs.append(out)
    reference = sm.tsa.UnobservedComponents(nile, "llevel", use_exact_diffuse=True).smooth([15099.0, 1469.1])
    assert outs[0].log_likelihood == pytest.approx(-0.5 * np.log(2 * np.pi))  # F_inf = 1: no Mahalanobis term
    assert sum(out.log_likelihood for out in outs) == pytest.approx(reference.llf, abs=1e-8)
    np.testing.assert_allclose([out.mean[0] for out in outs], reference.filtered_state[0], rtol=1e-10)
    np.testing.assert_allclose([out.covariance[0, 0] for out in outs], reference.filtered_state_cov[0, 0], rtol=1e-9)


def test_a_structural_model_streams_its_exact_diffuse_filter(tmp_path):
    """A trend, a seasonal and a regression on the Nile: the stream's log-likelihoods add up to
    ``score``, its last state forecasts as ``forecast``, and a state saved mid-diffuse resumes."""
    from modeshift.datasets import load_nile
    from modeshift.models.structural import StructuralModel

    x = np.random.default_rng(0).normal(size=100)
    y = load_nile()["volume"].to_numpy(float) + 30 * x
    y[[2, 50]] = np.nan
    model = StructuralModel.unobserved_components(level="local linear trend", seasonal=4, n_exog=1)
    model.params_ = np.array([1000.0, 10.0, 50.0, 30.0, 15000.0])  # level, trend, seasonal, beta, irregular
    outs = list(model.filter_stream(y, inputs=x[:, None]))
    assert abs(sum(out.log_likelihood for out in outs) - model.score(y, exog=x)) < 1e-10 * len(y)
    assert len(outs[3].state.filtered) == 3 and len(outs[-1].state.filtered) == 2
    future = np.ones((3, 1))
    expected = model.forecast(y, 3, exog=x, future_exog=future)
    np.testing.assert_allclose(model.filter_forecast(outs[-1].state, 3, future).means, expected.means, rtol=1e-10)
    np.testing.assert_allclose(outs[-1].state.filtered[1], model.smooth(y, exog=x).covariances[-1], rtol=1e-9)
    state = model.filter_init(lag=len(y))
    for value, exog in zip(y, x):
        state, _ = model.filter_step(state, value, [exog])
    smoothed, laws = model.smooth(y, exog=x), model.filter_smoothed(state)
    assert np.abs(np.array([m for m, _ in laws]) - smoothed.means).max() < 1e-12 * np.abs(smoothed.means).max()
    assert np.abs(np.array([c for _, c in laws]) - smoothed.covariances).max() < 1e-12 * smoothed.covariances.max()
    outs[3].state.save(tmp_path / "structural.npz")
    rest = list(model.filter_stream(y[4:], inputs=x[4:, None], state=FilterState.load(tmp_path / "structural.npz")))
    assert [out.log_likelihood for out in rest] == [out.log_likelihood for out in outs[4:]]
    with pytest.raises(ValueError, match="exog has 2 entries"):
        model.filter_step(model.filter_init(), 1.0, [2.0, 3.0])
    level = StructuralModel.unobserved_components()
    level.params_ = np.array([1469.1, 15099.0])
    with pytest.raises(ValueError, match="no Regression"):
        level.filter_step(level.filter_init(), 1.0, [2.0])


def test_a_structural_model_with_the_approximate_start_streams_its_score():
    """With ``diffuse_variance`` the first d observed values are conditioned on (statsmodels'
    ``loglikelihood_burn``): the stream counts 0 for them, a missing value not among them."""
    from modeshift.datasets import load_nile
    from modeshift.models.structural import StructuralModel

    y = load_nile()["volume"].to_numpy(float)
    y[[0, 3]] = np.nan
    model = StructuralModel.unobserved_components(level="local linear trend", diffuse_variance=1e6)
    model.params_ = np.array([1000.0, 10.0, 15000.0])
    outs = list(model.filter_stream(y))
    assert [out.log_likelihood == 0.0 for out in outs[:5]] == [True] * 4 + [False]  # y_1, y_2 burnt; 0, 3 missing
    assert abs(sum(out.log_likelihood for out in outs) - model.score(y)) < 1e-10 * len(y)
    state = model.filter_init(lag=len(y))
    for value in y:
        state, _ = model.filter_step(state, value)
    smoothed, laws = model.smooth(y), model.filter_smoothed(state)
    assert np.abs(np.array([m for m, _ in laws]) - smoothed.means).max() < 1e-12 * np.abs(smoothed.means).max()


def _fixed_lag_error(model, y: np.ndarray) -> tuple[float, float]:
    """A stream's log-likelihood error, and the largest gap between its fixed-lag laws with L
    covering the series and the batch smoother."""
    state, total = model.filter_init(lag=len(y)), 0.0
    for value in y:
        state, out = model.filter_step(state, value)
        total += out.log_likelihood
    smoothed, laws = model.smooth(y), model.filter_smoothed(state)
    gap = max(
        np.abs(np.array([m for m, _ in laws]) - smoothed.means).max(),
        np.abs(np.array([c for _, c in laws]) - smoothed.covariances).max(),
    )
    return abs(total - model.score(y)), gap


def _stationary_structural(components: str):
    from modeshift.models.structural import StructuralModel

    if components == "ar(2) + noise":
        model = StructuralModel.unobserved_components(level=None, autoregressive=2)
        model.params_ = np.array([0.5, -0.3, 0.8, 0.5])
    else:  # an ARMA(1, 1) without measurement noise: its filtered covariance becomes singular
        model = StructuralModel.arima(p=1, q=1, intercept=True)
        model.params_ = np.array([1.0, 0.6, 0.3, 2.0])  # intercept, ar, ma, variance
    y = 2.5 + np.random.default_rng(2).normal(size=80)
    y[10] = np.nan
    return model, y


def test_a_stationary_structural_model_streams_and_smooths_with_a_fixed_lag():
    model, y = _stationary_structural("ar(2) + noise")
    assert model.param_names == ("ar.L1", "ar.L2", "sigma2", "sigma2.irregular")
    log_lik_error, gap = _fixed_lag_error(model, y)
    assert log_lik_error < 1e-10 * len(y) and gap < 1e-9


def test_fixed_lag_smoothing_of_an_arma_without_noise_is_the_smoother():
    """With no measurement noise the filtered covariance tends to singular: a Rauch-Tung-Striebel
    step, which inverts the predicted covariance, amplified rounding by 1 / theta^2 per step back
    (0.014 off the batch smoother here); the window runs the batch smoother's backward form."""
    model, y = _stationary_structural("arma(1, 1)")
    log_lik_error, gap = _fixed_lag_error(model, y)
    assert log_lik_error < 1e-10 * len(y)
    assert gap < 1e-9


def test_arhmm_with_input_driven_switching_streams_exactly():
    model, X, U = _arhmm_with_inputs()
    outs = list(model.filter_stream(X, inputs=U))
    assert np.abs(np.array([out.probabilities for out in outs]) - model.filter_proba(X, inputs=U)).max() < 1e-12
    assert abs(sum(out.log_likelihood for out in outs) - model.score(X, inputs=U)) < 1e-10 * len(X)
    state = model.filter_init(lag=len(X))
    for y, u in zip(X, U):
        state, _ = model.filter_step(state, y, u)
    assert np.abs(np.array(model.filter_smoothed(state)) - model.predict_proba(X, inputs=U)).max() < 1e-12
    future = np.array([[0.5], [-1.0]])
    expected = model.forecast(X, 2, inputs=U, future_inputs=future)
    np.testing.assert_allclose(model.filter_forecast(state, 2, future).means, expected.means, rtol=1e-10)
    with pytest.raises(ValueError, match="inputs"):
        model.filter_step(model.filter_init(), X[0])


def test_a_recurrent_arhmm_reads_its_switching_from_its_own_past():
    """The move into step t is the guard law at phi(y_t-1, ..., y_t-order), not a fixed matrix."""
    model, X = _nonlinear_arhmm(True, None)
    state = model.filter_init(lag=1)
    moves = []
    for y in X[:6]:
        state, _ = model.filter_step(state, y)
        moves.append(state.window[-1][2])
    guards = model.guard_map_.transform(np.array([[X[3], X[2]], [X[4], X[3]]]))
    np.testing.assert_allclose(moves[-2:], model._blocks[0].kernel_arrays(guards)[1], rtol=1e-14)
    assert not np.allclose(moves[-1], moves[-2])
    with pytest.raises(ValueError, match="driven by its own past"):
        model.filter_step(state, X[6], [1.0])


def test_the_streaming_models_are_these():
    """docs/streaming.md's table: a model that stops streaming (or starts) must update it."""
    import modeshift
    from modeshift.models.base import Model

    public = {
        cls.__name__
        for name, cls in Model._registry.items()
        if name.startswith("modeshift.") and getattr(modeshift, cls.__name__, None) is cls
    }
    streaming = {name for name in public if issubclass(getattr(modeshift, name), StreamingFilters)}
    assert streaming == {
        "HMM",
        "ARHMM",
        "HSMM",
        "LinearGaussianSSM",
        "StructuralModel",
        "MarkovRegression",
        "MarkovAutoregression",
        "SwitchingLDS",
        "ContinuousSwitchingLDS",  # at any gaps: filter_step(time=) (docs/streaming.md)
        "NonlinearSwitchingLDS",  # an extended Kalman step per pair of modes (tests/test_nonlinear_slds_stream.py)
        "ContinuousARHMM",  # at any gaps, exact (tests/test_continuous_arhmm_stream.py)
    }
    assert {"SymbolHMM", "MarkovChain", "MarkovChainMixture"} <= public - streaming


def test_no_option_of_a_streaming_model_is_refused():
    """The options that streamed only with an error before (a nonlinear or recurrent ARHMM, an
    exact diffuse start) now filter: each fitted variant takes a first step."""
    from modeshift.models.structural import StructuralModel

    structural = StructuralModel.unobserved_components(level="local linear trend")
    structural.params_ = np.array([1.0, 0.1, 1.0])
    diffuse, Y, U = _diffuse_lds()
    variants = [
        (_nonlinear_arhmm(False)[0], 0.5, None),
        (_nonlinear_arhmm(True, None)[0], 0.5, None),
        (_nonlinear_arhmm(True, order=1)[0], 0.5, None),
        (_arhmm_with_inputs()[0], 0.5, [0.1]),
        (_arhmm_with_resets(True)[0], 0.5, None),
        (diffuse, Y[1], U[1]),
        (structural, 2.0, None),
    ]
    for model, y, u in variants:
        state, out = model.filter_step(model.filter_init(), y, u)
        assert state.step == 1 and np.isfinite(out.log_likelihood)


@pytest.mark.parametrize(
    "build",
    [
        lambda: HMM(n_states=2, emission="gmm", n_mix=2, n_iter=10, random_state=0),
        lambda: HMM(n_states=2, emission="poisson", n_iter=10, random_state=0),
        lambda: HMM(n_states=2, init="stationary", n_iter=10, random_state=0),
        lambda: HSMM(n_states=2, emission="autoregressive", max_duration=20, n_iter=5, random_state=0),
    ],
    ids=["gmm", "poisson", "stationary_start", "ar_hsmm"],
)
def test_every_emission_streams_exactly(build):
    import warnings

    rng = np.random.default_rng(4)
    X = np.r_[rng.poisson(2.0, 60), rng.poisson(9.0, 60)].astype(float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # capped fits: any parameters will do
        model = build().fit(X)
    outs = list(model.filter_stream(X))
    assert np.abs(np.array([out.probabilities for out in outs]) - model.filter_proba(X)).max() < 1e-12
    assert abs(sum(out.log_likelihood for out in outs) - model.score(X)) < 1e-10 * len(X)


def test_bad_observations_are_named():
    model, _ = _hmm()
    state = model.filter_init()
    with pytest.raises(ValueError, match="has 3 entries, the model expects 2"):
        model.filter_step(state, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="infinite entry"):
        model.filter_step(state, [1.0, np.inf])
    with pytest.raises(ValueError, match="must be numbers"):
        model.filter_step(state, ["a", "b"])
    with pytest.raises(ValueError, match="inputs were given"):
        model.filter_step(state, [1.0, 2.0], inputs=[1.0])
    with pytest.raises(ValueError, match="lag must be"):
        model.filter_init(lag=-1)
    with pytest.raises(ValueError, match="FilterState"):
        model.filter_step({"step": 0}, [1.0, 2.0])
    for feed in (np.zeros((3, 2)), iter(np.zeros((3, 2)))):  # an array (read by blocks) or a live feed alike
        with pytest.raises(ValueError, match="state must be a FilterState"):
            next(model.filter_stream(feed, state={"step": 0}))
    with pytest.raises(NotFittedError):
        HMM(n_states=2).filter_init()
    arhmm, _ = _arhmm()
    with pytest.raises(ValueError, match="cannot take missing values"):
        arhmm.filter_step(arhmm.filter_init(), np.nan)


@pytest.mark.slow
def test_no_underflow_over_a_million_steps():
    """Observations far from both modes (likelihood ~ e^-800 per step, e^-8e8 in all): the
    filter stays normalised and its cost per step does not grow with the stream."""
    model = HMM(n_states=2)
    model.startprob_, model.transmat_ = np.array([0.5, 0.5]), np.array([[0.99, 0.01], [0.01, 0.99]])
    model.means_, model.covars_ = np.array([[0.0], [1.0]]), np.full((2, 1, 1), 0.01)
    far = 5.0 + np.random.default_rng(0).normal(0.0, 0.1, 1_000_000)
    state, total, times = model.filter_init(), 0.0, []
    for start in range(0, len(far), 100_000):
        begin = time.perf_counter()
        for y in far[start : start + 100_000]:
            state, out = model.filter_step(state, y)
            total += out.log_likelihood
        times.append(time.perf_counter() - begin)
    assert np.isfinite(total) and total < -5e8
    assert np.isclose(total, model.score(far), rtol=1e-10)
    assert np.all(np.isfinite(state.filtered[0])) and np.isclose(state.filtered[0].sum(), 1.0)
    assert max(times[-3:]) < 3 * min(times[:3])  # no growth with the stream's length


def test_markov_autoregression_stream_equals_batch():
    from modeshift import MarkovAutoregression
    from modeshift.datasets import load_hamilton_gnp

    gnp = load_hamilton_gnp()["rgnp_growth"].to_numpy()
    model = MarkovAutoregression(n_states=2, order=4, switching_ar=False, random_state=0).fit(gnp)
    outs = list(model.filter_stream(gnp))
    assert all(out.probabilities is None and out.log_likelihood == 0.0 for out in outs[:4])
    probabilities = np.array([out.probabilities for out in outs[4:]])
    assert np.abs(probabilities - model.filter_proba(gnp)).max() < 1e-12
    assert abs(sum(out.log_likelihood for out in outs) - model.score(gnp)) < 1e-10 * len(gnp)
    state = model.filter_init(lag=len(gnp))
    for y in gnp:
        state, _ = model.filter_step(state, y)
    assert np.abs(np.array(model.filter_smoothed(state)) - model.predict_proba(gnp)).max() < 1e-12
    prediction, expected = outs[-1].prediction, model.forecast(gnp, 1)
    np.testing.assert_allclose(prediction.means, expected.means, rtol=1e-10)
    np.testing.assert_allclose(prediction.covariances, expected.covariances, rtol=1e-10)
    np.testing.assert_allclose(prediction.mode_probabilities, expected.mode_probabilities, rtol=1e-10)
    with pytest.raises(NotImplementedError, match="one step"):
        model.filter_forecast(state, 2)


def test_markov_regression_stream_with_exog_trend_and_missing_values():
    from modeshift import MarkovRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    y = np.r_[rng.normal(0, 1, 100), rng.normal(3, 1, 100)] + 0.5 * x
    y[7] = np.nan
    model = MarkovRegression(n_states=2, trend="ct", switching_variance=True, random_state=0).fit(y, exog=x)
    outs = list(model.filter_stream(y, inputs=x[:, None]))
    probabilities = np.array([out.probabilities for out in outs])
    assert np.abs(probabilities - model.filter_proba(y, exog=x)).max() < 1e-12
    assert abs(sum(out.log_likelihood for out in outs) - model.score(y, exog=x)) < 1e-10 * len(y)
    with pytest.raises(ValueError, match="the exog row"):
        model.filter_step(model.filter_init(), 1.0)


def _slds(A, Q, b, P, offset=(0.1, -0.2)):
    from modeshift import SwitchingLDS

    k = len(A)
    model = SwitchingLDS(n_states=k, state_dim=1)
    model.dynamics_matrices_, model.dynamics_offsets_ = np.reshape(A, (k, 1, 1)), np.reshape(b, (k, 1))
    model.dynamics_input_matrices_, model.dynamics_covariances_ = np.zeros((k, 1, 0)), np.reshape(Q, (k, 1, 1))
    model.observation_matrix_, model.feedthrough_matrix_ = np.array([[1.0], [0.5]]), np.zeros((2, 0))
    model.observation_offset_, model.observation_covariance_ = np.array(offset), 0.3 * np.eye(2)
    model.initial_state_mean_, model.initial_state_covariance_ = np.zeros(1), np.eye(1)
    model.startprob_, model.transmat_ = np.full(k, 1.0 / k), np.array(P)
    return model


def _exact_switching_filter(model, Y):
    """p(z_T-1 | y) and log p(y) by enumerating every mode path (a Kalman filter each)."""
    A, Q = model.dynamics_matrices_[:, 0, 0], model.dynamics_covariances_[:, 0, 0]
    b, P = model.dynamics_offsets_[:, 0], model.transmat_
    C, d, R = model.observation_matrix_, model.observation_offset_, model.observation_covariance_
    k, total, last = len(A), 0.0, np.zeros(len(A))
    for path in itertools.product(range(k), repeat=len(Y)):
        weight = model.startprob_[path[0]] * np.prod([P[i, j] for i, j in zip(path, path[1:])])
        mean, var, log_lik = 0.0, 1.0, 0.0
        for t, (z, y) in enumerate(zip(path, Y)):
            if t:
                mean, var = A[z] * mean + b[z], A[z] ** 2 * var + Q[z]
            S = var * C @ C.T + R
            innovation = y - d - C[:, 0] * mean
            log_lik += -0.5 * (np.log(np.linalg.det(2 * np.pi * S)) + innovation @ np.linalg.solve(S, innovation))
            gain = var * np.linalg.solve(S, C[:, 0])
            mean, var = mean + gain @ innovation, var - var * gain @ C[:, 0]
        total += weight * np.exp(log_lik)
        last[path[-1]] += weight * np.exp(log_lik)
    return last / total, np.log(total)


def test_switching_lds_filter_is_exact_for_three_steps_and_close_after():
    model = _slds([0.9, -0.5], [0.1, 0.5], [0.5, -1.0], [[0.9, 0.1], [0.2, 0.8]])
    Y = model.sample(8, random_state=0)[0]
    outs = list(model.filter_stream(Y))
    for T in (1, 2, 3, 8):
        probabilities, log_lik = _exact_switching_filter(model, Y[:T])
        approximate = sum(out.log_likelihood for out in outs[:T])
        if T <= 3:  # one Gaussian per mode is exact while x_t-2 does not depend on a mode
            np.testing.assert_allclose(outs[T - 1].probabilities, probabilities, atol=1e-12)
            assert abs(approximate - log_lik) < 1e-10
        else:
            np.testing.assert_allclose(outs[T - 1].probabilities, probabilities, atol=1e-3)
            assert abs(approximate - log_lik) < 1e-2


def test_switching_lds_with_alike_modes_is_the_kalman_filter():
    model = _slds([0.9, 0.9], [0.1, 0.1], [0.0, 0.0], [[0.9, 0.1], [0.2, 0.8]], offset=(0.0, 0.0))
    lds = LinearGaussianSSM(state_dim=1)
    lds.dynamics_matrix_, lds.transition_covariance_ = np.array([[0.9]]), np.array([[0.1]])
    lds.observation_matrix_, lds.observation_covariance_ = model.observation_matrix_, model.observation_covariance_
    lds.initial_state_mean_, lds.initial_state_covariance_ = np.zeros(1), np.eye(1)
    Y = model.sample(100, random_state=2)[0]
    Y[4, 0] = np.nan
    outs = list(model.filter_stream(Y))
    batch = lds.filter(Y)
    assert np.abs(np.array([out.mean for out in outs]) - batch.means).max() < 1e-10
    assert abs(sum(out.log_likelihood for out in outs) - batch.log_likelihood) < 1e-9
    lagged = [out.lagged for out in model.filter_stream(Y, lag=2)][2:]  # Kim's smoother: the Kalman smoother's
    expected = [out.lagged for out in lds.filter_stream(Y, lag=2)][2:]
    assert np.abs(np.array([law[0] for law in lagged]) - np.array([law[0] for law in expected])).max() < 1e-10
    assert np.abs(np.array([law[1] for law in lagged]) - np.array([law[1] for law in expected])).max() < 1e-10
    forecast, expected = model.filter_forecast(outs[-1].state, 3), lds.forecast(Y, 3)
    np.testing.assert_allclose(forecast.means, expected.means, rtol=1e-10)
    np.testing.assert_allclose(forecast.covariances, expected.covariances, rtol=1e-10)


def test_an_array_read_by_blocks_gives_what_a_live_feed_gives():
    model, X = _hmm()
    by_blocks = list(model.filter_stream(X, block=7))
    one_by_one = list(model.filter_stream(iter(list(X))))
    for a, b in zip(by_blocks, one_by_one, strict=True):  # the compiled block filter rounds its own way
        np.testing.assert_allclose(a.probabilities, b.probabilities, rtol=0, atol=1e-14)
        assert abs(a.log_likelihood - b.log_likelihood) < 1e-12
        assert a.state.step == b.state.step == a.step + 1
    np.testing.assert_allclose(by_blocks[-1].state.filtered[0], one_by_one[-1].state.filtered[0], atol=1e-14)
    bad = X.copy()
    bad[12, 1] = np.inf
    with pytest.raises(ValueError, match="step 12 has an infinite entry"):
        list(model.filter_stream(bad))
    counts = HMM(n_states=2, emission="categorical", random_state=0).fit(np.r_[np.zeros(20), np.ones(20)])
    with pytest.raises(ValueError, match="from step 0"):
        list(counts.filter_stream(np.array([0.0, 1.5])))


def test_markov_switching_with_time_varying_transitions_streams_exactly():
    import warnings

    from modeshift import MarkovAutoregression, MarkovRegression
    from modeshift.datasets import load_filardo

    frame = load_filardo()
    y = frame["dlip"].to_numpy()[1:]
    z = np.c_[np.ones(len(y)), frame["dmdlleading"].to_numpy()[:-1]]
    x = np.random.default_rng(1).normal(size=len(y))
    options = {"n_states": 2, "random_state": 0, "n_iter": 20, "n_iter_polish": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # capped fits: any parameters will do
        ar = MarkovAutoregression(order=2, switching_ar=False, **options).fit(y, exog_tvtp=z)
        regression = MarkovRegression(**options).fit(y, exog=x, exog_tvtp=z)
    outs = list(ar.filter_stream(y, inputs=z))
    probabilities = np.array([out.probabilities for out in outs[2:]])
    assert np.abs(probabilities - ar.filter_proba(y, exog_tvtp=z)).max() < 1e-12
    assert abs(sum(out.log_likelihood for out in outs) - ar.score(y, exog_tvtp=z)) < 1e-10 * len(y)
    state = ar.filter_init(lag=len(y))
    for value, row in zip(y, z):
        state, _ = ar.filter_step(state, value, row)
    assert np.abs(np.array(ar.filter_smoothed(state)) - ar.predict_proba(y, exog_tvtp=z)).max() < 1e-12
    outs = list(regression.filter_stream(y, inputs=np.c_[x, z]))  # the exog row, then the exog_tvtp row
    probabilities = np.array([out.probabilities for out in outs])
    assert np.abs(probabilities - regression.filter_proba(y, exog=x, exog_tvtp=z)).max() < 1e-12
    prediction = regression.filter_forecast(outs[-1].state, 1, [0.3, 1.0, 0.2])
    expected = regression.forecast(y, 1, exog=x, exog_tvtp=z, future_exog=[[0.3]], future_exog_tvtp=[[1.0, 0.2]])
    np.testing.assert_allclose(prediction.means, expected.means, rtol=1e-10)
    np.testing.assert_allclose(prediction.covariances, expected.covariances, rtol=1e-10)
    np.testing.assert_allclose(prediction.mode_probabilities, expected.mode_probabilities, rtol=1e-10)


def test_input_driven_and_discrete_chains_stream_exactly():
    rng = np.random.default_rng(3)
    U = rng.normal(size=(300, 1))
    X = np.where(U[:, 0] > 0, 2.0, -2.0) + rng.normal(0, 1, 300)
    driven = HMM(n_states=2, input_dim=1, n_iter=30, random_state=0).fit(X, inputs=U)
    outs = list(driven.filter_stream(X, inputs=U))
    assert np.abs(np.array([out.probabilities for out in outs]) - driven.filter_proba(X, inputs=U)).max() < 1e-12
    assert abs(sum(out.log_likelihood for out in outs) - driven.score(X, inputs=U)) < 1e-10 * len(X)
    np.testing.assert_allclose(
        driven.filter_forecast(outs[-1].state, 1, U[:1]).means,
        driven.forecast(X, 1, inputs=U, future_inputs=U[:1]).means,
    )
    with pytest.raises(ValueError, match="inputs"):
        driven.filter_step(driven.filter_init(), 1.0)
    symbols = np.r_[rng.integers(0, 2, 100), rng.integers(2, 4, 100)].astype(float)
    symbols[[3, 50]] = np.nan
    categorical = HMM(n_states=2, emission="categorical", n_iter=30, random_state=0).fit(symbols)
    outs = list(categorical.filter_stream(symbols))
    assert np.abs(np.array([out.probabilities for out in outs]) - categorical.filter_proba(symbols)).max() < 1e-12
    assert abs(sum(out.log_likelihood for out in outs) - categorical.score(symbols)) < 1e-10 * len(symbols)


def test_a_million_steps_through_filter_stream_stay_normalised():
    model = HMM(n_states=2)
    model.startprob_, model.transmat_ = np.array([0.5, 0.5]), np.array([[0.99, 0.01], [0.01, 0.99]])
    model.means_, model.covars_ = np.array([[0.0], [1.0]]), np.full((2, 1, 1), 0.01)
    far = 5.0 + np.random.default_rng(0).normal(0.0, 0.1, 1_000_000)
    total, start = 0.0, time.perf_counter()
    for out in model.filter_stream(far):
        total += out.log_likelihood
    seconds = time.perf_counter() - start
    assert np.isfinite(total) and total < -5e8
    assert np.isclose(total, model.score(far), rtol=1e-10)
    assert np.isclose(out.probabilities.sum(), 1.0) and np.all(out.probabilities >= 0)
    assert seconds < 60


def test_an_impossible_observation_is_named_in_a_block():
    model = HMM(n_states=2, emission="categorical")
    model.startprob_, model.transmat_ = np.array([0.5, 0.5]), np.array([[0.9, 0.1], [0.1, 0.9]])
    model.emissionprob_ = np.array([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0]])
    with pytest.raises(ValueError, match="no mode can emit"):
        list(model.filter_stream(np.array([0.0, 1.0, 2.0, 0.0])))


def test_a_parameter_changed_in_place_takes_effect_at_the_next_step():
    model, Y, U = _lds()
    state = model.filter_init()
    state, first = model.filter_step(state, Y[0], U[0])
    model.observation_covariance_ *= 2.0  # in place: the cached checks must notice
    _, second = model.filter_step(state, Y[1], U[1])
    assert second.log_likelihood == _one_step_after(model, Y, U, first.state)


def _one_step_after(model, Y, U, state):
    """The log-likelihood of step 1 given a state, from a fresh model with the same parameters."""
    fresh = LinearGaussianSSM(state_dim=2, obs_dim=3, input_dim=1)
    for name in model.parameter_names:
        setattr(fresh, name, np.array(getattr(model, name)))
    return fresh.filter_step(state, Y[1], U[1])[1].log_likelihood


@pytest.mark.parametrize("covariance", ["full", "diag", "spherical", "tied"])
def test_the_fused_gaussian_step_is_the_general_recursion(covariance):
    """A Gaussian chain's filter_step runs one compiled call; it gives what the general path gives
    (missing entries included), and a state or row it cannot take goes the checked way."""
    rng = np.random.default_rng(3)
    X = np.r_[rng.normal(0, 1, (40, 3)), rng.normal(2, 1, (40, 3))]
    X[4, 1], X[9, [0, 2]], X[13] = np.nan, np.nan, np.nan
    model = HMM(n_states=3, covariance=covariance, tol=1e-3, random_state=0).fit(X)
    fused, general = model.filter_init(), model.filter_init()
    for y in X:
        assert model._fused_step(fused, y, None) is not None
        fused, a = model.filter_step(fused, y)
        general, b = StreamingFilters.filter_step(model, general, y)
        np.testing.assert_allclose(a.probabilities, b.probabilities, rtol=1e-13, atol=1e-15)
        assert a.log_likelihood == pytest.approx(b.log_likelihood, rel=1e-13, abs=1e-13)
        assert a.state.step == b.state.step and a.state.lag == b.state.lag == 0
    assert model._fused_step(model.filter_init(lag=2), X[0], None) is None
    assert model._fused_step(FilterState(1, (np.ones(2) / 2,)), X[0], None) is None  # another model's law


def test_the_fused_autoregressive_step_is_the_general_recursion():
    """An ARHMM's step after its first ``order`` rows is a Gaussian chain's with means b_k + sum_i A_k,i y_t-i."""
    model, X = _arhmm()
    fused, general = model.filter_init(), model.filter_init()
    for t, y in enumerate(X):
        assert (model._fused_step(fused, y, None) is None) == (t < model.order)
        fused, a = model.filter_step(fused, y)
        general, b = StreamingFilters.filter_step(model, general, y)
        np.testing.assert_allclose(a.probabilities, b.probabilities, rtol=1e-12, atol=1e-15)
        assert a.log_likelihood == pytest.approx(b.log_likelihood, rel=1e-12, abs=1e-12)
        np.testing.assert_array_equal(a.state.history, b.state.history)
    with pytest.raises(ValueError, match="cannot take missing values"):
        model.filter_step(fused, np.nan)


def test_a_live_feed_builds_the_filter_once_per_stream(monkeypatch):
    model, X = _arhmm_with_resets()
    from_array = list(model.filter_stream(X))
    state, built = model.filter_init(), []
    for hook in ("_stream_recursion", "_stream_constants"):
        original = getattr(model, hook)
        monkeypatch.setattr(model, hook, lambda original=original, hook=hook: built.append(hook) or original())
    from_feed = list(model.filter_stream(iter(list(X)), state=state))
    assert sorted(built) == ["_stream_constants", "_stream_recursion"]  # once each, not once per row
    for a, b in zip(from_array, from_feed, strict=True):
        np.testing.assert_allclose(a.probabilities, b.probabilities, rtol=0, atol=1e-14)
        assert abs(a.log_likelihood - b.log_likelihood) < 1e-12
