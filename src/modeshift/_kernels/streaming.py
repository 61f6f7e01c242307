"""One step of a streaming filter fused into one compiled call.

A streaming filter conditions on one observation per call, so what it costs is mostly the
calls it makes: checking, allocating, one numpy call per operation. For the most common
model, a hidden Markov chain with Gaussian emissions, the whole step (predict, the
emission log-densities, update, normalise) is one function here, of O(K^2 + K d^3) work.
"""

from __future__ import annotations

import numpy as np

from modeshift._kernels.compile import kernel
from modeshift._kernels.gaussian import LOG_2PI

__all__ = ["gaussian_chain_step"]


@kernel
def gaussian_chain_step(
    law: np.ndarray,
    first: bool,
    transition_matrix: np.ndarray,
    means: np.ndarray,
    covariances: np.ndarray,
    y: np.ndarray,
    filtered: np.ndarray,
) -> float:
    """Condition a chain of K modes with Gaussian emissions on y_t; returns log p(y_t | y_<t).

    ``law``: p(z_t-1 | y_<t) (K,), or p(z_0) when ``first``; ``transition_matrix`` (K, K);
    ``means`` (K, d) and ``covariances`` (K, d, d) of the emissions; ``y`` (d,), NaN marking
    missing entries (the density is that of the observed ones: a wholly missing step leaves
    the predicted law). Writes p(z_t | y_0..t) to ``filtered`` (K,), scaled by the largest
    log-density so that nothing underflows. Returns NaN for an infinite entry of y or a
    covariance that is not positive definite, -inf when y_t is impossible (``filtered`` is
    then undefined): the caller's checked path names the problem.
    """
    n_states, d = means.shape
    observed = np.empty(d, dtype=np.int64)
    n_observed = 0
    for i in range(d):
        if np.isinf(y[i]):
            return np.nan
        if not np.isnan(y[i]):
            observed[n_observed] = i
            n_observed += 1
    factor = np.empty((n_observed, n_observed))  # Cholesky factor of the observed block, row by row
    z = np.empty(n_observed)  # factor^-1 (y - mean), by forward substitution along the rows
    log_densities = np.empty(n_states)
    largest = -np.inf
    for k in range(n_states):
        log_det, squared = 0.0, 0.0
        for a in range(n_observed):
            for b in range(a + 1):
                total = covariances[k, observed[a], observed[b]]
                for m in range(b):
                    total -= factor[a, m] * factor[b, m]
                if a == b:
                    if not total > 0.0:
                        return np.nan
                    factor[a, a] = np.sqrt(total)
                else:
                    factor[a, b] = total / factor[b, b]
            total = y[observed[a]] - means[k, observed[a]]
            for m in range(a):
                total -= factor[a, m] * z[m]
            z[a] = total / factor[a, a]
            squared += z[a] * z[a]
            log_det += 2.0 * np.log(factor[a, a])
        log_densities[k] = -0.5 * (n_observed * LOG_2PI + log_det + squared)
        largest = max(largest, log_densities[k])
    total = 0.0
    for j in range(n_states):
        if first:
            predicted = law[j]
        else:
            predicted = 0.0
            for i in range(n_states):
                predicted += law[i] * transition_matrix[i, j]
        filtered[j] = predicted * np.exp(log_densities[j] - largest)
        total += filtered[j]
    if not total > 0.0:
        return -np.inf
    for j in range(n_states):
        filtered[j] /= total
    return np.log(total) + largest
