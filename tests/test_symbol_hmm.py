"""SymbolHMM: next-element probabilities against likelihood ratios of prefixes, the end learned as a
symbol, unknown symbols under each policy, persistence and bad input."""

from __future__ import annotations

import numpy as np
import pytest

import modeshift
from modeshift import HMM, NotFittedError, SymbolHMM
from modeshift.symbols import END, UNKNOWN, Vocabulary, as_symbol_sequences, next_targets

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
    targets = next_targets(as_symbol_sequences(SESSIONS[:3], vocabulary=model.vocabulary_))
    assert model.score(SESSIONS[:3]) == pytest.approx(np.log(proba[np.arange(len(targets)), targets]).sum())
    assert model.converged_ and len(model.log_likelihood_history_) > 1


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


def test_save_load_round_trip(tmp_path):
    model = SymbolHMM(n_states=3, random_state=0, unknown="map").fit(SESSIONS)
    model.save(tmp_path / "model.msz")
    loaded = modeshift.load(tmp_path / "model.msz")
    assert type(loaded) is SymbolHMM and loaded.get_params() == model.get_params()
    assert loaded.vocabulary_ == model.vocabulary_
    test = [["home", "login", "cart"]]
    np.testing.assert_array_equal(loaded.next_symbol_proba(test), model.next_symbol_proba(test))
    assert loaded.score(test) == model.score(test) and loaded.converged_ == model.converged_


@pytest.mark.parametrize(
    "params, message",
    [({"n_states": 0}, "n_states must be a positive integer"), ({"unknown": "drop"}, "unknown must be one of")],
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
