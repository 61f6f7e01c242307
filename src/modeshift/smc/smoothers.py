"""Particle smoothers: laws of the hidden path given all the observations.

Both smoothers rest on the backward kernel of a filter's output: given the weighted
particles (x_t-1^j, w_t-1^j) and a state x_t, the previous state is x_t-1^j with
probability proportional to w_t-1^j f(x_t | x_t-1^j).

- :func:`backward_simulation` (forward filtering, backward sampling; Godsill, Doucet &
  West 2004) draws whole paths x_0..T-1 from a stored :func:`particle_filter` run.
- :func:`paris` (Olsson & Westerborn 2017) runs the filter itself and updates, online,
  the smoothed expectation of an additive functional S_t = h_0(x_0) + sum_s h_s(x_s-1, x_s)
  with ``n_backward`` draws from the backward kernel per particle and step.

A model may declare ``log_transition_bound(t)``, an upper bound on log f(x_t | x_t-1) over
both arguments. The backward kernel is then sampled by accept-reject, proposing from the
weights, in O(N) expected per draw set; without it (or for draws still rejected after
a few rounds) the kernel is sampled exactly, which evaluates N densities per draw.

Example::

    import numpy as np
    from modeshift.smc import StochasticVolatility, particle_filter
    from modeshift.smc.smoothers import backward_simulation, paris

    model = StochasticVolatility()
    rng = np.random.default_rng(0)
    x = model.sample_initial(1, rng)
    returns = []
    for t in range(200):
        x = x if t == 0 else model.sample_transition(x, t, rng)
        returns.append(np.exp(x[0, 0] / 2) * rng.standard_normal())
    filtered = particle_filter(model, returns, 500, keep_history=True, random_state=1)
    smoothed_means = backward_simulation(model, filtered, 100, random_state=2).mean(axis=0)
    total = paris(model, returns, lambda previous, states, t: states, random_state=3)
    total.estimate  # E[x_0 + ... + x_199 | y]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from modeshift._kernels import resample
from modeshift.smc.filters import ParticleFilterResult, as_observations, check_resampling, normalise
from modeshift.smc.model import StateSpaceModel

__all__ = ["PaRISResult", "backward_simulation", "paris"]

#: accept-reject stops after this many rounds, or once exact draws for the rest cost under
#: _EXACT_BUDGET transition densities (a draw can have a low acceptance rate: see Dau & Chopin 2022)
_MAX_ROUNDS = 100
_EXACT_BUDGET = 1 << 16
#: largest number of transition densities the exact sampler evaluates at once
_CHUNK = 1 << 20

Functional = Callable[[np.ndarray | None, np.ndarray, int], np.ndarray]


@dataclass(frozen=True)
class PaRISResult:
    """What :func:`paris` returns.

    ``estimates`` (T, k): row t is E[S_t | y_0..t], the online estimate after step t;
    ``log_likelihood`` is the filter's estimate of log p(y_0..T-1), the sum of
    ``log_likelihood_increments``.
    """

    estimates: np.ndarray
    log_likelihood: float
    log_likelihood_increments: np.ndarray

    @property
    def estimate(self) -> np.ndarray:
        """E[S_T-1 | y_0..T-1] (k,), the smoothed expectation of the whole functional."""
        return self.estimates[-1]


def backward_simulation(
    model: StateSpaceModel,
    filtered: ParticleFilterResult,
    n_paths: int,
    random_state: int | np.random.Generator | None = None,
) -> np.ndarray:
    """Paths (n_paths, T, d) drawn from the particle approximation of p(x_0..T-1 | y).

    x_T-1 is drawn from the final weights, then x_t given x_t+1 from the backward kernel
    w_t^i f(x_t+1 | x_t^i): O(T N n_paths) without a ``log_transition_bound``. ``filtered``
    comes from :func:`particle_filter` with ``keep_history=True``. ``paths.mean(axis=0)``
    estimates the smoothed means. Raises ``ValueError`` naming the time step at which a
    path has no previous particle of positive backward weight.
    """
    if filtered.particles is None or filtered.weights is None:
        raise ValueError("backward_simulation needs the particle history: run particle_filter with keep_history=True")
    if int(n_paths) < 1:
        raise ValueError(f"n_paths must be a positive integer, got {n_paths!r}")
    rng = np.random.default_rng(random_state)
    particles, weights = filtered.particles, filtered.weights
    T = len(particles)
    with np.errstate(divide="ignore"):
        last = _categorical(np.log(weights[-1])[None, :], int(n_paths), rng, T - 1)[0]
    paths = np.empty((int(n_paths), T, particles.shape[2]))
    paths[:, -1] = particles[-1, last]
    for t in range(T - 1, 0, -1):
        index = _backward_indices(model, particles[t - 1], weights[t - 1], paths[:, t], t, 1, rng)[:, 0]
        paths[:, t - 1] = particles[t - 1, index]
    return paths


def paris(
    model: StateSpaceModel,
    observations: Any,
    functional: Functional,
    n_particles: int = 1000,
    n_backward: int = 2,
    resampling: str = "systematic",
    random_state: int | np.random.Generator | None = None,
) -> PaRISResult:
    """Online smoothing of S_T = sum_t h_t(x_t-1, x_t) by PaRIS (Olsson & Westerborn 2017).

    ``functional(previous, states, t)`` returns h_t (n, k) for n pairs of rows (``previous``
    is None at t = 0). A bootstrap filter, resampled at every step with the given scheme,
    carries per particle tau_t^i, an estimate of E[S_t | x_t = x_t^i, y_0..t]:
    tau_t^i = mean over ``n_backward`` backward draws J of tau_t-1^J + h_t(x_t-1^J, x_t^i),
    and E[S_t | y_0..t] is sum_i w_t^i tau_t^i. Memory is O(N k), cost O(N n_backward) per
    step with a ``log_transition_bound`` (O(N^2) without). ``n_backward >= 2`` keeps the
    variance bounded in T. Raises ``ValueError`` naming the time step at which every
    particle has zero weight, or a particle has no previous particle of positive backward weight.
    """
    check_resampling(resampling, 1.0)
    if int(n_backward) < 1:
        raise ValueError(f"n_backward must be a positive integer, got {n_backward!r}")
    y = as_observations(observations)
    N, B, T, rng = int(n_particles), int(n_backward), len(y), np.random.default_rng(random_state)
    increments, estimates = np.empty(T), []

    x, weights = model.sample_initial(N, rng), np.full(N, 1.0 / N)
    tau = np.reshape(functional(None, x, 0), (N, -1))
    for t in range(T):
        if t > 0:
            moved = model.sample_transition(x[resample(resampling, weights, rng)], t, rng)
            index = _backward_indices(model, x, weights, moved, t, B, rng).ravel()
            terms = np.reshape(functional(x[index], np.repeat(moved, B, axis=0), t), (N, B, -1))
            tau, x = (tau[index].reshape(N, B, -1) + terms).mean(axis=1), moved
        weights, increments[t], _ = normalise(model.log_observation(x, y[t], t), t)
        estimates.append(weights @ tau)
    return PaRISResult(np.stack(estimates), float(increments.sum()), increments)


def _backward_indices(
    model: StateSpaceModel,
    previous: np.ndarray,
    weights: np.ndarray,
    states: np.ndarray,
    t: int,
    n_draws: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """(M, n_draws) draws j from the backward kernel w^j f(states_m | previous_j) at step t,
    by accept-reject when the model declares a bound, exactly for what remains."""
    with np.errstate(divide="ignore"):  # zero weights are -inf log weights, never drawn
        log_weights = np.log(weights)
    draws = np.empty((len(states), n_draws), dtype=np.int64)
    pending = np.arange(draws.size)
    bound_of = getattr(model, "log_transition_bound", None)
    if bound_of is not None:
        bound, cumulative = float(bound_of(t)), np.cumsum(weights)
        for _ in range(_MAX_ROUNDS):
            if pending.size * len(previous) <= _EXACT_BUDGET:
                break
            points = rng.random(pending.size) * cumulative[-1]
            proposals = np.minimum(np.searchsorted(cumulative, points, side="right"), len(previous) - 1)
            log_density = model.log_transition(previous[proposals], states[pending // n_draws], t)
            if np.any(log_density > bound + 1e-9):
                raise ValueError(f"time step {t}: log_transition exceeds log_transition_bound({t}) = {bound}")
            accepted = np.log(rng.random(pending.size)) < log_density - bound
            draws.flat[pending[accepted]] = proposals[accepted]
            pending = pending[~accepted]
    rows = states[pending // n_draws]
    step = max(1, _CHUNK // len(previous))
    for start in range(0, len(rows), step):
        chunk = rows[start : start + step]
        log_density = model.log_transition(np.tile(previous, (len(chunk), 1)), np.repeat(chunk, len(previous), 0), t)
        log_kernel = log_weights + log_density.reshape(len(chunk), len(previous))
        draws.flat[pending[start : start + step]] = _categorical(log_kernel, 1, rng, t)[:, 0]
    return draws


def _categorical(log_weights: np.ndarray, n_draws: int, rng: np.random.Generator, t: int) -> np.ndarray:
    """(M, n_draws) indices drawn, row by row, in proportion to exp(log_weights) (M, N)."""
    peak = log_weights.max(axis=1, keepdims=True)
    degenerate = ~np.isfinite(peak[:, 0])  # every weight zero, or one NaN or +inf
    if degenerate.any():
        raise ValueError(
            f"time step {t}: the backward weights of {degenerate.sum()} of {len(log_weights)} draws "
            "are all zero or not finite (check log_transition and the filter weights)"
        )
    cumulative = np.cumsum(np.exp(log_weights - peak), axis=1)
    points = rng.random((len(log_weights), n_draws)) * cumulative[:, -1:]
    counts = (cumulative[:, None, :] <= points[:, :, None]).sum(axis=2)
    return np.minimum(counts, log_weights.shape[1] - 1)
