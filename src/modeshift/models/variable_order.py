"""Variable-order Markov chains: predict from the longest context seen, backing off to shorter ones.

A chain of order n estimates each next-element distribution from the counts of one
context of n symbols, and long contexts are rare: most are seen a few times or never.
An *interpolated* model mixes the estimates of orders n, n - 1, ..., 0 and a uniform
distribution below them, trusting a context in proportion to the evidence for it. For
a context h of m symbols, with h- the same context without its oldest symbol,

    p_m(w | h) = (a_m(h w) - d) / Z_m(h) + lambda_m(h) p_m-1(w | h-)   if h was seen,
    p_m(w | h) = p_m-1(w | h-)                                          if it was not,

the first term only for outcomes w seen after h (a_m(h w) > 0), and p_-1 uniform over
the outcomes (the symbols, the end, and the unknown symbol under ``unknown="map"``).
With N_m(h) the number of distinct outcomes seen after h:

- ``"kneser_ney"``: interpolated Kneser-Ney with one discount d (``discount``), as
  defined by Chen & Goodman (1998), "An empirical study of smoothing techniques for
  language modeling" (Harvard TR-10-98), who found it ahead of the other classic
  methods (their modified variant has three discounts). Z_m(h) = sum_w a_m(h w) and
  lambda_m(h) = d N_m(h) / Z_m(h). At the longest order a_m are the counts; below
  it they are *continuation counts*, the number of distinct symbols seen before h w
  (Kneser & Ney 1995, "Improved backing-off for m-gram language modeling", ICASSP):
  a symbol that follows many contexts is a likely guess for a new one, one that
  follows a single context is not. Contexts that begin at the start of a sequence
  have no symbol before them and keep their counts, as in KenLM (Heafield et al.
  2013, "Scalable modified Kneser-Ney language model estimation", ACL).
- ``"witten_bell"``: Witten & Bell (1991), "The zero-frequency problem", IEEE Trans.
  Inf. Theory 37(4), interpolated as in Chen & Goodman: a_m = counts, d = 0,
  Z_m(h) = c(h) + N_m(h) and lambda_m(h) = N_m(h) / Z_m(h), so a context that has
  been followed by many different outcomes leaves more to the lower orders.

The prediction depends on the last ``max_order`` symbols only, so the model *is* a
Markov chain of that order: it predicts, scores, samples and is analysed like a
:class:`~modeshift.models.MarkovChain` (same input, vocabulary, ``UNKNOWN`` and ``END``
handling, next-element layout, model file), only a context never seen predicts what
its longest seen suffix predicts instead of a uniform distribution. The counts are
kept sparse for the longest order (``counts_``, as in ``MarkovChain``); the shorter
orders are their margins: 10^7 tokens at order 3 fit in seconds, in about 1 GB when
every 4-gram is new (i.i.d. tokens over 1000 symbols), far less on real sequences.

>>> from modeshift.models import MarkovChain, VariableOrderChain
>>> data = [list("abcab"), list("abc"), list("cab")]
>>> model = VariableOrderChain(max_order=2).fit(data)
>>> [(s, round(p, 3)) for s, p in model.predict_next("ab", k=3)]   # 'ab' was followed by 'c' twice, the end twice
[('c', 0.44), (END, 0.44), ('a', 0.08)]
>>> [(s, round(p, 3)) for s, p in model.predict_next("bb", k=3)]   # never seen: what follows 'b'
[('c', 0.339), (END, 0.339), ('a', 0.214)]
>>> MarkovChain(order=2).fit(data).predict_next("bb", k=3)         # a chain knows nothing there
[('a', 0.25), ('b', 0.25), ('c', 0.25)]
>>> model.next_symbol_proba([list("abc")]).shape   # 3 + 1 rows; 3 symbols, UNKNOWN, END
(4, 5)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from modeshift._kernels.counting import find_keys
from modeshift.models.base import Model
from modeshift.models.markov_chain import MarkovChain
from modeshift.models.params import Integer, Number, OneOf
from modeshift.symbols import UNKNOWN_POLICIES

__all__ = ["METHODS", "VariableOrderChain"]

METHODS: tuple[str, ...] = ("kneser_ney", "witten_bell")


@dataclass(frozen=True)
class _Level:
    """The estimates of one order m: for each context seen (sorted keys of m digits) its weight
    lambda_m(h), and in its row of ``terms`` (a_m(h w) - d) / Z_m(h) for each outcome w seen after it."""

    contexts: np.ndarray
    weights: np.ndarray
    terms: sparse.csr_array


class VariableOrderChain(MarkovChain):
    """An interpolated Kneser-Ney or Witten-Bell model over contexts of 0 .. ``max_order`` symbols.

    Parameters
    ----------
    max_order : int
        The longest context (>= 1); the model is a Markov chain of this order.
    method : {"kneser_ney", "witten_bell"}
        How the orders are mixed (module docstring).
    discount : float
        Kneser-Ney's absolute discount d, 0 < d <= 1; unused by Witten-Bell.
    unknown : {"error", "ignore", "map"}
        Symbols outside the vocabulary, as in :class:`~modeshift.models.MarkovChain`:
        raise; skip them; or map them to ``UNKNOWN``, an outcome never seen in
        training, which gets the uniform distribution's share (the product of the
        lambdas along the context, divided by the number of outcomes); contexts
        holding it back off to their suffixes after it.

    Attributes
    ----------
    vocabulary_, context_keys_, counts_
        As in :class:`~modeshift.models.MarkovChain` of order ``max_order``: the
        contexts of ``max_order`` symbols seen in training and what followed them.

    The first element of a sequence is predicted from its start context; the end
    cannot follow it (sequences are not empty), so the end's share there is given
    to the other outcomes in proportion.
    """

    _test_change = {"max_order": 2}

    _constraints = {
        "max_order": Integer(1),
        "method": OneOf(METHODS),
        "discount": Number(0.0, 1.0, open_low=True),
        "unknown": OneOf(UNKNOWN_POLICIES),
    }

    def __init__(self, max_order: int = 3, method: str = "kneser_ney", discount: float = 0.75, unknown: str = "error"):
        self.max_order = max_order
        self.method = method
        self.discount = discount
        self.unknown = unknown

    @property
    def order(self) -> int:
        """The chain's order: ``max_order``."""
        return self.max_order

    def _check_params(self) -> None:
        # only the rules: below every order lies a uniform distribution, so unknown="map" always has mass
        Model._check_params(self)

    @property
    def n_parameters(self) -> int:
        """Free parameters: one distribution over the outcomes (minus one) for every context of every
        order 0 .. ``max_order`` seen in training."""
        self._check_fitted()
        n_contexts = 1 + sum(len(level.contexts) for level in self._levels)
        n_outcomes = len(self.vocabulary_) + (self.unknown == "map") + 1
        return n_contexts * (n_outcomes - 1)

    def _prepare(self) -> None:
        """The estimates of every order, from the counts of the longest contexts."""
        self._prepare_layout()
        base, table = self._base, self.counts_
        levels = [self._level(self.context_keys_, table.indptr, table.indices, table.data, table.data)]
        contexts = np.repeat(self.context_keys_, np.diff(table.indptr))  # of every pair
        outcomes, counts = table.indices, table.data
        for m in range(self.max_order - 1, -1, -1):
            # the pairs of order m + 1 fall onto their suffixes: counts add up, each left extension counts once
            keys = np.remainder(contexts, base**m, out=contexts)  # in place: 10^7 pairs take 80 MB an array
            keys *= base
            keys += outcomes
            del contexts, outcomes
            order = np.argsort(keys)
            keys = keys[order]
            starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
            counts = np.add.reduceat(counts[order], starts)
            del order
            extensions = np.diff(np.append(starts, len(keys)))
            contexts, outcomes = np.divmod(keys[starts], base)
            del keys
            adjusted = counts
            if self.method == "kneser_ney" and m > 0:
                adjusted = np.where(contexts // base ** (m - 1) == base - 1, counts, extensions)  # at the start: counts
            elif self.method == "kneser_ney":
                adjusted = extensions
            starts = np.flatnonzero(np.r_[True, contexts[1:] != contexts[:-1]])
            levels.append(self._level(contexts[starts], np.append(starts, len(contexts)), outcomes, counts, adjusted))
        bottom = levels.pop()
        allowed = np.ones(base, dtype=bool)  # the outcomes of the uniform distribution below order 0
        allowed[len(self.vocabulary_)] = self.unknown == "map"
        self._bottom = bottom.terms.toarray()[0] + bottom.weights[0] * allowed / allowed.sum()
        self._levels = levels[::-1]
        self._start_end = self._interpolated(np.array([self._start]))[0, -1]

    def _level(
        self, contexts: np.ndarray, indptr: np.ndarray, outcomes: np.ndarray, counts: np.ndarray, adjusted: np.ndarray
    ) -> _Level:
        """Weights and terms of one order from its (context, outcome) pairs in CSR form: the pairs of
        ``contexts[i]`` are ``indptr[i]:indptr[i + 1]``, with their outcomes, counts and adjusted counts."""
        distinct = np.diff(indptr)
        if self.method == "kneser_ney":
            discount = float(self.discount)
            totals = np.add.reduceat(adjusted, indptr[:-1])
            weights = discount * distinct / totals
        else:
            discount = 0.0
            totals = np.add.reduceat(counts, indptr[:-1]) + distinct
            weights = distinct / totals
        terms = np.subtract(adjusted, discount, dtype=np.float64)
        terms /= np.repeat(totals, distinct)
        return _Level(contexts, weights, sparse.csr_array((terms, outcomes, indptr), shape=(len(contexts), self._base)))

    # ------------------------------------------------------ next-element probabilities
    def _interpolated(self, keys: np.ndarray) -> np.ndarray:
        """(len(keys), V + 2) interpolated distributions of the contexts ``keys`` (of ``max_order`` digits)."""
        proba = np.tile(self._bottom, (len(keys), 1))
        for m, level in enumerate(self._levels, start=1):
            rows = find_keys(level.contexts, keys % self._base**m)
            seen = np.flatnonzero(rows >= 0)
            rows = rows[seen]
            proba[seen] *= level.weights[rows][:, None]
            block = level.terms[rows]
            proba[seen.repeat(np.diff(block.indptr)), block.indices] += block.data
        return proba

    def _next_proba(self, keys: np.ndarray) -> np.ndarray:
        proba = self._interpolated(keys)
        start = keys == self._start
        proba[start, -1] = 0.0
        proba[start] /= 1.0 - self._start_end
        return proba

    def _target_proba(self, keys: np.ndarray, targets: np.ndarray) -> np.ndarray:
        proba = self._bottom[targets]
        for m, level in enumerate(self._levels, start=1):
            rows = find_keys(level.contexts, keys % self._base**m)
            seen = np.flatnonzero(rows >= 0)
            terms = np.asarray(level.terms[rows[seen], targets[seen]]).ravel()
            proba[seen] = level.weights[rows[seen]] * proba[seen] + terms
        start = keys == self._start
        end = targets == self._base - 1
        return np.where(start, np.where(end, 0.0, proba / (1.0 - self._start_end)), proba)
