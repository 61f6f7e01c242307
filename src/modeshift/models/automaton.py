"""The hybrid automaton a fitted switching model describes, as plain data.

A stochastic hybrid automaton has modes; in each a flow moves the continuous state;
guards say where the state makes a switch i -> j likely; a reset may move the state at a
switch; each mode lasts a while. :meth:`ARHMM.automaton() <modeshift.ARHMM.automaton>`
(and the same method of the SwitchingLDS, ContinuousSwitchingLDS and NonlinearSwitchingLDS, in
their latent space) returns all of this as an :class:`Automaton` of arrays: nothing to call,
everything to inspect, tabulate or plot (:func:`modeshift.plot.plot_flows`).

For an autoregression the state is the lag vector s_t = [y_t, ..., y_t-order+1], and mode k's
flow moves it by the vector field ``E[s_t+1 | s_t = s, z_t+1 = k] - s``, sampled on a grid
when the state has one or two dimensions. A guard i -> j is the level set where
``p(z_t+1 = j | z_t = i, s_t = s) = 1/2``: its probability on the grid, and for a scalar
series the ``thresholds`` where constant histories (y, ..., y) cross it.

>>> import numpy as np
>>> grid, shape = state_grid(np.array([0.0, -1.0]), np.array([1.0, 1.0]), 3)
>>> grid.shape, shape
((9, 2), (3, 3))
>>> crossings(np.linspace(0, 1, 5), np.array([0.1, 0.3, 0.6, 0.7, 0.2]), 0.5)
array([0.41666667, 0.85      ])
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modeshift.chain_analysis import dwell_times

__all__ = [
    "Automaton",
    "Flow",
    "Guard",
    "crossings",
    "sampled_parts",
    "state_grid",
    "switch_guards",
    "switching_dwell_times",
]

THRESHOLD_LEVELS = 2001  # points of a scalar state's range searched for a guard's 1/2 crossings


@dataclass(frozen=True)
class Flow:
    """Mode ``mode``'s flow ``y_t = coefficients @ regressors + intercept + N(0, noise)``;
    ``regressors`` names what the coefficients multiply (the lags, or a feature map's config)."""

    mode: int
    coefficients: np.ndarray
    intercept: np.ndarray
    noise: np.ndarray
    regressors: str | dict


@dataclass(frozen=True)
class Guard:
    """Where the switch ``source`` -> ``target`` becomes likelier than not.

    ``probability`` is p(target | source, state) at each grid point (None without a grid);
    ``thresholds`` the levels of a scalar series where it crosses 1/2 (None otherwise).
    """

    source: int
    target: int
    probability: np.ndarray | None
    thresholds: np.ndarray | None


@dataclass(frozen=True)
class Automaton:
    """Modes, flows, guards, resets and dwell times of a fitted hybrid model.

    Attributes
    ----------
    modes : (K,) int array
    flows : list of :class:`Flow`, one per mode
    grid : (G, S) array or None
        Points of the S-dimensional state space (S <= 2) where the fields are sampled.
    grid_shape : tuple
        ``grid`` reshaped to this is a (resolution,) or (resolution, resolution) mesh.
    vector_fields : (K, G, S) array or None
        Each mode's expected move of the state in one step, at the grid points.
    guards : list of :class:`Guard`
        One per ordered pair of modes when the switching depends on the state; empty otherwise.
    resets : dict
        (source, target) -> (matrix, offset) of an affine reset at that switch; empty when the
        model has none.
    dwell_times : (K,) array
        Expected steps per visit to each mode.
    """

    modes: np.ndarray
    flows: list[Flow]
    grid: np.ndarray | None
    grid_shape: tuple[int, ...]
    vector_fields: np.ndarray | None
    guards: list[Guard] = field(default_factory=list)
    resets: dict = field(default_factory=dict)
    dwell_times: np.ndarray = field(default_factory=lambda: np.zeros(0))


def state_grid(low: np.ndarray, high: np.ndarray, resolution: int) -> tuple[np.ndarray, tuple[int, ...]]:
    """A regular mesh of ``resolution`` points per axis over the box [low, high] (1 or 2 axes):
    its points (G, S), in C order, and the mesh's shape."""
    _check_resolution(resolution)
    axes = [np.linspace(a, b, resolution) for a, b in zip(low, high)]
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.column_stack([m.ravel() for m in mesh]), tuple(len(a) for a in axes)


def _check_resolution(resolution: Any) -> None:
    if isinstance(resolution, bool) or not isinstance(resolution, numbers.Integral) or resolution < 2:
        raise ValueError(f"resolution (grid points per axis) must be an integer >= 2, got {resolution!r}")


def crossings(x: np.ndarray, values: np.ndarray, level: float) -> np.ndarray:
    """The points where ``values`` sampled at increasing ``x`` cross ``level``, by linear interpolation."""
    above = values - level
    at = np.flatnonzero(np.sign(above[:-1]) * np.sign(above[1:]) < 0)
    fraction = above[at] / (above[at] - above[at + 1])
    return x[at] + fraction * (x[at + 1] - x[at])


def switch_guards(
    n_modes: int, on_grid: np.ndarray | None, levels: np.ndarray | None = None, along: np.ndarray | None = None
) -> list[Guard]:
    """One :class:`Guard` per ordered pair of distinct modes, in the order (0, 1), (0, 2), ...
    (1, 0), ..., from switch probabilities p(j | i, state) shaped (points, K, K): ``on_grid`` at
    the grid's points (None: no grid), ``along`` at the increasing ``levels`` of a scalar series,
    whose 1/2 crossings are the thresholds (None: no thresholds)."""
    guards = []
    for i in range(n_modes):
        for j in (j for j in range(n_modes) if j != i):
            thresholds = None if along is None else crossings(levels, along[:, i, j], 0.5)
            guards.append(Guard(i, j, None if on_grid is None else on_grid[:, i, j], thresholds))
    return guards


def sampled_parts(
    n_modes: int,
    bounds: tuple[np.ndarray, np.ndarray] | None,
    resolution: int,
    moves: Callable[[np.ndarray], np.ndarray],
    switches: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray | None, tuple[int, ...], np.ndarray | None, list[Guard]]:
    """The parts of an automaton sampled over the box ``bounds`` = (low, high) of a state space
    (None: no box): ``(grid, grid_shape, vector_fields, guards)``.

    With one or two dimensions the grid is a ``resolution``-point mesh of the box and
    ``moves(points)`` (K, G, S) the vector fields on it. With ``switches(points)`` (G, K, K), the
    state-dependent switch probabilities, there is one guard per switch: its probability on the
    mesh and, for a scalar state, its thresholds over :data:`THRESHOLD_LEVELS` levels spanning
    the box. Without ``switches`` (a Markov chain of modes) there are no guards.
    """
    _check_resolution(resolution)
    grid, shape, fields = None, (), None
    if bounds is not None and len(bounds[0]) <= 2:
        grid, shape = state_grid(*bounds, resolution)
        fields = moves(grid)
    if switches is None:
        return grid, shape, fields, []
    levels = along = None
    if bounds is not None and len(bounds[0]) == 1:
        levels = np.linspace(bounds[0][0], bounds[1][0], THRESHOLD_LEVELS)
        along = switches(levels[:, None])
    return grid, shape, fields, switch_guards(n_modes, None if grid is None else switches(grid), levels, along)


def switching_dwell_times(model: Any) -> np.ndarray:
    """Expected steps per visit to each mode of a switching state-space model: 1 / (1 - p_kk) of
    its ``transmat_``, or with ``recurrent`` switches, which depend on the state, its fitted
    ``dwell_times_`` (NaN before a fit)."""
    if model.recurrent:
        return np.asarray(model.__dict__.get("dwell_times_", np.full(model._k, np.nan)), dtype=float)
    return dwell_times(model.transmat_)
