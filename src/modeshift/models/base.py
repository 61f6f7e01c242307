"""What every model shares: hyperparameters, saving and loading, the form of a forecast."""

from __future__ import annotations

import functools
import inspect
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from os import PathLike
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from scipy import stats

from modeshift.archive import ArchiveLimits, read_archive, write_archive
from modeshift.data import Schema, Sequences, check_array
from modeshift.features import FeatureMap
from modeshift.metrics import segments
from modeshift.models import params

__all__ = [
    "Forecast",
    "Model",
    "NotFittedError",
    "check_future_inputs",
    "check_possible",
    "load",
    "mode_segments",
    "qualified_name",
    "set_collection_handler",
]


class NotFittedError(ValueError):
    """A model was used before its parameters were fitted or set."""


class Model:
    """Base of all estimators: the contract every model follows (scikit-learn's conventions).

    - ``__init__`` stores its hyper-parameters unchanged; :meth:`get_params` /
      :meth:`set_params` read and change them, so ``sklearn.base.clone`` works. Their
      rules (types and ranges) are checked when ``fit`` starts: those shared by many
      models in :data:`~modeshift.models.params.COMMON`, the others in the class
      attribute ``_constraints``.
    - ``fit(data, *, ...)`` takes data in every form :func:`~modeshift.data.as_sequences`
      accepts, extra per-step data by keyword, and returns ``self``. Learned attributes
      end in ``_``. Each ``fit`` starts afresh from the hyper-parameters: what an
      earlier fit learned is forgotten, unless ``warm_start=True`` keeps it as the
      start. Parameters set by hand on a model never fitted are its first start.
    - Models with hidden modes offer ``predict`` (the most likely mode path),
      ``predict_proba`` (smoothed marginals), ``filter_proba`` (filtered marginals),
      ``score`` (exact log-likelihood; a model with only a bound has ``elbo`` instead),
      ``sample``, ``forecast``, ``segment``, ``describe``, ``n_parameters``, ``aic`` and
      ``bic``, as far as their maths allows; :mod:`modeshift.models.capabilities` names
      these groups of methods.
    - Data of probability 0 under the model: ``score`` returns -inf (log 0); the methods that
      condition on the data raise a ValueError naming the sequence and step
      (:func:`check_possible`).
    - ``save`` writes JSON and ``.npy`` arrays (no pickle); :func:`load` reads a model
      back by its module-qualified class name. Subclasses list their learned arrays in
      :meth:`_learned_arrays` and restore them in :meth:`_restore`, and declare what a
      file of theirs may hold in ``_file_arrays`` and ``_file_attributes``: :func:`load`
      refuses anything else before :meth:`_restore` runs. ``fit`` ends with parameters that
      are finite (else a ValueError with the likely cause), and ``save`` refuses others,
      so no file is written that could not be loaded.
    - A model fit on a data frame keeps its :class:`~modeshift.data.Schema` as
      ``schema_`` (value, id and time columns, the time axis), saved with it:
      ``model.schema_.read(new_frame)`` reads new data as the fitted data were read.
    """

    _registry: ClassVar[dict[str, type[Model]]] = {}
    #: Rules of this model's own hyper-parameters (those in ``params.COMMON`` apply too).
    _constraints: ClassVar[dict[str, params.Rule]] = {}
    #: What ``fit`` maximises and ``history_`` records ("ELBO" where only a bound is computed).
    objective: ClassVar[str] = "log-likelihood"
    #: The data the model reads: "real" (numbers), "symbols" (sequences of labels), "events"
    #: (labels with time stamps).
    data_kind: ClassVar[str] = "real"
    #: Small, fast hyper-parameters for the contract test suite (tests/test_contract.py).
    _test_params: ClassVar[dict[str, Any]] = {}
    #: Old names of attributes and hyper-parameters, answered for one release with a
    #: DeprecationWarning: old -> new (see :meth:`_take_renamed`).
    _renamed: ClassVar[dict[str, str]] = {}
    #: The arrays a model file may hold besides ``parameter_names`` (which are "finite"):
    #: name -> kind, a key of :data:`ARRAY_KINDS`, ending in "?" for an optional array; a name
    #: "<prefix>.*" declares every array "<prefix>.<key>".
    _file_arrays: ClassVar[dict[str, str]] = {}
    #: The attributes a model file may hold (each optional): name -> a key of :data:`ATTRIBUTE_KINDS`.
    _file_attributes: ClassVar[dict[str, str]] = {"history_": "numbers", "converged_": "bool", "n_iter_": "count"}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Model._registry[qualified_name(cls)] = cls
        for old, new in cls.__dict__.get("_renamed", {}).items():
            setattr(cls, old, _renamed_attribute(cls.__name__, old, new))
        for name, function in list(cls.__dict__.items()):
            if not name.startswith("_") and inspect.isfunction(function):
                setattr(cls, name, _public(name, function))

    @classmethod
    def _hyperparameter_names(cls) -> tuple[str, ...]:
        return _init_names(cls)

    def _take_renamed(self, renamed: dict[str, Any]) -> None:
        """Accept hyper-parameters under their old names (``__init__(..., **renamed)``) for one release.

        ``_renamed`` maps old names to new ones; an old name sets the new hyper-parameter
        with a DeprecationWarning; any other unknown keyword is a TypeError, as usual.
        """
        for old, value in renamed.items():
            new = type(self)._renamed.get(old)
            if new is None or new not in self._hyperparameter_names():
                raise TypeError(f"{type(self).__name__}() got an unexpected keyword argument {old!r}")
            warnings.warn(
                f"{type(self).__name__}({old}=...) is renamed {new}; the old name goes in the next release",
                DeprecationWarning,
                stacklevel=3,
            )
            setattr(self, new, value)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Hyper-parameters, as given to ``__init__`` (``deep`` is accepted for scikit-learn)."""
        return {name: getattr(self, name) for name in self._hyperparameter_names()}

    def set_params(self, **values: Any) -> Model:
        """Change hyper-parameters; the next ``fit`` uses them. Returns ``self``."""
        known = self._hyperparameter_names()
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"{type(self).__name__} has no hyper-parameter(s) {unknown}; it has {known}")
        for name, value in values.items():
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = _init_defaults(type(self))
        shown = [f"{k}={v!r}" for k, v in self.get_params().items() if not _same(v, defaults.get(k))]
        return f"{type(self).__name__}({', '.join(shown)})"

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails (subclasses that look elsewhere end here).
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def _k(self) -> int:
        """The number of modes: ``n_states``, or the one ``fit`` chose for ``n_states="auto"``."""
        if self.n_states != "auto":
            return self.n_states
        if "n_states_" not in self.__dict__:
            raise NotFittedError("n_states='auto': the number of modes is chosen by fit")
        return self.n_states_

    # ------------------------------------------------------------- fitting afresh
    def _check_params(self) -> None:
        """Raise ``ValueError`` for a hyper-parameter that breaks its rule."""
        params.check(type(self).__name__, self.get_params(), {**params.COMMON, **type(self)._constraints})

    def _start_fit(self) -> None:
        """Check the hyper-parameters and forget what an earlier fit learned (unless ``warm_start``).

        Everything but the hyper-parameters is dropped, caches built from old
        hyper-parameters included, so a changed hyper-parameter takes effect.
        """
        self._check_params()
        fitted_with = self.__dict__.get("_fitted_with")
        if fitted_with is not None and not (getattr(self, "warm_start", False) and self._same_model(fitted_with)):
            keep = set(self._hyperparameter_names())
            for name in [name for name in self.__dict__ if name not in keep]:
                del self.__dict__[name]

    def _same_model(self, fitted_with: dict[str, Any]) -> bool:
        """Whether the hyper-parameters that shape the model (all but those of the fitting
        procedure) are those of the last fit: only then can ``warm_start`` reuse its parameters."""
        procedure = {"n_iter", "tol", "n_restarts", "random_state", "warm_start", "verbose", "callback"}
        now = self.get_params()
        return all(_same(now[name], value) for name, value in fitted_with.items() if name not in procedure)

    def _finish_fit(self, seqs: Sequences | None = None) -> None:
        """Record the hyper-parameters of this fit and, for data read from a data frame, its
        :class:`~modeshift.data.Schema` as ``schema_`` (saved with the model)."""
        self._check_finite(f"{type(self).__name__}.fit")
        self.__dict__["_fitted_with"] = dict(self.get_params())
        if seqs is not None and seqs.schema is not None:
            self.__dict__["schema_"] = seqs.schema

    def _check_finite(self, where: str, arrays: dict[str, np.ndarray] | None = None) -> None:
        """Raise ``ValueError`` for a learned parameter (of ``arrays``, by default all) holding NaN
        or infinity, with its likely cause."""
        if arrays is None:
            try:
                arrays = self._learned_arrays()
            except TypeError:  # a model that cannot be saved at all (a custom feature map): save says so
                return
        kinds = self._file_members()
        for name, array in arrays.items():
            if kinds.get(name, "").startswith("finite") and not np.isfinite(array).all():
                index = tuple(int(i) for i in np.argwhere(~np.isfinite(array))[0])
                cause = "standardise data of large magnitude, or fit fewer modes"
                if "reg_covar" in self.get_params():
                    cause = (
                        f"a mode may have collapsed onto a point: raise reg_covar (now {self.reg_covar}), or {cause}"
                    )
                raise ValueError(f"{where}: {name}{list(index)} is {array[index]}, not a finite number ({cause})")

    # ---------------------------------------------------------------- persistence
    def _file_members(self) -> dict[str, str]:
        """The arrays a file of this model holds: name -> kind (see ``_file_arrays``)."""
        if getattr(self, "n_states", None) == "auto" and "n_states_" not in self.__dict__:
            return type(self)(**{**self.get_params(), "n_states": 1})._file_members()  # names do not depend on K
        return {**dict.fromkeys(getattr(self, "parameter_names", ()), "finite"), **type(self)._file_arrays}

    def _learned_arrays(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _learned_attributes(self) -> dict[str, Any]:
        """JSON-serialisable learned values (histories, flags)."""
        return {}

    def _restore(self, arrays: dict[str, np.ndarray], attributes: dict[str, Any]) -> None:
        raise NotImplementedError

    @classmethod
    def _hyperparameters_from_file(cls, hyperparameters: dict[str, Any], attributes: dict[str, Any]) -> dict[str, Any]:
        """The hyper-parameters to build the model of a file from (its JSON values made Python's again)."""
        return _from_json(cls, hyperparameters)

    def save(self, path: str | PathLike[str]) -> None:
        """Write the model to ``path`` (see :mod:`modeshift.archive`); atomic, never over a
        directory or special file (see :mod:`modeshift.safe_write`). A model with a non-finite
        parameter is refused, so a broken model never replaces a good file."""
        where = f"cannot save this {type(self).__name__} to {os.fspath(path)}"
        try:
            arrays = self._learned_arrays()
        except ValueError as error:  # not fitted, or parameters set by hand that break their rules
            raise type(error)(f"{where}: {error}") from None
        self._check_finite(where, arrays)
        hyperparameters = {k: _jsonable(v) for k, v in self.get_params().items()}
        metadata = {
            "model": qualified_name(type(self)),
            "hyperparameters": hyperparameters,
            "attributes": self._learned_attributes(),
        }
        if "schema_" in self.__dict__:
            metadata["schema"] = self.schema_.to_json()
        write_archive(path, metadata, arrays)


#: The methods that also take a Dask collection (a Dask DataFrame or bag) and run over it on a
#: cluster, through the handler :mod:`modeshift.distributed` installs.
_OVER_COLLECTIONS = ("fit", "score", "predict", "predict_proba", "segment")
_collection_handler: Callable[..., Any] | None = None


def set_collection_handler(handler: Callable[..., Any] | None) -> None:
    """Install what ``model.method(collection, ...)`` calls for a Dask collection, or with
    ``client=``: ``handler(method, model, data, *args, **kwargs)`` (:mod:`modeshift.distributed`)."""
    global _collection_handler
    _collection_handler = handler


@functools.cache
def _public(name: str, function: Any) -> Any:
    """``function``, the public method ``name`` of a model class, as every model runs it.

    A method in ``_OVER_COLLECTIONS`` given a Dask collection (or ``client=``) hands it to the
    installed handler (the in-memory models never import dask: a collection's module names it).
    Any other call first checks the arguments the method shares with other models (``fit`` aside)
    against :data:`~modeshift.models.params.ARGUMENTS`: one clear ValueError naming the method,
    e.g. ``MarkovChain.predict_next: k must be an integer >= 1, got -1``.
    """
    dispatches = name in _OVER_COLLECTIONS
    signature = inspect.signature(function)
    names = [] if name == "fit" else [arg for arg in signature.parameters if arg in params.ARGUMENTS]
    if not dispatches and not names:
        return function
    optional = {arg for arg in names if signature.parameters[arg].default is None}  # None: not given

    @functools.wraps(function)
    def public(self: Model, *args: Any, **kwargs: Any) -> Any:
        if dispatches and ("client" in kwargs or (args and type(args[0]).__module__.startswith("dask"))):
            if _collection_handler is None:
                raise ImportError(f"{type(self).__name__}.{name} over a Dask collection needs modeshift.distributed")
            return _collection_handler(name, self, *args, **kwargs)
        if names:
            try:
                given = signature.bind_partial(self, *args, **kwargs).arguments
            except TypeError:  # a wrong call: the method says so itself
                return function(self, *args, **kwargs)
            values = {arg: given[arg] for arg in names if arg in given}
            checked = {k: v for k, v in values.items() if not (v is None and k in optional)}
            params.check(f"{type(self).__name__}.{function.__name__}", checked, params.ARGUMENTS)
        return function(self, *args, **kwargs)

    return public


@functools.cache
def _init_names(cls: type) -> tuple[str, ...]:
    """The named arguments of ``cls.__init__``: its hyper-parameters (read once per class)."""
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return tuple(n for n, p in inspect.signature(cls.__init__).parameters.items() if n != "self" and p.kind in named)


@functools.cache
def _init_defaults(cls: type) -> dict[str, Any]:
    """The default of each argument of ``cls.__init__`` (read once per class)."""
    return {name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()}


def _renamed_attribute(model: str, old: str, new: str) -> property:
    """``old``, answered as ``new`` with a DeprecationWarning, for one release."""
    message = f"{model}.{old} is renamed {new}; the old name goes in the next release"

    def get(self: Model) -> Any:
        warnings.warn(message, DeprecationWarning, stacklevel=2)
        return getattr(self, new)

    def set(self: Model, value: Any) -> None:
        warnings.warn(message, DeprecationWarning, stacklevel=2)
        setattr(self, new, value)

    return property(get, set, doc=f"Deprecated alias of ``{new}``.")


def qualified_name(cls: type) -> str:
    """``module.ClassName``: the key a model file names its class by."""
    return f"{cls.__module__}.{cls.__qualname__}"


def load(path: str | PathLike[str], *, limits: ArchiveLimits | None = None) -> Model:
    """Read a model written by ``save``.

    The file names its class by module-qualified name (``modeshift.models.hmm.HMM``);
    only classes derived from :class:`Model` and already imported are instantiated, so a
    file can neither run code nor be served by another class of the same bare name. The
    file is read as possibly hostile: its sizes within ``limits`` (see
    :class:`~modeshift.archive.ArchiveLimits`), its hyper-parameters checked as ``fit``
    checks them, its arrays and attributes exactly those the class declares, of their
    kinds, and its parameters checked as when set by hand. Any failure is one ``ValueError``
    naming the file (and the member, where one is at fault).
    """
    path = os.fspath(path)
    metadata, arrays = read_archive(path, limits)
    name = metadata.get("model")
    cls = Model._registry.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"{path}: unknown model type {name!r} (expected a module-qualified modeshift model class)")
    arrays = {cls._renamed.get(name, name): value for name, value in arrays.items()}
    attributes = {cls._renamed.get(name, name): value for name, value in metadata.get("attributes", {}).items()}
    try:
        model = cls(**cls._hyperparameters_from_file(metadata.get("hyperparameters", {}), attributes))
        model._check_params()
        declared = model._file_members()
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: member metadata.json: hyperparameters: {error}") from None
    _check_members(path, cls, declared, arrays, attributes)
    try:  # the values meet the models' own checks, which a crafted file can fail in any of these ways
        model._restore(arrays, attributes)
        model._finish_fit()
        if metadata.get("schema") is not None:
            model.schema_ = Schema.from_json(metadata["schema"])
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, ArithmeticError, np.linalg.LinAlgError) as e:
        at_fault = next((name for name in declared if str(e).startswith(name)), None)
        member = f"member arrays/{at_fault}.npy: " if at_fault is not None and at_fault in arrays else ""
        raise ValueError(f"{path}: {member}{e}") from None
    return model


