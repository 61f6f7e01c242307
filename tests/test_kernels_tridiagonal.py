"""The block-tridiagonal kernels against dense linear algebra and the Kalman smoother.

Random symmetric positive-definite block-tridiagonal matrices are the posterior
precisions of random linear-Gaussian chains; each sequence's dense (T n, T n) matrix is
built from the blocks, and the factor, solution, log-determinant, marginal blocks of the
inverse and samples must match numpy's dense answers to rounding error. The posterior of
a linear-Gaussian state-space model is the same computation in information form, so the
kernels must also reproduce the Kalman filter + RTS smoother.
"""

from __future__ import annotations

import numpy as np
import pytest

from modeshift import _kernels as kernels

TOL = {"rtol": 1e-9, "atol": 1e-10}
LENGTHS = [1, 7, 2, 1]


# --------------------------------------------------------------------------- references
def offsets_of(lengths):
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def _spd(rng, n, scale=1.0, size=None):
    w = rng.normal(size=(n, n) if size is None else (size, n, n))
    return scale * (w @ np.swapaxes(w, -1, -2) / n + 0.5 * np.eye(n))


def chain_precision(rng, n, offsets):
    """Blocks of the precision of x given y in a random time-varying linear-Gaussian chain:
    J_tt = P_0^-1 [t=0] + S_t + A_t+1^T Q^-1 A_t+1 [t<T-1] + Q^-1 [t>0], J_t,t-1 = -Q^-1 A_t,
    with S_t = C_t^T R^-1 C_t an arbitrary positive-definite block."""
    n_steps = int(offsets[-1])
    A = rng.normal(scale=0.7, size=(n_steps, n, n))
    Q_inv = np.linalg.inv(_spd(rng, n, 0.5))
    diagonal = _spd(rng, n, 0.3, size=n_steps)
    lower = -Q_inv @ A
    starts = offsets[:-1][offsets[:-1] < n_steps]
    diagonal[starts] += np.linalg.inv(_spd(rng, n, size=len(starts)))
    steps = np.setdiff1d(np.arange(n_steps), starts)  # steps with a predecessor
    diagonal[steps] += Q_inv
    diagonal[steps - 1] += np.swapaxes(A[steps], 1, 2) @ Q_inv @ A[steps]
    lower[starts] = np.nan  # never read
    return diagonal, lower


def dense(diagonal, lower, first, last):
    """The (T n, T n) matrix of rows first:last."""
    T, n = last - first, diagonal.shape[1]
    J = np.zeros((T * n, T * n))
    for k, t in enumerate(range(first, last)):
        J[k * n : (k + 1) * n, k * n : (k + 1) * n] = diagonal[t]
        if k > 0:
            J[k * n : (k + 1) * n, (k - 1) * n : k * n] = lower[t]
            J[(k - 1) * n : k * n, k * n : (k + 1) * n] = lower[t].T
    return J


def block(matrix, n, i, j):
    return matrix[i * n : (i + 1) * n, j * n : (j + 1) * n]


def make_case(n, lengths, seed=0):
    rng = np.random.default_rng(seed + 17 * n + len(lengths))
    offsets = offsets_of(lengths)
    diagonal, lower = chain_precision(rng, n, offsets)
    return rng, offsets, diagonal, lower


def apply(diagonal, lower, offsets, x):
    """J x, blockwise: J_tt x_t + J_t,t-1 x_t-1 + J_t+1,t^T x_t+1."""
    out = np.einsum("tij,tj->ti", diagonal, x)
    within = np.ones(len(x), dtype=bool)
    within[offsets[:-1]] = False  # steps with a predecessor in the same sequence
    steps = np.flatnonzero(within)
    out[steps] += np.einsum("tij,tj->ti", lower[steps], x[steps - 1])
    out[steps - 1] += np.einsum("tji,tj->ti", lower[steps], x[steps])
    return out


CASES = [(n, lengths) for n in (1, 2, 4) for lengths in ([1], [2], [7], LENGTHS)]


