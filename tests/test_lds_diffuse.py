"""The exact diffuse start of LinearGaussianSSM (Durbin & Koopman 2012, ch. 5): against statsmodels'
exact-diffuse filter and smoother, against the limit of a large prior variance (independent of any
peer), and the maximum likelihood it makes reachable (the Nile, a boundary optimum)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from modeshift import LinearGaussianSSM
from modeshift import _kernels as kernels
from modeshift.data import as_sequences
from modeshift.datasets import load_nile
from modeshift.models import em


def _nile() -> np.ndarray:
    return load_nile()["volume"].to_numpy(dtype=float)


def _model(A, Q, C, R, diffuse, m0=None, P0=None) -> LinearGaussianSSM:
    n = len(A)
    model = LinearGaussianSSM(n, diffuse=diffuse)
    model.dynamics_matrix_, model.transition_covariance_ = np.array(A, dtype=float), np.array(Q, dtype=float)
    model.observation_matrix_, model.observation_covariance_ = np.array(C, dtype=float), np.array(R, dtype=float)
    model.initial_state_mean_ = np.zeros(n) if m0 is None else np.array(m0, dtype=float)
    model.initial_state_covariance_ = np.zeros((n, n)) if P0 is None else np.array(P0, dtype=float)
    return model


# (statsmodels specification, its parameters, our model with the same parameters)
_STRUCTURAL = {
    "local level": ("llevel", {}, [15099.0, 1469.1], lambda p: _model([[1]], [[p[1]]], [[1]], [[p[0]]], True)),
    "local linear trend": (
        "lltrend",
        {},
        [15000.0, 1000.0, 10.0],
        lambda p: _model([[1, 1], [0, 1]], np.diag(p[1:]), [[1, 0]], [[p[0]]], True),
    ),
    "level + AR(1)": (  # a stationary component (its stationary prior) beside a diffuse one
        "llevel",
        {"autoregressive": 1},
        [9000.0, 800.0, 4000.0, 0.6],
        lambda p: _model(
            [[1, 0], [0, p[3]]],
            np.diag(p[1:3]),
            [[1, 1]],
            [[p[0]]],
            [True, False],
            P0=np.diag([0.0, p[2] / (1 - p[3] ** 2)]),
        ),
    ),
}


@pytest.mark.parametrize("name", list(_STRUCTURAL))
def test_log_likelihood_and_smoother_match_statsmodels_exact_diffuse(name):
    sm = pytest.importorskip("statsmodels.api")
    spec, extra, params, build = _STRUCTURAL[name]
    y = _nile()
    y[[3, 40, 41]] = np.nan
    reference = sm.tsa.UnobservedComponents(y, spec, use_exact_diffuse=True, **extra).smooth(params)
    model = build(params)
    assert model.score(y) == pytest.approx(reference.llf, abs=1e-6)
    smoothed = model.smooth(y)
    np.testing.assert_allclose(smoothed.means, reference.smoothed_state.T, rtol=1e-8, atol=1e-6)
    covariances = np.moveaxis(reference.smoothed_state_cov, -1, 0)
    np.testing.assert_allclose(smoothed.covariances, covariances, rtol=1e-7, atol=1e-6)
    # statsmodels leaves Cov(x_t+1, x_t | y) at 0 in its diffuse steps; after them they agree
    autocov = np.moveaxis(reference.smoothed_state_autocov, -1, 0)[:-1]
    after = np.flatnonzero(np.abs(autocov).reshape(len(autocov), -1).max(axis=1) > 0)
    assert after[0] <= len(params)
    np.testing.assert_allclose(smoothed.cross_covariances[1:][after], autocov[after], rtol=1e-7, atol=1e-6)


def _large_prior(mask, P0, kappa):
    return np.where(np.outer(~mask, ~mask), P0, 0.0) + kappa * np.diag(mask.astype(float))


def test_diffuse_moments_are_the_limit_of_a_large_prior_variance():
    """Peer-free: log L_diffuse = lim_k [log L(P0 = P_* + k P_inf) + (d / 2) log k], and the smoothed
    moments are the large-k ones (Richardson-extrapolated from k = 1e3, 1e4, 1e5: errors O(1 / k)),
    on two sequences with a bivariate observation whose noise is correlated (the decorrelating
    transform), missing entries in the diffuse steps, and one stationary component."""
    rng = np.random.default_rng(0)
    A = np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.5]])
    Q = np.diag([0.3, 0.05, 0.4])
    C = np.array([[1.0, 0.0, 1.0], [0.5, 1.0, 0.0]])
    R = np.array([[0.5, 0.2], [0.2, 0.4]])
    mask = np.array([True, True, False])
    m0, P0 = np.array([0.0, 0.0, 0.3]), np.diag([0.0, 0.0, 0.4 / 0.75])
    y = rng.normal(size=(30, 2)).cumsum(axis=0)
    y[0, 1] = y[1] = y[17, 0] = np.nan
    offsets = np.array([0, 12, 30])

    def run(prior, diffuse):
        ll, *filtered = kernels.kalman_filter(y, offsets, m0, prior, A, Q, C, R, diffuse=diffuse)
        smoothed = kernels.rts_smoother(y, offsets, *filtered, A, C, R, diffuse=diffuse)
        return ll, *smoothed

    exact = run(P0, mask)
    limits = []
    for kappa in (1e3, 1e4, 1e5):  # larger k lose the smoothed covariances to rounding (k^2 eps)
        ll, *smoothed = run(_large_prior(mask, P0, kappa), None)
        limits.append([ll + mask.sum() / 2 * np.log(kappa), *smoothed])
    for got, *values in zip(exact, *limits):
        once = [(10 * fine - coarse) / 9 for coarse, fine in zip(values, values[1:])]  # O(1 / k) removed
        # the reference's own rounding, k^2 eps at k = 1e5, is about 1e-6
        np.testing.assert_allclose(got, (100 * once[1] - once[0]) / 99, rtol=1e-5, atol=1e-5)


def test_score_is_exact_in_the_diffuse_steps():
    """The analytic gradient against central differences of the diffuse log-likelihood: two
    sequences, a missing first step (the diffuse step moves on), a diffuse and a stationary part."""
    y = _nile()[:80]
    y[[0, 7]] = np.nan
    for A, C, mask in (
        ([[1.0]], [[1.0]], True),
        ([[1.0, 1.0], [0.0, 1.0]], [[1.0, 0.0]], True),
        ([[1.0, 0.0], [0.0, 0.6]], [[1.0, 1.0]], [True, False]),
    ):
        n = len(A)
        model = _model(
            A, np.diag([1400.0, 300.0][:n]), C, [[15000.0]], mask, np.full(n, 3.0), np.diag([5.0, 900.0][:n])
        )
        seqs = model._sequences(as_sequences([y[:50], y[50:]]), None, None, 1)
        params = model._check_parameters()
        _, gradient = model._score(seqs, params)
        for key in ("A", "Q", "C", "R", "m0", "P0"):
            want = np.zeros_like(params[key])
            for index in np.ndindex(params[key].shape):
                h = 1e-4 * max(1.0, abs(params[key][index]))
                step = np.zeros_like(params[key])
                step[index] = h
                if key in ("Q", "R", "P0"):
                    step = np.maximum(step, step.T)
                upper = model._score(seqs, {**params, key: params[key] + step})[0]
                lower = model._score(seqs, {**params, key: params[key] - step})[0]
                want[index] = (upper - lower) / (2 * h)
            got = gradient[key] * (2 - np.eye(len(gradient[key]))) if key in ("Q", "R", "P0") else gradient[key]
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-9 + 1e-5 * np.abs(want).max(), err_msg=key)


def test_nile_local_level_reaches_the_mle_with_the_exact_diffuse_log_likelihood():
    """Durbin & Koopman (2012, sec. 2.10): 15099 and 1469.1; the log-likelihood is statsmodels'
    exact-diffuse value at the same parameters."""
    sm = pytest.importorskip("statsmodels.api")
    y = _nile()
    with warnings.catch_warnings():
        warnings.simplefilter("error", em.ConvergenceWarning)
        model = LinearGaussianSSM.local_level().fit(y)
    assert model.converged_ and model.diffuse is True
    ours = [model.observation_covariance_[0, 0], model.transition_covariance_[0, 0]]
    np.testing.assert_allclose(ours, [15099.0, 1469.1], rtol=5e-3)
    reference = sm.tsa.UnobservedComponents(y, "llevel", use_exact_diffuse=True)
    assert model.log_likelihood_ == pytest.approx(reference.loglike(ours), abs=1e-6)
    assert model.log_likelihood_ >= reference.fit(disp=False).llf - 1e-6  # theirs stops a little short


def test_zero_irregular_variance_is_reached_exactly_with_defaults():
    """A random walk seen without noise whose differences have a positive lag-one sample
    autocorrelation: the local level's MLE has irregular variance exactly 0 (a boundary optimum)."""
    y = np.cumsum(np.random.default_rng(15).normal(size=150))
    steps = np.diff(y)
    assert np.corrcoef(steps[:-1], steps[1:])[0, 1] > 0.1
    with warnings.catch_warnings():
        warnings.simplefilter("error", em.ConvergenceWarning)
        model = LinearGaussianSSM.local_level().fit(y)
    assert model.converged_
    assert model.observation_covariance_[0, 0] == 0.0
    # at R = 0 the level is the series itself: the MLE of Q is the mean square step after the first
    assert model.transition_covariance_[0, 0] == pytest.approx(np.mean(steps**2), rel=1e-6)


