"""The one expectation-maximisation driver of every EM-fitted model.

EM alternates an E-step, which computes the objective L(theta) (a log-likelihood, a
penalised log-likelihood or an ELBO) and the expected statistics under the current
parameters theta, and an M-step, which maximises the expected complete-data objective
over theta. Each iteration cannot lower L (up to round-off, and except where the E-step
is approximate). A model supplies the steps; :func:`run` owns everything else:

- restarts: ``n_restarts`` initialisations from one generator seeded by ``random_state``;
  the first keeps the parameters set by hand (or, with ``warm_start``, learned before);
  the restart with the highest final objective wins (``n_iter=0`` runs one, to initialise).
  Over shards whose ``over`` is ``concurrent`` (a cluster's), the restarts are initialised in
  turn, then iterated at once, one client thread each (:func:`_concurrent_restarts`).
  A model with a class attribute ``search_iterations`` runs each restart for at most that
  many iterations and only the winner on to convergence (the short-runs strategy of
  Biernacki, Celeux & Govaert 2003, statsmodels' ``search_reps``);
- the iterations and the **convergence rule**: stop after iteration i when
  L_i - L_(i-1) < ``tol`` (the hmmlearn rule, absolute) or after ``n_iter`` iterations;
  ``n_iter=0`` only initialises;
- **acceleration** (models with ``accelerate=True``): SQUAREM (Varadhan & Roland 2008,
  below), which turns EM's linear crawl along a flat ridge into a few long steps;
- the record: ``history_`` (L at each iteration of the winning restart, computed before
  that iteration's M-step), ``converged_`` and ``n_iter_``;
- warnings: a :class:`ConvergenceWarning` when the cap stopped the winning restart, and
  one when L decreased beyond round-off (a bug, or an approximate E-step);
- progress: ``callback(iteration, objective)`` at every iteration of every restart, and a
  progress display for ``verbose=True`` drawn by whatever display the interface layer
  installed with :func:`set_display` (models never draw).

A model taking part implements::

    _em_initialize(data, rng, restart)  # set starting parameters
    _e_step(data, workspace) -> (objective, statistics)
    _m_step(data, statistics)           # update the parameters in place
    _em_snapshot() -> dict              # the parameters, to keep the best restart
    _em_restore(snapshot)

``workspace`` is a dict that lives for one restart (a place to reuse arrays or carry a
variational posterior from one iteration to the next).

Sharded E-steps. The data may lie elsewhere, cut into shards of whole sequences (on the
workers of a cluster: :mod:`modeshift.distributed`). Then :func:`run` takes ``over``, with
``over(function, model)`` the sum over the shards of ``function(model, shard)``, and runs
each E-step as that sum; ``data`` is then only what ``_em_initialize`` and ``_m_step``
see (a sample to start from). This needs a model whose statistics add up over shards
(:class:`~modeshift.statistics.Statistics`, or dicts and tuples of them,
:func:`~modeshift.statistics.combine`), whose ``_m_step`` reads only them, whose workspace
carries nothing from one iteration to the next, and whose objective is a sum over
sequences plus, at most, a term of the parameters alone, ``_log_prior()``, which the
sharded E-step counts once. A model whose E-step does carry something (a variational
posterior) says so with the class attribute ``carries_workspace = True``: each shard then
gets its own workspace for the restart, kept where the shard lies
(``over(function, model, workspace)`` calls ``function(model, shard, shard_workspace)``), and
:attr:`EMResult.workspace` is the winning restart's, to read after the fit.

Per-step rows. An M-step that must see every step (a logistic regression of the transitions on
inputs) gets them as :class:`~modeshift.statistics.Stacked` statistics and reads them by
``terms(function)``, ``function`` of all the rows at once. A model that says
``keeps_rows = True`` has them stay on the shards instead: each shard keeps its rows in its
workspace and sends a :class:`~modeshift.statistics.Kept` stand-in, whose ``terms`` is one
pass over the shards (the rows of a shard lost with a worker are computed again there, by an
E-step under the parameters they were of). So the client holds sums, never rows, and in memory
the same M-step reads the rows in hand.

SQUAREM. With F the EM map (one E-step and M-step), theta_1 = F(theta_0) and
theta_2 = F(theta_1), r = theta_1 - theta_0 and v = theta_2 - 2 theta_1 + theta_0, the
extrapolated point theta' = theta_0 - 2 a r + a^2 v with a = -|r| / |v| (a <= -1; a = -1
gives theta_2) is where the sequence of EM iterates heads when it converges linearly. theta'
starts the next cycle if the model's setters accept it (probabilities stay in [0, 1],
covariances positive definite, ...) and its objective is at least that of theta_1, so the
recorded objectives never decrease; otherwise EM goes on from theta_2. ``|a|`` is capped by a
bound that starts at 1 and grows fourfold each time it is reached (and shrinks fourfold on a
rejection). A model opts in with an ``accelerate`` hyper-parameter and an ``_em_snapshot``
of arrays whose restore validates them. Each E-step on the path is one iteration of
``history_``; convergence and ``n_iter`` are counted as without acceleration.
"""

