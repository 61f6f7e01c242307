"""The estimator contract (docs/contract.md), checked on every public estimator.

The estimators are discovered, not listed: every class in ``Model``'s registry that
``modeshift`` exports. A class may declare what the suite needs to try it quickly:

- ``data_kind``: "real" (a series of numbers, the default), "symbols" (sequences of
  symbols) or "events" (sequences of states with their time stamps, passed as ``times=``);
- ``_test_params``: hyper-parameters that make a fit small and fast;
- ``_test_change``: hyper-parameter values that change what ``fit`` learns (default:
  one more EM iteration than ``n_iter`` allows, for models with ``n_iter``).

A check that needs a capability (:mod:`modeshift.models.capabilities`) is skipped for a
model without it.
"""

from __future__ import annotations

import dataclasses
import inspect
import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

import modeshift
from modeshift.archive import read_archive
from modeshift.models import params
from modeshift.models.base import Forecast, Model
from modeshift.models.capabilities import (
    BoundScorer,
    Describer,
    Forecaster,
    HybridAutomaton,
    IterativeFit,
    ModeDecoder,
    NextElementModel,
    Sampler,
    Scorer,
    Segmenter,
    Selectable,
)
from modeshift.models.em import ConvergenceWarning

#: Estimators not yet migrated to the contract: their failures are expected. The integrator
#: empties this list as they are migrated.
NOT_YET_ON_THE_CONTRACT = {}


def _public_estimators() -> list[type[Model]]:
    found = {
        cls
        for name, cls in Model._registry.items()
        if name.startswith("modeshift.") and getattr(modeshift, cls.__name__, None) is cls
    }
    return sorted(found, key=lambda cls: cls.__name__)


ESTIMATORS = [
    pytest.param(
        cls,
        id=cls.__name__,
        marks=pytest.mark.xfail(
            cls.__name__ in NOT_YET_ON_THE_CONTRACT, reason="not yet on the contract", strict=False
        ),
    )
    for cls in _public_estimators()
]
pytestmark = [
    pytest.mark.parametrize("cls", ESTIMATORS),
    pytest.mark.filterwarnings("ignore::modeshift.models.em.ConvergenceWarning"),
]


# ------------------------------------------------------------------------ examples
def _data(kind: str, seed: int) -> tuple[Any, dict[str, Any]]:
    """Data of a kind, and the per-step extras that go with it to every method taking data."""
    rng = np.random.default_rng(seed)
    if kind == "real":  # two levels
        return np.r_[rng.normal(0.0, 1.0, 60), rng.normal(4.0, 1.0, 60)], {}
    if kind == "symbols":  # two regimes over three symbols
        sequences = []
        for _ in range(12):
            weights = rng.dirichlet([8.0, 1.0, 1.0] if rng.random() < 0.5 else [1.0, 1.0, 8.0])
            sequences.append(list(rng.choice(["a", "b", "c"], size=int(rng.integers(5, 15)), p=weights)))
        return sequences, {}
    if kind == "events":  # states and the times they were entered
        states = [list(rng.choice(["up", "down"], size=8)) for _ in range(10)]
        times = [np.cumsum(rng.exponential(1.0, size=8)) for _ in states]
        return states, {"times": times}
    raise ValueError(f"unknown data_kind {kind!r}")


def _example(cls: type[Model], seed: int = 0) -> tuple[Any, dict[str, Any]]:
    return _data(getattr(cls, "data_kind", "real"), seed)


def _make(cls: type[Model], **changes: Any) -> Model:
    """A model of the class with its test hyper-parameters (seeded, when it draws random numbers)."""
    seeded = {"random_state": 0} if "random_state" in cls._hyperparameter_names() else {}
    return cls(**{**seeded, **getattr(cls, "_test_params", {}), **changes})


def _fit(cls: type[Model], seed: int = 0, **changes: Any) -> Model:
    X, extras = _example(cls, seed)
    model = _make(cls, **changes)
    assert model.fit(X, **extras) is model, "fit returns self"
    return model


