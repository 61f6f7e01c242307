"""NonlinearSwitchingLDS's streaming filter (Kim's filter with an extended Kalman step per pair of
modes): exactly the SwitchingLDS's stream for a linear map, close to the batch filter_proba on a
nonlinear one."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from modeshift import NonlinearSwitchingLDS, SwitchingLDS
from modeshift.datasets.simulators import switching_oscillators
from modeshift.features import Polynomial
from modeshift.models import laplace_inference as laplace
from modeshift.models.em import ConvergenceWarning
from modeshift.models.streaming import FilterState


def _noisy_oscillators(n_steps: int, seed: int) -> np.ndarray:
    """Both coordinates of the switching oscillators, seen with noise of sd 0.05 (modes every ~100 steps)."""
    sim = switching_oscillators(n_steps, random_state=seed, stickiness=0.99)
    return sim.observations + np.random.default_rng(seed).normal(0, 0.05, sim.observations.shape)


def _fit(model, X):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X)


def _as_switching_lds(model: NonlinearSwitchingLDS) -> SwitchingLDS:
    """The SwitchingLDS with the same law as ``model``, whose map is linear: A_k = W_k J, b_k = W_k phi(0) + b_k."""
    value, jacobian = laplace.feature_jacobian(model.feature_map_, np.zeros((1, model.state_dim)))
    linear = SwitchingLDS(model.n_states, state_dim=model.state_dim)
    linear.dynamics_matrices_ = model.flow_weights_ @ jacobian[0]
    linear.dynamics_offsets_ = model.flow_weights_ @ value[0] + model.flow_offsets_
    linear.dynamics_input_matrices_ = np.zeros((model.n_states, model.state_dim, 0))
    linear.feedthrough_matrix_ = np.zeros((model.observation_matrix_.shape[0], 0))
    linear.dynamics_covariances_ = model.flow_covariances_
    for name in ("observation_matrix_", "observation_offset_", "observation_covariance_", "startprob_", "transmat_"):
        setattr(linear, name, getattr(model, name))
    linear.initial_state_mean_ = model.initial_state_mean_
    linear.initial_state_covariance_ = model.initial_state_covariance_
    return linear


def test_with_a_linear_map_the_stream_is_the_switching_lds_stream():
    Y = _noisy_oscillators(120, 3)
    Y[[10, 50], 1] = np.nan  # a missing entry: the update reads the observed ones, as Kim's filter does
    model = _fit(NonlinearSwitchingLDS(2, state_dim=2, features=Polynomial(1), n_iter=3, random_state=0), Y)
    ours, theirs = list(model.filter_stream(Y)), list(_as_switching_lds(model).filter_stream(Y))
    for name in ("probabilities", "mean", "covariance"):
        a, b = (np.array([getattr(out, name) for out in outs]) for outs in (ours, theirs))
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10, err_msg=name)
    np.testing.assert_allclose([o.log_likelihood for o in ours], [o.log_likelihood for o in theirs], rtol=1e-8)
    mine, other = (
        model.filter_forecast(ours[-1].state, 5),
        _as_switching_lds(model).filter_forecast(theirs[-1].state, 5),
    )
    for a, b in zip(
        (mine.means, mine.covariances, mine.mode_probabilities),
        (other.means, other.covariances, other.mode_probabilities),
    ):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)


@pytest.fixture(scope="module")
def nonlinear():
    Y = _noisy_oscillators(400, 1)
    return _fit(NonlinearSwitchingLDS(2, state_dim=2, n_iter=15, random_state=0), Y), Y


def test_on_nonlinear_flows_the_stream_is_close_to_the_batch_filter(nonlinear):
    """The stated tolerance: the filtered modes agree with filter_proba's on >= 95 % of the steps,
    their probabilities differ by <= 0.05 on average (measured: 0.985 and 0.016), and the filtered
    states lie within 0.03 of the smoothed ones on average (measured 0.011; the state's scale is ~1)."""
    model, Y = nonlinear
    outs = list(model.filter_stream(Y))
    streamed, batch = np.array([out.probabilities for out in outs]), model.filter_proba(Y)
    assert (streamed.argmax(axis=1) == batch.argmax(axis=1)).mean() >= 0.95
    assert np.abs(streamed - batch).mean() <= 0.05
    assert np.abs(np.array([out.mean for out in outs]) - model.smooth(Y)).mean() <= 0.03


def test_step_by_step_and_resumed_from_a_saved_state_the_stream_is_the_same(nonlinear, tmp_path):
    model, Y = nonlinear
    Y = Y[:60]
    whole = list(model.filter_stream(Y))
    state = model.filter_init()
    for y in Y[:30]:
        state, out = model.filter_step(state, y)
    state.save(tmp_path / "state.npz")
    resumed = list(model.filter_stream(Y[30:], state=FilterState.load(tmp_path / "state.npz")))
    np.testing.assert_array_equal(out.probabilities, whole[29].probabilities)
    np.testing.assert_array_equal(resumed[-1].probabilities, whole[-1].probabilities)
    assert resumed[-1].log_likelihood == whole[-1].log_likelihood
    assert model.filter_forecast(state, 3).means.shape == (3, 2)


def test_bad_rows_are_refused(nonlinear):
    model, _ = nonlinear
    state = model.filter_init()
    with pytest.raises(ValueError, match="expects 2"):
        model.filter_step(state, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="input_dim=0"):
        model.filter_step(state, [1.0, 2.0], inputs=[1.0])
    with pytest.raises(ValueError, match="seen no observation"):
        model.filter_forecast(state, 2)


def test_a_recurrent_stream_reads_the_guards_at_each_modes_filtered_mean():
    """With zero guard slopes the recurrent stream is the plain one with transmat_ = softmax of the
    biases; with slopes, row i of the switch probabilities is the guards' at mode i's filtered mean."""
    Y = _noisy_oscillators(80, 4)
    model = _fit(NonlinearSwitchingLDS(2, state_dim=2, recurrent=True, n_iter=2, random_state=0), Y)
    flat = _fit(NonlinearSwitchingLDS(2, state_dim=2, n_iter=1, random_state=0), Y)
    for name in model.parameter_names:
        if name not in ("recurrence_weights_", "input_weights_", "recurrence_biases_"):
            setattr(flat, name, getattr(model, name))
    flat.__dict__["feature_map_"] = model.feature_map_
    biases = model.recurrence_biases_
    flat.transmat_ = np.exp(biases - biases.max(axis=1, keepdims=True))
    flat.transmat_ /= flat.transmat_.sum(axis=1, keepdims=True)
    slopes = model.recurrence_weights_.copy()
    model.recurrence_weights_ = np.zeros_like(slopes)
    a, b = (np.array([out.probabilities for out in m.filter_stream(Y)]) for m in (model, flat))
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    model.recurrence_weights_ = slopes
    means = np.array([[0.5, -0.2], [-1.0, 0.8]])
    rows = model._stream_recursion().params["transitions"](means, np.zeros(0))
    for i in range(2):
        logits = slopes @ model.feature_map_.transform(means[i : i + 1])[0] + biases[i]
        np.testing.assert_allclose(rows[i], np.exp(logits) / np.exp(logits).sum(), rtol=1e-10)
