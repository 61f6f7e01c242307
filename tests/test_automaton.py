"""The automaton as data: flows, guards and dwell times of a fitted ARHMM, and their plot."""

from __future__ import annotations

import numpy as np
import pytest

from modeshift import ARHMM
from modeshift.datasets.simulators import thermostat
from modeshift.metrics import mode_accuracy
from modeshift.models.automaton import crossings, state_grid
from modeshift.models.capabilities import HybridAutomaton


def _thermostat_fit(seed: int):
    sim = thermostat(2000, random_state=seed)
    model = ARHMM(n_states=2, order=2, recurrent=True, random_state=0).fit(sim.observations)
    accuracy = mode_accuracy(sim.modes[2:], model.predict(sim.observations)[2:])
    thresholds = sorted(float(g.thresholds[0]) for g in model.automaton(sim.observations).guards)
    return accuracy, np.array(thresholds)


def test_thermostat_guards_within_5_percent():
    accuracy, thresholds = _thermostat_fit(0)
    assert accuracy >= 0.95
    np.testing.assert_allclose(thresholds, [18.0, 22.0], rtol=0.05)


@pytest.mark.slow
def test_thermostat_five_seeds():
    results = [_thermostat_fit(seed) for seed in range(5)]
    assert np.mean([accuracy for accuracy, _ in results]) >= 0.95
    for _, thresholds in results:
        np.testing.assert_allclose(thresholds, [18.0, 22.0], rtol=0.05)


def test_linear_automaton_is_the_regression():
    model = ARHMM(n_states=2)
    model.startprob_, model.transmat_ = np.array([0.5, 0.5]), np.array([[0.9, 0.1], [0.25, 0.75]])
    model.coefs_ = np.array([[[0.5, 0.1], [0.0, 0.9]], [[1.0, 0.0], [0.2, 0.3]]])
    model.intercepts_, model.covars_ = np.array([[1.0, 0.0], [0.0, -1.0]]), np.tile(np.eye(2), (2, 1, 1))
    X = np.random.default_rng(0).normal(size=(50, 2))
    found = model.automaton(X, resolution=7)
    assert isinstance(model, HybridAutomaton)
    assert found.grid.shape == (49, 2) and found.grid_shape == (7, 7)
    np.testing.assert_allclose(found.grid.min(axis=0), X[:-1].min(axis=0))
    for k in range(2):
        expected = found.grid @ model.coefs_[k].T + model.intercepts_[k] - found.grid
        np.testing.assert_allclose(found.vector_fields[k], expected)
        np.testing.assert_array_equal(found.flows[k].coefficients, model.coefs_[k])
    np.testing.assert_allclose(found.dwell_times, [10.0, 4.0])
    assert found.guards == [] and found.resets == {}
    assert model.automaton().grid is None  # a linear model has no range of its own


def test_state_grid_and_crossings():
    grid, shape = state_grid(np.array([0.0]), np.array([2.0]), 5)
    np.testing.assert_allclose(grid[:, 0], [0, 0.5, 1, 1.5, 2])
    assert shape == (5,)
    np.testing.assert_allclose(crossings(np.arange(4.0), np.array([1.0, 0.0, 0.0, 1.0]), 0.5), [0.5, 2.5])


def test_plot_flows():
    pytest.importorskip("matplotlib")
    from modeshift.plot import plot_flows

    sim = thermostat(600, random_state=1)
    two = ARHMM(n_states=2, order=2, recurrent=True, random_state=0).fit(sim.observations)
    figure = plot_flows(two, sim.observations)
    assert len(figure.axes) == 2 and all(ax.collections for ax in figure.axes)  # arrows and guard lines
    one = ARHMM(n_states=2, features="polynomial", random_state=0).fit(sim.observations)
    (ax,) = plot_flows(one.automaton(sim.observations)).axes
    assert len(ax.lines) == 3  # one curve per mode and the zero line
    with pytest.raises(ValueError, match="no grid"):
        plot_flows(ARHMM(n_states=2, random_state=0).fit(sim.observations))
