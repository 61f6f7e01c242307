"""Autoregressive hidden Markov models: a mode switches the dynamics of the series itself."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from modeshift.data import Sequences, as_sequences
from modeshift.dynamics import autoregressive_moments
from modeshift.emissions import Autoregressive, Emission
from modeshift.emissions.autoregressive import with_lags
from modeshift.models.base import Forecast, mode_segments
from modeshift.models.hmm import HMM
from modeshift.models.params import Boolean, Integer, Number, OneOf
from modeshift.models.streaming import FilterState, lagged_values

__all__ = ["ARHMM"]


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
    reg_covar, n_iter, tol, n_restarts, random_state, fixed, init,
    transition_concentration, stickiness, input_dim, input_slopes, transition_penalty, max_states,
    accelerate, warm_start, verbose, callback
        As for :class:`HMM`.

    Attributes
    ----------
    coefs_ : (K, D, order D)
        ``coefs_[k][:, (i - 1) D : i D]`` is A_k,i.
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
    _constraints = {
        **HMM._constraints,
        "order": Integer(1),
        "noise": OneOf(("full", "diag")),
        "shared_noise": Boolean(),
        "ridge": Number(0),
    }

    def _make_emission(self) -> Emission:
        return Autoregressive(self._k, self.order, self.noise, self.shared_noise, self.ridge, self.reg_covar)

    def _sequences(self, X: Any, lengths: Sequence[int] | None, inputs: Any = None) -> Sequences:
        seqs = as_sequences(X, lengths).with_inputs(inputs, self.input_dim, "this ARHMM")
        seqs = seqs.require(
            allow_missing=False,
            min_length=self.order + 1,
            n_features=self._blocks[1].n_features,
            model=f"an ARHMM with order={self.order}",
        )
        return dataclasses.replace(seqs, values=with_lags(seqs.values, seqs.offsets, self.order))

    def segment(self, X: Any, lengths: Sequence[int] | None = None, *, inputs: Any = None) -> pd.DataFrame:
        """As :meth:`HMM.segment`, from step ``order`` of each sequence on: its first ``order``
        steps have no lags for a mode to explain, and belong to no run."""
        seqs = self._sequences(X, lengths, inputs)
        return mode_segments(seqs, self._viterbi(seqs)[1], self._posteriors(seqs), skip=self.order)

    def _n_observations(self, seqs: Sequences) -> int:
        return seqs.n_steps - self.order * seqs.n_sequences

    def _stream_values(self, state: FilterState, y: Any) -> tuple[np.ndarray, np.ndarray]:
        model = f"an ARHMM with order={self.order}"
        return lagged_values(state.history, y, self.order, self._blocks[1].n_features, model)

    def _stream_history(self) -> np.ndarray:
        return np.zeros((0, self._blocks[1].n_features))

    def _step_emission(self, state: FilterState, row: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Given the last ``order`` rows, y_t is Gaussian in each mode: mean b_k + sum_i A_k,i y_t-i.
        None for the first ``order`` steps (conditioned on) and for a row with a missing entry."""
        emission = self._blocks[1]
        coefs, intercepts, covariances = emission.coefs, emission.intercepts, emission.covariances
        if coefs is None or intercepts is None or covariances is None or len(state.history) < self.order:
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
