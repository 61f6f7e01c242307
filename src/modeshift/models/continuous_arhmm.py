"""Continuous-time autoregressive HMM: linear stochastic flows that switch by a rate matrix, seen at any times.

Between the observation times t_n-1 and t_n (gap Δ_n) mode z_n = k moves the series by the
linear stochastic differential equation dy = (A_k y + b_k) dt + Σ_k^1/2 dW (an
Ornstein-Uhlenbeck flow), whose solution over Δ is Gaussian:

    y_n | y_n-1, z_n = k  ~  N(Φ_k(Δ_n) y_n-1 + c_k(Δ_n), S_k(Δ_n)),
    Φ_k(Δ) = expm(A_k Δ),   c_k(Δ) = ∫_0^Δ expm(A_k s) b_k ds,
    S_k(Δ) = ∫_0^Δ expm(A_k s) Σ_k expm(A_k' s) ds,

c from the exponential of [[A, b], [0, 0]] Δ and S from that of [[-A, Σ], [0, A']] Δ (Van
Loan 1978, "Computing integrals involving the matrix exponential"). The modes are a Markov
jump process with rate matrix Q (:mod:`modeshift.models.jump_process`):
p(z_n = j | z_n-1 = i) = expm(Q Δ_n)[i, j], with z_n the mode at t_n, held over the gap
before it. The first observation of each sequence is conditioned on, as in the
:class:`~modeshift.models.arhmm.ARHMM`. With Δ = 1 everywhere this *is* the ARHMM of order 1
with ``coefs_`` expm(A_k), ``intercepts_`` c_k(1), ``covars_`` S_k(1) and ``transmat_``
expm(Q): the same log-likelihood to round-off.

EM. The E-step is forward-backward with one transition matrix per step. The M-step:

- ``startprob_``: the posteriors at the sequences' starts;
- Q: one step of the EM for snapshots of a jump process (Hobolth & Jensen 2011) with the
  pair posteriors p(z_n-1 = i, z_n = j | y) as soft endpoint counts
  (:func:`~modeshift.models.jump_process.endpoint_statistics`): the expected jump counts and
  times at risk, then q_ij = E[N_ij] / E[R_i];
- the flows have no closed form (Φ, c, S are nonlinear in A, b, Σ), so the step is a
  *generalised* EM step: a weighted Euler–Maruyama regression,
  y_n - y_n-1 ≈ (A y_n-1 + b) Δ_n + N(0, Σ Δ_n), exact to first order in Δ and closed form,
  proposes (A, b, Σ); then a few BFGS iterations on the exact expected log-likelihood,
  from the better of the proposal and the current values, with finite-difference gradients
  (a mode has D^2 + D + D(D + 1)/2 parameters, and one batched matrix exponential per distinct
  gap evaluates them all). The result is kept only where it raises the exact objective, so
  the log-likelihood never decreases. The Euler regression alone would fit a different
  likelihood (biased for long gaps) and would not reduce to the discrete model; the Fréchet
  derivative of expm would give analytic gradients, worth it only for larger D.

>>> import numpy as np
>>> from modeshift import ContinuousARHMM
>>> from modeshift.datasets.simulators import thermostat
>>> from modeshift.metrics import mode_accuracy
>>> sim = thermostat(1000, random_state=0, times="exponential", observation_sd=0.0)  # the state itself
>>> model = ContinuousARHMM(n_states=2, random_state=0).fit(sim.observations, times=sim.times)
>>> mode_accuracy(sim.modes, model.predict(sim.observations, times=sim.times)) > 0.9
True
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize

from modeshift import _kernels as kernels
from modeshift.data import Sequences, as_sequences, check_array, check_covariances, check_probabilities
from modeshift.dynamics import ensure_positive_definite, jump_linear_moments, known_state_moments
from modeshift.models import em
from modeshift.models.arhmm import ARHMM
from modeshift.models.base import Forecast, Model, NotFittedError, mode_segments
from modeshift.models.jump_process import _generator, check_rate_matrix, endpoint_statistics, expm_metzler
from modeshift.models.params import Integer, Number
from modeshift.models.slds_inference import independent_pairs
from modeshift.models.streaming import (
    FilterState,
    Recursion,
    TimedStreaming,
    check_input_row,
    check_row,
    next_time,
    per_parameters,
)
from modeshift.transitions import normalise_rows

__all__ = [
    "ContinuousARHMM",
    "FlowDensities",
    "FlowLaw",
    "Flows",
    "GapGroups",
    "GapMoments",
    "euler_regression",
    "expected_flow_log_likelihood",
    "expm_stack",
    "flow_moments",
    "flow_rows",
    "future_gaps",
    "point_moments",
    "polish",
    "rate_step",
    "rates_of",
    "recent_gaps",
    "sample_times",
]

PerStep = np.ndarray | list[np.ndarray]
_POLISH_ITERATIONS = 10  # quasi-Newton (BFGS) iterations per mode and M-step: a generalised EM step need not maximise
_PARAMETERS = ("startprob_", "rate_matrix_", "drift_matrices_", "drift_offsets_", "diffusion_covariances_")
_FIT_RESULTS = ("history_", "converged_", "n_iter_")
_MAX_CONDITION = 1e6  # of A's eigenvectors, beyond which the flow's law comes from block exponentials
_RECENT_GAPS = 16  # distinct gaps whose laws a stream keeps


def recent_gaps(law: Callable[[float], Any]) -> Callable[[float], Any]:
    """``law`` of a gap, kept for the last _RECENT_GAPS distinct gaps (least recently used out): a
    regular stream computes it once, an irregular one once per new gap, in bounded memory."""
    return functools.lru_cache(maxsize=_RECENT_GAPS)(law)


def expm_stack(matrices: np.ndarray) -> np.ndarray:
    """expm of each matrix in a stack (G, d, d), by scaling and squaring: each matrix scaled by
    2^-s to infinity norm <= 1/2, an 18-term Taylor series (error below 2^-18 / 18!, under double
    precision), then s squarings; the stack moves together. (scipy.linalg.expm loops over a
    stack in Python, a thousand times slower for the thousands of small matrices of one fit.)"""
    eye = np.eye(matrices.shape[-1])
    norms = np.abs(matrices).sum(axis=-1).max(axis=-1)
    squarings = np.maximum(np.ceil(np.log2(np.maximum(norms, np.finfo(float).tiny))) + 1, 0).astype(np.int64)
    scaled = matrices * np.ldexp(1.0, -squarings)[:, None, None]
    result = eye + scaled / 18
    for k in range(17, 0, -1):
        result = eye + scaled @ result / k
    for k in range(squarings.max(initial=0)):
        more = squarings > k
        result[more] = result[more] @ result[more]
    return result


def flow_moments(
    drift: np.ndarray, offset: np.ndarray, diffusion: np.ndarray, gaps: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The transition law of dy = (A y + b) dt + Σ^1/2 dW over each gap: (Φ, c, S), shapes
    (G, D, D), (G, D), (G, D, D), for ``gaps`` (G,).

    ``offset`` may also be the columns (D, q) of q inputs held constant over each gap (a
    zero-order hold: dy = (A y + [G, b] [u, 1]) dt + ...); c is then (G, D, q), each column
    ∫_0^Δ e^As ds times its own, so that y_n = Φ y_n-1 + c [u_n, 1] + noise.

    With A = V Λ V^-1 diagonalisable (and V well conditioned) the integrals are elementwise:
    Φ = V e^ΛΔ V^-1, c = V φ(Λ) V^-1 b and S = V [Σ~_ij φ(λ_i + conj λ_j)] V^H with
    Σ~ = V^-1 Σ V^-H and φ(x) = (e^xΔ - 1) / x (= Δ at x = 0). Otherwise (a defective A, such as
    a double integrator's) Van Loan's block exponentials, by :func:`expm_stack`. (:class:`FlowLaw`
    keeps what does not depend on the gaps, for a flow wanted over gaps given one at a time.)"""
    return FlowLaw.of(drift, offset, diffusion).over(gaps)


