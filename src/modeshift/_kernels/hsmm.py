"""Message passing over segmentations: the explicit-duration hidden semi-Markov model.

A segmentation of y_0 .. y_T-1 cuts it into segments (state k, start u, duration d): the
first state follows ``initial_probs``, each next state follows row k of
``transition_matrix`` (zero diagonal: a segment ends when the state changes), and

    p(y, segmentation) = pi_k1 prod_i A[k_i, k_i+1] prod_i w[kind_i, k_i, d_i - 1] prod_t b_t(z_t),

with ``weights`` w (4, K, D) by segment kind: 0 inner, 1 first (starts at t = 0), 2 last
(reaches t = T-1), 3 the only one. The caller chooses them: the duration pmf p(d) on
1 .. D for an inner segment; for a right-censored last one the survival P(d' >= d); for a
left-censored first one its residual law. ``survival`` (2, K, D) holds P(duration >= d)
of the inner (0) and first (1) laws; it gives the filtered probabilities.

Scaled forward pass, with c_t = p(y_t | y_<t) e^-m_t, m_t = max_k log b_t(k),
e_t(k) = b_t(k) e^-m_t / c_t and u = t - d + 1:

    start_t(k) = p(a segment k starts at t, y_<t) / p(y_<t) = pi_k (t = 0), sum_j end_t-1(j) A[j, k]
    occupancy_t(k) = sum_d start_u(k) S(d) prod_{s=u..t-1} e_s(k) b_t(k) e^-m_t,   c_t = sum_k occupancy_t(k)
    end_t(k) = p(a segment k ends at t, y_<=t) / p(y_<=t) = sum_d start_u(k) w(d) prod_{s=u..t} e_s(k)

and log p(y) = sum_t (log c_t + m_t) + log sum_k end_T-1(k) (the last term is 0 when the
last segment is right-censored). The backward pass mirrors it, so a segment's posterior is
start_u(k) w(d) prod e_s(k) beta_t(k) / sum_k end_T-1(k). Each costs O(T K^2 + T K D) per
sequence and O(T K) memory: no expansion into K D states, no (T, K, K) array.

Sequences are stored back to back (``offsets``, as in :mod:`modeshift._kernels.hmm`) and
processed in parallel.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from modeshift._kernels.recursions import draw, scaled_table
from modeshift._kernels.threads import threads_for

__all__ = ["hsmm_filter", "hsmm_sample_posterior", "hsmm_smoother", "hsmm_viterbi"]


@njit(cache=True, inline="always")
def _kind(u: int, t: int, first: int, last: int) -> int:
    """0 inner, 1 first, 2 last, 3 only: the segment [u, t] of the sequence [first, last)."""
    return (u == first) + 2 * (t == last - 1)


@njit(cache=True)
def _forward_sequence(first, last, initial, transmat, weights, survival, e, start, end, filtered):
    """Fills rows first..last-1 of ``start``, ``end``, ``filtered``; turns the rows of the scaled
    likelihood table ``e`` into e_t (divided by c_t). Returns sum_t log c_t (-inf if impossible)."""
    n_states = initial.shape[0]
    max_duration = weights.shape[2]
    occupancy = np.empty(n_states)
    log_scale = 0.0
    for t in range(first, last):
        for k in range(n_states):
            if t == first:
                start[t, k] = initial[k]
            else:
                total = 0.0
                for j in range(n_states):
                    total += end[t - 1, j] * transmat[j, k]
                start[t, k] = total
        total = 0.0
        for k in range(n_states):
            product = e[t, k]  # b_t(k) e^-m_t, then times e_s(k) for s = t-1, t-2, ...
            occupied = 0.0
            ended = 0.0
            for d in range(1, min(max_duration, t - first + 1) + 1):
                u = t - d + 1
                mass = start[u, k] * product
                occupied += mass * survival[1 if u == first else 0, k, d - 1]
                ended += mass * weights[_kind(u, t, first, last), k, d - 1]
                if u == first or product == 0.0:
                    break
                product *= e[u - 1, k]
            occupancy[k] = occupied
            end[t, k] = ended
            total += occupied
        if not total > 0.0:
            return -np.inf
        for k in range(n_states):
            filtered[t, k] = occupancy[k] / total
            end[t, k] /= total
            e[t, k] /= total
        log_scale += np.log(total)
    return log_scale


@njit(cache=True)
def _backward_sequence(first, last, transmat, weights, e, start, end, end_beta, posteriors, durations, pairs):
    """The backward pass: adds segment-duration posteriors by kind to ``durations`` (4, K, D) and
    expected switches to ``pairs`` (K, K); fills the state posteriors. Returns sum_k end_T-1(k)."""
    n_states = transmat.shape[0]
    max_duration = weights.shape[2]
    tail = 0.0
    for k in range(n_states):
        tail += end[last - 1, k]
    start_beta = np.zeros(n_states)  # beta of a segment starting at u + 1
    occupied = np.zeros(n_states)  # running sum_{t' >= t} P(end at t') - sum_{u > t} P(start at u)
    for u in range(last - 1, first - 1, -1):
        for k in range(n_states):
            if u == last - 1:
                end_beta[u, k] = 1.0
            else:
                total = 0.0
                for j in range(n_states):
                    switch = end[u, k] * transmat[k, j] * start_beta[j] / tail
                    pairs[k, j] += switch
                    total += transmat[k, j] * start_beta[j]
                end_beta[u, k] = total
            occupied[k] += end[u, k] * end_beta[u, k] / tail
            posteriors[u, k] = occupied[k]
        for k in range(n_states):
            product = 1.0
            total = 0.0
            for d in range(1, min(max_duration, last - u) + 1):
                t = u + d - 1
                product *= e[t, k]
                kind = _kind(u, t, first, last)
                term = weights[kind, k, d - 1] * product * end_beta[t, k]
                total += term
                durations[kind, k, d - 1] += start[u, k] * term / tail
                if product == 0.0:
                    break
            start_beta[k] = total
            occupied[k] -= start[u, k] * total / tail
    for t in range(first, last):  # round-off of the running sums
        norm = 0.0
        for k in range(n_states):
            posteriors[t, k] = max(posteriors[t, k], 0.0)
            norm += posteriors[t, k]
        for k in range(n_states):
            posteriors[t, k] /= norm
    return tail


@njit(cache=True, parallel=True)
def _smoother(table, shifts, offsets, initial, transmat, weights, survival, start, end, end_beta, filtered, smoothed):
    n_sequences = offsets.shape[0] - 1
    n_states = initial.shape[0]
    log_lik = np.empty(n_sequences)
    durations = np.zeros((n_sequences, 4, n_states, weights.shape[2]))
    pairs = np.zeros((n_sequences, n_states, n_states))
    for s in prange(n_sequences):
        first, last = offsets[s], offsets[s + 1]
        value = _forward_sequence(first, last, initial, transmat, weights, survival, table, start, end, filtered)
        if np.isfinite(value):
            tail = _backward_sequence(
                first, last, transmat, weights, table, start, end, end_beta, smoothed, durations[s], pairs[s]
            )
            value += np.log(tail) + shifts[first:last].sum()
        log_lik[s] = value
    return log_lik, durations.sum(axis=0), pairs.sum(axis=0)


def hsmm_smoother(
    log_likelihoods: np.ndarray,
    offsets: np.ndarray,
    initial_probs: np.ndarray,
    transition_matrix: np.ndarray,
    weights: np.ndarray,
    survival: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Forward-backward over segmentations.

    Returns the log-likelihood of each sequence, the state posteriors p(z_t | y)
    (n_steps, K), the expected number of segments of each kind, state and duration
    (4, K, D) and of switches i -> j (K, K), all summed over sequences, and the filtered
    probabilities p(z_t | y_<=t) (n_steps, K).
    """
    table, shifts = scaled_table(np.ascontiguousarray(log_likelihoods, dtype=np.float64))
    shape = table.shape
    filtered, smoothed = np.empty(shape), np.empty(shape)
    with threads_for(len(offsets) - 1):
        log_lik, durations, pairs = _smoother(
            table,
            shifts,
            offsets,
            initial_probs,
            transition_matrix,
            weights,
            survival,
            np.empty(shape),
            np.empty(shape),
            np.empty(shape),
            filtered,
            smoothed,
        )
    return log_lik, smoothed, durations, pairs, filtered


