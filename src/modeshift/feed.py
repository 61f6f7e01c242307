"""Live feeds: CSV rows filtered one at a time as they arrive, each answer written at once.

``modeshift filter model.msz -`` reads a header line, then one row per time step, from a file
or a pipe that may still be growing (``tail -f sensor.csv | modeshift filter model.msz -``).
Each row is checked against the model's schema, conditioned on by the model's streaming filter
(:class:`~modeshift.models.capabilities.Streaming`) and answered by one output row, flushed at
once: the row's id and time stamps as read, its ``step`` in its sequence, ``log_likelihood``
(log p(y_t | y_<t)), the mode probabilities ``p_mode0..`` and, for a model with a continuous
state, its mean and standard deviation ``x0, x0_sd, ..``.

- **Sequences.** Rows of one id form one sequence with a filter of its own; ids may interleave.
- **Fixed lag L.** When step t of a sequence arrives, the row of step t - L is written with its
  smoothed law p(state_t-L | y_0..t); at the end of the feed the last L rows of every sequence
  follow, smoothed on everything seen.
- **Learning.** With ``learn=chunk`` the model takes one online-EM step
  (:class:`~modeshift.models.capabilities.OnlineLearner`) on every ``chunk`` rows of a sequence,
  and the filter goes on under the new parameters; the rows left at the end are learned from
  if they fill at least half a chunk.
- **Bad rows.** A row that cannot be read (a value that is not a number, an unknown label, a
  missing column) or that the model rejects raises :class:`RowError` naming its line (and
  column); the filters are left as they were before it, so a caller may skip it and go on.

>>> import io
>>> import numpy as np
>>> from modeshift import HMM
>>> model = HMM(2, random_state=0).fit(np.r_[np.zeros(30), 5 + np.zeros(30)] + np.arange(60) % 3 * 0.1)
>>> out = io.StringIO()
>>> feed = Feed(model, ["y"], Writer(out, as_json=False))
>>> feed.take(["0.1"], line=2); feed.take(["5.2"], line=3); feed.finish()
>>> print(out.getvalue().replace("\\r", ""), end="")  # doctest: +ELLIPSIS
step,log_likelihood,p_mode0,p_mode1
0,...
1,...
"""

from __future__ import annotations

import csv
import json
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np

from modeshift.data import TIME_NAMES, Schema
from modeshift.models.capabilities import StreamingAtTimes

__all__ = ["Feed", "FeedColumns", "RowError", "Writer"]

MISSING = frozenset({"", "na", "nan", "null", "none", "n/a"})  # cells read as a missing value (NaN)


class RowError(ValueError):
    """A row of the feed that cannot be filtered: its line, the column if one is to blame, and why."""

    def __init__(self, line: int, message: str, column: str | None = None):
        where = f"line {line}" + ("" if column is None else f", column {column!r}")
        super().__init__(f"{where}: {message}")
        self.line = line


@dataclass(frozen=True)
class FeedColumns:
    """Where a feed's header puts what the model reads: value columns, input columns, the id column
    and the time columns (passed through to the output as read), and the labels of a categorical
    value column."""

    header: tuple[str, ...]
    values: tuple[str, ...]
    inputs: tuple[str, ...] = ()
    id_column: str | None = None
    time_columns: tuple[str, ...] = ()
    categories: tuple[Any, ...] | None = None

    @classmethod
    def of(
        cls,
        header: Sequence[str],
        schema: Any = None,
        *,
        columns: Sequence[str] | None = None,
        id_column: str | None = None,
        time_column: str | None = None,
    ) -> FeedColumns:
        """The columns of a header as a model with ``schema`` reads them (the flags override the
        schema). Without a schema the values are ``columns``, else every column but the id (``id``
        if there is one) and those named like time (:data:`~modeshift.data.TIME_NAMES`).
        ValueError naming the columns the header lacks."""
        header = tuple(name.strip() for name in header)
        if len(set(header)) < len(header):
            repeated = sorted({name for name in header if header.count(name) > 1})
            raise ValueError(f"the header names column(s) {repeated} more than once")
        if id_column is None:
            id_column = schema.id_column if schema is not None else None
            id_column = id_column if id_column is not None else "id"
            id_column = id_column if id_column in header else None
        times = (time_column,) if time_column else (tuple(schema.time_columns) if schema is not None else ())
        times = times or tuple(name for name in header if name.lower() in TIME_NAMES)
        inputs = tuple(schema.input_columns) if schema is not None else ()
        if columns is None and schema is not None:
            columns = schema.columns
        if columns is None:
            columns = [name for name in header if name not in {id_column, *times, *inputs}]
        needed = [*columns, *inputs, *(times if schema is not None or time_column else ())]
        needed += [id_column] if id_column is not None else []
        missing = [name for name in needed if name not in header]
        if missing:
            raise ValueError(f"the header lacks column(s) {missing} (it has {list(header)})")
        if not columns:
            raise ValueError(f"the header {list(header)} names no value column")
        categories = None if schema is None else schema.categories
        return cls(header, tuple(columns), inputs, id_column, tuple(t for t in times if t in header), categories)

    def ignored(self) -> list[str]:
        """Header columns the model does not read."""
        used = {*self.values, *self.inputs, *self.time_columns, self.id_column}
        return [name for name in self.header if name not in used]


