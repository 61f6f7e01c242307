"""Benchmark modeshift's hidden Markov models against hmmlearn and dynamax.

Every library gets the same arrays, sampled once (seeded) from a fixed random
model, and the same parameters: the true ones for scoring and decoding, a
common perturbed starting point for EM.  The cases are

(a) Gaussian HMM, K = 8 states, D = 4, full covariance, one sequence of
    T = 100,000: one ``score`` and 10 EM iterations (modeshift's plain EM,
    ``accelerate=False``, as the others);
(b) the same model on 1,000 sequences of length 200: ``score`` and 10 EM
    iterations;
(c) categorical HMM, K = 16 states, 64 symbols, T = 1,000,000: ``score`` and
    Viterbi.

Each timing is the best of ``--repeats`` runs.  For the JIT-compiled libraries
(modeshift through Numba, dynamax through JAX) compilation is kept out of
those runs and reported on its own: modeshift's as the first calls in fresh
processes on tiny inputs, with an empty and with a filled Numba cache (and its
first call on the real data); dynamax's as ``jax.jit(f).lower(...).compile()``
on the real data.
Alongside the times the script shows the values each library computed
(log-likelihoods, agreement of Viterbi paths), so the benchmark also shows
that the libraries compute the same thing.  A library that is missing, or that
fails on an operation, is reported as "n/a" with the reason.

Usage::

    python benchmarks/hmm.py                  # full sizes
    python benchmarks/hmm.py --quick          # sizes / 10, for a smoke run
    python benchmarks/hmm.py --only a,c --libs modeshift,hmmlearn

The markdown report goes to stdout and to ``benchmarks/results/hmm.md``;
progress goes to stderr.

Tested with Python 3.11, numpy 2.4.6, numba 0.68.1, hmmlearn 0.3.3,
dynamax 1.0.3 with jax/jaxlib 0.10.2 (the latest releases work together; no
pins needed).  Install the peers with::

    pip install -e . hmmlearn dynamax jax jaxlib
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from common import (
    add_common_arguments,
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

LIBRARIES: tuple[str, ...] = ("modeshift", "hmmlearn", "dynamax")
TARGET_SPEEDUP: dict[str, float] = {"hmmlearn": 5.0, "dynamax": 2.0}
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "hmm.md"


# --------------------------------------------------------------------------
# Problems: parameters and data
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class GaussianParams:
    startprob: np.ndarray  # (K,)
    transmat: np.ndarray  # (K, K)
    means: np.ndarray  # (K, D)
    covars: np.ndarray  # (K, D, D), full matrices


@dataclass(frozen=True)
class CategoricalParams:
    startprob: np.ndarray  # (K,)
    transmat: np.ndarray  # (K, K)
    emissionprob: np.ndarray  # (K, n_symbols)


@dataclass(frozen=True)
class GaussianProblem:
    true: GaussianParams  # used by score
    init: GaussianParams  # EM starting point
    X: np.ndarray  # (sum(lengths), D), sequences concatenated
    lengths: np.ndarray  # (n_sequences,) int64
    n_iter: int
    kind: str = "gaussian"


@dataclass(frozen=True)
class CategoricalProblem:
    true: CategoricalParams
    x: np.ndarray  # (T,) int64
    kind: str = "categorical"


Problem = GaussianProblem | CategoricalProblem


@dataclass(frozen=True)
class Sizes:
    single_length: int = 100_000  # case (a)
    n_sequences: int = 1_000  # case (b)
    sequence_length: int = 200  # case (b)
    categorical_length: int = 1_000_000  # case (c)
    gaussian_states: int = 8
    gaussian_dim: int = 4
    categorical_states: int = 16
    n_symbols: int = 64
    em_iterations: int = 10

    def quick(self) -> Sizes:
        """A tenth of the data, for a smoke run."""
        return replace(
            self,
            single_length=self.single_length // 10,
            n_sequences=self.n_sequences // 10,
            categorical_length=self.categorical_length // 10,
        )


def sticky_transmat(rng: np.random.Generator, n_states: int, stay: float) -> np.ndarray:
    """Rows mixing a self-transition weight ``stay`` with a random distribution."""
    return stay * np.eye(n_states) + (1.0 - stay) * rng.dirichlet(np.ones(n_states), n_states)


def random_gaussian_params(rng: np.random.Generator, n_states: int, dim: int) -> GaussianParams:
    factors = rng.normal(size=(n_states, dim, dim))
    covars = factors @ factors.transpose(0, 2, 1) / dim + 0.5 * np.eye(dim)
    return GaussianParams(
        startprob=rng.dirichlet(np.ones(n_states)),
        transmat=sticky_transmat(rng, n_states, stay=0.85),
        means=rng.normal(scale=3.0, size=(n_states, dim)),
        covars=covars,
    )


def em_start(rng: np.random.Generator, true: GaussianParams) -> GaussianParams:
    """A common EM starting point: flat dynamics, shifted means, unit covariances."""
    n_states, dim = true.means.shape
    return GaussianParams(
        startprob=np.full(n_states, 1.0 / n_states),
        transmat=0.5 * np.eye(n_states) + 0.5 / n_states,
        means=true.means + rng.normal(size=true.means.shape),
        covars=np.tile(np.eye(dim), (n_states, 1, 1)),
    )


def random_categorical_params(rng: np.random.Generator, n_states: int, n_symbols: int) -> CategoricalParams:
    return CategoricalParams(
        startprob=rng.dirichlet(np.ones(n_states)),
        transmat=sticky_transmat(rng, n_states, stay=0.7),
        emissionprob=rng.dirichlet(np.full(n_symbols, 0.5), n_states),
    )


def sample_states(
    rng: np.random.Generator,
    startprob: np.ndarray,
    transmat: np.ndarray,
    n_sequences: int,
    length: int,
) -> np.ndarray:
    """Markov chains of shape (n_sequences, length), by inverse-CDF sampling."""
    last = len(startprob) - 1
    uniforms = rng.random((n_sequences, length))
    cum_start = np.cumsum(startprob)
    cum_trans = np.cumsum(transmat, axis=1)
    states = np.empty((n_sequences, length), dtype=np.int64)
    if n_sequences == 1:  # one long chain: a plain Python loop beats numpy's per-call overhead
        rows = cum_trans.tolist()
        u = uniforms[0].tolist()
        s = min(bisect.bisect_right(cum_start.tolist(), u[0]), last)
        path = [s]
        for t in range(1, length):
            s = min(bisect.bisect_right(rows[s], u[t]), last)
            path.append(s)
        states[0] = path
        return states
    states[:, 0] = np.minimum(np.searchsorted(cum_start, uniforms[:, 0], side="right"), last)
    for t in range(1, length):
        rows = cum_trans[states[:, t - 1]]
        states[:, t] = np.minimum((rows <= uniforms[:, t, None]).sum(axis=1), last)
    return states


def gaussian_problem(seed: int, sizes: Sizes, n_sequences: int, length: int) -> GaussianProblem:
    """Data from one fixed Gaussian model (the same for every ``n_sequences``, ``length``)."""
    model_rng = np.random.default_rng([seed, 1])
    true = random_gaussian_params(model_rng, sizes.gaussian_states, sizes.gaussian_dim)
    init = em_start(model_rng, true)
    rng = np.random.default_rng([seed, 1, n_sequences, length])
    states = sample_states(rng, true.startprob, true.transmat, n_sequences, length).ravel()
    chol = np.linalg.cholesky(true.covars)
    noise = rng.standard_normal((states.size, sizes.gaussian_dim))
    X = true.means[states] + np.einsum("tij,tj->ti", chol[states], noise)
    return GaussianProblem(
        true=true,
        init=init,
        X=np.ascontiguousarray(X),
        lengths=np.full(n_sequences, length, dtype=np.int64),
        n_iter=sizes.em_iterations,
    )


def categorical_problem(seed: int, sizes: Sizes) -> CategoricalProblem:
    rng = np.random.default_rng([seed, 2])
    true = random_categorical_params(rng, sizes.categorical_states, sizes.n_symbols)
    states = sample_states(rng, true.startprob, true.transmat, 1, sizes.categorical_length)[0]
    # Inverse-CDF draw of each symbol from its state's emission row.
    cum = np.cumsum(true.emissionprob, axis=1)
    u = rng.random(states.size)
    x = np.empty(states.size, dtype=np.int64)
    for k in range(sizes.categorical_states):
        at = states == k
        x[at] = np.searchsorted(cum[k], u[at], side="right")
    return CategoricalProblem(true=true, x=np.minimum(x, sizes.n_symbols - 1))


@dataclass(frozen=True)
class Case:
    key: str
    title: str
    operations: tuple[str, ...]
    build: Callable[[int, Sizes], Problem]  # (seed, sizes) -> problem


CASES: dict[str, Case] = {
    case.key: case
    for case in (
        Case(
            "a",
            "Gaussian, full cov., 1 sequence",
            ("score", "em"),
            lambda seed, s: gaussian_problem(seed, s, 1, s.single_length),
        ),
        Case(
            "b",
            "Gaussian, full cov., many sequences",
            ("score", "em"),
            lambda seed, s: gaussian_problem(seed, s, s.n_sequences, s.sequence_length),
        ),
        Case(
            "c",
            "categorical, 1 sequence",
            ("score", "viterbi"),
            categorical_problem,
        ),
    )
}


def describe(problem: Problem) -> str:
    if isinstance(problem, GaussianProblem):
        n_states, dim = problem.true.means.shape
        n, length = len(problem.lengths), int(problem.lengths[0])
        return f"K={n_states}, D={dim}, {n:,} x T={length:,}"
    n_states, n_symbols = problem.true.emissionprob.shape
    return f"K={n_states}, {n_symbols} symbols, T={problem.x.size:,}"


# --------------------------------------------------------------------------
# Library adapters
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One timed operation.

    ``run`` does exactly the work being timed.  ``check`` turns the result of
    the last run into a comparable value (a log-likelihood or a state path);
    it runs once, outside the timings.  ``compile``, where given, does only
    the ahead-of-time compilation of ``run``'s computation.
    """

    run: Callable[[], Any]
    check: Callable[[Any], float | np.ndarray] = lambda result: result
    compile: Callable[[], Any] | None = None


