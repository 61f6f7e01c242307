"""Input-driven transitions: p(z_t = j | z_t-1 = i, u_t) a multinomial logit in u_t, with slopes shared by
every source (softmax_j(r_ij + w_j . u_t)) or per (source, destination) (statsmodels' exog_tvtp form)."""

from __future__ import annotations

import copy
import functools
import itertools
import warnings

import numpy as np
import pytest
from scipy import optimize, stats
from scipy.special import log_softmax, softmax

from modeshift import ARHMM, HMM, load
from modeshift import transitions_logit as logit
from modeshift.models import em
from modeshift.models.em import ConvergenceWarning
from modeshift.statistics import Statistics, combine
from modeshift.transitions import InputDriven


def _model(rng, K=2, m=1):
    model = HMM(n_states=K, input_dim=m)
    model.startprob_ = rng.dirichlet(np.ones(K))
    model.recurrence_biases_ = rng.normal(size=(K, K))
    model.input_weights_ = rng.normal(size=(K, m))
    model.means_ = rng.normal(scale=2.0, size=(K, 1))
    model.covars_ = np.ones((K, 1, 1))
    return model


def _brute_force(model, y, u):
    T, K = len(y), model.n_states
    logits = model.recurrence_biases_[None] + (u @ model.input_weights_.T)[:, None, :]
    log_A = log_softmax(logits, axis=2)
    emission = np.array([[stats.norm(model.means_[k, 0], 1.0).logpdf(v[0]) for k in range(K)] for v in y])
    joint = {}
    for path in itertools.product(range(K), repeat=T):
        joint[path] = np.log(model.startprob_[path[0]]) + sum(emission[t, path[t]] for t in range(T))
        joint[path] += sum(log_A[t, path[t - 1], path[t]] for t in range(1, T))
    total = np.logaddexp.reduce(list(joint.values()))
    posteriors = np.zeros((T, K))
    for path, value in joint.items():
        posteriors[np.arange(T), path] += np.exp(value - total)
    best = max(joint, key=joint.get)
    return total, posteriors, np.array(best), joint[best]


def test_matches_brute_force():
    rng = np.random.default_rng(0)
    model = _model(rng, K=3, m=2)
    ys = [rng.normal(size=(T, 1)) for T in (5, 1, 4)]
    us = [rng.normal(size=(T, 2)) for T in (5, 1, 4)]
    references = [_brute_force(model, y, u) for y, u in zip(ys, us)]
    assert model.score(ys, inputs=us) == pytest.approx(sum(r[0] for r in references), rel=1e-10)
    for got, reference in zip(model.predict_proba(ys, inputs=us), references):
        np.testing.assert_allclose(got, reference[1], atol=1e-10)
    log_prob, paths = model.decode(ys, inputs=us)
    assert log_prob == pytest.approx(sum(r[3] for r in references), rel=1e-10)
    for got, reference in zip(paths, references):
        np.testing.assert_array_equal(got, reference[2])


def test_zero_weights_are_a_stationary_chain():
    rng = np.random.default_rng(1)
    driven = _model(rng)
    driven.input_weights_ = np.zeros((2, 1))
    plain = HMM(n_states=2)
    plain.startprob_, plain.transmat_ = driven.startprob_, softmax(driven.recurrence_biases_, axis=1)
    plain.means_, plain.covars_ = driven.means_, driven.covars_
    X = rng.normal(size=(50, 1))
    assert driven.score(X, inputs=rng.normal(size=(50, 1))) == pytest.approx(plain.score(X), rel=1e-12)


