"""Kalman filtering, Rauch-Tung-Striebel smoothing and posterior state sampling.

The linear-Gaussian state-space model, for each sequence with steps t = 0..T-1:

    x_0 ~ N(m_0, P_0)                                   (the state at the first observation)
    x_t = A_t x_{t-1} + B_t u_t + w_t,   w_t ~ N(0, Q_t)   (t >= 1)
    y_t = C_t x_t + D_t u_t + v_t,       v_t ~ N(0, R_t)

Arrays (batches of sequences stored back to back, as in :mod:`modeshift._kernels.hmm`),
with n states, p observed dimensions and m inputs:

- ``observations`` (n_steps, p): NaN marks a missing entry, in any subset of a step's
  dimensions; the update uses only the observed rows of C and D and the observed block
  of R, and a wholly missing step is a pure prediction;
- ``offsets`` (n_sequences + 1,): sequence ``s`` occupies rows ``offsets[s]:offsets[s+1]``;
- ``initial_mean`` (n,) or (n_sequences, n) and ``initial_cov`` (n, n) or
  (n_sequences, n, n): m_0 and P_0, shared or per sequence;
- ``transition_matrices`` A, ``transition_covs`` Q (1 or n_steps, n, n) and
  ``input_matrices`` B (1 or n_steps, n, m): entry t moves x_{t-1} to x_t (the entry at
  a sequence's first step is not used);
- ``observation_matrices`` C (1 or n_steps, p, n), ``observation_covs`` R
  (1 or n_steps, p, p) and ``feedthrough_matrices`` D (1 or n_steps, p, m): entry t
  produces y_t;
- ``inputs`` u (n_steps, m), optional (m = 0 without).

A stack with a leading axis of 1 is time-invariant; a single matrix is taken as one.
Q, R and P_0 may be positive semi-definite (only each innovation covariance
C P_t|t-1 C^T + R must be positive definite). Covariances are symmetrised after every
step; the update is in Joseph form, P_t|t = (I - K C) P_t|t-1 (I - K C)^T + K R K^T; the
smoother is Durbin & Koopman's backward recursion, which inverts no state covariance. An
exact diffuse start (``diffuse``) runs the steps of :mod:`modeshift._kernels.diffuse` first.
Sequences run in parallel (``prange``).

Steady state: in a time-invariant model (A, Q, C, R) the covariances do not depend on
the data and converge to the fixed point of the Riccati recursion. Once two fully
observed steps in a row give predicted covariances equal to a relative
``STEADY_TOLERANCE``, the filter keeps that covariance and its gain and only
propagates means, until a step with missing entries sends it back to the full
recursion. The smoother does the same with its gain and smoothed covariance. This is
the shortcut statsmodels and every production Kalman filter take; it changes results
by about ``STEADY_TOLERANCE`` relative.

The steps themselves, :func:`predict_step` and :func:`update_step` (with scratch from
:func:`update_workspace`), are public numba functions for kernels that run many filters
(:mod:`modeshift._kernels.batched_kalman`); the dense linear algebra under them is in
:mod:`modeshift._kernels.linalg`.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from modeshift._kernels.compile import kernel
from modeshift._kernels.diffuse import (
    diffuse_backward_step,
    diffuse_cross,
    diffuse_predict,
    diffuse_smoothed,
    diffuse_start,
    diffuse_update,
    diffuse_workspace,
    identified,
    propagate,
)
from modeshift._kernels.gaussian import LOG_2PI
from modeshift._kernels.linalg import (
    affine,
    backward_substitute,
    cholesky_in_place,
    congruence,
    copy_into,
    forward_substitute,
    whitened_norm,
)
from modeshift._kernels.threads import parallel, sequences_of

__all__ = [
    "filter_arrays",
    "filter_failure",
    "innovation_step",
    "kalman_filter",
    "predict_step",
    "rts_smoother",
    "sample_states",
    "update_step",
    "update_workspace",
]

STEADY_TOLERANCE = 1e-13


# ------------------------------------------------------------- stacks and steady state
@kernel
def _at(stack: np.ndarray, t: int) -> np.ndarray:
    """Entry t of a (1 or n_steps, ...) stack."""
    return stack[t] if stack.shape[0] > 1 else stack[0]


@kernel(inline="always")
def _converged(a: np.ndarray, b: np.ndarray) -> bool:
    """max |a - b| <= STEADY_TOLERANCE * max |a|, for two (n, n) matrices."""
    scale = 0.0
    gap = 0.0
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            scale = max(scale, abs(a[i, j]))
            gap = max(gap, abs(a[i, j] - b[i, j]))
    return gap <= STEADY_TOLERANCE * scale


@kernel(inline="always")
def _identical(a: np.ndarray, b: np.ndarray) -> bool:
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            if a[i, j] != b[i, j]:
                return False
    return True


@kernel(inline="always")
def _fully_observed(y: np.ndarray) -> bool:
    for value in y:
        if np.isnan(value):
            return False
    return True


# ------------------------------------------------------------------ filter steps
@kernel(inline="always")
def predict_step(
    mean: np.ndarray,
    cov: np.ndarray,
    A: np.ndarray,
    B: np.ndarray,
    Q: np.ndarray,
    u: np.ndarray,
    out_mean: np.ndarray,
    out_cov: np.ndarray,
    product: np.ndarray,
) -> None:
    """x_t|t-1 = A x_t-1|t-1 + B u_t,  P_t|t-1 = A P_t-1|t-1 A^T + Q (symmetrised)."""
    n = mean.shape[0]
    affine(A, mean, B, u, out_mean)
    propagate(A, cov, out_cov, product, np.False_)
    for i in range(n):
        for j in range(i + 1):
            value = out_cov[i, j] + 0.5 * (Q[i, j] + Q[j, i])
            out_cov[i, j] = value
            out_cov[j, i] = value


@kernel
def update_workspace(n: int, p: int) -> tuple:
    """Scratch space for :func:`update_step`."""
    return (
        np.empty(p, dtype=np.int64),  # observed dimensions
        np.empty((p, n)),  # their rows of C
        np.empty((p, p)),  # innovation covariance, then its Cholesky factor L
        np.empty(p),  # innovation, then S^-1 times it
        np.empty((n, p)),  # P C^T
        np.empty((n, p)),  # gain K
        np.empty((n, max(n, p))),  # product scratch
    )


@kernel(inline="always")
def innovation_step(
    y: np.ndarray,
    u: np.ndarray,
    C: np.ndarray,
    D: np.ndarray,
    R: np.ndarray,
    mean: np.ndarray,
    cov: np.ndarray,
    work: tuple,
) -> int:
    """The innovation of the observed entries o of y and its gain, into ``work``.

    v = y_o - C_o x - D_o u, P C_o^T, the Cholesky factor L of S = C_o P C_o^T + R_oo = L L^T
    and K = P C_o^T S^-1 (see :func:`update_workspace`). Returns the number k of observed
    entries, or -1 when S is not (numerically) positive definite.
    """
    observed, rows, factor, innovation, cross, gain, _ = work
    n = mean.shape[0]
    k = np.int64(0)  # not a literal 0: numba would type the calls below for Literal[int](0) too
    for i in range(y.shape[0]):
        if not np.isnan(y[i]):
            observed[k] = i
            k += 1
    for a in range(k):
        i = observed[a]
        value = y[i]
        for j in range(n):
            rows[a, j] = C[i, j]
            value -= C[i, j] * mean[j]
        for j in range(u.shape[0]):
            value -= D[i, j] * u[j]
        innovation[a] = value
    for i in range(n):
        for a in range(k):
            value = 0.0
            for j in range(n):
                value += cov[i, j] * rows[a, j]
            cross[i, a] = value
    for a in range(k):
        for b in range(a + 1):
            value = 0.5 * (R[observed[a], observed[b]] + R[observed[b], observed[a]])
            for j in range(n):
                value += rows[a, j] * cross[j, b]
            factor[a, b] = value
    if not cholesky_in_place(factor, k, np.False_):
        return -1
    for i in range(n):
        for a in range(k):
            gain[i, a] = cross[i, a]
        forward_substitute(factor, k, gain[i])
        backward_substitute(factor, k, gain[i])  # row i of K = S^-1 (P C^T)[i]
    return k


@kernel(inline="always")
def update_step(
    y: np.ndarray,
    u: np.ndarray,
    C: np.ndarray,
    D: np.ndarray,
    R: np.ndarray,
    mean: np.ndarray,
    cov: np.ndarray,
    out_mean: np.ndarray,
    out_cov: np.ndarray,
    work: tuple,
) -> tuple[bool, float]:
    """Condition N(mean, cov) on the observed entries o of y.

    With v = y_o - C_o x - D_o u, S = C_o P C_o^T + R_oo = L L^T and K = P C_o^T S^-1
    (:func:`innovation_step`): x + K v and (I - K C_o) P (I - K C_o)^T + K R_oo K^T go to
    ``out_mean``, ``out_cov``, L and K stay in ``work``. Returns (ok, log N(v | 0, S)); ok is
    False when S is not (numerically) positive definite. A wholly missing step returns (True, 0).
    """
    observed, rows, factor, innovation, cross, gain, product = work
    n = mean.shape[0]
    k = innovation_step(y, u, C, D, R, mean, cov, work)
    if k < 0:
        return False, 0.0
    if k == 0:
        copy_into(mean, out_mean)
        copy_into(cov, out_cov)
        return True, 0.0
    log_det = 0.0
    for a in range(k):
        log_det += 2.0 * np.log(factor[a, a])
    mahalanobis = whitened_norm(factor, k, innovation)
    backward_substitute(factor, k, innovation)  # now S^-1 v
    for i in range(n):
        value = mean[i]
        for a in range(k):
            value += cross[i, a] * innovation[a]
        out_mean[i] = value

    # Joseph's (I - K C_o) P (I - K C_o)^T + K R_oo K^T with J = I - K C_o applied as a rank-k
    # update on each side in turn: O(n^2 k) instead of O(n^3), and the rounding of J P is still
    # multiplied by J (what makes Joseph's form accurate when the update removes most of a variance)
    copy_into(cov, out_cov)
    for a in range(k):  # J P, one rank-one term at a time (contiguous inner loops)
        for i in range(n):
            weight = gain[i, a]
            for j in range(n):
                out_cov[i, j] -= weight * cross[j, a]
    for i in range(n):
        for a in range(k):
            value = 0.0
            for j in range(n):
                value += out_cov[i, j] * rows[a, j]
            product[i, a] = value  # J P C_o^T
            value = 0.0
            for b in range(k):
                value += gain[i, b] * 0.5 * (R[observed[b], observed[a]] + R[observed[a], observed[b]])
            cross[i, a] = value - product[i, a]  # K R_oo - J P C_o^T (P C_o^T is spent)
    for a in range(k):  # + (K R_oo - J P C_o^T) K^T, lower triangle, then mirrored
        for i in range(n):
            weight = cross[i, a]
            for j in range(i + 1):
                out_cov[i, j] += weight * gain[j, a]
    for i in range(n):
        for j in range(i):
            out_cov[j, i] = out_cov[i, j]
    return True, -0.5 * (k * LOG_2PI + log_det + mahalanobis)


@kernel(inline="always")
def _steady_update(
    y: np.ndarray,
    u: np.ndarray,
    A: np.ndarray,
    B: np.ndarray,
    C: np.ndarray,
    D: np.ndarray,
    previous: np.ndarray,
    predicted: np.ndarray,
    filtered: np.ndarray,
    work: tuple,
    log_det: float,
) -> float:
    """One step at the steady state: the means of :func:`predict_step` and :func:`update_step`
    with the stored Cholesky factor L of S and gain K; returns log N(v | 0, S)."""
    _, _, factor, innovation, _, gain, _ = work
    n, p = A.shape[0], C.shape[0]
    affine(A, previous, B, u, predicted)
    affine(C, predicted, D, u, innovation)
    for a in range(p):
        innovation[a] = y[a] - innovation[a]
    for i in range(n):
        value = predicted[i]
        for a in range(p):
            value += gain[i, a] * innovation[a]
        filtered[i] = value
    return -0.5 * (p * LOG_2PI + log_det + whitened_norm(factor, p, innovation))


# ------------------------------------------------------------------- the filter
@kernel
def _diffuse_steps(
    observations, inputs, first, last, initial_mean, initial_cov, mask, model, moments
) -> tuple[int, float]:
    """The exact diffuse steps at the start of rows ``first:last`` (:mod:`modeshift._kernels.diffuse`):
    predicted and filtered means and P_* go to the output rows. Returns (the first ordinary row,
    whose predicted moments are in place, and the diffuse log-likelihood), or (the failed row, NaN);
    (last, NaN) when P_inf is not 0 at the end. ``model`` and ``moments`` as for :func:`_filter_sequence`."""
    A, B, Q, C, D, R = model
    predicted_means, predicted_covs, filtered_means, filtered_covs = moments
    n, p = A.shape[1], C.shape[1]
    work = diffuse_workspace(n, p)
    Pinf, following = np.empty((n, n)), np.empty((n, n))
    diffuse_start(initial_mean, initial_cov, mask, predicted_means[first], predicted_covs[first], Pinf)
    total = 0.0
    for t in range(first, last):
        if t > first:
            diffuse_predict(
                filtered_means[t - 1],
                filtered_covs[t - 1],
                Pinf,
                _at(A, t),
                _at(B, t),
                _at(Q, t),
                inputs[t],
                predicted_means[t],
                predicted_covs[t],
                following,
            )
            Pinf, following = following, Pinf
            if identified(Pinf):
                return t, total
        ok, value = diffuse_update(
            observations[t],
            inputs[t],
            _at(C, t),
            _at(D, t),
            _at(R, t),
            predicted_means[t],
            predicted_covs[t],
            Pinf,
            filtered_means[t],
            filtered_covs[t],
            work,
        )
        if not ok:
            return t, np.nan
        total += value
    return last, total if identified(Pinf) else np.nan


@kernel
def _filter_sequence(
    observations, inputs, first, last, initial_mean, initial_cov, diffuse, model, moments
) -> tuple[int, float]:
    """Filter rows ``first:last`` of the model (A, B, Q, C, D, R) into its ``moments`` (predicted
    means, predicted covariances, filtered means, filtered covariances); returns (-1, log-likelihood),
    or (failed step, NaN), or (last - first, NaN) when the diffuse components are not all identified
    by the end."""
    A, B, Q, C, D, R = model
    predicted_means, predicted_covs, filtered_means, filtered_covs = moments
    n, p = A.shape[1], C.shape[1]
    work = update_workspace(n, p)
    product = np.empty((n, n))
    invariant = A.shape[0] == 1 and Q.shape[0] == 1 and C.shape[0] == 1 and R.shape[0] == 1
    steady, previous_full, log_det = False, False, 0.0
    total = 0.0
    begin = first
    if diffuse.any():  # the exact diffuse steps, then the ordinary filter from the handover
        begin, total = _diffuse_steps(
            observations, inputs, first, last, initial_mean, initial_cov, diffuse, model, moments
        )
        if np.isnan(total):
            return begin - first, np.nan
        if begin < last:
            initial_mean, initial_cov = predicted_means[begin], predicted_covs[begin]
    for t in range(begin, last):
        full = _fully_observed(observations[t])
        if steady and full:
            total += _steady_update(
                observations[t],
                inputs[t],
                A[0],
                _at(B, t),
                C[0],
                _at(D, t),
                filtered_means[t - 1],
                predicted_means[t],
                filtered_means[t],
                work,
                log_det,
            )
            copy_into(predicted_covs[t - 1], predicted_covs[t])
            copy_into(filtered_covs[t - 1], filtered_covs[t])
            continue
        if t == begin:
            copy_into(initial_mean, predicted_means[t])
            copy_into(initial_cov, predicted_covs[t])
        else:
            predict_step(
                filtered_means[t - 1],
                filtered_covs[t - 1],
                _at(A, t),
                _at(B, t),
                _at(Q, t),
                inputs[t],
                predicted_means[t],
                predicted_covs[t],
                product,
            )
        ok, value = update_step(
            observations[t],
            inputs[t],
            _at(C, t),
            _at(D, t),
            _at(R, t),
            predicted_means[t],
            predicted_covs[t],
            filtered_means[t],
            filtered_covs[t],
            work,
        )
        if not ok:
            return t - first, np.nan
        total += value
        steady = invariant and full and previous_full and _converged(predicted_covs[t], predicted_covs[t - 1])
        if steady:
            factor = work[2]
            log_det = 0.0
            for a in range(p):
                log_det += 2.0 * np.log(factor[a, a])
        previous_full = full
    return -1, total


@parallel(tasks=sequences_of(2))
def _filter(
    observations,
    inputs,
    offsets,
    initial_means,
    initial_covs,
    diffuse,
    A,
    B,
    Q,
    C,
    D,
    R,
    predicted_means,
    predicted_covs,
    filtered_means,
    filtered_covs,
    log_likelihoods,
    failures,
):
    for s in prange(offsets.shape[0] - 1):
        failures[s], log_likelihoods[s] = _filter_sequence(
            observations,
            inputs,
            offsets[s],
            offsets[s + 1],
            _at(initial_means, np.int64(s)),  # prange indices are unsigned
            _at(initial_covs, np.int64(s)),
            diffuse,
            (A, B, Q, C, D, R),
            (predicted_means, predicted_covs, filtered_means, filtered_covs),
        )


def _mask(diffuse: np.ndarray | None, n: int) -> np.ndarray:
    """The diffuse components as a boolean (n,) array (none when ``diffuse`` is None)."""
    return np.zeros(n, dtype=np.bool_) if diffuse is None else np.ascontiguousarray(diffuse, dtype=np.bool_)


def _stack(matrices: np.ndarray) -> np.ndarray:
    """A (1 or n_steps, rows, columns) float stack; a single matrix becomes a stack of one."""
    matrices = np.asarray(matrices, dtype=float)
    return np.ascontiguousarray(matrices[None] if matrices.ndim == 2 else matrices)


def kalman_filter(
    observations: np.ndarray,
    offsets: np.ndarray,
    initial_mean: np.ndarray,
    initial_cov: np.ndarray,
    transition_matrices: np.ndarray,
    transition_covs: np.ndarray,
    observation_matrices: np.ndarray,
    observation_covs: np.ndarray,
    inputs: np.ndarray | None = None,
    input_matrices: np.ndarray | None = None,
    feedthrough_matrices: np.ndarray | None = None,
    *,
    diffuse: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Kalman filter of every sequence.

    Returns ``(log_likelihoods, filtered_means, filtered_covs, predicted_means,
    predicted_covs)``: log p(y_0..T-1) per sequence (n_sequences,), the moments of
    p(x_t | y_0..t) as (n_steps, n) and (n_steps, n, n), and those of
    p(x_t | y_0..t-1) (m_0, P_0 at a sequence's first step). ``B`` and ``D`` default
    to zeros when ``inputs`` are given without them.

    ``diffuse`` (n,) flags state components with an exact diffuse prior
    (:mod:`modeshift._kernels.diffuse`): their entries of m_0 and rows of P_0 are ignored, each
    sequence starts with the exact diffuse steps, whose covariances reported are the proper
    parts P_*, and its log-likelihood is the diffuse one.

    Raises ``ValueError`` naming the first sequence, and its time step, whose
    innovation covariance C P C^T + R is not positive definite, or which ends before its
    diffuse components are identified.
    """
    arrays = filter_arrays(
        observations, offsets, initial_mean, initial_cov, transition_matrices, transition_covs,
        observation_matrices, observation_covs, inputs, input_matrices, feedthrough_matrices, diffuse,
    )  # fmt: skip
    n_steps, n = len(arrays[0]), arrays[6].shape[1]
    n_sequences = len(offsets) - 1
    filtered_means, predicted_means = np.empty((n_steps, n)), np.empty((n_steps, n))
    filtered_covs, predicted_covs = np.empty((n_steps, n, n)), np.empty((n_steps, n, n))
    log_likelihoods = np.empty(n_sequences)
    failures = np.empty(n_sequences, dtype=np.int64)
    _filter(
        *arrays,
        predicted_means,
        predicted_covs,
        filtered_means,
        filtered_covs,
        log_likelihoods,
        failures,
    )
    filter_failure(failures, offsets)
    return log_likelihoods, filtered_means, filtered_covs, predicted_means, predicted_covs