from __future__ import annotations

import copy
import functools
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from modeshift.statistics import bind_rows, holds_kept, keep_rows

__all__ = [
    "ConvergenceWarning",
    "Display",
    "EMResult",
    "ObjectiveDecreaseWarning",
    "Over",
    "in_memory",
    "monitor",
    "run",
    "set_display",
    "showing",
]

#: ``report(iteration, objective)``, called once per iteration of a fit.
Report = Callable[[int, float | None], None]

#: ``over(function, model)``: the sum over the shards of the data of ``function(model, shard)``;
#: ``over(function, model, workspace)``: of ``function(model, shard, the shard's workspace)``.
Over = Callable[..., Any]


class ConvergenceWarning(UserWarning):
    """An iterative fit stopped at its iteration cap before meeting its convergence rule."""


class ObjectiveDecreaseWarning(UserWarning):
    """An EM iteration lowered the objective by more than round-off."""


class Display(Protocol):
    """Draws progress: one task per restart or candidate fit (the interface layer provides one)."""

    def task(self, description: str, total: int, objective: str | None) -> Report: ...

    def close(self) -> None: ...


_display_factory: Callable[[], Display] | None = None


def set_display(factory: Callable[[], Display] | None) -> None:
    """Install what ``verbose=True`` draws with (:mod:`modeshift.progress` installs rich bars)."""
    global _display_factory
    _display_factory = factory


_active: ContextVar[Display | None] = ContextVar("modeshift_fit_display", default=None)


@contextmanager
def showing(display: Display) -> Iterator[None]:
    """Draw the progress of every verbose fit inside this block on ``display`` (an enclosing one wins)."""
    if _active.get() is not None:
        yield
        return
    token = _active.set(display)
    try:
        yield
    finally:
        _active.reset(token)
        display.close()


@contextmanager
def monitor(verbose: bool, callback: Callable[[int, float | None], Any] | None = None) -> Iterator[_Monitor]:
    """Report the iterations of one fit to ``callback`` and, if ``verbose``, to the installed display.

    >>> seen = []
    >>> with monitor(False, lambda i, value: seen.append((i, value))) as m:
    ...     report = m.task("HMM K=2", total=10)
    ...     report(1, -3.5)
    >>> seen
    [(1, -3.5)]
    """
    display = None
    owned = False
    if verbose:
        display = _active.get()
        if display is None and _display_factory is not None:
            display, owned = _display_factory(), True
    token = _active.set(display) if owned else None
    try:
        yield _Monitor(display, callback)
    finally:
        if owned:
            _active.reset(token)
            display.close()


@dataclass
class _Monitor:
    display: Display | None
    callback: Callable[[int, float | None], Any] | None

    def task(self, description: str, total: int, objective: str | None = "log-likelihood") -> Report:
        """The report function of one restart or candidate of at most ``total`` iterations."""
        if self.display is None:
            return self.callback if self.callback is not None else _ignore
        drawn = self.display.task(description, total, objective)
        if self.callback is None:
            return drawn
        callback = self.callback

        def both(iteration: int, value: float | None = None) -> None:
            drawn(iteration, value)
            callback(iteration, value)

        return both


def _ignore(iteration: int, objective: float | None = None) -> None:
    """The report of a fit nobody watches."""


@dataclass
class EMResult:
    """What :func:`run` found: the winning restart's objectives and whether it converged."""

    history: list[float] = field(default_factory=list)
    converged: bool = False
    workspace: dict[str, Any] = field(default_factory=dict, repr=False)  # the last E-step's (module docstring)

    @property
    def n_iter(self) -> int:
        return len(self.history)


