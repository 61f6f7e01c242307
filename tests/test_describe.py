"""segment() and describe() on fitted HMMs and ARHMMs."""

from __future__ import annotations

import numpy as np
import pytest

from modeshift import ARHMM, HMM


def _hmm():
    model = HMM(n_states=3)
    model.startprob_ = np.ones(3) / 3
    model.transmat_ = np.array([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.3, 0.3, 0.4]])
    model.means_, model.covars_ = np.array([[0.0], [3.0], [6.0]]), np.ones((3, 1, 1))
    return model


def test_describe_reports_occupancy_dwell_and_switches():
    model = _hmm()
    table = model.describe()
    P = model.transmat_
    np.testing.assert_allclose(table["occupancy"].to_numpy() @ P, table["occupancy"].to_numpy(), atol=1e-12)
    assert table["occupancy"].sum() == pytest.approx(1.0)
    np.testing.assert_allclose(table["dwell_time"], 1.0 / (1.0 - np.diag(P)))
    np.testing.assert_allclose(table[["to_0", "to_1", "to_2"]].to_numpy(), P)
    assert [m[0] for m in table["means_"]] == [0.0, 3.0, 6.0]


def test_describe_gives_the_spectral_radius_of_each_autoregression():
    model = ARHMM(n_states=2, order=2)
    model.startprob_, model.transmat_ = np.ones(2) / 2, np.full((2, 2), 0.5)
    model.coefs_ = np.array([[[0.5, 0.3]], [[1.2, -0.5]]])  # y_t = a1 y_t-1 + a2 y_t-2
    model.intercepts_, model.covars_ = np.array([[1.0], [0.0]]), np.ones((2, 1, 1))
    table = model.describe()
    for k, (a1, a2) in enumerate(model.coefs_[:, 0]):
        assert table["spectral_radius"][k] == pytest.approx(np.abs(np.roots([1.0, -a1, -a2])).max())
    assert table["stationary_mean"][0][0] == pytest.approx(1.0 / (1.0 - 0.8))


def test_segments_tile_the_viterbi_path():
    model = _hmm()
    X, _ = model.sample(300, random_state=0)
    path = model.predict(X)
    table = model.segment(X)
    assert table["start"].iloc[0] == 0 and table["end"].iloc[-1] == 300
    np.testing.assert_array_equal(np.repeat(table["mode"], table["end"] - table["start"]), path)
    assert (table["mode"].to_numpy()[1:] != table["mode"].to_numpy()[:-1]).all()
    posteriors = model.predict_proba(X)
    start, end, mode, probability = table.iloc[0]
    assert probability == pytest.approx(posteriors[int(start) : int(end), int(mode)].mean())


def test_segments_of_several_sequences():
    model = _hmm()
    X, _ = model.sample(300, random_state=1)
    table = model.segment([X[:100], X[100:]])
    assert set(table["sequence"]) == {0, 1}
    assert table.groupby("sequence")["end"].max().tolist() == [100, 200]
