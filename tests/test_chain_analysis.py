"""Chain analysis on transition matrices: the one stationary distribution against power iteration,
Cesaro averages and absorption, entropy and divergence rates and mixing times against closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest

from modeshift.chain_analysis import (
    chain_structure,
    entropy_rate,
    f_divergence_rate,
    mixing_time,
    stationary_distribution,
)


def _random_chain(n_states, rng, sparsity=0.0):
    P = rng.dirichlet(np.ones(n_states), size=n_states) * (rng.random((n_states, n_states)) >= sparsity)
    P[np.arange(n_states), (np.arange(n_states) + 1) % n_states] += 0.05  # a cycle through all: irreducible
    np.fill_diagonal(P, P.diagonal() + 0.01)  # a self-loop: aperiodic
    return P / P.sum(axis=1, keepdims=True)


def _cesaro(P, initial, n_steps=4000):
    """(1/T) sum_t initial P^t by brute force."""
    row, total = np.asarray(initial, dtype=float), np.zeros(len(P))
    for _ in range(n_steps):
        total += row
        row = row @ P
    return total / n_steps


# ------------------------------------------------------------- stationary distribution


@pytest.mark.parametrize("n_states", [1, 2, 3, 7, 30])
@pytest.mark.parametrize("sparsity", [0.0, 0.7])
def test_stationary_distribution_matches_power_iteration(n_states, sparsity):
    P = _random_chain(n_states, np.random.default_rng(n_states), sparsity)
    pi = stationary_distribution(P)
    power = np.linalg.matrix_power(P, 2**14)[0]
    np.testing.assert_allclose(pi, power, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(pi @ P, pi, atol=1e-14)
    assert pi.sum() == pytest.approx(1.0, abs=1e-14) and (pi >= 0).all()


def test_nearly_decoupled_chain_keeps_its_accuracy():
    eps = 1e-9
    P = np.array([[1 - eps, eps, 0.0], [0.0, 1 - 2 * eps, 2 * eps], [3 * eps, 0.0, 1 - 3 * eps]])
    # detailed flows: pi_0 eps = pi_1 2 eps = pi_2 3 eps, so pi is proportional to (6, 3, 2)
    np.testing.assert_allclose(stationary_distribution(P), np.array([6, 3, 2]) / 11, rtol=1e-6)


def test_periodic_chain_has_the_cesaro_average():
    P = np.array([[0.0, 1.0, 0.0], [0.3, 0.0, 0.7], [0.0, 1.0, 0.0]])  # period 2: P^t never converges
    pi = stationary_distribution(P)
    np.testing.assert_allclose(pi, _cesaro(P, [1.0, 0.0, 0.0]), atol=1e-3)
    np.testing.assert_allclose(pi, [0.15, 0.5, 0.35], atol=1e-14)


def test_transient_states_get_exactly_zero():
    P = np.array([[0.5, 0.25, 0.25, 0.0], [0.0, 0.2, 0.0, 0.8], [0.0, 0.0, 0.0, 1.0], [0.0, 0.6, 0.0, 0.4]])
    pi = stationary_distribution(P)
    assert pi[0] == 0.0 and pi[2] == 0.0
    np.testing.assert_allclose(pi[[1, 3]], np.array([0.6, 0.8]) / 1.4, rtol=1e-12)


def test_several_closed_classes_need_the_start():
    # a transient state 0 falls into {1} with probability 0.2 / 0.6 and into {2, 3} otherwise
    P = np.array([[0.4, 0.2, 0.3, 0.1], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.9, 0.1]])
    with pytest.raises(ValueError, match=r"2 closed classes \(\{'b'\}; \{'c', 'd'\}\)"):
        stationary_distribution(P, states="abcd")
    for initial in ([1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25], [0.0, 0.0, 0.0, 1.0]):
        pi = stationary_distribution(P, initial)
        np.testing.assert_allclose(pi, np.linalg.matrix_power(P, 2**12).T @ initial, atol=1e-12)
        np.testing.assert_allclose(pi @ P, pi, atol=1e-14)  # a mixture of stationary laws is stationary
    np.testing.assert_allclose(stationary_distribution(P, [1.0, 0.0, 0.0, 0.0])[1], 1 / 3, rtol=1e-12)


def test_stationary_distribution_checks_its_input():
    with pytest.raises(ValueError, match="must sum to 1"):
        stationary_distribution([[0.5, 0.4], [0.5, 0.5]])
    with pytest.raises(ValueError, match="must be square"):
        stationary_distribution(np.full((2, 3), 1 / 3))
    with pytest.raises(ValueError, match=r"initial must have shape \(2\)"):
        stationary_distribution(np.eye(2), [1.0])


# ------------------------------------------------------------------ rates and times


def test_two_state_closed_forms():
    a, b, c, d = 0.3, 0.1, 0.5, 0.2
    P = np.array([[1 - a, a], [b, 1 - b]])
    Q = np.array([[1 - c, c], [d, 1 - d]])
    pi = np.array([b, a]) / (a + b)
    np.testing.assert_allclose(stationary_distribution(P), pi)

    def h(p):
        return -p * math.log(p) - (1 - p) * math.log(1 - p)

    def kl(p, q):
        return p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))

    assert entropy_rate(P) == pytest.approx(pi[0] * h(a) + pi[1] * h(b), rel=1e-12)
    assert entropy_rate(P, base=2) == pytest.approx((pi[0] * h(a) + pi[1] * h(b)) / math.log(2), rel=1e-12)
    assert f_divergence_rate(P, Q) == pytest.approx(pi[0] * kl(a, c) + pi[1] * kl(b, d), rel=1e-12)
    assert f_divergence_rate(P, Q, "reverse_kl") == pytest.approx(pi[0] * kl(c, a) + pi[1] * kl(d, b), rel=1e-12)
    rows_tv = np.abs(P - Q).sum(axis=1) / 2
    rows_hellinger = ((np.sqrt(P) - np.sqrt(Q)) ** 2).sum(axis=1)
    rows_chi2 = ((P - Q) ** 2 / Q).sum(axis=1)
    assert f_divergence_rate(P, Q, "total_variation") == pytest.approx(pi @ rows_tv, rel=1e-12)
    assert f_divergence_rate(P, Q, "hellinger") == pytest.approx(pi @ rows_hellinger, rel=1e-12)
    assert f_divergence_rate(P, Q, "chi2") == pytest.approx(pi @ rows_chi2, rel=1e-12)
    assert f_divergence_rate(P, Q, lambda t: t * np.log(t)) == pytest.approx(f_divergence_rate(P, Q), rel=1e-12)
    assert f_divergence_rate(P, P) == 0.0
    # Q cannot go where P goes: KL infinite, total variation finite
    Q0 = np.array([[1.0, 0.0], [d, 1 - d]])
    assert f_divergence_rate(P, Q0) == math.inf
    assert f_divergence_rate(P, Q0, "total_variation") == pytest.approx(pi @ (np.abs(P - Q0).sum(axis=1) / 2))


def test_divergence_rate_against_a_chain_with_more_outcomes():
    P = np.array([[0.75, 0.25], [0.5, 0.5]])
    Q = np.array([[0.5, 0.25, 0.25], [0.25, 0.25, 0.5]])  # the last column: mass Q sends outside P's states
    pi = np.array([2, 1]) / 3
    tv_rows = np.array([0.25 + 0.25, 0.25 + 0.25 + 0.5]) / 2
    assert f_divergence_rate(P, Q, "total_variation") == pytest.approx(pi @ tv_rows, rel=1e-12)
    with pytest.raises(ValueError, match="differ in shape"):
        f_divergence_rate(P, Q[:, :1])
    with pytest.raises(ValueError, match="f must be one of"):
        f_divergence_rate(P, P, "js")
    with pytest.raises(TypeError, match="f must be a name or a callable"):
        f_divergence_rate(P, P, 3)


@pytest.mark.parametrize("a, b", [(0.3, 0.1), (0.9, 0.7), (0.05, 0.02)])
def test_two_state_mixing_time(a, b):
    # P^t(x, .) - pi = lambda^t (e_x - pi), lambda = 1 - a - b, so d(t) = |lambda|^t max(pi)
    P = np.array([[1 - a, a], [b, 1 - b]])
    pi_max, rate = max(a, b) / (a + b), abs(1 - a - b)
    for eps in (0.25, 0.01, 1e-6):
        expected = next(t for t in range(100_000) if rate**t * pi_max <= eps)
        assert mixing_time(P, eps) == expected


def test_mixing_time_refuses_chains_that_never_mix():
    with pytest.raises(ValueError, match="periodic"):
        mixing_time([[0.0, 1.0], [1.0, 0.0]])
    with pytest.raises(ValueError, match="2 closed classes"):
        mixing_time(np.eye(2))
    with pytest.raises(ValueError, match="eps must be in"):
        mixing_time(np.eye(1), eps=1.0)
    with pytest.raises(ValueError, match="has not mixed"):
        mixing_time([[1 - 1e-9, 1e-9], [1e-9, 1 - 1e-9]], max_steps=2**10)


def test_structure_names_states_and_cycles():
    structure = chain_structure([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]], states="xyz")
    assert structure.classes == (("x",), ("y", "z")) and structure.closed == (False, True)
    assert structure.periods == (1, 2) and not structure.aperiodic and not structure.irreducible
    assert str(structure) == "2 communicating classes:\n  transient, period 1: {'x'}\n  closed, period 2: {'y', 'z'}"


def test_dwell_times_are_the_mean_of_a_geometric_visit():
    from modeshift.chain_analysis import dwell_times

    P = np.array([[0.9, 0.1, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    rng = np.random.default_rng(0)
    visits = rng.geometric(1 - P[0, 0], size=200_000)  # steps until leaving state 0
    np.testing.assert_allclose(dwell_times(P)[:2], [10.0, 2.0])
    assert dwell_times(P)[2] == np.inf and abs(visits.mean() - dwell_times(P)[0]) < 0.1
