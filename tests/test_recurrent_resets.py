"""A recurrent SwitchingLDS with resets (switches p(z_t | z_t-1, x_t-1, u_t) AND a reset of x at a
switch) in the three inference paths that handle both: the bootstrap particle filter, the
Rao-Blackwellised one and Kim's streaming filter with its fixed-lag smoother. Against the plain
model when the guards have no slopes, and against an exact filter on a grid of x (n = 1)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import pytest
from scipy.special import softmax
from test_stream_lag_switching import _assert_laws_close, _kim_smoother, _mixture, _observed
from test_stream_resets import _model as _reset_model

from modeshift import SwitchingLDS
from modeshift.smc import SwitchingLinear, particle_filter, rao_blackwellised_filter


def _recurrent(plain: SwitchingLDS, weights: np.ndarray, input_weights: np.ndarray) -> SwitchingLDS:
    """``plain``'s laws and resets with guards softmax_j(w_j x + v_j u + log P_ij), P its transmat_."""
    model = SwitchingLDS(**{**plain.get_params(), "recurrent": True})
    model.__dict__.update({name: plain.__dict__[name] for name in plain.parameter_names if name != "transmat_"})
    model.recurrence_weights_, model.input_weights_ = weights, input_weights
    model.recurrence_biases_ = np.log(plain.transmat_)
    return model


def _tiny(ties: str) -> SwitchingLDS:
    """K = 2, n = 1, m = 1: guards that favour mode 1 at large x and mode 0 at small x, and resets
    that throw x far (to about -3 into mode 0, +4 into mode 1)."""
    plain = SwitchingLDS(n_states=2, state_dim=1, input_dim=1, resets=ties)
    plain.startprob_, plain.transmat_ = np.array([0.6, 0.4]), np.array([[0.85, 0.15], [0.25, 0.75]])
    plain.dynamics_matrices_ = np.array([[[0.9]], [[0.5]]])
    plain.dynamics_input_matrices_ = np.array([[[0.3]], [[-0.2]]])
    plain.dynamics_offsets_ = np.array([[0.0], [0.5]])
    plain.dynamics_covariances_ = np.array([[[0.1]], [[0.2]]])
    plain.observation_matrix_, plain.feedthrough_matrix_ = np.array([[1.0]]), np.array([[0.2]])
    plain.observation_offset_, plain.observation_covariance_ = np.array([0.1]), np.array([[0.5]])
    plain.initial_state_mean_, plain.initial_state_covariance_ = np.array([0.5]), np.array([[1.0]])
    # "destination": row j is the reset into mode j; "pair" (K = 2): row 0 is 0 -> 1, row 1 is 1 -> 0
    offsets = [[-3.0], [4.0]] if ties == "destination" else [[4.0], [-3.0]]
    plain.reset_matrices_, plain.reset_offsets_ = np.array([[[0.2]], [[0.3]]]), np.array(offsets)
    plain.reset_input_matrices_ = np.array([[[0.1]], [[0.1]]])
    plain.reset_covariances_ = np.array([[[0.15]], [[0.1]]])
    return _recurrent(plain, np.array([[-0.8], [0.8]]), np.array([[0.5], [-0.5]]))


def _law(model: SwitchingLDS, i: int, j: int) -> tuple[np.ndarray, ...]:
    """(A, B, b, Q) of x_t when z_t-1 = i, z_t = j: flow j, or at a switch the reset of rank j
    ("destination") or of (i, j) among the ordered pairs i != j, row by row ("pair")."""
    if i == j or not model.resets:
        prefix, row = "dynamics", j
    else:
        pairs = [(a, b) for a in range(model.n_states) for b in range(model.n_states) if a != b]
        prefix, row = "reset", j if model.resets == "destination" else pairs.index((i, j))
    names = ("matrices", "input_matrices", "offsets", "covariances")
    return tuple(getattr(model, f"{prefix}_{name}_")[row] for name in names)


def _switches(model: SwitchingLDS, x: np.ndarray, u: np.ndarray) -> np.ndarray:
    """p(z_t = j | z_t-1 = i, x_t-1 = x, u_t) (len(x), K, K), x (G, n)."""
    if not model.recurrent:
        return np.broadcast_to(model.transmat_, (len(x), *model.transmat_.shape))
    logits = x @ model.recurrence_weights_.T + model.input_weights_ @ u
    return softmax(logits[:, None, :] + model.recurrence_biases_[None], axis=2)


