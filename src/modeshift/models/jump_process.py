"""Markov jump processes (continuous-time Markov chains): rates from complete paths or from snapshots.

A process X(t) on states 0 .. n-1 stays in state i for an exponential time with rate q_i,
then jumps to j != i with probability q_ij / q_i. The rate matrix (generator) Q has
q_ij >= 0 off the diagonal and q_ii = -q_i, so its rows sum to zero, and P(t) = expm(Q t)
holds the transition probabilities over a time t.

Complete paths (``observation="paths"``: each state with the time it was entered) give the
maximum-likelihood estimate in closed form, q_ij = N_ij / R_i, from the jump counts N_ij and
the time at risk R_i spent in i; the last sojourn is censored at ``end_times`` when given.

Snapshots (``observation="snapshots"``: states seen at irregular times, the path between them
unseen) have log-likelihood sum_k log P(t_k+1 - t_k)[x_k, x_k+1]. EM replaces N_ij and R_i by
their expectations given the states at both ends of every interval (Hobolth & Jensen 2011,
"Summary statistics for endpoint-conditioned continuous-time Markov chains", J. Appl. Prob. 48):

    E[R_i]  =        sum_(a, b, t) ∫_0^t P(s)[a, i] P(t - s)[i, b] ds / P(t)[a, b],
    E[N_ij] = q_ij * sum_(a, b, t) ∫_0^t P(s)[a, i] P(t - s)[j, b] ds / P(t)[a, b].

For the intervals of one length t, with W[a, b] = n_ab(t) / P(t)[a, b], these sums are the
entries of ∫_0^t expm(Q' s) W expm(Q' (t - s)) ds, the upper right block of
expm([[Q', W], [0, Q']] t) (Van Loan 1978, "Computing integrals involving the matrix
exponential", IEEE TAC 23). So an iteration costs two matrix exponentials per distinct interval
length, however many intervals share it, and :func:`expm_metzler` computes them for all lengths
at once. The M-step is q_ij = E[N_ij] / E[R_i], and the log-likelihood never decreases
(the iterations run in :func:`modeshift.models.em.run`).

>>> import numpy as np
>>> from modeshift import MarkovJumpProcess
>>> truth = MarkovJumpProcess()
>>> truth.rate_matrix_ = [[-1.0, 0.7, 0.3], [0.4, -0.6, 0.2], [0.5, 0.5, -1.0]]
>>> paths = truth.sample(n_sequences=300, t_end=10.0, random_state=0)
>>> times = [np.sort(np.random.default_rng(i).uniform(0, 10, 12)) for i in range(300)]
>>> model = MarkovJumpProcess().fit(paths.observe(times), times=times)
>>> model.rate_matrix_.round(1)
array([[-1. ,  0.7,  0.3],
       [ 0.4, -0.6,  0.2],
       [ 0.6,  0.6, -1.1]])
>>> round(float(model.holding_time_distribution(1).mean()), 1)  # 1 / q_1; the truth is 1.7
1.8
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from modeshift.chain_analysis import stationary_distribution
from modeshift.data import Sequences, check_array, check_probabilities
from modeshift.models import em
from modeshift.models.base import Model, NotFittedError
from modeshift.models.params import Integer, OneOf, either
from modeshift.models.state_labels import encode_states, labels_from_json, labels_to_json
from modeshift.statistics import Statistics
from modeshift.symbols import Vocabulary

__all__ = [
    "MarkovJumpProcess",
    "Paths",
    "check_rate_matrix",
    "endpoint_integrals",
    "endpoint_statistics",
    "expm_metzler",
]

OBSERVATIONS = ("snapshots", "paths")
_BLOCK_ENTRIES = 2**22  # matrix entries per batch of exponentials (32 MB of float64)
_FIT_RESULTS = ("history_", "converged_", "n_iter_")

#: When complete paths end: one time for all, or one per path.
Ends = float | Sequence[float] | None


@dataclass(frozen=True)
class Paths:
    """Simulated paths: path i enters ``states[i][k]`` at ``times[i][k]``; its record ends at
    ``end_times[i]`` (one time for all paths, or one per path), as ``fit``'s ``end_times`` take them."""

    states: list[list[Hashable]]
    times: list[np.ndarray]
    end_times: float | np.ndarray

    @property
    def t_end(self) -> float | np.ndarray:
        """Deprecated alias of ``end_times``."""
        warnings.warn("Paths.t_end is renamed end_times; the old name goes in the next release", DeprecationWarning, 2)
        return self.end_times

    def observe(self, times: Sequence[Any]) -> list[list[Hashable]]:
        """The states of each path at its own observation ``times`` (one array per path, within [0, its end])."""
        if len(times) != len(self.states):
            raise ValueError(f"{len(times)} time arrays given for {len(self.states)} paths")
        ends = np.broadcast_to(np.asarray(self.end_times, dtype=np.float64), (len(self.states),))
        observed = []
        for i, (states, jumps, at, end) in enumerate(zip(self.states, self.times, times, ends)):
            at = np.asarray(at, dtype=np.float64)
            if at.size and (at.min() < 0 or at.max() > end):
                raise ValueError(f"path {i}: observation times must lie in [0, {end}]")
            observed.append([states[k] for k in np.searchsorted(jumps, at, side="right") - 1])
        return observed


