"""The exact diffuse start of a Kalman filter and smoother (Durbin & Koopman 2012, sec. 5.2-5.3;
Koopman & Durbin 2000, the univariate treatment).

Some state components have no prior at all: x_0 = m_0 + delta + eta with delta ~ N(0, kappa P_inf),
kappa -> infinity (P_inf = diag(mask)), and eta ~ N(0, P_*). Every moment is then a series in
1/kappa; the filter carries the two covariances P_* and P_inf (predicted P_inf,t+1 = A P_inf A^T,
P_*,t+1 = A P_* A^T + Q) until P_inf = 0, the end of the diffuse steps, and hands over to the
ordinary filter. Each observed entry is taken on its own (a non-diagonal R_oo is first made
diagonal by its unit lower LDL^T factor: y* = L^-1 y, C* = L^-1 C): with z a row of C*, h its
noise variance, M_inf = P_inf z^T, M_* = P_* z^T, F_inf = z M_inf and F_* = z M_* + h,

- F_inf > 0 (the entry tells about a diffuse direction): x += M_inf v / F_inf,
  P_* += M_inf M_inf^T F_* / F_inf^2 - (M_* M_inf^T + M_inf M_*^T) / F_inf,
  P_inf -= M_inf M_inf^T / F_inf, and the log-likelihood gains -(log 2 pi + log F_inf) / 2;
- F_inf = 0: the ordinary update with F_*, gaining -(log 2 pi + log F_* + v^2 / F_*) / 2.

This diffuse log-likelihood (Durbin & Koopman eq. 7.2; statsmodels' and KFAS's) is
lim_{kappa -> inf} [log p(y; kappa) + (d / 2) log kappa], d the number of diffuse components.
Backwards, the smoother carries the coefficients of r = r0 + r1 / kappa and
N = N0 + N1 / kappa + N2 / kappa^2 through every entry (:func:`diffuse_backward_step`), and
x_t|T = x_t + P_* r0 + P_inf r1,
P_t|T = P_* - P_* N0 P_* - P_inf N1 P_* - (P_inf N1 P_*)^T - P_inf N2 P_inf.

These are numba functions called by :mod:`modeshift._kernels.kalman` step by step.
"""

from __future__ import annotations

import numpy as np

from modeshift._kernels.compile import kernel
from modeshift._kernels.gaussian import LOG_2PI
from modeshift._kernels.linalg import PIVOT_TOL, affine

__all__ = [
    "DIFFUSE_TOL",
    "diffuse_backward_step",
    "diffuse_cross",
    "diffuse_predict",
    "diffuse_smoothed",
    "diffuse_start",
    "diffuse_update",
    "diffuse_workspace",
    "identified",
    "propagate",
]

#: F_inf above this times z z^T counts as positive, and P_inf is 0 once no entry exceeds it
#: (relative to the unit variance scale of P_inf at the start)
DIFFUSE_TOL = 1e-10


@kernel
def diffuse_workspace(n: int, p: int) -> tuple:
    """Scratch space for :func:`diffuse_update` and :func:`diffuse_backward_step`: per observed
    entry of a step its row z of C*, target y* - d*, noise h, F_inf, F_*, M_inf and M_*."""
    return (
        np.empty(p, dtype=np.int64),  # observed dimensions
        np.empty((p, n)),  # rows z
        np.empty(p),  # targets
        np.empty((p, p)),  # R_oo, then its unit lower LDL factor
        np.empty(p),  # h
        np.empty(p),  # F_inf
        np.empty(p),  # F_*
        np.empty((p, n)),  # M_inf
        np.empty((p, n)),  # M_*
        np.empty(p),  # v
        np.empty((p, n, n)),  # P_* before the entry
        np.empty((p, n, n)),  # P_inf before the entry
    )


@kernel
def diffuse_start(
    initial_mean: np.ndarray,
    initial_cov: np.ndarray,
    mask: np.ndarray,
    mean: np.ndarray,
    Pstar: np.ndarray,
    Pinf: np.ndarray,
) -> None:
    """The prior at the first step: the diffuse components' mean 0, P_* without their rows and
    columns, P_inf = diag(mask)."""
    n = mean.shape[0]
    for i in range(n):
        mean[i] = 0.0 if mask[i] else initial_mean[i]
        for j in range(n):
            Pstar[i, j] = 0.0 if mask[i] or mask[j] else initial_cov[i, j]
            Pinf[i, j] = 1.0 if i == j and mask[i] else 0.0


