"""Streaming inference: filter observations one at a time, as they arrive, without refitting.

A model with an exact filter carries a *law* from one step to the next: the filtered mode
probabilities of a hidden Markov chain, the joint law of (mode, steps left) of a semi-Markov
chain, the mean and covariance of a Kalman filter. Each step predicts the law of the next
state, then conditions it on the new observation y_t:

    predicted_t = predict(filtered_t-1),    filtered_t ∝ predicted_t * p(y_t | state),
    log p(y_t | y_<t) = log of the normaliser,

so the cost per step is that of one step of the batch filter (O(K^2) for K modes, O(n^3) for a
state of dimension n), whatever the length of the stream, and the laws are normalised at every
step (no underflow over any number of steps). The sum of the one-step log-likelihoods is the
batch ``score`` of the observations seen, and the filtered laws are the batch filter's.

==========================  ===================================================================
model                       law carried (:class:`Recursion` and its subclasses)
==========================  ===================================================================
HMM, ARHMM                  p(z_t | y_0..t) (K,); an ARHMM keeps its last ``order`` observations
                            (its features, and a recurrent chain's switching law, are read
                            from them); with resets also p(z_t-1, z_t | y_0..t)
                            (:class:`PairRecursion`)
HSMM                        p(z_t = k, r more steps | y_0..t) (K, D): O(K D + K^2) per step
LinearGaussianSSM,          the Kalman filter's mean and covariance; with an exact diffuse start
StructuralModel             (mean, P_*, P_inf) until the diffuse part is identified
                            (:class:`DiffuseKalmanRecursion`)
MarkovRegression,           Hamilton's filter on the last p + 1 regimes (K^(p+1),); the first p
MarkovAutoregression        steps are conditioned on (``probabilities`` None)
SwitchingLDS                **approximate**: one Gaussian per mode (Kim's filter, GPB2) and
                            p(z_t-1, z_t | y_0..t); with resets a switch's pair follows its
                            reset; a fixed lag smooths by Kim's smoother
NonlinearSwitchingLDS       **approximate**: Kim's filter with each flow linearised at the last
                            filtered mean of each mode (:class:`ExtendedSwitchingKalmanRecursion`);
                            a reset, affine, is not linearised
ContinuousSwitchingLDS      as SwitchingLDS, with the laws of each step's gap (:class:`TimedStreaming`:
                            ``filter_step(..., time=t)``, the last time in ``history``)
ContinuousARHMM             p(z_t | y_0..t) (K,), exact, with the switches expm(Q Δ) and the
                            flows over each step's gap; ``history`` keeps [t, y_t]
                            (:class:`TimedStreaming`)
==========================  ===================================================================

``docs/streaming.md`` lists the options each model streams with, and those that do not stream.

Fixed-lag smoothing (``lag=L``) keeps the last L + 1 filtered and predicted laws and runs the
backward (Rauch-Tung-Striebel) recursion over them at every step,

    smoothed_s = filtered_s ⊙ [move_s+1 (smoothed_s+1 / predicted_s+1)]     (chains),

giving p(state_t-L | y_0..t) at a cost of L backward steps per observation; a Kalman filter's
window runs the batch smoother's backward form instead (it inverts no covariance). With L at
least the stream's length the window's smoothed laws are the batch smoother's. Kim's filter
(the switching models) keeps each step's predicted pairs with their matrices (or Jacobians) and
its pair posterior p(z_t-1, z_t | y_0..t), and smooths by Kim's (1994) smoother
(:meth:`SwitchingKalmanRecursion.back`), as approximate as its filter; its ``out.lagged`` is
(mean, covariance, probabilities): the mixture's moments and the modes'.

A :class:`FilterState` holds plain arrays: save it (:meth:`FilterState.save`) and resume the
stream later, or in another process, with the same outputs.

>>> import numpy as np
>>> from modeshift import HMM
>>> X = np.r_[np.zeros(50), 3 + np.zeros(50)] + np.random.default_rng(0).normal(0, 0.5, 100)
>>> model = HMM(n_states=2, random_state=0).fit(X)
>>> state = model.filter_init()
>>> for y in X[:60]:
...     state, out = model.filter_step(state, y)
>>> bool(np.allclose(out.probabilities, model.filter_proba(X[:60])[-1]))
True
>>> total = sum(out.log_likelihood for out in model.filter_stream(X))
>>> bool(np.isclose(total, model.score(X)))
True
"""

from __future__ import annotations

import functools
import itertools
import weakref
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import numpy as np

from modeshift._kernels.diffuse import diffuse_predict, diffuse_start, diffuse_update, diffuse_workspace, identified
from modeshift._kernels.kalman import predict_step, rts_smoother, update_step, update_workspace
from modeshift._kernels.layout import canonical
from modeshift.emissions.autoregressive import with_lags
from modeshift.safe_write import write_atomically

if TYPE_CHECKING:
    from modeshift.models.base import Forecast

__all__ = [
    "DiffuseKalmanRecursion",
    "ExtendedSwitchingKalmanRecursion",
    "FilterState",
    "KalmanRecursion",
    "PairRecursion",
    "Recursion",
    "SemiMarkovRecursion",
    "StepOutput",
    "StreamingFilters",
    "TimedStreaming",
    "chain_update",
    "next_time",
    "per_parameters",
]

T = TypeVar("T")
Law = tuple[np.ndarray, ...]  # a filter's law of the state: (probabilities,) or (mean, covariance)
Step = tuple[Law, Law, Any]  # a fixed-lag window's entry: (filtered, predicted, what remember keeps)
Window = tuple[Step, ...]  # a fixed-lag smoother's steps, oldest first


_NO_HISTORY = np.zeros((0, 0))
_NO_HISTORY.flags.writeable = False


