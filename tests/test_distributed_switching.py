"""Markov switching over a Dask cluster: the fit equals the one in memory (EM's statistics, the
series' variances and the polish's log-likelihood and gradient summed over the partitions); a
symbol model's n_states="auto" there, its vocabulary agreed over the partitions first; and
selection="prune" there, its occupancies summed over the partitions."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")

from test_distributed import _by_groups, _event_log, _fit, _received  # noqa: E402  (frames, log, quiet fit, bytes)

from modeshift import HMM, MarkovAutoregression, MarkovRegression, SwitchingLDS, SymbolHMM  # noqa: E402
from modeshift import distributed as msd  # noqa: E402
from modeshift.models.base import NotFittedError  # noqa: E402

RTOL = 1e-10
SCRAMBLED = [[3, 0, 5], [1, 2], [4]]


def _frame(n_sequences: int = 6, seed: int = 0, missing: float = 0.0) -> pd.DataFrame:
    """Long-format data: a two-regime switching regression on x with an AR(1) error, regimes
    persistent where z is high; sequences of unequal length, a share of ``missing`` values."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_sequences):
        n = 60 + 9 * s
        x, z = rng.normal(size=n), np.sin(np.arange(n) / 7.0 + s)
        regime, y, error = np.zeros(n, dtype=int), np.zeros(n), 0.0
        for t in range(n):
            stay = 0.95 if z[t] > 0 else 0.8
            regime[t] = regime[t - 1] if t and rng.random() < stay else rng.integers(2)
            error = 0.4 * error + rng.normal() * (0.5 if regime[t] else 1.0)
            y[t] = (3.0 if regime[t] else -1.0) + (0.5 if regime[t] else -0.5) * x[t] + error
        y[rng.random(n) < missing] = np.nan
        rows.append(pd.DataFrame({"id": s, "t": np.arange(n), "y": y, "x": x, "one": 1.0, "z": z}))
    return pd.concat(rows, ignore_index=True)


def _assert_same(a, b, rtol=RTOL):
    np.testing.assert_allclose(a.history_, b.history_, rtol=RTOL)
    assert a.converged_ == b.converged_ and a.n_iter_ == b.n_iter_
    names = ["transmat_", "transition_coef_", "trend_", "exog_coef_", "variances_", "ar_coef_"]
    for name in [name for name in names if name in a.__dict__]:
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=rtol, atol=1e-12, err_msg=name)
    np.testing.assert_allclose(a.log_likelihood_, b.log_likelihood_, rtol=rtol)


def _started(model, frame, **columns):
    """``model`` fit for 0 iterations (its starting values), ready to go on by warm start."""
    start = _fit(model.set_params(n_iter=0), frame, **columns)
    return start.set_params(n_iter=8, tol=0.0, warm_start=True)


COLUMNS = {"time_column": "t", "columns": ["y"], "input_columns": ["x"]}


def test_a_regression_with_missing_values_over_a_cluster_equals_the_fit_in_memory(client):
    frame = _frame(missing=0.05)
    model = MarkovRegression(2, switching_variance=True, n_restarts=1, n_iter_polish=0, random_state=0)
    start = _started(model, frame, **COLUMNS)
    here = _fit(copy.deepcopy(start), frame, **COLUMNS)
    there = _fit(copy.deepcopy(start), _by_groups(frame, SCRAMBLED), **COLUMNS)
    _assert_same(here, there)
    # the summed observed information: finite differences (step 1e-5) of the summed gradient
    np.testing.assert_allclose(here.standard_errors_, there.standard_errors_, rtol=1e-8)
    assert "smoothed_probabilities_" in here.__dict__ and "smoothed_probabilities_" not in there.__dict__
    with pytest.raises(NotFittedError, match="fitted over a cluster"):
        there.bic()


