"""NonlinearSwitchingLDS and its Laplace inference (modeshift.models.laplace_inference)."""

from __future__ import annotations

import warnings
from dataclasses import fields

import numpy as np
import pytest
from scipy import optimize

import modeshift
from modeshift import NonlinearSwitchingLDS
from modeshift.data import as_sequences
from modeshift.datasets.simulators import switching_oscillators
from modeshift.dynamics import LinearDynamics
from modeshift.features import Polynomial
from modeshift.metrics import match_modes, mode_accuracy
from modeshift.models import laplace_inference as laplace
from modeshift.models import slds_inference
from modeshift.transitions import InputDriven, Stationary


def _random_problem(rng, features, lengths=(12, 18), n=2, p=3, K=2, input_dim=0):
    """Random parameters of the nonlinear model, data (with ``input_dim`` inputs), and mode probabilities."""
    T = sum(lengths)
    inputs = rng.normal(size=(T, input_dim)) if input_dim else None
    seqs = as_sequences(rng.normal(size=(T, p)), list(lengths)).with_inputs(inputs, input_dim)
    features = features.fit(rng.normal(size=(50, n)))
    m = features.n_outputs
    chain = Stationary(K)
    chain.initial_probs, chain.transition_matrix = np.full(K, 1.0 / K), np.array([[0.9, 0.1], [0.2, 0.8]])
    observation = LinearDynamics(1)
    observation.weights = rng.normal(size=(1, p, n + input_dim + 1))
    observation.covariances = (0.3 * np.eye(p) + 0.05)[None]
    covariances = np.stack([0.2 * np.eye(n) + 0.02 * k for k in range(K)])
    weights = 0.3 * rng.normal(size=(K, n, m + input_dim + 1))
    params = laplace.FlowParameters(weights, covariances, features, observation, np.zeros(n), np.eye(n), chain)
    return params, seqs, rng.dirichlet(np.ones(K), size=T)


@pytest.mark.parametrize("input_dim", [0, 2])
def test_with_linear_features_the_laplace_posterior_is_the_switching_lds_one(input_dim):
    """phi(x) = (x - location) / scale makes every flow affine: f is quadratic, the Laplace q(x) is
    exact and equals the SwitchingLDS's q(x) for the same q(z), and so do q(z) and the ELBO, with
    inputs too (x_t = A_k x_t-1 + B_k u_t + b_k, y_t = C x_t + D u_t + d); the M-step's moments
    of [phi(x_t-1), u_t, 1] are then exact."""
    rng = np.random.default_rng(0)
    params, seqs, mode_probs = _random_problem(rng, Polynomial(degree=1), input_dim=input_dim)
    features = params.features
    W, B, b = params.split()
    A = W / features.scale_
    affine = LinearDynamics(2)
    affine.weights = np.concatenate([A, B, (b - A @ features.location_)[:, :, None]], axis=2)
    affine.covariances = params.covariances
    linear = slds_inference.SwitchingParameters(
        affine, params.observation, params.initial_mean, params.initial_covariance, params.chain
    )
    expected = slds_inference.update_states(linear, seqs, mode_probs)
    at, *found = laplace.find_mode(params, seqs, mode_probs, rng.normal(size=(seqs.n_steps, 2)))
    for got, want in zip((at.path, *found[:3]), expected):
        np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-8)
    swept = laplace.sweep(params, seqs, mode_probs, rng.normal(size=(seqs.n_steps, 2)))
    reference = slds_inference.sweep(linear, seqs, mode_probs)
    np.testing.assert_allclose(swept.mode_probs, reference.mode_probs, atol=1e-8)
    np.testing.assert_allclose(swept.means, reference.means, atol=1e-8)
    assert swept.elbo == pytest.approx(reference.elbo, rel=1e-10)

    rows, means, covs = seqs.linked_rows, swept.means, swept.covs
    weights = swept.mode_probs[rows]
    xx, xr, rr = laplace.flow_statistics(features, seqs, swept, weights)
    scale = np.diag(1.0 / features.scale_)
    r = np.hstack([(means[rows - 1] - features.location_) @ scale, seqs.inputs[rows], np.ones((len(rows), 1))])
    exact_rr = r[:, :, None] * r[:, None, :]
    exact_rr[:, :2, :2] += scale @ covs[rows - 1] @ scale
    exact_xr = means[rows][:, :, None] * r[:, None, :]
    exact_xr[:, :, :2] += swept.cross_covs[rows] @ scale
    exact_xx = covs[rows] + means[rows][:, :, None] * means[rows][:, None, :]
    for got, exact in zip((xx, xr, rr), (exact_xx, exact_xr, exact_rr)):
        np.testing.assert_allclose(got, np.einsum("tk,tij->kij", weights, exact), atol=1e-8)


