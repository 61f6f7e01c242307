"""Benchmark modeshift's linear-Gaussian state-space model against pykalman, statsmodels and dynamax.

Every library gets the same observations, simulated once (seeded) from a fixed
model with state_dim 4 and obs_dim 2, T = 100,000, and the same parameters:
the true ones for the filter and the smoother, a common starting point for EM.
The operations are

- filter: the Kalman filter (filtered moments and the log-likelihood);
- smooth: filter + Rauch-Tung-Striebel smoother (smoothed moments and the
  lag-one cross-covariances where a library computes them);
- em: 10 EM iterations learning A, Q, C, R and the initial mean and covariance;
- mle: maximum-likelihood fits of the models users know, modeshift's ``StructuralModel``
  against statsmodels' ``fit()`` (``cov_type="none"``: no Hessian afterwards), both on the
  same log-likelihood, the exact diffuse one (statsmodels' ``use_exact_diffuse=True``): the
  Nile local level, a local linear trend + monthly dummy seasonal on the Mauna Loa CO2 series
  and an ARMA(2, 1) with intercept on a simulated series of 1,000.  Reports the maximum each
  library reaches and the time ratio.  Each fit is timed after ``gc.collect()`` (``best_of``, as
  timeit does): the collector's walk over the heap evicts the CPU caches, so a fit of a few
  milliseconds runs cold, about 1 ms slower on the Nile than in a warm loop of fits (measured
  2026-12: 3.7 against 2.5 ms), and statsmodels pays the same.  The CO2 file is weekly, averaged here by month: a
  yearly trigonometric seasonal on the weeks (period 52.18, 3 harmonics) cannot start exactly
  diffuse in floating point (its 8 diffuse states are identified by 8 weeks over which the
  sinusoids and the trend are nearly collinear, condition ~1e8): modeshift refuses it and
  statsmodels stays in its diffuse steps to the end, with a meaningless log-likelihood
  (tests/test_structural.py).

Conventions, aligned across libraries: the initial mean/covariance are the
prior of the state at the FIRST observation in all four (modeshift, pykalman,
statsmodels' ``initialize_known(a_1, P_1)``, dynamax's ``p(z_1)``); dynamax is
built without the dynamics and emission biases, pykalman is given zero offsets
and learns neither.  statsmodels has no EM for a general state-space model (only
the special-purpose ``DynamicFactorMQ``), so its EM is "n/a".  statsmodels runs
with its defaults, which include its steady-state shortcut: in a time-invariant
model, once the predicted covariance stops changing (``tolerance=1e-19``; here
after about 60 steps) it stops updating the covariances, which the others do not.

Each timing is the best of ``--repeats`` runs (fewer when one run exceeds
``--max-seconds``, as pykalman's EM does).  For the JIT-compiled libraries
compilation is kept out of those runs and reported on its own: modeshift's as
the first calls in fresh processes on tiny inputs (filter, smooth, EM, then an
MLE fit: its compiled log-likelihood-and-score pass comes on top; empty and filled
Numba cache), dynamax's as ``jax.jit(f).lower(...).compile()`` on the real data.
Values (log-likelihoods, smoothed means) are shown so the benchmark also shows
that the libraries compute the same thing.  Missing libraries show as "n/a".

Usage::

    python benchmarks/lds.py                  # full size
    python benchmarks/lds.py --quick          # T / 10, for a smoke run
    python benchmarks/lds.py --libs modeshift,statsmodels --repeats 5
    python benchmarks/lds.py --only mle --libs modeshift,statsmodels

The markdown report goes to stdout and to ``benchmarks/results/lds.md``.

Install the peers with::

    pip install -e . pykalman statsmodels dynamax jax jaxlib
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from common import (
    add_common_arguments,
    best_of,
    comma_list,
    compile_paragraph,
    log,
    modeshift_compile_times,
    publish,
    seconds,
    table,
    timed,
    versions,
)

LIBRARIES = ("modeshift", "pykalman", "statsmodels", "dynamax")
OPERATIONS = ("filter", "smooth", "em")
SECTIONS = (*OPERATIONS, "mle")
MLE_TARGET = 3.0  # modeshift at least 3x faster than statsmodels' fit(), at the same or a better maximum
TARGET_SPEEDUP = {"pykalman": 10.0, "statsmodels": 2.0, "dynamax": 2.0}
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "lds.md"


# --------------------------------------------------------------------------
# Problem
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Params:
    A: np.ndarray  # (n, n) transition
    Q: np.ndarray  # (n, n) transition covariance
    C: np.ndarray  # (p, n) observation
    R: np.ndarray  # (p, p) observation covariance
    m0: np.ndarray  # (n,) prior mean of the state at the first observation
    P0: np.ndarray  # (n, n) its covariance


@dataclass(frozen=True)
class Problem:
    true: Params
    init: Params  # EM starting point
    Y: np.ndarray  # (T, p)
    n_iter: int


def rotation(angle: float, radius: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return radius * np.array([[c, -s], [s, c]])


def make_problem(seed: int, length: int, n_iter: int, n: int = 4, p: int = 2) -> Problem:
    rng = np.random.default_rng([seed, 7])
    A = np.zeros((n, n))
    A[:2, :2], A[2:, 2:] = rotation(0.1, 0.97), rotation(0.4, 0.9)
    F = rng.normal(size=(n, n))
    G = rng.normal(size=(p, p))
    true = Params(
        A=A,
        Q=0.1 * np.eye(n) + 0.02 * F @ F.T,
        C=rng.normal(size=(p, n)),
        R=0.3 * np.eye(p) + 0.1 * G @ G.T,
        m0=np.zeros(n),
        P0=np.eye(n),
    )
    init = Params(
        A=0.8 * np.eye(n),
        Q=np.eye(n),
        C=true.C + 0.5 * rng.normal(size=(p, n)),
        R=np.eye(p),
        m0=np.zeros(n),
        P0=np.eye(n),
    )
    LQ, LR, LP = (np.linalg.cholesky(M) for M in (true.Q, true.R, true.P0))
    w, v = rng.standard_normal((length, n)) @ LQ.T, rng.standard_normal((length, p)) @ LR.T
    X = np.empty((length, n))
    x = true.m0 + LP @ rng.standard_normal(n)
    for t in range(length):  # 100,000 small mat-vecs: about a second
        if t:
            x = A @ x + w[t]
        X[t] = x
    return Problem(true=true, init=init, Y=np.ascontiguousarray(X @ true.C.T + v), n_iter=n_iter)


# --------------------------------------------------------------------------
# Adapters: each method returns a Job for one operation
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """``run`` is timed; ``check`` (untimed) turns its result into (log-likelihood, smoothed means or None)."""

    run: Callable[[], Any]
    check: Callable[[Any], tuple[float, np.ndarray | None]]
    compile: Callable[[], Any] | None = None


class Unsupported(Exception):
    """The library has no such operation."""


class Modeshift:
    name, jit = "modeshift", True

    def __init__(self) -> None:
        from modeshift import LinearGaussianSSM

        self._cls = LinearGaussianSSM

    def model(self, q: Params, n_iter: int = 10) -> Any:
        n, p = q.C.shape[1], q.C.shape[0]
        m = self._cls(state_dim=n, obs_dim=p, n_iter=n_iter, tol=-np.inf, method="em")
        m.dynamics_matrix_, m.transition_covariance_ = q.A.copy(), q.Q.copy()
        m.observation_matrix_, m.observation_covariance_ = q.C.copy(), q.R.copy()
        m.initial_state_mean_, m.initial_state_covariance_ = q.m0.copy(), q.P0.copy()
        return m

    def filter(self, pr: Problem) -> Job:
        m = self.model(pr.true)
        return Job(lambda: m.filter(pr.Y), lambda r: (r.log_likelihood, None))

    def smooth(self, pr: Problem) -> Job:
        m = self.model(pr.true)
        return Job(lambda: m.smooth(pr.Y), lambda r: (r.log_likelihood, np.asarray(r.means)))

    def em(self, pr: Problem) -> Job:
        def check(m: Any) -> tuple[float, None]:
            require_iterations(len(m.history_), pr.n_iter, self.name)
            return m.score(pr.Y), None

        return Job(lambda: self.model(pr.init, pr.n_iter).fit(pr.Y), check)


class Pykalman:
    name, jit = "pykalman", False
    EM_VARS = [
        "transition_matrices",
        "transition_covariance",
        "observation_matrices",
        "observation_covariance",
        "initial_state_mean",
        "initial_state_covariance",
    ]

    def __init__(self) -> None:
        from pykalman import KalmanFilter

        self._cls = KalmanFilter

    def model(self, q: Params) -> Any:
        n, p = q.C.shape[1], q.C.shape[0]
        return self._cls(
            transition_matrices=q.A, transition_covariance=q.Q, transition_offsets=np.zeros(n),
            observation_matrices=q.C, observation_covariance=q.R, observation_offsets=np.zeros(p),
            initial_state_mean=q.m0, initial_state_covariance=q.P0,
            n_dim_state=n, n_dim_obs=p,
        )  # fmt: skip

    def filter(self, pr: Problem) -> Job:
        kf = self.model(pr.true)  # its filter does not return the log-likelihood; loglikelihood() is untimed
        return Job(lambda: kf.filter(pr.Y), lambda r: (kf.loglikelihood(pr.Y), None))

    def smooth(self, pr: Problem) -> Job:
        kf = self.model(pr.true)
        return Job(lambda: kf.smooth(pr.Y), lambda r: (kf.loglikelihood(pr.Y), np.asarray(r[0])))

    def em(self, pr: Problem) -> Job:
        return Job(
            lambda: self.model(pr.init).em(pr.Y, n_iter=pr.n_iter, em_vars=self.EM_VARS),
            lambda kf: (kf.loglikelihood(pr.Y), None),
        )


class Statsmodels:
    """statsmodels' ``KalmanSmoother`` with the matrices set directly (no MLEModel wrapper overhead)."""

    name, jit = "statsmodels", False

    def __init__(self) -> None:
        from statsmodels.tsa.statespace import kalman_smoother

        self._ks = kalman_smoother

    def model(self, pr: Problem, q: Params) -> Any:
        p, n = q.C.shape
        ks = self._ks.KalmanSmoother(k_endog=p, k_states=n, k_posdef=n)
        ks.bind(pr.Y.T.copy(order="F"))  # statsmodels stores endog as (p, T)
        ks["design"], ks["obs_cov"] = q.C, q.R
        ks["transition"], ks["selection"], ks["state_cov"] = q.A, np.eye(n), q.Q
        ks.initialize_known(q.m0, q.P0)  # the state at the first observation
        # the same outputs as the others: smoothed means, covariances, lag-one autocovariances
        k = self._ks
        ks.smoother_output = k.SMOOTHER_STATE | k.SMOOTHER_STATE_COV | k.SMOOTHER_STATE_AUTOCOV
        return ks

    def filter(self, pr: Problem) -> Job:
        ks = self.model(pr, pr.true)
        return Job(ks.filter, lambda r: (float(np.sum(r.llf_obs)), None))

    def smooth(self, pr: Problem) -> Job:
        ks = self.model(pr, pr.true)
        return Job(ks.smooth, lambda r: (float(np.sum(r.llf_obs)), np.asarray(r.smoothed_state).T))

    def em(self, pr: Problem) -> Job:
        raise Unsupported("no EM for a general state-space model (only DynamicFactorMQ's)")


