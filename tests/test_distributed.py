"""modeshift.distributed: fits over a Dask cluster equal the in-memory fits, survive a lost worker,
and bring the client statistics, never data."""

from __future__ import annotations

import copy
import json
import os
import threading
import warnings

import numpy as np
import pandas as pd
import pytest

dd = pytest.importorskip("dask.dataframe")
db = pytest.importorskip("dask.bag")
distributed = pytest.importorskip("distributed")

from modeshift import (  # noqa: E402
    ARHMM,
    HMM,
    HSMM,
    ContinuousSwitchingLDS,
    LinearGaussianSSM,
    MarkovChain,
    MarkovChainMixture,
    StructuralModel,
    SwitchingLDS,
    SymbolHMM,
    VariableOrderChain,
)
from modeshift import distributed as msd  # noqa: E402
from modeshift.models.em import ConvergenceWarning  # noqa: E402

RTOL = 1e-10


def _frame(n_sequences: int = 12, seed: int = 0) -> pd.DataFrame:
    """Long-format data: two regimes of a noisy AR(1) in two features, sequences of unequal length."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_sequences):
        length = 40 + 7 * s
        z = np.cumsum(rng.random(length) < 0.1) % 2
        x = np.zeros((length, 2))
        for t in range(1, length):
            x[t] = 0.6 * x[t - 1] + np.where(z[t], 2.0, -1.0) + rng.normal(size=2)
        rows.append(pd.DataFrame({"id": s, "t": np.arange(length), "a": x[:, 0], "b": x[:, 1]}))
    return pd.concat(rows, ignore_index=True)


def _by_groups(frame: pd.DataFrame, groups: list[list[int]]):
    """A Dask frame whose partitions hold the sequences of each group of ids."""
    return dd.concat([dd.from_pandas(frame[frame.id.isin(g)], npartitions=1) for g in groups])


def _started(model, frame):
    """``model`` fit for 0 iterations (its starting values), ready to go on by warm start."""
    start = model.set_params(n_iter=0).fit(frame, time_column="t")
    return start.set_params(n_iter=6, tol=0.0, warm_start=True)


def _fit(model, data, **columns):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(data, **columns)


def _assert_same(a, b):
    np.testing.assert_allclose(a.history_, b.history_, rtol=RTOL)
    for name in a.parameter_names:
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=RTOL, atol=1e-12, err_msg=name)


MODELS = {
    "hmm": lambda: HMM(2, covariance="full", random_state=0),
    "arhmm": lambda: ARHMM(2, order=1, random_state=0),
    "arhmm-robust-resets": lambda: ARHMM(2, order=1, resets="destination", reset_dof=4.0, random_state=0),
    "lds": lambda: LinearGaussianSSM(state_dim=1, n_iter_polish=5),
}


ONE_PARTITION, THREE_PARTITIONS = [list(range(12))], [[3, 0, 7], [1, 2], [4, 5, 6, 8, 9, 10, 11]]


@pytest.mark.parametrize(
    "groups, kind",
    [  # one partition is the same sharding whatever the model: the HMM's fit checks it by default
        *(
            pytest.param(ONE_PARTITION, kind, id=f"groups0-{kind}", marks=() if kind == "hmm" else pytest.mark.slow)
            for kind in MODELS
        ),
        *(pytest.param(THREE_PARTITIONS, kind, id=f"groups1-{kind}") for kind in MODELS),
    ],
)
def test_fit_over_a_cluster_equals_the_fit_in_memory(client, kind, groups):
    frame = _frame()
    start = _started(MODELS[kind](), frame)
    here = _fit(copy.deepcopy(start), frame, time_column="t")
    there = _fit(copy.deepcopy(start), _by_groups(frame, groups), time_column="t")
    assert there.n_iter_ == here.n_iter_ > 1
    _assert_same(here, there)
    if len(groups) > 1:  # read again at every pass, not kept: the same fit
        _assert_same(here, _fit(copy.deepcopy(start), _by_groups(frame, groups), time_column="t", persist=False))


@pytest.mark.parametrize("robust", [False, True])
def test_a_switching_lds_keeps_its_posteriors_on_the_workers_and_equals_the_fit_in_memory(client, robust):
    """(``robust``: with Student-t resets, whose q(s) is carried there too.)"""
    frame = _frame(8)
    resets = {"resets": "destination", "reset_dof": 4.0} if robust else {}
    start = _started(SwitchingLDS(2, state_dim=1, random_state=0, tol=0.0, **resets), frame)
    here = _fit(copy.deepcopy(start), frame, time_column="t")
    there = _fit(copy.deepcopy(start), _by_groups(frame, [[2, 0], [1, 3, 4], [5, 6, 7]]), time_column="t")
    _assert_same(here, there)  # each shard's q(x) q(z) carried from one sweep to the next, where it lies
    np.testing.assert_allclose(here.dwell_times_, there.dwell_times_, rtol=RTOL)


def _received(monkeypatch) -> list[int]:
    """The bytes each pass over the shards brings to the client, from now on."""
    received: list[int] = []
    original = msd.Shards.__call__

    def counting(self, function, model, workspace=None):
        total = original(self, function, model, workspace)
        received.append(self.received[-1])
        return total

    monkeypatch.setattr(msd.Shards, "__call__", counting)
    return received


def test_a_recurrent_switching_lds_keeps_its_guards_rows_on_the_workers_and_equals_the_fit_in_memory(
    client, monkeypatch
):
    """The guards' logistic regression reads sums over the rows kept on the shards: the same fit,
    and what the client receives does not grow with the data."""
    largest = []
    for n_sequences in (6, 12):
        frame = _frame(n_sequences)
        start = _started(SwitchingLDS(2, state_dim=1, recurrent=True, random_state=0, tol=0.0), frame)
        here = _fit(copy.deepcopy(start), frame, time_column="t")
        received = _received(monkeypatch)
        groups = [list(range(1, n_sequences, 2)), list(range(0, n_sequences, 2))]
        there = _fit(copy.deepcopy(start), _by_groups(frame, groups), time_column="t")
        _assert_same(here, there)
        assert len(received) > 2 * there.n_iter_  # the E-steps, and the guards' Newton passes
        largest.append(max(received))
    assert largest[0] == largest[1] < 4096 < _frame(6)[["a", "b"]].to_numpy().nbytes


@pytest.mark.parametrize(
    "make",
    [lambda: HMM(2, covariance="full", random_state=0, n_iter=5), lambda: HSMM(2, random_state=0, n_iter=5)],
    ids=["hmm", "hsmm"],
)
def test_starting_values_come_from_every_partition(client, make):
    frame = _frame(8)
    here = _fit(make(), frame, time_column="t")  # k-means and, for the HSMM, max_duration_ from all the data
    there = _fit(make(), _by_groups(frame, [[0, 1, 2], [3, 4], [5, 6, 7]]), time_column="t")
    _assert_same(here, there)  # small data: the sample is all of it, in partition order
    if isinstance(here, HSMM):
        assert there.max_duration_ == here.max_duration_


def test_restarts_and_the_candidates_of_auto_run_at_once_and_pick_as_in_memory(client):
    frame = _frame(8)
    data = _by_groups(frame, [[0, 1, 2, 3], [4, 5, 6, 7]])
    make = lambda: HMM(2, n_restarts=3, n_iter=4, random_state=1)  # noqa: E731
    here, there = _fit(make(), frame, time_column="t"), _fit(make(), data, time_column="t")
    _assert_same(here, there)  # the same starts (drawn in turn from one generator), the same winner
    auto = lambda: HMM("auto", max_states=3, n_iter=4, random_state=0)  # noqa: E731
    here, there = _fit(auto(), frame, time_column="t"), _fit(auto(), data, time_column="t")
    assert there.n_states_ == here.n_states_
    _assert_same(here, there)
    columns = ["n_states", "log_likelihood", "n_parameters", "aic", "bic"]
    np.testing.assert_allclose(there.selection_[columns], here.selection_[columns], rtol=1e-10)
    assert there.selection_["chosen"].tolist() == here.selection_["chosen"].tolist()


def test_a_large_data_set_is_sampled_from_every_partition(client):
    frame = _frame(12)
    columns = {"time_column": "t"}
    source = msd._source(_by_groups(frame, [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]), columns)
    shards = msd.Shards.of(HMM(2), source, client, columns)
    assert shards.sample().n_sequences == 12  # small data: all of them
    sample = shards.sample(max_steps=frame.shape[0] // 3)  # every 3rd sequence of each partition
    assert list(sample.ids) == [0, 3, 4, 7, 8, 11]
    np.testing.assert_array_equal(sample[1], frame.loc[frame.id == 3, ["a", "b"]].to_numpy())


def test_the_first_pass_reads_each_partition_in_the_task_that_converts_it(tmp_path):
    """No raw partition is a task's result, held on a worker until its conversion runs (as
    dependencies, Dask ran a worker's reads first: here all 8 held at once)."""
    frame = _frame(16)
    for i in range(8):
        frame[frame.id // 2 == i].to_parquet(tmp_path / f"part{i}.parquet")
    columns = {"time_column": "t"}
    with (
        distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
        distributed.get_task_stream(client) as stream,
    ):
        shards = msd.Shards.of(HMM(2), msd._source(dd.read_parquet(tmp_path), columns), client, columns)
        held = client.gather(shards.shards)
    names = [str(task["key"]) for task in stream.data]
    assert sum(name.startswith("_checked") for name in names) == 8
    assert not [name for name in names if "parquet" in name], names
    assert np.concatenate([shard.values for shard in held]).shape == (frame.shape[0], 2)


def test_partitions_that_share_no_work_are_read_in_the_tasks_that_take_them(client):
    """Parquet files and frames in memory: each partition's own tasks, read alone to the same frame;
    a shuffle's partitions all need the shuffle, a persisted frame's are on the workers: left to
    Dask (which fits the persisted frame as the frame)."""
    frame = _frame(6)
    parts = list(_by_groups(frame, [[0, 1], [2, 3, 4], [5]]).to_delayed())
    own = msd._own_reads(parts)
    assert all(isinstance(part, msd._Partition) for part in own)
    for part, alone in zip(parts, own):
        pd.testing.assert_frame_equal(alone.read(), part.compute())
    shuffled = list(_by_groups(frame, [[0, 1], [2, 3, 4], [5]]).shuffle(on="id", npartitions=2).to_delayed())
    assert msd._own_reads(shuffled) is shuffled
    persisted = _by_groups(frame, [[0, 1], [2, 3, 4], [5]]).persist()
    parts = list(persisted.to_delayed())
    assert msd._own_reads(parts) is parts
    start = _started(HMM(2, random_state=0), frame)
    _assert_same(_fit(copy.deepcopy(start), frame, time_column="t"), _fit(start, persisted, time_column="t"))


def test_a_pass_is_one_task_per_worker_over_the_partitions_kept_there(client):
    frame = _frame(12)
    columns = {"time_column": "t"}
    source = msd._source(_by_groups(frame, [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9, 10, 11]]), columns)
    shards = msd.Shards.of(HMM(2), source, client, columns)
    first, second = sorted(client.scheduler_info()["workers"])
    assert shards.groups == [([0, 1, 2], first), ([3, 4], second)]  # partition i on worker 2 i / 5, in order
    held = client.who_has(shards.shards)
    assert [list(held[shard.key]) for shard in shards.shards] == [[first]] * 3 + [[second]] * 2
    model = HMM(2, n_iter=2, random_state=0)
    _fit(model, frame, **columns)
    with distributed.get_task_stream(client) as stream:
        total = shards(msd._measure_terms, model)
    names = sorted(task["key"].split("-")[0] for task in stream.data)
    assert names == ["_summed", "_summed", "combine"]  # the model inside each worker's task: nothing scattered
    assert total == pytest.approx((model.score(model.schema_.read(frame)), frame.shape[0]), rel=1e-10)