def _learned(model: Model, path) -> dict[str, Any]:
    """Everything a fit learned, as the model saves it."""
    model.save(path)
    metadata, arrays = read_archive(path)
    return {"attributes": metadata["attributes"], **arrays}


def _has_n_iter(cls: type[Model]) -> bool:
    return "n_iter" in cls._hyperparameter_names()


def _assert_same(a: Any, b: Any, where: str = "") -> None:
    """Equality of results (arrays, frames, forecasts, containers, numbers) up to round-off: the
    compiled recursions reassociate sums (fastmath), so the same call may round its last digits
    differently from one call to the next, and a gradient norm at an optimum is round-off itself."""
    if isinstance(a, pd.DataFrame | pd.Series):
        same = pd.testing.assert_frame_equal if isinstance(a, pd.DataFrame) else pd.testing.assert_series_equal
        same(a, b, check_exact=False, rtol=1e-9, atol=1e-11)
    elif dataclasses.is_dataclass(a):
        _assert_same(dataclasses.asdict(a), dataclasses.asdict(b), where)
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple) and not (a and np.isscalar(a[0])):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    elif np.asarray(a).dtype.kind == "f":
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11, err_msg=where)
    else:
        np.testing.assert_array_equal(a, b, err_msg=where)


def _outputs(model: Model, X: Any, extras: dict[str, Any]) -> dict[str, Any]:
    """What the model's capabilities give on the data (and a simulation)."""
    out: dict[str, Any] = {}
    if isinstance(model, ModeDecoder):
        out.update(
            predict=model.predict(X, **extras),
            predict_proba=model.predict_proba(X, **extras),
            filter_proba=model.filter_proba(X, **extras),
        )
    if isinstance(model, Segmenter):
        out["segment"] = model.segment(X, **extras)
    if isinstance(model, Forecaster):
        out["forecast"] = model.forecast(X, 3, **extras)
    if isinstance(model, Sampler):
        out["sample"] = model.sample(7, random_state=0)
    if isinstance(model, Scorer):
        out["score"] = model.score(X, **extras)
    if isinstance(model, BoundScorer):
        out["elbo"] = model.elbo(X, **extras)
    if isinstance(model, Selectable):
        out.update(n_parameters=model.n_parameters, aic=model.aic(X, **extras), bic=model.bic(X, **extras))
    if isinstance(model, Describer):
        out["describe"] = model.describe()
    if isinstance(model, HybridAutomaton):
        out["automaton"] = model.automaton(X, **extras)
    if isinstance(model, NextElementModel):
        out.update(next_symbol_proba=model.next_symbol_proba(X), predict_next=model.predict_next(X[0][:2]))
    return out


def _stacked(per_step: Any) -> np.ndarray:
    """A per-step result as one array (lists hold one array per sequence)."""
    return np.concatenate(per_step) if isinstance(per_step, list) else np.asarray(per_step)


# -------------------------------------------------------------------------- checks
def test_clone_gives_an_unfitted_copy_with_the_same_hyperparameters(cls):
    model = _fit(cls)
    copy = clone(model)
    assert type(copy) is cls
    _assert_same(copy.get_params(), model.get_params())
    learned = [name for name in vars(copy) if name.endswith("_") and not name.startswith("_")]
    assert not learned, f"a clone has learned attributes {learned}"


def test_a_changed_hyperparameter_takes_effect_at_the_next_fit(cls, tmp_path):
    change = getattr(cls, "_test_change", None)
    if change is None:
        if not _has_n_iter(cls):
            pytest.fail(f"{cls.__name__} has no n_iter: declare _test_change, values that change what fit learns")
        start = {"n_iter": 1}
        change = {"n_iter": 2, "tol": -np.inf}
    else:
        start = {}
    X, extras = _example(cls)
    model = _make(cls, **start).fit(X, **extras)
    before = _learned(model, tmp_path / "before.msz")
    model.set_params(**change).fit(X, **extras)
    after = _learned(model, tmp_path / "after.msz")
    fresh = _learned(_make(cls, **{**start, **change}).fit(X, **extras), tmp_path / "fresh.msz")
    with pytest.raises(AssertionError):
        _assert_same(before, after)
    _assert_same(after, fresh)


