"""Message passing on a hidden Markov chain: filtering, smoothing, Viterbi, path sampling.

Every function works on a batch of sequences stored back to back:

- ``log_likelihoods`` (n_steps, K): log p(y_t | z_t = k) for every step of every sequence;
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
_N_CHUNKS = 64  # load balance for up to ~16 threads; memory 64 * K * K


# ----------------------------------------------------------------- one time step
@njit(cache=True)
def _predict(filtered: np.ndarray, transition_matrix: np.ndarray, out: np.ndarray) -> None:
    """out = filtered @ transition_matrix (row-major friendly loop order)."""
    n_states = filtered.shape[0]
    out[:] = 0.0
    for i in range(n_states):
        weight = filtered[i]
        if weight != 0.0:
            for j in range(n_states):
                out[j] += weight * transition_matrix[i, j]


@njit(cache=True)
def _update(
    predicted: np.ndarray, log_likelihood: np.ndarray, filtered: np.ndarray, scaled: np.ndarray
) -> tuple[float, float]:
    """Condition predicted state probabilities on one step's evidence.

    Writes p(z_t | y_{0:t}) into ``filtered`` and exp(log_likelihood - shift) into
    ``scaled``; returns ``(normaliser, shift)`` with p(y_t | y_{0:t-1}) =
    normaliser * exp(shift). A zero normaliser means the step is impossible.
    """
    n_states = predicted.shape[0]
    shift = -np.inf
    for j in range(n_states):
        if log_likelihood[j] > shift:
            shift = log_likelihood[j]
    if shift == -np.inf:
        return 0.0, shift
    normaliser = 0.0
    for j in range(n_states):
        scaled[j] = np.exp(log_likelihood[j] - shift)
        normaliser += predicted[j] * scaled[j]
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
            normaliser += predicted[j] * scaled[j]
    for j in range(n_states):
        filtered[j] = predicted[j] * scaled[j] / normaliser
    return normaliser, shift


# ------------------------------------------------------------- one sequence
@njit(cache=True)
def _filter_sequence(
    log_likelihoods: np.ndarray,
    first: int,
    last: int,
    initial_probs: np.ndarray,
    transition_matrices: np.ndarray,
    filtered: np.ndarray,
    scaled: np.ndarray,
    normalisers: np.ndarray,
) -> float:
    """Forward pass over rows ``first:last``; returns the sequence's log-likelihood.

    ``filtered``, ``scaled`` and ``normalisers`` have one row per step of the
    sequence, or a single row to keep only the latest step (scoring).
    """
    varying = transition_matrices.shape[0] > 1
    keep = filtered.shape[0] > 1
    predicted = initial_probs.copy()
    total = 0.0
    for t in range(last - first):
        row = t if keep else 0
        if t > 0:
            matrix = transition_matrices[first + t] if varying else transition_matrices[0]
            _predict(filtered[row - 1 if keep else 0], matrix, predicted)
        normaliser, shift = _update(predicted, log_likelihoods[first + t], filtered[row], scaled[row])
        if normaliser == 0.0:
            return -np.inf
        normalisers[row] = normaliser
        total += np.log(normaliser) + shift
    return total


@njit(cache=True)
def _smooth_sequence(
    log_likelihoods: np.ndarray,
    first: int,
    last: int,
    initial_probs: np.ndarray,
    transition_matrices: np.ndarray,
    posteriors: np.ndarray,
    pair_counts: np.ndarray,
    per_step: bool,
) -> float:
    """Forward-backward over rows ``first:last``.

    Writes p(z_t | y) into ``posteriors[first:last]`` and adds the pairwise
    posteriors p(z_{t-1}, z_t | y) into ``pair_counts[first + t]`` (``per_step``)
    or ``pair_counts[0]`` (summed). Returns the log-likelihood; an impossible
    sequence gets -inf and NaN posteriors.
    """
    n_steps = last - first
    n_states = log_likelihoods.shape[1]
    varying = transition_matrices.shape[0] > 1
    filtered = np.empty((n_steps, n_states))
    normalisers = np.empty(n_steps)
    # The scaled emission likelihoods are parked in the posteriors rows until the
    # backward pass overwrites them.
    scaled = posteriors[first:last]
    total = _filter_sequence(
        log_likelihoods, first, last, initial_probs, transition_matrices, filtered, scaled, normalisers
    )
    if total == -np.inf:
        scaled[:] = np.nan
        return total

    backward = np.ones(n_states)
    weights = np.empty(n_states)
    for t in range(n_steps - 1, -1, -1):
        for j in range(n_states):
            weights[j] = scaled[t, j] * backward[j] / normalisers[t]
        norm = 0.0
        for j in range(n_states):
            value = filtered[t, j] * backward[j]
            scaled[t, j] = value
            norm += value
        for j in range(n_states):
            scaled[t, j] /= norm
        if t == 0:
            break
        matrix = transition_matrices[first + t] if varying else transition_matrices[0]
        counts = pair_counts[first + t] if per_step else pair_counts[0]
        for i in range(n_states):
            previous = filtered[t - 1, i]
            acc = 0.0
            for j in range(n_states):
                term = matrix[i, j] * weights[j]
                acc += term
                counts[i, j] += previous * term
            backward[i] = acc
    return total


@njit(cache=True)
def _viterbi_sequence(
    log_likelihoods: np.ndarray,
    first: int,
    last: int,
    log_initial: np.ndarray,
    log_transitions: np.ndarray,
    path: np.ndarray,
    backpointers: np.ndarray,
) -> float:
    """Most likely state path over rows ``first:last``; returns its joint log-probability."""
    n_steps = last - first
    n_states = log_likelihoods.shape[1]
    varying = log_transitions.shape[0] > 1
    best = log_initial + log_likelihoods[first]
    candidate = np.empty(n_states)
    for t in range(1, n_steps):
        matrix = log_transitions[first + t] if varying else log_transitions[0]
        pointers = backpointers[t]
        candidate[:] = -np.inf
        pointers[:] = 0
        for i in range(n_states):
            score = best[i]
            if score == -np.inf:
                continue
            for j in range(n_states):
                value = score + matrix[i, j]
                better = value > candidate[j]
                candidate[j] = value if better else candidate[j]
                pointers[j] = i if better else pointers[j]
        for j in range(n_states):
            best[j] = candidate[j] + log_likelihoods[first + t, j]
    state = np.argmax(best)
    log_prob = best[state]
    path[first + n_steps - 1] = state
    for t in range(n_steps - 1, 0, -1):
        state = backpointers[t, state]
        path[first + t - 1] = state
    return log_prob


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


@njit(cache=True, parallel=True)
def log_likelihood(
    log_likelihoods: np.ndarray,
    offsets: np.ndarray,
    initial_probs: np.ndarray,
    transition_matrices: np.ndarray,
) -> np.ndarray:
    """Log-likelihood of each sequence (forward pass only, O(K) memory per sequence)."""
    n_sequences = offsets.shape[0] - 1
    n_states = log_likelihoods.shape[1]
    out = np.empty(n_sequences)
    for s in prange(n_sequences):
        filtered = np.empty((1, n_states))
        scaled = np.empty((1, n_states))
        normalisers = np.empty(1)
        out[s] = _filter_sequence(
            log_likelihoods, offsets[s], offsets[s + 1], initial_probs, transition_matrices,
            filtered, scaled, normalisers,
        )
    return out


@njit(cache=True, parallel=True)
def forward_filter(
    log_likelihoods: np.ndarray,
    offsets: np.ndarray,
    initial_probs: np.ndarray,
    transition_matrices: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Filtered state probabilities p(z_t | y_{0:t}) (n_steps, K) and per-sequence log-likelihoods."""
    n_sequences = offsets.shape[0] - 1
    filtered = np.empty_like(log_likelihoods)
    out = np.empty(n_sequences)
    for s in prange(n_sequences):
        first, last = offsets[s], offsets[s + 1]
        scaled = np.empty((last - first, log_likelihoods.shape[1]))
        normalisers = np.empty(last - first)
        out[s] = _filter_sequence(
            log_likelihoods, first, last, initial_probs, transition_matrices,
            filtered[first:last], scaled, normalisers,
        )
    return filtered, out


