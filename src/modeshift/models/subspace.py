"""Subspace identification: a linear state-space model read off the block-Hankel matrix of the data.

A linear system x_t+1 = A x_t + w_t, y_t = C x_t + v_t with state dimension n is seen, ``horizon``
= i steps at a time, through its extended observability matrix Γ = [C; C A; ...; C A^(i-1)]
(i p x n): stacking the future f_t = [y_t, ..., y_t+i-1] and the past p_t = [y_t-i, ..., y_t-1] of
every step t as the columns of two block-Hankel matrices F and P, the best linear prediction of
the future from the past is

    F P' (P P')^-1 P = Γ X + (noise),

with X the (Kalman-filtered) states at the columns' times, so it has rank n. Its truncated SVD
U_n S_n V_n' gives Γ = U_n S_n^1/2 and X = S_n^1/2 V_n' (one choice of state basis); then C is the
first block row of Γ and A solves the shift equation Γ_[:-p] A = Γ_[p:]. This is the
deterministic-stochastic N4SID family (Van Overschee & De Moor 1996, "Subspace Identification
for Linear Systems", ch. 4, with unit weights; Ho & Kalman 1966 for the noise-free case).
Unlike a PCA of the observations, it needs only i p >= n + p, so it identifies a state of any
dimension from observations of any dimension: a height seen alone reveals the velocity through
its future.

Affine dynamics x_t+1 = A x_t + b + w_t (and an offset in y) add the same vector to every column
of F and of P, so centring their rows removes it and leaves Γ unchanged; the states are then
centred ones, and b is the mean of x_t+1 - A x_t over them.

The noises come from the data's autocovariances Λ_k = E[y_t+k y_t'] (a stochastic realisation).
With w and v uncorrelated and Σ = E[x x'] the state's covariance (Σ = A Σ A' + Q),

    Λ_k = C A^k Σ C'  (k >= 1),    Λ_0 = C Σ C' + R,

so Σ solves the lags k = 1 .. 2 i by least squares (linear in Σ), then R = Λ_0 - C Σ C' and
Q = Σ - A Σ A' (eigenvalues clipped to keep both positive definite). R is what the observations
carry beyond the state's own covariance: it is identified whenever A is invertible (a change of Σ
that the lags cannot see leaves C Σ C' alone), Q only up to such changes when n > p (the
smallest Σ is taken). The residuals of y_t on C x^_t, with x^_t a state estimated from the data,
would not do: they hold the state's estimation error too (C P C' + R, the innovations), so on a
state seen in noise comparable to its own they put the noise in the wrong place.
The estimate is a starting point, not a maximum-likelihood fit: EM refines it
(:class:`~modeshift.models.lds.LinearGaussianSSM`).

>>> import numpy as np
>>> from modeshift.models.subspace import identify
>>> from modeshift.data import as_sequences
>>> rng = np.random.default_rng(0)
>>> angle = 0.2
>>> A = 0.99 * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
>>> x, ys = np.array([1.0, 0.0]), []
>>> for _ in range(3000):
...     x = A @ x + 0.1 * rng.standard_normal(2)
...     ys.append(x[0] + 0.05 * rng.standard_normal())
>>> estimate = identify(as_sequences(np.array(ys)[:, None]), state_dim=2)
>>> np.sort_complex(np.linalg.eigvals(estimate.dynamics_matrix)).round(2)  # 0.99 e^(+-0.2i)
array([0.97-0.2j, 0.97+0.2j])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from modeshift.data import Sequences

__all__ = ["SubspaceEstimate", "default_horizon", "identify", "noise_covariances"]

_MIN_HORIZON = 5  # block rows of past and future beyond the minimum: they average out observation noise


@dataclass(frozen=True)
class SubspaceEstimate:
    """A linear-Gaussian state-space model found by :func:`identify`, its states centred:
    y_t ≈ C x_t + (the data's mean), x_t+1 = A x_t + b + N(0, Q).

    ``states`` (n_steps, n): at every step the x whose predicted future Γ x fits the next
    ``horizon`` observations best in least squares (near a sequence's end the window repeats
    its last step, so those states are rougher)."""

    dynamics_matrix: np.ndarray  # A (n, n)
    dynamics_offset: np.ndarray  # b (n,)
    transition_covariance: np.ndarray  # Q (n, n)
    observation_matrix: np.ndarray  # C (p, n)
    observation_covariance: np.ndarray  # R (p, p)
    states: np.ndarray  # (n_steps, n)
    singular_values: np.ndarray  # of the projected future, largest first: a gap after n backs the choice of n


def default_horizon(state_dim: int, obs_dim: int) -> int:
    """i = ceil(n / p) + 1 block rows (the fewest that identify A from the shift of Γ), plus
    ``_MIN_HORIZON`` for robustness to noise."""
    return -(-state_dim // obs_dim) + 1 + _MIN_HORIZON


def identify(
    seqs: Sequences, state_dim: int, horizon: int | None = None, noise: str = "autocovariance"
) -> SubspaceEstimate:
    """Estimate (A, b, Q, C, R) and centred states of an n-dimensional linear system.

    ``horizon`` (the block rows i of past and future) defaults to :func:`default_horizon`, or
    fewer if the longest sequence is shorter than 2 i + 1 steps (but at least ceil(n / p) + 1).
    ``noise``: ``"autocovariance"`` (the default), Q and R by :func:`noise_covariances`, right for
    a linear system; ``"innovations"``, the covariances of the residuals of the estimated states
    (x_t+1 - A x_t) and of the data (y_t - C x_t, plus 1 % of its variance), which hold the
    states' estimation error (Q too small, R too large when the noise is comparable to the
    state's) but cannot be thrown far by data no linear system fits (on switching spirals seen
    through one observation, R = 0.69 where the truth is 0.01 and the autocovariances give 4.3).

    ``seqs`` holds real observations (missing entries are filled by their column's mean);
    sequences shorter than 2 ``horizon`` + 1 steps contribute no columns but still get states.
    Raises ValueError if no sequence is long enough.
    """
    n = int(state_dim)
    Y = np.array(seqs.values, dtype=float)
    p = Y.shape[1]
    if horizon is None:  # as many block rows as the longest sequence allows, up to the default
        longest = int(np.diff(seqs.offsets).max())
        i = max(min(default_horizon(n, p), (longest - 1) // 2), -(-n // p) + 1)
    else:
        i = int(horizon)
    if noise not in ("autocovariance", "innovations"):
        raise ValueError(f"noise must be 'autocovariance' or 'innovations', got {noise!r}")
    if i * p < n + p:
        raise ValueError(f"horizon={i} is too short to identify state_dim={n} from {p} observed feature(s)")
    holes = np.isnan(Y)
    Y[holes] = np.take(np.nanmean(Y, axis=0), np.nonzero(holes)[1])
    windows = [np.arange(first + i, last - i + 1) for first, last in zip(seqs.offsets[:-1], seqs.offsets[1:])]
    columns = np.concatenate(windows)
    if columns.size <= 2 * i * p:
        raise ValueError(
            f"subspace identification with horizon {i} needs sequences of more than {2 * i} steps "
            f"(and more than {2 * i * p} windows in all); the longest has {int(np.diff(seqs.offsets).max())}"
        )
    past = _hankel(Y, columns - i, i)
    future = _hankel(Y, columns, i)
    future_mean = future.mean(axis=1)
    past -= past.mean(axis=1, keepdims=True)
    future -= future_mean[:, None]
    coefficients = np.linalg.lstsq(past.T, future.T, rcond=None)[0].T
    projected = coefficients @ past
    U, S, Vt = np.linalg.svd(projected, full_matrices=False)
    root = np.sqrt(S[:n])
    gamma = U[:, :n] * root
    C = gamma[:p]
    A = np.linalg.lstsq(gamma[:-p], gamma[p:], rcond=None)[0]
    radius = np.abs(np.linalg.eigvals(A)).max()
    if radius >= 1.0:  # a start must be stable: EM's smoother is then well posed
        A *= 0.999 / radius

    # every step's state: the least-squares state whose predicted future fits the data best
    states = np.linalg.lstsq(gamma, _future_windows(Y, seqs.offsets, i).T - future_mean[:, None], rcond=None)[0].T
    scale = max(float(np.mean(future**2)), 1e-12)
    linked = np.concatenate([w[1:] for w in windows])
    innovations = states[linked] - states[linked - 1] @ A.T
    b = innovations.mean(axis=0)
    if noise == "autocovariance":
        Q, R = noise_covariances(A, C, _autocovariances(Y - future_mean[:p], seqs.offsets, 2 * i))
    else:
        Q = np.atleast_2d(np.cov(innovations.T, bias=True)) + 1e-6 * scale * np.eye(n)
        R = np.atleast_2d(np.cov(future[:p] - C @ (root[:, None] * Vt[:n]), bias=True)) + 1e-2 * scale * np.eye(p)
    return SubspaceEstimate(
        dynamics_matrix=A,
        dynamics_offset=b,
        transition_covariance=_clipped(Q, 1e-6 * scale),
        observation_matrix=C,
        observation_covariance=_clipped(R, 1e-2 * scale),
        states=states,
        singular_values=S,
    )


def noise_covariances(A: np.ndarray, C: np.ndarray, lags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Q, R) of x_t+1 = A x_t + w_t, y_t = C x_t + v_t (w, v uncorrelated) whose autocovariances
    are ``lags`` (L + 1, p, p), Λ_0 .. Λ_L: Σ the least-squares (smallest) solution of
    C A^k Σ C' = Λ_k for k = 1 .. L, then Q = Σ - A Σ A' and R = Λ_0 - C Σ C', symmetric but not
    necessarily positive definite (sampling error)."""
    n = len(A)
    rows, powers = [], np.eye(n)
    for _ in range(1, len(lags)):
        powers = powers @ A
        rows.append(np.kron(C @ powers, C))  # vec(C A^k Σ C') = (C A^k ⊗ C) vec(Σ), row-major vec
    solution = np.linalg.lstsq(np.vstack(rows), lags[1:].reshape(-1), rcond=None)[0]
    Sigma = solution.reshape(n, n)
    Sigma = 0.5 * (Sigma + Sigma.T)
    Q = Sigma - A @ Sigma @ A.T
    R = lags[0] - C @ Sigma @ C.T
    return 0.5 * (Q + Q.T), 0.5 * (R + R.T)


def _autocovariances(Y: np.ndarray, offsets: np.ndarray, max_lag: int) -> np.ndarray:
    """Λ_k = mean over t of y_t+k y_t' (k = 0 .. ``max_lag``) within each sequence of ``Y`` (centred)."""
    p = Y.shape[1]
    lags = np.zeros((max_lag + 1, p, p))
    counts = np.zeros(max_lag + 1)
    for first, last in zip(offsets[:-1], offsets[1:]):
        for k in range(min(max_lag + 1, last - first)):
            lags[k] += Y[first + k : last].T @ Y[first : last - k]
            counts[k] += last - first - k
    return lags / np.maximum(counts, 1.0)[:, None, None]


def _clipped(S: np.ndarray, floor: float) -> np.ndarray:
    """The symmetric matrix ``S`` with its eigenvalues raised to at least ``floor``."""
    values, vectors = np.linalg.eigh(0.5 * (S + S.T))
    return (vectors * np.maximum(values, floor)) @ vectors.T


def _hankel(Y: np.ndarray, firsts: np.ndarray, horizon: int) -> np.ndarray:
    """Block-Hankel matrix (horizon p, len(firsts)): column j stacks y_firsts[j] .. y_firsts[j]+horizon-1."""
    return np.concatenate([Y[firsts + lag].T for lag in range(horizon)], axis=0)


def _future_windows(Y: np.ndarray, offsets: np.ndarray, horizon: int) -> np.ndarray:
    """Each step's future window [y_t, ..., y_t+horizon-1] (n_steps, horizon p); near a sequence's
    end (and in a sequence shorter than ``horizon``) the window's missing steps repeat its last one."""
    rows = []
    for first, last in zip(offsets[:-1], offsets[1:]):
        steps = np.arange(first, last)[:, None] + np.arange(horizon)
        rows.append(np.minimum(steps, last - 1))
    index = np.concatenate(rows)
    return Y[index].reshape(len(index), -1)
