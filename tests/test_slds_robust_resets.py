"""Robust resets (issue 18): the SwitchingLDS's resets with Student-t noise (``reset_dof``), a
Gaussian scale mixture N(0, Q_r / s), s ~ Gamma(nu/2, nu/2), inferred with a factor q(s) per
step and reset; checked against quadrature, against every mode path of a tiny case, against the
Gaussian model as nu grows, and on switches that their reset does not explain."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
from scipy import integrate, optimize, special, stats
from scipy.special import logsumexp

from modeshift import SwitchingLDS
from modeshift.emissions.reset import Resets, scale_posterior, student_log_density, student_noise
from modeshift.metrics import match_modes, mode_accuracy
from modeshift.smc.adapters import SwitchingLinear
from modeshift.smc.rao_blackwell import rao_blackwellised_filter


@pytest.mark.parametrize(
    ("weight", "distance", "dim", "dof"), [(1.0, 0.7, 1, 3.0), (0.4, 30.0, 2, 5.0), (1.0, 2.0, 3, 2.5)]
)
def test_scale_posterior_is_the_optimum_of_its_objective(weight, distance, dim, dof):
    """q(s) = Gamma(a, b) maximises w (n/2 E log s - E[s] delta/2) - KL(q || Gamma(nu/2, nu/2)) over all
    Gammas (searched numerically, the KL in closed form), and the KL it returns is the integral's."""
    expected, expected_log, kl = scale_posterior(np.array(weight), np.array(distance), dim, dof)
    prior = stats.gamma(dof / 2, scale=2 / dof)

    def objective(log_ab):
        a, b = np.exp(log_ab)
        mean, mean_log = a / b, special.digamma(a) - np.log(b)
        divergence = (a - dof / 2) * special.digamma(a) - special.gammaln(a) + special.gammaln(dof / 2)
        divergence += dof / 2 * np.log(2 * b / dof) + a * (dof / 2 - b) / b  # KL(Gamma(a, b) || prior)
        return -(weight * (dim / 2 * mean_log - mean * distance / 2) - divergence)

    best = optimize.minimize(objective, np.log([dof / 2, dof / 2]), method="Nelder-Mead", options={"xatol": 1e-10})
    a, b = np.exp(best.x)
    assert expected == pytest.approx(a / b, rel=1e-4)
    assert expected_log == pytest.approx(special.digamma(a) - np.log(b), abs=1e-4)
    q = stats.gamma(dof / 2 + weight * dim / 2, scale=1 / (dof / 2 + weight * distance / 2))
    by_quadrature = integrate.quad(lambda s: q.pdf(s) * (q.logpdf(s) - prior.logpdf(s)), 0, np.inf, limit=200)[0]
    assert kl == pytest.approx(by_quadrature, rel=1e-7)


def test_student_draws_and_density_are_the_t_distributions():
    """Resets' draws with Student-t noise, standardised by the scale, pass a Kolmogorov-Smirnov test
    against t_nu; :func:`student_noise` has the covariance asked for; the log density is scipy's."""
    rng = np.random.default_rng(0)
    resets = Resets(2, "destination", dof=5.0)
    resets.reset_coefs, resets.reset_intercepts = np.array([[[0.5]], [[-0.8]]]), np.array([[1.0], [0.0]])
    resets.reset_covariances = np.array([[[0.04]], [[0.09]]])
    regressors = np.column_stack([rng.normal(size=20_000), np.ones(20_000)])
    draws = resets.sample_rows(regressors, np.zeros(20_000, dtype=int), np.ones(20_000, dtype=int), rng)[:, 0]
    standardised = (draws + 0.8 * regressors[:, 0]) / 0.3
    assert stats.kstest(standardised, "t", args=(5.0,)).pvalue > 1e-3
    assert stats.kstest(standardised, "norm").pvalue < 1e-6  # not a Gaussian: the t's tails
    covariance = np.array([[1.0, 0.3], [0.3, 0.5]])
    noise = student_noise(np.broadcast_to(np.linalg.cholesky(covariance), (200_000, 2, 2)), np.full(200_000, 6.0), rng)
    np.testing.assert_allclose(np.cov(noise.T), covariance, atol=0.02)
    residuals = rng.normal(size=(5, 2))
    np.testing.assert_allclose(
        student_log_density(residuals, covariance, 4.0),
        stats.multivariate_t(np.zeros(2), covariance, df=4.0).logpdf(residuals),
    )


