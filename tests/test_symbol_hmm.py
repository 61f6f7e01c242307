"""SymbolHMM: next-element probabilities against likelihood ratios of prefixes, hidden states against
enumeration, sampling against the likelihood, the end learned as a symbol, unknown symbols under each
policy, the estimator contract, persistence and bad input."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pandas as pd
import pytest

import modeshift
from modeshift import HMM, NotFittedError, SymbolHMM
from modeshift.data import as_sequences
from modeshift.models.em import ConvergenceWarning
from modeshift.symbols import END, UNKNOWN, Vocabulary, next_targets

SESSIONS = [["home", "item", "cart", "pay"], ["home", "search", "item", "cart", "pay"], ["home", "item"]] * 10


def _hand_model(unknown="error"):
    """Two states over symbols a, b (columns a, b, UNKNOWN, END)."""
    model = SymbolHMM(n_states=2, unknown=unknown)
    model.vocabulary_ = Vocabulary(("a", "b"))
    model.startprob_ = np.array([0.7, 0.3])
    model.transmat_ = np.array([[0.8, 0.2], [0.4, 0.6]])
    model.emissionprob_ = np.array([[0.6, 0.3, 0.0, 0.1], [0.1, 0.5, 0.0, 0.4]])
    return model


def _likelihood(model, codes):
    """p(y_0 .. y_t) of layout codes under the HMM with the model's parameters."""
    hmm = HMM(2, emission="categorical", n_symbols=4)
    hmm.startprob_, hmm.transmat_, hmm.emissionprob_ = model.startprob_, model.transmat_, model.emissionprob_
    return np.exp(hmm.score(np.asarray(codes)))


def test_next_element_probabilities_are_ratios_of_prefix_likelihoods():
    model = _hand_model()
    sequences = [list("abba"), list("b")]
    proba = model.next_symbol_proba(sequences)
    assert proba.shape == (7, 4)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    not_empty = 1.0 - (0.7 * 0.1 + 0.3 * 0.4)  # the first element is not the end
    row = 0
    for sequence in sequences:
        codes = [{"a": 0, "b": 1}[s] for s in sequence] + [3]
        for t in range(len(codes)):
            for code in range(4):
                if t == 0:
                    expected = 0.0 if code == 3 else _likelihood(model, [code]) / not_empty
                else:
                    expected = _likelihood(model, codes[:t] + [code]) / _likelihood(model, codes[:t])
                assert proba[row, code] == pytest.approx(expected, rel=1e-12, abs=1e-15)
            row += 1
    # score: log p(x, END) given a non-empty sequence
    expected = sum(np.log(_likelihood(model, [{"a": 0, "b": 1}[s] for s in q] + [3]) / not_empty) for q in sequences)
    assert model.score(sequences) == pytest.approx(expected)


def test_fit_learns_the_symbols_and_when_sequences_end():
    model = SymbolHMM(n_states=8, n_restarts=5, random_state=0).fit(SESSIONS)
    assert model.score(SESSIONS) == pytest.approx(30 * np.log(1 / 3), abs=1e-3)  # the three sessions alike: the maximum
    assert model.vocabulary_.symbols == ("home", "item", "cart", "pay", "search")
    assert model.emissionprob_.shape == (8, 7) and (model.emissionprob_[:, 5] == 0).all()  # UNKNOWN never emitted
    assert model.predict_next(["home", "item", "cart", "pay"], k=1) == [(END, pytest.approx(1.0, abs=1e-6))]
    assert model.predict_next([], k=1) == [("home", pytest.approx(1.0))]
    assert model.next_distribution(["home", "search"])["item"] == pytest.approx(1.0, abs=1e-6)
    proba = model.next_symbol_proba(SESSIONS[:3])
    targets = next_targets(as_sequences(SESSIONS[:3], vocabulary=model.vocabulary_))
    assert model.score(SESSIONS[:3]) == pytest.approx(np.log(proba[np.arange(len(targets)), targets]).sum())
    assert model.converged_ and len(model.history_) == model.n_iter_ > 1


