"""The lagged chain's sparse forward-backward against brute-force enumeration and the dense kernel."""

import itertools

import numpy as np
import pytest

from modeshift import _kernels as kernels
from modeshift._kernels.lagged_chain import forward_backward
from modeshift._kernels.recursions import scaled_table


def _problem(rng, n_states, order, lengths, varying):
    n_expanded, n_steps = n_states ** (order + 1), sum(lengths)
    log_likelihoods = rng.normal(size=(n_steps, n_expanded))
    matrices = rng.dirichlet(np.ones(n_states), size=(n_steps if varying else 1, n_states))
    initials = rng.dirichlet(np.ones(n_expanded), size=len(lengths) if varying else 1)  # else one shared
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    return log_likelihoods, matrices, initials, offsets


def _run(log_likelihoods, matrices, initials, offsets, n_states, order):
    table, shifts = scaled_table(log_likelihoods)
    return forward_backward(table, shifts, offsets, initials, matrices, n_states, order)


@pytest.mark.parametrize(("n_states", "order", "varying"), [(2, 1, True), (3, 1, False), (2, 2, True), (2, 0, True)])
def test_brute_force(n_states, order, varying):
    # every regime path s_0 .. s_{T+p-1}; step t's expanded state is (s_{t+p}, ..., s_t)
    rng = np.random.default_rng(n_states + 10 * order)
    n_steps = 4
    log_likelihoods, matrices, initials, offsets = _problem(rng, n_states, order, [n_steps], varying)
    n_expanded = n_states ** (order + 1)
    total, posteriors, moves = 0.0, np.zeros((n_steps, n_expanded)), np.zeros((n_steps, n_states, n_states))
    for path in itertools.product(range(n_states), repeat=n_steps + order):
        states = [sum(path[t + order - j] * n_states ** (order - j) for j in range(order + 1)) for t in range(n_steps)]
        weight = initials[0, states[0]] * np.exp(log_likelihoods[np.arange(n_steps), states].sum())
        for t in range(1, n_steps):
            weight *= matrices[t if varying else 0, path[t + order - 1], path[t + order]]
        total += weight
        posteriors[np.arange(n_steps), states] += weight
        for t in range(1, n_steps):
            moves[t, path[t + order - 1], path[t + order]] += weight
    log_lik, got_posteriors, got_moves = _run(log_likelihoods, matrices, initials, offsets, n_states, order)
    np.testing.assert_allclose(log_lik, [np.log(total)], rtol=1e-12)
    np.testing.assert_allclose(got_posteriors, posteriors / total, atol=1e-12)
    np.testing.assert_allclose(got_moves, moves / total, atol=1e-12)


@pytest.mark.parametrize("varying", [True, False])
def test_dense_kernel_on_the_expanded_matrices(varying):
    # several sequences; the dense kernel takes one initial law, so each sequence's is folded into its first step
    n_states, order, lengths = 2, 3, [30, 1, 45]
    rng = np.random.default_rng(1)
    log_likelihoods, matrices, initials, offsets = _problem(rng, n_states, order, lengths, varying)
    n_expanded, newest = n_states ** (order + 1), n_states**order
    expanded = np.zeros((len(matrices), n_expanded, n_expanded))
    for e, j in itertools.product(range(n_expanded), range(n_states)):
        expanded[:, e, j * newest + e // n_states] = matrices[:, e // newest, j]
    folded = log_likelihoods.copy()
    folded[offsets[:-1]] += np.log(n_expanded * initials)
    uniform = np.full(n_expanded, 1.0 / n_expanded)
    log_lik, posteriors, pairs = kernels.forward_backward_varying(
        folded, offsets, uniform, np.broadcast_to(expanded, (len(folded), n_expanded, n_expanded)).copy()
    )
    got_log_lik, got_posteriors, got_moves = _run(log_likelihoods, matrices, initials, offsets, n_states, order)
    regime = np.eye(n_states)[np.arange(n_expanded) // newest]  # (E, K): the newest digit
    np.testing.assert_allclose(got_log_lik, log_lik, rtol=1e-12)
    np.testing.assert_allclose(got_posteriors, posteriors, atol=1e-12)
    np.testing.assert_allclose(got_moves, regime.T @ pairs @ regime, atol=1e-12)


def test_impossible_sequence():
    log_likelihoods, matrices, initials, offsets = _problem(np.random.default_rng(2), 2, 1, [3, 3], False)
    log_likelihoods[4] = -np.inf
    log_lik, _, _ = _run(log_likelihoods, matrices, initials, offsets, 2, 1)
    assert log_lik[1] == -np.inf and np.isfinite(log_lik[0])
