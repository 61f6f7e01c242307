"""The ``modeshift`` command: fit models to CSV or Parquet files, then use them.

A session from data to answers::

    modeshift fit sensors.csv --model hmm --modes auto --restarts 3 -o model.msz   # live progress
    modeshift info model.msz                                # hyperparameters, parameters, modes
    modeshift segment model.msz sensors.csv -o segments.csv  # runs of one mode
    modeshift forecast model.msz sensors.csv --horizon 12    # predictive means and intervals
    modeshift simulate model.msz --steps 500 --seed 1 -o sim.csv
    modeshift score model.msz new.csv --json                 # log-likelihood (and BIC)
    modeshift fit prices.csv --model arhmm --order 2 -o ar.msz   # lag order: --order for every model
    modeshift fit events.csv --model chain --order 2 -o chain.msz   # an event log: case_id, activity, timestamp

Data files are in long format (:meth:`modeshift.Sequences.from_dataframe`): one row per
time step; an id column names the sequence of each row (``--id-column``, default ``id``
when there is one), a time column orders the rows of a sequence (``--time-column``), and
the values are the other columns or those given by ``--columns a,b``. The extension
chooses the reader: ``.csv``, or ``.parquet`` (needs pyarrow). Symbol data for ``--model chain``
are event logs, one row per event: ``--symbol-column`` (default ``activity``), ``--id-column``
(default ``case_id``, else ``id``, else one sequence) and ``--time-column`` (default ``timestamp``
when there is one).

Models are built by name (``--model``, the table :data:`MODELS`); once fitted they are used
by what they can do, not by their class: each command asks for a capability of
:mod:`modeshift.models.capabilities` (``segment`` a :class:`Segmenter`, ``forecast`` a
:class:`Forecaster`, ``simulate`` a :class:`Sampler`, ...) and reads files as the model's
``data_kind`` says (numbers, or symbols of an event log). A model that lacks the capability
gets a one-line error naming it. Fit statistics are the log-likelihood, or ``elbo`` for a
model whose objective is an evidence lower bound (never called a log-likelihood).

Every subcommand takes ``--json`` for machine-readable output on standard output; tables
go to ``-o FILE`` as CSV, else to standard output (CSV, or JSON records). Progress bars
go to standard error: the command draws them (:func:`modeshift.progress.live`), and the
model is verbose only while it fits, so the saved model is not. An error prints one line,
``error: ...``, to standard error and exits with status 1; ``modeshift --debug ...`` shows
the traceback instead.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from scipy.stats import norm

from modeshift import progress
from modeshift.archive import read_archive
from modeshift.data import Sequences, as_sequences
from modeshift.models import (
    ARHMM,
    HMM,
    LinearGaussianSSM,
    MarkovAutoregression,
    MarkovChain,
    MarkovRegression,
    Model,
    SwitchingLDS,
    load,
)
from modeshift.models.base import Forecast
from modeshift.models.capabilities import (
    BoundScorer,
    Describer,
    Forecaster,
    IterativeFit,
    Sampler,
    Scorer,
    Segmenter,
    Selectable,
    objective,
)

__all__ = ["app", "main"]

app = typer.Typer(
    help="Learn state-space models of sequences from CSV or Parquet files: fit, segment, forecast, simulate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
_debug = False  # set by the --debug option of every invocation


@app.callback()
def _global_options(
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an error.")] = False,
) -> None:
    global _debug
    _debug = debug


def main() -> None:
    """Entry point of the ``modeshift`` console script."""
    app(prog_name="modeshift")


def _command(function: Callable[..., None]) -> Callable[..., None]:
    """Register a subcommand whose errors end in one line on standard error (a traceback with --debug)."""

    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> None:
        try:
            function(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except Exception as error:
            if _debug:
                raise
            typer.echo(f"error: {_one_line(error)}", err=True)
            raise typer.Exit(1) from None

    return app.command()(run)


def _one_line(error: Exception) -> str:
    if isinstance(error, OSError) and error.filename is not None:
        text = f"{error.filename}: {error.strerror or error}"
    elif isinstance(error, (ValueError, OSError, ImportError)):
        text = str(error)
    else:
        text = f"{type(error).__name__}: {error} (run modeshift --debug ... for the traceback)"
    return " ".join(text.split()) or type(error).__name__


# ------------------------------------------------------------------------- options
DataPath = Annotated[Path, typer.Argument(help="CSV or Parquet file, one row per time step.", show_default=False)]
ModelPath = Annotated[Path, typer.Argument(help="Model file written by `modeshift fit`.", show_default=False)]
Columns = Annotated[
    str | None, typer.Option(help="Value columns, comma-separated (default: all but the id and time columns).")
]
IdColumn = Annotated[
    str | None, typer.Option(help="Column naming the sequence of each row (default: 'id' if there is one).")
]
TimeColumn = Annotated[str | None, typer.Option(help="Column that orders the rows of each sequence.")]
SymbolColumn = Annotated[str | None, typer.Option(help="chain: column of the symbols (default: 'activity').")]
TableOutput = Annotated[Path | None, typer.Option("--output", "-o", help="CSV file (default: standard output).")]
Json = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


# ---------------------------------------------------------------------------- data
def _read_data(
    path: Path, columns: str | None, id_column: str | None, time_column: str | None
) -> tuple[Sequences, list[str]]:
    """The sequences in a CSV or Parquet file, and the names of their value columns."""
    frame = _read_table(path)
    options: dict[str, Any] = {"time_column": time_column}
    if id_column is not None:
        options["id_column"] = id_column
    if columns is not None:
        options["value_columns"] = [name.strip() for name in columns.split(",") if name.strip()]
    seqs = Sequences.from_dataframe(frame, **options)
    names = options.get("value_columns") or [
        name for name in frame.columns if name not in {id_column or "id", time_column}
    ]
    return seqs, [str(name) for name in names]


def _read_table(path: Path) -> pd.DataFrame:
    readers = {".csv": pd.read_csv, ".parquet": pd.read_parquet, ".pq": pd.read_parquet}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise ValueError(f"{path}: unknown data format {path.suffix!r}; expected .csv or .parquet")
    return reader(path)


def _read_symbols(path: Path, symbol_column: str | None, id_column: str | None, time_column: str | None) -> Sequences:
    """The symbol sequences of an event log (the defaults are in the module docstring)."""
    frame = _read_table(path)
    if id_column is None:
        id_column = next((name for name in ("case_id", "id") if name in frame.columns), None)
    return as_sequences(
        frame,
        symbols=True,
        id_column=id_column,
        symbol_column=symbol_column or "activity",
        time_column=time_column or "timestamp",
    )


def _size(seqs: Sequences) -> dict[str, int]:
    return {"n_sequences": seqs.n_sequences, "n_steps": seqs.n_steps}


def _read_model_data(
    model: Model,
    path: Path,
    columns: str | None,
    id_column: str | None,
    time_column: str | None,
    symbol_column: str | None,
) -> Sequences:
    """The data of a file in the form ``model`` reads (its ``data_kind``): the sequences of an
    event log for a model of symbols or events, else values."""
    if model.data_kind != "real":
        return _read_symbols(path, symbol_column, id_column, time_column)
    if symbol_column is not None:
        symbolic = ", ".join(f"--model {name}" for name, (build, _) in MODELS.items() if build().data_kind != "real")
        raise ValueError(f"--symbol-column applies to models of symbols ({symbolic}), not to a {type(model).__name__}")
    return _read_data(path, columns, id_column, time_column)[0]


# -------------------------------------------------------------------- capabilities
def _require(model: Model, capability: type, purpose: str) -> None:
    """A one-line error unless ``model`` has ``capability`` (a protocol of :mod:`modeshift.models.capabilities`)."""
    if not isinstance(model, capability):
        members = (*vars(capability), *vars(capability).get("__annotations__", {}))
        missing = [name for name in members if not name.startswith("_") and getattr(model, name, None) is None]
        raise ValueError(
            f"a {type(model).__name__} cannot {purpose}: it is not a {capability.__name__} "
            f"(it has no {', '.join(missing)})"
        )


def _measure(model: Model) -> tuple[str, Callable[[Sequences], float]]:
    """The name and method of the model's measure of fit on data: its log-likelihood, or its
    ELBO where its objective is a bound (an ELBO is never called a log-likelihood)."""
    if isinstance(model, Scorer) and objective(model) != "ELBO":
        return "log_likelihood", model.score
    if isinstance(model, BoundScorer):
        return "elbo", model.elbo
    raise ValueError(
        f"a {type(model).__name__} cannot score data: it is neither a Scorer nor a BoundScorer "
        "(it has no score or elbo)"
    )


def _fit_statistics(model: Model, seqs: Sequences) -> dict[str, Any]:
    """The model's measure of fit on ``seqs`` and, for a :class:`Selectable` model, its BIC."""
    name, measure = _measure(model)
    statistics = {name: measure(seqs)}
    if isinstance(model, Selectable):
        statistics["bic"] = model.bic(seqs)
    return statistics


