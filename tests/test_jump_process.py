"""MarkovJumpProcess: closed-form and EM estimates, endpoint-conditioned statistics, simulation, the
estimator contract and checks."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from scipy.integrate import quad
from scipy.linalg import expm

from modeshift import MarkovJumpProcess, NotFittedError, load
from modeshift.models.em import ConvergenceWarning
from modeshift.models.jump_process import Paths, endpoint_statistics, expm_metzler

RATES = np.array(
    [
        [-1.0, 0.5, 0.3, 0.2],
        [0.4, -0.9, 0.3, 0.2],
        [0.1, 0.6, -1.2, 0.5],
        [0.3, 0.2, 0.7, -1.2],
    ]
)


def _process(rates=RATES, **options):
    process = MarkovJumpProcess(**options)
    process.rate_matrix_ = rates
    return process


def _relative_error(estimate, truth=RATES):
    return np.linalg.norm(estimate - truth) / np.linalg.norm(truth)


@pytest.fixture(scope="module")
def snapshots():
    """500 paths on [0, 20], each observed at its own 20 irregular times."""
    paths = _process().sample(n_sequences=500, t_end=20.0, random_state=1)
    rng = np.random.default_rng(2)
    times = [np.sort(rng.uniform(0.0, 20.0, 20)) for _ in range(500)]
    return paths, paths.observe(times), times


@pytest.fixture(scope="module")
def fitted(snapshots):
    start = time.perf_counter()
    model = MarkovJumpProcess().fit(snapshots[1], times=snapshots[2])
    elapsed, iterations = time.perf_counter() - start, model.n_iter_
    print(f"EM fit, 500 x 20 snapshots: {elapsed:.2f} s, {iterations} iterations")
    return model


def test_rate_matrix_recovered_from_irregular_snapshots(fitted):
    error = _relative_error(fitted.rate_matrix_)
    print(f"relative Frobenius error {error:.4f}")
    assert error < 0.10
    assert fitted.converged_
    np.testing.assert_allclose(fitted.rate_matrix_.sum(axis=1), 0.0, atol=1e-12)


def test_em_is_monotone(snapshots, fitted):
    history = np.array(fitted.history_)
    assert np.diff(history).min() >= -1e-9 * abs(history[-1])
    assert fitted.score(snapshots[1], times=snapshots[2]) >= history[-1]  # after the last M-step


def test_complete_paths_give_closed_form():
    states, times = [[0, 1, 0, 2], [1, 2]], [[0.0, 1.5, 2.0, 4.0], [0.0, 0.25]]
    censored = MarkovJumpProcess(observation="paths").fit(states, times=times, end_times=[5.0, 1.0])
    # time at risk: R_0 = 1.5 + 2.0 = 3.5, R_1 = 0.5 + 0.25 = 0.75, R_2 = 1.0 (censored) + 0.75 (censored)
    expected = np.array([[0.0, 1 / 3.5, 1 / 3.5], [1 / 0.75, 0.0, 1 / 0.75], [0.0, 0.0, 0.0]])
    np.fill_diagonal(expected, -expected.sum(axis=1))
    np.testing.assert_allclose(censored.rate_matrix_, expected)
    log_lik = 2 * np.log(1 / 3.5) + 2 * np.log(1 / 0.75) - (3.5 * 2 / 3.5 + 0.75 * 2 / 0.75)
    assert censored.score(states, times=times, end_times=[5.0, 1.0]) == pytest.approx(log_lik)
    assert censored.history_ == [pytest.approx(log_lik)] and censored.converged_ and censored.n_iter_ == 1
    uncensored = MarkovJumpProcess(observation="paths").fit(states, times=times)
    assert uncensored.rate_matrix_[2, 2] == 0.0  # state 2 is only ever the last, unobserved sojourn


def test_complete_paths_recover_rates():
    paths = _process().sample(n_sequences=500, t_end=20.0, random_state=4)
    model = MarkovJumpProcess(observation="paths").fit(paths.states, times=paths.times, end_times=paths.end_times)
    assert _relative_error(model.rate_matrix_) < 0.05


def _brute_force_two_state(rates, a, b, t):
    """Endpoint-conditioned E[R_0] and E[N_01] by quadrature of P(s)[a, i] P(t - s)[j, b]."""

    def integral(i, j):
        return quad(lambda s: expm(rates * s)[a, i] * expm(rates * (t - s))[j, b], 0.0, t, epsabs=1e-13)[0]

    p = expm(rates * t)[a, b]
    return integral(0, 0) / p, rates[0, 1] * integral(0, 1) / p


@pytest.mark.parametrize("a, b", [(0, 0), (0, 1), (1, 0), (1, 1)])
def test_endpoint_statistics_match_numerical_integration(a, b):
    rates = np.array([[-1.3, 1.3], [0.6, -0.6]])
    t = 1.7
    stats = endpoint_statistics(rates, np.array([a]), np.array([b]), np.array([t]))
    time_in_0, jumps_01 = _brute_force_two_state(rates, a, b, t)
    assert stats["time_at_risk"][0] == pytest.approx(time_in_0, rel=1e-8)
    assert stats["time_at_risk"].sum() == pytest.approx(t, rel=1e-12)
    assert stats["jumps"][0, 1] == pytest.approx(jumps_01, rel=1e-8)
    assert stats["log_likelihood"] == pytest.approx(np.log(expm(rates * t)[a, b]), rel=1e-12)


def test_endpoint_statistics_match_simulation():
    rates = np.array([[-1.3, 1.3], [0.6, -0.6]])
    t = 1.7
    paths = _process(rates).sample(n_sequences=40_000, t_end=t, initial=0, random_state=5)
    ends = np.array([states[-1] for states in paths.states])
    kept = np.flatnonzero(ends == 1)
    jumps = np.array([np.sum(np.diff(paths.states[i]) == 1) for i in kept])
    in_0 = np.array([np.sum(np.diff(np.r_[paths.times[i], t])[np.array(paths.states[i]) == 0]) for i in kept])
    stats = endpoint_statistics(rates, np.array([0]), np.array([1]), np.array([t]))
    assert kept.size / 40_000 == pytest.approx(expm(rates * t)[0, 1], abs=0.01)
    assert jumps.mean() == pytest.approx(stats["jumps"][0, 1], abs=4 * jumps.std() / np.sqrt(kept.size))
    assert in_0.mean() == pytest.approx(stats["time_at_risk"][0], abs=4 * in_0.std() / np.sqrt(kept.size))


def test_intervals_of_equal_length_are_grouped_exactly():
    rng = np.random.default_rng(6)
    starts, ends = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    lengths = rng.choice([0.3, 1.1, 2.5], size=200)
    grouped = endpoint_statistics(RATES, starts, ends, lengths)
    one_by_one = sum(
        endpoint_statistics(RATES, starts[k : k + 1], ends[k : k + 1], lengths[k : k + 1]) for k in range(200)
    )
    for name in ("log_likelihood", "jumps", "time_at_risk"):
        np.testing.assert_allclose(grouped[name], one_by_one[name], rtol=1e-11)


def test_expm_metzler_matches_scipy():
    rng = np.random.default_rng(7)
    generators = rng.exponential(size=(50, 5, 5)) * (rng.random((50, 5, 5)) < 0.6)
    generators -= np.eye(5) * generators.sum(axis=2, keepdims=True)
    generators *= rng.choice([1e-3, 0.5, 3.0, 40.0], size=50)[:, None, None]
    reference = np.stack([expm(g) for g in generators])
    np.testing.assert_allclose(expm_metzler(generators), reference, rtol=1e-10, atol=1e-14)


def test_transition_probabilities_and_derived_laws():
    process = _process()
    np.testing.assert_allclose(process.transition_probability(0.0), np.eye(4))
    stack = process.transition_probability([0.4, 1.1])
    assert stack.shape == (2, 4, 4)
    np.testing.assert_allclose(stack[0] @ stack[1], process.transition_probability(1.5), atol=1e-13)
    np.testing.assert_allclose(stack.sum(axis=2), 1.0, atol=1e-13)
    pi = process.stationary_distribution()
    np.testing.assert_allclose(pi @ RATES, 0.0, atol=1e-12)
    np.testing.assert_allclose(process.transition_probability(200.0)[0], pi, atol=1e-10)
    jumps = process.jump_matrix()
    np.testing.assert_allclose(jumps.sum(axis=1), 1.0)
    np.testing.assert_allclose(jumps[2], [0.1 / 1.2, 0.6 / 1.2, 0.0, 0.5 / 1.2])
    holding = process.holding_time_distribution(2)
    assert holding.mean() == pytest.approx(1 / 1.2) and holding.cdf(1.0) == pytest.approx(1 - np.exp(-1.2))


def test_absorbing_state():
    process = _process(np.array([[-1.0, 1.0], [0.0, 0.0]]))
    np.testing.assert_allclose(process.jump_matrix(), [[0.0, 1.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match="absorbing"):
        process.holding_time_distribution(1)
    paths = process.sample(n_sequences=20, t_end=50.0, initial=0, random_state=0)
    assert all(states == [0, 1] for states in paths.states)


def test_sample_spends_stationary_time_in_states():
    process = _process()
    paths = process.sample(n_sequences=200, t_end=100.0, random_state=8)
    occupancy = np.zeros(4)
    for states, times in zip(paths.states, paths.times):
        assert times[0] == 0.0 and np.all(np.diff(times) > 0) and times[-1] < 100.0
        np.add.at(occupancy, states, np.diff(np.r_[times, 100.0]))
    np.testing.assert_allclose(occupancy / occupancy.sum(), process.stationary_distribution(), atol=0.01)


def test_n_steps_caps_the_states_a_path_enters():
    """Brute force on two steps: X(0) from ``initial``, X(1) from the jump chain, and each sojourn
    exponential with its state's exit rate; the record ends when the second state is left."""
    process = _process()
    start = np.array([0.1, 0.2, 0.3, 0.4])
    paths = process.sample(2, 40_000, random_state=3, initial=start)
    assert all(len(states) == 2 for states in paths.states)
    pairs = np.zeros((4, 4))
    np.add.at(pairs, tuple(np.array(paths.states).T), 1.0)
    np.testing.assert_allclose(pairs / pairs.sum(), start[:, None] * process.jump_matrix(), atol=0.006)
    second = np.array([states[1] for states in paths.states])
    entered = np.array([times[1] for times in paths.times])
    sojourn = paths.end_times - entered
    for i, rate in enumerate(process.exit_rates()):
        assert sojourn[second == i].mean() == pytest.approx(1 / rate, rel=0.05)
    assert entered.mean() == pytest.approx(start @ (1 / process.exit_rates()), rel=0.03)
    one = process.sample(5, random_state=0, t_end=2.0)  # whichever cap comes first
    assert len(one.states) == 1 and len(one.states[0]) <= 5 and one.end_times[0] <= 2.0
    absorbed = _process(np.array([[-1.0, 1.0], [0.0, 0.0]])).sample(4, 3, initial=0, random_state=0)
    assert absorbed.states == [[0, 1]] * 3 and np.isinf(absorbed.end_times).all()  # resting forever
    with pytest.raises(ValueError, match="not both None"):
        process.sample(None)
    with pytest.raises(ValueError, match="n_steps must be an integer >= 1"):
        process.sample(0)
    # the old sample(n_paths, t_end)
    with pytest.raises(
        ValueError, match=r"n_sequences must be an integer >= 1, got 10.0"
    ):  # the old sample(n_paths, t_end)
        process.sample(300, 10.0)


