"""A fitted model as one self-contained HTML page: what was fit, how well, what it found.

:func:`write_report` writes ``report.html`` into a directory, in the data's own words (its
column names, time stamps and time unit, see :class:`modeshift.plot.DataLabels`):

* the fit: log-likelihood (or the ELBO of a model with only a bound), number of parameters, AIC
  and BIC where the model has them, the table of candidates when BIC chose the number of modes;
* the modes (a model with ``describe()``): the share of the data in each, the long-run share,
  the mean dwell time in the data's time unit, switch probabilities or guards in the data's units;
* the sequences: each one's id, length, first and last time stamp and share of each mode;
* a parameter table (``summary()`` where the model has one, else its learned parameters);
* the figures of :func:`modeshift.plot.model_figures` as PNG data URIs, a panel per sequence;
* the model's settings (hyperparameters).

Numbers are written for people (``28.0 %``, ``1.5 × 10⁻⁷``, ``27.8 years``). The page has no
scripts and loads nothing, so it can be mailed or archived as one file. :func:`write_index`
links several reports from one page.

>>> import numpy as np
>>> from modeshift import HMM
>>> from modeshift.report import write_report
>>> X = np.r_[np.zeros(60), np.full(40, 4.0)] + np.random.default_rng(0).normal(size=100)
>>> model = HMM(n_states=2, random_state=0).fit(X)
>>> path = write_report(model, X, "hmm-report", title="Two levels", value_names=["level"])  # doctest: +SKIP
>>> path.name  # doctest: +SKIP
'report.html'
"""

from __future__ import annotations

import base64
import inspect
import io
from collections.abc import Mapping, Sequence
from html import escape
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from modeshift.data import Sequences
from modeshift.models.capabilities import (
    BoundScorer,
    Describer,
    IterativeFit,
    ModeDecoder,
    Scorer,
    Selectable,
)
from modeshift.plot import (
    DataLabels,
    Panel,
    chain_states,
    data_panels,
    format_number,
    format_share,
    frame_columns,
    model_figures,
    read_sequences,
    switching,
)
from modeshift.safe_write import write_atomically

__all__ = ["write_index", "write_report"]

#: Figures of a series show at most this many sequences unless ``sequences=`` picks them.
MAX_PANELS = 20
_MAX_LISTED = 12  # symbols named in the overview

