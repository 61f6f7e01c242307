"""VariableOrderChain: Kneser-Ney and Witten-Bell values by hand, back-off, the next-element layout,
an order-2 source, unknown symbols, persistence, bad input and scale."""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest

import modeshift
from modeshift import MarkovChain, NotFittedError, VariableOrderChain
from modeshift.data import as_sequences
from modeshift.symbols import END, UNKNOWN, next_targets

# first symbols: a, a, b; 'a' is followed by 'b' twice; 'b' by the end three times
TINY = [list("ab"), list("ab"), list("b")]


def _row(model, prefix):
    return model.next_distribution(prefix)[["a", "b", UNKNOWN, END]].to_numpy()


# ------------------------------------------------------------------------ by hand


def test_kneser_ney_by_hand_order_one():
    model = VariableOrderChain(max_order=1, discount=0.5).fit(TINY)
    # order 0, continuation counts: 'a' follows {start}, 'b' follows {start, a}, END follows {b}: 1, 2, 1 of 4;
    # lambda_0 = d * 3 outcomes / 4 = 3/8 spread over the 3 outcomes: p_0 = (1/8, 3/8, 1/8) + 1/8 = (1/4, 1/2, 1/4)
    # after 'b' (counts: END 3; lambda = 1/2 * 1 / 3): END (3 - 1/2) / 3 + 1/6 * 1/4, the others 1/6 * p_0
    np.testing.assert_allclose(_row(model, ["b"]), [1 / 24, 1 / 12, 0, 0.875])
    # after 'a' (counts: b 2): (2 - 1/2) / 2 + (1/2 * 1 / 2) * p_0
    np.testing.assert_allclose(_row(model, ["a"]), [0.25 * 0.25, 0.75 + 0.25 * 0.5, 0, 0.25 * 0.25])
    # at the start (counts a 2, b 1; lambda = 1/2 * 2 / 3): (1/2 + 1/12, 1/6 + 1/6, END 1/12), END removed
    np.testing.assert_allclose(_row(model, []), [7 / 11, 4 / 11, 0, 0])


def test_kneser_ney_unseen_context_is_order_zero():
    model = VariableOrderChain(max_order=1, discount=0.5, unknown="map").fit(TINY)
    # p_0 with a uniform over 4 outcomes (UNKNOWN too): terms (1/8, 3/8, 0, 1/8) + 3/8 * 1/4
    np.testing.assert_allclose(_row(model, ["z"]), [0.21875, 0.46875, 0.09375, 0.21875])


def test_kneser_ney_by_hand_continuation_counts_and_the_start():
    model = VariableOrderChain(max_order=2, discount=0.5).fit([list("cab"), list("cab"), list("dab")])
    # order 0 continuation counts: c {S}, a {c, d}, b {a}, d {S}, END {b}: 6 in all, 5 outcomes,
    # lambda_0 = 5/12, so p_0(b) = 1/2 / 6 + 1/12 = 1/6 and p_0(END) = 1/6
    # order 1 after 'a': 'a b' follows two distinct symbols (c, d), not its 3 raw counts:
    # p_1(b | a) = (2 - 1/2) / 2 + 1/2 * 1 / 2 * 1/6 = 19/24
    assert model.next_distribution(["b", "a"])["b"] == pytest.approx(19 / 24)  # 'b a' unseen: backs off
    assert model.next_distribution(["c", "a"])["b"] == pytest.approx(0.75 + 0.25 * 19 / 24)  # raw counts 2 of 2
    # contexts at the start keep their raw counts (S -> c twice, d once): p_1(c | S) = 1/2 + 1/3 * 1/6 = 5/9,
    # p_2(c | S S) = 1/2 + 1/3 * 5/9 and p_2(END | S S) = 1/3 * 1/3 * 1/6 = 1/54, removed
    assert model.next_distribution([])["c"] == pytest.approx((0.5 + 5 / 27) / (1 - 1 / 54))


def test_witten_bell_by_hand():
    model = VariableOrderChain(max_order=1, method="witten_bell").fit(TINY)
    # order 0: counts a 2, b 3, END 3 (8), 3 outcomes seen: p_0 = (c + 3 * 1/3) / 11 = (3, 4, 4) / 11
    np.testing.assert_allclose(_row(model, ["a"]), [3 / 33, 26 / 33, 0, 4 / 33])  # (c + 1 * p_0) / (2 + 1)
    np.testing.assert_allclose(_row(model, ["b"]), [3 / 44, 1 / 11, 0, (3 + 4 / 11) / 4])  # (c + p_0) / (3 + 1)


