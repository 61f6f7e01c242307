"""The Kalman kernels against the joint Gaussian of states and observations.

For a linear-Gaussian state-space model, (x_0..x_T-1, y_0..y_T-1) is one Gaussian
vector: a linear map of (x_0, w_1..w_T-1, v_0..v_T-1). For T <= 5 it is built here
by hand; the log-likelihood is the density of the observed entries, and filtered,
predicted and smoothed moments (and the lag-one cross-covariances) are blocks of the
Gaussian conditional given the observed entries up to t, up to t - 1, or all. The
kernels must agree to rounding error, with missing entries, inputs, time-varying
parameters and degenerate (singular) state covariances.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import linalg, stats
from test_kernels_lds_score import smoother_disturbances

from modeshift import _kernels as kernels

LENGTHS = [3, 1, 5]
TOL = {"rtol": 1e-9, "atol": 1e-10}


# --------------------------------------------------------------------------- references
def _spd(rng, d, scale=1.0):
    w = rng.normal(size=(d, d))
    return scale * (w @ w.T / d + 0.5 * np.eye(d))


def random_model(rng, n, p, m, n_steps, *, varying=False, inputs=False):
    """Parameters as stacks with a leading axis of n_steps (varying) or 1."""
    k = n_steps if varying else 1
    A = rng.normal(scale=0.5, size=(k, n, n)) + 0.5 * np.eye(n)
    Q = np.stack([_spd(rng, n, 0.3) for _ in range(k)])
    C = rng.normal(size=(k, p, n))
    R = np.stack([_spd(rng, p, 0.5) for _ in range(k)])
    model = {
        "initial_mean": rng.normal(size=n),
        "initial_cov": _spd(rng, n),
        "transition_matrices": A,
        "transition_covs": Q,
        "observation_matrices": C,
        "observation_covs": R,
    }
    if inputs:
        model["inputs"] = rng.normal(size=(n_steps, m))
        model["input_matrices"] = rng.normal(size=(k, n, m))
        model["feedthrough_matrices"] = rng.normal(size=(k, p, m))
    return model


def offsets_of(lengths):
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def _steps(stack, first, last):
    stack = np.asarray(stack, dtype=float)
    stack = stack[None] if stack.ndim == 2 else stack
    return stack[first:last] if len(stack) > 1 else np.repeat(stack, last - first, axis=0)


def sequence_model(model, offsets, s):
    """Per-step parameters (T, ...) and the prior of sequence s."""
    first, last = offsets[s], offsets[s + 1]
    n = model["transition_matrices"].shape[-1]
    p = model["observation_matrices"].shape[-2]
    u = model.get("inputs", np.zeros((offsets[-1], 0)))
    m = u.shape[1]
    prior_mean = np.reshape(model["initial_mean"], (-1, n))
    prior_cov = np.reshape(model["initial_cov"], (-1, n, n))
    return (
        prior_mean[s if len(prior_mean) > 1 else 0],
        prior_cov[s if len(prior_cov) > 1 else 0],
        _steps(model["transition_matrices"], first, last),
        _steps(model.get("input_matrices", np.zeros((1, n, m))), first, last),
        _steps(model["transition_covs"], first, last),
        _steps(model["observation_matrices"], first, last),
        _steps(model.get("feedthrough_matrices", np.zeros((1, p, m))), first, last),
        _steps(model["observation_covs"], first, last),
        u[first:last],
    )


def joint_gaussian(m0, P0, A, B, Q, C, D, R, u):
    """Mean and covariance of (x_0..x_T-1, y_0..y_T-1), states first, time-major."""
    T, n, p = len(A), len(m0), C.shape[1]
    size = T * (n + p)
    noise_cov = linalg.block_diag(P0, *Q[1:], *R)  # (x_0, w_1..w_T-1, v_0..v_T-1)
    gain, mean = np.zeros((size, size)), np.zeros(size)

    def xs(t):
        return slice(t * n, (t + 1) * n)

    def ys(t):
        return slice(T * n + t * p, T * n + (t + 1) * p)

    for t in range(T):
        if t == 0:
            mean[xs(0)] = m0
        else:
            gain[xs(t)] = A[t] @ gain[xs(t - 1)]
            mean[xs(t)] = A[t] @ mean[xs(t - 1)] + B[t] @ u[t]
        gain[xs(t), xs(t)] += np.eye(n)
        gain[ys(t)] = C[t] @ gain[xs(t)]
        gain[ys(t), ys(t)] += np.eye(p)
        mean[ys(t)] = C[t] @ mean[xs(t)] + D[t] @ u[t]
    return mean, gain @ noise_cov @ gain.T


def condition(mean, cov, given, values):
    if len(given) == 0:
        return mean, cov
    weights = np.linalg.solve(cov[np.ix_(given, given)], cov[given])
    return mean + weights.T @ (values - mean[given]), cov - cov[:, given] @ weights


def brute_force(y, parameters):
    """Exact log p(y_obs), predicted, filtered and smoothed moments, cross-covariances,
    and the posterior mean and covariance of the whole state path."""
    mean, cov = joint_gaussian(*parameters)
    T, p = y.shape
    n = len(parameters[0])
    flat = y.ravel()
    observed = np.flatnonzero(~np.isnan(flat))
    given, times, values = T * n + observed, observed // p, flat[observed]
    log_lik = stats.multivariate_normal(mean[given], cov[np.ix_(given, given)]).logpdf(values) if len(given) else 0.0

    def moments(upto):
        keep = times <= upto
        post_mean, post_cov = condition(mean, cov, given[keep], values[keep])
        return post_mean[: T * n].reshape(T, n), post_cov[: T * n, : T * n]

    def blocks(post_cov):
        return np.array([post_cov[t * n : (t + 1) * n, t * n : (t + 1) * n] for t in range(T)])

    out = {"log_lik": log_lik}
    for key, shift in (("predicted", -1), ("filtered", 0)):
        out[f"{key}_means"] = np.empty((T, n))
        out[f"{key}_covs"] = np.empty((T, n, n))
        for t in range(T):
            m, c = moments(t + shift)
            out[f"{key}_means"][t], out[f"{key}_covs"][t] = m[t], blocks(c)[t]
    path_mean, path_cov = moments(T)
    out["smoothed_means"], out["smoothed_covs"] = path_mean, blocks(path_cov)
    out["cross_covs"] = np.zeros((T, n, n))
    for t in range(1, T):
        out["cross_covs"][t] = path_cov[t * n : (t + 1) * n, (t - 1) * n : t * n]
    out["path_mean"], out["path_cov"] = path_mean.ravel(), path_cov
    return out


def _observation_model(model):
    """The arguments of the smoother after the predicted moments."""
    keys = ("transition_matrices", "observation_matrices", "observation_covs")
    return (*(model[key] for key in keys), model.get("inputs"), model.get("feedthrough_matrices"))


def run_kernels(y, offsets, model):
    ll, fm, fc, pm, pc = kernels.kalman_filter(y, offsets, **model)
    sm, sc, cc = kernels.rts_smoother(y, offsets, fm, fc, pm, pc, *_observation_model(model))
    return {
        "log_lik": ll,
        "filtered_means": fm,
        "filtered_covs": fc,
        "predicted_means": pm,
        "predicted_covs": pc,
        "smoothed_means": sm,
        "smoothed_covs": sc,
        "cross_covs": cc,
    }


# --------------------------------------------------------------------------- cases
def make_case(name):
    rng = np.random.default_rng(sum(map(ord, name)))
    offsets = offsets_of(LENGTHS)
    n_steps = int(offsets[-1])
    n, p, m = 3, 2, 2
    model = random_model(
        rng,
        n,
        p,
        m,
        n_steps,
        varying=name in ("varying", "everything"),
        inputs=name in ("inputs", "everything"),
    )
    y = rng.normal(scale=2.0, size=(n_steps, p))
    if name == "plain":  # single matrices stand for stacks of one
        model = {key: value[0] if np.ndim(value) == 3 else value for key, value in model.items()}
    if name in ("varying", "everything"):
        # entries at sequence starts are never read
        for key in ("transition_matrices", "transition_covs", "input_matrices"):
            if key in model:
                model[key][offsets[:-1]] = np.nan
    if name in ("missing", "everything"):
        y[rng.random(y.shape) < 0.3] = np.nan
        y[offsets[0] + 1] = np.nan  # a wholly missing step
        y[offsets[1]] = np.nan  # a wholly missing sequence of length 1
        y[offsets[2] + 2, 0] = np.nan
    if name == "per-sequence prior":
        model["initial_mean"] = rng.normal(size=(len(LENGTHS), n))
        model["initial_cov"] = np.stack([_spd(rng, n) for _ in LENGTHS])
    if name.startswith("degenerate"):
        # a known start and a state coordinate without noise that drives the others:
        # every P_t|t-1 is singular (a zero first Cholesky pivot), so the smoother
        # needs a generalised inverse; rotated, the zero pivots come from rounding
        rotation = np.linalg.qr(rng.normal(size=(n, n)))[0] if name.endswith("rotated") else np.eye(n)
        dynamics = np.array([[0.5, 0.0, 0.0], [0.3, 0.9, 0.2], [0.2, 0.0, 0.8]])
        model["initial_cov"] = np.zeros((n, n))
        model["transition_matrices"] = (rotation @ dynamics @ rotation.T)[None]
        model["transition_covs"] = (rotation @ np.diag([0.0, 0.7, 0.4]) @ rotation.T)[None]
    return y, offsets, model


CASES = [
    "plain",
    "inputs",
    "varying",
    "missing",
    "per-sequence prior",
    "degenerate",
    "degenerate rotated",
    "everything",
]


@pytest.mark.parametrize("name", CASES)
def test_matches_joint_gaussian(name):
    y, offsets, model = make_case(name)
    got = run_kernels(y, offsets, model)
    for s in range(len(LENGTHS)):
        first, last = offsets[s], offsets[s + 1]
        want = brute_force(y[first:last], sequence_model(model, offsets, s))
        np.testing.assert_allclose(got["log_lik"][s], want["log_lik"], **TOL)
        for key in (
            "predicted_means",
            "predicted_covs",
            "filtered_means",
            "filtered_covs",
            "smoothed_means",
            "smoothed_covs",
            "cross_covs",
        ):
            np.testing.assert_allclose(got[key][first:last], want[key], **TOL, err_msg=f"{key}, sequence {s}")


def _singular_case(name):
    """Models whose predicted covariances are singular (zero or rank-deficient Q, R, P_0), one
    sequence of 7 steps; the observations are always jointly non-degenerate."""
    if name == "AR(2) without noise":  # companion form, y_t = x_t exactly: P_t|t = 0 after two steps
        A, Q = np.array([[0.5, 0.3], [1.0, 0.0]]), np.diag([1.0, 0.0])
        C, R = np.array([[1.0, 0.0]]), np.zeros((1, 1))
        P0 = linalg.solve_discrete_lyapunov(A, Q)
    elif name == "ARMA(1, 1) Harvey":  # (x_t, theta e_t), one shock drives both
        phi, theta = 0.6, 0.4
        A, Q = np.array([[phi, 1.0], [0.0, 0.0]]), np.outer([1.0, theta], [1.0, theta])
        C, R = np.array([[1.0, 0.0]]), np.zeros((1, 1))
        P0 = linalg.solve_discrete_lyapunov(A, Q)
    else:  # level + dummy seasonal of period 4, known start, one missing step
        A = linalg.block_diag([[1.0]], [[-1.0, -1.0, -1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
        Q, C, R = np.diag([0.3, 0.5, 0.0, 0.0]), np.array([[1.0, 1.0, 0.0, 0.0]]), np.array([[0.2]])
        P0 = np.zeros((4, 4))
    n = len(A)
    model = {
        "initial_mean": np.arange(n) / n,
        "initial_cov": P0,
        "transition_matrices": A[None],
        "transition_covs": Q[None],
        "observation_matrices": C[None],
        "observation_covs": R[None],
    }
    y = np.random.default_rng(len(name)).normal(size=(7, 1))
    if name.startswith("level"):
        y[3] = np.nan
    return y, np.array([0, 7]), model


@pytest.mark.parametrize("name", ["AR(2) without noise", "ARMA(1, 1) Harvey", "level + seasonal"])
def test_singular_covariances_match_joint_gaussian(name):
    y, offsets, model = _singular_case(name)
    got = run_kernels(y, offsets, model)
    n = len(model["initial_mean"])
    assert np.linalg.matrix_rank(model["transition_covs"][0]) < n  # and in the AR(2), P_t|t-1 = Q from step 2 on
    want = brute_force(y, sequence_model(model, offsets, 0))
    np.testing.assert_allclose(got["log_lik"][0], want["log_lik"], **TOL)
    for key in ("filtered_means", "filtered_covs", "smoothed_means", "smoothed_covs", "cross_covs"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-9, atol=1e-9, err_msg=key)


def test_missing_steps_are_pure_predictions():
    y, offsets, model = make_case("missing")
    got = run_kernels(y, offsets, model)
    whole = np.isnan(y).all(axis=1)
    np.testing.assert_array_equal(got["filtered_means"][whole], got["predicted_means"][whole])
    np.testing.assert_array_equal(got["filtered_covs"][whole], got["predicted_covs"][whole])
    assert got["log_lik"][1] == 0.0  # the wholly missing sequence
    np.testing.assert_array_equal(got["smoothed_means"][offsets[1]], model["initial_mean"])


def test_empty_sequences_change_nothing():
    y, offsets, model = make_case("missing")
    with_empty = np.insert(offsets, [1, 3], [offsets[1], offsets[3]])  # before and after others
    got, want = run_kernels(y, with_empty, model), run_kernels(y, offsets, model)
    np.testing.assert_array_equal(got.pop("log_lik"), np.insert(want.pop("log_lik"), [1, 3], 0.0))
    for key in got:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    moments = _filter_moments(y, with_empty, model)
    draws = np.random.default_rng(0).standard_normal(y.shape[:1] + (3,))
    paths = kernels.sample_states(*moments, with_empty, model["transition_matrices"], model["transition_covs"], draws)
    assert np.isfinite(paths).all()


def test_outputs_are_symmetric():
    y, offsets, model = make_case("everything")
    got = run_kernels(y, offsets, model)
    for key in ("predicted_covs", "filtered_covs", "smoothed_covs"):
        np.testing.assert_array_equal(got[key], np.swapaxes(got[key], 1, 2))


# --------------------------------------------------------------------------- long sequence
def numpy_filter(y, m0, P0, A, Q, C, R):
    """Textbook Kalman filter (covariance form, partial missing rows dropped)."""
    n = len(m0)
    pm, pc, fm, fc = (np.empty((len(y), n)), np.empty((len(y), n, n)), np.empty((len(y), n)), np.empty((len(y), n, n)))
    m, P, total = m0, P0, 0.0
    for t in range(len(y)):
        if t > 0:
            m, P = A @ m, A @ P @ A.T + Q
        pm[t], pc[t] = m, P
        o = ~np.isnan(y[t])
        if o.any():
            Co, Ro = C[o], R[np.ix_(o, o)]
            S = Co @ P @ Co.T + Ro
            K = np.linalg.solve(S, Co @ P).T
            v = y[t, o] - Co @ m
            total += stats.multivariate_normal(np.zeros(o.sum()), S).logpdf(v)
            m, P = m + K @ v, P - K @ S @ K.T
        fm[t], fc[t] = m, P
    return total, fm, fc, pm, pc


def test_long_sequence():
    rng = np.random.default_rng(7)
    T, n, p = 100_000, 4, 2
    A = 0.95 * np.linalg.qr(rng.normal(size=(n, n)))[0]
    Q, R = _spd(rng, n, 0.1), _spd(rng, p, 0.5)
    C = rng.normal(size=(p, n))
    x = np.zeros(n)
    noise = rng.multivariate_normal(np.zeros(n), Q, size=T)
    states = np.empty((T, n))
    for t in range(T):  # a short loop over a cheap recursion (~0.1 s)
        x = A @ x + noise[t]
        states[t] = x
    y = states @ C.T + rng.multivariate_normal(np.zeros(p), R, size=T)
    y[rng.random(y.shape) < 0.1] = np.nan
    offsets = np.array([0, T])
    m0, P0 = np.zeros(n), np.eye(n)

    ll, fm, fc, pm, pc = kernels.kalman_filter(y, offsets, m0, P0, A, Q, C, R)
    sm, sc, cc = kernels.rts_smoother(y, offsets, fm, fc, pm, pc, A, C, R)
    assert np.isfinite(ll).all()
    for covs in (fc, pc, sc):
        np.testing.assert_array_equal(covs, np.swapaxes(covs, 1, 2))
        assert np.linalg.eigvalsh(covs).min() > 0
    assert np.isfinite(sm).all() and np.isfinite(cc).all()

    head = 200
    want = numpy_filter(y[:head], m0, P0, A, Q, C, R)
    got = kernels.kalman_filter(y[:head], np.array([0, head]), m0, P0, A, Q, C, R)
    np.testing.assert_allclose(got[0][0], want[0], rtol=1e-10)
    for kernel_out, reference in zip((fm, fc, pm, pc), want[1:]):
        np.testing.assert_allclose(kernel_out[:head], reference, rtol=1e-10, atol=1e-10)


def test_steady_state_shortcut_matches_the_full_recursion():
    """A time-invariant model takes the steady-state shortcut; the same model given as
    per-step stacks runs the full recursion at every step. They agree, also across
    missing entries that leave and re-enter the steady state."""
    rng = np.random.default_rng(11)
    lengths = [1500, 40, 900]
    offsets, T = offsets_of(lengths), sum(lengths)
    model = random_model(rng, 3, 2, 1, T, inputs=True)
    model["transition_matrices"] = 0.9 * np.linalg.qr(rng.normal(size=(3, 3)))[0][None]
    y = rng.normal(size=(T, 2))
    y[700:705] = np.nan
    y[1000, 1] = np.nan
    fast = run_kernels(y, offsets, model)
    repeated = {k: np.repeat(v, T, axis=0) if k in _STACKS else v for k, v in model.items()}
    full = run_kernels(y, offsets, repeated)

    pc, sc = fast["predicted_covs"], fast["smoothed_covs"]
    assert np.array_equal(pc[600], pc[601]) and np.array_equal(pc[1400], pc[1401])  # shortcut taken
    assert np.array_equal(sc[300], sc[301])
    assert not np.array_equal(pc[702], pc[703])  # left during the missing stretch
    for key, value in full.items():
        np.testing.assert_allclose(fast[key], value, rtol=1e-10, atol=1e-12, err_msg=key)


_STACKS = {
    "transition_matrices",
    "transition_covs",
    "observation_matrices",
    "observation_covs",
    "input_matrices",
    "feedthrough_matrices",
}


# --------------------------------------------------------------------------- sampler
def _filter_moments(y, offsets, model):
    _, *moments = kernels.kalman_filter(y, offsets, **model)
    return moments


@pytest.mark.parametrize("name", ["everything", "degenerate", "degenerate rotated"])
def test_sampler_is_exact_affine_map_of_draws(name):
    """x = mean + M z: zero draws give the posterior mean, unit draws the columns of M,
    and M M^T must be the posterior covariance of the whole path."""
    y, offsets, model = make_case(name)
    moments = _filter_moments(y, offsets, model)
    A, Q = model["transition_matrices"], model["transition_covs"]
    n_steps, n = moments[0].shape
    zero = kernels.sample_states(*moments, offsets, A, Q, np.zeros((n_steps, n)))
    units = np.eye(n_steps * n).reshape(n_steps * n, n_steps, n)
    columns = kernels.sample_states(*moments, offsets, A, Q, units) - zero
    for s in range(len(LENGTHS)):
        rows = slice(offsets[s], offsets[s + 1])
        want = brute_force(y[rows], sequence_model(model, offsets, s))
        np.testing.assert_allclose(zero[rows].ravel(), want["path_mean"], **TOL)
        factor = columns[:, rows].reshape(len(units), -1).T
        np.testing.assert_allclose(factor @ factor.T, want["path_cov"], **TOL)


def test_sampler_monte_carlo():
    """Sampled paths have the posterior mean and covariance of the whole path.

    Per entry, the sample mean has standard error sqrt(S_ii / N) and the sample
    covariance sqrt((S_ii S_jj + S_ij^2) / N) (Gaussian fourth moments); 5 standard
    errors make a false alarm over all entries less likely than 1e-4.
    """
    y, offsets, model = make_case("everything")
    moments = _filter_moments(y, offsets, model)
    n_steps, n = moments[0].shape
    N = 20_000
    draws = np.random.default_rng(3).standard_normal((N, n_steps, n))
    paths = kernels.sample_states(*moments, offsets, model["transition_matrices"], model["transition_covs"], draws)
    assert paths.shape == draws.shape
    single = kernels.sample_states(*moments, offsets, model["transition_matrices"], model["transition_covs"], draws[5])
    np.testing.assert_array_equal(single, paths[5])
    for s in range(len(LENGTHS)):
        rows = slice(offsets[s], offsets[s + 1])
        want = brute_force(y[rows], sequence_model(model, offsets, s))
        mu, S = want["path_mean"], want["path_cov"]
        sample = paths[:, rows].reshape(N, -1)
        var = np.diag(S)
        assert np.all(np.abs(sample.mean(axis=0) - mu) <= 5 * np.sqrt(var / N))
        cov_error = np.abs(np.cov(sample, rowvar=False) - S)
        assert np.all(cov_error <= 5 * np.sqrt((np.outer(var, var) + S**2) / N))


# --------------------------------------------------------------------------- failures
def _rank_deficient(observation_covs):
    """Two identical sensors of one state; sequence 1's step 2 is row 5."""
    n_steps = 9
    rng = np.random.default_rng(0)
    return (
        rng.normal(size=(n_steps, 2)),
        offsets_of([3, 6]),
        np.zeros(2),
        np.eye(2),
        np.eye(2) * 0.9,
        np.eye(2) * 0.1,
        np.array([[1.0, 0.0], [1.0, 0.0]]),
        observation_covs,
    )


