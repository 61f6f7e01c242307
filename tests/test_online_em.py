"""Online EM (partial_fit): the stochastic approximation, and recovery close to batch EM on long streams."""

import warnings

import numpy as np
import pytest

from modeshift import ARHMM, HMM, HSMM, LinearGaussianSSM
from modeshift.models.capabilities import OnlineLearner
from modeshift.models.online_em import step_size


def _hmm_truth() -> HMM:
    truth = HMM(n_states=2)
    truth.startprob_, truth.transmat_ = np.array([0.5, 0.5]), np.array([[0.95, 0.05], [0.1, 0.9]])
    truth.means_, truth.covars_ = np.array([[0.0], [3.0]]), np.ones((2, 1, 1))
    return truth


def test_step_sizes():
    assert step_size(1) == 1.0
    assert step_size(4, 1.0) == 0.25
    assert np.isclose(step_size(16, 0.75), 0.125)
    for bad in (0.5, 1.5, 0.0):
        with pytest.raises(ValueError, match="step_exponent"):
            step_size(2, bad)
    with pytest.raises(ValueError, match="step_exponent"):
        HMM(n_states=2).partial_fit(np.zeros(10), step_exponent=0.4)


def test_running_statistics_are_the_stochastic_approximation():
    """With every parameter fixed each chunk's statistics are computed under the same parameters,
    and with gamma_n = 1/n the running statistics are their plain average per step."""
    truth = _hmm_truth()
    X = truth.sample(3000, random_state=0)[0]
    model = _hmm_truth()
    model.fixed = {"startprob_", "transmat_", "means_", "covars_"}
    chunks = np.split(X, [400, 1000, 1900])
    for chunk in chunks:
        model.partial_fit(chunk, step_exponent=1.0)
    per_step = [model.expected_statistics(chunk) for chunk in chunks]
    expected = np.mean([s["emission"]["sums"] / len(c) for s, c in zip(per_step, chunks)], axis=0)
    running = model.__dict__["_online"]["statistics"]
    np.testing.assert_allclose(running["emission"]["sums"], expected, rtol=1e-12)
    assert model.__dict__["_online"]["n_steps"] == len(X)


def test_hand_set_parameters_restart_the_statistics():
    truth = _hmm_truth()
    X = truth.sample(2000, random_state=0)[0]
    model = HMM(n_states=2, random_state=0).partial_fit(X[:1000])
    assert model.__dict__["_online"]["n_chunks"] == 1
    model.partial_fit(X[1000:])
    assert model.__dict__["_online"]["n_chunks"] == 2
    model.means_ = np.array([[0.0], [3.0]])
    model.partial_fit(X[:1000])
    assert model.__dict__["_online"]["n_chunks"] == 1


def test_online_hmm_reaches_batch_em():
    truth = _hmm_truth()
    X = truth.sample(40000, random_state=0)[0]
    online = HMM(n_states=2, random_state=0)
    assert isinstance(online, OnlineLearner)
    for chunk in np.split(X, 80):
        online.partial_fit(chunk)
    batch = HMM(n_states=2, random_state=0).fit(X)
    per_step = batch.score(X) / len(X)
    assert abs(online.score(X) / len(X) - per_step) < 0.01 * abs(per_step)
    order = np.argsort(online.means_.ravel())
    batch_order = np.argsort(batch.means_.ravel())
    np.testing.assert_allclose(online.means_[order], batch.means_[batch_order], atol=0.05)
    np.testing.assert_allclose(
        online.transmat_[np.ix_(order, order)], batch.transmat_[np.ix_(batch_order, batch_order)], atol=0.02
    )


def test_online_arhmm_reaches_batch_em():
    truth = ARHMM(n_states=2)
    truth.startprob_, truth.transmat_ = np.array([1.0, 0.0]), np.array([[0.98, 0.02], [0.02, 0.98]])
    truth.coefs_, truth.intercepts_ = np.array([[[0.9]], [[-0.5]]]), np.array([[1.0], [0.0]])
    truth.covars_ = np.full((2, 1, 1), 0.1)
    X = truth.sample(20000, random_state=1)[0]
    online = ARHMM(n_states=2, random_state=0)
    for chunk in np.split(X, 40):
        online.partial_fit(chunk)
    batch = ARHMM(n_states=2, random_state=0).fit(X)
    per_step = batch.score(X) / len(X)
    assert abs(online.score(X) / len(X) - per_step) < 0.01 * abs(per_step)
    np.testing.assert_allclose(np.sort(online.coefs_.ravel()), np.sort(batch.coefs_.ravel()), atol=0.05)


def test_online_hsmm_reaches_batch_em():
    truth = HSMM(n_states=2, duration="poisson", max_duration=40)
    truth.startprob_, truth.transmat_ = np.array([0.5, 0.5]), np.array([[0.0, 1.0], [1.0, 0.0]])
    truth.duration_rates_ = np.array([9.0, 19.0])
    truth.means_, truth.covars_ = np.array([[0.0], [2.0]]), np.ones((2, 1, 1))
    X = truth.sample(20000, random_state=0)[0]
    online = HSMM(n_states=2, duration="poisson", max_duration=40, random_state=0)
    for chunk in np.split(X, 40):
        online.partial_fit(chunk)
    batch = HSMM(n_states=2, duration="poisson", max_duration=40, random_state=0).fit(X)
    per_step = batch.score(X) / len(X)
    assert abs(online.score(X) / len(X) - per_step) < 0.01 * abs(per_step)
    np.testing.assert_allclose(np.sort(online.dwell_times_), np.sort(batch.dwell_times_), rtol=0.1)
    np.testing.assert_allclose(np.sort(online.means_.ravel()), np.sort(batch.means_.ravel()), atol=0.05)


def test_online_lds_approaches_the_truth():
    """EM crawls on the split of variance between the state and the noise; with the observation
    matrix known, online EM comes within tolerance of the generating parameters."""
    truth = LinearGaussianSSM(state_dim=1)
    truth.dynamics_matrix_, truth.transition_covariance_ = np.array([[0.9]]), np.array([[0.5]])
    truth.observation_matrix_, truth.observation_covariance_ = np.array([[1.0], [0.5]]), 0.3 * np.eye(2)
    truth.initial_state_mean_, truth.initial_state_covariance_ = np.zeros(1), np.eye(1)
    Y = truth.sample(100000, random_state=1)[0]
    online = LinearGaussianSSM(state_dim=1, random_state=0, fixed={"observation_matrix_"})
    online.observation_matrix_ = truth.observation_matrix_
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the first chunk's batch fit may stop at its cap
        for chunk in np.split(Y, 200):
            online.partial_fit(chunk)
    per_step = truth.score(Y) / len(Y)
    assert abs(online.score(Y) / len(Y) - per_step) < 0.01 * abs(per_step)
    assert abs(online.dynamics_matrix_[0, 0] - 0.9) < 0.03
    assert abs(online.transition_covariance_[0, 0] - 0.5) < 0.1
    np.testing.assert_allclose(np.diag(online.observation_covariance_), 0.3, atol=0.08)


def test_online_em_refuses_what_it_cannot_do():
    with pytest.raises(NotImplementedError, match="inputs"):
        HMM(n_states=2, input_dim=1).partial_fit(np.zeros(10), inputs=np.zeros((10, 1)))
    with pytest.raises(NotImplementedError, match="diffuse"):
        LinearGaussianSSM(state_dim=1, diffuse=True).partial_fit(np.zeros(10))
