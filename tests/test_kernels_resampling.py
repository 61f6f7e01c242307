"""The resampling kernels: unbiased offspring counts, their known variances, and exact small cases.

Offspring counts N_i = #{m : a_m = i} are collected over R = 20,000 repetitions with a fixed
seed. Every scheme must have E[N_i] = M w_i; the empirical mean is allowed 5 Monte Carlo
standard errors (from the empirical variance). Variances are checked against their closed
forms where they have one, within 5 standard errors of the sample variance: M w_i (1 - w_i)
for multinomial, R r_i (1 - r_i) for the random part of residual; systematic counts never
leave floor/ceil(M w_i), and stratified ones stay within 2 of M w_i and below the
multinomial variance.
"""

from __future__ import annotations

from decimal import Decimal, getcontext

import numpy as np
import pytest

from modeshift import _kernels as kernels

SCHEMES = ("multinomial", "stratified", "systematic", "residual")
N_REPEATS = 20_000
# Uneven, no M w_i an integer for M in (10, 23), so every scheme has randomness to test.
WEIGHTS = np.array([0.013, 0.201, 0.057, 0.004, 0.309, 0.088, 0.121, 0.0, 0.166, 0.041])


def offspring_counts(scheme: str, weights: np.ndarray, n_samples: int, seed: int = 20240611) -> np.ndarray:
    rng = np.random.default_rng(seed)
    counts = np.empty((N_REPEATS, weights.shape[0]), dtype=np.int64)
    for r in range(N_REPEATS):
        counts[r] = np.bincount(kernels.resample(scheme, weights, rng, n_samples), minlength=weights.shape[0])
    return counts


@pytest.fixture(scope="module", params=[(s, m) for s in SCHEMES for m in (10, 23)], ids=lambda p: f"{p[0]}-M{p[1]}")
def counts(request):
    scheme, n_samples = request.param
    return scheme, n_samples, offspring_counts(scheme, WEIGHTS, n_samples)


# --------------------------------------------------------------------------- unbiasedness and variance


def test_mean_offspring_is_m_times_weight(counts):
    scheme, n_samples, c = counts
    assert (c.sum(axis=1) == n_samples).all()
    expected = n_samples * WEIGHTS
    standard_error = c.std(axis=0, ddof=1) / np.sqrt(N_REPEATS)
    np.testing.assert_array_less(np.abs(c.mean(axis=0) - expected), 5 * standard_error + 1e-12)


def test_zero_weight_particle_never_selected(counts):
    _, _, c = counts
    assert (c[:, WEIGHTS == 0.0] == 0).all()


