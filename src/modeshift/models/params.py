"""Hyper-parameter rules: declared once, checked by every estimator at ``fit``.

A rule is a small object that says whether a value is allowed and describes what is.
The hyper-parameters most estimators share (``n_iter``, ``tol``, ``n_restarts``,
``random_state``, ...) have their rules in :data:`COMMON`; an estimator adds its own in
a class attribute ``_constraints``. :func:`check` raises one clear ``ValueError``.

>>> check("HMM", {"n_iter": -1}, COMMON)
Traceback (most recent call last):
...
ValueError: HMM: n_iter must be an integer >= 0, got -1
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np

__all__ = [
    "ARGUMENTS",
    "COMMON",
    "Boolean",
    "Callable",
    "Integer",
    "Names",
    "Number",
    "OneOf",
    "Rule",
    "check",
    "either",
]


class Rule:
    """What a hyper-parameter may be."""

    def allows(self, value: Any) -> bool:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class Integer(Rule):
    """An integer in [low, high] (either bound optional); bools are refused."""

    low: int | None = None
    high: int | None = None

    def allows(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, Integral):
            return False
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)

    def describe(self) -> str:
        return "an integer" + _bounds(self.low, self.high, False)


@dataclass(frozen=True)
class Number(Rule):
    """A real number above ``low`` (strictly if ``open_low``) and at most ``high``; finite unless
    ``infinite`` (never NaN)."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    infinite: bool = False

    def allows(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, Real) or np.isnan(value):
            return False
        if not self.infinite and not np.isfinite(value):
            return False
        above = self.low is None or (value > self.low if self.open_low else value >= self.low)
        return above and (self.high is None or value <= self.high)

    def describe(self) -> str:
        return ("a number" if self.infinite else "a finite number") + _bounds(self.low, self.high, self.open_low)


@dataclass(frozen=True)
class OneOf(Rule):
    """One of a few values (strings, None, ...)."""

    options: tuple[Any, ...]

    def allows(self, value: Any) -> bool:
        return any(value is option or (isinstance(value, str) and value == option) for option in self.options)

    def describe(self) -> str:
        return "one of " + ", ".join(repr(option) for option in self.options)


class Boolean(Rule):
    def allows(self, value: Any) -> bool:
        return isinstance(value, (bool, np.bool_))

    def describe(self) -> str:
        return "True or False"


class Callable(Rule):
    def allows(self, value: Any) -> bool:
        return value is None or callable(value)

    def describe(self) -> str:
        return "a function or None"


class Names(Rule):
    """A collection of names (strings): which parameters ``fit`` holds fixed."""

    def allows(self, value: Any) -> bool:
        return isinstance(value, (tuple, list, set, frozenset)) and all(isinstance(item, str) for item in value)

    def describe(self) -> str:
        return "a tuple, list or set of parameter names (strings)"


class RandomState(Rule):
    def allows(self, value: Any) -> bool:
        return value is None or isinstance(value, np.random.Generator) or Integer(0).allows(value)

    def describe(self) -> str:
        return "None, a non-negative integer seed or a numpy Generator"


@dataclass(frozen=True)
class _Either(Rule):
    rules: tuple[Rule, ...]

    def allows(self, value: Any) -> bool:
        return any(rule.allows(value) for rule in self.rules)

    def describe(self) -> str:
        return " or ".join(rule.describe() for rule in self.rules)


def either(*rules: Rule) -> Rule:
    """A value any of ``rules`` allows."""
    return _Either(rules)


#: Rules of the hyper-parameters that many estimators share.
COMMON: dict[str, Rule] = {
    "n_states": either(Integer(1), OneOf(("auto",))),
    "max_states": Integer(1),
    "n_iter": Integer(0),
    "tol": Number(infinite=True),  # -inf: never stop before n_iter
    "n_restarts": Integer(1),
    "random_state": RandomState(),
    "accelerate": Boolean(),
    "warm_start": Boolean(),
    "verbose": Boolean(),
    "callback": Callable(),
    "fixed": Names(),
}


#: Rules of the arguments the models' public methods share, checked by name at every call
#: (:class:`~modeshift.models.base.Model` wraps each method that takes one of them).
ARGUMENTS: dict[str, Rule] = {
    "horizon": Integer(1),
    "n_steps": Integer(1),
    "n_sequences": Integer(1),
    "k": Integer(1),
    "top": Integer(1),
    "max_length": either(Integer(1), OneOf((None,))),
    "random_state": RandomState(),
    "stop_at_end": Boolean(),
    "eps": Number(0.0, 1.0, open_low=True),
    "base": either(Number(0.0, open_low=True), OneOf((None,))),
    "t_end": either(Number(0.0, open_low=True), OneOf((None,))),
}


def check(model: str, values: Mapping[str, Any], rules: Mapping[str, Rule]) -> None:
    """Raise ``ValueError`` naming ``model``, the hyper-parameter and the value that breaks its rule."""
    for name, value in values.items():
        rule = rules.get(name)
        if rule is not None and not rule.allows(value):
            raise ValueError(f"{model}: {name} must be {rule.describe()}, got {value!r}")


def _bounds(low: float | None, high: float | None, open_low: bool) -> str:
    if low is not None and high is not None:
        return f" in {'(' if open_low else '['}{low}, {high}]"
    if low is not None:
        return f" {'>' if open_low else '>='} {low}"
    if high is not None:
        return f" <= {high}"
    return ""
