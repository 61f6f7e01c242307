"""Hidden Markov models with Gaussian, Gaussian-mixture, categorical or Poisson emissions."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Generator, Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from modeshift import _kernels as kernels
from modeshift._kernels import streaming as stream_kernels
from modeshift._kernels.layout import canonical
from modeshift.chain_analysis import dwell_times
from modeshift.data import Sequences, as_sequences
from modeshift.emissions import Autoregressive, Categorical, Emission, Gaussian, GaussianMixture, Poisson
from modeshift.models import em, online_em, selection
from modeshift.models.base import (
    Forecast,
    Model,
    NotFittedError,
    check_future_inputs,
    check_possible,
    mode_segments,
    simulated,
)
from modeshift.models.params import Integer, Number, OneOf, either
from modeshift.models.streaming import FilterState, Recursion, StepOutput, StreamingFilters, check_input_row, check_row
from modeshift.statistics import Statistics, combine
from modeshift.transitions import InputDriven, Stationary

__all__ = ["HMM"]

PerStep = np.ndarray | list[np.ndarray]  # one array, or one per sequence for list input

EMISSIONS = ("gaussian", "gmm", "categorical", "poisson")
#: Steps x modes of one block of an E-step (:meth:`HMM._e_step`): its arrays of (steps, K) floats,
#: 2 MiB each, stay in a core's cache with room for two processes.
BLOCK_CELLS = 2**18


class HMM(Model, StreamingFilters):
    """A hidden Markov model fit by expectation-maximisation.

    A hidden state z_t in {0, ..., K-1} follows a Markov chain with initial
    distribution ``startprob_`` and transition matrix ``transmat_``; the
    observation y_t depends only on z_t through the chosen emission.

    Parameters
    ----------
    n_states : int or "auto"
        Number of hidden states K; ``"auto"`` chooses it by BIC among 1 ..
        ``max_states`` (see :func:`~modeshift.models.selection.select_n_states`):
        ``n_states_`` is the choice, ``selection_`` the table of candidates.
    max_states : int
        Largest number of states tried by ``n_states="auto"``.
    emission : {"gaussian", "gmm", "categorical", "poisson"}
        Gaussian (``means_``, ``covars_``), mixture of ``n_mix`` Gaussians per
        state (``weights_``, ``means_``, ``covars_``), categorical symbols
        (``emissionprob_``) or independent Poisson counts (``lambdas_``).
    covariance : {"full", "diag", "spherical", "tied"}
        Covariance structure of Gaussian components. ``covars_`` is always
        returned as full (K, D, D) matrices.
    n_mix : int
        Components per state for ``emission="gmm"``.
    n_symbols : int, optional
        Alphabet size for ``emission="categorical"`` (default: largest symbol + 1).
    n_iter, tol : int, float
        EM stops after ``n_iter`` iterations or when the objective improves by
        less than ``tol`` (see :mod:`modeshift.models.em`); ``n_iter=0`` only initialises.
        The defaults stop within about 1e-7 of the maximised log-likelihood, where the
        parameters are within ~1e-3 standard errors of the maximiser (hmmlearn's
        tol=1e-2 can stop on a ridge, or near a saddle EM has not yet left).
    accelerate : bool
        Accelerate EM by SQUAREM (:mod:`modeshift.models.em`): the same fixed point in a
        fraction of the iterations where EM crawls; False runs plain EM, step for step
        as hmmlearn.
    n_restarts : int
        EM runs from this many initialisations; the best objective wins.
    random_state : int or numpy Generator, optional
    warm_start : bool
        Start ``fit`` from the current parameters (learned or set by hand) instead of afresh.
    fixed : iterable of str
        Parameters held fixed during ``fit`` (e.g. ``{"transmat_"}``); set them
        by hand first, or they keep their data-driven starting values. A given
        initial distribution is ``fixed={"startprob_"}`` with ``startprob_`` set by hand.
    init : {"learned", "stationary"}
        The law of each sequence's first state: ``"learned"``, a free ``startprob_``
        estimated with the rest; ``"stationary"``, the stationary distribution of
        ``transmat_`` (a chain already in equilibrium, as in Zucchini, MacDonald &
        Langrock's HMMs), so ``startprob_`` follows ``transmat_`` and both are
        maximised jointly (see :class:`~modeshift.transitions.Stationary`); not with inputs.
    transition_concentration, stickiness : float
        Dirichlet prior on ``startprob_`` and the rows of ``transmat_``
        (concentration 1 = none) and extra pseudo-counts on the diagonal.
    reg_covar : float
        Added to the diagonal of Gaussian scatter matrices in the M-step
        (a penalty -reg_covar/2 tr(inv(covariance))).
    input_dim : int
        With ``input_dim > 0`` the chain is driven by inputs u_t passed as
        ``inputs=`` (n_steps, input_dim) to every method:
        p(z_t = j | z_t-1 = i, u_t) = softmax_j(r_ij + w_j . u_t), parameters
        ``recurrence_biases_`` (K, K) and ``input_weights_`` (K, input_dim)
        instead of ``transmat_`` (see :class:`~modeshift.transitions.InputDriven`).
        Entry t of ``inputs`` drives the move z_t-1 -> z_t.
    input_slopes : {"shared", "per_source"}
        How inputs enter the transitions: ``"shared"``, one slope w_j per destination
        whatever the source (above); ``"per_source"``, a slope per (source, destination),
        p(z_t = j | z_t-1 = i, u_t) proportional to exp(B[i, j] . (1, u_t)) with the last
        mode the reference (B[i, K-1] = 0), parameter ``transition_coef_``
        (K, K-1, 1 + input_dim), column 0 the intercept: statsmodels' Markov-switching
        ``exog_tvtp`` coefficients for the covariates (1, u_t).
    transition_penalty : float
        L2 prior on those parameters (> 0 with shared slopes, which it identifies; >= 0 per source).
    verbose : bool
        Show a live progress bar of the EM iterations, one per restart (drawn by :mod:`modeshift.progress`).
    callback : callable, optional
        ``callback(iteration, objective)`` at every EM iteration of every restart (and of
        every candidate for ``n_states="auto"``); not saved with the model.

    Attributes
    ----------
    startprob_, transmat_ : arrays
        Learned (or hand-set) chain parameters; emission parameters as above. With inputs,
        ``recurrence_biases_`` and ``input_weights_`` (shared slopes) or ``transition_coef_``
        (per source) instead of ``transmat_``.
    history_ : list of float
        Log-likelihood plus log prior (the penalised objective EM increases)
        at each iteration of the best restart.
    converged_ : bool
    n_iter_ : int
        EM iterations run by the best restart.

    Notes
    -----
    Parameters set by hand on a model never fitted are the starting point of the
    first restart (``warm_start=True``: also those of an earlier fit). Missing values (NaN)
    are integrated out exactly in ``fit``, ``score``, ``predict`` and
    ``predict_proba``: a wholly missing step carries no evidence, missing
    dimensions of a Gaussian are marginalised.

    Examples
    --------
    >>> import numpy as np
    >>> from modeshift import HMM
    >>> X = np.r_[np.random.default_rng(0).normal(0, 1, 200), np.random.default_rng(1).normal(5, 1, 200)]
    >>> model = HMM(n_states=2, random_state=0).fit(X)
    >>> np.sort(model.means_.ravel()).round()
    array([0., 5.])
    """

    def __init__(
        self,
        n_states: int | str = 2,
        emission: str = "gaussian",
        covariance: str = "full",
        n_mix: int = 1,
        n_symbols: int | None = None,
        n_iter: int = 1000,
        tol: float = 1e-7,
        n_restarts: int = 1,
        random_state: int | np.random.Generator | None = None,
        fixed: Iterable[str] = (),
        init: str = "learned",
        transition_concentration: float = 1.0,
        stickiness: float = 0.0,
        reg_covar: float = 1e-6,
        input_dim: int = 0,
        transition_penalty: float = 1e-2,
        input_slopes: str = "shared",
        max_states: int = 10,
        accelerate: bool = True,
        warm_start: bool = False,
        verbose: bool = False,
        callback: Callable[[int, float], Any] | None = None,
    ):
        self.n_states = n_states
        self.max_states = max_states
        self.emission = emission
        self.covariance = covariance
        self.n_mix = n_mix
        self.n_symbols = n_symbols
        self.n_iter = n_iter
        self.tol = tol
        self.n_restarts = n_restarts
        self.random_state = random_state
        self.fixed = fixed
        self.init = init
        self.transition_concentration = transition_concentration
        self.stickiness = stickiness
        self.reg_covar = reg_covar
        self.input_dim = input_dim
        self.transition_penalty = transition_penalty
        self.input_slopes = input_slopes
        self.accelerate = accelerate
        self.warm_start = warm_start
        self.verbose = verbose
        self.callback = callback

    _constraints = {
        "emission": OneOf(EMISSIONS),
        "init": OneOf(("learned", "stationary")),
        "covariance": OneOf(("full", "diag", "spherical", "tied")),
        "n_mix": Integer(1),
        "n_symbols": either(Integer(1), OneOf((None,))),
        "transition_concentration": Number(0, open_low=True),
        "stickiness": Number(0),
        "reg_covar": Number(0),
        "input_dim": Integer(0),
        "transition_penalty": Number(0),
        "input_slopes": OneOf(("shared", "per_source")),
    }
    _renamed = {"log_likelihood_history_": "history_"}
    _file_attributes = {**Model._file_attributes, "n_states_": "count", "selection_": "table"}

    # --------------------------------------------------------- parameter access
    @property
    def _parameter_homes(self) -> dict[str, tuple[Any, str]]:
        """Model attribute name -> (block, attribute of the block)."""
        transitions, emission = self._blocks
        homes = {name: (transitions, attr) for name, attr in transitions.parameters.items()}
        homes.update({name: (emission, attr) for name, attr in emission.parameters.items()})
        return homes

    @property
    def _blocks(self) -> tuple[Stationary | InputDriven, Emission]:
        blocks = self.__dict__.get("_blocks_")
        if blocks is None:
            if self._transition_inputs and self.init == "stationary":
                raise ValueError(f"{type(self).__name__}: init='stationary' needs a chain without inputs (input_dim=0)")
            if self._transition_inputs:
                transitions = InputDriven(
                    self._k,
                    self._transition_inputs,
                    self.transition_concentration,
                    self.transition_penalty,
                    per_source=self.input_slopes == "per_source",
                )
            else:
                transitions = Stationary(
                    self._k, self.transition_concentration, self.stickiness, self.init == "stationary"
                )
            blocks = (transitions, self._make_emission())
            self.__dict__["_blocks_"] = blocks
        return blocks

    @property
    def _transition_inputs(self) -> int:
        """How many inputs drive the transitions (0: a stationary chain)."""
        return self.input_dim

    @property
    def keeps_rows(self) -> bool:
        """Whether a fit over shards keeps per-step rows there (:mod:`modeshift.models.em`): those of
        input-driven transitions, whose M-step reads sums over them (:class:`~modeshift.transitions.InputDriven`)."""
        return bool(self._transition_inputs)

    def _make_emission(self) -> Emission:
        k = self._k
        if self.emission == "gaussian":
            return Gaussian(k, self.covariance, self.reg_covar)
        if self.emission == "gmm":
            return GaussianMixture(k, self.n_mix, self.covariance, self.reg_covar)
        if self.emission == "categorical":
            return Categorical(k, self.n_symbols)
        return Poisson(k)

    @property
    def parameter_names(self) -> tuple[str, ...]:
        """Names of this model's parameters (``startprob_``, ``transmat_``, emission parameters)."""
        return tuple(self._parameter_homes)

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails: parameters live in the blocks.
        if name.endswith("_") and not name.startswith("_") and "n_states" in self.__dict__:
            home = self._parameter_homes.get(name)
            value = None if home is None else getattr(*home)
            if value is not None:
                return value
        return super().__getattr__(name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name.endswith("_") and name not in selection.FIT_RESULTS and "n_states" in self.__dict__:
            home = self._parameter_homes.get(name)
            if home is not None:
                home[0].set(home[1], value)
                return
        object.__setattr__(self, name, value)

    def _snapshot(self) -> dict[str, np.ndarray]:
        """Copies of the parameters that are currently set."""
        return {
            name: np.array(getattr(block, attr))
            for name, (block, attr) in self._parameter_homes.items()
            if getattr(block, attr) is not None
        }

    def _check_fitted(self) -> None:
        missing = [name for name, (block, attr) in self._parameter_homes.items() if getattr(block, attr) is None]
        if missing:
            names = ", ".join(missing)
            raise NotFittedError(f"this {type(self).__name__} has no {names}: call fit, or set them by hand")

    def _fixed_by_block(self) -> frozenset[str]:
        homes = self._parameter_homes
        unknown = [name for name in self.fixed if name not in homes]
        if unknown:
            raise ValueError(f"fixed names unknown parameters {unknown}; known: {list(homes)}")
        if self.init == "stationary" and "startprob_" in self.fixed:
            raise ValueError("init='stationary' ties startprob_ to transmat_: fix transmat_, or use init='learned'")
        return frozenset(homes[name][1] for name in self.fixed)

    # ---------------------------------------------------------------------- data
    def _sequences(self, X: Any, lengths: Sequence[int] | None, inputs: Any = None) -> Sequences:
        seqs = self._blocks[1].validate(as_sequences(X, lengths))
        return seqs.with_inputs(inputs, self.input_dim, f"this {type(self).__name__}")

    def _evidence(self, seqs: Sequences, scratch: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray | None]:
        """Emission log-likelihoods in the kernels' form: ``log_likelihoods`` and optional ``rows``
        (the table among an E-step's ``scratch`` arrays, if the emission keeps it there)."""
        table, rows = self._blocks[1].log_likelihood_table(seqs.values, scratch)
        check_evidence(table, rows, seqs, type(self).__name__)
        return {"log_likelihoods": np.ascontiguousarray(table), "rows": rows}

    # ------------------------------------------------------------------------ EM
    def fit(self, X: Any, lengths: Sequence[int] | None = None, *, inputs: Any = None, **columns: Any) -> HMM:
        """Estimate parameters by EM (Baum-Welch) with restarts (:func:`modeshift.models.em.run`); returns ``self``.

        ``X`` is any form :func:`~modeshift.data.as_sequences` accepts (``columns`` name a
        data frame's ``id_column``, ``time_column``, ...).
        """
        self._start_fit()
        seqs = as_sequences(X, lengths, **columns).require_observed(every_sequence=False)
        self._fit_preprocessing(seqs)
        if self.n_states == "auto":
            return self._fit_auto(seqs.with_inputs(inputs, self.input_dim, f"this {type(self).__name__}"))
        return self._fit_em(self._sequences(seqs, None, inputs))

    def _em_data(
        self, X: Any, lengths: Sequence[int] | None = None, *, inputs: Any = None, **columns: Any
    ) -> Sequences:
        """What EM reads, from ``fit``'s arguments (or one shard of them: :mod:`modeshift.distributed`)."""
        return self._sequences(as_sequences(X, lengths, **columns), None, inputs)

    def _fit_em(self, seqs: Sequences, over: em.Over | None = None) -> HMM:
        """EM from the starting parameters; ``over`` runs the E-steps over shards held elsewhere,
        ``seqs`` being then a sample of them to start from (:func:`modeshift.models.em.run`)."""
        self.__dict__["_given"] = self._snapshot()
        em.run(self, seqs, label=f"{type(self).__name__} K={self._k}", over=over)
        del self.__dict__["_given"]
        self._finish_fit(seqs)
        return self

    def _fit_preprocessing(self, seqs: Sequences) -> None:
        """Learn what turns the data into the model's rows (nothing here), before EM."""

    def _fit_auto(self, seqs: Sequences) -> HMM:
        self.__dict__.pop("_blocks_", None)
        selection.fit_auto(self, seqs)
        self._finish_fit(seqs)
        return self

    def _em_initialize(self, seqs: Sequences, rng: np.random.Generator, restart: int) -> None:
        given = self.__dict__["_given"]
        keep = given if restart == 0 else {k: v for k, v in given.items() if k in self.fixed}
        transitions, emission = self._blocks
        if not keep.keys() >= transitions.parameters.keys():
            transitions.initialize(rng)
        if not keep.keys() >= emission.parameters.keys():
            emission.initialize(seqs.values, rng)
        for name, value in keep.items():
            setattr(self, name, value)
        emission.validate(seqs)
        self.__dict__["_fixed_blocks"] = self._fixed_by_block()

    def _e_step(self, seqs: Sequences, workspace: dict[str, Any]) -> tuple[float, Statistics]:
        """The expected statistics added up over blocks of about :data:`BLOCK_CELLS` / K steps
        (:meth:`Sequences.blocks`), whose per-step arrays stay in the cache: 1.4 times faster on
        10^6 steps with K = 8, and two processes slow each other less."""
        scratch = workspace.setdefault("scratch", {})
        blocks = seqs.blocks(max(1, BLOCK_CELLS // self._k))
        try:
            stats = functools.reduce(combine, (self._expected_statistics(block, scratch) for block in blocks))
        except ValueError:  # impossible data: named as a place in ``seqs``, not in a block of it
            self._expected_statistics(seqs)
            raise
        return float(stats["log_likelihood"]) + self._log_prior(), stats

    def _m_step(self, seqs: Sequences, stats: Statistics) -> None:
        self._maximize(stats, self.__dict__["_fixed_blocks"])

    # ----------------------------------------------------------------- online EM
    def partial_fit(
        self,
        X: Any,
        lengths: Sequence[int] | None = None,
        *,
        inputs: Any = None,
        step_exponent: float = online_em.DEFAULT_EXPONENT,
    ) -> HMM:
        """Learn from one more chunk of a stream by online EM (:mod:`modeshift.models.online_em`):
        the running expected statistics move towards the chunk's by gamma_n = n^-step_exponent,
        then the M-step of :meth:`fit`. Starts from the current parameters (learned or hand-set),
        else from data-driven values on the first chunk. Not for ``n_states="auto"`` or inputs."""
        self._check_params()
        if self.n_states == "auto" or self._transition_inputs:
            raise NotImplementedError("online EM needs a fixed number of states and a chain without inputs")
        online_em.step_size(1, step_exponent)  # checks the exponent
        seqs = self._sequences(X, lengths, inputs)
        online_em.online_em_step(self, seqs, self._n_observations(seqs), step_exponent)
        self._finish_fit()
        return self

    def _online_start(self, seqs: Sequences) -> None:
        self.__dict__["_given"] = self._snapshot()
        self._em_initialize(seqs, np.random.default_rng(self.random_state), 0)
        del self.__dict__["_given"]

    def _online_statistics(self, seqs: Sequences) -> tuple[float, Statistics]:
        stats = self._expected_statistics(seqs)
        return float(stats["log_likelihood"]), Statistics({k: v for k, v in stats.items() if k != "log_likelihood"})

    def _online_maximize(self, seqs: Sequences, stats: Statistics) -> None:
        self._m_step(seqs, stats)

    def _online_parameters(self) -> dict[str, np.ndarray]:
        return self._snapshot()

    def _em_snapshot(self) -> dict[str, np.ndarray]:
        return self._snapshot()

    def _em_restore(self, snapshot: dict[str, np.ndarray]) -> None:
        if self.init == "stationary":  # the start follows the matrix
            snapshot = {name: value for name, value in snapshot.items() if name != "startprob_"}
        for name, value in snapshot.items():
            setattr(self, name, value)

    def expected_statistics(self, X: Any, lengths: Sequence[int] | None = None, *, inputs: Any = None) -> Statistics:
        """E-step: log-likelihood and expected sufficient statistics under the current parameters.

        Statistics of disjoint batches add up (``sum(...)``), so the E-step can
        be sharded and reduced before one M-step.
        """
        seqs = X if isinstance(X, Sequences) and X.inputs is not None else self._sequences(X, lengths, inputs)
        return self._expected_statistics(seqs)

    def _expected_statistics(self, seqs: Sequences, scratch: dict[str, np.ndarray] | None = None) -> Statistics:
        transitions, emission = self._blocks
        initial, matrices = transitions.kernel_arrays(seqs.inputs)
        smoother = kernels.forward_backward_varying if transitions.varying else kernels.forward_backward
        log_lik, posteriors, pairs = smoother(
            offsets=seqs.offsets,
            initial_probs=initial,
            transition_matrices=matrices,
            scratch=scratch,
            **self._evidence(seqs, scratch),
        )
        self._check_possible(log_lik, seqs)
        return Statistics(
            log_likelihood=float(log_lik.sum()),
            transitions=transitions.statistics(posteriors, seqs.starts, pairs, seqs.inputs),
            emission=emission.statistics(seqs.values, posteriors),
        )

    def _maximize(self, stats: Statistics, fixed: frozenset[str]) -> None:
        transitions, emission = self._blocks
        transitions.m_step(stats["transitions"], fixed)
        emission.m_step(stats["emission"], fixed)

    def _log_prior(self) -> float:
        transitions, emission = self._blocks
        return transitions.log_prior() + emission.log_prior()

    def _check_possible(self, log_lik: np.ndarray, seqs: Sequences) -> None:
        """The rule for impossible data (:func:`~modeshift.models.base.check_possible`); the filter finds the step."""
        check_possible(
            log_lik,
            "an observation no mode can emit, or a forbidden transition",
            lambda: self._forward(seqs),
            seqs.offsets,
        )

    def _forward(self, seqs: Sequences) -> np.ndarray:
        """p(z_t | y_0..t) of every step, unchecked (no law from an impossible step on)."""
        initial, matrices = self._blocks[0].kernel_arrays(seqs.inputs)
        return kernels.forward_filter(
            offsets=seqs.offsets, initial_probs=initial, transition_matrices=matrices, **self._evidence(seqs)
        )[0]

    # ----------------------------------------------------------------- inference
    def score(self, X: Any, lengths: Sequence[int] | None = None, *, inputs: Any = None) -> float:
        """Total log-likelihood log p(X) over all sequences."""
        self._check_fitted()
        seqs = self._sequences(X, lengths, inputs)
        initial, matrices = self._blocks[0].kernel_arrays(seqs.inputs)
        log_lik = kernels.log_likelihood(
            offsets=seqs.offsets, initial_probs=initial, transition_matrices=matrices, **self._evidence(seqs)
        )
        return float(log_lik.sum())

    def predict_proba(self, X: Any, lengths: Sequence[int] | None = None, *, inputs: Any = None) -> PerStep:
        """Smoothed state posteriors p(z_t | all observations), (n_steps, K)."""
        seqs = self._sequences(X, lengths, inputs)
        return seqs.restore(self._posteriors(seqs))

    def filter_proba(self, X: Any, lengths: Sequence[int] | None = None, *, inputs: Any = None) -> PerStep:
        """Filtered state probabilities p(z_t | observations up to t), (n_steps, K)."""
        self._check_fitted()
        seqs = self._sequences(X, lengths, inputs)
        return seqs.restore(self._filtered(seqs))

    def _filtered(self, seqs: Sequences) -> np.ndarray:
        """p(z_t | y_0..t) for every step (n_steps, K)."""
        initial, matrices = self._blocks[0].kernel_arrays(seqs.inputs)
        filtered, log_lik = kernels.forward_filter(
            offsets=seqs.offsets, initial_probs=initial, transition_matrices=matrices, **self._evidence(seqs)
        )
        self._check_possible(log_lik, seqs)
        return filtered

    def _posteriors(self, seqs: Sequences) -> np.ndarray:
        self._check_fitted()
        initial, matrices = self._blocks[0].kernel_arrays(seqs.inputs)
        log_lik, posteriors, _ = kernels.forward_backward(
            offsets=seqs.offsets, initial_probs=initial, transition_matrices=matrices, **self._evidence(seqs)
        )
        self._check_possible(log_lik, seqs)
        return posteriors

    def decode(self, X: Any, lengths: Sequence[int] | None = None, *, inputs: Any = None) -> tuple[float, PerStep]:
        """Most likely state path (Viterbi) and its joint log-probability log p(X, path)."""
        seqs = self._sequences(X, lengths, inputs)
        log_prob, path = self._viterbi(seqs)
        return log_prob, seqs.restore(path)

    def _viterbi(self, seqs: Sequences) -> tuple[float, np.ndarray]:
        self._check_fitted()
        log_initial, log_matrices = self._blocks[0].log_kernel_arrays(seqs.inputs)
        path, log_prob = kernels.viterbi(
            offsets=seqs.offsets, log_initial=log_initial, log_transitions=log_matrices, **self._evidence(seqs)
        )
        self._check_possible(log_prob, seqs)
        return float(log_prob.sum()), path

    def predict(self, X: Any, lengths: Sequence[int] | None = None, *, inputs: Any = None) -> PerStep:
        """Most likely state path (Viterbi)."""
        return self.decode(X, lengths, inputs=inputs)[1]

    def sample_posterior(
        self,
        X: Any,
        lengths: Sequence[int] | None = None,
        *,
        random_state: int | np.random.Generator | None = None,
        inputs: Any = None,
    ) -> PerStep:
        """One state path drawn from p(z | X) (forward filtering, backward sampling)."""
        self._check_fitted()
        seqs = self._sequences(X, lengths, inputs)
        rng = np.random.default_rng(random_state)
        initial, matrices = self._blocks[0].kernel_arrays(seqs.inputs)
        path, log_lik = kernels.sample_posterior_paths(
            offsets=seqs.offsets,
            initial_probs=initial,
            transition_matrices=matrices,
            uniforms=rng.random(seqs.n_steps),
            **self._evidence(seqs),
        )
        self._check_possible(log_lik, seqs)
        return seqs.restore(path)

    def sample(
        self,
        n_steps: int,
        n_sequences: int = 1,
        random_state: int | np.random.Generator | None = None,
        *,
        inputs: Any = None,
    ) -> tuple[PerStep, PerStep]:
        """Simulate ``n_sequences`` sequences of ``n_steps`` steps: observations (n_steps, D) and
        modes (n_steps,), or lists of them for several sequences; ``inputs`` (n_steps, input_dim)
        drive an input-driven chain (the same for every sequence)."""
        self._check_fitted()
        rng = np.random.default_rng(random_state)
        modes, emission = self._mode_sampler(int(n_steps), inputs), self._blocks[1]
        draws = []
        for _ in range(int(n_sequences)):
            states = modes(rng)
            draws.append((emission.sample(states, rng), states))
        return simulated(draws)

    def _mode_sampler(self, n_steps: int, inputs: Any) -> Callable[[np.random.Generator], np.ndarray]:
        """A function drawing a mode path of ``n_steps`` steps (driven by ``inputs``) with the generator
        it is given, for :meth:`sample`: here the Markov chain's."""
        transitions = self._blocks[0]
        features = None
        if self.input_dim:
            features = Sequences.from_array(np.zeros((n_steps, 1))).with_inputs(inputs, self.input_dim).inputs
        return lambda rng: transitions.sample(n_steps, rng, features)

    # ----------------------------------------------------------------- streaming
    #: the streaming filter carries p(z_t | y_0..t) (K,), so a Gaussian chain's step can be one compiled call
    _chain_stream = True

    def filter_step(self, state: FilterState, y: Any, inputs: Any = None) -> tuple[FilterState, StepOutput]:
        """Condition the filter on one more observation ``y`` (a row; NaN marks a missing entry) and,
        for a model with inputs, its ``inputs`` row. Returns the new state and a :class:`StepOutput`.
        A Gaussian chain without inputs or lag takes its whole step in one compiled call."""
        fused = self._fused_step(state, y, inputs)
        return super().filter_step(state, y, inputs) if fused is None else fused

    def _step(
        self, recursion: Recursion, state: FilterState, y: Any, inputs: Any, constants: dict[str, Any]
    ) -> tuple[FilterState, StepOutput]:
        fused = self._fused_step(state, y, inputs)
        return super()._step(recursion, state, y, inputs, constants) if fused is None else fused

    def _fused_step(self, state: Any, y: Any, inputs: Any) -> tuple[FilterState, StepOutput] | None:
        """The step by :func:`~modeshift._kernels.streaming.gaussian_chain_step`; None where it does not
        apply or the step fails (bad y, impossible y, not fitted): the checked path then names the problem."""
        transitions = self._blocks[0]
        stationary = self._chain_stream and type(transitions) is Stationary
        if not (stationary and inputs is None and type(state) is FilterState):
            return None
        first = not state.filtered
        law = transitions.initial_probs if first else state.filtered[0]
        matrix = transitions.transition_matrix
        if state.lag or law is None or matrix is None or len(law) != len(matrix) or np.ndim(y) > 1:
            return None
        try:
            row = canonical(y).reshape(-1)
        except (TypeError, ValueError):
            return None
        emission = self._step_emission(state, row)
        if emission is None:
            return None
        means, covariances, history = emission
        filtered = np.empty(len(law))
        log_lik = stream_kernels.gaussian_chain_step(law, first, matrix, means, covariances, row, filtered)
        if not math.isfinite(log_lik):
            return None
        new = FilterState(state.step + 1, (filtered,), history)
        return new, StepOutput(state.step, log_lik, new, self, filtered)

    def _step_emission(self, state: FilterState, row: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The Gaussian law of y_t in each mode given the past, for the fused step: (means (K, d),
        covariances (K, d, d), the new history); None for an emission that is not Gaussian or a row
        of the wrong length."""
        emission = self._blocks[1]
        if type(emission) is not Gaussian or emission.means is None or emission.covariances is None:
            return None
        return (emission.means, emission.covariances, state.history) if len(row) == emission.means.shape[1] else None

    def _stream_recursion(self) -> Recursion:
        self._check_fitted()
        return Recursion(self._blocks[0].initial_probs)

    def _stream_evidence(self, state: FilterState, y: Any, inputs: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """log p(y_t | z_t = k) (K,), the transition matrix into step t and the new history."""
        transitions, emission = self._blocks
        row, history = self._stream_values(state, y)
        features = check_input_row(inputs, self.input_dim, f"this {type(self).__name__}")
        move = transitions.kernel_arrays(features[None])[1][0] if self.input_dim else transitions.transition_matrix
        return emission.log_likelihoods(row[None])[0], move, history

    def _stream_evidences(self, state: FilterState, rows: np.ndarray, inputs: np.ndarray | None) -> list[tuple]:
        evidence = self._block_evidence(state, rows, inputs)
        if evidence is None:
            return super()._stream_evidences(state, rows, inputs)
        move = self._blocks[0].transition_matrix
        return [(row, move, state.history) for row in evidence]

    def _stream_block(
        self, recursion: Recursion, state: FilterState, rows: np.ndarray, inputs: np.ndarray | None
    ) -> Generator[StepOutput, None, FilterState]:
        """Without a lag, a block runs through the compiled forward filter from the predicted law,
        and each step's log p(y_t | y_<t) = log sum_k p(z_t = k | y_<t) p(y_t | k) comes from its
        predicted law (filtered law of t - 1 times the transition matrix)."""
        evidence = None if state.lag or type(recursion) is not Recursion else self._block_evidence(state, rows, inputs)
        if evidence is None and not state.lag and inputs is None and type(recursion) is Recursion:
            constants = self._stream_constants()
            for y in rows:  # an autoregression: row by row, each by the fused step where it applies
                state, out = self._step(recursion, state, y, None, constants)
                yield out
            return state
        if evidence is None:
            return (yield from super()._stream_block(recursion, state, rows, inputs))
        move = self._blocks[0].transition_matrix
        first = recursion.predict(state.filtered, move)[0] if state.filtered else recursion.first(move)[0]
        filtered, _ = kernels.forward_filter(evidence, np.array([0, len(evidence)]), first, move[None])
        predicted = np.vstack([first, filtered[:-1] @ move])
        shift = evidence.max(axis=1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_liks = np.log(np.einsum("tk,tk->t", predicted, np.exp(evidence - shift))) + shift[:, 0]
        if not np.isfinite(log_liks).all():  # an impossible step: the step-by-step path says which and why
            return (yield from super()._stream_block(recursion, state, rows, inputs))
        step, history = state.step, state.history
        for t, (law, log_lik) in enumerate(zip(list(filtered), log_liks.tolist())):  # the rows' views at C speed
            state = FilterState(step + t + 1, (law,), history)
            yield StepOutput(step + t, log_lik, state, self, law)
        return state

    def _block_evidence(self, state: FilterState, rows: np.ndarray, inputs: np.ndarray | None) -> np.ndarray | None:
        """log p(y_t | z_t = k) of a block of rows, checked at once; None for an autoregression or a
        chain with inputs (their rows go one by one)."""
        if isinstance(self._blocks[1], Autoregressive) or self.input_dim or inputs is not None:
            return None
        emission = self._blocks[1]
        values = np.asarray(rows, dtype=float)
        values = values[:, None] if values.ndim == 1 else values
        if values.ndim != 2 or values.shape[1] != emission.n_features:
            raise ValueError(
                f"the rows have shape {np.shape(rows)}, the model expects {emission.n_features} feature(s)"
            )
        infinite = np.flatnonzero(np.isinf(values).any(axis=1))
        if infinite.size:
            raise ValueError(f"y_t at step {state.step + infinite[0]} has an infinite entry: {values[infinite[0]]}")
        if self.emission in ("categorical", "poisson"):
            try:
                emission.validate(Sequences.from_array(values))
            except ValueError as error:
                raise ValueError(f"the rows from step {state.step}: {error}") from None
        return np.ascontiguousarray(emission.log_likelihoods(values))

    def _stream_values(self, state: FilterState, y: Any) -> tuple[np.ndarray, np.ndarray]:
        """Step t's row of values as the emission takes it, checked, and the new history."""
        emission = self._blocks[1]
        row = check_row(y, emission.n_features)
        if self.emission in ("categorical", "poisson"):
            try:
                emission.validate(Sequences.from_array(row[None]))
            except ValueError as error:
                raise ValueError(f"y_t = {row}: {error}") from None
        return row, state.history

    def filter_forecast(self, state: FilterState, horizon: int, future_inputs: Any = None) -> Forecast:
        """The predictive law of the ``horizon`` observations after those a filter state has seen
        (as :meth:`forecast` after them; ``future_inputs`` (horizon, input_dim) for a chain with inputs)."""
        if not state.filtered:
            raise ValueError("the filter state has seen no observation yet")
        horizon = int(horizon)
        future = check_future_inputs(future_inputs, horizon, 1, self.input_dim, f"this {type(self).__name__}")[0]
        matrices = np.broadcast_to(self._blocks[0].kernel_arrays(future)[1], (horizon, self._k, self._k))
        return self._forecast_sequence(state.history[::-1].ravel(), state.filtered[0], matrices)

    # ------------------------------------------------------------------ forecasts
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

        The filtered mode probabilities pi_T = p(z_T | y_0..T) are propagated by the
        transition matrices, pi_T+h = pi_T+h-1 P_T+h: the ``mode_probabilities`` are exact.
        The observation y_T+h then follows the mixture sum_k pi_T+h,k p(y | z = k), whose
        mean and covariance are sum_k pi_k mu_k and sum_k pi_k E[y y' | k] - mean mean',
        with the moments of each state's emission (a GMM's mixture moments; for Poisson the
        rates, also on the diagonal of the covariance; for categorical those of the symbol
        codes, next to the exact ``symbol_probabilities`` pi_T+h emissionprob_).

        ``future_inputs`` (horizon, input_dim), or a list of them (one per sequence), drive
        an input-driven chain. Returns a :class:`~modeshift.models.base.Forecast`, with
        lists for several sequences.
        """
        self._check_fitted()
        horizon = int(horizon)
        seqs = self._sequences(X, lengths, inputs)
        transitions = self._blocks[0]
        filtered = self._filtered(seqs)
        futures = check_future_inputs(
            future_inputs, horizon, seqs.n_sequences, self.input_dim, f"this {type(self).__name__}"
        )
        parts = []
        for s, future in enumerate(futures):
            last = seqs.offsets[s + 1] - 1
            future_matrices = np.broadcast_to(transitions.kernel_arrays(future)[1], (horizon, self._k, self._k))
            parts.append(self._forecast_sequence(seqs.values[last], filtered[last], future_matrices))
        return Forecast.of_sequences(parts)

    def _forecast_sequence(self, last_row: np.ndarray, filtered: np.ndarray, matrices: np.ndarray) -> Forecast:
        """The forecast after one sequence: its last row of values, p(z_T | y) and the next transition matrices."""
        modes = propagate_modes(filtered, matrices)
        first, second = self._state_moments()
        means = modes @ first
        covariances = np.einsum("hk,kij->hij", modes, second) - means[:, :, None] * means[:, None, :]
        symbols = modes @ self.emissionprob_ if self.emission == "categorical" else None
        return Forecast(means, 0.5 * (covariances + covariances.transpose(0, 2, 1)), modes, symbols)

    def _state_moments(self) -> tuple[np.ndarray, np.ndarray]:
        """E[y | z = k] (K, D) and E[y y' | z = k] (K, D, D) of each state's emission."""
        if self.emission == "gaussian":
            means, covariances = self.means_, self.covars_
            return means, covariances + means[:, :, None] * means[:, None, :]
        if self.emission == "gmm":
            weights, means, covariances = self.weights_, self.means_, self.covars_
            second = covariances + means[..., :, None] * means[..., None, :]
            return np.einsum("km,kmd->kd", weights, means), np.einsum("km,kmij->kij", weights, second)
        if self.emission == "poisson":
            rates = self.lambdas_
            return rates, np.einsum("ki,ij->kij", rates, np.eye(rates.shape[1])) + rates[:, :, None] * rates[:, None, :]
        codes = np.arange(self.emissionprob_.shape[1], dtype=float)
        return (self.emissionprob_ @ codes)[:, None], (self.emissionprob_ @ codes**2)[:, None, None]

    def segment(self, X: Any, lengths: Sequence[int] | None = None, *, inputs: Any = None) -> pd.DataFrame:
        """Contiguous runs of one mode on the Viterbi path: ``start``, ``end`` (exclusive),
        ``mode`` and ``probability`` (the mode's mean posterior probability over the run);
        a leading ``sequence`` column for several sequences."""
        seqs = self._sequences(X, lengths, inputs)
        return mode_segments(seqs, self._viterbi(seqs)[1], self._posteriors(seqs))

    def describe(self) -> pd.DataFrame:
        """One row per mode: for a stationary chain the long-run share of time (``occupancy``),
        mean dwell time 1 / (1 - p_kk) in steps and switch probabilities ``to_j``; for an
        input-driven one the switch probabilities at zero input and the input weights; then
        the emission's parameters."""
        self._check_fitted()
        transitions, emission = self._blocks
        table = {"mode": np.arange(self._k), **transitions.describe(), **emission.describe()}
        return pd.DataFrame(table).set_index("mode")

    @property
    def dwell_times_(self) -> np.ndarray:
        """Expected steps per visit to each mode, 1 / (1 - p_kk) (a chain without inputs)."""
        return dwell_times(self.transmat_)

    # ----------------------------------------------------------- model selection
    @property
    def n_parameters(self) -> int:
        """Number of free parameters (those held ``fixed`` are not counted)."""
        self._check_fitted()
        transitions, emission = self._blocks
        fixed = self._fixed_by_block()
        return transitions.n_parameters(fixed) + emission.n_parameters(fixed)

    def aic(self, X: Any, lengths: Sequence[int] | None = None, *, inputs: Any = None) -> float:
        """Akaike information criterion, -2 log-likelihood + 2 n_parameters."""
        return -2.0 * self.score(X, lengths, inputs=inputs) + 2.0 * self.n_parameters

    def bic(self, X: Any, lengths: Sequence[int] | None = None, *, inputs: Any = None) -> float:
        """Bayesian information criterion, -2 log-likelihood + n_parameters log(n_observations)."""
        seqs = as_sequences(X, lengths)
        return -2.0 * self.score(seqs, inputs=inputs) + self.n_parameters * np.log(self._n_observations(seqs))

    def _n_observations(self, seqs: Sequences) -> int:
        """Time steps the likelihood is about."""
        return seqs.n_steps

    # --------------------------------------------------------------- persistence
    def _learned_arrays(self) -> dict[str, np.ndarray]:
        self._check_fitted()
        return self._snapshot()

    def _learned_attributes(self) -> dict[str, Any]:
        return selection.saved_fit(self)

    def _restore(self, arrays: dict[str, np.ndarray], attributes: dict[str, Any]) -> None:
        for name, value in attributes.items():
            setattr(self, name, selection.restored_fit(name, value))
        missing = [name for name in self.parameter_names if name not in arrays]
        if missing:
            raise ValueError(f"the model file lacks the parameter array(s) {missing}")
        for name in self.parameter_names:
            setattr(self, name, arrays[name])


def propagate_modes(probabilities: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    """Mode distributions after each step of a chain: row h is p_0 P_1 ... P_h+1, shape (len(matrices), K)."""
    out = np.empty((len(matrices), len(probabilities)))
    for step, matrix in enumerate(matrices):
        probabilities = probabilities @ matrix
        out[step] = probabilities
    return out


def check_evidence(table: np.ndarray, rows: np.ndarray | None, seqs: Sequences, model: str) -> None:
    """A clear error, before the kernels divide by it, for an emission log-likelihood that is NaN
    or +inf: the parameters of its mode are not finite (or a density is infinite: a variance of 0)."""
    if table.size == 0 or table.max() < np.inf:  # max is NaN if any entry is: one pass, no mask
        return
    row, mode = (int(i[0]) for i in np.nonzero(~(table < np.inf)))
    if rows is not None and len(rows):
        row = int(np.flatnonzero(rows == row)[0])
    sequence, step = seqs.locate(row)
    raise ValueError(
        f"{model}: mode {mode} gives no likelihood (NaN or infinite) at sequence {sequence}, time step {step}: "
        "its parameters are not finite or its variance is 0; standardise the data, or raise reg_covar"
    )
