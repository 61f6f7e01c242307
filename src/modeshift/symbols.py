"""The vocabulary of symbol sequences — event logs, clickstreams, DNA, tokens — and the next-element layout.

Models of discrete sequences (Markov chains, jump processes, categorical HMMs)
work on integer codes. A :class:`Vocabulary` maps each distinct hashable symbol
to a code, in order of first appearance, and encodes new data under an explicit
policy for symbols it has never seen: ``"error"`` (name the sequence and step),
``"ignore"`` (drop the event) or ``"map"`` (send it to one reserved unknown code,
``len(vocabulary)``, which a model can give smoothed probability).

Symbol sequences live in the one data container, :class:`~modeshift.data.Sequences`
(its ``codes`` and ``vocabulary``), read by :func:`~modeshift.data.as_sequences`
with ``symbols=True``:

>>> from modeshift.data import as_sequences
>>> seqs = as_sequences([["a", "b", "a"], ["b", "c"]], symbols=True)
>>> seqs.vocabulary.symbols, seqs.codes.tolist(), seqs.lengths.tolist()
(('a', 'b', 'c'), [0, 1, 0, 1, 2], [3, 2])
>>> seqs.vocabulary.encode(["a", "z"], unknown="map").tolist()
[0, 3]

Models that predict a sequence element by element share one *next-element
layout* (what :mod:`modeshift.evaluate` scores): a sequence of length L has
L + 1 rows, row t for element t given the elements before it and row L for what
follows the last one, whose right answer is :data:`END`. Its V + 2 columns are
the V vocabulary symbols, :data:`UNKNOWN` (code V) and :data:`END` (code V + 1);
:func:`next_targets` gives the right answers' codes and
:attr:`Vocabulary.next_labels` the column labels.

>>> next_targets(seqs).tolist()
[0, 1, 0, 4, 1, 2, 4]
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from modeshift.data import Sequences

__all__ = [
    "END",
    "UNKNOWN",
    "UNKNOWN_POLICIES",
    "Marker",
    "Vocabulary",
    "as_symbol_sequences",
    "n_targets",
    "next_targets",
]

Unknown = Literal["error", "ignore", "map"]
UNKNOWN_POLICIES: tuple[str, ...] = ("error", "ignore", "map")


class Marker(Enum):
    """The two outcomes of the next-element layout that are not vocabulary symbols."""

    UNKNOWN = "unknown"
    END = "end"

    def __repr__(self) -> str:
        return self.name

    __str__ = __repr__


#: A symbol outside the vocabulary (code ``len(vocabulary)``).
UNKNOWN = Marker.UNKNOWN
#: The end of a sequence (code ``len(vocabulary) + 1``).
END = Marker.END


@dataclass(frozen=True)
class Vocabulary:
    """The symbols of a model; symbol ``symbols[i]`` has code ``i``."""

    symbols: tuple[Hashable, ...]

    @classmethod
    def learn(cls, symbols: Iterable[Hashable]) -> Vocabulary:
        """The distinct ``symbols`` in order of first appearance."""
        return cls(tuple(pd.unique(symbol_index(symbols))))

    def __len__(self) -> int:
        return len(self.symbols)

    def __contains__(self, symbol: object) -> bool:
        return bool(self._index.get_indexer(symbol_index([symbol]))[0] >= 0)

    @property
    def _index(self) -> pd.Index:
        index = self.__dict__.get("_symbol_index")
        if index is None:
            index = symbol_index(self.symbols)
            numeric = index.infer_objects()
            if numeric.dtype.kind in "iuf":  # look-ups in a numeric index are many times faster
                index = numeric
            object.__setattr__(self, "_symbol_index", index)
        return index

    @property
    def next_labels(self) -> tuple[Hashable, ...]:
        """Column labels of the next-element layout: the symbols, then ``UNKNOWN`` and ``END``."""
        return (*self.symbols, UNKNOWN, END)

    def encode(
        self, symbols: Iterable[Hashable], unknown: Unknown = "error", locate: Callable[[int], str] | None = None
    ) -> np.ndarray:
        """Integer codes of ``symbols``; unseen symbols are handled by ``unknown``.

        ``locate(i)`` names position i in an error (default ``"time step i"``).
        """
        if unknown not in UNKNOWN_POLICIES:
            raise ValueError(f"unknown must be one of {UNKNOWN_POLICIES}, got {unknown!r}")
        symbols = symbol_index(symbols)
        codes = self._index.get_indexer(symbols).astype(np.int64)
        missing = np.flatnonzero(codes < 0)
        if missing.size:
            if unknown == "error":
                step = int(missing[0])
                where = locate(step) if locate is not None else f"time step {step}"
                symbol = symbols[step].item() if isinstance(symbols[step], np.generic) else symbols[step]
                raise ValueError(
                    f"{where}: symbol {symbol!r} is not in the vocabulary "
                    f"({len(self)} symbols); pass unknown='ignore' or 'map' to accept unseen symbols"
                )
            codes = codes[codes >= 0] if unknown == "ignore" else np.where(codes < 0, len(self), codes)
        return codes

    def decode(self, codes: Iterable[int]) -> list[Hashable]:
        """Symbols of ``codes``; the unknown code decodes to ``None``."""
        return [self.symbols[c] if 0 <= c < len(self) else None for c in codes]


def next_targets(sequences: Sequences) -> np.ndarray:
    """Codes of the right answers of the next-element layout: each sequence's codes, then END's.

    One entry per row of a model's ``next_symbol_proba``: (n_steps + n_sequences,)
    integers, ``len(vocabulary)`` for an unknown symbol and ``len(vocabulary) + 1``
    for the end of a sequence.
    """
    return np.insert(sequences.codes, sequences.offsets[1:], len(sequences.vocabulary) + 1)


def n_targets(sequences: Sequences, unknown: Unknown = "error") -> int:
    """How many rows of the next-element layout a model scores: one per element and one per end,
    unknown elements left out when its policy is ``"ignore"`` (the n of a BIC)."""
    skipped = int(np.sum(sequences.codes == len(sequences.vocabulary))) if unknown == "ignore" else 0
    return sequences.n_steps + sequences.n_sequences - skipped


def symbol_index(symbols: Iterable[Hashable]) -> pd.Index:
    """Symbols as a flat pandas index (vectorised look-ups; tuples stay single symbols)."""
    if isinstance(symbols, pd.Index):
        return symbols
    if isinstance(symbols, str):
        symbols = list(symbols)
    elif not isinstance(symbols, (np.ndarray, list)):
        symbols = list(symbols)
    return pd.Index(symbols, dtype=None if isinstance(symbols, np.ndarray) else object, tupleize_cols=False)


def as_symbol_sequences(data: Any, **options: Any) -> Sequences:
    """Deprecated: ``as_sequences(data, symbols=True, ...)`` (:func:`modeshift.data.as_sequences`)."""
    from modeshift.data import as_sequences  # the data layer builds on this module

    warnings.warn(
        "as_symbol_sequences(data, ...) is now as_sequences(data, symbols=True, ...); the old name goes in the "
        "next release",
        DeprecationWarning,
        stacklevel=2,
    )
    return as_sequences(data, symbols=True, **options)
