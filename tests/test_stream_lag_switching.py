"""Fixed-lag smoothing of Kim's streaming filter (SwitchingLDS, NonlinearSwitchingLDS,
ContinuousSwitchingLDS): the Kalman smoother with one mode, a direct Kim smoother on the filter's
laws (flows, resets, each gap's laws), near the batch posterior, resumed from a saved state, the
SwitchingLDS's at a linear map; the pair posterior the filtered law keeps for it, and a state saved
by an earlier modeshift (without it)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import expm
from scipy.stats import multivariate_normal
from test_continuous_slds import _exact_law
from test_continuous_slds import _model as _continuous_model
from test_nonlinear_slds_stream import _as_switching_lds, _fit, _noisy_oscillators
from test_stream_resets import _model as _reset_model

from modeshift import LinearGaussianSSM, NonlinearSwitchingLDS, SwitchingLDS
from modeshift.features import Polynomial
from modeshift.models.streaming import FilterState


def _kim_smoother(filtered: list, pair_laws, log_density) -> list:
    """GPB2's smoother (Kim 1994) written out pair by pair from the filtered laws (w, means,
    covariances) of each step, ``pair_laws(t)`` -> (A, shift, Q, P) of the pairs (i, j) into step t:
    x_t = A_ij x_t-1 + shift_ij + N(0, Q_ij), p(z_t = j | z_t-1 = i) = P_ij, and ``log_density(t,
    mean, cov)`` = log p(y_t) for x_t ~ N(mean, cov). The pairs into step t + 1 weigh
    p(z_t = i | z_t+1 = j, y_0..t+1) ∝ w_i P_ij p(y_t+1 | pair): the filter's pair posterior."""
    smoothed = [filtered[-1]]
    for t in range(len(filtered) - 2, -1, -1):
        (w, m, c), (ws, ms, cs), (A, shift, Q, P) = filtered[t], smoothed[-1], pair_laws(t + 1)
        k, n = m.shape
        log_pairs, means, covs = np.full((k, k), -np.inf), np.zeros((k, k, n)), np.zeros((k, k, n, n))
        for i in range(k):
            for j in range(k):
                mean, cov = A[i, j] @ m[i] + shift[i, j], A[i, j] @ c[i] @ A[i, j].T + Q[i, j]
                gain = c[i] @ A[i, j].T @ np.linalg.inv(cov)
                means[i, j] = m[i] + gain @ (ms[j] - mean)
                covs[i, j] = c[i] + gain @ (cs[j] - cov) @ gain.T
                if w[i] * P[i, j] > 0:
                    log_pairs[i, j] = np.log(w[i] * P[i, j]) + log_density(t + 1, mean, cov)
        pairs = np.exp(log_pairs - log_pairs.max(axis=0))
        joint = pairs / pairs.sum(axis=0) * ws
        weights = joint.sum(axis=1)
        share = joint / weights[:, None]
        mode_means = np.einsum("ij,ijn->in", share, means)
        spread = means - mode_means[:, None]
        mode_covs = np.einsum("ij,ijab->iab", share, covs + spread[..., :, None] * spread[..., None, :])
        smoothed.append((weights, mode_means, mode_covs))
    return smoothed[::-1]


def _observed(model, Y: np.ndarray, U: np.ndarray | None = None):
    """``log_density`` for :func:`_kim_smoother`: y_t = C x_t + D u_t + d + N(0, R), the model's."""
    C, d, R = model.observation_matrix_, model.observation_offset_, model.observation_covariance_
    D = getattr(model, "feedthrough_matrix_", np.zeros((len(d), 0)))

    def log_density(t: int, mean: np.ndarray, cov: np.ndarray) -> float:
        shift = d if U is None else D @ U[t] + d
        return float(multivariate_normal.logpdf(Y[t], C @ mean + shift, C @ cov @ C.T + R))

    return log_density


def _mixture(law) -> tuple[np.ndarray, ...]:
    """A switching law (w, means, covariances) as ``out.lagged`` presents it: (mean, covariance, w)."""
    w, means, covs = law
    mean = w @ means
    spread = means - mean
    return mean, np.einsum("k,kab->ab", w, covs + spread[:, :, None] * spread[:, None, :]), w


