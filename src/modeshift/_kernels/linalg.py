"""Small dense linear algebra for numba kernels: in place, without allocation, on the
leading ``size`` rows and columns of preallocated arrays.

The Kalman filter and smoother (:mod:`modeshift._kernels.kalman`), their batched step
(:mod:`modeshift._kernels.batched_kalman`) and the block-tridiagonal solver
(:mod:`modeshift._kernels.tridiagonal`) are built from these few operations: a Cholesky
factorisation that can keep a semi-definite factor, the two triangular solves with it,
the congruence L M L^T (symmetric by construction), an affine map and a whitened norm.
Each is a numba function meant to be called from other numba functions.

Compiled callers pass a flag as ``np.True_`` / ``np.False_`` and an index as int64 (a
``prange`` index is unsigned: ``np.int64(s)``): numba types a literal ``True`` or ``1`` in a
call as ``Literal[bool](True)`` or ``Literal[int](1)``, and each such type is another
compilation of the callee (seconds in a fresh cache) for the same machine code.
"""

from __future__ import annotations

import numpy as np

from modeshift._kernels.compile import kernel

__all__ = [
    "PIVOT_TOL",
    "affine",
    "backward_substitute",
    "cholesky_in_place",
    "congruence",
    "copy_into",
    "forward_substitute",
    "whitened_norm",
]

# A Cholesky pivot at or below this fraction of its diagonal entry counts as zero: the
# matrix is then not positive definite (the factorisation fails), or, for a
# semi-definite factor, that direction is dropped.
PIVOT_TOL = 1e-12


@kernel
def copy_into(source: np.ndarray, out: np.ndarray) -> None:
    """out[...] = source, by explicit loops (a slice assignment compiles numba's
    shape-mismatch error path, which takes seconds)."""
    for index in np.ndindex(source.shape):
        out[index] = source[index]


@kernel
def cholesky_in_place(a: np.ndarray, size: int, semidefinite: bool) -> bool:
    """Lower Cholesky factor of ``a[:size, :size]`` in place, from its lower triangle.

    A pivot d_j <= PIVOT_TOL * a_jj (or NaN) fails the factorisation, unless
    ``semidefinite``: then column j of the factor is set to zero, so that L L^T
    still reproduces a positive semi-definite matrix.
    """
    for j in range(size):
        diagonal = a[j, j]
        pivot = diagonal
        for k in range(j):
            pivot -= a[j, k] * a[j, k]
        if not pivot > PIVOT_TOL * diagonal:
            if not semidefinite:
                return False
            for i in range(j, size):
                a[i, j] = 0.0
            continue
        root = np.sqrt(pivot)
        a[j, j] = root
        for i in range(j + 1, size):
            value = a[i, j]
            for k in range(j):
                value -= a[i, k] * a[j, k]
            a[i, j] = value / root
    return True


@kernel
def forward_substitute(factor: np.ndarray, size: int, b: np.ndarray) -> None:
    """b <- L^- b for the lower factor L (a zero pivot gives a zero component)."""
    for i in range(size):
        if factor[i, i] == 0.0:
            b[i] = 0.0
            continue
        value = b[i]
        for k in range(i):
            value -= factor[i, k] * b[k]
        b[i] = value / factor[i, i]


@kernel
def backward_substitute(factor: np.ndarray, size: int, b: np.ndarray) -> None:
    """b <- L^-T b for the lower factor L (a zero pivot gives a zero component)."""
    for i in range(size - 1, -1, -1):
        if factor[i, i] == 0.0:
            b[i] = 0.0
            continue
        value = b[i]
        for k in range(i + 1, size):
            value -= factor[k, i] * b[k]
        b[i] = value / factor[i, i]


@kernel
def congruence(
    left: np.ndarray, middle: np.ndarray, size: int, out: np.ndarray, product: np.ndarray, accumulate: bool
) -> None:
    """out (+)= L M L^T with L = ``left[:, :size]``, M = ``middle[:size, :size]``; symmetric by construction.

    ``product`` is scratch of at least (len(out), size).
    """
    n = out.shape[0]
    for i in range(n):
        for j in range(size):
            value = 0.0
            for k in range(size):
                value += left[i, k] * middle[k, j]
            product[i, j] = value
    for i in range(n):
        for j in range(i + 1):
            value = out[i, j] if accumulate else 0.0
            for k in range(size):
                value += product[i, k] * left[j, k]
            out[i, j] = value
            out[j, i] = value


@kernel
def affine(M: np.ndarray, x: np.ndarray, N: np.ndarray, u: np.ndarray, out: np.ndarray) -> None:
    """out = M x + N u."""
    for i in range(out.shape[0]):
        value = 0.0
        for j in range(x.shape[0]):
            value += M[i, j] * x[j]
        for k in range(u.shape[0]):
            value += N[i, k] * u[k]
        out[i] = value


@kernel
def whitened_norm(factor: np.ndarray, size: int, v: np.ndarray) -> float:
    """|L^-1 v|^2 for the lower factor L; leaves L^-1 v in ``v``."""
    forward_substitute(factor, size, v)
    total = 0.0
    for a in range(size):
        total += v[a] * v[a]
    return total
