"""SwitchingLDS: exactness with one mode, monotone ELBO, recovery of modes and guards."""

import numpy as np
import pytest

from modeshift.datasets.simulators import nascar, switching_spirals, thermostat
from modeshift.metrics import match_modes, mode_accuracy
from modeshift.models.base import load
from modeshift.models.lds import LinearGaussianSSM
from modeshift.models.slds import SwitchingLDS


def _one_mode_pair(rng, with_inputs):
    """The same one-mode model as a LinearGaussianSSM and as a SwitchingLDS. With inputs, the
    SSM's inputs are [u, 1], so the last columns of its B and D are the SLDS's offsets b, d."""
    n, p, m = 2, 3, int(with_inputs)
    A = np.array([[0.9, 0.2], [-0.1, 0.8]])
    Q = np.array([[0.2, 0.05], [0.05, 0.1]])
    C = rng.normal(size=(p, n))
    R = 0.3 * np.eye(p) + 0.05
    m0, P0 = np.array([0.5, -0.2]), np.array([[1.0, 0.2], [0.2, 0.5]])
    B, D = rng.normal(size=(n, m + 1)), rng.normal(size=(p, m + 1))
    lds = LinearGaussianSSM(state_dim=n, input_dim=m + 1 if with_inputs else 0)
    lds.transition_matrix_, lds.transition_covariance_ = A, Q
    lds.observation_matrix_, lds.observation_covariance_ = C, R
    lds.initial_state_mean_, lds.initial_state_covariance_ = m0, P0
    if with_inputs:
        lds.control_matrix_, lds.feedthrough_matrix_ = B, D
    slds = SwitchingLDS(n_states=1, state_dim=n, input_dim=m)
    slds.dynamics_matrices_, slds.dynamics_covariances_ = A[None], Q[None]
    slds.dynamics_input_matrices_ = B[None, :, :m]
    slds.dynamics_offsets_ = B[None, :, m] if with_inputs else np.zeros((1, n))
    slds.observation_matrix_, slds.observation_covariance_ = C, R
    slds.feedthrough_matrix_ = D[:, :m]
    slds.observation_offset_ = D[:, m] if with_inputs else np.zeros(p)
    slds.initial_state_mean_, slds.initial_state_covariance_ = m0, P0
    slds.startprob_, slds.transmat_ = np.ones(1), np.ones((1, 1))
    return lds, slds


def _punch_holes(Y, rng):
    """Y with whole steps and single entries missing (NaN), the first step of a sequence included."""
    Y = Y.copy()
    Y[rng.random(len(Y)) < 0.1] = np.nan
    Y[rng.random(Y.shape) < 0.15] = np.nan
    Y[0, 1] = np.nan
    return Y


@pytest.mark.parametrize("with_inputs, missing", [(False, False), (True, False), (False, True), (True, True)])
def test_one_mode_is_the_kalman_smoother_and_the_elbo_is_exact(with_inputs, missing):
    rng = np.random.default_rng(0)
    lds, slds = _one_mode_pair(rng, with_inputs)
    u = rng.normal(size=(100, 1))
    lds_inputs = np.hstack([u, np.ones((100, 1))]) if with_inputs else None
    slds_inputs = u if with_inputs else None
    Y = np.concatenate(
        [
            lds.sample(60, random_state=1, inputs=None if lds_inputs is None else lds_inputs[:60])[0],
            lds.sample(40, random_state=2, inputs=None if lds_inputs is None else lds_inputs[60:])[0],
        ]
    )
    if missing:  # the Kalman smoother integrates the missing entries out exactly
        Y = _punch_holes(Y, rng)
        assert np.isnan(Y).all(axis=1).any() and (np.isnan(Y).any(axis=1) & ~np.isnan(Y).all(axis=1)).any()
    lengths = [60, 40]
    exact = lds.smooth(Y, lengths, inputs=lds_inputs)
    posterior = slds._infer(slds._sequences(Y, lengths, slds_inputs))
    np.testing.assert_allclose(posterior.means, exact.means, atol=1e-8)
    np.testing.assert_allclose(posterior.covs, exact.covariances, atol=1e-8)
    np.testing.assert_allclose(posterior.cross_covs, exact.cross_covariances, atol=1e-8)
    log_likelihood = lds.score(Y, lengths, inputs=lds_inputs)
    assert posterior.elbo == pytest.approx(log_likelihood, abs=1e-6)
    assert slds.score(Y, lengths, inputs=slds_inputs) == pytest.approx(log_likelihood, abs=1e-6)
    assert np.allclose(slds.smooth(Y, lengths, inputs=slds_inputs), exact.means)


