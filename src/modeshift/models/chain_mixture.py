"""Mixtures of Markov chains: which of K first-order chains produced each short trajectory.

A trajectory x = (x_1, ..., x_T) over states 0 .. V-1 comes from component k with
probability w_k; given k it is a Markov chain with initial distribution pi_k and
transition matrix A_k, so with n_ij(x) the number of transitions i -> j in x

    log p(x | k) = log pi_k[x_1] + sum_ij n_ij(x) log A_k[i, j].

The counts of all trajectories form a sparse (n_trajectories, V * V) matrix N, and one
product N @ log A gives every log p(x | k) at once. EM alternates responsibilities
r_xk = p(k | x) with the M-step

    w_k ∝ sum_x r_xk + a,   pi_k[i] ∝ sum_x r_xk [x_1 = i] + a,   A_k[i, j] ∝ (N' r)[ij, k] + a,

the posterior mode under Dirichlet priors with pseudo-count a (``pseudo_count``), so the
log-likelihood plus log prior increases at every iteration.

Starting values are spectral, in the manner of Kannan, Salmasian & Vempala (2008, "The
spectral method for general mixture models", SIAM J. Comput. 38): each trajectory's profile
(its first state and its transitions, as frequencies) is square-rooted to even out the noise
of frequent and rare transitions, centred, and projected on the top 2K right singular vectors
of the profile matrix, where the components' means stand out from the noise; k-means++ then
clusters the projections, and every restart reseeds it. EM (:func:`modeshift.models.em.run`)
finds a local maximum: more restarts make a merged pair of components less likely.

>>> import numpy as np
>>> from modeshift import MarkovChainMixture
>>> from modeshift.metrics import mode_accuracy
>>> truth = MarkovChainMixture(n_components=2)
>>> truth.weights_ = [0.5, 0.5]
>>> truth.startprob_ = np.full((2, 3), 1 / 3)
>>> truth.transmat_ = [np.full((3, 3), 0.05) + 0.85 * np.eye(3), np.full((3, 3), 0.05) + 0.85 * np.eye(3)[[1, 2, 0]]]
>>> trajectories, components = truth.sample(12, 300, random_state=0)   # 300 trajectories of 12 states
>>> model = MarkovChainMixture(n_components=2, random_state=0).fit(trajectories)
>>> mode_accuracy(components, model.predict(trajectories))
1.0
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import sparse
from scipy.sparse.linalg import LinearOperator, svds
from scipy.special import logsumexp

from modeshift.data import Sequences, check_probabilities
from modeshift.emissions.kmeans import kmeans
from modeshift.models import em
from modeshift.models.base import Model, NotFittedError, check_possible
from modeshift.models.markov_chain import smooth
from modeshift.models.params import Integer, Number
from modeshift.models.state_labels import encode_states, labels_from_json, labels_to_json
from modeshift.statistics import Statistics
from modeshift.symbols import Vocabulary

__all__ = ["MarkovChainMixture"]

_PARAMETERS = ("weights_", "startprob_", "transmat_")
_FIT_RESULTS = ("history_", "converged_", "n_iter_")


@dataclass(frozen=True)
class _Counts:
    """Per-trajectory sufficient statistics: first states and sparse transition counts."""

    first: sparse.csr_matrix  # (n_trajectories, V): one-hot first state
    transitions: sparse.csr_matrix  # (n_trajectories, V * V): n_ij(x) in column i * V + j
    lengths: np.ndarray

    @classmethod
    def of(cls, seqs: Sequences, n_states: int) -> _Counts:
        n, starts = seqs.n_sequences, seqs.offsets[:-1]
        first = sparse.csr_matrix((np.ones(n), (np.arange(n), seqs.codes[starts])), shape=(n, n_states))
        steps = seqs.linked_rows
        rows = np.repeat(np.arange(n), seqs.lengths - 1)
        columns = seqs.codes[steps - 1] * n_states + seqs.codes[steps]
        shape = (n, n_states * n_states)
        transitions = sparse.csr_matrix((np.ones(len(steps)), (rows, columns)), shape=shape)  # sums repeats
        return cls(first, transitions, seqs.lengths)

    def profiles(self) -> sparse.csr_matrix:
        """First state and transitions of each trajectory as frequencies (rows sum to 1)."""
        return sparse.diags(1.0 / self.lengths) @ sparse.hstack([self.first, self.transitions]).tocsr()


class MarkovChainMixture(Model):
    """A mixture of first-order Markov chains over one set of states, fit by EM.

    Parameters
    ----------
    n_components : int
        Number of chains K.
    pseudo_count : float
        Dirichlet smoothing a >= 0 added to every count in the M-step (mixture weights,
        initial distributions, transitions); a > 0 keeps unseen transitions possible.
    n_iter, tol : int, float
        EM stops after ``n_iter`` iterations or when the objective improves by less than ``tol``.
    n_restarts : int
        EM runs from this many spectral starts (k-means reseeded); the best objective wins.
    random_state : int or numpy Generator, optional
    accelerate : bool
        Accelerate EM by SQUAREM (:mod:`modeshift.models.em`); False runs plain EM.
    warm_start : bool
        Start ``fit`` from the current parameters (and ``states_``) instead of afresh.
    verbose : bool
        Show the progress of the EM iterations (drawn by the interface layer).
    callback : callable, optional
        ``callback(iteration, objective)`` at every EM iteration of every restart.

    Attributes
    ----------
    weights_ : (K,) array
        Mixture weights w.
    startprob_ : (K, V) array
        Initial distribution of each component.
    transmat_ : (K, V, V) array
        Transition matrix of each component.
    states_ : tuple
        State labels; code i (row i of ``transmat_[k]``) is ``states_[i]``.
    history_ : list of float
        Log-likelihood plus log prior at each EM iteration of the best restart.
    converged_ : bool
    n_iter_ : int

    Parameters set by hand on a model never fitted start the first restart.

    Notes
    -----
    The hidden component is one per trajectory, not one per step: ``predict`` gives the
    most likely component of each trajectory and ``predict_proba`` the posterior
    p(k | x), both one row per trajectory. There is no per-step mode, hence no
    per-step ``filter_proba`` (nor ``segment``): what the first t states say about the
    component is ``predict_proba`` of those t states, since p(k | x_1..x_t) depends on
    nothing after them.
    """

    data_kind = "symbols"
    carries_workspace = True  # each shard's counts per trajectory, built once (models.em)

    _constraints = {"n_components": Integer(1), "pseudo_count": Number(0)}
    _renamed = {"log_likelihood_history_": "history_"}
    _file_arrays = dict.fromkeys(_PARAMETERS, "finite")
    _file_attributes = {**Model._file_attributes, "states_": "labels"}

    def __init__(
        self,
        n_components: int = 2,
        pseudo_count: float = 0.5,
        n_iter: int = 1000,
        tol: float = 1e-7,
        n_restarts: int = 5,
        random_state: int | np.random.Generator | None = None,
        accelerate: bool = True,
        warm_start: bool = False,
        verbose: bool = False,
        callback: Callable[[int, float], Any] | None = None,
    ):
        self.n_components = n_components
        self.pseudo_count = pseudo_count
        self.n_iter = n_iter
        self.tol = tol
        self.n_restarts = n_restarts
        self.random_state = random_state
        self.accelerate = accelerate
        self.warm_start = warm_start
        self.verbose = verbose
        self.callback = callback

    # ---------------------------------------------------------------- parameters
    def _parameters(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The checked (weights, startprob, transmat)."""
        missing = [name for name in _PARAMETERS if name not in self.__dict__]
        if missing:
            raise NotFittedError(f"this MarkovChainMixture has no {', '.join(missing)}: call fit, or set them")
        k = self.n_components
        weights = check_probabilities("weights_", self.weights_, (k,))
        startprob = check_probabilities("startprob_", self.startprob_, (k, None))
        n_states = startprob.shape[1]
        transmat = check_probabilities("transmat_", self.transmat_, (k, n_states, n_states))
        if len(self._labels(n_states)) != n_states:
            raise ValueError(f"states_ names {len(self.states_)} states, but the parameters have {n_states}")
        return weights, startprob, transmat

    def _labels(self, n_states: int) -> tuple[Hashable, ...]:
        return self.__dict__.get("states_", tuple(range(n_states)))

    @property
    def n_parameters(self) -> int:
        """Free parameters: (K - 1) + K (V - 1) + K V (V - 1)."""
        k, v = self.n_components, self._parameters()[1].shape[1]
        return (k - 1) + k * (v - 1) + k * v * (v - 1)

    # ------------------------------------------------------------------------ EM
    def fit(self, data: Any, lengths: Sequence[int] | None = None, **columns: Any) -> MarkovChainMixture:
        """Learn states, weights and chains from unlabeled trajectories by EM (:func:`modeshift.models.em.run`);
        returns ``self``. ``data``: state sequences in any form :func:`~modeshift.data.as_sequences`
        reads with ``symbols=True``."""
        self._start_fit()
        return self._fit_em(self._em_data(data, lengths, **columns))

    def _em_data(self, data: Any, lengths: Sequence[int] | None = None, **columns: Any) -> Sequences:
        """What EM reads: the states coded by ``states_`` (else by labels learned from ``data``), from
        ``fit``'s arguments or one shard of them (:mod:`modeshift.distributed`)."""
        return encode_states(data, self.__dict__.get("states_"), lengths=lengths, **columns)

    def _em_constants(self, data: Any, lengths: Sequence[int] | None = None, **columns: Any) -> tuple[Hashable, ...]:
        """The state labels of one shard (or ``states_``), merged over shards by :meth:`_em_merge_constants`."""
        return self.__dict__.get("states_") or self._em_data(data, lengths, **columns).vocabulary.symbols

    @staticmethod
    def _em_merge_constants(first: tuple[Hashable, ...], then: tuple[Hashable, ...]) -> tuple[Hashable, ...]:
        """The labels of both, as :func:`encode_states` learns them from all the data: sorted when they can be."""
        try:
            return tuple(sorted({*first, *then}))
        except TypeError:
            return Vocabulary.learn([*first, *then]).symbols

    def _em_set_constants(self, states: tuple[Hashable, ...]) -> None:
        self.states_ = tuple(states)

    def _fit_em(self, seqs: Sequences, over: em.Over | None = None) -> MarkovChainMixture:
        """EM from the starting parameters; ``over`` runs the E-steps over shards held elsewhere
        (each keeping its counts beside it), ``seqs`` being then a sample to start from."""
        n_trajectories = (over or em.in_memory(seqs))(_n_trajectories, self)
        if n_trajectories < self.n_components:
            raise ValueError(f"{n_trajectories} trajectories cannot fit {self.n_components} components")
        self.states_ = seqs.vocabulary.symbols
        self.__dict__["_given"] = {name: self.__dict__[name] for name in _PARAMETERS if name in self.__dict__}
        self.__dict__["_counts"] = (seqs, _Counts.of(seqs, len(seqs.vocabulary)))  # once, for every restart
        em.run(self, seqs, label=f"MarkovChainMixture K={self.n_components}", over=over)
        for name in ("_given", "_counts", "_embedding"):
            self.__dict__.pop(name, None)
        self._finish_fit(seqs)
        return self

    def _em_initialize(self, seqs: Sequences, rng: np.random.Generator, restart: int) -> None:
        """Restart 0 from the parameters given (by hand, or kept by ``warm_start``) if all are;
        otherwise from k-means clusters of the spectral embedding (computed once per fit)."""
        given = self.__dict__["_given"]
        if restart == 0 and len(given) == len(_PARAMETERS):
            self._em_restore(dict(zip(_PARAMETERS, self._parameters())))  # the given ones, checked
            return
        counts = self.__dict__["_counts"][1]
        if "_embedding" not in self.__dict__:
            self.__dict__["_embedding"] = _spectral_embedding(counts.profiles(), 2 * self.n_components, rng)
        labels = kmeans(self.__dict__["_embedding"], self.n_components, rng)[1]
        self._em_restore(dict(zip(_PARAMETERS, self._maximize(counts, np.eye(self.n_components)[labels]))))

    def _e_step(self, seqs: Sequences, workspace: dict[str, Any]) -> tuple[float, Statistics]:
        """The objective and the counts weighted by the responsibilities p(k | x) (the trajectories'
        counts: the fit's own for the data being fit, else built once per restart, kept in the workspace)."""
        counts = workspace.get("counts")
        if counts is None:
            fitted = self.__dict__.get("_counts")
            own = fitted is not None and fitted[0] is seqs
            counts = workspace["counts"] = fitted[1] if own else _Counts.of(seqs, len(seqs.vocabulary))
        log_joint = _log_joint(counts, self.weights_, self.startprob_, self.transmat_)
        log_lik = _log_likelihoods(log_joint)
        return float(log_lik.sum()) + self._log_prior(), _weighted(counts, np.exp(log_joint - log_lik[:, None]))

    def _m_step(self, seqs: Sequences, stats: Statistics) -> None:
        self.weights_, self.startprob_, self.transmat_ = self._posterior_mode(stats)

    def _em_snapshot(self) -> dict[str, np.ndarray]:
        return {name: np.array(self.__dict__[name]) for name in _PARAMETERS}

    def _em_restore(self, snapshot: dict[str, np.ndarray]) -> None:
        self.__dict__.update(snapshot)
        self._parameters()  # probabilities in [0, 1] summing to 1 (an extrapolation may leave them)

    def _maximize(self, counts: _Counts, responsibilities: np.ndarray) -> tuple[np.ndarray, ...]:
        """Posterior mode of (weights, startprob, transmat) given responsibilities (n, K)."""
        return self._posterior_mode(_weighted(counts, responsibilities))

    def _posterior_mode(self, stats: Statistics) -> tuple[np.ndarray, ...]:
        """Posterior mode of (weights, startprob, transmat) given the weighted counts (:func:`_weighted`)."""
        a, k = self.pseudo_count, self.n_components
        n_states = stats["first"].shape[1]
        transitions = stats["transitions"].reshape(k, n_states, n_states)
        return smooth(stats["weights"], a), smooth(stats["first"], a), smooth(transitions, a)

    def _log_prior(self, parameters: tuple[np.ndarray, ...] | None = None) -> float:
        """Dirichlet log density up to a constant: a * sum of log parameters (by default the current ones)."""
        if self.pseudo_count == 0:
            return 0.0
        parameters = parameters or (self.weights_, self.startprob_, self.transmat_)
        return self.pseudo_count * sum(float(np.log(p).sum()) for p in parameters)

    # ----------------------------------------------------------------- inference
    def _evidence(self, data: Any, lengths: Sequence[int] | None, columns: dict[str, Any]) -> tuple[np.ndarray, ...]:
        """log w_k + log p(x | k), (n, K), and log p(x), (n,), of new trajectories."""
        weights, startprob, transmat = self._parameters()
        n_states = startprob.shape[1]
        seqs = encode_states(data, self._labels(n_states), lengths=lengths, **columns)
        log_joint = _log_joint(_Counts.of(seqs, n_states), weights, startprob, transmat)
        return log_joint, logsumexp(log_joint, axis=1)

    def predict_proba(self, data: Any, lengths: Sequence[int] | None = None, **columns: Any) -> np.ndarray:
        """The posterior of each trajectory's component, p(k | x) = w_k p(x | k) / p(x), (n_trajectories, K)."""
        log_joint, log_lik = self._evidence(data, lengths, columns)
        check_possible(log_lik, _IMPOSSIBLE)
        return np.exp(log_joint - log_lik[:, None])

    def predict(self, data: Any, lengths: Sequence[int] | None = None, **columns: Any) -> np.ndarray:
        """The most likely component of each trajectory (the MAP of p(k | x)), (n_trajectories,)."""
        log_joint, log_lik = self._evidence(data, lengths, columns)
        check_possible(log_lik, _IMPOSSIBLE)
        return np.argmax(log_joint, axis=1)

    def score(self, data: Any, lengths: Sequence[int] | None = None, **columns: Any) -> float:
        """Total log-likelihood sum_x log p(x) (-inf if a trajectory has probability 0)."""
        return float(self._evidence(data, lengths, columns)[1].sum())

    def aic(self, data: Any, lengths: Sequence[int] | None = None, **columns: Any) -> float:
        """Akaike information criterion, -2 log-likelihood + 2 n_parameters."""
        return -2.0 * self.score(data, lengths, **columns) + 2.0 * self.n_parameters

    def bic(self, data: Any, lengths: Sequence[int] | None = None, **columns: Any) -> float:
        """-2 log-likelihood + n_parameters log(n_trajectories), trajectories being the independent units."""
        log_lik = self._evidence(data, lengths, columns)[1]
        return -2.0 * float(log_lik.sum()) + self.n_parameters * np.log(len(log_lik))

    def sample(
        self,
        n_steps: int,
        n_sequences: int = 1,
        random_state: int | np.random.Generator | None = None,
        *,
        length: int | Sequence[int] | None = None,
    ) -> tuple[list[Hashable], int] | tuple[list[list[Hashable]], np.ndarray]:
        """Draw ``n_sequences`` trajectories of ``n_steps`` states, and the component of each.

        The chains have no end: every trajectory has exactly ``n_steps`` states. The
        component is drawn once per trajectory (it is what :meth:`predict` recovers).
        Returns a trajectory (a list of state labels) and its component (an int), or for
        several a list of trajectories and their components, (n_sequences,).

        The form of the last release, ``sample(n_trajectories, length=...)`` (``length``
        one for all or one per trajectory; always a list and an array), still works with a
        DeprecationWarning.
        """
        rng = np.random.default_rng(random_state)
        if length is not None:
            warnings.warn(
                "MarkovChainMixture.sample(n_trajectories, length=...) is now sample(n_steps, n_sequences); "
                "the old form goes in the next release",
                DeprecationWarning,
                stacklevel=2,
            )
            return self._draw(np.broadcast_to(np.asarray(length, dtype=np.int64), (int(n_steps),)), rng)
        trajectories, components = self._draw(np.full(int(n_sequences), int(n_steps)), rng)
        return (trajectories[0], int(components[0])) if n_sequences == 1 else (trajectories, components)

    def _draw(self, lengths: np.ndarray, rng: np.random.Generator) -> tuple[list[list[Hashable]], np.ndarray]:
        """Trajectories of the given lengths and their components."""
        weights, startprob, transmat = self._parameters()
        if lengths.size == 0 or lengths.min() < 1:
            raise ValueError(f"need at least one trajectory and lengths >= 1, got {lengths.tolist()}")
        components = rng.choice(len(weights), size=lengths.size, p=weights)
        codes = np.empty((lengths.size, lengths.max()), dtype=np.int64)
        codes[:, 0] = rng.multinomial(1, startprob[components]).argmax(axis=1)
        for t in range(1, lengths.max()):
            codes[:, t] = rng.multinomial(1, transmat[components, codes[:, t - 1]]).argmax(axis=1)
        vocabulary = Vocabulary(self._labels(startprob.shape[1]))
        return [vocabulary.decode(row[:n]) for row, n in zip(codes, lengths)], components

    # --------------------------------------------------------------- persistence
    def _learned_arrays(self) -> dict[str, np.ndarray]:
        return dict(zip(_PARAMETERS, self._parameters()))

    def _learned_attributes(self) -> dict[str, Any]:
        states = labels_to_json(self._labels(self._parameters()[1].shape[1]))
        return {"states_": states, **{name: self.__dict__[name] for name in _FIT_RESULTS if name in self.__dict__}}

    def _restore(self, arrays: dict[str, np.ndarray], attributes: dict[str, Any]) -> None:
        missing = [name for name in _PARAMETERS if name not in arrays]
        if missing:
            raise ValueError(f"the model file lacks the parameter array(s) {missing}")
        for name in _PARAMETERS:
            setattr(self, name, np.array(arrays[name]))
        for name, value in attributes.items():
            setattr(self, name, labels_from_json(value) if name == "states_" else value)
        self._parameters()