def test_paths_end_times_had_the_name_t_end():
    paths = _process().sample(n_sequences=2, t_end=3.0, random_state=0)
    np.testing.assert_array_equal(paths.end_times, [3.0, 3.0])
    with pytest.warns(DeprecationWarning, match="t_end is renamed end_times"):
        assert paths.t_end is paths.end_times


def test_observe_reads_the_state_at_each_time():
    paths = Paths([["a", "b", "a"]], [np.array([0.0, 1.0, 2.5])], 4.0)
    assert paths.observe([[0.0, 0.99, 1.0, 2.0, 3.9, 4.0]]) == [["a", "a", "b", "b", "a", "a"]]
    with pytest.raises(ValueError, match=r"must lie in \[0, 4.0\]"):
        paths.observe([[5.0]])
    each = Paths([["a", "b"], ["b"]], [np.array([0.0, 1.0]), np.array([0.0])], np.array([2.0, 0.5]))
    assert each.observe([[1.5], [0.5]]) == [["b"], ["b"]]
    with pytest.raises(ValueError, match=r"path 1: observation times must lie in \[0, 0.5\]"):
        each.observe([[1.5], [0.6]])


def test_labels_event_logs_and_unvisited_states(tmp_path):
    log = pd.DataFrame(
        {
            "case_id": ["p", "p", "p", "q", "q", "q"],
            "activity": ["well", "ill", "well", "ill", "well", "well"],
            "timestamp": [0.0, 1.0, 2.5, 0.0, 0.5, 3.0],
        }
    )
    model = MarkovJumpProcess().fit(log)
    assert model.states_ == ("ill", "well")
    assert np.isfinite(model.score(log))
    model.save(tmp_path / "process.msz")
    loaded = load(tmp_path / "process.msz")
    assert loaded.states_ == ("ill", "well") and loaded.score(log) == model.score(log)
    np.testing.assert_array_equal(loaded.rate_matrix_, model.rate_matrix_)
    assert loaded.holding_time_distribution("ill").mean() == model.holding_time_distribution("ill").mean()
    wide = MarkovJumpProcess(n_states=4).fit([[0, 2, 0]], times=[[0.0, 1.0, 2.0]])
    assert wide.states_ == (0, 1, 2, 3) and wide.rate_matrix_.shape == (4, 4)


