"""Benchmark modeshift's models of symbol sequences: counting Markov chains and next-element prediction.

(a) ``MarkovChain(order=3)`` fit + score (the log-likelihood of the same data, element by
    element) on one sequence of 10^7 i.i.d. tokens, V = 20 and V = 1000 symbols: i.i.d.
    tokens are the worst case for a sparse table, as for V = 1000 almost every 4-gram is
    new. Against two plain baselines that compute the same estimator (add-1/2, the end as
    an outcome, the start padded) and so the same log-likelihood: numpy (each 4-gram
    packed into one int64, ``np.unique(return_counts=True)``, look-ups by
    ``np.searchsorted``) and ``collections.Counter`` over 4-gram tuples (scoring in a
    Python loop).
(b) A categorical HMM's next-element pass, every prefix of every sequence:
    ``SymbolHMM.next_symbol_proba`` against hmmlearn's ``CategoricalHMM`` with the same
    parameters, on the helpdesk log (21,348 events; K = 8 states fitted by modeshift) and on
    a synthetic log (10^5 sequences, about 10^6 events, sampled from a random K = 16,
    V = 32 SymbolHMM). hmmlearn has no public filter, so it runs two ways: what a user of
    its public API does, ``predict_proba`` on every prefix (whose last row is the filtered
    state; helpdesk only, as it is quadratic in the sequence length), and the fastest it
    allows, one forward pass per sequence through its private ``_compute_likelihood`` and
    ``_hmmc.forward_scaling``. The report gives the largest difference between the
    libraries' distributions.
(c) ``VariableOrderChain(max_order=3)``: fit, and evaluation by
    ``modeshift.evaluate.next_element`` (every prefix, top-k, log-loss, NDCG) on the same logs.

Every measurement runs in a fresh process: the best of ``--repeats`` runs (one when a run
takes over 20 s) and the peak resident memory above the process's memory before the
first run (Linux: freed heap returned by glibc's ``malloc_trim``, then ``VmHWM`` reset
through ``/proc/self/clear_refs``), so numba's and numpy's allocations count as much as
Python's. modeshift's kernels are compiled or loaded before the timed runs, on a tiny
input; compilation is reported on its own.

Usage::

    python benchmarks/chains.py              # full sizes, about 4 minutes on 2 cores (Counter is most of it)
    python benchmarks/chains.py --quick      # 10^6 tokens, 10^4 synthetic sequences
    python benchmarks/chains.py --only a --libs modeshift,numpy

The markdown report goes to stdout and to ``benchmarks/results/chains.md``; progress to stderr.
Needs hmmlearn for (b): ``pip install -e . hmmlearn``.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
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
    table,
    timed,
    versions,
)
from hmm import machine

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "chains.md"
LIBRARIES: tuple[str, ...] = ("modeshift", "numpy", "Counter", "hmmlearn")
CASES: tuple[str, ...] = ("a", "b", "c")
MAX_SECONDS = 20.0  # no more repeats after a run this long
ORDER = 3
HMM_STATES, SYNTHETIC_STATES, SYNTHETIC_SYMBOLS = 8, 16, 32


# --------------------------------------------------------------------------
# Peak memory of the current process (Linux)
# --------------------------------------------------------------------------


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"no {field} in /proc/self/status")


def measure(run: Callable[[], Any], repeats: int) -> dict[str, Any]:
    """Best time of ``run`` and, over its first call, the peak resident memory above the memory before it."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # give freed heap back, or the run reuses it unseen
        before = _status_kib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the peak, to the current size
    except OSError:
        before = None
    first, result = timed(run)
    peak = None if before is None else (_status_kib("VmHWM") - before) / 1024
    best = first
    if repeats > 1 and first <= MAX_SECONDS:
        best = min(first, best_of(run, repeats - 1, MAX_SECONDS)[0])
    return {"seconds": best, "peak_mib": peak, "result": result}


# --------------------------------------------------------------------------
# (a) order-3 chain: modeshift and the two baselines
# --------------------------------------------------------------------------


def tokens(n_tokens: int, n_symbols: int, seed: int) -> np.ndarray:
    return np.random.default_rng([seed, n_symbols]).integers(0, n_symbols, n_tokens)


def chain_modeshift(x: np.ndarray) -> float:
    from modeshift import MarkovChain

    return MarkovChain(order=ORDER).fit(x).score(x)