@dataclass(frozen=True)
class Row:
    """One row of the feed, read: its sequence key, time stamps as written, values and inputs."""

    key: str | None
    stamps: dict[str, str]
    values: np.ndarray
    inputs: np.ndarray | None


class Writer:
    """Output rows, each flushed at once: CSV with a header taken from the first row, or one JSON
    object per line (non-finite numbers as null)."""

    def __init__(self, stream: IO[str], as_json: bool):
        self.stream, self.as_json = stream, as_json
        self._csv: csv.DictWriter | None = None

    def write(self, record: dict[str, Any]) -> None:
        if self.as_json:
            plain = {key: None if isinstance(v, float) and not math.isfinite(v) else v for key, v in record.items()}
            self.stream.write(json.dumps(plain, allow_nan=False) + "\n")
        else:
            if self._csv is None:
                self._csv = csv.DictWriter(self.stream, fieldnames=list(record), restval="", lineterminator="\n")
                self._csv.writeheader()
            self._csv.writerow({key: "" if value is None else value for key, value in record.items()})
        self.stream.flush()


@dataclass
class _Sequence:
    """One sequence's filter: its state, the rows waiting for their lagged law, the rows to learn from."""

    state: Any
    pending: deque = field(default_factory=deque)  # (stamps, step, log_likelihood) of rows not written yet
    values: list = field(default_factory=list)
    inputs: list = field(default_factory=list)


