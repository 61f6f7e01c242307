"""A batch of sequences of unequal length, and every check on user input.

All public model methods convert their input through :func:`as_sequences`, so a
bad value is reported once, in one style: which sequence, which time step, what
was wrong. The values of all sequences live in one ``(n_steps, n_features)``
float array with ``offsets`` marking where each sequence starts, which is the
layout the numba kernels work on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from os import PathLike
from typing import Any, Literal

import numpy as np
import pandas as pd

__all__ = [
    "Sequences",
    "check_dimensions",
    "as_sequences",
    "check_array",
    "check_covariances",
    "check_probabilities",
]

Form = Literal["array", "list", "frame"]


@dataclass(frozen=True, eq=False)
class Sequences:
    """Sequences of observations, concatenated.

    Parameters
    ----------
    values : (n_steps, n_features) float array
        All time steps of all sequences, one after another. NaN marks a missing value.
    offsets : (n_sequences + 1,) int array
        Sequence ``i`` is ``values[offsets[i]:offsets[i + 1]]``.
    times : (n_steps,) float array, optional
        Time stamps, non-decreasing within each sequence.
    inputs : (n_steps, n_inputs) float array, optional
        Exogenous inputs (controls, covariates) aligned with ``values``.
    ids : list, optional
        A label per sequence (the ``id`` column of a data frame).

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

    # ----------------------------------------------------------------- constructors
    @classmethod
    def from_array(cls, X: Any, lengths: Sequence[int] | None = None) -> Sequences:
        """One 1-D/2-D array, optionally cut into sequences by ``lengths`` (hmmlearn's form)."""
        if lengths is None:
            return cls.from_arrays([X], form="array")
        lengths_arr = np.asarray(lengths)
        if lengths_arr.ndim != 1 or lengths_arr.dtype.kind not in "iu":
            raise ValueError(f"lengths must be a 1-D sequence of integers, got {lengths!r}")
        bad = np.flatnonzero(lengths_arr <= 0)
        if bad.size:
            raise ValueError(f"sequence {bad[0]} is empty (lengths[{bad[0]}] = {lengths_arr[bad[0]]})")
        offsets = np.concatenate([[0], np.cumsum(lengths_arr)]).astype(np.int64)
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
        """A list of arrays, one per sequence, each (n_steps,) or (n_steps, n_features)."""
        if len(arrays) == 0:
            raise ValueError("no sequences given (an empty list)")
        blocks = [_as_2d_float(a, _Locator(i)) for i, a in enumerate(arrays)]
        values, offsets = _concatenate(blocks, "features")
        _check_finite_or_nan(values, offsets)
        times_arr = None
        if times is not None:
            times_arr = _aligned(times, offsets, "times")[:, 0]
            _check_times(times_arr, offsets)
        inputs_arr = None if inputs is None else _aligned(inputs, offsets, "inputs")
        if inputs_arr is not None:
            _check_finite(inputs_arr, offsets, "input")
        return cls(values, offsets, times_arr, inputs_arr, form=form)

    @classmethod
    def from_dataframe(
        cls,
        frame: pd.DataFrame,
        *,
        id_column: str | None = "id",
        time_column: str | None = None,
        value_columns: Sequence[str] | None = None,
        input_columns: Sequence[str] | None = None,
    ) -> Sequences:
        """Long-format data: one row per time step, an ``id`` column naming the sequence.

        Rows are grouped by ``id`` (in order of first appearance) and sorted by
        ``time_column`` within each sequence when one is given. Results that are
        indexed by time step come back in the frame's original row order.
        """
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(f"expected a pandas DataFrame, got {type(frame).__name__}")
        if id_column == "id" and "id" not in frame.columns:
            id_column = None  # the default: no id column means one sequence
        for column in (id_column, time_column, *(value_columns or ()), *(input_columns or ())):
            if column is not None and column not in frame.columns:
                raise ValueError(f"column {column!r} not found; columns are {list(frame.columns)}")
        special = {id_column, time_column, *(input_columns or ())}
        if value_columns is None:
            value_columns = [c for c in frame.columns if c not in special]
        if not value_columns:
            raise ValueError("the data frame has no value columns")

        n_rows = len(frame)
        if n_rows == 0:
            raise ValueError("the data frame has no rows")
        if id_column is None:
            codes, ids = np.zeros(n_rows, dtype=np.int64), [0]
        else:
            codes, uniques = pd.factorize(frame[id_column], sort=False)
            if (codes < 0).any():
                row = int(np.flatnonzero(codes < 0)[0])
                raise ValueError(f"row {row}: missing value in id column {id_column!r}")
            ids = list(uniques)
        keys = [codes]
        if time_column is not None:
            time_values = _numeric_column(frame, time_column, lambda row: f"row {row}", allow_datetime=True)
            keys.insert(0, time_values)
        order = np.lexsort(keys)  # by id, then by time
        counts = np.bincount(codes, minlength=len(ids))
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

        position = np.empty(n_rows, dtype=np.int64)
        position[order] = np.arange(n_rows)

        def locate(row: int) -> str:
            sequence = int(np.searchsorted(offsets, position[row], side="right") - 1)
            return f"sequence {sequence}, time step {position[row] - offsets[sequence]} (id {ids[sequence]!r})"

        values = np.column_stack([_numeric_column(frame, c, locate) for c in value_columns])[order]
        _check_finite_or_nan(values, offsets, columns=list(value_columns))
        times = None
        if time_column is not None:
            times = time_values[order]
            _check_times(times, offsets)
        inputs = None
        if input_columns:
            inputs = np.column_stack([_numeric_column(frame, c, locate) for c in input_columns])[order]
            _check_finite(inputs, offsets, "input", columns=list(input_columns))
        row_order = None if np.array_equal(order, np.arange(n_rows)) else order
        return cls(values, offsets, times, inputs, ids, form="frame", row_order=row_order)

    @classmethod
    def from_csv(cls, path: str | PathLike[str], **columns: Any) -> Sequences:
        """Read a CSV file in long format; keyword arguments as for :meth:`from_dataframe`."""
        return cls.from_dataframe(pd.read_csv(path), **columns)

    @classmethod
    def from_parquet(cls, path: str | PathLike[str], **columns: Any) -> Sequences:
        """Read a Parquet file in long format (needs pyarrow); arguments as for :meth:`from_dataframe`."""
        return cls.from_dataframe(pd.read_parquet(path), **columns)

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
    def has_missing(self) -> bool:
        return bool(np.isnan(self.values).any())

    def __len__(self) -> int:
        return self.n_sequences

    def __getitem__(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i] : self.offsets[i + 1]]

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[i] for i in range(self.n_sequences))

    def locate(self, row: int) -> tuple[int, int]:
        """(sequence index, time step) of a row of ``values``."""
        sequence = int(np.searchsorted(self.offsets, row, side="right") - 1)
        return sequence, int(row - self.offsets[sequence])

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
            given = self._input_array(inputs)
        if given.shape[1] != input_dim:
            raise ValueError(f"inputs must have {input_dim} column(s) (input_dim), got {given.shape[1]}")
        bad = np.flatnonzero(~np.isfinite(given).all(axis=1))
        if bad.size:
            sequence, step = self.locate(int(bad[0]))
            raise ValueError(f"sequence {sequence}, time step {step}: non-finite input")
        return replace(self, inputs=np.ascontiguousarray(given))

    def _input_array(self, inputs: Any) -> np.ndarray:
        """Inputs as one (n_steps, m) array aligned with ``values``."""
        if isinstance(inputs, (list, tuple)) and len(inputs) and not np.isscalar(inputs[0]) and self.form == "list":
            if len(inputs) != self.n_sequences:
                raise ValueError(f"inputs: got {len(inputs)} arrays for {self.n_sequences} sequences")
            blocks = []
            for s, block in enumerate(inputs):
                array = np.asarray(block, dtype=float)
                array = array[:, None] if array.ndim == 1 else array
                if array.ndim != 2 or len(array) != self.lengths[s]:
                    raise ValueError(
                        f"sequence {s}: inputs must have {self.lengths[s]} rows (one per step), got shape {array.shape}"
                    )
                blocks.append(array)
            widths = {b.shape[1] for b in blocks}
            if len(widths) > 1:
                raise ValueError(f"inputs of different sequences have different numbers of columns {sorted(widths)}")
            return np.concatenate(blocks)
        array = np.asarray(inputs, dtype=float)
        array = array[:, None] if array.ndim == 1 else array
        if array.ndim != 2 or len(array) != self.n_steps:
            raise ValueError(f"inputs must have {self.n_steps} rows (one per time step), got shape {array.shape}")
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

    def require_observed(self) -> Sequences:
        """Check that a fit has data to learn from: an observed value in every sequence and
        every feature observed somewhere (missing values are otherwise allowed)."""
        observed = ~np.isnan(self.values)
        empty = np.flatnonzero(np.add.reduceat(observed.any(axis=1), self.offsets[:-1]) == 0)  # sequences are non-empty
        if empty.size:
            raise ValueError(f"sequence {empty[0]} has no observed value (all NaN); fit needs data in every sequence")
        never = np.flatnonzero(~observed.any(axis=0))
        if never.size:
            raise ValueError(f"feature {never[0]} is never observed (all NaN); fit cannot estimate it")
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