def _fit_showing_progress(model: Model, seqs: Sequences) -> None:
    """Fit ``model`` with its progress drawn on standard error.

    The bars are this command's: a model with a ``verbose`` hyper-parameter has it set only
    while it fits and then given back its own value, so the saved model does not draw.
    """
    own = model.get_params().get("verbose")
    if own is not None:
        model.set_params(verbose=True)
    try:
        with progress.live(Console(stderr=True)):
            model.fit(seqs)
    finally:
        if own is not None:
            model.set_params(verbose=own)


# -------------------------------------------------------------------------- models
def _markov_switching(order: int = 1, **options: Any) -> Model:
    """A Markov-switching autoregression of the given order; a switching regression (mean) for order 0."""
    return MarkovAutoregression(order=order, **options) if order else MarkovRegression(**options)


#: --model name -> (constructor, {command-line option: hyperparameter it sets}); the
#: hyper-parameters have their glossary names (docs/glossary.md): ``order`` is the lag order of
#: every model, ``n_iter`` the cap on EM iterations.
MODELS: dict[str, tuple[Callable[..., Model], dict[str, str]]] = {
    "hmm": (
        HMM,
        {
            "modes": "n_states",
            "max_modes": "max_states",
            "emission": "emission",
            "restarts": "n_restarts",
            "iterations": "n_iter",
            "seed": "random_state",
        },
    ),
    "arhmm": (
        ARHMM,
        {
            "modes": "n_states",
            "max_modes": "max_states",
            "order": "order",
            "restarts": "n_restarts",
            "iterations": "n_iter",
            "seed": "random_state",
        },
    ),
    "slds": (
        SwitchingLDS,
        {
            "modes": "n_states",
            "max_modes": "max_states",
            "state_dim": "state_dim",
            "restarts": "n_restarts",
            "iterations": "n_iter",
            "seed": "random_state",
        },
    ),
    "lds": (LinearGaussianSSM, {"state_dim": "state_dim", "iterations": "n_iter", "seed": "random_state"}),
    "markov-switching": (
        _markov_switching,
        {
            "modes": "n_states",
            "order": "order",
            "restarts": "n_restarts",
            "iterations": "n_iter",
            "seed": "random_state",
        },
    ),
    "chain": (MarkovChain, {"order": "order"}),
}


