"""n_states="auto": the number of modes chosen by BIC."""

from __future__ import annotations

import numpy as np
import pytest

from modeshift import ARHMM, HMM, load


def test_hmm_chooses_three_well_separated_states():
    rng = np.random.default_rng(0)
    truth = HMM(n_states=3)
    truth.startprob_, truth.transmat_ = np.ones(3) / 3, np.full((3, 3), 0.05) + 0.85 * np.eye(3)
    truth.means_, truth.covars_ = np.array([[-4.0], [0.0], [4.0]]), np.ones((3, 1, 1))
    X, _ = truth.sample(1500, random_state=rng)
    model = HMM(n_states="auto", max_states=6, n_restarts=2, random_state=0).fit(X)
    assert model.n_states_ == 3
    table = model.selection_
    assert list(table.columns) == ["n_states", "log_likelihood", "n_parameters", "aic", "bic", "chosen"]
    assert table.loc[table["chosen"], "n_states"].item() == 3
    assert table["bic"].idxmin() == 2
    assert model.means_.shape == (3, 1) and model.predict(X).max() == 2
    assert model.score(X) == pytest.approx(table.loc[2, "log_likelihood"])


def test_arhmm_chooses_the_true_number_of_modes_on_four_of_five_seeds(simulate_arhmm):
    chosen = []
    for seed in range(5):
        _, X, _ = simulate_arhmm(seed, 2000)
        model = ARHMM(n_states="auto", order=2, max_states=5, n_restarts=2, random_state=seed).fit(X)
        chosen.append(model.n_states_)
    assert chosen.count(3) >= 4, chosen


def test_auto_model_saves_and_loads(tmp_path):
    X = np.r_[np.zeros(200), np.full(200, 5.0)] + np.random.default_rng(1).normal(size=400)
    model = HMM(n_states="auto", max_states=3, random_state=0).fit(X)
    model.save(tmp_path / "m.zip")
    loaded = load(tmp_path / "m.zip")
    assert loaded.n_states == "auto" and loaded.n_states_ == model.n_states_
    assert loaded.score(X) == model.score(X)
    assert loaded.selection_.equals(model.selection_)


def test_bad_n_states():
    with pytest.raises(ValueError, match="n_states"):
        HMM(n_states="many").fit(np.zeros(5))
    with pytest.raises(ValueError, match="max_states"):
        ARHMM(n_states="auto", max_states=0).fit(np.zeros(5))
    with pytest.raises(ValueError, match="chosen by fit"):
        HMM(n_states="auto").score(np.zeros(5))
