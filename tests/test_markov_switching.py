"""Markov-switching regression and autoregression against statsmodels, published results and brute force."""

import itertools
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from modeshift import MarkovAutoregression, MarkovRegression, NotFittedError, load
from modeshift.datasets import load_fedfunds, load_filardo, load_hamilton_gnp
from modeshift.models.base import Forecast
from modeshift.models.em import ConvergenceWarning, ObjectiveDecreaseWarning

sm = pytest.importorskip("statsmodels.api")

# Hamilton (1989) AR(4), E-views estimates as quoted in statsmodels' test suite
# (tsa/regime_switching/tests/test_markov_autoregression.py, TestHamiltonAR4): p[0->0], p[1->0],
# const[0], const[1], sigma2, ar.L1..L4; log-likelihood; standard errors (sigma2's is on another scale).
HAMILTON_PARAMS = np.r_[0.754673, 0.095915, -0.358811, 1.163516, np.exp(-0.262658) ** 2, 0.013486, -0.057521,
                        -0.246983, -0.212923]  # fmt: skip
HAMILTON_LOGLIKE = -181.26339
HAMILTON_BSE = np.r_[0.0965189, 0.0377362, 0.2645396, 0.0745187, np.nan, 0.1199942, 0.137663, 0.1069103, 0.1105311]
# Stata's mswitch manual, as quoted in statsmodels' test_markov_regression.py
FEDFUNDS_PARAMS = np.r_[0.9820939, 0.0503587, 3.70877, 9.556793, 2.107562**2]  # TestFedFundsConst
FEDFUNDS_LOGLIKE = -508.63592
TAYLOR_PARAMS = np.r_[0.7279288, 0.2114578, 0.6554954, -0.0944924, 0.8314458, 0.9292574, 0.1355425, 0.0343072,
                      -0.0273928, 0.2125275, 0.5764495**2]  # fmt: skip  # TestFedFundsConstL1Exog
TAYLOR_LOGLIKE = -229.25614


# ------------------------------------------------------------------ fixtures and helpers
@pytest.fixture(scope="module")
def gnp() -> np.ndarray:
    return load_hamilton_gnp()["rgnp_growth"].to_numpy()


@pytest.fixture(scope="module")
def fedfunds():
    return load_fedfunds()


def taylor_rule(frame):
    rate, gap, inflation = (frame[c].to_numpy() for c in ("fedfunds", "ogap", "inf"))
    return rate[4:], np.c_[rate[3:-1], gap[4:], inflation[4:]]


