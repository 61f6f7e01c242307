"""Sequential Monte Carlo: particle methods for models without exact recursions.

Describe a model once (:class:`StateSpaceModel`), then filter it
(:func:`particle_filter`: bootstrap, guided or auxiliary); switching linear models
also have a Rao-Blackwellised filter (:func:`rao_blackwellised_filter`). Smooth by
backward simulation (:func:`backward_simulation`) or online by PaRIS (:func:`paris`).
Learn parameters by particle marginal Metropolis-Hastings (:func:`pmmh`) or particle
Gibbs with ancestor sampling (:func:`particle_gibbs`).
:mod:`modeshift.smc.adapters` turns modeshift's exact models into SMC models.
"""

from modeshift.smc.adapters import LinearGaussian, SwitchingLinear
from modeshift.smc.filters import Auxiliary, ParticleFilterResult, Proposal, particle_filter
from modeshift.smc.model import NonlinearGrowth, StateSpaceModel, StochasticVolatility
from modeshift.smc.pmcmc import (
    ParticleGibbsResult,
    PMMHResult,
    conditional_smc,
    particle_gibbs,
    pmmh,
    stochastic_volatility_gibbs_step,
)
from modeshift.smc.rao_blackwell import RaoBlackwellResult, rao_blackwellised_filter
from modeshift.smc.smoothers import PaRISResult, backward_simulation, paris

__all__ = [
    "Auxiliary",
    "LinearGaussian",
    "NonlinearGrowth",
    "PMMHResult",
    "PaRISResult",
    "ParticleGibbsResult",
    "ParticleFilterResult",
    "Proposal",
    "RaoBlackwellResult",
    "StateSpaceModel",
    "StochasticVolatility",
    "SwitchingLinear",
    "backward_simulation",
    "conditional_smc",
    "paris",
    "particle_filter",
    "particle_gibbs",
    "pmmh",
    "rao_blackwellised_filter",
    "stochastic_volatility_gibbs_step",
]
