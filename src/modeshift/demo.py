"""Fit switching models to real and simulated data, say what they found, and write a report per case.

``python -m modeshift.demo`` (or ``modeshift demo -o DIR``) runs :func:`run` on:

* US real GNP growth 1951-1984: Hamilton's (1989) two-regime switching AR(4), whose
  low-growth regime is compared with the NBER recession dates;
* yearly counts of major earthquakes and the annual flow of the Nile: hidden Markov models
  whose number of regimes BIC chooses (for the Nile it finds the level shift of 1899), and a
  local level model forecasting the Nile;
* a simulated thermostat with hysteresis: a recurrent switching linear dynamical system with
  the number of modes chosen by BIC, scored against the true modes and set points.

Each case writes ``<output_dir>/<case>/report.html`` (:func:`modeshift.report.write_report`);
``<output_dir>/index.html`` links them under the printed summary. It takes well under a
minute, most of it compiling the numba kernels on a first run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from modeshift import HMM, LinearGaussianSSM, MarkovAutoregression, SwitchingLDS
from modeshift.datasets import load_earthquakes, load_hamilton_gnp, load_nile, thermostat
from modeshift.metrics import match_modes, mode_accuracy, segments

__all__ = ["main", "run"]


@dataclass
class _Case:
    """A fitted model, the data it was fit to, and what it found (a few lines of text)."""

    name: str  # the folder of its report
    title: str
    findings: list[str]
    model: Any
    data: np.ndarray
    report_options: dict[str, Any] = field(default_factory=dict)  # time stamps, names of the values and modes


def run(output_dir: str | PathLike[str] = "modeshift-demo") -> str:
    """Run every case, write its report and ``index.html`` into ``output_dir``; print each case's
    findings as it finishes, and return the summary."""
    from modeshift.report import write_index, write_report  # needs matplotlib: pip install modeshift[plot]

    directory = Path(output_dir)
    cases, parts = [], []
    for build in (_recessions, _earthquakes, _nile_shift, _nile_forecast, _thermostat):
        case = build()
        write_report(case.model, case.data, directory / case.name, title=case.title, **case.report_options)
        parts.append(f"{case.title}\n" + "\n".join(f"  {line}" for line in case.findings))
        print(parts[-1], flush=True)
        cases.append(case)
    summary = "\n".join(parts)
    index = write_index(
        directory,
        {case.title: f"{case.name}/report.html" for case in cases},
        title="modeshift demo",
        summary=summary,
    )
    print(f"\nReports: {index}", flush=True)
    return f"{summary}\n\nReports: {index}"


def main() -> None:
    run()


# --------------------------------------------------------------------------- cases
def _recessions() -> _Case:
    data = load_hamilton_gnp()
    growth = data["rgnp_growth"].to_numpy()
    model = MarkovAutoregression(n_states=2, order=4, switching_ar=False, random_state=0).fit(growth)
    recession = model.predict_proba(growth)[:, 0] > 0.5  # regimes are ordered by mean: 0 has the lower one
    nber = data["nber_recession"].to_numpy()[model.order :] == 1
    means, durations = model.means_, model.dwell_times_
    return _Case(
        "gnp",
        f"US real GNP growth, {data.quarter.iloc[0]}-{data.quarter.iloc[-1]}: Hamilton's switching AR(4)",
        [
            f"2 regimes; regime 0 = contraction, mean growth {means[0]:.2f}%/quarter, "
            f"expected duration {durations[0]:.1f} quarters;",
            f"regime 1 = expansion, mean growth {means[1]:.2f}%/quarter, "
            f"expected duration {durations[1]:.1f} quarters;",
            f"matches NBER recessions in {np.mean(recession == nber):.0%} of quarters "
            f"(log-likelihood {model.score(growth):.3f}, Hamilton's -181.263)",
        ],
        model,
        growth,
        {
            "time": pd.PeriodIndex(data["quarter"], freq="Q").to_timestamp().to_numpy(),
            "time_name": "quarter",
            "value_names": ["real GNP growth (%)"],
            "mode_names": ("contraction", "expansion"),
        },
    )


def _earthquakes() -> _Case:
    data = load_earthquakes()
    counts = data["count"].to_numpy()
    model = HMM(n_states="auto", emission="poisson", max_states=4, n_restarts=5, random_state=0).fit(counts)
    rates = model.lambdas_[:, 0]
    order = np.argsort(rates)
    dwell = 1.0 / (1.0 - np.diag(model.transmat_))
    return _Case(
        "earthquakes",
        f"Major earthquakes (magnitude >= 7) per year, {data.year.min()}-{data.year.max()}: Poisson HMM",
        [
            f"BIC chose {model.n_states_} regimes among 1-{model.max_states}: "
            f"{_listed(rates[order], '.1f')} quakes a year, "
            f"in spells of {_listed(dwell[order], '.1f')} years on average"
        ],
        model,
        counts,
        {
            "time": data["year"],
            "value_names": ["major earthquakes"],
            "mode_names": [f"{rate:.1f} a year" for rate in rates],
        },
    )


def _nile_shift() -> _Case:
    data = load_nile()
    flow, years = data["volume"].to_numpy(), data["year"].to_numpy()
    model = HMM(n_states="auto", max_states=3, n_restarts=5, random_state=0).fit(flow)
    means = model.means_[:, 0]
    periods = segments(model.predict(flow))
    return _Case(
        "nile-regimes",
        f"Nile flow at Aswan, {years[0]}-{years[-1]}: Gaussian HMM",
        [
            f"BIC chose {model.n_states_} regimes among 1-{model.max_states}: mean flow "
            + ", ".join(f"{means[p.mode]:.0f} in {years[p.start]}-{years[p.end - 1]}" for p in periods.itertuples())
        ],
        model,
        flow,
        {
            "time": data["year"],
            "value_names": ["flow (10^8 m^3)"],
            "mode_names": [f"mean {mean:.0f}" for mean in means],
        },
    )


def _nile_forecast() -> _Case:
    data = load_nile()
    flow, years = data["volume"].to_numpy(), data["year"].to_numpy()
    model = LinearGaussianSSM.local_level(n_iter=200).fit(flow)
    means, covariances = model.forecast(flow, horizon=10)
    half_width = 1.645 * np.sqrt(covariances[:, 0, 0])  # of the central 90% interval
    level_sd, noise_sd = np.sqrt(model.transition_covariance_[0, 0]), np.sqrt(model.observation_covariance_[0, 0])
    return _Case(
        "nile-forecast",
        "Nile flow: local level model (Kalman filter and smoother), forecast",
        [f"level noise sd {level_sd:.1f}, observation noise sd {noise_sd:.1f};"]
        + [
            f"forecast for {years[-1] + h + 1}: {means[h, 0]:.0f}, 90% interval "
            f"{means[h, 0] - half_width[h]:.0f} to {means[h, 0] + half_width[h]:.0f}"
            for h in (0, len(means) - 1)
        ],
        model,
        flow,
        {"time": data["year"], "value_names": ["flow (10^8 m^3)"]},
    )


def _thermostat() -> _Case:
    sim = thermostat(1000, random_state=0)
    y = sim.observations
    model = SwitchingLDS(n_states="auto", state_dim=1, recurrent=True, max_states=3, n_iter=150, random_state=0)
    model.fit(y)
    path = model.predict(y)
    matched = match_modes(sim.modes, path)
    names = [
        sim.mode_names[matched[k]] if k < len(matched) and matched[k] >= 0 else f"extra mode {k}"
        for k in range(model.n_states_)
    ]
    truth = {
        ("heating", "cooling"): ("above", sim.parameters["high"]),
        ("cooling", "heating"): ("below", sim.parameters["low"]),
    }
    guards = []
    for (source, target), (side, threshold) in sorted(_guards_in_observation_units(model).items()):
        true_side, true_threshold = truth.get((names[source], names[target]), ("", np.nan))
        guards.append(
            f"  {names[source]} -> {names[target]} {side} {threshold:.1f} degrees "
            f"(true: {true_side} {true_threshold:.1f})"
        )
    return _Case(
        "thermostat",
        f"Thermostat with hysteresis (simulated, {len(y)} steps): recurrent switching LDS",
        [
            f"BIC chose {model.n_states_} modes among 1-{model.max_states}; "
            f"mode accuracy {mode_accuracy(sim.modes, path):.1%};",
            "learned guards (where switching is more likely than staying):",
            *guards,
        ],
        model,
        y,
        {"value_names": ["temperature (degrees)"], "mode_names": names},
    )


def _listed(values: np.ndarray, spec: str) -> str:
    """'1.0, 2.0 and 3.0'."""
    words = [format(value, spec) for value in values]
    return " and ".join([", ".join(words[:-1]), words[-1]]) if len(words) > 1 else words[0]


def _guards_in_observation_units(model: SwitchingLDS) -> dict[tuple[int, int], tuple[str, float]]:
    """For a recurrent SLDS with one state and one observation: each guard
    w x + b > 0 of ``describe()`` as 'above' or 'below' a threshold of y = C x + d."""
    C, d = model.observation_matrix_[0, 0], model.observation_offset_[0]
    table = model.describe()
    guards = {}
    for target, entries in table["entry_weights"].items():
        for source, weights in entries.items():
            w, b = weights[0], table["entry_biases"][target][source]
            guards[source, target] = ("above" if w * C > 0 else "below", C * (-b / w) + d)
    return guards


if __name__ == "__main__":
    main()
