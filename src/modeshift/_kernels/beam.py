"""Beam search over the mode paths of a switching linear-Gaussian model: a bank of Kalman filters.

Given a mode path z_0..T-1, the model is linear-Gaussian and the Kalman filter gives
log p(y, z) = log p(z_0) + sum_t log p(z_t | z_t-1) + sum_t log p(y_t | y_0..t-1, z_0..t) exactly.
The beam keeps ``width`` hypotheses (a path so far, its filtered mean and covariance, and that
cumulative log-joint). At each step every hypothesis in mode i branches into each mode j: its
filter predicts with the law of the pair (i, j) (mode j's flow when i = j; with resets, the
switch's reset otherwise), updates on y_t, and adds log p(z_t = j | z_t-1 = i) and the
innovation's log density (a branch of probability 0 is dropped before its filter step). The
best ``width`` branches are kept; of branches whose last ``memory`` modes agree only the best
(``memory = 0``: no merging). With ``width >= K^T`` and no merging nothing is pruned, and the
best final path is the exact most likely path (MAP) and its log p(y, z); otherwise an
approximation whose cost is O(T width K) filter steps.

Arrays (as in :mod:`modeshift._kernels.kalman`, sequences back to back by ``offsets``): the
dynamics of law l at step t are ``A[group[t], l]``, ``B[group[t], l]`` (the offset b as the
last column of B, the inputs ending with a column of ones), ``Q[group[t], l]``; the switches
``log_transitions[group[t]]``; ``laws[i, j]`` the law of the pair (i, j); the observation
C, D (the offset d as D's last column), R. The steps are :func:`~modeshift._kernels.kalman.predict_step`
and :func:`~modeshift._kernels.kalman.update_step`.
"""

from __future__ import annotations

import numpy as np

from modeshift._kernels.compile import kernel
from modeshift._kernels.kalman import predict_step, update_step, update_workspace
from modeshift._kernels.linalg import copy_into

__all__ = ["beam_search"]


@kernel
def _keep(scores, signatures, width, merge, kept):
    """Indices of the best ``width`` finite scores (ties by index), the first of each signature
    when ``merge``; returns how many went to ``kept``."""
    order = np.argsort(-scores, kind="mergesort")
    count = 0
    for c in order:
        if count == width or not np.isfinite(scores[c]):
            break
        duplicate = False
        if merge:
            for a in range(count):
                if signatures[kept[a]] == signatures[c]:
                    duplicate = True
                    break
        if not duplicate:
            kept[count] = c
            count += 1
    return count


@kernel
def _sequence(
    observations, inputs, first, last, initial_mean, initial_cov, log_initial, group, A, B, Q, C, D, R,
    log_transitions, laws, width, memory, path,
):  # fmt: skip
    """The beam over rows ``first:last``; the best path goes to ``path[first:last]``. Returns its
    log p(y, z), or -inf (the path left alone) when no branch is left at some step."""
    n, K = initial_mean.shape[0], log_initial.shape[0]
    n_steps, candidates = last - first, width * K
    merge = memory > 0
    modulus = K**memory if merge else 1
    means, covs = np.empty((width, n)), np.empty((width, n, n))
    new_means, new_covs = np.empty((candidates, n)), np.empty((candidates, n, n))
    scores, new_scores = np.empty(width), np.empty(candidates)
    modes, signatures = np.empty(width, dtype=np.int64), np.empty(width, dtype=np.int64)
    new_signatures = np.empty(candidates, dtype=np.int64)
    parents, chosen = np.empty((n_steps, width), dtype=np.int64), np.empty((n_steps, width), dtype=np.int64)
    kept = np.empty(candidates, dtype=np.int64)
    predicted_mean, predicted_cov = initial_mean.copy(), initial_cov.copy()  # the first step's: p(x_0)
    product = np.empty((n, n))
    work = update_workspace(n, C.shape[0])
    alive = 1  # the empty path before the first step
    for t in range(first, last):
        g = group[t]
        for h in range(alive):
            for j in range(K):
                c = h * K + j
                if t == first:  # one hypothesis, the empty path
                    score, signature = log_initial[j], j % modulus
                else:
                    score = scores[h] + log_transitions[g, modes[h], j]
                    signature = (signatures[h] * K + j) % modulus
                new_signatures[c] = signature
                if not np.isfinite(score):  # an impossible branch: no filter step
                    new_scores[c] = -np.inf
                    continue
                if t > first:
                    law = laws[modes[h], j]
                    predict_step(means[h], covs[h], A[g, law], B[g, law], Q[g, law], inputs[t],
                                 predicted_mean, predicted_cov, product)  # fmt: skip
                ok, log_density = update_step(observations[t], inputs[t], C, D, R, predicted_mean, predicted_cov,
                                              new_means[c], new_covs[c], work)  # fmt: skip
                new_scores[c] = score + log_density if ok else -np.inf
        alive = _keep(new_scores[: alive * K], new_signatures, width, merge, kept)
        if alive == 0:
            return -np.inf
        for a in range(alive):
            c = kept[a]
            copy_into(new_means[c], means[a])
            copy_into(new_covs[c], covs[a])
            scores[a], signatures[a], modes[a] = new_scores[c], new_signatures[c], c % K
            parents[t - first, a], chosen[t - first, a] = c // K, c % K
    best = 0  # kept in decreasing order of score
    for s in range(n_steps - 1, -1, -1):
        path[first + s] = chosen[s, best]
        best = parents[s, best]
    return scores[0]


@kernel
def beam_search(
    observations, inputs, offsets, initial_mean, initial_cov, log_initial, group, A, B, Q, C, D, R,
    log_transitions, laws, width, memory,
):  # fmt: skip
    """The most likely mode path found by the beam (module docstring), (n_steps,) integers, and
    each sequence's log p(y, z) along it (n_sequences,); a sequence on which every branch became
    impossible (probability 0 or a failed update) has -inf and its path is left at -1."""
    n_sequences = offsets.shape[0] - 1
    path = np.full(observations.shape[0], -1, dtype=np.int64)
    log_joint = np.empty(n_sequences)
    for s in range(n_sequences):
        log_joint[s] = _sequence(
            observations, inputs, offsets[s], offsets[s + 1], initial_mean, initial_cov, log_initial, group,
            A, B, Q, C, D, R, log_transitions, laws, width, memory, path,
        )  # fmt: skip
    return path, log_joint