def _assert_laws_close(ours: list, theirs: list, tol: float) -> None:
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        for x, y in zip(a, b):
            np.testing.assert_allclose(x, y, rtol=0, atol=tol)


def test_one_mode_is_the_kalman_fixed_lag_smoother():
    rng = np.random.default_rng(0)
    model = _reset_model(rng, None, K=1)
    model.transmat_, model.startprob_ = np.ones((1, 1)), np.ones(1)
    lds = LinearGaussianSSM(state_dim=2, input_dim=2)  # [u_t, 1]: the offsets
    lds.dynamics_matrix_, lds.transition_covariance_ = model.dynamics_matrices_[0], model.dynamics_covariances_[0]
    lds.control_matrix_ = np.hstack([model.dynamics_input_matrices_[0], model.dynamics_offsets_[0][:, None]])
    lds.observation_matrix_, lds.observation_covariance_ = model.observation_matrix_, model.observation_covariance_
    lds.feedthrough_matrix_ = np.hstack([model.feedthrough_matrix_, model.observation_offset_[:, None]])
    lds.initial_state_mean_, lds.initial_state_covariance_ = model.initial_state_mean_, np.eye(2)
    U = rng.normal(size=(60, 1))
    Y, _ = model.sample(60, random_state=1, inputs=U)
    Y[7, 1] = np.nan
    ours = list(model.filter_stream(Y, inputs=U, lag=4))
    theirs = list(lds.filter_stream(Y, inputs=np.hstack([U, np.ones((60, 1))]), lag=4))
    for a, b in zip(ours[4:], theirs[4:], strict=True):
        np.testing.assert_allclose(a.lagged[0], b.lagged[0], rtol=0, atol=1e-10)
        np.testing.assert_allclose(a.lagged[1], b.lagged[1], rtol=0, atol=1e-10)
        np.testing.assert_array_equal(a.lagged[2], [1.0])
    smoothed = lds.smooth(Y, inputs=np.hstack([U, np.ones((60, 1))]))
    laws = model.filter_smoothed(ours[-1].state)
    np.testing.assert_allclose([law[0] for law in laws], smoothed.means[-5:], rtol=0, atol=1e-10)
    np.testing.assert_allclose([law[1] for law in laws], smoothed.covariances[-5:], rtol=0, atol=1e-10)


def _slds_pair_laws(model: SwitchingLDS, U: np.ndarray):
    """``pair_laws`` of an SLDS: pair (i, j) follows flow j, or at a switch reset j (``resets="destination"``)."""
    k = model.n_states
    to = np.tile(np.arange(k), (k, 1))

    def law(name: str) -> np.ndarray:
        laws = getattr(model, f"dynamics_{name}_")[to]
        if model.resets:
            switches = ~np.eye(k, dtype=bool)
            laws[switches] = getattr(model, f"reset_{name}_")[to[switches]]
        return laws

    A, B, b, Q = (law(name) for name in ("matrices", "input_matrices", "offsets", "covariances"))
    return lambda t: (A, B @ U[t] + b, Q, model.transmat_)


@pytest.mark.parametrize("resets", [None, "destination"])
def test_a_window_over_the_whole_stream_is_kims_smoother(resets):
    rng = np.random.default_rng(3)
    model = _reset_model(rng, resets, K=3)
    U = rng.normal(size=(40, 1))
    Y, _ = model.sample(40, random_state=4, inputs=U)
    outs = list(model.filter_stream(Y, inputs=U, lag=len(Y)))
    expected = _kim_smoother(
        [out.state.filtered[:3] for out in outs], _slds_pair_laws(model, U), _observed(model, Y, U)
    )
    _assert_laws_close(model.filter_smoothed(outs[-1].state), [_mixture(law) for law in expected], 1e-10)