def test_input_driven_transitions_stack_their_rows_over_the_cluster(client):
    frame = _frame(6)
    frame["u"] = np.sin(frame["t"] / 5.0)
    start = HMM(2, input_dim=1, random_state=0, n_iter=0).fit(
        frame, time_column="t", columns=["a", "b"], input_columns=["u"]
    )
    start.set_params(n_iter=4, tol=0.0, warm_start=True)
    here = _fit(copy.deepcopy(start), frame, time_column="t", columns=["a", "b"], input_columns=["u"])
    data = _by_groups(frame, [[0, 1], [2, 3, 4, 5]])
    there = _fit(copy.deepcopy(start), data, time_column="t", columns=["a", "b"], input_columns=["u"])
    _assert_same(here, there)  # the M-step's logistic regression reads the stacked rows of all partitions


def _event_log(n_cases: int = 16, seed: int = 1) -> pd.DataFrame:
    """Cases of a small process: symbols from a two-state chain, cases of varying length."""
    rng = np.random.default_rng(seed)
    rows = []
    for case in range(n_cases):
        state, steps = 0, []
        for _ in range(5 + case % 7):
            steps.append("ABC"[rng.integers(2)] if state == 0 else "CDE"[rng.integers(3)])
            state = state if rng.random() < 0.8 else 1 - state
        rows += [{"case_id": f"c{case}", "activity": a, "timestamp": t} for t, a in enumerate(steps)]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("unknown", ["error", "map"])