class FilterState(NamedTuple):
    """What a streaming filter carries from one step to the next (arrays only, so it serialises).

    ``step``: observations seen; ``filtered``: the law after the last one (empty before the
    first); ``history``: the last observations an autoregression needs (or other per-model
    memory); ``lag`` and ``window``: the fixed-lag smoother's last steps, oldest first, each its
    (filtered law, predicted law, what :meth:`Recursion.remember` keeps: the move into it, a
    Kalman filter's [u_t, y_t], or what Kim's backward step reads of the filter alone, which is
    not saved but rebuilt from the laws). Immutable, and a named tuple rather than a dataclass: one
    is made per observation, and a tuple costs less than half a frozen dataclass to build.
    """

    step: int = 0
    filtered: Law = ()
    history: np.ndarray = _NO_HISTORY
    lag: int = 0
    window: Window = ()

    def as_arrays(self) -> dict[str, np.ndarray]:
        """The state as named arrays (for ``np.savez``); :meth:`from_arrays` inverts it."""
        out = {
            "step": np.array(self.step),
            "lag": np.array(self.lag),
            "history": self.history,
            "n_window": np.array(len(self.window)),
        }
        out.update({f"filtered_{i}": a for i, a in enumerate(self.filtered)})
        for w, (filtered, predicted, kept) in enumerate(self.window):
            out.update({f"window_{w}_filtered_{i}": a for i, a in enumerate(filtered)})
            out.update({f"window_{w}_predicted_{i}": a for i, a in enumerate(predicted)})
            if isinstance(kept, np.ndarray):  # not what is rebuilt from the laws (_KimParts)
                out[f"window_{w}_move"] = kept
        return out

    @classmethod
    def from_arrays(cls, arrays: Any) -> FilterState:
        """The state saved by :meth:`as_arrays` (a dict, or what ``np.load`` returns)."""

        def law(prefix: str) -> Law:
            return tuple(np.array(arrays[f"{prefix}_{i}"]) for i in range(4) if f"{prefix}_{i}" in arrays)

        def kept(w: int) -> np.ndarray | tuple[()]:
            return np.array(arrays[f"window_{w}_move"]) if f"window_{w}_move" in arrays else ()

        window = tuple(
            (law(f"window_{w}_filtered"), law(f"window_{w}_predicted"), kept(w)) for w in range(int(arrays["n_window"]))
        )
        return cls(int(arrays["step"]), law("filtered"), np.array(arrays["history"]), int(arrays["lag"]), window)

    def save(self, path: Any) -> None:
        """Write the state to an ``.npz`` file (no pickle), atomically (:mod:`modeshift.safe_write`)."""
        arrays = self.as_arrays()
        write_atomically(path, lambda file: np.savez(file, **arrays))

    @classmethod
    def load(cls, path: Any) -> FilterState:
        """Read a state written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as arrays:
            return cls.from_arrays(dict(arrays))


class StepOutput(NamedTuple):
    """The filter's answer to one observation.

    ``step``: its index in the stream; ``probabilities``: p(z_t | y_0..t) (K,) (None for a model
    without modes, and for the first ``order`` steps of a Markov-switching autoregression,
    which are conditioned on); ``mean``, ``covariance``: the moments of p(x_t | y_0..t) for a
    model with a continuous state; ``log_likelihood``: log p(y_t | y_0..t-1); ``lagged``: with
    ``lag=L``, the smoothed law of step t - L given y_0..t (probabilities, or (mean, covariance), or
    for a switching model (mean, covariance, probabilities)), None for t < L; ``state``: the filter
    state after this step (to save, or resume from). :attr:`prediction` is the predictive law of
    y_t+1; ``model`` is the model that filtered.
    """

    step: int
    log_likelihood: float
    state: FilterState
    model: Any
    probabilities: np.ndarray | None = None
    mean: np.ndarray | None = None
    covariance: np.ndarray | None = None
    lagged: Any = None

    @property
    def prediction(self) -> Forecast:
        """The predictive law of the next observation y_t+1, a one-step :class:`~modeshift.models.base.Forecast`
        (a model with inputs needs the next inputs: ``model.filter_forecast(out.state, 1, future_inputs)``)."""
        return self.model.filter_forecast(self.state, 1)


class Recursion:
    """The exact filter of a hidden Markov chain: law (probabilities,) (K,), move a (K, K) matrix.

    ``indicators`` (K, M) sums the probabilities of a chain on expanded states (e.g. the last p + 1
    regimes of a Markov-switching autoregression) to those of the M modes reported. Other state
    spaces (a semi-Markov chain's (mode, steps left), a Kalman filter's Gaussian) subclass it and
    override the four steps.
    """

    def __init__(self, initial: np.ndarray | None, indicators: np.ndarray | None = None):
        self.initial, self.indicators = initial, indicators

    def first(self, move: np.ndarray) -> Law:
        """The law of the first state, before its observation: ``initial``, or, where the start
        depends on the data (``initial`` None: time-varying transitions), the first step's ``move``."""
        return (self.initial if self.initial is not None else move,)

    def predict(self, law: Law, move: np.ndarray) -> Law:
        """The law of the next state before its observation."""
        return (law[0] @ move,)

    def update(self, predicted: Law, evidence: np.ndarray) -> tuple[Law, float]:
        """Condition on one step's evidence log p(y_t | z_t = k) (K,); returns the law and log p(y_t | y_<t)."""
        probabilities, log_lik = chain_update(predicted[0], evidence)
        return (probabilities,), log_lik

    def back(self, filtered: Law, following: Step, smoothed_next: Law) -> Law:
        """One backward step: the smoothed law of a step from its filtered law, the next step's
        window entry (filtered, predicted, kept) and the next step's smoothed law."""
        _, predicted_next, move = following
        ratio = _ratio(smoothed_next[0], predicted_next[0])
        smoothed = filtered[0] * (move @ ratio)
        return (smoothed / smoothed.sum(),)

    def remember(self, move: np.ndarray, evidence: Any, before: Law, predicted: Law, filtered: Law) -> Any:
        """What the fixed-lag window keeps of a step besides its laws (``before``: the filtered law
        of the step before, () at the first): the move into it."""
        return move

    def trim(self, window: Window, lag: int) -> Window:
        """The window a lag-L smoother needs: its last L + 1 steps."""
        return window[-(lag + 1) :]

    def smooth(self, window: Window) -> list[Law] | None:
        """The smoothed laws of a window's steps given everything seen, oldest first: the backward
        recursion :meth:`back` from the last step's filtered law."""
        smoothed = [window[-1][0]]
        for s in range(len(window) - 2, -1, -1):
            smoothed.append(self.back(window[s][0], window[s + 1], smoothed[-1]))
        return smoothed[::-1]

    def marginals(self, law: Law) -> dict[str, np.ndarray]:
        """What a step's output reports of a law."""
        return {"probabilities": law[0] if self.indicators is None else law[0] @ self.indicators}


