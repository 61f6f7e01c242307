"""Context keys of symbol sequences: n-gram counting without dense tables.

A context of ``order`` symbol codes is one int64, its codes read as digits in
base ``base``, oldest first. Places before a sequence's first element hold the
start digit ``base - 1``, so no context spans two sequences. With keys, counts of
(context, next element) pairs are one ``np.unique`` or ``np.bincount`` away,
whatever the number of possible contexts, and a table of them is read by
:func:`find_keys`.
"""

from __future__ import annotations

import numpy as np

from modeshift._kernels.compile import kernel

__all__ = ["context_keys", "find_keys"]

#: Tables of more keys (8 MB) than this are searched in sorted order by :func:`find_keys`.
LARGE_TABLE = 2**20


@kernel
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


def find_keys(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """The position of each of ``keys`` in the sorted array ``sorted_keys``, -1 where it is absent.

    In a table larger than the CPU caches the keys are looked up in sorted order:
    binary searches that walk the table in one direction stay in cache, several
    times faster than random ones however many keys there are.
    """
    if len(sorted_keys) > LARGE_TABLE:
        order = np.argsort(keys)
        at = np.empty(len(keys), dtype=np.int64)
        at[order] = np.searchsorted(sorted_keys, keys[order])
    else:
        at = np.searchsorted(sorted_keys, keys)
    np.minimum(at, len(sorted_keys) - 1, out=at)
    return np.where(sorted_keys[at] == keys, at, -1)
