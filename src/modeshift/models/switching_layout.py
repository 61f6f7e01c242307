"""The parameters of a Markov-switching (auto)regression and their free vector.

A point of the parameter space is a transition matrix P (K, K), or, with time-varying
transition probabilities, multinomial-logit coefficients (K, K-1, C) on C transition
covariates z_t, regression coefficients (K, R, D) (y_t - coef[k]' x_t is the deviation
of the D observed series), autoregressive coefficient matrices phi (K, p, D, D) and error
covariances (K, D, D). Where a coefficient or the covariance does not switch, its K values
are equal. The quasi-Newton polish and the standard errors work on the *free vector*, in
statsmodels' order: transition logits (target regime outer, source regime inner, the
last target the reference; with time-varying probabilities target outer, covariate,
then source inner, the logit coefficients themselves), coefficients (column outer, then
series, regime inner where switching), the covariances' LDL coordinates, autoregressive
coefficients (lag outer, then matrix entry, regime inner where switching).

A covariance is S = U diag(d) U' with U unit lower-triangular (its modified Cholesky
factorisation, Pourahmadi 1999): its free coordinates are log d_a on the diagonal and
U_ab below it, unconstrained; for one series, log sigma2 (statsmodels' transform).

>>> layout = ParameterLayout(2, 1, (True,), (False,), False)
>>> layout.names(["const"])
['p[0->0]', 'p[1->0]', 'const[0]', 'const[1]', 'sigma2', 'ar.L1']
>>> ParameterLayout(2, 0, (False,), (), False, n_features=2).names(["const"])[2:]
['const.y1', 'const.y2', 'sigma2.y1', 'cov.y2.y1', 'sigma2.y2']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["TRENDS", "ParameterLayout", "SwitchingParameters", "ldl", "switching_flags"]

#: trend code -> the trend columns of the regressors
TRENDS = {"n": (), "c": ("const",), "t": ("trend",), "ct": ("const", "trend")}


@dataclass(frozen=True)
class SwitchingParameters:
    """transmat (K, K), coef (K, R, D): trend then exogenous columns, ar (K, p, D, D),
    covariances (K, D, D); with time-varying transitions ``transmat`` is None and
    ``transition_coef`` (K, K-1, C) holds the logit coefficients:
    log p(S_t = j | S_t-1 = i, z_t) / p(S_t = K-1 | i, z_t) = z_t' transition_coef[i, j]."""

    transmat: np.ndarray | None
    coef: np.ndarray
    ar: np.ndarray
    covariances: np.ndarray
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
        return SwitchingParameters(transmat, self.coef[order], self.ar[order], self.covariances[order], transition_coef)

    def ordered(self) -> SwitchingParameters:
        """Regimes sorted by their first switching coefficient, else variance, else autoregression."""
        k = len(self.coef)
        variances = np.diagonal(self.covariances, axis1=1, axis2=2)
        spread = [self.coef.reshape(k, -1), variances, self.ar.reshape(k, -1)]
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
        n_features: int = 1,
    ):
        self.n_states, self.order, self.n_tvtp, self.n_features = n_states, order, n_tvtp, n_features
        self.switching_coef, self.switching_ar = tuple(switching_coef), tuple(switching_ar)
        self.switching_variance = switching_variance
        d = n_features
        #: the (row, column) of each covariance coordinate, the lower triangle row by row
        self.covariance_entries = [(a, b) for a in range(d) for b in range(a + 1)]
        self.coef_map = _sharing_map(n_states, [s for s in self.switching_coef for _ in range(d)])
        self.ar_map = _sharing_map(n_states, [s for s in self.switching_ar for _ in range(d * d)])
        self.regime_map = _sharing_map(n_states, (switching_variance,))
        self.variance_map = _sharing_map(n_states, (switching_variance,) * len(self.covariance_entries))
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
                _free_values(self.variance_map, self.covariance_coordinates(params.covariances)),
                _free_values(self.ar_map, params.ar),
            ]
        )

    def covariance_coordinates(self, covariances: np.ndarray) -> np.ndarray:
        """(K, D (D + 1) / 2) log d_a and U_ab of S = U diag(d) U', in ``covariance_entries`` order."""
        unit, diagonal = ldl(covariances)
        rows, columns = np.array(self.covariance_entries).T
        return np.where(rows == columns, np.log(diagonal[:, rows]), unit[:, rows, columns])

    def covariances(self, coordinates: np.ndarray) -> np.ndarray:
        """(K, D, D) from :meth:`covariance_coordinates`."""
        k, d = len(coordinates), self.n_features
        rows, columns = np.array(self.covariance_entries).T
        unit = np.zeros((k, d, d))
        unit[:, np.arange(d), np.arange(d)] = 1.0
        below = rows > columns
        unit[:, rows[below], columns[below]] = coordinates[:, below]
        diagonal = np.exp(coordinates[:, ~below])
        return (unit * diagonal[:, None, :]) @ np.swapaxes(unit, 1, 2)

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
            coef=self.coef_from_free(coef),
            ar=self.ar_from_free(ar),
            covariances=self.covariances((self.variance_map @ log_variances).reshape(k, -1)),
        )

    def coef_from_free(self, free: np.ndarray) -> np.ndarray:
        return (self.coef_map @ free).reshape(self.n_states, -1, self.n_features)

    def ar_from_free(self, free: np.ndarray) -> np.ndarray:
        d = self.n_features
        return (self.ar_map @ free).reshape(self.n_states, -1, d, d)

    def constrained(self, params: SwitchingParameters) -> np.ndarray:
        """The parameters in the free vector's order, with probabilities P[i, j] (j < K-1) (the logit
        coefficients themselves when time-varying, as statsmodels) and covariance entries."""
        rows, columns = np.array(self.covariance_entries).T
        return np.concatenate(
            [
                self._transition_values(params) if self.n_tvtp else params.transmat[:, :-1].T.ravel(),
                _free_values(self.coef_map, params.coef),
                _free_values(self.variance_map, params.covariances[:, rows, columns]),
                _free_values(self.ar_map, params.ar),
            ]
        )

    def jacobian(self, params: SwitchingParameters) -> np.ndarray:
        """d constrained / d free: block diagonal (softmax rows, identity, covariances, identity)."""
        k = self.n_states
        jacobian = np.eye(self.n_parameters)
        for i in range(0 if self.n_tvtp else k):  # P[i, j], j < K-1, sits at index j * K + i, as does logit[i, j]
            where = np.arange(k - 1) * k + i
            row = params.transmat[i, :-1]
            jacobian[np.ix_(where, where)] = np.diag(row) - np.outer(row, row)
        # d S_ab / d coordinates, regime by regime, mapped onto the free coordinates
        per_regime = self.covariance_jacobians(params.covariances)  # (K, n_cov, n_cov)
        n_cov = len(self.covariance_entries)
        blocks = np.zeros((k * n_cov, k * n_cov))
        for regime in range(k):
            blocks[regime * n_cov : (regime + 1) * n_cov, regime * n_cov : (regime + 1) * n_cov] = per_regime[regime]
        shares = np.maximum(self.variance_map.sum(axis=0), 1.0)
        start, size = self.sizes[0] + self.sizes[1], self.sizes[2]
        jacobian[start : start + size, start : start + size] = (
            self.variance_map.T @ blocks @ self.variance_map
        ) / shares[:, None]
        return jacobian

    def covariance_jacobians(self, covariances: np.ndarray) -> np.ndarray:
        """(K, n_cov, n_cov): d S[entry] / d coordinate, entries and coordinates in ``covariance_entries`` order.

        With S = U diag(d) U': d S / d log d_a = d_a u_a u_a', d S / d U_ab = E_ab diag(d) U' + its transpose."""
        unit, diagonal = ldl(covariances)
        rows, columns = np.array(self.covariance_entries).T
        d = self.n_features
        out = np.empty((len(covariances), len(rows), len(rows)))
        for c, (a, b) in enumerate(self.covariance_entries):
            if a == b:
                change = diagonal[:, a, None, None] * unit[:, :, a, None] * unit[:, None, :, a]
            else:
                one_sided = np.zeros((len(covariances), d, d))
                one_sided[:, a, :] = diagonal[:, b, None] * unit[:, :, b]
                change = one_sided + np.swapaxes(one_sided, 1, 2)
            out[:, :, c] = change[:, rows, columns]
        return out

    def names(self, columns: Sequence[str]) -> list[str]:
        """statsmodels' names of the free parameters, given the names of the regressor columns."""
        k = self.n_states
        if self.n_tvtp:
            names = [f"p[{i}->{j}].tvtp{c}" for j in range(k - 1) for c in range(self.n_tvtp) for i in range(k)]
        else:
            names = [f"p[{i}->{j}]" for j in range(k - 1) for i in range(k)]
        coef, covariance, ar = self.value_names(columns)
        d = self.n_features
        names += _per_regime(coef, [s for s in self.switching_coef for _ in range(d)], k)
        names += _per_regime(covariance, (self.switching_variance,) * len(covariance), k)
        return names + _per_regime(ar, [s for s in self.switching_ar for _ in range(d * d)], k)

    def value_names(self, columns: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
        """Names of one regime's coefficients (R D, row by row), covariance entries and
        autoregressive coefficients (p D D): for one series statsmodels' (``const``, ``sigma2``,
        ``ar.L1``), for several with the series ``y1``, ``y2``, ... (``const.y2``, ``cov.y2.y1``,
        ``ar.L1.y1.y2``, the effect of y2's lag on y1)."""
        lags = [f"ar.L{j + 1}" for j in range(self.order)]
        if self.n_features == 1:
            return list(columns), ["sigma2"], lags
        series = [f"y{a + 1}" for a in range(self.n_features)]
        coef = [f"{c}.{y}" for c in columns for y in series]
        covariance = [
            f"sigma2.{series[a]}" if a == b else f"cov.{series[a]}.{series[b]}" for a, b in self.covariance_entries
        ]
        return coef, covariance, [f"{lag}.{a}.{b}" for lag in lags for a in series for b in series]


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


def ldl(covariances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """S = U diag(d) U' for a stack (K, D, D): U (K, D, D) unit lower-triangular, d (K, D);
    for D = 1, U = 1 and d = S exactly."""
    k, dim = covariances.shape[:2]
    unit, diagonal = np.zeros_like(covariances), np.empty((k, dim))
    for a in range(dim):
        known = unit[:, a, :a] * diagonal[:, :a]
        diagonal[:, a] = covariances[:, a, a] - np.einsum("kb,kb->k", known, unit[:, a, :a])
        unit[:, a, a] = 1.0
        for i in range(a + 1, dim):
            unit[:, i, a] = (covariances[:, i, a] - np.einsum("kb,kb->k", known, unit[:, i, :a])) / diagonal[:, a]
    return unit, diagonal
