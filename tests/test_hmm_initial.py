"""The law of an HMM's first state: learned, stationary (tied to transmat_) or fixed by hand."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
from scipy.stats import poisson

from modeshift import ARHMM, HMM, load
from modeshift.chain_analysis import stationary_distribution
from modeshift.models.em import ObjectiveDecreaseWarning
from modeshift.transitions import stationary_start_transitions

P3 = np.array([[0.7, 0.2, 0.1], [0.3, 0.6, 0.1], [0.25, 0.25, 0.5]])
RATES3 = np.array([[1.0], [4.0], [9.0]])


def two_regimes(seed: int = 0, n: int = 300) -> np.ndarray:
    rng = np.random.default_rng(seed)
    states = np.repeat(rng.integers(0, 2, n // 20), 20)
    return rng.normal(np.where(states == 1, 3.0, 0.0), 1.0)[:, None]


def test_stationary_start_likelihood_equals_brute_force_enumeration():
    model = HMM(3, emission="poisson", init="stationary")
    model.transmat_, model.lambdas_ = P3, RATES3
    X = np.array([[0], [3], [5], [10]])
    pi = stationary_distribution(P3)
    np.testing.assert_allclose(model.startprob_, pi, atol=1e-12)
    total = 0.0
    for path in itertools.product(range(3), repeat=len(X)):
        p = pi[path[0]] * np.prod([P3[a, b] for a, b in zip(path, path[1:])])
        total += p * np.prod([poisson.pmf(X[t, 0], RATES3[path[t], 0]) for t in range(len(X))])
    assert model.score(X) == pytest.approx(np.log(total), abs=1e-10)


def stationary_objective(P: np.ndarray, counts: np.ndarray, initial: np.ndarray) -> float:
    return float(np.sum(counts * np.log(P)) + np.sum(initial * np.log(stationary_distribution(P))))


@pytest.mark.parametrize("seed", range(3))
def teststationary_start_transitions_finds_the_joint_maximum(seed):
    # Two states: P = [[1-a, a], [b, 1-b]], whose stationary law is (b, a) / (a + b); a grid
    # over (a, b) bounds the maximum from below.
    rng = np.random.default_rng(seed)
    counts, initial = rng.uniform(0.5, 20.0, (2, 2)), rng.dirichlet([1.0, 1.0]) * 3
    previous = np.array([[0.5, 0.5], [0.5, 0.5]])
    P = stationary_start_transitions(counts, initial, previous)
    a, b = np.meshgrid(*[np.linspace(1e-3, 1 - 1e-3, 400)] * 2, indexing="ij")
    on_grid = (
        counts[0, 0] * np.log(1 - a)
        + counts[0, 1] * np.log(a)
        + counts[1, 0] * np.log(b)
        + counts[1, 1] * np.log(1 - b)
        + initial @ np.log([b / (a + b), a / (a + b)]).transpose(1, 0, 2)
    )
    grid_point = np.array([[1 - a[7, 9], a[7, 9]], [b[7, 9], 1 - b[7, 9]]])
    assert on_grid[7, 9] == pytest.approx(stationary_objective(grid_point, counts, initial), rel=1e-12)
    best = on_grid.max()
    found = stationary_objective(P, counts, initial)
    assert found >= best - 1e-9
    assert found >= stationary_objective(previous, counts, initial)
    # It differs from the counts-only maximiser: the start's term pulls it.
    assert not np.allclose(P, counts / counts.sum(axis=1, keepdims=True), atol=1e-4)


def test_stationary_start_em_is_monotone_and_keeps_the_tie():
    X = two_regimes()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ObjectiveDecreaseWarning)
        model = HMM(2, init="stationary", n_iter=500, tol=1e-9, random_state=0).fit(X)
    assert model.converged_
    assert np.diff(model.history_).min() >= -1e-9 * abs(model.history_[-1])
    np.testing.assert_allclose(model.startprob_, stationary_distribution(model.transmat_), atol=1e-12)
    assert model.history_[-1] == pytest.approx(model.score(X), abs=1e-6)


def test_stationary_start_with_a_prior_is_monotone_in_the_penalised_objective():
    X = two_regimes(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ObjectiveDecreaseWarning)
        model = HMM(
            3, init="stationary", transition_concentration=2.0, stickiness=5.0, n_iter=300, tol=1e-8, random_state=0
        ).fit(X)
    assert np.diff(model.history_).min() >= -1e-9 * abs(model.history_[-1])
    prior = float(np.log(model.transmat_).sum() + 5.0 * np.log(np.diag(model.transmat_)).sum())
    assert model.history_[-1] == pytest.approx(model.score(X) + prior, abs=1e-5)


def test_stationary_start_counts_one_fewer_free_distribution():
    X = two_regimes()
    learned = HMM(3, n_iter=0, random_state=0).fit(X)
    tied = HMM(3, init="stationary", n_iter=0, random_state=0).fit(X)
    assert learned.n_parameters - tied.n_parameters == 2


def test_fixed_start_is_a_hand_set_startprob_held_fixed():
    X = two_regimes()
    model = HMM(2, fixed={"startprob_"}, n_restarts=3, n_iter=50, random_state=0)
    model.startprob_ = np.array([0.9, 0.1])
    model.fit(X)
    np.testing.assert_array_equal(model.startprob_, [0.9, 0.1])
    assert model.n_parameters == HMM(2).fit(X).n_parameters - 1


def test_stationary_start_saves_and_loads(tmp_path):
    X = two_regimes()
    model = HMM(2, init="stationary", n_iter=50, random_state=0).fit(X)
    model.save(tmp_path / "model")
    loaded = load(tmp_path / "model")
    assert loaded.init == "stationary"
    np.testing.assert_array_equal(loaded.startprob_, model.startprob_)
    assert loaded.score(X) == model.score(X)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


def test_stationary_start_rejects_what_contradicts_the_tie():
    X = two_regimes()
    with pytest.raises(ValueError, match="init must be one of"):
        HMM(2, init="uniform").fit(X)
    with pytest.raises(ValueError, match="without inputs"):
        HMM(2, init="stationary", input_dim=1).fit(X, inputs=np.zeros((len(X), 1)))
    with pytest.raises(ValueError, match="ties startprob_ to transmat_"):
        HMM(2, init="stationary", fixed={"startprob_"}).fit(X)
    model = HMM(2, init="stationary")
    model.transmat_ = np.array([[0.9, 0.1], [0.2, 0.8]])
    with pytest.raises(ValueError, match="stationary distribution of transmat_"):
        model.startprob_ = np.array([0.5, 0.5])
    model.startprob_ = np.array([2 / 3, 1 / 3])  # the stationary one: accepted


def test_fixed_transmat_with_stationary_start_keeps_both():
    X = two_regimes()
    P = np.array([[0.95, 0.05], [0.1, 0.9]])
    model = HMM(2, init="stationary", fixed={"transmat_"}, n_iter=30, random_state=0)
    model.transmat_ = P
    model.fit(X)
    np.testing.assert_array_equal(model.transmat_, P)
    np.testing.assert_allclose(model.startprob_, [2 / 3, 1 / 3], atol=1e-12)


def test_arhmm_inherits_the_stationary_start():
    rng = np.random.default_rng(0)
    X = np.cumsum(rng.normal(size=(300, 1)), axis=0) * 0.1
    with warnings.catch_warnings():
        warnings.simplefilter("error", ObjectiveDecreaseWarning)
        model = ARHMM(2, init="stationary", n_iter=1000, random_state=0).fit(X)
    assert model.get_params()["init"] == "stationary"
    np.testing.assert_allclose(model.startprob_, stationary_distribution(model.transmat_), atol=1e-12)