def _tiny(dof=3.0):
    """Two modes, a 1-D state, resets into each mode (one flips the state): every mode path of a
    few steps can be enumerated, and each switch's scale integrated by quadrature."""
    model = SwitchingLDS(n_states=2, state_dim=1, resets="destination", reset_dof=dof)
    model.startprob_, model.transmat_ = np.array([0.6, 0.4]), np.array([[0.7, 0.3], [0.4, 0.6]])
    model.dynamics_matrices_, model.dynamics_offsets_ = np.array([[[0.9]], [[0.5]]]), np.array([[0.2], [-0.3]])
    model.dynamics_input_matrices_, model.dynamics_covariances_ = np.zeros((2, 1, 0)), np.array([[[0.1]], [[0.2]]])
    model.reset_matrices_, model.reset_offsets_ = np.array([[[0.8]], [[-0.9]]]), np.array([[0.5], [1.0]])
    model.reset_input_matrices_, model.reset_covariances_ = np.zeros((2, 1, 0)), np.array([[[0.05]], [[0.3]]])
    model.observation_matrix_, model.observation_offset_ = np.array([[1.0]]), np.array([0.1])
    model.feedthrough_matrix_, model.observation_covariance_ = np.zeros((1, 0)), np.array([[0.2]])
    model.initial_state_mean_, model.initial_state_covariance_ = np.zeros(1), np.eye(1)
    return model


def _exact_log_likelihood(model, y, n_nodes=150):
    """log p(y) summed over every mode path, each switch's scale s integrated by generalised
    Gauss-Laguerre quadrature (s = 2 u / nu, u ~ Gamma(nu/2, 1)): per path, a Kalman filter run at
    once over the grid of nodes of its switches. The likelihood vanishes as sqrt(u) at u = 0 (the
    switch's variance Q / s grows without bound), so that factor goes into the quadrature's weight
    u^(nu/2 - 1/2) e^-u (150 nodes: within 3e-5 of 200 here)."""
    nu, T = model.reset_dof, len(y)
    nodes, node_weights = special.roots_genlaguerre(n_nodes, nu / 2 - 0.5)
    log_node_weights = np.log(node_weights) - special.gammaln(nu / 2) - 0.5 * np.log(nodes)
    C, d, R = model.observation_matrix_[0, 0], model.observation_offset_[0], model.observation_covariance_[0, 0]
    terms = []
    for path in itertools.product(range(2), repeat=T):
        switches = [t for t in range(1, T) if path[t] != path[t - 1]]
        grid = np.meshgrid(*[2 * nodes / nu] * len(switches), indexing="ij")  # the scales of the switches
        total = sum(np.meshgrid(*[log_node_weights] * len(switches), indexing="ij"), np.zeros(()))
        total = total + np.log(model.startprob_[path[0]])
        total = total + sum(np.log(model.transmat_[i, j]) for i, j in zip(path, path[1:]))
        mean, var = model.initial_state_mean_[0], model.initial_state_covariance_[0, 0]
        for t in range(T):
            j = path[t]
            if t in switches:
                A, b = model.reset_matrices_[j, 0, 0], model.reset_offsets_[j, 0]
                mean, var = A * mean + b, A * A * var + model.reset_covariances_[j, 0, 0] / grid[switches.index(t)]
            elif t > 0:
                A, b = model.dynamics_matrices_[j, 0, 0], model.dynamics_offsets_[j, 0]
                mean, var = A * mean + b, A * A * var + model.dynamics_covariances_[j, 0, 0]
            innovation = C * C * var + R
            total = total + stats.norm.logpdf(y[t], C * mean + d, np.sqrt(innovation))
            gain = var * C / innovation
            mean, var = mean + gain * (y[t] - C * mean - d), var - gain * C * var
        terms.append(logsumexp(total))
    return float(logsumexp(terms))


def test_elbo_is_a_lower_bound_of_the_exact_likelihood():
    """On every mode path of a tiny case, the scales integrated out: the ELBO of the converged q(x) q(z)
    q(s) lies below log p(y), and not far (measured 0.65 below: the mean-field factorisation's gap);
    the Gaussian model's ELBO (Q_r read as the resets' covariance, no scales) is another number."""
    model = _tiny()
    y = np.array([0.3, -1.5, 2.2, 1.9])[:, None]
    exact = _exact_log_likelihood(model, y[:, 0])
    elbo = model._infer(model._sequences(y, None, None)).elbo
    assert elbo <= exact + 1e-9
    assert elbo > exact - 1.0, (elbo, exact)
    gaussian = copy.deepcopy(model).set_params(reset_dof=None)
    assert abs(gaussian._infer(gaussian._sequences(y, None, None)).elbo - elbo) > 0.05


