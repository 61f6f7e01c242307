"""Laplace inference in a switching state-space model with nonlinear (feature) flows.

The model (see :class:`~modeshift.models.nonlinear_slds.NonlinearSwitchingLDS`): a mode z_t, a
Markov chain, selects the flow of a continuous state, driven by inputs u_t (none: m_u = 0), and
the state is seen linearly,

    x_t = W_z phi(x_t-1) + B_z u_t + b_z + N(0, Q_z),     y_t = C x_t + D u_t + d + N(0, R),

with phi a fixed :mod:`feature map <modeshift.features>`. The inputs enter linearly, so they
change nothing below but the offsets: inference reads them from ``seqs.inputs``. q(x) q(z) approximates p(x, z | y) as
in the SwitchingLDS (:mod:`modeshift.models.slds_inference`), but E_q(z) log p(x, y | z) is no
longer quadratic in x, so q(x) is its **Laplace approximation** (Zoltowski et al., 2020):

* the mode x* of f(x) = E_q(z) log p(x, y | z) by Gauss-Newton: linearise every flow at the
  current path, g_k(x_t-1, u_t) ~ A_tk x_t-1 + B_k u_t + c_tk with A_tk = W_k dphi/dx (the Jacobian of phi by
  central differences, so user maps need no derivative), whose maximiser is the structured
  mean-field q(x) of a switching LDS with per-step dynamics (:func:`linearised`, a
  block-tridiagonal solve); a backtracking line search on f keeps every step uphill
  (:func:`find_mode`);
* q(x) = N(x*, J^-1) with J the Gauss-Newton Hessian of -f at x* (the second derivatives of
  phi dropped: J is positive definite by construction and exact when phi is linear);
* q(z) by forward-backward on L_tk = E_q(x) log N(x_t | g_k(x_t-1, u_t), Q_k) with each flow
  linearised at x*, the SwitchingLDS's closed form (:func:`sweep`).

Recurrent switching (a ``chain`` that is :class:`~modeshift.transitions.InputDriven`): the switch
probabilities are softmax_j(w_j . phi(x_t-1) + v_j . u_t + r_ij), guards on the same features as
the flows (so curved in x). As in the recurrent SwitchingLDS, q(z) reads them at the mode of q(x)
(plug-in matrices, one per step), and f gains the transition term E_q(z) log p(z_t | z_t-1, x_t-1)
by its second-order expansion at the previous sweep's mode (:func:`guard_curvature`, through the
Jacobian of phi), which keeps the Gauss-Newton system block-tridiagonal.

Resets (``FlowParameters.resets``): a switch i -> j moves the state by an affine reset
x_t = R_r x_t-1 + B_r u_t + r_r + N(0, Q_r) instead of mode j's flow. A reset is affine in x, so it
needs no linearisation: the linearised model of a step has the K linearised flows and the R resets,
which is the SwitchingLDS's with resets (each law weighted by
:func:`~modeshift.models.slds_inference.law_weights`, q(z) on the pair-evidence chain), and f weighs
each flow by the stays in its mode and each reset by the switches into it.

The objective reported is the ELBO of q(x) q(z) with the flows linearised at the mode: exact
(a lower bound on log p(y)) when phi is linear, where all of this is the SwitchingLDS's
inference; an approximation otherwise.

>>> import numpy as np
>>> from modeshift.features import Polynomial
>>> phi = Polynomial(degree=3).fit(np.linspace(-2, 2, 50)[:, None])
>>> value, jacobian = feature_jacobian(phi, np.array([[0.5]]))
>>> value.shape, jacobian.shape  # (rows, features), (rows, features, state)
((1, 3), (1, 3, 1))
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import numpy as np

from modeshift._kernels.gaussian import LOG_2PI
from modeshift._kernels.recursions import transposed
from modeshift.data import Sequences
from modeshift.dynamics import LinearDynamics, missingness_patterns
from modeshift.emissions.reset import Resets
from modeshift.features import FeatureMap
from modeshift.models import slds_inference
from modeshift.models.slds_inference import StepLaws, StepTerms, SwitchingParameters
from modeshift.transitions import InputDriven, Stationary

__all__ = [
    "FlowParameters",
    "PathFeatures",
    "Posterior",
    "feature_jacobian",
    "find_mode",
    "flow_regressors",
    "flow_statistics",
    "guard_curvature",
    "infer",
    "linearised",
    "log_joint",
    "previous_states",
    "sweep",
]

_NEWTON_STEPS = 30  # Gauss-Newton iterations per mode search (a warm start needs a few)
_HALVINGS = 30  # line-search step halvings before a search gives up
_RELATIVE_STEP = 1e-5  # central-difference step, per standardised unit of each state dimension
_ROUND_OFF = 1e-12  # a mode search's gain below this share of |f| is round-off
MODE_SHARE = 0.1  # a sweep's mode search stops at a gain of this share of the ELBO's tolerance
BLOCK_ROWS = 2048  # rows of dphi/dx evaluated at a time: no (T, m, n) Jacobian is ever whole
BLOCK_BYTES = 2**26  # fewer rows at a time where a row's arrays are larger (the M-step's (q, q) moments)


@dataclass(frozen=True)
class FlowParameters:
    """The parameters as inference reads them: ``weights`` (K, n, m + m_u + 1) the [W_k, B_k, b_k]
    of each mode's flow on [phi(x_t-1), u_t, 1]; ``covariances`` (K, n, n) the Q_k; ``features``
    the fitted map phi (m outputs); ``observation`` one regression of y on [x, u, 1] ([C, D, d]
    and R); m0, P0; the mode ``chain``: a Markov chain, or recurrent switches whose
    logits read [phi(x_t-1), u_t] (m + m_u features); ``resets``, if any, the regressions of
    x_t on [x_t-1, u_t, 1] at a switch (affine in x, as the SwitchingLDS's)."""

    weights: np.ndarray
    covariances: np.ndarray
    features: FeatureMap
    observation: LinearDynamics
    initial_mean: np.ndarray
    initial_covariance: np.ndarray
    chain: Stationary | InputDriven
    resets: Resets | None = None

    @property
    def recurrent(self) -> bool:
        return self.chain.varying

    def flows(self) -> LinearDynamics:
        """The K flows as regressions of x_t on [phi(x_t-1), u_t, 1]."""
        block = LinearDynamics(len(self.weights))
        block.weights, block.covariances = self.weights, self.covariances
        return block

    def split(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The flows' W (K, n, m), B (K, n, m_u) and b (K, n)."""
        m = self.features.n_outputs
        return self.weights[:, :, :m], self.weights[:, :, m:-1], self.weights[:, :, -1]

    def switching(
        self, chain: Stationary | InputDriven | None = None, steps: StepLaws | None = None
    ) -> SwitchingParameters:
        """The SwitchingLDS's parameters with this observation model, initial law, ``chain``
        (default this one) and resets, the flows' laws given per step by ``steps`` (the shared
        dynamics a placeholder): what :mod:`~modeshift.models.slds_inference` reads."""
        chain = self.chain if chain is None else chain
        placeholder = LinearDynamics(len(self.weights))
        return SwitchingParameters(
            placeholder, self.observation, self.initial_mean, self.initial_covariance, chain, steps, self.resets
        )

    def law_weights(self, mode_probs: np.ndarray, pairs: np.ndarray | None = None) -> np.ndarray:
        """The weight of each law of a step under q(z), (T, K + R): the flows', then the resets'
        (:func:`~modeshift.models.slds_inference.law_weights`; q(z_t) itself without resets)."""
        return slds_inference.law_weights(self.switching(), mode_probs, pairs)


def flow_regressors(features: FeatureMap, previous: np.ndarray, inputs: np.ndarray) -> np.ndarray:
    """The flows' regressors [phi(x_t-1), u_t, 1] (R, m + m_u + 1) from x_t-1 and u_t (R rows each)."""
    return np.hstack([features.transform(previous), inputs, np.ones((len(previous), 1))])


def feature_jacobian(
    features: FeatureMap, states: np.ndarray, value: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """phi(x) (N, m) and its Jacobian dphi/dx (N, m, n), by central differences of step
    1e-5 times each dimension's scale (about 1e-10 relative error; exact for linear maps up to
    round-off). The map runs once, on the 2 n + 1 shifted copies of the states stacked (the 2 n
    shifted ones when phi(x) is given as ``value``)."""
    states = np.asarray(states, dtype=float)
    N, n = states.shape
    steps = _RELATIVE_STEP * np.asarray(features.scale_, dtype=float)
    shifts = np.concatenate([np.diag(steps), -np.diag(steps)])  # (2 n, n)
    if value is None:
        shifts = np.concatenate([np.zeros((1, n)), shifts])
    values = features.transform((states[None] + shifts[:, None]).reshape(-1, n)).reshape(len(shifts), N, -1)
    if value is None:
        value, values = values[0], values[1:]
    jacobian = (values[:n] - values[n:]) / (2 * steps[:, None, None])  # (n, N, m)
    return value, np.ascontiguousarray(jacobian.transpose(1, 2, 0))


def _row_blocks(n_rows: int, row_bytes: int = 0) -> Iterator[slice]:
    """Consecutive slices covering ``n_rows``, of :func:`_block_rows` rows each (the last shorter)."""
    size = _block_rows(row_bytes)
    return (slice(start, start + size) for start in range(0, n_rows, size))


def _block_rows(row_bytes: int = 0) -> int:
    """``BLOCK_ROWS``, fewer when rows of ``row_bytes`` each would pass ``BLOCK_BYTES`` (one at least)."""
    return min(BLOCK_ROWS, max(1, BLOCK_BYTES // max(row_bytes, 1)))


def previous_states(seqs: Sequences, states: np.ndarray) -> np.ndarray:
    """x_t-1 per row (a sequence's first row holds its own state: its dynamics are unused)."""
    previous = np.empty_like(states)
    previous[1:], previous[0] = states[:-1], states[0]
    previous[seqs.starts] = states[seqs.starts]
    return previous


class PathFeatures:
    """The features along a path x (T, n) under ``params``: ``value`` phi(x_t-1) (T, m) at every step
    (x_t-1 from :func:`previous_states`; given as ``value`` when known, a :class:`Posterior`'s at its
    mode), and when first read the ``slopes`` of what reads phi there (the line search's rejected
    points need none): the flows' A_tk = W_k dphi/dx (T, K, n, n) and, with recurrent switches,
    the guards' w_j dphi/dx (T, K, n) (None without). The Jacobian dphi/dx (T, m, n) is never
    whole: it is evaluated ``BLOCK_ROWS`` rows at a time and multiplied out, row by row as a whole
    one would be. Every reader at one path (the objective, the linearisation, the guards'
    expansion) shares this one evaluation."""

    def __init__(self, params: FlowParameters, seqs: Sequences, path: np.ndarray, value: np.ndarray | None = None):
        self.features, self.flows = params.features, params.split()[0]
        self.guards = params.chain.weights[:, : self.flows.shape[2]] if params.recurrent else None
        self.path = np.asarray(path, dtype=float)
        self.previous = previous_states(seqs, self.path)
        self.value = self.features.transform(self.previous) if value is None else value

    @functools.cached_property
    def slopes(self) -> tuple[np.ndarray, np.ndarray | None]:
        (T, n), K = self.previous.shape, len(self.flows)
        flows, guards = np.empty((T, K, n, n)), None if self.guards is None else np.empty((T, K, n))
        for rows in _row_blocks(T):
            jacobian = feature_jacobian(self.features, self.previous[rows], self.value[rows])[1]
            flows[rows] = np.matmul(self.flows[None], jacobian[:, None])
            if guards is not None:
                guards[rows] = np.matmul(self.guards[None], jacobian)
        return flows, guards


@dataclass
class Posterior(slds_inference.Posterior):
    """q(x) q(z) as the SwitchingLDS's (:class:`~modeshift.models.slds_inference.Posterior`), with
    the features phi(x*_t-1) (T, m) along the mode x* of q(x) that its sweep evaluated,
    ``feature_values``: the M-step's moments (:func:`flow_statistics`), the guards' inputs and the
    next sweep, which starts at x*, read them. Their Jacobian there (T, m, n, the largest array of
    all with many features) is not kept: whoever reads it evaluates it again, a block of rows at a
    time (:class:`PathFeatures`)."""

    feature_values: np.ndarray


def _law_noise(params: FlowParameters) -> tuple[np.ndarray, np.ndarray]:
    """Q_l^-1 and log det Q_l of every law of a step (the K flows, then the R resets): the same at
    every point of linearisation (computed once per mode search)."""
    covariances = params.covariances
    if params.resets is not None:
        covariances = slds_inference.law_stack(covariances, params.resets.reset_covariances)
    return np.linalg.inv(covariances), np.linalg.slogdet(covariances)[1]


def _linear_laws(params: FlowParameters, at: PathFeatures, noise: tuple[np.ndarray, np.ndarray]) -> StepTerms:
    """The step terms of :func:`linearised` at the path ``at``, with the laws' ``noise``
    (:func:`_law_noise`): what the Gauss-Newton point reads."""
    before, T, K = at.previous, len(at.previous), len(params.weights)
    n = before.shape[1]
    W, B, b = params.split()
    A = at.slopes[0]  # (T, K, n, n)
    B = np.broadcast_to(B, (T, *B.shape))
    offsets = (at.value @ W.reshape(K * n, -1).T).reshape(T, K, n) + b - np.matmul(A, before[:, None, :, None])[..., 0]
    if params.resets is not None:  # the R resets after the K flows, the same at every step
        coefs, intercepts = params.resets.reset_coefs, params.resets.reset_intercepts
        stack = slds_inference.law_stack
        A, B, offsets = stack(A, coefs[:, :, :n]), stack(B, coefs[:, :, n:]), stack(offsets, intercepts)
    Q_inv, log_det = noise
    Q_inv_A = np.matmul(Q_inv[None], A)
    return StepTerms(
        A=A,
        B=B,
        b=offsets,
        Q_inv=np.broadcast_to(Q_inv, (T, *Q_inv.shape)),
        Q_inv_A=Q_inv_A,
        At_Q_inv_A=np.matmul(transposed(A), Q_inv_A),
        log_det=np.broadcast_to(log_det, (T, len(log_det))),
    )


def _linear_model(params: FlowParameters, seqs: Sequences, at: PathFeatures, laws: StepTerms) -> SwitchingParameters:
    """The switching LDS of :func:`linearised` with the step terms ``laws`` at the path ``at``:
    the flows' laws per step, and recurrent switches as plug-in matrices at ``at``."""
    T, K, n = len(at.previous), len(params.weights), at.previous.shape[1]
    chain = params.chain
    if params.recurrent:  # the switches at each step's point of linearisation, as plug-in matrices
        transitions = chain.kernel_arrays(np.hstack([at.value, seqs.inputs]))[1]
        chain = Stationary(K)
        chain.initial_probs = params.chain.initial_probs
    else:
        transitions = np.broadcast_to(chain.transition_matrix, (T, K, K))
    steps = StepLaws(
        group=np.arange(T),
        weights=np.concatenate([laws.A[:, :K], laws.B[:, :K], laws.b[:, :K, :, None]], axis=3),
        covariances=np.broadcast_to(params.covariances, (T, K, n, n)),
        transitions=transitions,
    )
    return params.switching(chain, steps)


def linearised(
    params: FlowParameters, seqs: Sequences, states: np.ndarray | PathFeatures
) -> tuple[SwitchingParameters, StepTerms]:
    """The switching LDS whose step-t dynamics are each flow linearised at ``states[t - 1]`` (a
    path, or its :class:`PathFeatures`):
    A_tk = W_k J_t, B_k, c_tk = W_k phi(s) + b_k - A_tk s for s = states[t - 1] (one
    :class:`~modeshift.models.slds_inference.StepLaws` law per step), with the resets as they are
    (affine in x already), and its step terms (the K flows, then the R resets), built from the
    noise precisions of the laws (the per-step laws share them: no inverse per step)."""
    at = states if isinstance(states, PathFeatures) else PathFeatures(params, seqs, states)
    laws = _linear_laws(params, at, _law_noise(params))
    return _linear_model(params, seqs, at, laws), laws


def guard_curvature(
    params: FlowParameters, seqs: Sequences, previous: slds_inference.Posterior, at: PathFeatures | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The transition term of recurrent switches, sum_ij xi_t(i, j) log p(z_t = j | z_t-1 = i, x_t-1),
    to second order in x_t-1 at the ``previous`` mode m: the recurrent SwitchingLDS's expansion
    (:func:`~modeshift.models.slds_inference.switch_curvature`) with the guards' slopes in x
    W dphi/dx at m (Gauss-Newton: phi's second derivatives dropped); ``at``, the features along
    m, if already evaluated. Returns the rows t, H_t and g_t + H_t m_t-1."""
    rows = seqs.linked_rows
    at = PathFeatures(params, seqs, previous.means) if at is None else at
    switch = params.chain.kernel_arrays(np.hstack([at.value[rows], seqs.inputs[rows]]))[1]
    slopes = at.slopes[1][rows]  # (R, K, n)
    return rows, *slds_inference.switch_curvature(previous.pair_counts[rows], switch, slopes, previous.means[rows - 1])


def _expansion_value(curvature: tuple[np.ndarray, np.ndarray, np.ndarray] | None, states: np.ndarray) -> float:
    """The value at ``states`` of :func:`guard_curvature`'s expansion, up to a constant (0 without one)."""
    if curvature is None:
        return 0.0
    rows, spread, linear = curvature
    x = states[rows - 1]
    return float(np.sum(linear * x) - 0.5 * np.einsum("ti,tij,tj->", x, spread, x))


def log_joint(params: FlowParameters, seqs: Sequences, weights: np.ndarray, states: np.ndarray) -> float:
    """f(x) = E_q(z) log p(x, y | z) at the path ``states``: log p(x_0) + sum_t,k w_tk
    log N(x_t | W_k phi(x_t-1) + B_k u_t + b_k, Q_k) + sum_t,r w_tr log N(x_t | R_r x_t-1 + B_r u_t
    + r_r, Q_r) + sum_t log p(y_t | x_t, u_t) (observed entries), ``weights`` the laws' (T, K + R)
    (:meth:`FlowParameters.law_weights`: q(z_t = k) without resets)."""
    return _log_joint(params, seqs, weights)(PathFeatures(params, seqs, states))


def _log_joint(params: FlowParameters, seqs: Sequences, weights: np.ndarray) -> Callable[[PathFeatures], float]:
    """:func:`log_joint` as a function of the path's features, what does not depend on the path
    computed once (the mode search evaluates it at every trial point)."""
    rows, starts, K = seqs.linked_rows, seqs.starts, len(params.weights)
    flows, ones = params.flows(), np.ones((len(rows), 1))
    if params.resets is not None:
        resets = LinearDynamics(params.resets.n_resets)
        resets.weights, resets.covariances = params.resets.weights, params.resets.reset_covariances
    P0_inv = np.linalg.inv(params.initial_covariance)
    n0 = len(params.initial_mean)
    initial = 0.5 * len(starts) * (n0 * LOG_2PI + np.linalg.slogdet(params.initial_covariance)[1])
    full, observed = params.observation, []  # per pattern of missing values: rows, observed entries, regression
    for rows_o, seen in missingness_patterns(seqs.values):
        if seen.any():
            o = np.flatnonzero(seen)
            block = LinearDynamics(1)
            block.weights, block.covariances = full.weights[:, o], full.covariances[:, o][:, :, o]
            observed.append((slice(None) if rows_o is None else rows_o, o, block))

    def value(at: PathFeatures) -> float:
        states = at.path
        regressors = np.hstack([at.value[rows], seqs.inputs[rows], ones])
        total = float(np.sum(weights[rows, :K] * flows.log_likelihoods(states[rows], regressors)))
        if params.resets is not None:
            design = slds_inference.regressors(states[rows - 1], seqs.inputs[rows])
            total += float(np.sum(weights[rows, K:] * resets.log_likelihoods(states[rows], design)))
        centred = states[starts] - params.initial_mean
        total -= 0.5 * float(np.einsum("si,ij,sj->", centred, P0_inv, centred))
        total -= initial
        for rows_o, o, block in observed:
            design = slds_inference.regressors(states[rows_o], seqs.inputs[rows_o])
            total += float(block.log_likelihoods(seqs.values[rows_o][:, o], design).sum())
        return total

    return value


def find_mode(
    params: FlowParameters,
    seqs: Sequences,
    mode_probs: np.ndarray,
    start: np.ndarray | PathFeatures,
    tol: float = 0.0,
    curvature: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    pairs: np.ndarray | None = None,
    scales: np.ndarray | None = None,
) -> tuple[PathFeatures, np.ndarray, np.ndarray, np.ndarray, SwitchingParameters, StepTerms]:
    """The mode x* of :func:`log_joint` given q(z) (``mode_probs``, and with resets its pair
    posteriors ``pairs`` (T, K, K), taken as independent steps if None), by Gauss-Newton from
    ``start`` (a path, or its :class:`PathFeatures`) with a backtracking line search, and the
    Laplace q(x) there.

    Each iteration solves the linearised model exactly (its q(x) mean is the Gauss-Newton
    point) and moves towards it by the largest step 2^-i that does not lower f; it stops when a
    step raises f by less than ``tol`` or by less than round-off (1e-12 (1 + |f|)), or after 30
    iterations. Gauss-Newton converges linearly where the flows leave residuals: the last
    digits of f take most of the iterations, so EM passes a ``tol`` below its own (a few
    iterations per sweep from the last sweep's mode), and the default 0 runs to round-off.
    With recurrent switches, ``curvature`` (:func:`guard_curvature`) adds the transition term's
    expansion to f. Robust resets weigh each switch by E[s] of q(s) too (``scales`` (T, R),
    :func:`~modeshift.models.slds_inference.scaled_weights`: the terms of f that depend on x).
    Each point's features are evaluated once (:class:`PathFeatures`), and the
    plug-in switches only at x*, the one point whose q(z) reads them. Returns (the features along
    x*, whose ``path`` is the means, covs, cross_covs, log det J of each sequence, the model
    linearised at x* and its step terms)."""
    weights = slds_inference.scaled_weights(params.law_weights(mode_probs, pairs), scales)
    log_joint_at, noise = _log_joint(params, seqs, weights), _law_noise(params)
    base = params.switching()  # q(x) reads its observation model and initial law, and the dynamics from the laws

    def objective(at: PathFeatures) -> float:
        return log_joint_at(at) + _expansion_value(curvature, at.path)

    at = start if isinstance(start, PathFeatures) else PathFeatures(params, seqs, start)
    value, laws = objective(at), _linear_laws(params, at, noise)
    for _ in range(_NEWTON_STEPS):
        step = slds_inference.update_states(base, seqs, weights, laws=laws, curvature=curvature)[0] - at.path
        scale = 1.0
        for _ in range(_HALVINGS):
            trial = PathFeatures(params, seqs, at.path + scale * step)
            trial_value = objective(trial)
            if trial_value >= value:
                break
            scale /= 2
        else:  # no step uphill: already at the mode up to round-off
            break
        gain, at, value = trial_value - value, trial, trial_value
        laws = _linear_laws(params, at, noise)
        if gain <= max(tol, _ROUND_OFF * (1.0 + abs(value))):
            break
    _, covs, cross_covs, log_dets = slds_inference.update_states(base, seqs, weights, laws=laws, curvature=curvature)
    return at, covs, cross_covs, log_dets, _linear_model(params, seqs, at, laws), laws


def sweep(
    params: FlowParameters,
    seqs: Sequences,
    mode_probs: np.ndarray,
    start: np.ndarray,
    tol: float = 0.0,
    previous: slds_inference.Posterior | None = None,
) -> Posterior:
    """One coordinate-ascent sweep: the Laplace q(x) given q(z) (:func:`find_mode` from ``start``,
    to ``tol``; with a ``previous`` posterior, the laws weighted by its pair posteriors (with
    resets) and, with recurrent switches, the transition term expanded at its mode), then q(z)
    given q(x) with the flows linearised at the mode, then the (linearised) ELBO. A sweep from a
    previous Laplace :class:`Posterior`'s mode (EM's) starts from the features it carries. With
    robust resets, q(s) is updated between q(x) and q(z) and the ELBO subtracts its KL, as in
    :func:`modeshift.models.slds_inference.sweep` (the previous sweep's E[s] weighs the switches)."""
    here = previous is not None and np.array_equal(previous.means, start)  # EM's sweeps start at the last mode
    known = previous.feature_values if here and isinstance(previous, Posterior) else None
    at = PathFeatures(params, seqs, start, known)
    curvature = None
    if params.recurrent and previous is not None:  # expanded at the last mode: from there (EM's sweeps), at's
        curvature = guard_curvature(params, seqs, previous, at if here else None)
    pairs = None if previous is None else previous.pair_counts
    scales = slds_inference.carried_scales(params, previous)
    found = find_mode(params, seqs, mode_probs, at, tol, curvature, pairs, scales)
    at, covs, cross_covs, log_dets, linear, laws = found
    means, log_likelihoods = at.path, None
    elbos = slds_inference.state_terms(linear, seqs, means, covs, log_dets)
    if slds_inference.robust(params):
        weights, moments = params.law_weights(mode_probs, pairs), (means, covs, cross_covs)
        scales, log_likelihoods, divergences = slds_inference.update_scales(linear, seqs, weights, moments, laws)
        elbos -= divergences
    log_z, mode_probs, pairs, log_likelihoods, transitions = slds_inference.update_modes(
        linear, seqs, means, covs, cross_covs, laws, False, log_likelihoods
    )
    posterior = Posterior(
        means, covs, cross_covs, mode_probs, pairs, log_likelihoods, transitions, log_z + elbos, at.value
    )
    return posterior if scales is None else replace(posterior, scales=scales)


def infer(
    params: FlowParameters,
    seqs: Sequences,
    start: np.ndarray,
    tol: float,
    max_sweeps: int,
    starts: tuple[np.ndarray, ...] = (),
    beam: bool = False,
) -> Posterior:
    """q(x) q(z) with the parameters fixed: sweeps from the path ``start`` until the ELBO changes
    by less than ``tol`` (at most ``max_sweeps``; each mode search stops at a gain of
    ``MODE_SHARE`` tol), from two starts of q(z) and any mode probabilities (T, K) in ``starts``,
    keeping the larger ELBO (as :func:`modeshift.models.slds_inference.infer` does, for the same
    reason): uniform, and q(z)
    given the Laplace q(x) of the flows with every Q_k replaced by their mean under uniform
    modes (with uniform modes a flow whose Q_k is small pins q(x) to itself everywhere). With
    ``beam`` (switches that do not depend on the state), also from the mode paths of beam searches
    (:func:`~modeshift.models.slds_inference.beam_modes`) in the model linearised along ``start``
    and, after the other starts, along the best q(x)'s mode, as the SwitchingLDS's inference: the
    sweeps alone keep a q(x) that smooths through the one-step switches (a ball's impacts) q(z)
    lacks. Neither point serves alone: on a fitted 2-mode ball (seed 4) the first beam led to an
    ELBO of 2308, the second to 2206-2242; along the q(x) of uniform modes (half following a flow
    no step stays in) a beam led to 1650 against 2319 (seed 0)."""
    n_modes = len(params.weights)
    uniform = np.full((seqs.n_steps, n_modes), 1.0 / n_modes)
    starts = [uniform, *starts]
    if n_modes > 1:
        even = replace(params, covariances=np.broadcast_to(params.covariances.mean(axis=0), params.covariances.shape))
        at, covs, cross_covs, *_ = find_mode(even, seqs, uniform, start, MODE_SHARE * tol)
        linear, laws = linearised(params, seqs, at)
        starts.append(slds_inference.update_modes(linear, seqs, at.path, covs, cross_covs, laws)[1])
    if beam:
        starts.append(slds_inference.beam_modes(linearised(params, seqs, start)[0], seqs)[0])

    def then(part: Sequences, _: np.ndarray, last: Posterior) -> Posterior:
        return sweep(params, part, last.mode_probs, last.means, MODE_SHARE * tol, last)

    def first(path: np.ndarray) -> Callable[[np.ndarray], Posterior]:
        return functools.partial(sweep, params, seqs, start=path, tol=MODE_SHARE * tol)

    best = slds_inference.best_of(seqs, starts, first(start), then, tol, max_sweeps)
    if not beam:
        return best
    modes = slds_inference.beam_modes(linearised(params, seqs, best.means)[0], seqs)[0]
    return slds_inference.best_of(seqs, [modes], first(best.means), then, tol, max_sweeps, best)


def flow_statistics(
    features: FeatureMap, seqs: Sequences, posterior: Posterior, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The M-step's moments of each linked step's x_t and regressors r_t = [phi(x_t-1), u_t, 1]
    under q(x), phi linearised at the mean (first-order, delta-method moments, J = dphi/dx there),

        E[r] ~ [phi(m), u, 1],  E[phi phi'] ~ phi(m) phi(m)' + J S_t-1 J',  E[x_t phi'] ~ m_t phi(m)' + S_t,t-1 J',

    summed over the R rows ``seqs.linked_rows`` with each flow's ``weights`` (R, K): sum_t w_tk
    E[x x'], E[x r'], E[r r'], shapes (K, n, n), (K, n, q), (K, q, q) with q = m + m_u + 1. They
    are the exact moments of the linearised model, so the M-step maximises the ELBO :func:`sweep`
    reports. phi(m) is the posterior's; J is evaluated again, and the moments formed row by row,
    ``BLOCK_ROWS`` rows at a time (fewer when their (q, q) moments would pass ``BLOCK_BYTES``): no
    (R, m, n) or (R, q, q) array."""
    n = posterior.means.shape[1]
    q = posterior.feature_values.shape[1] + seqs.inputs.shape[1] + 1
    moments = functools.partial(_flow_moments, features, seqs, posterior)
    shapes = ((n, n), (n, q), (q, q))
    xx, xr, rr = slds_inference.weighted_sums(moments, seqs.linked_rows, weights, shapes, _block_rows(8 * q * q))
    return xx, xr, rr


def _flow_moments(
    features: FeatureMap, seqs: Sequences, posterior: Posterior, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`flow_statistics`'s moments at each of the linked ``rows``: E[x x'], E[x r'], E[r r'],
    shapes (B, n, n), (B, n, q), (B, q, q)."""
    means, covs = posterior.means, posterior.covs
    value = posterior.feature_values[rows]
    jacobian = feature_jacobian(features, means[rows - 1], value)[1]
    m = value.shape[1]
    r = np.hstack([value, seqs.inputs[rows], np.ones((len(rows), 1))])
    rr = r[:, :, None] * r[:, None, :]
    jacobian_t = transposed(jacobian)
    rr[:, :m, :m] += jacobian @ covs[rows - 1] @ jacobian_t
    xr = means[rows][:, :, None] * r[:, None, :]
    xr[:, :, :m] += posterior.cross_covs[rows] @ jacobian_t
    xx = covs[rows] + means[rows][:, :, None] * means[rows][:, None, :]
    return xx, xr, rr
