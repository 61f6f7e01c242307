"""BFGS for a few unconstrained parameters whose objective is the expensive part.

A maximum-likelihood fit of a structural model climbs a handful of parameters, and each
evaluation of the log-likelihood and its gradient is one compiled pass of some tens of
microseconds. ``scipy.optimize.minimize`` wraps every evaluation and iteration in generic
machinery that costs as much as the pass itself; here the whole method is a few lines of numpy
on vectors of that size, so the climb costs its passes.

The method (Nocedal & Wright 2006, ch. 6): from x_k, the direction d = -H g_k with H the
inverse-Hessian estimate, a step a d accepted by the weak Wolfe conditions

    f(x + a d) <= f(x) + c1 a g'd        (enough decrease),
    g(x + a d)'d >= c2 g'd               (the slope has flattened: y's > 0),

found by bracketing (double the step while the slope is still steep, interpolate inside the
bracket once a step overshoots), then the BFGS update of H with s = a d, y = g_k+1 - g_k:

    H <- (I - s y' / y's) H (I - y s' / y's) + s s' / y's,

H = (y's / y'y) I before the first update. The first step has length 1 in x (as L-BFGS-B's),
so x should be scaled to order one, unless the caller knows f's curvature. It stops when
every entry of the gradient is at most ``gtol`` (converged), when an iteration lowers f by at
most ``ftol`` relative to |f| (converged: the round-off floor), at ``max_iter`` iterations (not
converged), or when no step lowers f, not even along -g with H forgotten (not converged: f is
not smooth there, or its gradient is wrong).

>>> import numpy as np
>>> def bowl(x):
...     return float((x[0] - 1) ** 2 + 10 * (x[1] + 2) ** 2), np.array([2 * (x[0] - 1), 20 * (x[1] + 2)])
>>> result = minimise(bowl, np.zeros(2))
>>> result.converged, np.round(result.x, 4).tolist()
(True, [1.0, -2.0])
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["Minimum", "minimise"]

#: the Wolfe constants (L-BFGS-B's): a sufficient decrease, and a slope flattened to 0.9 of the start's
_DECREASE, _CURVATURE = 1e-4, 0.9
#: trial steps per line search before it gives up
_MAX_TRIALS = 30


@dataclass(frozen=True)
class Minimum:
    """Where :func:`minimise` stopped: ``x``, f(x) ``value``, its ``gradient``, the iterations
    taken, the evaluations of f, whether it ``converged`` and why it stopped (``message``)."""

    x: np.ndarray
    value: float
    gradient: np.ndarray
    n_iter: int
    n_evaluations: int
    converged: bool
    message: str


def minimise(
    value_and_gradient: Callable[[np.ndarray], tuple[float, np.ndarray]],
    x0: np.ndarray,
    max_iter: int = 200,
    gtol: float = 1e-5,
    ftol: float = 1e-13,
    callback: Callable[[np.ndarray, float], None] | None = None,
    curvature: float | None = None,
) -> Minimum:
    """Minimise f from ``x0`` by BFGS; ``value_and_gradient(x)`` returns (f(x), its gradient),
    f = inf (or any non-finite value) where f is not defined (the line search backs off).
    ``callback(x, f)`` runs after each iteration; ``curvature``, an estimate of f's second
    derivative along x (of order 1 / the step to take), sets the first step to -gradient /
    curvature (without it, the first step has length 1). Returns the :class:`Minimum`."""
    x = np.array(x0, dtype=float)
    value, gradient = value_and_gradient(x)
    evaluations = 1
    if not math.isfinite(value):
        return Minimum(x, value, gradient, 0, evaluations, False, "f is not finite at the start")
    inverse_hessian = np.eye(x.size)
    first = True
    for iteration in range(max_iter):
        if _largest(gradient) <= gtol:
            return Minimum(x, value, gradient, iteration, evaluations, True, "the gradient is below gtol")
        direction = -inverse_hessian @ gradient
        slope = float(gradient @ direction)
        if not slope < 0:  # H lost positive definiteness to round-off: start again from the gradient
            inverse_hessian, first = np.eye(x.size), True
            direction, slope = -gradient, -float(gradient @ gradient)
        if not first:
            step = 1.0
        else:  # H = I: a step of length 1, or the Newton step of f ~ curvature |x|^2 / 2
            step = 1.0 / math.sqrt(-slope) if curvature is None else 1.0 / curvature
        found = _line_search(value_and_gradient, x, value, direction, slope, step)
        evaluations += found[3]
        if found[0] is None and not first:  # H may be what failed (as L-BFGS-B, forget it once)
            inverse_hessian, first = np.eye(x.size), True
            continue
        if found[0] is None:
            return Minimum(x, value, gradient, iteration, evaluations, False, "no step along the direction lowers f")
        step, new_value, new_gradient, _ = found
        s, y = step * direction, new_gradient - gradient
        sy, yy = float(s @ y), float(y @ y)
        if sy > 1e-12 * math.sqrt(float(s @ s) * yy):
            if first:
                inverse_hessian = (sy / yy) * np.eye(x.size)
                first = False
            hy = inverse_hessian @ y
            ss, hys = s[:, None] * s, hy[:, None] * s
            inverse_hessian += ((sy + float(y @ hy)) / sy**2) * ss - (hys + hys.T) / sy
        decrease = value - new_value
        x, value, gradient = x + s, new_value, new_gradient
        if callback is not None:
            callback(x, value)
        if decrease <= ftol * max(abs(value), abs(value + decrease), 1.0):
            return Minimum(x, value, gradient, iteration + 1, evaluations, True, "f decreased by less than ftol")
    converged = _largest(gradient) <= gtol
    return Minimum(x, value, gradient, max_iter, evaluations, converged, f"{max_iter} iterations (max_iter)")


def _line_search(
    value_and_gradient: Callable[[np.ndarray], tuple[float, np.ndarray]],
    x: np.ndarray,
    value: float,
    direction: np.ndarray,
    slope: float,
    step: float,
) -> tuple[float | None, float, np.ndarray, int]:
    """A step a along ``direction`` (f's slope there ``slope`` < 0) meeting the weak Wolfe
    conditions, from the trial ``step``: (a, f, gradient at x + a d, evaluations), a = None when
    none is found. The best step with enough decrease found is taken when the slope never
    flattens within the trials."""
    low, high = 0.0, math.inf  # the bracket: ``low`` has enough decrease, ``high`` too little
    low_value, low_slope = value, slope
    best: tuple[float, float, np.ndarray] | None = None
    for trial in range(1, _MAX_TRIALS + 1):
        new_value, new_gradient = value_and_gradient(x + step * direction)
        new_slope = float(new_gradient @ direction) if math.isfinite(new_value) else math.nan
        if not math.isfinite(new_value) or new_value > value + _DECREASE * step * slope or new_value >= low_value:
            high = step
        elif new_slope >= _CURVATURE * slope:
            return step, new_value, new_gradient, trial
        else:
            best = (step, new_value, new_gradient)
            low, low_value, low_slope = step, new_value, new_slope
        if high == math.inf:
            step *= 2.0
            continue
        guess = low + 0.5 * (high - low)
        if high == step and math.isfinite(new_slope):  # the cubic through f and its slope at low and high
            guess = _cubic_minimiser(low, low_value, low_slope, high, new_value, new_slope, guess)
        width = high - low
        step = min(max(guess, low + 0.1 * width), high - 0.1 * width)  # kept off the bracket's ends
    if best is None:
        return None, value, np.zeros_like(x), _MAX_TRIALS
    return (*best, _MAX_TRIALS)


def _cubic_minimiser(a: float, fa: float, da: float, b: float, fb: float, db: float, otherwise: float) -> float:
    """The minimiser of the cubic with values fa, fb and slopes da, db at a and b (Nocedal & Wright
    2006, eq. 3.59), ``otherwise`` when it has none."""
    d1 = da + db - 3.0 * (fa - fb) / (a - b)
    radicand = d1 * d1 - da * db
    if radicand < 0:
        return otherwise
    d2 = np.copysign(np.sqrt(radicand), b - a)
    denominator = db - da + 2.0 * d2
    return b - (b - a) * (db + d2 - d1) / denominator if denominator != 0 else otherwise


def _largest(gradient: np.ndarray) -> float:
    return max(map(abs, gradient.tolist()), default=0.0)
