"""Benchmark modeshift on hybrid systems and chaotic flows (issue 18).

Five parts, in one run (``--parts modes`` runs the first two, ``--parts forecasts``,
``--parts nonlinear`` and ``--parts ball`` one each; ball, the restitution from noisy heights,
is :func:`noisy_ball_part` and :func:`relaunching_ball_part`, some minutes each):

- modes: fit time and mode accuracy (``modeshift.metrics.mode_accuracy``: the fitted modes
  matched to the true ones by the Hungarian algorithm, from the first step with a full
  history on) on four simulators of ``modeshift.datasets.simulators``, ``--seeds`` seeds
  each (the simulator and the fit both seeded by the seed): ``thermostat`` (2,000 steps,
  K = 2, 1-D), ``bouncing_ball`` (1,000 steps, K = 2, height only), ``nascar`` (1,000
  steps, K = 4, 10-D) and ``switching_spirals`` (1,000 steps, K = 2, 2-D). Models: the
  nonlinear ARHMM (``features`` a polynomial map of degree 3 and ``recurrent=True`` for
  at most 3 lagged values; degree 2 and no recurrence for NASCAR's 10, where 65 guard inputs
  made a fit take 150 s), the linear ARHMM, and the recurrent SLDS (``SwitchingLDS(recurrent=True)``
  with the true state's dimension, above the observations' on the bouncing ball). ARHMMs
  regress on ``order`` = 2 lags for the 1-D series (a position alone has no velocity), 1
  otherwise; the linear ARHMM is also fit with ``resets="destination"`` (a reset regression
  at each switch), and, on the bouncing ball, the SLDS (not recurrent) with
  ``resets="destination"``, its impact a reset of the latent (h, v). A row "constant" scores
  the most frequent true mode at every step, no model: on the bouncing ball, whose impact mode
  lasts one step (1.5-2 % of the steps), it scores 0.98, so the accuracy target of issue 18
  (0.95) says nothing there; the impacts found are what a model adds: on the bouncing ball the
  precision and recall of the impact mode at the exact step (:func:`rare_mode_found`; the
  precision is blank for a model that predicts no impact). Below the table, the number of
  modes that SLDS with resets chooses on the bouncing ball per seed with ``n_states="auto"``
  (:func:`ball_modes_chosen`; by BIC over one fit per K, and by pruning from 3 modes).
- restitution: the bouncing ball with its state observed (0.1 mm noise), a fixed restitution
  0.8 and no relaunches, 10 sequences of 300 steps: the restitution read off the reset of an
  ARHMM with resets (:func:`restitution_part`), and its mode accuracy.
- forecasts: the chaotic flows of ``../shared/data/dysts_{henon,lorenz,rossler}.csv``
  (3,000 steps each): fit on the first 2,800, forecast the last 200 from the end of the
  training data (the predictive mean). Scores: sMAPE = 100 / (H D) sum |y - f| 2 / (|y| + |f|)
  and the valid prediction time, the steps before the error normalised by the training
  data's standard deviation, ||(y - f) / sd|| / sqrt(D), first exceeds 0.4 (Pathak et al.,
  2018). Models: the nonlinear ARHMM (K = 2, polynomial features), the linear ARHMM (K = 2,
  ``order`` = 2), the recurrent SLDS (K = 2, state_dim = D; its forecast is a Monte Carlo estimate
  from 2,000 paths, the predictive law having no closed form) and a plain linear autoregression (a
  one-mode ARHMM with ``order`` = 2: a VAR(2) by least squares). The nonlinear model's order
  (1, 2), polynomial degree (2 .. 5, at most ``MAX_FEATURES`` = 100 features) and ridge (1e-3,
  1e-2, on the standardised features) are chosen on a validation split of the training part
  alone: each candidate is fit on its first 2,600 steps and forecasts the next 200 (the last
  200 of the training part); the smallest sMAPE wins and is refit on all 2,800. The test part
  is never seen before the final forecast. "EM iterations" marks a fit stopped by its cap
  ("(cap)"): the recurrent SLDS's on Lorenz, whose ELBO still creeps by 0.005 per iteration at
  1,000 (tol is 1e-3), though its forecast scores the same from iteration 25 on. (A fixed
  choice, order 2, degree 3, ridge 1e-2, lost to the linear AR on the Roessler flow: its
  one-step map over dt = 0.2, where z grows like exp((x - c) dt), needs degree 5.)

- nonlinear: held-out forecasts of a system where linear flows fail,
  ``simulators.switching_oscillators`` (a Van der Pol oscillator switching to a double-well
  Duffing one and back, both cubic flows, 3,000 steps, ``--seeds`` seeds), sampled two ways
  (``OSCILLATORS``): every dt = 0.05 (an Euler step a row, the default), and every 0.1 ("coarse
  sampling": 10 Euler steps of 0.01 a row, as single Euler steps of 0.1 diverge; stickiness 0.99
  keeps the mean dwell at 10 time units). All models are fit on the first 2,000 steps; from an
  origin every 10 steps of 2,050 .. 2,940, each forecasts 1 and 20 steps ahead from its filter
  state after the data up to the origin (``filter_forecast``; for an ARHMM the numbers of
  ``forecast`` on those data), and the RMS error of the predictive mean over the 90 origins is
  reported. Models (K = 2, fits seeded 0): the nonlinear ARHMM (``features="polynomial"``: cubic
  features of the last observation), the linear ARHMM (``order`` 1 and 2) and the SwitchingLDS
  (linear latent flows, its Kim filter) with the true state's dimension, 2, and with 4; and the
  latent nonlinear model, ``NonlinearSwitchingLDS`` (cubic flows, Laplace EM, default ``n_iter``
  and ``tol``) with the true state's dimension, 2, which has no streaming filter: it forecasts
  from its posterior given the ``WINDOW`` = 100 steps before each origin (the last step of a
  smoothed posterior is the filtered one). Issue 18 asks for errors at least 2x lower than the
  linear ARHMM's and the SwitchingLDS's; the ratio columns are each model's error over the
  nonlinear ARHMM's, and the summary gives each linear model's smallest ratio to each nonlinear
  model. The "oracle" row is the 1-step error of the true flow in the true mode: the process
  noise (sd 0.01 per coordinate), below which no model's 1-step error can go (it knows the mode,
  even at a switch). Why one step at dt = 0.05 cannot show 2x: over 0.05 the flow is nearly
  linear, and a linear model with a memory (order 2, or 2 more latent dimensions) extrapolates
  it, x_t ~ 2 x_{t-1} - x_{t-2}, to an error of order dt^2: its 1-step error (0.014-0.023) is
  under twice the noise floor that the nonlinear models reach (ratios down to 1.4); the 20-step
  errors are 2x lower on every seed. What coarse sampling shows: over 0.1 the memory models'
  1-step errors grow (0.035-0.077) and the nonlinear models', near the floor, are 2.6x lower or more
  on 3 seeds of 5; but a switch now costs much: at an origin whose row is a new mode's first,
  which no filter can foresee, the 1-step error is 0.6 (seed 2) or 0.4 (seed 3), nonlinear or linear,
  and that one origin in 90 dominates the RMS (seed 2: the nonlinear ARHMM's 0.047 is 0.015
  without it, the memory models' 0.052-0.060); the ratio falls to 1.5 (seed 2) and 1.15 (seed 3,
  1.7 without that origin). And 20 rows now span 2 time units: the best linear model's error
  saturates near the spread of the states (0.8-1.3), and the nonlinear models' (0.49-0.66:
  switches within the horizon, the drift of the oscillation's phase) is 1.6-2.3x lower. So
  neither sampling gives issue 18's 2x at both horizons on every seed (nor did 0.08, 0.15 or 0.2
  in a scan). What does ("little noise"): dt = 0.05 with process noise of sd 0.002 instead of 0.01,
  so that the 1-step floor (the noise, which the nonlinear models reach, 0.0019-0.0026) lies well
  under a linear extrapolation's error of order dt^2: every linear model's error is then 2.2x the
  nonlinear ARHMM's or more at both horizons on each of seeds 0-4 (3.1-38x at 1 step, 2.2-12.6x
  at 20; the NonlinearSwitchingLDS's errors are the nonlinear ARHMM's; tests/test_nonlinear_arhmm.py
  checks it with the models' default settings). Then the same oscillators seen through their
  position only (2,000 steps): the mode accuracy and fit time of the nonlinear ARHMM on 2 lags and
  of the NonlinearSwitchingLDS with a 2-D state.

Run ``python benchmarks/hybrid.py`` (about a few minutes on 2 cores). The report is
printed and written to ``--output``.
"""

