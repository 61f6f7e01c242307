"""Progress of iterative fits: a live progress bar and a per-iteration callback, in one place.

Every model that fits by EM (or variational EM) reports each iteration to a
:class:`FitMonitor`: the iteration number, counted from 1, and the objective it has
just computed (the log-likelihood, or the ELBO). The monitor does what the model's
``verbose`` and ``callback`` hyperparameters ask:

- ``verbose=True`` draws one rich progress bar per restart or candidate fit, with the
  iteration, the objective and the time left (an upper bound: EM stops early once it
  converges, and a converged bar is then shown full);
- ``callback=f`` calls ``f(iteration, objective)`` at every iteration of every restart;
- with neither, reporting an iteration is a call to a function that does nothing.

>>> seen = []
>>> with FitMonitor(verbose=False, callback=lambda iteration, value: seen.append((iteration, value))) as monitor:
...     report = monitor.task("HMM K=2 restart 1/3", total=100)
...     for iteration, value in enumerate([-10.0, -8.5, -8.4], start=1):
...         report(iteration, value)
>>> seen
[(1, -10.0), (2, -8.5), (3, -8.4)]

Bars go to standard error. To gather the bars of several fits on one display, or to
send them to a console of your choice, fit inside :func:`live`::

    from rich.console import Console
    with live(Console(stderr=True)):
        HMM(3, n_restarts=5, verbose=True).fit(X)

rich (a dependency of modeshift's command line) draws the bar. This
module imports nothing from :mod:`modeshift`, so every layer can use it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from types import TracebackType
from typing import Any

__all__ = ["FitMonitor", "Report", "live"]

#: ``report(iteration, objective)``: called once per iteration of a fit.
Report = Callable[[int, float | None], None]

_display: ContextVar[_Display | None] = ContextVar("modeshift_progress_display", default=None)


class _Display:
    """One rich progress display, started when its first bar is added (a fit that fails
    before its first iteration leaves no trace)."""

    def __init__(self, console: Any):
        self.console = console
        self.progress: Any = None

    def add(self, description: str, total: int) -> tuple[Any, Any]:
        """A new bar: (the rich ``Progress``, the bar's task id)."""
        if self.progress is None:
            self.progress = _new_progress(self.console)
            self.progress.start()
        return self.progress, self.progress.add_task(description, total=total, objective="")

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


@contextmanager
def live(console: Any = None) -> Iterator[None]:
    """Draw the progress bars of all verbose fits inside this block on one display.

    ``console`` is a ``rich.console.Console`` (default: one on standard error). Inside an
    enclosing ``live`` block this uses the enclosing display.
    """
    if _display.get() is not None:
        yield
        return
    display = _Display(console)
    token = _display.set(display)
    try:
        yield
    finally:
        _display.reset(token)
        display.close()


def _new_progress(console: Any) -> Any:
    try:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    except ImportError:
        raise ImportError("showing progress needs the rich package: pip install rich") from None
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[objective]}"),
        TimeRemainingColumn(),
        console=console if console is not None else Console(stderr=True),
    )


def _ignore(iteration: int, objective: float | None = None) -> None:
    """The report of a fit nobody watches."""


class FitMonitor:
    """Reports the iterations of one ``fit`` to a progress display and to a callback.

    Parameters
    ----------
    verbose : bool
        Show a live progress bar for each task (needs rich).
    callback : callable, optional
        ``callback(iteration, objective)``, called at every reported iteration.
    objective : str, optional
        What the objective is called on the bar ("log-likelihood", "ELBO"); None shows none.

    Use it as a context manager around the whole fit, and ask for one :meth:`task` per
    restart or candidate; the task's report function is what the iteration loop calls.
    """

    def __init__(
        self,
        verbose: bool,
        callback: Callable[[int, float | None], Any] | None = None,
        objective: str | None = "log-likelihood",
    ):
        self.verbose = bool(verbose)
        self.callback = callback
        self.objective = objective
        self._stack = ExitStack()
        self._finish: Callable[[], None] = lambda: None

    def __enter__(self) -> FitMonitor:
        if self.verbose:
            self._stack.enter_context(live())
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if kind is None:
            self._finish()
        self._stack.close()

    def task(self, description: str, total: int) -> Report:
        """Start a task of at most ``total`` iterations; returns its report function."""
        self._finish()
        if not self.verbose:
            return _ignore if self.callback is None else self.callback
        progress, task = _display.get().add(description, total)
        callback, name = self.callback, self.objective
        done = 0

        def report(iteration: int, objective: float | None = None) -> None:
            nonlocal done
            done = iteration
            shown = "" if name is None or objective is None else f"{name} {objective:.6g}"
            progress.update(task, completed=iteration, objective=shown)
            if callback is not None:
                callback(iteration, objective)

        def finish() -> None:
            progress.update(task, total=done, completed=done)  # stopped early (converged): a full bar

        self._finish = finish
        return report
