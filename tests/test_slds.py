"""SwitchingLDS: exactness with one mode, monotone ELBO, recovery of modes and guards."""

import numpy as np
import pytest

from modeshift.datasets.simulators import bouncing_ball, nascar, switching_spirals, thermostat
from modeshift.metrics import match_modes, mode_accuracy
from modeshift.models import em
from modeshift.models import slds_inference as inference
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
    lds.dynamics_matrix_, lds.transition_covariance_ = A, Q
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
    assert slds.elbo(Y, lengths, inputs=slds_inputs) == pytest.approx(log_likelihood, abs=1e-6)
    assert np.allclose(slds.smooth(Y, lengths, inputs=slds_inputs), exact.means)


def test_fit_with_inputs_runs_and_samples():
    rng = np.random.default_rng(4)
    _, truth = _one_mode_pair(rng, True)
    u = rng.normal(size=(300, 1))
    Y, modes = truth.sample(300, random_state=0, inputs=u)
    model = SwitchingLDS(n_states=2, state_dim=2, input_dim=1, recurrent=True, n_iter=10, random_state=0)
    model.fit(Y, inputs=u)
    assert model.dynamics_input_matrices_.shape == (2, 2, 1) and model.input_weights_.shape == (2, 1)
    assert np.isfinite(model.history_).all()
    assert model.sample(20, random_state=0, inputs=u[:20])[0].shape == (20, 3)


@pytest.mark.parametrize("lengths", [(200, 200), (150, 250)])
def test_several_sequences_fit_from_scratch(lengths):
    """The start (a one-mode smoother, then an ARHMM on its states) reads every sequence."""
    sims = [thermostat(n, random_state=seed) for seed, n in enumerate(lengths)]
    model = SwitchingLDS(n_states=2, state_dim=1, n_iter=5, random_state=0)
    with pytest.warns(em.ConvergenceWarning):
        model.fit([sim.observations for sim in sims])
    assert [len(path) for path in model.predict([sim.observations for sim in sims])] == list(lengths)


def test_elbo_never_decreases_without_recurrence():
    sim = switching_spirals(400, random_state=3, n_modes=2, obs_dim=4)
    model = SwitchingLDS(n_states=2, state_dim=2, n_iter=25, tol=0.0, reg_covar=0.0, random_state=0)
    model.fit(sim.observations)
    steps = np.diff(model.history_)
    assert len(model.history_) == 25
    assert steps.min() > -1e-6 * abs(model.history_[-1])
    assert mode_accuracy(sim.modes, model.predict(sim.observations)) > 0.8


def test_missing_values_keep_the_elbo_monotone_and_the_modes():
    sim = switching_spirals(400, random_state=3, n_modes=2, obs_dim=4)
    Y = _punch_holes(sim.observations, np.random.default_rng(5))
    model = SwitchingLDS(n_states=2, state_dim=2, n_iter=25, tol=0.0, reg_covar=0.0, random_state=0).fit(Y)
    steps = np.diff(model.history_)
    assert steps.min() > -1e-6 * abs(model.history_[-1])
    assert mode_accuracy(sim.modes, model.predict(Y)) > 0.8
    assert np.isfinite(model.elbo(Y)) and not np.isnan(model.smooth(Y)).any()


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
        return float(inference.state_terms(model._parameters(), seqs, posterior.means, posterior.covs, 0.0).sum())

    names = ("observation_matrix_", "observation_offset_", "observation_covariance_")
    rng = np.random.default_rng(0)
    for name in names:  # a start away from the optimum
        value = getattr(model, name)
        step = 0.05 * rng.normal(size=value.shape)
        setattr(model, name, value + (step @ step.T if name == "observation_covariance_" else step))
    before = state_terms()
    model._maximize(model._statistics(seqs, posterior, posterior.mode_probs))
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
    rows, curvature, linear = inference.transition_curvature(model._parameters(), seqs, posterior)
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
    model = SwitchingLDS(n_states=2, state_dim=1, recurrent=True, n_iter=50, random_state=seed).fit(sim.observations)
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


def _nascar_accuracy(seed):
    sim = nascar(1000, random_state=seed)  # the length of the five-seed check; 2000 steps cost 1.7 times as much
    model = SwitchingLDS(n_states=4, state_dim=2, recurrent=True, n_iter=50, random_state=seed)
    model.fit(sim.observations)
    return mode_accuracy(sim.modes, model.predict(sim.observations))


def test_nascar_one_seed():
    assert _nascar_accuracy(1) >= 0.9