from __future__ import annotations

import argparse
import itertools
import time
import warnings
from math import comb
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from common import comma_list, log, publish, table

from modeshift import ARHMM, NonlinearSwitchingLDS, SwitchingLDS
from modeshift.datasets import simulators
from modeshift.features import Polynomial
from modeshift.metrics import match_modes, mode_accuracy

warnings.filterwarnings("ignore")  # convergence notes of the capped SLDS fits are not news here

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SYSTEMS = {  # name: (simulator, n_steps, K, order, dimension of the true state)
    "thermostat": (simulators.thermostat, 2000, 2, 2, 1),
    "bouncing_ball": (simulators.bouncing_ball, 1000, 2, 2, 2),
    "nascar": (simulators.nascar, 1000, 4, 1, 2),
    "switching_spirals": (simulators.switching_spirals, 1000, 2, 1, 2),
}
HORIZON, TRAIN = 200, 2800
PARTS = ("modes", "forecasts", "nonlinear", "ball")
TRAIN_OSCILLATOR, OSCILLATOR_ORIGINS, OSCILLATOR_HORIZONS = 2000, range(2050, 2950, 10), (1, 20)
OSCILLATORS = {  # system: keywords of simulators.switching_oscillators (a mean dwell of 10 time units in both)
    "dt = 0.05": {},
    "coarse sampling, 0.1": {"dt": 0.01, "substeps": 10, "stickiness": 0.99},  # 10 Euler steps a row
    "little noise, sd 0.002": {"process_sd": 0.002},  # dt = 0.05; the noise no longer masks the curvature
}
POSITION_STEPS = 2000  # of the position-only oscillators
WINDOW = 100  # steps before an origin that a model without a streaming filter infers its state from
LINEAR_MODELS = ("linear ARHMM", "linear ARHMM, order 2", "SwitchingLDS", "SwitchingLDS, state_dim 4")
ORDER = 2  # of the linear forecasting models
MAX_FEATURES = 100  # the largest polynomial basis the validation search tries
CANDIDATES = [(order, degree, ridge) for order in (1, 2) for degree in (2, 3, 4, 5) for ridge in (1e-3, 1e-2)]


