"""Markov-switching regression and autoregression (Hamilton 1989; Kim & Nelson 1999): the estimators.

A regime S_t follows a Markov chain with transition matrix P[i, j] = p(S_t = j | S_t-1 = i),
started from its stationary distribution; or, with ``fit(..., exog_tvtp=z)``, with
time-varying transition probabilities, a multinomial logit per source regime on covariates
z_t (Filardo 1994; :mod:`~modeshift.models.logit_transitions`), started from the stationary
distribution of the first step's matrix, both as statsmodels. :class:`MarkovRegression` switches the
coefficients (and optionally the variance) of a regression, :class:`MarkovAutoregression`
the mean an autoregression reverts to; the model itself, its likelihood and its steps are
in :mod:`~modeshift.models.switching_regression`, its parameters in
:mod:`~modeshift.models.switching_layout`. Both take several sequences (each starts its own
chain, the lags never cross from one to the next) and several series at once (D > 1: a
switching mean vector, full covariance matrices, coefficient matrices and, for the
autoregression, a VAR in mean-deviation form); a regression integrates missing values out.

Fitting is maximum likelihood in two stages. Expectation-conditional-maximisation runs
through the one EM driver (:func:`modeshift.models.em.run`: restarts, the convergence rule,
``history_``, ``converged_``, ``n_iter_``) from data-driven starts (quantile bands of the
level, raw and smoothed, and of the local spread when the variance switches), then random
persistent regime paths. Time-varying transitions have no closed-form M-step: each EM
iteration takes one Newton step on their logit coefficients, shortened until the expected
complete-data log-likelihood rises (a generalised EM). The winning restart is polished by BFGS
with the exact gradient on logits of the transition rows (or the logit coefficients) and log
variances, then by Newton steps on a
finite-difference Hessian of that gradient, which also gives standard errors. Regimes are
finally ordered by their first switching coefficient (for ``trend="c"``: ascending
intercept), else by variance, else by their first switching autoregressive coefficient.
The ECM step reads only sums over the sequences (the expected moves and the lagged moments,
:meth:`~modeshift.models.switching_regression.SwitchingRegression.statistics`), and the
polish only the summed log-likelihood and gradient, so a fit also runs over shards of the
data on a Dask cluster (:mod:`modeshift.distributed`), its starts from a sample of them; the
logit step of time-varying transitions reads sums over per-step rows that stay on the shards
(``keeps_rows``, :mod:`modeshift.models.em`), and each shard keeps its engine and series.

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
>>> model.dwell_times_.round(1)  # quarters
array([ 4.1, 10.4])
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from modeshift.chain_analysis import dwell_times, stationary_distribution
from modeshift.data import Sequences, as_sequences, check_array, check_covariances, check_probabilities
from modeshift.models import em
from modeshift.models.base import Forecast, Model, NotFittedError, check_possible, mode_segments, simulated
from modeshift.models.logit_transitions import logit_matrices
from modeshift.models.params import Boolean, Integer, OneOf, Rule
from modeshift.models.streaming import FilterState, Recursion, StreamingFilters, check_row
from modeshift.models.switching_layout import TRENDS, ParameterLayout, SwitchingParameters, switching_flags
from modeshift.models.switching_regression import Score, SeriesData, SwitchingRegression
from modeshift.statistics import Statistics

__all__ = ["MarkovAutoregression", "MarkovRegression"]

PerStep = np.ndarray | list[np.ndarray]  # one array, or one per sequence for a list of sequences

_PARAMETERS = ("transmat_", "transition_coef_", "trend_", "exog_coef_", "variances_", "covars_", "ar_coef_")
_STATIONARY = 1e-5  # the polish has converged when the largest gradient entry is below this
_COLLAPSED = 1e-7  # a regime variance at most this fraction of the series' variance is degenerate
#: old names -> new (DeprecationWarning); each class declares them, so that warnings name it
_RENAMED = {
    "n_iter_em": "n_iter",
    "max_iter": "n_iter_polish",
    "expected_durations_": "dwell_times_",
    "expected_durations": "dwell_times_",
}


class _Flags(Rule):
    """True, False, or one bool per coefficient (the number is checked against the data at fit)."""

    def allows(self, value: Any) -> bool:
        if isinstance(value, (bool, np.bool_)):
            return True
        return isinstance(value, (list, tuple, np.ndarray)) and all(isinstance(v, (bool, np.bool_)) for v in value)

    def describe(self) -> str:
        return "a bool or a sequence of bools"


@dataclass(frozen=True)
class _Series(Sequences):
    """The series of a fit (:meth:`_MarkovSwitching._em_data`): ``inputs`` holds the regressors
    (the trend columns, then the exogenous ones), then the ``n_tvtp`` transition covariates;
    ``exog_names`` names the exogenous columns."""

    n_tvtp: int = 0
    exog_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Problem:
    """What one fit's EM restarts share: the model on its expanded chain, the series, the
    data-driven start paths and the parameters set by hand (or kept by ``warm_start``)."""

    engine: SwitchingRegression
    data: SeriesData
    paths: list[np.ndarray]
    given: dict[str, np.ndarray]


class _MarkovSwitching(Model, StreamingFilters):
    """What Markov-switching regressions and autoregressions share: fitting, inference, persistence."""

    n_states: int
    trend: str
    switching_trend: bool | Sequence[bool]
    switching_exog: bool | Sequence[bool]
    switching_variance: bool
    n_iter: int
    n_restarts: int
    n_iter_polish: int
    tol: float
    random_state: int | np.random.Generator | None
    warm_start: bool
    verbose: bool
    callback: Callable[[int, float], Any] | None

    _constraints = {
        "n_states": Integer(1),
        "trend": OneOf(tuple(TRENDS)),
        "switching_trend": _Flags(),
        "switching_exog": _Flags(),
        "switching_variance": Boolean(),
        "n_iter_polish": Integer(0),
    }
    _file_arrays = {
        **dict.fromkeys(_PARAMETERS, "finite?"),
        **dict.fromkeys(("standard_errors_", "filtered_probabilities_", "smoothed_probabilities_"), "real?"),
    }
    _file_attributes = {
        **Model._file_attributes,
        **dict.fromkeys(("log_likelihood_", "gradient_norm_"), "number"),
        "exog_names_": "strings",
    }
    search_iterations = 15  # each restart's EM runs this long; the best goes on (see models.em)
    carries_workspace = True  # over shards: each keeps its engine, series and evidence table (models.em)
    keeps_rows = True  # over shards: the rows of the time-varying transitions' M-step stay there

    @property
    def _order(self) -> int:
        return 0

    @property
    def _switching_ar(self) -> tuple[bool, ...]:
        return ()

    @property
    def _n_trend(self) -> int:
        return len(TRENDS[self.trend])

    # ----------------------------------------------------------------------- data
    def _series(
        self,
        y: Any,
        lengths: Sequence[int] | None,
        exog: Any,
        n_exog: int | None = None,
        exog_tvtp: Any = None,
        n_tvtp: int | None = None,
        n_features: int | None = None,
        **columns: Any,
    ) -> tuple[SeriesData, list[str], Sequences]:
        """Check y (``n_features`` series when given; NaN only in a regression; every sequence
        longer than the order), exog (``n_exog`` columns when given) and exog_tvtp (``n_tvtp``
        columns when given, 0 for none), each one array for all steps or, for a list of
        sequences, a list of arrays; the series, their regressors (and transition covariates),
        the exogenous columns' names and the sequences of the steps after the first ``order``
        of each (to give per-step results back in the data's form). ``n_exog`` None: for a fit.
        With a data frame ``y``, ``exog_tvtp`` may name its columns (a list of names), as
        ``input_columns`` name those of ``exog`` (per-step results then follow the sequences' order).
        Sequences read by the fitted model's schema (``schema_.read(frame)``, as over a Dask frame)
        carry the exog columns, then the exog_tvtp ones, as their inputs: given neither ``exog``
        nor ``exog_tvtp``, inputs of that width are split so."""
        name = type(self).__name__
        if isinstance(y, pd.DataFrame) and _column_names(exog_tvtp):  # read with the frame, in its order
            given = list(columns.pop("input_columns", None) or ())
            seqs = as_sequences(y, input_columns=[*given, *exog_tvtp], **columns)
            exog_tvtp = seqs.inputs[:, len(given) :]
            y, columns = replace(seqs, inputs=seqs.inputs[:, : len(given)] if given else None, row_order=None), {}
        seqs = as_sequences(y, lengths, **columns)
        seqs = seqs.require(allow_missing=True, min_length=self._order + 1, n_features=n_features, model=name)
        if self._order and seqs.has_missing:
            sequence, step = seqs.locate(int(np.flatnonzero(np.isnan(seqs.values).any(axis=1))[0]))
            raise ValueError(
                f"sequence {sequence}, time step {step}: missing value (NaN); {name} cannot take missing values: "
                f"each is a lag of the next {self._order} step(s), whose density it leaves undefined "
                "(MarkovRegression integrates missing values out)"
            )
        if n_exog is None and seqs.has_missing:
            seqs.require_observed()
        read = None
        if n_tvtp and exog is None and exog_tvtp is None and _inputs_width(seqs) == n_exog + n_tvtp:
            # read by the fitted model's schema: the exog columns, then the exog_tvtp ones (in the sequences' order)
            read = _rows(seqs.inputs[:, n_exog:], seqs.n_steps, n_tvtp, "exog_tvtp")
            seqs = replace(seqs, inputs=seqs.inputs[:, :n_exog] if n_exog else None)
        given, names = _first_block(seqs, exog)
        width = _inputs_width(seqs) if given is None else given.shape[1]
        if n_exog is not None and width != n_exog:
            raise ValueError(f"this {name} was fitted with {n_exog} exog column(s), got {width}")
        inputs = seqs.with_inputs(exog, width, f"this {name} (exog)").inputs
        names = names or [f"x{c + 1}" for c in range(width)]
        tvtp = self._tvtp_rows(exog_tvtp, seqs, n_tvtp, "exog_tvtp") if read is None else read
        data = SeriesData(seqs.values, self._regressors(inputs, seqs.offsets), tvtp, seqs.offsets)
        return data, names, _after_order(seqs, self._order)

    def _tvtp_rows(self, exog_tvtp: Any, seqs: Sequences | int, n_tvtp: int | None, name: str) -> np.ndarray | None:
        """The transition covariates (n_rows, n_tvtp) of the steps of ``seqs`` (or of ``n_rows`` steps),
        or None for a constant transition matrix; ``n_tvtp`` None at fit (any number of columns)."""
        model = type(self).__name__
        if exog_tvtp is None:
            if n_tvtp:
                raise ValueError(f"this {model} has time-varying transitions on {n_tvtp} covariate(s): pass {name}")
            return None
        if n_tvtp == 0:
            raise ValueError(f"{name} was given but this {model} has a constant transition matrix")
        if isinstance(seqs, int):
            return _rows(exog_tvtp, seqs, n_tvtp, name)
        given, _ = _first_block(seqs, exog_tvtp)
        width = given.shape[1] if n_tvtp is None else n_tvtp
        if _per_sequence(seqs, exog_tvtp):
            if len(exog_tvtp) != seqs.n_sequences:
                raise ValueError(f"{len(exog_tvtp)} {name} arrays given for {seqs.n_sequences} sequences")
            blocks = [
                _rows(block, length, width, f"{name} of sequence {s}")
                for s, (block, length) in enumerate(zip(exog_tvtp, seqs.lengths))
            ]
            return np.ascontiguousarray(np.concatenate(blocks))
        rows = _rows(exog_tvtp, seqs.n_steps, width, name)
        return np.ascontiguousarray(rows if seqs.row_order is None else rows[seqs.row_order])

    def _regressors(self, exog: np.ndarray, offsets: np.ndarray, first_step: int = 0) -> np.ndarray:
        """The trend columns (the time trend counts steps from ``first_step`` + 1 at each sequence's
        start, sequences given by ``offsets``), then ``exog``."""
        steps = np.arange(first_step + 1.0, first_step + len(exog) + 1.0) - np.repeat(offsets[:-1], np.diff(offsets))
        trend = {"const": np.ones(len(exog)), "trend": steps}
        return np.ascontiguousarray(np.column_stack([*(trend[c] for c in TRENDS[self.trend]), exog]))

    def _exog_rows(self, exog: Any, n_rows: int, n_exog: int, name: str) -> np.ndarray:
        """(n_rows, n_exog) exogenous values for steps beyond the data (simulations, forecasts)."""
        if exog is None and n_exog:
            raise ValueError(
                f"this {type(self).__name__} has {n_exog} exog column(s): pass {name} ({n_rows}, {n_exog})"
            )
        if exog is None:
            return np.zeros((n_rows, 0))
        if not n_exog:
            raise ValueError(f"{name} was given but this {type(self).__name__} has no exog columns")
        return _rows(exog, n_rows, n_exog, name)

    def _engine(self, n_exog: int, n_tvtp: int = 0, n_features: int = 1) -> SwitchingRegression:
        self._check_params()
        switching_coef = switching_flags(self.switching_trend, self._n_trend, "switching_trend")
        switching_coef += switching_flags(self.switching_exog, n_exog, "switching_exog")
        layout = ParameterLayout(
            self.n_states, self._order, switching_coef, self._switching_ar, self.switching_variance, n_tvtp, n_features
        )
        return SwitchingRegression(layout)

    def _engine_for(self, params: SwitchingParameters) -> SwitchingRegression:
        """The engine of parameters (their numbers of exogenous columns, transition covariates, series)."""
        return self._engine(params.coef.shape[1] - self._n_trend, _n_tvtp(params), params.covariances.shape[1])

    def _column_names(self, n_exog: int) -> list[str]:
        exog_names = self.__dict__.get("exog_names_") or [f"x{c + 1}" for c in range(n_exog)]
        return [*TRENDS[self.trend], *exog_names]

    # -------------------------------------------------------------------- fitting
    def fit(
        self, y: Any, lengths: Sequence[int] | None = None, *, exog: Any = None, exog_tvtp: Any = None, **columns: Any
    ) -> _MarkovSwitching:
        """Maximum-likelihood estimates (EM with restarts, then a quasi-Newton polish); returns ``self``.

        Parameters
        ----------
        y : (n_steps,) array-like, or any form :func:`~modeshift.data.as_sequences` accepts
            The series: one, or several (a list, or one array cut by ``lengths``), each with
            its own chain (started afresh) and its own lags; the log-likelihood is the sum
            over the sequences. With an autoregression of order p, the first p values of each
            sequence are conditioned on.
        lengths : sequence of int, optional
            Cuts an array ``y`` into sequences (hmmlearn's form).
        exog : (n_steps,) or (n_steps, n_exog) array-like, optional
            Exogenous regressors, one row per value of ``y`` (a data frame's column names name
            them), or for a list of sequences a list with one array each; a data frame ``y``
            may carry them as ``input_columns``.
        exog_tvtp : (n_steps,) or (n_steps, n_tvtp) array-like, optional
            Covariates of time-varying transition probabilities (include a column of ones for
            a baseline), in the same form as ``exog``: row t drives the move into step t, a
            sequence's first row its start (the stationary distribution of its matrix), as
            statsmodels' ``exog_tvtp``. The fit then learns ``transition_coef_`` instead of
            ``transmat_``. With a data frame ``y``, a list of its column names.
        columns
            ``id_column``, ``time_column``, ``input_columns``, ... of a data frame ``y``.
        """
        self._start_fit()
        return self._fit_em(self._em_data(y, lengths, exog=exog, exog_tvtp=exog_tvtp, **columns))

    def _em_data(
        self, y: Any, lengths: Sequence[int] | None = None, *, exog: Any = None, exog_tvtp: Any = None, **columns: Any
    ) -> _Series:
        """What a fit reads, from ``fit``'s arguments (or one shard of them: :mod:`modeshift.distributed`):
        the checked series in the order of their sequences, their regressors then their
        transition covariates side by side as inputs."""
        data, names, kept = self._series(y, lengths, exog, exog_tvtp=exog_tvtp, **columns)
        n_tvtp = 0 if data.tvtp is None else data.tvtp.shape[1]
        return _Series(
            data.y,
            data.bounds,
            inputs=np.hstack([data.regressors, data.tvtp]) if n_tvtp else data.regressors,
            ids=kept.ids,
            form=kept.form,
            schema=kept.schema,
            n_tvtp=n_tvtp,
            exog_names=tuple(names),
        )

    def _series_data(self, series: _Series) -> SeriesData:
        """The series, regressors and transition covariates of what :meth:`_em_data` read."""
        n_regressors = series.inputs.shape[1] - series.n_tvtp
        tvtp = np.ascontiguousarray(series.inputs[:, n_regressors:]) if series.n_tvtp else None
        regressors = np.ascontiguousarray(series.inputs[:, :n_regressors])
        return SeriesData(series.values, regressors, tvtp, series.offsets)

    def _series_engine(self, series: _Series) -> SwitchingRegression:
        """The engine of the series of :meth:`_em_data` (their numbers of exogenous columns, covariates, series)."""
        n_exog = series.inputs.shape[1] - series.n_tvtp - self._n_trend
        return self._engine(n_exog, series.n_tvtp, series.values.shape[1])

    def _fit_em(self, series: _Series, over: em.Over | None = None) -> _MarkovSwitching:
        """The rest of ``fit``: EM with restarts, then the polish; ``over`` runs every pass over the
        data on shards held elsewhere (:mod:`modeshift.distributed`), ``series`` being then a sample
        of them to start from. Such a fit takes the series' variances from all the shards, its
        starts from the sample, sums the M-step's statistics and the polish's log-likelihood and
        gradient (so the observed information) over the shards, and records no per-step arrays."""
        given = {name: self.__dict__[name] for name in _PARAMETERS if name in self.__dict__}
        data = self._series_data(series)
        if over is not None:
            data = replace(data, scale=_variances(over, self))
        if series.n_tvtp and self.n_states < 2:
            raise ValueError("time-varying transition probabilities need n_states >= 2")
        constant = np.flatnonzero(~(data.variances > 0))
        if constant.size:
            raise ValueError(
                f"series {int(constant[0])} of y is constant (no variance): a variance estimated from it is 0 and "
                "its likelihood unbounded; there is nothing to switch between"
            )
        engine = self._series_engine(series)
        problem = _Problem(engine, data, self._data_driven_paths(data), given)
        self.__dict__["_centre"] = engine.centre(data)
        result = em.run(self, problem, label=f"{type(self).__name__} K={self.n_states}", over=over)
        del self.__dict__["_centre"]
        params = self.__dict__.pop("_current")
        _check_spread(params.ordered(), data)
        score = engine.scorer(data) if over is None else functools.partial(_summed_score, over, self, result.workspace)
        polished = self.n_iter > 0 and self.n_iter_polish > 0
        capped = False
        if polished:
            free, capped = engine.polish(engine.layout.pack(params), score, self.n_iter_polish)
            params = engine.layout.unpack(free)
            _check_spread(params.ordered(), data)
        self._set_parameters(params.ordered())
        self._learn_from(engine, score, list(series.exog_names), None if over is not None else data)
        if polished:
            at_maximum = self.gradient_norm_ < _STATIONARY
            self.converged_ = bool(self.converged_ and at_maximum)
            if capped and not at_maximum:
                warnings.warn(
                    f"{self!r} stopped its quasi-Newton polish at its cap of n_iter_polish={self.n_iter_polish} "
                    f"iterations before converging (largest gradient entry {self.gradient_norm_:.3g}); "
                    "raise n_iter_polish to go on",
                    em.ConvergenceWarning,
                    stacklevel=em._user_stacklevel(),
                )
        self._finish_fit(series)
        return self

    def _learn_from(self, engine: SwitchingRegression, score: Score, names: list[str], data: SeriesData | None) -> None:
        """What a fit records at its estimate besides the parameters: the per-step probabilities
        only with the ``data`` in memory."""
        params = self._parameters()
        log_lik, gradient = score(engine.layout.pack(params))
        self.exog_names_ = names
        self.log_likelihood_ = log_lik
        self.gradient_norm_ = float(np.abs(gradient).max(initial=0.0))
        self.standard_errors_ = engine.standard_errors(params, score)
        for name in ("smoothed_probabilities_", "filtered_probabilities_"):  # a warm start's, of other data
            self.__dict__.pop(name, None)
        if data is not None:
            self.smoothed_probabilities_ = engine.regimes(engine.e_step(params, data).posteriors)
            self.filtered_probabilities_ = engine.filtered(params, data)[0]

    def _data_driven_paths(self, data: SeriesData) -> list[np.ndarray]:
        """Regime paths to start EM from: quantile bands of the level (raw and smoothed), and of
        the local spread when the variance switches. Several series are standardised and their
        level is their first principal component; missing values count as the series' mean."""
        k, n = self.n_states, len(data.y)
        if k == 1:
            return [np.zeros(n, dtype=np.int64)]
        width = max(3, n // 25)

        def moving_average(x: np.ndarray) -> np.ndarray:  # within each sequence
            return np.concatenate([_moving_average(x[a:b], width) for a, b in data.sequences()])

        y = np.where(np.isnan(data.y), np.nanmean(data.y, axis=0), data.y) if data.patterns else data.y
        if y.shape[1] > 1:
            y = (y - y.mean(axis=0)) / np.sqrt(np.maximum(data.variances, data.variance_floor))
        level = y[:, 0] if y.shape[1] == 1 else y @ np.linalg.eigh(y.T @ y)[1][:, -1]
        fitted = np.linalg.lstsq(data.regressors, y, rcond=None)[0] if data.regressors.shape[1] else 0.0
        keys = [level, moving_average(level)]
        if self.switching_variance:
            keys.append(moving_average(((y - data.regressors @ fitted) ** 2).sum(axis=1)))
        quantiles = np.arange(1, k) / k
        return [np.searchsorted(np.quantile(key, quantiles), key) for key in keys]

    # -------------------------------------------------------------- the EM steps
    def _em_initialize(self, problem: _Problem, rng: np.random.Generator, restart: int) -> None:
        """Restart i starts from the i-th data-driven path, then from random persistent paths;
        restart 0 from the parameters set by hand (or kept by ``warm_start``), where set."""
        data = problem.data
        path = (
            problem.paths[restart]
            if restart < len(problem.paths)
            else _persistent_path(self.n_states, len(data.y), rng)
        )
        start = problem.engine.initial_parameters(path, data, self.__dict__["_centre"])
        if restart == 0 and problem.given:
            tvtp = problem.data.tvtp
            wrong = "transmat_" if tvtp is not None else "transition_coef_"
            if wrong in problem.given:
                raise ValueError(f"{wrong} is set but fit was given {'no ' if tvtp is None else ''}exog_tvtp")
            self._set_parameters(start)
            self.__dict__.update(problem.given)
            start = self._parameters()
            if tvtp is not None and start.transition_coef.shape[2] != tvtp.shape[1]:
                raise ValueError(
                    f"the transition_coef_ set has {start.transition_coef.shape[2]} covariate(s), "
                    f"the exog_tvtp given to fit {tvtp.shape[1]}"
                )
            if start.coef.shape[1] != data.regressors.shape[1]:
                raise ValueError(
                    f"the exog_coef_ set has {start.coef.shape[1] - self._n_trend} column(s), "
                    f"the exog given to fit {data.regressors.shape[1] - self._n_trend}"
                )
            if start.covariances.shape[1] != data.y.shape[1]:
                raise ValueError(
                    f"the parameters set are for {start.covariances.shape[1]} series, "
                    f"the data given to fit have {data.y.shape[1]}"
                )
        self.__dict__["_current"] = start

    def _e_step(self, data: _Problem | _Series, workspace: dict[str, Any]) -> tuple[float, Statistics]:
        """The log-likelihood and the M-step's statistics, of all the data or of one shard of it."""
        if isinstance(data, _Series):  # a shard (modeshift.distributed)
            engine, series = _shard_model(self, data, workspace)
        else:
            engine, series = data.engine, data.data
        current = self.__dict__["_current"]
        posterior = engine.e_step(current, series, workspace)
        return posterior.log_likelihood, engine.statistics(
            posterior, series, self.__dict__["_centre"], current.transition_coef
        )

    def _m_step(self, problem: _Problem, statistics: Statistics) -> None:
        self.__dict__["_current"] = problem.engine.m_step(
            self.__dict__["_current"], statistics, self.__dict__["_centre"], problem.data.variance_floor
        )

    def _em_snapshot(self) -> dict[str, SwitchingParameters]:
        return {"params": self.__dict__["_current"]}

    def _em_restore(self, snapshot: dict[str, SwitchingParameters]) -> None:
        self.__dict__["_current"] = snapshot["params"]

    # ------------------------------------------------------------------ parameters
    def _set_parameters(self, params: SwitchingParameters) -> None:
        for name in ("transmat_", "transition_coef_"):
            self.__dict__.pop(name, None)
        if params.transition_coef is None:
            self.transmat_ = params.transmat
        else:
            self.transition_coef_ = params.transition_coef
        for name in ("variances_", "covars_"):
            self.__dict__.pop(name, None)
        univariate = params.covariances.shape[1] == 1  # one series: its coefficients without the series axis
        coef = params.coef[:, :, 0] if univariate else params.coef
        self.trend_ = coef[:, : self._n_trend]
        self.exog_coef_ = coef[:, self._n_trend :]
        if univariate:
            self.variances_ = params.covariances[:, 0, 0]
        else:
            self.covars_ = params.covariances
        if self._order:
            self.ar_coef_ = params.ar[:, :, 0, 0] if univariate else params.ar

    def _parameters(self) -> SwitchingParameters:
        """The current parameters, checked, whether fitted or set by hand."""
        varying = "transition_coef_" in self.__dict__
        transitions = "transition_coef_" if varying else "transmat_"
        univariate = "covars_" not in self.__dict__
        required = [transitions, "trend_", "variances_" if univariate else "covars_"]
        missing = [name for name in required + (["ar_coef_"] if self._order else []) if name not in self.__dict__]
        if missing:
            raise NotFittedError(f"this {type(self).__name__} has no {', '.join(missing)}: call fit, or set them")
        k = self.n_states
        if univariate:
            variances = check_array("variances_", self.variances_, (k,))
            if (variances <= 0).any():
                raise ValueError(f"variances_ must be positive, got {variances}")
            covariances = variances[:, None, None]
        else:
            covariances = check_covariances("covars_", self.covars_)
            covariances = check_array("covars_", covariances, (k, None, None))
        d = covariances.shape[1]

        def per_regime(name: str, shape: tuple[int | None, ...]) -> np.ndarray:
            """(K, *shape) from a univariate model's (K, n) (or (K,) for n = 1), a multivariate one's as is."""
            value = np.asarray(self.__dict__.get(name, np.empty((k, 0))), dtype=np.float64)
            if univariate:
                value = check_array(name, value[:, None] if value.ndim == 1 else value, (k, shape[0]))
                return value.reshape(k, value.shape[1], *(1,) * (len(shape) - 1))
            return check_array(name, value.reshape(k, 0, *shape[1:]) if value.size == 0 else value, (k, *shape))

        transition_coef = None
        if varying:
            transition_coef = np.asarray(self.transition_coef_, dtype=np.float64)
            transition_coef = check_array("transition_coef_", transition_coef, (k, k - 1, None))
        return SwitchingParameters(
            transmat=None if varying else check_probabilities("transmat_", self.transmat_, (k, k)),
            coef=np.concatenate(
                [per_regime("trend_", (self._n_trend, d)), per_regime("exog_coef_", (None, d))], axis=1
            ),
            ar=per_regime("ar_coef_", (self._order, d, d)),
            covariances=covariances,
            transition_coef=transition_coef,
        )

    def _prepare(
        self, y: Any, lengths: Sequence[int] | None, exog: Any, exog_tvtp: Any = None
    ) -> tuple[SwitchingRegression, SwitchingParameters, SeriesData, Sequences]:
        """The engine, the parameters, the data and the steps per-step results cover."""
        params = self._parameters()
        n_exog, n_tvtp = params.coef.shape[1] - self._n_trend, _n_tvtp(params)
        data, _, steps = self._series(y, lengths, exog, n_exog, exog_tvtp, n_tvtp, params.covariances.shape[1])
        return self._engine_for(params), params, data, steps

    def _constant_transmat(self, what: str) -> np.ndarray:
        params = self._parameters()
        if params.transmat is None:
            raise ValueError(
                f"{what} of this {type(self).__name__} changes with its time-varying transition probabilities "
                "(transition_coef_): see transition_matrices"
            )
        return params.transmat

    def transition_matrices(self, exog_tvtp: Any) -> np.ndarray:
        """(n, K, K) transition matrices, entry t = p(S_t | S_t-1, z_t), for covariates (n, n_tvtp)."""
        params = self._parameters()
        rows = self._tvtp_rows(exog_tvtp, len(np.atleast_1d(np.asarray(exog_tvtp))), _n_tvtp(params), "exog_tvtp")
        return logit_matrices(params.transition_coef, rows)

    @property
    def means_(self) -> np.ndarray:
        """The intercept of each regime, (K,), or (K, D) for several series (zeros when the trend has no constant)."""
        params = self._parameters()
        means = params.coef[:, 0] if "c" in self.trend else np.zeros(params.coef.shape[::2])
        return means[:, 0] if means.shape[1] == 1 else means

    @property
    def startprob_(self) -> np.ndarray:
        """Distribution of the regime at the first (pre-sample) step: the stationary one of ``transmat_``
        (time-varying transitions: of the first step's matrix, ``transition_matrices(exog_tvtp)[0]``)."""
        return stationary_distribution(self._constant_transmat("the start distribution"))

    @property
    def dwell_times_(self) -> np.ndarray:
        """Expected number of steps spent in each regime once entered, 1 / (1 - P[k, k])."""
        return dwell_times(self._constant_transmat("the dwell time"))

    # ------------------------------------------------------------------- inference
    def score(self, y: Any, lengths: Sequence[int] | None = None, *, exog: Any = None, exog_tvtp: Any = None) -> float:
        """Exact log-likelihood of ``y`` given the first ``order`` values of each sequence, summed
        over the sequences, under the current parameters."""
        engine, params, data, _ = self._prepare(y, lengths, exog, exog_tvtp)
        return engine.log_likelihood(params, data)

    def predict_proba(
        self, y: Any, lengths: Sequence[int] | None = None, *, exog: Any = None, exog_tvtp: Any = None
    ) -> PerStep:
        """Smoothed regime probabilities p(S_t | all y) at each step after the first ``order`` of
        each sequence, (n_steps - order, K) (a list of them for a list of sequences)."""
        engine, params, data, steps = self._prepare(y, lengths, exog, exog_tvtp)
        return steps.restore(self._smoothed(engine, params, data))

    def _smoothed(self, engine: SwitchingRegression, params: SwitchingParameters, data: SeriesData) -> np.ndarray:
        posterior = engine.e_step(params, data)
        _check_possible(engine, params, data, posterior.log_likelihood)
        return engine.regimes(posterior.posteriors)

    def filter_proba(
        self, y: Any, lengths: Sequence[int] | None = None, *, exog: Any = None, exog_tvtp: Any = None
    ) -> PerStep:
        """Filtered regime probabilities p(S_t | y up to t) at each step after the first ``order`` of
        each sequence, (n_steps - order, K) (a list of them for a list of sequences)."""
        engine, params, data, steps = self._prepare(y, lengths, exog, exog_tvtp)
        filtered, log_lik = engine.filtered(params, data)
        _check_possible(engine, params, data, log_lik)
        return steps.restore(filtered)

    # ------------------------------------------------------------------- streaming
    def _stream_recursion(self) -> Recursion:
        """Hamilton's filter on the chain of the last p + 1 regimes, started from its stationary law
        (with time-varying transitions, that of the first p + 1 steps' matrices, known at step p);
        probabilities are reported per regime."""
        params = self._parameters()
        engine = self._engine_for(params)
        initial = None if params.transition_coef is not None else engine.initial(params.transmat[None])
        return Recursion(initial, engine.indicators[0])

    def _stream_history(self) -> np.ndarray:
        params = self._parameters()
        width = params.covariances.shape[1] + params.coef.shape[1] - self._n_trend + _n_tvtp(params)
        return np.zeros((0, width))

    def _stream_evidence(self, state: FilterState, y: Any, inputs: Any) -> tuple[Any, np.ndarray, np.ndarray]:
        """log p(y_t | y_t-p..t-1, regimes) per expanded state from the last p + 1 rows of (y, exog) (None
        for the first p steps, conditioned on), the expanded move into step t (with time-varying
        transitions, at step p the start law) and the new history. ``inputs`` is the step's exog row
        followed by its exog_tvtp row."""
        params = self._parameters()
        engine = self._engine_for(params)
        d, n_exog, n_tvtp, p = (
            params.covariances.shape[1],
            params.coef.shape[1] - self._n_trend,
            _n_tvtp(params),
            self._order,
        )
        row = check_row(y, d)
        if p and np.isnan(row).any():
            model = type(self).__name__
            raise ValueError(f"y_t = {row} has a missing entry (NaN); a {model} cannot take missing values")
        what = "inputs (the exog row, then the exog_tvtp row)"
        extra = np.zeros(0) if inputs is None and not n_exog + n_tvtp else check_row(inputs, n_exog + n_tvtp, what)
        if np.isnan(extra).any():
            raise ValueError(f"{what} has a missing entry (NaN): {extra}")
        rows = np.vstack([state.history, np.r_[row, extra][None]])
        history = rows[-p:] if p else state.history
        if len(rows) <= p:
            return None, np.zeros(0), history
        regressors = self._regressors(rows[:, d : d + n_exog], np.array([0, len(rows)]), state.step - p)
        data = SeriesData(np.ascontiguousarray(rows[:, :d]), regressors)
        residuals = engine.residuals(params, engine.deviations(params, data))
        evidence = engine.log_densities(params, residuals, data)[0]
        if not n_tvtp:
            return evidence, engine.expanded_moves(params.transmat[None])[0], history
        matrices = logit_matrices(params.transition_coef, np.ascontiguousarray(rows[:, d + n_exog :]))
        if state.step == p:  # the first step with evidence: the start law of the chain
            return evidence, engine.initial(matrices), history
        return evidence, engine.expanded_moves(matrices[-1:])[0], history

    def filter_forecast(self, state: FilterState, horizon: int, future_inputs: Any = None) -> Forecast:
        """The exact predictive law of the next value after those a filter state has seen (``horizon``
        1 only, for now): a mixture over the expanded states e of N(m_e, Sigma_e), m_e the value whose
        residual under e is 0, weighted by the predicted law. ``future_inputs``: the next step's exog
        row, then its exog_tvtp row (as ``inputs`` of :meth:`filter_step`)."""
        if int(horizon) != 1:
            raise NotImplementedError(f"streaming forecasts of a {type(self).__name__} are one step ahead only")
        if not state.filtered:
            raise ValueError("the filter state has not filtered any step yet")
        params = self._parameters()
        engine = self._engine_for(params)
        d = params.covariances.shape[1]
        extra = np.zeros(0) if future_inputs is None else np.ravel(np.asarray(future_inputs, dtype=float))
        _, move, _ = self._stream_evidence(state, np.zeros(d), None if future_inputs is None else extra)  # checks
        rows = np.vstack([state.history, np.r_[np.zeros(d), extra][None]])
        n_exog = params.coef.shape[1] - self._n_trend
        regressors = self._regressors(rows[:, d : d + n_exog], np.array([0, len(rows)]), state.step - self._order)
        data = SeriesData(np.ascontiguousarray(rows[:, :d]), regressors)
        means = -engine.residuals(params, engine.deviations(params, data))[0]  # (E, D)
        predicted = state.filtered[0] @ move
        covariances = params.covariances[engine.digits[:, 0]]
        mean = predicted @ means
        spread = means - mean
        covariance = np.einsum("e,eab->ab", predicted, covariances + spread[:, :, None] * spread[:, None, :])
        return Forecast(mean[None], covariance[None], (predicted @ engine.indicators[0])[None])

    def decode(
        self, y: Any, lengths: Sequence[int] | None = None, *, exog: Any = None, exog_tvtp: Any = None
    ) -> tuple[float, PerStep]:
        """log p(y, path) and the most probable regime path (Viterbi on the expanded chain) after
        the first ``order`` steps of each sequence; the pre-sample regimes are part of the maximisation."""
        engine, params, data, steps = self._prepare(y, lengths, exog, exog_tvtp)
        path, log_prob = engine.viterbi(params, data)
        _check_possible(engine, params, data, log_prob)
        return log_prob, steps.restore(path)

    def predict(
        self, y: Any, lengths: Sequence[int] | None = None, *, exog: Any = None, exog_tvtp: Any = None
    ) -> PerStep:
        """The most probable regime path (Viterbi) after the first ``order`` steps of each sequence,
        (n_steps - order,) (a list of them for a list of sequences)."""
        return self.decode(y, lengths, exog=exog, exog_tvtp=exog_tvtp)[1]

    def segment(
        self, y: Any, lengths: Sequence[int] | None = None, *, exog: Any = None, exog_tvtp: Any = None
    ) -> pd.DataFrame:
        """Runs of one regime on the Viterbi path: ``start``, ``end`` (exclusive; steps of the
        sequence, from ``order`` on), ``mode`` and ``probability`` (its mean smoothed probability
        over the run); a leading ``sequence`` column for several sequences."""
        engine, params, data, steps = self._prepare(y, lengths, exog, exog_tvtp)
        path, log_prob = engine.viterbi(params, data)
        _check_possible(engine, params, data, log_prob)
        table = mode_segments(replace(steps, form="array", row_order=None), path, self._smoothed(engine, params, data))
        table[["start", "end"]] += self._order
        return table

    def sample(
        self,
        n_steps: int,
        n_sequences: int = 1,
        random_state: int | np.random.Generator | None = None,
        *,
        exog: Any = None,
        exog_tvtp: Any = None,
    ) -> tuple[np.ndarray | list[np.ndarray], np.ndarray | list[np.ndarray]]:
        """Simulate ``n_sequences`` series of ``n_steps`` values: the series (n_steps, D) and its
        regimes (n_steps,), or lists of them for several.

        The chain starts from its stationary distribution and the deviations from the regime
        means before the first step are 0 (an autoregression starts at its regimes' means).
        ``exog`` (n_steps, n_exog) holds the exogenous regressors (the same for every series);
        the time trend counts from 1. With time-varying transitions ``exog_tvtp`` (n_steps, n_tvtp)
        holds their covariates (row 0 sets the start, the stationary distribution of its matrix).
        """
        params = self._parameters()
        n_exog = params.coef.shape[1] - self._n_trend
        regressors = self._regressors(self._exog_rows(exog, int(n_steps), n_exog, "exog"), np.array([0, int(n_steps)]))
        tvtp = self._tvtp_rows(exog_tvtp, int(n_steps), _n_tvtp(params), "exog_tvtp")
        engine, rng = self._engine_for(params), np.random.default_rng(random_state)
        design = SeriesData(np.empty((0, params.covariances.shape[1])), regressors, tvtp)
        draws = [engine.simulate(params, design, rng) for _ in range(int(n_sequences))]
        return simulated(draws)

    def forecast(
        self,
        y: Any,
        horizon: int,
        lengths: Sequence[int] | None = None,
        *,
        exog: Any = None,
        future_exog: Any = None,
        exog_tvtp: Any = None,
        future_exog_tvtp: Any = None,
    ) -> Forecast:
        """The predictive distribution of the ``horizon`` values after the end of each sequence of ``y``
        (lists of them for several sequences).

        ``means`` (horizon, D) and ``covariances`` (horizon, D, D) are exact (moment propagation
        of the jump linear system the future is, from the filtered last p + 1 regimes; see
        :func:`~modeshift.models.jump_linear.jump_linear_moments`), and so are the
        ``mode_probabilities`` (horizon, K). ``future_exog`` (horizon, n_exog) holds the
        exogenous regressors of the steps ahead; the time trend goes on counting. With
        time-varying transitions, ``exog_tvtp`` holds their covariates along ``y`` and
        ``future_exog_tvtp`` (horizon, n_tvtp) those of the moves into the steps ahead.
        ``future_exog`` and ``future_exog_tvtp`` may be lists with one array per sequence.
        """
        horizon = int(horizon)
        engine, params, data, _ = self._prepare(y, lengths, exog, exog_tvtp)
        _check_possible(engine, params, data, engine.log_likelihood(params, data))
        n_exog, n_sequences = params.coef.shape[1] - self._n_trend, len(data.bounds) - 1
        futures = []
        for s, (first, end) in enumerate(data.sequences()):
            rows = self._exog_rows(_of_sequence(future_exog, s, n_sequences), horizon, n_exog, "future_exog")
            tvtp = _of_sequence(future_exog_tvtp, s, n_sequences)
            futures.append(
                (
                    self._regressors(rows, np.array([0, horizon]), end - first),
                    self._tvtp_rows(tvtp, horizon, _n_tvtp(params), "future_exog_tvtp"),
                )
            )
        parts = [
            Forecast(means, covariances, modes) for modes, means, covariances in engine.forecast(params, data, futures)
        ]
        return Forecast.of_sequences(parts)

    def describe(self) -> pd.DataFrame:
        """One row per regime: long-run share of time (``occupancy``, also the start distribution),
        ``dwell_time`` 1 / (1 - P[k, k]) in steps, switch probabilities ``to_j``, then the
        coefficients (trend and exogenous columns, ``sigma2``, ``ar.L1`` ...; for several series
        named as in :meth:`summary`). With time-varying transitions the first columns are their
        logit coefficients instead, ``to_{j}.tvtp{c}`` (``transition_coef_[:, j, c]``)."""
        params = self._parameters()
        transmat = params.transmat
        layout = self._engine_for(params).layout
        coef_names, covariance_names, ar_names = layout.value_names(
            self._column_names(params.coef.shape[1] - self._n_trend)
        )
        rows, columns = np.array(layout.covariance_entries).T
        if transmat is None:
            coef = params.transition_coef
            chain = {f"to_{j}.tvtp{c}": coef[:, j, c] for j in range(coef.shape[1]) for c in range(coef.shape[2])}
        else:
            chain = {
                "occupancy": stationary_distribution(transmat),
                "dwell_time": self.dwell_times_,
                **{f"to_{j}": transmat[:, j] for j in range(self.n_states)},
            }
        k = self.n_states
        table = {
            **chain,
            **dict(zip(coef_names, params.coef.reshape(k, -1).T)),
            **dict(zip(covariance_names, params.covariances[:, rows, columns].T)),
            **dict(zip(ar_names, params.ar.reshape(k, -1).T)),
        }
        return pd.DataFrame(table, index=pd.RangeIndex(self.n_states, name="mode"))

    # ------------------------------------------------------------ model selection
    @property
    def n_parameters(self) -> int:
        """Number of free parameters: K(K-1) transition probabilities, coefficients, variances, phi."""
        params = self._parameters()
        return self._engine_for(params).layout.n_parameters

    def aic(
        self, y: Any = None, lengths: Sequence[int] | None = None, *, exog: Any = None, exog_tvtp: Any = None
    ) -> float:
        """-2 log-likelihood + 2 n_parameters (of the fitted series when ``y`` is not given)."""
        log_lik = (
            self._recorded("log_likelihood_") if y is None else self.score(y, lengths, exog=exog, exog_tvtp=exog_tvtp)
        )
        return -2.0 * log_lik + 2.0 * self.n_parameters

    def bic(
        self, y: Any = None, lengths: Sequence[int] | None = None, *, exog: Any = None, exog_tvtp: Any = None
    ) -> float:
        """-2 log-likelihood + n_parameters log(n_steps - order) (of the fitted series when ``y`` is not given)."""
        if y is None:
            log_lik, n_steps = self._recorded("log_likelihood_"), len(self._recorded("smoothed_probabilities_"))
        else:
            seqs = as_sequences(y, lengths)
            log_lik, n_steps = (
                self.score(seqs, exog=exog, exog_tvtp=exog_tvtp),
                seqs.n_steps - self._order * seqs.n_sequences,
            )
        return -2.0 * log_lik + self.n_parameters * np.log(n_steps)

    def _recorded(self, name: str) -> Any:
        """What ``fit`` recorded about the fitted series (to be called without data)."""
        if name not in self.__dict__:
            raise NotFittedError(
                f"this {type(self).__name__} keeps no record of a fitted series (not fitted, or fitted over a "
                "cluster): pass the series"
            )
        return self.__dict__[name]

    def summary(self) -> pd.DataFrame:
        """Parameter estimates and standard errors (inverse observed information), statsmodels' names and order."""
        params = self._parameters()
        n_exog = params.coef.shape[1] - self._n_trend
        layout = self._engine_for(params).layout
        errors = self.__dict__.get("standard_errors_")
        return pd.DataFrame(
            {
                "estimate": layout.constrained(params),
                "std_err": np.full(layout.n_parameters, np.nan) if errors is None else errors,
            },
            index=layout.names(self._column_names(n_exog)),
        )

    # ---------------------------------------------------------------- persistence
    def _learned_arrays(self) -> dict[str, np.ndarray]:
        self._parameters()
        names = [*_PARAMETERS, "standard_errors_", "filtered_probabilities_", "smoothed_probabilities_"]
        return {name: np.asarray(self.__dict__[name]) for name in names if name in self.__dict__}

    def _learned_attributes(self) -> dict[str, Any]:
        names = ("log_likelihood_", "converged_", "gradient_norm_", "exog_names_", "history_", "n_iter_")
        return {name: self.__dict__[name] for name in names if name in self.__dict__}

    def _restore(self, arrays: dict[str, np.ndarray], attributes: dict[str, Any]) -> None:
        for name, value in {**arrays, **attributes}.items():
            setattr(self, name, value)
        self._parameters()


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
    n_iter, tol : int, float
        Each EM restart stops after ``n_iter`` iterations or when the log-likelihood improves by
        less than ``tol`` (see :mod:`modeshift.models.em`); ``n_iter=0`` only initialises (no
        polish either). EM only has to find the best basin, the polish then climbs to its top,
        hence the loose default ``tol``. ``n_iter_em=`` is the old name of ``n_iter`` (deprecated).
    n_restarts : int
        Number of EM starts (data-driven first, then random), each run for
        ``search_iterations`` (15) EM iterations; the best goes on to convergence and is polished.
    n_iter_polish : int
        At most this many BFGS iterations in the polish (0: none); ``max_iter=`` is its old
        name (deprecated).
    random_state : int or numpy Generator, optional
        Seeds the random starts.
    warm_start : bool
        Start ``fit`` from the current parameters (learned or set by hand) instead of afresh.
    verbose : bool
        Show a live progress bar of the EM iterations of each restart (drawn by the interface
        layer; the quasi-Newton polish that follows is not shown).
    callback : callable, optional
        ``callback(iteration, log_likelihood)`` at every EM iteration of every restart; not saved.

    Attributes
    ----------
    transmat_ : (K, K) array
        Row-stochastic: transmat_[i, j] = p(S_t = j | S_{t-1} = i) (statsmodels stores the transpose).
        Absent after a fit with ``exog_tvtp``.
    transition_coef_ : (K, K-1, n_tvtp) array
        After a fit with ``exog_tvtp`` only: log p(S_t = j | S_t-1 = i, z_t) / p(S_t = K-1 | i, z_t)
        = z_t' transition_coef_[i, j] (``summary`` names them ``p[i->j].tvtp{c}``, as statsmodels);
        :meth:`transition_matrices` evaluates them.
    startprob_ : (K,) array
        The chain's start distribution: its stationary one (statsmodels' default); not
        defined with time-varying transitions (nor ``dwell_times_``: they change with z_t).
    trend_ : (K, n_trend) array; means_ : (K,) array
        Trend coefficients per regime; ``means_`` is the intercept column. For D > 1 series,
        (K, n_trend, D) and (K, D): y_t - B_k' x_t is the deviation, B_k = the coefficients'
        rows stacked.
    exog_coef_ : (K, n_exog) array, or (K, n_exog, D) for D > 1 series
    variances_ : (K,) array
        Equal entries unless ``switching_variance``. For D > 1 series ``covars_`` (K, D, D)
        instead, full covariance matrices (``summary`` names the entries ``sigma2.y1``,
        ``cov.y2.y1``, ...).
    dwell_times_ : (K,) array
        Expected steps per visit, 1 / (1 - transmat_[k, k]) (``expected_durations_`` is its old name).
    log_likelihood_ : float
    filtered_probabilities_, smoothed_probabilities_ : (n_steps, K) arrays
        After a fit in memory only (a fit over a Dask cluster keeps no per-step arrays of its
        data: ``predict_proba`` maps over a frame's partitions).
    standard_errors_ : array
        Of the parameters in :meth:`summary` order, from the observed information at the fit.
    history_ : list of float
        The log-likelihood at each EM iteration of the winning restart, before the polish.
    n_iter_ : int
        EM iterations of the winning restart.
    converged_ : bool; gradient_norm_ : float
        Whether EM met its convergence rule and the polish reached a stationary point (largest
        gradient entry below 1e-5); the largest gradient entry at the estimate.

    Notes
    -----
    All methods other than ``fit`` also work with parameters set by hand (``transmat_`` or
    ``transition_coef_``, ``trend_``, ``exog_coef_``, ``variances_``), which are also the start
    of a first fit. A model with time-varying transitions takes ``exog_tvtp`` in every method
    that takes data (or reads it with the data by its schema: ``model.predict(model.schema_.read(frame))``,
    and over a Dask frame), ``sample(..., exog_tvtp=)`` and ``forecast(..., future_exog_tvtp=)``
    the covariates of the steps simulated or ahead. Several sequences are independent
    given the parameters; per-step results cover the steps after the first ``order`` of
    each (lists of them for a list of sequences; ``filtered_probabilities_`` and
    ``smoothed_probabilities_`` stack them). Missing values (NaN) are integrated out: a
    wholly missing step carries no evidence (the regime probabilities are predicted through
    it), a partly missing one has the density of its observed entries, and EM takes the
    missing entries' conditional moments given the observed ones (an exact EM).

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
        n_iter: int = 100,
        n_restarts: int = 10,
        n_iter_polish: int = 500,
        tol: float = 1e-3,
        random_state: int | np.random.Generator | None = None,
        warm_start: bool = False,
        verbose: bool = False,
        callback: Callable[[int, float], Any] | None = None,
        **renamed: Any,
    ):
        self.n_states = n_states
        self.trend = trend
        self.switching_trend = switching_trend
        self.switching_exog = switching_exog
        self.switching_variance = switching_variance
        self.n_iter = n_iter
        self.n_restarts = n_restarts
        self.n_iter_polish = n_iter_polish
        self.tol = tol
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.callback = callback
        self._take_renamed(renamed)

    _renamed = _RENAMED


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
        Autoregressive order p >= 1 (the recursions run on K^(p+1) expanded states; use
        :class:`MarkovRegression` for p = 0).
    switching_ar : bool or sequence of bool
        Whether each autoregressive coefficient switches with the current regime.
    trend, switching_trend, switching_exog, switching_variance, n_iter, n_restarts, n_iter_polish, tol,
    random_state, warm_start, verbose, callback
        As for :class:`MarkovRegression` (here exogenous coefficients do not switch by default).

    Attributes
    ----------
    ar_coef_ : (K, order) array, or (K, order, D, D) for D > 1 series
        phi per regime (equal rows where not switching); for several series the matrices Phi_j,
        ``ar_coef_[k, j - 1] @ (y_t-j - mean)`` the lag's effect (a VAR in mean-deviation form:
        y_t - mu_{S_t} = sum_j Phi_{j, S_t} (y_t-j - mu_{S_t-j}) + e_t). The others as for
        :class:`MarkovRegression`.

    Notes
    -----
    Missing values are refused (with the sequence and step of the first): a missing value
    is a lag of the next ``order`` steps, whose conditional density it leaves undefined
    (the exact likelihood would integrate over the missing value inside the expanded-chain
    recursion, a Gaussian-mixture filter). :class:`MarkovRegression` integrates them out.

    Examples
    --------
    >>> from modeshift import MarkovAutoregression
    >>> from modeshift.datasets import load_hamilton_gnp
    >>> gnp = load_hamilton_gnp()["rgnp_growth"]
    >>> model = MarkovAutoregression(order=4, switching_ar=False, random_state=0).fit(gnp)
    >>> model.ar_coef_[0].round(3)
    array([ 0.013, -0.058, -0.247, -0.213])
    >>> model.predict(gnp)[:8]  # most probable regime path from 1952Q2 (0: recession)
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
        n_iter: int = 100,
        n_restarts: int = 10,
        n_iter_polish: int = 500,
        tol: float = 1e-3,
        random_state: int | np.random.Generator | None = None,
        warm_start: bool = False,
        verbose: bool = False,
        callback: Callable[[int, float], Any] | None = None,
        **renamed: Any,
    ):
        self.n_states = n_states
        self.order = order
        self.trend = trend
        self.switching_ar = switching_ar
        self.switching_trend = switching_trend
        self.switching_exog = switching_exog
        self.switching_variance = switching_variance
        self.n_iter = n_iter
        self.n_restarts = n_restarts
        self.n_iter_polish = n_iter_polish
        self.tol = tol
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.callback = callback
        self._take_renamed(renamed)

    _constraints = {**_MarkovSwitching._constraints, "order": Integer(1), "switching_ar": _Flags()}
    _renamed = _RENAMED

    @property
    def _order(self) -> int:
        return self.order

    @property
    def _switching_ar(self) -> tuple[bool, ...]:
        return switching_flags(self.switching_ar, self.order, "switching_ar")


def _n_tvtp(params: SwitchingParameters) -> int:
    """The number of transition covariates (0: a constant transition matrix)."""
    return 0 if params.transition_coef is None else params.transition_coef.shape[2]


def _check_possible(engine: SwitchingRegression, params: SwitchingParameters, data: SeriesData, value: float) -> None:
    """The rule for impossible data (:func:`~modeshift.models.base.check_possible`) where ``value``, a
    log-likelihood or a path's log-probability, is not finite: the first sequence of probability 0
    and, by the filter, its first impossible step (of the sequence, the first ``order`` included)."""
    if np.isfinite(value):
        return

    def filtered() -> np.ndarray:  # the first ``order`` steps of each sequence conditioned on: a law each
        out = np.full((len(data.y), engine.n_states), 1.0 / engine.n_states)
        with np.errstate(invalid="ignore", over="ignore"):  # no law from the impossible step on
            out[engine.rows(data)] = engine.filtered(params, data)[0]
        return out

    cause = "a value no regime's density reaches (a variance far too small for it), or a move the transitions forbid"
    check_possible(engine.log_likelihoods(params, data), cause, filtered, data.bounds)


def _check_spread(params: SwitchingParameters, data: SeriesData) -> None:
    """Refuse a fit whose regime explains part of the data with (almost) no noise.

    The likelihood of a switching variance is unbounded: a regime that takes a stretch of
    repeated values (a stuck sensor) drives its variance to 0 and the log-likelihood to
    infinity. Such a fit is degenerate, not an estimate: a ``ValueError`` names the regime
    (and the longest constant stretch) once a variance falls to ``_COLLAPSED`` times the
    series' variance, before the polish, whose curvature would be undefined there.
    """
    smallest = np.linalg.eigvalsh(params.covariances)[:, 0]
    collapsed = np.flatnonzero(smallest <= _COLLAPSED * max(float(np.mean(data.variances)), 1e-300))
    if not collapsed.size:
        return
    where = ""
    repeated = np.concatenate([[False], (data.y[1:] == data.y[:-1]).all(axis=1)])  # y_t = y_t-1
    repeated[data.bounds[:-1]] = False
    runs = _runs(repeated)
    if runs.size:
        start, end = runs[np.argmax(runs[:, 1] - runs[:, 0])]  # rows start - 1 .. end - 1 are equal
        sequence = int(np.searchsorted(data.bounds, start - 1, side="right") - 1)
        first = start - 1 - int(data.bounds[sequence])
        where = f"; sequence {sequence} repeats one value over time steps {first}..{first + end - start}"
    raise ValueError(
        f"the variance of regime {int(collapsed[0])} collapsed to {smallest[collapsed[0]]:.3g} (under "
        f"{_COLLAPSED:g} of the series' variance): it explains steps with no noise, where the likelihood has "
        f"no maximum{where}. Remove or cut out constant stretches (a stuck sensor), or set switching_variance=False"
    )


def _runs(mask: np.ndarray) -> np.ndarray:
    """(n, 2) the [start, end) of each run of True in ``mask``."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return np.column_stack([np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)])


def _persistent_path(n_states: int, n_steps: int, rng: np.random.Generator) -> np.ndarray:
    """A random regime path that stays put with a probability drawn from [0.8, 0.98]."""
    path = np.zeros(n_steps, dtype=np.int64)
    if n_states == 1:
        return path
    stay = rng.uniform(0.8, 0.98)
    path[0] = rng.integers(n_states)
    for t in range(1, n_steps):
        path[t] = (path[t - 1] + rng.integers(1, n_states)) % n_states if rng.random() > stay else path[t - 1]
    return path


def _moving_average(x: np.ndarray, width: int) -> np.ndarray:
    padded = np.pad(x, (width // 2, width - 1 - width // 2), mode="edge")
    return np.convolve(padded, np.ones(width) / width, mode="valid")


def _per_sequence(seqs: Sequences, value: Any) -> bool:
    """Whether a per-step extra is given as one array per sequence (for a list of sequences)."""
    return seqs.form == "list" and isinstance(value, (list, tuple)) and len(value) > 0 and not np.isscalar(value[0])


def _first_block(seqs: Sequences, value: Any, name: str = "exog") -> tuple[np.ndarray | None, list[str] | None]:
    """A per-step extra's (first sequence's) values as a 2-D array, and its column names if a data frame."""
    if value is None:
        return None, None
    block = value[0] if _per_sequence(seqs, value) else value
    names = [str(c) for c in block.columns] if isinstance(block, pd.DataFrame) else None
    array = np.asarray(block, dtype=np.float64)
    array = array[:, None] if array.ndim == 1 else array
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 1-D or 2-D array, got shape {array.shape}")
    return array, names


def _inputs_width(seqs: Sequences) -> int:
    return 0 if seqs.inputs is None else seqs.inputs.shape[1]


def _rows(value: Any, n_rows: int, width: int, name: str) -> np.ndarray:
    """``value`` as a finite (n_rows, width) array (a 1-D one as a column)."""
    array = np.asarray(value, dtype=np.float64)
    return check_array(name, array[:, None] if array.ndim == 1 else array, (n_rows, width))


def _after_order(seqs: Sequences, order: int) -> Sequences:
    """The steps after the first ``order`` of each sequence, in the same form (per-step results
    cover them)."""
    keep = np.concatenate([np.arange(a + order, b) for a, b in zip(seqs.offsets[:-1], seqs.offsets[1:])])
    row_order = None if seqs.row_order is None else np.argsort(np.argsort(seqs.row_order[keep]))
    offsets = seqs.offsets - order * np.arange(len(seqs.offsets))
    return replace(seqs, values=seqs.values[keep], offsets=offsets, times=None, inputs=None, row_order=row_order)


def _of_sequence(value: Any, sequence: int, n_sequences: int) -> Any:
    """Sequence ``sequence``'s future extra: the value itself, or its entry in a list of one per sequence."""
    if n_sequences > 1 and isinstance(value, (list, tuple)) and len(value) == n_sequences and np.ndim(value[0]) >= 1:
        return value[sequence]
    return value


