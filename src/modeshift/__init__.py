"""modeshift: learn state-space models of sequences.

Find the hidden modes of a time series or event sequence, the dynamics inside
each mode and the switches between them; then segment, filter, smooth, forecast
and simulate with the learned model.
"""

from modeshift import kernels, progress  # progress installs the display behind verbose=True
from modeshift.data import Sequences, as_sequences
from modeshift.models import (
    ARHMM,
    HMM,
    LinearGaussianSSM,
    MarkovAutoregression,
    MarkovChain,
    MarkovChainMixture,
    MarkovJumpProcess,
    MarkovRegression,
    NotFittedError,
    SwitchingLDS,
    SymbolHMM,
    VariableOrderChain,
    load,
)

__all__ = [
    "ARHMM",
    "HMM",
    "LinearGaussianSSM",
    "MarkovAutoregression",
    "MarkovChain",
    "MarkovChainMixture",
    "MarkovJumpProcess",
    "MarkovRegression",
    "NotFittedError",
    "Sequences",
    "SwitchingLDS",
    "SymbolHMM",
    "VariableOrderChain",
    "as_sequences",
    "kernels",
    "load",
]
__version__ = "0.1.0"