@njit(cache=True)
def _remaining(first, last, weights, e, start, out):
    """p(z_T-1 = k, the segment lasts r more steps | y), r = 0 .. D-1, into ``out`` (K, D): a segment
    of k begun d steps before the end (of mass start_u(k) prod e_s(k)) lasts d + r with weight w(d + r)."""
    n_states, max_duration = out.shape
    t = last - 1
    for k in range(n_states):
        product = e[t, k]
        for d in range(1, min(max_duration, t - first + 1) + 1):
            u = t - d + 1
            kind = 1 if u == first else 0
            mass = start[u, k] * product
            for r in range(max_duration - d + 1):
                out[k, r] += mass * weights[kind, k, d + r - 1]
            if u == first or product == 0.0:
                break
            product *= e[u - 1, k]
    out /= out.sum()


@njit(cache=True, parallel=True)
def _filter(table, shifts, offsets, initial, transmat, weights, survival, start, end, filtered, remaining):
    n_sequences = offsets.shape[0] - 1
    log_lik = np.empty(n_sequences)
    for s in prange(n_sequences):
        first, last = offsets[s], offsets[s + 1]
        value = _forward_sequence(first, last, initial, transmat, weights, survival, table, start, end, filtered)
        if np.isfinite(value):
            if remaining.shape[0]:
                _remaining(first, last, weights, table, start, remaining[s])
            value += np.log(end[last - 1].sum()) + shifts[first:last].sum()
        log_lik[s] = value
    return log_lik