def test_on_long_data_the_start_learns_from_pieces_spread_over_them(monkeypatch):
    """The start's ARHMMs see at most START_STEPS steps (here 500 of 1000, pieces 0 and 2 of 250),
    and still find the four sections of NASCAR (its q(z) and ranking are of all the data). Measured
    on seeds 0-4: 0.93-0.98, mean 0.954, against 0.967 from all the data; pieces of 100 or 50 steps
    give 0.86 and 0.80 (too short for the laps: pieces on long data have 1,000 steps)."""
    import modeshift.models.slds as slds

    seen = []
    fit = slds.ARHMM.fit
    monkeypatch.setattr(slds, "START_STEPS", 500)
    monkeypatch.setattr(slds, "START_PIECE", 250)
    monkeypatch.setattr(slds.ARHMM, "fit", lambda self, X, lengths: seen.append(list(lengths)) or fit(self, X, lengths))
    assert _nascar_accuracy(1) >= 0.9
    assert seen and all(lengths == [250, 250] for lengths in seen)


@pytest.mark.slow
def test_nascar_modes_over_five_seeds():
    # the ELBO has poor local optima: with the start an ARHMM of the fully smoothed states
    # proposed, seed 0 landed in one (accuracy 0.53, mean 0.89); the start is now chosen by the
    # ELBO among proposals from states smoothed less as well (issue 18: at least 0.95)
    accuracies = []
    for seed in range(5):
        sim = nascar(1000, random_state=seed)
        model = SwitchingLDS(n_states=4, state_dim=2, recurrent=True, random_state=seed).fit(sim.observations)
        accuracies.append(mode_accuracy(sim.modes[1:], model.predict(sim.observations)[1:]))
    assert np.mean(accuracies) >= 0.95 and min(accuracies) >= 0.9, accuracies


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


def test_state_dim_above_obs_dim_recovers_the_modes():
    """Spirals seen through one observation: the subspace start finds the 2-D state (a PCA
    start, which sees one direction, cannot)."""
    sim = switching_spirals(600, random_state=1, obs_dim=1)
    model = SwitchingLDS(n_states=2, state_dim=2, n_iter=200, random_state=1).fit(sim.observations)
    assert mode_accuracy(sim.modes, model.predict(sim.observations)) >= 0.95


def test_inference_from_scratch_is_not_pinned_by_a_tiny_covariance():
    """An over-complete fit (4 modes for 2) leaves one mode with a tiny Q_k; inference on new
    data started only from uniform modes lets that mode pin q(x) (on seed 3 before the subspace
    start joined the SwitchingLDS start, ELBO -949 against 1,034 in the fit's record; with it, seed
    3's fit leaves no tiny Q_k, so seed 1); the second start (the Q_k replaced by their mean) keeps
    it near the record. (Not on every seed: 1,100 to 25,000 below the record on five of seeds 0-7.)"""
    sim = switching_spirals(1000, random_state=1)
    model = SwitchingLDS(n_states=4, state_dim=2, n_iter=20, random_state=1).fit(sim.observations)
    assert np.linalg.eigvalsh(model.dynamics_covariances_).min() < 1e-2 * model.dynamics_covariances_.max()
    assert model.elbo(sim.observations) > model.history_[-1] - 1000.0


def _ball(seed, n_steps=600, n_iter=50):
    sim = bouncing_ball(n_steps, random_state=seed)
    model = SwitchingLDS(n_states=2, state_dim=2, n_iter=n_iter, random_state=seed).fit(sim.observations)
    return sim, model


def test_bouncing_ball_fits_with_a_2d_state_from_its_height():
    """Height and velocity from the height alone: a linear map of E[x] explains the true height."""
    sim, model = _ball(0)
    states = np.column_stack([model.smooth(sim.observations), np.ones(len(sim.states))])
    residual = np.linalg.lstsq(states, sim.states, rcond=None)[1]
    explained = 1 - residual / ((sim.states - sim.states.mean(0)) ** 2).sum(0)
    assert explained[0] > 0.99 and explained[1] > 0.7, explained
    assert model.dynamics_matrices_.shape == (2, 2, 2) and model.observation_matrix_.shape == (1, 2)


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="the ELBO prefers a mode for the few steps around each bounce (measured 0.78-0.91) to the "
    "one-step impact: a fit started from the true segmentation ends at a lower ELBO; an impact is a reset "
    "(SwitchingLDS(resets=...), tests/test_slds_resets.py). Predicting no impact at all scores 0.982",
)
def test_bouncing_ball_modes_over_five_seeds():
    accuracies = []
    for seed in range(5):
        sim, model = _ball(seed, 1000, 300)
        accuracies.append(mode_accuracy(sim.modes, model.predict(sim.observations)))
    assert np.mean(accuracies) >= 0.95, accuracies


_PRUNE_CASES = {
    "thermostat": (thermostat, 2, 1, True),
    "nascar": (nascar, 4, 2, True),
    "spirals": (switching_spirals, 2, 2, False),
}


