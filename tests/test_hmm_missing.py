"""Missing data (NaN) is integrated out exactly: checks against brute-force marginalisation.

For a tiny model (K <= 3 states, T <= 6 steps) the likelihood of a sequence with
missing values is the sum over all K**T state paths of the path probability
times the emission densities of the *observed* values only (the marginal
Gaussian of the observed dimensions; a wholly missing step contributes 1).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp

from modeshift import HMM
from modeshift import _kernels as kernels

# ------------------------------------------------------------------------ reference


def brute_force(log_emission, pi, A):
    """log p(y), posteriors (T, K) and the best path's log-probability by enumeration.

    ``log_emission`` is (T, K): log p(observed part of y_t | z_t = k).
    """
    T, K = log_emission.shape
    with np.errstate(divide="ignore"):
        log_pi, log_A = np.log(pi), np.log(A)
    paths = np.array(list(itertools.product(range(K), repeat=T)))
    joint = log_pi[paths[:, 0]] + log_emission[0, paths[:, 0]]
    for t in range(1, T):
        joint = joint + log_A[paths[:, t - 1], paths[:, t]] + log_emission[t, paths[:, t]]
    log_z = logsumexp(joint)
    weights = np.exp(joint - log_z)
    posteriors = np.stack([np.bincount(paths[:, t], weights=weights, minlength=K) for t in range(T)])
    return log_z, posteriors, joint.max(), paths[np.argmax(joint)]


def gaussian_log_emission(y, means, covs):
    """log N(y_obs | mean_obs, cov_obs) per state; 0 when nothing is observed."""
    K = len(means)
    observed = ~np.isnan(y)
    if not observed.any():
        return np.zeros(K)
    return np.array(
        [
            stats.multivariate_normal(means[k][observed], covs[k][np.ix_(observed, observed)]).logpdf(y[observed])
            for k in range(K)
        ]
    )


def mixture_log_emission(y, weights, means, covs):
    """log sum_m w_km N(y_obs | component km); 0 when nothing is observed."""
    K, M = weights.shape
    observed = ~np.isnan(y)
    if not observed.any():
        return np.zeros(K)
    out = np.empty(K)
    for k in range(K):
        terms = [
            np.log(weights[k, m])
            + stats.multivariate_normal(means[k, m][observed], covs[k, m][np.ix_(observed, observed)]).logpdf(
                y[observed]
            )
            for m in range(M)
        ]
        out[k] = logsumexp(terms)
    return out


def poisson_log_emission(y, rates):
    observed = ~np.isnan(y)
    return np.array([stats.poisson(rates[k][observed]).logpmf(y[observed]).sum() for k in range(len(rates))])


def categorical_log_emission(y, probs):
    if np.isnan(y[0]):
        return np.zeros(len(probs))
    return np.log(probs[:, int(y[0])])


def check_against_brute_force(model, sequences, log_emission, pi, A):
    """score, predict_proba, decode and the E-step of ``model`` against enumeration."""
    refs = [brute_force(np.array([log_emission(y) for y in seq]), pi, A) for seq in sequences]
    expected = sum(ref[0] for ref in refs)
    np.testing.assert_allclose(model.score(sequences), expected, rtol=1e-10)
    np.testing.assert_allclose(model.expected_statistics(sequences)["log_likelihood"], expected, rtol=1e-10)
    proba = model.predict_proba(sequences)
    assert isinstance(proba, list) and len(proba) == len(sequences)
    for got, ref in zip(proba, refs):
        np.testing.assert_allclose(got, ref[1], rtol=0, atol=1e-10)
    log_prob, paths = model.decode(sequences)
    np.testing.assert_allclose(log_prob, sum(ref[2] for ref in refs), rtol=1e-10)
    for got, ref in zip(paths, refs):
        np.testing.assert_array_equal(got, ref[3])
    for seq, ref in zip(sequences, refs):  # one sequence at a time, as a bare array
        np.testing.assert_allclose(model.score(seq), ref[0], rtol=1e-10, atol=1e-12)
    return refs


def random_chain(rng, K):
    pi = rng.dirichlet(np.ones(K))
    A = rng.dirichlet(np.ones(K), size=K)
    return pi, A


def random_spd(rng, d, scale=1.0):
    a = rng.normal(size=(d, d))
    return scale * (a @ a.T / d + 0.5 * np.eye(d))


def punch_holes(rng, seq, fraction=0.3, all_missing_rows=()):
    seq = seq.astype(float).copy()
    seq[rng.random(seq.shape) < fraction] = np.nan
    for row in all_missing_rows:
        seq[row] = np.nan
    return seq


# ---------------------------------------------------------------------- Gaussian


@pytest.mark.parametrize("covariance", ["full", "diag", "spherical", "tied"])
def test_gaussian_missing_values_match_brute_force(covariance):
    rng = np.random.default_rng({"full": 0, "diag": 1, "spherical": 2, "tied": 3}[covariance])
    K, D = 3, 3
    pi, A = random_chain(rng, K)
    means = rng.normal(0.0, 2.0, size=(K, D))
    if covariance == "full":
        covs = np.stack([random_spd(rng, D) for _ in range(K)])
    elif covariance == "diag":
        covs = np.stack([np.diag(rng.uniform(0.3, 2.0, D)) for _ in range(K)])
    elif covariance == "spherical":
        covs = np.stack([rng.uniform(0.3, 2.0) * np.eye(D) for _ in range(K)])
    else:
        covs = np.broadcast_to(random_spd(rng, D), (K, D, D)).copy()
    model = HMM(K, covariance=covariance)
    model.startprob_, model.transmat_, model.means_, model.covars_ = pi, A, means, covs
    sequences = [
        punch_holes(rng, rng.normal(1.0, 2.0, size=(6, D)), all_missing_rows=(2,)),
        punch_holes(rng, rng.normal(1.0, 2.0, size=(5, D)), all_missing_rows=(0, 4)),
        punch_holes(rng, rng.normal(1.0, 2.0, size=(1, D)), fraction=0.0),
        np.full((3, D), np.nan),  # nothing observed at all
    ]
    assert np.isnan(sequences[0]).any(axis=1).sum() >= 2  # partially missing rows exist
    check_against_brute_force(model, sequences, lambda y: gaussian_log_emission(y, means, covs), pi, A)


def test_gaussian_partially_missing_rows_use_marginal_not_imputation():
    """One-step check that cannot be passed by filling NaN with the mean or zero."""
    means = np.array([[0.0, 0.0, 0.0], [3.0, -1.0, 2.0]])
    covs = np.array([[[1.0, 0.8, 0.3], [0.8, 2.0, 0.5], [0.3, 0.5, 1.5]], np.eye(3) * 0.5])
    model = HMM(2)
    model.startprob_ = [0.4, 0.6]
    model.transmat_ = [[0.5, 0.5], [0.5, 0.5]]
    model.means_ = means
    model.covars_ = covs
    y = np.array([[1.0, np.nan, -0.5]])
    expected = logsumexp(
        [
            np.log(0.4) + gaussian_log_emission(y[0], means, covs)[0],
            np.log(0.6) + gaussian_log_emission(y[0], means, covs)[1],
        ]
    )
    np.testing.assert_allclose(model.score(y), expected, rtol=1e-12)
    np.testing.assert_allclose(
        stats.multivariate_normal([0.0, 0.0], [[1.0, 0.3], [0.3, 1.5]]).logpdf([1.0, -0.5]),
        gaussian_log_emission(y[0], means, covs)[0],
        rtol=1e-12,
    )


# --------------------------------------------------------------- other emissions


def test_gmm_missing_values_match_brute_force():
    rng = np.random.default_rng(10)
    K, M, D = 2, 2, 3
    pi, A = random_chain(rng, K)
    weights = rng.dirichlet(np.ones(M), size=K)
    means = rng.normal(0.0, 2.0, size=(K, M, D))
    covs = np.stack([[random_spd(rng, D) for _ in range(M)] for _ in range(K)])
    model = HMM(K, emission="gmm", n_mix=M, covariance="full")
    model.startprob_, model.transmat_, model.weights_ = pi, A, weights
    model.means_ = means
    model.covars_ = covs
    sequences = [
        punch_holes(rng, rng.normal(0.0, 2.0, size=(6, D)), all_missing_rows=(3,)),
        punch_holes(rng, rng.normal(0.0, 2.0, size=(4, D)), fraction=0.4, all_missing_rows=(0,)),
    ]
    check_against_brute_force(model, sequences, lambda y: mixture_log_emission(y, weights, means, covs), pi, A)


def test_poisson_missing_values_match_brute_force():
    rng = np.random.default_rng(20)
    K, D = 3, 2
    pi, A = random_chain(rng, K)
    rates = rng.uniform(0.5, 8.0, size=(K, D))
    model = HMM(K, emission="poisson")
    model.startprob_, model.transmat_, model.lambdas_ = pi, A, rates
    sequences = [
        punch_holes(rng, rng.poisson(4.0, size=(6, D)), all_missing_rows=(1,)),
        punch_holes(rng, rng.poisson(4.0, size=(5, D)), fraction=0.4, all_missing_rows=(4,)),
        np.array([[np.nan, 3.0]]),
    ]
    check_against_brute_force(model, sequences, lambda y: poisson_log_emission(y, rates), pi, A)


def test_categorical_missing_steps_match_brute_force():
    rng = np.random.default_rng(30)
    K, S = 3, 4
    pi, A = random_chain(rng, K)
    probs = rng.dirichlet(np.ones(S), size=K)
    model = HMM(K, emission="categorical")
    model.startprob_, model.transmat_, model.emissionprob_ = pi, A, probs
    sequences = [
        np.array([0.0, np.nan, 3.0, 3.0, np.nan, 1.0]),
        np.array([np.nan, 2.0, 1.0, np.nan]),
        np.array([2.0]),
        np.array([np.nan, np.nan]),
    ]
    check_against_brute_force(
        model, [s[:, None] for s in sequences], lambda y: categorical_log_emission(y, probs), pi, A
    )
    # 1-D input is accepted as one column of symbols
    np.testing.assert_allclose(model.score(sequences), model.score([s[:, None] for s in sequences]), rtol=1e-14)


# ------------------------------------------------------- a wholly missing step


def _gaussian_model(rng, K=3, D=2):
    pi, A = random_chain(rng, K)
    model = HMM(K)
    model.startprob_, model.transmat_ = pi, A
    model.means_ = rng.normal(0.0, 2.0, size=(K, D))
    model.covars_ = np.stack([random_spd(rng, D) for _ in range(K)])
    return model, pi, A


def test_missing_step_posterior_is_the_prediction_from_its_neighbours():
    """p(z_t | y) for a wholly missing step t comes from z_{t-1} and z_{t+1} alone.

    Removing step t and joining its neighbours by the two-step matrix A @ A gives
    the same likelihood, and p(z_t = k | y) = sum_ij p(z_{t-1}=i, z_{t+1}=j | y)
    A_ik A_kj / (A @ A)_ij.
    """
    rng = np.random.default_rng(40)
    model, pi, A = _gaussian_model(rng)
    T, t = 8, 4
    y = rng.normal(0.0, 2.0, size=(T, 2))
    y[t] = np.nan
    proba = model.predict_proba(y)
    # the sequence without step t, under a time-varying chain with A @ A across the gap
    shortened = np.delete(y, t, axis=0)
    ll = np.array([gaussian_log_emission(row, model.means_, model.covars_) for row in shortened])
    matrices = np.broadcast_to(A, (T - 1, 3, 3)).copy()
    matrices[t] = A @ A  # transition into the step that followed the gap
    log_lik, post, pairs = kernels.forward_backward_varying(
        np.ascontiguousarray(ll), np.array([0, T - 1]), pi, matrices
    )
    np.testing.assert_allclose(model.score(y), log_lik[0], rtol=1e-12)
    np.testing.assert_allclose(np.delete(proba, t, axis=0), post, atol=1e-12)
    xi = pairs[t]  # p(z_{t-1} = i, z_{t+1} = j | y)
    two_step = A @ A
    expected = np.einsum("ij,ik,kj->k", xi / two_step, A, A)
    np.testing.assert_allclose(proba[t], expected, atol=1e-12)


def test_missing_first_and_last_steps_are_predictions():
    rng = np.random.default_rng(41)
    model, pi, A = _gaussian_model(rng)
    y = rng.normal(0.0, 2.0, size=(6, 2))
    y[0] = np.nan
    y[-1] = np.nan
    proba = model.predict_proba(y)
    # last step: one-step prediction from the previous posterior
    np.testing.assert_allclose(proba[-1], proba[-2] @ A, atol=1e-12)
    # first step: prior times backward message, p(z0=k|y) = sum_j p(z1=j|y) pi_k A_kj / (pi A)_j
    np.testing.assert_allclose(proba[0], (pi[:, None] * A / (pi @ A)[None, :]) @ proba[1], atol=1e-12)


def test_all_missing_sequence_has_no_evidence():
    rng = np.random.default_rng(42)
    model, pi, A = _gaussian_model(rng)
    y = np.full((5, 2), np.nan)
    assert model.score(y) == pytest.approx(0.0, abs=1e-12)
    proba = model.predict_proba(y)
    expected = np.array([pi @ np.linalg.matrix_power(A, t) for t in range(5)])
    np.testing.assert_allclose(proba, expected, atol=1e-12)
    # the same for every emission type
    poisson = HMM(3, emission="poisson")
    poisson.startprob_, poisson.transmat_, poisson.lambdas_ = pi, A, [[1.0], [2.0], [3.0]]
    assert poisson.score(np.full((5, 1), np.nan)) == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(poisson.predict_proba(np.full((5, 1), np.nan)), expected, atol=1e-12)
    categorical = HMM(3, emission="categorical")
    categorical.startprob_, categorical.transmat_ = pi, A
    categorical.emissionprob_ = rng.dirichlet(np.ones(4), size=3)
    assert categorical.score(np.full(5, np.nan)) == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(categorical.predict_proba(np.full(5, np.nan)), expected, atol=1e-12)


def test_gmm_all_missing_step_is_neutral():
    rng = np.random.default_rng(43)
    model = HMM(2, emission="gmm", n_mix=3, covariance="diag")
    model.startprob_ = [0.3, 0.7]
    model.transmat_ = [[0.6, 0.4], [0.2, 0.8]]
    model.weights_ = rng.dirichlet(np.ones(3), size=2)
    model.means_ = rng.normal(size=(2, 3, 2))
    model.covars_ = np.stack([[np.diag(rng.uniform(0.5, 2.0, 2)) for _ in range(3)] for _ in range(2)])
    y = rng.normal(size=(4, 2))
    with_gap = np.insert(y, 4, np.nan, axis=0)  # an extra missing step at the end
    np.testing.assert_allclose(model.score(with_gap), model.score(y), rtol=1e-12)


# ------------------------------------------------------------------ EM with NaN


@pytest.mark.parametrize("emission", ["gaussian", "poisson", "categorical", "gmm"])
def test_em_with_missing_values_is_monotone(emission):
    """Exact E-steps with NaN: the penalised objective never decreases."""
    rng = np.random.default_rng(50)
    states = (np.arange(300) // 30) % 2
    if emission in ("gaussian", "gmm"):
        X = rng.normal(0.0, 1.0, size=(300, 3)) + 3.0 * states[:, None]
        X[:, 1] += 0.8 * X[:, 0]
    elif emission == "poisson":
        X = rng.poisson(np.where(states[:, None] == 1, 6.0, 1.5), size=(300, 2)).astype(float)
    else:
        X = np.where(states == 1, rng.integers(0, 2, 300), rng.integers(2, 4, 300)).astype(float)[:, None]
    X[rng.random(X.shape) < 0.2] = np.nan
    X[::17] = np.nan
    model = HMM(2, emission=emission, n_mix=2, n_iter=30, tol=0.0, random_state=1).fit(X, lengths=[120, 180])
    history = np.array(model.log_likelihood_history_)
    assert np.isfinite(history).all() and len(history) >= 5
    assert (np.diff(history) >= -1e-8 * np.abs(history[1:])).all(), np.diff(history).min()
    assert np.isfinite(model.score(X, lengths=[120, 180]))