class Feed:
    """Filters the rows of a feed one at a time with a streaming model, writing each answer at once.

    ``columns``: a :class:`FeedColumns`, or the value columns' names; ``lag`` L > 0 writes each
    row's smoothed law L steps later; ``learn`` (rows per chunk) updates the model by online EM.
    :meth:`take` one row's cells (``line``: its line in the input, for errors), then :meth:`finish`.
    """

    def __init__(
        self,
        model: Any,
        columns: FeedColumns | Sequence[str],
        writer: Writer,
        *,
        lag: int = 0,
        learn: int = 0,
        note: Callable[[str], None] = lambda text: None,
    ):
        self.model, self.writer, self.lag, self.learn, self.note = model, writer, int(lag), int(learn), note
        self.columns = columns if isinstance(columns, FeedColumns) else FeedColumns(tuple(columns), tuple(columns))
        model.filter_init(lag=self.lag)  # checks the lag before the first row
        self._sequences: dict[str | None, _Sequence] = {}
        self._position = {name: i for i, name in enumerate(self.columns.header)}
        self._codes = (
            None if self.columns.categories is None else {str(c): k for k, c in enumerate(self.columns.categories)}
        )
        self._n_modes = _n_modes(model)
        # a continuous-time model filters each row at its time stamp (by default one unit after the last)
        self._timed = isinstance(model, StreamingAtTimes) and bool(self.columns.time_columns)
        self._schema = model.__dict__.get("schema_") or Schema(
            self.columns.values, time_columns=self.columns.time_columns
        )
        self.n_rows = self.n_chunks = self.n_learned = 0  # rows filtered, online-EM steps, rows learned from

    # ------------------------------------------------------------------ rows
    def take(self, cells: Sequence[str], line: int) -> None:
        """Filter one row (its cells in the header's order); RowError if it cannot be, leaving every
        filter as it was."""
        row = self._read(cells, line)
        sequence = self._sequences.get(row.key)
        state = sequence.state if sequence is not None else self.model.filter_init(lag=self.lag)
        try:
            if self._timed:
                time = self._schema.time_of(row.stamps)
                state, out = self.model.filter_step(state, row.values, row.inputs, time=time)
            else:
                state, out = self.model.filter_step(state, row.values, row.inputs)
        except ValueError as error:
            raise RowError(line, str(error)) from None
        if sequence is None:
            sequence = self._sequences[row.key] = _Sequence(state)
        sequence.state = state
        self.n_rows += 1
        self._answer(row, sequence, out)
        if self.learn:
            sequence.values.append(row.values)
            if row.inputs is not None:
                sequence.inputs.append(row.inputs)
            if len(sequence.values) == self.learn:
                self._learn(sequence)

    def finish(self) -> None:
        """The end of the feed: the rows still waiting for their lagged law, smoothed on everything
        seen; the last rows learned from if they fill half a chunk."""
        for key, sequence in self._sequences.items():
            if sequence.pending:
                smoothed = self.model.filter_smoothed(sequence.state)[-len(sequence.pending) :]
                for waiting, law in zip(sequence.pending, smoothed, strict=True):
                    self._write(key, *waiting, law)
                sequence.pending.clear()
            left = len(sequence.values)
            if left and left * 2 >= self.learn:
                self._learn(sequence)
            elif left:
                where = "" if key is None else f" of {self.columns.id_column} {key!r}"
                self.note(f"the last {left} rows{where} (under half a chunk of {self.learn}) were not learned from")

    def _read(self, cells: Sequence[str], line: int) -> Row:
        columns = self.columns
        if len(cells) != len(columns.header):
            raise RowError(line, f"{len(cells)} cells, the header has {len(columns.header)}")
        key = None if columns.id_column is None else cells[self._position[columns.id_column]].strip()
        stamps = {name: cells[self._position[name]].strip() for name in columns.time_columns}
        values = np.array([self._number(cells, name, line, self._codes) for name in columns.values])
        inputs = None
        if columns.inputs:
            inputs = np.array([self._number(cells, name, line) for name in columns.inputs])
        return Row(key, stamps, values, inputs)

    def _number(self, cells: Sequence[str], name: str, line: int, codes: dict[str, int] | None = None) -> float:
        text = cells[self._position[name]].strip()
        if text.lower() in MISSING:
            return math.nan
        if codes is not None:
            if text not in codes:
                raise RowError(line, f"{text!r} is not one of the model's labels {list(codes)}", name)
            return float(codes[text])
        try:
            value = float(text)
        except ValueError:
            raise RowError(line, f"{text!r} is not a number", name) from None
        if math.isinf(value):
            raise RowError(line, f"{text!r} is infinite", name)
        return value

    # ---------------------------------------------------------------- answers
    def _answer(self, row: Row, sequence: _Sequence, out: Any) -> None:
        if out.probabilities is None and out.mean is None:  # a step conditioned on: no law
            self._write(row.key, row.stamps, out.step, None, None)
        elif not self.lag:
            law = out.probabilities if out.mean is None else (out.mean, out.covariance, out.probabilities)
            self._write(row.key, row.stamps, out.step, out.log_likelihood, law)
        else:
            sequence.pending.append((row.stamps, out.step, out.log_likelihood))
            if out.lagged is not None:
                self._write(row.key, *sequence.pending.popleft(), out.lagged)

    def _write(self, key: str | None, stamps: dict[str, str], step: int, log_lik: float | None, law: Any) -> None:
        """One output row; ``law``: probabilities (K,), or (mean, covariance[, probabilities]), or None."""
        record: dict[str, Any] = {} if self.columns.id_column is None else {self.columns.id_column: key}
        record.update(stamps)
        record.update(step=step, log_likelihood=log_lik)
        probabilities, mean, covariance = law, None, None
        if isinstance(law, tuple):
            mean, covariance, *rest = law
            probabilities = rest[0] if rest else None
        n_modes = self._n_modes if probabilities is None else len(probabilities)
        for k in range(n_modes or 0):
            record[f"p_mode{k}"] = None if probabilities is None else float(probabilities[k])
        if mean is not None:
            sd = np.sqrt(np.clip(np.diagonal(covariance), 0.0, None))
            for i in range(len(mean)):
                record[f"x{i}"], record[f"x{i}_sd"] = float(mean[i]), float(sd[i])
        self.writer.write(record)

    # --------------------------------------------------------------- learning
    def _learn(self, sequence: _Sequence) -> None:
        values = np.array(sequence.values)
        inputs = np.array(sequence.inputs) if sequence.inputs else None
        sequence.values, sequence.inputs = [], []
        self.model.partial_fit(values, inputs=inputs)
        self.n_chunks += 1
        self.n_learned += len(values)


def _n_modes(model: Any) -> int | None:
    """The number of modes of a fitted model (its ``n_states_``, else its ``n_states``), None if it has none."""
    n_modes = model.__dict__.get("n_states_", model.get_params().get("n_states"))
    return n_modes if isinstance(n_modes, int) else None
