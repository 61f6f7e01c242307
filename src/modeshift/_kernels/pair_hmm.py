"""Message passing on a chain whose evidence depends on the pair (z_t-1, z_t): a switch resets.

In a model with resets the observation y_t follows mode j's flow when the chain stays in
j (z_t-1 = z_t = j) and a reset regression when it switches i -> j (i != j)::

    log e_t(i, j) = flow[t, j]                                           if i == j
                  = log N(y_t | W_r x_t, S_r),  r = reset_index[i, j]    otherwise

with x_t the step's regressors (a Student-t with nu_r degrees of freedom and scale S_r instead
of the Gaussian for a robust reset). The recursions are the usual ones with e_t(i, j) inside the
sum over the previous mode (still O(T K^2)):

    alpha_t(j) = sum_i alpha_t-1(i) A_ij e_t(i, j) / c_t
    beta_t-1(i) = sum_j A_ij e_t(i, j) beta_t(j) / c_t
    xi_t(i, j) = alpha_t-1(i) A_ij e_t(i, j) beta_t(j) / c_t

The reset densities of a step are computed when the step is visited (twice: forward and
backward) and never stored, so memory is (T, K) whatever the number of resets (plus the
(T, K, K) pairs a time-varying chain's M-step needs, as in :mod:`modeshift._kernels.hmm`). The
backward pass accumulates what an M-step needs: expected transition counts, the flows' weights
(xi_t(j, j), the smoothed posterior at a sequence's first step) and, for each reset r, the
sums of w_t(r) = sum over its pairs of xi_t(i, j) and of w_t(r) v_t v_t^T for the step's row
v_t = [y_t, x_t] (of w_t(r) E[s_t(r)] v_t v_t^T for a robust reset, whose noise is N(0, S_r / s),
s ~ Gamma(nu_r / 2, nu_r / 2): E[s | y_t] = (nu_r + d) / (nu_r + delta_t(r)), delta the squared
Mahalanobis residual, weighs the step in the M-step's sums but not in its counts).

Arguments shared by every function:

- ``flow`` (n_steps, K): log p(y_t | z_t = j) under mode j's flow (0 at a conditioned step);
- ``values`` (n_steps, d + q): rows [y_t, x_t], x_t ending in the constant 1; a row whose last
  entry is not 1 is conditioned on (no history: no evidence, flow or reset);
- ``reset_weights`` (R, d, q), ``inverse_factors`` (R, d, d) = L_r^-1 with S_r = L_r L_r^T,
  ``constants`` (R,) = -(d log 2 pi + log det S_r) / 2 (for a Student-t: log Gamma((nu + d) / 2)
  - log Gamma(nu / 2) - d log(nu pi) / 2 - log det S_r / 2), ``reset_index`` (K, K): the reset of
  each switch (the diagonal is not read), ``dof``: the resets' nu (None: Gaussian, compiled apart);
- ``offsets`` (n_sequences + 1,), ``initial_probs`` (K,), ``transition_matrices`` (1, K, K) for a
  stationary chain or (n_steps, K, K) for a time-varying one (entry t: p(z_t | z_t-1)), as in
  :mod:`modeshift._kernels.hmm`;
- ``reset_log_densities`` (n_steps, R), optional: each reset's log-density at each step, given
  instead of computed from the regressions (with the placeholders of :func:`given_densities`).

>>> import numpy as np
>>> flow, values = np.zeros((3, 2)), np.column_stack([np.zeros(3), np.ones(3)])
>>> resets = (np.zeros((2, 1, 1)), np.ones((2, 1, 1)), np.zeros(2), np.array([[0, 1], [0, 1]]), None)
>>> A = np.array([[[0.9, 0.1], [0.1, 0.9]]])
>>> log_lik, posteriors, _, _, _, _ = forward_backward(flow, values, 1, resets, np.array([0, 3]), np.full(2, 0.5), A)
>>> bool(np.allclose(posteriors, 0.5)), float(log_lik[0])  # every density 1: no evidence either way
(True, 0.0)
"""

from __future__ import annotations

import numpy as np

from modeshift._kernels.compile import kernel
from modeshift._kernels.layout import canonical
from modeshift._kernels.recursions import draw