#: The kinds of array a model file holds (``Model._file_arrays``): kind -> (dtype kinds, what it holds).
ARRAY_KINDS = {
    "finite": ("fiu", "finite real numbers"),
    "real": ("fiu", "real numbers (NaN where undefined)"),
    "integer": ("iu", "integers"),
}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


#: The kinds of attribute a model file holds (``Model._file_attributes``): kind -> test of a JSON value.
ATTRIBUTE_KINDS: dict[str, Any] = {
    "bool": lambda value: isinstance(value, bool),
    "count": lambda value: isinstance(value, int) and not isinstance(value, bool) and value >= 0,
    "mapping": lambda value: isinstance(value, dict),
    "number": _is_number,
    "numbers": lambda value: isinstance(value, list) and all(map(_is_number, value)),
    "strings": lambda value: isinstance(value, list) and all(isinstance(item, str) for item in value),
    "labels": lambda value: isinstance(value, list),
    "table": lambda value: isinstance(value, dict) and all(isinstance(column, list) for column in value.values()),
}


def _check_members(
    path: str, cls: type[Model], declared: dict[str, str], arrays: dict[str, np.ndarray], attributes: dict[str, Any]
) -> None:
    """Check a file's arrays and attributes against what its class declares (``declared``: the
    arrays and their kinds, from :meth:`Model._file_members`; ``cls._file_attributes``) before
    anything is restored: names, kinds, finiteness."""
    for name, array in arrays.items():
        kind = declared.get(name, declared.get(name.split(".")[0] + ".*"))  # "<prefix>.*": a family of arrays
        if kind is None:
            raise ValueError(f"{path}: member arrays/{name}.npy is not part of a {cls.__name__} file")
        dtypes, holds = ARRAY_KINDS[kind.rstrip("?")]
        if array.dtype.kind not in dtypes or (kind.startswith("finite") and not np.isfinite(array).all()):
            raise ValueError(f"{path}: member arrays/{name}.npy must hold {holds}, got {array.dtype} {_sample(array)}")
    missing = [name for name, kind in declared.items() if not kind.endswith("?") and name not in arrays]
    if missing:
        raise ValueError(f"{path}: {cls.__name__} file lacks the member(s) {[f'arrays/{n}.npy' for n in missing]}")
    for name, value in attributes.items():
        kind = cls._file_attributes.get(name)
        if kind is None:
            raise ValueError(f"{path}: member metadata.json: attribute {name!r} is not part of a {cls.__name__} file")
        if not ATTRIBUTE_KINDS[kind](value):
            raise ValueError(f"{path}: member metadata.json: attribute {name!r} must be {kind}, got {_short(value)}")


