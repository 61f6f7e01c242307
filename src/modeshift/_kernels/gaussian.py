"""Gaussian log-densities and weighted moments for many points and many components."""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from modeshift._kernels.compile import kernel
from modeshift._kernels.layout import canonical
from modeshift._kernels.recursions import REDUCTION_FLAGS
from modeshift._kernels.threads import parallel, rows_of

__all__ = [
    "LOG_2PI",
    "gaussian_log_density",
    "inverse_cholesky",
    "normal_log_density",
    "regression_log_density",
    "weighted_moments",
]

#: log(2 pi), the constant of every Gaussian log-density.
LOG_2PI = float(np.log(2.0 * np.pi))
_BLOCK = 256  # points handled together, so the innermost loops run over points and vectorise


def inverse_cholesky(covariances: np.ndarray) -> np.ndarray:
    """L_k^-1 for each positive-definite covariance_k = L_k L_k^T of a stack (K, d, d).

    With it the Mahalanobis term of a Gaussian is |L_k^-1 (x - mean_k)|^2, log det
    covariance_k = -2 sum log diag L_k^-1 and tr(covariance_k^-1) = |L_k^-1|_F^2.
    Compiled, so that the small matrices of an EM iteration cost no Python calls.
    """
    return _inverse_cholesky(canonical(covariances))  # one compiled variant, whatever views come in


@kernel
def _inverse_cholesky(covariances: np.ndarray) -> np.ndarray:
    n_matrices, d, _ = covariances.shape
    out = np.zeros((n_matrices, d, d))
    factor = np.empty((d, d))
    for k in range(n_matrices):
        for i in range(d):  # Cholesky, row by row
            for j in range(i + 1):
                total = covariances[k, i, j]
                for m in range(j):
                    total -= factor[i, m] * factor[j, m]
                factor[i, j] = np.sqrt(total) if i == j else total / factor[j, j]
        for j in range(d):  # L^-1 by forward substitution, column by column
            out[k, j, j] = 1.0 / factor[j, j]
            for i in range(j + 1, d):
                total = 0.0
                for m in range(j, i):
                    total -= factor[i, m] * out[k, m, j]
                out[k, i, j] = total / factor[i, i]
    return out


def normal_log_density(x: np.ndarray | float, mean: np.ndarray | float, variance: np.ndarray | float) -> np.ndarray:
    """log N(x | mean, variance) of scalars, elementwise with numpy broadcasting (the one-dimensional
    case, vectorised over particles or steps, where a (n_points, K) table is not wanted)."""
    return -0.5 * (LOG_2PI + np.log(variance) + (x - mean) ** 2 / variance)


def gaussian_log_density(
    points: np.ndarray, means: np.ndarray, covariances: np.ndarray, out: np.ndarray | None = None
) -> np.ndarray:
    """log N(points[n] | means[k], covariances[k]) as an (n_points, K) array: ``out`` if given
    (C-ordered), else a new one."""
    if out is None:
        out = np.empty((points.shape[0], means.shape[0]))  # numpy's allocation is cheaper to touch
    _gaussian_log_density(np.ascontiguousarray(points), means, inverse_cholesky(covariances), out)
    return out


@parallel(tasks=rows_of(0, 2_048))
def _gaussian_log_density(points: np.ndarray, means: np.ndarray, inverse_factors: np.ndarray, out: np.ndarray) -> None:
    n_points, n_features = points.shape
    n_components = means.shape[0]
    constants = np.empty(n_components)
    offsets = np.empty((n_components, n_features))  # inverse_factors[k] @ means[k]
    for k in range(n_components):
        log_det = 0.0
        for i in range(n_features):
            log_det -= 2.0 * np.log(inverse_factors[k, i, i])
            offsets[k, i] = 0.0
            for j in range(i + 1):
                offsets[k, i] += inverse_factors[k, i, j] * means[k, j]
        constants[k] = -0.5 * (n_features * LOG_2PI + log_det)
    n_blocks = (n_points + _BLOCK - 1) // _BLOCK
    for b in prange(n_blocks):
        start = b * _BLOCK
        size = min(_BLOCK, n_points - start)
        block = np.empty((n_features, _BLOCK))  # the block's points, one feature per row
        for n in range(size):
            for i in range(n_features):
                block[i, n] = points[start + n, i]
        z = np.empty(_BLOCK)
        squared = np.empty(_BLOCK)
        for k in range(n_components):
            squared[:size] = 0.0
            for i in range(n_features):
                for n in range(size):
                    z[n] = -offsets[k, i]
                for j in range(i + 1):
                    factor = inverse_factors[k, i, j]
                    feature = block[j]
                    for n in range(size):
                        z[n] += factor * feature[n]
                for n in range(size):
                    squared[n] += z[n] * z[n]
            for n in range(size):
                out[start + n, k] = constants[k] - 0.5 * squared[n]


