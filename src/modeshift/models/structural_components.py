"""The components of structural time-series models: each builds its block of a linear-Gaussian
state-space model from named parameters.

A structural model (Harvey 1989; Durbin & Koopman 2012, ch. 3) writes a series as a sum of
components, each a small state-space model of its own,

    y_t = sum_c (Z_c x_c,t) + beta' u_t + eps_t,         eps_t ~ N(0, sigma2.irregular)
    x_c,t+1 = T_c x_c,t + a_c + w_c,t+1,                 w_c ~ N(0, Q_c),

so the model's state stacks the components' states: block-diagonal T and Q, the rows Z side
by side. A component says which of its states are **diffuse** (nonstationary: a level, a
slope, a seasonal pattern, whose prior is flat) and gives the others their stationary law
(mean (I - T)^-1 a, covariance P = T P T' + Q, the discrete Lyapunov equation).

Each component names its parameters (statsmodels' names) and maps them to a free vector
the optimiser moves without constraints: a variance to its standard deviation (squared back,
so any real will do), autoregressive coefficients to partial autocorrelations in (-1, 1) and those to the
real line (Monahan 1984; statsmodels' ``enforce_stationarity``), moving-average coefficients
the same way (invertibility), a damping factor and a frequency through a logistic map into
their interval.

==========================  ==========================================  ===================
component                   state                                       parameters
==========================  ==========================================  ===================
:class:`Irregular`          none (the observation noise)                sigma2.irregular
:class:`LocalLevel`         level mu: mu_t+1 = mu_t + eta                sigma2.level
:class:`LocalLinearTrend`   level and slope nu: mu_t+1 = mu_t + nu_t +   sigma2.level,
                            eta, nu_t+1 = nu_t + zeta                    sigma2.trend
:class:`Seasonal`           s - 1 dummies: gamma_t+1 = -sum of the       sigma2.seasonal
                            last s - 1 gammas + omega
:class:`TrigonometricSeasonal`  2 h harmonics of period s, each a        sigma2.freq_seasonal_s(h)
                            rotation by 2 pi j / s plus noise
:class:`Cycle`              rho times a rotation by lambda, plus noise  sigma2.cycle,
                                                                         frequency.cycle,
                                                                         damping.cycle
:class:`ARIMA`              Harvey's form of an ARMA(p, q), after d      intercept, ar.L1..,
                            integrated states                            ma.L1.., sigma2
:class:`Regression`         none: beta' u_t with the ``exog`` columns    beta.x1..
==========================  ==========================================  ===================

Components are small immutable records (named tuples, so that a model saves its components
with its other hyper-parameters). Each has ``n_states``, ``names``, ``kinds``, ``to_free``,
``from_free``, ``block`` (linear in the values of kind "variance" and "coefficient", which the
fit's gradient relies on), ``start`` and ``signals`` (the named parts of the series its states
make: a level and a slope, a seasonal, a cycle, as weights on its states, which
:meth:`~modeshift.models.structural.StructuralModel.smooth` applies to the smoothed states);
:class:`~modeshift.models.structural.StructuralModel` adds them up and fits the parameters by
maximum likelihood.

>>> level = LocalLevel()
>>> block = level.block(np.array([2.0]))
>>> block.dynamics, block.covariance, block.diffuse
(array([[1.]]), array([[2.]]), array([ True]))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
from scipy import linalg

__all__ = [
    "ARIMA",
    "Block",
    "COMPONENTS",
    "Cycle",
    "Irregular",
    "LocalLevel",
    "LocalLinearTrend",
    "Regression",
    "Seasonal",
    "StartContext",
    "TrigonometricSeasonal",
    "stationary_coefficients",
    "unconstrained_coefficients",
]


@dataclass(frozen=True)
class Block:
    """One component's part of the state-space model (n states, k exog columns).

    ``dynamics`` T (n, n), ``observation`` Z (n,), ``covariance`` Q (n, n) of the disturbance
    that moves the state from t to t + 1, ``intercept`` a (n,) added at every move,
    ``initial_mean`` and ``initial_covariance`` the law of the stationary states at the first
    observation (0 on the diffuse ones), ``diffuse`` (n,) which states have a flat prior,
    ``irregular`` its part of the observation variance and ``coefficients`` (k,) its
    regression coefficients on the exog columns.
    """

    dynamics: np.ndarray
    observation: np.ndarray
    covariance: np.ndarray
    diffuse: np.ndarray
    intercept: np.ndarray | None = None
    initial_mean: np.ndarray | None = None
    initial_covariance: np.ndarray | None = None
    irregular: float = 0.0
    coefficients: np.ndarray = field(default_factory=lambda: np.zeros(0))


@dataclass(frozen=True)
class StartContext:
    """What the components' starting values are drawn from: the series (one 1-D array per
    sequence, NaN where missing, the regression on exog already removed) and the variance of
    its first differences (the size of one step's change)."""

    series: list[np.ndarray]
    step_variance: float

    def values(self) -> np.ndarray:
        observed = np.concatenate(self.series)
        return observed[np.isfinite(observed)]


def _static(n: int, diffuse: bool = True) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((n, n)), np.full(n, diffuse)


# The parameterisation of a component whose parameters are all variances: each through its
# standard deviation (a method shared by those components).
def _variance_kinds(self: Any) -> tuple[str, ...]:
    return ("variance",) * len(self.names())


def _variances_to_free(self: Any, values: np.ndarray) -> np.ndarray:
    return np.sqrt(values)


def _variances_from_free(self: Any, free: np.ndarray) -> np.ndarray:
    return np.square(free)


# ----------------------------------------------------------------------- the noise
class Irregular(NamedTuple):
    """The observation noise eps_t ~ N(0, sigma2.irregular): no state."""

    n_states = 0

    def names(self) -> tuple[str, ...]:
        return ("sigma2.irregular",)

    kinds = _variance_kinds
    to_free, from_free = _variances_to_free, _variances_from_free

    def signals(self) -> dict[str, np.ndarray]:
        return {}

    def block(self, values: np.ndarray) -> Block:
        empty = np.zeros((0, 0))
        return Block(empty, np.zeros(0), empty, np.zeros(0, dtype=bool), irregular=float(values[0]))

    def start(self, context: StartContext) -> np.ndarray:
        return np.array([context.step_variance / 2])


# ----------------------------------------------------------------------- trends
class LocalLevel(NamedTuple):
    """A random-walk level mu_t+1 = mu_t + eta_t, eta ~ N(0, sigma2.level); ``stochastic=False``
    makes it a fixed intercept. The level is diffuse."""

    stochastic: bool = True

    @property
    def n_states(self) -> int:
        return 1

    def names(self) -> tuple[str, ...]:
        return ("sigma2.level",) if self.stochastic else ()

    kinds = _variance_kinds
    to_free, from_free = _variances_to_free, _variances_from_free

    def signals(self) -> dict[str, np.ndarray]:
        return {"level": np.ones(1)}

    def block(self, values: np.ndarray) -> Block:
        covariance = np.diag(values) if self.stochastic else np.zeros((1, 1))
        return Block(np.eye(1), np.ones(1), covariance, np.ones(1, dtype=bool))

    def start(self, context: StartContext) -> np.ndarray:
        return np.full(len(self.names()), context.step_variance / 4)


class LocalLinearTrend(NamedTuple):
    """Level and slope: mu_t+1 = mu_t + nu_t + eta_t, nu_t+1 = nu_t + zeta_t, with
    eta ~ N(0, sigma2.level) and zeta ~ N(0, sigma2.trend), both states diffuse.

    ``stochastic_level=False`` gives the smooth trend (integrated random walk);
    both False a deterministic linear trend.
    """

    stochastic_level: bool = True
    stochastic_slope: bool = True

    @property
    def n_states(self) -> int:
        return 2

    def names(self) -> tuple[str, ...]:
        return ("sigma2.level",) * self.stochastic_level + ("sigma2.trend",) * self.stochastic_slope

    kinds = _variance_kinds
    to_free, from_free = _variances_to_free, _variances_from_free

    def signals(self) -> dict[str, np.ndarray]:
        return {"level": np.array([1.0, 0.0]), "slope": np.array([0.0, 1.0])}

    def block(self, values: np.ndarray) -> Block:
        flags = np.array([self.stochastic_level, self.stochastic_slope])
        variances = np.zeros(2)
        variances[flags] = values
        return Block(np.array([[1.0, 1.0], [0.0, 1.0]]), np.array([1.0, 0.0]), np.diag(variances), np.ones(2, bool))

    def start(self, context: StartContext) -> np.ndarray:
        return np.array(
            [context.step_variance / 4] * self.stochastic_level + [context.step_variance / 100] * self.stochastic_slope
        )


# --------------------------------------------------------------------- seasonals
class Seasonal(NamedTuple):
    """Dummy seasonal of ``period`` s: the s seasonal effects sum to a zero-mean disturbance,
    gamma_t+1 = -(gamma_t + ... + gamma_t-s+2) + omega_t, omega ~ N(0, sigma2.seasonal)
    (s - 1 diffuse states; ``stochastic=False``: a fixed seasonal pattern)."""

    period: int
    stochastic: bool = True

    @property
    def n_states(self) -> int:
        return int(self.period) - 1

    def names(self) -> tuple[str, ...]:
        return ("sigma2.seasonal",) if self.stochastic else ()

    kinds = _variance_kinds
    to_free, from_free = _variances_to_free, _variances_from_free

    def signals(self) -> dict[str, np.ndarray]:
        return {"seasonal": np.eye(self.n_states)[0]}

    def block(self, values: np.ndarray) -> Block:
        n = self.n_states
        dynamics = np.eye(n, k=-1)
        dynamics[0] = -1.0
        covariance = np.zeros((n, n))
        if self.stochastic:
            covariance[0, 0] = values[0]
        observation = np.zeros(n)
        observation[0] = 1.0
        return Block(dynamics, observation, covariance, np.ones(n, dtype=bool))

    def start(self, context: StartContext) -> np.ndarray:
        return np.full(len(self.names()), context.step_variance / 10)


class TrigonometricSeasonal(NamedTuple):
    """Seasonal of ``period`` s (any real > 1) as ``harmonics`` h sinusoids: for j = 1..h,
    (gamma_j, gamma*_j) rotates by lambda_j = 2 pi j / s each step, plus noise of variance
    sigma2.freq_seasonal_s(h) on both (2 h diffuse states); the seasonal is the sum of the
    gamma_j. Fewer harmonics than s / 2 give a smooth seasonal pattern with few states
    (statsmodels' ``freq_seasonal``)."""

    period: float
    harmonics: int
    stochastic: bool = True

    @property
    def n_states(self) -> int:
        return 2 * int(self.harmonics)

    def names(self) -> tuple[str, ...]:
        return (f"sigma2.{self._label()}",) if self.stochastic else ()

    def _label(self) -> str:
        return f"freq_seasonal_{self.period!r}({self.harmonics})"

    def signals(self) -> dict[str, np.ndarray]:
        return {self._label(): np.tile([1.0, 0.0], int(self.harmonics))}

    kinds = _variance_kinds
    to_free, from_free = _variances_to_free, _variances_from_free

    def block(self, values: np.ndarray) -> Block:
        h = int(self.harmonics)
        rotations = [_rotation(2 * np.pi * j / self.period) for j in range(1, h + 1)]
        variance = values[0] if self.stochastic else 0.0
        return Block(
            linalg.block_diag(*rotations), np.tile([1.0, 0.0], h), variance * np.eye(2 * h), np.ones(2 * h, bool)
        )

    def start(self, context: StartContext) -> np.ndarray:
        return np.full(len(self.names()), context.step_variance / 10)


def _rotation(angle: float) -> np.ndarray:
    return np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])


