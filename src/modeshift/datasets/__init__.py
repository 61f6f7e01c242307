"""Small real datasets shipped with modeshift (provenance in ``datasets/data/README.md``), and
seeded simulators of hybrid systems with ground-truth modes (:mod:`modeshift.datasets.simulators`)."""

from __future__ import annotations

from importlib.resources import files

import pandas as pd

from modeshift.datasets.simulators import (
    Simulation,
    bouncing_ball,
    nascar,
    switching_oscillators,
    switching_spirals,
    thermostat,
)

__all__ = [
    "Simulation",
    "EVENT_LOGS",
    "bouncing_ball",
    "load_co2",
    "load_earthquakes",
    "load_event_log",
    "load_faithful",
    "load_fedfunds",
    "load_filardo",
    "load_hamilton_gnp",
    "load_nile",
    "nascar",
    "switching_oscillators",
    "switching_spirals",
    "thermostat",
]


#: The bundled event logs: name -> what they record.
EVENT_LOGS: dict[str, str] = {
    "running_example": "request for compensation, the textbook example of van der Aalst's Process Mining (6 cases)",
    "receipt": "receipt phase of an environmental permit application, WABO / CoSeLoG (1,434 cases, 27 activities)",
    "helpdesk": "ticketing process of an Italian software company, Verenich 2016 (4,580 cases, 14 activities)",
    "roadtraffic100": "100 cases of the Road Traffic Fine Management Process, de Leoni & Mannhardt 2015",
}


def _read(name: str) -> pd.DataFrame:
    with files("modeshift.datasets").joinpath("data", name).open("r", encoding="utf-8") as handle:
        return pd.read_csv(handle)


def load_earthquakes() -> pd.DataFrame:
    """Yearly counts of magnitude >= 7 earthquakes, 1900-2006 (columns ``year``, ``count``).

    The running example of Zucchini & MacDonald (2009) for Poisson hidden Markov models.
    """
    return _read("earthquakes.csv")


def load_co2() -> pd.DataFrame:
    """Weekly atmospheric CO2 at Mauna Loa, 1958-03-29 to 2001-12-29 (columns ``date``, ``co2`` in
    ppmv; 59 weeks missing, NaN).

    Keeling & Whorf (2004), SIO flask samples (CDIAC): a trend plus a yearly seasonal of period
    365.25 / 7 = 52.18 weeks, the running example of structural time-series models.

    >>> co2 = load_co2()
    >>> len(co2), int(co2["co2"].isna().sum())
    (2284, 59)
    """
    return _read("co2_mauna_loa_weekly.csv")


def load_faithful() -> pd.DataFrame:
    """Old Faithful eruptions (columns ``obs``, ``eruptions`` in minutes, ``waiting`` in minutes)."""
    return _read("faithful.csv")


def load_nile() -> pd.DataFrame:
    """Annual flow of the Nile at Aswan, 1871-1970 (columns ``year``, ``volume`` in 10^8 m^3).

    The local-level example of Durbin & Koopman (2012), *Time Series Analysis by State Space Methods*.
    """
    return _read("nile.csv")


def load_hamilton_gnp() -> pd.DataFrame:
    """Quarterly US real GNP growth, 1951Q2-1984Q4 (columns ``quarter``, ``rgnp_growth``, ``nber_recession``).

    ``rgnp_growth`` is 100 times the change in log real GNP (percent per quarter), the series of
    Hamilton (1989), "A new approach to the economic analysis of nonstationary time series and the
    business cycle", *Econometrica* 57(2), 357-384; ``nber_recession`` is 1 in NBER recession quarters.
    """
    return _read("hamilton_rgnp.csv")


def load_fedfunds() -> pd.DataFrame:
    """Quarterly US federal funds rate, output gap and inflation, 1954Q3-2010Q4.

    Columns ``quarter``, ``fedfunds`` (effective rate, % p.a.), ``ogap`` (output gap, % of potential)
    and ``inf`` (inflation, % p.a.; the first four values are missing). Stata's ``usmacro`` data,
    the running example of the Stata ``mswitch`` manual.
    """
    return _read("usmacro_fedfunds.csv")


def load_filardo() -> pd.DataFrame:
    """Monthly US industrial production and leading indicator growth, 1948-02 to 1991-04.

    Columns ``month``, ``dlip`` (100 times the change in log industrial production) and
    ``dmdlleading`` (growth of the composite index of leading indicators): the data of
    Filardo (1994), "Business-cycle phases and their transitional dynamics", *JBES* 12(3),
    299-308, whose Markov-switching AR(4) lets the lagged leading indicator drive the
    transition probabilities (``endog=dlip[1:]``, ``exog_tvtp=[1, dmdlleading[:-1]]``).
    """
    return _read("filardo_ip_leading.csv")


def load_event_log(name: str) -> pd.DataFrame:
    """A bundled real event log (see ``EVENT_LOGS``): one row per event, columns ``case_id``,
    ``activity`` and ``timestamp`` (ISO 8601 text), rows grouped by case in time order.

    It is what ``as_sequences(log, symbols=True)`` and every symbol model read:

    >>> log = load_event_log("running_example")
    >>> list(log.columns), len(log), log["case_id"].nunique()
    (['case_id', 'activity', 'timestamp'], 42, 6)
    """
    if name not in EVENT_LOGS:
        raise ValueError(f"unknown event log {name!r}; choose one of {', '.join(EVENT_LOGS)}")
    return _read(f"eventlog_{name}.csv")
