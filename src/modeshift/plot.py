"""Figures of fitted models: modes over time, the learned automaton, forecasts, training traces.

Each ``plot_*`` function draws one figure from plain arrays (or, for the automaton, a fitted
model) and returns the matplotlib ``Figure``; pass ``ax=`` to draw into axes of your own.
:func:`model_figures` makes the figures that suit a fitted model:

=================  ==============================================================  ============================
name               what it shows                                                   for a model that is
=================  ==============================================================  ============================
``modes``          the series over one coloured band per segment of the most       a ``ModeDecoder``: HMM,
                   likely mode path (:func:`plot_modes`)                           ARHMM, SwitchingLDS, ...
``probabilities``  p(mode at t | all data), stacked (:func:`plot_probabilities`)   the same
``automaton``      modes as nodes with their mean dwell time, switches as arrows   the same
                   with their probability or guard (:func:`plot_automaton`)
``forecast``       the series, the predictive mean and 50 % / 90 % intervals       a ``Forecaster`` without
                   (:func:`plot_forecast`)                                         modes (LinearGaussianSSM)
``trace``          the objective at each EM iteration (:func:`plot_trace`)         an ``IterativeFit``
=================  ==============================================================  ============================

The capabilities are those of :mod:`modeshift.models.capabilities`. :func:`plot_comparison`
draws a table of scores (one row per model) as grouped bars.

The figures are built without pyplot (a ``matplotlib.figure.Figure`` on the Agg canvas), so
none is opened in a window or kept alive behind your back: a notebook displays the returned
figure, ``figure.savefig("modes.png")`` writes it, and ``plot_modes(..., ax=ax)`` draws into
a figure made with ``plt.subplots()``. matplotlib is optional: ``pip install modeshift[plot]``.

>>> import numpy as np
>>> from modeshift import HMM
>>> from modeshift.plot import model_figures
>>> X = np.r_[np.zeros(60), np.full(40, 4.0)] + np.random.default_rng(0).normal(size=100)
>>> figures = model_figures(HMM(n_states=2, random_state=0).fit(X), X)
>>> sorted(figures)
['automaton', 'modes', 'probabilities', 'trace']
>>> figures["modes"].savefig("modes.png")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy.stats import norm

from modeshift.data import Sequences, as_sequences
from modeshift.metrics import segments
from modeshift.models.capabilities import Describer, Forecaster, IterativeFit, ModeDecoder, objective

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "model_figures",
    "plot_automaton",
    "plot_comparison",
    "plot_forecast",
    "plot_modes",
    "plot_probabilities",
    "plot_trace",
]

_WIDE = (8.0, 3.0)  # inches: the size of a figure of a series
_BAND_ALPHA = 0.25  # opacity of the mode bands behind a series
_BEND = 0.25  # curvature of the automaton's arrows: i -> j and j -> i bow to opposite sides


# ------------------------------------------------------------------------- figures
def plot_modes(
    X: Any,
    modes: Any,
    *,
    time: Any = None,
    mode_names: Sequence[str] | None = None,
    ax: Axes | None = None,
) -> Figure:
    """The series ``X`` (n_steps,) or (n_steps, n_features) over one band per run of a mode.

    ``modes`` (n_steps,) is a mode path, e.g. from ``predict``; each contiguous run of one
    mode (:func:`~modeshift.metrics.segments`) gets a band in that mode's colour, from half
    a step before its first step to half a step after its last. ``time`` stamps the steps
    (numbers or datetimes; default 0, 1, ...).
    """
    figure, ax = _axes(ax, _WIDE)
    from matplotlib.patches import Patch

    values, modes = _columns(X), np.asarray(modes)
    if len(modes) != len(values):
        raise ValueError(f"modes has {len(modes)} steps but X has {len(values)}")
    steps = _time(time, len(values))
    edges = _edges(steps)
    names = _mode_names(int(modes.max()) + 1, mode_names)
    colours = _palette(len(names))
    for start, end, mode in segments(modes)[["start", "end", "mode"]].itertuples(index=False):
        ax.axvspan(edges[start], edges[end], color=colours[mode], alpha=_BAND_ALPHA, linewidth=0)
    ax.plot(steps, values, color="black" if values.shape[1] == 1 else None, linewidth=1)
    ax.set_xlim(edges[0], edges[-1])
    _legend(ax, handles=[Patch(color=colours[k], alpha=_BAND_ALPHA, label=names[k]) for k in np.unique(modes)])
    return figure


def plot_probabilities(
    probabilities: Any,
    *,
    time: Any = None,
    mode_names: Sequence[str] | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Posterior mode probabilities (n_steps, K), e.g. from ``predict_proba``, stacked over time."""
    figure, ax = _axes(ax, _WIDE)
    probabilities = np.asarray(probabilities, dtype=float)
    steps = _time(time, len(probabilities))
    names = _mode_names(probabilities.shape[1], mode_names)
    ax.stackplot(steps, probabilities.T, colors=_palette(len(names)), labels=names, linewidth=0)
    ax.set(xlim=(steps[0], steps[-1]), ylim=(0.0, 1.0), ylabel="probability")
    _legend(ax)
    return figure