def _pruned_choice(name, seed, max_states=6):
    simulate, _, state_dim, recurrent = _PRUNE_CASES[name]
    sim = simulate(1000, random_state=seed)
    model = SwitchingLDS(
        n_states="auto",
        state_dim=state_dim,
        recurrent=recurrent,
        max_states=max_states,
        n_iter=20,
        selection="prune",
        random_state=seed,
    )
    return model.fit(sim.observations)


def test_pruning_from_five_modes_finds_the_four_sections_of_nascar(tmp_path):
    """Fits from scratch choose 1 mode on this seed (their K = 4 fit stalls at a lower ELBO); the
    candidate pruned from the over-complete fit has all four sections. (From six modes the table
    below 6 is the same, at 1.5 times the cost; with T = 800 steps instead of 1000 the choice is 2.)"""
    model = _pruned_choice("nascar", 0, max_states=5)
    table = model.selection_
    assert model.n_states_ == 4 and table["n_states"].tolist() == [5, 4, 3, 2, 1]
    assert table.loc[table["n_states"] == 4, "start"].item() == "pruned"
    assert {"elbo", "bic", "smallest_occupancy", "vanished", "start", "chosen"} <= set(table.columns)
    model.save(tmp_path / "pruned.msz")
    assert load(tmp_path / "pruned.msz").selection_.equals(table)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(_PRUNE_CASES))
def test_pruning_picks_the_true_number_of_modes_on_four_of_five_seeds(name):
    chosen = [_pruned_choice(name, seed).n_states_ for seed in range(5)]
    assert chosen.count(_PRUNE_CASES[name][1]) >= 4, chosen


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
    assert loaded.history_ == model.history_
    np.testing.assert_array_equal(loaded.predict(sim.observations), model.predict(sim.observations))
    observations, modes = loaded.sample(50, random_state=0)
    assert observations.shape == (50, 3) and modes.shape == (50,)
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
        SwitchingLDS(n_states=0).fit(Y)


def test_warm_start_continues_from_the_learned_parameters():
    sim = switching_spirals(400, random_state=3)
    model = SwitchingLDS(
        n_states=2, state_dim=2, n_iter=10, tol=-np.inf, reg_covar=0.0, random_state=0, warm_start=True
    )
    model.fit(sim.observations)
    first = model.history_
    model.fit(sim.observations)
    # q(z) restarts from uniform, so the ELBO dips below where the first fit ended, but the
    # parameters carry over: far above a fresh start, and further up after ten more iterations
    assert model.history_[0] > first[0] + 0.5 * (first[-1] - first[0])
    assert model.history_[-1] > first[-1]


# ------------------------------------------------------------- the estimator contract
def _two_mode_model(input_dim=0, recurrent=False):
    """A hand-set SLDS: 2 modes, a 2-D state seen in 3-D."""
    rng = np.random.default_rng(10)
    model = SwitchingLDS(n_states=2, state_dim=2, input_dim=input_dim, recurrent=recurrent, n_iter=5)
    angle = 0.2
    rotation = 0.95 * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    model.dynamics_matrices_ = np.array([rotation, [[0.6, 0.0], [0.1, 0.8]]])
    model.dynamics_offsets_ = np.array([[0.0, 0.1], [0.5, -0.3]])
    model.dynamics_input_matrices_ = rng.normal(size=(2, 2, input_dim))
    model.dynamics_covariances_ = np.array([[[0.05, 0.01], [0.01, 0.04]], [[0.1, 0.0], [0.0, 0.2]]])
    model.observation_matrix_ = np.array([[1.0, 0.0], [0.5, 1.0], [0.3, -0.7]])
    model.observation_offset_ = np.array([0.2, -0.1, 0.0])
    model.feedthrough_matrix_ = rng.normal(size=(3, input_dim))
    model.observation_covariance_ = 0.1 * np.eye(3) + 0.02
    model.initial_state_mean_, model.initial_state_covariance_ = (
        np.array([1.0, -1.0]),
        np.array([[1.0, 0.3], [0.3, 0.5]]),
    )
    model.startprob_ = np.array([0.6, 0.4])
    if recurrent:
        model.recurrence_weights_ = np.array([[1.0, -0.5], [-1.0, 0.5]])
        model.input_weights_ = np.zeros((2, input_dim))
        model.recurrence_biases_ = np.array([[2.0, 0.0], [0.0, 2.0]])
    else:
        model.transmat_ = np.array([[0.9, 0.1], [0.2, 0.8]])
    return model