def test_a_symbol_model_over_a_cluster_equals_the_fit_in_memory(client, unknown):
    log = _event_log()
    groups = [[f"c{i}" for i in group] for group in ([5, 2, 9], [0, 1, 3, 4, 6], [7, 8, 10, 11, 12, 13, 14, 15])]
    data = dd.concat([dd.from_pandas(log[log.case_id.isin(g)], npartitions=1) for g in groups])
    ordered = data.compute()  # the same events in the same order: the vocabulary follows first appearance
    initial = SymbolHMM(2, random_state=0, n_iter=0).fit(ordered)
    start = SymbolHMM(2, unknown=unknown, n_iter=6, tol=0.0)  # set by hand: the first start
    for name in ("startprob_", "transmat_", "emissionprob_"):
        setattr(start, name, getattr(initial, name))
    here = _fit(copy.deepcopy(start), ordered)
    there = _fit(copy.deepcopy(start), data, id_column="case_id")  # learns the vocabulary over the partitions
    assert there.vocabulary_ == here.vocabulary_ == initial.vocabulary_
    np.testing.assert_allclose(here.history_, there.history_, rtol=RTOL)
    for name in ("startprob_", "transmat_", "emissionprob_"):
        np.testing.assert_allclose(getattr(here, name), getattr(there, name), rtol=RTOL, atol=1e-12, err_msg=name)


