"""Gaussian log-densities for many points under many (mean, covariance) pairs."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["gaussian_log_density"]

_LOG_2PI = np.log(2.0 * np.pi)
_CHUNK = 2048


@njit(cache=True, parallel=True)
def gaussian_log_density(points: np.ndarray, means: np.ndarray, inverse_factors: np.ndarray) -> np.ndarray:
    """log N(points[n] | means[k], covariance_k) as an (n_points, K) array.

    ``inverse_factors[k]`` is the inverse of the lower Cholesky factor L_k of
    covariance_k (covariance_k = L_k L_k^T), so the Mahalanobis term is
    |inverse_factors[k] (x - mean_k)|^2 and log det covariance_k = -2 sum log diag.
    """
    n_points, n_features = points.shape
    n_components = means.shape[0]
    constants = np.empty(n_components)
    for k in range(n_components):
        log_det = 0.0
        for i in range(n_features):
            log_det -= 2.0 * np.log(inverse_factors[k, i, i])
        constants[k] = -0.5 * (n_features * _LOG_2PI + log_det)
    out = np.empty((n_points, n_components))
    n_chunks = (n_points + _CHUNK - 1) // _CHUNK
    for c in prange(n_chunks):
        centred = np.empty(n_features)
        for n in range(c * _CHUNK, min(n_points, (c + 1) * _CHUNK)):
            for k in range(n_components):
                for i in range(n_features):
                    centred[i] = points[n, i] - means[k, i]
                squared = 0.0
                for i in range(n_features):
                    z = 0.0
                    for j in range(i + 1):
                        z += inverse_factors[k, i, j] * centred[j]
                    squared += z * z
                out[n, k] = constants[k] - 0.5 * squared
    return out