def test_fit_with_inputs_runs_and_samples():
    rng = np.random.default_rng(4)
    _, truth = _one_mode_pair(rng, True)
    u = rng.normal(size=(300, 1))
    Y, states, modes = truth.sample(300, random_state=0, inputs=u)
    model = SwitchingLDS(n_states=2, state_dim=2, input_dim=1, recurrent=True, n_iter=10, random_state=0)
    model.fit(Y, inputs=u)
    assert model.dynamics_input_matrices_.shape == (2, 2, 1) and model.input_weights_.shape == (2, 1)
    assert np.isfinite(model.elbo_history_).all()
    assert model.sample(20, random_state=0, inputs=u[:20])[0].shape == (20, 3)


def test_elbo_never_decreases_without_recurrence():
    sim = switching_spirals(400, random_state=3, n_modes=2, obs_dim=4)
    model = SwitchingLDS(n_states=2, state_dim=2, n_iter=25, tol=0.0, reg_covar=0.0, random_state=0)
    model.fit(sim.observations)
    steps = np.diff(model.elbo_history_)
    assert len(model.elbo_history_) == 25
    assert steps.min() > -1e-6 * abs(model.elbo_history_[-1])
    assert mode_accuracy(sim.modes, model.predict(sim.observations)) > 0.8


def test_missing_values_keep_the_elbo_monotone_and_the_modes():
    sim = switching_spirals(400, random_state=3, n_modes=2, obs_dim=4)
    Y = _punch_holes(sim.observations, np.random.default_rng(5))
    model = SwitchingLDS(n_states=2, state_dim=2, n_iter=25, tol=0.0, reg_covar=0.0, random_state=0).fit(Y)
    steps = np.diff(model.elbo_history_)
    assert steps.min() > -1e-6 * abs(model.elbo_history_[-1])
    assert mode_accuracy(sim.modes, model.predict(Y)) > 0.8
    assert np.isfinite(model.score(Y)) and not np.isnan(model.smooth(Y)).any()


@pytest.mark.parametrize("missing", [False, True])
def test_observation_m_step(missing):
    """With q fixed, the M-step of C, D, d, R raises the observations' part of the ELBO. On
    complete data it is the exact maximiser: perturbing its result can only lower that part.
    With missing entries it is an EM step for them (their statistics under the current
    parameters), so from a perturbed start it must still raise it."""
    sim = switching_spirals(300, random_state=2, n_modes=2, obs_dim=3)
    Y = _punch_holes(sim.observations, np.random.default_rng(1)) if missing else sim.observations
    model = SwitchingLDS(n_states=2, state_dim=2, n_iter=5, random_state=0).fit(Y)
    seqs = model._sequences(Y, None, None)
    posterior = model._infer(seqs)

    def state_terms() -> float:
        return model._state_terms(seqs, posterior.means, posterior.covs, 0.0)

    names = ("observation_matrix_", "observation_offset_", "observation_covariance_")
    rng = np.random.default_rng(0)
    for name in names:  # a start away from the optimum
        value = getattr(model, name)
        step = 0.05 * rng.normal(size=value.shape)
        setattr(model, name, value + (step @ step.T if name == "observation_covariance_" else step))
    before = state_terms()
    model._maximize(seqs, posterior)
    best = state_terms()
    assert best > before
    if missing:
        return
    for name in names:
        value = getattr(model, name)
        for _ in range(3):
            step = 1e-3 * rng.normal(size=value.shape)
            setattr(model, name, value + (step + step.T if name == "observation_covariance_" else step))
            assert state_terms() < best + 1e-9
        setattr(model, name, value)


