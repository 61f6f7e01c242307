"""Autoregressive emissions: y_t depends on the state and on the previous observations."""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np

from modeshift.data import Sequences, check_array, check_covariances
from modeshift.dynamics import LinearDynamics
from modeshift.emissions.base import Emission
from modeshift.emissions.kmeans import kmeans
from modeshift.statistics import Statistics

__all__ = ["Autoregressive", "with_lags"]


def with_lags(values: np.ndarray, offsets: np.ndarray, lags: int) -> np.ndarray:
    """Rows ``[y_t, y_t-1, ..., y_t-lags, 1]`` (n_steps, D (lags + 1) + 1).

    At the first ``lags`` steps of a sequence, which have no full history, the
    missing lags and the final 1 are 0 instead.
    """
    n_steps, d = values.shape
    starts, ends = offsets[:-1, None], offsets[1:, None]
    out = np.empty((n_steps, d * (lags + 1) + 1))
    out[:, :d] = values
    out[:, -1] = 1.0
    for lag in range(1, lags + 1):  # shifted across sequence ends, then the steps without this lag cleared
        out[lag:, lag * d : (lag + 1) * d] = values[: max(n_steps - lag, 0)]
        early = starts + np.arange(lag)
        early = early[early < ends]
        out[early, lag * d : (lag + 1) * d] = 0.0
        if lag == lags:
            out[early, -1] = 0.0
    return out


