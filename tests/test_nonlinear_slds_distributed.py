"""NonlinearSwitchingLDS over a Dask cluster: each shard's Laplace posterior carried on its worker
from one sweep to the next, the fit equal to the one in memory from the same start."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pandas as pd
import pytest

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")

from modeshift import NonlinearSwitchingLDS  # noqa: E402
from modeshift import distributed as msd  # noqa: E402
from modeshift.datasets.simulators import switching_oscillators  # noqa: E402
from modeshift.models.em import ConvergenceWarning  # noqa: E402

RTOL = 1e-10
GROUPS = [[3, 0], [1, 4], [2, 5]]  # partitions out of id order


def _frame(n_sequences: int = 6) -> pd.DataFrame:
    """Long format: switching oscillators (Van der Pol and Duffing flows), both coordinates seen
    with noise of sd 0.05, sequences of unequal length."""
    rows, rng = [], np.random.default_rng(0)
    for s in range(n_sequences):
        sim = switching_oscillators(60 + 10 * s, random_state=s, stickiness=0.97)
        y = sim.observations + rng.normal(0, 0.05, sim.observations.shape)
        rows.append(pd.DataFrame({"id": s, "t": np.arange(len(y)), "a": y[:, 0], "b": y[:, 1]}))
    return pd.concat(rows, ignore_index=True)


def _by_groups(frame: pd.DataFrame, groups: list[list[int]]):
    return dd.concat([dd.from_pandas(frame[frame.id.isin(g)], npartitions=1) for g in groups])


def _fit(model, data, **columns):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(data, time_column="t", **columns)


def _here_and_there(frame, groups, n_iter, **options):
    """The fit in memory and over the cluster of one model from the same start (its parameters after
    a fit of 0 iterations in memory), ``n_iter`` iterations each."""
    start = _fit(NonlinearSwitchingLDS(2, state_dim=2, n_iter=0, random_state=0, **options), frame)
    start.set_params(n_iter=n_iter, tol=0.0, warm_start=True)
    here = _fit(copy.deepcopy(start), frame)
    there = _fit(copy.deepcopy(start), _by_groups(frame, groups))  # fit dispatches on a Dask frame
    assert there.n_iter_ == here.n_iter_ == n_iter
    return here, there


def test_the_fit_over_a_cluster_equals_the_fit_in_memory(client):
    here, there = _here_and_there(_frame(), GROUPS, 4)
    np.testing.assert_allclose(there.history_, here.history_, rtol=RTOL)
    for name in here.parameter_names:
        np.testing.assert_allclose(getattr(there, name), getattr(here, name), rtol=RTOL, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("dof", [None, 4.0])
def test_a_fit_with_resets_over_a_cluster_equals_the_fit_in_memory(client, dof):
    """Resets "destination": each shard's switches into a mode weigh its reset's regression, summed
    over the shards as in memory (4 short sequences, 2 iterations); robust resets (``dof``) keep each
    shard's q(s) in its posterior on the worker."""
    here, there = _here_and_there(_frame(4), [[3, 0], [1, 2]], 2, resets="destination", reset_dof=dof)
    np.testing.assert_allclose(there.history_, here.history_, rtol=RTOL)
    assert here.reset_offsets_.shape == (2, 2)
    for name in here.parameter_names:
        np.testing.assert_allclose(getattr(there, name), getattr(here, name), rtol=RTOL, atol=1e-12, err_msg=name)


def test_a_model_that_cannot_be_fit_over_a_cluster_names_those_that_can():
    with pytest.raises(TypeError, match="NonlinearSwitchingLDS"):
        msd.fit(object(), None, client=object())


@pytest.mark.slow  # three fits over the cluster
def test_auto_by_pruning_over_a_cluster_scores_each_candidate_as_in_memory(client):
    """The candidates fit over the cluster; each one's ELBO and BIC, summed over the partitions,
    are its ELBO and BIC on the whole frame in memory (inference runs sequence by sequence)."""
    frame = _frame()
    model = NonlinearSwitchingLDS("auto", state_dim=2, max_states=2, selection="prune", n_iter=3, random_state=0)
    there = _fit(model, _by_groups(frame, GROUPS))
    table = there.selection_
    assert list(table["n_states"]) == [2, 1] and there.n_states_ in (1, 2)
    assert there.flow_weights_.shape[0] == there.n_states_
    seqs = there.schema_.read(frame)
    chosen = table[table["chosen"]].iloc[0]
    assert chosen["elbo"] == pytest.approx(there.elbo(seqs), rel=1e-10)
    assert chosen["bic"] == pytest.approx(there.bic(seqs), rel=1e-10)