def nonlinear(n_states: int, order: int, dim: int, seed: int) -> ARHMM:
    small = dim * order <= 3  # a cubic of a few lags; beyond, a quadratic without recurrence
    return ARHMM(n_states, order=order, features=Polynomial(3 if small else 2), recurrent=small, random_state=seed)


def mode_models(n_states: int, order: int, dim: int, state_dim: int, seed: int) -> dict[str, Any]:
    return {
        "nonlinear ARHMM": nonlinear(n_states, order, dim, seed),
        "linear ARHMM": ARHMM(n_states, order=order, random_state=seed),
        "linear ARHMM, resets": ARHMM(n_states, order=order, resets="destination", random_state=seed),
        "recurrent SLDS": SwitchingLDS(n_states, state_dim=state_dim, recurrent=True, random_state=seed),
    }


def latent_reset_models(name: str, n_states: int | str, state_dim: int, seed: int) -> dict[str, Any]:
    """The SLDS with resets, on the system whose switches move the state (the bouncing ball)."""
    if name != "bouncing_ball":
        return {}
    return {  # two restarts: the second at the change points of the heights (the impacts' kinks) or, if its
        # first sweep is higher, at the mode path of a beam search under that start's parameters
        "SLDS, resets": SwitchingLDS(
            n_states, state_dim=state_dim, resets="destination", n_restarts=2, random_state=seed
        )
    }


def rare_mode_found(truth: np.ndarray, path: np.ndarray, order: int) -> tuple[float, float]:
    """Precision and recall of the rarest true mode (the bouncing ball's one-step impacts) at the exact
    step, the predicted modes matched to the true ones as for the accuracy, from step ``order`` on."""
    truth, path = truth[order:], path[order:]
    rare = int(np.argmin(np.bincount(truth)))
    predicted = match_modes(truth, path)[path] == rare
    hits = int((predicted & (truth == rare)).sum())
    return (hits / predicted.sum() if predicted.any() else np.nan), hits / max(int((truth == rare).sum()), 1)


