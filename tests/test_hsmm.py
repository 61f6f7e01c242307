"""HSMM: equal to the HMM with geometric durations, to enumeration on tiny cases, and recovering
duration laws and modes from simulated data."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import stats
from test_kernels_hsmm import _enumerate

import modeshift
from modeshift import ARHMM, HMM, HSMM
from modeshift._kernels import log_likelihood
from modeshift.durations import survival_of
from modeshift.models.em import ObjectiveDecreaseWarning

P3 = np.array([[0.9, 0.06, 0.04], [0.1, 0.85, 0.05], [0.02, 0.08, 0.9]])


def _hmm(transmat: np.ndarray = P3) -> HMM:
    k = len(transmat)
    hmm = HMM(n_states=k)
    hmm.startprob_ = np.arange(1.0, k + 1) / np.arange(1.0, k + 1).sum()
    hmm.transmat_ = transmat
    hmm.means_ = np.linspace(0.0, 2.5, k)[:, None]
    hmm.covars_ = np.full((k, 1, 1), 0.8)
    return hmm


def _as_hsmm(hmm: HMM, **options) -> HSMM:
    """The HSMM with geometric durations that is ``hmm``: leave with 1 - p_kk, then switch by p_kj / (1 - p_kk)."""
    p = hmm.transmat_
    stay = np.diag(p)
    model = HSMM(n_states=len(p), duration="geometric", max_duration=400, **options)
    model.startprob_ = hmm.startprob_
    model.transmat_ = p * (1 - np.eye(len(p))) / (1 - stay)[:, None]
    model.duration_probs_ = 1 - stay
    model.means_, model.covars_ = hmm.means_, hmm.covars_
    return model


@pytest.mark.parametrize("left_censoring", [False, True])
@pytest.mark.parametrize("transmat", [P3, np.array([[0.9, 0.1], [0.2, 0.8]])], ids=["K3", "K2"])
def test_geometric_durations_make_the_hmm(transmat, left_censoring):
    """0.9^400 ~ 1e-18: the truncation at D = 400 is below round-off, so every result is the HMM's
    (a geometric law is its own residual law, so left-censoring changes nothing)."""
    hmm = _hmm(transmat)
    model = _as_hsmm(hmm, left_censoring=left_censoring)
    X, _ = hmm.sample(300, random_state=1)
    X[[5, 6, 100]] = np.nan  # missing steps are integrated out by both
    assert model.score(X) == pytest.approx(hmm.score(X), abs=1e-10)
    np.testing.assert_allclose(model.predict_proba(X), hmm.predict_proba(X), atol=1e-10)
    np.testing.assert_allclose(model.filter_proba(X), hmm.filter_proba(X), atol=1e-10)
    np.testing.assert_array_equal(model.predict(X), hmm.predict(X))
    assert model.decode(X)[0] == pytest.approx(hmm.decode(X)[0], abs=1e-9)
    described, expected = model.describe(), hmm.describe()
    np.testing.assert_allclose(described["occupancy"], expected["occupancy"], rtol=1e-10)
    np.testing.assert_allclose(described["dwell_time"], expected["dwell_time"], rtol=1e-10)
    ours, theirs = model.forecast(X, 6), hmm.forecast(X, 6)
    np.testing.assert_allclose(ours.mode_probabilities, theirs.mode_probabilities, atol=1e-12)
    np.testing.assert_allclose(ours.means, theirs.means, atol=1e-12)
    np.testing.assert_allclose(ours.covariances, theirs.covariances, atol=1e-12)
    np.testing.assert_allclose(model.dwell_times_, hmm.dwell_times_, rtol=1e-12)


def test_geometric_em_reaches_the_hmm_maximum():
    """From the same start, EM on both reaches the same maximiser (their paths differ: the HMM counts
    the last segment's stays, the HSMM imputes its unseen length, E[rest] = (1 - p) / p; both
    fixed points solve p = ends / (stays + ends))."""
    hmm = _hmm()
    X, _ = hmm.sample(400, random_state=2)
    model = _as_hsmm(hmm).set_params(tol=1e-10, n_iter=5000, warm_start=True, reg_covar=0.0)
    hmm.set_params(tol=1e-10, n_iter=5000, warm_start=True, reg_covar=0.0)
    model.fit(X)
    hmm.fit(X)
    assert model.history_[0] == pytest.approx(hmm.history_[0], abs=1e-10)
    assert model.score(X) == pytest.approx(hmm.score(X), abs=1e-6)
    np.testing.assert_allclose(1 - model.duration_probs_, np.diag(hmm.transmat_), atol=1e-4)
    np.testing.assert_allclose(model.means_, hmm.means_, atol=1e-4)


@pytest.mark.parametrize(
    ("right_censoring", "left_censoring"), [(True, False), (False, False), (True, True), (False, True)]
)
@pytest.mark.parametrize("duration", ["poisson", "negative_binomial"])
def test_score_and_viterbi_match_enumeration_of_segmentations(duration, right_censoring, left_censoring):
    """The model's censoring options, through the kernels, against every segmentation of 6 steps."""
    model = HSMM(
        n_states=3, duration=duration, max_duration=4, right_censoring=right_censoring, left_censoring=left_censoring
    )
    model.startprob_ = np.array([0.5, 0.3, 0.2])
    model.transmat_ = np.array([[0.0, 0.7, 0.3], [0.4, 0.0, 0.6], [0.5, 0.5, 0.0]])
    if duration == "poisson":
        model.duration_rates_ = np.array([0.5, 1.5, 3.0])
    else:
        model.duration_shapes_, model.duration_probs_ = np.array([0.5, 2.0, 4.0]), np.array([0.3, 0.5, 0.6])
    model.means_, model.covars_ = np.array([[0.0], [1.0], [2.0]]), np.full((3, 1, 1), 0.5)
    X = np.array([0.1, 0.9, 1.2, 2.2, 1.9, 0.0])[:, None]
    pmf = model._duration.pmf()
    survival = survival_of(pmf)
    first = survival / survival.sum(axis=1, keepdims=True) if left_censoring else pmf
    weights = np.stack(
        [
            pmf,
            first,
            survival if right_censoring else pmf,
            survival_of(first) if right_censoring else first,
        ]
    )
    log_b = stats.norm.logpdf(X, model.means_[:, 0], np.sqrt(0.5))
    every = _enumerate(log_b, model.startprob_, model.transmat_, weights)
    assert model.score(X) == pytest.approx(np.log(sum(p for p, _, _ in every)), rel=1e-12)
    best_prob, best_path, best_parts = max(every, key=lambda item: item[0])
    log_prob, path = model.decode(X)
    np.testing.assert_array_equal(path, best_path)
    assert log_prob == pytest.approx(np.log(best_prob), rel=1e-12)
    segments = model.segment(X)
    np.testing.assert_array_equal(segments["duration"], [d for _, _, d, _ in best_parts])
    np.testing.assert_array_equal(segments["start"], [u for u, _, _, _ in best_parts])


