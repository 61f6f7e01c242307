"""ContinuousSwitchingLDS with inputs held over each gap (a zero-order hold): the integrated input map
against scipy's exponential of the augmented generator, the SwitchingLDS with the matched input
matrices at unit steps, the exact likelihood with one mode at any times, the Euler proposal, and
fit, save and load."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.linalg import expm
from scipy.stats import multivariate_normal

from modeshift import ContinuousSwitchingLDS, SwitchingLDS, load
from modeshift.models.continuous_arhmm import (
    GapGroups,
    GapMoments,
    _van_loan,
    euler_regression,
    expected_flow_log_likelihood,
    flow_moments,
)

OBSERVED = ("observation_matrix_", "observation_offset_", "feedthrough_matrix_", "observation_covariance_")
INITIAL = ("initial_state_mean_", "initial_state_covariance_", "startprob_")


def _model(n_states: int = 2, seed: int = 0) -> ContinuousSwitchingLDS:
    """Two 2-D flows (a damped rotation, a relaxation) driven by one input, seen in 3 dimensions."""
    rng = np.random.default_rng(seed)
    model = ContinuousSwitchingLDS(n_states=n_states, state_dim=2, input_dim=1)
    model.drift_matrices_ = np.array([[[-0.1, 0.5], [-0.5, -0.1]], [[-0.3, 0.0], [0.2, -0.2]]])[:n_states]
    model.drift_input_matrices_ = np.array([[[0.5], [0.0]], [[0.0], [-0.4]]])[:n_states]
    model.drift_offsets_ = np.array([[0.1, 0.0], [0.0, -0.2]])[:n_states]
    model.diffusion_covariances_ = np.array([0.05 * np.eye(2), [[0.1, 0.02], [0.02, 0.04]]])[:n_states]
    model.rate_matrix_ = np.array([[-0.1, 0.1], [0.3, -0.3]]) if n_states == 2 else np.zeros((1, 1))
    model.observation_matrix_, model.observation_offset_ = rng.normal(size=(3, 2)), rng.normal(size=3)
    model.feedthrough_matrix_ = rng.normal(size=(3, 1))
    model.observation_covariance_ = 0.1 * np.eye(3)
    model.initial_state_mean_, model.initial_state_covariance_ = np.zeros(2), np.eye(2)
    model.startprob_ = np.array([0.6, 0.4])[:n_states] / np.array([0.6, 0.4])[:n_states].sum()
    return model


def _exact_law(F: np.ndarray, G: np.ndarray, f: np.ndarray, Sigma: np.ndarray, gap: float) -> tuple[np.ndarray, ...]:
    """Φ, [Γ, c] and S over ``gap`` by scipy's expm of the augmented generator [[F, G, f], [0, 0, 0]]
    and of Van Loan's block."""
    n, q = len(f), G.shape[1] + 1
    generator = np.zeros((n + q, n + q))
    generator[:n, :n], generator[:n, n:] = F, np.column_stack([G, f])
    augmented = expm(generator * gap)
    block = expm(np.block([[-F, Sigma], [np.zeros((n, n)), F.T]]) * gap)
    return augmented[:n, :n], augmented[:n, n:], augmented[:n, :n] @ block[:n, n:]


@pytest.mark.parametrize("defective", [False, True])
def test_the_input_map_is_the_exponential_of_the_augmented_generator(defective):
    """[Γ, c] = ∫_0^Δ expm(F s) ds [G, f] on both paths (eigenvectors, Van Loan), the offset's
    column as without inputs; a double integrator (defective F) goes by the block exponentials."""
    rng = np.random.default_rng(1)
    if defective:
        F, Sigma = np.array([[0.0, 1.0], [0.0, 0.0]]), np.diag([1e-3, 1.0])
    else:
        F, L = 0.4 * rng.normal(size=(3, 3)) - 0.3 * np.eye(3), rng.normal(size=(3, 3))
        Sigma = L @ L.T + 0.1 * np.eye(3)
    n = len(F)
    G, f = rng.normal(size=(n, 2)), rng.normal(size=n)
    gaps, inputs = np.array([0.05, 0.7, 2.5]), np.column_stack([G, f])
    for Phi, columns, S in (flow_moments(F, inputs, Sigma, gaps), _van_loan(F, inputs, Sigma, gaps)):
        assert columns.shape == (3, n, 3)
        for g, gap in enumerate(gaps):
            Phi_true, columns_true, S_true = _exact_law(F, G, f, Sigma, gap)
            np.testing.assert_allclose(Phi[g], Phi_true, atol=1e-10)
            np.testing.assert_allclose(columns[g], columns_true, atol=1e-10)
            np.testing.assert_allclose(S[g], S_true, atol=1e-10)
    np.testing.assert_allclose(
        flow_moments(F, np.column_stack([G, f]), Sigma, gaps)[1][:, :, -1], flow_moments(F, f, Sigma, gaps)[1]
    )


