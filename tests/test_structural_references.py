"""Published and peer references for structural models at given parameters, with the exact,
singular covariances (R = 0, rank-deficient Q; no epsilon anywhere):

- Clark's (1987) univariate and Clark's (1989) bivariate unobserved-components models of US real
  GNP (and unemployment) as Kim & Nelson (1999) estimate them: log-likelihood and filtered states
  of their GAUSS code (the bivariate log-likelihood from R's FKF), kept in statsmodels' test suite
  (``tsa/statespace/tests/results/results_kalman_filter.py``, whose data these tests read);
  smoothed states against statsmodels' Kalman smoother on the same matrices; both again under the
  exact diffuse start against statsmodels' exact diffuse smoother.
- statsmodels' ``UnobservedComponents`` references on the US unemployment rate (R's KFAS, in
  ``results_structural.py``): log-likelihoods at the given parameters, and smoothed states.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import linalg
from statsmodels.datasets import macrodata
from statsmodels.tsa.statespace.initialization import Initialization
from statsmodels.tsa.statespace.kalman_smoother import KalmanSmoother
from statsmodels.tsa.statespace.structural import UnobservedComponents

from modeshift import LinearGaussianSSM, StructuralModel
from modeshift.models.structural import ARIMA, Cycle, Irregular, LocalLevel, LocalLinearTrend, Seasonal
from modeshift.models.structural_components import TrigonometricSeasonal

published = pytest.importorskip("statsmodels.tsa.statespace.tests.results.results_kalman_filter")
kfas = pytest.importorskip("statsmodels.tsa.statespace.tests.results.results_structural")

LOG_2PI = np.log(2 * np.pi)


# ------------------------------------------------------------------ Clark (1987)
def _clark1987() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Log real GNP 1947Q1-1995Q3 and Kim & Nelson's state (trend n_t, cycle c_t, c_t-1, drift g_t):

        y_t = n_t + c_t,  n_t = n_t-1 + g_t-1 + v_t,  g_t = g_t-1 + w_t,
        c_t = phi_1 c_t-1 + phi_2 c_t-2 + e_t,

    no measurement error (R = 0) and no noise on c_t-1 (Q singular)."""
    y = np.log(np.asarray(published.uc_uni["data"], dtype=float))
    sigma_v, sigma_e, sigma_w, phi_1, phi_2 = published.uc_uni["parameters"]
    A = np.array([[1.0, 0, 0, 1], [0, phi_1, phi_2, 0], [0, 1, 0, 0], [0, 0, 0, 1]])
    return y, {
        "A": A,
        "Q": np.diag([sigma_v**2, sigma_e**2, 0.0, sigma_w**2]),
        "C": np.array([[1.0, 1, 0, 0]]),
        "R": np.zeros((1, 1)),
    }