def variance_and_error(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Empirical variance of each column and its standard error sqrt((m4 - var^2) / R)."""
    centred = c - c.mean(axis=0)
    variance = (centred**2).mean(axis=0)
    return variance, np.sqrt(((centred**4).mean(axis=0) - variance**2) / N_REPEATS)


def assert_variance_close(c: np.ndarray, expected_variance: np.ndarray) -> None:
    variance, standard_error = variance_and_error(c)
    np.testing.assert_array_less(np.abs(variance - expected_variance), 5 * standard_error + 1e-12)


def test_variances_match_their_closed_forms(counts):
    scheme, n_samples, c = counts
    expected = n_samples * WEIGHTS
    multinomial_variance = n_samples * WEIGHTS * (1 - WEIGHTS)
    if scheme == "multinomial":
        assert_variance_close(c, multinomial_variance)
    elif scheme == "systematic":
        assert (c >= np.floor(expected)).all() and (c <= np.ceil(expected)).all()
    elif scheme == "stratified":
        assert (np.abs(c - expected) < 2).all()
        variance, standard_error = variance_and_error(c)
        assert (variance <= multinomial_variance + 5 * standard_error + 1e-12).all()
    else:
        floors = np.floor(expected)
        n_random = n_samples - floors.sum()
        residuals = (expected - floors) / n_random
        assert (c >= floors).all() and (c <= floors + n_random).all()
        assert_variance_close(c, n_random * residuals * (1 - residuals))


# --------------------------------------------------------------------------- exact small cases


def test_systematic_by_hand():
    np.testing.assert_array_equal(kernels.systematic([0.5, 0.5], 0.25), [0, 1])
    # points 0.25/3, 1.25/3, 2.25/3
    np.testing.assert_array_equal(kernels.systematic([0.5, 0.5], 0.25, n_samples=3), [0, 0, 1])
    np.testing.assert_array_equal(kernels.systematic([0.2, 0.0, 0.8], 0.5, n_samples=5), [0, 2, 2, 2, 2])


def test_stratified_by_hand():
    # points (0 + 0.9)/2 = 0.45 and (1 + 0.1)/2 = 0.55 straddle the cumulative weight 0.5
    np.testing.assert_array_equal(kernels.stratified([0.5, 0.5], [0.9, 0.1]), [0, 1])
    np.testing.assert_array_equal(kernels.stratified([0.5, 0.5], [0.9, 0.9]), [0, 1])
    np.testing.assert_array_equal(kernels.stratified([0.6, 0.4], [0.1, 0.1, 0.9]), [0, 0, 1])


def test_multinomial_by_hand():
    # one uniform is its own order statistic
    np.testing.assert_array_equal(kernels.multinomial([0.25, 0.75], [0.2]), [0])
    np.testing.assert_array_equal(kernels.multinomial([0.25, 0.75], [0.3]), [1])
    np.testing.assert_array_equal(kernels.multinomial([0.0, 1.0, 0.0], np.zeros(4)), [1, 1, 1, 1])


def test_residual_by_hand():
    # M w = (2, 1.2, 0.8): copies (2, 1, 0), one draw from residuals (0, 0.2, 0.8)
    np.testing.assert_array_equal(kernels.residual([0.5, 0.3, 0.2], [0.1, 0.99, 0.99, 0.99]), [0, 0, 1, 1])
    np.testing.assert_array_equal(kernels.residual([0.5, 0.3, 0.2], [0.5, 0.0, 0.0, 0.0]), [0, 0, 1, 2])
    np.testing.assert_array_equal(kernels.residual([0.25, 0.75], [0.3, 0.3, 0.3, 0.3]), [0, 1, 1, 1])


@pytest.mark.parametrize("uniform", [0.0, np.nextafter(1.0, 0.0)])
def test_extreme_uniforms_skip_zero_weights(uniform):
    weights = np.array([0.0, 0.3, 0.0, 0.7, 0.0])
    for ancestors in (
        kernels.systematic(weights, uniform, n_samples=7),
        kernels.stratified(weights, np.full(7, uniform)),
        kernels.multinomial(weights, np.full(7, uniform)),
        kernels.residual(weights, np.full(7, uniform)),
    ):
        assert np.isin(ancestors, [1, 3]).all()


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("n_samples", [None, 1, 777, 2500])
def test_ancestors_sorted_and_in_range(scheme, n_samples):
    rng = np.random.default_rng(7)
    weights = rng.gamma(0.3, size=1000)
    weights /= weights.sum()
    ancestors = kernels.resample(scheme, weights, rng, n_samples)
    assert ancestors.dtype == np.int64
    assert ancestors.shape == (1000 if n_samples is None else n_samples,)
    assert (np.diff(ancestors) >= 0).all()
    assert ancestors.min() >= 0 and ancestors.max() < 1000
    assert (weights[ancestors] > 0).all()


def test_resample_matches_direct_calls():
    weights = WEIGHTS
    assert np.array_equal(
        kernels.resample("systematic", weights, np.random.default_rng(3)),
        kernels.systematic(weights, np.random.default_rng(3).random()),
    )
    for scheme in ("multinomial", "stratified", "residual"):
        direct = getattr(kernels, scheme)(weights, np.random.default_rng(3).random(10))
        assert np.array_equal(kernels.resample(scheme, weights, np.random.default_rng(3)), direct)
    with pytest.raises(ValueError, match="scheme must be one of"):
        kernels.resample("bootstrap", weights, np.random.default_rng(3))


# --------------------------------------------------------------------------- weights


def test_effective_sample_size():
    assert kernels.effective_sample_size(np.full(50, 1 / 50)) == pytest.approx(50)
    assert kernels.effective_sample_size(np.eye(50)[17]) == 1.0
    assert kernels.effective_sample_size([0.5, 0.25, 0.25]) == pytest.approx(1 / 0.375)


def test_normalise_log_weights_matches_high_precision():
    log_weights = np.random.default_rng(11).normal(scale=3.0, size=200)
    getcontext().prec = 50
    exps = [Decimal(float(lw)).exp() for lw in log_weights]
    total = sum(exps)
    weights, log_mean = kernels.normalise_log_weights(log_weights)
    assert log_mean == pytest.approx(float((total / len(exps)).ln()), rel=0, abs=1e-13)
    np.testing.assert_allclose(weights, [float(e / total) for e in exps], rtol=1e-13)
    assert weights.sum() == pytest.approx(1.0, abs=1e-14)


def test_normalise_log_weights_survives_huge_offsets():
    log_weights = np.random.default_rng(12).normal(size=100)
    weights, log_mean = kernels.normalise_log_weights(log_weights)
    shifted_weights, shifted_log_mean = kernels.normalise_log_weights(log_weights - 1e5)
    np.testing.assert_allclose(shifted_weights, weights, rtol=1e-9)
    assert shifted_log_mean == pytest.approx(log_mean - 1e5, rel=1e-15)
    with_zero = np.r_[log_weights - 1e5, -np.inf]
    zero_weights, _ = kernels.normalise_log_weights(with_zero)
    assert zero_weights[-1] == 0.0 and np.isfinite(zero_weights).all()


def test_normalise_log_weights_errors():
    with pytest.raises(ValueError, match="^all particles have zero weight"):
        kernels.normalise_log_weights(np.full(5, -np.inf))
    with pytest.raises(ValueError, match="^NaN log weight"):
        kernels.normalise_log_weights([0.0, np.nan, 1.0])
    with pytest.raises(ValueError, match="^NaN log weight"):
        kernels.normalise_log_weights([-np.inf, np.nan])
    with pytest.raises(ValueError, match="^infinite log weight"):
        kernels.normalise_log_weights([0.0, np.inf])


def test_particle_moments_equal_numpy():
    rng = np.random.default_rng(3)
    weights, particles = rng.dirichlet(np.ones(500)), rng.normal(2.0, 3.0, size=(500, 3))
    ess, mean, variance = kernels.particle_moments(weights, particles)
    np.testing.assert_allclose(ess, 1.0 / np.sum(weights**2), rtol=1e-12)
    np.testing.assert_allclose(mean, weights @ particles, rtol=1e-12)
    np.testing.assert_allclose(variance, weights @ (particles - weights @ particles) ** 2, rtol=1e-12)