def test_fits_with_the_same_random_state_are_identical(cls, tmp_path):
    _assert_same(_learned(_fit(cls), tmp_path / "a.msz"), _learned(_fit(cls), tmp_path / "b.msz"))


def test_a_refit_on_new_data_equals_a_fresh_fit(cls, tmp_path):
    model = _fit(cls, seed=0)
    X, extras = _example(cls, seed=1)
    refit = _learned(model.fit(X, **extras), tmp_path / "refit.msz")
    _assert_same(refit, _learned(_fit(cls, seed=1), tmp_path / "fresh.msz"))


def test_methods_take_data_as_fit_does(cls):
    """``(X, lengths=None, *, extras)``: nothing but the data and ``lengths`` by position."""
    for name in (
        "fit",
        "predict",
        "predict_proba",
        "filter_proba",
        "segment",
        "score",
        "elbo",
        "aic",
        "bic",
        "forecast",
    ):
        method = getattr(cls, name, None)
        if method is None:
            continue
        parameters = list(inspect.signature(method).parameters.values())[1:]
        positional = [p.name for p in parameters if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
        expected = ["lengths"] if name != "forecast" else ["horizon", "lengths"]
        assert positional[1:] in (expected, expected[:-1]), f"{cls.__name__}.{name}{inspect.signature(method)}"
    if issubclass(cls, Sampler):
        names = list(inspect.signature(cls.sample).parameters)[1:4]
        assert names == ["n_steps", "n_sequences", "random_state"], (
            f"{cls.__name__}.sample{inspect.signature(cls.sample)}"
        )


def test_results_have_the_promised_shapes_and_types(cls):
    model = _fit(cls)
    X, extras = _example(cls)
    out = _outputs(model, X, extras)
    n_modes = None
    if isinstance(model, ModeDecoder):
        path, smoothed, filtered = (_stacked(out[name]) for name in ("predict", "predict_proba", "filter_proba"))
        n_modes = smoothed.shape[1]
        assert path.ndim == 1 and np.issubdtype(path.dtype, np.integer)
        assert smoothed.shape == filtered.shape == (len(path), n_modes)
        assert ((0 <= path) & (path < n_modes)).all()
        for proba in (smoothed, filtered):
            assert (proba >= 0).all()
            np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-9)
    if "segment" in out:
        assert {"start", "end", "mode", "probability"} <= set(out["segment"].columns)
    if "forecast" in out:
        forecast = out["forecast"]
        assert isinstance(forecast, Forecast)
        means, covariances = forecast
        assert means.shape[0] == 3 and covariances.shape == (3, means.shape[1], means.shape[1])
        np.testing.assert_allclose(covariances, covariances.transpose(0, 2, 1))
        if forecast.mode_probabilities is not None:
            assert forecast.mode_probabilities.shape == (3, n_modes)
            np.testing.assert_allclose(forecast.mode_probabilities.sum(axis=1), 1.0)
    if "sample" in out and n_modes is not None:
        # n_steps is the length, or for a model of sequences that end (a next-element model) its cap
        ends = isinstance(model, NextElementModel)
        observations, modes = out["sample"]
        assert len(observations) == 7 or (ends and 1 <= len(observations) < 7)
        assert modes.shape == (len(observations),) and ((0 <= modes) & (modes < n_modes)).all()
        several, paths = model.sample(7, 3, random_state=0)
        assert isinstance(several, list) and isinstance(paths, list) and len(several) == len(paths) == 3
        assert all(len(x) == len(z) and (len(x) == 7 or ends and 1 <= len(x) < 7) for x, z in zip(several, paths))
        _assert_same(model.sample(7, random_state=0), out["sample"])
    for name in ("score", "elbo", "aic", "bic"):
        if name in out:
            assert isinstance(out[name], float | np.floating) and np.isfinite(out[name]), name
    if "score" in out and "elbo" in out:
        assert out["elbo"] <= out["score"] + 1e-8, "an ELBO bounds the log-likelihood from below"
    if "n_parameters" in out:
        assert isinstance(out["n_parameters"], int | np.integer) and out["n_parameters"] > 0
        if "score" in out:
            assert out["aic"] == pytest.approx(-2 * out["score"] + 2 * out["n_parameters"])
    if "describe" in out and n_modes is not None:
        assert isinstance(out["describe"], pd.DataFrame) and len(out["describe"]) == n_modes
    if "automaton" in out and n_modes is not None:
        found = out["automaton"]
        np.testing.assert_array_equal(found.modes, np.arange(n_modes))
        assert len(found.flows) == len(found.dwell_times) == n_modes
        if found.grid is not None:
            assert found.vector_fields.shape == (n_modes, *found.grid.shape)
    if isinstance(model, IterativeFit):
        assert model.n_iter_ == len(model.history_) and isinstance(model.converged_, bool | np.bool_)
        assert all(np.isfinite(value) for value in model.history_)


