"""Small real datasets shipped with modeshift (provenance in ``datasets/data/README.md``)."""

from __future__ import annotations

from importlib.resources import files

import pandas as pd

__all__ = ["load_earthquakes", "load_faithful", "load_nile"]


def _read(name: str) -> pd.DataFrame:
    with files("modeshift.datasets").joinpath("data", name).open("r", encoding="utf-8") as handle:
        return pd.read_csv(handle)


def load_earthquakes() -> pd.DataFrame:
    """Yearly counts of magnitude >= 7 earthquakes, 1900-2006 (columns ``year``, ``count``).

    The running example of Zucchini & MacDonald (2009) for Poisson hidden Markov models.
    """
    return _read("earthquakes.csv")


def load_faithful() -> pd.DataFrame:
    """Old Faithful eruptions (columns ``obs``, ``eruptions`` in minutes, ``waiting`` in minutes)."""
    return _read("faithful.csv")


def load_nile() -> pd.DataFrame:
    """Annual flow of the Nile at Aswan, 1871-1970 (columns ``year``, ``volume`` in 10^8 m^3).

    The local-level example of Durbin & Koopman (2012), *Time Series Analysis by State Space Methods*.
    """
    return _read("nile.csv")