# ------------------------------------------------------------------ the layout


@pytest.mark.parametrize("method", ["kneser_ney", "witten_bell"])
@pytest.mark.parametrize("unknown", ["error", "ignore", "map"])
def test_rows_sum_to_one_and_score_is_their_log(method, unknown):
    train = [list("abcab"), list("abc"), list("cab"), list("bbca")]
    model = VariableOrderChain(max_order=3, method=method, unknown=unknown).fit(train)
    test = [list("abcab"), list("ba"), list("c")] + ([list("azb")] if unknown != "error" else [])
    proba = model.next_symbol_proba(test)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    seqs = as_sequences(test, vocabulary=model.vocabulary_, unknown="map")
    targets = next_targets(seqs)
    right = proba[np.arange(len(targets)), targets]
    scored = targets != 3 if unknown == "ignore" else np.ones(len(targets), dtype=bool)
    assert model.score(test) == pytest.approx(np.log(right[scored]).sum())
    assert (proba[seqs.offsets[:-1] + np.arange(len(test)), -1] == 0).all()  # no END first
    assert (proba[:, 3] > 0).all() == (unknown == "map")


def test_backs_off_where_a_chain_predicts_uniform():
    train = [list("abcabcab"), list("acb")]
    unseen = ["b", "b", "a"]  # neither 'b b a' nor 'b a' occurred; 'a' was followed by 'b' 3 times in 4
    chain = MarkovChain(order=3).fit(train)
    np.testing.assert_allclose(chain.next_distribution(unseen)[["a", "b", "c", END]].to_numpy(), 0.25)
    for method in ("kneser_ney", "witten_bell"):
        assert VariableOrderChain(3, method=method).fit(train).predict_next(unseen, k=1)[0][0] == "b"
    # Witten-Bell mixes raw counts at every order, so backing off to 'a' is the order-1 model's row
    backed_off = VariableOrderChain(3, method="witten_bell").fit(train).next_distribution(unseen)
    order_one = VariableOrderChain(1, method="witten_bell").fit(train).next_distribution(["a"])
    np.testing.assert_allclose(backed_off, order_one)


def test_is_a_markov_chain_of_its_longest_order():
    model = VariableOrderChain(max_order=2).fit([list("aabab"), list("bba")])
    assert model.order == 2 and isinstance(model, MarkovChain)
    assert model.states_ == [("a", "a"), ("a", "b"), ("b", "a"), ("b", "b")]
    np.testing.assert_allclose(model.transmat_.sum(axis=1), 1.0)
    assert model.stationary_distribution().sum() == pytest.approx(1.0)
    samples = model.sample(5, 10, random_state=0)
    assert len(samples) == 10 and all(1 <= len(s) <= 5 and set(s) <= {"a", "b"} for s in samples)


# ------------------------------------------------------------------- an order-2 source


def _order_two_sequences(n_sequences, rng):
    """Binary sequences that repeat the symbol two back with probability 0.8, stopping with probability
    0.05 after each element: the symbol just before tells next to nothing."""
    p_one = {(0, 0): 0.2, (0, 1): 0.2, (1, 0): 0.8, (1, 1): 0.8}  # p(x_t = 1 | x_t-2, x_t-1)
    sequences = []
    for _ in range(n_sequences):
        x = list(rng.integers(0, 2, 2))
        while rng.random() > 0.05:
            x.append(int(rng.random() < p_one[x[-2], x[-1]]))
        sequences.append(x)
    return sequences


def test_beats_order_one_and_matches_order_two_on_an_order_two_source():
    rng = np.random.default_rng(0)
    train, test = _order_two_sequences(3000, rng), _order_two_sequences(1000, rng)
    n_rows = sum(len(s) + 1 for s in test)

    def loss(model):
        return -model.fit(train).score(test) / n_rows

    order_one, order_two = loss(MarkovChain(order=1)), loss(MarkovChain(order=2))
    for method in ("kneser_ney", "witten_bell"):
        for max_order in (2, 3):
            variable = loss(VariableOrderChain(max_order, method=method))
            assert variable < order_one - 0.15
            assert variable == pytest.approx(order_two, abs=0.001)


# ------------------------------------------------------------- unknown symbols, files