def _weighted(counts: _Counts, responsibilities: np.ndarray) -> Statistics:
    """The counts of the trajectories weighted by their responsibilities (n, K), summed per
    component: ``weights`` (K,), ``first`` (K, V), ``transitions`` (K, V * V); they add up over shards."""
    return Statistics(
        weights=responsibilities.sum(axis=0),
        first=(counts.first.T @ responsibilities).T,
        transitions=(counts.transitions.T @ responsibilities).T,
    )


def _n_trajectories(model: MarkovChainMixture, seqs: Sequences) -> int:
    return seqs.n_sequences


def _log_joint(counts: _Counts, weights: np.ndarray, startprob: np.ndarray, transmat: np.ndarray) -> np.ndarray:
    """log w_k + log pi_k[x_1] + sum_ij n_ij(x) log A_k[i, j] for every trajectory x and component k."""
    with np.errstate(divide="ignore"):  # a zero probability is an impossible event, log 0 = -inf
        log_transitions = np.log(transmat).reshape(len(weights), -1).T
        return np.log(weights) + counts.first @ np.log(startprob).T + counts.transitions @ log_transitions


_IMPOSSIBLE = "a transition or first state no component allows; use pseudo_count > 0"


def _log_likelihoods(log_joint: np.ndarray) -> np.ndarray:
    """log p(x) per trajectory; an impossible trajectory is an error."""
    log_lik = logsumexp(log_joint, axis=1)
    check_possible(log_lik, _IMPOSSIBLE)
    return log_lik


def _spectral_embedding(profiles: sparse.csr_matrix, n_dimensions: int, rng: np.random.Generator) -> np.ndarray:
    """Square-root profiles, centred, projected on their top ``n_dimensions`` right singular vectors.

    The square root stabilises the variance of frequencies (Hellinger geometry), so that
    frequent states do not drown the rest; centring is implicit, keeping the matrix sparse.
    """
    roots = profiles.sqrt()
    mean = np.asarray(roots.mean(axis=0)).ravel()
    if n_dimensions >= min(roots.shape) - 1:
        return roots.toarray() - mean
    centred = LinearOperator(
        roots.shape,
        matvec=lambda v: roots @ np.ravel(v) - mean @ np.ravel(v),  # svds may pass (n, 1) columns
        rmatvec=lambda u: roots.T @ np.ravel(u) - mean * np.sum(u),
        dtype=np.float64,
    )
    left, singular_values, _ = svds(centred, k=n_dimensions, v0=rng.random(min(roots.shape)))
    return left * singular_values
