"""A mixture of Gaussians in every state."""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from modeshift.data import Sequences, check_probabilities
from modeshift.emissions.base import Emission
from modeshift.emissions.gaussian import Gaussian
from modeshift.emissions.kmeans import kmeans
from modeshift.statistics import Statistics

__all__ = ["GaussianMixture"]


class GaussianMixture(Emission):
    """y_t | z_t = k ~ sum_m weights_km N(means_km, covars_km).

    The K * M components are one :class:`Gaussian` emission underneath, so the
    likelihood, the missing-data statistics and the covariance types are the
    Gaussian ones; ``"tied"`` shares one covariance among the components of a
    state (hmmlearn's convention). The EM statistics split each state posterior
    among that state's components.
    """

    parameters = {"weights_": "weights", "means_": "means", "covars_": "covariances"}

    def __init__(self, n_states: int, n_components: int, covariance: str = "full", reg_covar: float = 1e-6):
        super().__init__(n_states)
        self.n_components = n_components
        self.components = Gaussian(
            n_states * n_components, covariance, reg_covar, groups=np.repeat(np.arange(n_states), n_components)
        )
        self.weights: np.ndarray | None = None

    @property
    def n_features(self) -> int | None:
        return self.components.n_features

    @property
    def means(self) -> np.ndarray | None:
        return None if self.components.means is None else self._by_state(self.components.means)

    @property
    def covariances(self) -> np.ndarray | None:
        covariances = self.components.covariances
        return None if covariances is None else self._by_state(covariances)

    def _by_state(self, array: np.ndarray) -> np.ndarray:
        return array.reshape(self.n_states, self.n_components, *array.shape[1:])

    def validate(self, seqs: Sequences) -> Sequences:
        return seqs.require(allow_missing=True, n_features=self.n_features, model="a Gaussian mixture emission")

    def set(self, name: str, value: np.ndarray) -> None:
        k, m = self.n_states, self.n_components
        array = np.asarray(value, dtype=np.float64)
        if name == "weights":
            self.weights = check_probabilities("weights_", array, (k, m))
        elif name == "means":
            if array.shape[:2] != (k, m):
                raise ValueError(f"means_ must have shape ({k}, {m}, D), got {array.shape}")
            self.components.set("means", array.reshape(k * m, -1))
        elif name == "covariances":
            if self.components.covariance == "tied" and array.ndim == 3 and array.shape[0] == k:
                array = np.repeat(array, m, axis=0)  # hmmlearn's (K, D, D): one per state
            elif array.shape[:2] == (k, m):
                array = array.reshape(k * m, *array.shape[2:])
            self.components.set("covariances", array)
        else:
            raise AttributeError(name)

    def initialize(self, values: np.ndarray, rng: np.random.Generator) -> None:
        """k-means for the states, then k-means inside each state for its components."""
        self.components.initialize(values, rng)  # covariances, and a fallback for means
        points = values[~np.isnan(values).any(axis=1)]
        _, labels = kmeans(points, self.n_states, rng)
        means = self.means.copy()
        for k in range(self.n_states):
            members = points[labels == k]
            if len(members) >= self.n_components:
                means[k] = kmeans(members, self.n_components, rng)[0]
        self.components.means = means.reshape(self.n_states * self.n_components, -1)
        self.weights = np.full((self.n_states, self.n_components), 1.0 / self.n_components)

    def _component_log_likelihoods(self, values: np.ndarray) -> np.ndarray:
        """log w_km + log N(y_t | component km), shape (n_steps, K, M)."""
        per_component = self.components.log_likelihoods(values)
        with np.errstate(divide="ignore"):
            return per_component.reshape(len(values), self.n_states, self.n_components) + np.log(self.weights)

    def log_likelihoods(self, values: np.ndarray) -> np.ndarray:
        return logsumexp(self._component_log_likelihoods(values), axis=2)

    def statistics(self, values: np.ndarray, posteriors: np.ndarray) -> Statistics:
        joint = self._component_log_likelihoods(values)
        responsibilities = np.exp(joint - logsumexp(joint, axis=2, keepdims=True))
        observed = ~np.isnan(values).all(axis=1)
        component_posteriors = posteriors[:, :, None] * responsibilities * observed[:, None, None]
        flat = component_posteriors.reshape(len(values), -1)
        return Statistics(weights=component_posteriors.sum(axis=0), components=self.components.statistics(values, flat))

    def m_step(self, stats: Statistics, fixed: frozenset[str] = frozenset()) -> None:
        self.components.m_step(stats["components"], fixed)
        if "weights" not in fixed:
            totals = stats["weights"].sum(axis=1, keepdims=True)
            self.weights = np.where(totals > 0, stats["weights"] / np.where(totals > 0, totals, 1.0), self.weights)

    def log_prior(self) -> float:
        return self.components.log_prior()

    def n_parameters(self, fixed: frozenset[str] = frozenset()) -> int:
        weights = 0 if "weights" in fixed else self.n_states * (self.n_components - 1)
        return weights + self.components.n_parameters(fixed)

    def sample(self, states: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        cumulative = np.cumsum(self.weights, axis=1)[states]
        picks = np.minimum((cumulative <= rng.random(len(states))[:, None]).sum(axis=1), self.n_components - 1)
        return self.components.sample(states * self.n_components + picks, rng)
