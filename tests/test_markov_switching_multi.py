"""Markov switching on several sequences, multivariate observations and missing values: brute force and peers."""

import itertools
from dataclasses import replace

import numpy as np
import pytest

from modeshift import ARHMM, HMM, MarkovAutoregression, MarkovRegression, load
from modeshift.chain_analysis import stationary_distribution


# ------------------------------------------------------------------------------ brute force
def enumerate_sequence(y, regressors, matrices, coef, ar, covariances):
    """Every regime path of one sequence: log p(y_p.. | y_..p-1), smoothed and filtered p(S_t | .)
    for t >= p, and the largest log p(y, path).

    ``y`` (n, D) may hold NaN (p = 0 only): a step's density is that of its observed entries.
    ``matrices`` (n, K, K), entry t moving into step t, entry 0's stationary law starting the chain;
    ``coef`` (K, R, D): y_t - coef[k]' x_t is the deviation; ``ar`` (K, p, D, D); ``covariances`` (K, D, D).
    """
    k, p, n = len(coef), ar.shape[1], len(y)
    paths = np.array(list(itertools.product(range(k), repeat=n)))
    start = stationary_distribution(matrices[0])
    factors = np.ones((len(paths), n))
    for index, path in enumerate(paths):
        factors[index, 0] = start[path[0]]
        factors[index, 1:] = matrices[np.arange(1, n), path[:-1], path[1:]]
        deviation = y - np.einsum("tr,trd->td", regressors, coef[path])
        for t in range(p, n):
            residual = deviation[t] - sum(ar[path[t], j] @ deviation[t - j - 1] for j in range(p))
            seen = ~np.isnan(residual)
            if seen.any():
                cov = covariances[path[t]][np.ix_(seen, seen)]
                quad = residual[seen] @ np.linalg.solve(cov, residual[seen])
                factors[index, t] *= np.exp(-0.5 * quad) / np.sqrt(np.linalg.det(2 * np.pi * cov))
    prefix = np.cumprod(factors, axis=1)
    joint = prefix[:, -1]
    smoothed = np.array([[joint[paths[:, t] == i].sum() for i in range(k)] for t in range(p, n)])
    filtered = np.array([[prefix[paths[:, t] == i, t].sum() for i in range(k)] for t in range(p, n)])
    return (
        np.log(joint.sum()),
        smoothed / joint.sum(),
        filtered / filtered.sum(axis=1, keepdims=True),
        np.log(joint.max()),
    )


def logit(coef, z):
    logits = np.concatenate([np.einsum("tc,ijc->tij", z, coef), np.zeros((len(z), len(coef), 1))], axis=2)
    weights = np.exp(logits - logits.max(axis=2, keepdims=True))
    return weights / weights.sum(axis=2, keepdims=True)


def internal(model):
    """The model's parameters as (transition, coef (K, R, D), ar (K, p, D, D), covariances (K, D, D))."""
    params = model._parameters()
    transition = params.transmat if params.transition_coef is None else params.transition_coef
    return transition, params.coef, params.ar, params.covariances


def check_against_enumeration(model, ys, xs=None, zs=None):
    """score, predict_proba, filter_proba and decode's log-probability of several sequences equal
    the enumeration of each sequence's regime paths."""
    transition, coef, ar, covariances = internal(model)
    kwargs = {"exog": xs} if xs is not None else {}
    kwargs |= {"exog_tvtp": zs} if zs is not None else {}
    results = []
    for s, y in enumerate(ys):
        y2 = np.asarray(y, dtype=float).reshape(len(y), -1)
        x = np.ones((len(y), 1)) if xs is None else np.c_[np.ones(len(y)), xs[s]]
        matrices = (
            logit(transition, zs[s]) if zs is not None else np.broadcast_to(transition, (len(y), *transition.shape))
        )
        results.append(enumerate_sequence(y2, x[:, : coef.shape[1]], matrices, coef, ar, covariances))
    assert model.score(ys, **kwargs) == pytest.approx(sum(r[0] for r in results), abs=1e-10)
    assert model.decode(ys, **kwargs)[0] == pytest.approx(sum(r[3] for r in results), abs=1e-10)
    for got, want in zip(model.predict_proba(ys, **kwargs), results):
        np.testing.assert_allclose(got, want[1], atol=1e-10)
    for got, want in zip(model.filter_proba(ys, **kwargs), results):
        np.testing.assert_allclose(got, want[2], atol=1e-10)