class Dynamax:
    name, jit = "dynamax", True

    def __init__(self) -> None:
        import jax

        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp
        from dynamax.linear_gaussian_ssm import LinearGaussianSSM, lgssm_filter, lgssm_smoother

        self._jax, self._jnp = jax, jnp
        self._cls, self._filter, self._smoother = LinearGaussianSSM, lgssm_filter, lgssm_smoother

    def model(self, q: Params) -> tuple[Any, Any, Any]:
        p, n = q.C.shape
        model = self._cls(n, p, has_dynamics_bias=False, has_emissions_bias=False)
        j = self._jnp.asarray
        params, props = model.initialize(
            initial_mean=j(q.m0), initial_covariance=j(q.P0),
            dynamics_weights=j(q.A), dynamics_covariance=j(q.Q),
            emission_weights=j(q.C), emission_covariance=j(q.R),
        )  # fmt: skip
        return model, params, props

    def _job(self, jitted: Any, args: tuple, check: Callable[[Any], Any]) -> Job:
        jax = self._jax
        return Job(lambda: jax.block_until_ready(jitted(*args)), check, lambda: jitted.lower(*args).compile())

    def filter(self, pr: Problem) -> Job:
        _, params, _ = self.model(pr.true)
        f = self._jax.jit(self._filter)
        return self._job(f, (params, self._jnp.asarray(pr.Y)), lambda r: (float(r.marginal_loglik), None))

    def smooth(self, pr: Problem) -> Job:
        _, params, _ = self.model(pr.true)
        f = self._jax.jit(self._smoother)
        check = lambda r: (float(r.marginal_loglik), np.asarray(r.smoothed_means))  # noqa: E731
        return self._job(f, (params, self._jnp.asarray(pr.Y)), check)

    def em(self, pr: Problem) -> Job:
        model, params, props = self.model(pr.init)
        y = self._jnp.asarray(pr.Y)
        # fit_em jits afresh on every call; our own jit gives its post-compilation cost
        fit = self._jax.jit(lambda start, y: model.fit_em(start, props, y, num_iters=pr.n_iter, verbose=False))

        def check(result: Any) -> tuple[float, None]:
            fitted, log_probs = result
            require_iterations(int(log_probs.shape[0]), pr.n_iter, self.name)
            return float(model.marginal_log_prob(fitted, y)), None

        return self._job(fit, (params, y), check)