def modes_part(seeds: int) -> list[str]:
    rows = []
    for name, (simulate, n_steps, n_states, order, state_dim) in SYSTEMS.items():
        scores: dict[str, list[tuple[float, float]]] = {}
        for seed in range(seeds):
            sim = simulate(n_steps, random_state=seed)
            y, truth = sim.observations, sim.modes
            constant = np.zeros_like(truth[order:])  # matched to the most frequent true mode
            scores.setdefault("constant (no model)", []).append(
                (0.0, mode_accuracy(truth[order:], constant), np.nan, 0.0)
            )
            models = {
                **mode_models(n_states, order, y.shape[1], state_dim, seed),
                **latent_reset_models(name, n_states, state_dim, seed),
            }
            for label, model in models.items():
                try:
                    start = time.perf_counter()
                    model.fit(y)
                    elapsed = time.perf_counter() - start
                    path = model.predict(y)  # every step; an ARHMM's first `order` have no lags to explain
                    accuracy = mode_accuracy(truth[order:], path[order:])
                    found = rare_mode_found(truth, path, order)
                    scores.setdefault(label, []).append((elapsed, accuracy, *found))
                    log(f"{name} seed {seed} {label}: accuracy {accuracy:.3f}, rare mode precision, recall {found}")
                except ValueError as error:
                    scores.setdefault(label, []).append((np.nan,) * 4)
                    log(f"{name} {label}: {str(error)[:90]}")
            log(f"{name} seed {seed} done")
        for label, values in scores.items():
            times, accuracies, precisions, recalls = np.array(values).T
            if np.isnan(accuracies).all():
                rows.append([name, label, "n/a", "n/a", "n/a", "", ""])
                continue
            low, high = np.nanmin(accuracies), np.nanmax(accuracies)
            found = [
                f"{np.nanmean(v):.2f}" if name == "bouncing_ball" and not np.isnan(v).all() else ""
                for v in (precisions, recalls)
            ]
            rows.append(
                [
                    name,
                    label,
                    f"{np.nanmean(times):.2f}",
                    f"{np.nanmean(accuracies):.3f}",
                    f"{low:.3f}-{high:.3f}",
                    *found,
                ]
            )
    header = ["system", "model", "fit time (s, mean)", f"mode accuracy (mean of {seeds})", "range"]
    header += ["impact precision", "impact recall"]
    return table(header, rows)


BALL_AUTO = {"max_states": 3, "n_iter": 100}  # candidates of 1-3 modes, 100 EM iterations each (cheap)


def ball_modes_chosen(seeds: int) -> str:
    """The number of modes ``n_states="auto"`` chooses for the bouncing ball's SLDS with resets
    (:func:`latent_reset_models`' model; candidates ``BALL_AUTO``), per seed, by each ``selection``."""
    chosen: dict[str, list[int]] = {}
    for selection, seed in itertools.product(("fits", "prune"), range(seeds)):
        sim = simulators.bouncing_ball(SYSTEMS["bouncing_ball"][1], random_state=seed)
        model = latent_reset_models("bouncing_ball", "auto", 2, seed)["SLDS, resets"]
        model.set_params(selection=selection, **BALL_AUTO)
        chosen.setdefault(selection, []).append(model.fit(sim.observations).n_states_)
        log(f"bouncing_ball seed {seed}: {selection} chose {chosen[selection][-1]} modes")
    return f"Modes chosen by SLDS, resets (auto, {BALL_AUTO}) on the bouncing ball (true 2), seeds 0-{seeds - 1}: " + (
        "; ".join(f"selection {selection!r} {values}" for selection, values in chosen.items())
    )


RESTITUTION = 0.8
CLEAN_BALL = {  # an observed state: 0.1 mm noise, one restitution, no relaunches (see restitution_part)
    "observation_sd": 1e-4,
    "restitution": (RESTITUTION, RESTITUTION),
    "min_peak": 0.0,
    "launch_height": (1.0, 2.0),
}


def restitution_part(seeds: int) -> list[str]:
    """The restitution learned as a reset: on heights, order 2, the reset into the impact mode (the
    rarer one) is y_t = a y_t-1 + e y_t-2 + c, since h_t = -e (v dt + h_t-1) and v dt = h_t-1 - h_t-2
    when gravity within a step is neglected; e is read off as the coefficient of y_t-2."""
    rows = []
    for seed in range(seeds):
        sim = simulators.bouncing_ball(300, random_state=seed, n_sequences=10, **CLEAN_BALL)
        start = time.perf_counter()
        model = ARHMM(2, order=2, resets="destination", random_state=seed).fit(sim.observations)
        elapsed = time.perf_counter() - start
        paths = model.predict(sim.observations)
        impact = int(np.argmin(np.bincount(np.concatenate(paths), minlength=2)))
        e = float(model.reset_coefs_[impact, 0, 1])
        accuracy = mode_accuracy(np.concatenate([m[2:] for m in sim.modes]), np.concatenate([p[2:] for p in paths]))
        rows.append([str(seed), f"{elapsed:.2f}", f"{accuracy:.3f}", f"{e:.3f}", f"{100 * (e / RESTITUTION - 1):+.1f}"])
        log(f"restitution seed {seed}: e = {e:.3f}")
    header = ["seed", "fit time (s)", "mode accuracy", "restitution e", "error (%)"]
    return table(header, rows)


NOISY_BALL = {"min_peak": 0.0, "launch_height": (1.0, 2.0)}  # 2 cm noise, e ~ U(0.7, 0.9), no relaunches


