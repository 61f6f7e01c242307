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

The recursions themselves (scaled filtering, smoothing, max-product) live in
:mod:`modeshift._kernels.recursions`; one long sequence is split across threads
by :mod:`modeshift._kernels.split`.

Sequences are processed in parallel (``prange``).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from modeshift._kernels.compile import kernel
from modeshift._kernels.layout import canonical
from modeshift._kernels.recursions import (
    _TINY,
    backtrack,
    backward_sequence,
    buffer,
    combine_sequence,
    draw,
    filter_sequence,
    predict,
    scaled_table,
    smooth_backward,
    smooth_sequence,
    table_rows,
    transposed,
    viterbi_sweep,
)
from modeshift._kernels.split import log_likelihood_split, segments, viterbi_split
from modeshift._kernels.threads import parallel, sequences_of

__all__ = [
    "forward_backward",
    "forward_backward_varying",
    "forward_filter",
    "log_likelihood",
    "sample_chain",
    "sample_posterior_paths",
    "viterbi",
]

_N_CHUNKS = 64  # load balance for up to ~16 threads; memory 64 * K * K
_CONCURRENT_LENGTH = 4096  # shorter sequences are not worth waking a second thread for


# ------------------------------------------------------------- batch drivers
@kernel
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


@parallel(tasks=sequences_of(4))
def _log_likelihood(log_likelihoods, rows, table, table_shifts, offsets, initial_probs, incoming):
    n_sequences = offsets.shape[0] - 1
    n_states = initial_probs.shape[0]
    out = np.empty(n_sequences)
    for s in prange(n_sequences):
        filtered = np.empty((1, n_states))
        scaled = np.empty((1, n_states))
        normalisers = np.empty(1)
        out[s] = filter_sequence(
            log_likelihoods,
            rows,
            table,
            table_shifts,
            offsets[s],
            offsets[s + 1],
            initial_probs,
            incoming,
            filtered,
            scaled,
            normalisers,
        )
    return out


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
    arguments = (log_likelihoods, table_rows(rows), *scaled_table(log_likelihoods))
    incoming = transposed(transition_matrices)
    n_segments = segments(offsets, stationary=transition_matrices.shape[0] == 1)
    if n_segments > 1:
        return np.array(
            [
                log_likelihood_split(*arguments, first, last, initial_probs, incoming, n_segments)
                for first, last in zip(offsets[:-1], offsets[1:])
            ]
        )
    return _log_likelihood(*arguments, offsets, initial_probs, incoming)


@parallel(tasks=sequences_of(4))
def _forward_filter(log_likelihoods, rows, table, table_shifts, offsets, initial_probs, incoming, filtered):
    n_sequences = offsets.shape[0] - 1
    n_states = initial_probs.shape[0]
    out = np.empty(n_sequences)
    for s in prange(n_sequences):
        first, last = offsets[s], offsets[s + 1]
        scaled = np.empty((1, n_states))
        normalisers = np.empty(1)
        out[s] = filter_sequence(
            log_likelihoods,
            rows,
            table,
            table_shifts,
            first,
            last,
            initial_probs,
            incoming,
            filtered[first:last],
            scaled,
            normalisers,
        )
    return filtered, out


