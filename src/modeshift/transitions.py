"""How a hidden chain moves between its states."""

from __future__ import annotations

import numpy as np

from modeshift.data import check_probabilities
from modeshift.kernels import sample_chain
from modeshift.statistics import Statistics

__all__ = ["Stationary", "stationary_distribution"]


class Stationary:
    """An initial distribution and one transition matrix for all time steps.

    The M-step is the posterior mode under independent Dirichlet priors on the
    initial distribution and on each row of the transition matrix:
    ``concentration`` is added to every count minus one, and ``stickiness`` is
    added to the diagonal counts (a sticky prior that favours staying in a state).
    With the defaults (1 and 0) the M-step is plain maximum likelihood.

    Parameters
    ----------
    n_states : int
    concentration : float
        Dirichlet concentration of every entry (>= 1 keeps the mode well defined).
    stickiness : float
        Extra pseudo-count on the diagonal of the transition matrix.
    """

    def __init__(self, n_states: int, concentration: float = 1.0, stickiness: float = 0.0):
        if concentration < 1.0 or stickiness < 0.0:
            raise ValueError("concentration must be >= 1 and stickiness >= 0")
        self.n_states = n_states
        self.concentration = concentration
        self.stickiness = stickiness
        self.initial_probs: np.ndarray | None = None
        self.transition_matrix: np.ndarray | None = None

    # ----------------------------------------------------------------- parameters
    def set(self, name: str, value: np.ndarray) -> None:
        """Set ``initial_probs`` or ``transition_matrix`` after checking it."""
        k = self.n_states
        label, shape = {"initial_probs": ("startprob_", (k,)), "transition_matrix": ("transmat_", (k, k))}[name]
        setattr(self, name, check_probabilities(label, value, shape))

    def initialize(self, rng: np.random.Generator) -> None:
        """Uniform start; transition rows near 'stay', randomised so restarts differ."""
        k = self.n_states
        self.initial_probs = np.full(k, 1.0 / k)
        noise = rng.dirichlet(np.ones(k), size=k)
        self.transition_matrix = 0.5 * np.eye(k) + 0.5 * noise if k > 1 else np.ones((1, 1))

    @property
    def n_parameters(self) -> int:
        return self.n_states - 1 + self.n_states * (self.n_states - 1)

    def kernel_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(initial_probs, transition matrices (1, K, K)) as the kernels take them."""
        return self.initial_probs, self.transition_matrix[None]

    def log_kernel_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        with np.errstate(divide="ignore"):
            return np.log(self.initial_probs), np.log(self.transition_matrix)[None]

    # ------------------------------------------------------------------------ EM
    def statistics(self, posteriors: np.ndarray, starts: np.ndarray, pair_counts: np.ndarray) -> Statistics:
        """Expected initial-state counts and transition counts."""
        return Statistics(initial=posteriors[starts].sum(axis=0), transitions=pair_counts)

    def m_step(self, stats: Statistics, fixed: frozenset[str] = frozenset()) -> None:
        extra = self.concentration - 1.0
        if "initial_probs" not in fixed:
            self.initial_probs = _normalise(stats["initial"] + extra, self.initial_probs)
        if "transition_matrix" not in fixed:
            counts = stats["transitions"] + extra + self.stickiness * np.eye(self.n_states)
            self.transition_matrix = _normalise(counts, self.transition_matrix)

    def log_prior(self) -> float:
        """Log density of the Dirichlet priors, up to a constant."""
        extra = self.concentration - 1.0
        if extra == 0.0 and self.stickiness == 0.0:
            return 0.0
        weights = extra + self.stickiness * np.eye(self.n_states)
        with np.errstate(divide="ignore"):  # log 0 = -inf under a positive weight: impossible under the prior
            log_a = np.log(np.where(weights > 0, self.transition_matrix, 1.0))
            log_pi = np.log(self.initial_probs) if extra > 0 else np.zeros(self.n_states)
        return float(np.sum(weights * log_a) + extra * np.sum(log_pi))

    # ------------------------------------------------------------------ sampling
    def sample(self, n_steps: int, rng: np.random.Generator) -> np.ndarray:
        """One state path of ``n_steps`` steps."""
        return sample_chain(self.initial_probs, self.transition_matrix, rng.random(n_steps))


def stationary_distribution(transition_matrix: np.ndarray) -> np.ndarray:
    """A probability vector pi with pi P = pi (for a reducible chain, one of several)."""
    k = len(transition_matrix)
    system = np.vstack([transition_matrix.T - np.eye(k), np.ones((1, k))])
    pi = np.linalg.lstsq(system, np.r_[np.zeros(k), 1.0], rcond=None)[0]
    pi = np.clip(pi, 0.0, None)
    return pi / pi.sum()


def _normalise(counts: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """Rows of counts made into probabilities; a row with no counts keeps its previous value."""
    totals = counts.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        probs = counts / totals
    return np.where(totals > 0, probs, previous)
