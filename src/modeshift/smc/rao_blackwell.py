"""The Rao-Blackwellised particle filter for switching linear dynamical systems.

Given a path of modes z_0..t, a :class:`~modeshift.SwitchingLDS` is linear-Gaussian, so a
particle need only carry its mode path and the exact law N(m_t, P_t) of x_t given that
path and y_0..t, by a Kalman filter of its own (Doucet, de Freitas, Murphy & Russell 2000;
Chen & Liu 2000). Each step, after adaptive resampling, every particle

1. draws z_t ~ p(z_t | z_t-1), or p(z_t | z_t-1, x_t-1 = m_t-1, u_t) for a recurrent model;
2. predicts with the law of the pair (z_t-1, z_t) (mode z_t's flow, or at a switch its reset
   when the model has ``resets``) and updates with y_t (missing entries allowed);
3. is weighted by the Kalman predictive likelihood p(y_t | z_0..t, y_0..t-1).

Only the modes are sampled (and, for robust resets with Student-t noise, the scale s of a
switch's noise N(0, Q_r / s), s ~ Gamma(nu/2, nu/2), given which x_t is Gaussian again), so the
estimates vary less than those of a particle filter on (x_t, z_t). For a plain SLDS the
likelihood estimate is unbiased. In a recurrent model the
switch depends on x_t-1, which given the path is N(m, P), not a point: plugging in the
particle's mean m makes the filter an approximation there.

Example::

    import numpy as np
    from modeshift import SwitchingLDS
    from modeshift.smc.rao_blackwell import rao_blackwellised_filter

    model = SwitchingLDS(n_states=2, state_dim=1, obs_dim=1)
    model.startprob_, model.transmat_ = np.array([0.5, 0.5]), np.array([[0.9, 0.1], [0.1, 0.9]])
    model.dynamics_matrices_ = np.array([[[0.9]], [[-0.5]]])
    model.dynamics_offsets_, model.dynamics_input_matrices_ = np.zeros((2, 1)), np.zeros((2, 1, 0))
    model.dynamics_covariances_ = np.array([[[0.1]], [[0.5]]])
    model.observation_matrix_, model.observation_offset_ = np.eye(1), np.zeros(1)
    model.feedthrough_matrix_, model.observation_covariance_ = np.zeros((1, 0)), np.eye(1)
    model.initial_state_mean_, model.initial_state_covariance_ = np.zeros(1), np.eye(1)
    y, modes = model.sample(200, random_state=0)
    result = rao_blackwellised_filter(model, y, n_particles=500, random_state=1)
    result.log_likelihood, result.mode_probabilities.shape  # (float, (200, 2))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from modeshift._kernels import effective_sample_size
from modeshift._kernels.batched_kalman import kalman_step_batch
from modeshift.emissions.reset import scale_factors, student_scales
from modeshift.models.slds import SwitchingLDS
from modeshift.smc.adapters import SwitchingLinear
from modeshift.smc.filters import as_observations, check_resampling, normalise, select_parents

__all__ = ["RaoBlackwellResult", "rao_blackwellised_filter"]


@dataclass(frozen=True)
class RaoBlackwellResult:
    """What :func:`rao_blackwellised_filter` returns.

    ``log_likelihood`` estimates log p(y_0..T-1), the sum of ``log_likelihood_increments``;
    ``mode_probabilities`` (T, K) estimate p(z_t | y_0..t); ``state_means`` (T, n) and
    ``state_covariances`` (T, n, n) are the moments of the Gaussian mixture estimating
    p(x_t | y_0..t); ``ess`` is the effective sample size after weighting and
    ``resampled`` says where the particles were resampled (before moving to step t).
    """

    log_likelihood: float
    log_likelihood_increments: np.ndarray
    mode_probabilities: np.ndarray
    state_means: np.ndarray
    state_covariances: np.ndarray
    ess: np.ndarray
    resampled: np.ndarray


def rao_blackwellised_filter(
    model: SwitchingLDS,
    observations: Any,
    n_particles: int = 1000,
    inputs: Any = None,
    resampling: str = "systematic",
    ess_threshold: float = 0.5,
    random_state: int | np.random.Generator | None = None,
) -> RaoBlackwellResult:
    """Filter one sequence (T,) or (T, p) with particles over mode paths, a Kalman filter each.

    ``inputs`` (T, m) are required when the model has ``input_dim`` m > 0. Resampling is as
    in :func:`~modeshift.smc.particle_filter`. Raises ``ValueError`` naming the time step
    at which an innovation covariance is not positive definite or no particle has weight.
    """
    check_resampling(resampling, ess_threshold)
    y = as_observations(observations)
    switching = SwitchingLinear(model, inputs)
    T, N, K, n = len(y), int(n_particles), len(model.startprob_), model.state_dim
    C = np.asarray(model.observation_matrix_, dtype=float)
    if y.shape[1] != C.shape[0]:
        raise ValueError(f"observations must have {C.shape[0]} columns, got {y.shape[1]}")
    u = np.zeros((T, 0)) if switching.inputs is None else switching.inputs
    if len(u) < T:
        raise ValueError(f"inputs must have a row per step: {T} needed, got {len(u)}")
    # offsets are the coefficients of an extra input fixed at 1
    u = np.column_stack([u[:T], np.ones(T)])
    # every law x_t can follow (the flows, then the resets), indexed by switching.laws[z_t-1, z_t]
    A, Q = switching.A, switching.Q
    B = np.concatenate([switching.B, switching.b[:, :, None]], axis=2)
    # robust resets (Student-t): a particle also draws the scale s of its reset, x_t | z, s Gaussian
    robust = bool(np.isfinite(switching.dofs).any())
    scales = scale_factors(switching.dofs)[:, None, None]
    D = np.column_stack([model.feedthrough_matrix_, model.observation_offset_])
    R = np.asarray(model.observation_covariance_, dtype=float)

    rng = np.random.default_rng(random_state)
    increments, ess, resampled = np.empty(T), np.empty(T), np.zeros(T, dtype=bool)
    mode_probabilities, state_means, state_covariances = np.empty((T, K)), np.empty((T, n)), np.empty((T, n, n))
    means = np.tile(np.asarray(model.initial_state_mean_, dtype=float), (N, 1))
    covs = np.tile(np.asarray(model.initial_state_covariance_, dtype=float), (N, 1, 1))
    modes = rng.choice(K, size=N, p=model.startprob_)
    weights, log_weights, log_likelihoods = np.full(N, 1.0 / N), np.zeros(N), np.empty(N)
    parent_log_weights = log_weights
    for t in range(T):
        if t > 0:
            ancestors, parent_log_weights, resampled[t] = select_parents(
                weights, log_weights, None, ess_threshold, resampling, rng, t
            )
            means, covs, modes = means[ancestors], covs[ancestors], modes[ancestors]
            previous = np.column_stack([means, modes])
            modes = switching.sample_modes(previous, t, rng)
        laws = switching.pair_laws(previous, modes) if t > 0 else modes  # unused at t = 0 (no prediction)
        if t > 0 and robust:  # each particle's own law: a Student-t reset's scale Q (nu - 2) / nu over its draw of s
            shrink = scales[laws] / student_scales(switching.dofs[laws], rng)[:, None, None]
            laws, step = np.arange(N), (A[laws], B[laws], Q[laws] * shrink)
        else:
            step = A, B, Q
        failed = kalman_step_batch(means, covs, laws, *step, C, D, R, y[t], u[t], t > 0, log_likelihoods)
        if failed >= 0:
            raise ValueError(f"time step {t}: the innovation covariance of particle {failed} is not positive definite")
        weights, increments[t], log_weights = normalise(parent_log_weights + log_likelihoods, t)
        ess[t] = effective_sample_size(weights)
        mode_probabilities[t] = np.bincount(modes, weights, minlength=K)
        state_means[t] = weights @ means
        second_moment = np.einsum("i,ijk->jk", weights, covs) + (means.T * weights) @ means
        state_covariances[t] = second_moment - np.outer(state_means[t], state_means[t])
    return RaoBlackwellResult(
        log_likelihood=float(increments.sum()),
        log_likelihood_increments=increments,
        mode_probabilities=mode_probabilities,
        state_means=state_means,
        state_covariances=state_covariances,
        ess=ess,
        resampled=resampled,
    )