def test_the_moments_and_slopes_computed_in_blocks_of_rows_equal_the_whole_arrays(monkeypatch):
    """The M-step's summed moments and the flows' and guards' slopes W_k J_t, w_j J_t, evaluated
    BLOCK_ROWS rows of the Jacobian at a time, equal the per-row formulas on the whole (T, m, n)
    Jacobian, with inputs and recurrent guards: bit for bit in one block (the default's, T is
    smaller), and in blocks of 7 rows (which do not divide the rows' count), of 1, and of 5 rows'
    moments' bytes (BLOCK_BYTES) the slopes bit for bit (each row's own product) and the moments'
    sums to round-off (summed block by block)."""
    rng = np.random.default_rng(11)
    params, seqs, mode_probs = _random_problem(rng, Polynomial(degree=3), lengths=(23, 31), input_dim=1)
    chain = InputDriven(2, params.features.n_outputs + 1)
    chain.initial_probs, chain.biases = np.full(2, 0.5), np.log([[0.9, 0.1], [0.2, 0.8]])
    chain.weights = rng.normal(size=(2, params.features.n_outputs + 1))
    params = laplace.FlowParameters(**{**vars(params), "chain": chain})
    swept = laplace.sweep(params, seqs, mode_probs, rng.normal(size=(seqs.n_steps, 2)))
    rows, means, covs, m = seqs.linked_rows, swept.means, swept.covs, params.features.n_outputs
    value, jacobian = laplace.feature_jacobian(params.features, laplace.previous_states(seqs, means))
    r = np.hstack([value[rows], seqs.inputs[rows], np.ones((len(rows), 1))])
    rr, xr = r[:, :, None] * r[:, None, :], means[rows][:, :, None] * r[:, None, :]
    J = jacobian[rows]
    rr[:, :m, :m] += J @ covs[rows - 1] @ np.swapaxes(J, 1, 2)
    xr[:, :, :m] += swept.cross_covs[rows] @ np.swapaxes(J, 1, 2)
    xx = covs[rows] + means[rows][:, :, None] * means[rows][:, None, :]
    weights = swept.mode_probs[rows]
    whole = [np.einsum("tk,tij->kij", weights, moment) for moment in (xx, xr, rr)]
    flows = np.matmul(params.split()[0][None], jacobian[:, None])  # (T, K, n, n)
    guards = np.matmul(chain.weights[None, :, :m], jacobian)  # (T, K, n)
    moments_bytes = rr[0].nbytes  # 8 q^2
    for rows_per_block, block_bytes in [
        (laplace.BLOCK_ROWS, laplace.BLOCK_BYTES),
        (7, 2**26),
        (1, 2**26),
        (99, 5 * moments_bytes),
    ]:
        monkeypatch.setattr(laplace, "BLOCK_ROWS", rows_per_block)
        monkeypatch.setattr(laplace, "BLOCK_BYTES", block_bytes)
        blocked = laplace.flow_statistics(params.features, seqs, swept, weights)
        for got, want in zip(blocked, whole):
            if block_bytes // moments_bytes >= rows_per_block >= seqs.n_steps:
                np.testing.assert_array_equal(got, want)
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())
        slopes = laplace.PathFeatures(params, seqs, means).slopes
        np.testing.assert_array_equal(slopes[0], flows)
        np.testing.assert_array_equal(slopes[1], guards)
    # the last setting: up to 99 rows, but only 5 rows' moments in BLOCK_BYTES
    assert [len(range(12)[block]) for block in laplace._row_blocks(12, moments_bytes)] == [5, 5, 2]


