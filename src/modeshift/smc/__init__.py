"""Sequential Monte Carlo: particle methods for models without exact recursions.

Describe a model once (:class:`StateSpaceModel`), then filter it
(:func:`particle_filter`: bootstrap, guided or auxiliary); switching linear models
also have a Rao-Blackwellised filter (:func:`rao_blackwellised_filter`). Smooth by
backward simulation (:func:`backward_simulation`) or online by PaRIS (:func:`paris`).
:mod:`modeshift.smc.adapters` turns modeshift's exact models into SMC models.
"""

from modeshift.smc.adapters import LinearGaussian, SwitchingLinear
from modeshift.smc.filters import Auxiliary, ParticleFilterResult, Proposal, particle_filter
from modeshift.smc.model import NonlinearGrowth, StateSpaceModel, StochasticVolatility
from modeshift.smc.rao_blackwell import RaoBlackwellResult, rao_blackwellised_filter
from modeshift.smc.smoothers import PaRISResult, backward_simulation, paris

__all__ = [
    "Auxiliary",
    "LinearGaussian",
    "NonlinearGrowth",
    "PaRISResult",
    "ParticleFilterResult",
    "Proposal",
    "RaoBlackwellResult",
    "StateSpaceModel",
    "StochasticVolatility",
    "SwitchingLinear",
    "backward_simulation",
    "paris",
    "particle_filter",
    "rao_blackwellised_filter",
]