@pytest.mark.parametrize("fixed", [frozenset(), frozenset({"weights"}), frozenset({"biases"})])
def test_m_step_is_the_penalised_logistic_regression_optimum(fixed):
    """With the pair posteriors held fixed, the M-step (Newton) maximises the penalised expected
    log-likelihood over the free parameters, the others kept: it lands where a tight general
    optimiser of the written-out objective does, at least as high, and a second M-step stays put."""
    rng = np.random.default_rng(2)
    K, F, T = 3, 2, 400
    features = rng.normal(size=(T, F))
    pairs = rng.dirichlet(np.ones(K * K), size=T).reshape(T, K, K)
    block = InputDriven(K, F, penalty=0.1)
    block.initialize(rng)
    block.weights = rng.normal(size=(K, F))
    stats = block.statistics(np.full((T, K), 1 / K), np.array([0]), pairs, features)
    start = np.r_[block.biases.ravel(), block.weights.ravel()]
    free = np.r_[np.full(K * K, "biases" not in fixed), np.full(K * F, "weights" not in fixed)]
    rows, lam = slice(1, None), block.penalty

    def negative(values):  # and its gradient, written out: d log p_t[i, j] / d eta_t[i, m] = 1[j = m] - p_t[i, m]
        theta = start.copy()
        theta[free] = values
        biases, weights = theta[: K * K].reshape(K, K), theta[K * K :].reshape(K, F)
        log_p = log_softmax(biases[None] + (features[rows] @ weights.T)[:, None, :], axis=2)
        residuals = pairs[rows] - pairs[rows].sum(axis=2, keepdims=True) * np.exp(log_p)
        gradient = np.r_[residuals.sum(axis=0).ravel(), (residuals.sum(axis=1).T @ features[rows]).ravel()]
        return -np.sum(pairs[rows] * log_p) + 0.5 * lam * theta @ theta, (lam * theta - gradient)[free]

    block.m_step(stats, fixed=fixed)
    ours = np.r_[block.biases.ravel(), block.weights.ravel()]
    np.testing.assert_array_equal(ours[~free], start[~free])
    reference = optimize.minimize(negative, start[free], jac=True, method="BFGS", options={"gtol": 1e-9})
    assert negative(ours[free])[0] <= reference.fun + 1e-10
    np.testing.assert_allclose(ours[free], reference.x, atol=1e-8)
    block.m_step(stats, fixed=fixed)
    np.testing.assert_allclose(np.r_[block.biases.ravel(), block.weights.ravel()], ours, rtol=1e-12, atol=1e-12)


def test_the_shared_m_step_reads_the_rows_a_few_times():
    """Newton's method: each point costs one pass over the rows (its value, gradient and Hessian),
    a handful from a cold start, one or two from the optimum (on a cluster, each pass is a round
    trip to every shard)."""
    rng = np.random.default_rng(6)
    K, F, T = 4, 3, 2000
    features, pairs = rng.normal(size=(T, F)), rng.dirichlet(np.ones(K * K), size=T).reshape(T, K, K)
    passes = []

    def rows(function):
        passes.append(function)
        return function(pairs, np.c_[np.ones(T), features])

    biases, weights = logit.fit_shared(rows, np.zeros((K, K)), np.zeros((K, F)), 0.1)
    assert len(passes) <= 6
    passes.clear()
    again = logit.fit_shared(rows, biases, weights, 0.1)
    assert len(passes) <= 2
    np.testing.assert_allclose(
        np.r_[again[0].ravel(), again[1].ravel()], np.r_[biases.ravel(), weights.ravel()], atol=1e-12
    )


def test_statistics_of_shards_add_up():
    rng = np.random.default_rng(3)
    K, F, T = 2, 1, 100
    block = InputDriven(K, F)
    block.initialize(rng)
    features, pairs = rng.normal(size=(T, F)), rng.dirichlet(np.ones(4), size=T).reshape(T, 2, 2)
    posteriors = rng.dirichlet(np.ones(2), size=T)
    whole = block.statistics(posteriors, np.array([0, 60]), pairs, features)
    parts = block.statistics(posteriors[:60], np.array([0]), pairs[:60], features[:60]) + block.statistics(
        posteriors[60:], np.array([0]), pairs[60:], features[60:]
    )
    assert isinstance(parts, Statistics)
    np.testing.assert_allclose(parts["initial"], whole["initial"], atol=1e-12)
    for key in ("pairs", "features"):
        np.testing.assert_array_equal(parts[key].array, whole[key].array)


