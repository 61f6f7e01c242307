"""Input-driven transitions: p(z_t = j | z_t-1 = i, u_t) = softmax_j(r_ij + w_j . u_t)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import optimize, stats
from scipy.special import log_softmax, softmax

from modeshift import ARHMM, HMM, load
from modeshift.statistics import Statistics
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


def test_m_step_is_the_penalised_logistic_regression_optimum():
    """With the pair posteriors held fixed, the M-step maximises the penalised expected
    log-likelihood: a second M-step moves nothing and the gradient vanishes."""
    rng = np.random.default_rng(2)
    K, F, T = 3, 2, 400
    features = rng.normal(size=(T, F))
    pairs = rng.dirichlet(np.ones(K * K), size=T).reshape(T, K, K)
    block = InputDriven(K, F, penalty=0.1)
    block.initialize(rng)
    stats = block.statistics(np.full((T, K), 1 / K), np.array([0]), pairs, features)
    block.m_step(stats)
    ours = np.r_[block.biases.ravel(), block.weights.ravel()]
    rows, lam = slice(1, None), block.penalty

    def negative(theta):
        biases, weights = theta[: K * K].reshape(K, K), theta[K * K :].reshape(K, F)
        log_p = log_softmax(biases[None] + (features[rows] @ weights.T)[:, None, :], axis=2)
        return -np.sum(pairs[rows] * log_p) + 0.5 * lam * theta @ theta

    assert np.abs(optimize.approx_fprime(ours, negative, 1e-7)).max() < 1e-3
    block.m_step(stats)
    np.testing.assert_allclose(np.r_[block.biases.ravel(), block.weights.ravel()], ours, atol=1e-4)


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
