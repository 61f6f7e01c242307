"""The modeshift command: every subcommand on small CSV and Parquet files, every error in one line, and
models served by their capabilities, not their classes (models it has never heard of included)."""

from __future__ import annotations

import ast
import inspect
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm
from typer.testing import CliRunner

import modeshift
from modeshift import ARHMM, HMM, LinearGaussianSSM, Sequences, cli, demo, evaluate
from modeshift.cli import app
from modeshift.data import as_sequences
from modeshift.models import Model
from modeshift.models.base import Forecast
from modeshift.models.capabilities import Forecaster, NextElementModel, Sampler, Segmenter

runner = CliRunner()


def _run(*args: object):
    return runner.invoke(app, [str(arg) for arg in args])


def _json(*args: object):
    result = _run(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Two bivariate sequences in long format (CSV with shuffled rows, Parquet), a univariate series, a bad file."""
    directory = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    rows = []
    for name, length in (("a", 70), ("b", 50)):
        values = np.r_[rng.normal(0.0, 1.0, (length // 2, 2)), rng.normal(4.0, 1.0, (length - length // 2, 2))]
        rows += [{"id": name, "t": t, "u": u, "v": v} for t, (u, v) in enumerate(values)]
    frame = pd.DataFrame(rows)
    frame.sample(frac=1.0, random_state=0).to_csv(directory / "two.csv", index=False)  # time column sorts them
    frame.to_parquet(directory / "two.parquet")
    series = np.r_[rng.normal(0.0, 1.0, 60), rng.normal(3.0, 1.0, 60)]
    pd.DataFrame({"y": series, "label": "x"}).to_csv(directory / "one.csv", index=False)
    (directory / "corrupt.msz").write_bytes(b"not a zip file")
    result = _run(
        "fit", directory / "two.csv", "--time-column", "t", "--columns", "u,v", "--iterations", 20, "--seed", 0,
        "-o", directory / "hmm.msz",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return directory


def _data(files):
    return Sequences.from_parquet(files / "two.parquet", time_column="t")


# ------------------------------------------------------------------------ fitting
def test_help_lists_every_subcommand():
    result = _run("--help")
    assert result.exit_code == 0
    for command in ("fit", "segment", "forecast", "simulate", "score", "next", "info", "demo", "report"):
        assert command in result.stdout


def test_fit_reads_csv_and_parquet_alike(files):
    summary = _json(
        "fit", files / "two.parquet", "--time-column", "t", "--iterations", 20, "--seed", 0, "-o", files / "p.msz"
    )
    assert summary["model"] == "HMM" and summary["n_sequences"] == 2 and summary["n_steps"] == 120
    from_csv, from_parquet = modeshift.load(files / "hmm.msz"), modeshift.load(files / "p.msz")
    assert from_csv.score(_data(files)) == from_parquet.score(_data(files)) == summary["log_likelihood"]
    assert summary["bic"] == from_parquet.bic(_data(files))
    assert summary["converged"] == from_parquet.converged_ and summary["n_iter"] == from_parquet.n_iter_ <= 20
    assert from_parquet.verbose is False  # the command's progress bars are not saved


@pytest.mark.parametrize(
    "options, expected, hyperparameters, measure",
    [
        (["--model", "arhmm", "--order", 2, "--iterations", 10], "ARHMM", {"order": 2, "n_iter": 10}, "log_likelihood"),
        (
            ["--model", "slds", "--state-dim", 1, "--iterations", 3],
            "SwitchingLDS",
            {"state_dim": 1, "n_iter": 3},
            "elbo",
        ),
        (["--model", "lds", "--iterations", 5], "LinearGaussianSSM", {"n_iter": 5}, "log_likelihood"),
        (
            ["--model", "markov-switching", "--restarts", 2, "--iterations", 50],
            "MarkovAutoregression",
            {"order": 1, "n_restarts": 2, "n_iter": 50},
            "log_likelihood",
        ),
        (
            ["--model", "markov-switching", "--order", 0, "--restarts", 2, "--iterations", 50],
            "MarkovRegression",
            {"n_restarts": 2, "n_iter": 50},
            "log_likelihood",
        ),
    ],
    ids=["arhmm", "slds", "lds", "markov-autoregression", "markov-regression"],
)
def test_fit_every_model(files, tmp_path, options, expected, hyperparameters, measure):
    """Glossary names throughout: --order is the lag order and --iterations sets n_iter of every model;
    a model fit by a bound reports its ELBO as elbo, never as a log-likelihood."""
    slds = "slds" in options
    data = ["--time-column", "t", files / "two.parquet"] if slds else ["--columns", "y", files / "one.csv"]
    summary = _json("fit", *data, *options, "--seed", 0, "-o", tmp_path / "model.msz")
    model = modeshift.load(tmp_path / "model.msz")
    assert summary["model"] == type(model).__name__ == expected
    assert {name: model.get_params()[name] for name in hyperparameters} == hyperparameters
    assert model.verbose is False
    assert measure in summary and not ({"log_likelihood", "elbo"} - {measure}) & set(summary)
    assert summary["bic"] == pytest.approx(model.bic(_data(files) if slds else pd.read_csv(files / "one.csv")[["y"]]))
    assert summary["converged"] == model.converged_ and summary["n_iter"] == model.n_iter_


def test_lags_is_a_deprecated_alias_of_order(files, tmp_path):
    options = ["--columns", "y", "--model", "arhmm", "--iterations", 5, "--seed", 0, "-o", tmp_path / "ar.msz"]
    result = _run("fit", files / "one.csv", "--lags", 2, *options)
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith("warning: --lags is deprecated and goes in the next release; use --order\n")
    assert modeshift.load(tmp_path / "ar.msz").order == 2
    help_text = _run("fit", "--help").stdout
    assert "--order" in help_text and "--lags" not in help_text  # hidden
    result = _run("fit", files / "one.csv", "--order", 1, "--lags", 2, *options)
    assert result.exit_code == 1 and "error: --lags is the old name of --order: got --order 1 and --lags 2\n" in (
        result.stderr
    )


def test_fit_auto_shows_every_candidate(files, tmp_path):
    result = _run(
        "fit", files / "two.csv", "--time-column", "t", "--modes", "auto", "--max-modes", 2, "--restarts", 2,
        "--iterations", 10, "--seed", 0, "-o", tmp_path / "auto.msz", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["n_states"] == 2 and [row["n_states"] for row in summary["selection"]] == [1, 2]
    assert "HMM K=1" in result.stderr and "HMM K=2 restart 2/2" in result.stderr  # the live progress bars
    assert [row["n_states"] for row in _json("info", tmp_path / "auto.msz")["selection"]] == [1, 2]
    assert "selection_" not in _run("info", tmp_path / "auto.msz").stdout  # a table titled selection, not a dict


# ------------------------------------------------------------------ using a model
def test_segment(files, tmp_path):
    records = _json("segment", files / "hmm.msz", files / "two.csv", "--time-column", "t", "--columns", "u,v")
    expected = modeshift.load(files / "hmm.msz").segment(_data(files))
    assert [row["start"] for row in records] == expected["start"].tolist()
    assert {row["id"] for row in records} == {"a", "b"}
    result = _run("segment", files / "hmm.msz", files / "two.parquet", "--time-column", "t", "-o", tmp_path / "s.csv")
    assert result.exit_code == 0 and "segments: " in result.stdout
    assert pd.read_csv(tmp_path / "s.csv")["end"].tolist() == expected["end"].tolist()


def test_forecast(files):
    records = _json("forecast", files / "hmm.msz", files / "two.parquet", "--time-column", "t", "--horizon", 3)
    expected = modeshift.load(files / "hmm.msz").forecast(_data(files), horizon=3).per_sequence()
    assert len(records) == 6 and [row["step"] for row in records[:3]] == [1, 2, 3]
    assert [row["time"] for row in records] == [70, 71, 72, 50, 51, 52]  # after each sequence's last t
    first = records[0]
    assert first["u_mean"] == expected[0].means[0, 0] and first["v_sd"] == np.sqrt(expected[0].covariances[0, 1, 1])
    assert first["u_lower"] < first["u_mean"] < first["u_upper"]
    assert first["p_mode0"] + first["p_mode1"] == pytest.approx(1.0)
    table = _run("forecast", files / "hmm.msz", files / "two.parquet", "--time-column", "t", "-H", 2).stdout
    assert table.splitlines()[0].startswith("sequence,id,step,time,u_mean,u_sd,u_lower,u_upper")


def test_simulate(files, tmp_path):
    result = _run("simulate", files / "hmm.msz", "--steps", 25, "--seed", 3, "-o", tmp_path / "sim.csv")
    assert result.exit_code == 0, result.output
    simulated = pd.read_csv(tmp_path / "sim.csv")
    assert list(simulated.columns) == ["u", "v", "mode"] and len(simulated) == 25  # the file's column names
    assert result.stderr == "seed: 3\n"
    again = _json("simulate", files / "hmm.msz", "--steps", 25, "--seed", 3)
    np.testing.assert_allclose([row["u"] for row in again], simulated["u"], rtol=1e-12)


def test_score(files):
    summary = _json("score", files / "hmm.msz", files / "two.csv", "--time-column", "t", "--columns", "u,v")
    model = modeshift.load(files / "hmm.msz")
    assert summary["log_likelihood"] == model.score(_data(files)) and summary["bic"] == model.bic(_data(files))


def test_info(files):
    summary = _json("info", files / "hmm.msz")
    assert summary["model"] == "HMM" and summary["hyperparameters"]["n_iter"] == 20
    assert np.asarray(summary["parameters"]["transmat_"]).shape == (2, 2)
    assert [row["mode"] for row in summary["description"]] == [0, 1]
    shown = _run("info", files / "hmm.msz").stdout
    assert "transmat_: [[" in shown and "occupancy" in shown


def test_report(files, tmp_path):
    pytest.importorskip("matplotlib")
    summary = _json("report", files / "hmm.msz", files / "two.parquet", "--time-column", "t", "-o", tmp_path / "r")
    assert summary["output"] == str(tmp_path / "r" / "report.html")
    assert "<html" in (tmp_path / "r" / "report.html").read_text()


@pytest.mark.slow
def test_demo(tmp_path):
    pytest.importorskip("matplotlib")
    summary = _json("demo", "-o", tmp_path)
    assert "Hamilton" in summary["summary"] and (tmp_path / "index.html").exists()


# -------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "args, message",
    [
        (["fit", "{dir}/missing.csv"], "missing.csv: No such file or directory"),
        (["fit", "{dir}/two.csv", "--columns", "u,nope"], "column 'nope' not found"),
        (["fit", "{dir}/one.csv"], "column 'label': non-numeric value 'x'"),
        (["fit", "{dir}/one.csv", "--model", "kalman"], "unknown model 'kalman'"),
        (["fit", "{dir}/one.csv", "--columns", "y", "--modes", "many"], "--modes must be a positive integer or 'auto'"),
        (["fit", "{dir}/one.csv", "--columns", "y", "--model", "lds", "--modes", 2], "--modes does not apply"),
        (["fit", "{dir}/corrupt.msz"], "unknown data format '.msz'"),
        (["info", "{dir}/corrupt.msz"], "not a readable modeshift model file"),
        (["info", "{dir}/missing.msz"], "missing.msz: No such file or directory"),
        (["score", "{dir}/hmm.msz", "{dir}/one.csv", "--columns", "y"], "one.csv: the data lack column(s) ['t', 'id']"),
        (["forecast", "{dir}/hmm.msz", "{dir}/two.csv", "--level", 2], "--level must be between 0 and 1"),
    ],
)
def test_errors_are_one_line(files, args, message):
    result = _run(*(str(arg).format(dir=files) for arg in args))
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ") and message in result.stderr
    assert "Traceback" not in result.output


def test_models_without_a_capability_say_so(files, tmp_path):
    _json("fit", files / "one.csv", "--columns", "y", "--model", "lds", "--iterations", 3, "-o", tmp_path / "lds.msz")
    result = _run("segment", tmp_path / "lds.msz", files / "one.csv", "--columns", "y")
    assert result.exit_code == 1 and result.stderr == "error: a LinearGaussianSSM cannot segment data into modes: " \
        "it is not a Segmenter (it has no segment)\n"  # fmt: skip


# ------------------------------------------------- capabilities, not classes
class Level(Model):
    """A model the command line has never heard of: a constant level plus Gaussian noise of scale
    ``noise``. It forecasts and nothing else; its subclasses add a score or a bound."""

    _file_arrays = {"level_": "finite"}  # what its files hold (Model._file_arrays)

    def __init__(self, noise: float = 1.0):
        self.noise = noise

    def fit(self, X, lengths=None, **columns):
        self._start_fit()
        self.level_ = as_sequences(X, lengths, **columns).values.mean(axis=0)
        self._finish_fit()
        return self

    def forecast(self, X, horizon, lengths=None, **columns):
        dim = len(self.level_)
        return Forecast(np.tile(self.level_, (horizon, 1)), np.tile(self.noise**2 * np.eye(dim), (horizon, 1, 1)))

    def _log_likelihood(self, X):
        return float(norm.logpdf(as_sequences(X).values, self.level_, self.noise).sum())

    def _learned_arrays(self):
        return {"level_": self.level_}

    def _restore(self, arrays, attributes):
        self.level_ = arrays["level_"]
        for name, value in attributes.items():
            setattr(self, name, value)


class ScoredLevel(Level):
    def score(self, X, lengths=None, **columns):
        return self._log_likelihood(X)


class BoundedLevel(ScoredLevel):
    """Fit by maximising a bound, one nat below the log-likelihood, in two iterations; like a
    SwitchingLDS it still answers ``score`` (with the bound) for one release."""

    objective = "ELBO"

    def fit(self, X, lengths=None, **columns):
        super().fit(X, lengths, **columns)
        self.history_, self.converged_, self.n_iter_ = [-2.0, -1.0], True, 2
        return self

    def elbo(self, X, lengths=None, **columns):
        return self._log_likelihood(X) - 1.0

    score = elbo

    def _learned_attributes(self):
        return {"history_": self.history_, "converged_": self.converged_, "n_iter_": self.n_iter_}


@pytest.fixture
def levels(monkeypatch):
    """The level models in the command's table of models, without options."""
    for name, model in (("level", Level), ("scored-level", ScoredLevel), ("bounded-level", BoundedLevel)):
        monkeypatch.setitem(cli.MODELS, name, (model, {}))


def test_commands_ask_for_capabilities_not_classes(files, tmp_path, levels):
    one = [files / "one.csv", "--columns", "y"]
    fitted = _json("fit", *one, "--model", "scored-level", "-o", tmp_path / "level.msz")
    y = pd.read_csv(files / "one.csv")["y"]
    assert fitted == {
        "model": "ScoredLevel",
        "output": str(tmp_path / "level.msz"),
        "n_sequences": 1,
        "n_steps": 120,
        "log_likelihood": pytest.approx(norm.logpdf(y, y.mean()).sum()),
    }  # not Selectable: no BIC; not an IterativeFit: no convergence
    assert _json("score", tmp_path / "level.msz", *one) == {key: fitted[key] for key in fitted if key != "output"}
    forecast = _json("forecast", tmp_path / "level.msz", *one, "--horizon", 2)
    assert [row["y_mean"] for row in forecast] == pytest.approx([y.mean(), y.mean()])
    for args, message in [
        (["segment", tmp_path / "level.msz", *one], "cannot segment data into modes: it is not a Segmenter"),
        (["simulate", tmp_path / "level.msz"], "cannot simulate: it is not a Sampler (it has no sample)"),
        (
            ["fit", *one, "--model", "level", "-o", tmp_path / "unscored.msz"],
            "cannot score data: it is neither a Scorer",
        ),
    ]:
        result = _run(*args)
        assert result.exit_code == 1 and result.stderr.count("\n") == 1, result.output
        assert result.stderr.startswith("error: a ") and message in result.stderr
    assert not (tmp_path / "unscored.msz").exists()  # refused before the fit


def test_a_bound_is_called_elbo_never_log_likelihood(files, tmp_path, levels):
    one = [files / "one.csv", "--columns", "y"]
    fitted = _json("fit", *one, "--model", "bounded-level", "-o", tmp_path / "bound.msz")
    scored = _json("score", tmp_path / "bound.msz", *one)
    assert "log_likelihood" not in fitted and "log_likelihood" not in scored
    y = pd.read_csv(files / "one.csv")["y"]
    assert fitted["elbo"] == scored["elbo"] == pytest.approx(norm.logpdf(y, y.mean()).sum() - 1.0)
    assert fitted["converged"] is True and fitted["n_iter"] == 2
    assert _json("info", tmp_path / "bound.msz")["fit"] == {
        "objective": "ELBO",
        "history_": [-2.0, -1.0],
        "converged_": True,
        "n_iter_": 2,
    }


@pytest.mark.parametrize("module", [cli, demo, evaluate], ids=lambda module: module.__name__)
def test_no_dispatch_on_model_classes(module):
    """The interface layer asks for capabilities: no isinstance or issubclass names a model class."""
    namespace = vars(module)
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("isinstance", "issubclass"):
            tested = node.args[1].elts if isinstance(node.args[1], ast.Tuple) else [node.args[1]]
            for expression in tested:
                try:
                    found = eval(ast.unparse(expression), dict(namespace))  # names of the module
                except NameError:  # a local variable, such as the capability asked for
                    continue
                assert not (isinstance(found, type) and issubclass(found, Model)), ast.unparse(node)


def test_debug_shows_the_error(files):
    result = _run("--debug", "fit", files / "two.csv", "--columns", "nope")
    assert result.exit_code == 1 and isinstance(result.exception, ValueError)


# ---------------------------------------------------------------------- round trip
@pytest.mark.parametrize(
    "model",
    [HMM(2, n_iter=10, random_state=0), ARHMM(2, n_iter=10, random_state=0), LinearGaussianSSM(2, n_iter=5)],
    ids=["hmm", "arhmm", "lds"],
)
def test_fit_save_load_round_trip(files, tmp_path, model):
    X = _data(files)
    model.fit(X)
    model.save(tmp_path / "model.msz")
    loaded = modeshift.load(tmp_path / "model.msz")
    assert loaded.score(X) == model.score(X)
    if hasattr(model, "predict"):
        np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    for before, after in zip(model.forecast(X, horizon=3).per_sequence(), loaded.forecast(X, horizon=3).per_sequence()):
        np.testing.assert_array_equal(after.means, before.means)
        np.testing.assert_array_equal(after.covariances, before.covariances)


# -------------------------------------------------------------------- symbol chains
def test_fit_score_info_for_a_chain_on_an_event_log(tmp_path):
    from modeshift.datasets import load_event_log

    log = load_event_log("running_example")
    log.sample(frac=1.0, random_state=0).to_csv(tmp_path / "log.csv", index=False)  # the timestamps order each case
    summary = _json("fit", tmp_path / "log.csv", "--model", "chain", "--order", 2, "-o", tmp_path / "chain.msz")
    chain = modeshift.load(tmp_path / "chain.msz")
    assert summary["model"] == "MarkovChain" and chain.order == 2
    assert summary["n_sequences"] == 6 and summary["n_steps"] == 42
    assert summary["log_likelihood"] == pytest.approx(chain.score(log))
    scored = _json("score", tmp_path / "chain.msz", tmp_path / "log.csv")
    assert scored["log_likelihood"] == summary["log_likelihood"] and "bic" in scored
    info = _json("info", tmp_path / "chain.msz")
    assert info["hyperparameters"]["order"] == 2 and "register request" in info["fit"]["vocabulary_"]
    # other column names; without an id column the file is one sequence
    renamed = log.rename(columns={"case_id": "ticket", "activity": "step"})
    renamed.to_csv(tmp_path / "renamed.csv", index=False)
    options = ["--symbol-column", "step", "--id-column", "ticket", "--time-column", "timestamp"]
    assert _json("score", tmp_path / "chain.msz", tmp_path / "renamed.csv", *options) == scored
    renamed[["step"]].to_csv(tmp_path / "one.csv", index=False)
    one = _json("fit", tmp_path / "one.csv", "--model", "chain", "--symbol-column", "step", "-o", tmp_path / "one.msz")
    assert one["n_sequences"] == 1 and one["n_steps"] == 42
    result = _run("fit", tmp_path / "log.csv", "--symbol-column", "activity", "-o", tmp_path / "hmm.msz")
    assert result.exit_code == 1
    assert "--symbol-column applies to models of symbols (--model chain, --model variable-order, " in result.stderr
    result = _run("fit", tmp_path / "log.csv", "--model", "chain", "--modes", 2, "-o", tmp_path / "x.msz")
    assert result.exit_code == 1
    assert "--modes does not apply to --model chain (it takes --order, --unknown)" in result.stderr


def test_simulate_a_chain_and_report_it_with_a_title(tmp_path):
    pd.DataFrame({"case_id": [1, 1, 2, 2, 2], "activity": list("ababb")}).to_csv(tmp_path / "log.csv", index=False)
    _json("fit", tmp_path / "log.csv", "--model", "chain", "-o", tmp_path / "chain.msz")
    simulated = _json("simulate", tmp_path / "chain.msz", "--steps", 7, "--seed", 0)  # stops at END, or after 7
    assert 1 <= len(simulated) <= 7 and {row["activity"] for row in simulated} <= {"a", "b"}  # the file's column
    written = _json(
        "report", tmp_path / "chain.msz", tmp_path / "log.csv", "-o", tmp_path / "report", "--title", "Cases"
    )
    page = Path(written["output"]).read_text()
    assert "<title>Cases</title>" in page or "<h1>Cases</h1>" in page


# --------------------------------------------------- every model x every subcommand
_FAST = {
    "hmm": ["--iterations", 5, "--seed", 0],
    "arhmm": ["--iterations", 5, "--seed", 0],
    "slds": ["--iterations", 2, "--seed", 0],
    "lds": ["--iterations", 3, "--seed", 0],
    "markov-switching": ["--iterations", 5, "--restarts", 1, "--seed", 0],
    "symbol-hmm": ["--modes", 2, "--iterations", 5, "--seed", 0],
    "chain-mixture": ["--iterations", 5, "--restarts", 1, "--seed", 0],
    "jump-process": ["--iterations", 5, "--seed", 0],
}
#: subcommand -> (the capability it needs, or None for every model, its arguments after the model file)
_SUBCOMMANDS = {
    "score": (None, ["{data}"]),
    "info": (None, []),
    "segment": (Segmenter, ["{data}"]),
    "forecast": (Forecaster, ["{data}", "-H", 2]),
    "simulate": (Sampler, ["-n", 5, "--seed", 1]),
    "next": (NextElementModel, []),
    "report": (None, ["{data}", "-o", "{dir}/report"]),
}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """Every model of the command fitted once: the Nile (numbers, a 'year' column) or an event log (symbols)."""
    from modeshift.datasets import load_event_log, load_nile

    directory = tmp_path_factory.mktemp("every")
    load_nile().to_csv(directory / "nile.csv", index=False)
    load_event_log("running_example").to_csv(directory / "log.csv", index=False)
    models = {}
    for name, (build, _) in cli.MODELS.items():
        data = directory / ("nile.csv" if build().data_kind == "real" else "log.csv")
        result = _run("fit", data, "--model", name, *_FAST.get(name, []), "-o", directory / f"{name}.msz")
        assert result.exit_code == 0, (name, result.output)
        models[name] = (directory / f"{name}.msz", data)
    return directory, models


@pytest.mark.parametrize("subcommand", list(_SUBCOMMANDS))
@pytest.mark.parametrize("name", list(cli.MODELS))
def test_every_model_and_subcommand_works_or_says_why_in_one_line(fitted, name, subcommand):
    """A model with the capability a subcommand needs gets an answer; one without gets one line naming it."""
    if subcommand == "report":
        pytest.importorskip("matplotlib")
    directory, models = fitted
    path, data = models[name]
    capability, arguments = _SUBCOMMANDS[subcommand]
    result = _run(subcommand, path, *(str(a).format(data=data, dir=directory / name) for a in arguments))
    model = modeshift.load(path)
    able = capability is None or isinstance(model, capability)
    if able:
        assert result.exit_code == 0, result.output
        assert result.stdout.strip()
    else:
        assert result.exit_code == 1 and result.stderr.count("\n") == 1, result.output
        assert result.stderr.startswith(f"error: a {type(model).__name__} ")


def test_every_model_family_is_in_the_command():
    built = {type(build()).__name__ for build, _ in cli.MODELS.values()} | {"MarkovRegression"}
    assert built >= {
        "HMM", "ARHMM", "SwitchingLDS", "LinearGaussianSSM", "MarkovAutoregression", "MarkovRegression", "MarkovChain",
        "VariableOrderChain", "SymbolHMM", "MarkovChainMixture", "MarkovJumpProcess",
    }  # fmt: skip


# ------------------------------------------------ real files: statsmodels' datasets
@pytest.fixture(scope="module")
def statsmodels_files(tmp_path_factory):
    """statsmodels' sunspots (a float 'YEAR' column) and macrodata ('year' and 'quarter' columns) as CSV."""
    datasets = pytest.importorskip("statsmodels.datasets")
    directory = tmp_path_factory.mktemp("statsmodels")
    datasets.sunspots.load_pandas().data.to_csv(directory / "sunspots.csv", index=False)
    macro = datasets.macrodata.load_pandas().data
    macro[["year", "quarter", "infl", "unemp"]].to_csv(directory / "macro.csv", index=False)
    return directory


def test_sunspots_year_is_time_not_a_feature(statsmodels_files, tmp_path):
    sunspots = statsmodels_files / "sunspots.csv"
    result = _run("fit", sunspots, "--iterations", 10, "--seed", 0, "-o", tmp_path / "sun.msz", "--json")
    assert result.exit_code == 0, result.output
    assert "warning: " in result.stderr and "'YEAR' taken as the time column, not modelled" in result.stderr
    model = modeshift.load(tmp_path / "sun.msz")
    assert model.means_.shape == (2, 1)  # SUNACTIVITY alone
    assert model.schema_.columns == ("SUNACTIVITY",) and model.schema_.time_columns == ("YEAR",)
    frame = pd.read_csv(sunspots)
    assert model.means_.max() < frame["SUNACTIVITY"].max()  # not the year's scale
    # later commands need no flags; outputs carry the years and the column's name
    runs = _json("segment", tmp_path / "sun.msz", sunspots)
    assert runs[0]["start_time"] == 1700 and runs[-1]["end_time"] == 2008
    assert all(b["start_time"] == a["end_time"] + 1 for a, b in zip(runs, runs[1:]))
    ahead = _json("forecast", tmp_path / "sun.msz", sunspots, "-H", 3)
    assert [row["time"] for row in ahead] == [2009, 2010, 2011] and "SUNACTIVITY_mean" in ahead[0]
    simulated = _json("simulate", tmp_path / "sun.msz", "-n", 4, "--seed", 0)
    assert set(simulated[0]) == {"SUNACTIVITY", "mode"}


def test_macrodata_year_and_quarter_are_one_quarterly_time_axis(statsmodels_files, tmp_path):
    macro = statsmodels_files / "macro.csv"
    fitted = _json("fit", macro, "--columns", "infl", "--iterations", 5, "--seed", 0, "-o", tmp_path / "m.msz")
    assert fitted["n_steps"] == 203
    schema = _json("info", tmp_path / "m.msz")["schema"]
    assert schema["time_columns"] == ["year", "quarter"] and schema["time"]["kind"] == "period"
    ahead = _json("forecast", tmp_path / "m.msz", macro, "-H", 2)
    assert [row["time"] for row in ahead] == ["2009Q4", "2010Q1"]
    runs = _json("segment", tmp_path / "m.msz", macro)
    assert runs[0]["start_time"] == "1959Q1" and runs[-1]["end_time"] == "2009Q3"


def test_hamiltons_model_from_the_command_line(tmp_path):
    """Hamilton's (1989) switching AR(4) with shared coefficients: his log-likelihood, -181.263."""
    from modeshift.datasets import load_hamilton_gnp

    load_hamilton_gnp().to_csv(tmp_path / "gnp.csv", index=False)
    options = ["--model", "markov-switching", "--order", 4, "--no-switching-ar", "--columns", "rgnp_growth"]
    fitted = _json("fit", tmp_path / "gnp.csv", *options, "--seed", 0, "-o", tmp_path / "h.msz")
    assert fitted["model"] == "MarkovAutoregression" and fitted["log_likelihood"] == pytest.approx(-181.263, abs=1e-3)
    assert modeshift.load(tmp_path / "h.msz").switching_ar is False
    runs = _json("segment", tmp_path / "h.msz", tmp_path / "gnp.csv")
    assert runs[0]["start"] == 4 and runs[0]["start_time"] == "1952Q2"  # the first 4 quarters are lags
    assert [row["time"] for row in _json("forecast", tmp_path / "h.msz", tmp_path / "gnp.csv", "-H", 1)] == ["1985Q1"]


def test_time_columns_in_csv_dates_and_periods(tmp_path):
    rng = np.random.default_rng(1)
    y = np.r_[rng.normal(0, 1, 30), rng.normal(5, 1, 30)]
    cases = {
        "dates": (pd.date_range("1958-03-29", periods=60, freq="7D").strftime("%Y-%m-%d"), "1959-05-23"),
        "months": (pd.period_range("1959-01", periods=60, freq="M").astype(str), "1964-01"),
        "quarters": (pd.period_range("1959Q2", periods=60, freq="Q").astype(str), "1974Q2"),
    }
    for name, (stamps, next_stamp) in cases.items():
        order = rng.permutation(60)  # shuffled rows: the time column sorts them
        pd.DataFrame({"when": np.asarray(stamps)[order], "y": y[order]}).to_csv(tmp_path / f"{name}.csv", index=False)
        _json("fit", tmp_path / f"{name}.csv", "--time-column", "when", "--iterations", 5, "--seed", 0,
              "-o", tmp_path / f"{name}.msz")  # fmt: skip
        runs = _json("segment", tmp_path / f"{name}.msz", tmp_path / f"{name}.csv")
        assert runs[0]["start_time"] == stamps[0] and runs[-1]["end_time"] == stamps[-1], name
        assert [row["time"] for row in _json("forecast", tmp_path / f"{name}.msz", tmp_path / f"{name}.csv")] == [
            next_stamp
        ]


def test_schema_checks_new_data(files, tmp_path):
    frame = pd.read_parquet(files / "two.parquet")
    frame.drop(columns="v").to_csv(tmp_path / "lacking.csv", index=False)
    result = _run("score", files / "hmm.msz", tmp_path / "lacking.csv")
    assert result.exit_code == 1 and "lacking.csv: the data lack column(s) ['v']" in result.stderr
    frame.assign(w=1.0).to_csv(tmp_path / "extra.csv", index=False)
    scored = _run("score", files / "hmm.msz", tmp_path / "extra.csv", "--json")
    assert (
        scored.exit_code == 0 and "warning: " in scored.stderr and "columns ['w'] are not in the model" in scored.stderr
    )
    duplicated = pd.concat([frame, frame.iloc[:1]])
    duplicated.to_csv(tmp_path / "twice.csv", index=False)
    result = _run("score", files / "hmm.msz", tmp_path / "twice.csv")
    assert result.exit_code == 1 and "time stamp 0 repeats the previous one" in result.stderr


def test_tsv_and_file_errors_name_the_file(files, tmp_path):
    pd.read_parquet(files / "two.parquet").to_csv(tmp_path / "two.tsv", sep="\t", index=False)
    assert _json("score", files / "hmm.msz", tmp_path / "two.tsv") == _json(
        "score", files / "hmm.msz", files / "two.csv"
    )
    (tmp_path / "empty.csv").write_text("")
    result = _run("fit", tmp_path / "empty.csv")
    assert (
        result.exit_code == 1 and result.stderr == f"error: {tmp_path / 'empty.csv'}: No columns to parse from file\n"
    )


def test_version_help_defaults_and_debug_anywhere(files, capsys):
    assert _run("--version").stdout == f"modeshift {modeshift.__version__}\n"
    help_text = " ".join(runner.invoke(app, ["fit", "--help"], env={"COLUMNS": "400"}).stdout.split())
    assert "[default: hmm]" in help_text and "(default: drawn, and printed" in help_text
    with pytest.raises(ValueError, match="column 'nope' not found"):
        cli.main(["fit", str(files / "two.csv"), "--columns", "nope", "--debug"])
    cli._debug = False


def test_a_seed_is_drawn_and_printed_so_a_run_can_be_repeated(files, tmp_path):
    options = [files / "two.csv", "--time-column", "t", "--iterations", 5]
    first = _json("fit", *options, "-o", tmp_path / "a.msz")
    again = _json("fit", *options, "--seed", first["seed"], "-o", tmp_path / "b.msz")
    assert again["log_likelihood"] == first["log_likelihood"]
    result = _run("simulate", tmp_path / "a.msz", "-n", 3)
    assert result.stderr.startswith("seed: ")


def test_defaults_that_work_with_honest_words(files, tmp_path):
    one = [files / "one.csv", "--columns", "y"]
    # one iteration cannot show convergence (its start's EM may have settled the ELBO already)
    result = _run("fit", *one, "--model", "slds", "--iterations", 1, "--seed", 0, "-o", tmp_path / "s.msz", "--json")
    assert result.exit_code == 0, result.output
    assert "note: --state-dim 1: the data have 1 value column(s)" in result.stderr
    assert modeshift.load(tmp_path / "s.msz").state_dim == 1
    assert "note: the fit did not converge in 1 iteration: raise --iterations" in result.stderr
    result = _run(
        "fit", *one, "--model", "markov-switching", "--order", 0, "--modes", "auto", "--max-modes", 2,
        "--restarts", 1, "--seed", 0, "-o", tmp_path / "ms.msz", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert [row["n_states"] for row in summary["selection"]] == [1, 2] and summary["n_states"] == 2
    assert "note: BIC chose 2 modes, the largest candidate" in result.stderr
    assert modeshift.load(tmp_path / "ms.msz").n_states == 2


def test_arhmm_segments_leave_out_the_steps_without_lags(files, tmp_path):
    _json("fit", files / "one.csv", "--columns", "y", "--model", "arhmm", "--order", 3, "--iterations", 5, "--seed", 0,
          "-o", tmp_path / "ar.msz")  # fmt: skip
    runs = _json("segment", tmp_path / "ar.msz", files / "one.csv")
    assert runs[0]["start"] == 3 and runs[-1]["end"] == 120


def test_compilation_is_announced_when_the_kernel_cache_is_empty(files, tmp_path, monkeypatch):
    from modeshift._kernels import hmm as kernels

    dispatcher = next(value for value in vars(kernels).values() if hasattr(value, "_cache"))
    monkeypatch.setattr(dispatcher._cache, "_cache_path", str(tmp_path))
    result = _run("score", files / "hmm.msz", files / "two.csv")
    assert "note: compiling numerical kernels, first run only" in result.stderr
    monkeypatch.undo()
    assert "compiling" not in _run("score", files / "hmm.msz", files / "two.csv").stderr


def test_next_symbol_and_unknown_symbols(tmp_path):
    from modeshift.datasets import load_event_log

    log = load_event_log("running_example")
    log.to_csv(tmp_path / "log.csv", index=False)
    _json("fit", tmp_path / "log.csv", "--model", "chain", "-o", tmp_path / "chain.msz")
    chain = modeshift.load(tmp_path / "chain.msz")
    ranked = _json("next", tmp_path / "chain.msz", "register request", "-k", 2)
    assert [(row["symbol"], row["probability"]) for row in ranked] == [
        (str(symbol), pytest.approx(p)) for symbol, p in chain.predict_next(("register request",), k=2)
    ]
    log.assign(activity=log["activity"].replace("pay compensation", "pay twice")).to_csv(
        tmp_path / "new.csv", index=False
    )
    result = _run("score", tmp_path / "chain.msz", tmp_path / "new.csv")
    assert result.exit_code == 1 and "pay twice" in result.stderr
    assert "log_likelihood" in _json("score", tmp_path / "chain.msz", tmp_path / "new.csv", "--unknown", "map")


# ------------------------------------------------------------------- the README
def test_the_readme_command_line_examples_run_as_written(tmp_path, monkeypatch, capsys):
    """Every ``modeshift`` line of the README's command-line section, in order (rgnp.csv and events.csv
    are the bundled Hamilton GNP series and running-example log)."""
    import shlex

    pytest.importorskip("statsmodels")
    pytest.importorskip("matplotlib")
    from modeshift.datasets import load_event_log, load_hamilton_gnp

    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Command line\n")[1].split("\n## ")[0]
    lines = [line for block in section.split("```bash\n")[1:] for line in block.split("```")[0].splitlines()]
    monkeypatch.chdir(tmp_path)
    load_hamilton_gnp().to_csv("rgnp.csv", index=False)
    load_event_log("running_example").to_csv("events.csv", index=False)
    ran = 0
    for line in lines:
        words = shlex.split(line, comments=True)
        if words[:2] == ["python", "-c"]:
            exec(words[2], {})
        elif words[0] == "modeshift":
            with pytest.raises(SystemExit) as exit_status:
                cli.main(words[1:])
            assert exit_status.value.code in (0, None), (line, capsys.readouterr())
            ran += 1
    assert ran == 10 and Path("report/report.html").exists() and Path("hamilton.msz").exists()
    assert "'YEAR' taken as the time column" in capsys.readouterr().err


def test_categorical_emissions_read_string_labels(tmp_path):
    rng = np.random.default_rng(0)
    weather = np.r_[rng.choice(["sun", "cloud"], 60, p=[0.8, 0.2]), rng.choice(["rain", "cloud"], 60, p=[0.7, 0.3])]
    pd.DataFrame({"day": np.arange(120), "weather": weather}).to_csv(tmp_path / "weather.csv", index=False)
    options = ["--emission", "categorical", "--seed", 0, "-o", tmp_path / "w.msz"]
    fitted = _json("fit", tmp_path / "weather.csv", *options)
    model = modeshift.load(tmp_path / "w.msz")
    assert model.schema_.categories == ("cloud", "rain", "sun") and model.emissionprob_.shape == (2, 3)
    codes = pd.Series(weather).map({"cloud": 0, "rain": 1, "sun": 2}).to_numpy()
    assert fitted["log_likelihood"] == pytest.approx(model.score(codes))
    ahead = _json("forecast", tmp_path / "w.msz", tmp_path / "weather.csv", "-H", 1)[0]
    assert ahead["time"] == 120 and "weather_mean" not in ahead
    assert ahead["p_cloud"] + ahead["p_rain"] + ahead["p_sun"] == pytest.approx(1.0)
    assert {row["weather"] for row in _json("simulate", tmp_path / "w.msz", "-n", 20, "--seed", 0)} <= set(weather)
    pd.DataFrame({"day": [0, 1], "weather": ["sun", "snow"]}).to_csv(tmp_path / "snow.csv", index=False)
    result = _run("score", tmp_path / "w.msz", tmp_path / "snow.csv")
    assert result.exit_code == 1 and "label 'snow' is not one of ['cloud', 'rain', 'sun']" in result.stderr