def chain_numpy(x: np.ndarray) -> float:
    """The same estimator as MarkovChain(order=3, smoothing="kt") on one sequence, in plain numpy."""
    n_symbols = int(x.max()) + 1
    base = n_symbols + 2  # the symbols, the unknown symbol, the end; the start pads with the end's code
    padded = np.concatenate([np.full(ORDER, base - 1), x, [base - 1]])
    keys = padded[:-ORDER].copy()
    for lag in range(1, ORDER + 1):
        keys *= base
        keys += padded[lag : len(padded) - ORDER + lag]
    pairs, counts = np.unique(keys, return_counts=True)
    contexts = pairs // base
    firsts = np.flatnonzero(np.r_[True, contexts[1:] != contexts[:-1]])
    seen, totals = contexts[firsts], np.add.reduceat(counts, firsts)
    context_of = keys // base
    n_outcomes = n_symbols + (context_of != base**ORDER - 1)  # no end right at the start
    numerators = counts[np.searchsorted(pairs, keys)] + 0.5
    return float(np.log(numerators / (totals[np.searchsorted(seen, context_of)] + 0.5 * n_outcomes)).sum())


def chain_counter(x: list[int]) -> float:
    """The same estimator with collections.Counter over tuples."""
    n_symbols = max(x) + 1
    start, end = (-1,) * ORDER, -2
    padded = [-1] * ORDER + x + [end]
    grams = Counter(zip(*(padded[lag:] for lag in range(ORDER + 1))))
    contexts: Counter[tuple[int, ...]] = Counter()
    for gram, count in grams.items():
        contexts[gram[:-1]] += count
    total = 0.0
    for gram in zip(*(padded[lag:] for lag in range(ORDER + 1))):
        context = gram[:-1]
        n_outcomes = n_symbols + (context != start)
        total += math.log((grams[gram] + 0.5) / (contexts[context] + 0.5 * n_outcomes))
    return total


# --------------------------------------------------------------------------
# (b), (c) next-element prediction on event logs
# --------------------------------------------------------------------------


def synthetic_model(seed: int) -> Any:
    """A random SymbolHMM over SYNTHETIC_SYMBOLS symbols that ends a sequence after about 10 events."""
    from modeshift import SymbolHMM
    from modeshift.symbols import Vocabulary

    rng = np.random.default_rng([seed, 7])
    model = SymbolHMM(n_states=SYNTHETIC_STATES)
    model.vocabulary_ = Vocabulary(tuple(f"s{i}" for i in range(SYNTHETIC_SYMBOLS)))
    model.startprob_ = rng.dirichlet(np.ones(SYNTHETIC_STATES))
    model.transmat_ = 0.5 * np.eye(SYNTHETIC_STATES) + 0.5 * rng.dirichlet(np.ones(SYNTHETIC_STATES), SYNTHETIC_STATES)
    symbols = rng.dirichlet(np.full(SYNTHETIC_SYMBOLS, 0.3), SYNTHETIC_STATES)
    ends = rng.uniform(0.02, 0.2, SYNTHETIC_STATES)[:, None]
    model.emissionprob_ = np.hstack([(1 - ends) * symbols, np.zeros((SYNTHETIC_STATES, 1)), ends])
    return model


def synthetic_log(model: Any, n_sequences: int, seed: int) -> Any:
    """Sequences sampled from ``model`` until it emits the end (the first element is never the end)."""
    from modeshift import Sequences

    rng = np.random.default_rng([seed, 8])
    end = model.emissionprob_.shape[1] - 1
    emissions, transitions = np.cumsum(model.emissionprob_, axis=1), np.cumsum(model.transmat_, axis=1)
    states = _draw(np.cumsum(model.startprob_ * (1 - model.emissionprob_[:, end]))[None], n_sequences, rng)
    alive, owners, codes = np.arange(n_sequences), [], []
    drawn = _draw(np.cumsum(model.emissionprob_[:, :end], axis=1)[states], n_sequences, rng)  # not the end
    while alive.size:
        going = drawn < end
        owners.append(alive[going])
        codes.append(drawn[going])
        alive = alive[going]
        states = _draw(transitions[states[going]], alive.size, rng)
        drawn = _draw(emissions[states], alive.size, rng)
    owner, code = np.concatenate(owners), np.concatenate(codes)
    order = np.argsort(owner, kind="stable")
    offsets = np.r_[0, np.cumsum(np.bincount(owner, minlength=n_sequences))]
    return Sequences(code[order].reshape(-1, 1), offsets, vocabulary=model.vocabulary_)


