"""Online EM (Cappé & Moulines 2009): learn from a stream one chunk at a time, without refitting.

Batch EM alternates an E-step, the expected sufficient statistics per step
S = E[s(z, y) | y; theta] / T over all the data, and an M-step theta = m(S). Online EM
replaces the E-step over all the data by a stochastic approximation over chunks y^(1), y^(2), ...:

    S_n = (1 - gamma_n) S_n-1 + gamma_n s_n,    s_n = E[s(z, y^(n)) | y^(n); theta_n-1] / T_n,
    theta_n = m(S_n),    gamma_n = n^-alpha,  alpha in (0.5, 1],

so S_1 = s_1 and every chunk is seen once. The step sizes meet the Robbins-Monro conditions
(sum gamma_n = inf, sum gamma_n^2 < inf) for alpha in (0.5, 1]; alpha = 1 weighs every chunk's
statistics equally, a smaller alpha (default 0.6) forgets faster the early chunks, computed
under poorer parameters. The M-step is the model's own (the same blocks as batch EM), given
S_n times the number of steps seen so far, so that priors (pseudo-counts, ``reg_covar``) weigh
as in a batch fit of everything seen.

The running statistics are not saved with the model: after ``fit``, ``load`` or a hand-set value
the approximation starts afresh from the current parameters, the first chunk's statistics alone.
Each chunk is a sequence of its own (its statistics are the batch E-step's on it): its first
step is drawn from the start law. Use chunks many dwell times long (hundreds of steps).

>>> import numpy as np
>>> from modeshift import HMM
>>> truth = HMM(n_states=2)
>>> truth.startprob_, truth.transmat_ = np.array([0.5, 0.5]), np.array([[0.95, 0.05], [0.1, 0.9]])
>>> truth.means_, truth.covars_ = np.array([[0.0], [3.0]]), np.ones((2, 1, 1))
>>> X, _ = truth.sample(20000, random_state=0)
>>> model = HMM(n_states=2, random_state=0)
>>> for chunk in np.split(X, 40):
...     model = model.partial_fit(chunk)
>>> np.sort(model.means_.ravel()).round(1) + 0.0  # (+ 0.0 turns -0. into 0.)
array([0., 3.])
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["DEFAULT_EXPONENT", "online_em_step", "step_size"]

DEFAULT_EXPONENT = 0.6


def step_size(n: int, exponent: float = DEFAULT_EXPONENT) -> float:
    """gamma_n = n^-exponent for the n-th chunk (n >= 1), exponent in (0.5, 1]."""
    if not 0.5 < exponent <= 1.0:
        raise ValueError(f"step_exponent must lie in (0.5, 1], got {exponent!r}")
    return float(n) ** -exponent


def online_em_step(model: Any, data: Any, n_steps: int, exponent: float = DEFAULT_EXPONENT) -> float:
    """One online-EM step of ``model`` on one chunk ``data`` (already checked, ``n_steps`` steps).

    The model provides ``_online_start(data)`` (starting values when it has none),
    ``_online_statistics(data)`` -> (log-likelihood, additive statistics) and
    ``_online_maximize(data, statistics)``; the running statistics live in the model's
    ``_online`` slot and are forgotten when its parameters were changed by anything but
    online EM (a ``fit``, a hand-set value). Returns the chunk's log-likelihood under the
    parameters before the step.
    """
    state = model.__dict__.get("_online")
    if state is not None and not _same(state["parameters"], model._online_parameters()):
        state = None
    if state is None:
        model._online_start(data)
        state = {"n_chunks": 0, "n_steps": 0, "statistics": None}
    log_lik, statistics = model._online_statistics(data)
    n = state["n_chunks"] + 1
    gamma = step_size(n, exponent)
    per_step = _affine(statistics, 1.0 / n_steps)
    running = per_step if state["statistics"] is None else _mix(state["statistics"], per_step, gamma)
    seen = state["n_steps"] + n_steps
    model._online_maximize(data, _affine(running, float(seen)))
    model.__dict__["_online"] = {
        "n_chunks": n,
        "n_steps": seen,
        "statistics": running,
        "parameters": model._online_parameters(),
    }
    return log_lik


def _affine(stats: Any, scale: float) -> Any:
    """Statistics times a number, field by field (nested statistics, tuples, arrays, numbers)."""
    return _mix(stats, stats, 0.0, scale)


def _mix(old: Any, new: Any, gamma: float, scale: float = 1.0) -> Any:
    """scale ((1 - gamma) old + gamma new), field by field."""
    if isinstance(old, dict):
        return type(old)({key: _mix(old[key], new[key], gamma, scale) for key in old})
    if isinstance(old, tuple):
        return tuple(_mix(a, b, gamma, scale) for a, b in zip(old, new))
    if isinstance(old, (np.ndarray, float, int, np.number)):
        return scale * ((1.0 - gamma) * old + gamma * new)
    raise NotImplementedError(f"online EM cannot average statistics of type {type(old).__name__}")


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
