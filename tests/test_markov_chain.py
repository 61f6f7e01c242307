"""MarkovChain: estimators against their formulas, the analysis of fitted chains against closed forms, KL
risk rates, the next-element layout, higher orders, the estimator contract, persistence and bad input."""

from __future__ import annotations

import math
import time
import tracemalloc
from contextlib import nullcontext

import numpy as np
import pandas as pd
import pytest
from scipy.special import rel_entr

import modeshift
from modeshift import MarkovChain, NotFittedError
from modeshift.chain_analysis import chain_structure, entropy_rate, mixing_time, stationary_distribution
from modeshift.data import as_sequences
from modeshift.models.markov_chain import SMOOTHINGS, smooth
from modeshift.symbols import END, UNKNOWN, next_targets

# sequences of counts: first symbols a, a, b; after a: a once, b twice; after b: the end three times
DATA = [list("aab"), list("ab"), list("b")]


def _pairs(counts, symbols="abc"):
    """Two-symbol sequences whose transition counts are ``counts`` (so ML gives counts / row sums)."""
    return [[symbols[i], symbols[j]] for (i, j), n in np.ndenumerate(np.asarray(counts)) for _ in range(n)]


def _sample_path(P, n_steps, rng, start=0):
    path = np.empty(n_steps, dtype=np.int64)
    path[0] = start
    cumulative, uniforms = np.cumsum(P, axis=1), rng.random(n_steps)
    for t in range(1, n_steps):
        path[t] = np.searchsorted(cumulative[path[t - 1]], uniforms[t], side="right")
    return path


# ----------------------------------------------------------------------- estimators


def test_smooth_closed_forms():
    counts = [3, 1, 0]
    np.testing.assert_allclose(smooth(counts, "ml"), [3 / 4, 1 / 4, 0])
    np.testing.assert_allclose(smooth(counts, "laplace"), np.array([4, 2, 1]) / 7)
    np.testing.assert_allclose(smooth(counts, "kt"), np.array([3.5, 1.5, 0.5]) / 5.5)
    np.testing.assert_allclose(smooth(counts, 2), np.array([5, 3, 2]) / 10)
    # Braess-Sauer: 3/4 for counts >= 2, 1 for a single count, 1/2 for none
    np.testing.assert_allclose(smooth(counts, "minimax"), np.array([3.75, 2.0, 0.5]) / 6.25)
    np.testing.assert_allclose(smooth([[0, 0], [2, 0]], "ml"), [[0.5, 0.5], [1.0, 0.0]])  # no counts: uniform
    np.testing.assert_allclose(smooth(np.zeros((2, 3, 4)), "minimax"), np.full((2, 3, 4), 0.25))


@pytest.mark.parametrize(
    "smoothing, after_a, after_b, first",
    [
        ("ml", [1 / 3, 2 / 3, 0], [0, 0, 1], [2 / 3, 1 / 3]),
        ("laplace", [2 / 6, 3 / 6, 1 / 6], [1 / 6, 1 / 6, 4 / 6], [3 / 5, 2 / 5]),
        ("kt", [1.5 / 4.5, 2.5 / 4.5, 0.5 / 4.5], [0.5 / 4.5, 0.5 / 4.5, 3.5 / 4.5], [2.5 / 4, 1.5 / 4]),
        (2.0, [3 / 9, 4 / 9, 2 / 9], [2 / 9, 2 / 9, 5 / 9], [4 / 7, 3 / 7]),
        ("minimax", np.array([2, 2.75, 0.5]) / 5.25, np.array([0.5, 0.5, 3.75]) / 4.75, np.array([2.75, 2]) / 4.75),
    ],
)
def test_fitted_distributions_equal_the_estimator_on_hand_counts(smoothing, after_a, after_b, first):
    chain = MarkovChain(smoothing=smoothing).fit(DATA)
    assert chain.vocabulary_.symbols == ("a", "b")
    np.testing.assert_array_equal(chain.counts_.toarray(), [[1, 2, 0, 0], [0, 0, 0, 3], [2, 1, 0, 0]])
    a, b, _, end = chain.next_distribution(["a"]).to_numpy()
    np.testing.assert_allclose([a, b, end], after_a)
    np.testing.assert_allclose(chain.next_distribution(["b"])[["a", "b", END]].to_numpy(), after_b)
    np.testing.assert_allclose(chain.initial_distribution_, first)
    np.testing.assert_allclose(chain.next_distribution([])[["a", "b"]].to_numpy(), first)
    assert chain.next_distribution([])[END] == 0.0 and chain.next_distribution(["a"])[UNKNOWN] == 0.0
    np.testing.assert_allclose(chain.end_probability_, [after_a[2], after_b[2]])
    # the dynamics: the same estimator on the transition counts alone; 'b' never continued -> uniform
    warns = pytest.warns(UserWarning, match="1 of 2 contexts were never followed")
    with warns if smoothing == "ml" else nullcontext():
        np.testing.assert_allclose(chain.transmat_, [smooth([1, 2], smoothing), [0.5, 0.5]])