def _clark1989() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Log real GNP and the unemployment rate 1948Q1-1995Q3; state (n_t, c_t, c_t-1, c_t-2, g_t,
    L_t): GNP as in 1987, unemployment u_t = L_t + a_1 c_t + a_2 c_t-1 + a_3 c_t-2 + eps_t with a
    random-walk L_t. R = diag(0, s^2) and Q (two zero variances) are singular."""
    data = np.asarray(published.uc_bi["data"], dtype=float)[4:]
    y = np.column_stack([np.log(data[:, 0]), data[:, 1] / 100])
    sigma_v, sigma_e, sigma_w, sigma_vl, sigma_ec, phi_1, phi_2, a_1, a_2, a_3 = published.uc_bi["parameters"]
    A = np.zeros((6, 6))
    A[0, [0, 4]] = 1
    A[1, [1, 2]] = phi_1, phi_2
    A[2, 1] = A[3, 2] = A[4, 4] = A[5, 5] = 1
    return y, {
        "A": A,
        "Q": np.diag([sigma_v**2, sigma_e**2, 0, 0, sigma_w**2, sigma_vl**2]),
        "C": np.array([[1.0, 1, 0, 0, 0, 0], [0, a_1, a_2, a_3, 0, 1]]),
        "R": np.diag([0.0, sigma_ec**2]),
    }


def _ssm(matrices: dict[str, np.ndarray], P0: np.ndarray, diffuse: bool | list[bool] = False) -> LinearGaussianSSM:
    n, p = matrices["C"].shape[1], matrices["C"].shape[0]
    model = LinearGaussianSSM(state_dim=n, obs_dim=p, diffuse=diffuse)
    model.dynamics_matrix_, model.transition_covariance_ = matrices["A"], matrices["Q"]
    model.observation_matrix_, model.observation_covariance_ = matrices["C"], matrices["R"]
    model.initial_state_mean_, model.initial_state_covariance_ = np.zeros(n), P0
    return model


def _kim_nelson_prior(A: np.ndarray) -> np.ndarray:
    """Kim & Nelson's prior, 100 I on the state before the first observation, moved to the state at
    the first observation (statsmodels' conversion): A (100 I) A'."""
    return A @ (100 * np.eye(len(A))) @ A.T


def _statsmodels_smoother(y: np.ndarray, matrices: dict[str, np.ndarray], initialization: Initialization | None):
    p, n = matrices["C"].shape
    smoother = KalmanSmoother(k_endog=p, k_states=n)
    smoother.bind(np.asarray(y, dtype=float).reshape(len(y), p))
    smoother.design[:, :, 0], smoother.transition[:, :, 0] = matrices["C"], matrices["A"]
    smoother.obs_cov[:, :, 0], smoother.state_cov[:, :, 0] = matrices["R"], matrices["Q"]
    smoother.selection = np.eye(n)
    if initialization is None:
        smoother.initialize_known(np.zeros(n), _kim_nelson_prior(matrices["A"]))
    else:
        smoother.initialize(initialization)
    return smoother.smooth()


def test_clark_1987_log_likelihood_and_filtered_states_are_kim_and_nelsons():
    """Kim & Nelson's GAUSS output: log-likelihood of the observations after the first 20 (5
    decimals), filtered trend, cycle and drift after them (4 decimals; statsmodels' tolerances,
    ``assert_almost_equal``: |difference| < 1.5 10^-decimals)."""
    y, matrices = _clark1987()
    model = _ssm(matrices, _kim_nelson_prior(matrices["A"]))
    start = published.uc_uni["start"]
    assert model.score(y) - model.score(y[:start]) == pytest.approx(published.uc_uni["loglike"], abs=1.5e-5)
    filtered = model.filter(y).means[start:]
    np.testing.assert_allclose(filtered[:, [0, 1, 3]], published.uc_uni["states"], atol=1.5e-4)


def test_clark_1989_log_likelihood_and_filtered_states_are_kim_and_nelsons():
    """The bivariate model: the log-likelihood of FKF (2 decimals, as statsmodels tests it),
    filtered trend, cycle, drift and unemployment trend from step 16 (4 decimals)."""
    y, matrices = _clark1989()
    model = _ssm(matrices, _kim_nelson_prior(matrices["A"]))
    assert model.score(y) == pytest.approx(published.uc_bi["loglike"], abs=1.5e-2)
    filtered = model.filter(y).means[published.uc_bi["start"] :]
    np.testing.assert_allclose(filtered[:, [0, 1, 4, 5]], published.uc_bi["states"], atol=1.5e-4)


@pytest.mark.parametrize("clark", [_clark1987, _clark1989])
def test_clark_smoothed_states_equal_statsmodels(clark):
    y, matrices = clark()
    smoothed = _ssm(matrices, _kim_nelson_prior(matrices["A"])).smooth(y)
    theirs = _statsmodels_smoother(y, matrices, None)
    # the vague prior (variance 100 against variances of 1e-5, R = 0) costs both smoothers digits
    # in the first 4 steps; after them the covariances agree to 1e-10
    assert smoothed.log_likelihood == pytest.approx(theirs.llf_obs.sum(), rel=1e-10)
    np.testing.assert_allclose(smoothed.means, theirs.smoothed_state.T, atol=2e-8)
    covariances = theirs.smoothed_state_cov.transpose(2, 0, 1)
    np.testing.assert_allclose(smoothed.covariances, covariances, atol=5e-7)
    np.testing.assert_allclose(smoothed.covariances[4:], covariances[4:], atol=1e-10)
    gnp = matrices["C"][0]  # observed without error: Var(C x_t | y) = 0
    assert np.abs(np.einsum("i,tij,j->t", gnp, smoothed.covariances, gnp)).max() < 1e-7


def test_clark_1989_exact_diffuse_equals_statsmodels():
    """Trend, drift and unemployment trend exactly diffuse, the AR(2) cycle (and its lags) at its
    stationary law: log-likelihood, smoothed states and covariances as statsmodels'."""
    y, matrices = _clark1989()
    cycle = matrices["A"][1:4, 1:4]
    P0 = np.zeros((6, 6))
    P0[1:4, 1:4] = linalg.solve_discrete_lyapunov(cycle, matrices["Q"][1:4, 1:4])
    model = _ssm(matrices, P0, diffuse=[True, False, False, False, True, True])
    init = Initialization(6)
    init.set((0, 1), "diffuse")
    init.set((1, 4), "stationary")
    init.set((4, 6), "diffuse")
    theirs = _statsmodels_smoother(y, matrices, init)
    smoothed = model.smooth(y)
    assert smoothed.log_likelihood == pytest.approx(theirs.llf_obs.sum(), abs=1e-7)
    np.testing.assert_allclose(smoothed.means, theirs.smoothed_state.T, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(smoothed.covariances, theirs.smoothed_state_cov.transpose(2, 0, 1), atol=1e-11)


def test_clark_1987_as_a_structural_model_equals_unobserved_components_exact_diffuse():
    """Clark's model is a local linear trend plus an AR(2) cycle without irregular: StructuralModel
    at Kim & Nelson's estimates, exactly diffuse, has statsmodels' log-likelihood and smoothed trend,
    drift and cycle; its fit reaches a likelihood at least as high as statsmodels' from there."""
    y, _ = _clark1987()
    sigma_v, sigma_e, sigma_w, phi_1, phi_2 = published.uc_uni["parameters"]
    model = StructuralModel(components=(LocalLinearTrend(), ARIMA(2)))
    model.params_ = np.array([sigma_v**2, sigma_w**2, phi_1, phi_2, sigma_e**2])
    reference = UnobservedComponents(
        y, level=True, stochastic_level=True, trend=True, stochastic_trend=True, autoregressive=2,
        irregular=False, use_exact_diffuse=True,
    )  # fmt: skip
    theirs = reference.smooth([sigma_v**2, sigma_w**2, sigma_e**2, phi_1, phi_2])
    smoothed = model.smooth(y)
    assert smoothed.log_likelihood == pytest.approx(theirs.llf, abs=1e-7)
    for name, part in [("level", theirs.level), ("slope", theirs.trend), ("arima", theirs.autoregressive)]:
        np.testing.assert_allclose(smoothed.components[name], part["smoothed"], rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(smoothed.component_variances[name], part["smoothed_cov"], rtol=1e-6, atol=1e-14)

    fitted = model.fit(y)
    confirmed = reference.fit(start_params=theirs.params, disp=False, cov_type="none")
    assert fitted.log_likelihood_ >= confirmed.llf - 1e-6


# ---------------------------------------------------- statsmodels' structural references
# case name in results_structural -> (our components, statsmodels' parameter names in ours' order)
UNOBSERVED_COMPONENTS = {
    "deterministic_constant": ((LocalLevel(stochastic=False), Irregular()), ["sigma2.irregular"]),
    "local_level": ((LocalLevel(), Irregular()), ["sigma2.level", "sigma2.irregular"]),
    "random_walk": ((LocalLevel(),), ["sigma2.level"]),
    "deterministic_trend": (
        (LocalLinearTrend(stochastic_level=False, stochastic_slope=False), Irregular()),
        ["sigma2.irregular"],
    ),
    "local_linear_deterministic_trend": (
        (LocalLinearTrend(stochastic_slope=False), Irregular()),
        ["sigma2.level", "sigma2.irregular"],
    ),
    "random_walk_with_drift": ((LocalLinearTrend(stochastic_slope=False),), ["sigma2.level"]),
    "local_linear_trend": (
        (LocalLinearTrend(), Irregular()),
        ["sigma2.level", "sigma2.trend", "sigma2.irregular"],
    ),
    "smooth_trend": ((LocalLinearTrend(stochastic_level=False), Irregular()), ["sigma2.trend", "sigma2.irregular"]),
    "random_trend": ((LocalLinearTrend(stochastic_level=False),), ["sigma2.trend"]),
    # statsmodels' damped cycle at damping 1 (diffuse under its exact start): our undamped cycle
    "cycle": ((Cycle(damped=False), Irregular()), ["sigma2.cycle", "frequency.cycle", "sigma2.irregular"]),
    "seasonal": ((Seasonal(4), Irregular()), ["sigma2.seasonal", "sigma2.irregular"]),
    "freq_seasonal": ((TrigonometricSeasonal(5, 2), Irregular()), ["sigma2.freq_seasonal_5(2)", "sigma2.irregular"]),
    "rtrend_ar1": ((LocalLinearTrend(stochastic_level=False), ARIMA(1)), ["sigma2.trend", "ar.L1", "sigma2.ar"]),
}


@pytest.fixture(scope="module")
def unemployment() -> np.ndarray:
    return macrodata.load_pandas().data["unemp"].to_numpy(float)


@pytest.mark.parametrize("case", sorted(UNOBSERVED_COMPONENTS))
def test_unobserved_components_references_of_kfas(case, unemployment):
    """KFAS's log-likelihood (which leaves out the log 2 pi of each of the d diffuse steps) at the
    given parameters, to statsmodels' tolerance; smoothed states equal statsmodels' exact diffuse
    ones (compared through the state-basis-free signals)."""
    true = getattr(kfas, case)
    spec = true["models"][0]
    components, names = UNOBSERVED_COMPONENTS[case]
    reference = UnobservedComponents(unemployment, **spec, use_exact_diffuse=True)
    given = dict(zip(reference.param_names, true["params"]))
    model = StructuralModel(components=components)
    model.params_ = np.array([given[name] for name in names])
    d = sum(c.n_states for c in components if not isinstance(c, ARIMA))
    assert model.score(unemployment) + d / 2 * LOG_2PI == pytest.approx(true["llf"], rel=true.get("rtol", 1e-7))

    theirs = reference.smooth(true["params"])
    smoothed = model.smooth(unemployment)
    assert smoothed.log_likelihood == pytest.approx(theirs.llf, abs=1e-7)
    parts = {
        "level": theirs.level,
        "slope": theirs.trend,
        "seasonal": theirs.seasonal,
        "cycle": theirs.cycle,
        "arima": theirs.autoregressive,
        "freq_seasonal_5(2)": theirs.freq_seasonal[0] if theirs.freq_seasonal else None,
    }
    for name in smoothed.components.columns.drop("irregular", errors="ignore"):
        np.testing.assert_allclose(smoothed.components[name], parts[name]["smoothed"], rtol=1e-8, atol=1e-8)