def test_bad_input_is_reported():
    model = MarkovJumpProcess()
    with pytest.raises(NotFittedError):
        model.transition_probability(1.0)
    with pytest.raises(ValueError, match="needs time stamps"):
        model.fit([[0, 1]])
    with pytest.raises(ValueError, match="sequence 1 is empty"):
        model.fit([[0, 1], []], times=[[0.0, 1.0], []])
    with pytest.raises(ValueError, match="sequence 0, time step 1: time stamp is missing or not finite"):
        model.fit([[0, 1]], times=[[0.0, np.nan]])
    with pytest.raises(ValueError, match="sequence 0, time step 2: time stamps decrease"):
        model.fit([[0, 1, 0]], times=[[0.0, 2.0, 1.0]])
    with pytest.raises(ValueError, match="sequence 0, time step 1: time stamp repeats"):
        model.fit([[0, 1, 0]], times=[[0.0, 0.0, 1.0]])
    with pytest.raises(ValueError, match="at least one sequence with two observations"):
        model.fit([[0], [1]], times=[[0.0], [1.0]])
    with pytest.raises(ValueError, match="end_times apply to observation='paths'"):
        model.fit([[0, 1]], times=[[0.0, 1.0]], end_times=2.0)
    with pytest.raises(ValueError, match="path 0: end time 0.5 is before its last time stamp 1.0"):
        MarkovJumpProcess(observation="paths").fit([[0, 1]], times=[[0.0, 1.0]], end_times=0.5)
    with pytest.raises(ValueError, match="n_states=2, but the data have 3 distinct states"):
        MarkovJumpProcess(n_states=2).fit([[0, 1, 2]], times=[[0.0, 1.0, 2.0]])
    with pytest.raises(ValueError, match="observation must be one of"):
        MarkovJumpProcess(observation="hidden").fit([[0, 1]], times=[[0.0, 1.0]])
    with pytest.raises(ValueError, match="n_states must be an integer >= 1 or one of None, got 0"):
        MarkovJumpProcess(n_states=0).fit([[0, 1]], times=[[0.0, 1.0]])
    model.fit([[0, 1, 0]], times=[[0.0, 1.0, 2.0]])
    with pytest.raises(ValueError, match="sequence 0, time step 1: symbol 7 is not in the vocabulary"):
        model.score([[0, 7]], times=[[0.0, 1.0]])
    with pytest.raises(ValueError, match="unknown state 'x'"):
        model.holding_time_distribution("x")
    with pytest.raises(ValueError, match="times must be finite and non-negative"):
        model.transition_probability(-1.0)
    model.rate_matrix_ = [[-1.0, 0.5], [0.5, -0.5]]
    with pytest.raises(ValueError, match="rows must sum to 0"):
        model.sample(n_sequences=1, t_end=1.0)
    model.rate_matrix_ = [[1.0, -1.0], [0.5, -0.5]]
    with pytest.raises(ValueError, match="non-negative off-diagonal"):
        model.sample(n_sequences=1, t_end=1.0)