def test_unknown_map_gives_the_unseen_outcome_mass_and_a_state():
    chain = MarkovChain(smoothing="kt", unknown="map").fit(DATA)
    assert chain.states_ == ["a", "b", UNKNOWN]
    # after 'a': counts a 1, b 2, unknown 0, end 0 -> add 1/2 to each of the four outcomes
    np.testing.assert_allclose(chain.next_distribution(["a"]).to_numpy(), np.array([1.5, 2.5, 0.5, 0.5]) / 5)
    np.testing.assert_allclose(chain.initial_distribution_, np.array([2.5, 1.5, 0.5]) / 4.5)
    # after an unknown symbol: a context never seen, so every outcome alike
    np.testing.assert_allclose(chain.next_distribution(["a", "zebra"]).to_numpy(), np.full(4, 0.25))
    np.testing.assert_allclose(chain.transmat_.sum(axis=1), 1.0)
    assert chain.transmat_.shape == (3, 3)
    minimax = MarkovChain(smoothing="minimax", unknown="map").fit(DATA)
    np.testing.assert_allclose(minimax.next_distribution(["a"])[UNKNOWN], 0.5 / (2 + 2.75 + 0.5 + 0.5))


# ------------------------------------------------------------------- chain analysis


def test_three_state_closed_forms_through_fitted_chains():
    # a birth-death chain: pi = (1/4, 1/2, 1/4) by detailed balance; rows of entropy log 2, 1.5 log 2, log 2
    chain = MarkovChain(smoothing="ml").fit(_pairs([[2, 2, 0], [1, 2, 1], [0, 2, 2]]))
    np.testing.assert_allclose(chain.transmat_, [[0.5, 0.5, 0], [0.25, 0.5, 0.25], [0, 0.5, 0.5]])
    np.testing.assert_allclose(chain.stationary_distribution(), [0.25, 0.5, 0.25], atol=1e-14)
    assert chain.entropy_rate(base=2) == pytest.approx(1.25, rel=1e-12)
    uniform = MarkovChain(smoothing="ml").fit(_pairs(np.ones((3, 3), dtype=int)))
    # KL to the uniform chain = log 3 - entropy rate
    assert chain.kl_divergence_rate(uniform) == pytest.approx(math.log(3) - 1.25 * math.log(2), rel=1e-12)
    assert uniform.kl_divergence_rate(chain) == math.inf  # the uniform chain jumps a -> c, which chain cannot


def test_divergence_rates_match_states_by_symbol():
    P = np.array([[0.75, 0.25], [0.5, 0.5]])
    chain = MarkovChain(smoothing="ml").fit(_pairs([[3, 1], [2, 2]]))
    # the other chain's vocabulary is (b, a, c): rows and columns are matched by symbol, not by code
    other = MarkovChain(smoothing="ml").fit(_pairs([[3, 1, 0], [1, 1, 2], [1, 1, 2]], symbols="bac"))
    assert other.vocabulary_.symbols[:2] == ("b", "a")
    Q = np.array([[1 / 4, 1 / 4], [1 / 4, 3 / 4]])  # a -> (a, b) and b -> (a, b) in other, mass on c elsewhere
    pi = np.array([2, 1]) / 3
    expected = float(pi @ rel_entr(P, Q).sum(axis=1))
    assert chain.kl_divergence_rate(other) == pytest.approx(expected, rel=1e-12)
    tv_rows = np.abs(P - Q).sum(axis=1) / 2 + (1 - Q.sum(axis=1)) / 2  # other's mass on c counts
    assert chain.f_divergence_rate(other, "total_variation") == pytest.approx(pi @ tv_rows, rel=1e-12)
    with pytest.raises(ValueError, match="differ in order"):
        chain.kl_divergence_rate(MarkovChain(order=2).fit(DATA))
    with pytest.raises(TypeError, match="MarkovChain"):
        chain.kl_divergence_rate(P)
    with pytest.raises(ValueError, match="f must be one of"):
        chain.f_divergence_rate(other, "js")


