"""Structured mean-field inference in a switching linear dynamical system: q(x) q(z) and the ELBO.

The model (see :class:`~modeshift.models.slds.SwitchingLDS`): a mode z_t selects the affine
dynamics x_t = A_z x_t-1 + B_z u_t + b_z + N(0, Q_z) of a continuous state, seen through
y_t = C x_t + D u_t + d + N(0, R); z follows a Markov chain, or, in a recurrent model,
switches with probabilities softmax_j(w_j . x_t-1 + v_j . u_t + r_ij) that depend on the state.

The exact posterior p(x, z | y) is a mixture over K^T mode paths, so it is approximated by
q(x) q(z), and the evidence lower bound ELBO = E_q log p(y, x, z) - E_q log q(x) q(z) <= log p(y)
is maximised by coordinate ascent:

* q(x) given q(z) (:func:`update_states`): E_q(z) log p(x, y | z) is quadratic in x, so the
  optimal q(x) is the Gaussian with block-tridiagonal precision J and linear term h, where
  (w_tk = q(z_t = k))

      J_tt = [t = 0] P0^-1 + C_o' R_oo^-1 C_o + sum_k w_tk Q_k^-1 + sum_k w_t+1,k A_k' Q_k^-1 A_k,
      J_t,t-1 = -sum_k w_tk Q_k^-1 A_k,

  with o the entries of y_t that are observed (all of them unless some are NaN; none for a
  wholly missing step), solved exactly in O(T n^3) by
  :func:`modeshift._kernels.solve_block_tridiagonal`.
* q(z) given q(x) (:func:`update_modes`): an HMM whose log-likelihoods are
  L_tk = E_q(x) log N(x_t | A_k x_t-1 + B_k u_t + b_k, Q_k) (closed form from the second
  moments of q(x); 0 at a sequence's first step), solved by forward-backward.

Each update is the exact maximiser of the ELBO in its factor; q(x) q(z) keeps every temporal
correlation inside each factor, which is why this beats a fully factorised (per-step)
approximation, at a cost linear in T.

Irregular sampling. With observations at irregular times (the
:class:`~modeshift.models.continuous_slds.ContinuousSwitchingLDS`), the dynamics and the
switches of step t depend on the gap before it: ``SwitchingParameters.steps`` then holds the
laws of each distinct gap (:class:`StepLaws`) and every formula above reads step t's A_k, B_k,
b_k, Q_k and transition matrix. Nothing else changes: the same q(x), q(z) and ELBO.

Recurrent models. The switching probability depends on x_t-1, so E_q log p(z | x) has no
closed form. For the q(z) update the transition potentials are evaluated at the posterior
mean E[x_t-1] (a plug-in: time-varying transition matrices). For the q(x) update the
transition term sum_ij q(z_t-1 = i, z_t = j) log p(z_t = j | z_t-1 = i, x_t-1), concave in
x_t-1, enters by its second-order expansion at the previous sweep's E[x_t-1]
(:func:`transition_curvature`): a Newton step that adds its curvature to the precision J
and keeps q(x) Gaussian, as in the Laplace-EM of ``ssm`` (Zoltowski et al., 2020). The
ELBO reported uses the plug-in transitions, so it is not an exact bound and need not
increase monotonically.
Other state-dependent chains (the continuous-time rates of
:class:`~modeshift.models.continuous_slds.StateDependentRates`) enter q(z) by the same plug-in,
and q(x) not at all.

Resets. With ``SwitchingParameters.resets``, a switch i -> j at step t moves the state by a
reset regression x_t = R_r x_t-1 + B_r u_t + r_r + N(0, Q_r) (r the reset of (i, j),
:mod:`modeshift.emissions.reset`) instead of mode j's flow. Step t's dynamics then have K + R
laws, law l weighted by w_tl (:func:`law_weights`): the stays xi_t(k, k) for the flows, the
switches into it for a reset. q(x) is as above, its sums over modes weighted by q(z_t = k)
becoming sums over laws weighted by w_tl (still block-tridiagonal); q(z) is the chain whose
evidence depends on the pair (z_t-1, z_t) (:mod:`modeshift._kernels.pair_hmm`): L_tj when it
stays in j, the reset's L_tr when it switches. Both updates stay exact, the ELBO monotone.

Robust resets (Student-t noise, ``Resets.dof`` = nu) add a third factor: a scale s_tr ~
Gamma(nu/2, nu/2) for every step and reset, the reset's noise being N(0, Q_r / s_tr), with
q(s_tr) = Gamma(nu/2 + w_tr n/2, nu/2 + w_tr delta_tr/2) (:func:`~modeshift.emissions.reset.scale_posterior`;
delta_tr = E_q(x) of the squared Mahalanobis residual). A sweep updates q(x) (the resets'
weights times E[s]), q(s), then q(z) (the resets' evidence
-(n log 2 pi + log det Q_r - n E[log s] + E[s] delta) / 2); the ELBO subtracts KL(q(s) || p(s)).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np

from modeshift import _kernels as kernels
from modeshift._kernels import beam, pair_hmm
from modeshift._kernels.gaussian import LOG_2PI
from modeshift.data import Sequences
from modeshift.dynamics import LinearDynamics, missingness_patterns
from modeshift.emissions.reset import Resets, scale_posterior
from modeshift.transitions import InputDriven, Stationary

__all__ = [
    "Posterior",
    "StepLaws",
    "SwitchingParameters",
    "beam_modes",
    "guard_features",
    "independent_pairs",
    "infer",
    "law_stack",
    "law_weights",
    "pair_chain",
    "regressors",
    "sweep",
    "switch_curvature",
    "transition_curvature",
    "transition_moments",
    "transition_sums",
    "weighted_sums",
    "update_modes",
    "update_states",
]


@dataclass(frozen=True)
class StepLaws:
    """Dynamics and switches that change from step to step (observations at irregular times):
    the laws of G distinct gaps, and which one each step follows.

    ``group`` (T,) indexes the arrays below for every step (any valid index at a sequence's
    start, whose dynamics and switch are unused); ``weights`` (G, K, n, n + m + 1) are
    [A_k, B_k, b_k] over each gap, ``covariances`` (G, K, n, n) the Q_k, ``transitions``
    (G, K, K) the matrices of the switches.
    """

    group: np.ndarray
    weights: np.ndarray
    covariances: np.ndarray
    transitions: np.ndarray


@dataclass(frozen=True)
class SwitchingParameters:
    """The parameters of a switching LDS, as inference reads them.

    ``dynamics``: K regressions of x_t on [x_t-1, u_t, 1], weights [A_k, B_k, b_k] and
    covariances Q_k; ``observation``: one regression of y_t on [x_t, u_t, 1], weights
    [C, D, d] and covariance R; m0, P0; the ``chain`` of modes, whose ``initial_probs``
    are p(z_0) and which reads [x_t-1, u_t] if it is input-driven (recurrent); ``steps``,
    when the dynamics and switches differ by step, their laws (which then replace
    ``dynamics``' weights and covariances and the chain's transition matrix); ``resets``, the
    regressions of x_t on [x_t-1, u_t, 1] at a switch (see "Resets" in the module docstring).
    """

    dynamics: LinearDynamics
    observation: LinearDynamics
    initial_mean: np.ndarray
    initial_covariance: np.ndarray
    chain: Stationary | InputDriven
    steps: StepLaws | None = None
    resets: Resets | None = None

    @property
    def recurrent(self) -> bool:
        return self.chain.varying

    @property
    def varying(self) -> bool:
        """Whether the transition matrices differ by step (recurrent, or irregular sampling)."""
        return self.recurrent or self.steps is not None

    def step_terms(self, n_steps: int) -> StepTerms:
        """Each step's dynamics and the quantities inference derives from them, computed once
        per distinct law: the K flows, then the R resets (if any)."""
        group, weights, covariances = self.laws_by_group(n_steps)
        n = len(self.initial_mean)
        A = weights[..., :n]
        Q_inv = np.linalg.inv(covariances)
        Q_inv_A = Q_inv @ A
        laws = (A, weights[..., n:-1], weights[..., -1], Q_inv, Q_inv_A, np.swapaxes(A, -1, -2) @ Q_inv_A)
        laws += (np.linalg.slogdet(covariances)[1],)
        if self.steps is None:  # one law: a view of it at every step
            return StepTerms(*(np.broadcast_to(law[0], (n_steps, *law.shape[1:])) for law in laws))
        return StepTerms(*(law[group] for law in laws))

    def laws_by_group(self, n_steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every law of the dynamics (the K flows, then the R resets, if any) per distinct step law:
        (group (T,), weights (G, K + R, n, n + m + 1) [A, B, b], covariances (G, K + R, n, n)); step t
        follows ``group[t]`` (G = 1 without ``steps``)."""
        if self.steps is None:
            group = np.zeros(n_steps, dtype=np.int64)
            weights, covariances = self.dynamics.weights[None], self.dynamics.covariances[None]
        else:
            group, weights, covariances = self.steps.group, self.steps.weights, self.steps.covariances
        if self.resets is not None:  # the same resets whatever the step
            weights = law_stack(weights, self.resets.weights)
            covariances = law_stack(covariances, self.resets.reset_covariances)
        return group, weights, covariances

    def of_rows(self, rows: np.ndarray) -> SwitchingParameters:
        """These parameters for the steps ``rows`` (a mask) of the data: the laws of those steps, and
        the gaps of a chain whose switches hold over each step's (continuous-time rates)."""
        if rows.all():
            return self
        steps, chain = self.steps, self.chain
        if steps is not None:
            steps = replace(steps, group=steps.group[rows])
        if getattr(chain, "gaps", None) is not None:
            chain = replace(chain, gaps=chain.gaps[rows])
        return replace(self, steps=steps, chain=chain)

    def with_mean_noise(self) -> SwitchingParameters:
        """These parameters with every mode's Q_k replaced by their mean (over the modes)."""
        if self.steps is not None:
            covariances = self.steps.covariances
            mean = np.broadcast_to(covariances.mean(axis=1, keepdims=True), covariances.shape)
            return replace(self, steps=replace(self.steps, covariances=mean))
        even = copy.copy(self.dynamics)
        even.covariances = np.broadcast_to(self.dynamics.covariances.mean(axis=0), self.dynamics.covariances.shape)
        return replace(self, dynamics=even)

    def dynamics_terms(self, resets: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(A, B, b, Q): (K, n, n), (K, n, m), (K, n), (K, n, n) of the flows; with ``resets``, of
        every law (K + R, ...): the flows, then the resets (if any; Q the covariance of their noise,
        for Student-t noise its scale times nu / (nu - 2): :meth:`law_dofs`)."""
        weights, covariances, n = self.dynamics.weights, self.dynamics.covariances, len(self.initial_mean)
        if resets and self.resets is not None:
            weights = law_stack(weights, self.resets.weights)
            covariances = law_stack(covariances, self.resets.noise_covariances())
        return weights[:, :, :n], weights[:, :, n:-1], weights[:, :, -1], covariances

    def law_dofs(self) -> np.ndarray:
        """The degrees of freedom of every law's noise (K + R,): inf for the Gaussian ones (the flows,
        and resets without Student-t noise)."""
        n_modes = len(self.chain.initial_probs)
        resets = self.resets
        n_resets = 0 if resets is None else resets.n_resets
        dof = np.inf if resets is None or resets.dof is None else resets.dof
        return np.r_[np.full(n_modes, np.inf), np.full(n_resets, dof)]

    def law_of_pairs(self) -> np.ndarray:
        """(K, K) integers: the law x_t follows when z_t-1 = i and z_t = j, an index into the laws
        of ``dynamics_terms(resets=True)``: mode j's flow j, or, at a switch with resets, the
        switch's reset K + r."""
        n_modes = len(self.chain.initial_probs)
        laws = np.tile(np.arange(n_modes), (n_modes, 1))
        if self.resets is not None:
            switches = ~np.eye(n_modes, dtype=bool)
            laws[switches] = n_modes + self.resets.index[switches]
        return laws

    def observation_terms(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(C, D, d, R): (p, n), (p, m), (p,), (p, p)."""
        (weights,), n = self.observation.weights, len(self.initial_mean)
        return weights[:, :n], weights[:, n:-1], weights[:, -1], self.observation.covariances[0]


@dataclass(frozen=True)
class StepTerms:
    """Step t's dynamics A_k, B_k, b_k, with Q_k^-1, Q_k^-1 A_k, A_k' Q_k^-1 A_k and log det Q_k:
    arrays (T, L, ...) over the L laws, the K flows then the R resets."""

    A: np.ndarray
    B: np.ndarray
    b: np.ndarray
    Q_inv: np.ndarray
    Q_inv_A: np.ndarray
    At_Q_inv_A: np.ndarray
    log_det: np.ndarray


@dataclass
class Posterior:
    """The variational factors q(x) (Gaussian, by its marginal moments) and q(z) (a chain),
    the HMM potentials q(z) was computed from, and the ELBO of each sequence (``elbo``: their sum)."""

    means: np.ndarray  # (T, n)
    covs: np.ndarray  # (T, n, n)
    cross_covs: np.ndarray  # (T, n, n): Cov(x_t, x_t-1), zero at sequence starts
    mode_probs: np.ndarray  # (T, K)
    pair_counts: np.ndarray  # (K, K), or (T, K, K) per step when the transitions vary, x resets, or from infer
    log_likelihoods: np.ndarray  # (T, K + R): E_q(x) log p(x_t | x_t-1) under each flow, then each reset
    transitions: np.ndarray  # (1 or T, K, K)
    elbos: np.ndarray  # (n_sequences,)
    #: (T, R): E[s] of q(s) for Student-t resets (robust resets), else empty
    scales: np.ndarray = dataclasses.field(default_factory=lambda: np.ones((0, 0)), kw_only=True)

    @property
    def elbo(self) -> float:
        return float(self.elbos.sum())


PosteriorT = TypeVar("PosteriorT", bound=Posterior)


# ------------------------------------------------------------------------ q(x)
def update_states(
    params: SwitchingParameters,
    seqs: Sequences,
    weights: np.ndarray,
    previous: Posterior | None = None,
    laws: StepTerms | None = None,
    curvature: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """q(x) given q(z): means, covariances, cross-covariances and log det J (of each sequence's
    block) of the Gaussian with block-tridiagonal precision J.

    ``weights``: the weight of every law at every step (T, K + R), :func:`law_weights` of q(z)
    (q(z_t) itself without resets). For a recurrent model
    (softmax guards) with a ``previous`` posterior, the transition term
    E_q(z) log p(z_t | z_t-1, x_t-1) enters too, by its second-order expansion at the
    previous E[x_t-1] (see :func:`transition_curvature`). ``laws``: ``params.step_terms``, if
    already computed. ``curvature``: that expansion (rows, H_t, g_t + H_t m_t) computed by the
    caller (guards on features of x: :mod:`~modeshift.models.laplace_inference`)."""
    C, D, d, R = params.observation_terms()
    starts, U, Y = seqs.starts, seqs.inputs, seqs.values
    laws = params.step_terms(seqs.n_steps) if laws is None else laws
    weights = np.array(weights, dtype=float)
    weights[starts] = 0.0  # the dynamics of step t link it to step t - 1 of the same sequence
    P0_inv = np.linalg.inv(params.initial_covariance)

    diagonal = np.einsum("tk,tkij->tij", weights, laws.Q_inv)
    diagonal[:-1] += np.einsum("tk,tkij->tij", weights[1:], laws.At_Q_inv_A[1:])  # step t + 1's dynamics
    diagonal[starts] += P0_inv
    lower = -np.einsum("tk,tkij->tij", weights, laws.Q_inv_A)
    shift = np.einsum("tm,tknm->tkn", U, laws.B) + laws.b  # B_k u_t + b_k
    rhs = np.zeros((len(Y), len(params.initial_mean)))
    for rows, o in _observed_parts(Y):  # the evidence of each step's observed entries
        R_inv_C = np.linalg.solve(R[np.ix_(o, o)], C[o])
        diagonal[rows] += C[o].T @ R_inv_C
        rhs[rows] += (Y[rows][:, o] - U[rows] @ D[o].T - d[o]) @ R_inv_C
    rhs += np.einsum("tk,tkij,tkj->ti", weights, laws.Q_inv, shift)
    rhs[:-1] -= np.einsum("tk,tkji,tkj->ti", weights[1:], laws.Q_inv_A[1:], shift[1:])  # A_k' Q_k^-1 shift at t + 1
    rhs[starts] += P0_inv @ params.initial_mean
    if curvature is None and isinstance(params.chain, InputDriven) and previous is not None:
        curvature = transition_curvature(params, seqs, previous)
    if curvature is not None:
        rows, spread, linear = curvature
        diagonal[rows - 1] += spread
        rhs[rows - 1] += linear
    means, log_dets, covs, cross_covs = kernels.solve_block_tridiagonal(diagonal, lower, seqs.offsets, rhs)
    return means, covs, cross_covs, log_dets


def transition_curvature(
    params: SwitchingParameters, seqs: Sequences, previous: Posterior
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The transition term of a recurrent model, expanded to second order for q(x).

    f_t(x) = sum_ij q(z_t-1 = i, z_t = j) log p(z_t = j | z_t-1 = i, x_t-1 = x) is concave;
    at m = E[x_t-1] of ``previous`` it is f(m) + g'(x - m) - (x - m)' H (x - m) / 2, with

        g = W' (sum_i xi_i. - sum_i q_i pi_i.),   H = W' (diag(sum_i q_i pi_i.) - sum_i q_i pi_i. pi_i.') W,

    W the recurrence weights, pi_i. the switch probabilities at m, q_i = sum_j xi_ij. Adding
    H to the precision of x_t-1 and g + H m to its linear term is a Newton step on the
    transition term (Laplace-EM's, Zoltowski et al. 2020, within the structured mean field).
    Returns the rows t, H_t and g_t + H_t m_t-1."""
    rows = seqs.linked_rows
    switch = transition_matrices(params, seqs, previous.means)[rows]  # pi at the current guards
    W = params.chain.weights[:, : len(params.initial_mean)]
    W = np.broadcast_to(W, (len(rows), *W.shape))
    return rows, *switch_curvature(previous.pair_counts[rows], switch, W, previous.means[rows - 1])


def switch_curvature(
    pairs: np.ndarray, switch: np.ndarray, W: np.ndarray, means: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """H_t and g_t + H_t m_t of :func:`transition_curvature` from the pair posteriors xi_t (R, K, K),
    the switch probabilities pi at m (R, K, K), the slopes W_t (R, K, n) of the guard logits in x at m
    (the recurrence weights, or for guards on features phi(x) the weights times dphi/dx) and m (R, n)."""
    leaving = pairs.sum(axis=2)  # q(z_t-1 = i)
    expected = np.einsum("ti,tij->tj", leaving, switch)  # sum_i q_i pi_ij
    gradient = np.einsum("tj,tjn->tn", pairs.sum(axis=1) - expected, W)
    spread = np.einsum("tj,tjn,tjm->tnm", expected, W, W)
    weighted = np.einsum("tij,tjn->tin", switch, W)  # (pi_i W) per previous mode
    spread -= np.einsum("ti,tin,tim->tnm", leaving, weighted, weighted)
    return spread, gradient + np.einsum("tnm,tm->tn", spread, means)


def law_weights(params: SwitchingParameters, mode_probs: np.ndarray, pairs: np.ndarray | None = None) -> np.ndarray:
    """The weight under q(z) of each law of step t's dynamics, (T, K + R): without resets
    q(z_t = k); with resets the stays xi_t(k, k) = q(z_t-1 = k, z_t = k) for the K flows, then
    for each reset the switches into it, the sum of xi_t(i, j) over its pairs i != j. Without
    per-step ``pairs`` (T, K, K) (a start from mode probabilities alone), xi_t(i, j) is taken as
    q(z_t-1 = i) q(z_t = j)."""
    if params.resets is None:
        return mode_probs
    n_modes = mode_probs.shape[1]
    pairs = independent_pairs(mode_probs) if pairs is None else pairs
    laws = params.law_of_pairs()
    return np.einsum("tij,ijl->tl", pairs, laws[:, :, None] == np.arange(n_modes + params.resets.n_resets))


def independent_pairs(mode_probs: np.ndarray, starts: np.ndarray | None = None) -> np.ndarray:
    """The pair posteriors of q(z) taken as independent steps, q(z_t-1 = i) q(z_t = j) (T, K, K),
    from mode probabilities alone (a start); 0 at step 0 and at the sequences' ``starts``, which
    have no previous step (default: step 0 only, for a caller that never reads the others)."""
    n_steps, n_modes = mode_probs.shape
    pairs = np.zeros((n_steps, n_modes, n_modes))
    pairs[1:] = mode_probs[:-1, :, None] * mode_probs[1:, None, :]
    if starts is not None:
        pairs[starts] = 0.0
    return pairs


# ------------------------------------------------------------------------ q(z)
def expected_log_likelihoods(
    params: SwitchingParameters,
    seqs: Sequences,
    means: np.ndarray,
    covs: np.ndarray,
    cross_covs: np.ndarray,
    laws: StepTerms | None = None,
) -> np.ndarray:
    """L_tl = E_q(x) log N(x_t | A_l x_t-1 + B_l u_t + b_l, Q_l) for every law l (the K flows, then
    the R resets), (T, K + R); 0 at sequence starts:
    -(n log 2 pi + log det Q_l + r' Q_l^-1 r + tr(Q_l^-1 E[e e'] - Q_l^-1 r r')) / 2 with r the
    residual of the means and e = x_t - A_l x_t-1 - B_l u_t - b_l."""
    rows = seqs.linked_rows
    laws = params.step_terms(seqs.n_steps) if laws is None else laws
    A, B, b, Q_inv, Q_inv_A = (law[rows] for law in (laws.A, laws.B, laws.b, laws.Q_inv, laws.Q_inv_A))
    predicted = np.einsum("tkij,tj->tki", A, means[rows - 1]) + np.einsum("tknm,tm->tkn", B, seqs.inputs[rows]) + b
    residual = means[rows][:, None] - predicted
    spread = np.einsum("tki,tkij,tkj->tk", residual, Q_inv, residual)
    spread += np.einsum("tkij,tji->tk", Q_inv, covs[rows])
    spread -= 2.0 * np.einsum("tkij,tij->tk", Q_inv_A, cross_covs[rows])
    spread += np.einsum("tkij,tji->tk", laws.At_Q_inv_A[rows], covs[rows - 1])
    out = np.zeros((seqs.n_steps, A.shape[1]))
    out[rows] = -0.5 * (len(params.initial_mean) * LOG_2PI + laws.log_det[rows] + spread)
    return out


def transition_matrices(params: SwitchingParameters, seqs: Sequences, means: np.ndarray) -> np.ndarray:
    """(1, K, K) transition matrix, or (T, K, K): plug-in matrices at E[x_t-1] (recurrent), or
    those of each step's gap (``params.steps``)."""
    if params.recurrent:
        return params.chain.kernel_arrays(guard_features(seqs, means))[1]
    if params.steps is not None:
        return params.steps.transitions[params.steps.group]
    return params.chain.kernel_arrays()[1]


def update_modes(
    params: SwitchingParameters,
    seqs: Sequences,
    means: np.ndarray,
    covs: np.ndarray,
    cross_covs: np.ndarray,
    laws: StepTerms | None = None,
    per_step: bool = False,
    log_likelihoods: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """q(z) given q(x): forward-backward on the expected dynamics log-likelihoods (with resets,
    on the chain whose evidence depends on the pair (z_t-1, z_t): :func:`pair_chain`), or on
    ``log_likelihoods`` (T, K + R) if given. Returns
    (log normaliser of each sequence, q(z_t), pair posteriors, log-likelihoods, transition
    matrices); the pair posteriors per step (T, K, K) with ``per_step`` or when the chain needs
    them, else summed (K, K)."""
    if log_likelihoods is None:
        log_likelihoods = expected_log_likelihoods(params, seqs, means, covs, cross_covs, laws)
    transitions = transition_matrices(params, seqs, means)
    if params.resets is not None:
        log_z, mode_probs, pairs = pair_chain(params, seqs, log_likelihoods, transitions, pair_hmm.forward_backward)[:3]
    else:
        run = kernels.forward_backward_varying if params.varying or per_step else kernels.forward_backward
        log_z, mode_probs, pairs = run(log_likelihoods, seqs.offsets, params.chain.initial_probs, transitions)
    return log_z, mode_probs, pairs, log_likelihoods, transitions


def pair_chain(
    params: SwitchingParameters,
    seqs: Sequences,
    log_likelihoods: np.ndarray,
    transitions: np.ndarray,
    recursion: Callable[..., tuple],
    initial: np.ndarray | None = None,
) -> tuple:
    """Run a recursion of :mod:`modeshift._kernels.pair_hmm` (``forward_backward``,
    ``forward_filter``, ``viterbi``) on q(z)'s potentials with resets: evidence L_tj (the flow's)
    when z stays in j, the reset's L_tr when it switches i -> j, r = reset of (i, j). The
    transition matrices are given per step, so that the pair posteriors are too. ``initial``:
    what the recursion reads first after the offsets (default p(z_0))."""
    n_modes = len(params.chain.initial_probs)
    values, n_responses, resets = pair_hmm.given_densities(params.resets.index, seqs.n_steps)
    flow, densities = np.ascontiguousarray(log_likelihoods[:, :n_modes]), log_likelihoods[:, n_modes:]
    shape = (seqs.n_steps, n_modes, n_modes)
    matrices = np.ascontiguousarray(np.broadcast_to(transitions, shape))
    initial = params.chain.initial_probs if initial is None else initial
    return recursion(flow, values, n_responses, resets, seqs.offsets, initial, matrices, densities)


# ------------------------------------------------------------------------ ELBO
def state_terms(
    params: SwitchingParameters, seqs: Sequences, means: np.ndarray, covs: np.ndarray, log_dets: np.ndarray
) -> np.ndarray:
    """E_q(x) [log p(x_0) + sum_t log p(y_t | x_t)] + H[q(x)] of each sequence (n_sequences,), from
    the log det J of each (``log_dets``): the steps' terms summed over each sequence's rows."""
    n, starts = len(params.initial_mean), seqs.starts
    C, _, _, R = params.observation_terms()
    full = params.observation
    observed = np.zeros(seqs.n_steps)
    for rows, o in _observed_parts(seqs.values):  # the observation equation of the observed entries
        block = LinearDynamics(1)
        block.weights, block.covariances = full.weights[:, o], full.covariances[:, o][:, :, o]
        y, z = seqs.values[rows][:, o], regressors(means[rows], seqs.inputs[rows])
        observed[rows] += block.log_likelihoods(y, z)[:, 0]
        observed[rows] -= 0.5 * np.einsum("ij,tji->t", C[o].T @ np.linalg.solve(R[np.ix_(o, o)], C[o]), covs[rows])
    m0, P0 = params.initial_mean, params.initial_covariance
    centred = means[starts] - m0
    second = covs[starts] + centred[:, :, None] * centred[:, None, :]
    initial = -0.5 * (n * LOG_2PI + np.linalg.slogdet(P0)[1] + np.einsum("ij,sji->s", np.linalg.inv(P0), second))
    entropy = 0.5 * (seqs.lengths * n * (1.0 + LOG_2PI) - log_dets)
    return np.add.reduceat(observed, starts) + initial + entropy


def sweep(
    params: SwitchingParameters,
    seqs: Sequences,
    mode_probs: np.ndarray,
    previous: Posterior | None = None,
    per_step: bool = False,
) -> Posterior:
    """One coordinate-ascent sweep: q(x) given q(z), then q(z) given q(x), then the ELBO (pair
    posteriors per step with ``per_step``, see :func:`update_modes`).

    After the q(z) update, E_q(z) [sum_t L_t,z_t + log p(z)] + H[q(z)] equals the HMM's
    log normaliser log Z, so each sequence's ELBO = its log Z + its state terms (with robust
    resets, q(s) updated between q(x) and q(z), minus KL(q(s) || p(s)): :func:`update_scales`)."""
    laws = params.step_terms(seqs.n_steps)  # once per sweep: both updates read them
    weights = law_weights(params, mode_probs, None if previous is None else previous.pair_counts)
    scales = carried_scales(params, previous)
    means, covs, cross_covs, log_dets = update_states(params, seqs, scaled_weights(weights, scales), previous, laws)
    elbos, log_likelihoods = state_terms(params, seqs, means, covs, log_dets), None
    if robust(params):
        scales, log_likelihoods, divergences = update_scales(params, seqs, weights, (means, covs, cross_covs), laws)
        elbos -= divergences
    log_z, mode_probs, pairs, log_likelihoods, transitions = update_modes(
        params, seqs, means, covs, cross_covs, laws, per_step, log_likelihoods
    )
    posterior = Posterior(means, covs, cross_covs, mode_probs, pairs, log_likelihoods, transitions, log_z + elbos)
    return posterior if scales is None else replace(posterior, scales=scales)


def robust(params: Any) -> bool:
    """Whether the model's resets (``params.resets``) have Student-t noise: a q(s) in every sweep."""
    return params.resets is not None and params.resets.dof is not None


def carried_scales(params: Any, previous: Posterior | None) -> np.ndarray | None:
    """E[s] of the ``previous`` sweep's q(s) (T, R), which weighs the switches of the next q(x);
    None without robust resets or before the first sweep."""
    return previous.scales if robust(params) and previous is not None and len(previous.scales) else None


def scaled_weights(weights: np.ndarray, scales: np.ndarray | None) -> np.ndarray:
    """The laws' ``weights`` (T, K + R) with each reset's multiplied by E[s] of q(s) (``scales``
    (T, R), robust resets; None: as they are): what q(x) and the resets' regressions read."""
    if scales is None or not len(scales):
        return weights
    scaled = np.array(weights, dtype=float)
    scaled[:, -scales.shape[1] :] *= scales
    return scaled


def update_scales(
    params: SwitchingParameters,
    seqs: Sequences,
    weights: np.ndarray,
    moments: tuple[np.ndarray, np.ndarray, np.ndarray],
    laws: StepTerms,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """q(s) of robust resets given q(x) (its ``moments``: means, covs, cross_covs) and the laws'
    ``weights`` under q(z) (T, K + R), from the Gaussian expected log-likelihoods L_tl (T, K + R)
    under the scales Q_r: delta_tr = -2 L_tr - n log 2 pi - log det Q_r. Returns E[s] (T, R), the
    evidence of q(z) with the resets' replaced by L_tr + n/2 E[log s] - (E[s] - 1) delta_tr / 2,
    and the KL(q(s) || p(s)) of each sequence."""
    log_likelihoods = expected_log_likelihoods(params, seqs, *moments, laws)
    n_modes, n, starts = len(params.chain.initial_probs), len(params.initial_mean), seqs.starts
    used = np.array(weights[:, n_modes:], dtype=float)
    used[starts] = 0.0  # no dynamics into a sequence's first step
    distances = np.maximum(-2.0 * log_likelihoods[:, n_modes:] - n * LOG_2PI - laws.log_det[:, n_modes:], 0.0)
    expected, expected_log, divergences = scale_posterior(used, distances, n, params.resets.dof)
    evidence = np.array(log_likelihoods)
    evidence[:, n_modes:] += n / 2 * expected_log - (expected - 1.0) * distances / 2
    evidence[starts] = 0.0
    return expected, evidence, np.add.reduceat(divergences.sum(axis=1), starts)


def infer(
    params: SwitchingParameters, seqs: Sequences, tol: float, max_sweeps: int, starts: tuple[np.ndarray, ...] = ()
) -> Posterior:
    """q(x) q(z) with the parameters fixed, sequence by sequence (:func:`best_of`): sweeps until
    a sequence's ELBO changes by less than ``tol`` (at most ``max_sweeps``), from two starts and
    any mode probabilities (T, K) in ``starts``, keeping each sequence's larger ELBO: uniform mode
    probabilities (whose q(x) smooths with the precision-averaged dynamics), and q(z) given the
    q(x) of the dynamics with every Q_k replaced by their mean. With uniform modes a mode whose
    Q_k is tiny dominates the averaged precision and pins q(x) to its own dynamics at every
    step, an optimum the sweeps do not leave (on over-complete fits, ELBOs below the fit's by
    10^5). The pair posteriors come per step (T, K, K), each sequence's own."""
    n_modes = len(params.chain.initial_probs)
    uniform = np.full((seqs.n_steps, n_modes), 1.0 / n_modes)
    starts = [uniform, *starts]
    if n_modes > 1:
        means, covs, cross_covs, _ = update_states(params.with_mean_noise(), seqs, law_weights(params, uniform))
        starts.append(update_modes(params, seqs, means, covs, cross_covs)[1])
    return best_of(
        seqs,
        starts,
        lambda modes: sweep(params, seqs, modes, per_step=True),
        lambda part, rows, posterior: sweep(params.of_rows(rows), part, posterior.mode_probs, posterior, per_step=True),
        tol,
        max_sweeps,
    )


def best_of(
    seqs: Sequences,
    starts: list[np.ndarray],
    first: Callable[[np.ndarray], PosteriorT],
    then: Callable[[Sequences, np.ndarray, PosteriorT], PosteriorT],
    tol: float,
    max_sweeps: int,
    best: PosteriorT | None = None,
) -> PosteriorT:
    """The posterior of largest ELBO over the ``starts`` of q(z) (and ``best``, one found already,
    if given), for each sequence of ``seqs`` by
    its own ELBO: from each start, ``first(modes)`` then sweeps until the sequence's ELBO changes
    by less than ``tol`` (at most ``max_sweeps`` in all). A sweep, ``then(part, rows, posterior)``,
    runs at once over the sequences not yet settled: ``part`` (a :class:`Sequences`), whose rows
    are ``rows`` (a mask over those of ``seqs``), with their ``posterior``; it returns theirs. A
    settled sequence keeps its posterior, so each sequence's q(x) q(z) is the one it has alone,
    whichever others come with it (over a cluster: whatever the partition). The posteriors' fields
    are per step (T, ...), per sequence (``elbos``) or shared by all steps (1, ...)."""
    for modes in starts:
        posterior = first(modes)
        active = np.ones(seqs.n_sequences, dtype=bool)
        for _ in range(max_sweeps - 1):
            rows = np.repeat(active, seqs.lengths)
            before = _taken(posterior, active, rows)
            after = then(seqs.subset(active), rows, before)
            posterior = _placed(posterior, after, active, rows)
            active[active] = ~(np.abs(after.elbos - before.elbos) < tol)  # a NaN ELBO goes on
            if not active.any():
                break
        if best is None:
            best = posterior
        else:
            better = posterior.elbos > best.elbos
            rows = np.repeat(better, seqs.lengths)
            best = _placed(best, _taken(posterior, better, rows), better, rows)
    return best


def _taken(posterior: PosteriorT, chosen: np.ndarray, rows: np.ndarray) -> PosteriorT:
    """The posterior of the sequences ``chosen`` (a mask over them; ``rows``, over the steps)."""
    if chosen.all():
        return posterior
    return replace(posterior, **{name: value[where] for name, value, where in _split_fields(posterior, chosen, rows)})


def _placed(posterior: PosteriorT, part: PosteriorT, chosen: np.ndarray, rows: np.ndarray) -> PosteriorT:
    """``posterior`` with the sequences ``chosen`` (a mask over them; ``rows``, over the steps) those
    of ``part``, the posterior of them alone (a field shared by all steps is the same in both)."""
    if chosen.all() or not chosen.any():
        return part if chosen.all() else posterior
    placed = {}
    for name, value, where in _split_fields(posterior, chosen, rows):
        placed[name] = value.copy()
        placed[name][where] = getattr(part, name)
    return replace(posterior, **placed)


def _split_fields(
    posterior: Posterior, chosen: np.ndarray, rows: np.ndarray
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(name, value, mask) of each field of ``posterior`` with a row per sequence (``elbos``: the
    mask ``chosen``) or per step (``rows``); the fields shared by all steps (1, ...) are left out."""
    for field in dataclasses.fields(posterior):
        value, where = getattr(posterior, field.name), chosen if field.name == "elbos" else rows
        if len(value) == len(where):
            yield field.name, value, where


# ------------------------------------------------------------------------ beam
BEAM_WIDTH = 32  # hypotheses kept by the beam search over mode paths
BEAM_MEMORY = 8  # steps of recent path by which two hypotheses count as the same (the better kept)


def beam_modes(
    params: SwitchingParameters, seqs: Sequences, width: int = BEAM_WIDTH, memory: int = BEAM_MEMORY
) -> tuple[np.ndarray, float]:
    """The mode path of a beam search over paths (:mod:`modeshift._kernels.beam`: a bank of Kalman
    filters, one per kept path), as one-hot q(z) (T, K), and its log p(y, z) (summed over
    sequences; -inf, with uniform rows, for a sequence on which every path became impossible).

    Moves that change the modes and the states together: the sweeps of :func:`infer` change q(z)
    given q(x) and q(x) given q(z), so they keep a segmentation whose q(x) smooths through a
    one-step switch (a ball's impact) it lacks; the beam scores each path by its exact marginal
    likelihood, the states filtered along it. ``width`` paths are kept at each step; paths whose last
    ``memory`` modes agree are merged, keeping the better (0: none; with ``width >= K^T`` and no
    merging the path is the exact MAP; ``memory`` is capped at 62 / log2 K). Needs switches that
    do not depend on the state (not a recurrent model)."""
    if params.recurrent:
        raise TypeError("beam_modes needs switches that do not depend on the state (not a recurrent model)")
    n_modes, n = len(params.chain.initial_probs), len(params.initial_mean)
    group, weights, Q = params.laws_by_group(seqs.n_steps)
    if params.steps is None:  # the chain's log kernels: log p(z_0), its log transition matrix (1, K, K)
        log_initial, log_transitions = params.chain.log_kernel_arrays()
    else:  # each group's switches (a chain beside per-step laws may have no matrix of its own)
        with np.errstate(divide="ignore"):
            log_initial, log_transitions = np.log(params.chain.initial_probs), np.log(params.steps.transitions)
    (observation,), R = params.observation.weights, params.observation.covariances[0]  # [C, D, d], R
    memory = min(int(memory), int(62 // np.log2(max(n_modes, 2))))  # K^memory path signatures fit in int64
    path, log_joint = beam.beam_search(
        np.ascontiguousarray(seqs.values, dtype=float),
        np.hstack([seqs.inputs, np.ones((seqs.n_steps, 1))]),
        seqs.offsets,
        np.ascontiguousarray(params.initial_mean, dtype=float),
        np.ascontiguousarray(params.initial_covariance, dtype=float),
        log_initial,
        np.ascontiguousarray(group, dtype=np.int64),
        np.ascontiguousarray(weights[..., :n]),  # A; then [B, b]
        np.ascontiguousarray(weights[..., n:]),
        np.ascontiguousarray(Q),
        np.ascontiguousarray(observation[:, :n]),  # C; then [D, d]
        np.ascontiguousarray(observation[:, n:]),
        np.ascontiguousarray(R),
        np.ascontiguousarray(log_transitions),
        params.law_of_pairs(),
        int(width),
        int(memory),
    )
    modes = np.full((seqs.n_steps, n_modes), 1.0 / n_modes)
    found = path >= 0
    modes[found] = np.eye(n_modes)[path[found]]
    return modes, float(log_joint.sum())


# ---------------------------------------------------------------------- helpers
def law_stack(flows: np.ndarray, resets: np.ndarray) -> np.ndarray:
    """One array of every law of a step: the flows' (..., K, *shape), then the resets' (R, *shape),
    the same at every leading index: (..., K + R, *shape)."""
    axis = flows.ndim - resets.ndim
    return np.concatenate([flows, np.broadcast_to(resets, (*flows.shape[:axis], *resets.shape))], axis=axis)


def transition_moments(
    seqs: Sequences, posterior: Posterior, rows: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The second moments under q(x) of each linked step's x_t and regressors z_t = [x_t-1, u_t, 1]:
    E[x_t x_t'], E[x_t z_t'] and E[z_t z_t'], shapes (R, n, n), (R, n, q), (R, q, q) for the
    R rows ``rows`` (by default all of ``seqs.linked_rows``): the statistics of the dynamics' M-step."""
    means, covs = posterior.means, posterior.covs
    rows = seqs.linked_rows if rows is None else rows
    n = means.shape[1]
    z = regressors(means[rows - 1], seqs.inputs[rows])
    zz = z[:, :, None] * z[:, None, :]
    zz[:, :n, :n] += covs[rows - 1]
    xz = means[rows][:, :, None] * z[:, None, :]
    xz[:, :, :n] += posterior.cross_covs[rows]
    xx = covs[rows] + means[rows][:, :, None] * means[rows][:, None, :]
    return xx, xz, zz


def transition_sums(
    seqs: Sequences, posterior: Posterior, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The dynamics' regression statistics of every law l, weighted per linked row by ``weights``
    (R, L): sum_t w_tl E[x_t x_t'], E[x_t z_t'], E[z_t z_t'] (:func:`transition_moments`), shapes
    (L, n, n), (L, n, q), (L, q, q), :data:`SUM_ROWS` rows at a time (:func:`weighted_sums`)."""
    n = posterior.means.shape[1]
    q = n + seqs.inputs.shape[1] + 1
    moments = functools.partial(transition_moments, seqs, posterior)
    xx, xz, zz = weighted_sums(moments, seqs.linked_rows, weights, ((n, n), (n, q), (q, q)), SUM_ROWS)
    return xx, xz, zz


SUM_ROWS = 4096  # rows whose moments :func:`transition_sums` forms at a time


def weighted_sums(
    moments: Callable[[np.ndarray], tuple[np.ndarray, ...]],
    rows: np.ndarray,
    weights: np.ndarray,
    shapes: tuple[tuple[int, ...], ...],
    block_rows: int,
) -> tuple[np.ndarray, ...]:
    """sum_t w_tl M_t over ``rows`` for every law l (``weights`` (R, L)) and each moment M of
    ``moments(some rows)`` (one array (B, *shape) per entry of ``shapes``): arrays (L, *shape),
    formed ``block_rows`` rows at a time, so that no per-row moment outlives its block."""
    sums = tuple(np.zeros((weights.shape[1], *shape)) for shape in shapes)
    for start in range(0, len(rows), block_rows):
        block = slice(start, start + block_rows)
        for total, moment in zip(sums, moments(rows[block])):
            total += np.einsum("tl,tij->lij", weights[block], moment)
    return sums


def regressors(states: np.ndarray, inputs: np.ndarray) -> np.ndarray:
    """[x, u, 1] per row."""
    return np.hstack([states, inputs, np.ones((len(states), 1))])


def guard_features(seqs: Sequences, means: np.ndarray) -> np.ndarray:
    """[E x_t-1, u_t] per row (row 0 of each sequence is a placeholder: its transition is unused)."""
    previous = np.empty_like(means)
    previous[1:], previous[0] = means[:-1], means[0]
    return np.hstack([previous, seqs.inputs])


def _observed_parts(Y: np.ndarray) -> Iterator[tuple[slice | np.ndarray, np.ndarray]]:
    """(rows, observed entries) of each pattern of missing values that leaves an entry observed."""
    for rows, observed in missingness_patterns(Y):
        if observed.any():
            yield (slice(None) if rows is None else rows), np.flatnonzero(observed)
