"""Subspace identification: exact on noise-free systems, any state dimension, clear errors."""

import numpy as np
import pytest

from modeshift.data import as_sequences
from modeshift.models.subspace import default_horizon, identify


def _noise_free(rng, n_sequences=6, n_steps=80):
    """An affine system with a 3-D state seen through one observation: y = C x + d."""
    angle = 0.3
    A = np.zeros((3, 3))
    A[:2, :2] = 0.97 * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    A[2, 2], A[2, 0] = 0.9, 0.2
    b, C, d = np.array([0.1, -0.2, 0.05]), np.array([[1.0, 0.5, -0.7]]), np.array([2.0])
    runs = []
    for _ in range(n_sequences):
        x, ys = rng.normal(size=3), []
        for _ in range(n_steps):
            ys.append(C @ x + d)
            x = A @ x + b
        runs.append(np.array(ys))
    return A, b, C, runs


def _observability(C, A, horizon):
    return np.vstack([C @ np.linalg.matrix_power(A, k) for k in range(horizon)])


def test_noise_free_system_identified_up_to_basis():
    """Exact up to a change of state basis T (C T, T^-1 A T), and the centred states reproduce
    the data and follow x_t+1 = A x_t + b."""
    A, _, C, runs = _noise_free(np.random.default_rng(0))
    seqs = as_sequences(runs)
    estimate = identify(seqs, state_dim=3)
    A_hat, C_hat = estimate.dynamics_matrix, estimate.observation_matrix
    assert estimate.singular_values[3] < 1e-8 * estimate.singular_values[0]  # rank exactly n
    T = np.linalg.pinv(_observability(C, A, 6)) @ _observability(C_hat, A_hat, 6)
    np.testing.assert_allclose(C @ T, C_hat, atol=1e-8)
    np.testing.assert_allclose(np.linalg.solve(T, A @ T), A_hat, atol=1e-8)
    x, y = estimate.states, seqs.values
    inner = np.arange(seqs.offsets[1] - default_horizon(3, 1))  # steps whose future window is whole
    fitted = x[inner] @ C_hat.T
    np.testing.assert_allclose(fitted - fitted.mean(0), y[inner] - y[inner].mean(0), atol=1e-8)
    np.testing.assert_allclose(x[inner[1:]], x[inner[:-1]] @ A_hat.T + estimate.dynamics_offset, atol=1e-8)


def test_more_observations_than_states_and_missing_values():
    """p > n works too, and NaNs (filled by column means) do not break it."""
    rng = np.random.default_rng(1)
    A, _, C, runs = _noise_free(rng)
    mixing = rng.normal(size=(4, 1))
    runs = [run @ mixing.T + 0.01 * rng.normal(size=(len(run), 4)) for run in runs]
    runs[0][5, 2] = np.nan
    estimate = identify(as_sequences(runs), state_dim=3)
    assert estimate.observation_matrix.shape == (4, 3)
    assert np.isfinite(estimate.states).all()
    np.testing.assert_allclose(np.abs(np.linalg.eigvals(estimate.dynamics_matrix)).max(), 0.97, atol=0.02)


def test_errors_name_the_problem():
    seqs = as_sequences(np.arange(10.0)[:, None])
    with pytest.raises(ValueError, match="needs sequences of more than"):
        identify(seqs, state_dim=2)
    with pytest.raises(ValueError, match="horizon=2 is too short"):
        identify(as_sequences(np.random.default_rng(0).normal(size=(100, 1))), state_dim=3, horizon=2)


def _simulate(rng, A, C, Q, R, n_steps):
    """y_t = C x_t + N(0, R), x_t+1 = A x_t + N(0, Q), from x_0 = 0."""
    x, ys = np.zeros(len(A)), []
    state_noise, observation_noise = np.linalg.cholesky(Q), np.linalg.cholesky(R)
    for _ in range(n_steps):
        x = A @ x + state_noise @ rng.standard_normal(len(A))
        ys.append(C @ x + observation_noise @ rng.standard_normal(len(R)))
    return np.array(ys)


def _spectrum(A, C, Q, R, frequency):
    """The observations' spectral density C (e^iw - A)^-1 Q (e^-iw - A')^-1 C' + R: basis-free."""
    transfer = C @ np.linalg.inv(np.exp(1j * frequency) * np.eye(len(A)) - A)
    return (transfer @ Q @ transfer.conj().T).real + R


def test_a_known_system_is_recovered_in_its_invariants():
    """20,000 steps of a 2-D state seen through 2 noisy observations: the eigenvalues of A, R and the
    spectrum of the observations (transfer function and noises together) within a few percent."""
    A = np.array([[0.9, 0.2], [-0.1, 0.7]])
    C = np.array([[1.0, 0.5], [0.2, 1.0]])
    Q = np.array([[1.0, 0.3], [0.3, 0.5]])
    R = np.array([[0.8, 0.1], [0.1, 0.6]])
    y = _simulate(np.random.default_rng(0), A, C, Q, R, 20_000)
    estimate = identify(as_sequences(y), state_dim=2)
    A_hat, C_hat = estimate.dynamics_matrix, estimate.observation_matrix
    eigenvalues = np.sort_complex(np.linalg.eigvals(A_hat))
    np.testing.assert_allclose(eigenvalues, np.sort_complex(np.linalg.eigvals(A)), rtol=0.03)
    np.testing.assert_allclose(estimate.observation_covariance, R, atol=0.05 * np.abs(R).max())
    for frequency in (0.0, 0.5, 1.5, np.pi):
        truth = _spectrum(A, C, Q, R, frequency)
        found = _spectrum(A_hat, C_hat, estimate.transition_covariance, estimate.observation_covariance, frequency)
        np.testing.assert_allclose(found, truth, atol=0.05 * np.abs(truth).max())


def test_a_state_seen_in_noise_as_large_as_its_own_keeps_the_noises_apart():
    """x_t+1 = 0.9 x_t + N(0, 1), y_t = x_t + N(0, 1): q and r (in the basis C = 1) within 10 %. The
    residuals of y on estimated states would hold the states' error too, and call most of q noise."""
    y = _simulate(np.random.default_rng(1), np.array([[0.9]]), np.eye(1), np.eye(1), np.eye(1), 20_000)
    estimate = identify(as_sequences(y), state_dim=1)
    c = estimate.observation_matrix[0, 0]
    assert estimate.dynamics_matrix[0, 0] == pytest.approx(0.9, rel=0.02)
    assert estimate.transition_covariance[0, 0] * c**2 == pytest.approx(1.0, rel=0.1)
    assert estimate.observation_covariance[0, 0] == pytest.approx(1.0, rel=0.1)