def test_the_features_along_a_path_are_read_at_each_previous_state():
    """PathFeatures holds phi at x_t-1 of every step (a sequence's first at its own state) and the
    flows' slopes W_k dphi/dx there: the map's values there and feature_jacobian's, which is the
    same on any subset of the rows (so that blocks of rows give the whole); feature_jacobian given
    phi gives the same Jacobian as without it, and a mode search from a path's features is the
    search from the path."""
    rng = np.random.default_rng(4)
    params, seqs, mode_probs = _random_problem(rng, Polynomial(degree=3))
    path = rng.normal(size=(seqs.n_steps, 2))
    along = laplace.PathFeatures(params, seqs, path)
    before = np.vstack([path[t] if t in seqs.starts else path[t - 1] for t in range(seqs.n_steps)])
    value, jacobian = laplace.feature_jacobian(params.features, before)
    np.testing.assert_array_equal(along.value, params.features.transform(before))
    np.testing.assert_array_equal(along.slopes[0], params.split()[0] @ jacobian[:, None])
    assert along.slopes[1] is None  # no guards
    np.testing.assert_array_equal(laplace.feature_jacobian(params.features, before, value)[1], jacobian)
    rows = seqs.linked_rows[:3]
    np.testing.assert_array_equal(jacobian[rows], laplace.feature_jacobian(params.features, path[rows - 1])[1])
    from_features, from_path = (laplace.find_mode(params, seqs, mode_probs, start)[0] for start in (along, path))
    np.testing.assert_array_equal(from_features.path, from_path.path)


def test_a_posterior_carries_the_features_at_its_mode_and_the_next_sweep_reads_them():
    """A sweep's posterior holds phi at x*_t-1 (the map's own values there; not its Jacobian), and
    a sweep from it gives, bit for bit, what the same sweep gives when it evaluates them afresh."""
    rng = np.random.default_rng(6)
    params, seqs, mode_probs = _random_problem(rng, Polynomial(degree=3))
    first = laplace.sweep(params, seqs, mode_probs, rng.normal(size=(seqs.n_steps, 2)))
    before = laplace.previous_states(seqs, first.means)
    np.testing.assert_array_equal(first.feature_values, params.features.transform(before))
    jacobian_size = seqs.n_steps * params.features.n_outputs * 2  # (T, m, n): no field is as large
    assert all(np.size(getattr(first, field.name)) < jacobian_size for field in fields(first))
    plain = slds_inference.Posterior(
        **{field.name: getattr(first, field.name) for field in fields(slds_inference.Posterior)}
    )
    carried, fresh = (laplace.sweep(params, seqs, first.mode_probs, first.means, previous=p) for p in (first, plain))
    for name in vars(carried):
        np.testing.assert_array_equal(getattr(carried, name), getattr(fresh, name), err_msg=name)


def _residuals(params, seqs, mode_probs, states):
    """r(x) with -f(x) = |r(x)|^2 / 2 + const: the whitened residuals of the prior, the flows
    (weighted by sqrt q(z_t = k)) and the observations."""
    parts = [
        np.linalg.cholesky(np.linalg.inv(params.initial_covariance)).T @ (states[s] - params.initial_mean)
        for s in seqs.starts
    ]
    (weights,), (R,) = params.observation.weights, params.observation.covariances
    R_half = np.linalg.cholesky(np.linalg.inv(R)).T
    for t in range(seqs.n_steps):
        parts.append(R_half @ (seqs.values[t] - weights[:, :-1] @ states[t] - weights[:, -1]))
    for t in seqs.linked_rows:
        phi = np.r_[params.features.transform(states[t - 1][None])[0], 1.0]
        for k in range(len(params.weights)):
            Q_half = np.linalg.cholesky(np.linalg.inv(params.covariances[k])).T
            parts.append(np.sqrt(mode_probs[t, k]) * Q_half @ (states[t] - params.weights[k] @ phi))
    return np.concatenate(parts)


