"""Next-element evaluation: how well a model predicts each element of held-out sequences, and their end.

Every :class:`~modeshift.models.capabilities.NextElementModel` — a model of symbol
sequences such as :class:`~modeshift.models.MarkovChain`,
:class:`~modeshift.models.VariableOrderChain` or :class:`~modeshift.models.SymbolHMM` —
gives, through ``next_symbol_proba``, a predictive distribution for every prefix of
every sequence (the next-element layout of :mod:`modeshift.symbols`). A sequence of
length L is L + 1 predictions: its L elements, then what follows the last one, whose
right answer is ``END`` (the process-mining convention: after the last event, "the
case ends" is itself a prediction). Over all predictions, with r the rank of the right
answer:

- ``accuracy@k``: the share with r <= k;
- ``log_loss``: the mean of -log p(right answer), in nats; ``perplexity`` = exp(log_loss);
- ``ndcg@5``: the mean of 1 / log2(r + 1) for r <= 5, else 0 (one relevant item, so
  this is the discounted gain of the right answer alone).

Ties are broken pessimistically: the right answer ranks after every other outcome
with the same probability, so a model that predicts all outcomes alike earns no
accuracy from the tie. A right answer outside the model's vocabulary (``UNKNOWN``) is a
miss for accuracy and NDCG however the model ranks it, and costs -log of the model's
``UNKNOWN`` probability in log-loss: a model with ``unknown="map"`` gives unseen symbols
probability, one with ``"ignore"`` gives them none. Probabilities are floored at
``EPSILON`` = 1e-12, so one impossible answer costs 27.6 nats rather than an infinite
log-loss.

>>> from modeshift.datasets import load_event_log
>>> from modeshift.evaluate import compare, train_test_split
>>> from modeshift.models import MarkovChain, VariableOrderChain
>>> train, test = train_test_split(load_event_log("helpdesk"), test_fraction=0.2, random_state=0)
>>> scores = compare({"chain-1": MarkovChain(1, unknown="map"), "kn-3": VariableOrderChain(3, unknown="map")},
...                  train, test, print_table=False)
>>> list(scores.columns)
['accuracy@1', 'accuracy@3', 'accuracy@5', 'log_loss', 'perplexity', 'ndcg@5']
>>> bool(scores.loc["kn-3", "log_loss"] < scores.loc["chain-1", "log_loss"])
True

The table feeds :func:`modeshift.plot.plot_comparison` (a bar group per metric).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from modeshift.data import as_sequences
from modeshift.models.capabilities import NextElementModel
from modeshift.symbols import next_targets

__all__ = ["EPSILON", "compare", "next_element", "train_test_split"]

#: Floor of the probability of a right answer in the log-loss.
EPSILON = 1e-12
#: The most probabilities (rows x columns of the next-element layout) asked of a model at once: 32 MB.
CHUNK_CELLS = 2**22


def next_element(model: NextElementModel, sequences: Any, k: Sequence[int] = (1, 3, 5)) -> pd.Series:
    """Top-k accuracies, log-loss (nats), perplexity and NDCG@5 of ``model``'s predictions of every
    element and every end of ``sequences`` (module docstring).

    ``model``: a fitted :class:`~modeshift.models.capabilities.NextElementModel` (with its
    ``vocabulary_``). ``sequences``: symbol sequences in any form
    :func:`~modeshift.data.as_sequences` reads; symbols outside the model's vocabulary are
    errors if the model's ``unknown`` is ``"error"``.
    Returns a Series: ``accuracy@k`` for each k, ``log_loss``, ``perplexity``, ``ndcg@5``.
    """
    _check_capability(model)
    ks = _check_k(k)
    vocabulary = getattr(model, "vocabulary_", None)
    if vocabulary is None:
        raise ValueError(f"the {type(model).__name__} is not fitted (it has no vocabulary_): call fit first")
    policy = "error" if getattr(model, "unknown", "error") == "error" else "map"
    seqs = as_sequences(sequences, vocabulary=vocabulary, unknown=policy)
    unknown = len(vocabulary)
    ranks, losses = [], []
    for chunk in seqs.blocks(max(1, CHUNK_CELLS // (unknown + 2)), extra_rows=1):  # a row to predict after each
        proba = np.asarray(model.next_symbol_proba(chunk))
        targets = next_targets(chunk)
        expected = (len(targets), unknown + 2)
        if proba.shape != expected:
            raise ValueError(f"{type(model).__name__}.next_symbol_proba gave shape {proba.shape}, expected {expected}")
        right = proba[np.arange(len(targets)), targets]
        rank = (proba >= right[:, None]).sum(axis=1)  # pessimistic: after every outcome as likely
        ranks.append(np.where(targets == unknown, np.iinfo(np.int64).max, rank))
        losses.append(-np.log(np.maximum(right, EPSILON)))
    rank, loss = np.concatenate(ranks), float(np.concatenate(losses).mean())
    scores = {f"accuracy@{j}": float(np.mean(rank <= j)) for j in ks}
    scores["log_loss"] = loss
    scores["perplexity"] = float(np.exp(loss))
    gain = np.zeros(len(rank))
    top = rank <= 5
    gain[top] = 1.0 / np.log2(rank[top] + 1.0)
    scores["ndcg@5"] = float(gain.mean())
    return pd.Series(scores, name=type(model).__name__)


def compare(
    models: Mapping[str, Any],
    train: Any,
    test: Any,
    k: Sequence[int] = (1, 3, 5),
    print_table: bool = True,
) -> pd.DataFrame:
    """Fit every model on ``train``, evaluate it on ``test`` with :func:`next_element`, and tabulate.

    ``models`` maps a name to an unfitted model. Returns a data frame indexed by name,
    one column per metric; ``attrs["fit_seconds"]`` holds the time each fit took. With
    ``print_table`` both are printed as one table. Give the models ``unknown="map"``
    when ``test`` may hold symbols that ``train`` lacks.
    """
    if not models:
        raise ValueError("no models to compare")
    for model in models.values():  # before any fit
        _check_capability(model)
    rows, fit_seconds = {}, {}
    for name, model in models.items():
        start = time.perf_counter()
        model.fit(train)
        fit_seconds[name] = time.perf_counter() - start
        rows[name] = next_element(model, test, k)
    table = pd.DataFrame(rows).T.rename_axis("model")
    table.attrs["fit_seconds"] = fit_seconds
    if print_table:
        shown = table.assign(**{"fit (s)": pd.Series(fit_seconds)})
        print(shown.to_string(float_format=lambda value: f"{value:.4f}"))
    return table


def train_test_split(sequences: Any, test_fraction: float = 0.2, random_state: Any = None) -> tuple[Any, Any]:
    """Split whole sequences (the cases of an event log) at random into a training and a test part.

    A data frame (an event log) is split by its ``case_id`` column into two frames; a
    list of sequences into two lists. Each part keeps the original order and holds at
    least one sequence.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction!r}")
    if isinstance(sequences, pd.DataFrame):
        if "case_id" not in sequences.columns:
            raise ValueError(f"an event log needs a 'case_id' column; columns are {list(sequences.columns)}")
        cases = pd.unique(sequences["case_id"])
    elif isinstance(sequences, (list, tuple)):
        cases = sequences
    else:
        raise TypeError(f"expected an event-log data frame or a list of sequences, got {type(sequences).__name__}")
    n_cases = len(cases)
    if n_cases < 2:
        raise ValueError(f"need at least 2 sequences to split, got {n_cases}")
    n_test = min(max(round(test_fraction * n_cases), 1), n_cases - 1)
    test = np.zeros(n_cases, dtype=bool)
    test[np.random.default_rng(random_state).permutation(n_cases)[:n_test]] = True
    if isinstance(sequences, pd.DataFrame):
        held_out = sequences["case_id"].isin(cases[test])
        return sequences[~held_out], sequences[held_out]
    return [s for s, out in zip(sequences, test) if not out], [s for s, out in zip(sequences, test) if out]


def _check_capability(model: Any) -> None:
    if not isinstance(model, NextElementModel):
        raise ValueError(
            f"a {type(model).__name__} cannot predict next elements: it is not a NextElementModel "
            "(one with next_symbol_proba and predict_next)"
        )


def _check_k(k: Sequence[int]) -> tuple[int, ...]:
    ks = (k,) if isinstance(k, (int, np.integer)) else tuple(k)
    if not ks or any(not isinstance(j, (int, np.integer)) or isinstance(j, bool) or j < 1 for j in ks):
        raise ValueError(f"k must be positive integers, got {k!r}")
    return tuple(int(j) for j in ks)
