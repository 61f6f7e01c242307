"""The log-likelihood of a linear-Gaussian state-space model and its gradient in every matrix, in one call.

A quasi-Newton climb of the exact log-likelihood (:mod:`modeshift.models.lds_mle`) asks for
log p(Y) and its gradient a dozen times; on a short series the arithmetic of each pass is a few
microseconds and the price is the trips between Python and the compiled loops. Here one
compiled call runs, per sequence, the Kalman filter (:func:`modeshift._kernels.kalman`'s,
exact diffuse start included), the smoother's backward pass with its disturbances r, N and the
observation terms u, D (Durbin & Koopman 2012, sec. 7.3), and sums them into the score by the
Fisher identity (Koopman & Shephard 1992):

    dl/dQ = sum_t (r_t-1 r_t-1' - N_t-1) / 2,       dl/dR = sum_t (u_t u_t' - D_t) / 2,
    dl/dA = sum_t (r_t-1 x_t-1|T' - N_t-1 A P_t-1|t-1),   dl/dB = sum_t r_t-1 u_t',
    dl/dC = sum_t (u_t x_t|T' - (F_t^-1 C - K_t' N_t L_t) P_t|t-1),   dl/dD = sum_t u_t u_t'
    (u_t the inputs in the last),
    dl/dm0 = r_-1,   dl/dP0 = (r_-1 r_-1' - N_-1) / 2   (per sequence, on the proper components),

over the steps with a predecessor for A, B and Q; for a covariance S, the symmetric G with
dl = tr(G dS). No covariance is inverted, so all of it is exact with singular Q, R and P0.

>>> import numpy as np
>>> y = np.array([[1.0], [0.5], [np.nan], [2.0]])
>>> one = np.eye(1)
>>> log_lik, gradient = log_likelihood_and_score(y, np.array([0, 4]), np.zeros(1), one, one, one, one, one)
>>> sorted(gradient)
['A', 'B', 'C', 'D', 'P0', 'Q', 'R', 'm0']
"""

from __future__ import annotations

import numpy as np
from numba import prange

from modeshift._kernels.compile import kernel
from modeshift._kernels.kalman import _at, _filter_sequence, _mask, _smooth_sequence, filter_arrays, filter_failure
from modeshift._kernels.threads import parallel, sequences_of

__all__ = ["FLAT", "ScorePass", "log_likelihood_and_score"]

#: the gradient's order in the compiled pass
_KEYS = ("A", "B", "Q", "C", "D", "R", "m0", "P0")
#: the matrices' order in the flat vectors of :class:`ScorePass`
FLAT = ("m0", "P0", "A", "B", "Q", "C", "D", "R")
#: the arguments of the compiled pass (:func:`~modeshift._kernels.kalman.filter_arrays`' tuple), by name
_ARGUMENTS = ("observations", "inputs", "offsets", "m0", "P0", "diffuse", "A", "B", "Q", "C", "D", "R")


@kernel
def _accumulate(first, last, inputs, diffuse, rows, smoothed_means, disturbances, gradient) -> None:
    """Add the score terms of rows ``first:last`` (one sequence) into ``gradient`` (the order of
    ``_KEYS``), dl/dA on the state ``rows`` flagged only."""
    rs, Ns, NAP, us, halves, WP = disturbances
    gA, gB, gQ, gC, gD, gR, gm0, gP0 = gradient
    n, m, p = rs.shape[1], inputs.shape[1], us.shape[1]
    for t in range(first, last):
        r, N = rs[t], Ns[t]
        if t == first:
            for i in range(n):
                if diffuse[i]:
                    continue
                gm0[i] += r[i]
                for j in range(n):
                    if not diffuse[j]:
                        gP0[i, j] += 0.5 * (r[i] * r[j] - N[i, j])
        else:
            for i in range(n):
                for j in range(n):
                    gQ[i, j] += 0.5 * (r[i] * r[j] - N[i, j])
                if rows[i]:
                    for j in range(n):
                        gA[i, j] += r[i] * smoothed_means[t - 1, j] - NAP[t, i, j]
                for k in range(m):
                    gB[i, k] += r[i] * inputs[t, k]
        for a in range(p):
            u = us[t, a]
            for j in range(n):
                gC[a, j] += u * smoothed_means[t, j] - WP[t, a, j]
            for k in range(m):
                gD[a, k] += u * inputs[t, k]
            for b in range(p):
                gR[a, b] += halves[t, a, b]
    for a in range(p):  # symmetric on entry (zero, or a sum of symmetric terms): symmetrise the added sum once
        for b in range(a + 1, p):
            gR[a, b] = gR[b, a] = 0.5 * (gR[a, b] + gR[b, a])


