"""Switching linear dynamical systems (SLDS) and recurrent SLDS, fit by structured variational EM.

A discrete mode z_t selects the affine dynamics of a continuous state x_t, which is seen
through one linear-Gaussian observation model:

    z_0 ~ startprob,   z_t | z_t-1 ~ transmat                       (plain SLDS)
                       p(z_t = j | z_t-1 = i, x_t-1, u_t)
                         = softmax_j(w_j . x_t-1 + v_j . u_t + r_ij)  (recurrent SLDS)
    x_0 ~ N(m0, P0),   x_t = A_z x_t-1 + B_z u_t + b_z + N(0, Q_z),
    y_t = C x_t + D u_t + d + N(0, R).

With ``resets``, a switch i -> j moves the state by a reset regression instead of mode j's
flow, x_t = R_r x_t-1 + B_r u_t + r_r + N(0, Q_r) (r the reset of the switch: a ball's
velocity reversed at impact), learned in the same EM.

In the recurrent model the hyperplanes (w_j - w_i) . x + (r_ij - r_ii) = 0 are learned
guards: the state at which leaving mode i for mode j becomes more likely than staying.
The E-step, structured mean-field inference of q(x) q(z), is in
:mod:`modeshift.models.slds_inference`; this module holds the estimator.

Example: a thermostat with hysteresis (heating switches off above 22 degrees, cooling below 18).

>>> from modeshift import SwitchingLDS
>>> from modeshift.datasets.simulators import thermostat
>>> from modeshift.metrics import mode_accuracy
>>> sim = thermostat(1000, random_state=0)
>>> model = SwitchingLDS(n_states=2, state_dim=1, recurrent=True, n_iter=100, random_state=0).fit(sim.observations)
>>> mode_accuracy(sim.modes, model.predict(sim.observations)) > 0.9
True
>>> list(model.describe().columns)
['dwell_time', 'eigenvalues', 'offset', 'entry_weights', 'entry_biases']
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from modeshift import _kernels as kernels
from modeshift._kernels import pair_hmm
from modeshift.data import Sequences, as_sequences, check_array, check_covariances, check_probabilities
from modeshift.dynamics import (
    InitialStateLaw,
    LinearDynamics,
    ensure_positive_definite,
    jump_linear_moments,
    observation_statistics,
)
from modeshift.emissions.reset import RESET_TIES, Resets, check_reset_dof, student_noise
from modeshift.models import em, selection, slds_starts, subspace
from modeshift.models import slds_inference as inference
from modeshift.models.arhmm import ARHMM, FORECAST_PATHS
from modeshift.models.automaton import Automaton, Flow, sampled_parts, switching_dwell_times
from modeshift.models.base import Forecast, Model, NotFittedError, check_future_inputs, mode_segments
from modeshift.models.lds import LinearGaussianSSM, PerStep
from modeshift.models.params import Boolean, Integer, Number, OneOf, either
from modeshift.models.streaming import (
    FilterState,
    StreamingFilters,
    SwitchingKalmanRecursion,
    check_input_row,
    check_row,
)
from modeshift.statistics import Kept, Moments, Stacked, Statistics
from modeshift.transitions import InputDriven, Stationary, draw_rows, normalise_rows

if TYPE_CHECKING:
    from modeshift.smc.adapters import SwitchingLinear

__all__ = ["SwitchingLDS"]

_GUARD_PENALTY = 1e-2  # L2 penalty on the recurrence parameters: keeps separable guards finite
_INIT_LDS_ITERATIONS = 20  # EM iterations of the one-mode model that denoises the initial states
_INIT_LDS_STAGES = (1, 5, _INIT_LDS_ITERATIONS)  # after these many, its smoothed states propose starts
_INIT_PROPOSALS = 8  # ARHMM fits per stage; the SLDS objective after one E-step picks one of all
_INIT_STICKINESS = 20.0  # its pseudo-counts for staying: modes of a dynamical system persist
START_STEPS = 25_000  # most steps a start's ARHMM learns from (start_data: pieces over all the data)
START_PIECE = 1_000  # steps of each piece
_NOISY_STAGES = (_INIT_LDS_ITERATIONS,)  # the K n-state start proposes from its fitted one-mode model only
_RANKING_ITERATIONS = 10  # EM iterations (from converged q(z)) that rank the starts of unlike one-mode models
_INFERENCE_SWEEPS = 50  # coordinate-ascent sweeps on new data (predict, elbo, smooth)
_COMMON = (
    "dynamics_matrices_",
    "dynamics_offsets_",
    "dynamics_input_matrices_",
    "dynamics_covariances_",
    "observation_matrix_",
    "observation_offset_",
    "feedthrough_matrix_",
    "observation_covariance_",
    "initial_state_mean_",
    "initial_state_covariance_",
    "startprob_",
)
_MARKOV = ("transmat_",)
_RESETS = ("reset_matrices_", "reset_input_matrices_", "reset_offsets_", "reset_covariances_")
_RECURRENT = ("recurrence_weights_", "input_weights_", "recurrence_biases_")
#: What a fit records beside the parameters (saved with them; the file's check of each): the
#: recurrent guards' dwell times, and the mode of P0's prior (shared with the nonlinear model).
FIT_ARRAYS = {"dwell_times_": "real?", "initial_state_covariance_prior_": "finite?"}


# The recurrent guards, shared with the NonlinearSwitchingLDS: a multinomial logit on [f(x_t-1), u_t],
# f(x) = x here and the features phi(x) there, its width that of ``recurrence_weights_``.
def logit_guards(model: Any) -> InputDriven:
    """A recurrent model's switches as a block, features [f(x_t-1), u_t]."""
    block = InputDriven(model._k, np.shape(model.recurrence_weights_)[1] + model.input_dim, penalty=_GUARD_PENALTY)
    block.initial_probs = model.startprob_
    block.weights = np.hstack([model.recurrence_weights_, model.input_weights_])
    block.biases = model.recurrence_biases_
    return block


def fit_guards(model: Any, features: Stacked | Kept, pairs: Stacked | Kept, max_iter: int = 25) -> None:
    """The guards' M-step (a penalised multinomial logistic regression of the pair posteriors
    (R, K, K) on the features [f(x_t-1), u_t] (R, width + m_u)), warm-started from the current
    guards. The rows are those in hand (``Stacked``) or, over a cluster, those kept on its shards
    (``Kept``, ``keeps_rows``)."""
    block = logit_guards(model)
    stats = Statistics(initial=np.zeros(model._k), pairs=pairs, features=features)
    block.m_step(stats, fixed=frozenset({"initial_probs"}), max_iter=max_iter)
    width = np.shape(model.recurrence_weights_)[1]
    model.recurrence_weights_, model.input_weights_ = block.weights[:, :width].copy(), block.weights[:, width:].copy()
    model.recurrence_biases_ = block.biases


