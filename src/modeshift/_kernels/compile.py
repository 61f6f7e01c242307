"""Compiled kernels whose on-disk cache stays right when several processes compile at once.

numba's cache (``njit(cache=True)``) keeps a function's compilations in numbered files
(``f-12.py311.1.nbc``, ``.2.nbc``, ...) and an index from each signature to its file. A new
signature takes the first number the index does not list, so two processes compiling two
signatures of one function at the same time (a Dask cluster's workers, or pytest-xdist's, on a
fresh install) can both take number 1: the index then names one signature and the file holds
the other's machine code, which every later process loads and runs on arguments of another
type or layout, without an error, computing garbage. :func:`kernel` names each file after its
signature instead (a hash of the index key), writes it before the index entry that points at
it, and reads the index afresh just before writing it: an entry can still be lost to a
concurrent writer (that signature is then compiled again), but never points at another
signature's code.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from typing import Any

from numba import njit
from numba.core.caching import IndexDataCacheFile

__all__ = ["kernel"]


class _KeyedCacheFile(IndexDataCacheFile):
    """numba's cache index and data files, each data file named after its signature's key."""

    def save(self, key: Any, data: Any) -> None:
        name = self._data_name(int(hashlib.sha256(repr(key).encode()).hexdigest()[:15], 16))
        self._save_data(name, data)  # first the code, then the entry that points at it
        overloads = self._load_index()  # as it is now: keep what other processes saved meanwhile
        overloads[key] = name
        self._save_index(overloads)


def kernel(function: Callable | None = None, **options: Any) -> Any:
    """``numba.njit(cache=True, **options)``, its cache safe for concurrent compiling processes
    (module docstring). ``@kernel`` or ``@kernel(inline="always", ...)``."""
    if function is None:
        return functools.partial(kernel, **options)
    dispatcher = njit(cache=True, **options)(function)
    dispatcher._cache._cache_file.__class__ = _KeyedCacheFile
    return dispatcher
