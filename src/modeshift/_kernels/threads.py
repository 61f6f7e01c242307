"""The threads of the compiled loops: how many, and safe from several Python threads at once.

numba runs ``prange`` loops on one of three threading layers, the first it finds of TBB, OpenMP
and its own "workqueue". The first two are thread-safe; workqueue is not: two Python threads in
parallel regions at once abort the process. Every parallel kernel is therefore declared with
:func:`parallel`, whose calls take one lock while (and only while) the layer is workqueue, so
fitting from several Python threads is safe whatever layer numba found; with TBB or OpenMP they
run concurrently. ``NUMBA_THREADING_LAYER`` chooses the layer (numba's documentation).
"""

from __future__ import annotations

import functools
import threading
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import numba

from modeshift._kernels.compile import kernel

__all__ = ["parallel", "rows_of", "sequences_of", "threads_for"]

_SERIAL = threading.Lock()
_layer: list[str] = []  # numba's threading layer, once it is known


def _guard() -> Any:
    """The lock when numba's threading layer is workqueue, else nothing to hold."""
    if not _layer:
        numba.get_num_threads()  # starts numba's thread pool, so that its layer is chosen
        _layer.append(numba.threading_layer())
    return _SERIAL if _layer[0] == "workqueue" else nullcontext()


def parallel(function: Callable | None = None, *, tasks: Callable[..., int] | None = None, **options: Any) -> Callable:
    """``kernel(parallel=True, **options)`` (:func:`~modeshift._kernels.compile.kernel`), called
    from Python only: each call runs on at most ``tasks(*args)`` threads (the pieces of work
    worth a thread of their own: sequences, blocks of rows; :func:`threads_for`), a call with
    one task or none compiled without ``parallel`` (a loop in the calling thread: no team to
    wake, a shorter first compile), and a parallel call is serialised when numba's threading
    layer is not thread-safe (workqueue). ``@parallel`` or ``@parallel(tasks=..., fastmath=...)``."""
    if function is None:
        return functools.partial(parallel, tasks=tasks, **options)
    compiled = kernel(function, parallel=True, **options)
    serial = kernel(_renamed(function, "serial"), **options)  # prange as range; compiled when first used

    @functools.wraps(function)
    def run(*args: Any) -> Any:
        if tasks is None:
            with _guard():
                return compiled(*args)
        n_tasks = tasks(*args)
        if n_tasks <= 1:  # no thread team to wake, and no parallel region to serialise
            return serial(*args)
        with _guard(), threads_for(n_tasks):
            return compiled(*args)

    run.compiled, run.serial = compiled, serial  # the two dispatchers, for inspection
    return run


def sequences_of(offsets: int) -> Callable[..., int]:
    """``tasks`` for a kernel whose positional argument ``offsets`` cuts the sequences: one each."""
    return lambda *args: len(args[offsets]) - 1


def rows_of(array: int, per_thread: int) -> Callable[..., int]:
    """``tasks`` for a kernel over the rows of its positional argument ``array``: ``per_thread``
    rows at least to a thread (fewer are not worth waking one)."""
    return lambda *args: len(args[array]) // per_thread


def _renamed(function: Callable, suffix: str) -> Callable:
    """A copy of ``function`` under another qualified name: numba's cache files are named after
    it, and do not tell a parallel compile from a serial one of the same function."""
    copy = types.FunctionType(
        function.__code__, function.__globals__, function.__name__, function.__defaults__, function.__closure__
    )
    copy.__qualname__ = f"{function.__qualname__}_{suffix}"
    copy.__module__ = function.__module__
    return copy


@contextmanager
def threads_for(n_tasks: int) -> Iterator[None]:
    """Run the parallel loops inside on at most ``n_tasks`` threads (numba's setting is per calling thread).

    A parallel loop over fewer tasks than threads still waits for its whole team at the
    barrier, and when a core is busy elsewhere (another process, a BLAS thread spinning
    after numpy's linear algebra) that wait is a scheduler time slice: milliseconds,
    against microseconds for the filter of a short sequence.
    """
    previous = numba.get_num_threads()
    if n_tasks >= previous:
        yield
        return
    numba.set_num_threads(max(1, int(n_tasks)))
    try:
        yield
    finally:
        numba.set_num_threads(previous)
