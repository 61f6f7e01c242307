"""Structural models and ARIMA: their blocks, log-likelihoods equal statsmodels' at given parameters
(the same initialisation), fits that reach the maximum, forecasts, standard errors, diagnostics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import linalg
from statsmodels.tsa.statespace.initialization import Initialization
from statsmodels.tsa.statespace.sarimax import SARIMAX
from statsmodels.tsa.statespace.structural import UnobservedComponents

from modeshift import StructuralModel
from modeshift.datasets import load_co2, load_nile
from modeshift.models.em import ConvergenceWarning
from modeshift.models.structural import (
    ARIMA,
    Cycle,
    Irregular,
    LocalLevel,
    LocalLinearTrend,
    Regression,
    Seasonal,
    TrigonometricSeasonal,
)
from modeshift.models.structural_components import stationary_coefficients, unconstrained_coefficients

KAPPA = 1e6  # statsmodels' default approximately diffuse variance, used on both sides


@pytest.fixture(scope="module")
def nile() -> np.ndarray:
    return load_nile()["volume"].to_numpy(float)


@pytest.fixture(scope="module")
def co2_monthly() -> np.ndarray:
    """Monthly means of the weekly CO2 series, from 1959 (no month missing in the first years)."""
    co2 = load_co2()
    monthly = co2.set_index(pd.to_datetime(co2["date"]))["co2"].resample("MS").mean()
    return monthly["1959":].to_numpy()


def _approximately_diffuse(model, diffuse: np.ndarray) -> None:
    """statsmodels' model with our initialisation: the diffuse states at KAPPA, the others at
    their stationary law, and as many steps burned as there are diffuse states."""
    init = Initialization(model.k_states)
    edges = np.r_[0, np.flatnonzero(np.diff(diffuse.astype(int))) + 1, len(diffuse)]
    for start, end in zip(edges[:-1], edges[1:]):  # a stationary block's states are correlated
        kind = "approximate_diffuse" if diffuse[start] else "stationary"
        init.set((int(start), int(end)), kind, approximate_diffuse_variance=KAPPA)
    model.ssm.initialization = init
    model.ssm.loglikelihood_burn = int(diffuse.sum())


# ------------------------------------------------------------------ components
def test_monahan_transform_gives_stationary_coefficients_and_inverts():
    rng = np.random.default_rng(0)
    for p in (1, 2, 5):
        free = 3 * rng.normal(size=p)
        phi = stationary_coefficients(free)
        assert np.abs(np.roots(np.r_[1.0, -phi])).max() < 1
        np.testing.assert_allclose(unconstrained_coefficients(phi), free, rtol=1e-9)
    with pytest.raises(ValueError, match="not stationary"):
        unconstrained_coefficients([1.2])


def test_arma_block_starts_at_the_stationary_law():
    """ARMA(1, 1): Var u = sigma2 (1 + 2 phi theta + theta^2) / (1 - phi^2), the textbook value."""
    phi, theta, sigma2 = 0.7, 0.4, 2.0
    block = ARIMA(1, 0, 1).block(np.array([phi, theta, sigma2]))
    assert block.initial_covariance[0, 0] == pytest.approx(sigma2 * (1 + 2 * phi * theta + theta**2) / (1 - phi**2))
    P = block.initial_covariance
    np.testing.assert_allclose(block.dynamics @ P @ block.dynamics.T + block.covariance, P, atol=1e-12)


def test_components_map_their_parameters_to_free_values_and_back():
    for component, values in [
        (ARIMA(2, 1, 2, intercept=True), np.array([0.5, 0.5, -0.3, 0.4, 0.2, 3.0])),
        (Cycle(), np.array([0.3, 0.7, 0.9])),
        (Cycle(damped=False, period_bounds=(4, 40)), np.array([0.3, 0.7])),
        (LocalLinearTrend(stochastic_level=False), np.array([0.01])),
        (TrigonometricSeasonal(7.5, 2), np.array([0.2])),
        (Regression(2), np.array([1.5, -2.0])),
    ]:
        assert len(component.names()) == len(component.kinds()) == len(values)
        np.testing.assert_allclose(component.from_free(component.to_free(values)), values, rtol=1e-10)


def test_seasonal_effects_sum_to_the_disturbance():
    """Dummy seasonal: s consecutive effects sum to omega; trigonometric: the full set of
    harmonics of an integer period reproduces any pattern that sums to 0 (period 4)."""
    block = Seasonal(4).block(np.array([1.0]))
    state = np.array([1.0, -2.0, 0.5])
    path = [state]
    for _ in range(5):
        path.append(block.dynamics @ path[-1])
    effects = [x[0] for x in path]
    assert sum(effects[:4]) == pytest.approx(0.0) and sum(effects[1:5]) == pytest.approx(0.0)
    trig = TrigonometricSeasonal(4, 2).block(np.array([1.0]))
    np.testing.assert_allclose(np.linalg.matrix_power(trig.dynamics, 4), np.eye(4), atol=1e-12)


# -------------------------------------------------- log-likelihoods at given parameters
def test_arma_log_likelihood_equals_sarimax(nile):
    model = StructuralModel.arima(1, 0, 1, intercept=True)
    model.params_ = np.array([300.0, 0.7, -0.3, 20000.0])
    reference = SARIMAX(nile, order=(1, 0, 1), trend="c")
    assert model.score(nile) == pytest.approx(reference.loglike(model.params_), rel=1e-12)


def test_arima_log_likelihood_equals_sarimax_with_missing_values(nile):
    y = nile.copy()
    y[[10, 11, 50]] = np.nan
    model = StructuralModel.arima(2, 1, 1, intercept=True, diffuse_variance=KAPPA)
    model.params_ = np.array([2.0, 0.3, -0.2, -0.6, 15000.0])
    reference = SARIMAX(y, order=(2, 1, 1), trend="c")
    _approximately_diffuse(reference, np.arange(reference.k_states) < 1)
    assert model.score(y) == pytest.approx(reference.loglike(model.params_), rel=1e-12)


def test_local_level_log_likelihood_equals_unobserved_components(nile):
    model = StructuralModel.unobserved_components(level="local level", diffuse_variance=KAPPA)
    model.params_ = np.array([1500.0, 15000.0])  # sigma2.level, sigma2.irregular
    reference = UnobservedComponents(nile, level="llevel")
    reference.ssm.initial_variance = KAPPA
    reference.initialize_default()
    assert model.score(nile) == pytest.approx(reference.loglike([15000.0, 1500.0]), rel=1e-12)


def test_trend_seasonal_cycle_ar_regression_log_likelihood_equals_unobserved_components(co2_monthly):
    """Every component at once, each block and the way they stack; statsmodels' cycle is made
    stationary as ours (it starts every non-AR state diffuse)."""
    y = co2_monthly[:240]
    x = np.sin(np.arange(len(y)) / 7.0)[:, None]
    model = StructuralModel(
        components=(LocalLinearTrend(), Seasonal(12), Cycle(), ARIMA(1), Regression(1), Irregular()),
        diffuse_variance=KAPPA,
    )
    ours = {
        "sigma2.level": 0.05,
        "sigma2.trend": 1e-4,
        "sigma2.seasonal": 1e-3,
        "sigma2.cycle": 0.01,
        "frequency.cycle": 0.3,
        "damping.cycle": 0.8,
        "ar.L1": 0.5,
        "sigma2": 0.02,
        "beta.x1": 0.7,
        "sigma2.irregular": 0.03,
    }
    model.params_ = np.array([ours[name] for name in model.param_names])
    reference = UnobservedComponents(
        y, level="lltrend", seasonal=12, cycle=True, damped_cycle=True, stochastic_cycle=True, autoregressive=1, exog=x
    )
    # statsmodels' states: level, trend, 11 seasonal, 2 cycle, AR; its diffuse ones are ours
    diffuse = np.r_[np.ones(13, bool), np.zeros(3, bool)]
    _approximately_diffuse(reference, diffuse)
    theirs = [ours["sigma2" if name == "sigma2.ar" else name] for name in reference.param_names]
    assert model.score(y, exog=x) == pytest.approx(reference.loglike(theirs), rel=1e-9)


def test_trigonometric_seasonal_log_likelihood_equals_freq_seasonal():
    y = load_co2()["co2"].to_numpy(float)[400:900]  # ten years of weeks, a few missing
    period = 365.25 / 7
    model = StructuralModel.unobserved_components(
        level="local linear trend", freq_seasonal=[(period, 2)], diffuse_variance=KAPPA
    )
    model.params_ = np.array([0.05, 1e-4, 1e-3, 0.1])
    reference = UnobservedComponents(y, level="lltrend", freq_seasonal=[{"period": period, "harmonics": 2}])
    _approximately_diffuse(reference, np.ones(reference.k_states, bool))
    reference.ssm.loglikelihood_burn = int(np.flatnonzero(np.isfinite(y))[5]) + 1  # we burn 6 observed values
    # 2e-8 apart: the round-off of the two filters through the diffuse steps at KAPPA (P0 ~ 1e6)
    assert model.score(y) == pytest.approx(reference.loglike([0.1, 0.05, 1e-4, 1e-3]), rel=1e-7)


@pytest.mark.parametrize(
    "components",
    [
        (
            LocalLinearTrend(),
            Seasonal(4),
            TrigonometricSeasonal(12, 1),
            Cycle(),
            ARIMA(2, 0, 1, intercept=True),
            Regression(2),
            Irregular(),
        ),
        (ARIMA(1, 1, 2), Regression(2)),
    ],  # fmt: skip
    ids=["every component", "ARIMA(1, 1, 2)"],
)
def test_the_gradient_the_fit_climbs_equals_differences_of_the_log_likelihood(co2_monthly, components):
    """Every component kind (variances, coefficients, AR/MA, frequency and damping), with exog
    and a missing value: the chained analytic gradient against central differences of log L."""
    from modeshift.models.structural import _Layout, _Objective

    rng = np.random.default_rng(3)
    y = co2_monthly[:120].copy()
    y[17] = np.nan
    exog = rng.normal(size=(len(y), 2))
    model = StructuralModel(components=components)
    seqs = model._sequences(y, None, exog).require_observed()
    start = model._component_start(seqs)
    objective = _Objective(model, seqs, start)
    layout = _Layout(model._components(), model._scaled_start(start, seqs, objective))
    x = layout.x0 + 0.1 * rng.normal(size=len(layout.x0))
    value, slopes = objective(layout.params(x))
    gradient = layout.chain(x, slopes)
    assert value == pytest.approx(model._log_likelihood(layout.params(x), seqs), rel=1e-12)
    numeric = np.empty_like(x)
    for i in range(len(x)):
        h = 1e-5 * max(1.0, abs(x[i]))
        up, down = x.copy(), x.copy()
        up[i] += h
        down[i] -= h
        numeric[i] = (
            model._log_likelihood(layout.params(up), seqs) - model._log_likelihood(layout.params(down), seqs)
        ) / (2 * h)
    np.testing.assert_allclose(gradient, numeric, rtol=1e-5, atol=1e-6 * np.abs(numeric).max())


@pytest.mark.parametrize("exog", [False, True], ids=["no exog", "exog"])
def test_the_start_scale_from_the_score_is_the_mean_squared_standardised_innovation(co2_monthly, exog):
    """Scaling every variance by c = the mean squared standardised innovation (of the steps after
    the exact diffuse ones) maximises log L along that ray; the fit reads c off one score pass."""
    from modeshift.models.structural import _Objective

    y = co2_monthly[:150].copy()
    y[[0, 40]] = np.nan
    model = StructuralModel(components=(LocalLinearTrend(), Seasonal(12), Cycle(), Irregular(), Regression(1)))
    regressors = np.random.default_rng(5).normal(size=(len(y), 1)) if exog else np.zeros((len(y), 1))
    seqs = model._sequences(y, None, regressors).require_observed()
    start = model._component_start(seqs)
    standardised = model._filter(model._system(start), seqs).standardised
    variances = np.array([kind == "variance" for c in model.components for kind in c.kinds()])
    scaled = model._scaled_start(start, seqs, _Objective(model, seqs, start))
    np.testing.assert_allclose(scaled[variances] / start[variances], np.nanmean(standardised**2), rtol=1e-9)
    np.testing.assert_array_equal(scaled[~variances], start[~variances])


def test_the_first_step_knows_the_curvature_along_the_scaled_start(nile):
    """At the start scaled to the best point of its ray, -log L along x0 (every standard deviation
    times 1 + t) has second derivative 2 n in t (n the observations after the diffuse step), so
    2 n / |x0|^2 per unit length: the scale of the fit's first BFGS step."""
    from modeshift.models.structural import _Layout, _Objective

    model = StructuralModel.unobserved_components(level="local level")
    seqs = model._sequences(nile, None, None).require_observed()
    start = model._component_start(seqs)
    objective = _Objective(model, seqs, start)
    layout = _Layout(model._components(), model._scaled_start(start, seqs, objective))
    h = 1e-3
    at = [-objective(layout.params((1 + t) * layout.x0))[0] for t in (-h, 0.0, h)]
    assert (at[0] - 2 * at[1] + at[2]) / h**2 == pytest.approx(2 * 99, rel=1e-4)
    assert objective.n_effective == 99