def _simulated(seed, T=3000):
    """Two regimes; a positive input pushes into regime 1, a negative one into regime 0."""
    rng = np.random.default_rng(seed)
    truth = _model(rng)
    truth.startprob_ = np.array([0.5, 0.5])
    truth.recurrence_biases_ = np.array([[2.0, -2.0], [-2.0, 2.0]])
    truth.input_weights_ = np.array([[-1.5], [1.5]])
    truth.means_ = np.array([[-2.0], [2.0]])
    u = np.sin(np.arange(T) / 40.0)[:, None] * 3 + rng.normal(scale=0.3, size=(T, 1))
    X, modes = truth.sample(T, random_state=rng, inputs=u)
    return truth, X, u, modes


def test_em_is_monotone_and_recovers_the_input_effect():
    truth, X, u, modes = _simulated(4)
    model = HMM(n_states=2, input_dim=1, n_iter=200, tol=1e-8, random_state=0).fit(X, inputs=u)
    history = np.array(model.log_likelihood_history_)
    assert np.all(np.diff(history) >= -1e-8 * np.abs(history[1:]))
    order = np.argsort(model.means_[:, 0])
    effect = model.input_weights_[order[1], 0] - model.input_weights_[order[0], 0]
    assert effect == pytest.approx(3.0, abs=1.0)  # few switches in 3000 steps: the estimate is noisy
    assert model.score(X, inputs=u) >= truth.score(X, inputs=u)
    stationary = HMM(n_states=2, random_state=0).fit(X)
    assert model.score(X, inputs=u) > stationary.score(X) + 20


def test_arhmm_with_inputs_round_trips(tmp_path):
    truth, X, u, _ = _simulated(5, 800)
    model = ARHMM(n_states=2, input_dim=1, n_iter=10, random_state=0).fit(X, inputs=u)
    model.save(tmp_path / "m.zip")
    loaded = load(tmp_path / "m.zip")
    assert loaded.score(X, inputs=u) == model.score(X, inputs=u)
    assert loaded.describe().shape[0] == 2
    path = loaded.segment(X, inputs=u)
    assert path["end"].iloc[-1] == len(X)


def test_input_errors_are_clear():
    rng = np.random.default_rng(6)
    model = _model(rng)
    X = rng.normal(size=(20, 1))
    with pytest.raises(ValueError, match="input_dim=1: pass inputs"):
        model.score(X)
    with pytest.raises(ValueError, match="1 column"):
        model.score(X, inputs=np.zeros((20, 2)))
    bad = np.zeros((20, 1))
    bad[7] = np.nan
    with pytest.raises(ValueError, match="sequence 0, time step 7: non-finite input"):
        model.score(X, inputs=bad)
    with pytest.raises(ValueError, match="inputs"):
        model.sample(10)
    with pytest.raises(ValueError, match="input_dim=0"):
        HMM(2).fit(X, inputs=np.zeros((20, 1)))


# ------------------------------------------------------------ per-source slopes
def _per_source_model(rng, K=3, m=2, model=HMM):
    model = model(n_states=K, input_dim=m, input_slopes="per_source")
    model.startprob_ = rng.dirichlet(np.ones(K))
    model.transition_coef_ = rng.normal(size=(K, K - 1, 1 + m))
    return model


def _per_source_log_matrices(coef, u):
    """log p(z_t = j | z_t-1 = i, u_t), written out: exp(B[i, j] . (1, u_t)) over the sum, B[i, K-1] = 0."""
    K, T = len(coef), len(u)
    out = np.empty((T, K, K))
    for t, i in itertools.product(range(T), range(K)):
        scores = np.r_[[coef[i, j] @ np.r_[1.0, u[t]] for j in range(K - 1)], 0.0]
        out[t, i] = scores - np.log(np.exp(scores).sum())
    return out


