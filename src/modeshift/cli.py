"""The ``modeshift`` command: fit models to CSV, TSV or Parquet files, then use them.

A session from data to answers::

    modeshift fit sunspots.csv --model hmm --modes auto -o model.msz   # 'YEAR' is read as time
    modeshift info model.msz                                # hyperparameters, parameters, schema
    modeshift segment model.msz sunspots.csv -o runs.csv    # runs of one mode, with start and end years
    modeshift forecast model.msz sunspots.csv --horizon 12  # future years, means and intervals
    modeshift simulate model.msz --steps 500 --seed 1 -o sim.csv   # columns named as in the file
    modeshift score model.msz new.csv --json                # log-likelihood (and BIC)
    modeshift fit rgnp.csv --model markov-switching --order 4 --no-switching-ar -o hamilton.msz
    modeshift fit events.csv --model chain --order 2 -o chain.msz   # an event log: case_id, activity, timestamp
    modeshift next chain.msz "register request" -k 3        # the likeliest next symbols
    tail -f sensor.csv | modeshift filter model.msz -       # mode probabilities of each row as it arrives

Data files are in long format (:meth:`modeshift.Sequences.from_dataframe`): one row per
time step; an id column names the sequence of each row (``--id-column``, default ``id``
when there is one), a time column orders the rows of a sequence (``--time-column``), and
the values are the other columns or those given by ``--columns a,b``. Time stamps are
numbers, ISO dates or datetimes, or periods (``1959Q2``, ``1959-03``); a column that looks
like time (named ``year``, ``date``, ``time``, ..., or holding dates) is never modelled
unless ``--columns`` names it, and without ``--time-column`` it is taken as the time column,
with a warning saying so (:func:`modeshift.data.time_like_columns`). The extension chooses
the reader: ``.csv``, ``.tsv`` or ``.parquet`` (needs pyarrow). Symbol models read event
logs, one row per event: ``--symbol-column`` (default ``activity``), ``--id-column``
(default ``case_id``, else ``id``, else one sequence) and ``--time-column`` (default
``timestamp`` when there is one).

The model file keeps the schema of the data it was fit on (:class:`modeshift.data.Schema`:
columns, id and time columns, the time axis), so later commands need no column flags:
new data are read the same way (a missing column is an error naming it) and results carry
the file's names and time stamps: segments their ``start_time`` and ``end_time``,
forecasts the future stamps of the time axis' frequency, simulations the value columns'
names.

Models are built by name (``--model``, the table :data:`MODELS`); once fitted they are used
by what they can do, not by their class: each command asks for a capability of
:mod:`modeshift.models.capabilities` (``segment`` a :class:`Segmenter`, ``forecast`` a
:class:`Forecaster`, ``simulate`` a :class:`Sampler`, ``next`` a :class:`NextElementModel`,
...) and reads files as the model's ``data_kind`` says (numbers, or symbols of an event
log). A model that lacks the capability gets a one-line error naming it. Fit statistics are
the log-likelihood, or ``elbo`` for a model whose objective is an evidence lower bound
(never called a log-likelihood).

Every subcommand takes ``--json`` for machine-readable output on standard output; tables
go to ``-o FILE`` as CSV, else to standard output (CSV, or JSON records). Progress bars,
warnings (``warning: ...``) and notes go to standard error. A fit without ``--seed`` draws
one and prints it, so the run can be repeated. An error prints one line, ``error: ...``, to
standard error and exits with status 1; ``--debug`` (anywhere on the line) shows the
traceback instead. An output (``-o``) is checked before any work: it may not be an input of
the same command, a directory or special file, or in a missing or read-only directory, and it
is written atomically (:mod:`modeshift.safe_write`). The first run compiles the numerical
kernels (cached afterwards) and says so.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import json
import math
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from scipy.stats import norm

from modeshift import distributed, progress
from modeshift.archive import read_archive
from modeshift.data import Sequences, naming_file, read_table
from modeshift.feed import Feed, FeedColumns, RowError, Writer
from modeshift.models import (
    ARHMM,
    HMM,
    LinearGaussianSSM,
    MarkovAutoregression,
    MarkovChain,
    MarkovChainMixture,
    MarkovJumpProcess,
    MarkovRegression,
    Model,
    SwitchingLDS,
    SymbolHMM,
    VariableOrderChain,
    load,
)
from modeshift.models.base import Forecast
from modeshift.models.capabilities import (
    BoundScorer,
    Describer,
    Forecaster,
    IterativeFit,
    NextElementModel,
    OnlineLearner,
    Sampler,
    Scorer,
    Segmenter,
    Selectable,
    Streaming,
    objective,
)
from modeshift.models.selection import select_n_states
from modeshift.safe_write import check_output, write_atomically

__all__ = ["MODELS", "app", "main"]

app = typer.Typer(
    help="Learn state-space models of sequences from CSV, TSV or Parquet files: fit, segment, forecast, simulate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
_debug = False  # set by the --debug option of every invocation


def _version(shown: bool) -> None:
    if shown:
        import importlib.metadata  # here: --version alone needs it

        typer.echo(f"modeshift {importlib.metadata.version('modeshift')}")
        raise typer.Exit()


@app.callback()
def _global_options(
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an error (accepted anywhere).")] = False,
    version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit.", is_eager=True, callback=_version)
    ] = False,
) -> None:
    global _debug
    _debug = debug


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``modeshift`` console script; ``--debug`` may come anywhere on the line."""
    args = list(sys.argv[1:] if args is None else args)
    if "--debug" in args:
        args = ["--debug", *(arg for arg in args if arg != "--debug")]
    app(args=args, prog_name="modeshift")