class Adapter(Protocol):
    """What each library provides: one method per kind of problem and operation."""

    name: str
    jit: bool  # whether a first call may compile (so it is kept out of the best-of)

    def gaussian_score(self, p: GaussianProblem) -> Job: ...
    def gaussian_em(self, p: GaussianProblem) -> Job: ...
    def categorical_score(self, p: CategoricalProblem) -> Job: ...
    def categorical_viterbi(self, p: CategoricalProblem) -> Job: ...


def job_for(adapter: Adapter, problem: Problem, operation: str) -> Job:
    method: Callable[[Problem], Job] = getattr(adapter, f"{problem.kind}_{operation}")
    return method(problem)


def require_iterations(done: int, wanted: int, library: str) -> None:
    if done != wanted:
        raise RuntimeError(f"{library} ran {done} EM iterations, not {wanted}")


class ModeshiftAdapter:
    name = "modeshift"
    jit = True

    def __init__(self) -> None:
        from modeshift import HMM

        self._HMM = HMM

    def _gaussian(self, params: GaussianParams, n_iter: int = 10) -> Any:
        model = self._HMM(
            n_states=len(params.startprob),
            emission="gaussian",
            covariance="full",
            n_iter=n_iter,
            tol=-np.inf,
            accelerate=False,  # plain EM, iteration for iteration as the peers
        )
        model.startprob_ = params.startprob.copy()
        model.transmat_ = params.transmat.copy()
        model.means_ = params.means.copy()
        model.covars_ = params.covars.copy()
        return model

    def _categorical(self, params: CategoricalParams) -> Any:
        model = self._HMM(n_states=len(params.startprob), emission="categorical")
        model.startprob_ = params.startprob.copy()
        model.transmat_ = params.transmat.copy()
        model.emissionprob_ = params.emissionprob.copy()
        return model

    def gaussian_score(self, p: GaussianProblem) -> Job:
        model = self._gaussian(p.true)
        return Job(lambda: model.score(p.X, p.lengths))

    def gaussian_em(self, p: GaussianProblem) -> Job:
        def check(model: Any) -> float:
            require_iterations(len(model.history_), p.n_iter, self.name)
            return model.score(p.X, p.lengths)

        return Job(lambda: self._gaussian(p.init, p.n_iter).fit(p.X, p.lengths), check)

    def categorical_score(self, p: CategoricalProblem) -> Job:
        model = self._categorical(p.true)
        return Job(lambda: model.score(p.x))

    def categorical_viterbi(self, p: CategoricalProblem) -> Job:
        model = self._categorical(p.true)
        return Job(lambda: model.predict(p.x), np.asarray)


