"""The semi-Markov recursions against brute-force enumeration of every segmentation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from modeshift._kernels.hsmm import hsmm_filter, hsmm_sample_posterior, hsmm_smoother, hsmm_viterbi


def _segmentations(n_steps: int, n_states: int, max_duration: int, previous: int = -1):
    """Every list of (state, duration) covering n_steps, consecutive states different."""
    if n_steps == 0:
        yield []
        return
    for k in range(n_states):
        if k == previous and n_states > 1:
            continue
        for d in range(1, min(max_duration, n_steps) + 1):
            for rest in _segmentations(n_steps - d, n_states, max_duration, k):
                yield [(k, d), *rest]


def _problem(seed: int, n_steps: int, n_states: int, max_duration: int, right: bool, left: bool):
    """A random HSMM: weights (4, K, D) and survival (2, K, D) from random duration pmfs."""
    rng = np.random.default_rng(seed)
    log_b = rng.normal(size=(n_steps, n_states)) * 2
    initial = rng.dirichlet(np.ones(n_states))
    transmat = rng.random((n_states, n_states)) * (1 - np.eye(n_states)) + (n_states == 1)
    transmat /= transmat.sum(axis=1, keepdims=True)
    pmf = rng.dirichlet(np.ones(max_duration), size=n_states)
    survival = np.cumsum(pmf[:, ::-1], axis=1)[:, ::-1]
    first_pmf = survival / survival.sum(axis=1, keepdims=True) if left else pmf
    first_survival = np.cumsum(first_pmf[:, ::-1], axis=1)[:, ::-1]
    weights = np.stack([pmf, first_pmf, survival if right else pmf, first_survival if right else first_pmf])
    return log_b, initial, transmat, weights, np.stack([survival, first_survival])


def _enumerate(log_b, initial, transmat, weights):
    """Joint probability of every segmentation, with its path and segments (start, state, duration, kind);
    ``transmat`` (K, K), or (n_steps, K, K) with row u the switch into a segment starting at u."""
    n_steps, n_states = log_b.shape
    out = []
    for seg in _segmentations(n_steps, n_states, weights.shape[2]):
        prob, u, path, parts = initial[seg[0][0]], 0, [], []
        for i, (k, d) in enumerate(seg):
            kind = (i == 0) + 2 * (i == len(seg) - 1)
            prob *= weights[kind, k, d - 1] * np.exp(log_b[u : u + d, k].sum())
            if i:
                prob *= (transmat[u] if transmat.ndim == 3 else transmat)[seg[i - 1][0], k]
            parts.append((u, k, d, kind))
            path += [k] * d
            u += d
        out.append((prob, np.array(path), parts))
    return out


CASES = [
    (seed, n_steps, n_states, max_duration, right, left)
    for seed, (n_steps, n_states, max_duration) in enumerate([(1, 2, 2), (4, 2, 3), (6, 2, 4), (5, 3, 3), (6, 3, 4)])
    for right, left in [(True, False), (False, False), (True, True), (False, True)]
]


@pytest.mark.parametrize("case", CASES)
def test_smoother_matches_enumeration(case):
    log_b, initial, transmat, weights, survival = _problem(*case)
    every = _enumerate(log_b, initial, transmat, weights)
    total = sum(p for p, _, _ in every)
    n_steps, n_states = log_b.shape
    posteriors = np.zeros((n_steps, n_states))
    durations = np.zeros_like(weights)
    pairs = np.zeros((n_states, n_states))
    for prob, path, parts in every:
        posteriors[np.arange(n_steps), path] += prob / total
        for (_, k, d, kind), following in zip(parts, parts[1:] + [None]):
            durations[kind, k, d - 1] += prob / total
            if following is not None:
                pairs[k, following[1]] += prob / total
    offsets = np.array([0, n_steps])
    log_lik, smoothed, got_durations, got_pairs, filtered = hsmm_smoother(
        log_b, offsets, initial, transmat, weights, survival
    )
    np.testing.assert_allclose(log_lik, [np.log(total)], rtol=1e-12)
    np.testing.assert_allclose(smoothed, posteriors, atol=1e-12)
    np.testing.assert_allclose(got_durations, durations, atol=1e-12)
    np.testing.assert_allclose(got_pairs, pairs, atol=1e-12)
    filtered_only, forward_log_lik, remaining = hsmm_filter(log_b, offsets, initial, transmat, weights, survival)
    assert remaining is None
    np.testing.assert_allclose(forward_log_lik, log_lik, rtol=1e-12)
    np.testing.assert_allclose(filtered_only, filtered, rtol=1e-12)


@pytest.mark.parametrize("case", CASES[::3])
def test_filtered_probabilities_and_remaining_durations_match_enumeration(case):
    """p(z_t | y_<=t) is the last state of the segmentations of y_0..t whose last segment may go on;
    at the end, p(z_T-1 = k, r more steps | y) weights a last segment of full length d + r by its pmf."""
    log_b, initial, transmat, weights, survival = _problem(*case)
    n_steps, n_states = log_b.shape
    expected = np.zeros((n_steps, n_states))
    for t in range(n_steps):
        prefix = np.stack([weights[0], weights[1], survival[0], survival[1]])
        for prob, path, _ in _enumerate(log_b[: t + 1], initial, transmat, prefix):
            expected[t, path[-1]] += prob
    expected /= expected.sum(axis=1, keepdims=True)
    max_duration = weights.shape[2]
    remaining = np.zeros((n_states, max_duration))
    for r in range(max_duration):  # a last segment of observed length d has full length d + r
        shifted = weights.copy()
        for kind in (2, 3):
            shifted[kind] = 0.0
            shifted[kind, :, : max_duration - r] = weights[kind - 2, :, r:]
        for prob, path, _ in _enumerate(log_b, initial, transmat, shifted):
            remaining[path[-1], r] += prob
    filtered, _, got = hsmm_filter(
        log_b, np.array([0, n_steps]), initial, transmat, weights, survival, with_remaining=True
    )
    np.testing.assert_allclose(filtered, expected, atol=1e-12)
    np.testing.assert_allclose(got[0], remaining / remaining.sum(), atol=1e-12)


@pytest.mark.parametrize("case", CASES)
def test_viterbi_finds_the_most_probable_segmentation(case):
    log_b, initial, transmat, weights, _ = _problem(*case)
    prob, path, _ = max(_enumerate(log_b, initial, transmat, weights), key=lambda item: item[0])
    got, log_prob = hsmm_viterbi(log_b, np.array([0, len(log_b)]), initial, transmat, weights)
    np.testing.assert_array_equal(got, path)
    np.testing.assert_allclose(log_prob, [np.log(prob)], rtol=1e-12)


def test_posterior_samples_follow_the_posterior_over_segmentations():
    log_b, initial, transmat, weights, survival = _problem(3, 5, 3, 3, True, False)
    every = _enumerate(log_b, initial, transmat, weights)
    total = sum(p for p, _, _ in every)
    n_draws = 20_000
    rng = np.random.default_rng(1)
    counts: dict[tuple[int, ...], int] = {}
    n_steps = len(log_b)
    batch = 200  # sequences per call: the same data repeated, each with its own draw
    offsets = np.arange(batch + 1) * n_steps
    for _ in range(n_draws // batch):
        paths, log_lik = hsmm_sample_posterior(
            np.tile(log_b, (batch, 1)), offsets, initial, transmat, weights, survival, rng.random(2 * batch * n_steps)
        )
        for path in paths.reshape(batch, n_steps):
            counts[tuple(path)] = counts.get(tuple(path), 0) + 1
    np.testing.assert_allclose(log_lik, np.log(total), rtol=1e-12)
    for prob, path, _ in every:
        expected = prob / total
        observed = counts.pop(tuple(path), 0) / n_draws
        assert abs(observed - expected) < 4 * np.sqrt(expected * (1 - expected) / n_draws) + 2 / n_draws
    assert not counts, "a path outside the support was drawn"


def _per_step(seed: int, n_steps: int, n_states: int) -> np.ndarray:
    """Random switch matrices (n_steps, K, K) with a zero diagonal."""
    rng = np.random.default_rng(100 + seed)
    matrices = rng.random((n_steps, n_states, n_states)) * (1 - np.eye(n_states))
    return matrices / matrices.sum(axis=2, keepdims=True)


@pytest.mark.parametrize("case", [case for case in CASES if case[2] == 3])
def test_per_step_switches_match_enumeration(case):
    """Switches driven by inputs: a matrix per step, row u moving into a segment that starts at u;
    the expected switches come back per step."""
    log_b, initial, _, weights, survival = _problem(*case)
    n_steps, n_states = log_b.shape
    matrices = _per_step(case[0], n_steps, n_states)
    every = _enumerate(log_b, initial, matrices, weights)
    total = sum(p for p, _, _ in every)
    posteriors = np.zeros((n_steps, n_states))
    pairs = np.zeros((n_steps, n_states, n_states))
    for prob, path, parts in every:
        posteriors[np.arange(n_steps), path] += prob / total
        for (_, k, _, _), following in zip(parts, parts[1:]):
            pairs[following[0], k, following[1]] += prob / total
    offsets = np.array([0, n_steps])
    log_lik, smoothed, _, got_pairs, filtered = hsmm_smoother(log_b, offsets, initial, matrices, weights, survival)
    np.testing.assert_allclose(log_lik, [np.log(total)], rtol=1e-12)
    np.testing.assert_allclose(smoothed, posteriors, atol=1e-12)
    np.testing.assert_allclose(got_pairs, pairs, atol=1e-12)
    filtered_only, forward_log_lik, _ = hsmm_filter(log_b, offsets, initial, matrices, weights, survival)
    np.testing.assert_allclose(forward_log_lik, log_lik, rtol=1e-12)
    np.testing.assert_allclose(filtered_only, filtered, rtol=1e-12)
    prob, path, _ = max(every, key=lambda item: item[0])
    got, log_prob = hsmm_viterbi(log_b, offsets, initial, matrices, weights)
    np.testing.assert_array_equal(got, path)
    np.testing.assert_allclose(log_prob, [np.log(prob)], rtol=1e-12)


def test_per_step_switches_of_ragged_sequences_are_each_their_own():
    """Rows of per-step matrices belong to their sequence: each sequence alone gives the same results,
    and a draw of the posterior sampler follows its own sequence's matrices (no switch into a
    sequence's first step is ever counted)."""
    problems = [_problem(seed, n, 3, 4, True, False) for seed, n in enumerate([6, 1, 4])]
    _, initial, _, weights, survival = problems[0]
    log_b = np.concatenate([p[0] for p in problems])
    offsets = np.array([0, 6, 7, 11])
    matrices = _per_step(0, 11, 3)
    log_lik, smoothed, _, pairs, _ = hsmm_smoother(log_b, offsets, initial, matrices, weights, survival)
    assert not pairs[offsets[:-1]].any()
    for s, (first, last) in enumerate(zip(offsets[:-1], offsets[1:])):
        alone = hsmm_smoother(
            log_b[first:last], np.array([0, last - first]), initial, matrices[first:last], weights, survival
        )
        np.testing.assert_allclose(log_lik[s], alone[0][0], rtol=1e-12)
        np.testing.assert_allclose(smoothed[first:last], alone[1], atol=1e-12)
        np.testing.assert_allclose(pairs[first:last], alone[3], atol=1e-12)
    paths, sampled_log_lik = hsmm_sample_posterior(
        log_b, offsets, initial, matrices, weights, survival, np.random.default_rng(0).random(22)
    )
    np.testing.assert_allclose(sampled_log_lik, log_lik, rtol=1e-12)


