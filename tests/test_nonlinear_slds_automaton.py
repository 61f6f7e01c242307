"""NonlinearSwitchingLDS.automaton(): feature flows, their vector fields and curved guards, and their plot."""

from __future__ import annotations

import types
import warnings

import numpy as np
import pytest
from test_nonlinear_slds_recurrent import _fit, _rings  # the rings: guards on two circles

from modeshift import NonlinearSwitchingLDS, SwitchingLDS
from modeshift.features import Custom, Polynomial
from modeshift.models import em
from modeshift.models.automaton import crossings
from modeshift.models.capabilities import HybridAutomaton


@pytest.fixture(scope="module")
def rings():
    y, _, _ = _rings(400, seed=2)
    return y, _fit(y, recurrent=True)


def _started(recurrent: bool, **options) -> NonlinearSwitchingLDS:
    """A model with its start's parameters (no EM iteration) on the rings."""
    y, _, _ = _rings(150, seed=4)
    model = NonlinearSwitchingLDS(2, state_dim=2, recurrent=recurrent, n_iter=0, random_state=0, **options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", em.ConvergenceWarning)
        return model.fit(y, inputs=np.random.default_rng(4).normal(size=(150, 1)) if options.get("input_dim") else None)


def _smoothing_to(model, states: np.ndarray, monkeypatch) -> None:
    """Make ``model``'s inference return ``states`` as the smoothed means, whatever the data."""
    monkeypatch.setattr(model, "_infer", lambda seqs: types.SimpleNamespace(means=states))


def test_with_a_linear_map_it_is_the_switching_lds_automaton(monkeypatch):
    """phi(x) = (x - location) / scale: the flows W phi(x) + b are the SwitchingLDS's A x + b'
    with A = W / scale, b' = b - A location, and the guards w_j . phi(x) + r_ij its
    (w_j / scale) . x + r_ij - (w_j / scale) . location; on the same states the two automata
    have the same vector fields and guard probabilities."""
    model = _started(recurrent=True, features=Polynomial(1))
    rng = np.random.default_rng(0)
    model.recurrence_weights_ = rng.normal(size=(2, 2))
    location, scale = model.feature_map_.location_, model.feature_map_.scale_
    reference = SwitchingLDS(2, state_dim=2, recurrent=True)
    A = model.flow_weights_ / scale
    reference.dynamics_matrices_, reference.dynamics_offsets_ = A, model.flow_offsets_ - A @ location
    reference.dynamics_input_matrices_, reference.dynamics_covariances_ = np.zeros((2, 2, 0)), model.flow_covariances_
    reference.recurrence_weights_, reference.input_weights_ = model.recurrence_weights_ / scale, np.zeros((2, 0))
    reference.recurrence_biases_ = model.recurrence_biases_ - reference.recurrence_weights_ @ location
    reference.feedthrough_matrix_ = np.zeros((2, 0))
    shared = ("observation_matrix_", "observation_offset_", "observation_covariance_", "startprob_", "dwell_times_")
    for name in (*shared, "initial_state_mean_", "initial_state_covariance_"):
        setattr(reference, name, getattr(model, name))
    states = location + scale * rng.normal(size=(60, 2))
    for fitted in (model, reference):
        _smoothing_to(fitted, states, monkeypatch)
    y = np.zeros((60, 2))
    got, want = model.automaton(y, resolution=7), reference.automaton(y, resolution=7)

    np.testing.assert_array_equal(got.grid, want.grid)
    assert got.grid_shape == want.grid_shape == (7, 7)
    np.testing.assert_allclose(got.vector_fields, want.vector_fields, rtol=0, atol=1e-10)
    assert [(g.source, g.target) for g in got.guards] == [(g.source, g.target) for g in want.guards] == [(0, 1), (1, 0)]
    for ours, theirs in zip(got.guards, want.guards):
        np.testing.assert_allclose(ours.probability, theirs.probability, rtol=0, atol=1e-10)
        assert ours.thresholds is None  # a 2-D state has level sets, not thresholds
        assert _most_crossings(ours, got.grid_shape) <= 1
    np.testing.assert_array_equal(got.dwell_times, model.dwell_times_)
    for k, flow in enumerate(got.flows):
        np.testing.assert_array_equal(flow.coefficients, model.flow_weights_[k])
        np.testing.assert_array_equal(flow.intercept, model.flow_offsets_[k])
        assert flow.regressors == {"kind": "polynomial", "degree": 1}
    assert got.resets == {} and isinstance(model, HybridAutomaton)


def test_a_markov_model_without_data_samples_the_maps_range():
    """Without X the grid spans the map's location -/+ 3 scales; a Markov chain of modes has no
    guards and dwells 1 / (1 - p_kk); with inputs each flow's coefficients are [W_k, B_k]."""
    model = _started(recurrent=False, input_dim=1)
    found = model.automaton(resolution=5)
    location, scale = model.feature_map_.location_, model.feature_map_.scale_
    np.testing.assert_allclose(found.grid.min(axis=0), location - 3 * scale)
    np.testing.assert_allclose(found.grid.max(axis=0), location + 3 * scale)
    phi = model.feature_map_.transform(found.grid)
    for k in range(2):
        expected = phi @ model.flow_weights_[k].T + model.flow_offsets_[k] - found.grid
        np.testing.assert_allclose(found.vector_fields[k], expected)
        np.testing.assert_array_equal(
            found.flows[k].coefficients, np.hstack([model.flow_weights_[k], model.flow_input_matrices_[k]])
        )
        np.testing.assert_array_equal(found.flows[k].noise, model.flow_covariances_[k])
    assert found.flows[0].regressors == {"kind": "polynomial", "degree": 3, "inputs": 1}
    np.testing.assert_allclose(found.dwell_times, 1.0 / (1.0 - np.diag(model.transmat_)))
    assert found.guards == [] and found.resets == {}


def _scalar(features) -> NonlinearSwitchingLDS:
    """A recurrent model of a 1-D state with features [u, u^2], u the standardised state: from
    mode 0 the log-odds of switching against staying are 2 u^2 - 1, zero at u = -+1/sqrt(2); from
    mode 1 they are -2 u^2 - 1 < 0, never 1/2."""
    model = NonlinearSwitchingLDS(2, state_dim=1, recurrent=True)
    model.feature_map_ = features.fit(np.linspace(-2, 2, 9)[:, None])
    model.flow_weights_, model.flow_offsets_ = np.array([[[0.9, 0.0]], [[0.5, 0.1]]]), np.array([[0.0], [0.3]])
    model.flow_covariances_ = np.full((2, 1, 1), 0.1)
    model.recurrence_weights_, model.input_weights_ = np.array([[0.0, 0.0], [0.0, 2.0]]), np.zeros((2, 0))
    model.recurrence_biases_ = np.array([[0.0, -1.0], [0.0, 1.0]])
    model.observation_matrix_, model.observation_offset_, model.observation_covariance_ = (
        np.eye(1),
        np.zeros(1),
        np.eye(1),
    )
    model.initial_state_mean_, model.initial_state_covariance_ = np.array([0.5]), np.array([[4.0]])
    model.startprob_ = np.ones(2) / 2
    return model


def test_a_scalar_state_has_guard_thresholds(monkeypatch):
    model = _scalar(Polynomial(2))
    _smoothing_to(model, np.array([[-2.0], [2.0]]), monkeypatch)
    found = model.automaton(np.zeros((2, 1)))
    scale = model.feature_map_.scale_[0]
    into, back = found.guards
    np.testing.assert_allclose(into.thresholds, [-scale / np.sqrt(2), scale / np.sqrt(2)], atol=1e-5)
    assert back.thresholds.size == 0
    assert found.grid.shape == (25, 1) and found.vector_fields.shape == (2, 25, 1)
    assert np.isnan(found.dwell_times).all()  # a recurrent model's are its fit's: there was none
    for bad in (0, 2.5, "fine"):
        with pytest.raises(ValueError, match="resolution .* must be an integer >= 2"):
            model.automaton(resolution=bad)


def test_a_users_feature_function_samples_the_initial_law_without_data():
    """A function has no standardisation to read a range from: m0 -/+ 3 sd(x_0) instead."""
    model = _scalar(Custom(lambda x: np.c_[x, x**2]))
    found = model.automaton(resolution=13)
    np.testing.assert_allclose(found.grid[[0, -1], 0], [0.5 - 6.0, 0.5 + 6.0])
    x = found.grid[:, 0]
    np.testing.assert_allclose(found.vector_fields[1, :, 0], 0.5 * x + 0.1 * x**2 + 0.3 - x)
    np.testing.assert_allclose(found.guards[0].thresholds, [-np.sqrt(0.5), np.sqrt(0.5)], atol=1e-5)


def _most_crossings(guard, grid_shape: tuple[int, int]) -> int:
    """The most times a row or column of the mesh crosses the guard's 1/2 level: at most once for
    a straight guard, whose probability is monotone along every line."""
    p = guard.probability.reshape(grid_shape)
    steps = np.arange(grid_shape[0])
    return max(len(crossings(steps, line, 0.5)) for line in (*p, *p.T))


def test_the_guard_regions_of_a_curved_fit_are_curved(rings):
    """On the rings each guard's 1/2 level set is crossed twice by some line of the mesh (a
    region inside or outside a closed curve), which no straight guard's is."""
    y, model = rings
    found = model.automaton(y, resolution=21)
    assert [_most_crossings(guard, found.grid_shape) for guard in found.guards] == [2, 2]


def test_plot_flows_draws_each_mode_with_its_guards(rings):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    from modeshift.plot import plot_flows

    y, model = rings
    figure = plot_flows(model, y)
    assert len(figure.axes) == 2 and [len(ax.collections) for ax in figure.axes] == [2, 2]  # arrows, guard line
