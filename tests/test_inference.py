"""modeshift.inference against brute force on tiny models, against the kernels, and its checks."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.stats import multivariate_normal

import modeshift._kernels as kernels
from modeshift import inference


# --------------------------------------------------------------- hidden Markov chains
def _chain(seed: int, n_steps: int, n_states: int, varying: bool):
    rng = np.random.default_rng(seed)
    initial = rng.dirichlet(np.ones(n_states))
    matrices = rng.dirichlet(np.ones(n_states), size=(n_steps, n_states) if varying else n_states)
    return rng.normal(size=(n_steps, n_states)), initial, matrices


def _joint(log_likelihoods, initial, matrices, path) -> float:
    """log p(y, path) of one sequence."""
    step = (lambda t: matrices[t]) if matrices.ndim == 3 else (lambda t: matrices)
    value = np.log(initial[path[0]]) + log_likelihoods[0, path[0]]
    for t in range(1, len(path)):
        value += np.log(step(t)[path[t - 1], path[t]]) + log_likelihoods[t, path[t]]
    return value


def _enumerate(log_likelihoods, initial, matrices):
    """Every path of one sequence with its log p(y, path)."""
    n_steps, n_states = log_likelihoods.shape
    paths = np.array(list(itertools.product(range(n_states), repeat=n_steps)))
    return paths, np.array([_joint(log_likelihoods, initial, matrices, path) for path in paths])


@pytest.mark.parametrize("varying", [False, True])
def test_hmm_functions_agree_with_enumerating_every_path(varying):
    log_likelihoods, initial, matrices = _chain(0, 5, 3, varying)
    paths, joint = _enumerate(log_likelihoods, initial, matrices)
    evidence = np.logaddexp.reduce(joint)
    weights = np.exp(joint - evidence)
    marginals = np.stack([np.bincount(paths[:, t], weights, minlength=3) for t in range(5)])
    switches = np.zeros((3, 3))
    for path, weight in zip(paths, weights):
        np.add.at(switches, (path[:-1], path[1:]), weight)
    filtered = []
    for t in range(5):  # p(z_t | y_0..t): enumerate the prefixes
        prefixes, prefix_joint = _enumerate(
            log_likelihoods[: t + 1], initial, matrices[: t + 1] if varying else matrices
        )
        filtered.append(
            np.bincount(prefixes[:, t], np.exp(prefix_joint - np.logaddexp.reduce(prefix_joint)), minlength=3)
        )

    smoothed = inference.forward_backward(log_likelihoods, initial, matrices)
    np.testing.assert_allclose(smoothed.probabilities, marginals, atol=1e-12)
    np.testing.assert_allclose(smoothed.expected_transitions, switches, atol=1e-12)
    assert smoothed.log_likelihood == pytest.approx(evidence, abs=1e-12)
    result = inference.forward_filter(log_likelihoods, initial, matrices)
    np.testing.assert_allclose(result.probabilities, filtered, atol=1e-12)
    assert result.log_likelihood == pytest.approx(evidence, abs=1e-12)
    assert inference.log_likelihood(log_likelihoods, initial, matrices) == pytest.approx(evidence, abs=1e-12)
    decoded = inference.viterbi(log_likelihoods, initial, matrices)
    np.testing.assert_array_equal(decoded.path, paths[np.argmax(joint)])
    assert decoded.log_probability == pytest.approx(joint.max(), abs=1e-12)


def test_several_sequences_are_independent_and_their_log_likelihoods_add_up():
    log_likelihoods, initial, matrix = _chain(1, 9, 2, False)
    whole = inference.forward_backward(log_likelihoods, initial, matrix, lengths=[4, 5])
    first = inference.forward_backward(log_likelihoods[:4], initial, matrix)
    second = inference.forward_backward(log_likelihoods[4:], initial, matrix)
    np.testing.assert_allclose(whole.probabilities, np.r_[first.probabilities, second.probabilities], atol=1e-12)
    np.testing.assert_allclose(whole.expected_transitions, first.expected_transitions + second.expected_transitions)
    assert whole.log_likelihood == pytest.approx(first.log_likelihood + second.log_likelihood)
    path = inference.viterbi(log_likelihoods, initial, matrix, lengths=[4, 5]).path
    np.testing.assert_array_equal(
        path,
        np.r_[
            inference.viterbi(log_likelihoods[:4], initial, matrix).path,
            inference.viterbi(log_likelihoods[4:], initial, matrix).path,
        ],
    )


def test_posterior_paths_are_drawn_with_their_posterior_probabilities():
    log_likelihoods, initial, matrix = _chain(2, 3, 2, False)
    paths, joint = _enumerate(log_likelihoods, initial, matrix)
    n_draws = 40_000  # one call: the sequence repeated, a sequence per draw
    draws = inference.sample_posterior(
        np.tile(log_likelihoods, (n_draws, 1)), initial, matrix, lengths=[3] * n_draws, random_state=0
    ).reshape(n_draws, 3)
    codes = draws @ np.array([4, 2, 1])
    frequencies = np.bincount(codes, minlength=8) / n_draws
    expected = np.exp(joint - np.logaddexp.reduce(joint))[np.argsort(paths @ np.array([4, 2, 1]))]
    np.testing.assert_allclose(frequencies, expected, atol=4 * np.sqrt(0.25 / n_draws))
    again = inference.sample_posterior(log_likelihoods, initial, matrix, random_state=5)
    np.testing.assert_array_equal(again, inference.sample_posterior(log_likelihoods, initial, matrix, random_state=5))


def test_hmm_functions_return_what_the_kernels_return():
    log_likelihoods, initial, matrix = _chain(3, 30, 4, False)
    offsets = np.array([0, 12, 30])
    lik, posteriors, pairs = kernels.forward_backward(log_likelihoods, offsets, initial, matrix[None])
    smoothed = inference.forward_backward(log_likelihoods, initial, matrix, lengths=[12, 18])
    np.testing.assert_array_equal(smoothed.probabilities, posteriors)
    np.testing.assert_array_equal(smoothed.expected_transitions, pairs)
    assert smoothed.log_likelihood == lik.sum()
    path, log_prob = kernels.viterbi(log_likelihoods, offsets, np.log(initial), np.log(matrix)[None])
    decoded = inference.viterbi(log_likelihoods, initial, matrix, lengths=[12, 18])
    np.testing.assert_array_equal(decoded.path, path)
    assert decoded.log_probability == log_prob.sum()


def test_forbidden_switches_and_impossible_emissions():
    initial, matrix = np.array([1.0, 0.0]), np.array([[0.5, 0.5], [0.0, 1.0]])  # mode 1 is absorbing
    log_likelihoods = np.log([[0.5, 0.5], [0.1, 0.9], [0.9, 0.1]])
    log_likelihoods[1, 0] = -np.inf  # only mode 1 can emit step 1
    smoothed = inference.forward_backward(log_likelihoods, initial, matrix)
    np.testing.assert_allclose(smoothed.probabilities, [[1, 0], [0, 1], [0, 1]], atol=1e-15)
    np.testing.assert_array_equal(inference.viterbi(log_likelihoods, initial, matrix).path, [0, 1, 1])
    log_likelihoods[2, 1] = -np.inf  # and only mode 0 step 2: impossible
    with pytest.raises(ValueError, match="sequence 0 has probability zero"):
        inference.forward_filter(log_likelihoods, initial, matrix)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"log_likelihoods": np.zeros(3)}, r"log_likelihoods must be a non-empty \(n_steps, K\) array"),
        ({"log_likelihoods": [[0.0, np.nan]] * 3}, "log_likelihoods must be finite or -inf"),
        ({"log_likelihoods": [[0.0, np.inf]] * 3}, "log_likelihoods must be finite or -inf"),
        ({"initial_probs": [0.5, 0.6]}, r"initial_probs must sum to 1, sums to 1.1"),
        ({"initial_probs": [1.5, -0.5]}, r"initial_probs must hold probabilities"),
        ({"initial_probs": [1.0]}, r"initial_probs must have shape \(2,\)"),
        ({"transition_matrix": [[0.9, 0.1], [0.3, 0.6]]}, r"transition_matrix\[1\] must sum to 1"),
        ({"transition_matrix": np.full((2, 2, 2), 0.5)}, r"transition_matrix must be \(2, 2\) or one per step"),
        ({"lengths": [1, 1]}, "lengths sum to 2 but there are 3 steps"),
        ({"lengths": [3, 0]}, "lengths must be positive integers"),
        ({"lengths": [1.5, 1.5]}, "lengths must be positive integers"),
    ],
)
def test_hmm_arguments_are_checked(change, message):
    arguments = {
        "log_likelihoods": np.zeros((3, 2)),
        "initial_probs": [0.5, 0.5],
        "transition_matrix": [[0.9, 0.1], [0.2, 0.8]],
        "lengths": None,
        **change,
    }
    for function in (inference.forward_filter, inference.forward_backward, inference.viterbi, inference.log_likelihood):
        lengths = arguments.pop("lengths", None)
        with pytest.raises(ValueError, match=message):
            function(*arguments.values(), lengths=lengths)
        arguments["lengths"] = lengths


# ------------------------------------------------------------------ Kalman filtering
def _linear_gaussian(seed: int, n_steps: int = 4, n: int = 2, p: int = 2, m: int = 1):
    rng = np.random.default_rng(seed)

    def covariance(size):
        root = rng.normal(size=(size, size))
        return root @ root.T + 0.5 * np.eye(size)

    return {
        "observations": rng.normal(size=(n_steps, p)),
        "initial_mean": rng.normal(size=n),
        "initial_covariance": covariance(n),
        "dynamics_matrix": 0.5 * rng.normal(size=(n, n)),
        "dynamics_covariance": covariance(n),
        "observation_matrix": rng.normal(size=(p, n)),
        "observation_covariance": covariance(p),
        "inputs": rng.normal(size=(n_steps, m)),
        "control_matrix": rng.normal(size=(n, m)),
        "feedthrough_matrix": rng.normal(size=(p, m)),
    }


def _joint_gaussian(a):
    """Means and covariance of the stacked states x_0..x_T-1 and observations y_0..y_T-1."""
    y, u = a["observations"], a["inputs"]
    T, n = len(y), len(a["initial_mean"])
    A, B, C, D = a["dynamics_matrix"], a["control_matrix"], a["observation_matrix"], a["feedthrough_matrix"]
    mean_x, loading = np.zeros((T, n)), np.zeros((T, n, T, n))  # x_t = mean_x[t] + sum_s loading[t, :, s] e_s
    mean_x[0], loading[0, :, 0] = a["initial_mean"], np.eye(n)
    for t in range(1, T):
        mean_x[t] = A @ mean_x[t - 1] + B @ u[t]
        loading[t] = np.einsum("ij,jsk->isk", A, loading[t - 1])
        loading[t, :, t] = np.eye(n)
    noise = np.zeros((T * n, T * n))
    noise[:n, :n] = a["initial_covariance"]
    for t in range(1, T):
        noise[t * n : (t + 1) * n, t * n : (t + 1) * n] = a["dynamics_covariance"]
    L = loading.reshape(T * n, T * n)
    cov_x = L @ noise @ L.T
    to_y = np.kron(np.eye(T), C)
    mean = np.r_[mean_x.ravel(), (mean_x @ C.T + u @ D.T).ravel()]
    cov_xy = cov_x @ to_y.T
    cov_y = to_y @ cov_x @ to_y.T + np.kron(np.eye(T), a["observation_covariance"])
    return mean, np.block([[cov_x, cov_xy], [cov_xy.T, cov_y]]), T * n


def _condition(mean, cov, n_x, values, rows):
    """Mean and covariance of the states given the observations at ``rows`` (indices into y)."""
    observed = n_x + rows
    gain = cov[:n_x, observed] @ np.linalg.inv(cov[np.ix_(observed, observed)])
    return mean[:n_x] + gain @ (values[rows] - mean[observed]), cov[:n_x, :n_x] - gain @ cov[observed, :n_x]


def test_kalman_filter_and_smoother_are_gaussian_conditioning():
    a = _linear_gaussian(0)
    a["observations"][1, 0] = np.nan  # one missing entry
    mean, cov, n_x = _joint_gaussian(a)
    T, n = a["observations"].shape[0], len(a["initial_mean"])
    values = a["observations"].ravel()
    present = np.flatnonzero(~np.isnan(values))

    def given(last_step):  # states given the observed y_0..y_last_step
        rows = present[present < (last_step + 1) * a["observations"].shape[1]]
        return _condition(mean, cov, n_x, values, rows)

    filtered = inference.kalman_filter(**a)
    smoothed = inference.kalman_smoother(**a)
    for t in range(T):
        block = slice(t * n, (t + 1) * n)
        m, c = given(t)
        np.testing.assert_allclose(filtered.means[t], m[block], atol=1e-10)
        np.testing.assert_allclose(filtered.covariances[t], c[block, block], atol=1e-10)
        m, c = given(t - 1)
        np.testing.assert_allclose(filtered.predicted_means[t], m[block], atol=1e-10)
        np.testing.assert_allclose(filtered.predicted_covariances[t], c[block, block], atol=1e-10)
        m, c = given(T - 1)
        np.testing.assert_allclose(smoothed.means[t], m[block], atol=1e-10)
        np.testing.assert_allclose(smoothed.covariances[t], c[block, block], atol=1e-10)
        if t > 0:
            np.testing.assert_allclose(smoothed.cross_covariances[t], c[block, (t - 1) * n : t * n], atol=1e-10)
    evidence = multivariate_normal(mean[n_x:][present], cov[np.ix_(n_x + present, n_x + present)]).logpdf(
        values[present]
    )
    assert filtered.log_likelihood == pytest.approx(evidence, abs=1e-10)
    assert smoothed.log_likelihood == pytest.approx(evidence, abs=1e-10)


def test_kalman_functions_return_what_the_kernels_return():
    a = _linear_gaussian(1, n_steps=20)
    for name in ("inputs", "control_matrix", "feedthrough_matrix"):
        del a[name]
    offsets = np.array([0, 8, 20])
    arrays = [a[name] for name in list(a)[1:]]
    lik, fm, fc, pm, pc = kernels.kalman_filter(a["observations"], offsets, *arrays)
    sm, sc, cc = kernels.rts_smoother(a["observations"], offsets, fm, fc, pm, pc, arrays[2], *arrays[4:])
    filtered = inference.kalman_filter(**a, lengths=[8, 12])
    smoothed = inference.kalman_smoother(**a, lengths=[8, 12])
    for got, want in zip(filtered, (fm, fc, pm, pc, lik.sum())):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(smoothed, (sm, sc, cc, lik.sum())):
        np.testing.assert_array_equal(got, want)


def test_time_varying_matrices_are_used_step_by_step():
    a = _linear_gaussian(2, n_steps=3)
    varying = dict(
        a,
        dynamics_matrix=np.stack([a["dynamics_matrix"]] * 3),
        observation_covariance=np.stack([a["observation_covariance"]] * 3),
    )
    np.testing.assert_allclose(inference.kalman_smoother(**varying).means, inference.kalman_smoother(**a).means)
    varying["dynamics_matrix"][2] *= 2.0
    changed = inference.kalman_filter(**varying)
    unchanged = inference.kalman_filter(**a)
    np.testing.assert_allclose(changed.means[:2], unchanged.means[:2])
    assert not np.allclose(changed.means[2], unchanged.means[2])


def test_a_known_initial_state_and_a_singular_dynamics_noise_are_allowed():
    """Covariances need only be positive semi-definite (an exact start, a noiseless trend)."""
    a = _linear_gaussian(3)
    a["initial_covariance"] = np.zeros((2, 2))
    a["dynamics_covariance"] = np.diag([1.0, 0.0])
    filtered = inference.kalman_filter(**a)
    np.testing.assert_allclose(filtered.predicted_covariances[0], 0.0)
    np.testing.assert_allclose(filtered.predicted_means[0], a["initial_mean"])


@pytest.mark.parametrize(
    "change, message",
    [
        ({"observations": np.full((4, 2), np.inf)}, "observations must be finite"),
        ({"observations": np.zeros((4, 2, 1))}, r"observations must be a non-empty \(n_steps, p\) array"),
        ({"initial_mean": [np.nan, 0.0]}, "initial_mean must be a finite"),
        ({"initial_covariance": [[1.0, 0.5], [0.0, 1.0]]}, "initial_covariance must be symmetric"),
        ({"initial_covariance": [[1.0, 2.0], [2.0, 1.0]]}, "initial_covariance must be positive semi-definite"),
        ({"dynamics_matrix": np.eye(3)}, r"dynamics_matrix must be \(2, 2\) or one per step"),
        (
            {"dynamics_covariance": np.stack([np.eye(2), -np.eye(2), np.eye(2), np.eye(2)])},
            r"dynamics_covariance\[1\] must be positive semi-definite",
        ),
        ({"observation_matrix": np.ones((1, 2))}, r"observation_matrix must be \(2, 2\)"),
        ({"observation_covariance": [[1.0, 0.0], [0.0, np.nan]]}, "observation_covariance must be finite"),
        ({"inputs": np.zeros((3, 1))}, r"inputs must be a finite \(4, m\) array"),
        ({"control_matrix": np.zeros((2, 2))}, r"control_matrix must be \(2, 1\)"),
        ({"inputs": None}, "control_matrix and feedthrough_matrix act on inputs"),
        ({"lengths": [2, 3]}, "lengths sum to 5 but there are 4 steps"),
    ],
)
def test_kalman_arguments_are_checked(change, message):
    arguments = {**_linear_gaussian(4), **change}
    for function in (inference.kalman_filter, inference.kalman_smoother):
        with pytest.raises(ValueError, match=message):
            function(**arguments)


def test_an_innovation_covariance_that_is_not_positive_definite_is_refused():
    a = _linear_gaussian(5)
    a["observation_covariance"] = np.zeros((2, 2))
    a["observation_matrix"] = np.zeros((2, 2))
    with pytest.raises(ValueError, match="innovation covariance is not positive definite"):
        inference.kalman_filter(**a)


def test_the_exact_diffuse_start_matches_the_model_and_is_checked():
    from modeshift import LinearGaussianSSM

    y = np.array([1120.0, 1160.0, np.nan, 963.0, 1210.0, 1160.0, 1160.0, 813.0])
    model = LinearGaussianSSM.local_level()
    model.transition_covariance_, model.observation_covariance_ = np.array([[1469.1]]), np.array([[15099.0]])
    args = (y, [0.0], [[0.0]], [[1.0]], [[1469.1]], [[1.0]], [[15099.0]])
    filtered = inference.kalman_filter(*args, diffuse=[True])
    smoothed = inference.kalman_smoother(*args, diffuse=[True])
    assert filtered.log_likelihood == pytest.approx(model.score(y), rel=1e-12)
    expected = model.smooth(y)
    np.testing.assert_allclose(smoothed.means, expected.means, rtol=1e-12)
    np.testing.assert_allclose(smoothed.covariances, expected.covariances, rtol=1e-10)
    with pytest.raises(ValueError, match="diffuse must be 1 bools"):
        inference.kalman_filter(*args, diffuse=[1])
