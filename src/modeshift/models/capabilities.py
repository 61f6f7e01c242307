"""Capabilities: the groups of methods an estimator offers, as small protocols.

Every estimator implements what its maths allows (see :class:`~modeshift.models.base.Model`).
The interface layer (command line, plots, report) and the contract tests ask a model
what it can do, not what class it is::

    if isinstance(model, Forecaster):
        forecast = model.forecast(X, horizon=10)

========================  ===========================================================
capability                members
========================  ===========================================================
:class:`ModeDecoder`      ``predict`` (most likely mode path), ``predict_proba``
                          (smoothed marginals), ``filter_proba`` (filtered marginals)
:class:`Segmenter`        ``segment``: runs of one mode as a table
:class:`Forecaster`       ``forecast(X, horizon)`` -> :class:`~modeshift.models.base.Forecast`
:class:`Sampler`          ``sample(n_steps, n_sequences=1, random_state=None)``
:class:`Scorer`           ``score``: the exact log-likelihood
:class:`BoundScorer`      ``elbo``: a lower bound on it, where only a bound is computable
:class:`Selectable`       ``n_parameters``, ``aic``, ``bic``
:class:`Describer`        ``describe``: one row per mode
:class:`NextElementModel` ``next_symbol_proba``, ``predict_next``: what comes next in a
                          symbol sequence
:class:`IterativeFit`     ``history_``, ``converged_``, ``n_iter_``: the record of an
                          iterative fit; :func:`objective` names what ``history_`` holds
:class:`Streaming`        ``filter_init``, ``filter_step``, ``filter_stream``: filter one
                          observation at a time (:mod:`modeshift.models.streaming`)
:class:`StreamingAtTimes` ``filter_step(..., time=t)``: a stream of observations at irregular times
:class:`OnlineLearner`    ``partial_fit``: learn from one more chunk of a stream (online EM)
:class:`HybridAutomaton`  ``automaton``: modes, flows, guards, resets and dwell times as data
                          (:class:`~modeshift.models.automaton.Automaton`)
:class:`ShardableFit`     ``_em_data``, ``_fit_em``: an EM fit whose E-step runs on shards
                          of the data where they lie (:mod:`modeshift.distributed`)
========================  ===========================================================

The protocols are ``runtime_checkable``: ``isinstance`` checks that the members exist
(not their signatures). Ask fitted models: ``IterativeFit``'s members exist only after a
fit, and before Python 3.12 ``isinstance`` reads properties such as ``n_parameters``,
which an unfitted model answers with :class:`~modeshift.models.base.NotFittedError`.

>>> import numpy as np
>>> from modeshift import HMM
>>> model = HMM(n_states=2, random_state=0).fit(np.r_[np.zeros(30), np.ones(30)] + np.arange(60) % 3 * 0.1)
>>> isinstance(model, ModeDecoder), isinstance(model, BoundScorer), objective(model)
(True, False, 'log-likelihood')
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from modeshift.models.base import Forecast

__all__ = [
    "BoundScorer",
    "Describer",
    "Forecaster",
    "HybridAutomaton",
    "IterativeFit",
    "ModeDecoder",
    "NextElementModel",
    "OnlineLearner",
    "Sampler",
    "Scorer",
    "Segmenter",
    "Selectable",
    "ShardableFit",
    "Streaming",
    "StreamingAtTimes",
    "objective",
]


@runtime_checkable
class ModeDecoder(Protocol):
    """Infers the hidden mode of every step."""

    def predict(self, X: Any, *args: Any, **kwargs: Any) -> Any:
        """The most likely mode path (Viterbi / MAP)."""

    def predict_proba(self, X: Any, *args: Any, **kwargs: Any) -> Any:
        """p(z_t = k | all observations), (n_steps, K)."""

    def filter_proba(self, X: Any, *args: Any, **kwargs: Any) -> Any:
        """p(z_t = k | observations up to t), (n_steps, K)."""


@runtime_checkable
class Segmenter(Protocol):
    """Cuts sequences into runs of one mode."""

    def segment(self, X: Any, *args: Any, **kwargs: Any) -> pd.DataFrame:
        """One row per run: ``start``, ``end`` (exclusive), ``mode``, ``probability``."""


@runtime_checkable
class Forecaster(Protocol):
    """Predicts the observations after the end of the data."""

    def forecast(self, X: Any, horizon: int, *args: Any, **kwargs: Any) -> Forecast:
        """The predictive distribution of the next ``horizon`` steps."""


@runtime_checkable
class Sampler(Protocol):
    """Simulates new sequences."""

    def sample(self, n_steps: int, n_sequences: int = 1, random_state: Any = None, **kwargs: Any) -> Any:
        """``n_sequences`` sequences of ``n_steps`` steps (with their modes, for a model with modes)."""


@runtime_checkable
class Scorer(Protocol):
    """Computes the exact log-likelihood."""

    def score(self, X: Any, *args: Any, **kwargs: Any) -> float:
        """log p(X)."""


@runtime_checkable
class BoundScorer(Protocol):
    """Computes an evidence lower bound where the log-likelihood is intractable."""

    def elbo(self, X: Any, *args: Any, **kwargs: Any) -> float:
        """A lower bound on log p(X); never to be reported as a log-likelihood."""


@runtime_checkable
class Selectable(Protocol):
    """Can be compared with other models by information criteria."""

    @property
    def n_parameters(self) -> int:
        """Number of free parameters."""

    def aic(self, X: Any, *args: Any, **kwargs: Any) -> float:
        """-2 log-likelihood + 2 n_parameters."""

    def bic(self, X: Any, *args: Any, **kwargs: Any) -> float:
        """-2 log-likelihood + n_parameters log(n_observations)."""


@runtime_checkable
class Describer(Protocol):
    """Summarises what it learned about each mode."""

    def describe(self) -> pd.DataFrame:
        """One row per mode (``dwell_time``, switch probabilities, emission parameters, ...)."""


@runtime_checkable
class NextElementModel(Protocol):
    """Predicts the next element of a symbol sequence."""

    def next_symbol_proba(self, sequences: Any) -> np.ndarray:
        """The distribution of every element and of each sequence's end given what precedes it."""

    def predict_next(self, prefix: Sequence[Hashable] = (), k: int = 5) -> list[tuple[Hashable, float]]:
        """The ``k`` likeliest elements after ``prefix``, with their probabilities."""


