"""Resets of an ARHMM: brute force over mode paths, reduction to the plain model, EM, recovery, refusals."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats

from modeshift import ARHMM, load
from modeshift._kernels import pair_hmm


def _model(rng, K=2, D=1, order=1, ties="pair"):
    model = ARHMM(n_states=K, order=order, resets=ties)
    model.startprob_ = rng.dirichlet(np.ones(K))
    model.transmat_ = rng.dirichlet(np.ones(K), size=K)
    model.coefs_ = 0.4 * rng.normal(size=(K, D, order * D))
    model.intercepts_ = rng.normal(size=(K, D))
    w = rng.normal(size=(K, D, D))
    model.covars_ = w @ np.swapaxes(w, 1, 2) + 0.5 * np.eye(D)
    R = K * (K - 1) if ties == "pair" else K
    model.reset_coefs_ = rng.normal(size=(R, D, order * D))
    model.reset_intercepts_ = rng.normal(size=(R, D))
    w = rng.normal(size=(R, D, D))
    model.reset_covars_ = w @ np.swapaxes(w, 1, 2) + 0.3 * np.eye(D)
    return model


def _reset_of(model, i, j):
    K = model.n_states
    if model.resets == "destination":
        return j
    return [(a, b) for a in range(K) for b in range(K) if a != b].index((i, j))


def _joint(model, y):
    """log p(y_order.., path | y_..order) of every mode path, written from the definition."""
    T, K, p = len(y), model.n_states, model.order
    out = {}
    for path in itertools.product(range(K), repeat=T):
        log_p = np.log(model.startprob_[path[0]]) + sum(np.log(model.transmat_[a, b]) for a, b in zip(path, path[1:]))
        for t in range(p, T):
            lags = np.concatenate([y[t - i] for i in range(1, p + 1)])
            i, j = path[t - 1], path[t]
            if i == j:
                mean, cov = model.coefs_[j] @ lags + model.intercepts_[j], model.covars_[j]
            else:
                r = _reset_of(model, i, j)
                mean, cov = model.reset_coefs_[r] @ lags + model.reset_intercepts_[r], model.reset_covars_[r]
            log_p += stats.multivariate_normal(mean, cov).logpdf(y[t])
        out[path] = log_p
    return out


@pytest.mark.parametrize("K,D,order,ties", [(2, 1, 1, "pair"), (3, 2, 1, "pair"), (3, 1, 2, "destination")])
def test_matches_brute_force(K, D, order, ties):
    rng = np.random.default_rng(10 * K + D + order)
    model = _model(rng, K, D, order, ties)
    sequences = [rng.normal(size=(T, D)) for T in (5, order + 1, 4)]
    total, viterbi_total, switches = 0.0, 0.0, np.zeros(model.reset_coefs_.shape[0])
    for y, posteriors, path in zip(sequences, model.predict_proba(sequences), model.predict(sequences)):
        joint = _joint(model, y)
        log_z = np.logaddexp.reduce(list(joint.values()))
        want = np.zeros((len(y), K))
        for z, log_p in joint.items():
            weight = np.exp(log_p - log_z)
            want[np.arange(len(y)), z] += weight
            for t in range(order, len(y)):
                if z[t - 1] != z[t]:
                    switches[_reset_of(model, z[t - 1], z[t])] += weight
        np.testing.assert_allclose(posteriors, want, rtol=1e-8, atol=1e-12)
        best = max(joint, key=joint.get)
        assert tuple(path) == best
        total += log_z
        viterbi_total += joint[best]
    assert model.score(sequences) == pytest.approx(total, rel=1e-10)
    assert model.decode(sequences)[0] == pytest.approx(viterbi_total, rel=1e-10)
    stats_ = model.expected_statistics(sequences)
    np.testing.assert_allclose(stats_["resets"]["count"], switches, rtol=1e-8, atol=1e-12)


def test_kernel_with_time_varying_transitions_matches_brute_force():
    """pair_hmm with (T, K, K) matrices (a recurrent chain): log-likelihood, posteriors, per-step pairs."""
    rng = np.random.default_rng(5)
    T, K = 5, 3
    x = rng.normal(size=T)
    values = np.column_stack([rng.normal(size=T), x, np.ones(T)])
    values[0, 1:] = 0.0  # the first step is conditioned on
    flow = rng.normal(size=(T, K))
    flow[0] = 0.0
    weights, sds = rng.normal(size=(K, 1, 2)), rng.uniform(0.5, 2.0, size=K)  # one reset per destination
    constants, index = -0.5 * np.log(2 * np.pi * sds**2), np.tile(np.arange(K), (K, 1))
    resets = (weights, (1 / sds)[:, None, None], constants, index, None)
    initial, matrices = rng.dirichlet(np.ones(K)), rng.dirichlet(np.ones(K), size=(T, K))

    def log_evidence(t, i, j):
        if t == 0:
            return 0.0
        if i == j:
            return flow[t, j]
        return stats.norm(weights[j, 0] @ values[t, 1:], sds[j]).logpdf(values[t, 0])

    joint = {
        z: np.log(initial[z[0]])
        + sum(np.log(matrices[t, z[t - 1], z[t]]) + log_evidence(t, z[t - 1], z[t]) for t in range(1, T))
        for z in itertools.product(range(K), repeat=T)
    }
    log_z = np.logaddexp.reduce(list(joint.values()))
    posteriors, pairs = np.zeros((T, K)), np.zeros((T, K, K))
    for z, log_p in joint.items():
        posteriors[np.arange(T), z] += np.exp(log_p - log_z)
        pairs[np.arange(1, T), z[:-1], z[1:]] += np.exp(log_p - log_z)
    got = pair_hmm.forward_backward(flow, values, 1, resets, np.array([0, T]), initial, matrices)
    assert got[0][0] == pytest.approx(log_z, rel=1e-12)
    np.testing.assert_allclose(got[1], posteriors, atol=1e-12)
    np.testing.assert_allclose(got[2], pairs, atol=1e-12)
    path, log_prob = pair_hmm.viterbi(flow, values, 1, resets, np.array([0, T]), np.log(initial), np.log(matrices))
    assert tuple(path) == max(joint, key=joint.get) and log_prob[0] == pytest.approx(max(joint.values()), rel=1e-12)


def test_recurrent_resets_fit():
    """Guards and resets together: EM is monotone and the resets are still found."""
    truth = _truth()
    y, _ = truth.sample(3000, random_state=0)
    model = ARHMM(2, order=1, resets="destination", recurrent=True, n_restarts=2, random_state=0).fit(y)
    assert np.diff(model.history_).min() > -1e-8
    order = np.argsort(model.intercepts_[:, 0])[::-1]
    np.testing.assert_allclose(model.reset_coefs_[order].ravel(), [0.5, -0.8], rtol=0.05)
    paths, modes = model.sample(30, random_state=0)
    assert np.isfinite(paths).all() and model.forecast(y, 3).means.shape == (3, 1)


def test_posterior_paths_follow_the_brute_force_law():
    rng = np.random.default_rng(7)
    model = _model(rng, K=2, D=1, order=1, ties="pair")
    y = rng.normal(size=(5, 1))
    joint = _joint(model, y)
    log_z = np.logaddexp.reduce(list(joint.values()))
    paths = np.array(model.sample_posterior([y] * 4000, random_state=0))
    for z in sorted(joint, key=joint.get)[-4:]:  # the likeliest paths, switches included
        share = np.mean((paths == z).all(axis=1))
        want = np.exp(joint[z] - log_z)
        assert abs(share - want) < 4 * np.sqrt(want * (1 - want) / 4000) + 1e-3


def test_resets_equal_to_the_flows_are_the_plain_model():
    rng = np.random.default_rng(3)
    model = _model(rng, K=3, D=2, order=2, ties="pair")
    targets = [j for i in range(3) for j in range(3) if i != j]
    model.reset_coefs_, model.reset_intercepts_ = model.coefs_[targets], model.intercepts_[targets]
    model.reset_covars_ = model.covars_[targets]
    plain = ARHMM(3, order=2)
    for name in ("startprob_", "transmat_", "coefs_", "intercepts_", "covars_"):
        setattr(plain, name, getattr(model, name))
    y = [rng.normal(size=(60, 2)), rng.normal(size=(25, 2))]
    assert model.score(y) == pytest.approx(plain.score(y), abs=1e-10)
    np.testing.assert_allclose(np.vstack(model.predict_proba(y)), np.vstack(plain.predict_proba(y)), atol=1e-10)
    np.testing.assert_array_equal(np.concatenate(model.predict(y)), np.concatenate(plain.predict(y)))
    np.testing.assert_allclose(np.vstack(model.filter_proba(y)), np.vstack(plain.filter_proba(y)), atol=1e-10)


def _truth() -> ARHMM:
    """Two modes that decay to their own level; entering mode 1 flips the sign of y_t-1 and adds 1."""
    truth = ARHMM(2, order=1, resets="destination")
    truth.startprob_, truth.transmat_ = np.array([1.0, 0.0]), np.array([[0.96, 0.04], [0.04, 0.96]])
    truth.coefs_, truth.intercepts_ = np.array([[[0.8]], [[0.5]]]), np.array([[0.4], [-0.5]])
    truth.covars_ = np.full((2, 1, 1), 0.01)
    truth.reset_coefs_, truth.reset_intercepts_ = np.array([[[0.5]], [[-0.8]]]), np.array([[1.0], [1.0]])
    truth.reset_covars_ = np.full((2, 1, 1), 1e-4)
    return truth


def test_em_is_monotone_and_recovers_a_known_reset():
    truth = _truth()
    y, modes = truth.sample(4000, random_state=0)
    model = ARHMM(2, order=1, resets="destination", n_restarts=3, random_state=0).fit(y)
    assert np.diff(model.history_).min() > -1e-8
    order = np.argsort(model.intercepts_[:, 0])[::-1]  # mode 0 has the higher level
    np.testing.assert_allclose(model.reset_coefs_[order].ravel(), [0.5, -0.8], rtol=0.05)
    np.testing.assert_allclose(model.reset_intercepts_[order].ravel(), [1.0, 1.0], rtol=0.05)
    assert np.mean(order[model.predict(y)][1:] == modes[1:]) > 0.97
    assert model.score(y) > ARHMM(2, order=1, n_restarts=3, random_state=0).fit(y).score(y) + 100


def test_persistence_automaton_sample_forecast(tmp_path):
    truth = _truth()
    y, _ = truth.sample(300, random_state=1)
    truth.save(tmp_path / "m.msz")
    back = load(tmp_path / "m.msz")
    assert back.score(y) == truth.score(y)
    np.testing.assert_array_equal(back.predict(y), truth.predict(y))
    resets = truth.automaton().resets
    assert set(resets) == {(0, 1), (1, 0)}
    np.testing.assert_array_equal(resets[0, 1][0], [[-0.8]])  # destination ties: the reset into mode 1
    assert "resets_into" in truth.describe()
    forecast = truth.forecast(y, 5)
    assert forecast.means.shape == (5, 1) and np.isfinite(forecast.means).all()
    samples, modes = truth.sample(50, n_sequences=2, random_state=0)
    assert len(samples) == 2 and samples[0].shape == (50, 1)


def test_sampling_follows_the_resets():
    """Every switch into mode 1 lands near -0.8 y_t-1 + 1: the reset, not mode 1's flow."""
    truth = _truth()
    y, modes = truth.sample(3000, random_state=2)
    into = np.flatnonzero((modes[1:] == 1) & (modes[:-1] == 0)) + 1
    residual = y[into, 0] - (-0.8 * y[into - 1, 0] + 1.0)
    assert len(into) > 20 and np.abs(residual).max() < 0.5