def filter_arrays(
    observations: np.ndarray,
    offsets: np.ndarray,
    initial_mean: np.ndarray,
    initial_cov: np.ndarray,
    transition_matrices: np.ndarray,
    transition_covs: np.ndarray,
    observation_matrices: np.ndarray,
    observation_covs: np.ndarray,
    inputs: np.ndarray | None,
    input_matrices: np.ndarray | None,
    feedthrough_matrices: np.ndarray | None,
    diffuse: np.ndarray | None,
) -> tuple[np.ndarray, ...]:
    """The arguments of :func:`kalman_filter` as its compiled loop takes them: (observations,
    inputs, offsets, initial means, initial covariances, diffuse mask, A, B, Q, C, D, R), contiguous
    float stacks (B and D zero when absent, inputs (n_steps, 0) without)."""
    observations = np.ascontiguousarray(observations, dtype=float)
    A, Q = _stack(transition_matrices), _stack(transition_covs)
    C, R = _stack(observation_matrices), _stack(observation_covs)
    n_steps, (p, n) = len(observations), C.shape[1:]
    inputs = np.zeros((n_steps, 0)) if inputs is None else np.ascontiguousarray(inputs, dtype=float)
    m = inputs.shape[1]
    B = np.zeros((1, n, m)) if input_matrices is None else _stack(input_matrices)
    D = np.zeros((1, p, m)) if feedthrough_matrices is None else _stack(feedthrough_matrices)
    return (
        observations,
        inputs,
        np.asarray(offsets, dtype=np.int64),
        np.ascontiguousarray(np.reshape(initial_mean, (-1, n)), dtype=float),
        np.ascontiguousarray(np.reshape(initial_cov, (-1, n, n)), dtype=float),
        _mask(diffuse, n),
        A,
        B,
        Q,
        C,
        D,
        R,
    )