@runtime_checkable
class IterativeFit(Protocol):
    """Was fit by iterations (EM): the record of the winning run."""

    history_: list[float]
    converged_: bool
    n_iter_: int


@runtime_checkable
class Streaming(Protocol):
    """Filters a stream one observation at a time, at a cost per step that does not grow with it."""

    def filter_init(self, *, lag: int = 0) -> Any:
        """The state of a filter that has seen nothing (``lag`` L: also smooth L steps back)."""

    def filter_step(self, state: Any, y: Any, inputs: Any = None) -> tuple[Any, Any]:
        """(new state, output): filtered law, log p(y_t | y_<t), the lagged smoothed law, the next prediction."""

    def filter_stream(self, observations: Any, inputs: Any = None, *, lag: int = 0, state: Any = None) -> Any:
        """A generator of the outputs of ``filter_step`` over an iterable."""


@runtime_checkable
class StreamingAtTimes(Streaming, Protocol):
    """Filters observations made at irregular times: ``filter_step(state, y, inputs, time=t)``
    (the continuous-time models; ``streams_at_times`` marks them)."""

    streams_at_times: bool


@runtime_checkable
class OnlineLearner(Protocol):
    """Learns from a stream, one chunk at a time (online EM)."""

    def partial_fit(self, X: Any, *args: Any, **kwargs: Any) -> Any:
        """Update the parameters with one more chunk; returns the model."""


@runtime_checkable
class HybridAutomaton(Protocol):
    """Describes itself as a hybrid automaton: modes, flows, guards, resets, dwell times."""

    def automaton(self, X: Any = None, *args: Any, **kwargs: Any) -> Any:
        """An :class:`~modeshift.models.automaton.Automaton` (``X``, optional, places its grid)."""


@runtime_checkable
class ShardableFit(Protocol):
    """Fits by EM (or by counting) with statistics that add up over shards of whole sequences and
    an M-step that reads only them (:mod:`modeshift.models.em`), so the E-step can run where the
    data lie."""

    def _start_fit(self) -> None:
        """Check the hyper-parameters and forget the last fit (as ``fit`` starts)."""

    def _em_data(self, X: Any, *args: Any, **kwargs: Any) -> Any:
        """What EM reads from one shard of ``fit``'s arguments."""

    def _fit_em(self, data: Any, over: Any = None) -> Any:
        """The rest of ``fit``: EM with its E-steps summed ``over`` the shards, ``data`` a sample.

        A model that needs a constant of all the data before EM starts (a vocabulary) also has
        ``_em_constants(shard)``, ``_em_merge_constants(a, b)`` (in shard order) and
        ``_em_set_constants(value)``; one whose E-step keeps something per shard from one
        iteration to the next says ``carries_workspace = True`` (:mod:`modeshift.models.em`).
        The shards carry no time stamps: a model whose fit reads them says ``reads_times = True``
        and fits in memory only."""


def objective(model: Any) -> str:
    """What the model's fit maximises and its ``history_`` records: the class attribute
    ``objective``, "log-likelihood" unless a model says otherwise (e.g. "ELBO")."""
    return getattr(model, "objective", "log-likelihood")  # not every model derives from Model