def univariate(order, tvtp=False):
    """Two regimes, an exogenous regressor, everything switching, set by hand."""
    if order:
        model = MarkovAutoregression(n_states=2, order=order, switching_exog=True, switching_variance=True)
        model.ar_coef_ = np.array([[0.5, 0.2], [-0.3, 0.1]])[:, :order]
    else:
        model = MarkovRegression(n_states=2, switching_variance=True)
    if tvtp:
        model.transition_coef_ = np.array([[[1.2, 0.8]], [[-0.6, 0.5]]])
    else:
        model.transmat_ = np.array([[0.8, 0.2], [0.35, 0.65]])
    model.trend_ = np.array([[-0.5], [1.0]])
    model.exog_coef_ = np.array([[0.3], [-0.7]])
    model.variances_ = np.array([0.6, 1.7])
    return model


# ------------------------------------------------------------------------- several sequences
@pytest.mark.parametrize("order", [0, 1, 2])
@pytest.mark.parametrize("tvtp", [False, True], ids=["constant", "tvtp"])
def test_several_sequences_equal_enumeration(order, tvtp):
    rng = np.random.default_rng(order)
    lengths = [5, order + 1, 4]
    ys = [rng.normal(size=n) for n in lengths]
    xs = [rng.normal(size=(n, 1)) for n in lengths]
    zs = [np.c_[np.ones(n), rng.normal(size=n)] for n in lengths] if tvtp else None
    check_against_enumeration(univariate(order, tvtp), ys, xs, zs)


def test_several_sequences_in_every_form():
    rng = np.random.default_rng(1)
    model = univariate(2)
    ys = [rng.normal(size=n) for n in (6, 9)]
    xs = [rng.normal(size=(n, 1)) for n in (6, 9)]
    concatenated, x = np.concatenate(ys), np.concatenate(xs)
    assert model.score(concatenated, [6, 9], exog=x) == model.score(ys, exog=xs)
    assert model.score(ys, exog=xs) == pytest.approx(sum(model.score(y, exog=e) for y, e in zip(ys, xs)), abs=1e-12)
    # lists out for a list in (each the sequence's own result), one array for an array with lengths
    listed, joined = model.predict_proba(ys, exog=xs), model.predict_proba(concatenated, [6, 9], exog=x)
    assert [len(p) for p in listed] == [4, 7] and joined.shape == (11, 2)
    np.testing.assert_array_equal(np.concatenate(listed), joined)
    for got, y, e in zip(model.predict(ys, exog=xs), ys, xs):
        np.testing.assert_array_equal(got, model.predict(y, exog=e))
    forecast = model.forecast(ys, 3, exog=xs, future_exog=[np.ones((3, 1)), np.zeros((3, 1))])
    alone = model.forecast(ys[1], 3, exog=xs[1], future_exog=np.zeros((3, 1)))
    assert len(forecast.means) == 2
    np.testing.assert_allclose(forecast.means[1], alone.means, atol=1e-12)
    np.testing.assert_allclose(forecast.covariances[1], alone.covariances, atol=1e-12)
    table = model.segment(ys, exog=xs)
    assert set(table["sequence"]) == {0, 1} and table["start"].min() == 2
    samples, regimes = model.sample(8, 3, random_state=0, exog=np.ones((8, 1)))
    assert len(samples) == len(regimes) == 3 and samples[0].shape == (8, 1)


def test_the_time_trend_restarts_in_each_sequence():
    rng = np.random.default_rng(2)
    model = MarkovRegression(n_states=2, trend="ct")
    model.transmat_, model.trend_ = np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([[0.0, 0.5], [1.0, -0.2]])
    model.variances_ = np.array([1.0, 1.0])
    ys = [rng.normal(size=5), rng.normal(size=4)]
    assert model.score(ys) == pytest.approx(model.score(ys[0]) + model.score(ys[1]), abs=1e-12)


