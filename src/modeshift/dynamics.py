"""Linear-Gaussian dynamics: one affine regression with Gaussian noise per mode.

In mode k, ``y = W_k z + e`` with ``e ~ N(0, S_k)``. The regressors z hold whatever
drives y: the lagged observations and a constant of an autoregressive HMM, the
previous state and the inputs of a linear-Gaussian state-space model (y = x_t), or
the state and inputs of its observation equation. Everything these models need from
a linear-Gaussian map lives here once: log-likelihoods, additive sufficient
statistics (given mode weights, or expected ones from a smoother, with missing
observations integrated out), the M-step with fixed columns, ridge and covariance
regularisation, sampling, and the exact predictive moments of dynamics whose mode
follows a Markov chain.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from modeshift._kernels import inverse_cholesky, regression_log_density, weighted_moments
from modeshift.statistics import Moments, Statistics

__all__ = [
    "InitialStateLaw",
    "LinearDynamics",
    "autoregressive_moments",
    "ensure_positive_definite",
    "jump_linear_moments",
    "missingness_patterns",
    "observation_statistics",
]

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
    def log_likelihoods(self, y: np.ndarray, z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """log N(y_t | W_k z_t, S_k) as an (n, K) array (``out`` if given), for rows y (n, d) and z (n, q)."""
        return regression_log_density(y, z, self.weights, self.covariances, out)

    def statistics(self, rows: np.ndarray, n_responses: int, mode_weights: np.ndarray) -> Statistics:
        """Sufficient statistics of rows ``[y, z]`` (n, d + q), the first ``n_responses`` = d
        columns the responses, weighted by (n, K)."""
        d = n_responses
        counts, _, outer = weighted_moments(rows, mode_weights)
        return Statistics(yy=outer[:, :d, :d], yz=outer[:, :d, d:], zz=outer[:, d:, d:], count=counts)

    def m_step(self, stats: Statistics, fixed_columns: np.ndarray | None = None, fix_covariances: bool = False) -> None:
        """Maximise over the free columns of each W_k (``fixed_columns`` keep their
        current values) and, unless ``fix_covariances``, over S_k. A mode without
        weight keeps its parameters, but for its free ridge columns: the prior alone sets them,
        at its maximiser 0 (kept, a stale W_k's penalty would weigh in the objective)."""
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
        if not present.all():
            weights[~present] = np.where(mask & ~fixed, 0.0, weights[~present])
        scatter = np.zeros((K, d, d))
        with np.errstate(invalid="ignore", over="ignore"):  # non-finite weights are named before any kernel
            cross = W @ np.swapaxes(yz[active], 1, 2)
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

    def n_parameters(
        self, fixed_columns: np.ndarray | None = None, fix_covariances: bool = False, modes: int | None = None
    ) -> int:
        """The free parameters of ``modes`` of the K regressions (default all; those of a mode no
        step reads are not free: :meth:`~modeshift.emissions.reset.Resets.read_flows`)."""
        K, d, q = self.weights.shape
        K = K if modes is None else modes
        free_columns = q - (0 if fixed_columns is None else int(np.sum(fixed_columns)))
        count = K * d * free_columns
        if not fix_covariances and K:
            per_matrix = d if self.noise == "diag" else d * (d + 1) // 2
            count += per_matrix * (1 if self.shared_noise else K)
        return count

    def sample(self, z: np.ndarray, mode: int, rng: np.random.Generator) -> np.ndarray:
        """One draw of y given regressors z (q,) in ``mode``."""
        noise = np.linalg.cholesky(self.covariances[mode]) @ rng.standard_normal(self.covariances.shape[1])
        return self.weights[mode] @ z + noise

    def sample_rows(self, z: np.ndarray, modes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Draws of y (n, d), one per row of the regressors z (n, q), row i in mode ``modes[i]``."""
        factors = np.linalg.cholesky(self.covariances)[modes]
        noise = np.einsum("tij,tj->ti", factors, rng.standard_normal((len(z), self.covariances.shape[1])))
        return np.einsum("tij,tj->ti", self.weights[modes], z) + noise


class InitialStateLaw:
    """The law N(m0, P0) of a state-space model's first state, with a conjugate prior on P0.

    Its maximum-likelihood P0 is the spread of the sequences' first states, E q(x_0) about m0:
    fitted on one sequence, that is the posterior covariance of one x_0, which EM makes ever
    more certain, so P0 shrinks towards 0 and a new sequence whose x_0 lies a state's spread
    away from m0 scores absurdly low (thousands of nats from its first step). So P0 gets an
    inverse-Wishart prior with mode ``scale`` (the spread of the state, set once at the start)
    worth ``weight`` sequences, plus the ``-reg_covar / 2 tr(P0^-1)`` of every covariance:

        log p(P0) = -weight / 2 (log|P0| + tr(scale P0^-1)) - reg_covar / 2 tr(P0^-1) + const,

    the inverse-Wishart with scale matrix ``weight * scale`` and ``weight - n - 1`` degrees of
    freedom (proper for weight > 2n - a MAP needs no normalisable prior). With N sequences whose
    first states have scatter S (expected, about their mean), the MAP is

        m0 = mean of E[x_0],   P0 = (S + weight scale + reg_covar I) / (N + weight),

    so the data outweigh the prior once N is well above ``weight`` (default n + 2).

    One sequence whose x_0 is known exactly: P0 stays at the scale of the state, not 0.

    >>> law = InitialStateLaw(np.eye(1), reg_covar=0.0)
    >>> mean, covariance = law.m_step(Moments.of(np.array([[3.0]])), np.zeros((1, 1)))
    >>> float(mean[0]), float(covariance[0, 0])
    (3.0, 0.75)
    """

    def __init__(self, scale: np.ndarray, reg_covar: float, weight: float | None = None):
        self.scale = np.atleast_2d(np.asarray(scale, dtype=float))
        self.reg_covar = float(reg_covar)
        self.weight = float(len(self.scale) + 2 if weight is None else weight)

    def m_step(self, first: Moments, covariance_sum: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(m0, P0) maximising the expected log density of the first states plus the log prior:
        ``first`` the moments of their posterior means E[x_0], ``covariance_sum`` the sum of
        their posterior covariances."""
        scatter = covariance_sum + first.scatter + self._spread()
        return first.mean, ensure_positive_definite(scatter / (first.count + self.weight))

    def log_prior(self, covariance: np.ndarray) -> float:
        """log p(P0) up to a constant."""
        precision = np.linalg.inv(covariance)
        log_det = float(np.linalg.slogdet(covariance)[1])
        return -0.5 * (self.weight * log_det + float(np.sum(self._spread() * precision)))

    def _spread(self) -> np.ndarray:
        """The prior's scatter, weight scale + reg_covar I: the inverse-Wishart's scale matrix plus
        the regularisation, what the prior adds to the first states' scatter."""
        return self.weight * self.scale + self.reg_covar * np.eye(len(self.scale))


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


def companion_matrices(coefs: np.ndarray) -> np.ndarray:
    """Companion matrices (K, p D, p D) of autoregressions ``coefs`` (K, D, p D), lag i in
    columns (i - 1) D : i D: the lag state [y_t, ..., y_t-p+1] moves by them."""
    n_modes, d, n = coefs.shape
    companion = np.zeros((n_modes, n, n))
    companion[:, :d] = coefs
    companion[:, d:, :-d] = np.eye(n - d)
    return companion


def known_state_moments(probabilities: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The start (q_k, M_k) = (p_k s, p_k s s') of :func:`jump_linear_moments` for a known state s."""
    return probabilities[:, None] * state, probabilities[:, None, None] * np.outer(state, state)


def jump_linear_moments(
    probabilities: np.ndarray,
    first: np.ndarray,
    second: np.ndarray,
    transitions: np.ndarray | Sequence[Callable[[np.ndarray], np.ndarray]],
    matrices: np.ndarray,
    offsets: np.ndarray,
    noise: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact moments of a Markov jump linear system h = 1 .. len(transitions) steps ahead.

    The state moves as s_t = F_k s_t-1 + c_k + e_t, e_t ~ N(0, S_k), in the mode z_t = k
    of a Markov chain with transition matrices P_t (``transitions`` (h, K, K), entry t
    moving z_t-1 to z_t). The law of s_t is a mixture of K^t Gaussians, but the moments
    restricted to each mode, q_k = E[s_t 1{z_t = k}] and M_k = E[s_t s_t' 1{z_t = k}],
    follow a closed linear recursion (Costa, Fragoso & Marques 2005, ch. 3): with
    r_k = sum_i P_ik q_i, R_k = sum_i P_ik M_i and pi_k = p(z_t = k),

        q_k <- F_k r_k + pi_k c_k,
        M_k <- F_k R_k F_k' + F_k r_k c_k' + c_k r_k' F_k' + pi_k (c_k c_k' + S_k),

    and E[s_t] = sum_k q_k, Cov[s_t] = sum_k M_k - E[s_t] E[s_t]'.

    Parameters
    ----------
    probabilities : (K,)
        p(z_0 = k) at the start.
    first, second : (K, n) and (K, n, n)
        q_k and M_k at the start (for a known s_0 and modes p: p_k s_0 and p_k s_0 s_0').
    transitions : (h, K, K), or h functions
        P_t, or functions moving per-mode arrays, a (K, ...) -> (sum_i P_ik a_i)_k, for a chain
        whose matrix is too large to hold (a semi-Markov chain on (mode, steps left)).
    matrices, noise : (K, n, n), or (h, K, n, n) when they vary (irregular time gaps)
        F_k and S_k.
    offsets : (K, n), or (h, K, n) when they vary (inputs)
        c_k.

    Returns
    -------
    (modes (h, K), means (h, n), covariances (h, n, n)) of z_t and s_t, t = 1 .. h.
    """
    horizon, (n_modes, n) = len(transitions), first.shape
    offsets = np.broadcast_to(offsets, (horizon, n_modes, n))
    steps = zip(transitions, offsets, *(np.broadcast_to(a, (horizon, n_modes, n, n)) for a in (matrices, noise)))
    modes, means, covariances = np.empty((horizon, n_modes)), np.empty((horizon, n)), np.empty((horizon, n, n))
    for step, (transition, offset, matrix, step_noise) in enumerate(steps):
        move = transition if callable(transition) else functools.partial(_move, transition)
        probabilities = move(probabilities)
        moved = np.einsum("kmn,kn->km", matrix, move(first))
        cross = moved[:, :, None] * offset[:, None, :]
        second = (
            matrix @ move(second) @ matrix.transpose(0, 2, 1)
            + cross
            + cross.transpose(0, 2, 1)
            + probabilities[:, None, None] * (offset[:, :, None] * offset[:, None, :] + step_noise)
        )
        first = moved + probabilities[:, None] * offset
        modes[step] = probabilities
        means[step] = first.sum(axis=0)
        covariance = second.sum(axis=0) - np.outer(means[step], means[step])
        covariances[step] = 0.5 * (covariance + covariance.T)
    return modes, means, covariances


def _move(matrix: np.ndarray, per_mode: np.ndarray) -> np.ndarray:
    """(sum_i P_ik a_i)_k of per-mode arrays a (K,), (K, n) or (K, n, n) for a transition matrix P."""
    if per_mode.ndim == 1:
        return per_mode @ matrix
    if per_mode.ndim == 2:
        return matrix.T @ per_mode
    return np.einsum("ik,imn->kmn", matrix, per_mode)


def autoregressive_moments(
    probabilities: np.ndarray,
    lag_state: np.ndarray,
    transitions: np.ndarray | Sequence[Callable[[np.ndarray], np.ndarray]],
    coefs: np.ndarray,
    intercepts: np.ndarray,
    covariances: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact predictive moments of a switching vector autoregression after observed data.

    Given the data, the future is a Markov jump linear system: the lag state s_t = [y_t, ...,
    y_t-p+1] moves as s_t = F_k s_t-1 + c_k + G e_t in mode k (F_k the companion matrix of
    ``coefs`` (K, d, p d), c_k = [b_k, 0] from ``intercepts`` (K, d), G = [I, 0]', e_t ~ N(0,
    ``covariances`` (K, d, d))), from the observed ``lag_state`` (p d,) [y_T, ..., y_T-p+1]
    and p(z_T) ``probabilities`` (K,). :func:`jump_linear_moments` propagates its moments
    through ``transitions`` (h, K, K); y's are the first block of s's. Returns (modes (h, K),
    means (h, d), covariances (h, d, d)): the exact moments of a mixture of K^h Gaussians.
    """
    n_modes, d = intercepts.shape
    n = coefs.shape[2]
    offsets, shocks = np.zeros((n_modes, n)), np.zeros((n_modes, n, n))
    offsets[:, :d], shocks[:, :d, :d] = intercepts, covariances
    first, second = known_state_moments(probabilities, lag_state)
    modes, means, covs = jump_linear_moments(
        probabilities, first, second, transitions, companion_matrices(coefs), offsets, shocks
    )
    return modes, means[:, :d], covs[:, :d, :d]


def missingness_patterns(values: np.ndarray) -> Iterator[tuple[np.ndarray | None, np.ndarray]]:
    """Yield (rows, observed dimensions) for each pattern of missing values (NaN) in the
    rows of ``values``; ``rows`` is None for "all rows" when nothing is missing."""
    missing = np.isnan(values)
    if not missing.any():
        yield None, np.ones(values.shape[1], dtype=bool)
        return
    if values.shape[1] <= 62:  # one integer code per row: sorting integers is fast
        codes = missing.astype(np.int64) @ (np.int64(1) << np.arange(values.shape[1], dtype=np.int64))
        _, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
        patterns = missing[first]
    else:
        patterns, inverse = np.unique(missing, axis=0, return_inverse=True)
    inverse = np.asarray(inverse).ravel()
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(len(patterns) + 1))
    for p, pattern in enumerate(patterns):
        yield order[bounds[p] : bounds[p + 1]], ~pattern


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
            out = []
            for k, matrix in enumerate(S):
                try:
                    out.append(ensure_positive_definite(matrix))
                except ValueError as error:
                    raise ValueError(f"mode {k}: {error}") from None
            return np.stack(out)
    eye = np.eye(len(S))
    scale = max(float(np.trace(S)) / len(S), 1e-300)
    jitter = 1e-12 * scale
    for _ in range(30):
        try:
            np.linalg.cholesky(S + jitter * eye)
            return S + jitter * eye
        except np.linalg.LinAlgError:
            jitter *= 10.0
    raise ValueError(
        "an M-step covariance is not finite or not positive semi-definite: the data may repeat one value "
        "over a stretch (raise reg_covar where the model has it) or be too large or small (standardise them)"
    )
