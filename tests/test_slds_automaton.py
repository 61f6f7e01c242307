"""SwitchingLDS.automaton(): flows, vector fields and guards in the latent space, and their plot."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.linalg import expm

from modeshift import ContinuousSwitchingLDS, SwitchingLDS
from modeshift.datasets.simulators import nascar, switching_spirals, thermostat
from modeshift.models.capabilities import HybridAutomaton


def _fit(model: SwitchingLDS, observations: np.ndarray) -> SwitchingLDS:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.fit(observations)


def test_thermostat_guards_in_degrees_within_5_percent():
    """A 1-D state seen as y = c x + d: the guards' thresholds, mapped to y, are the set points."""
    sim = thermostat(1000, random_state=0)
    model = _fit(SwitchingLDS(n_states=2, state_dim=1, recurrent=True, n_iter=100, random_state=0), sim.observations)
    found = model.automaton(sim.observations)
    assert isinstance(model, HybridAutomaton) and found.grid.shape == (25, 1)
    assert [(g.source, g.target) for g in found.guards] == [(0, 1), (1, 0)]
    c, d = model.observation_matrix_[0, 0], model.observation_offset_[0]
    degrees = sorted(float(c * g.thresholds[0] + d) for g in found.guards)
    np.testing.assert_allclose(degrees, [18.0, 22.0], rtol=0.05)
    np.testing.assert_array_equal(found.dwell_times, model.dwell_times_)
    assert found.resets == {}


def test_spirals_flows_are_the_dynamics():
    sim = switching_spirals(400, random_state=0)
    model = _fit(SwitchingLDS(n_states=2, state_dim=2, n_iter=30, random_state=0), sim.observations)
    found = model.automaton(sim.observations, resolution=9)
    states = model.smooth(sim.observations)
    assert found.grid.shape == (81, 2) and found.grid_shape == (9, 9)
    np.testing.assert_allclose(found.grid.min(axis=0), states.min(axis=0))
    np.testing.assert_allclose(found.grid.max(axis=0), states.max(axis=0))
    for k in range(2):
        A, b = model.dynamics_matrices_[k], model.dynamics_offsets_[k]
        np.testing.assert_allclose(found.vector_fields[k], found.grid @ A.T + b - found.grid)
        np.testing.assert_array_equal(found.flows[k].coefficients, A)
        np.testing.assert_array_equal(found.flows[k].noise, model.dynamics_covariances_[k])
    np.testing.assert_allclose(found.dwell_times, 1.0 / (1.0 - np.diag(model.transmat_)))
    assert found.guards == []
    assert model.automaton().grid is None  # the state's basis is arbitrary: its range comes from data


def test_continuous_automaton_has_the_drifts_and_holding_times():
    model = ContinuousSwitchingLDS(n_states=2, state_dim=2)
    model.drift_matrices_ = np.array([[[-0.1, 0.5], [-0.5, -0.1]], [[-0.3, 0.0], [0.2, -0.2]]])
    model.drift_offsets_, model.diffusion_covariances_ = (
        np.array([[0.1, 0.0], [0.0, -0.2]]),
        np.tile(np.eye(2), (2, 1, 1)),
    )
    model.rate_matrix_ = np.array([[-0.1, 0.1], [0.25, -0.25]])
    model.observation_matrix_, model.observation_offset_, model.observation_covariance_ = (
        np.eye(2),
        np.zeros(2),
        np.eye(2),
    )
    model.initial_state_mean_, model.initial_state_covariance_, model.startprob_ = (
        np.zeros(2),
        np.eye(2),
        np.ones(2) / 2,
    )
    Y, _ = model.sample(50, random_state=0)
    found = model.automaton(Y, times=np.arange(50.0) * 0.5, resolution=5)
    np.testing.assert_allclose(found.dwell_times, [10.0, 4.0])
    np.testing.assert_array_equal(found.flows[1].coefficients, model.drift_matrices_[1])
    F, f = model.drift_matrices_[0], model.drift_offsets_[0]
    one_unit = found.grid @ expm(F).T + np.linalg.solve(F, (expm(F) - np.eye(2)) @ f)
    np.testing.assert_allclose(found.vector_fields[0], one_unit - found.grid, atol=1e-12)


def test_plot_flows_of_a_latent_fit():
    pytest.importorskip("matplotlib")
    from modeshift.plot import plot_flows

    sim = nascar(600, random_state=0)
    model = _fit(SwitchingLDS(n_states=4, state_dim=2, recurrent=True, n_iter=20, random_state=0), sim.observations)
    found = model.automaton(sim.observations, resolution=9)
    assert len(found.guards) == 12 and all(0 <= g.probability.min() <= g.probability.max() <= 1 for g in found.guards)
    figure = plot_flows(model, sim.observations)
    assert len(figure.axes) == 4 and all(ax.collections for ax in figure.axes)  # arrows (and guard lines)
    sim = thermostat(300, random_state=1)
    one = _fit(SwitchingLDS(n_states=2, state_dim=1, recurrent=True, n_iter=20, random_state=0), sim.observations)
    (ax,) = plot_flows(one, sim.observations).axes
    assert len(ax.lines) >= 3  # one curve per mode, the zero line, and the guards' thresholds
    with pytest.raises(ValueError, match="no grid"):
        plot_flows(one)