def test_one_mode_forecast_is_the_kalman_forecast():
    rng = np.random.default_rng(11)
    lds, slds = _one_mode_pair(rng, True)
    u = rng.normal(size=(60, 1))
    Y, _ = lds.sample(60, random_state=3, inputs=np.hstack([u, np.ones((60, 1))]))
    future = rng.normal(size=(5, 1))
    want = lds.forecast(
        Y, 5, inputs=np.hstack([u, np.ones((60, 1))]), future_inputs=np.hstack([future, np.ones((5, 1))])
    )
    got = slds.forecast(Y, 5, inputs=u, future_inputs=future)
    np.testing.assert_allclose(got.means, want.means, atol=1e-8)
    np.testing.assert_allclose(got.covariances, want.covariances, atol=1e-8)
    np.testing.assert_allclose(got.mode_probabilities, 1.0)


def test_forecast_matches_monte_carlo_from_sample():
    """The exact moments of the jump linear system against simulation from the posterior at the end."""
    model = _two_mode_model(input_dim=1)
    rng = np.random.default_rng(12)
    u = rng.normal(size=(80, 1))
    Y, _ = model.sample(80, random_state=1, inputs=u)
    horizon, future = 4, rng.normal(size=(4, 1))
    forecast = model.forecast(Y, horizon, inputs=u, future_inputs=future)
    assert forecast.means.shape == (4, 3) and forecast.covariances.shape == (4, 3, 3)
    assert forecast.mode_probabilities.shape == (4, 2)
    # a copy whose first step is drawn from the posterior at the end: x_T ~ q(x_T), z_T ~ q(z_T)
    posterior = model._infer(model._sequences(Y, None, u))
    start = SwitchingLDS(**model.get_params())
    start.__dict__.update(model._snapshot())
    start.initial_state_mean_, start.initial_state_covariance_ = posterior.means[-1], posterior.covs[-1]
    start.startprob_ = posterior.mode_probs[-1]
    N = 40000
    observations, modes = start.sample(horizon + 1, N, random_state=2, inputs=np.vstack([u[-1:], future]))
    Yf, Zf = np.stack(observations)[:, 1:], np.stack(modes)[:, 1:]
    sd = np.sqrt(np.diagonal(forecast.covariances, axis1=1, axis2=2))
    assert np.all(np.abs(Yf.mean(axis=0) - forecast.means) < 4.5 * sd / np.sqrt(N))
    for h in range(horizon):
        empirical = np.cov(Yf[:, h].T)
        # the standard error of a covariance entry is about sqrt((S_ii S_jj + S_ij^2) / N)
        scale = np.sqrt((np.outer(sd[h], sd[h]) ** 2 + forecast.covariances[h] ** 2) / N)
        assert np.all(np.abs(empirical - forecast.covariances[h]) < 4.5 * scale)
        p = forecast.mode_probabilities[h]
        np.testing.assert_allclose((Zf[:, h] == 1).mean(), p[1], atol=4.5 * np.sqrt(p[0] * p[1] / N))
    np.testing.assert_allclose(forecast.mode_probabilities.sum(axis=1), 1.0)
    # several sequences give lists
    many = model.forecast([Y, Y[:40]], 2, inputs=[u, u[:40]], future_inputs=future[:2])
    assert isinstance(many.means, list) and len(many.mode_probabilities) == 2
    np.testing.assert_allclose(many.means[0], forecast.means[:2])


def test_recurrent_forecast_without_state_dependence_is_the_exact_one_within_monte_carlo_error():
    """With zero recurrence and input weights the switches are softmax(r_ij) whatever the state, so
    the Monte Carlo forecast estimates the exact moments of the plain SLDS with that matrix. Its
    Rao-Blackwellised estimates have at most the variance of a plain sample mean: a mean's standard
    error is at most sd / sqrt(n_paths) and a mode probability's sqrt(p (1 - p) / n_paths); a
    covariance entry's is taken as the Gaussian sqrt((S_ii S_jj + S_ij^2) / n_paths)."""
    from scipy.special import softmax

    recurrent = _two_mode_model(input_dim=1, recurrent=True)
    recurrent.recurrence_weights_ = np.zeros((2, 2))
    recurrent.recurrence_biases_ = np.array([[1.5, -0.5], [0.3, 1.0]])
    recurrent.random_state = 0
    plain = _two_mode_model(input_dim=1)
    plain.transmat_ = softmax(recurrent.recurrence_biases_, axis=1)
    rng = np.random.default_rng(13)
    u, future = rng.normal(size=(80, 1)), rng.normal(size=(6, 1))
    Y, _ = plain.sample(80, random_state=1, inputs=u)
    got = recurrent.forecast(Y, 6, inputs=u, future_inputs=future)
    _assert_within_monte_carlo_error(got, plain.forecast(Y, 6, inputs=u, future_inputs=future))
    np.testing.assert_allclose(got.mode_probabilities.sum(axis=1), 1.0)
    # so is filter_forecast, from the streaming filter's mixture, with the future inputs
    state = list(recurrent.filter_stream(Y, inputs=u))[-1].state
    want = plain.filter_forecast(list(plain.filter_stream(Y, inputs=u))[-1].state, 6, future)
    _assert_within_monte_carlo_error(recurrent.filter_forecast(state, 6, future), want)


