"""The Gaussian kernels against numpy and scipy."""

import numpy as np
import pytest
from scipy import stats

from modeshift import _kernels as kernels


def _covariances(rng, k, d):
    factors = rng.normal(size=(k, d, d))
    return factors @ factors.transpose(0, 2, 1) + 0.1 * np.eye(d)


@pytest.mark.parametrize("d", [1, 2, 5])
def test_inverse_cholesky_matches_numpy(d):
    covariances = _covariances(np.random.default_rng(d), 3, d)
    expected = np.linalg.inv(np.linalg.cholesky(covariances))
    np.testing.assert_allclose(kernels.inverse_cholesky(covariances), expected, rtol=1e-10, atol=1e-12)


def test_gaussian_log_density_matches_scipy():
    rng = np.random.default_rng(0)
    points, means, covariances = rng.normal(size=(700, 3)), rng.normal(size=(4, 3)), _covariances(rng, 4, 3)
    expected = np.stack([stats.multivariate_normal(m, c).logpdf(points) for m, c in zip(means, covariances)], 1)
    np.testing.assert_allclose(kernels.gaussian_log_density(points, means, covariances), expected, rtol=1e-10)


def test_regression_log_density_matches_scipy():
    rng = np.random.default_rng(1)
    y, z = rng.normal(size=(600, 2)), rng.normal(size=(600, 4))
    weights, covariances = rng.normal(size=(3, 2, 4)), _covariances(rng, 3, 2)
    expected = np.stack(
        [stats.multivariate_normal(np.zeros(2), c).logpdf(y - z @ w.T) for w, c in zip(weights, covariances)], 1
    )
    np.testing.assert_allclose(kernels.regression_log_density(y, z, weights, covariances), expected, rtol=1e-10)


def test_weighted_moments_match_einsum():
    rng = np.random.default_rng(2)
    points, weights = rng.normal(size=(1000, 4)), rng.dirichlet(np.ones(3), size=1000)
    totals, sums, outer = kernels.weighted_moments(points, weights)
    np.testing.assert_allclose(totals, weights.sum(0), rtol=1e-12)
    np.testing.assert_allclose(sums, weights.T @ points, rtol=1e-12)
    np.testing.assert_allclose(outer, np.einsum("nk,ni,nj->kij", weights, points, points), rtol=1e-12)
