"""Property-based fuzzing (issue 16, item 7): hostile data, hyper-parameters, method arguments,
corrupted model files and malformed CSV files at every estimator, ``load`` and the command line.

Only a ValueError or TypeError (NotFittedError is a ValueError) with a message naming what is
wrong may escape, or a finite answer for a valid input, with no warning but those the models
document; nothing written outside the requested output, no input changed. The cases and the
judge are in tests/fuzzing.py, shared with the counting driver tools/fuzz.py. The default
budget is small (a few examples per estimator, derandomised, so a run is repeatable); ``-m slow``
runs the long profile with fresh examples.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import fuzzing
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modeshift.models.base import Model

ESTIMATORS = [pytest.param(cls, id=cls.__name__) for cls in fuzzing.estimators()]
QUICK = {"deadline": None, "database": None, "derandomize": True, "suppress_health_check": list(HealthCheck)}
LONG = {**QUICK, "derandomize": False}
pytestmark = pytest.mark.filterwarnings("ignore")  # run() records the warnings and the checks judge them


def _fuzz(make_case: Callable[[random.Random], fuzzing.Case], examples: int, **budget: object) -> None:
    """Run ``examples`` cases drawn by hypothesis; each must end ok or with a clear error, and let
    no undocumented warning (numpy's RuntimeWarning) escape."""

    @settings(max_examples=examples, **{**QUICK, **budget})
    @given(st.randoms(use_true_random=False))
    def check(rnd: random.Random) -> None:
        outcome = fuzzing.run(make_case(rnd))
        assert outcome.kind in ("ok", "clear"), str(outcome)
        assert not outcome.warnings, f"{outcome}; escaped: {outcome.warnings}"

    check()


# -------------------------------------------------------------------- the estimators
@pytest.mark.parametrize("cls", ESTIMATORS)
def test_malformed_data_gives_a_clear_error_or_a_finite_answer(cls: type[Model]) -> None:
    _fuzz(lambda rnd: fuzzing.data_case(rnd, cls), 12)


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_hostile_hyperparameters_are_refused_by_name(cls: type[Model]) -> None:
    _fuzz(lambda rnd: fuzzing.hyperparameter_case(rnd, cls), 8)


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_hostile_method_arguments_are_refused_by_name(cls: type[Model]) -> None:
    _fuzz(lambda rnd: fuzzing.argument_case(rnd, cls), 6)


# ----------------------------------------------------------------- files and the CLI
@pytest.mark.parametrize("cls", ESTIMATORS)
def test_corrupted_model_files_give_a_clear_error(cls: type[Model], tmp_path: Path) -> None:
    _fuzz(lambda rnd: fuzzing.corrupted_model_case(rnd, tmp_path, cls), 10)


def test_malformed_csv_files_at_the_command_line(tmp_path: Path) -> None:
    """``modeshift fit`` on a malformed CSV: a clear error or a model, and nothing else written."""
    _fuzz(lambda rnd: fuzzing.cli_case(rnd, tmp_path, over_input=False), 15)


def test_an_output_over_the_input_is_refused(tmp_path: Path) -> None:
    _fuzz(lambda rnd: fuzzing.cli_case(rnd, tmp_path, over_input=True), 5)


# ----------------------------------------------------------------------- long profile
@pytest.mark.slow
@pytest.mark.parametrize(
    "make_case",
    [fuzzing.data_case, fuzzing.hyperparameter_case, fuzzing.argument_case],
    ids=["data", "hyperparameters", "arguments"],
)
def test_long_profile(make_case: Callable[[random.Random], fuzzing.Case]) -> None:
    _fuzz(make_case, 600, **LONG)


@pytest.mark.slow
def test_long_profile_command_line(tmp_path: Path) -> None:
    _fuzz(lambda rnd: fuzzing.cli_case(rnd, tmp_path, over_input=False), 200, **LONG)
