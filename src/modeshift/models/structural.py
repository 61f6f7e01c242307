"""Structural time-series models and ARIMA: the state-space models users know, fit by exact maximum
likelihood over their named parameters.

A :class:`StructuralModel` adds up components (:mod:`modeshift.models.structural_components`):
a level or a trend, seasonals, a cycle, an ARIMA disturbance, regression effects and the
irregular noise. Their blocks stack into one linear-Gaussian state-space model whose
log-likelihood the Kalman filter gives exactly; ``fit`` maximises it by BFGS over the
components' parameters in an unconstrained form (variances >= 0, a stationary AR and an
invertible MA part, a damping in (0, 1)), from starting values drawn from the data.

Diffuse states (a level, a slope, a seasonal pattern, the integrated states of an ARIMA) start
from the exact diffuse initialisation (Durbin & Koopman 2012, sec. 5.2; the ``diffuse`` start of
:class:`~modeshift.models.lds.LinearGaussianSSM`), and the log-likelihood is the diffuse one,
statsmodels' value with ``use_exact_diffuse=True`` (R's KFAS). Its gradient is analytic (the
Fisher identity of :mod:`modeshift.models.lds_mle`, chained through the map from the
named parameters to the matrices). With ``diffuse_variance`` set, the diffuse states get that
prior variance instead and the first d observations of a sequence, d the number of diffuse
states, are conditioned on: statsmodels' value under ``initialization="approximate_diffuse"``
(its ``loglikelihood_burn``), maximised with a central-difference gradient.

>>> import numpy as np
>>> from modeshift.datasets import load_nile
>>> nile = load_nile()["volume"].to_numpy(float)
>>> model = StructuralModel.unobserved_components(level="local level").fit(nile)
>>> dict(zip(model.param_names, model.params_.round()))  # Durbin & Koopman's MLE
{'sigma2.level': np.float64(1469.0), 'sigma2.irregular': np.float64(15099.0)}
>>> forecast = model.forecast(nile, horizon=2)
>>> lower, upper = forecast.interval(0.95)
>>> bool((lower < forecast.means).all() and (forecast.means < upper).all())
True
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize, stats

from modeshift._kernels.kalman import filter_arrays
from modeshift._kernels.lds_score import FLAT, ScorePass
from modeshift.data import Sequences, as_sequences
from modeshift.models import quasi_newton
from modeshift.models.base import Forecast, Model, NotFittedError, check_future_inputs, simulated
from modeshift.models.em import ConvergenceWarning
from modeshift.models.lds import LinearGaussianSSM, SmootherResult, predictive_moments
from modeshift.models.params import Integer, Number, OneOf, Rule, either
from modeshift.models.streaming import DiffuseKalmanRecursion, FilterState, KalmanRecursion, StreamingFilters, check_row
from modeshift.models.structural_components import (
    ARIMA,
    COMPONENTS,
    Block,
    Cycle,
    Irregular,
    LocalLevel,
    LocalLinearTrend,
    Regression,
    Seasonal,
    StartContext,
    TrigonometricSeasonal,
)
from modeshift.statistics import heteroskedasticity, jarque_bera, ljung_box

__all__ = [
    "ARIMA",
    "Cycle",
    "Irregular",
    "LocalLevel",
    "LocalLinearTrend",
    "Regression",
    "Seasonal",
    "StructuralModel",
    "StructuralSmootherResult",
    "Summary",
    "TrigonometricSeasonal",
]

_LOG_2PI = float(np.log(2 * np.pi))
#: the climb has converged when no entry of the gradient of log L in the scaled free vector (units of
#: the start's values) exceeds this: on the Nile log L is then within 1e-8 of its maximum (1e-5 costs
#: passes, and line searches at the round-off of ARMA's); 1e-3 stops short along a flat ridge (an
#: AR coefficient near 1 in its unconstrained form: 2e-4 below the maximum on the unemployment rate)
_GTOL = 1e-4
_TRENDS = {
    "local level": (LocalLevel(),),
    "random walk": (LocalLevel(),),
    "fixed intercept": (LocalLevel(stochastic=False),),
    "local linear trend": (LocalLinearTrend(),),
    "smooth trend": (LocalLinearTrend(stochastic_level=False),),
    "deterministic trend": (LocalLinearTrend(stochastic_level=False, stochastic_slope=False),),
}


class _Components(Rule):
    def allows(self, value: Any) -> bool:
        kinds = tuple(COMPONENTS.values())
        return isinstance(value, (list, tuple)) and len(value) > 0 and all(isinstance(c, kinds) for c in value)

    def describe(self) -> str:
        return f"a non-empty sequence of components ({', '.join(COMPONENTS)})"


@dataclass(frozen=True)
class _System:
    """The stacked state-space model: y_t = C x_t + D u_t + N(0, R), x_t+1 = A x_t + B u_t+1 +
    N(0, Q), x_0 ~ N(m0, P0) with u_t = (1, exog_t); ``diffuse`` flags the diffuse states."""

    A: np.ndarray
    Q: np.ndarray
    C: np.ndarray
    R: float
    B: np.ndarray
    D: np.ndarray
    m0: np.ndarray
    P0: np.ndarray
    diffuse: np.ndarray

    @property
    def burn(self) -> int:
        return int(self.diffuse.sum())


@dataclass(frozen=True)
class _Filtered:
    """The filter's answer: log-likelihood after the diffuse steps, the filtered moments, and the
    standardised one-step innovations (NaN where missing and in the diffuse steps)."""

    log_likelihood: float
    means: np.ndarray
    covariances: np.ndarray
    standardised: np.ndarray


@dataclass(frozen=True)
class StructuralSmootherResult(SmootherResult):
    """:class:`~modeshift.models.lds.SmootherResult` (smoothed state means, covariances, lag-one
    cross-covariances, log-likelihood) with each component's smoothed signal: ``components``
    holds E[signal_t | all observations] per step, one column per signal (``level``, ``slope``,
    ``seasonal``, ``freq_seasonal_<period>(<harmonics>)``, ``cycle``, ``arima``,
    ``regression`` = beta' exog_t, ``irregular`` = y_t minus the rest, 0 where y_t is missing),
    and ``component_variances`` their variances Var[signal_t | all observations]: data frames
    in the form the data came in (a list of them for list input), like the states. The columns
    of ``components`` but ``slope`` add up to the observed y_t."""

    components: pd.DataFrame | list[pd.DataFrame]
    component_variances: pd.DataFrame | list[pd.DataFrame]


@dataclass(frozen=True)
class Summary:
    """A fitted model's report: ``parameters`` (estimate, std_error, z, p_value per parameter),
    ``fit`` (log_likelihood, aic, bic, n_observations) and ``diagnostics`` of the standardised
    one-step innovations (statistic, p_value of Ljung-Box, Jarque-Bera and the heteroskedasticity
    test). ``str(summary)`` prints them as one table."""

    model: str
    parameters: pd.DataFrame
    fit: dict[str, float]
    diagnostics: pd.DataFrame

    def __str__(self) -> str:
        fit = self.fit
        lines = [
            self.model,
            f"log-likelihood {fit['log_likelihood']:.3f}   AIC {fit['aic']:.3f}   BIC {fit['bic']:.3f}   "
            f"observations {fit['n_observations']}",
            "",
            self.parameters.to_string(float_format=lambda v: f"{v:.6g}"),
            "",
            self.diagnostics.to_string(float_format=lambda v: f"{v:.4g}"),
        ]
        return "\n".join(lines)


class StructuralModel(Model, StreamingFilters):
    """A sum of structural components (a trend, seasonals, a cycle, ARIMA, regression effects and
    irregular noise) as one linear-Gaussian state-space model, fit by maximum likelihood.

    Parameters
    ----------
    components : sequence of components
        From :mod:`modeshift.models.structural_components`, e.g.
        ``(LocalLinearTrend(), Seasonal(12), Irregular())``; their states are stacked in this
        order. The constructors :meth:`unobserved_components` and :meth:`arima` build the
        usual combinations with statsmodels' vocabulary.
    diffuse_variance : float, optional
        None (default): the exact diffuse start. A number: the approximate one, a prior
        variance this large on the diffuse states (statsmodels' default is 1e6).
    n_iter : int
        Cap on the quasi-Newton iterations of ``fit`` (0: only the starting values).
    warm_start : bool
        Start ``fit`` from the current ``params_`` instead of starting values drawn from the data.

    Attributes
    ----------
    params_ : (n_parameters,) array
        The estimates, in the order of :attr:`param_names` (natural units: variances,
        coefficients, frequencies in radians per step). Set it by hand to evaluate or start
        from given parameters.
    log_likelihood_ : float
        The maximised log-likelihood (see the module docstring for its convention).
    history_ : list of float
        The log-likelihood after each quasi-Newton iteration; ``converged_``, ``n_iter_``.

    Notes
    -----
    Every evaluation goes through one :class:`~modeshift.models.lds.LinearGaussianSSM` built
    from the components' blocks: its filter (``score``, ``forecast``, the diagnostics), its
    smoother (``smooth``) and its score (the gradient of ``fit``, the Fisher identity chained
    through the map from the free parameters to the matrices). The covariances are the exact,
    often singular ones (ARMA, seasonal dummies: rank-deficient Q, R = 0); with the approximate
    start (``diffuse_variance``) the gradient is by central differences.
    """

    def __init__(
        self,
        components: Sequence[Any] = (LocalLevel(), Irregular()),
        diffuse_variance: float | None = None,
        n_iter: int = 500,
        warm_start: bool = False,
    ):
        self.components = components
        self.diffuse_variance = diffuse_variance
        self.n_iter = n_iter
        self.warm_start = warm_start

    _constraints = {
        "components": _Components(),
        "diffuse_variance": either(Number(0.0, open_low=True), OneOf((None,))),
        "n_iter": Integer(0),
    }
    _test_params = {"n_iter": 50}
    _file_arrays = {"params_": "finite"}
    _file_attributes = {**Model._file_attributes, "log_likelihood_": "number", "component_types": "strings"}
    _test_change = {"n_iter": 2}

    # -------------------------------------------------------------- constructors
    @classmethod
    def unobserved_components(
        cls,
        level: str | None = "local level",
        seasonal: int | None = None,
        freq_seasonal: Sequence[tuple[float, int]] = (),
        cycle: bool = False,
        autoregressive: int = 0,
        irregular: bool = True,
        n_exog: int = 0,
        **options: Any,
    ) -> StructuralModel:
        """statsmodels' ``UnobservedComponents``: ``level`` one of "local level" (or "random
        walk"), "fixed intercept", "local linear trend", "smooth trend", "deterministic trend" or
        None; a dummy ``seasonal`` of that period; trigonometric seasonals ``freq_seasonal``
        as (period, harmonics) pairs; a damped stochastic ``cycle``; an AR(``autoregressive``)
        disturbance; the ``irregular``; ``n_exog`` regression effects. ``options`` go to the
        constructor."""
        if level is not None and level not in _TRENDS:
            raise ValueError(f"level must be one of {sorted(_TRENDS)} or None, got {level!r}")
        parts: list[Any] = list(_TRENDS[level]) if level is not None else []
        parts += [Seasonal(seasonal)] if seasonal else []
        parts += [TrigonometricSeasonal(period, harmonics) for period, harmonics in freq_seasonal]
        parts += [Cycle()] if cycle else []
        parts += [ARIMA(autoregressive)] if autoregressive else []
        parts += [Regression(n_exog)] if n_exog else []
        parts += [Irregular()] if irregular else []
        return cls(components=tuple(parts), **options)

    @classmethod
    def arima(
        cls, p: int = 1, d: int = 0, q: int = 0, intercept: bool = False, n_exog: int = 0, **options: Any
    ) -> StructuralModel:
        """statsmodels' ``SARIMAX(order=(p, d, q))``: an ARIMA(p, d, q) with an ``intercept`` c
        (its ``trend="c"``) and ``n_exog`` regression effects, without measurement error."""
        parts: tuple[Any, ...] = (ARIMA(p, d, q, intercept),) + ((Regression(n_exog),) if n_exog else ())
        return cls(components=parts, **options)

    # ---------------------------------------------------------------- structure
    def _components(self) -> tuple[Any, ...]:
        self._check_params()
        names = [name for component in self.components for name in component.names()]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"StructuralModel: two components name the parameter(s) {repeated}; keep one of each")
        if sum(isinstance(c, Irregular) for c in self.components) > 1:
            raise ValueError("StructuralModel: one Irregular component at most")
        if not any(c.n_states for c in self.components):
            raise ValueError("StructuralModel: the components have no state; add a level, a seasonal, a cycle or ARIMA")
        return tuple(self.components)

    @property
    def param_names(self) -> tuple[str, ...]:
        """The names of the parameters, in the order of ``params_``."""
        return tuple(name for component in self._components() for name in component.names())

    @property
    def n_exog(self) -> int:
        return sum(int(c.n_exog) for c in self.components if isinstance(c, Regression))

    @property
    def n_parameters(self) -> int:
        """The number of estimated parameters."""
        return len(self.param_names)

    def _system(self, params: np.ndarray) -> _System:
        """The stacked matrices at ``params`` (the components checked already)."""
        params = np.asarray(params, dtype=float)
        return self._stack([c.block(params[where]) for c, where in zip(self.components, _slices(self.components))])

    def _stack(self, blocks: list[Any]) -> _System:
        """The components' blocks as one state-space model: block-diagonal dynamics, added observations."""
        n = sum(len(b.diffuse) for b in blocks)
        A, Q, P0 = np.zeros((n, n)), np.zeros((n, n)), np.zeros((n, n))
        B, m0 = np.zeros((n, 1 + self.n_exog)), np.zeros(n)
        at = 0
        for b in blocks:
            rows = slice(at, at + len(b.diffuse))
            if len(b.diffuse):
                A[rows, rows], Q[rows, rows] = b.dynamics, b.covariance
            B[rows, 0] = 0.0 if b.intercept is None else b.intercept
            m0[rows] = 0.0 if b.initial_mean is None else b.initial_mean
            if b.initial_covariance is not None:
                P0[rows, rows] = b.initial_covariance
            at += len(b.diffuse)
        D = np.concatenate([[0.0], *[b.coefficients for b in blocks]])
        diffuse = np.concatenate([b.diffuse for b in blocks])
        if self.diffuse_variance is not None:  # the approximate start: a large prior variance
            P0[diffuse, diffuse] = self.diffuse_variance
        return _System(
            A=A,
            Q=Q,
            C=np.concatenate([b.observation for b in blocks]),
            R=float(sum(b.irregular for b in blocks)),
            B=B,
            D=D,
            m0=m0,
            P0=P0,
            diffuse=diffuse,
        )

    # ------------------------------------------------------------------- data
    def _sequences(self, X: Any, lengths: Sequence[int] | None, exog: Any, **columns: Any) -> Sequences:
        seqs = as_sequences(X, lengths, **columns)
        seqs.require(allow_missing=True, n_features=1, model="this StructuralModel")
        return seqs.with_inputs(exog, self.n_exog, "this StructuralModel (exog)")

    @staticmethod
    def _inputs(seqs: Sequences) -> np.ndarray:
        """u_t = (1, exog_t)."""
        return np.hstack([np.ones((seqs.n_steps, 1)), seqs.inputs])

    # ---------------------------------------------------------- the likelihood
    def _engine(self, system: _System) -> LinearGaussianSSM:
        """The state-space model at ``system``, whose filter, smoother and score do the work."""
        return LinearGaussianSSM(
            state_dim=len(system.m0),
            obs_dim=1,
            input_dim=1 + self.n_exog,
            diffuse=False if self.diffuse_variance is not None else [bool(d) for d in system.diffuse],
        )

    @staticmethod
    def _matrices(system: _System) -> dict[str, np.ndarray]:
        return {
            "A": system.A,
            "Q": system.Q,
            "C": system.C[None, :],
            "R": np.array([[system.R]]),
            "m0": system.m0,
            "P0": system.P0,
            "B": system.B,
            "D": system.D[None, :],
        }

    def _with_inputs(self, seqs: Sequences) -> Sequences:
        return dataclasses.replace(seqs, inputs=self._inputs(seqs))

    def _filter(self, system: _System, seqs: Sequences) -> _Filtered:
        """THE Kalman filter of the model (every likelihood, forecast and diagnostic goes through
        here): the exact diffuse start, or, with ``diffuse_variance``, a large-variance prior whose
        first ``burn`` observed steps of each sequence are conditioned on."""
        log_lik, *moments = self._engine(system)._run_filter(self._with_inputs(seqs), self._matrices(system))
        return self._filtered(system, seqs, float(log_lik.sum()), *moments)

    def _filtered(
        self,
        system: _System,
        seqs: Sequences,
        log_lik: float,
        fm: np.ndarray,
        fc: np.ndarray,
        pm: np.ndarray,
        pc: np.ndarray,
    ) -> _Filtered:
        """The filter's answer from the engine's: standardised innovations, and the log-likelihood
        conditioned on the first ``burn`` observed steps under the approximate start."""
        U = self._inputs(seqs)
        y = seqs.values[:, 0]
        innovation = y - pm @ system.C - U @ system.D
        variance = np.einsum("i,tij,j->t", system.C, pc, system.C) + system.R
        burned = _first_observed(seqs, system.burn)
        with np.errstate(divide="ignore", invalid="ignore"):
            standardised = np.where(burned, np.nan, innovation / np.sqrt(variance))
        value = log_lik
        if self.diffuse_variance is not None:
            value += 0.5 * np.sum(_LOG_2PI + np.log(variance[burned]) + innovation[burned] ** 2 / variance[burned])
        return _Filtered(value, fm, fc, standardised)

    def _log_likelihood(self, params: np.ndarray, seqs: Sequences) -> float:
        return self._filter(self._system(params), seqs).log_likelihood

    def _params(self) -> np.ndarray:
        params = self.__dict__.get("params_")
        if params is None:
            raise NotFittedError("this StructuralModel has no params_: call fit, or set them by hand")
        params = np.asarray(params, dtype=float)
        components = self._components()
        names = [name for component in components for name in component.names()]
        if params.shape != (len(names),) or not np.isfinite(params).all():
            raise ValueError(f"params_ must be {len(names)} finite numbers ({', '.join(names)}), got {params!r}")
        kinds = [kind for component in components for kind in component.kinds()]
        negative = [name for name, kind, value in zip(names, kinds, params) if kind == "variance" and value < 0]
        if negative:
            raise ValueError(f"params_: the variance(s) {negative} must be >= 0, got {params!r}")
        return params

    # ------------------------------------------------------------------ fitting
    def fit(self, X: Any, lengths: Sequence[int] | None = None, *, exog: Any = None, **columns: Any) -> StructuralModel:
        """Maximum-likelihood estimates of the parameters; returns ``self``.

        ``X``: one series or several (any form :func:`~modeshift.data.as_sequences` accepts),
        NaN where missing; ``exog`` (n_steps, n_exog) the regressors of a :class:`Regression`.
        Starts from ``params_`` set by hand (or, with ``warm_start``, learned before), otherwise
        from values drawn from the data.
        """
        self._start_fit()
        components = self._components()
        seqs = self._sequences(X, lengths, exog, **columns).require_observed()
        given = "params_" in self.__dict__
        start = self._params() if given else self._component_start(seqs)
        objective = _Objective(self, seqs, start) if self.diffuse_variance is None else None
        start = start if given else self._scaled_start(start, seqs, objective)
        layout = _Layout(components, start)
        history: list[float] = []
        self.n_iter_, self.converged_, self.history_ = 0, False, history
        params, log_likelihood = start, None
        if self.n_iter > 0:
            params, log_likelihood = self._climb(seqs, layout, objective, history)
        self.params_ = params
        self.log_likelihood_ = self._log_likelihood(params, seqs) if log_likelihood is None else log_likelihood
        self._finish_fit(seqs)
        return self

    def _climb(
        self, seqs: Sequences, layout: _Layout, objective: _Objective | None, history: list[float]
    ) -> tuple[np.ndarray, float | None]:
        """BFGS (:func:`~modeshift.models.quasi_newton.minimise`) on -log L in the scaled free
        vector: the analytic gradient (the exact start, ``objective``) or central differences of
        log L (the approximate start). Returns the parameters reached and log L there (None where
        it is not defined)."""

        def negative(x: np.ndarray) -> float:
            try:
                value = -self._log_likelihood(layout.params(x), seqs)
            except (ValueError, np.linalg.LinAlgError):  # e.g. every variance 0: y_t has variance 0
                return np.inf
            return value if np.isfinite(value) else np.inf

        def value_and_gradient(x: np.ndarray) -> tuple[float, np.ndarray]:
            if objective is not None:  # the exact start: the analytic gradient
                try:
                    value, slopes = objective(layout.params(x))
                except (ValueError, np.linalg.LinAlgError):
                    return np.inf, np.zeros_like(x)
                value, gradient = -value, -layout.chain(x, slopes)
            else:  # the approximate start: central differences of log L
                value, gradient = negative(x), np.zeros_like(x)
                for i in range(len(x) if np.isfinite(value) else 0):
                    h = 6e-6 * max(1.0, abs(x[i]))
                    up, down = x.copy(), x.copy()
                    up[i] += h
                    down[i] -= h
                    gradient[i] = (negative(up) - negative(down)) / (2 * h)
            if math.isfinite(float(gradient @ gradient)):
                return value, gradient
            return value, np.where(np.isfinite(gradient), gradient, 0.0)

        def record(x: np.ndarray, value: float) -> None:
            history.append(-value)

        if objective is not None:
            # At the start scaled to the best point of its ray (:meth:`_scaled_start`), -log L
            # along x0 (every standard deviation times 1 + t) is (n/2) (2 log(1 + t) + (1 + t)^-2)
            # + const, whose second derivative at t = 0 is 2 n: 2 n / |x0|^2 per unit length in x,
            # the first step's scale
            # (only when every value is a variance: a frequency or an AR coefficient has its own)
            n, length = objective.n_effective, float(layout.x0 @ layout.x0)
            known = n > 0 and length > 0 and bool(layout.variance.all())
            curvature = 2.0 * n / length if known else None
            result = quasi_newton.minimise(value_and_gradient, layout.x0, self.n_iter, _GTOL, 1e-13, record, curvature)
        else:  # differences of a log L whose round-off (the large prior variance) is about 1e-8
            result = _scipy_lbfgsb(value_and_gradient, layout.x0, self.n_iter, record)
        self.n_iter_ = result.n_iter
        self.converged_ = result.converged
        if not result.converged:
            why = (
                f"at its cap of n_iter={self.n_iter} quasi-Newton iterations; raise n_iter to go on"
                if result.n_iter >= self.n_iter
                else f"after {result.n_iter} quasi-Newton iterations ({result.message}): the log-likelihood may be "
                "ill-conditioned here (try other starting values, or fewer components)"
            )
            warnings.warn(f"{self!r} stopped before converging, {why}", ConvergenceWarning, stacklevel=3)
        return layout.params(result.x), -result.value if np.isfinite(result.value) else None

    def _scaled_start(self, start: np.ndarray, seqs: Sequences, objective: _Objective | None) -> np.ndarray:
        """``start`` (:meth:`_component_start`) with every variance times the scale c that
        maximises log L along that ray. Multiplying all variances by c leaves the innovations v_t
        as they are and multiplies their variances F_t by c (exactly, with the exact diffuse
        start), so over the n steps after the diffuse ones log L(c) = const - (n log c + S / c) / 2,
        S = sum v_t^2 / F_t, peaks at c = S / n (the scale statsmodels' ``concentrate_scale``
        profiles out). With the exact start one pass of the ``objective`` gives S: dlog L/dc at
        c = 1 is (S - n) / 2 = sum_j v_j dlog L/dv_j over the variances v_j; with the approximate
        one, S is the sum of the squared standardised innovations of one filter pass."""
        variances = np.array([kind == "variance" for c in self.components for kind in c.kinds()])
        try:
            if objective is not None:
                _, slopes = objective(start)
                n = objective.n_effective
                scale = 1.0 + 2.0 * float(start[variances] @ slopes[variances]) / n if n > 0 else 1.0
            else:
                standardised = self._filter(self._system(start), seqs).standardised
                scale = float(np.nanmean(np.square(standardised))) if np.isfinite(standardised).any() else 1.0
        except (ValueError, np.linalg.LinAlgError):
            return start
        return np.where(variances, start * scale, start) if np.isfinite(scale) and scale > 0 else start

    def _component_start(self, seqs: Sequences) -> np.ndarray:
        y = seqs.values[:, 0]
        observed = np.isfinite(y)
        beta = np.zeros(self.n_exog)
        if self.n_exog:
            beta = np.linalg.lstsq(seqs.inputs[observed], y[observed], rcond=None)[0]
        series = np.split(y - seqs.inputs @ beta, seqs.offsets[1:-1])
        steps = np.concatenate([np.diff(s) for s in series])
        steps = steps[np.isfinite(steps)]
        scale = float(np.var(steps)) if steps.size > 1 else float(np.nanvar(y))
        context = StartContext(series, scale if scale > 0 else 1.0)
        parts = [beta if isinstance(c, Regression) else c.start(context) for c in self.components]
        return np.concatenate(parts)

    # --------------------------------------------------------------- inference
    def score(self, X: Any, lengths: Sequence[int] | None = None, *, exog: Any = None) -> float:
        """The log-likelihood of the data after each sequence's first d steps (d diffuse states),
        given those steps (missing values integrated out)."""
        params = self._params()
        seqs = self._sequences(X, lengths, exog)
        return self._log_likelihood(params, seqs)

    def aic(self, X: Any, lengths: Sequence[int] | None = None, *, exog: Any = None) -> float:
        """Akaike information criterion, -2 log-likelihood + 2 n_parameters."""
        return -2.0 * self.score(X, lengths, exog=exog) + 2.0 * self.n_parameters

    def bic(self, X: Any, lengths: Sequence[int] | None = None, *, exog: Any = None) -> float:
        """Bayesian information criterion, -2 log-likelihood + n_parameters log(n), n the observed
        values after the diffuse steps."""
        seqs = self._sequences(X, lengths, exog)
        return -2.0 * self.score(seqs) + self.n_parameters * np.log(
            _n_effective(seqs, self._system(self._params()).burn)
        )

    def standardised_residuals(
        self, X: Any, lengths: Sequence[int] | None = None, *, exog: Any = None
    ) -> np.ndarray | list[np.ndarray]:
        """The one-step innovations over their standard deviation, (y_t - E[y_t | y_<t]) / sd,
        per step (NaN where missing and in each sequence's first d, diffuse, steps)."""
        params = self._params()
        seqs = self._sequences(X, lengths, exog)
        standardised = self._filter(self._system(params), seqs).standardised
        return seqs.restore(standardised[:, None])

    def smooth(self, X: Any, lengths: Sequence[int] | None = None, *, exog: Any = None) -> StructuralSmootherResult:
        """The smoothed states, p(x_t | all observations) (exactly diffuse: Durbin & Koopman 2012,
        sec. 5.3), and each component's smoothed signal w' x_t with its variance w' P_t|T w,
        w the component's weights on the stacked state (:meth:`signals` of the components).

        >>> from modeshift.datasets import load_nile
        >>> nile = load_nile()["volume"].to_numpy(float)
        >>> model = StructuralModel.unobserved_components(level="local level")
        >>> model.params_ = np.array([1469.1, 15099.0])
        >>> smoothed = model.smooth(nile)
        >>> smoothed.components.columns.tolist()
        ['level', 'irregular']
        >>> bool(np.allclose(smoothed.components.sum(axis=1), nile))  # the parts add up to the series
        True
        """
        params = self._params()
        seqs = self._sequences(X, lengths, exog)
        system = self._system(params)
        log_lik, moments, (means, covariances, cross) = self._engine(system)._run_smoother(
            self._with_inputs(seqs), self._matrices(system)
        )
        log_lik = self._filtered(system, seqs, log_lik, *moments).log_likelihood
        weights = self._signal_weights()
        signals = pd.DataFrame({name: means @ w for name, w in weights.items()})
        variances = pd.DataFrame({name: np.einsum("i,tij,j->t", w, covariances, w) for name, w in weights.items()})
        if self.n_exog:
            signals["regression"] = seqs.inputs @ system.D[1:]
            variances["regression"] = 0.0
        if any(isinstance(c, Irregular) for c in self.components):
            y = seqs.values[:, 0]
            observed = np.isfinite(y)
            fitted = means @ system.C + self._inputs(seqs) @ system.D
            signals["irregular"] = np.where(observed, y - fitted, 0.0)
            C = system.C
            variances["irregular"] = np.where(observed, np.einsum("i,tij,j->t", C, covariances, C), system.R)
        return StructuralSmootherResult(
            seqs.restore(means),
            seqs.restore(covariances),
            seqs.restore(cross),
            log_lik,
            _per_sequence(signals, seqs),
            _per_sequence(variances, seqs),
        )

    def _signal_weights(self) -> dict[str, np.ndarray]:
        """Each component's signals as weights on the stacked state."""
        components = self._components()
        n = sum(c.n_states for c in components)
        weights, at = {}, 0
        for component in components:
            for name, w in component.signals().items():
                weights[name] = np.zeros(n)
                weights[name][at : at + component.n_states] = w
            at += component.n_states
        return weights

    def forecast(
        self,
        X: Any,
        horizon: int,
        lengths: Sequence[int] | None = None,
        *,
        exog: Any = None,
        future_exog: Any = None,
    ) -> Forecast:
        """The predictive means (horizon, 1) and variances (horizon, 1, 1) of y after each
        sequence's end, from the filtered state; ``future_exog`` (horizon, n_exog) with a
        regression. ``Forecast.interval(level)`` gives the prediction intervals."""
        params = self._params()
        horizon = int(horizon)
        seqs = self._sequences(X, lengths, exog)
        system = self._system(params)
        filtered = self._filter(system, seqs)
        futures = check_future_inputs(
            future_exog, horizon, seqs.n_sequences, self.n_exog, "this StructuralModel", name="future_exog"
        )
        matrices, ends = self._matrices(system), seqs.offsets[1:] - 1
        return Forecast.of_sequences(
            [
                predictive_moments(filtered.means[end], filtered.covariances[end], matrices, np.c_[np.ones(horizon), u])
                for end, u in zip(ends, futures)
            ]
        )

    # --------------------------------------------------------------- streaming
    def _stream_recursion(self) -> KalmanRecursion:
        """The Kalman filter of the stacked system, rebuilt only when ``params_`` changes: with its
        exact diffuse start, or, with ``diffuse_variance``, the large prior variance and the
        likelihood conditioned on the first d observed values (:class:`_BurnIn`), as ``score``."""
        cached, raw = self.__dict__.get("_stream_cache"), self.__dict__.get("params_")
        if cached is None or raw is None or not np.array_equal(cached[0], raw) or cached[1] != self.diffuse_variance:
            params = self._params()  # checked only when rebuilt: a stream calls this at every step
            system = self._system(params)
            matrices, mask = self._matrices(system), np.asarray(system.diffuse, dtype=bool)
            if self.diffuse_variance is not None:
                recursion = _BurnIn(matrices, system.burn)
            else:
                recursion = DiffuseKalmanRecursion(matrices, mask) if mask.any() else KalmanRecursion(matrices)
            cached = (params.copy(), self.diffuse_variance, recursion)
            self.__dict__["_stream_cache"] = cached
        return cached[2]

    def _stream_history(self) -> np.ndarray:
        return np.zeros((1, 1))  # the number of observed values seen (the approximate start's burn-in)

    def _stream_evidence(self, state: FilterState, y: Any, inputs: Any) -> tuple[tuple, np.ndarray, np.ndarray]:
        """(y_t, u_t) checked, u_t = (1, exog_t) (``inputs`` is the exog row) the move into step t;
        with ``diffuse_variance`` also whether y_t is one of the first d observed values."""
        row = check_row(y, 1)
        if self.n_exog:
            exog = check_row(inputs, self.n_exog, "exog")
            if np.isnan(exog).any():
                raise ValueError(f"exog has a missing entry (NaN): {exog}")
        elif inputs is not None:
            raise ValueError("an exog row was given but this StructuralModel has no Regression component")
        else:
            exog = np.zeros(0)
        u = np.r_[1.0, exog]
        seen, observed = int(state.history.sum()), bool(np.isfinite(row[0]))
        history = np.array([[seen + observed]], dtype=float)
        recursion = self._stream_recursion()
        if isinstance(recursion, _BurnIn):
            return (row, u, observed and seen < recursion.burn), u, history
        return (row, u), u, history

    def filter_forecast(self, state: FilterState, horizon: int, future_inputs: Any = None) -> Forecast:
        """The predictive law of the ``horizon`` observations after those a filter state has seen
        (``future_inputs`` the future exog rows (horizon, n_exog) with a regression), as :meth:`forecast`."""
        if not state.filtered:
            raise ValueError("the filter state has seen no observation yet")
        horizon = int(horizon)
        future = check_future_inputs(
            future_inputs, horizon, 1, self.n_exog, "this StructuralModel", name="future_exog"
        )[0]
        mean, cov = DiffuseKalmanRecursion.proper(state.filtered)
        return predictive_moments(mean, cov, self._stream_recursion().params, np.c_[np.ones(horizon), future])

    def sample(
        self,
        n_steps: int,
        n_sequences: int = 1,
        random_state: int | np.random.Generator | None = None,
        *,
        exog: Any = None,
    ) -> tuple[Any, Any]:
        """Simulate ``n_sequences`` series of ``n_steps``: observations (n_steps, 1) and states
        (n_steps, n_states), lists of them for several. Stationary states start from their
        stationary law, diffuse ones at 0. ``exog`` (n_steps, n_exog) with a regression."""
        params = self._params()
        T = int(n_steps)
        every = check_future_inputs(exog, T, int(n_sequences), self.n_exog, "this StructuralModel", name="exog")
        system = self._system(params)
        P0 = np.where(np.outer(system.diffuse, system.diffuse), 0.0, system.P0)
        rng = np.random.default_rng(random_state)
        draws = []
        for future in every:
            U = np.hstack([np.ones((T, 1)), future])
            states = np.empty((T, len(system.m0)))
            x = rng.multivariate_normal(system.m0, P0, method="eigh")
            for t in range(T):
                if t > 0:
                    x = (
                        system.A @ x
                        + system.B @ U[t]
                        + rng.multivariate_normal(np.zeros(len(x)), system.Q, method="eigh")
                    )
                states[t] = x
            noise = rng.normal(0.0, np.sqrt(system.R), size=T)
            draws.append(((states @ system.C + U @ system.D + noise)[:, None], states))
        return simulated(draws)

    # ----------------------------------------------------------- the report
    def standard_errors(self, X: Any, lengths: Sequence[int] | None = None, *, exog: Any = None) -> pd.Series:
        """Standard errors of ``params_`` from the observed information: the inverse of minus the
        Hessian of the log-likelihood in the natural parameters (central differences). NaN for
        a variance at 0 (on the boundary) and where the information is not positive definite."""
        params = self._params()
        seqs = self._sequences(X, lengths, exog)
        kinds = np.array([kind for c in self._components() for kind in c.kinds()])
        inside = np.flatnonzero(~((kinds == "variance") & (params <= 1e-9 * _variance_scale(params, kinds))))
        steps = 1e-4 * np.maximum(np.abs(params), 1e-2 * _variance_scale(params, kinds) ** (kinds == "variance"))

        def at(shift: dict[int, float]) -> float:
            moved = params.copy()
            for i, h in shift.items():
                moved[i] += h
            return self._log_likelihood(moved, seqs)

        centre = at({})
        hessian = np.empty((len(inside), len(inside)))
        for a, i in enumerate(inside):
            hi = steps[i]
            hessian[a, a] = (at({i: hi}) - 2 * centre + at({i: -hi})) / hi**2
            for b, j in enumerate(inside[:a]):
                hj = steps[j]
                hessian[a, b] = hessian[b, a] = (
                    at({i: hi, j: hj}) - at({i: hi, j: -hj}) - at({i: -hi, j: hj}) + at({i: -hi, j: -hj})
                ) / (4 * hi * hj)
        errors = np.full(len(params), np.nan)
        information = -hessian
        if len(inside) and np.all(np.linalg.eigvalsh(information) > 0):
            errors[inside] = np.sqrt(np.diag(np.linalg.inv(information)))
        return pd.Series(errors, index=list(self.param_names), name="std_error")

    def summary(self, X: Any, lengths: Sequence[int] | None = None, *, exog: Any = None) -> Summary:
        """The parameter table (estimate, standard error, z, p-value), log-likelihood, AIC and BIC,
        and diagnostics of the standardised one-step innovations after the diffuse steps:
        Ljung-Box Q at lag min(10, n / 5) (min(2 s, n / 5) with a seasonal period s, statsmodels'
        default), Jarque-Bera and the heteroskedasticity test H(n / 3)."""
        params = self._params()
        seqs = self._sequences(X, lengths, exog)
        errors = self.standard_errors(seqs).to_numpy()
        z = params / errors
        table = pd.DataFrame(
            {"estimate": params, "std_error": errors, "z": z, "p_value": 2 * stats.norm.sf(np.abs(z))},
            index=pd.Index(self.param_names, name="parameter"),
        )
        log_lik = self.score(seqs)
        n = _n_effective(seqs, self._system(params).burn)
        residuals = self._filter(self._system(params), seqs).standardised
        after_burn = np.concatenate(
            [r[np.flatnonzero(np.isfinite(r)).min(initial=len(r)) :] for r in np.split(residuals, seqs.offsets[1:-1])]
        )
        lags = self._ljung_box_lags(int(np.isfinite(after_burn).sum()))
        q, q_p = ljung_box(after_burn, lags=lags)
        jb, jb_p, _, _ = jarque_bera(after_burn)
        h, h_p = heteroskedasticity(after_burn)
        diagnostics = pd.DataFrame(
            {"statistic": [q[-1], jb, h], "p_value": [q_p[-1], jb_p, h_p]},
            index=pd.Index([f"Ljung-Box Q({lags})", "Jarque-Bera", "heteroskedasticity H"], name="test"),
        )
        fit = {
            "log_likelihood": log_lik,
            "aic": -2 * log_lik + 2 * self.n_parameters,
            "bic": -2 * log_lik + self.n_parameters * np.log(n),
            "n_observations": n,
        }
        described = " + ".join(repr(c) for c in self._components())
        return Summary(f"StructuralModel: {described}", table, fit, diagnostics)

    def _ljung_box_lags(self, n: int) -> int:
        periods = [int(c.period) for c in self._components() if isinstance(c, Seasonal)]
        return max(1, min(2 * periods[0], n // 5) if periods else min(10, n // 5))

    # ------------------------------------------------------------ persistence
    def _learned_arrays(self) -> dict[str, np.ndarray]:
        return {"params_": self._params()}

    def _learned_attributes(self) -> dict[str, Any]:
        learned = {name: self.__dict__[name] for name in ("history_", "converged_", "n_iter_", "log_likelihood_")}
        return {**learned, "component_types": [type(c).__name__ for c in self.components]}

    @classmethod
    def _hyperparameters_from_file(cls, hyperparameters: dict[str, Any], attributes: dict[str, Any]) -> dict[str, Any]:
        """The components rebuilt: a model file stores each as its fields and its type's name."""
        types, components = attributes.get("component_types"), hyperparameters.get("components")
        if not isinstance(types, list) or not isinstance(components, list) or len(types) != len(components):
            raise ValueError("components and component_types must be lists of one length")
        unknown = [name for name in types if name not in COMPONENTS]
        if unknown:
            raise ValueError(f"unknown component type(s) {unknown}; known: {sorted(COMPONENTS)}")
        rebuilt = tuple(
            COMPONENTS[name](*(tuple(f) if isinstance(f, list) else f for f in fields))  # JSON made tuples lists
            for name, fields in zip(types, components)
        )
        return {**hyperparameters, "components": rebuilt}

    def _restore(self, arrays: dict[str, np.ndarray], attributes: dict[str, Any]) -> None:
        """Read the parameters and the fit's record."""
        self.params_ = np.array(arrays["params_"])
        self.__dict__.update({name: value for name, value in attributes.items() if name != "component_types"})
        self._params()


def _per_sequence(frame: pd.DataFrame, seqs: Sequences) -> pd.DataFrame | list[pd.DataFrame]:
    """A frame over all steps in the form the data came in (a list of frames for list input)."""
    restored = seqs.restore(frame.to_numpy())
    if isinstance(restored, list):
        return [pd.DataFrame(part, columns=frame.columns) for part in restored]
    return pd.DataFrame(restored, columns=frame.columns)


class _BurnIn(KalmanRecursion):
    """The Kalman filter of the approximate diffuse start: evidence (y_t, u_t, conditioned), and a
    step holding one of the first ``burn`` observed values adds 0 to the log-likelihood (it is
    conditioned on, as in ``score``)."""

    def __init__(self, params: dict[str, np.ndarray], burn: int):
        super().__init__(params)
        self.burn = burn

    def update(self, predicted: tuple[np.ndarray, ...], evidence: tuple) -> tuple[tuple[np.ndarray, ...], float]:
        law, log_lik = super().update(predicted, evidence[:2])
        return law, 0.0 if evidence[2] else log_lik

    def remember(self, move: np.ndarray, evidence: tuple, *laws: tuple[np.ndarray, ...]) -> np.ndarray:
        return super().remember(move, evidence[:2], *laws)


def _scipy_lbfgsb(value_and_gradient: Any, x0: np.ndarray, max_iter: int, callback: Any) -> quasi_newton.Minimum:
    """scipy's L-BFGS-B in place of :func:`~modeshift.models.quasi_newton.minimise`, for a gradient
    by differences of a noisy f: where f's round-off stops every line search, its relative
    reduction test (``ftol``) ends the climb as converged. An undefined f is a large finite one."""
    undefined = 1e30

    def finite(x: np.ndarray) -> tuple[float, np.ndarray]:
        value, gradient = value_and_gradient(x)
        return (value, gradient) if np.isfinite(value) else (undefined, gradient)

    values: dict[bytes, float] = {}

    def remember(x: np.ndarray) -> tuple[float, np.ndarray]:
        value, gradient = finite(x)
        values[x.tobytes()] = value
        return value, gradient

    result = optimize.minimize(
        remember,
        x0,
        jac=True,
        method="L-BFGS-B",
        callback=lambda x: callback(x, values[x.tobytes()] if x.tobytes() in values else finite(x)[0]),
        options={"maxiter": max_iter, "ftol": 1e-13, "gtol": _GTOL, "maxcor": 20},
    )
    value = float(result.fun) if result.fun < undefined else np.inf
    x = result.x if np.isfinite(value) else np.array(x0, dtype=float)
    message = result.message if isinstance(result.message, str) else str(result.message)
    return quasi_newton.Minimum(x, value, result.jac, int(result.nit), int(result.nfev), bool(result.success), message)


def _n_effective(seqs: Sequences, burn: int) -> int:
    """The observed values after each sequence's first ``burn`` (those the likelihood conditions on)."""
    return int(np.isfinite(seqs.values[:, 0]).sum() - _first_observed(seqs, burn).sum())


def _first_observed(seqs: Sequences, count: int) -> np.ndarray:
    """Flags of the steps that hold the first ``count`` observed values of each sequence."""
    observed = np.isfinite(seqs.values[:, 0])
    seen = np.cumsum(observed)
    before = np.repeat(np.r_[0, seen[seqs.offsets[1:-1] - 1]], np.diff(seqs.offsets))
    return observed & (seen - before <= count)


def _variance_scale(params: np.ndarray, kinds: np.ndarray) -> float:
    """The largest variance among the parameters (the yardstick of "a variance at 0")."""
    variances = params[kinds == "variance"]
    return float(variances.max()) if variances.size else 1.0


def _slices(components: tuple[Any, ...]) -> list[slice]:
    """Each component's slice of the parameter vector."""
    bounds = list(itertools.accumulate((len(c.names()) for c in components), initial=0))
    return [slice(a, b) for a, b in zip(bounds, bounds[1:])]


class _Layout:
    """The components' parameters as one scaled free vector for the optimiser, and back: each
    free value divided by its size at the start, so that BFGS sees numbers of order one.
    A variance enters through its standard deviation s, unbounded: log L is even in s and near
    a variance of 0 nearly quadratic in it, so BFGS reaches a boundary optimum s = 0 fast
    (statsmodels' parameterisation), and a line search never stops on every variance at 0.
    By the components' contract, a value of kind "variance" is s^2 and one of kind "coefficient"
    is itself, whatever the component; only a component with values of kind "free" (AR, MA, a
    frequency, a damping) maps its free vector through its own ``from_free``."""

    def __init__(self, components: tuple[Any, ...], start: np.ndarray):
        self.slices = _slices(components)
        kinds = np.array([kind for c in components for kind in c.kinds()], dtype=str)
        self.variance = kinds == "variance"
        #: (component, its slice, the indices of its values of kind "free") of those that have some
        self.coupled = [
            (c, where, where.start + np.flatnonzero(kinds[where] == "free"))
            for c, where in zip(components, self.slices)
            if "free" in c.kinds()
        ]
        start = np.asarray(start, dtype=float)
        free = np.concatenate([np.zeros(0), *(c.to_free(start[where]) for c, where in zip(components, self.slices))])
        scale = np.abs(free)
        floor = 1e-3 * (scale[self.variance].max() if self.variance.any() else 1.0)
        self.units = np.where(
            kinds == "free",
            1.0,
            np.where(self.variance, np.maximum(scale, floor), np.where(scale > 0, scale, 1.0)),
        )
        self.x0 = free / self.units

    def params(self, x: np.ndarray) -> np.ndarray:
        """The components' values at x."""
        scaled = x * self.units
        values = np.where(self.variance, scaled * scaled, scaled)
        for component, where, _ in self.coupled:
            values[where] = component.from_free(scaled[where])
        return values

    def chain(self, x: np.ndarray, slopes: np.ndarray) -> np.ndarray:
        """dl/dx from ``slopes`` dl/dv: dv/dx = 2 s unit for a variance, unit for a coefficient, and
        for a value of kind "free" a column of the Jacobian of ``from_free``, by central
        differences (it couples the values: AR and MA coefficients)."""
        scaled = x * self.units
        gradient = slopes * self.units * np.where(self.variance, 2.0 * scaled, 1.0)
        for component, where, free in self.coupled:
            part = scaled[where]
            for i in free:
                h = 1e-6 * max(1.0, abs(x[i]))
                above, below = part.copy(), part.copy()
                above[i - where.start] += h * self.units[i]
                below[i - where.start] -= h * self.units[i]
                gradient[i] = slopes[where] @ (component.from_free(above) - component.from_free(below)) / (2 * h)
        return gradient


def _local(block: Block) -> np.ndarray:
    """A block as one flat vector: dynamics, covariance, observation, intercept, initial mean,
    initial covariance, irregular, coefficients (an absent part as zeros)."""
    n = len(block.diffuse)
    zeros = np.zeros(n)
    parts = (
        block.dynamics.ravel(),
        block.covariance.ravel(),
        block.observation,
        zeros if block.intercept is None else block.intercept,
        zeros if block.initial_mean is None else block.initial_mean,
        np.zeros(n * n) if block.initial_covariance is None else block.initial_covariance.ravel(),
        [block.irregular],
        block.coefficients,
    )
    return np.concatenate(parts)


class _Objective:
    """log L and its gradient in the components' values v, for BFGS (which chains it to its
    free vector x, :meth:`_Layout.chain`) and the start's scale: one compiled pass
    (:class:`~modeshift._kernels.lds_score.ScorePass`, the Fisher identity) gives the gradient G in
    the stacked system's matrices, chained to v through each component's block.

    Each component fills fixed entries of the system (its rows of the block-diagonal A, Q, P0 and
    B, its columns of C and D, the noise R), so the system is one flat vector, the sum of the
    blocks scattered to their ``positions``, and dl/dv_j = <d block / d v_j, G at its positions>.
    A component whose values are all variances and coefficients has a block linear in them: its
    part of the system and its derivatives are made once per model structure (:func:`_scatter`:
    the trends, seasonals, the irregular and the regression of most models). The others (ARIMA, a cycle) make theirs at
    every point (:func:`_block_derivatives`); only their rows of A move, so G in A is made there
    only.
    """

    def __init__(self, model: StructuralModel, seqs: Sequences, values: np.ndarray):
        components = model.components
        slices = _slices(components)
        blocks = [c.block(values[where]) for c, where in zip(components, slices)]
        system = model._stack(blocks)
        arguments, options = model._engine(system)._kernel_arguments(model._with_inputs(seqs), model._matrices(system))
        arrays = filter_arrays(*arguments, **options)
        self.burn = int(arrays[5].sum())  # the exact diffuse components: the steps they take
        #: the compiled pass, whose flat vector of matrices is written in place at every point
        typed = tuple((type(c), c) for c in components)
        self.fixed, self.directions, self.linear, self.nonlinear, moving = _scatter(typed, model.n_exog)
        self.score = ScorePass(arrays, moving)  # G in A only on the rows that move
        #: the observed values after the diffuse steps (those log L sums over)
        self.n_effective = _n_effective(seqs, self.burn)

    def __call__(self, values: np.ndarray) -> tuple[float, np.ndarray]:
        """(log L, d log L / dv) at the components' values v."""
        flat = self.score.matrices
        np.matmul(values[self.linear], self.directions, out=flat)
        flat += self.fixed
        derivatives = []
        for component, where, positions in self.nonlinear:
            block = component.block(values[where])
            flat[positions] += _local(block)  # a component fills each entry once
            derivatives.append(_block_derivatives(component, values[where], block))
        value, g = self.score()
        slopes = np.empty(values.size)  # dl/dv
        slopes[self.linear] = self.directions @ g
        for (_, where, positions), rows in zip(self.nonlinear, derivatives):
            slopes[where] = rows @ g[positions]
        return value, slopes


@functools.lru_cache(maxsize=64)
def _scatter(typed: tuple[tuple[type, Any], ...], n_exog: int) -> tuple:
    """Where each component's block goes in :class:`ScorePass`'s flat vector of the stacked
    system (m0, P0, A, B, Q, C, D, R, row-major), made once per model structure: (the linear
    components' blocks at 0 summed, their derivatives in their values (rows), those values'
    indices, (component, its slice, its positions) of each other component, the state rows
    that move with the latter). The arrays are read-only. ``typed`` pairs each component with its
    type: components are named tuples, equal to any tuple of the same values (LocalLevel() ==
    Regression(1)), so the type must be part of the cache key."""
    components = [component for _, component in typed]
    n, m = sum(int(c.n_states) for c in components), 1 + n_exog
    shapes = {"m0": (n,), "P0": (n, n), "A": (n, n), "B": (n, m), "Q": (n, n), "C": (1, n), "D": (1, m), "R": (1, 1)}
    bounds = np.cumsum([0, *(math.prod(shapes[key]) for key in FLAT)])
    at = {key: np.arange(a, b).reshape(shapes[key]) for key, a, b in zip(FLAT, bounds, bounds[1:])}
    fixed = np.zeros(bounds[-1])
    nonlinear, moving, linear, directions = [], [], [], []
    state, column = 0, 1
    for component, where in zip(components, _slices(components)):
        k = int(component.n_exog) if isinstance(component, Regression) else 0
        rows, exog = slice(state, state + int(component.n_states)), slice(column, column + k)
        positions = np.concatenate([
            at["A"][rows, rows].ravel(), at["Q"][rows, rows].ravel(), at["C"][0, rows], at["B"][rows, 0],
            at["m0"][rows], at["P0"][rows, rows].ravel(), at["R"][0], at["D"][0, exog],
        ])  # fmt: skip
        free = "free" in component.kinds()
        moving.append(np.full(int(component.n_states), free))
        if free:
            nonlinear.append((component, where, positions))
        else:  # block(v) = block(0) + sum_j v_j (block(e_j) - block(0))
            size = where.stop - where.start
            base = _local(component.block(np.zeros(size)))
            fixed[positions] += base  # a component fills each entry once
            for j, unit in enumerate(np.eye(size)):
                direction = np.zeros(fixed.size)
                direction[positions] = _local(component.block(unit)) - base
                directions.append(direction)
                linear.append(where.start + j)
        state, column = state + int(component.n_states), column + k
    arrays = (fixed, np.array(directions).reshape(len(directions), fixed.size), np.array(linear, dtype=int))
    for array in arrays:
        array.setflags(write=False)
    return (*arrays, tuple(nonlinear), np.concatenate(moving))


def _block_derivatives(component: Any, values: np.ndarray, block: Block) -> np.ndarray:
    """d block / d v_j for each value (rows, as :func:`_local` vectors): a component's own exact
    ``derivatives`` (ARIMA), else one step in a variance or coefficient (the block is linear in
    them) and central differences in the others."""
    exact = getattr(component, "derivatives", None)
    if exact is not None:
        return np.array([_local(change) for _, change in sorted(exact(values, block).items())])
    here = _local(block)
    rows = []
    for j, kind in enumerate(component.kinds()):
        step = max(1.0, abs(values[j])) * (1e-6 if kind == "free" else 1.0)
        above, below = values.copy(), values.copy()
        above[j] += step
        if kind == "free":
            below[j] -= step
            rows.append((_local(component.block(above)) - _local(component.block(below))) / (2 * step))
        else:
            rows.append((_local(component.block(above)) - here) / step)
    return np.array(rows)