def as_sequences(data: Any, lengths: Sequence[int] | None = None, **columns: Any) -> Sequences:
    """Convert any accepted input to :class:`Sequences`.

    Accepted: a :class:`Sequences`; a 1-D or 2-D array (one sequence, or several
    cut by ``lengths``); a list of arrays; a pandas DataFrame in long format
    (keyword arguments as for :meth:`Sequences.from_dataframe`).
    """
    if isinstance(data, Sequences):
        if lengths is not None:
            raise ValueError("lengths cannot be given with a Sequences object")
        return data
    if isinstance(data, pd.DataFrame):
        if lengths is not None:
            raise ValueError("lengths cannot be given with a data frame; use its id column")
        return Sequences.from_dataframe(data, **columns)
    if isinstance(data, (list, tuple)) and data and not np.isscalar(data[0]):
        if lengths is not None:
            raise ValueError("lengths cannot be given with a list of sequences")
        return Sequences.from_arrays(data)
    if isinstance(data, pd.Series):
        data = data.to_numpy()
    return Sequences.from_array(data, lengths)


# ----------------------------------------------------------------------- helpers
class _Locator:
    """Names where a row of an input array sits: ``sequence i, time step t``."""

    def __init__(self, where: int | np.ndarray):
        self.where = where  # a sequence index, or the offsets of sequences cut from one array

    def sequence(self) -> str:
        return f"sequence {self.where}" if np.isscalar(self.where) else "X"

    def step(self, row: int) -> str:
        if np.isscalar(self.where):
            return f"sequence {self.where}, time step {row}"
        sequence = int(np.searchsorted(self.where, row, side="right") - 1)
        return f"sequence {sequence}, time step {row - int(self.where[sequence])}"