def test_unknown_symbols_under_each_policy():
    train = [list("abab"), list("ba")]
    with pytest.raises(ValueError, match="symbol 'z' is not in the vocabulary"):
        VariableOrderChain(2).fit(train).next_symbol_proba([list("azb")])
    ignore = VariableOrderChain(2, unknown="ignore").fit(train)
    assert ignore.next_distribution(list("az")).equals(ignore.next_distribution(["a"]))  # 'z' is skipped
    mapped = VariableOrderChain(2, unknown="map").fit(train)
    after = mapped.next_distribution(list("az"))  # contexts holding UNKNOWN were never seen: order 0
    np.testing.assert_allclose(after, mapped.next_distribution(list("zz")))
    assert after[UNKNOWN] > 0 and mapped.next_distribution(["a"])[UNKNOWN] < after[UNKNOWN]


@pytest.mark.parametrize("params", [{"max_order": 3, "unknown": "map"}, {"max_order": 2, "method": "witten_bell"}])
def test_save_load_round_trip(tmp_path, params):
    data = [["home", "item", "cart"], ["home", "home", "pay"], ["item", "cart", "pay", "home"]]
    model = VariableOrderChain(**params).fit(data)
    model.save(tmp_path / "model.msz")
    loaded = modeshift.load(tmp_path / "model.msz")
    assert type(loaded) is VariableOrderChain and loaded.get_params() == model.get_params()
    np.testing.assert_array_equal(loaded.next_symbol_proba(data), model.next_symbol_proba(data))
    assert loaded.score(data) == model.score(data)


# ------------------------------------------------------------ the estimator contract


def test_parameter_count_information_criteria_and_a_fresh_refit():
    model = VariableOrderChain(max_order=1).fit(TINY)
    # orders 0 and 1: the empty context, the start, 'a' and 'b', each over a, b and END
    assert model.n_parameters == 4 * 2
    log_likelihood = model.score(TINY)
    assert model.aic(TINY) == pytest.approx(-2 * log_likelihood + 16)
    assert model.bic(TINY) == pytest.approx(-2 * log_likelihood + 8 * np.log(5 + 3))
    refit = VariableOrderChain(max_order=1).fit([list("xyz")]).fit(TINY)
    np.testing.assert_array_equal(refit.next_symbol_proba(TINY), model.next_symbol_proba(TINY))
    assert refit.vocabulary_ == model.vocabulary_


# ---------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "params, message",
    [
        ({"max_order": 0}, "max_order must be an integer >= 1"),
        ({"max_order": 2.0}, "max_order must be an integer >= 1"),
        ({"method": "good_turing"}, "method must be one of"),
        ({"discount": 0.0}, r"discount must be a finite number in \(0.0, 1.0\], got 0.0"),
        ({"discount": 1.5}, r"discount must be a finite number in \(0.0, 1.0\], got 1.5"),
        ({"discount": "0.5"}, r"discount must be a finite number in \(0.0, 1.0\], got '0.5'"),
        ({"unknown": "drop"}, "unknown must be one of"),
    ],
)
def test_bad_hyperparameters(params, message):
    with pytest.raises(ValueError, match=message):
        VariableOrderChain(**params).fit(TINY)


@pytest.mark.parametrize("data, message", [([], "no sequences given"), ([["a"], []], "sequence 1 is empty")])
def test_bad_sequences(data, message):
    with pytest.raises(ValueError, match=message):
        VariableOrderChain().fit(data)


def test_unfitted_model_says_so():
    model = VariableOrderChain(max_order=2)
    assert repr(model) == "VariableOrderChain(max_order=2)"
    with pytest.raises(NotFittedError, match="this VariableOrderChain is not fitted"):
        model.next_symbol_proba(TINY)


# -------------------------------------------------------------------------- scale


@pytest.mark.slow
@pytest.mark.parametrize("n_symbols", [20, 1000])
def test_order_three_on_ten_million_tokens(n_symbols):
    """i.i.d. tokens, the worst case: for 1000 symbols almost every 4-gram and 3-gram is new, so two
    orders hold 10^7 pairs each. Measured on a 2-core VM: 0.8 s / 230 MiB (V=20), 5.4 s / 1.15 GiB (V=1000)."""
    tokens = np.random.default_rng(0).integers(0, n_symbols, 10**7)
    VariableOrderChain(3).fit(tokens[:100])  # load the compiled kernel first
    tracemalloc.start()
    start = time.perf_counter()
    model = VariableOrderChain(3).fit(tokens)
    elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1.5 * 2**30 and elapsed < 60
    held_out = np.random.default_rng(1).integers(0, n_symbols, 10_000)
    assert -model.score(held_out) / 10_001 == pytest.approx(np.log(n_symbols), rel=0.05)  # i.i.d.: no better