@pytest.mark.parametrize("text, period", [("abababab", 2), ("abcabcabc", 3), ("abcbabcbabcba", 2)])
def test_periodic_chains(text, period):
    chain = MarkovChain(smoothing="ml").fit([list(text)])
    structure = chain.structure()
    assert structure.irreducible and structure.closed == (True,) and structure.periods == (period,)
    assert not structure.aperiodic
    assert f"period {period}" in str(structure)
    with pytest.raises(ValueError, match=f"periodic \\(period {period}"):
        chain.mixing_time()
    pi = chain.stationary_distribution()  # unique although the chain never mixes
    np.testing.assert_allclose(pi @ chain.transmat_, pi, atol=1e-14)


def test_reducible_chain_with_one_closed_class():
    chain = MarkovChain(smoothing="ml").fit([list("aabbb")])  # a -> a, a -> b, then b forever
    structure = chain.structure()
    assert structure.classes == (("a",), ("b",))
    assert structure.closed == (False, True) and structure.periods == (1, 1)
    assert not structure.irreducible and structure.closed_classes == (("b",),)
    np.testing.assert_allclose(chain.stationary_distribution(), [0.0, 1.0], atol=1e-14)
    assert chain.mixing_time(0.3) == 2  # from a, still there with probability 2^-t
    assert chain.entropy_rate() == pytest.approx(0.0, abs=1e-14)
    lonely = chain_structure([[0.0, 1.0], [0.0, 1.0]], states=["x", "y"])  # x lies on no cycle
    assert lonely.periods == (None, 1) and "no cycle" in str(lonely)


def test_reducible_chain_with_two_closed_classes_is_reported():
    chain = MarkovChain(smoothing="ml").fit([list("aaa"), list("bbb"), list("cb")])
    structure = chain.structure()
    assert structure.classes == (("a",), ("b",), ("c",))
    assert structure.closed == (True, True, False)
    text = str(structure)
    assert text.startswith("3 communicating classes") and "transient" in text
    for method in (chain.stationary_distribution, chain.mixing_time, chain.entropy_rate):
        with pytest.raises(ValueError, match=r"2 closed classes \(\{'a'\}; \{'b'\}\)"):
            method()


def test_kl_risk_of_every_estimator_falls_as_one_over_n():
    """E sum_i pi_i KL(P_i || P^_i) ~ k(k - 1) / 2n for transition probabilities bounded away from 0
    (Hao, Orlitsky & Pichapati 2018). 400 paths per size, sizes 500..8000, fixed seed: the fitted
    log-log slope must be -1 within 0.1 and n * risk within 15% of k(k - 1) / 2 (measured: 0.015, 4%)."""
    P = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.3, 0.2, 0.5]])
    k, n_paths, sizes = 3, 400, np.array([500, 1000, 2000, 4000, 8000])
    pi = stationary_distribution(P)
    rng = np.random.default_rng(1)
    paths = np.empty((n_paths, sizes[-1]), dtype=np.int64)
    paths[:, 0] = rng.choice(k, n_paths, p=pi)
    cumulative, uniforms = np.cumsum(P, axis=1), rng.random((n_paths, sizes[-1]))
    for t in range(1, sizes[-1]):
        paths[:, t] = (cumulative[paths[:, t - 1]] < uniforms[:, t, None]).sum(axis=1)
    pairs = np.arange(n_paths)[:, None] * k * k + paths[:, :-1] * k + paths[:, 1:]
    counts = {n: np.bincount(pairs[:, : n - 1].ravel(), minlength=n_paths * k * k) for n in sizes}
    counts = {n: c.reshape(n_paths, k, k) for n, c in counts.items()}
    # the model's estimate is the estimator on its counts (its states are in order of first appearance)
    fitted = MarkovChain(smoothing="minimax").fit(paths[0, :500])
    states = list(fitted.states_)
    np.testing.assert_allclose(fitted.transmat_, smooth(counts[500][0], "minimax")[np.ix_(states, states)])
    for smoothing in (*SMOOTHINGS, 2.0):
        risks = np.array([np.mean(rel_entr(P, smooth(counts[n], smoothing)).sum(axis=-1) @ pi) for n in sizes])
        slope = np.polyfit(np.log(sizes), np.log(risks), 1)[0]
        assert slope == pytest.approx(-1.0, abs=0.1), smoothing
        assert sizes[-1] * risks[-1] == pytest.approx(k * (k - 1) / 2, rel=0.15), smoothing


