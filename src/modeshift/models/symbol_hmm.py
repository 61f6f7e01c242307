"""A hidden Markov model of symbol sequences that predicts the next element, the end included.

Event logs and clickstreams are sequences of symbols that *stop*. :class:`SymbolHMM`
encodes the symbols with a vocabulary, appends ``END`` to every training sequence as
one more emitted symbol, and fits a categorical :class:`~modeshift.models.HMM` by EM:
the hidden states learn both what is emitted and when a sequence stops. A sequence
x_0 .. x_L-1 then has probability

    p(x_0 .. x_L-1, END) = sum over state paths of pi(z_0) prod_t A(z_t-1, z_t) prod_t B(z_t, y_t),

with y = (x_0 .. x_L-1, END), and the distribution of element t given the ones before
it is p(y_t | y_<t) = sum_k p(z_t = k | y_<t) B(k, .), from the filtered state
probabilities p(z_t-1 | y_<t) of one forward pass over all the data
(:func:`modeshift.kernels.forward_filter`), moved one step by A: every prefix of
every sequence in O(T K^2), as a Markov chain's :meth:`next_symbol_proba` gives them
(the next-element layout of :mod:`modeshift.symbols`). A sequence cannot be empty, so
the first element is conditioned on not being the end.

>>> from modeshift.models import SymbolHMM
>>> sessions = [["home", "item", "cart", "pay"], ["home", "search", "item"]] * 20
>>> model = SymbolHMM(n_states=4, random_state=0).fit(sessions)
>>> model.next_symbol_proba(sessions[:1]).shape    # 4 + 1 rows; 4 symbols, UNKNOWN, END
(5, 7)
>>> [(s, round(p, 2)) for s, p in model.predict_next(["home"], k=2)]
[('item', 0.5), ('search', 0.5)]
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from modeshift import kernels
from modeshift.data import check_probabilities
from modeshift.models.base import Model, NotFittedError
from modeshift.models.hmm import HMM
from modeshift.models.state_labels import labels_from_json, labels_to_json
from modeshift.symbols import UNKNOWN_POLICIES, SymbolSequences, Vocabulary, as_symbol_sequences, next_targets

__all__ = ["SymbolHMM"]

#: The Krichevsky-Trofimov pseudo-count of the unknown symbol in every state under unknown="map".
UNKNOWN_PSEUDO_COUNT = 0.5


class SymbolHMM(Model):
    """A categorical HMM over a vocabulary of symbols and the end of a sequence.

    Parameters
    ----------
    n_states : int
        Number of hidden states K.
    n_iter, tol, n_restarts, random_state
        EM settings, as in :class:`~modeshift.models.HMM`.
    unknown : {"error", "ignore", "map"}
        Symbols outside the vocabulary: raise; treat them as missing observations
        (the chain moves on, the step carries no evidence, ``UNKNOWN`` is never
        predicted and unknown elements are not scored); or treat them as one more
        symbol, ``UNKNOWN``, that each state emits with the probability of a symbol
        seen 0 times under the Krichevsky-Trofimov estimator, 1/2 / (n_k + 1/2) for
        a state that emitted n_k symbols (expected counts) in training, the state's
        other probabilities scaled by n_k / (n_k + 1/2).

    Attributes
    ----------
    vocabulary_ : Vocabulary
        The training symbols; code i for ``vocabulary_.symbols[i]``.
    startprob_ : (K,), transmat_ : (K, K)
        The hidden chain.
    emissionprob_ : (K, V + 2)
        p(element | state) in the columns of the next-element layout: the symbols,
        ``UNKNOWN``, ``END``.
    log_likelihood_history_, converged_
        EM's objective per iteration, and whether it converged.
    """

    def __init__(
        self,
        n_states: int = 4,
        n_iter: int = 100,
        tol: float = 1e-4,
        n_restarts: int = 1,
        random_state: int | np.random.Generator | None = None,
        unknown: str = "error",
    ):
        self.n_states = n_states
        self.n_iter = n_iter
        self.tol = tol
        self.n_restarts = n_restarts
        self.random_state = random_state
        self.unknown = unknown

    # ------------------------------------------------------------------- fitting
    def fit(self, sequences: Any) -> SymbolHMM:
        """Fit the HMM to the sequences, each followed by ``END``; returns ``self``.

        ``sequences``: anything :func:`~modeshift.symbols.as_symbol_sequences` takes.
        """
        self._check_hyperparameters()
        seqs = as_symbol_sequences(sequences)
        targets, lengths = next_targets(seqs), seqs.lengths + 1
        n_outcomes = len(seqs.vocabulary) + 2  # UNKNOWN is never seen: EM gives it probability 0
        hmm = HMM(
            self.n_states,
            emission="categorical",
            n_symbols=n_outcomes,
            n_iter=self.n_iter,
            tol=self.tol,
            n_restarts=self.n_restarts,
            random_state=self.random_state,
        ).fit(targets, lengths)
        emissions = hmm.emissionprob_
        if self.unknown == "map":
            emitted = hmm.expected_statistics(targets, lengths)["emission"]["counts"].sum(axis=1)
            emissions = emissions * (emitted / (emitted + UNKNOWN_PSEUDO_COUNT))[:, None]
            emissions[:, len(seqs.vocabulary)] = UNKNOWN_PSEUDO_COUNT / (emitted + UNKNOWN_PSEUDO_COUNT)
        self.vocabulary_ = seqs.vocabulary
        self.startprob_, self.transmat_, self.emissionprob_ = hmm.startprob_, hmm.transmat_, emissions
        self.log_likelihood_history_, self.converged_ = hmm.log_likelihood_history_, hmm.converged_
        return self

    def _check_hyperparameters(self) -> None:
        n_states = self.n_states
        if not isinstance(n_states, (int, np.integer)) or isinstance(n_states, bool) or n_states < 1:
            raise ValueError(f"n_states must be a positive integer, got {n_states!r}")
        if self.unknown not in UNKNOWN_POLICIES:
            raise ValueError(f"unknown must be one of {UNKNOWN_POLICIES}, got {self.unknown!r}")

    def _check_fitted(self) -> None:
        if "emissionprob_" not in self.__dict__:
            raise NotFittedError("this SymbolHMM is not fitted: call fit")

    # ------------------------------------------------------ next-element probabilities
    def _encode(self, sequences: Any) -> SymbolSequences:
        """Sequences in the vocabulary's codes, unknown symbols as code V unless the policy is "error"."""
        self._check_fitted()
        policy = "error" if self.unknown == "error" else "map"
        return as_symbol_sequences(sequences, vocabulary=self.vocabulary_, unknown=policy)

    def _evidence(self) -> np.ndarray:
        """log p(element | state), one row per code of the layout (V + 2, K); no evidence from
        an unknown symbol under "ignore"."""
        with np.errstate(divide="ignore"):
            table = np.log(self.emissionprob_.T)
        if self.unknown == "ignore":
            table[len(self.vocabulary_)] = 0.0
        return np.ascontiguousarray(table)

    def _first_end(self) -> float:
        """p(END first), which conditioning on a non-empty sequence removes."""
        return float(self.startprob_ @ self.emissionprob_[:, -1])

    def _start_row(self) -> np.ndarray:
        """The distribution of the first element."""
        row = self.startprob_ @ self.emissionprob_
        row[-1] = 0.0
        return row / (1.0 - self._first_end())

    def next_symbol_proba(self, sequences: Any) -> np.ndarray:
        """Predictive distribution of every element and of each sequence's end: the next-element layout.

        (n_steps + n_sequences, V + 2); for a sequence of length L, L + 1 rows, row t
        the distribution of element t given elements 0..t-1: the first from
        ``startprob_``, the others p(z_t-1 | y_<t) A B, from one forward pass. Rows sum to 1.
        """
        seqs = self._encode(sequences)
        filtered, log_likelihood = kernels.forward_filter(
            self._evidence(), seqs.offsets, self.startprob_, self.transmat_[None], rows=seqs.codes
        )
        _check_possible(log_likelihood)
        n_sequences, n_steps = seqs.n_sequences, len(seqs.codes)
        proba = np.empty((n_steps + n_sequences, self.emissionprob_.shape[1]))
        proba[seqs.offsets[:-1] + np.arange(n_sequences)] = self._start_row()
        after = np.arange(n_steps) + np.repeat(np.arange(n_sequences), seqs.lengths) + 1  # the row after each step
        proba[after] = filtered @ (self.transmat_ @ self.emissionprob_)
        return proba

    def next_distribution(self, prefix: Sequence[Hashable] = ()) -> pd.Series:
        """The distribution of the element after ``prefix`` (the start of a sequence if empty),
        indexed by the symbols, ``UNKNOWN`` and ``END``."""
        self._check_fitted()
        labels = pd.Index(self.vocabulary_.next_labels, dtype=object, tupleize_cols=False)
        proba = self.next_symbol_proba([list(prefix)])[-1] if len(prefix) else self._start_row()
        return pd.Series(proba, index=labels)

    def predict_next(self, prefix: Sequence[Hashable] = (), k: int = 5) -> list[tuple[Hashable, float]]:
        """The ``k`` likeliest elements after ``prefix`` with their probabilities, likeliest first;
        the end of the sequence shows as ``modeshift.symbols.END``."""
        proba = self.next_distribution(prefix)
        top = proba[proba > 0].sort_values(ascending=False, kind="stable").head(int(k))
        return [(label, float(p)) for label, p in top.items()]

    def score(self, sequences: Any) -> float:
        """Total log-likelihood (nats) of the sequences, each followed by ``END``, given that they are
        not empty; under ``unknown="ignore"`` unknown symbols are marginalised out."""
        seqs = self._encode(sequences)
        offsets = seqs.offsets + np.arange(seqs.n_sequences + 1)
        log_likelihood = kernels.log_likelihood(
            self._evidence(), offsets, self.startprob_, self.transmat_[None], rows=next_targets(seqs)
        )
        _check_possible(log_likelihood)
        return float(log_likelihood.sum() - seqs.n_sequences * np.log1p(-self._first_end()))

    # ------------------------------------------------------------- persistence
    def _learned_arrays(self) -> dict[str, np.ndarray]:
        self._check_fitted()
        return {"startprob_": self.startprob_, "transmat_": self.transmat_, "emissionprob_": self.emissionprob_}

    def _learned_attributes(self) -> dict[str, Any]:
        return {
            "vocabulary_": labels_to_json(self.vocabulary_.symbols),
            "log_likelihood_history_": [float(v) for v in self.log_likelihood_history_],
            "converged_": bool(self.converged_),
        }

    def _restore(self, arrays: dict[str, np.ndarray], attributes: dict[str, Any]) -> None:
        lacking = [name for name in ("startprob_", "transmat_", "emissionprob_") if name not in arrays]
        if lacking or "vocabulary_" not in attributes:
            raise ValueError(f"the model file lacks {lacking or ['vocabulary_']}")
        self.vocabulary_ = Vocabulary(labels_from_json(attributes["vocabulary_"]))
        n_states, n_outcomes = self.n_states, len(self.vocabulary_) + 2
        self.startprob_ = check_probabilities("startprob_", arrays["startprob_"], (n_states,))
        self.transmat_ = check_probabilities("transmat_", arrays["transmat_"], (n_states, n_states))
        self.emissionprob_ = check_probabilities("emissionprob_", arrays["emissionprob_"], (n_states, n_outcomes))
        self.log_likelihood_history_ = attributes.get("log_likelihood_history_", [])
        self.converged_ = attributes.get("converged_", False)


def _check_possible(log_likelihood: np.ndarray) -> None:
    impossible = np.flatnonzero(~np.isfinite(log_likelihood))
    if impossible.size:
        raise ValueError(
            f"sequence {impossible[0]} has probability 0 under the model (a symbol no reachable state emits); "
            "fit with more states or data"
        )