def test_transition_term_enters_the_states_by_its_exact_gradient_and_curvature():
    """q(x) of a recurrent model takes the term sum_ij xi_ij log p(z_t = j | z_t-1 = i, x_t-1) by
    its expansion at the previous E[x_t-1]: gradient and curvature against finite differences."""
    sim = nascar(300, random_state=3)
    model = SwitchingLDS(n_states=4, state_dim=2, recurrent=True, n_iter=3, random_state=0).fit(sim.observations)
    seqs = model._sequences(sim.observations, None, None)
    posterior = model._infer(seqs)
    rows, curvature, linear = model._transition_curvature(seqs, posterior)
    W, r = model.recurrence_weights_, model.recurrence_biases_

    def term(t, x):  # no inputs here, so the logits are r_ij + w_j . x
        logits = r + W @ x
        log_switch = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        return float((posterior.pair_counts[t] * log_switch).sum())

    h = 1e-4
    for index in (0, 57, 211):
        t, m = rows[index], posterior.means[rows[index] - 1]
        steps = h * np.eye(2)
        gradient = np.array([(term(t, m + e) - term(t, m - e)) / (2 * h) for e in steps])
        hessian = np.array(
            [[(term(t, m + a + b) - term(t, m + a - b) - term(t, m - a + b) + term(t, m - a - b)) / (4 * h * h)
              for b in steps] for a in steps]
        )  # fmt: skip
        np.testing.assert_allclose(linear[index] - curvature[index] @ m, gradient, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(curvature[index], -hessian, rtol=1e-4, atol=1e-6)
        assert np.linalg.eigvalsh(curvature[index]).min() >= -1e-12  # concave term: a valid precision


def _thermostat_guards(seed):
    sim = thermostat(2000, random_state=seed)
    model = SwitchingLDS(n_states=2, state_dim=1, recurrent=True, random_state=seed).fit(sim.observations)
    predicted = model.predict(sim.observations)
    accuracy = mode_accuracy(sim.modes, predicted)
    heating, cooling = (int(np.flatnonzero(match_modes(sim.modes, predicted) == k)[0]) for k in (0, 1))
    W, r = model.recurrence_weights_[:, 0], model.recurrence_biases_
    C, d = model.observation_matrix_[0, 0], model.observation_offset_[0]
    # p(leave i for j | x) = 1/2 where (w_j - w_i) x + r_ij - r_ii = 0; then y = C x + d
    high = C * -(r[heating, cooling] - r[heating, heating]) / (W[cooling] - W[heating]) + d
    low = C * -(r[cooling, heating] - r[cooling, cooling]) / (W[heating] - W[cooling]) + d
    return sim, accuracy, high, low


def test_thermostat_guards_are_recovered():
    sim, accuracy, high, low = _thermostat_guards(0)
    assert accuracy >= 0.9
    assert abs(high - sim.parameters["high"]) <= 0.1 * sim.parameters["high"]
    assert abs(low - sim.parameters["low"]) <= 0.1 * sim.parameters["low"]


def _nascar_accuracy(seed, n_restarts=1):
    sim = nascar(2000, random_state=seed)
    model = SwitchingLDS(n_states=4, state_dim=2, recurrent=True, n_restarts=n_restarts, random_state=seed)
    model.fit(sim.observations)
    return mode_accuracy(sim.modes, model.predict(sim.observations))


def test_nascar_one_seed():
    assert _nascar_accuracy(1) >= 0.9


@pytest.mark.slow
def test_nascar_modes_over_five_seeds():
    # the ELBO has poor local optima (one seed in five lands in one with one restart);
    # the restart with the largest final ELBO is also the one that finds the laps
    accuracies = [_nascar_accuracy(seed, n_restarts=3) for seed in range(5)]
    assert np.mean(accuracies) >= 0.9, accuracies


@pytest.mark.slow
@pytest.mark.parametrize("simulate,true_modes,state_dim", [(nascar, 4, 2), (thermostat, 2, 1)])
def test_auto_picks_the_true_number_of_modes_on_four_of_five_seeds(simulate, true_modes, state_dim):
    chosen = []
    for seed in range(5):
        sim = simulate(1000, random_state=seed)
        model = SwitchingLDS(
            n_states="auto", state_dim=state_dim, recurrent=True, max_states=6, n_iter=20, random_state=seed
        )
        chosen.append(model.fit(sim.observations).n_states_)
    assert chosen.count(true_modes) >= 4, chosen


def test_auto_on_the_thermostat_and_segments():
    sim = thermostat(800, random_state=0)
    model = SwitchingLDS(n_states="auto", state_dim=1, recurrent=True, max_states=3, n_iter=15, random_state=0)
    model.fit(sim.observations)
    assert model.n_states_ == 2 and model.selection_["chosen"].tolist() == [False, True, False]
    table = model.segment(sim.observations)
    path = model.predict(sim.observations)
    np.testing.assert_array_equal(np.repeat(table["mode"], table["end"] - table["start"]), path)
    assert table["probability"].between(0.5, 1.0).all()


def test_save_load_round_trip_and_sampling(tmp_path):
    sim = switching_spirals(300, random_state=1, n_modes=2, obs_dim=3)
    model = SwitchingLDS(n_states=2, state_dim=2, recurrent=True, n_iter=5, random_state=0).fit(sim.observations)
    path = tmp_path / "slds.npz"
    model.save(path)
    loaded = load(path)
    assert isinstance(loaded, SwitchingLDS)
    for name in model.parameter_names:
        np.testing.assert_array_equal(getattr(loaded, name), getattr(model, name))
    assert loaded.elbo_history_ == model.elbo_history_
    np.testing.assert_array_equal(loaded.predict(sim.observations), model.predict(sim.observations))
    observations, states, modes = loaded.sample(50, random_state=0)
    assert observations.shape == (50, 3) and states.shape == (50, 2) and modes.shape == (50,)
    table = loaded.describe()
    assert list(table.columns) == ["dwell_time", "eigenvalues", "offset", "entry_weights", "entry_biases"]
    assert loaded.n_parameters > 0 and np.isfinite(loaded.bic(sim.observations))


def test_bad_inputs_are_named():
    sim = switching_spirals(100, random_state=1, n_modes=2, obs_dim=3)
    Y = sim.observations
    model = SwitchingLDS(n_states=2, state_dim=2, n_iter=2, random_state=0).fit(Y)
    with pytest.raises(ValueError, match="expects 3 feature"):
        model.predict(Y[:, :2])
    u = np.ones((100, 1))
    u[7] = np.nan
    with pytest.raises(ValueError, match="sequence 0, time step 7: non-finite input"):
        SwitchingLDS(n_states=2, input_dim=1).fit(Y, inputs=u)
    blank = Y.copy()
    blank[:, 2] = np.nan
    with pytest.raises(ValueError, match="feature 2 is never observed"):
        SwitchingLDS(n_states=2, state_dim=2).fit(blank)
    blank[50:] = np.nan
    with pytest.raises(ValueError, match="sequence 1 has no observed value"):
        SwitchingLDS(n_states=2, state_dim=2).fit(blank, lengths=[50, 50])
    with pytest.raises(ValueError, match="sequence 1 has 1 time step"):
        model.predict(Y[:11], lengths=[10, 1])
    with pytest.raises(ValueError, match="input_dim=0"):
        model.predict(Y, inputs=np.ones((100, 1)))
    with pytest.raises(ValueError, match="inputs must have 2 column"):
        SwitchingLDS(n_states=2, input_dim=2).fit(Y, inputs=np.ones((100, 1)))
    with pytest.raises(ValueError, match="n_states must be"):
        SwitchingLDS(n_states=0)


def test_fit_continues_from_parameters_already_set():
    sim = switching_spirals(400, random_state=3)
    model = SwitchingLDS(n_states=2, state_dim=2, n_iter=10, tol=-np.inf, reg_covar=0.0, random_state=0)
    model.fit(sim.observations)
    first = model.elbo_history_
    model.fit(sim.observations)
    # q(z) restarts from uniform, so the ELBO dips below where the first fit ended, but the
    # parameters carry over: far above a fresh start, and further up after ten more iterations
    assert model.elbo_history_[0] > first[0] + 0.5 * (first[-1] - first[0])
    assert model.elbo_history_[-1] > first[-1]