def _assert_within_monte_carlo_error(got, want):
    """``got``, a Monte Carlo forecast from n = ``FORECAST_PATHS`` Rao-Blackwellised paths, estimates
    the exact ``want``: a mean's standard error is at most sd / sqrt(n), a mode probability's
    sqrt(p (1 - p) / n), a covariance entry's taken as the Gaussian sqrt((S_ii S_jj + S_ij^2) / n).
    Returns the covariances' standard errors."""
    from modeshift.models.arhmm import FORECAST_PATHS

    n = FORECAST_PATHS
    sd = np.sqrt(np.diagonal(want.covariances, axis1=1, axis2=2))
    assert np.all(np.abs(got.means - want.means) < 4.5 * sd / np.sqrt(n))
    scale = np.sqrt((sd[:, :, None] ** 2 * sd[:, None, :] ** 2 + want.covariances**2) / n)
    assert np.all(np.abs(got.covariances - want.covariances) < 5 * scale)
    p = want.mode_probabilities
    assert np.all(np.abs(got.mode_probabilities - p) < 4.5 * np.sqrt(p * (1 - p) / n))
    assert np.abs(got.means - want.means).max() > 1e-6  # not the exact numbers: a Monte Carlo estimate
    return scale


def test_recurrent_forecast_is_reproducible_with_a_seed_and_follows_the_guards():
    from modeshift.models.arhmm import FORECAST_PATHS

    model = _two_mode_model(recurrent=True)
    Y, _ = model.sample(60, random_state=5)
    model.random_state = 3
    first, again = model.forecast(Y, 4), model.forecast(Y, 4)
    np.testing.assert_array_equal(first.means, again.means)
    np.testing.assert_array_equal(first.covariances, again.covariances)
    model.random_state = 4
    assert np.abs(model.forecast(Y, 4).means - first.means).max() > 0
    # the first step's mode probabilities estimate E_q[softmax(w x_T + r)] (here by 200,000 draws)
    posterior = model._infer(model._sequences(Y, None, None))
    draws = np.random.default_rng(0).multivariate_normal(posterior.means[-1], posterior.covs[-1], 200000)
    p = posterior.mode_probs[-1] @ model._guards().kernel_arrays(draws)[1].mean(axis=0)
    assert np.all(np.abs(first.mode_probabilities[0] - p) < 4.5 * np.sqrt(p * (1 - p) / FORECAST_PATHS))
    several = model.forecast([Y, Y[:30]], 2)
    assert isinstance(several.means, list) and several.means[0].shape == (2, 3)
    with pytest.raises(ValueError, match="horizon"):
        model.forecast(Y, 0)


def _guarded_model(weight=5.0):
    """A hand-set recurrent SLDS, a noisy thermostat: a 1-D state drifting up in mode 0 and down in
    mode 1, which leaves mode 0 above 1 and mode 1 below -1 (guards of slope 2 ``weight``), seen
    with noise of variance 1, so that the filter is unsure of the state next to a sharp guard."""
    model = SwitchingLDS(n_states=2, state_dim=1, recurrent=True, random_state=0)
    model.dynamics_matrices_ = np.full((2, 1, 1), 0.9)
    model.dynamics_offsets_ = np.array([[0.3], [-0.3]])
    model.dynamics_input_matrices_ = np.zeros((2, 1, 0))
    model.dynamics_covariances_ = np.full((2, 1, 1), 0.05)
    model.observation_matrix_, model.observation_offset_ = np.ones((1, 1)), np.zeros(1)
    model.feedthrough_matrix_, model.observation_covariance_ = np.zeros((1, 0)), np.ones((1, 1))
    model.initial_state_mean_, model.initial_state_covariance_ = np.zeros(1), np.ones((1, 1))
    model.startprob_ = np.array([0.5, 0.5])
    model.recurrence_weights_, model.input_weights_ = np.array([[-weight], [weight]]), np.zeros((2, 0))
    model.recurrence_biases_ = np.array([[0.0, -2 * weight], [-2 * weight, 0.0]])
    return model


