"""Message passing over segmentations: the explicit-duration hidden semi-Markov model.

A segmentation of y_0 .. y_T-1 cuts it into segments (state k, start u, duration d): the
first state follows ``initial_probs``, each next state follows row k of
``transition_matrix`` (zero diagonal: a segment ends when the state changes), and

    p(y, segmentation) = pi_k1 prod_i A_u_i+1[k_i, k_i+1] prod_i w[kind_i, k_i, d_i - 1] prod_t b_t(z_t),

where A_u is the matrix of the switch into a segment starting at step u: ``transition_matrix``
is one matrix (K, K), or one per step (n_steps, K, K) for switches driven by inputs (row u of a
sequence's first step is unused).

with ``weights`` w (4, K, D) by segment kind: 0 inner, 1 first (starts at t = 0), 2 last
(reaches t = T-1), 3 the only one. The caller chooses them: the duration pmf p(d) on
1 .. D for an inner segment; for a right-censored last one the survival P(d' >= d); for a
left-censored first one its residual law. ``survival`` (2, K, D) holds P(duration >= d)
of the inner (0) and first (1) laws; it gives the filtered probabilities, and a duration of
survival 0 is skipped (the first law's support must lie within the inner law's).

Scaled forward pass, with c_t = p(y_t | y_<t) e^-m_t, m_t = max_k log b_t(k),
e_t(k) = b_t(k) e^-m_t / c_t and u = t - d + 1:

    start_t(k) = p(a segment k starts at t, y_<t) / p(y_<t) = pi_k (t = 0), sum_j end_t-1(j) A_t[j, k]
    occupancy_t(k) = sum_d start_u(k) S(d) prod_{s=u..t-1} e_s(k) b_t(k) e^-m_t,   c_t = sum_k occupancy_t(k)
    end_t(k) = p(a segment k ends at t, y_<=t) / p(y_<=t) = sum_d start_u(k) w(d) prod_{s=u..t} e_s(k)

and log p(y) = sum_t (log c_t + m_t) + log sum_k end_T-1(k) (the last term is 0 when the
last segment is right-censored). The backward pass mirrors it, so a segment's posterior is
start_u(k) w(d) prod e_s(k) beta_t(k) / sum_k end_T-1(k). Each costs O(T K^2 + T K D) per
sequence and O(T K) memory: no expansion into K D states, no (T, K, K) array (unless the
caller gives per-step matrices; the logit M-step of input-driven switches needs the expected
switches of every step anyway, which :func:`hsmm_smoother` then returns per step). The products
of e_s over a segment are built from its start (forward) or end (backward) in rolling (K, D)
buffers: forward, each value is a scaled predicted probability over S(d), below 1 / S(d);
backward, a ratio of likelihoods, finite unless the duration law is far too short for the
data (then :func:`hsmm_smoother` says so with a NaN log-likelihood).

Sequences are stored back to back (``offsets``, as in :mod:`modeshift._kernels.hmm`) and
processed in parallel.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from modeshift._kernels.compile import kernel
from modeshift._kernels.recursions import draw, scaled_table
from modeshift._kernels.threads import parallel, sequences_of

__all__ = ["hsmm_filter", "hsmm_sample_posterior", "hsmm_smoother", "hsmm_viterbi"]

_NEGLIGIBLE = 1e-300  # scaled forward mass below this is taken as 0 by the backward pass


@kernel(inline="always")
def _kind(u: int, t: int, first: int, last: int) -> int:
    """0 inner, 1 first, 2 last, 3 only: the segment [u, t] of the sequence [first, last)."""
    return (u == first) + 2 * (t == last - 1)


@kernel(inline="always")
def _at(transmat, t: int) -> int:
    """The index in ``transmat`` (1 or n_steps, K, K) of the switch into a segment starting at t."""
    return t if transmat.shape[0] > 1 else 0


@kernel
def _forward_sequence(first, last, initial, transmat, weights, survival, e, start, end, filtered, elapsed):
    """Fills rows first..last-1 of ``start``, ``end``, ``filtered``; turns the rows of the scaled
    likelihood table ``e`` into e_t (divided by c_t). Returns sum_t log c_t (-inf if impossible).

    ``elapsed`` (K, D) rolls along: at step t, slot u mod D holds start_u(k) prod_{s=u..t-1} e_s(k),
    the predicted mass of a segment begun at u divided by nothing smaller than S(t - u + 1), so it
    stays below 1 / S(d) (products of e_s alone could overflow over a long segment)."""
    n_states = initial.shape[0]
    max_duration = weights.shape[2]
    occupancy = np.empty(n_states)
    log_scale = 0.0
    for t in range(first, last):
        moves = transmat[_at(transmat, t)]
        for k in range(n_states):
            if t == first:
                start[t, k] = initial[k]
            else:
                total = 0.0
                for j in range(n_states):
                    total += end[t - 1, j] * moves[j, k]
                start[t, k] = total
        total = 0.0
        for k in range(n_states):
            occupied = 0.0
            ended = 0.0
            slot = t % max_duration + 1
            for d in range(1, min(max_duration, t - first + 1) + 1):
                u = t - d + 1
                slot = slot - 1 if slot > 0 else max_duration - 1  # u mod D
                lasting = survival[1 if u == first else 0, k, d - 1]
                if lasting == 0.0:  # impossible: drop it (unbounded, it could overflow)
                    elapsed[k, slot] = 0.0
                    continue
                if d == 1:
                    elapsed[k, slot] = start[t, k]
                else:
                    elapsed[k, slot] *= e[t - 1, k]
                mass = elapsed[k, slot] * e[t, k]  # e[t] is still b_t(k) e^-m_t here
                occupied += mass * lasting
                ended += mass * weights[_kind(u, t, first, last), k, d - 1]
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


@kernel
def _log_likelihood(first, last, initial, transmat, weights, survival, e, shifts, start, end, filtered, elapsed):
    """:func:`_forward_sequence` over rows first..last-1, then the sequence's log p(y) =
    sum_t (log c_t + m_t) + log sum_k end_T-1(k), with m_t the table's ``shifts`` (-inf if impossible)."""
    value = _forward_sequence(first, last, initial, transmat, weights, survival, e, start, end, filtered, elapsed)
    if np.isfinite(value):
        value += np.log(end[last - 1].sum()) + shifts[first:last].sum()
    return value


