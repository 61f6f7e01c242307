"""Forecasts of mode models (HMM, ARHMM) against brute force, and one result type for every model.

The predictive law of y_T+h is checked without the forecast code: the HMM likelihood
integrates missing steps out exactly, so p(y_T+h = v | y) = exp(score([y, NaN x (h-1), v]) - score(y)),
which is summed or integrated over v for the predictive moments.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import simpson

from modeshift import ARHMM, HMM, LinearGaussianSSM, NotFittedError
from modeshift.models.base import Forecast

TRANSMAT = np.array([[0.8, 0.2], [0.3, 0.7]])


def _hmm(emission: str) -> HMM:
    """A hand-set two-state HMM of one feature."""
    model = HMM(2, emission=emission, n_mix=2)
    model.startprob_, model.transmat_ = np.array([0.6, 0.4]), TRANSMAT
    if emission == "gaussian":
        model.means_, model.covars_ = np.array([[-1.0], [2.0]]), np.array([[[0.5]], [[1.5]]])
    elif emission == "gmm":
        model.weights_ = np.array([[0.3, 0.7], [0.5, 0.5]])
        model.means_ = np.array([[[-2.0], [0.0]], [[1.0], [3.0]]])
        model.covars_ = np.array([[[[0.4]], [[0.6]]], [[[0.5]], [[0.8]]]])
    elif emission == "poisson":
        model.lambdas_ = np.array([[1.5], [6.0]])
    else:
        model.emissionprob_ = np.array([[0.6, 0.3, 0.1], [0.1, 0.2, 0.7]])
    return model


def _predictive(model: HMM, X: np.ndarray, values: np.ndarray, horizon: int) -> np.ndarray:
    """p(y_T+horizon = v | X) for each v in ``values``, from likelihoods alone."""
    base = model.score(X)
    gap = np.full((horizon - 1, 1), np.nan)
    return np.array([np.exp(model.score(np.r_[X, gap, [[v]]]) - base) for v in values])


def _moments(values: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
    mean = float(weights @ values)
    return mean, float(weights @ values**2) - mean**2


@pytest.mark.parametrize("emission", ["gaussian", "gmm", "poisson", "categorical"])
def test_hmm_forecast_is_exact(emission):
    model = _hmm(emission)
    X, _ = model.sample(40, random_state=0)
    result = model.forecast(X, horizon=3)
    filtered = model.predict_proba(X)[-1]  # at the last step, smoothing is filtering
    expected_modes = np.array([filtered @ np.linalg.matrix_power(TRANSMAT, h) for h in (1, 2, 3)])
    np.testing.assert_allclose(result.mode_probabilities, expected_modes, rtol=1e-12)
    assert result.means.shape == (3, 1) and result.covariances.shape == (3, 1, 1)
    for h in (1, 3):
        if emission in ("gaussian", "gmm"):
            grid = np.linspace(-9.0, 11.0, 801)
            density = _predictive(model, X, grid, h)
            mean = simpson(grid * density, x=grid)
            variance = simpson(grid**2 * density, x=grid) - mean**2
            assert simpson(density, x=grid) == pytest.approx(1.0, abs=1e-8)
        else:
            support = np.arange(3 if emission == "categorical" else 60)
            probabilities = _predictive(model, X, support, h)
            assert probabilities.sum() == pytest.approx(1.0, abs=1e-10)
            mean, variance = _moments(support, probabilities)
            if emission == "categorical":
                np.testing.assert_allclose(result.symbol_probabilities[h - 1], probabilities, rtol=1e-10)
        assert result.means[h - 1, 0] == pytest.approx(mean, rel=1e-7)
        assert result.covariances[h - 1, 0, 0] == pytest.approx(variance, rel=1e-7)
    assert (result.symbol_probabilities is None) == (emission != "categorical")


def test_hmm_forecast_covariances_of_several_features():
    """Monte Carlo from the filtered state: z_T ~ p(z_T | y), then the chain and the emissions."""
    rng = np.random.default_rng(1)
    model = HMM(2)
    model.startprob_, model.transmat_ = np.array([0.5, 0.5]), TRANSMAT
    model.means_ = np.array([[0.0, 1.0], [3.0, -1.0]])
    model.covars_ = np.array([[[1.0, 0.5], [0.5, 1.0]], [[2.0, -0.3], [-0.3, 0.5]]])
    X, _ = model.sample(30, random_state=2)
    result = model.forecast(X, horizon=2)
    n = 200_000
    states = (rng.random(n) < model.predict_proba(X)[-1][1]).astype(int)
    for h in range(2):
        states = (rng.random(n) < TRANSMAT[states, 1]).astype(int)
        chol = np.linalg.cholesky(model.covars_)[states]
        draws = model.means_[states] + np.einsum("nij,nj->ni", chol, rng.standard_normal((n, 2)))
        np.testing.assert_allclose(result.means[h], draws.mean(axis=0), atol=0.02)
        np.testing.assert_allclose(result.covariances[h], np.cov(draws.T), atol=0.04)


def _arhmm() -> ARHMM:
    model = ARHMM(2, order=2)
    model.startprob_, model.transmat_ = np.array([0.5, 0.5]), np.array([[0.9, 0.1], [0.2, 0.8]])
    model.coefs_ = np.array([[[0.5, 0.2]], [[-0.3, 0.1]]])
    model.intercepts_ = np.array([[1.0], [-1.0]])
    model.covars_ = np.array([[[0.2]], [[0.5]]])
    return model


def test_arhmm_forecast_one_step_is_exact():
    model = _arhmm()
    Y, _ = model.sample(50, random_state=1)
    result = model.forecast(Y, horizon=1)
    base = model.score(Y)
    grid = np.linspace(-8.0, 8.0, 1601)
    density = np.array([np.exp(model.score(np.r_[Y, [[v]]]) - base) for v in grid])
    mean = simpson(grid * density, x=grid)
    assert result.means[0, 0] == pytest.approx(mean, rel=1e-7)
    assert result.covariances[0, 0, 0] == pytest.approx(simpson(grid**2 * density, x=grid) - mean**2, rel=1e-7)


def test_arhmm_forecast_matches_monte_carlo():
    """Simulate the model's equations from the filtered mode and the last observed lags."""
    rng = np.random.default_rng(0)
    model = _arhmm()
    Y, _ = model.sample(50, random_state=1)
    result = model.forecast(Y, horizon=4)
    n = 400_000
    modes = (rng.random(n) < model.predict_proba(Y)[-1][1]).astype(int)
    lags = np.tile(Y[[-1, -2], 0], (n, 1))  # y_T, y_T-1
    for h in range(4):
        modes = (rng.random(n) < model.transmat_[modes, 1]).astype(int)
        noise = np.sqrt(model.covars_[modes, 0, 0]) * rng.standard_normal(n)
        y = (model.coefs_[modes, 0] * lags).sum(axis=1) + model.intercepts_[modes, 0] + noise
        lags = np.c_[y, lags[:, 0]]
        assert result.means[h, 0] == pytest.approx(y.mean(), abs=4 * y.std() / np.sqrt(n))
        assert result.covariances[h, 0, 0] == pytest.approx(y.var(), rel=0.01)
        np.testing.assert_allclose(result.mode_probabilities[h, 1], modes.mean(), atol=0.005)


