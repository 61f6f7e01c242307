"""The numba message-passing kernels against exhaustive enumeration of state paths.

For K <= 3 states and T <= 6 steps there are at most 3**6 = 729 paths per
sequence, so the exact log-likelihood, posteriors, expected transitions, filtered
probabilities and Viterbi path can be computed by summing (or maximising) over
every path in log space. The kernels must agree to rounding error.
"""

from __future__ import annotations

import itertools
import zlib

import numba
import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp

from modeshift import _kernels as kernels
from modeshift._kernels import hmm as kernel_module

# --------------------------------------------------------------------------- references


def _log(x):
    with np.errstate(divide="ignore"):
        return np.log(x)


def enumerate_paths(ll, log_pi, log_A):
    """All state paths of one sequence and their joint log-probabilities log p(y, z).

    ``log_A`` is (T, K, K) (entry 0 unused) so time-varying chains are covered too.
    """
    T, K = ll.shape
    paths = np.array(list(itertools.product(range(K), repeat=T)), dtype=np.int64)
    joint = log_pi[paths[:, 0]] + ll[0, paths[:, 0]]
    for t in range(1, T):
        joint = joint + log_A[t, paths[:, t - 1], paths[:, t]] + ll[t, paths[:, t]]
    return paths, joint


def brute_force(ll, pi, A):
    """log p(y), p(z_t | y) (T, K), p(z_{t-1}, z_t | y) (T, K, K), filtered p(z_t | y_0..t) (T, K)."""
    T, K = ll.shape
    log_pi, log_A = _log(pi), _log(A)
    paths, joint = enumerate_paths(ll, log_pi, log_A)
    log_z = logsumexp(joint)
    posteriors = np.full((T, K), np.nan)
    pairs = np.zeros((T, K, K))
    if np.isfinite(log_z):
        weights = np.exp(joint - log_z)
        for t in range(T):
            posteriors[t] = np.bincount(paths[:, t], weights=weights, minlength=K)
            if t > 0:
                np.add.at(pairs[t], (paths[:, t - 1], paths[:, t]), weights)
    filtered = np.full((T, K), np.nan)
    for t in range(T):
        prefix_paths, prefix_joint = enumerate_paths(ll[: t + 1], log_pi, log_A[: t + 1])
        norm = logsumexp(prefix_joint)
        if not np.isfinite(norm):
            break
        filtered[t] = np.bincount(prefix_paths[:, t], weights=np.exp(prefix_joint - norm), minlength=K)
    return log_z, posteriors, pairs, filtered, paths, joint


def random_case(rng, K, lengths, *, zeros=False, neg_inf=False, varying=False):
    """A batch: log-likelihoods (N, K), offsets, initial probs, transition matrices."""
    lengths = np.asarray(lengths)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    n = int(offsets[-1])
    ll = rng.normal(0.0, 3.0, size=(n, K))
    pi = rng.dirichlet(np.ones(K))
    A = rng.dirichlet(np.ones(K), size=(n if varying else 1, K))
    if zeros and K > 1:
        # forbid some transitions (never a whole row) and one initial state
        mask = rng.random(A.shape) < 0.3
        mask[..., 0] = False  # column 0 stays allowed, so every row keeps mass
        A = np.where(mask, 0.0, A)
        A /= A.sum(axis=-1, keepdims=True)
        pi[-1] = 0.0
        pi /= pi.sum()
    if neg_inf:
        ll[rng.random(ll.shape) < 0.25] = -np.inf
    if varying:
        # the entry at a sequence's first step is documented as unused
        A[offsets[:-1]] = np.nan
    return ll, offsets, pi, A


def per_sequence_reference(ll, offsets, pi, A):
    """brute_force applied to every sequence of a batch, with A (1 or N, K, K)."""
    out = []
    for s in range(len(offsets) - 1):
        a, b = offsets[s], offsets[s + 1]
        A_seq = np.broadcast_to(A[0], (b - a, *A.shape[1:])) if A.shape[0] == 1 else A[a:b]
        out.append(brute_force(ll[a:b], pi, A_seq))
    return out


CASES = [
    # (K, lengths, zeros, neg_inf)
    (1, [1, 3, 6], False, False),
    (2, [1], False, False),
    (2, [6, 1, 3, 4], False, False),
    (3, [5, 2, 1, 6], False, False),
    (3, [6, 6, 1], True, False),
    (2, [4, 1, 6, 2, 3], False, True),
    (3, [6, 3, 1, 5], True, True),
]