__all__ = [
    "forward_backward",
    "forward_filter",
    "given_densities",
    "sample_posterior_paths",
    "step_evidence",
    "viterbi",
]

Resets = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float | None]


@kernel
def _step_evidence(
    values, t, d, flow, weights, factors, constants, index, dof, given, densities, precisions, residual, out
):
    """log e_t(i, j) into ``out`` (K, K); the reset densities are ``given[t]`` when ``given`` has rows.
    ``densities`` (R,) gets each reset's log-density, ``precisions`` (R,) each robust reset's
    E[s | y_t] (a Gaussian reset's is left as it was: the callers allocate ones)."""
    n_states = flow.shape[1]
    width = values.shape[1]
    if values[t, width - 1] != 1.0:  # conditioned on: no evidence at all
        out[:, :] = 0.0
        return
    n_resets, _, q = weights.shape
    for r in range(n_resets):
        if given.shape[0] > 0:
            densities[r] = given[t, r]
            continue
        for i in range(d):
            value = values[t, i]
            for j in range(q):
                value -= weights[r, i, j] * values[t, d + j]
            residual[i] = value
        squared = 0.0
        for i in range(d):
            whitened = 0.0
            for j in range(i + 1):
                whitened += factors[r, i, j] * residual[j]
            squared += whitened * whitened
        if dof is None:  # pruned when compiled for Gaussian resets
            densities[r] = constants[r] - 0.5 * squared
        else:
            densities[r] = constants[r] - 0.5 * (dof + d) * np.log1p(squared / dof)
            precisions[r] = (dof + d) / (dof + squared)
    for i in range(n_states):
        for j in range(n_states):
            out[i, j] = flow[t, j] if i == j else densities[index[i, j]]


def step_evidence(row: np.ndarray, d: int, flow: np.ndarray, resets: Resets) -> np.ndarray:
    """log e_t(i, j) (K, K) of one row [y_t, x_t] whose flows' log-likelihoods are ``flow`` (K,):
    one step of a streaming filter (zeros for a conditioned row, as in the batch recursions)."""
    weights, factors, constants, index, dof = resets
    k = len(flow)
    out = np.empty((k, k))
    values, flows = np.ascontiguousarray(row, dtype=float)[None], np.ascontiguousarray(flow, dtype=float)[None]
    given, densities, precisions = np.empty((0, len(weights))), np.empty(len(weights)), np.ones(len(weights))
    arrays = (weights, factors, constants, index, dof, given, densities, precisions, np.empty(d), out)
    _step_evidence(values, 0, d, flows, *arrays)
    return out


def given_densities(reset_index: np.ndarray, n_steps: int) -> tuple[np.ndarray, int, Resets]:
    """``values``, ``n_responses`` and ``resets`` for a chain whose reset log-densities are given
    (``reset_log_densities`` (n_steps, R) of the recursions) instead of computed from regressions:
    rows [1] (no responses, every step linked), empty regressions, the (K, K) ``reset_index``.
    A switching LDS's resets are such: their evidence is an expectation under q(x)."""
    n_resets = int(reset_index.max()) + 1
    resets = (np.zeros((n_resets, 0, 1)), np.zeros((n_resets, 0, 0)), np.zeros(n_resets), reset_index, None)
    return np.ones((n_steps, 1)), 0, resets


def _given(resets: Resets, reset_log_densities: np.ndarray | None) -> np.ndarray:
    """The (n_steps, R) table the kernels read, or an empty one: compute from the regressions."""
    if reset_log_densities is None:
        return np.empty((0, len(resets[0])))
    return np.ascontiguousarray(reset_log_densities, dtype=float)


_NEGLIGIBLE = 1e-300  # a pair whose prior weight alpha_t-1(i) A_ij is below this is not taken


@kernel
def _shift(previous, matrix, evidence):
    """The largest log e_t(i, j) over the pairs the chain can take (alpha_t-1(i) A_ij above
    ``_NEGLIGIBLE``): the scale of step t's sums. (The largest over every pair can belong to a
    previous mode of probability (nearly) 0, and then every term underflows when the evidence
    differs by much, as a switching LDS's with a small flow noise does; such pairs are left out
    of every sum, forward and back.)"""
    shift = -np.inf
    for i in range(evidence.shape[0]):
        for j in range(evidence.shape[1]):
            if previous[i] * matrix[i, j] > _NEGLIGIBLE and evidence[i, j] > shift:
                shift = evidence[i, j]
    return shift