def in_memory(data: Any) -> Over:
    """The ``over`` of data held in this process: one shard, ``function(model, data)`` (with a
    ``workspace``, ``function(model, data, workspace)``).

    >>> in_memory(3.0)(lambda model, shard: model * shard, 2.0)
    6.0
    """

    def over(function: Callable[..., Any], model: Any, workspace: dict[str, Any] | None = None) -> Any:
        return function(model, data) if workspace is None else function(model, data, workspace)

    return over


def run(model: Any, data: Any, *, label: str | None = None, over: Over | None = None) -> EMResult:
    """Fit ``model`` to ``data`` by EM with restarts; sets ``history_``, ``converged_``, ``n_iter_``.

    Reads the model's ``n_iter``, ``tol``, ``n_restarts`` (default 1), ``random_state``,
    ``verbose`` and ``callback``; its class attribute ``objective`` names what is
    maximised ("log-likelihood" by default, "ELBO" for a variational fit) and
    ``monotone = False`` silences the decrease warning of an approximate E-step.
    ``over`` runs every E-step over shards of data held elsewhere (module docstring).
    """
    n_iter, tol = int(model.n_iter), float(model.tol)
    n_restarts = int(getattr(model, "n_restarts", 1))
    search = getattr(model, "search_iterations", None) if n_restarts > 1 else None
    runs = n_iter if search is None else min(int(search), n_iter)
    objective = model.objective
    name = label or type(model).__name__
    rng = np.random.default_rng(model.random_state)
    best: EMResult | None = None
    best_snapshot: dict[str, Any] | None = None
    restarts = n_restarts if n_iter > 0 else 1
    with monitor(model.verbose, model.callback) as watch:

        def start(restart: int) -> Report:
            model._em_initialize(data, rng, restart)
            description = name if n_restarts == 1 else f"{name} restart {restart + 1}/{n_restarts}"
            return watch.task(description, max(runs, 1), objective)

        if restarts > 1 and getattr(over, "concurrent", False):
            started = [(start(restart), _copy(model)) for restart in range(restarts)]  # the starts as in turn
            best = _concurrent_restarts(model, data, started, runs, tol, over)
        for restart in range(restarts if best is None else 0):
            report = start(restart)
            result = _iterate(model, data, runs, tol, report, over)
            if best is None or result.history[-1] > best.history[-1]:
                best = result
                best_snapshot = model._em_snapshot() if restart < n_restarts - 1 else None
        assert best is not None
        if best_snapshot is not None:  # an earlier restart won: put its parameters back
            model._em_restore(best_snapshot)
        if runs < n_iter and not best.converged:  # the short runs' winner goes on
            report = watch.task(name, n_iter - best.n_iter, objective)
            rest = _iterate(model, data, n_iter - best.n_iter, tol, report, over)
            best = EMResult(best.history + rest.history, rest.converged, rest.workspace)
    if n_iter > 0 and not best.converged:
        change = (
            f"last change in the {objective} {best.history[-1] - best.history[-2]:.3g}"
            if best.n_iter > 1
            else "one iteration: no change to judge by"
        )
        warnings.warn(
            f"{model!r} stopped at its cap of n_iter={n_iter} EM iterations before converging "
            f"({change}, tol={tol:g}); raise n_iter (or tol) to go on",
            ConvergenceWarning,
            stacklevel=_user_stacklevel(),
        )
    model.history_ = best.history
    model.converged_ = best.converged
    model.n_iter_ = best.n_iter
    return best


def _concurrent_restarts(
    model: Any, data: Any, started: list[tuple[Report, Any]], n_iter: int, tol: float, over: Over
) -> EMResult:
    """The restarts at once, each from its starting copy of the model (``started``: its report
    and the copy, initialised in turn as :func:`run` does) in a thread of this process, their
    E-steps on the shards of a cluster (an ``over`` with ``concurrent = True``). The winner is the
    one restarts run in turn pick (the first with the highest objective); its state is left in
    ``model``. The threads call the reports (so the callback) concurrently."""
    with ThreadPoolExecutor(len(started)) as pool:
        results = list(pool.map(lambda pair: _iterate(pair[1], data, n_iter, tol, pair[0], over), started))
    winner = max(range(len(results)), key=lambda r: (results[r].history[-1], -r))
    model.__dict__.update({k: v for k, v in started[winner][1].__dict__.items() if k != "callback"})
    return results[winner]


