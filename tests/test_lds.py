"""LinearGaussianSSM: inference against brute force and the kernels, EM, forecasting, persistence."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import linalg
from scipy.stats import multivariate_normal

from modeshift import LinearGaussianSSM, NotFittedError, load
from modeshift import _kernels as kernels
from modeshift.models import em


def _rotation(radius: float, angle: float) -> np.ndarray:
    return radius * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])


def _model(input_dim: int = 0, **kwargs) -> LinearGaussianSSM:
    model = LinearGaussianSSM(2, input_dim=input_dim, **kwargs)
    model.dynamics_matrix_ = _rotation(0.95, 0.3)
    model.transition_covariance_ = np.array([[0.1, 0.02], [0.02, 0.08]])
    model.observation_matrix_ = np.array([[1.0, 0.0], [0.5, 1.0], [0.3, -0.7]])
    model.observation_covariance_ = np.array([[0.2, 0.05, 0.0], [0.05, 0.3, 0.0], [0.0, 0.0, 0.25]])
    model.initial_state_mean_ = np.array([1.0, -0.5])
    model.initial_state_covariance_ = np.array([[1.0, 0.3], [0.3, 0.8]])
    if input_dim:
        model.control_matrix_ = np.array([[0.5], [-0.2]])
        model.feedthrough_matrix_ = np.array([[0.3], [0.0], [-0.4]])
    return model


def _joint(model: LinearGaussianSSM, T: int, u: np.ndarray | None):
    """Means and covariance of (x_0..T-1, y_0..T-1), stacked as [x; y]."""
    A, Q = model.dynamics_matrix_, model.transition_covariance_
    C, R = model.observation_matrix_, model.observation_covariance_
    n, p = C.shape[1], C.shape[0]
    u = np.zeros((T, 0)) if u is None else u
    B = model.__dict__.get("control_matrix_", np.zeros((n, u.shape[1])))
    D = model.__dict__.get("feedthrough_matrix_", np.zeros((p, u.shape[1])))
    # x = F (x_0 noise and w's) + mean, built by linear maps of the T independent shocks
    mx = np.zeros((T, n))
    maps = np.zeros((T, n, T, n))  # x_t = sum_s maps[t, :, s, :] e_s, e_0 ~ N(0, P0), e_s ~ N(0, Q)
    for t in range(T):
        if t == 0:
            mx[0] = model.initial_state_mean_
            maps[0, :, 0, :] = np.eye(n)
        else:
            mx[t] = A @ mx[t - 1] + B @ u[t]
            maps[t] = np.einsum("ij,jsk->isk", A, maps[t - 1])
            maps[t, :, t, :] += np.eye(n)
    shock = np.zeros((T * n, T * n))
    shock[:n, :n] = model.initial_state_covariance_
    for s in range(1, T):
        shock[s * n : (s + 1) * n, s * n : (s + 1) * n] = Q
    F = maps.reshape(T * n, T * n)
    Sxx = F @ shock @ F.T
    H = np.kron(np.eye(T), C)
    Sxy = Sxx @ H.T
    Syy = H @ Sxx @ H.T + np.kron(np.eye(T), R)
    my = mx @ C.T + u @ D.T
    return mx.ravel(), my.ravel(), Sxx, Sxy, Syy


def _brute(model, y, u=None):
    """log p(y_observed), E[x | y_observed], Cov(x | y_observed) by Gaussian conditioning."""
    T, n = len(y), model.state_dim
    mx, my, Sxx, Sxy, Syy = _joint(model, T, u)
    o = ~np.isnan(y.ravel())
    yo = y.ravel()[o]
    Soo = Syy[np.ix_(o, o)]
    log_lik = multivariate_normal(my[o], Soo).logpdf(yo)
    gain = np.linalg.solve(Soo, Sxy[:, o].T).T
    mean = mx + gain @ (yo - my[o])
    cov = Sxx - gain @ Sxy[:, o].T
    return log_lik, mean.reshape(T, n), cov


def test_semidefinite_covariances_sample_score_and_smooth_exactly():
    """An AR(2) in companion form observed without noise: Q = diag(s2, 0), R = 0, P0 the stationary
    covariance; a second sensor sees the lag with noise. Sampling, the log-likelihood and the
    smoother agree with Gaussian conditioning."""
    model = LinearGaussianSSM(2, fixed=("dynamics_matrix_", "observation_matrix_"))
    A = np.array([[0.5, 0.3], [1.0, 0.0]])
    model.dynamics_matrix_, model.transition_covariance_ = A, np.diag([1.0, 0.0])
    model.observation_matrix_ = np.eye(2)
    model.observation_covariance_ = np.diag([0.0, 0.5])
    model.initial_state_mean_ = np.zeros(2)
    model.initial_state_covariance_ = linalg.solve_discrete_lyapunov(A, np.diag([1.0, 0.0]))
    y, states = model.sample(6, random_state=3)
    np.testing.assert_allclose(y[:, 0], states[:, 0], atol=1e-12)  # R[0, 0] = 0: observed exactly
    np.testing.assert_allclose(states[1:, 1], states[:-1, 0], atol=1e-12)  # Q[1, 1] = 0: the lag
    y[2, 0] = np.nan
    log_lik, mean, cov = _brute(model, y)
    assert model.score(y) == pytest.approx(log_lik, rel=1e-10)
    smoothed = model.smooth(y)
    np.testing.assert_allclose(smoothed.means, mean, atol=1e-9)
    for t in range(6):
        np.testing.assert_allclose(smoothed.covariances[t], cov[2 * t : 2 * t + 2, 2 * t : 2 * t + 2], atol=1e-9)
    with pytest.raises(ValueError, match="observation_covariance_ is neither positive definite"):
        model.observation_covariance_ = np.diag([-1e-3, 0.5])
        model.score(y)


def test_score_filter_smooth_match_brute_force_and_kernels():
    model = _model()
    rng = np.random.default_rng(0)
    ys = [model.sample(T, random_state=s)[0] for s, T in enumerate((5, 3, 4))]
    ys[0][1, 1] = np.nan  # partially missing step
    ys[2][2] = np.nan  # wholly missing step
    brute = [_brute(model, y) for y in ys]
    total = sum(b[0] for b in brute)
    assert model.score(ys) == pytest.approx(total, rel=1e-10)
    X, lengths = np.concatenate(ys), [len(y) for y in ys]
    assert model.score(X, lengths) == pytest.approx(total, rel=1e-10)

    smoothed = model.smooth(ys)
    assert isinstance(smoothed.means, list) and smoothed.log_likelihood == pytest.approx(total, rel=1e-10)
    for y, (_, mean, cov), m, c, cc in zip(ys, brute, smoothed.means, smoothed.covariances, smoothed.cross_covariances):
        T, n = len(y), 2
        np.testing.assert_allclose(m, mean, atol=1e-9)
        for t in range(T):
            np.testing.assert_allclose(c[t], cov[t * n : (t + 1) * n, t * n : (t + 1) * n], atol=1e-9)
            if t > 0:
                np.testing.assert_allclose(cc[t], cov[t * n : (t + 1) * n, (t - 1) * n : t * n], atol=1e-9)
        np.testing.assert_array_equal(cc[0], 0.0)
    # (X, lengths) gives the same arrays, concatenated
    smoothed_array = model.smooth(X, lengths)
    np.testing.assert_allclose(smoothed_array.means, np.concatenate(smoothed.means), atol=1e-12)

    # the filter at each step equals brute-force conditioning on the prefix, and the kernels
    filtered = model.filter(ys)
    for y, m, c in zip(ys, filtered.means, filtered.covariances):
        for t in range(len(y)):
            _, mean, cov = _brute(model, y[: t + 1])
            np.testing.assert_allclose(m[t], mean[t], atol=1e-9)
            np.testing.assert_allclose(c[t], cov[t * 2 :, t * 2 :], atol=1e-9)
    offsets = np.r_[0, np.cumsum(lengths)]
    k_ll, k_mean, k_cov, _, _ = kernels.kalman_filter(
        X,
        offsets,
        model.initial_state_mean_,
        model.initial_state_covariance_,
        model.dynamics_matrix_,
        model.transition_covariance_,
        model.observation_matrix_,
        model.observation_covariance_,
    )
    array_filtered = model.filter(X, lengths)
    np.testing.assert_array_equal(array_filtered.means, k_mean)
    np.testing.assert_array_equal(array_filtered.covariances, k_cov)
    assert array_filtered.log_likelihood == pytest.approx(k_ll.sum(), rel=1e-12)
    del rng


def test_inputs_match_brute_force():
    model = _model(input_dim=1)
    rng = np.random.default_rng(1)
    u = [rng.normal(size=(4, 1)), rng.normal(size=(3, 1))]
    ys = [model.sample(len(ui), random_state=i, inputs=ui)[0] for i, ui in enumerate(u)]
    total = sum(_brute(model, y, ui)[0] for y, ui in zip(ys, u))
    assert model.score(ys, inputs=u) == pytest.approx(total, rel=1e-10)
    X = np.concatenate(ys)
    assert model.score(X, [4, 3], inputs=np.concatenate(u)) == pytest.approx(total, rel=1e-10)
    means = model.smooth(ys, inputs=u).means
    for y, ui, m in zip(ys, u, means):
        np.testing.assert_allclose(m, _brute(model, y, ui)[1], atol=1e-9)
    with pytest.raises(ValueError, match="inputs"):
        model.score(ys)
    with pytest.raises(ValueError, match="input_dim=0"):
        _model().score(ys, inputs=u)


def _monotone(history):
    h = np.asarray(history)
    assert np.all(np.diff(h) >= -1e-8 * np.abs(h[1:])), np.diff(h).min()


def test_em_monotone_with_missing_values():
    model = _model()
    ys = [model.sample(300, random_state=s)[0] for s in range(3)]
    rng = np.random.default_rng(2)
    for y in ys:
        y[rng.random(y.shape) < 0.15] = np.nan  # partially missing steps
        y[rng.random(len(y)) < 0.05] = np.nan  # wholly missing steps
    for diagonal in (False, True):
        fitted = LinearGaussianSSM(2, n_iter=25, tol=0.0, diagonal_observation_cov=diagonal).fit(ys)
        _monotone(fitted.history_)
        assert len(fitted.history_) == 25
        assert fitted.history_[-1] > fitted.history_[0]
        assert np.isfinite(fitted.score(ys))
        if diagonal:
            R = fitted.observation_covariance_
            np.testing.assert_array_equal(R, np.diag(np.diag(R)))


def test_em_monotone_with_inputs_and_fixed():
    model = _model(input_dim=1)
    rng = np.random.default_rng(3)
    u = [rng.normal(size=(400, 1)), rng.normal(size=(250, 1))]
    ys = [model.sample(len(ui), random_state=10 + i, inputs=ui)[0] for i, ui in enumerate(u)]
    fitted = LinearGaussianSSM(2, input_dim=1, n_iter=30, tol=0.0).fit(ys, inputs=u)
    _monotone(fitted.history_)
    assert fitted.control_matrix_.shape == (2, 1) and fitted.feedthrough_matrix_.shape == (3, 1)
    # D is identifiable: the fitted feedthrough is close to the true one
    np.testing.assert_allclose(fitted.feedthrough_matrix_, model.feedthrough_matrix_, atol=0.15)

    held = _model(input_dim=1, fixed=("observation_matrix_", "feedthrough_matrix_"), n_iter=15, tol=0.0)
    held.fit(ys, inputs=u)
    _monotone(held.history_)
    np.testing.assert_array_equal(held.observation_matrix_, model.observation_matrix_)
    np.testing.assert_array_equal(held.feedthrough_matrix_, model.feedthrough_matrix_)
    with pytest.raises(ValueError, match="unknown parameters"):
        LinearGaussianSSM(2, fixed=("control_matrix_",)).fit(ys[0])


def _fit_and_check_recovery(
    true: LinearGaussianSSM, y: np.ndarray, held_out: np.ndarray, eigenvalue_atol: float
) -> LinearGaussianSSM:
    """Fit by EM and check what survives a change of state basis x -> T x."""
    fitted = LinearGaussianSSM(2, n_iter=300, tol=1e-3).fit(y)
    _monotone(fitted.history_)
    got = np.sort_complex(np.linalg.eigvals(fitted.dynamics_matrix_))
    want = np.sort_complex(np.linalg.eigvals(true.dynamics_matrix_))
    np.testing.assert_allclose(got, want, atol=eigenvalue_atol)
    # EM reaches a maximum at least as high as the truth on the training data
    assert fitted.score(y) >= true.score(y)
    # the predictive distributions are invariant too: with k ~ 15 free parameters the expected
    # held-out excess loss is about k / (2 * 5000) = 0.0015 nats per step; allow 0.01
    assert fitted.score(held_out) >= true.score(held_out) - 0.01 * len(held_out)
    return fitted


def test_recovery_of_similarity_invariants():
    true = _model()
    true.initial_state_mean_ = np.zeros(2)
    y, _ = true.sample(5000, random_state=4)
    held_out, _ = true.sample(2000, random_state=5)
    # eigenvalues of A: their sampling error at T = 5000 is of order
    # sqrt((1 - |lambda|^2) / T) ~ 0.005, so 0.03 is about six standard errors
    fitted = _fit_and_check_recovery(true, y, held_out, eigenvalue_atol=0.03)

    # and the implied stationary observation covariance
    def stationary_obs_cov(m):
        from scipy.linalg import solve_discrete_lyapunov

        P = solve_discrete_lyapunov(m.dynamics_matrix_, m.transition_covariance_)
        C = m.observation_matrix_
        return C @ P @ C.T + m.observation_covariance_

    np.testing.assert_allclose(stationary_obs_cov(fitted), stationary_obs_cov(true), rtol=0.15, atol=0.1)


def test_forecast():
    model = _model()
    y, _ = model.sample(50, random_state=6)
    means, covs = model.forecast(y, horizon=6)
    assert means.shape == (6, 3) and covs.shape == (6, 3, 3)
    filtered = model.filter(y)
    A, C = model.dynamics_matrix_, model.observation_matrix_
    x, P = filtered.means[-1], filtered.covariances[-1]
    np.testing.assert_allclose(means[0], C @ A @ x, atol=1e-12)
    expected = C @ (A @ P @ A.T + model.transition_covariance_) @ C.T + model.observation_covariance_
    np.testing.assert_allclose(covs[0], expected, atol=1e-12)
    # horizon 1 equals the filter's prediction at an extra, wholly missing step
    padded = np.vstack([y, np.full((1, 3), np.nan)])
    extended = model.filter(padded)
    np.testing.assert_allclose(means[0], C @ extended.means[-1], atol=1e-12)
    # uncertainty grows with the horizon (stable A, Q > 0): the increments C (A^h P_h) C^T are
    # positive semi-definite (rank state_dim < obs_dim) with positive trace
    for h in range(1, 6):
        assert np.all(np.linalg.eigvalsh(covs[h] - covs[h - 1]) > -1e-12)
        assert np.trace(covs[h]) > np.trace(covs[h - 1])
    # several sequences give lists
    many_means, many_covs = model.forecast([y, y[:20]], horizon=3)
    assert isinstance(many_means, list) and len(many_covs) == 2
    np.testing.assert_allclose(many_means[0], means[:3])
    # with inputs
    with_inputs = _model(input_dim=1)
    u = np.ones((50, 1))
    m1, _ = with_inputs.forecast(y, 2, inputs=u, future_inputs=np.full((2, 1), 2.0))
    f = with_inputs.filter(y, inputs=u)
    x1 = A @ f.means[-1] + with_inputs.control_matrix_ @ [2.0]
    np.testing.assert_allclose(m1[0], C @ x1 + with_inputs.feedthrough_matrix_ @ [2.0], atol=1e-12)
    with pytest.raises(ValueError, match="future_inputs"):
        with_inputs.forecast(y, 2, inputs=u)


def test_hand_set_and_validation():
    model = _model()
    y, _ = model.sample(30, random_state=7)
    assert np.isfinite(model.score(y))
    with pytest.raises(NotFittedError, match="call fit"):
        LinearGaussianSSM(2).score(y)
    bad = _model()
    bad.transition_covariance_ = np.array([[1.0, 2.0], [2.0, 1.0]])
    with pytest.raises(ValueError, match="transition_covariance_.*positive definite"):
        bad.score(y)
    bad = _model()
    bad.observation_covariance_ = np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    with pytest.raises(ValueError, match="symmetric"):
        bad.score(y)
    bad = _model()
    bad.dynamics_matrix_ = np.eye(3)
    with pytest.raises(ValueError, match=r"dynamics_matrix_ must have shape \(2, 2\)"):
        bad.score(y)
    bad = _model()
    bad.initial_state_mean_ = np.zeros(3)
    with pytest.raises(ValueError, match="initial_state_mean_"):
        bad.score(y)
    with pytest.raises(ValueError, match="3 feature"):
        model.score(y[:, :2])
    gap = y.copy()
    with pytest.raises(ValueError, match="sequence 1 has no observed value"):
        LinearGaussianSSM(2).fit([gap, np.full((5, 3), np.nan)])
    with pytest.raises(ValueError, match="state_dim must be an integer >= 1"):
        LinearGaussianSSM(0).fit(y)


def test_save_load_round_trip(tmp_path):
    model = _model(input_dim=1)
    rng = np.random.default_rng(8)
    u = rng.normal(size=(200, 1))
    y, _ = model.sample(200, random_state=8, inputs=u)
    fitted = LinearGaussianSSM(2, input_dim=1, n_iter=5, tol=0.0, fixed=("feedthrough_matrix_",)).fit(y, inputs=u)
    path = tmp_path / "lds.msz"
    fitted.save(path)
    loaded = load(path)
    assert isinstance(loaded, LinearGaussianSSM)
    assert loaded.get_params() == {**fitted.get_params(), "fixed": ("feedthrough_matrix_",)}
    assert loaded.score(y, inputs=u) == fitted.score(y, inputs=u)
    assert loaded.history_ == fitted.history_
    for name in fitted.parameter_names:
        np.testing.assert_array_equal(getattr(loaded, name), getattr(fitted, name))


def test_sample_shapes_and_reproducibility():
    model = _model()
    y, x = model.sample(40, random_state=9)
    assert y.shape == (40, 3) and x.shape == (40, 2)
    y2, x2 = model.sample(40, random_state=9)
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(x, x2)
    assert not np.array_equal(y, model.sample(40, random_state=10)[0])
    with pytest.raises(ValueError, match="n_steps"):
        model.sample(0)
    with_inputs = _model(input_dim=1)
    with pytest.raises(ValueError, match="inputs"):
        with_inputs.sample(5)
    assert with_inputs.sample(5, inputs=np.ones((5, 1)))[0].shape == (5, 3)


def test_expected_statistics_with_missing_values_match_brute_force():
    """The M-step statistics of partially observed steps are the exact posterior moments of (x_t, y_t)."""
    from modeshift.data import as_sequences

    model = _model(input_dim=1)
    rng = np.random.default_rng(11)
    u = rng.normal(size=(5, 1))
    y, _ = model.sample(5, random_state=11, inputs=u)
    y[1, 0] = np.nan  # dims 0 and 1 are correlated in R
    y[2, [1, 2]] = np.nan
    y[3] = np.nan  # wholly missing: no observation statistics
    T, n, p = 5, 2, 3
    mx, my, Sxx, Sxy, Syy = _joint(model, T, u)
    o = ~np.isnan(y.ravel())
    mean = np.r_[mx, my]
    cov = np.block([[Sxx, Sxy], [Sxy.T, Syy]])
    obs = np.r_[np.zeros(T * n, bool), o]
    gain = np.linalg.solve(cov[np.ix_(obs, obs)], cov[obs]).T
    post_mean = mean + gain @ (y.ravel()[o] - mean[obs])
    post_cov = cov - gain @ cov[obs]
    want_yy, want_yz = np.zeros((p, p)), np.zeros((p, n + 1))
    for t in (0, 1, 2, 4):
        ix = np.r_[np.arange(t * n, (t + 1) * n)]
        iy = T * n + np.arange(t * p, (t + 1) * p)
        E = lambda a, b: post_cov[np.ix_(a, b)] + np.outer(post_mean[a], post_mean[b])  # noqa: E731
        want_yy += E(iy, iy)
        want_yz[:, :n] += E(iy, ix)
        want_yz[:, n:] += np.outer(post_mean[iy], u[t])
    seqs = model._sequences(as_sequences(y), None, u, 3)
    _, stats = model._expected_statistics(seqs, model._check_parameters())
    got_yy, got_yz, _, count = stats["observation"]
    assert count == 4
    np.testing.assert_allclose(got_yy, want_yy, atol=1e-9)
    np.testing.assert_allclose(got_yz, want_yz, atol=1e-9)


def test_em_matches_pykalman():
    """Without inputs or missing values, EM iterates equal pykalman's (offsets not learned)."""
    pykalman = pytest.importorskip("pykalman")
    y, _ = _model().sample(200, random_state=3)
    start = _model(method="em", n_iter=5, tol=-np.inf)
    start.dynamics_matrix_ = 0.5 * np.eye(2)
    start.observation_matrix_ = np.full((3, 2), 0.5) + np.eye(3, 2)
    reference = pykalman.KalmanFilter(
        transition_matrices=start.dynamics_matrix_,
        observation_matrices=start.observation_matrix_,
        transition_covariance=start.transition_covariance_,
        observation_covariance=start.observation_covariance_,
        initial_state_mean=start.initial_state_mean_,
        initial_state_covariance=start.initial_state_covariance_,
        em_vars=[
            "transition_matrices",
            "observation_matrices",
            "transition_covariance",
            "observation_covariance",
            "initial_state_mean",
            "initial_state_covariance",
        ],
    ).em(y, n_iter=5)
    start.fit(y)
    pairs = {
        "dynamics_matrix_": "transition_matrices",
        "transition_covariance_": "transition_covariance",
        "observation_matrix_": "observation_matrices",
        "observation_covariance_": "observation_covariance",
        "initial_state_mean_": "initial_state_mean",
        "initial_state_covariance_": "initial_state_covariance",
    }
    for ours, theirs in pairs.items():
        np.testing.assert_allclose(getattr(start, ours), getattr(reference, theirs), rtol=1e-10, atol=1e-12)
    assert start.score(y) == pytest.approx(reference.loglikelihood(y), rel=1e-12)