@kernel
def _forward(
    flow,
    values,
    d,
    weights,
    factors,
    constants,
    index,
    dof,
    given,
    offsets,
    initial,
    matrices,
    filtered,
    shifts,
    scales,
):  # noqa: E501
    n_states = flow.shape[1]
    n_sequences = offsets.shape[0] - 1
    log_lik = np.zeros(n_sequences)
    evidence = np.empty((n_states, n_states))
    densities, precisions, residual = np.empty(weights.shape[0]), np.ones(weights.shape[0]), np.empty(d)
    for s in range(n_sequences):
        total = 0.0
        for t in range(offsets[s], offsets[s + 1]):
            if t == offsets[s]:
                shift = flow[t].max()
                for j in range(n_states):
                    filtered[t, j] = initial[j] * np.exp(flow[t, j] - shift)
            else:
                _step_evidence(
                    values,
                    t,
                    d,
                    flow,
                    weights,
                    factors,
                    constants,
                    index,
                    dof,
                    given,
                    densities,
                    precisions,
                    residual,
                    evidence,
                )
                matrix = matrices[t if matrices.shape[0] > 1 else 0]
                shift = _shift(filtered[t - 1], matrix, evidence)
                for j in range(n_states):
                    predicted = 0.0
                    for i in range(n_states):
                        weight = filtered[t - 1, i] * matrix[i, j]
                        if weight > _NEGLIGIBLE:
                            predicted += weight * np.exp(evidence[i, j] - shift)
                    filtered[t, j] = predicted
            scale = filtered[t].sum()
            if not (scale > 0.0 and np.isfinite(shift)):  # impossible from here: no law (check_possible)
                filtered[t : offsets[s + 1]] = np.nan
                total = -np.inf
                break
            filtered[t] /= scale
            shifts[t], scales[t] = shift, scale
            total += shift + np.log(scale)
        log_lik[s] = total
    return log_lik


@kernel
def _backward(
    flow, values, d, weights, factors, constants, index, dof, given, offsets, matrices, filtered, shifts, scales, out
):
    posteriors, stay, pairs = out
    n_states, width = flow.shape[1], values.shape[1]
    n_resets = weights.shape[0]
    outer, counts = np.zeros((n_resets, width, width)), np.zeros(n_resets)
    evidence = np.empty((n_states, n_states))
    densities, precisions, residual = np.empty(n_resets), np.ones(n_resets), np.empty(d)
    beta, previous, reset_weight = np.empty(n_states), np.empty(n_states), np.empty(n_resets)
    for s in range(offsets.shape[0] - 1):
        first, last = offsets[s], offsets[s + 1] - 1
        if np.isnan(filtered[last, 0]):  # an impossible sequence (see _forward): no posterior either
            posteriors[first : last + 1] = np.nan
            stay[first : last + 1] = np.nan
            continue
        beta[:] = 1.0
        posteriors[last] = filtered[last]
        for t in range(last, first, -1):
            _step_evidence(
                values,
                t,
                d,
                flow,
                weights,
                factors,
                constants,
                index,
                dof,
                given,
                densities,
                precisions,
                residual,
                evidence,
            )
            previous[:] = 0.0
            reset_weight[:] = 0.0
            matrix = matrices[t if matrices.shape[0] > 1 else 0]
            moved = pairs[t if pairs.shape[0] > 1 else 0]
            for i in range(n_states):
                for j in range(n_states):
                    move = 0.0  # for a pair the chain cannot take, whose evidence may exceed the shift
                    if filtered[t - 1, i] * matrix[i, j] > _NEGLIGIBLE:
                        move = matrix[i, j] * np.exp(evidence[i, j] - shifts[t]) / scales[t]
                    previous[i] += move * beta[j]
                    xi = filtered[t - 1, i] * move * beta[j]
                    moved[i, j] += xi
                    if i == j:
                        stay[t, j] = xi
                    else:
                        reset_weight[index[i, j]] += xi
            if values[t, width - 1] == 1.0:
                for r in range(n_resets):
                    w = reset_weight[r]
                    counts[r] += w
                    w *= precisions[r]  # E[s | y_t]: 1 for a Gaussian reset
                    for a in range(width):
                        wa = w * values[t, a]
                        for b in range(a + 1):
                            outer[r, a, b] += wa * values[t, b]
            beta[:] = previous
            for i in range(n_states):
                posteriors[t - 1, i] = filtered[t - 1, i] * beta[i]
        stay[first] = posteriors[first]
    for r in range(n_resets):
        for a in range(width):
            for b in range(a):
                outer[r, b, a] = outer[r, a, b]
    return outer, counts


