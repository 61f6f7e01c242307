"""The README's Python examples run as written, each code block in turn in one namespace, with the
names it leaves to the reader (``sensor.csv``, ``nile``, ``returns``, ...) bound to bundled or
simulated data."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from modeshift.datasets import load_earthquakes, load_filardo, load_nile

README = Path(__file__).parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
SLOW = ("pmmh(",)  # 5,000 PMMH iterations of a particle filter: minutes


def _two_levels(rng: np.random.Generator, n: int) -> np.ndarray:
    """Two features switching between two levels every 50 steps or so."""
    levels = np.repeat(rng.integers(0, 2, size=n // 50 + 1), 50)[:n]
    return np.column_stack([levels * 3.0, -levels * 2.0]) + rng.normal(size=(n, 2))


@pytest.fixture(scope="module")
def namespace(tmp_path_factory) -> dict:
    rng = np.random.default_rng(0)
    directory = tmp_path_factory.mktemp("readme")
    np.savetxt(directory / "sensor.csv", _two_levels(rng, 400), delimiter=",")
    runs = [_two_levels(rng, n) for n in (500, 320, 410)]
    frame = pd.concat(
        [
            pd.DataFrame({"id": i, "t": np.arange(len(run)), "a": run[:, 0], "b": run[:, 1]})
            for i, run in enumerate(runs)
        ]
    )
    filardo = load_filardo()
    volatility = np.exp(0.5 * np.cumsum(rng.normal(0, 0.2, 300)) * 0.1)
    return {
        "__directory__": directory,
        "run1": runs[0],
        "run2": runs[1],
        "run3": runs[2],
        "X_all": np.concatenate(runs),
        "lengths": [len(run) for run in runs],
        "frame": frame,
        "yearly_counts": load_earthquakes()["count"].to_numpy(),
        "quakes": load_earthquakes()["count"].to_numpy(),
        "nile": load_nile()["volume"].to_numpy(float),
        "dlip": filardo["dlip"].to_numpy(),
        "leading": filardo[["dmdlleading"]].to_numpy(),
        "returns": volatility * rng.normal(size=300),
        "log_prior": lambda mu, phi, sigma: 0.0 if abs(phi) < 1 and sigma > 0 else -np.inf,
    }


def _run(blocks: list[str], namespace: dict) -> None:
    for block in blocks:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exec(compile(block, f"README.md block {BLOCKS.index(block) + 1}", "exec"), namespace)


def test_the_readme_python_examples_run_as_written(namespace, monkeypatch):
    """Every block in order, but the one that runs 5,000 PMMH iterations (the slow test below)."""
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(namespace["__directory__"])
    _run([block for block in BLOCKS if not any(s in block for s in SLOW)], namespace)


@pytest.mark.slow
def test_the_readme_particle_examples_run_as_written(namespace, monkeypatch):
    monkeypatch.chdir(namespace["__directory__"])
    _run([block for block in BLOCKS if any(s in block for s in SLOW)], namespace)