def _truth(duration: str) -> HSMM:
    model = HSMM(n_states=3, duration=duration, max_duration=120)
    model.startprob_ = np.full(3, 1 / 3)
    model.transmat_ = np.array([[0.0, 0.6, 0.4], [0.5, 0.0, 0.5], [0.7, 0.3, 0.0]])
    if duration == "poisson":
        model.duration_rates_ = np.array([7.0, 19.0, 34.0])
    elif duration == "negative_binomial":
        model.duration_shapes_, model.duration_probs_ = np.array([3.0, 1.5, 6.0]), np.array([0.3, 0.1, 0.2])
    else:
        pmf = np.zeros((3, 120))
        pmf[0, [4, 5, 20]] = [0.4, 0.3, 0.3]  # 5, 6 or 21 steps
        pmf[1, 9:14] = 0.2
        pmf[2, 29:32] = [0.25, 0.5, 0.25]
        model.duration_pmf_ = pmf
    model.means_ = np.array([[0.0], [1.5], [3.0]])
    model.covars_ = np.full((3, 1, 1), 0.6)
    return model


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    seen = p > 0
    return float(np.sum(p[seen] * np.log(p[seen] / np.maximum(q[seen], 1e-300))))


@pytest.mark.parametrize("duration", ["poisson", "negative_binomial", "nonparametric"])
def test_duration_laws_and_modes_are_recovered_from_simulated_data(duration):
    truth = _truth(duration)
    X, modes = truth.sample(3000, 4, random_state=3)
    # one start: 2 restarts end at this same fit
    model = HSMM(n_states=3, duration=duration, max_duration=120, random_state=0).fit(X)
    order = np.argsort(model.means_[:, 0])
    np.testing.assert_allclose(model.means_[order], truth.means_, atol=0.1)
    accuracy = np.mean(np.concatenate(model.predict(X)) == order[np.concatenate(modes)])
    fitted, true = model._duration.pmf()[order], truth._duration.pmf()
    kl = [_kl(true[k], fitted[k]) for k in range(3)]
    print(f"{duration}: state accuracy {accuracy:.4f}, duration KL {np.round(kl, 4)}")
    assert accuracy > 0.95
    assert max(kl) < (0.05 if duration == "nonparametric" else 0.02)
    np.testing.assert_allclose(model.dwell_times_[order], truth.dwell_times_, rtol=0.1)
    assert np.all(np.diff(model.history_) > -1e-8)