def test_per_source_matches_brute_force():
    """Every path enumerated, with the move into step t driven by u_t: log-likelihood, smoothed
    probabilities and the Viterbi path."""
    rng = np.random.default_rng(10)
    model = _per_source_model(rng)
    model.means_, model.covars_ = rng.normal(scale=2.0, size=(3, 1)), np.ones((3, 1, 1))
    ys = [rng.normal(size=(T, 1)) for T in (5, 1, 4)]
    us = [rng.normal(size=(T, 2)) for T in (5, 1, 4)]
    references = []
    for y, u in zip(ys, us):
        log_A = _per_source_log_matrices(model.transition_coef_, u)
        emission = stats.norm(model.means_[:, 0], 1.0).logpdf(y)
        joint = {
            path: np.log(model.startprob_[path[0]])
            + sum(emission[t, path[t]] for t in range(len(y)))
            + sum(log_A[t, path[t - 1], path[t]] for t in range(1, len(y)))
            for path in itertools.product(range(3), repeat=len(y))
        }
        total = np.logaddexp.reduce(list(joint.values()))
        posteriors = np.zeros((len(y), 3))
        for path, value in joint.items():
            posteriors[np.arange(len(y)), path] += np.exp(value - total)
        best = max(joint, key=joint.get)
        references.append((total, posteriors, np.array(best), joint[best]))
    assert model.score(ys, inputs=us) == pytest.approx(sum(r[0] for r in references), rel=1e-12)
    for got, reference in zip(model.predict_proba(ys, inputs=us), references):
        np.testing.assert_allclose(got, reference[1], atol=1e-12)
    log_prob, paths = model.decode(ys, inputs=us)
    assert log_prob == pytest.approx(sum(r[3] for r in references), rel=1e-12)
    for got, reference in zip(paths, references):
        np.testing.assert_array_equal(got, reference[2])


def test_per_source_block_pieces():
    """The per-source logits, Q and gradient against their written-out forms; the shared form's logits,
    gradient and Hessian through the per-source ones (:func:`~modeshift.transitions_logit.shared_map`)."""
    rng = np.random.default_rng(11)
    K, F, T = 3, 2, 30
    u, pairs = rng.normal(size=(T, F)), rng.dirichlet(np.ones(K * K), size=T).reshape(T, K, K)
    x = np.c_[np.ones(T), u]
    coef = rng.normal(size=(K, K - 1, 1 + F))
    log_A = _per_source_log_matrices(coef, u)
    np.testing.assert_allclose(np.log(logit.per_source_matrices(coef, x)), log_A, atol=1e-12)

    def q(values):
        return np.sum(pairs * _per_source_log_matrices(values.reshape(coef.shape), u))

    assert logit.expected_log_probability(pairs, log_A) == pytest.approx(q(coef), rel=1e-12)
    gradient = logit.per_source_gradient(pairs, np.exp(log_A), x)
    np.testing.assert_allclose(gradient.ravel(), optimize.approx_fprime(coef.ravel(), q, 1e-7), atol=1e-4)

    biases, weights = rng.normal(size=(K, K)), rng.normal(size=(K, F))
    theta = np.r_[biases.ravel(), weights.ravel()]
    a = logit.shared_map(K, F)
    shared = logit.shared_logits(biases, weights, u)
    per_source = logit.per_source_logits((a @ theta).reshape(coef.shape), x)
    np.testing.assert_allclose(log_softmax(per_source, axis=2), log_softmax(shared, axis=2), atol=1e-12)

    def q_shared(values):
        logits = logit.shared_logits(values[: K * K].reshape(K, K), values[K * K :].reshape(K, F), u)
        return np.sum(pairs * log_softmax(logits, axis=2))

    def terms(values):  # per source, mapped by A to theta's: the gradient and (minus) the Hessian
        logits = logit.shared_logits(values[: K * K].reshape(K, K), values[K * K :].reshape(K, F), u)
        gradient, curvature = logit.newton_terms(pairs, softmax(logits, axis=2), x)
        return np.einsum("isp,is->p", a, gradient), np.einsum("isp,ist,itq->pq", a, curvature, a)

    gradient, curvature = terms(theta)
    np.testing.assert_allclose(gradient, optimize.approx_fprime(theta, q_shared, 1e-7), atol=1e-4)
    np.testing.assert_allclose(-curvature, optimize.approx_fprime(theta, lambda v: terms(v)[0], 1e-7), atol=1e-4)