def test_an_autoregression_with_restarts_and_its_polish_over_a_cluster(client):
    frame = _frame()
    make = lambda: MarkovAutoregression(2, order=2, n_restarts=3, n_iter=10, random_state=1)  # noqa: E731
    columns = {"time_column": "t", "columns": ["y"]}
    here = _fit(make(), frame, **columns)
    there = _fit(make(), _by_groups(frame, [[0, 1, 2], [3, 4], [5]]), **columns)  # the sample: all, in order
    _assert_same(here, there)  # the polish climbs the same path
    np.testing.assert_allclose(here.summary(), there.summary(), rtol=1e-10)  # estimates and standard errors


def test_time_varying_transitions_over_a_cluster_equal_the_fit_in_memory(client):
    frame = _frame()
    columns = {**COLUMNS, "exog_tvtp": ["one", "z"]}
    model = MarkovRegression(2, n_restarts=1, n_iter_polish=0, random_state=0)
    start = _started(model, frame, **columns)
    here = _fit(copy.deepcopy(start), frame, **columns)
    there = _fit(copy.deepcopy(start), _by_groups(frame, SCRAMBLED), **columns)
    _assert_same(here, there)
    assert there.transition_coef_.shape == (2, 1, 2)
    ordered = frame.sort_values(["id", "t"])  # the columns named, or the arrays given: the same fit
    arrays = _fit(
        copy.deepcopy(start),
        [group.y.to_numpy() for _, group in ordered.groupby("id")],
        exog=[group[["x"]].to_numpy() for _, group in ordered.groupby("id")],
        exog_tvtp=[group[["one", "z"]].to_numpy() for _, group in ordered.groupby("id")],
    )
    _assert_same(here, arrays)


def test_time_varying_transitions_keep_their_rows_on_the_workers(client, monkeypatch):
    """The logit M-step's rows stay on the shards: what the client receives does not grow with the data."""
    largest = []
    for n_sequences in (6, 24):
        frame = _frame(n_sequences)
        received = _received(monkeypatch)
        groups = [list(range(i, n_sequences, 3)) for i in range(3)]
        model = MarkovAutoregression(2, order=1, n_restarts=1, n_iter=3, n_iter_polish=2, random_state=0)
        _fit(model, _by_groups(frame, groups), time_column="t", columns=["y"], exog_tvtp=["one", "z"])
        assert model.transition_coef_.shape == (2, 1, 2)
        assert len(received) > 2 * model.n_iter_  # the E-steps, and the logit M-steps' passes
        largest.append(max(received))
    assert largest[0] == largest[1] < 4096 < _frame(6)[["y", "one", "z"]].to_numpy().nbytes


def test_input_driven_transitions_keep_their_rows_on_the_workers_and_equal_the_fit_in_memory(client, monkeypatch):
    frame = _frame()
    columns = {"time_column": "t", "columns": ["y"], "input_columns": ["z"]}
    for slopes in ("shared", "per_source"):
        start = _fit(HMM(2, input_dim=1, input_slopes=slopes, n_iter=0, random_state=0), frame, **columns)
        start.set_params(n_iter=4, tol=0.0, warm_start=True)
        here = _fit(copy.deepcopy(start), frame, **columns)
        received = _received(monkeypatch)
        there = _fit(copy.deepcopy(start), _by_groups(frame, SCRAMBLED), **columns)
        np.testing.assert_allclose(here.history_, there.history_, rtol=RTOL)
        for name in here.parameter_names:
            np.testing.assert_allclose(getattr(here, name), getattr(there, name), rtol=RTOL, atol=1e-12, err_msg=name)
        assert max(received) < 4096 < frame[["y", "z"]].to_numpy().nbytes  # sums, never the rows


def test_a_fit_from_a_sample_of_large_data_records_the_whole_data(client, monkeypatch):
    frame = _frame(missing=0.05)
    monkeypatch.setattr(msd, "SAMPLE_STEPS", 200)  # starts from every 3rd sequence of each partition
    model = _fit(MarkovRegression(2, switching_variance=True, random_state=0), _by_groups(frame, SCRAMBLED), **COLUMNS)
    seqs = model.schema_.read(frame[["id", "t", "y", "x"]])
    assert model.log_likelihood_ == pytest.approx(model.score(seqs), rel=1e-10)  # summed over all, not the sample
    assert model.gradient_norm_ < 1e-5 and np.isfinite(model.standard_errors_).all()