# ------------------------------------------------------------------------- cycle
class Cycle(NamedTuple):
    """A stochastic cycle: (psi, psi*) rotates by the frequency lambda and shrinks by the damping
    rho each step, plus noise of variance sigma2.cycle on both,

        [psi; psi*]_t+1 = rho [[cos l, sin l], [-sin l, cos l]] [psi; psi*]_t + kappa_t.

    The frequency lies between 2 pi / the longest and 2 pi / the shortest of ``period_bounds``
    (in steps). A damped cycle (rho in (0, 1)) is stationary and starts at its stationary law;
    ``damped=False`` fixes rho = 1 and makes it diffuse.
    """

    damped: bool = True
    stochastic: bool = True
    period_bounds: tuple[float, float] = (2.0, np.inf)

    @property
    def n_states(self) -> int:
        return 2

    def _frequency_bounds(self) -> tuple[float, float]:
        shortest, longest = sorted(float(b) for b in self.period_bounds)
        if shortest < 2:
            raise ValueError(f"Cycle: period_bounds must be at least 2 steps, got {self.period_bounds!r}")
        return 2 * np.pi / longest, 2 * np.pi / shortest

    def names(self) -> tuple[str, ...]:
        return ("sigma2.cycle",) * self.stochastic + ("frequency.cycle",) + ("damping.cycle",) * self.damped

    def kinds(self) -> tuple[str, ...]:
        return ("variance",) * self.stochastic + ("free",) * (1 + self.damped)

    def to_free(self, values: np.ndarray) -> np.ndarray:
        low, high = self._frequency_bounds()
        out = np.array(values, dtype=float)
        s = int(self.stochastic)
        out[:s] = np.sqrt(values[:s])
        out[s] = _logit((values[s] - low) / (high - low))
        out[s + 1 :] = _logit(values[s + 1 :])
        return out

    def from_free(self, free: np.ndarray) -> np.ndarray:
        low, high = self._frequency_bounds()
        out = np.array(free, dtype=float)
        s = int(self.stochastic)
        out[:s] = np.square(free[:s])
        out[s] = low + (high - low) * _logistic(free[s])
        out[s + 1 :] = _logistic(free[s + 1 :])
        return out

    def signals(self) -> dict[str, np.ndarray]:
        return {"cycle": np.array([1.0, 0.0])}

    def block(self, values: np.ndarray) -> Block:
        s = int(self.stochastic)
        variance = values[0] if self.stochastic else 0.0
        damping = values[s + 1] if self.damped else 1.0
        dynamics = damping * _rotation(values[s])
        covariance = variance * np.eye(2)
        if not self.damped:
            return Block(dynamics, np.array([1.0, 0.0]), covariance, np.ones(2, dtype=bool))
        return Block(
            dynamics,
            np.array([1.0, 0.0]),
            covariance,
            np.zeros(2, dtype=bool),
            initial_covariance=variance / (1 - damping**2) * np.eye(2),  # Lyapunov, solved: rho R is a scaled rotation
        )

    def start(self, context: StartContext) -> np.ndarray:
        low, high = self._frequency_bounds()
        return np.array([context.step_variance / 10] * self.stochastic + [(low + high) / 2] + [0.9] * self.damped)


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p) - np.log1p(-p)


