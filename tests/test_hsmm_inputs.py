"""HSMM with input-driven switches: the fixed-matrix HSMM at zero slopes, every segmentation of a
tiny case, the HMM's kernels with geometric durations, recovery of the coefficients from simulated
data, and forecasts, streams and files that honour the inputs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import optimize, stats
from test_kernels_hsmm import _enumerate

import modeshift
from modeshift import HSMM
from modeshift._kernels import forward_backward_varying
from modeshift.durations import survival_of
from modeshift.models.em import ConvergenceWarning
from modeshift.models.streaming import FilterState
from modeshift.transitions_logit import fit_per_source, frozen_coefficients, per_source_matrices

#: (K=3, K-1, 1 + 1): from 0 the log-odds of 1 against 2; from 1 of 0 against 2; from 2 of 0 against 1
COEF = np.array([[[0.0, 0.0], [0.4, 1.5]], [[-0.3, -2.0], [0.0, 0.0]], [[0.8, 1.0], [0.0, 0.0]]])
MEANS = np.array([[0.0], [1.0], [2.0]])


def _switches(coef: np.ndarray, inputs: np.ndarray) -> np.ndarray:
    """The switch matrices (n_steps, K, K) written out: p(j | i, u) = exp(eta_ij) / sum_{m != i} exp(eta_im),
    eta_ij = (1, u) . coef[i, j] for j < K-1 and 0 for j = K-1."""
    n_steps, k = len(inputs), len(coef)
    matrices = np.zeros((n_steps, k, k))
    for t in range(n_steps):
        covariates = np.r_[1.0, inputs[t]]
        for i in range(k):
            eta = np.r_[coef[i] @ covariates, 0.0]
            weights = np.where(np.arange(k) == i, 0.0, np.exp(eta))
            matrices[t, i] = weights / weights.sum()
    return matrices


def _model(coef: np.ndarray = COEF, duration: str = "poisson", max_duration: int = 4, **options) -> HSMM:
    model = HSMM(n_states=3, duration=duration, max_duration=max_duration, input_dim=coef.shape[2] - 1, **options)
    model.startprob_ = np.array([0.5, 0.3, 0.2])
    model.transition_coef_ = coef
    if duration == "poisson":
        model.duration_rates_ = np.array([0.5, 1.5, 3.0])
    model.means_, model.covars_ = MEANS, np.full((3, 1, 1), 0.5)
    return model


@pytest.mark.parametrize("right_censoring", [True, False])
def test_score_posteriors_and_viterbi_match_enumeration_with_inputs(right_censoring):
    model = _model(right_censoring=right_censoring)
    X = np.array([0.1, 0.9, 1.2, 2.2, 1.9, 0.0])[:, None]
    u = np.array([[0.3], [-1.0], [0.5], [2.0], [-0.7], [1.1]])
    pmf = model._duration.pmf()
    survival = survival_of(pmf)
    weights = np.stack([pmf, pmf, survival if right_censoring else pmf, survival if right_censoring else pmf])
    log_b = stats.norm.logpdf(X, MEANS[:, 0], np.sqrt(0.5))
    every = _enumerate(log_b, model.startprob_, _switches(COEF, u), weights)
    total = sum(p for p, _, _ in every)
    posteriors = np.zeros((6, 3))
    for prob, path, _ in every:
        posteriors[np.arange(6), path] += prob / total
    assert model.score(X, inputs=u) == pytest.approx(np.log(total), rel=1e-12)
    np.testing.assert_allclose(model.predict_proba(X, inputs=u), posteriors, atol=1e-12)
    best_prob, best_path, _ = max(every, key=lambda item: item[0])
    log_prob, path = model.decode(X, inputs=u)
    np.testing.assert_array_equal(path, best_path)
    assert log_prob == pytest.approx(np.log(best_prob), rel=1e-12)
    assert model.score(X, inputs=-u) != pytest.approx(model.score(X, inputs=u), rel=1e-6)  # the inputs matter


def test_zero_slopes_are_the_fixed_matrix_hsmm():
    flat = COEF.copy()
    flat[:, :, 1] = 0.0
    model = _model(flat, max_duration=30)
    fixed = HSMM(n_states=3, duration="poisson", max_duration=30)
    fixed.startprob_, fixed.duration_rates_ = model.startprob_, model.duration_rates_
    fixed.transmat_ = _switches(flat, np.zeros((1, 1)))[0]
    fixed.means_, fixed.covars_ = model.means_, model.covars_
    u = np.random.default_rng(0).normal(size=(400, 1))
    X, _ = fixed.sample(400, random_state=1)
    assert model.score(X, inputs=u) == pytest.approx(fixed.score(X), rel=1e-12)
    np.testing.assert_allclose(model.predict_proba(X, inputs=u), fixed.predict_proba(X), atol=1e-12)
    np.testing.assert_allclose(model.filter_proba(X, inputs=u), fixed.filter_proba(X), atol=1e-12)
    np.testing.assert_array_equal(model.predict(X, inputs=u), fixed.predict(X))
    ours, theirs = model.forecast(X, 5, inputs=u, future_inputs=np.ones((5, 1))), fixed.forecast(X, 5)
    np.testing.assert_allclose(ours.mode_probabilities, theirs.mode_probabilities, atol=1e-12)
    np.testing.assert_allclose(ours.means, theirs.means, atol=1e-12)
    for got, expected in zip(model.sample(300, random_state=3, inputs=u[:300]), fixed.sample(300, random_state=3)):
        np.testing.assert_array_equal(got, expected)


def test_geometric_durations_with_inputs_are_an_hmm_with_per_step_matrices():
    """Geometric durations (leave with p_i at every step) and switches A_t: the HMM whose matrix into
    step t stays with 1 - p_i and moves to j != i with p_i A_t[i, j], on the HMM's own kernels
    (0.7^400 ~ 1e-62: the truncation at D = 400 is below round-off). The HMM class cannot hold this
    chain: its logit would have to keep the stay fixed while the inputs move the rest."""
    model = _model(duration="geometric", max_duration=400)
    leave = np.array([0.3, 0.2, 0.4])
    model.duration_probs_ = leave
    rng = np.random.default_rng(1)
    u = rng.normal(size=(200, 1))
    X, _ = model.sample(200, random_state=2, inputs=u)
    X[[7, 50]] = np.nan
    matrices = leave[None, :, None] * _switches(COEF, u) + np.diag(1.0 - leave)[None]
    log_b = np.nan_to_num(stats.norm.logpdf(X, MEANS[:, 0], np.sqrt(0.5)), nan=0.0)
    log_lik, posteriors, pairs = forward_backward_varying(log_b, np.array([0, 200]), model.startprob_, matrices)
    assert model.score(X, inputs=u) == pytest.approx(log_lik[0], rel=1e-12)
    np.testing.assert_allclose(model.predict_proba(X, inputs=u), posteriors, atol=1e-10)
    switches = model.expected_statistics(X, inputs=u)["transitions"]["pairs"].array
    np.testing.assert_allclose(switches, (pairs * (1 - np.eye(3)))[1:], atol=1e-10)


def test_input_coefficients_are_recovered_from_simulated_data():
    truth = _model(duration="poisson", max_duration=40)
    truth.duration_rates_ = np.array([5.0, 8.0, 6.0])
    truth.means_, truth.covars_ = np.array([[0.0], [3.0], [6.0]]), np.ones((3, 1, 1))
    u = np.random.default_rng(0).normal(size=(8000, 1))
    X, modes = truth.sample(8000, random_state=1, inputs=u)
    model = HSMM(n_states=3, duration="poisson", max_duration=40, input_dim=1, random_state=0).fit(X, inputs=u)
    order = np.argsort(model.means_[:, 0])  # the fitted modes in the truth's order
    assert (np.argsort(order)[model.predict(X, inputs=u)] == modes).mean() > 0.97
    grid = np.array([[-1.0], [0.0], [1.0]])
    learned = model._blocks[0].kernel_arrays(grid)[1][:, order][:, :, order]
    np.testing.assert_allclose(learned, _switches(COEF, grid), atol=0.08)
    assert model.n_parameters == 2 + 3 * 2 + 3 + 3 + 3


def test_forecasts_equal_the_filter_on_missing_future_steps():
    """p(z_T+h | y_0..T) is the filter after h wholly missing steps driven by the future inputs."""
    model = _model(max_duration=10)
    rng = np.random.default_rng(4)
    u = rng.normal(size=(60, 1))
    X, _ = model.sample(60, random_state=5, inputs=u)
    future = rng.normal(size=(7, 1))
    forecast = model.forecast(X, 7, inputs=u, future_inputs=future)
    padded = np.vstack([X, np.full((7, 1), np.nan)])
    filtered = model.filter_proba(padded, inputs=np.vstack([u, future]))
    np.testing.assert_allclose(forecast.mode_probabilities, filtered[60:], atol=1e-12)
    state = model.filter_init()
    for y, row in zip(X, u):
        state, _ = model.filter_step(state, y, inputs=row)
    streamed = model.filter_forecast(state, 7, future_inputs=future)
    np.testing.assert_allclose(streamed.mode_probabilities, forecast.mode_probabilities, atol=1e-12)


def test_streaming_with_inputs_equals_the_batch_filter_and_resumes(tmp_path):
    model = _model(max_duration=10)
    rng = np.random.default_rng(6)
    u = rng.normal(size=(80, 1))
    X, _ = model.sample(80, random_state=7, inputs=u)
    state, outputs = model.filter_init(lag=79), []
    for t, (y, row) in enumerate(zip(X, u)):
        if t == 40:  # stop, save, resume
            state.save(tmp_path / "state.msz")
            state = FilterState.load(tmp_path / "state.msz")
        state, out = model.filter_step(state, y, inputs=row)
        outputs.append(out)
    np.testing.assert_allclose([o.probabilities for o in outputs], model.filter_proba(X, inputs=u), atol=1e-12)
    assert sum(o.log_likelihood for o in outputs) == pytest.approx(model.score(X, inputs=u), rel=1e-12)
    np.testing.assert_allclose(outputs[-1].lagged, model.predict_proba(X, inputs=u)[0], atol=1e-12)
    with pytest.raises(ValueError, match="inputs"):
        model.filter_step(state, X[0])


def test_fit_save_and_load_keep_the_input_driven_switches(tmp_path):
    model = _model(max_duration=10)
    u = np.random.default_rng(8).normal(size=(300, 1))
    X, _ = model.sample(300, random_state=9, inputs=u)
    fitted = HSMM(n_states=3, duration="poisson", max_duration=10, input_dim=1, random_state=0, n_iter=30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # 30 iterations are enough to test the file
        fitted.fit(X, inputs=u)
    assert np.diff(fitted.history_).min() > -1e-8  # EM with the logit M-step is monotone
    assert fitted.transition_coef_[frozen_coefficients(~np.eye(3, dtype=bool))].tolist() == [[0.0, 0.0]] * 3
    fitted.save(tmp_path / "model.msz")
    loaded = modeshift.load(tmp_path / "model.msz")
    np.testing.assert_array_equal(loaded.transition_coef_, fitted.transition_coef_)
    assert loaded.score(X, inputs=u) == fitted.score(X, inputs=u)
    np.testing.assert_array_equal(loaded.predict(X, inputs=u), fitted.predict(X, inputs=u))
    assert "to_0_at_zero_input" in loaded.describe() and "to_0.input0" in loaded.describe()


def test_bad_inputs_and_coefficients_are_refused():
    model = _model()
    X = np.zeros((5, 1))
    with pytest.raises(ValueError, match="input_dim=1: pass inputs"):
        model.score(X)
    with pytest.raises(ValueError, match="1 column"):
        model.score(X, inputs=np.zeros((5, 2)))
    with pytest.raises(ValueError, match="future_inputs"):
        model.forecast(X, 3, inputs=np.zeros((5, 1)))
    with pytest.raises(ValueError, match="inputs"):
        model.sample(5)
    bad = COEF.copy()
    bad[2, 1, 0] = 0.5
    with pytest.raises(ValueError, match=r"transition_coef_\[2, 1\] of an HSMM must be 0"):
        model.transition_coef_ = bad
    np.testing.assert_array_equal(model.transition_coef_, COEF)  # the refused value left nothing behind
    with pytest.raises(ValueError, match="input_slopes"):
        HSMM(n_states=3, max_duration=4, input_dim=1, input_slopes="shared").fit(X, inputs=np.zeros((5, 1)))
    with pytest.raises(NotImplementedError, match="without inputs"):
        HSMM(n_states=3, max_duration=4, input_dim=1).partial_fit(X, inputs=np.zeros((5, 1)))
    with pytest.raises(ValueError, match="input_dim=0"):
        HSMM(n_states=3, max_duration=4).fit(X, inputs=np.zeros((5, 1)))


def test_the_logit_m_step_with_excluded_moves_is_the_maximiser():
    """fit_per_source with ``allowed`` against a general-purpose optimiser of the same objective over
    the free coefficients only; the frozen ones stay 0."""
    rng = np.random.default_rng(10)
    allowed = ~np.eye(3, dtype=bool)
    covariates = np.c_[np.ones(500), rng.normal(size=(500, 2))]
    truth = rng.normal(size=(3, 2, 3))
    truth[frozen_coefficients(allowed)] = 0.0
    pairs = rng.random((500, 3, 1)) * per_source_matrices(truth, covariates, allowed)
    got = fit_per_source(pairs, covariates, np.zeros((3, 2, 3)), ridge=0.1, allowed=allowed)
    free = ~frozen_coefficients(allowed)

    def negative(values: np.ndarray) -> float:
        coef = np.zeros((3, 2, 3))
        coef[free] = values.reshape(-1, 3)
        with np.errstate(divide="ignore", invalid="ignore"):  # log 0 where no pairs are
            log_p = np.log(per_source_matrices(coef, covariates, allowed))
            return -np.where(pairs > 0, pairs * log_p, 0.0).sum() + 0.05 * np.sum(coef**2)

    best = optimize.minimize(negative, np.zeros(free.sum() * 3), method="BFGS", options={"gtol": 1e-10}).x
    np.testing.assert_allclose(got[free], best.reshape(-1, 3), atol=1e-5)
    assert not got[~free].any()


def test_two_modes_switch_for_certain_whatever_the_inputs():
    """With two modes every switch goes to the other: the inputs change nothing and have no coefficients."""
    model = HSMM(n_states=2, duration="poisson", max_duration=20, input_dim=2)
    fixed = HSMM(n_states=2, duration="poisson", max_duration=20)
    for m in (model, fixed):
        m.startprob_, m.duration_rates_ = np.array([0.3, 0.7]), np.array([3.0, 6.0])
        m.means_, m.covars_ = np.array([[0.0], [2.0]]), np.ones((2, 1, 1))
    model.transition_coef_ = np.zeros((2, 1, 3))
    fixed.transmat_ = np.array([[0.0, 1.0], [1.0, 0.0]])
    X, _ = fixed.sample(100, random_state=0)
    u = np.random.default_rng(1).normal(size=(100, 2))
    assert model.score(X, inputs=u) == pytest.approx(fixed.score(X), rel=1e-12)
    assert model.n_parameters == fixed.n_parameters
    assert not [column for column in model.describe() if ".input" in column]
