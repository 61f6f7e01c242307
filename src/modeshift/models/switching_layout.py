"""The parameters of a Markov-switching (auto)regression and their free vector.

A point of the parameter space is a transition matrix P (K, K), or, with time-varying
transition probabilities, multinomial-logit coefficients (K, K-1, C) on C transition
covariates z_t, regression coefficients (K, R), autoregressive coefficients phi (K, p)
and error variances (K,).
Where a coefficient or the variance does not switch, its K values are equal. The
quasi-Newton polish and the standard errors work on the *free vector*, in
statsmodels' order: transition logits (target regime outer, source regime inner, the
last target the reference; with time-varying probabilities target outer, covariate,
then source inner, the logit coefficients themselves), coefficients (column outer, regime inner where
switching), log variances, autoregressive coefficients (lag outer, regime inner
where switching).

>>> layout = ParameterLayout(2, 1, (True,), (False,), False)
>>> layout.names(["const"])
['p[0->0]', 'p[1->0]', 'const[0]', 'const[1]', 'sigma2', 'ar.L1']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["TRENDS", "ParameterLayout", "SwitchingParameters", "switching_flags"]

#: trend code -> the trend columns of the regressors
TRENDS = {"n": (), "c": ("const",), "t": ("trend",), "ct": ("const", "trend")}


@dataclass(frozen=True)
class SwitchingParameters:
    """transmat (K, K), coef (K, R): trend then exogenous columns, ar (K, p), variances (K,);
    with time-varying transitions ``transmat`` is None and ``transition_coef`` (K, K-1, C)
    holds the logit coefficients: log p(S_t = j | S_t-1 = i, z_t) / p(S_t = K-1 | i, z_t)
    = z_t' transition_coef[i, j]."""

    transmat: np.ndarray | None
    coef: np.ndarray
    ar: np.ndarray
    variances: np.ndarray
    transition_coef: np.ndarray | None = None

    def relabelled(self, order: np.ndarray) -> SwitchingParameters:
        """The same model with regime i renamed: new regime i is old regime ``order[i]``."""
        transmat = transition_coef = None
        if self.transmat is not None:
            transmat = self.transmat[np.ix_(order, order)]
        if self.transition_coef is not None:  # the reference target changes: subtract its logit
            logits = np.concatenate([self.transition_coef, np.zeros_like(self.transition_coef[:, :1])], axis=1)
            logits = logits[np.ix_(order, order)]
            transition_coef = logits[:, :-1] - logits[:, -1:]
        return SwitchingParameters(transmat, self.coef[order], self.ar[order], self.variances[order], transition_coef)

    def ordered(self) -> SwitchingParameters:
        """Regimes sorted by their first switching coefficient, else variance, else autoregression."""
        spread = [self.coef, self.variances[:, None], self.ar]
        key = next((a[:, c] for a in spread for c in range(a.shape[1]) if np.ptp(a[:, c]) > 0), None)
        return self if key is None else self.relabelled(np.argsort(key, kind="stable"))


def switching_flags(value: bool | Sequence[bool], length: int, name: str) -> tuple[bool, ...]:
    """Whether each of ``length`` coefficients switches: a bool for all, or one per coefficient."""
    if isinstance(value, (bool, np.bool_)):
        return (bool(value),) * length
    flags = tuple(bool(v) for v in value)
    if len(flags) != length:
        raise ValueError(f"{name} must be a bool or a sequence of {length} bools, got {value!r}")
    return flags


