"""Markov switching on several sequences, multivariate observations and missing values: brute force and peers."""

import itertools

import numpy as np
import pytest

from modeshift import MarkovAutoregression, MarkovRegression
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
    return transition, params.coef[..., None], params.ar[..., None, None], params.variances[:, None, None]


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