@kernel
def identified(Pinf: np.ndarray) -> bool:
    """Whether P_inf is 0: the diffuse steps are over."""
    for i in range(Pinf.shape[0]):
        for j in range(Pinf.shape[1]):
            if abs(Pinf[i, j]) > DIFFUSE_TOL:
                return False
    return True


@kernel
def diffuse_predict(
    mean: np.ndarray,
    Pstar: np.ndarray,
    Pinf: np.ndarray,
    A: np.ndarray,
    B: np.ndarray,
    Q: np.ndarray,
    u: np.ndarray,
    out_mean: np.ndarray,
    out_Pstar: np.ndarray,
    out_Pinf: np.ndarray,
) -> None:
    """x = A x + B u, P_* = A P_* A^T + Q, P_inf = A P_inf A^T (symmetrised)."""
    n = mean.shape[0]
    affine(A, mean, B, u, out_mean)
    scratch = np.empty((n, n))
    propagate(A, Pstar, out_Pstar, scratch, np.False_)
    propagate(A, Pinf, out_Pinf, scratch, np.False_)
    for i in range(n):
        for j in range(n):
            out_Pstar[i, j] += 0.5 * (Q[i, j] + Q[j, i])


@kernel
def _entries(y: np.ndarray, u: np.ndarray, C: np.ndarray, D: np.ndarray, R: np.ndarray, work: tuple) -> int:
    """The observed entries of y, decorrelated: rows z, targets y* - D* u and variances h in
    ``work``; returns their number k."""
    observed, rows, targets, factor, noise = work[0], work[1], work[2], work[3], work[4]
    n = C.shape[1]
    k = 0
    for i in range(y.shape[0]):
        if not np.isnan(y[i]):
            observed[k] = i
            k += 1
    for a in range(k):
        i = observed[a]
        value = y[i]
        for j in range(u.shape[0]):
            value -= D[i, j] * u[j]
        targets[a] = value
        for j in range(n):
            rows[a, j] = C[i, j]
        for b in range(k):
            factor[a, b] = 0.5 * (R[i, observed[b]] + R[observed[b], i])
    # unit lower LDL^T of R_oo (a zero pivot keeps a zero column), then z <- L^-1 z, y* <- L^-1 y*
    for j in range(k):
        pivot = factor[j, j]
        for m in range(j):
            pivot -= factor[j, m] * factor[j, m] * noise[m]
        noise[j] = pivot if pivot > PIVOT_TOL * factor[j, j] else 0.0
        for i in range(j + 1, k):
            value = factor[i, j]
            for m in range(j):
                value -= factor[i, m] * factor[j, m] * noise[m]
            factor[i, j] = value / noise[j] if noise[j] > 0.0 else 0.0
    for a in range(k):
        for b in range(a):
            weight = factor[a, b]
            if weight != 0.0:
                targets[a] -= weight * targets[b]
                for j in range(n):
                    rows[a, j] -= weight * rows[b, j]
    return k