def test_data_frame_with_input_columns():
    import pandas as pd

    from modeshift import Sequences

    model = _model(input_dim=1)
    u = np.random.default_rng(12).normal(size=(60, 1))
    y, _ = model.sample(60, random_state=12, inputs=u)
    frame = pd.DataFrame({"id": np.repeat([0, 1], 30), "time": np.tile(np.arange(30), 2), "u": u[:, 0]})
    frame[["a", "b", "c"]] = y
    order = np.random.default_rng(13).permutation(60)
    shuffled = frame.iloc[order].reset_index(drop=True)
    want = model.score([y[:30], y[30:]], inputs=[u[:30], u[30:]])
    seqs = Sequences.from_dataframe(shuffled, time_column="time", input_columns=["u"])
    assert model.score(seqs) == pytest.approx(want, rel=1e-12)
    plain = Sequences.from_dataframe(shuffled.drop(columns="u"), time_column="time")
    assert model.score(plain, inputs=u[order]) == pytest.approx(want, rel=1e-12)
    smoothed = model.smooth(seqs).means  # back in the frame's row order
    reference = np.concatenate(model.smooth([y[:30], y[30:]], inputs=[u[:30], u[30:]]).means)
    np.testing.assert_allclose(smoothed, reference[order], atol=1e-12)


