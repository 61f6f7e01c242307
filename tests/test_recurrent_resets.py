"""A recurrent SwitchingLDS with resets (switches p(z_t | z_t-1, x_t-1, u_t) AND a reset of x at a
switch) in the three inference paths that handle both: the bootstrap particle filter, the
Rao-Blackwellised one and Kim's streaming filter with its fixed-lag smoother. Against the plain
model when the guards have no slopes, and against an exact filter on a grid of x (n = 1)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from scipy.special import log_softmax, softmax
from test_stream_lag_switching import _assert_laws_close, _kim_smoother, _mixture
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


def _grid_filter(model: SwitchingLDS, Y: np.ndarray, U: np.ndarray, grid: np.ndarray) -> dict[str, np.ndarray]:
    """The exact filter of a model with n = 1 on a uniform ``grid`` of x (the trapezoid rule, which
    for these smooth Gaussian integrands is exact to far below the tests' tolerances): densities
    phi_t(x, j) = p(x_t = x, z_t = j | y_0..t), their p(z_t | y_0..t), E[x_t | y_0..t] and log p(y)."""
    h, x, K = grid[1] - grid[0], grid[:, None], model.n_states
    C, D, d, R = (
        model.observation_matrix_,
        model.feedthrough_matrix_,
        model.observation_offset_,
        model.observation_covariance_,
    )

    def likelihood(t: int) -> np.ndarray:
        return _normal(Y[t, 0], (x @ C.T)[:, 0] + (D @ U[t] + d)[0], R[0, 0])

    prior = _normal(grid, model.initial_state_mean_[0], model.initial_state_covariance_[0, 0])
    phi = model.startprob_[None, :] * prior[:, None] * likelihood(0)[:, None]
    log_lik, densities = 0.0, []
    for t in range(len(Y)):
        if t:
            switches, new = _switches(model, x, U[t]), np.zeros_like(phi)
            for i in range(K):
                for j in range(K):
                    A, B, b, Q = _law(model, i, j)
                    mean = (x @ A.T)[:, 0] + (B @ U[t] + b)[0]
                    kernel = _normal(grid[None, :], mean[:, None], Q[0, 0])
                    new[:, j] += h * (phi[:, i] * switches[:, i, j]) @ kernel
            phi = new * likelihood(t)[:, None]
        total = h * phi.sum()
        log_lik += np.log(total)
        phi = phi / total
        densities.append(phi)
    densities = np.array(densities)
    return {
        "densities": densities,
        "probabilities": h * densities.sum(axis=1),
        "means": h * np.einsum("tgk,g->t", densities, grid),
        "log_likelihood": log_lik,
    }


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


def _guarded_pair_laws(model: SwitchingLDS, U: np.ndarray, filtered: list):
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
    filtered = [out.state.filtered for out in outs]
    expected = _kim_smoother(filtered, _guarded_pair_laws(model, U, filtered))
    smoothed = model.filter_smoothed(outs[-1].state)
    _assert_laws_close(smoothed, [_mixture(law) for law in expected], 1e-10)
    # the guards matter: the smoother with the guards' biases alone differs
    plain = _without_recurrence(model)
    theirs = plain.filter_smoothed(list(plain.filter_stream(Y, U, lag=len(Y)))[-1].state)
    assert np.abs(np.array([law[2] for law in smoothed]) - [law[2] for law in theirs]).max() > 0.05