def test_the_flow_of_a_mode_left_at_once_is_not_counted():
    """A switch reads the reset, so the flow of a mode the chain leaves at once (p_11 = 0) is read
    at no step: another flow there changes no likelihood, and its coefficient, intercept and
    variance are not counted; without resets a switch into the mode reads its flow."""
    rng = np.random.default_rng(3)
    model = _model(rng, 2, 1, 1, "destination")
    model.transmat_ = np.array([[0.8, 0.2], [1.0, 0.0]])
    y = rng.normal(size=(50, 1))
    other = ARHMM(2, order=1, resets="destination")
    for name in model.parameter_names:
        setattr(other, name, np.copy(getattr(model, name)))
    other.coefs_[1], other.intercepts_[1], other.covars_[1] = -0.9, 2.0, 4.0 * model.covars_[1]
    assert other.score(y) == pytest.approx(model.score(y), abs=1e-10 * abs(model.score(y)))
    staying = ARHMM(2, order=1, resets="destination")
    for name in model.parameter_names:
        setattr(staying, name, getattr(model, name))
    staying.transmat_ = np.array([[0.8, 0.2], [0.9, 0.1]])
    assert staying.n_parameters - model.n_parameters == 3
    plain, plain_other = ARHMM(2, order=1), ARHMM(2, order=1)
    for name in ("startprob_", "transmat_", "coefs_", "intercepts_", "covars_"):
        setattr(plain, name, getattr(model, name))
        setattr(plain_other, name, getattr(other, name))
    assert plain_other.score(y) != pytest.approx(plain.score(y), rel=1e-3)
    assert plain.n_parameters == staying.n_parameters - 2 * 3  # every flow, and no resets