# ------------------------------------------------------- structural models, real data
def test_local_level_nile_matches_textbook_and_statsmodels():
    """Durbin & Koopman (2012, sec. 2.10): ML estimates 15099 (noise) and 1469.1 (level) for the Nile."""
    sm = pytest.importorskip("statsmodels.api")
    from modeshift.datasets import load_nile

    y = load_nile()["volume"].to_numpy(dtype=float)
    model = LinearGaussianSSM.local_level(n_iter=5000, tol=1e-9).fit(y)
    noise, level = model.observation_covariance_[0, 0], model.transition_covariance_[0, 0]
    np.testing.assert_allclose([noise, level], [15099.0, 1469.1], rtol=0.02)
    reference = sm.tsa.UnobservedComponents(y, "llevel").fit(disp=False)
    np.testing.assert_allclose([noise, level], reference.params, rtol=0.02)
    np.testing.assert_array_equal(model.dynamics_matrix_, [[1.0]])  # held fixed
    assert np.all(np.diff(model.history_) >= -1e-8 * abs(model.history_[-1]))


def test_local_linear_trend_recovers_slope():
    rng = np.random.default_rng(4)
    slope = 0.5 + np.cumsum(rng.normal(0, 0.01, 400))
    level = np.cumsum(slope + rng.normal(0, 0.3, 400))
    y = level + rng.normal(0, 1.0, 400)
    model = LinearGaussianSSM.local_linear_trend(n_iter=300).fit(y)
    smoothed_slope = model.smooth(y).means[:, 1]
    assert np.abs(smoothed_slope[50:] - slope[50:]).mean() < 0.1
    assert model.observation_covariance_[0, 0] == pytest.approx(1.0, rel=0.35)