class HmmlearnAdapter:
    name = "hmmlearn"
    jit = False

    def __init__(self, implementation: str) -> None:
        from hmmlearn import hmm

        self._hmm = hmm
        self.implementation = implementation

    def _gaussian(self, params: GaussianParams, n_iter: int = 10) -> Any:
        model = self._hmm.GaussianHMM(
            n_components=len(params.startprob),
            covariance_type="full",
            n_iter=n_iter,
            tol=-np.inf,  # never "converges" early: exactly n_iter iterations
            init_params="",  # start from the attributes set below
            covars_prior=0.0,  # maximum-likelihood covariances, like the others
            implementation=self.implementation,
        )
        model.startprob_ = params.startprob.copy()
        model.transmat_ = params.transmat.copy()
        model.means_ = params.means.copy()
        model.covars_ = params.covars.copy()
        return model

    def _categorical(self, params: CategoricalParams) -> Any:
        n_states, n_symbols = params.emissionprob.shape
        model = self._hmm.CategoricalHMM(
            n_components=n_states,
            n_features=n_symbols,
            init_params="",
            implementation=self.implementation,
        )
        model.startprob_ = params.startprob.copy()
        model.transmat_ = params.transmat.copy()
        model.emissionprob_ = params.emissionprob.copy()
        return model

    def gaussian_score(self, p: GaussianProblem) -> Job:
        model = self._gaussian(p.true)
        return Job(lambda: model.score(p.X, p.lengths))

    def gaussian_em(self, p: GaussianProblem) -> Job:
        def check(model: Any) -> float:
            require_iterations(model.monitor_.iter, p.n_iter, self.name)
            return model.score(p.X, p.lengths)

        return Job(lambda: self._gaussian(p.init, p.n_iter).fit(p.X, p.lengths), check)

    def categorical_score(self, p: CategoricalProblem) -> Job:
        model, x = self._categorical(p.true), p.x.reshape(-1, 1)
        return Job(lambda: model.score(x))

    def categorical_viterbi(self, p: CategoricalProblem) -> Job:
        model, x = self._categorical(p.true), p.x.reshape(-1, 1)
        return Job(lambda: model.predict(x), np.asarray)  # algorithm="viterbi" by default