def test_at_irregular_times_the_window_is_kims_smoother_with_each_gaps_laws():
    model = _continuous_model()
    times = np.cumsum(np.random.default_rng(5).exponential(1.2, 30))
    Y, _ = model.sample(30, random_state=6, times=times)
    outs = list(model.filter_stream(Y, times=times, lag=len(Y)))

    def pair_laws(t: int) -> tuple[np.ndarray, ...]:
        gap = times[t] - times[t - 1]
        flows = [
            _exact_law(F, f, S, gap)
            for F, f, S in zip(model.drift_matrices_, model.drift_offsets_, model.diffusion_covariances_)
        ]
        A, shift, Q = (np.array([[flow[part] for flow in flows]] * model.n_states) for part in range(3))
        return A, shift, Q, expm(model.rate_matrix_ * gap)

    expected = _kim_smoother([out.state.filtered[:3] for out in outs], pair_laws, _observed(model, Y))
    _assert_laws_close(model.filter_smoothed(outs[-1].state), [_mixture(law) for law in expected], 1e-10)


def test_the_window_is_close_to_the_variational_smoother():
    """Neither is exact: on 200 steps of a sticky two-mode SLDS (measured: mean gap 0.042, largest
    0.62 at worst, the modes agree on 96.5 % of the steps; the filter's mean gap is 0.114)."""
    rng = np.random.default_rng(7)
    model = _reset_model(rng, None, K=2)
    model.transmat_ = np.array([[0.95, 0.05], [0.05, 0.95]])
    U = rng.normal(size=(200, 1))
    Y, _ = model.sample(200, random_state=8, inputs=U)
    outs = list(model.filter_stream(Y, inputs=U, lag=len(Y)))
    smoothed = np.array([law[2] for law in model.filter_smoothed(outs[-1].state)])
    filtered = np.array([out.probabilities for out in outs])
    batch = model.predict_proba(Y, inputs=U)
    assert np.abs(smoothed - batch).mean() < 0.06 < 0.1 < np.abs(filtered - batch).mean()
    assert (smoothed.argmax(axis=1) == batch.argmax(axis=1)).mean() >= 0.95


@pytest.mark.parametrize("name", ["resets", "continuous"])
def test_a_saved_state_with_a_window_resumes_identically(name, tmp_path):
    if name == "resets":
        rng = np.random.default_rng(9)
        model = _reset_model(rng, "destination")
        U = rng.normal(size=(40, 1))
        Y, _ = model.sample(40, random_state=10, inputs=U)
        rows = {"inputs": U}
    else:
        model, times = _continuous_model(), np.cumsum(np.random.default_rng(11).exponential(1.0, 40))
        Y, _ = model.sample(40, random_state=12, times=times)
        rows = {"times": times}
    whole = list(model.filter_stream(Y, **rows, lag=4))
    whole[19].state.save(tmp_path / "state.npz")
    resumed = FilterState.load(tmp_path / "state.npz")
    assert len(resumed.window) == 5
    rest = list(model.filter_stream(Y[20:], **{key: value[20:] for key, value in rows.items()}, state=resumed))
    for a, b in zip(whole[20:], rest, strict=True):
        assert a.log_likelihood == b.log_likelihood
        for x, y in zip(a.lagged, b.lagged, strict=True):
            np.testing.assert_array_equal(x, y)


