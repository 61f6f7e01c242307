"""NonlinearSwitchingLDS(n_states="auto"): the number of modes chosen by BIC over fits from scratch
or by pruning an over-complete fit (modeshift.models.selection), its table kept through save/load."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from modeshift import NonlinearSwitchingLDS
from modeshift.datasets.simulators import switching_oscillators
from modeshift.models.base import load
from modeshift.models.em import ConvergenceWarning

PARAMS = {"state_dim": 2, "n_iter": 10, "random_state": 0, "max_states": 3}


@pytest.fixture(scope="module")
def observations():
    """Two oscillators, one mode each (a Duffing and a Van der Pol flow): 300 steps."""
    return switching_oscillators(300, random_state=1).observations


def _fit(model, X):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X)


@pytest.fixture(scope="module")
def by_fits(observations):
    return _fit(NonlinearSwitchingLDS(n_states="auto", **PARAMS), observations)


def test_auto_chooses_two_modes_by_bic_and_is_the_two_mode_fit(by_fits, observations):
    table = by_fits.selection_
    assert list(table["n_states"]) == [1, 2, 3] and by_fits.n_states_ == 2
    assert table["chosen"].tolist() == [False, True, False]
    assert int(table["bic"].idxmin()) == 1
    two = _fit(NonlinearSwitchingLDS(n_states=2, **PARAMS), observations)
    np.testing.assert_allclose(by_fits.transmat_, two.transmat_, rtol=1e-12)
    np.testing.assert_allclose(by_fits.history_, two.history_, rtol=1e-12)
    assert table.loc[1, "elbo"] == pytest.approx(two.elbo(observations), rel=1e-10)
    assert table.loc[1, "bic"] == pytest.approx(two.bic(observations), rel=1e-10)
    assert by_fits.predict_proba(observations).shape == (300, 2)


def test_the_choice_and_its_table_survive_save_and_load(by_fits, observations, tmp_path):
    by_fits.save(tmp_path / "auto.msz")
    loaded = load(tmp_path / "auto.msz")
    assert loaded.n_states == "auto" and loaded.n_states_ == 2
    assert loaded.selection_.equals(by_fits.selection_)
    np.testing.assert_allclose(loaded.predict_proba(observations), by_fits.predict_proba(observations), rtol=1e-10)


def test_pruning_from_three_modes_keeps_two(observations):
    model = _fit(NonlinearSwitchingLDS(n_states="auto", selection="prune", **PARAMS), observations)
    table = model.selection_
    assert list(table["n_states"]) == [3, 2, 1] and model.n_states_ == 2
    assert set(table["start"]) <= {"scratch", "pruned"} and table.loc[2, "start"] in {"scratch", "pruned"}
    assert table.loc[table["chosen"], "vanished"].item() == 0
    assert model.flow_weights_.shape[0] == 2 and model.transmat_.shape == (2, 2)


def test_kept_modes_start_from_the_fitted_ones(by_fits):
    smaller = by_fits._kept_modes(np.array([1]))
    assert smaller.n_states == 1 and smaller.transmat_.shape == (1, 1)
    np.testing.assert_array_equal(smaller.flow_weights_[0], by_fits.flow_weights_[1])
    assert smaller.startprob_.sum() == pytest.approx(1.0) and smaller.feature_map_ is by_fits.feature_map_


def test_a_bad_selection_is_refused():
    with pytest.raises(ValueError, match="selection"):
        NonlinearSwitchingLDS(n_states="auto", selection="aic").fit(np.zeros((20, 1)))


def test_a_recurrent_choice_keeps_its_dwell_times(observations, tmp_path):
    """A recurrent model's dwell times are those of the chosen fit (read by describe and the
    automaton, and saved): the runs of its guards, which no transition matrix gives."""
    params = {**PARAMS, "n_iter": 3, "max_states": 2, "recurrent": True}
    model = _fit(NonlinearSwitchingLDS(n_states="auto", **params), observations[:120])
    chosen = _fit(NonlinearSwitchingLDS(**{**params, "n_states": model.n_states_}), observations[:120])
    assert np.isfinite(chosen.dwell_times_).all()
    np.testing.assert_allclose(model.dwell_times_, chosen.dwell_times_, rtol=1e-12)
    np.testing.assert_allclose(model.describe()["dwell_time"], chosen.dwell_times_, rtol=1e-12)
    np.testing.assert_allclose(model.automaton().dwell_times, chosen.dwell_times_, rtol=1e-12)
    model.save(tmp_path / "auto.msz")
    np.testing.assert_allclose(load(tmp_path / "auto.msz").dwell_times_, chosen.dwell_times_, rtol=1e-12)
