"""write_report writes one valid, self-contained HTML page in the data's own words, whose images
all load in a browser. What a report must hold follows from the model's capabilities
(modeshift.models.capabilities), never from its class."""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from modeshift import (
    ARHMM,
    HMM,
    LinearGaussianSSM,
    MarkovAutoregression,
    MarkovChain,
    MarkovJumpProcess,
    MarkovRegression,
    StructuralModel,
    SwitchingLDS,
    SymbolHMM,
)
from modeshift import report as report_module
from modeshift.data import Sequences
from modeshift.datasets import load_nile, thermostat
from modeshift.models.capabilities import BoundScorer, Forecaster, IterativeFit, ModeDecoder, Scorer, Selectable
from modeshift.models.structural_components import LocalLevel
from modeshift.plot import format_number, format_share
from modeshift.report import write_index, write_report

pytest.importorskip("matplotlib", reason="reports need matplotlib: pip install modeshift[plot]")
Image = pytest.importorskip("PIL.Image")  # matplotlib depends on Pillow

DATA_URI = 'src="data:image/png;base64,'
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class _Page(HTMLParser):
    """Checks that every element is closed in order; collects the tags, image sources, headings and
    the text of every table cell (by the heading of the section it is in)."""

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.tags: list[str] = []
        self.images: list[str] = []
        self.headings: list[str] = []
        self.cells: dict[str, list[list[str]]] = {}  # section -> rows of the outermost table -> cells
        self._text: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        elif tag not in VOID:
            self.open.append(tag)
        if tag == "tr" and self.open.count("table") == 1:
            self.cells.setdefault(self.headings[-1] if self.headings else "", []).append([])
        if tag in ("h2", "th", "td") and self.open.count("table") <= 1:
            self._text = []

    def handle_data(self, data):
        if self._text is not None:
            self._text.append(data)

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, f"</{tag}> closes <{self.open[-1] if self.open else None}>"
        self.open.pop()
        if tag == "h2":
            self.headings.append("".join(self._text))
        elif tag in ("th", "td") and self.open.count("table") == 1:
            self.cells[self.headings[-1] if self.headings else ""][-1].append("".join(self._text))
        if tag in ("h2", "th", "td") and self.open.count("table") <= 1:
            self._text = None

    def table(self, section: str) -> dict[str, dict[str, str]]:
        """The table of ``section`` as {row label: {column: cell}} (its first row is the header)."""
        header, *rows = self.cells[section]
        return {row[0]: dict(zip(header[1:], row[1:])) for row in rows}


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    assert page.open == [], f"unclosed elements {page.open}"
    return page


def _pngs(page: _Page) -> list[Image.Image]:
    images = []
    for source in page.images:
        assert source.startswith("data:image/png;base64,")
        image = Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1], validate=True)))
        assert image.format == "PNG" and image.width > 100
        images.append(image)
    return images


def _figures(model) -> set[str]:
    """The figures a report of ``model`` shows, from its capabilities."""
    if isinstance(model, ModeDecoder):
        names = {"The series and its most likely mode", "Posterior mode probabilities", "The learned automaton"}
    elif isinstance(model, Forecaster):
        names = {"Forecast with 50 % and 90 % predictive intervals"}
    else:
        names = set()
    traced = isinstance(model, IterativeFit) and model.history_
    return names | ({"Training objective per iteration"} if traced else set())


def _series() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.r_[rng.normal(0, 1, 60), rng.normal(4, 1, 40), rng.normal(0, 1, 50)]