def hsmm_filter(
    log_likelihoods: np.ndarray,
    offsets: np.ndarray,
    initial_probs: np.ndarray,
    transition_matrix: np.ndarray,
    weights: np.ndarray,
    survival: np.ndarray,
    with_remaining: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The forward pass: filtered probabilities p(z_t | y_<=t) (n_steps, K), the log-likelihood of
    each sequence, and with ``with_remaining`` the law of the state at each sequence's end with the
    steps it still lasts, p(z_T-1 = k, r more steps | y) (n_sequences, K, D), r = 0 .. D-1 (O(K D^2))."""
    table, shifts = scaled_table(np.ascontiguousarray(log_likelihoods, dtype=np.float64))
    n_states, max_duration = weights.shape[1:]
    filtered = np.empty(table.shape)
    remaining = np.zeros((len(offsets) - 1 if with_remaining else 0, n_states, max_duration))
    with threads_for(len(offsets) - 1):
        log_lik = _filter(
            table,
            shifts,
            offsets,
            initial_probs,
            transition_matrix,
            weights,
            survival,
            np.empty(table.shape),
            np.empty(table.shape),
            filtered,
            remaining,
        )
    return filtered, log_lik, remaining if with_remaining else None


@njit(cache=True)
def _viterbi_sequence(log_likelihoods, first, last, log_initial, log_transmat, log_weights, best_start, best_end, path):
    """The most probable segmentation of one sequence, written into ``path``; returns its log p(y, path)."""
    n_states = log_initial.shape[0]
    max_duration = log_weights.shape[2]
    n = last - first
    source = np.zeros((n, n_states), dtype=np.int64)  # the state before a segment starting at t
    duration = np.ones((n, n_states), dtype=np.int64)  # the best duration of a segment ending at t
    for t in range(first, last):
        for k in range(n_states):
            if t == first:
                best_start[t, k] = log_initial[k]
            else:
                best, arg = -np.inf, 0
                for j in range(n_states):
                    value = best_end[t - 1, j] + log_transmat[j, k]
                    if value > best:
                        best, arg = value, j
                best_start[t, k] = best
                source[t - first, k] = arg
        for k in range(n_states):
            evidence = 0.0
            best, arg = -np.inf, 1
            for d in range(1, min(max_duration, t - first + 1) + 1):
                u = t - d + 1
                evidence += log_likelihoods[u, k]
                value = best_start[u, k] + log_weights[_kind(u, t, first, last), k, d - 1] + evidence
                if value > best:
                    best, arg = value, d
            best_end[t, k] = best
            duration[t - first, k] = arg
    t, k = last - 1, 0
    for j in range(n_states):
        if best_end[t, j] > best_end[t, k]:
            k = j
    log_prob = best_end[t, k]
    while t >= first:
        u = t - duration[t - first, k] + 1
        path[u : t + 1] = k
        previous = source[u - first, k]
        t, k = u - 1, previous
    return log_prob


@njit(cache=True, parallel=True)
def _viterbi(log_likelihoods, offsets, log_initial, log_transmat, log_weights, best_start, best_end, path):
    n_sequences = offsets.shape[0] - 1
    log_prob = np.empty(n_sequences)
    for s in prange(n_sequences):
        log_prob[s] = _viterbi_sequence(
            log_likelihoods,
            offsets[s],
            offsets[s + 1],
            log_initial,
            log_transmat,
            log_weights,
            best_start,
            best_end,
            path,
        )
    return log_prob


def hsmm_viterbi(
    log_likelihoods: np.ndarray,
    offsets: np.ndarray,
    initial_probs: np.ndarray,
    transition_matrix: np.ndarray,
    weights: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The most probable segmentation of each sequence (max-product in log space): the state path
    (n_steps,) and log p(y, path) of each sequence (-inf where no segmentation is possible)."""
    log_likelihoods = np.ascontiguousarray(log_likelihoods, dtype=np.float64)
    with np.errstate(divide="ignore"):
        logs = [np.log(np.asarray(array, dtype=np.float64)) for array in (initial_probs, transition_matrix, weights)]
    shape = log_likelihoods.shape
    path = np.zeros(shape[0], dtype=np.int64)
    with threads_for(len(offsets) - 1):
        log_prob = _viterbi(log_likelihoods, offsets, *logs, np.empty(shape), np.empty(shape), path)
    return path, log_prob


@njit(cache=True)
def _sample_sequence(first, last, transmat, weights, e, start, end, uniforms, path):
    """Backward sampling of one segmentation given the forward pass: the last segment's state by
    end_T-1, each earlier one's by end_t(k) A[k, next]; a segment's duration by its forward term."""
    n_states = transmat.shape[0]
    max_duration = weights.shape[2]
    probs = np.empty(n_states)
    terms = np.empty(max_duration)
    t, following, draws = last - 1, -1, 2 * first
    while t >= first:
        for k in range(n_states):
            probs[k] = end[t, k] * (1.0 if following < 0 else transmat[k, following])
        k = draw(probs, uniforms[draws])
        product = 1.0
        n_terms = min(max_duration, t - first + 1)
        for d in range(1, n_terms + 1):
            u = t - d + 1
            product *= e[u, k]
            terms[d - 1] = start[u, k] * weights[_kind(u, t, first, last), k, d - 1] * product
        d = draw(terms[:n_terms], uniforms[draws + 1]) + 1
        path[t - d + 1 : t + 1] = k
        t, following, draws = t - d, k, draws + 2


@njit(cache=True, parallel=True)
def _sample_posterior(
    table, shifts, offsets, initial, transmat, weights, survival, start, end, filtered, uniforms, path
):
    n_sequences = offsets.shape[0] - 1
    log_lik = np.empty(n_sequences)
    for s in prange(n_sequences):
        first, last = offsets[s], offsets[s + 1]
        value = _forward_sequence(first, last, initial, transmat, weights, survival, table, start, end, filtered)
        if np.isfinite(value):
            _sample_sequence(first, last, transmat, weights, table, start, end, uniforms, path)
            value += np.log(end[last - 1].sum()) + shifts[first:last].sum()
        log_lik[s] = value
    return log_lik


def hsmm_sample_posterior(
    log_likelihoods: np.ndarray,
    offsets: np.ndarray,
    initial_probs: np.ndarray,
    transition_matrix: np.ndarray,
    weights: np.ndarray,
    survival: np.ndarray,
    uniforms: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """One segmentation of each sequence drawn from p(segmentation | y) (forward filtering, backward
    sampling), as a state path (n_steps,), and the log-likelihoods. ``uniforms`` (2 n_steps,) are U(0, 1)
    variates (two per segment at most: its state and its duration), so the caller's generator fixes the draw."""
    table, shifts = scaled_table(np.ascontiguousarray(log_likelihoods, dtype=np.float64))
    path = np.zeros(table.shape[0], dtype=np.int64)
    with threads_for(len(offsets) - 1):
        log_lik = _sample_posterior(
            table,
            shifts,
            offsets,
            initial_probs,
            transition_matrix,
            weights,
            survival,
            np.empty(table.shape),
            np.empty(table.shape),
            np.empty(table.shape),
            np.asarray(uniforms, dtype=np.float64),
            path,
        )
    return path, log_lik
