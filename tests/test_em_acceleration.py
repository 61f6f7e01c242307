"""SQUAREM acceleration in the EM driver (modeshift.models.em)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

from modeshift import HMM
from modeshift.models import em


class LinearMap:
    """A toy EM: theta <- target + rates * (theta - target), objective -sum (theta - target)^2.

    Setting a negative first coordinate raises ValueError (the edge of its parameter space),
    as a model's validating setters do; ``refused`` counts how often the driver tried."""

    objective = "log-likelihood"
    random_state = 0
    verbose = False
    callback = None

    def __init__(self, accelerate: bool, rates=(0.97, 0.6), target=(0.0, 1.0), tol: float = 1e-14):
        self.accelerate, self.n_iter, self.tol = accelerate, 5000, tol
        self.rates, self.target = np.array(rates), np.array(target)
        self.refused = 0

    def _em_initialize(self, data: Any, rng: np.random.Generator, restart: int) -> None:
        self.theta = np.array([5.0, -3.0])

    def _e_step(self, data: Any, workspace: dict) -> tuple[float, None]:
        return -float(np.sum((self.theta - self.target) ** 2)), None

    def _m_step(self, data: Any, statistics: None) -> None:
        self.theta = self.target + self.rates * (self.theta - self.target)

    def _em_snapshot(self) -> dict[str, np.ndarray]:
        return {"theta": self.theta.copy()}

    def _em_restore(self, snapshot: dict[str, np.ndarray]) -> None:
        if snapshot["theta"][0] < 0:
            self.refused += 1
            raise ValueError("theta[0] must be >= 0")
        self.theta = snapshot["theta"].copy()


def test_squarem_reaches_the_fixed_point_in_a_fraction_of_the_iterations():
    plain, fast = LinearMap(False), LinearMap(True)
    em.run(plain, None)
    em.run(fast, None)
    assert plain.converged_ and fast.converged_
    np.testing.assert_allclose(fast.theta, fast.target, atol=1e-7)
    assert fast.n_iter_ < plain.n_iter_ / 4
    assert np.all(np.diff(fast.history_) >= 0)  # the recorded path never goes down


def test_an_extrapolation_outside_the_parameter_space_falls_back_to_plain_em():
    # the first coordinate creeps to its bound 0 at rate 0.97, the second at 0.99 from the other
    # side: a step long enough for the second overshoots the first
    model = LinearMap(True, rates=(0.97, 0.99), target=(0.0, 0.0))
    em.run(model, None)
    assert model.refused > 0
    assert model.converged_ and model.theta[0] >= 0
    assert np.all(np.diff(model.history_) >= 0)


@pytest.fixture(scope="module")
def saddle_data() -> np.ndarray:
    """Two overlapping bivariate clusters with a sticky chain: EM crawls, first past a saddle."""
    rng = np.random.default_rng(3)
    modes = np.repeat(rng.integers(0, 2, 40), 10)
    centres = np.array([[0.0, 0.0], [1.2, 0.8]])
    return centres[modes] + rng.normal(size=(400, 2))


def test_accelerated_hmm_reaches_the_same_maximum_as_plain_em(saddle_data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", em.ConvergenceWarning)
        plain = HMM(2, accelerate=False, tol=1e-10, n_iter=20000, random_state=0).fit(saddle_data)
    fast = HMM(2, tol=1e-10, n_iter=20000, random_state=0).fit(saddle_data)
    assert fast.converged_
    assert fast.score(saddle_data) == pytest.approx(plain.score(saddle_data), abs=1e-6)
    order_plain, order_fast = np.argsort(plain.means_[:, 0]), np.argsort(fast.means_[:, 0])
    np.testing.assert_allclose(fast.means_[order_fast], plain.means_[order_plain], atol=1e-4)
    assert fast.n_iter_ < plain.n_iter_
    assert np.all(np.diff(fast.history_) >= -1e-9 * abs(fast.history_[-1]))


def test_plain_em_is_unchanged_by_the_option(saddle_data):
    a = HMM(2, accelerate=False, n_iter=7, tol=-np.inf, random_state=0)
    b = HMM(2, accelerate=True, n_iter=2, tol=-np.inf, random_state=0)  # a cycle needs 3 points
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", em.ConvergenceWarning)
        a.fit(saddle_data)
        b.fit(saddle_data)
    assert a.history_[:2] == b.history_