def _discrete(model: ContinuousSwitchingLDS) -> SwitchingLDS:
    """The SwitchingLDS of one-unit steps, its laws from scipy: A = expm(F), [B, b] = ∫_0^1 expm(F s) ds [G, f]."""
    laws = [
        _exact_law(F, G, f, Sigma, 1.0)
        for F, G, f, Sigma in zip(
            model.drift_matrices_, model.drift_input_matrices_, model.drift_offsets_, model.diffusion_covariances_
        )
    ]
    discrete = SwitchingLDS(n_states=model.n_states, state_dim=2, input_dim=1)
    discrete.dynamics_matrices_ = np.stack([Phi for Phi, _, _ in laws])
    discrete.dynamics_input_matrices_ = np.stack([columns[:, :1] for _, columns, _ in laws])
    discrete.dynamics_offsets_ = np.stack([columns[:, 1] for _, columns, _ in laws])
    discrete.dynamics_covariances_ = np.stack([S for _, _, S in laws])
    discrete.transmat_ = expm(model.rate_matrix_)
    for name in OBSERVED + INITIAL:
        setattr(discrete, name, getattr(model, name))
    return discrete


def test_unit_steps_with_inputs_are_the_discrete_model_with_the_matched_input_matrices():
    """ELBO, mode probabilities, forecast and stream of the SwitchingLDS whose B is the integrated
    input map over one time unit, to 1e-10."""
    continuous = _model()
    rng = np.random.default_rng(2)
    U, future = rng.normal(size=(150, 1)), rng.normal(size=(3, 1))
    Y, _ = continuous.sample(150, random_state=1, inputs=U)
    discrete = _discrete(continuous)
    expected = discrete.elbo(Y, inputs=U)
    assert abs(continuous.elbo(Y, inputs=U) - expected) < 1e-10
    assert abs(continuous.elbo(Y, times=np.arange(150.0) - 3.0, inputs=U) - expected) < 1e-10
    np.testing.assert_allclose(continuous.predict_proba(Y, inputs=U), discrete.predict_proba(Y, inputs=U), atol=1e-10)
    ahead = continuous.forecast(Y, 3, inputs=U, future_inputs=future)
    np.testing.assert_allclose(ahead.means, discrete.forecast(Y, 3, inputs=U, future_inputs=future).means, atol=1e-10)
    timed = continuous.forecast(
        Y, times=np.arange(150.0), inputs=U, future_times=[150.0, 151.0, 152.0], future_inputs=future
    )
    np.testing.assert_allclose(timed.means, ahead.means, atol=1e-12)
    streamed = list(continuous.filter_stream(Y, U, times=np.arange(150.0)))
    for out, want in zip(streamed, discrete.filter_stream(Y, U), strict=True):
        np.testing.assert_allclose(out.probabilities, want.probabilities, atol=1e-10)
        assert abs(out.log_likelihood - want.log_likelihood) < 1e-10
    untimed = [out.log_likelihood for out in continuous.filter_stream(Y, U)]  # one time unit apart
    np.testing.assert_allclose(untimed, [out.log_likelihood for out in streamed], atol=1e-10)
    np.testing.assert_allclose(
        continuous.filter_forecast(streamed[-1].state, 3, future).means,
        discrete.filter_forecast(streamed[-1].state, 3, future).means,
        atol=1e-10,
    )


def _kalman_log_likelihood(model: ContinuousSwitchingLDS, Y: np.ndarray, U: np.ndarray, times: np.ndarray) -> float:
    """log p(y) of a one-mode model by the Kalman filter, each gap's law computed by scipy."""
    C, d, D, R = (model.__dict__[name] for name in OBSERVED)
    mean, cov, total = model.initial_state_mean_, model.initial_state_covariance_, 0.0
    flow = (model.drift_matrices_[0], model.drift_input_matrices_[0], model.drift_offsets_[0])
    for n, (y, u) in enumerate(zip(Y, U)):
        if n:
            Phi, columns, S = _exact_law(*flow, model.diffusion_covariances_[0], times[n] - times[n - 1])
            mean, cov = Phi @ mean + columns @ np.r_[u, 1.0], Phi @ cov @ Phi.T + S
        innovation = C @ cov @ C.T + R
        total += multivariate_normal(C @ mean + D @ u + d, innovation).logpdf(y)
        gain = cov @ C.T @ np.linalg.inv(innovation)
        mean, cov = mean + gain @ (y - C @ mean - D @ u - d), cov - gain @ C @ cov
    return total