def test_recurrent_filter_forecast_without_state_dependence_is_the_exact_one_within_monte_carlo_error():
    """With zero guard weights the switches are softmax(r_ij) whatever the state: the recurrent
    model's filter is the plain one's, and its Monte Carlo forecast from the filter's mixture
    estimates the plain model's exact one (tolerances as for ``forecast``). The filter's modes
    disagree on the state, so a start that ignored which mode holds which Gaussian (the mixture's
    moments for every mode) would be told apart."""
    from scipy.special import softmax

    recurrent = _guarded_model(weight=0.0)
    recurrent.dynamics_matrices_, recurrent.dynamics_offsets_ = np.array([[[0.95]], [[0.4]]]), np.array([[1.0], [-1.0]])
    recurrent.recurrence_biases_ = np.array([[1.5, -0.5], [0.3, 1.0]])
    plain = SwitchingLDS(n_states=2, state_dim=1)
    plain.__dict__.update({name: recurrent.__dict__[name] for name in plain.parameter_names if name != "transmat_"})
    plain.transmat_ = softmax(recurrent.recurrence_biases_, axis=1)
    Y = plain.sample(60, random_state=1)[0][:36]  # the filter ends unsure of the mode: p = (0.26, 0.74)
    state = list(recurrent.filter_stream(Y))[-1].state
    plain_state = list(plain.filter_stream(Y))[-1].state
    for mine, theirs in zip(state.filtered, plain_state.filtered):
        np.testing.assert_allclose(mine, theirs, rtol=1e-10)
    want = plain.filter_forecast(plain_state, 6)
    scale = _assert_within_monte_carlo_error(recurrent.filter_forecast(state, 6), want)
    # the start matters: every mode given the mixture's mean and covariance breaks these bounds
    weights, means, covs = state.filtered[:3]
    assert weights.min() > 0.2 and np.ptp(means) > 3.0
    pooled = weights @ means[:, 0]
    spread = weights @ (covs[:, 0, 0] + (means[:, 0] - pooled) ** 2)
    blurred = state._replace(filtered=(weights, np.full_like(means, pooled), np.full_like(covs, spread)))
    assert np.any(np.abs(plain.filter_forecast(blurred, 6).covariances - want.covariances) > 5 * scale)


def test_recurrent_filter_forecast_matches_simulation_from_the_filtered_mixture():
    """Next to a sharp guard, the filter's law of the state decides the switches: the forecast's
    moments against 40,000 paths of ``sample`` per mode k started from the filter's
    z = k, x ~ N(m_k, P_k), weighted by w_k (errors: the two Monte Carlo errors added). Switch
    probabilities evaluated at each mode's mean instead (the Kim filter's own forecast) miss by
    more than ten standard errors here."""
    from modeshift.models.arhmm import FORECAST_PATHS

    model, horizon, N = _guarded_model(), 10, 40000
    Y = model.sample(60, random_state=1)[0][:55]
    state = list(model.filter_stream(Y))[-1].state
    weights, means, covs = state.filtered[:3]
    assert weights.min() > 0.3  # the filter is unsure of the mode
    first, second, modes = 0.0, 0.0, 0.0
    for k in range(2):
        start = SwitchingLDS(**model.get_params())
        start.__dict__.update(model._snapshot())
        start.initial_state_mean_, start.initial_state_covariance_ = means[k], covs[k]
        start.startprob_ = np.eye(2)[k]
        observations, paths = start.sample(horizon + 1, N, random_state=10 + k)
        Yf, Zf = np.stack(observations)[:, 1:], np.stack(paths)[:, 1:]
        first = first + weights[k] * Yf.mean(axis=0)
        second = second + weights[k] * np.einsum("sti,stj->tij", Yf, Yf) / N
        modes = modes + weights[k] * np.stack([(Zf == j).mean(axis=0) for j in range(2)], axis=1)
    covariances = second - first[:, :, None] * first[:, None, :]
    forecast = model.filter_forecast(state, horizon)
    both = 1 / FORECAST_PATHS + 1 / N
    sd = np.sqrt(np.diagonal(covariances, axis1=1, axis2=2))
    assert np.all(np.abs(forecast.means - first) < 4.5 * sd * np.sqrt(both))
    assert np.all(np.abs(forecast.covariances - covariances) < 5 * np.sqrt(2 * both) * sd[:, :, None] ** 2)
    assert np.all(np.abs(forecast.mode_probabilities - modes) < 4.5 * np.sqrt(modes * (1 - modes) * both) + 1e-12)
    shortcut = model._stream_recursion().forecast(state.filtered, np.zeros((horizon, 0)))[1]
    assert np.abs(shortcut - first).max() > 10 * sd.max() * np.sqrt(both)
    # seeded by random_state, as forecast is
    again = model.filter_forecast(state, horizon)
    np.testing.assert_array_equal(again.means, forecast.means)
    model.random_state = 1
    assert np.abs(model.filter_forecast(state, horizon).means - forecast.means).max() > 0