def test_impossible_change_scores_minus_infinity_and_stops_a_fit():
    """The contract's rule: score gives log 0 = -inf for data of probability 0; EM cannot start from it."""
    model = _process(np.array([[-1.0, 1.0], [0.0, 0.0]]))
    assert model.score([[0, 1, 0]], times=[[0.0, 1.0, 2.0]]) == -np.inf
    assert np.isfinite(model.score([[0, 1, 1]], times=[[0.0, 1.0, 2.0]]))
    with pytest.raises(ValueError, match="interval 1: the change 1 -> 0 has probability 0"):
        endpoint_statistics(model.rate_matrix_, np.array([0, 1]), np.array([1, 0]), np.array([1.0, 1.0]))


# ------------------------------------------------------------ the estimator contract


def test_only_time_differences_matter():
    states, times = [[0, 1, 0, 2], [1, 2, 1]], [[0.0, 1.5, 2.0, 4.0], [0.0, 0.25, 3.0]]
    model = MarkovJumpProcess(n_iter=20, tol=-np.inf)
    with pytest.warns(ConvergenceWarning):
        model.fit(states, times=times)
    shifted = MarkovJumpProcess(n_iter=20, tol=-np.inf)
    with pytest.warns(ConvergenceWarning):
        shifted.fit(states, times=[np.asarray(t) - 1000.0 for t in times])  # negative stamps are stamps too
    np.testing.assert_allclose(shifted.rate_matrix_, model.rate_matrix_, rtol=1e-9)