def test_recovery_with_thirty_percent_missing_entries():
    """30 % of the entries missing at random: EM still finds the dynamics and the predictive law."""
    true = _model()
    true.initial_state_mean_ = np.zeros(2)
    y, _ = true.sample(5000, random_state=6)
    held_out, _ = true.sample(2000, random_state=7)
    gappy = y.copy()
    gappy[np.random.default_rng(8).random(y.shape) < 0.3] = np.nan
    # about 30 % less information than the complete-data test: the 0.03 bound there becomes 0.04
    _fit_and_check_recovery(true, gappy, held_out, eigenvalue_atol=0.04)


# ------------------------------------------------------------- the estimator contract
def _changed_entries(before: dict, after: LinearGaussianSSM) -> int:
    """Entries of the parameters one EM step moved, a covariance counted by its upper triangle."""
    count = 0
    for name, old in before.items():
        new = getattr(after, name)
        changed = ~np.isclose(new, old, rtol=0.0, atol=1e-12)
        if name.endswith("covariance_"):
            changed = changed[np.triu_indices(len(new))]
        count += int(changed.sum())
    return count


@pytest.mark.parametrize(
    "input_dim, diagonal, fixed",
    [
        (0, False, ()),
        (1, False, ()),
        (1, True, ()),
        (0, True, ("observation_matrix_", "initial_state_covariance_")),
        (1, False, ("dynamics_matrix_", "feedthrough_matrix_", "transition_covariance_", "initial_state_mean_")),
    ],
)
def test_n_parameters_is_the_number_of_entries_em_moves(input_dim, diagonal, fixed):
    """Brute force: one EM step from a generic start moves every free entry and no other."""
    model = _model(input_dim, n_iter=1, tol=-np.inf, fixed=fixed, diagonal_observation_cov=diagonal)
    if diagonal:
        model.observation_covariance_ = np.diag([0.2, 0.3, 0.25])
    rng = np.random.default_rng(20)
    u = rng.normal(size=(300, input_dim)) if input_dim else None
    y, _ = model.sample(300, random_state=20, inputs=u)
    before = {name: np.array(getattr(model, name)) for name in model.parameter_names}
    with pytest.warns(em.ConvergenceWarning):
        model.fit(y, inputs=u)
    assert model.n_parameters == _changed_entries(before, model)
    n, p, m = 2, 3, input_dim
    free = {
        "dynamics_matrix_": n * n,
        "transition_covariance_": 3,
        "observation_matrix_": p * n,
        "observation_covariance_": p if diagonal else 6,
        "initial_state_mean_": n,
        "initial_state_covariance_": 3,
        "control_matrix_": n * m,
        "feedthrough_matrix_": p * m,
    }
    assert model.n_parameters == sum(size for name, size in free.items() if name not in fixed)