@kernel
def diffuse_update(
    y: np.ndarray,
    u: np.ndarray,
    C: np.ndarray,
    D: np.ndarray,
    R: np.ndarray,
    mean: np.ndarray,
    Pstar: np.ndarray,
    Pinf: np.ndarray,
    out_mean: np.ndarray,
    out_Pstar: np.ndarray,
    work: tuple,
) -> tuple[bool, float]:
    """Condition (x, P_*, P_inf) on the observed entries of y, one at a time (module docstring):
    the mean and P_* go to ``out_mean``, ``out_Pstar``, P_inf is updated in place, and each
    entry's z, F_inf, F_*, M_inf, M_* and v stay in ``work``. Returns (ok, the entries' diffuse
    log-likelihood); ok is False when an entry with F_inf = 0 has F_* <= 0."""
    rows, targets, noise = work[1], work[2], work[4]
    diffuse_var, star_var, towards_inf, towards_star, innovations = work[5], work[6], work[7], work[8], work[9]
    n = mean.shape[0]
    k = _entries(y, u, C, D, R, work)
    for i in range(n):
        out_mean[i] = mean[i]
        for j in range(n):
            out_Pstar[i, j] = Pstar[i, j]
    total = 0.0
    before_star, before_inf = work[10], work[11]
    for a in range(k):
        z = rows[a]
        for i in range(n):
            for j in range(n):
                before_star[a, i, j], before_inf[a, i, j] = out_Pstar[i, j], Pinf[i, j]
        size, v = 0.0, targets[a]
        for i in range(n):
            size += z[i] * z[i]
            v -= z[i] * out_mean[i]
            m_inf, m_star = 0.0, 0.0
            for j in range(n):
                m_inf += Pinf[i, j] * z[j]
                m_star += out_Pstar[i, j] * z[j]
            towards_inf[a, i], towards_star[a, i] = m_inf, m_star
        f_inf, f_star = 0.0, noise[a]
        for i in range(n):
            f_inf += z[i] * towards_inf[a, i]
            f_star += z[i] * towards_star[a, i]
        innovations[a] = v
        Mi, Ms = towards_inf[a], towards_star[a]
        if f_inf > DIFFUSE_TOL * size:
            diffuse_var[a], star_var[a] = f_inf, f_star
            for i in range(n):
                out_mean[i] += Mi[i] * v / f_inf
            for i in range(n):
                for j in range(n):
                    out_Pstar[i, j] += Mi[i] * Mi[j] * f_star / f_inf**2 - (Ms[i] * Mi[j] + Mi[i] * Ms[j]) / f_inf
                    Pinf[i, j] -= Mi[i] * Mi[j] / f_inf
            total -= 0.5 * (LOG_2PI + np.log(f_inf))
        else:
            diffuse_var[a], star_var[a] = 0.0, f_star
            scale = noise[a]
            for i in range(n):
                scale += z[i] * z[i] * abs(out_Pstar[i, i])
            if not f_star > PIVOT_TOL * scale:
                return False, 0.0
            for i in range(n):
                out_mean[i] += Ms[i] * v / f_star
            for i in range(n):
                for j in range(n):
                    out_Pstar[i, j] -= Ms[i] * Ms[j] / f_star
            total -= 0.5 * (LOG_2PI + np.log(f_star) + v * v / f_star)
    for i in range(n):
        for j in range(i):
            star, infinite = 0.5 * (out_Pstar[i, j] + out_Pstar[j, i]), 0.5 * (Pinf[i, j] + Pinf[j, i])
            out_Pstar[i, j] = out_Pstar[j, i] = star
            Pinf[i, j] = Pinf[j, i] = infinite
    return True, total


@kernel
def propagate(A: np.ndarray, P: np.ndarray, out: np.ndarray, scratch: np.ndarray, transposed: bool) -> None:
    """out = M P M^T for a symmetric P, with M = A, or A^T when ``transposed``; symmetric by
    construction. Zero entries of M are skipped: the dynamics of a structural model are mostly
    zeros (a seasonal block is a shift), so the cost is O(nnz(M) n), not O(n^3).
    ``scratch`` is (n, n)."""
    n = P.shape[0]
    for i in range(n):  # scratch = M P, row by row
        for j in range(n):
            scratch[i, j] = 0.0
        for k in range(n):
            weight = A[k, i] if transposed else A[i, k]
            if weight != 0.0:
                for j in range(n):
                    scratch[i, j] += weight * P[k, j]
    for i in range(n):  # scratch = (M P)^T = P M^T, in place
        for j in range(i):
            scratch[i, j], scratch[j, i] = scratch[j, i], scratch[i, j]
    for i in range(n):  # out = M (P M^T), lower triangle, then mirrored
        for j in range(i + 1):
            out[i, j] = 0.0
        for k in range(n):
            weight = A[k, i] if transposed else A[i, k]
            if weight != 0.0:
                for j in range(i + 1):
                    out[i, j] += weight * scratch[k, j]
        for j in range(i):
            out[j, i] = out[i, j]