def test_warm_start_continues_em_and_n_iter_zero_only_initialises(snapshots):
    states, times = snapshots[1][:100], snapshots[2][:100]
    # plain EM: an accelerated run restarts its SQUAREM cycle at the warm start
    long = MarkovJumpProcess(n_iter=6, tol=-np.inf, accelerate=False)
    with pytest.warns(ConvergenceWarning, match="MarkovJumpProcess"):
        long.fit(states, times=times)
    assert long.n_iter_ == 6 and not long.converged_
    warm = MarkovJumpProcess(n_iter=2, tol=-np.inf, accelerate=False)
    with pytest.warns(ConvergenceWarning):
        warm.fit(states, times=times)
        warm.set_params(warm_start=True, n_iter=4).fit(states, times=times)
    np.testing.assert_allclose(warm.history_, long.history_[2:], rtol=1e-12)
    np.testing.assert_allclose(warm.rate_matrix_, long.rate_matrix_, rtol=1e-10)
    initialised = MarkovJumpProcess(n_iter=0).fit(states, times=times)
    assert initialised.history_ == [] and initialised.n_iter_ == 0
    np.testing.assert_allclose(initialised.rate_matrix_.sum(axis=1), 0.0, atol=1e-12)
    # a refit forgets the first fit's states and rates
    refit = MarkovJumpProcess().fit([["x", "y"]], times=[[0.0, 1.0]]).fit(states, times=times)
    fresh = MarkovJumpProcess().fit(states, times=times)
    assert refit.states_ == fresh.states_
    np.testing.assert_array_equal(refit.rate_matrix_, fresh.rate_matrix_)


def test_hand_set_rates_start_em():
    process = _process(n_iter=1)
    states, times = [[0, 1, 3, 2], [2, 2, 0]], [[0.0, 0.7, 1.1, 3.0], [0.0, 0.5, 2.0]]
    start = process.score(states, times=times)
    with pytest.warns(ConvergenceWarning):
        process.fit(states, times=times)
    assert process.history_ == [pytest.approx(start)]


def test_information_criteria_data_forms_and_the_old_history_name():
    process = _process()
    states, times = [[0, 1, 3, 2], [2, 2, 0]], [[0.0, 0.7, 1.1, 3.0], [0.0, 0.5, 2.0]]
    log_likelihood = process.score(states, times=times)
    assert process.n_parameters == 12
    assert process.aic(states, times=times) == pytest.approx(-2 * log_likelihood + 24)
    assert process.bic(states, times=times) == pytest.approx(-2 * log_likelihood + 12 * np.log(5))  # 5 intervals
    flat = process.score([0, 1, 3, 2, 2, 2, 0], [4, 3], times=[0.0, 0.7, 1.1, 3.0, 0.0, 0.5, 2.0])
    assert flat == pytest.approx(log_likelihood)
    fitted = MarkovJumpProcess().fit(states, times=times)
    with pytest.warns(DeprecationWarning, match="log_likelihood_history_ is renamed history_"):
        assert fitted.log_likelihood_history_ == fitted.history_


def test_a_stationary_law_needs_one_closed_class():
    process = _process(np.array([[-1.0, 0.5, 0.5], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))  # two absorbing states
    with pytest.raises(ValueError, match=r"2 closed classes \(\{1\}; \{2\}\)"):
        process.stationary_distribution()
    paths = process.sample(n_sequences=5, t_end=100.0, initial=0, random_state=0)  # from a given start it runs
    assert all(states[0] == 0 and states[-1] in (1, 2) for states in paths.states)


def test_intervals_too_long_for_double_precision_are_named():
    """exp(Q t) with Q t ~ 1e100 is out of reach: one ValueError naming the interval (was a NaN score)."""
    model = _process(np.array([[-1.0, 1.0], [2.0, -2.0]]))
    with pytest.raises(ValueError, match=r"interval 0 lasts 1e\+100: .* not finite.*larger units"):
        model.score([[0, 1, 0]], times=[[0.0, 1e100, 2e100]])
