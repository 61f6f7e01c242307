"""The linear-Gaussian dynamics block: log-likelihoods, statistics and an exact M-step."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from modeshift.dynamics import LinearDynamics


def _data(rng, n=400, d=2, q=3, K=2):
    z = np.hstack([rng.normal(size=(n, q - 1)), np.ones((n, 1))])
    W = rng.normal(size=(K, d, q))
    y = np.einsum("kdq,nq->nkd", W, z)[:, 0] + rng.normal(scale=0.3, size=(n, d))
    weights = rng.dirichlet(np.ones(K), size=n)
    return y, z, weights


def _objective(block, y, z, weights):
    """Expected complete-data log-likelihood plus log prior."""
    return float((weights * block.log_likelihoods(y, z)).sum()) + block.log_prior()


def _fitted(y, z, weights, **options):
    block = LinearDynamics(weights.shape[1], **options)
    block.m_step(block.statistics(np.hstack([y, z]), y.shape[1], weights))
    return block


def test_log_likelihoods_match_scipy():
    rng = np.random.default_rng(0)
    y, z, weights = _data(rng)
    block = _fitted(y, z, weights)
    got = block.log_likelihoods(y, z)
    for k in range(2):
        law = stats.multivariate_normal
        want = [law(block.weights[k] @ zt, block.covariances[k]).logpdf(yt) for yt, zt in zip(y, z)]
        np.testing.assert_allclose(got[:, k], want, rtol=1e-10)


def test_m_step_is_weighted_least_squares():
    rng = np.random.default_rng(1)
    y, z, weights = _data(rng)
    block = _fitted(y, z, weights)
    for k in range(2):
        root = np.sqrt(weights[:, k])[:, None]
        W = np.linalg.lstsq(z * root, y * root, rcond=None)[0].T
        residuals = y - z @ W.T
        S = (weights[:, k, None] * residuals).T @ residuals / weights[:, k].sum()
        np.testing.assert_allclose(block.weights[k], W, rtol=1e-9)
        np.testing.assert_allclose(block.covariances[k], S, rtol=1e-9)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"noise": "diag"},
        {"shared_noise": True},
        {"ridge": 5.0, "ridge_columns": np.array([True, True, False])},
        {"ridge": 2.0, "reg_covar": 0.1, "shared_noise": True, "noise": "diag"},
    ],
)
def test_m_step_maximises_the_penalised_objective(options):
    """No perturbation of the M-step's answer (kept in the constrained family) does better."""
    rng = np.random.default_rng(2)
    y, z, weights = _data(rng)
    block = _fitted(y, z, weights, **options)
    best = _objective(block, y, z, weights)
    W, S = block.weights.copy(), block.covariances.copy()
    for _ in range(20):
        block.weights = W + 0.01 * rng.normal(size=W.shape)
        scale = np.exp(0.05 * rng.normal(size=S.shape[:2]))
        if options.get("shared_noise"):
            scale[:] = scale[0]
        block.covariances = S * np.sqrt(scale[:, :, None] * scale[:, None, :])
        assert _objective(block, y, z, weights) < best


def test_fixed_columns_keep_their_values_and_the_rest_is_optimal():
    rng = np.random.default_rng(3)
    y, z, weights = _data(rng)
    block = LinearDynamics(2)
    start = rng.normal(size=(2, 2, 3))
    block.weights, block.covariances = start.copy(), np.stack([np.eye(2)] * 2)
    fixed = np.array([True, False, False])
    block.m_step(block.statistics(np.hstack([y, z]), y.shape[1], weights), fixed_columns=fixed)
    np.testing.assert_array_equal(block.weights[:, :, 0], start[:, :, 0])
    for k in range(2):  # free columns: least squares on y minus the fixed part
        root = np.sqrt(weights[:, k])[:, None]
        target = y - z[:, :1] @ start[k][:, :1].T
        W = np.linalg.lstsq(z[:, 1:] * root, target * root, rcond=None)[0].T
        np.testing.assert_allclose(block.weights[k][:, 1:], W, rtol=1e-9)


def test_statistics_of_shards_add_up():
    rng = np.random.default_rng(4)
    y, z, weights = _data(rng)
    block = LinearDynamics(2)
    rows, d = np.hstack([y, z]), y.shape[1]
    whole = block.statistics(rows, d, weights)
    parts = block.statistics(rows[:100], d, weights[:100]) + block.statistics(rows[100:], d, weights[100:])
    for key in whole:
        np.testing.assert_allclose(parts[key], whole[key], rtol=1e-12)


def test_a_mode_without_weight_keeps_its_parameters():
    rng = np.random.default_rng(5)
    y, z, weights = _data(rng)
    weights[:, 1] = 0.0
    weights[:, 0] = 1.0
    block = LinearDynamics(2)
    block.weights, block.covariances = np.ones((2, 2, 3)), np.stack([np.eye(2)] * 2)
    block.m_step(block.statistics(np.hstack([y, z]), y.shape[1], weights))
    np.testing.assert_array_equal(block.weights[1], np.ones((2, 3)))
    np.testing.assert_array_equal(block.covariances[1], np.eye(2))


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="noise"):
        LinearDynamics(2, noise="spherical")
    with pytest.raises(ValueError, match="ridge"):
        LinearDynamics(2, ridge=-1.0)
