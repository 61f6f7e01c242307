"""Benchmark the per-observation cost of modeshift's streaming filters.

The issue's case: a Gaussian HMM with K = 8 modes (D = 4, full covariances, sticky chain),
set by hand (seeded) and sampled once. Three ways of filtering, each per observation:

- ``filter_step`` in a Python loop: ``state, out = model.filter_step(state, y)`` (target < 20 us);
- ``filter_stream`` over an array (rows all there: compiled blocks, one output per row; target < 2 us);
- ``filter_stream`` over an iterator (a live feed: one ``filter_step`` per row as it comes).

Each is timed best of ``--repeats`` after a warm-up call (the kernels compiled and loaded), with
the garbage collector off. Also: ``filter_step`` of a Poisson HMM (the general, non-fused path)
and of an ARHMM (its lagged means computed, then the fused step), for scale. The totals of the
one-step log-likelihoods are printed next to ``score`` so that one sees the streams computed
the right thing.

Usage::

    python benchmarks/streaming.py             # 20,000 steps per loop
    python benchmarks/streaming.py --quick     # 2,000, a smoke run
"""

from __future__ import annotations

import argparse
import functools
import platform
from pathlib import Path

import numpy as np
from common import add_common_arguments, best_of, log, publish, table, versions

from modeshift import ARHMM, HMM

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "streaming.md"
N_STATES, N_FEATURES = 8, 4
TARGETS = {"filter_step loop": 20.0, "filter_stream (array)": 2.0}


def gaussian_hmm(rng: np.random.Generator) -> HMM:
    model = HMM(N_STATES, covariance="full")
    model.startprob_ = np.full(N_STATES, 1.0 / N_STATES)
    matrix = 0.9 * np.eye(N_STATES) + 0.1 * rng.dirichlet(np.ones(N_STATES), N_STATES)
    model.transmat_ = matrix / matrix.sum(axis=1, keepdims=True)
    model.means_ = rng.normal(0.0, 3.0, (N_STATES, N_FEATURES))
    factors = rng.normal(0.0, 0.3, (N_STATES, N_FEATURES, N_FEATURES))
    model.covars_ = factors @ factors.transpose(0, 2, 1) + np.eye(N_FEATURES)
    return model


def poisson_hmm(rng: np.random.Generator) -> HMM:
    model = HMM(N_STATES, emission="poisson")
    model.startprob_ = np.full(N_STATES, 1.0 / N_STATES)
    matrix = 0.9 * np.eye(N_STATES) + 0.1 * rng.dirichlet(np.ones(N_STATES), N_STATES)
    model.transmat_ = matrix / matrix.sum(axis=1, keepdims=True)
    model.lambdas_ = rng.uniform(1.0, 20.0, (N_STATES, 1))
    return model


def arhmm(rng: np.random.Generator) -> ARHMM:
    model = ARHMM(N_STATES, order=1)
    model.startprob_ = np.full(N_STATES, 1.0 / N_STATES)
    matrix = 0.9 * np.eye(N_STATES) + 0.1 * rng.dirichlet(np.ones(N_STATES), N_STATES)
    model.transmat_ = matrix / matrix.sum(axis=1, keepdims=True)
    model.coefs_ = rng.uniform(-0.5, 0.5, (N_STATES, N_FEATURES, N_FEATURES)) / N_FEATURES
    model.intercepts_ = rng.normal(0.0, 1.0, (N_STATES, N_FEATURES))
    model.covars_ = np.tile(np.eye(N_FEATURES), (N_STATES, 1, 1))
    return model


def step_loop(model, X):
    state, total = model.filter_init(), 0.0
    for y in X:
        state, out = model.filter_step(state, y)
        total += out.log_likelihood
    return total


def stream(model, rows):
    return sum(out.log_likelihood for out in model.filter_stream(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 steps per loop")
    add_common_arguments(parser, DEFAULT_OUTPUT)
    parser.set_defaults(repeats=5)
    args = parser.parse_args()
    n_steps = 2_000 if args.quick else 20_000
    rng = np.random.default_rng(args.seed)
    models = {"gaussian": gaussian_hmm(rng), "poisson": poisson_hmm(rng), "arhmm": arhmm(rng)}
    data = {name: model.sample(n_steps, random_state=args.seed)[0] for name, model in models.items()}
    cases = {
        "filter_step loop": ("gaussian", lambda m, X: step_loop(m, X)),
        "filter_stream (array)": ("gaussian", lambda m, X: stream(m, X)),
        "filter_stream (iterator)": ("gaussian", lambda m, X: stream(m, iter(X))),
        "filter_step loop, Poisson K = 8": ("poisson", lambda m, X: step_loop(m, X)),
        "filter_step loop, ARHMM K = 8, D = 4": ("arhmm", lambda m, X: step_loop(m, X)),
        "filter_stream (array), ARHMM": ("arhmm", lambda m, X: stream(m, X)),
    }
    rows = []
    for case, (name, run) in cases.items():
        model, X = models[name], data[name]
        run(model, X[:50])  # warm-up: compile or load the kernels
        log(f"timing {case} ...")
        best, repeats, total = best_of(functools.partial(run, model, X), args.repeats, max_seconds=60.0)
        per_step = best / n_steps * 1e6
        target = TARGETS.get(case)
        verdict = "" if target is None else ("met" if per_step < target else "missed") + f" (< {target:g} us)"
        rows.append([case, f"{per_step:.2f}", verdict, f"{total:.6f}", f"{model.score(X):.6f}", str(repeats)])
    markdown = "\n".join(
        [
            "# Streaming filters: cost per observation",
            "",
            f"HMM K = {N_STATES}, D = {N_FEATURES} (Gaussian full covariance unless said), {n_steps:,} steps per "
            f"loop, best of {args.repeats} after a warm-up, garbage collector off.",
            "",
            *table(["case", "us per observation", "target", "sum of one-step log-likelihoods", "score", "runs"], rows),
            "",
            f"{platform.processor() or platform.machine()}, Python {platform.python_version()}; "
            + versions(["modeshift", "numpy", "numba"]),
        ]
    )
    publish(markdown, args.output)


if __name__ == "__main__":
    main()
