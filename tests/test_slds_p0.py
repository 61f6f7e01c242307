"""The initial state's covariance P0 of the switching LDS family: its inverse-Wishart prior
(:class:`~modeshift.dynamics.InitialStateLaw`) keeps it at the scale of the state when the
model is fitted to one sequence, where the maximum-likelihood P0 collapses towards 0."""

import numpy as np
import pytest

from modeshift import SwitchingLDS
from modeshift.dynamics import InitialStateLaw
from modeshift.models.base import load
from modeshift.models.continuous_slds import ContinuousSwitchingLDS
from modeshift.models.nonlinear_slds import NonlinearSwitchingLDS
from modeshift.statistics import Moments


def _rotation(angle: float) -> np.ndarray:
    return 0.97 * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])


def _two_sequences(n_steps: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """A training and a held-out sequence of one two-mode system (rotations either way, x_0 ~ N(0, I))."""
    true = SwitchingLDS(n_states=2, state_dim=2)
    true.dynamics_matrices_ = np.stack([_rotation(0.15), _rotation(-0.15)])
    true.dynamics_offsets_, true.dynamics_input_matrices_ = np.zeros((2, 2)), np.zeros((2, 2, 0))
    true.dynamics_covariances_ = np.stack([0.1 * np.eye(2)] * 2)
    true.observation_matrix_ = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    true.observation_offset_, true.feedthrough_matrix_ = np.zeros(3), np.zeros((3, 0))
    true.observation_covariance_ = 0.1 * np.eye(3)
    true.initial_state_mean_, true.initial_state_covariance_ = np.zeros(2), np.eye(2)
    true.startprob_, true.transmat_ = np.array([0.5, 0.5]), np.array([[0.98, 0.02], [0.02, 0.98]])
    (train, held_out), _ = true.sample(n_steps, 2, random_state=1)
    return train, held_out


@pytest.mark.parametrize("model_class", [SwitchingLDS, NonlinearSwitchingLDS])
def test_one_sequence_keeps_p0_at_the_scale_of_the_state(model_class):
    """Fitted to one sequence, P0 stays of the order of the state's spread, and a held-out
    sequence's ELBO loses at most a few nats against the same model whose initial law is the
    spread of the smoothed states: the first step costs what a step costs. Before the prior,
    P0's eigenvalues fell to ~5e-4 (SLDS) and ~1e-4 (nonlinear), and the held-out ELBO lost
    65 and 1,926 nats (of -637 and -755), all at the first step."""
    train, held_out = _two_sequences()
    model = model_class(n_states=2, state_dim=2, n_iter=100, tol=1e-2, random_state=0).fit(train)
    states = np.asarray(model.smooth(train))
    spread = np.cov(states.T)
    assert np.linalg.eigvalsh(model.initial_state_covariance_).min() > 0.1 * np.linalg.eigvalsh(spread).min()
    learned = model.elbo(held_out)
    model.initial_state_mean_, model.initial_state_covariance_ = states.mean(axis=0), spread
    assert learned > model.elbo(held_out) - 5.0


def test_one_sequence_em_stays_monotone_with_the_prior():
    """The M-step is the MAP of P0 under the prior ``_log_prior`` adds, so EM never lowers its objective."""
    train, _ = _two_sequences(200)
    model = SwitchingLDS(n_states=2, state_dim=2, n_iter=30, tol=0.0, random_state=0).fit(train)
    steps = np.diff(model.history_)
    assert steps.min() > -1e-6 * abs(model.history_[-1])


def test_continuous_slds_one_sequence_keeps_p0_and_is_monotone():
    train, _ = _two_sequences(200)
    model = ContinuousSwitchingLDS(n_states=2, state_dim=2, n_iter=15, tol=0.0, random_state=0).fit(train)
    assert np.diff(model.history_).min() > -1e-6 * abs(model.history_[-1])
    assert (
        np.linalg.eigvalsh(model.initial_state_covariance_).min()
        > 0.1 * np.linalg.eigvalsh(model.initial_state_covariance_prior_).min()
    )


def test_map_maximises_the_penalised_objective():
    """Brute force: the closed-form P0 beats every nearby covariance on the expected log density
    of the first states plus the log prior."""
    rng = np.random.default_rng(0)
    means, covariance_sum = rng.normal(size=(3, 2)), 0.2 * np.eye(2)
    law = InitialStateLaw(np.array([[2.0, 0.3], [0.3, 1.0]]), reg_covar=0.01)
    mean, best = law.m_step(Moments.of(means), covariance_sum)

    def objective(P):
        centred = means - mean
        scatter = centred.T @ centred + covariance_sum
        fit = -0.5 * len(means) * np.linalg.slogdet(P)[1] - 0.5 * np.trace(np.linalg.solve(P, scatter))
        return fit + law.log_prior(P)

    for _ in range(20):
        direction = rng.normal(size=(2, 2))
        nearby = best + 0.05 * (direction + direction.T)
        assert objective(nearby) < objective(best)
    np.testing.assert_allclose(mean, means.mean(axis=0))


def test_many_sequences_outweigh_the_prior():
    """With a thousand sequences P0 is their first states' covariance, whatever the prior's mode."""
    first_states = np.random.default_rng(1).multivariate_normal(np.zeros(2), 4.0 * np.eye(2), size=1000)
    law = InitialStateLaw(0.01 * np.eye(2), reg_covar=1e-6)
    _, covariance = law.m_step(Moments.of(first_states), np.zeros((2, 2)))
    np.testing.assert_allclose(covariance, np.cov(first_states.T, bias=True), rtol=0.01, atol=0.05)


@pytest.mark.parametrize("model_class", [SwitchingLDS, NonlinearSwitchingLDS])
def test_save_load_keeps_the_prior_and_warm_start_reuses_it(model_class, tmp_path):
    train, _ = _two_sequences(200)
    model = model_class(n_states=2, state_dim=2, n_iter=5, random_state=0).fit(train)
    prior = model.initial_state_covariance_prior_
    model.save(tmp_path / "model.msz")
    loaded = load(tmp_path / "model.msz")
    np.testing.assert_array_equal(loaded.initial_state_covariance_prior_, prior)
    model.set_params(warm_start=True).fit(train)
    np.testing.assert_array_equal(model.initial_state_covariance_prior_, prior)


def test_parameters_set_by_hand_centre_the_prior_on_their_p0():
    train, _ = _two_sequences(200)
    fitted = SwitchingLDS(n_states=2, state_dim=2, n_iter=3, random_state=0).fit(train)
    by_hand = SwitchingLDS(n_states=2, state_dim=2, n_iter=3, random_state=0)
    for name in fitted.parameter_names:
        setattr(by_hand, name, getattr(fitted, name))
    by_hand.initial_state_covariance_ = 2.0 * np.eye(2)
    by_hand.fit(train)
    np.testing.assert_array_equal(by_hand.initial_state_covariance_prior_, 2.0 * np.eye(2))
