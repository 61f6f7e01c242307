"""Message passing on a hidden Markov chain: filtering, smoothing, Viterbi, path sampling.

Every function works on a batch of sequences stored back to back:

- ``log_likelihoods`` (n_steps, K): log p(y_t | z_t = k) for every step of every sequence;
  or, with ``rows`` (n_steps,) given, a table whose row ``rows[t]`` holds step t's values
  (a discrete emission needs one row per symbol, not one per step);
- ``offsets`` (n_sequences + 1,): sequence ``s`` occupies rows ``offsets[s]:offsets[s+1]``;
- ``initial_probs`` (K,): p(z_0);
- ``transition_matrices`` (1, K, K) for a stationary chain, or (n_steps, K, K) for a
  time-varying one, where ``transition_matrices[t]`` is p(z_t | z_{t-1}) (the entry at a
  sequence's first step is not used).

The recursions are *scaled*: filtered probabilities are renormalised at every step
and the log normalisers are summed, so sequences of any length neither underflow
nor overflow. Each step's emission likelihoods are shifted by their maximum before
exponentiation; when that leaves the step's evidence below ``1e-280`` (an outlier
that every likely state finds impossible) the shift is taken against the predicted
state probabilities instead, so the likelihood stays exact.

Sequences are processed in parallel (``prange``).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

__all__ = [
    "forward_backward",
    "forward_backward_varying",
    "forward_filter",
    "log_likelihood",
    "sample_chain",
    "sample_posterior_paths",
    "viterbi",
]

_TINY = 1e-280
_REDUCTION_FLAGS = {"nnan", "nsz", "reassoc", "contract"}
_N_CHUNKS = 64  # load balance for up to ~16 threads; memory 64 * K * K


# ----------------------------------------------------------------- one time step
# Reassociation lets LLVM vectorise the inner reductions; no NaN can arise in the
# recursions (probabilities, or log-probabilities that are finite or -inf), and
# -inf stays valid (no "ninf" flag). Functions that call each other share the
# flags so LLVM can inline them.


@njit(cache=True, fastmath=_REDUCTION_FLAGS, inline="always")
def _dot(x: np.ndarray, y: np.ndarray) -> float:
    total = 0.0
    for i in range(x.shape[0]):
        total += x[i] * y[i]
    return total


@njit(cache=True, fastmath=_REDUCTION_FLAGS, inline="always")
def _max_plus(x: np.ndarray, y: np.ndarray) -> float:
    """max_i (x[i] + y[i])."""
    best = -np.inf
    for i in range(x.shape[0]):
        value = x[i] + y[i]
        best = value if value > best else best
    return best


@njit(cache=True, fastmath=_REDUCTION_FLAGS, inline="always")
def _argmax_plus(x: np.ndarray, y: np.ndarray) -> int:
    """argmax_i (x[i] + y[i]), the first on ties."""
    best, best_value = 0, -np.inf
    for i in range(x.shape[0]):
        value = x[i] + y[i]
        if value > best_value:
            best, best_value = i, value
    return best


@njit(cache=True, fastmath=_REDUCTION_FLAGS, inline="always")
def _predict(filtered: np.ndarray, incoming: np.ndarray, out: np.ndarray) -> None:
    """out[j] = sum_i filtered[i] p(j | i), with ``incoming[j, i]`` = p(j | i) (a contiguous row per j)."""
    for j in range(out.shape[0]):
        out[j] = _dot(filtered, incoming[j])


def _transposed(matrices: np.ndarray) -> np.ndarray:
    """(M, K, K) matrices with rows and columns swapped, contiguous."""
    return np.ascontiguousarray(np.swapaxes(matrices, 1, 2))


@njit(cache=True, fastmath=_REDUCTION_FLAGS, inline="always")
def _evidence(rows: np.ndarray, table: np.ndarray, table_shifts: np.ndarray, t: int, scaled: np.ndarray) -> float:
    """Copy step t's scaled emission likelihoods into ``scaled``; return their shift."""
    row = rows[t] if rows.shape[0] > 0 else t
    for j in range(scaled.shape[0]):
        scaled[j] = table[row, j]
    return table_shifts[row]