# -------------------------------------------------------------------- prediction


def test_next_symbol_proba_layout_matches_hand_computation_and_score():
    chain = MarkovChain(smoothing="kt").fit(DATA)
    test = [list("ab"), list("bba")]
    proba = chain.next_symbol_proba(test)
    assert proba.shape == (5 + 2, 4)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    first, after_a = np.array([2.5, 1.5, 0, 0]) / 4, np.array([1.5, 2.5, 0, 0.5]) / 4.5
    after_b = np.array([0.5, 0.5, 0, 3.5]) / 4.5
    np.testing.assert_allclose(proba, [first, after_a, after_b, first, after_b, after_b, after_a])
    targets = next_targets(as_sequences(test, vocabulary=chain.vocabulary_))
    np.testing.assert_array_equal(targets, [0, 1, 3, 1, 1, 0, 3])
    assert chain.score(test) == pytest.approx(np.log(proba[np.arange(7), targets]).sum(), rel=1e-12)
    for row, prefix in zip(proba[:3], ([], ["a"], ["a", "b"])):
        np.testing.assert_allclose(chain.next_distribution(prefix).to_numpy(), row)


def test_unknown_symbols_under_each_policy():
    test = [["a", "zebra", "b"]]
    with pytest.raises(ValueError, match="sequence 0, time step 1: symbol 'zebra' is not in the vocabulary"):
        MarkovChain().fit(DATA).score(test)
    ignore = MarkovChain(unknown="ignore").fit(DATA)
    assert ignore.score(test) == pytest.approx(ignore.score([["a", "b"]]), rel=1e-12)
    proba = ignore.next_symbol_proba(test)
    assert proba[1, 2] == 0.0  # the unknown symbol gets nothing, and the context skips it
    np.testing.assert_allclose(proba[2], proba[1])
    mapped = MarkovChain(unknown="map").fit(DATA)
    proba = mapped.next_symbol_proba(test)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert proba[1, 2] > 0 and np.isfinite(mapped.score(test))
    targets = next_targets(as_sequences(test, vocabulary=mapped.vocabulary_, unknown="map"))
    assert mapped.score(test) == pytest.approx(np.log(proba[np.arange(4), targets]).sum(), rel=1e-12)


def test_predict_next_top_k_with_end_sentinel():
    chain = MarkovChain(smoothing="ml").fit([list("abab"), list("aab"), list("ba")])
    assert chain.predict_next(["a", "b"], k=2) == [("a", 0.5), (END, 0.5)]
    assert chain.predict_next("b", k=1) == [("a", 0.5)]
    assert chain.predict_next([], k=5) == [("a", pytest.approx(2 / 3)), ("b", pytest.approx(1 / 3))]
    assert chain.predict_next(["a"], k=5)[0] == ("b", 0.6)
    with pytest.raises(ValueError, match="one sequence"):
        chain.predict_next([["a"], ["b"]])


# ------------------------------------------------------------------- higher orders