def _column_names(value: Any) -> bool:
    """Whether ``value`` names columns of a data frame (a non-empty list or tuple of strings)."""
    return isinstance(value, (list, tuple)) and len(value) > 0 and all(isinstance(v, str) for v in value)


def _variances(over: em.Over, model: _MarkovSwitching) -> np.ndarray:
    """(D,) the variance of each series over its observed values in all the shards ``over`` sums
    (two passes, as ``np.nanvar``: the mean, then the squared deviations from it)."""
    counts, sums = over(_observed_sums, model)
    mean = sums / counts
    return over(functools.partial(_squared_deviations, mean=mean), model) / counts


def _observed_sums(model: Any, shard: Sequences) -> tuple[np.ndarray, np.ndarray]:
    return (~np.isnan(shard.values)).sum(axis=0).astype(np.float64), np.nansum(shard.values, axis=0)


def _squared_deviations(model: Any, shard: Sequences, mean: np.ndarray) -> np.ndarray:
    return np.nansum((shard.values - mean) ** 2, axis=0)


def _summed_score(
    over: em.Over, model: _MarkovSwitching, workspace: dict[str, Any], free: np.ndarray
) -> tuple[float, np.ndarray]:
    """The log-likelihood and its gradient at the free vector, summed over the shards (each with its
    workspace of the winning EM restart)."""
    return over(functools.partial(_shard_score, free=free), model, workspace)


def _shard_score(
    model: _MarkovSwitching, shard: _Series, workspace: dict[str, Any], free: np.ndarray
) -> tuple[float, np.ndarray]:
    engine, series = _shard_model(model, shard, workspace)
    return engine.value_and_gradient(free, series, workspace)


def _shard_model(
    model: _MarkovSwitching, shard: _Series, workspace: dict[str, Any]
) -> tuple[SwitchingRegression, SeriesData]:
    """A shard's engine and series, built once and kept in its workspace (which the evidence table
    shares: :meth:`SwitchingRegression.e_step`)."""
    if "shard_model" not in workspace:
        workspace["shard_model"] = (model._series_engine(shard), model._series_data(shard))
    return workspace["shard_model"]