def bounce_gains(model: SwitchingLDS, impact: int, before: np.ndarray) -> tuple[float, float]:
    """The restitution the fitted switches into and out of the one-step ``impact`` mode imply, read at
    the ground and over the impacts: with M = R_out R_in and v(x) = C (A_flight - I) x the velocity
    (times dt) the flight reads, -v(M w) / v(w), w the state direction the height does not see, and
    minus the least-squares slope of v(M x) on v(x) over ``before``, the states at the steps before the
    impacts (both basis-invariant; the eigenvalues of R_in alone are not determined, h being about 0
    at every impact). A ball landing within its step flies up for the rest of it, so at a fixed height
    the gain is e - (1 + e) g h / v^2 (tests/test_slds_resets.py, ``_restitution``): the first reads
    about 0.016 below e, the second, over heights that grow with the speed as the impacts' do, reads e."""
    C = model.observation_matrix_
    w = np.linalg.svd(C)[2][-1]
    velocity = (C @ (model.dynamics_matrices_[1 - impact] - np.eye(len(w))))[0]
    bounce = model.reset_matrices_[1 - impact] @ model.reset_matrices_[impact]
    speeds, after = before @ velocity, before @ bounce.T @ velocity
    at_ground = -float(velocity @ bounce @ w) / float(velocity @ w)
    return at_ground, -float(np.cov(after, speeds)[0, 1] / np.var(speeds, ddof=1))


def own_restitution(sim: Any) -> tuple[float, float]:
    """The restitution the seed's own bounces hold: minus the least-squares slope of the true velocity
    after each impact on the one before, and on it with the height before held (as read at the ground)."""
    before = np.concatenate([states[np.flatnonzero(modes == 1) - 1] for states, modes in zip(sim.states, sim.modes)])
    after = np.concatenate([states[modes == 1, 1] for states, modes in zip(sim.states, sim.modes)])
    ones = np.ones((len(after), 1))
    slopes = [
        np.linalg.lstsq(np.hstack([regressors, ones]), after, rcond=None)[0][-2]
        for regressors in (before[:, 1:], before)
    ]
    return -float(slopes[0]), -float(slopes[1])


def noisy_ball_part(seeds: int) -> list[str]:
    """The restitution from heights in 2 cm noise, the state latent: ``SwitchingLDS(2, state_dim=2,
    resets="destination", n_restarts=2)`` on 10 balls of 300 steps without relaunches (a relaunch is
    another event, which one shared reset cannot also be: tests/test_slds_resets.py), read from both
    switches of the one-step impact mode at the ground and over the impacts it found (the smoothed
    states at the steps before them): :func:`bounce_gains`. Reference: the seed's own bounces
    (:func:`own_restitution`; the draws' mean is 0.8)."""
    rows, estimates = [], []
    for seed in range(seeds):
        sim = simulators.bouncing_ball(300, random_state=seed, n_sequences=10, **NOISY_BALL)
        start = time.perf_counter()
        model = SwitchingLDS(2, state_dim=2, resets="destination", n_iter=300, n_restarts=2, random_state=seed)
        model.fit(sim.observations)
        elapsed = time.perf_counter() - start
        predicted = model.predict(sim.observations)
        truth, paths = np.concatenate(sim.modes), np.concatenate(predicted)
        impact = int(np.flatnonzero(match_modes(truth, paths) == 1)[0])
        before = np.concatenate(
            [
                states[np.flatnonzero((path[1:] == impact) & (path[:-1] != impact))]
                for states, path in zip(model.smooth(sim.observations), predicted)
            ]
        )
        gains = bounce_gains(model, impact, before)
        estimates.append(gains)
        own, held = own_restitution(sim)
        accuracy = mode_accuracy(truth, paths)
        found = f"{int((paths == impact).sum())} / {int((truth == 1).sum())}"
        rows.append([str(seed), f"{elapsed:.1f}", f"{accuracy:.3f}", found, *(f"{e:.3f}" for e in (*gains, own, held))])
        log(f"noisy ball seed {seed}: e = {gains} (its bounces' {own:.3f}, {held:.3f} at a held height)")
    header = ["seed", "fit time (s)", "mode accuracy", "impacts found / true", "e at the ground", "e over its impacts"]
    header += ["bounces' own e", "own e, height held"]
    at_ground, over_impacts = np.mean(estimates, axis=0)
    summary = (
        f"Mean e at the ground {at_ground:.3f} ({100 * (at_ground / RESTITUTION - 1):+.1f} % from 0.8), "
        f"over its impacts {over_impacts:.3f} ({100 * (over_impacts / RESTITUTION - 1):+.1f} %)."
    )
    return [*table(header, rows), "", summary]