def _command(function: Callable[..., None]) -> Callable[..., None]:
    """Register a subcommand whose errors end in one line on standard error (a traceback with
    --debug) and whose warnings are lines ``warning: ...`` on standard error."""

    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("default")
                warnings.filterwarnings("ignore", category=DeprecationWarning)
                warnings.showwarning = _show_warning
                function(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except Exception as error:
            if _debug:
                raise
            typer.echo(f"error: {_one_line(error)}", err=True)
            raise typer.Exit(1) from None

    return app.command(function.__name__.rstrip("_").replace("_", "-"))(run)


def _show_warning(message: Warning | str, *args: Any, **kwargs: Any) -> None:
    typer.echo(f"warning: {' '.join(str(message).split())}", err=True)


def _note(text: str) -> None:
    typer.echo(f"note: {text}", err=True)


def _one_line(error: Exception) -> str:
    if isinstance(error, OSError) and error.filename is not None:
        text = f"{error.filename}: {error.strerror or error}"
    elif isinstance(error, (ValueError, OSError, ImportError)):
        text = str(error)
    else:
        text = f"{type(error).__name__}: {error} (run modeshift --debug ... for the traceback)"
    return " ".join(text.split()) or type(error).__name__


def _announce_compilation() -> None:
    """Say so when the numerical kernels have never been compiled (their numba cache is empty)."""
    from modeshift._kernels import hmm as kernels

    dispatcher = next(value for value in vars(kernels).values() if hasattr(value, "_cache"))
    cache = Path(dispatcher._cache.cache_path)
    if not any(cache.glob("*.nbi")):
        _note("compiling numerical kernels, first run only (cached afterwards; about a minute)")


# ------------------------------------------------------------------------- options
DataPath = Annotated[Path, typer.Argument(help="CSV, TSV or Parquet file, one row per time step.", show_default=False)]
ModelPath = Annotated[Path, typer.Argument(help="Model file written by `modeshift fit`.", show_default=False)]
Columns = Annotated[
    str | None,
    typer.Option(
        help="Value columns, comma-separated (default: fit: all but the id and time columns "
        "and columns that look like time; later commands: the model's)."
    ),
]
IdColumn = Annotated[
    str | None,
    typer.Option(help="Column naming the sequence of each row (default: the model's; 'id' if there is one)."),
]
TimeColumn = Annotated[
    str | None,
    typer.Option(
        help="Column of time stamps that orders each sequence: numbers, ISO dates, periods such as 1959Q2 "
        "(default: the model's; the one column that looks like time)."
    ),
]
SymbolColumn = Annotated[
    str | None, typer.Option(help="Symbol models: column of the symbols (default: the model's; 'activity').")
]
TableOutput = Annotated[Path | None, typer.Option("--output", "-o", help="CSV file (default: standard output).")]
Json = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
Scheduler = Annotated[
    str | None,
    typer.Option(help="Run on the Dask cluster of this scheduler (tcp://host:8786); DATA: Parquet or CSV."),
]
Workers = Annotated[int | None, typer.Option(help="Run on a local Dask cluster of this many worker processes.")]


# ---------------------------------------------------------------------------- data
def _read(
    path: Path,
    model: Model,
    columns: str | None = None,
    id_column: str | None = None,
    time_column: str | None = None,
    symbol_column: str | None = None,
) -> Sequences:
    """The sequences of a file as ``model`` reads them: with its schema once fitted (flags
    given override it), else by the flags and the defaults of the module docstring."""
    symbolic = model.data_kind != "real"
    if symbol_column is not None and not symbolic:
        names = ", ".join(f"--model {name}" for name, (build, _) in MODELS.items() if build().data_kind != "real")
        raise ValueError(f"--symbol-column applies to models of symbols ({names}), not to a {type(model).__name__}")
    names = None if columns is None else [name.strip() for name in columns.split(",") if name.strip()]
    frame = read_table(path)
    with naming_file(path), _naming_warnings(path):
        schema = model.__dict__.get("schema_")
        if schema is not None:
            overrides = {"id_column": id_column, "time_column": time_column, "columns": names}
            return schema.read(frame, **overrides, symbol_column=symbol_column)
        if symbolic:
            if id_column is None:
                id_column = next((name for name in ("case_id", "id") if name in frame.columns), None)
            if time_column is None and "timestamp" in frame.columns:
                time_column = "timestamp"
            return Sequences.from_event_log(
                frame, id_column=id_column, symbol_column=symbol_column or "activity", time_column=time_column
            )
        options: dict[str, Any] = {"time_column": time_column or "auto", "columns": names}
        if model.get_params().get("emission") == "categorical":  # labels of any kind, coded 0, 1, ...
            options["categories"] = True
        if id_column is not None:
            options["id_column"] = id_column
        return Sequences.from_dataframe(frame, **options)


@contextlib.contextmanager
def _naming_warnings(path: Path) -> Iterator[None]:
    """Warnings raised inside, re-issued with the file's name in front."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for warning in caught:
        warnings.warn_explicit(f"{path}: {warning.message}", warning.category, warning.filename, warning.lineno)


def _size(seqs: Sequences) -> dict[str, int]:
    return {"n_sequences": seqs.n_sequences, "n_steps": seqs.n_steps}


def _time_labels(seqs: Sequences, rows: np.ndarray) -> list[Any]:
    """The time stamps of ``rows`` of ``seqs`` as the file wrote them."""
    return seqs.schema.time_labels(seqs.times[rows])


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


def _choose_modes(model: Model, seqs: Sequences, max_modes: int) -> tuple[Model, pd.DataFrame]:
    """For a model with ``n_states`` and a BIC but no selection of its own: fit 1 .. ``max_modes``
    modes, keep the smallest BIC (:func:`~modeshift.models.selection.select_n_states`)."""
    params = model.get_params()
    with progress.live(Console(stderr=True)):
        return select_n_states(
            lambda k: type(model)(**{**params, "n_states": k, "verbose": True}), seqs, None, max_modes
        )


# -------------------------------------------------------------------------- models
def _markov_switching(order: int = 1, switching_ar: bool | None = None, **options: Any) -> Model:
    """A Markov-switching autoregression of the given order; a switching regression (mean) for order 0."""
    if order == 0:
        if switching_ar is not None:
            raise ValueError("--switching-ar applies to markov-switching with --order 1 or more")
        return MarkovRegression(**options)
    return MarkovAutoregression(
        order=order, **({} if switching_ar is None else {"switching_ar": switching_ar}), **options
    )


_EM = {"restarts": "n_restarts", "iterations": "n_iter", "seed": "random_state"}
_BY_COMMAND = ""  # an option the command handles itself, not a hyper-parameter

#: --model name -> (constructor, {command-line option: hyperparameter it sets}); the
#: hyper-parameters have their glossary names (docs/glossary.md): ``order`` is the lag order of
#: every model, ``n_iter`` the cap on EM iterations.
MODELS: dict[str, tuple[Callable[..., Model], dict[str, str]]] = {
    "hmm": (HMM, {"modes": "n_states", "max_modes": "max_states", "emission": "emission", **_EM}),
    "arhmm": (ARHMM, {"modes": "n_states", "max_modes": "max_states", "order": "order", **_EM}),
    "slds": (SwitchingLDS, {"modes": "n_states", "max_modes": "max_states", "state_dim": "state_dim", **_EM}),
    "lds": (LinearGaussianSSM, {"state_dim": "state_dim", "iterations": "n_iter", "seed": "random_state"}),
    "markov-switching": (
        _markov_switching,
        {
            "modes": "n_states",
            "max_modes": _BY_COMMAND,  # --modes auto: _choose_modes
            "order": "order",
            "switching_ar": "switching_ar",
            "switching_variance": "switching_variance",
            **_EM,
        },
    ),
    "chain": (MarkovChain, {"order": "order", "unknown": "unknown"}),
    "variable-order": (VariableOrderChain, {"order": "max_order", "unknown": "unknown"}),
    "symbol-hmm": (SymbolHMM, {"modes": "n_states", "max_modes": _BY_COMMAND, "unknown": "unknown", **_EM}),
    "chain-mixture": (MarkovChainMixture, {"modes": "n_components", **_EM}),
    "jump-process": (
        MarkovJumpProcess,
        {"observation": "observation", "iterations": "n_iter", "seed": "random_state"},
    ),
}
_MAX_MODES = 4  # --modes auto's largest candidate for models without a max_states of their own


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
    chosen_by_command = accepted.get("max_modes") == _BY_COMMAND and given.get("modes") == "auto"
    hyperparameters = {
        accepted[option]: value
        for option, value in given.items()
        if accepted[option] and not (chosen_by_command and option == "modes")
    }
    return constructor(**hyperparameters)


def _modes(text: str | None) -> int | str | None:
    if text is None or text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"--modes must be a positive integer or 'auto', got {text!r}") from None


def _fit_for_the_data(model: Model, state_dim: int | None, seqs: Sequences) -> None:
    """Defaults that depend on the data: without --state-dim, a continuous state no larger than
    the data's value columns (a SwitchingLDS starts from their principal components)."""
    default = model.get_params().get("state_dim")
    if state_dim is None and default is not None and default > seqs.n_features:
        model.set_params(state_dim=seqs.n_features)
        _note(f"--state-dim {seqs.n_features}: the data have {seqs.n_features} value column(s)")


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


def _check_output(output: Path | None, *inputs: Path, directory: bool = False) -> None:
    """Refuse, before any work, an output that would replace an input of the command, a special
    file, or one whose directory is missing or not writable (see :mod:`modeshift.safe_write`)."""
    if output is not None:
        check_output(output, inputs, directory=directory)


def _write_table(frame: pd.DataFrame, output: Path | None, as_json: bool, what: str, inputs: tuple[Path, ...]) -> None:
    """A table to ``output`` as CSV (and a summary to standard output), else to standard output;
    never over one of the command's ``inputs``."""
    if output is not None:
        write_atomically(output, lambda file: file.write(frame.to_csv(index=False).encode("utf-8")), inputs)
        _emit({"output": output, what: len(frame)}, as_json)
    elif as_json:
        typer.echo(json.dumps(_plain(frame), allow_nan=False))
    else:
        typer.echo(frame.to_csv(index=False), nl=False)


def _on_cluster(
    scheduler: str | None, workers: int | None, columns: str | None, id_column: str | None, time_column: str | None
) -> dict[str, Any]:
    """The keywords of ``modeshift.distributed``'s ``*_dataset`` functions from the options of a command."""
    names = None if columns is None else [name.strip() for name in columns.split(",") if name.strip()]
    return {
        "scheduler": scheduler,
        "workers": workers,
        "columns": names,
        "id_column": id_column,
        "time_column": time_column,
    }


def _seed(seed: int | None) -> int:
    """The seed given, or a fresh one (printed by the command, so the run can be repeated)."""
    return int(np.random.SeedSequence().entropy % 2**31) if seed is None else seed


# ------------------------------------------------------------------------ commands
_DEFAULTS = "(default: the model's: hmm 2, symbol-hmm 4, chain-mixture 2)"


@_command
def fit(
    data: DataPath,
    model: Annotated[str, typer.Option("--model", "-m", help=f"One of: {', '.join(MODELS)}.")] = "hmm",
    modes: Annotated[
        str | None, typer.Option(help=f"Number of modes (components), or 'auto' to choose it by BIC {_DEFAULTS}.")
    ] = None,
    max_modes: Annotated[
        int | None,
        typer.Option(
            help=f"Largest number of modes tried by --modes auto (default: hmm, arhmm, slds 10; {_MAX_MODES})."
        ),
    ] = None,
    emission: Annotated[
        str | None, typer.Option(help="hmm: gaussian, gmm, categorical or poisson (default: gaussian).")
    ] = None,
    order: Annotated[
        int | None,
        typer.Option(
            help="arhmm, markov-switching: autoregressive order (markov-switching 0: a switching mean); "
            "chain: symbols of context; variable-order: the longest context (default: 1; variable-order 3)."
        ),
    ] = None,
    lags: Annotated[int | None, typer.Option(hidden=True, help="Deprecated: the old name of --order.")] = None,
    switching_ar: Annotated[
        bool | None,
        typer.Option(
            "--switching-ar/--no-switching-ar",
            help="markov-switching: autoregressive coefficients switch with the mode (default: switching).",
            show_default=False,
        ),
    ] = None,
    switching_variance: Annotated[
        bool | None,
        typer.Option(
            "--switching-variance/--no-switching-variance",
            help="markov-switching: the noise variance switches with the mode (default: shared).",
            show_default=False,
        ),
    ] = None,
    state_dim: Annotated[
        int | None,
        typer.Option(
            help="slds, lds: dimension of the continuous state (default: lds 1; slds 2, at most the columns)."
        ),
    ] = None,
    observation: Annotated[
        str | None, typer.Option(help="jump-process: 'snapshots' or complete 'paths' (default: snapshots).")
    ] = None,
    unknown: Annotated[
        str | None,
        typer.Option(
            help="Symbol models: symbols outside the vocabulary later: error, ignore or map (default: error)."
        ),
    ] = None,
    restarts: Annotated[
        int | None, typer.Option(help="Fits from different starts; the best is kept (default: the model's).")
    ] = None,
    iterations: Annotated[int | None, typer.Option(help="Most EM iterations per fit (default: the model's).")] = None,
    seed: Annotated[
        int | None, typer.Option(help="Random seed (default: drawn, and printed to repeat the run).")
    ] = None,
    columns: Columns = None,
    id_column: IdColumn = None,
    time_column: TimeColumn = None,
    symbol_column: SymbolColumn = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Model file to write.")] = Path("model.msz"),
    scheduler: Scheduler = None,
    workers: Workers = None,
    json_output: Json = False,
) -> None:
    """Fit a model to DATA and save it, with the data's schema; the progress of every fit is shown on standard error.

    Prints the data's size, the log-likelihood (``elbo`` for a model fit by its evidence
    lower bound), the BIC where the model has one, the seed and, for an iterative fit,
    whether it converged and the number of iterations it ran (``n_iter``), with advice
    when it did not converge or when --modes auto chose the largest candidate.
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
        "switching_ar": switching_ar,
        "switching_variance": switching_variance,
        "state_dim": state_dim,
        "observation": observation,
        "unknown": unknown,
        "restarts": restarts,
        "iterations": iterations,
        "seed": seed,
    }
    _check_output(output, data)
    accepted = MODELS.get(model, (None, {}))[1]
    if "seed" in accepted:
        options["seed"] = _seed(seed)
    estimator = _make_model(model, options)
    if scheduler is not None or workers is not None:  # the data stay on the cluster (modeshift.distributed)
        cluster = _on_cluster(scheduler, workers, columns, id_column, time_column)
        summary = distributed.fit_dataset(estimator, data, **cluster)
        estimator.save(output)
        _emit({**summary, "output": output}, json_output)
        return
    seqs = _read(data, estimator, columns, id_column, time_column, symbol_column)
    _fit_for_the_data(estimator, state_dim, seqs)
    _measure(estimator)  # a model that cannot be scored fails before its fit
    _announce_compilation()
    selection = None
    if options["modes"] == "auto" and accepted.get("max_modes") == _BY_COMMAND:
        estimator, selection = _choose_modes(estimator, seqs, max_modes or _MAX_MODES)
        estimator.set_params(verbose=False)
    else:
        _fit_showing_progress(estimator, seqs)
    estimator.save(output)
    payload: dict[str, Any] = {
        "model": type(estimator).__name__,
        "output": output,
        **_size(seqs),
        **_fit_statistics(estimator, seqs),
    }
    if "seed" in accepted:
        payload["seed"] = options["seed"]
    if "n_states_" in estimator.__dict__:
        payload["n_states"] = estimator.n_states_
    if isinstance(estimator, IterativeFit):
        payload.update(converged=estimator.converged_, n_iter=estimator.n_iter_)
        if not estimator.converged_:
            _note(
                f"the fit did not converge in {estimator.n_iter_} iteration{'s' * (estimator.n_iter_ != 1)}: "
                "raise --iterations, "
                "try more --restarts or another --seed, or fewer --modes"
            )
    selection = estimator.__dict__.get("selection_", selection)
    if selection is not None:
        payload["selection"] = selection
        candidates = selection["n_states"].to_numpy()
        chosen = int(candidates[selection["chosen"].to_numpy()][0])
        payload["n_states"] = chosen
        if chosen == candidates.max() > 1:
            _note(
                f"BIC chose {chosen} modes, the largest candidate: the data may support more "
                f"(raise --max-modes above {chosen})"
            )
    _emit(payload, json_output)


@_command
def segment(
    model_file: ModelPath,
    data: DataPath,
    output: TableOutput = None,
    columns: Columns = None,
    id_column: IdColumn = None,
    time_column: TimeColumn = None,
    symbol_column: SymbolColumn = None,
    scheduler: Scheduler = None,
    workers: Workers = None,
    json_output: Json = False,
) -> None:
    """Split DATA into runs of one mode on the most likely mode path.

    One row per run: ``start`` and ``end`` (exclusive) step indices, ``start_time`` and
    ``end_time`` (the time stamps of its first and last steps, as the file writes them),
    ``mode`` and ``probability``; ``sequence`` and ``id`` for several sequences.
    """
    _check_output(output, model_file, data)
    estimator = load(model_file)
    _require(estimator, Segmenter, "segment data into modes")
    if scheduler is not None or workers is not None:  # found on the cluster: id, start, end, mode, probability
        cluster = _on_cluster(scheduler, workers, columns, id_column, time_column)
        _write_table(
            distributed.segment_dataset(estimator, data, **cluster), output, json_output, "segments", (model_file, data)
        )
        return
    seqs = _read(data, estimator, columns, id_column, time_column, symbol_column)
    _announce_compilation()
    table = estimator.segment(seqs)
    sequence = table["sequence"].to_numpy() if "sequence" in table.columns else np.zeros(len(table), dtype=int)
    if "sequence" in table.columns and seqs.ids is not None:
        table.insert(1, "id", [seqs.ids[s] for s in sequence])
    if seqs.times is not None and seqs.schema is not None and len(table):
        first = seqs.offsets[sequence] + table["start"].to_numpy()
        at = table.columns.get_loc("end") + 1
        table.insert(at, "start_time", _time_labels(seqs, first))
        table.insert(at + 1, "end_time", _time_labels(seqs, seqs.offsets[sequence] + table["end"].to_numpy() - 1))
    _write_table(table, output, json_output, "segments", (model_file, data))


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

    One row per step (and sequence): the step, its time stamp (``time``, from the time
    axis' frequency, when the data have a regular time column), for each value column the
    predictive mean, standard deviation and central interval mean +- z sd (exact for lds;
    for mode models, whose predictive law is a mixture, a normal approximation), then the
    probability of each mode (and, for categorical data, of each symbol).
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"--level must be between 0 and 1, got {level}")
    _check_output(output, model_file, data)
    estimator = load(model_file)
    _require(estimator, Forecaster, "forecast")
    seqs = _read(data, estimator, columns, id_column, time_column)
    _announce_compilation()
    names = list(seqs.schema.columns) if seqs.schema is not None else [f"y{d}" for d in range(seqs.n_features)]
    axis = None if seqs.schema is None or seqs.times is None else seqs.schema.time
    frames = []
    categories = None if seqs.schema is None else seqs.schema.categories
    for s, part in enumerate(estimator.forecast(seqs, horizon=horizon).per_sequence()):
        frame = _forecast_frame(part, names, norm.ppf(0.5 + level / 2.0), categories)
        future = None if axis is None else axis.after(seqs.times_of(s)[-1], horizon)
        if future is not None:
            frame.insert(1, "time", future)
        if seqs.n_sequences > 1:
            frame.insert(0, "sequence", s)
            if seqs.ids is not None:
                frame.insert(1, "id", seqs.ids[s])
        frames.append(frame)
    if axis is not None and "time" not in frames[0].columns:
        _note("the time stamps are irregular: the forecast is given by step only")
    _write_table(pd.concat(frames, ignore_index=True), output, json_output, "rows", (model_file, data))


def _forecast_frame(result: Forecast, names: list[str], z: float, categories: Any = None) -> pd.DataFrame:
    """One sequence's forecast as a table: step, then per column mean, sd, lower, upper, then the
    probabilities of the modes and symbols (``p_<label>`` for the labels of a categorical column)."""
    sd = np.sqrt(np.clip(np.diagonal(result.covariances, axis1=1, axis2=2), 0.0, None))
    table: dict[str, np.ndarray] = {"step": np.arange(1, len(result.means) + 1)}
    for d, name in enumerate([] if categories else names):  # labels have probabilities, not moments
        mean = result.means[:, d]
        table.update(
            {
                f"{name}_mean": mean,
                f"{name}_sd": sd[:, d],
                f"{name}_lower": mean - z * sd[:, d],
                f"{name}_upper": mean + z * sd[:, d],
            }
        )
    if result.mode_probabilities is not None:
        table.update({f"p_mode{k}": column for k, column in enumerate(result.mode_probabilities.T)})
    if result.symbol_probabilities is not None:
        labels = categories or [f"symbol{k}" for k in range(result.symbol_probabilities.shape[1])]
        table.update({f"p_{label}": column for label, column in zip(labels, result.symbol_probabilities.T)})
    return pd.DataFrame(table)


@_command
def simulate(
    model_file: ModelPath,
    steps: Annotated[int, typer.Option("--steps", "-n", help="Number of time steps.")] = 100,
    seed: Annotated[int | None, typer.Option(help="Random seed (default: drawn, and printed).")] = None,
    output: TableOutput = None,
    json_output: Json = False,
) -> None:
    """Simulate one sequence from a model: observations named as the model's value columns (y0.. for a
    model fit on arrays; symbols stop at the end of a sequence or after --steps), continuous states x0..
    and modes (a mixture's component; a jump process's jump times)."""
    _check_output(output, model_file)
    estimator = load(model_file)
    _require(estimator, Sampler, "simulate")
    seed = _seed(seed)
    typer.echo(f"seed: {seed}", err=True)
    _announce_compilation()
    drawn = estimator.sample(n_steps=steps, random_state=seed)
    schema = estimator.__dict__.get("schema_")
    table = _simulation_table(drawn, estimator.data_kind, None if schema is None else list(schema.columns))
    if schema is not None and schema.categories is not None:  # codes back to the file's labels
        table[schema.columns[0]] = [schema.categories[int(code)] for code in table[schema.columns[0]]]
    _write_table(table, output, json_output, "steps", (model_file,))


def _simulation_table(drawn: Any, data_kind: str, names: list[str] | None) -> pd.DataFrame:
    """What ``sample`` returned, one row per step: observations (or symbols), then continuous
    states x0.., modes, a mixture's component, or a jump path's times."""
    if hasattr(drawn, "states") and hasattr(drawn, "times"):  # paths of a jump process
        return pd.DataFrame({(names or ["state"])[0]: drawn.states[0], "time": drawn.times[0]})
    observations, *hidden = drawn if isinstance(drawn, tuple) else (drawn,)  # a model without modes: a path
    if data_kind == "real":
        values = np.asarray(observations, dtype=float).reshape(len(observations), -1)
        labels = names if names is not None and len(names) == values.shape[1] else None
        table: dict[str, Any] = {(labels[d] if labels else f"y{d}"): column for d, column in enumerate(values.T)}
    else:
        table = {(names or ["symbol"])[0]: list(observations)}
    for array in map(np.asarray, hidden):
        if array.ndim == 0:
            table["component"] = int(array)
        elif array.ndim == 1:
            table["mode"] = array
        else:
            table.update({f"x{i}": column for i, column in enumerate(array.T)})
    return pd.DataFrame(table)


@_command
def score(
    model_file: ModelPath,
    data: DataPath,
    columns: Columns = None,
    id_column: IdColumn = None,
    time_column: TimeColumn = None,
    symbol_column: SymbolColumn = None,
    unknown: Annotated[
        str | None,
        typer.Option(
            help="Symbol models: symbols outside the vocabulary: error, ignore or map (default: the model's)."
        ),
    ] = None,
    scheduler: Scheduler = None,
    workers: Workers = None,
    json_output: Json = False,
) -> None:
    """Log-likelihood of DATA under a model (``elbo``, its evidence lower bound, for a model fit by one),
    and BIC where defined."""
    estimator = load(model_file)
    if unknown is not None:
        if "unknown" not in estimator.get_params():
            raise ValueError(f"--unknown applies to models of symbols, not to a {type(estimator).__name__}")
        estimator.set_params(unknown=unknown)
    if scheduler is not None or workers is not None:  # summed on the cluster
        _require(estimator, Scorer, "score data")
        cluster = _on_cluster(scheduler, workers, columns, id_column, time_column)
        _emit(distributed.score_dataset(estimator, data, **cluster), json_output)
        return
    seqs = _read(data, estimator, columns, id_column, time_column, symbol_column)
    _announce_compilation()
    _emit({"model": type(estimator).__name__, **_size(seqs), **_fit_statistics(estimator, seqs)}, json_output)


@_command
def next_(
    model_file: ModelPath,
    prefix: Annotated[
        list[str] | None, typer.Argument(help="The symbols so far (none: the start of a sequence).", show_default=False)
    ] = None,
    top: Annotated[int, typer.Option("--top", "-k", help="Number of likeliest next symbols.")] = 5,
    output: TableOutput = None,
    json_output: Json = False,
) -> None:
    """The likeliest next symbols after PREFIX under a symbol model, with their probabilities
    (``<end>`` where a sequence may end)."""
    _check_output(output, model_file)
    estimator = load(model_file)
    _require(estimator, NextElementModel, "predict the next symbol")
    ranked = estimator.predict_next(tuple(prefix or ()), k=top)
    table = pd.DataFrame({"symbol": [str(symbol) for symbol, _ in ranked], "probability": [p for _, p in ranked]})
    _write_table(table, output, json_output, "symbols", (model_file,))


@_command
def info(model_file: ModelPath, json_output: Json = False) -> None:
    """What a model file holds: hyperparameters, fit results (with the objective ``history_`` records),
    the data's schema, learned parameters, a description of the modes and parameter estimates where the
    model has them."""
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
    }
    if metadata.get("schema") is not None:
        payload["schema"] = metadata["schema"]
    payload["parameters"] = arrays
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

    _check_output(output, directory=True)
    _announce_compilation()
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
    title: Annotated[str | None, typer.Option("--title", help="Title of the report page.")] = None,
    json_output: Json = False,
) -> None:
    """Write a model's report on DATA to a directory: one HTML page with its fit, parameters and figures
    (title: the model's class unless --title)."""
    from modeshift.report import write_report

    _check_output(output, model_file, data, directory=True)
    estimator = load(model_file)
    seqs = _read(data, estimator, columns, id_column, time_column)
    _announce_compilation()
    _emit({"output": write_report(estimator, seqs, output, title=title)}, json_output)


@_command
def filter_(
    model_file: ModelPath,
    data: Annotated[
        str,
        typer.Argument(help="CSV rows, a header line first: a file, or - for standard input, read as the rows arrive."),
    ] = "-",
    lag: Annotated[
        int,
        typer.Option(
            help="Fixed-lag smoothing: write step t-L's smoothed probabilities when step t arrives "
            "(the last L at the end)."
        ),
    ] = 0,
    learn: Annotated[
        bool, typer.Option("--learn", help="Update the model by online EM as rows arrive; save it to -o at the end.")
    ] = False,
    chunk: Annotated[int, typer.Option(help="--learn: rows of a sequence per online-EM step.")] = 500,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="--learn: model file to write (not the model read).")
    ] = None,
    skip_bad: Annotated[
        bool, typer.Option("--skip-bad", help="Warn about a bad row and go on without it (default: stop there).")
    ] = False,
    columns: Columns = None,
    id_column: IdColumn = None,
    time_column: TimeColumn = None,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object per line instead of CSV.")] = False,
) -> None:
    """Filter rows as they arrive: each row's mode probabilities written (and flushed) at once.

    One output row per input row (CSV, or JSON lines): its id and time stamps as read, ``step``
    (in its sequence), ``log_likelihood`` (log p(y_t | y_<t)), ``p_mode0..`` and, for a model with
    a continuous state, ``x0, x0_sd, ..``. Rows of one id form one sequence; ids may interleave.
    Empty cells and NA are missing values. A bad row (a value that is not a number, or one the
    model rejects) stops the command with an error naming its line and column, after the rows
    before it were written; with --skip-bad it is reported as a warning and left out. Ctrl-C
    ends the input like its end (after the row being filtered, if any). With --learn the model
    takes an online-EM step every --chunk rows of a sequence (the rows left at the end if they
    fill half a chunk), and nothing is saved when the command stops on an error.
    """
    if lag < 0:
        raise ValueError(f"--lag must be a non-negative integer, got {lag}")
    if learn and chunk < 1:
        raise ValueError(f"--chunk must be a positive integer, got {chunk}")
    if output is not None and not learn:
        raise ValueError("-o saves the model updated by --learn: add --learn, or leave -o out")
    estimator = load(model_file)
    _require(estimator, Streaming, "filter a stream")
    if learn:
        _require(estimator, OnlineLearner, "learn online (--learn)")
        if output is None:
            raise ValueError("--learn needs -o FILE to save the updated model to")
        _check_learned_output(output, model_file, data)
    estimator.filter_init(lag=lag)  # checks the lag before any row is read
    _announce_compilation()
    with contextlib.ExitStack() as stack:
        lines = sys.stdin if data == "-" else stack.enter_context(Path(data).open(newline="", encoding="utf-8"))
        source = "standard input" if data == "-" else data
        rows = _RowsUntilInterrupted(csv.reader(lines))
        stack.enter_context(rows)
        header = next(rows, None)
        if header is None:
            raise ValueError(f"{source} is empty: the first line must name the columns")
        schema = estimator.__dict__.get("schema_")
        names = None if columns is None else [name.strip() for name in columns.split(",") if name.strip()]
        layout = FeedColumns.of(header, schema, columns=names, id_column=id_column, time_column=time_column)
        if layout.ignored():
            typer.echo(f"warning: {source}: columns {layout.ignored()} are not in the model and are ignored", err=True)
        feed = Feed(
            estimator, layout, Writer(sys.stdout, json_output), lag=lag, learn=chunk if learn else 0, note=_note
        )
        try:
            for cells in rows:
                if not cells:
                    continue
                try:
                    feed.take(cells, rows.line_num)
                except RowError as error:
                    if not skip_bad:
                        raise ValueError(f"{source}, {error}") from None
                    typer.echo(f"warning: {source}, {error} (row skipped)", err=True)
            feed.finish()
        except BrokenPipeError:  # the reader of the output is gone: stop quietly, save nothing
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error when Python flushes at exit
            return
    if learn:
        estimator.save(output)
        _note(
            f"filtered {feed.n_rows} row(s), learned from {feed.n_learned} in {feed.n_chunks} online-EM step(s); "
            f"the model is in {output}"
        )


