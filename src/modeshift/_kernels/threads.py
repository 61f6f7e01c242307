"""How many threads the compiled loops may use."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numba

__all__ = ["threads_for"]


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
