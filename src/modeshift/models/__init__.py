"""Models composed from transitions and emissions, with one estimator API."""

from modeshift.models.arhmm import ARHMM
from modeshift.models.base import Model, NotFittedError, load
from modeshift.models.hmm import HMM
from modeshift.models.lds import LinearGaussianSSM
from modeshift.models.markov_switching import MarkovAutoregression, MarkovRegression
from modeshift.models.slds import SwitchingLDS

__all__ = [
    "ARHMM",
    "HMM",
    "LinearGaussianSSM",
    "MarkovAutoregression",
    "MarkovRegression",
    "Model",
    "NotFittedError",
    "SwitchingLDS",
    "load",
]