def filter_failure(failures: np.ndarray, offsets: np.ndarray) -> None:
    """Raise ``ValueError`` for the first sequence whose filter failed: ``failures[s]`` the step
    (within it) whose innovation covariance is not positive definite, its length when it ends
    before its diffuse components are identified, -1 when it ran through."""
    if failures.max(initial=-1) >= 0:
        s = int(np.flatnonzero(failures >= 0)[0])
        if failures[s] == offsets[s + 1] - offsets[s]:
            raise ValueError(f"sequence {s} ends before its diffuse state components are identified")
        raise ValueError(f"innovation covariance is not positive definite at sequence {s}, time step {failures[s]}")


# ----------------------------------------------------------------- the smoother
@kernel(inline="always")
def _backward_r(k: int, s: np.ndarray, work: tuple, u: np.ndarray, out: np.ndarray) -> None:
    """r_t-1 = C_o^T S^-1 v + L_t^T r_t = s + C_o^T u, u = S^-1 v - K^T s (into ``u``), with
    L_t = A (I - K C_o), s = A^T r_t and the step's rows C_o, gain K and S^-1 v (in ``innovation``)
    in ``work``."""
    _, rows, _, innovation, _, gain, _ = work
    n = s.shape[0]
    for a in range(k):
        value = innovation[a]
        for i in range(n):
            value -= gain[i, a] * s[i]
        u[a] = value
    for i in range(n):
        value = s[i]
        for a in range(k):
            value += rows[a, i] * u[a]
        out[i] = value


