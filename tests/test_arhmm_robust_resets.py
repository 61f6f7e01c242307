"""Robust (Student-t) resets of an ARHMM: exact EM against brute force, the Gaussian limit, robustness."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats
from test_resets import _model as _gaussian_model
from test_resets import _reset_of

from modeshift import ARHMM, load

NU = 4.0


def _model(rng, K=2, D=1, order=1, ties="pair", dof=NU):
    """test_resets' random ARHMM with resets, its noise Student-t with ``dof`` (None: Gaussian)."""
    model = _gaussian_model(rng, K, D, order, ties)
    model.reset_dof = dof  # the same parameters, read as another law
    return model


def _brute_force(model, y):
    """Every mode path's log p(y, path), written from the definition with scipy's Student-t, and for
    each path the switches' statistics: sum E[s | y_t] [y_t, x_t, 1] [y_t, x_t, 1]^T per reset."""
    T, K, p, D = len(y), model.n_states, model.order, y.shape[1]
    R = model.reset_coefs_.shape[0]
    out = {}
    for path in itertools.product(range(K), repeat=T):
        log_p = np.log(model.startprob_[path[0]]) + sum(np.log(model.transmat_[a, b]) for a, b in zip(path, path[1:]))
        outer, counts = np.zeros((R, D + p * D + 1, D + p * D + 1)), np.zeros(R)
        for t in range(p, T):
            lags = np.concatenate([y[t - i] for i in range(1, p + 1)])
            i, j = path[t - 1], path[t]
            if i == j:
                log_p += stats.multivariate_normal(
                    model.coefs_[j] @ lags + model.intercepts_[j], model.covars_[j]
                ).logpdf(y[t])
                continue
            r = _reset_of(model, i, j)
            mean, scale = model.reset_coefs_[r] @ lags + model.reset_intercepts_[r], model.reset_covars_[r]
            log_p += stats.multivariate_t(mean, scale, df=model.reset_dof).logpdf(y[t])
            residual = y[t] - mean
            delta = residual @ np.linalg.solve(scale, residual)
            row = np.concatenate([y[t], lags, [1.0]])
            outer[r] += (model.reset_dof + D) / (model.reset_dof + delta) * np.outer(row, row)
            counts[r] += 1.0
        out[path] = (log_p, outer, counts)
    return out