def _text_outside_images(path: Path) -> str:
    return re.sub(r'src="data:image/png;base64,[^"]*"', "", path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    X = _series()
    model = HMM(n_states="auto", max_states=3, n_iter=200, random_state=0).fit(X)
    return write_report(model, X, tmp_path_factory.mktemp("report") / "hmm", title="Two <levels>")


def test_report_is_a_valid_self_contained_page(report):
    text = report.read_text(encoding="utf-8")
    page = _parse(report)
    assert report.name == "report.html" and text.startswith("<!DOCTYPE html>")
    assert "<title>Two &lt;levels&gt;</title>" in text and "<h1>Two &lt;levels&gt;</h1>" in text
    assert not {"script", "link", "iframe"} & set(page.tags)  # no scripts, nothing to fetch
    for heading in ("Fit", "Number of modes (BIC)", "Modes", "Parameters", "Settings", "The learned automaton"):
        assert heading in page.headings
    assert text.count("<img ") == text.count(DATA_URI) == len(page.images) == 4
    for image in _pngs(page):
        image.verify()


def _thermostat_slds(scale: float = 1.0, offset: float = 0.0) -> SwitchingLDS:
    """The thermostat's true recurrent SLDS, its temperature observed as y = scale x + offset."""
    truth = thermostat(10).parameters
    model = SwitchingLDS(n_states=2, state_dim=1, recurrent=True)
    model.dynamics_matrices_, model.dynamics_offsets_ = truth["dynamics_matrices"], truth["dynamics_offsets"]
    model.dynamics_input_matrices_, model.dynamics_covariances_ = np.zeros((2, 1, 0)), np.full((2, 1, 1), 0.01)
    model.observation_matrix_, model.observation_offset_ = np.full((1, 1), scale), np.full(1, offset)
    model.feedthrough_matrix_, model.observation_covariance_ = np.zeros((1, 0)), np.full((1, 1), 0.04)
    model.initial_state_mean_, model.initial_state_covariance_ = np.array([20.0]), np.ones((1, 1))
    model.startprob_ = np.full(2, 0.5)
    model.recurrence_weights_, model.input_weights_ = truth["recurrence_weights"], np.zeros((2, 0))
    model.recurrence_biases_ = truth["recurrence_biases"]
    return model


MODELS = {
    "HMM": lambda: HMM(n_states=2, n_iter=10, random_state=0),
    "ARHMM": lambda: ARHMM(n_states=2, n_iter=10, random_state=0),
    "LinearGaussianSSM": lambda: LinearGaussianSSM.local_level(n_iter=5),
    "StructuralModel": lambda: StructuralModel(components=(LocalLevel(),)),
    "MarkovAutoregression": lambda: MarkovAutoregression(n_states=2, order=1, n_restarts=2, random_state=0),
    "MarkovRegression": lambda: MarkovRegression(n_states=2, n_restarts=2, random_state=0),
    "SwitchingLDS": lambda: SwitchingLDS(n_states=2, state_dim=1, n_iter=5, random_state=0),
}


@pytest.mark.filterwarnings("ignore::modeshift.models.em.ConvergenceWarning")
@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_gets_its_fit_figures_and_a_parameter_table(tmp_path, name):
    X = _series()
    model = MODELS[name]().fit(X)
    path = write_report(model, X, tmp_path)
    page = _parse(path)
    assert f"<title>{type(model).__name__} report</title>" in path.read_text(encoding="utf-8")
    fit = {label: value for label, value in page.cells["Fit"]}
    assert ("log-likelihood" in fit) == (isinstance(model, Scorer) and not isinstance(model, BoundScorer))
    assert ("ELBO (a lower bound on the log-likelihood)" in fit) == isinstance(model, BoundScorer)
    assert any(label.startswith("BIC") for label in fit) == isinstance(model, Selectable)
    parameters = page.cells["Parameters"]
    assert len(parameters) > 1 and all(cell.strip() for row in parameters[1:] for cell in row)
    assert _figures(model) <= set(page.headings) and len(page.images) == len(_figures(model))
    _pngs(page)


def test_no_literal_newlines_nor_scientific_notation_in_the_tables(tmp_path):
    X = _series()
    model = LinearGaussianSSM.local_level(n_iter=5).fit(X)  # its `fixed` is a tuple of four long names
    text = _text_outside_images(write_report(model, X, tmp_path))
    assert "\\n" not in text
    assert not re.search(r"\d[eE][+-]?\d", text), re.search(r".{40}\d[eE][+-]?\d.{20}", text)


def test_a_regime_that_never_returns_shows_its_share_of_the_data(tmp_path):
    """The Nile's level shift of 1899: the fitted chain never leaves the later regime, so its
    stationary distribution gives the earlier one ~1e-10 — the long-run share, not the 28 % of
    the years it covers. The report shows both, as percentages."""
    nile = load_nile()
    flow = nile["volume"].to_numpy()
    model = HMM(n_states=2, n_restarts=5, random_state=0).fit(flow)
    page = _parse(write_report(model, flow, tmp_path, time=nile["year"], value_names=["volume"]))
    early = int(np.argmax(model.means_[:, 0]))
    row = page.table("Modes")[f"mode {early}"]
    expected = model.predict_proba(flow)[:, early].mean()
    assert abs(expected - 0.28) < 0.02  # 1871-1898
    assert row["share of the data"] == format_share(expected)
    assert row["long-run share"] == "< 0.1 %"
    assert row["mean dwell"].endswith(" years")  # the time stamps' name is a unit


@pytest.mark.parametrize("scale, offset", [(1.0, 0.0), (2.0, 1.0)])
def test_guards_and_names_are_in_the_data_units(tmp_path, scale, offset):
    """The true thermostat switches off above 22 degrees and on below 18 (latent x); observed as
    y = c x + d the report says so in y, under the value column's name."""
    y = scale * thermostat(200, random_state=0).observations + offset
    path = write_report(_thermostat_slds(scale, offset), y, tmp_path, value_names=["temperature"])
    modes = _parse(path).table("Modes")
    high, low = f"{22 * scale + offset:g}", f"{18 * scale + offset:g}"
    assert {row["switches where"] for row in modes.values()} == {
        f"to mode 1: temperature > {high}",
        f"to mode 0: temperature < {low}",
    }
    assert "SwitchingLDS fit to temperature: one sequence of 200 steps." in path.read_text(encoding="utf-8")


def _wells(n_wells: int = 3) -> pd.DataFrame:
    """Sequences in a long data frame, rows shuffled: monthly dates, a level that shifts."""
    rng = np.random.default_rng(4)
    frames = []
    for well in range(n_wells):
        n = 20 + 7 * (well % 3)
        level = np.r_[np.zeros(n // 2), np.full(n - n // 2, 3.0)] + rng.normal(0, 0.3, n)
        dates = pd.date_range("2001-01-01", periods=n, freq="MS").strftime("%Y-%m-%d")
        frames.append(pd.DataFrame({"well": f"W{well}", "date": dates, "depth_m": level}))
    return pd.concat(frames).sample(frac=1.0, random_state=0)


def test_every_sequence_is_shown_with_its_id_dates_and_time_unit(tmp_path):
    frame = _wells()
    columns = {"id_column": "well", "time_column": "date"}
    model = HMM(n_states=2, n_iter=20, random_state=0).fit(frame, **columns)
    path = write_report(model, frame, tmp_path, **columns)
    page = _parse(path)
    text = path.read_text(encoding="utf-8")
    assert "HMM fit to depth_m: 3 sequences, 81 steps in all. Time stamps: date; a step lasts 1 month." in text
    sequences = page.table("Sequences")
    assert set(sequences) == {"well W0", "well W1", "well W2"}
    assert sequences["well W1"]["steps"] == "27" and sequences["well W1"]["from"] == "2001-01-01"
    assert sequences["well W1"]["to"] == "2003-03-01"
    assert all(row["mean dwell"].endswith(("months", "month", "absorbing")) for row in page.table("Modes").values())
    one = _parse(write_report(model, frame, tmp_path / "one", sequences=[0], **columns))
    panels = {image.height for image in _pngs(page)[:2]}, {image.height for image in _pngs(one)[:2]}
    assert min(panels[0]) > 2 * max(panels[1])  # a panel per sequence: three panels, then one


def test_sequences_read_from_a_frame_are_labelled_by_the_column_keywords(tmp_path):
    """What the command line does: it reads the file into Sequences and names the columns."""
    frame = _wells().assign(year=lambda wells: 1900 + wells.groupby("well").cumcount()).drop(columns="date")
    seqs = Sequences.from_dataframe(frame, id_column="well", time_column="year")
    model = HMM(n_states=2, n_iter=20, random_state=0).fit(seqs)
    path = write_report(model, seqs, tmp_path, id_column="well", time_column="year", value_columns=["depth_m"])
    assert "HMM fit to depth_m: 3 sequences, 81 steps in all. Time stamps: year; a step lasts 1 year." in (
        path.read_text(encoding="utf-8")
    )
    assert set(_parse(path).table("Sequences")) == {"well W0", "well W1", "well W2"}


@pytest.mark.skipif(not hasattr(Sequences, "schema"), reason="the data schema (issue 15) is not merged yet")
def test_time_stamps_are_written_as_the_file_wrote_them(tmp_path):
    quarters = pd.period_range("1990Q1", periods=40, freq="Q").astype(str).to_numpy()
    frame = _wells().assign(quarter=lambda wells: quarters[wells.groupby("well").cumcount()]).drop(columns="date")
    seqs = Sequences.from_dataframe(frame, id_column="well", time_column="quarter")
    model = HMM(n_states=2, n_iter=20, random_state=0).fit(seqs)
    path = write_report(model, seqs, tmp_path)
    assert "HMM fit to depth_m: 3 sequences, 81 steps in all. Time stamps: quarter; a step lasts 1 quarter." in (
        path.read_text(encoding="utf-8")
    )
    rows = _parse(path).table("Sequences")
    assert (rows["well W1"]["from"], rows["well W1"]["to"]) == ("1990Q1", "1996Q3")  # 27 quarters


def test_many_sequences_are_all_listed_and_the_figures_say_how_many_they_show(tmp_path, monkeypatch):
    monkeypatch.setattr(report_module, "MAX_PANELS", 2)  # 20 panels take a while to draw
    frame = _wells(4)
    columns = {"id_column": "well", "time_column": "date"}
    model = HMM(n_states=2, n_iter=5, random_state=0).fit(frame, **columns)
    path = write_report(model, frame, tmp_path, **columns)
    assert len(_parse(path).table("Sequences")) == 4
    assert "The figures show 2 of the 4 sequences" in path.read_text(encoding="utf-8")


def _symbols() -> list[list[str]]:
    rng = np.random.default_rng(0)
    return [list(rng.choice(list("ABC"), size=30, p=[0.6, 0.3, 0.1])) for _ in range(5)]


@pytest.mark.parametrize("order", [1, 2])
def test_a_chain_on_symbols_reports_its_next_symbol_probabilities(tmp_path, order):
    """A row per state (a symbol, or a context of ``order`` symbols), a column per next symbol:
    p(next = x | state) = (1 - p(end | state)) transmat_[state, state moved to with x]."""
    sequences = _symbols()
    model = MarkovChain(order=order).fit(sequences)
    path = write_report(model, sequences, tmp_path)
    page = _parse(path)
    assert "MarkovChain fit to sequences of 3 symbols" in path.read_text(encoding="utf-8")
    table = page.table("Parameters")
    states = ["".join(state) if isinstance(state, tuple) else state for state in model.states_]
    assert list(table) == states
    for i, state in enumerate(states):
        end = model.end_probability_[i]
        assert table[state]["then the end"] == format_share(end)
        for j, target in enumerate(model.states_):
            following = target[-1] if isinstance(target, tuple) else target
            if model.transmat_[i, j] > 0:
                assert table[state][f"then {following}"] == format_share((1 - end) * model.transmat_[i, j])
    assert ("The learned automaton" in page.headings) == (len(states) <= 12)
    _pngs(page)


@pytest.mark.filterwarnings("ignore::modeshift.models.em.ConvergenceWarning")
def test_a_hidden_markov_model_of_symbols_draws_its_modes_over_the_symbols(tmp_path):
    sequences = _symbols()
    model = SymbolHMM(n_states=2, n_iter=10, random_state=0).fit(sequences)
    page = _parse(write_report(model, sequences, tmp_path))
    assert _figures(model) <= set(page.headings) and len(page.images) == len(_figures(model))
    modes = page.table("Modes")
    for k, row in enumerate(modes.values()):
        top = model.describe()["top_symbols"][k]
        assert row["likeliest symbols"] == ", ".join(f"{symbol} {format_share(p)}" for symbol, p in top)
    assert len(page.table("Sequences")) == 5


def test_time_stamped_events_keep_their_symbols_and_stamps(tmp_path):
    rng = np.random.default_rng(0)
    times = [np.cumsum(rng.exponential(1.0, size=20)) for _ in range(3)]
    states = [list(rng.choice(list("XY"), size=20)) for _ in range(3)]
    model = MarkovJumpProcess().fit(states, times=times)
    path = write_report(model, states, tmp_path, time=times, time_name="hour")
    text = path.read_text(encoding="utf-8")
    spacing = np.median(np.concatenate([np.diff(t) for t in times]))
    assert "fit to sequences of 2 symbols" in text and f"a step lasts {format_number(spacing, 3)} hours" in text
    sequences = _parse(path).table("Sequences")
    assert [row["to"] for row in sequences.values()] == [format_number(t[-1], 6) for t in times]


def test_report_replaces_the_old_page_atomically(tmp_path):
    X = _series()
    model = LinearGaussianSSM.local_level(n_iter=3).fit(X)
    (tmp_path / "report.html").write_text("old", encoding="utf-8")
    write_report(model, X, tmp_path)
    assert (tmp_path / "report.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert sorted(os.listdir(tmp_path)) == ["report.html"]  # no temporary file left behind


def test_index_links_the_reports(tmp_path):
    index = write_index(tmp_path, {"A & B": "a/report.html"}, title="demo", summary="found <2> modes")
    text = index.read_text(encoding="utf-8")
    _parse(index)
    assert '<a href="a/report.html">A &amp; B</a>' in text and "found &lt;2&gt; modes" in text


# ----------------------------------------------------------------------------- a real browser
@pytest.fixture(scope="module")  # decided before the module's report is written
def chromium() -> str:
    """The Chromium to run: $MODESHIFT_CHROMIUM, or chromium / chromium-browser on the PATH."""
    for name in (os.environ.get("MODESHIFT_CHROMIUM"), "chromium", "chromium-browser"):
        if name and (found := shutil.which(name)):
            return found
    pytest.skip(
        "no Chromium found (chromium or chromium-browser on the PATH, or $MODESHIFT_CHROMIUM): "
        "`make browser` installs it (docs/testing.md); without it the report is not checked in a browser"
    )


def _browser_report(kind: str, report: Path, tmp_path: Path) -> Path:
    """The report of one model of each kind of figure set: modes of a series (the module's HMM),
    a state-space model, Markov switching, a chain on symbols."""
    if kind == "hmm":
        return report
    X = _series()
    if kind == "lds":
        model, data = LinearGaussianSSM.local_level(n_iter=3).fit(X), X
    elif kind == "markov switching":
        model, data = MarkovRegression(n_states=2, random_state=0).fit(X), X
    else:
        data = _symbols()
        model = MarkovChain().fit(data)
    return write_report(model, data, tmp_path / "report")


@pytest.mark.parametrize("kind", ["hmm", "lds", "markov switching", "chain"])
def test_every_image_loads_in_a_headless_browser(chromium, report, tmp_path, kind):
    """The report (which has no scripts) is loaded in an iframe of a wrapper page whose
    script writes each image's naturalWidth into the DOM that Chromium dumps."""
    report = _browser_report(kind, report, tmp_path)
    wrapper = tmp_path / "wrapper.html"
    wrapper.write_text(
        f"""<!DOCTYPE html><html><body><pre id="result">not loaded</pre>
<iframe id="report" src="{report.as_uri()}"></iframe>
<script>
document.getElementById("report").addEventListener("load", function () {{
  var widths = Array.from(this.contentDocument.images, function (image) {{
    return image.complete ? image.naturalWidth : 0;
  }});
  document.getElementById("result").textContent = "widths " + widths.join(" ");
}});
</script></body></html>""",
        encoding="utf-8",
    )
    command = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--allow-file-access-from-files",  # lets the wrapper read the report's DOM
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        wrapper.as_uri(),
    ]
    dom = subprocess.run(command, capture_output=True, text=True, timeout=120).stdout
    match = re.search(r'<pre id="result">widths ([\d ]*)</pre>', dom)
    assert match, f"the page did not report its images; Chromium printed:\n{dom[:2000]}"
    widths = [int(width) for width in match.group(1).split()]
    expected = [
        Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))).width for source in _parse(report).images
    ]
    assert widths == expected  # every figure rendered, at its own size
