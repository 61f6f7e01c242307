"""Per-state observation distributions: one small class each."""

from modeshift.emissions.autoregressive import Autoregressive
from modeshift.emissions.base import Emission
from modeshift.emissions.discrete import Categorical, Poisson
from modeshift.emissions.gaussian import COVARIANCE_TYPES, Gaussian
from modeshift.emissions.mixture import GaussianMixture

__all__ = ["COVARIANCE_TYPES", "Autoregressive", "Categorical", "Emission", "Gaussian", "GaussianMixture", "Poisson"]