def test_aic_and_bic():
    model = _model(input_dim=1)
    rng = np.random.default_rng(21)
    u = [rng.normal(size=(40, 1)), rng.normal(size=(25, 1))]
    ys = [model.sample(len(ui), random_state=21 + i, inputs=ui)[0] for i, ui in enumerate(u)]
    log_lik, k = model.score(ys, inputs=u), model.n_parameters
    assert k == 4 + 3 + 6 + 6 + 2 + 3 + 2 + 3
    assert model.aic(ys, inputs=u) == pytest.approx(-2 * log_lik + 2 * k, rel=1e-12)
    assert model.bic(ys, inputs=u) == pytest.approx(-2 * log_lik + k * np.log(65), rel=1e-12)
    X, lengths = np.concatenate(ys), [40, 25]
    assert model.bic(X, lengths, inputs=np.concatenate(u)) == pytest.approx(model.bic(ys, inputs=u), rel=1e-12)


def test_sample_several_sequences():
    model = _model(input_dim=1)
    u = [np.ones((30, 1)), -np.ones((30, 1))]
    ys, xs = model.sample(30, n_sequences=2, random_state=22, inputs=u)
    assert isinstance(ys, list) and [y.shape for y in ys] == [(30, 3)] * 2 and [x.shape for x in xs] == [(30, 2)] * 2
    # draws follow one generator sequence by sequence: the first equals a one-sequence draw
    y0, x0 = model.sample(30, random_state=22, inputs=u[0])
    np.testing.assert_array_equal(ys[0], y0)
    np.testing.assert_array_equal(xs[0], x0)
    again = model.sample(30, n_sequences=2, random_state=22, inputs=u)
    np.testing.assert_array_equal(again[0][1], ys[1])
    assert not np.array_equal(ys[0], ys[1])
    shared = model.sample(30, n_sequences=3, random_state=22, inputs=u[0])[0]  # one array for every sequence
    assert len(shared) == 3
    with pytest.raises(ValueError, match="inputs: got 2 arrays for 3 sequences"):
        model.sample(30, n_sequences=3, inputs=u)
    with pytest.raises(ValueError, match="n_sequences"):
        model.sample(30, n_sequences=0, inputs=u[0])