def _normal(x: np.ndarray, mean: np.ndarray, variance: float) -> np.ndarray:
    """N(x | mean, variance), broadcast."""
    return np.exp(-0.5 * (x - mean) ** 2 / variance) / np.sqrt(2 * np.pi * variance)


def _grid_moves(model: SwitchingLDS, u: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """(K, K, G, G): h p(z_t = j | z_t-1 = i, x_t-1 = g, u_t) N(g' | law_ij(g, u_t)) on a uniform
    ``grid`` of x (n = 1) with step h, so that a density on the grid moves by a matrix product."""
    h, x, K = grid[1] - grid[0], grid[:, None], model.n_states
    switches, moves = _switches(model, x, u), np.empty((K, K, len(grid), len(grid)))
    for i in range(K):
        for j in range(K):
            A, B, b, Q = _law(model, i, j)
            mean = (x @ A.T)[:, 0] + (B @ u + b)[0]
            moves[i, j] = h * switches[:, i, j, None] * _normal(grid[None, :], mean[:, None], Q[0, 0])
    return moves


def _moments(densities: np.ndarray, grid: np.ndarray) -> dict[str, np.ndarray]:
    """p(z_t) (T, K) and E[x_t] (T,) of normalised densities (T, G, K) on ``grid``."""
    h = grid[1] - grid[0]
    return {"probabilities": h * densities.sum(axis=1), "means": h * np.einsum("tgk,g->t", densities, grid)}


def _grid_filter(model: SwitchingLDS, Y: np.ndarray, U: np.ndarray, grid: np.ndarray) -> dict[str, np.ndarray]:
    """The exact filter of a model with n = 1 on a uniform ``grid`` of x (the trapezoid rule, which
    for these smooth Gaussian integrands is exact to far below the tests' tolerances): densities
    phi_t(x, j) = p(x_t = x, z_t = j | y_0..t), their p(z_t | y_0..t) and E[x_t | y_0..t], the
    observation densities g_t(x) (T, G), each step's normaliser p(y_t | y_0..t-1) and log p(y)."""
    h, C, D = grid[1] - grid[0], model.observation_matrix_[0, 0], model.feedthrough_matrix_
    likelihoods = np.array(
        [
            _normal(y[0], C * grid + (D @ u + model.observation_offset_)[0], model.observation_covariance_[0, 0])
            for y, u in zip(Y, U)
        ]
    )
    prior = _normal(grid, model.initial_state_mean_[0], model.initial_state_covariance_[0, 0])
    phi = model.startprob_[None, :] * prior[:, None]
    densities, totals = [], []
    for t in range(len(Y)):
        if t:
            phi = np.einsum("gi,ijgh->hj", phi, _grid_moves(model, U[t], grid))
        phi = phi * likelihoods[t][:, None]
        totals.append(h * phi.sum())
        phi = phi / totals[-1]
        densities.append(phi)
    densities = np.array(densities)
    return {
        "densities": densities,
        **_moments(densities, grid),
        "likelihoods": likelihoods,
        "normalisers": np.array(totals),
        "log_likelihood": float(np.log(totals).sum()),
    }


def _grid_smoother(model: SwitchingLDS, Y: np.ndarray, U: np.ndarray, grid: np.ndarray) -> dict[str, np.ndarray]:
    """p(z_t | y) and E[x_t | y] on the grid: phi_t beta_t with beta_T-1 = 1 and
    beta_t(x, i) = sum_j int moves_t+1(i -> j; x, x') g_t+1(x') beta_t+1(x', j) dx' / p(y_t+1 | y_0..t)."""
    filtered = _grid_filter(model, Y, U, grid)
    beta, smoothed = np.ones_like(filtered["densities"][-1]), [filtered["densities"][-1]]
    for t in range(len(Y) - 2, -1, -1):
        ahead = beta * filtered["likelihoods"][t + 1][:, None] / filtered["normalisers"][t + 1]
        beta = np.einsum("ijgh,hj->gi", _grid_moves(model, U[t + 1], grid), ahead)
        smoothed.append(filtered["densities"][t] * beta)
    return _moments(np.array(smoothed[::-1]), grid)


def _random(ties: str, seed: int, weights: float) -> tuple[SwitchingLDS, np.ndarray, np.ndarray]:
    """A random recurrent model with resets (K = 2, n = 2, m = 1; guard slopes of scale ``weights``)
    and 30 steps sampled from it with their inputs."""
    rng = np.random.default_rng(seed)
    plain = _reset_model(rng, ties)
    model = _recurrent(plain, weights * rng.normal(size=(2, 2)), weights * rng.normal(size=(2, 1)))
    U = rng.normal(size=(30, 1))
    return model, model.sample(30, inputs=U, random_state=seed)[0], U


def _without_recurrence(model: SwitchingLDS) -> SwitchingLDS:
    """The plain model with ``model``'s laws and resets and transmat_ = softmax of its guard biases."""
    plain = SwitchingLDS(**{**model.get_params(), "recurrent": False})
    plain.__dict__.update({name: model.__dict__[name] for name in plain.parameter_names if name != "transmat_"})
    plain.transmat_ = softmax(model.recurrence_biases_, axis=1)
    return plain


@pytest.mark.parametrize("ties", ["destination", "pair"])
def test_guards_without_slopes_filter_and_smooth_as_the_plain_model(ties):
    """Zero slopes and biases log P: every path draws (particles) and weighs (Kim) the switches as
    the plain model with transmat_ P does, into the same resets. The particle filters with the same
    seed draw the same uniforms, and a switch probability differing by rounding (1e-16) moves no
    draw: the same estimates to 1e-10; Kim's filter and the whole-stream window likewise."""
    model, Y, U = _random(ties, 0, 0.0)
    model.input_weights_ = np.zeros((2, 1))
    plain = _without_recurrence(model)
    for seed in range(3):
        ours, theirs = (
            particle_filter(SwitchingLinear(m, U), Y, n_particles=500, random_state=seed) for m in (model, plain)
        )
        np.testing.assert_allclose(ours.log_likelihood_increments, theirs.log_likelihood_increments, rtol=0, atol=1e-10)
        np.testing.assert_allclose(ours.means, theirs.means, rtol=0, atol=1e-10)
        ours, theirs = (rao_blackwellised_filter(m, Y, 500, inputs=U, random_state=seed) for m in (model, plain))
        np.testing.assert_allclose(ours.log_likelihood_increments, theirs.log_likelihood_increments, rtol=0, atol=1e-10)
        np.testing.assert_allclose(ours.state_means, theirs.state_means, rtol=0, atol=1e-10)
        np.testing.assert_allclose(ours.mode_probabilities, theirs.mode_probabilities, rtol=0, atol=1e-10)
    ours, theirs = (list(m.filter_stream(Y, U, lag=len(Y))) for m in (model, plain))
    for a, b in zip(ours, theirs, strict=True):
        assert abs(a.log_likelihood - b.log_likelihood) < 1e-10
    _assert_laws_close(model.filter_smoothed(ours[-1].state), plain.filter_smoothed(theirs[-1].state), 1e-10)
    plain.resets = None  # the resets act: without them the stream differs
    assert np.abs(np.array([o.mean for o in plain.filter_stream(Y, U)]) - [o.mean for o in ours]).max() > 0.1


def _guarded_pair_laws(model: SwitchingLDS, U: np.ndarray, filtered: list) -> Callable[[int], tuple[np.ndarray, ...]]:
    """``pair_laws`` for :func:`_kim_smoother`: pair (i, j) into step t follows :func:`_law`, and
    switches with the guards read at mode i's filtered mean at t - 1, as Kim's filter reads them."""
    K = model.n_states
    laws = [[_law(model, i, j) for j in range(K)] for i in range(K)]
    A, B, b, Q = (np.array([[law[part] for law in row] for row in laws]) for part in range(4))

    def pair_laws(t: int) -> tuple[np.ndarray, ...]:
        means = filtered[t - 1][1]
        P = np.array([_switches(model, means[i : i + 1], U[t])[0, i] for i in range(K)])
        return A, B @ U[t] + b, Q, P

    return pair_laws


@pytest.mark.parametrize("ties", ["destination", "pair"])
def test_a_window_over_the_whole_stream_is_kims_smoother_with_guards_and_resets(ties):
    """With guards read at each mode's filtered mean (the filter's approximation) and resets at the
    switches, the fixed-lag window with L >= T is Kim's smoother written out pair by pair (1e-10)."""
    model, Y, U = _random(ties, 1, 1.0)
    outs = list(model.filter_stream(Y, U, lag=len(Y)))
    filtered = [out.state.filtered[:3] for out in outs]
    expected = _kim_smoother(filtered, _guarded_pair_laws(model, U, filtered), _observed(model, Y, U))
    smoothed = model.filter_smoothed(outs[-1].state)
    _assert_laws_close(smoothed, [_mixture(law) for law in expected], 1e-10)
    # the guards matter: the smoother with the guards' biases alone differs
    plain = _without_recurrence(model)
    theirs = plain.filter_smoothed(list(plain.filter_stream(Y, U, lag=len(Y)))[-1].state)
    assert np.abs(np.array([law[2] for law in smoothed]) - [law[2] for law in theirs]).max() > 0.05


def _tiny_data(ties: str) -> tuple[SwitchingLDS, np.ndarray, np.ndarray]:
    """:func:`_tiny` and 10 steps from it (modes 0 0 1 1 1 1 1 0 0 0: two switches, two resets)."""
    model = _tiny(ties)
    U = np.random.default_rng(6).normal(size=(10, 1))
    return model, model.sample(10, inputs=U, random_state=6)[0], U


_GRID = np.linspace(-10, 10, 1001)  # the filtered densities are below 1e-60 at the ends


def _assert_within_monte_carlo_error(estimates: np.ndarray, exact: float, largest_error: float) -> None:
    """The mean of independent estimates within 4 of its standard errors of ``exact``, that error
    below ``largest_error`` (so that a wild spread cannot pass)."""
    error = estimates.std(ddof=1) / np.sqrt(len(estimates))
    assert error < largest_error
    assert abs(estimates.mean() - exact) < 4 * error


@pytest.mark.parametrize("ties", ["destination", "pair"])
def test_the_bootstrap_filter_is_the_exact_filter_on_a_grid(ties):
    """8 runs of 20000 particles: the log-likelihood within Monte Carlo error of the grid's (measured:
    mean off by -0.002 / +0.009, standard deviation of one run 0.036 / 0.047), every filtered mean
    and p(z_t = 1) within 0.05 (measured at most 0.015 and 0.013). The resets act (the grid without
    them moves a mean by 2.2) and so do the guards' slopes (without: a mode probability by 0.46)."""
    model, Y, U = _tiny_data(ties)
    exact = _grid_filter(model, Y, U, _GRID)
    runs = [particle_filter(SwitchingLinear(model, U), Y, 20000, random_state=seed) for seed in range(8)]
    _assert_within_monte_carlo_error(np.array([run.log_likelihood for run in runs]), exact["log_likelihood"], 0.03)
    for run in runs:
        np.testing.assert_allclose(run.means[:, 0], exact["means"], rtol=0, atol=0.05)
        np.testing.assert_allclose(run.means[:, 1], exact["probabilities"][:, 1], rtol=0, atol=0.05)
    no_resets = copy.deepcopy(model)
    no_resets.resets = None
    assert np.abs(_grid_filter(no_resets, Y, U, _GRID)["means"] - exact["means"]).max() > 1.0
    no_slopes = _without_recurrence(model)
    assert np.abs(_grid_filter(no_slopes, Y, U, _GRID)["probabilities"] - exact["probabilities"]).max() > 0.1


@pytest.mark.parametrize("ties", ["destination", "pair"])
def test_with_guards_on_the_inputs_only_the_rao_blackwellised_filter_is_exact_and_kim_close(ties):
    """Slopes on u_t only: given a mode path x is Gaussian and the switches do not read it, so the
    Rao-Blackwellised filter is unbiased (8 runs of 2000 paths within Monte Carlo error of the grid,
    its moments within 0.05: measured at most 0.013 on the means, 0.023 on the mode probabilities)
    and Kim's filter approximates only by its collapse (measured: 0.003 on the log-likelihood, 0.025
    on the means, 0.003 on the mode probabilities)."""
    model, Y, U = _tiny_data(ties)
    model.recurrence_weights_, model.input_weights_ = np.zeros((2, 1)), np.array([[1.0], [-1.0]])
    exact = _grid_filter(model, Y, U, _GRID)
    runs = [rao_blackwellised_filter(model, Y, 2000, inputs=U, random_state=seed) for seed in range(8)]
    _assert_within_monte_carlo_error(np.array([run.log_likelihood for run in runs]), exact["log_likelihood"], 0.05)
    for run in runs:
        np.testing.assert_allclose(run.state_means[:, 0], exact["means"], rtol=0, atol=0.05)
        np.testing.assert_allclose(run.mode_probabilities, exact["probabilities"], rtol=0, atol=0.05)
    outs = list(model.filter_stream(Y, U))
    assert abs(sum(out.log_likelihood for out in outs) - exact["log_likelihood"]) < 0.02
    np.testing.assert_allclose([out.mean[0] for out in outs], exact["means"], rtol=0, atol=0.05)
    np.testing.assert_allclose([out.probabilities for out in outs], exact["probabilities"], rtol=0, atol=0.02)


@pytest.mark.parametrize("ties", ["destination", "pair"])
def test_guards_read_at_the_mean_approximate_by_the_spread_of_x(ties):
    """Slopes on x_t-1: the Rao-Blackwellised and Kim filters read the guards at a mean, not over
    x's law given the path, E softmax(w x) != softmax(w E x). With observation variance 0.5 both
    overestimate the log-likelihood alike (measured, Rao-Blackwellised / Kim: +0.17 / +0.19
    "destination", +0.20 / +0.23 "pair": more than 0.1, and within 0.05 of each other); with 0.02,
    x is nearly known given y and both come within Monte Carlo error (the Rao-Blackwellised filter,
    measured -0.014 and +0.0002, standard errors 0.023 and 0.025) or 0.05 (Kim, measured 0.011 and
    0.029) of the grid's."""
    model, Y, U = _tiny_data(ties)
    for variance in (0.5, 0.02):
        model.observation_covariance_ = np.array([[variance]])
        grid = np.arange(-8.0, 8.0, min(0.02, np.sqrt(variance) / 8))
        exact = _grid_filter(model, Y, U, grid)["log_likelihood"]
        rb = np.array(
            [rao_blackwellised_filter(model, Y, 2000, inputs=U, random_state=s).log_likelihood for s in range(8)]
        )
        kim = sum(out.log_likelihood for out in model.filter_stream(Y, U))
        if variance == 0.5:
            assert rb.mean() - exact > 0.1 and kim - exact > 0.1 and abs(rb.mean() - kim) < 0.05
        else:
            _assert_within_monte_carlo_error(rb, exact, 0.05)
            assert abs(kim - exact) < 0.05


@pytest.mark.parametrize("ties", ["destination", "pair"])
def test_with_guards_on_the_inputs_only_the_whole_stream_window_is_near_the_exact_smoother(ties):
    """The window over the whole stream against the smoother on the grid: mode probabilities within
    0.005, means within 0.01 (measured 0.0008 / 0.0011 and 0.004; the filter is off by 0.003 and
    0.025 against the grid's filter). The pairs into a step
    weigh by the filter's pair posterior there, y_s+1 included: Kim's own weight, which drops y_s+1
    (what tells the pairs apart when x resets at a switch), gave p(z_0 = 1 | y) 0.387 against the
    grid's 0.003 (largest gaps 0.38 on the modes, 0.69 / 1.28 on the means)."""
    model, Y, U = _tiny_data(ties)
    model.recurrence_weights_, model.input_weights_ = np.zeros((2, 1)), np.array([[1.0], [-1.0]])
    exact = _grid_smoother(model, Y, U, _GRID)
    np.testing.assert_allclose(exact["probabilities"].sum(axis=1), 1.0, rtol=0, atol=1e-12)
    smoothed = model.filter_smoothed(list(model.filter_stream(Y, U, lag=len(Y)))[-1].state)
    np.testing.assert_allclose([law[2] for law in smoothed], exact["probabilities"], rtol=0, atol=0.005)
    np.testing.assert_allclose([law[0][0] for law in smoothed], exact["means"], rtol=0, atol=0.01)
