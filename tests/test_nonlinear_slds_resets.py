"""Resets of a NonlinearSwitchingLDS: the SwitchingLDS's at a linear map, brute force, recovery."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

import modeshift
from modeshift import NonlinearSwitchingLDS
from modeshift.data import as_sequences
from modeshift.dynamics import LinearDynamics
from modeshift.emissions.reset import Resets
from modeshift.features import Polynomial
from modeshift.models import laplace_inference as laplace
from modeshift.models import slds_inference
from modeshift.transitions import Stationary


def _random_problem(rng, ties, lengths=(14, 11), n=2, p=3, K=2, m_u=1):
    """Random parameters of the nonlinear model with resets on a linear map, data with inputs, and a
    previous posterior's mode and pair probabilities; and the same model as a SwitchingLDS's parameters."""
    T = sum(lengths)
    seqs = as_sequences(rng.normal(size=(T, p)), list(lengths)).with_inputs(rng.normal(size=(T, m_u)), m_u)
    features = Polynomial(degree=1).fit(rng.normal(size=(50, n)))
    chain = Stationary(K)
    chain.initial_probs, chain.transition_matrix = np.full(K, 1.0 / K), np.array([[0.9, 0.1], [0.2, 0.8]])
    observation = LinearDynamics(1)
    observation.weights = rng.normal(size=(1, p, n + m_u + 1))
    observation.covariances = (0.3 * np.eye(p) + 0.05)[None]
    resets = Resets(K, ties)
    resets.reset_coefs = 0.5 * rng.normal(size=(resets.n_resets, n, n + m_u))
    resets.reset_intercepts = rng.normal(size=(resets.n_resets, n))
    resets.reset_covariances = np.stack([0.4 * np.eye(n) + 0.1 * r for r in range(resets.n_resets)])
    covariances = np.stack([0.2 * np.eye(n) + 0.02 * k for k in range(K)])
    weights = 0.3 * rng.normal(size=(K, n, features.n_outputs + m_u + 1))
    params = laplace.FlowParameters(weights, covariances, features, observation, np.zeros(n), np.eye(n), chain, resets)

    W, B, b = params.split()
    A = W / features.scale_  # W (x - location) / scale = A x - A location
    affine = LinearDynamics(K)
    affine.weights = np.concatenate([A, B, (b - A @ features.location_)[:, :, None]], axis=2)
    affine.covariances = covariances
    linear = slds_inference.SwitchingParameters(affine, observation, np.zeros(n), np.eye(n), chain, resets=resets)
    mode_probs = rng.dirichlet(np.ones(K), size=T)
    previous = slds_inference.sweep(linear, seqs, mode_probs)
    return params, linear, seqs, previous


@pytest.mark.parametrize("ties", ["pair", "destination"])
def test_with_linear_features_a_laplace_sweep_with_resets_is_the_switching_lds_one(ties):
    """phi(x) = (x - location) / scale makes every flow affine, so the Laplace q(x) is exact: from
    the same q(z) (mode and pair probabilities), one sweep gives the SwitchingLDS's q(x), q(z) and
    ELBO with the same resets, from any start of the mode search."""
    rng = np.random.default_rng(4)
    params, linear, seqs, previous = _random_problem(rng, ties)
    got = laplace.sweep(params, seqs, previous.mode_probs, rng.normal(size=previous.means.shape), previous=previous)
    want = slds_inference.sweep(linear, seqs, previous.mode_probs, previous)
    for name in ("means", "covs", "cross_covs", "mode_probs", "pair_counts", "log_likelihoods"):
        np.testing.assert_allclose(getattr(got, name), getattr(want, name), rtol=1e-8, atol=1e-8, err_msg=name)
    assert got.elbo == pytest.approx(want.elbo, rel=1e-10)


def test_the_objective_of_the_mode_search_weighs_each_reset_by_its_switches():
    """log_joint with resets, against its definition written out step by step: each flow by the
    stays in its mode, each reset by the switches into it, scipy's Gaussian densities."""
    rng = np.random.default_rng(5)
    params, linear, seqs, previous = _random_problem(rng, "pair", lengths=(6,), p=2)
    states = rng.normal(size=previous.means.shape)
    weights = params.law_weights(previous.mode_probs, previous.pair_counts)
    (C,), (R,) = params.observation.weights, params.observation.covariances
    u, y = seqs.inputs, seqs.values
    want = stats.multivariate_normal(params.initial_mean, params.initial_covariance).logpdf(states[0])
    for t in range(len(y)):
        want += stats.multivariate_normal(C @ np.r_[states[t], u[t], 1.0], R).logpdf(y[t])
    index = params.resets.index
    for t in range(1, len(y)):
        phi = np.r_[params.features.transform(states[t - 1][None])[0], u[t], 1.0]
        for i in range(2):
            for j in range(2):
                xi = previous.pair_counts[t, i, j]
                if i == j:
                    mean, cov = params.weights[j] @ phi, params.covariances[j]
                else:
                    r = index[i, j]
                    mean = params.resets.weights[r] @ np.r_[states[t - 1], u[t], 1.0]
                    cov = params.resets.reset_covariances[r]
                want += xi * stats.multivariate_normal(mean, cov).logpdf(states[t])
    assert laplace.log_joint(params, seqs, weights, states) == pytest.approx(want, rel=1e-12)