def test_unknown_symbols_under_each_policy():
    with pytest.raises(ValueError, match="symbol 'z' is not in the vocabulary"):
        _hand_model().next_symbol_proba([list("azb")])
    ignore = _hand_model("ignore")
    proba = ignore.next_symbol_proba([list("azb")])
    assert (proba[:, 2] == 0).all()
    # 'z' is a missing observation: the chain moves on without evidence
    after_a = ignore.next_distribution(["a"]).to_numpy()
    states_after_a = np.array([0.7 * 0.6, 0.3 * 0.1]) / (0.7 * 0.6 + 0.3 * 0.1) @ ignore.transmat_
    np.testing.assert_allclose(after_a, states_after_a @ ignore.emissionprob_)
    np.testing.assert_allclose(proba[2], states_after_a @ ignore.transmat_ @ ignore.emissionprob_)
    assert ignore.score([list("azb")]) == pytest.approx(np.log(proba[[0, 2, 3], [0, 1, 3]]).sum())

    mapped = SymbolHMM(n_states=2, random_state=0, unknown="map").fit(SESSIONS)
    proba = mapped.next_symbol_proba([["home", "login", "item"]])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert (proba[:, 5] > 0).all() and mapped.next_distribution(["home"])[UNKNOWN] < 0.01
    # each state emits UNKNOWN with the KT probability 1/2 / (n_k + 1/2): n_k sums to the symbols and ends seen
    emitted = 0.5 / mapped.emissionprob_[:, 5] - 0.5
    assert emitted.sum() == pytest.approx(sum(len(s) + 1 for s in SESSIONS))
    assert np.isfinite(mapped.score([["home", "login", "item"]]))


# ------------------------------------------------------------------ hidden states


def _joint(model, codes):
    """p(z, x, END) of every state path z of the symbols, the state of END summed out: {path: probability}."""
    pi, A, B = model.startprob_, model.transmat_, model.emissionprob_
    ends = A @ B[:, -1]
    joint = {}
    for path in itertools.product(range(len(pi)), repeat=len(codes)):
        p = pi[path[0]] * B[path[0], codes[0]]
        for (i, j), code in zip(itertools.pairwise(path), codes[1:]):
            p *= A[i, j] * B[j, code]
        joint[path] = p * ends[path[-1]]
    return joint


def _three_state_model():
    model = SymbolHMM(n_states=3)
    model.vocabulary_ = Vocabulary(("a", "b"))
    model.startprob_ = np.array([0.5, 0.3, 0.2])
    model.transmat_ = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.3, 0.3, 0.4]])
    model.emissionprob_ = np.array([[0.7, 0.2, 0.0, 0.1], [0.2, 0.5, 0.0, 0.3], [0.4, 0.4, 0.0, 0.2]])
    return model


@pytest.mark.parametrize("sequence", ["a", "ab", "bba", "abab", "baab"])
def test_predict_and_marginals_match_enumeration(sequence):
    model = _three_state_model()
    codes = [{"a": 0, "b": 1}[s] for s in sequence]
    joint = _joint(model, codes)
    evidence = sum(joint.values())
    best = max(joint, key=joint.get)
    np.testing.assert_array_equal(model.predict(sequence), best)
    smoothed = np.zeros((len(codes), 3))
    for path, p in joint.items():
        smoothed[np.arange(len(codes)), path] += p / evidence
    np.testing.assert_allclose(model.predict_proba(sequence), smoothed, rtol=1e-12)
    for t in range(len(codes)):  # filtered: the symbols up to t, the sequence going on
        prefix = _joint(model, codes[: t + 1])
        ends = model.transmat_ @ model.emissionprob_[:, -1]
        filtered = np.zeros(3)
        for path, p in prefix.items():
            filtered[path[-1]] += p / ends[path[-1]]
        np.testing.assert_allclose(model.filter_proba(sequence)[t], filtered / filtered.sum(), rtol=1e-12)


