"""Particle filters: bootstrap, guided and auxiliary, with adaptive resampling.

The auxiliary particle filter (Pitt & Shephard 1999) looks one observation ahead: before
moving to step t it resamples the particles of step t-1 with weights W_t-1 exp(eta), where
eta = log_predictive_weight(x_t-1, y_t, t) approximates log p(y_t | x_t-1), so that the
particles likely to explain y_t get more children; the second-stage weight of a child then
subtracts its parent's eta. With the exact predictive the second-stage weights of the
bootstrap move are constant: the fully adapted filter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from modeshift._kernels import normalise_log_weights, particle_moments, resample
from modeshift.smc.model import StateSpaceModel

__all__ = ["Auxiliary", "ParticleFilterResult", "Proposal", "particle_filter"]

RESAMPLING = ("multinomial", "stratified", "systematic", "residual")


class Proposal(Protocol):
    """A user proposal q(x_t | x_t-1, y_t) for the guided filter (x_0 | y_0 at t = 0,
    where ``previous`` is None)."""

    def sample(self, previous: np.ndarray | None, y: np.ndarray, t: int, rng: np.random.Generator) -> np.ndarray: ...

    def log_density(self, previous: np.ndarray | None, states: np.ndarray, y: np.ndarray, t: int) -> np.ndarray: ...


class Auxiliary(Protocol):
    """First-stage weights of the auxiliary filter: an approximation of log p(y_t | x_t-1)
    for every particle ``previous`` (N, d) of step t-1, (N,). A model may provide it itself."""

    def log_predictive_weight(self, previous: np.ndarray, y: np.ndarray, t: int) -> np.ndarray: ...


@dataclass(frozen=True)
class ParticleFilterResult:
    """What a particle filter returns.

    ``log_likelihood`` is the unbiased estimate of p(y_0..T-1) on the log scale, the
    sum of ``log_likelihood_increments``; ``means``, ``variances`` (T, d) and
    ``quantiles`` (T, len(levels), d) describe the filtering laws p(x_t | y_0..t);
    ``ess`` is the effective sample size after weighting and ``resampled`` says
    where the particles were resampled (before moving to step t). With
    ``keep_history=True``: ``particles`` (T, N, d), normalised ``weights`` (T, N)
    and ``ancestors`` (T, N), the parent at t-1 of each particle at t (row 0: itself).
    """

    log_likelihood: float
    log_likelihood_increments: np.ndarray
    means: np.ndarray
    variances: np.ndarray
    ess: np.ndarray
    resampled: np.ndarray
    quantiles: np.ndarray | None = None
    particles: np.ndarray | None = None
    weights: np.ndarray | None = None
    ancestors: np.ndarray | None = None


def particle_filter(
    model: StateSpaceModel,
    observations: Any,
    n_particles: int = 1000,
    proposal: Proposal | None = None,
    auxiliary: Auxiliary | None = None,
    resampling: str = "systematic",
    ess_threshold: float = 0.5,
    quantiles: tuple[float, ...] | None = None,
    keep_history: bool = False,
    random_state: int | np.random.Generator | None = None,
) -> ParticleFilterResult:
    """Run a particle filter on one sequence of observations (T,) or (T, p).

    Without a ``proposal`` this is the bootstrap filter (particles move by the
    model's transition, weights are the observation densities); with one it is
    the guided filter (weights g f / q). With ``auxiliary`` (an object with
    ``log_predictive_weight``, the model itself if it has one) it is the auxiliary
    filter of the module docstring, on top of either move. Particles are resampled
    with the given scheme whenever the effective sample size of the (first-stage)
    weights falls below ``ess_threshold * N`` (1: every step, 0: never).

    The likelihood estimate is the product over t of
    sum_i W_t-1^i exp(eta^i) * (1/N) sum_i w_t^i after resampling, with w_t the
    second-stage weights, and sum_i W_t-1^i w_t^i without; it is unbiased (Pitt 2002;
    Johansen & Doucet 2008). Raises ``ValueError`` naming the time step at which
    every particle has zero weight or a weight is NaN.
    """
    check_resampling(resampling, ess_threshold)
    y = as_observations(observations)
    N, T, rng = int(n_particles), len(y), np.random.default_rng(random_state)
    increments, ess, resampled = np.empty(T), np.empty(T), np.zeros(T, dtype=bool)
    history: dict[str, list[np.ndarray]] = {"particles": [], "weights": [], "ancestors": []}
    means, variances, levels = [], [], []

    x, weights, log_weights = None, np.full(N, 1.0 / N), np.zeros(N)
    parent_log_weights, ancestors, first_stage = log_weights, np.arange(N), None
    for t in range(T):
        if t > 0:
            if auxiliary is not None:
                first_stage = auxiliary.log_predictive_weight(x, y[t], t)
            ancestors, parent_log_weights, resampled[t] = select_parents(
                weights, log_weights, first_stage, ess_threshold, resampling, rng, t
            )
            if resampled[t]:
                x = x[ancestors]
        x, incremental = _move(model, proposal, x, y[t], t, N, rng)
        if first_stage is not None:
            incremental = incremental - first_stage[ancestors]
        weights, increments[t], log_weights = normalise(parent_log_weights + incremental, t)
        ess[t], mean, variance = particle_moments(weights, x)
        means.append(mean)
        variances.append(variance)
        if quantiles is not None:
            levels.append(_weighted_quantiles(x, weights, quantiles))
        if keep_history:
            history["particles"].append(x)
            history["weights"].append(weights)
            history["ancestors"].append(ancestors)
    stacked = {key: np.stack(value) for key, value in history.items()} if keep_history else {}
    return ParticleFilterResult(
        log_likelihood=float(increments.sum()),
        log_likelihood_increments=increments,
        means=np.stack(means),
        variances=np.stack(variances),
        ess=ess,
        resampled=resampled,
        quantiles=np.stack(levels) if quantiles is not None else None,
        **stacked,
    )


def check_resampling(resampling: str, ess_threshold: float) -> None:
    """Raise ``ValueError`` for an unknown scheme or a threshold outside [0, 1]."""
    if resampling not in RESAMPLING:
        raise ValueError(f"resampling must be one of {RESAMPLING}, got {resampling!r}")
    if not 0.0 <= ess_threshold <= 1.0:
        raise ValueError(f"ess_threshold must be in [0, 1], got {ess_threshold}")


def as_observations(observations: Any) -> np.ndarray:
    """One sequence of observations as a float (T, p) array."""
    y = np.asarray(observations, dtype=float)
    y = y[:, None] if y.ndim == 1 else y
    if y.ndim != 2 or len(y) == 0:
        raise ValueError(f"observations must be a non-empty (T,) or (T, p) array, got shape {np.shape(observations)}")
    return y


def normalise(log_weights: np.ndarray, t: int) -> tuple[np.ndarray, float, np.ndarray]:
    """:func:`~modeshift._kernels.normalise_log_weights`, its error naming the time step, and
    the log weights rescaled to log(N W), which :func:`select_parents` carries forward."""
    try:
        weights, increment = normalise_log_weights(log_weights)
    except ValueError as error:
        raise ValueError(f"time step {t}: {error}") from None
    return weights, increment, log_weights - increment


def select_parents(
    weights: np.ndarray,
    log_weights: np.ndarray,
    first_stage: np.ndarray | None,
    ess_threshold: float,
    resampling: str,
    rng: np.random.Generator,
    t: int,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """The parents of step t's particles: (ancestors, log weights, resampled).

    ``weights`` are the normalised weights W of step t-1 and ``log_weights`` log(N W)
    (the third value of :func:`normalise`). The log weights returned are those of
    N W exp(first_stage), each parent's own, or after resampling their mean: either
    way the likelihood increment stays p(y_t | y_0..t-1) once the children's weights
    subtract their parent's ``first_stage`` (None: no first stage, the bootstrap and
    guided filters).
    """
    n = len(weights)
    if first_stage is None:  # the weights are already normalised
        first_stage_weights, log_mean = weights, 0.0
    else:
        log_weights = log_weights + first_stage
        first_stage_weights, log_mean, _ = normalise(log_weights, t)
    if ess_threshold * n * (first_stage_weights @ first_stage_weights) > 1.0:  # ESS = 1 / sum w^2 below the threshold
        return resample(resampling, first_stage_weights, rng), np.full(n, log_mean), True
    return np.arange(n), log_weights, False


def _move(
    model: StateSpaceModel,
    proposal: Proposal | None,
    previous: np.ndarray | None,
    y: np.ndarray,
    t: int,
    n: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """New particles and their incremental log weights."""
    if proposal is None:
        x = model.sample_initial(n, rng) if previous is None else model.sample_transition(previous, t, rng)
        return x, model.log_observation(x, y, t)
    x = proposal.sample(previous, y, t, rng)
    prior = model.log_initial(x) if previous is None else model.log_transition(previous, x, t)
    return x, model.log_observation(x, y, t) + prior - proposal.log_density(previous, x, y, t)


def _weighted_quantiles(x: np.ndarray, weights: np.ndarray, levels: tuple[float, ...]) -> np.ndarray:
    """(len(levels), d): the smallest particle value whose cumulative weight reaches each level."""
    out = np.empty((len(levels), x.shape[1]))
    for j in range(x.shape[1]):
        order = np.argsort(x[:, j])
        cumulative = np.cumsum(weights[order])
        index = np.minimum(np.searchsorted(cumulative, levels), len(order) - 1)
        out[:, j] = x[order[index], j]
    return out