@kernel
def _viterbi(flow, values, d, weights, factors, constants, index, dof, given, offsets, log_initial, log_matrices, path):
    n_steps, n_states = flow.shape
    n_sequences = offsets.shape[0] - 1
    log_prob = np.empty(n_sequences)
    pointers = np.zeros((n_steps, n_states), dtype=np.int64)
    evidence = np.empty((n_states, n_states))
    densities, precisions, residual = np.empty(weights.shape[0]), np.ones(weights.shape[0]), np.empty(d)
    score, updated = np.empty(n_states), np.empty(n_states)
    for s in range(n_sequences):
        first, last = offsets[s], offsets[s + 1] - 1
        for j in range(n_states):
            score[j] = log_initial[j] + flow[first, j]
        for t in range(first + 1, last + 1):
            _step_evidence(
                values,
                t,
                d,
                flow,
                weights,
                factors,
                constants,
                index,
                dof,
                given,
                densities,
                precisions,
                residual,
                evidence,
            )
            log_matrix = log_matrices[t if log_matrices.shape[0] > 1 else 0]
            for j in range(n_states):
                best, best_i = -np.inf, 0
                for i in range(n_states):
                    candidate = score[i] + log_matrix[i, j] + evidence[i, j]
                    if candidate > best:
                        best, best_i = candidate, i
                updated[j], pointers[t, j] = best, best_i
            score[:] = updated
        state = int(np.argmax(score))
        log_prob[s] = score[state]
        path[last] = state
        for t in range(last, first, -1):
            state = pointers[t, state]
            path[t - 1] = state
    return log_prob


@kernel
def _sample_paths(
    flow, values, d, weights, factors, constants, index, dof, given, offsets, matrices, filtered, uniforms, path
):
    n_states = flow.shape[1]
    evidence = np.empty((n_states, n_states))
    densities, precisions, residual = np.empty(weights.shape[0]), np.ones(weights.shape[0]), np.empty(d)
    probabilities = np.empty(n_states)
    for s in range(offsets.shape[0] - 1):
        first, last = offsets[s], offsets[s + 1] - 1
        path[last] = draw(filtered[last], uniforms[last])
        for t in range(last, first, -1):  # z_t-1 | z_t = j, y_0..t-1 ~ alpha_t-1(i) A_ij e_t(i, j)
            _step_evidence(
                values,
                t,
                d,
                flow,
                weights,
                factors,
                constants,
                index,
                dof,
                given,
                densities,
                precisions,
                residual,
                evidence,
            )
            j, matrix = path[t], matrices[t if matrices.shape[0] > 1 else 0]
            shift = _shift(filtered[t - 1], matrix[:, j : j + 1], evidence[:, j : j + 1])
            for i in range(n_states):
                weight = filtered[t - 1, i] * matrix[i, j]
                probabilities[i] = weight * np.exp(evidence[i, j] - shift) if weight > _NEGLIGIBLE else 0.0
            path[t - 1] = draw(probabilities, uniforms[t - 1])


