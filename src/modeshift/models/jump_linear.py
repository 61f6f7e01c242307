"""Exact predictive moments of a Markov jump linear system, the future of every switching autoregression.

Given the data, the future of an autoregressive HMM or of a Markov-switching
autoregression is a Markov jump linear system: a lag state s_t follows

    s_t = F_m s_t-1 + c_m,t + w_t,    w_t ~ N(0, Q_m),

in the mode m = z_t of a Markov chain with transition matrices P_t, starting from an
observed s_T and the filtered p(z_T | y). The predictive law is a mixture of
(number of modes)^h Gaussians; its moments follow a closed linear recursion (Costa,
Fragoso & Marques 2005, ch. 3) on the moments restricted to each mode,
q_m = E[s_t 1{z_t = m}] and M_m = E[s_t s_t' 1{z_t = m}]: with r_m = sum_i P_im q_i,
R_m = sum_i P_im M_i and pi_m = p(z_t = m),

    q_m <- F_m r_m + pi_m c_m,
    M_m <- F_m R_m F_m' + F_m r_m c_m' + c_m r_m' F_m' + pi_m (c_m c_m' + Q_m),

and E[s_t] = sum_m q_m, Cov[s_t] = sum_m M_m - E[s_t] E[s_t]'. No Monte Carlo is needed.
"""

from __future__ import annotations

import numpy as np

__all__ = ["companion_matrices", "jump_linear_moments"]


def companion_matrices(coefs: np.ndarray) -> np.ndarray:
    """Companion matrices (M, p D, p D) of autoregressions ``coefs`` (M, D, p D), lag i in
    columns (i - 1) D : i D: the lag state [y_t, ..., y_t-p+1] moves by them."""
    n_modes, d, n = coefs.shape
    companion = np.zeros((n_modes, n, n))
    companion[:, :d] = coefs
    companion[:, d:, :-d] = np.eye(n - d)
    return companion


def jump_linear_moments(
    state: np.ndarray,
    probabilities: np.ndarray,
    matrices: np.ndarray,
    companions: np.ndarray,
    offsets: np.ndarray,
    shocks: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mode probabilities (H, M), means (H, n) and covariances (H, n, n) of s_T+1 .. s_T+H.

    ``state`` (n,) is the observed s_T, ``probabilities`` (M,) p(z_T | y), ``matrices``
    (H, M, M) the transition matrices of the H steps ahead, ``companions`` F (M, n, n),
    ``offsets`` c (M, n), or (H, M, n) when they change with time, and ``shocks`` Q (M, n, n).
    """
    horizon, n = len(matrices), len(state)
    offsets = np.broadcast_to(offsets, (horizon, *offsets.shape[-2:]))
    first = probabilities[:, None] * state
    second = probabilities[:, None, None] * np.outer(state, state)
    modes = np.empty((horizon, len(probabilities)))
    means, covariances = np.empty((horizon, n)), np.empty((horizon, n, n))
    for step, (matrix, offset) in enumerate(zip(matrices, offsets)):
        probabilities = probabilities @ matrix
        moved = np.einsum("kmn,kn->km", companions, matrix.T @ first)
        cross = moved[:, :, None] * offset[:, None, :]
        second = (
            companions @ np.einsum("ik,imn->kmn", matrix, second) @ companions.transpose(0, 2, 1)
            + cross
            + cross.transpose(0, 2, 1)
            + probabilities[:, None, None] * (offset[:, :, None] * offset[:, None, :] + shocks)
        )
        first = moved + probabilities[:, None] * offset
        modes[step] = probabilities
        means[step] = first.sum(axis=0)
        covariance = second.sum(axis=0) - np.outer(means[step], means[step])
        covariances[step] = 0.5 * (covariance + covariance.T)
    return modes, means, covariances