def test_the_mode_search_equals_a_dense_optimisation():
    """On a tiny cubic model (12 unknowns), the Gauss-Newton mode is the optimum a dense
    quasi-Newton search finds, and the Laplace covariances are the blocks of the inverse of the
    dense Gauss-Newton Hessian J_r' J_r (J_r the Jacobian of the whitened residuals)."""
    rng = np.random.default_rng(1)
    params, seqs, mode_probs = _random_problem(rng, Polynomial(degree=3), lengths=(6,), p=1)
    shape = (seqs.n_steps, 2)
    at, covs, cross_covs, log_det, *_ = laplace.find_mode(params, seqs, mode_probs, np.zeros(shape))
    means = at.path

    def energy(flat):
        return -laplace.log_joint(params, seqs, mode_probs, flat.reshape(shape))

    dense = optimize.minimize(energy, np.zeros(means.size), method="BFGS", options={"gtol": 1e-10})
    np.testing.assert_allclose(means.ravel(), dense.x, atol=1e-5)
    assert -energy(means.ravel()) >= -dense.fun - 1e-9

    def residuals(flat):
        return _residuals(params, seqs, mode_probs, flat.reshape(shape))

    np.testing.assert_allclose(  # the residuals do define f
        0.5 * np.sum(residuals(means.ravel()) ** 2) - 0.5 * np.sum(residuals(dense.x) ** 2),
        energy(means.ravel()) - energy(dense.x),
        atol=1e-9,
    )
    h = 1e-6
    jacobian = np.column_stack(
        [(residuals(means.ravel() + h * e) - residuals(means.ravel() - h * e)) / (2 * h) for e in np.eye(means.size)]
    )
    covariance = np.linalg.inv(jacobian.T @ jacobian)
    for t in range(seqs.n_steps):
        np.testing.assert_allclose(covs[t], covariance[2 * t : 2 * t + 2, 2 * t : 2 * t + 2], atol=1e-6)
        if t:
            np.testing.assert_allclose(cross_covs[t], covariance[2 * t : 2 * t + 2, 2 * t - 2 : 2 * t], atol=1e-6)
    assert log_det == pytest.approx(np.linalg.slogdet(jacobian.T @ jacobian)[1], abs=1e-5)


@pytest.fixture(scope="module")
def oscillators():
    sim = switching_oscillators(500, random_state=1)
    model = NonlinearSwitchingLDS(2, state_dim=2, n_iter=12, random_state=0)
    with pytest.warns(modeshift.models.em.ConvergenceWarning):
        model.fit(sim.observations)
    return sim, model


def test_the_modes_of_switching_oscillators_are_recovered(oscillators):
    sim, model = oscillators
    assert mode_accuracy(sim.modes, model.predict(sim.observations)) > 0.95


def test_with_linear_features_em_never_lowers_its_objective():
    """A linear map makes every step exact (Laplace q(x), q(z), closed-form M-step): the ELBO plus
    log prior cannot fall. (With nonlinear features the flows are linearised at a moving mode:
    only the rise over the fit below is promised.)"""
    y = switching_oscillators(300, random_state=2).observations
    model = NonlinearSwitchingLDS(2, state_dim=2, features=Polynomial(1), n_iter=8, tol=-np.inf, random_state=0)
    with pytest.warns(modeshift.models.em.ConvergenceWarning):
        model.fit(y)
    history = np.array(model.history_)
    assert (np.diff(history) >= -1e-8 * np.abs(history[1:])).all()


def test_with_nonlinear_features_the_objective_rises_over_the_fit(oscillators):
    _, model = oscillators
    assert model.history_[-1] > model.history_[0]


def test_a_state_larger_than_the_observation_is_fitted():
    """Positions only (1-D), a 2-D state: started from a delay embedding in differences, C is
    [1, 0] at first, EM raises its objective, inference from scratch on the training data finds a
    posterior as good as EM's last one (from the least-squares states it found one 160 lower),
    and the fitted model samples and forecasts 1-D observations."""
    position = switching_oscillators(300, random_state=1).observations[:, :1]
    start = NonlinearSwitchingLDS(2, state_dim=2, n_iter=0, random_state=0).fit(position)
    np.testing.assert_array_equal(start.observation_matrix_, [[1.0, 0.0]])
    model = NonlinearSwitchingLDS(2, state_dim=2, n_iter=6, random_state=0)
    with pytest.warns(modeshift.models.em.ConvergenceWarning):
        model.fit(position)
    assert model.observation_matrix_.shape == (1, 2) and model.history_[-1] > model.history_[0]
    assert model.elbo(position) > model.history_[-1] - model._log_prior() - 1.0
    assert model.sample(10, random_state=0)[0].shape == (10, 1)
    assert model.forecast(position, 4).means.shape == (4, 1)
    assert np.shape(model.smooth(position)) == (300, 2)


