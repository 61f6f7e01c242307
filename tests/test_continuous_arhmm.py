"""ContinuousARHMM: the flow's law against brute force, the exact reduction to the ARHMM at unit
gaps, monotone generalised EM, and the irregularly sampled thermostat."""

import numpy as np
import pytest
from scipy import integrate, linalg

from modeshift import ARHMM, ContinuousARHMM
from modeshift.datasets.simulators import thermostat
from modeshift.metrics import mode_accuracy
from modeshift.models.continuous_arhmm import _van_loan, expm_stack, flow_moments
from modeshift.models.jump_process import endpoint_statistics, expm_metzler


def _flow(rng, d):
    A = 0.4 * rng.normal(size=(d, d)) - 0.3 * np.eye(d)
    L = rng.normal(size=(d, d))
    return A, rng.normal(size=d), L @ L.T + 0.1 * np.eye(d)


@pytest.mark.parametrize("d", [1, 2, 3])
def test_flow_moments_are_the_integrals(d):
    """Φ = expm(A Δ), c = ∫ e^As b ds, S = ∫ e^As Σ e^A's ds, by quadrature, on both paths."""
    rng = np.random.default_rng(d)
    A, b, Sigma = _flow(rng, d)
    gaps = np.array([0.05, 0.7, 2.5])
    for Phi, c, S in (flow_moments(A, b, Sigma, gaps), _van_loan(A, b, Sigma, gaps)):
        for g, gap in enumerate(gaps):
            np.testing.assert_allclose(Phi[g], linalg.expm(A * gap), atol=1e-10)
            c_true = integrate.quad_vec(lambda s: linalg.expm(A * s) @ b, 0, gap)[0]
            S_true = integrate.quad_vec(lambda s: linalg.expm(A * s) @ Sigma @ linalg.expm(A * s).T, 0, gap)[0]
            np.testing.assert_allclose(c[g], c_true, atol=1e-9)
            np.testing.assert_allclose(S[g], S_true, atol=1e-9)


def test_defective_drift_and_expm_stack():
    """A double integrator (not diagonalisable) goes by the block exponentials: position
    variance Δ^3 / 3 under unit noise on the velocity; expm_stack matches scipy's expm."""
    A, Sigma = np.array([[0.0, 1.0], [0.0, 0.0]]), np.diag([0.0, 1.0])
    Phi, c, S = flow_moments(A, np.array([0.0, -9.81]), Sigma, np.array([0.5]))
    np.testing.assert_allclose(Phi[0], [[1.0, 0.5], [0.0, 1.0]], atol=1e-12)
    np.testing.assert_allclose(c[0], [-9.81 * 0.125, -9.81 * 0.5], atol=1e-12)
    np.testing.assert_allclose(S[0], [[0.5**3 / 3, 0.5**2 / 2], [0.5**2 / 2, 0.5]], atol=1e-12)
    M = 3 * np.random.default_rng(0).normal(size=(20, 4, 4))
    np.testing.assert_allclose(expm_stack(M), np.stack([linalg.expm(m) for m in M]), rtol=1e-10, atol=1e-10)


def _model(rng, K=2, d=2):
    model = ContinuousARHMM(n_states=K)
    flows = [_flow(rng, d) for _ in range(K)]
    model.drift_matrices_ = np.stack([f[0] for f in flows])
    model.drift_offsets_ = np.stack([f[1] for f in flows])
    model.diffusion_covariances_ = np.stack([f[2] for f in flows])
    rates = rng.uniform(0.05, 0.3, (K, K))
    np.fill_diagonal(rates, 0.0)
    np.fill_diagonal(rates, -rates.sum(axis=1))
    model.rate_matrix_, model.startprob_ = rates, np.full(K, 1.0 / K)
    return model