def test_diffuse_hyper_parameter_validation_em_and_sample():
    y = _nile()
    with pytest.raises(ValueError, match="diffuse must be a bool or 2 bools"):
        LinearGaussianSSM(2, diffuse=[True]).fit(y)
    with pytest.raises(ValueError, match="ends before its diffuse state components are identified"):
        LinearGaussianSSM.local_linear_trend().fit(y[:1])
    model = LinearGaussianSSM.local_level(method="em", n_iter=30, tol=-np.inf)
    model.initial_state_mean_ = np.array([123.0])
    with pytest.warns(em.ConvergenceWarning):
        model.fit(y)
    assert np.all(np.diff(model.history_) >= -1e-9)  # EM is monotone in the diffuse log-likelihood
    mixed = LinearGaussianSSM(2, diffuse=[True, False], method="em", n_iter=5, fixed=("dynamics_matrix_",))
    mixed.dynamics_matrix_ = np.diag([1.0, 0.5])
    mixed.initial_state_mean_, mixed.initial_state_covariance_ = np.array([7.0, 0.0]), np.diag([3.0, 1.0])
    with pytest.warns(em.ConvergenceWarning):
        mixed.fit(y)
    assert mixed.initial_state_mean_[0] == 7.0 and mixed.initial_state_covariance_[0, 0] == 3.0  # not learned
    assert mixed.initial_state_covariance_[1, 1] != 1.0
    sampled, states = LinearGaussianSSM.local_level().fit(y).sample(5, random_state=0)
    assert states[0, 0] == 0.0 and np.isfinite(sampled).all()  # a diffuse level starts at its mean
