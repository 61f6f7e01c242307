"""Particle MCMC: Bayesian inference on the parameters of a state-space model.

A particle filter's likelihood estimate is unbiased, so it can stand in for the exact
likelihood in a Metropolis–Hastings ratio and the chain still targets the exact
posterior p(theta | y) (Andrieu, Doucet & Holenstein 2010):

- :func:`pmmh`, particle marginal Metropolis–Hastings: propose theta' by a Gaussian
  random walk on an unconstrained scale, estimate p(y | theta') with a particle filter,
  accept with probability min(1, p^(y | theta') p(theta') / p^(y | theta) p(theta)).
- :func:`particle_gibbs`, particle Gibbs with ancestor sampling (Lindsten, Jordan &
  Schön 2014): alternate a draw of the whole state path x_0..T-1 given theta by
  :func:`conditional_smc` with a user's draw of theta given the path (for the
  stochastic-volatility model, :func:`stochastic_volatility_gibbs_step`).

Both take ``make_model(**theta)``, which builds the :class:`StateSpaceModel` of one
parameter value, and return chains as ``samples[name]`` arrays (n_chains, n_iter): the
layout ``arviz.from_dict(posterior=result.samples)`` reads.

Example::

    import numpy as np
    from modeshift.smc import StochasticVolatility
    from modeshift.smc.pmcmc import pmmh

    rng = np.random.default_rng(0)
    x = np.empty(300)
    x[0] = -1 + 0.25 / np.sqrt(1 - 0.95**2) * rng.standard_normal()
    for t in range(1, 300):
        x[t] = -1 + 0.95 * (x[t - 1] + 1) + 0.25 * rng.standard_normal()
    y = np.exp(x / 2) * rng.standard_normal(300)

    def log_prior(mu, phi, sigma):  # N(0, 10^2) x U(-1, 1) x Exponential(1)
        return -0.5 * (mu / 10) ** 2 - sigma

    result = pmmh(StochasticVolatility, y, {"mu": -0.5, "phi": 0.9, "sigma": 0.3}, log_prior,
                  n_iter=2000, n_particles=200, transforms={"phi": "tanh", "sigma": "log"}, random_state=1)
    burnt = {name: chain[:, result.n_adapt:] for name, chain in result.samples.items()}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from modeshift._kernels import resample
from modeshift.models import em
from modeshift.smc.filters import as_observations, normalise, particle_filter
from modeshift.smc.model import StateSpaceModel

__all__ = [
    "PMMHResult",
    "ParticleGibbsResult",
    "TRANSFORMS",
    "conditional_smc",
    "particle_gibbs",
    "pmmh",
    "stochastic_volatility_gibbs_step",
]

#: names of the maps from a parameter's range to the real line, for ``pmmh(transforms=...)``
TRANSFORMS = ("identity", "log", "logit", "tanh")


def _to_unconstrained(name: str, value: float) -> float:
    """The unconstrained value of a parameter; NaN or infinite outside the transform's range."""
    with np.errstate(invalid="ignore", divide="ignore"):
        if name == "log":
            return float(np.log(value))
        if name == "logit":
            return float(np.log(value) - np.log1p(-value))
        if name == "tanh":
            return float(np.arctanh(value))
    return float(value)


def _to_constrained(name: str, value: float) -> tuple[float, float]:
    """The parameter for the unconstrained ``value``, and log |d parameter / d value|.

    Far out (|value| > 36 or so for logit and tanh) rounding puts the parameter on the
    boundary of its range; the log Jacobian is then -inf, so such a proposal is rejected.
    """
    with np.errstate(over="ignore"):  # exp overflows to inf far out; caught by `inside`
        if name == "log":
            parameter, log_jacobian = float(np.exp(value)), float(value)
            inside = 0.0 < parameter < np.inf
        elif name == "logit":
            parameter = float(1.0 / (1.0 + np.exp(-value)))
            log_jacobian = float(-np.logaddexp(0.0, value) - np.logaddexp(0.0, -value))
            inside = 0.0 < parameter < 1.0
        elif name == "tanh":  # log(1 - tanh^2 u) = 2 (log 2 - |u| - log(1 + e^-2|u|)), stable for large |u|
            parameter = float(np.tanh(value))
            log_jacobian = float(2.0 * (np.log(2.0) - abs(value) - np.log1p(np.exp(-2.0 * abs(value)))))
            inside = -1.0 < parameter < 1.0
        else:
            parameter, log_jacobian, inside = float(value), 0.0, True
    return parameter, log_jacobian if inside else -np.inf