def test_hidden_states_come_back_in_the_input_form():
    model = _three_state_model()
    listed = model.predict([list("ab"), list("bba")])
    assert isinstance(listed, list) and [len(p) for p in listed] == [2, 3]
    np.testing.assert_array_equal(listed[1], model.predict("bba"))
    cut = model.predict_proba(list("abbba"), [2, 3])
    assert cut.shape == (5, 3)
    np.testing.assert_allclose(cut[2:], model.predict_proba("bba"))
    log = pd.DataFrame({"case_id": [1, 2, 1, 2, 2], "activity": list("aabba"), "timestamp": [0, 0, 1, 1, 2]})
    by_row = model.filter_proba(log)
    np.testing.assert_allclose(by_row[[0, 2]], model.filter_proba("ab"))
    np.testing.assert_allclose(by_row[[1, 3, 4]], model.filter_proba("aba"))


def test_segments_are_the_runs_of_the_viterbi_path():
    model = _three_state_model()
    sequences = [list("aababbba"), list("bbbb")]
    table = model.segment(sequences)
    assert list(table.columns[:5]) == ["sequence", "start", "end", "mode", "probability"]
    for s, sequence in enumerate(sequences):
        path, smoothed = model.predict(sequence), model.predict_proba(sequence)
        runs = table[table["sequence"] == s]
        assert runs["start"].iloc[0] == 0 and runs["end"].iloc[-1] == len(sequence)
        np.testing.assert_array_equal(runs["start"].to_numpy()[1:], runs["end"].to_numpy()[:-1])
        for start, end, mode, probability in runs[["start", "end", "mode", "probability"]].itertuples(index=False):
            assert (path[start:end] == mode).all() and (end == len(path) or path[end] != mode)
            assert probability == pytest.approx(smoothed[start:end, mode].mean())
    one = model.segment("aab")
    assert "sequence" not in one.columns and one["end"].iloc[-1] == 3


def test_describe_gives_dwell_times_switches_ends_and_top_symbols():
    model = _three_state_model()
    table = model.describe(top=2)
    P = model.transmat_
    assert list(table.index) == [0, 1, 2]
    np.testing.assert_allclose(table["dwell_time"], 1.0 / (1.0 - np.diag(P)))
    np.testing.assert_allclose(table[["to_0", "to_1", "to_2"]].to_numpy(), P)
    np.testing.assert_allclose(table["occupancy"].to_numpy() @ P, table["occupancy"].to_numpy(), atol=1e-12)
    np.testing.assert_allclose(table["end"], model.emissionprob_[:, -1])
    assert table["top_symbols"].tolist() == [
        [("a", 0.7), ("b", 0.2)],
        [("b", 0.5), (END, 0.3)],
        [("a", 0.4), ("b", 0.4)],
    ]
    assert len(model.describe()["top_symbols"][0]) == 3  # top=3 by default
    assert all(p > 0 for row in model.describe(top=10)["top_symbols"] for _, p in row)


# ---------------------------------------------------------------------- sampling


def test_samples_follow_the_likelihood():
    model = _three_state_model()
    symbols, states = model.sample(n_steps=50, n_sequences=20_000, random_state=0)
    assert len(symbols) == len(states) == 20_000
    assert all(len(x) == len(z) >= 1 for x, z in zip(symbols, states))
    counts = Counter(tuple(x) for x in symbols)
    for sequence, count in counts.most_common(4):
        expected = np.exp(model.score([list(sequence)]))
        assert count / 20_000 == pytest.approx(expected, abs=4 * np.sqrt(expected / 20_000))
    # the states of the first symbol: p(z_0 | x_0 not END)
    first = np.bincount([z[0] for z in states], minlength=3) / 20_000
    expected = model.startprob_ * (1 - model.emissionprob_[:, -1])
    np.testing.assert_allclose(first, expected / expected.sum(), atol=0.01)