def test_fit_on_several_sequences_is_one_likelihood():
    truth = MarkovAutoregression(n_states=2, order=1)
    truth.transmat_ = np.array([[0.95, 0.05], [0.1, 0.9]])
    truth.trend_, truth.ar_coef_ = np.array([[-1.0], [2.0]]), np.array([[0.5], [0.2]])
    truth.variances_ = np.array([0.5, 0.5])
    ys, _ = truth.sample(200, 4, random_state=2)
    model = MarkovAutoregression(n_states=2, order=1, n_restarts=3, random_state=0).fit(ys)
    assert model.converged_ and model.log_likelihood_ == pytest.approx(model.score(ys), abs=1e-9)
    assert model.log_likelihood_ >= truth.score(ys)
    joined = MarkovAutoregression(n_states=2, order=1, n_restarts=3, random_state=0)
    joined.fit(np.concatenate(ys), [200] * 4)
    assert joined.log_likelihood_ == pytest.approx(model.log_likelihood_, abs=1e-9)
    np.testing.assert_allclose(model.trend_.ravel(), [-1.0, 2.0], atol=0.2)
    # the fit is not that of the sequences glued together: the lags do not cross their boundaries
    glued = MarkovAutoregression(n_states=2, order=1, n_restarts=3, random_state=0).fit(np.concatenate(ys))
    assert glued.log_likelihood_ != pytest.approx(model.log_likelihood_, abs=1e-3)
    assert len(model.smoothed_probabilities_) == 4 * 199


# ------------------------------------------------------------------ multivariate observations
P = np.array([[0.8, 0.2], [0.35, 0.65]])
COVARS = np.array([[[0.6, 0.2], [0.2, 0.9]], [[1.7, -0.5], [-0.5, 1.1]]])
PHI = np.array([[[0.5, 0.1], [-0.2, 0.3]], [[-0.3, 0.2], [0.1, 0.4]]])  # per regime, lag 1


def bivariate(order, switching_variance=True):
    """Two regimes, two series, an exogenous regressor, everything switching (covariances
    shared unless ``switching_variance``), set by hand."""
    if order:
        model = MarkovAutoregression(
            n_states=2, order=order, switching_exog=True, switching_variance=switching_variance
        )
        lag2 = np.array([[[0.1, 0.0], [0.05, -0.1]], [[0.0, 0.1], [0.1, 0.0]]])
        model.ar_coef_ = np.stack([PHI, lag2], axis=1)[:, :order]
    else:
        model = MarkovRegression(n_states=2, switching_variance=switching_variance)
    model.transmat_ = P
    model.trend_ = np.array([[[-0.5, 0.2]], [[1.0, -0.4]]])
    model.exog_coef_ = np.array([[[0.3, 0.1]], [[-0.7, 0.5]]])
    model.covars_ = COVARS if switching_variance else np.stack([COVARS[0]] * 2)
    return model


@pytest.mark.parametrize("order", [0, 1, 2])
def test_multivariate_equals_enumeration(order):
    rng = np.random.default_rng(10 + order)
    ys = [rng.normal(size=(n, 2)) for n in (5, order + 1, 4)]
    xs = [rng.normal(size=(len(y), 1)) for y in ys]
    check_against_enumeration(bivariate(order), ys, xs)
    check_against_enumeration(bivariate(order, switching_variance=False), ys, xs)


def test_missing_values_equal_enumeration():
    """A partly missing step has the density of its observed entries, a wholly missing one none."""
    rng = np.random.default_rng(4)
    ys = [rng.normal(size=(n, 2)) for n in (5, 4)]
    ys[0][1, 0] = ys[1][2, 1] = np.nan
    ys[0][3] = np.nan
    xs = [rng.normal(size=(len(y), 1)) for y in ys]
    check_against_enumeration(bivariate(0), ys, xs)
    univariate_ys = [y[:, 0] for y in ys]  # one series with a missing step
    check_against_enumeration(univariate(0), univariate_ys, xs)


def test_an_autoregression_refuses_missing_values():
    model = bivariate(1)
    y = np.random.default_rng(0).normal(size=(8, 2))
    y[5, 1] = np.nan
    with pytest.raises(ValueError, match="sequence 1, time step 5: missing value.*a lag of the next 1 step"):
        model.score([y[:4], y])
    with pytest.raises(ValueError, match="feature 1 is never observed"):
        MarkovRegression().fit(np.c_[np.ones(9), np.full(9, np.nan)])