# --------------------------------------------------------------------------- against dense numpy
@pytest.mark.parametrize(("n", "lengths"), CASES)
def test_against_dense(n, lengths):
    rng, offsets, diagonal, lower = make_case(n, lengths)
    n_steps = int(offsets[-1])
    rhs = rng.normal(size=(n_steps, n))
    chol_diagonal, chol_lower = kernels.block_cholesky(diagonal, lower, offsets)
    x = kernels.block_solve(chol_diagonal, chol_lower, offsets, rhs)
    log_dets = kernels.block_log_det(chol_diagonal, offsets)
    covs, cross_covs = kernels.block_marginals(chol_diagonal, chol_lower, offsets)
    draws = rng.normal(size=(3, n_steps, n))
    mean = rng.normal(size=(n_steps, n))
    samples = kernels.sample_block(chol_diagonal, chol_lower, offsets, mean, draws)

    for s, (first, last) in enumerate(zip(offsets[:-1], offsets[1:])):
        J = dense(diagonal, lower, first, last)
        factor, inverse = np.linalg.cholesky(J), np.linalg.inv(J)
        for k, t in enumerate(range(first, last)):
            np.testing.assert_allclose(chol_diagonal[t], block(factor, n, k, k), **TOL)
            np.testing.assert_allclose(covs[t], block(inverse, n, k, k), **TOL)
            if k == 0:
                np.testing.assert_array_equal(chol_lower[t], 0.0)
                np.testing.assert_array_equal(cross_covs[t], 0.0)
            else:
                np.testing.assert_allclose(chol_lower[t], block(factor, n, k, k - 1), **TOL)
                np.testing.assert_allclose(cross_covs[t], block(inverse, n, k, k - 1), **TOL)
        np.testing.assert_allclose(x[first:last].ravel(), np.linalg.solve(J, rhs[first:last].ravel()), **TOL)
        sign, log_det = np.linalg.slogdet(J)
        assert sign == 1.0
        np.testing.assert_allclose(log_dets[s], log_det, **TOL)
        for r in range(len(draws)):  # mean + L^-T z, exactly
            expected = mean[first:last].ravel() + np.linalg.solve(factor.T, draws[r, first:last].ravel())
            np.testing.assert_allclose(samples[r, first:last].ravel(), expected, **TOL)
    np.testing.assert_array_equal(np.triu(chol_diagonal, 1), 0.0)
    np.testing.assert_array_equal(covs, np.swapaxes(covs, 1, 2))


def test_shapes_and_convenience():
    rng, offsets, diagonal, lower = make_case(2, LENGTHS)
    n_steps = int(offsets[-1])
    rhs = rng.normal(size=(n_steps, 2))
    chol_diagonal, chol_lower = kernels.block_cholesky(diagonal, lower, offsets)
    x, log_dets, covs, cross_covs = kernels.solve_block_tridiagonal(diagonal, lower, offsets, rhs)
    np.testing.assert_array_equal(x, kernels.block_solve(chol_diagonal, chol_lower, offsets, rhs))
    np.testing.assert_array_equal(log_dets, kernels.block_log_det(chol_diagonal, offsets))
    expected_covs, expected_cross = kernels.block_marginals(chol_diagonal, chol_lower, offsets)
    np.testing.assert_array_equal(covs, expected_covs)
    np.testing.assert_array_equal(cross_covs, expected_cross)
    # several right-hand sides at once, each as if alone
    batch = rng.normal(size=(3, n_steps, 2))
    solved = kernels.block_solve(chol_diagonal, chol_lower, offsets, batch)
    assert solved.shape == batch.shape
    for r in range(3):
        np.testing.assert_array_equal(solved[r], kernels.block_solve(chol_diagonal, chol_lower, offsets, batch[r]))
    mean = rng.normal(size=(n_steps, 2))
    np.testing.assert_array_equal(
        kernels.sample_block(chol_diagonal, chol_lower, offsets, mean, np.zeros((n_steps, 2))), mean
    )
    np.testing.assert_allclose(apply(diagonal, lower, offsets, x), rhs, **TOL)


def test_samples_monte_carlo():
    rng, offsets, diagonal, lower = make_case(2, [3, 1])
    n_steps, n_samples = int(offsets[-1]), 20_000
    mean = rng.normal(size=(n_steps, 2))
    chol_diagonal, chol_lower = kernels.block_cholesky(diagonal, lower, offsets)
    samples = kernels.sample_block(chol_diagonal, chol_lower, offsets, mean, rng.normal(size=(n_samples, n_steps, 2)))
    for first, last in zip(offsets[:-1], offsets[1:]):
        flat = samples[:, first:last].reshape(n_samples, -1)
        cov = np.linalg.inv(dense(diagonal, lower, first, last))
        sd = np.sqrt(np.diag(cov))
        assert np.all(np.abs(flat.mean(axis=0) - mean[first:last].ravel()) < 5 * sd / np.sqrt(n_samples))
        spread = np.sqrt((np.outer(sd**2, sd**2) + cov**2) / n_samples)
        assert np.all(np.abs(np.cov(flat, rowvar=False) - cov) < 5 * spread)


