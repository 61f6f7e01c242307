"""Benchmark modeshift's HSMM against the K D-state HMM expansion on modeshift's own kernels.

The case: a Gaussian HSMM with K = 5 modes, Poisson durations of mean 20 .. 100 truncated at
D = 200, sampled once (seeded) into one sequence of T = 100,000 steps.

- HSMM forward-backward: :func:`modeshift._kernels.hsmm.hsmm_smoother` on the emission
  log-likelihoods (log-likelihood, state posteriors, duration and switch counts), O(T K^2 + T K D);
- HSMM EM: 10 plain EM iterations (``accelerate=False``, ``tol=-inf``) from a perturbed start;
- the expansion: the same model as an HMM on the K D states (k, r), r the steps the segment
  still lasts ((k, r) -> (k, r - 1); (k, 1) -> (j, d) with probability A[k, j] p_j(d)), run by
  :func:`modeshift._kernels.forward_backward` with a dense (K D, K D) matrix: O(T (K D)^2) time
  and a (T, K D) posterior array. At full size it needs ~1e11 flops and 0.8 GB per pass, so it
  runs on the first ``--expansion-steps`` steps and its time is scaled by T / steps (both
  recursions are linear in T); the log-likelihoods of the two on those steps are shown side by
  side (they are the same model, so they agree to round-off).

Peers: no maintained Python HSMM library exists. pyhsmm's last release is from 2017 (not
tried here); edhsmm and hsmmlearn are not in this environment's package index; dynamax lists
HSMMs as a stretch goal. So the comparison is with the expansion only.

Usage::

    python benchmarks/hsmm.py           # full size
    python benchmarks/hsmm.py --quick   # T / 10, a smoke run

The markdown report goes to stdout and to ``benchmarks/results/hsmm.md``.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import numpy as np
from common import add_common_arguments, best_of, log, publish, seconds, table, versions

from modeshift import HSMM
from modeshift._kernels import forward_backward
from modeshift._kernels.hsmm import hsmm_smoother

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "hsmm.md"
N_STATES, MAX_DURATION, N_STEPS = 5, 200, 100_000
TARGET_SPEEDUP = 10.0


def truth() -> HSMM:
    model = HSMM(n_states=N_STATES, duration="poisson", max_duration=MAX_DURATION)
    model.startprob_ = np.full(N_STATES, 1.0 / N_STATES)
    switches = np.ones((N_STATES, N_STATES)) - np.eye(N_STATES)
    model.transmat_ = switches / switches.sum(axis=1, keepdims=True)
    model.duration_rates_ = np.linspace(19.0, 99.0, N_STATES)
    model.means_ = np.linspace(0.0, 4.0, N_STATES)[:, None]
    model.covars_ = np.full((N_STATES, 1, 1), 0.5)
    return model


def expansion(model: HSMM) -> tuple[np.ndarray, np.ndarray]:
    """Initial probabilities (K D,) and transition matrix (1, K D, K D) of the equivalent HMM;
    state k D + r - 1 is (k, r): mode k for r more steps, this one included."""
    k, d = N_STATES, MAX_DURATION
    pmf = model._duration.pmf()
    initial = (model.startprob_[:, None] * pmf).ravel()
    matrix = np.zeros((k * d, k * d))
    for mode in range(k):
        rows = mode * d + np.arange(1, d)
        matrix[rows, rows - 1] = 1.0  # one step less to go
        matrix[mode * d] = (model.transmat_[mode][:, None] * pmf).ravel()  # the segment ends: a new one
    return initial, matrix[None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="T / 10")
    parser.add_argument("--expansion-steps", type=int, default=1000, help="steps the expansion runs on")
    add_common_arguments(parser, DEFAULT_OUTPUT)
    args = parser.parse_args()
    n_steps = N_STEPS // 10 if args.quick else N_STEPS
    model = truth()
    X, _ = model.sample(n_steps, random_state=args.seed)
    log_b = model._log_likelihoods(model._sequences(X, None))
    weights, survival = model._segment_laws()
    arrays = (model.startprob_, model.transmat_, weights, survival)
    hsmm_smoother(log_b[:50], np.array([0, 50]), *arrays)  # compile outside the timings
    log(f"HSMM forward-backward, T = {n_steps}")
    fb_time, runs, (log_lik, *_) = best_of(
        lambda: hsmm_smoother(log_b, np.array([0, n_steps]), *arrays), args.repeats, 30.0
    )

    log("HSMM EM, 10 iterations")
    start = truth()
    start.duration_rates_ = model.duration_rates_ * 1.3
    start.means_ = model.means_ + 0.2
    start.set_params(n_iter=10, tol=-np.inf, accelerate=False, warm_start=True)
    em_time, em_runs, fitted = best_of(lambda: truth_copy(start).fit(X), args.repeats, 60.0)

    steps = min(args.expansion_steps, n_steps)
    log(f"expansion to {N_STATES * MAX_DURATION} states, T = {steps}")
    initial, matrix = expansion(model)
    expanded_b = np.ascontiguousarray(np.repeat(log_b[:steps], MAX_DURATION, axis=1))
    offsets = np.array([0, steps])
    forward_backward(expanded_b[:10], np.array([0, 10]), initial, matrix)
    ex_time, ex_runs, (ex_log_lik, *_) = best_of(
        lambda: forward_backward(expanded_b, offsets, initial, matrix), args.repeats, 30.0
    )
    ex_scaled = ex_time * n_steps / steps
    short = hsmm_smoother(log_b[:steps], offsets, *arrays)[0]

    rows = [
        ["HSMM forward-backward (modeshift)", f"{n_steps:,}", seconds(fb_time), f"{log_lik[0]:.6f}"],
        [
            f"K D = {N_STATES * MAX_DURATION}-state HMM expansion (modeshift kernels)",
            f"{steps:,} (time x {n_steps // steps})",
            seconds(ex_scaled),
            "",
        ],
        ["HSMM EM, 10 plain iterations", f"{n_steps:,}", seconds(em_time), f"{fitted.history_[-1]:.6f}"],
    ]
    markdown = "\n".join(
        [
            f"# HSMM: K = {N_STATES}, D = {MAX_DURATION}, T = {n_steps:,}",
            "",
            *table(["operation", "steps", "seconds (best)", "log-likelihood"], rows),
            "",
            f"Speed-up of the HSMM recursions over the expansion: **{ex_scaled / fb_time:.0f}x** "
            f"(target {TARGET_SPEEDUP:.0f}x).",
            f"On the first {steps:,} steps the log-likelihoods are {short[0]:.10f} (HSMM) and "
            f"{ex_log_lik[0]:.10f} (expansion): difference {abs(short[0] - ex_log_lik[0]):.2e}.",
            "",
            "Peers: none maintained (pyhsmm last released 2017, not tried; edhsmm and hsmmlearn "
            "are not in this environment's package index).",
            "",
            f"Best of {runs}, {em_runs} and {ex_runs} runs; {platform.processor() or platform.machine()}, "
            f"Python {platform.python_version()}, {versions(['numpy', 'numba'])}.",
            "",
        ]
    )
    publish(markdown, args.output)


def truth_copy(model: HSMM) -> HSMM:
    """A model with ``model``'s hyper-parameters and parameters (each EM run starts afresh)."""
    copy = HSMM(**model.get_params())
    for name in model.parameter_names:
        setattr(copy, name, getattr(model, name))
    return copy


if __name__ == "__main__":
    main()
