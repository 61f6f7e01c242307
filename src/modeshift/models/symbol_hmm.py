"""A hidden Markov model of symbol sequences that predicts the next element, the end included.

Event logs and clickstreams are sequences of symbols that *stop*. :class:`SymbolHMM`
encodes the symbols with a vocabulary, appends ``END`` to every training sequence as
one more emitted symbol, and fits a categorical hidden Markov model by EM
(:func:`modeshift.models.em.run`): the hidden states learn both what is emitted and
when a sequence stops. A sequence
x_0 .. x_L-1 then has probability

    p(x_0 .. x_L-1, END) = sum over state paths of pi(z_0) prod_t A(z_t-1, z_t) prod_t B(z_t, y_t),

with y = (x_0 .. x_L-1, END), and the distribution of element t given the ones before
it is p(y_t | y_<t) = sum_k p(z_t = k | y_<t) B(k, .), from the filtered state
probabilities p(z_t-1 | y_<t) of one forward pass over all the data
(:func:`modeshift._kernels.forward_filter`), moved one step by A: every prefix of
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

The hidden states of a sequence are decoded as for any HMM, its end included as
evidence: ``predict`` (Viterbi), ``predict_proba`` (smoothed), ``filter_proba`` (given
the symbols so far); ``segment`` cuts the Viterbi path into runs of one state and
``describe`` summarises each state. What comes next is :meth:`SymbolHMM.next_symbol_proba`
(and ``next_distribution``, ``predict_next``): the forecast of a sequence that may end,
so there is no separate ``forecast``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from modeshift import _kernels as kernels
from modeshift.data import Sequences, as_sequences, check_probabilities
from modeshift.emissions import Categorical
from modeshift.models import em, selection
from modeshift.models.base import Model, NotFittedError, check_possible, mode_segments
from modeshift.models.params import OneOf
from modeshift.models.state_labels import VocabularyFromShards, labels_from_json, labels_to_json
from modeshift.statistics import Statistics
from modeshift.symbols import UNKNOWN_POLICIES, Vocabulary, n_targets, next_targets
from modeshift.transitions import Stationary

__all__ = ["SymbolHMM"]

PerStep = np.ndarray | list[np.ndarray]

#: The Krichevsky-Trofimov pseudo-count of the unknown symbol in every state under unknown="map".
UNKNOWN_PSEUDO_COUNT = 0.5
_PARAMETERS = ("startprob_", "transmat_", "emissionprob_")


class SymbolHMM(VocabularyFromShards, Model):
    """A categorical HMM over a vocabulary of symbols and the end of a sequence.

    Parameters
    ----------
    n_states : int or "auto"
        Number of hidden states K; ``"auto"`` chooses it by BIC among 1 .. ``max_states``
        (:func:`~modeshift.models.selection.select_n_states`): ``n_states_`` is the choice,
        ``selection_`` the table of candidates (every candidate learns the same vocabulary).
    n_iter, tol, n_restarts, random_state, accelerate
        EM settings, as in :class:`~modeshift.models.HMM` (``n_iter=0`` only initialises).
    unknown : {"error", "ignore", "map"}
        Symbols outside the vocabulary: raise; treat them as missing observations
        (the chain moves on, the step carries no evidence, ``UNKNOWN`` is never
        predicted and unknown elements are not scored); or treat them as one more
        symbol, ``UNKNOWN``, that each state emits with the probability of a symbol
        seen 0 times under the Krichevsky-Trofimov estimator, 1/2 / (n_k + 1/2) for
        a state that emitted n_k symbols (expected counts) in training, the state's
        other probabilities scaled by n_k / (n_k + 1/2).
    warm_start : bool
        Start ``fit`` from the current parameters and vocabulary instead of afresh.
    verbose : bool
        Show the progress of the EM iterations (drawn by the interface layer).
    callback : callable, optional
        ``callback(iteration, objective)`` at every EM iteration of every restart.
    max_states : int
        Largest number of states tried by ``n_states="auto"``.

    Attributes
    ----------
    vocabulary_ : Vocabulary
        The training symbols; code i for ``vocabulary_.symbols[i]``.
    startprob_ : (K,), transmat_ : (K, K)
        The hidden chain.
    emissionprob_ : (K, V + 2)
        p(element | state) in the columns of the next-element layout: the symbols,
        ``UNKNOWN``, ``END``.
    history_ : list of float
        EM's objective, sum log p(x, END), at each iteration of the best restart
        (``score`` also conditions on the sequences not being empty).
    converged_ : bool
    n_iter_ : int

    Parameters set by hand on a model never fitted (with ``vocabulary_``, or for the
    vocabulary learned from the data) start the first restart.
    """

    data_kind = "symbols"

    _constraints = {"unknown": OneOf(UNKNOWN_POLICIES)}  # n_states, max_states: the common rules
    _renamed = {"log_likelihood_history_": "history_"}
    _file_arrays = dict.fromkeys(_PARAMETERS, "finite")
    _file_attributes = {**Model._file_attributes, "vocabulary_": "labels", "n_states_": "count", "selection_": "table"}

    def __init__(
        self,
        n_states: int = 4,
        n_iter: int = 1000,
        tol: float = 1e-7,
        n_restarts: int = 1,
        random_state: int | np.random.Generator | None = None,
        unknown: str = "error",
        accelerate: bool = True,
        warm_start: bool = False,
        verbose: bool = False,
        callback: Callable[[int, float], Any] | None = None,
        max_states: int = 10,
    ):
        self.n_states = n_states
        self.n_iter = n_iter
        self.tol = tol
        self.n_restarts = n_restarts
        self.random_state = random_state
        self.unknown = unknown
        self.accelerate = accelerate
        self.warm_start = warm_start
        self.verbose = verbose
        self.callback = callback
        self.max_states = max_states

    # ------------------------------------------------------------------- fitting
    def fit(self, data: Any, lengths: Sequence[int] | None = None, **columns: Any) -> SymbolHMM:
        """Fit the HMM to the sequences, each followed by ``END``; returns ``self``.

        ``data``: symbol sequences in any form :func:`~modeshift.data.as_sequences` reads
        with ``symbols=True`` (``columns`` name an event log's columns).
        """
        self._start_fit()
        if self.n_states == "auto":
            return self._fit_auto(as_sequences(data, lengths, symbols=True, **columns))
        return self._fit_em(self._em_data(data, lengths, **columns))

    def _fit_auto(self, seqs: Sequences) -> SymbolHMM:
        """The candidates of ``n_states="auto"`` fitted to ``seqs`` (symbols; over a cluster, the
        sample of :mod:`modeshift.distributed`, which fits them there), the BIC's choice kept."""
        selection.fit_auto(self, seqs, ("vocabulary_", *_PARAMETERS))
        self._finish_fit(seqs)
        return self

    def _selection_terms(self, emitted: Sequences) -> tuple[float, float]:
        """One shard's part of :meth:`score` and of the n of :meth:`bic`, from what EM reads of it
        (for ``n_states="auto"`` over a cluster)."""
        self._check_fitted()
        rows = emitted.values[:, 0].astype(np.int64)
        skipped = int(np.sum(rows == len(self.vocabulary_))) if self.unknown == "ignore" else 0
        return self._log_likelihood(emitted.offsets, rows), float(emitted.n_steps - skipped)

    def _em_data(self, data: Any, lengths: Sequence[int] | None = None, **columns: Any) -> Sequences:
        """What EM reads: each sequence's codes then END's, as one column of floats, coded by the
        model's vocabulary (else by one learned from ``data``), which it carries."""
        seqs = as_sequences(data, lengths, symbols=True, vocabulary=self.__dict__.get("vocabulary_"), **columns)
        emitted = next_targets(seqs).astype(np.float64)[:, None]
        offsets = seqs.offsets + np.arange(len(seqs) + 1)
        return Sequences(emitted, offsets, vocabulary=seqs.vocabulary, schema=seqs.schema)

    def _fit_em(self, emitted: Sequences, over: em.Over | None = None) -> SymbolHMM:
        """EM from the starting parameters; ``over`` runs every pass over the data on shards held
        elsewhere, ``emitted`` being then a sample of them to start from."""
        self.vocabulary_ = emitted.vocabulary
        self.__dict__["_given"] = {name: self.__dict__[name] for name in _PARAMETERS if name in self.__dict__}
        em.run(self, emitted, label=f"SymbolHMM K={self._k}", over=over)
        del self.__dict__["_given"]
        transitions, emission = self.__dict__["_blocks"]
        emissions = emission.emission_probs
        if self.unknown == "map":  # the known symbols' law (an EM step gives UNKNOWN 0; a start may not)
            counts = (over or em.in_memory(emitted))(_state_counts, self)
            emissions = emissions.copy()
            emissions[:, len(self.vocabulary_)] = 0.0
            emissions /= emissions.sum(axis=1, keepdims=True)
            emissions = emissions * (counts / (counts + UNKNOWN_PSEUDO_COUNT))[:, None]
            emissions[:, len(self.vocabulary_)] = UNKNOWN_PSEUDO_COUNT / (counts + UNKNOWN_PSEUDO_COUNT)
        del self.__dict__["_blocks"]
        self.startprob_, self.transmat_ = transitions.initial_probs, transitions.transition_matrix
        self.emissionprob_ = emissions
        self._finish_fit(emitted)
        return self

    def _em_initialize(self, emitted: Sequences, rng: np.random.Generator, restart: int) -> None:
        """Restart 0 from the parameters given (by hand, or kept by ``warm_start``); the others,
        and what was not given, as :class:`~modeshift.models.HMM` starts."""
        given = self.__dict__["_given"] if restart == 0 else {}
        transitions, emission = Stationary(self._k), Categorical(self._k, len(self.vocabulary_) + 2)
        if not {"startprob_", "transmat_"} <= given.keys():
            transitions.initialize(rng)
        if "emissionprob_" not in given:
            emission.initialize(emitted.values, rng)  # UNKNOWN is never emitted: EM gives it probability 0
        self.__dict__["_blocks"] = (transitions, emission)
        self._em_restore(given)

    def _e_step(self, emitted: Sequences, workspace: dict[str, Any]) -> tuple[float, Statistics]:
        transitions, emission = self.__dict__["_blocks"]
        table, rows = emission.log_likelihood_table(emitted.values)
        initial, matrices = transitions.kernel_arrays()
        log_likelihood, posteriors, pairs = kernels.forward_backward(
            offsets=emitted.offsets,
            initial_probs=initial,
            transition_matrices=matrices,
            scratch=workspace.setdefault("scratch", {}),
            log_likelihoods=table,
            rows=rows,
        )
        check_possible(log_likelihood, "a symbol no reachable state emits; fit with more states or data")
        return float(log_likelihood.sum()), Statistics(
            transitions=transitions.statistics(posteriors, emitted.starts, pairs),
            emission=emission.statistics(emitted.values, posteriors),
        )

    def _m_step(self, emitted: Sequences, statistics: Statistics) -> None:
        transitions, emission = self.__dict__["_blocks"]
        transitions.m_step(statistics["transitions"])
        emission.m_step(statistics["emission"])

    def _em_snapshot(self) -> dict[str, np.ndarray]:
        transitions, emission = self.__dict__["_blocks"]
        arrays = (transitions.initial_probs, transitions.transition_matrix, emission.emission_probs)
        return {name: np.array(value) for name, value in zip(_PARAMETERS, arrays)}

    def _em_restore(self, snapshot: dict[str, np.ndarray]) -> None:
        transitions, emission = self.__dict__["_blocks"]
        homes = {"startprob_": (transitions, "initial_probs"), "transmat_": (transitions, "transition_matrix")}
        for name, value in snapshot.items():
            block, attribute = homes.get(name, (emission, "emission_probs"))
            block.set(attribute, value)

    def _check_fitted(self) -> None:
        """Fitted, and the parameters laws (checked on every use: a row set by hand may sum to 0)."""
        if not set(_PARAMETERS) | {"vocabulary_"} <= self.__dict__.keys():
            raise NotFittedError("this SymbolHMM is not fitted: call fit")
        n_states, n_outcomes = np.shape(self.transmat_)[0], len(self.vocabulary_) + 2
        shapes = {"startprob_": (n_states,), "transmat_": (n_states, n_states), "emissionprob_": (n_states, n_outcomes)}
        for name, shape in shapes.items():
            self.__dict__[name] = check_probabilities(name, self.__dict__[name], shape)

    # ------------------------------------------------------ next-element probabilities
    def _encode(self, data: Any, lengths: Sequence[int] | None = None, **columns: Any) -> Sequences:
        """Sequences in the vocabulary's codes, unknown symbols as code V unless the policy is "error"."""
        self._check_fitted()
        policy = "error" if self.unknown == "error" else "map"
        return as_sequences(data, lengths, vocabulary=self.vocabulary_, unknown=policy, **columns)

    def _log_emissions(self) -> np.ndarray:
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

    def next_symbol_proba(self, data: Any, lengths: Sequence[int] | None = None, **columns: Any) -> np.ndarray:
        """Predictive distribution of every element and of each sequence's end: the next-element layout.

        (n_steps + n_sequences, V + 2); for a sequence of length L, L + 1 rows, row t
        the distribution of element t given elements 0..t-1: the first from
        ``startprob_``, the others p(z_t-1 | y_<t) A B, from one forward pass. Rows sum to 1.
        """
        seqs = self._encode(data, lengths, **columns)
        filtered = self._filtered(seqs)
        n_sequences, n_steps = seqs.n_sequences, seqs.n_steps
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

    def score(self, data: Any, lengths: Sequence[int] | None = None, **columns: Any) -> float:
        """Total log-likelihood (nats) of the sequences, each followed by ``END``, given that they are
        not empty; under ``unknown="ignore"`` unknown symbols are marginalised out."""
        seqs = self._encode(data, lengths, **columns)
        return self._log_likelihood(seqs.offsets + np.arange(seqs.n_sequences + 1), next_targets(seqs))

    def _log_likelihood(self, offsets: np.ndarray, rows: np.ndarray) -> float:
        """log p of the coded elements ``rows``, each sequence (``offsets`` over ``rows``) ending with
        its ``END``, given that no sequence is empty (-inf for impossible ones)."""
        log_likelihood = kernels.log_likelihood(
            self._log_emissions(), offsets, self.startprob_, self.transmat_[None], rows=rows
        )
        return float(log_likelihood.sum() - (len(offsets) - 1) * np.log1p(-self._first_end()))

    # ----------------------------------------------------------------- hidden states
    def _filtered(self, seqs: Sequences) -> np.ndarray:
        filtered, log_likelihood = self._forward(seqs)
        self._check_possible(log_likelihood, seqs)
        return filtered

    def _forward(self, seqs: Sequences) -> tuple[np.ndarray, np.ndarray]:
        return kernels.forward_filter(
            self._log_emissions(), seqs.offsets, self.startprob_, self.transmat_[None], rows=seqs.codes
        )

    def _check_possible(self, log_likelihood: np.ndarray, seqs: Sequences) -> None:
        """The rule for impossible data (:func:`~modeshift.models.base.check_possible`); no step
        named when it is the end that no reachable state allows."""
        check_possible(
            log_likelihood,
            "a symbol no reachable state emits, or an end no state allows; fit with more states or data",
            lambda: self._forward(seqs)[0],
            seqs.offsets,
        )

    def _ended(self, seqs: Sequences) -> np.ndarray:
        """log p(x_t | z_t = k) of every step (n_steps, K); each sequence's last step also carries
        log p(END next | z_t = k) = log sum_j A_kj B_j,END, which marginalises out the state of the end."""
        table = self._log_emissions()[seqs.codes]
        with np.errstate(divide="ignore"):
            table[seqs.offsets[1:] - 1] += np.log(self.transmat_ @ self.emissionprob_[:, -1])
        return table

    def filter_proba(self, data: Any, lengths: Sequence[int] | None = None, **columns: Any) -> PerStep:
        """Filtered state probabilities p(z_t | x_0..x_t), (n_steps, K): what the symbols so far
        say (the sequence may go on)."""
        seqs = self._encode(data, lengths, **columns)
        return seqs.restore(self._filtered(seqs))

    def predict_proba(self, data: Any, lengths: Sequence[int] | None = None, **columns: Any) -> PerStep:
        """Smoothed state probabilities p(z_t | x, END), (n_steps, K): each sequence complete, its
        end included as evidence."""
        seqs = self._encode(data, lengths, **columns)
        return seqs.restore(self._smoothed(seqs))

    def predict(self, data: Any, lengths: Sequence[int] | None = None, **columns: Any) -> PerStep:
        """The most likely states of the symbols (Viterbi): argmax over z_0..z_L-1 of p(z, x, END),
        (n_steps,) for each complete sequence."""
        seqs = self._encode(data, lengths, **columns)
        return seqs.restore(self._viterbi(seqs))

    def segment(self, data: Any, lengths: Sequence[int] | None = None, **columns: Any) -> pd.DataFrame:
        """Contiguous runs of one state on the Viterbi path (:meth:`predict`): ``start``, ``end``
        (exclusive), ``mode`` and ``probability`` (the state's mean smoothed probability over the
        run); a leading ``sequence`` column for several sequences."""
        seqs = self._encode(data, lengths, **columns)
        return mode_segments(seqs, self._viterbi(seqs), self._smoothed(seqs))

    def _smoothed(self, seqs: Sequences) -> np.ndarray:
        log_likelihood, posteriors, _ = kernels.forward_backward(
            self._ended(seqs), seqs.offsets, self.startprob_, self.transmat_[None]
        )
        self._check_possible(log_likelihood, seqs)
        return posteriors

    def _viterbi(self, seqs: Sequences) -> np.ndarray:
        with np.errstate(divide="ignore"):
            log_initial, log_transitions = np.log(self.startprob_), np.log(self.transmat_)[None]
        path, log_probability = kernels.viterbi(self._ended(seqs), seqs.offsets, log_initial, log_transitions)
        self._check_possible(log_probability, seqs)
        return path

    def describe(self, top: int = 3) -> pd.DataFrame:
        """One row per state: the hidden chain's long-run share of time (``occupancy``), mean
        ``dwell_time`` 1 / (1 - p_kk) in steps and switch probabilities ``to_j`` (as if sequences
        went on), ``end`` = p(END | state), the probability that a step in the state ends the
        sequence, and its ``top`` likeliest emissions as (symbol, probability) pairs, ``END`` included."""
        self._check_fitted()
        chain = Stationary(self._k)
        chain.set("initial_probs", self.startprob_)
        chain.set("transition_matrix", self.transmat_)
        emissions, labels = self.emissionprob_, self.vocabulary_.next_labels
        likeliest = np.argsort(-emissions, axis=1, kind="stable")[:, : int(top)]
        top_symbols = [[(labels[c], float(p[c])) for c in best if p[c] > 0] for p, best in zip(emissions, likeliest)]
        table = {"mode": np.arange(self._k), **chain.describe(), "end": emissions[:, -1]}
        table["top_symbols"] = top_symbols
        return pd.DataFrame(table).set_index("mode")

    def sample(
        self, n_steps: int, n_sequences: int = 1, random_state: int | np.random.Generator | None = None
    ) -> tuple[list[Hashable] | list[list[Hashable]], PerStep]:
        """Simulate sequences and their hidden states.

        Each sequence runs until the model emits ``END`` (not returned) or until it has
        ``n_steps`` symbols, whichever comes first: ``n_steps`` caps the length, so a
        sequence of exactly ``n_steps`` symbols may have been cut, while a shorter one
        ended. The first symbol is never ``END`` (sequences are not empty); under
        ``unknown="map"`` ``UNKNOWN`` stands for an unseen symbol. Returns the symbols (a
        list) and the states ((length,) integers) of one sequence, or lists of them for
        several.
        """
        self._check_fitted()
        rng = np.random.default_rng(random_state)
        n_sequences, end = int(n_sequences), self.emissionprob_.shape[1] - 1
        first = (self.startprob_[:, None] * self.emissionprob_[:, :end]).ravel()  # p(z_0, x_0), x_0 not END
        modes, codes = np.divmod(rng.choice(first.size, size=n_sequences, p=first / first.sum()), end)
        alive = np.arange(n_sequences)
        owners, mode_steps, code_steps = [alive], [modes], [codes]
        for _ in range(int(n_steps) - 1):
            modes = rng.multinomial(1, self.transmat_[modes]).argmax(axis=1)
            codes = rng.multinomial(1, self.emissionprob_[modes]).argmax(axis=1)
            going = codes != end
            alive, modes, codes = alive[going], modes[going], codes[going]
            if alive.size == 0:
                break
            owners.append(alive)
            mode_steps.append(modes)
            code_steps.append(codes)
        owner = np.concatenate(owners)
        order = np.argsort(owner, kind="stable")
        bounds = np.cumsum(np.bincount(owner, minlength=n_sequences))[:-1]
        labels = self.vocabulary_.next_labels
        symbols = [[labels[c] for c in block] for block in np.split(np.concatenate(code_steps)[order], bounds)]
        states = np.split(np.concatenate(mode_steps)[order], bounds)
        return (symbols[0], states[0]) if n_sequences == 1 else (symbols, states)

    # ----------------------------------------------------------- model selection
    @property
    def n_parameters(self) -> int:
        """Free parameters: (K - 1) + K (K - 1) + K V, each state's emissions being free over the V
        symbols and the end (``UNKNOWN`` is not estimated)."""
        self._check_fitted()
        k = self._k
        return (k - 1) + k * (k - 1) + k * len(self.vocabulary_)

    def aic(self, data: Any, lengths: Sequence[int] | None = None, **columns: Any) -> float:
        """Akaike information criterion, -2 log-likelihood + 2 n_parameters."""
        return -2.0 * self.score(data, lengths, **columns) + 2.0 * self.n_parameters

    def bic(self, data: Any, lengths: Sequence[int] | None = None, **columns: Any) -> float:
        """Bayesian information criterion, -2 log-likelihood + n_parameters log(n), n the elements and
        ends of the sequences (unknown elements left out under ``"ignore"``)."""
        seqs = self._encode(data, lengths, **columns)
        return -2.0 * self.score(seqs) + self.n_parameters * np.log(n_targets(seqs, self.unknown))

    # ------------------------------------------------------------- persistence
    def _learned_arrays(self) -> dict[str, np.ndarray]:
        self._check_fitted()
        return {name: self.__dict__[name] for name in _PARAMETERS}

    def _learned_attributes(self) -> dict[str, Any]:
        return {"vocabulary_": labels_to_json(self.vocabulary_.symbols), **selection.saved_fit(self)}

    def _restore(self, arrays: dict[str, np.ndarray], attributes: dict[str, Any]) -> None:
        lacking = [name for name in _PARAMETERS if name not in arrays]
        if lacking or "vocabulary_" not in attributes:
            raise ValueError(f"the model file lacks {lacking or ['vocabulary_']}")
        self.vocabulary_ = Vocabulary(labels_from_json(attributes["vocabulary_"]))
        for name, value in attributes.items():  # n_states_ among them, before the shapes are checked
            if name != "vocabulary_":
                setattr(self, name, selection.restored_fit(name, value))
        n_states, n_outcomes = self._k, len(self.vocabulary_) + 2
        self.startprob_ = check_probabilities("startprob_", arrays["startprob_"], (n_states,))
        self.transmat_ = check_probabilities("transmat_", arrays["transmat_"], (n_states, n_states))
        self.emissionprob_ = check_probabilities("emissionprob_", arrays["emissionprob_"], (n_states, n_outcomes))


def _state_counts(model: SymbolHMM, emitted: Sequences) -> np.ndarray:
    """The expected number of symbols each state emits in ``emitted`` (one shard's part)."""
    return model._e_step(emitted, {})[1]["emission"]["counts"].sum(axis=1)
