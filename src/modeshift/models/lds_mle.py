"""Exact maximum likelihood for a linear-Gaussian state-space model: a quasi-Newton climb.

EM moves slowly along variance parameters and crawls towards an optimum on the boundary (a
variance of 0). Once EM is close, :func:`polish` climbs the exact log-likelihood log p(Y; theta)
by L-BFGS-B with its analytic gradient, the **Fisher identity**

    d/dtheta log p(Y; theta) = E[ d/dtheta log p(X, Y; theta) | Y; theta ],

the gradient of EM's expected complete-data log-likelihood at the current theta. Written with
the expected residual scatter of the EM statistics, dl/dQ = (Q^-1 E Q^-1 - N Q^-1) / 2 is a
difference of nearly equal numbers next to Q = 0 (and undefined at a singular Q); written with
the smoothed disturbances (Koopman & Shephard 1992; Durbin & Koopman 2012, sec. 7.3) it has no
inverse of Q or R. The smoother gives r_t-1 and N_t-1 (E[w_t | Y] = Q r_t-1,
Var[w_t | Y] = Q - Q N_t-1 Q) without inverting any covariance, and u_t, D_t for the observation
noise (E[v_t | Y] = R u_t, u_t = F_t^-1 e_t - K_t' r_t, D_t = F_t^-1 + K_t' N_t K_t, e_t and F_t
the innovation and its covariance, K_t = A P_t|t-1 C' F_t^-1):

    dl/dQ = sum_t (r_t-1 r_t-1' - N_t-1) / 2,       dl/dR = sum_t (u_t u_t' - D_t) / 2,
    dl/dA = sum_t (r_t-1 x_t-1|T' - N_t-1 A P_t-1|t-1),   dl/dB = sum_t r_t-1 u_t',
    dl/dC = sum_t (u_t x_t|T' - (F_t^-1 C - K_t' N_t L_t) P_t|t-1),  L_t = A - K_t C,
    dl/dm0 = r_-1,   dl/dP0 = (r_-1 r_-1' - N_-1) / 2   (per sequence),

each step using only its observed entries; all of it is exact with singular Q, R and P0. With an
exact diffuse start, the diffuse steps use the kappa^0 terms of the same quantities (r0, N0 and
each observed entry's limits from :func:`modeshift._kernels.diffuse.diffuse_backward_step`).
One compiled pass makes the value and all of this gradient
(:func:`modeshift._kernels.lds_score.log_likelihood_and_score`): at a few hundred steps the
climb's cost is its number of passes, not their arithmetic.

Covariances are optimised through their Cholesky factors L (S = L L', positive semi-definite
whatever L), a diagonal covariance through its standard deviations. The diagonal of each
factor is bounded below by 0: the log-likelihood near a zero variance s^2 is about
l(0) + c s^2, a quadratic in s whose minimiser (s = 0) L-BFGS-B reaches in a few steps and holds
on the bound, exactly, where EM would crawl. Every free entry is divided by a scale of its
block at the start, so that the optimiser sees numbers of order one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import optimize

from modeshift._kernels.linalg import cholesky_in_place

__all__ = ["GTOL", "Parameterisation", "cholesky_factor", "polish", "standard_errors"]

#: the polish has converged when the largest entry of the projected gradient of the
#: log-likelihood in the scaled free vector is below this (L-BFGS-B itself goes on to round-off)
GTOL = 1e-5

#: parameter key -> how it is parameterised ("matrix": its entries; "covariance": its Cholesky factor)
_KINDS = {"A": "matrix", "B": "matrix", "C": "matrix", "D": "matrix", "m0": "matrix",
          "Q": "covariance", "R": "covariance", "P0": "covariance"}  # fmt: skip


@dataclass(frozen=True)
class _Block:
    key: str
    kind: str  # "matrix", "covariance" or "diagonal"
    shape: tuple[int, ...]
    scale: float
    size: int


def cholesky_factor(S: np.ndarray) -> np.ndarray:
    """A lower triangular L with L L' = S, for a positive semi-definite S too (a pivot at most
    1e-12 of its diagonal entry is taken as 0, its column of L as 0)."""
    L = np.array(S, dtype=float)
    cholesky_in_place(L, len(L), True)
    return np.tril(L)


class Parameterisation:
    """The free parameters ``keys`` of a parameter dictionary as one scaled vector, and back.

    ``diagonal`` names the covariances that stay diagonal (parameterised by their standard
    deviations). Scales come from ``start``.
    """

    def __init__(self, start: dict[str, np.ndarray], keys: list[str], diagonal: frozenset[str] = frozenset()):
        blocks = []
        for key in keys:
            value = np.asarray(start[key], dtype=float)
            kind = "diagonal" if key in diagonal else _KINDS[key]
            if kind == "matrix":
                rms = float(np.sqrt(np.mean(np.square(value)))) if value.size else 0.0
                blocks.append(_Block(key, kind, value.shape, rms if rms > 0 else 1.0, value.size))
            else:
                d = value.shape[0]
                scale = float(np.sqrt(np.trace(value) / d)) if np.trace(value) > 0 else 1.0
                blocks.append(_Block(key, kind, value.shape, scale, d if kind == "diagonal" else d * (d + 1) // 2))
        self.blocks = blocks
        self.size = sum(block.size for block in blocks)

    def pack(self, params: dict[str, np.ndarray]) -> np.ndarray:
        """The scaled free vector of ``params`` (covariances positive semi-definite)."""
        parts = []
        for block in self.blocks:
            value = np.asarray(params[block.key], dtype=float)
            if block.kind == "matrix":
                parts.append(value.ravel() / block.scale)
            elif block.kind == "diagonal":
                parts.append(np.sqrt(np.diag(value)) / block.scale)
            else:
                parts.append(cholesky_factor(value)[np.tril_indices(value.shape[0])] / block.scale)
        return np.concatenate(parts) if parts else np.zeros(0)

    def unpack(self, x: np.ndarray, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``params`` with the free entries replaced by those of ``x``."""
        out = dict(params)
        for block, part in zip(self.blocks, self._split(x)):
            if block.kind == "matrix":
                out[block.key] = block.scale * part.reshape(block.shape)
            elif block.kind == "diagonal":
                out[block.key] = np.diag(np.square(block.scale * part))
            else:
                factor = self._factor(block, part)
                out[block.key] = factor @ factor.T
        return out

    def bounds(self) -> list[tuple[float | None, float | None]]:
        """L-BFGS-B bounds: the diagonal of every Cholesky factor (a standard deviation) at least 0."""
        bounds: list[tuple[float | None, float | None]] = []
        for block in self.blocks:
            if block.kind == "matrix":
                bounds += [(None, None)] * block.size
            elif block.kind == "diagonal":
                bounds += [(0.0, None)] * block.size
            else:
                rows, columns = np.tril_indices(block.shape[0])
                bounds += [(0.0, None) if i == j else (None, None) for i, j in zip(rows, columns)]
        return bounds

    def chain(self, x: np.ndarray, gradients: dict[str, np.ndarray]) -> np.ndarray:
        """The gradient in ``x`` from dl/dtheta per block (for a covariance S, the symmetric G
        with dl = tr(G dS))."""
        parts = []
        for block, part in zip(self.blocks, self._split(x)):
            gradient = gradients[block.key]
            if block.kind == "matrix":
                parts.append(block.scale * gradient.ravel())
            elif block.kind == "diagonal":
                parts.append(2.0 * block.scale**2 * part * np.diag(gradient))
            else:
                factor = self._factor(block, part)  # S = L L' => dl/dL = 2 G L
                full = 2.0 * block.scale * (gradient @ factor)
                parts.append(full[np.tril_indices(block.shape[0])])
        return np.concatenate(parts) if parts else np.zeros(0)

    def _split(self, x: np.ndarray) -> list[np.ndarray]:
        return np.split(x, np.cumsum([block.size for block in self.blocks])[:-1])

    @staticmethod
    def _factor(block: _Block, part: np.ndarray) -> np.ndarray:
        factor = np.zeros(block.shape)
        factor[np.tril_indices(block.shape[0])] = block.scale * part
        return factor