@kernel
def _sandwich(left: np.ndarray, middle: np.ndarray, right: np.ndarray, weight: float, out: np.ndarray, tmp: np.ndarray):
    """out += weight left^T middle right."""
    n = out.shape[0]
    for i in range(n):
        for j in range(n):
            value = 0.0
            for a in range(n):
                value += middle[i, a] * right[a, j]
            tmp[i, j] = value
    for i in range(n):
        for j in range(n):
            value = 0.0
            for a in range(n):
                value += left[a, i] * tmp[a, j]
            out[i, j] += weight * value


@kernel
def _entry_score(z, v, f_inf, f_star, Mi, Ms, Pstar, Pinf, r0, N0, N1, P_after, inf_after, out) -> None:
    """An entry's terms of the score in its noise variance h and row z (Durbin & Koopman's
    u = E[eps | y] / h, D = (h - Var[eps | y]) / h^2 and W P = -Cov(eps, x | y) / h as
    kappa -> inf, exact also at h = 0), from r0, N0, N1 after the entry and P_*, P_inf before:
    u and (u^2 - D) / 2 go to out[0, :2], W P to out[1]. With F_inf > 0: u = -K0^T r0,
    D = K0^T N0 K0, W P = z P_inf / F_inf - K0^T (N0 P_*' + N1 P_inf') - K1^T N0 P_inf'
    (primes: after the entry); with F_inf = 0 the ordinary u = v / F_* - K^T r0,
    D = 1 / F_* + K^T N0 K, W P = z P_* / F_* - K^T (N0 P_*' + N1 P_inf)."""
    n = z.shape[0]
    for i in range(n):
        for j in range(n):
            if f_inf > 0.0:
                P_after[i, j] = (
                    Pstar[i, j] + Mi[i] * Mi[j] * f_star / f_inf**2 - (Ms[i] * Mi[j] + Mi[i] * Ms[j]) / f_inf
                )
                inf_after[i, j] = Pinf[i, j] - Mi[i] * Mi[j] / f_inf
            else:
                P_after[i, j] = Pstar[i, j] - Ms[i] * Ms[j] / f_star
                inf_after[i, j] = Pinf[i, j]
    gain, other = np.empty(n), np.zeros(n)  # K0 (or K) and K1
    for i in range(n):
        if f_inf > 0.0:
            gain[i] = Mi[i] / f_inf
            other[i] = Ms[i] / f_inf - Mi[i] * f_star / f_inf**2
        else:
            gain[i] = Ms[i] / f_star
    u = 0.0 if f_inf > 0.0 else v / f_star
    D = 0.0 if f_inf > 0.0 else 1.0 / f_star
    for i in range(n):
        u -= gain[i] * r0[i]
        for j in range(n):
            D += gain[i] * N0[i, j] * gain[j]
    out[0, 0], out[0, 1] = u, 0.5 * (u * u - D)
    for j in range(n):
        value = 0.0
        for i in range(n):
            value += z[i] * (Pinf[i, j] / f_inf if f_inf > 0.0 else Pstar[i, j] / f_star)
        for a in range(n):
            left0, left1 = 0.0, 0.0  # (K^T N0)_a, (K^T N1)_a, (K1^T N0)_a
            third = 0.0
            for i in range(n):
                left0 += gain[i] * N0[i, a]
                left1 += gain[i] * N1[i, a]
                third += other[i] * N0[i, a]
            value -= left0 * P_after[a, j] + left1 * inf_after[a, j] + third * inf_after[a, j]
        out[1, j] = value