def plot_automaton(
    model: Any,
    *,
    threshold: float = 0.01,
    mode_names: Sequence[str] | None = None,
    ax: Axes | None = None,
) -> Figure:
    """The learned switching structure of a fitted mode model as a graph.

    Each mode is a node labelled with its mean dwell time in steps. An arrow i -> j is
    labelled with the per-step switch probability p(z_t = j | z_t-1 = i) and drawn where
    that is at least ``threshold``. Where switching depends on the continuous state x
    (``SwitchingLDS(recurrent=True)``; dwell times are then the mean run lengths of its
    decoded paths) or on inputs u (``HMM``/``ARHMM`` with ``input_dim > 0``; probabilities
    are then those at u = 0), every arrow is drawn and labelled with its guard from
    ``describe()``: the region of x or u where switching from i to j is more likely than staying.
    """
    dwell, switches, guards = _switching(model)
    n_modes = len(dwell)
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
        ax.text(*centre, f"{names[k]}\n{_dwell_text(dwell[k])}", ha="center", va="center", fontsize=8)
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
            probability = None if switches is None else f"{switches[i, j]:.2g}" + (" at u = 0" if guards else "")
            label = "\n".join(text for text in (probability, guards.get((i, j))) if text)
            dx, dy = centres[j] - centres[i]
            middle = (centres[i] + centres[j]) / 2 + 0.5 * _BEND * np.array([dy, -dx])  # the arc's midpoint
            ax.text(*middle, label, ha="center", va="center", fontsize=7, bbox={"facecolor": "white", "lw": 0})
    arrows = "where switching beats staying" if guards else "switch probability per step"
    ax.set_title(f"nodes: mean dwell time; arrows: {arrows}", fontsize=8, color="0.3")
    ax.set(xlim=(low[0], high[0]), ylim=(low[1], high[1]), aspect="equal")
    ax.axis("off")
    return figure