def forward_filter(
    log_likelihoods: np.ndarray,
    offsets: np.ndarray,
    initial_probs: np.ndarray,
    transition_matrices: np.ndarray,
    rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Filtered state probabilities p(z_t | y_{0:t}) (n_steps, K) and per-sequence log-likelihoods
    (-inf for an impossible sequence, whose rows after the impossible step are NaN)."""
    return _forward_filter(
        log_likelihoods,
        table_rows(rows),
        *scaled_table(log_likelihoods),
        offsets,
        initial_probs,
        transposed(transition_matrices),
        np.full((offsets[-1], len(initial_probs)), np.nan),  # the pass stops at an impossible step
    )


@parallel(tasks=sequences_of(4))
def _forward_backward(
    log_likelihoods,
    rows,
    table,
    table_shifts,
    offsets,
    initial_probs,
    transition_matrices,
    incoming,
    posteriors,
    filtered,
    normalisers,
    pairs,
    backward_weights,
    per_step,
):
    n_sequences = offsets.shape[0] - 1
    n_chunks = min(n_sequences, _N_CHUNKS)
    bounds = _chunk_bounds(offsets, n_chunks)
    out = np.empty(n_sequences)
    for c in prange(n_chunks):
        for s in range(bounds[c], bounds[c + 1]):
            first, last = offsets[s], offsets[s + 1]
            out[s] = smooth_sequence(
                log_likelihoods,
                rows,
                table,
                table_shifts,
                first,
                last,
                initial_probs,
                transition_matrices,
                incoming,
                posteriors,
                filtered[first:last],
                normalisers[first:last],
                pairs,
                backward_weights,
                per_step,
            )
    return out


@parallel
def _forward_backward_halves(
    log_likelihoods,
    rows,
    table,
    table_shifts,
    first,
    last,
    initial_probs,
    transition_matrices,
    incoming,
    posteriors,
    filtered,
    normalisers,
    backward,
    pairs,
    backward_weights,
    per_step,
):
    """One long sequence on two threads, each working on its own half of the steps.

    First, one thread filters the first half while the other runs the backward pass
    (:func:`backward_sequence`) over the second. Then they swap directions, each
    starting from the one message the other hands over at the midpoint m: the first
    thread smooths its half backwards (:func:`smooth_backward`, from the backward
    message of step m-1), the second filters its half and combines the two passes
    (:func:`combine_sequence`). Each thread reads back only what it wrote itself:
    on a machine whose two cores share no cache, moving every step's messages from
    one core to the other would cost more than the passes.

    Returns the log-likelihood and whether the halves could be joined; if not (an
    impossible sequence, or the two passes disagreeing beyond floating point; see
    :func:`combine_sequence`), the caller reruns the sequence with :func:`smooth_sequence`.
    """
    n_states = initial_probs.shape[0]
    varying = transition_matrices.shape[0] > 1
    middle = first + (last - first) // 2
    totals = np.empty(2)
    for task in prange(2):
        if task == 0:
            totals[0] = filter_sequence(
                log_likelihoods,
                rows,
                table,
                table_shifts,
                first,
                middle,
                initial_probs,
                incoming,
                filtered[first:middle],
                posteriors[first:middle],
                normalisers[first:middle],
            )
        else:
            backward_sequence(log_likelihoods, rows, table, table_shifts, middle, last, transition_matrices, backward)
    if totals[0] == -np.inf:
        return totals[0], False
    # beta_{m-1} = A (b_m * beta_m), scaled so that sum_i filtered_{m-1}(i) beta_{m-1}(i) = 1,
    # taken before the second thread overwrites beta_m with its weight
    matrix = middle if varying else 0
    evidence = rows[middle] if rows.shape[0] > 0 else middle
    message = np.empty(n_states)
    agreement = 0.0
    for i in range(n_states):
        value = 0.0
        for j in range(n_states):
            value += transition_matrices[matrix, i, j] * table[evidence, j] * backward[middle, j]
        message[i] = value
        agreement += filtered[middle - 1, i] * value
    ok = np.zeros(2, dtype=np.bool_)
    for task in prange(2):
        if task == 0:
            if agreement >= _TINY:
                for i in range(n_states):
                    message[i] /= agreement
                smooth_backward(
                    transition_matrices,
                    first,
                    posteriors[first:middle],
                    filtered[first:middle],
                    normalisers[first:middle],
                    message,
                    pairs,
                    backward_weights,
                    per_step,
                )
                ok[0] = True
        else:
            predicted = np.empty(n_states)  # p(z_m | y_{<m})
            predict(filtered[middle - 1], incoming[matrix], predicted)
            totals[1] = filter_sequence(
                log_likelihoods,
                rows,
                table,
                table_shifts,
                middle,
                last,
                predicted,
                incoming,
                filtered[middle:last],
                posteriors[middle:last],
                normalisers[middle:last],
            )
            if totals[1] > -np.inf:
                ok[1] = combine_sequence(
                    middle,
                    last,
                    transition_matrices,
                    filtered,
                    normalisers,
                    backward,
                    posteriors,
                    pairs,
                    backward_weights,
                    per_step,
                )
    return totals[0] + totals[1], ok.all()


def _smooth(
    log_likelihoods: np.ndarray,
    offsets: np.ndarray,
    initial_probs: np.ndarray,
    transition_matrices: np.ndarray,
    rows: np.ndarray | None,
    per_step: bool,
    scratch: dict[str, np.ndarray] | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Run forward-backward; every large array is allocated here by numpy (or
    taken from ``scratch``, see :func:`~modeshift._kernels.recursions.buffer`).

    numpy's allocations (with huge pages where the system offers them) are
    markedly cheaper to touch than ones made inside compiled code. With fewer
    sequences than threads, all long, each runs on two threads, a half each
    (:func:`_forward_backward_halves`).
    """
    n_steps, n_states = offsets[-1], len(initial_probs)
    posteriors = buffer(scratch, "posteriors", (n_steps, n_states))
    filtered = buffer(scratch, "filtered", (n_steps, n_states))
    normalisers = buffer(scratch, "normalisers", (n_steps,))
    if per_step:
        pairs, backward_weights = buffer(scratch, "pairs", (n_steps, n_states, n_states), zero=True), np.empty((0, 1))
    else:  # the weights stay 0 at sequence starts
        pairs, backward_weights = np.empty((0, 1, 1)), buffer(scratch, "weights", (n_steps, n_states), zero=True)
    arguments = (log_likelihoods, table_rows(rows), *scaled_table(log_likelihoods, scratch))
    transition_matrices = canonical(transition_matrices)  # a view would compile every kernel below again
    arrays = (initial_probs, transition_matrices, transposed(transition_matrices), posteriors, filtered, normalisers)
    n_threads, shortest = numba.get_num_threads(), (offsets[1:] - offsets[:-1]).min()
    if n_threads == 1 or len(offsets) - 1 >= n_threads or shortest < max(_CONCURRENT_LENGTH, 2):
        log_lik = _forward_backward(*arguments, offsets, *arrays, pairs, backward_weights, per_step)
    else:  # the backward messages go where their weights will be written, row by row
        backward = buffer(scratch, "backward", (n_steps, n_states)) if per_step else backward_weights
        log_lik = np.empty(len(offsets) - 1)
        for s, (first, last) in enumerate(zip(offsets[:-1], offsets[1:])):
            log_lik[s], ok = _forward_backward_halves(
                *arguments, first, last, *arrays, backward, pairs, backward_weights, per_step
            )
            if not ok:  # one pass after the other, the backward one scaled by the forward one
                (pairs if per_step else backward_weights)[first:last] = 0.0
                bounds = np.array([first, last])
                log_lik[s] = _forward_backward(*arguments, bounds, *arrays, pairs, backward_weights, per_step)[0]
    return log_lik, posteriors, pairs, filtered, backward_weights


def forward_backward(
    log_likelihoods: np.ndarray,
    offsets: np.ndarray,
    initial_probs: np.ndarray,
    transition_matrices: np.ndarray,
    rows: np.ndarray | None = None,
    scratch: dict[str, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Posteriors of a chain, with expected transitions summed over time.

    Returns per-sequence log-likelihoods (n_sequences,), state posteriors
    p(z_t | y) (n_steps, K) and expected transition counts
    sum_t p(z_{t-1}=i, z_t=j | y) (K, K), formed by one matrix product rather
    than a (K, K) update per step. Sequences are split into at most 64 chunks of
    similar total length for the threads.

    ``scratch``, a dict an EM loop passes to every call, keeps the working arrays
    between calls; the posteriors returned are then among them, overwritten by the next call.
    """
    if transition_matrices.shape[0] > 1:
        log_lik, posteriors, pairs = forward_backward_varying(
            log_likelihoods, offsets, initial_probs, transition_matrices, rows, scratch
        )
        return log_lik, posteriors, pairs.sum(axis=0)
    log_lik, posteriors, _, filtered, weights = _smooth(
        log_likelihoods, offsets, initial_probs, transition_matrices, rows, False, scratch
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
    scratch: dict[str, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Forward-backward for time-varying transitions, keeping pairwise posteriors per step.

    ``transition_matrices`` is (n_steps, K, K). Returns per-sequence
    log-likelihoods, posteriors (n_steps, K) and pairwise posteriors
    (n_steps, K, K) with entry t = p(z_{t-1}, z_t | y) (zero at sequence starts),
    which input-driven transition models need for their M-step. ``scratch`` as
    for :func:`forward_backward`.
    """
    log_lik, posteriors, pairs, _, _ = _smooth(
        log_likelihoods, offsets, initial_probs, transition_matrices, rows, True, scratch
    )
    return log_lik, posteriors, pairs


@parallel(tasks=sequences_of(2))
def _viterbi(log_likelihoods, rows, offsets, log_initial, log_incoming, scores):
    n_sequences = offsets.shape[0] - 1
    path = np.empty(offsets[-1], dtype=np.int64)
    out = np.empty(n_sequences)
    for s in prange(n_sequences):
        first, last = offsets[s], offsets[s + 1]
        lattice = scores[first:last]
        viterbi_sweep(log_likelihoods, rows, first, last, log_initial, log_incoming, lattice)
        out[s] = lattice[last - first - 1, backtrack(lattice, log_incoming, first, path)]
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
    incoming = transposed(log_transitions)
    n_segments = segments(offsets, stationary=log_transitions.shape[0] == 1)
    if n_segments > 1:
        path = np.empty(offsets[-1], dtype=np.int64)
        log_prob = np.array(
            [
                viterbi_split(
                    log_likelihoods,
                    table_rows(rows),
                    first,
                    last,
                    log_initial,
                    incoming,
                    scores[first:last],
                    path,
                    n_segments,
                )
                for first, last in zip(offsets[:-1], offsets[1:])
            ]
        )
        return path, log_prob
    return _viterbi(log_likelihoods, table_rows(rows), offsets, log_initial, incoming, scores)


@parallel(tasks=sequences_of(4))
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
        out[s] = filter_sequence(
            log_likelihoods,
            rows,
            table,
            table_shifts,
            first,
            last,
            initial_probs,
            incoming,
            filtered,
            np.empty((1, n_states)),
            np.empty(1),
        )
        if out[s] == -np.inf:
            path[first:last] = -1
            continue
        weights = np.empty(n_states)
        state = draw(filtered[n_steps - 1], uniforms[last - 1])
        path[last - 1] = state
        for t in range(n_steps - 2, -1, -1):
            into_state = (incoming[first + t + 1] if varying else incoming[0])[state]
            for i in range(n_states):
                weights[i] = filtered[t, i] * into_state[i]
            state = draw(weights, uniforms[first + t])
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
        log_likelihoods,
        table_rows(rows),
        *scaled_table(log_likelihoods),
        offsets,
        initial_probs,
        transposed(transition_matrices),
        uniforms,
        np.empty((offsets[-1], len(initial_probs))),
    )


def sample_chain(initial_probs: np.ndarray, transition_matrices: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """A Markov chain path of ``len(uniforms)`` steps driven by the given U(0, 1) variates.

    ``transition_matrices`` is (K, K), or a stack (1 or n_steps, K, K) whose entry t
    moves z_t-1 to z_t.
    """
    stack = np.asarray(transition_matrices, dtype=np.float64)
    stack = np.ascontiguousarray(stack[None] if stack.ndim == 2 else stack)
    return _sample_chain(np.asarray(initial_probs, dtype=np.float64), stack, np.asarray(uniforms, dtype=np.float64))


@kernel
def _sample_chain(initial_probs: np.ndarray, transition_matrices: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    path = np.empty(uniforms.shape[0], dtype=np.int64)
    state = draw(initial_probs, uniforms[0])
    path[0] = state
    varying = transition_matrices.shape[0] > 1
    for t in range(1, uniforms.shape[0]):
        state = draw(transition_matrices[t if varying else 0, state], uniforms[t])
        path[t] = state
    return path
