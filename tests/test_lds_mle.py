"""LinearGaussianSSM maximum likelihood: the analytic score, and the quasi-Newton polish after EM."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from test_lds import _model

from modeshift import LinearGaussianSSM
from modeshift.data import as_sequences
from modeshift.datasets import load_nile
from modeshift.models import em, lds_mle


def _tiny_problem():
    """A model with inputs, two sequences and partly and wholly missing steps (also at a start)."""
    model = _model(input_dim=1)
    rng = np.random.default_rng(0)
    u = rng.normal(size=(30, 1))
    y, _ = model.sample(30, random_state=1, inputs=u)
    y[rng.random(y.shape) < 0.2] = np.nan
    y[0] = y[5] = np.nan  # wholly missing, at a start too
    y[20, :2] = np.nan
    seqs = model._sequences(as_sequences([y[:20], y[20:]]), None, [u[:20], u[20:]], 3)
    return model, seqs, model._check_parameters()


def _assert_score_matches_finite_differences(model, seqs, params):
    _, gradient = model._score(seqs, params)
    for key in ("A", "B", "C", "D", "m0", "Q", "R", "P0"):
        want = np.zeros_like(params[key])
        for index in np.ndindex(params[key].shape):
            step = np.zeros_like(params[key])
            step[index] = 1e-6
            if key in ("Q", "R", "P0"):
                step = np.maximum(step, step.T)  # symmetric: dl = 2 G_ij off the diagonal
            upper = model._score(seqs, {**params, key: params[key] + step})[0]
            lower = model._score(seqs, {**params, key: params[key] - step})[0]
            want[index] = (upper - lower) / 2e-6
        got = gradient[key] * (2 - np.eye(len(gradient[key]))) if key in ("Q", "R", "P0") else gradient[key]
        np.testing.assert_allclose(got, want, atol=1e-6 * max(1.0, np.abs(want).max()), err_msg=key)


def test_score_matches_finite_differences_of_the_log_likelihood():
    _assert_score_matches_finite_differences(*_tiny_problem())


def test_score_is_exact_with_singular_covariances():
    """Q, R and P0 of rank 1 (and a zero observation noise on one sensor): the smoother's r and N
    give the gradient also in the directions where a covariance is 0, where P^-1 does not exist."""
    model, seqs, params = _tiny_problem()
    params["Q"] = np.outer([0.3, -0.2], [0.3, -0.2])
    params["R"] = np.diag([0.0, 0.3, 0.25])
    params["P0"] = np.outer([1.0, 0.5], [1.0, 0.5])
    _assert_score_matches_finite_differences(model, seqs, params)


@pytest.mark.parametrize("diagonal", [frozenset(), frozenset({"R"})])
def test_gradient_in_the_free_vector_matches_finite_differences(diagonal):
    model, seqs, params = _tiny_problem()
    if diagonal:
        params["R"] = np.diag(np.diag(params["R"]))
    layout = lds_mle.Parameterisation(params, ["A", "Q", "C", "R", "P0", "D"], diagonal)
    x = layout.pack(params)
    np.testing.assert_allclose(layout.unpack(x, params)["Q"], params["Q"], rtol=1e-12)

    def value(x):
        return model._score(seqs, layout.unpack(x, params))

    got = layout.chain(x, value(x)[1])
    steps = 1e-6 * np.eye(len(x))
    want = np.array([(value(x + h)[0] - value(x - h)[0]) / 2e-6 for h in steps])
    np.testing.assert_allclose(got, want, atol=1e-6 * np.abs(want).max())


def test_nile_local_level_reaches_the_published_mle_with_defaults():
    """Durbin & Koopman (2012, sec. 2.10): 15099 (noise) and 1469.1 (level)."""
    y = load_nile()["volume"].to_numpy(dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("error", em.ConvergenceWarning)
        model = LinearGaussianSSM.local_level().fit(y)
    assert model.converged_
    noise, level = model.observation_covariance_[0, 0], model.transition_covariance_[0, 0]
    np.testing.assert_allclose([noise, level], [15099.0, 1469.1], rtol=1e-4)
    np.testing.assert_array_equal(model.dynamics_matrix_, [[1.0]])  # held fixed
    np.testing.assert_array_equal(model.initial_state_covariance_, [[0.0]])  # ignored: the level is diffuse
    assert model.log_likelihood_ == pytest.approx(model.score(y), rel=1e-12)
    assert model.log_likelihood_ > LinearGaussianSSM.local_level(method="em", n_iter=2000, tol=1e-6).fit(y).score(y)


def test_nile_mle_is_statsmodels_exact_diffuse_maximum():
    """statsmodels' exact-diffuse local level has the same maximiser: its BFGS started at ours stays
    there, while its default fit stops short (15067.6 / 1484.8, 8e-5 lower). Both report the
    diffuse log-likelihood (the first observation counts -log(2 pi F_inf) / 2, F_inf = 1):
    -633.46456 (with the old approximate prior N(0, 1e10) ours was -644.97755)."""
    sm = pytest.importorskip("statsmodels.api")
    y = load_nile()["volume"].to_numpy(dtype=float)
    model = LinearGaussianSSM.local_level().fit(y)
    ours = np.array([model.observation_covariance_[0, 0], model.transition_covariance_[0, 0]])
    exact = sm.tsa.UnobservedComponents(y, "llevel", use_exact_diffuse=True)
    default_fit = exact.fit(disp=False)
    assert exact.loglike(ours) > default_fit.llf + 5e-5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels' own warnings
        polished = exact.fit(start_params=ours, method="bfgs", gtol=1e-10, maxiter=1000, disp=False)
    np.testing.assert_allclose(ours, polished.params, rtol=1e-6)
    assert model.log_likelihood_ == pytest.approx(polished.llf, abs=5e-6)
    approximate = LinearGaussianSSM.local_level(diffuse_variance=1e10).fit(y)
    diffuse = -0.5 * np.log(1e10 + ours[0]) - 0.5 * y[0] ** 2 / (1e10 + ours[0])
    assert approximate.log_likelihood_ == pytest.approx(polished.llf + diffuse, abs=5e-5)


def test_white_noise_reaches_the_zero_level_variance_with_defaults():
    """White noise fit as a local level: the level variance's MLE is 0 (on the boundary), the noise
    variance then the sample variance with the level integrated out, sum (y - mean)^2 / (n - 1)."""
    y = np.random.default_rng(0).normal(size=200)
    with warnings.catch_warnings():
        warnings.simplefilter("error", em.ConvergenceWarning)
        model = LinearGaussianSSM.local_level().fit(y)
    assert model.converged_
    assert model.transition_covariance_[0, 0] < 1e-10
    assert model.observation_covariance_[0, 0] == pytest.approx(y.var(ddof=1), rel=1e-6)


def test_unemployment_reaches_the_zero_noise_variance_with_defaults():
    """The US unemployment rate (statsmodels' macrodata) as a local level: the irregular variance's
    MLE is 0; statsmodels finds level variance 0.118215 (ours is a little higher in its likelihood)."""
    sm = pytest.importorskip("statsmodels.api")
    y = sm.datasets.macrodata.load_pandas().data["unemp"].to_numpy(dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("error", em.ConvergenceWarning)
        model = LinearGaussianSSM.local_level().fit(y)
    assert model.converged_
    assert model.observation_covariance_[0, 0] < 1e-12
    assert model.transition_covariance_[0, 0] == pytest.approx(0.118218, rel=1e-5)
    exact = sm.tsa.UnobservedComponents(y, "llevel", use_exact_diffuse=True)
    ours = np.array([model.observation_covariance_[0, 0], model.transition_covariance_[0, 0]])
    assert exact.loglike(ours) >= exact.fit(disp=False).llf - 1e-9


def test_polish_beats_em_keeps_fixed_and_diagonal_and_warns_at_its_cap():
    true = _model()
    y, _ = true.sample(400, random_state=5)
    held = ("observation_matrix_", "initial_state_mean_", "initial_state_covariance_")
    fit = {"n_iter": 20, "fixed": held, "diagonal_observation_cov": True}

    def make(**options):
        model = _model(**fit, **options)
        model.observation_covariance_ = np.diag(np.diag(model.observation_covariance_))
        return model

    start = make()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", em.ConvergenceWarning)
        by_em = make(method="em").fit(y)
        by_mle = make().fit(y)
    assert by_mle.history_ == by_em.history_  # the same EM, then the polish
    assert by_mle.score(y) > by_em.score(y)
    for name in held:
        np.testing.assert_array_equal(getattr(by_mle, name), getattr(start, name))
    R = by_mle.observation_covariance_
    np.testing.assert_array_equal(R, np.diag(np.diag(R)))
    with pytest.warns(em.ConvergenceWarning, match="n_iter_polish=1"):
        capped = make(n_iter_polish=1).fit(y)
    assert not capped.converged_
    with pytest.raises(ValueError, match="method"):
        LinearGaussianSSM(method="newton").fit(y)


def test_standard_errors_from_the_observed_information():
    """Nile: statsmodels' (numerical-Hessian) standard errors at the same estimate. White noise: the
    level variance is on the boundary (NaN), the noise variance's is the textbook sqrt(2 / (n - 1)) R
    (the level integrated out leaves n - 1 degrees of freedom)."""
    sm = pytest.importorskip("statsmodels.api")
    y = load_nile()["volume"].to_numpy(dtype=float)
    model = LinearGaussianSSM.local_level().fit(y)
    errors = model.standard_errors(y)
    assert set(errors) == {"transition_covariance_", "observation_covariance_"}  # A, C, m0, P0 are fixed
    ours = np.array([model.observation_covariance_[0, 0], model.transition_covariance_[0, 0]])
    exact = sm.tsa.UnobservedComponents(y, "llevel", use_exact_diffuse=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = exact.fit(start_params=ours, method="bfgs", gtol=1e-10, disp=False, cov_type="approx")
    got = [errors["observation_covariance_"][0, 0], errors["transition_covariance_"][0, 0]]
    np.testing.assert_allclose(got, reference.bse, rtol=1e-4)

    noise = np.random.default_rng(0).normal(size=200)
    flat = LinearGaussianSSM.local_level().fit(noise)
    errors = flat.standard_errors(noise)
    assert np.isnan(errors["transition_covariance_"][0, 0])
    R = flat.observation_covariance_[0, 0]
    assert errors["observation_covariance_"][0, 0] == pytest.approx(np.sqrt(2 / 199) * R, rel=1e-4)