class DynamaxAdapter:
    """dynamax in float64, each operation under one ``jax.jit``.

    ``fit_em`` builds a fresh ``jit`` on every call (so it would recompile each
    time); wrapping it in our own ``jax.jit`` gives its true post-compilation
    cost.  Nearly flat Dirichlet priors make its initial and transition updates
    the maximum-likelihood ones, as in the others (see ``FLAT``).  Its
    covariance update is the mode under a normal-inverse-Wishart prior that
    cannot be made flat (it divides by N_k + 2D + 1.1 rather than N_k), so its
    fitted log-likelihoods differ slightly from the others'.
    """

    # Dirichlet concentration for the initial and transition probabilities.  Exactly 1
    # would be flat, but dynamax's M-step takes the Dirichlet's mode, which is NaN once
    # any concentration is <= 1: that is, once a state gets no expected count at all,
    # as every state but one does for the initial state of a single sequence.
    FLAT = 1.0 + 1e-6

    name = "dynamax"
    jit = True

    def __init__(self) -> None:
        import jax

        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp
        from dynamax.hidden_markov_model import CategoricalHMM, GaussianHMM

        self._jax, self._jnp = jax, jnp
        self._GaussianHMM, self._CategoricalHMM = GaussianHMM, CategoricalHMM

    def _emissions(self, p: GaussianProblem) -> Any:
        """(T, D) for one sequence, (B, T, D) for equal-length sequences."""
        if len(p.lengths) == 1:
            return self._jnp.asarray(p.X)
        if np.any(p.lengths != p.lengths[0]):
            raise ValueError("dynamax batches need equal-length sequences")
        return self._jnp.asarray(p.X.reshape(len(p.lengths), int(p.lengths[0]), -1))

    def _gaussian(self, params: GaussianParams) -> tuple[Any, Any, Any]:
        n_states, dim = params.means.shape
        model = self._GaussianHMM(
            n_states,
            dim,
            initial_probs_concentration=self.FLAT,
            transition_matrix_concentration=self.FLAT,
        )
        jnp = self._jnp
        fitted, props = model.initialize(
            initial_probs=jnp.asarray(params.startprob),
            transition_matrix=jnp.asarray(params.transmat),
            emission_means=jnp.asarray(params.means),
            emission_covariances=jnp.asarray(params.covars),
        )
        return model, fitted, props

    def _categorical(self, params: CategoricalParams) -> tuple[Any, Any]:
        n_states, n_symbols = params.emissionprob.shape
        model = self._CategoricalHMM(n_states, emission_dim=1, num_classes=n_symbols)
        jnp = self._jnp
        fitted, _ = model.initialize(
            initial_probs=jnp.asarray(params.startprob),
            transition_matrix=jnp.asarray(params.transmat),
            emission_probs=jnp.asarray(params.emissionprob[:, None, :]),
        )
        return model, fitted

    def _score_fn(self, model: Any, batched: bool) -> Any:
        jax = self._jax
        if not batched:
            return jax.jit(model.marginal_log_prob)
        return jax.jit(lambda params, y: jax.vmap(model.marginal_log_prob, (None, 0))(params, y).sum())

    def _job(self, jitted: Any, *args: Any, check: Callable[[Any], Any] = lambda r: r) -> Job:
        """Time ``jitted(*args)`` to completion; its compilation alone, ahead of time."""
        jax = self._jax
        return Job(
            run=lambda: jax.block_until_ready(jitted(*args)),
            check=check,
            compile=lambda: jitted.lower(*args).compile(),
        )

    def gaussian_score(self, p: GaussianProblem) -> Job:
        model, params, _ = self._gaussian(p.true)
        score = self._score_fn(model, batched=len(p.lengths) > 1)
        return self._job(score, params, self._emissions(p), check=float)

    def gaussian_em(self, p: GaussianProblem) -> Job:
        model, params, props = self._gaussian(p.init)
        y, score = self._emissions(p), self._score_fn(model, batched=len(p.lengths) > 1)
        fit = self._jax.jit(lambda start, y: model.fit_em(start, props, y, num_iters=p.n_iter, verbose=False))

        def check(result: Any) -> float:
            fitted, log_probs = result
            require_iterations(int(log_probs.shape[0]), p.n_iter, self.name)
            return float(score(fitted, y))

        return self._job(fit, params, y, check=check)

    def categorical_score(self, p: CategoricalProblem) -> Job:
        model, params = self._categorical(p.true)
        score = self._score_fn(model, batched=False)
        return self._job(score, params, self._jnp.asarray(p.x[:, None]), check=float)

    def categorical_viterbi(self, p: CategoricalProblem) -> Job:
        model, params = self._categorical(p.true)
        decode = self._jax.jit(model.most_likely_states)
        return self._job(decode, params, self._jnp.asarray(p.x[:, None]), check=np.asarray)