@kernel
def _backward_sequence(
    first, last, transmat, weights, survival, e, start, end, posteriors, durations, pairs, pair_row, following
):
    """The backward pass: adds segment-duration posteriors by kind to ``durations`` (4, K, D) and
    expected switches to ``pairs[pair_row]`` (K, K) (``pair_row`` -1: to ``pairs[u]``, u the step the
    new segment starts); fills the state posteriors.

    ``following`` (K, D) rolls along as ``elapsed`` does forward: at step u, slot t mod D holds
    prod_{s=u..t} e_s(k) beta_t(k), beta_t(k) the backward message of a segment ending at t."""
    n_states = transmat.shape[1]
    max_duration = weights.shape[2]
    tail = 0.0
    for k in range(n_states):
        tail += end[last - 1, k]
    start_beta = np.zeros(n_states)  # beta of a segment starting at u + 1
    end_beta = np.ones(n_states)  # beta of a segment ending at u
    occupied = np.zeros(n_states)  # running sum_{t' >= t} P(end at t') - sum_{u > t} P(start at u)
    for u in range(last - 1, first - 1, -1):
        following_start = min(u + 1, last - 1)  # at u = last - 1 no segment follows: unused
        moves = transmat[_at(transmat, following_start)]
        switches = pairs[following_start if pair_row < 0 else pair_row]
        for k in range(n_states):
            if u < last - 1:
                end_beta[k] = 0.0
            if u < last - 1 and end[u, k] >= _NEGLIGIBLE:  # without forward mass the message is unused, maybe huge
                for j in range(n_states):
                    switches[k, j] += end[u, k] * moves[k, j] * start_beta[j] / tail
                    end_beta[k] += moves[k, j] * start_beta[j]
            occupied[k] += end[u, k] * end_beta[k] / tail
            posteriors[u, k] = occupied[k]
        for k in range(n_states):
            total = 0.0
            weight = start[u, k] / tail
            slot = u % max_duration - 1
            for d in range(1, min(max_duration, last - u) + 1):
                t = u + d - 1
                slot = slot + 1 if slot < max_duration - 1 else 0  # t mod D
                if survival[1 if u == first else 0, k, d - 1] == 0.0:
                    following[k, slot] = 0.0
                    continue
                following[k, slot] = e[u, k] * (end_beta[k] if d == 1 else following[k, slot])
                kind = _kind(u, t, first, last)
                term = weights[kind, k, d - 1] * following[k, slot]
                total += term
                durations[kind, k, d - 1] += weight * term
            start_beta[k] = total if start[u, k] >= _NEGLIGIBLE else 0.0
            occupied[k] -= weight * start_beta[k]
    for t in range(first, last):  # round-off of the running sums
        norm = 0.0
        for k in range(n_states):
            posteriors[t, k] = max(posteriors[t, k], 0.0)
            norm += posteriors[t, k]
        for k in range(n_states):
            posteriors[t, k] /= norm