@njit(cache=True, parallel=True)
def forward_backward(
    log_likelihoods: np.ndarray,
    offsets: np.ndarray,
    initial_probs: np.ndarray,
    transition_matrices: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Posteriors of a chain, with expected transitions summed over time.

    Returns per-sequence log-likelihoods (n_sequences,), state posteriors
    p(z_t | y) (n_steps, K) and expected transition counts
    sum_t p(z_{t-1}=i, z_t=j | y) (K, K). Work is split into at most 64 chunks of
    sequences of similar total length, each with its own (K, K) accumulator, so memory does
    not grow with the number of sequences.
    """
    n_sequences = offsets.shape[0] - 1
    n_states = log_likelihoods.shape[1]
    n_chunks = min(n_sequences, _N_CHUNKS)
    bounds = _chunk_bounds(offsets, n_chunks)
    posteriors = np.empty_like(log_likelihoods)
    counts = np.zeros((n_chunks, 1, n_states, n_states))
    out = np.empty(n_sequences)
    for c in prange(n_chunks):
        for s in range(bounds[c], bounds[c + 1]):
            out[s] = _smooth_sequence(
                log_likelihoods, offsets[s], offsets[s + 1], initial_probs, transition_matrices,
                posteriors, counts[c], False,
            )
    return out, posteriors, counts.sum(axis=0)[0]


@njit(cache=True, parallel=True)
def forward_backward_varying(
    log_likelihoods: np.ndarray,
    offsets: np.ndarray,
    initial_probs: np.ndarray,
    transition_matrices: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Forward-backward for time-varying transitions, keeping pairwise posteriors per step.

    ``transition_matrices`` is (n_steps, K, K). Returns per-sequence
    log-likelihoods, posteriors (n_steps, K) and pairwise posteriors
    (n_steps, K, K) with entry t = p(z_{t-1}, z_t | y) (zero at sequence starts),
    which input-driven transition models need for their M-step.
    """
    n_sequences = offsets.shape[0] - 1
    n_states = log_likelihoods.shape[1]
    posteriors = np.empty_like(log_likelihoods)
    pairs = np.zeros((log_likelihoods.shape[0], n_states, n_states))
    out = np.empty(n_sequences)
    for s in prange(n_sequences):
        out[s] = _smooth_sequence(
            log_likelihoods, offsets[s], offsets[s + 1], initial_probs, transition_matrices,
            posteriors, pairs, True,
        )
    return out, posteriors, pairs


@njit(cache=True, parallel=True)
def viterbi(
    log_likelihoods: np.ndarray,
    offsets: np.ndarray,
    log_initial: np.ndarray,
    log_transitions: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Most likely state paths (n_steps,) and each path's joint log-probability (n_sequences,).

    Takes log-probabilities: ``log_initial`` (K,), ``log_transitions`` (1 or n_steps, K, K).
    """
    n_sequences = offsets.shape[0] - 1
    n_states = log_likelihoods.shape[1]
    path = np.empty(log_likelihoods.shape[0], dtype=np.int64)
    out = np.empty(n_sequences)
    for s in prange(n_sequences):
        first, last = offsets[s], offsets[s + 1]
        # Backpointers are the only (n_steps, K) array here: one byte each when K allows.
        if n_states <= 256:
            out[s] = _viterbi_sequence(
                log_likelihoods, first, last, log_initial, log_transitions, path,
                np.empty((last - first, n_states), dtype=np.uint8),
            )
        else:
            out[s] = _viterbi_sequence(
                log_likelihoods, first, last, log_initial, log_transitions, path,
                np.empty((last - first, n_states), dtype=np.int32),
            )
    return path, out


@njit(cache=True, parallel=True)
def sample_posterior_paths(
    log_likelihoods: np.ndarray,
    offsets: np.ndarray,
    initial_probs: np.ndarray,
    transition_matrices: np.ndarray,
    uniforms: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw state paths from p(z | y) by forward filtering, backward sampling.

    ``uniforms`` (n_steps,) are U(0, 1) variates, one per step, so the caller's
    random generator fixes the draw. Returns paths (n_steps,) and log-likelihoods.
    """
    n_sequences = offsets.shape[0] - 1
    n_states = log_likelihoods.shape[1]
    varying = transition_matrices.shape[0] > 1
    path = np.empty(log_likelihoods.shape[0], dtype=np.int64)
    out = np.empty(n_sequences)
    for s in prange(n_sequences):
        first, last = offsets[s], offsets[s + 1]
        n_steps = last - first
        filtered = np.empty((n_steps, n_states))
        scaled = np.empty((n_steps, n_states))
        normalisers = np.empty(n_steps)
        out[s] = _filter_sequence(
            log_likelihoods, first, last, initial_probs, transition_matrices,
            filtered, scaled, normalisers,
        )
        if out[s] == -np.inf:
            path[first:last] = -1
            continue
        weights = np.empty(n_states)
        state = _draw(filtered[n_steps - 1], uniforms[last - 1])
        path[last - 1] = state
        for t in range(n_steps - 2, -1, -1):
            matrix = transition_matrices[first + t + 1] if varying else transition_matrices[0]
            for i in range(n_states):
                weights[i] = filtered[t, i] * matrix[i, state]
            state = _draw(weights, uniforms[first + t])
            path[first + t] = state
    return path, out


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