@pytest.mark.parametrize("K,D,order,ties", [(2, 1, 1, "pair"), (3, 2, 1, "pair"), (2, 1, 2, "destination")])
def test_likelihood_posteriors_viterbi_and_statistics_match_brute_force(K, D, order, ties):
    rng = np.random.default_rng(100 + 10 * K + D + order)
    model = _model(rng, K, D, order, ties)
    sequences = [rng.normal(size=(T, D)) for T in (5, 4)]
    total = viterbi_total = 0.0
    outer = counts = 0.0
    for y, posteriors, path in zip(sequences, model.predict_proba(sequences), model.predict(sequences)):
        joint = _brute_force(model, y)
        log_z = np.logaddexp.reduce([value[0] for value in joint.values()])
        want = np.zeros((len(y), K))
        for z, (log_p, path_outer, path_counts) in joint.items():
            weight = np.exp(log_p - log_z)
            want[np.arange(len(y)), z] += weight
            outer, counts = outer + weight * path_outer, counts + weight * path_counts
        np.testing.assert_allclose(posteriors, want, rtol=1e-8, atol=1e-12)
        best = max(joint, key=lambda z: joint[z][0])
        assert tuple(path) == best
        total, viterbi_total = total + log_z, viterbi_total + joint[best][0]
    assert model.score(sequences) == pytest.approx(total, rel=1e-10)
    assert model.decode(sequences)[0] == pytest.approx(viterbi_total, rel=1e-10)
    got = model.expected_statistics(sequences)["resets"]
    np.testing.assert_allclose(got["count"], counts, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(got["yy"], outer[:, :D, :D], rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(got["yz"], outer[:, :D, D:], rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(got["zz"], outer[:, D:, D:], rtol=1e-8, atol=1e-12)


def test_the_streaming_filter_reads_the_student_t():
    rng = np.random.default_rng(4)
    model = _model(rng, K=3, D=2, order=1, ties="destination")
    y = rng.normal(size=(40, 2))
    outs = list(model.filter_stream(y))
    np.testing.assert_allclose(np.array([out.probabilities for out in outs[1:]]), model.filter_proba(y)[1:], atol=1e-10)
    assert sum(out.log_likelihood for out in outs[1:]) == pytest.approx(model.score(y), rel=1e-10)


def _contaminated(seed: int, n_steps: int = 6000):
    """Two modes decaying to their own level; entering mode 1 flips the sign of y_t-1 and adds 1
    (the reset, noise sd 0.01), but one switch in five is a relaunch: y_t drawn anywhere in [-3, 3]."""
    rng = np.random.default_rng(seed)
    stay = 0.96
    y, modes = np.zeros(n_steps), np.zeros(n_steps, dtype=int)
    y[0] = 2.0
    for t in range(1, n_steps):
        modes[t] = modes[t - 1] if rng.random() < stay else 1 - modes[t - 1]
        if modes[t] == modes[t - 1]:
            slope, level = (0.8, 0.4) if modes[t] == 0 else (0.5, -0.5)
            y[t] = slope * y[t - 1] + level + 0.1 * rng.normal()
        elif modes[t] == 1 and rng.random() < 0.2:
            y[t] = rng.uniform(-3, 3)
        else:
            slope = 0.5 if modes[t] == 0 else -0.8
            y[t] = slope * y[t - 1] + 1.0 + 0.01 * rng.normal()
    return y[:, None], modes


def test_a_student_t_reset_is_not_pulled_by_the_switches_it_does_not_explain():
    """The t's reset is the clean switches' (slope -0.8, intercept 1); the Gaussian's is pulled,
    its noise swollen to cover the relaunches."""
    y, _ = _contaminated(0)
    fits = {}
    for dof in (None, 3.0):
        model = ARHMM(2, resets="destination", reset_dof=dof, n_restarts=2, random_state=0).fit(y)
        assert np.diff(model.history_).min() > -1e-8 * abs(model.history_[-1])  # EM is exact: monotone
        into_flip = int(np.argmin(model.intercepts_[:, 0]))  # mode 1 has the lower level
        fits[dof] = [model.reset_coefs_[into_flip, 0, 0], model.reset_intercepts_[into_flip, 0]]
        fits[dof].append(np.sqrt(model.reset_covars_[into_flip, 0, 0]))
    np.testing.assert_allclose(fits[3.0][:2], [-0.8, 1.0], atol=0.03)
    assert abs(fits[None][1] - 1.0) > 0.2 and fits[None][2] > 0.5  # measured: 1.34 and 0.90
    assert fits[3.0][2] < fits[None][2] / 10  # 0.058: a t of fixed nu still widens with 1 outlier in 5


@pytest.mark.filterwarnings("ignore:.*stopped at its cap")
def test_a_huge_nu_is_the_gaussian_model():
    truth = _model(np.random.default_rng(1), K=2, D=1, order=1, ties="destination", dof=None)
    y, _ = truth.sample(800, random_state=0)
    fits = [
        ARHMM(2, resets="destination", reset_dof=dof, n_iter=30, tol=0.0, random_state=0).fit(y) for dof in (None, 1e6)
    ]
    np.testing.assert_allclose(fits[1].history_, fits[0].history_, rtol=1e-6)
    for name in ("reset_coefs_", "reset_intercepts_", "reset_covars_", "coefs_", "transmat_"):
        np.testing.assert_allclose(getattr(fits[1], name), getattr(fits[0], name), rtol=1e-5, atol=1e-8)


def test_sampled_switches_follow_the_student_t():
    model = _model(np.random.default_rng(2), K=2, D=1, order=1, ties="destination", dof=3.0)
    model.transmat_ = np.array([[0.5, 0.5], [0.5, 0.5]])
    y, modes = model.sample(6000, random_state=0)
    y = y[:, 0]
    switched = np.flatnonzero(modes[1:] != modes[:-1]) + 1
    r = modes[switched]
    residuals = y[switched] - (model.reset_coefs_[r, 0, 0] * y[switched - 1] + model.reset_intercepts_[r, 0])
    standardised = residuals / np.sqrt(model.reset_covars_[r, 0, 0])
    assert stats.kstest(standardised, stats.t(3.0).cdf).pvalue > 1e-3
    assert stats.kstest(standardised / np.sqrt(3.0), stats.norm.cdf).pvalue < 1e-3  # the t's variance, Gaussian


def test_saved_and_loaded_and_refused(tmp_path):
    model = _model(np.random.default_rng(3), K=2, D=1, order=1, ties="destination")
    y, _ = model.sample(200, random_state=0)
    model.save(tmp_path / "m.msz")
    back = load(tmp_path / "m.msz")
    assert back.reset_dof == NU and back.score(y) == model.score(y)
    with pytest.raises(ValueError, match="reset_dof=4.0 is the resets' noise"):
        ARHMM(2, reset_dof=4.0).fit(y)
    with pytest.raises(ValueError, match="reset_dof"):
        ARHMM(2, resets="destination", reset_dof=2.0).fit(y)


def test_on_a_relaunched_ball_the_student_t_reset_reads_the_restitution():
    """A ball whose state is observed (0.1 mm noise), restitution 0.8, relaunched when a bounce
    would peak below 5 cm: the restitution is the y_t-2 coefficient of the reset into the impact
    mode. Measured on seeds 0-4: 0.787-0.791 with nu = 3, 0.628-0.713 with Gaussian resets, which
    the relaunches pull; impacts found either way (accuracy above 0.99)."""
    from modeshift.datasets import simulators
    from modeshift.metrics import mode_accuracy

    ball = {"observation_sd": 1e-4, "restitution": (0.8, 0.8), "launch_height": (1.0, 2.0)}
    for seed in range(5):
        sim = simulators.bouncing_ball(1000, random_state=seed, n_sequences=10, **ball)
        truth = np.concatenate([m[2:] for m in sim.modes])
        read = {}
        for dof in (None, 3.0):
            model = ARHMM(2, order=2, resets="destination", reset_dof=dof, random_state=seed).fit(sim.observations)
            paths = model.predict(sim.observations)
            impact = int(np.argmin(np.bincount(np.concatenate(paths), minlength=2)))
            read[dof] = model.reset_coefs_[impact, 0, 1]
            assert mode_accuracy(truth, np.concatenate([p[2:] for p in paths])) > 0.99
        assert read[3.0] == pytest.approx(0.8, rel=0.025)
        assert read[None] < 0.75