def test_one_mode_with_inputs_at_irregular_times_has_the_exact_likelihood():
    model = _model(n_states=1)
    rng = np.random.default_rng(3)
    times, U = np.cumsum(rng.exponential(1.5, 50)), rng.normal(size=(50, 1))
    Y, _ = model.sample(50, random_state=4, times=times, inputs=U)
    assert model.elbo(Y, times=times, inputs=U) == pytest.approx(_kalman_log_likelihood(model, Y, U, times), abs=1e-8)


def test_a_sample_without_noise_follows_the_held_inputs():
    """With (nearly) no noise a path is x_n = Φ x_n-1 + Γ u_n + c over each gap, y_n = C x_n + D u_n + d."""
    model = _model(n_states=1)
    model.diffusion_covariances_ = 1e-24 * np.eye(2)[None]
    model.observation_covariance_, model.initial_state_covariance_ = 1e-24 * np.eye(3), 1e-24 * np.eye(2)
    times, U = np.array([0.0, 0.3, 1.8, 2.0]), np.array([[1.0], [-2.0], [0.5], [3.0]])
    Y, _ = model.sample(4, random_state=0, times=times, inputs=U)
    x, flow = (
        model.initial_state_mean_,
        (model.drift_matrices_[0], model.drift_input_matrices_[0], model.drift_offsets_[0]),
    )
    for n in range(4):
        if n:
            Phi, columns, _ = _exact_law(*flow, np.eye(2), times[n] - times[n - 1])
            x = Phi @ x + columns @ np.r_[U[n], 1.0]
        expected = model.observation_matrix_ @ x + model.feedthrough_matrix_ @ U[n] + model.observation_offset_
        np.testing.assert_allclose(Y[n], expected, atol=1e-9)


def test_euler_proposal_with_inputs_is_weighted_least_squares_and_the_objective_is_row_by_row():
    """On observed pairs with inputs: the Euler proposal regresses (x_n - x_n-1) / Δ_n on [x_n-1, u_n, 1]
    with weights w_n Δ_n; the objective is sum_n w_n log N(x_n | Φ x_n-1 + [Γ, c] [u_n, 1], S)."""
    rng = np.random.default_rng(5)
    before, after, inputs, weights = (
        rng.normal(size=(40, 2)),
        rng.normal(size=(40, 2)),
        rng.normal(size=(40, 2)),
        rng.random(40),
    )
    gaps = rng.choice([0.5, 1.0, 2.5], 40)
    Z = np.hstack([before, inputs, np.ones((40, 1))])
    moments = after[:, :, None] * after[:, None], after[:, :, None] * Z[:, None], Z[:, :, None] * Z[:, None]
    summed = GapMoments.of(GapGroups.of(gaps), weights, *moments)
    rate, w = (after - before) / gaps[:, None], weights * gaps
    W = np.linalg.lstsq(Z * np.sqrt(w)[:, None], rate * np.sqrt(w)[:, None], rcond=None)[0].T
    A, columns, _ = euler_regression(summed, 0.0)
    assert columns.shape == (2, 3)
    np.testing.assert_allclose(np.column_stack([A, columns]), W, atol=1e-10)
    Sigma = np.array([[0.2, 0.05], [0.05, 0.1]])
    expected = 0.0
    for x0, x1, z, weight, gap in zip(before, after, Z, weights, gaps):
        Phi, law, S = _exact_law(A, columns[:, :2], columns[:, 2], Sigma, gap)
        expected += weight * multivariate_normal(Phi @ x0 + law @ z[2:], S).logpdf(x1)
    assert expected_flow_log_likelihood(A, columns, Sigma, summed) == pytest.approx(expected, rel=1e-10)


