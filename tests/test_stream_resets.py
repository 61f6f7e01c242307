"""Kim's streaming filter with resets (SwitchingLDS, NonlinearSwitchingLDS): against the exact filter
summed over every mode path, the plain model when no reset can act, the SwitchingLDS's stream at a
linear map, the exact forecast of the chain of pairs, and a saved state resumed."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
from scipy import stats

from modeshift import NonlinearSwitchingLDS, SwitchingLDS
from modeshift.datasets.simulators import switching_oscillators
from modeshift.features import Polynomial
from modeshift.models import laplace_inference as laplace
from modeshift.models.streaming import FilterState


def _model(rng, ties, K=2, n=2, p=2, m=1):
    """Random parameters of an SLDS with resets (every law clearly different, the switches likely)."""
    model = SwitchingLDS(n_states=K, state_dim=n, input_dim=m, resets=ties)
    model.startprob_ = rng.dirichlet(np.ones(K))
    model.transmat_ = rng.dirichlet(np.ones(K), size=K)
    model.dynamics_matrices_ = 0.5 * rng.normal(size=(K, n, n))
    model.dynamics_input_matrices_ = rng.normal(size=(K, n, m))
    model.dynamics_offsets_ = rng.normal(size=(K, n))
    w = 0.5 * rng.normal(size=(K, n, n))
    model.dynamics_covariances_ = w @ np.swapaxes(w, 1, 2) + 0.2 * np.eye(n)
    model.observation_matrix_ = rng.normal(size=(p, n))
    model.feedthrough_matrix_ = rng.normal(size=(p, m))
    model.observation_offset_ = rng.normal(size=p)
    model.observation_covariance_ = 0.4 * np.eye(p)
    model.initial_state_mean_, model.initial_state_covariance_ = rng.normal(size=n), np.eye(n)
    R = K * (K - 1) if ties == "pair" else K
    model.reset_matrices_ = rng.normal(size=(R, n, n))
    model.reset_input_matrices_ = rng.normal(size=(R, n, m))
    model.reset_offsets_ = 2.0 * rng.normal(size=(R, n))
    w = 0.5 * rng.normal(size=(R, n, n))
    model.reset_covariances_ = w @ np.swapaxes(w, 1, 2) + 0.1 * np.eye(n)
    return model


def _exact_filter(model, Y, U):
    """p(z_T-1 | y), E[x_T-1 | y], Cov[x_T-1 | y] and log p(y), summing the Gaussian mixture over all
    K^T mode paths exactly (a Kalman filter each). A switch i -> j follows reset r: j under
    "destination", the rank of (i, j) among the ordered pairs i != j, row by row, under "pair"."""
    K = len(model.startprob_)
    pairs = [(i, j) for i in range(K) for j in range(K) if i != j]
    reset = {(i, j): (j if model.resets == "destination" else pairs.index((i, j))) for i, j in pairs}
    C, D, d, R = (
        model.observation_matrix_,
        model.feedthrough_matrix_,
        model.observation_offset_,
        model.observation_covariance_,
    )
    weights, means, covs, probabilities = [], [], [], np.zeros(K)
    for path in itertools.product(range(K), repeat=len(Y)):
        log_w = np.log(model.startprob_[path[0]]) + sum(np.log(model.transmat_[i, j]) for i, j in zip(path, path[1:]))
        mean, cov = model.initial_state_mean_, model.initial_state_covariance_
        for t, (z, y, u) in enumerate(zip(path, Y, U)):
            if t:
                if path[t - 1] == z:
                    A, B, b, Q = (
                        model.dynamics_matrices_[z],
                        model.dynamics_input_matrices_[z],
                        model.dynamics_offsets_[z],
                        model.dynamics_covariances_[z],
                    )
                else:
                    r = reset[path[t - 1], z]
                    A, B, b, Q = (
                        model.reset_matrices_[r],
                        model.reset_input_matrices_[r],
                        model.reset_offsets_[r],
                        model.reset_covariances_[r],
                    )
                mean, cov = A @ mean + B @ u + b, A @ cov @ A.T + Q
            S = C @ cov @ C.T + R
            predicted = C @ mean + D @ u + d
            log_w += stats.multivariate_normal(predicted, S).logpdf(y)
            gain = cov @ C.T @ np.linalg.inv(S)
            mean, cov = mean + gain @ (y - predicted), cov - gain @ C @ cov
        weights.append(log_w)
        means.append(mean)
        covs.append(cov)
    log_w = np.array(weights)
    total = np.logaddexp.reduce(log_w)
    w = np.exp(log_w - total)
    for path, share in zip(itertools.product(range(K), repeat=len(Y)), w):
        probabilities[path[-1]] += share
    means, covs = np.array(means), np.array(covs)
    mean = w @ means
    spread = means - mean
    cov = np.einsum("s,sab->ab", w, covs + spread[:, :, None] * spread[:, None, :])
    return probabilities, mean, cov, total


@pytest.mark.parametrize("ties", ["pair", "destination"])
def test_the_stream_is_the_exact_filter_while_kims_collapse_is_exact_and_close_after(ties):
    """Two steps exact to 1e-8 (x_0's law is the same in every mode, so the pairs into step 1 are
    the exact mixture, whose moments the collapse keeps; measured 1e-15); after, the collapse of
    the pairs into one Gaussian per mode approximates: measured over T = 3..6, at most 0.006 on the
    mode probabilities, 0.016 on the log-likelihood and 0.012 on the mean on these seeds."""
    rng = np.random.default_rng({"pair": 0, "destination": 1}[ties])
    model = _model(rng, ties)
    U = rng.normal(size=(6, 1))
    Y = model.sample(6, inputs=U, random_state=3)[0]
    outs = list(model.filter_stream(Y, U))
    for T in (1, 2, 3, 6):
        probabilities, mean, cov, log_lik = _exact_filter(model, Y[:T], U[:T])
        streamed = sum(out.log_likelihood for out in outs[:T])
        exact = T <= 2
        np.testing.assert_allclose(outs[T - 1].probabilities, probabilities, atol=1e-8 if exact else 0.02)
        assert abs(streamed - log_lik) < (1e-8 if exact else 0.05)
        np.testing.assert_allclose(outs[T - 1].mean, mean, atol=1e-8 if exact else 0.05)
        if exact:
            np.testing.assert_allclose(outs[T - 1].covariance, cov, atol=1e-8)
    plain = copy.deepcopy(model)
    plain.resets = None  # the same flows: the exact filter with resets is not the one without them
    assert np.abs(np.array([o.mean for o in plain.filter_stream(Y, U)])[1] - outs[1].mean).max() > 1e-3


def test_resets_that_are_the_flows_give_the_plain_models_stream():
    """Resets "destination" equal to the flows they replace: every pair follows flow j, as without resets."""
    rng = np.random.default_rng(2)
    model = _model(rng, "destination")
    model.reset_matrices_, model.reset_input_matrices_ = model.dynamics_matrices_, model.dynamics_input_matrices_
    model.reset_offsets_, model.reset_covariances_ = model.dynamics_offsets_, model.dynamics_covariances_
    plain = copy.deepcopy(model)
    plain.resets = None
    U = rng.normal(size=(40, 1))
    Y = model.sample(40, inputs=U, random_state=1)[0]
    ours, theirs = list(model.filter_stream(Y, U)), list(plain.filter_stream(Y, U))
    for name in ("probabilities", "mean", "covariance", "log_likelihood"):
        a, b = (np.array([getattr(out, name) for out in outs]) for outs in (ours, theirs))
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10, err_msg=name)


@pytest.mark.parametrize("ties", ["pair", "destination"])
def test_the_streams_forecast_is_the_exact_one_of_the_chain_of_pairs(ties):
    """From a filtered law, each step predicted through the pairs' laws (a switch's reset) and
    collapsed keeps each mode's moments: the exact moments of the jump linear system on the chain
    of pairs (``SwitchingLDS._forecast_mixture``, proved against enumeration in test_slds_resets)."""
    rng = np.random.default_rng(5)
    model = _model(rng, ties, K=3)
    U, future = rng.normal(size=(15, 1)), rng.normal(size=(4, 1))
    Y = model.sample(15, inputs=U, random_state=2)[0]
    *_, last = model.filter_stream(Y, U)
    got = model.filter_forecast(last.state, 4, future)
    params = model._parameters()
    want = model._forecast_mixture(last.state.filtered[:3], params, model._future_laws(params, future), future, None)
    for name in ("means", "covariances", "mode_probabilities"):
        np.testing.assert_allclose(getattr(got, name), getattr(want, name), rtol=1e-9, atol=1e-10, err_msg=name)
    plain = copy.deepcopy(model)
    plain.resets = None
    assert np.abs(plain.filter_forecast(last.state, 4, future).means - got.means).max() > 1e-2


def test_a_state_saved_mid_stream_resumes_the_same_stream(tmp_path):
    rng = np.random.default_rng(3)
    model = _model(rng, "pair", K=3)
    U = rng.normal(size=(30, 1))
    Y = model.sample(30, inputs=U, random_state=0)[0]
    whole = list(model.filter_stream(Y, U))
    whole[11].state.save(tmp_path / "state.npz")
    resumed = list(model.filter_stream(Y[12:], U[12:], state=FilterState.load(tmp_path / "state.npz")))
    for a, b in zip(whole[12:], resumed, strict=True):
        assert a.step == b.step and a.log_likelihood == b.log_likelihood
        for name in ("probabilities", "mean", "covariance"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_a_recurrent_stream_with_resets_is_the_plain_one_without_state_dependence():
    """Zero guard slopes and biases log P_ij: the guards switch as transmat_ P does, into the same resets."""
    rng = np.random.default_rng(4)
    plain = _model(rng, "pair", K=3)
    recurrent = SwitchingLDS(**{**plain.get_params(), "recurrent": True})
    recurrent.__dict__.update({name: plain.__dict__[name] for name in plain.parameter_names if name != "transmat_"})
    recurrent.recurrence_weights_, recurrent.input_weights_ = np.zeros((3, 2)), np.zeros((3, 1))
    recurrent.recurrence_biases_ = np.log(plain.transmat_)
    U = rng.normal(size=(25, 1))
    Y = plain.sample(25, inputs=U, random_state=0)[0]
    for name in ("probabilities", "mean", "log_likelihood"):
        a, b = (np.array([getattr(o, name) for o in m.filter_stream(Y, U)]) for m in (recurrent, plain))
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=name)


# ------------------------------------------------------------------ NonlinearSwitchingLDS
def _nonlinear(rng, ties, features, K=2, n=2):
    """A NonlinearSwitchingLDS with random flows on ``features`` (fitted to a cloud of states) and resets."""
    model = NonlinearSwitchingLDS(K, state_dim=n, features=features, resets=ties)
    model.feature_map_ = features.fit(rng.normal(size=(100, n)))
    model.flow_weights_ = 0.3 * rng.normal(size=(K, n, model.feature_map_.n_outputs))
    model.flow_offsets_ = 0.5 * rng.normal(size=(K, n))
    model.flow_covariances_ = np.stack([0.05 * (k + 1) * np.eye(n) for k in range(K)])
    model.observation_matrix_, model.observation_offset_ = rng.normal(size=(2, n)), rng.normal(size=2)
    model.observation_covariance_ = 0.1 * np.eye(2)
    model.initial_state_mean_, model.initial_state_covariance_ = np.zeros(n), np.eye(n)
    model.startprob_, model.transmat_ = np.full(K, 1.0 / K), np.array([[0.8, 0.2], [0.3, 0.7]])
    R = K * (K - 1) if ties == "pair" else K
    model.reset_matrices_ = 0.5 * rng.normal(size=(R, n, n))
    model.reset_offsets_ = 2.0 * rng.normal(size=(R, n))
    model.reset_covariances_ = np.stack([(0.05 + 0.02 * r) * np.eye(n) for r in range(R)])
    return model


def _as_switching_lds(model: NonlinearSwitchingLDS) -> SwitchingLDS:
    """The SwitchingLDS with the law of ``model``, whose map is linear (A_k = W_k J, b_k = W_k phi(0)
    + b_k), and the same resets."""
    value, jacobian = laplace.feature_jacobian(model.feature_map_, np.zeros((1, model.state_dim)))
    K, n = model.flow_weights_.shape[:2]
    linear = SwitchingLDS(K, state_dim=n, resets=model.resets)
    linear.dynamics_matrices_ = model.flow_weights_ @ jacobian[0]
    linear.dynamics_offsets_ = model.flow_weights_ @ value[0] + model.flow_offsets_
    linear.dynamics_input_matrices_, linear.feedthrough_matrix_ = np.zeros((K, n, 0)), np.zeros((2, 0))
    linear.dynamics_covariances_ = model.flow_covariances_
    linear.reset_input_matrices_ = np.zeros((len(model.reset_offsets_), n, 0))
    shared = ("observation_", "initial_", "startprob_", "transmat_", "reset_matrices_", "reset_offsets_", "reset_cov")
    for name in model.parameter_names:
        if name.startswith(shared):
            setattr(linear, name, getattr(model, name))
    return linear


@pytest.mark.parametrize("ties", ["pair", "destination"])
def test_with_a_linear_map_the_nonlinear_stream_with_resets_is_the_switching_lds_one(ties):
    """Its flows' extended steps are then exact and its resets take the same affine steps: the same
    stream and forecast (1e-8) as the SwitchingLDS's with the same resets."""
    rng = np.random.default_rng(6)
    model = _nonlinear(rng, ties, Polynomial(1))
    linear = _as_switching_lds(model)
    Y = linear.sample(50, random_state=1)[0]
    ours, theirs = list(model.filter_stream(Y)), list(linear.filter_stream(Y))
    for name in ("probabilities", "mean", "covariance", "log_likelihood"):
        a, b = (np.array([getattr(out, name) for out in outs]) for outs in (ours, theirs))
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10, err_msg=name)
    mine, other = model.filter_forecast(ours[-1].state, 5), linear.filter_forecast(theirs[-1].state, 5)
    for name in ("means", "covariances", "mode_probabilities"):
        np.testing.assert_allclose(getattr(mine, name), getattr(other, name), rtol=1e-8, atol=1e-10, err_msg=name)
    plain = copy.deepcopy(model)
    plain.resets = None
    assert not np.allclose([o.mean for o in plain.filter_stream(Y)], [o.mean for o in ours], atol=1e-3)


def test_on_nonlinear_flows_resets_that_no_switch_reaches_leave_the_plain_stream():
    """A chain that never switches (transmat_ = I) gives the resets' pairs probability 0: the cubic
    flows' stream is the model's without resets (1e-10)."""
    rng = np.random.default_rng(8)
    model = _nonlinear(rng, "pair", Polynomial(3))
    model.transmat_ = np.eye(2)
    plain = copy.deepcopy(model)
    plain.resets = None
    Y = switching_oscillators(60, random_state=0).observations
    ours, theirs = list(model.filter_stream(Y)), list(plain.filter_stream(Y))
    for name in ("probabilities", "mean", "covariance", "log_likelihood"):
        a, b = (np.array([getattr(out, name) for out in outs]) for outs in (ours, theirs))
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10, err_msg=name)