def test_warm_start_continues_from_the_current_parameters():
    y, _ = _model().sample(300, random_state=23)
    model = LinearGaussianSSM(2, n_iter=3, tol=-np.inf, warm_start=True)
    with pytest.warns(em.ConvergenceWarning):
        model.fit(y)
    where = model.score(y)
    with pytest.warns(em.ConvergenceWarning):
        model.fit(y)
    assert model.history_[0] == pytest.approx(where, rel=1e-12)
    _monotone(model.history_)


def test_refit_starts_afresh_and_keeps_fixed_values_set_by_hand(tmp_path):
    y1, _ = _model().sample(200, random_state=24)
    y2, _ = _model().sample(150, random_state=25)
    model = LinearGaussianSSM(2, n_iter=20).fit(y1).fit(y2)
    fresh = LinearGaussianSSM(2, n_iter=20).fit(y2)
    assert model.history_ == fresh.history_
    for name in model.parameter_names:
        np.testing.assert_array_equal(getattr(model, name), getattr(fresh, name))
    # a structural model's fixed A, C and diffuse start are settings: a refit keeps them
    level = np.cumsum(np.random.default_rng(26).normal(size=120)) + np.random.default_rng(27).normal(size=120)
    refit = LinearGaussianSSM.local_level(n_iter=30).fit(level[:60]).fit(level)
    once = LinearGaussianSSM.local_level(n_iter=30).fit(level)
    assert refit.history_ == once.history_
    np.testing.assert_array_equal(refit.dynamics_matrix_, [[1.0]])
    np.testing.assert_array_equal(refit.initial_state_covariance_, [[0.0]])  # ignored: the level is diffuse
    refit.save(tmp_path / "level.msz")  # and so does a loaded model's
    assert load(tmp_path / "level.msz").fit(level).history_ == once.history_


