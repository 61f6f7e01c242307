"""Benchmark modeshift's particle methods against the ``particles`` library (Chopin).

The stochastic-volatility model x_t = mu + phi (x_t-1 - mu) + sigma v_t,
y_t = exp(x_t / 2) e_t (mu = -1, phi = 0.95, sigma = 0.3; x_0 from the stationary
law), T = 1,000 returns simulated once (seeded), in both libraries' own model
classes (modeshift's ``StochasticVolatility``, particles' ``StochVol``, the same
parametrisation). Operations:

- filter: a bootstrap particle filter with N = 1,000 and N = 10,000 particles,
  systematic resampling when the ESS falls below N / 2 (both libraries' defaults
  made equal), returning the log-likelihood estimate and the filtering means;
- paris: one PaRIS pass (Olsson & Westerborn 2017; 2 backward draws per particle)
  smoothing the additive functional sum_t x_t, N = 1,000 (particles' ``Paris``
  collector, which by default falls back to exact backward sampling after N
  rejected proposals, the hybrid of Dau & Chopin 2022). Both sample backwards by
  rejection under the same bound on the transition density, which particles'
  ``StochVol`` lacks and is given here.

Each timing is the best of ``--repeats`` runs. The estimates are random; the
agreement table shows their mean and standard deviation over the repeats, which
must agree within Monte Carlo error. modeshift's numba kernels are compiled before
timing; the compile time is reported apart.

Usage::

    python benchmarks/smc.py
    python benchmarks/smc.py --repeats 10

Install the peer with ``pip install "numpy<2" particles``: particles 0.4 pins numpy<2,
and its PaRIS collector fails on numpy 2 (see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from common import best_of, log, publish, seconds, table, versions

MU, PHI, SIGMA, T = -1.0, 0.95, 0.3, 1_000
TARGET = 3.0
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "smc.md"


def simulate(seed: int) -> np.ndarray:
    from modeshift.smc import StochasticVolatility

    rng = np.random.default_rng(seed)
    model = StochasticVolatility(MU, PHI, SIGMA)
    x = model.sample_initial(1, rng)
    returns = np.empty(T)
    for t in range(T):
        x = x if t == 0 else model.sample_transition(x, t, rng)
        returns[t] = np.exp(x[0, 0] / 2) * rng.standard_normal()
    return returns


def modeshift_jobs(y: np.ndarray) -> dict[str, Callable[[int], float]]:
    from modeshift.smc import StochasticVolatility, paris, particle_filter

    model = StochasticVolatility(MU, PHI, SIGMA)
    rng = np.random.default_rng(0)

    def run_filter(n: int) -> float:
        return particle_filter(model, y, n, resampling="systematic", ess_threshold=0.5, random_state=rng).log_likelihood

    def run_paris(n: int) -> float:
        result = paris(model, y, lambda previous, states, t: states, n_particles=n, n_backward=2, random_state=rng)
        return float(np.ravel(result.estimate)[0])

    return {"filter": run_filter, "paris": run_paris}


class OverBudget(Exception):
    """A run stopped at its time budget; ``seconds`` extrapolates it to all T steps."""

    def __init__(self, seconds: float, steps: int):
        super().__init__(f"stopped after {steps} of {T} steps")
        self.seconds, self.steps = seconds, steps


def particles_jobs(y: np.ndarray, budget: float) -> dict[str, Callable[[int], float]]:
    import particles
    from particles import collectors
    from particles import state_space_models as ssms

    class StochVol(ssms.StochVol):
        def upper_bound_log_pt(self, t):  # noqa: ARG002 -- the bound PaRIS's rejection sampler needs
            return -0.5 * np.log(2 * np.pi * SIGMA**2)

    model = StochVol(mu=MU, rho=PHI, sigma=SIGMA)
    data = list(y)

    class WithSum(ssms.Bootstrap):
        def add_func(self, t, xp, x):  # noqa: ARG002 -- particles' signature
            return x

    def run_filter(n: int) -> float:
        smc = particles.SMC(fk=ssms.Bootstrap(ssm=model, data=data), N=n, resampling="systematic", ESSrmin=0.5)
        smc.run()
        return float(smc.logLt)

    def run_paris(n: int) -> float:
        fk = WithSum(ssm=model, data=data)
        smc = particles.SMC(fk=fk, N=n, resampling="systematic", ESSrmin=0.5, collect=[collectors.Paris(Nparis=2)])
        start = time.perf_counter()
        for step, _ in enumerate(smc, start=1):
            elapsed = time.perf_counter() - start
            if elapsed > budget and step < T:
                raise OverBudget(elapsed * T / step, step)
        return float(np.ravel(smc.summaries.paris[-1])[0])

    return {"filter": run_filter, "paris": run_paris}


CASES = (("filter", 1_000), ("filter", 10_000), ("paris", 1_000))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--budget", type=float, default=120.0, help="seconds before a slow run is extrapolated")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)

    y = simulate(args.seed)
    libraries: dict[str, dict[str, Callable[[int], float]]] = {}
    notes = []
    start = time.perf_counter()
    libraries["modeshift"] = modeshift_jobs(y)
    for operation, n in (("filter", 100), ("paris", 100)):  # compile the numba kernels
        libraries["modeshift"][operation](n)
    compile_time = time.perf_counter() - start
    try:
        libraries["particles"] = particles_jobs(y, args.budget)
    except ImportError as error:
        notes.append(f"particles: not available ({error})")

    times: dict[tuple[str, int], dict[str, float]] = {}
    values: dict[tuple[str, int], dict[str, np.ndarray]] = {}
    for operation, n in CASES:
        for lib, jobs in libraries.items():
            log(f"{operation} N={n:,}: {lib}")
            estimates = []

            def run(job=jobs[operation], n=n, estimates=estimates) -> None:
                estimates.append(job(n))

            try:
                best, _, _ = best_of(run, args.repeats, args.budget)
            except OverBudget as stop:
                best = stop.seconds
                notes.append(f"{lib} {operation} N={n:,}: {stop}; its time is extrapolated to T steps")
            times.setdefault((operation, n), {})[lib] = best
            values.setdefault((operation, n), {})[lib] = np.array(estimates or [np.nan, np.nan])
            log(f"  best {best:.4g} s")

    libs = list(libraries)
    rows, agree = [], []
    for (operation, n), row in times.items():
        ours, theirs = row["modeshift"], row.get("particles")
        ratio = "n/a" if theirs is None else f"{theirs / ours:.1f}x"
        verdict = "n/a" if theirs is None else ("met" if theirs / ours >= TARGET else "MISSED")
        rows.append([operation, f"{n:,}", *(seconds(row.get(lib)) for lib in libs), ratio, verdict])
        estimates = values[(operation, n)]
        agree.append(
            [operation, f"{n:,}", *(f"{estimates[lib].mean():.3f} ± {estimates[lib].std(ddof=1):.3f}" for lib in libs)]
        )
    lines = [
        "# SMC benchmark: modeshift vs particles",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M')}; stochastic volatility, T = {T:,}; best of {args.repeats} runs.",
        "",
        *table(["operation", "N", *(f"{lib} (s)" for lib in libs), "particles/modeshift", f"≥{TARGET:g}x"], rows),
        *([""] + [f"- {note}" for note in notes] if notes else []),
        "",
        f"modeshift's first calls (numba compile or cache load, N = 100): {compile_time:.2f} s.",
        "",
        "## Do they compute the same thing?",
        "",
        "Mean ± sd over the timed runs of the log-likelihood estimate (filter) or of the smoothed",
        "E[sum_t x_t | y] (paris).",
        "",
        *table(["operation", "N", *libs], agree),
        "",
        f"Machine: {os.cpu_count()} cores; Python {sys.version.split()[0]}. Versions: "
        + versions(("numpy", "numba", "particles", "modeshift"))
        + ".",
        "",
    ]
    markdown = "\n".join(lines)
    publish(markdown, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