def test_chains_and_a_chain_mixture_count_over_the_cluster_as_in_memory(client):
    log = _event_log()
    groups = [[f"c{i}" for i in group] for group in ([5, 2, 9], [0, 1, 3, 4, 6], [7, 8, 10, 11, 12, 13, 14, 15])]
    data = dd.concat([dd.from_pandas(log[log.case_id.isin(g)], npartitions=1) for g in groups])
    ordered = data.compute()
    for make in (lambda: MarkovChain(order=2), lambda: VariableOrderChain(max_order=2)):
        here, there = make().fit(ordered), make().fit(data, id_column="case_id")
        assert there.vocabulary_ == here.vocabulary_
        np.testing.assert_array_equal(there.context_keys_, here.context_keys_)
        np.testing.assert_array_equal(there.counts_.toarray(), here.counts_.toarray())
        assert there.predict_next(["A", "C"], k=3) == here.predict_next(["A", "C"], k=3)
    make = lambda: MarkovChainMixture(2, n_restarts=2, n_iter=5, tol=0.0, random_state=0)  # noqa: E731
    here, there = _fit(make(), ordered), _fit(make(), data, id_column="case_id")  # all the data: the same starts
    assert there.states_ == here.states_
    np.testing.assert_allclose(here.history_, there.history_, rtol=RTOL)
    for name in ("weights_", "startprob_", "transmat_"):
        np.testing.assert_allclose(getattr(here, name), getattr(there, name), rtol=RTOL, atol=1e-12, err_msg=name)


def test_a_frame_that_splits_sequences_is_shuffled_by_id_when_a_time_column_orders_it(client):
    frame = _frame(6)
    start = _started(HMM(2, random_state=0), frame)
    here = _fit(copy.deepcopy(start), frame, time_column="t")
    split = dd.from_pandas(frame, npartitions=4)  # cuts through sequences
    there = _fit(copy.deepcopy(start), split, time_column="t")
    _assert_same(here, there)
    with pytest.raises(ValueError, match="several partitions"):
        copy.deepcopy(start).fit(split, time_column=None)


def test_a_bag_of_sequences_and_a_parquet_path(client, tmp_path):
    frame = _frame(6)
    arrays = [group[["a", "b"]].to_numpy() for _, group in frame.groupby("id")]
    start = _started(HMM(2, random_state=0), frame)
    here = _fit(copy.deepcopy(start), arrays)
    there = _fit(copy.deepcopy(start), db.from_sequence(arrays, npartitions=3))
    _assert_same(here, there)
    _by_groups(frame, [[0, 1], [2, 3, 4, 5]]).to_parquet(tmp_path / "data")
    from_disk = _fit(copy.deepcopy(start), str(tmp_path / "data"), client=client, time_column="t")
    _assert_same(here, from_disk)


