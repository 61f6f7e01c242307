"""Simulated hybrid systems are reproducible, well-formed and physically sensible."""

import numpy as np
import pytest

from modeshift.datasets.simulators import (
    Simulation,
    bouncing_ball,
    nascar,
    switching_oscillators,
    switching_spirals,
    thermostat,
)

SIMULATORS = {
    thermostat: (1, 1, 2),
    bouncing_ball: (1, 2, 2),
    nascar: (10, 2, 4),
    switching_spirals: (2, 2, 2),
    switching_oscillators: (2, 2, 2),
}


@pytest.mark.parametrize("simulate", SIMULATORS)
def test_same_seed_same_run(simulate):
    a, b, c = simulate(300, random_state=7), simulate(300, random_state=7), simulate(300, random_state=8)
    for field in ("observations", "states", "modes"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.observations, c.observations)
    same = simulate(300, random_state=np.random.default_rng(7))
    np.testing.assert_array_equal(a.observations, same.observations)


@pytest.mark.parametrize("simulate", SIMULATORS)
def test_shapes_dtypes_and_every_mode(simulate):
    obs_dim, state_dim, n_modes = SIMULATORS[simulate]
    sim = simulate(random_state=0)
    n_steps = sim.modes.size
    assert isinstance(sim, Simulation)
    assert sim.observations.shape == (n_steps, obs_dim) and sim.observations.dtype == np.float64
    assert sim.states.shape == (n_steps, state_dim) and sim.states.dtype == np.float64
    assert sim.modes.dtype == np.int64
    assert len(sim.mode_names) == n_modes
    np.testing.assert_array_equal(np.unique(sim.modes), np.arange(n_modes))
    assert np.isfinite(sim.observations).all()


@pytest.mark.parametrize("simulate", SIMULATORS)
def test_several_sequences(simulate):
    sim = simulate(100, random_state=0, n_sequences=3)
    assert len(sim.observations) == len(sim.states) == len(sim.modes) == 3
    assert all(modes.shape == (100,) for modes in sim.modes)
    assert not np.array_equal(sim.observations[0], sim.observations[1])


@pytest.mark.parametrize("simulate", SIMULATORS)
def test_bad_lengths_are_refused(simulate):
    with pytest.raises(ValueError, match="n_steps must be a positive integer"):
        simulate(0)
    with pytest.raises(ValueError, match="n_sequences must be a positive integer"):
        simulate(10, n_sequences=0)


def test_thermostat_switches_near_its_set_points():
    sim = thermostat(random_state=1)
    x, z = sim.states[:, 0], sim.modes
    assert x.min() > 18.0 - 3 and x.max() < 22.0 + 3
    heating_off = np.flatnonzero((z[:-1] == 0) & (z[1:] == 1))
    heating_on = np.flatnonzero((z[:-1] == 1) & (z[1:] == 0))
    assert abs(x[heating_off].mean() - 22.0) < 1.0
    assert abs(x[heating_on].mean() - 18.0) < 1.0
    assert 2000 / 100 < heating_off.size < 2000 / 50  # a cycle takes 50-100 steps


def test_thermostat_parameters_are_a_recurrent_switching_model():
    sim = thermostat(10, random_state=0, low=17.0, high=23.0, sharpness=0.5)
    weights, biases = sim.parameters["recurrence_weights"], sim.parameters["recurrence_biases"]
    for x in (16.0, 20.0, 23.5):
        logits = weights @ [x] + biases
        probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        assert probabilities[0, 1] == pytest.approx(1 / (1 + np.exp(-(x - 23.0) / 0.5)))
        assert probabilities[1, 0] == pytest.approx(1 / (1 + np.exp(-(17.0 - x) / 0.5)))
    with pytest.raises(ValueError, match="cool_target < low < high"):
        thermostat(10, low=22.0, high=18.0)


def test_bouncing_ball_stays_above_ground_and_bounces_there():
    sim = bouncing_ball(random_state=2)
    height, velocity = sim.states.T
    impacts = np.flatnonzero(sim.modes == 1)
    assert (height >= 0).all()
    assert sim.observations.min() > -5 * sim.parameters["observation_sd"]
    assert impacts.size > 10 and impacts[0] > 0
    assert height[impacts].max() < 0.1
    assert (velocity[impacts - 1] < 0).all() and (velocity[impacts] > 0).all()
    flight = np.flatnonzero(sim.modes[1:] == 0) + 1
    np.testing.assert_allclose(np.diff(velocity)[flight - 1], -9.81 * 0.01)


def test_nascar_laps_the_oval_in_order():
    sim = nascar(5000, random_state=3)
    x, y = sim.states.T
    half_length, radius = sim.parameters["half_length"], sim.parameters["radius"]
    off_line = np.where(
        np.abs(x) <= half_length,
        np.abs(np.abs(y) - radius),
        np.abs(np.hypot(np.abs(x) - half_length, y) - radius),
    )
    assert off_line.max() < 0.2
    changes = np.flatnonzero(np.diff(sim.modes)) + 1
    np.testing.assert_array_equal(sim.modes[changes], (sim.modes[changes - 1] + 1) % 4)
    assert 5000 / 200 < changes.size / 4 < 5000 / 100  # laps of 100-200 steps


def test_spirals_switch_at_the_transition_matrix_rates():
    sim = switching_spirals(20_000, random_state=4, n_modes=3, stickiness=0.95)
    counts = np.zeros((3, 3))
    np.add.at(counts, (sim.modes[:-1], sim.modes[1:]), 1)
    np.testing.assert_allclose(
        counts / counts.sum(axis=1, keepdims=True), sim.parameters["transition_matrix"], atol=0.01
    )
    A, b = sim.parameters["dynamics_matrices"], sim.parameters["dynamics_offsets"]
    centres = sim.parameters["centres"]
    np.testing.assert_allclose(np.einsum("kij,kj->ki", A, centres) + b, centres)  # each centre is a fixed point


def test_oscillators_follow_their_cubic_flows():
    sim = switching_oscillators(4000, random_state=5, mu=1.5, damping=0.3, process_sd=0.02)
    x, z, dt = sim.states, sim.modes, sim.parameters["dt"]
    p, v = x[:-1].T
    van_der_pol, duffing = 1.5 * (1 - p * p) * v - p, -0.3 * v + p - p**3
    flow = np.stack([v, np.where(z[1:] == 0, van_der_pol, duffing)], axis=1)
    residuals = x[1:] - x[:-1] - dt * flow  # the process noise alone
    np.testing.assert_allclose(residuals.std(axis=0), 0.02, rtol=0.05)
    assert abs(residuals.mean()) < 0.002
    switches = np.count_nonzero(np.diff(z))
    assert 4000 * 0.005 / 2 < switches < 4000 * 0.005 * 2
    with pytest.raises(ValueError, match="stickiness"):
        switching_oscillators(10, stickiness=1.5)


def test_an_oscillator_row_is_substeps_euler_steps():
    """Sampling every 10th Euler step of 0.01 (no noise, one mode) is the run with substeps=10."""
    still = {"dt": 0.01, "process_sd": 0.0, "stickiness": 1.0}
    fine, coarse = switching_oscillators(500, **still), switching_oscillators(50, substeps=10, **still)
    np.testing.assert_array_equal(coarse.states, fine.states[9::10])
    assert coarse.parameters["substeps"] == 10
    with pytest.raises(ValueError, match="substeps must be a positive integer"):
        switching_oscillators(10, substeps=0)
