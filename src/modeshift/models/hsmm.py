"""Explicit-duration hidden semi-Markov models: modes that last for a time of their own law.

An HMM stays in mode k for a geometric time (it leaves with probability 1 - p_kk at every
step). A hidden semi-Markov model (HSMM) draws how long each visit lasts: a segment of mode k
lasts d ~ p_k(d) steps, d in 1 .. D, emitting y_t ~ p(y | k) at each; then the next mode j != k
follows ``transmat_`` (zero diagonal), and so on. A machine's cycle, a gait phase, a sleep
stage or a recession lasts a typical time, which a geometric law cannot express.

Inference sums over segmentations in O(T K^2 + T K D) per sequence
(:mod:`modeshift._kernels.hsmm`), not over the K D states of the equivalent HMM. Negative-binomial
durations with whole-number shapes r_k are also an HMM on sum_k r_k (mode, phase) states
(:mod:`modeshift.models.phase_type`), cheaper when the durations are long and their shapes small.

With ``input_dim > 0`` the switch at a segment boundary is driven by inputs u_t: a segment of
i ending at t - 1 hands over to j != i with p(j | i, u_t) proportional to exp(B[i, j] . (1, u_t)),
the HMM's per-source logit (``input_slopes="per_source"``) restricted to leaving i. The
durations stay those of the duration law; the inputs choose where the chain goes next.

>>> import numpy as np
>>> from modeshift import HSMM
>>> truth = HSMM(n_states=2, duration="poisson", max_duration=40)
>>> truth.startprob_, truth.transmat_ = np.array([0.5, 0.5]), np.array([[0.0, 1.0], [1.0, 0.0]])
>>> truth.duration_rates_ = np.array([9.0, 19.0])  # visits of 10 and 20 steps on average
>>> truth.means_, truth.covars_ = np.array([[0.0], [2.0]]), np.ones((2, 1, 1))
>>> X, modes = truth.sample(3000, random_state=0)
>>> model = HSMM(n_states=2, duration="poisson", max_duration=40, random_state=0).fit(X)
>>> np.sort(model.dwell_times_).round()
array([10., 20.])
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from modeshift import transitions_logit as logit
from modeshift._kernels.hsmm import hsmm_filter, hsmm_sample_posterior, hsmm_smoother, hsmm_viterbi
from modeshift.chain_analysis import stationary_distribution
from modeshift.data import Sequences, as_sequences, check_array
from modeshift.durations import DURATIONS, Duration, censored_counts, make_duration, survival_of
from modeshift.dynamics import autoregressive_moments
from modeshift.emissions import Autoregressive, Emission
from modeshift.emissions.autoregressive import with_lags
from modeshift.models import em, selection
from modeshift.models.base import Forecast, NotFittedError, check_future_inputs
from modeshift.models.hmm import EMISSIONS, HMM, PerStep, check_evidence
from modeshift.models.params import Boolean, Integer, OneOf, either
from modeshift.models.streaming import FilterState, SemiMarkovRecursion, lagged_values
from modeshift.statistics import Stacked, Statistics
from modeshift.transitions import InputDriven, Stationary, normalise_rows

__all__ = ["HSMM"]

_MIN_RULE_DURATION = 16
_SMALLEST_SURVIVAL = 1e-250


class HSMM(HMM):
    """An explicit-duration hidden semi-Markov model fit by exact EM.

    Parameters
    ----------
    n_states : int or "auto"
        Number of modes K; ``"auto"`` chooses it by BIC among 1 .. ``max_states`` as for
        :class:`~modeshift.models.hmm.HMM`.
    duration : {"poisson", "negative_binomial", "geometric", "nonparametric"}
        The law of a segment's duration (:mod:`modeshift.durations`), each shifted to start
        at 1 and truncated to 1 .. D: ``duration_rates_`` (Poisson: d - 1 ~ Poisson),
        ``duration_shapes_`` and ``duration_probs_`` (negative binomial),
        ``duration_probs_`` (geometric: the HMM's dwell law), ``duration_pmf_`` (K, D) (free).
    max_duration : int, optional
        D, the longest segment. By default chosen from the data (``max_duration_``): the
        longest run of one label when each step is labelled by its likeliest mode under the
        starting emission (k-means for Gaussians, seed 0), times 3, at least 16 and at most
        the longest sequence; 1 for a single mode (its segments are indistinguishable). The
        cost grows linearly in D. After a fit the model warns if a parametric law puts more
        than 1e-3 of its mass beyond D.
    emission : {"gaussian", "gmm", "categorical", "poisson", "autoregressive"}
        As for :class:`~modeshift.models.hmm.HMM`; ``"autoregressive"`` makes an AR-HSMM
        (``coefs_``, ``intercepts_``, ``covars_`` as for :class:`~modeshift.models.arhmm.ARHMM`,
        lag order ``order``; the first ``order`` steps of each sequence are conditioned on).
    covariance, n_mix, n_symbols, reg_covar
        As for :class:`~modeshift.models.hmm.HMM`.
    order : int
        Autoregressive order for ``emission="autoregressive"``.
    right_censoring : bool
        The last segment of a sequence may go on after its end (its weight is the survival
        S(d) = P(duration >= d)); False: every sequence ends with a segment.
    left_censoring : bool
        The first segment may have begun before the sequence: its observed length follows
        the residual law S(d) / E[duration] of a process in equilibrium. EM then treats
        that segment as censored at its observed length and ignores the length bias 1 /
        E[duration] in the M-step (a close, not exact, EM: the objective may dip slightly).
    transition_concentration : float
        Dirichlet prior on ``startprob_`` and the off-diagonal entries of ``transmat_``.
    input_dim : int
        With ``input_dim > 0`` the switches are driven by inputs u_t passed as ``inputs=``
        (n_steps, input_dim) to every method (``future_inputs=`` to ``forecast``, a row to
        ``filter_step``): entry t drives the switch into a segment that starts at t (a
        sequence's first entry drives nothing). A segment of i hands over to j != i with
        probability exp(B[i, j] . (1, u_t)) / sum_{m != i} exp(B[i, m] . (1, u_t)),
        ``transition_coef_`` B (K, K-1, 1 + input_dim), column 0 the intercept, B[i, K-1] = 0:
        the layout of :class:`~modeshift.models.hmm.HMM`'s per-source coefficients, restricted
        to leaving. Its entries [i, i] (i < K-1) are 0 (no self-switch) and so is [K-1, K-2]
        (the last mode cannot go to the reference K-1: K-2 is its reference). For a source
        i < K-1 these are the HMM's log-odds of j against K-1 (conditioning on leaving does not
        change them); for the last mode, the HMM's minus its K-2 column. With two modes the
        switches are certain and the inputs change nothing.
    input_slopes : {"per_source"}
        How inputs enter the switches; the HMM's shared form is not offered for an HSMM.
    transition_penalty : float
        L2 prior -penalty / 2 |B|^2 on ``transition_coef_`` (>= 0).
    n_iter, tol, n_restarts, random_state, warm_start, fixed, max_states, accelerate, verbose, callback
        As for :class:`~modeshift.models.hmm.HMM`.

    Attributes
    ----------
    startprob_ : (K,)
        Law of the first segment's mode.
    transmat_ : (K, K)
        p(next mode j | mode k), zero diagonal (one mode: [[1]], a renewal process); with
        inputs ``transition_coef_`` instead.
    max_duration_ : int
        D used.
    dwell_times_ : (K,)
        Mean duration of each mode's segments.
    history_, converged_, n_iter_
        As for :class:`~modeshift.models.hmm.HMM`.

    Notes
    -----
    Missing values (NaN) are integrated out as by the HMM. Online EM (``partial_fit``) needs
    switches without inputs.
    """

    #: A hidden semi-Markov chain has a learned start.
    init = "learned"

    def __init__(
        self,
        n_states: int | str = 2,
        duration: str = "poisson",
        max_duration: int | None = None,
        emission: str = "gaussian",
        covariance: str = "full",
        n_mix: int = 1,
        n_symbols: int | None = None,
        order: int = 1,
        right_censoring: bool = True,
        left_censoring: bool = False,
        n_iter: int = 1000,
        tol: float = 1e-7,
        n_restarts: int = 1,
        random_state: int | np.random.Generator | None = None,
        fixed: Iterable[str] = (),
        transition_concentration: float = 1.0,
        input_dim: int = 0,
        input_slopes: str = "per_source",
        transition_penalty: float = 1e-2,
        reg_covar: float = 1e-6,
        max_states: int = 10,
        accelerate: bool = True,
        warm_start: bool = False,
        verbose: bool = False,
        callback: Callable[[int, float], Any] | None = None,
    ):
        self.n_states = n_states
        self.max_states = max_states
        self.duration = duration
        self.max_duration = max_duration
        self.emission = emission
        self.covariance = covariance
        self.n_mix = n_mix
        self.n_symbols = n_symbols
        self.order = order
        self.right_censoring = right_censoring
        self.left_censoring = left_censoring
        self.n_iter = n_iter
        self.tol = tol
        self.n_restarts = n_restarts
        self.random_state = random_state
        self.fixed = fixed
        self.transition_concentration = transition_concentration
        self.input_dim = input_dim
        self.input_slopes = input_slopes
        self.transition_penalty = transition_penalty
        self.reg_covar = reg_covar
        self.accelerate = accelerate
        self.warm_start = warm_start
        self.verbose = verbose
        self.callback = callback

    _constraints = {
        **HMM._constraints,
        "duration": OneOf(tuple(DURATIONS)),
        "max_duration": either(Integer(1), OneOf((None,))),
        "emission": OneOf((*EMISSIONS, "autoregressive")),
        "order": Integer(1),
        "right_censoring": Boolean(),
        "left_censoring": Boolean(),
        "input_slopes": OneOf(("per_source",)),
    }
    _renamed = {}
    _file_attributes = {**HMM._file_attributes, "max_duration_": "count"}

    @property
    def monotone(self) -> bool:
        """Whether EM cannot lower the log-likelihood (not with left-censoring, see above)."""
        return not self.left_censoring

    # --------------------------------------------------------- parameter access
    @property
    def _parameter_homes(self) -> dict[str, tuple[Any, str]]:
        homes = super()._parameter_homes
        law = self._duration
        homes.update({name: (law, attr) for name, attr in law.parameters.items()})
        return homes

    @property
    def _blocks(self) -> tuple[_Switches | _InputSwitches, Emission]:
        blocks = self.__dict__.get("_blocks_")
        if blocks is None:
            if self.input_dim:
                switches = _InputSwitches(
                    self._k, self.input_dim, self.transition_concentration, self.transition_penalty
                )
            else:
                switches = _Switches(self._k, self.transition_concentration)
            blocks = (switches, self._make_emission())
            self.__dict__["_blocks_"] = blocks
        return blocks

    @property
    def _duration(self) -> Duration:
        law = self.__dict__.get("_duration_")
        if law is None:
            law = make_duration(self.duration, self._k, self.__dict__.get("max_duration_", self.max_duration))
            self.__dict__["_duration_"] = law
        return law

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "max_duration_":  # D shapes the duration law: set it first, without building blocks
            self.__dict__[name] = int(value)
            if "_duration_" in self.__dict__:
                self._duration.max_duration = int(value)
            return
        super().__setattr__(name, value)

    def _make_emission(self) -> Emission:
        if self.emission == "autoregressive":
            return Autoregressive(self._k, self.order, reg_covar=self.reg_covar)
        return super()._make_emission()

    def _fixed_of(self, block: Any) -> frozenset[str]:
        """The attributes of ``block`` named in ``fixed`` (per block: a Poisson emission's and a
        Poisson duration's ``rates`` are different parameters)."""
        return frozenset(block.parameters[name] for name in self.fixed if name in block.parameters)

    # ---------------------------------------------------------------------- data
    def _sequences(self, X: Any, lengths: Sequence[int] | None, inputs: Any = None) -> Sequences:
        seqs = as_sequences(X, lengths).with_inputs(inputs, self.input_dim, f"this {type(self).__name__}")
        if self.emission != "autoregressive":
            return self._blocks[1].validate(seqs)
        seqs = seqs.require(
            allow_missing=False,
            min_length=self.order + 1,
            n_features=self._blocks[1].n_features,
            model=f"an AR-HSMM with order={self.order}",
        )
        return dataclasses.replace(seqs, values=with_lags(seqs.values, seqs.offsets, self.order))

    def _n_observations(self, seqs: Sequences) -> int:
        lagged = self.order * seqs.n_sequences if self.emission == "autoregressive" else 0
        return seqs.n_steps - lagged

    def _log_likelihoods(self, seqs: Sequences, emission: Emission | None = None) -> np.ndarray:
        """log p(y_t | z_t = k), (n_steps, K)."""
        table, rows = (emission or self._blocks[1]).log_likelihood_table(seqs.values)
        check_evidence(table, rows, seqs, type(self).__name__)
        return np.ascontiguousarray(table if rows is None else table[rows])

    def _segment_laws(self) -> tuple[np.ndarray, np.ndarray]:
        """The kernels' ``weights`` (4, K, D) (inner, first, last, only segment) and ``survival``
        (2, K, D) (inner, first) under the censoring options. Durations the law outlasts with
        probability below 1e-250 count as impossible: the recursions' messages are bounded by
        1 / P(duration >= d), which then stays finite."""
        pmf = self._duration.pmf()
        pmf = np.where(survival_of(pmf) >= _SMALLEST_SURVIVAL, pmf, 0.0)
        pmf /= pmf.sum(axis=1, keepdims=True)
        survival = survival_of(pmf)
        first, first_survival = pmf, survival
        if self.left_censoring:  # residual law of a renewal process in equilibrium
            first = survival / survival.sum(axis=1, keepdims=True)
            first_survival = survival_of(first)
        last, only = (survival, first_survival) if self.right_censoring else (pmf, first)
        return np.stack([pmf, first, last, only]), np.stack([survival, first_survival])

    def _kernel_arguments(self, seqs: Sequences) -> dict[str, np.ndarray]:
        self._check_fitted()
        transitions = self._blocks[0]
        initial, matrices = transitions.kernel_arrays(seqs.inputs)
        weights, survival = self._segment_laws()
        return {
            "log_likelihoods": self._log_likelihoods(seqs),
            "offsets": seqs.offsets,
            "initial_probs": initial,
            "transition_matrix": matrices if transitions.varying else matrices[0],
            "weights": weights,
            "survival": survival,
        }

    # ------------------------------------------------------------------------ EM
    def _fit_em(self, seqs: Sequences, over: em.Over | None = None) -> HSMM:
        """EM from the starting parameters, ``max_duration_`` chosen first from all the data
        (``over`` the shards held elsewhere, ``seqs`` being then a sample of them to start from)."""
        self._choose_max_duration(seqs, over)
        super()._fit_em(seqs, over)
        self._warn_truncation()
        return self

    def _fit_auto(self, seqs: Sequences) -> HSMM:
        for cache in ("_blocks_", "_duration_"):
            self.__dict__.pop(cache, None)
        selection.fit_auto(self, seqs, ("max_duration_",))
        self._finish_fit(seqs)
        return self

    def _choose_max_duration(self, seqs: Sequences, over: em.Over | None = None) -> None:
        """Set ``max_duration_``: given, that of a hand-set pmf, or the rule of the class docstring
        (its longest sequence and run read ``over`` every shard of the data)."""
        law = self._duration
        chosen = self.max_duration or law.max_duration
        if chosen is None and self._k == 1:
            chosen = 1
        elif chosen is None:
            emission = self._blocks[1]
            if any(getattr(emission, attr) is None for attr in emission.parameters.values()):
                emission = self._make_emission()
                emission.initialize(seqs.values, np.random.default_rng(0))
            reach = functools.partial(_longest_runs, emission=emission)
            longest_sequence, longest_run = (over or em.in_memory(seqs))(reach, self).array.max(axis=0)
            chosen = int(min(longest_sequence, max(_MIN_RULE_DURATION, 3 * longest_run)))
        if law.max_duration is not None and law.max_duration != chosen:
            raise ValueError(f"duration_pmf_ covers 1..{law.max_duration} but max_duration={chosen}")
        self.max_duration_ = chosen

    def _em_initialize(self, seqs: Sequences, rng: np.random.Generator, restart: int) -> None:
        given = self.__dict__["_given"]
        keep = given if restart == 0 else {k: v for k, v in given.items() if k in self.fixed}
        transitions, emission = self._blocks
        law = self._duration
        if not keep.keys() >= transitions.parameters.keys():
            transitions.initialize(rng)
        if not keep.keys() >= emission.parameters.keys():
            emission.initialize(seqs.values, rng)
        for name, value in keep.items():
            setattr(self, name, value)
        if not keep.keys() >= law.parameters.keys():  # from the (kept or starting) emission
            law.initialize(self._starting_means(seqs, emission))
            for name in law.parameters.keys() & keep.keys():
                setattr(self, name, keep[name])
        emission.validate(seqs)
        self._fixed_by_block()  # unknown names are an error
        self.__dict__["_fixed_blocks"] = tuple(self._fixed_of(block) for block in (transitions, emission, law))

    def _online_start(self, seqs: Sequences) -> None:
        self._choose_max_duration(seqs)
        super()._online_start(seqs)

    def _starting_means(self, seqs: Sequences, emission: Emission) -> np.ndarray:
        """Twice the mean run of each mode when steps are labelled by the starting emission, in [1, D/2]."""
        labels = self._log_likelihoods(seqs, emission).argmax(axis=1)
        runs = _run_lengths(labels, seqs.offsets)
        owners = labels[np.r_[0, np.cumsum(runs)[:-1]]]
        means = np.array([runs[owners == k].mean() if (owners == k).any() else runs.mean() for k in range(self._k)])
        ceiling = max(1.0, self.max_duration_ / 2)
        return np.clip(2.0 * means, min(1.5, ceiling), ceiling)

    def _smoothed(self, seqs: Sequences) -> tuple[np.ndarray, ...]:
        """:func:`~modeshift._kernels.hsmm.hsmm_smoother` under the current parameters, checked."""
        out = hsmm_smoother(**self._kernel_arguments(seqs))
        overflowed = np.flatnonzero(np.isnan(out[0]))
        if overflowed.size:
            raise ValueError(
                f"sequence {overflowed[0]}: the HSMM's backward messages overflowed; its duration laws "
                f"are far too short for the data (mean durations {np.round(self._duration.mean(), 3)})"
            )
        self._check_possible(out[0], seqs)
        return out

    def _expected_statistics(self, seqs: Sequences, scratch: dict[str, np.ndarray] | None = None) -> Statistics:
        log_lik, posteriors, durations, pairs, _ = self._smoothed(seqs)
        complete = durations[0].copy()
        seen = np.zeros_like(complete)
        censored = (self.left_censoring, self.right_censoring, self.left_censoring or self.right_censoring)
        for kind, cut in zip((1, 2, 3), censored):
            (seen if cut else complete)[...] += durations[kind]
        return Statistics(
            log_likelihood=float(log_lik.sum()),
            transitions=self._blocks[0].statistics(posteriors, seqs.starts, pairs, seqs.inputs),
            emission=self._blocks[1].statistics(seqs.values, posteriors),
            durations=complete + censored_counts(seen, self._duration.pmf()),
        )

    def _m_step(self, seqs: Sequences, stats: Statistics) -> None:
        transitions, emission = self._blocks
        fixed = self.__dict__["_fixed_blocks"]
        transitions.m_step(stats["transitions"], fixed[0])
        emission.m_step(stats["emission"], fixed[1])
        self._duration.m_step(stats["durations"], fixed[2])

    def _warn_truncation(self) -> None:
        law = self._duration
        if isinstance(law, DURATIONS["nonparametric"]) or self.max_duration_ == 1:
            return
        beyond = 1.0 - np.exp(law.log_pmf()).sum(axis=1)
        if beyond.max() > 1e-3:
            warnings.warn(
                f"{type(self).__name__}: the fitted duration law of mode {int(beyond.argmax())} puts "
                f"{beyond.max():.3g} of its mass beyond max_duration={self.max_duration_}; raise max_duration",
                UserWarning,
                stacklevel=3,
            )

    # ----------------------------------------------------------------- inference
    def score(self, X: Any, lengths: Sequence[int] | None = None, *, inputs: Any = None) -> float:
        """Total log-likelihood log p(X) over all sequences (summed over segmentations)."""
        seqs = self._sequences(X, lengths, inputs)
        _, log_lik, _ = hsmm_filter(**self._kernel_arguments(seqs))
        return float(log_lik.sum())

    def filter_proba(self, X: Any, lengths: Sequence[int] | None = None, *, inputs: Any = None) -> PerStep:
        """Filtered mode probabilities p(z_t | observations up to t), (n_steps, K)."""
        seqs = self._sequences(X, lengths, inputs)
        filtered, log_lik, _ = hsmm_filter(**self._kernel_arguments(seqs))
        self._check_possible(log_lik, seqs)
        return seqs.restore(filtered)

    def _posteriors(self, seqs: Sequences) -> np.ndarray:
        return self._smoothed(seqs)[1]

    def _forward(self, seqs: Sequences) -> np.ndarray:
        return hsmm_filter(**self._kernel_arguments(seqs))[0]

    def _viterbi(self, seqs: Sequences) -> tuple[float, np.ndarray]:
        arguments = self._kernel_arguments(seqs)
        del arguments["survival"]
        path, log_prob = hsmm_viterbi(**arguments)
        self._check_possible(log_prob, seqs)
        return float(log_prob.sum()), path

    def sample_posterior(
        self,
        X: Any,
        lengths: Sequence[int] | None = None,
        *,
        random_state: int | np.random.Generator | None = None,
        inputs: Any = None,
    ) -> PerStep:
        """One segmentation drawn from p(segmentation | X), as a mode path (forward filtering, backward sampling)."""
        seqs = self._sequences(X, lengths, inputs)
        uniforms = np.random.default_rng(random_state).random(2 * seqs.n_steps)
        path, log_lik = hsmm_sample_posterior(**self._kernel_arguments(seqs), uniforms=uniforms)
        self._check_possible(log_lik, seqs)
        return seqs.restore(path)

    def _mode_sampler(self, n_steps: int, inputs: Any) -> Callable[[np.random.Generator], np.ndarray]:
        """As :meth:`HMM._mode_sampler`: segments drawn one after the other, the first from the residual
        law with ``left_censoring``, the last cut at ``n_steps``; ``inputs`` drive input-driven switches."""
        transitions = self._blocks[0]
        steps = Sequences.from_array(np.zeros((n_steps, 1)))
        matrices = transitions.kernel_arrays(steps.with_inputs(inputs, self.input_dim, "this HSMM").inputs)[1]
        first_law = self._segment_laws()[0][1]

        def draw(rng: np.random.Generator) -> np.ndarray:
            states = np.empty(n_steps, dtype=np.int64)
            t, k = 0, rng.choice(self._k, p=transitions.initial_probs)
            length = rng.choice(first_law.shape[1], p=first_law[k]) + 1
            while True:
                states[t : t + length] = k
                t += length
                if t >= n_steps:
                    return states
                k = rng.choice(self._k, p=matrices[t if transitions.varying else 0, k])
                length = int(self._duration.sample(np.array([k]), rng)[0])

        return draw

    def forecast(
        self,
        X: Any,
        horizon: int,
        lengths: Sequence[int] | None = None,
        *,
        inputs: Any = None,
        future_inputs: Any = None,
    ) -> Forecast:
        """The predictive distribution of the ``horizon`` observations after each sequence's end.

        The filter gives p(z_T = k, r more steps | y); stepping it forward (a segment with no step
        left hands over to mode j with transmat_[k, j], which starts one of d ~ p_j(d) steps) gives
        the exact ``mode_probabilities`` at T+1 .. T+h; the observations' means and covariances are
        the moments of the mixture of the modes' emissions, as for the HMM. An AR-HSMM's future given
        the data is a jump linear system on the lag state driven by the chain on (mode, steps left),
        whose moments propagate exactly (:func:`~modeshift.dynamics.autoregressive_moments` on
        the K D states of that chain). ``future_inputs`` (horizon, input_dim), or one per sequence,
        drive input-driven switches: row h those into a segment starting at T+1+h.
        """
        horizon = int(horizon)
        seqs = self._sequences(X, lengths, inputs)
        _, log_lik, remaining = hsmm_filter(**self._kernel_arguments(seqs), with_remaining=True)
        self._check_possible(log_lik, seqs)
        futures = check_future_inputs(future_inputs, horizon, seqs.n_sequences, self.input_dim, "this HSMM")
        n_lags = self._blocks[1].n_features * self.order if self.emission == "autoregressive" else 0
        ends = seqs.offsets[1:] - 1  # an AR-HSMM's lagged row is [y_T, ..., y_T-order, 1]
        return Forecast.of_sequences(
            [
                self._forecast_remaining(joint, self._future_matrices(future), seqs.values[end, :n_lags])
                for joint, end, future in zip(remaining, ends, futures, strict=True)
            ]
        )

    def _future_matrices(self, future_inputs: np.ndarray) -> np.ndarray:
        """The switch matrices (horizon, K, K) of the steps after the end, from their checked inputs."""
        matrices = self._blocks[0].kernel_arrays(future_inputs)[1]
        return np.broadcast_to(matrices, (len(future_inputs), self._k, self._k))

    def _forecast_remaining(self, joint: np.ndarray, matrices: np.ndarray, lag_state: np.ndarray) -> Forecast:
        """The forecast from p(z_T = k, r more steps | y) (K, D) with the switch matrices of the
        horizon's steps (horizon, K, K) (and an AR-HSMM's lag state [y_T, ..., y_T-order+1])."""
        pmf, horizon = self._duration.pmf(), len(matrices)
        if self.emission == "autoregressive":
            return self._forecast_autoregressive(joint, lag_state, pmf, matrices)
        first, second = self._state_moments()
        modes = np.empty((horizon, self._k))
        for h in range(horizon):
            starting = joint[:, 0] @ matrices[h]
            joint = np.concatenate([joint[:, 1:], np.zeros((self._k, 1))], axis=1) + starting[:, None] * pmf
            modes[h] = joint.sum(axis=1)
        means = modes @ first
        covariances = np.einsum("hk,kij->hij", modes, second) - means[:, :, None] * means[:, None, :]
        symbols = modes @ self.emissionprob_ if self.emission == "categorical" else None
        return Forecast(means, 0.5 * (covariances + covariances.transpose(0, 2, 1)), modes, symbols)

    def _forecast_autoregressive(
        self, joint: np.ndarray, lag_state: np.ndarray, pmf: np.ndarray, matrices: np.ndarray
    ) -> Forecast:
        """An AR-HSMM's forecast on the Markov chain of (mode k, r more steps), K D states: (k, r)
        moves to (k, r - 1), and (k, 0) to (j, d - 1) with transmat_[k, j] p_j(d); each state
        regresses as its mode. The chain moves per-state moments in O(K D + K^2) without its
        (K D)^2 matrix; O(h K D n^3) in all for a lag state of n numbers."""
        k, span = joint.shape

        def move(per_state: np.ndarray, matrix: np.ndarray) -> np.ndarray:  # (K D, ...) -> (K D, ...)
            law = per_state.reshape(k, span, *per_state.shape[1:])
            moved = np.zeros_like(law)
            moved[:, :-1] = law[:, 1:]
            starting = np.tensordot(matrix, law[:, 0], axes=(0, 0))  # segments starting in each mode
            moved += pmf.reshape(k, span, *[1] * (per_state.ndim - 1)) * starting[:, None]
            return moved.reshape(per_state.shape)

        emission = self._blocks[1]
        each = [np.repeat(a, span, axis=0) for a in (emission.coefs, emission.intercepts, emission.covariances)]
        moves = [functools.partial(move, matrix=matrix) for matrix in matrices]
        modes, means, covariances = autoregressive_moments(joint.ravel(), lag_state, moves, *each)
        return Forecast(means, covariances, modes.reshape(len(matrices), k, span).sum(axis=2))

    # ----------------------------------------------------------------- streaming
    _chain_stream = False  # the filter carries (mode, steps left), not the chain's p(z_t)

    def _stream_recursion(self) -> SemiMarkovRecursion:
        """The filter over (mode, steps left). It equals the batch filter; the stream's total
        log-likelihood is ``score``'s with ``right_censoring`` (a stream goes on: its last
        segment is censored); without it ``score`` adds log P(a segment ends at the last step)."""
        self._check_fitted()
        weights, _ = self._segment_laws()
        return SemiMarkovRecursion(self._blocks[0].initial_probs, weights[1], weights[0])

    def _stream_values(self, state: FilterState, y: Any) -> tuple[np.ndarray, np.ndarray]:
        if self.emission != "autoregressive":
            return super()._stream_values(state, y)
        model = f"an AR-HSMM with order={self.order}"
        return lagged_values(state.history, y, self.order, self._blocks[1].n_features, model)

    def _stream_history(self) -> np.ndarray:
        return np.zeros((0, self._blocks[1].n_features if self.emission == "autoregressive" else 0))

    def filter_forecast(self, state: FilterState, horizon: int, future_inputs: Any = None) -> Forecast:
        """The predictive law of the ``horizon`` observations after those a filter state has seen
        (``future_inputs`` (horizon, input_dim) drive input-driven switches)."""
        horizon = int(horizon)
        future = check_future_inputs(future_inputs, horizon, 1, self.input_dim, "this HSMM")[0]
        if not state.filtered:
            raise ValueError("the filter state has seen no observation yet")
        lag_state = state.history[::-1].ravel()  # [y_T, ..., y_T-order+1]; zeros for lags not seen, as with_lags
        n_lags = self._blocks[1].n_features * self.order if self.emission == "autoregressive" else 0
        lag_state = np.r_[lag_state, np.zeros(n_lags - len(lag_state))]
        return self._forecast_remaining(state.filtered[0], self._future_matrices(future), lag_state)

    def segment(self, X: Any, lengths: Sequence[int] | None = None, *, inputs: Any = None) -> pd.DataFrame:
        """The segments of the most probable segmentation: ``start``, ``end`` (exclusive), ``duration``,
        ``mode`` and ``probability`` (the mode's mean posterior probability over the segment); a
        leading ``sequence`` column for several sequences."""
        table = super().segment(X, lengths, inputs=inputs)
        table.insert(table.columns.get_loc("end") + 1, "duration", table["end"] - table["start"])
        return table

    def describe(self) -> pd.DataFrame:
        """One row per mode: long-run share of time (``occupancy``: visits of the chain of segments
        weighted by their mean duration; with inputs, of the chain at zero input), mean segment
        duration (``dwell_time``) and its sd, the duration law's parameters, switch probabilities
        ``to_j`` (with inputs: ``to_j_at_zero_input`` and the slopes), then the emission's parameters."""
        self._check_fitted()
        transitions, emission = self._blocks
        means = self._duration.mean()
        at_zero_input = transitions.kernel_arrays(np.zeros((1, self.input_dim)))[1][0]
        visits = stationary_distribution(at_zero_input, transitions.initial_probs)
        table = {
            "mode": np.arange(self._k),
            "occupancy": visits * means / (visits @ means),
            **self._duration.describe(),
            **transitions.describe(),
            **emission.describe(),
        }
        return pd.DataFrame(table).set_index("mode")

    @property
    def dwell_times_(self) -> np.ndarray:
        """Mean duration of each mode's segments, in steps."""
        self._check_fitted()
        return self._duration.mean()

    @property
    def n_parameters(self) -> int:
        """Number of free parameters (those held ``fixed`` are not counted)."""
        self._check_fitted()
        blocks = (*self._blocks, self._duration)
        return sum(block.n_parameters(self._fixed_of(block)) for block in blocks)

    # --------------------------------------------------------------- persistence
    def _learned_attributes(self) -> dict[str, Any]:
        return {**super()._learned_attributes(), "max_duration_": self._duration.max_duration}

    def _check_fitted(self) -> None:
        if self._duration.max_duration is None:
            raise NotFittedError("this HSMM has no max_duration_: call fit, or set max_duration")
        super()._check_fitted()


class _Switches(Stationary):
    """The chain of segment modes: a segment ends when the mode changes, so ``transmat_`` has a
    zero diagonal (one mode: [[1]], segments that renew themselves). M-step: the expected
    switch counts plus the Dirichlet pseudo-counts off the diagonal, normalised."""

    def set(self, name: str, value: np.ndarray) -> None:
        super().set(name, value)
        if name == "transition_matrix" and self.n_states > 1 and np.diagonal(self.transition_matrix).any():
            raise ValueError("transmat_ of an HSMM must have a zero diagonal (a segment ends when the mode changes)")

    def _allowed(self) -> np.ndarray:
        return _switches_allowed(self.n_states).astype(float)

    def initialize(self, rng: np.random.Generator) -> None:
        """Uniform start; switch probabilities half uniform, half random, so restarts differ."""
        k = self.n_states
        allowed = self._allowed()
        noise = rng.dirichlet(np.ones(k), size=k) * allowed
        self.transition_matrix = normalise_rows(allowed / allowed.sum(axis=1, keepdims=True) + normalise_rows(noise))
        self.initial_probs = np.full(k, 1.0 / k)

    def m_step(self, stats: Statistics, fixed: frozenset[str] = frozenset()) -> None:
        extra = self.concentration - 1.0
        if "initial_probs" not in fixed:
            self.initial_probs = normalise_rows(stats["initial"] + extra, self.initial_probs)
        if "transition_matrix" not in fixed:
            counts = (stats["transitions"] + extra) * self._allowed()
            self.transition_matrix = normalise_rows(counts, self.transition_matrix)

    def log_prior(self) -> float:
        extra = self.concentration - 1.0
        if extra == 0.0:
            return 0.0
        with np.errstate(divide="ignore"):
            switches = np.log(self.transition_matrix[self._allowed() > 0]).sum()
            return float(extra * (switches + np.log(self.initial_probs).sum()))

    def n_parameters(self, fixed: frozenset[str] = frozenset()) -> int:
        k = self.n_states
        return (0 if "initial_probs" in fixed else k - 1) + (0 if "transition_matrix" in fixed else k * max(k - 2, 0))

    def describe(self) -> dict[str, np.ndarray]:
        """Switch probabilities ``to_j``."""
        return {f"to_{j}": self.transition_matrix[:, j] for j in range(self.n_states)}


class _InputSwitches(InputDriven):
    """Switches driven by inputs: the per-source multinomial logit of
    :class:`~modeshift.transitions.InputDriven` over the destinations j != i (the excluded stay
    has probability 0; the last mode's reference is K-2). ``statistics`` stacks the expected
    switches of every step, whose logit M-step is :func:`~modeshift.transitions_logit.fit_per_source`."""

    def __init__(self, n_states: int, n_features: int, concentration: float, penalty: float):
        super().__init__(n_states, n_features, concentration, penalty, per_source=True)
        self.allowed = _switches_allowed(n_states)

    def set(self, name: str, value: np.ndarray) -> None:
        if name == "coef":  # checked whole before it replaces the current value
            k = self.n_states
            value = check_array("transition_coef_", value, (k, k - 1, 1 + self.n_features))
            frozen = logit.frozen_coefficients(self.allowed)
            if value[frozen].any():
                i, j = np.argwhere(frozen & (value != 0).any(axis=2))[0]
                raise ValueError(
                    f"transition_coef_[{i}, {j}] of an HSMM must be 0 (a mode never switches to itself, "
                    f"and the last mode's reference is mode {k - 2}); got {value[i, j]}"
                )
        super().set(name, value)

    def initialize(self, rng: np.random.Generator) -> None:
        """As :class:`_Switches` at zero input; inputs start without effect."""
        switches = _Switches(self.n_states)
        switches.initialize(rng)
        self.initial_probs = switches.initial_probs
        k = self.n_states
        self.coef = np.zeros((k, k - 1, 1 + self.n_features))
        if k > 2:
            with np.errstate(divide="ignore"):
                log_matrix = np.log(switches.transition_matrix)
            reference = np.r_[np.full(k - 1, k - 1), k - 2]
            intercepts = log_matrix[:, :-1] - log_matrix[np.arange(k), reference][:, None]
            self.coef[:, :, 0] = np.where(logit.frozen_coefficients(self.allowed), 0.0, intercepts)

    def n_parameters(self, fixed: frozenset[str] = frozenset()) -> int:
        k = self.n_states
        count = 0 if "initial_probs" in fixed else k - 1
        return count + (0 if "coef" in fixed else k * max(k - 2, 0) * (1 + self.n_features))

    def describe(self) -> dict[str, np.ndarray]:
        """Switch probabilities at zero input ``to_j_at_zero_input`` and the slopes ``to_j.input{c}``
        (none for a destination no source can choose freely: with two modes every switch is certain)."""
        described = super().describe()
        at_zero = self.kernel_arrays(np.zeros((1, self.n_features)))[1][0]
        described.update({f"to_{j}_at_zero_input": at_zero[:, j] for j in range(self.n_states)})
        for j in np.flatnonzero(logit.frozen_coefficients(self.allowed).all(axis=0)):
            for c in range(self.n_features):
                del described[f"to_{j}.input{c}"]
        return described


def _switches_allowed(n_states: int) -> np.ndarray:
    """(K, K) the switches a semi-Markov chain can make: never to the same mode (one mode: renewal)."""
    return np.ones((1, 1), dtype=bool) if n_states == 1 else ~np.eye(n_states, dtype=bool)


def _longest_runs(model: HSMM, seqs: Sequences, emission: Emission) -> Stacked:
    """The longest sequence and the longest run of one mode when steps are labelled by
    ``emission``: one row per shard (stacked, so the client takes their maxima)."""
    runs = _run_lengths(model._log_likelihoods(seqs, emission).argmax(axis=1), seqs.offsets)
    return Stacked(np.array([[seqs.lengths.max(), runs.max()]]))


def _run_lengths(labels: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Lengths of the runs of one label, runs cut at sequence boundaries, in order."""
    cuts = np.union1d(np.flatnonzero(labels[1:] != labels[:-1]) + 1, offsets)
    return np.diff(cuts)