@dataclass(frozen=True)
class _Intervals:
    """Consecutive observations (a at time u, b at time u + length) within the sequences."""

    starts: np.ndarray
    ends: np.ndarray
    lengths: np.ndarray
    n_states: int

    @classmethod
    def of(cls, seqs: Sequences) -> _Intervals:
        follows = np.ones(seqs.n_steps, dtype=bool)
        follows[seqs.offsets[:-1]] = False
        steps = np.flatnonzero(follows)
        codes, times = seqs.codes, seqs.times
        return cls(codes[steps - 1], codes[steps], times[steps] - times[steps - 1], len(seqs.vocabulary))


class MarkovJumpProcess(Model):
    """A continuous-time Markov chain, learned from complete paths or from snapshots at irregular times.

    Parameters
    ----------
    n_states : int, optional
        Number of states; by default those in the data. With integer states 0 .. n_states - 1
        the data need not visit them all.
    observation : {"snapshots", "paths"}
        What ``fit`` and ``score`` receive: states observed at irregular times (fit by EM),
        or complete paths, every state with the time it was entered (closed-form maximum likelihood).
    n_iter, tol : int, float
        EM stops after ``n_iter`` iterations or when the log-likelihood improves by less than
        ``tol`` (:mod:`modeshift.models.em`); ``n_iter=0`` only initialises. Complete paths
        need no iterations: their estimate is exact.
    random_state : int or numpy Generator, optional
        Accepted as by every EM-fitted model; EM's start (a crude estimate) is deterministic.
    accelerate : bool
        Accelerate EM by SQUAREM (:mod:`modeshift.models.em`); False runs plain EM.
    warm_start : bool
        Start EM from the current ``rate_matrix_`` (and ``states_``) instead of afresh.
    verbose : bool
        Show the progress of the EM iterations (drawn by the interface layer).
    callback : callable, optional
        ``callback(iteration, log_likelihood)`` at every EM iteration.

    Attributes
    ----------
    rate_matrix_ : (n, n) array
        The generator Q; row and column i are state ``states_[i]``.
    states_ : tuple
        State labels, sorted when they can be.
    history_ : list of float
        Log-likelihood at each EM iteration (one value for complete paths).
    converged_ : bool
    n_iter_ : int

    A ``rate_matrix_`` set by hand on a model never fitted starts EM.
    """

    data_kind = "events"

    _constraints = {"n_states": either(Integer(1), OneOf((None,))), "observation": OneOf(OBSERVATIONS)}
    _renamed = {"log_likelihood_history_": "history_"}
    _file_arrays = {"rate_matrix_": "finite"}
    _file_attributes = {**Model._file_attributes, "states_": "labels"}

    def __init__(
        self,
        n_states: int | None = None,
        observation: str = "snapshots",
        n_iter: int = 1000,
        tol: float = 1e-7,
        random_state: int | np.random.Generator | None = None,
        accelerate: bool = True,
        warm_start: bool = False,
        verbose: bool = False,
        callback: Callable[[int, float], Any] | None = None,
    ):
        self.n_states = n_states
        self.observation = observation
        self.n_iter = n_iter
        self.tol = tol
        self.random_state = random_state
        self.accelerate = accelerate
        self.warm_start = warm_start
        self.verbose = verbose
        self.callback = callback

    # ---------------------------------------------------------------- parameters
    def _rate_matrix(self) -> np.ndarray:
        """The checked generator."""
        if "rate_matrix_" not in self.__dict__:
            raise NotFittedError("this MarkovJumpProcess has no rate_matrix_: call fit, or set it")
        rates = check_rate_matrix(self.rate_matrix_)
        n = len(rates)
        if len(self._labels(n)) != n:
            raise ValueError(f"states_ names {len(self.states_)} states, but rate_matrix_ has {n}")
        return rates

    def _labels(self, n: int) -> tuple[Hashable, ...]:
        return self.__dict__.get("states_", tuple(range(n)))

    def _code(self, state: Hashable) -> int:
        labels = self._labels(len(self._rate_matrix()))
        if state not in labels:
            raise ValueError(f"unknown state {state!r}; the states are {labels}")
        return labels.index(state)

    def exit_rates(self) -> np.ndarray:
        """q_i = -Q[i, i], the rate of leaving each state (mean holding time 1 / q_i)."""
        return np.clip(0.0 - np.diag(self._rate_matrix()), 0.0, None)  # +0.0, never -0.0, for absorbing states

    def holding_time_distribution(self, state: Hashable) -> Any:
        """The exponential law of one sojourn in ``state`` (a frozen ``scipy.stats.expon``)."""
        rate = self.exit_rates()[self._code(state)]
        if rate <= 0:
            raise ValueError(f"state {state!r} is absorbing: it is never left")
        return stats.expon(scale=1.0 / rate)

    def jump_matrix(self) -> np.ndarray:
        """The embedded jump chain: q_ij / q_i off the diagonal; an absorbing state stays put."""
        rates, exits = self._rate_matrix(), self.exit_rates()
        moving = exits > 0
        jumps = rates / np.where(moving, exits, 1.0)[:, None]
        np.fill_diagonal(jumps, np.where(moving, 0.0, 1.0))
        return jumps

    def transition_probability(self, t: float | Sequence[float]) -> np.ndarray:
        """P(t) = expm(Q t), (n, n); for an array of times, (len(t), n, n)."""
        times = np.asarray(t, dtype=np.float64)
        if not np.isfinite(times).all() or (times < 0).any():
            raise ValueError(f"times must be finite and non-negative, got {t!r}")
        rates = self._rate_matrix()
        return expm_metzler(rates * times.reshape(-1, 1, 1)).reshape(times.shape + rates.shape)

    def stationary_distribution(self) -> np.ndarray:
        """pi with pi Q = 0: the stationary law of the uniformised chain I + Q / max_i q_i
        (``ValueError`` naming the closed classes if there are several: then it is not unique)."""
        rates = self._rate_matrix()
        exits = self.exit_rates()
        uniformised = rates / max(float(exits.max()), np.finfo(float).tiny)
        np.fill_diagonal(uniformised, 0.0)
        np.fill_diagonal(uniformised, 1.0 - uniformised.sum(axis=1))
        return stationary_distribution(uniformised, states=self._labels(len(rates)))

    # ----------------------------------------------------------------------- data
    def _encode(
        self, data: Any, lengths: Sequence[int] | None, times: Any, columns: dict[str, Any], fitted: bool
    ) -> Sequences:
        states = self._labels(len(self._rate_matrix())) if fitted else self.__dict__.get("states_")
        seqs = encode_states(data, states, n_states=self.n_states, lengths=lengths, times=times, **columns)
        return seqs.require_times(f"a MarkovJumpProcess (observation={self.observation!r})")

    def _path_statistics(self, seqs: Sequences, end_times: Ends) -> Statistics:
        """Jump counts N_ij and time at risk R_i of complete paths."""
        n = len(seqs.vocabulary)
        intervals = _Intervals.of(seqs)
        jumps = np.zeros((n, n))
        np.add.at(jumps, (intervals.starts, intervals.ends), 1.0)
        np.fill_diagonal(jumps, 0.0)
        time_at_risk = np.bincount(intervals.starts, weights=intervals.lengths, minlength=n)
        if end_times is not None:
            last = seqs.offsets[1:] - 1
            ends = np.broadcast_to(np.asarray(end_times, dtype=np.float64), (seqs.n_sequences,))
            censored = ends - seqs.times[last]
            if not np.isfinite(censored).all() or (censored < 0).any():
                bad = int(np.argmax(~(censored >= 0)))
                raise ValueError(
                    f"path {bad}: end time {ends[bad]} is before its last time stamp {seqs.times[last][bad]}"
                )
            time_at_risk += np.bincount(seqs.codes[last], weights=censored, minlength=n)
        return Statistics(jumps=jumps, time_at_risk=time_at_risk)

    # ------------------------------------------------------------------------ fit
    def fit(
        self,
        data: Any,
        lengths: Sequence[int] | None = None,
        *,
        times: Any = None,
        end_times: Ends = None,
        **columns: Any,
    ) -> MarkovJumpProcess:
        """Learn the rate matrix from paths or snapshots (see ``observation``); returns ``self``.

        ``data`` are state sequences in any form :func:`~modeshift.data.as_sequences` reads
        with ``symbols=True``, ``times`` their time stamps (one array per sequence, strictly
        increasing), or an event log with a time column (``columns`` name its columns).
        ``end_times`` (one, or one per path) censor the last sojourn of complete paths;
        without them the last states carry no information. In a path, a state that repeats
        the previous one is no jump. Snapshots are fit by EM (:func:`modeshift.models.em.run`),
        complete paths in closed form (``history_`` holds its one log-likelihood).
        """
        self._start_fit()
        seqs = self._encode(data, lengths, times, columns, fitted=False)
        self.states_ = seqs.vocabulary.symbols
        if self.observation == "paths":
            counts = self._path_statistics(seqs, end_times)
            self.rate_matrix_ = _generator(counts["jumps"], counts["time_at_risk"])
            self.history_ = [_complete_log_likelihood(self.rate_matrix_, counts)]
            self.converged_, self.n_iter_ = True, 1
        else:
            if end_times is not None:
                raise ValueError("end_times apply to observation='paths' only")
            intervals = _Intervals.of(seqs)
            if intervals.lengths.size == 0:
                raise ValueError("snapshots need at least one sequence with two observations")
            self.__dict__["_given"] = self.__dict__.get("rate_matrix_")
            em.run(self, intervals, label="MarkovJumpProcess")
            del self.__dict__["_given"]
        self._finish_fit(seqs)
        return self

    def _em_initialize(self, intervals: _Intervals, rng: np.random.Generator, restart: int) -> None:
        """The rate matrix given (by hand, or kept by ``warm_start``), else a crude estimate."""
        given = self.__dict__["_given"]
        self.rate_matrix_ = _crude_rates(intervals) if given is None else given
        self.rate_matrix_ = self._rate_matrix()  # checked, as an array

    def _e_step(self, intervals: _Intervals, workspace: dict[str, Any]) -> tuple[float, Statistics]:
        expected = endpoint_statistics(self.rate_matrix_, intervals.starts, intervals.ends, intervals.lengths)
        return expected["log_likelihood"], expected

    def _m_step(self, intervals: _Intervals, expected: Statistics) -> None:
        self.rate_matrix_ = _generator(expected["jumps"], expected["time_at_risk"])

    def _em_snapshot(self) -> dict[str, np.ndarray]:
        return {"rate_matrix_": self.rate_matrix_.copy()}

    def _em_restore(self, snapshot: dict[str, np.ndarray]) -> None:
        self.rate_matrix_ = snapshot["rate_matrix_"]
        self._rate_matrix()  # non-negative rates (an extrapolation may leave them)

    # ----------------------------------------------------------------- inference
    def score(
        self,
        data: Any,
        lengths: Sequence[int] | None = None,
        *,
        times: Any = None,
        end_times: Ends = None,
        **columns: Any,
    ) -> float:
        """Log-likelihood: of snapshots, sum log P(dt)[x_k, x_k+1] (given each sequence's first
        state); of complete paths, sum N_ij log q_ij - sum R_i q_i."""
        rates = self._rate_matrix()
        seqs = self._encode(data, lengths, times, columns, fitted=True)
        if self.observation == "paths":
            return _complete_log_likelihood(rates, self._path_statistics(seqs, end_times))
        intervals = _Intervals.of(seqs)
        return endpoint_log_likelihood(rates, intervals.starts, intervals.ends, intervals.lengths)

    @property
    def n_parameters(self) -> int:
        """Free parameters: the n (n - 1) off-diagonal rates."""
        n = len(self._rate_matrix())
        return n * (n - 1)

    def aic(self, data: Any, lengths: Sequence[int] | None = None, **options: Any) -> float:
        """Akaike information criterion, -2 log-likelihood + 2 n_parameters (``options`` as for :meth:`score`)."""
        return -2.0 * self.score(data, lengths, **options) + 2.0 * self.n_parameters

    def bic(self, data: Any, lengths: Sequence[int] | None = None, **options: Any) -> float:
        """Bayesian information criterion, -2 log-likelihood + n_parameters log(n), n the intervals
        between consecutive observations (``options`` as for :meth:`score`)."""
        end_times = options.pop("end_times", None)
        seqs = self._encode(data, lengths, options.pop("times", None), options, fitted=True)
        log_likelihood = self.score(seqs, end_times=end_times)
        return -2.0 * log_likelihood + self.n_parameters * np.log(seqs.n_steps - seqs.n_sequences)

    def sample(
        self,
        n_steps: int | None = None,
        n_sequences: int = 1,
        random_state: int | np.random.Generator | None = None,
        *,
        t_end: float | None = None,
        initial: Hashable | Sequence[float] | None = None,
    ) -> Paths:
        """Simulate ``n_sequences`` paths from time 0 (Gillespie's algorithm), all advancing together.

        A path stops once it has entered ``n_steps`` states (its first included) or at time
        ``t_end``, whichever comes first (``None``: no such cap; give at least one). Its
        record ends when it would leave its last state, or at ``t_end``: ``end_times`` of
        the :class:`Paths` returned, per path (``inf`` for a path resting in an absorbing
        state without ``t_end``). ``initial`` is the law of X(0): the stationary
        distribution (default), a state, or a probability vector (a list or array over
        ``states_``). One path or several, the result is a :class:`Paths`, whose fields hold
        one entry per path.
        """
        rates = self._rate_matrix()
        n, labels = len(rates), self._labels(len(rates))
        cap = np.inf if n_steps is None else int(n_steps)  # n_steps, n_sequences, t_end checked (params.ARGUMENTS)
        horizon = np.inf if t_end is None else float(t_end)
        if not np.isfinite(min(cap, horizon)):
            raise ValueError("sample needs n_steps or t_end (not both None): where else would a path stop?")
        if initial is None:
            start = self.stationary_distribution()
        elif isinstance(initial, list | np.ndarray):
            start = check_probabilities("initial", initial, (n,))
        else:
            start = np.eye(n)[self._code(initial)]
        rng = np.random.default_rng(random_state)
        exits, jumps = self.exit_rates(), self.jump_matrix()
        n_sequences = int(n_sequences)
        state = rng.choice(n, size=n_sequences, p=start)
        clock, entered = np.zeros(n_sequences), np.ones(n_sequences)
        events = [(np.arange(n_sequences), state.copy(), clock.copy())]
        moving = np.arange(n_sequences)
        while moving.size:
            with np.errstate(divide="ignore"):  # an absorbing state waits forever
                clock[moving] += rng.standard_exponential(moving.size) / exits[state[moving]]
            moving = moving[(clock[moving] < horizon) & (entered[moving] < cap)]
            state[moving] = rng.multinomial(1, jumps[state[moving]]).argmax(axis=1)
            entered[moving] += 1
            events.append((moving, state[moving], clock[moving]))
        path, codes, times = (np.concatenate(column) for column in zip(*events))
        order = np.argsort(path, kind="stable")  # events of a path are already in time order
        bounds = np.cumsum(np.bincount(path, minlength=n_sequences))[:-1]
        vocabulary = Vocabulary(labels)
        return Paths(
            [vocabulary.decode(c) for c in np.split(codes[order], bounds)],
            np.split(times[order], bounds),
            np.minimum(clock, horizon),
        )

    # --------------------------------------------------------------- persistence
    def _learned_arrays(self) -> dict[str, np.ndarray]:
        return {"rate_matrix_": self._rate_matrix()}

    def _learned_attributes(self) -> dict[str, Any]:
        states = labels_to_json(self._labels(len(self._rate_matrix())))
        return {"states_": states, **{name: self.__dict__[name] for name in _FIT_RESULTS if name in self.__dict__}}

    def _restore(self, arrays: dict[str, np.ndarray], attributes: dict[str, Any]) -> None:
        if "rate_matrix_" not in arrays:
            raise ValueError("the model file lacks the parameter array rate_matrix_")
        self.rate_matrix_ = np.array(arrays["rate_matrix_"])
        for name, value in attributes.items():
            setattr(self, name, labels_from_json(value) if name == "states_" else value)
        self._rate_matrix()