def _sample(array: np.ndarray) -> str:
    bad = array[~np.isfinite(array)] if array.dtype.kind in "fc" else array
    return f"(e.g. {bad.flat[0]!r})" if bad.size else ""


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class Forecast:
    """The predictive distribution of the ``horizon`` steps after the end of the data.

    Attributes
    ----------
    means : (horizon, D) array
        E[y_T+h | y_0..T] for h = 1 .. horizon.
    covariances : (horizon, D, D) array
        Cov[y_T+h | y_0..T].
    mode_probabilities : (horizon, K) array, or None for a model without modes
        p(z_T+h = k | y_0..T).
    symbol_probabilities : (horizon, n_symbols) array, or None
        p(y_T+h = s | y_0..T) for categorical observations (whose ``means`` and
        ``covariances`` are those of the integer codes).

    For several sequences every field is a list with one entry per sequence. A forecast
    unpacks as ``means, covariances``.
    """

    means: np.ndarray | list[np.ndarray]
    covariances: np.ndarray | list[np.ndarray]
    mode_probabilities: np.ndarray | list[np.ndarray] | None = None
    symbol_probabilities: np.ndarray | list[np.ndarray] | None = None

    def __iter__(self) -> Iterator[np.ndarray | list[np.ndarray]]:
        return iter((self.means, self.covariances))

    @classmethod
    def of_sequences(cls, parts: list[Forecast]) -> Forecast:
        """One forecast per sequence gathered into one: itself for one sequence, lists for several."""
        if len(parts) == 1:
            return parts[0]
        gathered = {field.name: [getattr(part, field.name) for part in parts] for field in fields(cls)}
        return cls(**{name: None if values[0] is None else values for name, values in gathered.items()})

    def interval(self, level: float = 0.95) -> tuple[Any, Any]:
        """Central prediction intervals of each observed dimension with probability ``level``,
        from the predictive means and variances taken as Gaussian: mean -/+ z sd, z the
        (1 + level) / 2 quantile of N(0, 1). Returns (lower, upper), each shaped like ``means``
        (lists for several sequences)."""
        if not 0 < level < 1:
            raise ValueError(f"level must be in (0, 1), got {level!r}")
        z = float(stats.norm.ppf(0.5 + level / 2))
        bounds = []
        for part in self.per_sequence():
            sd = np.sqrt(np.diagonal(part.covariances, axis1=1, axis2=2))
            bounds.append((part.means - z * sd, part.means + z * sd))
        if len(bounds) == 1:
            return bounds[0]
        return [low for low, _ in bounds], [high for _, high in bounds]

    def per_sequence(self) -> list[Forecast]:
        """One forecast per sequence: the inverse of :meth:`of_sequences`."""
        if not isinstance(self.means, list):
            return [self]
        values = {field.name: getattr(self, field.name) for field in fields(self)}
        return [
            Forecast(**{name: None if value is None else value[s] for name, value in values.items()})
            for s in range(len(self.means))
        ]


