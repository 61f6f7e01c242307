"""How long a hidden semi-Markov model stays in a mode: duration laws, one small class each.

A segment of state k lasts d steps, d in 1 .. D (``max_duration``), with probability p_k(d).
Every law is shifted to start at 1 (a segment lasts at least one step) and truncated to
1 .. D (renormalised):

- :class:`Poisson`: d - 1 ~ Poisson(lambda_k), mean 1 + lambda_k;
- :class:`NegativeBinomial`: d - 1 ~ NB(r_k, p_k), P(x) = Gamma(x + r) / (Gamma(r) x!) p^r (1 - p)^x,
  mean 1 + r (1 - p) / p: over-dispersed durations (variance above the Poisson's);
- :class:`Geometric`: p_k(d) = p_k (1 - p_k)^(d - 1), mean 1 / p_k: the dwell time of a hidden
  Markov chain with self-transition probability 1 - p_k;
- :class:`Nonparametric`: a free pmf on 1 .. D.

Each gives its pmf (K, D), survival S_k(d) = P(duration >= d), mean, an M-step from the expected
number n_k(d) of segments of each duration, starting values and draws. The M-steps are closed
forms (nonparametric: n_k(d) / sum_d n_k(d); Poisson: lambda = mean(d) - 1; geometric:
p = 1 / mean(d)); the negative binomial's is a one-dimensional ML step (below). The parametric
ones maximise the untruncated law, the truncated law's maximiser when D covers the law (so choose
D with negligible mass beyond it; :class:`~modeshift.models.hsmm.HSMM` warns when it is not).

A segment cut by the end of the data (right-censored) was seen for d steps and lasted l >= d:
:func:`censored_counts` spreads its expected count over l with p(l) / S(d), the exact E-step
for its unseen length.

>>> import numpy as np
>>> law = Poisson(n_states=2, max_duration=30)
>>> law.set("rates", np.array([2.0, 9.0]))
>>> law.mean().round(3)
array([ 3., 10.])
>>> counts = np.zeros((2, 30)); counts[0, 4] = counts[1, 14] = 10.0  # ten segments of 5 and of 15 steps
>>> law.m_step(counts); law.rates
array([ 4., 14.])
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
from scipy import optimize, special, stats

from modeshift.data import check_array, check_probabilities

__all__ = [
    "DURATIONS",
    "Duration",
    "Geometric",
    "NegativeBinomial",
    "Nonparametric",
    "Poisson",
    "censored_counts",
    "make_duration",
    "survival_of",
]

_ACTIVE = 1e-12  # a state with fewer expected segments keeps its law


class Duration(ABC):
    """A duration law on 1 .. D for each of K states."""

    #: model attribute -> attribute of this object
    parameters: dict[str, str] = {}

    def __init__(self, n_states: int, max_duration: int | None):
        self.n_states = n_states
        self.max_duration = max_duration

    @property
    def durations(self) -> np.ndarray:
        """1 .. D."""
        return np.arange(1, self.max_duration + 1)

    @abstractmethod
    def log_pmf(self) -> np.ndarray:
        """log p_k(d) of the untruncated law at d = 1 .. D, (K, D)."""

    def pmf(self) -> np.ndarray:
        """p_k(d) truncated to 1 .. D and renormalised, (K, D)."""
        log_pmf = self.log_pmf()
        pmf = np.exp(log_pmf - log_pmf.max(axis=1, keepdims=True))
        return pmf / pmf.sum(axis=1, keepdims=True)

    def survival(self) -> np.ndarray:
        """S_k(d) = P(duration >= d), (K, D)."""
        return survival_of(self.pmf())

    def mean(self) -> np.ndarray:
        """Mean duration of each state's (truncated) law, (K,)."""
        return self.pmf() @ self.durations

    @abstractmethod
    def set(self, name: str, value: np.ndarray) -> None:
        """Set one parameter after checking its shape and range."""

    @abstractmethod
    def initialize(self, means: np.ndarray) -> None:
        """Starting values with the given mean durations (K,), each in (1, D)."""

    @abstractmethod
    def m_step(self, counts: np.ndarray, fixed: frozenset[str] = frozenset()) -> None:
        """Maximise sum_k,d counts[k, d-1] log p_k(d) (expected segments of each state and duration)."""

    @abstractmethod
    def n_parameters(self, fixed: frozenset[str] = frozenset()) -> int:
        """Number of free parameters, not counting those held fixed."""

    def sample(self, states: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One duration for each entry of ``states``, drawn from the truncated law (inverse cdf)."""
        cdf = np.cumsum(self.pmf(), axis=1)
        states = np.asarray(states, dtype=np.int64)
        picks = (rng.random(states.shape)[:, None] * cdf[states, -1:] >= cdf[states]).sum(axis=1)
        return np.minimum(picks, self.max_duration - 1) + 1

    def describe(self) -> dict[str, list]:
        """Per-state columns for a model's ``describe()``: the mean duration (``dwell_time``), its
        standard deviation (``duration_sd``) and each parameter but a free pmf."""
        pmf, d = self.pmf(), self.durations
        mean = pmf @ d
        columns = {name: list(getattr(self, attr)) for name, attr in self.parameters.items() if attr != "probabilities"}
        return {"dwell_time": list(mean), "duration_sd": list(np.sqrt(pmf @ d**2 - mean**2)), **columns}

    def _means(self, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Expected segments per state and their mean duration (NaN where none)."""
        totals = counts.sum(axis=1)
        active = totals > _ACTIVE
        return active, np.where(active, counts @ self.durations / np.where(active, totals, 1.0), np.nan)


class Poisson(Duration):
    """d - 1 ~ Poisson(lambda_k): ``duration_rates_`` lambda (K,); M-step lambda = mean(d) - 1."""

    parameters = {"duration_rates_": "rates"}

    def __init__(self, n_states: int, max_duration: int):
        super().__init__(n_states, max_duration)
        self.rates: np.ndarray | None = None

    def log_pmf(self) -> np.ndarray:
        return stats.poisson.logpmf(self.durations - 1, self.rates[:, None])

    def set(self, name: str, value: np.ndarray) -> None:
        rates = check_array("duration_rates_", value, (self.n_states,))
        if name != "rates" or (rates < 0).any():
            raise ValueError(f"duration_rates_ must be >= 0, got {rates}")
        self.rates = rates

    def initialize(self, means: np.ndarray) -> None:
        self.rates = np.asarray(means, dtype=float) - 1.0

    def m_step(self, counts: np.ndarray, fixed: frozenset[str] = frozenset()) -> None:
        if "rates" not in fixed:
            active, means = self._means(counts)
            self.rates = np.where(active, means - 1.0, self.rates)

    def n_parameters(self, fixed: frozenset[str] = frozenset()) -> int:
        return 0 if "rates" in fixed else self.n_states


class Geometric(Duration):
    """p_k(d) = p_k (1 - p_k)^(d-1): ``duration_probs_`` p (K,), the chance to leave at each step;
    M-step p = 1 / mean(d). With D large enough an HSMM with these durations is the HMM with
    self-transitions p_kk = 1 - p_k and switches p_kj / (1 - p_kk)."""

    parameters = {"duration_probs_": "probs"}

    def __init__(self, n_states: int, max_duration: int):
        super().__init__(n_states, max_duration)
        self.probs: np.ndarray | None = None

    def log_pmf(self) -> np.ndarray:
        return stats.geom.logpmf(self.durations, self.probs[:, None])

    def set(self, name: str, value: np.ndarray) -> None:
        probs = check_array("duration_probs_", value, (self.n_states,))
        if name != "probs" or not ((probs > 0) & (probs <= 1)).all():
            raise ValueError(f"duration_probs_ must be in (0, 1], got {probs}")
        self.probs = probs

    def initialize(self, means: np.ndarray) -> None:
        self.probs = 1.0 / np.asarray(means, dtype=float)

    def m_step(self, counts: np.ndarray, fixed: frozenset[str] = frozenset()) -> None:
        if "probs" not in fixed:
            active, means = self._means(counts)
            self.probs = np.where(active, 1.0 / np.where(active, means, 1.0), self.probs)

    def n_parameters(self, fixed: frozenset[str] = frozenset()) -> int:
        return 0 if "probs" in fixed else self.n_states


class NegativeBinomial(Duration):
    """d - 1 ~ NB(r_k, p_k): ``duration_shapes_`` r and ``duration_probs_`` p (K,).

    M-step (maximum likelihood from counts n(x) of x = d - 1, N segments, mean m): for a given r
    the maximiser is p = r / (r + m), and r solves the profile score
    sum_x n(x) (psi(x + r) - psi(r)) = N log(1 + m / r), decreasing in r; it has a root
    when the durations are over-dispersed (variance > mean - 1), found by Brent's method on
    log r in [1e-3, 1e6]; otherwise r stays at the bound 1e6 (the Poisson limit).
    """

    parameters = {"duration_shapes_": "shapes", "duration_probs_": "probs"}
    _SHAPES = (1e-3, 1e6)

    def __init__(self, n_states: int, max_duration: int):
        super().__init__(n_states, max_duration)
        self.shapes: np.ndarray | None = None
        self.probs: np.ndarray | None = None

    def log_pmf(self) -> np.ndarray:
        return stats.nbinom.logpmf(self.durations - 1, self.shapes[:, None], self.probs[:, None])

    def set(self, name: str, value: np.ndarray) -> None:
        label = {"shapes": "duration_shapes_", "probs": "duration_probs_"}[name]
        array = check_array(label, value, (self.n_states,))
        valid = array > 0 if name == "shapes" else (array > 0) & (array <= 1)
        if not valid.all():
            raise ValueError(f"{label} must be {'> 0' if name == 'shapes' else 'in (0, 1]'}, got {array}")
        setattr(self, name, array)

    def initialize(self, means: np.ndarray) -> None:
        """Shape 2 (a hump), the given means."""
        self.shapes = np.full(self.n_states, 2.0)
        self.probs = self.shapes / (self.shapes + np.asarray(means, dtype=float) - 1.0)

    def m_step(self, counts: np.ndarray, fixed: frozenset[str] = frozenset()) -> None:
        active, means = self._means(counts)
        for k in np.flatnonzero(active):
            mean = means[k] - 1.0
            shape = self.shapes[k] if "shapes" in fixed else self._shape(counts[k], mean)
            if "probs" not in fixed:
                self.probs[k] = shape / (shape + mean) if mean > 0 else 1.0
            self.shapes[k] = shape

    def _shape(self, counts: np.ndarray, mean: float) -> float:
        """The root in r of the profile score (see the class docstring)."""
        x = self.durations - 1
        total = counts.sum()

        def score(log_shape: float) -> float:
            r = np.exp(log_shape)
            return float(counts @ (special.digamma(x + r) - special.digamma(r)) - total * np.log1p(mean / r))

        low, high = np.log(self._SHAPES)
        if mean <= 0 or score(high) >= 0:
            return self._SHAPES[1]
        if score(low) <= 0:
            return self._SHAPES[0]
        return float(np.exp(optimize.brentq(score, low, high, xtol=1e-10)))

    def n_parameters(self, fixed: frozenset[str] = frozenset()) -> int:
        return sum(0 if name in fixed else self.n_states for name in ("shapes", "probs"))


class Nonparametric(Duration):
    """A free pmf on 1 .. D: ``duration_pmf_`` (K, D); M-step p_k(d) = n_k(d) / sum_d n_k(d)."""

    parameters = {"duration_pmf_": "probabilities"}

    def __init__(self, n_states: int, max_duration: int):
        super().__init__(n_states, max_duration)
        self.probabilities: np.ndarray | None = None

    def log_pmf(self) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return np.log(self.probabilities)

    def pmf(self) -> np.ndarray:
        return self.probabilities

    def set(self, name: str, value: np.ndarray) -> None:
        if name != "probabilities":
            raise AttributeError(name)
        self.probabilities = check_probabilities("duration_pmf_", value, (self.n_states, self.max_duration))
        self.max_duration = self.probabilities.shape[1]  # given by the pmf when not yet known

    def initialize(self, means: np.ndarray) -> None:
        """Half a shifted Poisson of the given mean, half uniform: every duration possible (EM keeps a zero at zero)."""
        poisson = Poisson(self.n_states, self.max_duration)
        poisson.initialize(means)
        self.probabilities = 0.5 * poisson.pmf() + 0.5 / self.max_duration

    def m_step(self, counts: np.ndarray, fixed: frozenset[str] = frozenset()) -> None:
        if "probabilities" not in fixed:
            totals = counts.sum(axis=1, keepdims=True)
            active = totals > _ACTIVE
            self.probabilities = np.where(active, counts / np.where(active, totals, 1.0), self.probabilities)

    def n_parameters(self, fixed: frozenset[str] = frozenset()) -> int:
        return 0 if "probabilities" in fixed else self.n_states * (self.max_duration - 1)


DURATIONS: dict[str, type[Duration]] = {
    "poisson": Poisson,
    "negative_binomial": NegativeBinomial,
    "geometric": Geometric,
    "nonparametric": Nonparametric,
}


def make_duration(name: str, n_states: int, max_duration: int) -> Duration:
    """The law called ``name`` (a key of :data:`DURATIONS`) for K states on 1 .. D."""
    return DURATIONS[name](n_states, max_duration)


def survival_of(pmf: np.ndarray) -> np.ndarray:
    """S(d) = sum_{l >= d} p(l) along the last axis."""
    return np.cumsum(pmf[..., ::-1], axis=-1)[..., ::-1]


def censored_counts(seen: np.ndarray, pmf: np.ndarray) -> np.ndarray:
    """Expected full durations of censored segments: ``seen[k, d-1]`` segments of k were seen for d
    steps and lasted l >= d with probability p(l) / S(d); returns n_k(l) = p(l) sum_{d <= l} seen(d) / S(d)."""
    survival = survival_of(pmf)
    ratio = np.divide(seen, survival, out=np.zeros_like(seen), where=survival > 0)
    return pmf * np.cumsum(ratio, axis=-1)
