"""Autoregressive hidden Markov models: a mode switches the dynamics of the series itself."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from modeshift._kernels import pair_hmm
from modeshift.data import Sequences, as_sequences
from modeshift.dynamics import autoregressive_moments
from modeshift.emissions import Autoregressive, Emission
from modeshift.emissions.autoregressive import with_lags
from modeshift.emissions.feature_autoregressive import FeatureAutoregressive, with_features
from modeshift.emissions.reset import RESET_TIES, Resets, check_reset_dof
from modeshift.features import Custom, FeatureMap, Polynomial, feature_map
from modeshift.metrics import segments
from modeshift.models.automaton import THRESHOLD_LEVELS, Automaton, Flow, state_grid, switch_guards
from modeshift.models.base import Forecast, NotFittedError, check_future_inputs, mode_segments
from modeshift.models.hmm import HMM, propagate_modes
from modeshift.models.params import Boolean, Integer, Number, OneOf, either
from modeshift.models.streaming import FilterState, PairRecursion, lagged_values
from modeshift.statistics import Statistics
from modeshift.transitions import draw_rows

__all__ = ["ARHMM"]

FORECAST_PATHS = 2000  # Monte Carlo paths of a nonlinear or recurrent forecast


class ARHMM(HMM):
    """An autoregressive HMM (a Markov-switching vector autoregression) fit by exact EM.

    In mode k, ``y_t = A_k,1 y_t-1 + ... + A_k,p y_t-p + b_k + e_t`` with
    ``e_t ~ N(0, S_k)``; the mode follows a Markov chain. The first ``order`` = p steps
    of every sequence are conditioned on. Everything else (EM with restarts,
    ``fixed``, the transition prior, decoding, ``predict_proba``, sampling,
    save/load) is the :class:`HMM`'s.

    Parameters
    ----------
    n_states : int or "auto"
        ``"auto"`` chooses the number of modes by BIC among 1 .. ``max_states``,
        as for :class:`HMM`.
    order : int
        Autoregressive order p, the number of lags (``lags=`` is its old name, deprecated).
    noise : {"full", "diag"}
        Structure of the noise covariances ``covars_``.
    shared_noise : bool
        One noise covariance for all modes.
    ridge : float
        Shrinks the lag coefficients towards zero (a matrix-normal prior with
        precision ``ridge``; intercepts are not shrunk).
    features : None, "polynomial", "rbf", "fourier", FeatureMap, dict or function
        A nonlinear flow ``y_t = W_k phi(y_t-1, ..., y_t-p) + b_k + e_t`` with phi a
        :mod:`feature map <modeshift.features>` fit to the lags by ``fit`` (``feature_map_``);
        every M-step is still a weighted ridge regression, so EM stays exact. ``coefs_`` is
        then (K, D, m) for m features. None (the default): the linear autoregression.
    recurrent : bool
        The switching depends on where the series is: p(z_t | z_t-1, y_t-1..t-p) is a
        multinomial logit (as with ``input_dim``) in the features phi of the lags (the lags
        themselves without ``features``), so guards are level sets of a linear function of
        phi: straight for linear features, curved otherwise. Not with ``input_dim``.
    resets : None, "destination" or "pair"
        At a step where the mode switches i -> j, y_t follows a reset regression
        ``y_t = R x_t + c + N(0, Q)`` on the same lags or features x_t instead of mode j's flow
        (:mod:`modeshift.emissions.reset`): a jump of the state at a switch, such as a ball's
        velocity reversed at impact, learned in the same exact EM. ``"destination"``: one reset
        per mode entered (K resets; the usual choice: a reset belongs to where the system goes);
        ``"pair"``: one per ordered pair of modes (K (K - 1)). Each has its own noise
        covariance. With ``recurrent``, guards and resets together: where the switch happens and
        what it does. Not with ``input_dim``. None (the default): no resets.
    reset_dof : float > 2, optional
        Robust resets: the resets' noise Student-t with this many degrees of freedom (scale
        ``reset_covars_``), so that a switch its reset does not explain (a ball relaunched, not
        bounced) pulls the regression little; EM stays exact, each switch weighted by its
        expected precision (:mod:`modeshift.emissions.reset`; 3 to 5 is usual). None (the
        default): Gaussian. Needs ``resets``.
    reg_covar, n_iter, tol, n_restarts, random_state, fixed, init,
    transition_concentration, stickiness, input_dim, input_slopes, transition_penalty, max_states,
    accelerate, warm_start, verbose, callback
        As for :class:`HMM`.

    Attributes
    ----------
    coefs_ : (K, D, order D), or (K, D, m) with ``features``
        ``coefs_[k][:, (i - 1) D : i D]`` is A_k,i.
    feature_map_ : FeatureMap
        The fitted feature map (with ``features``).
    reset_coefs_, reset_intercepts_, reset_covars_ : (R, D, m), (R, D), (R, D, D)
        The resets (with ``resets``), R of them; ``automaton().resets`` maps each switch to its own.
    intercepts_ : (K, D)
    covars_ : (K, D, D)
    startprob_, transmat_, history_, converged_, n_iter_
        As for :class:`HMM`.

    Examples
    --------
    >>> import numpy as np
    >>> from modeshift import ARHMM
    >>> truth = ARHMM(n_states=2, random_state=0)
    >>> truth.startprob_, truth.transmat_ = np.array([1.0, 0.0]), np.array([[0.98, 0.02], [0.02, 0.98]])
    >>> truth.coefs_, truth.intercepts_ = np.array([[[0.9]], [[-0.5]]]), np.array([[1.0], [0.0]])
    >>> truth.covars_ = np.full((2, 1, 1), 0.01)
    >>> X, modes = truth.sample(2000, random_state=1)
    >>> model = ARHMM(n_states=2, n_restarts=3, random_state=0).fit(X)
    >>> np.sort(model.coefs_.ravel()).round(1)
    array([-0.5,  0.9])
    """

    def __init__(
        self,
        n_states: int | str = 2,
        order: int = 1,
        noise: str = "full",
        shared_noise: bool = False,
        ridge: float = 0.0,
        features: Any = None,
        recurrent: bool = False,
        resets: str | None = None,
        reset_dof: float | None = None,
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
        **renamed: Any,
    ):
        self.n_states = n_states
        self.max_states = max_states
        self.order = order
        self.noise = noise
        self.shared_noise = shared_noise
        self.ridge = ridge
        self.features = features
        self.recurrent = recurrent
        self.resets = resets
        self.reset_dof = reset_dof
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
        self._take_renamed(renamed)

    _renamed = {**HMM._renamed, "lags": "order"}
    #: a fitted feature map's arrays are saved as "<map>.<key>" (see :mod:`modeshift.features`)
    _file_arrays = {"feature_map_.*": "real?", "guard_map_.*": "real?"}
    _file_attributes = {**HMM._file_attributes, "maps": "mapping"}
    _constraints = {
        **HMM._constraints,
        "order": Integer(1),
        "noise": OneOf(("full", "diag")),
        "shared_noise": Boolean(),
        "ridge": Number(0),
        "recurrent": Boolean(),
        "resets": OneOf((None, *RESET_TIES)),
        "reset_dof": either(Number(2, open_low=True), OneOf((None,))),
    }

    def _check_params(self) -> None:
        super()._check_params()
        check_reset_dof(self.resets, self.reset_dof)

    def _make_emission(self) -> Emission:
        options = (self.noise, self.shared_noise, self.ridge, self.reg_covar)
        if self.features is None:
            return Autoregressive(self._k, self.order, *options)
        return FeatureAutoregressive(self._k, self._feature_map, self.order, *options)

    @property
    def _feature_map(self) -> FeatureMap:
        return self._fitted_map("feature_map_")

    def _fitted_map(self, name: str) -> FeatureMap:
        fitted = self.__dict__.get(name)
        if fitted is None:
            raise NotFittedError(f"this ARHMM has no fitted {name}: call fit, or set it by hand")
        return fitted

    @property
    def _transition_inputs(self) -> int:
        return self._fitted_map("guard_map_").n_outputs if self.recurrent else self.input_dim

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("feature_map_", "guard_map_"):  # a map set by hand: the blocks read it
            if not isinstance(value, FeatureMap) or value.location_ is None:
                raise TypeError(f"{name} must be a fitted FeatureMap, got {value!r}")
            if "_blocks_" in self.__dict__ and self._snapshot():
                raise ValueError(f"set {name} before the parameters it shapes (coefs_, input_weights_), not after")
            self.__dict__.pop("_blocks_", None)
            self.__dict__[name] = value
            return
        super().__setattr__(name, value)

    def _fit_preprocessing(self, seqs: Sequences) -> None:
        """Fit the feature map (``features``) and the map of the guard inputs (``recurrent``: the
        features, else the standardised lags) to the lags, unless a warm start kept them or
        they were set by hand."""
        if self.recurrent and self.input_dim:
            raise ValueError("recurrent=True drives the switching by the series itself: it takes no input_dim")
        self._check_resets()
        maps = self.__dict__
        needs_features = self.features is not None and "feature_map_" not in maps
        needs_guards = self.recurrent and "guard_map_" not in maps
        if needs_features or needs_guards:
            lags = self._lag_inputs(self._checked(seqs, None))
            if needs_features:
                maps["feature_map_"] = feature_map(self.features).fit(lags)
            if needs_guards:
                guards = maps.get("feature_map_")
                maps["guard_map_"] = Polynomial(degree=1).fit(lags) if guards is None else guards

    def _lag_inputs(self, seqs: Sequences) -> np.ndarray:
        """The lag vectors [y_t-1, ..., y_t-order] of every step that has them."""
        lagged = with_lags(seqs.values, seqs.offsets, self.order)
        return lagged[lagged[:, -1] == 1.0, seqs.n_features : -1]

    def _checked(self, seqs: Sequences, n_features: int | None) -> Sequences:
        return seqs.require(
            allow_missing=False,
            min_length=self.order + 1,
            n_features=n_features,
            model=f"an ARHMM with order={self.order}",
        )

    def _sequences(self, X: Any, lengths: Sequence[int] | None, inputs: Any = None) -> Sequences:
        seqs = as_sequences(X, lengths).with_inputs(inputs, self.input_dim, "this ARHMM")
        seqs = self._checked(seqs, self._blocks[1].n_features)
        d = seqs.n_features
        lagged = with_lags(seqs.values, seqs.offsets, self.order)
        values = lagged if self.features is None else with_features(lagged, d, self._feature_map)
        if self.recurrent:  # entry t of the transitions reads u_t = phi(y_t-1, ..., y_t-order)
            guards = values if self._guards_are_features else with_features(lagged, d, self._fitted_map("guard_map_"))
            seqs = dataclasses.replace(seqs, inputs=np.ascontiguousarray(guards[:, d:-1]))
        return dataclasses.replace(seqs, values=values)

    @property
    def _guards_are_features(self) -> bool:
        """The switching reads the flows' own features (``recurrent`` with ``features``, as fit sets
        it): computed once for both."""
        maps = self.__dict__
        return self.features is not None and maps.get("guard_map_") is maps.get("feature_map_")

    # -------------------------------------------------------------------- resets
    def _check_resets(self) -> None:
        if self.resets is not None and self.input_dim:
            raise ValueError(f"resets={self.resets!r} is not implemented for a chain driven by inputs (input_dim)")

    @property
    def _reset_block(self) -> Resets:
        """The resets (with ``resets``), remade whenever the blocks are; their noise's ``reset_dof`` as
        it is now (a change keeps the parameters)."""
        blocks, cached = self._blocks, self.__dict__.get("_resets_")
        if cached is None or cached[0] is not blocks or cached[1].ties != self.resets:
            options = (self.noise, self.shared_noise, self.ridge, self.reg_covar)
            cached = (blocks, Resets(self._k, self.resets, *options))
            self.__dict__["_resets_"] = cached
        cached[1].dof = self.reset_dof
        return cached[1]

    @property
    def _parameter_homes(self) -> dict[str, tuple[Any, str]]:
        homes = super()._parameter_homes
        if self.__dict__.get("resets") is not None:
            block = self._reset_block
            homes.update({name: (block, attr) for name, attr in block.parameters.items()})
        return homes

    def _em_initialize(self, seqs: Sequences, rng: np.random.Generator, restart: int) -> None:
        """As :meth:`HMM._em_initialize`; resets not given start as the flows of the modes they enter,
        with the data's spread as noise (:meth:`Resets.initialize <modeshift.emissions.reset.Resets.initialize>`)."""
        super()._em_initialize(seqs, rng, restart)
        if self.resets is None:
            return
        given, resets = self.__dict__["_given"], self._reset_block
        kept = given if restart == 0 else {k: v for k, v in given.items() if k in self.fixed}
        if not kept.keys() >= resets.parameters.keys():
            emission = self._blocks[1]
            y = self._raw(seqs)[seqs.values[:, -1] == 1.0]
            spread = np.atleast_2d(np.cov(y, rowvar=False, bias=True)) + self.reg_covar * np.eye(y.shape[1])
            resets.initialize(emission.coefs, emission.intercepts, spread)
            for name in resets.parameters.keys() & kept.keys():
                setattr(self, name, kept[name])

    def _pair_arguments(self, seqs: Sequences) -> tuple[Any, ...]:
        """The evidence :mod:`~modeshift._kernels.pair_hmm` reads: flows' log-likelihoods, rows, D,
        resets, offsets."""
        self._check_resets()
        emission, resets = self._blocks[1], self._reset_block
        resets.check_flows(emission.coefs)
        flow = self._evidence(seqs)["log_likelihoods"]
        return flow, np.ascontiguousarray(seqs.values), emission.n_features, resets.kernel_arrays(), seqs.offsets

    def _pair_filter(self, seqs: Sequences) -> tuple[np.ndarray, np.ndarray]:
        initial, matrices = self._blocks[0].kernel_arrays(seqs.inputs)
        return pair_hmm.forward_filter(*self._pair_arguments(seqs), initial, matrices)[:2]

    def _expected_statistics(self, seqs: Sequences, scratch: dict[str, np.ndarray] | None = None) -> Statistics:
        """As :meth:`HMM._expected_statistics`; with resets the flows are weighted by the expected
        stays xi_t(j, j) and each reset by the expected switches into it."""
        if self.resets is None:
            return super()._expected_statistics(seqs, scratch)
        transitions, emission = self._blocks
        initial, matrices = transitions.kernel_arrays(seqs.inputs)
        log_lik, posteriors, pairs, flows, outer, counts = pair_hmm.forward_backward(
            *self._pair_arguments(seqs), initial, matrices
        )
        self._check_possible(log_lik, seqs)
        pairs = pairs if transitions.varying else pairs[0]
        return Statistics(
            log_likelihood=float(log_lik.sum()),
            transitions=transitions.statistics(posteriors, seqs.starts, pairs, seqs.inputs),
            emission=emission.statistics(seqs.values, flows),
            resets=self._reset_block.statistics(outer, counts, emission.n_features),
        )

    def _maximize(self, stats: Statistics, fixed: frozenset[str]) -> None:
        super()._maximize(stats, fixed)
        if self.resets is not None:
            self._reset_block.m_step(stats["resets"], fixed)

    def _log_prior(self) -> float:
        prior = super()._log_prior()
        return prior if self.resets is None else prior + self._reset_block.log_prior()

    def score(self, X: Any, lengths: Sequence[int] | None = None, *, inputs: Any = None) -> float:
        """Total log-likelihood log p(X) over all sequences (given each one's first ``order`` steps)."""
        if self.resets is None:
            return super().score(X, lengths, inputs=inputs)
        self._check_fitted()
        return float(self._pair_filter(self._sequences(X, lengths, inputs))[1].sum())

    def _forward(self, seqs: Sequences) -> np.ndarray:
        return super()._forward(seqs) if self.resets is None else self._pair_filter(seqs)[0]

    def _filtered(self, seqs: Sequences) -> np.ndarray:
        if self.resets is None:
            return super()._filtered(seqs)
        filtered, log_lik = self._pair_filter(seqs)
        self._check_possible(log_lik, seqs)
        return filtered

    def _posteriors(self, seqs: Sequences) -> np.ndarray:
        if self.resets is None:
            return super()._posteriors(seqs)
        self._check_fitted()
        initial, matrices = self._blocks[0].kernel_arrays(seqs.inputs)
        log_lik, posteriors = pair_hmm.forward_backward(*self._pair_arguments(seqs), initial, matrices)[:2]
        self._check_possible(log_lik, seqs)
        return posteriors

    def _viterbi(self, seqs: Sequences) -> tuple[float, np.ndarray]:
        if self.resets is None:
            return super()._viterbi(seqs)
        self._check_fitted()
        log_initial, log_matrices = self._blocks[0].log_kernel_arrays(seqs.inputs)
        path, log_prob = pair_hmm.viterbi(*self._pair_arguments(seqs), log_initial, log_matrices)
        self._check_possible(log_prob, seqs)
        return float(log_prob.sum()), path

    def sample_posterior(
        self,
        X: Any,
        lengths: Sequence[int] | None = None,
        *,
        random_state: int | np.random.Generator | None = None,
        inputs: Any = None,
    ) -> Any:
        """As :meth:`HMM.sample_posterior`; with ``resets`` each step back draws z_t-1 given z_t from
        p(z_t-1 | y_0..t-1) times the transition and the pair's evidence at t."""
        if self.resets is None:
            return super().sample_posterior(X, lengths, random_state=random_state, inputs=inputs)
        self._check_fitted()
        seqs = self._sequences(X, lengths, inputs)
        uniforms = np.random.default_rng(random_state).random(seqs.n_steps)
        initial, matrices = self._blocks[0].kernel_arrays(seqs.inputs)
        path, log_lik = pair_hmm.sample_posterior_paths(*self._pair_arguments(seqs), initial, matrices, uniforms)
        self._check_possible(log_lik, seqs)
        return seqs.restore(path)

    @property
    def n_parameters(self) -> int:
        """Number of free parameters (those held ``fixed`` are not counted); with resets, theirs,
        and the flows' of the modes some step reads only (:meth:`Resets.read_flows`)."""
        if self.resets is None:
            return super().n_parameters
        self._check_fitted()
        (transitions, emission), resets, fixed = self._blocks, self._reset_block, self._fixed_by_block()
        read = resets.read_flows(None if self.recurrent else self.transmat_)
        return transitions.n_parameters(fixed) + emission.n_parameters(fixed, read) + resets.n_parameters(fixed)

    def describe(self) -> pd.DataFrame:
        """As :meth:`HMM.describe`; with ``resets`` a column ``resets_into``: for each mode j,
        source i -> (matrix, offset) of the reset of the switch i -> j."""
        table = super().describe()
        if self.resets is not None:
            maps, k = self._reset_block.maps(), self._k
            table["resets_into"] = [{i: maps[i, j] for i in range(k) if i != j} for j in range(k)]
        return table

    def segment(self, X: Any, lengths: Sequence[int] | None = None, *, inputs: Any = None) -> pd.DataFrame:
        """As :meth:`HMM.segment`, from step ``order`` of each sequence on: its first ``order``
        steps have no lags for a mode to explain, and belong to no run."""
        seqs = self._sequences(X, lengths, inputs)
        return mode_segments(seqs, self._viterbi(seqs)[1], self._posteriors(seqs), skip=self.order)

    def _n_observations(self, seqs: Sequences) -> int:
        return seqs.n_steps - self.order * seqs.n_sequences

    # ----------------------------------------------------------------- streaming
    def _stream_lags(self, state: FilterState, y: Any) -> tuple[np.ndarray, np.ndarray]:
        """Step t's row [y_t, y_t-1, ..., y_t-order, 1] (:func:`with_lags`'s) and the new history."""
        model = f"an ARHMM with order={self.order}"
        return lagged_values(state.history, y, self.order, self._blocks[1].n_features, model)

    def _stream_values(self, state: FilterState, y: Any) -> tuple[np.ndarray, np.ndarray]:
        """Step t's row as the emission takes it: the lags, or their features (:func:`with_features`)."""
        lagged, history = self._stream_lags(state, y)
        return self._with_map(lagged, "feature_map_"), history

    def _with_map(self, lagged: np.ndarray, name: str) -> np.ndarray:
        """A :func:`with_lags` row with its lags replaced by the features of the fitted map ``name``
        (unchanged for ``feature_map_`` without ``features``)."""
        if name == "feature_map_" and self.features is None:
            return lagged
        return with_features(lagged[None], self._blocks[1].n_features, self._fitted_map(name))[0]

    def _stream_constants(self) -> dict[str, Any]:
        """The resets' kernel arrays (with ``resets``), built once per block of a stream."""
        return {} if self.resets is None else {"reset_arrays": self._reset_block.kernel_arrays()}

    def _stream_evidence(
        self, state: FilterState, y: Any, inputs: Any, reset_arrays: tuple | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """As :meth:`HMM._stream_evidence`; a ``recurrent`` chain's move into step t reads
        phi(y_t-1, ..., y_t-order) from the history (0 before the first ``order`` steps, as in
        the batch filter), so it needs no ``inputs``; with ``resets`` the evidence is log e_t(i, j)
        of each pair (z_t-1, z_t) (:func:`~modeshift._kernels.pair_hmm.step_evidence`), from the
        resets' ``reset_arrays`` (:meth:`_stream_constants`; None: built for this step)."""
        if not self.recurrent and self.resets is None:
            return super()._stream_evidence(state, y, inputs)
        if inputs is not None:
            driven = "is driven by its own past" if self.recurrent else "has input_dim=0"
            raise ValueError(f"inputs were given but this ARHMM {driven}")
        transitions, emission = self._blocks
        lagged, history = self._stream_lags(state, y)
        row = self._with_map(lagged, "feature_map_")
        if self.recurrent:
            guards = row if self._guards_are_features else self._with_map(lagged, "guard_map_")
            move = transitions.kernel_arrays(guards[None, emission.n_features : -1])[1][0]
        else:
            move = transitions.transition_matrix
        evidence = emission.log_likelihoods(row[None])[0]
        if self.resets is not None:
            reset_arrays = self._reset_block.kernel_arrays() if reset_arrays is None else reset_arrays
            evidence = pair_hmm.step_evidence(row, emission.n_features, evidence, reset_arrays)
        return evidence, move, history

    def filter_forecast(self, state: FilterState, horizon: int, future_inputs: Any = None) -> Forecast:
        """As :meth:`HMM.filter_forecast`; with ``features``, ``recurrent`` or ``resets``, the Monte Carlo
        forecast of :meth:`forecast` from the state's last ``order`` observations (zeros for lags
        not seen yet), seeded by ``random_state``: the same numbers as ``forecast`` on the data seen."""
        if self.features is None and not self.recurrent and self.resets is None:
            return super().filter_forecast(state, horizon, future_inputs)
        if not state.filtered:
            raise ValueError("the filter state has seen no observation yet")
        horizon = int(horizon)
        if horizon < 1:
            raise ValueError(f"horizon must be a positive integer, got {horizon}")
        future = check_future_inputs(future_inputs, horizon, 1, self.input_dim, "this ARHMM")[0]
        lags = np.zeros(self.order * self._blocks[1].n_features)
        seen = state.history[::-1].ravel()
        lags[: len(seen)] = seen
        rng = np.random.default_rng(self.random_state)
        return self._simulated_forecast(lags, state.filtered[0], horizon, rng, future)

    def _stream_history(self) -> np.ndarray:
        return np.zeros((0, self._blocks[1].n_features))

    # ------------------------------------------------------- nonlinear and recurrent
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

        For the linear model, exact moments (see :meth:`_forecast_sequence`). With ``features``,
        ``recurrent`` or ``resets`` the flow or the switching is nonlinear in the past (a reset
        depends on the path of modes) and the moments have no closed form: they are Monte Carlo
        estimates from ``FORECAST_PATHS`` = 2000 sample paths that start from the last ``order``
        observations and a mode drawn from p(z_T | y), and iterate the model (seeded by
        ``random_state``, so a forecast is reproducible). Their standard error is sd / sqrt(2000),
        about 2 % of a predictive standard deviation; the ``mode_probabilities`` are the paths'
        shares (exact without ``recurrent``).
        """
        if self.features is None and not self.recurrent and self.resets is None:
            return super().forecast(X, horizon, lengths, inputs=inputs, future_inputs=future_inputs)
        self._check_fitted()
        horizon = int(horizon)
        if horizon < 1:
            raise ValueError(f"horizon must be a positive integer, got {horizon}")
        seqs = self._sequences(X, lengths, inputs)
        filtered = self._filtered(seqs)
        futures = check_future_inputs(future_inputs, horizon, seqs.n_sequences, self.input_dim, "this ARHMM")
        rng = np.random.default_rng(self.random_state)
        parts = []
        for s, future in enumerate(futures):
            end = seqs.offsets[s + 1]
            lags = self._raw(seqs)[end - self.order : end][::-1].ravel()
            parts.append(self._simulated_forecast(lags, filtered[end - 1], horizon, rng, future))
        return Forecast.of_sequences(parts)

    def _simulated_forecast(
        self, lags: np.ndarray, law: np.ndarray, horizon: int, rng: np.random.Generator, future: np.ndarray | None
    ) -> Forecast:
        """The Monte Carlo forecast of :meth:`forecast` from the lag vector [y_T, ..., y_T-order+1]
        and the filtered mode probabilities p(z_T | y)."""
        modes = draw_rows(np.broadcast_to(law, (FORECAST_PATHS, self._k)), rng)
        paths, path_modes = self._simulate(np.tile(lags, (FORECAST_PATHS, 1)), modes, horizon, rng, future)
        means = paths.mean(axis=0)
        centred = paths - means
        covariances = np.einsum("nhi,nhj->hij", centred, centred) / (FORECAST_PATHS - 1)
        shares = np.stack([(path_modes == k).mean(axis=0) for k in range(self._k)], axis=1)
        if not self.recurrent:
            shares = propagate_modes(law, self._future_matrices(future, horizon))
        return Forecast(means, covariances, shares)

    @property
    def _regressor_width(self) -> int:
        """Columns between y and the constant in a row of values: the lags or their features."""
        return self._feature_map.n_outputs if self.features is not None else self.order * self._blocks[1].n_features

    def _raw(self, seqs: Sequences) -> np.ndarray:
        """The observations themselves (n_steps, D), the first block of each row."""
        return seqs.values[:, : seqs.n_features - self._regressor_width - 1]

    def _future_matrices(self, future: np.ndarray, horizon: int) -> np.ndarray:
        return np.broadcast_to(self._blocks[0].kernel_arrays(future)[1], (horizon, self._k, self._k))

    def _simulate(
        self,
        lags: np.ndarray,
        modes: np.ndarray | None,
        n_steps: int,
        rng: np.random.Generator,
        future: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Iterate the model from lag vectors (n, order D), most recent first, and modes (n,)
        (None: the first mode from ``startprob_``). Returns paths (n, n_steps, D) and modes (n, n_steps)."""
        transitions, emission = self._blocks
        block, d = emission._block(), emission.n_features
        paths, path_modes = np.empty((len(lags), n_steps, d)), np.empty((len(lags), n_steps), dtype=int)
        fixed = None if self.recurrent else self._future_matrices(future, n_steps)
        resets = None if self.resets is None else self._reset_block
        for t in range(n_steps):
            previous = modes
            regressors = self._feature_map.transform(lags) if self.features is not None else lags
            if modes is None:
                modes = draw_rows(np.broadcast_to(transitions.initial_probs, (len(lags), self._k)), rng)
            else:
                if self.recurrent:
                    guards = regressors if self._guards_are_features else self._guard_inputs(lags)
                    probabilities = transitions.kernel_arrays(guards)[1][np.arange(len(lags)), modes]
                else:
                    probabilities = fixed[t][modes]
                modes = draw_rows(probabilities, rng)
            rows = np.hstack([regressors, np.ones((len(lags), 1))])
            y = block.sample_rows(rows, modes, rng)
            if resets is not None and previous is not None:  # a switch follows its reset
                switched = np.flatnonzero(modes != previous)
                y[switched] = resets.sample_rows(rows[switched], previous[switched], modes[switched], rng)
            paths[:, t], path_modes[:, t] = y, modes
            lags = np.hstack([y, lags[:, :-d]])
        return paths, path_modes

    def sample(
        self,
        n_steps: int,
        n_sequences: int = 1,
        random_state: int | np.random.Generator | None = None,
        *,
        inputs: Any = None,
    ) -> tuple[Any, Any]:
        """As :meth:`HMM.sample`; a ``recurrent`` model draws each mode from the switching law at
        the path's own past (the first ``order`` values are the data's mean), and one with
        ``resets`` draws a switch's step from its reset (the values before the first step are
        the stationary mean of the likeliest first mode, as without resets)."""
        if not self.recurrent and self.resets is None:
            return super().sample(n_steps, n_sequences, random_state, inputs=inputs)
        self._check_fitted()
        if inputs is not None:
            raise ValueError("inputs were given but this ARHMM takes none (recurrent or with resets)")
        rng = np.random.default_rng(random_state)
        if self.recurrent:
            start = self._fitted_map("guard_map_").location_
        else:
            start = np.tile(self._blocks[1].stationary_mean(int(np.argmax(self.startprob_))), self.order)
        start = np.tile(start, (int(n_sequences), 1))
        paths, modes = self._simulate(start, None, int(n_steps), rng)
        if n_sequences == 1:
            return paths[0], modes[0]
        return list(paths), list(modes)

    def _stream_recursion(self) -> Any:
        """As :meth:`HMM._stream_recursion`; with ``resets`` the filter of pairs (z_t-1, z_t)."""
        if self.resets is None:
            return super()._stream_recursion()
        self._check_fitted()
        self._check_resets()
        self._reset_block.check_flows(self._blocks[1].coefs)
        return PairRecursion(self._blocks[0].initial_probs)

    # ---------------------------------------------------------------- the automaton
    def automaton(self, X: Any = None, lengths: Sequence[int] | None = None, *, resolution: int = 25) -> Automaton:
        """The fitted model as a hybrid automaton (:mod:`modeshift.models.automaton`).

        The state is the lag vector [y_t, ..., y_t-order+1]; with at most two dimensions its
        vector fields and guard probabilities are sampled on a ``resolution``-point mesh over
        the range of ``X``'s states (without ``X``: the fitted map's mean -/+ 3 standard
        deviations; a linear model without ``recurrent`` then has no grid). Guards (with
        ``recurrent``): p(j | i, state) at the mesh and, for a scalar series, the levels where
        constant histories cross 1/2 (searched over the same range, 2001 points, linear
        interpolation). Dwell times: 1 / (1 - p_kk) for a stationary chain; for a recurrent one,
        where it depends on the state, the mean run length of each mode in a 20,000-step sample
        (``random_state`` 0). Resets (with ``resets``): (source, target) -> (matrix, offset), the
        affine map of the regressors (lags or features) a switch follows instead of the flow.
        """
        self._check_fitted()
        transitions, emission = self._blocks
        d, n_states = emission.n_features, self._k
        regressors = self._feature_map.config() if self.features is not None else "lags, most recent first"
        flows = [Flow(k, self.coefs_[k], self.intercepts_[k], self.covars_[k], regressors) for k in range(n_states)]
        state_dim = d * self.order
        bounds = self._state_bounds(X, lengths)
        grid, shape, fields = None, (), None
        if bounds is not None and state_dim <= 2:
            grid, shape = state_grid(*bounds, resolution)
            fields = np.stack([self._expected_move(grid, k) for k in range(n_states)])
        guards = []
        if self.recurrent:
            moves = None if grid is None else transitions.kernel_arrays(self._guard_inputs(grid))[1]
            levels = along = None
            if d == 1 and bounds is not None:  # constant histories (y, ..., y)
                levels = np.linspace(bounds[0].min(), bounds[1].max(), THRESHOLD_LEVELS)
                along = transitions.kernel_arrays(self._guard_inputs(np.repeat(levels[:, None], self.order, axis=1)))[1]
            guards = switch_guards(n_states, moves, levels, along)
            _, modes = self.sample(20000, random_state=0)
            runs = segments(modes)
            dwell = runs.assign(length=runs["end"] - runs["start"]).groupby("mode")["length"].mean()
            dwell_times = dwell.reindex(range(n_states)).to_numpy(dtype=float)
        else:
            dwell_times = self.dwell_times_
        resets = {} if self.resets is None else self._reset_block.maps()
        return Automaton(np.arange(n_states), flows, grid, shape, fields, guards, resets, dwell_times)

    def _guard_inputs(self, states: np.ndarray) -> np.ndarray:
        return self._fitted_map("guard_map_").transform(states)

    def _expected_move(self, states: np.ndarray, mode: int) -> np.ndarray:
        """E[s_t+1 | s_t = s, z_t+1 = mode] - s for lag vectors s (n, order D)."""
        d = self._blocks[1].n_features
        regressors = self._feature_map.transform(states) if self.features is not None else states
        following = regressors @ self.coefs_[mode].T + self.intercepts_[mode]
        return np.hstack([following, states[:, :-d]]) - states

    def _state_bounds(self, X: Any, lengths: Sequence[int] | None) -> tuple[np.ndarray, np.ndarray] | None:
        if X is not None:
            lags = self._lag_inputs(self._checked(as_sequences(X, lengths), self._blocks[1].n_features))
            return lags.min(axis=0), lags.max(axis=0)
        fitted = self.__dict__.get("feature_map_", self.__dict__.get("guard_map_"))
        if fitted is None or isinstance(fitted, Custom):
            return None
        return fitted.location_ - 3 * fitted.scale_, fitted.location_ + 3 * fitted.scale_

    # --------------------------------------------------------------- persistence
    def _learned_arrays(self) -> dict[str, np.ndarray]:
        arrays = super()._learned_arrays()
        for name, fitted in self._maps().items():
            arrays.update({f"{name}.{key}": np.asarray(value) for key, value in fitted.state()[1].items()})
        return arrays

    def _learned_attributes(self) -> dict[str, Any]:
        return {**super()._learned_attributes(), "maps": {name: m.state()[0] for name, m in self._maps().items()}}

    def _file_members(self) -> dict[str, str]:
        """What a file holds, before its maps are restored: a map changes no parameter's name, and
        the recurrent chain replaces ``transmat_`` by its guards' weights and biases."""
        if self._maps() or (self.features is None and not self.recurrent):
            return super()._file_members()
        plain = type(self)(**{**self.get_params(), "features": None, "recurrent": False})._file_members()
        if self.recurrent:
            del plain["transmat_"]
            plain.update(dict.fromkeys(("input_weights_", "recurrence_biases_"), "finite"))
        return plain

    def _maps(self) -> dict[str, FeatureMap]:
        return {name: self.__dict__[name] for name in ("feature_map_", "guard_map_") if name in self.__dict__}

    def _restore(self, arrays: dict[str, np.ndarray], attributes: dict[str, Any]) -> None:
        for name, config in attributes.pop("maps", {}).items():
            state = {key[len(name) + 1 :]: value for key, value in arrays.items() if key.startswith(f"{name}.")}
            setattr(self, name, feature_map(config, state))
        super()._restore({k: v for k, v in arrays.items() if "." not in k}, attributes)

    def _step_emission(self, state: FilterState, row: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Given the last ``order`` rows, y_t is Gaussian in each mode: mean b_k + sum_i A_k,i y_t-i.
        None for the first ``order`` steps (conditioned on) and for a row with a missing entry."""
        emission = self._blocks[1]
        coefs, intercepts, covariances = emission.coefs, emission.intercepts, emission.covariances
        if (
            self.features is not None
            or self.resets is not None
            or coefs is None
            or intercepts is None
            or covariances is None
            or len(state.history) < self.order
        ):
            return None
        if len(row) != intercepts.shape[1] or state.history.shape[1] != len(row) or np.isnan(row).any():
            return None
        means = intercepts + coefs @ state.history[::-1].ravel()  # lags [y_t-1, ..., y_t-order]
        return means, covariances, np.vstack([state.history[1:], row[None]])

    def _forecast_sequence(self, last_row: np.ndarray, filtered: np.ndarray, matrices: np.ndarray) -> Forecast:
        """Exact predictive moments by moment propagation (:func:`~modeshift.dynamics.autoregressive_moments`:
        the future given the data is a Markov jump linear system on the lag state); no Monte Carlo."""
        lag_state = np.zeros(self.coefs_.shape[2])  # [y_T, ..., y_T-order+1]: zeros for lags not seen (with_lags)
        seen = min(len(lag_state), len(last_row))  # a lagged row [y_T, ..., y_T-order, 1], or a young stream's
        lag_state[:seen] = last_row[:seen]
        modes, means, covariances = autoregressive_moments(
            filtered, lag_state, matrices, self.coefs_, self.intercepts_, self.covars_
        )
        return Forecast(means, covariances, modes)