def _case_id(case):
    K, lengths, zeros, neg_inf = case
    return f"K{K}-L{'_'.join(map(str, lengths))}{'-zeros' if zeros else ''}{'-neginf' if neg_inf else ''}"


@pytest.fixture(params=CASES, ids=_case_id)
def batch(request):
    K, lengths, zeros, neg_inf = request.param
    rng = np.random.default_rng(zlib.crc32(_case_id(request.param).encode()))
    ll, offsets, pi, A = random_case(rng, K, lengths, zeros=zeros, neg_inf=neg_inf)
    return ll, offsets, pi, A, per_sequence_reference(ll, offsets, pi, A)


# ----------------------------------------------------------------- forward-backward


def test_forward_backward_matches_enumeration(batch):
    ll, offsets, pi, A, refs = batch
    log_lik, posteriors, pairs = kernels.forward_backward(ll, offsets, pi, A)
    assert log_lik.shape == (len(offsets) - 1,)
    assert posteriors.shape == ll.shape
    assert pairs.shape == (ll.shape[1],) * 2
    expected_pairs = np.zeros_like(pairs)
    for s, (log_z, post, pair, *_rest) in enumerate(refs):
        a, b = offsets[s], offsets[s + 1]
        if np.isfinite(log_z):
            np.testing.assert_allclose(log_lik[s], log_z, rtol=1e-11, atol=1e-11)
            np.testing.assert_allclose(posteriors[a:b], post, rtol=0, atol=1e-11)
            expected_pairs += pair.sum(axis=0)
        else:  # an impossible sequence: documented as -inf and NaN posteriors, no pair counts
            assert log_lik[s] == -np.inf
            assert np.isnan(posteriors[a:b]).all()
    np.testing.assert_allclose(pairs, expected_pairs, rtol=0, atol=1e-10)


def test_log_likelihood_matches_enumeration(batch):
    ll, offsets, pi, A, refs = batch
    log_lik = kernels.log_likelihood(ll, offsets, pi, A)
    expected = np.array([ref[0] for ref in refs])
    finite = np.isfinite(expected)
    np.testing.assert_allclose(log_lik[finite], expected[finite], rtol=1e-11, atol=1e-11)
    assert (log_lik[~finite] == -np.inf).all()


def test_forward_filter_matches_enumeration(batch):
    ll, offsets, pi, A, refs = batch
    filtered, log_lik = kernels.forward_filter(ll, offsets, pi, A)
    assert filtered.shape == ll.shape
    for s, ref in enumerate(refs):
        a, b = offsets[s], offsets[s + 1]
        log_z, expected = ref[0], ref[3]
        if np.isfinite(log_z):
            np.testing.assert_allclose(log_lik[s], log_z, rtol=1e-11, atol=1e-11)
            np.testing.assert_allclose(filtered[a:b], expected, rtol=0, atol=1e-11)
        else:
            assert log_lik[s] == -np.inf
            # filtered probabilities are exact up to the first impossible step
            ok = ~np.isnan(expected).any(axis=1)
            np.testing.assert_allclose(filtered[a:b][ok], expected[ok], rtol=0, atol=1e-11)


def test_viterbi_matches_enumeration(batch):
    ll, offsets, pi, A, refs = batch
    path, log_prob = kernels.viterbi(ll, offsets, _log(pi), _log(A))
    assert path.shape == (ll.shape[0],)
    for s, ref in enumerate(refs):
        a, b = offsets[s], offsets[s + 1]
        paths, joint = ref[4], ref[5]
        best = joint.max()
        if not np.isfinite(best):
            assert log_prob[s] == -np.inf
            continue
        np.testing.assert_allclose(log_prob[s], best, rtol=1e-12, atol=1e-12)
        # the returned path really has that probability ...
        index = int(np.ravel_multi_index(tuple(path[a:b]), (ll.shape[1],) * (b - a)))
        np.testing.assert_allclose(joint[index], best, rtol=1e-12, atol=1e-12)
        # ... and is the unique argmax when there is no near tie
        runner_up = np.partition(joint, -2)[-2] if len(joint) > 1 else -np.inf
        if best - runner_up > 1e-8:
            np.testing.assert_array_equal(path[a:b], paths[np.argmax(joint)])