class ParameterLayout:
    """Which parameters are free: packing to and from the free vector, its names and Jacobian."""

    def __init__(
        self,
        n_states: int,
        order: int,
        switching_coef: Sequence[bool],
        switching_ar: Sequence[bool],
        switching_variance: bool,
        n_tvtp: int = 0,
    ):
        self.n_states, self.order, self.n_tvtp = n_states, order, n_tvtp
        self.switching_coef, self.switching_ar = tuple(switching_coef), tuple(switching_ar)
        self.switching_variance = switching_variance
        self.coef_map = _sharing_map(n_states, self.switching_coef)
        self.ar_map = _sharing_map(n_states, self.switching_ar)
        self.variance_map = _sharing_map(n_states, (switching_variance,))
        self.sizes = (
            n_states * (n_states - 1) * max(n_tvtp, 1),
            self.coef_map.shape[1],
            self.variance_map.shape[1],
            self.ar_map.shape[1],
        )

    @property
    def n_parameters(self) -> int:
        return sum(self.sizes)

    def _transition_values(self, params: SwitchingParameters) -> np.ndarray:
        """The logit coefficients (K, K-1, C) in the free vector's order: target, covariate, source."""
        return np.transpose(params.transition_coef, (1, 2, 0)).ravel()

    def pack(self, params: SwitchingParameters) -> np.ndarray:
        if self.n_tvtp:
            transitions = self._transition_values(params)
        else:
            probabilities = np.clip(params.transmat, 1e-12, None)
            transitions = (np.log(probabilities[:, :-1]) - np.log(probabilities[:, -1:])).T.ravel()
        return np.concatenate(
            [
                transitions,
                _free_values(self.coef_map, params.coef),
                _free_values(self.variance_map, np.log(params.variances)),
                _free_values(self.ar_map, params.ar),
            ]
        )

    def unpack(self, free: np.ndarray) -> SwitchingParameters:
        k = self.n_states
        logits, coef, log_variances, ar = np.split(free, np.cumsum(self.sizes)[:-1])
        transmat = transition_coef = None
        if self.n_tvtp:
            transition_coef = np.transpose(logits.reshape(k - 1, self.n_tvtp, k), (2, 0, 1))
        else:
            logits = np.c_[logits.reshape(k - 1, k).T, np.zeros(k)]
            transmat = np.exp(logits - logits.max(axis=1, keepdims=True))
            transmat /= transmat.sum(axis=1, keepdims=True)
        return SwitchingParameters(
            transmat=transmat,
            transition_coef=transition_coef,
            coef=(self.coef_map @ coef).reshape(k, -1),
            ar=(self.ar_map @ ar).reshape(k, -1),
            variances=np.exp(self.variance_map @ log_variances),
        )

    def coef_from_free(self, free: np.ndarray) -> np.ndarray:
        return (self.coef_map @ free).reshape(self.n_states, -1)

    def ar_from_free(self, free: np.ndarray) -> np.ndarray:
        return (self.ar_map @ free).reshape(self.n_states, -1)

    def constrained(self, params: SwitchingParameters) -> np.ndarray:
        """The parameters in the free vector's order, with probabilities P[i, j] (j < K-1) (the logit
        coefficients themselves when time-varying, as statsmodels) and variances."""
        return np.concatenate(
            [
                self._transition_values(params) if self.n_tvtp else params.transmat[:, :-1].T.ravel(),
                _free_values(self.coef_map, params.coef),
                _free_values(self.variance_map, params.variances),
                _free_values(self.ar_map, params.ar),
            ]
        )

    def jacobian(self, params: SwitchingParameters) -> np.ndarray:
        """d constrained / d free: block diagonal (softmax rows, identity, variances, identity)."""
        k = self.n_states
        jacobian = np.eye(self.n_parameters)
        for i in range(0 if self.n_tvtp else k):  # P[i, j], j < K-1, sits at index j * K + i, as does logit[i, j]
            where = np.arange(k - 1) * k + i
            row = params.transmat[i, :-1]
            jacobian[np.ix_(where, where)] = np.diag(row) - np.outer(row, row)
        start = self.sizes[0] + self.sizes[1]
        variances = _free_values(self.variance_map, params.variances)
        jacobian[start : start + len(variances), start : start + len(variances)] = np.diag(variances)
        return jacobian

    def names(self, columns: Sequence[str]) -> list[str]:
        """statsmodels' names of the free parameters, given the names of the regressor columns."""
        k = self.n_states
        lags = [f"ar.L{j + 1}" for j in range(self.order)]
        if self.n_tvtp:
            names = [f"p[{i}->{j}].tvtp{c}" for j in range(k - 1) for c in range(self.n_tvtp) for i in range(k)]
        else:
            names = [f"p[{i}->{j}]" for j in range(k - 1) for i in range(k)]
        names += _per_regime(columns, self.switching_coef, k)
        names += _per_regime(["sigma2"], (self.switching_variance,), k)
        return names + _per_regime(lags, self.switching_ar, k)


def _per_regime(names: Sequence[str], switching: Sequence[bool], n_states: int) -> list[str]:
    return [f"{c}[{i}]" if s else c for c, s in zip(names, switching) for i in (range(n_states) if s else [0])]


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