@kernel(inline="always")
def _backward_N(k: int, W: np.ndarray, work: tuple, extra: tuple, out: np.ndarray) -> None:
    """N_t-1 = C_o^T S^-1 C_o + L_t^T N_t L_t from W = A^T N_t A: with X = W K,
    N_t-1 = W + C_o^T (S^-1 C_o + K^T X C_o - X^T) - X C_o, symmetric by construction."""
    _, rows, factor, _, _, gain, _ = work
    X, Y, KX, column = extra
    n = W.shape[0]
    for i in range(n):
        for a in range(k):
            value = 0.0
            for j in range(n):
                value += W[i, j] * gain[j, a]
            X[i, a] = value
    for a in range(k):
        for b in range(k):
            value = 0.0
            for i in range(n):
                value += gain[i, a] * X[i, b]
            KX[a, b] = value
    for j in range(n):
        for a in range(k):
            column[a] = rows[a, j]
        forward_substitute(factor, k, column)
        backward_substitute(factor, k, column)  # S^-1 C_o, column j
        for a in range(k):
            value = column[a] - X[j, a]
            for b in range(k):
                value += KX[a, b] * rows[b, j]
            Y[a, j] = value
    copy_into(W, out)
    for a in range(k):  # lower triangle, one observed entry at a time, then mirrored
        for i in range(n):
            row, x = rows[a, i], X[i, a]
            for j in range(i + 1):
                out[i, j] += row * Y[a, j] - x * rows[a, j]
    for i in range(n):
        for j in range(i):
            out[j, i] = out[i, j]