@pytest.mark.parametrize("recurrent", [False, True])
def test_filter_proba_is_the_forward_pass_of_q_z(recurrent):
    model = _two_mode_model(recurrent=recurrent)
    ys, _ = model.sample(60, n_sequences=2, random_state=4)
    filtered, smoothed = model.filter_proba(ys), model.predict_proba(ys)
    assert isinstance(filtered, list) and [f.shape for f in filtered] == [(60, 2)] * 2
    for f, s in zip(filtered, smoothed):
        np.testing.assert_allclose(f.sum(axis=1), 1.0, atol=1e-12)
        np.testing.assert_allclose(f[-1], s[-1], atol=1e-10)  # the last step sees all the evidence
        assert np.abs(f[:-1] - s[:-1]).max() > 1e-3
    np.testing.assert_allclose(model.filter_proba(np.concatenate(ys), [60, 60]), np.concatenate(filtered))


@pytest.mark.parametrize("recurrent", [False, True])
def test_each_sequence_is_inferred_as_on_its_own(recurrent):
    """Inference runs sequence by sequence: each keeps the start of its own largest ELBO and sweeps
    until its own ELBO settles, so its posterior inside a batch of others (of other lengths) is its
    posterior alone. A start given beside the default ones (the true modes; for the recurrent model,
    mode 0 throughout) wins on some sequences of the batch and not on others, which keep exactly
    what they had without it."""
    model = _two_mode_model(recurrent=recurrent)
    samples = [model.sample(length, random_state=seed) for seed, length in enumerate([40, 75, 23, 120, 60, 90])]
    seqs = model._sequences([y for y, _ in samples], None, None)
    paths = np.concatenate([z for _, z in samples])
    given = np.eye(2)[np.zeros_like(paths) if recurrent else paths]
    batch = inference.infer(model._parameters(seqs), seqs, model.tol, 50, (given,))
    for i, (y, _) in enumerate(samples):
        one, rows = model._sequences([y], None, None), slice(seqs.offsets[i], seqs.offsets[i + 1])
        alone = inference.infer(model._parameters(one), one, model.tol, 50, (given[rows],))
        assert alone.elbos[0] == pytest.approx(batch.elbos[i], abs=1e-10)
        for name in ("means", "covs", "cross_covs", "mode_probs", "pair_counts", "log_likelihoods"):
            np.testing.assert_allclose(getattr(alone, name), getattr(batch, name)[rows], atol=1e-10, err_msg=name)
    gain = batch.elbos - inference.infer(model._parameters(seqs), seqs, model.tol, 50).elbos
    assert (gain >= 0).all() and (gain > 1e-2).any() and (gain == 0).any()


def test_sample_shapes_reproducibility_and_law():
    model = _two_mode_model(input_dim=1)
    u = np.ones((30, 1))
    y, z = model.sample(30, random_state=5, inputs=u)
    assert y.shape == (30, 3) and z.shape == (30,) and set(np.unique(z)) <= {0, 1}
    y2, z2 = model.sample(30, random_state=5, inputs=u)
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(z, z2)
    assert not np.array_equal(y, model.sample(30, random_state=6, inputs=u)[0])
    ys, zs = model.sample(30, n_sequences=3, random_state=5, inputs=[u, 2 * u, 3 * u])
    assert len(ys) == len(zs) == 3 and ys[2].shape == (30, 3)
    with pytest.raises(ValueError, match="pass inputs"):
        model.sample(30)
    with pytest.raises(ValueError, match="n_steps"):
        model.sample(0, inputs=u)
    # the first two steps of many sequences: p(z_0), the switches, and E[y_0] = C m0 + D u + d
    plain = _two_mode_model()
    ys, zs = plain.sample(2, n_sequences=40000, random_state=7)
    zs, ys = np.array(zs), np.array(ys)
    np.testing.assert_allclose(np.mean(zs[:, 0] == 0), 0.6, atol=0.01)
    for i in (0, 1):
        np.testing.assert_allclose(np.mean(zs[zs[:, 0] == i, 1] == i), plain.transmat_[i, i], atol=0.015)
    want = plain.observation_matrix_ @ plain.initial_state_mean_ + plain.observation_offset_
    np.testing.assert_allclose(ys[:, 0].mean(axis=0), want, atol=0.02)
    # a recurrent model switches by its guards: with x_0 = m0 (almost surely), p(z_1 = j | z_0 = i)
    # is softmax_j(r_ij + w_j . m0)
    recurrent = _two_mode_model(recurrent=True)
    recurrent.initial_state_covariance_ = 1e-12 * np.eye(2)
    _, zs = recurrent.sample(2, n_sequences=40000, random_state=8)
    zs = np.array(zs)
    logits = recurrent.recurrence_biases_ + recurrent.recurrence_weights_ @ recurrent.initial_state_mean_
    switch = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    for i in (0, 1):
        np.testing.assert_allclose(np.mean(zs[zs[:, 0] == i, 1] == i), switch[i, i], atol=0.015)


