"""Benchmark EM over a Dask cluster (:mod:`modeshift.distributed`) against EM in one process.

A Gaussian HMM (K = 8 modes, D = 2 features, full covariances) is fit for 10 EM iterations
(``tol=-inf``) to 10^4 sequences of 10^3 steps (10^7 observations) read from Parquet, from
the same hand-set starting parameters everywhere:

- in memory: ``pandas.read_parquet`` then ``HMM.fit(frame)`` in one process;
- on the local cluster of ``modeshift fit --workers N``, 1 and 2 worker processes (one thread
  each, numba's included, so 1 worker computes on one core and 2 on two; in memory numba uses
  every core; Dask's housekeeping turned down and the nanny's allocator setting dropped,
  ``modeshift.distributed.LOCAL_CLUSTER_CONFIG``):
  ``HMM.fit(dask.dataframe.read_parquet(path))``, the partitions read and kept on the
  workers, the E-step run where they lie.

Each case runs in a fresh interpreter, after a warm-up fit and Parquet read of tiny data
there (and on every worker) so that no Numba compilation or first import (dask.dataframe's
takes seconds in a fresh worker) is timed. Reported: the wall time of the fit (reading
included), the speed-up from 1 to 2 workers (target >= 1.7x), the peak resident memory of
the client process and of each worker (``ru_maxrss``), the final log-likelihood of each
fit, which agree, and for the cluster where the time goes (:class:`Phases`): the first pass
over the data, the start, the mean EM iteration and the client's M-step in it. ``--big``
writes 10^8 observations (10^5 sequences) to Parquet on disk partition by partition, so no
process holds them all, and fits them on the cluster of ``--workers`` processes reading the
partitions again at every pass (``persist=False``), so a worker's memory is bounded by a
partition: time and peak memory per worker, the client's staying that of the small case.
Before each round it measures the speed-up the host allows at that moment (:func:`ceiling`: the
E-step of half the data in two processes at once against one alone, without Dask): two busy
cores share caches and the memory bus, and a shared virtual machine's host varies in load.

Usage::

    python benchmarks/distributed.py                 # 10^7 observations: in memory, 1 and 2 workers
    python benchmarks/distributed.py --quick         # 10^6, a smoke run
    python benchmarks/distributed.py --repeats 3     # three interleaved rounds, the fastest of each case
    python benchmarks/distributed.py --big --workers 2

The data go to ``--data`` (default: a temporary directory, removed after); the markdown
report to stdout and ``benchmarks/results/distributed.md``; progress to stderr.
Needs ``pip install -e '.[distributed]'`` (dask, distributed and pyarrow of one release).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Run as a script, this file's directory comes first on sys.path, where its own name would hide the
# distributed package it benchmarks.
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

warnings.filterwarnings("ignore", message=".*stopped at its cap.*")

K, D = 8, 2


def true_parameters(seed: int) -> dict[str, np.ndarray]:
    """A well-separated HMM: sticky transitions, means on a circle, unit covariances."""
    rng = np.random.default_rng(seed)
    transmat = np.full((K, K), 0.05 / (K - 1)) + np.eye(K) * 0.95 - np.eye(K) * 0.05 / (K - 1)
    angles = 2 * np.pi * np.arange(K) / K
    means = 4.0 * np.column_stack([np.cos(angles), np.sin(angles)])
    covars = np.stack([np.eye(D) * (0.5 + rng.random()) for _ in range(K)])
    return {"startprob_": np.full(K, 1.0 / K), "transmat_": transmat, "means_": means, "covars_": covars}


def starting_parameters(seed: int) -> dict[str, np.ndarray]:
    """The true parameters perturbed: where every case's EM starts."""
    rng = np.random.default_rng(seed + 1)
    params = true_parameters(seed)
    transmat = params["transmat_"] + 0.02 * rng.random((K, K))
    return {
        "startprob_": params["startprob_"],
        "transmat_": transmat / transmat.sum(axis=1, keepdims=True),
        "means_": params["means_"] + 0.5 * rng.normal(size=(K, D)),
        "covars_": params["covars_"] * 1.5,
    }