@kernel
def diffuse_backward_step(
    k: int,
    work: tuple,
    r0: np.ndarray,
    r1: np.ndarray,
    N0: np.ndarray,
    N1: np.ndarray,
    N2: np.ndarray,
    scratch: tuple,
    terms: tuple,
) -> None:
    """Carry r0, r1, N0, N1, N2 (in place) back through the k observed entries of a diffuse step,
    from after its last entry to before its first, with the entries' quantities in ``work`` from
    :func:`diffuse_update`. An entry with F_inf > 0 has gains K0 = M_inf / F_inf,
    K1 = M_* / F_inf - M_inf F_* / F_inf^2 and L0 = I - K0 z, L1 = -K1 z:

        r0 <- L0^T r0,   r1 <- z^T v / F_inf + L0^T r1 + L1^T r0,   N0 <- L0^T N0 L0,
        N1 <- z^T z / F_inf + L0^T N1 L0 + L1^T N0 L0 + L0^T N0 L1,
        N2 <- -z^T z F_* / F_inf^2 + L0^T N2 L0 + L0^T N1 L1 + L1^T N1 L0 + L1^T N0 L1
              - (F_* / F_inf) (L1^T N0 L0 + L0^T N0 L1)

    (the coefficients of the ordinary recursion's 1 / kappa series); one with F_inf = 0 the
    ordinary step with K = M_* / F_*, L = I - K z on r0, N0 and L^T . L on r1, N1, N2.
    ``terms`` = (u, half, WP), (p,), (p, p) and (p, n) or empty: each entry's score terms
    (:func:`_entry_score`) go to its observed dimension.
    """
    rows, diffuse_var, star_var, towards_inf, towards_star, innovations = (
        work[1],
        work[5],
        work[6],
        work[7],
        work[8],
        work[9],
    )
    L0, L1, tmp, new0, new1, new2 = scratch
    observed, before_star, before_inf = work[0], work[10], work[11]
    u_out, half_out, WP_out = terms
    n = r0.shape[0]
    vector, entry = np.empty(n), np.empty((2, max(n, 2)))
    for a in range(k - 1, -1, -1):
        z, v, f_inf, f_star = rows[a], innovations[a], diffuse_var[a], star_var[a]
        Mi, Ms = towards_inf[a], towards_star[a]
        if u_out.shape[0] > 0:
            _entry_score(z, v, f_inf, f_star, Mi, Ms, before_star[a], before_inf[a], r0, N0, N1, tmp, new0, entry)
            o = observed[a]
            u_out[o], half_out[o, o] = entry[0, 0], entry[0, 1]
            for j in range(n):
                WP_out[o, j] = entry[1, j]
        if f_inf > 0.0:
            for i in range(n):
                for j in range(n):
                    L0[i, j] = (1.0 if i == j else 0.0) - Mi[i] / f_inf * z[j]
                    L1[i, j] = -(Ms[i] / f_inf - Mi[i] * f_star / f_inf**2) * z[j]
            for i in range(n):
                value = z[i] * v / f_inf
                for j in range(n):
                    value += L0[j, i] * r1[j] + L1[j, i] * r0[j]
                vector[i] = value
            for i in range(n):
                r1[i] = vector[i]
                value = 0.0
                for j in range(n):
                    value += L0[j, i] * r0[j]
                vector[i] = value
            for i in range(n):
                r0[i] = vector[i]
                for j in range(n):
                    new0[i, j] = 0.0
                    new1[i, j] = z[i] * z[j] / f_inf
                    new2[i, j] = -z[i] * z[j] * f_star / f_inf**2
            ratio = f_star / f_inf
            _sandwich(L0, N0, L0, 1.0, new0, tmp)
            _sandwich(L0, N1, L0, 1.0, new1, tmp)
            _sandwich(L1, N0, L0, 1.0, new1, tmp)
            _sandwich(L0, N0, L1, 1.0, new1, tmp)
            _sandwich(L0, N2, L0, 1.0, new2, tmp)
            _sandwich(L0, N1, L1, 1.0, new2, tmp)
            _sandwich(L1, N1, L0, 1.0, new2, tmp)
            _sandwich(L1, N0, L1, 1.0, new2, tmp)
            _sandwich(L1, N0, L0, -ratio, new2, tmp)
            _sandwich(L0, N0, L1, -ratio, new2, tmp)
        else:
            for i in range(n):
                for j in range(n):
                    L0[i, j] = (1.0 if i == j else 0.0) - Ms[i] / f_star * z[j]
            for i in range(n):
                value, other = z[i] * v / f_star, 0.0
                for j in range(n):
                    value += L0[j, i] * r0[j]
                    other += L0[j, i] * r1[j]
                vector[i] = value
                new0[0, i] = other  # r1, kept in a spare row
            for i in range(n):
                r0[i] = vector[i]
                r1[i] = new0[0, i]
            for i in range(n):
                for j in range(n):
                    new0[i, j] = z[i] * z[j] / f_star
                    new1[i, j] = 0.0
                    new2[i, j] = 0.0
            _sandwich(L0, N0, L0, 1.0, new0, tmp)
            _sandwich(L0, N1, L0, 1.0, new1, tmp)
            _sandwich(L0, N2, L0, 1.0, new2, tmp)
        for i in range(n):
            for j in range(n):
                N0[i, j] = 0.5 * (new0[i, j] + new0[j, i])
                N1[i, j] = 0.5 * (new1[i, j] + new1[j, i])
                N2[i, j] = 0.5 * (new2[i, j] + new2[j, i])