@dataclass(frozen=True)
class PMMHResult:
    """What :func:`pmmh` returns.

    ``samples[name]`` (n_chains, n_iter) are the chains of each parameter, ready for
    ``arviz.from_dict(posterior=result.samples)``; ``log_likelihoods`` and
    ``log_priors`` (n_chains, n_iter) are the particle estimate of log p(y | theta) and
    log p(theta) at each sample. ``acceptance_rate`` (n_chains,) counts every
    iteration. The first ``n_adapt`` iterations tuned the proposal and should be
    discarded as burn-in (``n_adapt`` is 0 without adaptation).
    ``proposal_covariance`` (n_chains, d, d) is the final random-walk covariance on the
    unconstrained scale, in the order of ``samples``.
    """

    samples: dict[str, np.ndarray]
    log_likelihoods: np.ndarray
    log_priors: np.ndarray
    acceptance_rate: np.ndarray
    proposal_covariance: np.ndarray
    n_adapt: int


@dataclass(frozen=True)
class ParticleGibbsResult:
    """What :func:`particle_gibbs` returns.

    ``samples[name]`` (n_chains, n_iter) as for :class:`PMMHResult`; ``path_mean`` and
    ``path_variance`` (n_chains, T, d) are the mean and variance over iterations
    ``n_burnin`` onwards of the sampled state paths, estimates of the smoothed moments
    E[x_t | y] and Var[x_t | y]; ``last_path`` (n_chains, T, d) is each chain's final path.
    """

    samples: dict[str, np.ndarray]
    path_mean: np.ndarray
    path_variance: np.ndarray
    last_path: np.ndarray


def _per_parameter(name: str, value: Any, names: list[str], default: Any) -> dict[str, Any]:
    if value is None:
        return dict.fromkeys(names, default)
    if not isinstance(value, Mapping):
        return dict.fromkeys(names, value)
    unknown = sorted(set(value) - set(names))
    if unknown:
        raise ValueError(f"{name} names parameters {unknown} that are not in initial_theta {names}")
    return {key: value.get(key, default) for key in names}


def _chain_generators(random_state: int | np.random.Generator | None, n_chains: int) -> list[np.random.Generator]:
    """Independent child generators, one per chain, all fixed by ``random_state``."""
    if n_chains < 1:
        raise ValueError(f"n_chains must be at least 1, got {n_chains}")
    return np.random.default_rng(random_state).spawn(n_chains)