def sm_fit(model, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels' own optimiser and convergence chatter
        return model.fit(**kwargs)


def relabelled(model, order):
    """A copy of ``model`` with its regimes renumbered: new regime i is old regime order[i]."""
    copy = type(model)(**model.get_params())
    if "transition_coef_" in model.__dict__:  # time-varying: the reference regime changes
        coef = model.transition_coef_
        logits = np.concatenate([coef, np.zeros_like(coef[:, :1])], axis=1)[np.ix_(order, order)]
        copy.transition_coef_ = logits[:, :-1] - logits[:, -1:]
    else:
        copy.transmat_ = model.transmat_[np.ix_(order, order)]
    for name in ("trend_", "exog_coef_", "variances_", "ar_coef_"):
        if name in model.__dict__:
            setattr(copy, name, np.asarray(getattr(model, name))[list(order)])
    return copy


def aligned(model, reference_params):
    """Our parameters in statsmodels' order, under the regime labelling closest to ``reference_params``."""
    candidates = [relabelled(model, order) for order in itertools.permutations(range(model.n_states))]
    values = [c.summary()["estimate"].to_numpy() for c in candidates]
    best = int(np.argmin([np.abs(v - reference_params).max() for v in values]))
    return candidates[best], values[best]


def set_from_statsmodels(model, sm_model, params):
    """Hand-set our parameters from a statsmodels parameter vector (same labelling)."""
    k = model.n_states
    names = list(sm_model.param_names)
    value = dict(zip(names, params))
    transmat = sm_model.regime_transition_matrix(params)[..., 0].T  # statsmodels: [to, from]
    model.transmat_ = transmat

    def per_regime(name):
        return np.array([value[f"{name}[{i}]"] if f"{name}[{i}]" in value else value[name] for i in range(k)])

    model.trend_ = per_regime("const")[:, None]
    exog = [n.split("[")[0] for n in names if n.startswith("x")]
    exog = list(dict.fromkeys(exog))
    model.exog_coef_ = np.column_stack([per_regime(n) for n in exog]) if exog else np.empty((k, 0))
    model.variances_ = per_regime("sigma2")
    if isinstance(model, MarkovAutoregression):
        model.ar_coef_ = np.column_stack([per_regime(f"ar.L{j + 1}") for j in range(model.order)])
    return model


# ------------------------------------------------------------------------- fits, once
@pytest.fixture(scope="module")
def hamilton(gnp):
    ours = MarkovAutoregression(n_states=2, order=4, switching_ar=False, random_state=0).fit(gnp)
    theirs = sm_fit(sm.tsa.MarkovAutoregression(gnp, k_regimes=2, order=4, switching_ar=False))
    return ours, theirs


@pytest.fixture(scope="module")
def fedfunds_fits(fedfunds):
    rate = fedfunds["fedfunds"].to_numpy()
    endog, exog = taylor_rule(fedfunds)
    constant = sm_fit(sm.tsa.MarkovRegression(rate, k_regimes=2))
    # statsmodels' default fit stops at a local maximum (-505.70) here; started from its own
    # constant-variance estimates it reaches the global one, which our fit finds from its own starts.
    variance_model = sm.tsa.MarkovRegression(rate, k_regimes=2, switching_variance=True)
    return {
        "constant": (
            MarkovRegression(n_states=2, random_state=0).fit(rate),
            constant,
            {"y": rate},
        ),
        "switching variance": (
            MarkovRegression(n_states=2, switching_variance=True, random_state=0).fit(rate),
            sm_fit(variance_model, start_params=np.r_[constant.params, constant.params[-1]]),
            {"y": rate},
        ),
        "taylor rule": (
            MarkovRegression(n_states=2, random_state=0).fit(endog, exog=exog),
            sm_fit(sm.tsa.MarkovRegression(endog, k_regimes=2, exog=exog)),
            {"y": endog, "exog": exog},
        ),
    }


# ------------------------------------------------------------------------------- 1. Hamilton
def test_hamilton_gnp_log_likelihood_and_parameters(hamilton):
    ours, theirs = hamilton
    assert ours.converged_ and ours.gradient_norm_ < 1e-5
    assert ours.log_likelihood_ == pytest.approx(theirs.llf, abs=1e-6)
    assert ours.log_likelihood_ == pytest.approx(HAMILTON_LOGLIKE, abs=1e-5)
    relabelled_model, params = aligned(ours, theirs.params)
    assert relabelled_model.summary().index.tolist() == theirs.model.param_names
    np.testing.assert_allclose(params, theirs.params, atol=1e-4)
    np.testing.assert_allclose(params, HAMILTON_PARAMS, atol=1e-5)
    # ours: recession regime first (ascending intercept), as in the published labelling
    np.testing.assert_allclose(ours.summary()["estimate"].to_numpy(), HAMILTON_PARAMS, atol=1e-5)
    errors = ours.summary()["std_err"].to_numpy()
    keep = ~np.isnan(HAMILTON_BSE)
    np.testing.assert_allclose(errors[keep], HAMILTON_BSE[keep], atol=1e-5)


def test_hamilton_gnp_learned_attributes(hamilton, gnp):
    ours, theirs = hamilton
    np.testing.assert_allclose(ours.transmat_.sum(axis=1), 1.0)
    assert ours.transmat_[1, 0] == pytest.approx(theirs.params[1], abs=1e-4)  # p[1->0] = P(S_t=0 | S_{t-1}=1)
    np.testing.assert_allclose(ours.startprob_ @ ours.transmat_, ours.startprob_)
    np.testing.assert_allclose(ours.means_, ours.trend_[:, 0])
    assert ours.ar_coef_.shape == (2, 4) and np.all(ours.ar_coef_[0] == ours.ar_coef_[1])
    assert ours.exog_coef_.shape == (2, 0) and ours.variances_[0] == ours.variances_[1]
    np.testing.assert_allclose(ours.dwell_times_, 1.0 / (1.0 - np.diag(ours.transmat_)))
    np.testing.assert_allclose(ours.dwell_times_, theirs.expected_durations, rtol=1e-4)
    assert ours.smoothed_probabilities_.shape == ours.filtered_probabilities_.shape == (131, 2)
    assert ours.aic() == pytest.approx(theirs.aic, abs=1e-4)
    assert ours.bic() == pytest.approx(theirs.bic, abs=1e-4)
    assert ours.aic(gnp) == pytest.approx(ours.aic(), abs=1e-9) and ours.bic(gnp) == pytest.approx(ours.bic(), abs=1e-9)
    np.testing.assert_allclose(ours.smoothed_probabilities_, theirs.smoothed_marginal_probabilities, atol=1e-4)
    np.testing.assert_allclose(ours.filtered_probabilities_, theirs.filtered_marginal_probabilities, atol=1e-4)


def test_hamilton_published_filtered_and_smoothed_probabilities(gnp):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the module registers pytest marks of its own
        from statsmodels.tsa.regime_switching.tests.test_markov_autoregression import (
            hamilton_ar4_filtered,
            hamilton_ar4_smoothed,
        )

    sm_model = sm.tsa.MarkovAutoregression(gnp, k_regimes=2, order=4, switching_ar=False)
    model = set_from_statsmodels(MarkovAutoregression(order=4, switching_ar=False), sm_model, HAMILTON_PARAMS)
    assert model.score(gnp) == pytest.approx(HAMILTON_LOGLIKE, abs=1e-5)
    np.testing.assert_allclose(model.filter_proba(gnp)[:, 1], hamilton_ar4_filtered, atol=1e-5)
    np.testing.assert_allclose(model.predict_proba(gnp)[:, 1], hamilton_ar4_smoothed, atol=1e-5)


def test_hamilton_switching_ar2_matches_stata(gnp):
    # Stata's mswitch manual (as quoted in statsmodels' TestHamiltonAR2Switch): switching phi, order 2.
    # statsmodels' own fit stops lower (-179.38684); ours reaches Stata's maximum.
    published = np.r_[0.3812383, 0.3564492, -0.0055216, 1.195482, 0.6677098**2, 0.3710719, 0.4621503, 0.7002937,
                      -0.3206652]  # fmt: skip
    errors = np.r_[0.1424841, 0.0994742, 0.2057086, 0.1225987, 0.1754383, 0.1652473, 0.187409, 0.1295937]
    model = MarkovAutoregression(n_states=2, order=2, random_state=0).fit(gnp)
    assert model.log_likelihood_ == pytest.approx(-179.32354, abs=1e-5)
    summary = model.summary()
    np.testing.assert_allclose(summary["estimate"], published, atol=2e-6)
    np.testing.assert_allclose(summary["std_err"].drop("sigma2"), errors, atol=2e-6)
    import statsmodels.tsa.regime_switching.tests as sm_tests

    stata = pd.read_csv(Path(sm_tests.__file__).parent / "results" / "results_predict_rgnp.csv").iloc[3:]
    np.testing.assert_allclose(model.smoothed_probabilities_[:, 0], stata["switchar2_sm1"], atol=1e-6)


# ------------------------------------------------------------------------------ 2. fed funds
@pytest.mark.parametrize("case", ["constant", "switching variance", "taylor rule"])
def test_fedfunds_matches_statsmodels(fedfunds_fits, case):
    ours, theirs, _ = fedfunds_fits[case]
    assert ours.converged_ and ours.gradient_norm_ < 1e-5
    assert ours.log_likelihood_ == pytest.approx(theirs.llf, abs=1e-6)
    relabelled_model, params = aligned(ours, theirs.params)
    assert relabelled_model.summary().index.tolist() == theirs.model.param_names
    np.testing.assert_allclose(params, theirs.params, atol=1e-4)


def test_fedfunds_published_stata_estimates(fedfunds_fits):
    ours, _, _ = fedfunds_fits["constant"]
    assert ours.log_likelihood_ == pytest.approx(FEDFUNDS_LOGLIKE, abs=1e-5)
    np.testing.assert_allclose(aligned(ours, FEDFUNDS_PARAMS)[1], FEDFUNDS_PARAMS, rtol=1e-5, atol=1e-6)
    ours, _, _ = fedfunds_fits["taylor rule"]
    assert ours.log_likelihood_ == pytest.approx(TAYLOR_LOGLIKE, abs=1e-5)
    np.testing.assert_allclose(aligned(ours, TAYLOR_PARAMS)[1], TAYLOR_PARAMS, atol=1e-5)


def test_switching_variance_finds_a_higher_maximum_than_statsmodels_default(fedfunds, fedfunds_fits):
    ours, _, _ = fedfunds_fits["switching variance"]
    default = sm_fit(sm.tsa.MarkovRegression(fedfunds["fedfunds"].to_numpy(), k_regimes=2, switching_variance=True))
    assert ours.log_likelihood_ > default.llf + 9.0  # -496.146 against statsmodels' local -505.702


# ------------------------------------------------------------------------- 3. brute force
def path_factors(paths, y, regressors, transmat, coef, ar, variances):
    """The step-t factor of p(path, y) for each regime path (rows of ``paths``, as long as ``y`` or
    longer), the chain starting from its stationary distribution, y's first p values conditioned on.
    ``transmat`` (K, K), or (n_paths_steps, K, K) time-varying: entry t moves into step t, entry 0's
    stationary distribution starts the chain."""
    p, n, m = ar.shape[1], len(y), paths.shape[1]
    matrices = transmat if transmat.ndim == 3 else np.broadcast_to(transmat, (m, *transmat.shape))
    eigenvalues, eigenvectors = np.linalg.eig(matrices[0].T)
    start = np.real(eigenvectors[:, np.argmin(np.abs(eigenvalues - 1))])
    start /= start.sum()
    factors = np.ones((len(paths), m))
    for index, path in enumerate(paths):
        factors[index, 0] = start[path[0]]
        factors[index, 1:] = matrices[np.arange(1, m), path[:-1], path[1:]]
        deviation = y - np.einsum("tc,tc->t", regressors, coef[path[:n]])
        for t in range(p, n):
            residual = deviation[t] - ar[path[t]] @ deviation[t - p : t][::-1]
            variance = variances[path[t]]
            factors[index, t] *= np.exp(-0.5 * residual**2 / variance) / np.sqrt(2 * np.pi * variance)
    return factors


def brute_force(y, regressors, transmat, coef, ar, variances):
    """Enumerate every regime path S_0..S_n-1.

    Returns log p(y_p.. | y_..p-1), the smoothed and filtered p(S_t | .) for t >= p, the
    largest log p(y, path) and the path that attains it (from step p on).
    """
    k, p, n = transmat.shape[-1], ar.shape[1], len(y)
    paths = np.array(list(itertools.product(range(k), repeat=n)))
    prefix = np.cumprod(path_factors(paths, y, regressors, transmat, coef, ar, variances), axis=1)
    joint = prefix[:, -1]  # p(S_0..t, y_p..t) in prefix[:, t]: every prefix recurs equally often
    smoothed = np.array([[joint[paths[:, t] == i].sum() for i in range(k)] for t in range(p, n)])
    filtered = np.array([[prefix[paths[:, t] == i, t].sum() for i in range(k)] for t in range(p, n)])
    best = int(np.argmax(joint))
    return (
        np.log(joint.sum()),
        smoothed / joint.sum(),
        filtered / filtered.sum(axis=1, keepdims=True),
        np.log(joint[best]),
        paths[best, p:],
    )


def brute_force_forecast(y, regressors, future, transmat, coef, ar, variances):
    """Predictive means, variances and regime probabilities of the len(future) values after y, by
    enumerating the regime paths of the data and the future; given a path the future values are
    Gaussian, affine in the future shocks."""
    k, p, n, horizon = transmat.shape[-1], ar.shape[1], len(y), len(future)
    paths = np.array(list(itertools.product(range(k), repeat=n + horizon)))
    weights = np.prod(path_factors(paths, y, regressors, transmat, coef, ar, variances), axis=1)
    everything = np.r_[regressors, future]
    means, second = np.zeros(horizon), np.zeros(horizon)
    modes = np.zeros((horizon, k))
    for path, weight in zip(paths, weights / weights.sum()):
        # deviation z_t = y_t - x_t'beta as (constant, coefficients of the future shocks)
        constants = list(y - np.einsum("tc,tc->t", regressors, coef[path[:n]]))
        loadings = [np.zeros(horizon)] * n
        for i in range(horizon):
            regime = path[n + i]
            lags = range(1, p + 1)
            constants.append(sum(ar[regime, j - 1] * constants[-j] for j in lags))
            loading = sum((ar[regime, j - 1] * loadings[-j] for j in lags), np.zeros(horizon))
            loading[i] += np.sqrt(variances[regime])
            loadings.append(loading)
            mean = everything[n + i] @ coef[regime] + constants[-1]
            means[i] += weight * mean
            second[i] += weight * (mean**2 + loading @ loading)
            modes[i, regime] += weight
    return means, second - means**2, modes


def hand_set(order, transmat=((0.8, 0.2), (0.35, 0.65))):
    """A two-regime model with an exogenous regressor, everything switching, set by hand."""
    if order:
        model = MarkovAutoregression(n_states=2, order=order, switching_exog=True, switching_variance=True)
        model.ar_coef_ = np.array([[0.5, 0.2], [-0.3, 0.1]])[:, :order]
    else:
        model = MarkovRegression(n_states=2, switching_variance=True)
    model.transmat_ = np.array(transmat)
    model.trend_ = np.array([[-0.5], [1.0]])
    model.exog_coef_ = np.array([[0.3], [-0.7]])
    model.variances_ = np.array([0.6, 1.7])
    return model


def regression_parameters(model):
    ar = model.ar_coef_ if isinstance(model, MarkovAutoregression) else np.empty((2, 0))
    return model.transmat_, np.c_[model.trend_, model.exog_coef_], ar, model.variances_


@pytest.mark.parametrize("order", [0, 1, 2])
def test_inference_equals_brute_force_enumeration(order):
    rng = np.random.default_rng(3)
    n = 6
    y, exog = rng.normal(size=n), rng.normal(size=(n, 1))
    model = hand_set(order)
    log_lik, smoothed, filtered, best, path = brute_force(y, np.c_[np.ones(n), exog], *regression_parameters(model))
    assert model.score(y, exog=exog) == pytest.approx(log_lik, abs=1e-10)
    np.testing.assert_allclose(model.predict_proba(y, exog=exog), smoothed, atol=1e-10)
    np.testing.assert_allclose(model.filter_proba(y, exog=exog), filtered, atol=1e-10)
    # predict is the most probable path (Viterbi), not the most probable regime at each step
    np.testing.assert_array_equal(model.predict(y, exog=exog), path)
    log_prob, decoded = model.decode(y, exog=exog)
    assert log_prob == pytest.approx(best, abs=1e-10)
    np.testing.assert_array_equal(decoded, path)


def test_viterbi_path_differs_from_the_marginal_argmax():
    # a series where the most probable path and the most probable regime per step disagree
    rng = np.random.default_rng(0)
    model = hand_set(1, transmat=((0.55, 0.45), (0.45, 0.55)))
    for _ in range(200):
        y, exog = rng.normal(size=7), rng.normal(size=(7, 1))
        path = model.predict(y, exog=exog)
        if not np.array_equal(path, model.predict_proba(y, exog=exog).argmax(axis=1)):
            break
    else:
        pytest.fail("no series found where the Viterbi path and the marginal argmax differ")
    regressors = np.c_[np.ones(7), exog]
    np.testing.assert_array_equal(path, brute_force(y, regressors, *regression_parameters(model))[4])


def random_model(model, n_exog, rng):
    """Hand-set random parameters, equal across regimes where a coefficient does not switch."""
    k = model.n_states
    params = model.get_params()

    def tied(values, switching):
        flags = [switching] * values.shape[1] if isinstance(switching, bool) else switching
        for column, switches in enumerate(flags):
            if not switches:
                values[:, column] = values[0, column]
        return values

    model.transmat_ = rng.dirichlet(np.full(k, 3.0), size=k)
    n_trend = len(params["trend"].replace("n", ""))
    model.trend_ = tied(rng.normal(scale=0.5, size=(k, n_trend)), params["switching_trend"])
    model.exog_coef_ = tied(rng.normal(size=(k, n_exog)), params["switching_exog"])
    variances = rng.uniform(0.5, 2.0, size=k)
    model.variances_ = variances if params["switching_variance"] else np.full(k, variances[0])
    if isinstance(model, MarkovAutoregression):
        model.ar_coef_ = tied(rng.uniform(-0.4, 0.4, size=(k, model.order)), params["switching_ar"])
    return model


@pytest.mark.parametrize(
    "make",
    [
        lambda: MarkovRegression(n_states=3, trend="ct", switching_exog=[True, False], switching_variance=True),
        lambda: MarkovRegression(n_states=2, trend="n", switching_variance=True),
        lambda: MarkovAutoregression(n_states=2, order=1, trend="t", switching_variance=True, switching_exog=True),
        lambda: MarkovAutoregression(
            n_states=3, order=2, trend="ct", switching_ar=[True, False], switching_exog=[False, True]
        ),
    ],
)
def test_likelihood_and_probabilities_equal_statsmodels_across_options(make):
    # statsmodels 0.15 takes sigma2 of S_{t-1} instead of S_t in MarkovAutoregression with
    # switching_variance and order >= 2, so that combination is proven by brute force instead.
    rng = np.random.default_rng(11)
    n = 80
    y, exog = rng.normal(size=n).cumsum() * 0.2 + rng.normal(size=n), rng.normal(size=(n, 2))
    model = random_model(make(), 2, rng)
    params = model.get_params()
    options = {name: params[name] for name in ("trend", "switching_trend", "switching_exog", "switching_variance")}
    if isinstance(model, MarkovAutoregression):
        sm_model = sm.tsa.MarkovAutoregression(
            y, k_regimes=model.n_states, order=model.order, exog=exog, switching_ar=params["switching_ar"], **options
        )
    else:
        sm_model = sm.tsa.MarkovRegression(y, k_regimes=model.n_states, exog=exog, **options)
    vector = model.summary()["estimate"].to_numpy()
    assert model.score(y, exog=exog) == pytest.approx(sm_model.loglike(vector), abs=1e-9)
    result = sm_model.smooth(vector)
    np.testing.assert_allclose(model.predict_proba(y, exog=exog), result.smoothed_marginal_probabilities, atol=1e-10)
    np.testing.assert_allclose(model.filter_proba(y, exog=exog), result.filtered_marginal_probabilities, atol=1e-10)


def test_single_regime_is_conditional_least_squares(gnp):
    # With K = 1 and a constant, the conditional MLE of an AR(2) is OLS on the lags.
    model = MarkovAutoregression(n_states=1, order=2, random_state=0).fit(gnp)
    design = np.c_[np.ones(len(gnp) - 2), gnp[1:-1], gnp[:-2]]
    beta, residuals = np.linalg.lstsq(design, gnp[2:], rcond=None)[:2]
    variance = residuals[0] / len(design)
    np.testing.assert_allclose(model.ar_coef_[0], beta[1:], atol=1e-7)
    assert model.means_[0] == pytest.approx(beta[0] / (1 - beta[1:].sum()), abs=1e-7)
    assert model.variances_[0] == pytest.approx(variance, rel=1e-7)
    assert model.log_likelihood_ == pytest.approx(-0.5 * len(design) * (np.log(2 * np.pi * variance) + 1), abs=1e-8)


def test_exact_gradient_matches_finite_differences(gnp):
    model = MarkovAutoregression(n_states=2, order=2, switching_variance=True)
    engine = model._engine(0)
    data = model._series(gnp, None, None)[0]
    unpack = engine.layout.unpack
    free = np.random.default_rng(0).normal(scale=0.5, size=engine.layout.n_parameters)
    value, gradient = engine.value_and_gradient(free, data)
    steps = np.eye(len(free)) * 1e-6
    numeric = [
        (engine.log_likelihood(unpack(free + h), data) - engine.log_likelihood(unpack(free - h), data)) / 2e-6
        for h in steps
    ]
    assert value == pytest.approx(engine.log_likelihood(unpack(free), data), abs=1e-10)
    np.testing.assert_allclose(gradient, numeric, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- 4. probabilities, durations
@pytest.mark.parametrize("case", ["hamilton", "constant", "switching variance", "taylor rule"])
def test_probabilities_equal_statsmodels_at_the_same_parameters(case, gnp, hamilton, fedfunds_fits):
    if case == "hamilton":
        ours, theirs = hamilton
        arguments = {"y": gnp}
    else:
        ours, theirs, arguments = fedfunds_fits[case]
    model = set_from_statsmodels(type(ours)(**ours.get_params()), theirs.model, theirs.params)
    assert model.score(**arguments) == pytest.approx(theirs.llf, abs=1e-8)
    np.testing.assert_allclose(model.predict_proba(**arguments), theirs.smoothed_marginal_probabilities, atol=1e-6)
    np.testing.assert_allclose(model.filter_proba(**arguments), theirs.filtered_marginal_probabilities, atol=1e-6)
    np.testing.assert_allclose(model.dwell_times_, theirs.expected_durations, rtol=1e-10)
    np.testing.assert_allclose(model.startprob_, theirs.model.initial_probabilities(theirs.params), atol=1e-12)


# ------------------------------------------------------------------ 5. the estimator contract
def test_em_never_lowers_the_log_likelihood(fedfunds):
    # without the guarded transition step (taking the normalised counts whatever they do to the
    # stationary start's term) three of these restarts lower the log-likelihood by up to 5e-4
    seen = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", ObjectiveDecreaseWarning)
        model = MarkovRegression(
            n_states=2, switching_variance=True, random_state=0, callback=lambda *a: seen.append(a)
        )
        model.fit(fedfunds["fedfunds"].to_numpy())
    restarts = np.split(np.array(seen), np.flatnonzero(np.diff([i for i, _ in seen]) < 0) + 1)
    assert len(restarts) == model.n_restarts == 10
    for objectives in restarts:
        assert np.all(np.diff(objectives[:, 1]) > -1e-9)
    assert model.history_ == list(restarts[np.argmax([r[-1, 1] for r in restarts])][:, 1])
    assert model.n_iter_ == len(model.history_) and model.converged_
    assert model.history_[-1] <= model.log_likelihood_ + 1e-9  # the polish only climbs


def test_fit_starts_afresh_and_warm_start_keeps_the_estimate(fedfunds):
    rate = fedfunds["fedfunds"].to_numpy()
    fresh = MarkovRegression(n_states=2, n_restarts=3, random_state=0).fit(rate)
    refit = MarkovRegression(n_states=2, n_restarts=3, random_state=0, switching_variance=True).fit(rate[::-1])
    refit.set_params(switching_variance=False).fit(rate)
    for name in ("transmat_", "trend_", "exog_coef_", "variances_", "smoothed_probabilities_"):
        np.testing.assert_array_equal(getattr(refit, name), getattr(fresh, name))
    assert refit.history_ == fresh.history_ and refit.log_likelihood_ == fresh.log_likelihood_
    # a changed hyper-parameter takes effect
    assert refit.set_params(switching_variance=True).fit(rate).log_likelihood_ > fresh.log_likelihood_ + 9
    warm = MarkovRegression(n_states=2, n_restarts=1, random_state=0, warm_start=True)
    warm.fit(rate[:200])
    first = warm.log_likelihood_
    assert warm.fit(rate[:200]).history_[0] == pytest.approx(first, abs=1e-9)  # EM starts at the estimate
    assert warm.log_likelihood_ == pytest.approx(first, abs=1e-9) and warm.n_iter_ <= 2


def test_parameters_set_by_hand_start_the_first_fit(hamilton, gnp):
    ours, _ = hamilton
    model = relabelled(ours, [1, 0]).set_params(n_restarts=1)
    start = model.score(gnp)
    model.fit(gnp)
    assert model.history_[0] == pytest.approx(start, abs=1e-9)
    assert model.log_likelihood_ == pytest.approx(ours.log_likelihood_, abs=1e-8)
    np.testing.assert_allclose(model.transmat_, ours.transmat_, atol=1e-6)  # ordered again: recession first


def test_n_iter_zero_only_initialises(gnp):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = MarkovAutoregression(n_states=2, order=1, n_iter=0, random_state=0).fit(gnp)
    assert model.history_ == [] and model.n_iter_ == 0 and not model.converged_
    assert model.log_likelihood_ == pytest.approx(model.score(gnp), abs=1e-9)
    fitted = MarkovAutoregression(n_states=2, order=1, random_state=0).fit(gnp)
    assert fitted.log_likelihood_ > model.log_likelihood_


def test_a_capped_fit_warns(gnp):
    with pytest.warns(ConvergenceWarning, match="cap of n_iter=2 EM iterations"):
        model = MarkovAutoregression(n_states=2, order=2, n_iter=2, n_restarts=1, n_iter_polish=0).fit(gnp)
    assert not model.converged_ and model.n_iter_ == 2
    with pytest.warns(ConvergenceWarning) as record:
        model = MarkovAutoregression(n_states=2, order=2, n_iter=2, n_restarts=1, n_iter_polish=1).fit(gnp)
    messages = [str(w.message) for w in record]
    assert len(messages) == 2 and "stopped at its cap of n_iter=2 EM iterations" in messages[0]
    assert "stopped its quasi-Newton polish at its cap of n_iter_polish=1 iterations" in messages[1]
    assert not model.converged_ and model.gradient_norm_ > 1e-5


def test_deprecated_names():
    with pytest.warns(DeprecationWarning, match=r"MarkovRegression\(n_iter_em=...\) is renamed n_iter"):
        model = MarkovRegression(n_iter_em=7)
    assert model.n_iter == 7 and "n_iter_em" not in model.get_params()
    with pytest.warns(DeprecationWarning, match=r"max_iter=...\) is renamed n_iter_polish"):
        model = MarkovAutoregression(max_iter=9)
    assert model.n_iter_polish == 9 and "max_iter" not in model.get_params()
    model = hand_set(1, transmat=[[0.9, 0.1], [0.25, 0.75]])
    for old in ("expected_durations_", "expected_durations"):
        with pytest.warns(DeprecationWarning, match=f"MarkovAutoregression.{old} is renamed dwell_times_"):
            np.testing.assert_allclose(getattr(model, old), [10.0, 4.0])
    with pytest.raises(TypeError, match="unexpected keyword argument 'lags'"):
        MarkovAutoregression(lags=2)


def test_clone_and_invalid_hyper_parameters(gnp):
    sklearn_base = pytest.importorskip("sklearn.base")
    model = MarkovAutoregression(order=2, switching_ar=[True, False], n_iter=5, random_state=3)
    clone = sklearn_base.clone(model)
    assert clone.get_params() == model.get_params() and clone.switching_ar == [True, False]
    for bad, message in [
        ({"trend": "quadratic"}, "trend must be one of"),
        ({"order": 0}, "order must be an integer >= 1"),
        ({"n_states": "auto"}, "n_states must be an integer >= 1"),
        ({"switching_ar": [True]}, "switching_ar must be a bool or a sequence of 2 bools"),
        ({"switching_ar": "yes"}, "switching_ar must be a bool or a sequence of bools"),
        ({"switching_variance": 1}, "switching_variance must be True or False"),
        ({"n_iter_polish": -1}, "n_iter_polish must be an integer >= 0"),
        ({"tol": float("nan")}, "tol must be a number"),
    ]:
        with pytest.raises(ValueError, match=message):
            MarkovAutoregression(**{"order": 2, **bad}).fit(gnp)


# --------------------------------------------------------------- 6. sample, forecast, describe
def test_sample_shapes_and_reproducibility(hamilton):
    model = hamilton[0]
    y, regimes = model.sample(50, random_state=1)
    assert y.shape == (50, 1) and regimes.shape == (50,) and set(np.unique(regimes)) <= {0, 1}
    again, same = model.sample(50, random_state=1)
    np.testing.assert_array_equal(again, y)
    np.testing.assert_array_equal(same, regimes)
    assert not np.array_equal(model.sample(50, random_state=2)[0], y)
    ys, paths = model.sample(20, n_sequences=3, random_state=np.random.default_rng(0))
    assert isinstance(ys, list) and [a.shape for a in ys] == [(20, 1)] * 3 and [p.shape for p in paths] == [(20,)] * 3
    long_regimes = model.sample(20_000, random_state=0)[1]
    np.testing.assert_allclose(np.bincount(long_regimes) / 20_000, model.startprob_, atol=0.03)
    with pytest.raises(ValueError, match="n_steps must be an integer >= 1"):
        model.sample(0)


def test_sample_regressors_and_exog():
    model = MarkovRegression(n_states=1, trend="ct")
    model.transmat_, model.trend_, model.variances_ = np.ones((1, 1)), np.array([[1.0, 2.0]]), np.array([1e-12])
    np.testing.assert_allclose(model.sample(4, random_state=0)[0][:, 0], 1.0 + 2.0 * np.arange(1, 5), atol=1e-5)
    model = hand_set(1)
    exog = np.arange(6.0)
    y, _ = model.sample(6, random_state=0, exog=exog)
    assert y.shape == (6, 1)
    with pytest.raises(ValueError, match=r"1 exog column\(s\): pass exog \(6, 1\)"):
        model.sample(6)
    with pytest.raises(ValueError, match=r"exog must have shape \(6, 1\)"):
        model.sample(6, exog=np.ones((5, 1)))
    model.exog_coef_ = np.empty((2, 0))
    with pytest.raises(ValueError, match="exog was given but this MarkovAutoregression has no exog columns"):
        model.sample(6, exog=exog)


def test_fit_recovers_a_simulated_model():
    truth = MarkovAutoregression(n_states=2, order=1, switching_ar=False)
    truth.transmat_ = np.array([[0.95, 0.05], [0.1, 0.9]])
    truth.trend_ = np.array([[-1.0], [2.0]])
    truth.ar_coef_ = np.full((2, 1), 0.5)
    truth.variances_ = np.array([0.5, 0.5])
    y, regimes = truth.sample(2000, random_state=0)
    model = MarkovAutoregression(n_states=2, order=1, switching_ar=False, n_restarts=2, random_state=0).fit(y)
    np.testing.assert_allclose(model.means_, truth.means_, atol=0.15)
    np.testing.assert_allclose(model.transmat_, truth.transmat_, atol=0.03)
    np.testing.assert_allclose(model.ar_coef_, truth.ar_coef_, atol=0.05)
    assert np.mean(model.predict(y) == regimes[1:]) > 0.95


@pytest.mark.parametrize("order", [0, 1, 2])
def test_forecast_equals_brute_force_enumeration(order):
    rng = np.random.default_rng(4)
    n, horizon = 6, 3
    y, exog, future = rng.normal(size=n), rng.normal(size=(n, 1)), rng.normal(size=(horizon, 1))
    model = hand_set(order)
    result = model.forecast(y, horizon, exog=exog, future_exog=future)
    means, variances, modes = brute_force_forecast(
        y, np.c_[np.ones(n), exog], np.c_[np.ones(horizon), future], *regression_parameters(model)
    )
    assert isinstance(result, Forecast)
    assert result.means.shape == (horizon, 1) and result.covariances.shape == (horizon, 1, 1)
    np.testing.assert_allclose(result.means[:, 0], means, atol=1e-10)
    np.testing.assert_allclose(result.covariances[:, 0, 0], variances, atol=1e-10)
    np.testing.assert_allclose(result.mode_probabilities, modes, atol=1e-12)


def test_forecast_time_trend_goes_on_counting():
    model = MarkovRegression(n_states=2, trend="ct", switching_variance=True)
    model.transmat_ = np.array([[0.7, 0.3], [0.2, 0.8]])
    model.trend_ = np.array([[0.0, 1.0], [5.0, -1.0]])
    model.variances_ = np.array([1.0, 2.0])
    y = np.array([1.0, 2.0, 3.5, 4.0])
    result = model.forecast(y, 2)
    filtered = model.filter_proba(y)[-1]
    modes = np.array([filtered @ model.transmat_, filtered @ model.transmat_ @ model.transmat_])
    expected = modes @ np.array([[5.0, 6.0], [0.0, -1.0]])  # regime means at t = 5, 6
    np.testing.assert_allclose(result.mode_probabilities, modes, atol=1e-12)
    np.testing.assert_allclose(result.means[:, 0], np.diag(expected), atol=1e-12)


@pytest.mark.parametrize("order", [0, 2])
def test_forecast_is_calibrated_on_samples(order):
    """Monte Carlo of ``sample``: for series drawn from the model, the errors of the forecasts of
    their last values have mean 0 and variance the forecast's, and the regimes the forecast's
    probabilities."""
    model = hand_set(order, transmat=((0.9, 0.1), (0.15, 0.85)))
    model.exog_coef_ = np.zeros((2, 0))
    n, horizon, n_series = 40, 3, 3000
    ys, regimes = model.sample(n + horizon, n_sequences=n_series, random_state=0)
    errors, variances, modes, truth = [], [], [], []
    forecasts = model.forecast([y[:n] for y in ys], horizon).per_sequence()  # one call: each its own sequence's
    for y, path, result in zip(ys, regimes, forecasts):
        errors.append(y[n:, 0] - result.means[:, 0])
        variances.append(result.covariances[:, 0, 0])
        modes.append(result.mode_probabilities[:, 1])
        truth.append(path[n:])
    errors, variances = np.array(errors), np.array(variances)
    np.testing.assert_allclose(errors.mean(axis=0) / np.sqrt(variances.mean(axis=0)), 0.0, atol=4 / np.sqrt(n_series))
    np.testing.assert_allclose((errors**2 / variances).mean(axis=0), 1.0, atol=0.1)
    np.testing.assert_allclose(np.mean(modes, axis=0), np.mean(truth, axis=0), atol=4 * 0.5 / np.sqrt(n_series))


def test_forecast_errors():
    model = hand_set(1)
    y, exog = np.arange(5.0), np.ones(5)
    with pytest.raises(ValueError, match="pass future_exog"):
        model.forecast(y, 2, exog=exog)
    with pytest.raises(ValueError, match="horizon must be an integer >= 1"):
        model.forecast(y, 0, exog=exog, future_exog=np.ones(2))
    model.exog_coef_ = np.empty((2, 0))
    with pytest.raises(ValueError, match="future_exog was given but"):
        model.forecast(y, 2, future_exog=np.ones(2))


def test_describe_and_segment(hamilton, gnp):
    model = hamilton[0]
    table = model.describe()
    assert table.index.name == "mode" and list(table.index) == [0, 1]
    assert list(table.columns) == [
        "occupancy", "dwell_time", "to_0", "to_1", "const", "sigma2", "ar.L1", "ar.L2", "ar.L3", "ar.L4"
    ]  # fmt: skip
    np.testing.assert_allclose(table["dwell_time"], model.dwell_times_)
    np.testing.assert_allclose(table[["to_0", "to_1"]], model.transmat_)
    np.testing.assert_allclose(table["const"], model.means_)
    np.testing.assert_allclose(table["occupancy"], model.startprob_)
    segments = model.segment(gnp)
    path = model.predict(gnp)
    assert segments["start"].iloc[0] == 4 and segments["end"].iloc[-1] == len(gnp)
    for row in segments.itertuples():
        assert np.all(path[row.start - 4 : row.end - 4] == row.mode)
        assert row.probability == pytest.approx(model.predict_proba(gnp)[row.start - 4 : row.end - 4, row.mode].mean())
    assert model.n_parameters == 9


# ---------------------------------------------------------------- 7. persistence and errors
def test_save_load_round_trip(tmp_path, hamilton, fedfunds_fits, gnp):
    for model, arguments in [
        (hamilton[0], {"y": gnp}),
        (fedfunds_fits["taylor rule"][0], fedfunds_fits["taylor rule"][2]),
    ]:
        path = tmp_path / f"{type(model).__name__}.msz"
        model.save(path)
        restored = load(path)
        assert type(restored) is type(model) and restored.get_params() == model.get_params()
        for name in (
            "transmat_",
            "trend_",
            "exog_coef_",
            "variances_",
            "smoothed_probabilities_",
            "filtered_probabilities_",
            "standard_errors_",
        ):
            np.testing.assert_array_equal(getattr(restored, name), getattr(model, name))
        for name in ("log_likelihood_", "converged_", "history_", "n_iter_", "exog_names_"):
            assert getattr(restored, name) == getattr(model, name)
        assert restored.score(**arguments) == model.score(**arguments)
        for method in ("predict_proba", "filter_proba", "predict"):
            np.testing.assert_array_equal(getattr(restored, method)(**arguments), getattr(model, method)(**arguments))
        future = None if "exog" not in arguments else arguments["exog"][-2:]
        np.testing.assert_array_equal(
            restored.forecast(**arguments, horizon=2, future_exog=future).covariances,
            model.forecast(**arguments, horizon=2, future_exog=future).covariances,
        )
        assert restored.summary().equals(model.summary()) and restored.describe().equals(model.describe())


def test_input_errors(gnp):
    model = MarkovAutoregression(order=4, switching_ar=False)
    with pytest.raises(NotFittedError, match="transmat_"):
        model.score(gnp)
    with pytest.raises(NotFittedError, match=r"not fitted, or fitted over a cluster\): pass the series"):
        hand_set(1).aic()
    broken = gnp.copy()
    broken[7] = np.nan
    with pytest.raises(ValueError, match="time step 7: missing value"):
        model.fit(broken)
    with pytest.raises(ValueError, match="needs at least 5"):
        model.fit(gnp[:4])
    with pytest.raises(ValueError, match="sequence 1 has 3 time step"):
        model.fit([gnp, gnp[:3]])  # every sequence needs more steps than the order
    with pytest.raises(ValueError, match=r"inputs for 10 time steps, but the data have 135"):
        MarkovRegression().fit(gnp, exog=np.ones((10, 1)))
    exog = np.ones((135, 2))
    exog[3, 1] = np.inf
    with pytest.raises(ValueError, match="time step 3: non-finite input"):
        MarkovRegression().fit(gnp, exog=exog)


def test_exog_columns_must_match_the_fit(fedfunds_fits):
    model, _, arguments = fedfunds_fits["taylor rule"]
    with pytest.raises(ValueError, match=r"fitted with 3 exog column\(s\), got 2"):
        model.score(arguments["y"], exog=arguments["exog"][:, :2])
    with pytest.raises(ValueError, match=r"fitted with 3 exog column\(s\), got 0"):
        model.predict(arguments["y"])
    frame = pd.DataFrame(arguments["exog"], columns=["lagged", "gap", "inflation"])
    refit = MarkovRegression(n_states=2, random_state=0).fit(arguments["y"], exog=frame)
    assert refit.exog_names_ == ["lagged", "gap", "inflation"] and "gap[1]" in refit.summary().index
    assert refit.log_likelihood_ == pytest.approx(model.log_likelihood_, abs=1e-8)


# --------------------------------------------------------- 5. time-varying transition probabilities
# Filardo (1994) MS-AR(4) with the lagged leading indicator in the transition logits, E-views
# estimates as quoted in statsmodels' TestFilardo: p[0->0].tvtp0, p[1->0].tvtp0, p[0->0].tvtp1,
# p[1->0].tvtp1, const[0], const[1], sigma2, ar.L1..L4. statsmodels skips its own fit test there.
FILARDO_PARAMS = np.r_[4.35941747, -1.6493936, 1.7702123, 0.9945672, 0.517298, -0.865888, np.exp(-0.362469) ** 2,
                       0.189474, 0.079344, 0.110944, 0.122251]  # fmt: skip
FILARDO_LOGLIKE = -586.5718
# Hamilton's MS-AR(1), switching phi, the NBER recession dummy in the logits (TestHamiltonAR1SwitchTVTP):
# E-views' estimates and log-likelihood, and the higher one statsmodels' fit reaches (the logit separates).
HAMILTON_TVTP_PARAMS = np.r_[6.564923, 7.846371, -8.064123, -15.37636, 1.027190, -0.719760, np.exp(-0.217003) ** 2,
                             0.161489, 0.022536]  # fmt: skip
HAMILTON_TVTP_LOGLIKE, HAMILTON_TVTP_LOGLIKE_FIT = -163.914049, -161.786477


@pytest.fixture(scope="module")
def filardo():
    frame = load_filardo()
    y = frame["dlip"].to_numpy()[1:]
    return y, np.c_[np.ones(len(y)), frame["dmdlleading"].to_numpy()[:-1]]


@pytest.fixture(scope="module")
def filardo_fit(filardo):
    y, z = filardo
    return MarkovAutoregression(n_states=2, order=4, switching_ar=False, random_state=0).fit(y, exog_tvtp=z)


def set_tvtp_from_statsmodels(model, sm_model, params):
    """Hand-set our parameters, time-varying transitions included, from a statsmodels vector."""
    set_from_statsmodels(model, sm_model, params)
    del model.transmat_
    k, n_tvtp = model.n_states, sm_model.k_tvtp
    coef = np.asarray(params[: k * (k - 1) * n_tvtp]).reshape(k - 1, n_tvtp, k)  # target, covariate, source
    model.transition_coef_ = np.transpose(coef, (2, 0, 1))
    return model


def test_filardo_tvtp_fit_reaches_the_published_maximum(filardo_fit, filardo):
    y, z = filardo
    ours = filardo_fit
    sm_model = sm.tsa.MarkovAutoregression(y, k_regimes=2, order=4, switching_ar=False, exog_tvtp=z)
    assert ours.converged_ and ours.gradient_norm_ < 1e-5
    assert ours.log_likelihood_ == pytest.approx(FILARDO_LOGLIKE, abs=5e-5)
    assert ours.log_likelihood_ >= sm_model.loglike(FILARDO_PARAMS) - 1e-8
    relabelled_model, params = aligned(ours, FILARDO_PARAMS)
    assert relabelled_model.summary().index.tolist() == sm_model.param_names
    np.testing.assert_allclose(params, FILARDO_PARAMS, atol=5e-5)
    assert relabelled_model.score(y, exog_tvtp=z) == pytest.approx(ours.log_likelihood_, abs=1e-9)
    assert ours.transition_coef_.shape == (2, 1, 2) and "transmat_" not in ours.__dict__
    assert np.isfinite(ours.standard_errors_).all()


def test_filardo_probabilities_equal_statsmodels_and_eviews(filardo):
    y, z = filardo
    sm_model = sm.tsa.MarkovAutoregression(y, k_regimes=2, order=4, switching_ar=False, exog_tvtp=z)
    result = sm_model.smooth(FILARDO_PARAMS)
    model = set_tvtp_from_statsmodels(MarkovAutoregression(order=4, switching_ar=False), sm_model, FILARDO_PARAMS)
    assert model.score(y, exog_tvtp=z) == pytest.approx(result.llf, abs=1e-9)
    assert model.score(y, exog_tvtp=z) == pytest.approx(FILARDO_LOGLIKE, abs=5e-5)
    np.testing.assert_allclose(model.filter_proba(y, exog_tvtp=z), result.filtered_marginal_probabilities, atol=1e-10)
    np.testing.assert_allclose(model.predict_proba(y, exog_tvtp=z), result.smoothed_marginal_probabilities, atol=1e-10)
    matrices = model.transition_matrices(z)
    np.testing.assert_allclose(matrices, np.transpose(sm_model.regime_transition_matrix(FILARDO_PARAMS), (2, 1, 0)))
    import statsmodels.tsa.regime_switching.tests as sm_tests

    eviews = pd.read_csv(Path(sm_tests.__file__).parent / "results" / "mar_filardo.csv").iloc[5:]
    np.testing.assert_allclose(model.filter_proba(y, exog_tvtp=z)[:, 0], eviews["filtered_0"], atol=1e-5)
    np.testing.assert_allclose(model.predict_proba(y, exog_tvtp=z)[:, 0], eviews["smoothed_0"], atol=1e-5)
    np.testing.assert_allclose(1 / (1 - matrices[4:, [0, 1], [0, 1]]), eviews[["duration0", "duration1"]], rtol=1e-5)


def test_hamilton_ar1_tvtp_matches_eviews_and_statsmodels(gnp):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the module registers pytest marks of its own
        from statsmodels.tsa.regime_switching.tests.test_markov_autoregression import (
            hamilton_ar1_switch_tvtp_filtered,
            hamilton_ar1_switch_tvtp_smoothed,
        )

    z = np.c_[np.ones(len(gnp)), load_hamilton_gnp()["nber_recession"].to_numpy()]
    sm_model = sm.tsa.MarkovAutoregression(gnp, k_regimes=2, order=1, exog_tvtp=z)
    model = set_tvtp_from_statsmodels(MarkovAutoregression(order=1), sm_model, HAMILTON_TVTP_PARAMS)
    assert model.score(gnp, exog_tvtp=z) == pytest.approx(HAMILTON_TVTP_LOGLIKE, abs=1e-5)
    np.testing.assert_allclose(model.filter_proba(gnp, exog_tvtp=z)[:, 0], hamilton_ar1_switch_tvtp_filtered, atol=1e-5)
    np.testing.assert_allclose(
        model.predict_proba(gnp, exog_tvtp=z)[:, 0], hamilton_ar1_switch_tvtp_smoothed, atol=1e-5
    )
    # the recession dummy separates the regimes' moves: the likelihood rises towards a supremum
    fitted = MarkovAutoregression(order=1, random_state=0).fit(gnp, exog_tvtp=z)
    assert fitted.log_likelihood_ == pytest.approx(HAMILTON_TVTP_LOGLIKE_FIT, abs=1e-5)


def random_tvtp(model, n_exog, n_tvtp, rng):
    """Random hand-set parameters with time-varying transitions on ``n_tvtp`` covariates."""
    random_model(model, n_exog, rng)
    del model.transmat_
    k = model.n_states
    model.transition_coef_ = rng.normal(size=(k, k - 1, n_tvtp)) + np.eye(k)[:, : k - 1, None] * [
        2.0,
        *[0] * (n_tvtp - 1),
    ]
    return model


@pytest.mark.parametrize(
    "make",
    [
        lambda: MarkovRegression(n_states=3, trend="c", switching_variance=True),
        lambda: MarkovAutoregression(n_states=2, order=2, switching_exog=True),
        lambda: MarkovAutoregression(n_states=3, order=1, trend="ct", switching_ar=False),
    ],
)
def test_tvtp_likelihood_and_probabilities_equal_statsmodels(make):
    rng = np.random.default_rng(12)
    n = 80
    y, exog = rng.normal(size=n).cumsum() * 0.2 + rng.normal(size=n), rng.normal(size=(n, 2))
    z = np.c_[np.ones(n), rng.normal(size=(n, 2))]
    model = random_tvtp(make(), 2, 3, rng)
    params = model.get_params()
    options = {name: params[name] for name in ("trend", "switching_trend", "switching_exog", "switching_variance")}
    if isinstance(model, MarkovAutoregression):
        sm_model = sm.tsa.MarkovAutoregression(
            y, k_regimes=model.n_states, order=model.order, exog=exog, exog_tvtp=z, switching_ar=params["switching_ar"],
            **options,
        )  # fmt: skip
    else:
        sm_model = sm.tsa.MarkovRegression(y, k_regimes=model.n_states, exog=exog, exog_tvtp=z, **options)
    n_transition = model.n_states * (model.n_states - 1) * 3
    assert model.summary().index[:n_transition].tolist() == sm_model.param_names[:n_transition]
    vector = model.summary()["estimate"].to_numpy()
    assert model.score(y, exog=exog, exog_tvtp=z) == pytest.approx(sm_model.loglike(vector), abs=1e-9)
    result = sm_model.smooth(vector)
    np.testing.assert_allclose(
        model.predict_proba(y, exog=exog, exog_tvtp=z), result.smoothed_marginal_probabilities, atol=1e-10
    )
    np.testing.assert_allclose(
        model.filter_proba(y, exog=exog, exog_tvtp=z), result.filtered_marginal_probabilities, atol=1e-10
    )


def hand_set_tvtp(order):
    model = hand_set(order)
    del model.transmat_
    model.transition_coef_ = np.array([[[1.2, 0.8]], [[-0.4, -1.5]]])  # (K, K-1, C): a constant and one covariate
    return model


@pytest.mark.parametrize("order", [0, 1, 2])
def test_tvtp_inference_equals_brute_force_enumeration(order):
    rng = np.random.default_rng(5)
    n = 6
    y, exog, z = rng.normal(size=n), rng.normal(size=(n, 1)), np.c_[np.ones(n), rng.normal(size=n)]
    model = hand_set_tvtp(order)
    matrices = model.transition_matrices(z)
    to_first = 1 / (1 + np.exp(-z @ model.transition_coef_[:, 0].T))  # (n, K): p(S_t = 0 | S_t-1 = i, z_t)
    np.testing.assert_allclose(matrices, np.stack([to_first, 1 - to_first], axis=2))
    coef, ar, variances = regression_parameters_tvtp(model)
    log_lik, smoothed, filtered, best, path = brute_force(y, np.c_[np.ones(n), exog], matrices, coef, ar, variances)
    assert model.score(y, exog=exog, exog_tvtp=z) == pytest.approx(log_lik, abs=1e-10)
    np.testing.assert_allclose(model.predict_proba(y, exog=exog, exog_tvtp=z), smoothed, atol=1e-10)
    np.testing.assert_allclose(model.filter_proba(y, exog=exog, exog_tvtp=z), filtered, atol=1e-10)
    log_prob, decoded = model.decode(y, exog=exog, exog_tvtp=z)
    assert log_prob == pytest.approx(best, abs=1e-10)
    np.testing.assert_array_equal(decoded, path)


def regression_parameters_tvtp(model):
    ar = model.ar_coef_ if isinstance(model, MarkovAutoregression) else np.empty((2, 0))
    return np.c_[model.trend_, model.exog_coef_], ar, model.variances_


@pytest.mark.parametrize("order", [0, 2])
def test_tvtp_forecast_equals_brute_force_enumeration(order):
    rng = np.random.default_rng(6)
    n, horizon = 5, 3
    y, exog, future = rng.normal(size=n), rng.normal(size=(n, 1)), rng.normal(size=(horizon, 1))
    z = np.c_[np.ones(n + horizon), rng.normal(size=n + horizon)]
    model = hand_set_tvtp(order)
    result = model.forecast(y, horizon, exog=exog, future_exog=future, exog_tvtp=z[:n], future_exog_tvtp=z[n:])
    means, variances, modes = brute_force_forecast(
        y, np.c_[np.ones(n), exog], np.c_[np.ones(horizon), future], model.transition_matrices(z),
        *regression_parameters_tvtp(model),
    )  # fmt: skip
    np.testing.assert_allclose(result.means[:, 0], means, atol=1e-10)
    np.testing.assert_allclose(result.covariances[:, 0, 0], variances, atol=1e-10)
    np.testing.assert_allclose(result.mode_probabilities, modes, atol=1e-12)


def test_tvtp_gradient_matches_finite_differences(gnp):
    model = MarkovAutoregression(n_states=3, order=1, switching_variance=True)
    engine = model._engine(0, 2)
    z = np.c_[np.ones(len(gnp)), np.sin(np.arange(len(gnp)) / 5.0)]
    data = model._series(gnp, None, None, exog_tvtp=z)[0]
    unpack = engine.layout.unpack
    free = np.random.default_rng(1).normal(scale=0.5, size=engine.layout.n_parameters)
    value, gradient = engine.value_and_gradient(free, data)
    steps = np.eye(len(free)) * 1e-6
    numeric = [
        (engine.log_likelihood(unpack(free + h), data) - engine.log_likelihood(unpack(free - h), data)) / 2e-6
        for h in steps
    ]
    assert value == pytest.approx(engine.log_likelihood(unpack(free), data), abs=1e-10)
    np.testing.assert_allclose(gradient, numeric, rtol=1e-5, atol=1e-5)


def test_tvtp_em_never_lowers_the_log_likelihood(filardo):
    y, z = filardo
    with warnings.catch_warnings():
        warnings.simplefilter("error", ObjectiveDecreaseWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = MarkovAutoregression(
            order=4, switching_ar=False, n_restarts=1, n_iter=40, tol=0.0, n_iter_polish=0, random_state=0
        ).fit(y, exog_tvtp=z)
    assert np.all(np.diff(model.history_) >= -1e-9) and model.history_[-1] > model.history_[0]


def test_tvtp_with_a_constant_covariate_is_the_constant_chain(fedfunds_fits):
    # statsmodels' test_exog_tvtp: z_t = 1 and logits log(P[i, j] / P[i, K-1]) give the same model
    constant, _, arguments = fedfunds_fits["constant"]
    varying = MarkovRegression(n_states=2)
    for name in ("trend_", "exog_coef_", "variances_"):
        setattr(varying, name, getattr(constant, name))
    varying.transition_coef_ = np.log(constant.transmat_[:, :1] / constant.transmat_[:, 1:])[:, :, None]
    ones = np.ones((len(arguments["y"]), 1))
    assert varying.score(**arguments, exog_tvtp=ones) == pytest.approx(constant.score(**arguments), abs=1e-10)
    np.testing.assert_allclose(varying.predict_proba(**arguments, exog_tvtp=ones), constant.predict_proba(**arguments))
    refit = MarkovRegression(n_states=2, random_state=0).fit(**arguments, exog_tvtp=ones)
    assert refit.log_likelihood_ == pytest.approx(constant.log_likelihood_, abs=1e-7)


def test_tvtp_sample_errors_and_persistence(tmp_path, filardo_fit, filardo):
    y, z = filardo
    model = filardo_fit
    simulated, regimes = model.sample(len(z), random_state=0, exog_tvtp=z)
    assert simulated.shape == (len(z), 1) and regimes.shape == (len(z),)
    again = model.sample(len(z), random_state=0, exog_tvtp=z)
    np.testing.assert_array_equal(again[0], simulated)
    # the regimes follow the time-varying matrices: many short draws started in each regime
    stacked = model.sample(3, 4000, random_state=1, exog_tvtp=np.c_[np.ones(3), [0.0, 2.0, -2.0]])[1]
    moves = np.array([path[1:] for path in stacked])
    matrices = model.transition_matrices(np.c_[np.ones(3), [0.0, 2.0, -2.0]])
    starts = np.array([path[:2] for path in stacked])
    for i in range(2):
        left = starts[:, 0] == i
        assert np.mean(moves[left, 0] == i) == pytest.approx(matrices[1, i, i], abs=0.03)
    with pytest.raises(ValueError, match=r"time-varying transitions on 2 covariate\(s\): pass exog_tvtp"):
        model.score(y)
    with pytest.raises(ValueError, match=r"time-varying transitions on 2 covariate\(s\): pass future_exog_tvtp"):
        model.forecast(y, 2, exog_tvtp=z)
    with pytest.raises(ValueError, match=r"exog_tvtp must have shape \(518, 2\)"):
        model.score(y, exog_tvtp=z[:, :1])
    with pytest.raises(ValueError, match="changes with its time-varying transition probabilities"):
        _ = model.dwell_times_
    with pytest.raises(ValueError, match="exog_tvtp was given but this MarkovAutoregression has a constant"):
        hand_set(1).score(y[:20], exog=np.ones(20), exog_tvtp=z[:20])
    assert list(model.describe().columns[:2]) == ["to_0.tvtp0", "to_0.tvtp1"]
    assert model.n_parameters == 11 and model.aic() == pytest.approx(-2 * model.log_likelihood_ + 22)
    forecast = model.forecast(y, 3, exog_tvtp=z, future_exog_tvtp=np.c_[np.ones(3), [0.5, 0.0, -0.5]])
    assert forecast.means.shape == (3, 1)
    path = tmp_path / "filardo.msz"
    model.save(path)
    restored = load(path)
    np.testing.assert_array_equal(restored.transition_coef_, model.transition_coef_)
    assert restored.score(y, exog_tvtp=z) == model.score(y, exog_tvtp=z)
    np.testing.assert_array_equal(restored.predict_proba(y, exog_tvtp=z), model.predict_proba(y, exog_tvtp=z))
    assert restored.summary().equals(model.summary())


def test_tvtp_parameters_set_by_hand_start_the_first_fit(filardo_fit, filardo):
    y, z = filardo
    model = MarkovAutoregression(order=4, switching_ar=False, n_restarts=1, random_state=0)
    for name in ("transition_coef_", "trend_", "exog_coef_", "variances_", "ar_coef_"):
        setattr(model, name, getattr(filardo_fit, name))
    model.fit(y, exog_tvtp=z)
    assert model.log_likelihood_ == pytest.approx(filardo_fit.log_likelihood_, abs=1e-8)
    np.testing.assert_allclose(model.transition_coef_, filardo_fit.transition_coef_, atol=1e-5)
    model.set_params(warm_start=True)
    with pytest.raises(ValueError, match="transition_coef_ is set but fit was given no exog_tvtp"):
        model.fit(y)
    constant = hand_set(1)
    with pytest.raises(ValueError, match="transmat_ is set but fit was given exog_tvtp"):
        constant.fit(y[:50], exog=np.ones(50), exog_tvtp=z[:50])
    model.transition_coef_ = model.transition_coef_[:, :, :1]
    with pytest.raises(ValueError, match=r"transition_coef_ set has 1 covariate\(s\), the exog_tvtp given to fit 2"):
        model.fit(y, exog_tvtp=z)


@pytest.mark.parametrize(
    "model",
    [MarkovRegression(2, switching_variance=True), MarkovAutoregression(2, order=1, switching_variance=True)],
    ids=["regression", "autoregression"],
)
def test_a_regime_collapsing_onto_a_stuck_sensor_is_an_error_naming_it(model):
    """A 150-step constant stretch lets a switching variance go to 0 and the likelihood to infinity:
    one ValueError naming the regime and the stretch (was a raw LinAlgError in the polish, or a
    silent fit with sigma2 7e-9 and an inflated log-likelihood)."""
    rng = np.random.default_rng(0)
    y = rng.normal(size=400).cumsum() * 0.1 + rng.normal(size=400)
    y[100:250] = 1.234
    model.set_params(random_state=0)
    with pytest.raises(ValueError, match=r"variance of regime \d collapsed.*time steps 100\.\.249.*stuck sensor"):
        model.fit(y)
    model.set_params(switching_variance=False).fit(y)  # the suggested fix fits
    assert np.isfinite(model.log_likelihood_)


def test_a_constant_series_is_refused():
    with pytest.raises(ValueError, match="series 0 of y is constant"):
        MarkovRegression(2).fit(np.full(50, 3.0))


def test_exog_tvtp_may_name_columns_of_a_data_frame():
    rng = np.random.default_rng(3)
    n = 120
    z = np.sin(np.arange(n) / 9.0)
    y = np.where(np.cumsum(rng.random(n) < np.where(z > 0, 0.05, 0.3)) % 2, 2.0, -1.0) + rng.normal(size=n)
    frame = pd.DataFrame({"y": y, "one": 1.0, "z": z})
    make = lambda: MarkovRegression(2, n_restarts=2, n_iter_polish=0, random_state=0)  # noqa: E731
    named = make().fit(frame, exog_tvtp=["one", "z"])
    given = make().fit(y, exog_tvtp=np.column_stack([np.ones(n), z]))
    np.testing.assert_array_equal(named.transition_coef_, given.transition_coef_)
    np.testing.assert_array_equal(
        named.predict_proba(frame, exog_tvtp=["one", "z"]), given.predict_proba(y, exog_tvtp=frame[["one", "z"]])
    )


def test_data_of_probability_0_follow_the_contract_naming_the_sequence_and_step():
    """A value no regime's density reaches (variances far too small for it) is impossible: score is
    log 0, every method that conditions on the data names the sequence and its step (models.base)."""
    rng = np.random.default_rng(0)
    y = [rng.normal(size=30), rng.normal(size=20)]
    y[1][5] = 1e5
    model = MarkovAutoregression(2, order=1)
    model.transmat_, model.trend_ = np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([0.0, 1.0])
    model.variances_, model.ar_coef_ = np.array([1e-300, 1e-300]), np.array([0.1, 0.2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numerical warning from inside either
        assert model.score(y) == -np.inf
        for method in (model.predict, model.predict_proba, model.filter_proba, model.segment):
            with pytest.raises(ValueError, match="sequence 1, time step 5, has probability 0.*density"):
                method(y)
        with pytest.raises(ValueError, match="sequence 1, time step 5, has probability 0"):
            model.forecast(y, 2)


def test_a_model_with_time_varying_transitions_reads_a_frame_by_its_schema():
    """The schema reads the exog columns, then the exog_tvtp ones: new frames need no arrays."""
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {
            "id": np.repeat([0, 1], 80),
            "t": np.tile(np.arange(80), 2),
            "y": rng.normal(size=160),
            "x": rng.normal(size=160),
        }
    )
    frame["z"] = np.sin(frame["t"] / 6.0)
    frame["y"] += np.where(frame["z"] > 0, 2.0, -1.0) + 0.5 * frame["x"]
    model = MarkovRegression(2, n_restarts=1, n_iter_polish=0, random_state=0)
    model.fit(frame, time_column="t", columns=["y"], input_columns=["x"], exog_tvtp=["z"])
    shuffled = frame.sample(frac=1.0, random_state=0)
    seqs = model.schema_.read(shuffled)  # rows out of order: per-step results follow the frame's rows
    ordered = shuffled.sort_values(["id", "t"])
    groups = [group for _, group in ordered.groupby("id")]
    arrays = {"exog": [g[["x"]].to_numpy() for g in groups], "exog_tvtp": [g[["z"]].to_numpy() for g in groups]}
    series = [g.y.to_numpy() for g in groups]
    assert model.score(seqs) == pytest.approx(model.score(series, **arrays), rel=1e-12)
    modes = pd.Series(np.concatenate(model.predict(series, **arrays)), index=ordered.index)
    np.testing.assert_array_equal(model.predict(seqs), modes.loc[shuffled.index])
    proba = pd.DataFrame(np.concatenate(model.predict_proba(series, **arrays)), index=ordered.index)
    np.testing.assert_allclose(model.predict_proba(seqs), proba.loc[shuffled.index], rtol=1e-12)
    with pytest.raises(ValueError, match="time-varying transitions on 1 covariate"):
        model.score(series, exog=arrays["exog"])  # without the covariates


def test_what_the_data_give_a_fit_is_built_once():
    """The rows a likelihood is about and their lagged values depend on the data and the order only:
    every E-step of a fit reads the same (read-only) arrays, not new ones."""
    model = MarkovAutoregression(n_states=2, order=2, switching_ar=False)
    series = model._em_data(np.arange(12.0) ** 1.5, lengths=[5, 7])
    data, engine = model._series_data(series), model._series_engine(series)
    rows, lagged = engine.rows(data), engine.lagged(data)
    assert engine.rows(data) is rows and engine.lagged(data) is lagged
    assert rows.tolist() == [2, 3, 4, 7, 8, 9, 10, 11]
    assert lagged[0].tolist() == [data.y[2, 0], 1.0, data.y[1, 0], 1.0, data.y[0, 0], 1.0]
    assert not rows.flags.writeable and not lagged.flags.writeable