@pytest.mark.parametrize("order", [0, 2])
def test_multivariate_gradient_matches_finite_differences(order):
    rng = np.random.default_rng(order)
    model = bivariate(order, switching_variance=order == 0)
    y, x = rng.normal(size=(40, 2)), rng.normal(size=(40, 1))
    if order == 0:
        y[3, 1] = y[10, 0] = np.nan
        y[7] = np.nan
    engine, _, data, _ = model._prepare(y, None, x)
    free = rng.normal(scale=0.3, size=engine.layout.n_parameters)
    value, gradient = engine.value_and_gradient(free, data)
    steps = np.eye(len(free)) * 1e-6
    unpack = engine.layout.unpack
    numeric = [
        (engine.log_likelihood(unpack(free + h), data) - engine.log_likelihood(unpack(free - h), data)) / 2e-6
        for h in steps
    ]
    np.testing.assert_allclose(gradient, numeric, atol=1e-6)
    assert value == pytest.approx(engine.log_likelihood(unpack(free), data), abs=1e-10)
    np.testing.assert_allclose(engine.layout.pack(unpack(free)), free, atol=1e-12)


# --------------------------------------------------------------------------- peer models
def sequences_with_gaps(rng, n_features=2):
    ys = [rng.normal(size=(n, n_features)) for n in (30, 20)]
    ys[0][3, 1] = np.nan
    ys[1][5] = np.nan
    return ys


def test_switching_mean_and_covariance_is_a_gaussian_hmm():
    means = np.array([[-0.5, 0.2], [1.0, -0.4]])
    model = MarkovRegression(n_states=2, switching_variance=True)
    model.transmat_, model.trend_, model.covars_ = P, means[:, None, :], COVARS
    hmm = HMM(n_states=2)  # full covariances, started from the stationary distribution
    hmm.startprob_, hmm.transmat_, hmm.means_, hmm.covars_ = stationary_distribution(P), P, means, COVARS
    ys = sequences_with_gaps(np.random.default_rng(5))  # the HMM marginalises missing entries too
    assert model.score(ys) == pytest.approx(hmm.score(ys), abs=1e-10)
    assert model.decode(ys)[0] == pytest.approx(hmm.decode(ys)[0], abs=1e-10)
    for ours, theirs in [
        (model.predict_proba(ys), hmm.predict_proba(ys)),
        (model.filter_proba(ys), hmm.filter_proba(ys)),
    ]:
        for a, b in zip(ours, theirs):
            np.testing.assert_allclose(a, b, atol=1e-10)
    np.testing.assert_array_equal(np.concatenate(model.predict(ys)), np.concatenate(hmm.predict(ys)))


def arhmm_at(intercepts):
    arhmm = ARHMM(n_states=2, order=1)
    arhmm.startprob_, arhmm.transmat_, arhmm.coefs_, arhmm.covars_ = stationary_distribution(P), P, PHI, COVARS
    arhmm.intercepts_ = intercepts
    return arhmm


def test_a_switching_var1_is_an_arhmm():
    """ARHMM(order=1) is a VAR(1) with intercept, lag matrix and covariance per regime, its chain
    starting one step before the first modelled one; started from the stationary distribution
    it is (a) the mean-deviation form with a shared mean, (b) the intercept form: a regression
    on the lagged series."""
    ys = [np.random.default_rng(6).normal(size=(n, 2)) for n in (30, 20)]
    mean = np.array([0.7, -0.3])
    deviation = MarkovAutoregression(n_states=2, order=1, switching_trend=False, switching_variance=True)
    deviation.transmat_, deviation.trend_, deviation.covars_ = P, np.array([[mean], [mean]]), COVARS
    deviation.ar_coef_ = PHI[:, None]
    arhmm = arhmm_at(mean - PHI @ mean)  # y_t = Phi_k y_t-1 + (I - Phi_k) mu + e_t
    assert deviation.score(ys) == pytest.approx(arhmm.score(ys), abs=1e-10)
    assert deviation.decode(ys)[0] == pytest.approx(arhmm.decode(ys)[0], abs=1e-10)
    for a, b in zip(deviation.predict_proba(ys), arhmm.predict_proba(ys)):
        np.testing.assert_allclose(a, b[1:], atol=1e-10)  # ARHMM's first row is the pre-sample regime
    ours, theirs = deviation.forecast(ys, 4), arhmm.forecast(ys, 4)
    for name in ("means", "covariances", "mode_probabilities"):
        for a, b in zip(getattr(ours, name), getattr(theirs, name)):
            np.testing.assert_allclose(a, b, atol=1e-12)

    intercepts = np.array([[0.3, -0.2], [1.0, 0.5]])
    regression = MarkovRegression(n_states=2, switching_variance=True)
    regression.transmat_, regression.trend_, regression.covars_ = P, intercepts[:, None], COVARS
    regression.exog_coef_ = np.swapaxes(PHI, 1, 2)  # y_t' = c_k' + y_t-1' Phi_k'
    arhmm = arhmm_at(intercepts)
    later, lagged = [y[1:] for y in ys], [y[:-1] for y in ys]
    assert regression.score(later, exog=lagged) == pytest.approx(arhmm.score(ys), abs=1e-10)
    for a, b in zip(regression.predict_proba(later, exog=lagged), arhmm.predict_proba(ys)):
        np.testing.assert_allclose(a, b[1:], atol=1e-10)