def pmmh(
    make_model: Callable[..., StateSpaceModel],
    observations: Any,
    initial_theta: Mapping[str, float],
    log_prior: Callable[..., float],
    n_iter: int,
    n_particles: int = 200,
    proposal_scale: float | Mapping[str, float] = 0.1,
    transforms: Mapping[str, str] | None = None,
    n_chains: int = 1,
    adapt: bool = True,
    n_adapt: int | None = None,
    target_acceptance: float = 0.15,
    filter_options: Mapping[str, Any] | None = None,
    random_state: int | np.random.Generator | None = None,
    progress: bool = False,
) -> PMMHResult:
    """Particle marginal Metropolis–Hastings (Andrieu, Doucet & Holenstein 2010).

    Each parameter is moved on an unconstrained scale u = g(theta) chosen by
    ``transforms[name]``: "identity" (the default; any real), "log" (theta > 0),
    "logit" (0 < theta < 1) or "tanh" (-1 < theta < 1, u = artanh theta). From u the
    chain proposes u' = u + e, e ~ N(0, S), and accepts theta' = g^-1(u') with
    probability min(1, r),

        r = p^(y | theta') p(theta') J(u') / (p^(y | theta) p(theta) J(u)),

    J(u) = |d theta / d u| the Jacobian, p^ a fresh particle-filter estimate at theta'
    (the estimate at the current theta is kept, which is what makes the chain exact).
    S starts diagonal with standard deviations ``proposal_scale`` (one for all, or per
    parameter: a dict; missing names get 0.1).

    With ``adapt`` the first ``n_adapt`` iterations (default n_iter // 2) tune S, the
    adaptive Metropolis of Haario et al. as in Roberts & Rosenthal (2009): from
    iteration 100 on, S = lambda^2 (Sigma_n + 1e-6 I) with Sigma_n the empirical
    covariance of the chain's u so far and lambda restarting there from Haario's
    2.38 / sqrt(d), d the number of parameters; throughout, log lambda moves by
    (alpha_n - ``target_acceptance``) / n^0.6 (Robbins–Monro on the acceptance
    probability alpha_n). S is then frozen, so the later iterations are an exact
    MCMC chain; discard the first ``n_adapt`` as burn-in. The default target of 0.15
    sits between the 0.234 of exact-likelihood random walks and the 0.07 that Sherlock
    et al. (2015) find optimal for PMMH with a noisy likelihood.

    Parameters
    ----------
    make_model : callable
        ``make_model(**theta)`` returns the :class:`StateSpaceModel` for one parameter value.
    observations : array (T,) or (T, p)
    initial_theta : dict of str to float
        Where each chain starts; its keys name the parameters.
    log_prior : callable
        ``log_prior(**theta)``, log p(theta) up to a constant; -inf outside the support
        (the model is then never built there).
    n_iter, n_particles, n_chains : int
        Iterations per chain (the initial value is not stored), particles per filter, chains.
    proposal_scale, transforms, adapt, n_adapt, target_acceptance
        The random walk and its tuning, as above.
    filter_options : dict, optional
        More keyword arguments for :func:`particle_filter` (``proposal``, ``resampling``,
        ``ess_threshold``).
    random_state : int or numpy Generator, optional
        One seed fixes every chain; the chains draw from independent child generators.
    progress : bool
        Show a live progress bar per chain with the current log-likelihood estimate (needs
        ``rich``; see :mod:`modeshift.progress`).

    Returns
    -------
    PMMHResult
        ``samples`` (n_chains, n_iter) per parameter, for ``arviz.from_dict(posterior=result.samples)``.

    Raises ``ValueError`` if log p(theta) or the likelihood estimate at ``initial_theta``
    is not finite, a transform name is unknown, or a filter returns a NaN likelihood.
    A proposal at which every particle gets zero weight is rejected.
    """
    y = as_observations(observations)
    names = list(initial_theta)
    if not names:
        raise ValueError("initial_theta must name at least one parameter")
    chosen = _per_parameter("transforms", transforms, names, "identity")
    unknown = {name: kind for name, kind in chosen.items() if kind not in TRANSFORMS}
    if unknown:
        raise ValueError(f"unknown transforms {unknown}: each must be one of {TRANSFORMS}")
    scales = np.array(list(_per_parameter("proposal_scale", proposal_scale, names, 0.1).values()), dtype=float)
    if not np.all(np.isfinite(scales) & (scales > 0)):
        raise ValueError(f"proposal scales must be positive, got {dict(zip(names, scales))}")
    if not 0.0 < target_acceptance < 1.0:
        raise ValueError(f"target_acceptance must be in (0, 1), got {target_acceptance}")
    n_iter = int(n_iter)
    n_adapt = (n_iter // 2 if n_adapt is None else int(n_adapt)) if adapt else 0
    if not 0 <= n_adapt <= n_iter:
        raise ValueError(f"n_adapt must be in [0, n_iter], got {n_adapt} with n_iter={n_iter}")
    theta0 = {name: float(value) for name, value in initial_theta.items()}
    start = np.array([_to_unconstrained(chosen[name], theta0[name]) for name in names])
    if not np.all(np.isfinite(start)):
        raise ValueError(f"initial_theta {theta0} is outside the range of transforms {chosen}")
    options = dict(filter_options or {})

    def constrained(u: np.ndarray) -> tuple[dict[str, float], float]:
        values = [_to_constrained(chosen[name], value) for name, value in zip(names, u)]
        return {name: value for name, (value, _) in zip(names, values)}, sum(jacobian for _, jacobian in values)

    def log_likelihood(theta: dict[str, float], rng: np.random.Generator) -> float:
        try:
            estimate = particle_filter(make_model(**theta), y, n_particles, random_state=rng, **options).log_likelihood
        except ValueError as error:
            if "zero weight" in str(error):  # no particle explains the data: likelihood estimate 0
                return -np.inf
            raise ValueError(f"the particle filter failed at theta = {theta}: {error}") from None
        if np.isnan(estimate):
            raise ValueError(f"the particle filter returned a NaN log-likelihood at theta = {theta}")
        return estimate

    first_prior = float(log_prior(**theta0))
    if not np.isfinite(first_prior):
        raise ValueError(f"log_prior is {first_prior} at initial_theta {theta0}: start where the prior is positive")

    d = len(names)
    draws = np.empty((n_chains, n_iter, d))
    log_likelihoods, log_priors = np.empty((n_chains, n_iter)), np.empty((n_chains, n_iter))
    acceptance, covariances = np.empty(n_chains), np.empty((n_chains, d, d))
    with em.monitor(progress) as monitor:
        for c, rng in enumerate(_chain_generators(random_state, n_chains)):
            report = monitor.task(f"PMMH chain {c + 1}/{n_chains}", total=n_iter)
            u, (theta, jacobian) = start.copy(), constrained(start)
            prior, likelihood = first_prior, log_likelihood(theta, rng)
            if not np.isfinite(likelihood):
                raise ValueError(f"the likelihood estimate at initial_theta {theta0} is {likelihood}")
            covariance, log_lambda, accepted = np.diag(scales**2), 0.0, 0
            mean, scatter = np.zeros(d), np.zeros((d, d))  # running moments of u for the adaptation
            for k in range(n_iter):
                factor = np.linalg.cholesky(covariance)
                proposal = u + np.exp(log_lambda) * factor @ rng.standard_normal(d)
                new_theta, new_jacobian = constrained(proposal)
                new_prior, new_likelihood, log_ratio = float(log_prior(**new_theta)), -np.inf, -np.inf
                if np.isfinite(new_prior) and np.isfinite(new_jacobian):
                    new_likelihood = log_likelihood(new_theta, rng)
                    log_ratio = new_likelihood + new_prior + new_jacobian - likelihood - prior - jacobian
                if np.log(rng.random()) < log_ratio:
                    u, theta, jacobian, prior, likelihood = proposal, new_theta, new_jacobian, new_prior, new_likelihood
                    accepted += 1
                draws[c, k] = [theta[name] for name in names]
                log_likelihoods[c, k], log_priors[c, k] = likelihood, prior
                if k < n_adapt:
                    log_lambda += (min(1.0, float(np.exp(min(log_ratio, 0.0)))) - target_acceptance) / (k + 1) ** 0.6
                    delta = u - mean
                    mean += delta / (k + 1)
                    scatter += np.outer(delta, u - mean)
                    if k + 1 >= 100:
                        covariance = 2.38**2 / d * (scatter / k + 1e-6 * np.eye(d))
                        if k + 1 == 100:
                            log_lambda = 0.0
                report(k + 1, likelihood)
            acceptance[c] = accepted / max(n_iter, 1)
            covariances[c] = np.exp(2 * log_lambda) * covariance
    return PMMHResult(
        samples={name: draws[:, :, j] for j, name in enumerate(names)},
        log_likelihoods=log_likelihoods,
        log_priors=log_priors,
        acceptance_rate=acceptance,
        proposal_covariance=covariances,
        n_adapt=n_adapt,
    )


def conditional_smc(
    model: StateSpaceModel,
    observations: Any,
    reference_path: np.ndarray | None,
    n_particles: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """One draw of a state path x_0..T-1 (T, d) by conditional SMC with ancestor sampling.

    The Markov kernel of particle Gibbs (Lindsten, Jordan & Schön 2014) that leaves
    p(x_0..T-1 | y, theta) invariant: a bootstrap filter in which the last particle
    is pinned to ``reference_path`` at every step, the other N-1 are resampled
    multinomially and moved by the model's transition; the pinned particle's ancestor
    at t-1 is redrawn with probability proportional to w_t-1^i f(x_t^ref | x_t-1^i)
    (``model.log_transition``), which is what lets the new path leave the old one early
    on. The new path is drawn from the final weights by tracing ancestors back.

    ``reference_path`` None runs the unconditional filter (a path to start a chain).
    """
    y = as_observations(observations)
    T, N = len(y), int(n_particles)
    if N < 2:
        raise ValueError(f"conditional SMC needs at least 2 particles, got {n_particles}")
    free = N - 1 if reference_path is not None else N
    initial = model.sample_initial(free, rng)
    particles = np.empty((T, N, initial.shape[1]))
    ancestors = np.empty((T, N), dtype=np.int64)
    particles[0, :free], ancestors[0] = initial, np.arange(N)
    if reference_path is not None:
        reference_path, d = np.asarray(reference_path, dtype=float), initial.shape[1]
        if reference_path.shape != (T, d) and not (d == 1 and reference_path.shape == (T,)):
            raise ValueError(f"reference_path must have shape ({T}, {initial.shape[1]}), got {reference_path.shape}")
        particles[:, -1] = reference_path.reshape(T, -1)
    log_weights = model.log_observation(particles[0], y[0], 0)
    for t in range(1, T):
        weights = normalise(log_weights, t - 1)[0]
        ancestors[t, :free] = resample("multinomial", weights, rng, free)
        particles[t, :free] = model.sample_transition(particles[t - 1, ancestors[t, :free]], t, rng)
        if reference_path is not None:
            pinned = np.broadcast_to(reference_path[t], particles[t - 1].shape)
            ancestors[t, -1] = _draw_index(log_weights + model.log_transition(particles[t - 1], pinned, t), rng, t)
        log_weights = model.log_observation(particles[t], y[t], t)
    index = _draw_index(log_weights, rng, T - 1)
    path = np.empty((T, particles.shape[2]))
    for t in range(T - 1, -1, -1):
        path[t] = particles[t, index]
        index = ancestors[t, index]
    return path


def _draw_index(log_weights: np.ndarray, rng: np.random.Generator, t: int) -> int:
    """One index drawn with probabilities proportional to exp(``log_weights``)."""
    peak = log_weights.max()
    if not np.isfinite(peak):
        normalise(log_weights, t)  # raises, naming the problem
    cumulative = np.cumsum(np.exp(log_weights - peak))
    return min(int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right")), len(cumulative) - 1)


def particle_gibbs(
    make_model: Callable[..., StateSpaceModel],
    observations: Any,
    initial_theta: Mapping[str, float],
    update_theta: Callable[[np.ndarray, dict[str, float], np.random.Generator], Mapping[str, float]],
    n_iter: int,
    n_particles: int = 100,
    n_chains: int = 1,
    n_burnin: int = 0,
    random_state: int | np.random.Generator | None = None,
    progress: bool = False,
) -> ParticleGibbsResult:
    """Particle Gibbs with ancestor sampling (Lindsten, Jordan & Schön 2014).

    Each iteration draws a state path x_0..T-1 given theta by :func:`conditional_smc`
    on ``make_model(**theta)``, then theta given the path by
    ``update_theta(path, theta, rng)``: the user's Gibbs (or any p(theta | x, y)-
    invariant) step, returning the new theta as a dict with the same keys; for the
    stochastic-volatility model use :func:`stochastic_volatility_gibbs_step`. The
    first path comes from an unconditional filter at ``initial_theta``. Unlike PMMH,
    only the observation, transition and initial-sampling methods are used, and a
    few dozen particles suffice even for long series.

    ``n_burnin`` iterations are left out of the path moments (not of ``samples``).
    One seed (``random_state``) fixes every chain; chains use independent child generators.
    Returns a :class:`ParticleGibbsResult`, ``samples`` ready for
    ``arviz.from_dict(posterior=result.samples)``.
    """
    y = as_observations(observations)
    names = list(initial_theta)
    if not names:
        raise ValueError("initial_theta must name at least one parameter")
    n_iter, n_burnin = int(n_iter), int(n_burnin)
    if not 0 <= n_burnin < n_iter:
        raise ValueError(f"n_burnin must be in [0, n_iter), got {n_burnin} with n_iter={n_iter}")
    draws = np.empty((n_chains, n_iter, len(names)))
    means, variances, last = [], [], []
    with em.monitor(progress) as monitor:
        for c, rng in enumerate(_chain_generators(random_state, n_chains)):
            report = monitor.task(f"particle Gibbs chain {c + 1}/{n_chains}", total=n_iter, objective=None)
            theta = {name: float(value) for name, value in initial_theta.items()}
            path = conditional_smc(make_model(**theta), y, None, n_particles, rng)
            total, total_squares = np.zeros_like(path), np.zeros_like(path)
            for k in range(n_iter):
                path = conditional_smc(make_model(**theta), y, path, n_particles, rng)
                updated = update_theta(path, dict(theta), rng)
                if set(updated) != set(names):
                    raise ValueError(f"update_theta must return the keys {names}, got {sorted(updated)}")
                theta = {name: float(updated[name]) for name in names}
                draws[c, k] = [theta[name] for name in names]
                if k >= n_burnin:
                    total += path
                    total_squares += path**2
                report(k + 1)
            mean = total / (n_iter - n_burnin)
            means.append(mean)
            variances.append(np.maximum(total_squares / (n_iter - n_burnin) - mean**2, 0.0))
            last.append(path)
    return ParticleGibbsResult(
        samples={name: draws[:, :, j] for j, name in enumerate(names)},
        path_mean=np.stack(means),
        path_variance=np.stack(variances),
        last_path=np.stack(last),
    )


def stochastic_volatility_gibbs_step(
    mu_prior: tuple[float, float] = (0.0, 10.0),
    phi_prior: tuple[float, float] = (0.0, np.inf),
    sigma2_prior: tuple[float, float] = (2.0, 0.1),
) -> Callable[[np.ndarray, dict[str, float], np.random.Generator], dict[str, float]]:
    """The exact Gibbs update of (mu, phi, sigma) of :class:`StochasticVolatility` given a
    log-volatility path, for :func:`particle_gibbs`.

    Priors, independent: mu ~ N(m, s^2) with ``mu_prior`` = (m, s); phi ~ N(m, s^2)
    truncated to (-1, 1) with ``phi_prior`` = (m, s) (the default s = inf is the uniform
    law on (-1, 1)); sigma^2 ~ InverseGamma(a, b) (density prop. to
    sigma^-2(a+1) e^(-b / sigma^2)) with ``sigma2_prior`` = (a, b).

    Given the path x_0..T-1 (the observations are not needed), one call updates each in
    turn, every step leaving p(mu, phi, sigma | x) invariant:

    - mu | phi, sigma: Gaussian, from x_t - phi x_t-1 = (1 - phi) mu + sigma v_t and
      the stationary x_0 ~ N(mu, sigma^2 / (1 - phi^2));
    - phi | mu, sigma: a draw from the Gaussian linear regression of x_t - mu on
      x_t-1 - mu (t >= 1), restricted to (-1, 1) by rejection, then accepted with
      probability min(1, p(x_0 | phi') / p(x_0 | phi)), the law of x_0 being the one
      factor the regression leaves out (if 1000 draws all fall outside (-1, 1), phi stays);
    - sigma^2 | mu, phi: InverseGamma(a + T/2, b + SS/2), the sum of squares
      SS = (1 - phi^2)(x_0 - mu)^2 + sum_t>=1 (x_t - mu - phi (x_t-1 - mu))^2.

    Returns ``update(path, theta, rng) -> theta``, ``theta`` a dict with keys mu, phi, sigma.
    """
    mu_mean, mu_sd = mu_prior
    phi_mean, phi_sd = phi_prior
    shape, scale = sigma2_prior
    if mu_sd <= 0 or phi_sd <= 0 or shape <= 0 or scale <= 0:
        raise ValueError(
            f"prior scales must be positive, got mu_prior={mu_prior}, phi_prior={phi_prior}, "
            f"sigma2_prior={sigma2_prior}"
        )
    phi_precision = 0.0 if np.isinf(phi_sd) else 1.0 / phi_sd**2

    def update(path: np.ndarray, theta: dict[str, float], rng: np.random.Generator) -> dict[str, float]:
        x = np.asarray(path, dtype=float).reshape(-1)
        T, mu, phi, sigma2 = len(x), theta["mu"], theta["phi"], theta["sigma"] ** 2
        previous, current = x[:-1], x[1:]

        precision = 1.0 / mu_sd**2 + ((1.0 - phi**2) + (T - 1) * (1.0 - phi) ** 2) / sigma2
        innovations = np.sum(current - phi * previous)
        weighted = mu_mean / mu_sd**2 + ((1.0 - phi**2) * x[0] + (1.0 - phi) * innovations) / sigma2
        mu = weighted / precision + rng.standard_normal() / np.sqrt(precision)

        centred_previous, centred_current = previous - mu, current - mu
        precision = phi_precision + centred_previous @ centred_previous / sigma2
        mean = (phi_precision * phi_mean + centred_previous @ centred_current / sigma2) / precision
        for _ in range(1000):
            proposal = mean + rng.standard_normal() / np.sqrt(precision)
            if -1.0 < proposal < 1.0:
                # log p(x_0 | phi) = (1/2) log(1 - phi^2) - (1 - phi^2)(x_0 - mu)^2 / (2 sigma^2) + const
                log_ratio = 0.5 * (np.log1p(-(proposal**2)) - np.log1p(-(phi**2))) + (
                    (proposal**2 - phi**2) * (x[0] - mu) ** 2 / (2.0 * sigma2)
                )
                if np.log(rng.random()) < log_ratio:
                    phi = proposal
                break

        residuals = centred_current - phi * centred_previous
        rate = scale + 0.5 * ((1.0 - phi**2) * (x[0] - mu) ** 2 + residuals @ residuals)
        sigma2 = rate / rng.gamma(shape + 0.5 * T)
        return {"mu": float(mu), "phi": float(phi), "sigma": float(np.sqrt(sigma2))}

    return update