def plot_forecast(
    history: Any,
    means: Any,
    covariances: Any,
    *,
    time: Any = None,
    levels: Sequence[float] = (0.5, 0.9),
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
    history, means = _columns(history), _columns(means)
    spread = np.asarray(covariances, dtype=float)
    variances = np.diagonal(spread, axis1=1, axis2=2) if spread.ndim == 3 else spread.reshape(means.shape)
    past = _time(time, len(history))
    step = past[-1] - past[-2] if len(past) > 1 else 1
    fan = np.concatenate([past[-1:], past[-1] + step * np.arange(1, len(means) + 1)])
    for d, colour in enumerate(_palette(history.shape[1])):
        first = d == 0  # one legend entry per kind of line
        ax.plot(past, history[:, d], color=colour, linewidth=1, label="observed" if first else None)
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
    sequence: int = 0,
    horizon: int | None = None,
    **extras: Any,
) -> dict[str, Figure]:
    """The figures that suit a fitted model, by name (see the table at the top of the module).

    Series figures show one sequence of ``X`` (the ``sequence``-th of several; ``lengths`` as
    for the model's ``fit``). ``extras`` are the per-step data the model's methods take by
    keyword (``inputs=`` of an input-driven HMM, ``exog=`` of a Markov-switching regression),
    given for all sequences like ``X``: one array of all rows, or a list with one array per
    sequence. ``time`` stamps the steps (default: a data frame's time column, else 0, 1, ...).
    A forecast looks ``horizon`` steps ahead (default a tenth of the sequence).
    """
    values, steps, extras = _one_sequence(model, X, lengths, time, sequence, extras)
    figures: dict[str, Figure] = {}
    if isinstance(model, ModeDecoder):
        path = model.predict(values, **extras)
        skipped = len(values) - len(path)  # models that condition on their first `order` steps
        shown = steps[skipped:]
        figures["modes"] = plot_modes(values[skipped:], path, time=shown, mode_names=mode_names)
        probabilities = model.predict_proba(values, **extras)
        figures["probabilities"] = plot_probabilities(probabilities, time=shown, mode_names=mode_names)
        figures["automaton"] = plot_automaton(model, mode_names=mode_names)
    elif isinstance(model, Forecaster) and not extras:  # the future inputs are unknown
        ahead = horizon or max(1, len(values) // 10)
        figures["forecast"] = plot_forecast(values, *model.forecast(values, ahead), time=steps)
    if isinstance(model, IterativeFit) and model.history_:
        figures["trace"] = plot_trace(model.history_, label=objective(model))
    return figures


# ------------------------------------------------------------------------- helpers
def _axes(ax: Axes | None, size: tuple[float, float]) -> tuple[Figure, Axes]:
    """``ax`` and its figure, or a new pyplot-free figure on the Agg canvas with one axes."""
    if ax is not None:
        return ax.figure, ax
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError("modeshift.plot needs matplotlib: pip install modeshift[plot]") from error
    figure = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


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


def _one_sequence(
    model: Any, X: Any, lengths: Any, time: Any, sequence: int, extras: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Values, time stamps and per-step extras of one sequence of the data (with the inputs of
    a data frame's input columns, for a model that takes inputs)."""
    seqs = as_sequences(X, lengths)
    if not 0 <= sequence < seqs.n_sequences:
        raise ValueError(f"sequence must be in 0 .. {seqs.n_sequences - 1}, got {sequence}")
    rows = slice(seqs.offsets[sequence], seqs.offsets[sequence + 1])
    if time is None and seqs.times is not None:
        time = seqs.times[rows]
    chosen = {name: _rows(value, seqs, sequence) for name, value in extras.items()}
    if "inputs" not in chosen and seqs.inputs is not None and getattr(model, "input_dim", 0):
        chosen["inputs"] = seqs.inputs[rows]
    return seqs.values[rows], _time(time, rows.stop - rows.start), chosen


def _rows(value: Any, seqs: Sequences, sequence: int) -> np.ndarray:
    """One sequence's rows of per-step data given for all sequences, in the form ``X`` came in."""
    if seqs.form == "list":
        return np.asarray(value[sequence], dtype=float)
    aligned = np.asarray(value, dtype=float)
    if seqs.row_order is not None:  # a data frame's rows, in the order of its sequences and times
        aligned = aligned[seqs.row_order]
    return aligned[seqs.offsets[sequence] : seqs.offsets[sequence + 1]]


def _switching(model: Any) -> tuple[np.ndarray, np.ndarray | None, dict[tuple[int, int], str]]:
    """Mean dwell times (K,), per-step switch probabilities (K, K) (None where they depend on
    the state) and the guard of each arrow (empty without guards)."""
    table = model.describe() if isinstance(model, Describer) else pd.DataFrame()
    if "entry_weights" in table:  # recurrent SLDS: describe() gives the guard of entering each mode
        guards = {
            (i, j): _inequality(weights, table["entry_biases"][j][i], "x")
            for j, entries in table["entry_weights"].items()
            for i, weights in entries.items()
        }
        return table["dwell_time"].to_numpy(dtype=float), None, guards
    if "input_weights" in table:  # input-driven chain: p(j | i, u) = softmax_j(r_ij + w_j . u)
        n_modes = len(table)
        switches = table[[f"to_{j}_at_zero_input" for j in range(n_modes)]].to_numpy(dtype=float)
        weights = np.stack(table["input_weights"].to_list())
        guards = {
            (i, j): _inequality(weights[j] - weights[i], np.log(switches[i, j] / switches[i, i]), "u")
            for i in range(n_modes)
            for j in range(n_modes)
            if i != j
        }
    else:
        switches, guards = np.asarray(model.transmat_, dtype=float), {}
    with np.errstate(divide="ignore"):
        return 1.0 / (1.0 - np.diag(switches)), switches, guards


def _inequality(weights: Any, bias: float, symbol: str) -> str:
    """The half-space w . v + bias > 0 as text: 'x > 1.9' in one variable, else written out."""
    weights = np.atleast_1d(np.asarray(weights, dtype=float))
    names = [symbol] if weights.size == 1 else [f"{symbol}{d}" for d in range(weights.size)]
    used = np.flatnonzero(weights != 0)
    if used.size == 0:
        return "always" if bias > 0 else "never"
    if used.size == 1:
        (d,) = used
        return f"{names[d]} {'>' if weights[d] > 0 else '<'} {-bias / weights[d] + 0.0:.3g}"  # + 0.0: no "-0"
    terms = " ".join(f"{weights[d]:+.2g} {names[d]}" for d in used).lstrip("+")
    return f"{terms} > {-bias + 0.0:.3g}"


def _dwell_text(steps: float) -> str:
    if np.isnan(steps):  # a recurrent SLDS's mode that no decoded path visits, or one set by hand
        return "dwell n/a"
    return "absorbing" if np.isinf(steps) else f"{steps:.3g} steps"