def endpoint_statistics(
    rate_matrix: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    lengths: np.ndarray,
    counts: np.ndarray | None = None,
) -> Statistics:
    """E-step for snapshots: the log-likelihood sum_k log P(t_k)[a_k, b_k] of intervals (a_k, b_k, t_k)
    and the expected jump counts ``jumps`` (n, n) and time at risk ``time_at_risk`` (n,) given
    their endpoints (see the module docstring). Intervals of equal length share their exponentials.
    ``counts`` (one per interval, default 1) weight the intervals: soft endpoints, such as the
    pair posteriors of hidden modes, enter as every pair (a, b) weighted by its probability."""
    rates = np.asarray(rate_matrix, dtype=np.float64)
    n = len(rates)
    counts = np.ones(len(starts)) if counts is None else np.asarray(counts, dtype=np.float64)
    log_likelihood, integrals = 0.0, np.zeros((n, n))
    for inside, t, which, a, b, probabilities in _interval_batches(rates, starts, ends, lengths):
        weight = counts[inside]
        if (probabilities <= 0).any():
            k = int(np.flatnonzero(inside)[np.argmax(probabilities <= 0)])
            raise ValueError(f"interval {k}: the change {starts[k]} -> {ends[k]} has probability 0 under these rates")
        log_likelihood += float(weight @ np.log(probabilities))
        weights = np.zeros((t.shape[0], n, n))
        np.add.at(weights, (which, a, b), weight / probabilities)
        integrals += endpoint_integrals(np.broadcast_to(rates, weights.shape), t[:, 0, 0], weights).sum(axis=0)
    jumps = rates * integrals
    np.fill_diagonal(jumps, 0.0)
    return Statistics(log_likelihood=log_likelihood, jumps=jumps, time_at_risk=np.diag(integrals).copy())


