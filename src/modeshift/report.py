"""A fitted model as one self-contained HTML page: what was fit, how well, what it found.

:func:`write_report` writes ``report.html`` into a directory: the model's hyperparameters,
its fit statistics (the log-likelihood, or the ELBO of a model with only a bound; the number
of parameters, AIC and BIC where the model has them; the table of candidates when the number
of modes was chosen by BIC), its ``describe()`` and ``summary()`` tables, and the figures of
:func:`modeshift.plot.model_figures` embedded as PNG data URIs. The page has no scripts and
loads nothing, so it can be mailed or archived as one file. :func:`write_index` links several
reports from one page.

>>> import numpy as np
>>> from modeshift import HMM
>>> from modeshift.report import write_report
>>> X = np.r_[np.zeros(60), np.full(40, 4.0)] + np.random.default_rng(0).normal(size=100)
>>> path = write_report(HMM(n_states=2, random_state=0).fit(X), X, "hmm-report")  # doctest: +SKIP
>>> path.name  # doctest: +SKIP
'report.html'
"""

from __future__ import annotations

import base64
import io
import os
import tempfile
from collections.abc import Mapping, Sequence
from html import escape
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from modeshift.models.capabilities import BoundScorer, Describer, Scorer, Selectable
from modeshift.plot import model_figures

__all__ = ["write_index", "write_report"]

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
    **extras: Any,
) -> Path:
    """Write ``directory/report.html`` about a fitted ``model`` and the data ``X`` it was fit to.

    ``lengths`` and the per-step ``extras`` by keyword (``inputs=``, ``exog=``) as for the
    model's ``fit``; ``time`` and ``mode_names`` label the figures (see
    :func:`~modeshift.plot.model_figures`). The directory is created if needed and the file
    replaced atomically. Returns the path of the page.
    """
    title = title or f"{type(model).__name__} report"
    sections = [
        "<h2>Model</h2>",
        f"<pre>{escape(repr(model))}</pre>",
        _table(pd.Series(model.get_params(), dtype=object).to_frame(), header=False),
        "<h2>Fit</h2>",
        _table(pd.Series(_fit_statistics(model, X, lengths, extras), dtype=object).to_frame(), header=False),
    ]
    if getattr(model, "selection_", None) is not None:
        sections += ["<h2>Number of modes (BIC)</h2>", _table(model.selection_.set_index("n_states"))]
    if isinstance(model, Describer):
        sections += ["<h2>Modes</h2>", _table(model.describe())]
    if hasattr(model, "summary"):
        sections += ["<h2>Parameter estimates</h2>", _table(model.summary())]
    figures = model_figures(model, X, lengths=lengths, time=time, mode_names=mode_names, **extras)
    for name, figure in figures.items():
        sections += [f"<h2>{escape(_CAPTIONS.get(name, name))}</h2>", _image(figure, name)]
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


# ------------------------------------------------------------------------- helpers
def _fit_statistics(model: Any, X: Any, lengths: Any, extras: dict[str, Any]) -> dict[str, Any]:
    """The log-likelihood and/or ELBO, parameters, AIC and BIC, as far as the model has them."""
    data = {"lengths": lengths, **extras} if lengths is not None else extras
    statistics: dict[str, Any] = {}
    if isinstance(model, Scorer):
        statistics["log-likelihood"] = model.score(X, **data)
    if isinstance(model, BoundScorer):
        statistics["ELBO"] = model.elbo(X, **data)
    if isinstance(model, Selectable):
        statistics.update(parameters=model.n_parameters, AIC=model.aic(X, **data), BIC=model.bic(X, **data))
    for name in ("n_states_", "converged_"):
        if getattr(model, name, None) is not None:
            statistics[name] = getattr(model, name)
    return statistics


def _table(frame: pd.DataFrame, header: bool = True) -> str:
    """A data frame as an HTML table, arrays and numbers rounded for reading."""
    return frame.map(_cell).to_html(border=0, header=header)


def _cell(value: Any) -> Any:
    if isinstance(value, dict):
        return "; ".join(f"{key}: {_cell(item)}" for key, item in value.items())
    if isinstance(value, np.ndarray | list | tuple):
        return np.array2string(np.asarray(value), precision=4, suppress_small=True, separator=", ")
    if isinstance(value, float | np.floating):
        return f"{value:.6g}"
    return value


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
    handle, temporary = tempfile.mkstemp(prefix=".report-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(page)
        os.chmod(temporary, 0o644)  # mkstemp's 0600 would hide the page from a web server
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