def test_unit_gaps_are_the_discrete_arhmm():
    """Δ = 1 everywhere: the ARHMM with coefs expm(A), intercepts c(1), covars S(1) and
    transmat expm(Q) has the same log-likelihood and posteriors."""
    rng = np.random.default_rng(0)
    model = _model(rng)
    X, _ = model.sample(150, random_state=1)
    discrete = ARHMM(n_states=2, order=1)
    laws = [
        flow_moments(A, b, S, np.ones(1))
        for A, b, S in zip(*(model.drift_matrices_, model.drift_offsets_, model.diffusion_covariances_))
    ]
    discrete.coefs_ = np.stack([law[0][0] for law in laws])
    discrete.intercepts_ = np.stack([law[1][0] for law in laws])
    discrete.covars_ = np.stack([law[2][0] for law in laws])
    discrete.transmat_ = linalg.expm(model.rate_matrix_)
    discrete.startprob_ = model.startprob_
    assert model.score(X) == pytest.approx(discrete.score(X), rel=1e-10)
    assert model.score(X, times=np.arange(150.0)) == pytest.approx(discrete.score(X), rel=1e-10)
    np.testing.assert_allclose(model.predict_proba(X), discrete.predict_proba(X), atol=1e-9)


def test_soft_endpoint_counts_weight_the_intervals():
    """counts=2 is the interval listed twice; the statistics scale with the weights."""
    rates = np.array([[-0.5, 0.5], [0.2, -0.2]])
    starts, ends, lengths = np.array([0, 1, 0]), np.array([1, 1, 0]), np.array([0.5, 2.0, 1.0])
    twice = endpoint_statistics(rates, np.r_[starts, starts[:1]], np.r_[ends, ends[:1]], np.r_[lengths, lengths[:1]])
    weighted = endpoint_statistics(rates, starts, ends, lengths, counts=np.array([2.0, 1.0, 1.0]))
    for name in ("log_likelihood", "jumps", "time_at_risk"):
        np.testing.assert_allclose(weighted[name], twice[name])
    assert expm_metzler(rates[None] * 0.5)[0, 0, 1] > 0


def test_em_never_lowers_the_log_likelihood_and_recovers_the_flows():
    rng = np.random.default_rng(3)
    truth = _model(rng, d=1)
    truth.rate_matrix_ = np.array([[-0.05, 0.05], [0.05, -0.05]])
    truth.drift_matrices_ = np.array([[[-0.5]], [[-0.5]]])
    truth.drift_offsets_ = np.array([[2.0], [-2.0]])
    truth.diffusion_covariances_ = np.full((2, 1, 1), 0.05)
    times = np.cumsum(rng.exponential(1.0, 800))
    X, modes = truth.sample(800, random_state=2, times=times)
    model = ContinuousARHMM(n_states=2, random_state=0).fit(X, times=times)
    assert (np.diff(model.history_) >= -1e-8).all()
    assert mode_accuracy(modes, model.predict(X, times=times)) > 0.95
    np.testing.assert_allclose(np.sort([float(e[0]) for e in model.describe()["equilibrium"]]), [-4.0, 4.0], rtol=0.1)


def _accuracy(seed, times, n_steps=1000):
    sim = thermostat(n_steps, random_state=seed, times=times, observation_sd=0.0)
    model = ContinuousARHMM(n_states=2, random_state=seed).fit(sim.observations, times=sim.times)
    return mode_accuracy(sim.modes, model.predict(sim.observations, times=sim.times))


def test_irregular_thermostat_is_as_accurate_as_the_regular_one():
    """Exponential gaps against unit gaps, the same continuous-time system (the temperature
    observed without noise: this model's state is its observation)."""
    irregular, regular = _accuracy(0, "exponential"), _accuracy(0, np.arange(1000.0))
    assert regular > 0.9 and irregular >= regular - 0.02, (irregular, regular)


@pytest.mark.slow
def test_irregular_thermostat_over_five_seeds():
    irregular = [_accuracy(seed, "exponential") for seed in range(5)]
    regular = [_accuracy(seed, np.arange(1000.0)) for seed in range(5)]
    assert np.mean(irregular) >= np.mean(regular) - 0.02, (irregular, regular)


def test_bad_times_and_sampling():
    model = _model(np.random.default_rng(0))
    X, modes = model.sample(20, random_state=0, times=np.linspace(0, 5, 20))
    assert X.shape == (20, 2) and modes.shape == (20,)
    with pytest.raises(ValueError, match="time step 1: time stamp repeats"):
        model.score(X, times=np.r_[0.0, 0.0, np.arange(2.0, 20.0)])
    with pytest.raises(ValueError, match="strictly increasing"):
        model.sample(5, times=[0.0, 1.0, 1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="times must"):
        thermostat(10, times="uniform")
    with pytest.raises(ValueError, match="ContinuousARHMM: n_states must be"):
        ContinuousARHMM(n_states="auto").fit(X)
