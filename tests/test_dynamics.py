"""The linear-Gaussian dynamics block: log-likelihoods, statistics, an exact M-step, sampling, and the
exact moments of a Markov jump linear system."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from modeshift.dynamics import LinearDynamics, jump_linear_moments, missingness_patterns


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


def test_a_mode_without_weight_drops_its_free_ridge_columns_to_the_priors_maximiser():
    """With a ridge, the prior alone reaches a weightless mode: its free ridge columns go to 0 (their
    maximiser; the penalty of the old ones vanishes from the log prior), the fixed and unridged columns
    and its covariance are kept, and the other mode's fit is the same as without it."""
    rng = np.random.default_rng(6)
    y, z, weights = _data(rng)
    weights[:, 1], weights[:, 0] = 0.0, 1.0
    ridged, fixed = np.array([True, True, False]), np.array([True, False, False])
    block = LinearDynamics(2, ridge=2.0, ridge_columns=ridged)
    start = rng.normal(size=(2, 2, 3))
    block.weights, block.covariances = start.copy(), np.stack([0.5 * np.eye(2)] * 2)
    block.m_step(block.statistics(np.hstack([y, z]), y.shape[1], weights), fixed_columns=fixed)
    np.testing.assert_array_equal(block.weights[1], np.c_[start[1][:, 0], np.zeros(2), start[1][:, 2]])
    np.testing.assert_array_equal(block.covariances[1], 0.5 * np.eye(2))
    alone = LinearDynamics(1, ridge=2.0, ridge_columns=ridged)
    alone.weights = start[:1].copy()
    alone.m_step(block.statistics(np.hstack([y, z]), y.shape[1], weights[:, :1]), fixed_columns=fixed)
    np.testing.assert_allclose(block.weights[0], alone.weights[0], rtol=1e-12)
    only_second = LinearDynamics(1, ridge=2.0, ridge_columns=ridged)
    only_second.weights, only_second.covariances = block.weights[1:], block.covariances[1:]
    held = start[1][:, 0]  # fixed, so still penalised: -ridge / 2 tr(S^-1 w w'), and -(2 / 2) log det S
    assert only_second.log_prior() == pytest.approx(-2.0 * held @ held - np.log(0.25), rel=1e-12)


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="noise"):
        LinearDynamics(2, noise="spherical")
    with pytest.raises(ValueError, match="ridge"):
        LinearDynamics(2, ridge=-1.0)


def test_sample_rows_draws_each_row_in_its_mode():
    rng = np.random.default_rng(5)
    block = LinearDynamics(2)
    block.weights = rng.normal(size=(2, 2, 3))
    block.covariances = np.array([[[1.0, 0.3], [0.3, 0.5]], [[0.2, 0.0], [0.0, 2.0]]])
    z = np.tile([0.5, -1.0, 1.0], (60000, 1))
    modes = np.repeat([0, 1], 30000)
    draws = block.sample_rows(z, modes, np.random.default_rng(6))
    assert draws.shape == (60000, 2)
    np.testing.assert_array_equal(draws, block.sample_rows(z, modes, np.random.default_rng(6)))
    for k in (0, 1):
        mine = draws[modes == k]
        np.testing.assert_allclose(mine.mean(axis=0), block.weights[k] @ z[0], atol=0.03)
        np.testing.assert_allclose(np.cov(mine.T), block.covariances[k], atol=0.05)
    one = block.sample(z[0], 1, np.random.default_rng(6))  # one draw: the same generator stream
    np.testing.assert_allclose(one, block.sample_rows(z[:1], np.array([1]), np.random.default_rng(6))[0], atol=1e-14)


def test_jump_linear_moments_match_the_mixture_over_every_mode_path():
    """Brute force: the law after h steps is a mixture over the K^(h+1) mode paths, each Gaussian."""
    rng = np.random.default_rng(7)
    K, n, h = 2, 2, 3
    matrices = 0.8 * rng.normal(size=(K, n, n))
    offsets = rng.normal(size=(h, K, n))  # varying with time, as with inputs
    factors = rng.normal(size=(K, n, n))
    noise = factors @ factors.transpose(0, 2, 1) + 0.1 * np.eye(n)
    transitions = rng.dirichlet(np.ones(K), size=(h, K))
    start = np.array([0.3, 0.7])
    start_means = rng.normal(size=(K, n))  # the state's law at the start, given the mode
    start_factors = rng.normal(size=(K, n, n))
    start_covs = start_factors @ start_factors.transpose(0, 2, 1)
    first = start[:, None] * start_means
    second = start[:, None, None] * (start_covs + start_means[:, :, None] * start_means[:, None, :])
    modes, means, covariances = jump_linear_moments(start, first, second, transitions, matrices, offsets, noise)

    want_modes, want_means, want_seconds = np.zeros((h, K)), np.zeros((h, n)), np.zeros((h, n, n))
    for t in range(h):
        for path in np.ndindex(*(K,) * (t + 2)):  # z_0 .. z_t+1
            weight, mean, cov = start[path[0]], start_means[path[0]], start_covs[path[0]]
            for step, (previous, k) in enumerate(zip(path[:-1], path[1:])):
                weight *= transitions[step, previous, k]
                mean = matrices[k] @ mean + offsets[step, k]
                cov = matrices[k] @ cov @ matrices[k].T + noise[k]
            want_modes[t, path[-1]] += weight
            want_means[t] += weight * mean
            want_seconds[t] += weight * (cov + np.outer(mean, mean))
    np.testing.assert_allclose(modes, want_modes, atol=1e-12)
    np.testing.assert_allclose(means, want_means, atol=1e-12)
    want_covariances = want_seconds - want_means[:, :, None] * want_means[:, None, :]
    np.testing.assert_allclose(covariances, want_covariances, atol=1e-11)
    # constant offsets may come as one (K, n) array
    same = jump_linear_moments(start, first, second, transitions, matrices, offsets[0], noise)
    np.testing.assert_allclose(
        same[1], jump_linear_moments(start, first, second, transitions, matrices, offsets[[0, 0, 0]], noise)[1]
    )


def test_missingness_patterns_group_rows_by_their_observed_entries():
    values = np.array([[1.0, 2.0], [np.nan, 1.0], [3.0, 4.0], [np.nan, np.nan], [np.nan, 5.0]])
    groups = {tuple(observed): sorted(rows) for rows, observed in missingness_patterns(values)}
    assert groups == {(True, True): [0, 2], (False, True): [1, 4], (False, False): [3]}
    ((rows, observed),) = missingness_patterns(np.ones((3, 2)))
    assert rows is None and observed.all()
    wide = np.ones((4, 70))
    wide[1, 65] = np.nan  # more columns than one integer code holds
    groups = {tuple(np.flatnonzero(~observed)): sorted(rows) for rows, observed in missingness_patterns(wide)}
    assert groups == {(): [0, 2, 3], (65,): [1]}