@kernel(inline="always")
def _observation_terms(
    k: int, work: tuple, u: np.ndarray, KX: np.ndarray, Y: np.ndarray, P: np.ndarray, D: np.ndarray, terms: tuple
) -> None:
    """A step's terms of the score in C, D and R at its observed entries o (Durbin & Koopman 2012,
    sec. 7.3.3): u = S^-1 v - K'^T r_t (given), D = S^-1 + K'^T N_t K' (= S^-1 + ``KX``, kept in
    ``D``), (u u^T - D) / 2 and (S^-1 C_o - K'^T N_t L_t) P_t|t-1 (= ``Y`` P) into the rows
    ``terms`` = (u, half, WP) (zero elsewhere), K' = A K the gain into the next state."""
    observed, factor = work[0], work[2]
    u_out, half_out, WP_out = terms
    n = P.shape[0]
    column = work[3]  # S^-1 v is spent: r_t-1 is made
    for b in range(k):
        for a in range(k):
            column[a] = 1.0 if a == b else 0.0
        forward_substitute(factor, k, column)
        backward_substitute(factor, k, column)
        for a in range(k):
            D[a, b] = column[a] + KX[a, b]
    for a in range(k):
        o = observed[a]
        u_out[o] = u[a]
        for b in range(k):
            half_out[o, observed[b]] = 0.5 * (u[a] * u[b] - D[a, b])
        for j in range(n):
            WP_out[o, j] = 0.0
        for i in range(n):
            weight = Y[a, i]
            for j in range(n):
                WP_out[o, j] += weight * P[i, j]


@kernel
def _smooth_sequence(
    observations, inputs, first, last, moments, diffuse, A, C, D, R, smoothed, disturbances, rows
) -> None:
    """Backward pass over rows ``first:last`` (:func:`rts_smoother`) from the filter's ``moments``
    (:func:`_filter_sequence`) into ``smoothed`` (means, covariances, cross-covariances), keeping, when its arrays
    have rows, the ``disturbances`` (r, N, NAP, u, half, WP) the score is made of
    (:mod:`modeshift._kernels.lds_score`). Per row t: r = r_t-1 (n,) and N = N_t-1 (n, n), the
    gradient of log p(y) in x_t's prior mean and (twice) its covariance (E[w_t | y] = Q r_t-1,
    Var[w_t | y] = Q - Q N_t-1 Q); NAP = N_t-1 A_t P_t-1|t-1 (-Q^-1 Cov(w_t, x_t-1 | y)) on the
    state ``rows`` flagged (zero elsewhere); and at the observed entries of y_t (zero elsewhere),
    with v_t the observation noise, u = R^-1 E[v_t | y] (p,), half = (u u^T - D) / 2 (p, p) with
    Var[v_t | y] = R - R D R, and WP = -R^-1 Cov(v_t, x_t | y) (p, n): the score in R is the
    sum of half, in C that of u x_t|T^T - WP (Durbin & Koopman 2012, sec. 7.3.3). In the exact
    diffuse steps (R diagonal) these are each entry's limits, exact also at a noise variance of
    0, and half is diagonal. Without smoothed covariances (arrays of no rows) they are skipped."""
    if last == first:
        return
    predicted_means, predicted_covs, filtered_means, filtered_covs = moments
    smoothed_means, smoothed_covs, cross_covs = smoothed
    begin, diffuse_infs = first, np.empty((0, A.shape[1], A.shape[1]))
    if diffuse.any():
        diffuse_infs = _diffuse_variances(
            observations, inputs, first, last, predicted_means, predicted_covs, diffuse, A, C, D, R
        )
        begin = first + diffuse_infs.shape[0] - 1
    n, p = A.shape[1], C.shape[1]
    work = update_workspace(n, p)
    innovation, product = work[3], work[6]
    u, D_t = np.empty(p), np.empty((p, p))
    extra = (np.empty((n, p)), np.empty((p, n)), np.empty((p, p)), np.empty(p))  # X, Y, KX, a column
    r, N = np.zeros(n), np.zeros((n, n))  # r_t, N_t: zero after the last step
    r_new, N_new = np.empty(n), np.empty((n, n))
    s, W = np.zeros(n), np.zeros((n, n))
    ahead, weighted = np.empty((n, n)), np.empty((n, n))
    rs, Ns, NAP = disturbances[0], disturbances[1], disturbances[2]
    terms = (disturbances[3], disturbances[4], disturbances[5])
    keep, covariances = Ns.shape[0] > 0, smoothed_covs.shape[0] > 0
    wanted = keep and rows.any()
    invariant = A.shape[0] == 1 and C.shape[0] == 1 and R.shape[0] == 1
    steady, full_next = False, False  # nothing follows the last step
    for t in range(last - 1, begin - 1, -1):
        P, y, filtered = predicted_covs[t], observations[t], filtered_covs[t]
        final = t == last - 1
        # At the filter's steady state the step repeats the next one's factor and gain (``same``),
        # and once N_t-1 repeats N_t (``steady``), so do N, NAP, D, WP and the smoothed and
        # cross covariances: only r and the means move.
        full = _fully_observed(y)
        same = (
            invariant
            and full
            and full_next
            and _identical(P, predicted_covs[t + 1])
            and _identical(filtered, filtered_covs[t + 1])
        )
        full_next = full
        if same:
            affine(C[0], predicted_means[t], _at(D, t), inputs[t], innovation)
            k = p
            for a in range(p):
                innovation[a] = y[a] - innovation[a]
        else:
            k = innovation_step(y, inputs[t], _at(C, t), _at(D, t), _at(R, t), predicted_means[t], P, work)
        forward_substitute(work[2], k, innovation)
        backward_substitute(work[2], k, innovation)  # S^-1 v
        At = _at(A, t + 1) if not final else _at(A, t)
        if not final:
            for i in range(n):
                value = 0.0
                for j in range(n):
                    value += At[j, i] * r[j]
                s[i] = value
        # x_t|T = x_t|t-1 + P_t|t-1 r_t-1 = x_t|t + P_t|t A^T r_t: the filtered form keeps a
        # large P_t|t-1 (a vague prior) from multiplying rounding errors
        for i in range(n):
            value = filtered_means[t, i]
            for j in range(n):
                value += filtered[i, j] * s[j]
            smoothed_means[t, i] = value
        _backward_r(k, s, work, u, r_new)
        r, r_new = r_new, r
        if same and steady:
            if keep:
                copy_into(r, rs[t])
                copy_into(N, Ns[t])
                copy_into(NAP[t + 2], NAP[t + 1])
                copy_into(terms[2][t + 1], terms[2][t])
                for a in range(p):
                    terms[0][t, a] = u[a]
                    for b in range(p):
                        terms[1][t, a, b] = 0.5 * (u[a] * u[b] - D_t[a, b])
            if covariances:
                copy_into(smoothed_covs[t + 1], smoothed_covs[t])
                copy_into(cross_covs[t + 2], cross_covs[t + 1])
            continue
        if not final:
            propagate(At, N, W, product, np.True_)  # A^T N_t A
        _backward_N(k, W, work, extra, N_new)
        if keep:
            _observation_terms(k, work, u, extra[2], extra[1], P, D_t, (terms[0][t], terms[1][t], terms[2][t]))
        if final and covariances:
            copy_into(filtered, smoothed_covs[t])
        elif not final and (wanted or covariances):
            # P_t|T = P_t|t - G^T N_t G and Cov(x_t+1, x_t | y) = (I - P_t+1|t N_t) G, G = A P_t|t
            _multiply(At, filtered, ahead)
            _multiply_rows(N, ahead, rows, weighted)  # N_t A P_t|t (every row with covariances)
            if keep:
                copy_into(weighted, NAP[t + 1])
        if not final and covariances:
            for i in range(n):
                for j in range(i + 1):
                    value = filtered[i, j]
                    for a in range(n):
                        value -= ahead[a, i] * weighted[a, j]
                    smoothed_covs[t, i, j] = value
                    smoothed_covs[t, j, i] = value
            following = predicted_covs[t + 1]
            for i in range(n):
                for j in range(n):
                    value = ahead[i, j]
                    for a in range(n):
                        value -= following[i, a] * weighted[a, j]
                    cross_covs[t + 1, i, j] = value
        steady = same and _converged(N_new, N)
        N, N_new = N_new, N
        if keep:
            copy_into(r, rs[t])
            copy_into(N, Ns[t])
    if begin > first:
        _diffuse_backward(
            observations, inputs, first, last, begin, moments, diffuse_infs, A, C, D, R, r, N, smoothed, disturbances
        )
    if covariances:
        cross_covs[first] = 0.0