def _as_2d_float(data: Any, where: _Locator) -> np.ndarray:
    """A float64 (n_steps, n_features) copy of one array, or a clear error."""
    if isinstance(data, (pd.DataFrame, pd.Series)):
        data = data.to_numpy()
    array = np.asarray(data)
    if array.dtype.kind == "c":
        raise ValueError(f"{where.sequence()}: complex values are not supported")
    if array.dtype.kind not in "biuf":
        try:
            array = array.astype(np.float64)
        except (TypeError, ValueError):
            flat = array.reshape(-1) if array.ndim else array.reshape(1)
            for position, item in enumerate(flat):
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


def _concatenate(blocks: list[np.ndarray], what: str) -> tuple[np.ndarray, np.ndarray]:
    width = blocks[0].shape[1]
    for i, block in enumerate(blocks):
        if block.shape[1] != width:
            raise ValueError(f"sequence {i} has {block.shape[1]} {what} but sequence 0 has {width}")
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blocks])]).astype(np.int64)
    return (blocks[0] if len(blocks) == 1 else np.concatenate(blocks, axis=0)), offsets


def _aligned(arrays: Sequence[Any], offsets: np.ndarray, what: str) -> np.ndarray:
    """Per-sequence arrays (times or inputs) that must match the sequences' lengths."""
    if len(arrays) != len(offsets) - 1:
        raise ValueError(f"{len(arrays)} {what} arrays given for {len(offsets) - 1} sequences")
    blocks = [_as_2d_float(a, _Locator(i)) for i, a in enumerate(arrays)]
    for i, block in enumerate(blocks):
        expected = offsets[i + 1] - offsets[i]
        if len(block) != expected:
            raise ValueError(f"sequence {i}: {len(block)} {what} for {expected} time steps")
    return _concatenate(blocks, f"{what} columns")[0]