def test_a_changed_hyperparameter_takes_effect():
    y, _ = _model().sample(200, random_state=28)
    model = LinearGaussianSSM(2, n_iter=10).fit(y)
    model.set_params(diagonal_observation_cov=True).fit(y)
    R = model.observation_covariance_
    np.testing.assert_array_equal(R, np.diag(np.diag(R)))


def test_n_iter_zero_only_initialises():
    y, _ = _model().sample(200, random_state=29)
    model = LinearGaussianSSM(2, n_iter=0).fit(y)
    assert model.history_ == [] and model.n_iter_ == 0 and not model.converged_
    assert np.isfinite(model.score(y))
    started = LinearGaussianSSM(2, n_iter=1, tol=-np.inf)
    with pytest.warns(em.ConvergenceWarning):
        started.fit(y)
    assert started.history_ == [pytest.approx(model.score(y), rel=1e-12)]  # the first E-step is at the start


def test_capped_fit_warns_and_invalid_hyperparameters_raise_at_fit():
    y, _ = _model().sample(100, random_state=30)
    with pytest.warns(em.ConvergenceWarning, match="n_iter=2"):
        fitted = LinearGaussianSSM(2, n_iter=2, tol=0.0).fit(y)
    assert fitted.n_iter_ == 2 and not fitted.converged_
    for bad, match in (
        ({"state_dim": 1.5}, "state_dim"),
        ({"input_dim": -1}, "input_dim"),
        ({"obs_dim": 0}, "obs_dim"),
        ({"diagonal_observation_cov": "yes"}, "diagonal_observation_cov"),
        ({"tol": float("nan")}, "tol"),
    ):
        model = LinearGaussianSSM(**bad)  # stored as given
        assert all(getattr(model, k) is v for k, v in bad.items())
        with pytest.raises(ValueError, match=match):
            model.fit(y)


