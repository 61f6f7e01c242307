"""Markov chains of any order over symbols: smoothed counts, prediction, sampling and the chain's dynamics.

A chain of order n predicts each element of a sequence from the n symbols before
it (fewer at the start of the sequence), and ends the sequence with a probability
that depends on the same context::

    p(x_0 .. x_L-1) = prod_t p(x_t | x_t-n .. x_t-1) * p(END | x_L-n .. x_L-1)

``fit`` counts, for every context seen, what followed it: each symbol, or the end.
A context's next-element distribution is estimated from its counts c_j by an
add-constant estimator, p_j = (c_j + b(c_j)) / sum_k (c_k + b(c_k)), summed over
the K outcomes a context can have (the symbols, the end, and the unknown symbol
under ``unknown="map"``):

- ``"ml"``: b = 0, maximum likelihood;
- ``"laplace"``: b = 1; ``"kt"``: b = 1/2 (Krichevsky-Trofimov); a number: add-b;
- ``"minimax"``: b = 1/2, 1 or 3/4 for an outcome seen 0, 1 or more times, the
  estimator of Braess & Sauer (2004), "Bernstein polynomials and learning theory",
  J. Approx. Theory 128, whose KL risk (K - 1) / 2N + o(1/N) is asymptotically
  minimax for one distribution. For a k-state chain observed for n steps, with
  transition probabilities bounded away from zero, Hao, Orlitsky & Pichapati
  (2018), "On learning Markov chains" (NeurIPS), show that the minimax risk in the
  loss sum_i pi_i KL(P_i || P^_i) is k(k - 1) / 2n to leading order and that
  add-constant estimators applied row by row attain it (the tests check this rate).

A context never seen in training has no counts: it predicts every outcome alike.
The chain's *dynamics* — what comes next given that the sequence goes on — are the
rows without the end, renormalised (``transmat_``); for b(c) that depends
only on c this is the same estimator applied to the transition counts alone.
Analysis of the chain (``structure``, ``stationary_distribution``, ``mixing_time``,
``entropy_rate``, divergence rates, all from :mod:`modeshift.chain_analysis`) uses
the dynamics: for order 1 the chain on symbols, for higher orders the chain on
contexts of n symbols (``states_``), as a dense matrix of at most
``MAX_DENSE_STATES`` states. Fitting, scoring, prediction
and sampling work at any order from sparse counts (order 3 on 10^7 tokens takes
seconds and a few hundred MB).

>>> from modeshift import MarkovChain
>>> chain = MarkovChain(smoothing="ml").fit([list("abab"), list("aab"), list("ba")])
>>> chain.states_
['a', 'b']
>>> chain.transmat_
array([[0.25, 0.75],
       [1.  , 0.  ]])
>>> chain.end_probability_.round(3)    # 'b' ended 2 of its 4 occurrences
array([0.2, 0.5])
>>> print(chain.structure())
1 communicating class:
  closed, period 1: {'a', 'b'}
>>> chain.stationary_distribution().round(4), round(chain.entropy_rate(base=2), 4)
(array([0.5714, 0.4286]), 0.4636)
>>> chain.predict_next("ab", k=2)
[('a', 0.5), (END, 0.5)]

Higher orders condition on more symbols; ``unknown="map"`` gives symbols never
seen in training a smoothed probability instead of an error:

>>> sessions = [["home", "item", "cart", "pay"], ["home", "item", "home"]]
>>> clicks = MarkovChain(order=2, smoothing="kt", unknown="map").fit(sessions)
>>> clicks.predict_next(["home", "item"], k=2)    # (1 + 1/2) / (2 + 6/2): 4 symbols, UNKNOWN, END
[('home', 0.3), ('cart', 0.3)]
>>> clicks.next_symbol_proba([["home", "search"]]).shape    # 2 + 1 rows; 4 + 2 columns
(3, 6)
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import sparse

from modeshift import chain_analysis
from modeshift._kernels import sample_chain
from modeshift._kernels.counting import context_keys, find_keys
from modeshift.chain_analysis import ChainStructure
from modeshift.data import Sequences, as_sequences
from modeshift.models import em
from modeshift.models.base import Model, NotFittedError
from modeshift.models.params import Integer, Number, OneOf, either
from modeshift.models.state_labels import VocabularyFromShards, labels_from_json, labels_to_json
from modeshift.statistics import Stacked
from modeshift.symbols import UNKNOWN_POLICIES, Vocabulary, n_targets, next_targets
from modeshift.transitions import draw_rows

__all__ = ["MAX_DENSE_STATES", "SMOOTHINGS", "MarkovChain", "smooth"]

SMOOTHINGS: tuple[str, ...] = ("ml", "laplace", "kt", "minimax")
#: The most states the chain analysis builds a dense transition matrix for.
MAX_DENSE_STATES = 4096
_SCORE_CHUNK = 1 << 20  # elements scored at a time
_ADD = {"ml": 0.0, "laplace": 1.0, "kt": 0.5}


# ------------------------------------------------------------------- estimators
def smooth(counts: ArrayLike, smoothing: str | float = "kt") -> np.ndarray:
    """Probabilities from counts along the last axis: p_j = (c_j + b(c_j)) / sum_k (c_k + b(c_k)).

    b is 0 (``"ml"``), 1 (``"laplace"``), 1/2 (``"kt"``), the given number, or for
    ``"minimax"`` 1/2, 1 or 3/4 as c_j is 0, 1 or more (see the module docstring).
    A row with nothing to divide (no counts under ``"ml"``) is uniform.

    >>> smooth([3, 1, 0], "minimax")   # (3 + 3/4, 1 + 1, 0 + 1/2) / 6.25
    array([0.6 , 0.32, 0.08])
    """
    counts = np.asarray(counts, dtype=np.float64)
    weights = counts + _pseudo_counts(counts, _check_smoothing(smoothing))
    totals = weights.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, weights / totals, 1.0 / counts.shape[-1])


def _check_smoothing(smoothing: Any) -> str | float:
    if isinstance(smoothing, str) and smoothing in SMOOTHINGS:
        return smoothing
    number = isinstance(smoothing, (int, float, np.integer, np.floating)) and not isinstance(smoothing, bool)
    if number and math.isfinite(smoothing) and smoothing >= 0:
        return float(smoothing)
    raise ValueError(f"smoothing must be one of {SMOOTHINGS} or a pseudo-count >= 0, got {smoothing!r}")


def _pseudo_counts(counts: np.ndarray, smoothing: str | float) -> np.ndarray:
    """b(c) of every count c."""
    if smoothing == "minimax":
        return np.where(counts == 0, 0.5, np.where(counts == 1, 1.0, 0.75))
    return np.full(np.shape(counts), _ADD.get(smoothing, smoothing), dtype=np.float64)


# ------------------------------------------------------------------------ model
class MarkovChain(VocabularyFromShards, Model):
    """A Markov chain of any order over a vocabulary of symbols, with the ends of sequences.

    Parameters
    ----------
    order : int
        How many previous symbols each prediction depends on (>= 1).
    smoothing : {"ml", "laplace", "kt", "minimax"} or float
        The estimator of every next-element distribution from its counts (module
        docstring); a number b >= 0 adds b to every count.
    unknown : {"error", "ignore", "map"}
        What scoring and prediction do with symbols outside the vocabulary: raise;
        skip them (they are neither scored nor part of any context); or treat them as
        one more symbol, ``UNKNOWN``. Under ``"map"`` the unknown symbol is one more
        outcome of every context, with count 0, so it gets the estimator's mass for
        an unseen outcome — b(0) / sum_k (c_k + b(c_k)), e.g. 1/2 / (N + K/2) for
        ``"kt"`` in a context seen N times without unseen outcomes besides it — and
        the contexts that contain it, never seen, predict all K outcomes alike. It is
        a state of the chain (the last of ``states_`` for order 1). ``"ml"`` gives
        unseen outcomes nothing, so ``"map"`` needs another smoothing.

    Attributes
    ----------
    vocabulary_ : Vocabulary
        The training symbols, code i for ``vocabulary_.symbols[i]``. Saving needs
        JSON symbols: str, int, float or bool.
    context_keys_ : (n_contexts,) int64
        Every context seen in training, sorted: its codes as digits in base V + 2
        (V = len(vocabulary_)), oldest first, with digit V + 1 before the start.
    counts_ : scipy.sparse.csr_array (n_contexts, V + 2)
        What followed each context: the symbols' codes, then ``UNKNOWN`` (V) and
        ``END`` (V + 1), the columns of the next-element layout.

    ``initial_distribution_``, ``transmat_``, ``end_probability_`` and ``states_``
    are computed from them (``transition_matrix_`` is the deprecated name of ``transmat_``).
    """

    data_kind = "symbols"
    _test_change = {"order": 2}

    _constraints = {
        "order": Integer(1),
        "smoothing": either(OneOf(SMOOTHINGS), Number(0)),
        "unknown": OneOf(UNKNOWN_POLICIES),
    }
    _renamed = {"transition_matrix_": "transmat_"}
    _file_arrays = dict.fromkeys(("context_keys_", "counts_data", "counts_indices", "counts_indptr"), "integer")
    _file_attributes = {"vocabulary_": "labels"}

    def __init__(self, order: int = 1, smoothing: str | float = "kt", unknown: str = "error"):
        self.order = order
        self.smoothing = smoothing
        self.unknown = unknown

    # ------------------------------------------------------------------- fitting
    def fit(self, data: Any, lengths: Sequence[int] | None = None, **columns: Any) -> MarkovChain:
        """Count every context and what followed it; returns ``self``.

        ``data``: symbol sequences in any form :func:`~modeshift.data.as_sequences` reads
        with ``symbols=True`` — a string, a list of symbols (cut by ``lengths``), a list of
        sequences, an event-log data frame (``columns`` name its ``id_column``,
        ``symbol_column`` and ``time_column``).
        """
        self._start_fit()
        return self._fit_em(self._em_data(data, lengths, **columns))

    def _em_data(self, data: Any, lengths: Sequence[int] | None = None, **columns: Any) -> Sequences:
        """What the counting reads: the symbols coded by the model's vocabulary (else by one learned
        from ``data``), from ``fit``'s arguments or one shard of them (:mod:`modeshift.distributed`)."""
        return as_sequences(data, lengths, symbols=True, vocabulary=self.__dict__.get("vocabulary_"), **columns)

    def _fit_em(self, seqs: Sequences, over: em.Over | None = None) -> MarkovChain:
        """The rest of ``fit``: the counts of ``seqs``, or summed ``over`` shards held elsewhere
        (each sends its distinct (context, next element) pairs and their counts), ``seqs`` being
        then a sample that carries the vocabulary of all of them."""
        n_symbols = len(seqs.vocabulary)
        base = n_symbols + 2
        if (self.order + 1) * math.log2(base) >= 63:  # not base ** (order + 1): a huge order would hang on it
            raise ValueError(f"order {self.order} over {n_symbols} symbols needs keys beyond 64 bits; lower the order")
        self.vocabulary_ = seqs.vocabulary
        pairs = (over or em.in_memory(seqs))(_pair_counts, self).array
        self.context_keys_, self.counts_ = _count_table(pairs[:, 0], pairs[:, 1], base)
        self._prepare()
        self._finish_fit(seqs)
        return self

    def _check_params(self) -> None:
        super()._check_params()
        if self.unknown == "map" and _pseudo_counts(0, self.smoothing) == 0:
            raise ValueError(
                f"unknown='map' needs a smoothing that gives unseen symbols probability; smoothing={self.smoothing!r} "
                "gives them none (use 'kt', 'laplace', 'minimax' or a pseudo-count > 0)"
            )

    def _prepare(self) -> None:
        """Quantities derived from the counts: the estimator's denominator of every context."""
        self.__dict__.pop("_stored_pairs", None)
        self._smoothing = _check_smoothing(self.smoothing)
        self._prepare_layout()
        self._unseen = float(_pseudo_counts(0, self._smoothing))
        counts = self.counts_
        weights = counts.data + _pseudo_counts(counts.data, self._smoothing)
        unseen_outcomes = self._n_outcomes(self.context_keys_) - np.diff(counts.indptr)
        self._denominators = np.add.reduceat(weights, counts.indptr[:-1]) + unseen_outcomes * self._unseen

    def _prepare_layout(self) -> None:
        """Constants of the key encoding and of the next-element layout."""
        self._base = len(self.vocabulary_) + 2
        self._n_states = len(self.vocabulary_) + (self.unknown == "map")
        self._start = sum((self._base - 1) * self._base**k for k in range(self.order))
        self._labels = pd.Index(self.vocabulary_.next_labels, dtype=object, tupleize_cols=False)

    def _check_fitted(self) -> None:
        if "counts_" not in self.__dict__:
            raise NotFittedError(f"this {type(self).__name__} is not fitted: call fit")

    # ------------------------------------------------------ next-element probabilities
    def _allowed(self, keys: np.ndarray, outcomes: np.ndarray) -> np.ndarray:
        """Whether each outcome code can follow each context: any symbol, UNKNOWN under "map", END
        except at the start (empty sequences are errors)."""
        n_symbols = len(self.vocabulary_)
        unknown = (outcomes == n_symbols) & (self.unknown == "map")
        return (outcomes < n_symbols) | unknown | ((outcomes == n_symbols + 1) & (keys != self._start))

    def _n_outcomes(self, keys: np.ndarray) -> np.ndarray:
        """How many outcomes each context has (those :meth:`_allowed` allows)."""
        return len(self.vocabulary_) + (self.unknown == "map") + (keys != self._start)

    def _rows(self, keys: np.ndarray) -> np.ndarray:
        """Row of each context in counts_, -1 for a context never seen."""
        return find_keys(self.context_keys_, keys)

    def _next_proba(self, keys: np.ndarray) -> np.ndarray:
        """(len(keys), V + 2) next-element distributions of the contexts, in the next-element layout."""
        rows = self._rows(keys)
        seen = rows >= 0
        allowed = self._allowed(keys[:, None], np.arange(self._base))
        unseen = np.where(seen, self._unseen / self._denominators[rows], 1.0 / self._n_outcomes(keys))
        proba = np.where(allowed, unseen[:, None], 0.0)
        block = self.counts_[rows[seen]]  # the stored counts of the contexts seen, row by row
        stored = np.diff(block.indptr)
        weights = block.data + _pseudo_counts(block.data, self._smoothing)
        denominators = self._denominators[rows[seen]].repeat(stored)
        proba[np.flatnonzero(seen).repeat(stored), block.indices] = weights / denominators
        return proba

    def _target_proba(self, keys: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """p(target | context) for each (context, target) pair, without dense rows."""
        rows = self._rows(keys)
        pairs = keys * self._base + targets
        at = find_keys(self._stored_pairs, pairs)
        counts = np.where(at >= 0, self.counts_.data[at], 0)
        weights = counts + _pseudo_counts(counts, self._smoothing)
        proba = np.where(rows >= 0, weights / self._denominators[rows], 1.0 / self._n_outcomes(keys))
        return np.where(self._allowed(keys, targets), proba, 0.0)

    @functools.cached_property
    def _stored_pairs(self) -> np.ndarray:
        """Every (context, next element) pair seen in training as one sorted key (kept once scored)."""
        return np.repeat(self.context_keys_, np.diff(self.counts_.indptr)) * self._base + self.counts_.indices

    def _dynamics_rows(self, keys: np.ndarray) -> np.ndarray:
        """(len(keys), n_states) distributions of the next symbol given that the sequence goes on."""
        joint = self._next_proba(keys)[:, : self._n_states]
        totals = joint.sum(axis=1, keepdims=True)
        stuck = int(np.sum(totals == 0))
        if stuck:
            warnings.warn(
                f"{stuck} of {len(keys)} contexts were never followed by a symbol in training and smoothing='ml' "
                "has no estimate for them: their transition rows are uniform",
                stacklevel=3,
            )
        return smooth(joint, "ml")

    def _encode(self, data: Any, lengths: Sequence[int] | None = None, **columns: Any) -> Sequences:
        """Sequences in the vocabulary's codes, unknown symbols as code V unless the policy is "error"."""
        self._check_fitted()
        policy = "error" if self.unknown == "error" else "map"
        return as_sequences(data, lengths, vocabulary=self.vocabulary_, unknown=policy, **columns)

    def _contexts(self, seqs: Sequences) -> np.ndarray:
        skip = len(self.vocabulary_) if self.unknown == "ignore" else -1
        return context_keys(seqs.codes, seqs.offsets, self.order, self._base, skip)

    def _prefix_key(self, prefix: Sequence[Hashable]) -> int:
        if len(prefix) == 0:
            self._check_fitted()
            return self._start
        seqs = self._encode(prefix)
        if seqs.n_sequences != 1:
            raise ValueError(f"a prefix is one sequence of symbols, got {seqs.n_sequences} sequences")
        return int(self._contexts(seqs)[-1])

    # -------------------------------------------------------------- prediction
    def next_symbol_proba(self, data: Any, lengths: Sequence[int] | None = None, **columns: Any) -> np.ndarray:
        """Predictive distribution of every element and of each sequence's end: the next-element layout.

        Returns (n_steps + n_sequences, V + 2): for each sequence of length L, L + 1
        rows, row t the distribution of element t given elements 0..t-1 (row L: of
        what follows the last one, whose right answer is END). Columns: the
        vocabulary's symbols, ``UNKNOWN`` (mass only under ``unknown="map"``), ``END``.
        Rows sum to 1; :func:`~modeshift.symbols.next_targets` gives the right answers.
        """
        return self._next_proba(self._contexts(self._encode(data, lengths, **columns)))

    def next_distribution(self, prefix: Sequence[Hashable] = ()) -> pd.Series:
        """The distribution of the element after ``prefix`` (any sequence; only its last ``order``
        symbols matter, and a shorter one means the start of a sequence), indexed by the
        symbols, ``UNKNOWN`` and ``END``."""
        return pd.Series(self._next_proba(np.array([self._prefix_key(prefix)]))[0], index=self._labels)

    def predict_next(self, prefix: Sequence[Hashable] = (), k: int = 5) -> list[tuple[Hashable, float]]:
        """The ``k`` likeliest elements after ``prefix`` with their probabilities, likeliest first;
        the end of the sequence shows as ``modeshift.symbols.END``."""
        proba = self._next_proba(np.array([self._prefix_key(prefix)]))[0]
        top = [i for i in np.argsort(-proba, kind="stable")[: int(k)] if proba[i] > 0]
        return [(self._labels[i], float(proba[i])) for i in top]

    def score(self, data: Any, lengths: Sequence[int] | None = None, **columns: Any) -> float:
        """Total log-likelihood (nats): every element given its context, the first and the end
        included. Under ``unknown="ignore"`` unknown symbols are left out; ``-inf`` if an
        element has probability 0 (possible under ``"ml"``)."""
        seqs = self._encode(data, lengths, **columns)
        targets, keys = next_targets(seqs), self._contexts(seqs)
        total = 0.0
        for start in range(0, len(keys), _SCORE_CHUNK):  # temporaries of a bounded size, however long the data
            part = slice(start, start + _SCORE_CHUNK)
            proba = self._target_proba(keys[part], targets[part])
            if self.unknown == "ignore":
                proba = proba[targets[part] != len(self.vocabulary_)]
            with np.errstate(divide="ignore"):
                total += float(np.log(proba).sum())
        return total

    # ----------------------------------------------------------- model selection
    @property
    def n_parameters(self) -> int:
        """Free parameters: for every context seen in training, its number of outcomes minus one
        (a context never seen predicts all outcomes alike, with no parameter)."""
        self._check_fitted()
        return int(np.sum(self._n_outcomes(self.context_keys_) - 1))

    def aic(self, data: Any, lengths: Sequence[int] | None = None, **columns: Any) -> float:
        """Akaike information criterion, -2 log-likelihood + 2 n_parameters."""
        return -2.0 * self.score(data, lengths, **columns) + 2.0 * self.n_parameters

    def bic(self, data: Any, lengths: Sequence[int] | None = None, **columns: Any) -> float:
        """Bayesian information criterion, -2 log-likelihood + n_parameters log(n), n the elements and
        ends scored (one per step and one per sequence, unknown symbols under ``"ignore"`` left out)."""
        seqs = self._encode(data, lengths, **columns)
        return -2.0 * self.score(seqs) + self.n_parameters * np.log(n_targets(seqs, self.unknown))

    # ------------------------------------------------------------ chain and parameters
    def _lifted(self) -> tuple[list[Hashable], np.ndarray, np.ndarray]:
        """States (contexts of ``order`` symbols), their keys, and each one's successor per next symbol."""
        self._check_fitted()
        n_states = self._n_states
        size = n_states**self.order
        if size > MAX_DENSE_STATES:
            raise ValueError(
                f"the chain has {n_states}^{self.order} = {size} states, more than the {MAX_DENSE_STATES} its analysis "
                "handles as a dense matrix; next_distribution and counts_ work at any size"
            )
        powers = n_states ** np.arange(self.order - 1, -1, -1)
        digits = (np.arange(size)[:, None] // powers) % n_states
        keys = digits @ (self._base ** np.arange(self.order - 1, -1, -1))
        successors = (np.arange(size)[:, None] * n_states + np.arange(n_states)) % size
        labels = list(self._labels[:n_states])
        states = labels if self.order == 1 else [tuple(labels[d] for d in row) for row in digits]
        return states, keys, successors

    def _chain(self) -> tuple[list[Hashable], np.ndarray]:
        """States and the dense transition matrix of the dynamics."""
        states, keys, successors = self._lifted()
        matrix = np.zeros((len(keys), len(keys)))
        matrix[np.arange(len(keys))[:, None], successors] = self._dynamics_rows(keys)
        return states, matrix

    @property
    def states_(self) -> list[Hashable]:
        """States of the chain: for order 1 the symbols (then ``UNKNOWN`` under ``"map"``); for
        order n every context of n such symbols, a tuple, oldest first."""
        return self._lifted()[0]

    @property
    def transmat_(self) -> np.ndarray:
        """(S, S) dynamics on ``states_``: p(next state | state, the sequence goes on); rows sum to 1.
        For order n, context (a_1..a_n) moves to (a_2..a_n, x) with p(x | a_1..a_n)."""
        return self._chain()[1]

    @property
    def end_probability_(self) -> np.ndarray:
        """(S,) probability that a sequence ends right after each state of ``states_``."""
        return self._next_proba(self._lifted()[1])[:, -1]

    @property
    def initial_distribution_(self) -> np.ndarray:
        """Distribution of the first symbol over the symbols (then ``UNKNOWN`` under ``"map"``)."""
        self._check_fitted()
        return self._next_proba(np.array([self._start]))[0, : self._n_states]

    # ----------------------------------------------------------------- analysis
    def structure(self) -> ChainStructure:
        """Communicating classes of the dynamics, which are closed, and their periods."""
        states, matrix = self._chain()
        return chain_analysis.chain_structure(matrix, states)

    def stationary_distribution(self) -> np.ndarray:
        """pi with pi P = pi over ``states_``; ``ValueError`` naming the closed classes if there are
        several (then it is not unique). Transient states get 0; a periodic chain has one too."""
        states, matrix = self._chain()
        return chain_analysis.stationary_distribution(matrix, states=states)

    def mixing_time(self, eps: float = 0.25) -> int:
        """Steps until the worst start is within ``eps`` of stationarity in total variation; see
        :func:`~modeshift.chain_analysis.mixing_time` (``ValueError`` for periodic chains and several
        closed classes)."""
        states, matrix = self._chain()
        return chain_analysis.mixing_time(matrix, eps, states)

    def entropy_rate(self, base: float | None = None) -> float:
        """-sum_i pi_i sum_j P_ij log P_ij of the dynamics, in nats (``base=2``: bits per symbol)."""
        states, matrix = self._chain()
        return chain_analysis.entropy_rate(matrix, base, states)

    def kl_divergence_rate(self, other: MarkovChain) -> float:
        """sum_i pi_i KL(P_i || Q_i): this chain's P and pi against ``other``'s Q, states matched by
        symbol (``inf`` where this chain goes where ``other`` cannot)."""
        return self.f_divergence_rate(other, "kl")

    def f_divergence_rate(self, other: MarkovChain, f: str | Callable[[np.ndarray], np.ndarray] = "kl") -> float:
        """sum_i pi_i D_f(P_i || Q_i) against ``other`` of the same order (see
        :func:`~modeshift.chain_analysis.f_divergence_rate`).

        States are matched by symbol. ``other``'s mass on states this chain lacks is
        pooled into one extra outcome that this chain never takes; a state ``other``
        lacks has all of ``other``'s mass there.
        """
        if not isinstance(other, MarkovChain):
            raise TypeError(f"other must be a MarkovChain, got {type(other).__name__}")
        if other.order != self.order:
            raise ValueError(f"the chains differ in order: {self.order} and {other.order}")
        states, P = self._chain()
        other_states, other_P = other._chain()
        index = {state: i for i, state in enumerate(other_states)}
        where = np.array([index.get(state, -1) for state in states])
        found = np.flatnonzero(where >= 0)
        Q = np.zeros_like(P)
        Q[np.ix_(found, found)] = other_P[np.ix_(where[found], where[found])]
        elsewhere = np.clip(1.0 - Q.sum(axis=1, keepdims=True), 0.0, None)
        return chain_analysis.f_divergence_rate(P, np.hstack([Q, elsewhere]), f, states)

    # ----------------------------------------------------------------- sampling
    def sample(
        self,
        n_steps: int | None = None,
        n_sequences: int = 1,
        random_state: int | np.random.Generator | None = None,
        *,
        stop_at_end: bool = True,
        max_length: int | None = None,
    ) -> list[Any]:
        """Simulate ``n_sequences`` sequences of at most ``n_steps`` symbols.

        Each sequence runs until the model ends it (``END`` is not returned) or until it
        has ``n_steps`` symbols, whichever comes first: ``n_steps`` caps the length, so a
        sequence of exactly ``n_steps`` symbols may have been cut, while a shorter one
        ended. With ``stop_at_end=False`` every sequence is a path of exactly ``n_steps``
        symbols of the dynamics (``transmat_``: what comes next given that the sequence
        goes on). ``UNKNOWN`` stands for the unknown symbol under ``"map"``. Returns the
        symbols of one sequence (a list), or a list of them for several.

        The form of the last release, ``sample(n_sequences, max_length=10_000)`` (whole
        sequences, always a list of them), still works with a DeprecationWarning.
        """
        self._check_fitted()
        if n_steps is None or max_length is not None:
            return self._sample_old_form(n_sequences if n_steps is None else n_steps, max_length, random_state)
        n_steps, n_sequences = int(n_steps), int(n_sequences)  # checked (params.ARGUMENTS)
        codes = self._sample_codes(n_steps, n_sequences, np.random.default_rng(random_state), stop_at_end)
        symbols = [list(self._labels[block]) for block in codes]
        return symbols[0] if n_sequences == 1 else symbols

    def _sample_old_form(self, n_sequences: int, max_length: int | None, random_state: Any) -> list[list[Any]]:
        """``sample(n_sequences, max_length=10_000)``, the form of the last release."""
        warnings.warn(
            f"{type(self).__name__}.sample(n_sequences, max_length=...) is now sample(n_steps, n_sequences), "
            "n_steps capping the length as max_length did; the old form goes in the next release",
            DeprecationWarning,
            stacklevel=3,
        )
        cap = 10_000 if max_length is None else int(max_length)
        sequences = self.sample(cap, n_sequences, random_state)
        sequences = sequences if n_sequences > 1 else [sequences]
        cut = sum(len(sequence) == cap for sequence in sequences)  # a sequence that never drew END
        if cut:
            warnings.warn(f"{cut} sequences reached max_length={cap} and were cut", stacklevel=3)
        return sequences

    def _sample_codes(
        self, n_steps: int, n_sequences: int, rng: np.random.Generator, stop_at_end: bool
    ) -> list[np.ndarray]:
        """The codes of ``n_sequences`` sequences drawn side by side, each stopped at END (if
        ``stop_at_end``) or after ``n_steps`` symbols."""
        if not stop_at_end and self.order == 1 and self._n_states <= MAX_DENSE_STATES:  # compiled, dense
            initial, matrix = self.initial_distribution_, self.transmat_
            return [sample_chain(initial, matrix, rng.random(n_steps)) for _ in range(n_sequences)]
        keys = np.full(n_sequences, self._start)
        alive = np.arange(n_sequences)
        owners, draws = [], []
        for _ in range(n_steps):
            proba = self._next_proba(keys[alive]) if stop_at_end else self._dynamics_rows(keys[alive])
            codes = draw_rows(proba, rng)
            going = codes != self._base - 1  # not END (which the dynamics never draw)
            owners.append(alive[going])
            draws.append(codes[going])
            keys[alive] = self._advance(keys[alive], codes)
            alive = alive[going]
            if alive.size == 0:
                break
        owner, codes = np.concatenate(owners), np.concatenate(draws)
        order = np.argsort(owner, kind="stable")
        return np.split(codes[order], np.cumsum(np.bincount(owner, minlength=n_sequences))[:-1])

    def _advance(self, keys: np.ndarray, codes: np.ndarray) -> np.ndarray:
        return (keys * self._base + codes) % self._base**self.order

    # ------------------------------------------------------------- persistence
    def _learned_arrays(self) -> dict[str, np.ndarray]:
        self._check_fitted()
        return {
            "context_keys_": self.context_keys_,
            "counts_data": self.counts_.data,
            "counts_indices": self.counts_.indices,
            "counts_indptr": self.counts_.indptr,
        }

    def _learned_attributes(self) -> dict[str, Any]:
        return {"vocabulary_": labels_to_json(self.vocabulary_.symbols)}

    def _restore(self, arrays: dict[str, np.ndarray], attributes: dict[str, Any]) -> None:
        names = ("context_keys_", "counts_data", "counts_indices", "counts_indptr")
        lacking = [name for name in names if name not in arrays] + ["vocabulary_"] * ("vocabulary_" not in attributes)
        if lacking:
            raise ValueError(f"the model file lacks {lacking}")
        self.vocabulary_ = Vocabulary(labels_from_json(attributes["vocabulary_"]))
        keys, counts = _checked_counts(arrays, len(self.vocabulary_) + 2, self.order)
        self.context_keys_ = keys
        self.counts_ = counts
        self._prepare()


def _checked_counts(arrays: dict[str, np.ndarray], base: int, order: int) -> tuple[np.ndarray, sparse.csr_array]:
    """The context keys and count table of a model file, checked as the structure the methods
    index into (a sparse table with indices out of range would read outside its memory):
    keys strictly increasing in [0, base**order), row pointers from 0 non-decreasing to the
    number of entries, column indices strictly increasing within each row and below ``base``,
    counts positive."""
    if order * math.log2(base) >= 63:
        raise ValueError(f"order={order} with {base - 2} symbols: its contexts do not fit 64-bit keys")
    names = ("context_keys_", "counts_data", "counts_indices", "counts_indptr")
    keys, data, indices, indptr = (np.asarray(arrays[name], dtype=np.int64) for name in names)
    n_keys = base**order
    if keys.ndim != 1 or (keys.size and (keys[0] < 0 or keys[-1] >= n_keys or (np.diff(keys) <= 0).any())):
        raise ValueError(f"context_keys_ must be strictly increasing integers in [0, {n_keys})")
    if indptr.shape != (len(keys) + 1,) or indptr[0] != 0 or (np.diff(indptr) < 0).any():
        raise ValueError(f"counts_indptr must be {len(keys) + 1} non-decreasing row pointers from 0")
    if data.ndim != 1 or indices.shape != data.shape or indptr[-1] != len(data):
        raise ValueError(
            f"counts_data and counts_indices must be 1-D, of the length counts_indptr ends at ({indptr[-1]})"
        )
    if data.size and (indices.min() < 0 or indices.max() >= base or (data <= 0).any()):
        raise ValueError(f"counts_indices must lie in [0, {base}) and counts_data be positive counts")
    starts = np.zeros(len(indices), dtype=bool)
    starts[indptr[:-1][indptr[:-1] < len(indices)]] = True  # a row's first entry follows nothing
    if (np.diff(indices)[~starts[1:]] <= 0).any():
        raise ValueError("counts_indices must increase strictly within each row")
    return keys, sparse.csr_array((data, indices, indptr), shape=(len(keys), base))


def _pair_counts(model: MarkovChain, seqs: Sequences) -> Stacked:
    """The distinct (context, next element) keys of ``seqs``, sorted, and how often each occurs:
    rows (key, count), stacked over shards."""
    base = len(model.vocabulary_) + 2
    if model.unknown != "map" and seqs.codes.max() >= base - 2:
        raise ValueError("the training sequences hold the unknown code; fit on symbols, or use unknown='map'")
    keys = context_keys(seqs.codes, seqs.offsets, model.order, base, -1)
    keys *= base
    keys += next_targets(seqs)  # (context, next element) as one key
    if keys.max() < len(keys) + 2**20:  # few possible keys: count them all
        counts = np.bincount(keys)
        pairs = np.flatnonzero(counts)
        counts = counts[pairs]
    else:
        keys.sort()
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        pairs, counts = keys[starts], np.diff(starts, append=len(keys))
    return Stacked(np.column_stack([pairs, counts]).astype(np.int64))


def _count_table(pairs: np.ndarray, counts: np.ndarray, base: int) -> tuple[np.ndarray, sparse.csr_array]:
    """The contexts, as sorted keys, and the counts of what followed each (``base`` columns), from
    (context, next element) keys and their counts (a key may repeat: its counts add up)."""
    pairs, where = np.unique(pairs, return_inverse=True)
    counts = np.bincount(where, weights=counts, minlength=len(pairs)).astype(np.int64)
    contexts, following = np.divmod(pairs, base)
    starts = np.flatnonzero(np.r_[True, contexts[1:] != contexts[:-1]])
    table = sparse.csr_array((counts, following, np.append(starts, len(contexts))), shape=(len(starts), base))
    return contexts[starts], table