def test_save_then_load_keeps_every_result(cls, tmp_path):
    model = _fit(cls)
    X, extras = _example(cls)
    model.save(tmp_path / "model.msz")
    loaded = modeshift.load(tmp_path / "model.msz")
    assert type(loaded) is cls
    _assert_same(_outputs(loaded, X, extras), _outputs(model, X, extras))
    if isinstance(model, IterativeFit):
        _assert_same(
            [loaded.history_, loaded.converged_, loaded.n_iter_], [model.history_, model.converged_, model.n_iter_]
        )


def test_n_iter_zero_only_initialises(cls):
    if not _has_n_iter(cls):
        pytest.skip(f"{cls.__name__} is not fit by iterations")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # nothing was capped
        model = _fit(cls, n_iter=0)
    if isinstance(model, IterativeFit):
        assert model.history_ == [] and model.n_iter_ == 0
    _outputs(model, *_example(cls))  # the initial parameters are usable


def test_a_capped_fit_warns(cls):
    if not _has_n_iter(cls):
        pytest.skip(f"{cls.__name__} is not fit by iterations")
    with pytest.warns(ConvergenceWarning, match=rf"{cls.__name__}.*n_iter=1"):
        model = _fit(cls, n_iter=1)
    assert not model.converged_


def test_an_invalid_hyperparameter_is_an_error_at_fit(cls):
    rules = {**params.COMMON, **cls._constraints}
    X, extras = _example(cls)
    checked = 0
    for name in cls._hyperparameter_names():
        rule = rules.get(name)
        if rule is None:
            continue
        bad = next(value for value in (-1, float("nan"), "not-an-option") if not rule.allows(value))
        model = _make(cls, **{name: bad})  # stored unchanged: no error yet
        with pytest.raises(ValueError, match=rf"{cls.__name__}: {name} must be"):
            model.fit(X, **extras)
        checked += 1
    assert checked, f"{cls.__name__} declares no rule for its hyper-parameters (_constraints)"


def test_an_invalid_method_argument_is_an_error_naming_the_method(cls):
    """Every public method taking an argument of params.ARGUMENTS (horizon, n_steps, k, ...)
    refuses a value against its rule before it runs, whatever the model."""
    checked = 0
    for name in dir(cls):
        method = getattr(cls, name)
        if name.startswith("_") or not callable(method) or name == "fit":
            continue
        try:
            signature = inspect.signature(method)
        except (TypeError, ValueError):
            continue
        for argument in signature.parameters:
            rule = params.ARGUMENTS.get(argument)
            if rule is None:
                continue
            bad = next(value for value in (-1, 2.5, "not-an-option") if not rule.allows(value))
            with pytest.raises(ValueError, match=rf"{cls.__name__}\.{name}: {argument} must be"):
                method(_make(cls), **{argument: bad})
            checked += 1
    if not checked:
        pytest.skip(f"{cls.__name__} has no method taking a shared argument")
