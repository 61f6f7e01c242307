"""Nonlinear autoregressive emissions: a mode's flow is linear in features of the past."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from modeshift.data import Sequences, check_array
from modeshift.emissions.autoregressive import Autoregressive
from modeshift.emissions.base import Emission

if TYPE_CHECKING:
    from modeshift.features import FeatureMap

__all__ = ["FeatureAutoregressive", "with_features"]


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

    def _clustered(self, complete: np.ndarray) -> np.ndarray:
        """y and the features' linear part (the standardised lags) when the map has one: powers
        and bumps would swamp the distances that tell the modes' flows apart."""
        d = self._response_dim(complete)
        return complete[:, : d + (self.features.linear_columns or self.features.n_outputs)]

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