def test_the_nile_fit_takes_few_likelihood_passes(nile, monkeypatch):
    """The climb's cost is its compiled passes: 10 on the Nile (12 with scipy's L-BFGS-B from the
    same start), one of them the start's scale; 11 leaves room for round-off elsewhere."""
    from modeshift._kernels.lds_score import ScorePass

    passes = []
    original = ScorePass.__call__
    monkeypatch.setattr(ScorePass, "__call__", lambda self: passes.append(1) or original(self))
    model = StructuralModel.unobserved_components(level="local level").fit(nile)
    assert model.converged_ and len(passes) <= 11
    assert model.log_likelihood_ == pytest.approx(-633.464564, abs=1e-6)


def test_a_flat_ridge_is_climbed_to_the_top():
    """A smooth trend plus an AR(1) on the US unemployment rate: the AR coefficient's optimum is
    0.9997, where its unconstrained form is flat; a climb stopping at a gradient of 1e-3 ends 2e-4
    below the maximum that 70 iterations of L-BFGS-B at 1e-5 reach."""
    from statsmodels.datasets import macrodata

    y = macrodata.load_pandas().data["unemp"].to_numpy(float)
    model = StructuralModel(components=(LocalLinearTrend(stochastic_level=False), ARIMA(1))).fit(y)
    assert model.converged_
    assert model.log_likelihood_ >= -32.9936708 - 1e-6