def test_em_is_monotone_and_restarts_are_reproducible():
    X, _ = _truth("poisson").sample(600, random_state=4)
    a = HSMM(n_states=3, n_restarts=2, max_duration=60, random_state=5, accelerate=False).fit(X)
    b = HSMM(n_states=3, n_restarts=2, max_duration=60, random_state=5, accelerate=False).fit(X)
    assert np.all(np.diff(a.history_) > -1e-8 * np.abs(a.history_[1:]))
    np.testing.assert_array_equal(a.history_, b.history_)


def test_left_censoring_fits_without_large_decreases():
    X, _ = _truth("poisson").sample(1500, 3, random_state=6)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ObjectiveDecreaseWarning)  # monotone=False: no warning expected
        model = HSMM(n_states=3, left_censoring=True, random_state=0, max_duration=120).fit(X)
    assert model.history_[-1] > model.history_[0]
    assert not model.monotone


def test_ragged_sequences_and_missing_values():
    truth = _truth("poisson")
    X, _ = truth.sample(200, 3, random_state=7)
    X = [X[0], X[1][:37], X[2][:5]]
    X[0][[3, 50, 51]] = np.nan
    total = truth.score(X)
    assert total == pytest.approx(sum(truth.score(x) for x in X), rel=1e-12)
    assert isinstance(truth.predict(X), list) and [len(p) for p in truth.predict(X)] == [200, 37, 5]
    model = HSMM(n_states=3, max_duration=60, random_state=0).fit(X)
    assert np.isfinite(model.score(X))


def test_max_duration_is_chosen_by_the_documented_rule():
    truth = _truth("poisson")
    X, _ = truth.sample(2000, random_state=8)
    model = HSMM(n_states=3, n_iter=0, random_state=0).fit(X)
    emission = model._make_emission()
    emission.initialize(X[:, None] if X.ndim == 1 else X, np.random.default_rng(0))
    labels = emission.log_likelihoods(X).argmax(axis=1)
    longest = max(len(list(run)) for _, run in __import__("itertools").groupby(labels))
    assert model.max_duration_ == min(2000, max(16, 3 * longest))
    assert HSMM(n_states=1, n_iter=0).fit(X).max_duration_ == 1
    assert HSMM(n_states=3, max_duration=50, n_iter=0).fit(X).max_duration_ == 50


