"""Markov switching's time-varying transitions (Filardo 1994): the per-source multinomial logit
of :mod:`~modeshift.transitions_logit` with a stationary start.

    p(S_t = j | S_t-1 = i, z_t) = exp(z_t' B[i, j]) / sum_m exp(z_t' B[i, m]),   B[i, K-1] = 0,

with C covariates z_t (a constant among them for a baseline) and coefficients B (K, K-1, C),
the last regime the reference: statsmodels' ``exog_tvtp`` parameterisation. Row t of z drives
the move into step t; row 0 moves nothing but sets the start: the chain starts from the
stationary distribution of its first step's matrix (as statsmodels). What this module adds to
the logit block is that start's term of Q, log pi(P_0), and its gradient (shared with the
constant-matrix case z_t = 1). ``moves`` (n, K, K) are the expected moves into each step,
row 0 unused. The M-step is generalised EM: :func:`newton_direction` is a Newton step on the
moves' term (one weighted multinomial logistic regression per source regime, concave), which
the caller shortens until the whole transition part of Q rises.
"""

from __future__ import annotations

import numpy as np

from modeshift import transitions_logit as logit
from modeshift.chain_analysis import stationary_distribution

__all__ = [
    "expected_log_probability",
    "logit_gradient",
    "logit_matrices",
    "newton_direction",
    "newton_solve",
    "newton_terms",
    "start_gradient",
]

#: (n, K, K) row-stochastic matrices, entry t = p(S_t | S_t-1, z_t), for coef (K, K-1, C), z (n, C)
logit_matrices = logit.per_source_matrices


def start_gradient(matrix: np.ndarray, first: np.ndarray) -> np.ndarray:
    """d sum_i first_i log pi_i(P) / d logit[i, m] (K, K-1), pi the stationary distribution of
    ``matrix`` P: d pi = pi dP Z with Z = (I - P + 1 pi)^-1 the chain's fundamental matrix."""
    k = len(matrix)
    stationary = stationary_distribution(matrix)
    fundamental = np.linalg.inv(np.eye(k) - matrix + stationary[None, :])
    ratio = np.divide(first, stationary, out=np.zeros(k), where=stationary > 0)
    v = fundamental @ ratio
    return stationary[:, None] * matrix[:, :-1] * (v[None, :-1] - (matrix @ v)[:, None])


def expected_log_probability(moves: np.ndarray, matrices: np.ndarray, first: np.ndarray) -> float:
    """sum_t sum_ij moves[t, i, j] log P_t[i, j] + sum_i first_i log pi_i(P_0): the transition part of Q."""
    start = stationary_distribution(matrices[0])
    with np.errstate(divide="ignore", invalid="ignore"):
        value = logit.expected_log_probability(moves[1:], np.log(matrices[1:]))
        return float(value + np.where(first > 0, first * np.log(start), 0.0).sum())


def logit_gradient(moves: np.ndarray, matrices: np.ndarray, covariates: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Gradient (K, K-1, C) of :func:`expected_log_probability` in the coefficients."""
    gradient = logit.per_source_gradient(moves[1:], matrices[1:], covariates[1:])
    return gradient + start_gradient(matrices[0], first)[:, :, None] * covariates[0]


def newton_direction(moves: np.ndarray, matrices: np.ndarray, covariates: np.ndarray) -> np.ndarray:
    """The Newton step (K, K-1, C) on the moves' term of :func:`expected_log_probability` (the start's left out)."""
    return newton_solve(*newton_terms(moves, matrices, covariates))


def newton_terms(moves: np.ndarray, matrices: np.ndarray, covariates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The gradient and Hessian of the moves' term, sums over the steps of blocks of whole sequences
    (row 0, a sequence's start, moves nothing), which :func:`newton_solve` turns into the step."""
    return logit.newton_terms(moves[1:], matrices[1:], covariates[1:])


newton_solve = logit.newton_solve