def load_adapters(names: Sequence[str], hmmlearn_implementation: str) -> tuple[dict[str, Adapter], dict[str, str]]:
    """The adapters that load, and for the others why not."""
    factories: dict[str, Callable[[], Adapter]] = {
        "modeshift": ModeshiftAdapter,
        "hmmlearn": lambda: HmmlearnAdapter(hmmlearn_implementation),
        "dynamax": DynamaxAdapter,
    }
    loaded: dict[str, Adapter] = {}
    missing: dict[str, str] = {}
    for name in names:
        try:
            loaded[name] = factories[name]()
        except Exception as error:  # noqa: BLE001 -- ImportError, or a broken install
            missing[name] = f"not available ({type(error).__name__}: {error})"
    return loaded, missing


# --------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------


@dataclass
class Outcome:
    best: float | None = None  # best steady-state time (s)
    first: float | None = None  # first call on the real data (s), for JIT libraries
    compile: float | None = None  # ahead-of-time compilation alone (s), where measurable
    value: float | np.ndarray | None = None  # what ``Job.check`` returned
    note: str = ""  # why there is no time


Results = dict[tuple[str, str], dict[str, Outcome]]  # (case, operation) -> library -> outcome


def measure(job: Job, repeats: int, jit: bool) -> Outcome:
    """Best of ``repeats`` runs; for a JIT library a first, compiling call comes before them."""
    compiling = timed(job.compile)[0] if job.compile is not None else None
    first = timed(job.run)[0] if jit else None
    times = []
    result = None
    for _ in range(repeats):
        elapsed, result = timed(job.run)
        times.append(elapsed)
    return Outcome(best=min(times), first=first, compile=compiling, value=job.check(result))


