"""The recursions of a hidden Markov chain, one time step and one sequence at a time.

Conventions (shared by :mod:`modeshift._kernels.hmm` and :mod:`modeshift._kernels.split`):

- ``log_likelihoods`` (n_steps, K) holds log p(y_t | z_t = k) for every step of every
  sequence, or, with ``rows`` (n_steps,), a table whose row ``rows[t]`` is step t's
  (an empty ``rows`` means one row per step);
- ``table`` and ``table_shifts`` are exp(log_likelihoods - row maximum) and the row
  maxima (:func:`scaled_table`), so the recursions take no exponential per step;
- transition matrices come as (1, K, K) for a stationary chain or (n_steps, K, K),
  and ``incoming`` is the same stack transposed, so that the probability of
  arriving in state j is a contiguous row.

The filter is *scaled*: it writes filtered probabilities and sums the log of each
step's normaliser, so no sequence length underflows. The messages it carries from
step to step are rescaled only when their total falls below ``1e-20``, which keeps
a division off the chain of dependent operations. When a step's evidence would
fall below ``1e-280`` (an outlier that every likely state finds impossible), the
shift is taken against the predicted probabilities instead.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from modeshift._kernels.compile import kernel
from modeshift._kernels.threads import parallel, rows_of

_TINY = 1e-280
_LOW = 1e-20  # unnormalised messages are rescaled when their total falls below this (see filter_sequence)
REDUCTION_FLAGS = {"nnan", "nsz", "reassoc", "contract"}


# ----------------------------------------------------------------- one time step
# Reassociation lets LLVM vectorise the inner reductions; no NaN can arise in the
# recursions (probabilities, or log-probabilities that are finite or -inf), and
# -inf stays valid (no "ninf" flag). Functions that call each other share the
# flags so LLVM can inline them.


@kernel(fastmath=REDUCTION_FLAGS, inline="always")
def _dot(x: np.ndarray, y: np.ndarray) -> float:
    total = 0.0
    for i in range(x.shape[0]):
        total += x[i] * y[i]
    return total


@kernel(fastmath=REDUCTION_FLAGS, inline="always")
def _max_plus(x: np.ndarray, y: np.ndarray) -> float:
    """max_i (x[i] + y[i])."""
    best = -np.inf
    for i in range(x.shape[0]):
        value = x[i] + y[i]
        best = value if value > best else best
    return best


@kernel(fastmath=REDUCTION_FLAGS, inline="always")
def _argmax_plus(x: np.ndarray, y: np.ndarray) -> int:
    """argmax_i (x[i] + y[i]), the first on ties."""
    best, best_value = 0, -np.inf
    for i in range(x.shape[0]):
        value = x[i] + y[i]
        if value > best_value:
            best, best_value = i, value
    return best


@kernel(fastmath=REDUCTION_FLAGS, inline="always")
def predict(filtered: np.ndarray, incoming: np.ndarray, out: np.ndarray) -> None:
    """out[j] = sum_i filtered[i] p(j | i), with ``incoming[j, i]`` = p(j | i) (a contiguous row per j)."""
    for j in range(out.shape[0]):
        out[j] = _dot(filtered, incoming[j])


def transposed(matrices: np.ndarray) -> np.ndarray:
    """A stack of matrices (..., K, L) with rows and columns swapped, contiguous (numpy's matmul takes
    its BLAS path with them; with a transposed view, a loop several times slower on small matrices)."""
    return np.ascontiguousarray(np.swapaxes(matrices, -1, -2))


@parallel(tasks=rows_of(0, 16_384))
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


def buffer(scratch: dict[str, np.ndarray] | None, name: str, shape: tuple[int, ...], zero: bool = False) -> np.ndarray:
    """A float array of ``shape`` (zeros if ``zero``): the leading rows of ``scratch[name]``
    when it has at least as many rows of that shape, else a new one, which ``scratch`` then keeps.

    An EM loop hands the same ``scratch`` to every E-step (and to each block of one,
    :meth:`~modeshift.data.Sequences.blocks`). Fresh memory costs a page fault per 4 KiB on
    first touch; at 10^5 steps the faults of an E-step's arrays cost more than its recursions.
    """
    array = None if scratch is None else scratch.get(name)
    if array is None or array.shape[1:] != shape[1:] or len(array) < shape[0]:
        array = np.zeros(shape) if zero else np.empty(shape)
        if scratch is not None:
            scratch[name] = array
        return array
    array = array[: shape[0]]
    if zero:
        array.fill(0.0)
    return array


def scaled_table(
    log_likelihoods: np.ndarray, scratch: dict[str, np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """exp(log_likelihoods - row maximum) and the row maxima.

    The exponentials are taken by numpy, whose vectorised exp is several times
    faster than the scalar one a compiled loop calls.
    """
    shifted = buffer(scratch, "table", log_likelihoods.shape)
    shifts = buffer(scratch, "table_shifts", log_likelihoods.shape[:1])
    _shift_rows(log_likelihoods, shifted, shifts)
    return np.exp(shifted, out=shifted), shifts


@kernel(fastmath=REDUCTION_FLAGS, inline="always")
def condition(
    log_likelihoods: np.ndarray,
    rows: np.ndarray,
    table: np.ndarray,
    table_shifts: np.ndarray,
    t: int,
    predicted: np.ndarray,
    scaled: np.ndarray,
    filtered: np.ndarray,
) -> tuple[float, float]:
    """One filtering step at row t: condition predicted state probabilities on its evidence.

    Copies the scaled emission likelihoods exp(log_likelihood - shift) into ``scaled``,
    writes p(z_t | y_{0:t}) into ``filtered`` and returns ``(normaliser, shift)`` with
    p(y_t | y_{0:t-1}) = normaliser * exp(shift); a zero normaliser means an impossible
    step. A normaliser that would underflow goes to :func:`_reshift`.

    This form, on 1-D arrays, serves the split recursions' meeting runs.
    :func:`filter_sequence` writes the same step out on its 2-D arrays: arrays or views
    handed to a function on every step cost numba reference counting, which would slow
    the forward pass by a third.
    """
    row = rows[t] if rows.shape[0] > 0 else t
    shift = table_shifts[row]
    normaliser = 0.0
    for j in range(predicted.shape[0]):
        emission = table[row, j]
        scaled[j] = emission
        joint = predicted[j] * emission
        filtered[j] = joint
        normaliser += joint
    if normaliser < _TINY:
        normaliser, shift = _reshift(predicted, log_likelihoods[row], scaled, shift, filtered)
    else:
        inverse = 1.0 / normaliser
        for j in range(predicted.shape[0]):
            filtered[j] *= inverse
    return normaliser, shift


@kernel(fastmath=REDUCTION_FLAGS, inline="always")
def _reshift(
    predicted: np.ndarray, log_likelihood: np.ndarray, scaled: np.ndarray, shift: float, filtered: np.ndarray
) -> tuple[float, float]:
    """:func:`condition` for a step whose evidence underflows against its own maximum (an
    outlier that every likely state finds impossible): the shift is re-taken against the
    predicted probabilities and ``scaled`` rewritten; an impossible step gets normaliser 0."""
    n_states = predicted.shape[0]
    if shift == -np.inf:
        return 0.0, shift
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


# ------------------------------------------------------------- one sequence
@kernel(fastmath=REDUCTION_FLAGS)
def filter_sequence(
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

    The recursion carries the joint probabilities *unnormalised* (``carried``, of
    total ``mass``) and renormalises them only when the mass falls below _LOW: the
    division by each step's normaliser then stays off the chain of dependent
    operations from one step to the next, which sets the speed of this loop. The
    normalised ``filtered`` rows and the normalisers are written alongside.
    """
    n_states = initial_probs.shape[0]
    varying = incoming.shape[0] > 1
    keep_filtered = filtered.shape[0] > 1
    keep_scaled = scaled.shape[0] > 1
    keep_normalisers = normalisers.shape[0] > 1
    predicted = initial_probs.copy()
    carried = np.empty(n_states)
    mass = 1.0  # total of ``carried``, and so of ``predicted``
    total, product = 0.0, 1.0  # log-likelihood = total + log(product): one log per many steps
    for t in range(last - first):
        row = t if keep_filtered else 0
        if t > 0:
            predict(carried, incoming[first + t] if varying else incoming[0], predicted)
        evidence = rows[first + t] if rows.shape[0] > 0 else first + t
        shift = table_shifts[evidence]
        step = t if keep_scaled else 0
        joint_mass = 0.0
        for j in range(n_states):
            emission = table[evidence, j]
            scaled[step, j] = emission
            joint = predicted[j] * emission
            carried[j] = joint
            joint_mass += joint
        normaliser = joint_mass / mass
        if normaliser < _TINY:  # predicted and carried scaled back to total 1 for the re-shift
            for j in range(n_states):
                predicted[j] /= mass
            normaliser, shift = _reshift(predicted, log_likelihoods[evidence], scaled[step], shift, filtered[row])
            if normaliser == 0.0:
                return -np.inf
            for j in range(n_states):
                carried[j] = filtered[row, j]
            mass = 1.0
        else:
            inverse = 1.0 / joint_mass
            for j in range(n_states):
                filtered[row, j] = carried[j] * inverse
            mass = joint_mass
            if mass < _LOW:
                for j in range(n_states):
                    carried[j] = filtered[row, j]
                mass = 1.0
        normalisers[t if keep_normalisers else 0] = normaliser
        total += shift
        product *= normaliser  # normalisers lie in [1e-280, 1], so this cannot underflow
        if product < 1e-20:
            total += np.log(product)
            product = 1.0
    return total + np.log(product)