@parallel(tasks=sequences_of(2))
def _score(observations, inputs, offsets, initial_means, initial_covs, diffuse, A, B, Q, C, D, R, rows,
           log_likelihoods, failures, gradients):  # fmt: skip
    n_steps, n, p = observations.shape[0], A.shape[1], C.shape[1]
    moments = (np.empty((n_steps, n)), np.empty((n_steps, n, n)), np.empty((n_steps, n)), np.empty((n_steps, n, n)))
    skipped = np.empty((0, n, n))  # the smoothed covariances: the score needs none
    smoothed = (np.empty((n_steps, n)), skipped, skipped)
    disturbances = (
        np.zeros((n_steps, n)),
        np.zeros((n_steps, n, n)),
        np.zeros((n_steps, n, n)),
        np.zeros((n_steps, p)),
        np.zeros((n_steps, p, p)),
        np.zeros((n_steps, p, n)),
    )
    for s in prange(offsets.shape[0] - 1):
        first, last = offsets[s], offsets[s + 1]
        failures[s], log_likelihoods[s] = _filter_sequence(
            observations, inputs, first, last, _at(initial_means, np.int64(s)), _at(initial_covs, np.int64(s)), diffuse,
            (A, B, Q, C, D, R), moments,
        )  # fmt: skip
        if failures[s] >= 0:
            continue
        _smooth_sequence(observations, inputs, first, last, moments, diffuse, A, C, D, R, smoothed, disturbances, rows)
        gradient = (gradients[0][s], gradients[1][s], gradients[2][s], gradients[3][s],
                    gradients[4][s], gradients[5][s], gradients[6][s], gradients[7][s])  # fmt: skip
        _accumulate(first, last, inputs, diffuse, rows, smoothed[0], disturbances, gradient)


def log_likelihood_and_score(
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
    score_rows: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """log p(Y) per sequence (n_sequences,) and its gradient summed over all of them, per matrix
    (keys A, B, Q, C, D, R, m0, P0; a covariance's as the symmetric G with dl = tr(G dS)), of a
    time-invariant model with the arguments of :func:`~modeshift._kernels.kalman.kalman_filter`
    (B, D zero when absent). ``diffuse`` flags the exact diffuse components (R must then be
    diagonal): the log-likelihood is the diffuse one, and the gradient in m0, P0 is 0 on them.
    ``score_rows`` (n,) flags the rows of A whose gradient is wanted (all by default; the others
    are 0 and cost nothing: O(n^3) a step each). Raises ``ValueError`` as ``kalman_filter`` does.
    """
    arrays = filter_arrays(
        observations, offsets, initial_mean, initial_cov, transition_matrices, transition_covs,
        observation_matrices, observation_covs, inputs, input_matrices, feedthrough_matrices, diffuse,
    )  # fmt: skip
    n = arrays[6].shape[1]
    score = ScorePass(arrays, np.ones(n, dtype=np.bool_) if score_rows is None else _mask(score_rows, n))
    _, gradient = score()
    return score.log_likelihoods, score.per_key(gradient)


class ScorePass:
    """:func:`log_likelihood_and_score` for a caller that changes only the matrices between calls
    (a maximum-likelihood climb), of a time-invariant model: the data's arrays (the tuple of
    :func:`~modeshift._kernels.kalman.filter_arrays`, one matrix in each stack) are prepared once,
    the eight matrices live in one flat vector :attr:`matrices` (the order of :data:`FLAT`: m0, P0,
    A, B, Q, C, D, R, each row-major) that the caller writes in place, and a call returns log p(Y)
    and its gradient as one flat vector in the same order, ``rows`` (n,) flagging the rows of A
    scored. Nothing is allocated or repacked per call but the compiled pass's own work arrays."""

    def __init__(self, arrays: tuple[np.ndarray, ...], rows: np.ndarray):
        stacks = [arrays[_ARGUMENTS.index(key)] for key in FLAT]
        if any(len(stack) != 1 for stack in stacks):
            raise ValueError("ScorePass needs a time-invariant model: one matrix in each stack")
        bounds = np.cumsum([0, *(stack.size for stack in stacks)])
        self.matrices = np.concatenate([stack.ravel() for stack in stacks])
        n_sequences = len(arrays[2]) - 1
        parts = {key: slice(a, b) for key, a, b in zip(FLAT, bounds, bounds[1:])}
        given = dict(zip(FLAT, stacks))
        self.arrays = tuple(
            self.matrices[parts[key]].reshape(given[key].shape) if key in parts else array
            for key, array in zip(_ARGUMENTS, arrays)
        )
        self.gradient = np.zeros(bounds[-1])
        # the compiled pass adds each sequence's terms into its own row: with one sequence, that
        # row is the flat gradient itself; with several, rows of contiguous blocks summed after
        self._per_sequence = tuple(
            self.gradient[parts[key]].reshape(1, *given[key].shape[1:])
            if n_sequences == 1
            else np.zeros((n_sequences, *given[key].shape[1:]))
            for key in _KEYS
        )
        self._zeroed = (self.gradient,) if n_sequences == 1 else self._per_sequence
        self._pass = _score.serial if n_sequences == 1 else _score  # one sequence: no thread team
        self._parts = parts
        self.rows = rows
        self.log_likelihoods = np.empty(n_sequences)
        self.failures = np.empty(n_sequences, dtype=np.int64)

    def __call__(self) -> tuple[float, np.ndarray]:
        """(log p(Y) summed over the sequences, its gradient as a flat vector, overwritten by the
        next call) at :attr:`matrices`; raises ``ValueError`` as
        :func:`~modeshift._kernels.kalman.kalman_filter` does."""
        for rows in self._zeroed:
            rows.fill(0.0)
        self._pass(*self.arrays, self.rows, self.log_likelihoods, self.failures, self._per_sequence)
        filter_failure(self.failures, self.arrays[2])
        if len(self.log_likelihoods) > 1:
            for key, rows in zip(_KEYS, self._per_sequence):
                self.gradient[self._parts[key]] = rows.sum(axis=0).ravel()
        return float(self.log_likelihoods.sum()), self.gradient

    def per_key(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """A flat vector (:attr:`matrices`' order) as one array per matrix."""
        return {
            key: flat[part].reshape(self.arrays[_ARGUMENTS.index(key)].shape[1:]) for key, part in self._parts.items()
        }