def test_n_steps_caps_the_sampled_sequences():
    model = _three_state_model()
    symbols, states = model.sample(2, n_sequences=500, random_state=1)
    lengths = [len(x) for x in symbols]
    assert set(lengths) == {1, 2} and all(len(z) == n for z, n in zip(states, lengths))
    one, modes = model.sample(3, random_state=2)  # one sequence: the symbols and the states themselves
    assert isinstance(one, list) and isinstance(modes, np.ndarray) and len(one) == len(modes) <= 3
    assert set(one) <= {"a", "b"}
    again = model.sample(3, random_state=2)
    assert again[0] == one and np.array_equal(again[1], modes)
    with pytest.raises(ValueError, match="n_steps must be an integer >= 1"):
        model.sample(0)
    mapped = SymbolHMM(2, random_state=0, unknown="map").fit(SESSIONS)
    drawn = mapped.sample(10, n_sequences=300, random_state=0)[0]
    assert {s for x in drawn for s in x} <= {*mapped.vocabulary_.symbols, UNKNOWN}


# ------------------------------------------------------------ the estimator contract


def test_em_through_the_driver_warm_start_and_a_fresh_refit():
    data = SESSIONS[:6]
    long = SymbolHMM(3, n_iter=10, tol=-np.inf, random_state=0)
    with pytest.warns(ConvergenceWarning, match="SymbolHMM"):
        long.fit(data)
    assert long.n_iter_ == 10 and not long.converged_ and np.all(np.diff(long.history_) >= -1e-9)
    warm = SymbolHMM(3, n_iter=4, tol=-np.inf, random_state=0)
    with pytest.warns(ConvergenceWarning):
        warm.fit(data)
        warm.set_params(warm_start=True, n_iter=6).fit(data)
    np.testing.assert_allclose(warm.history_, long.history_[4:], rtol=1e-12)
    np.testing.assert_allclose(warm.emissionprob_, long.emissionprob_, rtol=1e-9, atol=1e-12)
    fresh = SymbolHMM(3, random_state=1).fit(data)
    refit = SymbolHMM(3, random_state=1).fit([list("xyzzy")]).fit(data)
    assert refit.vocabulary_ == fresh.vocabulary_ and refit.history_ == fresh.history_
    np.testing.assert_array_equal(refit.transmat_, fresh.transmat_)


def test_hand_set_parameters_start_em_and_n_iter_zero_only_initialises():
    hand = _hand_model()
    data = [list("abba"), list("b")]
    log_likelihood = hand.score(data)
    first_end = 0.7 * 0.1 + 0.3 * 0.4
    hand.set_params(n_iter=1)
    with pytest.warns(ConvergenceWarning):
        hand.fit(data)
    # EM's objective at the start is log p(x, END), which score conditions on non-empty sequences
    assert hand.history_[0] == pytest.approx(log_likelihood + 2 * np.log1p(-first_end))
    initialised = SymbolHMM(2, n_iter=0, random_state=0).fit(data)
    assert initialised.history_ == [] and initialised.n_iter_ == 0 and not initialised.converged_
    np.testing.assert_allclose(initialised.emissionprob_.sum(axis=1), 1.0)
    assert np.isfinite(initialised.score(data))
    # under unknown="map" too (the start's UNKNOWN share is replaced, not added), so it warm-starts EM
    mapped = SymbolHMM(2, n_iter=0, unknown="map", random_state=0).fit(data)
    np.testing.assert_allclose(mapped.emissionprob_.sum(axis=1), 1.0)
    mapped.set_params(n_iter=500, tol=1e-6, warm_start=True)
    mapped.fit(data)
    np.testing.assert_allclose(mapped.emissionprob_.sum(axis=1), 1.0)


