"""The long-run behaviour of a Markov chain, read from its transition matrix.

A chain on states 0 .. S-1 moves from i to j with probability P[i, j]. Its states
fall into *communicating classes* (states that reach each other); a class that no
transition leaves is *closed*, the others are transient. Each closed class C has
one stationary distribution pi_C (pi_C P = pi_C, zero outside C), so the chain
has a unique one exactly when one class is closed; with several, the long-run
share of time depends on where the chain starts. From a stationary pi follow

- the *mixing time* t_mix(eps) = min { t : max_x || P^t(x, .) - pi ||_TV <= eps },
  finite unless the closed class is periodic (the gcd of its cycle lengths d > 1);
- the *entropy rate* H = -sum_i pi_i sum_j P_ij log P_ij, the information per step;
- *divergence rates* sum_i pi_i D_f(P_i || Q_i) against another chain Q (for the
  Kullback-Leibler f, the rate at which their path laws separate).

>>> import numpy as np
>>> P = np.array([[0.9, 0.1], [0.3, 0.7]])
>>> stationary_distribution(P)
array([0.75, 0.25])
>>> mixing_time(P), round(entropy_rate(P, base=2), 4)
(3, 0.5721)
>>> print(chain_structure([[0.5, 0.5], [0.0, 1.0]], states=["a", "b"]))
2 communicating classes:
  transient, period 1: {'a'}
  closed, period 1: {'b'}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import sparse
from scipy.sparse.csgraph import connected_components, shortest_path
from scipy.special import xlogy

from modeshift.data import check_probabilities

__all__ = [
    "dwell_times",
    "ChainStructure",
    "chain_structure",
    "entropy_rate",
    "f_divergence_rate",
    "mixing_time",
    "stationary_distribution",
]

# f of each named f-divergence, and lim f(t) / t as t -> infinity (the weight of mass that q lacks)
_DIVERGENCES: dict[str, tuple[Callable[[np.ndarray], np.ndarray], float]] = {
    "kl": (lambda t: xlogy(t, t), math.inf),
    "reverse_kl": (lambda t: -np.log(t), 0.0),
    "hellinger": (lambda t: (np.sqrt(t) - 1.0) ** 2, 1.0),
    "total_variation": (lambda t: 0.5 * np.abs(t - 1.0), 0.5),
    "chi2": (lambda t: (t - 1.0) ** 2, math.inf),
}

#: (number of states, class label of each state, first state of each class, closed, period or 0)
_Classes = tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class ChainStructure:
    """The communicating classes of a chain: the sets of states that reach each other.

    A class is *closed* when no transition leaves it; the others are transient.
    The stationary distribution is unique exactly when one class is closed. The
    period of a class is the gcd of the lengths of its cycles (``None`` for a
    transient state on no cycle); a chain whose closed class has period d > 1
    cycles through d groups of states and never mixes.
    """

    classes: tuple[tuple[Hashable, ...], ...]
    closed: tuple[bool, ...]
    periods: tuple[int | None, ...]

    @property
    def irreducible(self) -> bool:
        """Every state reaches every other."""
        return len(self.classes) == 1

    @property
    def closed_classes(self) -> tuple[tuple[Hashable, ...], ...]:
        return tuple(c for c, closed in zip(self.classes, self.closed) if closed)

    @property
    def aperiodic(self) -> bool:
        """Every closed class has period 1."""
        return all(p == 1 for p, closed in zip(self.periods, self.closed) if closed)

    def __str__(self) -> str:
        count = len(self.classes)
        lines = [f"{count} communicating class{'es' if count > 1 else ''}:"]
        for members, closed, period in zip(self.classes, self.closed, self.periods):
            period_text = "no cycle" if period is None else f"period {period}"
            lines.append(f"  {'closed' if closed else 'transient'}, {period_text}: {_names(members)}")
        return "\n".join(lines)


def chain_structure(transition_matrix: ArrayLike, states: Sequence[Hashable] | None = None) -> ChainStructure:
    """Communicating classes (Tarjan's strong components), which are closed, and their periods.

    Classes are listed in order of their first state; ``states`` names the states
    (default: their indices). A period is the gcd of level[u] + 1 - level[v] over
    the class's transitions u -> v, with levels from one breadth-first search.
    """
    return _structure(_classes(np.asarray(transition_matrix)), states)


def _structure(classes: _Classes, states: Sequence[Hashable] | None) -> ChainStructure:
    n_states, labels, roots, closed, periods = classes
    names = list(range(n_states)) if states is None else list(states)
    return ChainStructure(
        classes=tuple(tuple(names[i] for i in np.flatnonzero(labels == c)) for c in range(len(roots))),
        closed=tuple(bool(c) for c in closed),
        periods=tuple(int(p) if p > 0 else None for p in periods),
    )


def dwell_times(transition_matrix: np.ndarray) -> np.ndarray:
    """Expected steps per visit to each state, 1 / (1 - p_kk): a visit's length is geometric
    (infinite for an absorbing state)."""
    with np.errstate(divide="ignore"):
        return 1.0 / (1.0 - np.diag(transition_matrix))


def stationary_distribution(
    transition_matrix: ArrayLike, initial: ArrayLike | None = None, states: Sequence[Hashable] | None = None
) -> np.ndarray:
    """A probability vector pi with pi P = pi: the chain's long-run share of time in each state.

    With one closed class pi is unique (periodic or not; transient states get
    exactly 0): on the closed class C it solves pi_C (P_CC - I) = 0, sum pi_C = 1,
    one equation replaced by the normalisation. With several closed classes each
    has its own and every mixture of them is stationary: given the distribution
    ``initial`` of the first state, the result is the long-run distribution from it,
    lim_T (1/T) sum_t initial P^t = sum_C a_C pi_C, where a_C is the probability of
    ending in C (from the absorption equations of the transient states); without
    ``initial`` that is a ``ValueError`` naming the closed classes (``states``
    names the states).
    """
    P = check_probabilities("transition_matrix", transition_matrix, (None, None))
    if P.shape[0] != P.shape[1]:
        raise ValueError(f"transition_matrix must be square, got shape {P.shape}")
    if (P > 0).all():  # every state reaches every other: one class, no graph analysis needed (EM's hot path)
        return _irreducible_stationary(P)
    start = None if initial is None else check_probabilities("initial", initial, (len(P),))
    return _stationary(P, _classes(P), start, states)


def mixing_time(
    transition_matrix: ArrayLike, eps: float = 0.25, states: Sequence[Hashable] | None = None, max_steps: int = 2**40
) -> int:
    """t_mix(eps) = min { t : max_x || P^t(x, .) - pi ||_TV <= eps }, exactly.

    The distance to stationarity never increases with t, so P, P^2, P^4, ... are
    squared until it is at most ``eps`` and the last interval is bisected: about
    2 log2(t_mix) products of S x S matrices. ``ValueError`` for a chain with
    several closed classes or a periodic closed class (it never mixes), or when
    t_mix exceeds ``max_steps``.
    """
    if not 0.0 < eps < 1.0:
        raise ValueError(f"eps must be in (0, 1), got {eps!r}")
    P = np.asarray(transition_matrix, dtype=np.float64)
    classes = _classes(P)
    pi = _stationary(P, classes, None, states)
    structure = _structure(classes, states)
    for members, closed, period in zip(structure.classes, structure.closed, structure.periods):
        if closed and period != 1:
            raise ValueError(
                f"the chain is periodic (period {period}: class {_names(members)}), so P^t never converges "
                "and it never mixes"
            )

    def distance(power: np.ndarray) -> float:
        return 0.5 * float(np.abs(power - pi).sum(axis=1).max())

    if distance(np.eye(len(P))) <= eps:
        return 0
    powers = [P]  # powers[j] = P^(2^j)
    while distance(powers[-1]) > eps:
        if 2 ** len(powers) > max_steps:
            raise ValueError(f"the chain has not mixed to within {eps} after {2 ** (len(powers) - 1)} steps")
        powers.append(powers[-1] @ powers[-1])
    if len(powers) == 1:
        return 1
    steps, power = 2 ** (len(powers) - 2), powers[-2]  # the largest power known to be too far
    for j in range(len(powers) - 3, -1, -1):
        candidate = power @ powers[j]
        if distance(candidate) > eps:
            steps, power = steps + 2**j, candidate
    return steps + 1


def entropy_rate(
    transition_matrix: ArrayLike, base: float | None = None, states: Sequence[Hashable] | None = None
) -> float:
    """H = -sum_i pi_i sum_j P_ij log P_ij, in nats (or in units of log ``base``: 2 for bits)."""
    P = np.asarray(transition_matrix, dtype=np.float64)
    pi = _stationary(P, _classes(P), None, states)
    rate = float(pi @ -xlogy(P, P).sum(axis=1))
    return rate / math.log(base) if base is not None else rate


def f_divergence_rate(
    transition_matrix: ArrayLike,
    other: ArrayLike,
    f: str | Callable[[np.ndarray], np.ndarray] = "kl",
    states: Sequence[Hashable] | None = None,
) -> float:
    """sum_i pi_i D_f(P_i || Q_i), with pi the stationary distribution of P and D_f(p || q) = sum_j q_j f(p_j / q_j).

    ``f`` is ``"kl"`` (t log t: the KL divergence rate, lim (1/n) KL of the laws of
    n-step paths), ``"reverse_kl"`` (-log t), ``"hellinger"`` ((sqrt t - 1)^2, so
    sum_j (sqrt p_j - sqrt q_j)^2), ``"total_variation"`` (|t - 1| / 2) or ``"chi2"``
    ((t - 1)^2), or a vectorised convex callable with f(1) = 0. An outcome with
    q_j = 0 < p_j adds p_j lim f(t)/t: +inf for KL and chi2 (and for a callable),
    p_j / 2 for total variation, p_j for Hellinger. For KL this is the rate of the
    divergence between the chains' path laws; for other f it is the stationary
    average of the divergences between next-step laws.

    ``other`` (Q) has P's rows and may have more columns than P: outcomes outside
    P's states, which P never takes (the mass Q sends elsewhere).
    """
    P = np.asarray(transition_matrix, dtype=np.float64)
    Q = np.asarray(other, dtype=np.float64)
    if Q.ndim != 2 or Q.shape[0] != P.shape[0] or Q.shape[1] < P.shape[1]:
        raise ValueError(f"the transition matrices differ in shape: {P.shape} and {Q.shape}")
    pi = _stationary(P, _classes(P), None, states)
    P = np.pad(P, ((0, 0), (0, Q.shape[1] - P.shape[1])))
    if isinstance(f, str):
        if f not in _DIVERGENCES:
            raise ValueError(f"f must be one of {tuple(_DIVERGENCES)} or a callable, got {f!r}")
        function, slope = _DIVERGENCES[f]
    elif callable(f):
        function, slope = f, math.inf
    else:
        raise TypeError(f"f must be a name or a callable, got {type(f).__name__}")
    positive = Q > 0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        terms = Q * function(np.divide(P, Q, out=np.ones_like(P), where=positive))
        terms = np.where(positive, terms, np.where(P > 0, P * slope, 0.0))
        per_state = terms.sum(axis=1)
        return float(np.sum(np.where(pi > 0, pi * per_state, 0.0)))  # 0 inf = 0: unvisited states don't count


# ----------------------------------------------------------------------- helpers


def _classes(P: np.ndarray) -> _Classes:
    """The communicating classes of P (strong components of its graph), in order of their first state."""
    graph = sparse.csr_array(P > 0)
    n_states = graph.shape[0]
    _, labels = connected_components(graph, directed=True, connection="strong")
    _, first = np.unique(labels, return_index=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    labels, roots = rank[labels], np.sort(first)
    source, target = graph.nonzero()
    inside = labels[source] == labels[target]
    closed = np.ones(len(roots), dtype=bool)
    closed[labels[source[~inside]]] = False
    # one search from an extra node pointing at every class's first state gives every class its levels
    hub = np.full(len(roots), n_states)
    tree = sparse.csr_array(
        (np.ones(inside.sum() + len(roots)), (np.r_[source[inside], hub], np.r_[target[inside], roots])),
        shape=(n_states + 1, n_states + 1),
    )
    level = shortest_path(tree, unweighted=True, indices=n_states)[:n_states].astype(np.int64)
    periods = np.zeros(len(roots), dtype=np.int64)
    np.gcd.at(periods, labels[source[inside]], level[source[inside]] + 1 - level[target[inside]])
    return n_states, labels, roots, closed, periods


def _stationary(
    P: np.ndarray, classes: _Classes, initial: np.ndarray | None, states: Sequence[Hashable] | None
) -> np.ndarray:
    """The stationary distribution of :func:`stationary_distribution` from the chain's classes."""
    n_states, labels, _, closed, _ = classes
    members = [np.flatnonzero(labels == c) for c in np.flatnonzero(closed)]
    if len(members) > 1 and initial is None:
        names = list(range(n_states)) if states is None else list(states)
        listed = "; ".join(_names([names[i] for i in class_]) for class_ in members)
        raise ValueError(
            f"the chain is reducible with {len(members)} closed classes ({listed}): each has its own stationary "
            "distribution, so there is no unique one (see its structure; give the initial distribution for the "
            "long-run distribution from it)"
        )
    weights = np.ones(1)
    if len(members) > 1:
        transient = np.flatnonzero(~closed[labels])
        into = np.column_stack([P[np.ix_(transient, class_)].sum(axis=1) for class_ in members])
        absorbed = np.linalg.solve(np.eye(len(transient)) - P[np.ix_(transient, transient)], into)
        weights = np.array([initial[class_].sum() for class_ in members]) + initial[transient] @ absorbed
    pi = np.zeros(n_states)
    for weight, class_ in zip(weights, members):
        pi[class_] = weight * _irreducible_stationary(P[np.ix_(class_, class_)])
    return pi / pi.sum()


def _irreducible_stationary(P: np.ndarray) -> np.ndarray:
    """pi of an irreducible stochastic matrix: pi (P - I) = 0 with its last equation replaced by sum pi = 1."""
    system = P.T - np.eye(len(P))
    system[-1] = 1.0
    pi = np.linalg.solve(system, np.eye(len(P))[-1])
    pi = np.clip(pi, 0.0, None)  # round-off
    return pi / pi.sum()


def _names(members: Sequence[Hashable]) -> str:
    """A class of states for messages: {'a', 'b', ...}, at most ten shown."""
    return "{" + ", ".join(repr(m) for m in members[:10]) + (", ..." if len(members) > 10 else "") + "}"