def write_dataset(path: Path, n_sequences: int, n_steps: int, n_partitions: int, seed: int) -> None:
    """Simulate the HMM to Parquet, one file (partition) at a time: memory of one partition."""
    params = true_parameters(seed)
    cumulative = np.cumsum(params["transmat_"], axis=1)
    factors = np.linalg.cholesky(params["covars_"])
    path.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, n_sequences, n_partitions + 1).astype(int)
    for part, (first, last) in enumerate(zip(bounds[:-1], bounds[1:])):
        rng = np.random.default_rng([seed, part])
        n = last - first
        modes = np.empty((n, n_steps), dtype=np.int64)
        modes[:, 0] = rng.integers(K, size=n)
        draws = rng.random((n, n_steps))
        for t in range(1, n_steps):
            modes[:, t] = (draws[:, t, None] > cumulative[modes[:, t - 1]]).sum(axis=1).clip(max=K - 1)
        noise = rng.standard_normal((n, n_steps, D))
        values = params["means_"][modes] + np.einsum("ntij,ntj->nti", factors[modes], noise)
        frame = pd.DataFrame(
            {
                "id": np.repeat(np.arange(first, last), n_steps),
                "t": np.tile(np.arange(n_steps), n),
                **{f"x{d}": values[:, :, d].ravel() for d in range(D)},
            }
        )
        frame.to_parquet(path / f"part-{part:05d}.parquet", index=False)
        print(f"  wrote partition {part + 1}/{n_partitions}", file=sys.stderr, end="\r")
    print(file=sys.stderr)


def peak_mb() -> float:
    """This process's peak resident memory in MB (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def warm_up(worker: bool = False) -> None:
    """One tiny fit: Numba compiles (or loads from its cache) every kernel the fit uses; and one
    tiny Parquet read, which imports the reader (on a worker, a read of a file on disk by
    dask.dataframe, as its tasks read the partitions: its imports take seconds in a fresh process
    and its first read from disk 0.1-0.2 s more, which a long-lived worker has spent before)."""
    frame = pd.DataFrame({"id": np.repeat([0, 1], 50), "t": np.tile(np.arange(50), 2)})
    frame[[f"x{d}" for d in range(D)]] = np.random.default_rng(0).normal(size=(100, D))
    model(2).fit(frame, time_column="t")
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    pd.read_parquet(buffer)
    if worker:
        import dask.dataframe as dd

        with tempfile.TemporaryDirectory() as scratch:
            frame.to_parquet(Path(scratch) / "part-0.parquet", index=False)
            dd.read_parquet(scratch).compute(scheduler="sync")


def model(n_iter: int, seed: int = 0) -> Any:
    from modeshift import HMM

    hmm = HMM(K, covariance="full", n_iter=n_iter, tol=-np.inf, accelerate=False)
    for name, value in starting_parameters(seed).items():
        setattr(hmm, name, value)
    return hmm


def run_case(case: str, data: Path, iterations: int, seed: int, persist: bool = True) -> dict[str, Any]:
    """One case in this (fresh) process: the fit's time, its log-likelihood and peak memories."""
    warm_up()
    if case == "memory":
        start = time.perf_counter()
        fitted = model(iterations, seed).fit(pd.read_parquet(data), time_column="t")
        elapsed = time.perf_counter() - start
        return {"seconds": elapsed, "log_likelihood": fitted.history_[-1], "client_mb": peak_mb(), "worker_mb": []}
    import dask.dataframe as dd

    from modeshift.distributed import _cluster

    workers = int(case)
    with _cluster(None, workers) as client, timing_phases() as phases:  # the cluster of `modeshift fit --workers N`
        client.run(warm_up, True)
        start = time.perf_counter()
        fitted = model(iterations, seed).fit(dd.read_parquet(data), time_column="t", persist=persist)
        end = time.perf_counter()
        worker_mb = sorted(client.run(peak_mb).values())
    return {
        "seconds": end - start,
        "log_likelihood": fitted.history_[-1],
        "client_mb": peak_mb(),
        "worker_mb": worker_mb,
        **phases.summary(start, end),
    }