# --------------------------------------------------------------------------- failures
@pytest.mark.parametrize("how", ["negative block", "strong coupling", "nan"])
def test_not_positive_definite(how):
    _, offsets, diagonal, lower = make_case(2, LENGTHS)
    t = offsets[1] + 3  # sequence 1, time step 3
    if how == "negative block":
        diagonal[t] = -np.eye(2)
    elif how == "strong coupling":  # J_tt - J_t,t-1 J_t-1,t-1^-1 J_t-1,t has a negative eigenvalue
        lower[t] = 10.0 * np.linalg.cholesky(diagonal[t]) @ np.linalg.cholesky(diagonal[t - 1]).T
    else:
        diagonal[t, 1, 0] = np.nan
    diagonal[offsets[3]] = -np.eye(2)  # a later failing sequence is not the one reported
    with pytest.raises(ValueError, match="not positive definite at sequence 1, time step 3"):
        kernels.block_cholesky(diagonal, lower, offsets)


# --------------------------------------------------------------------------- a long sequence
def test_long_sequence():
    n, T = 4, 100_000
    rng, offsets, diagonal, lower = make_case(n, [T, 5, 1])
    rhs = rng.normal(size=(int(offsets[-1]), n))
    chol_diagonal, chol_lower = kernels.block_cholesky(diagonal, lower, offsets)
    x = kernels.block_solve(chol_diagonal, chol_lower, offsets, rhs)
    covs, cross_covs = kernels.block_marginals(chol_diagonal, chol_lower, offsets)
    log_dets = kernels.block_log_det(chol_diagonal, offsets)
    for result in (x, covs, cross_covs, log_dets):
        assert np.all(np.isfinite(result))
    residual = apply(diagonal, lower, offsets, x) - rhs
    assert np.max(np.abs(residual)) < 1e-10 * np.max(np.abs(rhs))
    # block row t of J Sigma, at column t: J_tt S_tt + J_t,t-1 S_t-1,t + J_t+1,t^T S_t+1,t = I
    identity = np.einsum("tij,tjk->tik", diagonal, covs)
    within = np.ones(len(x), dtype=bool)
    within[offsets[:-1]] = False
    steps = np.flatnonzero(within)
    identity[steps] += lower[steps] @ np.swapaxes(cross_covs[steps], 1, 2)
    identity[steps - 1] += np.swapaxes(lower[steps], 1, 2) @ cross_covs[steps]
    np.testing.assert_allclose(identity, np.broadcast_to(np.eye(n), identity.shape), atol=1e-9)
    assert np.all(np.linalg.eigvalsh(covs) > 0)


# --------------------------------------------------------------------------- the Kalman smoother
@pytest.mark.parametrize("n", [1, 3])
def test_matches_kalman_smoother(n):
    rng = np.random.default_rng(5 + n)
    p, lengths = 2, [1, 7, 30]
    offsets = offsets_of(lengths)
    n_steps = int(offsets[-1])
    A = rng.normal(scale=0.5, size=(n, n)) + 0.5 * np.eye(n)
    Q, R, P0 = _spd(rng, n, 0.3), _spd(rng, p, 0.5), _spd(rng, n)
    C, m0 = rng.normal(size=(p, n)), rng.normal(size=n)
    y = rng.normal(scale=2.0, size=(n_steps, p))

    _, fm, fc, pm, pc = kernels.kalman_filter(y, offsets, m0, P0, A, Q, C, R)
    means, covs, cross = kernels.rts_smoother(y, offsets, fm, fc, pm, pc, A, C, R)

    Q_inv, R_inv, P0_inv = np.linalg.inv(Q), np.linalg.inv(R), np.linalg.inv(P0)
    diagonal = np.tile(C.T @ R_inv @ C, (n_steps, 1, 1))
    lower = np.tile(-Q_inv @ A, (n_steps, 1, 1))
    information = y @ (C.T @ R_inv).T
    for first, last in zip(offsets[:-1], offsets[1:]):
        diagonal[first] += P0_inv
        information[first] += P0_inv @ m0
        diagonal[first : last - 1] += A.T @ Q_inv @ A
        diagonal[first + 1 : last] += Q_inv
    x, _, block_covs, block_cross = kernels.solve_block_tridiagonal(diagonal, lower, offsets, information)
    np.testing.assert_allclose(x, means, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(block_covs, covs, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(block_cross, cross, rtol=1e-8, atol=1e-8)