def test_fit_with_inputs_is_monotone_and_round_trips(tmp_path):
    truth = _model()
    rng = np.random.default_rng(6)
    times, U = np.cumsum(rng.exponential(1.0, 80)), rng.normal(size=(80, 1))
    Y, _ = truth.sample(80, random_state=7, times=times, inputs=U)
    model = ContinuousSwitchingLDS(n_states=2, state_dim=2, input_dim=1, n_iter=3, tol=-np.inf, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(Y, times=times, inputs=U)
    history = np.asarray(model.history_)
    assert (np.diff(history) >= -1e-8 * np.abs(history[1:])).all()
    assert model.drift_input_matrices_.shape == (2, 2, 1) and model.feedthrough_matrix_.shape == (3, 1)
    assert model.n_parameters == 2 * (2 * 4 + 3) + 2 + 3 * 4 + 6 + 2 + 3 + 1
    model.save(tmp_path / "inputs.msz")
    again = load(tmp_path / "inputs.msz")
    for name in model.parameter_names:
        np.testing.assert_array_equal(getattr(again, name), getattr(model, name))
    assert again.elbo(Y, times=times, inputs=U) == model.elbo(Y, times=times, inputs=U)
    future = {"future_times": times[-1] + [0.5, 2.0], "future_inputs": np.array([[0.5], [-1.0]])}
    np.testing.assert_array_equal(
        again.forecast(Y, times=times, inputs=U, **future).means,
        model.forecast(Y, times=times, inputs=U, **future).means,
    )
    assert again.automaton().flows[0].coefficients.shape == (2, 3)


def test_a_pruned_start_keeps_its_modes_input_matrices():
    model = _model()
    kept = model._kept_modes(np.array([1]))
    np.testing.assert_array_equal(kept.drift_input_matrices_, model.drift_input_matrices_[1:])
    np.testing.assert_array_equal(kept.feedthrough_matrix_, model.feedthrough_matrix_)
    kept._check_parameters()


def test_missing_or_mismatched_inputs_are_named():
    model = _model()
    Y, _ = model.sample(10, random_state=0, inputs=np.zeros((10, 1)))
    with pytest.raises(ValueError, match="pass inputs"):
        model.elbo(Y)
    with pytest.raises(ValueError, match="1 column"):
        model.elbo(Y, inputs=np.zeros((10, 2)))
    with pytest.raises(ValueError, match="pass future_inputs"):
        model.forecast(Y, 2, inputs=np.zeros((10, 1)))
    with pytest.raises(ValueError, match="one \\(h, 1\\) per sequence"):
        model.forecast(
            [Y, Y], inputs=[np.zeros((10, 1))] * 2, future_times=[[10.0], [10.0, 11.0]], future_inputs=np.zeros((2, 1))
        )
    with pytest.raises(ValueError, match="inputs"):
        model.sample(5, random_state=0)
    with pytest.raises(ValueError, match="inputs has 2 entries"):
        model.filter_step(model.filter_init(), Y[0], [1.0, 2.0], time=0.0)
    ragged = model.forecast(
        [Y, Y[:5]],
        inputs=[np.zeros((10, 1)), np.zeros((5, 1))],
        future_times=[[10.0], [5.0, 6.5]],
        future_inputs=[[[1.0]], [[1.0], [2.0]]],
    )
    assert [len(means) for means in ragged.means] == [1, 2]


@pytest.mark.slow
def test_a_fit_recovers_the_held_inputs_effect():
    """One mode, 1,500 observations at exponential gaps (mean 1), an input redrawn at each: the fit
    finds the drift F, the input's gain C G per unit time and the feedthrough D (basis-free
    quantities; measured -0.506, 0.992 and 0.305 for -0.5, 1.0 and 0.3)."""
    truth = ContinuousSwitchingLDS(n_states=1, state_dim=1, input_dim=1)
    truth.drift_matrices_, truth.drift_input_matrices_ = np.array([[[-0.5]]]), np.array([[[1.0]]])
    truth.drift_offsets_, truth.diffusion_covariances_, truth.rate_matrix_ = (
        np.array([[0.2]]),
        np.array([[[0.1]]]),
        np.zeros((1, 1)),
    )
    truth.observation_matrix_, truth.observation_offset_ = np.array([[1.0]]), np.zeros(1)
    truth.feedthrough_matrix_, truth.observation_covariance_ = np.array([[0.3]]), np.array([[0.01]])
    truth.initial_state_mean_, truth.initial_state_covariance_, truth.startprob_ = np.zeros(1), np.eye(1), np.ones(1)
    rng = np.random.default_rng(0)
    times, U = np.cumsum(rng.exponential(1.0, 1500)), rng.normal(size=(1500, 1))
    Y, _ = truth.sample(1500, random_state=1, times=times, inputs=U)
    model = ContinuousSwitchingLDS(n_states=1, state_dim=1, input_dim=1, n_iter=200, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(Y, times=times, inputs=U)
    assert model.drift_matrices_[0, 0, 0] == pytest.approx(-0.5, rel=0.05)
    assert (model.observation_matrix_ @ model.drift_input_matrices_[0])[0, 0] == pytest.approx(1.0, rel=0.05)
    assert model.feedthrough_matrix_[0, 0] == pytest.approx(0.3, abs=0.03)