class PairRecursion(Recursion):
    """The exact filter of a chain whose evidence depends on the pair (z_t-1, z_t), an ARHMM with
    resets (:mod:`modeshift._kernels.pair_hmm`): law (p(z_t | y_0..t) (K,), p(z_t-1, z_t | y_0..t)
    (K, K)), evidence log e_t(i, j) (K, K). The prediction is the pair law
    p(z_t-1 = i | y_<t) move_ij, which the update weighs by e_t(i, j); the smoother steps back by
    p(z_s = i | z_s+1 = j, y_0..s+1), the next step's pair law over its marginal.
    """

    def predict(self, law: Law, move: np.ndarray) -> Law:
        return (law[0][:, None] * move,)

    def update(self, predicted: Law, evidence: np.ndarray) -> tuple[Law, float]:
        if predicted[0].ndim == 1:  # a sequence's first step: no switch into it, the flows' evidence
            probabilities, log_lik = chain_update(predicted[0], np.ascontiguousarray(np.diagonal(evidence)))
            return (probabilities, np.diag(probabilities)), log_lik
        joint, log_lik = chain_update(predicted[0], evidence)
        return (joint.sum(axis=0), joint), log_lik

    def back(self, filtered: Law, following: Step, smoothed_next: Law) -> Law:
        probabilities, joint = following[0]
        law = joint @ _ratio(smoothed_next[0], probabilities)
        return (law / law.sum(),)


class SemiMarkovRecursion(Recursion):
    """The exact filter of an explicit-duration semi-Markov chain: law (K, D), the joint
    probability of (mode k, r more steps after this one), r = 0 .. D-1.

    A segment of k lasting d steps enters at (k, d - 1) and counts down; from (k, 0) the next
    segment's mode is j with ``move[k, j]`` (the switch matrix into this step, zero diagonal) and
    its duration d with ``pmf[j, d - 1]`` (the first segment's with ``first[k, d - 1]``).
    Cost O(K D + K^2) per step.
    """

    def __init__(self, initial: np.ndarray, first: np.ndarray, pmf: np.ndarray):
        super().__init__(initial)
        self.first_law, self.pmf = first, pmf

    def first(self, move: np.ndarray) -> Law:
        return (self.initial[:, None] * self.first_law,)

    def predict(self, law: Law, move: np.ndarray) -> Law:
        starting = law[0][:, 0] @ move
        predicted = starting[:, None] * self.pmf
        predicted[:, :-1] += law[0][:, 1:]
        return (predicted,)

    def update(self, predicted: Law, evidence: np.ndarray) -> tuple[Law, float]:
        joint, log_lik = chain_update(predicted[0], np.broadcast_to(evidence[:, None], predicted[0].shape))
        return (joint,), log_lik

    def back(self, filtered: Law, following: Step, smoothed_next: Law) -> Law:
        _, predicted_next, move = following
        ratio = _ratio(smoothed_next[0], predicted_next[0])
        ahead = np.empty_like(ratio)
        ahead[:, 1:] = ratio[:, :-1]
        ahead[:, 0] = move @ (self.pmf * ratio).sum(axis=1)
        smoothed = filtered[0] * ahead
        return (smoothed / smoothed.sum(),)

    def marginals(self, law: Law) -> dict[str, np.ndarray]:
        return {"probabilities": law[0].sum(axis=1)}


class KalmanRecursion(Recursion):
    """The Kalman filter of a linear-Gaussian state-space model: law (mean, covariance), move the
    inputs u_t (m,), evidence (y_t, u_t). Predict and update are the batch filter's compiled steps
    (Joseph-form update on the observed entries of y_t). The fixed-lag window keeps [u_t, y_t] of
    each step, and :meth:`smooth` runs the batch smoother (:func:`~modeshift._kernels.kalman.rts_smoother`,
    Durbin & Koopman's backward form, which inverts no state covariance) over the window's laws from
    r = 0, N = 0 after its last step. Cost O(n^3 + n^2 p) per step, and L such steps to smooth."""

    def __init__(self, params: dict[str, np.ndarray]):
        super().__init__(params["m0"])
        self.params = {key: canonical(value) for key, value in params.items()}  # the compiled steps' layout

    def first(self, move: np.ndarray) -> Law:
        return self.params["m0"], self.params["P0"]

    def predict(self, law: Law, move: np.ndarray) -> Law:
        mean, cov = np.empty_like(law[0]), np.empty_like(law[1])
        p = self.params
        predict_step(law[0], law[1], p["A"], p["B"], p["Q"], move, mean, cov, np.empty_like(law[1]))
        return mean, cov

    def update(self, predicted: Law, evidence: tuple[np.ndarray, np.ndarray]) -> tuple[Law, float]:
        (y, u), p = evidence, self.params
        mean, cov = np.empty_like(predicted[0]), np.empty_like(predicted[1])
        work = update_workspace(len(mean), len(y))
        ok, log_lik = update_step(y, u, p["C"], p["D"], p["R"], predicted[0], predicted[1], mean, cov, work)
        if not ok:
            raise ValueError("the innovation covariance C P C' + R of y_t is not positive definite")
        return (mean, cov), float(log_lik)

    def remember(
        self, move: np.ndarray, evidence: tuple[np.ndarray, np.ndarray], before: Law, predicted: Law, filtered: Law
    ) -> np.ndarray:
        """[u_t, y_t]: the batch smoother's backward pass reads the observations."""
        return np.concatenate([evidence[1], evidence[0]])

    def smooth(self, window: Window, diffuse: np.ndarray | None = None) -> list[Law] | None:
        p, m = self.params, self.params["B"].shape[1]
        kept = np.array([step[2] for step in window])
        moments = [np.array([law[i] for law, _, _ in window]) for i in (0, 1)]
        moments += [np.array([law[i] for _, law, _ in window]) for i in (0, 1)]
        means, covs, _ = rts_smoother(
            kept[:, m:],
            np.array([0, len(window)]),
            *moments,
            p["A"],
            p["C"],
            p["R"],
            kept[:, :m],
            p["D"],
            diffuse=diffuse,
        )
        return list(zip(means, covs))

    def marginals(self, law: Law) -> dict[str, np.ndarray]:
        return {"mean": law[0], "covariance": law[1]}