def test_the_client_receives_sums_not_data(client, monkeypatch):
    frame = _frame(24)
    received = _received(monkeypatch)
    groups = [list(range(i, i + 4)) for i in range(0, 24, 4)]
    model = MarkovAutoregression(2, order=2, n_restarts=1, n_iter=3, n_iter_polish=2, random_state=0)
    _fit(model, _by_groups(frame, groups), time_column="t", columns=["y"])
    data_bytes = frame[["y"]].to_numpy().nbytes
    assert len(received) > model.n_iter_  # the variances, the E-steps, the polish's gradients
    assert max(received) < 4096 < data_bytes / 4  # the lagged moments of 8 expanded states: kilobytes


def test_per_step_probabilities_map_over_the_partitions(client):
    frame = _frame()
    model = _fit(MarkovRegression(2, n_restarts=2, random_state=0), _by_groups(frame, SCRAMBLED), **COLUMNS)
    seqs = model.schema_.read(frame)
    proba = model.predict_proba(_by_groups(frame, SCRAMBLED)).compute().sort_values(["id", "t"])
    np.testing.assert_allclose(proba[["p_0", "p_1"]], model.predict_proba(seqs), rtol=1e-10)
    assert model.score(_by_groups(frame, SCRAMBLED)).compute() == pytest.approx(model.log_likelihood_, rel=1e-10)


def test_a_model_with_time_varying_transitions_decodes_and_scores_a_frame_by_its_schema(client):
    """Its schema reads the exog_tvtp columns after the exog ones: over a frame's partitions as in memory."""
    frame = _frame()
    columns = {**COLUMNS, "exog_tvtp": ["one", "z"]}
    model = _fit(MarkovRegression(2, n_restarts=1, n_iter=5, random_state=0), _by_groups(frame, SCRAMBLED), **columns)
    shuffled = frame.sample(frac=1.0, random_state=0)  # rows out of order: results follow the frame's rows
    seqs = model.schema_.read(shuffled)
    data = _by_groups(shuffled, SCRAMBLED)
    ordered = shuffled.sort_values(["id", "t"])
    as_arrays = {
        "y": [group.y.to_numpy() for _, group in ordered.groupby("id")],
        "exog": [group[["x"]].to_numpy() for _, group in ordered.groupby("id")],
        "exog_tvtp": [group[["one", "z"]].to_numpy() for _, group in ordered.groupby("id")],
    }
    assert model.score(seqs) == pytest.approx(model.score(**as_arrays), rel=1e-12)
    assert model.score(data).compute() == pytest.approx(model.score(seqs), rel=1e-10)
    modes = model.predict(data).compute().loc[shuffled.index, "mode"]
    np.testing.assert_array_equal(modes, model.predict(seqs))
    proba = model.predict_proba(data).compute().loc[shuffled.index, ["p_0", "p_1"]]
    np.testing.assert_allclose(proba, model.predict_proba(seqs), rtol=1e-10)
    runs = model.segment(data).compute().sort_values(["id", "start"]).reset_index(drop=True)
    expected = model.segment(seqs)
    expected["id"] = np.asarray(seqs.ids)[expected.pop("sequence")]  # the sequences in their order of appearance
    expected = expected.sort_values(["id", "start"]).reset_index(drop=True)
    np.testing.assert_array_equal(runs[["id", "start", "end", "mode"]], expected[["id", "start", "end", "mode"]])
    np.testing.assert_allclose(runs["probability"], expected["probability"], rtol=1e-10)