def _make_model(name: str, options: dict[str, Any]) -> Model:
    """The model named on the command line, with the options given (those left out keep its defaults)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    constructor, accepted = MODELS[name]
    given = {option: value for option, value in options.items() if value is not None}
    for option in given:
        if option not in accepted:
            flags = ", ".join("--" + known.replace("_", "-") for known in accepted)
            raise ValueError(f"--{option.replace('_', '-')} does not apply to --model {name} (it takes {flags})")
    if given.get("modes") == "auto" and "max_modes" not in accepted:
        raise ValueError(f"--model {name} cannot choose its number of modes: give --modes a number")
    return constructor(**{accepted[option]: value for option, value in given.items()})


def _modes(text: str | None) -> int | str | None:
    if text is None or text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"--modes must be a positive integer or 'auto', got {text!r}") from None


# -------------------------------------------------------------------------- output
def _flat(frame: pd.DataFrame) -> pd.DataFrame:
    """A table with its index (such as ``mode``) as the first column, unless it only numbers the rows."""
    if frame.index.name is None and isinstance(frame.index, pd.RangeIndex):
        return frame
    return frame.rename_axis(frame.index.name or "").reset_index()


def _plain(value: Any) -> Any:
    """``value`` in JSON's types: arrays as lists, frames as records, non-finite floats as null."""
    if isinstance(value, pd.DataFrame):
        return [_plain(row) for row in _flat(value).to_dict(orient="records")]
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(item) for item in value]
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def _text(value: Any) -> Text:
    """A short, literal rendering of a value (long arrays are summarised)."""
    if isinstance(value, (list, tuple, np.ndarray)):
        value = " ".join(np.array2string(np.asarray(value), precision=4, threshold=12, separator=", ").split())
    elif isinstance(value, (float, np.floating)):
        value = f"{value:.6g}"
    return Text(str(value))


