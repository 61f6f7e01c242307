"""Progress bars for iterative fits: the display behind ``verbose=True``.

Models never draw: every fit reports each iteration (its number, counted from 1, and
the objective just computed) through :func:`modeshift.models.em.monitor`, which calls
the fit's ``callback`` and, for ``verbose=True``, the display installed here. This
module installs one rich progress bar per restart or candidate fit, with the
iteration, the objective and the time left (an upper bound: EM stops early once it
converges, and a converged bar is then shown full). Bars go to standard error.

To gather the bars of several fits on one display, or to send them to a console of
your choice, fit inside :func:`live`::

    from rich.console import Console
    with live(Console(stderr=True)):
        HMM(3, n_restarts=5, verbose=True).fit(X)

rich is imported only when a bar is first drawn.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from modeshift.models import em

__all__ = ["RichDisplay", "live"]


class RichDisplay:
    """One rich progress display, started when its first bar is added (a fit that fails
    before its first iteration leaves no trace)."""

    def __init__(self, console: Any = None):
        self.console = console
        self.progress: Any = None
        self._finish: Callable[[], None] = lambda: None

    def task(self, description: str, total: int, objective: str | None) -> em.Report:
        """A new bar of at most ``total`` iterations; returns its report function."""
        self._finish()
        if self.progress is None:
            self.progress = _new_progress(self.console)
            self.progress.start()
        progress = self.progress
        bar = progress.add_task(description, total=total, objective="")
        done = 0

        def report(iteration: int, value: float | None = None) -> None:
            nonlocal done
            done = iteration
            shown = "" if objective is None or value is None else f"{objective} {value:.6g}"
            progress.update(bar, completed=iteration, objective=shown)

        def finish() -> None:
            progress.update(bar, total=done, completed=done)  # stopped early (converged): a full bar

        self._finish = finish
        return report

    def close(self) -> None:
        self._finish()
        if self.progress is not None:
            self.progress.stop()


@contextmanager
def live(console: Any = None) -> Iterator[None]:
    """Draw the progress bars of all verbose fits inside this block on one display.

    ``console`` is a ``rich.console.Console`` (default: one on standard error). Inside an
    enclosing ``live`` block this uses the enclosing display.
    """
    with em.showing(RichDisplay(console)):
        yield


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


em.set_display(RichDisplay)