@pytest.mark.parametrize("K", [2, 3])
def test_time_varying_kernels_match_enumeration(K):
    rng = np.random.default_rng(100 + K)
    for zeros in (False, True):
        ll, offsets, pi, A = random_case(rng, K, [6, 1, 4, 3], zeros=zeros, varying=True)
        refs = per_sequence_reference(ll, offsets, pi, A)
        log_lik, posteriors, pairs = kernels.forward_backward_varying(ll, offsets, pi, A)
        assert pairs.shape == (ll.shape[0], K, K)
        path, log_prob = kernels.viterbi(ll, offsets, _log(pi), _log(A))
        filtered, filter_lik = kernels.forward_filter(ll, offsets, pi, A)
        scores = kernels.log_likelihood(ll, offsets, pi, A)
        for s, (log_z, post, pair, filt, _paths, joint) in enumerate(refs):
            a, b = offsets[s], offsets[s + 1]
            for value in (log_lik[s], filter_lik[s], scores[s]):
                np.testing.assert_allclose(value, log_z, rtol=1e-11)
            np.testing.assert_allclose(posteriors[a:b], post, rtol=0, atol=1e-11)
            np.testing.assert_allclose(pairs[a:b], pair, rtol=0, atol=1e-11)
            assert (pairs[a] == 0).all()  # nothing before a sequence's first step
            np.testing.assert_allclose(filtered[a:b], filt, rtol=0, atol=1e-11)
            np.testing.assert_allclose(log_prob[s], joint.max(), rtol=1e-12)


def test_summed_pairs_equal_summed_per_step_pairs():
    """forward_backward's (K, K) counts are the per-step pairs of the varying kernel, summed."""
    rng = np.random.default_rng(7)
    lengths = rng.integers(1, 40, size=150)  # more sequences than the 64 work chunks
    ll, offsets, pi, A = random_case(rng, 3, lengths)
    log_lik, posteriors, pairs = kernels.forward_backward(ll, offsets, pi, A)
    tiled = np.broadcast_to(A, (ll.shape[0], 3, 3)).copy()
    log_lik2, posteriors2, per_step = kernels.forward_backward_varying(ll, offsets, pi, tiled)
    np.testing.assert_allclose(log_lik, log_lik2, rtol=1e-13)
    np.testing.assert_allclose(posteriors, posteriors2, rtol=0, atol=1e-13)
    np.testing.assert_allclose(pairs, per_step.sum(axis=0), rtol=1e-12)
    # every transition inside a sequence is counted once
    np.testing.assert_allclose(pairs.sum(), (lengths - 1).sum(), rtol=1e-12)
    np.testing.assert_allclose(posteriors.sum(axis=1), 1.0, rtol=0, atol=1e-12)


def test_impossible_sequence_does_not_spoil_the_batch():
    rng = np.random.default_rng(3)
    ll, offsets, pi, A = random_case(rng, 2, [4, 3, 5])
    ll[5] = -np.inf  # sequence 1, step 1: no state can emit it
    log_lik, posteriors, pairs = kernels.forward_backward(ll, offsets, pi, A)
    refs = per_sequence_reference(ll, offsets, pi, A)
    assert log_lik[1] == -np.inf and np.isnan(posteriors[4:7]).all()
    for s in (0, 2):
        a, b = offsets[s], offsets[s + 1]
        np.testing.assert_allclose(log_lik[s], refs[s][0], rtol=1e-12)
        np.testing.assert_allclose(posteriors[a:b], refs[s][1], atol=1e-12)
    np.testing.assert_allclose(pairs, refs[0][2].sum(0) + refs[2][2].sum(0), atol=1e-12)
    _, sample_lik = kernels.sample_posterior_paths(ll, offsets, pi, A, rng.random(ll.shape[0]))
    assert sample_lik[1] == -np.inf


# ------------------------------------------------------------------------ scaling


def log_space_forward_backward(ll, pi, A):
    """Forward-backward entirely in log space (slow, exact reference for scaling tests)."""
    T, K = ll.shape
    log_pi, log_A = _log(pi), _log(A)
    alpha = np.empty((T, K))
    beta = np.zeros((T, K))
    alpha[0] = log_pi + ll[0]
    for t in range(1, T):
        alpha[t] = logsumexp(alpha[t - 1][:, None] + log_A, axis=0) + ll[t]
    for t in range(T - 2, -1, -1):
        beta[t] = logsumexp(log_A + (ll[t + 1] + beta[t + 1])[None, :], axis=1)
    log_z = logsumexp(alpha[-1])
    posteriors = np.exp(alpha + beta - log_z)
    pairs = np.zeros((K, K))
    for t in range(1, T):
        pairs += np.exp(alpha[t - 1][:, None] + log_A + (ll[t] + beta[t])[None, :] - log_z)
    return log_z, posteriors, pairs