@njit(cache=True, parallel=True)
def _shift_rows(log_likelihoods: np.ndarray, shifted: np.ndarray, shifts: np.ndarray) -> None:
    """Row maxima, and each row minus its maximum (-inf where a row is impossible)."""
    n_rows, n_states = log_likelihoods.shape
    for r in prange(n_rows):
        best = log_likelihoods[r, 0]
        for j in range(1, n_states):
            best = max(best, log_likelihoods[r, j])
        shifts[r] = best
        for j in range(n_states):
            shifted[r, j] = log_likelihoods[r, j] - best if best > -np.inf else -np.inf


def _scaled_table(log_likelihoods: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """exp(log_likelihoods - row maximum) and the row maxima.

    The exponentials are taken by numpy, whose vectorised exp is several times
    faster than the scalar one a compiled loop calls.
    """
    shifted, shifts = np.empty_like(log_likelihoods), np.empty(len(log_likelihoods))
    _shift_rows(log_likelihoods, shifted, shifts)
    return np.exp(shifted, out=shifted), shifts


@njit(cache=True, fastmath=_REDUCTION_FLAGS, inline="always")
def _update(
    predicted: np.ndarray, log_likelihood: np.ndarray, scaled: np.ndarray, shift: float, filtered: np.ndarray
) -> tuple[float, float]:
    """Condition predicted state probabilities on one step's evidence.

    ``scaled`` holds the emission likelihoods exp(log_likelihood - shift). Writes
    p(z_t | y_{0:t}) into ``filtered``; returns ``(normaliser, shift)`` with
    p(y_t | y_{0:t-1}) = normaliser * exp(shift). If the normaliser would
    underflow, the shift is re-taken against the predicted probabilities and
    ``scaled`` rewritten. A zero normaliser means an impossible step.
    """
    n_states = predicted.shape[0]
    if shift == -np.inf:
        return 0.0, shift
    normaliser = 0.0
    for j in range(n_states):
        joint = predicted[j] * scaled[j]
        filtered[j] = joint
        normaliser += joint
    if normaliser < _TINY:
        shift = -np.inf
        for j in range(n_states):
            if predicted[j] > 0.0:
                shift = max(shift, log_likelihood[j] + np.log(predicted[j]))
        if shift == -np.inf:
            return 0.0, shift
        normaliser = 0.0
        for j in range(n_states):
            scaled[j] = np.exp(min(log_likelihood[j] - shift, 700.0))
            filtered[j] = predicted[j] * scaled[j]
            normaliser += filtered[j]
    inverse = 1.0 / normaliser
    for j in range(n_states):
        filtered[j] *= inverse
    return normaliser, shift


@njit(cache=True, fastmath=_REDUCTION_FLAGS, inline="always")
def _condition(
    log_likelihoods: np.ndarray, rows: np.ndarray, table: np.ndarray, table_shifts: np.ndarray, t: int,
    predicted: np.ndarray, scaled: np.ndarray, filtered: np.ndarray,
) -> tuple[float, float]:
    """One filtering step at row t: fetch the evidence, then :func:`_update`."""
    shift = _evidence(rows, table, table_shifts, t, scaled)
    raw = log_likelihoods[rows[t] if rows.shape[0] > 0 else t]
    return _update(predicted, raw, scaled, shift, filtered)


# ------------------------------------------------------------- one sequence
@njit(cache=True, fastmath=_REDUCTION_FLAGS)
def _filter_sequence(
    log_likelihoods: np.ndarray,
    rows: np.ndarray,
    table: np.ndarray,
    table_shifts: np.ndarray,
    first: int,
    last: int,
    initial_probs: np.ndarray,
    incoming: np.ndarray,
    filtered: np.ndarray,
    scaled: np.ndarray,
    normalisers: np.ndarray,
) -> float:
    """Forward pass over rows ``first:last``; returns the sequence's log-likelihood.

    ``incoming`` holds the transposed transition matrices (1 or n_steps, K, K).

    ``filtered``, ``scaled`` and ``normalisers`` each have one row per step of
    the sequence, or a single row that keeps only the latest step.
    """
    varying = incoming.shape[0] > 1
    keep_filtered = filtered.shape[0] > 1
    keep_scaled = scaled.shape[0] > 1
    keep_normalisers = normalisers.shape[0] > 1
    predicted = initial_probs.copy()
    total = 0.0
    for t in range(last - first):
        row = t if keep_filtered else 0
        if t > 0:
            matrix = incoming[first + t] if varying else incoming[0]
            _predict(filtered[t - 1 if keep_filtered else 0], matrix, predicted)
        normaliser, shift = _condition(
            log_likelihoods, rows, table, table_shifts, first + t, predicted,
            scaled[t if keep_scaled else 0], filtered[row],
        )
        if normaliser == 0.0:
            return -np.inf
        normalisers[t if keep_normalisers else 0] = normaliser
        total += np.log(normaliser) + shift
    return total


@njit(cache=True, fastmath=_REDUCTION_FLAGS)
def _smooth_sequence(
    log_likelihoods: np.ndarray,
    rows: np.ndarray,
    table: np.ndarray,
    table_shifts: np.ndarray,
    first: int,
    last: int,
    initial_probs: np.ndarray,
    transition_matrices: np.ndarray,
    incoming: np.ndarray,
    posteriors: np.ndarray,
    filtered: np.ndarray,
    normalisers: np.ndarray,
    pair_counts: np.ndarray,
    backward_weights: np.ndarray,
    per_step: bool,
) -> float:
    """Forward-backward over rows ``first:last``.

    Writes p(z_t | y) into ``posteriors[first:last]`` and adds the pairwise
    posteriors p(z_{t-1}, z_t | y) into ``pair_counts[first + t]`` (``per_step``);
    otherwise writes the backward weights w_t = p(y_t | z_t) beta_t / c_t of steps
    t >= 1 into ``backward_weights[first + t]``, from which the caller forms
    sum_t filtered_{t-1}^T w_t, the summed pair counts divided elementwise by the
    (stationary) transition matrix. Returns the log-likelihood; an impossible
    sequence gets -inf and NaN posteriors. ``filtered`` and ``normalisers`` are
    scratch space for the sequence, (n_steps, K) and (n_steps,).
    """
    n_steps = last - first
    n_states = log_likelihoods.shape[1]
    varying = transition_matrices.shape[0] > 1
    # The scaled emission likelihoods are parked in the posteriors rows until the
    # backward pass overwrites them.
    scaled = posteriors[first:last]
    total = _filter_sequence(
        log_likelihoods, rows, table, table_shifts, first, last, initial_probs, incoming,
        filtered, scaled, normalisers,
    )
    if total == -np.inf:
        scaled[:] = np.nan
        filtered[:] = 0.0  # no contribution to the summed pair counts
        return total

    backward = np.ones(n_states)
    scratch = np.empty(n_states)
    for t in range(n_steps - 1, -1, -1):
        weights = backward_weights[first + t] if t >= 1 and not per_step else scratch
        inverse = 1.0 / normalisers[t]
        for j in range(n_states):
            # A state with zero filtered probability carries no weight backwards
            # (every path into it has probability 0); dropping it keeps the
            # backward messages of unreachable states from overflowing.
            weights[j] = scaled[t, j] * backward[j] * inverse if filtered[t, j] > 0.0 else 0.0
        norm = 0.0
        for j in range(n_states):
            value = filtered[t, j] * backward[j]
            scaled[t, j] = value
            norm += value
        norm = 1.0 / norm
        for j in range(n_states):
            scaled[t, j] *= norm
        if t == 0:
            break
        matrix = transition_matrices[first + t] if varying else transition_matrices[0]
        for i in range(n_states):
            backward[i] = _dot(matrix[i], weights)
        if per_step:
            counts = pair_counts[first + t]
            for i in range(n_states):
                previous = filtered[t - 1, i]
                for j in range(n_states):
                    counts[i, j] += previous * matrix[i, j] * weights[j]
    return total


@njit(cache=True, fastmath=_REDUCTION_FLAGS, inline="always")
def _viterbi_row(previous: np.ndarray, matrix: np.ndarray, evidence: np.ndarray, out: np.ndarray) -> None:
    """out[j] = max_i (previous[i] + log p(j | i)) + evidence[j], with ``matrix[j, i]`` = log p(j | i)."""
    for j in range(out.shape[0]):
        out[j] = _max_plus(previous, matrix[j]) + evidence[j]


@njit(cache=True, fastmath=_REDUCTION_FLAGS)
def _viterbi_sweep(
    log_likelihoods: np.ndarray,
    rows: np.ndarray,
    first: int,
    last: int,
    log_initial: np.ndarray,
    log_incoming: np.ndarray,
    scores: np.ndarray,
) -> None:
    """Best joint log-probability of each state at each step of rows ``first:last``.

    ``log_incoming[t][j, i]`` = log p(z_t = j | z_{t-1} = i) (transposed
    matrices); ``scores`` (last - first, K) receives the lattice.
    """
    varying = log_incoming.shape[0] > 1
    indexed = rows.shape[0] > 0
    evidence = log_likelihoods[rows[first] if indexed else first]
    for j in range(log_initial.shape[0]):
        scores[0, j] = log_initial[j] + evidence[j]
    for t in range(1, last - first):
        matrix = log_incoming[first + t] if varying else log_incoming[0]
        evidence = log_likelihoods[rows[first + t] if indexed else first + t]
        _viterbi_row(scores[t - 1], matrix, evidence, scores[t])


@njit(cache=True, fastmath=_REDUCTION_FLAGS)
def _backtrack(scores: np.ndarray, log_incoming: np.ndarray, first: int, path: np.ndarray) -> int:
    """Trace the best path back through a score lattice into ``path[first:...]``; returns its last state.

    Each step recovers the argmax for the one state on the path, so no
    backpointers are ever stored.
    """
    n_steps = scores.shape[0]
    varying = log_incoming.shape[0] > 1
    state = np.argmax(scores[n_steps - 1])
    last_state = state
    path[first + n_steps - 1] = state
    for t in range(n_steps - 1, 0, -1):
        matrix = log_incoming[first + t] if varying else log_incoming[0]
        state = _argmax_plus(scores[t - 1], matrix[state])
        path[first + t - 1] = state
    return last_state


@njit(cache=True)
def _draw(probs: np.ndarray, uniform: float) -> int:
    """Index drawn from unnormalised probabilities with one uniform variate."""
    target = uniform * probs.sum()
    acc = 0.0
    for k in range(probs.shape[0]):
        acc += probs[k]
        if target < acc:
            return k
    for k in range(probs.shape[0] - 1, -1, -1):  # rounding: last state with mass
        if probs[k] > 0.0:
            return k
    return 0


# ------------------------------------------------------------- batch drivers
@njit(cache=True)
def _chunk_bounds(offsets: np.ndarray, n_chunks: int) -> np.ndarray:
    """Split sequences into ``n_chunks`` runs holding about the same number of steps."""
    n_sequences = offsets.shape[0] - 1
    bounds = np.empty(n_chunks + 1, dtype=np.int64)
    total = offsets[-1]
    for c in range(n_chunks + 1):
        bounds[c] = np.searchsorted(offsets[:-1], total * c // n_chunks)
    bounds[0] = 0
    bounds[n_chunks] = n_sequences
    return bounds


def _table_rows(rows: np.ndarray | None) -> np.ndarray:
    return np.empty(0, dtype=np.int64) if rows is None else rows


@njit(cache=True, parallel=True)
def _log_likelihood(log_likelihoods, rows, table, table_shifts, offsets, initial_probs, incoming):
    n_sequences = offsets.shape[0] - 1
    n_states = initial_probs.shape[0]
    out = np.empty(n_sequences)
    for s in prange(n_sequences):
        filtered = np.empty((1, n_states))
        scaled = np.empty((1, n_states))
        normalisers = np.empty(1)
        out[s] = _filter_sequence(
            log_likelihoods, rows, table, table_shifts, offsets[s], offsets[s + 1], initial_probs,
            incoming, filtered, scaled, normalisers,
        )
    return out


# ------------------------------------------------- one long sequence, many threads
# A single long sequence is cut into one segment per thread. Segment 0 starts
# from the true initial distribution; the others start from a guess (uniform)
# and all run at once. Then, segment by segment, the true state is carried
# across each cut and run forward until it meets the guessed run: from there on
# the two recursions coincide, so the guessed run's result is the true one (a
# filter forgets where it started at the rate the chain mixes). If they never
# meet, the segment is simply rerun in full, so the answer is always exact.

_MIN_SEGMENT = 50_000  # steps per thread before a sequence is worth splitting
_MEET = 1e-12  # relative difference below which two runs count as met


def _segments(offsets: np.ndarray, stationary: bool) -> int:
    """Threads to split each sequence over (1: don't split)."""
    n_threads = numba.get_num_threads()
    if not stationary or n_threads < 2 or len(offsets) - 1 >= n_threads:
        return 1
    return int(min(n_threads, np.diff(offsets).min() // _MIN_SEGMENT))


@njit(cache=True)
def _segment_bounds(first: int, last: int, n_segments: int) -> np.ndarray:
    bounds = np.empty(n_segments + 1, dtype=np.int64)
    for p in range(n_segments + 1):
        bounds[p] = first + (last - first) * p // n_segments
    return bounds


@njit(cache=True, parallel=True)
def _log_likelihood_split(
    log_likelihoods, rows, table, table_shifts, first, last, initial_probs, incoming, n_segments
):
    n_states = initial_probs.shape[0]
    bounds = _segment_bounds(first, last, n_segments)
    guess = np.full(n_states, 1.0 / n_states)
    totals = np.empty(n_segments)
    ends = np.empty((n_segments, n_states))
    for p in prange(n_segments):
        normalisers = np.empty(1)
        scaled = np.empty((1, n_states))
        totals[p] = _filter_sequence(
            log_likelihoods, rows, table, table_shifts, bounds[p], bounds[p + 1],
            initial_probs if p == 0 else guess, incoming, ends[p : p + 1], scaled, normalisers,
        )
    total = totals[0]
    state = ends[0].copy()  # the true filtered distribution at the end of the last segment done
    true_predicted, true_scaled = np.empty(n_states), np.empty(n_states)
    guess_predicted, guess_scaled, guessed = np.empty(n_states), np.empty(n_states), np.empty(n_states)
    for p in range(1, n_segments):
        if total == -np.inf:
            return total
        _predict(state, incoming[0], true_predicted)
        guess_predicted[:] = guess
        true_sum, guess_sum, met = 0.0, 0.0, False
        for t in range(bounds[p], bounds[p + 1]):
            if t > bounds[p]:
                _predict(state, incoming[0], true_predicted)
                _predict(guessed, incoming[0], guess_predicted)
            normaliser, shift = _condition(
                log_likelihoods, rows, table, table_shifts, t, true_predicted, true_scaled, state
            )
            true_sum += np.log(normaliser) + shift
            if totals[p] == -np.inf:
                continue
            normaliser, shift = _condition(
                log_likelihoods, rows, table, table_shifts, t, guess_predicted, guess_scaled, guessed
            )
            guess_sum += np.log(normaliser) + shift
            if _same_distribution(state, guessed):
                total += true_sum + (totals[p] - guess_sum)
                state[:] = ends[p]
                met = True
                break
        if not met:
            total += true_sum
    return total


@njit(cache=True, parallel=True)
def _viterbi_split(log_likelihoods, rows, first, last, log_initial, log_incoming, scores, path, n_segments):
    n_states = log_initial.shape[0]
    bounds = _segment_bounds(first, last, n_segments)
    for p in prange(n_segments):
        start = log_initial if p == 0 else np.zeros(n_states)
        _viterbi_sweep(
            log_likelihoods, rows, bounds[p], bounds[p + 1], start, log_incoming,
            scores[bounds[p] - first : bounds[p + 1] - first],
        )
    # Rows a guessed run filled are its true scores less a constant per segment;
    # argmax within a row ignores the constant, the final score needs it.
    offset = 0.0
    previous = np.empty(n_states)
    true_row = np.empty(n_states)
    for p in range(1, n_segments):
        for j in range(n_states):
            previous[j] = scores[bounds[p] - 1 - first, j] + offset
        offset = 0.0
        for t in range(bounds[p], bounds[p + 1]):
            evidence = log_likelihoods[rows[t] if rows.shape[0] > 0 else t]
            _viterbi_row(previous, log_incoming[0], evidence, true_row)
            guessed = scores[t - first]
            gap = _constant_gap(true_row, guessed)
            if not np.isnan(gap):
                offset = gap
                break
            for j in range(n_states):
                guessed[j] = true_row[j]
                previous[j] = true_row[j]
    lattice = scores[: last - first]
    final = _backtrack(lattice, log_incoming, first, path)
    return lattice[last - first - 1, final] + offset


@njit(cache=True)
def _same_distribution(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to a relative ``_MEET`` in every entry, zeros included.

    A relative test, because the recursion is linear in the distribution: a state
    with tiny mass in one run and a thousand times more in the other can come to
    dominate both once the data favour it.
    """
    for j in range(a.shape[0]):
        if abs(a[j] - b[j]) > _MEET * a[j] + 1e-300:  # below that, rounding has no relative precision
            return False
    return True


@njit(cache=True)
def _constant_gap(a: np.ndarray, b: np.ndarray) -> float:
    """The constant c with a = b + c in every entry (both -inf allowed), or NaN if there is none."""
    gap = np.nan
    for j in range(a.shape[0]):
        if a[j] == -np.inf or b[j] == -np.inf:
            if a[j] != b[j]:
                return np.nan
            continue
        if np.isnan(gap):
            gap = a[j] - b[j]
        elif abs(a[j] - b[j] - gap) > _MEET * max(1.0, abs(a[j])):
            return np.nan
    return 0.0 if np.isnan(gap) else gap


def log_likelihood(
    log_likelihoods: np.ndarray,
    offsets: np.ndarray,
    initial_probs: np.ndarray,
    transition_matrices: np.ndarray,
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """Log-likelihood of each sequence (forward pass only, O(K) memory per sequence).

    Fewer long sequences than threads are each split across the threads.
    """
    arguments = (log_likelihoods, _table_rows(rows), *_scaled_table(log_likelihoods))
    incoming = _transposed(transition_matrices)
    n_segments = _segments(offsets, stationary=transition_matrices.shape[0] == 1)
    if n_segments > 1:
        return np.array([
            _log_likelihood_split(*arguments, first, last, initial_probs, incoming, n_segments)
            for first, last in zip(offsets[:-1], offsets[1:])
        ])
    return _log_likelihood(*arguments, offsets, initial_probs, incoming)


@njit(cache=True, parallel=True)
def _forward_filter(log_likelihoods, rows, table, table_shifts, offsets, initial_probs, incoming, filtered):
    n_sequences = offsets.shape[0] - 1
    n_states = initial_probs.shape[0]
    out = np.empty(n_sequences)
    for s in prange(n_sequences):
        first, last = offsets[s], offsets[s + 1]
        scaled = np.empty((1, n_states))
        normalisers = np.empty(1)
        out[s] = _filter_sequence(
            log_likelihoods, rows, table, table_shifts, first, last, initial_probs, incoming,
            filtered[first:last], scaled, normalisers,
        )
    return filtered, out


def forward_filter(
    log_likelihoods: np.ndarray,
    offsets: np.ndarray,
    initial_probs: np.ndarray,
    transition_matrices: np.ndarray,
    rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Filtered state probabilities p(z_t | y_{0:t}) (n_steps, K) and per-sequence log-likelihoods."""
    return _forward_filter(
        log_likelihoods, _table_rows(rows), *_scaled_table(log_likelihoods), offsets, initial_probs,
        _transposed(transition_matrices), np.empty((offsets[-1], len(initial_probs))),
    )


@njit(cache=True, parallel=True)
def _forward_backward(
    log_likelihoods, rows, table, table_shifts, offsets, initial_probs, transition_matrices, incoming,
    posteriors, filtered, normalisers, pairs, backward_weights, per_step,
):
    n_sequences = offsets.shape[0] - 1
    n_chunks = min(n_sequences, _N_CHUNKS)
    bounds = _chunk_bounds(offsets, n_chunks)
    out = np.empty(n_sequences)
    for c in prange(n_chunks):
        for s in range(bounds[c], bounds[c + 1]):
            first, last = offsets[s], offsets[s + 1]
            out[s] = _smooth_sequence(
                log_likelihoods, rows, table, table_shifts, first, last, initial_probs,
                transition_matrices, incoming, posteriors, filtered[first:last], normalisers[first:last],
                pairs, backward_weights, per_step,
            )
    return out


def _smooth(
    log_likelihoods: np.ndarray,
    offsets: np.ndarray,
    initial_probs: np.ndarray,
    transition_matrices: np.ndarray,
    rows: np.ndarray | None,
    per_step: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Run forward-backward; every large array is allocated here by numpy.

    numpy's allocations (with huge pages where the system offers them) are
    markedly cheaper to touch than ones made inside compiled code.
    """
    n_steps, n_states = offsets[-1], len(initial_probs)
    posteriors = np.empty((n_steps, n_states))
    filtered = np.empty((n_steps, n_states))
    normalisers = np.empty(n_steps)
    if per_step:
        pairs, backward_weights = np.zeros((n_steps, n_states, n_states)), np.empty((0, n_states))
    else:  # the weights stay 0 at sequence starts
        pairs, backward_weights = np.empty((0, n_states, n_states)), np.zeros((n_steps, n_states))
    log_lik = _forward_backward(
        log_likelihoods, _table_rows(rows), *_scaled_table(log_likelihoods), offsets, initial_probs,
        transition_matrices, _transposed(transition_matrices), posteriors, filtered, normalisers,
        pairs, backward_weights, per_step,
    )
    return log_lik, posteriors, pairs, filtered, backward_weights


def forward_backward(
    log_likelihoods: np.ndarray,
    offsets: np.ndarray,
    initial_probs: np.ndarray,
    transition_matrices: np.ndarray,
    rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Posteriors of a chain, with expected transitions summed over time.

    Returns per-sequence log-likelihoods (n_sequences,), state posteriors
    p(z_t | y) (n_steps, K) and expected transition counts
    sum_t p(z_{t-1}=i, z_t=j | y) (K, K), formed by one matrix product rather
    than a (K, K) update per step. Sequences are split into at most 64 chunks of
    similar total length for the threads.
    """
    if transition_matrices.shape[0] > 1:
        log_lik, posteriors, pairs = forward_backward_varying(
            log_likelihoods, offsets, initial_probs, transition_matrices, rows
        )
        return log_lik, posteriors, pairs.sum(axis=0)
    log_lik, posteriors, _, filtered, weights = _smooth(
        log_likelihoods, offsets, initial_probs, transition_matrices, rows, per_step=False
    )
    # sum_t p(z_{t-1}=i, z_t=j | y) = A_ij sum_t filtered_{t-1}(i) w_t(j); the weights
    # are 0 at sequence starts, so one product over all rows spans every sequence.
    return log_lik, posteriors, (filtered[:-1].T @ weights[1:]) * transition_matrices[0]


def forward_backward_varying(
    log_likelihoods: np.ndarray,
    offsets: np.ndarray,
    initial_probs: np.ndarray,
    transition_matrices: np.ndarray,
    rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Forward-backward for time-varying transitions, keeping pairwise posteriors per step.

    ``transition_matrices`` is (n_steps, K, K). Returns per-sequence
    log-likelihoods, posteriors (n_steps, K) and pairwise posteriors
    (n_steps, K, K) with entry t = p(z_{t-1}, z_t | y) (zero at sequence starts),
    which input-driven transition models need for their M-step.
    """
    log_lik, posteriors, pairs, _, _ = _smooth(
        log_likelihoods, offsets, initial_probs, transition_matrices, rows, per_step=True
    )
    return log_lik, posteriors, pairs


@njit(cache=True, parallel=True)
def _viterbi(log_likelihoods, rows, offsets, log_initial, log_incoming, scores):
    n_sequences = offsets.shape[0] - 1
    path = np.empty(offsets[-1], dtype=np.int64)
    out = np.empty(n_sequences)
    for s in prange(n_sequences):
        first, last = offsets[s], offsets[s + 1]
        lattice = scores[first:last]
        _viterbi_sweep(log_likelihoods, rows, first, last, log_initial, log_incoming, lattice)
        out[s] = lattice[last - first - 1, _backtrack(lattice, log_incoming, first, path)]
    return path, out


def viterbi(
    log_likelihoods: np.ndarray,
    offsets: np.ndarray,
    log_initial: np.ndarray,
    log_transitions: np.ndarray,
    rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Most likely state paths (n_steps,) and each path's joint log-probability (n_sequences,).

    Takes log-probabilities: ``log_initial`` (K,), ``log_transitions`` (1 or n_steps, K, K).
    """
    # The (n_steps, K) score lattice is the one large array here; numpy allocates
    # it (with huge pages where the system offers them), which is markedly
    # cheaper to touch than an allocation made inside the compiled code.
    scores = np.empty((offsets[-1], log_initial.shape[0]))
    incoming = _transposed(log_transitions)
    n_segments = _segments(offsets, stationary=log_transitions.shape[0] == 1)
    if n_segments > 1:
        path = np.empty(offsets[-1], dtype=np.int64)
        log_prob = np.array([
            _viterbi_split(
                log_likelihoods, _table_rows(rows), first, last, log_initial, incoming, scores[first:last], path,
                n_segments,
            )
            for first, last in zip(offsets[:-1], offsets[1:])
        ])
        return path, log_prob
    return _viterbi(log_likelihoods, _table_rows(rows), offsets, log_initial, incoming, scores)


@njit(cache=True, parallel=True)
def _sample_posterior_paths(
    log_likelihoods, rows, table, table_shifts, offsets, initial_probs, incoming, uniforms, all_filtered
):
    n_sequences = offsets.shape[0] - 1
    n_states = initial_probs.shape[0]
    varying = incoming.shape[0] > 1
    path = np.empty(offsets[-1], dtype=np.int64)
    out = np.empty(n_sequences)
    for s in prange(n_sequences):
        first, last = offsets[s], offsets[s + 1]
        n_steps = last - first
        filtered = all_filtered[first:last]
        out[s] = _filter_sequence(
            log_likelihoods, rows, table, table_shifts, first, last, initial_probs, incoming,
            filtered, np.empty((1, n_states)), np.empty(1),
        )
        if out[s] == -np.inf:
            path[first:last] = -1
            continue
        weights = np.empty(n_states)
        state = _draw(filtered[n_steps - 1], uniforms[last - 1])
        path[last - 1] = state
        for t in range(n_steps - 2, -1, -1):
            into_state = (incoming[first + t + 1] if varying else incoming[0])[state]
            for i in range(n_states):
                weights[i] = filtered[t, i] * into_state[i]
            state = _draw(weights, uniforms[first + t])
            path[first + t] = state
    return path, out


def sample_posterior_paths(
    log_likelihoods: np.ndarray,
    offsets: np.ndarray,
    initial_probs: np.ndarray,
    transition_matrices: np.ndarray,
    uniforms: np.ndarray,
    rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw state paths from p(z | y) by forward filtering, backward sampling.

    ``uniforms`` (n_steps,) are U(0, 1) variates, one per step, so the caller's
    random generator fixes the draw. Returns paths (n_steps,) and log-likelihoods.
    """
    return _sample_posterior_paths(
        log_likelihoods, _table_rows(rows), *_scaled_table(log_likelihoods), offsets, initial_probs,
        _transposed(transition_matrices), uniforms, np.empty((offsets[-1], len(initial_probs))),
    )


@njit(cache=True)
def sample_chain(initial_probs: np.ndarray, transition_matrix: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """A Markov chain path of ``len(uniforms)`` steps driven by the given U(0, 1) variates."""
    path = np.empty(uniforms.shape[0], dtype=np.int64)
    state = _draw(initial_probs, uniforms[0])
    path[0] = state
    for t in range(1, uniforms.shape[0]):
        state = _draw(transition_matrix[state], uniforms[t])
        path[t] = state
    return path