def test_posterior_samples_follow_per_step_switches():
    log_b, initial, _, weights, survival = _problem(3, 5, 3, 3, True, False)
    matrices = _per_step(3, 5, 3)
    every = _enumerate(log_b, initial, matrices, weights)
    total = sum(p for p, _, _ in every)
    batch, n_draws, n_steps = 400, 20_000, 5
    rng = np.random.default_rng(2)
    counts: dict[tuple[int, ...], int] = {}
    for _ in range(n_draws // batch):
        paths, _ = hsmm_sample_posterior(
            np.tile(log_b, (batch, 1)),
            np.arange(batch + 1) * n_steps,
            initial,
            np.tile(matrices, (batch, 1, 1)),
            weights,
            survival,
            rng.random(2 * batch * n_steps),
        )
        for path in paths.reshape(batch, n_steps):
            counts[tuple(path)] = counts.get(tuple(path), 0) + 1
    for prob, path, _ in every:
        expected = prob / total
        observed = counts.pop(tuple(path), 0) / n_draws
        assert abs(observed - expected) < 4 * np.sqrt(expected * (1 - expected) / n_draws) + 2 / n_draws
    assert not counts, "a path outside the support was drawn"


def test_ragged_sequences_are_independent():
    """Sequences back to back give each its own result, in parallel."""
    problems = [_problem(seed, n, 3, 4, True, False) for seed, n in enumerate([6, 1, 4])]
    _, initial, transmat, weights, survival = problems[0]
    log_b = np.concatenate([p[0] for p in problems])
    offsets = np.array([0, 6, 7, 11])
    log_lik, smoothed, durations, pairs, _ = hsmm_smoother(log_b, offsets, initial, transmat, weights, survival)
    path, log_prob = hsmm_viterbi(log_b, offsets, initial, transmat, weights)
    alone_durations = 0
    for s, (first, last) in enumerate(zip(offsets[:-1], offsets[1:])):
        one = hsmm_smoother(log_b[first:last], np.array([0, last - first]), initial, transmat, weights, survival)
        np.testing.assert_allclose(log_lik[s], one[0][0], rtol=1e-12)
        np.testing.assert_allclose(smoothed[first:last], one[1], atol=1e-12)
        alone_durations = alone_durations + one[2]
        alone_path, alone_log_prob = hsmm_viterbi(
            log_b[first:last], np.array([0, last - first]), initial, transmat, weights
        )
        np.testing.assert_array_equal(path[first:last], alone_path)
        np.testing.assert_allclose(log_prob[s], alone_log_prob[0], rtol=1e-12)
    np.testing.assert_allclose(durations, alone_durations, atol=1e-12)


def test_an_impossible_sequence_has_log_likelihood_minus_infinity():
    log_b, initial, transmat, weights, survival = _problem(0, 4, 2, 3, True, False)
    log_b[2] = -np.inf
    log_lik = hsmm_smoother(log_b, np.array([0, 4]), initial, transmat, weights, survival)[0]
    assert log_lik[0] == -np.inf
    assert hsmm_viterbi(log_b, np.array([0, 4]), initial, transmat, weights)[1][0] == -np.inf


def test_segmentations_are_enumerated_completely():
    """The brute force itself: compositions of T into parts <= D times state sequences without repeats."""
    n_steps, n_states, max_duration = 5, 3, 3
    expected = 0
    for n_parts in range(1, n_steps + 1):
        compositions = sum(
            1 for parts in itertools.product(range(1, max_duration + 1), repeat=n_parts) if sum(parts) == n_steps
        )
        expected += compositions * n_states * (n_states - 1) ** (n_parts - 1)
    assert sum(1 for _ in _segmentations(n_steps, n_states, max_duration)) == expected