def test_singular_innovation_covariance_raises():
    R = np.tile(np.eye(2), (9, 1, 1))
    for bad in (0.0, 1e-30):
        R[5] = bad * np.eye(2)
        with pytest.raises(ValueError, match="not positive definite at sequence 1, time step 2"):
            kernels.kalman_filter(*_rank_deficient(R))
    R = np.zeros((1, 2, 2))
    with pytest.raises(ValueError, match="sequence 0, time step 0"):
        kernels.kalman_filter(*_rank_deficient(R))


def test_singular_block_avoided_by_missing_entries():
    """With one of the two identical sensors missing, R = 0 leaves a 1x1 block C P C^T > 0."""
    y, offsets, *rest = _rank_deficient(np.zeros((1, 2, 2)))
    y[:, 1] = np.nan
    ll, fm, fc, _, _ = kernels.kalman_filter(y, offsets, *rest)
    assert np.isfinite(ll).all()
    np.testing.assert_allclose(fm[:, 0], y[:, 0], atol=1e-12)  # observed exactly


def test_nan_parameters_raise_instead_of_returning_nan():
    y, offsets, m0, P0, A, Q, C, R = _rank_deficient(np.eye(2))
    Q = np.tile(Q, (9, 1, 1))
    Q[7] = np.nan
    with pytest.raises(ValueError, match="sequence 1, time step 4"):
        kernels.kalman_filter(y, offsets, m0, P0, A, Q, C, R)