def test_an_autoregression_decodes_the_rows_after_its_order_over_the_partitions(client):
    """Its per-step results leave out the first ``order`` steps of each sequence: so do the rows."""
    frame = _frame()[["id", "t", "y"]]
    model = MarkovAutoregression(2, order=2, n_restarts=1, n_iter=5, n_iter_polish=0, random_state=0)
    model = _fit(model, frame, time_column="t", columns=["y"])
    shuffled = frame.sample(frac=1.0, random_state=1)
    seqs = model.schema_.read(shuffled)
    after = shuffled.index[shuffled.t >= 2]  # the rows with results, in the frame's order
    modes = model.predict(_by_groups(shuffled, SCRAMBLED)).compute()
    assert sorted(modes.index) == sorted(after)
    np.testing.assert_array_equal(modes.loc[after, "mode"], model.predict(seqs))
    proba = model.predict_proba(_by_groups(shuffled, SCRAMBLED)).compute()
    np.testing.assert_allclose(proba.loc[after, ["p_0", "p_1"]], model.predict_proba(seqs), rtol=1e-10)


@pytest.mark.parametrize("unknown", ["error", "ignore"])
def test_a_symbol_model_chooses_its_number_of_states_over_a_cluster_as_in_memory(client, unknown):
    log = _event_log()
    groups = [[f"c{i}" for i in group] for group in ([5, 2, 9], [0, 1, 3, 4, 6], [7, 8, 10, 11, 12, 13, 14, 15])]
    data = dd.concat([dd.from_pandas(log[log.case_id.isin(g)], npartitions=1) for g in groups])
    ordered = data.compute()  # the same events in the same order: the vocabulary follows first appearance
    make = lambda: SymbolHMM("auto", max_states=3, n_iter=8, tol=0.0, unknown=unknown, random_state=0)  # noqa: E731
    here = _fit(make(), ordered)
    there = _fit(make(), data, id_column="case_id")  # every candidate reads the vocabulary agreed first
    assert there.vocabulary_ == here.vocabulary_ and there.n_states_ == here.n_states_
    columns = ["n_states", "log_likelihood", "n_parameters", "aic", "bic"]
    np.testing.assert_allclose(there.selection_[columns], here.selection_[columns], rtol=RTOL)
    assert there.selection_["chosen"].tolist() == here.selection_["chosen"].tolist()
    np.testing.assert_allclose(here.history_, there.history_, rtol=RTOL)
    for name in ("startprob_", "transmat_", "emissionprob_"):
        np.testing.assert_allclose(getattr(here, name), getattr(there, name), rtol=RTOL, atol=1e-12, err_msg=name)


@pytest.mark.slow  # numba compiles the variational inference on every worker first
def test_pruning_runs_over_a_cluster_and_scores_there_as_in_memory(client):
    frame = _frame(4)
    make = lambda: SwitchingLDS("auto", state_dim=1, max_states=3, selection="prune", n_iter=4, random_state=0)  # noqa: E731
    columns = {"time_column": "t", "columns": ["y", "x"]}
    frame = frame[["id", "t", "y", "x"]]
    model = _fit(make(), _by_groups(frame, [[2, 0], [1, 3]]), **columns)
    table = model.selection_
    assert table["n_states"].tolist() == [3, 2, 1] and table["start"].tolist()[0] == "scratch"
    assert set(table["start"]) <= {"scratch", "pruned"} and table["chosen"].sum() == 1
    chosen = table.loc[table["chosen"]].iloc[0]  # its row, computed on the cluster, is the model's in memory
    seqs = model.schema_.read(frame)
    assert chosen["elbo"] == pytest.approx(model.elbo(seqs), rel=1e-10)
    occupancy = np.asarray(model.predict_proba(seqs)).mean(axis=0)  # the frame's steps: one array
    # inference runs sequence by sequence (its start, its sweeps), so the shards' is the in-memory one
    assert chosen["smallest_occupancy"] == pytest.approx(occupancy.min(), rel=1e-10)
    assert chosen["vanished"] == (occupancy < 0.01).sum()