def check_future_inputs(
    future_inputs: Any, horizon: int, n_sequences: int, input_dim: int, model: str, name: str = "future_inputs"
) -> list[np.ndarray]:
    """The inputs of the ``horizon`` steps to forecast (or simulate), one (horizon, input_dim) array per sequence.

    ``future_inputs`` is one array for all sequences or a list with one per sequence; it
    must be None when ``input_dim`` is 0. ``name`` is the argument's name in messages.
    """
    if input_dim == 0:
        if future_inputs is not None:
            raise ValueError(f"{name} were given but {model} has input_dim=0")
        return [np.zeros((horizon, 0))] * n_sequences
    if future_inputs is None:
        raise ValueError(f"{model} has input_dim={input_dim}: pass {name} ({horizon}, {input_dim})")
    if (
        isinstance(future_inputs, (list, tuple))
        and len(future_inputs)
        and np.ndim(future_inputs[0]) >= 1
        and (np.ndim(future_inputs[0]) == 2 or n_sequences > 1)
    ):
        items = list(future_inputs)
    else:
        items = [future_inputs] * n_sequences
    if len(items) != n_sequences:
        raise ValueError(f"{name}: got {len(items)} arrays for {n_sequences} sequences")
    out = []
    for s, item in enumerate(items):
        array = np.asarray(item, dtype=float)
        if array.ndim == 1 and input_dim == 1:
            array = array[:, None]
        out.append(check_array(f"{name} for sequence {s}", array, (horizon, input_dim)))
    return out