def run_benchmarks(
    cases: Sequence[Case],
    adapters: dict[str, Adapter],
    sizes: Sizes,
    repeats: int,
    seed: int,
) -> tuple[Results, dict[str, str]]:
    results: Results = {}
    descriptions: dict[str, str] = {}
    for case in cases:
        log(f"case ({case.key}): sampling data")
        problem = case.build(seed, sizes)
        descriptions[case.key] = describe(problem)
        for operation in case.operations:
            row = results.setdefault((case.key, operation), {})
            for name, adapter in adapters.items():
                log(f"case ({case.key}) {operation}: {name}")
                try:
                    row[name] = measure(job_for(adapter, problem, operation), repeats, adapter.jit)
                except Exception as error:  # noqa: BLE001 -- report it, go on with the others
                    summary = (str(error).strip().splitlines() or [""])[0][:160]
                    where = f"({case.key}) {operation}"
                    row[name] = Outcome(note=f"error in {where} ({type(error).__name__}: {summary})")
                    log(f"  {row[name].note}")
                else:
                    log(f"  best {row[name].best:.4g} s")
        del problem
    return results, descriptions


# --------------------------------------------------------------------------
# modeshift compile time, in fresh processes
# --------------------------------------------------------------------------


def compile_probe() -> dict[str, float]:
    """First-call times of every modeshift operation benchmarked here, on tiny inputs.

    Meant to run in a fresh process: each time is then Numba's compilation
    (or, with a populated cache, the cache load) plus a negligible run.
    """
    start = time.perf_counter()
    adapter = ModeshiftAdapter()
    times = {"import": time.perf_counter() - start}
    tiny = Sizes(single_length=50, n_sequences=3, sequence_length=20, categorical_length=50, em_iterations=2)
    for case in CASES.values():
        problem = case.build(0, tiny)
        for operation in case.operations:
            label = f"({case.key}) {operation}"
            times[label], _ = timed(job_for(adapter, problem, operation).run)
    return times


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def timing_table(
    results: Results,
    libraries: Sequence[str],
    notes: dict[str, str],
) -> list[str]:
    peers = [name for name in libraries if name != "modeshift"]
    header = ["case", "operation", *(f"{name} (s)" for name in libraries)]
    header += [f"{name}/modeshift" for name in peers]
    header.append("targets (" + ", ".join(f"{name} ≥{TARGET_SPEEDUP[name]:g}x" for name in peers) + ")")
    rows = []
    for (case, operation), row in results.items():
        cells = [f"({case})", operation]
        cells += [seconds(row[name].best) if name in row else "n/a" for name in libraries]
        ours = row.get("modeshift")
        verdicts = []
        for name in peers:
            theirs = row.get(name)
            if ours is None or ours.best is None or theirs is None or theirs.best is None:
                cells.append("n/a")
                continue
            ratio = theirs.best / ours.best
            cells.append(f"{ratio:.1f}x")
            verdicts.append(f"{name} {'met' if ratio >= TARGET_SPEEDUP[name] else 'MISSED'}")
        cells.append(", ".join(verdicts) or "n/a")
        rows.append(cells)
    lines = table(header, rows)
    reasons = sorted(
        {f"{name}: {o.note}" for row in results.values() for name, o in row.items() if o.note}
        | {f"{name}: {reason}" for name, reason in notes.items()}
    )
    if reasons:
        lines += ["", *(f"- n/a {reason}" for reason in reasons)]
    return lines


