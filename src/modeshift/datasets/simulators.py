"""Seeded simulations of hybrid systems with known modes, for benchmarking mode recovery.

A hybrid system has a continuous latent state x_t whose dynamics switch between discrete
modes z_t. Every simulator here draws, for t >= 1,

    z_t ~ p(z_t | z_{t-1}, x_{t-1}),    x_t ~ p(x_t | x_{t-1}, z_t),    y_t ~ p(y_t | x_t),

from a start (z_0, x_0) (random, but for the oscillators), and returns a :class:`Simulation`
holding the noisy ``observations`` y, the latent ``states`` x, the true ``modes`` z and the
true ``parameters``. Where a mode's dynamics are affine, x_t = A_k x_{t-1} + b_k + noise,
``parameters`` holds the A_k and b_k.

=====================  =======================================  ====================================
simulator              modes                                    switching
=====================  =======================================  ====================================
thermostat             heating, cooling                         stochastic, near the set points
bouncing_ball          flight, impact                           the ball reaches the ground
nascar                 two straights and two turns of an oval   the car reaches the end of a section
switching_spirals      one spiral per mode                      a Markov chain, independent of x
switching_oscillators  Van der Pol, double-well Duffing         a Markov chain, independent of x
=====================  =======================================  ====================================

>>> from modeshift.datasets.simulators import thermostat
>>> sim = thermostat(500, random_state=0)
>>> sim.observations.shape, sim.states.shape, sim.modes.shape
((500, 1), (500, 1), (500,))
>>> sim.mode_names
('heating', 'cooling')

With ``n_sequences`` the fields are lists of that many independent runs of one system.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Simulation", "bouncing_ball", "nascar", "switching_oscillators", "switching_spirals", "thermostat"]

RandomState = int | np.random.Generator | None
Run = tuple[np.ndarray, ...]  # observations, states, modes (and times, in continuous time)


@dataclass(frozen=True, eq=False)
class Simulation:
    """A simulated run (or list of runs) of a hybrid system with its ground truth.

    Attributes
    ----------
    observations : (n_steps, obs_dim) float array, or a list of them
    states : (n_steps, state_dim) float array, or a list of them
        The continuous latent state.
    modes : (n_steps,) int array, or a list of them
        The true mode at each step, indexing ``mode_names``.
    parameters : dict
        The true values used to simulate (thresholds, dynamics matrices, noise levels...).
    mode_names : tuple of str
    times : (n_steps,) float array, a list of them, or None
        The observation times of a simulation in continuous time (None: steps 0, 1, ...).
    """

    observations: np.ndarray | list[np.ndarray]
    states: np.ndarray | list[np.ndarray]
    modes: np.ndarray | list[np.ndarray]
    parameters: dict[str, Any]
    mode_names: tuple[str, ...]
    times: np.ndarray | list[np.ndarray] | None = None


def thermostat(
    n_steps: int = 2000,
    random_state: RandomState = None,
    n_sequences: int | None = None,
    *,
    low: float = 18.0,
    high: float = 22.0,
    heat_target: float = 30.0,
    cool_target: float = 10.0,
    rate: float = 0.012,
    sharpness: float = 0.2,
    process_sd: float = 0.1,
    observation_sd: float = 0.2,
    times: str | Any | None = None,
) -> Simulation:
    """Room temperature under a thermostat with hysteresis, observed with noise.

    In mode 0 ("heating") the temperature relaxes towards ``heat_target``, in mode 1
    ("cooling") towards ``cool_target``: x_t = x_{t-1} + rate (target - x_{t-1}) + noise.
    Heating switches off with probability sigmoid((x_{t-1} - high) / sharpness) per step,
    cooling switches off with probability sigmoid((low - x_{t-1}) / sharpness), so the
    switching is exactly a recurrent SLDS, p(z_t | z_{t-1}, x_{t-1}) =
    softmax(R x_{t-1} + r_{z_{t-1}}), with R = ``recurrence_weights`` and r =
    ``recurrence_biases`` in ``parameters``. With the defaults one heating-cooling cycle
    takes about 60 steps. States and observations are (n_steps, 1), in degrees.

    ``times`` simulates the same system in continuous time, seen at those times: an array of
    ``n_steps`` increasing times, or ``"exponential"`` for gaps drawn from an exponential law
    of mean 1 (a Poisson stream of observations). The flow is then the Ornstein-Uhlenbeck
    process dx = r (target - x) dt + s dW and the switches a jump process of hazard
    log(1 + exp(overshoot / sharpness)) per unit time, with r and s such that one time unit
    reproduces ``rate`` and ``process_sd``; the path is simulated exactly on a grid of
    ``_FINE_STEP`` time units (a switch can fall anywhere inside a gap), and ``modes`` are the
    modes at the observation times. ``times=np.arange(n_steps)`` is its regular sampling.

    >>> sim = thermostat(1000, random_state=1)
    >>> bool(17 < sim.states.min() and sim.states.max() < 23)
    True
    >>> irregular = thermostat(200, random_state=1, times="exponential")
    >>> irregular.times.shape, bool((np.diff(irregular.times) > 0).all())
    ((200,), True)
    """
    n_steps = _positive_int("n_steps", n_steps)
    _require(cool_target < low < high < heat_target, "need cool_target < low < high < heat_target")
    _require(0 < rate <= 1 and sharpness > 0, "need 0 < rate <= 1 and sharpness > 0")
    _require(process_sd >= 0 and observation_sd >= 0, "noise standard deviations must be non-negative")
    rng = np.random.default_rng(random_state)
    targets = np.array([heat_target, cool_target])
    parameters = {
        "low": low,
        "high": high,
        "heat_target": heat_target,
        "cool_target": cool_target,
        "rate": rate,
        "sharpness": sharpness,
        "process_sd": process_sd,
        "observation_sd": observation_sd,
        "dynamics_matrices": np.full((2, 1, 1), 1.0 - rate),
        "dynamics_offsets": rate * targets[:, None],
        "recurrence_weights": np.array([[0.0], [1.0 / sharpness]]),
        "recurrence_biases": np.array([[0.0, -high], [0.0, -low]]) / sharpness,
    }
    # Each mode ends past its own set point: heating above `high`, cooling below `low`.
    set_points, directions = np.array([high, low]), np.array([1.0, -1.0])
    if times is not None:
        return _continuous_thermostat(n_steps, rng, n_sequences, times, parameters, targets, set_points, directions)

    def run() -> Run:
        x, z = np.empty(n_steps), np.empty(n_steps, dtype=np.int64)
        z[0], x[0] = rng.integers(2), rng.uniform(low, high)
        noise, uniforms = rng.normal(0.0, process_sd, n_steps), rng.random(n_steps)
        for t in range(1, n_steps):
            overshoot = directions[z[t - 1]] * (x[t - 1] - set_points[z[t - 1]])
            switch = uniforms[t] < 1.0 / (1.0 + np.exp(-overshoot / sharpness))
            z[t] = 1 - z[t - 1] if switch else z[t - 1]
            x[t] = x[t - 1] + rate * (targets[z[t]] - x[t - 1]) + noise[t]
        y = x + rng.normal(0.0, observation_sd, n_steps)
        return y[:, None], x[:, None], z

    return _simulate(run, n_sequences, parameters, ("heating", "cooling"))


_FINE_STEP = 0.05  # the time grid on which the continuous-time thermostat is simulated


def _continuous_thermostat(
    n_steps: int,
    rng: np.random.Generator,
    n_sequences: int | None,
    times: str | Any,
    parameters: dict[str, Any],
    targets: np.ndarray,
    set_points: np.ndarray,
    directions: np.ndarray,
) -> Simulation:
    """The thermostat in continuous time, observed at ``times`` (see :func:`thermostat`)."""
    if isinstance(times, str):
        _require(times == "exponential", f"times must be 'exponential' or an array of times, got {times!r}")
    else:
        stamps = np.asarray(times, dtype=float)
        _require(stamps.shape == (n_steps,), f"times must hold n_steps={n_steps} times, got shape {stamps.shape}")
        _require(bool(np.isfinite(stamps).all() and (np.diff(stamps) > 0).all()), "times must increase strictly")
    rate = -np.log1p(-min(parameters["rate"], 1 - 1e-12))  # r with exp(-r) = 1 - rate
    decay = np.exp(-rate * _FINE_STEP)
    diffusion = parameters["process_sd"] * np.sqrt(2 * rate / -np.expm1(-2 * rate))  # s: one unit gives process_sd
    step_sd = diffusion * np.sqrt(-np.expm1(-2 * rate * _FINE_STEP) / (2 * rate))
    sharpness, low, high = parameters["sharpness"], parameters["low"], parameters["high"]

    def run() -> Run:
        stamps = np.cumsum(rng.exponential(1.0, n_steps)) if isinstance(times, str) else np.asarray(times, float)
        grid = np.rint((stamps - stamps[0]) / _FINE_STEP).astype(np.int64)
        n_fine = int(grid[-1]) + 1
        x, z = np.empty(n_fine), np.empty(n_fine, dtype=np.int64)
        z[0], x[0] = rng.integers(2), rng.uniform(low, high)
        noise, uniforms = rng.normal(0.0, step_sd, n_fine), rng.random(n_fine)
        for t in range(1, n_fine):
            overshoot = directions[z[t - 1]] * (x[t - 1] - set_points[z[t - 1]])
            hazard = np.logaddexp(0.0, overshoot / sharpness)
            z[t] = 1 - z[t - 1] if uniforms[t] < -np.expm1(-hazard * _FINE_STEP) else z[t - 1]
            x[t] = targets[z[t]] + (x[t - 1] - targets[z[t]]) * decay + noise[t]
        y = x[grid] + rng.normal(0.0, parameters["observation_sd"], n_steps)
        return y[:, None], x[grid][:, None], z[grid], stamps

    return _simulate(run, n_sequences, parameters, ("heating", "cooling"))


def bouncing_ball(
    n_steps: int = 2000,
    random_state: RandomState = None,
    n_sequences: int | None = None,
    *,
    gravity: float = 9.81,
    dt: float = 0.01,
    restitution: tuple[float, float] = (0.7, 0.9),
    launch_height: tuple[float, float] = (0.5, 2.0),
    min_peak: float = 0.05,
    observation_sd: float = 0.02,
) -> Simulation:
    """A ball bouncing on the ground, its height observed with noise.

    The state is (height, velocity) in metres and metres per second. In mode 0 ("flight")
    the ball falls freely, discretised exactly: h += v dt - g dt^2 / 2, v -= g dt (the
    affine ``flight_matrix`` and ``flight_offset`` in ``parameters``). A step in which the
    ball would go below the ground is mode 1 ("impact"): the ball lands within the step,
    its velocity is reversed and scaled by a restitution coefficient drawn uniformly from
    ``restitution``, and it flies up for the rest of the step, so the height stays >= 0.
    So that the series does not die out, a bounce that would peak below ``min_peak`` is
    replaced by a relaunch to a peak height drawn uniformly from ``launch_height`` (also the
    range of the height from which the ball is first dropped, at rest).
    Observations are (n_steps, 1) heights.

    >>> sim = bouncing_ball(500, random_state=0)
    >>> bool((sim.states[:, 0] >= 0).all())
    True
    """
    n_steps = _positive_int("n_steps", n_steps)
    _require(gravity > 0 and dt > 0, "gravity and dt must be positive")
    _require(
        0 < restitution[0] <= restitution[1] <= 1, f"need 0 < restitution[0] <= restitution[1] <= 1, got {restitution}"
    )
    _require(
        0 < launch_height[0] <= launch_height[1], f"need 0 < launch_height[0] <= launch_height[1], got {launch_height}"
    )
    _require(min_peak >= 0 and observation_sd >= 0, "min_peak and observation_sd must be non-negative")
    rng = np.random.default_rng(random_state)
    parameters = {
        "gravity": gravity,
        "dt": dt,
        "restitution": tuple(restitution),
        "launch_height": tuple(launch_height),
        "min_peak": min_peak,
        "observation_sd": observation_sd,
        "flight_matrix": np.array([[1.0, dt], [0.0, 1.0]]),
        "flight_offset": np.array([-gravity * dt**2 / 2, -gravity * dt]),
    }

    def run() -> Run:
        states, modes = np.empty((n_steps, 2)), np.zeros(n_steps, dtype=np.int64)
        h, v = rng.uniform(*launch_height), 0.0
        states[0] = h, v
        for t in range(1, n_steps):
            if h + v * dt - gravity * dt**2 / 2 >= 0:
                h, v = h + v * dt - gravity * dt**2 / 2, v - gravity * dt
            else:
                modes[t] = 1
                landing = (v + np.sqrt(v * v + 2 * gravity * h)) / gravity  # time into the step
                v_up = -rng.uniform(*restitution) * (v - gravity * landing)
                if v_up**2 / (2 * gravity) < min_peak:
                    v_up = np.sqrt(2 * gravity * rng.uniform(*launch_height))
                rest = dt - landing
                h, v = max(v_up * rest - gravity * rest**2 / 2, 0.0), v_up - gravity * rest
            states[t] = h, v
        heights = states[:, :1] + rng.normal(0.0, observation_sd, (n_steps, 1))
        return heights, states, modes

    return _simulate(run, n_sequences, parameters, ("flight", "impact"))


def nascar(
    n_steps: int = 2000,
    random_state: RandomState = None,
    n_sequences: int | None = None,
    *,
    obs_dim: int = 10,
    half_length: float = 1.0,
    radius: float = 1.0,
    speed: float = 0.06,
    lane_keeping: float = 0.1,
    process_sd: float = 0.005,
    observation_sd: float = 0.1,
) -> Simulation:
    """A car driving clockwise round an oval track (the "NASCAR" data of Linderman et al., 2017).

    The track has straights along y = +-``radius`` for |x| <= ``half_length`` and half-circle
    turns about (+-``half_length``, 0). The modes, visited in the cyclic order 0 -> 1 -> 2 ->
    3 -> 0, are 0 "upper straight" (moving right), 1 "right turn", 2 "lower straight"
    (moving left) and 3 "left turn". The dynamics of each mode are affine, x_t = A_k x_{t-1}
    + b_k + noise: on a straight, a translation by ``speed`` that also pulls the car back
    towards the centre line at rate ``lane_keeping`` (so noise cannot accumulate over laps);
    in a turn, a clockwise rotation about the turn's centre at the same speed. The mode
    changes by deterministic guards on the previous position: a straight ends once the car
    is past its end (|x| > half_length), a turn once the car is back between the ends on the
    other side. With the defaults a lap takes about 170 steps. The car starts on the upper
    straight. Observations are y = C x + d + noise, with C (``obs_dim`` x 2) and d drawn from
    the seed.

    >>> sim = nascar(1000, random_state=0)
    >>> sim.observations.shape, sim.states.shape
    ((1000, 10), (1000, 2))
    """
    n_steps = _positive_int("n_steps", n_steps)
    obs_dim = _positive_int("obs_dim", obs_dim)
    _require(half_length > 0 and radius > 0, "half_length and radius must be positive")
    _require(0 < speed < half_length, "need 0 < speed < half_length")
    _require(0 <= lane_keeping < 1, "need 0 <= lane_keeping < 1")
    _require(process_sd >= 0 and observation_sd >= 0, "noise standard deviations must be non-negative")
    rng = np.random.default_rng(random_state)
    angle = speed / radius
    clockwise = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
    straight = np.diag([1.0, 1.0 - lane_keeping])
    centres = np.array([[half_length, 0.0], [-half_length, 0.0]])
    matrices = np.stack([straight, clockwise, straight, clockwise])
    offsets = np.array(
        [
            [speed, lane_keeping * radius],
            centres[0] - clockwise @ centres[0],
            [-speed, -lane_keeping * radius],
            centres[1] - clockwise @ centres[1],
        ]
    )
    observation_matrix = rng.normal(size=(obs_dim, 2))
    observation_offset = rng.normal(size=obs_dim)
    parameters = {
        "half_length": half_length,
        "radius": radius,
        "speed": speed,
        "lane_keeping": lane_keeping,
        "process_sd": process_sd,
        "observation_sd": observation_sd,
        "turn_centres": centres,
        "dynamics_matrices": matrices,
        "dynamics_offsets": offsets,
        "observation_matrix": observation_matrix,
        "observation_offset": observation_offset,
    }

    def section_ended(mode: int, x: np.ndarray) -> bool:
        if mode == 0:
            return x[0] > half_length
        if mode == 1:
            return x[0] <= half_length and x[1] < 0
        if mode == 2:
            return x[0] < -half_length
        return x[0] >= -half_length and x[1] > 0

    def run() -> Run:
        states, modes = np.empty((n_steps, 2)), np.zeros(n_steps, dtype=np.int64)
        states[0] = rng.uniform(-half_length, half_length), radius
        noise = rng.normal(0.0, process_sd, (n_steps, 2))
        for t in range(1, n_steps):
            mode = (modes[t - 1] + 1) % 4 if section_ended(modes[t - 1], states[t - 1]) else modes[t - 1]
            modes[t] = mode
            states[t] = matrices[mode] @ states[t - 1] + offsets[mode] + noise[t]
        observations = states @ observation_matrix.T + observation_offset
        return observations + rng.normal(0.0, observation_sd, (n_steps, obs_dim)), states, modes

    return _simulate(run, n_sequences, parameters, ("upper straight", "right turn", "lower straight", "left turn"))


def switching_spirals(
    n_steps: int = 1000,
    random_state: RandomState = None,
    n_sequences: int | None = None,
    *,
    n_modes: int = 2,
    obs_dim: int = 2,
    stickiness: float = 0.98,
    decay: float = 0.98,
    centre_radius: float = 3.0,
    process_sd: float = 0.05,
    observation_sd: float = 0.1,
) -> Simulation:
    """A 2-D state spiralling in towards one of ``n_modes`` centres, switching by a Markov chain.

    Mode k is a slowly decaying rotation about its centre c_k, x_t = A_k (x_{t-1} - c_k) +
    c_k + noise with A_k = ``decay`` x (rotation by an angle drawn from the seed, 0.05-0.3
    radians per step, either way round). The centres lie evenly on a circle of radius
    ``centre_radius``. Modes switch independently of the state, with ``stickiness`` on the
    diagonal of the transition matrix and the rest spread evenly; the first mode is uniform.
    Observations are y = C x + noise with C (``obs_dim`` x 2) drawn from the seed.

    >>> sim = switching_spirals(200, random_state=0, n_modes=3)
    >>> sim.parameters["transition_matrix"].shape
    (3, 3)
    """
    n_steps = _positive_int("n_steps", n_steps)
    obs_dim = _positive_int("obs_dim", obs_dim)
    _require(n_modes >= 2, f"n_modes must be at least 2, got {n_modes!r}")
    _require(0 <= stickiness <= 1 and 0 < decay <= 1, "need 0 <= stickiness <= 1 and 0 < decay <= 1")
    _require(process_sd >= 0 and observation_sd >= 0, "noise standard deviations must be non-negative")
    rng = np.random.default_rng(random_state)
    angles = rng.uniform(0.05, 0.3, n_modes) * rng.choice([-1.0, 1.0], n_modes)
    cos, sin = np.cos(angles), np.sin(angles)
    matrices = decay * np.stack([np.stack([cos, -sin], axis=-1), np.stack([sin, cos], axis=-1)], axis=1)
    around = 2 * np.pi * np.arange(n_modes) / n_modes
    centres = centre_radius * np.stack([np.cos(around), np.sin(around)], axis=1)
    offsets = centres - np.einsum("kij,kj->ki", matrices, centres)
    transition_matrix = np.full((n_modes, n_modes), (1.0 - stickiness) / (n_modes - 1))
    np.fill_diagonal(transition_matrix, stickiness)
    observation_matrix = rng.normal(size=(obs_dim, 2))
    parameters = {
        "n_modes": n_modes,
        "stickiness": stickiness,
        "decay": decay,
        "process_sd": process_sd,
        "observation_sd": observation_sd,
        "initial_probabilities": np.full(n_modes, 1.0 / n_modes),
        "transition_matrix": transition_matrix,
        "rotation_angles": angles,
        "centres": centres,
        "dynamics_matrices": matrices,
        "dynamics_offsets": offsets,
        "observation_matrix": observation_matrix,
    }
    cumulative = np.cumsum(transition_matrix, axis=1)
    cumulative[:, -1] = 1.0  # so rounding can never push a uniform draw past the last mode

    def run() -> Run:
        states, modes = np.empty((n_steps, 2)), np.empty(n_steps, dtype=np.int64)
        modes[0] = rng.integers(n_modes)
        states[0] = centres[modes[0]] + rng.normal(size=2)
        noise, uniforms = rng.normal(0.0, process_sd, (n_steps, 2)), rng.random(n_steps)
        for t in range(1, n_steps):
            modes[t] = np.searchsorted(cumulative[modes[t - 1]], uniforms[t], side="right")
            states[t] = matrices[modes[t]] @ states[t - 1] + offsets[modes[t]] + noise[t]
        observations = states @ observation_matrix.T + rng.normal(0.0, observation_sd, (n_steps, obs_dim))
        return observations, states, modes

    return _simulate(run, n_sequences, parameters, tuple(f"spiral {k}" for k in range(n_modes)))


def switching_oscillators(
    n_steps: int = 3000,
    random_state: RandomState = None,
    n_sequences: int | None = None,
    *,
    dt: float = 0.05,
    stickiness: float = 0.995,
    mu: float = 2.0,
    damping: float = 0.2,
    process_sd: float = 0.01,
    substeps: int = 1,
) -> Simulation:
    """A Van der Pol oscillator that switches to a double-well Duffing oscillator and back: two
    nonlinear flows, which no linear (affine) dynamics per mode can follow.

    The state is (position p, velocity v); each step is an Euler step of ``dt`` plus noise,
    x_t = x_{t-1} + dt (v, a) + noise, with the acceleration of mode 0 ("van der pol")
    a = mu (1 - p^2) v - p (a limit cycle) and of mode 1 ("duffing") a = -damping v + p - p^3
    (a particle settling into one of two wells, at p = +-1): both are cubic in the state. A row
    is ``substeps`` Euler steps in one mode, then the noise: a sampling interval of
    ``substeps * dt`` (single Euler steps of dt >= 0.07 can diverge after a switch to Duffing). The
    mode flips with probability 1 - ``stickiness`` per row, independently of the state (a
    dwell of 200 rows on average with the default). Every run starts at (1, 0) in mode 0, and
    the first row is the state after one row's steps. The state is observed without noise:
    ``observations`` equal ``states``, (n_steps, 2).

    >>> sim = switching_oscillators(1000, random_state=0)
    >>> sim.observations.shape, sim.mode_names
    ((1000, 2), ('van der pol', 'duffing'))
    >>> bool(np.array_equal(sim.observations, sim.states))
    True
    """
    n_steps = _positive_int("n_steps", n_steps)
    _require(dt > 0 and mu >= 0 and damping >= 0, "need dt > 0, mu >= 0 and damping >= 0")
    _require(0 <= stickiness <= 1, f"need 0 <= stickiness <= 1, got {stickiness!r}")
    _require(process_sd >= 0, "process_sd must be non-negative")
    substeps = _positive_int("substeps", substeps)
    rng = np.random.default_rng(random_state)
    parameters = {
        "dt": dt,
        "substeps": substeps,
        "stickiness": stickiness,
        "mu": mu,
        "damping": damping,
        "process_sd": process_sd,
        "transition_matrix": np.array([[stickiness, 1 - stickiness], [1 - stickiness, stickiness]]),
    }

    def acceleration(mode: int, p: float, v: float) -> float:
        return mu * (1 - p * p) * v - p if mode == 0 else -damping * v + p - p**3

    def flow(mode: int, state: np.ndarray) -> np.ndarray:
        for _ in range(substeps):
            p, v = state
            state = state + dt * np.array([v, acceleration(mode, p, v)])
        return state

    def run() -> Run:
        states, modes = np.empty((n_steps, 2)), np.empty(n_steps, dtype=np.int64)
        state, mode = np.array([1.0, 0.0]), 0
        for t in range(n_steps):
            mode = 1 - mode if rng.random() > stickiness else mode
            state = flow(mode, state) + process_sd * rng.standard_normal(2)
            states[t], modes[t] = state, mode
        return states.copy(), states, modes

    return _simulate(run, n_sequences, parameters, ("van der pol", "duffing"))


def _simulate(
    run: Callable[[], Run], n_sequences: int | None, parameters: dict[str, Any], mode_names: tuple[str, ...]
) -> Simulation:
    """One run, or a list of ``n_sequences`` runs, packed with the ground truth (a run in continuous
    time also gives its observation times)."""
    if n_sequences is None:
        observations, states, modes, *times = run()
        return Simulation(observations, states, modes, parameters, mode_names, *times)
    runs = [run() for _ in range(_positive_int("n_sequences", n_sequences))]
    observations, states, modes, *times = (list(field) for field in zip(*runs))
    return Simulation(observations, states, modes, parameters, mode_names, *times)


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)
