"""Next-element evaluation: the metrics against hand computation, END as a prediction, unknown symbols,
the one-call table on bundled real event logs, the case split and bad input."""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import pytest

from modeshift import HMM, MarkovChain, SymbolHMM, VariableOrderChain, evaluate
from modeshift.data import as_sequences
from modeshift.datasets import EVENT_LOGS, load_event_log
from modeshift.evaluate import EPSILON, compare, next_element, train_test_split
from modeshift.symbols import Vocabulary

METRICS = ["accuracy@1", "accuracy@3", "accuracy@5", "log_loss", "perplexity", "ndcg@5"]


class FixedRows:
    """A 'model' over symbols a, b whose next-element rows are given: a NextElementModel of no
    modeshift class."""

    vocabulary_ = Vocabulary(("a", "b"))
    unknown = "map"

    def __init__(self, rows):
        self.rows = np.array(rows, dtype=float)

    def next_symbol_proba(self, sequences):
        return self.rows

    def predict_next(self, prefix=(), k=5):
        return []


def test_metrics_by_hand():
    # targets: a, b, END | UNKNOWN, END; columns a, b, UNKNOWN, END
    model = FixedRows(
        [
            [0.5, 0.3, 0.0, 0.2],  # a ranks 1st
            [0.4, 0.4, 0.0, 0.2],  # b ties with a: ranks 2nd (ties count against the right answer)
            [0.3, 0.3, 0.1, 0.3],  # END ties three ways: 3rd
            [0.6, 0.2, 0.1, 0.1],  # UNKNOWN: a miss whatever its rank, log-loss from its probability
            [0.5, 0.5, 0.0, 0.0],  # END impossible: 4th, its probability floored
        ]
    )
    scores = next_element(model, [["a", "b"], ["z"]])
    assert list(scores.index) == METRICS
    assert scores["accuracy@1"] == 1 / 5 and scores["accuracy@3"] == 3 / 5 and scores["accuracy@5"] == 4 / 5
    loss = -(np.log(0.5) + np.log(0.4) + np.log(0.3) + np.log(0.1) + np.log(EPSILON)) / 5
    assert scores["log_loss"] == pytest.approx(loss) and scores["perplexity"] == pytest.approx(np.exp(loss))
    assert scores["ndcg@5"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(4) + 1 / math.log2(5)) / 5)
    assert next_element(model, [["a", "b"], ["z"]], k=2)["accuracy@2"] == 2 / 5


def test_the_end_is_a_prediction():
    # every sequence is 'a b': the chain is sure of both symbols and of the end after 'b'
    chain = MarkovChain(smoothing="ml").fit([["a", "b"]] * 3)
    scores = next_element(chain, [["a", "b"], ["a", "b"]])
    assert scores["accuracy@1"] == 1.0 and scores["log_loss"] == 0.0 and scores["ndcg@5"] == 1.0
    # ending early is a wrong prediction of the end: 'a' then END (p = 0) among 3 rows
    early = next_element(chain, [["a"]])
    assert early["accuracy@1"] == 0.5 and early["log_loss"] == pytest.approx(-np.log(EPSILON) / 2)


def test_a_chain_by_hand():
    # first: a twice, b once; after 'a': b three times, a once; after 'b': END three times, a once
    chain = MarkovChain(smoothing="ml").fit([list("aab"), list("ab"), list("bab")])
    scores = next_element(chain, [list("ba")], k=(1, 2))
    # rows: first 'b' (p 1/3, rank 2), 'a' after 'b' (1/4, rank 2), END after 'a' (0: last of 4 columns)
    assert scores["accuracy@1"] == 0.0 and scores["accuracy@2"] == 2 / 3
    assert scores["log_loss"] == pytest.approx((np.log(3) + np.log(4) - np.log(EPSILON)) / 3)
    assert scores["ndcg@5"] == pytest.approx((2 / math.log2(3) + 1 / math.log2(5)) / 3)


def test_chunks_give_the_same_scores(monkeypatch):
    rng = np.random.default_rng(0)
    sequences = [list(rng.choice(list("abcd"), size=rng.integers(1, 30))) for _ in range(200)]
    model = VariableOrderChain(2).fit(sequences)
    whole = next_element(model, sequences)
    monkeypatch.setattr(evaluate, "CHUNK_CELLS", 40 * 6)  # 40 rows of 4 symbols, UNKNOWN and END
    pd.testing.assert_series_equal(next_element(model, sequences), whole, rtol=1e-12)


def test_every_form_of_the_data_gives_the_same_scores():
    """Lists, Sequences (encoded under another vocabulary too) and event logs are one data layer."""
    chain = MarkovChain().fit([list("aab"), list("ab"), list("bab")])
    test = [list("ba"), list("abb")]
    scores = next_element(chain, test)
    pd.testing.assert_series_equal(next_element(chain, as_sequences(test, symbols=True)), scores)
    log = pd.DataFrame({"case_id": [2, 1, 2, 1, 2], "activity": list("abbab"), "timestamp": [0, 0, 1, 1, 2]})
    pd.testing.assert_series_equal(next_element(chain, log), scores)


# ----------------------------------------------------------- real logs, one call