def test_order_two_recovers_a_known_order_two_source():
    p_one = {(0, 0): 0.1, (0, 1): 0.8, (1, 0): 0.3, (1, 1): 0.6}  # p(x_t = 1 | x_t-2, x_t-1)
    rng = np.random.default_rng(3)
    x, uniforms = [0, 1], rng.random(60_000)
    for u in uniforms:
        x.append(int(u < p_one[x[-2], x[-1]]))
    chain = MarkovChain(order=2, smoothing="kt").fit(np.array(x))
    assert chain.states_ == [(0, 0), (0, 1), (1, 0), (1, 1)]
    truth = np.zeros((4, 4))
    for i, (first, second) in enumerate(chain.states_):
        truth[i, 2 * second + 1], truth[i, 2 * second] = p_one[first, second], 1 - p_one[first, second]
        assert chain.next_distribution([first, second])[1] == pytest.approx(p_one[first, second], abs=0.02)
    np.testing.assert_allclose(chain.transmat_, truth, atol=0.02)
    np.testing.assert_allclose(chain.stationary_distribution(), stationary_distribution(truth), atol=0.01)
    assert chain.entropy_rate() == pytest.approx(entropy_rate(truth), abs=0.01)
    assert abs(chain.mixing_time(0.1) - mixing_time(truth, 0.1)) <= 1
    order_one = MarkovChain(order=1).fit(np.array(x))  # blind to the second lag
    assert order_one.entropy_rate() > entropy_rate(truth) + 0.015


def test_contexts_never_span_two_sequences():
    chain = MarkovChain(order=2, smoothing="ml").fit([["a", "b"], ["b", "a"]])
    assert chain.counts_.sum() == 6  # two rows per element plus an end row per sequence
    assert chain.next_distribution(["a", "b"])[END] == 1.0  # not followed by the next sequence's 'b'
    assert chain.next_distribution(["b"])["a"] == 1.0  # the start of the second sequence
    np.testing.assert_allclose(chain.next_distribution(["b", "b"])[["a", "b", END]].to_numpy(), 1 / 3)  # unseen
    assert len(chain.context_keys_) == 5  # (start, start), (start, a), (start, b), (a, b), (b, a)


def test_analysis_refuses_dense_matrices_past_the_cap():
    chain = MarkovChain(order=3).fit(np.arange(20))
    with pytest.raises(ValueError, match="20\\^3 = 8000 states"):
        chain.stationary_distribution()
    assert chain.predict_next([1, 2, 3], k=1)[0][0] == 4
    with pytest.raises(ValueError, match="beyond 64 bits"):
        MarkovChain(order=6).fit(np.arange(1000))


# ------------------------------------------------------------------------ sampling


def test_sample_sequences_stop_at_the_end_or_at_n_steps():
    assert MarkovChain(smoothing="ml").fit([list("ab")]).sample(5, 3, random_state=0) == [["a", "b"]] * 3
    assert MarkovChain(smoothing="ml").fit([list("ab")]).sample(5, random_state=0) == ["a", "b"]  # one: a list
    chain = MarkovChain(order=2).fit([list("abcab"), list("cab")])
    one, two = chain.sample(4, 20, random_state=5), chain.sample(4, 20, random_state=5)
    assert one == two and len(one) == 20
    assert all(1 <= len(s) <= 4 and set(s) <= {"a", "b", "c"} for s in one)
    assert any(len(s) < 4 for s in one) and any(len(s) == 4 for s in one)  # ended, and cut by the cap
    with pytest.raises(ValueError, match="n_steps must be an integer >= 1"):
        chain.sample(0)
    with pytest.raises(ValueError, match="n_sequences must be an integer >= 1"):
        chain.sample(3, 0)


def test_sampled_lengths_follow_the_end_probabilities():
    """A chain that ends after each symbol with probability 1/4: lengths are geometric, capped at n_steps."""
    chain = MarkovChain(smoothing="ml").fit([["a"] * 3 + ["b"]] * 3 + [["b"]])  # 'a' never ends; 'b' ends
    # p(first = a) = 3/4; a -> a 2/3, a -> b 1/3; b always ends: lengths 1 + Geometric
    lengths = np.array([len(s) for s in chain.sample(6, 20_000, random_state=1)])
    expected = np.array([0.25] + [0.75 * (2 / 3) ** (n - 2) * (1 / 3) for n in range(2, 6)])
    expected = np.r_[expected, 1 - expected.sum()]  # length 6: ended there or cut
    np.testing.assert_allclose(np.bincount(lengths, minlength=7)[1:] / lengths.size, expected, atol=0.01)


def test_sample_paths_of_the_dynamics():
    cycle = MarkovChain(smoothing="ml").fit([list("abcabc")])
    assert cycle.sample(7, random_state=0, stop_at_end=False) == list("abcabca")
    order_two = MarkovChain(order=2, smoothing="ml").fit([list("aabaabaab")])
    assert order_two.sample(9, random_state=0, stop_at_end=False) == list("aabaabaab")
    paths = order_two.sample(9, 3, random_state=0, stop_at_end=False)
    assert paths == [list("aabaabaab")] * 3


