"""Context keys of symbol sequences: n-gram counting without dense tables.

A context of ``order`` symbol codes is one int64, its codes read as digits in
base ``base``, oldest first. Places before a sequence's first element hold the
start digit ``base - 1``, so no context spans two sequences. With keys, counts of
(context, next element) pairs are one ``np.unique`` or ``np.bincount`` away,
whatever the number of possible contexts.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["context_keys"]


@njit(cache=True)
def context_keys(codes: np.ndarray, offsets: np.ndarray, order: int, base: int, skip: int) -> np.ndarray:
    """The context of every row of the next-element layout, (n_steps + n_sequences,) int64.

    Sequence i is ``codes[offsets[i]:offsets[i + 1]]``; it has one row per element
    and one for what follows its last element. Elements with code ``skip`` keep
    the context unchanged (pass -1 to skip none). ``base ** (order + 1)`` must fit
    in an int64.
    """
    top = base ** (order - 1)
    start = 0
    for _ in range(order):
        start = start * base + base - 1
    keys = np.empty(codes.shape[0] + offsets.shape[0] - 1, dtype=np.int64)
    window = np.empty(order, dtype=np.int64)  # the context's codes, oldest at ``oldest``
    row = 0
    for i in range(offsets.shape[0] - 1):
        window[:] = base - 1
        oldest = 0
        key = start
        for t in range(offsets[i], offsets[i + 1]):
            keys[row] = key
            row += 1
            code = codes[t]
            if code != skip:
                # drop the oldest digit by subtraction: a modulo here would double the kernel's time
                key = (key - window[oldest] * top) * base + code
                window[oldest] = code
                oldest = oldest + 1 if oldest + 1 < order else 0
        keys[row] = key
        row += 1
    return keys