def test_input_driven_forecast_follows_future_inputs():
    model = HMM(2, input_dim=1)
    model.startprob_ = np.array([0.5, 0.5])
    model.recurrence_biases_ = np.log(TRANSMAT)
    model.input_weights_ = np.array([[0.0], [1.5]])
    model.means_, model.covars_ = np.array([[-1.0], [2.0]]), np.array([[[0.5]], [[1.5]]])
    inputs = np.linspace(-1.0, 1.0, 30)[:, None]
    X, _ = model.sample(30, random_state=0, inputs=inputs)
    future = np.array([[2.0], [-2.0]])
    result = model.forecast(X, horizon=2, inputs=inputs, future_inputs=future)
    probabilities = model.predict_proba(X, inputs=inputs)[-1]
    for h in range(2):
        logits = np.log(TRANSMAT) + model.input_weights_[:, 0] * future[h, 0]
        probabilities = probabilities @ (np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True))
        np.testing.assert_allclose(result.mode_probabilities[h], probabilities, rtol=1e-12)
    with pytest.raises(ValueError, match="pass future_inputs"):
        model.forecast(X, horizon=2, inputs=inputs)


def test_one_forecast_type_for_every_model():
    hmm = _hmm("gaussian")
    X, _ = hmm.sample(30, random_state=0)
    lds = LinearGaussianSSM(1, n_iter=5).fit(X)
    for model in (hmm, _arhmm(), lds):
        result = model.forecast(X, horizon=2)
        assert isinstance(result, Forecast) and result.per_sequence()[0] is result
        means, covariances = result  # unpacks like the earlier (means, covariances) tuple
        assert means.shape == (2, 1) and covariances.shape == (2, 1, 1)
        assert (result.mode_probabilities is None) == (model is lds)
        several = model.forecast([X, X[:20]], horizon=2)
        assert isinstance(several.means, list) and len(several.per_sequence()) == 2
        np.testing.assert_array_equal(several.per_sequence()[0].means, result.means)


def test_forecast_errors():
    with pytest.raises(NotFittedError):
        HMM(2).forecast(np.zeros(5), horizon=2)
    model = _hmm("gaussian")
    with pytest.raises(ValueError, match="horizon must be an integer >= 1"):
        model.forecast(np.zeros(5), horizon=0)
    with pytest.raises(ValueError, match="input_dim=0"):
        model.forecast(np.zeros(5), horizon=2, future_inputs=np.zeros((2, 1)))
