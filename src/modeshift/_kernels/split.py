"""One long sequence split across threads, for scoring and Viterbi decoding.

The sequence is cut into one segment per thread. Segment 0 starts from the true
initial distribution; the others start from a guess (uniform) and all run at
once. Then, segment by segment, the true state is carried across each cut and
run forward until it meets the guessed run: from there on the two recursions
coincide, so the guessed run's result is the true one (a filter forgets where
it started at the rate the chain mixes). If they never meet, the segment is
simply rerun in full, so the answer is always that of the one-piece recursion.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from modeshift._kernels.compile import kernel
from modeshift._kernels.recursions import (
    backtrack,
    condition,
    filter_sequence,
    predict,
    viterbi_row,
    viterbi_sweep,
)
from modeshift._kernels.threads import parallel

_MIN_SEGMENT = 50_000  # steps per thread before a sequence is worth splitting
_MEET = 1e-12  # relative difference below which two runs count as met


def segments(offsets: np.ndarray, stationary: bool) -> int:
    """Threads to split each sequence over (1: don't split)."""
    n_threads = numba.get_num_threads()
    if not stationary or n_threads < 2 or len(offsets) - 1 >= n_threads:
        return 1
    return int(min(n_threads, np.diff(offsets).min() // _MIN_SEGMENT))


@kernel
def _segment_bounds(first: int, last: int, n_segments: int) -> np.ndarray:
    bounds = np.empty(n_segments + 1, dtype=np.int64)
    for p in range(n_segments + 1):
        bounds[p] = first + (last - first) * p // n_segments
    return bounds


@parallel
def log_likelihood_split(log_likelihoods, rows, table, table_shifts, first, last, initial_probs, incoming, n_segments):
    n_states = initial_probs.shape[0]
    bounds = _segment_bounds(first, last, n_segments)
    guess = np.full(n_states, 1.0 / n_states)
    totals = np.empty(n_segments)
    ends = np.empty((n_segments, n_states))
    for p in prange(n_segments):
        # each thread's own rows (not ends[p], whose cache line the neighbouring row may share)
        normalisers, scaled, filtered = np.empty(1), np.empty((1, n_states)), np.empty((1, n_states))
        totals[p] = filter_sequence(
            log_likelihoods,
            rows,
            table,
            table_shifts,
            bounds[p],
            bounds[p + 1],
            initial_probs if p == 0 else guess,
            incoming,
            filtered,
            scaled,
            normalisers,
        )
        ends[p] = filtered[0]
    total = totals[0]
    state = ends[0].copy()  # the true filtered distribution at the end of the last segment done
    true_predicted, true_scaled = np.empty(n_states), np.empty(n_states)
    guess_predicted, guess_scaled, guessed = np.empty(n_states), np.empty(n_states), np.empty(n_states)
    for p in range(1, n_segments):
        if total == -np.inf:
            return total
        predict(state, incoming[0], true_predicted)
        guess_predicted[:] = guess
        true_sum, guess_sum, met = 0.0, 0.0, False
        for t in range(bounds[p], bounds[p + 1]):
            if t > bounds[p]:
                predict(state, incoming[0], true_predicted)
                predict(guessed, incoming[0], guess_predicted)
            normaliser, shift = condition(
                log_likelihoods, rows, table, table_shifts, t, true_predicted, true_scaled, state
            )
            true_sum += np.log(normaliser) + shift
            if totals[p] == -np.inf:
                continue
            normaliser, shift = condition(
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


@parallel
def viterbi_split(log_likelihoods, rows, first, last, log_initial, log_incoming, scores, path, n_segments):
    n_states = log_initial.shape[0]
    bounds = _segment_bounds(first, last, n_segments)
    for p in prange(n_segments):
        start = log_initial if p == 0 else np.zeros(n_states)
        viterbi_sweep(
            log_likelihoods,
            rows,
            bounds[p],
            bounds[p + 1],
            start,
            log_incoming,
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
            viterbi_row(previous, log_incoming[0], evidence, true_row)
            guessed = scores[t - first]
            gap = _constant_gap(true_row, guessed)
            if not np.isnan(gap):
                offset = gap
                break
            for j in range(n_states):
                guessed[j] = true_row[j]
                previous[j] = true_row[j]
    lattice = scores[: last - first]
    final = backtrack(lattice, log_incoming, first, path)
    return lattice[last - first - 1, final] + offset


@kernel
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


@kernel
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