@pytest.mark.parametrize("penalty", [0.0, 0.5])
def test_per_source_m_step_maximises_q(penalty):
    """From any start the M-step raises Q - penalty/2 |B|^2 and lands where a general optimiser
    on the written-out objective does; a second M-step stays put."""
    rng = np.random.default_rng(12)
    K, F, T = 3, 2, 300
    u = rng.normal(size=(T, F))
    pairs = rng.dirichlet(np.ones(K * K), size=T).reshape(T, K, K)
    block = InputDriven(K, F, penalty=penalty, per_source=True)
    block.initialize(rng)
    block.coef = rng.normal(size=block.coef.shape)
    stats = block.statistics(np.full((T, K), 1 / K), np.array([0]), pairs, u)

    x = np.c_[np.ones(T - 1), u[1:]]

    def penalised(values):  # source by source: a softmax over (x . B[i, 0], ..., x . B[i, K-2], 0)
        total = 0.0
        for i, rows in enumerate(values.reshape(K, K - 1, 1 + F)):
            total += np.sum(pairs[1:, i] * log_softmax(np.c_[x @ rows.T, np.zeros(T - 1)], axis=1))
        return total - 0.5 * penalty * values @ values

    before = penalised(block.coef.ravel())
    block.m_step(stats)
    after = penalised(block.coef.ravel())
    assert after > before
    reference = optimize.minimize(lambda v: -penalised(v), block.coef.ravel() * 0, method="BFGS")
    assert after >= -reference.fun - 1e-8
    np.testing.assert_allclose(block.coef.ravel(), reference.x, atol=1e-4)
    kept = block.coef.copy()
    block.m_step(stats)
    np.testing.assert_allclose(block.coef, kept, atol=1e-10)
    assert block.log_prior() == pytest.approx(-0.5 * penalty * np.sum(kept**2))


def _simulated_per_source(seed, T=4000):
    """Two regimes whose stickiness the input drives from both sides: a positive input holds
    regime 0 and regime 1 alike (the slope of 'move to 0' is +2 from 0, -2 from 1), which
    one slope per destination cannot express."""
    truth = HMM(n_states=2, input_dim=1, input_slopes="per_source")
    truth.startprob_ = np.array([0.5, 0.5])
    truth.transition_coef_ = np.array([[[2.0, 2.0]], [[-2.0, -2.0]]])
    truth.means_, truth.covars_ = np.array([[-2.0], [2.0]]), np.ones((2, 1, 1))
    rng = np.random.default_rng(seed)
    u = np.sin(np.arange(T) / 30.0)[:, None] * 1.5 + rng.normal(scale=0.3, size=(T, 1))
    X, modes = truth.sample(T, random_state=rng, inputs=u)
    return truth, X, u, modes


def test_per_source_em_is_monotone_and_recovers_the_slopes():
    truth, X, u, _ = _simulated_per_source(13)
    model = HMM(n_states=2, input_dim=1, input_slopes="per_source", n_iter=200, tol=1e-8, random_state=0)
    model.fit(X, inputs=u)
    history = np.array(model.history_)
    assert model.converged_ and np.all(np.diff(history) >= -1e-9 * np.abs(history[1:]))
    coef = model.transition_coef_
    if model.means_[0, 0] > model.means_[1, 0]:  # relabel: swapping two modes swaps the sources and flips the log-odds
        coef = -coef[::-1]
    np.testing.assert_allclose(coef, truth.transition_coef_, atol=0.3)
    assert model.score(X, inputs=u) >= truth.score(X, inputs=u)
    shared = HMM(n_states=2, input_dim=1, n_iter=200, tol=1e-8, random_state=0).fit(X, inputs=u)
    assert model.score(X, inputs=u) > shared.score(X, inputs=u) + 200


