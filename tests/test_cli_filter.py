"""``modeshift filter``: rows filtered as they arrive (a live pipe answered row by row), fixed-lag
smoothing, online learning saved at the end, bad rows named by line and column."""

from __future__ import annotations

import io
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import warnings

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import modeshift
from modeshift import ARHMM, HMM, HSMM, LinearGaussianSSM, MarkovAutoregression, SwitchingLDS
from modeshift.cli import app

runner = CliRunner()


def _filter(*args: object, rows: str):
    return runner.invoke(app, ["filter", *map(str, args)], input=rows)


def _table(text: str) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(text))


BUILDERS = {
    "hmm": lambda: HMM(2, n_iter=20, random_state=0),
    "arhmm": lambda: ARHMM(2, order=1, n_iter=20, random_state=0),
    "hsmm": lambda: HSMM(2, max_duration=40, n_iter=10, random_state=0),
    "lds": lambda: LinearGaussianSSM(state_dim=1, n_iter=10, random_state=0),
    "markov-switching": lambda: MarkovAutoregression(2, order=1),
    "slds": lambda: SwitchingLDS(2, state_dim=1, n_iter=5, random_state=0),
}


@pytest.fixture(scope="module")
def stream(tmp_path_factory):
    """A two-regime series in a CSV file (time column t, values u and v) and every streaming model
    fit on it and saved (MarkovAutoregression on u alone)."""
    directory = tmp_path_factory.mktemp("filter")
    rng = np.random.default_rng(0)
    values = np.r_[rng.normal(0.0, 1.0, (60, 2)), rng.normal(4.0, 1.0, (60, 2)), rng.normal(0.0, 1.0, (40, 2))]
    frame = pd.DataFrame({"t": np.arange(len(values)), "u": values[:, 0], "v": values[:, 1]})
    frame.to_csv(directory / "data.csv", index=False)
    paths = {}
    for name, build in BUILDERS.items():
        columns = ["u"] if name == "markov-switching" else ["u", "v"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # short fits: a cap of iterations, durations cut at 40
            model = build().fit(frame, time_column="t", columns=columns)
        model.save(directory / f"{name}.msz")
        paths[name] = directory / f"{name}.msz"
    return directory, frame, paths


def _csv(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_every_streaming_model_answers_each_row_as_its_filter_does(stream, name):
    directory, frame, paths = stream
    result = _filter(paths[name], "-", rows=_csv(frame))
    assert result.exit_code == 0, result.output
    out = _table(result.stdout)
    model = modeshift.load(paths[name])
    values = frame[["u"] if name == "markov-switching" else ["u", "v"]].to_numpy()
    expected = list(model.filter_stream(values))
    assert len(out) == len(frame) and out["t"].tolist() == frame["t"].tolist()
    assert out["step"].tolist() == list(range(len(frame)))
    for row, step in zip(out.itertuples(), expected, strict=True):
        if step.probabilities is None and step.mean is None:  # conditioned on (an autoregression's first lag)
            assert np.isnan(row.log_likelihood) and np.isnan(row.p_mode0)
            continue
        assert row.log_likelihood == pytest.approx(step.log_likelihood, rel=1e-12, abs=1e-12)
        if step.probabilities is not None:
            shown = [getattr(row, f"p_mode{k}") for k in range(len(step.probabilities))]
            np.testing.assert_allclose(shown, step.probabilities, rtol=1e-12, atol=1e-15)
        if step.mean is not None:
            np.testing.assert_allclose(row.x0, step.mean[0], rtol=1e-12, atol=1e-15)
            np.testing.assert_allclose(row.x0_sd, np.sqrt(step.covariance[0, 0]), rtol=1e-12)


def test_the_hmm_filter_equals_the_batch_filter_and_its_score(stream):
    directory, frame, paths = stream
    out = _table(_filter(paths["hmm"], directory / "data.csv", rows="").stdout)  # a file instead of -
    model = modeshift.load(paths["hmm"])
    values = frame[["u", "v"]].to_numpy()
    np.testing.assert_allclose(out[["p_mode0", "p_mode1"]].to_numpy(), model.filter_proba(values), atol=1e-12)
    assert out["log_likelihood"].sum() == pytest.approx(model.score(values), rel=1e-12)


@pytest.mark.parametrize("name", ["hmm", "hsmm", "lds"])
def test_a_fixed_lag_writes_each_step_smoothed_on_the_next_lag_steps(stream, name):
    """Step t - L is written when step t arrives, smoothed on y_0..t; at the end the last L steps are
    smoothed on everything, and a lag covering the stream gives the batch smoother."""
    directory, frame, paths = stream
    model, lag, part = modeshift.load(paths[name]), 5, frame.iloc[:50]
    values = part[["u", "v"]].to_numpy()
    result = _filter(paths[name], "-", "--lag", lag, "--json", rows=_csv(part))
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["step"] for r in records] == list(range(50)) and [r["t"] for r in records] == [str(t) for t in range(50)]
    if name == "lds":
        shown = np.array([r["x0"] for r in records])
        expected = [model.filter_smoothed(out.state)[0][0][0] for out in model.filter_stream(values, lag=lag)][lag:]
        np.testing.assert_allclose(shown[: 50 - lag], expected, rtol=1e-10)
        np.testing.assert_allclose(shown[-lag - 1 :], model.smooth(values).means[-lag - 1 :, 0], rtol=1e-9, atol=1e-12)
        return
    shown = np.array([[r["p_mode0"], r["p_mode1"]] for r in records])
    for t in (0, 20, 44):  # written when step t + lag arrived: the smoother of y_0..t+lag
        np.testing.assert_allclose(shown[t], model.predict_proba(values[: t + lag + 1])[t], atol=1e-10)
    np.testing.assert_allclose(shown[-lag - 1 :], model.predict_proba(values)[-lag - 1 :], atol=1e-10)
    whole = _filter(paths[name], "-", "--lag", 60, rows=_csv(part))
    np.testing.assert_allclose(_table(whole.stdout)[["p_mode0", "p_mode1"]], model.predict_proba(values), atol=1e-10)


def test_sequences_of_interleaved_ids_are_filtered_apart(stream):
    directory, frame, paths = stream
    first, second = frame.iloc[:30].assign(id="a"), frame.iloc[60:90].assign(id="b")
    mixed = pd.concat([first, second]).iloc[np.ravel(np.c_[np.arange(30), 30 + np.arange(30)])]  # a, b, a, b, ...
    out = _table(_filter(paths["hmm"], "-", rows=_csv(mixed[["id", "t", "u", "v"]])).stdout)
    assert out["id"].tolist() == ["a", "b"] * 30
    model = modeshift.load(paths["hmm"])
    for key, part in (("a", first), ("b", second)):
        shown = out[out["id"] == key]
        assert shown["step"].tolist() == list(range(30))
        expected = model.filter_proba(part[["u", "v"]].to_numpy())
        np.testing.assert_allclose(shown[["p_mode0", "p_mode1"]], expected, atol=1e-12)


def test_bad_rows_are_named_by_line_and_column(stream):
    directory, frame, paths = stream
    lines = _csv(frame.iloc[:6]).splitlines()
    lines[3] = lines[3].split(",")[0] + ",abc," + lines[3].split(",")[2]  # line 4: u is not a number
    result = _filter(paths["hmm"], "-", rows="\n".join(lines) + "\n")
    assert result.exit_code == 1
    assert result.stderr == "error: standard input, line 4, column 'u': 'abc' is not a number\n"
    assert _table(result.stdout)["step"].tolist() == [0, 1]  # the rows before it were written
    skipped = _filter(paths["hmm"], "-", "--skip-bad", rows="\n".join(lines) + "\n")
    assert skipped.exit_code == 0 and "line 4, column 'u'" in skipped.stderr and "row skipped" in skipped.stderr
    without = _filter(paths["hmm"], "-", rows="\n".join(lines[:3] + lines[4:]) + "\n")
    assert skipped.stdout == without.stdout  # the filter went on as if the row had never come
    ragged = _filter(paths["hmm"], "-", rows="t,u,v\n0,1.0\n")
    assert ragged.exit_code == 1 and "line 2: 2 cells, the header has 3" in ragged.stderr
    infinite = _filter(paths["hmm"], "-", rows="t,u,v\n0,1.0,inf\n")
    assert "line 2, column 'v': 'inf' is infinite" in infinite.stderr
    rejected = _filter(paths["arhmm"], "-", rows="t,u,v\n0,1.0,\n")  # a missing value the ARHMM cannot take
    assert rejected.exit_code == 1 and rejected.stderr.startswith("error: standard input, line 2: y_t")
    lacking = _filter(paths["hmm"], "-", rows="t,u\n0,1.0\n")
    assert lacking.exit_code == 1 and "the header lacks column(s) ['v']" in lacking.stderr


def test_missing_values_are_empty_cells_or_na(stream):
    directory, frame, paths = stream
    part = frame.iloc[:10].copy()
    part.loc[3, "u"], part.loc[5, ["u", "v"]] = np.nan, np.nan
    text = _csv(part).replace(",,", ",NA,", 1)
    out = _table(_filter(paths["hmm"], "-", rows=text).stdout)
    model = modeshift.load(paths["hmm"])
    np.testing.assert_allclose(out[["p_mode0", "p_mode1"]], model.filter_proba(part[["u", "v"]].to_numpy()), atol=1e-12)


def test_learning_online_saves_what_partial_fit_learns(stream, tmp_path):
    directory, frame, paths = stream
    result = _filter(paths["hmm"], "-", "--learn", "--chunk", 50, "-o", tmp_path / "learned.msz", rows=_csv(frame))
    assert result.exit_code == 0, result.output
    assert "filtered 160 row(s), learned from 150 in 3 online-EM step(s)" in result.stderr
    assert "the last 10 rows (under half a chunk of 50) were not learned from" in result.stderr
    model, values = modeshift.load(paths["hmm"]), frame[["u", "v"]].to_numpy()
    steps = []
    state = model.filter_init()
    for start in range(0, 150, 50):  # the filter goes on under the parameters learned so far
        for y in values[start : start + 50]:
            state, out = model.filter_step(state, y)
            steps.append(out.probabilities)
        model.partial_fit(values[start : start + 50])
    learned = modeshift.load(tmp_path / "learned.msz")
    for name in ("startprob_", "transmat_", "means_", "covars_"):
        np.testing.assert_allclose(getattr(learned, name), getattr(model, name), rtol=1e-12)
    np.testing.assert_allclose(_table(result.stdout)[["p_mode0", "p_mode1"]][:150], steps, atol=1e-12)
    assert learned.schema_ == modeshift.load(paths["hmm"]).schema_


def test_learning_refuses_what_would_lose_a_model(stream, tmp_path):
    directory, frame, paths = stream
    before = paths["hmm"].read_bytes()
    same = _filter(paths["hmm"], "-", "--learn", "-o", paths["hmm"], rows=_csv(frame))
    assert same.exit_code == 1 and "is the model read" in same.stderr and paths["hmm"].read_bytes() == before
    assert "--learn needs -o" in _filter(paths["hmm"], "-", "--learn", rows="").stderr
    assert "add --learn" in _filter(paths["hmm"], "-", "-o", tmp_path / "x.msz", rows="").stderr
    nowhere = _filter(paths["hmm"], "-", "--learn", "-o", tmp_path / "no" / "x.msz", rows=_csv(frame))
    assert nowhere.exit_code == 1 and "does not exist" in nowhere.stderr and not nowhere.stdout
    bad = _csv(frame.iloc[:80]) + "80,abc,1.0\n"
    failed = _filter(paths["hmm"], "-", "--learn", "--chunk", 20, "-o", tmp_path / "y.msz", rows=bad)
    assert failed.exit_code == 1 and not (tmp_path / "y.msz").exists()  # a failed stream saves nothing
    unable = _filter(paths["markov-switching"], "-", "--learn", "-o", tmp_path / "z.msz", rows=_csv(frame))
    assert unable.exit_code == 1 and "cannot learn online (--learn)" in unable.stderr


def test_a_switching_lds_writes_its_smoothed_modes_and_state(stream):
    """Kim's smoother: each row's mode probabilities and the mixture's mean and sd, L steps later."""
    directory, frame, paths = stream
    model, part = modeshift.load(paths["slds"]), frame.iloc[:40]
    result = _filter(paths["slds"], "-", "--lag", 3, rows=_csv(part))
    assert result.exit_code == 0, result.output
    out, values = _table(result.stdout), part[["u", "v"]].to_numpy()
    stream_ = list(model.filter_stream(values, lag=3))
    expected = [step.lagged for step in stream_[3:]] + model.filter_smoothed(stream_[-1].state)[1:]
    np.testing.assert_allclose(out[["p_mode0", "p_mode1"]], [law[2] for law in expected], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(out["x0"], [law[0][0] for law in expected], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(out["x0_sd"], [np.sqrt(law[1][0, 0]) for law in expected], rtol=1e-12)


def test_models_that_cannot_filter_say_so(stream, tmp_path):
    chain = modeshift.MarkovChain(order=1).fit([["a", "b", "a"], ["b", "a"]])
    chain.save(tmp_path / "chain.msz")
    result = _filter(tmp_path / "chain.msz", "-", rows="activity\na\n")
    assert result.exit_code == 1 and result.stderr.startswith("error: a MarkovChain cannot filter a stream")


class _Live:
    """``modeshift filter`` in a process of its own, its standard input a pipe: rows are written one
    at a time and each answer read with a timeout."""

    def __init__(self, *args: object):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        command = [sys.executable, "-c", "from modeshift.cli import main; main()", "filter", *map(str, args)]
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [self.lines.put(line) for line in self.process.stdout], daemon=True).start()

    def write(self, line: str) -> None:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def answer(self, timeout: float) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            self.process.kill()
            pytest.fail(f"no answer within {timeout} s; stderr: {self.process.stderr.read()}")

    def __enter__(self) -> _Live:
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.kill()
        self.process.wait()


def test_a_live_pipe_is_answered_row_by_row(stream):
    """The command answers each row before the next is written (a real process, stdin a pipe)."""
    directory, frame, paths = stream
    expected = modeshift.load(paths["hmm"]).filter_proba(frame[["u", "v"]].to_numpy()[:5])
    with _Live(paths["hmm"], "-") as live:
        live.write("t,u,v")
        for t in range(5):
            live.write(f"{t},{float(frame.u[t])!r},{float(frame.v[t])!r}")
            if t == 0:
                assert live.answer(300) == "t,step,log_likelihood,p_mode0,p_mode1\n"  # the first waits for imports
            fields = live.answer(60).strip().split(",")
            assert fields[:2] == [str(t), str(t)]
            np.testing.assert_allclose([float(f) for f in fields[3:]], expected[t], atol=1e-12)
        live.process.stdin.close()
        assert live.process.wait(timeout=60) == 0, live.process.stderr.read()


def test_ctrl_c_ends_a_live_input_and_the_learned_model_is_saved(stream, tmp_path):
    directory, frame, paths = stream
    with _Live(paths["hmm"], "-", "--learn", "--chunk", 6, "--lag", 2, "-o", tmp_path / "live.msz") as live:
        live.write("t,u,v")
        for t in range(10):
            live.write(f"{t},{float(frame.u[t])!r},{float(frame.v[t])!r}")
        answers = [live.answer(300) for _ in range(9)]  # the header, then steps 0 .. 7 (a lag of 2)
        live.process.send_signal(signal.SIGINT)  # while it waits for row 10
        assert live.process.wait(timeout=60) == 0, live.process.stderr.read()
        answers += [live.answer(10) for _ in range(2)]  # the last two steps, smoothed at the end
    assert [line.split(",")[1] for line in answers[1:]] == [str(t) for t in range(10)]
    model = modeshift.load(paths["hmm"])
    values = frame[["u", "v"]].to_numpy()
    model.partial_fit(values[:6])  # one chunk of 6; the last 4 rows fill more than half a chunk
    model.partial_fit(values[6:10])
    np.testing.assert_allclose(modeshift.load(tmp_path / "live.msz").means_, model.means_, rtol=1e-12)


def test_the_filter_command_is_in_the_help():
    result = runner.invoke(app, ["filter", "--help"])
    assert result.exit_code == 0 and "--lag" in result.stdout and "--learn" in result.stdout


def test_labels_of_a_categorical_model_and_counts_of_a_poisson_one(tmp_path):
    """A categorical model reads the file's labels (an unknown one is named); a Poisson model its counts."""
    rng = np.random.default_rng(0)
    weather = np.r_[rng.choice(["sun", "cloud"], 60, p=[0.8, 0.2]), rng.choice(["rain", "cloud"], 60, p=[0.7, 0.3])]
    frame = pd.DataFrame({"day": np.arange(120), "weather": weather})
    frame.to_csv(tmp_path / "weather.csv", index=False)
    fitted = runner.invoke(app, ["fit", str(tmp_path / "weather.csv"), "--emission", "categorical", "--seed", "0",
                                 "-o", str(tmp_path / "w.msz")])  # fmt: skip
    assert fitted.exit_code == 0, fitted.output
    model = modeshift.load(tmp_path / "w.msz")
    codes = frame["weather"].map({label: code for code, label in enumerate(model.schema_.categories)})
    out = _table(_filter(tmp_path / "w.msz", "-", rows=_csv(frame)).stdout)
    assert out["day"].tolist() == list(range(120))
    np.testing.assert_allclose(out[["p_mode0", "p_mode1"]], model.filter_proba(codes.to_numpy()), atol=1e-12)
    snow = _filter(tmp_path / "w.msz", "-", rows="day,weather\n0,sun\n1,snow\n")
    assert snow.exit_code == 1
    assert "line 3, column 'weather': 'snow' is not one of the model's labels ['cloud', 'rain', 'sun']" in snow.stderr
    counts = HMM(2, emission="poisson", n_iter=20, random_state=0).fit(
        pd.DataFrame({"t": np.arange(80), "n": np.r_[rng.poisson(2, 40), rng.poisson(9, 40)]}), time_column="t"
    )
    counts.save(tmp_path / "counts.msz")
    rows = "t,n\n0,3\n1,12\n2,1.5\n3,4\n"
    result = _filter(tmp_path / "counts.msz", "-", "--skip-bad", "--json", rows=rows)
    assert result.exit_code == 0 and "line 4:" in result.stderr and "row skipped" in result.stderr
    shown = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["t"] for r in shown] == ["0", "1", "3"] and [r["step"] for r in shown] == [0, 1, 2]
    np.testing.assert_allclose(
        [[r["p_mode0"], r["p_mode1"]] for r in shown], counts.filter_proba(np.array([3.0, 12.0, 4.0])), atol=1e-12
    )


def test_a_model_fit_on_arrays_reads_the_columns_it_is_told(stream, tmp_path):
    """Without a schema the values are every column but an id and those named like time, or --columns."""
    directory, frame, paths = stream
    values = frame[["u", "v"]].to_numpy()
    model = HMM(2, n_iter=20, random_state=0).fit(values)
    model.save(tmp_path / "arrays.msz")
    expected = model.filter_proba(values[:20])
    plain = _table(
        _filter(tmp_path / "arrays.msz", "-", rows=_csv(frame.iloc[:20].rename(columns={"t": "time"}))).stdout
    )
    np.testing.assert_allclose(plain[["p_mode0", "p_mode1"]], expected, atol=1e-12)
    assert plain["time"].tolist() == list(range(20))
    named = _filter(tmp_path / "arrays.msz", "-", "--columns", "u,v", "--time-column", "t", rows=_csv(frame.iloc[:20]))
    np.testing.assert_allclose(_table(named.stdout)[["p_mode0", "p_mode1"]], expected, atol=1e-12)
    unnamed = _filter(tmp_path / "arrays.msz", "-", rows=_csv(frame.iloc[:20]))  # t is read as a value
    assert unnamed.exit_code == 1 and "line 2: y_t has 3 entries, the model expects 2" in unnamed.stderr


def test_ctrl_c_ends_the_input_at_a_row_boundary():
    """An interrupt while a row is filtered is noted and ends the input after that row; one during the
    wait for a row ends it at once (the signal handler is the command's only while it reads)."""
    from modeshift.cli import _RowsUntilInterrupted

    rows = _RowsUntilInterrupted(iter([["a"], ["b"], ["c"]]))
    assert next(rows) == ["a"]
    rows._interrupt(signal.SIGINT, None)  # a row being filtered: no exception here
    assert list(rows) == []

    class Waiting:
        def __next__(self):
            waiting._interrupt(signal.SIGINT, None)  # the signal arrives during the read

    waiting = _RowsUntilInterrupted(Waiting())
    assert list(waiting) == []
    before = signal.getsignal(signal.SIGINT)
    with _RowsUntilInterrupted(iter([])) as context:
        assert signal.getsignal(signal.SIGINT) == context._interrupt
    assert signal.getsignal(signal.SIGINT) is before


def test_a_continuous_time_model_filters_each_row_at_its_time_stamp(tmp_path):
    """ContinuousARHMM streams at the time column's stamps (numbers, or datetimes read as seconds, as
    the fit read them), not one unit apart; a stamp that does not advance is named by its line."""
    from modeshift import ContinuousARHMM

    rng = np.random.default_rng(0)
    times = np.cumsum(rng.exponential(0.5, 120))
    values = np.r_[rng.normal(0.0, 1.0, 60), rng.normal(3.0, 1.0, 60)]
    stamps = pd.to_datetime("2026-01-01") + pd.to_timedelta(times * 3600, unit="s")
    for column in (times, stamps):
        frame = pd.DataFrame({"t": column, "u": values})
        model = ContinuousARHMM(2, n_iter=10, random_state=0).fit(frame, time_column="t", columns=["u"])
        model.save(tmp_path / "model.msz")
        result = _filter(tmp_path / "model.msz", "-", rows=_csv(frame))
        assert result.exit_code == 0, result.output
        out = _table(result.stdout)
        seconds = model.schema_.read(frame).times
        expected = [step.log_likelihood for step in model.filter_stream(values[:, None], times=seconds)]
        np.testing.assert_allclose(out["log_likelihood"], expected, rtol=1e-12, atol=1e-12)
        unit_apart = [step.log_likelihood for step in model.filter_stream(values[:, None])]
        assert not np.allclose(out["log_likelihood"], unit_apart)  # the stamps were read
    lines = _csv(frame.iloc[:4]).splitlines()
    lines[3] = lines[2]  # line 4 repeats line 3's stamp
    repeated = _filter(tmp_path / "model.msz", "-", rows="\n".join(lines) + "\n")
    assert repeated.exit_code == 1 and "line 4" in repeated.stderr and "time" in repeated.stderr, repeated.stderr
    garbled = _filter(tmp_path / "model.msz", "-", rows="t,u\nnot-a-date,1.0\n")
    assert garbled.exit_code == 1 and "'not-a-date' is not a time stamp" in garbled.stderr, garbled.stderr
