"""Nonlinear autoregressive emissions: a mode's flow is linear in features of the past."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from modeshift.data import Sequences, check_array
from modeshift.emissions.autoregressive import Autoregressive
from modeshift.emissions.base import Emission
from modeshift.emissions.kmeans import kmeans

if TYPE_CHECKING:
    from modeshift.features import FeatureMap

__all__ = ["FeatureAutoregressive", "with_features"]

RANDOM_PARTITIONS = 9


def with_features(lagged: np.ndarray, n_responses: int, features: FeatureMap) -> np.ndarray:
    """Rows ``[y_t, phi(y_t-1, ..., y_t-p), 1]`` from :func:`~modeshift.emissions.autoregressive.with_lags` rows.

    A row without a full history (its final column 0) keeps features and final column 0.
    """
    d = n_responses
    complete = lagged[:, -1] == 1.0
    phi = np.zeros((len(lagged), features.n_outputs))
    if complete.any():
        phi[complete] = features.transform(lagged[complete, d:-1])
    return np.hstack([lagged[:, :d], phi, lagged[:, -1:]])


def _runs(rng: np.random.Generator, n_states: int, n: int) -> np.ndarray:
    """``n`` steps cut into runs of one random mode each, of geometric length with mean n / 20 (at least 1):
    the steps' modes, found by where each step falls among the runs' ends (the runs laid end to
    end and cut at ``n`` would take memory ~ n^2 / 20).

    >>> _runs(np.random.default_rng(0), 2, 10).shape
    (10,)
    """
    modes, lengths = rng.integers(n_states, size=n), rng.geometric(min(1.0, 20 / n), size=n)
    return modes[np.searchsorted(np.cumsum(lengths), np.arange(n), side="right")]


class FeatureAutoregressive(Autoregressive):
    """In state k, ``y_t = W_k phi(y_t-1, ..., y_t-lags) + b_k + e_t``, ``e_t ~ N(0, S_k)``.

    The same regression as :class:`Autoregressive` (its M-step, ridge on W not b, noise
    structures) with the fitted feature map's outputs as regressors; it works on rows from
    :func:`with_features`. ``coefs`` is (K, D, m) for m features.
    """

    def __init__(
        self,
        n_states: int,
        features: FeatureMap,
        lags: int = 1,
        noise: str = "full",
        shared_noise: bool = False,
        ridge: float = 0.0,
        reg_covar: float = 1e-6,
    ):
        super().__init__(n_states, lags, noise, shared_noise, ridge, reg_covar)
        self.features = features

    def _response_dim(self, values: np.ndarray) -> int:
        return values.shape[1] - self.features.n_outputs - 1

    def initialize(self, values: np.ndarray, rng: np.random.Generator) -> None:
        """One M-step from the best of several partitions of the steps into modes.

        The candidates: k-means on y and the features' linear part (where the series is, as
        :class:`Autoregressive` starts), and ``RANDOM_PARTITIONS`` = 9 random partitions into
        runs of one mode (of geometric length, mean a twentieth of the data). Where modes are
        told apart by their flows rather than by where they are, a flexible flow fit to k-means
        clusters can explain several modes at once, a trap EM does not leave; modes persist, so
        runs are a better start there (on switching Van der Pol / Duffing oscillators EM from one
        random run partition reached the generating modes in 29 of 32 starts, from k-means in
        none). The candidate whose flows explain the data best (hard assignment) is kept.
        """
        conditioned, y, _ = self._split(values)
        if len(conditioned) == len(values):
            raise ValueError(f"no time step has {self.lags} previous value(s) to regress on")
        d, n = y.shape[1], len(values)
        complete = np.delete(np.arange(n), conditioned)
        rows = values[complete][:, : d + (self.features.linear_columns or self.features.n_outputs)]
        scaled = (rows - rows.mean(axis=0)) / np.maximum(rows.std(axis=0), 1e-12)
        clustered = np.zeros(n, dtype=int)
        clustered[complete] = kmeans(scaled, self.n_states, rng)[1]
        candidates = [clustered] + [_runs(rng, self.n_states, n) for _ in range(RANDOM_PARTITIONS)]
        block = self.dynamics
        block.ridge_columns = np.r_[np.ones(values.shape[1] - d - 1, dtype=bool), False]
        best, best_fit = -np.inf, None
        for labels in candidates:
            weights = np.eye(self.n_states)[labels]
            weights[conditioned] = 0.0
            block.weights, block.covariances = None, None
            try:
                block.m_step(block.statistics(values, d, weights))
            except ValueError:  # a degenerate candidate (a mode on too few steps)
                continue
            self._unpack(block)
            fit = float(np.sum(weights * np.nan_to_num(self.log_likelihoods(values), neginf=-1e300)))
            if fit > best:
                best, best_fit = fit, (block.weights.copy(), block.covariances.copy())
        if best_fit is None:
            raise ValueError("no starting partition gives every mode a regression: too few steps for the features")
        block.weights, block.covariances = best_fit
        self._unpack(block)

    def validate(self, seqs: Sequences) -> Sequences:
        d, m = self.n_features, self.features.n_outputs
        if d is not None and seqs.n_features != d + m + 1:
            raise ValueError(f"the model has {d} feature(s), the data {seqs.n_features - m - 1}")
        return seqs

    def set(self, name: str, value: np.ndarray) -> None:
        if name == "coefs":
            self.coefs = check_array("coefs_", value, (self.n_states, self.n_features, self.features.n_outputs))
        else:
            super().set(name, value)

    def stationary_mean(self, state: int) -> np.ndarray:
        """Where sampling starts: the mean of the data the feature map was fit on (a nonlinear
        flow has no closed-form stationary mean)."""
        return np.asarray(self.features.location_[: self.n_features], dtype=float)

    def sample(self, states: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Observations along a state path, iterating the nonlinear map from the data's mean."""
        block, d = self._block(), self.n_features
        history = np.tile(self.stationary_mean(states[0]), self.lags)  # most recent first
        out = np.empty((len(states), d))
        for t, state in enumerate(states):
            out[t] = block.sample(np.r_[self.features.transform(history[None])[0], 1.0], state, rng)
            history = np.r_[out[t], history[:-d]]
        return out

    def describe(self) -> dict[str, list[Any]]:
        return Emission.describe(self)