class DiffuseKalmanRecursion(KalmanRecursion):
    """The Kalman filter with an exact diffuse start (Durbin & Koopman 2012, sec. 5.2), step by step
    as the batch filter runs it (:mod:`modeshift._kernels.diffuse`).

    While some direction of the state has no prior the law is (mean, P_*, P_inf): the covariance
    is P_* + kappa P_inf, kappa -> infinity. An update takes the observed entries one at a time,
    each one that tells about a diffuse direction adding -(log 2 pi + log F_inf) / 2 to the
    diffuse log-likelihood; a prediction carries P_inf as A P_inf A'. Once a prediction leaves
    P_inf = 0 the law is (mean, covariance) and the steps are :class:`KalmanRecursion`'s. A
    diffuse step reports P_* as its covariance (the batch filter's convention). ``mask`` (n,)
    flags the diffuse components. A fixed-lag window keeps the diffuse steps from the stream's
    start while any of them is among the last L + 1, so that the batch smoother's exact diffuse
    backward steps run over them; no smoothed law exists before the diffuse part is identified.
    """

    def __init__(self, params: dict[str, np.ndarray], mask: np.ndarray):
        super().__init__(params)
        self.mask = mask

    def first(self, move: np.ndarray) -> Law:
        n = len(self.mask)
        mean, star, infinite = np.empty(n), np.empty((n, n)), np.empty((n, n))
        diffuse_start(self.params["m0"], self.params["P0"], self.mask, mean, star, infinite)
        return mean, star, infinite

    def predict(self, law: Law, move: np.ndarray) -> Law:
        if len(law) == 2:
            return super().predict(law, move)
        p = self.params
        mean, star, infinite = np.empty_like(law[0]), np.empty_like(law[1]), np.empty_like(law[2])
        diffuse_predict(law[0], law[1], law[2], p["A"], p["B"], p["Q"], move, mean, star, infinite)
        return (mean, star) if identified(infinite) else (mean, star, infinite)

    def update(self, predicted: Law, evidence: tuple[np.ndarray, np.ndarray]) -> tuple[Law, float]:
        if len(predicted) == 2:
            return super().update(predicted, evidence)
        (y, u), p = evidence, self.params
        mean, star, infinite = np.empty_like(predicted[0]), np.empty_like(predicted[1]), predicted[2].copy()
        work = diffuse_workspace(len(mean), len(y))
        ok, log_lik = diffuse_update(
            y, u, p["C"], p["D"], p["R"], predicted[0], predicted[1], infinite, mean, star, work
        )
        if not ok:
            raise ValueError("the innovation variance of an entry of y_t is not positive in a diffuse step")
        return (mean, star, infinite), float(log_lik)

    def trim(self, window: Window, lag: int) -> Window:
        if len(window) > lag + 1 and len(window[-(lag + 1)][0]) == 3:  # a diffuse step needed: keep the start
            return window
        return window[-(lag + 1) :]

    def smooth(self, window: Window, diffuse: np.ndarray | None = None) -> list[Law] | None:
        last = window[-1][0]
        if len(last) == 3 and not identified(last[2]):
            return None
        return super().smooth(window, self.mask if len(window[0][0]) == 3 else None)

    @staticmethod
    def proper(law: Law) -> Law:
        """A filtered law as (mean, covariance); ValueError while a direction has no prior yet."""
        if len(law) == 3 and not identified(law[2]):
            raise ValueError(
                "the filter state's diffuse components are not identified yet: no finite predictive law exists"
            )
        return law[:2]


class _KimParts(NamedTuple):
    """What Kim's backward step from step s + 1 to s reads of the filter alone
    (:meth:`SwitchingKalmanRecursion.parts`); a window entry keeps it, a saved state does not."""

    conditional: np.ndarray  # p(z_s = i | z_s+1 = j, y_0..s+1) (K, K)
    gains: np.ndarray  # J_ij = P_i F_ij' P_ij^-1 (K, K, n, n)


