"""``python -m modeshift.demo``: fit switching models to bundled data and say what they found."""

from __future__ import annotations

import numpy as np

from modeshift import HMM, MarkovAutoregression
from modeshift.datasets import load_earthquakes, load_faithful, load_hamilton_gnp


def _earthquakes() -> None:
    data = load_earthquakes()
    counts = data["count"].to_numpy()
    print(f"Earthquakes: {len(counts)} yearly counts of magnitude >= 7 quakes, {data.year.min()}-{data.year.max()}")
    print("  Poisson HMMs by number of states (Zucchini & MacDonald's example):")
    best = None
    for n_states in (1, 2, 3, 4):
        model = HMM(n_states, emission="poisson", n_restarts=5, random_state=0).fit(counts)
        bic = model.bic(counts)
        print(f"    K={n_states}: log-likelihood {model.score(counts):9.3f}   BIC {bic:8.2f}")
        if best is None or bic < best[0]:
            best = (bic, model)
    model = best[1]
    order = np.argsort(model.lambdas_[:, 0])
    print(f"  BIC chooses K={model.n_states}. Rates per year: {np.round(model.lambdas_[order, 0], 2)}")
    print("  Transition matrix (rows: from, ordered by rate):")
    for row in model.transmat_[np.ix_(order, order)]:
        print("    " + "  ".join(f"{p:.3f}" for p in row))
    states = np.argsort(order)[model.predict(counts)]
    changes = np.flatnonzero(np.diff(states)) + 1
    periods = np.split(np.arange(len(counts)), changes)
    print(
        "  Decoded regimes: "
        + ", ".join(
            f"{data.year[p[0]]}-{data.year[p[-1]]} (rate {model.lambdas_[order[states[p[0]]], 0]:.1f})" for p in periods
        )
    )


def _faithful() -> None:
    data = load_faithful()
    X = data[["eruptions", "waiting"]].to_numpy()
    model = HMM(2, covariance="full", n_restarts=3, random_state=0).fit(X)
    order = np.argsort(model.means_[:, 0])
    print(f"\nOld Faithful: {len(X)} eruptions (duration, waiting time), 2-state Gaussian HMM")
    for name, k in zip(("short", "long"), order):
        mean = model.means_[k]
        print(
            f"  {name:5s} eruptions: {mean[0]:.2f} min, then {mean[1]:.1f} min wait; "
            f"P(next is the same kind) = {model.transmat_[k, k]:.2f}"
        )


def _recessions() -> None:
    data = load_hamilton_gnp()
    growth = data["rgnp_growth"].to_numpy()
    model = MarkovAutoregression(n_states=2, order=4, switching_ar=False, random_state=0).fit(growth)
    recession = model.smoothed_probabilities_[:, 0] > 0.5  # regime 0 has the lower mean growth
    nber = data["nber_recession"].to_numpy()[model.order :] == 1
    print(f"\nUS real GNP growth, {data.quarter.iloc[0]}-{data.quarter.iloc[-1]}: Hamilton's (1989) switching AR(4)")
    print(f"  log-likelihood {model.log_likelihood_:.3f} (Hamilton: -181.263)")
    print(f"  mean growth per quarter: recession {model.means_[0]:.2f}%, expansion {model.means_[1]:.2f}%")
    print(f"  expected durations: {model.expected_durations_[0]:.1f} and {model.expected_durations_[1]:.1f} quarters")
    print(f"  smoothed recession quarters agree with NBER dating in {np.mean(recession == nber):.0%} of quarters")


def main() -> None:
    _earthquakes()
    _faithful()
    _recessions()


if __name__ == "__main__":
    main()
