"""A batch of sequences of unequal length — numbers or symbols — and every check on user input.

All public model methods convert their input through :func:`as_sequences`, so a
bad value is reported once, in one style: which sequence, which time step (and
which column of a data frame), what was wrong. All sequences live in one
``(n_steps, n_features)`` array, ``values``, with ``offsets`` marking where each
sequence starts, the layout the numba kernels work on. Real-valued observations
are floats, NaN marking a missing value; symbol sequences (event logs,
clickstreams, DNA, tokens) are one column of integer codes into a
:class:`~modeshift.symbols.Vocabulary`, read with ``symbols=True``:

>>> seqs = as_sequences([["home", "cart"], ["home"]], symbols=True)
>>> seqs.codes.tolist(), seqs.lengths.tolist(), seqs.vocabulary.symbols
([0, 1, 0], [2, 1], ('home', 'cart'))

Either kind may carry time stamps (finite and non-decreasing within a sequence:
one check for both), exogenous inputs and the ids of a data frame.

A data frame is read by one rule: an id column names the sequences, a time column
orders them (read by :class:`TimeAxis`: numbers, ISO dates, periods such as
``1959Q2``), and a column that looks like time is never a value unless named
(:func:`time_like_columns`). What was read is kept as a :class:`Schema`, which a
fitted model stores so that new data are read the same way:

>>> frame = pd.DataFrame({"year": [1871, 1872, 1873], "volume": [1120.0, 1160.0, 963.0]})
>>> seqs = as_sequences(frame, time_column="year")
>>> seqs.schema.columns, seqs.schema.time.describe(), seqs.schema.time.after(seqs.times[-1], 2)
(('volume',), 'numbers (step 1)', [1874, 1875])
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from os import PathLike
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from modeshift.symbols import UNKNOWN, UNKNOWN_POLICIES, Unknown, Vocabulary, symbol_index

__all__ = [
    "DataWarning",
    "Schema",
    "Sequences",
    "TimeAxis",
    "read_table",
    "time_like_columns",
    "check_dimensions",
    "as_sequences",
    "check_array",
    "check_covariances",
    "check_probabilities",
]

Form = Literal["array", "list", "frame"]


@dataclass(frozen=True, eq=False)
class Sequences:
    """Sequences of observations or symbols, concatenated.

    Parameters
    ----------
    values : (n_steps, n_features) array
        All time steps of all sequences, one after another: floats (NaN marks a
        missing value), or for symbol sequences one column of int64 codes.
    offsets : (n_sequences + 1,) int array
        Sequence ``i`` is ``values[offsets[i]:offsets[i + 1]]``.
    times : (n_steps,) float array, optional
        Time stamps, non-decreasing within each sequence (dates: seconds since 1970).
    inputs : (n_steps, n_inputs) float array, optional
        Exogenous inputs (controls, covariates) aligned with ``values``.
    ids : list, optional
        A label per sequence (the id column of a data frame).
    vocabulary : Vocabulary, optional
        For symbol sequences: code ``c`` is ``vocabulary.symbols[c]``, code
        ``len(vocabulary)`` an unknown symbol (see :attr:`codes`).
    schema : Schema, optional
        For data read from a data frame: its columns and time axis (see :class:`Schema`).

    Build one with :func:`as_sequences` or the ``from_*`` constructors, which
    validate; the plain constructor trusts its arguments.

    Examples
    --------
    >>> seqs = Sequences.from_arrays([np.zeros((5, 2)), np.ones((3, 2))])
    >>> seqs.lengths
    array([5, 3])
    """

    values: np.ndarray
    offsets: np.ndarray
    times: np.ndarray | None = None
    inputs: np.ndarray | None = None
    ids: list[Any] | None = None
    form: Form = "array"
    row_order: np.ndarray | None = field(default=None, repr=False)
    vocabulary: Vocabulary | None = None
    schema: Schema | None = field(default=None, repr=False)

    # ----------------------------------------------------------------- constructors
    @classmethod
    def from_array(cls, X: Any, lengths: Sequence[int] | None = None) -> Sequences:
        """One 1-D/2-D array, optionally cut into sequences by ``lengths`` (hmmlearn's form)."""
        if lengths is None:
            return cls.from_arrays([X], form="array")
        offsets = _offsets(lengths)
        values = _as_2d_float(X, _Locator(offsets))
        if len(values) != offsets[-1]:
            raise ValueError(f"lengths sum to {int(offsets[-1])} but X has {len(values)} rows")
        _check_finite_or_nan(values, offsets)
        return cls(values, offsets, form="array")

    @classmethod
    def from_arrays(
        cls,
        arrays: Sequence[Any],
        times: Sequence[Any] | None = None,
        inputs: Sequence[Any] | None = None,
        *,
        form: Form = "list",
    ) -> Sequences:
        """A list of arrays, one per sequence, each (n_steps,) or (n_steps, n_features); ``times``
        and ``inputs`` one array per sequence."""
        if len(arrays) == 0:
            raise ValueError("no sequences given (an empty list)")
        blocks = [_as_2d_float(a, _Locator(i)) for i, a in enumerate(arrays)]
        values, offsets = _concatenate(blocks, "features")
        _check_finite_or_nan(values, offsets)
        seqs = cls(values, offsets, form=form)
        if inputs is not None:
            given = seqs._per_step(inputs, "inputs", per_sequence=True)
            _check_finite(given, offsets, "input")
            seqs = replace(seqs, inputs=given)
        return seqs if times is None else seqs.with_times(times)

    @classmethod
    def from_symbols(
        cls,
        data: Any,
        lengths: Sequence[int] | None = None,
        *,
        times: Any = None,
        vocabulary: Vocabulary | None = None,
        unknown: Unknown = "error",
    ) -> Sequences:
        """Symbol sequences as codes of ``vocabulary``, or of one learned from ``data``.

        ``data`` is a string (one sequence of characters), a flat list, 1-D array or
        Series of hashable symbols (one sequence, cut into several by ``lengths`` if
        given), a list of such sequences or a 2-D array (one sequence per row), or
        symbol :class:`Sequences` (re-encoded if ``vocabulary`` is another one).
        With ``vocabulary`` given (a fitted model's), symbols outside it follow
        ``unknown``: ``"error"``, ``"ignore"`` (dropped) or ``"map"`` (code
        ``len(vocabulary)``). ``times``: one array per sequence, or one for all steps.
        """
        if isinstance(data, Sequences):
            if lengths is not None or times is not None:
                raise ValueError("lengths and times cannot be given with a Sequences object")
            return data.encoded(vocabulary, unknown)
        if isinstance(data, pd.DataFrame):
            raise TypeError("read an event log (a data frame) with Sequences.from_event_log")
        sequences, form = _split_symbols(data)
        try:  # pandas hashes the symbols; an unhashable one is named after the fact, at no cost to good data
            symbols = symbol_index(sequences[0]).append([symbol_index(s) for s in sequences[1:]])
            offsets = _symbol_offsets(sequences, form, lengths, len(symbols))
            seqs, dropped = _encode_symbols(symbols, offsets, vocabulary, unknown)
            _check_hashable([seqs.vocabulary.symbols])  # pandas may learn lists as symbols without hashing them
        except TypeError:
            _check_hashable(sequences)
            raise
        seqs = replace(seqs, form=form)
        if times is None:
            return seqs
        if dropped:
            raise ValueError("unknown='ignore' cannot drop events from time-stamped sequences; use 'map'")
        return seqs.with_times(times)

    @classmethod
    def from_dataframe(
        cls,
        frame: pd.DataFrame,
        *,
        id_column: str | None = "id",
        time_column: str | Sequence[str] | None = "auto",
        columns: Sequence[str] | None = None,
        input_columns: Sequence[str] | None = None,
        categories: bool | Sequence[Any] = False,
        value_columns: Sequence[str] | None = None,
    ) -> Sequences:
        """Long-format data: one row per time step, an ``id`` column naming the sequence.

        Rows are grouped by ``id`` (in order of first appearance; without the
        default ``"id"`` column the frame is one sequence) and sorted by the time
        column within each sequence. The values are ``columns``, by default every
        column but the id, time and input columns and those that look like time
        (:func:`time_like_columns`): a time stamp is never modelled unless listed in
        ``columns``. ``time_column="auto"`` (the default) takes the one column that
        looks like time, with a :class:`DataWarning` saying so, or a ``year`` column
        with a ``quarter`` or ``month`` column as quarterly or monthly periods; None
        keeps the rows in file order. Time stamps are read by :class:`TimeAxis`
        (numbers, ISO dates and datetimes, periods such as ``1959Q2`` or ``1959-03``);
        a stamp repeated within a sequence is an error, irregular steps a
        :class:`DataWarning`. ``categories``: the one value column holds labels (strings
        or any hashable) of a categorical model, coded 0, 1, ... in sorted order (True), or
        in the order of the labels given (a fitted model's ``schema_.categories``; another
        label is an error naming its row). The result carries its :class:`Schema`. Results
        that are indexed by time step come back in the frame's original row order.
        (``value_columns`` is the deprecated name of ``columns``.)
        """
        _check_frame(frame)
        if value_columns is not None:
            warnings.warn(
                "value_columns is renamed columns; the old name goes in the next release", DeprecationWarning, 2
            )
            columns = value_columns if columns is None else columns
        if id_column == "id" and "id" not in frame.columns:
            id_column = None
        times = _time_columns(frame, time_column, id_column, [*(columns or ()), *(input_columns or ())])
        _check_columns(frame, id_column, *times, *(columns or ()), *(input_columns or ()))
        if columns is None:
            special = {id_column, *times, *(input_columns or ()), *time_like_columns(frame)}
            columns = [c for c in frame.columns if c not in special]
            _warn_of_row_numbers(frame, columns)
        if not columns:
            raise ValueError(f"the data frame has no value columns (columns are {list(frame.columns)})")
        axis, stamps = TimeAxis.read(_time_series(frame, times)) if times else (None, None)
        rows = _Rows.of(frame, id_column, stamps, "+".join(times) or None)
        labels = None
        if categories is not False:
            if len(columns) != 1:
                raise ValueError(f"categories need one value column, got {list(columns)}")
            codes, labels = _category_codes(frame[columns[0]], None if categories is True else categories, rows.locate)
            values = rows.take(codes)[:, None]
        else:
            values = rows.take(np.column_stack([_numeric_column(frame, c, rows.locate) for c in columns]))
        _check_finite_or_nan(values, rows.offsets, columns=list(columns))
        inputs = None
        if input_columns:
            inputs = rows.take(np.column_stack([_numeric_column(frame, c, rows.locate) for c in input_columns]))
            _check_finite(inputs, rows.offsets, "input", columns=list(input_columns))
        if axis is not None:
            axis = axis.spaced(rows.times, rows.offsets, rows.ids, "+".join(times))
        schema = Schema(tuple(map(str, columns)), id_column, tuple(times), axis, tuple(input_columns or ()))
        schema = schema if labels is None else replace(schema, categories=labels)
        return cls(
            values, rows.offsets, rows.times, inputs, rows.ids, form="frame", row_order=rows.row_order, schema=schema
        )

    @classmethod
    def from_event_log(
        cls,
        frame: pd.DataFrame,
        *,
        id_column: str | None = "case_id",
        symbol_column: str = "activity",
        time_column: str | None = "timestamp",
        vocabulary: Vocabulary | None = None,
        unknown: Unknown = "error",
    ) -> Sequences:
        """An event log: one row per event, with case-id, symbol and time-stamp columns.

        Rows are grouped into sequences by case and ordered by time stamp (stably)
        within each, as :meth:`from_dataframe` does; the default ``"case_id"`` and
        ``"timestamp"`` columns are optional (without them the log is one sequence,
        in row order). Symbols are encoded as by :meth:`from_symbols`; ``"ignore"``
        cannot drop events here (use ``"map"``).
        """
        _check_frame(frame)
        if id_column == "case_id" and "case_id" not in frame.columns:
            id_column = None
        if time_column == "timestamp" and "timestamp" not in frame.columns:
            time_column = None
        _check_columns(frame, id_column, symbol_column, time_column)
        axis, stamps = (None, None) if time_column is None else TimeAxis.read(frame[time_column])
        rows = _Rows.of(frame, id_column, stamps, time_column)
        symbols = rows.take(frame[symbol_column].to_numpy())
        missing = np.flatnonzero(pd.isna(symbols))
        if missing.size:
            row = int(rows.order[missing[0]])
            raise ValueError(f"{rows.locate(row)}, column {symbol_column!r}: missing symbol")
        seqs, dropped = _encode_symbols(symbol_index(symbols), rows.offsets, vocabulary, unknown)
        if dropped:
            raise ValueError("unknown='ignore' cannot drop events from an event log; use 'map'")
        schema = Schema((symbol_column,), id_column, () if time_column is None else (time_column,), axis, symbols=True)
        return replace(seqs, times=rows.times, ids=rows.ids, form="frame", row_order=rows.row_order, schema=schema)

    @classmethod
    def from_csv(cls, path: str | PathLike[str], **columns: Any) -> Sequences:
        """Read a CSV (or, named ``.tsv``, tab-separated) file in long format; keyword arguments as for
        :meth:`from_dataframe`. Errors name the file."""
        return cls.from_file(path, **columns)

    @classmethod
    def from_parquet(cls, path: str | PathLike[str], **columns: Any) -> Sequences:
        """Read a Parquet file in long format (needs pyarrow); arguments as for :meth:`from_dataframe`."""
        return cls.from_file(path, **columns)

    @classmethod
    def from_file(cls, path: str | PathLike[str], **columns: Any) -> Sequences:
        """Read a ``.csv``, ``.tsv`` or ``.parquet`` file (see :func:`read_table`) with
        :meth:`from_dataframe`; every error names the file."""
        frame = read_table(path)
        with naming_file(path):
            return cls.from_dataframe(frame, **columns)

    # -------------------------------------------------------------------- accessors
    @property
    def n_sequences(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_steps(self) -> int:
        """Total number of time steps over all sequences."""
        return int(self.offsets[-1])

    @property
    def n_features(self) -> int:
        return self.values.shape[1]

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def starts(self) -> np.ndarray:
        """Index in ``values`` of each sequence's first step."""
        return self.offsets[:-1]

    @property
    def linked_rows(self) -> np.ndarray:
        """Index of every step that has a predecessor in its own sequence (all but each first step):
        the rows where dynamics or a chain link step t - 1 to step t."""
        mask = np.ones(self.n_steps, dtype=bool)
        mask[self.starts] = False
        return np.flatnonzero(mask)

    @property
    def has_missing(self) -> bool:
        return bool(np.isnan(self.values).any())

    @property
    def codes(self) -> np.ndarray:
        """(n_steps,) int64 codes of symbol sequences into ``vocabulary`` (``len(vocabulary)``: unknown)."""
        if self.vocabulary is None:
            raise ValueError(
                "these sequences hold numbers, not symbols: read symbols with as_sequences(..., symbols=True)"
            )
        return self.values[:, 0]

    def __len__(self) -> int:
        return self.n_sequences

    def __getitem__(self, i: int) -> np.ndarray:
        """Sequence ``i``: its (length, n_features) values, or its (length,) codes for symbols."""
        steps = self.codes if self.vocabulary is not None else self.values
        return steps[self.offsets[i] : self.offsets[i + 1]]

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[i] for i in range(self.n_sequences))

    def blocks(self, max_rows: int, extra_rows: int = 0) -> Iterator[Sequences]:
        """Runs of consecutive whole sequences, in order, of at most ``max_rows`` rows each, counting
        ``extra_rows`` more per sequence (a layout's row at each end); a longer sequence alone. Views,
        not copies: a computation whose results add up over sequences (an E-step) done block by block
        keeps its per-step arrays in the cache.

        >>> seqs = Sequences.from_arrays([np.zeros((3, 1)), np.zeros((2, 1)), np.zeros((4, 1))])
        >>> [block.lengths.tolist() for block in seqs.blocks(5)]
        [[3, 2], [4]]
        """
        if self.n_steps + extra_rows * self.n_sequences <= max_rows:
            yield self
            return
        rows = self.offsets + extra_rows * np.arange(self.n_sequences + 1)  # each sequence's first row
        first = 0
        while first < self.n_sequences:
            last = max(first + 1, int(np.searchsorted(rows, rows[first] + max_rows, "right")) - 1)
            yield self._between(first, last)
            first = last

    def spread(self, max_steps: int, piece: int) -> Sequences:
        """About ``max_steps`` steps taken evenly over the data (``self`` when it has no more): the
        sequences cut into pieces of ``piece`` steps (the remainder joins the last piece of each, a
        shorter sequence is one piece: none is shorter than its sequence allows, as a model of
        several lags needs), and pieces 0, j, 2j, ... kept, j = ceil(steps / ``max_steps``), each a
        sequence of its own. What a start learns from on long data, where a fit to all of it would
        cost many passes.

        >>> seqs = Sequences.from_arrays([np.arange(10.0)[:, None], np.arange(5.0)[:, None]])
        >>> part = seqs.spread(8, 3)
        >>> part.lengths.tolist(), part.values[:, 0].tolist()
        ([3, 4], [0.0, 1.0, 2.0, 6.0, 7.0, 8.0, 9.0])
        """
        if self.n_steps <= max_steps:
            return self
        counts = np.maximum(self.lengths // piece, 1)
        firsts = np.concatenate([a + piece * np.arange(c) for a, c in zip(self.offsets[:-1], counts)])
        lasts = firsts + piece
        lasts[np.cumsum(counts) - 1] = self.offsets[1:]  # each sequence's last piece runs to its end
        kept = slice(None, None, -(-self.n_steps // max_steps))
        firsts, lasts = firsts[kept], lasts[kept]
        rows = np.concatenate([np.arange(a, b) for a, b in zip(firsts, lasts)])
        return self._taken(rows, lasts - firsts, None)  # pieces, not the sequences named

    def _between(self, first: int, last: int) -> Sequences:
        """Sequences ``first`` to ``last`` - 1, as views."""
        rows = slice(int(self.offsets[first]), int(self.offsets[last]))
        return replace(
            self,
            values=self.values[rows],
            offsets=self.offsets[first : last + 1] - self.offsets[first],
            times=None if self.times is None else self.times[rows],
            inputs=None if self.inputs is None else self.inputs[rows],
            ids=None if self.ids is None else self.ids[first:last],
            row_order=None,  # a block is for computing, not for restoring a frame's row order
        )

    def subset(self, chosen: np.ndarray) -> Sequences:
        """The sequences ``chosen`` (a boolean mask over them), in order: new arrays (``self`` when
        every one is chosen).

        >>> seqs = Sequences.from_arrays([np.zeros((3, 1)), np.ones((2, 1)), np.zeros((4, 1))])
        >>> seqs.subset(np.array([True, False, True])).lengths.tolist()
        [3, 4]
        """
        if chosen.all():
            return self
        ids = None if self.ids is None else [self.ids[i] for i in np.flatnonzero(chosen)]
        return self._taken(np.repeat(chosen, self.lengths), self.lengths[chosen], ids)

    def _taken(self, rows: np.ndarray, lengths: np.ndarray, ids: list[Any] | None) -> Sequences:
        """New sequences of the steps ``rows`` (indices or a mask, in order), of ``lengths``, named ``ids``."""
        return replace(
            self,
            values=self.values[rows],
            offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(self.offsets.dtype),
            times=None if self.times is None else self.times[rows],
            inputs=None if self.inputs is None else self.inputs[rows],
            ids=ids,
            row_order=None,  # for computing, as a block is
        )

    def locate(self, row: int) -> tuple[int, int]:
        """(sequence index, time step) of a row of ``values``."""
        sequence = int(np.searchsorted(self.offsets, row, side="right") - 1)
        return sequence, int(row - self.offsets[sequence])

    def times_of(self, i: int) -> np.ndarray:
        """Time stamps of sequence ``i`` (``ValueError`` if the data have none)."""
        if self.times is None:
            raise ValueError("these sequences have no time stamps")
        return self.times[self.offsets[i] : self.offsets[i + 1]]

    def restore(self, per_step: np.ndarray) -> np.ndarray | list[np.ndarray]:
        """Give a per-step result back in the form the data came in.

        A list of arrays for list input; one array for array input; one array in
        the original row order for a data frame.
        """
        if self.form == "list":
            return [per_step[a:b] for a, b in zip(self.offsets[:-1], self.offsets[1:])]
        if self.row_order is None:
            return per_step
        restored = np.empty_like(per_step)
        restored[self.row_order] = per_step
        return restored

    # ------------------------------------------------------------------ attachments
    def with_inputs(self, inputs: Any, input_dim: int, model: str = "this model") -> Sequences:
        """These sequences with checked exogenous inputs (n_steps, input_dim) attached.

        ``inputs`` is one array aligned with the values as the caller gave them (for a
        data frame: in its row order), a list of arrays (one per sequence, for list
        input), or None to use inputs already attached (a data frame's input columns).
        With ``input_dim=0`` no inputs may be given and an empty (n_steps, 0) array is attached.
        """
        if inputs is None:
            if input_dim == 0:
                return replace(self, inputs=np.zeros((self.n_steps, 0)))
            if self.inputs is None:
                raise ValueError(f"{model} has input_dim={input_dim}: pass inputs")
            given = np.asarray(self.inputs, dtype=float)
        else:
            if input_dim == 0:
                raise ValueError(f"inputs were given but {model} has input_dim=0")
            per_sequence = self.form == "list" and isinstance(inputs, (list, tuple)) and len(inputs) > 0
            given = self._per_step(inputs, "inputs", per_sequence and not np.isscalar(inputs[0]))
        if given.shape[1] != input_dim:
            raise ValueError(f"inputs must have {input_dim} column(s) (input_dim), got {given.shape[1]}")
        _check_finite(given, self.offsets, "input")
        return replace(self, inputs=np.ascontiguousarray(given))

    def with_times(self, times: Any) -> Sequences:
        """These sequences with checked time stamps: one array per sequence (a nested list), or one
        array for all steps (for a data frame: in its row order)."""
        nested = isinstance(times, (list, tuple)) and len(times) > 0 and not np.isscalar(times[0])
        stamps = self._per_step(times, "times", per_sequence=nested)
        if stamps.shape[1] != 1:
            raise ValueError(f"times must be one number per time step, got {stamps.shape[1]} columns")
        _check_times(stamps[:, 0], self.offsets)
        return replace(self, times=stamps[:, 0])

    def encoded(self, vocabulary: Vocabulary | None, unknown: Unknown = "error") -> Sequences:
        """These symbol sequences in the codes of ``vocabulary`` (themselves if it is theirs, or None)."""
        codes = self.codes
        if vocabulary is None or vocabulary == self.vocabulary:
            return self
        labels = symbol_index([*self.vocabulary.symbols, UNKNOWN])[codes]
        seqs, dropped = _encode_symbols(labels, self.offsets, vocabulary, unknown)
        if dropped and (self.times is not None or self.form == "frame"):
            raise ValueError("unknown='ignore' cannot drop events from time-stamped sequences or event logs; use 'map'")
        if dropped:
            return replace(seqs, ids=self.ids, form=self.form)
        return replace(self, values=seqs.values, vocabulary=vocabulary)

    def _per_step(self, given: Any, what: str, per_sequence: bool) -> np.ndarray:
        """``given`` as one (n_steps, m) float array aligned with ``values``: from a list with one
        array per sequence, or from one array aligned with the steps as the caller gave them."""
        if per_sequence:
            if len(given) != self.n_sequences:
                raise ValueError(f"{len(given)} {what} arrays given for {self.n_sequences} sequences")
            blocks = [_as_2d_float(block, _Locator(s)) for s, block in enumerate(given)]
            for s, block in enumerate(blocks):
                if len(block) != self.lengths[s]:
                    raise ValueError(
                        f"sequence {s}: {what} for {len(block)} time steps, but the sequence has {self.lengths[s]}"
                    )
            return _concatenate(blocks, f"{what} columns")[0]
        array = _as_2d_float(given, _Locator(self.offsets if self.row_order is None else None))
        if len(array) != self.n_steps:
            raise ValueError(f"{what} for {len(array)} time steps, but the data have {self.n_steps}")
        return array if self.row_order is None else array[self.row_order]

    # --------------------------------------------------------------- model checks
    def require(
        self,
        *,
        allow_missing: bool,
        min_length: int = 1,
        n_features: int | None = None,
        model: str = "this model",
    ) -> Sequences:
        """Check what a model needs; raise ``ValueError`` naming the first offending place."""
        if n_features is not None and self.n_features != n_features:
            raise ValueError(f"{model} expects {n_features} feature(s) per time step, got {self.n_features}")
        short = np.flatnonzero(self.lengths < min_length)
        if short.size:
            i = int(short[0])
            raise ValueError(f"sequence {i} has {self.lengths[i]} time step(s); {model} needs at least {min_length}")
        if not allow_missing:
            rows = np.flatnonzero(np.isnan(self.values).any(axis=1))
            if rows.size:
                sequence, step = self.locate(int(rows[0]))
                raise ValueError(
                    f"sequence {sequence}, time step {step}: missing value (NaN); {model} does not support missing data"
                )
        return self

    def require_observed(self, every_sequence: bool = True) -> Sequences:
        """Check that a fit has data to learn from: every feature observed somewhere (a column
        of NaN only would be fit to NaN parameters) and, if ``every_sequence``, an observed
        value in every sequence (missing values are otherwise allowed)."""
        observed = ~np.isnan(self.values)
        empty = np.flatnonzero(np.add.reduceat(observed.any(axis=1), self.offsets[:-1]) == 0)  # sequences are non-empty
        if every_sequence and empty.size:
            raise ValueError(f"sequence {empty[0]} has no observed value (all NaN); fit needs data in every sequence")
        never = np.flatnonzero(~observed.any(axis=0))
        if never.size:
            columns = None if self.schema is None else list(self.schema.columns)
            named = columns is not None and len(columns) == self.n_features
            name = f"column {columns[never[0]]!r}" if named else f"feature {never[0]}"
            raise ValueError(f"{name} is never observed (all NaN); fit cannot estimate it: drop it or give it data")
        return self

    def require_counts(self, *, upper: int | None = None, model: str = "this model") -> Sequences:
        """Check that observed values are non-negative integers (below ``upper`` if given)."""
        values = self.values
        with np.errstate(invalid="ignore"):
            valid = (values >= 0) & (values == np.floor(values))
            if upper is not None:
                valid &= values < upper
        if valid.all():
            return self
        rows, cols = np.nonzero(~valid & ~np.isnan(values))
        if rows.size:
            sequence, step = self.locate(int(rows[0]))
            value = values[rows[0], cols[0]]
            expected = "a non-negative integer" + ("" if upper is None else f" below {upper}")
            raise ValueError(f"sequence {sequence}, time step {step}: {model} expects {expected}, got {value:g}")
        return self

    def require_times(self, model: str = "this model", strictly_increasing: bool = True) -> Sequences:
        """Check that time stamps exist (and, by default, strictly increase within each sequence)."""
        if self.times is None:
            raise ValueError(f"{model} needs time stamps: pass times= or a time column")
        if strictly_increasing:
            ties = np.flatnonzero(np.diff(self.times) == 0) + 1
            ties = ties[~np.isin(ties, self.offsets)]
            if ties.size:
                sequence, step = self.locate(int(ties[0]))
                raise ValueError(f"sequence {sequence}, time step {step}: time stamp repeats the previous one")
        return self


def as_sequences(
    data: Any,
    lengths: Sequence[int] | None = None,
    *,
    symbols: bool = False,
    vocabulary: Vocabulary | None = None,
    unknown: Unknown = "error",
    times: Any = None,
    **columns: Any,
) -> Sequences:
    """Convert any accepted input to :class:`Sequences`.

    Accepted: a :class:`Sequences`; a 1-D or 2-D array (one sequence, or several
    cut by ``lengths``); a list of arrays; a pandas DataFrame in long format
    (keyword arguments name its columns, as for :meth:`Sequences.from_dataframe`).
    ``times`` (one array per sequence, or one for all steps) attach time stamps.

    With ``symbols=True`` (implied by ``vocabulary``) the data are symbols, encoded
    as by :meth:`Sequences.from_symbols` (strings, lists of hashables, ...), and a
    data frame is an event log (:meth:`Sequences.from_event_log`: columns
    ``case_id``, ``activity``, ``timestamp`` unless named). Under a given
    ``vocabulary`` (a fitted model's) unseen symbols follow ``unknown``: ``"error"``,
    ``"ignore"`` or ``"map"``; symbol :class:`Sequences` are re-encoded into it.

    >>> as_sequences("ACGGT", symbols=True).codes.tolist()
    [0, 1, 2, 2, 3]
    """
    symbolic = symbols or vocabulary is not None
    if isinstance(data, Sequences):
        if lengths is not None or times is not None or columns:
            raise ValueError("lengths, times and columns cannot be given with a Sequences object")
        return data.encoded(vocabulary, unknown) if symbolic else data
    if isinstance(data, pd.DataFrame):
        if lengths is not None:
            raise ValueError("lengths cannot be given with a data frame; use its id column")
        if times is not None:
            raise ValueError("times cannot be given with a data frame; use its time column")
        if symbolic:
            return Sequences.from_event_log(data, vocabulary=vocabulary, unknown=unknown, **columns)
        return Sequences.from_dataframe(data, **columns)
    if columns:
        raise TypeError(f"{', '.join(sorted(columns))} name columns of a data frame, not of {type(data).__name__} data")
    if symbolic:
        return Sequences.from_symbols(data, lengths, times=times, vocabulary=vocabulary, unknown=unknown)
    if isinstance(data, (list, tuple)) and data and not np.isscalar(data[0]):
        if lengths is not None:
            raise ValueError("lengths cannot be given with a list of sequences")
        seqs = Sequences.from_arrays(data)
    else:
        seqs = Sequences.from_array(data.to_numpy() if isinstance(data, pd.Series) else data, lengths)
    return seqs if times is None else seqs.with_times(times)


# -------------------------------------------------------------- time and schema
class DataWarning(UserWarning):
    """A doubt about the data that does not stop a fit: a column read as time by its look,
    irregular time stamps, columns a model ignores."""


#: Column names that mark time stamps, whatever their case (see :func:`time_like_columns`).
TIME_NAMES = frozenset({"time", "date", "datetime", "timestamp", "year", "quarter", "month", "week", "day", "period"})
_PERIODS = {r"\d{4}-?[Qq][1-4]": "Q", r"\d{4}-(?:0[1-9]|1[0-2])": "M"}  # 1959Q2 / 1959-Q2, 1959-03
_DATE = r"\d{4}-\d{2}-\d{2}(?:[T ].*)?"


def time_like_columns(frame: pd.DataFrame) -> list[str]:
    """The columns of ``frame`` that look like time stamps, never modelled as values unless named.

    The rule, conservative and explicit: a column is time-like if its name is one of
    :data:`TIME_NAMES` (``year``, ``date``, ``time``, ... in any case), if it holds dates or
    periods (a datetime or period column, or text such as ``1958-03-29`` or ``1959Q2``), or
    if it is an index written to the file (named ``index`` or ``Unnamed: 0``, increasing
    whole numbers). Other columns of numbers are values, even when they increase (one
    that counts the rows, 0, 1, 2, ... or 1, 2, 3, ..., with a :class:`DataWarning`).

    >>> time_like_columns(pd.DataFrame({"YEAR": [1700.0, 1701.0], "SUNACTIVITY": [5.0, 11.0]}))
    ['YEAR']
    """
    found = []
    for name in frame.columns:
        column = frame[name]
        if str(name).lower() in TIME_NAMES or isinstance(column.dtype, pd.PeriodDtype):
            found.append(name)
        elif pd.api.types.is_datetime64_any_dtype(column):
            found.append(name)
        elif pd.api.types.is_object_dtype(column) or pd.api.types.is_string_dtype(column):
            first = column.dropna()
            if len(first) and isinstance(first.iloc[0], str):
                text = first.iloc[0].strip()
                if any(re.fullmatch(pattern, text) for pattern in (_DATE, *_PERIODS)):
                    found.append(name)
        elif re.fullmatch(r"index|Unnamed: \d+", str(name), re.IGNORECASE) and pd.api.types.is_numeric_dtype(column):
            values = column.to_numpy(dtype=np.float64, na_value=np.nan)
            if (np.diff(values) > 0).all() and (values == np.round(values)).all():
                found.append(name)
    return found


TimeKind = Literal["number", "datetime", "period"]


@dataclass(frozen=True)
class TimeAxis:
    """How a time column reads and writes: its kind and, when regular, its step.

    Time stamps are held as numbers (``Sequences.times``): numbers as they are;
    datetimes (a datetime column, or ISO text such as ``1958-03-29`` or
    ``1958-03-29T12:00``) as seconds since 1970-01-01 UTC; periods (a period column, or
    text such as ``1959Q2``, ``1959-Q2``, ``1959-03``) as pandas' period ordinals, so one
    step is one period. ``frequency`` is the pandas frequency of periods and of regular
    dates (``"Q-DEC"``, ``"D"``, ``"MS"``), ``step`` the regular spacing of the numbers
    (None if the stamps are irregular). :meth:`labels` writes numbers back as the file
    wrote them; :meth:`after` extends a sequence's stamps into the future.

    >>> axis, numbers = TimeAxis.read(pd.Series(["1959Q1", "1959Q2"]))
    >>> axis = axis.spaced(numbers, np.array([0, 2]))
    >>> axis.kind, axis.frequency, axis.labels(numbers), axis.after(numbers[-1], 2)
    ('period', 'Q-DEC', ['1959Q1', '1959Q2'], ['1959Q3', '1959Q4'])
    """

    kind: TimeKind
    frequency: str | None = None
    step: float | None = None

    @classmethod
    def read(cls, column: pd.Series) -> tuple[TimeAxis, np.ndarray]:
        """The axis of a column and its stamps as numbers (NaN for a missing stamp)."""
        if isinstance(column.dtype, pd.PeriodDtype):
            ordinals = column.array.asi8.astype(np.float64)
            ordinals[column.isna().to_numpy()] = np.nan
            return cls("period", column.array.freqstr), ordinals
        if pd.api.types.is_datetime64_any_dtype(column):
            epoch = pd.Timestamp("1970-01-01", tz=column.dt.tz)
            return cls("datetime"), ((column - epoch) / pd.Timedelta(seconds=1)).to_numpy(np.float64, na_value=np.nan)
        if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_complex_dtype(column):
            return cls("number"), column.to_numpy(dtype=np.float64, na_value=np.nan)
        given = column.notna().to_numpy()
        numbers = pd.to_numeric(column, errors="coerce")
        if numbers.notna().sum() == given.sum():
            return cls("number"), numbers.to_numpy(dtype=np.float64, na_value=np.nan)
        text = column.astype("string").str.strip()
        for pattern, frequency in _PERIODS.items():
            if text[given].str.fullmatch(pattern).all():
                periods = pd.PeriodIndex(text.str.replace("-Q", "Q").str.upper(), freq=frequency)
                ordinals = periods.asi8.astype(np.float64)
                ordinals[~given] = np.nan
                return cls("period", periods.freqstr), ordinals
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pandas' notes on formats it guesses
            parsed = pd.to_datetime(column, utc=True, errors="coerce", format="mixed")
        bad = np.flatnonzero(parsed.isna().to_numpy() & given)
        if bad.size:
            row = int(bad[0])
            raise ValueError(
                f"row {row}, column {column.name!r}: not a time stamp: {column.iloc[row]!r} "
                "(expected numbers, ISO dates such as 1958-03-29, or periods such as 1959Q2 or 1959-03)"
            )
        seconds = (parsed - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)
        return cls("datetime"), seconds.to_numpy(dtype=np.float64, na_value=np.nan)

    def same_kind(self, other: TimeAxis) -> bool:
        """Whether stamps of this axis read as ``other``'s do (the same kind; periods of one frequency)."""
        return self.kind == other.kind and (self.kind != "period" or self.frequency == other.frequency)

    def spaced(
        self, times: np.ndarray, offsets: np.ndarray, ids: list[Any] | None = None, column: str | None = None
    ) -> TimeAxis:
        """This axis with the step (and date frequency) of sorted stamps ``times``.

        A stamp repeated within a sequence is a ``ValueError`` (one row per time step);
        irregular steps a :class:`DataWarning`: a discrete-time model reads consecutive rows
        as consecutive steps, and its forecasts have no future time stamps (the continuous-time
        models use the stamps).
        """
        inner = np.ones(len(times), dtype=bool)
        inner[offsets[:-1]] = False
        steps = np.diff(times, prepend=np.nan)[inner]
        where = np.flatnonzero(inner)
        repeated = np.flatnonzero(steps == 0) if steps.size and steps.min() == 0 else ()
        if len(repeated):
            row = int(where[repeated[0]])
            sequence = int(np.searchsorted(offsets, row, side="right") - 1)
            named = "" if ids is None or len(ids) < 2 else f" (id {ids[sequence]!r})"
            raise ValueError(
                f"sequence {sequence}{named}, time step {row - offsets[sequence]}"
                + (f", column {column!r}" if column else "")
                + f": time stamp {self.labels(times[row : row + 1])[0]} repeats the previous one; "
                "give one row per time step (aggregate or drop the duplicates)"
            )
        if not steps.size:
            return self
        if max(steps.max() - steps[0], steps[0] - steps.min()) <= 1e-9 * abs(steps[0]):  # all within 1e-9 of the first
            step = float(steps[0])
            frequency = self.frequency
            if self.kind == "datetime":
                exact = pd.tseries.frequencies.to_offset(pd.Timedelta(seconds=step)).freqstr
                frequency = _date_frequency(times, offsets) or exact
            return replace(self, step=step, frequency=frequency)
        if self.kind == "datetime":
            frequency = _date_frequency(times, offsets)
            if frequency is not None:
                return replace(self, frequency=frequency)
        warnings.warn(
            f"{'column ' + repr(column) if column else 'the time stamps'}: irregular time steps "
            f"(from {self._span(steps.min())} to {self._span(steps.max())}); a discrete-time model reads "
            "consecutive rows as consecutive steps and forecasts without time stamps (the continuous-time "
            "ContinuousARHMM, ContinuousSwitchingLDS and MarkovJumpProcess use the stamps)",
            DataWarning,
            stacklevel=3,
        )
        return self

    def _span(self, step: float) -> str:
        return str(pd.Timedelta(seconds=step)) if self.kind == "datetime" else f"{step:g}"

    def labels(self, times: np.ndarray) -> list[Any]:
        """Stamps as the file wrote them: numbers (integers where whole), ISO dates or datetimes, periods."""
        times = np.asarray(times, dtype=np.float64)
        if self.kind == "period":
            return [str(p) for p in pd.PeriodIndex.from_ordinals(times.astype(np.int64), freq=self.frequency)]
        if self.kind == "datetime":
            stamps = pd.to_datetime(times, unit="s", utc=True)
            midnight = bool((stamps == stamps.normalize()).all())
            return list(stamps.strftime("%Y-%m-%d" if midnight else "%Y-%m-%dT%H:%M:%S"))
        whole = np.isfinite(times).all() and bool((times == np.round(times)).all()) and np.abs(times).max() < 2**53
        return [int(t) for t in times] if whole else [float(t) for t in times]

    def after(self, last: float, horizon: int) -> list[Any] | None:
        """The stamps of the ``horizon`` steps after ``last``, or None for an irregular axis."""
        ahead = np.arange(1, horizon + 1)
        if self.step is not None:
            return self.labels(last + self.step * ahead)
        if self.kind == "datetime" and self.frequency is not None:
            dates = pd.date_range(pd.Timestamp(last, unit="s", tz="UTC"), periods=horizon + 1, freq=self.frequency)
            return self.labels(((dates[1:] - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)).to_numpy())
        return None

    def describe(self) -> str:
        """``"periods (Q-DEC)"``, ``"datetimes (D)"``, ``"numbers (step 1)"``, ``"numbers (irregular)"``."""
        plural = {"number": "numbers", "datetime": "datetimes", "period": "periods"}[self.kind]
        spacing = self.frequency if self.kind != "number" else (None if self.step is None else f"step {self.step:g}")
        return f"{plural} ({spacing or 'irregular'})"


def _date_frequency(times: np.ndarray, offsets: np.ndarray) -> str | None:
    """The pandas frequency every sequence's dates follow exactly (monthly, quarterly, ...), or None."""
    found = set()
    for a, b in zip(offsets[:-1], offsets[1:]):
        if b - a < 3:
            continue
        dates = pd.DatetimeIndex(pd.to_datetime(times[a:b], unit="s"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pandas' note on the type infer_freq will return
            frequency = pd.infer_freq(dates)
        if frequency is None:
            return None
        found.add(getattr(frequency, "freqstr", frequency))
    return found.pop() if len(found) == 1 else None


@dataclass(frozen=True)
class Schema:
    """The columns of a data frame a model was fit on, and how its time stamps read.

    A fitted model keeps it (``schema_``) and its file stores it, so new data are read
    the same way without naming columns again (:meth:`read`: a missing column is an
    error naming it, an extra one a :class:`DataWarning`) and results carry the file's
    own column names and time stamps. ``columns`` are the value columns (for symbols:
    the one symbol column), ``time_columns`` the time column (or a year and a quarter
    or month column read as one period), ``time`` its :class:`TimeAxis`, ``categories``
    the labels of a categorical value column (code ``c`` is ``categories[c]``).
    """

    columns: tuple[str, ...]
    id_column: str | None = None
    time_columns: tuple[str, ...] = ()
    time: TimeAxis | None = None
    input_columns: tuple[str, ...] = ()
    symbols: bool = False
    categories: tuple[Any, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        """The schema as JSON types (for a model file)."""
        plain = {name: getattr(self, name) for name in ("id_column", "symbols")}
        plain.update({name: list(getattr(self, name)) for name in ("columns", "time_columns", "input_columns")})
        plain["time"] = None if self.time is None else vars(self.time).copy()
        plain["categories"] = None if self.categories is None else [_json_label(c) for c in self.categories]
        return plain

    @classmethod
    def from_json(cls, plain: dict[str, Any]) -> Schema:
        """The inverse of :meth:`to_json`."""
        time = plain.get("time")
        return cls(
            tuple(plain["columns"]),
            plain.get("id_column"),
            tuple(plain.get("time_columns", ())),
            None if time is None else TimeAxis(**time),
            tuple(plain.get("input_columns", ())),
            bool(plain.get("symbols", False)),
            None if plain.get("categories") is None else tuple(plain["categories"]),
        )

    def read(self, frame: pd.DataFrame, **overrides: Any) -> Sequences:
        """New data read as the fitted data were: the same columns, the same kind of time stamps.

        ``overrides`` replace the schema's ``id_column``, ``time_column``, ``columns`` (or,
        for symbols, ``symbol_column``). Raises ``ValueError`` naming the columns the frame
        lacks; warns (:class:`DataWarning`) about columns it has that the model ignores.
        """
        _check_frame(frame)
        given = {name: value for name, value in overrides.items() if value is not None}
        id_column = given.get("id_column", self.id_column or ("case_id" if self.symbols else "id"))
        times = given.get("time_column", list(self.time_columns) or None)
        times = [times] if isinstance(times, str) else times
        key = "symbol_column" if self.symbols else "columns"
        columns = given.get(key, list(self.columns))
        columns = [columns] if isinstance(columns, str) else list(columns)
        needed = [*columns, *(times or ()), *self.input_columns]
        if "id_column" in given or self.id_column is not None:
            needed.append(id_column)
        missing = [name for name in needed if name not in frame.columns]
        if missing:
            reads = [f"{'symbols' if self.symbols else 'values'} {columns}"]
            reads += [f"time {'+'.join(times)!r}"] if times else []
            reads += [f"id {id_column!r}"] if id_column in needed else []
            raise ValueError(
                f"the data lack column(s) {missing} (the model reads {', '.join(reads)}; "
                f"the data have {list(frame.columns)})"
            )
        ignored = [
            name for name in frame.columns if name not in {*needed, id_column} and name not in time_like_columns(frame)
        ]
        if ignored:
            warnings.warn(f"columns {ignored} are not in the model and are ignored", DataWarning, stacklevel=2)
        if id_column not in frame.columns:
            id_column = None
        if self.symbols:
            seqs = Sequences.from_event_log(
                frame, id_column=id_column, symbol_column=columns[0], time_column=None if not times else times[0]
            )
        else:
            seqs = Sequences.from_dataframe(
                frame,
                id_column=id_column,
                time_column=times,
                columns=columns,
                input_columns=list(self.input_columns) or None,
                categories=False if self.categories is None else self.categories,
            )
        new, old = seqs.schema.time, self.time
        if old is not None and new is not None:
            if not new.same_kind(old):
                raise ValueError(
                    f"time column {'+'.join(times)!r} holds {new.describe()}, but the model was fit on {old.describe()}"
                )
        return seqs

    def time_of(self, stamps: dict[str, str]) -> float:
        """One row's time stamp (the text of its time columns, by name) as the number the fitted
        data's stamps became (``Sequences.times``: seconds for datetimes, ordinals for periods);
        a ``ValueError`` naming the stamp if it is not one, or not of the fitted kind."""
        names = list(self.time_columns or stamps)
        text = "+".join(stamps[name] for name in names)
        if self.time is None or self.time.kind == "number":
            try:
                value = float(text)
            except ValueError:
                value = math.nan
        elif self.time.kind == "datetime" and (seconds := _iso_seconds(text)) is not None:
            value = seconds  # the common case, ~100 times faster than pandas' parse of a one-row frame
        else:
            try:
                row = pd.DataFrame({name: [stamps[name]] for name in names})
                axis, numbers = TimeAxis.read(_time_series(row, names))
            except ValueError:
                axis, numbers = self.time, np.array([math.nan])
            value = float(numbers[0]) if axis.same_kind(self.time) else math.nan
        if not math.isfinite(value):
            expected = "a number" if self.time is None else self.time.describe()
            raise ValueError(f"time {text!r} is not a time stamp of the fitted kind ({expected})")
        return value

    def time_labels(self, times: np.ndarray) -> list[Any]:
        """Stamps (``Sequences.times``) as the file wrote them; numbers without a time axis."""
        return TimeAxis("number").labels(times) if self.time is None else self.time.labels(times)


_ISO_DATETIME = re.compile(r"(\d{4})-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?)?")
_EPOCH, _SECOND = np.datetime64(0, "ns"), np.timedelta64(1_000_000_000, "ns")


def _iso_seconds(text: str) -> float | None:
    """Seconds since 1970-01-01 UTC of a plain ISO stamp, ``YYYY-MM-DD`` with optional
    ``[T ]hh:mm[:ss[.fraction]]`` and no zone, in the years pandas' nanoseconds hold, read by numpy
    as :meth:`TimeAxis.read` reads it (nanoseconds as a float over 1e9); None for any other text,
    or an impossible date, which :meth:`TimeAxis.read` is left to read or name."""
    match = _ISO_DATETIME.fullmatch(text)
    if match is None or not 1678 <= int(match[1]) <= 2261:
        return None
    try:
        return float((np.datetime64(text, "ns") - _EPOCH) / _SECOND)
    except ValueError:
        return None


def read_table(path: str | PathLike[str]) -> pd.DataFrame:
    """A ``.csv``, ``.tsv`` (or ``.tab``, tab-separated) or ``.parquet`` file as a data frame;
    every error names the file."""
    suffix = Path(path).suffix.lower()
    readers: dict[str, Callable[..., pd.DataFrame]] = {
        ".csv": pd.read_csv,
        ".tsv": functools.partial(pd.read_csv, sep="\t"),
        ".tab": functools.partial(pd.read_csv, sep="\t"),
        ".parquet": pd.read_parquet,
        ".pq": pd.read_parquet,
    }
    if suffix not in readers:
        raise ValueError(f"{path}: unknown data format {suffix!r}; expected .csv, .tsv or .parquet")
    with naming_file(path):
        return readers[suffix](path)


@contextlib.contextmanager
def naming_file(path: str | PathLike[str]) -> Iterator[None]:
    """Prefix the message of a ``ValueError`` or ``ImportError`` raised inside with ``path``
    (pandas' ``No columns to parse from file`` names no file)."""
    try:
        yield
    except (ValueError, ImportError) as error:
        if str(path) in str(error):
            raise
        raise (ImportError if isinstance(error, ImportError) else ValueError)(f"{path}: {error}") from error


def _time_columns(
    frame: pd.DataFrame, time_column: str | Sequence[str] | None, id_column: str | None, columns: Any
) -> list[str]:
    """The time column(s) of ``frame``: as named, none, or by the rule of :meth:`Sequences.from_dataframe`."""
    if time_column is None:
        return []
    if isinstance(time_column, str) and time_column != "auto":
        return [time_column]
    if not isinstance(time_column, str):
        return list(time_column)
    candidates = [name for name in time_like_columns(frame) if name != id_column and name not in (columns or ())]
    lower = {str(name).lower(): name for name in candidates}
    if len(candidates) == 2 and "year" in lower and ({"quarter", "month"} & set(lower)):
        chosen = [lower["year"], lower.get("quarter", lower.get("month"))]
    elif len(candidates) == 1:
        chosen = candidates
    elif not candidates:
        return []
    else:
        raise ValueError(
            f"columns {candidates} all look like time stamps: name the time column "
            "(time_column=..., --time-column) and the value columns (columns=..., --columns)"
        )
    warnings.warn(
        f"{' and '.join(map(repr, chosen))} taken as the time column, not modelled (it looks like time: "
        "see modeshift.data.time_like_columns); name the time column with time_column= (--time-column)",
        DataWarning,
        stacklevel=4,
    )
    return chosen


def _warn_of_row_numbers(frame: pd.DataFrame, columns: list[str]) -> None:
    """A :class:`DataWarning` for a default value column that counts the rows (1, 2, 3, ... or 0, 1,
    2, ...): it is modelled, but is likely an index (the ``obs`` column of Old Faithful's data)."""
    if len(frame) < 10:
        return
    for name in columns:
        if pd.api.types.is_numeric_dtype(frame[name]) and not pd.api.types.is_bool_dtype(frame[name]):
            values = frame[name].to_numpy(dtype=np.float64, na_value=np.nan)
            if values[0] not in (0.0, 1.0) or values[-1] != values[0] + len(values) - 1:
                continue  # two looks settle most columns
            if np.array_equal(values - values[0], np.arange(len(values))):
                warnings.warn(
                    f"column {name!r} counts the rows ({values[0]:g}, {values[1]:g}, ...): modelled as a value; "
                    "if it is an index, name the value columns (columns=, --columns) or the time column",
                    DataWarning,
                    stacklevel=4,
                )


def _time_series(frame: pd.DataFrame, times: list[str]) -> pd.Series:
    """The time column, or a year column and a quarter or month column as one column of periods."""
    if len(times) == 1:
        return frame[times[0]]
    part = str(times[1]).lower() if len(times) == 2 else ""
    if part not in ("quarter", "month"):
        raise ValueError(f"two time columns must be a year and a quarter or month column, got {times}")
    year, within = (pd.to_numeric(frame[name], errors="coerce") for name in times)
    for name, values in zip(times, (year, within)):
        bad = np.flatnonzero(~np.isfinite(values.to_numpy(dtype=np.float64, na_value=np.nan)) | (values % 1 != 0))
        if bad.size:
            raise ValueError(f"row {bad[0]}, column {name!r}: not a whole number: {frame[name].iloc[bad[0]]!r}")
    year, within = year.astype(np.int64).astype(str), within.astype(np.int64)
    text = year + ("Q" + within.astype(str) if part == "quarter" else "-" + within.map("{:02d}".format))
    return text.rename("+".join(times))


# ----------------------------------------------------------------------- helpers
class _Locator:
    """Names where a row of an input array sits: ``sequence i, time step t`` (or ``row r``)."""

    def __init__(self, where: int | np.ndarray | None):
        # a sequence index, the offsets of sequences cut from one array, or None for rows of a frame
        self.where = where

    def sequence(self) -> str:
        return f"sequence {self.where}" if np.isscalar(self.where) else "X"

    def step(self, row: int) -> str:
        if self.where is None:
            return f"row {row}"
        if np.isscalar(self.where):
            return f"sequence {self.where}, time step {row}"
        sequence = int(np.searchsorted(self.where, row, side="right") - 1)
        return f"sequence {sequence}, time step {row - int(self.where[sequence])}"


def _offsets(lengths: Sequence[int]) -> np.ndarray:
    """Offsets of sequences of the given positive ``lengths``."""
    lengths_arr = np.asarray(lengths)
    if lengths_arr.ndim != 1 or lengths_arr.dtype.kind not in "iu":
        raise ValueError(f"lengths must be a 1-D sequence of integers, got {lengths!r}")
    bad = np.flatnonzero(lengths_arr <= 0)
    if bad.size:
        raise ValueError(f"sequence {bad[0]} is empty (lengths[{bad[0]}] = {lengths_arr[bad[0]]})")
    return np.concatenate([[0], np.cumsum(lengths_arr)]).astype(np.int64)


def _as_2d_float(data: Any, where: _Locator) -> np.ndarray:
    """A float64 (n_steps, n_features) copy of one array, or a clear error."""
    if isinstance(data, (pd.DataFrame, pd.Series)):
        data = data.to_numpy()
    try:
        array = np.asarray(data)
    except ValueError:  # rows of unequal lengths
        raise ValueError(f"{_ragged(data, where)}: rows of unequal lengths (ragged)") from None
    if array.dtype.kind == "c":
        raise ValueError(f"{where.sequence()}: complex values are not supported")
    if array.dtype.kind not in "biuf":
        try:
            array = array.astype(np.float64)
        except (TypeError, ValueError):
            flat = array.reshape(-1) if array.ndim else array.reshape(1)
            for position, item in enumerate(flat.tolist()):
                try:
                    float(item)
                except (TypeError, ValueError):
                    row = int(np.unravel_index(position, array.shape)[0]) if array.ndim else 0
                    raise ValueError(f"{where.step(row)}: non-numeric value {item!r}") from None
            raise ValueError(f"{where.sequence()}: data of type {array.dtype} is not numeric") from None
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise ValueError(
            f"{where.sequence()}: expected a 1-D (n_steps,) or 2-D (n_steps, n_features) array, got shape {array.shape}"
        )
    if array.shape[0] == 0:
        raise ValueError(f"{where.sequence() if np.isscalar(where.where) else 'sequence 0'} is empty")
    if array.shape[1] == 0:
        raise ValueError(f"{where.sequence()}: no features (shape {array.shape})")
    return np.array(array, dtype=np.float64, order="C")


def _ragged(data: Any, where: _Locator) -> str:
    """Where ``data`` (a ragged nesting numpy cannot make an array of) first differs from its first row."""
    rows = list(data)
    for row, item in enumerate(rows):
        if np.shape(item) != np.shape(rows[0]):
            return f"{where.step(row)} has shape {np.shape(item)}, time step 0 {np.shape(rows[0])}"
    return where.sequence()


def _concatenate(blocks: list[np.ndarray], what: str) -> tuple[np.ndarray, np.ndarray]:
    width = blocks[0].shape[1]
    for i, block in enumerate(blocks):
        if block.shape[1] != width:
            raise ValueError(f"sequence {i} has {block.shape[1]} {what} but sequence 0 has {width}")
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blocks])]).astype(np.int64)
    return (blocks[0] if len(blocks) == 1 else np.concatenate(blocks, axis=0)), offsets


def _split_symbols(data: Any) -> tuple[list[Any], Form]:
    """One sequence of symbols ("array" form) or many ("list"), by the rules of :meth:`Sequences.from_symbols`."""
    if isinstance(data, str):
        return [data], "array"
    if isinstance(data, np.ndarray):
        return ([data], "array") if data.ndim == 1 else (list(data), "list")
    if isinstance(data, pd.Series):
        return [data.to_numpy()], "array"
    if isinstance(data, Mapping):
        raise TypeError(f"expected symbol sequences, got a {type(data).__name__} (pass its values as a list)")
    try:
        items = list(data)
    except TypeError:
        raise TypeError(f"expected symbol sequences, got {type(data).__name__}") from None
    if not items:
        raise ValueError("no sequences given (an empty list)")
    nested = [isinstance(item, (list, tuple, np.ndarray, pd.Series, str)) for item in items]
    if all(nested) and not all(isinstance(item, str) for item in items):
        return [item.to_numpy() if isinstance(item, pd.Series) else item for item in items], "list"
    if any(isinstance(item, (list, tuple, np.ndarray, pd.Series)) for item in items):
        raise ValueError("mixed input: give one sequence of symbols or a list of sequences, not both")
    _check_hashable([items])
    return [items], "array"


def _symbol_offsets(sequences: list[Any], form: Form, lengths: Sequence[int] | None, n_symbols: int) -> np.ndarray:
    """Where each sequence starts among ``n_symbols`` symbols: cut by ``lengths``, or as given in ``sequences``."""
    if lengths is not None:
        if form != "array":
            raise ValueError("lengths cannot be given with a list of sequences")
        offsets = _offsets(lengths)
        if n_symbols != offsets[-1]:
            raise ValueError(f"lengths sum to {int(offsets[-1])} but the data have {n_symbols} symbols")
        return offsets
    sizes = [len(s) for s in sequences]
    empty = [i for i, size in enumerate(sizes) if size == 0]
    if empty:
        raise ValueError(f"sequence {empty[0]} is empty")
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


def _check_hashable(sequences: list[Any]) -> None:
    """Raise ``TypeError`` naming the first symbol that cannot be a dictionary key (a list, a set...)."""
    for sequence, items in enumerate(sequences):
        for step, item in enumerate(items):
            try:
                hash(item)
            except TypeError:
                raise TypeError(
                    f"sequence {sequence}, time step {step}: symbol {item!r} is not hashable "
                    "(symbols are labels: strings, numbers, tuples)"
                ) from None


def _encode_symbols(
    symbols: pd.Index, offsets: np.ndarray, vocabulary: Vocabulary | None, unknown: Unknown
) -> tuple[Sequences, bool]:
    """Symbol sequences (``offsets`` into ``symbols``) as codes, and whether ``"ignore"`` dropped any.

    Without ``vocabulary`` it is learned from the symbols (in order of first appearance).
    """
    if unknown not in UNKNOWN_POLICIES:
        raise ValueError(f"unknown must be one of {UNKNOWN_POLICIES}, got {unknown!r}")
    if vocabulary is None:
        vocabulary, unknown = Vocabulary.learn(symbols), "error"
    codes = vocabulary.encode(symbols, "error" if unknown == "error" else "map", _Locator(offsets).step)
    kept = codes != len(vocabulary)
    dropped = unknown == "ignore" and not kept.all()
    if dropped:
        lengths = np.add.reduceat(kept, offsets[:-1])
        emptied = np.flatnonzero(lengths == 0)
        if emptied.size:
            raise ValueError(f"sequence {emptied[0]}: every symbol is outside the vocabulary, and unknown='ignore'")
        codes, offsets = codes[kept], np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return Sequences(codes.reshape(-1, 1), offsets, vocabulary=vocabulary), dropped


def _check_frame(frame: Any) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame, got {type(frame).__name__}")


def _check_columns(frame: pd.DataFrame, *columns: str | None) -> None:
    for column in columns:
        if column is not None and column not in frame.columns:
            raise ValueError(f"column {column!r} not found; columns are {list(frame.columns)}")
    if len(frame) == 0:
        raise ValueError("the data frame has no rows")


@dataclass(frozen=True)
class _Rows:
    """The rows of a long data frame as sequences: grouped by id in order of first appearance,
    each sorted (stably) by time stamp; ``order[step]`` is the frame row of each step."""

    order: np.ndarray
    offsets: np.ndarray
    ids: list[Any]
    times: np.ndarray | None
    named: bool = False  # whether an id column named the sequences
    in_order: bool = False  # whether the frame's rows are in sequence order already (``order`` counts 0, 1, ...)

    @classmethod
    def of(
        cls, frame: pd.DataFrame, id_column: str | None, stamps: np.ndarray | None, time_column: str | None
    ) -> _Rows:
        """The rows grouped by ``id_column``, each group sorted by ``stamps`` (numbers, one per row)."""
        if id_column is None:
            codes, ids = np.zeros(len(frame), dtype=np.int64), [0]
        else:
            codes, uniques = pd.factorize(frame[id_column], sort=False)
            if (codes < 0).any():
                row = int(np.flatnonzero(codes < 0)[0])
                raise ValueError(f"row {row}: missing value in id column {id_column!r}")
            ids = list(uniques)
        in_order = _in_order(codes, stamps)
        order = np.arange(len(codes)) if in_order else np.lexsort([codes] if stamps is None else [stamps, codes])
        offsets = np.concatenate([[0], np.cumsum(np.bincount(codes, minlength=len(ids)))]).astype(np.int64)
        times = None if stamps is None else stamps[order]  # a copy: stamps may be the frame's own column
        rows = cls(order, offsets, ids, times, id_column is not None, in_order)
        if rows.times is not None:
            _check_times(rows.times, offsets, time_column)
        return rows

    @property
    def row_order(self) -> np.ndarray | None:
        """``order``, or None when the rows are already in sequence order."""
        return None if self.in_order else self.order

    def take(self, array: np.ndarray) -> np.ndarray:
        """The rows of ``array`` (one per frame row, a new array) in sequence order: ``array`` itself
        when the frame's rows are in that order already (no copy)."""
        return array if self.in_order else array[self.order]

    def locate(self, row: int) -> str:
        """Where frame row ``row`` sits: ``sequence i, time step t (row r, id ...)``."""
        position = int(np.flatnonzero(self.order == row)[0])
        sequence = int(np.searchsorted(self.offsets, position, side="right") - 1)
        named = f", id {self.ids[sequence]!r}" if self.named else ""
        return f"sequence {sequence}, time step {position - self.offsets[sequence]} (row {row}{named})"


def _in_order(codes: np.ndarray, stamps: np.ndarray | None) -> bool:
    """Whether rows with sequence ``codes`` (numbered in order of first appearance) and time
    ``stamps`` are grouped by sequence and sorted by time within each already, as a file written
    sequence by sequence is: one pass over the rows, against a sort to find their order."""
    steps = np.diff(codes)
    if stamps is None:
        return bool((steps >= 0).all())
    return bool(((steps > 0) | ((steps == 0) & (np.diff(stamps) >= 0))).all())


def _first_bad(mask: np.ndarray, offsets: np.ndarray) -> tuple[int, int, int] | None:
    rows, cols = np.nonzero(mask)
    if not rows.size:
        return None
    row = int(rows[0])
    sequence = int(np.searchsorted(offsets, row, side="right") - 1)
    return sequence, row - int(offsets[sequence]), int(cols[0])


#: The largest magnitude a value may have: squares, sums of squares and covariances of larger
#: values overflow double precision (whose largest number is about 1.8e308), which would surface
#: deep inside a fit as NaN or as a probability that is zero for no reason.
MAX_MAGNITUDE = 1e150


def _check_finite_or_nan(values: np.ndarray, offsets: np.ndarray, columns: list[str] | None = None) -> None:
    """Values must be finite or NaN (missing), and at most :data:`MAX_MAGNITUDE` in size."""
    largest = max(np.fmax.reduce(values, axis=None), -np.fmin.reduce(values, axis=None)) if values.size else 0.0
    if not largest > MAX_MAGNITUDE:  # no inf and no huge value, in two passes that make no array (NaN is skipped)
        return
    bad = _first_bad(np.isinf(values), offsets)
    if bad is not None:
        sequence, step, col = bad
        raise ValueError(f"sequence {sequence}, time step {step}, {_column(col, columns, 'feature')}: infinite value")
    _check_magnitude(values, offsets, "value", columns)


def _check_finite(values: np.ndarray, offsets: np.ndarray, what: str, columns: list[str] | None = None) -> None:
    bad = _first_bad(~np.isfinite(values), offsets)
    if bad is not None:
        sequence, step, col = bad
        raise ValueError(f"sequence {sequence}, time step {step}: non-finite {what} ({_column(col, columns, what)})")
    _check_magnitude(values, offsets, what, columns)


def _check_magnitude(values: np.ndarray, offsets: np.ndarray, what: str, columns: list[str] | None) -> None:
    with np.errstate(invalid="ignore"):
        bad = _first_bad(np.abs(values) > MAX_MAGNITUDE, offsets)
    if bad is not None:
        sequence, step, col = bad
        name = _column(col, columns, "feature" if what == "value" else what)
        raise ValueError(
            f"sequence {sequence}, time step {step}, {name}: {what} "
            f"{values[offsets[sequence] + step, col]:.3g} is too large (magnitude above {MAX_MAGNITUDE:g}, "
            "whose square overflows); standardise the data (subtract the mean, divide by the standard deviation)"
        )


def _column(col: int, columns: list[str] | None, what: str) -> str:
    return f"column {columns[col]!r}" if columns else f"{what} {col}"


def _check_times(times: np.ndarray, offsets: np.ndarray, column: str | None = None) -> None:
    """The one check of time stamps: finite and non-decreasing within each sequence (a new
    sequence may start before the previous one ended)."""

    def where(row: int) -> str:
        sequence = int(np.searchsorted(offsets, row, side="right") - 1)
        return f"sequence {sequence}, time step {row - offsets[sequence]}" + (f", column {column!r}" if column else "")

    bad = np.flatnonzero(~np.isfinite(times))
    if bad.size:
        raise ValueError(f"{where(int(bad[0]))}: time stamp is missing or not finite")
    decreasing = np.flatnonzero(np.diff(times) < 0) + 1
    decreasing = decreasing[~np.isin(decreasing, offsets)]
    if decreasing.size:
        raise ValueError(f"{where(int(decreasing[0]))}: time stamps decrease")


def _category_codes(
    column: pd.Series, categories: Sequence[Any] | None, locate: Callable[[int], str]
) -> tuple[np.ndarray, tuple[Any, ...]]:
    """A column of labels as float codes 0, 1, ... into ``categories`` (learned, sorted, if None)."""
    missing = np.flatnonzero(column.isna().to_numpy())
    if missing.size:
        raise ValueError(f"{locate(int(missing[0]))}, column {column.name!r}: missing label")
    if categories is None:
        categories = tuple(pd.unique(column.to_numpy()).tolist())
        categories = tuple(sorted(categories, key=lambda label: (str(type(label)), label)))
    index = {label: code for code, label in enumerate(categories)}
    codes = np.array([index.get(label, -1) for label in column.tolist()], dtype=np.float64)
    unknown = np.flatnonzero(codes < 0)
    if unknown.size:
        row = int(unknown[0])
        raise ValueError(
            f"{locate(row)}, column {column.name!r}: label {column.iloc[row]!r} is not one of {list(categories)}"
        )
    return codes, tuple(categories)


def _json_label(label: Any) -> Any:
    return label.item() if isinstance(label, np.generic) else label


def _numeric_column(frame: pd.DataFrame, column: str, locate: Callable[[int], str]) -> np.ndarray:
    series = frame[column]
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
        if pd.api.types.is_complex_dtype(series):
            raise ValueError(f"column {column!r}: complex values are not supported")
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    converted = pd.to_numeric(series, errors="coerce")
    bad = np.flatnonzero(converted.isna().to_numpy() & series.notna().to_numpy())
    if bad.size:
        row = int(bad[0])
        raise ValueError(f"{locate(row)}, column {column!r}: non-numeric value {series.iloc[row]!r}")
    return converted.to_numpy(dtype=np.float64, na_value=np.nan)


# ----------------------------------------------------------- parameters set by hand
def check_dimensions(state_dim: int, obs_dim: int | None, input_dim: int) -> tuple[int, int | None, int]:
    """A state-space model's sizes: state_dim >= 1, obs_dim >= 1 or None (from the data), input_dim >= 0."""
    if int(state_dim) < 1:
        raise ValueError(f"state_dim must be a positive integer, got {state_dim!r}")
    if obs_dim is not None and int(obs_dim) < 1:
        raise ValueError(f"obs_dim must be a positive integer or None, got {obs_dim!r}")
    if int(input_dim) < 0:
        raise ValueError(f"input_dim must be a non-negative integer, got {input_dim!r}")
    return int(state_dim), None if obs_dim is None else int(obs_dim), int(input_dim)


def check_array(name: str, value: Any, shape: tuple[int | None, ...]) -> np.ndarray:
    """A finite float array of the given shape (``None`` matches any size)."""
    array = np.array(value, dtype=np.float64)
    if array.ndim != len(shape) or any(want is not None and got != want for got, want in zip(array.shape, shape)):
        expected = "(" + ", ".join("any" if n is None else str(n) for n in shape) + ")"
        raise ValueError(f"{name} must have shape {expected}, got {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains non-finite values")
    return array


def check_probabilities(name: str, value: Any, shape: tuple[int | None, ...]) -> np.ndarray:
    """Non-negative values whose last axis sums to one."""
    array = check_array(name, value, shape)
    if (array < 0).any():
        raise ValueError(f"{name} has negative entries")
    sums = array.sum(axis=-1)
    if np.abs(sums - 1.0).max(initial=0.0) > 1e-8:
        where = np.unravel_index(np.argmax(np.abs(sums - 1.0)), sums.shape) if sums.ndim else ()
        row = f" (row {where[0]})" if where else ""
        raise ValueError(f"{name} must sum to 1 along its last axis{row}, got {sums[where]:.6g}")
    return array


def check_covariances(
    name: str, value: Any, n_features: int | None = None, *, semidefinite: bool = False
) -> np.ndarray:
    """A stack of symmetric positive-definite matrices (..., D, D); with ``semidefinite``,
    positive semi-definite ones (rank-deficient, or zero) are accepted too."""
    array = np.array(value, dtype=np.float64)
    if array.ndim < 2 or array.shape[-1] != array.shape[-2]:
        raise ValueError(f"{name} must be a stack of square matrices, got shape {array.shape}")
    if n_features is not None and array.shape[-1] != n_features:
        raise ValueError(f"{name} must be {n_features} x {n_features}, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains non-finite values")
    transposed = np.swapaxes(array, -1, -2)
    if not (np.abs(array - transposed) <= 1e-12 + 1e-8 * np.abs(transposed)).all():
        raise ValueError(f"{name} is not symmetric")
    if semidefinite:
        eigenvalues = np.linalg.eigvalsh(array)
        # an eigenvalue above -1e-10 times the largest |eigenvalue| counts as >= 0 (rounding)
        low = eigenvalues[..., 0] < -1e-10 * np.maximum(np.abs(eigenvalues).max(axis=-1), 1e-300)
        if low.any():
            index = tuple(np.argwhere(low)[0])
            where = f"[{', '.join(map(str, index))}]" if index else ""
            raise ValueError(
                f"{name}{where} is neither positive definite nor semi-definite (eigenvalue {eigenvalues[index][0]:.3g})"
            )
        return array
    try:
        np.linalg.cholesky(array)
    except np.linalg.LinAlgError:
        for index in np.ndindex(array.shape[:-2]):  # which one
            try:
                np.linalg.cholesky(array[index])
            except np.linalg.LinAlgError:
                raise ValueError(f"{name}[{', '.join(map(str, index))}] is not positive definite") from None
    return array