def test_per_source_equals_markov_switching_tvtp():
    """A Gaussian HMM with per-source input-driven transitions is statsmodels' MarkovRegression with
    switching mean and variance and exog_tvtp = (1, u) (and ours), at the same parameters: the same
    transition_coef_, and the start at the stationary law of the first step's matrix (Markov
    switching's start; the first input moves nothing in either)."""
    sm = pytest.importorskip("statsmodels.api")
    from modeshift import MarkovRegression
    from modeshift.chain_analysis import stationary_distribution

    rng = np.random.default_rng(14)
    T = 300
    u = rng.normal(size=(T, 1))
    z = np.c_[np.ones(T), u]
    coef = np.array([[[2.0, 1.0]], [[-1.5, 0.8]]])  # (source, destination, covariate)
    means, variances = np.array([-1.0, 1.5]), np.array([0.8, 1.3])
    modes = [0]
    matrices = logit.per_source_matrices(coef, z)
    for t in range(1, T):
        modes.append(int(rng.random() > matrices[t, modes[-1], 0]))
    y = means[modes] + np.sqrt(variances[modes]) * rng.normal(size=T)

    sm_model = sm.tsa.MarkovRegression(y, k_regimes=2, switching_variance=True, exog_tvtp=z)
    values = {"const[0]": means[0], "const[1]": means[1], "sigma2[0]": variances[0], "sigma2[1]": variances[1]}
    values.update({f"p[{i}->0].tvtp{c}": coef[i, 0, c] for i in range(2) for c in range(2)})
    params = np.array([values[name] for name in sm_model.param_names])
    result = sm_model.smooth(params)

    hmm = HMM(n_states=2, input_dim=1, input_slopes="per_source")
    hmm.transition_coef_, hmm.startprob_ = coef, stationary_distribution(matrices[0])
    hmm.means_, hmm.covars_ = means[:, None], variances[:, None, None]
    assert hmm.score(y[:, None], inputs=u) == pytest.approx(result.llf, abs=1e-10)
    np.testing.assert_allclose(
        hmm.filter_proba(y[:, None], inputs=u), result.filtered_marginal_probabilities, atol=1e-10
    )
    np.testing.assert_allclose(
        hmm.predict_proba(y[:, None], inputs=u), result.smoothed_marginal_probabilities, atol=1e-10
    )

    ours = MarkovRegression(n_states=2, switching_variance=True)
    ours.transition_coef_, ours.trend_, ours.variances_ = coef, means[:, None], variances
    ours.exog_coef_ = np.empty((2, 0))
    assert ours.score(y, exog_tvtp=z) == pytest.approx(hmm.score(y[:, None], inputs=u), abs=1e-10)
    np.testing.assert_allclose(ours.predict_proba(y, exog_tvtp=z), hmm.predict_proba(y[:, None], inputs=u), atol=1e-10)


def test_arhmm_per_source_round_trips(tmp_path):
    _, X, u, _ = _simulated_per_source(15, 600)
    model = ARHMM(n_states=2, input_dim=1, input_slopes="per_source", n_iter=50, random_state=0).fit(X, inputs=u)
    assert model.converged_ and model.transition_coef_.shape == (2, 1, 2)
    assert np.all(np.diff(model.history_) >= -1e-8)
    assert model.n_parameters == 1 + 2 * 2 + 2 * (1 + 1 + 1)  # start, logit coefficients, AR(1) + intercept + variance
    model.save(tmp_path / "m.zip")
    loaded = load(tmp_path / "m.zip")
    assert loaded.score(X, inputs=u) == model.score(X, inputs=u)
    assert {"to_0_at_zero_input", "to_0.input0"} <= set(loaded.describe().columns)


