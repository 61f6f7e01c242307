"""Shared test fixtures."""

from __future__ import annotations

import numpy as np
import pytest

from modeshift import ARHMM
from modeshift.archive import read_archive, write_archive


def _simulate_arhmm(seed, n_steps=6000):
    """A 3-mode bivariate AR(2) with well separated modes."""
    rng = np.random.default_rng(seed)
    truth = ARHMM(n_states=3, order=2)
    truth.startprob_ = np.ones(3) / 3
    truth.transmat_ = np.full((3, 3), 0.01) + 0.97 * np.eye(3)
    angles = [0.3, -0.6, 1.2]
    coefs = []
    for angle in angles:
        c, s = np.cos(angle), np.sin(angle)
        coefs.append(np.hstack([0.7 * np.array([[c, -s], [s, c]]), -0.2 * np.eye(2)]))
    truth.coefs_ = np.array(coefs)
    truth.intercepts_ = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    truth.covars_ = np.stack([0.05 * np.eye(2)] * 3)
    X, modes = truth.sample(n_steps, random_state=rng)
    return truth, X, modes


@pytest.fixture
def simulate_arhmm():
    """``simulate(seed, n_steps=6000) -> (true model, X, modes)`` for a 3-mode bivariate AR(2)."""
    return _simulate_arhmm


@pytest.fixture
def file_with_old_names(tmp_path):
    """``make(model, old_names) -> path``: ``model``'s file with the members (arrays and
    attributes) named in ``old_names`` (new -> old) under their old names, as the previous
    release wrote them."""

    def make(model, old_names):
        model.save(tmp_path / "new.msz")
        metadata, arrays = read_archive(tmp_path / "new.msz")
        metadata["attributes"] = {old_names.get(k, k): v for k, v in metadata["attributes"].items()}
        write_archive(tmp_path / "old.msz", metadata, {old_names.get(k, k): v for k, v in arrays.items()})
        return tmp_path / "old.msz"

    return make


@pytest.fixture(scope="session")
def cluster():
    """A local Dask cluster of two worker processes (as CI has two cores), one for the session: a new
    cluster would cost its workers' imports and their loading the compiled kernels again."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40
    ) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def client(cluster):
    """A client of the session's cluster, one per module (the default client only while the module runs)."""
    distributed = pytest.importorskip("distributed")
    with distributed.Client(cluster) as client:
        yield client