@pytest.mark.slow
def test_modes_of_oscillators_seen_through_their_position_alone():
    """2,000 steps of position, a 2-D state: the modes match the truth on more than 0.9 of the
    steps, at least as well as the feature ARHMM on 2 lags that proposes the start (0.885 here;
    the start on 1 lag, a position without its velocity, led EM to 0.51)."""
    sim = switching_oscillators(2000, random_state=0)
    position = sim.observations[:, :1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", modeshift.models.em.ConvergenceWarning)
        model = NonlinearSwitchingLDS(2, state_dim=2, random_state=0).fit(position)
    arhmm = modeshift.ARHMM(2, order=2, features="polynomial", random_state=0).fit(position)
    accuracy = mode_accuracy(sim.modes, model.predict(position))
    assert accuracy > 0.9
    assert accuracy >= mode_accuracy(sim.modes, arhmm.predict(position))


def test_save_then_load_gives_the_same_predictions(oscillators, tmp_path):
    sim, model = oscillators
    model.save(tmp_path / "model.msz")
    loaded = modeshift.load(tmp_path / "model.msz")
    y = sim.observations[:200]
    np.testing.assert_array_equal(loaded.predict(y), model.predict(y))
    np.testing.assert_allclose(loaded.forecast(y, 3).means, model.forecast(y, 3).means)
    assert loaded.elbo(y) == pytest.approx(model.elbo(y), rel=1e-12)


def test_a_one_step_forecast_follows_the_flow(oscillators):
    """From the end of the data, the one-step predictive mean is the mode-weighted flow of the
    posterior state to within the noise's scale (and the mode probabilities are q(z_T) P)."""
    sim, model = oscillators
    y = sim.observations[:300]
    forecast = model.forecast(y, 1)
    assert np.abs(forecast.means[0] - sim.observations[300]).max() < 0.05
    np.testing.assert_allclose(forecast.mode_probabilities[0].sum(), 1.0)


def test_bad_features_and_data_are_clear_errors():
    y = switching_oscillators(100, random_state=0).observations
    with pytest.raises(ValueError, match="features must be one of"):
        NonlinearSwitchingLDS(features="splines", n_iter=1).fit(y)
    with pytest.raises(ValueError, match="NonlinearSwitchingLDS: state_dim must be"):
        NonlinearSwitchingLDS(state_dim=0).fit(y)
    _, fitted = 0, NonlinearSwitchingLDS(n_iter=0, random_state=0).fit(y)
    with pytest.raises(ValueError, match="feature"):
        fitted.predict(np.ones((20, 3)))


def test_missing_values_and_several_sequences():
    """Missing entries (a coordinate, then whole steps) are integrated out: the modes are still found,
    and the posterior state is finite everywhere; several sequences give one result each."""
    sim = switching_oscillators(500, random_state=1)
    y = sim.observations.copy()
    y[100:110, 0], y[200:205] = np.nan, np.nan
    model = NonlinearSwitchingLDS(2, state_dim=2, n_iter=4, random_state=0)
    with pytest.warns(modeshift.models.em.ConvergenceWarning):
        model.fit(y)
    assert mode_accuracy(sim.modes, model.predict(y)) > 0.95
    assert np.isfinite(model.smooth(y)).all()
    paths = model.predict([sim.observations[:200], sim.observations[200:]])
    assert [len(path) for path in paths] == [200, 300]
    assert len(model.forecast([y[:150], y[300:]], 2).means) == 2


_INPUT_EFFECTS = np.array([[[0.0], [0.03]], [[0.03], [0.0]]])  # B_k (2, 1) of each mode


def _driven_oscillators(n_steps, seed, dt=0.05):
    """The switching oscillators (Van der Pol, then Duffing) kicked by a scalar input u_t ~ N(0, 1):
    x_t = x_t-1 + dt f_k(x_t-1) + B_k u_t + N(0, 0.01^2), B_0 pushing the velocity, B_1 the
    position; observed without noise. Returns observations, modes and inputs."""
    rng = np.random.default_rng(seed)
    x, k = np.array([1.0, 0.0]), 0
    inputs = rng.normal(size=(n_steps, 1))
    states, modes = np.empty((n_steps, 2)), np.empty(n_steps, dtype=int)
    for t in range(n_steps):
        k = 1 - k if rng.random() < 0.005 else k
        p, v = x
        a = 2.0 * (1 - p**2) * v - p if k == 0 else -0.2 * v + p - p**3
        x = x + dt * np.array([v, a]) + _INPUT_EFFECTS[k] @ inputs[t] + 0.01 * rng.normal(size=2)
        states[t], modes[t] = x, k
    return states, modes, inputs


@pytest.fixture(scope="module")
def driven():
    y, modes, inputs = _driven_oscillators(1500, seed=0)
    model = NonlinearSwitchingLDS(2, state_dim=2, input_dim=1, n_iter=15, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", modeshift.models.em.ConvergenceWarning)
        model.fit(y, inputs=inputs)
    return y, modes, inputs, model


def test_a_fit_recovers_each_modes_input_effect(driven):
    """The state's basis is arbitrary, but the input's effect on y_t, C B_k + D, is not: it is the
    true B_k of the matched mode to within 10 %, and D, which the data do not have, is near 0."""
    y, modes, inputs, model = driven
    found = model.predict(y, inputs=inputs)
    assert mode_accuracy(modes, found) > 0.95
    truth = match_modes(modes, found)
    effects = model.observation_matrix_ @ model.flow_input_matrices_ + model.feedthrough_matrix_
    for k in range(2):
        np.testing.assert_allclose(effects[k], _INPUT_EFFECTS[truth[k]], atol=0.003)
    assert np.abs(model.feedthrough_matrix_).max() < 0.003


def test_a_forecast_moves_with_the_future_inputs(driven):
    """The same paths (one seed) under two future inputs differ by B_z u in the state: the one-step
    mean moves by (C sum_k q_k B_k + D) du, q the forecast's mode probabilities."""
    y, _, inputs, model = driven
    low = model.forecast(y[:400], 1, inputs=inputs[:400], future_inputs=np.zeros((1, 1)))
    high = model.forecast(y[:400], 1, inputs=inputs[:400], future_inputs=np.ones((1, 1)))
    q = high.mode_probabilities[0]
    shift = (
        model.observation_matrix_ @ np.einsum("k,knm->nm", q, model.flow_input_matrices_) + model.feedthrough_matrix_
    )
    np.testing.assert_allclose(high.means[0] - low.means[0], shift[:, 0], atol=2e-3)


def test_save_then_load_keeps_the_input_matrices(driven, tmp_path):
    y, _, inputs, model = driven
    model.save(tmp_path / "model.msz")
    loaded = modeshift.load(tmp_path / "model.msz")
    assert loaded.input_dim == 1
    np.testing.assert_array_equal(loaded.flow_input_matrices_, model.flow_input_matrices_)
    np.testing.assert_array_equal(loaded.feedthrough_matrix_, model.feedthrough_matrix_)
    y, u = y[:200], inputs[:200]
    np.testing.assert_array_equal(loaded.predict(y, inputs=u), model.predict(y, inputs=u))
    assert loaded.elbo(y, inputs=u) == pytest.approx(model.elbo(y, inputs=u), rel=1e-12)
    future = np.ones((3, 1))
    np.testing.assert_allclose(
        loaded.forecast(y, 3, inputs=u, future_inputs=future).means,
        model.forecast(y, 3, inputs=u, future_inputs=future).means,
    )


def test_sampling_with_inputs(driven):
    """``sample`` reads one input array for every sequence, or one per sequence; the number of
    free parameters counts B_k and D."""
    _, _, inputs, model = driven
    y, modes = model.sample(20, random_state=0, inputs=inputs[:20])
    assert y.shape == (20, 2) and modes.shape == (20,)
    ys, _ = model.sample(20, n_sequences=2, random_state=0, inputs=[inputs[:20], inputs[20:40]])
    assert [part.shape for part in ys] == [(20, 2), (20, 2)]
    plain = NonlinearSwitchingLDS(2, state_dim=2)
    plain.__dict__.update({name: model.__dict__[name] for name in (*plain.parameter_names, "feature_map_")})
    assert model.n_parameters - plain.n_parameters == 2 * 2 * 1 + 2 * 1


def test_missing_or_bad_inputs_are_clear_errors(driven):
    y, _, inputs, model = driven
    y, u = y[:50], inputs[:50]
    with pytest.raises(ValueError, match="input_dim=1: pass inputs"):
        NonlinearSwitchingLDS(input_dim=1, n_iter=1).fit(y)
    with pytest.raises(ValueError, match="inputs were given but this NonlinearSwitchingLDS has input_dim=0"):
        NonlinearSwitchingLDS(n_iter=1).fit(y, inputs=u)
    with pytest.raises(ValueError, match="NonlinearSwitchingLDS: input_dim must be"):
        NonlinearSwitchingLDS(input_dim=-1).fit(y)
    with pytest.raises(ValueError, match="input_dim=1: pass inputs"):
        model.predict(y)
    with pytest.raises(ValueError, match=r"inputs must have 1 column\(s\)"):
        model.smooth(y, inputs=np.ones((50, 2)))
    bad = u.copy()
    bad[7] = np.nan
    with pytest.raises(ValueError, match="time step 7: non-finite input"):
        model.elbo(y, inputs=bad)
    with pytest.raises(ValueError, match="pass future_inputs"):
        model.forecast(y, 2, inputs=u)
    with pytest.raises(ValueError, match="future_inputs for sequence 0"):
        model.forecast(y, 2, inputs=u, future_inputs=np.ones((3, 1)))
    with pytest.raises(ValueError, match="pass inputs"):
        model.sample(5)


def test_with_linear_features_an_em_iteration_is_the_switching_lds_one():
    """With inputs, a linear map and no ridge, one EM iteration (a sweep of q(x), q(z) from the same
    posterior, then the M-step) gives the SwitchingLDS's objective and its new parameters, once
    W_k on (x - location) / scale is read as A_k = W_k / scale, b_k - A_k location."""
    y, _, inputs = _driven_oscillators(200, seed=1)
    model = NonlinearSwitchingLDS(2, state_dim=2, input_dim=1, features=Polynomial(1), ridge=0.0, n_iter=0)
    model.fit(y, inputs=inputs)
    location, scale = model.feature_map_.location_, model.feature_map_.scale_

    def affine(nonlinear):
        A = nonlinear.flow_weights_ / scale
        return A, nonlinear.flow_offsets_ - A @ location

    reference = modeshift.SwitchingLDS(2, state_dim=2, input_dim=1)
    reference.dynamics_matrices_, reference.dynamics_offsets_ = affine(model)
    names = ("observation_matrix_", "observation_offset_", "observation_covariance_", "feedthrough_matrix_")
    names += ("initial_state_mean_", "initial_state_covariance_", "startprob_", "transmat_")
    for name in names:
        setattr(reference, name, np.array(getattr(model, name)))
    reference.dynamics_input_matrices_ = model.flow_input_matrices_.copy()
    reference.dynamics_covariances_ = model.flow_covariances_.copy()
    seqs = reference._sequences(y, None, inputs)
    start = slds_inference.sweep(reference._parameters(seqs), seqs, np.full((len(y), 2), 0.5))
    values = []
    for fitted in (model, reference):
        value, stats = fitted._e_step(seqs, {"posterior": start})
        fitted._m_step(seqs, stats)
        values.append(value)
    assert values[0] == pytest.approx(values[1], rel=1e-10)
    for got, want in zip(affine(model), (reference.dynamics_matrices_, reference.dynamics_offsets_)):
        np.testing.assert_allclose(got, want, atol=1e-8)
    np.testing.assert_allclose(model.flow_input_matrices_, reference.dynamics_input_matrices_, atol=1e-8)
    np.testing.assert_allclose(model.flow_covariances_, reference.dynamics_covariances_, atol=1e-10)
    for name in names:
        np.testing.assert_allclose(getattr(model, name), getattr(reference, name), atol=1e-8)
