"""Figures of fitted models: modes over time, the learned automaton, forecasts, training traces.

Each ``plot_*`` function draws one figure from plain arrays (or, for the automaton, a fitted
model) and returns the matplotlib ``Figure``; pass ``ax=`` to draw into axes of your own.
:func:`model_figures` makes the figures that suit a fitted model, for every sequence of the data:

=================  ==============================================================  ============================
name               what it shows                                                   for a model that is
=================  ==============================================================  ============================
``modes``          the series over one coloured band per segment of the most       a ``ModeDecoder``: HMM,
                   likely mode path (:func:`plot_modes`)                           ARHMM, SwitchingLDS, ...
``probabilities``  p(mode at t | all data), stacked (:func:`plot_probabilities`)   the same
``automaton``      modes as nodes with their mean dwell time, switches as arrows   the same; a chain on at
                   with their probability or guard (:func:`plot_automaton`)        most 12 symbols or contexts
``forecast``       the series, the predictive mean and 50 % / 90 % intervals       a ``Forecaster`` without
                   (:func:`plot_forecast`)                                         modes (LinearGaussianSSM)
``trace``          the objective at each EM iteration (:func:`plot_trace`)         an ``IterativeFit``
=================  ==============================================================  ============================

The capabilities are those of :mod:`modeshift.models.capabilities`. A figure of a series has one
panel per sequence (small multiples, each titled with the sequence's id). Axes carry the data's
own names (:class:`DataLabels`: a data frame's column names, or ``value_names=`` and
``time_name=``) and time stamps (a time column, or ``time=``); dwell times are in the data's time
unit and the guards of a one-dimensional recurrent SLDS in the units of the observations.
:func:`plot_comparison` draws a table of scores (one row per model) as grouped bars;
:func:`plot_flows` each mode's vector field with its guards, for a ``HybridAutomaton`` whose
state has one or two dimensions.

The figures are built without pyplot (a ``matplotlib.figure.Figure`` on the Agg canvas), so
none is opened in a window or kept alive behind your back: a notebook displays the returned
figure, ``figure.savefig("modes.png")`` writes it, and ``plot_modes(..., ax=ax)`` draws into
a figure made with ``plt.subplots()``. matplotlib is optional: ``pip install modeshift[plot]``.

>>> import numpy as np
>>> from modeshift import HMM
>>> from modeshift.plot import model_figures
>>> X = np.r_[np.zeros(60), np.full(40, 4.0)] + np.random.default_rng(0).normal(size=100)
>>> figures = model_figures(HMM(n_states=2, random_state=0).fit(X), X, value_names=["level"])
>>> sorted(figures)
['automaton', 'modes', 'probabilities', 'trace']
>>> figures["modes"].axes[0].get_ylabel()
'level'
>>> figures["modes"].savefig("modes.png")  # doctest: +SKIP
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy.stats import norm

from modeshift.data import Sequences, as_sequences
from modeshift.metrics import segments
from modeshift.models.capabilities import Describer, Forecaster, HybridAutomaton, IterativeFit, ModeDecoder, objective

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "DataLabels",
    "Panel",
    "Switching",
    "chain_states",
    "data_panels",
    "format_number",
    "format_share",
    "frame_columns",
    "model_figures",
    "plot_automaton",
    "plot_comparison",
    "plot_forecast",
    "plot_modes",
    "plot_probabilities",
    "plot_trace",
    "read_sequences",
    "switching",
]

_WIDE = (8.0, 3.0)  # inches: the size of a figure of a series
_PANEL_HEIGHT = 2.4  # inches: one sequence's panel in a figure of several
_BAND_ALPHA = 0.25  # opacity of the mode bands behind a series
_LINE_STYLES = ("-", "--", ":", "-.")  # the features of a series over mode bands
_BEND = 0.25  # curvature of the automaton's arrows: i -> j and j -> i bow to opposite sides
_MAX_NODES = 12  # a chain with more states is not drawn as a graph
#: Calendar units from the smallest, in seconds (a month is a twelfth of the mean Gregorian year).
_UNITS = {
    "second": 1.0,
    "minute": 60.0,
    "hour": 3600.0,
    "day": 86400.0,
    "week": 604800.0,
    "month": 2629746.0,
    "quarter": 7889238.0,
    "year": 31556952.0,
}
_SUPERSCRIPTS = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


# ------------------------------------------------------------------------- what the numbers are
@dataclass(frozen=True)
class DataLabels:
    """What the numbers of the data are: names for the axes, and how long a time step lasts.

    ``values`` names the value columns (one per feature; unnamed features are y0, y1, ...),
    ``inputs`` the input columns (u0, u1, ...), ``time`` the time axis; ``symbols`` is the
    vocabulary of symbol sequences (whose values are the symbols' codes). One step lasts ``step``
    times ``unit`` — the median spacing of the time stamps, e.g. 1 year, 3 months, 0.5 seconds —
    so a dwell of d steps lasts d * step units.

    >>> DataLabels(time="date", step=3.0, unit="month").duration(4.2)
    '12.6 months'
    """

    values: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()
    time: str = "time step"
    step: float = 1.0
    unit: str = "step"
    symbols: tuple[str, ...] = ()

    @property
    def stamped(self) -> bool:
        """Whether the steps have time stamps (else the time axis counts steps)."""
        return self.time != DataLabels.time

    def value(self, d: int) -> str:
        """The name of feature ``d`` ('symbol' for symbol sequences)."""
        if d < len(self.values):
            return self.values[d]
        return "symbol" if self.symbols else f"y{d}"

    def input(self, d: int, n_inputs: int) -> str:
        """The name of input ``d`` of ``n_inputs``."""
        return self.inputs[d] if d < len(self.inputs) else ("u" if n_inputs == 1 else f"u{d}")

    def duration(self, steps: float) -> str:
        """``steps`` time steps in the data's unit, for people: '4.1 quarters'."""
        if np.isnan(steps):  # a recurrent SLDS's mode that no decoded path visits, or one set by hand
            return "n/a"
        if np.isinf(steps):
            return "absorbing"
        amount = format_number(steps * self.step, 3)
        return f"{amount} {self.unit}{'' if amount == '1' else 's'}"


@dataclass(frozen=True)
class Panel:
    """One sequence of the data, ready to draw: its title (its id; empty for data of one unnamed
    sequence), values (n_steps, n_features; a symbol's code), time stamps (numbers or datetime64),
    the ``data`` the model's methods take (the values, or the symbol sequence) and the per-step
    ``extras`` they take by keyword."""

    title: str
    values: np.ndarray
    time: np.ndarray
    data: Any
    extras: dict[str, np.ndarray] = field(default_factory=dict)


def data_panels(
    model: Any,
    X: Any,
    lengths: Sequence[int] | None = None,
    *,
    time: Any = None,
    value_names: Sequence[str] | None = None,
    time_name: str | None = None,
    **extras: Any,
) -> tuple[list[Panel], DataLabels]:
    """The data cut into one :class:`Panel` per sequence, and the labels of its numbers.

    ``X`` and ``lengths`` as for the model's ``fit``: a data frame's column keywords
    (``id_column=``, ``time_column=``, ``value_columns=``, ``input_columns=``) name its columns and
    label the axes (given with :class:`~modeshift.data.Sequences` read from a frame, they only
    label them); the other ``extras`` are per-step data for the model's methods (``inputs=``,
    ``exog=``), one array of all rows or a list with one array per sequence. ``time`` stamps the
    steps likewise (numbers or datetimes; default: the data's time stamps, a date column as dates,
    else 0, 1, ...). ``value_names`` and ``time_name`` override the names found in the data.
    """
    columns = frame_columns(extras)
    seqs = read_sequences(model, X, lengths, columns, time)
    schema = getattr(seqs, "schema", None)  # what the data layer kept of a data frame's columns
    columns = {**_schema_columns(schema), **columns}  # the keywords given win
    time_column = columns.get("time_column")
    time_name = time_name or time_column or getattr(time, "name", None)
    if time is not None:
        if isinstance(getattr(time, "dtype", None), pd.PeriodDtype):  # quarters, months, ...: their first instants
            time = pd.Series(time).dt.to_timestamp().to_numpy()
        stamps = [_rows(time, seqs, i, dtype=None) for i in range(seqs.n_sequences)]
    elif seqs.times is not None:
        every = _stamps(
            seqs.times, _time_kind(X, schema, time_column), getattr(schema and schema.time, "frequency", None)
        )
        stamps = [every[a:b] for a, b in zip(seqs.offsets[:-1], seqs.offsets[1:])]
    else:
        stamps = [np.arange(n) for n in seqs.lengths]
    timed = time is not None or seqs.times is not None
    labels = DataLabels(
        values=tuple(value_names or _value_names(X, seqs, columns)),
        inputs=tuple(columns.get("input_columns") or ()),
        time=time_name or ("time" if timed else "time step"),
        symbols=() if seqs.vocabulary is None else tuple(map(str, seqs.vocabulary.symbols)),
    )
    if timed:
        labels = _with_step(labels, stamps)
    id_column = columns.get("id_column", "id")
    named = id_column in X.columns if isinstance(X, pd.DataFrame) else "id_column" in columns and seqs.ids is not None
    panels = []
    for i, steps in enumerate(stamps):
        rows = slice(seqs.offsets[i], seqs.offsets[i + 1])
        chosen = {name: _rows(value, seqs, i) for name, value in extras.items()}
        if "inputs" not in chosen and seqs.inputs is not None and getattr(model, "input_dim", 0):
            chosen["inputs"] = seqs.inputs[rows]
        if named:
            title = f"{id_column} {seqs.ids[i]}"
        else:
            title = f"sequence {i if seqs.ids is None else seqs.ids[i]}" if seqs.n_sequences > 1 else ""
        values, n_steps = seqs.values[rows], rows.stop - rows.start
        if seqs.vocabulary is None:
            data = values
        else:  # the model's methods read symbols (and events) from Sequences
            times = None if seqs.times is None else seqs.times[rows]
            data = Sequences(values, np.array([0, n_steps]), times, vocabulary=seqs.vocabulary)
        panels.append(Panel(title, values, _time(steps, n_steps), data, chosen))
    return panels, labels


#: The keywords that say how to read a data frame (``id_column=``, ``time_column=``, ...), as
#: ``Sequences.from_dataframe`` and ``from_event_log`` take them.
_FRAME_KEYWORDS = (
    set(inspect.signature(Sequences.from_dataframe).parameters)
    | set(inspect.signature(Sequences.from_event_log).parameters)
) - {"frame", "vocabulary", "unknown"}


def frame_columns(extras: dict[str, Any]) -> dict[str, Any]:
    """Take the keywords that say how to read a data frame (``id_column=``, ``time_column=``,
    value and input columns, ...) out of ``extras``, and return them."""
    return {name: extras.pop(name) for name in list(extras) if name in _FRAME_KEYWORDS}


def read_sequences(
    model: Any, X: Any, lengths: Sequence[int] | None, columns: dict[str, Any], time: Any = None
) -> Sequences:
    """``X`` as :class:`~modeshift.data.Sequences` for ``model``: for a model of symbols or events
    the symbols (in its vocabulary, if it has one) with their time stamps ``time``; a data frame's
    ``columns`` keywords applied (Sequences, already read, keep their own)."""
    if isinstance(X, Sequences) and lengths is None:
        return X
    if getattr(model, "data_kind", "real") != "real":
        times = {} if time is None or isinstance(X, pd.DataFrame) else {"times": time}
        vocabulary = getattr(model, "vocabulary_", None)
        return as_sequences(X, lengths, symbols=True, vocabulary=vocabulary, **times, **columns)
    return as_sequences(X, lengths, **columns)


def _schema_columns(schema: Any) -> dict[str, Any]:
    """The column keywords a data schema (``Sequences.schema``, where the data layer keeps one)
    stands for: its id, time (several read as one: 'year/quarter'), value and input columns."""
    if schema is None:
        return {}
    named = {
        "id_column": schema.id_column,
        "time_column": "/".join(schema.time_columns) or None,
        "columns": list(schema.columns),
        "input_columns": list(schema.input_columns) or None,
    }
    return {name: value for name, value in named.items() if value is not None}


def _time_kind(X: Any, schema: Any, time_column: str | None) -> str:
    """How the numbers of ``Sequences.times`` read: 'number', 'datetime' (seconds since 1970) or
    'period' (pandas' ordinals), from the schema, else from the kind of a data frame's time column."""
    if schema is not None and schema.time is not None:
        return schema.time.kind
    if isinstance(X, pd.DataFrame) and time_column in X.columns and not pd.api.types.is_numeric_dtype(X[time_column]):
        return "datetime"  # parsed as seconds since 1970
    return "number"


def _stamps(times: np.ndarray, kind: str, frequency: str | None) -> np.ndarray:
    """Time stamps held as numbers, as numbers or datetime64 (a period by its first instant)."""
    if kind == "datetime":
        return times.astype("datetime64[s]")
    if kind == "period":
        return pd.PeriodIndex.from_ordinals(times.astype(np.int64), freq=frequency).to_timestamp().to_numpy()
    return times


def _value_names(X: Any, seqs: Sequences, columns: dict[str, Any]) -> list[str]:
    """The value columns' names where the data have them: named by ``value_columns``, a data
    frame's (as ``Sequences.from_dataframe`` chooses them), or a named Series'."""
    named = columns.get("value_columns", columns.get("columns"))
    if named is not None:
        return [str(name) for name in ([named] if isinstance(named, str) else named)]
    if isinstance(X, pd.Series) and X.name is not None:
        return [str(X.name)]
    if not isinstance(X, pd.DataFrame):
        return []
    special = {columns.get("id_column", "id"), columns.get("time_column"), *(columns.get("input_columns") or ())}
    return [str(name) for name in X.columns if name not in special]


def _with_step(labels: DataLabels, stamps: list[np.ndarray]) -> DataLabels:
    """``labels`` with the length of a step: the median spacing of the time stamps, in the calendar
    unit it is closest to for dates, in units of the time axis for numbers."""
    spacings = np.concatenate([np.diff(steps) for steps in stamps])
    if spacings.size == 0:
        return labels
    if np.issubdtype(spacings.dtype, np.timedelta64):
        seconds = float(np.median(spacings / np.timedelta64(1, "s")))
        unit = max((name for name, size in _UNITS.items() if size <= 1.1 * seconds), key=_UNITS.get, default="second")
        step = seconds / _UNITS[unit]
        step = float(round(step)) if abs(step - round(step)) <= 0.1 * max(round(step), 1) else step  # 28-31 days
    else:
        step, word = float(np.median(spacings)), labels.time.lower()
        unit = word.rstrip("s") if word.rstrip("s") in _UNITS else f"{labels.time} unit"
    return labels if step <= 0 else replace(labels, step=step, unit=unit)


# ------------------------------------------------------------------------- figures
def plot_modes(
    X: Any,
    modes: Any,
    *,
    time: Any = None,
    mode_names: Sequence[str] | None = None,
    labels: DataLabels | None = None,
    ax: Axes | None = None,
) -> Figure:
    """The series ``X`` (n_steps,) or (n_steps, n_features) over one band per run of a mode.

    ``modes`` (n_steps,) is a mode path, e.g. from ``predict``; each contiguous run of one
    mode (:func:`~modeshift.metrics.segments`) gets a band in that mode's colour, from half
    a step before its first step to half a step after its last. ``time`` stamps the steps
    (numbers or datetimes; default 0, 1, ...); ``labels`` names the axes and the features.
    """
    figure, ax = _axes(ax, _WIDE)
    from matplotlib.patches import Patch

    labels = labels or DataLabels()
    values, modes = _columns(X), np.asarray(modes)
    if len(modes) != len(values):
        raise ValueError(f"modes has {len(modes)} steps but X has {len(values)}")
    steps = _time(time, len(values))
    edges = _edges(steps)
    names = _mode_names(int(modes.max()) + 1, mode_names)
    colours = _palette(len(names))
    for start, end, mode in segments(modes)[["start", "end", "mode"]].itertuples(index=False):
        ax.axvspan(edges[start], edges[end], color=colours[mode], alpha=_BAND_ALPHA, linewidth=0)
    one = values.shape[1] == 1
    lines = ax.plot(steps, values, color="black", linewidth=1)
    for d, line in enumerate(lines):  # black and grey line styles: the colours are the modes'
        line.set(label=labels.value(d), linestyle=_LINE_STYLES[d % 4], color="0" if d // 4 % 2 == 0 else "0.5")
    if labels.symbols:  # a symbol per step, as a dot at the symbol's row
        lines[0].set(linestyle="none", marker="o", markersize=3)
        ax.set_yticks(np.arange(len(labels.symbols)), labels.symbols, fontsize=7 if len(labels.symbols) > 12 else 9)
    ax.set(xlim=(edges[0], edges[-1]), xlabel=labels.time, ylabel=labels.value(0) if one else "value")
    bands = [Patch(color=colours[k], alpha=_BAND_ALPHA, label=names[k]) for k in np.unique(modes)]
    _legend(ax, handles=bands if one else bands + lines)
    return figure


def plot_probabilities(
    probabilities: Any,
    *,
    time: Any = None,
    mode_names: Sequence[str] | None = None,
    labels: DataLabels | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Posterior mode probabilities (n_steps, K), e.g. from ``predict_proba``, stacked over time."""
    figure, ax = _axes(ax, _WIDE)
    probabilities = np.asarray(probabilities, dtype=float)
    steps = _time(time, len(probabilities))
    names = _mode_names(probabilities.shape[1], mode_names)
    ax.stackplot(steps, probabilities.T, colors=_palette(len(names)), labels=names, linewidth=0)
    ax.set(xlim=(steps[0], steps[-1]), ylim=(0.0, 1.0), xlabel=(labels or DataLabels()).time, ylabel="probability")
    _legend(ax)
    return figure


def plot_automaton(
    model: Any,
    *,
    threshold: float = 0.01,
    mode_names: Sequence[str] | None = None,
    labels: DataLabels | None = None,
    ax: Axes | None = None,
) -> Figure:
    """The learned switching structure of a fitted mode model as a graph (see :func:`switching`).

    Each mode is a node labelled with its mean dwell time, in the time unit of ``labels``
    (default steps). An arrow i -> j is labelled with the per-step switch probability
    p(z_t = j | z_t-1 = i) and drawn where that is at least ``threshold``. Where switching
    depends on the continuous state or on inputs every arrow is drawn and labelled with its
    guard: the region where switching from i to j is more likely than staying.
    """
    labels = labels or DataLabels()
    found = switching(model, labels)
    n_modes = len(found.dwell_times)
    names = _mode_names(n_modes, mode_names)
    angles = np.pi / 2 + np.pi / n_modes - 2 * np.pi * np.arange(n_modes) / n_modes  # K = 2 side by side
    centres = np.c_[np.cos(angles), np.sin(angles)] if n_modes > 1 else np.zeros((1, 2))
    radius = min(0.3, 0.8 * np.sin(np.pi / n_modes)) if n_modes > 1 else 0.3  # 40 % of the gap between nodes
    low, high = centres.min(axis=0) - radius - 0.4, centres.max(axis=0) + radius + 0.4  # room for arc labels
    width, height = high - low
    figure, ax = _axes(ax, (5.0, 5.0 * height / width + 0.3))
    from matplotlib.colors import to_rgba
    from matplotlib.patches import Circle, FancyArrowPatch

    nodes = []
    for k, (centre, colour) in enumerate(zip(centres, _palette(n_modes))):
        nodes.append(ax.add_patch(Circle(centre, radius, facecolor=to_rgba(colour, 0.35), edgecolor="black")))
        ax.text(*centre, f"{names[k]}\n{labels.duration(found.dwell_times[k])}", ha="center", va="center", fontsize=8)
    switches, guards = found.switches, found.guards
    for i in range(n_modes):
        for j in range(n_modes):
            if i == j or ((i, j) not in guards and switches[i, j] < threshold):
                continue
            ax.add_patch(
                FancyArrowPatch(
                    centres[i],
                    centres[j],
                    patchA=nodes[i],
                    patchB=nodes[j],
                    connectionstyle=f"arc3,rad={_BEND}",
                    arrowstyle="-|>",
                    mutation_scale=14,
                    color="0.3",
                )
            )
            at_zero = " at " + ", ".join(f"{name} = 0" for name in found.inputs) if guards else ""
            probability = None if switches is None else format_number(switches[i, j], 2) + at_zero
            label = "\n".join(text for text in (probability, guards.get((i, j))) if text)
            dx, dy = centres[j] - centres[i]
            middle = (centres[i] + centres[j]) / 2 + 0.5 * _BEND * np.array([dy, -dx])  # the arc's midpoint
            ax.text(*middle, label, ha="center", va="center", fontsize=7, bbox={"facecolor": "white", "lw": 0})
    arrows = "where switching beats staying" if guards else "switch probability per step"
    ax.set_title(f"nodes: mean dwell time; arrows: {arrows}", fontsize=8, color="0.3")
    ax.set(xlim=(low[0], high[0]), ylim=(low[1], high[1]), aspect="equal")
    ax.axis("off")
    return figure


def plot_flows(
    model: Any,
    X: Any = None,
    lengths: Sequence[int] | None = None,
    *,
    mode_names: Sequence[str] | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Each mode's flow field with the guards of the switches out of it, from a
    :class:`~modeshift.models.capabilities.HybridAutomaton` (or its ``automaton()``).

    A 2-D state gets one panel per mode: arrows of the expected move in one step
    (``quiver``) and, for state-dependent switching, the level set where switching to each
    other mode has probability 1/2 (``contour``), in that mode's colour. A 1-D state gets one
    axes: each mode's expected move against the state, the guards' thresholds as vertical
    lines. ``X`` places the grid (see :meth:`modeshift.ARHMM.automaton`).
    """
    found = model.automaton(X, lengths) if isinstance(model, HybridAutomaton) else model
    if found.grid is None:
        raise ValueError("the automaton has no grid to draw on: pass X (a state of one or two dimensions)")
    n_modes, dims = len(found.modes), found.grid.shape[1]
    names, colours = _mode_names(n_modes, mode_names), _palette(n_modes)
    if dims == 1:
        figure, axes = _axes(ax, _WIDE)
        for k in range(n_modes):
            axes.plot(found.grid[:, 0], found.vector_fields[k][:, 0], color=colours[k], label=names[k])
        for guard in found.guards:
            for level in [] if guard.thresholds is None else guard.thresholds:
                axes.axvline(level, color=colours[guard.target], ls="--", lw=1)
        axes.axhline(0.0, color="0.6", lw=0.8)
        axes.set(xlabel="state", ylabel="expected move per step")
        _legend(axes)
        return figure
    if ax is not None and n_modes > 1:
        raise ValueError(f"a 2-D automaton has one panel per mode ({n_modes}): leave ax=None")
    figure = ax.figure if ax is not None else _figure((3.2 * n_modes, 3.4))
    panels = [ax] if ax is not None else figure.subplots(1, n_modes, squeeze=False)[0]
    mesh = [found.grid[:, i].reshape(found.grid_shape) for i in range(2)]
    for k, axes in enumerate(panels):
        move = found.vector_fields[k]
        axes.quiver(*mesh, *(move[:, i].reshape(found.grid_shape) for i in range(2)), color=colours[k])
        for guard in (g for g in found.guards if g.source == k and g.probability is not None):
            probability = guard.probability.reshape(found.grid_shape)
            if probability.min() < 0.5 < probability.max():
                axes.contour(*mesh, probability, levels=[0.5], colors=[colours[guard.target]], linewidths=1.5)
        axes.set(title=names[k], xlabel="state 0", ylabel="state 1")
    return figure


def plot_forecast(
    history: Any,
    means: Any,
    covariances: Any,
    *,
    time: Any = None,
    levels: Sequence[float] = (0.5, 0.9),
    labels: DataLabels | None = None,
    ax: Axes | None = None,
) -> Figure:
    """The observed series and a fan of central predictive intervals after its end.

    ``means`` (horizon, p) and ``covariances`` (horizon, p, p) or variances (horizon, p) are
    the Gaussian predictive moments of the next observations, as from
    :meth:`~modeshift.models.LinearGaussianSSM.forecast`; the interval at level a is
    mean +- z sd with z the (1 + a) / 2 normal quantile. ``time`` stamps the history; the
    forecast continues it with its last step. The fan opens at the last observation.
    """
    figure, ax = _axes(ax, _WIDE)
    labels = labels or DataLabels()
    history, means = _columns(history), _columns(means)
    spread = np.asarray(covariances, dtype=float)
    variances = np.diagonal(spread, axis1=1, axis2=2) if spread.ndim == 3 else spread.reshape(means.shape)
    past = _time(time, len(history))
    step = past[-1] - past[-2] if len(past) > 1 else 1
    fan = np.concatenate([past[-1:], past[-1] + step * np.arange(1, len(means) + 1)])
    one = history.shape[1] == 1
    for d, colour in enumerate(_palette(history.shape[1])):
        first = d == 0  # one legend entry per kind of line
        ax.plot(past, history[:, d], color=colour, linewidth=1, label="observed" if one else labels.value(d))
        centre = np.r_[history[-1, d], means[:, d]]
        sd = np.r_[0.0, np.sqrt(variances[:, d])]
        for level in sorted(levels, reverse=True):
            z = norm.ppf(0.5 + level / 2)
            ax.fill_between(
                fan,
                centre - z * sd,
                centre + z * sd,
                color=colour,
                alpha=0.1 + 0.45 * (1 - level),
                linewidth=0,
                label=f"{level:.0%} interval" if first else None,
            )
        ax.plot(fan, centre, color=colour, linestyle="--", linewidth=1, label="forecast mean" if first else None)
    ax.set(xlabel=labels.time, ylabel=labels.value(0) if one else "value")
    _legend(ax)
    return figure


def plot_trace(history: Sequence[float], *, label: str = "log-likelihood", ax: Axes | None = None) -> Figure:
    """The training objective at each iteration, e.g. a fitted model's ``history_``."""
    figure, ax = _axes(ax, _WIDE)
    ax.plot(np.arange(1, len(history) + 1), history, marker=".", color="black", linewidth=1)
    ax.set(xlabel="iteration", ylabel=label)
    return figure


def plot_comparison(scores: pd.DataFrame, *, ax: Axes | None = None) -> Figure:
    """Grouped bars of a table indexed by model name: a group per numeric column (metric),
    a bar per model, its value written on it."""
    metrics = scores.select_dtypes("number")
    if metrics.empty:
        raise ValueError(f"scores has no numeric columns to plot (columns: {list(scores.columns)})")
    figure, ax = _axes(ax, _WIDE)
    positions, width = np.arange(metrics.shape[1]), 0.8 / len(metrics)
    for i, ((name, row), colour) in enumerate(zip(metrics.iterrows(), _palette(len(metrics)))):
        offset = (i - (len(metrics) - 1) / 2) * width
        bars = ax.bar(positions + offset, row.to_numpy(dtype=float), width, color=colour, label=str(name))
        ax.bar_label(bars, fmt="%.3g", fontsize=7)
    ax.set_xticks(positions, [str(column) for column in metrics.columns])
    _legend(ax)
    return figure


def model_figures(
    model: Any,
    X: Any,
    *,
    lengths: Sequence[int] | None = None,
    time: Any = None,
    mode_names: Sequence[str] | None = None,
    sequences: Sequence[int] | None = None,
    value_names: Sequence[str] | None = None,
    time_name: str | None = None,
    horizon: int | None = None,
    **extras: Any,
) -> dict[str, Figure]:
    """The figures that suit a fitted model, by name (see the table at the top of the module).

    A figure of a series has a panel for each of the ``sequences`` (indices; default all)
    of ``X``, titled with its id. ``X``, ``lengths``, ``time``, ``value_names``, ``time_name``
    and the ``extras`` (a data frame's column keywords, per-step data for the model's methods)
    as for :func:`data_panels`. A forecast looks ``horizon`` steps ahead (default a tenth of
    each sequence).
    """
    panels, labels = data_panels(model, X, lengths, time=time, value_names=value_names, time_name=time_name, **extras)
    if sequences is not None:
        wrong = [i for i in sequences if not 0 <= i < len(panels)]
        if wrong:
            raise ValueError(f"sequences must be in 0 .. {len(panels) - 1}, got {wrong[0]}")
        panels = [panels[i] for i in sequences]
    figures: dict[str, Figure] = {}
    if isinstance(model, ModeDecoder):

        def modes(panel: Panel, ax: Axes) -> None:
            path = model.predict(panel.data, **panel.extras)
            skipped = len(panel.values) - len(path)  # models that condition on their first `order` steps
            shown = panel.time[skipped:]
            plot_modes(panel.values[skipped:], path, time=shown, mode_names=mode_names, labels=labels, ax=ax)

        def probabilities(panel: Panel, ax: Axes) -> None:
            posteriors = model.predict_proba(panel.data, **panel.extras)
            shown = panel.time[len(panel.values) - len(posteriors) :]
            plot_probabilities(posteriors, time=shown, mode_names=mode_names, labels=labels, ax=ax)

        figures["modes"] = _small_multiples(panels, modes)
        figures["probabilities"] = _small_multiples(panels, probabilities)
        figures["automaton"] = plot_automaton(model, mode_names=mode_names, labels=labels)
    elif labels.symbols:
        states = chain_states(model)
        if 1 < len(states) <= _MAX_NODES:
            figures["automaton"] = plot_automaton(model, mode_names=states, labels=labels)
    elif isinstance(model, Forecaster) and not any(panel.extras for panel in panels):  # future inputs are unknown

        def forecast(panel: Panel, ax: Axes) -> None:
            ahead = horizon or max(1, len(panel.values) // 10)
            plot_forecast(panel.values, *model.forecast(panel.values, ahead), time=panel.time, labels=labels, ax=ax)

        figures["forecast"] = _small_multiples(panels, forecast)
    if isinstance(model, IterativeFit) and model.history_:
        figures["trace"] = plot_trace(model.history_, label=objective(model))
    return figures


def chain_states(model: Any) -> list[str]:
    """The states of a chain on symbols as text (``states_``: symbols, or contexts of several,
    with a transition matrix ``transmat_`` between them), or none for a model without them."""
    try:
        states, transmat = list(model.states_), np.asarray(model.transmat_)
    except (AttributeError, ValueError):  # no chain, or not fitted
        return []
    if transmat.shape != (len(states), len(states)):  # e.g. a mixture's chains
        return []
    return ["".join(map(str, state)) if isinstance(state, tuple) else str(state) for state in states]


# ------------------------------------------------------------------------- switching structure
@dataclass(frozen=True)
class Switching:
    """How a fitted mode model switches: mean ``dwell_times`` (K,) in steps, per-step switch
    probabilities ``switches`` (K, K) (None where they depend on the continuous state), and the
    ``guards`` of the switches that depend on a state or on inputs, as text by (from, to); the
    switch probabilities of an input-driven chain are those at zero ``inputs``."""

    dwell_times: np.ndarray
    switches: np.ndarray | None
    guards: dict[tuple[int, int], str]
    inputs: tuple[str, ...] = ()


def switching(model: Any, labels: DataLabels | None = None) -> Switching:
    """The switching structure of a fitted mode model, its guards in the data's own units.

    A recurrent SLDS switches from i to j where w . x + b > 0 (``describe()``'s entry weights
    and biases); with one state and one observation y = c x + d this is written in y, named as
    the data's value column: (w / c) y + b - w d / c > 0. An input-driven HMM's guards are on
    its inputs u, named as the input columns.
    """
    labels = labels or DataLabels()
    table = model.describe() if isinstance(model, Describer) else pd.DataFrame()
    if "entry_weights" in table:  # recurrent SLDS: describe() gives the guard of entering each mode
        observed, guards = _observed_state(model), {}
        for j, entries in table["entry_weights"].items():
            for i, weights in entries.items():
                weights, bias = np.atleast_1d(np.asarray(weights, dtype=float)), float(table["entry_biases"][j][i])
                names = ["x"] if weights.size == 1 else [f"x{d}" for d in range(weights.size)]
                if observed is not None:
                    (c, d), names = observed, [labels.value(0)]
                    weights, bias = weights / c, bias - weights[0] * d / c
                guards[i, j] = _inequality(weights, bias, names)
        return Switching(table["dwell_time"].to_numpy(dtype=float), None, guards)
    if "input_weights" in table:  # input-driven chain: p(j | i, u) = softmax_j(r_ij + w_j . u)
        n_modes = len(table)
        switches = table[[f"to_{j}_at_zero_input" for j in range(n_modes)]].to_numpy(dtype=float)
        weights = np.stack(table["input_weights"].to_list())
        inputs = [labels.input(d, weights.shape[1]) for d in range(weights.shape[1])]
        guards = {
            (i, j): _inequality(weights[j] - weights[i], np.log(switches[i, j] / switches[i, i]), inputs)
            for i in range(n_modes)
            for j in range(n_modes)
            if i != j
        }
    else:
        switches, guards, inputs = np.asarray(model.transmat_, dtype=float), {}, []
    with np.errstate(divide="ignore"):
        return Switching(1.0 / (1.0 - np.diag(switches)), switches, guards, tuple(inputs))


def _observed_state(model: Any) -> tuple[float, float] | None:
    """(c, d) where a model observes its one continuous state as y = c x + d (+ noise), else None."""
    C = np.asarray(getattr(model, "observation_matrix_", np.zeros((0, 0))), dtype=float)
    if C.shape != (1, 1) or C[0, 0] == 0:
        return None
    return float(C[0, 0]), float(np.ravel(getattr(model, "observation_offset_", [0.0]))[0])


def _inequality(weights: Any, bias: float, names: Sequence[str]) -> str:
    """The half-space w . v + bias > 0 as text: 'x > 1.9' in one variable, else written out."""
    weights = np.atleast_1d(np.asarray(weights, dtype=float))
    used = np.flatnonzero(weights != 0)
    if used.size == 0:
        return "always" if bias > 0 else "never"
    if used.size == 1:
        (d,) = used
        return f"{names[d]} {'>' if weights[d] > 0 else '<'} {format_number(-bias / weights[d], 3)}"
    terms = " ".join(f"{'-' if weights[d] < 0 else '+'} {format_number(abs(weights[d]), 2)} {names[d]}" for d in used)
    return f"{terms.removeprefix('+ ')} > {format_number(-bias, 3)}"


# ------------------------------------------------------------------------- numbers for people
def format_number(value: Any, digits: int = 4) -> str:
    """A number for people: ``digits`` significant digits, plain between 0.001 and a million,
    else '1.5 × 10⁻⁷'; integers whole, booleans 'yes'/'no', NaN 'n/a'.

    >>> format_number(-181.26348, 6), format_number(1.5e-07), format_number(1469.11), format_number(2.0)
    ('-181.263', '1.5 × 10⁻⁷', '1469', '2')
    """
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return str(int(value))
    value = float(value)
    if np.isnan(value):
        return "n/a"
    if np.isinf(value):
        return "∞" if value > 0 else "-∞"
    if value == 0:
        return "0"
    exponent = int(np.floor(np.log10(abs(value))))
    if -3 <= exponent < 6:
        text = f"{value:.{max(digits - 1 - exponent, 0)}f}"
        text = text.rstrip("0").rstrip(".") if "." in text else text
        return "0" if text == "-0" else text
    mantissa, exponent_text = f"{value:.{digits - 1}e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    power = f"10{str(int(exponent_text)).translate(_SUPERSCRIPTS)}"
    return power if mantissa == "1" else f"-{power}" if mantissa == "-1" else f"{mantissa} × {power}"


def format_share(probability: float) -> str:
    """A probability or share as a percentage: '28.0 %', '< 0.1 %' for a tiny one (never 1.5e-07).

    >>> format_share(0.28), format_share(1.9e-10), format_share(0.0), format_share(1 - 1e-12)
    ('28.0 %', '< 0.1 %', '0 %', '> 99.9 %')
    """
    p = float(probability)
    if np.isnan(p):
        return "n/a"
    if p <= 0 or p >= 1:
        return f"{max(min(p, 1.0), 0.0):.0%}".replace("%", " %")
    if p < 0.0005:
        return "< 0.1 %"
    if p >= 0.9995:
        return "> 99.9 %"
    return f"{100 * p:.1f} %"


# ------------------------------------------------------------------------- helpers
def _figure(size: tuple[float, float]) -> Figure:
    """A new pyplot-free figure on the Agg canvas."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError("modeshift.plot needs matplotlib: pip install modeshift[plot]") from error
    figure = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _axes(ax: Axes | None, size: tuple[float, float]) -> tuple[Figure, Axes]:
    """``ax`` and its figure, or a new figure with one axes."""
    if ax is not None:
        return ax.figure, ax
    figure = _figure(size)
    return figure, figure.add_subplot()


def _small_multiples(panels: Sequence[Panel], draw: Callable[[Panel, Axes], None]) -> Figure:
    """One figure with a row of axes per panel, each drawn by ``draw`` and titled with its sequence."""
    figure = _figure((_WIDE[0], _WIDE[1] if len(panels) == 1 else 0.3 + _PANEL_HEIGHT * len(panels)))
    for ax, panel in zip(figure.subplots(len(panels), 1, squeeze=False)[:, 0], panels):
        draw(panel, ax)
        ax.set_title(panel.title, loc="right", fontsize=9)
    return figure


def _legend(ax: Axes, **options: Any) -> None:
    """One row of legend entries above the axes, clear of the data."""
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncols=8, fontsize=8, frameon=False, **options)


def _palette(n: int) -> list[tuple[float, float, float, float]]:
    """n categorical colours (matplotlib's tab10, repeating): mode k is always colour k."""
    from matplotlib import colormaps

    return [colormaps["tab10"](k % 10) for k in range(n)]


def _mode_names(n_modes: int, mode_names: Sequence[str] | None) -> list[str]:
    if mode_names is None:
        return [f"mode {k}" for k in range(n_modes)]
    if len(mode_names) < n_modes:
        raise ValueError(f"got {len(mode_names)} mode names for {n_modes} modes")
    return list(mode_names)


def _columns(X: Any) -> np.ndarray:
    """A series as a float array (n_steps, n_features)."""
    values = np.asarray(X, dtype=float)
    return values[:, None] if values.ndim == 1 else values


def _time(time: Any, n_steps: int) -> np.ndarray:
    """The time stamps of n_steps steps: ``time`` checked, or 0, 1, ..."""
    if time is None:
        return np.arange(n_steps)
    steps = np.asarray(time)
    if steps.shape != (n_steps,):
        raise ValueError(f"time must have one stamp per step ({n_steps},), got shape {steps.shape}")
    return steps


def _edges(steps: np.ndarray) -> np.ndarray:
    """Boundaries halfway between consecutive time stamps, and half a step beyond both ends."""
    if len(steps) == 1:
        return np.r_[steps - 0.5, steps + 0.5]
    half = (steps[1:] - steps[:-1]) / 2
    return np.concatenate([steps[:1] - half[:1], steps[:-1] + half, steps[-1:] + half[-1:]])


def _rows(value: Any, seqs: Sequences, sequence: int, dtype: type | None = float) -> np.ndarray:
    """One sequence's rows of per-step data given for all sequences, in the form ``X`` came in:
    a list with one array per sequence, or one array of all rows (a data frame's in its row order)."""
    if seqs.form == "list" and isinstance(value, list | tuple) and len(value) == seqs.n_sequences:
        return np.asarray(value[sequence], dtype=dtype)
    aligned = np.asarray(value, dtype=dtype)
    if len(aligned) != seqs.n_steps:
        raise ValueError(f"per-step data for {len(aligned)} steps, but the data have {seqs.n_steps}")
    if seqs.row_order is not None:  # a data frame's rows, in the order of its sequences and times
        aligned = aligned[seqs.row_order]
    return aligned[seqs.offsets[sequence] : seqs.offsets[sequence + 1]]
