"""Autoregressive HMM: brute force, EM, recovery of a simulated model, errors, persistence."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
from scipy import stats

from modeshift import ARHMM, load


def _model(rng, K=2, D=1, order=1):
    model = ARHMM(n_states=K, order=order)
    model.startprob_ = rng.dirichlet(np.ones(K))
    model.transmat_ = rng.dirichlet(np.ones(K), size=K)
    model.coefs_ = 0.4 * rng.normal(size=(K, D, order * D))
    model.intercepts_ = rng.normal(size=(K, D))
    w = rng.normal(size=(K, D, D))
    model.covars_ = w @ np.swapaxes(w, 1, 2) + 0.5 * np.eye(D)
    return model


def _brute_force(model, y):
    """log p(y_lags.. | y_..lags) and state posteriors by summing over every path."""
    T, K, lags = len(y), model.n_states, model.order
    joint = {}
    for path in itertools.product(range(K), repeat=T):
        log_p = np.log(model.startprob_[path[0]])
        log_p += sum(np.log(model.transmat_[a, b]) for a, b in zip(path, path[1:]))
        for t in range(lags, T):
            history = np.concatenate([y[t - i] for i in range(1, lags + 1)])
            mean = model.coefs_[path[t]] @ history + model.intercepts_[path[t]]
            log_p += stats.multivariate_normal(mean, model.covars_[path[t]]).logpdf(y[t])
        joint[path] = log_p
    values = np.array(list(joint.values()))
    total = np.logaddexp.reduce(values)
    posteriors = np.zeros((T, K))
    for path, log_p in joint.items():
        posteriors[np.arange(T), path] += np.exp(log_p - total)
    return total, posteriors


@pytest.mark.parametrize("K,D,lags", [(2, 1, 1), (3, 1, 2), (2, 2, 1), (2, 2, 2)])
def test_matches_brute_force(K, D, lags):
    rng = np.random.default_rng(K * 100 + D * 10 + lags)
    model = _model(rng, K, D, lags)
    sequences = [rng.normal(size=(T, D)) for T in (5, lags + 1, 4)]
    totals, posteriors = zip(*(_brute_force(model, y) for y in sequences))
    assert model.score(sequences) == pytest.approx(sum(totals), rel=1e-10)
    got = model.predict_proba(sequences)
    for g, want in zip(got, posteriors):
        np.testing.assert_allclose(g, want, rtol=1e-8, atol=1e-12)


def _match(truth, model):
    """The relabelling of the fitted modes that best matches the true intercepts."""
    best = min(
        itertools.permutations(range(3)),
        key=lambda p: np.abs(model.intercepts_[list(p)] - truth.intercepts_).sum(),
    )
    return list(best)


def test_recovers_a_simulated_three_mode_ar2(simulate_arhmm):
    truth, X, modes = simulate_arhmm(0)
    model = ARHMM(n_states=3, order=2, random_state=0).fit(X)  # one start: 3 restarts end at this same fit
    order = _match(truth, model)
    np.testing.assert_allclose(model.coefs_[order], truth.coefs_, atol=0.06)
    np.testing.assert_allclose(model.intercepts_[order], truth.intercepts_, atol=0.1)
    np.testing.assert_allclose(model.covars_[order], truth.covars_, atol=0.01)
    np.testing.assert_allclose(model.transmat_[np.ix_(order, order)], truth.transmat_, atol=0.02)
    relabel = np.argsort(order)
    assert np.mean(relabel[model.predict(X)] == modes) > 0.97


@pytest.mark.parametrize(
    "options", [{}, {"ridge": 10.0}, {"shared_noise": True, "noise": "diag"}, {"stickiness": 20.0}]
)
def test_em_is_monotone(options, simulate_arhmm):
    _, X, _ = simulate_arhmm(1, 1500)
    model = ARHMM(n_states=3, order=2, n_iter=40, tol=-np.inf, random_state=1, **options).fit(X)
    history = np.array(model.log_likelihood_history_)
    assert len(history) == 40
    assert np.all(np.diff(history) >= -1e-8 * np.abs(history[1:]))


def test_ridge_shrinks_the_lag_coefficients_only(simulate_arhmm):
    _, X, _ = simulate_arhmm(2, 1000)
    plain = ARHMM(n_states=1, order=2).fit(X)
    shrunk = ARHMM(n_states=1, order=2, ridge=1e5).fit(X)
    assert np.abs(shrunk.coefs_).max() < 0.05 * np.abs(plain.coefs_).max()
    np.testing.assert_allclose(shrunk.intercepts_[0], X.mean(axis=0), atol=0.05)


def test_fixed_parameters_stay_put(simulate_arhmm):
    truth, X, _ = simulate_arhmm(3, 1000)
    model = ARHMM(n_states=3, order=2, fixed={"coefs_"}, random_state=0)
    model.coefs_ = truth.coefs_
    model.fit(X)
    np.testing.assert_array_equal(model.coefs_, truth.coefs_)


def test_parameters_changed_after_a_fit_are_used(simulate_arhmm):
    """Replaced or edited in place, coefs_ and intercepts_ are what the next score uses."""
    truth, X, _ = simulate_arhmm(5, 600)
    model = ARHMM(n_states=3, order=2, random_state=0, n_iter=3).fit(X)
    fresh = ARHMM(n_states=3, order=2)
    for name in model.parameter_names:
        setattr(fresh, name, getattr(model, name).copy())
    model.coefs_[0, 0, 0] += 0.3
    model.intercepts_[1, 1] -= 0.2
    fresh.coefs_ = fresh.coefs_ + np.eye(1, fresh.coefs_.size).reshape(fresh.coefs_.shape) * 0.3
    fresh.intercepts_ = fresh.intercepts_ - np.array([[0.0, 0.0], [0.0, 0.2], [0.0, 0.0]])
    assert model.score(X) == pytest.approx(fresh.score(X), rel=1e-12)
    model.coefs_ = truth.coefs_
    fresh.coefs_ = truth.coefs_
    assert model.score(X) == pytest.approx(fresh.score(X), rel=1e-12)


def test_save_and_load_round_trip(tmp_path, simulate_arhmm):
    truth, X, _ = simulate_arhmm(4, 800)
    model = ARHMM(n_states=3, order=2, random_state=0, n_iter=5).fit(X)
    model.save(tmp_path / "arhmm.zip")
    loaded = load(tmp_path / "arhmm.zip")
    assert isinstance(loaded, ARHMM) and loaded.order == 2
    assert loaded.score(X) == model.score(X)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


def test_bic_counts_parameters_and_conditioned_steps(simulate_arhmm):
    _, X, _ = simulate_arhmm(5, 500)
    model = ARHMM(n_states=3, order=2, n_iter=3, random_state=0).fit(X)
    D, q = 2, 2 * 2 + 1
    assert model.n_parameters == 2 + 3 * 2 + 3 * D * q + 3 * 3
    assert model.bic(X) == pytest.approx(-2 * model.score(X) + model.n_parameters * np.log(len(X) - 2))


def test_bad_input_is_named():
    model = _model(np.random.default_rng(0), K=2, D=2, order=3)
    with pytest.raises(ValueError, match="sequence 1 has 3 time step.*order=3"):
        model.score([np.zeros((10, 2)), np.zeros((3, 2))])
    X = np.zeros((10, 2))
    X[6, 1] = np.nan
    with pytest.raises(ValueError, match="sequence 0, time step 6"):
        model.score(X)
    with pytest.raises(ValueError, match="expects 2 feature"):
        model.score(np.zeros((10, 3)))
    with pytest.raises(ValueError, match="ARHMM: order must be an integer >= 1, got 0"):
        ARHMM(order=0).fit(X)


def test_lags_is_the_old_name_of_order():
    with pytest.warns(DeprecationWarning, match="renamed order"):
        model = ARHMM(lags=2)
    assert model.order == 2 and "lags" not in model.get_params()
    with pytest.warns(DeprecationWarning):
        assert model.lags == 2


def test_a_fitted_model_pickles(simulate_arhmm):
    """Not a file format (save/load is), but what process pools and dask send to workers."""
    import pickle

    _, X, _ = simulate_arhmm(6, 300)
    model = ARHMM(n_states=2, order=2, random_state=0, n_iter=2).fit(X)
    assert pickle.loads(pickle.dumps(model)).score(X) == model.score(X)


def test_parameters_that_give_no_likelihood_are_named_before_the_kernels():
    """Data of magnitude 1e-300 leave the regressions' Gram matrices at 0 and the coefficients NaN:
    one ValueError naming the mode and the step (was a ZeroDivisionError inside the smoother)."""
    X = np.random.default_rng(0).normal(size=80) * 1e-300
    with warnings.catch_warnings(), pytest.raises(ValueError, match=r"ARHMM: mode \d gives no likelihood.*step"):
        warnings.simplefilter("error", RuntimeWarning)  # nothing from numpy on the way
        ARHMM(2, random_state=0).fit(X)


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_mode_collapsing_onto_a_stuck_sensor_is_an_error_with_reg_covar_zero(seed):
    """With reg_covar=0 a mode that takes a 120-step constant stretch predicts it exactly: a
    ValueError naming the way out (was a silent fit with a variance of 1e-312)."""
    rng = np.random.default_rng(seed)
    y = rng.normal(size=300).cumsum() * 0.1 + rng.normal(size=300)
    start = rng.integers(20, 150)
    y[start : start + 120] = y[start]
    with pytest.raises(ValueError, match=r"mode \d.*(collapsed|not finite).*reg_covar"):
        ARHMM(2, reg_covar=0.0, random_state=0, n_iter=20).fit(y)
    ARHMM(2, random_state=0, n_iter=20).fit(y)  # the default reg_covar fits


def test_an_unfitted_arhmm_names_itself():
    from modeshift.models.base import NotFittedError

    with pytest.raises(NotFittedError, match="this ARHMM has no startprob_"):
        ARHMM(2).score(np.zeros((5, 1)))