def _models(n_iter=10):
    models = {f"chain order {order}": MarkovChain(order, unknown="map") for order in (1, 2, 3)}
    models["variable order 3"] = VariableOrderChain(3, unknown="map")
    models["HMM 6 states"] = SymbolHMM(6, n_iter=n_iter, random_state=0, unknown="map")
    return models


@pytest.mark.parametrize("name", ["helpdesk", "receipt"])
def test_one_call_compares_every_model_on_a_real_log(name, capsys):
    train, test = train_test_split(load_event_log(name), test_fraction=0.25, random_state=0)
    start = time.perf_counter()
    table = compare(_models(), train, test)
    assert time.perf_counter() - start < 15
    assert list(table.index) == list(_models()) and list(table.columns) == METRICS
    assert set(table.attrs["fit_seconds"]) == set(table.index)
    values = table[["accuracy@1", "accuracy@3", "accuracy@5", "ndcg@5"]]
    assert ((values > 0.5) & (values <= 1)).all().all()
    assert (table["accuracy@1"] <= table["accuracy@3"]).all() and (table["accuracy@3"] <= table["accuracy@5"]).all()
    np.testing.assert_allclose(table["perplexity"], np.exp(table["log_loss"]))
    # back-off pays on sparse long contexts: better than the order-3 chain it extends
    assert table.loc["variable order 3", "log_loss"] < table.loc["chain order 3", "log_loss"]
    printed = capsys.readouterr().out
    assert all(label in printed for label in [*METRICS, "chain order 2", "HMM 6 states", "fit (s)"])


def test_the_table_feeds_plot_comparison():
    pytest.importorskip("matplotlib")
    from modeshift.plot import plot_comparison

    train, test = train_test_split(load_event_log("running_example"), test_fraction=0.5, random_state=0)
    table = compare({"chain": MarkovChain(unknown="map"), "kn": VariableOrderChain(2, unknown="map")}, train, test,
                    print_table=False)  # fmt: skip
    figure = plot_comparison(table)
    assert len(figure.axes[0].patches) == 2 * len(METRICS)


def test_every_bundled_log_loads():
    for name in EVENT_LOGS:
        log = load_event_log(name)
        assert list(log.columns) == ["case_id", "activity", "timestamp"] and len(log) > 0
    assert len(load_event_log("helpdesk")) == 21_348 and load_event_log("receipt")["case_id"].nunique() == 1_434
    with pytest.raises(ValueError, match="unknown event log 'bpi'; choose one of running_example"):
        load_event_log("bpi")


# --------------------------------------------------------------------- the split


def test_train_test_split_keeps_cases_whole():
    log = load_event_log("roadtraffic100")
    train, test = train_test_split(log, test_fraction=0.3, random_state=1)
    assert train["case_id"].nunique() == 70 and test["case_id"].nunique() == 30
    assert not set(train["case_id"]) & set(test["case_id"]) and len(train) + len(test) == len(log)
    again = train_test_split(log, test_fraction=0.3, random_state=1)[1]
    pd.testing.assert_frame_equal(again, test)
    sequences = [list("ab"), list("abc"), list("b"), list("ca")]
    train_list, test_list = train_test_split(sequences, test_fraction=0.5, random_state=0)
    assert len(train_list) == len(test_list) == 2
    assert sorted(map(str, train_list + test_list)) == sorted(map(str, sequences))


# ---------------------------------------------------------------------- bad input


def test_bad_input_is_named():
    chain = MarkovChain().fit([list("ab"), list("ba")])
    with pytest.raises(ValueError, match="sequence 1, time step 0: symbol 'z' is not in the vocabulary"):
        next_element(chain, [list("ab"), list("zb")])
    with pytest.raises(ValueError, match="sequence 1 is empty"):
        next_element(chain, [list("ab"), []])
    with pytest.raises(ValueError, match="no sequences given"):
        next_element(chain, [])
    with pytest.raises(ValueError, match="MarkovChain is not fitted"):
        next_element(MarkovChain(), [list("ab")])
    with pytest.raises(ValueError, match="k must be positive integers"):
        next_element(chain, [list("ab")], k=(0, 1))
    with pytest.raises(ValueError, match=r"gave shape \(2, 4\), expected \(3, 4\)"):
        next_element(FixedRows(np.full((2, 4), 0.25)), [list("ab")])
    with pytest.raises(ValueError, match="no models to compare"):
        compare({}, [list("ab")], [list("ab")])
    with pytest.raises(ValueError, match="a HMM cannot predict next elements: it is not a NextElementModel"):
        next_element(HMM(2).fit(np.arange(20.0)), [list("ab")])
    chain = MarkovChain()
    with pytest.raises(ValueError, match="a HMM cannot predict next elements"):
        compare({"chain": chain, "hmm": HMM(2)}, [list("ab")], [list("ab")])
    assert not hasattr(chain, "vocabulary_")  # refused before any fit
    with pytest.raises(ValueError, match="test_fraction must be between 0 and 1"):
        train_test_split([list("ab"), list("b")], test_fraction=1.0)
    with pytest.raises(ValueError, match="need at least 2 sequences"):
        train_test_split([list("ab")])
    with pytest.raises(ValueError, match="needs a 'case_id' column"):
        train_test_split(pd.DataFrame({"id": [1, 2], "activity": ["a", "b"]}))
