"""What every model shares: hyperparameters, saving and loading."""

from __future__ import annotations

import inspect
from os import PathLike
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from modeshift.archive import read_archive, write_archive
from modeshift.data import Sequences
from modeshift.metrics import segments

__all__ = ["Model", "NotFittedError", "load", "mode_segments"]


class NotFittedError(ValueError):
    """A model was used before its parameters were fitted or set."""


class Model:
    """Base of all estimators (scikit-learn conventions).

    ``__init__`` stores hyperparameters only; ``fit`` returns ``self`` and sets
    learned attributes ending in ``_``. Subclasses list their learned arrays in
    :meth:`_learned_arrays` and restore them in :meth:`_restore`.
    """

    _registry: ClassVar[dict[str, type[Model]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Model._registry[cls.__name__] = cls

    def get_params(self) -> dict[str, Any]:
        """Hyperparameters, as given to ``__init__``."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {name: getattr(self, name) for name in names}

    def __repr__(self) -> str:
        defaults = {name: p.default for name, p in inspect.signature(type(self).__init__).parameters.items()}
        shown = [f"{k}={v!r}" for k, v in self.get_params().items() if not _same(v, defaults.get(k))]
        return f"{type(self).__name__}({', '.join(shown)})"

    # ---------------------------------------------------------------- persistence
    def _learned_arrays(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _learned_attributes(self) -> dict[str, Any]:
        """JSON-serialisable learned values (histories, flags)."""
        return {}

    def _restore(self, arrays: dict[str, np.ndarray], attributes: dict[str, Any]) -> None:
        raise NotImplementedError

    def save(self, path: str | PathLike[str]) -> None:
        """Write the model to ``path`` (see :mod:`modeshift.archive`); atomic."""
        hyperparameters = {k: _jsonable(v) for k, v in self.get_params().items()}
        write_archive(
            path,
            {
                "model": type(self).__name__,
                "hyperparameters": hyperparameters,
                "attributes": self._learned_attributes(),
            },
            self._learned_arrays(),
        )


def load(path: str | PathLike[str]) -> Model:
    """Read a model written by ``save``."""
    metadata, arrays = read_archive(path)
    name = metadata.get("model")
    if name not in Model._registry:
        raise ValueError(f"{path}: unknown model type {name!r}")
    model = Model._registry[name](**metadata.get("hyperparameters", {}))
    model._restore(arrays, metadata.get("attributes", {}))
    return model


def mode_segments(seqs: Sequences, path: np.ndarray, posteriors: np.ndarray) -> pd.DataFrame:
    """:func:`~modeshift.metrics.segments` of a decoded path and its posteriors, per sequence."""
    if seqs.n_sequences == 1:
        return segments(path, posteriors)
    bounds = seqs.offsets[1:-1]
    return segments(np.split(path, bounds), np.split(posteriors, bounds))


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (tuple, list, set, frozenset)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.random.Generator) or callable(value):
        return None  # not reproducible from a file
    return value


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False
