"""Symmetric positive-definite block-tridiagonal systems: factor, solve, log-determinant,
marginal covariances and exact samples.

The posterior precision of a state path x_0..x_T-1 (each in R^n) of a linear-Gaussian
state-space model, and of the Laplace or structured variational posterior of a switching
one, is block tridiagonal:

    J = [ J_00   J_10^T                 ]
        [ J_10   J_11    J_21^T         ]
        [        J_21    J_22    ...    ]

Everything Laplace-EM needs from it costs O(T n^3) through the block Cholesky factor
J = L L^T, with L block lower bidiagonal (lower triangular diagonal blocks):

    L_00 L_00^T = J_00,
    L_t,t-1 = J_t,t-1 L_t-1,t-1^-T,   L_tt L_tt^T = J_tt - L_t,t-1 L_t,t-1^T   (t >= 1).

From it: J x = h by a forward and a backward substitution; log det J = 2 sum log diag L_tt;
samples mean + L^-T z ~ N(mean, J^-1); and the blocks of Sigma = J^-1 on and next to the
diagonal by the backward recursion of selected inversion, with G_t = -L_tt^-T L_t+1,t^T:

    Sigma_T-1,T-1 = L^-T L^-1 (its own blocks),
    Sigma_t+1,t = Sigma_t+1,t+1 G_t^T,   Sigma_tt = L_tt^-T L_tt^-1 + G_t Sigma_t+1,t+1 G_t^T,

a sum of positive semi-definite terms like the Rauch-Tung-Striebel smoother's (G_t is its gain).

Arrays (batches of sequences stored back to back, as in :mod:`modeshift._kernels.kalman`),
with n the size of a block:

- ``diagonal`` (n_steps, n, n): the blocks J_tt (only their lower triangles are read);
- ``lower`` (n_steps, n, n): lower[t] = J_t,t-1, linking step t to step t - 1 (the entry at
  a sequence's first step is not used);
- ``offsets`` (n_sequences + 1,): sequence ``s`` occupies rows ``offsets[s]:offsets[s+1]``;
- the factor in the same layout: ``chol_diagonal`` (n_steps, n, n) holds the lower triangular
  L_tt, ``chol_lower`` (n_steps, n, n) holds L_t,t-1 (zero at sequence starts).

Sequences run in parallel (``prange``); no dense (T n, T n) array is ever formed.

Example: a random walk observed with unit noise, x_t = x_t-1 + w_t, y_t = x_t + v_t,
x_0 ~ N(0, 1), has J_tt = 3 (2 at the last step), J_t,t-1 = -1 and J x = y for the
smoothed means x:

>>> import numpy as np
>>> from modeshift._kernels import block_cholesky, block_log_det, block_marginals, block_solve
>>> diagonal = np.array([3.0, 3.0, 2.0]).reshape(3, 1, 1)
>>> lower = np.full((3, 1, 1), -1.0)
>>> offsets = np.array([0, 3])
>>> chol_diagonal, chol_lower = block_cholesky(diagonal, lower, offsets)
>>> y = np.array([[1.0], [2.0], [3.0]])
>>> block_solve(chol_diagonal, chol_lower, offsets, y).ravel()
array([0.92307692, 1.76923077, 2.38461538])
>>> covs, cross_covs = block_marginals(chol_diagonal, chol_lower, offsets)
>>> covs.ravel()
array([0.38461538, 0.46153846, 0.61538462])
>>> round(float(np.exp(block_log_det(chol_diagonal, offsets)[0])), 10)  # det J
13.0
"""

from __future__ import annotations

import numpy as np
from numba import prange

from modeshift._kernels.compile import kernel
from modeshift._kernels.linalg import backward_substitute, cholesky_in_place, forward_substitute
from modeshift._kernels.threads import parallel, sequences_of

__all__ = [
    "block_cholesky",
    "block_log_det",
    "block_marginals",
    "block_solve",
    "sample_block",
    "solve_block_tridiagonal",
]


# -------------------------------------------------------------------- factorisation
@kernel
def _factor_sequence(diagonal, lower, first, last, chol_diagonal, chol_lower) -> int:
    """Block Cholesky factor of rows ``first:last``; returns -1, or the step (counted from
    ``first``) whose Schur complement J_tt - L_t,t-1 L_t,t-1^T is not positive definite."""
    n = diagonal.shape[1]
    for t in range(first, last):
        factor, coupling = chol_diagonal[t], chol_lower[t]
        for i in range(n):
            for j in range(n):
                factor[i, j] = diagonal[t, i, j] if j <= i else 0.0
        if t == first:
            for i in range(n):
                for j in range(n):
                    coupling[i, j] = 0.0
        else:
            for i in range(n):  # row i of L_t,t-1 solves L_t-1,t-1 r = (row i of J_t,t-1)
                for j in range(n):
                    coupling[i, j] = lower[t, i, j]
                forward_substitute(chol_diagonal[t - 1], n, coupling[i])
            for i in range(n):
                for j in range(i + 1):
                    value = 0.0
                    for k in range(n):
                        value += coupling[i, k] * coupling[j, k]
                    factor[i, j] -= value
        if not cholesky_in_place(factor, n, np.False_):
            return t - first
    return -1