# ----------------------------------------------------------------------- fits
def test_nile_local_level_reaches_durbin_koopman_mle(nile):
    model = StructuralModel.unobserved_components(level="local level").fit(nile)
    estimates = dict(zip(model.param_names, model.params_))
    assert estimates["sigma2.irregular"] == pytest.approx(15099, rel=5e-3)
    assert estimates["sigma2.level"] == pytest.approx(1469.1, rel=5e-3)
    assert model.converged_ and model.n_iter_ == len(model.history_)
    assert np.all(np.diff(model.history_) >= -1e-9)


def test_nile_local_level_fit_matches_statsmodels_on_the_same_likelihood(nile):
    model = StructuralModel.unobserved_components(level="local level", diffuse_variance=KAPPA).fit(nile)
    reference = UnobservedComponents(nile, level="llevel")
    reference.ssm.initial_variance = KAPPA
    reference.initialize_default()
    fitted = reference.fit(disp=False, cov_type="none")  # stops early: 15078 / 1478.8
    assert model.log_likelihood_ >= fitted.llf - 1e-8
    confirmed = reference.fit(start_params=model.params_[::-1], disp=False, cov_type="none")
    np.testing.assert_allclose(model.params_[::-1], confirmed.params, rtol=1e-3)
    np.testing.assert_allclose(model.params_[::-1], fitted.params, rtol=2e-2)