def simulated(draws: list[tuple[Any, Any]]) -> tuple[Any, Any]:
    """What ``sample`` returns for its simulated sequences, each an (observations, states) pair:
    the one pair itself, or for several the list of their observations and the list of their states."""
    if len(draws) == 1:
        return draws[0]
    return [y for y, _ in draws], [x for _, x in draws]


def check_possible(
    log_likelihoods: np.ndarray,
    cause: str,
    filtered: Callable[[], np.ndarray] | None = None,
    offsets: np.ndarray | None = None,
) -> None:
    """Raise ``ValueError`` naming the first sequence with probability 0 under the model, its first
    impossible step where the model's filter can tell, and ``cause``.

    The one rule for data a model finds impossible (docs/contract.md): ``score`` returns -inf (the
    log of probability 0, an exact answer), and every method that conditions on the data (predict,
    predict_proba, filter_proba, decode, segment, forecast, sample_posterior) calls this, since no
    law given an impossible observation exists. ``filtered`` (called only on failure) gives the
    filtered mode probabilities (n_steps, K) of the sequences cut by ``offsets``: the first row
    that does not sum to 1 is the impossible step (what a filter writes from there on is no law).
    """
    impossible = np.flatnonzero(~np.isfinite(log_likelihoods))
    if not impossible.size:
        return
    sequence = int(impossible[0])
    where = f"sequence {sequence}"
    if filtered is not None and offsets is not None:
        rows = filtered()[offsets[sequence] : offsets[sequence + 1]]
        with np.errstate(invalid="ignore", over="ignore"):
            no_law = np.flatnonzero(~(np.abs(rows.sum(axis=1) - 1.0) < 1e-6))
        if no_law.size:
            where += f", time step {int(no_law[0])},"
    raise ValueError(f"{where} has probability 0 under the current parameters ({cause})")