ADAPTERS = {"modeshift": Modeshift, "pykalman": Pykalman, "statsmodels": Statsmodels, "dynamax": Dynamax}


def require_iterations(done: int, wanted: int, library: str) -> None:
    if done != wanted:
        raise RuntimeError(f"{library} ran {done} EM iterations, not {wanted}")


# --------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------


@dataclass
class Outcome:
    best: float | None = None
    runs: int = 0
    first: float | None = None  # modeshift: first call on the real data
    compile: float | None = None  # dynamax: lower().compile() alone
    value: tuple[float, np.ndarray | None] | None = None
    note: str = ""


def measure(job: Job, jit: bool, repeats: int, max_seconds: float) -> Outcome:
    out = Outcome()
    if job.compile is not None:
        out.compile = timed(job.compile)[0]
    if jit:
        out.first = timed(job.run)[0]
    out.best, out.runs, result = best_of(job.run, repeats, max_seconds)
    out.value = job.check(result)
    return out


def compile_probe() -> dict[str, float]:
    """First calls of modeshift's filter, smooth, EM and a maximum-likelihood fit (a local
    level: the compiled log-likelihood-and-score pass) on tiny data (in a fresh process)."""
    from modeshift import StructuralModel

    start = time.perf_counter()
    adapter = Modeshift()
    times = {"import": time.perf_counter() - start}
    pr = make_problem(0, 50, 2)
    for op in OPERATIONS:
        times[op] = timed(getattr(adapter, op)(pr).run)[0]
    walk = np.cumsum(np.random.default_rng(0).normal(size=50))
    times["mle"] = timed(lambda: StructuralModel.unobserved_components(level="local level").fit(walk))[0]
    return times


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def time_cell(o: Outcome, repeats: int) -> str:
    """The best time, with the number of runs where fewer than ``repeats`` were made."""
    return seconds(o.best) + ("" if o.runs in (0, repeats) else f" ({o.runs} run{'s' * (o.runs > 1)})")