def test_arma_on_the_nile_reaches_the_maximum_statsmodels_confirms(nile):
    """statsmodels' default SARIMAX fit stops at -638.12 from its start; started from ours it
    stays at ours, the higher maximum. Ljung-Box Q, Jarque-Bera and H at the estimate are its."""
    model = StructuralModel.arima(1, 0, 1, intercept=True).fit(nile)
    reference = SARIMAX(nile, order=(1, 0, 1), trend="c")
    default = reference.fit(disp=False, cov_type="none")
    assert model.log_likelihood_ >= default.llf - 1e-6
    confirmed = reference.fit(start_params=model.params_, disp=False, cov_type="approx")
    np.testing.assert_allclose(model.params_, confirmed.params, rtol=1e-3)
    assert model.log_likelihood_ == pytest.approx(confirmed.llf, abs=1e-6)

    at_ours = reference.smooth(model.params_, cov_type="approx")
    summary = model.summary(nile)
    q, q_p = at_ours.test_serial_correlation("ljungbox")[0][:, -1]
    diagnostics = summary.diagnostics
    assert diagnostics.loc["Ljung-Box Q(10)", "statistic"] == pytest.approx(q, rel=1e-9)
    assert diagnostics.loc["Ljung-Box Q(10)", "p_value"] == pytest.approx(q_p, rel=1e-8)
    jb, jb_p = at_ours.test_normality("jarquebera")[0][:2]
    assert diagnostics.loc["Jarque-Bera", "statistic"] == pytest.approx(jb, rel=1e-9)
    h, h_p = at_ours.test_heteroskedasticity("breakvar")[0]
    assert diagnostics.loc["heteroskedasticity H", "statistic"] == pytest.approx(h, rel=1e-9)
    assert diagnostics.loc["heteroskedasticity H", "p_value"] == pytest.approx(h_p, rel=1e-8)
    # the observed information: numerical Hessians on both sides
    np.testing.assert_allclose(summary.parameters["std_error"], at_ours.bse, rtol=2e-2)
    assert summary.fit["aic"] == pytest.approx(at_ours.aic, rel=1e-9)
    assert "ma.L1" in str(summary)


