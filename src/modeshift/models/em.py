"""The one expectation-maximisation driver of every EM-fitted model.

EM alternates an E-step, which computes the objective L(theta) (a log-likelihood, a
penalised log-likelihood or an ELBO) and the expected statistics under the current
parameters theta, and an M-step, which maximises the expected complete-data objective
over theta. Each iteration cannot lower L (up to round-off, and except where the E-step
is approximate). A model supplies the steps; :func:`run` owns everything else:

- restarts: ``n_restarts`` initialisations from one generator seeded by ``random_state``;
  the first keeps the parameters set by hand (or, with ``warm_start``, learned before);
  the restart with the highest final objective wins (``n_iter=0`` runs one, to initialise);
- the iterations and the **convergence rule**: stop after iteration i when
  L_i - L_(i-1) < ``tol`` (the hmmlearn rule, absolute) or after ``n_iter`` iterations;
  ``n_iter=0`` only initialises;
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
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

__all__ = [
    "ConvergenceWarning",
    "Display",
    "EMResult",
    "ObjectiveDecreaseWarning",
    "monitor",
    "run",
    "set_display",
    "showing",
]

#: ``report(iteration, objective)``, called once per iteration of a fit.
Report = Callable[[int, float | None], None]


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

    @property
    def n_iter(self) -> int:
        return len(self.history)


def run(model: Any, data: Any, *, label: str | None = None) -> EMResult:
    """Fit ``model`` to ``data`` by EM with restarts; sets ``history_``, ``converged_``, ``n_iter_``.

    Reads the model's ``n_iter``, ``tol``, ``n_restarts`` (default 1), ``random_state``,
    ``verbose`` and ``callback``; its class attribute ``objective`` names what is
    maximised ("log-likelihood" by default, "ELBO" for a variational fit) and
    ``monotone = False`` silences the decrease warning of an approximate E-step.
    """
    n_iter, tol = int(model.n_iter), float(model.tol)
    n_restarts = int(getattr(model, "n_restarts", 1))
    objective = model.objective
    name = label or type(model).__name__
    rng = np.random.default_rng(model.random_state)
    best: EMResult | None = None
    best_snapshot: dict[str, Any] | None = None
    with monitor(model.verbose, model.callback) as watch:
        for restart in range(n_restarts if n_iter > 0 else 1):
            model._em_initialize(data, rng, restart)
            description = name if n_restarts == 1 else f"{name} restart {restart + 1}/{n_restarts}"
            result = _iterate(model, data, n_iter, tol, watch.task(description, max(n_iter, 1), objective))
            if best is None or result.history[-1] > best.history[-1]:
                best = result
                best_snapshot = model._em_snapshot() if restart < n_restarts - 1 else None
    assert best is not None
    if best_snapshot is not None:  # an earlier restart won: put its parameters back
        model._em_restore(best_snapshot)
    if n_iter > 0 and not best.converged:
        gap = best.history[-1] - best.history[-2] if best.n_iter > 1 else float("nan")
        warnings.warn(
            f"{model!r} stopped at its cap of n_iter={n_iter} EM iterations before converging "
            f"(last change in the {objective} {gap:.3g}, tol={tol:g}); raise n_iter (or tol) to go on",
            ConvergenceWarning,
            stacklevel=3,
        )
    model.history_ = best.history
    model.converged_ = best.converged
    model.n_iter_ = best.n_iter
    return best


def _iterate(model: Any, data: Any, n_iter: int, tol: float, report: Report) -> EMResult:
    result = EMResult()
    history = result.history
    workspace: dict[str, Any] = {}
    monotone = getattr(model, "monotone", True)
    for iteration in range(n_iter):
        value, statistics = model._e_step(data, workspace)
        value = float(value)
        history.append(value)
        report(iteration + 1, value)
        model._m_step(data, statistics)
        if len(history) >= 2:
            change = history[-1] - history[-2]
            if monotone and change < -1e-8 * max(1.0, abs(value)):
                warnings.warn(
                    f"{type(model).__name__}: the {model.objective} decreased "
                    f"by {-change:.3g} at EM iteration {iteration + 1}",
                    ObjectiveDecreaseWarning,
                    stacklevel=4,
                )
            if change < tol:
                result.converged = True
                break
    return result