# ------------------------------------------------------------------------------- fitting
@pytest.fixture(scope="module")
def var_truth():
    truth = MarkovAutoregression(n_states=2, order=1, switching_ar=False, switching_variance=True)
    truth.transmat_ = np.array([[0.95, 0.05], [0.08, 0.92]])
    truth.trend_ = np.array([[[-1.0, 0.5]], [[1.5, -0.5]]])
    truth.ar_coef_ = np.stack([PHI[:1]] * 2)
    truth.covars_ = np.array([[[0.5, 0.2], [0.2, 0.6]], [[1.0, -0.3], [-0.3, 0.8]]])
    return truth


def test_multivariate_fit_recovers_a_simulated_model(var_truth, tmp_path):
    ys, _ = var_truth.sample(300, 3, random_state=1)
    model = MarkovAutoregression(n_states=2, order=1, switching_ar=False, switching_variance=True, random_state=0)
    model.fit(ys)
    assert model.converged_ and model.gradient_norm_ < 1e-5
    assert model.log_likelihood_ >= var_truth.score(ys)
    np.testing.assert_allclose(model.trend_, var_truth.trend_, atol=0.15)
    np.testing.assert_allclose(model.ar_coef_, var_truth.ar_coef_, atol=0.1)
    np.testing.assert_allclose(model.covars_, var_truth.covars_, atol=0.15)
    np.testing.assert_allclose(model.transmat_, var_truth.transmat_, atol=0.03)
    errors = model.summary()["std_err"]
    assert np.isfinite(errors).all() and errors.index[2] == "const.y1[0]" and "cov.y2.y1[1]" in errors.index
    assert model.means_.shape == (2, 2) and model.describe().shape == (2, 4 + 2 + 3 + 4)
    forecast = model.forecast(ys[0], 2)
    assert forecast.means.shape == (2, 2) and forecast.covariances.shape == (2, 2, 2)
    path = tmp_path / "var.json"
    model.save(path)
    restored = load(path)
    assert restored.score(ys) == model.score(ys)
    np.testing.assert_array_equal(restored.covars_, model.covars_)


def test_fit_with_missing_values_reaches_the_hmm_maximum(var_truth):
    """With missing values, the fit of a switching mean and covariance reaches the maximum the
    Gaussian HMM's EM with a stationary start (the same model) finds."""
    truth = MarkovRegression(n_states=2, switching_variance=True)
    truth.transmat_, truth.trend_, truth.covars_ = var_truth.transmat_, var_truth.trend_, var_truth.covars_
    y, regimes = truth.sample(400, random_state=3)
    y[np.random.default_rng(0).random(y.shape) < 0.2] = np.nan
    model = MarkovRegression(n_states=2, switching_variance=True, random_state=0).fit(y)
    assert model.converged_ and np.all(np.diff(model.history_) >= -1e-9)  # an exact EM
    assert model.log_likelihood_ == pytest.approx(model.score(y), abs=1e-9)
    hmm = HMM(n_states=2, init="stationary", reg_covar=0.0, tol=1e-10, n_iter=5000, n_restarts=3, random_state=0)
    hmm.fit(y)
    assert model.log_likelihood_ == pytest.approx(hmm.score(y), abs=1e-7)
    order = np.argsort(hmm.means_[:, 0])
    np.testing.assert_allclose(model.means_, hmm.means_[order], atol=1e-4)
    np.testing.assert_allclose(model.covars_, hmm.covars_[order], atol=1e-4)
    np.testing.assert_allclose(model.transmat_, hmm.transmat_[np.ix_(order, order)], atol=1e-4)
    assert np.mean(model.predict(y) == regimes) > 0.95