@kernel(inline="always")
def _replay_diffuse(t, observations, inputs, C, D, R, predicted_means, predicted_covs, Pinf, mean, Pstar, work) -> None:
    """The filter's diffuse update of row t again, for the smoother: from its predicted moments and
    P_inf, updated in place; the mean and P_* go to ``mean`` and ``Pstar``, each entry's terms stay in ``work``."""
    y, u = observations[t], inputs[t]
    diffuse_update(
        y, u, _at(C, t), _at(D, t), _at(R, t), predicted_means[t], predicted_covs[t], Pinf, mean, Pstar, work
    )


@kernel
def _diffuse_variances(
    observations, inputs, first, last, predicted_means, predicted_covs, mask, A, C, D, R
) -> np.ndarray:
    """P_inf predicted at each diffuse step of rows ``first:last`` and at the first ordinary
    step after them (d + 1, n, n), repeating the filter's diffuse steps."""
    n, p = A.shape[1], C.shape[1]
    work = diffuse_workspace(n, p)
    mean, Pstar, Pinf, following = np.empty(n), np.empty((n, n)), np.empty((n, n)), np.empty((n, n))
    scratch = np.empty((n, n))
    diffuse_start(predicted_means[first], predicted_covs[first], mask, mean, Pstar, Pinf)
    d = 0
    for t in range(first, last):
        if t > first:
            propagate(_at(A, t), Pinf, following, scratch, np.False_)
            Pinf, following = following, Pinf
            if identified(Pinf):
                break
        _replay_diffuse(t, observations, inputs, C, D, R, predicted_means, predicted_covs, Pinf, mean, Pstar, work)
        d += 1
    variances = np.zeros((d + 1, n, n))
    diffuse_start(predicted_means[first], predicted_covs[first], mask, mean, Pstar, variances[0])
    for t in range(first, first + d):
        copy_into(variances[t - first], Pinf)
        _replay_diffuse(t, observations, inputs, C, D, R, predicted_means, predicted_covs, Pinf, mean, Pstar, work)
        if t + 1 < last:
            propagate(_at(A, t + 1), Pinf, variances[t + 1 - first], scratch, np.False_)
    return variances


