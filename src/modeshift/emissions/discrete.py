"""Emissions for discrete observations: categorical symbols and Poisson counts."""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln

from modeshift.data import Sequences, check_array, check_probabilities
from modeshift.emissions.base import Emission
from modeshift.statistics import Statistics

__all__ = ["Categorical", "Poisson"]


class Categorical(Emission):
    """y_t | z_t = k ~ Categorical(emissionprob_k) over symbols 0 .. n_symbols - 1.

    Observations are one column of integer symbols; NaN marks a missing step.
    The M-step is the posterior mode under a symmetric Dirichlet prior with the
    given ``concentration`` (1: maximum likelihood).
    """

    parameters = {"emissionprob_": "emission_probs"}

    def __init__(self, n_states: int, n_symbols: int | None = None, concentration: float = 1.0):
        super().__init__(n_states)
        if concentration < 1.0:
            raise ValueError("concentration must be >= 1")
        self.n_symbols = n_symbols
        self.concentration = concentration
        self.emission_probs: np.ndarray | None = None

    @property
    def n_features(self) -> int:
        return 1

    def validate(self, seqs: Sequences) -> Sequences:
        seqs.require(allow_missing=True, n_features=1, model="a categorical emission")
        return seqs.require_counts(upper=self.n_symbols, model="a categorical emission")

    def set(self, name: str, value: np.ndarray) -> None:
        if name != "emission_probs":
            raise AttributeError(name)
        probs = check_probabilities("emissionprob_", value, (self.n_states, self.n_symbols))
        self.n_symbols = probs.shape[1]
        self.emission_probs = probs

    def initialize(self, values: np.ndarray, rng: np.random.Generator) -> None:
        """Empirical symbol frequencies, perturbed differently for every state."""
        symbols = _observed_symbols(values)
        if self.n_symbols is None:
            self.n_symbols = int(symbols.max()) + 1
        frequencies = np.bincount(symbols, minlength=self.n_symbols) + 1.0
        frequencies /= frequencies.sum()
        noise = rng.dirichlet(np.ones(self.n_symbols), size=self.n_states)
        self.emission_probs = 0.5 * frequencies + 0.5 * noise

    def log_likelihood_table(
        self, values: np.ndarray, scratch: dict[str, np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """One row per symbol, plus a row of zeros for a missing step."""
        column = values[:, 0]
        rows = np.where(np.isnan(column), self.n_symbols, column).astype(np.int64)
        table = np.zeros((self.emission_probs.shape[1] + 1, self.n_states))  # C order: the kernels read a row a step
        with np.errstate(divide="ignore"):
            table[:-1] = np.log(self.emission_probs).T
        return table, rows

    def log_likelihoods(self, values: np.ndarray) -> np.ndarray:
        table, rows = self.log_likelihood_table(values)
        return table[rows]

    def statistics(self, values: np.ndarray, posteriors: np.ndarray) -> Statistics:
        column = values[:, 0]
        observed = ~np.isnan(column)
        symbols = column[observed].astype(np.int64)
        weights = posteriors[observed]
        counts = np.stack(
            [np.bincount(symbols, weights=weights[:, k], minlength=self.n_symbols) for k in range(self.n_states)]
        )
        return Statistics(counts=counts)

    def m_step(self, stats: Statistics, fixed: frozenset[str] = frozenset()) -> None:
        if "emission_probs" in fixed:
            return
        counts = stats["counts"] + (self.concentration - 1.0)
        totals = counts.sum(axis=1, keepdims=True)
        self.emission_probs = np.where(totals > 0, counts / np.where(totals > 0, totals, 1.0), self.emission_probs)

    def log_prior(self) -> float:
        extra = self.concentration - 1.0
        return float(extra * np.log(self.emission_probs).sum()) if extra else 0.0

    def n_parameters(self, fixed: frozenset[str] = frozenset()) -> int:
        return 0 if "emission_probs" in fixed else self.n_states * (self.n_symbols - 1)

    def sample(self, states: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        cumulative = np.cumsum(self.emission_probs, axis=1)[states]
        uniforms = rng.random(len(states))[:, None]
        symbols = np.minimum((cumulative <= uniforms).sum(axis=1), self.n_symbols - 1)
        return symbols[:, None]


class Poisson(Emission):
    """Independent Poisson counts per dimension: y_td | z_t = k ~ Poisson(lambdas_kd)."""

    parameters = {"lambdas_": "rates"}

    def __init__(self, n_states: int):
        super().__init__(n_states)
        self.rates: np.ndarray | None = None

    @property
    def n_features(self) -> int | None:
        return None if self.rates is None else self.rates.shape[1]

    def validate(self, seqs: Sequences) -> Sequences:
        seqs.require(allow_missing=True, n_features=self.n_features, model="a Poisson emission")
        return seqs.require_counts(model="a Poisson emission")

    def set(self, name: str, value: np.ndarray) -> None:
        if name != "rates":
            raise AttributeError(name)
        rates = check_array("lambdas_", value, (self.n_states, self.n_features))
        if (rates < 0).any():
            raise ValueError("lambdas_ must be non-negative")
        self.rates = rates

    def initialize(self, values: np.ndarray, rng: np.random.Generator) -> None:
        """Rates spread around the observed means by quantiles of the data, randomly permuted."""
        if np.isnan(values).all():
            raise ValueError("no observed values to initialise from (all values are missing)")
        levels = (np.arange(self.n_states) + 0.5) / self.n_states
        quantiles = np.nanquantile(values, rng.permutation(levels), axis=0)
        self.rates = np.maximum(quantiles, 0.1 * np.nanmean(values, axis=0) + 1e-3)

    def log_likelihoods(self, values: np.ndarray) -> np.ndarray:
        observed = ~np.isnan(values)
        x = np.where(observed, values, 0.0)
        with np.errstate(divide="ignore"):
            log_rates = np.log(self.rates)
        # x log(lambda) is 0 when x = 0, even for lambda = 0
        terms = x @ np.where(np.isfinite(log_rates), log_rates, 0.0).T
        impossible = (x > 0).astype(np.float64) @ (~np.isfinite(log_rates)).T.astype(np.float64)
        terms[impossible > 0] = -np.inf
        return terms - observed.astype(np.float64) @ self.rates.T - (gammaln(x + 1.0) * observed).sum(axis=1)[:, None]

    def statistics(self, values: np.ndarray, posteriors: np.ndarray) -> Statistics:
        observed = ~np.isnan(values)
        return Statistics(
            weights=posteriors.T @ observed.astype(np.float64),
            sums=posteriors.T @ np.where(observed, values, 0.0),
        )

    def m_step(self, stats: Statistics, fixed: frozenset[str] = frozenset()) -> None:
        if "rates" in fixed:
            return
        weights = stats["weights"]
        self.rates = np.where(weights > 1e-12, stats["sums"] / np.where(weights > 1e-12, weights, 1.0), self.rates)

    def n_parameters(self, fixed: frozenset[str] = frozenset()) -> int:
        return 0 if "rates" in fixed else self.rates.size

    def sample(self, states: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return rng.poisson(self.rates[states])


def _observed_symbols(values: np.ndarray) -> np.ndarray:
    column = values[:, 0]
    symbols = column[~np.isnan(column)]
    if symbols.size == 0:
        raise ValueError("no observed values to initialise from (all values are missing)")
    return symbols.astype(np.int64)