def mode_segments(seqs: Sequences, path: np.ndarray, posteriors: np.ndarray, skip: int = 0) -> pd.DataFrame:
    """:func:`~modeshift.metrics.segments` of a decoded path and its posteriors, per sequence.

    ``skip``: the first steps of each sequence that no mode explains (an autoregression's
    first ``order`` steps, which have no lags), left out of every run.
    """
    kept = [np.arange(a + skip, b) for a, b in zip(seqs.offsets[:-1], seqs.offsets[1:])]
    if seqs.n_sequences == 1:
        table = segments(path[kept[0]], posteriors[kept[0]])
    else:
        table = segments([path[rows] for rows in kept], [posteriors[rows] for rows in kept])
    table[["start", "end"]] += skip
    return table


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (tuple, list, set, frozenset)):
        return [_jsonable(v) for v in value]
    if isinstance(value, FeatureMap):
        return value.config()
    if isinstance(value, np.random.Generator) or callable(value):
        return None  # not reproducible from a file
    return value


def _from_json(cls: type[Model], hyperparameters: dict[str, Any]) -> dict[str, Any]:
    """Hyper-parameters read from JSON, with the tuples JSON made lists made tuples again."""
    defaults = _init_defaults(cls)
    return {
        name: tuple(value) if isinstance(value, list) and isinstance(defaults.get(name), tuple) else value
        for name, value in hyperparameters.items()
    }


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False