@parallel(tasks=sequences_of(2))
def _factor(diagonal, lower, offsets, chol_diagonal, chol_lower, failures):
    for s in prange(offsets.shape[0] - 1):
        failures[s] = _factor_sequence(diagonal, lower, offsets[s], offsets[s + 1], chol_diagonal, chol_lower)


def _blocks(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=float)


def _offsets(offsets: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(offsets, dtype=np.int64)


def block_cholesky(diagonal: np.ndarray, lower: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Block Cholesky factor L (L L^T = J) of every sequence's block-tridiagonal J.

    ``diagonal`` (n_steps, n, n) holds J_tt (lower triangles read), ``lower`` (n_steps, n, n)
    holds J_t,t-1. Returns ``(chol_diagonal, chol_lower)``, both (n_steps, n, n): the lower
    triangular L_tt (zeros above the diagonal) and L_t,t-1 = J_t,t-1 L_t-1,t-1^-T (zero at
    sequence starts).

    Raises ``ValueError`` naming the first sequence, and its time step, where J is not
    positive definite (a Cholesky pivot at or below 1e-12 of its diagonal entry, or NaN).
    """
    diagonal, lower, offsets = _blocks(diagonal), _blocks(lower), _offsets(offsets)
    chol_diagonal, chol_lower = np.empty_like(diagonal), np.empty_like(diagonal)
    failures = np.empty(len(offsets) - 1, dtype=np.int64)
    _factor(diagonal, lower, offsets, chol_diagonal, chol_lower, failures)
    failed = np.flatnonzero(failures >= 0)
    if failed.size:
        s = failed[0]
        raise ValueError(f"block-tridiagonal matrix is not positive definite at sequence {s}, time step {failures[s]}")
    return chol_diagonal, chol_lower


# -------------------------------------------------------------------- substitutions
@kernel
def _substitute_sequence(chol_diagonal, chol_lower, first, last, values, forward) -> None:
    """values <- L^-T L^-1 values (or L^-T values without ``forward``) on rows ``first:last``,
    in place, for every entry of the leading batch axis."""
    n = chol_diagonal.shape[1]
    for r in range(values.shape[0]):
        if forward:  # L y = b: y_t = L_tt^-1 (b_t - L_t,t-1 y_t-1)
            for t in range(first, last):
                b = values[r, t]
                if t > first:
                    previous = values[r, t - 1]
                    for i in range(n):
                        value = b[i]
                        for k in range(n):
                            value -= chol_lower[t, i, k] * previous[k]
                        b[i] = value
                forward_substitute(chol_diagonal[t], n, b)
        for t in range(last - 1, first - 1, -1):  # L^T x = y: x_t = L_tt^-T (y_t - L_t+1,t^T x_t+1)
            b = values[r, t]
            if t < last - 1:
                following = values[r, t + 1]
                for i in range(n):
                    value = b[i]
                    for k in range(n):
                        value -= chol_lower[t + 1, k, i] * following[k]
                    b[i] = value
            backward_substitute(chol_diagonal[t], n, b)


@parallel(tasks=sequences_of(2))
def _substitute(chol_diagonal, chol_lower, offsets, values, forward):
    for s in prange(offsets.shape[0] - 1):
        _substitute_sequence(chol_diagonal, chol_lower, offsets[s], offsets[s + 1], values, forward)


def _batch(values: np.ndarray) -> np.ndarray:
    """A contiguous (n_batch, n_steps, n) float copy of (n_steps, n) or (n_batch, n_steps, n) values."""
    values = np.asarray(values, dtype=float)
    return np.array(values.reshape((-1, *values.shape[-2:])), dtype=float, order="C")


def block_solve(chol_diagonal: np.ndarray, chol_lower: np.ndarray, offsets: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Solve J x = rhs for every sequence, given the factor from :func:`block_cholesky`.

    ``rhs`` is (n_steps, n), or (n_rhs, n_steps, n) for several right-hand sides at once;
    x comes back in the same shape. Forward substitution L y = rhs, then backward L^T x = y.
    """
    x = _batch(rhs)
    _substitute(_blocks(chol_diagonal), _blocks(chol_lower), _offsets(offsets), x, True)
    return x.reshape(np.shape(rhs))


def sample_block(
    chol_diagonal: np.ndarray, chol_lower: np.ndarray, offsets: np.ndarray, mean: np.ndarray, draws: np.ndarray
) -> np.ndarray:
    """Exact draws from N(mean, J^-1): mean + L^-T z for standard normal ``draws`` z.

    ``mean`` is (n_steps, n); ``draws`` (n_steps, n), or (n_samples, n_steps, n) for several
    paths at once, so the caller's generator fixes the result; samples come back in the
    shape of ``draws``. Cov(L^-T z) = L^-T L^-1 = J^-1. Zero draws give the mean.
    """
    samples = _batch(draws)
    _substitute(_blocks(chol_diagonal), _blocks(chol_lower), _offsets(offsets), samples, False)
    samples += np.asarray(mean, dtype=float)
    return samples.reshape(np.shape(draws))


# ---------------------------------------------------------------- log-determinant
@parallel(tasks=sequences_of(1))
def _log_det(chol_diagonal, offsets, log_dets):
    n = chol_diagonal.shape[1]
    for s in prange(offsets.shape[0] - 1):
        total = 0.0
        for t in range(offsets[s], offsets[s + 1]):
            for i in range(n):
                total += np.log(chol_diagonal[t, i, i])
        log_dets[s] = 2.0 * total


def block_log_det(chol_diagonal: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """log det J per sequence (n_sequences,): 2 sum_t sum_i log (L_tt)_ii."""
    offsets = _offsets(offsets)
    log_dets = np.empty(len(offsets) - 1)
    _log_det(_blocks(chol_diagonal), offsets, log_dets)
    return log_dets


# ------------------------------------------------------------ selected inversion
@kernel
def _marginals_sequence(chol_diagonal, chol_lower, first, last, covs, cross_covs) -> None:
    """Blocks Sigma_tt and Sigma_t,t-1 of J^-1 over rows ``first:last``, backwards."""
    if last == first:
        return
    n = chol_diagonal.shape[1]
    inverse = np.empty((n, n))  # L_tt^-1, by columns
    column = np.empty(n)
    transposed_gain = np.empty((n, n))  # G_t^T = -L_t+1,t L_tt^-1
    for t in range(last - 1, first - 1, -1):
        factor, cov = chol_diagonal[t], covs[t]
        for j in range(n):
            for i in range(n):
                column[i] = 1.0 if i == j else 0.0
            forward_substitute(factor, n, column)
            for i in range(n):
                inverse[i, j] = column[i]
        for i in range(n):  # L_tt^-T L_tt^-1 = (L_tt L_tt^T)^-1
            for j in range(i + 1):
                value = 0.0
                for k in range(i, n):
                    value += inverse[k, i] * inverse[k, j]
                cov[i, j] = value
                cov[j, i] = value
        if t == last - 1:
            continue
        following, cross = covs[t + 1], cross_covs[t + 1]
        for j in range(n):  # column j of G_t = -L_tt^-T (row j of L_t+1,t)
            for i in range(n):
                transposed_gain[j, i] = -chol_lower[t + 1, j, i]
            backward_substitute(factor, n, transposed_gain[j])
        for i in range(n):  # Sigma_t+1,t = Sigma_t+1,t+1 G_t^T
            for j in range(n):
                value = 0.0
                for k in range(n):
                    value += following[i, k] * transposed_gain[k, j]
                cross[i, j] = value
        for i in range(n):  # Sigma_tt += G_t Sigma_t+1,t
            for j in range(i + 1):
                value = 0.0
                for k in range(n):
                    value += transposed_gain[k, i] * cross[k, j]
                cov[i, j] += value
                if j < i:
                    cov[j, i] = cov[i, j]
    for i in range(n):
        for j in range(n):
            cross_covs[first, i, j] = 0.0


@parallel(tasks=sequences_of(2))
def _marginals(chol_diagonal, chol_lower, offsets, covs, cross_covs):
    for s in prange(offsets.shape[0] - 1):
        _marginals_sequence(chol_diagonal, chol_lower, offsets[s], offsets[s + 1], covs, cross_covs)


def block_marginals(
    chol_diagonal: np.ndarray, chol_lower: np.ndarray, offsets: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The blocks of J^-1 on and below the diagonal, without forming J^-1.

    Returns ``(covs, cross_covs)``, both (n_steps, n, n): Sigma_tt = Cov(x_t) and
    Sigma_t,t-1 = Cov(x_t, x_t-1) for x ~ N(., J^-1) (zero at sequence starts), the
    layout of :func:`modeshift._kernels.rts_smoother`. Selected inversion backwards from
    the factor (see the module docstring), O(T n^3).
    """
    chol_diagonal = _blocks(chol_diagonal)
    covs, cross_covs = np.empty_like(chol_diagonal), np.empty_like(chol_diagonal)
    _marginals(chol_diagonal, _blocks(chol_lower), _offsets(offsets), covs, cross_covs)
    return covs, cross_covs


def solve_block_tridiagonal(
    diagonal: np.ndarray, lower: np.ndarray, offsets: np.ndarray, rhs: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Factor J once and return ``(x, log_dets, covs, cross_covs)``: the solution of
    J x = rhs, log det J per sequence, and the marginal blocks of J^-1 (see
    :func:`block_cholesky`, :func:`block_solve`, :func:`block_log_det`,
    :func:`block_marginals`). For a Gaussian with precision J and J-weighted mean rhs
    (information form), x is the mean and covs, cross_covs its covariances.
    """
    chol_diagonal, chol_lower = block_cholesky(diagonal, lower, offsets)
    x = block_solve(chol_diagonal, chol_lower, offsets, rhs)
    covs, cross_covs = block_marginals(chol_diagonal, chol_lower, offsets)
    return x, block_log_det(chol_diagonal, offsets), covs, cross_covs