def _exit_soon() -> None:
    """End this worker process abruptly, a moment after answering (so during the next E-step)."""
    threading.Timer(0.05, os._exit, (1,)).start()


def test_a_worker_killed_during_the_fit_costs_a_retry_not_the_fit(client):
    frame = _frame()
    start = _started(HMM(2, covariance="full", random_state=0), frame)
    here = _fit(copy.deepcopy(start), frame, time_column="t")
    killed = []

    def kill_one_worker(iteration, value):
        if iteration == 2:
            address = sorted(client.scheduler_info()["workers"])[0]
            client.run(_exit_soon, workers=[address])
            killed.append(address)

    model = copy.deepcopy(start).set_params(callback=kill_one_worker)
    there = _fit(model, _by_groups(frame, [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]), time_column="t")
    assert killed
    _assert_same(here, there)
    client.wait_for_workers(2, timeout=180)  # a restarted worker process: slow on a loaded machine


@pytest.mark.parametrize("recurrent", [pytest.param(False, marks=pytest.mark.slow), True])
def test_a_switching_lds_that_loses_a_worker_recomputes_its_posteriors_and_the_fit_is_the_same(client, recurrent):
    """Killed after an E-step, as the M-step begins: a recurrent model may also lose the guards'
    rows kept there, which its M-step's passes then compute again. (The recurrent model recomputes
    the posteriors as the Markov one does, and the guards' rows besides: the Markov case is slow.)"""
    frame = _frame(8)
    start = _started(SwitchingLDS(2, state_dim=1, recurrent=recurrent, random_state=0, tol=0.0), frame)
    killed = []

    def kill_one_worker(iteration, value):
        if iteration == 2:
            address = sorted(client.scheduler_info()["workers"])[0]
            client.run(_exit_soon, workers=[address])
            killed.append(address)

    model = copy.deepcopy(start).set_params(callback=kill_one_worker)
    there = _fit(model, _by_groups(frame, [[0, 1, 2], [3, 4, 5], [6, 7]]), time_column="t")
    assert killed
    here = _fit(copy.deepcopy(start), frame, time_column="t")  # the lost q(x) q(z) redone from their sweeps
    _assert_same(here, there)
    client.wait_for_workers(2, timeout=180)  # a restarted worker process: slow on a loaded machine


def test_the_client_receives_statistics_not_data(client, monkeypatch):
    frame = _frame(24)
    calls = _received(monkeypatch)
    groups = [list(range(i, i + 4)) for i in range(0, 24, 4)]
    model = _fit(HMM(2, n_iter=3, random_state=0), _by_groups(frame, groups), time_column="t")
    data_bytes = frame[["a", "b"]].to_numpy().nbytes
    assert len(calls) == model.n_iter_
    assert max(calls) < 4096 < data_bytes / 10  # one E-step's sum: the size of the parameters


def test_decoding_and_scoring_map_over_partitions(client):
    frame = _frame(6)
    model = _fit(HMM(2, n_iter=5, random_state=0), frame, time_column="t")
    seqs = model.schema_.read(frame)  # the fitted model reads new frames by its schema, here and on the workers
    data = _by_groups(frame, [[0, 1], [2, 3, 4, 5]])
    assert model.score(data).compute() == pytest.approx(model.score(seqs), rel=1e-12)
    states = model.predict(data).compute().sort_values(["id", "t"])
    np.testing.assert_array_equal(states["mode"], model.predict(seqs))
    proba = model.predict_proba(data).compute().sort_values(["id", "t"])
    np.testing.assert_allclose(proba[["p_0", "p_1"]], model.predict_proba(seqs), rtol=1e-10)
    runs = model.segment(data).compute()
    here = model.segment(seqs)
    assert runs[["start", "end", "mode"]].to_numpy().tolist() == here[["start", "end", "mode"]].to_numpy().tolist()
    assert runs["id"].tolist() == here["sequence"].tolist()