def endpoint_integrals(generators: np.ndarray, lengths: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """I = ∫_0^t expm(Q' s) W expm(Q' (t - s)) ds for each of m intervals (generator Q (m, n, n) held
    over length t (m,), weights W (m, n, n)): the top-right block of the exponential of
    [[Q', W], [0, Q']] t (Van Loan 1978). With W_ab = (count of a -> b) / P(t)_ab, the expected
    jumps given the endpoints are q_ij I_ij and the times at risk I_ii (Hobolth & Jensen 2011).
    Each W is scaled to largest entry 1 inside the block, which keeps the block's norm that of Q t."""
    n = generators.shape[1]
    t = np.asarray(lengths, dtype=np.float64)[:, None, None]
    scale = weights.max(axis=(1, 2), keepdims=True)
    scale = np.where(scale > 0, scale, 1.0)
    block = np.zeros((len(t), 2 * n, 2 * n))
    block[:, :n, :n] = block[:, n:, n:] = np.swapaxes(generators, 1, 2) * t
    block[:, :n, n:] = weights / scale * t
    return expm_metzler(block)[:, :n, n:] * scale


def check_rate_matrix(rates: Any, n_states: int | None = None, name: str = "rate_matrix_") -> np.ndarray:
    """A generator as a float (n, n) array (n = ``n_states`` if given): finite, non-negative off the
    diagonal, rows summing to 0; else one ValueError naming ``name`` and what is wrong."""
    rates = check_array(name, rates, (n_states, n_states))
    n = len(rates)
    if rates.shape != (n, n) or (rates - np.diag(np.diag(rates)) < 0).any():
        raise ValueError(f"{name} must be square with non-negative off-diagonal rates")
    if not np.allclose(rates.sum(axis=1), 0.0, atol=1e-8 * max(1.0, np.abs(rates).max())):
        raise ValueError(f"{name} rows must sum to 0 (q_ii = -sum of the row's other rates)")
    return rates


def endpoint_log_likelihood(
    rate_matrix: np.ndarray, starts: np.ndarray, ends: np.ndarray, lengths: np.ndarray
) -> float:
    """sum_k log P(t_k)[a_k, b_k] of intervals (a_k, b_k, t_k); -inf if one has probability 0."""
    batches = _interval_batches(np.asarray(rate_matrix, dtype=np.float64), starts, ends, lengths)
    with np.errstate(divide="ignore"):
        return float(sum(np.log(batch[-1]).sum() for batch in batches))


def _interval_batches(
    rates: np.ndarray, starts: np.ndarray, ends: np.ndarray, lengths: np.ndarray
) -> Iterator[tuple[np.ndarray, ...]]:
    """The intervals by batches of distinct lengths (bounded memory): which intervals are in the batch
    (a mask), the batch's lengths t (m, 1, 1), each interval's index into them, its endpoints a and b,
    and its probability P(t)[a, b]."""
    n = len(rates)
    distinct, group = np.unique(np.asarray(lengths, dtype=np.float64), return_inverse=True)
    per_batch = max(1, _BLOCK_ENTRIES // (4 * n * n))
    for first in range(0, distinct.size, per_batch):
        t = distinct[first : first + per_batch, None, None]
        inside = (group >= first) & (group < first + t.shape[0])
        which, a, b = group[inside] - first, starts[inside], ends[inside]
        with np.errstate(over="ignore", invalid="ignore"):  # named below
            probabilities = expm_metzler(rates * t)[which, a, b]
        if not np.isfinite(probabilities).all():  # exp(Q t) out of reach of double precision
            k = int(np.flatnonzero(inside)[np.argmax(~np.isfinite(probabilities))])
            raise ValueError(
                f"interval {k} lasts {lengths[k]:.3g}: the transition probabilities over it are not finite "
                f"(rates times length up to {np.abs(rates).max() * lengths[k]:.3g}); measure time in larger units"
            )
        yield inside, t, which, a, b, probabilities


def _generator(jumps: np.ndarray, time_at_risk: np.ndarray) -> np.ndarray:
    """q_ij = N_ij / R_i with rows summing to 0; a state never occupied gets no rates."""
    occupied = time_at_risk > 0
    rates = np.where(occupied[:, None], jumps / np.where(occupied, time_at_risk, 1.0)[:, None], 0.0)
    np.fill_diagonal(rates, 0.0)
    np.fill_diagonal(rates, -rates.sum(axis=1))
    return rates


def _complete_log_likelihood(rates: np.ndarray, counts: Statistics) -> float:
    """sum N_ij log q_ij - sum R_i q_i (0 log 0 = 0)."""
    jumps = counts["jumps"]
    with np.errstate(divide="ignore"):
        log_rates = np.where(jumps > 0, np.log(np.where(jumps > 0, rates, 1.0)), 0.0)
    return float(np.sum(jumps * log_rates) + counts["time_at_risk"] @ np.diag(rates))


def _crude_rates(intervals: _Intervals) -> np.ndarray:
    """EM's start: rates as if each interval were spent in its first state, then one jump,
    plus one pseudo-jump to every state so that no rate starts at zero (EM keeps zeros)."""
    n = intervals.n_states
    jumps = np.ones((n, n))
    np.add.at(jumps, (intervals.starts, intervals.ends), 1.0)
    time_at_risk = np.bincount(intervals.starts, weights=intervals.lengths, minlength=n) + intervals.lengths.mean()
    return _generator(jumps, time_at_risk)


def expm_metzler(matrices: np.ndarray) -> np.ndarray:
    """expm of each matrix in a stack (m, d, d) whose off-diagonal entries are non-negative.

    Rate matrices times a time, and their Van Loan blocks, are such. With c the largest
    negative diagonal entry, expm(A) = e^-c expm(A + c I) and A + c I >= 0, so the Taylor
    series has no cancellation and every entry, however small, keeps its relative accuracy
    (the idea of uniformisation). Each matrix is scaled by 2^-s to norm <= 1/4, where 12
    terms reach double precision, and squared s times; the whole stack moves together.
    """
    size = matrices.shape[-1]
    eye = np.eye(size)
    shift = np.maximum(-np.diagonal(matrices, axis1=-2, axis2=-1).min(axis=-1), 0.0)[:, None, None]
    shifted = matrices + shift * eye
    norms = shifted.sum(axis=-1).max(axis=-1)  # the infinity norm of a non-negative matrix
    squarings = np.maximum(np.ceil(np.log2(np.maximum(norms, np.finfo(float).tiny))) + 2, 0).astype(np.int64)
    scale = np.ldexp(1.0, -squarings)[:, None, None]
    scaled = shifted * scale
    result = eye + scaled / 12
    for k in range(11, 0, -1):
        result = eye + scaled @ result / k
    result *= np.exp(-shift * scale)
    for k in range(squarings.max(initial=0)):
        more = squarings > k
        result[more] = result[more] @ result[more]
    return result