@kernel
def _diffuse_backward(
    observations, inputs, first, last, begin, moments, variances, A, C, D, R, r, N, smoothed, disturbances
) -> None:
    """The exact diffuse smoother over the diffuse rows ``first:begin`` (:mod:`modeshift._kernels.diffuse`),
    from r, N at the start of row ``begin``; ``variances`` holds P_inf predicted at each row (the other
    arguments as for :func:`_smooth_sequence`)."""
    predicted_means, predicted_covs, _, filtered_covs = moments
    smoothed_means, smoothed_covs, cross_covs = smoothed
    n, p = A.shape[1], C.shape[1]
    work = diffuse_workspace(n, p)
    scratch = (
        np.empty((n, n)),
        np.empty((n, n)),
        np.empty((n, n)),
        np.empty((n, n)),
        np.empty((n, n)),
        np.empty((n, n)),
    )
    r0, r1 = r.copy(), np.zeros(n)
    N0, N1, N2 = N.copy(), np.zeros((n, n)), np.zeros((n, n))
    Pinf, mean, Pstar, moved = np.empty((n, n)), np.empty(n), np.empty((n, n)), np.empty((n, n))
    rs, Ns, NAP, obs_u, obs_half, obs_WP = disturbances
    keep, covariances = Ns.shape[0] > 0, smoothed_covs.shape[0] > 0
    sink = np.empty((n, n))  # the covariances not asked for
    for t in range(begin - 1, first - 1, -1):
        copy_into(variances[t - first], Pinf)
        _replay_diffuse(t, observations, inputs, C, D, R, predicted_means, predicted_covs, Pinf, mean, Pstar, work)
        if t + 1 < last:  # Pinf is now P_inf,t|t; cross the transition to step t + 1
            At = _at(A, t + 1)
            diffuse_cross(
                At,
                filtered_covs[t],
                Pinf,
                predicted_covs[t + 1],
                variances[t + 1 - first],
                N0,
                N1,
                N2,
                cross_covs[t + 1] if covariances else sink,
                scratch,
            )
            if keep:
                copy_into(scratch[3], NAP[t + 1])  # N_t A P_t|t, kappa^0 term
            for vector in (r0, r1):
                for i in range(n):
                    value = 0.0
                    for j in range(n):
                        value += At[j, i] * vector[j]
                    mean[i] = value
                copy_into(mean, vector)
            for matrix in (N0, N1, N2):
                propagate(At, matrix, moved, scratch[0], np.True_)
                copy_into(moved, matrix)
        k = np.int64(0)  # not a literal: see innovation_step
        for i in range(observations.shape[1]):
            if not np.isnan(observations[t, i]):
                k += 1
        terms = (obs_u[t], obs_half[t], obs_WP[t]) if keep else (np.empty(0), np.empty((0, 0)), np.empty((0, n)))
        diffuse_backward_step(k, work, r0, r1, N0, N1, N2, scratch, terms)
        diffuse_smoothed(
            predicted_means[t],
            predicted_covs[t],
            variances[t - first],
            r0,
            r1,
            N0,
            N1,
            N2,
            smoothed_means[t],
            smoothed_covs[t] if covariances else sink,
            scratch[0],
        )
        if keep:
            copy_into(r0, rs[t])
            copy_into(N0, Ns[t])


