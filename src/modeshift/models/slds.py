"""Switching linear dynamical systems (SLDS) and recurrent SLDS, fit by structured variational EM.

A discrete mode z_t selects the affine dynamics of a continuous state x_t, which is seen
through one linear-Gaussian observation model:

    z_0 ~ startprob,   z_t | z_t-1 ~ transmat                       (plain SLDS)
                       p(z_t = j | z_t-1 = i, x_t-1, u_t)
                         = softmax_j(w_j . x_t-1 + v_j . u_t + r_ij)  (recurrent SLDS)
    x_0 ~ N(m0, P0),   x_t = A_z x_t-1 + B_z u_t + b_z + N(0, Q_z),
    y_t = C x_t + D u_t + d + N(0, R).

In the recurrent model the hyperplanes (w_j - w_i) . x + (r_ij - r_ii) = 0 are learned
guards: the state at which leaving mode i for mode j becomes more likely than staying.

Example: a thermostat with hysteresis (heating switches off above 22 degrees, cooling below 18).

>>> from modeshift import SwitchingLDS
>>> from modeshift.datasets.simulators import thermostat
>>> from modeshift.metrics import mode_accuracy
>>> sim = thermostat(1000, random_state=0)
>>> model = SwitchingLDS(n_states=2, state_dim=1, recurrent=True, random_state=0).fit(sim.observations)
>>> mode_accuracy(sim.modes, model.predict(sim.observations)) > 0.9
True
>>> list(model.describe().columns)
['dwell_time', 'eigenvalues', 'offset', 'entry_weights', 'entry_biases']
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from modeshift import kernels
from modeshift.data import Sequences, as_sequences, check_dimensions
from modeshift.dynamics import LinearDynamics, ensure_positive_definite, missingness_patterns, observation_statistics
from modeshift.models import selection
from modeshift.models.arhmm import ARHMM
from modeshift.models.base import Model, NotFittedError, mode_segments
from modeshift.models.lds import LinearGaussianSSM
from modeshift.models import em
from modeshift.models.em import Report
from modeshift.statistics import Stacked, Statistics
from modeshift.transitions import InputDriven

__all__ = ["SwitchingLDS"]

_LOG_2PI = float(np.log(2.0 * np.pi))
_GUARD_PENALTY = 1e-2  # L2 penalty on the recurrence parameters: keeps separable guards finite
_INIT_LDS_ITERATIONS = 20  # EM iterations of the one-mode model that denoises the initial states
_INIT_RESTARTS = 8  # restarts of the ARHMM that proposes the initial modes
_INIT_STICKINESS = 20.0  # its pseudo-counts for staying: modes of a dynamical system persist
_INFERENCE_SWEEPS = 50  # coordinate-ascent sweeps on new data (predict, score, smooth)
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
_RECURRENT = ("recurrence_weights_", "input_weights_", "recurrence_biases_")


@dataclass
class _Posterior:
    """The variational factors q(x) (Gaussian, by its marginal moments) and q(z) (a chain),
    the HMM potentials q(z) was computed from, and the ELBO."""

    means: np.ndarray  # (T, n)
    covs: np.ndarray  # (T, n, n)
    cross_covs: np.ndarray  # (T, n, n): Cov(x_t, x_t-1), zero at sequence starts
    mode_probs: np.ndarray  # (T, K)
    pair_counts: np.ndarray  # (K, K), or (T, K, K) per step for recurrent models
    log_likelihoods: np.ndarray  # (T, K): E_q(x) log p(x_t | x_t-1, z_t = k)
    transitions: np.ndarray  # (1 or T, K, K)
    elbo: float


class SwitchingLDS(Model):
    """A switching linear dynamical system, optionally recurrent, fit by structured mean-field variational EM.

    Inference. The exact posterior p(x, z | y) is a mixture over K^T mode paths, so it is
    approximated by q(x) q(z), and the evidence lower bound
    ELBO = E_q log p(y, x, z) - E_q log q(x) q(z) <= log p(y) is maximised by coordinate ascent:

    * q(x) given q(z): E_q(z) log p(x, y | z) is quadratic in x, so the optimal q(x) is the
      Gaussian with block-tridiagonal precision J and linear term h, where (w_tk = q(z_t = k))

          J_tt = [t = 0] P0^-1 + C_o' R_oo^-1 C_o + sum_k w_tk Q_k^-1 + sum_k w_t+1,k A_k' Q_k^-1 A_k,
          J_t,t-1 = -sum_k w_tk Q_k^-1 A_k,

      with o the entries of y_t that are observed (all of them unless some are NaN; none
      for a wholly missing step),

      solved exactly in O(T n^3) by :func:`modeshift.kernels.solve_block_tridiagonal`.
    * q(z) given q(x): an HMM whose log-likelihoods are
      L_tk = E_q(x) log N(x_t | A_k x_t-1 + B_k u_t + b_k, Q_k) (closed form from the second
      moments of q(x); 0 at a sequence's first step), solved by forward-backward.

    Each update is the exact maximiser of the ELBO in its factor, and the M-step
    (closed-form regressions from the expected statistics, see :class:`LinearDynamics`)
    is the exact maximiser in the parameters, so for the plain SLDS the ELBO never
    decreases (up to the small ``reg_covar`` and ``stickiness`` priors). The cost per
    iteration is linear in T, and q(x) q(z) keeps every temporal correlation inside each
    factor, which is why this beats a fully factorised (per-step) approximation.

    Recurrent models. The switching probability depends on x_t-1, so E_q log p(z | x) has no
    closed form. For the q(z) update the transition potentials are evaluated at the posterior
    mean E[x_t-1] (a plug-in: time-varying transition matrices). For the q(x) update the
    transition term sum_ij q(z_t-1 = i, z_t = j) log p(z_t = j | z_t-1 = i, x_t-1), concave
    in x_t-1, enters by its second-order expansion at the previous sweep's E[x_t-1]: a
    Newton step that adds its curvature to the precision J and keeps q(x) Gaussian, as in
    the Laplace-EM of ``ssm`` (Zoltowski et al., 2020). The guards are learned by a weighted
    multinomial logistic regression of the pairwise posteriors on [E x_t-1, u_t] with a bias
    per previous mode (a few BFGS steps, warm-started, with a small L2 penalty). The
    reported ELBO uses the plug-in transitions, so it is not an exact bound and need not
    increase monotonically.

    Initialisation (the ELBO has many local optima): d and D by regressing y on [u, 1]; a
    one-mode :class:`LinearGaussianSSM` (PCA-initialised) fitted to the residuals gives C, R
    and smoothed states x^ (denoising them matters: a step of the state can be much smaller
    than the observation noise); a sticky :class:`ARHMM` with one lag and several restarts
    fitted to x^ gives the modes, A_k, b_k and Q_k (and, for recurrent models, a logistic
    regression on its modes gives the guards).

    Parameters
    ----------
    n_states : int or "auto"
        Number of modes K; ``"auto"`` chooses it by BIC (computed from the ELBO) among
        1 .. ``max_states`` with :func:`modeshift.models.selection.select_n_states`.
    state_dim : int
        Dimension n of x.
    obs_dim : int, optional
        Dimension p of y (default: from the data).
    input_dim : int
        Dimension m of the inputs u (0: none).
    recurrent : bool
        Let the mode switches depend on the previous state and the inputs.
    n_iter, tol : int, float
        EM stops after ``n_iter`` iterations or once the ELBO changes by less than ``tol``.
    n_restarts : int
        Full fits from different initialisations; the one with the largest final ELBO is kept.
    random_state : int or numpy Generator, optional
    stickiness : float
        Pseudo-counts added to the diagonal of the expected transition counts (plain SLDS).
    reg_covar : float
        Added to the diagonal of every covariance estimate's scatter.
    max_states : int
        Largest K tried by ``n_states="auto"``.
    verbose : bool
        Show a live progress bar of the ELBO over the iterations, one per restart (see
        :mod:`modeshift.progress`).
    callback : callable, optional
        ``callback(iteration, elbo)`` at every iteration of every restart (and of every
        candidate for ``n_states="auto"``); not saved with the model.

    Attributes
    ----------
    dynamics_matrices_ (K, n, n), dynamics_offsets_ (K, n), dynamics_input_matrices_ (K, n, m),
    dynamics_covariances_ (K, n, n) : A_k, b_k, B_k, Q_k.
    observation_matrix_ (p, n), observation_offset_ (p,), feedthrough_matrix_ (p, m),
    observation_covariance_ (p, p) : C, d, D, R.
    initial_state_mean_ (n,), initial_state_covariance_ (n, n) : m0, P0.
    startprob_ (K,) : p(z_0).
    transmat_ (K, K) : plain SLDS only.
    recurrence_weights_ (K, n), input_weights_ (K, m), recurrence_biases_ (K, K) : w_j, v_j, r_ij
        (recurrent only).
    mean_run_lengths_ (K,) : mean length of the runs of each mode in the most likely paths of
        the fitted data.
    elbo_history_ : list of float
        ELBO at each iteration.
    converged_ : bool
    n_states_, selection_ : with ``n_states="auto"``, the chosen K and the table of candidates.

    Notes
    -----
    Missing values (NaN) in the observations are integrated out exactly: q(x) and the ELBO
    use each step's observed entries, and the M-step of C, D, d, R takes the expected
    statistics of the missing ones (:func:`~modeshift.dynamics.observation_statistics`).
    Inputs must be complete. Every sequence needs at least 2 steps. The parameters are
    identified only up to a change of state basis and a relabelling of modes.
    """

    def __init__(
        self,
        n_states: int | str = 2,
        state_dim: int = 2,
        obs_dim: int | None = None,
        input_dim: int = 0,
        recurrent: bool = False,
        n_iter: int = 50,
        tol: float = 1e-3,
        n_restarts: int = 1,
        random_state: int | np.random.Generator | None = None,
        stickiness: float = 0.0,
        reg_covar: float = 1e-6,
        max_states: int = 6,
        verbose: bool = False,
        callback: Callable[[int, float], Any] | None = None,
    ):
        state_dim, obs_dim, input_dim = check_dimensions(state_dim, obs_dim, input_dim)
        if int(n_restarts) < 1:
            raise ValueError(f"n_restarts must be a positive integer, got {n_restarts!r}")
        if stickiness < 0 or reg_covar < 0:
            raise ValueError(f"stickiness and reg_covar must be >= 0, got {stickiness} and {reg_covar}")
        self.n_states = selection.check_n_states(n_states, max_states)
        self.state_dim, self.obs_dim, self.input_dim = state_dim, obs_dim, input_dim
        self.recurrent = bool(recurrent)
        self.n_iter = n_iter
        self.tol = tol
        self.n_restarts = int(n_restarts)
        self.random_state = random_state
        self.stickiness = stickiness
        self.reg_covar = reg_covar
        self.max_states = max_states
        self.verbose = verbose
        self.callback = callback

    # ------------------------------------------------------------------ parameters
    @property
    def parameter_names(self) -> tuple[str, ...]:
        return _COMMON + (_RECURRENT if self.recurrent else _MARKOV)

    @property
    def _k(self) -> int:
        return int(self.__dict__.get("n_states_", self.n_states))

    def _check_fitted(self) -> None:
        missing = [name for name in self.parameter_names if self.__dict__.get(name) is None]
        if missing:
            raise NotFittedError(f"this SwitchingLDS has no {', '.join(missing)}: call fit, or set them by hand")

    def _obs_dim(self) -> int | None:
        C = self.__dict__.get("observation_matrix_")
        return int(np.shape(C)[0]) if C is not None else self.obs_dim

    # ------------------------------------------------------------------------ data
    def _sequences(self, X: Any, lengths: Sequence[int] | None, inputs: Any) -> Sequences:
        seqs = as_sequences(X, lengths).require(
            allow_missing=True, min_length=2, n_features=self._obs_dim(), model="a SwitchingLDS"
        )
        return seqs.with_inputs(inputs, self.input_dim, "this SwitchingLDS")

    # ------------------------------------------------------------------ inference
    def _update_states(self, seqs: Sequences, mode_probs: np.ndarray, previous: _Posterior | None = None) -> tuple:
        """q(x) given q(z): moments and log det J of the Gaussian with block-tridiagonal precision.

        For a recurrent model with a ``previous`` posterior, the transition term
        E_q(z) log p(z_t | z_t-1, x_t-1) enters too, by its second-order expansion at the
        previous E[x_t-1] (see :meth:`_transition_curvature`)."""
        A, b, B, Q = (
            self.dynamics_matrices_,
            self.dynamics_offsets_,
            self.dynamics_input_matrices_,
            self.dynamics_covariances_,
        )
        C, d, D, R = (
            self.observation_matrix_,
            self.observation_offset_,
            self.feedthrough_matrix_,
            self.observation_covariance_,
        )
        starts, U, Y = seqs.starts, seqs.inputs, seqs.values
        weights = mode_probs.copy()
        weights[starts] = 0.0  # the dynamics of step t link it to step t - 1 of the same sequence
        following = np.zeros_like(weights)
        following[:-1] = weights[1:]
        Q_inv = np.linalg.inv(Q)
        Q_inv_A = Q_inv @ A
        At_Q_inv_A = np.swapaxes(A, 1, 2) @ Q_inv_A
        P0_inv = np.linalg.inv(self.initial_state_covariance_)

        diagonal = np.einsum("tk,kij->tij", weights, Q_inv) + np.einsum("tk,kij->tij", following, At_Q_inv_A)
        diagonal[starts] += P0_inv
        lower = -np.einsum("tk,kij->tij", weights, Q_inv_A)
        shift = np.einsum("tm,knm->tkn", U, B) + b[None]  # B_k u_t + b_k
        rhs = np.zeros((len(Y), self.state_dim))
        for rows, o in _observed_parts(Y):  # the evidence of each step's observed entries
            R_inv_C = np.linalg.solve(R[np.ix_(o, o)], C[o])
            diagonal[rows] += C[o].T @ R_inv_C
            rhs[rows] += (Y[rows][:, o] - U[rows] @ D[o].T - d[o]) @ R_inv_C
        rhs += np.einsum("tk,kij,tkj->ti", weights, Q_inv, shift)
        rhs[:-1] -= np.einsum("tk,kji,tkj->ti", weights, Q_inv_A, shift)[1:]  # A_k' Q_k^-1 shift at t + 1
        rhs[starts] += P0_inv @ self.initial_state_mean_
        if self.recurrent and previous is not None:
            rows, curvature, linear = self._transition_curvature(seqs, previous)
            diagonal[rows - 1] += curvature
            rhs[rows - 1] += linear
        means, log_dets, covs, cross_covs = kernels.solve_block_tridiagonal(diagonal, lower, seqs.offsets, rhs)
        return means, covs, cross_covs, float(log_dets.sum())

    def _transition_curvature(self, seqs: Sequences, previous: _Posterior) -> tuple:
        """f_t(x) = sum_ij q(z_t-1 = i, z_t = j) log p(z_t = j | z_t-1 = i, x_t-1 = x) is concave;
        at m = E[x_t-1] of ``previous`` it is f(m) + g'(x - m) - (x - m)' H (x - m) / 2, with

            g = W' (sum_i xi_i. - sum_i q_i pi_i.),   H = W' (diag(sum_i q_i pi_i.) - sum_i q_i pi_i. pi_i.') W,

        W the recurrence weights, pi_i. the switch probabilities at m, q_i = sum_j xi_ij. Adding
        H to the precision of x_t-1 and g + H m to its linear term is a Newton step on the
        transition term (Laplace-EM's, Zoltowski et al. 2020, within the structured mean field).
        Returns the rows t, H_t and g_t + H_t m_t-1."""
        rows = _not_first(seqs)
        means, pairs = previous.means[rows - 1], previous.pair_counts[rows]
        switch = self._transitions(seqs, previous.means)[rows]  # pi at the current guards
        W = self.recurrence_weights_
        leaving = pairs.sum(axis=2)  # q(z_t-1 = i)
        expected = np.einsum("ti,tij->tj", leaving, switch)  # sum_i q_i pi_ij
        gradient = (pairs.sum(axis=1) - expected) @ W
        spread = np.einsum("tj,jn,jm->tnm", expected, W, W)
        weighted = np.einsum("tij,jn->tin", switch, W)  # (pi_i W) per previous mode
        spread -= np.einsum("ti,tin,tim->tnm", leaving, weighted, weighted)
        return rows, spread, gradient + np.einsum("tnm,tm->tn", spread, means)

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

    def _dynamics_log_likelihoods(self, seqs: Sequences, means, covs, cross_covs) -> np.ndarray:
        """L_tk = E_q(x) log N(x_t | A_k x_t-1 + B_k u_t + b_k, Q_k); 0 at sequence starts."""
        rows = _not_first(seqs)
        out = np.zeros((seqs.n_steps, self._k))
        regressors = _regressors(means[rows - 1], seqs.inputs[rows])
        out[rows] = self._dynamics_block().log_likelihoods(means[rows], regressors)
        A, Q_inv = self.dynamics_matrices_, np.linalg.inv(self.dynamics_covariances_)
        Q_inv_A = Q_inv @ A
        trace = np.einsum("kij,tji->tk", Q_inv, covs[rows])
        trace -= 2.0 * np.einsum("kij,tij->tk", Q_inv_A, cross_covs[rows])
        trace += np.einsum("kij,tji->tk", np.swapaxes(A, 1, 2) @ Q_inv_A, covs[rows - 1])
        out[rows] -= 0.5 * trace
        return out

    def _transitions(self, seqs: Sequences, means: np.ndarray) -> np.ndarray:
        """(1, K, K) transition matrix, or (T, K, K) plug-in matrices at E[x_t-1] (recurrent)."""
        if not self.recurrent:
            return np.asarray(self.transmat_, dtype=float)[None]
        return self._guards().kernel_arrays(_guard_features(seqs, means))[1]

    def _update_modes(self, seqs: Sequences, means, covs, cross_covs) -> tuple:
        """q(z) given q(x): forward-backward on the expected dynamics log-likelihoods."""
        log_likelihoods = self._dynamics_log_likelihoods(seqs, means, covs, cross_covs)
        transitions = self._transitions(seqs, means)
        run = kernels.forward_backward_varying if self.recurrent else kernels.forward_backward
        log_z, mode_probs, pairs = run(log_likelihoods, seqs.offsets, self.startprob_, transitions)
        return float(log_z.sum()), mode_probs, pairs, log_likelihoods, transitions

    def _state_terms(self, seqs: Sequences, means, covs, log_det: float) -> float:
        """E_q(x) [log p(x_0) + sum_t log p(y_t | x_t)] + H[q(x)]."""
        n, starts = self.state_dim, seqs.starts
        C, R, full = self.observation_matrix_, self.observation_covariance_, self._observation_block()
        observed = 0.0
        for rows, o in _observed_parts(seqs.values):  # the observation equation of the observed entries
            block = LinearDynamics(1)
            block.weights, block.covariances = full.weights[:, o], full.covariances[:, o][:, :, o]
            regressors = _regressors(means[rows], seqs.inputs[rows])
            observed += block.log_likelihoods(seqs.values[rows][:, o], regressors).sum()
            observed -= 0.5 * np.einsum("ij,tji->", C[o].T @ np.linalg.solve(R[np.ix_(o, o)], C[o]), covs[rows])
        m0, P0 = self.initial_state_mean_, self.initial_state_covariance_
        centred = means[starts] - m0
        second = covs[starts] + centred[:, :, None] * centred[:, None, :]
        initial = -0.5 * (
            len(starts) * (n * _LOG_2PI + np.linalg.slogdet(P0)[1]) + np.einsum("ij,sji->", np.linalg.inv(P0), second)
        )
        entropy = 0.5 * (seqs.n_steps * n * (1.0 + _LOG_2PI) - log_det)
        return float(observed + initial + entropy)

    def _sweep(self, seqs: Sequences, mode_probs: np.ndarray, previous: _Posterior | None = None) -> _Posterior:
        """One coordinate-ascent sweep: q(x) given q(z), then q(z) given q(x), then the ELBO.

        After the q(z) update, E_q(z) [sum_t L_t,z_t + log p(z)] + H[q(z)] equals the HMM's
        log normaliser log Z, so ELBO = log Z + the state terms."""
        means, covs, cross_covs, log_det = self._update_states(seqs, mode_probs, previous)
        log_z, mode_probs, pairs, log_likelihoods, transitions = self._update_modes(seqs, means, covs, cross_covs)
        elbo = log_z + self._state_terms(seqs, means, covs, log_det)
        return _Posterior(means, covs, cross_covs, mode_probs, pairs, log_likelihoods, transitions, elbo)

    def _infer(self, seqs: Sequences) -> _Posterior:
        """q(x) q(z) on data with the parameters fixed: coordinate ascent to convergence, from
        uniform mode probabilities (whose q(x) smooths with the averaged dynamics)."""
        self._check_fitted()
        posterior = self._sweep(seqs, np.full((seqs.n_steps, self._k), 1.0 / self._k))
        for _ in range(_INFERENCE_SWEEPS - 1):
            previous = posterior.elbo
            posterior = self._sweep(seqs, posterior.mode_probs, posterior)
            if abs(posterior.elbo - previous) < self.tol:
                break
        return posterior

    def predict_proba(self, X: Any, lengths: Sequence[int] | None = None, inputs: Any = None):
        """q(z_t = k): posterior mode probabilities (n_steps, K) under the variational posterior."""
        seqs = self._sequences(X, lengths, inputs)
        return seqs.restore(self._infer(seqs).mode_probs)

    def predict(self, X: Any, lengths: Sequence[int] | None = None, inputs: Any = None):
        """Most likely mode path: Viterbi on the potentials of q(z) (the expected dynamics
        log-likelihoods under q(x), and the transition matrices, plug-in ones for recurrent
        models), after running inference to convergence with the parameters fixed."""
        seqs = self._sequences(X, lengths, inputs)
        return seqs.restore(self._viterbi(seqs, self._infer(seqs)))

    def segment(self, X: Any, lengths: Sequence[int] | None = None, inputs: Any = None) -> pd.DataFrame:
        """Contiguous runs of one mode on the decoded path (:meth:`predict`): ``start``,
        ``end`` (exclusive), ``mode``, ``probability`` (mean q(z_t = mode) over the run);
        a leading ``sequence`` column for several sequences."""
        seqs = self._sequences(X, lengths, inputs)
        posterior = self._infer(seqs)
        return mode_segments(seqs, self._viterbi(seqs, posterior), posterior.mode_probs)

    def _viterbi(self, seqs: Sequences, posterior: _Posterior) -> np.ndarray:
        with np.errstate(divide="ignore"):
            log_initial, log_transitions = np.log(self.startprob_), np.log(posterior.transitions)
        return kernels.viterbi(posterior.log_likelihoods, seqs.offsets, log_initial, log_transitions)[0]

    def smooth(self, X: Any, lengths: Sequence[int] | None = None, inputs: Any = None):
        """E_q[x_t]: posterior means of the continuous state (n_steps, n)."""
        seqs = self._sequences(X, lengths, inputs)
        return seqs.restore(self._infer(seqs).means)

    def score(self, X: Any, lengths: Sequence[int] | None = None, inputs: Any = None) -> float:
        """The ELBO on X after inference to convergence: a lower bound on log p(X) (for
        recurrent models computed with plug-in transitions, so approximately one)."""
        return self._infer(self._sequences(X, lengths, inputs)).elbo

    # ---------------------------------------------------------------------- sample
    def sample(
        self, n_steps: int, random_state: int | np.random.Generator | None = None, inputs: Any = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Simulate one sequence: observations (n_steps, p), states (n_steps, n) and modes (n_steps,)."""
        self._check_fitted()
        if int(n_steps) < 1:
            raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}")
        T, n, m, K = int(n_steps), self.state_dim, self.input_dim, self._k
        if m == 0 and inputs is not None:
            raise ValueError("inputs were given but this SwitchingLDS has input_dim=0")
        if m > 0 and inputs is None:
            raise ValueError(f"this SwitchingLDS has input_dim={m}: pass inputs (n_steps, {m})")
        U = np.zeros((T, 0)) if m == 0 else np.asarray(inputs, dtype=float).reshape(T, m)
        rng = np.random.default_rng(random_state)
        dynamics, observation = self._dynamics_block(), self._observation_block()
        guards = self._guards() if self.recurrent else None
        states, modes = np.empty((T, n)), np.empty(T, dtype=np.int64)
        modes[0] = rng.choice(K, p=self.startprob_)
        states[0] = rng.multivariate_normal(self.initial_state_mean_, self.initial_state_covariance_)
        for t in range(1, T):
            if self.recurrent:
                probs = guards.kernel_arrays(np.r_[states[t - 1], U[t]][None])[1][0, modes[t - 1]]
            else:
                probs = self.transmat_[modes[t - 1]]
            modes[t] = rng.choice(K, p=probs / probs.sum())
            states[t] = dynamics.sample(np.r_[states[t - 1], U[t], 1.0], modes[t], rng)
        observations = np.stack([observation.sample(np.r_[x, u, 1.0], 0, rng) for x, u in zip(states, U)])
        return observations, states, modes

    # ------------------------------------------------------------------------- EM
    def fit(self, X: Any, lengths: Sequence[int] | None = None, inputs: Any = None) -> SwitchingLDS:
        """Estimate the parameters by structured variational EM; returns ``self``.

        Parameters already set (by hand or by an earlier ``fit``) are the first
        restart's starting point; the other restarts start from the data.
        """
        seqs = self._sequences(X, lengths, inputs).require_observed()
        if self.n_states == "auto":
            return self._fit_auto(seqs)
        if self.state_dim > seqs.n_features:
            raise ValueError(
                f"state_dim={self.state_dim} exceeds the {seqs.n_features} observed feature(s); "
                "the PCA initialisation needs state_dim <= obs_dim"
            )
        rng = np.random.default_rng(self.random_state)
        given = all(self.__dict__.get(name) is not None for name in self.parameter_names)
        best = None
        with em.monitor(self.verbose, self.callback) as monitor:
            for restart in range(self.n_restarts):
                if restart == 0 and given:  # parameters set by hand or by an earlier fit are the first start
                    mode_probs = self._infer(seqs).mode_probs
                else:
                    for name in self.parameter_names:
                        self.__dict__.pop(name, None)
                    mode_probs = self._initialize(seqs, rng)
                label = f"SwitchingLDS K={self._k}"
                if self.n_restarts > 1:
                    label += f" restart {restart + 1}/{self.n_restarts}"
                report = monitor.task(label, total=max(int(self.n_iter), 1), objective="ELBO")
                history, converged, posterior = self._em(seqs, mode_probs, report)
                if best is None or history[-1] > best[0]:
                    best = (
                        history[-1],
                        {name: getattr(self, name) for name in self.parameter_names},
                        history,
                        converged,
                    )
                    best_posterior = posterior
        for name, value in best[1].items():
            setattr(self, name, value)
        self.elbo_history_, self.converged_ = best[2], best[3]
        self.mean_run_lengths_ = _mean_run_lengths(self._viterbi(seqs, best_posterior), seqs.offsets, self._k)
        return self

    def _fit_auto(self, seqs: Sequences) -> SwitchingLDS:
        params = self.get_params()
        winner, self.selection_ = selection.select_n_states(
            lambda k: type(self)(**{**params, "n_states": k}), seqs, None, self.max_states
        )
        self.n_states_ = winner.n_states
        for name in ("elbo_history_", "converged_", "mean_run_lengths_", *winner.parameter_names):
            setattr(self, name, getattr(winner, name))
        return self

    def _em(self, seqs: Sequences, mode_probs: np.ndarray, report: Report) -> tuple[list[float], bool, _Posterior]:
        history: list[float] = []
        posterior = None
        for iteration in range(max(int(self.n_iter), 1)):
            posterior = self._sweep(seqs, mode_probs, posterior)
            history.append(posterior.elbo)
            report(iteration + 1, posterior.elbo)
            if len(history) >= 2 and abs(history[-1] - history[-2]) < self.tol:
                return history, True, posterior
            self._maximize(seqs, posterior)
            mode_probs = posterior.mode_probs
        return history, False, posterior

    def _maximize(self, seqs: Sequences, posterior: _Posterior) -> None:
        """M-step: closed-form regressions from the expected statistics; the guards by logistic regression."""
        n, m = self.state_dim, self.input_dim
        means, covs, cross, probs = posterior.means, posterior.covs, posterior.cross_covs, posterior.mode_probs
        U, Y, starts = seqs.inputs, seqs.values, seqs.starts
        rows = _not_first(seqs)

        # dynamics: regress x_t on [x_t-1, u_t, 1] in every mode, weighted by q(z_t = k)
        z = _regressors(means[rows - 1], U[rows])
        zz = z[:, :, None] * z[:, None, :]
        zz[:, :n, :n] += covs[rows - 1]
        xz = means[rows][:, :, None] * z[:, None, :]
        xz[:, :, :n] += cross[rows]
        xx = covs[rows] + means[rows][:, :, None] * means[rows][:, None, :]
        w = probs[rows]
        stats = Statistics(
            yy=np.einsum("tk,tij->kij", w, xx),
            yz=np.einsum("tk,tij->kij", w, xz),
            zz=np.einsum("tk,tij->kij", w, zz),
            count=w.sum(axis=0),
        )
        block = self._dynamics_block()
        block.m_step(stats)
        self.dynamics_matrices_ = block.weights[:, :, :n].copy()
        self.dynamics_input_matrices_ = block.weights[:, :, n : n + m].copy()
        self.dynamics_offsets_ = block.weights[:, :, -1].copy()
        self.dynamics_covariances_ = block.covariances

        # observation: regress y_t on [x_t, u_t, 1], missing entries integrated out
        known = np.hstack([U, np.ones((len(Y), 1))])
        offsets = np.hstack([self.feedthrough_matrix_, self.observation_offset_[:, None]])
        yy, yz, zz, count = observation_statistics(
            Y, means, covs, known, self.observation_matrix_, offsets, self.observation_covariance_
        )
        block = self._observation_block()
        block.m_step(Statistics(yy=yy[None], yz=yz[None], zz=zz[None], count=np.array([count])))
        (W,), (self.observation_covariance_,) = block.weights, block.covariances
        self.observation_matrix_, self.feedthrough_matrix_ = W[:, :n].copy(), W[:, n : n + m].copy()
        self.observation_offset_ = W[:, -1].copy()

        first = means[starts]
        self.initial_state_mean_ = first.mean(axis=0)
        centred = first - self.initial_state_mean_
        P0 = (covs[starts] + centred[:, :, None] * centred[:, None, :]).mean(axis=0)
        self.initial_state_covariance_ = ensure_positive_definite(P0 + self.reg_covar * np.eye(n))

        self.startprob_ = _normalise(probs[starts].sum(axis=0) + 1e-10)
        if self.recurrent:
            self._fit_guards(_guard_features(seqs, means)[rows], posterior.pair_counts[rows])
        else:
            self.transmat_ = _normalise(posterior.pair_counts + self.stickiness * np.eye(self._k) + 1e-10)

    def _guards(self) -> InputDriven:
        """The recurrent transitions as a block, features [x_t-1, u_t]."""
        block = InputDriven(self._k, self.state_dim + self.input_dim, penalty=_GUARD_PENALTY)
        block.initial_probs = self.startprob_
        block.weights = np.hstack([self.recurrence_weights_, self.input_weights_])
        block.biases = self.recurrence_biases_
        return block

    def _fit_guards(self, features: np.ndarray, pairs: np.ndarray, max_iter: int = 25) -> None:
        """The transitions' M-step (a penalised multinomial logistic regression of the pair
        posteriors on the features), warm-started from the current values."""
        block = self._guards()
        stats = Statistics(initial=np.zeros(self._k), pairs=Stacked(pairs), features=Stacked(features))
        block.m_step(stats, fixed=frozenset({"initial_probs"}), max_iter=max_iter)
        self.recurrence_weights_ = block.weights[:, : self.state_dim].copy()
        self.input_weights_ = block.weights[:, self.state_dim :].copy()
        self.recurrence_biases_ = block.biases

    def _initialize(self, seqs: Sequences, rng: np.random.Generator) -> np.ndarray:
        """A one-mode linear-Gaussian SSM (after regressing y on [u, 1] for D and d) gives C, R
        and denoised states; an ARHMM on those states gives the modes and dynamics.
        Returns the ARHMM's mode posteriors as the first q(z)."""
        n, m, K = self.state_dim, self.input_dim, self._k
        Y, U = seqs.values, seqs.inputs
        design = np.hstack([U, np.ones((len(Y), 1))])
        observed = ~np.isnan(Y)
        DW = np.stack([np.linalg.lstsq(design[rows], y[rows], rcond=None)[0] for y, rows in zip(Y.T, observed.T)])
        residual = dataclasses.replace(seqs, values=Y - design @ DW.T, inputs=None)
        total_var = max(float(np.nanmean(residual.values**2)), 1e-12)
        lds = LinearGaussianSSM(state_dim=n, n_iter=_INIT_LDS_ITERATIONS).fit(residual)
        states = np.asarray(lds.smooth(residual).means)
        self.observation_matrix_, self.observation_covariance_ = lds.observation_matrix_, lds.observation_covariance_
        self.feedthrough_matrix_, self.observation_offset_ = DW[:, :m], DW[:, m]

        arhmm = ARHMM(
            n_states=K,
            lags=1,
            n_restarts=_INIT_RESTARTS,
            n_iter=50,
            random_state=rng,
            stickiness=_INIT_STICKINESS,
            reg_covar=max(self.reg_covar, 1e-6 * total_var),
        )
        arhmm.fit(states, seqs.lengths)
        mode_probs = arhmm.predict_proba(states, seqs.lengths)
        self.dynamics_matrices_ = np.asarray(arhmm.coefs_, dtype=float).reshape(K, n, n)
        self.dynamics_offsets_ = np.asarray(arhmm.intercepts_, dtype=float).reshape(K, n)
        self.dynamics_input_matrices_ = np.zeros((K, n, m))
        self.dynamics_covariances_ = np.stack([ensure_positive_definite(c) for c in np.asarray(arhmm.covars_)])
        self.initial_state_mean_ = states[seqs.starts].mean(axis=0)
        self.initial_state_covariance_ = ensure_positive_definite(
            np.atleast_2d(np.cov(states.T, bias=True)) + 1e-6 * total_var * np.eye(n)
        )
        self.startprob_ = _normalise(np.asarray(arhmm.startprob_, dtype=float) + 1e-3)
        if self.recurrent:
            self.recurrence_weights_, self.input_weights_ = np.zeros((K, n)), np.zeros((K, m))
            self.recurrence_biases_ = np.zeros((K, K))
            rows = _not_first(seqs)
            pairs = mode_probs[rows - 1][:, :, None] * mode_probs[rows][:, None, :]
            self._fit_guards(_guard_features(seqs, states)[rows], pairs, max_iter=200)
        else:
            self.transmat_ = _normalise(np.asarray(arhmm.transmat_, dtype=float) + 1e-3)
        return mode_probs

    # ---------------------------------------------------------- model selection
    @property
    def n_parameters(self) -> int:
        """Free parameters: dynamics, observation model, initial state, and the transition
        matrix or the identifiable guard parameters ((K - 1)(n + m) weights, K (K - 1) biases).
        The n^2 of the state-basis freedom is not subtracted (it is the same for every K)."""
        self._check_fitted()
        K, n, m, p = self._k, self.state_dim, self.input_dim, self.observation_matrix_.shape[0]
        count = K * (n * (n + m + 1) + n * (n + 1) // 2) + p * (n + m + 1) + p * (p + 1) // 2
        count += n + n * (n + 1) // 2 + (K - 1)
        count += (K - 1) * (n + m) + K * (K - 1) if self.recurrent else K * (K - 1)
        return count

    def aic(self, X: Any, lengths: Sequence[int] | None = None, inputs: Any = None) -> float:
        """-2 ELBO + 2 n_parameters (the ELBO stands in for the intractable log-likelihood,
        so this is an upper bound on the usual criterion)."""
        return -2.0 * self.score(X, lengths, inputs) + 2.0 * self.n_parameters

    def bic(self, X: Any, lengths: Sequence[int] | None = None, inputs: Any = None) -> float:
        """-2 ELBO + n_parameters log(n_steps) (see :meth:`aic`)."""
        seqs = self._sequences(X, lengths, inputs)
        return -2.0 * self._infer(seqs).elbo + self.n_parameters * np.log(seqs.n_steps)

    # --------------------------------------------------------------------- report
    def describe(self) -> pd.DataFrame:
        """One row per mode: mean dwell time, eigenvalues of A_k, offset b_k and, for
        recurrent models, the guards for entering the mode.

        The dwell time is 1 / (1 - p_kk) for a plain SLDS and the mean run length in the most
        likely paths of the fitted data for a recurrent one. ``entry_weights`` and
        ``entry_biases`` map each other mode i to the guard (w_j - w_i, r_ij - r_ii) of
        entering mode j from i: the switch is more likely than staying where
        (w_j - w_i) . x + (r_ij - r_ii) > 0 (inputs held at 0)."""
        self._check_fitted()
        K = self._k
        rows = []
        for k in range(K):
            row: dict[str, Any] = {"mode": k}
            if self.recurrent:
                row["dwell_time"] = float(self.__dict__.get("mean_run_lengths_", np.full(K, np.nan))[k])
            else:
                stay = float(self.transmat_[k, k])
                row["dwell_time"] = np.inf if stay >= 1.0 else 1.0 / (1.0 - stay)
            row["eigenvalues"] = np.linalg.eigvals(self.dynamics_matrices_[k])
            row["offset"] = np.asarray(self.dynamics_offsets_[k])
            if self.recurrent:
                W, r = self.recurrence_weights_, self.recurrence_biases_
                others = [i for i in range(K) if i != k]
                row["entry_weights"] = {i: W[k] - W[i] for i in others}
                row["entry_biases"] = {i: float(r[i, k] - r[i, i]) for i in others}
            rows.append(row)
        return pd.DataFrame(rows).set_index("mode")

    # ---------------------------------------------------------------- persistence
    def _learned_arrays(self) -> dict[str, np.ndarray]:
        self._check_fitted()
        arrays = {name: np.asarray(self.__dict__[name], dtype=float) for name in self.parameter_names}
        if "mean_run_lengths_" in self.__dict__:
            arrays["mean_run_lengths_"] = np.asarray(self.mean_run_lengths_, dtype=float)
        return arrays

    def _learned_attributes(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if "elbo_history_" in self.__dict__:
            out["elbo_history_"] = [float(v) for v in self.elbo_history_]
        if "converged_" in self.__dict__:
            out["converged_"] = bool(self.converged_)
        if "n_states_" in self.__dict__:
            out["n_states_"] = int(self.n_states_)
            out["selection_"] = self.selection_.to_dict(orient="list")
        return out

    def _restore(self, arrays: dict[str, np.ndarray], attributes: dict[str, Any]) -> None:
        missing = [name for name in self.parameter_names if name not in arrays]
        if missing:
            raise ValueError(f"the model file lacks the parameter array(s) {missing}")
        for name, value in arrays.items():
            setattr(self, name, np.array(value))
        for name, value in attributes.items():
            setattr(self, name, pd.DataFrame(value)[selection.COLUMNS] if name == "selection_" else value)
        self._check_fitted()


# ------------------------------------------------------------------------ helpers
def _not_first(seqs: Sequences) -> np.ndarray:
    """Rows that have a predecessor in their own sequence."""
    mask = np.ones(seqs.n_steps, dtype=bool)
    mask[seqs.starts] = False
    return np.flatnonzero(mask)


def _observed_parts(Y: np.ndarray) -> Iterator[tuple[slice | np.ndarray, np.ndarray]]:
    """(rows, observed entries) of each pattern of missing values that leaves an entry observed."""
    for rows, observed in missingness_patterns(Y):
        if observed.any():
            yield (slice(None) if rows is None else rows), np.flatnonzero(observed)


def _regressors(states: np.ndarray, inputs: np.ndarray) -> np.ndarray:
    """[x, u, 1] per row."""
    return np.hstack([states, inputs, np.ones((len(states), 1))])


def _guard_features(seqs: Sequences, means: np.ndarray) -> np.ndarray:
    """[E x_t-1, u_t] per row (row 0 of each sequence is a placeholder: its transition is unused)."""
    previous = np.empty_like(means)
    previous[1:], previous[0] = means[:-1], means[0]
    return np.hstack([previous, seqs.inputs])


def _normalise(counts: np.ndarray) -> np.ndarray:
    return counts / counts.sum(axis=-1, keepdims=True)


def _mean_run_lengths(path: np.ndarray, offsets: np.ndarray, n_states: int) -> np.ndarray:
    """Mean length of the runs of each mode (NaN for a mode never visited)."""
    totals, runs = np.zeros(n_states), np.zeros(n_states)
    for first, last in zip(offsets[:-1], offsets[1:]):
        segment = path[first:last]
        boundaries = np.flatnonzero(np.diff(segment)) + 1
        edges = np.r_[0, boundaries, len(segment)]
        for a, b in zip(edges[:-1], edges[1:]):
            totals[segment[a]] += b - a
            runs[segment[a]] += 1
    with np.errstate(invalid="ignore"):
        return totals / runs
