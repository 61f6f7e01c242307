"""The ziggurat normal sampler: the law of its draws, reproducibility, independence of blocks."""

import numba
import numpy as np
import pytest
from scipy import stats

from modeshift._kernels import standard_normal
from modeshift._kernels.ziggurat import _R


@pytest.fixture(scope="module")
def draws() -> np.ndarray:
    return standard_normal(np.random.default_rng(2026), 4_000_000)


def test_counts_in_bins_match_the_normal_law(draws):
    # bins at the layers' edges that matter most: the base strip's rectangle, its tail past R
    # and the first layers' wedges; chi-square at the 1e-3 level
    edges = np.array([0, 0.5, 1, 1.5, 2, 2.5, 3, 3.3, 3.449, _R, 3.8, 4.2, np.inf])
    observed = np.histogram(np.abs(draws), edges)[0]
    expected = np.diff(2 * stats.norm.cdf(edges) - 1) * len(draws)
    assert stats.chisquare(observed, expected).pvalue > 1e-3


def test_kolmogorov_smirnov_and_moments(draws):
    assert stats.kstest(draws, "norm").pvalue > 1e-3
    n = len(draws)
    assert abs(draws.mean()) < 4 / np.sqrt(n)
    assert abs(draws.var() - 1) < 4 * np.sqrt(2 / n)
    assert abs(stats.skew(draws)) < 4 * np.sqrt(6 / n)
    assert abs((draws > 0).mean() - 0.5) < 4 * 0.5 / np.sqrt(n)


def test_blocks_are_uncorrelated(draws):
    blocks = draws[: 1024 * 3000].reshape(3000, 1024)  # one stream per block of 1,024
    lag_one = np.corrcoef(blocks[:-1].ravel(), blocks[1:].ravel())[0, 1]
    assert abs(lag_one) < 4 / np.sqrt(blocks[1:].size)
    within = np.corrcoef(draws[:-1], draws[1:])[0, 1]
    assert abs(within) < 4 / np.sqrt(len(draws))


def test_reproducible_from_the_generator_and_the_same_on_any_number_of_threads():
    first = standard_normal(np.random.default_rng(7), (5000, 2))
    assert first.shape == (5000, 2)
    np.testing.assert_array_equal(first, standard_normal(np.random.default_rng(7), (5000, 2)))
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        np.testing.assert_array_equal(first, standard_normal(np.random.default_rng(7), (5000, 2)))
    finally:
        numba.set_num_threads(threads)
    rng = np.random.default_rng(7)
    assert not np.array_equal(standard_normal(rng, 10), standard_normal(rng, 10))  # the generator advances


@pytest.mark.parametrize("size", [0, 1, 1023, 1024, 1025, (3, 4)])
def test_sizes(size):
    out = standard_normal(np.random.default_rng(0), size)
    assert out.shape == np.empty(size).shape
    assert np.isfinite(out).all()
