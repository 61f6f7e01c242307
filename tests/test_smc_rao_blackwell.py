"""The Rao-Blackwellised particle filter against exact answers: enumeration of mode paths, and the Kalman filter."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax
from test_smc_filters import (
    _exact_switching_log_likelihood,
    _mc_check_unbiased,
    _mode_path_log_joints,
    _switching_model,
)

from modeshift import LinearGaussianSSM, SwitchingLDS
from modeshift.smc import particle_filter
from modeshift.smc.rao_blackwell import rao_blackwellised_filter


def _exact_mode_probabilities(model: SwitchingLDS, y: np.ndarray) -> np.ndarray:
    """p(z_t | y_0..t) (T, K), enumerating the mode paths up to each t."""
    out = np.empty((len(y), model.n_states))
    for t in range(len(y)):
        paths, log_joints = _mode_path_log_joints(model, y[: t + 1])
        out[t] = np.bincount(paths[:, t], softmax(log_joints), minlength=model.n_states)
    return out


def test_likelihood_is_unbiased_for_enumeration_and_converges_with_the_mode_probabilities():
    rng = np.random.default_rng(0)
    model = _switching_model()
    y = rng.normal(size=(5, 1))
    exact = _exact_switching_log_likelihood(model, y)
    estimates = np.array([rao_blackwellised_filter(model, y, 20, random_state=rng).log_likelihood for _ in range(300)])
    _mc_check_unbiased(estimates, exact)
    large = rao_blackwellised_filter(model, y, 20_000, random_state=1)
    assert large.log_likelihood == pytest.approx(exact, abs=0.02)
    np.testing.assert_allclose(large.mode_probabilities, _exact_mode_probabilities(model, y), atol=0.015)
    np.testing.assert_allclose(large.mode_probabilities.sum(axis=1), 1.0)


def test_a_single_mode_is_the_kalman_filter():
    rng = np.random.default_rng(2)
    lds = LinearGaussianSSM(state_dim=2, obs_dim=2, input_dim=1)
    lds.dynamics_matrix_ = np.array([[0.9, 0.2], [-0.1, 0.8]])
    lds.transition_covariance_ = np.array([[0.3, 0.1], [0.1, 0.2]])
    lds.control_matrix_ = np.array([[0.5], [-0.2]])
    lds.observation_matrix_ = np.array([[1.0, 0.5], [0.0, 1.0]])
    lds.observation_covariance_ = np.array([[0.5, 0.1], [0.1, 0.4]])
    lds.feedthrough_matrix_ = np.array([[0.3], [0.0]])
    lds.initial_state_mean_, lds.initial_state_covariance_ = np.array([1.0, -1.0]), np.eye(2)
    u = rng.normal(size=(40, 1))
    y, _ = lds.sample(40, random_state=3, inputs=u)
    y[7, 0] = y[12] = np.nan  # missing entries are skipped in the same way

    slds = SwitchingLDS(n_states=1, state_dim=2, obs_dim=2, input_dim=1)
    slds.startprob_, slds.transmat_ = np.ones(1), np.ones((1, 1))
    slds.dynamics_matrices_, slds.dynamics_covariances_ = lds.dynamics_matrix_[None], lds.transition_covariance_[None]
    slds.dynamics_input_matrices_, slds.dynamics_offsets_ = lds.control_matrix_[None], np.zeros((1, 2))
    slds.observation_matrix_, slds.observation_covariance_ = lds.observation_matrix_, lds.observation_covariance_
    slds.feedthrough_matrix_, slds.observation_offset_ = lds.feedthrough_matrix_, np.zeros(2)
    slds.initial_state_mean_, slds.initial_state_covariance_ = lds.initial_state_mean_, lds.initial_state_covariance_
    result = rao_blackwellised_filter(slds, y, 50, inputs=u, random_state=4)
    assert result.log_likelihood == pytest.approx(lds.score(y, inputs=u), abs=1e-10)
    kalman = lds.filter(y, inputs=u)
    np.testing.assert_allclose(result.state_means, kalman.means, atol=1e-10)
    np.testing.assert_allclose(result.state_covariances, kalman.covariances, atol=1e-10)
    np.testing.assert_allclose(result.ess, 50)


def test_rao_blackwellisation_beats_the_particle_filter_on_the_full_state():
    rng = np.random.default_rng(5)
    model = _switching_model()
    y, _ = model.sample(30, random_state=6)
    smc = model.as_state_space_model()
    rao_blackwell = [rao_blackwellised_filter(model, y, 100, random_state=rng).log_likelihood for _ in range(100)]
    plain = [particle_filter(smc, y, 100, random_state=rng).log_likelihood for _ in range(100)]
    assert np.var(rao_blackwell) < np.var(plain)


def test_recurrent_model_runs_on_the_plug_in_switch():
    model = SwitchingLDS(n_states=2, state_dim=1, obs_dim=1, recurrent=True)
    plain = _switching_model()
    for name in plain.parameter_names:
        if name != "transmat_":
            setattr(model, name, getattr(plain, name))
    model.recurrence_weights_, model.input_weights_ = np.array([[2.0], [-2.0]]), np.zeros((2, 0))
    model.recurrence_biases_ = np.array([[1.0, 0.0], [0.0, 1.0]])
    y, _ = model.sample(50, random_state=7)
    result = rao_blackwellised_filter(model, y, 200, random_state=8)
    assert np.isfinite(result.log_likelihood) and result.state_means.shape == (50, 1)
    np.testing.assert_allclose(result.mode_probabilities.sum(axis=1), 1.0)


def test_bad_arguments_are_named():
    model = _switching_model()
    with pytest.raises(ValueError, match="1 columns"):
        rao_blackwellised_filter(model, np.zeros((5, 2)))
    with pytest.raises(ValueError, match="resampling"):
        rao_blackwellised_filter(model, np.zeros(5), resampling="magic")