class Phases:
    """When each phase of a fit over a cluster began and ended (:func:`timing_phases`)."""

    def __init__(self) -> None:
        self.spans: dict[str, list[tuple[float, float]]] = {"of": [], "sample": [], "__call__": []}

    def summary(self, start: float, end: float) -> dict[str, float]:
        """Seconds of a fit from ``start`` to ``end``: the first pass over the data (to the end of
        ``Shards.of``: reading, checking and converting every partition), the start (from there
        to the first E-step: the sample, the starting values), an EM iteration on average (from
        one E-step's start to the next: the sum over the shards and the client's M-step), of
        which the client's share between two sums (the M-step), and the finish after the last."""
        (first_pass,) = self.spans["of"]
        sums = self.spans["__call__"]
        starts = [begun for begun, _ in sums]
        gaps = [later - ended for (_, ended), later in zip(sums, starts[1:])]
        return {
            "first_pass_s": first_pass[1] - start,
            "start_s": starts[0] - first_pass[1],
            "iteration_s": (sums[-1][1] - starts[0]) / len(sums),
            "m_step_s": float(np.mean(gaps)) if gaps else 0.0,
            "finish_s": end - sums[-1][1],
        }


@contextlib.contextmanager
def timing_phases() -> Iterator[Phases]:
    """Time the phases of :mod:`modeshift.distributed`'s fit by wrapping its steps in this process."""
    from modeshift.distributed import Shards

    phases = Phases()
    originals = {name: Shards.__dict__[name] for name in phases.spans}

    def timed(name: str, method: Any) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            begun = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                phases.spans[name].append((begun, time.perf_counter()))

        return run

    for name, original in originals.items():
        function = original.__func__ if isinstance(original, classmethod) else original
        wrapped = timed(name, function)
        setattr(Shards, name, classmethod(wrapped) if isinstance(original, classmethod) else wrapped)
    try:
        yield phases
    finally:
        for name, original in originals.items():
            setattr(Shards, name, original)


