"""What the benchmark scripts share: timing, the fresh-process compile probe, markdown tables."""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Collection, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

# The benchmarks run a fixed number of EM iterations on purpose (tol=-inf): the cap is not news.
warnings.filterwarnings("ignore", message=".*stopped at its cap.*")


def comma_list(choices: Sequence[str]) -> Callable[[str], list[str]]:
    """An argparse type for comma-separated picks from ``choices``, returned in their canonical order."""

    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not items or any(item not in choices for item in items):
            raise argparse.ArgumentTypeError(f"choose from {', '.join(choices)}; got {text!r}")
        return [item for item in choices if item in items]

    return parse


def add_common_arguments(parser: argparse.ArgumentParser, default_output: Path) -> None:
    """--repeats, --seed, --output and the compile-probe switches every script takes."""
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (best is kept)")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--output", type=Path, default=default_output, help="markdown report path")
    parser.add_argument("--no-compile-probe", action="store_true", help="skip modeshift's fresh-process compile timing")
    parser.add_argument("--compile-probe", action="store_true", help=argparse.SUPPRESS)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Wall time of one call, with the garbage collector off as in ``timeit``."""
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        result = fn()
        return time.perf_counter() - start, result
    finally:
        gc.enable()


def best_of(run: Callable[[], Any], repeats: int, max_seconds: float) -> tuple[float, int, Any]:
    """(best time, number of runs, last result) of up to ``repeats`` timed runs; stops
    repeating after a run longer than ``max_seconds``."""
    times, result = [], None
    for _ in range(repeats):
        elapsed, result = timed(run)
        times.append(elapsed)
        if elapsed > max_seconds:
            break
    return min(times), len(times), result


def modeshift_compile_times(script: str | Path) -> tuple[dict[str, float], dict[str, float]]:
    """First-call times from ``script --compile-probe`` in fresh interpreters: (empty cache, filled cache).

    The script's probe prints a JSON object of first-call times as its last line; with an
    empty Numba cache they are compilation times, with the cache filled, load times.
    """

    def probe(cache: str) -> dict[str, float]:
        done = subprocess.run(
            [sys.executable, str(Path(script).resolve()), "--compile-probe"],
            env={**os.environ, "NUMBA_CACHE_DIR": cache},
            capture_output=True,
            text=True,
            check=True,
        )
        return json.loads(done.stdout.strip().splitlines()[-1])

    with tempfile.TemporaryDirectory(prefix="modeshift-numba-cache-") as cache:
        return probe(cache), probe(cache)


def compile_paragraph(compile_times: tuple[dict[str, float], dict[str, float]] | str) -> list[str]:
    """Report lines for :func:`modeshift_compile_times`' result, or for why there is none."""
    if isinstance(compile_times, str):
        return [f"modeshift compile time: n/a ({compile_times}).", ""]
    cold, warm = compile_times

    def listing(times: dict[str, float]) -> str:
        return ", ".join(f"{label} {t:.3g}" for label, t in times.items())

    return [
        "modeshift in a fresh process, first call of each operation on tiny inputs: "
        f"**{sum(cold.values()):.3g} s** with an empty Numba cache (compile; {listing(cold)}), "
        f"**{sum(warm.values()):.3g} s** with the cache filled (load; {listing(warm)}).",
        "",
    ]


def versions(packages: Sequence[str], unimportable: Collection[str] = ()) -> str:
    """'numpy 2.4.6, numba 0.68.1, ...' for the report; 'not installed' or 'not importable' where so."""

    def version(package: str) -> str:
        if package in unimportable:
            return "not importable"
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "not installed"

    return ", ".join(f"{package} {version(package)}" for package in packages)


def seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def publish(markdown: str, output: Path) -> None:
    """Print the report and write it to ``output``."""
    print(markdown)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(markdown)
    log(f"wrote {output}")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