def test_decoding_and_scoring_a_frame_that_splits_sequences_shuffles_it_by_id(client):
    frame = _frame(6)
    model = _fit(HMM(2, n_iter=5, random_state=0), frame, time_column="t")
    seqs = model.schema_.read(frame)
    split = dd.from_pandas(frame, npartitions=4)  # cuts through sequences: each must still be one
    assert split.npartitions == 4
    assert model.score(split).compute() == pytest.approx(model.score(seqs), rel=1e-12)
    states = model.predict(split).compute().sort_values(["id", "t"])
    np.testing.assert_array_equal(states["mode"], model.predict(seqs))
    runs = model.segment(split).compute().sort_values(["id", "start"])
    here = model.segment(seqs)
    assert (
        runs[["id", "start", "end", "mode"]].to_numpy().tolist()
        == here[["sequence", "start", "end", "mode"]].to_numpy().tolist()
    )
    with pytest.raises(ValueError, match="several partitions"):  # nothing orders the rows: no shuffle
        model.score(split, time_column=None)


def test_a_fit_from_given_parameters_samples_one_sequence_of_each_partition(client, monkeypatch):
    frame = _frame(12)
    start = _started(HMM(2, random_state=0), frame)
    sampled = []
    original = msd.Shards.sample

    def recording(self, max_steps=None):
        sample = original(self, max_steps)
        sampled.append(sample.n_sequences)
        return sample

    monkeypatch.setattr(msd.Shards, "sample", recording)
    data = _by_groups(frame, [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]])
    _assert_same(_fit(copy.deepcopy(start), frame, time_column="t"), _fit(start, data, time_column="t"))
    _fit(HMM(2, random_state=0, n_iter=2), data, time_column="t")  # starts from the data: all of it
    assert sampled == [3, 12]


def test_fit_dataset_reports_the_fitted_models_log_likelihood(client, tmp_path):
    frame = _frame(6)
    _by_groups(frame, [[0, 1, 2], [3, 4, 5]]).to_parquet(tmp_path / "frame")
    cluster = {"scheduler": client.scheduler.address, "time_column": "t"}
    model = ARHMM(2, order=1, random_state=0, n_iter=3)  # summed over the kept shards, by the E-step
    summary = _fit_dataset(model, tmp_path / "frame", **cluster)
    assert summary["log_likelihood"] == pytest.approx(model.score(model.schema_.read(frame)), rel=1e-10)
    log = _event_log()
    dd.from_pandas(log, npartitions=1).to_parquet(tmp_path / "log")
    model = SymbolHMM(2, random_state=0, n_iter=3)  # scored on its shards as coded for EM (_selection_terms)
    options = {"scheduler": client.scheduler.address, "id_column": "case_id", "time_column": "timestamp"}
    summary = _fit_dataset(model, tmp_path / "log", **options)
    assert summary["log_likelihood"] == pytest.approx(model.score(log), rel=1e-10)


def test_fit_dataset_scores_a_chain_of_symbols_on_the_partitions_its_fit_checked(client, tmp_path, monkeypatch):
    """A chain's kept partitions are coded for counting, so it is scored on the partitions again: those
    the fit's first pass found to hold whole sequences, with no second check of the ids."""
    log = _event_log()
    groups = [[f"c{i}" for i in group] for group in ([0, 1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12, 13, 14, 15])]
    dd.concat([dd.from_pandas(log[log.case_id.isin(g)], npartitions=1) for g in groups]).to_parquet(tmp_path / "log")
    monkeypatch.setattr(msd, "_whole", lambda source: pytest.fail("the partitions were checked again"))
    model = MarkovChain(order=1)
    options = {"scheduler": client.scheduler.address, "id_column": "case_id", "time_column": "timestamp"}
    summary = msd.fit_dataset(model, tmp_path / "log", **options)
    assert summary["partitions"] == 2 and "converged" not in summary  # counted, not iterated
    assert summary["log_likelihood"] == pytest.approx(model.score(log), rel=1e-10)


