"""One Kalman step for a batch of filters that share observations but not dynamics.

Filter i is in mode ``modes[i]``: it predicts with (A, B, Q)[modes[i]] (unless
``predict`` is False) and updates with the shared (C, D, R) and y_t, by the step
functions of :mod:`modeshift._kernels.kalman` (so missing entries of y_t are handled the
same way). This is the inner loop of the Rao-Blackwellised particle filter, one filter
per particle. Offsets enter as an input fixed at 1.
"""

from __future__ import annotations

import numpy as np

from modeshift._kernels.compile import kernel
from modeshift._kernels.kalman import predict_step, update_step, update_workspace
from modeshift._kernels.linalg import copy_into

__all__ = ["kalman_step_batch"]


@kernel
def kalman_step_batch(
    means: np.ndarray,
    covs: np.ndarray,
    modes: np.ndarray,
    A: np.ndarray,
    B: np.ndarray,
    Q: np.ndarray,
    C: np.ndarray,
    D: np.ndarray,
    R: np.ndarray,
    y: np.ndarray,
    u: np.ndarray,
    predict: bool,
    log_likelihoods: np.ndarray,
) -> int:
    """Filter every row of ``means`` (N, n), ``covs`` (N, n, n) in place from t-1|t-1 to t|t.

    A, Q (K, n, n) and B (K, n, m) are indexed by ``modes`` (N,); C (p, n), D (p, m),
    R (p, p); y (p,), u (m,). ``log_likelihoods`` (N,) receives log p(y_t | y_0..t-1)
    of each filter. Returns -1, or the first filter whose innovation covariance is not
    positive definite.
    """
    n, p = means.shape[1], C.shape[0]
    predicted_mean, predicted_cov = np.empty(n), np.empty((n, n))
    product, work = np.empty((n, n)), update_workspace(n, p)
    for i in range(means.shape[0]):
        if predict:
            k = modes[i]
            predict_step(means[i], covs[i], A[k], B[k], Q[k], u, predicted_mean, predicted_cov, product)
        else:
            copy_into(means[i], predicted_mean)
            copy_into(covs[i], predicted_cov)
        ok, log_likelihoods[i] = update_step(y, u, C, D, R, predicted_mean, predicted_cov, means[i], covs[i], work)
        if not ok:
            return i
    return -1
