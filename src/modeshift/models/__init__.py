"""Models composed from transitions and emissions, with one estimator API."""

from modeshift.models.arhmm import ARHMM
from modeshift.models.base import Model, NotFittedError, load
from modeshift.models.chain_mixture import MarkovChainMixture
from modeshift.models.continuous_arhmm import ContinuousARHMM
from modeshift.models.continuous_slds import ContinuousSwitchingLDS
from modeshift.models.hmm import HMM
from modeshift.models.hsmm import HSMM
from modeshift.models.jump_process import MarkovJumpProcess
from modeshift.models.lds import LinearGaussianSSM
from modeshift.models.markov_chain import MarkovChain
from modeshift.models.markov_switching import MarkovAutoregression, MarkovRegression
from modeshift.models.nonlinear_slds import NonlinearSwitchingLDS
from modeshift.models.slds import SwitchingLDS
from modeshift.models.structural import StructuralModel
from modeshift.models.symbol_hmm import SymbolHMM
from modeshift.models.variable_order import VariableOrderChain

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
    "Model",
    "NonlinearSwitchingLDS",
    "NotFittedError",
    "StructuralModel",
    "SwitchingLDS",
    "SymbolHMM",
    "VariableOrderChain",
    "load",
]