def test_the_old_sample_form_warns_and_keeps_its_meaning():
    chain = MarkovChain(smoothing="ml").fit([list("ab")])
    with pytest.warns(DeprecationWarning, match=r"sample\(n_steps, n_sequences\)"):
        assert chain.sample(n_sequences=1, random_state=0) == [["a", "b"]]  # always a list of sequences
    long = MarkovChain().fit([list("ab" * 500)])
    with pytest.warns(DeprecationWarning), pytest.warns(UserWarning, match="max_length=3"):
        cut = long.sample(4, random_state=0, max_length=3)  # the first argument was n_sequences
    assert len(cut) == 4 and all(len(s) <= 3 for s in cut)


# ------------------------------------------------------------ the estimator contract


def test_every_data_form_and_a_fresh_refit():
    flat = MarkovChain(smoothing="ml").fit(list("aabab"), [3, 2])  # cut by lengths: 'aab', 'ab'
    listed = MarkovChain(smoothing="ml").fit([list("aab"), list("ab")])
    np.testing.assert_array_equal(flat.counts_.toarray(), listed.counts_.toarray())
    log = pd.DataFrame({"case": [2, 1, 1, 2, 1], "event": list("bbaaa"), "t": [1.0, 2.0, 0.0, 0.0, 1.0]})
    from_log = MarkovChain(smoothing="ml").fit(log, id_column="case", symbol_column="event", time_column="t")
    np.testing.assert_array_equal(from_log.counts_.toarray(), listed.counts_.toarray())  # cases 'aab', 'ab'
    assert flat.score(list("abab"), [2, 2]) == flat.score([list("ab"), list("ab")])
    # a second fit forgets the first: it equals a fresh fit, vocabulary included
    refit = MarkovChain(smoothing="ml").fit(DATA).fit([list("xyz")])
    fresh = MarkovChain(smoothing="ml").fit([list("xyz")])
    assert refit.vocabulary_ == fresh.vocabulary_ and "_stored_pairs" not in refit.__dict__
    np.testing.assert_array_equal(refit.counts_.toarray(), fresh.counts_.toarray())


def test_clone_and_changed_hyperparameters_take_effect():
    sklearn_base = pytest.importorskip("sklearn.base")
    chain = MarkovChain(order=2, smoothing="laplace").fit(DATA)
    copy = sklearn_base.clone(chain)
    assert copy.get_params() == chain.get_params() and "counts_" not in copy.__dict__
    kt = chain.next_distribution(["a"])
    chain.set_params(smoothing="ml").fit(DATA)
    assert not np.allclose(chain.next_distribution(["a"]), kt)
    with pytest.raises(ValueError, match="MarkovChain: order must be an integer >= 1, got 0"):
        chain.set_params(order=0).fit(DATA)


def test_transition_matrix_is_the_deprecated_name_of_transmat():
    chain = MarkovChain().fit(DATA)
    with pytest.warns(DeprecationWarning, match="transition_matrix_ is renamed transmat_"):
        old = chain.transition_matrix_
    np.testing.assert_array_equal(old, chain.transmat_)


def test_parameter_count_and_information_criteria():
    chain = MarkovChain(smoothing="kt").fit(DATA)
    # contexts seen: the start (outcomes a, b: no END first), 'a' and 'b' (a, b, END): 1 + 2 + 2
    assert chain.n_parameters == 5
    mapped = MarkovChain(smoothing="kt", unknown="map").fit(DATA)
    assert mapped.n_parameters == 2 + 3 + 3  # UNKNOWN is one more outcome of every context
    order_two = MarkovChain(order=2).fit(DATA)
    assert len(order_two.context_keys_) == 5  # the start, (S, a), (a, a), (a, b), (S, b)
    assert order_two.n_parameters == 1 + 4 * 2
    test = [list("ab"), list("bba")]
    log_likelihood = chain.score(test)
    assert chain.aic(test) == pytest.approx(-2 * log_likelihood + 2 * 5)
    assert chain.bic(test) == pytest.approx(-2 * log_likelihood + 5 * np.log(5 + 2))  # 5 elements, 2 ends
    ignore = MarkovChain(unknown="ignore").fit(DATA)
    with_unknown = [list("azb")]
    assert ignore.bic(with_unknown) == pytest.approx(-2 * ignore.score(with_unknown) + 5 * np.log(3))