class _RowsUntilInterrupted:
    """The rows of a CSV reader until its input ends or Ctrl-C: an interrupt while the command waits
    for a row ends the input at once; one while a row is filtered or learned from ends it after that
    row (never half-way through an update of the model). A context that installs the SIGINT handler
    (in the main thread) and gives the previous one back."""

    def __init__(self, reader: Any):
        self.reader, self.waiting, self.interrupted = reader, False, False
        self._previous: Any = None

    @property
    def line_num(self) -> int:
        return self.reader.line_num

    def __enter__(self) -> _RowsUntilInterrupted:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._interrupt)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _interrupt(self, signum: int, frame: Any) -> None:
        self.interrupted = True
        if self.waiting:
            raise KeyboardInterrupt

    def __iter__(self) -> Iterator[list[str]]:
        return self

    def __next__(self) -> list[str]:
        if self.interrupted:
            raise StopIteration
        self.waiting = True
        try:
            return next(self.reader)
        except KeyboardInterrupt:
            raise StopIteration from None
        finally:
            self.waiting = False


def _check_learned_output(output: Path, model_file: Path, data: str) -> None:
    """Before the stream: -o must be neither the model read nor the data (a stream can be read once:
    the model learned from it must not be lost), named as such, and pass :func:`_check_output`."""
    inputs = (model_file,) if data == "-" else (model_file, Path(data))
    for given, what in zip(inputs, ("the model read", "the data read")):
        if output.exists() and given.exists() and output.samefile(given):
            raise ValueError(f"-o {output} is {what}: write the learned model to another file")
    _check_output(output, *inputs)