# --------------------------------------------------------------------------- peer parity
def _statsmodels_run(y, m0, P0, A, B, Q, C, D, R, u):
    """statsmodels' smoother with our time indexing.

    statsmodels' transition[..., t] and state_intercept[:, t] move alpha_t to
    alpha_t+1, so they take our A[t + 1] and B[t + 1] u[t + 1]; its initial state is,
    like ours, the prior of the state at the first observation.
    """
    from statsmodels.tsa.statespace.kalman_smoother import KalmanSmoother

    T, n = len(y), len(m0)
    ks = KalmanSmoother(k_endog=y.shape[1], k_states=n, k_posdef=n)
    ks.bind(y.copy())
    shift = np.concatenate([np.arange(1, T), [T - 1]])  # the last entry is never used
    ks["transition"] = np.moveaxis(A[shift], 0, -1)
    ks["state_intercept"] = np.einsum("tij,tj->it", B[shift], u[shift])
    ks["selection"] = np.eye(n)
    ks["state_cov"] = np.moveaxis(Q[shift], 0, -1)
    ks["design"] = np.moveaxis(C, 0, -1)
    ks["obs_intercept"] = np.einsum("tij,tj->it", D, u)
    ks["obs_cov"] = np.moveaxis(R, 0, -1)
    ks.initialize_known(m0, P0)
    return ks.smooth()