def test_trend_and_seasonal_fit_on_co2_matches_statsmodels(co2_monthly):
    y = co2_monthly[:240]
    model = StructuralModel.unobserved_components(level="local linear trend", seasonal=12, diffuse_variance=KAPPA).fit(
        y
    )
    reference = UnobservedComponents(y, level="lltrend", seasonal=12)
    reference.ssm.initial_variance = KAPPA
    reference.initialize_default()
    fitted = reference.fit(disp=False, cov_type="none")
    assert model.log_likelihood_ >= fitted.llf - 1e-4
    # sigma2.level, sigma2.trend, sigma2.seasonal, sigma2.irregular against statsmodels' order
    ours = dict(zip(model.param_names, model.params_))
    theirs = dict(zip(fitted.model.param_names, fitted.params))
    for name in ("sigma2.level", "sigma2.irregular"):
        assert ours[name] == pytest.approx(theirs[name], rel=2e-2)


def test_a_variance_whose_optimum_is_zero_goes_there_and_has_no_standard_error():
    rng = np.random.default_rng(1)
    y = 10 + rng.normal(size=300)  # a constant level: sigma2.level = 0
    model = StructuralModel.unobserved_components(level="local level").fit(y)
    level, irregular = model.params_
    assert level < 1e-6 * irregular
    assert irregular == pytest.approx(np.var(y), rel=0.05)
    errors = model.standard_errors(y)
    assert np.isnan(errors["sigma2.level"]) and np.isfinite(errors["sigma2.irregular"])


def test_regression_coefficients_are_recovered():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(400, 2))
    level = np.cumsum(rng.normal(scale=0.1, size=400))
    y = level + x @ [2.0, -1.0] + rng.normal(scale=0.5, size=400)
    model = StructuralModel.unobserved_components(level="local level", n_exog=2).fit(y, exog=x)
    beta = [value for name, value in zip(model.param_names, model.params_) if name.startswith("beta")]
    np.testing.assert_allclose(beta, [2.0, -1.0], atol=0.05)