def _check_against_log_space(ll, pi, A):
    offsets = np.array([0, len(ll)])
    log_lik, posteriors, pairs = kernels.forward_backward(ll, offsets, pi, A[None])
    log_z, expected_post, expected_pairs = log_space_forward_backward(ll, pi, A)
    np.testing.assert_allclose(log_lik[0], log_z, rtol=1e-12)
    np.testing.assert_allclose(kernels.log_likelihood(ll, offsets, pi, A[None])[0], log_z, rtol=1e-12)
    assert np.isfinite(posteriors).all() and np.isfinite(pairs).all()
    np.testing.assert_allclose(posteriors, expected_post, rtol=0, atol=1e-10)
    np.testing.assert_allclose(pairs, expected_pairs, rtol=0, atol=1e-10)
    filtered, _ = kernels.forward_filter(ll, offsets, pi, A[None])
    np.testing.assert_allclose(filtered.sum(axis=1), 1.0, atol=1e-12)


@pytest.mark.parametrize("n_outliers", [1, 2, 3])
def test_extreme_outlier_rescaling_fallback(n_outliers):
    """Every likely state gives the outlier log-likelihood -1e4 relative to an unlikely state.

    Shifting by the largest log-likelihood leaves the step's evidence at ~1e-300
    (< 1e-280), so the kernel's fallback shift must keep the result exact.
    """
    eps = 1e-300
    A = np.array([[0.9, 0.1, eps], [0.1, 0.9, eps], [eps, eps, 1.0]])
    A /= A.sum(axis=1, keepdims=True)
    pi = np.array([0.5, 0.5, eps])
    pi /= pi.sum()
    rng = np.random.default_rng(n_outliers)
    ll = rng.normal(0.0, 1.0, size=(12, 3))
    ll[4 : 4 + n_outliers, :2] = -1e4
    ll[4 : 4 + n_outliers, 2] = 0.0
    _check_against_log_space(ll, pi, A)


def test_extreme_outlier_reachable_state():
    """An outlier that a reachable but a-priori unlikely state explains 1e4 nats better."""
    A = np.array([[0.98, 0.02, 1e-10], [0.02, 0.98 - 1e-10, 1e-10], [0.3, 0.3, 0.4]])
    A /= A.sum(axis=1, keepdims=True)
    pi = np.array([0.6, 0.4 - 1e-12, 1e-12])
    rng = np.random.default_rng(11)
    ll = rng.normal(-5.0, 2.0, size=(20, 3))
    ll[7] = [-1e4, -1e4 - 3.0, 0.0]
    _check_against_log_space(ll, pi, A)


@pytest.mark.parametrize("gap", [100.0, 400.0, 1e4])
def test_unreachable_state_favoured_by_data(gap, favoured=slice(1, 3)):
    """A state that the chain can never enter, but which the data favour for two steps.

    State 2 has zero initial probability and no transitions into it, so its
    posterior is exactly 0; its log-likelihood is ``gap`` above the others' at
    the ``favoured`` steps (1 and 2). The answer does not depend on state 2 at all, so posteriors
    and expected transitions must equal those of the two-state chain.
    """
    A = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.0, 0.0, 1.0]])
    pi = np.array([0.5, 0.5, 0.0])
    rng = np.random.default_rng(5)
    ll = rng.normal(0.0, 1.0, size=(6, 3))
    ll[favoured, 2] = ll[favoured, :2].max(axis=1) + gap
    _check_against_log_space(ll, pi, A)
    two = kernels.forward_backward(np.ascontiguousarray(ll[:, :2]), np.array([0, 6]), pi[:2], A[None, :2, :2])
    log_lik, posteriors, pairs = kernels.forward_backward(ll, np.array([0, 6]), pi, A[None])
    np.testing.assert_allclose(log_lik, two[0], rtol=1e-12)
    np.testing.assert_allclose(posteriors[:, :2], two[1], atol=1e-12)
    np.testing.assert_allclose(pairs[:2, :2], two[2], atol=1e-12)


