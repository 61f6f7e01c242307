"""What every emission distribution provides."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from modeshift._kernels.recursions import buffer
from modeshift.data import Sequences
from modeshift.statistics import Statistics

__all__ = ["Emission"]


class Emission(ABC):
    """The distribution of an observation given the hidden state, one per state.

    An emission is a small object holding its parameters. The EM algorithm talks
    to it through five methods: :meth:`initialize` from data, per-state
    :meth:`log_likelihoods`, additive expected :meth:`statistics` given state
    posteriors, an :meth:`m_step` from (summed) statistics, and :meth:`sample`.
    Missing values (NaN) are integrated out in all of them.
    """

    #: model attribute (hmmlearn's name) -> attribute of this object
    parameters: dict[str, str] = {}
    writes_out = False  # whether log_likelihoods(values, out) writes the table into a given array

    def __init__(self, n_states: int):
        self.n_states = n_states

    @property
    @abstractmethod
    def n_features(self) -> int | None:
        """Observation dimension, known once parameters are set."""

    @abstractmethod
    def validate(self, seqs: Sequences) -> Sequences:
        """Check data against what this emission can model (raises ``ValueError``)."""

    @abstractmethod
    def set(self, name: str, value: np.ndarray) -> None:
        """Set one parameter after checking its shape and constraints."""

    @abstractmethod
    def initialize(self, values: np.ndarray, rng: np.random.Generator) -> None:
        """Data-driven starting values for every parameter."""

    @abstractmethod
    def log_likelihoods(self, values: np.ndarray) -> np.ndarray:
        """log p(y_t | z_t = k) as an (n_steps, n_states) array; 0 for a wholly missing step."""

    def log_likelihood_table(
        self, values: np.ndarray, scratch: dict[str, np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Log-likelihoods as ``(table, rows)``: step t's values are ``table[rows[t]]``.

        ``rows`` is None when the table has one row per step. Discrete emissions
        return one row per symbol, which spares the kernels an (n_steps, K) array.
        ``scratch``: the working arrays an E-step keeps from one call to the next
        (:func:`~modeshift._kernels.recursions.buffer`), where an emission whose
        ``log_likelihoods`` takes ``out`` (:attr:`writes_out`) writes its table.
        """
        if self.writes_out:
            return self.log_likelihoods(values, buffer(scratch, "log_likelihoods", (len(values), self.n_states))), None
        return self.log_likelihoods(values), None

    @abstractmethod
    def statistics(self, values: np.ndarray, posteriors: np.ndarray) -> Statistics:
        """Expected sufficient statistics given state posteriors (n_steps, n_states)."""

    @abstractmethod
    def m_step(self, stats: Statistics, fixed: frozenset[str] = frozenset()) -> None:
        """Maximise the expected complete-data log-likelihood (plus log prior)."""

    @abstractmethod
    def sample(self, states: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One observation per entry of ``states``: (n, n_features)."""

    @abstractmethod
    def n_parameters(self, fixed: frozenset[str] = frozenset()) -> int:
        """Number of free parameters, not counting those held fixed."""

    def log_prior(self) -> float:
        """Log density of the parameter prior (0 when there is none)."""
        return 0.0

    def describe(self) -> dict[str, list]:
        """Per-state columns for a model's ``describe()`` table: each parameter's value for each state."""
        return {name: list(getattr(self, attr)) for name, attr in self.parameters.items()}