def report(results: dict[str, dict[str, Outcome]], libs: Sequence[str], notes: dict[str, str],
           compile_times: Any, args: argparse.Namespace, T: int) -> str:  # fmt: skip
    peers = [lib for lib in libs if lib != "modeshift"]
    header = ["operation", *(f"{lib} (s)" for lib in libs), *(f"{lib}/modeshift" for lib in peers)]
    header.append("targets (" + ", ".join(f"{lib} ≥{TARGET_SPEEDUP[lib]:g}x" for lib in peers) + ")")
    rows = []
    for op, row in results.items():
        ours = row.get("modeshift", Outcome()).best
        cells = [op, *(time_cell(row[lib], args.repeats) for lib in libs)]
        verdicts = []
        for lib in peers:
            theirs = row[lib].best
            if ours is None or theirs is None:
                cells.append("n/a")
                continue
            cells.append(f"{theirs / ours:.1f}x")
            verdicts.append(f"{lib} {'met' if theirs / ours >= TARGET_SPEEDUP[lib] else 'MISSED'}")
        rows.append(cells + [", ".join(verdicts) or "n/a"])
    reasons = sorted({f"{lib}: {o.note}" for row in results.values() for lib, o in row.items() if o.note}
                     | {f"{lib}: {why}" for lib, why in notes.items()})  # fmt: skip

    agree = []
    for op, row in results.items():
        vals = {lib: o.value for lib, o in row.items() if o.value is not None}
        ll = {lib: v[0] for lib, v in vals.items()}
        finite = [v for v in ll.values() if np.isfinite(v)]
        spread = (max(finite) - min(finite)) / abs(finite[0]) if finite else float("nan")
        means = {lib: v[1] for lib, v in vals.items() if v[1] is not None}
        ref = next((lib for lib in libs if lib in means), None)
        gap = max((float(np.max(np.abs(m - means[ref]))) for m in means.values()), default=float("nan"))
        label = op + (" (log-lik. after)" if op == "em" else "")
        agree.append([label, *(f"{ll[lib]:.6f}" if lib in ll else "n/a" for lib in libs), f"{spread:.1e}",
                      "—" if ref is None else f"{gap:.1e}"])  # fmt: skip

    lines = [
        "# LDS benchmark: modeshift vs pykalman vs statsmodels vs dynamax",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M')}{' (--quick size)' if args.quick else ''}; best of "
        f"{args.repeats} runs each (one run when it takes over {args.max_seconds:g} s); float64 everywhere.",
        "",
        f"state_dim 4, obs_dim 2, one sequence of T={T:,}; EM: 10 iterations learning A, Q, C, R, m0, P0.",
        "",
        "## Times (after JIT compilation)",
        "",
        *table(header, rows),
        *([""] + [f"- n/a {r}" for r in reasons] if reasons else []),
        "",
        "## JIT compilation",
        "",
    ]
    lines += compile_paragraph(compile_times)
    jit_rows = [[op, seconds(row.get("modeshift", Outcome()).first), seconds(row.get("dynamax", Outcome()).compile)]
                for op, row in results.items()]  # fmt: skip
    lines += [
        *table(["operation", "modeshift first call on the data (s)", "dynamax jit compile (s)"], jit_rows),
        "",
        "## Do they compute the same thing?",
        "",
        "Log-likelihood under the true parameters (filter, smooth) or under each library's",
        "parameters after 10 EM iterations from the same start (em), the largest relative",
        "difference, and the largest absolute difference of the smoothed means from the first library.",
        "",
        *table(["value", *libs, "max rel. diff.", "max abs. diff. of smoothed means"], agree),
        "",
        f"Machine: {os.cpu_count()} cores; Python {sys.version.split()[0]}.  ",
        "Versions: " + versions(("numpy", "numba", "pykalman", "statsmodels", "jax", "dynamax", "modeshift")) + ".",
        "",
    ]  # fmt: skip
    return "\n".join(lines)


