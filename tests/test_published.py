"""Published results reproduced on real data shipped with the package."""

import numpy as np
import pytest

from modeshift import HMM
from modeshift.datasets import load_earthquakes, load_faithful


@pytest.fixture(scope="module")
def quakes() -> np.ndarray:
    return load_earthquakes()["count"].to_numpy()


def test_earthquake_data_matches_its_provenance(quakes):
    # Zucchini & MacDonald (2009), Table 1.1: mean 19.364, variance 51.573.
    assert len(quakes) == 107
    assert quakes.mean() == pytest.approx(19.364, abs=5e-4)
    assert quakes.var(ddof=1) == pytest.approx(51.573, abs=5e-4)


@pytest.mark.parametrize(
    ("n_states", "published"),
    [(2, -341.8787), (3, -328.5275)],  # Zucchini & MacDonald (2009), Poisson-HMMs for the earthquake counts
)
def test_poisson_hmm_earthquakes_log_likelihood(quakes, n_states, published):
    model = HMM(n_states, emission="poisson", n_restarts=5, tol=1e-8, n_iter=2000, random_state=1).fit(quakes)
    # The book's initial distribution is the stationary one; ours is free, so
    # the maximum can only be higher, and only slightly (one time step's worth).
    assert model.score(quakes) >= published - 1e-3
    assert model.score(quakes) == pytest.approx(published, abs=0.05)


def test_poisson_hmm_earthquakes_two_state_parameters(quakes):
    model = HMM(2, emission="poisson", n_restarts=5, tol=1e-8, n_iter=2000, random_state=1).fit(quakes)
    order = np.argsort(model.lambdas_[:, 0])
    # Published: lambda = (15.472, 26.125), Gamma = [[0.934, 0.066], [0.129, 0.871]];
    # the tolerance allows for the free initial distribution.
    np.testing.assert_allclose(model.lambdas_[order, 0], [15.472, 26.125], atol=0.3)
    np.testing.assert_allclose(model.transmat_[np.ix_(order, order)], [[0.934, 0.066], [0.129, 0.871]], atol=0.02)


def test_faithful_two_regimes():
    X = load_faithful()[["eruptions", "waiting"]].to_numpy()
    model = HMM(2, n_restarts=3, random_state=0).fit(X)
    durations = np.sort(model.means_[:, 0])
    assert durations[0] == pytest.approx(2.0, abs=0.2) and durations[1] == pytest.approx(4.3, abs=0.2)


def test_nile_data_matches_its_provenance():
    from modeshift.datasets import load_nile

    nile = load_nile()
    assert list(nile.columns) == ["year", "volume"]
    assert len(nile) == 100 and nile.year.iloc[0] == 1871 and nile.year.iloc[-1] == 1970
    assert nile.volume.iloc[0] == 1120  # Durbin & Koopman (2012), Fig. 2.1: the series starts at 1120


def test_filardo_tvtp_markov_switching_ar4():
    # Filardo (1994), JBES 12(3): MS-AR(4) of US industrial production growth whose transition
    # probabilities depend on the lagged leading indicator; E-views estimates as quoted in
    # statsmodels' test suite (TestFilardo), regime 0 there the expansion:
    # p(stay in expansion) = logistic(4.35941747 + 1.7702123 z), p(recession -> expansion) =
    # logistic(-1.6493936 + 0.9945672 z), means 0.517298 / -0.865888, sigma 0.6960 (log -0.362469),
    # phi 0.189474, 0.079344, 0.110944, 0.122251; log-likelihood -586.5718.
    from scipy.special import expit

    from modeshift import MarkovAutoregression
    from modeshift.datasets import load_filardo

    frame = load_filardo()
    assert len(frame) == 519 and frame["month"].iloc[0] == "1948-02" and frame["month"].iloc[-1] == "1991-04"
    y = frame["dlip"].to_numpy()[1:]
    z = np.c_[np.ones(len(y)), frame["dmdlleading"].to_numpy()[:-1]]
    model = MarkovAutoregression(n_states=2, order=4, switching_ar=False, random_state=0).fit(y, exog_tvtp=z)
    assert model.log_likelihood_ == pytest.approx(-586.5718, abs=5e-5)
    recession, expansion = 0, 1  # ours: regimes by ascending mean
    np.testing.assert_allclose(model.means_, [-0.865888, 0.517298], atol=2e-5)
    np.testing.assert_allclose(model.variances_, np.exp(-0.362469) ** 2, rtol=1e-5)
    np.testing.assert_allclose(model.ar_coef_[0], [0.189474, 0.079344, 0.110944, 0.122251], atol=2e-6)
    matrices = model.transition_matrices(z)
    np.testing.assert_allclose(matrices[:, expansion, expansion], expit(4.35941747 + 1.7702123 * z[:, 1]), atol=1e-5)
    np.testing.assert_allclose(matrices[:, recession, expansion], expit(-1.6493936 + 0.9945672 * z[:, 1]), atol=1e-5)