def test_refit_starts_afresh_and_n_iter_zero_initialises():
    first = switching_spirals(300, random_state=3).observations
    other = switching_spirals(300, random_state=4).observations
    model = SwitchingLDS(n_states=2, state_dim=2, n_iter=4, random_state=0)
    with pytest.warns(em.ConvergenceWarning, match="n_iter=4"):
        model.fit(first)
        model.fit(other)
        fresh = SwitchingLDS(n_states=2, state_dim=2, n_iter=4, random_state=0).fit(other)
    assert model.history_ == fresh.history_ and model.n_iter_ == 4 and not model.converged_
    for name in model.parameter_names:
        np.testing.assert_array_equal(getattr(model, name), getattr(fresh, name))
    start = SwitchingLDS(n_states=2, state_dim=2, n_iter=0, random_state=0).fit(other)
    assert start.history_ == [] and start.n_iter_ == 0 and start.dwell_times_.shape == (2,)
    assert start.predict(other).shape == (300,)
    again = SwitchingLDS(n_states=2, state_dim=2, n_iter=0, random_state=0).fit(other)
    np.testing.assert_array_equal(again.dynamics_matrices_, start.dynamics_matrices_)


def test_objective_is_the_penalised_elbo_and_the_criteria_use_the_elbo():
    model = _two_mode_model()
    model.set_params(stickiness=2.0, reg_covar=0.1, n_iter=1, tol=-np.inf)
    y, _ = model.sample(100, random_state=9)
    fitted = SwitchingLDS(**model.get_params())
    fitted.__dict__.update(model._snapshot())
    with pytest.warns(em.ConvergenceWarning):
        fitted.fit(y)
    assert SwitchingLDS.objective == "ELBO" and fitted.monotone and not SwitchingLDS(recurrent=True).monotone
    # the first E-step is at the hand-set start (q(z) inferred under it): ELBO + log prior there
    prior = model._log_prior()
    assert prior < 0
    assert fitted.history_[0] == pytest.approx(model.elbo(y) + prior, rel=1e-9)
    elbo, k = model.elbo(y), model.n_parameters
    assert model.aic(y) == pytest.approx(-2 * elbo + 2 * k, rel=1e-12)
    assert model.bic(y) == pytest.approx(-2 * elbo + k * np.log(100), rel=1e-12)
    assert "ELBO" in SwitchingLDS.aic.__doc__ and "ELBO" in SwitchingLDS.bic.__doc__


def test_old_names_and_score_answer_with_a_warning(tmp_path, file_with_old_names):
    Y = switching_spirals(200, random_state=5, n_modes=2, obs_dim=3).observations
    with pytest.warns(em.ConvergenceWarning):
        model = SwitchingLDS(n_states=2, state_dim=2, n_iter=3, random_state=0).fit(Y)
    with pytest.warns(DeprecationWarning, match="returns the ELBO"):
        assert model.score(Y) == model.elbo(Y)
    with pytest.warns(DeprecationWarning, match="elbo_history_ is renamed history_"):
        assert model.elbo_history_ == model.history_
    with pytest.warns(DeprecationWarning, match="mean_run_lengths_ is renamed dwell_times_"):
        np.testing.assert_array_equal(model.mean_run_lengths_, model.dwell_times_)
    # a model file of the previous release, with the old names
    old = load(file_with_old_names(model, {"dwell_times_": "mean_run_lengths_", "history_": "elbo_history_"}))
    assert old.history_ == model.history_
    np.testing.assert_array_equal(old.dwell_times_, model.dwell_times_)
    # save -> load keeps every prediction
    model.save(tmp_path / "plain.msz")
    loaded = load(tmp_path / "plain.msz")
    for method in ("predict", "predict_proba", "filter_proba", "smooth"):
        np.testing.assert_array_equal(getattr(loaded, method)(Y), getattr(model, method)(Y))
    np.testing.assert_array_equal(loaded.forecast(Y, 3).means, model.forecast(Y, 3).means)
    assert loaded.elbo(Y) == model.elbo(Y) and loaded.n_iter_ == model.n_iter_


def test_invalid_hyperparameters_raise_at_fit_and_clone_works():
    sklearn_base = pytest.importorskip("sklearn.base")
    Y = switching_spirals(100, random_state=1, n_modes=2, obs_dim=3).observations
    for bad, match in (
        ({"recurrent": "yes"}, "recurrent"),
        ({"stickiness": -1.0}, "stickiness"),
        ({"n_restarts": 0}, "n_restarts"),
        ({"state_dim": 0}, "state_dim"),
        ({"n_states": "many"}, "n_states"),
        ({"warm_start": 1}, "warm_start"),
    ):
        model = SwitchingLDS(**bad)
        assert sklearn_base.clone(model).get_params() == model.get_params()
        with pytest.raises(ValueError, match=match):
            model.fit(Y)
    with pytest.raises(TypeError):
        _two_mode_model(input_dim=1).predict(Y, None, np.ones((100, 1)))
