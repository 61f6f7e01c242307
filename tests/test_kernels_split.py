"""One long sequence split across threads gives the answer of the sequential recursion.

The split kernels start later segments from a guess and splice them in where
the true run meets the guessed one; these tests pin that the result equals the
one-piece recursion for chains that forget their start quickly, slowly, or
never (left-to-right, reducible), where the kernels must fall back to a rerun.
"""

import numpy as np
import pytest

from modeshift import _kernels as kernels
from modeshift._kernels import hmm as H
from modeshift._kernels import split as S
from modeshift._kernels.recursions import scaled_table, table_rows, transposed

T = 60_000


def _chains(rng):
    k = 6
    mixing = 0.6 * np.eye(k) + 0.4 * rng.dirichlet(np.ones(k), size=k)
    sticky = 0.995 * np.eye(k) + 0.005 * rng.dirichlet(np.ones(k), size=k)
    left_to_right = np.eye(4) * 0.9999
    left_to_right[np.arange(3), np.arange(1, 4)] = 1e-4
    left_to_right[3, 3] = 1.0
    reducible = np.array([[0.9, 0.1, 0, 0], [0.1, 0.9, 0, 0], [0, 0, 0.5, 0.5], [0, 0, 0.5, 0.5]])
    return {
        "mixing": (np.full(k, 1 / k), mixing),
        "sticky": (rng.dirichlet(np.ones(k)), sticky),
        "left-to-right": (np.array([1.0, 0, 0, 0]), left_to_right),
        "reducible": (np.array([0.5, 0.5, 0, 0]), reducible),
    }


@pytest.fixture(params=["mixing", "sticky", "left-to-right", "reducible"])
def case(request):
    rng = np.random.default_rng(11)
    initial, matrix = _chains(rng)[request.param]
    k = len(initial)
    dense = rng.normal(0.0, 2.0, size=(T, k))
    # in C order, as Categorical.log_likelihood_table builds it (a transposed view would compile
    # every kernel it meets a second time, for Fortran order)
    table = np.ascontiguousarray(np.log(rng.dirichlet(np.full(20, 0.5), size=k).T))
    symbols = rng.integers(0, 20, size=T)
    return initial, matrix, dense, table, symbols


@pytest.mark.parametrize("n_segments", [2, 3])
@pytest.mark.parametrize("form", ["dense", "table"])
def test_split_log_likelihood_equals_sequential(case, n_segments, form):
    initial, matrix, dense, table, symbols = case
    log_lik, rows = (dense, None) if form == "dense" else (table, symbols)
    offsets = np.array([0, T])
    reference = H._log_likelihood(
        log_lik, table_rows(rows), *scaled_table(log_lik), offsets, initial, transposed(matrix[None])
    )[0]
    split = S.log_likelihood_split(
        log_lik,
        table_rows(rows),
        *scaled_table(log_lik),
        0,
        T,
        initial,
        transposed(matrix[None]),
        n_segments,
    )
    assert split == pytest.approx(reference, rel=1e-10)


@pytest.mark.parametrize("n_segments", [2, 3])
@pytest.mark.parametrize("form", ["dense", "table"])
def test_split_viterbi_equals_sequential(case, n_segments, form):
    initial, matrix, dense, table, symbols = case
    log_lik, rows = (dense, None) if form == "dense" else (table, symbols)
    with np.errstate(divide="ignore"):
        log_initial, incoming = np.log(initial), transposed(np.log(matrix)[None])
    reference_path, reference = H._viterbi(
        log_lik, table_rows(rows), np.array([0, T]), log_initial, incoming, np.empty((T, len(initial)))
    )
    path = np.empty(T, dtype=np.int64)
    log_prob = S.viterbi_split(
        log_lik, table_rows(rows), 0, T, log_initial, incoming, np.empty((T, len(initial))), path, n_segments
    )
    assert log_prob == pytest.approx(reference[0], rel=1e-10)
    np.testing.assert_array_equal(path, reference_path)


def test_split_impossible_observation_is_minus_infinity():
    initial = np.array([1.0, 0.0])
    matrix = np.array([[1.0, 0.0], [0.0, 1.0]])  # state 1 can never be reached
    log_lik = np.zeros((T, 2))
    log_lik[T - 10, 0] = -np.inf  # ... and late in the sequence only state 1 could emit
    value = S.log_likelihood_split(
        log_lik, table_rows(None), *scaled_table(log_lik), 0, T, initial, transposed(matrix[None]), 2
    )
    assert value == -np.inf


def test_public_kernels_split_long_single_sequences(monkeypatch):
    """The wrappers take the split path for one long sequence and agree with many short calls."""
    rng = np.random.default_rng(3)
    initial, matrix = _chains(rng)["mixing"]
    log_lik = rng.normal(size=(T, len(initial)))
    monkeypatch.setattr(S, "_MIN_SEGMENT", 1_000)
    monkeypatch.setattr(S.numba, "get_num_threads", lambda: 2)
    assert S.segments(np.array([0, T]), stationary=True) == 2
    whole = kernels.log_likelihood(log_lik, np.array([0, T]), initial, matrix[None])
    path, log_prob = kernels.viterbi(log_lik, np.array([0, T]), np.log(initial), np.log(matrix)[None])
    monkeypatch.setattr(S.numba, "get_num_threads", lambda: 1)
    assert S.segments(np.array([0, T]), stationary=True) == 1
    single = kernels.log_likelihood(log_lik, np.array([0, T]), initial, matrix[None])
    np.testing.assert_allclose(whole, single, rtol=1e-10)
    reference_path, reference = kernels.viterbi(log_lik, np.array([0, T]), np.log(initial), np.log(matrix)[None])
    np.testing.assert_array_equal(path, reference_path)
    np.testing.assert_allclose(log_prob, reference, rtol=1e-10)
