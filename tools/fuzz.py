"""Throw N random hostile cases at modeshift and count what came back (issue 16's closing note).

    python tools/fuzz.py                 # 2000 cases, seed 0; a few minutes on 2 cores
    python tools/fuzz.py -n 200 --seed 3 --show raw,silent,unclear,lost

The cases and the rule that judges them live in tests/fuzzing.py (shared with tests/test_fuzz.py):
malformed data and edge cases at every estimator's fit and methods, hostile hyper-parameters and
method arguments, corrupted model files for ``load``, malformed CSV files for ``modeshift fit``.
Prints the counts (tried, ok, clear, unclear, raw, silent, lost) and every case of the kinds
asked for with ``--show`` (``warnings``: the cases where an undocumented warning escaped).
"""

from __future__ import annotations

import argparse
import collections
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import fuzzing  # noqa: E402

KINDS = ("data", "hyperparameter", "argument", "load", "cli")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--cases", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated, of {', '.join(KINDS)}")
    parser.add_argument(
        "--show", default="raw,silent,unclear,lost", help="outcomes whose cases are listed (and 'warnings')"
    )
    args = parser.parse_args()
    kinds = [kind for kind in args.kinds.split(",") if kind]
    show = set(args.show.split(","))
    counts: collections.Counter[str] = collections.Counter()
    per_kind: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    warned = 0
    listed = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        for i in range(args.cases):
            rnd = random.Random(f"{args.seed}-{i}")
            kind = rnd.choice(kinds)
            case = build(kind, rnd, directory)
            outcome = fuzzing.run(case)
            counts[outcome.kind] += 1
            per_kind[kind][outcome.kind] += 1
            warned += bool(outcome.warnings)
            if outcome.kind in show:
                listed.append(f"#{i} {outcome}")
            if outcome.warnings and "warnings" in show:
                case = outcome.case
                listed.append(f"#{i} [warning] {case.target}: {case.description} -> {outcome.warnings[0]}")
    print(f"{args.cases} cases in {time.perf_counter() - start:.0f} s (seed {args.seed})")
    header = f"{'':16}" + "".join(f"{name:>9}" for name in ("tried", *fuzzing.OUTCOMES))
    print(header)
    for kind in kinds:
        row = per_kind[kind]
        print(f"{kind:16}{sum(row.values()):>9}" + "".join(f"{row[name]:>9}" for name in fuzzing.OUTCOMES))
    print(f"{'total':16}{sum(counts.values()):>9}" + "".join(f"{counts[name]:>9}" for name in fuzzing.OUTCOMES))
    print(f"cases with an undocumented warning (numpy RuntimeWarning ...): {warned}")
    for line in listed:
        print(line)


def build(kind: str, rnd: random.Random, directory: Path) -> fuzzing.Case:
    if kind == "data":
        return fuzzing.data_case(rnd)
    if kind == "hyperparameter":
        return fuzzing.hyperparameter_case(rnd)
    if kind == "argument":
        return fuzzing.argument_case(rnd)
    if kind == "load":
        return fuzzing.corrupted_model_case(rnd, directory)
    return fuzzing.cli_case(rnd, directory)


if __name__ == "__main__":
    main()