@pytest.mark.parametrize("order", [0, 1])
def test_multivariate_tvtp_with_missing_values_equals_enumeration(order):
    rng = np.random.default_rng(20 + order)
    model = bivariate(order)
    del model.transmat_
    model.transition_coef_ = np.array([[[1.2, 0.8]], [[-0.6, 0.5]]])
    ys = [rng.normal(size=(n, 2)) for n in (5, 4)]
    if order == 0:
        ys[0][2, 1] = np.nan
    xs = [rng.normal(size=(len(y), 1)) for y in ys]
    zs = [np.c_[np.ones(len(y)), rng.normal(size=len(y))] for y in ys]
    check_against_enumeration(model, ys, xs, zs)


def _per_step_regression_step(engine, params, posterior, data):
    """The ECM regression step from every step's residual (generalised least squares weighted by the
    per-step posterior, then the covariances from the squared residuals): the brute force that the
    engine's step from summed lagged moments must equal."""
    gamma, completed, layout = posterior.posteriors, posterior.completed, engine.layout
    precisions = np.linalg.inv(params.covariances[engine.digits[:, 0]])

    def least_squares(target, design):  # argmin sum_te gamma (target - design b)' P (target - design b)
        normal = np.einsum("te,tedf,edc,tecg->fg", gamma, design, precisions, design)
        return np.linalg.solve(normal, np.einsum("te,tedf,edc,tec->f", gamma, design, precisions, target))

    target, design = engine.coef_design(params, data, completed)
    params = replace(params, coef=layout.coef_from_free(least_squares(target, design)))
    deviations = engine.deviations(params, data, completed)
    if layout.sizes[3]:
        params = replace(params, ar=layout.ar_from_free(least_squares(deviations[0], engine.ar_design(deviations))))
    residuals = engine.residuals(params, deviations)
    current = engine.indicators[0]
    squares = np.einsum("te,tea,teb,ek->kab", gamma, residuals, residuals, current)
    masses = gamma.sum(axis=0) @ current
    if posterior.scatter is not None:
        squares = squares + np.einsum("eab,ek->kab", posterior.scatter, current)
    d = squares.shape[1]
    pooled = (layout.regime_map.T @ squares.reshape(len(squares), -1)) / (masses @ layout.regime_map)[:, None]
    return replace(params, covariances=(layout.regime_map @ pooled).reshape(-1, d, d))


@pytest.mark.parametrize("order, missing", [(0, True), (1, False), (2, False)])
def test_the_ecm_step_from_summed_moments_equals_the_step_from_every_residual(order, missing):
    rng = np.random.default_rng(order)
    model = bivariate(order, switching_variance=True)
    y, x = 1e3 + rng.normal(size=(90, 2)), rng.normal(size=(90, 1))  # a level far above the spread
    if missing:
        y[3, 1] = y[10, 0] = np.nan
        y[7] = np.nan
    engine, _, data, _ = model._prepare(y, [50, 40], x)
    params = engine.layout.unpack(rng.normal(scale=0.3, size=engine.layout.n_parameters))
    params = replace(params, coef=params.coef + 1e3 * (np.arange(params.coef.shape[1]) == 0)[None, :, None])
    posterior = engine.e_step(params, data)
    centre = engine.centre(data)
    moments = engine.regression_step(params, engine.statistics(posterior, data, centre), centre, 0.0)
    brute = _per_step_regression_step(engine, params, posterior, data)
    for name in ("coef", "ar", "covariances"):
        np.testing.assert_allclose(getattr(moments, name), getattr(brute, name), rtol=1e-9, atol=1e-12, err_msg=name)