def regression_log_density(
    responses: np.ndarray,
    regressors: np.ndarray,
    weights: np.ndarray,
    covariances: np.ndarray,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """log N(y_n | W_k z_n, S_k) as an (n_points, K) array, in one pass over the data: ``out``
    if given (C-ordered), else a new one.

    ``responses`` (n, d), ``regressors`` (n, q), ``weights`` (K, d, q) and
    ``covariances`` S (K, d, d).
    """
    if out is None:
        out = np.empty((responses.shape[0], weights.shape[0]))
    arrays = (responses, regressors, weights)  # one compiled variant, whatever views come in
    _regression_log_density(*map(canonical, arrays), inverse_cholesky(covariances), out)
    return out


@parallel(tasks=rows_of(0, 2_048), fastmath=REDUCTION_FLAGS)
def _regression_log_density(responses, regressors, weights, inverse_factors, out) -> None:
    n_points, d = responses.shape
    n_components, _, q = weights.shape
    constants = np.empty(n_components)
    for k in range(n_components):
        log_det = 0.0
        for i in range(d):
            log_det -= 2.0 * np.log(inverse_factors[k, i, i])
        constants[k] = -0.5 * (d * LOG_2PI + log_det)
    n_blocks = (n_points + _BLOCK - 1) // _BLOCK
    for b in prange(n_blocks):
        # the block's points one variable per row, so the innermost loops run over points
        start = b * _BLOCK
        size = min(_BLOCK, n_points - start)
        y, z = np.empty((d, _BLOCK)), np.empty((q, _BLOCK))
        for n in range(size):
            for i in range(d):
                y[i, n] = responses[start + n, i]
            for j in range(q):
                z[j, n] = regressors[start + n, j]
        residual, squared, whitened = np.empty((d, _BLOCK)), np.empty(_BLOCK), np.empty(_BLOCK)
        for k in range(n_components):
            for i in range(d):
                for n in range(size):
                    residual[i, n] = y[i, n]
                for j in range(q):
                    weight = weights[k, i, j]
                    for n in range(size):
                        residual[i, n] -= weight * z[j, n]
            squared[:size] = 0.0
            for i in range(d):
                whitened[:size] = 0.0
                for j in range(i + 1):
                    factor = inverse_factors[k, i, j]
                    for n in range(size):
                        whitened[n] += factor * residual[j, n]
                for n in range(size):
                    squared[n] += whitened[n] * whitened[n]
            for n in range(size):
                out[start + n, k] = constants[k] - 0.5 * squared[n]


def weighted_moments(points: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-component sums of weights, weighted points and weighted outer products.

    Returns ``totals`` (K,) = sum_n w_nk, ``sums`` (K, D) = sum_n w_nk x_n and
    ``outer`` (K, D, D) = sum_n w_nk x_n x_n^T for points (n, D) and weights (n, K).
    """
    n_chunks = max(1, min((len(points) + _BLOCK - 1) // _BLOCK, 4 * numba.get_num_threads()))
    return _weighted_moments(np.ascontiguousarray(points), np.ascontiguousarray(weights), n_chunks)


@parallel(tasks=rows_of(0, 2_048), fastmath=REDUCTION_FLAGS)
def _weighted_moments(
    points: np.ndarray, weights: np.ndarray, n_chunks: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n_points, n_features = points.shape
    n_components = weights.shape[1]
    totals = np.zeros((n_chunks, n_components))
    sums = np.zeros((n_chunks, n_components, n_features))
    outer = np.zeros((n_chunks, n_components, n_features, n_features))
    n_blocks = (n_points + _BLOCK - 1) // _BLOCK
    per_chunk = (n_blocks + n_chunks - 1) // n_chunks
    for c in prange(n_chunks):
        # blocks of points, one feature per row, so the innermost loops are vectorised sums over points
        block, w, wx = np.empty((n_features, _BLOCK)), np.empty((n_components, _BLOCK)), np.empty(_BLOCK)
        for b in range(c * per_chunk, min(n_blocks, (c + 1) * per_chunk)):
            start = b * _BLOCK
            size = min(_BLOCK, n_points - start)
            for n in range(size):
                for i in range(n_features):
                    block[i, n] = points[start + n, i]
                for k in range(n_components):
                    w[k, n] = weights[start + n, k]
            for k in range(n_components):
                total = 0.0
                for n in range(size):
                    total += w[k, n]
                totals[c, k] += total
                for i in range(n_features):
                    total = 0.0
                    for n in range(size):
                        value = w[k, n] * block[i, n]
                        wx[n] = value
                        total += value
                    sums[c, k, i] += total
                    for j in range(i + 1):
                        total = 0.0
                        for n in range(size):
                            total += wx[n] * block[j, n]
                        outer[c, k, i, j] += total
    total_outer = outer.sum(axis=0)
    for k in range(n_components):
        for i in range(n_features):
            for j in range(i):
                total_outer[k, j, i] = total_outer[k, i, j]
    return totals.sum(axis=0), sums.sum(axis=0), total_outer