_CAPTIONS = {
    "modes": "The series and its most likely mode",
    "probabilities": "Posterior mode probabilities",
    "automaton": "The learned automaton",
    "forecast": "Forecast with 50 % and 90 % predictive intervals",
    "trace": "Training objective per iteration",
}
_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; font-size: 0.85rem; }
th, td { border: 1px solid #ccc; padding: 0.2rem 0.5rem; text-align: right; vertical-align: top; }
th { background: #f3f3f3; }
table.matrix { margin: 0; font-size: inherit; }
table.matrix td { border: none; padding: 0 0.3rem; }
p.note { color: #555; font-size: 0.85rem; }
img { max-width: 100%; display: block; margin: 0.5rem 0 1.5rem; }
pre { background: #f6f6f6; padding: 0.5rem; white-space: pre-wrap; }
"""


def write_report(
    model: Any,
    X: Any,
    directory: str | PathLike[str],
    *,
    title: str | None = None,
    lengths: Sequence[int] | None = None,
    time: Any = None,
    mode_names: Sequence[str] | None = None,
    sequences: Sequence[int] | None = None,
    value_names: Sequence[str] | None = None,
    time_name: str | None = None,
    **extras: Any,
) -> Path:
    """Write ``directory/report.html`` about a fitted ``model`` and the data ``X`` it was fit to.

    ``X``, ``lengths`` and the ``extras`` by keyword (a data frame's ``id_column=``,
    ``time_column=``, ... and per-step data such as ``inputs=`` or ``exog=``) as for the model's
    ``fit``; ``time``, ``value_names`` and ``time_name`` label the data where it does not name
    itself (see :func:`~modeshift.plot.data_panels`); ``mode_names`` names the modes. The figures
    of a series show the ``sequences`` given (indices), by default all, or the first
    :data:`MAX_PANELS` of more. ``title`` heads the page (default: the model's class). The
    directory is created if needed and the file replaced atomically. Returns the path of the page.
    """
    title = title or f"{type(model).__name__} report"
    columns = frame_columns(extras)
    panels, labels = data_panels(
        model, X, lengths, time=time, value_names=value_names, time_name=time_name, **columns, **extras
    )
    seqs = read_sequences(model, X, lengths, columns, time)  # as the model's methods take it, with extras by keyword
    posteriors = _posteriors(model, panels)
    names = _names(model, posteriors, mode_names)
    sections = [f"<p>{escape(_overview(model, panels, labels))}</p>", "<h2>Fit</h2>", _fit(model, seqs, extras)]
    selection = getattr(model, "selection_", None)
    if isinstance(selection, pd.DataFrame):
        sections += ["<h2>Number of modes (BIC)</h2>", _selection(selection)]
    if isinstance(model, Describer):
        sections += ["<h2>Modes</h2>", *_modes(model, posteriors, names, labels)]
    if len(panels) > 1:
        ends = _ends(seqs) if time is None else None
        sections += ["<h2>Sequences</h2>", _sequences(panels, posteriors, names, labels, ends)]
    sections += ["<h2>Parameters</h2>", _parameters(model, seqs, extras)]
    shown = list(sequences) if sequences is not None else list(range(min(len(panels), MAX_PANELS)))
    if len(shown) < len(panels):
        sections.append(
            f'<p class="note">The figures show {len(shown)} of the {len(panels)} sequences; '
            "<code>write_report(..., sequences=[...])</code> chooses which.</p>"
        )
    figures = model_figures(
        model, X, lengths=lengths, time=time, mode_names=names, sequences=shown, value_names=value_names,
        time_name=time_name, **columns, **extras,
    )  # fmt: skip
    for name, figure in figures.items():
        sections += [f"<h2>{escape(_CAPTIONS.get(name, name))}</h2>", _image(figure, name)]
    sections += ["<h2>Settings</h2>", f"<pre>{escape(repr(model))}</pre>", _table(_settings(model), header=False)]
    return _write(Path(directory) / "report.html", title, sections)


def write_index(
    directory: str | PathLike[str], reports: Mapping[str, str | PathLike[str]], *, title: str, summary: str = ""
) -> Path:
    """Write ``directory/index.html``: ``summary`` as preformatted text, then a link to each report
    (``reports`` maps link text to a path relative to ``directory``). Returns the path of the page."""
    links = "".join(
        f'<li><a href="{escape(Path(target).as_posix())}">{escape(text)}</a></li>' for text, target in reports.items()
    )
    return _write(Path(directory) / "index.html", title, [f"<pre>{escape(summary)}</pre>", f"<ul>{links}</ul>"])


# ------------------------------------------------------------------------- sections
def _overview(model: Any, panels: Sequence[Panel], labels: DataLabels) -> str:
    """What was fit to what: the model, the data's size and names, the time stamps and their step."""
    n_steps = sum(len(panel.values) for panel in panels)
    size = f"{len(panels)} sequences, {n_steps} steps in all" if len(panels) > 1 else f"one sequence of {n_steps} steps"
    values = ", ".join(labels.value(d) for d in range(panels[0].values.shape[1]))
    if labels.symbols:
        shown = ", ".join(labels.symbols[:_MAX_LISTED]) + (", ..." if len(labels.symbols) > _MAX_LISTED else "")
        values = f"sequences of {len(labels.symbols)} symbols ({shown})"
    text = f"{type(model).__name__} fit to {values}: {size}."
    if labels.stamped:
        text += f" Time stamps: {labels.time}; a step lasts {labels.duration(1.0)}."
    return text


def _fit(model: Any, seqs: Sequences, extras: dict[str, Any]) -> str:
    """The objective (log-likelihood, or ELBO where only a bound exists), parameters, AIC, BIC and
    the record of an iterative fit, as far as the model has them."""
    rows: dict[str, str] = {}
    bound = isinstance(model, BoundScorer)
    if bound:
        rows["ELBO (a lower bound on the log-likelihood)"] = format_number(model.elbo(seqs, **extras), 6)
    elif isinstance(model, Scorer):
        rows["log-likelihood"] = format_number(model.score(seqs, **extras), 6)
    if isinstance(model, Selectable):
        suffix = " (from the ELBO: an upper bound)" if bound else ""
        rows["free parameters"] = format_number(model.n_parameters)
        rows[f"AIC{suffix}"] = format_number(model.aic(seqs, **extras), 6)
        rows[f"BIC{suffix}"] = format_number(model.bic(seqs, **extras), 6)
    if getattr(model, "n_states_", None) is not None:
        rows["modes"] = format_number(model.n_states_)
    if isinstance(model, IterativeFit):
        rows["iterations"] = format_number(model.n_iter_)
        rows["converged"] = format_number(bool(model.converged_))
    return _table(pd.DataFrame({"": pd.Series(rows, dtype=object)}), header=False)


def _selection(table: pd.DataFrame) -> str:
    """The candidates of a choice of the number of modes by BIC, the chosen one marked."""
    names = {"log_likelihood": "log-likelihood", "elbo": "ELBO", "n_parameters": "free parameters", "aic": "AIC"}
    frame = table.set_index("n_states").rename(columns=lambda name: names.get(name, name.replace("bic", "BIC")))
    frame.index.name = "modes"
    return _table(frame.map(lambda value: format_number(value, 6)))


def _modes(model: Any, posteriors: list[np.ndarray] | None, names: list[str], labels: DataLabels) -> list[str]:
    """The table of ``describe()`` in the data's units, with the share of the data in each mode."""
    described = model.describe()
    found = switching(model, labels) if isinstance(model, ModeDecoder) else None
    table: dict[str, list[Any]] = {}
    if posteriors is not None:
        table["share of the data"] = [format_share(share) for share in np.concatenate(posteriors).mean(axis=0)]
    for column, values in described.items():
        column = str(column)
        if column in ("entry_weights", "entry_biases"):
            continue  # shown as guards below
        if column == "occupancy":
            table["long-run share"] = [format_share(value) for value in values]
        elif column == "dwell_time":
            table["mean dwell"] = [labels.duration(float(value)) for value in values]
        elif column == "end":
            table["to the end"] = [format_share(value) for value in values]  # of the sequence
        elif column == "top_symbols":
            table["likeliest symbols"] = [", ".join(f"{s} {format_share(p)}" for s, p in top) for top in values]
        elif column.startswith("to_") and ".tvtp" not in column:  # to_{j}, to_{j}_at_zero_input: probabilities
            target, _, condition = column.removeprefix("to_").partition("_")
            heading = f"to {names[int(target)]}" + (f" ({condition.replace('_', ' ')})" if condition else "")
            table[heading] = [format_share(value) for value in values]
        else:
            table[column.removesuffix("_")] = list(values)
    if found is not None and found.guards:
        table["switches where"] = [
            "; ".join(f"to {names[j]}: {guard}" for (i, j), guard in sorted(found.guards.items()) if i == source)
            for source in range(len(described))
        ]
    frame = pd.DataFrame(table, index=pd.Index(names[: len(described)], name="mode"))
    sections = [_table(frame)]
    if posteriors is not None and "occupancy" in described:
        sections.append(
            '<p class="note">The share of the data is the expected fraction of the observed steps in each '
            "mode; the long-run share is the fraction the fitted chain would spend there if it ran for ever. "
            "They differ where a switch is rare or never reversed (a mode the chain leaves for good has a "
            "long-run share near 0 however long it lasted in the data).</p>"
        )
    return sections


def _sequences(
    panels: Sequence[Panel],
    posteriors: list[np.ndarray] | None,
    names: list[str],
    labels: DataLabels,
    ends: tuple[list[str], list[str]] | None,
) -> str:
    """A row per sequence: its id, length, first and last time stamp (``ends``, as the data wrote
    them, else as drawn), and its share of each mode."""
    table: dict[str, list[Any]] = {"steps": [len(panel.values) for panel in panels]}
    if labels.stamped:
        table["from"], table["to"] = ends or (
            [_stamp(panel.time[0]) for panel in panels],
            [_stamp(panel.time[-1]) for panel in panels],
        )
    if posteriors is not None:
        shares = np.array([posterior.mean(axis=0) for posterior in posteriors])
        table.update({names[k]: [format_share(share) for share in shares[:, k]] for k in range(shares.shape[1])})
    ids = [panel.title or f"sequence {i}" for i, panel in enumerate(panels)]
    return _table(pd.DataFrame(table, index=pd.Index(ids, name="sequence")))


def _parameters(model: Any, seqs: Sequences, extras: dict[str, Any]) -> str:
    """The model's ``summary()`` (estimates and standard errors) where it has one, else its learned
    parameters: those it names in ``parameter_names``, or its public fitted arrays."""
    summary = getattr(model, "summary", None)
    if callable(summary):
        needs_data = any(
            parameter.default is parameter.empty and parameter.kind is not parameter.VAR_KEYWORD
            for parameter in inspect.signature(summary).parameters.values()
        )
        result = summary(seqs, **extras) if needs_data else summary()
        frame = getattr(result, "parameters", result)  # a structural model's Summary holds the table
        return _table(frame.map(lambda value: format_number(value, 4)))
    states = chain_states(model)
    if states:
        return _transitions(model, states)
    names = getattr(model, "parameter_names", None) or [
        name
        for name, value in vars(model).items()
        if name.endswith("_") and not name.startswith("_") and isinstance(value, np.ndarray) and name != "history_"
    ]
    rows = {name.removesuffix("_"): getattr(model, name) for name in names if np.size(getattr(model, name))}
    frame = pd.DataFrame(
        {
            "value": pd.Series(rows, dtype=object),
            "shape": {k: " × ".join(map(str, np.shape(v))) for k, v in rows.items()},
        }
    )
    frame.index.name = "parameter"
    return _table(frame)


def _transitions(model: Any, states: list[str]) -> str:
    """A chain's next-symbol probabilities: a row per state (a symbol, or a context of several), a
    column per next symbol (the last of the state moved to), and the end of the sequence where
    the chain has one."""
    following = [str(state[-1]) if isinstance(state, tuple) else str(state) for state in model.states_]
    moves = pd.DataFrame(np.asarray(model.transmat_, dtype=float).T, index=following)
    table = moves.groupby(level=0, sort=False).sum().T.set_axis(states).add_prefix("then ")
    ends = getattr(model, "end_probability_", None)
    if ends is not None:  # transmat_ is conditional on the sequence going on
        table = table.mul(1.0 - np.asarray(ends, dtype=float), axis=0).assign(**{"then the end": ends})
    table.index.name = "after"
    return _table(table.map(format_share))


def _settings(model: Any) -> pd.DataFrame:
    """The hyperparameters, one row each."""
    return pd.DataFrame({"": pd.Series(model.get_params(), dtype=object)})


# ------------------------------------------------------------------------- data helpers
def _posteriors(model: Any, panels: Sequence[Panel]) -> list[np.ndarray] | None:
    """Each sequence's posterior mode probabilities (n_steps, K) (without the steps a model
    conditions on), or None for a model without modes."""
    if not isinstance(model, ModeDecoder):
        return None
    return [np.asarray(model.predict_proba(panel.data, **panel.extras), dtype=float) for panel in panels]


def _names(model: Any, posteriors: list[np.ndarray] | None, mode_names: Sequence[str] | None) -> list[str]:
    """``mode_names``, checked, or 'mode 0', 'mode 1', ..."""
    if posteriors is not None:
        n_modes = posteriors[0].shape[1]
    else:
        n_modes = len(model.describe()) if isinstance(model, Describer) else 0
    if mode_names is None:
        return [f"mode {k}" for k in range(n_modes)]
    if len(mode_names) < n_modes:
        raise ValueError(f"got {len(mode_names)} mode names for {n_modes} modes")
    return list(mode_names)


def _ends(seqs: Sequences) -> tuple[list[str], list[str]] | None:
    """Each sequence's first and last time stamps as the data wrote them ('1959Q2'), where the
    data layer kept how (``Sequences.schema.time``), else None."""
    axis = getattr(getattr(seqs, "schema", None), "time", None)
    if axis is None or seqs.times is None:
        return None
    written = [str(stamp) for stamp in axis.labels(seqs.times[np.r_[seqs.offsets[:-1], seqs.offsets[1:] - 1]])]
    return written[: seqs.n_sequences], written[seqs.n_sequences :]


def _stamp(value: Any) -> str:
    """A time stamp for people: a date (with the time of day where it has one), or a number."""
    if isinstance(value, np.datetime64):
        seconds = value.astype("datetime64[s]")
        return str(np.datetime_as_string(seconds, unit="D" if seconds == seconds.astype("datetime64[D]") else "m"))
    return format_number(value, 6)


# ------------------------------------------------------------------------- HTML
def _table(frame: pd.DataFrame, header: bool = True) -> str:
    """A data frame as an HTML table, every cell written for people (:func:`_cell`)."""
    rows = []
    if header:
        cells = "".join(f"<th>{escape(str(column))}</th>" for column in frame.columns)
        rows.append(f"<tr><th>{escape(str(frame.index.name or ''))}</th>{cells}</tr>")
    for label, row in frame.iterrows():
        rows.append(f"<tr><th>{escape(str(label))}</th>{''.join(f'<td>{_cell(value)}</td>' for value in row)}</tr>")
    return "<table>\n" + "\n".join(rows) + "\n</table>"


def _cell(value: Any) -> str:
    """HTML for one value: text escaped, numbers formatted, a vector as a list, a matrix as a small table."""
    if isinstance(value, str):
        return escape(value)
    if isinstance(value, dict):
        return "; ".join(f"{escape(str(key))}: {_cell(item)}" for key, item in value.items())
    if isinstance(value, np.ndarray | list | tuple):
        array = np.asarray(value)
        if array.dtype == object or array.dtype.kind in "USb":
            return escape(", ".join(map(str, value)))
        if array.size <= 1:
            return _cell(array.reshape(()).item()) if array.size else "–"
        if array.ndim <= 1:
            return ", ".join(_cell(item) for item in array)
        rows = array.reshape(-1, array.shape[-1])
        body = "".join("<tr>" + "".join(f"<td>{_cell(item)}</td>" for item in row) + "</tr>" for row in rows)
        return f'<table class="matrix">{body}</table>'
    if isinstance(value, complex | np.complexfloating):
        if value.imag == 0:
            return _cell(value.real)
        sign = "+" if value.imag > 0 else "-"
        return f"{format_number(value.real)} {sign} {format_number(abs(value.imag))}i"
    if isinstance(value, bool | np.bool_ | int | np.integer | float | np.floating):
        return format_number(value)
    return escape(str(value))


def _image(figure: Any, name: str) -> str:
    """An ``<img>`` holding the figure as a PNG data URI."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{escape(name)}" src="data:image/png;base64,{encoded}">'


def _write(path: Path, title: str, sections: Sequence[str]) -> Path:
    """Write an HTML page atomically: to a temporary file beside ``path``, then renamed over it."""
    body = "\n".join(sections)
    page = (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{escape(title)}</title>\n'
        f"<style>{_STYLE}</style>\n</head>\n<body>\n<h1>{escape(title)}</h1>\n{body}\n</body>\n</html>\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda file: file.write(page.encode("utf-8")))
    return path