@parallel(tasks=sequences_of(2))
def _smoother(table, shifts, offsets, initial, transmat, per_step, weights, survival, start, end, filtered, smoothed):
    n_sequences = offsets.shape[0] - 1
    n_states, max_duration = weights.shape[1:]
    log_lik = np.empty(n_sequences)
    durations = np.zeros((n_sequences, 4, n_states, max_duration))
    pairs = np.zeros((table.shape[0] if per_step else n_sequences, n_states, n_states))
    for s in prange(n_sequences):
        first, last = offsets[s], offsets[s + 1]
        rolling = np.empty((n_states, max_duration))
        value = _log_likelihood(
            first, last, initial, transmat, weights, survival, table, shifts, start, end, filtered, rolling
        )
        if np.isfinite(value):
            _backward_sequence(
                first,
                last,
                transmat,
                weights,
                survival,
                table,
                start,
                end,
                smoothed,
                durations[s],
                pairs,
                -1 if per_step else np.int64(s),  # prange indices are unsigned
                rolling,
            )
            if not (np.isfinite(durations[s]).all() and np.isfinite(smoothed[first:last]).all()):
                value = np.nan  # a backward message overflowed
        log_lik[s] = value
    return log_lik, durations.sum(axis=0), pairs


def _matrices(transition_matrix: np.ndarray) -> np.ndarray:
    """The switch matrices as the compiled passes take them: (1 or n_steps, K, K)."""
    matrices = np.asarray(transition_matrix, dtype=np.float64)
    return np.ascontiguousarray(matrices[None] if matrices.ndim == 2 else matrices)