def stream_switches(
    chain: Stationary | InputDriven, transform: Callable[[np.ndarray], np.ndarray] | None = None
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The streaming filter's switches, from each mode's filtered mean (K, n) and the step's inputs
    u: the transition matrix, or for the guards row i read at [f(m_i), u] (``transform`` f, None: x)."""

    def transitions(means: np.ndarray, u: np.ndarray) -> np.ndarray:
        if not isinstance(chain, InputDriven):
            return chain.transition_matrix
        features = means if transform is None else transform(means)
        rows = np.arange(len(means))
        return chain.kernel_arrays(np.hstack([features, np.broadcast_to(u, (len(means), len(u)))]))[1][rows, rows]

    return transitions


def entry_guards(model: Any, k: int) -> dict[str, dict[int, Any]]:
    """``describe``'s guards of entering mode k from each other mode i: ``entry_weights`` w_k - w_i
    and ``entry_biases`` r_ik - r_ii."""
    W, r = model.recurrence_weights_, model.recurrence_biases_
    others = [i for i in range(model._k) if i != k]
    return {
        "entry_weights": {i: W[k] - W[i] for i in others},
        "entry_biases": {i: float(r[i, k] - r[i, i]) for i in others},
    }


class SwitchingLDS(Model, StreamingFilters):
    """A switching linear dynamical system, optionally recurrent, fit by structured mean-field variational EM.

    The exact posterior p(x, z | y) is a mixture over K^T mode paths, so the E-step is
    the structured mean-field approximation q(x) q(z), found by coordinate ascent on the
    evidence lower bound ELBO <= log p(y) (:mod:`modeshift.models.slds_inference`). The
    M-step is closed-form regressions from the expected statistics (see
    :class:`~modeshift.dynamics.LinearDynamics`); for recurrent models the guards are
    learned by a weighted multinomial logistic regression of the pairwise posteriors on
    [E x_t-1, u_t] with a bias per previous mode (a few Newton steps, warm-started, with a
    small L2 penalty). For the plain SLDS each step maximises the ELBO plus the log prior
    of ``reg_covar``, ``stickiness`` and P0, which therefore never decreases; the recurrent
    E-step evaluates the switches at E[x_t-1], so its ELBO is approximate and need not
    increase monotonically (``monotone`` is False).

    Initialisation (the ELBO has many local optima): d and D by regressing y on [u, 1]; a
    one-mode :class:`LinearGaussianSSM` fitted to the residuals gives C, R and smoothed states
    x^ (denoising them matters: a step of the state can be much smaller than the observation
    noise). When ``state_dim > obs_dim`` PCA sees too few directions, and the start is a subspace
    identification (:mod:`modeshift.models.subspace`: the state read off the block-Hankel matrix
    of past and future observations, N4SID-style), with a constant input so that the one-mode
    model can carry an affine flow (gravity, a drift). When ``state_dim < obs_dim`` it is a PCA of
    the residuals (the directions left out measure the noise). When they are equal two one-mode
    models compete: one
    started from a PCA of the residuals, which takes the observations for the states, and a
    subspace identification with K n states (a switching system's second moments are a linear
    system's with the state times each mode's indicator), whose R keeps noise as large as the
    state's steps out of the states; each one's best start runs 10 EM iterations and the larger
    ELBO is kept. Then sticky :class:`ARHMM` fits with one lag to x^
    (smoothed after 1, 5 and 20 EM iterations of the one-mode model) each propose the modes,
    A_k, b_k and Q_k (and, for recurrent models, a logistic regression on their modes gives the
    guards); the proposal whose first E-step gives the largest ELBO starts EM. With ``resets``,
    every second restart instead starts its rarest mode at the change points of the data
    (:mod:`modeshift.models.slds_starts`: kinks of the local trend, such as a ball's impacts, which
    the smoothed states blur and EM cannot create later), and inference on any data starts q(z)
    there too; ``n_restarts=2`` tries both starts and keeps the larger final objective.

    The initial state's covariance P0 has an inverse-Wishart prior whose mode is the spread of
    the start's state estimates over all steps (``initial_state_covariance_prior_``), worth
    n + 2 sequences (:class:`~modeshift.dynamics.InitialStateLaw`): fitted to one sequence, the
    maximum-likelihood P0 is the posterior covariance of its one x_0, which shrinks towards 0
    over EM, and a new sequence would lose thousands of nats at its first step. With many
    sequences their first states decide P0.

    Parameters
    ----------
    n_states : int or "auto"
        Number of modes K; ``"auto"`` chooses it by BIC (computed from the ELBO) among
        candidates of 1 .. ``max_states`` modes, found as ``selection`` says.
    state_dim : int
        Dimension n of x.
    obs_dim : int, optional
        Dimension p of y (default: from the data).
    input_dim : int
        Dimension m of the inputs u (0: none).
    recurrent : bool
        Let the mode switches depend on the previous state and the inputs.
    resets : None, "destination" or "pair"
        At a step where the mode switches i -> j, x_t follows a reset regression
        x_t = R_r x_t-1 + B_r u_t + r_r + N(0, Q_r) instead of mode j's flow
        (:mod:`modeshift.emissions.reset`: a jump of the state at a switch, such as a ball's
        velocity reversed at impact), learned in the same EM. ``"destination"``: one reset per
        mode entered (K); ``"pair"``: one per ordered pair of modes (K (K - 1)). None (the
        default): no resets.
    reset_dof : float > 2, optional
        Robust resets: the resets' noise Student-t with this many degrees of freedom (scale
        Q_r), so that a switch its reset does not explain (a ball relaunched, not bounced) pulls
        the regression little (:mod:`modeshift.emissions.reset`; 3 to 5 is usual). None (the
        default): Gaussian. Needs ``resets``.
    n_iter, tol : int, float
        EM stops after ``n_iter`` iterations or once the objective improves by less than
        ``tol`` (see :mod:`modeshift.models.em`); ``n_iter=0`` only initialises. Variational
        EM climbs slowly: on the bundled series it needs 600 to 2,000 iterations to meet ``tol``.
    n_restarts : int
        Full fits from different initialisations; the one with the largest final objective is kept.
    random_state : int or numpy Generator, optional
    stickiness : float
        Pseudo-counts added to the diagonal of the expected transition counts (plain SLDS).
    reg_covar : float
        Added to the diagonal of every covariance estimate's scatter.
    max_states : int
        Largest K tried by ``n_states="auto"``.
    selection : {"fits", "prune"}
        How ``n_states="auto"`` finds its candidates: ``"fits"``, one fit from scratch per K
        (:func:`~modeshift.models.selection.select_n_states`); ``"prune"``, one over-complete fit
        with ``max_states`` modes, then K - 1 modes started from scratch and from the best K
        without its least occupied mode; a candidate with a mode whose occupancy vanished is not
        chosen (:func:`~modeshift.models.selection.prune_n_states`).
    warm_start : bool
        Start ``fit`` from the current parameters (learned or set by hand) instead of afresh.
    verbose : bool
        Show a live progress bar of the ELBO over the iterations, one per restart (drawn by
        :mod:`modeshift.progress`).
    callback : callable, optional
        ``callback(iteration, objective)`` at every iteration of every restart (and of every
        candidate for ``n_states="auto"``); not saved with the model.

    Attributes
    ----------
    dynamics_matrices_ (K, n, n), dynamics_offsets_ (K, n), dynamics_input_matrices_ (K, n, m),
    dynamics_covariances_ (K, n, n) : A_k, b_k, B_k, Q_k.
    observation_matrix_ (p, n), observation_offset_ (p,), feedthrough_matrix_ (p, m),
    observation_covariance_ (p, p) : C, d, D, R.
    initial_state_mean_ (n,), initial_state_covariance_ (n, n) : m0, P0.
    initial_state_covariance_prior_ (n, n) : the mode of P0's prior, set at the start of the fit
        (or, from parameters set by hand, their P0) and saved with the model.
    startprob_ (K,) : p(z_0).
    transmat_ (K, K) : plain SLDS only.
    recurrence_weights_ (K, n), input_weights_ (K, m), recurrence_biases_ (K, K) : w_j, v_j, r_ij
        (recurrent only).
    reset_matrices_ (R, n, n), reset_input_matrices_ (R, n, m), reset_offsets_ (R, n),
    reset_covariances_ (R, n, n) : R_r, B_r, r_r, Q_r of the R resets (with ``resets``; in the
        order of :class:`~modeshift.emissions.reset.Resets`); ``automaton().resets`` maps each
        switch to its own.
    dwell_times_ (K,) : mean length of the runs of each mode in the most likely paths of
        the fitted data (``mean_run_lengths_`` is its old name, deprecated).
    history_ : list of float
        The ELBO plus the log prior of ``reg_covar``, ``stickiness``, P0 and the guards' penalty
        (the objective EM increases) at each iteration of the best restart.
    converged_ : bool
    n_iter_ : int
    n_states_, selection_ : with ``n_states="auto"``, the chosen K and the table of candidates.

    Notes
    -----
    Missing values (NaN) in the observations are integrated out exactly: q(x) and the ELBO
    use each step's observed entries, and the M-step of C, D, d, R takes the expected
    statistics of the missing ones (:func:`~modeshift.dynamics.observation_statistics`).
    Inputs must be complete. Every sequence needs at least 2 steps. The parameters are
    identified only up to a change of state basis and a relabelling of modes. Parameters
    set by hand on a model never fitted (all of them; or, with ``warm_start``, learned
    before) are the first restart's starting point; the other restarts start from the data.
    """

    objective = "ELBO"
    carries_workspace = True  # each sweep starts from the last one's q(x) q(z) (models.em)
    _test_params = {"state_dim": 1, "n_iter": 10}

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
        stickiness: float = 0.0,
        reg_covar: float = 1e-6,
        max_states: int = 6,
        selection: str = "fits",
        warm_start: bool = False,
        verbose: bool = False,
        callback: Callable[[int, float], Any] | None = None,
        resets: str | None = None,
        reset_dof: float | None = None,
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
        self.stickiness = stickiness
        self.reg_covar = reg_covar
        self.max_states = max_states
        self.selection = selection
        self.warm_start = warm_start
        self.verbose = verbose
        self.callback = callback
        self.resets = resets
        self.reset_dof = reset_dof

    resets: str | None = None  # what a subclass without the hyper-parameters reads
    reset_dof: float | None = None
    _constraints = {
        "state_dim": Integer(1),
        "obs_dim": either(Integer(1), OneOf((None,))),
        "input_dim": Integer(0),
        "recurrent": Boolean(),
        "resets": OneOf((None, *RESET_TIES)),
        "reset_dof": either(Number(2, open_low=True), OneOf((None,))),
        "stickiness": Number(0),
        "reg_covar": Number(0),
        "selection": OneOf(("fits", "prune")),
    }
    _renamed = {"elbo_history_": "history_", "mean_run_lengths_": "dwell_times_"}
    _file_arrays = FIT_ARRAYS
    _file_attributes = {**Model._file_attributes, "n_states_": "count", "selection_": "table"}

    def _check_params(self) -> None:
        super()._check_params()
        check_reset_dof(self.resets, self.reset_dof)

    @property
    def monotone(self) -> bool:
        """Whether EM cannot lower its objective: not for recurrent models, whose E-step is approximate."""
        return not self.recurrent

    # ------------------------------------------------------------------ parameters
    @property
    def parameter_names(self) -> tuple[str, ...]:
        return _COMMON + (_RECURRENT if self.recurrent else _MARKOV) + (_RESETS if self.resets else ())

    def _check_fitted(self) -> None:
        missing = [name for name in self.parameter_names if self.__dict__.get(name) is None]
        if missing:
            raise NotFittedError(f"this SwitchingLDS has no {', '.join(missing)}: call fit, or set them by hand")

    def _check_parameters(self) -> None:
        """Check every parameter's shape (from the hyper-parameters and the observation matrix)
        and its constraints: covariances positive semi-definite, probabilities stochastic."""
        self._check_fitted()
        p = check_array("observation_matrix_", self.observation_matrix_, (None, self.state_dim)).shape[0]
        shapes, covariances = self._parameter_shapes(p)
        for name in set(shapes) & set(self.parameter_names):
            check_array(name, self.__dict__[name], shapes[name])
        for name, size, count in covariances:
            value = check_covariances(name, self.__dict__[name], size, semidefinite=True)
            if value.shape[:-2] != ((count,) if count else ()):
                raise ValueError(
                    f"{name} must have shape {((count,) if count else ()) + (size, size)}, got {value.shape}"
                )
        check_probabilities("startprob_", self.startprob_, (self._k,))
        self._check_switching()

    def _parameter_shapes(self, p: int) -> tuple[dict[str, tuple[int, ...]], list[tuple[str, int, int | None]]]:
        """The shape of each parameter array, and (name, size, count) of the covariances: ``count``
        matrices of ``size``, or one (None); for ``p`` observed dimensions."""
        k, n, m = self._k, self.state_dim, self.input_dim
        shapes = {
            "dynamics_matrices_": (k, n, n),
            "dynamics_offsets_": (k, n),
            "dynamics_input_matrices_": (k, n, m),
            "observation_offset_": (p,),
            "feedthrough_matrix_": (p, m),
            "initial_state_mean_": (n,),
            "recurrence_weights_": (k, n),
            "input_weights_": (k, m),
            "recurrence_biases_": (k, k),
        }
        covariances = [
            ("dynamics_covariances_", n, k),
            ("observation_covariance_", p, None),
            ("initial_state_covariance_", n, None),
        ]
        if self.resets:
            r = self._reset_block(empty=True).n_resets
            shapes.update({"reset_matrices_": (r, n, n), "reset_input_matrices_": (r, n, m), "reset_offsets_": (r, n)})
            covariances.append(("reset_covariances_", n, r))
        return shapes, covariances

    def _check_switching(self) -> None:
        """Check the parameters of the switches (the guards' shapes are in ``_parameter_shapes``)."""
        if not self.recurrent:
            check_probabilities("transmat_", self.transmat_, (self._k, self._k))

    def _obs_dim(self) -> int | None:
        C = self.__dict__.get("observation_matrix_")
        return int(np.shape(C)[0]) if C is not None else self.obs_dim

    def _snapshot(self) -> dict[str, np.ndarray]:
        return {name: np.array(self.__dict__[name]) for name in self.parameter_names}

    def _parameters(self, seqs: Sequences | None = None) -> inference.SwitchingParameters:
        """The parameters in the form inference reads them (the same for any data ``seqs``)."""
        self._check_fitted()
        if self.recurrent:
            chain: Stationary | InputDriven = self._guards()
        else:
            chain = Stationary(self._k)
            chain.initial_probs, chain.transition_matrix = self.startprob_, self.transmat_
        return inference.SwitchingParameters(
            self._dynamics_block(),
            self._observation_block(),
            self.initial_state_mean_,
            self.initial_state_covariance_,
            chain,
            resets=self._reset_block() if self.resets else None,
        )

    def _reset_block(self, empty: bool = False) -> Resets:
        """The resets as a block: regressions of x_t on [x_t-1, u_t, 1] (``empty``: without parameters)."""
        block = Resets(self._k, self.resets, reg_covar=self.reg_covar, dof=self.reset_dof)
        if not empty:
            block.reset_coefs = np.concatenate([self.reset_matrices_, self.reset_input_matrices_], axis=2)
            block.reset_intercepts, block.reset_covariances = self.reset_offsets_, self.reset_covariances_
        return block

    def _dynamics_block(self) -> LinearDynamics:
        block = LinearDynamics(self._k, reg_covar=self.reg_covar)
        block.weights = np.concatenate(
            [self.dynamics_matrices_, self.dynamics_input_matrices_, self.dynamics_offsets_[:, :, None]], axis=2
        )
        block.covariances = self.dynamics_covariances_
        return block

    def _observation_block(self) -> LinearDynamics:
        block = LinearDynamics(1, reg_covar=self.reg_covar)
        block.weights = np.hstack(
            [self.observation_matrix_, self.feedthrough_matrix_, self.observation_offset_[:, None]]
        )[None]
        block.covariances = self.observation_covariance_[None]
        return block

    def _guards(self) -> InputDriven:
        """The recurrent transitions as a block, features [x_t-1, u_t] (:func:`logit_guards`)."""
        return logit_guards(self)

    # ------------------------------------------------------------------------ data
    def _sequences(self, X: Any, lengths: Sequence[int] | None, inputs: Any) -> Sequences:
        seqs = as_sequences(X, lengths).require(
            allow_missing=True, min_length=2, n_features=self._obs_dim(), model="a SwitchingLDS"
        )
        return seqs.with_inputs(inputs, self.input_dim, "this SwitchingLDS")

    def _infer(self, seqs: Sequences) -> inference.Posterior:
        """q(x) q(z) on data with the parameters fixed, to convergence (with resets, also from a
        short mode at the data's change points, :func:`~modeshift.models.slds_starts.change_point_modes`,
        and from the mode path of a beam search, :func:`~modeshift.models.slds_inference.beam_modes`)."""
        params = self._parameters(seqs)
        starts = slds_starts.change_point_modes(seqs, self._dwell_times()) if self.resets and self._k > 1 else ()
        if self.resets and self._k > 1 and not self.recurrent:
            starts += (inference.beam_modes(params, seqs)[0],)
        return inference.infer(params, seqs, self.tol, _INFERENCE_SWEEPS, starts)

    # ------------------------------------------------------------------ inference
    def predict_proba(self, X: Any, lengths: Sequence[int] | None = None, *, inputs: Any = None) -> PerStep:
        """q(z_t = k): smoothed mode probabilities (n_steps, K) under the variational posterior."""
        seqs = self._sequences(X, lengths, inputs)
        return seqs.restore(self._infer(seqs).mode_probs)

    def filter_proba(self, X: Any, lengths: Sequence[int] | None = None, *, inputs: Any = None) -> PerStep:
        """The variational filter: the forward pass of q(z), (n_steps, K).

        q(z) is a chain whose potentials are the expected dynamics log-likelihoods under
        q(x); these probabilities condition on the potentials up to step t. Since q(x)
        itself is smoothed (it uses every observation), this is not the exact filter
        p(z_t | y_0..t), which is intractable; at each sequence's last step it equals
        :meth:`predict_proba`."""
        seqs = self._sequences(X, lengths, inputs)
        posterior = self._infer(seqs)
        if self.resets:
            params, recursion = self._parameters(seqs), pair_hmm.forward_filter
            filtered = inference.pair_chain(params, seqs, posterior.log_likelihoods, posterior.transitions, recursion)[
                0
            ]
        else:
            filtered, _ = kernels.forward_filter(
                posterior.log_likelihoods, seqs.offsets, self.startprob_, posterior.transitions
            )
        return seqs.restore(filtered)

    def predict(self, X: Any, lengths: Sequence[int] | None = None, *, inputs: Any = None) -> PerStep:
        """Most likely mode path: Viterbi on the potentials of q(z) (the expected dynamics
        log-likelihoods under q(x), and the transition matrices, plug-in ones for recurrent
        models), after running inference to convergence with the parameters fixed."""
        seqs = self._sequences(X, lengths, inputs)
        return seqs.restore(self._viterbi(seqs, self._infer(seqs)))

    def segment(self, X: Any, lengths: Sequence[int] | None = None, *, inputs: Any = None) -> pd.DataFrame:
        """Contiguous runs of one mode on the decoded path (:meth:`predict`): ``start``,
        ``end`` (exclusive), ``mode``, ``probability`` (mean q(z_t = mode) over the run);
        a leading ``sequence`` column for several sequences."""
        seqs = self._sequences(X, lengths, inputs)
        posterior = self._infer(seqs)
        return mode_segments(seqs, self._viterbi(seqs, posterior), posterior.mode_probs)

    def _viterbi(self, seqs: Sequences, posterior: inference.Posterior) -> np.ndarray:
        with np.errstate(divide="ignore"):
            log_initial, log_transitions = np.log(self.startprob_), np.log(posterior.transitions)
        if self.resets:
            params, potentials = self._parameters(seqs), posterior.log_likelihoods
            return inference.pair_chain(params, seqs, potentials, log_transitions, pair_hmm.viterbi, log_initial)[0]
        return kernels.viterbi(posterior.log_likelihoods, seqs.offsets, log_initial, log_transitions)[0]

    def smooth(self, X: Any, lengths: Sequence[int] | None = None, *, inputs: Any = None) -> PerStep:
        """E_q[x_t]: posterior means of the continuous state (n_steps, n)."""
        seqs = self._sequences(X, lengths, inputs)
        return seqs.restore(self._infer(seqs).means)

    def elbo(self, X: Any, lengths: Sequence[int] | None = None, *, inputs: Any = None) -> float:
        """The evidence lower bound on X after inference to convergence: a lower bound on
        log p(X) (for recurrent models computed with plug-in transitions, so approximately one)."""
        return self._infer(self._sequences(X, lengths, inputs)).elbo

    def score(self, X: Any, lengths: Sequence[int] | None = None, *, inputs: Any = None) -> float:
        """Deprecated: the ELBO (:meth:`elbo`), not the log-likelihood, which is intractable."""
        warnings.warn(
            "SwitchingLDS.score returns the ELBO, a lower bound on the log-likelihood, not the "
            "log-likelihood; it is renamed elbo and goes in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        return self._infer(self._sequences(X, lengths, inputs)).elbo

    # ------------------------------------------------------------ sample, forecast
    def sample(
        self,
        n_steps: int,
        n_sequences: int = 1,
        random_state: int | np.random.Generator | None = None,
        *,
        inputs: Any = None,
    ) -> tuple[PerStep, PerStep]:
        """Simulate ``n_sequences`` sequences of ``n_steps`` steps: observations (n_steps, p) and
        modes (n_steps,), or lists of them for several sequences.

        ``inputs`` (n_steps, m), one array for every sequence or a list with one per
        sequence, are required when ``input_dim > 0``.
        """
        self._check_fitted()
        T, N = int(n_steps), int(n_sequences)
        U = np.stack(check_future_inputs(inputs, T, N, self.input_dim, "this SwitchingLDS", name="inputs"))
        rng = np.random.default_rng(random_state)
        dynamics, observation = self._dynamics_block(), self._observation_block()
        states, modes = np.empty((N, T, self.state_dim)), np.empty((N, T), dtype=np.int64)
        modes[:, 0] = draw_rows(np.broadcast_to(self.startprob_, (N, self._k)), rng)
        initial = np.linalg.cholesky(self.initial_state_covariance_)
        states[:, 0] = self.initial_state_mean_ + rng.standard_normal((N, self.state_dim)) @ initial.T
        guards = self._guards() if self.recurrent else None
        resets = self._reset_block() if self.resets else None
        for t in range(1, T):
            if guards is None:
                switch = self.transmat_[modes[:, t - 1]]
            else:
                matrices = guards.kernel_arrays(np.hstack([states[:, t - 1], U[:, t]]))[1]
                switch = matrices[np.arange(N), modes[:, t - 1]]
            modes[:, t] = draw_rows(switch, rng)
            rows = inference.regressors(states[:, t - 1], U[:, t])
            states[:, t] = dynamics.sample_rows(rows, modes[:, t], rng)
            switched = modes[:, t] != modes[:, t - 1]
            if resets is not None and switched.any():  # a switch follows its reset
                sources, targets = modes[switched, t - 1], modes[switched, t]
                states[switched, t] = resets.sample_rows(rows[switched], sources, targets, rng)
        rows = inference.regressors(states.reshape(N * T, -1), U.reshape(N * T, -1))
        observations = observation.sample_rows(rows, np.zeros(N * T, dtype=np.int64), rng).reshape(N, T, -1)
        if N == 1:
            return observations[0], modes[0]
        return list(observations), list(modes)

    # ------------------------------------------------------------------ streaming
    def _stream_recursion(self) -> SwitchingKalmanRecursion:
        """The approximate filter of :class:`~modeshift.models.streaming.SwitchingKalmanRecursion`:
        one Gaussian per mode (Kim's filter), not the variational posterior of ``filter_proba``; with
        ``resets``, a switch's pair follows its reset."""
        params = self._parameters()
        A, B, b, Q = params.dynamics_terms(resets=True)
        C, D, d, R = params.observation_terms()
        chain = params.chain
        arrays = {"A": A, "B": B, "b": b, "Q": Q, "laws": params.law_of_pairs(), "C": C, "D": D}
        arrays.update({"d": d, "R": R, "m0": params.initial_mean, "P0": params.initial_covariance})
        return SwitchingKalmanRecursion(chain.initial_probs, {**arrays, "transitions": stream_switches(chain)})

    def _stream_evidence(self, state: FilterState, y: Any, inputs: Any) -> tuple[tuple, np.ndarray, np.ndarray]:
        """(y_t - d, u_t) checked, u_t as the move into step t, the (empty) history (also the
        :class:`~modeshift.models.nonlinear_slds.NonlinearSwitchingLDS`'s)."""
        row = check_row(y, np.shape(self.observation_matrix_)[0])
        u = check_input_row(inputs, self.input_dim, f"this {type(self).__name__}")
        return (row - self.observation_offset_, u), u, state.history

    def filter_forecast(self, state: FilterState, horizon: int, future_inputs: Any = None) -> Forecast:
        """The predictive moments of the ``horizon`` observations after those a filter state has seen,
        from the approximate filter's law, a mixture: p(z_t = k) w_k and x_t | z_t = k ~ N(m_k, P_k);
        ``future_inputs`` (horizon, input_dim) for a model with inputs.

        A plain SLDS propagates it exactly (:meth:`SwitchingKalmanRecursion.forecast`; with resets
        each switch's pair through its reset, the moments of :meth:`forecast`'s chain of pairs). A
        recurrent one, whose switches depend on the state, has no closed form: its moments are the
        Monte Carlo estimates of :meth:`forecast` (seeded by ``random_state``), the paths started
        from the mixture, each x_t drawn from its mode's Gaussian (and reset at its switches)."""
        if not state.filtered:
            raise ValueError("the filter state has seen no observation yet")
        future = check_future_inputs(future_inputs, int(horizon), 1, self.input_dim, "this SwitchingLDS")[0]
        if not self.recurrent:
            modes, means, covariances = self._stream_recursion().forecast(state.filtered, future)
            return Forecast(means, covariances, modes)
        params, rng = self._parameters(), np.random.default_rng(self.random_state)
        return self._forecast_mixture(state.filtered[:3], params, self._future_laws(params, future), future, rng)

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

        Given the variational posterior at the end T, q(x_T) = N(m_T, P_T) and q(z_T), the
        future of a plain SLDS is a Markov jump linear system, whose moments
        :func:`~modeshift.dynamics.jump_linear_moments` propagates exactly from
        E[x_T 1{z_T = k}] = q(z_T = k) m_T and E[x_T x_T' 1{z_T = k}] = q(z_T = k) (P_T + m_T m_T');
        then y_T+h has mean C E[x_T+h] + D u_T+h + d and covariance C Cov[x_T+h] C' + R, and
        ``mode_probabilities`` are q(z_T) transmat^h. (The predictive law is a mixture of K^h
        Gaussians; these are its moments, from the approximate posterior at T.)

        A recurrent model switches on its state, so these moments have no closed form: they are
        Monte Carlo estimates from ``FORECAST_PATHS`` = 2000 paths of (z, x) drawn from q(z_T) q(x_T)
        and iterated through the guards and the flows (:func:`_simulated_moments`; seeded by
        ``random_state``, so a forecast is reproducible). Their standard error is at most
        sd / sqrt(2000), about 2 % of a predictive standard deviation.

        ``future_inputs`` (horizon, m), or a list of them (one per sequence), are required
        when ``input_dim > 0``. Returns a :class:`~modeshift.models.base.Forecast`, with lists
        for several sequences. With ``resets`` the law of a step depends on the pair of modes
        (z_t-1, z_t): a plain SLDS's jump linear system runs on the chain of pairs, (i, j) -> (j, k)
        with probability P_jk, started from the pairs (j, j) with q(z_T = j) (:meth:`_pair_laws`),
        its mode probabilities summed over the previous mode; a recurrent one's paths follow the
        reset of each switch they make.
        """
        self._check_fitted()
        seqs = self._sequences(X, lengths, inputs)
        posterior = self._infer(seqs)
        futures = check_future_inputs(
            future_inputs, int(horizon), seqs.n_sequences, self.input_dim, "this SwitchingLDS"
        )
        params, rng = self._parameters(), np.random.default_rng(self.random_state)
        parts = []
        for s, future in enumerate(futures):
            laws = self._future_laws(params, future)
            parts.append(self._forecast_from(posterior, seqs.offsets[s + 1] - 1, params, laws, future, rng))
        return Forecast.of_sequences(parts)

    def _future_laws(
        self, params: inference.SwitchingParameters, future: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any]:
        """The laws of the steps after the data under the inputs ``future`` (h, m), as
        :meth:`_forecast_mixture` reads them: every law's A, offsets B u_t + b (h, L, n) and Q (the
        K flows, then the R resets; for a plain SLDS with resets, the K^2 pairs of :meth:`_pair_laws`),
        and the moves: transition matrices (h, K, K), or for a recurrent model h functions of the
        states giving their switches."""
        if self.resets and not self.recurrent:
            (A, B, b, Q), transition = self._pair_laws(params)
        else:
            A, B, b, Q = params.dynamics_terms(resets=True)
            transition = None if self.recurrent else params.chain.transition_matrix
        offsets = np.einsum("knm,hm->hkn", B, future) + b
        if self.recurrent:
            return A, offsets, Q, [functools.partial(self._switches_at, params.chain, u) for u in future]
        return A, offsets, Q, np.broadcast_to(transition, (len(future), *transition.shape))

    def _pair_laws(self, params: inference.SwitchingParameters) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
        """The dynamics (A, B, b, Q) of each pair of modes (i, j), row i K + j: mode j's flow when
        i = j, else the reset of (i, j); and the (K^2, K^2) transition matrix of the pairs,
        (i, j) -> (j, k) with probability P_jk."""
        K = self._k
        law = params.law_of_pairs().ravel()
        sources, targets = np.divmod(np.arange(K * K), K)
        transition = np.where(
            targets[:, None] == sources[None, :], params.chain.transition_matrix[targets][:, targets], 0.0
        )
        return tuple(terms[law] for terms in params.dynamics_terms(resets=True)), transition

    def _forecast_from(
        self,
        posterior: inference.Posterior,
        last: int,
        params: inference.SwitchingParameters,
        laws: tuple[np.ndarray, np.ndarray, np.ndarray, Any],
        future: np.ndarray,
        rng: np.random.Generator,
    ) -> Forecast:
        """The forecast of :meth:`forecast` from q(z, x) at step ``last``: :meth:`_forecast_mixture`
        from q(z_T) and, whatever the mode, q(x_T)."""
        probabilities, mean, cov = posterior.mode_probs[last], posterior.means[last], posterior.covs[last]
        K = len(probabilities)
        start = probabilities, np.broadcast_to(mean, (K, *mean.shape)), np.broadcast_to(cov, (K, *cov.shape))
        return self._forecast_mixture(start, params, laws, future, rng)

    def _forecast_mixture(
        self,
        start: tuple[np.ndarray, np.ndarray, np.ndarray],
        params: inference.SwitchingParameters,
        laws: tuple[np.ndarray, np.ndarray, np.ndarray, Any],
        future: np.ndarray,
        rng: np.random.Generator,
    ) -> Forecast:
        """The predictive moments of y after a step whose (z, x) is the mixture ``start``: weights
        w (K,), means (K, n) and covariances (K, n, n) of p(z = k) and x | z = k. ``laws``: the
        future's (:meth:`_future_laws`: A (L, n, n) or (h, L, n, n), offsets (h, L, n), Q as A, and
        the moves); inputs ``future`` (h, m). A plain SLDS's moments are exact
        (:func:`~modeshift.dynamics.jump_linear_moments` from E[x 1{z = k}] = w_k m_k and
        E[x x' 1{z = k}] = w_k (P_k + m_k m_k')), a recurrent one's Monte Carlo estimates."""
        A, offsets, Q, moves = laws
        if self.recurrent:
            laws_of_pairs, dofs = params.law_of_pairs(), params.law_dofs()
            modes, means, covariances = _simulated_moments(start, moves, A, offsets, Q, laws_of_pairs, rng, dofs)
        else:
            weights, first, covs = start
            if self.resets:  # the chain of pairs starts from the pairs (j, j)
                K = len(weights)
                stays = np.zeros(K * K)
                stays[:: K + 1] = weights
                weights, first, covs = stays, first[np.arange(K * K) % K], covs[np.arange(K * K) % K]
            second = weights[:, None, None] * (covs + first[:, :, None] * first[:, None, :])
            first = weights[:, None] * first
            modes, means, covariances = jump_linear_moments(weights, first, second, moves, A, offsets, Q)
            if self.resets:  # p(z_t = k) sums the pairs (j, k) over j
                modes = modes.reshape(len(modes), self._k, self._k).sum(axis=1)
        C, D, d, R = params.observation_terms()
        observed = C @ covariances @ C.T + R
        observed = 0.5 * (observed + observed.transpose(0, 2, 1))
        return Forecast(means @ C.T + future @ D.T + d, observed, modes)

    @staticmethod
    def _switches_at(guards: InputDriven, u: np.ndarray, states: np.ndarray) -> np.ndarray:
        """The recurrent switch probabilities (N, K, K) from states (N, n) under inputs u (m,)."""
        return guards.kernel_arrays(np.hstack([states, np.broadcast_to(u, (len(states), len(u)))]))[1]

    # ------------------------------------------------------------------------- EM
    def fit(self, X: Any, lengths: Sequence[int] | None = None, *, inputs: Any = None, **columns: Any) -> SwitchingLDS:
        """Estimate the parameters by structured variational EM (:func:`modeshift.models.em.run`);
        returns ``self``.

        ``X`` is any form :func:`~modeshift.data.as_sequences` accepts (``columns`` name a
        data frame's ``id_column``, ``time_column``, ...).
        """
        self._start_fit()
        seqs = as_sequences(X, lengths, **columns)
        if self.n_states == "auto":
            return self._fit_auto(seqs.with_inputs(inputs, self.input_dim, "this SwitchingLDS"))
        return self._fit_em(self._em_data(seqs, inputs=inputs))

    def _em_data(
        self, X: Any, lengths: Sequence[int] | None = None, *, inputs: Any = None, **columns: Any
    ) -> Sequences:
        """What EM reads, from ``fit``'s arguments (or one shard of them: :mod:`modeshift.distributed`)."""
        return self._sequences(as_sequences(X, lengths, **columns), None, inputs).require_observed()

    def _fit_em(self, seqs: Sequences, over: em.Over | None = None) -> SwitchingLDS:
        """Variational EM from the starting parameters; ``over`` runs the E-steps over shards held
        elsewhere, each keeping its q(x) q(z) beside it, ``seqs`` being then a sample to start from."""
        given = all(self.__dict__.get(name) is not None for name in self.parameter_names)
        self.__dict__.update(_given=self._snapshot() if given else None, _sharded=over is not None)
        result = em.run(self, seqs, label=f"SwitchingLDS K={self._k}", over=over)
        runs = (over or em.in_memory(seqs))(run_statistics, self, result.workspace)
        with np.errstate(invalid="ignore"):
            self.dwell_times_ = runs["length"] / runs["count"]
        for name in ("_given", "_start_modes", "_sharded"):
            del self.__dict__[name]
        self._finish_fit(seqs)
        return self

    def _fit_auto(self, seqs: Sequences) -> SwitchingLDS:
        keep_modes = type(self)._kept_modes if self.selection == "prune" else None
        selection.fit_auto(self, seqs, tuple(FIT_ARRAYS), keep_modes)
        self._finish_fit(seqs)
        return self

    # what _kept_modes slices: the parameters indexed by pairs of modes, and (by name prefix) by mode
    _PAIR_INDEXED: tuple[str, ...] = ("transmat_", "recurrence_biases_")
    _MODE_INDEXED: tuple[str, ...] = ("dynamics_", "recurrence_weights", "input_weights", "startprob")

    def _kept_modes(self, kept: np.ndarray) -> SwitchingLDS:
        """A model of the ``kept`` modes of this fitted one, its parameters set (as the start of
        its fit, ``selection="prune"``) to theirs: p(z_0) renormalised over the kept modes, each
        reset that of its switch between the kept modes, the switches fixed up by
        :meth:`_renormalise_kept`."""
        smaller = type(self)(**{**self.get_params(), "n_states": len(kept), "warm_start": False})
        if self.resets:
            old, new = self._reset_block(empty=True).index, smaller._reset_block(empty=True).index
            reset_of = [old[kept[i], kept[j]] for i, j in (np.argwhere(new == r)[0] for r in range(new.max() + 1))]
        for name in self.parameter_names:
            value = np.asarray(self.__dict__[name])
            if name in self._PAIR_INDEXED:
                value = value[np.ix_(kept, kept)]
            elif name.startswith(self._MODE_INDEXED):
                value = value[kept]
            elif name.startswith("reset_"):
                value = value[reset_of]
            setattr(smaller, name, value.copy())
        smaller.startprob_ = normalise_rows(smaller.startprob_)
        smaller._renormalise_kept()
        return smaller

    def _renormalise_kept(self) -> None:
        """The fix-up of :meth:`_kept_modes`'s switches: the chain's rows renormalised over the
        kept modes (a recurrent model's guards need none)."""
        if not self.recurrent:
            self.transmat_ = normalise_rows(self.transmat_)

    def _em_initialize(self, seqs: Sequences, rng: np.random.Generator, restart: int) -> None:
        """The parameters set before ``fit`` start the first restart, with q(z) inferred under
        them by the first E-step; every other start is :meth:`_initialize`'s, from the data
        (over shards, its parameters only: each shard infers its q(z) under them), with resets
        every second restart from the change points of the data."""
        given = self.__dict__["_given"]
        if restart == 0 and given is not None:
            start_given(self, given)
            start = None
        else:
            at_change_points = bool(self.resets) and self._k > 1 and restart % 2 == 1
            start = (self._initialize_at_change_points if at_change_points else self._initialize)(seqs, rng)
        self.__dict__["_start_modes"] = None if self.__dict__["_sharded"] else start

    def _e_step(self, seqs: Sequences, workspace: dict[str, Any]) -> tuple[float, Statistics]:
        """One sweep of q(x), q(z) from the previous iteration's posterior (the workspace's), and
        the expected statistics of the M-step under it."""
        previous = workspace.get("posterior")
        if previous is not None:
            modes = previous.mode_probs
        elif self.__dict__.get("_start_modes") is not None:
            modes = self.__dict__["_start_modes"]
        else:
            modes = self._infer(seqs).mode_probs
        params = self._parameters(seqs)  # once: the sweep and the laws' weights read them
        posterior = inference.sweep(params, seqs, modes, previous)
        workspace["posterior"] = posterior
        weights = inference.law_weights(params, posterior.mode_probs, posterior.pair_counts)
        return posterior.elbo + self._log_prior(), self._statistics(seqs, posterior, weights)

    def _m_step(self, seqs: Sequences, stats: Statistics) -> None:
        self._maximize(stats)

    def _em_snapshot(self) -> dict[str, Any]:
        return with_prior(self)  # a restart that wins keeps its own start's prior

    def _em_restore(self, snapshot: dict[str, Any]) -> None:
        self.__dict__.update(snapshot)

    @property
    def keeps_rows(self) -> bool:
        """Whether a fit over shards keeps per-step rows there (:mod:`modeshift.models.em`): the
        recurrent guards', whose M-step reads sums over them (:class:`~modeshift.transitions.InputDriven`)."""
        return bool(self.recurrent)

    def _log_prior(self) -> float:
        """The log prior the M-step maximises with the ELBO: -reg_covar / 2 tr(S^-1) for every
        covariance S (Q_k, R, P0), P0's inverse-Wishart (:class:`~modeshift.dynamics.InitialStateLaw`)
        and, for a plain SLDS, stickiness sum_k log p_kk (for a recurrent one, the guards' L2 penalty)."""
        total = self._dynamics_block().log_prior() + self._observation_block().log_prior()
        total += self._reset_block().log_prior() if self.resets else 0.0
        total += self._initial_law().log_prior(self.initial_state_covariance_)
        if self.recurrent:
            return total + self._guards().log_prior()
        if self.stickiness > 0:
            with np.errstate(divide="ignore"):
                total += self.stickiness * float(np.log(np.diagonal(self.transmat_)).sum())
        return total

    def _statistics(self, seqs: Sequences, posterior: inference.Posterior, weights: np.ndarray) -> Statistics:
        """The expected sufficient statistics of the M-step under q(x) q(z): sums over steps and
        sequences (so those of shards add up), and for the guards their per-step rows (stacked).
        ``weights``: each law's weight under q(z) at every step (T, K + R),
        :func:`~modeshift.models.slds_inference.law_weights` (q(z_t) itself without resets)."""
        rows, K = seqs.linked_rows, self._k

        # dynamics: regress x_t on [x_t-1, u_t, 1] in every law, weighted by q(z_t = k) (with
        # resets: each flow by the stays in its mode, each reset by the switches into it)
        # (robust resets: each switch also by E[s] of q(s), the sums but not the counts)
        weights = weights[rows]
        scales = posterior.scales[rows] if len(posterior.scales) else None
        xx, xz, zz = inference.transition_sums(seqs, posterior, inference.scaled_weights(weights, scales))

        def regression(laws: slice) -> Statistics:
            return Statistics(yy=xx[laws], yz=xz[laws], zz=zz[laws], count=weights[:, laws].sum(axis=0))

        stats = Statistics(self._observation_statistics(seqs, posterior), dynamics=regression(slice(K)))
        if self.resets:
            stats = Statistics(stats, resets=regression(slice(K, None)))
        if self.recurrent:
            features = inference.guard_features(seqs, posterior.means)[rows]
            return Statistics(stats, features=Stacked(features), pairs=Stacked(posterior.pair_counts[rows]))
        pairs = posterior.pair_counts  # per step with resets: the chain's M-step needs their sum
        return Statistics(stats, pairs=pairs.sum(axis=0) if pairs.ndim == 3 else pairs)

    def _observation_statistics(self, seqs: Sequences, posterior: inference.Posterior) -> Statistics:
        """The sums of the observation model's M-step (a regression of y_t on [x_t, u_t, 1],
        missing entries integrated out), of the initial law's and of p(z_0)'s."""
        means, covs, probs = posterior.means, posterior.covs, posterior.mode_probs
        U, Y, starts = seqs.inputs, seqs.values, seqs.starts
        known = np.hstack([U, np.ones((len(Y), 1))])
        offsets = np.hstack([self.feedthrough_matrix_, self.observation_offset_[:, None]])
        yy, yz, zz, count = observation_statistics(
            Y, means, covs, known, self.observation_matrix_, offsets, self.observation_covariance_
        )
        return Statistics(
            observation=Statistics(yy=yy[None], yz=yz[None], zz=zz[None], count=np.array([count])),
            initial=Moments.of(means[starts]),
            initial_covariance=covs[starts].sum(axis=0),
            start=probs[starts].sum(axis=0),
        )

    def _maximize(self, stats: Statistics) -> None:
        """M-step: closed-form regressions from the expected statistics; the guards by logistic regression."""
        n, m = self.state_dim, self.input_dim
        block = self._dynamics_block()
        block.m_step(stats["dynamics"])
        self.dynamics_matrices_ = block.weights[:, :, :n].copy()
        self.dynamics_input_matrices_ = block.weights[:, :, n : n + m].copy()
        self.dynamics_offsets_ = block.weights[:, :, -1].copy()
        self.dynamics_covariances_ = block.covariances
        if self.resets:
            resets = self._reset_block()
            resets.m_step(stats["resets"])
            self.reset_matrices_ = resets.reset_coefs[:, :, :n].copy()
            self.reset_input_matrices_ = resets.reset_coefs[:, :, n:].copy()
            self.reset_offsets_, self.reset_covariances_ = resets.reset_intercepts.copy(), resets.reset_covariances
        self._maximize_observation(stats)
        if self.recurrent:
            self._fit_guards(stats["features"], stats["pairs"])
        else:
            self.transmat_ = normalise_rows(stats["pairs"] + self.stickiness * np.eye(self._k) + 1e-10)

    def _maximize_observation(self, stats: Statistics) -> None:
        """The M-step of C, D, d, R, of m0, P0 and of p(z_0), in closed form from
        :meth:`_observation_statistics`."""
        n, m = self.state_dim, self.input_dim
        block = self._observation_block()
        block.m_step(stats["observation"])
        (W,), (self.observation_covariance_,) = block.weights, block.covariances
        self.observation_matrix_, self.feedthrough_matrix_ = W[:, :n].copy(), W[:, n : n + m].copy()
        self.observation_offset_ = W[:, -1].copy()

        law = self._initial_law()
        self.initial_state_mean_, self.initial_state_covariance_ = law.m_step(
            stats["initial"], stats["initial_covariance"]
        )
        self.startprob_ = normalise_rows(stats["start"] + 1e-10)

    def _initial_law(self) -> InitialStateLaw:
        """:func:`initial_law` (what a subclass reads)."""
        return initial_law(self)

    _fit_guards = fit_guards

    def _initialize(self, seqs: Sequences, rng: np.random.Generator) -> np.ndarray:
        """The start of :meth:`_best_start`, its parameters set; returns its q(z)."""
        return self._best_start(seqs, rng)[0]

    def _best_start(self, seqs: Sequences, rng: np.random.Generator) -> tuple[np.ndarray, float | None]:
        """A one-mode linear-Gaussian SSM (after regressing y on [u, 1] for D and d) gives C, R
        and denoised states; ARHMMs on those states propose the modes and dynamics.

        How much to smooth is unclear: the one-mode model's EM shrinks its state noise towards
        a single flow, which blurs the switches of the states it smooths (on NASCAR an ARHMM
        finds the laps more often in the states after 1 or 5 iterations than after 20). So the
        states after each of ``_INIT_LDS_STAGES`` (1, 5, 20) iterations, with that stage's C and
        R, each feed ``_INIT_PROPOSALS`` (8) ARHMM fits of one start; every fit becomes a full
        set of starting parameters, and the one whose first E-step gives the largest objective
        (ELBO plus log prior, what EM then climbs) is kept. The ARHMMs' own likelihoods, of
        different states, cannot rank them; the ELBO ranks them as the fits they lead to (on
        NASCAR, the start with the larger ELBO is the one that finds the laps).

        With ``state_dim == obs_dim`` two one-mode models propose (:meth:`_one_mode_starts`): PCA's
        and a subspace identification with K n states, whose smoothed states (after its 20 EM
        iterations only, ``_NOISY_STAGES``: on the noisy AR(1) modes that stage alone gave q and r
        closer to the truth than all three, at a third of the cost) are read in n dimensions along
        the leading principal directions of its denoised observations (:func:`_denoised_states`).
        The latter's best proposal is refined by ``slds_starts.CLAMPED_SWEEPS`` rounds of q(x) and the M-step
        with its modes held (the ARHMM's Q_k, from smoothed means, miss the states' uncertainty).
        Their first E-steps, from unlike q(z), do not rank the two (on the noisy AR(1) modes PCA's
        wins by 35 nats and ends 4 to 24 nats below): each runs ``_RANKING_ITERATIONS`` (10) EM
        iterations from q(z) inferred to convergence and the larger ELBO at converged q(z) is kept
        (:meth:`_advanced`). Returns the kept start's q(z), and its objective when one family's
        ranking computed it (None after :meth:`_advanced`'s ranking: the callers that need it
        run its sweep)."""
        m = self.input_dim
        Y, U = seqs.values, seqs.inputs
        design = np.hstack([U, np.ones((len(Y), 1))])
        observed = ~np.isnan(Y)
        DW = np.stack([np.linalg.lstsq(design[rows], y[rows], rcond=None)[0] for y, rows in zip(Y.T, observed.T)])
        residual = dataclasses.replace(seqs, values=Y - design @ DW.T, inputs=None)
        total_var = max(float(np.nanmean(residual.values**2)), 1e-12)
        self.feedthrough_matrix_, self.observation_offset_ = DW[:, :m], DW[:, m]
        families = []
        for lds, data, refine in self._one_mode_starts(residual):
            best, kept, done = -np.inf, None, 0
            for stage in _NOISY_STAGES if refine else _INIT_LDS_STAGES:
                lds.set_params(n_iter=stage - done, warm_start=done > 0)
                done = stage
                with warnings.catch_warnings():  # these fits only propose a start: their caps are no concern
                    warnings.simplefilter("ignore", em.ConvergenceWarning)
                    lds.fit(data)
                states, C, R = _denoised_states(lds, data, self.state_dim)
                objective, start = self._propose_modes(seqs, rng, C, R, states, total_var)
                if refine:  # one stage, ranked against PCA's family by _advanced: its objective unused
                    self.__dict__.update(start[0])
                    modes = self._clamped_sweeps(seqs, start[1].argmax(axis=1))
                    start = (with_prior(self), modes)
                if kept is None or objective > best or np.isnan(best):
                    best, kept = objective, start
            families.append((best, kept))
        if len(families) > 1:  # unlike starts, whose first sweeps do not rank them: EM a little way first
            families = [self._advanced(seqs, *kept) for _, kept in families]
        best, kept = max(families, key=lambda family: -np.inf if np.isnan(family[0]) else family[0])
        self.__dict__.update(kept[0])
        return kept[1], best if len(families) == 1 else None

    def _advanced(
        self, seqs: Sequences, parameters: dict[str, np.ndarray], mode_probs: np.ndarray
    ) -> tuple[float, tuple[dict[str, np.ndarray], np.ndarray]]:
        """A start ranked by the ELBO after ``_RANKING_ITERATIONS`` iterations of EM from its
        ``parameters`` (with P0's prior) and q(z) ``mode_probs``: that ELBO (not the objective, whose
        prior on P0 is each start's own), and the start EM reached."""
        self.__dict__.update(parameters)
        converged = inference.infer(self._parameters(seqs), seqs, self.tol, _INFERENCE_SWEEPS, (mode_probs,))
        self.__dict__["_start_modes"] = converged.mode_probs
        workspace: dict[str, Any] = {}
        for _ in range(_RANKING_ITERATIONS):
            self._m_step(seqs, self._e_step(seqs, workspace)[1])
        modes = workspace["posterior"].mode_probs
        converged = inference.infer(self._parameters(seqs), seqs, self.tol, _INFERENCE_SWEEPS, (modes,))
        return converged.elbo, (with_prior(self), converged.mode_probs)

    def _one_mode_starts(self, residual: Sequences) -> list[tuple[LinearGaussianSSM, Sequences, bool]]:
        """The one-mode models (not yet fitted) whose smoothed states propose the modes, each with
        the data it fits and whether its proposals need refining (:meth:`_best_start`).

        When ``state_dim > obs_dim``: a subspace identification alone (:func:`_subspace_start`,
        with a constant input; its noises from the innovations, which data no linear system fits
        cannot throw far). When ``state_dim < obs_dim``: a PCA of the ``residual`` (y after its
        regression on [u, 1]) alone, the directions it leaves out measuring the noise (NASCAR's
        start costs no second family). When they are equal, PCA's,
        whose EM takes the observations for the states and, on a state seen in noise as large as
        its steps, keeps that noise in the states' (AR(1) modes 0.95 and -0.5 with q = r = 1:
        R = 0.04 to 0.1, Q = 2 to 2.6); and, when the data identify it, a subspace identification
        with K n states, whose R separates the observation noise from the switching (the
        autocovariances of a switching linear system are those of a linear system whose state is x_t
        times each mode's indicator, E[x_t+1 1{z_t+1 = j} | x_t, z_t = i] = P_ij A_j x_t, its noise
        uncorrelated with the past: one with n states takes the other modes' flows for noise, R = 2.0
        there, 0.7 to 1.2 with K n). Which start is right cannot be told from the data beforehand:
        the reading error of the state against its noise, tr(Q^-1 (C' R^-1 C)^-1) / n, is 5 to 12
        on that system and 9 to 650 on the thermostat, NASCAR and spirals, where PCA's start is
        right, and PCA's R over the K n-state R is 0.05 there against 0.015 to 0.43 on those; so
        the ELBO decides, at the cost of the second start (a fit of a few seconds takes up to twice
        as long)."""
        n = self.state_dim
        with_constant = dataclasses.replace(residual, inputs=np.ones((residual.n_steps, 1)))
        if n > residual.n_features:  # PCA sees at most p directions: read the state off the data's future
            return [(_subspace_start(with_constant, n, "innovations"), with_constant, False)]
        starts = [(LinearGaussianSSM(state_dim=n, method="em", tol=1e-4), residual, False)]
        if n < residual.n_features:  # the directions PCA leaves out measure the noise: its start suffices
            return starts
        try:
            starts.append((_subspace_start(with_constant, n * self._k, "autocovariance"), with_constant, True))
        except ValueError:  # too few steps to identify K n states from: PCA alone
            pass
        return starts

    def _propose_modes(
        self,
        seqs: Sequences,
        rng: np.random.Generator,
        C: np.ndarray,
        R: np.ndarray,
        states: np.ndarray,
        total_var: float,
    ) -> tuple[float, tuple[dict[str, np.ndarray], np.ndarray]]:
        """The best of the starts proposed by ARHMM fits to the smoothed ``states`` of the one-mode
        ``lds`` (with its C and R), ranked by the objective after their first E-step: that objective,
        and the start's parameters and q(z). On long data the ARHMMs learn from pieces spread over
        them (:func:`start_data`); their q(z), and the ranking, are of all the data."""
        best, kept = -np.inf, None
        n, K = self.state_dim, self._k
        self.observation_matrix_, self.observation_covariance_ = C, R
        self.initial_state_mean_ = states[seqs.starts].mean(axis=0)
        self.initial_state_covariance_ = ensure_positive_definite(
            np.atleast_2d(np.cov(states.T, bias=True)) + 1e-6 * total_var * np.eye(n)
        )
        self.initial_state_covariance_prior_ = self.initial_state_covariance_  # P0's prior: the state's spread
        learned = start_data(states, seqs.lengths)
        for _ in range(_INIT_PROPOSALS if K > 1 else 1):  # one mode: one fit, whatever the seed
            arhmm = ARHMM(
                n_states=K,
                order=1,
                n_iter=50,
                random_state=rng,
                stickiness=_INIT_STICKINESS,
                reg_covar=max(self.reg_covar, 1e-6 * total_var),
                resets=self.resets,
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", em.ConvergenceWarning)
                try:
                    arhmm.fit(learned.values, learned.lengths)
                except ValueError as error:
                    message = f"SwitchingLDS: its start, an ARHMM on the denoised states, failed: {error}"
                    raise ValueError(message) from None
            mode_probs = _stacked(arhmm.predict_proba(states, seqs.lengths))
            self._start_from(arhmm, seqs, states, mode_probs)
            objective = inference.sweep(self._parameters(seqs), seqs, mode_probs).elbo + self._log_prior()
            if kept is None or objective > best or np.isnan(best):
                best, kept = objective, (with_prior(self), mode_probs)
        return best, kept

    def _initialize_at_change_points(self, seqs: Sequences, rng: np.random.Generator) -> np.ndarray:
        """The start of the odd restarts of a model with resets: :meth:`_initialize`'s, then its least
        occupied mode moved to the change points of the data
        (:func:`~modeshift.models.slds_starts.change_point_start`), where a
        one-step switch such as a ball's impact shows as a kink. The smoothed states blur such a step
        and the mean-field sweeps cannot create one (q(x) smooths through it, so q(z) sees no reason
        for it), so the ARHMM starts miss them. Ranking this start by its first E-step would not do
        (its final ELBO is sometimes higher, sometimes lower), so it is a restart of its own and the
        final objective chooses. The kinks place about half of a ball's impacts at their exact step;
        the mode path of a beam search under the parameters of this start
        (:func:`~modeshift.models.slds_inference.beam_modes`, each path scored by its exact marginal
        likelihood) places most within a step, so it replaces the change points' modes when its first
        sweep gives the larger objective. Returns q(z)."""
        mode_probs, objective = self._best_start(seqs, rng)
        grown = slds_starts.change_point_start(self, seqs, mode_probs)
        if grown is not None:
            objective, mode_probs = grown
        if self.recurrent:
            return mode_probs
        params = self._parameters(seqs)  # those of the start, whose first sweep gave ``objective``
        if objective is None:  # the start was ranked by its ELBO after EM (_advanced): its first sweep
            objective = inference.sweep(params, seqs, mode_probs).elbo + self._log_prior()
        beam_probs = inference.beam_modes(params, seqs)[0]
        beam_objective = inference.sweep(params, seqs, beam_probs).elbo + self._log_prior()
        return beam_probs if beam_objective > objective else mode_probs

    def _clamped_start(self, seqs: Sequences, path: np.ndarray) -> tuple[float, np.ndarray]:
        """:meth:`_clamped_sweeps` at ``path``, and the objective of the first sweep from its modes
        (what :func:`~modeshift.models.slds_starts.change_point_start` ranks): that objective and the modes."""
        modes = self._clamped_sweeps(seqs, path)
        return inference.sweep(self._parameters(seqs), seqs, modes).elbo + self._log_prior(), modes

    def _clamped_sweeps(self, seqs: Sequences, path: np.ndarray) -> np.ndarray:
        """``slds_starts.CLAMPED_SWEEPS`` rounds of q(x) and the M-step from the current parameters with the
        modes held at ``path`` (T,); returns those modes (T, K), one-hot."""
        modes = np.eye(self._k)[path]
        pairs = inference.independent_pairs(modes, seqs.starts)
        weights = inference.law_weights(self._parameters(seqs), modes, pairs)  # the modes' and resets' tying only
        for _ in range(slds_starts.CLAMPED_SWEEPS):
            means, covs, cross_covs, _ = inference.update_states(self._parameters(seqs), seqs, weights)
            empty = np.empty(0)
            posterior = inference.Posterior(means, covs, cross_covs, modes, pairs, empty, empty, empty)
            self._maximize(self._statistics(seqs, posterior, weights))
        return modes

    def _start_from(self, arhmm: ARHMM, seqs: Sequences, states: np.ndarray, mode_probs: np.ndarray) -> None:
        """The switching, dynamics and resets of an ARHMM fitted to ``states``, as a start (for
        recurrent models, a logistic regression on the ARHMM's mode posteriors gives the guards)."""
        n, m, K = self.state_dim, self.input_dim, self._k
        self.dynamics_matrices_ = np.asarray(arhmm.coefs_, dtype=float).reshape(K, n, n)
        self.dynamics_offsets_ = np.asarray(arhmm.intercepts_, dtype=float).reshape(K, n)
        self.dynamics_input_matrices_ = np.zeros((K, n, m))
        self.dynamics_covariances_ = np.stack([ensure_positive_definite(c) for c in np.asarray(arhmm.covars_)])
        if self.resets:
            self.reset_matrices_ = np.asarray(arhmm.reset_coefs_, dtype=float).copy()
            self.reset_offsets_ = np.asarray(arhmm.reset_intercepts_, dtype=float).copy()
            self.reset_input_matrices_ = np.zeros((len(self.reset_offsets_), n, m))
            covariances = [ensure_positive_definite(c) for c in np.asarray(arhmm.reset_covars_)]
            self.reset_covariances_ = np.array(covariances).reshape(-1, n, n)  # none for one mode, "pair"
        self.startprob_ = normalise_rows(np.asarray(arhmm.startprob_, dtype=float) + 1e-3)
        if self.recurrent:
            self.recurrence_weights_, self.input_weights_ = np.zeros((K, n)), np.zeros((K, m))
            self.recurrence_biases_ = np.zeros((K, K))
            rows = seqs.linked_rows
            pairs = inference.independent_pairs(mode_probs)[rows]
            self._fit_guards(Stacked(inference.guard_features(seqs, states)[rows]), Stacked(pairs), max_iter=200)
        else:
            self.transmat_ = normalise_rows(np.asarray(arhmm.transmat_, dtype=float) + 1e-3)

    # ---------------------------------------------------------- model selection
    @property
    def n_parameters(self) -> int:
        """Free parameters: dynamics (of the flows some step reads: :func:`read_flows`),
        observation model, initial state, and the transition matrix or the identifiable guard
        parameters ((K - 1)(n + m) weights, K (K - 1) biases), and the resets' regressions.
        The n^2 of the state-basis freedom is not subtracted (it is the same for every K)."""
        self._check_fitted()
        K, n, m = self._k, self.state_dim, self.input_dim
        count = self._dynamics_block().n_parameters(modes=read_flows(self))
        count += self._observation_block().n_parameters()
        count += n + n * (n + 1) // 2 + (K - 1)
        count += (K - 1) * (n + m) + K * (K - 1) if self.recurrent else K * (K - 1)
        return count + (self._reset_block().n_parameters() if self.resets else 0)

    def aic(self, X: Any, lengths: Sequence[int] | None = None, *, inputs: Any = None) -> float:
        """-2 ELBO + 2 n_parameters: the ELBO stands in for the intractable log-likelihood, so
        this is an upper bound on the usual Akaike criterion (not the criterion itself)."""
        return -2.0 * self._infer(self._sequences(X, lengths, inputs)).elbo + 2.0 * self.n_parameters

    def bic(self, X: Any, lengths: Sequence[int] | None = None, *, inputs: Any = None) -> float:
        """-2 ELBO + n_parameters log(n_steps): computed from the ELBO in place of the
        intractable log-likelihood, so an upper bound on the usual Bayesian criterion."""
        seqs = self._sequences(X, lengths, inputs)
        return -2.0 * self._infer(seqs).elbo + self.n_parameters * np.log(seqs.n_steps)

    # --------------------------------------------------------------------- report
    def describe(self) -> pd.DataFrame:
        """One row per mode: dwell time, eigenvalues of A_k, offset b_k and, for recurrent
        models, the guards for entering the mode.

        The dwell time is 1 / (1 - p_kk) for a plain SLDS and ``dwell_times_``, the mean run
        length in the most likely paths of the fitted data, for a recurrent one.
        ``entry_weights`` and ``entry_biases`` map each other mode i to the guard
        (w_j - w_i, r_ij - r_ii) of entering mode j from i: the switch is more likely than
        staying where (w_j - w_i) . x + (r_ij - r_ii) > 0 (inputs held at 0). With ``resets``, a
        column ``resets_into``: for each mode j, source i -> (matrix [R_r, B_r], offset r_r) of
        the reset of the switch i -> j."""
        self._check_fitted()
        K, dwell = self._k, self._dwell_times()
        maps = self._reset_block().maps() if self.resets else None
        rows = []
        for k in range(K):
            row: dict[str, Any] = {"mode": k, "dwell_time": float(dwell[k])}
            row["eigenvalues"] = np.linalg.eigvals(self.dynamics_matrices_[k])
            row["offset"] = np.asarray(self.dynamics_offsets_[k])
            if self.recurrent:
                row.update(entry_guards(self, k))
            if maps is not None:
                row["resets_into"] = {i: maps[i, k] for i in range(K) if i != k}
            rows.append(row)
        return pd.DataFrame(rows).set_index("mode")

    def _dwell_times(self) -> np.ndarray:
        """Expected steps per visit to each mode: 1 / (1 - p_kk) for a plain SLDS; for a recurrent
        one, whose switches depend on the state, ``dwell_times_`` (NaN before a fit)."""
        return switching_dwell_times(self)

    # ---------------------------------------------------------------- the automaton
    def automaton(
        self, X: Any = None, lengths: Sequence[int] | None = None, *, inputs: Any = None, resolution: int = 25
    ) -> Automaton:
        """The fitted model as a hybrid automaton (:mod:`modeshift.models.automaton`), in its latent space.

        Flows: each mode's x_t = [A_k, B_k] [x_t-1, u_t] + b_k + N(0, Q_k). The state's basis is
        arbitrary, so its range comes from data: with ``X`` (and ``inputs``, as for ``fit``) and
        a state of one or two dimensions, the vector fields E[x_t | x_t-1 = s, z_t = k] - s and,
        for a recurrent model, the guards p(z_t = j | z_t-1 = i, x_t-1 = s) (inputs held at 0)
        are sampled on a ``resolution``-point mesh over the range of the smoothed states
        E_q[x_t] of ``X``; for a 1-D state each guard's ``thresholds`` are where it crosses 1/2
        (2001 points over the same range, linear interpolation). Without ``X`` there is no grid.
        Dwell times: as in :meth:`describe`. Resets (with ``resets``): (source, target) ->
        (matrix [R_r, B_r], offset r_r) of the reset of each switch.
        """
        self._check_fitted()
        K, m = self._k, self.input_dim
        A, _, b, _ = self._parameters().dynamics_terms()
        bounds = None
        if X is not None:
            states = self._infer(self._sequences(X, lengths, inputs)).means
            bounds = states.min(axis=0), states.max(axis=0)

        def moves(points: np.ndarray) -> np.ndarray:
            return np.einsum("kij,gj->kgi", A, points) + b[:, None, :] - points

        switches = None
        if self.recurrent:
            chain = self._guards()

            def switches(points: np.ndarray) -> np.ndarray:
                return chain.kernel_arrays(np.hstack([points, np.zeros((len(points), m))]))[1]

        grid, shape, fields, guards = sampled_parts(K, bounds, resolution, moves, switches)
        resets = self._reset_block().maps() if self.resets else {}
        return Automaton(np.arange(K), self._flows(), grid, shape, fields, guards, resets, self._dwell_times())

    def _flows(self) -> list[Flow]:
        A, B, b, Q = self._parameters().dynamics_terms()
        regressors = "latent state x_t-1" + (", inputs u_t" if self.input_dim else "")
        return [Flow(k, np.hstack([A[k], B[k]]), b[k], Q[k], regressors) for k in range(self._k)]

    # ---------------------------------------------------------------- persistence
    def _learned_arrays(self) -> dict[str, np.ndarray]:
        self._check_fitted()
        arrays = {name: np.asarray(self.__dict__[name], dtype=float) for name in self.parameter_names}
        return {**arrays, **fit_arrays(self)}

    def _learned_attributes(self) -> dict[str, Any]:
        return selection.saved_fit(self)

    def _restore(self, arrays: dict[str, np.ndarray], attributes: dict[str, Any]) -> None:
        """Read the parameters and the fit's record (also under their old names)."""
        for name, value in attributes.items():
            setattr(self, name, selection.restored_fit(name, value))
        missing = [name for name in self.parameter_names if name not in arrays]
        if missing:
            raise ValueError(f"the model file lacks the parameter array(s) {missing}")
        for name, value in arrays.items():
            setattr(self, name, np.array(value))
        self._check_parameters()

    # ------------------------------------------------------------------------ helpers

    def as_state_space_model(self, inputs: Any = None) -> SwitchingLinear:
        """This model as a model for the particle methods of :mod:`modeshift.smc`: a particle is
        (x_t, z_t), the mode stored as the last column; ``inputs`` as for ``fit``. A switch moves
        x_t by its reset (with ``resets``), a step in the same mode by the mode's flow."""
        from modeshift.smc.adapters import SwitchingLinear  # smc builds on the models: imported when asked

        return SwitchingLinear(self, inputs)


def _subspace_start(seqs: Sequences, n: int, noise: str) -> LinearGaussianSSM:
    """A one-mode model of the centred data with a constant input (``seqs.inputs``, ones), so that
    it can carry an affine flow such as gravity's, its parameters set by hand to the subspace
    estimate of :func:`~modeshift.models.subspace.identify` (its Q and R as ``noise`` says) so
    that EM starts there."""
    lds = LinearGaussianSSM(state_dim=n, input_dim=1, method="em", n_iter=_INIT_LDS_ITERATIONS, tol=1e-4)
    estimate = subspace.identify(seqs, n, noise=noise)
    lds.dynamics_matrix_, lds.transition_covariance_ = estimate.dynamics_matrix, estimate.transition_covariance
    lds.control_matrix_ = estimate.dynamics_offset[:, None]
    lds.feedthrough_matrix_ = np.zeros((seqs.n_features, 1))
    lds.observation_matrix_, lds.observation_covariance_ = estimate.observation_matrix, estimate.observation_covariance
    lds.initial_state_mean_ = estimate.states[seqs.starts].mean(axis=0)
    spread = np.atleast_2d(np.cov(estimate.states.T, bias=True))
    lds.initial_state_covariance_ = ensure_positive_definite(spread + 1e-9 * np.trace(spread) * np.eye(n))
    return lds


def _denoised_states(lds: LinearGaussianSSM, data: Sequences, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The smoothed states of the one-mode ``lds`` on ``data`` in n dimensions, with the C and R
    they are seen through: those of ``lds`` when it has n states; from a model with more (the
    switching system's second moments, :func:`_subspace_start` with K n states), the leading n
    principal directions C of its denoised observations C~ E[x~_t | y] and the states along them."""
    states = _stacked(lds.smooth(data).means)
    if lds.state_dim == n:
        return states, lds.observation_matrix_, lds.observation_covariance_
    signal = states @ lds.observation_matrix_.T
    C = np.linalg.eigh(np.atleast_2d(np.cov(signal.T, bias=True)))[1][:, ::-1][:, :n]
    return signal @ C, C, lds.observation_covariance_


def _stacked(per_step: PerStep) -> np.ndarray:
    """A per-step result as one array (several sequences give a list of them)."""
    return np.concatenate(per_step) if isinstance(per_step, list) else np.asarray(per_step)


def _simulated_moments(
    start: tuple[np.ndarray, np.ndarray, np.ndarray],
    switches: Sequence[Callable[[np.ndarray], np.ndarray]],
    matrices: np.ndarray,
    offsets: np.ndarray,
    noise: np.ndarray,
    law_of_pairs: np.ndarray,
    rng: np.random.Generator,
    dofs: np.ndarray,
    n_paths: int = FORECAST_PATHS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Monte Carlo moments of a switching linear system whose switches depend on the state,
    h = 1 .. len(switches) steps ahead: the counterpart of
    :func:`~modeshift.dynamics.jump_linear_moments` when no closed form exists.

    ``n_paths`` paths start from the mixture ``start`` = (w (K,), m (K, n), P (K, n, n)):
    z_0 ~ w, then x_0 ~ N(m_z0, P_z0). Step t draws z_t from row z_t-1 of ``switches[t](x_t-1)``
    (N, K, K), then x_t = F_l x_t-1 + c_l + N(0, S_l) in the law l = ``law_of_pairs``[z_t-1, z_t]
    (mode z_t's flow, or a switch's reset), with ``matrices`` F and ``noise`` S ((L, n, n), or
    (h, L, n, n) when they vary by step) and ``offsets`` c ((L, n) or (h, L, n)); the noise of
    law l Student-t with covariance S_l where ``dofs[l]`` (L,) is finite (robust resets), else Gaussian.
    The estimates are Rao-Blackwellised, which only lowers their variance: the mode probabilities
    are the mean over paths of the rows z_t is drawn from (p(z_t | z_t-1, x_t-1), exact given the
    path), not the share of paths in each mode; the moments of x_t are those of the paths'
    conditional means F_l x_t-1 + c_l, plus the mean of S_l over the paths' laws.

    Returns (modes (h, K), means (h, n), covariances (h, n, n)) of z_t and x_t, t = 1 .. h.
    """
    weights, start_means, start_covs = start
    horizon, (n_laws, n), n_modes = len(switches), np.shape(offsets)[-2:], len(weights)
    matrices = np.broadcast_to(matrices, (horizon, n_laws, n, n))
    offsets = np.broadcast_to(offsets, (horizon, n_laws, n))
    noise = np.broadcast_to(noise, (horizon, n_laws, n, n))
    factors = np.linalg.cholesky(noise)
    reachable = (weights > 0)[:, None, None]  # a mode of weight 0 may have no covariance; it is never drawn
    start_factors = np.linalg.cholesky(np.where(reachable, start_covs, np.eye(n)))
    paths = np.arange(n_paths)
    z = draw_rows(np.broadcast_to(weights, (n_paths, n_modes)), rng)
    x = start_means[z] + np.einsum("sij,sj->si", start_factors[z], rng.standard_normal((n_paths, n)))
    modes, means, covariances = np.empty((horizon, n_modes)), np.empty((horizon, n)), np.empty((horizon, n, n))
    for t, switch in enumerate(switches):
        rows = switch(x)[paths, z]
        new = draw_rows(rows, rng)
        law = law_of_pairs[z, new]
        moved = np.einsum("sij,sj->si", matrices[t, law], x) + offsets[t, law]
        modes[t], means[t] = rows.mean(axis=0), moved.mean(axis=0)
        shares = np.bincount(law, minlength=n_laws) / n_paths
        covariances[t] = np.atleast_2d(np.cov(moved.T)) + np.einsum("l,lij->ij", shares, noise[t])
        x, z = moved + student_noise(factors[t, law], dofs[law], rng), new
    return modes, means, covariances


def read_flows(model: Any) -> int:
    """How many of a switching LDS model's K flows some step reads: all without resets, else as
    its resets say (:meth:`~modeshift.emissions.reset.Resets.read_flows`)."""
    if not model.resets:
        return model._k
    return model._reset_block(empty=True).read_flows(None if model.recurrent else model.transmat_)


def initial_law(model: Any) -> InitialStateLaw:
    """A switching model's initial state law, its prior centred on the spread set at the start of
    the fit (on parameters set by hand and not fitted yet, on their P0, where their fit would centre it)."""
    scale = model.__dict__.get("initial_state_covariance_prior_", model.initial_state_covariance_)
    return InitialStateLaw(scale, model.reg_covar)


def start_data(values: np.ndarray, lengths: np.ndarray) -> Sequences:
    """What the ARHMM of a switching model's start learns from: the series ``values`` in sequences
    of ``lengths``, on long data :data:`START_STEPS` steps in pieces of :data:`START_PIECE` spread
    over them (:meth:`~modeshift.data.Sequences.spread`): a start's fits would otherwise pass over
    all of the data hundreds of times (NASCAR T = 10^5: 41 -> 22 CPU s for the whole start)."""
    return Sequences.from_array(values, lengths).spread(START_STEPS, START_PIECE)


def with_prior(model: Any) -> dict[str, Any]:
    """A switching model's parameters and P0's prior, which its start sets (not learned): what a
    start or a restart keeps."""
    prior = model.__dict__.get("initial_state_covariance_prior_")
    return model._snapshot() if prior is None else {**model._snapshot(), "initial_state_covariance_prior_": prior}


def start_given(model: Any, given: dict[str, Any]) -> None:
    """Set the parameters ``given`` before the fit as its first start, P0's prior centred on their
    P0 unless a previous fit set it (``warm_start``)."""
    model.__dict__.update(given)
    model.__dict__.setdefault("initial_state_covariance_prior_", np.array(model.initial_state_covariance_))


def fit_arrays(model: Any) -> dict[str, np.ndarray]:
    """The :data:`FIT_ARRAYS` a fitted model holds, to save beside its parameters."""
    return {name: np.asarray(model.__dict__[name], dtype=float) for name in FIT_ARRAYS if name in model.__dict__}


def run_statistics(model: Any, seqs: Sequences, workspace: dict[str, Any]) -> Statistics:
    """The total ``length`` and the ``count`` of the runs of each mode on the most likely path
    under the last E-step's posterior (the workspace's, else one inferred), for ``dwell_times_``
    (of any model with ``_infer`` and ``_viterbi``: also the NonlinearSwitchingLDS's)."""
    posterior = workspace.get("posterior") or model._infer(seqs)
    path, offsets = model._viterbi(seqs, posterior), seqs.offsets
    n_modes = posterior.mode_probs.shape[1]
    totals, runs = np.zeros(n_modes), np.zeros(n_modes)
    for first, last in zip(offsets[:-1], offsets[1:]):
        segment = path[first:last]
        boundaries = np.flatnonzero(np.diff(segment)) + 1
        edges = np.r_[0, boundaries, len(segment)]
        for a, b in zip(edges[:-1], edges[1:]):
            totals[segment[a]] += b - a
            runs[segment[a]] += 1
    return Statistics(length=totals, count=runs)
