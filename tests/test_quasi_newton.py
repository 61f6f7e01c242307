"""BFGS for a few parameters (models/quasi_newton.py): the minimum scipy finds, the line search's
back-off where f is undefined, and honest reports when it stops short."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import optimize

from modeshift.models.quasi_newton import minimise


def _rosenbrock(x: np.ndarray) -> tuple[float, np.ndarray]:
    return float(optimize.rosen(x)), optimize.rosen_der(x)


@pytest.mark.parametrize("start", [[-1.2, 1.0], [2.0, -1.0, 0.5, 3.0]])
def test_reaches_the_rosenbrock_minimum_with_fewer_evaluations_than_scipys_bfgs(start):
    x0 = np.array(start)
    result = minimise(_rosenbrock, x0, gtol=1e-8)
    reference = optimize.minimize(_rosenbrock, x0, jac=True, method="BFGS", options={"gtol": 1e-8})
    assert result.converged
    np.testing.assert_allclose(result.x, np.ones(len(start)), atol=1e-7)
    assert result.value <= reference.fun + 1e-14
    assert result.n_evaluations <= 1.2 * reference.nfev


def test_the_callback_sees_each_iteration_and_f_only_goes_down():
    seen: list[float] = []
    result = minimise(_rosenbrock, np.array([-1.2, 1.0]), callback=lambda x, value: seen.append(value))
    assert len(seen) == result.n_iter
    assert seen[-1] == result.value
    assert np.all(np.diff(seen) < 0)


def test_the_line_search_backs_off_where_f_is_undefined():
    """f = x - log x (minimum at 1) is undefined at x <= 0, where the first step lands."""

    def f(x: np.ndarray) -> tuple[float, np.ndarray]:
        if x[0] <= 0:
            return np.inf, np.zeros(1)
        return float(x[0] - np.log(x[0])), np.array([1 - 1 / x[0]])

    result = minimise(f, np.array([0.01]))
    assert result.converged
    assert result.x[0] == pytest.approx(1.0, abs=1e-5)


def test_stops_short_and_says_so():
    capped = minimise(_rosenbrock, np.array([-1.2, 1.0]), max_iter=3)
    assert not capped.converged and capped.n_iter == 3 and "max_iter" in capped.message

    def wrong(x: np.ndarray) -> tuple[float, np.ndarray]:  # the gradient points uphill
        value, gradient = _rosenbrock(x)
        return value, -gradient

    lost = minimise(wrong, np.array([-1.2, 1.0]))
    assert not lost.converged and "no step" in lost.message
    assert lost.value == _rosenbrock(np.array([-1.2, 1.0]))[0]

    undefined = minimise(lambda x: (np.nan, np.zeros(1)), np.zeros(1))
    assert not undefined.converged and undefined.n_evaluations == 1


def test_a_known_curvature_makes_the_first_step_newtons():
    """f = 3 |x - m|^2 / 2 has curvature 3: the first step lands on m (two evaluations, where a
    first step of length 1 takes more)."""
    m = np.array([0.5, -1.0, 2.0])

    def bowl(x: np.ndarray) -> tuple[float, np.ndarray]:
        return float(1.5 * (x - m) @ (x - m)), 3.0 * (x - m)

    told = minimise(bowl, np.zeros(3), curvature=3.0)
    assert told.converged and told.n_evaluations == 2
    np.testing.assert_allclose(told.x, m, atol=1e-12)
    assert minimise(bowl, np.zeros(3)).n_evaluations > 2
