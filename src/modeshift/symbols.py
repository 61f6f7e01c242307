"""Sequences of discrete symbols — event logs, clickstreams, DNA, tokens — and their checks.

Models of discrete sequences (Markov chains, jump processes, categorical HMMs)
work on integer codes. A :class:`Vocabulary` maps each distinct hashable symbol
to a code, in order of first appearance, and encodes new data under an explicit
policy for symbols it has never seen: ``"error"`` (name the sequence and step),
``"ignore"`` (drop the event) or ``"map"`` (send it to one reserved unknown code,
``len(vocabulary)``, which a model can give smoothed probability).

:func:`as_symbol_sequences` reads what users have:

- a string: one sequence of characters (``"ACGGT"``);
- a flat list or 1-D array of hashables: one sequence (``["home", "cart", "pay"]``);
- a list of such sequences (lists, tuples, arrays or strings): many sequences;
- an event log: a data frame with one row per event and case-id, symbol and
  optional time-stamp columns (rows are ordered by time within each case).

>>> seqs = as_symbol_sequences([["a", "b", "a"], ["b", "c"]])
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

from collections.abc import Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal

import numpy as np
import pandas as pd

__all__ = [
    "END",
    "UNKNOWN",
    "UNKNOWN_POLICIES",
    "Marker",
    "SymbolSequences",
    "Vocabulary",
    "as_symbol_sequences",
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
    def learn(cls, symbols: pd.Index) -> Vocabulary:
        """The distinct ``symbols`` in order of first appearance."""
        return cls(tuple(pd.unique(symbols)))

    def __len__(self) -> int:
        return len(self.symbols)

    def __contains__(self, symbol: object) -> bool:
        return bool(self._index.get_indexer(_index([symbol]))[0] >= 0)

    @property
    def _index(self) -> pd.Index:
        index = self.__dict__.get("_symbol_index")
        if index is None:
            index = _index(self.symbols)
            numeric = index.infer_objects()
            if numeric.dtype.kind in "iuf":  # look-ups in a numeric index are many times faster
                index = numeric
            object.__setattr__(self, "_symbol_index", index)
        return index

    @property
    def next_labels(self) -> tuple[Hashable, ...]:
        """Column labels of the next-element layout: the symbols, then ``UNKNOWN`` and ``END``."""
        return (*self.symbols, UNKNOWN, END)

    def encode(self, sequence: Iterable[Hashable], unknown: Unknown = "error", where: str = "") -> np.ndarray:
        """Integer codes of one sequence; unseen symbols are handled by ``unknown``."""
        if unknown not in UNKNOWN_POLICIES:
            raise ValueError(f"unknown must be one of {UNKNOWN_POLICIES}, got {unknown!r}")
        symbols = _index(sequence)
        codes = self._index.get_indexer(symbols).astype(np.int64)
        missing = np.flatnonzero(codes < 0)
        if missing.size:
            if unknown == "error":
                step = int(missing[0])
                prefix = f"{where}, " if where else ""
                raise ValueError(
                    f"{prefix}time step {step}: symbol {symbols[step]!r} is not in the vocabulary "
                    f"({len(self)} symbols); pass unknown='ignore' or 'map' to accept unseen symbols"
                )
            codes = codes[codes >= 0] if unknown == "ignore" else np.where(codes < 0, len(self), codes)
        return codes

    def decode(self, codes: Iterable[int]) -> list[Hashable]:
        """Symbols of ``codes``; the unknown code decodes to ``None``."""
        return [self.symbols[c] if 0 <= c < len(self) else None for c in codes]


@dataclass(frozen=True, eq=False)
class SymbolSequences:
    """Encoded symbol sequences, concatenated: sequence ``i`` is ``codes[offsets[i]:offsets[i + 1]]``."""

    codes: np.ndarray
    offsets: np.ndarray
    vocabulary: Vocabulary
    times: np.ndarray | None = None
    ids: list[Any] | None = None

    @property
    def n_sequences(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return self.n_sequences

    def __getitem__(self, i: int) -> np.ndarray:
        return self.codes[self.offsets[i] : self.offsets[i + 1]]

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[i] for i in range(self.n_sequences))

    def times_of(self, i: int) -> np.ndarray:
        """Time stamps of sequence ``i`` (``ValueError`` if the data has none)."""
        if self.times is None:
            raise ValueError("these sequences have no time stamps")
        return self.times[self.offsets[i] : self.offsets[i + 1]]

    def require_times(self, model: str = "this model", strictly_increasing: bool = True) -> SymbolSequences:
        """Check that time stamps exist (and strictly increase within each sequence)."""
        if self.times is None:
            raise ValueError(f"{model} needs time stamps: pass times= or a time column")
        if strictly_increasing:
            ties = np.flatnonzero(np.diff(self.times) == 0) + 1
            ties = ties[~np.isin(ties, self.offsets)]
            if ties.size:
                sequence, step = _locate(int(ties[0]), self.offsets)
                raise ValueError(f"sequence {sequence}, time step {step}: time stamp repeats the previous one")
        return self


def as_symbol_sequences(
    data: Any,
    *,
    vocabulary: Vocabulary | None = None,
    unknown: Unknown = "error",
    times: Sequence[Any] | None = None,
    id_column: str = "case_id",
    symbol_column: str = "activity",
    time_column: str | None = "timestamp",
) -> SymbolSequences:
    """Validate and encode symbol sequences (see the module docstring for accepted forms).

    With ``vocabulary`` given (a fitted model's), symbols outside it follow
    ``unknown``; otherwise the vocabulary is learned from ``data``. ``times``
    (one array per sequence) or the frame's ``time_column`` give time stamps,
    which must be finite, non-negative and non-decreasing within a sequence.
    Empty sequences are errors, also when ``unknown="ignore"`` empties one.
    Encoded sequences pass through, re-encoded if ``vocabulary`` is another one.
    """
    if isinstance(data, SymbolSequences):
        if vocabulary is None or vocabulary == data.vocabulary:
            return data
        labels = _index([*data.vocabulary.symbols, UNKNOWN])
        sequences, ids = [labels[block] for block in data], data.ids
        if times is None and data.times is not None:
            times = [data.times_of(i) for i in range(data.n_sequences)]
    elif isinstance(data, pd.DataFrame):
        sequences, frame_times, ids = _from_frame(data, id_column, symbol_column, time_column)
        if times is None:
            times = frame_times
    else:
        sequences, ids = _split(data), None
    for i, sequence in enumerate(sequences):
        if len(sequence) == 0:
            raise ValueError(f"sequence {i} is empty")
    if vocabulary is None:
        vocabulary = Vocabulary.learn(_index(sequences[0]).append([_index(s) for s in sequences[1:]]))
        unknown = "error"
    blocks = [vocabulary.encode(s, unknown, where=f"sequence {i}") for i, s in enumerate(sequences)]
    emptied = [i for i, block in enumerate(blocks) if len(block) == 0]
    if emptied:
        raise ValueError(f"sequence {emptied[0]}: every symbol is outside the vocabulary, and unknown='ignore'")
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blocks])]).astype(np.int64)
    stamps = None
    if times is not None:
        if unknown == "ignore" and offsets[-1] != sum(len(s) for s in sequences):
            raise ValueError("unknown='ignore' cannot drop events from time-stamped sequences; use 'map'")
        stamps = _check_times(times, [len(s) for s in sequences])
    return SymbolSequences(np.concatenate(blocks), offsets, vocabulary, stamps, ids)


def next_targets(sequences: SymbolSequences) -> np.ndarray:
    """Codes of the right answers of the next-element layout: each sequence's codes, then END's.

    One entry per row of a model's ``next_symbol_proba``: (n_steps + n_sequences,)
    integers, ``len(vocabulary)`` for an unknown symbol and ``len(vocabulary) + 1``
    for the end of a sequence.
    """
    return np.insert(sequences.codes, sequences.offsets[1:], len(sequences.vocabulary) + 1)


def _index(symbols: Iterable[Hashable]) -> pd.Index:
    """Symbols as a flat pandas index (vectorised look-ups; tuples stay single symbols)."""
    if isinstance(symbols, pd.Index):
        return symbols
    if isinstance(symbols, str):
        symbols = list(symbols)
    elif not isinstance(symbols, (np.ndarray, list)):
        symbols = list(symbols)
    return pd.Index(symbols, dtype=None if isinstance(symbols, np.ndarray) else object, tupleize_cols=False)


def _split(data: Any) -> list[Sequence[Hashable]]:
    """One sequence or many, by the rules of the module docstring."""
    if isinstance(data, str):
        return [data]
    if isinstance(data, np.ndarray):
        return [data] if data.ndim == 1 else list(data)
    if isinstance(data, pd.Series):
        return [data.to_numpy()]
    try:
        items = list(data)
    except TypeError:
        raise TypeError(f"expected symbol sequences, got {type(data).__name__}") from None
    if not items:
        raise ValueError("no sequences given (an empty list)")
    nested = [isinstance(item, (list, tuple, np.ndarray, pd.Series, str)) for item in items]
    if all(nested) and not all(isinstance(item, str) for item in items):
        return [item.to_numpy() if isinstance(item, pd.Series) else item for item in items]
    if any(isinstance(item, (list, tuple, np.ndarray, pd.Series)) for item in items):
        raise ValueError("mixed input: give one sequence of symbols or a list of sequences, not both")
    for step, item in enumerate(items):
        if not isinstance(item, Hashable):
            raise TypeError(f"sequence 0, time step {step}: symbol {item!r} is not hashable")
    return [items]


def _from_frame(
    frame: pd.DataFrame, id_column: str, symbol_column: str, time_column: str | None
) -> tuple[list[list[Hashable]], list[np.ndarray] | None, list[Any]]:
    """Cases of an event log, each ordered by time stamp (stably) when the frame has one."""
    time_column = time_column if time_column in frame.columns or time_column != "timestamp" else None
    for column in (id_column, symbol_column, time_column):
        if column is not None and column not in frame.columns:
            raise ValueError(f"column {column!r} not found; columns are {list(frame.columns)}")
    if len(frame) == 0:
        raise ValueError("the event log has no rows")
    missing = np.flatnonzero(frame[[id_column, symbol_column]].isna().any(axis=1).to_numpy())
    if missing.size:
        raise ValueError(f"row {missing[0]}: missing case id or symbol")
    columns = {"case": frame[id_column].to_numpy(), "symbol": frame[symbol_column].to_numpy()}
    if time_column is not None:
        columns["time"] = _seconds(frame[time_column])
    log = pd.DataFrame(columns)
    order = ["case", "time"] if time_column is not None else ["case"]
    log["case"] = pd.Categorical(log["case"], categories=pd.unique(log["case"]))
    log = log.sort_values(order, kind="stable")
    groups = log.groupby("case", sort=True, observed=True)
    ids = list(groups.groups)
    sequences = [group["symbol"].tolist() for _, group in groups]
    stamps = [group["time"].to_numpy() for _, group in groups] if time_column is not None else None
    return sequences, stamps, ids


def _seconds(column: pd.Series) -> np.ndarray:
    """Time stamps in seconds: numbers as they are, dates since the Unix epoch."""
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        values = column.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        parsed = pd.to_datetime(column, utc=True, errors="coerce", format="mixed")
        bad = np.flatnonzero(parsed.isna().to_numpy())
        if bad.size:
            raise ValueError(f"row {bad[0]}, column {column.name!r}: not a time stamp: {column.iloc[bad[0]]!r}")
        values = (parsed - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy()
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise ValueError(f"row {bad[0]}, column {column.name!r}: time stamp is missing or not finite")
    return values


def _check_times(times: Sequence[Any], lengths: list[int]) -> np.ndarray:
    if len(times) != len(lengths):
        raise ValueError(f"{len(times)} time arrays given for {len(lengths)} sequences")
    blocks = []
    for i, (stamps, length) in enumerate(zip(times, lengths)):
        try:
            block = np.asarray(stamps, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise ValueError(f"sequence {i}: time stamps are not numbers") from None
        if len(block) != length:
            raise ValueError(f"sequence {i}: {len(block)} time stamps for {length} symbols")
        problems = (
            (~np.isfinite(block), "time stamp is not finite"),
            (block < 0, "time stamp is negative"),
            (np.r_[False, np.diff(block) < 0], "time stamps decrease"),
        )
        for mask, message in problems:
            if mask.any():
                raise ValueError(f"sequence {i}, time step {int(np.argmax(mask))}: {message}")
        blocks.append(block)
    return np.concatenate(blocks)


def _locate(row: int, offsets: np.ndarray) -> tuple[int, int]:
    sequence = int(np.searchsorted(offsets, row, side="right") - 1)
    return sequence, row - int(offsets[sequence])