def _fit_dataset(model, path, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return msd.fit_dataset(model, path, **options)


def test_a_model_that_cannot_be_sharded_is_refused(client):
    with pytest.raises(TypeError, match="StructuralModel cannot be fit over a Dask cluster: only a fit by EM"):
        StructuralModel().fit(_by_groups(_frame(4), [[0, 1], [2, 3]]), time_column="t", columns=["a"])


def test_a_model_whose_fit_reads_the_time_stamps_is_refused_before_any_read(client):
    with distributed.get_task_stream(client) as stream, pytest.raises(TypeError, match="ContinuousSwitchingLDS cannot"):
        msd.fit(ContinuousSwitchingLDS(2, n_iter=2), _by_groups(_frame(4), [[0, 1], [2, 3]]), time_column="t")
    assert not stream.data


def test_the_shards_keep_the_values_without_the_time_stamps(client):
    """No fit over the cluster reads the stamps (the models whose fits do are refused): the shards
    drop them, a third of a shard of two value columns."""
    frame = _frame(4)
    shards = msd.Shards.of(
        HMM(2), msd._source(_by_groups(frame, [[0, 1], [2, 3]]), {"time_column": "t"}), client, {"time_column": "t"}
    )
    held = client.gather(shards.shards)
    assert all(shard.times is None for shard in held)
    whole = HMM(2)._em_data(frame, time_column="t")
    np.testing.assert_array_equal(np.concatenate([shard.values for shard in held]), whole.values)


def test_bad_data_in_a_partition_is_one_clear_error(client):
    frame = _frame(4)
    frame.loc[frame.id == 3, "a"] = np.inf
    with pytest.raises(ValueError, match="partition 1"):
        HMM(2).fit(_by_groups(frame, [[0, 1], [2, 3]]), time_column="t")


def test_the_command_line_fits_a_parquet_dataset_on_a_cluster(client, tmp_path):
    from typer.testing import CliRunner

    from modeshift import load
    from modeshift.cli import app

    _by_groups(_frame(6), [[0, 1, 2], [3, 4, 5]]).to_parquet(tmp_path / "data")
    arguments = ["fit", str(tmp_path / "data"), "--modes", "2", "--seed", "0", "--iterations", "5"]
    arguments += ["--time-column", "t", "--scheduler", client.scheduler.address, "-o", str(tmp_path / "m.msz")]
    result = CliRunner().invoke(app, [*arguments, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["partitions"] == 2 and summary["n_iter"] == 5
    model = load(tmp_path / "m.msz")
    assert model.schema_.columns == ("a", "b")
    assert summary["log_likelihood"] == pytest.approx(model.score(model.schema_.read(_frame(6))), rel=1e-9)
    cluster = ["--scheduler", client.scheduler.address, "--json"]
    scored = CliRunner().invoke(app, ["score", str(tmp_path / "m.msz"), str(tmp_path / "data"), *cluster])
    assert scored.exit_code == 0, scored.output
    assert json.loads(scored.stdout.splitlines()[-1])["log_likelihood"] == pytest.approx(summary["log_likelihood"])
    runs = tmp_path / "runs.csv"
    cut = CliRunner().invoke(
        app, ["segment", str(tmp_path / "m.msz"), str(tmp_path / "data"), "-o", str(runs), *cluster]
    )
    assert cut.exit_code == 0, cut.output
    here = model.segment(model.schema_.read(_frame(6)))
    assert (
        pd.read_csv(runs)[["start", "end", "mode"]].to_numpy().tolist()
        == here[["start", "end", "mode"]].to_numpy().tolist()
    )


def _worker_settings() -> tuple[bool, str, str, str | None]:
    import dask

    return (
        dask.config.get("distributed.worker.profile.enabled"),
        dask.config.get("distributed.admin.tick.interval"),
        os.environ.get("NUMBA_NUM_THREADS"),
        os.environ.get("MALLOC_TRIM_THRESHOLD_"),
    )


def test_the_local_cluster_of_workers_n_turns_down_dasks_housekeeping(monkeypatch):
    """`--workers N`'s cluster: one thread per worker process, no profiler, a slow watchdog, glibc's
    own allocator thresholds (no MALLOC_TRIM_THRESHOLD_ from the nanny); the client's own settings
    are back as they were after it. (A nanny leaves its settings in its process's environment, which
    later workers inherit: this process has started the session's cluster, a command has not.)"""
    import dask

    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)

    before = dask.config.get("distributed.admin.tick.interval"), dask.config.get("distributed.nanny.pre-spawn-environ")
    with msd._cluster(None, 1) as client:
        assert list(client.run(_worker_settings).values()) == [(False, "1s", "1", None)]
    assert (
        dask.config.get("distributed.admin.tick.interval"),
        dask.config.get("distributed.nanny.pre-spawn-environ"),
    ) == before
    assert before[1]["MALLOC_TRIM_THRESHOLD_"] == 65536  # Dask's default, which the test would miss
