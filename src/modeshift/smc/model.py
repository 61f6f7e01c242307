"""How a user describes a state-space model once, for every particle method.

A model is a small class with three methods, each vectorised over particles
(arrays with one row per particle):

- ``sample_initial(n, rng)`` draws x_0 for ``n`` particles, (n, state_dim);
- ``sample_transition(previous, t, rng)`` draws x_t given x_t-1, row by row;
- ``log_observation(states, y, t)`` is log p(y_t | x_t) for every particle, (n,).

Smoothers and guided filters also need the densities ``log_initial(states)`` and
``log_transition(previous, states, t)``; a bound ``log_transition_bound(t)`` on the
latter (max over both arguments) lets the smoothers sample backwards by rejection,
in O(N) per step instead of O(N^2). Parameters are the instance's attributes
(make one instance per parameter value); inputs or covariates are looked up by
``t`` inside the methods. Two complete examples follow:
:class:`StochasticVolatility` and :class:`NonlinearGrowth`. They draw their noise with
:func:`modeshift._kernels.standard_normal`, an exact drop-in for
``rng.standard_normal`` that is several times faster (noise is much of a filter's time).
"""

from __future__ import annotations

import numpy as np

from modeshift._kernels import standard_normal
from modeshift._kernels.gaussian import LOG_2PI, normal_log_density

__all__ = ["NonlinearGrowth", "StateSpaceModel", "StochasticVolatility"]


class StateSpaceModel:
    """Base class of models for the particle methods (see the module docstring)."""

    #: dimension of the hidden state x_t
    state_dim: int = 1

    def sample_initial(self, n: int, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} does not define sample_initial")

    def sample_transition(self, previous: np.ndarray, t: int, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} does not define sample_transition")

    def log_observation(self, states: np.ndarray, y: np.ndarray, t: int) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} does not define log_observation")

    def log_initial(self, states: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} does not define log_initial (smoothers need it)")

    def log_transition(self, previous: np.ndarray, states: np.ndarray, t: int) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} does not define log_transition (smoothers need it)")


class StochasticVolatility(StateSpaceModel):
    """The basic stochastic-volatility model of asset returns (Kim, Shephard & Chib 1998).

    Log-volatility x_t = mu + phi (x_t-1 - mu) + sigma v_t, x_0 from the stationary
    law N(mu, sigma^2 / (1 - phi^2)); returns y_t = exp(x_t / 2) e_t, with v_t, e_t
    standard normal.

    >>> import numpy as np
    >>> model = StochasticVolatility(mu=-1.0, phi=0.9, sigma=0.3)
    >>> model.log_observation(np.zeros((2, 1)), np.array([0.0]), 0).round(4)
    array([-0.9189, -0.9189])
    """

    def __init__(self, mu: float = -1.0, phi: float = 0.95, sigma: float = 0.3):
        if not -1.0 < phi < 1.0 or sigma <= 0:
            raise ValueError(f"need |phi| < 1 and sigma > 0, got phi={phi}, sigma={sigma}")
        self.mu, self.phi, self.sigma = mu, phi, sigma

    @property
    def _stationary_variance(self) -> float:
        return self.sigma**2 / (1.0 - self.phi**2)

    def sample_initial(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return self.mu + np.sqrt(self._stationary_variance) * standard_normal(rng, (n, 1))

    def sample_transition(self, previous: np.ndarray, t: int, rng: np.random.Generator) -> np.ndarray:
        out = standard_normal(rng, previous.shape)
        out *= self.sigma
        out += self.phi * previous
        out += (1.0 - self.phi) * self.mu
        return out

    def log_observation(self, states: np.ndarray, y: np.ndarray, t: int) -> np.ndarray:
        x = states[:, 0]  # the log-variance
        out = np.exp(-x)
        out *= -0.5 * y[0] ** 2
        out -= 0.5 * x
        out -= 0.5 * LOG_2PI
        return out

    def log_initial(self, states: np.ndarray) -> np.ndarray:
        return normal_log_density(states[:, 0], self.mu, self._stationary_variance)

    def log_transition(self, previous: np.ndarray, states: np.ndarray, t: int) -> np.ndarray:
        mean = self.mu + self.phi * (previous[:, 0] - self.mu)
        return normal_log_density(states[:, 0], mean, self.sigma**2)

    def log_transition_bound(self, t: int) -> float:
        return -0.5 * (LOG_2PI + np.log(self.sigma**2))


class NonlinearGrowth(StateSpaceModel):
    """The nonlinear growth model, the classic test of particle filters (Kitagawa 1996).

    x_t = x_t-1 / 2 + 25 x_t-1 / (1 + x_t-1^2) + 8 cos(1.2 t) + v_t, v_t ~ N(0, q),
    x_0 ~ N(0, initial_variance); y_t = x_t^2 / 20 + e_t, e_t ~ N(0, r). The
    observation is symmetric in x, so the filtering law is often bimodal.
    """

    def __init__(self, q: float = 10.0, r: float = 1.0, initial_variance: float = 5.0):
        if min(q, r, initial_variance) <= 0:
            raise ValueError("the variances q, r and initial_variance must be positive")
        self.q, self.r, self.initial_variance = q, r, initial_variance

    def _mean(self, previous: np.ndarray, t: int) -> np.ndarray:
        return previous / 2 + 25 * previous / (1 + previous**2) + 8 * np.cos(1.2 * t)

    def sample_initial(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return np.sqrt(self.initial_variance) * standard_normal(rng, (n, 1))

    def sample_transition(self, previous: np.ndarray, t: int, rng: np.random.Generator) -> np.ndarray:
        return self._mean(previous, t) + np.sqrt(self.q) * standard_normal(rng, previous.shape)

    def log_observation(self, states: np.ndarray, y: np.ndarray, t: int) -> np.ndarray:
        return normal_log_density(y[0], states[:, 0] ** 2 / 20, self.r)

    def log_initial(self, states: np.ndarray) -> np.ndarray:
        return normal_log_density(states[:, 0], 0.0, self.initial_variance)

    def log_transition(self, previous: np.ndarray, states: np.ndarray, t: int) -> np.ndarray:
        return normal_log_density(states[:, 0], self._mean(previous[:, 0], t), self.q)

    def log_transition_bound(self, t: int) -> float:
        return -0.5 * (LOG_2PI + np.log(self.q))