def test_per_source_errors_are_clear():
    X, u = np.zeros((20, 1)), np.zeros((20, 1))
    with pytest.raises(ValueError, match="input_slopes"):
        HMM(2, input_dim=1, input_slopes="per_target").fit(X, inputs=u)
    with pytest.raises(ValueError, match="penalty > 0"):
        HMM(2, input_dim=1, transition_penalty=0.0).fit(X, inputs=u)
    model = HMM(2, input_dim=1, input_slopes="per_source")
    with pytest.raises(ValueError, match=r"transition_coef_.*\(2, 1, 2\)"):
        model.transition_coef_ = np.zeros((2, 2, 1))
    with pytest.raises(AttributeError):
        model.input_weights_  # noqa: B018  (the per-source form has no shared slopes)


class _Forgetful:
    """Shards of whole sequences held in this process, each with its own workspace (as
    ``modeshift.distributed.Shards``), whose kept rows are lost before every read of them (as with a
    worker lost between the E-step and the M-step), so each read computes them again."""

    def __init__(self, shards):
        self.shards, self.reads = shards, 0

    def __call__(self, function, model, workspace=None):
        if workspace is None:
            terms = [function(copy.deepcopy(model), shard) for shard in self.shards]
        else:
            states = workspace.setdefault("shards", [{} for _ in self.shards])
            if getattr(function, "func", None) is em._kept_terms:
                self.reads += 1
                for state in states:
                    state.pop("kept_rows", None)
            terms = [function(copy.deepcopy(model), shard, state) for shard, state in zip(self.shards, states)]
        return functools.reduce(combine, terms)


@pytest.mark.parametrize("slopes", ["shared", "per_source"])
def test_a_fit_over_shards_reads_sums_over_the_rows_kept_there_and_equals_the_fit_in_memory(slopes):
    """The logit M-step reads sums of functions of each shard's rows (kept there, computed again
    when lost): the same fit as with the rows in hand, to round-off."""
    rng = np.random.default_rng(3)
    model = _model(rng, K=2, m=1)
    us = [rng.normal(size=(60 + 10 * s, 1)) for s in range(4)]
    ys = [model.sample(len(u), random_state=s, inputs=u)[0] for s, u in enumerate(us)]
    start = HMM(2, input_dim=1, input_slopes=slopes, n_iter=0, random_state=0).fit(ys, inputs=us)
    start.set_params(n_iter=5, tol=0.0, warm_start=True)
    here = copy.deepcopy(start)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        here.fit(ys, inputs=us)
        there = copy.deepcopy(start)
        there._start_fit()
        shards = _Forgetful([there._em_data(ys[:2], inputs=us[:2]), there._em_data(ys[2:], inputs=us[2:])])
        there._fit_em(there._em_data(ys, inputs=us), over=shards)
    assert shards.reads >= there.n_iter_  # the M-step read the rows where they were kept
    np.testing.assert_allclose(here.history_, there.history_, rtol=1e-10)
    for name in here.parameter_names:
        np.testing.assert_allclose(getattr(here, name), getattr(there, name), rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("input_dim", [0, 1])
def test_an_e_step_over_shards_binds_kept_rows_only_when_there_are_some(input_dim, monkeypatch):
    """Over shards, a model that keeps rows there has the E-step copy its parameters (those the
    rows are of, for reading them again) only when its statistics hold kept rows: a chain without
    inputs pays no copy per E-step."""
    copies = []
    original = em._copy
    monkeypatch.setattr(em, "_copy", lambda model: copies.append(model) or original(model))
    monkeypatch.setattr(HMM, "keeps_rows", property(lambda self: True))
    rng = np.random.default_rng(5)
    ys = [rng.normal(size=(40 + 5 * s, 1)) for s in range(4)]
    us = [rng.normal(size=(len(y), input_dim)) for y in ys] if input_dim else None
    model = HMM(2, input_dim=input_dim, n_iter=3, tol=-np.inf, random_state=0)
    model._start_fit()
    shards = _Forgetful([model._em_data(ys[:2], inputs=us and us[:2]), model._em_data(ys[2:], inputs=us and us[2:])])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model._fit_em(model._em_data(ys, inputs=us), over=shards)
    assert len(copies) == (model.n_iter_ if input_dim else 0)