def _first_bad(mask: np.ndarray, offsets: np.ndarray) -> tuple[int, int, int] | None:
    rows, cols = np.nonzero(mask)
    if not rows.size:
        return None
    row = int(rows[0])
    sequence = int(np.searchsorted(offsets, row, side="right") - 1)
    return sequence, row - int(offsets[sequence]), int(cols[0])


def _check_finite_or_nan(values: np.ndarray, offsets: np.ndarray, columns: list[str] | None = None) -> None:
    with np.errstate(invalid="ignore", over="ignore"):
        if np.isfinite(values.sum()):  # one cheap pass proves there is no inf (and no NaN)
            return
    bad = _first_bad(np.isinf(values), offsets)
    if bad is not None:
        sequence, step, col = bad
        name = f"column {columns[col]!r}" if columns else f"feature {col}"
        raise ValueError(f"sequence {sequence}, time step {step}, {name}: infinite value")


def _check_finite(values: np.ndarray, offsets: np.ndarray, what: str, columns: list[str] | None = None) -> None:
    bad = _first_bad(~np.isfinite(values), offsets)
    if bad is not None:
        sequence, step, col = bad
        name = f"column {columns[col]!r}" if columns else f"{what} {col}"
        raise ValueError(f"sequence {sequence}, time step {step}, {name}: {what} is not finite")


def _check_times(times: np.ndarray, offsets: np.ndarray) -> None:
    _check_finite(times[:, None], offsets, "time stamp")
    decreasing = np.flatnonzero(np.diff(times) < 0) + 1
    decreasing = decreasing[~np.isin(decreasing, offsets)]
    if decreasing.size:
        row = int(decreasing[0])
        sequence = int(np.searchsorted(offsets, row, side="right") - 1)
        raise ValueError(f"sequence {sequence}, time step {row - offsets[sequence]}: time stamps decrease")


def _numeric_column(
    frame: pd.DataFrame, column: str, locate: Callable[[int], str], allow_datetime: bool = False
) -> np.ndarray:
    series = frame[column]
    if allow_datetime and pd.api.types.is_datetime64_any_dtype(series):
        epoch = pd.Timestamp("1970-01-01", tz=series.dt.tz)
        return ((series - epoch) / pd.Timedelta(seconds=1)).to_numpy(dtype=np.float64)
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
        if pd.api.types.is_complex_dtype(series):
            raise ValueError(f"column {column!r}: complex values are not supported")
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    converted = pd.to_numeric(series, errors="coerce")
    bad = np.flatnonzero(converted.isna().to_numpy() & series.notna().to_numpy())
    if bad.size:
        row = int(bad[0])
        raise ValueError(f"{locate(row)} (row {row}), column {column!r}: non-numeric value {series.iloc[row]!r}")
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


def check_covariances(name: str, value: Any, n_features: int | None = None) -> np.ndarray:
    """A stack of symmetric positive-definite matrices (..., D, D)."""
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
    try:
        np.linalg.cholesky(array)
    except np.linalg.LinAlgError:
        for index in np.ndindex(array.shape[:-2]):  # which one
            try:
                np.linalg.cholesky(array[index])
            except np.linalg.LinAlgError:
                raise ValueError(f"{name}[{', '.join(map(str, index))}] is not positive definite") from None
    return array