# --------------------------------------------------------------------------
# Maximum likelihood: the models users know
# --------------------------------------------------------------------------


def mle_cases(seed: int) -> dict[str, tuple[Callable[[], Any], Callable[[], Any]]]:
    """case -> (modeshift fit, statsmodels fit), each returning (log-likelihood, parameters)."""
    import pandas as pd
    from statsmodels.tsa.statespace.sarimax import SARIMAX
    from statsmodels.tsa.statespace.structural import UnobservedComponents

    from modeshift import StructuralModel
    from modeshift.datasets import load_co2, load_nile

    nile = load_nile()["volume"].to_numpy(float)
    co2 = load_co2()
    co2 = co2.set_index(pd.to_datetime(co2["date"]))["co2"].resample("MS").mean()["1959":].to_numpy()
    rng = np.random.default_rng(seed)
    e = rng.normal(size=1_100)
    arma = np.zeros(1_100)
    for t in range(2, 1_100):
        arma[t] = 1.0 + 0.5 * arma[t - 1] - 0.3 * arma[t - 2] + e[t] + 0.4 * e[t - 1]
    arma = arma[100:]

    def ours(model: Any, y: np.ndarray) -> Callable[[], Any]:
        def run() -> Any:
            fitted = model.fit(y)
            return fitted.log_likelihood_, dict(zip(fitted.param_names, fitted.params_))

        return run

    def theirs(make: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            fitted = make().fit(disp=False, cov_type="none")
            return fitted.llf, dict(zip(fitted.model.param_names, fitted.params))

        return run

    return {
        "Nile local level": (
            ours(StructuralModel.unobserved_components(level="local level"), nile),
            theirs(lambda: UnobservedComponents(nile, level="llevel", use_exact_diffuse=True)),
        ),
        "CO2 local linear trend + seasonal(12)": (
            ours(StructuralModel.unobserved_components(level="local linear trend", seasonal=12), co2),
            theirs(lambda: UnobservedComponents(co2, level="lltrend", seasonal=12, use_exact_diffuse=True)),
        ),
        "ARMA(2, 1) + intercept, T = 1,000": (
            ours(StructuralModel.arima(2, 0, 1, intercept=True), arma),
            theirs(lambda: SARIMAX(arma, order=(2, 0, 1), trend="c")),
        ),
    }


def mle_fits(args: argparse.Namespace) -> dict[str, dict[str, Outcome]]:
    results: dict[str, dict[str, Outcome]] = {}
    for case, (modeshift_fit, statsmodels_fit) in mle_cases(args.seed).items():
        row = results.setdefault(case, {})
        for lib, run in (("modeshift", modeshift_fit), ("statsmodels", statsmodels_fit)):
            if lib not in args.libs:
                continue
            log(f"mle {case}: {lib}")
            if lib == "modeshift":
                run()  # compile the kernels outside the timing
            best, runs, value = best_of(run, args.repeats, args.max_seconds)
            row[lib] = Outcome(best=best, runs=runs, value=value)
            log(f"  best {best:.4g} s, log-likelihood {value[0]:.6f}")
    return results


def mle_report(results: dict[str, dict[str, Outcome]], args: argparse.Namespace) -> str:
    rows = []
    for case, row in results.items():
        ours, theirs = row.get("modeshift"), row.get("statsmodels")
        cells = [case]
        for outcome in (ours, theirs):
            cells += (
                ["n/a", "n/a"] if outcome is None else [f"{outcome.value[0]:.6f}", time_cell(outcome, args.repeats)]
            )
        if ours is None or theirs is None:
            cells += ["n/a", "n/a"]
        else:
            ratio = theirs.best / ours.best
            better = ours.value[0] >= theirs.value[0] - 1e-6
            verdict = "met" if ratio >= MLE_TARGET and better else "MISSED"
            cells += [f"{ratio:.1f}x", f"{verdict} (optimum {'as good or better' if better else 'WORSE'})"]
        rows.append(cells)
    header = ["model", "modeshift log-lik.", "modeshift (s)", "statsmodels log-lik.", "statsmodels (s)",
              "statsmodels/modeshift", f"target ≥{MLE_TARGET:g}x, same or better optimum"]  # fmt: skip
    params = [f"- {case}, {lib}: " + ", ".join(f"{k} {v:.6g}" for k, v in o.value[1].items())
              for case, row in results.items() for lib, o in row.items()]  # fmt: skip
    lines = [
        "",
        "## Maximum likelihood: StructuralModel against statsmodels' fit()",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M')}; best of {args.repeats} fits each (modeshift's kernels compiled "
        "before); statsmodels with `cov_type='none'`. The same log-likelihood on both sides (see the docstring).",
        "",
        *table(header, rows),
        "",
        "Estimates:",
        "",
        *params,
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="T / 10 (smoke run)")
    parser.add_argument("--libs", type=comma_list(LIBRARIES), default=list(LIBRARIES), help="e.g. modeshift,pykalman")
    parser.add_argument("--max-seconds", type=float, default=10.0, help="stop repeating after a run this long")
    parser.add_argument("--only", type=comma_list(SECTIONS), default=list(SECTIONS), help="e.g. mle or filter,em")
    add_common_arguments(parser, DEFAULT_OUTPUT)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.compile_probe:
        print(json.dumps(compile_probe()))
        return 0
    adapters, notes = {}, {}
    for lib in args.libs:
        try:
            adapters[lib] = ADAPTERS[lib]()
        except Exception as error:  # noqa: BLE001 -- ImportError, or a broken install
            notes[lib] = f"not available ({type(error).__name__}: {error})"
            log(f"skipping {lib}: {notes[lib]}")

    compile_times: Any = "modeshift not benchmarked" if "modeshift" not in adapters else "skipped"
    if "modeshift" in adapters and not args.no_compile_probe:
        log("modeshift: compile time in fresh processes")
        try:
            compile_times = modeshift_compile_times(__file__)
        except (subprocess.CalledProcessError, ValueError) as error:
            log(f"  compile probe failed: {error}\n{(getattr(error, 'stderr', '') or '')[-2000:]}")
            compile_times = "the fresh-process probe failed; see stderr"

    T = 10_000 if args.quick else 100_000
    operations = [op for op in OPERATIONS if op in args.only]
    problem = make_problem(args.seed, T, 10) if operations else None
    results: dict[str, dict[str, Outcome]] = {}
    for op in operations:
        row = results.setdefault(op, {lib: Outcome() for lib in args.libs})
        for lib, adapter in adapters.items():
            log(f"{op}: {lib}")
            try:
                row[lib] = measure(getattr(adapter, op)(problem), adapter.jit, args.repeats, args.max_seconds)
            except Unsupported as why:
                row[lib] = Outcome(note=f"{op}: {why}")
            except Exception as error:  # noqa: BLE001 -- report it, go on with the others
                summary = (str(error).strip().splitlines() or [""])[0][:160]
                row[lib] = Outcome(note=f"error in {op} ({type(error).__name__}: {summary})")
            log(f"  {row[lib].note or f'best {row[lib].best:.4g} s'}")
    markdown = report(results, args.libs, notes, compile_times, args, T) if operations else ""
    if "mle" in args.only:
        markdown += mle_report(mle_fits(args), args)
    publish(markdown, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