def compile_table(results: Results, libraries: Sequence[str]) -> list[str]:
    """Per operation: the compilation alone where a library exposes it, else the first call."""

    def has(name: str, attribute: str) -> bool:
        return any(getattr(row[name], attribute) is not None for row in results.values() if name in row)

    columns = [
        (name, "compile") if has(name, "compile") else (name, "first")
        for name in libraries
        if has(name, "compile") or has(name, "first")
    ]
    titles = {"compile": "jit compile", "first": "first call"}
    header = ["case", "operation", *(f"{name} {titles[what]} (s)" for name, what in columns)]
    rows = [
        [
            f"({case})",
            operation,
            *(seconds(getattr(row.get(name, Outcome()), what)) for name, what in columns),
        ]
        for (case, operation), row in results.items()
    ]
    return table(header, rows)


def agreement_rows(results: Results, libraries: Sequence[str]) -> list[list[str]]:
    rows = []
    for (case, operation), row in results.items():
        values = {name: o.value for name, o in row.items() if o.value is not None}
        reference = next((name for name in libraries if name in values), None)
        cells = [f"({case})", operation + (" (log-lik. after)" if operation == "em" else "")]
        if reference is None:
            rows.append(cells + ["n/a"] * len(libraries) + ["n/a"])
            continue
        ref = values[reference]
        if operation == "viterbi":
            same = {name: float(np.mean(np.asarray(v) == np.asarray(ref))) for name, v in values.items()}
            cells += [f"{same[n]:.4%} same" if n in same else "n/a" for n in libraries]
            cells.append(f"{1 - min(same.values()):.2e} of states differ")
        else:
            logliks = {name: float(np.asarray(v)) for name, v in values.items()}
            cells += [f"{logliks[n]:.6f}" if n in logliks else "n/a" for n in libraries]
            finite = [v for v in logliks.values() if np.isfinite(v)]
            spread = (max(finite) - min(finite)) / abs(finite[0]) if finite else float("nan")
            broken = [name for name, v in logliks.items() if not np.isfinite(v)]
            cells.append(f"{spread:.1e}" + (f" (not finite: {', '.join(broken)})" if broken else ""))
        rows.append(cells)
    return rows