def _draw(cumulative: np.ndarray, n_draws: int, rng: np.random.Generator) -> np.ndarray:
    """One index per row of the cumulative weights (a single row serves every draw), by inverse CDF."""
    thresholds = rng.random(n_draws)[:, None] * cumulative[:, -1:]
    return (cumulative < thresholds).sum(axis=1)


def log_sequences(name: str, model_path: str, n_sequences: int, seed: int) -> tuple[Any, Any]:
    """(model, encoded sequences) of a log: the helpdesk log and the model fitted to it, or a synthetic one."""
    import modeshift
    from modeshift import as_sequences
    from modeshift.datasets import load_event_log

    if name == "helpdesk":
        model = modeshift.load(model_path)
        return model, as_sequences(load_event_log("helpdesk"), vocabulary=model.vocabulary_)
    model = synthetic_model(seed)
    return model, synthetic_log(model, n_sequences, seed)


def hmmlearn_model(model: Any) -> Any:
    from hmmlearn.hmm import CategoricalHMM

    hmm = CategoricalHMM(n_components=len(model.startprob_), n_features=model.emissionprob_.shape[1], init_params="")
    hmm.startprob_, hmm.transmat_, hmm.emissionprob_ = model.startprob_, model.transmat_, model.emissionprob_
    return hmm


def _first_row(model: Any) -> np.ndarray:
    row = model.startprob_ @ model.emissionprob_
    row[-1] = 0.0
    return row / row.sum()


def hmmlearn_forward(model: Any, seqs: Any) -> np.ndarray:
    """The next-element layout through hmmlearn's forward pass: one per sequence (private API)."""
    from hmmlearn import _hmmc

    hmm, first = hmmlearn_model(model), _first_row(model)
    rows = []
    for i in range(seqs.n_sequences):
        frames = hmm._compute_likelihood(seqs[i].reshape(-1, 1))
        _, filtered, _ = _hmmc.forward_scaling(hmm.startprob_, hmm.transmat_, frames)
        rows += [first[None], filtered @ hmm.transmat_ @ hmm.emissionprob_]
    return np.concatenate(rows)


def hmmlearn_prefixes(model: Any, seqs: Any) -> np.ndarray:
    """The next-element layout through hmmlearn's public API: predict_proba on every prefix."""
    hmm, first = hmmlearn_model(model), _first_row(model)
    rows = []
    for i in range(seqs.n_sequences):
        codes = seqs[i].reshape(-1, 1)
        rows.append(first)
        for t in range(1, len(codes) + 1):
            rows.append(hmm.predict_proba(codes[:t])[-1] @ hmm.transmat_ @ hmm.emissionprob_)
    return np.array(rows)


# --------------------------------------------------------------------------
# One measurement in a fresh process
# --------------------------------------------------------------------------


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Set up one (case, data, library), warm modeshift's kernels up on a tiny input, then measure."""
    case, data, library, repeats = spec["case"], spec["data"], spec["library"], spec["repeats"]
    if case == "a":
        x = tokens(spec["n_tokens"], data, spec["seed"])
        chains: dict[str, Callable[[Any], float]] = {
            "modeshift": chain_modeshift,
            "numpy": chain_numpy,
            "Counter": chain_counter,
        }
        if library == "modeshift":
            chain_modeshift(x[:1000])
        argument = x.tolist() if library == "Counter" else x
        del x
        outcome = measure(lambda: chains[library](argument), repeats)
        return {**outcome, "value": outcome.pop("result")}
    model, seqs = log_sequences(data, spec["model_path"], spec["n_sequences"], spec["seed"])
    if case == "c":
        from modeshift import VariableOrderChain
        from modeshift.evaluate import next_element

        VariableOrderChain(ORDER).fit(_head(seqs, 20))
        fit = measure(lambda: VariableOrderChain(ORDER).fit(seqs), repeats)
        model = fit.pop("result")
        evaluation = measure(lambda: next_element(model, seqs), repeats)
        return {"fit": fit, "evaluate": evaluation, "value": float(evaluation.pop("result")["log_loss"])}
    passes = {
        "modeshift": model.next_symbol_proba,
        "hmmlearn forward": lambda s: hmmlearn_forward(model, s),
        "hmmlearn prefixes": lambda s: hmmlearn_prefixes(model, s),
    }
    if library == "modeshift":
        model.next_symbol_proba(_head(seqs, 20))
    outcome = measure(lambda: passes[library](seqs), repeats)
    proba = outcome.pop("result")
    reference = model.next_symbol_proba(seqs)
    return {**outcome, "value": float(np.abs(proba - reference).max()), "rows": len(proba)}