def test_clone_and_keyword_only_inputs():
    sklearn_base = pytest.importorskip("sklearn.base")
    model = LinearGaussianSSM(2, input_dim=1, fixed=["observation_matrix_"], callback=print)
    clone = sklearn_base.clone(model)
    assert clone.get_params() == model.get_params() and clone is not model
    with_inputs = _model(input_dim=1)
    u = np.ones((20, 1))
    y, _ = with_inputs.sample(20, random_state=31, inputs=u)
    with pytest.raises(TypeError):
        with_inputs.score(y, None, u)


def test_fit_takes_a_long_data_frame():
    import pandas as pd

    ys = [_model().sample(50, random_state=32 + s)[0] for s in range(2)]
    frame = pd.DataFrame(np.concatenate(ys), columns=["a", "b", "c"])
    frame["id"], frame["time"] = np.repeat([7, 3], 50), np.tile(np.arange(50), 2)
    from_frame = LinearGaussianSSM(2, n_iter=5).fit(frame.iloc[::-1], id_column="id", time_column="time")
    from_list = LinearGaussianSSM(2, n_iter=5).fit([ys[1], ys[0]])  # ids sort: 3 before 7
    assert from_frame.history_ == pytest.approx(from_list.history_, rel=1e-12)


def test_old_names_still_answer_with_a_warning(file_with_old_names):
    model = _model()
    with pytest.warns(DeprecationWarning, match="transition_matrix_ is renamed dynamics_matrix_"):
        np.testing.assert_array_equal(model.transition_matrix_, model.dynamics_matrix_)
    with pytest.warns(DeprecationWarning):
        model.transition_matrix_ = 0.5 * np.eye(2)
    np.testing.assert_array_equal(model.dynamics_matrix_, 0.5 * np.eye(2))
    y, _ = model.sample(100, random_state=33)
    held = _model(fixed=("transition_matrix_",), n_iter=3)
    with pytest.warns(DeprecationWarning, match="renamed 'dynamics_matrix_'"):
        held.fit(y)
    np.testing.assert_array_equal(held.dynamics_matrix_, _model().dynamics_matrix_)
    with pytest.warns(DeprecationWarning, match="log_likelihood_history_"):
        assert held.log_likelihood_history_ == held.history_
    # a model file of the previous release, with the old names
    old_names = {"dynamics_matrix_": "transition_matrix_", "history_": "log_likelihood_history_"}
    old = load(file_with_old_names(held, old_names))
    assert old.history_ == held.history_ and old.score(y) == held.score(y)