def test_parameter_count_and_information_criteria():
    model = _hand_model()
    assert model.n_parameters == 1 + 2 + 2 * 2  # start, transitions, emissions over a, b and END
    data = [list("abba"), list("b")]
    assert model.aic(data) == pytest.approx(-2 * model.score(data) + 2 * 7)
    assert model.bic(data) == pytest.approx(-2 * model.score(data) + 7 * np.log(5 + 2))


def test_auto_picks_the_smallest_bic_among_candidates_that_share_the_vocabulary(tmp_path):
    model = SymbolHMM("auto", max_states=3, random_state=0).fit(SESSIONS)
    table = model.selection_
    assert table["n_states"].tolist() == [1, 2, 3] and table["chosen"].sum() == 1
    assert model.n_states_ == table.loc[table["bic"].idxmin(), "n_states"]
    chosen = SymbolHMM(model.n_states_, max_states=3, random_state=0).fit(SESSIONS)  # the candidate, refitted
    np.testing.assert_allclose(model.emissionprob_, chosen.emissionprob_)
    for row in table.itertuples():  # each row is the candidate's own criteria
        candidate = SymbolHMM(int(row.n_states), random_state=0).fit(SESSIONS)
        assert row.log_likelihood == pytest.approx(candidate.score(SESSIONS), rel=1e-12)
        assert row.bic == pytest.approx(candidate.bic(SESSIONS), rel=1e-12)
    assert model.describe().shape[0] == model.n_states_ and model.vocabulary_ == chosen.vocabulary_
    model.save(tmp_path / "auto.msz")
    loaded = modeshift.load(tmp_path / "auto.msz")
    assert loaded.n_states_ == model.n_states_ and loaded.selection_.equals(model.selection_)
    assert loaded.score(SESSIONS) == model.score(SESSIONS)


def test_the_history_has_its_old_name_for_one_release():
    model = SymbolHMM(2, random_state=0).fit(SESSIONS[:3])
    with pytest.warns(DeprecationWarning, match="log_likelihood_history_ is renamed history_"):
        assert model.log_likelihood_history_ == model.history_


def test_save_load_round_trip(tmp_path):
    model = SymbolHMM(n_states=3, random_state=0, unknown="map").fit(SESSIONS)
    model.save(tmp_path / "model.msz")
    loaded = modeshift.load(tmp_path / "model.msz")
    assert type(loaded) is SymbolHMM and loaded.get_params() == model.get_params()
    assert loaded.vocabulary_ == model.vocabulary_
    test = [["home", "login", "cart"]]
    np.testing.assert_array_equal(loaded.next_symbol_proba(test), model.next_symbol_proba(test))
    assert loaded.score(test) == model.score(test) and loaded.converged_ == model.converged_
    assert loaded.history_ == model.history_ and loaded.n_iter_ == model.n_iter_
    np.testing.assert_array_equal(loaded.predict(test), model.predict(test))


@pytest.mark.parametrize(
    "params, message",
    [
        ({"n_states": 0}, "SymbolHMM: n_states must be an integer >= 1 or one of 'auto', got 0"),
        ({"n_states": "two"}, "n_states must be an integer >= 1 or one of"),
        ({"n_states": "auto", "max_states": 0}, "max_states must be an integer >= 1"),
        ({"unknown": "drop"}, "unknown must be one of"),
        ({"n_restarts": 0}, "n_restarts must be an integer >= 1"),
    ],
)
def test_bad_hyperparameters(params, message):
    with pytest.raises(ValueError, match=message):
        SymbolHMM(**params).fit(SESSIONS)


@pytest.mark.parametrize("data, message", [([], "no sequences given"), ([["a"], []], "sequence 1 is empty")])
def test_bad_sequences(data, message):
    with pytest.raises(ValueError, match=message):
        SymbolHMM(2).fit(data)


def test_unfitted_model_says_so():
    with pytest.raises(NotFittedError, match="this SymbolHMM is not fitted"):
        SymbolHMM(2).next_symbol_proba(SESSIONS)
