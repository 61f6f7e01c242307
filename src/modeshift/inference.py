"""Exact inference as plain functions of arrays: hidden Markov chains and Kalman filtering.

These are the recursions every modeshift model runs, without a model around them: bring
your own emission log-likelihoods or linear-Gaussian matrices. Each argument is checked
(shapes, probabilities that sum to one, finite values, positive semi-definite covariances)
and a mistake raises a ``ValueError`` naming the argument; the work is done by the same
compiled kernels the models use.

**Hidden Markov chains.** Modes z_t in {0, ..., K-1} start from
p(z_0 = k) = ``initial_probs[k]`` and switch with
p(z_t = j | z_t-1 = i) = ``transition_matrix[i, j]``; step t's evidence is
``log_likelihoods[t, k]`` = log p(y_t | z_t = k), from any emission model (-inf where mode
k cannot emit y_t).

- :func:`forward_filter`: p(z_t | y_0..t), the forward algorithm, and log p(y);
- :func:`forward_backward`: p(z_t | y_0..T-1), the expected number of each switch, and log p(y);
- :func:`viterbi`: the most likely path argmax_z p(z | y) and its log p(y, z);
- :func:`sample_posterior`: a path drawn from p(z | y) (forward filtering, backward sampling);
- :func:`log_likelihood`: log p(y) alone.

A (K, K) ``transition_matrix`` is used at every step; an (n_steps, K, K) stack gives step
t its own matrix ``transition_matrix[t]`` (the entry at a sequence's first step is unused).

>>> import numpy as np
>>> from modeshift import inference
>>> initial_probs = np.array([0.5, 0.5])
>>> transition_matrix = np.array([[0.9, 0.1], [0.2, 0.8]])
>>> log_likelihoods = np.log([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9], [0.2, 0.8]])
>>> smoothed = inference.forward_backward(log_likelihoods, initial_probs, transition_matrix)
>>> smoothed.probabilities.round(3)
array([[0.873, 0.127],
       [0.77 , 0.23 ],
       [0.215, 0.785],
       [0.195, 0.805]])
>>> round(smoothed.log_likelihood, 4)
-3.3105
>>> inference.viterbi(log_likelihoods, initial_probs, transition_matrix).path
array([0, 0, 1, 1])

**Linear-Gaussian state-space models** (Kalman filter models)::

    x_0 ~ N(m0, P0),   x_t = A x_t-1 + B u_t + w_t,   w_t ~ N(0, Q)
                       y_t = C x_t + D u_t + v_t,     v_t ~ N(0, R)

- :func:`kalman_filter`: the moments of p(x_t | y_0..t) and of p(x_t | y_0..t-1), and log p(y);
- :func:`kalman_smoother`: the moments of p(x_t | y_0..T-1) (Rauch-Tung-Striebel) and
  Cov(x_t, x_t-1 | y).

NaN marks a missing entry of ``observations``: it is integrated out. A matrix is used at
every step, or an (n_steps, ...) stack gives each step its own.

A random walk seen through noise (the local-level model), with step 2 missing:

>>> level = inference.kalman_filter(
...     [1.0, 1.2, np.nan, 0.9],
...     initial_mean=[0.0], initial_covariance=[[10.0]],
...     dynamics_matrix=[[1.0]], dynamics_covariance=[[0.1]],
...     observation_matrix=[[1.0]], observation_covariance=[[0.5]],
... )
>>> level.means.ravel().round(3)
array([0.952, 1.085, 1.085, 0.996])
>>> level.covariances[2].round(3)  # step 2 is missing: the prediction, its variance grown by Q
array([[0.368]])

Several sequences: stack their rows and give ``lengths`` (as for a model's ``fit``);
per-step results stay stacked and ``log_likelihood`` is the total over the sequences.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

import modeshift._kernels as kernels

__all__ = [
    "Decoded",
    "Filtered",
    "Smoothed",
    "StateFiltered",
    "StateSmoothed",
    "forward_backward",
    "forward_filter",
    "kalman_filter",
    "kalman_smoother",
    "log_likelihood",
    "sample_posterior",
    "viterbi",
]

_SUM_TOLERANCE = 1e-8  # probabilities must sum to one this closely
_SYMMETRY_TOLERANCE = 1e-8  # relative
_PSD_TOLERANCE = 1e-10  # an eigenvalue above -this * the largest |eigenvalue| counts as >= 0


class Filtered(NamedTuple):
    """p(z_t = k | y_0..t) (n_steps, K) and the total log p(y)."""

    probabilities: np.ndarray
    log_likelihood: float


class Smoothed(NamedTuple):
    """p(z_t = k | all of y) (n_steps, K); sum_t p(z_t-1 = i, z_t = j | y) (K, K), the
    expected number of switches i -> j; and the total log p(y)."""

    probabilities: np.ndarray
    expected_transitions: np.ndarray
    log_likelihood: float


class Decoded(NamedTuple):
    """The most likely mode path (n_steps,) and its joint log-probability log p(y, path)."""

    path: np.ndarray
    log_probability: float


class StateFiltered(NamedTuple):
    """Moments of p(x_t | y_0..t) and of the prediction p(x_t | y_0..t-1) ((m0, P0) at a
    sequence's first step), (n_steps, n) and (n_steps, n, n); and the total log p(y)."""

    means: np.ndarray
    covariances: np.ndarray
    predicted_means: np.ndarray
    predicted_covariances: np.ndarray
    log_likelihood: float


class StateSmoothed(NamedTuple):
    """Moments of p(x_t | all of y), (n_steps, n) and (n_steps, n, n); Cov(x_t, x_t-1 | y)
    (n_steps, n, n), zero at a sequence's first step; and the total log p(y)."""

    means: np.ndarray
    covariances: np.ndarray
    cross_covariances: np.ndarray
    log_likelihood: float


# ---------------------------------------------------------------- hidden Markov chains
def forward_filter(
    log_likelihoods: Any, initial_probs: Any, transition_matrix: Any, *, lengths: Sequence[int] | None = None
) -> Filtered:
    """Filtered mode probabilities p(z_t | y_0..t) and log p(y), by the forward algorithm.

    alpha_0 ∝ initial_probs * p(y_0 | z_0); alpha_t ∝ (alpha_t-1 transition_matrix) * p(y_t | z_t),
    each step normalised; log p(y) is the sum of the logs of the normalisers.
    """
    chain = _Chain(log_likelihoods, initial_probs, transition_matrix, lengths)
    filtered, log_lik = kernels.forward_filter(chain.log_likelihoods, chain.offsets, chain.initial, chain.matrices)
    return Filtered(filtered, chain.total(log_lik))


def forward_backward(
    log_likelihoods: Any, initial_probs: Any, transition_matrix: Any, *, lengths: Sequence[int] | None = None
) -> Smoothed:
    """Smoothed mode probabilities p(z_t | y), expected switch counts and log p(y).

    A backward pass beta_t(i) ∝ sum_j transition_matrix[i, j] p(y_t+1 | j) beta_t+1(j)
    after the forward one: p(z_t | y) ∝ alpha_t beta_t.
    """
    chain = _Chain(log_likelihoods, initial_probs, transition_matrix, lengths)
    log_lik, posteriors, pairs = kernels.forward_backward(
        chain.log_likelihoods, chain.offsets, chain.initial, chain.matrices
    )
    return Smoothed(posteriors, pairs, chain.total(log_lik))


def viterbi(
    log_likelihoods: Any, initial_probs: Any, transition_matrix: Any, *, lengths: Sequence[int] | None = None
) -> Decoded:
    """The most likely mode path argmax_z p(z | y) (ties to the lower mode) and log p(y, path).

    Max-product in log space: delta_t(j) = max_i [delta_t-1(i) + log transition_matrix[i, j]]
    + log p(y_t | j), then back along the maximisers.
    """
    chain = _Chain(log_likelihoods, initial_probs, transition_matrix, lengths)
    with np.errstate(divide="ignore"):  # a forbidden start or switch is log 0 = -inf
        log_initial, log_matrices = np.log(chain.initial), np.log(chain.matrices)
    path, log_prob = kernels.viterbi(chain.log_likelihoods, chain.offsets, log_initial, log_matrices)
    return Decoded(path, chain.total(log_prob))


def sample_posterior(
    log_likelihoods: Any,
    initial_probs: Any,
    transition_matrix: Any,
    *,
    lengths: Sequence[int] | None = None,
    random_state: int | np.random.Generator | None = None,
) -> np.ndarray:
    """A mode path (n_steps,) drawn from p(z | y): forward filtering, then backward sampling
    z_T ~ p(z_T | y), z_t ~ p(z_t | y_0..t) transition_matrix[:, z_t+1]."""
    chain = _Chain(log_likelihoods, initial_probs, transition_matrix, lengths)
    uniforms = np.random.default_rng(random_state).random(len(chain.log_likelihoods))
    path, log_lik = kernels.sample_posterior_paths(
        chain.log_likelihoods, chain.offsets, chain.initial, chain.matrices, uniforms
    )
    chain.total(log_lik)  # raises if a sequence is impossible
    return path


def log_likelihood(
    log_likelihoods: Any, initial_probs: Any, transition_matrix: Any, *, lengths: Sequence[int] | None = None
) -> float:
    """log p(y), the total over the sequences (a forward pass keeping O(K) memory)."""
    chain = _Chain(log_likelihoods, initial_probs, transition_matrix, lengths)
    return chain.total(kernels.log_likelihood(chain.log_likelihoods, chain.offsets, chain.initial, chain.matrices))


class _Chain:
    """The checked arguments of a hidden Markov chain, in the kernels' layout."""

    def __init__(self, log_likelihoods: Any, initial_probs: Any, transition_matrix: Any, lengths: Any):
        values = np.array(log_likelihoods, dtype=np.float64)
        if values.ndim != 2 or 0 in values.shape:
            raise ValueError(f"log_likelihoods must be a non-empty (n_steps, K) array, got shape {values.shape}")
        if np.isnan(values).any() or np.isposinf(values).any():
            raise ValueError("log_likelihoods must be finite or -inf (an impossible emission), got NaN or +inf")
        n_steps, n_states = values.shape
        self.log_likelihoods = np.ascontiguousarray(values)
        self.offsets = _offsets(lengths, n_steps)
        self.initial = _probabilities("initial_probs", initial_probs, (n_states,))
        shape = np.shape(transition_matrix)
        if shape not in ((n_states, n_states), (n_steps, n_states, n_states)):
            raise ValueError(
                f"transition_matrix must be ({n_states}, {n_states}) or one per step ({n_steps}, {n_states}, "
                f"{n_states}), got shape {shape}"
            )
        matrices = _probabilities("transition_matrix", transition_matrix, shape)
        self.matrices = np.ascontiguousarray(matrices[None] if matrices.ndim == 2 else matrices)

    def total(self, per_sequence: np.ndarray) -> float:
        """The total of per-sequence log-probabilities; a ValueError if one sequence is impossible."""
        impossible = np.flatnonzero(~np.isfinite(per_sequence))
        if impossible.size:
            raise ValueError(
                f"sequence {impossible[0]} has probability zero under these arguments "
                "(every mode it could be in cannot emit a step, or a switch it needs is forbidden)"
            )
        return float(per_sequence.sum())


# ------------------------------------------------------------------ Kalman filtering
def kalman_filter(
    observations: Any,
    initial_mean: Any,
    initial_covariance: Any,
    dynamics_matrix: Any,
    dynamics_covariance: Any,
    observation_matrix: Any,
    observation_covariance: Any,
    *,
    lengths: Sequence[int] | None = None,
    inputs: Any = None,
    control_matrix: Any = None,
    feedthrough_matrix: Any = None,
    diffuse: Any = None,
) -> StateFiltered:
    """The Kalman filter: moments of p(x_t | y_0..t) and log p(y).

    ``observations`` (n_steps, p), or (n_steps,) for p = 1; ``initial_mean`` m0 (n,),
    ``initial_covariance`` P0 (n, n); the matrices A (n, n), Q (n, n), C (p, n), R (p, p),
    and with ``inputs`` u (n_steps, m) also B = ``control_matrix`` (n, m) and
    D = ``feedthrough_matrix`` (p, m) (zero when left out). Each step predicts
    x_t|t-1 = A x_t-1|t-1 + B u_t, P_t|t-1 = A P A' + Q, then updates with the observed
    entries of y_t (gain K = P C' (C P C' + R)^-1). Raises ``ValueError`` if an innovation
    covariance C P C' + R is not positive definite.

    ``diffuse`` (n,) bools: the flagged state components start diffuse (a flat prior; their
    entries of m0 and rows of P0 are ignored), filtered by Durbin & Koopman's exact initial
    Kalman filter, and ``log_likelihood`` is the diffuse log-likelihood (statsmodels'
    ``use_exact_diffuse``). During a sequence's diffuse steps the covariances returned are the
    proper part P_* of P_* + k P_inf (k -> infinity).

    >>> import numpy as np
    >>> y = np.array([1120.0, 1160.0, 963.0, 1210.0, 1160.0])
    >>> level = kalman_filter(y, [0.0], [[0.0]], [[1.0]], [[1469.1]], [[1.0]], [[15099.0]], diffuse=[True])
    >>> float(level.means[0, 0])  # the first observation pins the level down
    1120.0
    """
    model = _LinearGaussian(
        observations,
        initial_mean,
        initial_covariance,
        dynamics_matrix,
        dynamics_covariance,
        observation_matrix,
        observation_covariance,
        lengths,
        inputs,
        control_matrix,
        feedthrough_matrix,
        diffuse,
    )
    log_lik, means, covariances, predicted_means, predicted_covariances = model.filter()
    return StateFiltered(means, covariances, predicted_means, predicted_covariances, float(log_lik.sum()))


def kalman_smoother(
    observations: Any,
    initial_mean: Any,
    initial_covariance: Any,
    dynamics_matrix: Any,
    dynamics_covariance: Any,
    observation_matrix: Any,
    observation_covariance: Any,
    *,
    lengths: Sequence[int] | None = None,
    inputs: Any = None,
    control_matrix: Any = None,
    feedthrough_matrix: Any = None,
    diffuse: Any = None,
) -> StateSmoothed:
    """The fixed-interval (Rauch-Tung-Striebel) smoother: moments of p(x_t | all of y), after
    :func:`kalman_filter` (same arguments). In Durbin & Koopman's backward form, exact also with
    singular covariances: from r = 0, N = 0 at the end, with each step's innovation v, its
    covariance S, gain K = P C' S^-1 and L = A (I - K C),
    r_t-1 = C' S^-1 v + L' r_t, N_t-1 = C' S^-1 C + L' N_t L, x_t|T = x_t|t + P_t|t A' r_t,
    P_t|T = P_t|t - P_t|t A' N_t A P_t|t; ``diffuse`` as for :func:`kalman_filter` (the exact
    diffuse smoother during the diffuse steps)."""
    model = _LinearGaussian(
        observations,
        initial_mean,
        initial_covariance,
        dynamics_matrix,
        dynamics_covariance,
        observation_matrix,
        observation_covariance,
        lengths,
        inputs,
        control_matrix,
        feedthrough_matrix,
        diffuse,
    )
    log_lik, means, covariances, predicted_means, predicted_covariances = model.filter()
    smoothed_means, smoothed_covariances, cross = kernels.rts_smoother(
        model.y,
        model.offsets,
        means,
        covariances,
        predicted_means,
        predicted_covariances,
        model.A,
        model.C,
        model.R,
        model.u,
        model.D,
        diffuse=model.diffuse,
    )
    return StateSmoothed(smoothed_means, smoothed_covariances, cross, float(log_lik.sum()))


class _LinearGaussian:
    """The checked arguments of a linear-Gaussian state-space model, in the kernels' layout."""

    def __init__(
        self,
        observations: Any,
        initial_mean: Any,
        initial_covariance: Any,
        dynamics_matrix: Any,
        dynamics_covariance: Any,
        observation_matrix: Any,
        observation_covariance: Any,
        lengths: Any,
        inputs: Any,
        control_matrix: Any,
        feedthrough_matrix: Any,
        diffuse: Any = None,
    ):
        y = np.array(observations, dtype=np.float64)
        y = y[:, None] if y.ndim == 1 else y
        if y.ndim != 2 or 0 in y.shape:
            raise ValueError(f"observations must be a non-empty (n_steps, p) array, got shape {np.shape(observations)}")
        if np.isinf(y).any():
            raise ValueError("observations must be finite (or NaN where missing), got inf")
        (n_steps, p), mean = y.shape, np.array(initial_mean, dtype=np.float64)
        if mean.ndim != 1 or not np.isfinite(mean).all():
            raise ValueError(f"initial_mean must be a finite (n,) vector, got shape {mean.shape}")
        n = len(mean)
        self.y, self.offsets, self.m0 = np.ascontiguousarray(y), _offsets(lengths, n_steps), mean
        self.P0 = _covariances("initial_covariance", initial_covariance, n, 1)[0]
        self.A = _matrices("dynamics_matrix", dynamics_matrix, (n, n), n_steps)
        self.Q = _covariances("dynamics_covariance", dynamics_covariance, n, n_steps)
        self.C = _matrices("observation_matrix", observation_matrix, (p, n), n_steps)
        self.R = _covariances("observation_covariance", observation_covariance, p, n_steps)
        self.diffuse = None
        if diffuse is not None:
            mask = np.asarray(diffuse)
            if mask.shape != (n,) or mask.dtype != bool:
                raise ValueError(f"diffuse must be {n} bools (one per state component), got {diffuse!r}")
            self.diffuse = mask if mask.any() else None
        self.u = self.B = self.D = None
        if inputs is None:
            if control_matrix is not None or feedthrough_matrix is not None:
                raise ValueError("control_matrix and feedthrough_matrix act on inputs: pass inputs too")
            return
        u = np.array(inputs, dtype=np.float64)
        u = u[:, None] if u.ndim == 1 else u
        if u.ndim != 2 or len(u) != n_steps or not np.isfinite(u).all():
            raise ValueError(f"inputs must be a finite ({n_steps}, m) array, got shape {np.shape(inputs)}")
        m = u.shape[1]
        self.u = np.ascontiguousarray(u)
        B = np.zeros((n, m)) if control_matrix is None else control_matrix
        D = np.zeros((p, m)) if feedthrough_matrix is None else feedthrough_matrix
        self.B = _matrices("control_matrix", B, (n, m), n_steps)
        self.D = _matrices("feedthrough_matrix", D, (p, m), n_steps)

    def filter(self) -> tuple[np.ndarray, ...]:
        return kernels.kalman_filter(
            self.y,
            self.offsets,
            self.m0,
            self.P0,
            self.A,
            self.Q,
            self.C,
            self.R,
            self.u,
            self.B,
            self.D,
            diffuse=self.diffuse,
        )


# ------------------------------------------------------------------------ checks
def _offsets(lengths: Sequence[int] | None, n_steps: int) -> np.ndarray:
    """Where each sequence starts, and the end: (n_sequences + 1,)."""
    if lengths is None:
        return np.array([0, n_steps], dtype=np.int64)
    sizes = np.asarray(lengths)
    if sizes.ndim != 1 or sizes.size == 0 or not np.issubdtype(sizes.dtype, np.integer) or (sizes < 1).any():
        raise ValueError(f"lengths must be positive integers, got {lengths!r}")
    if sizes.sum() != n_steps:
        raise ValueError(f"lengths sum to {sizes.sum()} but there are {n_steps} steps")
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


def _probabilities(name: str, value: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Non-negative finite values of ``shape`` whose last axis sums to one."""
    array = np.array(value, dtype=np.float64)
    if array.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {array.shape}")
    if not np.isfinite(array).all() or (array < 0).any():
        raise ValueError(f"{name} must hold probabilities (finite, >= 0)")
    sums = array.sum(axis=-1)
    worst = np.unravel_index(np.argmax(np.abs(sums - 1.0)), sums.shape)
    if abs(sums[worst] - 1.0) > _SUM_TOLERANCE:
        row = f"[{', '.join(map(str, worst))}]" if worst else ""
        raise ValueError(f"{name}{row} must sum to 1, sums to {sums[worst]:.6g}")
    return array


def _matrices(name: str, value: Any, shape: tuple[int, int], n_steps: int) -> np.ndarray:
    """A finite matrix of ``shape``, or one per step, as a (1 or n_steps, *shape) stack."""
    array = np.array(value, dtype=np.float64)
    stack = array[None] if array.ndim == 2 else array
    if stack.ndim != 3 or stack.shape[1:] != shape or len(stack) not in (1, n_steps):
        raise ValueError(
            f"{name} must be {shape} or one per step ({n_steps}, {shape[0]}, {shape[1]}), got {array.shape}"
        )
    if not np.isfinite(stack).all():
        raise ValueError(f"{name} must be finite")
    return np.ascontiguousarray(stack)


def _covariances(name: str, value: Any, size: int, n_steps: int) -> np.ndarray:
    """A symmetric positive semi-definite (size, size) matrix, or one per step, as a stack."""
    stack = _matrices(name, value, (size, size), n_steps)
    if not np.allclose(stack, stack.transpose(0, 2, 1), rtol=_SYMMETRY_TOLERANCE, atol=0.0):
        raise ValueError(f"{name} must be symmetric")
    eigenvalues = np.linalg.eigvalsh(stack)
    low = eigenvalues[:, 0] < -_PSD_TOLERANCE * np.maximum(np.abs(eigenvalues).max(axis=1), 1e-300)
    if low.any():
        where = f"[{np.argmax(low)}]" if len(stack) > 1 else ""
        raise ValueError(f"{name}{where} must be positive semi-definite (eigenvalue {eigenvalues[low][0, 0]:.3g})")
    return stack