class SwitchingKalmanRecursion(Recursion):
    """An approximate filter of a switching linear dynamical system: one Gaussian per mode (Kim's
    filter, a generalised pseudo-Bayesian filter of order 2). Law (w (K,), means (K, n),
    covariances (K, n, n), pairs (K, K)): p(z_t = k | y_0..t), the moments of
    p(x_t | z_t = k, y_0..t) and the pair posterior p(z_t-1 = i, z_t = j | y_0..t) (its columns
    sum to w; the smoother's :meth:`back` weighs the pairs into step t by it). A smoothed law is
    (w, means, covariances).

    The exact filter is a mixture of K^(t+1) Gaussians. Each step runs the K^2 Kalman steps of
    the pairs (z_t-1 = i, z_t = j) (the pair's law from mode i's Gaussian; the switch
    probability of a recurrent model evaluated at mode i's mean) and collapses the K Gaussians
    of each mode j into one with the same mean and covariance. The log-likelihoods are those
    of this approximation (exact when K = 1, or for the first two steps). Cost O(K^2 n^3) per step.

    The law of a pair is mode j's flow, or, for a model with resets, at a switch i != j the
    switch's reset x_t = R_r x_t-1 + B_r u_t + r_r + N(0, Q_r): ``laws`` (K, K) indexes each
    pair's law among the L laws (the K flows, then the resets; without it, pair (i, j) follows
    flow j, a model without resets). ``params``: A, B, b, Q (L, ...) of the laws; ``laws``; C, D,
    d, R of the observation; m0, P0; and ``transitions(means, u)`` -> the (K, K) switch
    probabilities from each mode's mean.
    """

    def __init__(self, initial: np.ndarray, params: dict[str, Any]):
        super().__init__(initial)
        # the compiled steps' layout (C = a column slice of the observation weights would compile them again)
        self.params = {
            key: value if callable(value) or key == "laws" else canonical(value) for key, value in params.items()
        }
        k = len(initial)
        #: the law of each pair (i, j) (K, K): ``params["laws"]``, or flow j without it
        self.laws = self.params["laws"] if "laws" in self.params else np.tile(np.arange(k), (k, 1))

    @functools.cached_property
    def pair_matrices(self) -> np.ndarray:
        """The matrix of each pair's law (K, K, n, n), A[laws]: built once, not at every step."""
        return self.params["A"][self.laws]

    def first(self, move: np.ndarray) -> Law:
        k = len(self.initial)
        return self.initial, np.tile(self.params["m0"], (k, 1)), np.tile(self.params["P0"], (k, 1, 1))

    def predict(self, law: Law, move: np.ndarray) -> Law:
        """The K^2 predicted Gaussians (i -> j) and their prior weights, as (weights (K, K), means,
        covariances, the pairs' matrices F_ij (K, K, n, n), which the smoother's :meth:`back` reads)."""
        p, (weights, means, covs), laws = self.params, law[:3], self.laws
        k, n = means.shape
        pair_weights = weights[:, None] * p["transitions"](means, move)
        pair_means, pair_covs = np.empty((k, k, n)), np.empty((k, k, n, n))
        product = np.empty((n, n))
        for i in range(k):
            for j in range(k):
                pair = laws[i, j]
                A, B, Q = p["A"][pair], p["B"][pair], p["Q"][pair]
                predict_step(means[i], covs[i], A, B, Q, move, pair_means[i, j], pair_covs[i, j], product)
                pair_means[i, j] += p["b"][pair]
        return pair_weights, pair_means, pair_covs, self.pair_matrices

    def update(self, predicted: Law, evidence: tuple[np.ndarray, np.ndarray]) -> tuple[Law, float]:
        """Each pair's Kalman update on y_t, the pair posterior p(z_t-1 = i, z_t = j | y_0..t) ∝
        p(z_t-1 = i, z_t = j | y_<t) p(y_t | pair), and each mode j's pairs collapsed to one Gaussian."""
        (y, u), p = evidence, self.params
        weights, means, covs = predicted[:3]
        if weights.ndim == 1:  # the first step: one Gaussian per mode, all alike (copies: writable)
            k = len(weights)
            weights, means, covs = np.diag(weights), np.repeat(means[None], k, axis=0), np.repeat(covs[None], k, axis=0)
        k, n = means.shape[1:]
        work = update_workspace(n, len(y))
        # zeros, not garbage, in the pairs of weight 0: _collapse weighs them by 0, and 0 * NaN is NaN
        updated_means, updated_covs, log_liks = np.zeros_like(means), np.zeros_like(covs), np.full((k, k), -np.inf)
        for i in range(k):
            for j in range(k):
                if weights[i, j] > 0.0:
                    ok, log_liks[i, j] = update_step(
                        y,
                        u,
                        p["C"],
                        p["D"],
                        p["R"],
                        means[i, j],
                        covs[i, j],
                        updated_means[i, j],
                        updated_covs[i, j],
                        work,
                    )
                    if not ok:
                        raise ValueError("the innovation covariance C P C' + R of y_t is not positive definite")
        joint, log_lik = chain_update(weights, log_liks)
        return (*_collapse(joint, updated_means, updated_covs), joint), log_lik

    def forecast(self, law: Law, future_inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mode probabilities (h, K) and the means (h, p) and covariances (h, p, p) of y_t+1..t+h from
        a filtered law, each step predicted and collapsed to one Gaussian per mode (which keeps each
        mode's mean and covariance: exact moments of the approximate filter's law for a chain without
        recurrence). ``future_inputs`` (h, m)."""
        p = self.params
        out = []
        for u in future_inputs:
            law = _collapse(*self.predict(law, u)[:3])
            means = law[1] @ p["C"].T + p["D"] @ u + p["d"]
            covs = p["C"] @ law[2] @ p["C"].T + p["R"]
            mean = law[0] @ means
            spread = means - mean
            out.append((law[0], mean, np.einsum("k,kab->ab", law[0], covs + spread[:, :, None] * spread[:, None, :])))
        return tuple(np.array(part) for part in zip(*out))

    def remember(
        self, move: np.ndarray, evidence: tuple[np.ndarray, np.ndarray], before: Law, predicted: Law, filtered: Law
    ) -> _KimParts | tuple[()]:
        """What the backward step from this step to the one before reads of the filter alone
        (:meth:`parts`), built once, as the step enters the window, rather than at each of the L
        passes over it; () at a stream's first step (none before it)."""
        return self.parts(before, (filtered, predicted)) if before else ()

    def parts(self, filtered: Law, following: tuple[Law, Law]) -> _KimParts:
        """The parts of :meth:`back` from step s + 1 (``following``: its filtered and predicted laws)
        to step s (``filtered``) that the smoothed laws do not enter: p(z_s = i | z_s+1 = j, y_0..s+1),
        the pair posterior at s + 1 over its column sums, and the gains J_ij = P_i F_ij' P_ij^-1."""
        filtered_next, (_, _, pair_covs, jacobians) = following[:2]
        if len(filtered_next) != 4:
            raise ValueError(
                "this filter state's fixed-lag window keeps no pair posteriors (a state saved by an earlier "
                "modeshift): start the stream again"
            )
        modes, pairs = filtered_next[0], filtered_next[3]  # p(z_s+1 | y_0..s+1), p(z_s, z_s+1 | y_0..s+1)
        gains = np.swapaxes(np.linalg.solve(pair_covs, jacobians @ filtered[2][:, None]), -1, -2)
        return _KimParts(_ratio(pairs, modes), gains)

    def back(self, filtered: Law, following: Step, smoothed_next: Law) -> Law:
        """The backward step of GPB2 (Kim 1994): each pair (z_s = i, z_s+1 = j) takes the
        Rauch-Tung-Striebel step of mode i's filtered Gaussian through the pair's law (F_ij: its
        matrix, or its flow's Jacobian), gain J_ij = P_i F_ij' P_ij^-1 with P_ij the pair's
        predicted covariance; the pairs weigh p(z_s = i | z_s+1 = j, y_0..T) p(z_s+1 = j | y_0..T),
        the first taken as p(z_s = i | z_s+1 = j, y_0..s+1), the filter's pair posterior at s + 1
        (the last of its filtered law, kept from its update), and each mode i collapses its K pairs
        into one Gaussian. Kim's own weight, p(z_s = i | z_s+1 = j, y_0..s), ignores y_s+1, which
        tells the pairs apart where their laws differ (a reset moves x at a switch): on a model with
        resets, exact smoothed mode probabilities 0.003 where Kim's gave 0.387. The weight and the
        gains are the window entry's (:meth:`remember`), or, in a loaded state's, built again."""
        kept = following[2]
        conditional, gains = kept if isinstance(kept, _KimParts) else self.parts(filtered, following[:2])
        (_, means, covs), (_, pair_means, pair_covs) = filtered[:3], following[1][:3]
        next_weights, next_means, next_covs = smoothed_next[:3]
        joint = conditional * next_weights
        pair_smoothed_means = means[:, None] + np.einsum("ijab,ijb->ija", gains, next_means[None] - pair_means)
        pair_smoothed_covs = covs[:, None] + gains @ (next_covs[None] - pair_covs) @ np.swapaxes(gains, -1, -2)
        return _collapse(joint.T, np.swapaxes(pair_smoothed_means, 0, 1), np.swapaxes(pair_smoothed_covs, 0, 1))

    def marginals(self, law: Law) -> dict[str, np.ndarray]:
        weights, means, covs = law[:3]
        mean = weights @ means
        spread = means - mean
        return {
            "probabilities": weights,
            "mean": mean,
            "covariance": np.einsum("k,kab->ab", weights, covs + spread[:, :, None] * spread[:, None, :]),
        }


class ExtendedSwitchingKalmanRecursion(SwitchingKalmanRecursion):
    """Kim's filter (:class:`SwitchingKalmanRecursion`) for nonlinear flows x_t = f_k(x_t-1, u_t) +
    N(0, Q_k): each pair (z_t-1 = i, z_t = j) takes an extended Kalman step, flow j linearised at
    mode i's filtered mean m_i, x_t ~ N(f_j(m_i, u_t), F_ij P_i F_ij' + Q_j) with F_ij = df_j/dx at
    m_i; the update (the observation is linear) and the collapse are Kim's. It is exact where the
    flows are linear (then it is Kim's filter) and otherwise approximates f_j to first order over
    the spread of P_i. A pair whose law is a reset (``laws``, as for :class:`SwitchingKalmanRecursion`)
    takes the reset's affine step, exact. ``params`` as for :class:`SwitchingKalmanRecursion`, with
    ``flow(means, u)`` -> the predicted means (K, K, n) and Jacobians (K, K, n, n) of each pair under
    the flows, and A, B, b only of the resets (law K + r is their row r; none without resets).
    """

    def predict(self, law: Law, move: np.ndarray) -> Law:
        p, (weights, means, covs) = self.params, law[:3]
        pair_weights = weights[:, None] * p["transitions"](means, move)
        pair_means, jacobians = p["flow"](means, move)
        sources, targets, resets = self.resets
        if len(sources):
            matrices = p["A"][resets]
            jacobians = jacobians.copy()  # not the caller's arrays
            jacobians[sources, targets] = matrices
            pair_means = pair_means.copy()
            pair_means[sources, targets] = np.einsum("rab,rb->ra", matrices, means[sources]) + (
                p["B"][resets] @ move + p["b"][resets]
            )
        pair_covs = jacobians @ covs[:, None] @ np.swapaxes(jacobians, -1, -2) + self.pair_covariances
        symmetric = 0.5 * (pair_covs + np.swapaxes(pair_covs, -1, -2))
        return pair_weights, np.ascontiguousarray(pair_means), np.ascontiguousarray(symmetric), jacobians

    @functools.cached_property
    def resets(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The pairs (i, j) that reset and the row of each one's reset in A, B, b (law K + r is row r)."""
        k = len(self.initial)
        sources, targets = np.nonzero(self.laws >= k)
        return sources, targets, self.laws[sources, targets] - k

    @functools.cached_property
    def pair_covariances(self) -> np.ndarray:
        """The noise covariance of each pair's law (K, K, n, n), Q[laws]: built once."""
        return self.params["Q"][self.laws]


def _collapse(joint: np.ndarray, means: np.ndarray, covs: np.ndarray) -> Law:
    """One Gaussian per mode j from the pairs (i, j) of weights (K, K), means and covariances: the
    mode's probability sum_i joint_ij and the mixture's mean and covariance."""
    mode = joint.sum(axis=0)
    share = _ratio(joint, mode)
    collapsed = np.einsum("ij,ijn->jn", share, means)
    spread = means - collapsed[None]
    return mode, collapsed, np.einsum("ij,ijab->jab", share, covs + spread[..., :, None] * spread[..., None, :])


def chain_update(predicted: np.ndarray, log_likelihoods: np.ndarray) -> tuple[np.ndarray, float]:
    """p(z_t | y_0..t) ∝ p(z_t | y_<t) p(y_t | z_t) and log p(y_t | y_<t), scaled by the largest
    log-likelihood so that nothing underflows; ValueError if no mode can emit y_t."""
    shift = log_likelihoods.max()
    if not np.isfinite(shift):
        raise ValueError(f"y_t has log-likelihood {shift} under every mode: no mode can emit it")
    joint = predicted * np.exp(log_likelihoods - shift)
    total = joint.sum()
    if not total > 0.0:
        raise ValueError("y_t is impossible given the past: no mode that can emit it can be reached")
    return joint / total, float(np.log(total) + shift)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator (broadcast to the numerator's shape), 0 where the denominator is 0
    (a state that cannot be reached)."""
    out = np.zeros_like(numerator)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def checked_state(state: Any) -> FilterState:
    """``state``, if it is a :class:`FilterState` (a stream's saved state), else a clear ValueError."""
    if not isinstance(state, FilterState):
        raise ValueError(f"state must be a FilterState from filter_init or filter_step, got {type(state).__name__}")
    return state


class StreamingFilters:
    """Mixin: ``filter_init``, ``filter_step``, ``filter_stream`` from three hooks of a model.

    ``_stream_recursion()`` -> :class:`Recursion`; ``_stream_evidence(state, y, inputs)`` ->
    (evidence, move into this step or None for the first, new history) after checking y_t
    (``_stream_constants()``: more keyword arguments of it, built once per block of rows);
    ``_stream_history()`` -> the empty history. ``filter_forecast(state, horizon)`` gives predictions.
    """

    def filter_init(self, *, lag: int = 0) -> FilterState:
        """The state of a filter that has seen nothing; ``lag`` L > 0 also smooths with a delay of L steps."""
        if int(lag) != lag or lag < 0:
            raise ValueError(f"lag must be a non-negative integer, got {lag!r}")
        self._stream_recursion()  # checks the model is fitted
        return FilterState(history=self._stream_history(), lag=int(lag))

    def filter_step(self, state: FilterState, y: Any, inputs: Any = None) -> tuple[FilterState, StepOutput]:
        """Condition the filter on one more observation ``y`` (a row; NaN marks a missing entry) and,
        for a model with inputs, its ``inputs`` row. Returns the new state and a :class:`StepOutput`."""
        return self._step(self._stream_recursion(), checked_state(state), y, inputs, {})

    def _step(
        self, recursion: Recursion, state: FilterState, y: Any, inputs: Any, constants: dict[str, Any]
    ) -> tuple[FilterState, StepOutput]:
        """:meth:`filter_step` given the stream's ``recursion`` and :meth:`_stream_constants`, which a
        stream builds once (``{}``: each step builds what it needs)."""
        return self._advance(recursion, state, *self._stream_evidence(state, y, inputs, **constants))

    def _advance(
        self, recursion: Recursion, state: FilterState, evidence: Any, move: np.ndarray, history: np.ndarray
    ) -> tuple[FilterState, StepOutput]:
        """One step of the filter on checked evidence."""
        if evidence is None:  # a step conditioned on (an autoregression's first lags): no law yet
            new = FilterState(state.step + 1, state.filtered, history, state.lag, state.window)
            return new, StepOutput(state.step, 0.0, new, self)
        predicted = recursion.first(move) if not state.filtered else recursion.predict(state.filtered, move)
        filtered, log_lik = recursion.update(predicted, evidence)
        window, lagged = state.window, None
        if state.lag:
            kept = recursion.remember(move, evidence, state.filtered, predicted, filtered)
            window = recursion.trim((*window, (filtered, predicted, kept)), state.lag)
            smoothed = recursion.smooth(window) if len(window) > state.lag else None
            if smoothed is not None:
                lagged = self._present(recursion, smoothed[-(state.lag + 1)])
        new = FilterState(state.step + 1, filtered, history, state.lag, window)
        return new, StepOutput(state.step, log_lik, new, self, lagged=lagged, **recursion.marginals(filtered))

    def filter_stream(
        self,
        observations: Iterable[Any],
        inputs: Iterable[Any] | None = None,
        *,
        lag: int = 0,
        state: FilterState | None = None,
        block: int = 1024,
    ) -> Iterator[StepOutput]:
        """Filter an iterable of observations as a generator of :class:`StepOutput`; ``inputs`` an
        iterable of input rows alongside; ``state`` resumes a stream from a saved :class:`FilterState`
        (then ``lag`` is the state's). Any iterable is read one row at a time (a live feed works);
        an array, all there already, may be checked and its evidence computed ``block`` rows at a time
        (an error in a row is then raised before the earlier rows of its block are yielded)."""
        state = self.filter_init(lag=lag) if state is None else checked_state(state)
        recursion = self._stream_recursion()
        if isinstance(observations, np.ndarray) and (inputs is None or isinstance(inputs, np.ndarray)):
            for start in range(0, len(observations), block):
                rows = observations[start : start + block]
                extra = None if inputs is None else inputs[start : start + block]
                state = yield from self._stream_block(recursion, state, rows, extra)
            return
        extra = iter(inputs) if inputs is not None else None
        constants = self._stream_constants()  # once per stream, not per row
        for y in observations:
            state, out = self._step(recursion, state, y, None if extra is None else next(extra), constants)
            yield out

    def _stream_block(
        self, recursion: Recursion, state: FilterState, rows: np.ndarray, inputs: np.ndarray | None
    ) -> Generator[StepOutput, None, FilterState]:
        """The output of each row of a block, in order (models may run a block at once); returns the
        state after the block."""
        for evidence, move, history in self._stream_evidences(state, rows, inputs):
            state, out = self._advance(recursion, state, evidence, move, history)
            yield out
        return state

    def _stream_evidences(self, state: FilterState, rows: np.ndarray, inputs: np.ndarray | None) -> list[tuple]:
        """``_stream_evidence`` of a block of rows, in order, given the block's :meth:`_stream_constants`
        (models override it to evaluate a block at once)."""
        out, constants = [], self._stream_constants()
        for i, y in enumerate(rows):
            extra = None if inputs is None else inputs[i]
            evidence, move, history = self._stream_evidence(state, y, extra, **constants)
            out.append((evidence, move, history))
            state = FilterState(state.step + 1, state.filtered, history, state.lag, state.window)
        return out

    def _stream_constants(self) -> dict[str, Any]:
        """Keyword arguments of ``_stream_evidence`` that depend on the parameters only, built once
        per block of rows rather than at every step (none by default)."""
        return {}

    def filter_smoothed(self, state: FilterState) -> list[Any]:
        """The smoothed laws of the steps in a fixed-lag state's window given everything seen, oldest
        first: at the end of a stream, the last L + 1 steps (all of them when L covers the stream)."""
        if not state.lag:
            raise ValueError("this filter state keeps no window: start it with filter_init(lag=L), L > 0")
        recursion = self._stream_recursion()
        smoothed = recursion.smooth(state.window)
        if smoothed is None:
            raise ValueError("the filter state's diffuse components are not identified yet: no smoothed law exists")
        return [self._present(recursion, law) for law in smoothed]

    @staticmethod
    def _present(recursion: Recursion, law: Law) -> Any:
        """A smoothed law as ``out.lagged`` gives it: probabilities, or (mean, covariance), or for a
        law with both (a switching model's) (mean, covariance, probabilities)."""
        marginals = recursion.marginals(law)
        if "mean" not in marginals:
            return marginals["probabilities"]
        moments = (marginals["mean"], marginals["covariance"])
        return (*moments, marginals["probabilities"]) if "probabilities" in marginals else moments

    def _stream_history(self) -> np.ndarray:
        return np.zeros((0, 0))


class TimedStreaming(StreamingFilters):
    """:class:`StreamingFilters` for observations at irregular times (the continuous-time models):
    ``filter_step(state, y, u, time=t)`` and ``filter_stream(rows, inputs, times=...)``, by default
    one time unit apart. The state's ``history`` keeps the last time in its column 0
    (:func:`next_time`); the hook ``_stream_evidence(state, y, inputs, time, **constants)`` takes the
    time too, and every path passes it :meth:`_stream_constants` (which a model may keep between
    ``filter_step`` calls: :func:`per_parameters`)."""

    streams_at_times = True  # :class:`~modeshift.models.capabilities.StreamingAtTimes`

    def filter_step(
        self, state: FilterState, y: Any, inputs: Any = None, *, time: float | None = None
    ) -> tuple[FilterState, StepOutput]:
        """Condition the filter on one more observation ``y`` made at ``time`` (default: one time
        unit after the previous observation; 0 for the first), with the model's ``inputs``, if any."""
        state, recursion = checked_state(state), self._stream_recursion()  # the recursion checks the model is fitted
        evidence = self._stream_evidence(state, y, inputs, time, **self._stream_constants())
        return self._advance(recursion, state, *evidence)

    def filter_stream(
        self,
        observations: Iterable[Any],
        inputs: Iterable[Any] | None = None,
        *,
        times: Iterable[float] | None = None,
        lag: int = 0,
        state: FilterState | None = None,
        block: int = 1024,
    ) -> Iterator[StepOutput]:
        """As :meth:`StreamingFilters.filter_stream`, with the observations' ``times`` alongside
        (default: one time unit apart)."""
        if times is None:
            return super().filter_stream(observations, inputs, lag=lag, state=state, block=block)
        return self._timed_stream(observations, inputs, times, self.filter_init(lag=lag) if state is None else state)

    def _timed_stream(
        self, observations: Iterable[Any], inputs: Iterable[Any] | None, times: Iterable[float], state: FilterState
    ) -> Iterator[StepOutput]:
        recursion, state = self._stream_recursion(), checked_state(state)  # one filter for the stream
        constants = self._stream_constants()
        rows = zip(observations, itertools.repeat(None) if inputs is None else inputs, times, strict=inputs is not None)
        for y, u, time in rows:
            state, out = self._advance(recursion, state, *self._stream_evidence(state, y, u, time, **constants))
            yield out


_KEPT: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()  # model -> what it keeps


def per_parameters(model: Any, names: Iterable[str], build: Callable[[], T]) -> T:
    """``build()``, kept for ``model`` until one of its parameters ``names`` changes (the names, which
    follow the hyper-parameters that shape the model, and the values, so a parameter changed in place
    counts): what every step of a stream needs that depends on the parameters only is then built
    once for a loop of ``filter_step`` calls, not once per row. ``build`` (a bound method, kept
    under its name) must read nothing of the model that can change while those parameters' names,
    shapes and values stay equal. Kept beside the model, not in it, so that a copy of the model
    (which may change its own parameters) neither shares nor inherits it."""
    key = [(name, _fingerprint(model.__dict__.get(name))) for name in names]
    kept = _KEPT.get(model)
    if kept is None:
        kept = _KEPT[model] = {}
    name = build.__name__
    if name not in kept or kept[name][0] != key:
        kept[name] = (key, build())
    return kept[name][1]


def _fingerprint(value: Any) -> tuple[Any, ...] | None:
    """A parameter's value as a key: its shape, type and bytes (None if unset)."""
    if value is None:
        return None
    array = np.asarray(value)
    return array.shape, array.dtype.str, array.tobytes()


def next_time(state: FilterState, time: Any) -> tuple[float, float | None]:
    """A timed stream's next observation time and the gap to it from the last one (column 0 of
    ``state.history``; the gap None at the first observation): ``time`` checked, or by default one
    time unit after the last (0 for the first). ValueError naming the step for a time that is not
    a finite number after the last."""
    last = float(state.history[-1, 0]) if len(state.history) else None
    if time is None:
        now = 0.0 if last is None else last + 1.0
    else:
        try:
            now = float(time)
        except (TypeError, ValueError) as error:
            raise ValueError(f"the time of step {state.step} must be a number, got {time!r}") from error
        if not np.isfinite(now) or (last is not None and not now > last):
            after = "" if last is None else f" after the last observation's ({last})"
            raise ValueError(f"the time of step {state.step} must be a finite number{after}, got {time!r}")
    return now, None if last is None else now - last


def check_row(y: Any, n_features: int | None, what: str = "y_t") -> np.ndarray:
    """One observation as a float (D,) row; ValueError naming the problem (shape, infinite values)."""
    try:
        row = np.asarray(y, dtype=float)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{what} must be numbers, got {y!r}") from error
    row = row.reshape(1) if row.ndim == 0 else row
    if row.ndim != 1:
        raise ValueError(f"{what} must be one observation (a number or a 1-D row), got shape {row.shape}")
    if n_features is not None and row.shape[0] != n_features:
        raise ValueError(f"{what} has {row.shape[0]} entries, the model expects {n_features}")
    if np.isinf(row).any():
        raise ValueError(f"{what} has an infinite entry at {int(np.flatnonzero(np.isinf(row))[0])}: {row}")
    return canonical(row)  # a row of a read-only or Fortran-ordered array would compile the steps again


def check_input_row(inputs: Any, input_dim: int, model: str) -> np.ndarray:
    """One step's inputs u_t as a float (input_dim,) row, empty for a model without inputs;
    ValueError naming the problem (as :func:`check_row`, a missing entry, inputs given to ``model``
    that has none)."""
    if not input_dim:
        if inputs is not None:
            raise ValueError(f"inputs were given but {model} has input_dim=0")
        return np.zeros(0)
    row = check_row(inputs, input_dim, "inputs")
    if np.isnan(row).any():
        raise ValueError(f"inputs has a missing entry (NaN): {row}")
    return row


def lagged_values(
    history: np.ndarray, y: Any, order: int, n_features: int | None, model: str
) -> tuple[np.ndarray, np.ndarray]:
    """An autoregression's row [y_t, y_t-1, ..., y_t-order, 1] (zeros for lags not seen yet, as
    :func:`~modeshift.emissions.autoregressive.with_lags` at a sequence's start) and the new history,
    the last ``order`` observations (order, D)."""
    row = check_row(y, n_features)
    if np.isnan(row).any():
        raise ValueError(f"y_t = {row} has a missing entry (NaN); {model} cannot take missing values")
    values = np.vstack([history.reshape(-1, len(row)), row[None]])
    return with_lags(values, np.array([0, len(values)]), order)[-1], values[-order:]
