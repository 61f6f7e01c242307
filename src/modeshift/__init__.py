"""modeshift: learn state-space models of sequences.

Find the hidden modes of a time series or event sequence, the dynamics inside
each mode and the switches between them; then segment, filter, smooth, forecast
and simulate with the learned model.

The estimators are imported with the package. Its other parts load on first use
(``modeshift.smc``, ``modeshift.plot``, ...), so ``import modeshift`` pays only for
the models:

- :mod:`modeshift.inference`: forward-backward, Viterbi, Kalman filter and smoother
  as plain functions of arrays;
- :mod:`modeshift.smc`: particle filters, smoothers and particle MCMC;
- :mod:`modeshift.evaluate`: next-element accuracy of symbol-sequence models;
- :mod:`modeshift.datasets`: real data sets and simulators;
- :mod:`modeshift.plot` and :mod:`modeshift.report`: figures and an HTML report of a
  fitted model (need matplotlib).
"""

import importlib
from typing import Any

# progress installs the display behind verbose=True; distributed the fit over a Dask collection
# (model.fit(dask_frame)), importing dask only when one is given
from modeshift import distributed, progress  # noqa: F401
from modeshift.data import Sequences, as_sequences
from modeshift.models import (
    ARHMM,
    HMM,
    HSMM,
    ContinuousARHMM,
    ContinuousSwitchingLDS,
    LinearGaussianSSM,
    MarkovAutoregression,
    MarkovChain,
    MarkovChainMixture,
    MarkovJumpProcess,
    MarkovRegression,
    NonlinearSwitchingLDS,
    NotFittedError,
    StructuralModel,
    SwitchingLDS,
    SymbolHMM,
    VariableOrderChain,
    load,
)

__all__ = [
    "ARHMM",
    "ContinuousARHMM",
    "ContinuousSwitchingLDS",
    "HMM",
    "HSMM",
    "LinearGaussianSSM",
    "MarkovAutoregression",
    "MarkovChain",
    "MarkovChainMixture",
    "MarkovJumpProcess",
    "MarkovRegression",
    "NonlinearSwitchingLDS",
    "NotFittedError",
    "Sequences",
    "StructuralModel",
    "SwitchingLDS",
    "SymbolHMM",
    "VariableOrderChain",
    "as_sequences",
    "load",
]
__version__ = "0.1.0"

#: Submodules loaded on first access as attributes of the package (PEP 562).
_LAZY_SUBMODULES = ("datasets", "evaluate", "inference", "plot", "report", "smc")


def __getattr__(name: str) -> Any:
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"modeshift.{name}")  # the import binds it here: asked once
    raise AttributeError(f"module 'modeshift' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY_SUBMODULES})