# ----------------------------------------------------------------------- persistence


@pytest.mark.parametrize(
    "data, params",
    [
        ([["home", "item", "cart"], ["home", "home", "pay"]], {"order": 2, "smoothing": "minimax", "unknown": "map"}),
        ([np.array([3, 1, 3, 2]), np.array([2, 2])], {"order": 1, "smoothing": 0.3, "unknown": "ignore"}),
    ],
)
def test_save_load_round_trip(tmp_path, data, params):
    chain = MarkovChain(**params).fit(data)
    chain.save(tmp_path / "chain.msz")
    loaded = modeshift.load(tmp_path / "chain.msz")
    assert isinstance(loaded, MarkovChain) and loaded.get_params() == chain.get_params()
    assert loaded.vocabulary_ == chain.vocabulary_
    np.testing.assert_array_equal(loaded.context_keys_, chain.context_keys_)
    np.testing.assert_array_equal(loaded.counts_.toarray(), chain.counts_.toarray())
    np.testing.assert_array_equal(loaded.next_symbol_proba(data), chain.next_symbol_proba(data))
    assert loaded.score(data) == chain.score(data)
    np.testing.assert_array_equal(loaded.transmat_, chain.transmat_)


def test_tuple_symbols_round_trip_and_others_are_refused_on_save(tmp_path):
    chain = MarkovChain().fit([[(1, 2), (3, 4), (1, 2)]])
    assert chain.states_ == [(1, 2), (3, 4)]
    chain.save(tmp_path / "chain.msz")
    assert modeshift.load(tmp_path / "chain.msz").vocabulary_ == chain.vocabulary_
    with pytest.raises(ValueError, match=r"cannot be saved"):
        MarkovChain().fit([[frozenset({1}), frozenset({2})]]).save(tmp_path / "other.msz")


# ------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "data, message",
    [
        ([], "no sequences given"),
        ([[]], "sequence 0 is empty"),
        ([["a"], []], "sequence 1 is empty"),
        ("", "sequence 0 is empty"),
        (42, "expected symbol sequences, got int"),
    ],
)
def test_fit_rejects_bad_sequences(data, message):
    with pytest.raises((ValueError, TypeError), match=message):
        MarkovChain().fit(data)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"order": 0}, "order must be an integer >= 1"),
        ({"order": 1.5}, "order must be an integer >= 1"),
        ({"smoothing": "good-turing"}, "smoothing must be one of"),
        ({"smoothing": -1.0}, "smoothing must be one of"),
        ({"unknown": "drop"}, "unknown must be one of"),
        ({"smoothing": "ml", "unknown": "map"}, "unknown='map' needs a smoothing"),
        ({"order": 10**12}, "needs keys beyond 64 bits"),  # at once, without forming base ** order
    ],
)
def test_bad_hyperparameters(params, message):
    with pytest.raises(ValueError, match=message):
        MarkovChain(**params).fit(DATA)


def test_unfitted_chain_says_so():
    chain = MarkovChain(order=2)
    assert repr(chain) == "MarkovChain(order=2)"
    for call in (lambda: chain.score(DATA), lambda: chain.predict_next([]), lambda: chain.transmat_):
        with pytest.raises(NotFittedError, match="not fitted"):
            call()


# --------------------------------------------------------------------------- scale


@pytest.mark.slow
@pytest.mark.parametrize("n_symbols", [20, 1000])
def test_order_three_on_ten_million_tokens(n_symbols):
    """Worst case for the sparse table: i.i.d. tokens, so almost every (context, next) pair is new
    for 1000 symbols. Measured on a 2-core VM: 0.7 s / 230 MiB (V=20), 2.7 s / 690 MiB (V=1000)."""
    tokens = np.random.default_rng(0).integers(0, n_symbols, 10**7)
    MarkovChain(order=3).fit(tokens[:100])  # load the compiled kernel first
    tracemalloc.start()
    start = time.perf_counter()
    chain = MarkovChain(order=3).fit(tokens)
    elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1.2 * 2**30 and elapsed < 30
    assert chain.counts_.sum() == 10**7 + 1
    assert np.isfinite(chain.score(tokens[:10_000]))