def _table(frame: pd.DataFrame, title: str | None = None) -> Table:
    shown = _flat(frame)
    table = Table(title=title, title_justify="left")
    for column in shown.columns:
        table.add_column(str(column))
    for row in shown.itertuples(index=False):
        table.add_row(*(_text(cell) for cell in row))
    return table


def _emit(payload: dict[str, Any], as_json: bool) -> None:
    """A command's result: JSON, or one line per entry with tables for data frames."""
    if as_json:
        typer.echo(json.dumps(_plain(payload), allow_nan=False))
        return
    console = Console(highlight=False)
    for key, value in payload.items():
        if isinstance(value, pd.DataFrame):
            console.print(_table(value, title=key))
        elif isinstance(value, dict):
            console.print(Text(f"{key}:"))
            for name, item in value.items():
                console.print(Text(f"  {name}: ") + _text(item))
        else:
            console.print(Text(f"{key}: ") + _text(value))


def _write_table(frame: pd.DataFrame, output: Path | None, as_json: bool, what: str) -> None:
    """A table to ``output`` as CSV (and a summary to standard output), else to standard output."""
    if output is not None:
        frame.to_csv(output, index=False)
        _emit({"output": output, what: len(frame)}, as_json)
    elif as_json:
        typer.echo(json.dumps(_plain(frame), allow_nan=False))
    else:
        typer.echo(frame.to_csv(index=False), nl=False)


# ------------------------------------------------------------------------ commands
@_command
def fit(
    data: DataPath,
    model: Annotated[
        str, typer.Option("--model", "-m", help=f"One of: {', '.join(MODELS)}.", show_default=True)
    ] = "hmm",
    modes: Annotated[str | None, typer.Option(help="Number of modes, or 'auto' to choose it by BIC.")] = None,
    max_modes: Annotated[int | None, typer.Option(help="Largest number of modes tried by --modes auto.")] = None,
    emission: Annotated[str | None, typer.Option(help="hmm: gaussian, gmm, categorical or poisson.")] = None,
    order: Annotated[
        int | None,
        typer.Option(
            help="arhmm, markov-switching: autoregressive order (markov-switching 0: a switching mean); "
            "chain: symbols of context."
        ),
    ] = None,
    lags: Annotated[int | None, typer.Option(hidden=True, help="Deprecated: the old name of --order.")] = None,
    state_dim: Annotated[int | None, typer.Option(help="slds, lds: dimension of the continuous state.")] = None,
    restarts: Annotated[int | None, typer.Option(help="Fits from different starts; the best is kept.")] = None,
    iterations: Annotated[int | None, typer.Option(help="Most EM iterations per fit.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed, for reproducible fits.")] = None,
    columns: Columns = None,
    id_column: IdColumn = None,
    time_column: TimeColumn = None,
    symbol_column: SymbolColumn = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Model file to write.")] = Path("model.msz"),
    json_output: Json = False,
) -> None:
    """Fit a model to DATA and save it; the progress of every fit is shown on standard error.

    Prints the data's size, the log-likelihood (``elbo`` for a model fit by its evidence
    lower bound), the BIC where the model has one and, for an iterative fit, whether it
    converged and the number of iterations it ran (``n_iter``).
    """
    if lags is not None:
        typer.echo("warning: --lags is deprecated and goes in the next release; use --order", err=True)
        if order is not None and order != lags:
            raise ValueError(f"--lags is the old name of --order: got --order {order} and --lags {lags}")
        order = lags
    options = {
        "modes": _modes(modes),
        "max_modes": max_modes,
        "emission": emission,
        "order": order,
        "state_dim": state_dim,
        "restarts": restarts,
        "iterations": iterations,
        "seed": seed,
    }
    estimator = _make_model(model, options)
    seqs = _read_model_data(estimator, data, columns, id_column, time_column, symbol_column)
    _measure(estimator)  # a model that cannot be scored fails before its fit
    _fit_showing_progress(estimator, seqs)
    estimator.save(output)
    payload: dict[str, Any] = {
        "model": type(estimator).__name__,
        "output": output,
        **_size(seqs),
        **_fit_statistics(estimator, seqs),
    }
    if "n_states_" in estimator.__dict__:
        payload["n_states"] = estimator.n_states_
    if isinstance(estimator, IterativeFit):
        payload.update(converged=estimator.converged_, n_iter=estimator.n_iter_)
    if "selection_" in estimator.__dict__:
        payload["selection"] = estimator.selection_
    _emit(payload, json_output)