def in_fresh_process(case: str, data: Path, iterations: int, seed: int, persist: bool) -> dict[str, Any]:
    arguments = [sys.executable, __file__, "--case", case, "--data", str(data)]
    arguments += ["--iterations", str(iterations), "--seed", str(seed)] + ([] if persist else ["--no-persist"])
    done = subprocess.run(arguments, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"case {case} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def ceiling(data: Path) -> float:
    """The speed-up from 1 to 2 workers this host allows now: the E-step of half the partitions in
    two processes at once (each its own half, no Dask) against one alone. Two busy cores share
    caches, the memory bus and, on a virtual machine, a host whose load varies: the ratio is below
    2 even for work that splits perfectly, and the cluster's speed-up can be no better."""
    (alone,) = half_e_steps(data, 1)
    return 2 * alone / max(half_e_steps(data, 2))


def half_e_steps(data: Path, n: int) -> list[float]:
    """The seconds of :func:`half_e_step` in ``n`` fresh processes (half i in the i-th) started together."""
    start = time.time() + 8.0  # after every process has read its partitions and run a first E-step
    runs = [
        subprocess.Popen(
            [sys.executable, __file__, "--case", "half", "--data", str(data), "--half", str(i), "--start", str(start)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(n)
    ]
    return [float(run.communicate()[0]) for run in runs]


def half_e_step(data: Path, half: int, start: float) -> float:
    """The fastest of 3 E-steps (on this thread alone, as a worker runs one) over half ``half`` of
    the partitions of ``data``, begun at the wall-clock time ``start``."""
    from modeshift._kernels.threads import threads_for
    from modeshift.models import em

    warm_up()
    files = sorted(data.glob("*.parquet"))
    frames = [pd.read_parquet(file) for file in files[half::2]]
    hmm = model(0).fit(frames[0], time_column="t")  # the starting parameters, set up for E-steps
    shards = [hmm._em_data(frame, time_column="t") for frame in frames]
    best = np.inf
    with threads_for(1):
        em._shard_e_step(hmm, shards[0])
        time.sleep(max(0.0, start - time.time()))
        for _ in range(3):
            begun = time.perf_counter()
            for shard in shards:
                em._shard_e_step(hmm, shard)
            best = min(best, time.perf_counter() - begun)
    return best


def report(rounds: list[dict[str, dict[str, Any]]], ceilings: list[float], n_obs: int, iterations: int) -> str:
    """The markdown report of ``rounds`` (each a run of every case): per case its fastest run (the
    rounds interleave the cases, so a machine whose speed drifts slows each alike); ``ceilings``: the
    speed-up the host allowed before each round (:func:`ceiling`)."""
    rows = {name: min((run[name] for run in rounds), key=lambda row: row["seconds"]) for name in rounds[0]}
    lines = [
        f"## EM over a Dask cluster: Gaussian HMM K={K}, D={D}, {n_obs:.0e} observations, {iterations} iterations",
        "",
        f"Fastest of {len(rounds)} interleaved run(s) per case.",
        "",
        "| case | fit (s) | client peak (MB) | worker peaks (MB) | final log-likelihood |",
        "|---|---:|---:|---|---:|",
    ]
    for name, row in rows.items():
        workers = ", ".join(f"{mb:.0f}" for mb in row["worker_mb"]) or "-"
        lines.append(
            f"| {name} | {row['seconds']:.1f} | {row['client_mb']:.0f} | {workers} | {row['log_likelihood']:.6f} |"
        )
    one, two = rows.get("1 worker"), rows.get("2 workers")
    if one and two:
        lines += ["", f"Speed-up from 1 to 2 workers: {one['seconds'] / two['seconds']:.2f}x (target >= 1.7x)."]
        if len(rounds) > 1:
            each = ", ".join(f"{run['1 worker']['seconds'] / run['2 workers']['seconds']:.2f}x" for run in rounds)
            lines.append(f"Each round's: {each}.")
    if ceilings:
        allowed = ", ".join(f"{value:.2f}x" for value in ceilings)
        lines += [
            "",
            f"The host's ceiling before each round (the E-step in two processes at once, no Dask): {allowed}.",
        ]
    clustered = {name: row for name, row in rows.items() if "first_pass_s" in row}
    if clustered:
        lines += [
            "",
            "Where the time of a fit over the cluster goes (s): the first pass over the data (reading,",
            "checking, converting the partitions), the start (sample, starting values), an EM iteration",
            "on average (E-steps summed on the cluster, M-step on the client) and the client's M-step in it.",
            "",
            "| case | first pass | start | iteration (mean) | of which M-step | after the last |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, row in clustered.items():
            lines.append(
                f"| {name} | {row['first_pass_s']:.2f} | {row['start_s']:.2f} | {row['iteration_s']:.2f} "
                f"| {row['m_step_s']:.3f} | {row['finish_s']:.2f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10^6 observations, a smoke run")
    parser.add_argument("--big", action="store_true", help="10^8 observations on disk, on --workers processes")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of the --big run")
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--data", type=Path, default=None, help="where the Parquet data go (kept if given)")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "distributed.md")
    parser.add_argument("--no-persist", action="store_true", help="read the partitions at every pass (--big's way)")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of the cases, interleaved (fastest reported)")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--start", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--half", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case == "half":
        print(half_e_step(args.data, args.half, args.start))
        return
    if args.case:
        print(json.dumps(run_case(args.case, args.data, args.iterations, args.seed, not args.no_persist)))
        return
    n_sequences = 100_000 if args.big else 1_000 if args.quick else 10_000
    n_steps = 1_000
    with tempfile.TemporaryDirectory() as scratch:
        data = args.data or Path(scratch) / "hmm.parquet"
        if not data.exists():
            print(f"writing {n_sequences * n_steps:.0e} observations to {data}", file=sys.stderr)
            write_dataset(data, n_sequences, n_steps, max(16, n_sequences // 625), args.seed)
        cases = {f"{args.workers} workers": str(args.workers)} if args.big else {}
        if not args.big:
            cases = {"in memory": "memory", "1 worker": "1", "2 workers": "2"}
        rounds, ceilings = [], []
        for round_ in range(max(1, args.repeats)):
            if not args.big:
                ceilings.append(ceiling(data))
            rows = {}
            for name, case in cases.items():
                print(f"running: {name} (round {round_ + 1})", file=sys.stderr)
                persist = not (args.big or args.no_persist)
                rows[name] = in_fresh_process(case, data, args.iterations, args.seed, persist)
            rounds.append(rows)
    text = report(rounds, ceilings, n_sequences * n_steps, args.iterations)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)


if __name__ == "__main__":
    main()