def polish(
    value_and_gradient: Callable[[dict[str, np.ndarray]], tuple[float, dict[str, np.ndarray]]],
    start: dict[str, np.ndarray],
    layout: Parameterisation,
    max_iter: int,
) -> tuple[dict[str, np.ndarray], bool, float]:
    """Maximise the log-likelihood over the free parameters of ``layout`` by L-BFGS-B, from
    ``start``, for at most ``max_iter`` iterations.

    ``value_and_gradient(params)`` returns (l, dl/dtheta per key), or raises ``ValueError``
    where the likelihood is not defined. Returns the parameters, whether the iteration cap
    stopped the climb, and the largest entry of the projected gradient at the end.
    """
    bounds = layout.bounds()
    x0 = layout.pack(start)

    def negative(x: np.ndarray) -> tuple[float, np.ndarray]:
        # a line search may probe parameters far out, whose values overflow: refused as +inf, silently
        with np.errstate(over="ignore", invalid="ignore"):
            try:
                value, gradients = value_and_gradient(layout.unpack(x, start))
            except (ValueError, np.linalg.LinAlgError):
                return np.inf, np.zeros_like(x)
            gradient = -layout.chain(x, gradients) if np.isfinite(value) else None
        if gradient is None or not np.isfinite(gradient).all():
            return np.inf, np.zeros_like(x)
        return -value, gradient

    result = optimize.minimize(
        negative,
        x0,
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options={"maxiter": max_iter, "gtol": 1e-3 * GTOL, "ftol": 1e-15, "maxcor": 20},
    )
    x = result.x if np.isfinite(result.fun) else x0
    _, gradient = negative(x)
    lows = np.array([-np.inf if low is None else low for low, _ in bounds])
    projected = np.where((x <= lows) & (gradient > 0), 0.0, gradient)  # pushing into a bound is stationary
    return (
        layout.unpack(x, start),
        bool(result.nit >= max_iter and not result.success),
        float(np.abs(projected).max(initial=0.0)),
    )


