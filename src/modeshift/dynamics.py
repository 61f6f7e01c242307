"""Linear-Gaussian dynamics: one affine regression with Gaussian noise per mode.

In mode k, ``y = W_k z + e`` with ``e ~ N(0, S_k)``. The regressors z hold whatever
drives y: the lagged observations and a constant of an autoregressive HMM, the
previous state and the inputs of a linear-Gaussian state-space model (y = x_t), or
the state and inputs of its observation equation. Everything these models need from
a linear-Gaussian map lives here once: log-likelihoods, additive sufficient
statistics (given mode weights, or expected ones from a smoother), the M-step with
fixed columns, ridge and covariance regularisation, and sampling.
"""

from __future__ import annotations

import numpy as np

from modeshift.data import missingness_patterns
from modeshift.kernels import inverse_cholesky, regression_log_density, weighted_moments
from modeshift.statistics import Statistics

__all__ = ["LinearDynamics", "ensure_positive_definite", "observation_statistics"]

NOISE_TYPES = ("full", "diag")


class LinearDynamics:
    """K affine-Gaussian regressions ``y = W_k z + N(0, S_k)``.

    Parameters
    ----------
    n_modes : int
    noise : {"full", "diag"}
        Structure of each S_k.
    shared_noise : bool
        One S for all modes.
    ridge : float
        Matrix-normal prior ``W_k | S_k ~ MN(0, S_k, I / ridge)`` on the columns in
        ``ridge_columns`` (a boolean mask; default all): shrinks them towards 0.
    reg_covar : float
        Prior ``-reg_covar / 2 * tr(S_k^-1)``, which adds ``reg_covar`` to the
        diagonal of the residual scatter.

    ``weights`` (K, d, q) and ``covariances`` (K, d, d) are the parameters.
    The M-step is the exact maximiser of expected log-likelihood plus log prior.
    """

    def __init__(
        self,
        n_modes: int,
        noise: str = "full",
        shared_noise: bool = False,
        ridge: float = 0.0,
        reg_covar: float = 0.0,
        ridge_columns: np.ndarray | None = None,
    ):
        if noise not in NOISE_TYPES:
            raise ValueError(f"noise must be one of {NOISE_TYPES}, got {noise!r}")
        if ridge < 0 or reg_covar < 0:
            raise ValueError(f"ridge and reg_covar must be >= 0, got {ridge} and {reg_covar}")
        self.n_modes = int(n_modes)
        self.noise = noise
        self.shared_noise = shared_noise
        self.ridge = float(ridge)
        self.reg_covar = float(reg_covar)
        self.ridge_columns = None if ridge_columns is None else np.asarray(ridge_columns, dtype=bool)
        self.weights: np.ndarray | None = None
        self.covariances: np.ndarray | None = None

    def _ridge_mask(self, q: int) -> np.ndarray:
        mask = np.ones(q, dtype=bool) if self.ridge_columns is None else self.ridge_columns
        if mask.shape != (q,):
            raise ValueError(f"ridge_columns must have {q} entries, got {mask.shape}")
        return mask if self.ridge > 0 else np.zeros(q, dtype=bool)

    # ------------------------------------------------------------------- inference
    def log_likelihoods(self, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """log N(y_t | W_k z_t, S_k) as an (n, K) array, for rows y (n, d) and z (n, q)."""
        return regression_log_density(y, z, self.weights, self.covariances)

    def statistics(self, rows: np.ndarray, n_responses: int, mode_weights: np.ndarray) -> Statistics:
        """Sufficient statistics of rows ``[y, z]`` (n, d + q), the first ``n_responses`` = d
        columns the responses, weighted by (n, K)."""
        d = n_responses
        counts, _, outer = weighted_moments(rows, mode_weights)
        return Statistics(yy=outer[:, :d, :d], yz=outer[:, :d, d:], zz=outer[:, d:, d:], count=counts)

    def m_step(self, stats: Statistics, fixed_columns: np.ndarray | None = None, fix_covariances: bool = False) -> None:
        """Maximise over the free columns of each W_k (``fixed_columns`` keep their
        current values) and, unless ``fix_covariances``, over S_k. A mode without
        weight keeps its parameters."""
        yy, yz, zz, count = stats["yy"], stats["yz"], stats["zz"], np.asarray(stats["count"], dtype=float)
        K, d, q = yz.shape
        fixed = np.zeros(q, dtype=bool) if fixed_columns is None else np.asarray(fixed_columns, dtype=bool)
        mask = self._ridge_mask(q)
        prior_zz = zz + np.diag(np.where(mask, self.ridge, 0.0)) if mask.any() else zz
        weights = np.zeros((K, d, q)) if self.weights is None else self.weights.copy()
        present = count > 1e-10
        # the usual case, every mode with weight, indexes by views rather than copies
        active = slice(None) if present.all() else np.flatnonzero(present)
        W, gram, target = weights[active], prior_zz[active], yz[active]
        if not fixed.any():
            W = _solve_right(target, gram)
        elif not fixed.all():
            free, held = np.flatnonzero(~fixed), np.flatnonzero(fixed)
            target = target[:, :, free] - W[:, :, held] @ gram[:, free][:, :, held].transpose(0, 2, 1)
            W[:, :, free] = _solve_right(target, gram[:, free][:, :, free])
        weights[active] = W
        cross = W @ np.swapaxes(yz[active], 1, 2)
        scatter = np.zeros((K, d, d))
        scatter[active] = yy[active] - cross - np.swapaxes(cross, 1, 2) + W @ gram @ np.swapaxes(W, 1, 2)
        self.weights = weights
        if fix_covariances:
            return
        eye = np.eye(d)
        n_prior = int(mask.sum())
        if self.shared_noise:
            total = scatter[active].sum(axis=0) + self.reg_covar * eye
            covariances = np.broadcast_to(total / (count[active].sum() + K * n_prior), (K, d, d)).copy()
            active = slice(None) if present.any() else active
        else:
            covariances = (scatter + self.reg_covar * eye) / np.maximum(count + n_prior, 1e-300)[:, None, None]
        if self.noise == "diag":
            covariances = np.einsum("kii->ki", covariances)[:, :, None] * eye
        updated = np.broadcast_to(eye, (K, d, d)).copy() if self.covariances is None else self.covariances.copy()
        updated[active] = ensure_positive_definite(covariances[active])
        self.covariances = updated

    def log_prior(self) -> float:
        """Log density of the ridge and covariance priors, up to a constant."""
        if self.weights is None or self.covariances is None:
            return 0.0
        mask = self._ridge_mask(self.weights.shape[2])
        factors = inverse_cholesky(self.covariances[:1] if self.shared_noise else self.covariances)
        total = -0.5 * self.reg_covar * float(np.square(factors).sum())  # sum_k tr(S_k^-1)
        if mask.any():
            precisions = np.linalg.inv(self.covariances)
            Wr = self.weights[:, :, mask]
            total -= 0.5 * self.ridge * float(np.einsum("kij,kil,kjl->", precisions, Wr, Wr))
            total -= 0.5 * mask.sum() * float(np.linalg.slogdet(self.covariances)[1].sum())
        return total

    def n_parameters(self, fixed_columns: np.ndarray | None = None, fix_covariances: bool = False) -> int:
        K, d, q = self.weights.shape
        free_columns = q - (0 if fixed_columns is None else int(np.sum(fixed_columns)))
        count = K * d * free_columns
        if not fix_covariances:
            per_matrix = d if self.noise == "diag" else d * (d + 1) // 2
            count += per_matrix * (1 if self.shared_noise else K)
        return count

    def sample(self, z: np.ndarray, mode: int, rng: np.random.Generator) -> np.ndarray:
        """One draw of y given regressors z (q,) in ``mode``."""
        noise = np.linalg.cholesky(self.covariances[mode]) @ rng.standard_normal(self.covariances.shape[1])
        return self.weights[mode] @ z + noise


def observation_statistics(
    Y: np.ndarray,
    means: np.ndarray,
    covs: np.ndarray,
    known: np.ndarray,
    C: np.ndarray,
    D: np.ndarray,
    R: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Expected sufficient statistics (Syy, Syz, Szz, count) of the regression of y_t on
    z_t = [x_t, v_t] in ``y_t = C x_t + D v_t + e_t``, ``e_t ~ N(0, R)``, with x_t Gaussian
    (``means`` (T, n), ``covs`` (T, n, n)) and the regressors v_t ``known`` (T, m).

    Missing entries of y (NaN) are integrated out exactly under the current C, D, R: given the
    observed entries o, the missing ones m are y_m = M x + k + noise with M = C_m - G C_o,
    G = R_mo R_oo^-1. A wholly missing step contributes nothing; ``count`` is the number of
    steps with an observed entry.
    """
    n, (p, m) = means.shape[1], D.shape
    Syy, Syz, Szz = np.zeros((p, p)), np.zeros((p, n + m)), np.zeros((n + m, n + m))
    count = 0
    for rows, observed in missingness_patterns(Y):
        if not observed.any():
            continue
        rows = slice(None) if rows is None else rows  # a view when nothing is missing
        X, V = means[rows], known[rows]
        Sx = covs[rows].sum(axis=0) + X.T @ X
        Sxv = X.T @ V
        Szz[:n, :n] += Sx
        Szz[:n, n:] += Sxv
        Szz[n:, :n] += Sxv.T
        Szz[n:, n:] += V.T @ V
        count += len(X)
        if observed.all():
            Yg = Y[rows]
            Syy += Yg.T @ Yg
            Syz[:, :n] += Yg.T @ X
            Syz[:, n:] += Yg.T @ V
            continue
        o, mi = np.flatnonzero(observed), np.flatnonzero(~observed)
        G = np.linalg.solve(R[np.ix_(o, o)], R[np.ix_(o, mi)]).T  # R_mo R_oo^-1
        M = np.zeros((p, n))
        M[mi] = C[mi] - G @ C[o]
        Yo = Y[rows][:, o]
        K = np.zeros((len(X), p))
        K[:, o] = Yo
        K[:, mi] = V @ (D[mi] - G @ D[o]).T + Yo @ G.T
        noise = np.zeros((p, p))
        noise[np.ix_(mi, mi)] = R[np.ix_(mi, mi)] - G @ R[np.ix_(o, mi)]
        KX = K.T @ X
        Syy += M @ Sx @ M.T + M @ KX.T + KX @ M.T + K.T @ K + len(X) * noise
        Syz[:, :n] += M @ Sx + KX
        Syz[:, n:] += (X @ M.T + K).T @ V
    return Syy, Syz, Szz, count


def _solve_right(Syz: np.ndarray, Szz: np.ndarray) -> np.ndarray:
    """Syz Szz^-1 for stacks (K, d, q) and (K, q, q); least squares where Szz is singular."""
    try:
        return np.swapaxes(np.linalg.solve(Szz, np.swapaxes(Syz, 1, 2)), 1, 2)
    except np.linalg.LinAlgError:
        return np.stack([np.linalg.lstsq(A, B.T, rcond=None)[0].T for A, B in zip(Szz, Syz)])


def ensure_positive_definite(S: np.ndarray) -> np.ndarray:
    """S (d, d) or a stack (K, d, d) symmetrised, plus the smallest diagonal jitter that makes
    each matrix numerically positive definite."""
    S = 0.5 * (S + np.swapaxes(S, -1, -2))
    try:
        np.linalg.cholesky(S)
        return S
    except np.linalg.LinAlgError:
        if S.ndim == 3:
            return np.stack([ensure_positive_definite(matrix) for matrix in S])
    eye = np.eye(len(S))
    scale = max(float(np.trace(S)) / len(S), 1e-300)
    jitter = 1e-12 * scale
    for _ in range(30):
        try:
            np.linalg.cholesky(S + jitter * eye)
            return S + jitter * eye
        except np.linalg.LinAlgError:
            jitter *= 10.0
    raise ValueError("an M-step covariance is not positive semi-definite (degenerate data?)")