def relaunching_ball_part(seeds: int) -> list[str]:
    """The restitution on the default ``bouncing_ball`` (1,000 steps, 2 cm noise, e ~ U(0.7, 0.9)), whose
    1-3 relaunches per run (a bounce too low is replaced by a launch to 0.5-2 m) are switches the
    bounce's reset does not explain: ``SwitchingLDS(2, state_dim=2, resets="destination", n_restarts=2)``
    with Gaussian resets and with robust ones (``reset_dof=3``, Student-t noise), read as in
    :func:`noisy_ball_part` (:func:`bounce_gains`). Issue 18 asks for 0.8 within 5 %."""
    rows, means = [], {}
    for dof in (None, 3.0):
        estimates = []
        for seed in range(seeds):
            sim = simulators.bouncing_ball(1000, random_state=seed)
            start = time.perf_counter()
            model = SwitchingLDS(2, state_dim=2, resets="destination", reset_dof=dof, n_iter=1500, n_restarts=2)
            model.set_params(random_state=seed).fit(sim.observations)
            elapsed = time.perf_counter() - start
            paths = model.predict(sim.observations)
            impact = int(np.flatnonzero(match_modes(sim.modes, paths) == 1)[0])
            entered = np.flatnonzero((paths[1:] == impact) & (paths[:-1] != impact))
            gains = bounce_gains(model, impact, model.smooth(sim.observations)[entered])
            estimates.append(gains)
            label = "Gaussian" if dof is None else f"Student-t, nu = {dof:g}"
            accuracy = mode_accuracy(sim.modes, paths)
            rows.append([label, str(seed), f"{elapsed:.1f}", f"{accuracy:.3f}", *(f"{e:.3f}" for e in gains)])
            log(f"default ball, resets {label}, seed {seed}: e = {gains}")
        means[label] = np.mean(estimates, axis=0)
    header = ["resets", "seed", "fit time (s)", "mode accuracy", "e at the ground", "e over its impacts"]
    summary = [
        f"- {label}: mean e at the ground {ground:.3f} ({100 * (ground / RESTITUTION - 1):+.1f} %), "
        f"over its impacts {over:.3f} ({100 * (over / RESTITUTION - 1):+.1f} %)"
        for label, (ground, over) in means.items()
    ]
    return [*table(header, rows), "", *summary]


def smape(truth: np.ndarray, forecast: np.ndarray) -> float:
    return float(100 * np.mean(2 * np.abs(truth - forecast) / (np.abs(truth) + np.abs(forecast) + 1e-12)))


def valid_steps(truth: np.ndarray, forecast: np.ndarray, scale: np.ndarray, threshold: float = 0.4) -> int:
    error = np.sqrt(np.mean(np.square((truth - forecast) / scale), axis=1))
    beyond = np.flatnonzero(error > threshold)
    return int(beyond[0]) if beyond.size else len(truth)


def nonlinear_forecaster(order: int, degree: int, ridge: float) -> ARHMM:
    return ARHMM(2, order=order, features=Polynomial(degree), ridge=ridge, random_state=0)


def validated(train: np.ndarray) -> tuple[tuple[int, int, float], float]:
    """The (order, degree, ridge) of the nonlinear forecaster whose forecast of the last ``HORIZON``
    steps of ``train``, fit on the steps before, has the smallest sMAPE; and that sMAPE."""
    fit_part, check_part = train[:-HORIZON], train[-HORIZON:]
    scores = {}
    for order, degree, ridge in CANDIDATES:
        if comb(order * train.shape[1] + degree, degree) - 1 > MAX_FEATURES:
            continue
        try:
            model = nonlinear_forecaster(order, degree, ridge).fit(fit_part)
            scores[order, degree, ridge] = smape(check_part, np.asarray(model.forecast(fit_part, HORIZON).means))
        except ValueError as error:  # a degenerate fit (a collapsed covariance on a deterministic map)
            log(f"candidate {(order, degree, ridge)}: {str(error)[:80]}")
    best = min(scores, key=scores.__getitem__)
    return best, scores[best]


