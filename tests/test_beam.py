"""The beam search over mode paths (a bank of Kalman filters) against enumeration of every path."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats

from modeshift import SwitchingLDS
from modeshift.models import slds_inference as inference


def _model(rng, K=2, n=2, p=1, resets="destination"):
    model = SwitchingLDS(n_states=K, state_dim=n, resets=resets)
    model.startprob_ = rng.dirichlet(np.ones(K))
    model.transmat_ = rng.dirichlet(np.ones(K), size=K)
    model.dynamics_matrices_ = 0.6 * rng.normal(size=(K, n, n))
    model.dynamics_input_matrices_ = np.zeros((K, n, 0))
    model.dynamics_offsets_ = rng.normal(size=(K, n))
    w = 0.5 * rng.normal(size=(K, n, n))
    model.dynamics_covariances_ = w @ np.swapaxes(w, 1, 2) + 0.05 * np.eye(n)
    model.observation_matrix_ = rng.normal(size=(p, n))
    model.feedthrough_matrix_ = np.zeros((p, 0))
    model.observation_offset_ = rng.normal(size=p)
    model.observation_covariance_ = 0.1 * np.eye(p)
    model.initial_state_mean_ = rng.normal(size=n)
    model.initial_state_covariance_ = np.eye(n)
    if resets:
        R = K if resets == "destination" else K * (K - 1)
        model.reset_matrices_ = rng.normal(size=(R, n, n))
        model.reset_input_matrices_ = np.zeros((R, n, 0))
        model.reset_offsets_ = rng.normal(size=(R, n))
        w = 0.5 * rng.normal(size=(R, n, n))
        model.reset_covariances_ = w @ np.swapaxes(w, 1, 2) + 0.05 * np.eye(n)
    return model


def _log_joint(model, y, path):
    """log p(y, z) along ``path``, the observations' joint Gaussian written densely: the mean of x_t
    by its recursion, Cov(x_t, x_s) = A Cov(x_t-1, x_s) (+ Q at s = t), then y = C x + d + noise."""
    K, T, n = model.n_states, len(y), model.state_dim
    A, b, Q = model.dynamics_matrices_, model.dynamics_offsets_, model.dynamics_covariances_
    if model.resets:
        index = model._parameters().resets.index
        A = np.concatenate([A, model.reset_matrices_])
        b = np.concatenate([b, model.reset_offsets_])
        Q = np.concatenate([Q, model.reset_covariances_])
    mean = [model.initial_state_mean_]
    for t in range(1, T):
        i, j = path[t - 1], path[t]
        law = j if i == j or not model.resets else K + index[i, j]
        mean.append(A[law] @ mean[-1] + b[law])
    full = np.zeros((T * n, T * n))
    full[:n, :n] = model.initial_state_covariance_
    for t in range(1, T):
        i, j = path[t - 1], path[t]
        law = j if i == j or not model.resets else K + index[i, j]
        rows, previous = slice(t * n, (t + 1) * n), slice((t - 1) * n, t * n)
        full[rows, : t * n] = A[law] @ full[previous, : t * n]
        full[: t * n, rows] = full[rows, : t * n].T
        full[rows, rows] = A[law] @ full[previous, previous] @ A[law].T + Q[law]
    C, d, R = model.observation_matrix_, model.observation_offset_, model.observation_covariance_
    big_C = np.kron(np.eye(T), C)
    y_mean = big_C @ np.concatenate(mean) + np.tile(d, T)
    y_cov = big_C @ full @ big_C.T + np.kron(np.eye(T), R)
    log_p = np.log(model.startprob_[path[0]]) + sum(np.log(model.transmat_[i, j]) for i, j in zip(path, path[1:]))
    return log_p + stats.multivariate_normal(y_mean, y_cov).logpdf(y.ravel())


@pytest.mark.parametrize("resets", ["destination", "pair", None])
def test_a_beam_wide_enough_finds_the_most_likely_path_of_all(resets):
    """T = 8, K = 2: with a beam of 2^T paths and no merging nothing is pruned, so the path returned is
    the argmax over all 256 paths of log p(y, z) (each computed densely), and its value is that maximum."""
    rng = np.random.default_rng(1 if resets else 2)
    model = _model(rng, resets=resets)
    y, _ = model.sample(8, random_state=3)
    seqs = model._sequences(y, None, None)
    values = {path: _log_joint(model, y, path) for path in itertools.product(range(2), repeat=8)}
    best = max(values, key=values.get)
    modes, log_joint = inference.beam_modes(model._parameters(seqs), seqs, width=256, memory=0)
    assert tuple(modes.argmax(axis=1)) == best
    assert log_joint == pytest.approx(values[best], rel=1e-10)
    assert sorted(values.values())[-2] < values[best] - 1e-6  # a unique maximum, so the test can tell


def test_a_narrow_beam_returns_a_path_with_its_own_log_joint():
    """Whatever it prunes or merges, the beam's value is the log p(y, z) of the path it returns; over
    several sequences the values add up and each sequence's path is its own."""
    rng = np.random.default_rng(4)
    model = _model(rng, K=3, resets="pair")
    y = [model.sample(7, random_state=s)[0] for s in (5, 6)]
    seqs = model._sequences(y, None, None)
    modes, log_joint = inference.beam_modes(model._parameters(seqs), seqs, width=3, memory=2)
    paths = np.split(modes.argmax(axis=1), [7])
    assert np.allclose(modes.sum(axis=1), 1.0) and set(np.unique(modes)) <= {0.0, 1.0}
    want = sum(_log_joint(model, part, tuple(path)) for part, path in zip(y, paths))
    assert log_joint == pytest.approx(want, rel=1e-10)