def test_rao_blackwellised_filter_estimates_the_exact_likelihood():
    """The Rao-Blackwellised filter, which draws each switch's scale with its mode, estimates the exact
    log p(y) of the tiny case (its Gaussian counterpart, resets of covariance Q_r, lies 0.06 lower)."""
    model = _tiny()
    y = np.array([0.3, -1.5, 2.2, 1.9])[:, None]
    exact = _exact_log_likelihood(model, y[:, 0])
    estimates = [rao_blackwellised_filter(model, y, 20_000, random_state=s).log_likelihood for s in range(5)]
    assert np.log(np.mean(np.exp(estimates))) == pytest.approx(exact, abs=0.02)


def test_bootstrap_transition_density_is_the_student_t():
    """The SMC adapter's log density of a reset step is the t's with scale Q_r (its covariance
    Q_r nu / (nu - 2) is what ``dynamics_terms`` reports), a flow's the Gaussian's."""
    model = _tiny(dof=4.0)
    adapter = SwitchingLinear(model)
    previous = np.array([[0.5, 0.0], [0.5, 0.0]])
    states = np.array([[-0.2, 1.0], [0.9, 0.0]])  # a switch into mode 1 (its reset), a stay in mode 0
    got = adapter.log_transition(previous, states, 1)
    reset = stats.t.logpdf(-0.2, 4.0, loc=-0.9 * 0.5 + 1.0, scale=np.sqrt(0.3)) + np.log(0.3)
    flow = stats.norm.logpdf(0.9, 0.9 * 0.5 + 0.2, np.sqrt(0.1)) + np.log(0.7)
    np.testing.assert_allclose(got, [reset, flow])
    np.testing.assert_allclose(adapter.Q[3], 0.3 * 4.0 / 2.0)


def _with_outlying_switches(seed, n_steps=500, n_sequences=4, every=5):
    """A 1-D state seen with small noise: mode 0 relaxes to 3, mode 1 to -3, and entering mode 1
    flips the state, x_t = -0.8 x_t-1 + 0.5, except at every ``every``-th such switch, which throws it
    to about 6 whatever it was (as a ball relaunched instead of bounced)."""
    rng = np.random.default_rng(seed)
    sequences, paths = [], []
    for _ in range(n_sequences):
        modes, x, entered = np.zeros(n_steps, dtype=int), np.zeros(n_steps), 0
        for t in range(1, n_steps):
            modes[t] = modes[t - 1] if rng.random() < 0.97 else 1 - modes[t - 1]
            if modes[t] == 1 and modes[t - 1] == 0:
                entered += 1
                outlier = entered % every == 0
                x[t] = 6.0 + 0.3 * rng.normal() if outlier else -0.8 * x[t - 1] + 0.5 + 0.05 * rng.normal()
            else:
                x[t] = 0.9 * x[t - 1] + (0.3 if modes[t] == 0 else -0.3) + 0.2 * rng.normal()
        sequences.append((x + 0.05 * rng.normal(size=n_steps))[:, None])
        paths.append(modes)
    return sequences, paths


@pytest.mark.filterwarnings("ignore:.*stopped at its cap")
def test_a_robust_reset_is_not_pulled_by_switches_it_does_not_explain():
    """One flip in five is an outlier: the Gaussian reset's slope is pulled from -0.8 (measured -0.69)
    and its noise covers the outliers; the Student-t reset's slope stays at -0.8 (measured -0.808), its
    scale that of the flips' own noise; the modes are found either way, and EM never lowers its ELBO."""
    y, modes = _with_outlying_switches(0)
    truth = np.concatenate(modes)
    slopes, noise = {}, {}
    for dof in (None, 4.0):
        model = SwitchingLDS(2, state_dim=1, resets="destination", reset_dof=dof, n_iter=150, random_state=0).fit(y)
        assert np.diff(model.history_).min() > -1e-8 * abs(model.history_[-1])
        paths = np.concatenate(model.predict(y))
        assert mode_accuracy(truth, paths) > 0.95
        flip = int(np.flatnonzero(match_modes(truth, paths) == 1)[0])
        scale = model.observation_matrix_[0, 0] ** 2  # the reset's noise on the scale of y
        slopes[dof], noise[dof] = model.reset_matrices_[flip, 0, 0], scale * model.reset_covariances_[flip, 0, 0]
    assert slopes[4.0] == pytest.approx(-0.8, abs=0.05), slopes
    assert abs(slopes[None] + 0.8) > 0.08, slopes
    assert noise[4.0] < 0.05 < 1.0 < noise[None], noise


