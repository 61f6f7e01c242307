"""The dense linear algebra under the Kalman and block-tridiagonal kernels, against numpy and scipy."""

from __future__ import annotations

import numpy as np
from scipy import linalg

from modeshift._kernels.linalg import (
    affine,
    backward_substitute,
    cholesky_in_place,
    congruence,
    copy_into,
    forward_substitute,
    whitened_norm,
)


def _spd(rng, n):
    a = rng.normal(size=(n, n))
    return a @ a.T + n * np.eye(n)


def test_cholesky_and_triangular_solves():
    rng = np.random.default_rng(0)
    S = _spd(rng, 4)
    factor = np.full((5, 5), np.nan)  # only the leading 4 x 4 block is read and written
    factor[:4, :4] = np.tril(S)
    assert cholesky_in_place(factor, 4, False)
    L = np.tril(factor[:4, :4])
    np.testing.assert_allclose(L, np.linalg.cholesky(S), atol=1e-12)
    b = rng.normal(size=4)
    forward, backward = b.copy(), b.copy()
    forward_substitute(factor, 4, forward)
    backward_substitute(factor, 4, backward)
    np.testing.assert_allclose(forward, linalg.solve_triangular(L, b, lower=True), atol=1e-12)
    np.testing.assert_allclose(backward, linalg.solve_triangular(L.T, b, lower=False), atol=1e-12)
    v = b.copy()
    assert whitened_norm(factor, 4, v) == np.dot(forward, forward)
    np.testing.assert_array_equal(v, forward)


def test_semidefinite_cholesky_drops_a_direction():
    u = np.array([[1.0], [2.0], [-1.0]])
    S = u @ u.T  # rank one
    factor = np.tril(S)
    assert not cholesky_in_place(factor.copy(), 3, False)
    assert cholesky_in_place(factor, 3, True)
    L = np.tril(factor)
    np.testing.assert_allclose(L @ L.T, S, atol=1e-12)


def test_congruence_affine_and_copy():
    rng = np.random.default_rng(1)
    left, middle = rng.normal(size=(3, 4)), _spd(rng, 4)
    out, product = np.eye(3), np.empty((3, 4))
    congruence(left, middle, 4, out, product, True)
    np.testing.assert_allclose(out, np.eye(3) + left @ middle @ left.T, atol=1e-12)
    np.testing.assert_array_equal(out, out.T)
    M, x, N, u, result = (
        rng.normal(size=(3, 2)),
        rng.normal(size=2),
        rng.normal(size=(3, 1)),
        rng.normal(size=1),
        np.empty(3),
    )
    affine(M, x, N, u, result)
    np.testing.assert_allclose(result, M @ x + N @ u, atol=1e-12)
    target = np.empty((2, 3))
    copy_into(M.T, target)
    np.testing.assert_array_equal(target, M.T)