def test_outlier_favouring_an_unreachable_state_through_the_model():
    """A left-to-right model whose first observation sits at the (not yet reachable) last state.

    The sequence has positive density (state 0 explains y_0 = 100 poorly, not
    impossibly), so the score must be finite and equal the log-space value.
    """
    from modeshift import HMM

    model = HMM(2)
    model.startprob_ = [1.0, 0.0]
    model.transmat_ = [[0.5, 0.5], [0.0, 1.0]]
    model.means_ = [[0.0], [100.0]]
    model.covars_ = [[[1.0]], [[1.0]]]
    y = np.array([100.0, 100.0, 100.0])
    ll = stats.norm.logpdf(y[:, None], loc=[0.0, 100.0], scale=1.0)
    log_z, posteriors, _ = log_space_forward_backward(ll, model.startprob_, model.transmat_)
    assert np.isfinite(log_z)
    np.testing.assert_allclose(model.score(y), log_z, rtol=1e-12)
    np.testing.assert_allclose(model.predict_proba(y), posteriors, atol=1e-12)


@pytest.mark.parametrize("T", [100_000, pytest.param(1_000_000, marks=pytest.mark.slow)])
def test_long_sequence_many_states(T):
    """One sequence of 10**5 steps (10**6 in the slow suite) with K = 50 scores finite; posteriors sum to 1.

    Log-likelihoods spread over [-1000, 0] make every step's evidence differ by
    hundreds of orders of magnitude between states (scaling stress).
    """
    K = 50
    rng = np.random.default_rng(12345)
    ll = rng.uniform(-1000.0, 0.0, size=(T, K))
    A = rng.dirichlet(np.ones(K), size=K)
    pi = np.full(K, 1.0 / K)
    offsets = np.array([0, T])
    log_lik, posteriors, pairs = kernels.forward_backward(ll, offsets, pi, A[None])
    assert np.isfinite(log_lik).all()
    # log p(y) lies between the best single path score and the sum of per-step maxima
    assert log_lik[0] <= ll.max(axis=1).sum() + 1e-6 * abs(log_lik[0])
    assert np.isfinite(posteriors).all()
    np.testing.assert_allclose(posteriors.sum(axis=1), 1.0, rtol=0, atol=1e-9)
    assert (posteriors >= 0).all()
    np.testing.assert_allclose(pairs.sum(), T - 1, rtol=1e-9)
    # pair counts marginalise to the posteriors
    np.testing.assert_allclose(pairs.sum(axis=1), posteriors[:-1].sum(axis=0), rtol=1e-7, atol=1e-6)
    np.testing.assert_allclose(pairs.sum(axis=0), posteriors[1:].sum(axis=0), rtol=1e-7, atol=1e-6)
    del posteriors
    score = kernels.log_likelihood(ll, offsets, pi, A[None])
    np.testing.assert_allclose(score, log_lik, rtol=1e-12)
    path, log_prob = kernels.viterbi(ll, offsets, np.log(pi), np.log(A)[None])
    assert np.isfinite(log_prob[0]) and log_prob[0] <= log_lik[0]
    # the Viterbi value is the joint log-probability of the returned path
    joint = np.log(pi[path[0]]) + ll[np.arange(T), path].sum() + np.log(A[path[:-1], path[1:]]).sum()
    np.testing.assert_allclose(log_prob[0], joint, rtol=1e-10)


# ------------------------------------------------------------------------- sampling


def _draw(probs, u):
    """Inverse-CDF draw as documented: first index whose cumulative mass exceeds u * total."""
    return int(np.searchsorted(np.cumsum(probs), u * probs.sum(), side="right"))


def test_sample_posterior_paths_follow_ffbs_exactly():
    """With given uniforms, the draw is forward filtering, backward sampling by inverse CDF."""
    rng = np.random.default_rng(21)
    ll, offsets, pi, A = random_case(rng, 3, [6, 1, 4, 5], zeros=True)
    uniforms = rng.random(ll.shape[0])
    path, log_lik = kernels.sample_posterior_paths(ll, offsets, pi, A, uniforms)
    refs = per_sequence_reference(ll, offsets, pi, A)
    for s, ref in enumerate(refs):
        a, b = offsets[s], offsets[s + 1]
        np.testing.assert_allclose(log_lik[s], ref[0], rtol=1e-12)
        filtered = ref[3]
        expected = np.empty(b - a, dtype=np.int64)
        expected[-1] = _draw(filtered[-1], uniforms[b - 1])
        for t in range(b - a - 2, -1, -1):
            expected[t] = _draw(filtered[t] * A[0][:, expected[t + 1]], uniforms[a + t])
        np.testing.assert_array_equal(path[a:b], expected)