@dataclass(frozen=True)
class FlowLaw:
    """A linear flow ready for :func:`flow_moments` over any gaps: the parts of its law that do not
    depend on the gap, computed once. ``eigen`` holds, for a well-conditioned eigenbasis A = V Λ V^-1,
    (λ (D,), V, V^-1, V^-1 b, V^-1 Σ V^-H, λ_i + conj λ_j); None for Van Loan's block exponentials
    of ``drift``, ``offset``, ``diffusion``."""

    drift: np.ndarray
    offset: np.ndarray
    diffusion: np.ndarray
    eigen: tuple[np.ndarray, ...] | None

    @classmethod
    def of(cls, drift: np.ndarray, offset: np.ndarray, diffusion: np.ndarray) -> FlowLaw:
        """The flow of ``drift`` A (D, D), ``offset`` b (D,) or input columns (D, q), ``diffusion`` Σ."""
        eigenvalues, V = np.linalg.eig(drift)
        if np.linalg.cond(V) > _MAX_CONDITION:
            return cls(drift, offset, diffusion, None)
        Vi = np.linalg.inv(V)
        columns = Vi @ np.reshape(offset, (len(drift), -1))
        sums = eigenvalues[:, None] + eigenvalues.conj()[None, :]
        return cls(drift, offset, diffusion, (eigenvalues, V, Vi, columns, Vi @ diffusion @ Vi.conj().T, sums))

    def over(self, gaps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(Φ, c, S) over each of ``gaps`` (G,), as :func:`flow_moments`."""
        gaps = np.asarray(gaps, dtype=float)
        if self.eigen is None:
            return _van_loan(self.drift, self.offset, self.diffusion, gaps)
        eigenvalues, V, Vi, columns, diffusion, sums = self.eigen
        t = gaps[:, None]
        growth = np.exp(eigenvalues * t)  # (G, D)
        Phi = np.einsum("ij,gj,jk->gik", V, growth, Vi).real
        c = np.einsum("ij,gj,jq->giq", V, _phi(eigenvalues, t), columns).real.reshape(len(gaps), *np.shape(self.offset))
        inner = diffusion[None] * _phi(sums[None], gaps[:, None, None])
        S = np.einsum("ij,gjk,lk->gil", V, inner, V.conj()).real
        return Phi, c, 0.5 * (S + S.transpose(0, 2, 1))


@dataclass(frozen=True)
class Flows:
    """The K flows of a model's modes (:class:`FlowLaw` each): their laws over gaps, stacked by mode."""

    laws: tuple[FlowLaw, ...]

    @classmethod
    def of(cls, drifts: np.ndarray, offsets: np.ndarray, diffusions: np.ndarray) -> Flows:
        """The flows of A_k (K, D, D), b_k (K, D) or input columns (K, D, q), Σ_k (K, D, D)."""
        return cls(tuple(FlowLaw.of(*flow) for flow in zip(drifts, offsets, diffusions)))

    def over(self, gaps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(Φ, c, S) of every mode over each of ``gaps`` (G,): (G, K, D, D), (G, K, D) (or
        (G, K, D, q)), (G, K, D, D)."""
        return tuple(np.stack(part, axis=1) for part in zip(*(law.over(gaps) for law in self.laws)))


def _phi(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(e^(x t) - 1) / x, = t where x = 0."""
    zero = x == 0
    return np.where(zero, t, np.expm1(x * t) / np.where(zero, 1.0, x))


def _van_loan(
    drift: np.ndarray, offset: np.ndarray, diffusion: np.ndarray, gaps: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`flow_moments` by the exponentials of [[A, b], [0, 0]] Δ and [[-A, Σ], [0, A']] Δ
    (b the offset, or the columns (D, q) of the inputs held over the gap)."""
    d, columns = len(drift), np.reshape(offset, (len(drift), -1))
    q = columns.shape[1]
    gaps = gaps[:, None, None]
    affine = np.zeros((len(gaps), d + q, d + q))
    affine[:, :d, :d], affine[:, :d, d:] = drift, columns
    affine = expm_stack(affine * gaps)
    block = np.zeros((len(gaps), 2 * d, 2 * d))
    block[:, :d, :d], block[:, :d, d:], block[:, d:, d:] = -drift, diffusion, drift.T
    block = expm_stack(block * gaps)
    Phi = affine[:, :d, :d]
    S = Phi @ block[:, :d, d:]
    return Phi, affine[:, :d, d:].reshape(len(gaps), *np.shape(offset)), 0.5 * (S + S.transpose(0, 2, 1))


class ContinuousARHMM(TimedStreaming, Model):
    """An order-1 autoregressive HMM in continuous time, for observations at irregular times.

    See the module docstring for the model and its EM. ``times=`` (one array per sequence, or
    one for all steps, strictly increasing) go to ``fit`` and to every method that takes data;
    without them the steps are one time unit apart. It streams exactly
    (:class:`~modeshift.models.streaming.TimedStreaming`): ``filter_step(state, y, time=t)``,
    ``filter_stream(rows, times=...)``, each step's switches and flows over its own gap.

    Parameters
    ----------
    n_states : int
        Number of modes K.
    n_iter, tol, n_restarts, random_state, warm_start, verbose, callback
        As for every EM fit (:mod:`modeshift.models.em`).
    reg_covar : float
        Added to the diagonal of each diffusion covariance Σ_k at the Euler proposal.

    Attributes
    ----------
    drift_matrices_ (K, D, D), drift_offsets_ (K, D), diffusion_covariances_ (K, D, D)
        A_k, b_k, Σ_k of each mode's flow, per unit of time.
    rate_matrix_ (K, K) : Q, rows summing to 0.
    startprob_ (K,) : p(z_0).
    history_, converged_, n_iter_ : the record of the fit.
    """

    _test_params = {"n_iter": 5}
    _constraints = {"n_states": Integer(1), "reg_covar": Number(0)}  # no "auto" (yet)
    _file_arrays = dict.fromkeys(_PARAMETERS, "finite")

    def __init__(
        self,
        n_states: int = 2,
        n_iter: int = 200,
        tol: float = 1e-4,
        n_restarts: int = 1,
        random_state: int | np.random.Generator | None = None,
        reg_covar: float = 1e-6,
        warm_start: bool = False,
        verbose: bool = False,
        callback: Callable[[int, float], Any] | None = None,
    ):
        self.n_states = n_states
        self.n_iter = n_iter
        self.tol = tol
        self.n_restarts = n_restarts
        self.random_state = random_state
        self.reg_covar = reg_covar
        self.warm_start = warm_start
        self.verbose = verbose
        self.callback = callback

    # ------------------------------------------------------------------------ data
    def _check_fitted(self) -> None:
        missing = [name for name in _PARAMETERS if self.__dict__.get(name) is None]
        if missing:
            raise NotFittedError(f"this ContinuousARHMM has no {', '.join(missing)}: call fit, or set them by hand")

    def _sequences(self, X: Any, lengths: Sequence[int] | None, times: Any, **columns: Any) -> Sequences:
        seqs = as_sequences(X, lengths, times=times, **columns)
        drift = self.__dict__.get("drift_matrices_")
        seqs = seqs.require(
            allow_missing=False,
            min_length=2,
            n_features=None if drift is None else np.shape(drift)[1],
            model="a ContinuousARHMM",
        )
        if seqs.times is None:
            return seqs.with_times([np.arange(length, dtype=float) for length in seqs.lengths])
        return seqs.require_times("a ContinuousARHMM")

    @staticmethod
    def _gaps(seqs: Sequences) -> np.ndarray:
        """Δ_n at every linked step (n_steps,), 0 at the sequences' starts."""
        gaps = np.zeros(seqs.n_steps)
        rows = seqs.linked_rows
        gaps[rows] = seqs.times[rows] - seqs.times[rows - 1]
        return gaps

    # ------------------------------------------------------------------- the model
    def _transitions(self, gaps: np.ndarray) -> np.ndarray:
        """expm(Q Δ_n) at every step (n_steps, K, K) (the identity at the sequences' starts)."""
        distinct, group = np.unique(gaps, return_inverse=True)
        return expm_metzler(np.asarray(self.rate_matrix_, dtype=float) * distinct[:, None, None])[group]

    def _log_likelihoods(self, seqs: Sequences, gaps: np.ndarray) -> np.ndarray:
        """log p(y_n | y_n-1, z_n = k) (n_steps, K); 0 at the sequences' starts (conditioned on)."""
        out = np.zeros((seqs.n_steps, self._k))
        rows = seqs.linked_rows
        out[rows] = self._flow_evidence(seqs.values[rows - 1], seqs.values[rows], gaps[rows])
        return out

    def _flow_laws(self) -> Flows:
        """Each mode's flow (A_k, b_k, Σ_k)."""
        return Flows.of(self.drift_matrices_, self.drift_offsets_, self.diffusion_covariances_)

    def _flow_evidence(self, before: np.ndarray, after: np.ndarray, gaps: np.ndarray) -> np.ndarray:
        """log p(after_n | before_n, z_n = k) over the gaps (n,), each mode's flow: (n, K), the laws
        shared by equal gaps."""
        distinct, group = np.unique(gaps, return_inverse=True)
        return FlowDensities.of(self._flow_laws(), distinct).log_pdf(before, after, group)

    def _forward_backward(self, seqs: Sequences) -> tuple[float, np.ndarray, np.ndarray]:
        gaps = self._gaps(seqs)
        log_lik, posteriors, pairs = kernels.forward_backward_varying(
            self._log_likelihoods(seqs, gaps), seqs.offsets, np.asarray(self.startprob_), self._transitions(gaps)
        )
        return float(log_lik.sum()), posteriors, pairs

    # ------------------------------------------------------------------ inference
    def score(self, X: Any, lengths: Sequence[int] | None = None, *, times: Any = None) -> float:
        """log p(y_1.. | y_0): the exact log-likelihood, each sequence's first step conditioned on."""
        self._check_fitted()
        return self._forward_backward(self._sequences(X, lengths, times))[0]

    def predict_proba(self, X: Any, lengths: Sequence[int] | None = None, *, times: Any = None) -> PerStep:
        """p(z_n = k | y): smoothed mode probabilities (n_steps, K)."""
        self._check_fitted()
        seqs = self._sequences(X, lengths, times)
        return seqs.restore(self._forward_backward(seqs)[1])

    def filter_proba(self, X: Any, lengths: Sequence[int] | None = None, *, times: Any = None) -> PerStep:
        """p(z_n = k | y_0..n): filtered mode probabilities (n_steps, K)."""
        self._check_fitted()
        seqs = self._sequences(X, lengths, times)
        gaps = self._gaps(seqs)
        filtered, _ = kernels.forward_filter(
            self._log_likelihoods(seqs, gaps), seqs.offsets, np.asarray(self.startprob_), self._transitions(gaps)
        )
        return seqs.restore(filtered)

    def predict(self, X: Any, lengths: Sequence[int] | None = None, *, times: Any = None) -> PerStep:
        """The most likely mode path (Viterbi), (n_steps,)."""
        self._check_fitted()
        seqs = self._sequences(X, lengths, times)
        return seqs.restore(self._viterbi(seqs))

    def _viterbi(self, seqs: Sequences) -> np.ndarray:
        gaps = self._gaps(seqs)
        with np.errstate(divide="ignore"):
            log_initial, log_transitions = np.log(self.startprob_), np.log(self._transitions(gaps))
        return kernels.viterbi(self._log_likelihoods(seqs, gaps), seqs.offsets, log_initial, log_transitions)[0]

    def segment(self, X: Any, lengths: Sequence[int] | None = None, *, times: Any = None) -> pd.DataFrame:
        """Runs of one mode on the decoded path: ``start``, ``end`` (exclusive), ``mode``,
        ``probability``; from step 1 of each sequence on (step 0 is conditioned on)."""
        self._check_fitted()
        seqs = self._sequences(X, lengths, times)
        return mode_segments(seqs, self._viterbi(seqs), self._forward_backward(seqs)[1], skip=1)

    # ------------------------------------------------------------------ streaming
    def _stream_recursion(self) -> Recursion:
        """The forward filter of the chain (exact): from ``startprob_``, each step's move expm(Q Δ)."""
        self._check_fitted()
        return Recursion(np.asarray(self.startprob_, dtype=float))

    def _stream_evidence(
        self,
        state: FilterState,
        y: Any,
        inputs: Any,
        time: float | None = None,
        *,
        over: Callable[[float], tuple[FlowDensities, np.ndarray]],
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """log p(y_t | y_t-1, z_t = k) over the gap Δ since the last observation (K,) (0 at the first,
        conditioned on, as in ``filter_proba``), the switches expm(Q Δ) into step t (the identity at
        the first), and the new history [[t, y_t]]: the last time and observation; ``over`` from
        :meth:`_stream_constants`."""
        check_input_row(inputs, 0, "a ContinuousARHMM")
        row = check_row(y, np.shape(self.drift_matrices_)[1])
        if np.isnan(row).any():
            raise ValueError(f"y_t = {row} has a missing entry (NaN); a ContinuousARHMM cannot take missing values")
        now, gap = next_time(state, time)
        history = np.r_[now, row][None]
        if gap is None:
            return np.zeros(self._k), np.eye(self._k), history
        densities, switches = over(gap)
        return densities.log_pdf(state.history[:, 1:], row[None], np.zeros(1, dtype=np.int64))[0], switches, history

    def _stream_constants(self) -> dict[str, Any]:
        """``over``: the laws of a gap (:meth:`_gap_laws`), kept while the parameters stay equal."""
        return {"over": per_parameters(self, _PARAMETERS, self._gap_laws)}

    def _gap_laws(self) -> Callable[[float], tuple[FlowDensities, np.ndarray]]:
        """The flows' laws and the switches expm(Q Δ) over a gap Δ, each flow's eigenbasis found once
        and the laws of the recent distinct gaps kept (:func:`recent_gaps`: a regular stream computes
        them once)."""
        flows, rates = self._flow_laws(), np.array(self.rate_matrix_, dtype=float)

        @recent_gaps
        def over(gap: float) -> tuple[FlowDensities, np.ndarray]:
            gaps = np.array([gap])
            return FlowDensities.of(flows, gaps), expm_metzler(rates * gaps[:, None, None])[0]

        return over

    def _stream_history(self) -> np.ndarray:
        return np.zeros((0, 1 + np.shape(self.drift_matrices_)[1]))

    def filter_forecast(
        self, state: FilterState, horizon: int | None = None, future_inputs: Any = None, *, future_times: Any = None
    ) -> Forecast:
        """The exact predictive moments of the observations at ``future_times`` (after the last time
        the filter has seen), or 1 .. ``horizon`` time units after it. Given the data the future is a
        Markov jump linear system (:func:`~modeshift.dynamics.jump_linear_moments`) from the last
        observation and the filtered modes, each gap's switches expm(Q Δ) and flows (Φ_k, c_k, S_k)."""
        if not state.filtered:
            raise ValueError("the filter state has seen no observation yet")
        if future_inputs is not None:
            raise ValueError("future_inputs were given but a ContinuousARHMM has no inputs")
        last = state.history[-1]
        (gaps,) = future_gaps(last[:1], horizon, future_times)
        Phi, c, S = self._flow_laws().over(gaps)
        probabilities = state.filtered[0]
        start = known_state_moments(probabilities, last[1:])
        modes, means, covariances = jump_linear_moments(probabilities, *start, self._transitions(gaps), Phi, c, S)
        return Forecast(means, covariances, modes)

    # --------------------------------------------------------------------- sample
    def sample(
        self,
        n_steps: int,
        n_sequences: int = 1,
        random_state: int | np.random.Generator | None = None,
        *,
        times: Any = None,
    ) -> tuple[PerStep, PerStep]:
        """Simulate observations (n_steps, D) and modes (n_steps,) at ``times`` ((n_steps,),
        strictly increasing, shared by every sequence; default 0, 1, ...). As for the ARHMM,
        the value before the first step is the first mode's equilibrium -A^+ b, so y_0 is drawn
        from the flow out of it over one time unit."""
        self._check_fitted()
        T, N = int(n_steps), int(n_sequences)
        stamps = sample_times(times, T)
        rng = np.random.default_rng(random_state)
        K, d = self._k, self.drift_offsets_.shape[1]
        gaps = np.r_[1.0, np.diff(stamps)]
        moves, laws = self._transitions(gaps), [flow.over(gaps) for flow in self._flow_laws().laws]
        observations, modes = np.empty((N, T, d)), np.empty((N, T), dtype=np.int64)
        for s in range(N):
            z = int(rng.choice(K, p=normalise_rows(np.asarray(self.startprob_, dtype=float))))
            y = -np.linalg.pinv(self.drift_matrices_[z]) @ self.drift_offsets_[z]
            for t in range(T):
                if t > 0:
                    z = int(rng.choice(K, p=normalise_rows(moves[t, z])))
                Phi, c, S = (part[t] for part in laws[z])
                y = rng.multivariate_normal(Phi @ y + c, S)
                observations[s, t], modes[s, t] = y, z
        if N == 1:
            return observations[0], modes[0]
        return list(observations), list(modes)

    # ------------------------------------------------------------------------- EM
    def fit(
        self, X: Any, lengths: Sequence[int] | None = None, *, times: Any = None, **columns: Any
    ) -> ContinuousARHMM:
        """Estimate the parameters by generalised EM (see the module docstring); returns ``self``."""
        self._start_fit()
        seqs = self._sequences(X, lengths, times, **columns)
        em.run(self, seqs, label=f"ContinuousARHMM K={self._k}")
        self._finish_fit(seqs)
        return self

    def _em_initialize(self, seqs: Sequences, rng: np.random.Generator, restart: int) -> None:
        """Parameters set by hand start the first restart; otherwise an ARHMM of order 1 on the
        series interpolated onto a regular grid (spaced by the mean gap) proposes the modes (each
        observation takes the posterior of its nearest grid point), and one M-step from them
        gives the flows and rates (Q from the ARHMM's transition matrix over the mean gap)."""
        if restart == 0 and all(self.__dict__.get(name) is not None for name in _PARAMETERS):
            return
        K, d = self._k, seqs.n_features
        mean_gap = float(self._gaps(seqs)[seqs.linked_rows].mean())
        grid, nearest = _regular_grid(seqs, mean_gap)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", em.ConvergenceWarning)
            arhmm = ARHMM(n_states=K, order=1, n_iter=50, n_restarts=3, stickiness=10.0, random_state=rng)
            arhmm.fit(grid)
            on_grid = arhmm.predict_proba(grid)
        posteriors = (
            np.concatenate([on_grid[s][index] for s, index in enumerate(nearest)])
            if isinstance(on_grid, list)
            else on_grid[nearest[0]]
        )
        rates = rates_of(np.asarray(arhmm.transmat_, dtype=float), mean_gap)
        self.rate_matrix_, self.startprob_ = rates, normalise_rows(np.asarray(arhmm.startprob_) + 1e-3)
        self.drift_matrices_, self.drift_offsets_ = np.zeros((K, d, d)), np.zeros((K, d))
        self.diffusion_covariances_ = np.stack([np.eye(d)] * K)
        pairs = independent_pairs(posteriors, seqs.starts)
        self._maximize(seqs, posteriors, pairs, polish_from_current=False)

    def _e_step(self, seqs: Sequences, workspace: dict[str, Any]) -> tuple[float, tuple[np.ndarray, np.ndarray]]:
        log_lik, posteriors, pairs = self._forward_backward(seqs)
        return log_lik, (posteriors.copy(), pairs.copy())

    def _m_step(self, seqs: Sequences, statistics: tuple[np.ndarray, np.ndarray]) -> None:
        self._maximize(seqs, *statistics)

    def _em_snapshot(self) -> dict[str, np.ndarray]:
        return {name: np.array(self.__dict__[name]) for name in _PARAMETERS}

    def _em_restore(self, snapshot: dict[str, np.ndarray]) -> None:
        self.__dict__.update(snapshot)

    def _maximize(
        self, seqs: Sequences, posteriors: np.ndarray, pairs: np.ndarray, polish_from_current: bool = True
    ) -> None:
        rows, gaps = seqs.linked_rows, self._gaps(seqs)
        self.startprob_ = normalise_rows(posteriors[seqs.starts].sum(axis=0) + 1e-10)
        self.rate_matrix_ = rate_step(self.rate_matrix_, pairs[rows], gaps[rows])
        groups = GapGroups.of(gaps[rows])  # the flows' regression rows, grouped by gap once for all modes
        moments = point_moments(seqs.values[rows - 1], seqs.values[rows])
        for k in range(self._k):
            weights = posteriors[rows, k]
            if weights.sum() <= 1e-8:
                continue  # an empty mode keeps its flow
            summed = GapMoments.of(groups, weights, *moments)
            current = (self.drift_matrices_[k], self.drift_offsets_[k], self.diffusion_covariances_[k])
            A, b, Sigma = polish(
                euler_regression(summed, self.reg_covar),
                current if polish_from_current else None,
                lambda *flow: expected_flow_log_likelihood(*flow, summed),  # noqa: B023
            )
            self.drift_matrices_[k], self.drift_offsets_[k], self.diffusion_covariances_[k] = A, b, Sigma

    # ---------------------------------------------------------- model selection
    @property
    def n_parameters(self) -> int:
        """Free parameters: per mode D^2 + D + D(D + 1)/2, the K(K - 1) rates and K - 1 start probabilities."""
        self._check_fitted()
        K, d = self._k, self.drift_offsets_.shape[1]
        return K * (d * d + d + d * (d + 1) // 2) + K * (K - 1) + K - 1

    def aic(self, X: Any, lengths: Sequence[int] | None = None, *, times: Any = None) -> float:
        return -2.0 * self.score(X, lengths, times=times) + 2.0 * self.n_parameters

    def bic(self, X: Any, lengths: Sequence[int] | None = None, *, times: Any = None) -> float:
        seqs = self._sequences(X, lengths, times)
        return -2.0 * self.score(seqs) + self.n_parameters * np.log(seqs.n_steps - seqs.n_sequences)

    def describe(self) -> pd.DataFrame:
        """One row per mode: its mean holding time 1 / q_k, the eigenvalues of A_k (their real
        parts are the flow's relaxation rates) and the equilibrium -A_k^-1 b_k (NaN where A_k is singular)."""
        self._check_fitted()
        return pd.DataFrame(flow_rows(self.drift_matrices_, self.drift_offsets_, self.rate_matrix_)).set_index("mode")

    # ---------------------------------------------------------------- persistence
    def _learned_arrays(self) -> dict[str, np.ndarray]:
        self._check_fitted()
        return {name: np.asarray(self.__dict__[name], dtype=float) for name in _PARAMETERS}

    def _learned_attributes(self) -> dict[str, Any]:
        return {name: self.__dict__[name] for name in _FIT_RESULTS if name in self.__dict__}

    def _restore(self, arrays: dict[str, np.ndarray], attributes: dict[str, Any]) -> None:
        missing = [name for name in _PARAMETERS if name not in arrays]
        if missing:
            raise ValueError(f"the model file lacks the parameter array(s) {missing}")
        k = self.n_states
        d = check_array("drift_matrices_", arrays["drift_matrices_"], (k, None, None)).shape[1]
        check_probabilities("startprob_", arrays["startprob_"], (k,))
        check_rate_matrix(arrays["rate_matrix_"], k)
        check_array("drift_matrices_", arrays["drift_matrices_"], (k, d, d))
        check_array("drift_offsets_", arrays["drift_offsets_"], (k, d))
        check_covariances("diffusion_covariances_", arrays["diffusion_covariances_"], d)
        check_array("diffusion_covariances_", arrays["diffusion_covariances_"], (k, d, d))
        for name, value in {**attributes, **arrays}.items():
            setattr(self, name, value)


def sample_times(times: Any, n_steps: int) -> np.ndarray:
    """The times of a simulation of ``n_steps`` steps: ``times`` checked (finite, strictly
    increasing, (n_steps,)), or 0, 1, ... when None."""
    if times is None:
        return np.arange(n_steps, dtype=float)
    try:
        stamps = np.asarray(times, dtype=float)
    except (TypeError, ValueError) as error:
        raise ValueError(f"times must be numbers, got {times!r}") from error
    if stamps.shape != (n_steps,) or not np.isfinite(stamps).all() or (np.diff(stamps) <= 0).any():
        raise ValueError(f"times must be {n_steps} finite, strictly increasing numbers, got shape {stamps.shape}")
    return stamps


def future_gaps(ends: np.ndarray, horizon: int | None, future_times: Any) -> list[np.ndarray]:
    """The gaps (h,) from each sequence's last time in ``ends`` to its future times and between
    them: ``horizon`` steps of one time unit, or ``future_times`` (one strictly increasing array
    for all sequences, or a list with one per sequence)."""
    if (horizon is None) == (future_times is None):
        raise ValueError("pass either horizon (steps one time unit apart) or future_times, not both or neither")
    if horizon is not None:  # checked by the public methods (models.params.ARGUMENTS)
        return [np.ones(int(horizon))] * len(ends)
    several = isinstance(future_times, (list, tuple)) and len(future_times) > 0 and np.ndim(future_times[0]) >= 1
    if several and len(future_times) != len(ends):
        raise ValueError(f"future_times has {len(future_times)} arrays for {len(ends)} sequences")
    gaps = []
    for s, (end, stamps) in enumerate(zip(ends, future_times if several else [future_times] * len(ends))):
        where = f" of sequence {s}" if len(ends) > 1 else ""
        try:
            stamps = np.asarray(stamps, dtype=float)
        except (TypeError, ValueError) as error:
            raise ValueError(f"future_times{where} must be numbers, got {stamps!r}") from error
        if stamps.ndim != 1 or not len(stamps) or not np.isfinite(stamps).all():
            raise ValueError(f"future_times{where} must be a non-empty 1-D array of finite times, got {stamps!r}")
        step = np.diff(np.r_[end, stamps])
        if (step <= 0).any():
            raise ValueError(f"future_times{where} must increase strictly from after the last time seen, {end}")
        gaps.append(step)
    return gaps


def flow_rows(drift: np.ndarray, offsets: np.ndarray, rate_matrix: np.ndarray) -> list[dict[str, Any]]:
    """The rows of ``describe`` for linear flows dx = (A_k x + b_k) dt + ... switching at rates Q:
    ``mode``, ``holding_time`` 1 / -q_kk (inf for a mode never left), ``eigenvalues`` of A_k and
    ``equilibrium`` -A_k^-1 b_k (NaN where A_k is singular)."""
    rows = []
    for k, (A, b) in enumerate(zip(drift, offsets)):
        leaving, singular = -rate_matrix[k, k], abs(np.linalg.det(A)) < 1e-12
        rows.append(
            {
                "mode": k,
                "holding_time": 1.0 / leaving if leaving > 0 else np.inf,
                "eigenvalues": np.linalg.eigvals(A),
                "equilibrium": np.full(len(b), np.nan) if singular else -np.linalg.solve(A, b),
            }
        )
    return rows


def _regular_grid(seqs: Sequences, spacing: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each sequence linearly interpolated at its start + k ``spacing`` (at least 2 points), and for
    each observation the index of its nearest grid point."""
    grids, nearest = [], []
    for s in range(seqs.n_sequences):
        t, y = seqs.times_of(s), seqs.values[seqs.offsets[s] : seqs.offsets[s + 1]]
        points = t[0] + spacing * np.arange(max(int((t[-1] - t[0]) / spacing) + 1, 2))
        grids.append(np.column_stack([np.interp(points, t, column) for column in y.T]))
        nearest.append(np.clip(np.rint((t - t[0]) / spacing).astype(np.int64), 0, len(points) - 1))
    return grids, nearest


@dataclass(frozen=True)
class FlowDensities:
    """The flows' laws y_n | y_n-1, z_n = k ~ N(Φ_k y_n-1 + c_k, S_k) over G gaps, ready to
    evaluate: ``Phi`` (G, K, D, D), ``c`` (G, K, D), the Cholesky factors ``chol`` of S and
    ``log_det`` (G, K), log det S."""

    Phi: np.ndarray
    c: np.ndarray
    chol: np.ndarray
    log_det: np.ndarray

    @classmethod
    def of(cls, flows: Flows, gaps: np.ndarray) -> FlowDensities:
        """The laws of ``flows`` over each of ``gaps`` (G,)."""
        Phi, c, S = flows.over(gaps)
        chol = np.linalg.cholesky(S)
        return cls(Phi, c, chol, 2.0 * np.log(np.diagonal(chol, axis1=2, axis2=3)).sum(axis=2))

    def log_pdf(self, before: np.ndarray, after: np.ndarray, group: np.ndarray) -> np.ndarray:
        """log N(after_n | Φ_k before_n + c_k, S_k) of each row n over its gap ``group[n]``, (n, K)."""
        out = np.empty((len(group), self.c.shape[1]))
        for k in range(out.shape[1]):
            residual = after - np.einsum("nij,nj->ni", self.Phi[group, k], before) - self.c[group, k]
            solved = np.linalg.solve(self.chol[group, k], residual[:, :, None])[:, :, 0]
            out[:, k] = -0.5 * ((solved**2).sum(axis=1) + self.log_det[group, k] + before.shape[1] * np.log(2 * np.pi))
        return out


def rate_step(rate_matrix: np.ndarray, pairs: np.ndarray, gaps: np.ndarray) -> np.ndarray:
    """One EM step for the rate matrix Q of hidden modes seen at the ends of gaps (Hobolth & Jensen
    2011): the pair posteriors ``pairs`` (R, K, K), p(z_n-1 = i, z_n = j | data) over the gaps
    ``gaps`` (R,), are soft endpoint counts; their expected jump counts and times at risk
    (:func:`~modeshift.models.jump_process.endpoint_statistics`) give q_ij = E[N_ij] / E[R_i].
    The expected log-likelihood sum_n sum_ij pairs_nij log expm(Q Δ_n)_ij never decreases."""
    K = len(rate_matrix)
    counts = pairs.reshape(-1)
    keep = counts > 0
    starts = np.tile(np.repeat(np.arange(K), K), len(gaps))[keep]
    ends = np.tile(np.tile(np.arange(K), K), len(gaps))[keep]
    expected = endpoint_statistics(rate_matrix, starts, ends, np.repeat(gaps, K * K)[keep], counts=counts[keep])
    return _generator(expected["jumps"], expected["time_at_risk"])


def rates_of(transmat: np.ndarray, gap: float) -> np.ndarray:
    """A rate matrix whose switches over ``gap`` are roughly those of ``transmat`` (a start for
    EM): q_ij = p_ij / gap off the diagonal (p smoothed by 1e-3, rates at least 1e-6 / gap)."""
    rates = np.clip(normalise_rows(transmat + 1e-3) / gap, 1e-6 / gap, None)
    np.fill_diagonal(rates, 0.0)
    np.fill_diagonal(rates, -rates.sum(axis=1))
    return rates


@dataclass(frozen=True)
class GapGroups:
    """The rows of a fit grouped by their gap, once per M-step for all its modes:
    ``gaps`` (G,) the distinct gaps, ``order`` the rows sorted by gap, ``firsts`` (G,) where each
    gap's rows start in that order."""

    gaps: np.ndarray
    order: np.ndarray
    firsts: np.ndarray

    @classmethod
    def of(cls, gaps: np.ndarray) -> GapGroups:
        """The groups of per-row ``gaps`` (R,)."""
        distinct, group = np.unique(gaps, return_inverse=True)
        order = np.argsort(group, kind="stable")
        return cls(distinct, order, np.searchsorted(group[order], np.arange(len(distinct))))

    def sum(self, values: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """sum over each gap's rows of ``weights`` (R,) times ``values`` (R, ...): (G, ...)."""
        weighted = values * weights.reshape(-1, *([1] * (values.ndim - 1)))
        return np.add.reduceat(weighted[self.order], self.firsts, axis=0)


@dataclass(frozen=True)
class GapMoments:
    """A flow's regression moments summed per distinct gap: what its exact expected log-likelihood
    and its Euler proposal read, so that an M-step sums the rows once, not at every evaluation.

    For the regression of x_n on z_n = [x_n-1, 1] (or [x_n-1, u_n, 1], with inputs u held over
    the gap) with row weights w_n, over the rows of gap ``gaps[g]``: ``weights`` (G,) sum w_n,
    ``xx`` (G, n, n) sum w_n E[x_n x_n'], ``xz`` (G, n, q) sum w_n E[x_n z_n'], ``zz`` (G, q, q)
    sum w_n E[z_n z_n'].
    """

    gaps: np.ndarray
    weights: np.ndarray
    xx: np.ndarray
    xz: np.ndarray
    zz: np.ndarray

    @classmethod
    def of(cls, groups: GapGroups, weights: np.ndarray, xx: np.ndarray, xz: np.ndarray, zz: np.ndarray) -> GapMoments:
        """The sums over the rows of each gap of ``groups`` of ``weights`` (R,) times the moments
        (R, ...), such as those of :func:`point_moments` or of a posterior
        (:func:`~modeshift.models.slds_inference.transition_moments`)."""
        summed = functools.partial(groups.sum, weights=weights)
        return cls(groups.gaps, summed(np.ones(len(weights))), summed(xx), summed(xz), summed(zz))


def point_moments(before: np.ndarray, after: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The moments x x', x z', z z' (z = [before, 1]) of observed pairs (``before``, ``after``) (R, n)."""
    z = np.hstack([before, np.ones((len(before), 1))])
    return after[:, :, None] * after[:, None], after[:, :, None] * z[:, None], z[:, :, None] * z[:, None]


def expected_flow_log_likelihood(A: np.ndarray, b: np.ndarray, Sigma: np.ndarray, moments: GapMoments) -> float:
    """sum_n w_n E log N(x_n | Φ(Δ_n) x_n-1 + c(Δ_n), S(Δ_n)) from the ``moments`` summed per gap:
    with W = [Φ, c] and S those of gap g, the sum over gaps of
    -(N_g (n log 2 pi + log det S) + tr(S^-1 (XX_g - W XZ_g' - XZ_g W' + W ZZ_g W'))) / 2.
    ``b`` is the offset (n,), or the columns (n, q - n) of the inputs held over each gap."""
    Phi, c, S = flow_moments(A, b, Sigma, moments.gaps)
    W = np.concatenate([Phi, c.reshape(len(Phi), len(A), -1)], axis=2)
    cross = W @ np.swapaxes(moments.xz, 1, 2)
    scatter = moments.xx - cross - np.swapaxes(cross, 1, 2) + W @ moments.zz @ np.swapaxes(W, 1, 2)
    chol = np.linalg.cholesky(S)
    log_det = 2.0 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
    trace = np.trace(np.linalg.solve(S, scatter), axis1=1, axis2=2).sum()
    return float(-0.5 * (moments.weights @ (len(b) * np.log(2 * np.pi) + log_det) + trace))


def euler_regression(moments: GapMoments, reg_covar: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(A, b, Σ) by the weighted Euler-Maruyama regression x_n - x_n-1 ≈ W z_n Δ_n + N(0, Σ Δ_n),
    z_n = [x_n-1, 1] (or [x_n-1, u_n, 1]), from the ``moments`` summed per gap (in expectation for
    a latent state): with r_n = x_n - x_n-1, W = (sum w_n E[r_n z_n']) (sum w_n Δ_n E[z_n z_n'])^-1
    and Σ = sum w_n / Δ_n E[(r_n - Δ_n W z_n)(...)'] / sum w_n (+ ``reg_covar`` on the diagonal).
    A = W[:, :n]; b the rest of W, the offset (n,) when z_n = [x_n-1, 1], else its columns (n, q - n)."""
    n, gaps = moments.xx.shape[1], moments.gaps
    D = np.sum(moments.xz - moments.zz[:, :n, :], axis=0)
    previous = moments.xz[:, :, :n]
    increments = moments.xx - previous - np.swapaxes(previous, 1, 2) + moments.zz[:, :n, :n]
    zz = np.einsum("g,gij->ij", gaps, moments.zz)
    W = np.linalg.solve(zz + 1e-12 * np.eye(len(zz)), D.T).T
    scatter = np.einsum("g,gij->ij", 1.0 / gaps, increments) - W @ D.T - D @ W.T + W @ zz @ W.T
    Sigma = 0.5 * (scatter + scatter.T) / moments.weights.sum() + reg_covar * np.eye(n)
    columns = W[:, n:]
    return W[:, :n], columns[:, 0] if columns.shape[1] == 1 else columns, ensure_positive_definite(Sigma)


def polish(
    proposal: tuple[np.ndarray, np.ndarray, np.ndarray],
    current: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
    objective: Callable[[np.ndarray, np.ndarray, np.ndarray], float],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A few BFGS iterations (finite-difference gradients) on ``objective(A, b, Σ)`` of a flow,
    such as sum_n w_n log p(y_n | y_n-1) under its exact law, from the better of ``proposal``
    and ``current``; returns the best point seen, never one below ``current``. Σ is searched
    through its Cholesky factor, its diagonal by logarithms, so it stays positive definite. ``b``
    is the offset (d,), or the columns (d, q) of the inputs held over each gap."""
    d, shape = len(proposal[0]), np.shape(proposal[1])
    size, lower = int(np.prod(shape)), np.tril_indices(d)

    def unpack(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        A, b = theta[: d * d].reshape(d, d), theta[d * d : d * d + size].reshape(shape)
        L = np.zeros((d, d))
        L[lower] = theta[d * d + size :]
        L[np.diag_indices(d)] = np.exp(np.diag(L))
        return A, b, L @ L.T

    def pack(A: np.ndarray, b: np.ndarray, Sigma: np.ndarray) -> np.ndarray:
        L = np.linalg.cholesky(Sigma)
        L[np.diag_indices(d)] = np.log(np.diag(L))
        return np.concatenate([A.ravel(), np.ravel(b), L[lower]])

    def loss(theta: np.ndarray) -> float:
        with np.errstate(all="ignore"):
            try:
                value = -objective(*unpack(theta))
            except np.linalg.LinAlgError:
                return np.inf
        return value if np.isfinite(value) else np.inf

    starts = [pack(*proposal)] + ([pack(*current)] if current is not None else [])
    values = [loss(theta) for theta in starts]
    best = starts[int(np.argmin(values))]
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf in the line search where a step overshoots
        result = optimize.minimize(loss, best, method="BFGS", options={"maxiter": _POLISH_ITERATIONS})
    polished = float(result.fun) if np.isfinite(result.fun) else np.inf
    candidates = [*zip(values, starts), (polished, result.x)]
    floor = values[1] if current is not None else np.inf
    value, theta = min(candidates, key=lambda pair: pair[0])
    if current is not None and not value <= floor:
        return current
    return unpack(theta)