@pytest.mark.filterwarnings("ignore:.*stopped at its cap")
def test_many_degrees_of_freedom_give_the_gaussian_model():
    """As nu grows the t tends to the Gaussian: the same fit, but for q(s) = 1 + O(1/nu)."""
    y, _ = _with_outlying_switches(1, n_steps=200, n_sequences=2)
    fits = [
        SwitchingLDS(2, state_dim=1, resets="destination", reset_dof=dof, n_iter=15, random_state=3).fit(y)
        for dof in (None, 1e6)
    ]
    np.testing.assert_allclose(fits[1].history_, fits[0].history_, rtol=1e-5)
    for name in fits[0].parameter_names:
        np.testing.assert_allclose(getattr(fits[1], name), getattr(fits[0], name), rtol=1e-5, atol=1e-8, err_msg=name)


def test_forecast_moments_use_the_t_covariance():
    """A plain SLDS's forecast moments with Student-t resets are those of the Gaussian model whose
    resets have the t's covariance Q_r nu / (nu - 2): the moments of the mixture do not see the tails."""
    model = _tiny(dof=5.0)
    gaussian = copy.deepcopy(model).set_params(reset_dof=None)
    gaussian.reset_covariances_ = model.reset_covariances_ * 5.0 / 3.0
    y = np.array([0.3, -1.5, 2.2, 1.9])[:, None]
    # q(x) q(z) at the end differ (the data are read through the t); compare from the same mixture
    params, state = model._parameters(), (np.array([0.3, 0.7]), np.array([[0.4], [-0.2]]), np.array([[[0.1]], [[0.3]]]))
    ours = model._forecast_mixture(state, params, model._future_laws(params, np.zeros((4, 0))), np.zeros((4, 0)), None)
    params = gaussian._parameters()
    theirs = gaussian._forecast_mixture(
        state, params, gaussian._future_laws(params, np.zeros((4, 0))), np.zeros((4, 0)), None
    )
    np.testing.assert_allclose(ours.means, theirs.means)
    np.testing.assert_allclose(ours.covariances, theirs.covariances)
    assert np.isfinite(model.forecast(y, 3).means).all()


def test_reset_dof_needs_resets_and_more_than_two_degrees():
    with pytest.raises(ValueError, match="reset_dof=4.0 is the resets' noise: it needs resets"):
        SwitchingLDS(2, state_dim=1, reset_dof=4.0).fit(np.zeros((30, 1)))
    with pytest.raises(ValueError, match="reset_dof"):
        SwitchingLDS(2, state_dim=1, resets="destination", reset_dof=2.0).fit(np.zeros((30, 1)))


@pytest.mark.filterwarnings("ignore:.*stopped at its cap")
def test_a_saved_robust_model_loads_with_its_degrees_of_freedom(tmp_path):
    y, _ = _with_outlying_switches(2, n_steps=150, n_sequences=1)
    model = SwitchingLDS(2, state_dim=1, resets="destination", reset_dof=3.5, n_iter=5, random_state=0).fit(y)
    model.save(tmp_path / "robust.msz")
    from modeshift.models.base import load

    loaded = load(tmp_path / "robust.msz")
    assert loaded.reset_dof == 3.5
    np.testing.assert_allclose(loaded.score(y), model.score(y))


def test_sampled_switches_follow_the_t():
    """``sample`` draws a switch's state from its reset with Student-t noise: with the state seen almost
    exactly, the residuals of the reset into mode 1 over the simulated switches, standardised by the
    scale, pass a Kolmogorov-Smirnov test against t_nu (and fail one against the Gaussian)."""
    model = _tiny(dof=4.0)
    model.observation_covariance_ = np.array([[1e-8]])
    model.transmat_ = np.array([[0.5, 0.5], [0.5, 0.5]])
    y, modes = model.sample(40_000, random_state=1)
    x = y[:, 0] - model.observation_offset_[0]
    into = np.flatnonzero((modes[1:] == 1) & (modes[:-1] == 0)) + 1
    residuals = (x[into] - (-0.9 * x[into - 1] + 1.0)) / np.sqrt(0.3)
    assert len(into) > 5000
    assert stats.kstest(residuals, "t", args=(4.0,)).pvalue > 1e-3
    assert stats.kstest(residuals, "norm").pvalue < 1e-6
