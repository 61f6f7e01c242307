"""Models composed from transitions and emissions, with one estimator API."""

from modeshift.models.base import Model, NotFittedError, load
from modeshift.models.hmm import HMM

__all__ = ["HMM", "Model", "NotFittedError", "load"]