def test_counts_and_refusals():
    truth = _truth()
    plain = ARHMM(2, order=1)
    for name in ("startprob_", "transmat_", "coefs_", "intercepts_", "covars_"):
        setattr(plain, name, getattr(truth, name))
    assert truth.n_parameters == plain.n_parameters + 2 * 3  # per reset: a coefficient, an intercept, a variance
    y, _ = truth.sample(100, random_state=0)
    with pytest.raises(ValueError, match="resets"):
        ARHMM(2, resets="destination", input_dim=1).fit(y, inputs=np.zeros((100, 1)))
    with pytest.raises(ValueError, match="resets"):
        ARHMM(2, resets="both").fit(y)
    with pytest.raises(ValueError, match="reset_coefs_"):
        truth.reset_coefs_ = np.zeros((3, 1, 1))


def test_bouncing_ball_restitution_within_5_percent():
    """The ball's restitution (0.8) is the y_t-2 coefficient of the reset into the impact mode, on
    five seeds of a ball whose state is observed (0.1 mm noise, no relaunches); impacts are found."""
    from modeshift.datasets import simulators
    from modeshift.metrics import mode_accuracy

    clean = {"observation_sd": 1e-4, "restitution": (0.8, 0.8), "min_peak": 0.0, "launch_height": (1.0, 2.0)}
    for seed in range(5):
        sim = simulators.bouncing_ball(300, random_state=seed, n_sequences=10, **clean)
        model = ARHMM(2, order=2, resets="destination", random_state=seed).fit(sim.observations)
        paths = model.predict(sim.observations)
        impact = int(np.argmin(np.bincount(np.concatenate(paths), minlength=2)))
        assert model.reset_coefs_[impact, 0, 1] == pytest.approx(0.8, rel=0.05)
        truth = np.concatenate([m[2:] for m in sim.modes])
        assert mode_accuracy(truth, np.concatenate([p[2:] for p in paths])) > 0.99