def test_parity_with_statsmodels():
    pytest.importorskip("statsmodels")
    rng = np.random.default_rng(5)
    lengths = [40, 1, 25]
    offsets = offsets_of(lengths)
    n_steps, n, p, m = int(offsets[-1]), 3, 2, 2
    model = random_model(rng, n, p, m, n_steps, varying=True, inputs=True)
    y = rng.normal(scale=2.0, size=(n_steps, p))
    y[rng.random(y.shape) < 0.2] = np.nan
    y[10] = np.nan
    got = run_kernels(y, offsets, model)
    close = {"rtol": 1e-8, "atol": 1e-10}
    for s in range(len(lengths)):
        rows = slice(offsets[s], offsets[s + 1])
        res = _statsmodels_run(y[rows], *sequence_model(model, offsets, s))
        np.testing.assert_allclose(got["log_lik"][s], res.llf_obs.sum(), **close)
        np.testing.assert_allclose(got["filtered_means"][rows], res.filtered_state.T, **close)
        np.testing.assert_allclose(got["filtered_covs"][rows], np.moveaxis(res.filtered_state_cov, -1, 0), **close)
        np.testing.assert_allclose(got["smoothed_means"][rows], res.smoothed_state.T, **close)
        np.testing.assert_allclose(got["smoothed_covs"][rows], np.moveaxis(res.smoothed_state_cov, -1, 0), **close)
        # smoothed_state_autocov[..., t] = Cov(alpha_t+1, alpha_t | y)
        autocov = np.moveaxis(res.smoothed_state_autocov, -1, 0)
        np.testing.assert_allclose(got["cross_covs"][rows][1:], autocov[:-1], **close)


