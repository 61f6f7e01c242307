"""The fused step of a Gaussian chain's streaming filter against numpy and scipy, term by term."""

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from modeshift._kernels.streaming import gaussian_chain_step


def _chain(rng, k=4, d=3):
    matrix = rng.dirichlet(np.ones(k), size=k)
    means = rng.normal(0.0, 2.0, (k, d))
    factors = rng.normal(size=(k, d, d))
    covariances = factors @ factors.transpose(0, 2, 1) + 0.5 * np.eye(d)
    return rng.dirichlet(np.ones(k)), matrix, means, covariances


def _brute_force(law, first, matrix, means, covariances, y):
    seen = ~np.isnan(y)
    predicted = law if first else law @ matrix
    if not seen.any():
        return predicted, 0.0
    densities = np.array(
        [multivariate_normal(m[seen], c[np.ix_(seen, seen)]).pdf(y[seen]) for m, c in zip(means, covariances)]
    )
    joint = predicted * densities
    return joint / joint.sum(), float(np.log(joint.sum()))


@pytest.mark.parametrize("first", [True, False])
@pytest.mark.parametrize("missing", [[], [1], [0, 2], [0, 1, 2]])
def test_the_step_is_predict_then_bayes(first, missing):
    rng = np.random.default_rng(len(missing) + 10 * first)
    law, matrix, means, covariances = _chain(rng)
    y = rng.normal(0.0, 2.0, 3)
    y[missing] = np.nan
    filtered = np.empty(4)
    log_lik = gaussian_chain_step(law, first, matrix, means, covariances, y, filtered)
    expected, expected_log_lik = _brute_force(law, first, matrix, means, covariances, y)
    np.testing.assert_allclose(filtered, expected, rtol=1e-12, atol=1e-15)
    assert log_lik == pytest.approx(expected_log_lik, rel=1e-12, abs=1e-12)


def test_far_observations_do_not_underflow():
    """y a thousand standard deviations from every mode: densities e^-500000, the law still normalised."""
    law, matrix, means, covariances = _chain(np.random.default_rng(1))
    filtered = np.empty(4)
    log_lik = gaussian_chain_step(law, False, matrix, means, covariances, np.full(3, 1e3), filtered)
    assert np.isfinite(log_lik) and log_lik < -1e4 and filtered.sum() == pytest.approx(1.0)


def test_failures_are_flagged_for_the_checked_path():
    law, matrix, means, covariances = _chain(np.random.default_rng(2))
    filtered = np.empty(4)
    assert np.isnan(gaussian_chain_step(law, True, matrix, means, covariances, np.array([0.0, np.inf, 0.0]), filtered))
    singular = covariances.copy()
    singular[2] = 0.0
    assert np.isnan(gaussian_chain_step(law, True, matrix, means, singular, np.zeros(3), filtered))
    impossible = np.array([1.0, 0.0, 0.0, 0.0])  # the only mode reachable cannot be left, and ...
    stuck = np.eye(4)
    far = means.copy()
    far[0] = 1e6  # ... is a million away from y: its density underflows to 0 next to the others
    assert gaussian_chain_step(impossible, False, stuck, far, covariances, np.zeros(3), filtered) == -np.inf