def test_a_hand_set_pmf_gives_max_duration_and_a_conflict_is_an_error():
    X, _ = _truth("poisson").sample(300, random_state=9)
    model = HSMM(n_states=3, duration="nonparametric", n_iter=3, fixed={"duration_pmf_"})
    pmf = np.full((3, 25), 1 / 25)
    model.duration_pmf_ = pmf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(X)
    assert model.max_duration_ == 25
    np.testing.assert_array_equal(model.duration_pmf_, pmf)
    with pytest.raises(ValueError, match=r"duration_pmf_ must have shape \(3, 30\)"):
        HSMM(n_states=3, duration="nonparametric", max_duration=30).duration_pmf_ = pmf
    clash = HSMM(n_states=3, duration="nonparametric")
    clash.duration_pmf_ = pmf
    with pytest.raises(ValueError, match="duration_pmf_ covers 1..25 but max_duration=30"):
        clash.set_params(max_duration=30).fit(X)


def test_n_states_auto_chooses_the_number_of_modes():
    X, _ = _truth("poisson").sample(800, random_state=10)
    model = HSMM(n_states="auto", max_states=3, max_duration=60, random_state=0).fit(X)
    assert model.n_states_ == 3
    assert model.selection_["chosen"].sum() == 1 and len(model.selection_) == 3
    assert model.predict_proba(X).shape == (800, 3)


def test_samples_follow_the_duration_law():
    truth = _truth("poisson")
    _, modes = truth.sample(20_000, random_state=11)
    cuts = np.flatnonzero(np.diff(modes)) + 1
    lengths, owners = np.diff(cuts), modes[cuts[:-1]]  # whole segments only
    for k in range(3):
        assert lengths[owners == k].mean() == pytest.approx(truth.dwell_times_[k], rel=0.08)
    assert not np.any(modes[cuts] == modes[cuts - 1])


def test_posterior_draws_average_to_the_smoothed_probabilities():
    truth = _truth("poisson")
    X, _ = truth.sample(150, random_state=12)
    draws = np.stack([truth.sample_posterior(X, random_state=seed) for seed in range(400)])
    frequencies = np.stack([(draws == k).mean(axis=0) for k in range(3)], axis=1)
    assert np.abs(frequencies - truth.predict_proba(X)).max() < 0.1


@pytest.mark.parametrize("emission", ["gmm", "categorical", "poisson"])
def test_other_emissions_fit(emission, tmp_path):
    rng = np.random.default_rng(13)
    modes = np.repeat(np.tile([0, 1], 10), rng.poisson(15, 20) + 1)
    if emission == "gmm":
        X = rng.normal(modes * 3.0, 1.0) + rng.choice([-0.5, 0.5], size=len(modes))
    elif emission == "categorical":
        X = np.where(rng.random(len(modes)) < 0.8, modes * 2, 1)
    else:
        X = rng.poisson(np.where(modes, 8.0, 2.0))
    model = HSMM(n_states=2, emission=emission, n_mix=2, random_state=0).fit(X[:, None])
    accuracy = np.mean(model.predict(X[:, None]) == modes)
    assert max(accuracy, 1 - accuracy) > 0.9
    model.save(tmp_path / "m.msz")
    assert modeshift.load(tmp_path / "m.msz").score(X[:, None]) == model.score(X[:, None])