@pytest.mark.parametrize("zeros", [False, True])
def test_sample_posterior_path_frequencies(zeros):
    """Empirical path frequencies over 40,000 draws against exact posterior path probabilities.

    Tiny case K = 2, T = 3 (8 paths, or fewer possible ones). Pearson's
    chi-square test with a fixed seed; under a correct sampler the p-value is
    uniform, so p > 1e-4 fails a correct kernel with probability 1e-4 for a
    fresh seed (and never for this fixed one), while a sampler that is off by a
    few percent on any path gives p ~ 0.
    """
    rng = np.random.default_rng(99 if zeros else 98)
    K, T, n = 2, 3, 40_000
    ll = rng.normal(0.0, 1.0, size=(T, K))
    pi = np.array([0.3, 0.7])
    A = np.array([[0.6, 0.4], [0.0, 1.0]]) if zeros else np.array([[0.7, 0.3], [0.45, 0.55]])
    paths, joint = enumerate_paths(ll, _log(pi), np.broadcast_to(_log(A), (T, K, K)))
    exact = np.exp(joint - logsumexp(joint))
    batch = np.tile(ll, (n, 1))
    offsets = np.arange(n + 1, dtype=np.int64) * T
    drawn, log_lik = kernels.sample_posterior_paths(batch, offsets, pi, A[None], rng.random(n * T))
    np.testing.assert_allclose(log_lik, logsumexp(joint), rtol=1e-12)
    codes = (drawn.reshape(n, T) * K ** np.arange(T - 1, -1, -1)).sum(axis=1)  # same order as paths
    counts = np.bincount(codes, minlength=K**T)
    possible = exact > 0
    assert counts[~possible].sum() == 0, "a path of probability zero was drawn"
    result = stats.chisquare(counts[possible], n * exact[possible])
    assert result.pvalue > 1e-4, (counts, n * exact)


def test_sample_chain_inverse_cdf_and_frequencies():
    pi = np.array([0.2, 0.0, 0.8])
    A = np.array([[0.5, 0.5, 0.0], [0.1, 0.6, 0.3], [0.0, 0.25, 0.75]])
    rng = np.random.default_rng(4)
    n = 200_000
    uniforms = rng.random(n)
    path = kernels.sample_chain(pi, A, uniforms)
    assert path.shape == (n,) and path.dtype.kind == "i"
    # exact: each state is the inverse-CDF draw from the previous state's row
    head = np.empty(50, dtype=np.int64)
    head[0] = _draw(pi, uniforms[0])
    for t in range(1, 50):
        head[t] = _draw(A[head[t - 1]], uniforms[t])
    np.testing.assert_array_equal(path[:50], head)
    # forbidden transitions never happen
    assert A[path[:-1], path[1:]].min() > 0
    # empirical transition frequencies within 5 binomial standard errors
    counts = np.zeros((3, 3))
    np.add.at(counts, (path[:-1], path[1:]), 1)
    visits = counts.sum(axis=1, keepdims=True)
    se = np.sqrt(A * (1 - A) / visits)
    assert (np.abs(counts / visits - A) <= 5 * se + 1e-12).all()
    # a chain of one step is one draw from the initial distribution
    assert kernels.sample_chain(pi, A, np.array([0.1]))[0] == 0
    assert kernels.sample_chain(pi, A, np.array([0.5]))[0] == 2


# ------------------------------------------------------- concurrent forward-backward


@pytest.fixture
def concurrent(monkeypatch):
    """Every sequence long enough for its forward and backward passes to run at once."""
    if numba.get_num_threads() < 2:
        pytest.skip("the concurrent passes need two threads")
    monkeypatch.setattr(kernel_module, "_CONCURRENT_LENGTH", 1)


def _serial(function, *args):
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        return function(*args)
    finally:
        numba.set_num_threads(threads)