def _logistic(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


# --------------------------------------------------------------------- ARMA, ARIMA
def stationary_coefficients(free: np.ndarray) -> np.ndarray:
    """The coefficients phi of a stationary AR(p) from p unconstrained reals (Monahan 1984): each
    x_k becomes a partial autocorrelation r_k = x_k / sqrt(1 + x_k^2) in (-1, 1), and the
    Durbin-Levinson recursion phi_k,j = phi_k-1,j - r_k phi_k-1,k-j, phi_k,k = r_k builds phi.

    >>> phi = stationary_coefficients(np.array([3.0, -2.0, 5.0]))
    >>> bool(np.abs(np.roots(np.r_[1.0, -phi])).max() < 1)
    True
    """
    free = np.asarray(free, dtype=float)
    phi = np.zeros(len(free))
    for k, r in enumerate(free / np.sqrt(1 + np.square(free))):
        phi[:k] -= r * phi[:k][::-1]
        phi[k] = r
    return phi


def unconstrained_coefficients(phi: np.ndarray) -> np.ndarray:
    """The inverse of :func:`stationary_coefficients` (``phi`` must be stationary)."""
    phi = np.asarray(phi, dtype=float)
    partial = np.empty(len(phi))
    for k in range(len(phi) - 1, -1, -1):
        r = partial[k] = phi[k]
        if abs(r) >= 1:
            raise ValueError(f"the AR coefficients {phi} are not stationary")
        phi = (phi[:k] + r * phi[:k][::-1]) / (1 - r * r)
    return partial / np.sqrt(1 - np.square(partial))


def _shrunk(phi: np.ndarray, radius: float = 0.95) -> np.ndarray:
    """``phi`` with its characteristic roots pulled inside ``radius`` (a stationary start)."""
    phi = np.asarray(phi, dtype=float)
    if len(phi) == 0:
        return phi
    largest = np.abs(np.roots(np.r_[1.0, -phi])).max()
    if largest < radius:
        return phi
    return phi * (radius / largest) ** np.arange(1, len(phi) + 1)


class ARIMA(NamedTuple):
    """An ARIMA(p, d, q) disturbance: its d-th difference u_t follows the ARMA(p, q)

        u_t = c + phi_1 u_t-1 + ... + phi_p u_t-p + e_t + theta_1 e_t-1 + ... + theta_q e_t-q,

    e ~ N(0, sigma2), with the intercept c when ``intercept`` (statsmodels' ``trend="c"``).
    Harvey's state-space form: r = max(p, q + 1) states alpha_t with alpha_t,1 = u_t,

        alpha_t+1 = [phi | I; 0] alpha_t + c e_1 + [1, theta_1, .., theta_r-1]' e_t+1,

    stationary (its law from the Lyapunov equation); before it, d diffuse states
    Delta^i y_t-1 (i < d) carry the integration: y_t = sum_i Delta^i y_t-1 + u_t. The AR part is
    kept stationary and the MA part invertible (Monahan's transform).
    """

    ar: int = 1
    d: int = 0
    ma: int = 0
    intercept: bool = False

    @property
    def n_states(self) -> int:
        return int(self.d) + max(int(self.ar), int(self.ma) + 1)

    def names(self) -> tuple[str, ...]:
        return (
            ("intercept",) * self.intercept
            + tuple(f"ar.L{j}" for j in range(1, self.ar + 1))
            + tuple(f"ma.L{j}" for j in range(1, self.ma + 1))
            + ("sigma2",)
        )

    def kinds(self) -> tuple[str, ...]:
        return ("coefficient",) * self.intercept + ("free",) * (self.ar + self.ma) + ("variance",)

    def _split(self, values: np.ndarray) -> tuple[float, np.ndarray, np.ndarray, float]:
        c = float(values[0]) if self.intercept else 0.0
        i = int(self.intercept)
        return c, values[i : i + self.ar], values[i + self.ar : i + self.ar + self.ma], float(values[-1])

    def to_free(self, values: np.ndarray) -> np.ndarray:
        c, phi, theta, sigma2 = self._split(np.asarray(values, dtype=float))
        head = [c] if self.intercept else []
        return np.r_[head, unconstrained_coefficients(phi), unconstrained_coefficients(-theta), np.sqrt(sigma2)]

    def from_free(self, free: np.ndarray) -> np.ndarray:
        values = np.array(free, dtype=float)
        c, phi, theta, s = self._split(values)
        i = int(self.intercept)
        values[i : i + self.ar] = stationary_coefficients(phi)
        values[i + self.ar : i + self.ar + self.ma] = -stationary_coefficients(theta)
        values[-1] = s * s
        return values

    def signals(self) -> dict[str, np.ndarray]:
        """The ARIMA disturbance: the d integrated states plus the ARMA one."""
        d = int(self.d)
        return {"arima": np.r_[np.ones(d), 1.0, np.zeros(self.n_states - d - 1)]}

    def block(self, values: np.ndarray) -> Block:
        c, phi, theta, sigma2 = self._split(np.asarray(values, dtype=float))
        d, r = int(self.d), max(int(self.ar), int(self.ma) + 1)
        arma = np.eye(r, k=1)
        arma[: len(phi), 0] = phi
        selection = np.zeros(r)
        selection[0], selection[1 : 1 + len(theta)] = 1.0, theta
        arma_covariance = sigma2 * np.outer(selection, selection)
        n = d + r
        dynamics = np.zeros((n, n))
        dynamics[:d, :d] = np.triu(np.ones((d, d)))
        dynamics[:d, d] = 1.0
        dynamics[d:, d:] = arma
        covariance = np.zeros((n, n))
        covariance[d:, d:] = arma_covariance
        intercept = np.zeros(n)
        intercept[d] = c
        initial_mean = np.zeros(n)
        initial_mean[d:] = np.linalg.solve(np.eye(r) - arma, intercept[d:])
        initial_covariance = np.zeros((n, n))
        initial_covariance[d:, d:] = _lyapunov(arma, arma_covariance)
        observation = (np.arange(n) <= d).astype(float)
        return Block(
            dynamics,
            observation,
            covariance,
            np.arange(n) < d,
            intercept=intercept,
            initial_mean=initial_mean,
            initial_covariance=0.5 * (initial_covariance + initial_covariance.T),
        )

    def derivatives(self, values: np.ndarray, block: Block) -> dict[int, Block]:
        """d block / d v_j for every value v_j (index in ``values`` -> a Block of derivatives) at
        ``block`` = ``self.block(values)``, exactly: with T the ARMA transition, s = (1, theta, 0..),
        Q = sigma2 s s', the stationary mean m = (I - T)^-1 c e_1 and covariance P = T P T' + Q,

            d c:       d intercept = e_1,  dm = (I - T)^-1 e_1,
            d phi_k:   dT = e_k e_1',  dm = (I - T)^-1 dT m,  dP = lyap(T, dT P T' + T P dT'),
            d theta_k: dQ = sigma2 (e_k+1 s' + s e_k+1'),  dP = lyap(T, dQ),
            d sigma2:  dQ = s s',  dP = lyap(T, s s'),

        lyap(T, X) the solution of dP = T dP T' + X, all of them at one solve. The structural
        fit's gradient uses these instead of differences of the block."""
        c, phi, theta, sigma2 = self._split(np.asarray(values, dtype=float))
        d, r = int(self.d), max(int(self.ar), int(self.ma) + 1)
        n, i = d + r, int(self.intercept)
        T, P, mean = block.dynamics[d:, d:], block.initial_covariance[d:, d:], block.initial_mean[d:]
        selection = np.zeros(r)
        selection[0], selection[1 : 1 + len(theta)] = 1.0, theta
        zero, first = np.zeros((r, r)), np.eye(r)[0]
        # per value: dT, dQ, d intercept (of the ARMA state), the Lyapunov right-hand side
        parts = [(zero, zero, first, zero)] * i
        for k in range(len(phi)):
            dT = np.zeros((r, r))
            dT[k, 0] = 1.0
            spread = dT @ P @ T.T
            parts.append((dT, zero, 0 * first, spread + spread.T))
        for k in range(len(theta)):
            ds = np.zeros(r)
            ds[k + 1] = 1.0
            dQ = sigma2 * (np.outer(ds, selection) + np.outer(selection, ds))
            parts.append((zero, dQ, 0 * first, dQ))
        dQ = np.outer(selection, selection)
        parts.append((zero, dQ, 0 * first, dQ))
        kron = (T[:, None, :, None] * T[None, :, None, :]).reshape(r * r, r * r)
        solved = np.linalg.solve(np.eye(r * r) - kron, np.stack([part[3].ravel() for part in parts], axis=1))
        lifted = np.linalg.solve(np.eye(r) - T, np.stack([dT @ mean + da for dT, _, da, _ in parts], axis=1))
        out = {}
        for j, ((dT, dQ, da, _), dP, dm) in enumerate(zip(parts, solved.T, lifted.T)):
            moved = [np.zeros((n, n)) for _ in range(3)]
            moved[0][d:, d:], moved[1][d:, d:], moved[2][d:, d:] = dT, dQ, dP.reshape(r, r)
            intercept, initial_mean = np.zeros(n), np.zeros(n)
            intercept[d:], initial_mean[d:] = da, dm
            out[j] = Block(
                moved[0],
                np.zeros(n),
                moved[1],
                block.diffuse,
                intercept=intercept,
                initial_mean=initial_mean,
                initial_covariance=0.5 * (moved[2] + moved[2].T),
            )
        return out

    def start(self, context: StartContext) -> np.ndarray:
        """Hannan & Rissanen (1982): a long autoregression estimates the innovations e_t, then
        least squares of u_t on (1,) its p lags and q lagged innovations gives (c,) phi, theta."""
        series = [np.diff(x, n=self.d) for x in context.series]
        p, q = int(self.ar), int(self.ma)
        n = sum(len(x) for x in series)
        innovations = [np.zeros(len(x)) for x in series]
        if q > 0:
            order = max(p + q, int(np.ceil(np.log(max(n, 2)) ** 2 / 2)))
            designs = [np.column_stack([np.ones(len(x)), _lags(x, order)]) for x in series]
            coefficients = _least_squares(designs, series)
            innovations = [x - design @ coefficients for x, design in zip(series, designs)]
        designs = [
            np.column_stack([np.ones((len(x), int(self.intercept))), _lags(x, p), _lags(e, q)])
            for x, e in zip(series, innovations)
        ]
        coefficients = _least_squares(designs, series)
        residuals = np.concatenate([x - design @ coefficients for x, design in zip(series, designs)])
        residuals = residuals[np.isfinite(residuals)]
        i = int(self.intercept)
        phi = _shrunk(coefficients[i : i + p])
        theta = -_shrunk(-coefficients[i + p :])
        sigma2 = float(np.var(residuals)) if len(residuals) > 1 else context.step_variance
        return np.r_[coefficients[:i], phi, theta, max(sigma2, 1e-8 * context.step_variance)]


def _lyapunov(T: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """The P with P = T P T' + Q (T stable), from vec(P) = (I - T kron T)^-1 vec(Q): direct, for the
    few states of an ARMA."""
    r = len(T)
    kron = (T[:, None, :, None] * T[None, :, None, :]).reshape(r * r, r * r)
    return np.linalg.solve(np.eye(r * r) - kron, Q.ravel()).reshape(r, r)


def _lags(x: np.ndarray, k: int) -> np.ndarray:
    """(len(x), k): column j holds x_t-j-1 (NaN before the start)."""
    out = np.full((len(x), k), np.nan)
    for j in range(k):
        out[j + 1 :, j] = x[: len(x) - j - 1]
    return out


def _least_squares(designs: list[np.ndarray], targets: list[np.ndarray]) -> np.ndarray:
    """Least squares over the rows of every sequence where the target and the design are observed
    (zeros when there are too few)."""
    design, target = np.vstack(designs), np.concatenate(targets)
    rows = np.isfinite(target) & np.isfinite(design).all(axis=1)
    if rows.sum() <= design.shape[1]:
        return np.zeros(design.shape[1])
    return np.linalg.lstsq(design[rows], target[rows], rcond=None)[0]


# -------------------------------------------------------------------- regression
class Regression(NamedTuple):
    """Regression effects beta' u_t on ``n_exog`` columns given as ``exog`` (no state; the
    coefficients beta.x1.. are estimated with the other parameters, statsmodels'
    ``mle_regression``)."""

    n_exog: int = 1

    n_states = 0

    def names(self) -> tuple[str, ...]:
        return tuple(f"beta.x{j}" for j in range(1, int(self.n_exog) + 1))

    def kinds(self) -> tuple[str, ...]:
        return ("coefficient",) * int(self.n_exog)

    def to_free(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype=float)

    def from_free(self, free: np.ndarray) -> np.ndarray:
        return np.asarray(free, dtype=float)

    def signals(self) -> dict[str, np.ndarray]:
        return {}

    def block(self, values: np.ndarray) -> Block:
        empty = np.zeros((0, 0))
        return Block(empty, np.zeros(0), empty, np.zeros(0, dtype=bool), coefficients=np.asarray(values, float))

    def start(self, context: StartContext) -> np.ndarray:
        raise NotImplementedError("regression coefficients start from least squares (StructuralModel)")


#: component class name -> class (a saved model names its components)
COMPONENTS = {
    cls.__name__: cls
    for cls in (Irregular, LocalLevel, LocalLinearTrend, Seasonal, TrigonometricSeasonal, Cycle, ARIMA, Regression)
}