def test_a_linear_map_smooths_as_the_switching_lds():
    Y = _noisy_oscillators(120, 3)
    model = _fit(NonlinearSwitchingLDS(2, state_dim=2, features=Polynomial(1), n_iter=3, random_state=0), Y)
    ours, theirs = (list(m.filter_stream(Y, lag=6)) for m in (model, _as_switching_lds(model)))
    for a, b in zip(ours[6:], theirs[6:], strict=True):
        for x, y in zip(a.lagged, b.lagged, strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("resets", [None, "destination"])
def test_the_filtered_law_keeps_the_pair_posterior(resets):
    """The last of the filtered law is p(z_t-1 = i, z_t = j | y_0..t) ∝ w_i P_ij p(y_t | pair),
    written out from the filtered law before (1e-12; its columns are w exactly), which the
    smoother reads instead of updating the pairs on y_t again."""
    rng = np.random.default_rng(13)
    model = _reset_model(rng, resets, K=3)
    U = rng.normal(size=(30, 1))
    Y, _ = model.sample(30, random_state=14, inputs=U)
    laws = [out.state.filtered for out in model.filter_stream(Y, inputs=U)]
    pair_laws, log_density = _slds_pair_laws(model, U), _observed(model, Y, U)
    np.testing.assert_array_equal(laws[0][3], np.diag(laws[0][0]))
    for t in range(1, len(Y)):
        (w, m, c), (A, shift, Q, P) = laws[t - 1][:3], pair_laws(t)
        log_pairs = np.array(
            [
                [
                    np.log(w[i] * P[i, j])
                    + log_density(t, A[i, j] @ m[i] + shift[i, j], A[i, j] @ c[i] @ A[i, j].T + Q[i, j])
                    for j in range(3)
                ]
                for i in range(3)
            ]
        )
        pairs = np.exp(log_pairs - log_pairs.max())
        np.testing.assert_allclose(laws[t][3], pairs / pairs.sum(), rtol=0, atol=1e-12)
        np.testing.assert_array_equal(laws[t][3].sum(axis=0), laws[t][0])


def _earlier_layout(state: FilterState, Y: np.ndarray, U: np.ndarray) -> FilterState:
    """``state`` as an earlier modeshift saved it: laws (w, means, covariances) without the pair
    posterior, and a window that kept each step's [u_t, y_t] instead."""
    steps = range(state.step - len(state.window), state.step)
    rows = ((f[:3], p, np.r_[U[t], Y[t]]) for (f, p, _), t in zip(state.window, steps, strict=True))
    return state._replace(filtered=state.filtered[:3], window=tuple(rows))


@pytest.mark.parametrize("lag", [0, 3])
def test_a_state_saved_by_an_earlier_modeshift_resumes_without_a_window_and_is_refused_with_one(lag, tmp_path):
    """Without a window its law is all the filter needs: the stream goes on exactly. A fixed-lag
    window of the earlier layout has no pair posteriors to smooth by: refused by name."""
    rng = np.random.default_rng(9)
    model = _reset_model(rng, "destination")
    U = rng.normal(size=(20, 1))
    Y, _ = model.sample(20, random_state=10, inputs=U)
    whole = list(model.filter_stream(Y, inputs=U, lag=lag))
    _earlier_layout(whole[9].state, Y, U).save(tmp_path / "state.npz")
    earlier = FilterState.load(tmp_path / "state.npz")
    assert len(earlier.filtered) == 3
    if lag:
        with pytest.raises(ValueError, match="keeps no pair posteriors .* earlier modeshift"):
            model.filter_smoothed(earlier)
        with pytest.raises(ValueError, match="earlier modeshift"):
            next(model.filter_stream(Y[10:], inputs=U[10:], state=earlier))
        return
    rest = list(model.filter_stream(Y[10:], inputs=U[10:], state=earlier))
    for a, b in zip(whole[10:], rest, strict=True):
        assert a.log_likelihood == b.log_likelihood
        for x, y in zip(a.state.filtered, b.state.filtered, strict=True):
            np.testing.assert_array_equal(x, y)


def test_the_window_keeps_each_steps_gains_and_a_saved_state_rebuilds_them():
    """A window entry keeps the backward step's filter-only parts, J_ij = P_i F_ij' P_ij^-1 and
    p(z_s = i | z_s+1 = j, y_0..s+1) (1e-10 against inverses written out); a saved state holds its
    laws alone, and a loaded one smooths as the unbroken stream (bitwise)."""
    rng = np.random.default_rng(15)
    model = _reset_model(rng, "destination", K=3)
    U = rng.normal(size=(12, 1))
    Y, _ = model.sample(12, random_state=16, inputs=U)
    state = list(model.filter_stream(Y, inputs=U, lag=4))[-1].state
    for (before, _, _), ((w, *_, pairs), (_, _, pair_covs, F), kept) in zip(state.window, state.window[1:]):
        gains = [[before[2][i] @ F[i, j].T @ np.linalg.inv(pair_covs[i, j]) for j in range(3)] for i in range(3)]
        np.testing.assert_allclose(kept.gains, gains, rtol=0, atol=1e-10)
        np.testing.assert_array_equal(kept.conditional, pairs / w)
    arrays = state.as_arrays()
    assert not any(key.startswith("window") and "_filtered_" not in key and "_predicted_" not in key for key in arrays)
    loaded = FilterState.from_arrays(arrays)
    assert all(kept == () for _, _, kept in loaded.window)
    for a, b in zip(model.filter_smoothed(state), model.filter_smoothed(loaded), strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