@_command
def segment(
    model_file: ModelPath,
    data: DataPath,
    output: TableOutput = None,
    columns: Columns = None,
    id_column: IdColumn = None,
    time_column: TimeColumn = None,
    json_output: Json = False,
) -> None:
    """Split DATA into runs of one mode on the most likely mode path: start, end (exclusive), mode, probability."""
    estimator = load(model_file)
    _require(estimator, Segmenter, "segment data into modes")
    seqs, _ = _read_data(data, columns, id_column, time_column)
    table = estimator.segment(seqs)
    if "sequence" in table.columns and seqs.ids is not None:
        table.insert(1, "id", [seqs.ids[s] for s in table["sequence"]])
    _write_table(table, output, json_output, "segments")


@_command
def forecast(
    model_file: ModelPath,
    data: DataPath,
    horizon: Annotated[int, typer.Option("--horizon", "-H", help="Steps to forecast after each sequence.")] = 1,
    level: Annotated[float, typer.Option(help="Probability of the central intervals.")] = 0.95,
    output: TableOutput = None,
    columns: Columns = None,
    id_column: IdColumn = None,
    time_column: TimeColumn = None,
    json_output: Json = False,
) -> None:
    """Forecast the HORIZON steps after the end of each sequence of DATA.

    One row per step (and sequence): for each value column the predictive mean, standard
    deviation and central interval mean +- z sd (exact for lds; for mode models, whose
    predictive law is a mixture, a normal approximation), then the probability of each mode
    (and, for categorical data, of each symbol).
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"--level must be between 0 and 1, got {level}")
    estimator = load(model_file)
    _require(estimator, Forecaster, "forecast")
    seqs, names = _read_data(data, columns, id_column, time_column)
    frames = []
    for s, part in enumerate(estimator.forecast(seqs, horizon=horizon).per_sequence()):
        frame = _forecast_frame(part, names, norm.ppf(0.5 + level / 2.0))
        if seqs.n_sequences > 1:
            frame.insert(0, "sequence", s)
            if seqs.ids is not None:
                frame.insert(1, "id", seqs.ids[s])
        frames.append(frame)
    _write_table(pd.concat(frames, ignore_index=True), output, json_output, "rows")


def _forecast_frame(result: Forecast, names: list[str], z: float) -> pd.DataFrame:
    """One sequence's forecast as a table: step, then per column mean, sd, lower, upper, then probabilities."""
    sd = np.sqrt(np.clip(np.diagonal(result.covariances, axis1=1, axis2=2), 0.0, None))
    table: dict[str, np.ndarray] = {"step": np.arange(1, len(result.means) + 1)}
    for d, name in enumerate(names):
        mean = result.means[:, d]
        table.update(
            {
                f"{name}_mean": mean,
                f"{name}_sd": sd[:, d],
                f"{name}_lower": mean - z * sd[:, d],
                f"{name}_upper": mean + z * sd[:, d],
            }
        )
    for label, probabilities in (("mode", result.mode_probabilities), ("symbol", result.symbol_probabilities)):
        if probabilities is not None:
            table.update({f"p_{label}{k}": probabilities[:, k] for k in range(probabilities.shape[1])})
    return pd.DataFrame(table)


