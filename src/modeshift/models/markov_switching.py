"""Markov-switching regression and autoregression (Hamilton 1989; Kim & Nelson 1999).

A regime S_t in {0, ..., K-1} follows a Markov chain with transition matrix
P[i, j] = p(S_t = j | S_{t-1} = i). Given the regimes, a regression switches its
coefficients and, optionally, its variance,

    y_t = x_t' beta_{S_t} + e_t,        e_t ~ N(0, sigma2_{S_t}),

and an autoregression of order p switches the mean it reverts to (Hamilton 1989),

    y_t - x_t' beta_{S_t} = sum_{i=1..p} phi_{i, S_t} (y_{t-i} - x_{t-i}' beta_{S_{t-i}}) + e_t,

where x_t holds the trend columns (a constant for ``trend="c"``, so that beta is the
regime's mean mu_{S_t}) and the exogenous regressors. An observation of the
autoregression depends on p + 1 regimes, so the filter runs on the expanded chain
(S_t, ..., S_{t-p}) with K^(p+1) states, whose transition matrix is built from the
K x K one. As in statsmodels, the first p observations are conditioned on and the
chain starts from its stationary distribution. Filtering and smoothing are
:mod:`modeshift.kernels` recursions on that chain.

Fitting is maximum likelihood. Expectation-conditional-maximisation (closed-form
weighted least squares for the coefficients given phi, for phi given the
coefficients, then the variances; the joint step over mu and phi has no closed form)
runs from several data-driven and random starts. The two best are polished by BFGS with
the exact gradient (Fisher's identity: the posterior expectation of the complete-data
score) on logits of the transition rows and log variances, then by Newton steps on a
finite-difference Hessian of that gradient, which also gives standard errors. Regimes
are finally ordered by their first switching coefficient (for ``trend="c"``: ascending
intercept), else by variance, else by their first switching autoregressive coefficient.

Examples
--------
>>> from modeshift import MarkovAutoregression
>>> from modeshift.datasets import load_hamilton_gnp
>>> gnp = load_hamilton_gnp()["rgnp_growth"]
>>> model = MarkovAutoregression(n_states=2, order=4, switching_ar=False, random_state=0).fit(gnp)
>>> round(model.log_likelihood_, 3)
-181.263
>>> model.means_.round(2)  # recession, expansion (percent per quarter)
array([-0.36,  1.16])
>>> model.expected_durations_.round(1)  # quarters
array([ 4.1, 10.4])
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import numba
import numpy as np
import pandas as pd
from scipy import optimize

from modeshift import kernels
from modeshift.data import as_sequences, check_array, check_probabilities
from modeshift.models.base import Model, NotFittedError
from modeshift.models import em
from modeshift.models.em import Report
from modeshift.transitions import stationary_distribution

__all__ = ["MarkovAutoregression", "MarkovRegression"]

TRENDS = {"n": (), "c": ("const",), "t": ("trend",), "ct": ("const", "trend")}
_N_POLISHED = 2  # EM results polished to the maximum: EM's ranking is not always the final one


# --------------------------------------------------------------------------- engine
@dataclass(frozen=True)
class _Parameters:
    """A point of the parameter space: transmat (K, K), coef (K, R), ar (K, p), variances (K,)."""

    transmat: np.ndarray
    coef: np.ndarray
    ar: np.ndarray
    variances: np.ndarray


@dataclass(frozen=True)
class _Data:
    """A series y (n,) and its regressors (n, R): the trend columns, then the exogenous ones."""

    y: np.ndarray
    regressors: np.ndarray


@dataclass(frozen=True)
class _Posterior:
    """What the E-step gives the M-step and the gradient."""

    log_likelihood: float
    posteriors: np.ndarray  # (T, E): p(expanded state at step t | y)
    transitions: np.ndarray  # (K, K): expected number of i -> j moves, sample and pre-sample
    first_regime: np.ndarray  # (K,): p(regime at the first pre-sample step | y)
    residuals: np.ndarray  # (T, E): e_t under every expanded state
    deviations: np.ndarray  # (p+1, T, E): y - x'beta at lag j under the lag-j regime


class _Layout:
    """Which parameters are free, and the likelihood, E-step, M-step and gradient over them.

    The free vector follows statsmodels' parameter order: transition logits (target
    regime outer, source regime inner, the last target the reference), coefficients
    (column outer, regime inner where switching), log variances, autoregressive
    coefficients (lag outer, regime inner where switching).
    """

    def __init__(
        self,
        n_states: int,
        order: int,
        switching_coef: Sequence[bool],
        switching_ar: Sequence[bool],
        switching_variance: bool,
    ):
        self.n_states, self.order = n_states, order
        self.n_expanded = n_states ** (order + 1)
        # digits[e] = (S_t, S_{t-1}, ..., S_{t-p}) of expanded state e, S_t most significant
        self.digits = np.array(list(np.ndindex(*(n_states,) * (order + 1))), dtype=np.int64)
        self.indicators = np.stack([np.eye(n_states)[self.digits[:, j]] for j in range(order + 1)])  # (p+1, E, K)
        self.coef_map = _sharing_map(n_states, switching_coef)
        self.ar_map = _sharing_map(n_states, switching_ar)
        self.variance_map = np.eye(n_states) if switching_variance else np.ones((n_states, 1))
        self.sizes = (
            n_states * (n_states - 1),
            self.coef_map.shape[1],
            self.variance_map.shape[1],
            self.ar_map.shape[1],
        )
        # expanded move e -> f: f's older digits are e's newer ones; probability P[S_{t-1}(e), S_t(f)]
        previous = np.repeat(np.arange(self.n_expanded), n_states)
        newest = np.tile(np.arange(n_states), self.n_expanded)
        self.moves = (previous, newest * n_states**order + previous // n_states, previous // n_states**order, newest)

    @property
    def n_parameters(self) -> int:
        return sum(self.sizes)

    # ---------------------------------------------------------------- free vector
    def pack(self, params: _Parameters) -> np.ndarray:
        probabilities = np.clip(params.transmat, 1e-12, None)
        logits = np.log(probabilities[:, :-1]) - np.log(probabilities[:, -1:])
        return np.concatenate(
            [
                logits.T.ravel(),
                _free_values(self.coef_map, params.coef),
                _free_values(self.variance_map, np.log(params.variances)),
                _free_values(self.ar_map, params.ar),
            ]
        )

    def unpack(self, free: np.ndarray) -> _Parameters:
        k = self.n_states
        logits, coef, log_variances, ar = np.split(free, np.cumsum(self.sizes)[:-1])
        logits = np.c_[logits.reshape(k - 1, k).T, np.zeros(k)]
        transmat = np.exp(logits - logits.max(axis=1, keepdims=True))
        return _Parameters(
            transmat=transmat / transmat.sum(axis=1, keepdims=True),
            coef=(self.coef_map @ coef).reshape(k, -1),
            ar=(self.ar_map @ ar).reshape(k, -1),
            variances=np.exp(self.variance_map @ log_variances),
        )

    def constrained(self, params: _Parameters) -> np.ndarray:
        """The parameters in the free vector's order, with probabilities P[i, j] (j < K-1) and variances."""
        return np.concatenate(
            [
                params.transmat[:, :-1].T.ravel(),
                _free_values(self.coef_map, params.coef),
                _free_values(self.variance_map, params.variances),
                _free_values(self.ar_map, params.ar),
            ]
        )

    def jacobian(self, params: _Parameters) -> np.ndarray:
        """d constrained / d free: block diagonal (softmax rows, identity, variances, identity)."""
        k = self.n_states
        jacobian = np.eye(self.n_parameters)
        for i in range(k):  # P[i, j], j < K-1, sits at index j * K + i, as does logit[i, j]
            where = np.arange(k - 1) * k + i
            row = params.transmat[i, :-1]
            jacobian[np.ix_(where, where)] = np.diag(row) - np.outer(row, row)
        start = self.sizes[0] + self.sizes[1]
        variances = _free_values(self.variance_map, params.variances)
        jacobian[start : start + len(variances), start : start + len(variances)] = np.diag(variances)
        return jacobian

    # ------------------------------------------------------------- expanded chain
    def expanded_chain(self, transmat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Initial probabilities (E,) and transition matrix (E, E) of (S_t, ..., S_{t-p})."""
        k, p = self.n_states, self.order
        initial = stationary_distribution(transmat)  # of the earliest regime, S_{t-p}
        for m in range(p):  # prepend the next regime
            newest = np.arange(k ** (m + 1)) // k**m
            initial = (transmat[newest].T * initial[None, :]).ravel()
        source, target, regime_before, regime_after = self.moves
        matrix = np.zeros((self.n_expanded, self.n_expanded))
        matrix[source, target] = transmat[regime_before, regime_after]
        return initial, matrix

    # ----------------------------------------------------------------- residuals
    def deviations(self, params: _Parameters, data: _Data) -> np.ndarray:
        """(p+1, T, E): entry [j, t, e] is y - x'beta at sample step t - j under regime digit j of e."""
        p, n = self.order, len(data.y)
        deviation = data.y[None, :] - params.coef @ data.regressors.T  # (K, n)
        return np.stack([deviation[self.digits[:, j], p - j : n - j].T for j in range(p + 1)])

    def residuals(self, params: _Parameters, deviations: np.ndarray) -> np.ndarray:
        return deviations[0] - np.einsum("jte,ej->te", deviations[1:], params.ar[self.digits[:, 0]])

    def log_densities(self, params: _Parameters, residuals: np.ndarray) -> np.ndarray:
        variances = params.variances[self.digits[:, 0]]
        return np.ascontiguousarray(-0.5 * (np.log(2.0 * np.pi * variances) + residuals**2 / variances))

    def coef_design(self, params: _Parameters, data: _Data) -> tuple[np.ndarray, np.ndarray]:
        """With phi fixed the residual is ``target - design @ free coefficients``: (T, E) and (T, E, n_coef)."""
        p, n = self.order, len(data.y)
        ar = params.ar[self.digits[:, 0]]  # (E, p)
        y_lags = np.stack([data.y[p - j : n - j] for j in range(p + 1)])  # (p+1, T)
        x_lags = np.stack([data.regressors[p - j : n - j] for j in range(p + 1)])  # (p+1, T, R)
        target = y_lags[0][:, None] - y_lags[1:].T @ ar.T
        # d(x_t'beta_{S_t} - sum_j phi_j x_{t-j}'beta_{S_{t-j}}) / d beta_k[c]
        lag_weights = np.concatenate([self.indicators[:1], -ar.T[:, :, None] * self.indicators[1:]])  # (p+1, E, K)
        design = np.einsum("jek,jtc->tekc", lag_weights, x_lags)
        return target, design.reshape(*target.shape, -1) @ self.coef_map

    def ar_design(self, deviations: np.ndarray) -> np.ndarray:
        """With the coefficients fixed the residual is ``deviations[0] - design @ free phi``; (T, E, n_ar)."""
        design = np.einsum("ek,jte->tekj", self.indicators[0], deviations[1:])
        return design.reshape(*deviations.shape[1:], -1) @ self.ar_map

    # -------------------------------------------------------------------- E-step
    def e_step(self, params: _Parameters, data: _Data) -> _Posterior:
        deviations = self.deviations(params, data)
        residuals = self.residuals(params, deviations)
        initial, matrix = self.expanded_chain(params.transmat)
        log_lik, posteriors, pairs = kernels.forward_backward(
            log_likelihoods=self.log_densities(params, residuals),
            offsets=np.array([0, len(residuals)], dtype=np.int64),
            initial_probs=initial,
            transition_matrices=matrix[None],
        )
        current = self.indicators[0]
        transitions = current.T @ pairs @ current
        first = posteriors[0]
        for j in range(self.order):  # the moves inside the first expanded state
            transitions += (self.indicators[j + 1].T * first) @ self.indicators[j]
        return _Posterior(
            float(log_lik[0]), posteriors, transitions, first @ self.indicators[-1], residuals, deviations
        )

    def hard_posterior(self, path: np.ndarray) -> _Posterior:
        """All mass on one regime path (n,), with one pseudo-count per transition: a start for the M-step."""
        k, p, n = self.n_states, self.order, len(path)
        expanded = sum(path[p - j : n - j] * k ** (p - j) for j in range(p + 1))
        counts = 1.0 + np.eye(k)[path[:-1]].T @ np.eye(k)[path[1:]]
        empty = np.empty((0, 0))
        return _Posterior(np.nan, np.eye(self.n_expanded)[expanded], counts, np.eye(k)[path[0]], empty, empty)

    # -------------------------------------------------------------------- M-step
    def m_step(self, params: _Parameters, posterior: _Posterior, data: _Data, variance_floor: float) -> _Parameters:
        """Conditional maximisations in turn: P; coefficients given phi; phi given coefficients; variances.

        The P step leaves out the stationary start distribution's dependence on P (the
        usual approximation); the polish then maximises the exact likelihood.
        """
        counts = posterior.transitions
        totals = counts.sum(axis=1, keepdims=True)
        transmat = np.where(totals > 0, counts / np.where(totals > 0, totals, 1.0), params.transmat)
        params = replace(params, transmat=transmat)
        gamma = posterior.posteriors
        if self.sizes[1]:
            target, design = self.coef_design(params, data)
            free = _weighted_least_squares(target, design, gamma / params.variances[self.digits[:, 0]])
            params = replace(params, coef=(self.coef_map @ free).reshape(self.n_states, -1))
        deviations = self.deviations(params, data)
        if self.sizes[3]:
            weights = gamma / params.variances[self.digits[:, 0]]
            free = _weighted_least_squares(deviations[0], self.ar_design(deviations), weights)
            params = replace(params, ar=(self.ar_map @ free).reshape(self.n_states, -1))
        squares = ((gamma * self.residuals(params, deviations) ** 2) @ self.indicators[0]).sum(axis=0)
        masses = (gamma @ self.indicators[0]).sum(axis=0)
        per_free = (squares @ self.variance_map) / np.maximum(masses @ self.variance_map, 1e-300)
        return replace(params, variances=np.maximum(self.variance_map @ per_free, variance_floor))

    # ---------------------------------------------------------------- likelihood
    def log_likelihood(self, params: _Parameters, data: _Data) -> float:
        initial, matrix = self.expanded_chain(params.transmat)
        residuals = self.residuals(params, self.deviations(params, data))
        return float(
            kernels.log_likelihood(
                log_likelihoods=self.log_densities(params, residuals),
                offsets=np.array([0, len(residuals)], dtype=np.int64),
                initial_probs=initial,
                transition_matrices=matrix[None],
            )[0]
        )

    def value_and_gradient(self, free: np.ndarray, data: _Data) -> tuple[float, np.ndarray]:
        """Log-likelihood and its gradient in the free parameters.

        By Fisher's identity the gradient of log p(y) is the posterior mean of the gradient of
        log pi(S_first) + sum log P[S_{t-1}, S_t] + sum log N(e_t; 0, sigma2_{S_t}).
        """
        params = self.unpack(free)
        posterior = self.e_step(params, data)
        if not np.isfinite(posterior.log_likelihood):
            return -np.inf, np.zeros_like(free)
        k, transmat, gamma = self.n_states, params.transmat, posterior.posteriors
        counts = posterior.transitions
        # d log P[i, j] / d logit[i, m] = 1[j = m] - P[i, m]
        transition_grad = counts[:, :-1] - transmat[:, :-1] * counts.sum(axis=1, keepdims=True)
        # d pi = pi dP Z, with Z = (I - P + 1 pi)^-1 the chain's fundamental matrix
        stationary = stationary_distribution(transmat)
        fundamental = np.linalg.inv(np.eye(k) - transmat + stationary[None, :])
        ratio = np.divide(posterior.first_regime, stationary, out=np.zeros(k), where=stationary > 0)
        v = fundamental @ ratio
        transition_grad += stationary[:, None] * transmat[:, :-1] * (v[None, :-1] - (transmat @ v)[:, None])

        residuals = posterior.residuals
        weighted = gamma * residuals / params.variances[self.digits[:, 0]]  # -(d log f / d residual) gamma
        variance_grad = ((0.5 * (weighted * residuals - gamma)) @ self.indicators[0]).sum(axis=0)
        _, coef_design = self.coef_design(params, data)
        gradient = np.concatenate(
            [
                transition_grad.T.ravel(),
                np.einsum("tef,te->f", coef_design, weighted),
                variance_grad @ self.variance_map,
                np.einsum("tef,te->f", self.ar_design(posterior.deviations), weighted),
            ]
        )
        return posterior.log_likelihood, gradient

    def hessian(self, free: np.ndarray, data: _Data) -> np.ndarray:
        """Central differences of the exact gradient, symmetrised."""
        n = len(free)
        hessian = np.empty((n, n))
        for i in range(n):
            shift = np.zeros(n)
            shift[i] = 1e-5 * max(1.0, abs(free[i]))
            upper = self.value_and_gradient(free + shift, data)[1]
            lower = self.value_and_gradient(free - shift, data)[1]
            hessian[i] = (upper - lower) / (2 * shift[i])
        return 0.5 * (hessian + hessian.T)


def _sharing_map(n_states: int, switching: Sequence[bool]) -> np.ndarray:
    """0/1 matrix (K * n_columns, n_free) with ``values.ravel() = map @ free`` for values (K, n_columns).

    Free values run column by column: one per regime for a switching column, one shared otherwise.
    """
    n_columns = len(switching)
    columns = []
    for c, switches in enumerate(switching):
        for regimes in [[k] for k in range(n_states)] if switches else [list(range(n_states))]:
            column = np.zeros(n_states * n_columns)
            column[[k * n_columns + c for k in regimes]] = 1.0
            columns.append(column)
    return np.array(columns).T if columns else np.zeros((n_states * n_columns, 0))


def _free_values(sharing_map: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Inverse of ``_sharing_map``: the free values (shared ones averaged over regimes)."""
    return (sharing_map.T @ np.ravel(values)) / np.maximum(sharing_map.sum(axis=0), 1.0)


def _weighted_least_squares(target: np.ndarray, design: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """argmin_b sum weights (target - design @ b)^2 over all (t, e); ``design`` is (T, E, n)."""
    matrix = design.reshape(-1, design.shape[-1])
    weighted = matrix * weights.reshape(-1, 1)
    # normal equations: a handful of columns; lstsq copes with a regime that has no weight
    return np.linalg.lstsq(weighted.T @ matrix, weighted.T @ target.ravel(), rcond=None)[0]


def _switching_flags(value: bool | Sequence[bool], length: int, name: str) -> tuple[bool, ...]:
    if isinstance(value, (bool, np.bool_)):
        return (bool(value),) * length
    flags = tuple(bool(v) for v in value)
    if len(flags) != length:
        raise ValueError(f"{name} must be a bool or a sequence of {length} bools, got {value!r}")
    return flags


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run the kernels on the calling thread only (numba's setting is per thread).

    They parallelise over sequences; for the one short series a fit filters hundreds
    of times, waking the thread pool costs more than it saves, the more so on a busy machine.
    """
    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(previous)


def _moving_average(x: np.ndarray, width: int) -> np.ndarray:
    padded = np.pad(x, (width // 2, width - 1 - width // 2), mode="edge")
    return np.convolve(padded, np.ones(width) / width, mode="valid")


# --------------------------------------------------------------------------- models
class _MarkovSwitching(Model):
    """What Markov-switching regressions and autoregressions share: fitting, inference, persistence."""

    n_states: int
    trend: str
    switching_trend: bool | Sequence[bool]
    switching_exog: bool | Sequence[bool]
    switching_variance: bool
    n_iter_em: int
    n_restarts: int
    max_iter: int
    tol: float
    random_state: int | np.random.Generator | None
    verbose: bool
    callback: Callable[[int, float], Any] | None

    def _store_common(
        self,
        n_states: int,
        trend: str,
        switching_trend: bool | Sequence[bool],
        switching_exog: bool | Sequence[bool],
        switching_variance: bool,
        n_iter_em: int,
        n_restarts: int,
        max_iter: int,
        tol: float,
        random_state: int | np.random.Generator | None,
        verbose: bool,
        callback: Callable[[int, float], Any] | None,
    ) -> None:
        if int(n_states) < 1:
            raise ValueError(f"n_states must be a positive integer, got {n_states!r}")
        if trend not in TRENDS:
            raise ValueError(f"trend must be one of {list(TRENDS)}, got {trend!r}")
        if int(n_restarts) < 1:
            raise ValueError(f"n_restarts must be a positive integer, got {n_restarts!r}")
        self.n_states = int(n_states)
        self.trend = trend
        self.switching_trend = switching_trend
        self.switching_exog = switching_exog
        self.switching_variance = bool(switching_variance)
        self.n_iter_em = int(n_iter_em)
        self.n_restarts = int(n_restarts)
        self.max_iter = int(max_iter)
        self.tol = float(tol)
        self.random_state = random_state
        self.verbose = verbose
        self.callback = callback

    @property
    def _order(self) -> int:
        return 0

    @property
    def _switching_ar(self) -> tuple[bool, ...]:
        return ()

    # ----------------------------------------------------------------------- data
    def _data(self, y: Any, exog: Any, n_exog: int | None) -> tuple[_Data, list[str]]:
        """Validate y (one series, no NaN, longer than the order) and exog; build the regressors."""
        name = type(self).__name__
        seqs = as_sequences(y).require(allow_missing=False, min_length=self._order + 1, n_features=1, model=name)
        if seqs.n_sequences != 1:
            raise ValueError(f"{name} takes one series, got {seqs.n_sequences} sequences")
        values = seqs.values[:, 0]
        n = len(values)
        columns = {"const": np.ones(n), "trend": np.arange(1.0, n + 1.0)}
        trend = np.column_stack([columns[c] for c in TRENDS[self.trend]]) if self.trend != "n" else np.empty((n, 0))
        if exog is None:
            exog_values, names = np.empty((n, 0)), []
        else:
            names = [str(c) for c in exog.columns] if isinstance(exog, pd.DataFrame) else None
            exog_values = np.asarray(exog, dtype=np.float64)
            if exog_values.ndim == 1:
                exog_values = exog_values[:, None]
            if exog_values.ndim != 2:
                raise ValueError(f"exog must be a 1-D or 2-D array, got shape {exog_values.shape}")
            if len(exog_values) != n:
                raise ValueError(f"exog has {len(exog_values)} rows but y has {n} time steps; they must match")
            bad = np.argwhere(~np.isfinite(exog_values))
            if bad.size:
                row, column = bad[0]
                raise ValueError(f"exog row {row}, column {column}: value {exog_values[row, column]} is not finite")
            names = names or [f"x{c + 1}" for c in range(exog_values.shape[1])]
        if n_exog is not None and exog_values.shape[1] != n_exog:
            raise ValueError(f"this model was fitted with {n_exog} exog column(s), got {exog_values.shape[1]}")
        return _Data(values, np.ascontiguousarray(np.column_stack([trend, exog_values]))), names

    def _layout(self, n_exog: int) -> _Layout:
        switching_coef = _switching_flags(self.switching_trend, len(TRENDS[self.trend]), "switching_trend")
        switching_coef += _switching_flags(self.switching_exog, n_exog, "switching_exog")
        return _Layout(self.n_states, self._order, switching_coef, self._switching_ar, self.switching_variance)

    # -------------------------------------------------------------------- fitting
    def fit(self, y: Any, exog: Any = None) -> _MarkovSwitching:
        """Maximum-likelihood estimates (EM from several starts, then a quasi-Newton polish); returns ``self``.

        Parameters
        ----------
        y : (n_steps,) array-like
            The series; with an autoregression of order p, its first p values are conditioned on.
        exog : (n_steps,) or (n_steps, n_exog) array-like, optional
            Exogenous regressors, one row per value of ``y`` (a data frame's column names name them).
        """
        data, names = self._data(y, exog, None)
        layout = self._layout(data.regressors.shape[1] - len(TRENDS[self.trend]))
        with _one_thread():
            self._fit(layout, data)
        self.exog_names_ = names
        return self

    def _fit(self, layout: _Layout, data: _Data) -> None:
        variance_floor = 1e-8 * max(float(np.var(data.y)), 1e-12)
        rng = np.random.default_rng(self.random_state)
        paths = self._start_paths(data, rng)
        with em.monitor(self.verbose, self.callback) as monitor:
            starts = [
                self._em(
                    layout,
                    data,
                    path,
                    variance_floor,
                    monitor.task(f"{type(self).__name__} K={self.n_states} start {i + 1}/{len(paths)}", self.n_iter_em),
                )
                for i, path in enumerate(paths)
            ]
        starts.sort(key=lambda start: -start[0] if np.isfinite(start[0]) else np.inf)
        polished = [self._polish(layout, data, layout.pack(params)) for _, params in starts[:_N_POLISHED]]
        values = [layout.value_and_gradient(free, data)[0] for free in polished]
        params = self._ordered(layout.unpack(polished[int(np.argmax(values))]))
        self._set_parameters(params, len(TRENDS[self.trend]))
        free = layout.pack(params)
        log_lik, gradient = layout.value_and_gradient(free, data)
        self.log_likelihood_ = log_lik
        self.gradient_norm_ = float(np.abs(gradient).max(initial=0.0))
        self.converged_ = bool(np.isfinite(log_lik) and self.gradient_norm_ < self.tol)
        self.standard_errors_ = _standard_errors(layout, params, layout.hessian(free, data))
        self.smoothed_probabilities_ = self._marginal(layout, layout.e_step(params, data).posteriors)
        self.filtered_probabilities_ = self._filtered(layout, params, data)

    def _start_paths(self, data: _Data, rng: np.random.Generator) -> list[np.ndarray]:
        """Regime paths to start EM from: quantile bands of the level (raw and smoothed), of the
        local spread when the variance switches, then random persistent paths."""
        k, n = self.n_states, len(data.y)
        if k == 1:
            return [np.zeros(n, dtype=np.int64)]
        width = max(3, n // 25)
        fitted = np.linalg.lstsq(data.regressors, data.y, rcond=None)[0] if data.regressors.shape[1] else 0.0
        keys = [data.y, _moving_average(data.y, width)]
        if self.switching_variance:
            keys.append(_moving_average((data.y - data.regressors @ fitted) ** 2, width))
        quantiles = np.arange(1, k) / k
        paths = [np.searchsorted(np.quantile(key, quantiles), key) for key in keys]
        while len(paths) < self.n_restarts:
            stay = rng.uniform(0.8, 0.98)
            path = np.empty(n, dtype=np.int64)
            path[0] = rng.integers(k)
            for t in range(1, n):
                path[t] = (path[t - 1] + rng.integers(1, k)) % k if rng.random() > stay else path[t - 1]
            paths.append(path)
        return paths[: self.n_restarts]

    def _em(
        self, layout: _Layout, data: _Data, path: np.ndarray, variance_floor: float, report: Report
    ) -> tuple[float, _Parameters]:
        k = self.n_states
        params = _Parameters(
            transmat=np.full((k, k), 1.0 / k),
            coef=np.zeros((k, data.regressors.shape[1])),
            ar=np.zeros((k, self._order)),
            variances=np.full(k, max(float(np.var(data.y)), variance_floor)),
        )
        start = layout.hard_posterior(path)
        for _ in range(2):  # the coefficients, then phi, then the coefficients again given phi
            params = layout.m_step(params, start, data, variance_floor)
        posterior = layout.e_step(params, data)
        for iteration in range(self.n_iter_em):
            candidate = layout.m_step(params, posterior, data, variance_floor)
            update = layout.e_step(candidate, data)
            if not update.log_likelihood > posterior.log_likelihood:
                break
            improvement = update.log_likelihood - posterior.log_likelihood
            params, posterior = candidate, update
            report(iteration + 1, posterior.log_likelihood)
            if improvement < 1e-6 * (1.0 + abs(update.log_likelihood)):
                break
        return posterior.log_likelihood, params

    def _polish(self, layout: _Layout, data: _Data, free: np.ndarray) -> np.ndarray:
        """BFGS on the exact gradient, then Newton steps while they raise the likelihood."""

        def negative(x: np.ndarray) -> tuple[float, np.ndarray]:
            value, gradient = layout.value_and_gradient(x, data)
            return (-value, -gradient) if np.isfinite(value) else (np.inf, np.zeros_like(x))

        if len(free) == 0:
            return free
        result = optimize.minimize(
            negative, free, jac=True, method="BFGS", options={"gtol": 1e-3 * self.tol, "maxiter": self.max_iter}
        )
        free = result.x if np.isfinite(result.fun) else free
        value, gradient = layout.value_and_gradient(free, data)
        for _ in range(5):
            if np.abs(gradient).max() < 1e-3 * self.tol:
                break
            hessian = layout.hessian(free, data)
            if not np.all(np.linalg.eigvalsh(hessian) < 0):
                break
            candidate = free - np.linalg.solve(hessian, gradient)
            candidate_value, candidate_gradient = layout.value_and_gradient(candidate, data)
            if not candidate_value >= value - 1e-10 * abs(value):
                break
            free, value, gradient = candidate, candidate_value, candidate_gradient
        return free

    def _ordered(self, params: _Parameters) -> _Parameters:
        """Regimes sorted by the first switching coefficient, else variance, else autoregression."""
        spread = [params.coef, params.variances[:, None], params.ar]
        key = next((a[:, c] for a in spread for c in range(a.shape[1]) if np.ptp(a[:, c]) > 0), None)
        if key is None:
            return params
        order = np.argsort(key, kind="stable")
        return _Parameters(
            params.transmat[np.ix_(order, order)], params.coef[order], params.ar[order], params.variances[order]
        )

    # ------------------------------------------------------------------ parameters
    def _set_parameters(self, params: _Parameters, n_trend: int) -> None:
        self.transmat_ = params.transmat
        self.trend_ = params.coef[:, :n_trend]
        self.exog_coef_ = params.coef[:, n_trend:]
        self.variances_ = params.variances
        if self._order:
            self.ar_coef_ = params.ar

    def _parameters(self) -> _Parameters:
        """The current parameters, checked, whether fitted or set by hand."""
        required = ["transmat_", "trend_", "variances_"] + (["ar_coef_"] if self._order else [])
        missing = [name for name in required if name not in self.__dict__]
        if missing:
            raise NotFittedError(f"this {type(self).__name__} has no {', '.join(missing)}: call fit, or set them")
        k, n_trend = self.n_states, len(TRENDS[self.trend])

        def per_regime(name: str, columns: int | None) -> np.ndarray:
            value = np.asarray(self.__dict__.get(name, np.empty((k, 0))), dtype=np.float64)
            return check_array(name, value[:, None] if value.ndim == 1 else value, (k, columns))

        variances = check_array("variances_", self.variances_, (k,))
        if (variances <= 0).any():
            raise ValueError(f"variances_ must be positive, got {variances}")
        return _Parameters(
            transmat=check_probabilities("transmat_", self.transmat_, (k, k)),
            coef=np.column_stack([per_regime("trend_", n_trend), per_regime("exog_coef_", None)]),
            ar=per_regime("ar_coef_", self._order),
            variances=variances,
        )

    def _prepare(self, y: Any, exog: Any) -> tuple[_Layout, _Parameters, _Data]:
        params = self._parameters()
        n_exog = params.coef.shape[1] - len(TRENDS[self.trend])
        data, _ = self._data(y, exog, n_exog)
        return self._layout(n_exog), params, data

    @property
    def means_(self) -> np.ndarray:
        """The intercept of each regime, (K,) (zeros when the trend has no constant)."""
        params = self._parameters()
        return params.coef[:, 0] if "c" in self.trend else np.zeros(self.n_states)

    @property
    def startprob_(self) -> np.ndarray:
        """Distribution of the regime at the first (pre-sample) step: the stationary one of ``transmat_``."""
        return stationary_distribution(self._parameters().transmat)

    @property
    def expected_durations_(self) -> np.ndarray:
        """Expected number of steps spent in each regime once entered, 1 / (1 - P[k, k])."""
        with np.errstate(divide="ignore"):
            return 1.0 / (1.0 - np.diag(self._parameters().transmat))

    @property
    def expected_durations(self) -> np.ndarray:
        """Same as ``expected_durations_`` (statsmodels' name)."""
        return self.expected_durations_

    @property
    def n_parameters(self) -> int:
        """Number of free parameters: K(K-1) transition probabilities, coefficients, variances, phi."""
        params = self._parameters()
        return self._layout(params.coef.shape[1] - len(TRENDS[self.trend])).n_parameters

    # ------------------------------------------------------------------- inference
    def score(self, y: Any, exog: Any = None) -> float:
        """Log-likelihood of ``y`` (given its first ``order`` values) under the current parameters."""
        layout, params, data = self._prepare(y, exog)
        return layout.log_likelihood(params, data)

    def predict_proba(self, y: Any, exog: Any = None, smoothed: bool = True) -> np.ndarray:
        """Regime probabilities per step after the first ``order``: p(S_t | all y) or, with
        ``smoothed=False``, the filtered p(S_t | y up to t); (n_steps - order, K)."""
        layout, params, data = self._prepare(y, exog)
        if not smoothed:
            return self._filtered(layout, params, data)
        posterior = layout.e_step(params, data)
        if not np.isfinite(posterior.log_likelihood):
            raise ValueError("the series has zero probability under the current parameters")
        return self._marginal(layout, posterior.posteriors)

    def predict(self, y: Any, exog: Any = None) -> np.ndarray:
        """The most probable regime at each step after the first ``order`` (argmax of the smoothed probabilities)."""
        return np.argmax(self.predict_proba(y, exog), axis=1)

    def decode(self, y: Any, exog: Any = None) -> tuple[float, np.ndarray]:
        """The most probable regime path (Viterbi) after the first ``order`` steps, and log p(y, path)."""
        layout, params, data = self._prepare(y, exog)
        initial, matrix = layout.expanded_chain(params.transmat)
        residuals = layout.residuals(params, layout.deviations(params, data))
        with np.errstate(divide="ignore"):
            path, log_prob = kernels.viterbi(
                log_likelihoods=layout.log_densities(params, residuals),
                offsets=np.array([0, len(residuals)], dtype=np.int64),
                log_initial=np.log(initial),
                log_transitions=np.log(matrix)[None],
            )
        return float(log_prob[0]), path // self.n_states**self._order

    def _marginal(self, layout: _Layout, posteriors: np.ndarray) -> np.ndarray:
        return posteriors @ layout.indicators[0]

    def _filtered(self, layout: _Layout, params: _Parameters, data: _Data) -> np.ndarray:
        initial, matrix = layout.expanded_chain(params.transmat)
        residuals = layout.residuals(params, layout.deviations(params, data))
        filtered, _ = kernels.forward_filter(
            log_likelihoods=layout.log_densities(params, residuals),
            offsets=np.array([0, len(residuals)], dtype=np.int64),
            initial_probs=initial,
            transition_matrices=matrix[None],
        )
        return self._marginal(layout, filtered)

    # ------------------------------------------------------------ model selection
    def aic(self, y: Any = None, exog: Any = None) -> float:
        """-2 log-likelihood + 2 n_parameters (of the fitted series when ``y`` is not given)."""
        log_lik = self.log_likelihood_ if y is None else self.score(y, exog)
        return -2.0 * log_lik + 2.0 * self.n_parameters

    def bic(self, y: Any = None, exog: Any = None) -> float:
        """-2 log-likelihood + n_parameters log(n_steps - order) (of the fitted series when ``y`` is not given)."""
        if y is None:
            log_lik, n_steps = self.log_likelihood_, len(self.smoothed_probabilities_)
        else:
            log_lik, n_steps = self.score(y, exog), len(as_sequences(y).values) - self._order
        return -2.0 * log_lik + self.n_parameters * np.log(n_steps)

    def summary(self) -> pd.DataFrame:
        """Parameter estimates and standard errors (inverse observed information), statsmodels' names and order."""
        params = self._parameters()
        n_trend = len(TRENDS[self.trend])
        layout = self._layout(params.coef.shape[1] - n_trend)
        errors = self.__dict__.get("standard_errors_")
        return pd.DataFrame(
            {
                "estimate": layout.constrained(params),
                "std_err": np.full(layout.n_parameters, np.nan) if errors is None else errors,
            },
            index=self._parameter_names(params.coef.shape[1] - n_trend),
        )

    def _parameter_names(self, n_exog: int) -> list[str]:
        k = self.n_states
        names = [f"p[{i}->{j}]" for j in range(k - 1) for i in range(k)]
        columns = list(TRENDS[self.trend]) + list(
            self.__dict__.get("exog_names_") or [f"x{c + 1}" for c in range(n_exog)]
        )
        switching = _switching_flags(self.switching_trend, len(TRENDS[self.trend]), "switching_trend")
        switching += _switching_flags(self.switching_exog, n_exog, "switching_exog")
        names += [f"{c}[{i}]" if s else c for c, s in zip(columns, switching) for i in (range(k) if s else [0])]
        names += [f"sigma2[{i}]" for i in range(k)] if self.switching_variance else ["sigma2"]
        lags = [f"ar.L{j + 1}" for j in range(self._order)]
        names += [f"{c}[{i}]" if s else c for c, s in zip(lags, self._switching_ar) for i in (range(k) if s else [0])]
        return names

    # ---------------------------------------------------------------- persistence
    def _learned_arrays(self) -> dict[str, np.ndarray]:
        self._parameters()
        names = [
            "transmat_",
            "trend_",
            "exog_coef_",
            "variances_",
            "ar_coef_",
            "standard_errors_",
            "filtered_probabilities_",
            "smoothed_probabilities_",
        ]
        return {name: np.asarray(self.__dict__[name]) for name in names if name in self.__dict__}

    def _learned_attributes(self) -> dict[str, Any]:
        names = ("log_likelihood_", "converged_", "gradient_norm_", "exog_names_")
        return {name: self.__dict__[name] for name in names if name in self.__dict__}

    def _restore(self, arrays: dict[str, np.ndarray], attributes: dict[str, Any]) -> None:
        for name, value in {**arrays, **attributes}.items():
            setattr(self, name, value)
        self._parameters()


def _standard_errors(layout: _Layout, params: _Parameters, hessian: np.ndarray) -> np.ndarray:
    """Square roots of the diagonal of J (-H)^-1 J' (NaN where the Hessian is not negative definite)."""
    if not np.all(np.linalg.eigvalsh(hessian) < 0):
        return np.full(layout.n_parameters, np.nan)
    jacobian = layout.jacobian(params)
    covariance = jacobian @ np.linalg.inv(-hessian) @ jacobian.T
    return np.sqrt(np.clip(np.diag(covariance), 0.0, None))


class MarkovRegression(_MarkovSwitching):
    """A regression whose coefficients (and optionally variance) switch with a hidden Markov regime.

        y_t = x_t' beta_{S_t} + e_t,   e_t ~ N(0, sigma2_{S_t}),   p(S_t = j | S_{t-1} = i) = transmat_[i, j]

    statsmodels' ``MarkovRegression`` (Kim & Nelson 1999), fit by maximum likelihood.

    Parameters
    ----------
    n_states : int
        Number of regimes K.
    trend : {"c", "n", "t", "ct"}
        Trend columns of x_t: constant, none, time 1..n, or both.
    switching_trend, switching_exog : bool or sequence of bool
        Whether each trend / exogenous coefficient switches with the regime (a bool for all).
    switching_variance : bool
        Whether the error variance switches.
    n_iter_em : int
        At most this many EM iterations from each start.
    n_restarts : int
        Number of EM starts (data-driven first, then random); the two best are polished.
    max_iter : int
        At most this many BFGS iterations in the polish.
    tol : float
        ``converged_`` is True when the gradient's largest entry (logits, coefficients,
        log variances) is below ``tol`` at the estimate.
    random_state : int or numpy Generator, optional
        Seeds the random starts.
    verbose : bool
        Show a live progress bar of the EM iterations from each start (see
        :mod:`modeshift.progress`; the quasi-Newton polish that follows is not shown).
    callback : callable, optional
        ``callback(iteration, log_likelihood)`` after every EM iteration that improved the
        log-likelihood, from every start; not saved with the model.

    Attributes
    ----------
    transmat_ : (K, K) array
        Row-stochastic: transmat_[i, j] = p(S_t = j | S_{t-1} = i) (statsmodels stores the transpose).
    startprob_ : (K,) array
        The chain's start distribution: its stationary one (statsmodels' default).
    trend_ : (K, n_trend) array; means_ : (K,) array
        Trend coefficients per regime; ``means_`` is the intercept column.
    exog_coef_ : (K, n_exog) array
    variances_ : (K,) array
        Equal entries unless ``switching_variance``.
    log_likelihood_ : float
    filtered_probabilities_, smoothed_probabilities_ : (n_steps, K) arrays
    expected_durations_ : (K,) array
        1 / (1 - transmat_[k, k]).
    standard_errors_ : array
        Of the parameters in :meth:`summary` order, from the observed information at the fit.
    converged_ : bool; gradient_norm_ : float
        Whether the fit reached a stationary point: the largest gradient entry there.

    Notes
    -----
    ``score``, ``predict_proba``, ``predict`` (most probable regime per step), ``decode``
    (most probable path), ``aic``/``bic`` and ``summary`` also work with parameters set by
    hand (``transmat_``, ``trend_``, ``exog_coef_``, ``variances_``). A fit needs one series
    without missing values.

    Examples
    --------
    >>> from modeshift import MarkovRegression
    >>> from modeshift.datasets import load_fedfunds
    >>> rate = load_fedfunds()["fedfunds"]
    >>> model = MarkovRegression(n_states=2, random_state=0).fit(rate)
    >>> round(model.log_likelihood_, 2), model.means_.round(2)
    (-508.64, array([3.71, 9.56]))
    >>> model.summary().round(4).loc[["p[0->0]", "sigma2"], "estimate"].tolist()
    [0.9821, 4.4418]
    """

    def __init__(
        self,
        n_states: int = 2,
        trend: str = "c",
        switching_trend: bool | Sequence[bool] = True,
        switching_exog: bool | Sequence[bool] = True,
        switching_variance: bool = False,
        n_iter_em: int = 100,
        n_restarts: int = 10,
        max_iter: int = 500,
        tol: float = 1e-5,
        random_state: int | np.random.Generator | None = None,
        verbose: bool = False,
        callback: Callable[[int, float], Any] | None = None,
    ):
        self._store_common(
            n_states,
            trend,
            switching_trend,
            switching_exog,
            switching_variance,
            n_iter_em,
            n_restarts,
            max_iter,
            tol,
            random_state,
            verbose,
            callback,
        )


class MarkovAutoregression(_MarkovSwitching):
    """An autoregression around a regime-switching mean (Hamilton 1989).

        y_t - x_t' beta_{S_t} = sum_{i=1..p} phi_{i, S_t} (y_{t-i} - x_{t-i}' beta_{S_{t-i}}) + e_t,
        e_t ~ N(0, sigma2_{S_t}),   p(S_t = j | S_{t-1} = i) = transmat_[i, j]

    statsmodels' ``MarkovAutoregression``, fit by maximum likelihood given the first
    ``order`` observations. With ``trend="c"``, beta is the regime's mean.

    Parameters
    ----------
    n_states : int
        Number of regimes K.
    order : int
        Autoregressive order p (the filter runs on K^(p+1) expanded states).
    trend, switching_trend, switching_exog, switching_variance, n_iter_em, n_restarts, max_iter, tol, random_state,
    verbose, callback
        As for :class:`MarkovRegression` (here exogenous coefficients do not switch by default).
    switching_ar : bool or sequence of bool
        Whether each autoregressive coefficient switches with the current regime.

    Attributes
    ----------
    ar_coef_ : (K, order) array
        phi per regime (equal rows where not switching); the others as for :class:`MarkovRegression`.

    Examples
    --------
    >>> from modeshift import MarkovAutoregression
    >>> from modeshift.datasets import load_hamilton_gnp
    >>> gnp = load_hamilton_gnp()["rgnp_growth"]
    >>> model = MarkovAutoregression(order=4, switching_ar=False, random_state=0).fit(gnp)
    >>> model.ar_coef_[0].round(3)
    array([ 0.013, -0.058, -0.247, -0.213])
    >>> model.predict(gnp)[:8]  # regime per quarter from 1952Q2 (0: recession)
    array([1, 1, 1, 1, 1, 0, 0, 0])
    """

    def __init__(
        self,
        n_states: int = 2,
        order: int = 1,
        trend: str = "c",
        switching_ar: bool | Sequence[bool] = True,
        switching_trend: bool | Sequence[bool] = True,
        switching_exog: bool | Sequence[bool] = False,
        switching_variance: bool = False,
        n_iter_em: int = 100,
        n_restarts: int = 10,
        max_iter: int = 500,
        tol: float = 1e-5,
        random_state: int | np.random.Generator | None = None,
        verbose: bool = False,
        callback: Callable[[int, float], Any] | None = None,
    ):
        if int(order) < 1:
            raise ValueError(f"order must be a positive integer (use MarkovRegression for 0), got {order!r}")
        self.order = int(order)
        self.switching_ar = switching_ar
        _switching_flags(switching_ar, self.order, "switching_ar")
        self._store_common(
            n_states,
            trend,
            switching_trend,
            switching_exog,
            switching_variance,
            n_iter_em,
            n_restarts,
            max_iter,
            tol,
            random_state,
            verbose,
            callback,
        )

    @property
    def _order(self) -> int:
        return self.order

    @property
    def _switching_ar(self) -> tuple[bool, ...]:
        return _switching_flags(self.switching_ar, self.order, "switching_ar")
