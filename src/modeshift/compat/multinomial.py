"""Multinomial emissions: counts of several outcomes at each step (hmmlearn's ``MultinomialHMM``).

At step t the counts y_t = (y_t1, ..., y_tD) of D outcomes in n_t = sum_i y_ti trials follow

    p(y_t | z_t = k) = n_t! / (y_t1! ... y_tD!) * prod_i p_ki ** y_ti,

so the expected statistics are the posterior-weighted counts sum_t p(z_t = k | y) y_t, and the
M-step normalises them row by row. One trial per step is the categorical emission with one-hot
symbols.
"""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln, xlogy

from modeshift.data import Sequences, check_probabilities
from modeshift.emissions.base import Emission
from modeshift.statistics import Statistics

__all__ = ["Multinomial"]


class Multinomial(Emission):
    """y_t | z_t = k ~ Multinomial(n_t, emissionprob_k), n_t the step's total count.

    Parameters
    ----------
    n_states : int
    n_trials : int, optional
        Trials per step when sampling (the likelihood reads each step's own total).
    """

    parameters = {"emissionprob_": "emission_probs"}

    def __init__(self, n_states: int, n_trials: int | None = None):
        super().__init__(n_states)
        self.n_trials = n_trials
        self.emission_probs: np.ndarray | None = None

    @property
    def n_features(self) -> int | None:
        return None if self.emission_probs is None else self.emission_probs.shape[1]

    def validate(self, seqs: Sequences) -> Sequences:
        seqs.require(allow_missing=False, n_features=self.n_features, model="a multinomial emission")
        return seqs.require_counts(model="a multinomial emission")

    def set(self, name: str, value: np.ndarray) -> None:
        if name != "emission_probs":
            raise AttributeError(name)
        self.emission_probs = check_probabilities("emissionprob_", value, (self.n_states, self.n_features))

    def initialize(self, values: np.ndarray, rng: np.random.Generator) -> None:
        """The pooled outcome frequencies, perturbed differently for every state."""
        totals = values.sum(axis=0) + 1.0
        noise = rng.dirichlet(np.ones(values.shape[1]), size=self.n_states)
        self.emission_probs = 0.5 * totals / totals.sum() + 0.5 * noise

    def log_likelihoods(self, values: np.ndarray) -> np.ndarray:
        coefficient = gammaln(values.sum(axis=1) + 1.0) - gammaln(values + 1.0).sum(axis=1)
        # xlogy: an outcome never seen costs nothing, even where its probability is 0
        return coefficient[:, None] + xlogy(values[:, None, :], self.emission_probs[None]).sum(axis=2)

    def statistics(self, values: np.ndarray, posteriors: np.ndarray) -> Statistics:
        return Statistics(counts=posteriors.T @ values)

    def m_step(self, stats: Statistics, fixed: frozenset[str] = frozenset()) -> None:
        if "emission_probs" in fixed:
            return
        counts = stats["counts"]
        totals = counts.sum(axis=1, keepdims=True)
        self.emission_probs = np.where(totals > 0, counts / np.where(totals > 0, totals, 1.0), self.emission_probs)

    def n_parameters(self, fixed: frozenset[str] = frozenset()) -> int:
        return 0 if "emission_probs" in fixed else self.n_states * (self.n_features - 1)

    def sample(self, states: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.n_trials is None:
            raise ValueError("sampling multinomial counts needs one number of trials per step (n_trials)")
        return rng.multinomial(self.n_trials, self.emission_probs[states])