def forecast_part() -> tuple[list[str], dict[str, dict[str, float]]]:
    rows, smapes = [], {}
    for system in ("henon", "lorenz", "rossler"):
        frame = pd.read_csv(SHARED / f"dysts_{system}.csv")
        values = frame.drop(columns=frame.columns[0]).to_numpy(dtype=float)
        train, test = values[:TRAIN], values[TRAIN : TRAIN + HORIZON]
        dim = values.shape[1]
        start = time.perf_counter()
        choice, validation = validated(train)
        log(
            f"{system}: (order, degree, ridge) = {choice} chosen, validation sMAPE {validation:.1f}, "
            f"{time.perf_counter() - start:.0f} s"
        )
        models = {
            f"nonlinear ARHMM {choice}": nonlinear_forecaster(*choice),
            "linear ARHMM": ARHMM(2, order=ORDER, random_state=0),
            "recurrent SLDS": SwitchingLDS(2, state_dim=dim, recurrent=True, random_state=0),
            "linear AR": ARHMM(1, order=ORDER, random_state=0),
        }
        for label, model in models.items():
            start = time.perf_counter()
            model.fit(train)
            elapsed = time.perf_counter() - start
            means = np.asarray(model.forecast(train, HORIZON).means)
            score = smape(test, means)
            smapes.setdefault(system, {})[label.split(" (")[0]] = score
            steps = valid_steps(test, means, train.std(axis=0))
            iterations = f"{model.n_iter_}{'' if model.converged_ else ' (cap)'}"
            rows.append([system, label, f"{elapsed:.2f}", iterations, f"{score:.1f}", str(steps)])
            log(f"{system} {label}: sMAPE {score:.1f}, valid for {steps} steps, {iterations} EM iterations")
    header = ["flow", "model", "fit time (s)", "EM iterations", f"sMAPE over {HORIZON} steps (%)", "valid (steps)"]
    return table(header, rows), smapes


def held_out_errors(model: Any, x: np.ndarray) -> list[float]:
    """RMS error of the predictive mean h steps after each origin, from the filter state after x[:origin]
    (a model without a streaming filter, the NonlinearSwitchingLDS: its ``forecast`` from its posterior
    given the ``WINDOW`` steps before the origin, whose last step is the filtered state)."""
    origins = OSCILLATOR_ORIGINS
    if not hasattr(model, "filter_stream"):
        forecast = model.forecast([x[origin - WINDOW : origin] for origin in origins], max(OSCILLATOR_HORIZONS))
        errors = [
            [forecast.means[i][h - 1] - x[origin + h - 1] for i, origin in enumerate(origins)]
            for h in OSCILLATOR_HORIZONS
        ]
        return [float(np.sqrt(np.mean(np.square(e)))) for e in errors]
    states = {out.step + 1: out.state for out in model.filter_stream(x[: origins[-1]]) if out.step + 1 in origins}
    errors = [
        [model.filter_forecast(states[origin], h).means[-1] - x[origin + h - 1] for origin in origins]
        for h in OSCILLATOR_HORIZONS
    ]
    return [float(np.sqrt(np.mean(np.square(e)))) for e in errors]


def oracle_error(simulation: Any) -> float:
    """The 1-step RMS error of the true flow in the true mode (the noise floor of every model)."""
    x, modes, parameters = simulation.observations, simulation.modes, simulation.parameters
    dt, mu, damping = parameters["dt"], parameters["mu"], parameters["damping"]
    origins = np.asarray(OSCILLATOR_ORIGINS)
    predicted = x[origins - 1]
    for _ in range(parameters["substeps"]):  # the Euler steps of a row
        p, v = predicted.T
        acceleration = np.where(modes[origins] == 0, mu * (1 - p * p) * v - p, -damping * v + p - p**3)
        predicted = predicted + dt * np.column_stack([v, acceleration])
    return float(np.sqrt(np.mean(np.square(predicted - x[origins]))))


def nonlinear_part(seeds: int) -> tuple[list[str], dict[tuple[str, str], dict[str, np.ndarray]]]:
    """Held-out 1- and 20-step errors on each system of ``OSCILLATORS``, per seed, and each linear model's
    smallest ratios (1-step, 20-step) over the seeds to each nonlinear model's errors, by (system, model)."""
    rows, worst = [], {}
    for system, seed in itertools.product(OSCILLATORS, range(seeds)):
        simulation = simulators.switching_oscillators(3000, random_state=seed, **OSCILLATORS[system])
        x = simulation.observations
        models = {  # fits seeded 0, as in tests/test_nonlinear_arhmm.py
            "nonlinear ARHMM": ARHMM(2, features="polynomial", random_state=0),
            "NonlinearSwitchingLDS": NonlinearSwitchingLDS(2, state_dim=2, random_state=0),
            "linear ARHMM": ARHMM(2, random_state=0),
            "linear ARHMM, order 2": ARHMM(2, order=2, random_state=0),
            "SwitchingLDS": SwitchingLDS(2, state_dim=2, random_state=0),
            "SwitchingLDS, state_dim 4": SwitchingLDS(2, state_dim=4, random_state=0),
        }
        results = {}
        for label, model in models.items():
            start = time.perf_counter()
            model.fit(x[:TRAIN_OSCILLATOR])
            results[label] = time.perf_counter() - start, held_out_errors(model, x)
        for label, (elapsed, errors) in results.items():
            ratios = np.divide(errors, results["nonlinear ARHMM"][1])
            for nonlinear_label in ("nonlinear ARHMM", "NonlinearSwitchingLDS"):
                if label in LINEAR_MODELS:
                    against = np.divide(errors, results[nonlinear_label][1])
                    kept = worst.setdefault((system, nonlinear_label), {})
                    kept[label] = np.minimum(kept.get(label, against), against)
            scores = [*(f"{e:.4f}" for e in errors), *(f"{r:.2f}" for r in ratios)]
            rows.append([system, str(seed), label, f"{elapsed:.2f}", *scores])
            log(f"oscillators ({system}) seed {seed} {label}: RMSE {np.round(errors, 4)}, ratios {ratios.round(2)}")
        oracle = f"{oracle_error(simulation):.4f}"
        rows.append([system, str(seed), "oracle (true flow and mode)", "", oracle, "", "", ""])
    header = ["system", "seed", "model", "fit time (s)", "1-step RMSE", "20-step RMSE", "1-step ratio", "20-step ratio"]
    return table(header, rows), worst