# ---------------------------------------------------------- forecasts and data
def test_forecast_and_intervals_equal_statsmodels(nile):
    model = StructuralModel.arima(1, 0, 1, intercept=True)
    model.params_ = np.array([300.0, 0.7, -0.3, 20000.0])
    forecast = model.forecast(nile, horizon=5)
    reference = SARIMAX(nile, order=(1, 0, 1), trend="c").smooth(model.params_).get_forecast(5)
    np.testing.assert_allclose(forecast.means[:, 0], reference.predicted_mean, rtol=1e-10)
    np.testing.assert_allclose(forecast.covariances[:, 0, 0], reference.var_pred_mean, rtol=1e-10)
    lower, upper = forecast.interval(0.9)
    np.testing.assert_allclose(np.c_[lower, upper], reference.conf_int(alpha=0.1), rtol=1e-10)


def test_forecast_with_exog_and_several_sequences():
    rng = np.random.default_rng(3)
    x = [rng.normal(size=(50, 1)), rng.normal(size=(40, 1))]
    y = [np.cumsum(rng.normal(size=50)) + 3 * x[0][:, 0], np.cumsum(rng.normal(size=40)) + 3 * x[1][:, 0]]
    model = StructuralModel.unobserved_components(level="local level", n_exog=1).fit(y, exog=x)
    future = [np.ones((4, 1)), np.zeros((4, 1))]
    forecast = model.forecast(y, 4, exog=x, future_exog=future)
    assert isinstance(forecast.means, list) and forecast.means[0].shape == (4, 1)
    beta = model.params_[model.param_names.index("beta.x1")]
    # a random walk's forecast is flat: the two futures differ by beta exactly
    np.testing.assert_allclose(np.diff(forecast.means[0][:, 0]), 0, atol=1e-9)
    with pytest.raises(ValueError, match="future_exog"):
        model.forecast(y, 4, exog=x)
    assert beta == pytest.approx(3.0, abs=0.3)


def test_sample_draws_from_the_model():
    model = StructuralModel.arima(1, 0, 0)
    model.params_ = np.array([0.8, 1.0])
    y, states = model.sample(20000, random_state=0)
    assert y.shape == (20000, 1) and states.shape == (20000, 1)
    assert np.var(y) == pytest.approx(1 / (1 - 0.64), rel=0.05)
    assert np.corrcoef(y[1:, 0], y[:-1, 0])[0, 1] == pytest.approx(0.8, abs=0.02)


def test_bad_models_and_parameters_are_clear_errors(nile):
    with pytest.raises(ValueError, match="two components name"):
        StructuralModel(components=(LocalLevel(), LocalLevel())).fit(nile)
    with pytest.raises(ValueError, match="no state"):
        StructuralModel(components=(Irregular(),)).fit(nile)
    with pytest.raises(ValueError, match="components must be"):
        StructuralModel(components=("level",)).fit(nile)
    model = StructuralModel()
    model.params_ = np.array([1.0])
    with pytest.raises(ValueError, match=r"params_ must be 2 finite numbers \(sigma2.level, sigma2.irregular\)"):
        model.score(nile)
    with pytest.raises(ValueError, match="level must be one of"):
        StructuralModel.unobserved_components(level="wiggly")


def test_save_and_load_keep_the_components(tmp_path, nile):
    model = StructuralModel(
        components=(LocalLinearTrend(stochastic_level=False), Cycle(period_bounds=(4, 30)), Irregular())
    )
    model.fit(nile)
    model.save(tmp_path / "m.msz")
    from modeshift import load

    loaded = load(tmp_path / "m.msz")
    assert loaded.components == model.components and type(loaded.components[1]) is Cycle
    assert loaded.score(nile) == model.score(nile)


def test_hand_set_parameters_start_the_fit(nile):
    model = StructuralModel.arima(1, 0, 0, intercept=True, n_iter=0)
    model.params_ = np.array([100.0, 0.9, 20000.0])
    model.fit(nile)
    np.testing.assert_array_equal(model.params_, [100.0, 0.9, 20000.0])
    assert model.history_ == [] and model.log_likelihood_ == model.score(nile)


