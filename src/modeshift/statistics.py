"""Expected sufficient statistics that add up across shards of data."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["Stacked", "Statistics"]


class Statistics(dict):
    """Named sufficient statistics (arrays, numbers or nested ``Statistics``).

    Statistics of disjoint batches of sequences add up to the statistics of the
    whole, so an E-step can run on shards anywhere and be reduced with ``sum``.

    >>> import numpy as np
    >>> a = Statistics(counts=np.ones(2), total=1.0)
    >>> (a + a)["counts"]
    array([2., 2.])
    """

    def __add__(self, other: Any) -> Statistics:
        if isinstance(other, int) and other == 0:  # sum() starts from 0
            return self
        if not isinstance(other, Statistics) or other.keys() != self.keys():
            raise ValueError("only statistics with the same fields can be added")
        return Statistics({key: self[key] + other[key] for key in self})

    __radd__ = __add__


class Stacked:
    """Per-step rows that batches contribute by stacking rather than summing, for an
    M-step that must see the data itself (an iterative one, such as a logistic regression).

    >>> (Stacked(np.zeros((2, 3))) + Stacked(np.ones((1, 3)))).array.shape
    (3, 3)
    """

    def __init__(self, *blocks: np.ndarray):
        self.blocks = blocks

    def __add__(self, other: Stacked) -> Stacked:
        return Stacked(*self.blocks, *other.blocks)

    @property
    def array(self) -> np.ndarray:
        return np.concatenate(self.blocks)
