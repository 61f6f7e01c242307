"""Particle filters: bootstrap and guided, with adaptive resampling."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from modeshift.kernels import effective_sample_size, normalise_log_weights, resample
from modeshift.smc.model import StateSpaceModel

__all__ = ["ParticleFilterResult", "Proposal", "particle_filter"]

RESAMPLING = ("multinomial", "stratified", "systematic", "residual")


class Proposal(Protocol):
    """A user proposal q(x_t | x_t-1, y_t) for the guided filter (x_0 | y_0 at t = 0,
    where ``previous`` is None)."""

    def sample(self, previous: np.ndarray | None, y: np.ndarray, t: int, rng: np.random.Generator) -> np.ndarray: ...

    def log_density(self, previous: np.ndarray | None, states: np.ndarray, y: np.ndarray, t: int) -> np.ndarray: ...


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
    resampling: str = "systematic",
    ess_threshold: float = 0.5,
    quantiles: tuple[float, ...] | None = None,
    keep_history: bool = False,
    random_state: int | np.random.Generator | None = None,
) -> ParticleFilterResult:
    """Run a particle filter on one sequence of observations (T,) or (T, p).

    Without a ``proposal`` this is the bootstrap filter (particles move by the
    model's transition, weights are the observation densities); with one it is
    the guided filter (weights g f / q). Particles are resampled with the given
    scheme whenever the effective sample size falls below ``ess_threshold * N``
    (1: every step, 0: never). Raises ``ValueError`` naming the time step at which
    every particle has zero weight or a weight is NaN.
    """
    if resampling not in RESAMPLING:
        raise ValueError(f"resampling must be one of {RESAMPLING}, got {resampling!r}")
    if not 0.0 <= ess_threshold <= 1.0:
        raise ValueError(f"ess_threshold must be in [0, 1], got {ess_threshold}")
    y = np.asarray(observations, dtype=float)
    y = y[:, None] if y.ndim == 1 else y
    if y.ndim != 2 or len(y) == 0:
        raise ValueError(f"observations must be a non-empty (T,) or (T, p) array, got shape {np.shape(observations)}")
    N, T, rng = int(n_particles), len(y), np.random.default_rng(random_state)
    increments, ess, resampled = np.empty(T), np.empty(T), np.zeros(T, dtype=bool)
    history: dict[str, list[np.ndarray]] = {"particles": [], "weights": [], "ancestors": []}
    means, variances, levels = [], [], []

    x, weights = None, np.full(N, 1.0 / N)
    previous_log_weights, ancestors = np.zeros(N), np.arange(N)
    for t in range(T):
        if t > 0 and ess[t - 1] < ess_threshold * N:
            ancestors = resample(resampling, weights, rng)
            x, previous_log_weights, resampled[t] = x[ancestors], np.zeros(N), True
        elif t > 0:
            ancestors = np.arange(N)
            with np.errstate(divide="ignore"):  # a particle of weight 0 stays at weight 0
                previous_log_weights = np.log(weights * N)  # mean of exp is 1: increments stay p(y_t | y_0..t-1)
        x, log_weights = _move(model, proposal, x, y[t], t, N, rng)
        try:
            weights, increments[t] = normalise_log_weights(previous_log_weights + log_weights)
        except ValueError as error:
            raise ValueError(f"time step {t}: {error}") from None
        ess[t] = effective_sample_size(weights)
        mean = weights @ x
        means.append(mean)
        variances.append(weights @ (x - mean) ** 2)
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