def machine() -> str:
    """CPU, cores, the current load (other work skews the times) and the Python version."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = f"; load average {os.getloadavg()[0]:.1f} at the start" if hasattr(os, "getloadavg") else ""
    return f"{cpu}, {cores} cores{load}; {platform.system()}; Python {platform.python_version()}"


def report(
    results: Results,
    descriptions: dict[str, str],
    libraries: Sequence[str],
    notes: dict[str, str],
    compile_times: tuple[dict[str, float], dict[str, float]] | str,
    host: str,
    args: argparse.Namespace,
) -> str:
    lines = [
        "# HMM benchmark: modeshift vs hmmlearn vs dynamax",
        "",
        (
            f"Run {time.strftime('%Y-%m-%d %H:%M')}{' (--quick sizes)' if args.quick else ''}; "
            f"best of {args.repeats} runs each; float64 everywhere; "
            f"hmmlearn implementation={args.hmmlearn_implementation!r}."
        ),
        "",
        *(f"- ({key}) {CASES[key].title}: {text}" for key, text in descriptions.items()),
        "",
        "## Times (after JIT compilation)",
        "",
        *timing_table(results, libraries, notes),
        "",
        "## JIT compilation",
        "",
    ]
    lines += compile_paragraph(compile_times)
    lines += [
        "On the real data: modeshift's first call, before the timed runs (its kernels may",
        "have been compiled or loaded by an earlier operation by then), and dynamax's",
        "compilation alone, `jax.jit(f).lower(*args).compile()` (after it, a first call",
        "costs no more than the others):",
        "",
        *compile_table(results, libraries),
        "",
        "## Do they compute the same thing?",
        "",
        "Log-likelihood of the data under the true parameters (score), or under each",
        "library's parameters after 10 EM iterations from the same start (em), and the",
        "largest relative difference between libraries.  dynamax's covariance update is",
        "a MAP one under a prior it cannot switch off, hence its small EM difference.",
        "For Viterbi: the share of time steps whose state equals that of the first",
        "library in the table that ran.",
        "",
        *table(["case", "value", *libraries, "max rel. difference"], agreement_rows(results, libraries)),
        "",
        f"Machine: {host}.  ",
        "Versions: " + versions(("numpy", "numba", "hmmlearn", "jax", "jaxlib", "dynamax", "modeshift")) + ".",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the data (smoke run)")
    parser.add_argument("--only", type=comma_list(tuple(CASES)), default=list(CASES), help="cases, e.g. a,c")
    parser.add_argument(
        "--libs",
        type=comma_list(LIBRARIES),
        default=list(LIBRARIES),
        help="libraries, e.g. modeshift,hmmlearn",
    )
    parser.add_argument(
        "--hmmlearn-implementation",
        choices=("scaling", "log"),
        default="scaling",
        help="hmmlearn's forward-backward; 'scaling' is its faster one (default)",
    )
    add_common_arguments(parser, DEFAULT_OUTPUT)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.compile_probe:  # child process of modeshift_compile_times
        print(json.dumps(compile_probe()))
        return 0

    host = machine()  # before our own work adds to the load
    sizes = Sizes().quick() if args.quick else Sizes()
    adapters, notes = load_adapters(args.libs, args.hmmlearn_implementation)
    for name, reason in notes.items():
        log(f"skipping {name}: {reason}")

    compile_times: tuple[dict[str, float], dict[str, float]] | str
    if "modeshift" not in adapters:
        compile_times = "modeshift not benchmarked"
    elif args.no_compile_probe:
        compile_times = "skipped with --no-compile-probe"
    else:
        log("modeshift: compile time in fresh processes")
        try:
            compile_times = modeshift_compile_times(__file__)
        except (subprocess.CalledProcessError, ValueError) as error:
            stderr = getattr(error, "stderr", "") or ""
            log(f"  compile probe failed: {error}\n{stderr[-2000:]}")
            compile_times = "the fresh-process probe failed; see stderr"

    cases = [CASES[key] for key in args.only]
    results, descriptions = run_benchmarks(cases, adapters, sizes, args.repeats, args.seed)
    markdown = report(results, descriptions, args.libs, notes, compile_times, host, args)
    publish(markdown, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
