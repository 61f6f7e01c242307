"""The one-pass log-likelihood and score of a linear-Gaussian state-space model (_kernels/lds_score.py)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest

from modeshift._kernels import kalman, kalman_filter
from modeshift._kernels.lds_score import log_likelihood_and_score


class Disturbances(NamedTuple):
    """The smoother's disturbances per step (``_smooth_sequence``'s docstring): r, N, NAP, u,
    half, WP."""

    r: np.ndarray
    N: np.ndarray
    NAP: np.ndarray
    u: np.ndarray
    half: np.ndarray
    WP: np.ndarray


def smoother_disturbances(y, offsets, filtered, A, C, R, inputs=None, D=None, diffuse=None, rows=None):
    """The reference the one-pass score is tested against: the smoothed means and the
    :class:`Disturbances` of every step, kept by the smoother's compiled backward pass (the
    arguments of ``rts_smoother``; ``rows`` the rows of A whose NAP is made, all by default)."""
    fm, fc, pm, pc = filtered
    n_steps, n, p = len(y), A.shape[-1], C.shape[-2]
    inputs = np.zeros((n_steps, 0)) if inputs is None else np.asarray(inputs, dtype=float)
    D = np.zeros((p, inputs.shape[1])) if D is None else D
    out = Disturbances(np.zeros((n_steps, n)), np.zeros((n_steps, n, n)), np.zeros((n_steps, n, n)),
                       np.zeros((n_steps, p)), np.zeros((n_steps, p, p)), np.zeros((n_steps, p, n)))  # fmt: skip
    means, none = np.empty((n_steps, n)), np.empty((0, n, n))
    kalman._smooth(
        np.asarray(y, dtype=float), inputs, np.asarray(offsets, dtype=np.int64), fm, fc, pm, pc,
        kalman._mask(diffuse, n), *(kalman._stack(M) for M in (A, C, D, R)), means, none, none, tuple(out),
        np.ones(n, dtype=bool) if rows is None else np.asarray(rows, dtype=bool),
    )  # fmt: skip
    return means, out


def _problem(diffuse: bool = False):
    """Three sequences (one of a single step), inputs, partly and wholly missing steps."""
    rng = np.random.default_rng(4)
    n, p, m = 2, 2, 1
    matrices = {
        "A": np.array([[0.9, 0.2], [-0.1, 0.7]]),
        "Q": np.array([[0.3, 0.1], [0.1, 0.2]]),
        "C": rng.normal(size=(p, n)),
        "R": np.diag([0.4, 0.2]) if diffuse else np.array([[0.4, 0.1], [0.1, 0.2]]),
        "m0": np.array([0.5, -0.2]),
        "P0": np.array([[1.0, 0.3], [0.3, 0.8]]),
        "B": rng.normal(size=(n, m)),
        "D": rng.normal(size=(p, m)),
    }
    y = rng.normal(size=(41, p))
    y[rng.random(y.shape) < 0.2] = np.nan
    y[3] = np.nan
    offsets = np.array([0, 25, 40, 41]) if not diffuse else np.array([0, 25, 41])
    return y, offsets, rng.normal(size=(41, m)), matrices


def _call(y, offsets, u, M, **options):
    return log_likelihood_and_score(y, offsets, M["m0"], M["P0"], M["A"], M["Q"], M["C"], M["R"], u, M["B"], M["D"],
                                    **options)  # fmt: skip


@pytest.mark.parametrize("diffuse", [False, True])
def test_one_pass_equals_the_filter_and_the_smoothers_fisher_identity(diffuse):
    """log p(Y) per sequence as kalman_filter's; the gradient as the sums of rts_smoother's
    disturbances (the Fisher identity written out with numpy)."""
    y, offsets, u, M = _problem(diffuse)
    mask = np.array([True, False]) if diffuse else None
    log_lik, gradient = _call(y, offsets, u, M, diffuse=mask)
    common = dict(inputs=u, diffuse=mask)
    filtered = kalman_filter(y, offsets, M["m0"], M["P0"], M["A"], M["Q"], M["C"], M["R"],
                             input_matrices=M["B"], feedthrough_matrices=M["D"], **common)  # fmt: skip
    np.testing.assert_allclose(log_lik, filtered[0], rtol=1e-13)
    sm, d = smoother_disturbances(y, offsets, filtered[1:], M["A"], M["C"], M["R"], u, M["D"], mask)
    starts = offsets[:-1]
    linked = np.setdiff1d(np.arange(len(y)), starts)
    half = 0.5 * (d.r[:, :, None] * d.r[:, None, :] - d.N)
    proper = np.ones(2, dtype=bool) if mask is None else ~mask
    R = d.half.sum(axis=0)
    want = {
        "Q": half[linked].sum(axis=0),
        "A": d.r[linked].T @ sm[linked - 1] - d.NAP[linked].sum(axis=0),
        "B": d.r[linked].T @ u[linked],
        "m0": np.where(proper, d.r[starts].sum(axis=0), 0.0),
        "P0": np.where(np.outer(proper, proper), half[starts].sum(axis=0), 0.0),
        "C": d.u.T @ sm - d.WP.sum(axis=0),
        "D": d.u.T @ u,
        "R": 0.5 * (R + R.T),
    }
    for key, value in want.items():
        np.testing.assert_allclose(gradient[key], value, rtol=1e-12, atol=1e-12, err_msg=key)


def test_score_rows_leave_the_other_rows_of_a_at_zero():
    y, offsets, u, M = _problem()
    _, every = _call(y, offsets, u, M)
    _, some = _call(y, offsets, u, M, score_rows=np.array([False, True]))
    np.testing.assert_array_equal(some["A"][0], 0.0)
    np.testing.assert_allclose(some["A"][1], every["A"][1], rtol=1e-12)
    for key in ("Q", "C", "R", "B", "D", "m0", "P0"):
        np.testing.assert_allclose(some[key], every[key], rtol=1e-12, err_msg=key)


def test_a_singular_innovation_covariance_is_a_clear_error():
    y, offsets, u, M = _problem()
    M = {**M, "R": np.zeros((2, 2)), "Q": np.zeros((2, 2)), "P0": np.zeros((2, 2)), "C": np.ones((2, 2))}
    with pytest.raises(ValueError, match="innovation covariance is not positive definite at sequence 0, time step 0"):
        _call(y, offsets, u, M)