def forward_filter(
    flow: np.ndarray,
    values: np.ndarray,
    n_responses: int,
    resets: Resets,
    offsets: np.ndarray,
    initial_probs: np.ndarray,
    transition_matrices: np.ndarray,
    reset_log_densities: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Filtered probabilities p(z_t | y_0..t) (n_steps, K) and per-sequence log-likelihoods
    (-inf for an impossible sequence, whose rows from the impossible step on are NaN); then each
    step's evidence shift and normaliser (log c_t = shift + log normaliser), which the backward
    pass reuses."""
    given = _given(resets, reset_log_densities)
    return _filter(flow, values, n_responses, resets, given, offsets, initial_probs, transition_matrices)


def _filter(
    flow: np.ndarray,
    values: np.ndarray,
    n_responses: int,
    resets: Resets,
    given: np.ndarray,
    offsets: np.ndarray,
    initial_probs: np.ndarray,
    transition_matrices: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`forward_filter` on the table of :func:`_given` (converted once by the caller)."""
    filtered, shifts, scales = np.empty(flow.shape), np.empty(len(flow)), np.empty(len(flow))
    transition_matrices = canonical(transition_matrices)  # a read-only one would compile _forward again
    log_lik = _forward(
        flow, values, n_responses, *resets, given, offsets, initial_probs, transition_matrices, filtered, shifts, scales
    )
    return filtered, log_lik, shifts, scales


def forward_backward(
    flow: np.ndarray,
    values: np.ndarray,
    n_responses: int,
    resets: Resets,
    offsets: np.ndarray,
    initial_probs: np.ndarray,
    transition_matrices: np.ndarray,
    reset_log_densities: np.ndarray | None = None,
) -> tuple[np.ndarray, ...]:
    """Smoothing with the M-step's sums, in one forward and one backward pass.

    Returns per-sequence log-likelihoods (n_sequences,), posteriors p(z_t | y) (n_steps, K),
    expected transition counts: sum_t xi_t (1, K, K) for a stationary chain, each step's xi_t
    (n_steps, K, K; zero at sequence starts) for a time-varying one, whose M-step needs them;
    the flows' weights (n_steps, K), and each reset's sum of w_t(r) v_t v_t^T (R, d + q, d + q)
    and of w_t(r) (R,). A sequence with probability 0 leaves NaN posteriors (the caller refuses it).
    """
    given = _given(resets, reset_log_densities)  # once for both passes: a slice of a wider table is copied
    transition_matrices = canonical(transition_matrices)  # a read-only one would compile both passes again
    filtered, log_lik, shifts, scales = _filter(
        flow, values, n_responses, resets, given, offsets, initial_probs, transition_matrices
    )
    posteriors, stay = np.empty(flow.shape), np.empty(flow.shape)
    n_steps, n_states = flow.shape
    pairs = np.zeros((n_steps if len(transition_matrices) > 1 else 1, n_states, n_states))
    out = (posteriors, stay, pairs)
    outer, counts = _backward(
        flow, values, n_responses, *resets, given, offsets, transition_matrices, filtered, shifts, scales, out
    )
    return log_lik, posteriors, pairs, stay, outer, counts


def viterbi(
    flow: np.ndarray,
    values: np.ndarray,
    n_responses: int,
    resets: Resets,
    offsets: np.ndarray,
    log_initial: np.ndarray,
    log_transition_matrices: np.ndarray,
    reset_log_densities: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The most likely mode path (n_steps,) and its log p(y, path) per sequence."""
    path = np.empty(len(flow), dtype=np.int64)
    given = _given(resets, reset_log_densities)
    log_matrices = canonical(log_transition_matrices)  # a read-only one would compile _viterbi again
    log_prob = _viterbi(flow, values, n_responses, *resets, given, offsets, log_initial, log_matrices, path)
    return path, log_prob


def sample_posterior_paths(
    flow: np.ndarray,
    values: np.ndarray,
    n_responses: int,
    resets: Resets,
    offsets: np.ndarray,
    initial_probs: np.ndarray,
    transition_matrices: np.ndarray,
    uniforms: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """One mode path (n_steps,) drawn from p(z | y) by forward filtering, backward sampling (one
    uniform per step), and the per-sequence log-likelihoods (a path of an impossible sequence is
    no draw: the caller refuses it)."""
    transition_matrices = canonical(transition_matrices)  # a read-only one would compile both passes again
    filtered, log_lik, _, _ = forward_filter(
        flow, values, n_responses, resets, offsets, initial_probs, transition_matrices
    )
    path = np.zeros(len(flow), dtype=np.int64)
    if np.isfinite(log_lik).all():
        given = np.empty((0, len(resets[0])))
        _sample_paths(flow, values, n_responses, *resets, given, offsets, transition_matrices, filtered, uniforms, path)
    return path, log_lik