def test_nile_log_likelihood_equals_statsmodels_exact_diffuse(nile):
    """Issue 14: the Nile local level's log-likelihood equal to statsmodels' exact-diffuse value to 1e-6."""
    model = StructuralModel.unobserved_components(level="local level").fit(nile)
    reference = UnobservedComponents(nile, level="llevel", use_exact_diffuse=True)
    assert model.log_likelihood_ == pytest.approx(reference.loglike(model.params_[::-1]), abs=1e-6)


def test_block_diagonal_stacking():
    model = StructuralModel(components=(LocalLevel(), ARIMA(2, 0, 1), Irregular()))
    model.params_ = np.array([1.0, 0.5, 0.2, 0.3, 2.0, 0.5])
    system = model._system(model.params_)
    level, arma = LocalLevel().block(np.array([1.0])), ARIMA(2, 0, 1).block(np.array([0.5, 0.2, 0.3, 2.0]))
    np.testing.assert_array_equal(system.A, linalg.block_diag(level.dynamics, arma.dynamics))
    np.testing.assert_array_equal(system.Q, linalg.block_diag(level.covariance, arma.covariance))
    np.testing.assert_array_equal(system.C, [1.0, 1.0, 0.0])
    assert system.R == 0.5 and system.burn == 1


# ------------------------------------------------------------------ smoothing
def test_smoothed_components_equal_unobserved_components_exact_diffuse(co2_monthly):
    """Every component, missing values, the exact diffuse start: the smoothed level, slope,
    seasonal, cycle and AR signals and their variances are statsmodels'; the parts add up to y."""
    y = co2_monthly[:240].copy()
    y[[5, 50, 51]] = np.nan
    x = np.sin(np.arange(len(y)) / 7.0)[:, None]
    model = StructuralModel(
        components=(LocalLinearTrend(), Seasonal(12), Cycle(), ARIMA(1), Regression(1), Irregular())
    )
    ours = {
        "sigma2.level": 0.05,
        "sigma2.trend": 1e-4,
        "sigma2.seasonal": 1e-3,
        "sigma2.cycle": 0.01,
        "frequency.cycle": 0.3,
        "damping.cycle": 0.8,
        "ar.L1": 0.5,
        "sigma2": 0.02,
        "beta.x1": 0.7,
        "sigma2.irregular": 0.03,
    }
    model.params_ = np.array([ours[name] for name in model.param_names])
    reference = UnobservedComponents(
        y,
        level="lltrend",
        seasonal=12,
        cycle=True,
        damped_cycle=True,
        stochastic_cycle=True,
        autoregressive=1,
        exog=x,
        use_exact_diffuse=True,
    )
    init = Initialization(reference.k_states)  # ours: the damped cycle stationary, not diffuse
    init.set((0, 13), "diffuse")
    init.set((13, 15), "stationary")
    init.set((15, 16), "stationary")
    reference.ssm.initialization = init
    theirs = reference.smooth([ours["sigma2" if name == "sigma2.ar" else name] for name in reference.param_names])

    smoothed = model.smooth(y, exog=x)
    assert smoothed.log_likelihood == pytest.approx(theirs.llf, abs=1e-8)
    assert smoothed.log_likelihood == pytest.approx(model.score(y, exog=x), abs=1e-10)
    for name, part in [
        ("level", theirs.level),
        ("slope", theirs.trend),
        ("seasonal", theirs.seasonal),
        ("cycle", theirs.cycle),
        ("arima", theirs.autoregressive),
    ]:
        np.testing.assert_allclose(smoothed.components[name], part["smoothed"], rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(smoothed.component_variances[name], part["smoothed_cov"], rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(smoothed.components["regression"], 0.7 * x[:, 0])
    observed = np.isfinite(y)
    added = smoothed.components.drop(columns="slope").sum(axis=1).to_numpy()
    np.testing.assert_allclose(added[observed], y[observed], rtol=1e-12)
    assert (smoothed.components["irregular"][~observed] == 0).all()
    assert smoothed.means.shape == (240, 16) and smoothed.covariances.shape == (240, 16, 16)


def test_smoothed_trigonometric_seasonal_equals_freq_seasonal_and_sequences_come_back_as_lists():
    """A seasonal of period 12 as 2 harmonics (not a yearly one on weeks: see
    ``test_a_weekly_trigonometric_seasonal_is_too_ill_conditioned_for_the_exact_diffuse_start``)."""
    y = load_co2()["co2"].to_numpy(float)[400:900]  # weeks, a few missing
    period = 12.0
    model = StructuralModel.unobserved_components(level="local linear trend", freq_seasonal=[(period, 2)])
    model.params_ = np.array([0.05, 1e-4, 1e-3, 0.1])
    reference = UnobservedComponents(
        y, level="lltrend", freq_seasonal=[{"period": period, "harmonics": 2}], use_exact_diffuse=True
    )
    theirs = reference.smooth([0.1, 0.05, 1e-4, 1e-3])
    assert theirs.nobs_diffuse < 10
    smoothed = model.smooth(y)
    name = f"freq_seasonal_{period!r}(2)"
    np.testing.assert_allclose(smoothed.components[name], theirs.freq_seasonal[0]["smoothed"], atol=1e-8)
    np.testing.assert_allclose(smoothed.means, theirs.smoothed_state.T, atol=1e-8)
    # 1e-8 apart in the 6 diffuse steps (round-off of the two diffuse smoothers), 3e-10 after
    np.testing.assert_allclose(smoothed.covariances, theirs.smoothed_state_cov.transpose(2, 0, 1), atol=3e-8)
    assert smoothed.log_likelihood == pytest.approx(theirs.llf, abs=1e-6)

    both = model.smooth([y[:250], y[250:]])
    assert isinstance(both.components, list) and [len(c) for c in both.components] == [250, 250]
    alone = model.smooth(y[250:])
    np.testing.assert_allclose(both.components[1], alone.components, rtol=1e-10)
    assert both.log_likelihood == pytest.approx(model.score(y[:250]) + model.score(y[250:]), abs=1e-8)


def test_a_weekly_trigonometric_seasonal_is_too_ill_conditioned_for_the_exact_diffuse_start():
    """A yearly seasonal on weeks (period 52.18, 3 harmonics) and a trend: over the 8 weeks that
    identify the 8 diffuse states in exact arithmetic, three sinusoids and a line are nearly
    collinear (the 8 x 8 observability matrix has condition number ~1e8, the last F_inf ~1e-11),
    so the diffuse covariance never reaches 0 in floating point. We say so; statsmodels stays in
    its diffuse steps to the end of the series and reports a meaningless log-likelihood."""
    y = load_co2()["co2"].to_numpy(float)
    model = StructuralModel.unobserved_components(level="local linear trend", freq_seasonal=[(52.18, 3)])
    model.params_ = np.array([0.05, 1e-4, 1e-3, 0.1])
    with pytest.raises(ValueError, match="before its diffuse state components are identified"):
        model.score(y)
    reference = UnobservedComponents(
        y, level="lltrend", freq_seasonal=[{"period": 52.18, "harmonics": 3}], use_exact_diffuse=True
    )
    assert reference.filter([0.1, 0.05, 1e-4, 1e-3]).nobs_diffuse == len(y)


def test_a_fit_that_stops_short_says_so(nile):
    with pytest.warns(ConvergenceWarning, match="cap of n_iter=1"):
        model = StructuralModel.unobserved_components(level="local level", n_iter=1).fit(nile)
    assert not model.converged_


def test_the_layout_cache_tells_components_of_equal_values_apart():
    """Components are named tuples, equal to any tuple of the same values (LocalLevel() ==
    Regression(1)): the cached layout of one model must not serve another."""
    from modeshift.models.structural import _scatter
    from modeshift.models.structural_components import Irregular, LocalLevel, Regression

    first, second = (LocalLevel(), Regression(1), Irregular()), (Regression(1), LocalLevel(), Irregular())
    assert first == second  # as plain tuples
    a = _scatter(tuple((type(c), c) for c in first), 1)
    b = _scatter(tuple((type(c), c) for c in second), 1)
    assert not np.array_equal(a[1], b[1])  # each value's place in the system follows the components' order
