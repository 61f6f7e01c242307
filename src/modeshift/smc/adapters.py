"""modeshift's exact models as SMC models, to run particle methods on them (and to check
particle methods against exact answers).

An adapter reads the model's parameters (its learned attributes, or those set by hand),
so it works on any model that has them, whether fitted or not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.special import log_softmax

from modeshift._kernels.gaussian import gaussian_log_density
from modeshift.data import check_covariances
from modeshift.emissions.reset import scale_factors, student_log_density, student_noise
from modeshift.models.base import NotFittedError
from modeshift.smc.model import StateSpaceModel
from modeshift.transitions import draw_rows

if TYPE_CHECKING:
    from modeshift.models.lds import LinearGaussianSSM
    from modeshift.models.slds import SwitchingLDS

__all__ = ["LinearGaussian", "SwitchingLinear"]


def _gaussian_log_density(residuals: np.ndarray, covariance: np.ndarray) -> np.ndarray:
    """log N(r | 0, S) for every row r of ``residuals`` (n, d)."""
    zero = np.zeros((1, residuals.shape[1]))
    return gaussian_log_density(residuals, zero, covariance[None])[:, 0]


def _observed_log_density(y: np.ndarray, means: np.ndarray, covariance: np.ndarray) -> np.ndarray:
    """log N(y_o | means_o, covariance_oo) per row of ``means`` (n, p), o the entries of y that
    are not NaN (0 when none is)."""
    observed = ~np.isnan(y)
    if not observed.any():
        return np.zeros(len(means))
    return _gaussian_log_density(y[observed] - means[:, observed], covariance[np.ix_(observed, observed)])


def _require_parameters(model: Any) -> None:
    """Raise NotFittedError unless every parameter the model names is set (fitted or by hand)."""
    missing = [name for name in model.parameter_names if getattr(model, name, None) is None]
    if missing:
        raise NotFittedError(f"this {type(model).__name__} has no {', '.join(missing)}: call fit, or set them by hand")


def _inputs(inputs: Any, input_dim: int) -> np.ndarray | None:
    if input_dim == 0:
        return None
    if inputs is None:
        raise ValueError(f"the model has input_dim={input_dim}: pass inputs (n_steps, {input_dim})")
    return np.asarray(inputs, dtype=float).reshape(-1, input_dim)


class LinearGaussian(StateSpaceModel):
    """A :class:`~modeshift.LinearGaussianSSM` (fitted or set by hand) as an SMC model.

    x_0 ~ N(m_0, P_0), x_t = A x_t-1 + B u_t + N(0, Q), y_t = C x_t + D u_t + N(0, R);
    missing entries (NaN) of y_t are left out of ``log_observation``.
    """

    def __init__(self, model: LinearGaussianSSM, inputs: Any = None):
        _require_parameters(model)
        if model._diffuse_mask() is not None:
            raise ValueError(
                "the particle methods need a proper initial law: this LinearGaussianSSM has a diffuse start "
                "(diffuse=...); set diffuse=False and an initial_state_covariance_"
            )
        self.A = np.asarray(model.dynamics_matrix_, dtype=float)
        self.C = np.asarray(model.observation_matrix_, dtype=float)
        self.m0 = np.asarray(model.initial_state_mean_, dtype=float)
        self.state_dim, p = self.C.shape[1], self.C.shape[0]
        self.Q = check_covariances("transition_covariance_", model.transition_covariance_, self.state_dim)
        self.R = check_covariances("observation_covariance_", model.observation_covariance_, p)
        self.P0 = check_covariances("initial_state_covariance_", model.initial_state_covariance_, self.state_dim)
        self.inputs = _inputs(inputs, model.input_dim)
        if self.inputs is not None:
            self.B = np.asarray(model.control_matrix_, dtype=float)
            self.D = np.asarray(model.feedthrough_matrix_, dtype=float)

    def _input(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """(B u_t, D u_t)."""
        if self.inputs is None:
            return np.zeros(self.state_dim), np.zeros(self.C.shape[0])
        return self.B @ self.inputs[t], self.D @ self.inputs[t]

    def sample_initial(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return self.m0 + rng.standard_normal((n, self.state_dim)) @ np.linalg.cholesky(self.P0).T

    def sample_transition(self, previous: np.ndarray, t: int, rng: np.random.Generator) -> np.ndarray:
        noise = rng.standard_normal(previous.shape) @ np.linalg.cholesky(self.Q).T
        return previous @ self.A.T + self._input(t)[0] + noise

    def log_observation(self, states: np.ndarray, y: np.ndarray, t: int) -> np.ndarray:
        return _observed_log_density(y, states @ self.C.T + self._input(t)[1], self.R)

    def log_initial(self, states: np.ndarray) -> np.ndarray:
        return _gaussian_log_density(states - self.m0, self.P0)

    def log_transition(self, previous: np.ndarray, states: np.ndarray, t: int) -> np.ndarray:
        return _gaussian_log_density(states - previous @ self.A.T - self._input(t)[0], self.Q)

    def log_transition_bound(self, t: int) -> float:
        return float(_gaussian_log_density(np.zeros((1, self.state_dim)), self.Q)[0])


class SwitchingLinear(StateSpaceModel):
    """A :class:`~modeshift.SwitchingLDS` as an SMC model: a particle is (x_t, z_t), the
    mode z_t stored as the last column (a float holding an integer); missing entries (NaN)
    of y_t are left out of ``log_observation``.

    A step draws z_t from z_t-1 (and x_t-1, u_t if the model is recurrent), then x_t from the
    law of the pair (z_t-1, z_t): mode z_t's flow, or at a switch the model's reset of it
    (with ``resets``), x_t = A_l x_t-1 + B_l u_t + b_l + N(0, Q_l), l = ``laws``[z_t-1, z_t]
    indexing the flows then the resets (Student-t noise of covariance Q_l for robust resets,
    ``reset_dof``). Without resets every pair follows its destination's flow.
    """

    def __init__(self, model: SwitchingLDS, inputs: Any = None):
        _require_parameters(model)
        self.model = model
        self.inputs = _inputs(inputs, model.input_dim)
        self.n = model.state_dim
        self.state_dim = self.n + 1
        parameters = model._parameters()
        #: (K, K) law of each pair (z_t-1, z_t), an index into A, B, b, Q (the flows, then the resets)
        self.laws = parameters.law_of_pairs()
        self.A, self.B, self.b, self.Q = parameters.dynamics_terms(resets=True)
        self.dofs = parameters.law_dofs()  # inf: Gaussian noise
        self._noise_factors = np.linalg.cholesky(self.Q)

    def _u(self, t: int) -> np.ndarray:
        return np.zeros(0) if self.inputs is None else self.inputs[t]

    def _log_switch(self, previous: np.ndarray, t: int) -> np.ndarray:
        """log p(z_t = j | z_t-1, x_t-1, u_t) per particle, (n_particles, K)."""
        m, modes = self.model, previous[:, -1].astype(np.int64)
        if not m.recurrent:
            return np.log(m.transmat_[modes])
        logits = previous[:, : self.n] @ m.recurrence_weights_.T + m.input_weights_ @ self._u(t)
        return log_softmax(logits + m.recurrence_biases_[modes], axis=1)

    def pair_laws(self, previous: np.ndarray, modes: np.ndarray) -> np.ndarray:
        """The law each particle's x_t follows given its z_t-1 (last column of ``previous``) and z_t."""
        return self.laws[previous[:, -1].astype(np.int64), modes]

    def _dynamics_mean(self, previous: np.ndarray, laws: np.ndarray, t: int) -> np.ndarray:
        mean = np.einsum("pij,pj->pi", self.A[laws], previous[:, : self.n]) + self.b[laws]
        return mean + self.B[laws] @ self._u(t)

    def sample_initial(self, n: int, rng: np.random.Generator) -> np.ndarray:
        m = self.model
        x = m.initial_state_mean_ + rng.standard_normal((n, self.n)) @ np.linalg.cholesky(m.initial_state_covariance_).T
        modes = rng.choice(len(m.startprob_), size=n, p=m.startprob_)
        return np.column_stack([x, modes])

    def sample_modes(self, previous: np.ndarray, t: int, rng: np.random.Generator) -> np.ndarray:
        """z_t for each particle (x_t-1, z_t-1), by inverting the cumulative switch probabilities."""
        return draw_rows(np.exp(self._log_switch(previous, t)), rng)

    def sample_transition(self, previous: np.ndarray, t: int, rng: np.random.Generator) -> np.ndarray:
        modes = self.sample_modes(previous, t, rng)
        laws = self.pair_laws(previous, modes)
        noise = student_noise(self._noise_factors[laws], self.dofs[laws], rng)
        return np.column_stack([self._dynamics_mean(previous, laws, t) + noise, modes])

    def log_observation(self, states: np.ndarray, y: np.ndarray, t: int) -> np.ndarray:
        m = self.model
        offset = m.observation_offset_ + m.feedthrough_matrix_ @ self._u(t)
        means = states[:, : self.n] @ m.observation_matrix_.T + offset
        return _observed_log_density(y, means, m.observation_covariance_)

    def log_initial(self, states: np.ndarray) -> np.ndarray:
        m, modes = self.model, states[:, -1].astype(np.int64)
        x = states[:, : self.n] - m.initial_state_mean_
        return np.log(m.startprob_[modes]) + _gaussian_log_density(x, m.initial_state_covariance_)

    def log_transition(self, previous: np.ndarray, states: np.ndarray, t: int) -> np.ndarray:
        modes = states[:, -1].astype(np.int64)
        log_switch = self._log_switch(previous, t)[np.arange(len(states)), modes]
        laws = self.pair_laws(previous, modes)
        residuals = states[:, : self.n] - self._dynamics_mean(previous, laws, t)
        out = np.empty(len(states))
        for law in np.unique(laws):
            rows, dof = laws == law, self.dofs[law]
            if np.isfinite(dof):  # a robust reset: Student-t, its scale Q (nu - 2) / nu
                out[rows] = student_log_density(residuals[rows], self.Q[law] * scale_factors(dof), dof)
            else:
                out[rows] = _gaussian_log_density(residuals[rows], self.Q[law])
        return log_switch + out
