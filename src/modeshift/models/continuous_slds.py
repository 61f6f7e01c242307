"""Continuous-time switching linear dynamical systems: latent linear flows that switch by a rate matrix,
observed with noise at any times.

Between the observation times t_n-1 and t_n (gap Δ_n) mode z_n = k moves a hidden state x by
the linear stochastic differential equation dx = (F_k x + G_k u_n + f_k) dt + Σ_k^1/2 dW; the
modes are a Markov jump process with rate matrix Λ; each observation is a noisy linear view of
the state:

    p(z_n = j | z_n-1 = i) = expm(Λ Δ_n)[i, j],
    x_n | x_n-1, z_n = k  ~  N(Φ_k(Δ_n) x_n-1 + Γ_k(Δ_n) u_n + c_k(Δ_n), S_k(Δ_n)),
    y_n = C x_n + D u_n + d + N(0, R),

with Φ, Γ, c, S the exact law of the flow over the gap (matrix exponentials: Φ = expm(F Δ),
[Γ, c] = ∫_0^Δ expm(F s) ds [G, f] from the exponential of [[F, G, f], [0, 0, 0]] Δ, and Van
Loan's block exponential for S: :func:`~modeshift.models.continuous_arhmm.flow_moments`), z_n
the mode at t_n and u_n the inputs (``input_dim`` of them, optional), both held over the gap
before it (a zero-order hold). Seen every time unit (Δ = 1) this *is* the
:class:`~modeshift.models.slds.SwitchingLDS` with dynamics expm(F_k), input matrices Γ_k(1),
offsets c_k(1), covariances S_k(1) and transition matrix expm(Λ): the same ELBO to round-off.

Inference is the SwitchingLDS's structured mean field q(x) q(z), read with each step's own
laws (:class:`~modeshift.models.slds_inference.StepLaws`: one per distinct gap). EM:

- C, d, R, the initial state and p(z_0): the SwitchingLDS's closed-form M-step;
- Λ: one EM step of a jump process seen at snapshots, the pair posteriors q(z_n-1, z_n) as soft
  endpoint counts (:func:`~modeshift.models.continuous_arhmm.rate_step`);
- each flow (F_k, G_k, f_k, Σ_k), which has no closed form (Φ, Γ, c, S are nonlinear in it): a
  *generalised* EM step, as in :class:`~modeshift.models.continuous_arhmm.ContinuousARHMM` but on
  the expected statistics of q(x). A weighted Euler-Maruyama regression of x_n - x_n-1 on
  [x_n-1, u_n, 1] Δ_n (closed form from E[x_n x_n'], E[x_n x_n-1'], E[x_n-1 x_n-1'], exact to
  first order in Δ) proposes it; a few BFGS iterations on the exact expected log-likelihood
  sum_n q(z_n = k) E_q log N(x_n | Φ x_n-1 + Γ u_n + c, S) minus the ``reg_covar`` prior polish
  it (:func:`~modeshift.models.continuous_arhmm.polish`), kept only where they raise it. The
  regression's rows are grouped by gap once per M-step (:class:`~modeshift.models.continuous_arhmm.GapGroups`).

Every step raises the ELBO plus the log prior, so EM is monotone.

Recurrent switching (``recurrent=True``): the rates depend on the state and on the inputs,
log-linearly,

    λ_ij(x, u) = q_ij exp(a_ij . x + c_ij . u)   (i != j),

so a switch becomes likely past a guard, or when an input pushes it (as the SwitchingLDS's
guards read [x_t-1, u_t]). Over gap n the rates are held at the state the gap starts from and at
the inputs u_n held over it, and, as in the recurrent SwitchingLDS, inference evaluates them at
E_q[x_n-1] (a plug-in: p(z_n = j | z_n-1 = i) = expm(Λ(E x_n-1, u_n) Δ_n)[i, j]), so the ELBO
is approximate and need not increase monotonically. Their M-step is EM for a jump process seen
at snapshots, one generator per gap: the expected jump counts N_n,ij and times at risk R_n,i of
each gap given its soft endpoints (:func:`interval_statistics`), then for each pair (i, j) a
Poisson regression of N_n,ij on [1, E x_n-1, u_n] with exposure R_n,i (the complete-data
log-likelihood sum_n N_n,ij log λ_ij - R_n,i λ_ij is concave in (log q_ij, a_ij, c_ij); a few
Newton steps, with a small L2 penalty on a_ij and c_ij that keeps separable guards finite).

>>> from modeshift.models.continuous_slds import ContinuousSwitchingLDS
>>> from modeshift.datasets.simulators import thermostat
>>> from modeshift.metrics import mode_accuracy
>>> sim = thermostat(600, random_state=0, times="exponential", observation_sd=0.05)
>>> model = ContinuousSwitchingLDS(n_states=2, state_dim=1, n_iter=30, random_state=0)
>>> model = model.fit(sim.observations, times=sim.times)
>>> mode_accuracy(sim.modes, model.predict(sim.observations, times=sim.times)) > 0.9
True
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from modeshift.data import Sequences, as_sequences
from modeshift.dynamics import LinearDynamics
from modeshift.models import em
from modeshift.models import slds_inference as inference
from modeshift.models.automaton import Automaton, Flow
from modeshift.models.base import Forecast, check_future_inputs
from modeshift.models.continuous_arhmm import (
    Flows,
    GapGroups,
    GapMoments,
    euler_regression,
    expected_flow_log_likelihood,
    flow_rows,
    future_gaps,
    polish,
    rate_step,
    rates_of,
    recent_gaps,
    sample_times,
)
from modeshift.models.jump_process import check_rate_matrix, endpoint_integrals, expm_metzler
from modeshift.models.lds import PerStep
from modeshift.models.params import Boolean, Integer, Number, OneOf, either
from modeshift.models.slds import SwitchingLDS
from modeshift.models.streaming import (
    FilterState,
    SwitchingKalmanRecursion,
    TimedStreaming,
    next_time,
    per_parameters,
)
from modeshift.statistics import Statistics
from modeshift.transitions import Stationary, draw_rows

__all__ = ["ContinuousSwitchingLDS", "StateDependentRates", "interval_statistics"]

_MAX_EXPONENT = 50.0  # of a rate's state dependence, exp(a . x): beyond it the rate no longer grows
_MIN_RATE = 1e-12  # q_ij is kept at least this (a log-linear regression's intercept needs it positive)
_NEWTON_STEPS = 10  # per pair and M-step: a generalised EM step need not maximise
_RATE_PENALTY = 1e-2  # L2 penalty on the rates' state dependence a_ij: keeps separable guards finite

_FLOWS = ("drift_matrices_", "drift_offsets_", "diffusion_covariances_", "rate_matrix_")
_INPUTS = ("drift_input_matrices_", "feedthrough_matrix_")  # with input_dim > 0 only
_OBSERVATION = (
    "observation_matrix_",
    "observation_offset_",
    "observation_covariance_",
    "initial_state_mean_",
    "initial_state_covariance_",
    "startprob_",
)


class ContinuousSwitchingLDS(TimedStreaming, SwitchingLDS):
    """A switching linear dynamical system in continuous time, for noisy observations at irregular times.

    See the module docstring for the model and its EM. ``times=`` (one array per sequence, or
    one for all steps, strictly increasing) go to ``fit`` and to every method that takes data;
    without them the steps are one time unit apart. ``inputs=`` (with ``input_dim > 0``) go
    alongside, as for the SwitchingLDS; row n is held over the gap before t_n. Everything else is
    as for :class:`~modeshift.models.slds.SwitchingLDS` (whose initialisation, on the steps as if
    they were one time unit apart, gives the first modes and states); ``forecast`` and
    ``filter_forecast`` take ``future_times`` (or a ``horizon`` of unit steps) and the
    ``future_inputs`` held over their gaps, and ``filter_step`` the observation's ``time``.

    Parameters
    ----------
    n_states : int or "auto"
        Number of modes K; ``"auto"`` chooses it by BIC (computed from the ELBO) among
        candidates of 1 .. ``max_states`` modes, found as ``selection`` says.
    max_states : int
        Largest K tried by ``n_states="auto"``.
    selection : {"fits", "prune"}
        As for the SwitchingLDS: one fit per K (:func:`~modeshift.models.selection.select_n_states`),
        or down from an over-complete fit, each K also started from the best K + 1 without its
        least occupied mode (:func:`~modeshift.models.selection.prune_n_states`).
    input_dim : int
        Dimension m of the inputs u (0: none). They drive the flows and the observations, and
        a recurrent model's switching rates.
    recurrent : bool
        Let the switching rates depend on the state and the inputs (module docstring).
    state_dim, obs_dim, n_iter, tol, n_restarts, random_state, reg_covar, warm_start, verbose, callback
        As for :class:`~modeshift.models.slds.SwitchingLDS`; ``reg_covar`` also weighs the prior
        -reg_covar / 2 tr(Σ_k^-1) on each diffusion covariance.

    Attributes
    ----------
    drift_matrices_ (K, n, n), drift_offsets_ (K, n), diffusion_covariances_ (K, n, n)
        F_k, f_k, Σ_k of each mode's flow, per unit of time.
    drift_input_matrices_ (K, n, m), feedthrough_matrix_ (p, m)
        G_k, the inputs' drift per unit of time, and D (with inputs; without them, empty).
    rate_matrix_ (K, K) : Λ, rows summing to 0 (for a recurrent model, the rates at x = 0, u = 0).
    rate_weights_ (K, K, n) : a_ij, recurrent only (zero on the diagonal).
    rate_input_weights_ (K, K, m) : c_ij, recurrent with inputs only (zero on the diagonal; without inputs, empty).
    observation_matrix_ (p, n), observation_offset_ (p,), observation_covariance_ (p, p) : C, d, R.
    initial_state_mean_ (n,), initial_state_covariance_ (n, n), startprob_ (K,) : the law at the first step.
    initial_state_covariance_prior_ (n, n) : the mode of P0's prior, as for the SwitchingLDS.
    dwell_times_, history_, converged_, n_iter_, n_states_, selection_ : as for the SwitchingLDS (dwell times in
        steps).
    """

    reads_times = True  # its fit reads the gaps between the stamps (no fit over a Dask cluster: modeshift.distributed)
    _test_params = {"state_dim": 1, "n_iter": 5}
    _constraints = {
        "recurrent": Boolean(),
        "state_dim": Integer(1),
        "obs_dim": either(Integer(1), OneOf((None,))),
        "input_dim": Integer(0),
        "reg_covar": Number(0),
        "selection": OneOf(("fits", "prune")),
    }

    def __init__(
        self,
        n_states: int | str = 2,
        state_dim: int = 2,
        obs_dim: int | None = None,
        input_dim: int = 0,
        recurrent: bool = False,
        n_iter: int = 1000,
        tol: float = 1e-3,
        n_restarts: int = 1,
        random_state: int | np.random.Generator | None = None,
        reg_covar: float = 1e-6,
        max_states: int = 6,
        selection: str = "fits",
        warm_start: bool = False,
        verbose: bool = False,
        callback: Callable[[int, float], Any] | None = None,
    ):
        self.n_states = n_states
        self.state_dim = state_dim
        self.obs_dim = obs_dim
        self.input_dim = input_dim
        self.recurrent = recurrent
        self.n_iter = n_iter
        self.tol = tol
        self.n_restarts = n_restarts
        self.random_state = random_state
        self.reg_covar = reg_covar
        self.max_states = max_states
        self.selection = selection
        self.warm_start = warm_start
        self.verbose = verbose
        self.callback = callback

    # ------------------------------------------------------------------ parameters
    @property
    def parameter_names(self) -> tuple[str, ...]:
        inputs = _INPUTS if self.input_dim else ()
        rates = (("rate_weights_",) + (("rate_input_weights_",) if self.input_dim else ())) if self.recurrent else ()
        return _FLOWS + inputs + rates + _OBSERVATION

    @property
    def drift_input_matrices_(self) -> np.ndarray:
        """G_k (K, n, m), the inputs' drift; (K, n, 0), never set, without inputs."""
        return self._input_parameter("drift_input_matrices_", lambda: (len(self.drift_offsets_), self.state_dim, 0))

    @drift_input_matrices_.setter
    def drift_input_matrices_(self, value: np.ndarray) -> None:
        self.__dict__["drift_input_matrices_"] = value

    @property
    def feedthrough_matrix_(self) -> np.ndarray:
        """D (p, m), the inputs' direct effect on y; (p, 0), never set, without inputs."""
        return self._input_parameter("feedthrough_matrix_", lambda: (len(self.observation_offset_), 0))

    @feedthrough_matrix_.setter
    def feedthrough_matrix_(self, value: np.ndarray) -> None:
        self.__dict__["feedthrough_matrix_"] = value

    @property
    def rate_input_weights_(self) -> np.ndarray:
        """c_ij (K, K, m), the inputs' weights in a recurrent model's log rates; (K, K, 0), never set,
        without inputs."""
        return self._input_parameter("rate_input_weights_", lambda: (*np.shape(self.rate_matrix_), 0))

    @rate_input_weights_.setter
    def rate_input_weights_(self, value: np.ndarray) -> None:
        self.__dict__["rate_input_weights_"] = value

    def _input_parameter(self, name: str, empty: Callable[[], tuple[int, ...]]) -> Any:
        """A parameter of the inputs as set; without inputs the empty array of shape ``empty()``, so
        that a model without inputs needs no such parameter set (nor saved)."""
        value = self.__dict__.get(name)
        return np.zeros(empty()) if value is None and not self.input_dim else value

    @property
    def transmat_(self) -> np.ndarray:
        """The transition matrix over one time unit, expm(Λ)."""
        return expm_metzler(np.asarray(self.rate_matrix_, dtype=float)[None])[0]

    def _parameter_shapes(self, p: int) -> tuple[dict[str, tuple[int, ...]], list[tuple[str, int, int | None]]]:
        k, n, m = self._k, self.state_dim, self.input_dim
        shapes = {
            "drift_matrices_": (k, n, n),
            "drift_input_matrices_": (k, n, m),
            "drift_offsets_": (k, n),
            "rate_matrix_": (k, k),
            "rate_weights_": (k, k, n),
            "rate_input_weights_": (k, k, m),
            "observation_offset_": (p,),
            "feedthrough_matrix_": (p, m),
            "initial_state_mean_": (n,),
        }
        covariances = [
            ("diffusion_covariances_", n, k),
            ("observation_covariance_", p, None),
            ("initial_state_covariance_", n, None),
        ]
        return shapes, covariances

    def _check_switching(self) -> None:
        check_rate_matrix(self.rate_matrix_, self._k)

    def _guards(self, gaps: np.ndarray | None = None) -> StateDependentRates:
        """The state-dependent switches, features [x, u], over ``gaps`` (one per row of the features
        they are given; default one time unit)."""
        weights = np.concatenate([self.rate_weights_, self.rate_input_weights_], axis=2)
        return StateDependentRates(self.startprob_, self.rate_matrix_, weights, gaps)

    def _laws(self, gaps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The discrete-time laws over each gap (G,), as :meth:`_distinct_laws`, computed once per distinct gap."""
        distinct, law = np.unique(gaps, return_inverse=True)
        weights, covariances, transitions = self._distinct_laws(distinct)
        return weights[law], covariances[law], transitions[law]

    def _distinct_laws(self, distinct: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The discrete-time laws over each of ``distinct`` gaps (G,): weights [Φ_k, Γ_k, c_k]
        (G, K, n, n + m + 1) (Γ_k, c_k: ∫_0^Δ expm(F_k s) ds times G_k and f_k, the inputs held over
        the gap), covariances S_k (G, K, n, n) and transition matrices expm(Λ Δ) (G, K, K)."""
        Phi, c, covariances = self._flow_laws().over(distinct)
        transitions = expm_metzler(np.asarray(self.rate_matrix_, dtype=float) * distinct[:, None, None])
        return np.concatenate([Phi, c], axis=3), covariances, transitions

    def _flow_laws(self) -> Flows:
        """Each mode's flow (F_k, [G_k, f_k], Σ_k): the inputs and the offset held over the gap."""
        columns = np.concatenate([self.drift_input_matrices_, np.asarray(self.drift_offsets_)[:, :, None]], axis=2)
        return Flows.of(self.drift_matrices_, columns, self.diffusion_covariances_)

    def _parameters(self, seqs: Sequences | None = None) -> inference.SwitchingParameters:
        """The parameters as inference reads them: for data ``seqs``, the laws of each step's gap;
        the block and chain (and, without data, everything) those of one time unit."""
        self._check_fitted()
        weights, covariances, transitions = self._distinct_laws(np.ones(1))
        dynamics = LinearDynamics(self._k, reg_covar=self.reg_covar)
        dynamics.weights, dynamics.covariances = weights[0], covariances[0]
        chain: Stationary | StateDependentRates = Stationary(self._k)
        chain.initial_probs, chain.transition_matrix = self.startprob_, transitions[0]
        gaps = steps = None
        if seqs is not None:
            gaps = self._gaps(seqs)
            distinct, group = np.unique(gaps, return_inverse=True)
            steps = inference.StepLaws(group, *self._distinct_laws(distinct))
        if self.recurrent:
            chain = self._guards(gaps)
        return inference.SwitchingParameters(
            dynamics, self._observation_block(), self.initial_state_mean_, self.initial_state_covariance_, chain, steps
        )

    # ------------------------------------------------------------------------ data
    def _sequences(self, X: Any, lengths: Sequence[int] | None, inputs: Any) -> Sequences:
        seqs = super()._sequences(X, lengths, inputs)
        if seqs.times is None:
            return seqs.with_times([np.arange(length, dtype=float) for length in seqs.lengths])
        return seqs.require_times("a ContinuousSwitchingLDS")

    @staticmethod
    def _timed(X: Any, lengths: Sequence[int] | None, times: Any, **columns: Any) -> Sequences:
        return as_sequences(X, lengths, times=times, **columns)

    @staticmethod
    def _gaps(seqs: Sequences) -> np.ndarray:
        """Δ_n at every step (n_steps,): 1 at the sequences' starts, whose laws are unused."""
        gaps = np.ones(seqs.n_steps)
        rows = seqs.linked_rows
        gaps[rows] = seqs.times[rows] - seqs.times[rows - 1]
        return gaps

    # ------------------------------------------------- methods that take data, at times
    def fit(
        self, X: Any, lengths: Sequence[int] | None = None, *, times: Any = None, inputs: Any = None, **columns: Any
    ) -> ContinuousSwitchingLDS:
        """Estimate the parameters by generalised variational EM (see the module docstring); returns ``self``."""
        return super().fit(self._timed(X, lengths, times, **columns), inputs=inputs)

    def predict_proba(
        self, X: Any, lengths: Sequence[int] | None = None, *, times: Any = None, inputs: Any = None
    ) -> PerStep:
        """q(z_n = k): smoothed mode probabilities (n_steps, K) under the variational posterior."""
        return super().predict_proba(self._timed(X, lengths, times), inputs=inputs)

    def filter_proba(
        self, X: Any, lengths: Sequence[int] | None = None, *, times: Any = None, inputs: Any = None
    ) -> PerStep:
        """The forward pass of q(z) (n_steps, K), as for :meth:`SwitchingLDS.filter_proba`."""
        return super().filter_proba(self._timed(X, lengths, times), inputs=inputs)

    def predict(
        self, X: Any, lengths: Sequence[int] | None = None, *, times: Any = None, inputs: Any = None
    ) -> PerStep:
        """Most likely mode path (n_steps,): Viterbi on the potentials of q(z)."""
        return super().predict(self._timed(X, lengths, times), inputs=inputs)

    def segment(
        self, X: Any, lengths: Sequence[int] | None = None, *, times: Any = None, inputs: Any = None
    ) -> pd.DataFrame:
        """Contiguous runs of one mode on the decoded path, as for :meth:`SwitchingLDS.segment`."""
        return super().segment(self._timed(X, lengths, times), inputs=inputs)

    def smooth(self, X: Any, lengths: Sequence[int] | None = None, *, times: Any = None, inputs: Any = None) -> PerStep:
        """E_q[x_n]: posterior means of the hidden state (n_steps, n)."""
        return super().smooth(self._timed(X, lengths, times), inputs=inputs)

    def elbo(self, X: Any, lengths: Sequence[int] | None = None, *, times: Any = None, inputs: Any = None) -> float:
        """The evidence lower bound on X after inference to convergence (a lower bound on log p(X))."""
        return super().elbo(self._timed(X, lengths, times), inputs=inputs)

    def aic(self, X: Any, lengths: Sequence[int] | None = None, *, times: Any = None, inputs: Any = None) -> float:
        """-2 ELBO + 2 n_parameters (an upper bound on the usual Akaike criterion)."""
        return super().aic(self._timed(X, lengths, times), inputs=inputs)

    def bic(self, X: Any, lengths: Sequence[int] | None = None, *, times: Any = None, inputs: Any = None) -> float:
        """-2 ELBO + n_parameters log(n_steps) (an upper bound on the usual Bayesian criterion)."""
        return super().bic(self._timed(X, lengths, times), inputs=inputs)

    def forecast(
        self,
        X: Any,
        horizon: int | None = None,
        lengths: Sequence[int] | None = None,
        *,
        times: Any = None,
        future_times: Any = None,
        inputs: Any = None,
        future_inputs: Any = None,
    ) -> Forecast:
        """The predictive moments of the observations at ``future_times`` after each sequence's last
        time, or, with ``horizon``, 1, 2, ..., ``horizon`` time units after it.

        Over each gap Δ between consecutive future times (the first from the last time seen) the
        flows move by their exact laws Φ_k(Δ), c_k(Δ), S_k(Δ) and the modes by expm(Λ Δ), so the
        moments are exact as in :meth:`SwitchingLDS.forecast` (a Markov jump linear system whose
        laws differ by step); a recurrent model's rates are held over each gap at the state it starts
        from and the inputs held over it, and its moments are the Monte Carlo estimates of
        :meth:`SwitchingLDS.forecast` (seeded by ``random_state``). At gaps of one time unit this
        is the discrete-time forecast.

        ``future_times``: one strictly increasing array for every sequence (after each one's last
        time), or a list with one per sequence. ``future_inputs`` (h, m), each held over the gap
        before its time, or a list of them (one per sequence), are required when ``input_dim > 0``.
        Returns a :class:`~modeshift.models.base.Forecast`, with lists for several sequences.
        """
        self._check_fitted()
        seqs = self._sequences(self._timed(X, lengths, times), None, inputs)
        ends = seqs.times[seqs.offsets[1:] - 1]
        gaps = future_gaps(ends, horizon, future_times)
        horizons = [len(steps) for steps in gaps]
        futures = self._future_inputs(future_inputs, horizons)
        posterior = self._infer(seqs)
        params, rng = self._parameters(), np.random.default_rng(self.random_state)
        weights, covariances, transitions = self._laws(np.concatenate(gaps))
        bounds, parts = np.cumsum([0, *horizons]), []
        for s, (steps, future) in enumerate(zip(gaps, futures)):
            law = slice(bounds[s], bounds[s + 1])
            laws = self._future_laws_over(steps, future, (weights[law], covariances[law], transitions[law]))
            parts.append(self._forecast_from(posterior, seqs.offsets[s + 1] - 1, params, laws, future, rng))
        return Forecast.of_sequences(parts)

    def _future_laws_over(
        self, gaps: np.ndarray, future: np.ndarray, laws: tuple[np.ndarray, np.ndarray, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any]:
        """The future's laws as :meth:`SwitchingLDS._forecast_mixture` reads them: A, offsets (the
        inputs ``future`` held over each gap), Q and the moves (the switches over each gap, or a
        recurrent model's rates read at the state each gap starts from and its inputs), from
        :meth:`_laws` at ``gaps``."""
        weights, covariances, transitions = laws
        n, m = self.state_dim, self.input_dim
        moves: Any = transitions
        if self.recurrent:
            moves = [functools.partial(self._switches_over, gap, u) for gap, u in zip(gaps, future)]
        offsets = np.einsum("hknm,hm->hkn", weights[:, :, :, n : n + m], future) + weights[:, :, :, -1]
        return weights[:, :, :, :n], offsets, covariances, moves

    def _future_inputs(self, future_inputs: Any, horizons: list[int]) -> list[np.ndarray]:
        """The inputs (h_s, m) of each sequence's future steps, checked (as
        :func:`~modeshift.models.base.check_future_inputs`); where the sequences have different
        numbers of future times, ``future_inputs`` must be a list with one array per sequence."""
        model, m = "this ContinuousSwitchingLDS", self.input_dim
        if len(set(horizons)) == 1:
            return check_future_inputs(future_inputs, horizons[0], len(horizons), m, model)
        if m and not (isinstance(future_inputs, (list, tuple)) and len(future_inputs) == len(horizons)):
            raise ValueError(
                f"future_inputs: the sequences have {horizons} future times, so pass a list of "
                f"{len(horizons)} arrays, one (h, {m}) per sequence"
            )
        items = future_inputs if m else [future_inputs] * len(horizons)
        return [check_future_inputs(item, h, 1, m, model)[0] for item, h in zip(items, horizons)]

    def _switches_over(self, gap: float, u: np.ndarray, states: np.ndarray) -> np.ndarray:
        """The recurrent switch probabilities (N, K, K) over one ``gap`` from each of ``states`` (N, n),
        the inputs ``u`` (m,) held over it."""
        return self._switches_at(self._guards(np.full(len(states), gap)), u, states)

    # ------------------------------------------------------------------ streaming
    def filter_forecast(
        self, state: FilterState, horizon: int | None = None, future_inputs: Any = None, *, future_times: Any = None
    ) -> Forecast:
        """The predictive moments of the observations at ``future_times`` (after the last time the
        filter has seen), or 1 .. ``horizon`` time units after it, from the approximate filter's law
        (:meth:`SwitchingKalmanRecursion.forecast` with each gap's laws); a recurrent model's are
        the Monte Carlo estimates of :meth:`forecast`, the paths started from the filter's mixture.
        ``future_inputs`` (h, input_dim), each held over the gap before its time, for a model with inputs."""
        if not state.filtered:
            raise ValueError("the filter state has seen no observation yet")
        (gaps,) = future_gaps(state.history[-1], horizon, future_times)
        (future,) = self._future_inputs(future_inputs, [len(gaps)])
        if not self.recurrent:
            modes, means, covariances = self._stream_recursion().forecast(
                state.filtered, np.column_stack([gaps, future])
            )
            return Forecast(means, covariances, modes)
        laws = self._future_laws_over(gaps, future, self._laws(gaps))
        rng = np.random.default_rng(self.random_state)
        return self._forecast_mixture(state.filtered[:3], self._parameters(), laws, future, rng)

    def _stream_recursion(self) -> SwitchingKalmanRecursion:
        """The SwitchingLDS's filter whose move into a step is [Δ, u]: its gap and inputs. The
        dynamics and switches are those of Δ, computed once per distinct recent gap (a regular
        stream computes them once); the input matrices' first column (B's and D's) is 0, so that
        the gap is no input. Built once while the parameters stay equal (:func:`per_parameters`)."""
        return per_parameters(self, self.parameter_names, self._gap_recursion)

    def _gap_recursion(self) -> SwitchingKalmanRecursion:
        """:meth:`_stream_recursion` built: everything but the gap's laws read from the model now
        (each flow's eigenbasis found once), the laws of each recent gap (:func:`recent_gaps`) from them."""
        unit = super()._stream_recursion()
        D = unit.params["D"]
        gapped = {**unit.params, "D": np.hstack([np.zeros((len(D), 1)), D])}
        laws = self._gap_laws(self._flow_laws())

        @recent_gaps
        def over(gap: float) -> SwitchingKalmanRecursion:
            return SwitchingKalmanRecursion(unit.initial, {**gapped, **laws(gap)})

        return _GapSwitchingKalmanRecursion(unit.initial, gapped, over)

    def _gap_laws(self, flows: Flows) -> Callable[[float], dict[str, Any]]:
        """A, B = [0, Γ], b, Q and the switches of the filter over one gap, from the model's ``flows``
        and its rates as they are now."""
        n, k, rates = self.state_dim, self._k, np.array(self.rate_matrix_, dtype=float)
        guards, switches_at, modes = self._guards() if self.recurrent else None, self._switches_at, np.arange(k)

        def laws(gap: float) -> dict[str, Any]:
            gaps = np.array([gap])
            Phi, c, covariances = flows.over(gaps)
            transitions = expm_metzler(rates * gaps[:, None, None])
            held = None if guards is None else dataclasses.replace(guards, gaps=np.full(k, gap))

            def switches(means: np.ndarray, move: np.ndarray) -> np.ndarray:  # move: [Δ, u]
                if held is None:
                    return transitions[0]
                return switches_at(held, move[1:], means)[modes, modes]

            B = np.concatenate([np.zeros((k, n, 1)), c[0, :, :, :-1]], axis=2)
            return {"A": Phi[0], "B": B, "b": c[0, :, :, -1], "Q": covariances[0], "transitions": switches}

        return laws

    def _stream_evidence(
        self, state: FilterState, y: Any, inputs: Any, time: float | None = None
    ) -> tuple[tuple, np.ndarray, np.ndarray]:
        """(y_t - d, [Δ, u_t]) checked, [Δ, u_t] as the move into the step, the new history [[t]] (the last time)."""
        (row, u), _, _ = super()._stream_evidence(state, y, inputs)
        now, gap = next_time(state, time)
        move = np.r_[1.0 if gap is None else gap, u]
        return (row, move), move, np.array([[now]])

    def _stream_history(self) -> np.ndarray:
        return np.zeros((0, 1))

    def automaton(
        self,
        X: Any = None,
        lengths: Sequence[int] | None = None,
        *,
        times: Any = None,
        inputs: Any = None,
        resolution: int = 25,
    ) -> Automaton:
        """The fitted model as a hybrid automaton, as :meth:`SwitchingLDS.automaton`: flows
        dx = ([F_k, G_k] [x, u] + f_k) dt + Σ_k^1/2 dW, vector fields the expected move over one
        time unit and guards the switches over it (inputs held at 0), dwell times the mean holding
        times 1 / λ_k (time units); ``X`` at ``times`` (with ``inputs``) places the grid."""
        data = None if X is None else self._timed(X, lengths, times)
        return super().automaton(data, inputs=inputs, resolution=resolution)

    def _flows(self) -> list[Flow]:
        flows = zip(self.drift_matrices_, self.drift_input_matrices_, self.drift_offsets_, self.diffusion_covariances_)
        regressors = "latent state x" + (", inputs u held over each gap" if self.input_dim else "")
        regressors += ": the drift per unit time"
        return [Flow(k, np.hstack([F, G]), f, Sigma, regressors) for k, (F, G, f, Sigma) in enumerate(flows)]

    def _dwell_times(self) -> np.ndarray:
        if self.recurrent:
            return super()._dwell_times()
        leaving = -np.diagonal(np.asarray(self.rate_matrix_, dtype=float))
        with np.errstate(divide="ignore"):
            return np.where(leaving > 0, 1.0 / leaving, np.inf)

    def sample(
        self,
        n_steps: int,
        n_sequences: int = 1,
        random_state: int | np.random.Generator | None = None,
        *,
        times: Any = None,
        inputs: Any = None,
    ) -> tuple[PerStep, PerStep]:
        """Simulate observations (n_steps, p) and modes (n_steps,) at ``times`` ((n_steps,),
        strictly increasing, shared by every sequence; default 0, 1, ...); lists of them for
        several sequences. x_0 ~ N(m0, P0) and z_0 ~ ``startprob_``. ``inputs`` (n_steps, m), one
        array for every sequence or a list with one per sequence, each row held over the gap
        before its time, are required when ``input_dim > 0``."""
        self._check_fitted()
        T, N = int(n_steps), int(n_sequences)
        stamps = sample_times(times, T)
        model = "this ContinuousSwitchingLDS"
        U = np.stack(check_future_inputs(inputs, T, N, self.input_dim, model, name="inputs"))
        rng = np.random.default_rng(random_state)
        weights, covariances, transitions = self._laws(np.r_[1.0, np.diff(stamps)])
        factors = np.linalg.cholesky(covariances)
        n = self.state_dim
        states, modes = np.empty((N, T, n)), np.empty((N, T), dtype=np.int64)
        modes[:, 0] = draw_rows(np.broadcast_to(self.startprob_, (N, self._k)), rng)
        initial = np.linalg.cholesky(self.initial_state_covariance_)
        states[:, 0] = self.initial_state_mean_ + rng.standard_normal((N, n)) @ initial.T
        for t in range(1, T):
            if self.recurrent:
                guards = self._guards(np.full(N, stamps[t] - stamps[t - 1]))
                switch = guards.kernel_arrays(np.hstack([states[:, t - 1], U[:, t]]))[1]
                modes[:, t] = z = draw_rows(switch[np.arange(N), modes[:, t - 1]], rng)
            else:
                modes[:, t] = z = draw_rows(transitions[t][modes[:, t - 1]], rng)
            mean = np.einsum("sij,sj->si", weights[t, z], inference.regressors(states[:, t - 1], U[:, t]))
            states[:, t] = mean + np.einsum("sij,sj->si", factors[t, z], rng.standard_normal((N, n)))
        noise = (
            rng.standard_normal((N, T, len(self.observation_offset_)))
            @ np.linalg.cholesky(self.observation_covariance_).T
        )
        observations = states @ self.observation_matrix_.T + U @ self.feedthrough_matrix_.T + self.observation_offset_
        observations += noise
        if N == 1:
            return observations[0], modes[0]
        return list(observations), list(modes)

    def as_state_space_model(self, inputs: Any = None) -> Any:
        """Not available: the particle adapter reads a discrete-time SwitchingLDS's parameters."""
        raise NotImplementedError("particle methods for a ContinuousSwitchingLDS are not implemented")

    # ------------------------------------------------------------------------- EM
    def _initialize(self, seqs: Sequences, rng: np.random.Generator) -> np.ndarray:
        """The SwitchingLDS's start on the steps as if one time unit apart (C, R and the modes of
        an ARHMM on denoised states), one sweep of its q(x) q(z), then the first M-step from
        them (pair posteriors the products of the marginals): the flows from their Euler
        proposals, the rates from its transition matrix over the mean gap. Returns q(z)."""
        K, n, m, rows = self._k, self.state_dim, self.input_dim, seqs.linked_rows
        start = SwitchingLDS(n_states=K, state_dim=n, input_dim=m, reg_covar=self.reg_covar)
        regular = dataclasses.replace(seqs, times=None)
        modes = start._initialize(regular, rng)
        posterior = inference.sweep(start._parameters(), regular, modes)
        for name in (*_OBSERVATION, "feedthrough_matrix_", "initial_state_covariance_prior_"):
            setattr(self, name, getattr(start, name))
        self.rate_matrix_ = rates_of(start.transmat_, float(self._gaps(seqs)[rows].mean()))
        self.drift_matrices_, self.drift_offsets_ = np.zeros((K, n, n)), np.zeros((K, n))
        self.drift_input_matrices_ = np.zeros((K, n, m))
        self.diffusion_covariances_ = np.stack([np.eye(n)] * K)
        if self.recurrent:
            self.rate_weights_, self.rate_input_weights_ = np.zeros((K, K, n)), np.zeros((K, K, m))
        probs = posterior.mode_probs
        pairs = inference.independent_pairs(probs, seqs.starts)
        self._m_step(seqs, self._statistics(seqs, dataclasses.replace(posterior, pair_counts=pairs), probs), False)
        return probs

    def _fit_em(self, seqs: Sequences, over: em.Over | None = None) -> ContinuousSwitchingLDS:
        """The SwitchingLDS's EM, in memory only."""
        if over is not None:
            raise TypeError(
                "a ContinuousSwitchingLDS does not fit over a cluster: its M-step reads q(x) q(z) at every gap"
            )
        return super()._fit_em(seqs)

    def _statistics(self, seqs: Sequences, posterior: inference.Posterior, weights: np.ndarray) -> Statistics:
        """The observation model's sums (as the SwitchingLDS's) and q(x) q(z) itself: the rates'
        and flows' steps read it at every gap (its q(z_t), which are the laws' ``weights``)."""
        return Statistics(self._observation_statistics(seqs, posterior), posterior=posterior)

    def _m_step(self, seqs: Sequences, stats: Statistics, polish_from_current: bool = True) -> None:
        """M-step: C, d, R, the initial law and p(z_0) in closed form; one EM step for the rates;
        a generalised step (Euler proposal, BFGS polish) for each flow (module docstring)."""
        posterior, rows = stats["posterior"], seqs.linked_rows
        gaps = self._gaps(seqs)[rows]
        self._maximize_observation(stats)
        if self.recurrent:
            guards, features = self._guards(), inference.guard_features(seqs, posterior.means)[rows]  # [E x_n-1, u_n]
            jumps, exposure = interval_statistics(guards.generators(features), gaps, posterior.pair_counts[rows])
            self.rate_matrix_, weights = _log_linear_rates(jumps, exposure, features, self.rate_matrix_, guards.weights)
            self.rate_weights_, self.rate_input_weights_ = np.split(weights, [self.state_dim], axis=2)
        else:
            self.rate_matrix_ = rate_step(self.rate_matrix_, posterior.pair_counts[rows], gaps)
        moments = inference.transition_moments(seqs, posterior)  # of x_n and [x_n-1, u_n, 1]
        n, m, groups = self.state_dim, self.input_dim, GapGroups.of(gaps)  # rows grouped once for all modes
        drift, diffusion = np.array(self.drift_matrices_), np.array(self.diffusion_covariances_)
        columns = np.concatenate([self.drift_input_matrices_, np.asarray(self.drift_offsets_)[:, :, None]], axis=2)
        for k in range(self._k):
            weights = posterior.mode_probs[rows, k]
            if weights.sum() <= 1e-8:
                continue  # an empty mode keeps its flow

            summed = GapMoments.of(groups, weights, *moments)

            def objective(A: np.ndarray, b: np.ndarray, Sigma: np.ndarray) -> float:
                expected = expected_flow_log_likelihood(A, b, Sigma, summed)  # noqa: B023
                return expected - 0.5 * self.reg_covar * float(np.trace(np.linalg.inv(Sigma)))

            proposal = euler_regression(summed, self.reg_covar)  # b: [G_k, f_k], or f_k alone without inputs
            current = (drift[k], columns[k].reshape(np.shape(proposal[1])), diffusion[k])
            drift[k], b, diffusion[k] = polish(proposal, current if polish_from_current else None, objective)
            columns[k] = np.reshape(b, (n, m + 1))
        self.drift_matrices_, self.diffusion_covariances_ = drift, diffusion
        self.drift_input_matrices_, self.drift_offsets_ = columns[:, :, :m].copy(), columns[:, :, m].copy()

    def _log_prior(self) -> float:
        """-reg_covar / 2 tr(S^-1) for every covariance S (Σ_k, R, P0), P0's inverse-Wishart
        (:class:`~modeshift.dynamics.InitialStateLaw`); for a recurrent model also the rates'
        penalty -_RATE_PENALTY / 2 (sum |a_ij|^2 + |c_ij|^2)."""
        total = self._observation_block().log_prior() + self._initial_law().log_prior(self.initial_state_covariance_)
        for covariance in self.diffusion_covariances_:
            total -= 0.5 * self.reg_covar * float(np.trace(np.linalg.inv(covariance)))
        if self.recurrent:
            total -= 0.5 * _RATE_PENALTY * float(np.sum(np.square(self._guards().weights)))
        return total

    # ---------------------------------------------------------- model selection
    @property
    def n_parameters(self) -> int:
        """Free parameters: per mode n^2 + n m + n + n(n + 1)/2 for the flow, the K(K - 1) rates
        (recurrent: each with its n + m weights), the observation model, the initial law and K - 1
        start probabilities."""
        self._check_fitted()
        K, n, m = self._k, self.state_dim, self.input_dim
        count = K * (n * (n + m + 1) + n * (n + 1) // 2) + K * (K - 1) + self._observation_block().n_parameters()
        return count + n + n * (n + 1) // 2 + K - 1 + (K * (K - 1) * (n + m) if self.recurrent else 0)

    _PAIR_INDEXED = ("rate_matrix_", "rate_weights_", "rate_input_weights_")
    _MODE_INDEXED = ("drift_", "diffusion_", "startprob_")

    def _renormalise_kept(self) -> None:
        """The fix-up of :meth:`_kept_modes`'s rates: each mode's rates to the dropped modes
        dropped, so that its holding rate is the sum of those left."""
        np.fill_diagonal(self.rate_matrix_, 0.0)
        np.fill_diagonal(self.rate_matrix_, -self.rate_matrix_.sum(axis=1))

    def describe(self) -> pd.DataFrame:
        """One row per mode: its mean holding time 1 / λ_k (time units; at x = 0 for a recurrent
        model), the eigenvalues of F_k (their real parts are the flow's relaxation rates), the
        equilibrium -F_k^-1 f_k (NaN where F_k is singular) and, for a recurrent model,
        ``rate_weights``: each other mode j -> a_kj, the growth of log λ_kj with the state (with
        inputs also ``rate_input_weights``: j -> c_kj, its growth with the inputs)."""
        self._check_fitted()
        rows = flow_rows(self.drift_matrices_, self.drift_offsets_, self.rate_matrix_)
        if self.recurrent:
            for k, row in enumerate(rows):
                others = [j for j in range(self._k) if j != k]
                row["rate_weights"] = {j: self.rate_weights_[k, j] for j in others}
                if self.input_dim:
                    row["rate_input_weights"] = {j: self.rate_input_weights_[k, j] for j in others}
        return pd.DataFrame(rows).set_index("mode")


class _GapSwitchingKalmanRecursion(SwitchingKalmanRecursion):
    """Kim's filter (:class:`~modeshift.models.streaming.SwitchingKalmanRecursion`) whose laws differ
    by step: the move into a step is its gap [Δ], and ``over(Δ)`` is the filter with the A, b, Q and
    switches over it (built once per distinct recent gap, not once per step)."""

    def __init__(self, initial: np.ndarray, params: dict[str, Any], over: Callable[[float], SwitchingKalmanRecursion]):
        super().__init__(initial, params)
        self.over = over

    def predict(self, law: tuple[np.ndarray, ...], move: np.ndarray) -> tuple[np.ndarray, ...]:
        return self.over(float(move[0])).predict(law, move)


@dataclass(frozen=True)
class StateDependentRates:
    """Mode switches at rates log-linear in features f = [x, u] (the state, then the inputs),
    λ_ij(f) = q_ij exp(w_ij . f), held over each gap: p(z_n = j | z_n-1 = i, f_n) = expm(Λ(f_n) Δ_n)[i, j]
    with f_n = [x_n-1, u_n].

    ``initial_probs`` (K,), ``rate_matrix`` (K, K) the q_ij (a generator), ``weights``
    (K, K, d) the w_ij = [a_ij, c_ij] of the first d features, ``gaps`` (N,) the Δ of the rows it
    is asked about (None: one time unit). It reads as a chain of inference (``varying``,
    ``initial_probs``, ``kernel_arrays``).
    """

    initial_probs: np.ndarray
    rate_matrix: np.ndarray
    weights: np.ndarray
    gaps: np.ndarray | None = None
    varying = True

    def generators(self, features: np.ndarray) -> np.ndarray:
        """Λ(f) for each row of ``features`` (N, d): (N, K, K), rows summing to 0."""
        exponent = np.clip(np.einsum("ijn,tn->tij", self.weights, features), -_MAX_EXPONENT, _MAX_EXPONENT)
        rates = np.asarray(self.rate_matrix, dtype=float) * np.exp(exponent)
        diagonal = np.arange(rates.shape[1])
        rates[:, diagonal, diagonal] = 0.0
        rates[:, diagonal, diagonal] = -rates.sum(axis=2)
        return rates

    def kernel_arrays(self, features: np.ndarray) -> tuple[None, np.ndarray]:
        """(None, the transition matrices (N, K, K)) for rows [x, u] of ``features``."""
        features = features[:, : self.weights.shape[2]]
        gaps = np.ones(len(features)) if self.gaps is None else self.gaps
        return None, expm_metzler(self.generators(features) * gaps[:, None, None])


def interval_statistics(generators: np.ndarray, gaps: np.ndarray, pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The expected jump counts N_n (R, K, K) and times at risk R_n (R, K) of a jump process over
    each of R gaps, its generator Λ_n held over gap Δ_n, given soft endpoints ``pairs`` (R, K, K)
    (the probability of each (start, end) pair): with w_ab = pairs_ab / expm(Λ_n Δ_n)_ab and
    I_n = :func:`~modeshift.models.jump_process.endpoint_integrals` of (Λ_n, Δ_n, w),
    N_n,ij = λ_ij I_ij and R_n,i = I_ii (Hobolth & Jensen 2011;
    :func:`~modeshift.models.jump_process.endpoint_statistics` for one generator)."""
    moves = expm_metzler(generators * gaps[:, None, None])
    weights = np.where(pairs > 0, pairs / np.maximum(moves, np.finfo(float).tiny), 0.0)
    integrals = endpoint_integrals(generators, gaps, weights)
    jumps = generators * integrals
    diagonal = np.arange(generators.shape[1])
    jumps[:, diagonal, diagonal] = 0.0
    return jumps, integrals[:, diagonal, diagonal].copy()


def _log_linear_rates(
    jumps: np.ndarray, exposure: np.ndarray, features: np.ndarray, rate_matrix: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """For each pair i != j, (log q_ij, w_ij) maximising the Poisson log-likelihood
    sum_n N_n,ij η_n - R_n,i exp(η_n), η_n = log q_ij + w_ij . f_n (``features`` f_n (N, d), the
    [E x_n-1, u_n] of each gap), minus _RATE_PENALTY / 2 |w_ij|^2: Newton steps from the current
    values, halved until they climb. Returns (q, w (K, K, d))."""
    K, d = weights.shape[0], weights.shape[2]
    design = np.hstack([np.ones((len(features), 1)), features])
    ridge = np.diag(np.r_[0.0, np.full(d, _RATE_PENALTY)])
    rates, slopes = np.array(rate_matrix, dtype=float), np.array(weights, dtype=float)
    for i in range(K):
        for j in (j for j in range(K) if j != i):
            counts, exposed = jumps[:, i, j], exposure[:, i]

            def value(theta: np.ndarray) -> float:
                eta = np.clip(design @ theta, -_MAX_EXPONENT, _MAX_EXPONENT)
                return float(counts @ eta - exposed @ np.exp(eta) - 0.5 * theta @ ridge @ theta)  # noqa: B023

            theta = np.r_[np.log(max(rates[i, j], _MIN_RATE)), slopes[i, j]]
            current = value(theta)
            for _ in range(_NEWTON_STEPS):
                expected = exposed * np.exp(np.clip(design @ theta, -_MAX_EXPONENT, _MAX_EXPONENT))
                gradient = design.T @ (counts - expected) - ridge @ theta
                curvature = design.T @ (design * expected[:, None]) + ridge + 1e-9 * np.eye(d + 1)
                step = np.linalg.solve(curvature, gradient)
                for _ in range(30):
                    if value(theta + step) >= current:
                        break
                    step = step / 2
                else:
                    break
                theta, previous, current = theta + step, current, value(theta + step)
                if current - previous < 1e-10 * max(1.0, abs(current)):
                    break
            rates[i, j], slopes[i, j] = max(float(np.exp(theta[0])), _MIN_RATE), theta[1:]
    np.fill_diagonal(rates, 0.0)
    np.fill_diagonal(rates, -rates.sum(axis=1))
    return rates, slopes
