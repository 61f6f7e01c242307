"""Sequential Monte Carlo: particle methods for models without exact recursions.

Describe a model once (:class:`StateSpaceModel`), then filter it
(:func:`particle_filter`); :mod:`modeshift.smc.adapters` turns modeshift's exact
models into SMC models.
"""

from modeshift.smc.adapters import LinearGaussian, SwitchingLinear
from modeshift.smc.filters import ParticleFilterResult, Proposal, particle_filter
from modeshift.smc.model import NonlinearGrowth, StateSpaceModel, StochasticVolatility

__all__ = [
    "LinearGaussian",
    "NonlinearGrowth",
    "ParticleFilterResult",
    "Proposal",
    "StateSpaceModel",
    "StochasticVolatility",
    "SwitchingLinear",
    "particle_filter",
]
