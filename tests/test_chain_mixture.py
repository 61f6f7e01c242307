"""MarkovChainMixture: recovery, EM through the one driver, exact likelihoods, sampling, the estimator
contract, persistence and input checks."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy.special import logsumexp

from modeshift import MarkovChainMixture, NotFittedError, load
from modeshift.metrics import match_modes, mode_accuracy
from modeshift.models.chain_mixture import _Counts, _log_joint
from modeshift.models.em import ConvergenceWarning
from modeshift.models.state_labels import encode_states


def _truth(n_components=3, n_states=10, seed=1):
    rng = np.random.default_rng(seed)
    truth = MarkovChainMixture(n_components)
    truth.weights_ = rng.dirichlet(np.full(n_components, 5.0))
    truth.startprob_ = rng.dirichlet(np.ones(n_states), size=n_components)
    truth.transmat_ = rng.dirichlet(np.ones(n_states), size=(n_components, n_states))
    return truth


@pytest.fixture(scope="module")
def data():
    truth = _truth()
    trajectories, components = truth.sample(20, 2000, random_state=2)
    return truth, trajectories, components


@pytest.fixture(scope="module")
def fitted(data):
    return MarkovChainMixture(n_components=3, random_state=0).fit(data[1])


def test_recovers_three_components_of_ten_state_chains(data, fitted):
    truth, trajectories, components = data
    predicted = fitted.predict(trajectories)
    accuracy = mode_accuracy(components, predicted)
    print(f"trajectory classification accuracy {accuracy:.4f}")
    assert accuracy >= 0.9
    order = np.argsort(match_modes(components, predicted))  # fitted component matched to true 0, 1, 2
    assert np.abs(fitted.transmat_[order] - truth.transmat_).max() < 0.12
    assert np.abs(fitted.weights_[order] - truth.weights_).max() < 0.03
    assert fitted.converged_


def test_em_is_monotone(fitted):
    history = np.array(fitted.history_)
    assert len(history) == fitted.n_iter_ >= 2
    assert np.diff(history).min() >= -1e-9 * abs(history[-1])


def test_likelihood_matches_brute_force(fitted):
    trajectories = [[0, 3, 3, 7, 1], [9], [2, 2, 2, 5, 0, 8, 4, 4]]
    w, pi, transitions = fitted.weights_, fitted.startprob_, fitted.transmat_
    log_joint = np.array(
        [
            [
                np.log(w[k] * pi[k, x[0]] * np.prod([transitions[k, i, j] for i, j in zip(x[:-1], x[1:])]))
                for k in range(3)
            ]
            for x in trajectories
        ]
    )
    log_lik = logsumexp(log_joint, axis=1)
    assert fitted.score(trajectories) == pytest.approx(log_lik.sum(), rel=1e-12)
    np.testing.assert_allclose(fitted.predict_proba(trajectories), np.exp(log_joint - log_lik[:, None]), atol=1e-12)
    np.testing.assert_array_equal(fitted.predict(trajectories), log_joint.argmax(axis=1))


def test_em_iteration_takes_milliseconds(data, fitted):
    seqs = encode_states(data[1])
    counts = _Counts.of(seqs, len(seqs.vocabulary))
    parameters = (fitted.weights_, fitted.startprob_, fitted.transmat_)
    start = time.perf_counter()
    for _ in range(20):
        log_joint = _log_joint(counts, *parameters)
        log_lik = logsumexp(log_joint, axis=1)
        parameters = fitted._maximize(counts, np.exp(log_joint - log_lik[:, None]))
    per_iteration = (time.perf_counter() - start) / 20
    print(f"EM iteration (2,000 x 20 steps, 10 states, 3 components): {1e3 * per_iteration:.2f} ms")
    assert per_iteration < 0.05  # about 1 ms; generous for a loaded machine


def test_m_step_is_smoothed_counts():
    trajectories = [["a", "b", "b"], ["b", "a"], ["a", "a", "b"]]
    model = MarkovChainMixture(n_components=1, pseudo_count=0.5, n_restarts=1).fit(trajectories)
    assert model.states_ == ("a", "b")
    counts = np.array([[1.0, 2.0], [1.0, 1.0]])  # a->a, a->b / b->a, b->b
    np.testing.assert_allclose(model.transmat_[0], (counts + 0.5) / (counts + 0.5).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(model.startprob_[0], np.array([2.5, 1.5]) / 4.0)
    np.testing.assert_allclose(model.weights_, [1.0])


def test_bic_counts_parameters_and_selects_three_components(data):
    trajectories = data[1][:600]
    models = {k: MarkovChainMixture(k, n_restarts=2, random_state=0).fit(trajectories) for k in (1, 2, 3, 4)}
    k, v = 3, 10
    assert models[3].n_parameters == (k - 1) + k * (v - 1) + k * v * (v - 1)
    assert models[3].bic(trajectories) == pytest.approx(
        -2 * models[3].score(trajectories) + models[3].n_parameters * np.log(600)
    )
    assert min(models, key=lambda k: models[k].bic(trajectories)) == 3


def test_sample_draws_trajectories_of_n_steps_and_one_component_each(fitted):
    trajectories, components = fitted.sample(5, 4, random_state=0)
    assert [len(x) for x in trajectories] == [5] * 4
    assert components.shape == (4,) and set(components) <= {0, 1, 2}
    assert all(s in fitted.states_ for x in trajectories for s in x)
    assert fitted.sample(5, 4, random_state=0)[0] == trajectories
    one, component = fitted.sample(5, random_state=0)  # one trajectory: a list and an int
    assert len(one) == 5 and isinstance(component, int) and 0 <= component < 3
    assert fitted.sample(5, random_state=0) == (one, component)


def test_sampled_components_and_trajectories_follow_the_mixture():
    """Brute force on a tiny mixture: the frequency of every (component, trajectory) pair of length 3
    is w_k pi_k[x_1] A_k[x_1, x_2] A_k[x_2, x_3]."""
    truth = _truth(n_components=2, n_states=2, seed=7)
    trajectories, components = truth.sample(3, 40_000, random_state=3)
    counts = np.zeros((2, 2, 2, 2))
    np.add.at(counts, (components, *np.array(trajectories).T), 1.0)
    w, pi, A = truth.weights_, truth.startprob_, truth.transmat_
    expected = np.einsum("k,ka,kab,kbc->kabc", w, pi, A, A)
    np.testing.assert_allclose(counts / counts.sum(), expected, atol=0.01)


def test_the_old_sample_form_warns_and_keeps_its_meaning(fitted):
    with pytest.warns(DeprecationWarning, match=r"sample\(n_steps, n_sequences\)"):
        trajectories, components = fitted.sample(4, length=[1, 3, 5, 2], random_state=0)
    assert [len(x) for x in trajectories] == [1, 3, 5, 2] and components.shape == (4,)
    with pytest.warns(DeprecationWarning):
        single, component = fitted.sample(1, length=3, random_state=0)  # always a list and an array
    assert len(single) == 1 and len(single[0]) == 3 and component.shape == (1,)
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="lengths >= 1"):
        fitted.sample(3, length=0)


def test_save_and_load_keep_labels_and_predictions(tmp_path):
    rng = np.random.default_rng(0)
    trajectories = [[str(s) for s in rng.choice(["x", "y", "z"], size=8)] for _ in range(50)]
    model = MarkovChainMixture(2, random_state=0).fit(trajectories)
    model.save(tmp_path / "mixture.msz")
    loaded = load(tmp_path / "mixture.msz")
    assert isinstance(loaded, MarkovChainMixture) and loaded.states_ == ("x", "y", "z")
    assert loaded.get_params() == {**model.get_params(), "random_state": 0}
    np.testing.assert_allclose(loaded.predict_proba(trajectories), model.predict_proba(trajectories))
    assert loaded.history_ == model.history_ and loaded.n_iter_ == model.n_iter_


def test_bad_input_is_reported():
    model = MarkovChainMixture(2, random_state=0)
    with pytest.raises(NotFittedError):
        model.predict([[0, 1]])
    with pytest.raises(ValueError, match="no sequences"):
        model.fit([])
    with pytest.raises(ValueError, match="sequence 1 is empty"):
        model.fit([[0, 1], []])
    with pytest.raises(ValueError, match="cannot fit 2 components"):
        model.fit([[0, 1, 0]])
    model.fit([["a", "b", "a"], ["b", "b", "a"], ["a", "a"]])
    with pytest.raises(ValueError, match="sequence 1, time step 2: symbol 'c' is not in the vocabulary"):
        model.predict([["a"], ["a", "b", "c"]])
    with pytest.raises(ValueError, match="MarkovChainMixture: n_components must be an integer >= 1, got 0"):
        MarkovChainMixture(0).fit([[0, 1]])
    with pytest.raises(ValueError, match="pseudo_count must be a finite number >= 0"):
        MarkovChainMixture(2, pseudo_count=-1.0).fit([[0, 1]])
    with pytest.raises(ValueError, match="n_steps must be an integer >= 1|n_sequences must be an integer >= 1"):
        model.sample(0)
    with pytest.raises(ValueError, match="n_steps must be an integer >= 1|n_sequences must be an integer >= 1"):
        model.sample(3, 0)


def test_impossible_trajectory_without_smoothing():
    model = MarkovChainMixture(1, pseudo_count=0.0).fit([[0, 1, 0, 1], [1, 0, 1]])
    assert model.score([[0, 1], [0, 0]]) == -np.inf  # the contract's rule: log 0
    with pytest.raises(ValueError, match="sequence 1 has probability 0.*pseudo_count > 0"):
        model.predict([[0, 1], [0, 0]])


def test_hand_set_parameters_are_checked():
    model = MarkovChainMixture(2)
    model.weights_ = [0.5, 0.5]
    model.startprob_ = [[1.0, 0.0], [0.5, 0.5]]
    model.transmat_ = [[[0.9, 0.2], [0.5, 0.5]], [[0.5, 0.5], [0.5, 0.5]]]
    with pytest.raises(ValueError, match="transmat_ must sum to 1"):
        model.predict([[0, 1]])


# ------------------------------------------------------------ the estimator contract

SHORT = [[0, 1, 1, 0, 2], [2, 2, 1], [0, 0, 1, 2], [1, 2, 2, 2, 0], [2, 0, 0], [1, 1, 1, 0]] * 5


def test_warm_start_continues_em_and_a_refit_starts_afresh():
    # plain EM: an accelerated run restarts its SQUAREM cycle at the warm start
    long = MarkovChainMixture(2, n_iter=8, tol=-np.inf, n_restarts=1, random_state=0, accelerate=False)
    with pytest.warns(ConvergenceWarning, match="MarkovChainMixture"):
        long.fit(SHORT)
    assert long.n_iter_ == 8 and not long.converged_
    warm = MarkovChainMixture(2, n_iter=3, tol=-np.inf, n_restarts=1, random_state=0, accelerate=False)
    with pytest.warns(ConvergenceWarning):
        warm.fit(SHORT)
        warm.set_params(warm_start=True, n_iter=5).fit(SHORT)
    np.testing.assert_allclose(warm.history_, long.history_[3:], rtol=1e-12)
    np.testing.assert_allclose(warm.transmat_, long.transmat_, rtol=1e-10)
    fresh = MarkovChainMixture(2, random_state=3).fit(SHORT)
    refit = MarkovChainMixture(2, random_state=3).fit([["x", "y"], ["y", "y"], ["x"]]).fit(SHORT)
    assert refit.states_ == fresh.states_ and refit.history_ == fresh.history_
    np.testing.assert_array_equal(refit.weights_, fresh.weights_)


def test_hand_set_parameters_start_em_and_n_iter_zero_only_initialises():
    truth = _truth(n_components=2, n_states=3, seed=4)
    data = truth.sample(6, 40, random_state=5)[0]
    truth.set_params(n_iter=1, n_restarts=1, pseudo_count=0.0)
    start = truth.score(data)
    with pytest.warns(ConvergenceWarning):
        truth.fit(data)
    assert truth.history_ == [pytest.approx(start)]  # the objective at the hand-set start
    initialised = MarkovChainMixture(2, n_iter=0, random_state=0).fit(data)
    assert initialised.history_ == [] and initialised.n_iter_ == 0 and not initialised.converged_
    np.testing.assert_allclose(initialised.transmat_.sum(axis=2), 1.0)


def test_data_forms_information_criteria_and_the_old_history_name():
    model = MarkovChainMixture(2, random_state=0).fit(SHORT)
    flat = np.concatenate([np.asarray(x) for x in SHORT[:6]])
    lengths = [len(x) for x in SHORT[:6]]
    np.testing.assert_allclose(model.predict_proba(flat, lengths), model.predict_proba(SHORT[:6]))
    log_likelihood = model.score(SHORT)
    assert model.aic(SHORT) == pytest.approx(-2 * log_likelihood + 2 * model.n_parameters)
    assert model.bic(SHORT) == pytest.approx(-2 * log_likelihood + model.n_parameters * np.log(len(SHORT)))
    with pytest.warns(DeprecationWarning, match="log_likelihood_history_ is renamed history_"):
        assert model.log_likelihood_history_ == model.history_