def test_parity_with_pykalman():
    pykalman = pytest.importorskip("pykalman")
    rng = np.random.default_rng(6)
    T, n, p = 60, 3, 2
    model = random_model(rng, n, p, 0, T)
    y = rng.normal(scale=2.0, size=(T, p))
    y[[4, 30, 31]] = np.nan  # pykalman skips whole steps only
    offsets = np.array([0, T])
    got = run_kernels(y, offsets, model)
    kf = pykalman.KalmanFilter(
        transition_matrices=model["transition_matrices"][0],
        observation_matrices=model["observation_matrices"][0],
        transition_covariance=model["transition_covs"][0],
        observation_covariance=model["observation_covs"][0],
        initial_state_mean=model["initial_mean"],
        initial_state_covariance=model["initial_cov"],
    )
    masked = np.ma.masked_invalid(y)
    close = {"rtol": 1e-8, "atol": 1e-10}
    np.testing.assert_allclose(got["log_lik"][0], kf.loglikelihood(masked), **close)
    filtered_means, filtered_covs = kf.filter(masked)
    smoothed_means, smoothed_covs = kf.smooth(masked)
    np.testing.assert_allclose(got["filtered_means"], filtered_means, **close)
    np.testing.assert_allclose(got["filtered_covs"], filtered_covs, **close)
    np.testing.assert_allclose(got["smoothed_means"], smoothed_means, **close)
    np.testing.assert_allclose(got["smoothed_covs"], smoothed_covs, **close)


def test_the_score_rows_make_nap_on_those_rows_only():
    """``score_rows``: N A P on the flagged rows equals the full product's, zero elsewhere; the
    other disturbance terms do not change."""
    rng = np.random.default_rng(11)
    model = random_model(rng, 4, 2, 0, 60)
    offsets = offsets_of([25, 35])
    y = rng.normal(size=(60, 2))
    y[7, 0] = np.nan
    ll, fm, fc, pm, pc = kernels.kalman_filter(y, offsets, **model)
    rows = np.array([False, True, False, True])
    _, full = smoother_disturbances(y, offsets, (fm, fc, pm, pc), *_observation_model(model))
    _, some = smoother_disturbances(y, offsets, (fm, fc, pm, pc), *_observation_model(model), rows=rows)
    np.testing.assert_array_equal(some.NAP[:, rows], full.NAP[:, rows])
    assert np.abs(full.NAP[:, ~rows]).max() > 0 and not some.NAP[:, ~rows].any()
    for name in ("r", "N", "u", "half", "WP"):
        np.testing.assert_array_equal(getattr(some, name), getattr(full, name))