def hsmm_smoother(
    log_likelihoods: np.ndarray,
    offsets: np.ndarray,
    initial_probs: np.ndarray,
    transition_matrix: np.ndarray,
    weights: np.ndarray,
    survival: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Forward-backward over segmentations.

    Returns the log-likelihood of each sequence (-inf where impossible; NaN where a backward
    message overflowed, which a duration law far too short for the data can cause: a ratio
    p(y_>=u | segment) / p(y_>=u | y_<u) beyond 1e308), the state posteriors p(z_t | y)
    (n_steps, K), the expected number of segments of each kind, state and duration
    (4, K, D) and of switches i -> j (K, K), all summed over sequences, and the filtered
    probabilities p(z_t | y_<=t) (n_steps, K). With per-step matrices (n_steps, K, K) the switches
    are per step too, (n_steps, K, K): row u holds those into a segment starting at u (zero at a
    sequence's first step).
    """
    table, shifts = scaled_table(np.ascontiguousarray(log_likelihoods, dtype=np.float64))
    shape = table.shape
    filtered, smoothed = np.empty(shape), np.empty(shape)
    per_step = np.ndim(transition_matrix) == 3
    log_lik, durations, pairs = _smoother(
        table,
        shifts,
        offsets,
        initial_probs,
        _matrices(transition_matrix),
        per_step,
        weights,
        survival,
        np.empty(shape),
        np.empty(shape),
        filtered,
        smoothed,
    )
    return log_lik, smoothed, durations, pairs if per_step else pairs.sum(axis=0), filtered


@kernel
def _remaining(first, last, weights, e, elapsed, out):
    """p(z_T-1 = k, the segment lasts r more steps | y), r = 0 .. D-1, into ``out`` (K, D): a segment
    of k begun d steps before the end (of mass ``elapsed`` e_T-1(k)) lasts d + r with weight w(d + r)."""
    n_states, max_duration = out.shape
    t = last - 1
    for k in range(n_states):
        for d in range(1, min(max_duration, t - first + 1) + 1):
            u = t - d + 1
            kind = 1 if u == first else 0
            mass = elapsed[k, u % max_duration] * e[t, k]
            for r in range(max_duration - d + 1):
                out[k, r] += mass * weights[kind, k, d + r - 1]
    out /= out.sum()


@parallel(tasks=sequences_of(2))
def _filter(table, shifts, offsets, initial, transmat, weights, survival, start, end, filtered, remaining):
    n_sequences = offsets.shape[0] - 1
    n_states, max_duration = weights.shape[1:]
    log_lik = np.empty(n_sequences)
    for s in prange(n_sequences):
        first, last = offsets[s], offsets[s + 1]
        elapsed = np.empty((n_states, max_duration))
        log_lik[s] = _log_likelihood(
            first, last, initial, transmat, weights, survival, table, shifts, start, end, filtered, elapsed
        )
        if np.isfinite(log_lik[s]) and remaining.shape[0]:
            _remaining(first, last, weights, table, elapsed, remaining[s])
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
    log_lik = _filter(
        table,
        shifts,
        offsets,
        initial_probs,
        _matrices(transition_matrix),
        weights,
        survival,
        np.empty(table.shape),
        np.empty(table.shape),
        filtered,
        remaining,
    )
    return filtered, log_lik, remaining if with_remaining else None


@kernel
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
                    value = best_end[t - 1, j] + log_transmat[_at(log_transmat, t), j, k]
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


@parallel(tasks=sequences_of(1))
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
        logs = [np.log(array) for array in (np.asarray(initial_probs, dtype=np.float64), _matrices(transition_matrix))]
        logs.append(np.log(np.asarray(weights, dtype=np.float64)))
    shape = log_likelihoods.shape
    path = np.zeros(shape[0], dtype=np.int64)
    log_prob = _viterbi(log_likelihoods, offsets, *logs, np.empty(shape), np.empty(shape), path)
    return path, log_prob


@kernel
def _sample_sequence(first, last, transmat, weights, e, start, end, uniforms, path):
    """Backward sampling of one segmentation given the forward pass: the last segment's state by
    end_T-1, each earlier one's by end_t(k) A[k, next]; a segment's duration by its forward term
    start_u(k) w(d) prod_{s=u..t} e_s(k), taken in logs (the product alone could overflow)."""
    n_states = transmat.shape[1]
    max_duration = weights.shape[2]
    probs = np.empty(n_states)
    terms = np.empty(max_duration)
    t, following, draws = last - 1, -1, 2 * first
    while t >= first:
        for k in range(n_states):
            probs[k] = end[t, k] * (1.0 if following < 0 else transmat[_at(transmat, t + 1), k, following])
        k = draw(probs, uniforms[draws])
        log_product = 0.0
        n_terms = min(max_duration, t - first + 1)
        for d in range(1, n_terms + 1):
            u = t - d + 1
            log_product += np.log(e[u, k])
            terms[d - 1] = np.log(start[u, k] * weights[_kind(u, t, first, last), k, d - 1]) + log_product
        top = terms[:n_terms].max()
        for d in range(n_terms):
            terms[d] = np.exp(terms[d] - top)
        d = draw(terms[:n_terms], uniforms[draws + 1]) + 1
        path[t - d + 1 : t + 1] = k
        t, following, draws = t - d, k, draws + 2


@parallel(tasks=sequences_of(2))
def _sample_posterior(
    table, shifts, offsets, initial, transmat, weights, survival, start, end, filtered, uniforms, path
):
    n_sequences = offsets.shape[0] - 1
    n_states, max_duration = weights.shape[1:]
    log_lik = np.empty(n_sequences)
    for s in prange(n_sequences):
        first, last = offsets[s], offsets[s + 1]
        elapsed = np.empty((n_states, max_duration))
        log_lik[s] = _log_likelihood(
            first, last, initial, transmat, weights, survival, table, shifts, start, end, filtered, elapsed
        )
        if np.isfinite(log_lik[s]):
            _sample_sequence(first, last, transmat, weights, table, start, end, uniforms, path)
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
    log_lik = _sample_posterior(
        table,
        shifts,
        offsets,
        initial_probs,
        _matrices(transition_matrix),
        weights,
        survival,
        np.empty(table.shape),
        np.empty(table.shape),
        np.empty(table.shape),
        np.asarray(uniforms, dtype=np.float64),
        path,
    )
    return path, log_lik
