"""The likelihood of a Markov-switching (auto)regression, and everything computed from it.

A regime S_t in {0, ..., K-1} follows a Markov chain with transition matrix P, started
from its stationary distribution. Given the regimes, for y_t in R^D,

    y_t - B_{S_t}' x_t = sum_{j=1..p} Phi_{j, S_t} (y_{t-j} - B_{S_{t-j}}' x_{t-j}) + e_t,
    e_t ~ N(0, Sigma_{S_t}),

a regression (p = 0) or Hamilton's (1989) (vector) autoregression around a switching mean. An
observation depends on p + 1 regimes, so the recursions run on the expanded chain
(S_t, ..., S_{t-p}) of K^(p+1) states, whose transition matrix is built from P. The first
p observations are conditioned on (as in statsmodels). Filtering and Viterbi are the HMM
kernels on that chain; smoothing, run hundreds of times in a fit, is the sparse recursion of
:mod:`~modeshift._kernels.lagged_chain` (K moves out of each expanded state, not K^(p+1));
this module adds what is particular to the model:
the residuals under every expanded state, an expectation-conditional-maximisation step
(closed-form generalised least squares for the coefficients given Phi, for Phi given the
coefficients, then the covariances; the joint step over B and Phi has no closed form) that
reads only sums over the sequences (:meth:`SwitchingRegression.statistics`: every residual is
linear in the lagged values and regressors, so their weighted moments suffice),
the exact gradient (Fisher's identity), the quasi-Newton polish, simulation and exact
forecast moments.

Missing values (NaN; regressions, p = 0, only): a step's density is that of its observed
entries, N(e_o; 0, Sigma_oo), and a wholly missing step has none. EM treats the missing
entries as latent too: the E-step gives their conditional means given the observed ones
and the regime, Sigma_mo Sigma_oo^-1 e_o, and conditional covariances
Sigma_mm - Sigma_mo Sigma_oo^-1 Sigma_om, which the M-step adds to the scatter (an exact
EM, hence monotone); the gradient is the posterior mean of the same complete-data score.
In an autoregression a missing value is a lag of the next p steps, whose density is then
a mixture over the missing value itself: not available here.

Why it is not the autoregressive HMM's emission: there each mode is one linear
regression, y_t = A_k [y_t-1, ..., 1] + e_t, fitted mode by mode. Here the model is
bilinear in (beta, phi) across p + 1 regimes, coefficients may be shared between regimes,
and the chain starts from the stationary distribution of P, so that neither the
expanded chain nor the M-step fit that mould. What the two do share lives once: the HMM
kernels, the stationary distribution, and the moments of the jump linear system their
futures are (:func:`~modeshift.dynamics.jump_linear_moments`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np
from scipy import optimize

from modeshift import _kernels as kernels
from modeshift._kernels import lagged_chain
from modeshift._kernels.gaussian import LOG_2PI
from modeshift._kernels.layout import canonical
from modeshift._kernels.recursions import scaled_table
from modeshift.chain_analysis import stationary_distribution
from modeshift.dynamics import companion_matrices, jump_linear_moments, known_state_moments
from modeshift.models.logit_transitions import (
    expected_log_probability,
    logit_gradient,
    logit_matrices,
    newton_direction,
    newton_solve,
    newton_terms,
    start_gradient,
)
from modeshift.models.switching_layout import ParameterLayout, SwitchingParameters, ldl
from modeshift.statistics import Stacked, Statistics
from modeshift.transitions import normalise_rows, stationary_start_transitions

__all__ = ["Posterior", "Score", "SeriesData", "SwitchingRegression"]

_NEWTON_STEPS = 5  # after BFGS, while they raise the likelihood
_GTOL = 1e-8  # Newton stops below this largest gradient entry
# BFGS hands over to Newton below this: what is left to gain, about g' H^-1 g / 2, is then under
# the resolution of the log-likelihood itself, which BFGS's line searches need and Newton does not
_BFGS_GTOL = 1e-6
_INITIAL_NEWTON_STEPS = 5  # on a start path's time-varying transition logits

#: the log-likelihood and its gradient as a function of the free parameter vector
Score = Callable[[np.ndarray], tuple[float, np.ndarray]]


@dataclass(frozen=True)
class SeriesData:
    """Series y (n, D) back to back (NaN: missing) and their regressors (n, R): the trend columns, then the
    exogenous ones; with time-varying transitions, their covariates (n, C): row t drives the
    move into step t, a sequence's first row its start. Sequence s is rows
    ``bounds[s]:bounds[s+1]`` (``offsets``; None: one sequence)."""

    y: np.ndarray
    regressors: np.ndarray
    tvtp: np.ndarray | None = None
    offsets: np.ndarray | None = None
    scale: np.ndarray | None = None  # (D,) the series' variances over all the data, where y is a sample of it
    _derived: dict[Any, np.ndarray] = field(default_factory=dict, init=False, repr=False, compare=False)

    def derived(self, key: Any, build: Callable[[], np.ndarray]) -> np.ndarray:
        """``build()``, built once for ``key`` and kept (read-only): what the data give a model of one
        order (the rows its likelihood is about, their lagged values), which every E-step of a fit reads."""
        if key not in self._derived:
            value = build()
            value.flags.writeable = False
            self._derived[key] = value
        return self._derived[key]

    @cached_property
    def bounds(self) -> np.ndarray:
        """(n_sequences + 1,) first rows of the sequences, then the number of rows."""
        return np.array([0, len(self.regressors)]) if self.offsets is None else np.asarray(self.offsets)

    def sequences(self) -> list[tuple[int, int]]:
        """(first row, end row) of each sequence."""
        return list(zip(self.bounds[:-1].tolist(), self.bounds[1:].tolist()))

    @cached_property
    def variance_floor(self) -> float:
        """The smallest variance (eigenvalue of a covariance) an M-step may give: 1e-8 of the
        series' mean variance."""
        return 1e-8 * max(float(np.mean(self.variances)), 1e-12)

    @cached_property
    def variances(self) -> np.ndarray:
        """(D,) the variance of each series over its observed values (``scale`` where given)."""
        if self.scale is not None:
            return self.scale
        return np.nanvar(self.y, axis=0) if self.patterns else np.var(self.y, axis=0)

    @cached_property
    def patterns(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(observed entries (D,) bool, rows) of each pattern of missing values; [] when none is missing."""
        missing = np.isnan(self.y)
        if not missing.any():
            return []
        keys, inverse = np.unique(missing, axis=0, return_inverse=True)
        return [(~key, np.flatnonzero(inverse.ravel() == i)) for i, key in enumerate(keys)]


@dataclass(frozen=True)
class Posterior:
    """What the E-step gives the M-step and the gradient."""

    log_likelihood: float
    posteriors: np.ndarray  # (T, E): p(expanded state at step t | y)
    transitions: np.ndarray  # (K, K): expected number of i -> j moves, sample and pre-sample
    first_regime: np.ndarray  # (n_sequences, K): p(regime at each sequence's first step | y)
    start: np.ndarray  # (K,): the prior of that regime, the stationary distribution of a constant P
    residuals: np.ndarray  # (T, E, D): e_t under every expanded state (missing entries: conditional means)
    deviations: np.ndarray  # (p+1, T, E, D): y - B'x at lag j under the lag-j regime
    moves: np.ndarray | None = None  # (n, K, K): expected i -> j moves into each step (time-varying P)
    completed: np.ndarray | None = None  # (T, E, D): y, missing entries at their conditional means (p = 0)
    scatter: np.ndarray | None = None  # (E, D, D): sum_t gamma_te Cov(missing entries | observed, e)


class SwitchingRegression:
    """The model on its expanded chain, for one :class:`ParameterLayout`.

    Expanded state e stands for the regimes (S_t, S_t-1, ..., S_t-p) = ``digits[e]``,
    S_t the most significant digit.
    """

    def __init__(self, layout: ParameterLayout):
        self.layout = layout
        k, p = layout.n_states, layout.order
        self.n_states, self.order, self.n_features = k, p, layout.n_features
        self.n_expanded = k ** (p + 1)
        self.digits = np.array(list(np.ndindex(*(k,) * (p + 1))), dtype=np.int64)
        self.indicators = np.stack([np.eye(k)[self.digits[:, j]] for j in range(p + 1)])  # (p+1, E, K)
        # expanded move e -> f: f's older digits are e's newer ones; probability P[S_{t-1}(e), S_t(f)]
        previous = np.repeat(np.arange(self.n_expanded), k)
        newest = np.tile(np.arange(k), self.n_expanded)
        self.moves = (previous, newest * k**p + previous // k, previous // k**p, newest)

    # ---------------------------------------------------------------- sequences
    def rows(self, data: SeriesData) -> np.ndarray:
        """(T,) the rows with p earlier rows in their sequence: the steps the likelihood is about."""
        return data.derived(
            ("rows", self.order),
            lambda: np.concatenate([np.arange(first + self.order, end) for first, end in data.sequences()]),
        )

    def offsets(self, data: SeriesData) -> np.ndarray:
        """(n_sequences + 1,) where each sequence's steps start among the :meth:`rows`."""
        return data.bounds - self.order * np.arange(len(data.bounds))

    # ------------------------------------------------------------- expanded chain
    def transition_matrices(self, params: SwitchingParameters, data: SeriesData) -> np.ndarray:
        """p(S_t | S_t-1): (1, K, K) for a constant chain; (n, K, K) for every step of the data
        with time-varying probabilities (entry 0 only sets the start, as in statsmodels)."""
        if params.transition_coef is None:
            return params.transmat[None]
        return logit_matrices(params.transition_coef, data.tvtp)

    def regime_chain(self, params: SwitchingParameters, data: SeriesData) -> tuple[np.ndarray, np.ndarray]:
        """Initial probabilities (n_sequences, E) of (S_t, ..., S_{t-p}) and the regimes' moves
        into the steps, (1 or T, K, K): in each sequence the earliest regime starts from the
        stationary distribution of its first matrix; the move into row t of the data uses matrix t."""
        matrices = self.transition_matrices(params, data)
        if len(matrices) == 1:
            return self.initial(matrices)[None], matrices
        initials = np.stack([self.initial(matrices[first : first + self.order + 1]) for first, _ in data.sequences()])
        return initials, matrices[self.rows(data)]

    def initial(self, matrices: np.ndarray) -> np.ndarray:
        """p(S_p, ..., S_0) (E,) of a sequence's first expanded state from its first p + 1 (or one) matrices."""
        k, p = self.n_states, self.order
        varying = len(matrices) > 1
        initial = stationary_distribution(matrices[0])  # of the earliest regime, S_{t-p}
        for m in range(p):  # prepend the next regime
            newest = np.arange(k ** (m + 1)) // k**m
            initial = (matrices[m + 1 if varying else 0][newest].T * initial[None, :]).ravel()
        return initial

    def expanded_moves(self, matrices: np.ndarray) -> np.ndarray:
        """(m, E, E) moves of the expanded chain from the regimes' (m, K, K)."""
        source, target, regime_before, regime_after = self.moves
        expanded = np.zeros((len(matrices), self.n_expanded**2))
        expanded[:, source * self.n_expanded + target] = matrices[:, regime_before, regime_after]
        return expanded.reshape(-1, self.n_expanded, self.n_expanded)

    def regimes(self, expanded: np.ndarray) -> np.ndarray:
        """Probabilities over expanded states (..., E) summed to the current regime's (..., K)."""
        return expanded @ self.indicators[0]

    # ----------------------------------------------------------------- residuals
    def deviations(
        self, params: SwitchingParameters, data: SeriesData, completed: np.ndarray | None = None
    ) -> np.ndarray:
        """(p+1, T, E, D): entry [j, t, e] is y - B'x at sample step t - j under regime digit j of e
        (of the ``completed`` values (T, E, D) instead of y, where given; p = 0)."""
        if completed is not None:
            return (completed - np.einsum("tr,erd->ted", data.regressors, params.coef[self.digits[:, 0]]))[None]
        rows = self.rows(data)
        deviation = data.y.T[None] - np.swapaxes(params.coef, 1, 2) @ data.regressors.T  # (K, D, n)
        # (T, E, D) views of (E, D, T) arrays: the reductions over them keep their summation order
        return np.stack(
            [np.take(deviation[self.digits[:, j]], rows - j, axis=2).transpose(2, 0, 1) for j in range(self.order + 1)]
        )

    def residuals(self, params: SwitchingParameters, deviations: np.ndarray) -> np.ndarray:
        """(T, E, D): e_t = deviation_t - sum_j Phi_{j, S_t} deviation_t-j."""
        return deviations[0] - np.einsum("jteb,ejab->tea", deviations[1:], params.ar[self.digits[:, 0]])

    def log_densities(self, params: SwitchingParameters, residuals: np.ndarray, data: SeriesData) -> np.ndarray:
        """log N(e_t; 0, Sigma) of the observed entries under every expanded state, (T, E)."""
        covariances = params.covariances[self.digits[:, 0]]
        if not data.patterns:
            return np.ascontiguousarray(_log_density(residuals, covariances))
        out = np.zeros(residuals.shape[:2])  # a wholly missing step: no evidence
        for seen, rows in data.patterns:
            if seen.any():
                out[rows] = _log_density(residuals[rows][:, :, seen], covariances[:, seen][:, :, seen])
        return out

    def completion(
        self, params: SwitchingParameters, residuals: np.ndarray, data: SeriesData, gamma: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The residuals (T, E, D) with their missing entries at E[e_m | e_o, regime] =
        Sigma_mo Sigma_oo^-1 e_o, and sum_t gamma_te Cov(e_m | e_o, regime) (E, D, D) (p = 0)."""
        covariances = params.covariances[self.digits[:, 0]]
        completed, scatter = residuals.copy(), np.zeros_like(covariances)
        for seen, rows in data.patterns:
            hidden = ~seen
            if not hidden.any():
                continue
            cross = covariances[:, hidden][:, :, seen]  # (E, m, o)
            gain = np.linalg.solve(covariances[:, seen][:, :, seen], np.swapaxes(cross, 1, 2)).swapaxes(1, 2)
            block = completed[rows]
            block[:, :, hidden] = np.einsum("emo,teo->tem", gain, residuals[rows][:, :, seen])
            completed[rows] = block
            conditional = covariances[:, hidden][:, :, hidden] - gain @ np.swapaxes(cross, 1, 2)
            scatter[np.ix_(np.arange(len(covariances)), hidden, hidden)] += (
                gamma[rows].sum(axis=0)[:, None, None] * conditional
            )
        return completed, scatter

    def _kernel_arguments(
        self,
        params: SwitchingParameters,
        data: SeriesData,
        residuals: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """The arguments of the HMM kernels on the expanded chain: log-likelihoods (from the
        ``residuals``, computed when not given), offsets, initial probabilities, transitions.

        The kernels take one initial law; where the sequences' differ (time-varying
        transitions) each is folded into its first step's evidence, log(E pi_s) added to it,
        with a uniform initial law: the same products, so the same results."""
        initials, matrices = self.regime_chain(params, data)
        matrices = self.expanded_moves(matrices)
        if residuals is None:
            residuals = self.residuals(params, self.deviations(params, data))
        log_likelihoods = self.log_densities(params, residuals, data)
        offsets = self.offsets(data).astype(np.int64)
        initial = initials[0]
        if len(initials) > 1:
            with np.errstate(divide="ignore"):
                log_likelihoods[offsets[:-1]] += np.log(len(initial) * initials)
            initial = np.full(len(initial), 1.0 / len(initial))
        return {
            "log_likelihoods": log_likelihoods,
            "offsets": offsets,
            "initial_probs": initial,
            "transition_matrices": matrices,
        }

    def coef_design(
        self, params: SwitchingParameters, data: SeriesData, completed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """With Phi fixed the residual is ``target - design @ free coefficients``: (T, E, D) and
        (T, E, D, n_coef) (the ``completed`` values as the target where given; p = 0)."""
        p, rows = self.order, self.rows(data)
        ar = params.ar[self.digits[:, 0]]  # (E, p, D, D)
        x_lags = np.stack([data.regressors[rows - j] for j in range(p + 1)])  # (p+1, T, R)
        if completed is None:
            y_lags = np.stack([data.y[rows - j] for j in range(p + 1)])  # (p+1, T, D)
            target = y_lags[0][:, None, :] - np.einsum("jtb,ejab->tea", y_lags[1:], ar)
        else:
            target = completed
        # d(B_{S_t}'x_t - sum_j Phi_j B_{S_{t-j}}'x_{t-j})_a / d B_k[r, c]: lag weights (p+1, E, K, D, D)
        identity = np.eye(self.n_features)
        lag_weights = np.concatenate(
            [
                self.indicators[:1, :, :, None, None] * identity,
                -self.indicators[1:, :, :, None, None] * np.moveaxis(ar, 1, 0)[:, :, None],
            ]
        )
        # mapped onto the free coefficients first (no step in it), then one product with the lagged regressors
        coef_map = self.layout.coef_map.reshape(self.n_states, -1, self.n_features, self.layout.sizes[1])
        weights = np.einsum("jekac,krcf->jreaf", lag_weights, coef_map)
        design = x_lags.transpose(1, 0, 2).reshape(len(rows), -1) @ weights.reshape(len(weights) * x_lags.shape[2], -1)
        return target, design.reshape(*target.shape, -1)

    def ar_design(self, deviations: np.ndarray) -> np.ndarray:
        """With the coefficients fixed the residual is ``deviations[0] - design @ free Phi``; (T, E, D, n_ar)."""
        d = self.n_features
        # d e_a / d Phi_{j, S_t}[a, b] = -deviation_{t-j, b}: the free Phi of each state's current regime
        ar_map = self.layout.ar_map
        free = ar_map.reshape(self.n_states, self.order, d, d, ar_map.shape[1])[self.digits[:, 0]]  # (E, p, D, D, n_ar)
        return np.einsum("jteb,ejabf->teaf", deviations[1:], free)

    # --------------------------------------------------------------- inference
    def log_likelihood(self, params: SwitchingParameters, data: SeriesData) -> float:
        """sum over the sequences of log p(y_p, ..., y_n-1 | y_0, ..., y_p-1)."""
        return float(self.log_likelihoods(params, data).sum())

    def log_likelihoods(self, params: SwitchingParameters, data: SeriesData) -> np.ndarray:
        """(n_sequences,) log p(y_p, ..., y_n-1 | y_0, ..., y_p-1) of each sequence."""
        return kernels.log_likelihood(**self._kernel_arguments(params, data))

    def filtered(self, params: SwitchingParameters, data: SeriesData) -> tuple[np.ndarray, float]:
        """p(S_t | y up to t) for t >= p, (T, K), and the log-likelihood."""
        filtered, log_lik = kernels.forward_filter(**self._kernel_arguments(params, data))
        return self.regimes(filtered), float(log_lik.sum())

    def viterbi(self, params: SwitchingParameters, data: SeriesData) -> tuple[np.ndarray, float]:
        """The most probable regime path (T,) for t >= p, and log p(y, path) (the path's
        pre-sample regimes included in the maximisation)."""
        arguments = self._kernel_arguments(params, data)
        with np.errstate(divide="ignore"):
            path, log_prob = kernels.viterbi(
                log_likelihoods=arguments["log_likelihoods"],
                offsets=arguments["offsets"],
                log_initial=np.log(arguments["initial_probs"]),
                log_transitions=np.log(arguments["transition_matrices"]),
            )
        return self.digits[path, 0], float(log_prob.sum())

    # -------------------------------------------------------------------- E-step
    def e_step(
        self, params: SwitchingParameters, data: SeriesData, scratch: dict[str, np.ndarray] | None = None
    ) -> Posterior:
        """The posterior, by forward-backward on the lagged chain (:mod:`~modeshift._kernels.lagged_chain`);
        with ``scratch`` (a dict handed to every call, as the EM driver's workspace) the evidence
        table is kept between calls."""
        deviations = self.deviations(params, data)
        residuals = self.residuals(params, deviations)
        initials, matrices = self.regime_chain(params, data)
        table, shifts = scaled_table(self.log_densities(params, residuals, data), scratch)
        offsets = self.offsets(data).astype(np.int64)
        log_lik, posteriors, step_moves = lagged_chain.forward_backward(  # a Fortran-order P_t would compile it again
            table, shifts, offsets, initials, canonical(matrices), self.n_states, self.order
        )
        p, varying = self.order, params.transition_coef is not None
        if varying:
            moves = np.zeros((len(data.regressors), self.n_states, self.n_states))
            moves[self.rows(data)] = step_moves  # 0 at sequence starts
        else:
            moves = step_moves.sum(axis=0)[None]
        firsts = posteriors[offsets[:-1]]
        for (start, _), first in zip(data.sequences(), firsts):
            for j in range(p):  # the moves inside the first expanded state, into step p - j
                moves[start + p - j if varying else 0] += (self.indicators[j + 1].T * first) @ self.indicators[j]
        transitions = moves.sum(axis=0)
        earliest = self.indicators[-1]
        completed = scatter = None
        if data.patterns:  # p = 0: the missing entries at their conditional means
            residuals, scatter = self.completion(params, residuals, data, posteriors)
            fitted = np.einsum("tr,erd->ted", data.regressors, params.coef[self.digits[:, 0]])
            completed = np.where(np.isnan(data.y)[:, None, :], residuals + fitted, data.y[:, None, :])
            deviations = residuals[None]
        return Posterior(
            float(log_lik.sum()),
            posteriors,
            transitions,
            np.array([first @ earliest for first in firsts]),  # vector products, as for one sequence
            initials[0] @ earliest,
            residuals,
            deviations,
            moves if varying else None,
            completed,
            scatter,
        )

    # ------------------------------------------------------- the M-step's statistics
    def lagged(self, data: SeriesData, completed: np.ndarray | None = None) -> np.ndarray:
        """z_t = (y_t, x_t, y_t-1, x_t-1, ..., y_t-p, x_t-p) of every step, (T, Z), Z = (p+1)(D+R): every
        residual of the model is a linear map of it. With the ``completed`` values (T, E, D) (p = 0) as y,
        one per expanded state, (T, E, Z)."""
        rows = self.rows(data)
        if completed is not None:
            regressors = np.broadcast_to(
                data.regressors[rows][:, None, :], (*completed.shape[:2], data.regressors.shape[1])
            )
            return np.concatenate([completed, regressors], axis=2)
        return data.derived(
            ("lagged", self.order),
            lambda: np.concatenate(
                [np.hstack([data.y[rows - j], data.regressors[rows - j]]) for j in range(self.order + 1)], axis=1
            ),
        )

    def centre(self, data: SeriesData) -> np.ndarray:
        """(Z,) the mean of z_t over the data (missing values left out): the point the statistics'
        moments are taken about, so that no large raw moments cancel in a residual's square."""
        return np.nanmean(self.lagged(data), axis=0)

    def statistics(
        self, posterior: Posterior, data: SeriesData, centre: np.ndarray, coef: np.ndarray | None = None
    ) -> Statistics:
        """What the M-step reads, sums over the sequences (so over shards of them): the expected
        moves and first regimes, and per expanded state e the moments of z_t weighted by
        p(e at t | y) about ``centre`` (``mass``, ``sums``, ``products``; a residual's weighted
        products are quadratic forms in them, :meth:`_products`), with the missing entries'
        conditional covariances (``scatter``). With time-varying transitions, the per-step rows
        of their logistic regression (:class:`~modeshift.statistics.Stacked`: data-sized, which a
        fit over shards keeps on them: :meth:`logit_step`'s line search reads sums over them), their
        covariates (the data's own array: neither copied at an E-step nor at a Newton evaluation)
        and, at the current logit coefficients ``coef``, the transition part of Q with its gradient
        and Hessian (``logit_terms``: summed here, while the rows are in hand, they cost a fit over
        shards no pass of their own)."""
        gamma = posterior.posteriors
        shifted = self.lagged(data, posterior.completed) - centre
        if shifted.ndim == 2:
            products = np.stack([(shifted * weight[:, None]).T @ shifted for weight in gamma.T])
            sums = gamma.T @ shifted
        else:
            products = np.stack(
                [(block * weight[:, None]).T @ block for block, weight in zip(np.swapaxes(shifted, 0, 1), gamma.T)]
            )
            sums = np.einsum("te,tez->ez", gamma, shifted)
        d = self.n_features
        stats = Statistics(
            transitions=posterior.transitions,
            first=posterior.first_regime.sum(axis=0),
            mass=gamma.sum(axis=0),
            sums=sums,
            products=products,
            scatter=np.zeros((self.n_expanded, d, d)) if posterior.scatter is None else posterior.scatter,
        )
        if posterior.moves is not None:  # per row: a sequence's start, its first regime, the moves
            k, n = self.n_states, len(posterior.moves)
            starts = np.zeros((n, 1 + k))
            starts[data.bounds[:-1], 0] = 1.0
            starts[data.bounds[:-1], 1:] = posterior.first_regime
            rows = np.hstack([starts, posterior.moves.reshape(n, k * k)])
            stats["logit"], stats["covariates"] = Stacked(rows), Stacked(data.tvtp)
            if coef is not None:
                value, gradient, hessian = _logit_terms(rows, data.tvtp, k, coef)
                stats["logit_terms"] = Statistics(value=value, gradient=gradient, hessian=hessian)
        return stats

    def _products(self, stats: Statistics, centre: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """sum_t p(e at t | y) (L_e z_t)(M_e z_t)' (E, P, Q) for maps ``left`` L (E, P, Z) and ``right``
        M (E, Q, Z), from the moments about c: with s = z - c, L z = L s + L c."""
        left_centre, right_centre = left @ centre, right @ centre
        left_sums, right_sums = (
            np.einsum("epz,ez->ep", left, stats["sums"]),
            np.einsum("eqz,ez->eq", right, stats["sums"]),
        )
        return (
            left @ stats["products"] @ np.swapaxes(right, 1, 2)
            + left_sums[:, :, None] * right_centre[:, None, :]
            + left_centre[:, :, None] * right_sums[:, None, :]
            + stats["mass"][:, None, None] * left_centre[:, :, None] * right_centre[:, None, :]
        )

    def _deviation_maps(self, params: SwitchingParameters, z_size: int) -> np.ndarray:
        """(p+1, E, D, Z): map j of state e takes z_t to y_t-j - B_{S_t-j}' x_t-j under e's lag-j regime."""
        d, width = self.n_features, z_size // (self.order + 1)
        maps = np.zeros((self.order + 1, self.n_expanded, d, z_size))
        for j in range(self.order + 1):
            maps[j, :, :, j * width : j * width + d] = np.eye(d)
            maps[j, :, :, j * width + d : (j + 1) * width] = -np.swapaxes(params.coef[self.digits[:, j]], 1, 2)
        return maps

    def _least_squares(
        self, stats: Statistics, centre: np.ndarray, target: np.ndarray, design: np.ndarray, covariances: np.ndarray
    ) -> np.ndarray:
        """argmin_b sum_te p(e at t | y) r' Sigma_e^-1 r, r = (target_e - sum_f b_f design_ef) z_t, for maps
        ``target`` (E, D, Z) and ``design`` (E, F, D, Z): the normal equations from the moments, on U^-1 r
        with Sigma = U diag(v) U'; lstsq copes with a regime that has no weight."""
        inverse, variances = _whitening(covariances)
        n_free = design.shape[1]
        design = np.einsum("ead,efdz->efaz", inverse, design).reshape(len(design), -1, design.shape[-1])
        target = inverse @ target
        d = self.n_features
        weights = 1.0 / variances
        normal = self._products(stats, centre, design, design).reshape(-1, n_free, d, n_free, d)
        right = self._products(stats, centre, design, target).reshape(-1, n_free, d, d)
        matrix = np.einsum("efaga,ea->fg", normal, weights)
        vector = np.einsum("efaa,ea->f", right, weights)
        return np.linalg.lstsq(matrix, vector, rcond=None)[0]

    # -------------------------------------------------------------------- M-step
    def hard_posterior(self, path: np.ndarray, data: SeriesData) -> Posterior:
        """All mass on one regime path (n,), with one pseudo-count per transition: a start for the M-step."""
        k, p, rows = self.n_states, self.order, self.rows(data)
        expanded = sum(path[rows - j] * k ** (p - j) for j in range(p + 1))
        linked = _linked_rows(data)
        counts = 1.0 + np.eye(k)[path[linked - 1]].T @ np.eye(k)[path[linked]]
        empty = np.empty((0, 0))
        first = np.eye(k)[path[data.bounds[:-1]]]
        completed = scatter = None
        if data.patterns:  # missing entries at the series' means
            filled = np.where(np.isnan(data.y), np.nanmean(data.y, axis=0), data.y)
            completed = np.broadcast_to(filled[:, None, :], (len(rows), self.n_expanded, self.n_features))
            scatter = np.zeros((self.n_expanded, self.n_features, self.n_features))
        posteriors = np.eye(self.n_expanded)[expanded]
        return Posterior(np.nan, posteriors, counts, first, empty, empty, empty, None, completed, scatter)

    def initial_parameters(self, path: np.ndarray, data: SeriesData, centre: np.ndarray) -> SwitchingParameters:
        """Parameters fitted to one regime path: P from its moves (time-varying: Newton steps on
        the logit from 0, with the pseudo-counts spread over the steps), then two regression
        steps (the coefficients, phi, the coefficients again given phi, the variances)."""
        k, n_tvtp = self.n_states, self.layout.n_tvtp
        posterior = self.hard_posterior(path, data)
        params = SwitchingParameters(
            transmat=None if n_tvtp else normalise_rows(posterior.transitions),
            coef=np.zeros((k, data.regressors.shape[1], self.n_features)),
            ar=np.zeros((k, self.order, self.n_features, self.n_features)),
            covariances=np.stack([np.diag(np.maximum(data.variances, data.variance_floor))] * k),
            transition_coef=np.zeros((k, k - 1, n_tvtp)) if n_tvtp else None,
        )
        if n_tvtp:
            moves, linked = np.zeros((len(path), k, k)), _linked_rows(data)
            moves[linked] = np.eye(k)[path[linked - 1], :, None] * np.eye(k)[path[linked], None, :] + 1.0 / len(linked)
            for _ in range(_INITIAL_NEWTON_STEPS):
                matrices = self.transition_matrices(params, data)
                coef = params.transition_coef + newton_direction(moves, matrices, data.tvtp)
                params = replace(params, transition_coef=coef)
        stats = self.statistics(posterior, data, centre)
        for _ in range(2):
            params = self.regression_step(params, stats, centre, data.variance_floor)
        return params

    def m_step(
        self, params: SwitchingParameters, stats: Statistics, centre: np.ndarray, variance_floor: float
    ) -> SwitchingParameters:
        """Conditional maximisations in turn: P; coefficients given phi; phi given coefficients; variances.

        Each step raises the expected complete-data log-likelihood Q given the others, so
        the log-likelihood never falls (a generalised EM). Each reads only the summed
        :meth:`statistics` (``centre`` the point their moments are about).
        """
        if self.layout.n_tvtp:
            params = self.logit_step(params, stats)
        else:
            params = self.transition_step(params, stats)
        return self.regression_step(params, stats, centre, variance_floor)

    def logit_step(self, params: SwitchingParameters, stats: Statistics) -> SwitchingParameters:
        """Time-varying P's part of Q has no closed-form maximum either: one Newton step on its
        moves' term, taken if it raises the whole (the start's term too), else the largest of
        1/2, 1/4, ... of it that does (or none), a generalised-EM step. ``stats``: those of
        :meth:`statistics`, whose ``logit_terms`` give Q, its gradient and Hessian at the current
        coefficients; each candidate's Q is a sum over the stacked rows (a sequence's start, its
        first regime, the moves) and covariates, in hand or kept on the shards of a cluster, read
        by one pass over them (``rows.terms``)."""
        k, coef = self.n_states, params.transition_coef
        rows, covariates = stats["logit"], stats["covariates"]
        terms = stats["logit_terms"]
        current, gradient, hessian = terms["value"], terms["gradient"], terms["hessian"]
        # a sequence's first row has no moves, so one Newton step spans the sequences
        direction = newton_solve(gradient, hessian)
        for step in 0.5 ** np.arange(10):
            candidate = coef + step * direction
            if rows.terms(functools.partial(_logit_value, n_states=k, coef=candidate), covariates) >= current:
                return replace(params, transition_coef=candidate)
        return params

    def transition_step(self, params: SwitchingParameters, stats: Statistics) -> SwitchingParameters:
        """P's part of Q, sum n_ij log P_ij + sum_i p(S_first = i | y) log pi_i(P), with pi(P) the
        stationary start: the HMM's stationary-start M-step
        (:func:`modeshift.transitions.stationary_start_transitions`)."""
        return replace(
            params, transmat=stationary_start_transitions(stats["transitions"], stats["first"], params.transmat)
        )

    def regression_step(
        self, params: SwitchingParameters, stats: Statistics, centre: np.ndarray, variance_floor: float
    ) -> SwitchingParameters:
        """The coefficients given Phi, Phi given the coefficients (generalised least squares
        under the current covariances), then the covariances (eigenvalues floored at ``variance_floor``).

        Every residual is a linear map of z_t (:meth:`lagged`): for state e with regimes k_j,
        deviation j is D_j z = y_t-j - B_{k_j}' x_t-j and the residual D_0 z - sum_j Phi_{j,k_0} D_j z,
        so each step's normal equations and the covariances' scatter are quadratic forms in the
        weighted moments of z."""
        layout, current, d = self.layout, self.indicators[0], self.n_features
        z_size = len(centre)
        covariances = params.covariances[self.digits[:, 0]]
        lags = -params.ar[self.digits[:, 0]]  # (E, p, D, D): the weight of deviation j in the residual
        if layout.sizes[1]:
            maps = self._deviation_maps(replace(params, coef=np.zeros_like(params.coef)), z_size)
            target = maps[0] + np.einsum("ejab,jebz->eaz", lags, maps[1:])
            # d residual / d free coefficient f: B's map of each lag, weighted as the lag
            width, n_regressors = z_size // (self.order + 1), params.coef.shape[1]
            coef_map = layout.coef_map.reshape(self.n_states, n_regressors, d, -1)
            design = np.zeros((self.order + 1, self.n_expanded, coef_map.shape[-1], d, z_size))
            for j in range(self.order + 1):  # B_{k_j}' x_t-j's part of deviation j
                design[j, :, :, :, j * width + d : (j + 1) * width] = np.moveaxis(
                    coef_map[self.digits[:, j]], 3, 1
                ).swapaxes(2, 3)
            design = design[0] + np.einsum("ejab,jefbz->efaz", lags, design[1:])
            params = replace(
                params, coef=layout.coef_from_free(self._least_squares(stats, centre, target, design, covariances))
            )
        maps = self._deviation_maps(params, z_size)
        if layout.sizes[3]:
            ar_map = layout.ar_map
            free = ar_map.reshape(self.n_states, self.order, d, d, ar_map.shape[1])[
                self.digits[:, 0]
            ]  # (E, p, D, D, n_ar)
            design = np.einsum("ejabf,jebz->efaz", free, maps[1:])
            params = replace(
                params, ar=layout.ar_from_free(self._least_squares(stats, centre, maps[0], design, covariances))
            )
        residual = maps[0] - np.einsum("ejab,jebz->eaz", params.ar[self.digits[:, 0]], maps[1:])
        n_expanded = self.n_expanded
        scatter = self._products(stats, centre, residual, residual) + stats["scatter"]
        squares = current.T @ scatter.reshape(n_expanded, d * d)  # (K, D D)
        masses = stats["mass"] @ current
        regime_map = layout.regime_map
        per_free = (regime_map.T @ squares) / np.maximum(masses @ regime_map, 1e-300)[:, None]
        covariances = (regime_map @ per_free).reshape(-1, d, d)
        return replace(params, covariances=_floored(covariances, variance_floor))

    # ------------------------------------------------------- gradient and polish
    def value_and_gradient(
        self, free: np.ndarray, data: SeriesData, scratch: dict[str, np.ndarray] | None = None
    ) -> tuple[float, np.ndarray]:
        """Log-likelihood and its gradient in the free parameters (``scratch`` as for :meth:`e_step`).

        By Fisher's identity the gradient of log p(y) is the posterior mean of the gradient of
        log pi(S_first) + sum log P[S_{t-1}, S_t] + sum log N(e_t; 0, sigma2_{S_t}).
        """
        layout = self.layout
        params = layout.unpack(free)
        posterior = self.e_step(params, data, scratch)
        if not np.isfinite(posterior.log_likelihood):
            return -np.inf, np.zeros_like(free)
        gamma = posterior.posteriors
        if layout.n_tvtp:
            matrices = self.transition_matrices(params, data)
            transition_grad = sum(
                logit_gradient(posterior.moves[a:b], matrices[a:b], data.tvtp[a:b], first)
                for (a, b), first in zip(data.sequences(), posterior.first_regime)
            )
            transition_grad = np.transpose(transition_grad, (1, 2, 0))  # target, covariate, source
        else:
            transmat, counts = params.transmat, posterior.transitions
            # d log P[i, j] / d logit[i, m] = 1[j = m] - P[i, m]
            transition_grad = counts[:, :-1] - transmat[:, :-1] * counts.sum(axis=1, keepdims=True)
            transition_grad = (transition_grad + start_gradient(transmat, posterior.first_regime.sum(axis=0))).T

        # with Sigma = U diag(v) U' per expanded state, w = U^-1 e: log f = -(sum log v + sum w^2 / v) / 2 + c
        inverse, variances = _whitening(params.covariances[self.digits[:, 0]])
        whitened = np.einsum("ead,ted->tea", inverse, posterior.residuals)
        weighted = gamma[:, :, None] * whitened / variances  # -(d log f / d w) gamma
        _, coef_design = self.coef_design(params, data, posterior.completed)
        gradient = np.concatenate(
            [
                transition_grad.ravel(),
                np.einsum("teaf,tea->f", np.einsum("ead,tedf->teaf", inverse, coef_design), weighted),
                self.covariance_gradient(posterior, whitened, weighted, inverse, variances).ravel()
                @ layout.variance_map,
                np.einsum(
                    "teaf,tea->f", np.einsum("ead,tedf->teaf", inverse, self.ar_design(posterior.deviations)), weighted
                ),
            ]
        )
        return posterior.log_likelihood, gradient

    def covariance_gradient(
        self,
        posterior: Posterior,
        whitened: np.ndarray,
        weighted: np.ndarray,
        inverse: np.ndarray,
        variances: np.ndarray,
    ) -> np.ndarray:
        """d log p(y) / d (log v_a, U_ab) per regime, (K, n_cov) in ``covariance_entries`` order.

        With S~ = sum_t gamma w w' (plus the missing entries' conditional covariances, whitened)
        and m = sum_t gamma: d / d log v_a = (S~_aa / v_a - m) / 2 and
        d / d U_ab = [U^-T (diag(v)^-1 S~ - m I)]_ab below the diagonal."""
        gamma, current = posterior.posteriors, self.indicators[0]
        n_steps, n_expanded, d = whitened.shape
        per_step = 0.5 * (weighted * whitened - gamma[:, :, None])  # (T, E, D)
        diagonal = (np.swapaxes(per_step, 1, 2).reshape(-1, n_expanded) @ current).reshape(n_steps, d, -1).sum(axis=0)
        scatter = np.zeros((n_expanded, d, d))
        if posterior.scatter is not None:
            scatter = inverse @ posterior.scatter @ np.swapaxes(inverse, 1, 2)
            diagonal = diagonal + 0.5 * (np.diagonal(scatter, axis1=1, axis2=2) / variances).T @ current
        rows, columns = np.array(self.layout.covariance_entries).T
        out = np.empty((self.n_states, len(rows)))
        out[:, rows == columns] = diagonal.T
        if d > 1:
            scaled = scatter / variances[:, :, None] + np.einsum("tea,teb->eab", weighted, whitened)  # diag(v)^-1 S~
            off = np.swapaxes(inverse, 1, 2) @ scaled  # the -m I term has no part below the diagonal
            below = rows > columns
            out[:, below] = current.T @ off[:, rows[below], columns[below]]
        return out

    def scorer(self, data: SeriesData) -> Score:
        """The log-likelihood and its gradient as a function of the free vector, over ``data``
        (the evidence table kept from one call to the next)."""
        scratch: dict[str, np.ndarray] = {}
        return lambda free: self.value_and_gradient(free, data, scratch)

    @staticmethod
    def hessian(free: np.ndarray, score: Score) -> np.ndarray:
        """Central differences of the exact gradient ``score`` (:meth:`scorer`), symmetrised."""
        n = len(free)
        hessian = np.empty((n, n))
        for i in range(n):
            shift = np.zeros(n)
            shift[i] = 1e-5 * max(1.0, abs(free[i]))
            hessian[i] = (score(free + shift)[1] - score(free - shift)[1]) / (2 * shift[i])
        return 0.5 * (hessian + hessian.T)

    def polish(self, free: np.ndarray, score: Score, max_iter: int) -> tuple[np.ndarray, bool]:
        """BFGS on the exact gradient ``score`` (:meth:`scorer`, or its sum over shards of the data;
        at most ``max_iter`` iterations), then, unless it stopped at that cap, Newton steps on the
        finite-difference Hessian while they raise the likelihood. Returns the free vector and
        whether BFGS stopped at its cap."""

        def negative(x: np.ndarray) -> tuple[float, np.ndarray]:
            value, gradient = score(x)
            return (-value, -gradient) if np.isfinite(value) else (np.inf, np.zeros_like(x))

        capped = False
        if len(free):
            result = optimize.minimize(
                negative, free, jac=True, method="BFGS", options={"gtol": _BFGS_GTOL, "maxiter": max_iter}
            )
            capped = result.nit >= max_iter and not result.success
            free = result.x if np.isfinite(result.fun) else free
        if capped or not len(free):
            return free, capped
        value, gradient = score(free)
        for _ in range(_NEWTON_STEPS):
            if np.abs(gradient).max() < _GTOL:
                break
            hessian = self.hessian(free, score)
            if not np.all(np.linalg.eigvalsh(hessian) < 0):
                break
            candidate = free - np.linalg.solve(hessian, gradient)
            candidate_value, candidate_gradient = score(candidate)
            if not candidate_value >= value - 1e-10 * abs(value):
                break
            free, value, gradient = candidate, candidate_value, candidate_gradient
        return free, capped

    def standard_errors(self, params: SwitchingParameters, score: Score) -> np.ndarray:
        """Of the constrained parameters: square roots of the diagonal of J (-H)^-1 J', H the Hessian
        of the log-likelihood ``score`` in the free vector (NaN where it is not negative definite)."""
        layout = self.layout
        hessian = self.hessian(layout.pack(params), score)
        curvatures, axes = np.linalg.eigh(-0.5 * (hessian + hessian.T))
        if not curvatures.min() > 1e-12 * max(curvatures.max(), 0.0):  # singular or not a maximum
            return np.full(layout.n_parameters, np.nan)
        jacobian = layout.jacobian(params) @ axes
        covariance = (jacobian / curvatures) @ jacobian.T
        return np.sqrt(np.clip(np.diag(covariance), 0.0, None))

    # ---------------------------------------------------- simulation and forecasts
    def simulate(
        self, params: SwitchingParameters, data: SeriesData, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """A series (n, D) and its regimes (n,) for the regressors (n, R) (and transition covariates)
        of ``data`` (its ``y`` unused): the chain starts from the stationary distribution of its
        first matrix, the deviations y - B'x before the first step are 0."""
        regressors = data.regressors
        n, p, d = len(regressors), self.order, self.n_features
        matrices = self.transition_matrices(params, data)
        regimes = kernels.sample_chain(stationary_distribution(matrices[0]), matrices, rng.random(n))
        noise = np.einsum("tab,tb->ta", np.linalg.cholesky(params.covariances)[regimes], rng.standard_normal((n, d)))
        deviations = np.zeros((n + p, d))  # deviations[t + p] is step t's
        for t, (regime, shock) in enumerate(zip(regimes, noise)):
            deviations[t + p] = np.einsum("jab,jb->a", params.ar[regime], deviations[t : t + p][::-1]) + shock
        return np.einsum("tr,trd->td", regressors, params.coef[regimes]) + deviations[p:], regimes

    def forecast(
        self,
        params: SwitchingParameters,
        data: SeriesData,
        futures: list[tuple[np.ndarray, np.ndarray | None]],
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Regime probabilities (H, K), means (H, D) and covariances (H, D, D) of the H values after
        each sequence of the data, given the (regressors (H, R), transition covariates (H, C) or
        None) of its future in ``futures``.

        In expanded state e the future is y_t = sum_j Phi_{j,S_t} y_{t-j} + c_{e,t} + e_t with
        c_{e,t} = B_{S_t}'x_t - sum_j Phi_{j,S_t} B_{S_{t-j}}'x_{t-j}, a Markov jump linear
        system in the lag state [y_t, ..., y_t-p+1] (y_t alone for p = 0) on the expanded chain,
        started from the filtered p(S_T, ..., S_T-p | y); with time-varying transitions the
        moves into the future steps follow their covariates ``future_tvtp`` (H, C).
        """
        p, n_expanded, d = self.order, self.n_expanded, self.n_features
        arguments = self._kernel_arguments(params, data)
        filtered, _ = kernels.forward_filter(**arguments)
        size = max(p, 1) * d
        ar = params.ar[self.digits[:, 0]]  # (E, p, D, D): the lag blocks side by side
        companions = (
            companion_matrices(np.moveaxis(ar, 1, 2).reshape(n_expanded, d, p * d))
            if p
            else np.zeros((n_expanded, d, d))
        )
        shocks = np.zeros((n_expanded, size, size))
        shocks[:, :d, :d] = params.covariances[self.digits[:, 0]]
        out = []
        for (first_row, end), last, (future_regressors, future_tvtp) in zip(
            data.sequences(), arguments["offsets"][1:] - 1, futures
        ):
            horizon = len(future_regressors)
            # c is the residual of a series of zeros, with the sign changed
            regressors = np.concatenate([data.regressors[first_row:end], future_regressors])
            zeros = SeriesData(np.zeros((len(regressors), d)), regressors)
            offsets = np.zeros((horizon, n_expanded, size))
            offsets[:, :, :d] = -self.residuals(params, self.deviations(params, zeros))[-horizon:]
            if params.transition_coef is None:
                matrices = np.broadcast_to(arguments["transition_matrices"], (horizon, n_expanded, n_expanded))
            else:
                matrices = self.expanded_moves(logit_matrices(params.transition_coef, future_tvtp))
            state = data.y[first_row:end][::-1][:p].ravel() if p else np.zeros(d)  # [y_T, ..., y_T-p+1]
            start = filtered[last]
            first, second = known_state_moments(start, state)
            modes, means, covariances = jump_linear_moments(start, first, second, matrices, companions, offsets, shocks)
            out.append((self.regimes(modes), means[:, :d], covariances[:, :d, :d]))
        return out


def _logit_parts(rows: np.ndarray, n_states: int) -> tuple[list[tuple[int, int]], np.ndarray, np.ndarray]:
    """The sequences (first row, end row), first regimes (n_sequences, K) and moves (n, K, K) of
    the rows of :meth:`SwitchingRegression.statistics`."""
    k = n_states
    bounds = np.r_[np.flatnonzero(rows[:, 0]), len(rows)]
    first, moves = rows[bounds[:-1], 1 : 1 + k], rows[:, 1 + k :].reshape(-1, k, k)
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist())), first, moves


def _logit_value(rows: np.ndarray, covariates: np.ndarray, n_states: int, coef: np.ndarray) -> float:
    """The transition part of Q with time-varying P at ``coef``, summed over the sequences of ``rows``
    and their ``covariates`` (each starting from the stationary distribution of its first matrix)."""
    return _logit_terms(rows, covariates, n_states, coef, newton=False)[0]


def _logit_terms(
    rows: np.ndarray, covariates: np.ndarray, n_states: int, coef: np.ndarray, newton: bool = True
) -> tuple[Any, ...]:
    """:func:`_logit_value` and (if ``newton``) the gradient and Hessian of the moves' term
    (:func:`newton_terms`) at ``coef``."""
    sequences, first, moves = _logit_parts(rows, n_states)
    matrices = logit_matrices(coef, covariates)
    value = sum(expected_log_probability(moves[a:b], matrices[a:b], regime) for (a, b), regime in zip(sequences, first))
    return (value, *newton_terms(moves, matrices, covariates)) if newton else (value,)


def _whitening(covariances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """U^-1 (E, D, D) and v (E, D) of covariances = U diag(v) U' (for D = 1: 1 and the variance)."""
    unit, variances = ldl(covariances)
    return np.linalg.inv(unit), variances


def _floored(covariances: np.ndarray, floor: float) -> np.ndarray:
    """The covariances (K, D, D) with their eigenvalues below ``floor`` raised to it."""
    values, vectors = np.linalg.eigh(covariances)
    low = values.min(axis=1) < floor
    if not low.any():
        return covariances
    covariances = covariances.copy()
    raised = vectors[low] * np.maximum(values[low], floor)[:, None, :]
    covariances[low] = raised @ np.swapaxes(vectors[low], 1, 2)
    return covariances


def _linked_rows(data: SeriesData) -> np.ndarray:
    """The rows with a predecessor in their sequence."""
    return np.concatenate([np.arange(first + 1, end) for first, end in data.sequences()])


def _log_density(residuals: np.ndarray, covariances: np.ndarray) -> np.ndarray:
    """log N(residuals[t, e]; 0, covariances[e]), (T, E), for residuals (T, E, d): with
    S = U diag(v) U' and z = U^-1 e, -(d log 2 pi + sum log v + sum z^2 / v) / 2 (for d = 1
    the usual -(log 2 pi + log s2 + e^2 / s2) / 2, exactly)."""
    inverse, variances = _whitening(covariances)
    z = np.einsum("ead,ted->tea", inverse, residuals)
    with np.errstate(over="ignore"):  # a residual far beyond a tiny variance: density 0, log -inf
        return -0.5 * (residuals.shape[2] * LOG_2PI + np.log(variances).sum(axis=1) + (z**2 / variances).sum(axis=2))
