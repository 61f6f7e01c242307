"""Time-varying transition probabilities: a multinomial logit per source regime (Filardo 1994).

    p(S_t = j | S_t-1 = i, z_t) = exp(z_t' B[i, j]) / sum_m exp(z_t' B[i, m]),   B[i, K-1] = 0,

with C covariates z_t (a constant among them for a baseline) and coefficients B (K, K-1, C),
the last regime the reference: statsmodels' ``exog_tvtp`` parameterisation. The chain
starts from the stationary distribution of its first step's matrix (as statsmodels).

A constant matrix is the special case z_t = 1, so the gradient of the start's term is
shared with it. The coefficients have no closed-form M-step: :func:`newton_direction`
is a Newton step on the expected log-probability of the moves (one weighted multinomial
logistic regression per source regime, concave), which the caller shortens until the
whole transition part of Q rises (a generalised EM step).
"""

from __future__ import annotations

import numpy as np
from scipy.special import softmax

from modeshift.chain_analysis import stationary_distribution

__all__ = ["expected_log_probability", "logit_gradient", "logit_matrices", "newton_direction", "start_gradient"]


def logit_matrices(coef: np.ndarray, covariates: np.ndarray) -> np.ndarray:
    """(n, K, K) row-stochastic matrices, entry t = p(S_t | S_t-1, z_t), for coef (K, K-1, C), z (n, C)."""
    logits = np.einsum("tc,ijc->tij", covariates, coef)
    return softmax(np.concatenate([logits, np.zeros(logits.shape[:2] + (1,))], axis=2), axis=2)


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
    """sum_t sum_ij moves[t, i, j] log P_t[i, j] + sum_i first_i log pi_i(P_0): the transition part
    of Q, ``moves`` (n, K, K) the expected moves into each step (row 0 unused)."""
    start = stationary_distribution(matrices[0])
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.where(moves[1:] > 0, moves[1:] * np.log(matrices[1:]), 0.0).sum()
        return float(value + np.where(first > 0, first * np.log(start), 0.0).sum())


def logit_gradient(moves: np.ndarray, matrices: np.ndarray, covariates: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Gradient (K, K-1, C) of :func:`expected_log_probability` in the coefficients;
    d log P_t[i, j] / d B[i, m] = (1[j = m] - P_t[i, m]) z_t."""
    leaving = moves[1:].sum(axis=2, keepdims=True)
    residual = moves[1:, :, :-1] - matrices[1:, :, :-1] * leaving  # (n-1, K, K-1)
    gradient = np.einsum("tim,tc->imc", residual, covariates[1:])
    return gradient + start_gradient(matrices[0], first)[:, :, None] * covariates[0]


def newton_direction(moves: np.ndarray, matrices: np.ndarray, covariates: np.ndarray) -> np.ndarray:
    """The Newton step (K, K-1, C) on sum_t sum_ij moves[t, i, j] log P_t[i, j] (the start's term left out)."""
    k, n_cov = matrices.shape[1], covariates.shape[1]
    z, p = covariates[1:], matrices[1:, :, :-1]
    leaving = moves[1:].sum(axis=2)  # (n-1, K)
    residual = moves[1:, :, :-1] - p * leaving[:, :, None]
    direction = np.empty((k, k - 1, n_cov))
    for i in range(k):
        gradient = (residual[:, i].T @ z).ravel()
        curvature = leaving[:, i, None, None] * (
            np.einsum("ta,ab->tab", p[:, i], np.eye(k - 1)) - np.einsum("ta,tb->tab", p[:, i], p[:, i])
        )
        hessian = np.einsum("tab,tc,td->acbd", curvature, z, z).reshape(gradient.size, gradient.size)
        hessian += 1e-8 * max(np.trace(hessian), 1.0) * np.eye(gradient.size)  # a regime never left
        direction[i] = np.linalg.solve(hessian, gradient).reshape(k - 1, n_cov)
    return direction
