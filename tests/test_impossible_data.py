"""The contract's one rule for data of probability 0 (docs/contract.md, models.base.check_possible):
``score`` returns -inf, every method that conditions on the data raises a ValueError naming the
sequence and the first impossible step, whatever the model."""

from __future__ import annotations

import numpy as np
import pytest

from modeshift import HMM, HSMM, MarkovChain, MarkovChainMixture, SymbolHMM

IMPOSSIBLE = r"sequence 1, time step 3, has probability 0 under the current parameters"


def _hmm():
    """Two modes that never switch: mode 0 emits symbols 0 and 1, mode 1 symbols 1 and 2."""
    model = HMM(2, emission="categorical", n_symbols=3)
    model.startprob_ = [0.5, 0.5]
    model.transmat_ = [[1.0, 0.0], [0.0, 1.0]]
    model.emissionprob_ = [[0.5, 0.5, 0.0], [0.0, 0.5, 0.5]]
    return model


def _hsmm():
    """Fitted on symbols 0 and 1 of three: no mode emits symbol 2."""
    symbols = np.random.default_rng(0).integers(0, 2, size=(200, 1))
    return HSMM(2, emission="categorical", n_symbols=3, max_duration=20, random_state=0).fit(symbols)


def _data():
    """Sequence 1 goes from symbol 0 (mode 0 only) to symbol 2 (mode 1 only, or none) at step 3."""
    return [np.array([[0], [1], [1]]), np.array([[0], [1], [0], [2], [1]])]


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("make", [_hmm, _hsmm], ids=["HMM, forbidden transition", "HSMM, symbol never emitted"])
def test_score_is_minus_infinity_and_conditioning_methods_name_the_step(make):
    model, X = make(), _data()
    assert model.score(X) == -np.inf
    assert np.isfinite(model.score(X[:1]))
    for method in (model.predict, model.predict_proba, model.filter_proba, model.decode, model.segment):
        with pytest.raises(ValueError, match=IMPOSSIBLE):
            method(X)
    with pytest.raises(ValueError, match=IMPOSSIBLE):
        model.forecast(X, horizon=2)
    assert model.bic(X) == np.inf


def test_symbol_hmm_follows_the_rule():
    model = SymbolHMM(2, random_state=0).fit([["a", "a", "b", "c"], ["a", "b", "c"]] * 3)
    kept = model.emissionprob_ * (np.arange(model.emissionprob_.shape[1]) != 2)  # symbol "c" no longer emitted
    model.emissionprob_ = kept / kept.sum(axis=1, keepdims=True)
    data = [["a", "b"], ["a", "b", "a", "c"]]  # "c" (code 2) no state emits any more
    assert model.score(data) == -np.inf
    with pytest.raises(ValueError, match=r"sequence 1, time step 3, has probability 0.*no reachable state emits"):
        model.predict(data)


def test_chains_without_hidden_modes_score_minus_infinity():
    chain = MarkovChain(1, smoothing="ml").fit([["a", "b", "a", "b"]])
    assert chain.score([["a", "a"]]) == -np.inf
    mixture = MarkovChainMixture(1, pseudo_count=0.0).fit([[0, 1, 0, 1], [1, 0, 1]])
    assert mixture.score([[0, 1], [0, 0]]) == -np.inf
    with pytest.raises(ValueError, match="sequence 1 has probability 0"):
        mixture.predict_proba([[0, 1], [0, 0]])


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("name", ["transmat_", "emissionprob_"])
def test_a_row_of_zero_probability_set_by_hand_is_named(name):
    """Set by hand after a fit, a law whose row sums to 0 is refused (at once or at the next use), not
    scored as -inf."""
    hmm = HMM(2, emission="categorical", n_symbols=2, n_iter=3, random_state=0).fit([[0], [1], [1], [0]])
    symbols = SymbolHMM(2, n_iter=3, random_state=0).fit([["a", "b"], ["b", "a", "a"]])
    for model, data in ((hmm, [[0], [1]]), (symbols, [["a"]])):
        with pytest.raises(ValueError, match=rf"{name} must sum to 1 along its last axis \(row 0\), got 0"):
            setattr(model, name, np.zeros_like(getattr(model, name)))  # the HMM checks here
            model.score(data)  # the SymbolHMM at its next use