def _copy(model: Any) -> Any:
    """A deep copy of ``model`` but for its callback (which may hold a client, or a whole program)."""
    clone = copy.copy(model)
    clone.__dict__ = {k: v if k == "callback" else copy.deepcopy(v) for k, v in model.__dict__.items()}
    return clone


def _iterate(model: Any, data: Any, n_iter: int, tol: float, report: Report, over: Over | None) -> EMResult:
    result = EMResult()
    history, workspace = result.history, result.workspace
    keeps = over is not None and getattr(model, "keeps_rows", False)
    carried = getattr(model, "carries_workspace", False) or keeps
    monotone = getattr(model, "monotone", True)
    squarem = _Squarem(model) if getattr(model, "accelerate", False) else None

    def e_step() -> tuple[float, Any]:
        if over is None:
            value, statistics = model._e_step(data, workspace)
            return float(value), statistics
        if keeps:
            value, statistics = over(_shard_e_step_keeping, model, workspace)
            if holds_kept(statistics):  # rows were kept: read there under the parameters they are of
                statistics = bind_rows(statistics, functools.partial(_read_kept, over, _copy(model), workspace))
            return value + _log_prior(model), statistics
        value, statistics = over(_shard_e_step, model, workspace) if carried else over(_shard_e_step, model)
        return value + _log_prior(model), statistics

    for iteration in range(n_iter):
        value, statistics = e_step()
        if squarem is not None and not squarem.accepts(value):  # back on EM's own path
            value, statistics = e_step()
        history.append(value)
        report(iteration + 1, value)
        if squarem is not None:
            squarem.before_update()
        model._m_step(data, statistics)
        if len(history) >= 2:
            change = history[-1] - history[-2]
            if monotone and change < -1e-8 * max(1.0, abs(value)):
                warnings.warn(
                    f"{type(model).__name__}: the {model.objective} decreased "
                    f"by {-change:.3g} at EM iteration {iteration + 1}",
                    ObjectiveDecreaseWarning,
                    stacklevel=_user_stacklevel(),
                )
            if change < tol:
                result.converged = True
                break
        if squarem is not None:
            squarem.after_update(value)
    return result


_PACKAGE = str(Path(__file__).parents[1])


def _user_stacklevel() -> int:
    """The ``stacklevel`` that points a warning of the calling function at the first caller outside
    modeshift (however many layers of the package lie between: ``fit``, a dispatch, a cluster)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    return level


_THREAD = threading.local()
KEPT_SCRATCH_BYTES = 2**25  # 32 MiB: what a worker thread keeps of its E-steps' working arrays


def _shard_e_step(model: Any, shard: Any, workspace: dict[str, Any] | None = None) -> tuple[float, Any]:
    """One shard's E-step: its part of the objective (without the prior) and its statistics.
    Without a ``workspace`` (nothing carried from one iteration to the next) the E-step still
    gets this thread's working arrays (:func:`_thread_scratch`)."""
    if workspace is not None:
        value, statistics = model._e_step(shard, workspace)
    else:
        scratch = _thread_scratch()
        try:
            value, statistics = model._e_step(shard, {"scratch": scratch})
        finally:
            _bound(scratch)
    return float(value) - _log_prior(model), statistics


def _thread_scratch() -> dict[str, Any]:
    """The working arrays (:func:`~modeshift._kernels.recursions.buffer`) that the shard E-steps
    run on this thread share, from one shard and iteration to the next: a worker touches memory
    it has touched before. Fresh arrays would cost a page fault per 4 KiB at every use on a
    Dask worker, whose allocator returns freed memory to the system at once (its nanny sets
    MALLOC_TRIM_THRESHOLD_): 54 MB of faults per E-step of 625,000 steps, K = 8. At most
    :data:`KEPT_SCRATCH_BYTES` stay allocated between tasks (:func:`_bound`)."""
    if not hasattr(_THREAD, "scratch"):
        _THREAD.scratch = {}
    return _THREAD.scratch