def position_only_part(seeds: int) -> list[str]:
    """Mode accuracy and fit time on the switching oscillators seen through their position only
    (``POSITION_STEPS`` steps; the velocity must be inferred): the nonlinear ARHMM on 2 lags, and
    the NonlinearSwitchingLDS with a 2-D state (fits seeded 0)."""
    rows = []
    for seed in range(seeds):
        simulation = simulators.switching_oscillators(POSITION_STEPS, random_state=seed)
        position = simulation.observations[:, :1]
        models = {
            "nonlinear ARHMM, order 2": ARHMM(2, order=2, features="polynomial", random_state=0),
            "NonlinearSwitchingLDS, state_dim 2": NonlinearSwitchingLDS(2, state_dim=2, random_state=0),
        }
        for label, model in models.items():
            start = time.perf_counter()
            model.fit(position)
            elapsed = time.perf_counter() - start
            accuracy = mode_accuracy(simulation.modes, model.predict(position))
            rows.append([str(seed), label, f"{elapsed:.1f}", f"{accuracy:.3f}"])
            log(f"position-only oscillators seed {seed} {label}: accuracy {accuracy:.3f}, {elapsed:.1f} s")
    return table(["seed", "model", "fit time (s)", "mode accuracy"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "hybrid.md")
    parts_help = f"comma-separated: {','.join(PARTS)}"
    parser.add_argument("--parts", type=comma_list(PARTS), default=list(PARTS), help=parts_help)
    args = parser.parse_args()
    start = time.perf_counter()
    lines = ["# Hybrid systems and chaotic flows"]
    if "modes" in args.parts:
        lines += ["", "## Mode accuracy", "", *modes_part(args.seeds), "", ball_modes_chosen(args.seeds)]
        lines += ["", f"## Restitution as a reset (bouncing ball, {CLEAN_BALL}, 10 x 300 steps)", ""]
        lines += restitution_part(args.seeds)
    if "forecasts" in args.parts:
        forecasts, smapes = forecast_part()
        lines += ["", "## Forecasting chaotic flows (dysts)", "", *forecasts, ""]
        beaten = [s for s, scores in smapes.items() if scores["nonlinear ARHMM"] < scores["linear AR"]]
        lines.append(
            f"The nonlinear ARHMM beats the linear AR's sMAPE on {len(beaten)} of {len(smapes)} flows: {beaten}."
        )
    if "nonlinear" in args.parts:
        errors, ratios = nonlinear_part(args.seeds)
        lines += ["", f"## Where linear flows fail (switching Van der Pol / Duffing, {args.seeds} seeds)", ""]
        lines += [*errors, ""]
        for (system, nonlinear_label), kept in ratios.items():
            lines.append(
                f"{system}: smallest ratio over the seeds (linear / {nonlinear_label}'s error), 1 and 20 steps ahead:"
            )
            lines += [f"- {label}: {one:.2f}, {twenty:.2f}" for label, (one, twenty) in kept.items()]
        lines += ["", f"## Position only (switching oscillators, {POSITION_STEPS} steps, {args.seeds} seeds)", ""]
        lines += position_only_part(args.seeds)
    if "ball" in args.parts:
        lines += [
            "",
            f"## Restitution from noisy heights (bouncing ball, 2 cm noise, {NOISY_BALL}, 10 x 300 steps)",
            "",
        ]
        lines += noisy_ball_part(args.seeds)
        lines += [
            "",
            "## Restitution on the default ball (relaunches included, 1,000 steps): Gaussian and robust resets",
            "",
        ]
        lines += relaunching_ball_part(args.seeds)
    lines.append(f"\nTotal time {time.perf_counter() - start:.0f} s.")
    publish("\n".join(lines) + "\n", args.output)


if __name__ == "__main__":
    main()