def standard_errors(
    value_and_gradient: Callable[[dict[str, np.ndarray]], tuple[float, dict[str, np.ndarray]]],
    params: dict[str, np.ndarray],
    layout: Parameterisation,
    on_boundary: dict[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """Standard errors of the free parameters of ``layout`` at the estimate ``params``: square
    roots of the diagonal of the inverse observed information -H, H the Hessian of the
    log-likelihood in the parameters themselves (entries of the matrices, distinct entries of
    the covariances), by central differences of the analytic score.

    NaN for an entry on the boundary (``on_boundary[key]`` flags the variances at 0 of a
    covariance; their rows and columns go too), and for every entry where -H over the others
    is not positive definite (e.g. an unidentified state basis). Returns per key an array
    shaped like the parameter.
    """
    entries, boundary, symmetric = [], [], set()  # (key, index) of each entry; whether it is on the boundary
    for block in layout.blocks:
        if block.kind == "matrix":
            indices = list(np.ndindex(block.shape))
            boundary += [False] * len(indices)
        else:
            symmetric.add(block.key)
            d = block.shape[0]
            rows, columns = np.tril_indices(d) if block.kind == "covariance" else (np.arange(d), np.arange(d))
            low = on_boundary.get(block.key, np.zeros(d, dtype=bool))
            indices = [(int(i), int(j)) for i, j in zip(rows, columns)]
            boundary += [bool(low[i] or low[j]) for i, j in indices]
        entries += [(block.key, index) for index in indices]

    inside = [entry for entry, on_boundary in zip(entries, boundary) if not on_boundary]

    def gradient(shifted: dict[str, np.ndarray]) -> np.ndarray:
        g = value_and_gradient(shifted)[1]  # dl = tr(G dS): an off-diagonal entry moves twice
        return np.array([g[key][i] * (2.0 if key in symmetric and i[0] != i[1] else 1.0) for key, i in inside])

    hessian = np.empty((len(inside), len(inside)))
    for row, (key, index) in enumerate(inside):
        value = params[key]
        step = 1e-5 * max(abs(float(value[index])), float(np.sqrt(np.mean(np.square(value)))), 1e-12)
        change = np.zeros_like(value)
        change[index] = step
        if key in symmetric:
            change[index[::-1]] = step
        hessian[row] = (gradient({**params, key: value + change}) - gradient({**params, key: value - change})) / (
            2 * step
        )
    information = -0.5 * (hessian + hessian.T)
    errors = dict.fromkeys(entries, np.nan)
    if inside and np.all(np.linalg.eigvalsh(information) > 0):
        errors.update(zip(inside, np.sqrt(np.diag(np.linalg.inv(information)))))
    out = {block.key: np.full(block.shape, np.nan) for block in layout.blocks}
    for (key, index), error in errors.items():
        out[key][index] = out[key][index[::-1] if key in symmetric else index] = error
    return out
