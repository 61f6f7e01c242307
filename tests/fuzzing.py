"""Random hostile input for every estimator, ``load`` and the command line, and the one rule that
judges what came back (used by tests/test_fuzz.py under hypothesis and by tools/fuzz.py, which counts).

A *case* is drawn from a ``random.Random`` (hypothesis controls it in the tests, a seed in the
driver): malformed data, a bad hyper-parameter or method argument, a corrupted model file or CSV.
:func:`run` runs it and returns an :class:`Outcome`, one of

- ``ok``: a valid input gave a finite answer;
- ``clear``: a ``ValueError`` or ``TypeError`` (``NotFittedError`` is a ValueError) whose message
  names what is wrong (at least 15 characters, not one of numpy's or pandas' bare messages);
- ``unclear``: an allowed type, but a message that says nothing (empty, short, or one of the bare
  messages of numpy, pandas and Python, which name no place in the input);
- ``raw``: any other exception (IndexError, ZeroDivisionError, LinAlgError, SystemError, ...);
- ``silent``: an invalid input accepted, or NaN / +inf returned (-inf is ``score``'s answer for
  data of probability 0, docs/contract.md);
- ``lost``: an input changed, or a file written outside the requested output.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import inspect
import math
import random
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import modeshift
from modeshift.data import DataWarning
from modeshift.models.base import Forecast, Model
from modeshift.models.em import ConvergenceWarning, ObjectiveDecreaseWarning

OUTCOMES = ("ok", "clear", "unclear", "raw", "silent", "lost")
#: Warnings a model documents (its advice, e.g. an HSMM's "raise max_duration", is a UserWarning);
#: anything else that escapes, numpy's RuntimeWarning above all, is noted.
DOCUMENTED_WARNINGS = (ConvergenceWarning, ObjectiveDecreaseWarning, DataWarning, DeprecationWarning, UserWarning)
#: Bare messages of numpy, pandas and Python that name no place in the user's input.
GENERIC_MESSAGES = (
    "unhashable type",
    "could not convert",
    "setting an array element",
    "operands could not be broadcast",
    "Probabilities contain NaN",
    "object of type",
    "not supported between instances",
    "invalid literal",
    "must be real number",
    "unsupported operand",
    "cannot reshape",
    "index out of bounds",
    "<function _numba_unpickle",
)


class Lost(Exception):
    """Raised by a case that found an input or an earlier output damaged."""


@dataclasses.dataclass
class Case:
    """What to run: ``call`` does it; ``invalid``: an error is due (a normal return is silent)."""

    target: str
    description: str
    call: Callable[[], Any]
    invalid: bool
    inputs: tuple[Any, ...] = ()


@dataclasses.dataclass
class Outcome:
    case: Case
    kind: str
    detail: str = ""
    warnings: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"[{self.kind}] {self.case.target}: {self.case.description} -> {self.detail}"


def judge_error(error: BaseException) -> str:
    """``clear``, ``unclear`` or ``raw`` for an exception that escaped."""
    if not isinstance(error, (ValueError, TypeError)) or type(error).__module__.startswith("numpy"):
        return "raw"  # numpy's LinAlgError is a ValueError, but a raw one
    message = str(error)
    if len(message) < 15 or message.startswith(GENERIC_MESSAGES):
        return "unclear"
    return "clear"


def run(case: Case) -> Outcome:
    """Run ``case`` and judge it (see the module docstring)."""
    before = [_snapshot(item) for item in case.inputs]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = case.call()
        except (KeyboardInterrupt, SystemExit):
            raise
        except Lost as error:
            outcome = Outcome(case, "lost", str(error))
        except BaseException as error:  # noqa: BLE001 - judging every escape is the point
            outcome = Outcome(case, judge_error(error), f"{type(error).__name__}: {error}"[:300])
        else:
            if case.invalid:
                outcome = Outcome(case, "silent", f"accepted, returned {type(result).__name__}")
            elif not _finite(result):
                outcome = Outcome(case, "silent", f"returned NaN or +inf: {str(result)[:200]}")
            else:
                outcome = Outcome(case, "ok")
    if any(not _same(a, _snapshot(b)) for a, b in zip(before, case.inputs)):
        outcome = Outcome(case, "lost", f"an input changed ({outcome.kind}: {outcome.detail})")
    undocumented = tuple(
        f"{w.category.__name__}: {w.message}"[:200] for w in caught if not issubclass(w.category, DOCUMENTED_WARNINGS)
    )
    outcome.warnings = undocumented
    return outcome


# ---------------------------------------------------------------------------- estimators
def estimators() -> list[type[Model]]:
    """The public estimators (as tests/test_contract.py finds them)."""
    found = {
        cls
        for name, cls in Model._registry.items()
        if name.startswith("modeshift.") and getattr(modeshift, cls.__name__, None) is cls
    }
    return sorted(found, key=lambda cls: cls.__name__)


#: Small fits: one start, a few iterations (a ConvergenceWarning is documented, not a finding).
QUICK = {"random_state": 0, "n_restarts": 1, "n_iter": 5, "n_iter_polish": 5}


def make(cls: type[Model], **changes: Any) -> Model:
    """A model of ``cls`` with its test hyper-parameters, made quick, and ``changes``."""
    quick = {name: value for name, value in QUICK.items() if name in cls._hyperparameter_names()}
    return cls(**{**quick, **getattr(cls, "_test_params", {}), **changes})


def valid_data(kind: str, rnd: random.Random) -> tuple[Any, dict[str, Any]]:
    """Small valid data of a kind and the extras (``times``) that go with it."""
    rng = np.random.default_rng(rnd.randrange(2**32))
    if kind == "real":
        n = rnd.choice((40, 60))
        return np.r_[rng.normal(0.0, 1.0, n), rng.normal(4.0, 1.0, n)], {}
    if kind == "symbols":
        return [list(rng.choice(["a", "b", "c"], size=int(rng.integers(4, 10)))) for _ in range(8)], {}
    states = [list(rng.choice(["up", "down"], size=6)) for _ in range(6)]
    return states, {"times": [np.cumsum(rng.exponential(1.0, size=6)) for _ in states]}


_FITTED: dict[str, Model] = {}


def fitted(cls: type[Model]) -> Model:
    """A model of ``cls`` fitted once on valid data (a fresh copy each time: a call may change it)."""
    if cls.__name__ not in _FITTED:
        data, extras = valid_data(cls.data_kind, random.Random(0))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _FITTED[cls.__name__] = make(cls).fit(data, **extras)
    return copy.deepcopy(_FITTED[cls.__name__])


def _real_variant(rnd: random.Random, base: np.ndarray, fit: bool) -> tuple[str, Any, bool]:
    """(description, data, invalid) for real-valued data (all-NaN data are invalid for ``fit`` only)."""
    x = base.copy()
    at = rnd.randrange(len(x))
    choice = rnd.randrange(23)
    if choice == 0:
        x[at] = rnd.choice((np.inf, -np.inf))
        return f"inf at step {at}", x, True
    if choice == 1:
        x[at] = rnd.choice((1e151, -1e200, 1e308))
        return f"huge value at step {at}", x, True
    if choice == 2:
        return "all NaN", np.full_like(x, np.nan), fit
    if choice == 3:
        return "empty array", np.array([]), True
    if choice == 4:
        return "empty list", [], True
    if choice == 5:
        listed = list(x)
        listed[at] = rnd.choice(("abc", [1.0, 2.0], {"a": 1}, b"\x00"))
        return f"foreign object at step {at}", listed, True
    if choice == 6:
        return "3-D array", x[:24].reshape(2, 3, 4), True
    if choice == 7:
        return "string", "1,2,3", True
    if choice == 8:
        return "scalar", 5.0, True
    if choice == 9:
        return "dict", {"y": list(x)}, True
    if choice == 10:
        return "complex values", x + 1j, True
    if choice == 11:
        return "ragged rows in one sequence", [[[1.0, 2.0], [3.0], [4.0, 5.0]]], True
    if choice == 12:
        return "object array of strings", np.array(["a"] * len(x), dtype=object), True
    if choice == 13:
        return "list of an empty sequence", [x, np.array([])], True
    if choice == 14:
        return "None", None, True
    # valid edge cases: any clear error or a finite answer
    if choice == 15:
        return "tiny magnitudes", x * 1e-300, False
    if choice == 16:
        return "constant series", np.full_like(x, 2.5), False
    if choice == 17:
        return "length-1 sequence", x[:1], False
    if choice == 18:
        x[rnd.sample(range(len(x)), 5)] = np.nan
        return "some NaN", x, False
    if choice == 19:
        return "magnitudes 1e100", x * 1e100, False
    if choice == 20:
        return "many length-2 sequences", [x[i : i + 2] for i in range(0, 20, 2)], False
    if choice == 21:
        return "an all-NaN sequence among others", [x, np.full(10, np.nan)], False  # integrated out, or refused
    return "integer dtype", np.round(x).astype(np.int64), False


def _symbol_variant(rnd: random.Random, base: list[list[str]]) -> tuple[str, Any, bool]:
    seqs = [list(s) for s in base]
    i = rnd.randrange(len(seqs))
    choice = rnd.randrange(12)
    if choice == 0:
        seqs[i][0] = ["x"]
        return f"unhashable symbol in sequence {i}", seqs, True
    if choice == 1:
        seqs[i] = []
        return f"empty sequence {i}", seqs, True
    if choice == 2:
        return "empty list", [], True
    if choice == 3:
        return "scalar", 3.5, True
    if choice == 4:
        return "None", None, True
    if choice == 5:
        return "mixed nesting", [["a", "b"], 3], True
    if choice == 6:
        return "dict", {"a": 1}, True
    if choice == 7:
        return "3-D nesting", [[["a"], ["b"]]], True
    if choice == 8:
        seqs[i].append(None)
        return "None symbol", seqs, False
    if choice == 9:
        seqs[i].append(float("nan"))
        return "NaN symbol", seqs, False
    if choice == 10:
        return "one-symbol sequences", [["a"]] * 5, False
    return "integers as symbols", [[1, 2, 1], [2, 2]], False


def _event_variant(rnd: random.Random, base: list[list[str]], times: list[np.ndarray]) -> tuple[str, Any, Any, bool]:
    times = [t.copy() for t in times]
    i = rnd.randrange(len(times))
    choice = rnd.randrange(7)
    if choice == 0:
        times[i][1] = times[i][0] - 1.0
        return "decreasing times", base, times, True
    if choice == 1:
        times[i][2] = rnd.choice((np.nan, np.inf))
        return "non-finite time", base, times, True
    if choice == 2:
        times[i] = times[i][:-1]
        return "one time short", base, times, True
    if choice == 3:
        return "no times", base, None, True
    if choice == 4:
        return "string times", base, [["a"] * len(s) for s in base], True
    if choice == 5:
        times[i][1] = times[i][0]
        return "repeated time", base, times, False
    return "huge times", base, [t * 1e300 for t in times], False


def data_case(rnd: random.Random, cls: type[Model] | None = None) -> Case:
    """Malformed or edge-case data at ``fit`` or at a method of a fitted model."""
    cls = cls or rnd.choice(estimators())
    base, extras = valid_data(cls.data_kind, rnd)
    methods = [m for m in ("fit", "score", "predict", "predict_proba", "filter_proba", "segment") if hasattr(cls, m)]
    method = rnd.choice(methods + (["forecast"] if hasattr(cls, "forecast") else []))
    if cls.data_kind == "real":
        description, data, invalid = _real_variant(rnd, base, method == "fit")
    elif cls.data_kind == "symbols":
        description, data, invalid = _symbol_variant(rnd, base)
    else:
        description, data, times, invalid = _event_variant(rnd, base, extras["times"])
        extras = {} if times is None else {"times": times}
    if method == "fit":
        model = make(cls)
        call = functools.partial(model.fit, data, **extras)
    else:
        model = fitted(cls)
        options = {"horizon": 2} if method == "forecast" else {}
        call = functools.partial(getattr(model, method), data, **extras, **options)
    return Case(f"{cls.__name__}.{method}", description, call, invalid, inputs=(data, extras))


BAD_VALUES: tuple[Any, ...] = ("bogus", float("nan"), object(), {}, [1, [2]], -1, 2.5, -0.5)


def _surely_bad(value: Any, default: Any) -> bool:
    """Whether ``value`` cannot be a valid setting of a hyper-parameter whose default is ``default``:
    a foreign type or NaN always; a negative or fractional number where the default is an integer
    (the counts)."""
    if isinstance(value, dict) and isinstance(default, (tuple, list, set, frozenset)):
        return False  # an empty collection of names: nothing held fixed
    if isinstance(value, (str, dict, list)) or value is BAD_VALUES[2]:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(default, int) and not isinstance(default, bool) and value in (-1, 2.5, -0.5)


def hyperparameter_case(rnd: random.Random, cls: type[Model] | None = None) -> Case:
    """One hyper-parameter set to a hostile value, then ``fit`` on valid data; or, valid but extreme,
    many modes for a few steps."""
    cls = cls or rnd.choice(estimators())
    if cls.data_kind == "real" and "n_states" in cls._hyperparameter_names() and rnd.random() < 0.2:
        n_states, n_steps = rnd.choice((6, 12)), rnd.choice((3, 6))
        y = np.random.default_rng(rnd.randrange(2**32)).normal(size=n_steps)
        fit = functools.partial(lambda: make(cls, n_states=n_states).fit(y))
        return Case(f"{cls.__name__}(n_states={n_states})", f"fit on {n_steps} steps", fit, False)
    name = rnd.choice([n for n in cls._hyperparameter_names() if n != "callback"])
    value = rnd.choice(BAD_VALUES)
    invalid = _surely_bad(value, make(cls).get_params()[name])
    data, extras = valid_data(cls.data_kind, rnd)
    return Case(
        f"{cls.__name__}({name}=...)",
        f"{name}={value!r}",
        lambda: make(cls, **{name: value}).fit(data, **extras),
        invalid,
    )


BAD_ARGUMENTS: tuple[Any, ...] = (0, -1, 2.5, "3", float("nan"), None, True, [2])


def argument_case(rnd: random.Random, cls: type[Model] | None = None) -> Case:
    """A hostile method argument (horizon, n_steps, n_sequences, k, random_state) on a fitted model."""
    cls = cls or rnd.choice(estimators())
    model = fitted(cls)
    data, extras = valid_data(cls.data_kind, random.Random(0))
    value = rnd.choice(BAD_ARGUMENTS)
    calls = []
    if hasattr(cls, "sample"):
        calls += [
            ("sample", "n_steps", lambda v: model.sample(v)),
            ("sample", "n_sequences", lambda v: model.sample(5, v)),
            ("sample", "random_state", lambda v: model.sample(5, random_state=v)),
        ]
    if hasattr(cls, "forecast"):
        calls.append(("forecast", "horizon", lambda v: model.forecast(data, horizon=v, **extras)))
    if hasattr(cls, "predict_next"):
        calls.append(("predict_next", "k", lambda v: model.predict_next(data[0][:2], k=v)))
    method, name, call = rnd.choice(calls)
    default = inspect.signature(getattr(cls, method)).parameters[name].default
    valid = (value is None and default is None) or (
        name == "random_state" and (value is None or (type(value) is int and value >= 0))
    )
    return Case(f"{cls.__name__}.{method}", f"{name}={value!r}", functools.partial(call, value), not valid)


# ------------------------------------------------------------------------------- files
def corrupted_model_case(rnd: random.Random, directory: Path, cls: type[Model] | None = None) -> Case:
    """``load`` of a saved model whose bytes were flipped, cut, or whose members were swapped."""
    cls = cls or rnd.choice(estimators())
    good = directory / f"{cls.__name__}.msz"
    if not good.exists():
        fitted(cls).save(good)
    raw = bytearray(good.read_bytes())
    choice = rnd.randrange(4)
    if choice == 0:
        for _ in range(rnd.randint(1, 8)):
            raw[rnd.randrange(len(raw))] ^= 1 << rnd.randrange(8)
        description = "bit flips"
    elif choice == 1:
        raw = raw[: rnd.randrange(len(raw))]
        description = f"truncated to {len(raw)} bytes"
    elif choice == 2:
        description = "members swapped"
        raw = bytearray(_swapped_members(bytes(raw), rnd))
    else:
        description = "garbage"
        raw = bytearray(rnd.getrandbits(8) for _ in range(rnd.randint(0, 200)))
    path = Path(tempfile.mkdtemp(dir=directory)) / "model.msz"
    path.write_bytes(bytes(raw))

    def call() -> Any:
        try:
            return modeshift.load(path)
        finally:
            if path.read_bytes() != raw:
                raise Lost(f"load changed {path}")

    return Case("load", f"{cls.__name__} file, {description}", call, False)


def _swapped_members(raw: bytes, rnd: random.Random) -> bytes:
    """The archive with the contents of two members exchanged (the names stay)."""
    import io

    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    names = list(members)
    if len(names) >= 2:
        a, b = rnd.sample(names, 2)
        members[a], members[b] = members[b], members[a]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return out.getvalue()


CSV_VARIANTS: tuple[tuple[str, bytes, bool], ...] = (
    ("empty file", b"", True),
    ("header only", b"y\n", True),
    ("strings", b"y\n1\nabc\n3\n", True),
    ("all NaN column", b"y,z\n1,\n2,\n3,\n4,\n", True),
    ("inf", b"y\n1\ninf\n3\n4\n", True),
    ("huge", b"y\n1\n1e300\n3\n4\n", True),
    ("ragged rows", b"y,z\n1,2\n3\n4,5,6\n", True),
    ("binary garbage", bytes(range(256)), True),
    ("BOM and spaces", b"\xef\xbb\xbf y \n1\n2\n3\n4\n5\n6\n", False),
    ("one row", b"y\n1.5\n", False),
    ("constant", b"y\n" + b"2\n" * 30, False),
)


def cli_case(rnd: random.Random, directory: Path, over_input: bool | None = None) -> Case:
    """``modeshift fit`` on a malformed CSV, in a directory of its own; ``over_input``: with the
    output path the input's (drawn when None)."""
    from typer.testing import CliRunner

    from modeshift.cli import app

    over_input = rnd.random() < 0.1 if over_input is None else over_input
    # over the input, a readable file: what is at stake is the data, not the parsing
    description, content, invalid = rnd.choice([v for v in CSV_VARIANTS if not (over_input and v[2])])
    model = rnd.choice(("hmm", "arhmm", "lds", "markov-switching", "slds"))
    work = Path(tempfile.mkdtemp(dir=directory))
    data = work / "data.csv"
    data.write_bytes(content)
    command = "fit-over-input" if over_input else "fit"
    output = data if over_input else work / "model.msz"
    args = ["--debug", "fit", str(data), "--model", model, "--iterations", "5", "--seed", "0", "-o", str(output)]

    def call() -> Any:
        before = _directory_state(work)
        result = CliRunner().invoke(app, args)
        after = _directory_state(work)
        changed = {name for name in before if before[name] != after.get(name)}
        added = set(after) - set(before) - {output.name}
        if changed or added:
            raise Lost(f"changed {sorted(changed)}, added {sorted(added)}")
        shutil.rmtree(work, ignore_errors=True)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        if result.exit_code != 0:
            raise ValueError(result.output.strip() or "exit code without a message")
        return result.exit_code

    invalid = invalid or over_input
    return Case(f"cli fit --model {model}", f"{description} ({command})", call, invalid)


def _directory_state(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in directory.iterdir() if p.is_file()}


# ------------------------------------------------------------------------------- helpers
def _snapshot(value: Any) -> Any:
    try:
        return copy.deepcopy(value)
    except Exception:  # noqa: BLE001 - an object that cannot be copied is compared by identity
        return value


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        try:
            return np.array_equal(np.asarray(a), np.asarray(b), equal_nan=np.asarray(a).dtype.kind in "fc")
        except Exception:  # noqa: BLE001
            return False
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001
        return a is b


def _finite(result: Any) -> bool:
    """No NaN and no +inf anywhere in a method's answer (-inf is allowed: log 0)."""
    if isinstance(result, Forecast):
        return all(_finite(getattr(result, f.name)) for f in dataclasses.fields(result))
    if isinstance(result, pd.DataFrame):
        return _finite(result.select_dtypes("number").to_numpy(dtype=float))
    if isinstance(result, (list, tuple)):
        return all(_finite(item) for item in result)
    if isinstance(result, (float, np.floating, np.ndarray)):
        array = np.asarray(result)
        if array.dtype.kind not in "fc":
            return True
        return not (np.isnan(array).any() or np.isposinf(array).any())
    return True
