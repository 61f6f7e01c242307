"""A switching state-space model with nonlinear latent flows, fit by Laplace EM.

A discrete mode z_t (a Markov chain) selects the flow of a hidden continuous state x_t, a
linear combination of fixed features phi of the previous state (:mod:`modeshift.features`),
optionally driven by known inputs u_t, and the state is seen linearly with noise:

    z_t | z_t-1 ~ transmat,   x_t = W_z phi(x_t-1) + B_z u_t + b_z + N(0, Q_z),   y_t = C x_t + D u_t + d + N(0, R).

It is the :class:`~modeshift.models.slds.SwitchingLDS` with each mode's linear flow replaced
by a nonlinear one (cubic by default: Duffing and Van der Pol flows are exact), and the
latent counterpart of ``ARHMM(features=...)``. The state may have more dimensions than the
observations (a position observed, a velocity inferred).

Inference (:mod:`modeshift.models.laplace_inference`): q(x) q(z), q(x) the Laplace
approximation at the mode of E_q(z) log p(x, y | z) (Gauss-Newton on the block-tridiagonal
Hessian, with a line search), q(z) by forward-backward with the flows linearised at the mode
(Laplace EM, Zoltowski et al. 2020). M-step: a weighted ridge regression of x_t on
[phi(x_t-1), u_t, 1] per mode from the first-order (delta-method) moments of phi under q(x), the
observation model by regression of y on the moments of x, the chain from the pair posteriors.

>>> from modeshift import NonlinearSwitchingLDS
>>> from modeshift.datasets.simulators import switching_oscillators
>>> from modeshift.metrics import mode_accuracy
>>> sim = switching_oscillators(500, random_state=1)
>>> model = NonlinearSwitchingLDS(n_states=2, state_dim=2, n_iter=12, random_state=0).fit(sim.observations)
>>> mode_accuracy(sim.modes, model.predict(sim.observations)) > 0.9
True
>>> model.forecast(sim.observations, 5).means.shape
(5, 2)

Inputs (``input_dim`` m_u > 0) are passed as ``inputs=`` (n_steps, m_u) to ``fit`` and to every
method that reads data, as for the :class:`~modeshift.models.slds.SwitchingLDS`, and
``forecast`` needs the ``future_inputs`` (horizon, m_u).

With ``resets`` ("destination" or "pair", as the SwitchingLDS's), a switch i -> j moves the state
by an affine reset x_t = R_r x_t-1 + B_r u_t + r_r + N(0, Q_r) instead of mode j's flow, learned in
the same Laplace EM (a reset is affine: q(x) weighs it by the switches into it, unlinearised);
``reset_dof`` makes its noise Student-t (robust resets, as the SwitchingLDS's).

``n_states="auto"`` chooses K by BIC (``selection="fits"``) or by pruning an over-complete fit
(``selection="prune"``); ``filter_stream`` filters one observation at a time (Kim's filter with an
extended Kalman step per pair of modes); :func:`modeshift.distributed.fit` fits it over a Dask cluster;
``automaton()`` returns its modes, feature flows, curved guards and dwell times as data
(:mod:`modeshift.models.automaton`, drawn by :func:`modeshift.plot.plot_flows`).
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from modeshift import _kernels as kernels
from modeshift._kernels import pair_hmm
from modeshift.data import Sequences, as_sequences, check_array, check_covariances, check_probabilities
from modeshift.dynamics import LinearDynamics, ensure_positive_definite, observation_statistics
from modeshift.emissions.reset import RESET_TIES, Resets, check_reset_dof
from modeshift.features import Custom, FeatureMap, feature_map
from modeshift.models import em, selection, slds_inference, slds_starts
from modeshift.models import laplace_inference as laplace
from modeshift.models.arhmm import ARHMM, FORECAST_PATHS
from modeshift.models.automaton import Automaton, Flow, sampled_parts, switching_dwell_times
from modeshift.models.base import Forecast, Model, NotFittedError, check_future_inputs, mode_segments
from modeshift.models.lds import PerStep
from modeshift.models.params import Boolean, Integer, Number, OneOf, either
from modeshift.models.slds import (
    FIT_ARRAYS,
    SwitchingLDS,
    entry_guards,
    fit_arrays,
    fit_guards,
    initial_law,
    logit_guards,
    read_flows,
    run_statistics,
    start_data,
    start_given,
    stream_switches,
    with_prior,
)
from modeshift.models.slds_inference import independent_pairs
from modeshift.models.slds_inference import regressors as slds_regressors
from modeshift.models.streaming import ExtendedSwitchingKalmanRecursion, FilterState, StreamingFilters
from modeshift.statistics import Moments, Stacked, Statistics
from modeshift.transitions import InputDriven, Stationary, draw_rows, normalise_rows

__all__ = ["NonlinearSwitchingLDS"]

_INFERENCE_SWEEPS = 50  # coordinate-ascent sweeps on new data (predict, elbo, smooth, forecast)
_INFERENCE_TOL = 1e-3  # their stopping rule when ``tol`` does not give one (tol <= 0: EM runs to its cap)
_INIT_STICKINESS = 20.0  # pseudo-counts for staying in the ARHMM that proposes the start
_INIT_RESTARTS = 4  # of that ARHMM: on the oscillators one fit in five from a random start misses the modes
_INIT_NOISE = 1e-3  # the start's observation noise, as a share of the data's variance
_BEAM_ROUNDS = 10  # of beam path and clamped M-steps in turn, at most, refining the change-point start
_JUMP_SCORE = 10.0  # robust z-score of a jump, where the start's ARHMM cuts the data of a model with resets
_PARAMETERS = (  # and with inputs, _INPUT_PARAMETERS
    "flow_weights_",
    "flow_offsets_",
    "flow_covariances_",
    "observation_matrix_",
    "observation_offset_",
    "observation_covariance_",
    "initial_state_mean_",
    "initial_state_covariance_",
    "startprob_",
)
_INPUT_PARAMETERS = ("flow_input_matrices_", "feedthrough_matrix_")
_MARKOV = ("transmat_",)
_RECURRENT = ("recurrence_weights_", "input_weights_", "recurrence_biases_")  # the guards, as in SwitchingLDS
_RESETS = ("reset_matrices_", "reset_offsets_", "reset_covariances_")  # and with inputs, reset_input_matrices_


class NonlinearSwitchingLDS(Model, StreamingFilters):
    """A switching state-space model whose modes have nonlinear (feature) flows, fit by Laplace EM.

    Each EM iteration is one sweep of q(x), q(z) from the previous iteration's posterior (see
    :mod:`modeshift.models.laplace_inference`), then closed-form M-steps: for every mode a
    ridge regression, weighted by q(z_t = k), of x_t on [phi(x_t-1), u_t, 1] (ridge on W_k, not
    on B_k or b_k) from the first-order moments of phi under q(x); C, d, R by regression of y on the
    moments of x and the inputs (missing entries integrated out); m0, P0 (P0 under an inverse-Wishart
    prior with mode the spread of the start's state, as for the SwitchingLDS: one sequence would
    shrink it to 0); the transition matrix from the expected transition counts plus ``stickiness``.
    With ``resets`` each flow is weighted by the expected stays xi_t(k, k) instead, and each reset
    is a regression of x_t on [x_t-1, u_t, 1] weighted by the expected switches into it, as in the
    SwitchingLDS.

    The objective (``history_``, :meth:`elbo`) is the ELBO of q(x) q(z) with every flow
    linearised at the mode of q(x), plus the log prior of ``ridge``, ``reg_covar``, P0 and
    ``stickiness``. With a linear map (``features=Polynomial(1)``) it is exactly the
    SwitchingLDS's ELBO, a lower bound on log p(y) that EM never lowers; with a nonlinear
    one it approximates the ELBO and need not rise at every iteration (``monotone`` is False).

    Start: the state is read off the data, by PCA when ``state_dim <= obs_dim``, otherwise by a
    delay embedding in differences [y_t, y_t - y_t-1, ...] (C = [I, 0]); the feature map is fit
    to that state; an ``ARHMM(features=...)`` on the observed directions, with as many lags as
    the embedding holds (ceil(n / p)), proposes the modes and chain (with inputs and one lag,
    regressing x_t on [phi(x_t-1), u_t], so that inputs that kick the state do not hide the
    modes), and a weighted ridge regression under its modes the flows (on [phi(x_t-1), u_t, 1];
    D starts at 0, so that the inputs' effect is first read as the flows'); a recurrent model's
    guards start as a logistic regression on those modes. With ``resets`` that ARHMM sees the data
    cut at its jumps, and the resets start by forgetting the state (x_t ~ N(mean, covariance) of
    the starting states); every second restart instead starts its rarest mode at the change points
    of the data, as the SwitchingLDS's (:mod:`modeshift.models.slds_starts`), and inference on any
    data starts q(z) there too.

    Parameters
    ----------
    n_states : int or "auto"
        Number of modes K; ``"auto"`` chooses it by BIC (computed from the ELBO) among
        candidates of 1 .. ``max_states`` modes, found as ``selection`` says.
    state_dim : int
        Dimension n of x (may exceed the observations').
    features : "polynomial", "rbf", "fourier", FeatureMap, dict or function
        The map phi (:func:`modeshift.features.feature_map`), fit to the starting state.
        Default: cubic polynomials.
    obs_dim : int, optional
        Dimension p of y (default: from the data).
    input_dim : int
        Dimension m_u of the inputs u (0: none).
    recurrent : bool
        Recurrent switches, as the SwitchingLDS's but on the flows' features: p(z_t = j |
        z_t-1 = i, x_t-1, u_t) = softmax_j(w_j . phi(x_t-1) + v_j . u_t + r_ij), so the guards
        may be curved in x (a circle |x| = r with quadratic features). They are fitted in the same
        Laplace EM (a penalised logistic regression on the pair posteriors, L2 penalty 1e-2) and
        enter q(x) by a Newton expansion (:mod:`~modeshift.models.laplace_inference`).
    ridge : float
        Ridge penalty on the flows' feature weights (matrix-normal prior, see
        :class:`~modeshift.dynamics.LinearDynamics`).
    n_iter, tol : int, float
        EM stops after ``n_iter`` iterations or once the objective improves by less than ``tol``.
    n_restarts : int
        Fits from different starts; the one with the largest final objective is kept.
    random_state : int or numpy Generator, optional
        Seeds the starts and the Monte Carlo of :meth:`forecast`.
    stickiness : float
        Pseudo-counts added to the diagonal of the expected transition counts.
    reg_covar : float
        Added to the diagonal of every covariance estimate's scatter.
    warm_start, verbose, callback
        As for every EM-fitted model (:mod:`modeshift.models.em`).
    max_states : int
        Largest K tried by ``n_states="auto"``.
    selection : {"fits", "prune"}
        How ``n_states="auto"`` finds its candidates: ``"fits"``, one fit from scratch per K
        (:func:`~modeshift.models.selection.select_n_states`); ``"prune"``, from ``max_states``
        modes down, each K fitted from scratch and from the best K + 1 without its least
        occupied mode, candidates with a vanished mode not chosen
        (:func:`~modeshift.models.selection.prune_n_states`).
    resets : None, "destination" or "pair"
        At a step where the mode switches i -> j, x_t follows an affine reset regression
        x_t = R_r x_t-1 + B_r u_t + r_r + N(0, Q_r) instead of mode j's flow (a jump of the state
        at a switch, :mod:`modeshift.emissions.reset`), learned in the same EM: ``"destination"``
        one per mode entered (K), ``"pair"`` one per ordered pair of modes (K (K - 1)); None (the
        default): no resets. Pruning (``selection="prune"``) keeps the resets of the switches
        between the modes it keeps; the streaming filter takes each switch's reset.
    reset_dof : float > 2, optional
        Robust resets: the resets' noise Student-t with this many degrees of freedom (scale
        Q_r), a factor q(s) per switch in the variational posterior, as the SwitchingLDS's
        (:mod:`modeshift.emissions.reset`; 3 to 5 is usual). None (the default): Gaussian. Needs
        ``resets``.

    Attributes
    ----------
    flow_weights_ (K, n, m), flow_offsets_ (K, n), flow_covariances_ (K, n, n) : W_k, b_k, Q_k.
    flow_input_matrices_ (K, n, m_u), feedthrough_matrix_ (p, m_u) : B_k and D (only with inputs).
    observation_matrix_ (p, n), observation_offset_ (p,), observation_covariance_ (p, p) : C, d, R.
    initial_state_mean_ (n,), initial_state_covariance_ (n, n) : m0, P0.
    initial_state_covariance_prior_ (n, n) : the mode of P0's prior
        (:class:`~modeshift.dynamics.InitialStateLaw`), set at the start of the fit and saved.
    startprob_ (K,), transmat_ (K, K) : the chain of modes (no ``transmat_`` when recurrent).
    recurrence_weights_ (K, m), input_weights_ (K, m_u), recurrence_biases_ (K, K) : the guards
        w, v, r (recurrent only); ``dwell_times_`` (K,) the mean run lengths of the fitted data's
        most likely paths.
    reset_matrices_ (R, n, n), reset_offsets_ (R, n), reset_covariances_ (R, n, n) : R_r, r_r, Q_r
        of the R resets (with ``resets``, in the order of :class:`~modeshift.emissions.reset.Resets`),
        and reset_input_matrices_ (R, n, m_u) B_r with inputs.
    feature_map_ : the fitted map phi (m features).
    history_, converged_, n_iter_ : the objective at each iteration, and how EM stopped.
    n_states_, selection_ : with ``n_states="auto"``, the chosen K and the table of candidates
        (each one's ELBO, n_parameters, AIC, BIC; saved with the model).

    Notes
    -----
    A recurrent model's objective uses plug-in switch probabilities at the mode of q(x), as the
    recurrent SwitchingLDS's does. The Jacobian of phi is taken by central differences, so a
    user's map needs no derivative. Inputs must be complete (no NaN). With a state larger than
    the observations the start's ARHMM (several lags) does not see the inputs: inputs that move
    the state far more than its noise can hide the modes from it. The parameters are identified only up to the map's
    standardisation of the starting state and a relabelling of modes.
    A state larger than the observations is allowed: on the switching oscillators seen through
    their position only (2,000 steps, state_dim 2, obs_dim 1, seeds 0-4), the modes found match
    the truth on 0.87 to 0.97 of the steps, against 0.52 to 0.89 for the feature ARHMM on 2 lags
    that proposes the start. Inference on new data (``predict``, ``smooth``, ...) starts afresh
    and can settle on a poorer q(z) than the fit's own, more so with more latent dimensions than
    the flows need.
    """

    objective = "ELBO"
    monotone = False  # the flows are linearised at a mode that moves between iterations
    carries_workspace = True  # each sweep starts from the last one's q(x) q(z)
    _test_params = {"state_dim": 1, "n_iter": 5, "features": "polynomial"}

    def __init__(
        self,
        n_states: int | str = 2,
        state_dim: int = 2,
        features: Any = "polynomial",
        obs_dim: int | None = None,
        input_dim: int = 0,
        recurrent: bool = False,
        ridge: float = 1e-3,
        n_iter: int = 100,
        tol: float = 1e-3,
        n_restarts: int = 1,
        random_state: int | np.random.Generator | None = None,
        stickiness: float = 0.0,
        reg_covar: float = 1e-6,
        warm_start: bool = False,
        verbose: bool = False,
        callback: Callable[[int, float], Any] | None = None,
        max_states: int = 6,
        selection: str = "fits",
        resets: str | None = None,
        reset_dof: float | None = None,
    ):
        self.n_states = n_states
        self.state_dim = state_dim
        self.features = features
        self.obs_dim = obs_dim
        self.input_dim = input_dim
        self.recurrent = recurrent
        self.ridge = ridge
        self.n_iter = n_iter
        self.tol = tol
        self.n_restarts = n_restarts
        self.random_state = random_state
        self.stickiness = stickiness
        self.reg_covar = reg_covar
        self.warm_start = warm_start
        self.verbose = verbose
        self.callback = callback
        self.max_states = max_states
        self.selection = selection
        self.resets = resets
        self.reset_dof = reset_dof

    _constraints = {
        "state_dim": Integer(1),
        "obs_dim": either(Integer(1), OneOf((None,))),
        "input_dim": Integer(0),
        "recurrent": Boolean(),
        "ridge": Number(0),
        "stickiness": Number(0),
        "reg_covar": Number(0),
        "selection": OneOf(("fits", "prune")),
        "resets": OneOf((None, *RESET_TIES)),
        "reset_dof": either(Number(2, open_low=True), OneOf((None,))),
    }
    _file_arrays = {"feature_map_.*": "real?", **FIT_ARRAYS}
    _file_attributes = {**Model._file_attributes, "feature_map": "mapping", "n_states_": "count", "selection_": "table"}

    def _check_params(self) -> None:
        super()._check_params()
        check_reset_dof(self.resets, self.reset_dof)

    @property
    def parameter_names(self) -> tuple[str, ...]:
        switches = _RECURRENT if self.recurrent else _MARKOV
        names = _PARAMETERS + switches + (_INPUT_PARAMETERS if self.input_dim else ())
        if self.resets:
            names += _RESETS + (("reset_input_matrices_",) if self.input_dim else ())
        return names

    # ------------------------------------------------------------------ parameters
    def _check_fitted(self) -> None:
        missing = [name for name in (*self.parameter_names, "feature_map_") if self.__dict__.get(name) is None]
        if missing:
            names = ", ".join(missing)
            raise NotFittedError(f"this NonlinearSwitchingLDS has no {names}: call fit, or set them by hand")

    def _check_parameters(self) -> None:
        """Check every parameter's shape (from K, n, the map's m and C's p) and constraints."""
        self._check_fitted()
        K, n, m, m_u = self._k, self.state_dim, self.feature_map_.n_outputs, self.input_dim
        p = check_array("observation_matrix_", self.observation_matrix_, (None, n)).shape[0]
        shapes = {
            "flow_weights_": (K, n, m),
            "flow_offsets_": (K, n),
            "flow_input_matrices_": (K, n, m_u),
            "feedthrough_matrix_": (p, m_u),
            "observation_offset_": (p,),
            "initial_state_mean_": (n,),
            "recurrence_weights_": (K, m),
            "input_weights_": (K, m_u),
            "recurrence_biases_": (K, K),
        }
        covariances = [
            ("flow_covariances_", n, (K,)),
            ("observation_covariance_", p, ()),
            ("initial_state_covariance_", n, ()),
        ]
        if self.resets:
            r = Resets(K, self.resets).n_resets
            shapes.update(
                {"reset_matrices_": (r, n, n), "reset_input_matrices_": (r, n, m_u), "reset_offsets_": (r, n)}
            )
            covariances.append(("reset_covariances_", n, (r,)))
        for name in set(shapes) & set(self.parameter_names):
            check_array(name, self.__dict__[name], shapes[name])
        for name, size, stack in covariances:
            value = check_covariances(name, self.__dict__[name], size)
            if value.shape[:-2] != stack:
                raise ValueError(f"{name} must have shape {stack + (size, size)}, got {value.shape}")
        check_probabilities("startprob_", self.startprob_, (K,))
        if not self.recurrent:
            check_probabilities("transmat_", self.transmat_, (K, K))

    def _snapshot(self) -> dict[str, Any]:
        return {name: np.array(self.__dict__[name]) for name in self.parameter_names}

    def _input_matrices(self) -> tuple[np.ndarray, np.ndarray]:
        """B (K, n, m_u) and D (p, m_u): empty without inputs."""
        if self.input_dim:
            return np.asarray(self.flow_input_matrices_, dtype=float), np.asarray(self.feedthrough_matrix_, dtype=float)
        p = np.shape(self.observation_matrix_)[0]
        return np.zeros((self._k, self.state_dim, 0)), np.zeros((p, 0))

    def _flows(self) -> LinearDynamics:
        """The K flows as regressions of x_t on [phi(x_t-1), u_t, 1], the ridge on phi's weights."""
        block = LinearDynamics(self._k, ridge=self.ridge, reg_covar=self.reg_covar)
        block.ridge_columns = np.r_[
            np.ones(self.flow_weights_.shape[2], dtype=bool), np.zeros(self.input_dim + 1, bool)
        ]
        B, _ = self._input_matrices()
        block.weights = np.concatenate([self.flow_weights_, B, self.flow_offsets_[:, :, None]], axis=2)
        block.covariances = self.flow_covariances_
        return block

    def _set_flows(self, block: LinearDynamics) -> None:
        """Read W_k, B_k, b_k, Q_k off the flows' regressions (:meth:`_flows`' layout)."""
        m = self.feature_map_.n_outputs
        self.flow_weights_, self.flow_offsets_ = block.weights[:, :, :m].copy(), block.weights[:, :, -1].copy()
        if self.input_dim:
            self.flow_input_matrices_ = block.weights[:, :, m:-1].copy()
        self.flow_covariances_ = block.covariances

    def _reset_block(self, empty: bool = False) -> Resets:
        """The resets as a block: regressions of x_t on [x_t-1, u_t, 1], as the SwitchingLDS's
        (``empty``: without parameters, their index only)."""
        block = Resets(self._k, self.resets, reg_covar=self.reg_covar, dof=self.reset_dof)
        if empty:
            return block
        R = np.asarray(self.reset_matrices_, dtype=float)
        B = self.reset_input_matrices_ if self.input_dim else np.zeros((*R.shape[:2], 0))
        block.reset_coefs = np.concatenate([R, B], axis=2)
        block.reset_intercepts, block.reset_covariances = self.reset_offsets_, self.reset_covariances_
        return block

    def _set_resets(self, block: Resets) -> None:
        """Read R_r, B_r, r_r, Q_r off the resets' regressions (:meth:`_reset_block`'s layout)."""
        n = self.state_dim
        self.reset_matrices_, self.reset_offsets_ = block.reset_coefs[:, :, :n].copy(), block.reset_intercepts.copy()
        if self.input_dim:
            self.reset_input_matrices_ = block.reset_coefs[:, :, n:].copy()
        self.reset_covariances_ = block.reset_covariances

    def _observation(self) -> LinearDynamics:
        """The observation model as one regression of y on [x, u, 1]."""
        block = LinearDynamics(1, reg_covar=self.reg_covar)
        _, D = self._input_matrices()
        block.weights = np.hstack([self.observation_matrix_, D, self.observation_offset_[:, None]])[None]
        block.covariances = self.observation_covariance_[None]
        return block

    def _chain(self) -> Stationary | InputDriven:
        """The switches: the Markov chain, or the recurrent guards, a multinomial logit on
        [phi(x_t-1), u_t] (the SwitchingLDS's, on the flows' features)."""
        if not self.recurrent:
            chain = Stationary(self._k)
            chain.initial_probs, chain.transition_matrix = self.startprob_, self.transmat_
            return chain
        return logit_guards(self)

    _fit_guards = fit_guards  # as the SwitchingLDS's, on [phi(x_t-1), u_t]

    def _parameters(self) -> laplace.FlowParameters:
        self._check_fitted()
        chain = self._chain()
        flows = self._flows()
        return laplace.FlowParameters(
            flows.weights,
            flows.covariances,
            self.feature_map_,
            self._observation(),
            self.initial_state_mean_,
            self.initial_state_covariance_,
            chain,
            self._reset_block() if self.resets else None,
        )

    # ------------------------------------------------------------------------ data
    def _sequences(self, X: Any, lengths: Sequence[int] | None, inputs: Any) -> Sequences:
        p = np.shape(self.__dict__["observation_matrix_"])[0] if "observation_matrix_" in self.__dict__ else None
        seqs = as_sequences(X, lengths).require(
            allow_missing=True, min_length=2, n_features=p or self.obs_dim, model="a NonlinearSwitchingLDS"
        )
        return seqs.with_inputs(inputs, self.input_dim, "this NonlinearSwitchingLDS")

    def _centre_path(self, seqs: Sequences) -> np.ndarray:
        """A first path for the mode search on new data: the centre of the states the feature map
        was fit to, at every step. The first Gauss-Newton step from it solves the model with every
        flow linearised there (a linear smoother of y). (The least-squares states of y = C x + d
        leave the directions y does not see at 0, which can lie outside the flows' range, where
        the features are clipped and the search stalls: on position-only oscillators with a 4-D
        state, ELBOs 10^4 below this start's.)"""
        return np.tile(self.feature_map_.location_, (seqs.n_steps, 1))

    def _infer(self, seqs: Sequences) -> laplace.Posterior:
        """q(x) q(z) on data with the parameters fixed, to convergence, each sequence on its own
        (:func:`_each_sequence`: the same whatever other sequences come with it), with resets also
        from a short mode at its change points (:meth:`_change_point_modes`) and, without recurrent
        switches, from a beam search's mode path (:func:`~modeshift.models.laplace_inference.infer`),
        as the SwitchingLDS's."""
        params, tol = self._parameters(), self._inference_tol
        beam = bool(self.resets) and self._k > 1 and not self.recurrent
        return _each_sequence(
            seqs,
            lambda one, path: laplace.infer(
                params, one, path, tol, _INFERENCE_SWEEPS, self._change_point_modes(one), beam
            ),
            self._centre_path(seqs),
        )

    def _change_point_modes(self, seqs: Sequences) -> tuple[np.ndarray, ...]:
        """With resets, one more start of q(z) for inference: a short mode at the data's change points
        (:func:`~modeshift.models.slds_starts.change_point_modes`, as the SwitchingLDS's); else none."""
        return slds_starts.change_point_modes(seqs, switching_dwell_times(self)) if self.resets and self._k > 1 else ()

    @property
    def _inference_tol(self) -> float:
        return self.tol if self.tol > 0 else _INFERENCE_TOL

    # ------------------------------------------------------------------ inference
    def predict_proba(self, X: Any, lengths: Sequence[int] | None = None, *, inputs: Any = None) -> PerStep:
        """q(z_t = k): smoothed mode probabilities (n_steps, K) under the Laplace posterior."""
        seqs = self._sequences(X, lengths, inputs)
        return seqs.restore(self._infer(seqs).mode_probs)

    def filter_proba(self, X: Any, lengths: Sequence[int] | None = None, *, inputs: Any = None) -> PerStep:
        """The forward pass of q(z) (n_steps, K): its potentials, the expected dynamics
        log-likelihoods, use q(x), which is smoothed; so this is not the exact filter, and at
        each sequence's last step it equals :meth:`predict_proba`."""
        seqs = self._sequences(X, lengths, inputs)
        posterior = self._infer(seqs)
        if self.resets:
            params, recursion = self._parameters().switching(), pair_hmm.forward_filter
            filtered = slds_inference.pair_chain(
                params, seqs, posterior.log_likelihoods, posterior.transitions, recursion
            )
            return seqs.restore(filtered[0])
        filtered, _ = kernels.forward_filter(
            posterior.log_likelihoods, seqs.offsets, self.startprob_, posterior.transitions
        )
        return seqs.restore(filtered)

    def predict(self, X: Any, lengths: Sequence[int] | None = None, *, inputs: Any = None) -> PerStep:
        """Most likely mode path: Viterbi on the potentials of q(z) after inference to convergence."""
        seqs = self._sequences(X, lengths, inputs)
        return seqs.restore(self._viterbi(seqs, self._infer(seqs)))

    def _viterbi(self, seqs: Sequences, posterior: laplace.Posterior) -> np.ndarray:
        with np.errstate(divide="ignore"):
            log_initial, log_transitions = np.log(self.startprob_), np.log(posterior.transitions)
        if self.resets:  # the chain whose evidence depends on the pair (z_t-1, z_t)
            params, potentials, recursion = self._parameters().switching(), posterior.log_likelihoods, pair_hmm.viterbi
            return slds_inference.pair_chain(params, seqs, potentials, log_transitions, recursion, log_initial)[0]
        return kernels.viterbi(posterior.log_likelihoods, seqs.offsets, log_initial, log_transitions)[0]

    def segment(self, X: Any, lengths: Sequence[int] | None = None, *, inputs: Any = None) -> pd.DataFrame:
        """Contiguous runs of one mode on the decoded path (:meth:`predict`): ``start``, ``end``
        (exclusive), ``mode``, ``probability`` (mean q(z_t = mode) over the run)."""
        seqs = self._sequences(X, lengths, inputs)
        posterior = self._infer(seqs)
        return mode_segments(seqs, self._viterbi(seqs, posterior), posterior.mode_probs)

    def smooth(self, X: Any, lengths: Sequence[int] | None = None, *, inputs: Any = None) -> PerStep:
        """E_q[x_t]: the mode of the Laplace posterior of the state path (n_steps, n)."""
        seqs = self._sequences(X, lengths, inputs)
        return seqs.restore(self._infer(seqs).means)

    def elbo(self, X: Any, lengths: Sequence[int] | None = None, *, inputs: Any = None) -> float:
        """The ELBO of q(x) q(z) on X after inference to convergence, each flow linearised at the
        mode of q(x): a lower bound on log p(X) for a linear map, an approximation of one otherwise."""
        return self._infer(self._sequences(X, lengths, inputs)).elbo

    # ---------------------------------------------------------- model selection
    @property
    def n_parameters(self) -> int:
        """Free parameters: flows (n (m + m_u + 1) + n (n + 1) / 2 for each flow some step reads:
        :func:`~modeshift.models.slds.read_flows`), observation model (p (n + m_u + 1) +
        p (p + 1) / 2), initial state, start probabilities, and the transition matrix or the
        identifiable guard parameters ((K - 1)(m + m_u) weights, K (K - 1) biases)."""
        self._check_fitted()
        K, (p, n), m, m_u = self._k, self.observation_matrix_.shape, self.feature_map_.n_outputs, self.input_dim
        count = self._flows().n_parameters(modes=read_flows(self)) + p * (n + m_u + 1) + p * (p + 1) // 2
        count += (K - 1) * (m + m_u) if self.recurrent else 0
        count += self._reset_block().n_parameters() if self.resets else 0
        return count + n + n * (n + 1) // 2 + (K - 1) + K * (K - 1)

    def aic(self, X: Any, lengths: Sequence[int] | None = None, *, inputs: Any = None) -> float:
        """-2 ELBO + 2 n_parameters (the ELBO standing in for the intractable log-likelihood)."""
        return -2.0 * self.elbo(X, lengths, inputs=inputs) + 2.0 * self.n_parameters

    def bic(self, X: Any, lengths: Sequence[int] | None = None, *, inputs: Any = None) -> float:
        """-2 ELBO + n_parameters log(n_steps) (the ELBO standing in for the log-likelihood)."""
        seqs = self._sequences(X, lengths, inputs)
        return -2.0 * self._infer(seqs).elbo + self.n_parameters * np.log(seqs.n_steps)

    def describe(self) -> pd.DataFrame:
        """One row per mode: dwell time, offset b_k, the norm of the feature weights W_k, the noise
        standard deviations sqrt(diag Q_k); with inputs, ``input_matrix`` B_k (n, m_u) and
        ``feedthrough`` D (p, m_u, the same for every mode); for a recurrent model, the guards
        for entering the mode; with ``resets``, ``resets_into``: for each other mode i,
        i -> (matrix [R_r, B_r], offset r_r) of the reset of the switch i -> k.

        The dwell time is 1 / (1 - p_kk), or for a recurrent model ``dwell_times_``, the mean
        run length in the most likely paths of the fitted data (NaN before a fit). As for the
        :class:`~modeshift.models.slds.SwitchingLDS`, ``entry_weights`` and ``entry_biases``
        map each other mode i to the guard (w_j - w_i, r_ij - r_ii) of entering mode j from i,
        here on the features: the switch is likelier than staying where
        (w_j - w_i) . phi(x) + (r_ij - r_ii) > 0 (inputs held at 0), a curved boundary in x."""
        self._check_fitted()
        K, dwell = self._k, switching_dwell_times(self)
        maps = self._reset_block().maps() if self.resets else None
        rows = []
        for k in range(K):
            row: dict[str, Any] = {
                "mode": k,
                "dwell_time": float(dwell[k]),
                "offset": np.asarray(self.flow_offsets_[k]),
                "weight_norm": float(np.linalg.norm(self.flow_weights_[k])),
                "noise_sd": np.sqrt(np.diagonal(self.flow_covariances_[k])),
            }
            if self.input_dim:
                row["input_matrix"] = np.asarray(self.flow_input_matrices_[k])
                row["feedthrough"] = np.asarray(self.feedthrough_matrix_)
            if self.recurrent:
                row.update(entry_guards(self, k))
            if maps is not None:
                row["resets_into"] = {i: maps[i, k] for i in range(K) if i != k}
            rows.append(row)
        return pd.DataFrame(rows).set_index("mode")

    # ------------------------------------------------------------ sample, forecast
    def _propagate(
        self, states: np.ndarray, modes: np.ndarray, inputs: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """One step of the chain and the flows per row of ``inputs``, (horizon, m_u) for all paths
        or (N, horizon, m_u) per path, from states (N, n) in modes (N,): paths (N, horizon, n)
        and their modes (N, horizon). A recurrent model's switch at each step reads the path's
        last state and the step's input; with ``resets`` a path that switches follows the reset
        of its switch."""
        flows, chain, N, horizon = self._flows(), self._chain(), len(states), inputs.shape[-2]
        resets = self._reset_block() if self.resets else None
        inputs = np.broadcast_to(inputs, (N, horizon, inputs.shape[-1]))
        paths, path_modes = np.empty((N, horizon, self.state_dim)), np.empty((N, horizon), int)
        for h in range(horizon):
            if self.recurrent:
                switches = chain.kernel_arrays(np.hstack([self.feature_map_.transform(states), inputs[:, h]]))[1]
                new_modes = draw_rows(switches[np.arange(N), modes], rng)
            else:
                new_modes = draw_rows(self.transmat_[modes], rng)
            regressors = laplace.flow_regressors(self.feature_map_, states, inputs[:, h])
            moved = flows.sample_rows(regressors, new_modes, rng)
            switched = new_modes != modes
            if resets is not None and switched.any():
                design = slds_regressors(states[switched], inputs[switched, h])
                moved[switched] = resets.sample_rows(design, modes[switched], new_modes[switched], rng)
            states, modes = moved, new_modes
            paths[:, h], path_modes[:, h] = states, modes
        return paths, path_modes

    def sample(
        self,
        n_steps: int,
        n_sequences: int = 1,
        random_state: int | np.random.Generator | None = None,
        *,
        inputs: Any = None,
    ) -> tuple[PerStep, PerStep]:
        """Simulate ``n_sequences`` sequences of ``n_steps`` steps: observations (n_steps, p) and
        modes (n_steps,), or lists of them for several sequences. ``inputs`` (n_steps, m_u), one
        array for every sequence or a list with one per sequence, are required when ``input_dim > 0``."""
        self._check_fitted()
        T, N = int(n_steps), int(n_sequences)
        model = "this NonlinearSwitchingLDS"
        U = np.stack(check_future_inputs(inputs, T, N, self.input_dim, model, name="inputs"))
        rng = np.random.default_rng(random_state)
        modes = draw_rows(np.broadcast_to(self.startprob_, (N, self._k)), rng)
        first = rng.multivariate_normal(self.initial_state_mean_, self.initial_state_covariance_, size=N)
        paths, path_modes = self._propagate(first, modes, U[:, 1:], rng)
        states = np.concatenate([first[:, None], paths], axis=1)
        modes = np.concatenate([modes[:, None], path_modes], axis=1)
        design = slds_regressors(states.reshape(N * T, -1), U.reshape(N * T, -1))
        observations = self._observation().sample_rows(design, np.zeros(N * T, dtype=np.int64), rng)
        observations = observations.reshape(N, T, -1)
        if N == 1:
            return observations[0], modes[0]
        return list(observations), list(modes)

    def forecast(
        self,
        X: Any,
        horizon: int,
        lengths: Sequence[int] | None = None,
        *,
        inputs: Any = None,
        future_inputs: Any = None,
    ) -> Forecast:
        """The predictive moments of the ``horizon`` observations after each sequence's end.

        From the Laplace posterior at the end T, x_T ~ N(m_T, P_T) and z_T ~ q(z_T), 2,000 paths
        (``FORECAST_PATHS``, seeded by ``random_state``) run through the chain and the nonlinear
        flows; y_T+h has mean C E[x_T+h] + d and covariance C Cov[x_T+h] C' + R from the paths'
        moments (Monte Carlo standard error about 2 % of a predictive standard deviation).
        ``mode_probabilities`` are exact, q(z_T) transmat^h, or for a recurrent model, whose
        switches read the state, the shares of the paths in each mode. With inputs, y_T+h's mean adds
        D u_T+h, from ``future_inputs`` (horizon, m_u), or a list of them (one per sequence).
        Returns a :class:`~modeshift.models.base.Forecast`, with lists for several sequences.
        """
        self._check_fitted()
        horizon = int(horizon)
        seqs = self._sequences(X, lengths, inputs)
        futures = check_future_inputs(
            future_inputs, horizon, seqs.n_sequences, self.input_dim, "this NonlinearSwitchingLDS"
        )
        posterior = self._infer(seqs)
        rng = np.random.default_rng(self.random_state)
        C, d, R = self.observation_matrix_, self.observation_offset_, self.observation_covariance_
        _, D = self._input_matrices()
        parts = []
        for last, future in zip(seqs.offsets[1:] - 1, futures):
            probabilities = posterior.mode_probs[last]
            starts = rng.multivariate_normal(posterior.means[last], posterior.covs[last], size=FORECAST_PATHS)
            modes = draw_rows(np.broadcast_to(probabilities, (FORECAST_PATHS, self._k)), rng)
            paths, path_modes = self._propagate(starts, modes, future, rng)
            mean = paths.mean(axis=0)
            centred = paths - mean
            covariances = C @ (np.einsum("nhi,nhj->hij", centred, centred) / (FORECAST_PATHS - 1)) @ C.T + R
            if self.recurrent:
                chain = np.eye(self._k)[path_modes].mean(axis=0)
            else:
                chain = [probabilities]
                for _ in range(horizon):
                    chain.append(chain[-1] @ self.transmat_)
                chain = np.array(chain[1:])
            symmetric = 0.5 * (covariances + covariances.transpose(0, 2, 1))
            parts.append(Forecast(mean @ C.T + future @ D.T + d, symmetric, chain))
        return Forecast.of_sequences(parts)

    # ------------------------------------------------------------------ streaming
    def _stream_recursion(self) -> ExtendedSwitchingKalmanRecursion:
        """The streaming filter (``filter_init``, ``filter_step``, ``filter_stream``): Kim's filter
        with each flow linearised at each mode's last filtered mean (an extended Kalman step per
        pair of modes, :class:`~modeshift.models.streaming.ExtendedSwitchingKalmanRecursion`).

        It is not the Laplace posterior of ``filter_proba``, which conditions q(x) on the whole
        sequence: it reads each observation once and keeps one Gaussian per mode. With a linear map
        it is exactly the :class:`~modeshift.models.slds.SwitchingLDS`'s streaming filter (Kim's,
        GPB2); with a nonlinear one the flow is linearised over the spread of each mode's filtered
        covariance, so it degrades where that spread is wide against the curvature of the flow
        (on the switching oscillators the modes it filters agree with ``filter_proba``'s on most
        steps, and its log-likelihoods are those of the approximation). With ``resets`` a switch's
        pair takes its reset's affine step (exact)."""
        params = self._parameters()
        W, B, b = params.split()
        C, D = self.observation_matrix_, self._input_matrices()[1]
        chain = params.chain

        def flow(means: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            value, jacobian = laplace.feature_jacobian(self.feature_map_, means)  # (K, m), (K, m, n)
            predicted = np.einsum("jnm,im->ijn", W, value) + (B @ u + b)[None]
            return predicted, np.einsum("jnm,imd->ijnd", W, jacobian)

        arrays = {"Q": self.flow_covariances_, "C": C, "D": D, "d": self.observation_offset_}
        if self.resets:  # the resets' A, B, b, and Q of every law: the flows', then the resets'
            coefs, n = self._reset_block().reset_coefs, self.state_dim
            arrays.update({"A": coefs[:, :, :n], "B": coefs[:, :, n:], "b": self.reset_offsets_})
            arrays["laws"] = params.switching().law_of_pairs()
            arrays["Q"] = slds_inference.law_stack(self.flow_covariances_, self._reset_block().noise_covariances())
        arrays.update({"R": self.observation_covariance_, "m0": self.initial_state_mean_})
        arrays.update({"P0": self.initial_state_covariance_, "flow": flow})
        transitions = stream_switches(chain, self.feature_map_.transform)
        return ExtendedSwitchingKalmanRecursion(self.startprob_, {**arrays, "transitions": transitions})

    _stream_evidence = SwitchingLDS._stream_evidence  # (y_t - d, u_t) checked, as the SwitchingLDS's

    def filter_forecast(self, state: FilterState, horizon: int, future_inputs: Any = None) -> Forecast:
        """The predictive moments of the ``horizon`` observations after those a filter state has
        seen: the streaming filter's law predicted ahead, each step linearised and collapsed to one
        Gaussian per mode (:meth:`SwitchingKalmanRecursion.forecast`; a first-order approximation of
        the nonlinear flows, where :meth:`forecast` simulates them); ``future_inputs`` (horizon,
        input_dim) for a model with inputs."""
        if not state.filtered:
            raise ValueError("the filter state has seen no observation yet")
        model = "this NonlinearSwitchingLDS"
        future = check_future_inputs(future_inputs, int(horizon), 1, self.input_dim, model)[0]
        modes, means, covariances = self._stream_recursion().forecast(state.filtered, future)
        return Forecast(means, covariances, modes)

    # ------------------------------------------------------------------------- EM
    def fit(
        self, X: Any, lengths: Sequence[int] | None = None, *, inputs: Any = None, **columns: Any
    ) -> NonlinearSwitchingLDS:
        """Estimate the parameters by Laplace EM (:func:`modeshift.models.em.run`); returns ``self``.
        ``inputs`` (n_steps, m_u) are required when ``input_dim > 0``."""
        self._start_fit()
        seqs = self._em_data(X, lengths, inputs=inputs, **columns)
        return self._fit_auto(seqs) if self.n_states == "auto" else self._fit_em(seqs)

    def _em_data(
        self, X: Any, lengths: Sequence[int] | None = None, *, inputs: Any = None, **columns: Any
    ) -> Sequences:
        """What EM reads, from ``fit``'s arguments (or one shard of them: :mod:`modeshift.distributed`)."""
        return self._sequences(as_sequences(X, lengths, **columns), None, inputs).require_observed()

    def _fit_em(self, seqs: Sequences, over: em.Over | None = None) -> NonlinearSwitchingLDS:
        """Laplace EM from the starting parameters; ``over`` runs the E-steps over shards held
        elsewhere, each keeping its q(x) q(z) beside it, ``seqs`` being then a sample to start from
        (each shard's first E-step infers q(x) q(z) under the starting parameters, as in memory
        from parameters set by hand)."""
        given = all(self.__dict__.get(name) is not None for name in (*self.parameter_names, "feature_map_"))
        self.__dict__["_given"] = {**self._snapshot(), "feature_map_": self.feature_map_} if given else None
        self.__dict__["_sharded"] = over is not None
        result = em.run(self, seqs, label=f"NonlinearSwitchingLDS K={self._k}", over=over)
        if self.recurrent:  # the guards' dwell times: the runs of the most likely paths
            runs = (over or em.in_memory(seqs))(run_statistics, self, result.workspace)
            with np.errstate(invalid="ignore"):
                self.dwell_times_ = runs["length"] / runs["count"]
        for name in ("_given", "_start", "_sharded"):
            self.__dict__.pop(name, None)
        self._finish_fit(seqs)
        return self

    def _fit_auto(self, seqs: Sequences) -> NonlinearSwitchingLDS:
        keep_modes = type(self)._kept_modes if self.selection == "prune" else None
        selection.fit_auto(self, seqs, ("feature_map_", *FIT_ARRAYS), keep_modes)
        self._finish_fit(seqs)
        return self

    # what _kept_modes slices (SwitchingLDS._kept_modes): the parameters indexed by pairs of modes, by mode
    _PAIR_INDEXED = SwitchingLDS._PAIR_INDEXED
    _MODE_INDEXED = ("flow_", "recurrence_weights", "input_weights", "startprob")
    _renormalise_kept = SwitchingLDS._renormalise_kept

    def _kept_modes(self, kept: np.ndarray) -> NonlinearSwitchingLDS:
        """A model of the ``kept`` modes of this fitted one, started (``selection="prune"``) from
        their flows, the same observation model and feature map, p(z_0) and the chain's rows
        renormalised over the kept modes, each reset that of its switch between the kept modes
        (:meth:`SwitchingLDS._kept_modes`)."""
        smaller = SwitchingLDS._kept_modes(self, kept)
        smaller.__dict__["feature_map_"] = self.feature_map_
        return smaller

    def _em_initialize(self, seqs: Sequences, rng: np.random.Generator, restart: int) -> None:
        """Parameters set before ``fit`` (or kept by ``warm_start``) start the first restart, q(x) q(z)
        inferred under them by the first E-step (from the feature map's centre); every other start is
        :meth:`_initialize`'s (over shards, its parameters only: each shard infers its own q(x) q(z))."""
        given = self.__dict__["_given"]
        if restart == 0 and given is not None:
            start_given(self, given)
            start = None
        else:
            at_change_points = bool(self.resets) and self._k > 1 and restart % 2 == 1
            start = (self._initialize_at_change_points if at_change_points else self._initialize)(seqs, rng)
        self.__dict__["_start"] = None if self.__dict__["_sharded"] else start

    def _initialize_at_change_points(self, seqs: Sequences, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """The start of the odd restarts of a model with resets, as the SwitchingLDS's
        (:meth:`SwitchingLDS._initialize_at_change_points`): :meth:`_initialize`'s, then its least
        occupied mode moved to the change points of the data
        (:func:`~modeshift.models.slds_starts.change_point_start`), where a one-step switch such as a
        ball's impact shows as a kink that the ARHMM on the data cut at their jumps does not see;
        without recurrent switches, then in turn (at most ``_BEAM_ROUNDS`` times) the mode path of a
        beam search in the model linearised along the start's mode of q(x) and the parameters learned
        with those modes held (:meth:`_clamped_start`), while the path changes and the objective rises.
        This start's parameters come from the noisy delay embedding, unlike the SwitchingLDS's from
        denoised states, so one beam is not enough: on the ball (seed 0, 18 impacts) the change points
        put the short mode within a step of 12 impacts, one beam of 9, and EM kept those 9; seven rounds
        reach 14 (objective 2121 -> 2333), and EM from there the SwitchingLDS's ELBO (2319 against
        2317). Returns the starting path and q(z)."""
        start = self._initialize(seqs, rng)
        grown = slds_starts.change_point_start(self, seqs, start[1])
        if grown is None or self.recurrent:
            return start if grown is None else grown[1]
        objective, (states, modes) = grown
        for _ in range(_BEAM_ROUNDS):
            kept = self._snapshot()
            beam = slds_inference.beam_modes(laplace.linearised(self._parameters(), seqs, states)[0], seqs)[0]
            if np.array_equal(beam, modes):
                break
            value, (beam_states, _) = self._clamped_start(seqs, beam.argmax(axis=1))
            if not value > objective:
                self.__dict__.update(kept)
                break
            objective, states, modes = value, beam_states, beam
        return states, modes

    def _clamped_start(self, seqs: Sequences, path: np.ndarray) -> tuple[float, tuple[np.ndarray, np.ndarray]]:
        """``slds_starts.CLAMPED_SWEEPS`` rounds of the Laplace q(x) (from the feature map's centre,
        then from the last mode) and the M-step, with the modes held at ``path`` (T,), then the first
        E-step's sweep from there: its objective, and the start (the mode of q(x), the modes (T, K) one-hot)."""
        modes = np.eye(self._k)[path]
        pairs = independent_pairs(modes, seqs.starts)
        states, empty, tol = self._centre_path(seqs), np.empty(0), laplace.MODE_SHARE * self._inference_tol
        for _ in range(slds_starts.CLAMPED_SWEEPS):
            params = self._parameters()
            at, covs, cross_covs, *_ = laplace.find_mode(params, seqs, modes, states, tol, pairs=pairs)
            states = at.path
            posterior = laplace.Posterior(states, covs, cross_covs, modes, pairs, empty, empty, empty, at.value)
            self._m_step(seqs, self._statistics(seqs, posterior, params))
        return self._sweep(self._parameters(), seqs, modes, states).elbo + self._log_prior(), (states, modes)

    def _initialize(self, seqs: Sequences, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """The state read off the data (PCA, or a delay embedding when n > p; missing values
        interpolated) and the feature map fit to it; a sticky ``ARHMM(features=...)`` (the best of
        4 restarts) on the data's own directions (all of the state when n <= p), with ceil(n / p)
        lags (a position's past holds its velocity), gives the modes and the chain, and each
        mode's flow is the weighted ridge regression of the state on [phi(x_t-1), u_t, 1] under
        those modes (D = 0). That ARHMM has no ridge when it has several lags, which are nearly
        collinear (on position-only oscillators ``ridge=1e-3`` shrank the velocity away: 0.54 of the modes
        right on two seeds in five, against 0.8 to 0.94 without). With inputs and one lag, the
        ARHMM's series is [x_t, u_t+1] and its features [phi(x_t-1), u_t] (the flows' regressors):
        it also regresses the inputs on them, which carries no sign of the modes. On rotations kicked
        in opposite directions by an input, its modes were all right where the ARHMM blind to the
        inputs got 0.62 to 0.98 (seeds 0-3). (An ARHMM on a whole delay
        embedding can fit a mode of a few steps exactly, a collapsed start EM never leaves;
        regressing y_t alone on its lags cannot.) With ``resets`` the ARHMM sees the data cut at
        its jumps (:func:`_jumps`), the flows are regressed without the jump steps, and the resets
        start by forgetting the state (x_t ~ N(mean, covariance) of the starting states): on
        oscillators that jump to a fixed point at each switch (``tests/test_nonlinear_slds_resets.py``,
        seeds 0-9) 7 fits in 10 then find every mode (8 with 3 restarts), where an ARHMM with resets
        on the uncut data led to 0.75 to 0.85 of the modes on four of seeds 0-4. Returns the starting
        path and q(z)."""
        n, p, K = self.state_dim, seqs.n_features, self._k
        Y = seqs.values
        self.observation_offset_ = np.nanmean(Y, axis=0)
        centred = _interpolated(seqs, Y - self.observation_offset_)
        if n <= p:
            _, vectors = np.linalg.eigh(np.atleast_2d(np.cov(centred.T, bias=True)))
            self.observation_matrix_ = vectors[:, ::-1][:, :n]
            states = centred @ self.observation_matrix_
        else:
            states = _delay_embedding(seqs, centred, n)
            self.observation_matrix_ = np.eye(p, n)
        scale = max(float(np.mean(centred**2)), 1e-12)
        residual = centred - states @ self.observation_matrix_.T
        self.observation_covariance_ = ensure_positive_definite(
            np.atleast_2d(np.cov(residual.T, bias=True)) + _INIT_NOISE * scale * np.eye(p)
        )
        self.__dict__["feature_map_"] = feature_map(self.features).fit(states)
        observed = states[:, : min(n, p)]  # the data's own directions (the rest: differences of them)
        order = -(-n // p)  # as many lags as the delay embedding holds
        # with resets, the ARHMM runs on the data cut at its jumps: it would take them as a mode
        jumps = _jumps(seqs, centred, order + 2) if self.resets else np.zeros(0, dtype=np.int64)
        pieces = np.diff(np.union1d(seqs.offsets, jumps))
        arhmm = ARHMM(
            n_states=K,
            order=order,
            features=self.features,
            # a series' lags are nearly collinear: a ridge would shrink away their difference, the velocity
            ridge=self.ridge if order == 1 else 0.0,
            n_iter=50,
            n_restarts=_INIT_RESTARTS,
            random_state=rng,
            stickiness=_INIT_STICKINESS,
            reg_covar=max(self.reg_covar, 1e-6 * scale),
        )
        if n <= p:
            arhmm.feature_map_ = self.feature_map_
        if self.input_dim and n <= p:  # its series [x_t, u_t+1], its regressors [phi(x_t-1), u_t]
            observed = np.hstack([observed, _next_inputs(seqs)])
            arhmm.feature_map_ = Custom(functools.partial(_flow_regressors, self.feature_map_, n)).fit(observed)
        with warnings.catch_warnings():  # this fit only proposes a start: its cap is no concern
            warnings.simplefilter("ignore", em.ConvergenceWarning)
            try:
                learned = start_data(observed, pieces)
                arhmm.fit(learned.values, learned.lengths)
            except ValueError as error:
                raise ValueError(
                    f"NonlinearSwitchingLDS: its start, an ARHMM of {K} modes on {seqs.n_steps} steps with "
                    f"{self.feature_map_.n_outputs} features per mode, failed ({error}): give more steps, fewer "
                    "modes or a smaller feature map"
                ) from None
        mode_probs = arhmm.predict_proba(observed, pieces)
        mode_probs = np.concatenate(mode_probs) if isinstance(mode_probs, list) else np.asarray(mode_probs)
        rows = seqs.linked_rows
        linked = mode_probs[rows] * ~np.isin(rows, jumps)[:, None]  # a jump is a reset's, not a flow's
        flows = LinearDynamics(self._k, ridge=self.ridge, reg_covar=max(self.reg_covar, 1e-6 * scale))
        flows.ridge_columns = np.r_[
            np.ones(self.feature_map_.n_outputs, dtype=bool), np.zeros(self.input_dim + 1, bool)
        ]
        regressors = laplace.flow_regressors(self.feature_map_, states[rows - 1], seqs.inputs[rows])
        flows.m_step(flows.statistics(np.hstack([states[rows], regressors]), n, linked))
        self._set_flows(flows)
        if self.input_dim:
            self.feedthrough_matrix_ = np.zeros((p, self.input_dim))
        self.startprob_ = normalise_rows(np.asarray(arhmm.startprob_, dtype=float) + 1e-3)
        if self.recurrent:  # the guards: a logistic regression on the ARHMM's modes, as the SwitchingLDS's start
            m = self.feature_map_.n_outputs
            self.recurrence_weights_, self.input_weights_ = np.zeros((K, m)), np.zeros((K, self.input_dim))
            self.recurrence_biases_ = np.zeros((K, K))
            pairs = independent_pairs(mode_probs)[rows]
            self._fit_guards(Stacked(regressors[:, : m + self.input_dim]), Stacked(pairs), max_iter=200)
        else:
            self.transmat_ = normalise_rows(np.asarray(arhmm.transmat_, dtype=float) + 1e-3)
        self.initial_state_mean_ = states[seqs.starts].mean(axis=0)
        self.initial_state_covariance_ = ensure_positive_definite(
            np.atleast_2d(np.cov(states.T, bias=True)) + 1e-6 * scale * np.eye(n)
        )
        self.initial_state_covariance_prior_ = self.initial_state_covariance_  # P0's prior: the state's spread
        if self.resets:  # resets that forget the state: x_t ~ N(mean, spread) of the states at a switch
            r = Resets(K, self.resets).n_resets
            self.reset_matrices_, self.reset_offsets_ = np.zeros((r, n, n)), np.tile(states.mean(axis=0), (r, 1))
            self.reset_covariances_ = np.tile(self.initial_state_covariance_, (r, 1, 1))
            if self.input_dim:
                self.reset_input_matrices_ = np.zeros((r, n, self.input_dim))
        return states, mode_probs

    def _e_step(self, seqs: Sequences, workspace: dict[str, Any]) -> tuple[float, Statistics]:
        """One sweep of q(x), q(z) from the previous iteration's posterior (the workspace's), and
        the expected statistics of the M-step under it. Each sequence's sweep runs on its own
        (:func:`_each_sequence`: its mode search stops by its own gain), so that a fit over shards
        of sequences (:mod:`modeshift.distributed`) equals the fit in memory, however cut."""
        previous = workspace.get("posterior")
        params = self._parameters()
        if previous is not None:
            start, modes = previous.means, previous.mode_probs
        elif self.__dict__.get("_start") is not None:
            start, modes = self.__dict__["_start"]
        else:  # parameters set by hand: q(z) inferred under them, from the feature map's centre
            start, modes = self._centre_path(seqs), self._infer(seqs).mode_probs
        posterior = self._sweep(params, seqs, modes, start, previous)
        workspace["posterior"] = posterior
        return posterior.elbo + self._log_prior(), self._statistics(seqs, posterior, params)

    def _sweep(
        self,
        params: laplace.FlowParameters,
        seqs: Sequences,
        modes: np.ndarray,
        start: np.ndarray,
        previous: laplace.Posterior | None = None,
    ) -> laplace.Posterior:
        """One sweep of q(x), q(z) under ``params`` from q(z) ``modes``, the path ``start`` and EM's
        ``previous`` posterior (if any), each sequence on its own (:func:`_each_sequence`)."""
        tol = laplace.MODE_SHARE * self._inference_tol
        return _each_sequence(
            seqs, lambda one, q, path, last: laplace.sweep(params, one, q, path, tol, last), modes, start, previous
        )

    def _log_prior(self) -> float:
        """-reg_covar / 2 tr(S^-1) for every covariance S, the ridge prior on the flows' weights,
        P0's inverse-Wishart and stickiness sum_k log p_kk (for a recurrent model, the guards' L2 penalty)."""
        total = self._flows().log_prior() + self._observation().log_prior()
        total += self._reset_block().log_prior() if self.resets else 0.0
        total += initial_law(self).log_prior(self.initial_state_covariance_)
        if self.recurrent:
            return total + self._chain().log_prior()
        if self.stickiness > 0:
            with np.errstate(divide="ignore"):
                total += self.stickiness * float(np.log(np.diagonal(self.transmat_)).sum())
        return total

    def _statistics(self, seqs: Sequences, posterior: laplace.Posterior, params: laplace.FlowParameters) -> Statistics:
        """The expected sufficient statistics of the M-step under q(x) q(z): each flow's weighted by
        q(z_t = k), with ``resets`` by the stays xi_t(k, k), and each reset's, on the moments of
        [x_t-1, u_t, 1], by the switches into it (``FlowParameters.law_weights``; robust resets: the
        sums also by E[s] of q(s), not the counts)."""
        rows, starts, K = seqs.linked_rows, seqs.starts, self._k
        weights = params.law_weights(posterior.mode_probs, posterior.pair_counts)[rows]
        scales = posterior.scales[rows] if len(posterior.scales) else None

        xx, xr, rr = laplace.flow_statistics(params.features, seqs, posterior, weights[:, :K])  # summed already
        flows = Statistics(yy=xx, yz=xr, zz=rr, count=weights[:, :K].sum(axis=0))
        resets = {}
        if self.resets:  # regressions on [x_t-1, u_t, 1], weighted by the switches into each law
            scaled = slds_inference.scaled_weights(weights, scales)[:, K:]
            yy, yz, zz = slds_inference.transition_sums(seqs, posterior, scaled)
            resets = {"resets": Statistics(yy=yy, yz=yz, zz=zz, count=weights[:, K:].sum(axis=0))}
        Y, means, covs = seqs.values, posterior.means, posterior.covs
        _, D = self._input_matrices()
        yy, yz, zz, count = observation_statistics(
            Y,
            means,
            covs,
            np.hstack([seqs.inputs, np.ones((len(Y), 1))]),
            self.observation_matrix_,
            np.hstack([D, self.observation_offset_[:, None]]),
            self.observation_covariance_,
        )
        return Statistics(
            flows=flows,
            observation=Statistics(yy=yy[None], yz=yz[None], zz=zz[None], count=np.array([count])),
            initial=Moments.of(means[starts]),
            initial_covariance=covs[starts].sum(axis=0),
            start=posterior.mode_probs[starts].sum(axis=0),
            **resets,
            **self._switch_statistics(seqs, posterior),
        )

    def _switch_statistics(self, seqs: Sequences, posterior: laplace.Posterior) -> dict[str, Any]:
        """The chain's: the summed pair posteriors; for recurrent guards their rows, with the
        guards' inputs [phi(E x_t-1), u_t], stacked (kept on a cluster's shards: ``keeps_rows``)."""
        rows = seqs.linked_rows
        if not self.recurrent:
            return {"pairs": posterior.pair_counts[rows].sum(axis=0)}
        inputs = np.hstack([posterior.feature_values[rows], seqs.inputs[rows]])
        return {"pairs": Stacked(posterior.pair_counts[rows]), "guard_inputs": Stacked(inputs)}

    @property
    def keeps_rows(self) -> bool:
        """Whether a fit over shards keeps per-step rows there (:mod:`modeshift.models.em`): the
        recurrent guards', as the SwitchingLDS's."""
        return bool(self.recurrent)

    def _m_step(self, seqs: Sequences, stats: Statistics) -> None:
        """Closed-form M-step: ridge regressions of the flows, the observation model, m0, P0, the chain."""
        n = self.state_dim
        flows = self._flows()
        flows.m_step(stats["flows"])
        self._set_flows(flows)
        if self.resets:
            resets = self._reset_block()
            resets.m_step(stats["resets"])
            self._set_resets(resets)
        observation = self._observation()
        observation.m_step(stats["observation"])
        (W,), (self.observation_covariance_,) = observation.weights, observation.covariances
        self.observation_matrix_, self.observation_offset_ = W[:, :n].copy(), W[:, -1].copy()
        if self.input_dim:
            self.feedthrough_matrix_ = W[:, n:-1].copy()
        law = initial_law(self)
        self.initial_state_mean_, self.initial_state_covariance_ = law.m_step(
            stats["initial"], stats["initial_covariance"]
        )
        self.startprob_ = normalise_rows(stats["start"] + 1e-10)
        if self.recurrent:
            self._fit_guards(stats["guard_inputs"], stats["pairs"])
        else:
            self.transmat_ = normalise_rows(stats["pairs"] + self.stickiness * np.eye(self._k) + 1e-10)

    def _em_snapshot(self) -> dict[str, Any]:
        return {**with_prior(self), "feature_map_": self.feature_map_}

    def _em_restore(self, snapshot: dict[str, Any]) -> None:
        self.__dict__.update(snapshot)

    # ---------------------------------------------------------------- persistence
    def _learned_arrays(self) -> dict[str, np.ndarray]:
        self._check_fitted()
        arrays = {name: np.asarray(self.__dict__[name], dtype=float) for name in self.parameter_names}
        _, state = self.feature_map_.state()
        arrays.update({f"feature_map_.{key}": np.asarray(value, dtype=float) for key, value in state.items()})
        return {**arrays, **fit_arrays(self)}

    def _learned_attributes(self) -> dict[str, Any]:
        out = selection.saved_fit(self)
        return {**out, "feature_map": self.feature_map_.state()[0]}

    def _restore(self, arrays: dict[str, np.ndarray], attributes: dict[str, Any]) -> None:
        """Read the feature map, the parameters and the fit's record, then check them."""
        config = attributes.pop("feature_map", None)
        if config is None:
            raise ValueError("the model file lacks its feature map (the attribute 'feature_map')")
        state = {key.split(".", 1)[1]: value for key, value in arrays.items() if key.startswith("feature_map_.")}
        self.__dict__["feature_map_"] = feature_map(config, state)
        for name, value in attributes.items():
            setattr(self, name, selection.restored_fit(name, value))
        missing = [name for name in self.parameter_names if name not in arrays]
        if missing:
            raise ValueError(f"the model file lacks the parameter array(s) {missing}")
        for name in (*self.parameter_names, *FIT_ARRAYS):
            if name in arrays:
                setattr(self, name, np.array(arrays[name]))
        self._check_parameters()

    # ---------------------------------------------------------------- the automaton
    def automaton(
        self, X: Any = None, lengths: Sequence[int] | None = None, *, inputs: Any = None, resolution: int = 25
    ) -> Automaton:
        """The fitted model as a hybrid automaton (:mod:`modeshift.models.automaton`), in its latent
        space, as :meth:`SwitchingLDS.automaton <modeshift.models.slds.SwitchingLDS.automaton>`.

        Flows: each mode's x_t = [W_k, B_k] [phi(x_t-1), u_t] + b_k + N(0, Q_k), ``regressors`` the
        feature map's config (with inputs, and ``"inputs": m_u``, the columns of u_t after the
        features). With a state of one or two dimensions the vector fields E[x_t | x_t-1 = s,
        z_t = k] - s and, for a recurrent model, the guards p(z_t = j | z_t-1 = i, x_t-1 = s)
        (inputs held at 0), curved where phi is, are sampled on a ``resolution``-point mesh over
        the range of the smoothed states E_q[x_t] of ``X`` (with ``inputs``, as for ``fit``); without
        ``X``, over the map's location -/+ 3 scales (the states it was fit to), or for a user's
        function, the initial law's m0 -/+ 3 standard deviations. For a 1-D state each guard's
        ``thresholds`` are where it crosses 1/2 over the same range. Dwell times: as in
        :meth:`describe`. Resets (with ``resets``): (source, target) -> (matrix [R_r, B_r], offset
        r_r) of the reset of each switch, affine in x.
        """
        self._check_fitted()
        features, m_u = self.feature_map_, self.input_dim
        if X is not None:
            states = self._infer(self._sequences(X, lengths, inputs)).means
            bounds = states.min(axis=0), states.max(axis=0)
        elif isinstance(features, Custom):
            spread = 3 * np.sqrt(np.diagonal(self.initial_state_covariance_))
            bounds = self.initial_state_mean_ - spread, self.initial_state_mean_ + spread
        else:
            bounds = features.location_ - 3 * features.scale_, features.location_ + 3 * features.scale_

        def moves(points: np.ndarray) -> np.ndarray:
            following = np.einsum("kim,gm->kgi", self.flow_weights_, features.transform(points))
            return following + self.flow_offsets_[:, None, :] - points

        switches = None
        if self.recurrent:
            chain = self._chain()

            def switches(points: np.ndarray) -> np.ndarray:
                return chain.kernel_arrays(np.hstack([features.transform(points), np.zeros((len(points), m_u))]))[1]

        grid, shape, fields, guards = sampled_parts(self._k, bounds, resolution, moves, switches)
        regressors = features.config() | ({"inputs": m_u} if m_u else {})
        B, _ = self._input_matrices()
        laws = zip(self.flow_weights_, B, self.flow_offsets_, self.flow_covariances_)
        flows = [Flow(k, np.hstack([W, B_k]), b, Q, regressors) for k, (W, B_k, b, Q) in enumerate(laws)]
        resets = self._reset_block().maps() if self.resets else {}
        return Automaton(np.arange(self._k), flows, grid, shape, fields, guards, resets, switching_dwell_times(self))


def _next_inputs(seqs: Sequences) -> np.ndarray:
    """u_t+1 per row (0 at a sequence's last row): beside x_t in the start's ARHMM, its lag is
    x_t-1 with the input u_t that drives step t."""
    following = np.zeros_like(seqs.inputs)
    following[:-1] = seqs.inputs[1:]
    following[seqs.offsets[1:] - 1] = 0.0
    return following


def _flow_regressors(features: FeatureMap, n: int, lags: np.ndarray) -> np.ndarray:
    """[phi(x), u] of rows [x, u]: the flows' regressors, as the start's ARHMM's features."""
    return np.hstack([features.transform(lags[:, :n]), lags[:, n:]])


def _each_sequence(seqs: Sequences, infer: Callable[..., laplace.Posterior], *per_step: Any) -> laplace.Posterior:
    """``infer(one, *rows)`` for each sequence ``one`` of ``seqs`` with its rows of the ``per_step``
    arrays or posteriors (None passes as None), the posteriors stacked in order. The objective is
    a sum over sequences, but a mode search over several at once takes one line search and one
    stopping rule for all: run on its own, each sequence's q(x) q(z) does not depend on which
    others it is with."""
    if seqs.n_sequences == 1:
        return infer(seqs, *per_step)
    parts = [
        infer(one, *(_rows(item, first, last) for item in per_step))
        for one, first, last in zip(seqs.blocks(1), seqs.offsets[:-1], seqs.offsets[1:])
    ]
    stacked = {name: np.concatenate([getattr(part, name) for part in parts]) for name in _PER_STEP}
    return laplace.Posterior(**stacked, elbos=np.concatenate([part.elbos for part in parts]))


#: The fields of a Laplace posterior with a row per step (all of them but the ELBOs, one per sequence).
_PER_STEP = tuple(field.name for field in dataclasses.fields(laplace.Posterior) if field.name != "elbos")


def _rows(item: Any, first: int, last: int) -> Any:
    """Rows ``first`` to ``last`` - 1 of an array or of every per-step field of a posterior."""
    if isinstance(item, laplace.Posterior):
        return dataclasses.replace(item, **{name: getattr(item, name)[first:last] for name in _PER_STEP})
    return None if item is None else item[first:last]


def _jumps(seqs: Sequences, values: np.ndarray, min_length: int) -> np.ndarray:
    """The steps t where the series jumps (a reset's mark): the change d_t = y_t - y_t-1 an outlier
    against its neighbours', e_t = d_t - (d_t-1 + d_t+1) / 2 (a jump J gives J there and -J / 2
    beside it), by a robust z-score (the root mean square over dimensions of e_t / (1.4826 median
    |e|)) above ``_JUMP_SCORE`` and no smaller than its neighbours', kept (earliest first) where
    they leave pieces of at least ``min_length`` steps within their sequence."""
    change = np.diff(values, axis=0)  # change[t - 1] = d_t
    excess = np.zeros_like(values)
    excess[2:-1] = change[1:-1] - 0.5 * (change[:-2] + change[2:])
    steps = np.arange(len(values))
    sequence = np.searchsorted(seqs.offsets, steps, side="right") - 1
    first, end = seqs.offsets[sequence], seqs.offsets[sequence + 1]
    inner = (steps >= first + 2) & (steps <= end - 2)  # d_t-1, d_t, d_t+1 all within the sequence
    if not inner.any():
        return np.zeros(0, dtype=np.int64)
    spread = np.maximum(1.4826 * np.median(np.abs(excess[inner]), axis=0), 1e-12)
    score = np.where(inner, np.sqrt(np.mean((excess / spread) ** 2, axis=1)), 0.0)
    peaks = (score > _JUMP_SCORE) & (score >= np.roll(score, 1)) & (score >= np.roll(score, -1))
    kept: list[int] = []
    for t in np.flatnonzero(peaks):
        since = t - max(first[t], kept[-1] if kept else 0)
        if since >= min_length and end[t] - t >= min_length:
            kept.append(int(t))
    return np.array(kept, dtype=np.int64)


def _delay_embedding(seqs: Sequences, centred: np.ndarray, n: int) -> np.ndarray:
    """[y_t, y_t - y_t-1, second differences, ...] cut to n entries per step: a delay embedding in
    differences (the same information as [y_t, y_t-1, ...], but not nearly collinear, so that the
    feature map's standardisation sees each direction), within each sequence (a sequence's first
    values repeated before it)."""
    columns, current = [centred], centred
    for _ in range(1, -(-n // centred.shape[1])):
        current = current - laplace.previous_states(seqs, current)
        columns.append(current)
    return np.hstack(columns)[:, :n]


def _interpolated(seqs: Sequences, values: np.ndarray) -> np.ndarray:
    """``values`` with each missing entry interpolated linearly in time within its sequence (held
    at the nearest observed value before the first or after the last; 0 where none is)."""
    out = values.copy()
    for first, last in zip(seqs.offsets[:-1], seqs.offsets[1:]):
        for column in out[first:last].T:
            missing = np.isnan(column)
            if missing.all():
                column[:] = 0.0
            elif missing.any():
                steps = np.arange(len(column))
                column[missing] = np.interp(steps[missing], steps[~missing], column[~missing])
    return out