def _bound(scratch: dict[str, np.ndarray]) -> None:
    """Free the largest of ``scratch``'s arrays until they hold at most :data:`KEPT_SCRATCH_BYTES`
    together: an HMM's, whose E-step runs in blocks (about 12 MB for K = 8), stay; those of an
    E-step over a whole shard go."""
    for name in sorted(scratch, key=lambda name: scratch[name].nbytes, reverse=True):
        if sum(array.nbytes for array in scratch.values()) <= KEPT_SCRATCH_BYTES:
            return
        del scratch[name]


def _shard_e_step_keeping(model: Any, shard: Any, workspace: dict[str, Any]) -> tuple[float, Any]:
    """One shard's E-step whose per-step rows stay in its workspace (``keeps_rows``)."""
    value, statistics = _shard_e_step(model, shard, workspace)
    workspace[_KEPT] = kept = {}
    return value, keep_rows(statistics, kept)


def _read_kept(over: Over, model: Any, workspace: dict[str, Any], function: Callable[..., Any], paths: list) -> Any:
    """The sum over the shards of ``function(*rows kept at paths)`` (``model``: as at the E-step)."""
    return over(functools.partial(_kept_terms, function=function, paths=paths), model, workspace)


def _kept_terms(model: Any, shard: Any, workspace: dict[str, Any], function: Callable[..., Any], paths: list) -> Any:
    if _KEPT not in workspace:  # lost with a worker: the same rows again
        _shard_e_step_keeping(model, shard, workspace)
    return function(*(workspace[_KEPT][path] for path in paths))


_KEPT = "kept_rows"  # where a shard's workspace keeps its per-step rows


def _log_prior(model: Any) -> float:
    """The term of the objective that depends on the parameters alone (0 for a model without one)."""
    return float(model._log_prior()) if hasattr(type(model), "_log_prior") else 0.0


class _Squarem:
    """The SQUAREM cycle of one restart (see the module docstring)."""

    def __init__(self, model: Any):
        self.model = model
        self.points: list[dict[str, np.ndarray]] = []  # theta_0, theta_1, theta_2 of this cycle
        self.fallback: tuple[dict[str, np.ndarray], float] | None = None  # (theta_2, objective at theta_1)
        self.step_max = 1.0

    def accepts(self, value: float) -> bool:
        """Whether the point just evaluated stays; if not, the model is put back at theta_2."""
        if self.fallback is None:
            return True
        theta_2, floor = self.fallback
        self.fallback = None
        if np.isfinite(value) and value >= floor:
            return True
        self._back_off(theta_2)
        return False

    def before_update(self) -> None:
        if not self.points:
            self.points.append(self.model._em_snapshot())

    def after_update(self, value: float) -> None:
        """After an M-step: the next point of the cycle, and every second one an extrapolation."""
        self.points.append(self.model._em_snapshot())
        if len(self.points) < 3:
            return
        theta_0, theta_1, theta_2 = self.points
        self.points = []
        r = {name: theta_1[name] - theta_0[name] for name in theta_0}
        v = {name: theta_2[name] - theta_1[name] - r[name] for name in theta_0}
        # the norms in units of the largest change, so that parameters near 1e150 do not overflow
        scale = max(float(np.max(np.abs(x), initial=0.0)) for x in (*r.values(), *v.values()))
        if not np.isfinite(scale) or scale == 0.0:
            return
        norm_r = np.sqrt(sum(float(np.sum((x / scale) ** 2)) for x in r.values()))
        norm_v = np.sqrt(sum(float(np.sum((x / scale) ** 2)) for x in v.values()))
        if not norm_v > 0.0:
            return
        ratio = norm_r / norm_v
        a = -min(max(ratio, 1.0), self.step_max)
        if ratio >= self.step_max:
            self.step_max *= 4.0
        if a == -1.0:  # theta_2, where the model already is
            return
        extrapolated = {name: theta_0[name] - 2.0 * a * r[name] + a * a * v[name] for name in theta_0}
        try:
            self.model._em_restore(extrapolated)
        except ValueError:  # outside the parameter space
            self._back_off(theta_2)
            return
        self.fallback = (theta_2, value)

    def _back_off(self, theta_2: dict[str, np.ndarray]) -> None:
        """Back on EM's own path at theta_2, with a shorter bound on the next step."""
        self.model._em_restore(theta_2)
        self.step_max = max(1.0, self.step_max / 4.0)