class Autoregressive(Emission):
    """In state k, ``y_t = sum_i A_k,i y_t-i + b_k + e_t`` with ``e_t ~ N(0, S_k)``.

    Works on rows from :func:`with_lags`. The first ``lags`` steps of a sequence are
    conditioned on (they carry no evidence about the state), as in conditional
    maximum likelihood for autoregressions. ``coefs`` is (K, D, lags D): the block
    for lag i is ``coefs[:, :, (i - 1) D : i D]``. The algebra is
    :class:`~modeshift.dynamics.LinearDynamics` with regressors ``[y_t-1..y_t-lags, 1]``;
    ``ridge`` shrinks the lag coefficients, not the intercepts.
    """

    parameters = {"coefs_": "coefs", "intercepts_": "intercepts", "covars_": "covariances"}
    writes_out = True  # log_likelihoods(values, out)

    def __init__(
        self,
        n_states: int,
        lags: int = 1,
        noise: str = "full",
        shared_noise: bool = False,
        ridge: float = 0.0,
        reg_covar: float = 1e-6,
    ):
        super().__init__(n_states)
        self.lags = lags
        self.dynamics = LinearDynamics(n_states, noise, shared_noise, ridge, reg_covar)
        self.coefs: np.ndarray | None = None
        self.intercepts: np.ndarray | None = None
        self.covariances: np.ndarray | None = None
        self._conditioned: tuple[weakref.ref, np.ndarray] | None = None

    @property
    def n_features(self) -> int | None:
        for value in (self.intercepts, self.covariances, self.coefs):
            if value is not None:
                return value.shape[1]
        return None

    def validate(self, seqs: Sequences) -> Sequences:
        d = self.n_features
        if d is not None and seqs.n_features != d * (self.lags + 1) + 1:
            raise ValueError(f"the model has {d} feature(s), the data {(seqs.n_features - 1) // (self.lags + 1)}")
        return seqs

    def set(self, name: str, value: np.ndarray) -> None:
        k, d = self.n_states, self.n_features
        if name == "coefs":
            self.coefs = check_array("coefs_", value, (k, d, None if d is None else d * self.lags))
            if self.coefs.shape[2] != self.coefs.shape[1] * self.lags:
                raise ValueError(f"coefs_ must have shape (K, D, {self.lags} D), got {self.coefs.shape}")
        elif name == "intercepts":
            self.intercepts = check_array("intercepts_", value, (k, d))
        elif name == "covariances":
            covariances = check_covariances("covars_", value, d)
            if covariances.shape[0] != k:
                raise ValueError(f"covars_ must have {k} matrices, got shape {covariances.shape}")
            self.covariances = covariances
        else:
            raise AttributeError(name)

    # --------------------------------------------------------------------- algebra
    def _split(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The rows without a full history (indices), the responses y and the regressors z = [lags, 1].

        The indices are remembered for the last array seen (EM passes the same one every iteration).
        """
        d = self._response_dim(values)
        if self._conditioned is None or self._conditioned[0]() is not values:
            self._conditioned = weakref.ref(values), np.flatnonzero(values[:, -1] != 1.0)
        return self._conditioned[1], values[:, :d], values[:, d:]

    def _response_dim(self, values: np.ndarray) -> int:
        """D, from the width of the rows ``[y, lags, 1]``."""
        return (values.shape[1] - 1) // (self.lags + 1)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_conditioned": None}  # a weak reference does not pickle

    def _block(self) -> LinearDynamics:
        """The parameters as one regression on [lags, 1]. After an M-step ``coefs`` and
        ``intercepts`` are views of its weights, which then need no repacking."""
        block = self.dynamics
        packed = block.weights is not None and self.coefs.base is block.weights is self.intercepts.base
        if not packed:
            block.weights = np.concatenate([self.coefs, self.intercepts[:, :, None]], axis=2)
            block.ridge_columns = np.arange(self.coefs.shape[2] + 1) < self.coefs.shape[2]  # not the intercepts
        block.covariances = self.covariances
        return block

    def _unpack(self, block: LinearDynamics) -> None:
        self.coefs, self.intercepts = block.weights[:, :, :-1], block.weights[:, :, -1]
        self.covariances = block.covariances

    def initialize(self, values: np.ndarray, rng: np.random.Generator) -> None:
        """k-means++ on standardised lagged rows, then one M-step from those hard labels."""
        complete = np.delete(values, self._split(values)[0], axis=0)
        if not len(complete):
            raise ValueError(f"no time step has {self.lags} previous value(s) to regress on")
        _, y, z = self._split(complete)
        rows = complete[:, :-1]  # y and its lags
        scaled = (rows - rows.mean(axis=0)) / np.maximum(rows.std(axis=0), 1e-12)
        _, labels = kmeans(scaled, self.n_states, rng)
        d, q = y.shape[1], z.shape[1]
        block = self.dynamics
        block.weights = np.zeros((self.n_states, d, q))
        pooled = np.atleast_2d(np.cov(y, rowvar=False, bias=True)) + block.reg_covar * np.eye(d)
        block.covariances = np.broadcast_to(pooled, (self.n_states, d, d)).copy()
        block.ridge_columns = np.r_[np.ones(q - 1, dtype=bool), False]
        block.m_step(block.statistics(np.hstack([y, z]), d, np.eye(self.n_states)[labels]))
        self._unpack(block)

    def log_likelihoods(self, values: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """log p(y_t | z_t = k, lags), (n_steps, K), written to ``out`` if given; 0 for a row without
        a full history."""
        conditioned, y, z = self._split(values)
        out = self._block().log_likelihoods(y, z, out)
        out[conditioned] = 0.0
        return out

    def statistics(self, values: np.ndarray, posteriors: np.ndarray) -> Statistics:
        conditioned, y, _ = self._split(values)  # rows are [y, z] already
        weights = posteriors.copy()
        weights[conditioned] = 0.0
        return self.dynamics.statistics(values, y.shape[1], weights)

    def _fixed(self, fixed: frozenset[str]) -> tuple[np.ndarray, bool]:
        columns = np.full(self.coefs.shape[2] + 1, "coefs" in fixed)
        columns[-1] = "intercepts" in fixed
        return columns, "covariances" in fixed

    def m_step(self, stats: Statistics, fixed: frozenset[str] = frozenset()) -> None:
        block = self._block()
        columns, fix_covariances = self._fixed(fixed)
        block.m_step(stats, fixed_columns=columns, fix_covariances=fix_covariances)
        if not fix_covariances:
            self._check_collapse(block.covariances, stats)
        self._unpack(block)

    def _check_collapse(self, covariances: np.ndarray, stats: Statistics) -> None:
        """A clear error for a mode whose noise vanished (under 1e-12 of the data's mean square): with
        reg_covar = 0, a mode that takes a stretch of repeated values predicts it exactly, its
        likelihood without bound (the Gaussian emission's check, for autoregressions)."""
        spread = np.trace(np.sum(stats["yy"], axis=0)) / max(float(np.sum(stats["count"])), 1e-300)
        traces = np.trace(covariances, axis1=1, axis2=2)
        collapsed = np.flatnonzero((np.asarray(stats["count"]) > 1e-10) & (traces <= 1e-12 * spread))
        if collapsed.size:
            raise ValueError(
                f"the noise covariance of mode {int(collapsed[0])} collapsed (its steps follow its autoregression "
                f"exactly: a stretch of repeated values?): raise reg_covar (now {self.dynamics.reg_covar:g}), "
                "or check the data for constant stretches"
            )

    def stationary_mean(self, state: int) -> np.ndarray:
        """Mean of state k's autoregression if it ran forever (zeros when it has none)."""
        d = self.n_features
        total = self.coefs[state].reshape(d, self.lags, d).sum(axis=1)
        try:
            return np.linalg.solve(np.eye(d) - total, self.intercepts[state])
        except np.linalg.LinAlgError:
            return np.zeros(d)

    def sample(self, states: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Observations along a state path, generated in order; the values before the
        first step are the stationary mean of the first state."""
        block, d = self._block(), self.n_features
        history = np.tile(self.stationary_mean(states[0]), self.lags)  # most recent first
        out = np.empty((len(states), d))
        for t, state in enumerate(states):
            out[t] = block.sample(np.r_[history, 1.0], state, rng)
            history = np.r_[out[t], history[:-d]]
        return out

    def n_parameters(self, fixed: frozenset[str] = frozenset(), modes: int | None = None) -> int:
        """Free parameters of ``modes`` of the flows (default all: :meth:`LinearDynamics.n_parameters`)."""
        columns, fix_covariances = self._fixed(fixed)
        return self._block().n_parameters(columns, fix_covariances, modes)

    def describe(self) -> dict[str, list]:
        """Parameters per state, plus each state's spectral radius (below 1: the state's
        dynamics are stable on their own) and stationary mean."""
        d, lags = self.n_features, self.lags
        companion = np.zeros((self.n_states, d * lags, d * lags))
        companion[:, :d] = self.coefs
        companion[:, d:, :-d] = np.eye(d * (lags - 1))
        return {
            **super().describe(),
            "spectral_radius": list(np.abs(np.linalg.eigvals(companion)).max(axis=1)),
            "stationary_mean": [self.stationary_mean(k) for k in range(self.n_states)],
        }

    def log_prior(self) -> float:
        return self._block().log_prior() if self.coefs is not None else 0.0