@kernel(inline="always")
def _multiply(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """out = a b for square matrices, row by row, skipping the zero entries of a (sparse dynamics)."""
    n = a.shape[0]
    for i in range(n):
        for j in range(n):
            out[i, j] = 0.0
        for k in range(n):
            weight = a[i, k]
            if weight != 0.0:
                for j in range(n):
                    out[i, j] += weight * b[k, j]


@kernel(inline="always")
def _multiply_rows(a: np.ndarray, b: np.ndarray, rows: np.ndarray, out: np.ndarray) -> None:
    """out = a b on the ``rows`` flagged, zero on the others (O(rows n^2))."""
    n = a.shape[0]
    for i in range(n):
        for j in range(n):
            out[i, j] = 0.0
        if rows[i]:
            for k in range(n):
                weight = a[i, k]
                if weight != 0.0:
                    for j in range(n):
                        out[i, j] += weight * b[k, j]


@parallel(tasks=sequences_of(2))
def _smooth(
    observations,
    inputs,
    offsets,
    filtered_means,
    filtered_covs,
    predicted_means,
    predicted_covs,
    diffuse,
    A,
    C,
    D,
    R,
    smoothed_means,
    smoothed_covs,
    cross_covs,
    disturbances,
    rows,
):
    for s in prange(offsets.shape[0] - 1):
        _smooth_sequence(
            observations,
            inputs,
            offsets[s],
            offsets[s + 1],
            (predicted_means, predicted_covs, filtered_means, filtered_covs),
            diffuse,
            A,
            C,
            D,
            R,
            (smoothed_means, smoothed_covs, cross_covs),
            disturbances,
            rows,
        )


def rts_smoother(
    observations: np.ndarray,
    offsets: np.ndarray,
    filtered_means: np.ndarray,
    filtered_covs: np.ndarray,
    predicted_means: np.ndarray,
    predicted_covs: np.ndarray,
    transition_matrices: np.ndarray,
    observation_matrices: np.ndarray,
    observation_covs: np.ndarray,
    inputs: np.ndarray | None = None,
    feedthrough_matrices: np.ndarray | None = None,
    *,
    diffuse: np.ndarray | None = None,
) -> tuple[np.ndarray, ...]:
    """The fixed-interval (Rauch-Tung-Striebel) smoother, after :func:`kalman_filter`, in Durbin &
    Koopman's backward form (2012, sec. 4.4-4.7): no predicted covariance is inverted, so
    singular ones (from zero or rank-deficient Q, R, P_0) are exact.

    With each step's observed entries (innovation v, S = C_o P_t|t-1 C_o^T + R_oo, gain
    K = P_t|t-1 C_o^T S^-1, L_t = A_t+1 (I - K C_o)), backwards from r = 0, N = 0 after the end:

        r_t-1 = C_o^T S^-1 v + L_t^T r_t,        x_t|T = x_t|t + P_t|t A^T r_t,
        N_t-1 = C_o^T S^-1 C_o + L_t^T N_t L_t,  P_t|T = P_t|t - G^T N_t G,  G = A_t+1 P_t|t,
        Cov(x_t+1, x_t | y) = (I - P_t+1|t N_t) G

    (x_t|T = x_t|t-1 + P_t|t-1 r_t-1 too; the filtered form is the accurate one under a vague
    prior). The arguments are those of :func:`kalman_filter` and its outputs. Returns smoothed
    means (n_steps, n), smoothed covariances (n_steps, n, n) and lag-one cross-covariances
    Cov(x_t, x_t-1 | y) (n_steps, n, n), zero at sequence starts. (The score of the
    log-likelihood is made of the same backward pass's disturbances, in one compiled call:
    :mod:`modeshift._kernels.lds_score`.)

    With ``diffuse`` (as for :func:`kalman_filter`), the diffuse steps are smoothed exactly
    (:mod:`modeshift._kernels.diffuse`).
    """
    observations = np.ascontiguousarray(observations, dtype=float)
    A = _stack(transition_matrices)
    C, R = _stack(observation_matrices), _stack(observation_covs)
    n_steps, (p, n) = len(observations), C.shape[1:]
    inputs = np.zeros((n_steps, 0)) if inputs is None else np.ascontiguousarray(inputs, dtype=float)
    D = np.zeros((1, p, inputs.shape[1])) if feedthrough_matrices is None else _stack(feedthrough_matrices)
    smoothed_means = np.empty((n_steps, n))
    smoothed_covs, cross_covs = np.empty((n_steps, n, n)), np.empty((n_steps, n, n))
    none = (np.zeros((0, n)), np.zeros((0, n, n)), np.zeros((0, n, n)), np.zeros((0, p)), np.zeros((0, p, p)),
            np.zeros((0, p, n)))  # fmt: skip
    _smooth(
        observations,
        inputs,
        np.asarray(offsets, dtype=np.int64),
        *(np.ascontiguousarray(moments, dtype=float) for moments in (filtered_means, filtered_covs)),
        *(np.ascontiguousarray(moments, dtype=float) for moments in (predicted_means, predicted_covs)),
        _mask(diffuse, n),
        A,
        C,
        D,
        R,
        smoothed_means,
        smoothed_covs,
        cross_covs,
        none,  # the disturbances: the score's (lds_score) keeps them
        np.ones(n, dtype=np.bool_),
    )
    return smoothed_means, smoothed_covs, cross_covs


# ------------------------------------------------------------------ the sampler
@kernel
def _backward_work(n: int) -> tuple:
    """Scratch space for :func:`_backward_step`."""
    return np.empty((n, n)), np.empty((n, n)), np.empty((n, n)), np.empty((n, n))


@kernel
def _backward_step(
    filtered_cov: np.ndarray,
    predicted_cov: np.ndarray,
    A: np.ndarray,
    Q: np.ndarray,
    gain: np.ndarray,
    conditional: np.ndarray,
    work: tuple,
) -> None:
    """The law of x_t given x_t+1 and y_0..t: x_t|t + J (x_t+1 - x_t+1|t) and covariance Sigma.

    J = P_t|t A^T P_t+1|t^- (a reflexive generalised inverse from a semi-definite
    Cholesky factor, exact also when P_t+1|t is singular) goes to ``gain``, and
    Sigma = (I - J A) P_t|t (I - J A)^T + J Q J^T = P_t|t - J P_t+1|t J^T, a sum of
    positive semi-definite terms, to ``conditional``.
    """
    factor, cross, joseph, product = work
    n = gain.shape[0]
    copy_into(predicted_cov, factor)
    cholesky_in_place(factor, n, np.True_)
    for i in range(n):  # cross = A P_t|t = Cov(x_t+1, x_t | y_0..t)
        for j in range(n):
            value = 0.0
            for k in range(n):
                value += A[i, k] * filtered_cov[k, j]
            cross[i, j] = value
    for j in range(n):  # row j of J = P^- (A P_t|t)[:, j]
        for i in range(n):
            gain[j, i] = cross[i, j]
        forward_substitute(factor, n, gain[j])
        backward_substitute(factor, n, gain[j])
    for i in range(n):
        for j in range(n):
            value = 1.0 if i == j else 0.0
            for k in range(n):
                value -= gain[i, k] * A[k, j]
            joseph[i, j] = value
    congruence(joseph, filtered_cov, n, conditional, product, np.False_)
    congruence(gain, Q, n, conditional, product, np.True_)


@kernel
def _sample_sequence(
    filtered_means, filtered_covs, predicted_means, predicted_covs, first, last, A, Q, draws, paths
) -> None:
    """Backward sampling over rows ``first:last``, for every set of draws."""
    n_samples, _, n = draws.shape
    work = _backward_work(n)
    gain, factor = np.empty((n, n)), np.empty((n, n))
    difference = np.empty(n)
    for t in range(last - 1, first - 1, -1):
        final = t == last - 1
        if final:
            copy_into(filtered_covs[t], factor)
        else:
            _backward_step(filtered_covs[t], predicted_covs[t + 1], _at(A, t + 1), _at(Q, t + 1), gain, factor, work)
        cholesky_in_place(factor, n, np.True_)
        for r in range(n_samples):
            z = draws[r, t]
            if not final:
                for i in range(n):
                    difference[i] = paths[r, t + 1, i] - predicted_means[t + 1, i]
            for i in range(n):
                value = filtered_means[t, i]
                for j in range(i + 1):
                    value += factor[i, j] * z[j]
                if not final:
                    for j in range(n):
                        value += gain[i, j] * difference[j]
                paths[r, t, i] = value


@parallel(tasks=sequences_of(4))
def _sample(filtered_means, filtered_covs, predicted_means, predicted_covs, offsets, A, Q, draws, paths):
    for s in prange(offsets.shape[0] - 1):
        _sample_sequence(
            filtered_means,
            filtered_covs,
            predicted_means,
            predicted_covs,
            offsets[s],
            offsets[s + 1],
            A,
            Q,
            draws,
            paths,
        )


def sample_states(
    filtered_means: np.ndarray,
    filtered_covs: np.ndarray,
    predicted_means: np.ndarray,
    predicted_covs: np.ndarray,
    offsets: np.ndarray,
    transition_matrices: np.ndarray,
    transition_covs: np.ndarray,
    draws: np.ndarray,
) -> np.ndarray:
    """State paths drawn from p(x | y) by forward filtering, backward sampling.

    ``draws`` (n_steps, n), or (n_samples, n_steps, n) for several paths at once, are
    standard normal variates, so the caller's generator fixes the result; paths come
    back in the same shape. Backwards from x_T = x_T|T + L_T z_T,
    x_t = x_t|t + J_t (x_t+1 - x_t+1|t) + L_t z_t with L_t L_t^T = Sigma_t
    (lower Cholesky factors, semi-definite allowed). Zero draws give the smoothed means.
    """
    draws = np.asarray(draws, dtype=float)
    batch = np.ascontiguousarray(draws.reshape((-1, *draws.shape[-2:])))
    paths = np.empty_like(batch)
    _sample(
        filtered_means,
        filtered_covs,
        predicted_means,
        predicted_covs,
        np.asarray(offsets, dtype=np.int64),
        _stack(transition_matrices),
        _stack(transition_covs),
        batch,
        paths,
    )
    return paths.reshape(draws.shape)