@kernel(fastmath=REDUCTION_FLAGS)
def smooth_sequence(
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
    # The scaled emission likelihoods are parked in the posteriors rows until the
    # backward pass overwrites them.
    scaled = posteriors[first:last]
    total = filter_sequence(
        log_likelihoods,
        rows,
        table,
        table_shifts,
        first,
        last,
        initial_probs,
        incoming,
        filtered,
        scaled,
        normalisers,
    )
    if total == -np.inf:
        scaled[:] = np.nan
        filtered[:] = 0.0  # no contribution to the summed pair counts
        return total
    backward = np.ones(log_likelihoods.shape[1])
    smooth_backward(
        transition_matrices, first, scaled, filtered, normalisers, backward, pair_counts, backward_weights, per_step
    )
    return total


@kernel(fastmath=REDUCTION_FLAGS)
def smooth_backward(
    transition_matrices: np.ndarray,
    first: int,
    scaled: np.ndarray,
    filtered: np.ndarray,
    normalisers: np.ndarray,
    backward: np.ndarray,
    pair_counts: np.ndarray,
    backward_weights: np.ndarray,
    per_step: bool,
) -> None:
    """The backward pass of :func:`smooth_sequence` over the rows ``first:first + n`` that
    ``scaled``, ``filtered`` and ``normalisers`` (n rows each) hold from a forward pass.

    ``backward`` is the message of the last row, scaled by the forward pass (so that
    sum_i filtered(i) backward(i) = 1; ones at a sequence's end). ``scaled`` is
    overwritten with the posteriors; pair counts or backward weights are written for
    every row but the first, which must be a sequence's first row or one that another
    pass covers.
    """
    n_steps, n_states = filtered.shape
    varying = transition_matrices.shape[0] > 1
    weights = np.empty(n_states)
    for t in range(n_steps - 1, -1, -1):  # 2-D indexing: no view per step (see condition)
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
        if not per_step:
            for j in range(n_states):
                backward_weights[first + t, j] = weights[j]
        matrix = first + t if varying else 0
        for i in range(n_states):
            value = 0.0
            for j in range(n_states):
                value += transition_matrices[matrix, i, j] * weights[j]
            backward[i] = value
        if per_step:
            for i in range(n_states):
                previous = filtered[t - 1, i]
                for j in range(n_states):
                    pair_counts[first + t, i, j] += previous * transition_matrices[matrix, i, j] * weights[j]


@kernel(fastmath=REDUCTION_FLAGS)
def backward_sequence(
    log_likelihoods: np.ndarray,
    rows: np.ndarray,
    table: np.ndarray,
    table_shifts: np.ndarray,
    first: int,
    last: int,
    transition_matrices: np.ndarray,
    backward: np.ndarray,
) -> None:
    """Backward messages of rows ``first:last``, each normalised to sum 1, into ``backward[first:last]``.

    beta_t(i) is proportional to p(y_{t+1:T} | z_t = i). Normalising each message by
    its own sum (not by the forward pass's constants) makes the backward pass
    independent of the forward one, so the two can run at the same time. As in
    :func:`filter_sequence`, the recursion itself carries unnormalised messages
    (``carried``, of total ``mass``), rescaled only when the mass falls below _LOW. It
    cannot grow past K: A is row-stochastic and the table at most 1, so the largest
    entry of a message never grows.
    """
    n_states = backward.shape[1]
    varying = transition_matrices.shape[0] > 1
    message, carried = np.empty(n_states), np.empty(n_states)
    for j in range(n_states):
        backward[last - 1, j] = carried[j] = 1.0 / n_states
    mass = 1.0
    # 2-D indexing throughout: a view per step would cost more than the step (see condition)
    for row in range(last - 1, first, -1):
        evidence = rows[row] if rows.shape[0] > 0 else row
        total = 0.0
        for j in range(n_states):
            value = table[evidence, j] * carried[j]
            message[j] = value
            total += value
        if total < _TINY * mass:  # every likely state is unlikely later on: re-scale in log space
            shift = -np.inf
            for j in range(n_states):
                if carried[j] > 0.0:
                    shift = max(shift, log_likelihoods[evidence, j] + np.log(carried[j]))
            for j in range(n_states):
                later = carried[j]
                message[j] = np.exp(log_likelihoods[evidence, j] + np.log(later) - shift) if later > 0.0 else 0.0
        matrix = row if varying else 0
        mass = 0.0
        for i in range(n_states):
            value = 0.0
            for j in range(n_states):
                value += transition_matrices[matrix, i, j] * message[j]
            carried[i] = value
            mass += value
        inverse = 1.0 / mass if mass > 0.0 else 0.0  # 0: an impossible sequence, flagged by the forward pass
        for i in range(n_states):
            backward[row - 1, i] = carried[i] * inverse
        if mass < _LOW:
            for i in range(n_states):
                carried[i] = backward[row - 1, i]
            mass = 1.0


@kernel(fastmath=REDUCTION_FLAGS)
def combine_sequence(
    first: int,
    last: int,
    transition_matrices: np.ndarray,
    filtered: np.ndarray,
    normalisers: np.ndarray,
    backward: np.ndarray,
    posteriors: np.ndarray,
    pair_counts: np.ndarray,
    backward_weights: np.ndarray,
    per_step: bool,
) -> bool:
    """Posteriors at rows ``first:last``, none of them a sequence's first step, from a
    forward pass and an independent :func:`backward_sequence`.

    On entry ``posteriors`` holds the forward pass's scaled emission likelihoods
    b_t, ``filtered`` (a_t) and ``normalisers`` (c_t) its other results, and
    ``backward`` the normalised backward messages (it may be ``backward_weights``
    itself). With d_t = c_t sum_j a_t(j) beta_t(j), the pairwise posterior is
    p(z_{t-1}=i, z_t=j | y) = a_{t-1}(i) A_ij w_t(j), w_t = b_t beta_t / d_t, so
    the outputs are those of :func:`smooth_sequence`. Returns False, leaving the
    outputs unfinished, if some d_t underflows: the two passes then disagree on
    every state (the data favour states the chain can hardly reach) and the
    backward messages may have lost the states that matter, so the caller must
    use :func:`smooth_sequence`, whose backward pass is scaled by the forward one.
    """
    n_states = backward.shape[1]
    varying = transition_matrices.shape[0] > 1
    weights = np.empty(n_states)
    for row in range(first, last):  # 2-D indexing: no view per step (see condition)
        agreement = 0.0
        for j in range(n_states):
            agreement += filtered[row, j] * backward[row, j]
        joint = normalisers[row] * agreement
        if joint < _TINY:
            return False
        inverse = 1.0 / joint
        scale = normalisers[row] * inverse
        for j in range(n_states):
            emission, beta = posteriors[row, j], backward[row, j]
            posteriors[row, j] = filtered[row, j] * beta * scale
            if per_step:
                weights[j] = emission * beta * inverse
            else:
                backward_weights[row, j] = emission * beta * inverse
        if per_step:
            matrix = row if varying else 0
            for i in range(n_states):
                previous = filtered[row - 1, i]
                for j in range(n_states):
                    pair_counts[row, i, j] = previous * transition_matrices[matrix, i, j] * weights[j]
    return True


@kernel(fastmath=REDUCTION_FLAGS, inline="always")
def viterbi_row(previous: np.ndarray, matrix: np.ndarray, evidence: np.ndarray, out: np.ndarray) -> None:
    """out[j] = max_i (previous[i] + log p(j | i)) + evidence[j], with ``matrix[j, i]`` = log p(j | i)."""
    for j in range(out.shape[0]):
        out[j] = _max_plus(previous, matrix[j]) + evidence[j]


@kernel(fastmath=REDUCTION_FLAGS)
def viterbi_sweep(
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
        viterbi_row(scores[t - 1], matrix, evidence, scores[t])


@kernel(fastmath=REDUCTION_FLAGS)
def backtrack(scores: np.ndarray, log_incoming: np.ndarray, first: int, path: np.ndarray) -> int:
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


@kernel
def draw(probs: np.ndarray, uniform: float) -> int:
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


def table_rows(rows: np.ndarray | None) -> np.ndarray:
    return np.empty(0, dtype=np.int64) if rows is None else rows