def _head(seqs: Any, n_sequences: int) -> Any:
    from modeshift import Sequences

    offsets = seqs.offsets[: n_sequences + 1]
    return Sequences(seqs.codes[: offsets[-1]].reshape(-1, 1), offsets, vocabulary=seqs.vocabulary)


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1][:200]
        log(f"  failed: {last}")
        return {"note": f"failed ({last})"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def compile_probe() -> dict[str, float]:
    """First-call times of the modeshift operations benchmarked here, on tiny inputs (fresh process)."""
    start = time.perf_counter()
    from modeshift import MarkovChain, VariableOrderChain

    times = {"import": time.perf_counter() - start}
    x = tokens(200, 20, 0)
    times["chain fit + score"] = timed(lambda: MarkovChain(order=ORDER).fit(x).score(x))[0]
    model = synthetic_model(0)
    seqs = synthetic_log(model, 5, 0)
    times["SymbolHMM next-element"] = timed(lambda: model.next_symbol_proba(seqs))[0]
    times["VariableOrderChain fit"] = timed(lambda: VariableOrderChain(ORDER).fit(seqs))[0]
    return times


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def cell(result: dict[str, Any] | None, reference: dict[str, Any] | None = None) -> str:
    if result is None:
        return "—"
    if "seconds" not in result:
        return "n/a"
    text = f"{result['seconds']:.3g} s"
    if reference is not None and reference is not result and "seconds" in reference:
        text += f" ({result['seconds'] / reference['seconds']:.1f}×)"
    memory = result.get("peak_mib")
    return text + ("" if memory is None else f", {memory:,.0f} MiB")


def report(
    results: dict[tuple[str, Any, str], dict[str, Any]], args: argparse.Namespace, host: str, compile_times: Any
) -> str:
    lines = [
        "# Symbol-sequence benchmark: Markov chains and next-element prediction",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M')}{' (--quick sizes)' if args.quick else ''}; every cell is a fresh "
        f"process: best of {args.repeats} runs (one when it takes over {MAX_SECONDS:.0f} s), then the peak resident "
        "memory above the process's size before the first run. (×): time relative to modeshift.",
        "",
    ]
    if "a" in args.only:
        rows = []
        for n_symbols in (20, 1000):
            found = {lib: results.get(("a", n_symbols, lib)) for lib in ("modeshift", "numpy", "Counter")}
            ours = found["modeshift"]
            values = [r["value"] for r in found.values() if r and "value" in r]
            spread = (max(values) - min(values)) / abs(values[0]) if len(values) > 1 else float("nan")
            rows.append(
                [
                    f"V = {n_symbols}",
                    *(cell(found[lib], ours) for lib in found),
                    f"{values[0]:.6f}" if values else "n/a",
                    f"{spread:.1e}",
                ]
            )
        lines += [
            f"## (a) MarkovChain(order=3): fit + score, one sequence of {args.n_tokens:,} i.i.d. tokens",
            "",
            *table(
                [
                    "symbols",
                    "modeshift",
                    "numpy (np.unique)",
                    "collections.Counter",
                    "log-likelihood",
                    "max rel. difference",
                ],
                rows,
            ),
            "",
        ]
    if "b" in args.only:
        rows = []
        for data in ("helpdesk", "synthetic"):
            found = {
                lib: results.get(("b", data, lib)) for lib in ("modeshift", "hmmlearn forward", "hmmlearn prefixes")
            }
            ours = found["modeshift"]
            differences = [f"{r['value']:.1e}" for lib, r in found.items() if lib != "modeshift" and r and "value" in r]
            rows.append(
                [
                    data,
                    f"{ours['rows']:,}" if ours and "rows" in ours else "n/a",
                    *(cell(r, ours) for r in found.values()),
                    ", ".join(differences) or "n/a",
                ]
            )
        lines += [
            f"## (b) categorical HMM, next-element distributions of every prefix (helpdesk: K = {HMM_STATES}; "
            f"synthetic: {args.n_sequences:,} sequences, K = {SYNTHETIC_STATES}, V = {SYNTHETIC_SYMBOLS})",
            "",
            *table(
                [
                    "log",
                    "rows",
                    "modeshift SymbolHMM",
                    "hmmlearn forward pass (private)",
                    "hmmlearn predict_proba per prefix",
                    "max abs. difference",
                ],
                rows,
            ),
            "",
            "hmmlearn's per-prefix pass runs on the helpdesk log only: it is quadratic in the sequence length.",
            "",
        ]
    if "c" in args.only:
        rows = []
        for data in ("helpdesk", "synthetic"):
            found = results.get(("c", data, "modeshift"))
            if found is None or "fit" not in found:
                rows.append([data, "n/a", "n/a", "n/a"])
                continue
            rows.append([data, cell(found["fit"]), cell(found["evaluate"]), f"{found['value']:.4f}"])
        lines += [
            "## (c) VariableOrderChain(max_order=3): fit, then evaluate.next_element on the same log",
            "",
            *table(["log", "fit", "next_element (every prefix: top-k, log-loss, NDCG)", "log-loss (nats)"], rows),
            "",
        ]
    lines += compile_paragraph(compile_times)
    lines += [
        f"Machine: {host}.  ",
        "Versions: " + versions(("numpy", "numba", "scipy", "pandas", "hmmlearn", "modeshift")) + ".",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10^6 tokens and 10^4 synthetic sequences (smoke run)")
    parser.add_argument("--only", type=comma_list(CASES), default=list(CASES), help="cases, e.g. a,b")
    parser.add_argument("--libs", type=comma_list(LIBRARIES), default=list(LIBRARIES), help="e.g. modeshift,numpy")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    add_common_arguments(parser, DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    args.n_tokens = 10**6 if args.quick else 10**7
    args.n_sequences = 10**4 if args.quick else 10**5
    return args


def jobs(args: argparse.Namespace, model_path: str) -> list[dict[str, Any]]:
    common = {"repeats": args.repeats, "seed": args.seed, "model_path": model_path}
    specs = []
    if "a" in args.only:
        for n_symbols in (20, 1000):
            for library in ("modeshift", "numpy", "Counter"):
                specs.append({"case": "a", "data": n_symbols, "library": library, "n_tokens": args.n_tokens})
    for data in ("helpdesk", "synthetic") if "b" in args.only else ():
        for library in ("modeshift", "hmmlearn forward", "hmmlearn prefixes"):
            if not (library == "hmmlearn prefixes" and data == "synthetic"):
                specs.append({"case": "b", "data": data, "library": library, "n_sequences": args.n_sequences})
    for data in ("helpdesk", "synthetic") if "c" in args.only else ():
        specs.append({"case": "c", "data": data, "library": "modeshift", "n_sequences": args.n_sequences})
    wanted = set(args.libs) | ({"hmmlearn forward", "hmmlearn prefixes"} if "hmmlearn" in args.libs else set())
    return [{**common, **spec} for spec in specs if spec["library"] in wanted]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.compile_probe:
        print(json.dumps(compile_probe()))
        return 0
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    host = machine()
    compile_times: Any = "skipped with --no-compile-probe"
    if not args.no_compile_probe:
        log("modeshift: compile time in fresh processes")
        compile_times = modeshift_compile_times(__file__)
    results = {}
    with tempfile.TemporaryDirectory(prefix="modeshift-chains-") as directory:
        model_path = str(Path(directory) / "helpdesk.msz")
        if {"b", "c"} & set(args.only):
            from modeshift import SymbolHMM
            from modeshift.datasets import load_event_log

            log(f"fitting SymbolHMM(n_states={HMM_STATES}) to the helpdesk log")
            SymbolHMM(HMM_STATES, random_state=args.seed).fit(load_event_log("helpdesk")).save(model_path)
        for spec in jobs(args, model_path):
            log(f"({spec['case']}) {spec['data']}: {spec['library']}")
            results[spec["case"], spec["data"], spec["library"]] = outcome = run_worker(spec)
            log(f"  {outcome}")
    publish(report(results, args, host, compile_times), args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