@_command
def simulate(
    model_file: ModelPath,
    steps: Annotated[int, typer.Option("--steps", "-n", help="Number of time steps.")] = 100,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    output: TableOutput = None,
    json_output: Json = False,
) -> None:
    """Simulate one sequence from a model: observations y0.. (or symbols, which stop at the end of a
    sequence or after --steps), continuous states x0.. and modes."""
    estimator = load(model_file)
    _require(estimator, Sampler, "simulate")
    drawn = estimator.sample(n_steps=steps, random_state=seed)
    observations, *hidden = drawn if isinstance(drawn, tuple) else (drawn,)  # a model without modes: a path
    if estimator.data_kind == "real":
        values = np.asarray(observations, dtype=float).reshape(len(observations), -1)
        table: dict[str, Any] = {f"y{d}": column for d, column in enumerate(values.T)}
    else:
        table = {"symbol": list(observations)}
    for array in map(np.asarray, hidden):
        if array.ndim == 1:
            table["mode"] = array
        else:
            table.update({f"x{i}": column for i, column in enumerate(array.T)})
    _write_table(pd.DataFrame(table), output, json_output, "steps")


@_command
def score(
    model_file: ModelPath,
    data: DataPath,
    columns: Columns = None,
    id_column: IdColumn = None,
    time_column: TimeColumn = None,
    symbol_column: SymbolColumn = None,
    json_output: Json = False,
) -> None:
    """Log-likelihood of DATA under a model (``elbo``, its evidence lower bound, for a model fit by one),
    and BIC where defined."""
    estimator = load(model_file)
    seqs = _read_model_data(estimator, data, columns, id_column, time_column, symbol_column)
    _emit({"model": type(estimator).__name__, **_size(seqs), **_fit_statistics(estimator, seqs)}, json_output)


@_command
def info(model_file: ModelPath, json_output: Json = False) -> None:
    """What a model file holds: hyperparameters, fit results (with the objective ``history_`` records),
    learned parameters, a description of the modes and parameter estimates where the model has them."""
    metadata, arrays = read_archive(model_file)
    estimator = load(model_file)
    attributes = metadata.get("attributes", {})
    tables = {name: estimator.__dict__.get(name) for name in attributes}  # e.g. selection_: shown as a table
    tables = {name: value for name, value in tables.items() if isinstance(value, pd.DataFrame)}
    fit = {name: value for name, value in attributes.items() if name not in tables}
    if isinstance(estimator, IterativeFit):
        fit = {"objective": objective(estimator), **fit}
    payload: dict[str, Any] = {
        "model": type(estimator).__name__,
        "hyperparameters": metadata.get("hyperparameters", {}),
        "fit": fit,
        **{name.rstrip("_"): table for name, table in tables.items()},
        "parameters": arrays,
    }
    if isinstance(estimator, Describer):
        payload["description"] = estimator.describe()
    if hasattr(estimator, "summary"):
        payload["estimates"] = estimator.summary()
    _emit(payload, json_output)


@_command
def demo(
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory for the reports.")] = Path("modeshift-demo"),
    json_output: Json = False,
) -> None:
    """Fit switching models to bundled and simulated data, print what they found and write a report per case."""
    from modeshift.demo import run

    if not json_output:
        run(output)
        return
    with contextlib.redirect_stdout(sys.stderr):  # standard output is for the JSON alone
        summary = run(output)
    _emit({"output": output, "summary": summary}, as_json=True)


@_command
def report(
    model_file: ModelPath,
    data: DataPath,
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory to write the report to.")] = Path("report"),
    columns: Columns = None,
    id_column: IdColumn = None,
    time_column: TimeColumn = None,
    json_output: Json = False,
) -> None:
    """Write a model's report on DATA to a directory: one HTML page with its fit, parameters and figures."""
    from modeshift.report import write_report

    estimator = load(model_file)
    if estimator.data_kind != "real":
        raise ValueError(
            f"reports cover models of numeric series; a {type(estimator).__name__} models {estimator.data_kind}: "
            "use modeshift info"
        )
    seqs, _ = _read_data(data, columns, id_column, time_column)
    _emit({"output": write_report(estimator, seqs, output)}, json_output)