def test_autoregressive_emissions_make_an_ar_hsmm():
    truth = HSMM(n_states=2, emission="autoregressive", max_duration=80)
    truth.startprob_, truth.transmat_ = np.array([1.0, 0.0]), np.array([[0.0, 1.0], [1.0, 0.0]])
    truth.duration_rates_ = np.array([20.0, 30.0])
    truth.coefs_, truth.intercepts_ = np.array([[[0.9]], [[-0.5]]]), np.array([[0.5], [0.0]])
    truth.covars_ = np.full((2, 1, 1), 0.05)
    X, modes = truth.sample(3000, random_state=14)
    model = HSMM(n_states=2, emission="autoregressive", max_duration=80, n_restarts=2, random_state=0).fit(X)
    np.testing.assert_allclose(np.sort(model.coefs_.ravel()), [-0.5, 0.9], atol=0.05)
    np.testing.assert_allclose(np.sort(model.duration_rates_), [20.0, 30.0], rtol=0.15)


def test_ar_hsmm_forecasts_are_the_arhmms_with_geometric_durations():
    """A bivariate AR(2)-HSMM with geometric durations is an ARHMM (0.9^400 ~ 1e-18 of truncation):
    its forecasts, batch and from a stream's state (one seen for fewer steps than the order too),
    are the ARHMM's exact moments."""
    hmm = ARHMM(n_states=2, order=2)
    hmm.startprob_, hmm.transmat_ = np.array([0.6, 0.4]), np.array([[0.9, 0.1], [0.2, 0.8]])
    hmm.coefs_ = np.array([[[0.5, 0.1, 0.2, 0.0], [0.0, 0.4, 0.0, 0.1]], [[-0.3, 0.0, 0.1, 0.0], [0.2, 0.6, 0.0, 0.0]]])
    hmm.intercepts_, hmm.covars_ = np.array([[1.0, 0.0], [0.0, -1.0]]), np.array([np.eye(2), [[0.5, 0.2], [0.2, 1.0]]])
    model = HSMM(n_states=2, duration="geometric", max_duration=400, emission="autoregressive", order=2)
    stay = np.diag(hmm.transmat_)
    model.startprob_, model.transmat_, model.duration_probs_ = hmm.startprob_, np.array([[0, 1.0], [1.0, 0]]), 1 - stay
    model.coefs_, model.intercepts_, model.covars_ = hmm.coefs_, hmm.intercepts_, hmm.covars_
    X = [hmm.sample(120, random_state=2)[0], hmm.sample(60, random_state=3)[0]]
    ours, theirs = model.forecast(X, 5), hmm.forecast(X, 5)
    for a, b in zip(ours.per_sequence(), theirs.per_sequence(), strict=True):
        np.testing.assert_allclose(a.mode_probabilities, b.mode_probabilities, atol=1e-12)
        np.testing.assert_allclose(a.means, b.means, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(a.covariances, b.covariances, rtol=1e-10, atol=1e-12)
    *_, last = model.filter_stream(X[0])
    np.testing.assert_allclose(last.prediction.means, theirs.per_sequence()[0].means[:1], rtol=1e-10)
    state, _ = model.filter_step(model.filter_init(), X[0][0])  # one row seen: the earlier lag is zero
    np.testing.assert_allclose(model.filter_forecast(state, 2).covariances[1], hmm.filter_forecast(
        hmm.filter_step(hmm.filter_init(), X[0][0])[0], 2).covariances[1], rtol=1e-10)  # fmt: skip


def test_bad_parameters_and_inputs_are_refused():
    model = HSMM(n_states=2, max_duration=10)
    with pytest.raises(ValueError, match="zero diagonal"):
        model.transmat_ = np.array([[0.5, 0.5], [0.5, 0.5]])
    with pytest.raises(ValueError, match="HSMM: duration must be"):
        HSMM(duration="weibull").fit(np.zeros(20))
    with pytest.raises(ValueError, match=r"fixed names unknown parameters \['transition_coef_'\]"):
        HSMM(n_states=2, fixed={"transition_coef_"}).fit(np.arange(20.0))
    with pytest.raises(ValueError, match="inputs were given but this HSMM has input_dim=0"):
        HSMM(n_states=2).fit(np.zeros(20), inputs=np.zeros((20, 1)))


def test_long_sequences_do_not_underflow():
    """10^5 steps: the scaled recursions stay finite and equal the HMM's."""
    hmm = _hmm()
    X, _ = hmm.sample(100_000, random_state=15)
    model = _as_hsmm(hmm)
    assert model.score(X) == pytest.approx(hmm.score(X), rel=1e-11)
    posteriors = model.predict_proba(X)
    np.testing.assert_allclose(posteriors.sum(axis=1), 1.0, atol=1e-9)
    assert np.mean(model.predict(X) == hmm.predict(X)) == 1.0


@pytest.mark.slow
def test_a_million_steps_do_not_underflow():
    hmm = _hmm(np.array([[0.99, 0.01], [0.02, 0.98]]))
    X, _ = hmm.sample(1_000_000, random_state=16)
    model = _as_hsmm(hmm)
    model.max_duration = model.max_duration_ = 2000  # 0.99^2000 ~ 2e-9 (relative, per segment)
    assert model.score(X) == pytest.approx(hmm.score(X), rel=1e-9)
    posteriors = model.predict_proba(X)
    assert np.isfinite(posteriors).all()
    np.testing.assert_allclose(posteriors, hmm.predict_proba(X), atol=1e-6)


def test_one_mode_is_a_renewal_process_with_the_emission_alone():
    X = np.random.default_rng(17).normal(1.0, 2.0, size=(300, 1))
    model = HSMM(n_states=1, random_state=0).fit(X)
    assert model.max_duration_ == 1 and model.transmat_.tolist() == [[1.0]]
    mean, var = X.mean(), X.var()
    assert model.score(X) == pytest.approx(stats.norm.logpdf(X, mean, np.sqrt(var)).sum(), rel=1e-6)


def _switching(rate: float, separation: float, max_duration: int = 200) -> HSMM:
    model = HSMM(n_states=2, duration="poisson", max_duration=max_duration)
    model.startprob_, model.transmat_ = np.array([0.5, 0.5]), np.array([[0.0, 1.0], [1.0, 0.0]])
    model.duration_rates_ = np.full(2, rate)
    model.means_, model.covars_ = np.array([[0.0], [separation]]), np.ones((2, 1, 1))
    return model


@pytest.mark.parametrize("rate", [3.0, 30.0])
def test_a_segment_far_longer_than_its_law_expects_is_computed_exactly(rate):
    """A 200-step run under segments of mean 4: the product of scaled likelihoods over a segment
    would overflow; the rolling messages stay finite, and the HMM on the K D expanded states
    (mode, steps left) on modeshift's HMM kernels gives the same log-likelihood."""
    model = _switching(rate, 6.0)
    X = np.zeros((600, 1))
    X[200:400] = 6.0
    pmf = model._segment_laws()[0][0]
    d = model.max_duration
    initial = (model.startprob_[:, None] * pmf).ravel()
    matrix = np.zeros((2 * d, 2 * d))
    for k in range(2):
        rows = k * d + np.arange(1, d)
        matrix[rows, rows - 1] = 1.0
        matrix[k * d] = (model.transmat_[k][:, None] * pmf).ravel()
    expanded = np.repeat(stats.norm.logpdf(X, model.means_[:, 0], 1.0), d, axis=1)
    expected = log_likelihood(np.ascontiguousarray(expanded), np.array([0, 600]), initial, matrix[None])[0]
    assert model.score(X) == pytest.approx(expected, abs=1e-9)
    assert np.isfinite(model.predict_proba(X)).all()


def test_an_overflowing_backward_pass_is_a_clear_error():
    """A 1000-step run under segments of mean 3 and modes 20 sd apart: the backward messages pass 1e308."""
    model = _switching(2.0, 20.0)
    X = np.zeros((3000, 1))
    X[1000:2000] = 20.0
    assert np.isfinite(model.score(X))
    with pytest.raises(ValueError, match="duration laws are far too short"):
        model.predict_proba(X)