@pytest.mark.parametrize("varying", [False, True])
def test_concurrent_passes_equal_serial_ones(concurrent, varying):
    rng = np.random.default_rng(11)
    T, K = 3000, 4
    ll = rng.normal(0.0, 3.0, size=(T, K))
    ll[1000] = [-1e4, -1e4 - 3.0, 0.0, -1e4]  # an outlier only an unlikely state explains
    A = rng.dirichlet(np.ones(K), size=(T if varying else 1, K))
    pi, offsets = rng.dirichlet(np.ones(K)), np.array([0, T])
    smoother = kernels.forward_backward_varying if varying else kernels.forward_backward
    for got, expected in zip(smoother(ll, offsets, pi, A), _serial(smoother, ll, offsets, pi, A)):
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("concurrently", [False, True])
def test_deferred_normalisation_matches_log_space(concurrently, monkeypatch):
    """The forward and backward passes carry unnormalised messages and rescale them only
    when their total falls below 1e-20. With evidence spread over e^-60 per step that
    happens every few dozen steps; the results must still be the log-space ones."""
    if concurrently:
        if numba.get_num_threads() < 2:
            pytest.skip("the concurrent passes need two threads")
        monkeypatch.setattr(kernel_module, "_CONCURRENT_LENGTH", 1)
    rng = np.random.default_rng(3)
    ll = rng.uniform(-60.0, 0.0, size=(600, 3))
    A = rng.dirichlet(2.0 * np.ones(3), size=3)
    pi = rng.dirichlet(np.ones(3))
    offsets = np.array([0, len(ll)])
    log_lik, posteriors, pairs = kernels.forward_backward(ll, offsets, pi, A[None])
    log_z, expected_posteriors, expected_pairs = log_space_forward_backward(ll, pi, A)
    np.testing.assert_allclose(log_lik[0], log_z, rtol=1e-12)
    np.testing.assert_allclose(kernels.log_likelihood(ll, offsets, pi, A[None])[0], log_z, rtol=1e-12)
    np.testing.assert_allclose(posteriors, expected_posteriors, rtol=0, atol=1e-9)
    np.testing.assert_allclose(pairs, expected_pairs, rtol=1e-9)  # sums over 600 steps


@pytest.mark.parametrize("gap", [400.0, 1e4])
@pytest.mark.parametrize("favoured", [slice(1, 3), slice(4, 6), slice(2, 4)])  # first half, second, both
def test_concurrent_passes_fall_back_where_they_disagree(concurrent, gap, favoured):
    test_unreachable_state_favoured_by_data(gap, favoured)


def test_concurrent_passes_of_an_impossible_sequence(concurrent):
    ll = np.zeros((50, 2))
    ll[20] = -np.inf
    log_lik, posteriors, pairs = kernels.forward_backward(ll, np.array([0, 50]), np.array([0.5, 0.5]), np.eye(2)[None])
    assert log_lik[0] == -np.inf and np.isnan(posteriors).all() and (pairs == 0).all()


@pytest.mark.parametrize("varying", [False, True])
def test_scratch_arrays_are_reused_and_change_nothing(varying):
    """An EM loop passes one dict to every E-step; the results equal fresh calls'."""
    rng = np.random.default_rng(4)
    T, K = 500, 3
    A = rng.dirichlet(np.ones(K), size=(T if varying else 1, K))
    pi, offsets = rng.dirichlet(np.ones(K)), np.array([0, 200, T])
    smoother = kernels.forward_backward_varying if varying else kernels.forward_backward
    scratch: dict = {}
    for seed in range(3):
        ll = np.random.default_rng(seed).normal(0.0, 3.0, size=(T, K))
        expected = smoother(ll, offsets, pi, A)
        got = smoother(ll, offsets, pi, A, scratch=scratch)
        if seed == 0:
            kept = {name: array for name, array in scratch.items()}
        for g, e in zip(got, expected):
            np.testing.assert_array_equal(g, e)
    assert kept and all(scratch[name] is array for name, array in kept.items())


def test_forward_filter_of_an_impossible_sequence_leaves_nan_after_the_impossible_step():
    """The pass stops at a step no state can emit: log-likelihood -inf, the rows up to it as
    computed, and NaN after it (never whatever memory held: a caller mapping the rows, as Markov
    switching's regime sums do, must not meet garbage of size 1e299 before its check)."""
    ll = np.log(np.full((6, 2), 0.5))
    ll[3] = -np.inf
    offsets = np.array([0, 6])
    pi, A = np.array([0.5, 0.5]), np.array([[[0.9, 0.1], [0.2, 0.8]]])
    for _ in range(3):  # fresh buffers each call
        filtered, log_lik = kernels.forward_filter(ll, offsets, pi, A)
        assert log_lik[0] == -np.inf
        assert np.isfinite(filtered[:3]).all() and np.isnan(filtered[4:]).all()