@kernel
def diffuse_smoothed(
    mean: np.ndarray,
    Pstar: np.ndarray,
    Pinf: np.ndarray,
    r0: np.ndarray,
    r1: np.ndarray,
    N0: np.ndarray,
    N1: np.ndarray,
    N2: np.ndarray,
    out_mean: np.ndarray,
    out_cov: np.ndarray,
    tmp: np.ndarray,
) -> None:
    """x_t|T = x + P_* r0 + P_inf r1 and
    P_t|T = P_* - P_* N0 P_* - P_inf N1 P_* - (P_inf N1 P_*)^T - P_inf N2 P_inf,
    from the predicted moments and r, N before the step's first entry."""
    n = mean.shape[0]
    for i in range(n):
        value = mean[i]
        for j in range(n):
            value += Pstar[i, j] * r0[j] + Pinf[i, j] * r1[j]
        out_mean[i] = value
    for i in range(n):
        for j in range(n):
            out_cov[i, j] = 0.0
    _sandwich(Pstar, N0, Pstar, -1.0, out_cov, tmp)
    _sandwich(Pinf, N1, Pstar, -1.0, out_cov, tmp)
    _sandwich(Pstar, N1, Pinf, -1.0, out_cov, tmp)
    _sandwich(Pinf, N2, Pinf, -1.0, out_cov, tmp)
    for i in range(n):
        for j in range(i + 1):
            value = Pstar[i, j] + 0.5 * (out_cov[i, j] + out_cov[j, i])
            out_cov[i, j] = out_cov[j, i] = value


@kernel
def diffuse_cross(
    A: np.ndarray,
    filtered_star: np.ndarray,
    filtered_inf: np.ndarray,
    next_star: np.ndarray,
    next_inf: np.ndarray,
    N0: np.ndarray,
    N1: np.ndarray,
    N2: np.ndarray,
    out: np.ndarray,
    scratch: tuple,
) -> None:
    """Cov(x_t+1, x_t | y) after a diffuse step t: the kappa^0 term of (I - P_t+1 N_t) A P_t|t,
    G_* - P_*,t+1 (N0 G_* + N1 G_inf) - P_inf,t+1 (N1 G_* + N2 G_inf), with G = A P_t|t and
    N_t = N0 + N1 / kappa + N2 / kappa^2 after the step (the kappa terms cancel)."""
    G_star, G_inf, tmp, first, second, _ = scratch
    n = A.shape[0]
    for i in range(n):
        for j in range(n):
            star, infinite = 0.0, 0.0
            for a in range(n):
                star += A[i, a] * filtered_star[a, j]
                infinite += A[i, a] * filtered_inf[a, j]
            G_star[i, j], G_inf[i, j] = star, infinite
    for i in range(n):
        for j in range(n):
            a0, a1 = 0.0, 0.0
            for a in range(n):
                a0 += N0[i, a] * G_star[a, j] + N1[i, a] * G_inf[a, j]
                a1 += N1[i, a] * G_star[a, j] + N2[i, a] * G_inf[a, j]
            first[i, j], second[i, j] = a0, a1
    for i in range(n):
        for j in range(n):
            value = G_star[i, j]
            for a in range(n):
                value -= next_star[i, a] * first[a, j] + next_inf[i, a] * second[a, j]
            out[i, j] = value