def _reference(model):
    """The SwitchingLDS with the same law as a NonlinearSwitchingLDS on a linear map (W_k on
    (x - location) / scale read as A_k = W_k / scale, b_k - A_k location; the same resets)."""
    location, scale = model.feature_map_.location_, model.feature_map_.scale_
    reference = modeshift.SwitchingLDS(2, state_dim=2, input_dim=1, resets=model.resets)
    A = model.flow_weights_ / scale
    reference.dynamics_matrices_, reference.dynamics_offsets_ = A, model.flow_offsets_ - A @ location
    reference.dynamics_input_matrices_ = model.flow_input_matrices_.copy()
    reference.dynamics_covariances_ = model.flow_covariances_.copy()
    for name in model.parameter_names:
        if not name.startswith("flow_"):
            setattr(reference, name, np.array(getattr(model, name)))
    return reference


def _driven_jumps(n_steps=240, seed=1):
    """Two rotations kicked by an input, the state jumping to a fixed point at every switch."""
    rng = np.random.default_rng(seed)
    angle = np.array([0.2, -0.3])
    x, y, u, z = np.array([1.0, 0.0]), np.empty((n_steps, 2)), rng.normal(size=(n_steps, 1)), 0
    for t in range(n_steps):
        switch = rng.random() < 0.05
        z = 1 - z if switch else z
        c, s = np.cos(angle[z]), np.sin(angle[z])
        x = np.array([0.0, 1.5]) if switch else 0.97 * np.array([[c, -s], [s, c]]) @ x + [0.1 * u[t, 0], 0.0]
        x = x + 0.05 * rng.normal(size=2)
        y[t] = x + 0.1 * rng.normal(size=2)
    return y, u


@pytest.mark.parametrize("ties", ["pair", "destination"])
def test_with_linear_features_an_em_iteration_with_resets_is_the_switching_lds_one(ties):
    """With inputs, a linear map and no ridge, one EM iteration from the same posterior (a sweep of
    q(x), q(z), then the M-step) gives the SwitchingLDS's objective and its new parameters, resets included."""
    y, u = _driven_jumps()
    model = NonlinearSwitchingLDS(2, 2, Polynomial(1), input_dim=1, ridge=0.0, n_iter=0, resets=ties)
    model.fit(y, inputs=u)
    reference = _reference(model)
    seqs = reference._sequences(y, None, u)
    start = slds_inference.sweep(reference._parameters(seqs), seqs, np.full((len(y), 2), 0.5))
    values = []
    for fitted in (model, reference):
        value, stats_ = fitted._e_step(seqs, {"posterior": start})
        fitted._m_step(seqs, stats_)
        values.append(value)
    assert values[0] == pytest.approx(values[1], rel=1e-10)
    after = _reference(model)
    for name in reference.parameter_names:
        np.testing.assert_allclose(getattr(after, name), getattr(reference, name), rtol=1e-6, atol=1e-8, err_msg=name)