def test_impossible_switches_are_never_taken_with_missing_values():
    rng = np.random.default_rng(7)
    model = _model(rng, K=3, resets="destination")
    model.transmat_ = np.array([[0.9, 0.1, 0.0], [0.0, 0.9, 0.1], [0.1, 0.0, 0.9]])  # a cycle 0 -> 1 -> 2 -> 0
    y, _ = model.sample(40, random_state=1)
    y[5:9] = np.nan
    seqs = model._sequences(y, None, None)
    modes, log_joint = inference.beam_modes(model._parameters(seqs), seqs, width=4)
    path = modes.argmax(axis=1)
    assert np.isfinite(log_joint)
    assert all(model.transmat_[i, j] > 0 for i, j in zip(path, path[1:]))


def test_with_impossible_starts_and_switches_the_wide_beam_is_the_most_likely_possible_path():
    """T = 6, K = 3, a cycle 0 -> 1 -> 2 -> 0 and no start in mode 2: the branches of probability 0
    are dropped before their filter steps, and a beam of all 3^6 paths still returns the argmax of
    log p(y, z) over the possible ones (computed densely), with that value."""
    rng = np.random.default_rng(9)
    model = _model(rng, K=3, resets="pair")
    model.transmat_ = np.array([[0.8, 0.2, 0.0], [0.0, 0.7, 0.3], [0.4, 0.0, 0.6]])
    model.startprob_ = np.array([0.5, 0.5, 0.0])
    y, _ = model.sample(6, random_state=2)
    seqs = model._sequences(y, None, None)
    possible = [
        path
        for path in itertools.product(range(3), repeat=6)
        if model.startprob_[path[0]] > 0 and all(model.transmat_[i, j] > 0 for i, j in zip(path, path[1:]))
    ]
    values = {path: _log_joint(model, y, path) for path in possible}
    best = max(values, key=values.get)
    modes, log_joint = inference.beam_modes(model._parameters(seqs), seqs, width=729, memory=0)
    assert tuple(modes.argmax(axis=1)) == best
    assert log_joint == pytest.approx(values[best], rel=1e-10)


def test_recurrent_models_are_refused():
    model = _model(np.random.default_rng(0), resets=None)
    model.recurrent = True
    model.recurrence_weights_, model.input_weights_ = np.zeros((2, 2)), np.zeros((2, 0))
    model.recurrence_biases_ = np.log(model.transmat_)
    seqs = model._sequences(np.zeros((5, 1)), None, None)
    with pytest.raises(TypeError, match="recurrent"):
        inference.beam_modes(model._parameters(seqs), seqs)


def test_laws_given_per_step_are_read_by_group():
    """Irregular sampling gives each step its gap's laws (``StepLaws``): two groups holding the same laws,
    the steps alternating between them, give the path and value of the one stationary law."""
    from dataclasses import replace

    model = _model(np.random.default_rng(8), K=2, resets="pair")
    y, _ = model.sample(30, random_state=2)
    seqs = model._sequences(y, None, None)
    params = model._parameters(seqs)
    steps = inference.StepLaws(
        group=np.arange(30) % 2,
        weights=np.stack([params.dynamics.weights] * 2),
        covariances=np.stack([params.dynamics.covariances] * 2),
        transitions=np.stack([params.chain.transition_matrix] * 2),
    )
    want, got = inference.beam_modes(params, seqs, 4), inference.beam_modes(replace(params, steps=steps), seqs, 4)
    np.testing.assert_array_equal(got[0], want[0])
    assert got[1] == pytest.approx(want[1], rel=1e-12)
