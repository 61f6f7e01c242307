"""Resets: the regression an observation follows at the step the mode switches.

In a hybrid system a switch can move the continuous state at once: a bouncing ball's
velocity is reversed and scaled at impact. For an autoregression, whose state is its lag
vector (or features of it) x_t, a reset of the switch i -> j is one more affine-Gaussian
regression, used only at the step where the chain switches::

    z_t-1 = z_t = j:         y_t = W_j x_t + b_j + N(0, S_j)       (mode j's flow)
    z_t-1 = i != z_t = j:    y_t = R_r x_t + c_r + N(0, Q_r),   r = reset of (i, j)

So the evidence of a step depends on the pair (z_t-1, z_t); forward-backward stays exact
(:mod:`modeshift._kernels.pair_hmm`), and the M-step of each reset is a weighted ridge
regression whose weights are the expected switches xi_t(i, j) into it.

Ties (``ties``): ``"destination"`` gives one reset per mode entered (K resets: the reset
belongs to where the system goes, as a ball's impact does) and ``"pair"`` one per ordered
pair of modes (K (K - 1) resets, in row-major order of the pairs (i, j), i != j). Each reset
has its own noise covariance Q_r, of the flows' structure (``noise``, and one shared by all
resets with ``shared_noise``): a reset is often less precise than a flow, and sharing the
flows' noise would force the two to be alike.

Robust resets (``dof`` = nu): the reset's noise is Student-t with scale Q_r, a Gaussian scale
mixture N(0, Q_r / s), s ~ Gamma(nu / 2, nu / 2). A switch its reset does not explain (a ball
relaunched instead of bounced) lies in the t's tails and pulls the regression little: EM weighs
each switch in the regression's sums by E[s | y_t] = (nu + n) / (nu + delta), delta its squared
Mahalanobis residual (Lange, Little & Taylor 1989; exact for an autoregression, inside the pair
recursions). With a latent state this is a variational factor q(s) = Gamma(nu / 2 + w n / 2,
nu / 2 + w delta / 2) for each step and reset, w the switch's weight (:func:`scale_posterior`).
Keep nu > 2, so that the noise has a covariance, Q_r nu / (nu - 2).

>>> import numpy as np
>>> resets = Resets(3, "destination")
>>> resets.n_resets, resets.index[0].tolist()  # switches into mode j use reset j
(3, [0, 1, 2])
>>> Resets(3, "pair").index.tolist()  # the diagonal (no switch) is never read
[[-1, 0, 1], [2, -1, 3], [4, 5, -1]]
"""

from __future__ import annotations

import numpy as np
from scipy.special import digamma, gammaln

from modeshift._kernels.gaussian import LOG_2PI, inverse_cholesky
from modeshift.data import check_array, check_covariances
from modeshift.dynamics import LinearDynamics
from modeshift.statistics import Statistics

__all__ = [
    "RESET_TIES",
    "Resets",
    "check_reset_dof",
    "scale_factors",
    "scale_posterior",
    "student_constant",
    "student_log_density",
    "student_noise",
    "student_scales",
]

RESET_TIES = ("destination", "pair")
STAY_TOL = 1e-6  # a mode whose self-transition probability is below this is left at once (Resets.read_flows)


class Resets:
    """The reset regressions of a K-mode autoregression (see the module docstring).

    ``reset_coefs`` (R, D, m), ``reset_intercepts`` (R, D) and ``reset_covariances``
    (R, D, D) are the parameters, m the regressors (lags or features) of the flows;
    ``reset_covariances`` are the Student-t noise's scales when ``dof`` is given.
    """

    parameters = {
        "reset_coefs_": "reset_coefs",
        "reset_intercepts_": "reset_intercepts",
        "reset_covars_": "reset_covariances",
    }

    def __init__(
        self,
        n_states: int,
        ties: str,
        noise: str = "full",
        shared_noise: bool = False,
        ridge: float = 0.0,
        reg_covar: float = 1e-6,
        dof: float | None = None,
    ):
        if ties not in RESET_TIES:
            raise ValueError(f"resets must be one of {RESET_TIES}, got {ties!r}")
        self.n_states, self.ties, self.dof = n_states, ties, dof
        k = n_states
        self.index = np.full((k, k), -1, dtype=np.int64)
        if ties == "destination":
            self.targets = np.arange(k)  # the mode each reset enters
            self.index[:] = self.targets
        else:
            sources, self.targets = np.nonzero(~np.eye(k, dtype=bool))
            self.index[sources, self.targets] = np.arange(len(sources))
        self.dynamics = LinearDynamics(self.n_resets, noise, shared_noise, ridge, reg_covar)
        self.reset_coefs: np.ndarray | None = None
        self.reset_intercepts: np.ndarray | None = None
        self.reset_covariances: np.ndarray | None = None

    @property
    def dof(self) -> float | None:
        """nu of Student-t noise (None: Gaussian); a hyper-parameter, so it may change without the
        parameters (the same scales Q_r then read as another law)."""
        return self._dof

    @dof.setter
    def dof(self, value: float | None) -> None:
        if value is not None and not value > 2:
            raise ValueError(f"the resets' Student-t noise needs more than 2 degrees of freedom, got {value!r}")
        self._dof = value

    @property
    def n_resets(self) -> int:
        return len(self.targets)

    @property
    def weights(self) -> np.ndarray:
        """[R_r, c_r] (R, D, m + 1): each reset's coefficients with its intercept as the last column."""
        return np.concatenate([self.reset_coefs, self.reset_intercepts[:, :, None]], axis=2)

    def set(self, name: str, value: np.ndarray) -> None:
        r = self.n_resets
        present = (self.reset_coefs, self.reset_intercepts, self.reset_covariances)
        d = next((v.shape[1] for v in present if v is not None), None)
        if name == "reset_coefs":
            self.reset_coefs = check_array("reset_coefs_", value, (r, d, None))
        elif name == "reset_intercepts":
            self.reset_intercepts = check_array("reset_intercepts_", value, (r, d))
        elif name == "reset_covariances":
            covariances = check_covariances("reset_covars_", value, d)
            if covariances.shape[0] != r:
                raise ValueError(
                    f"reset_covars_ must have {r} matrices (resets={self.ties!r}), got shape {covariances.shape}"
                )
            self.reset_covariances = covariances
        else:
            raise AttributeError(name)

    def check_flows(self, coefs: np.ndarray) -> None:
        """A clear error when the resets do not regress on what the flows (K, D, m) regress on."""
        expected = (self.n_resets, *coefs.shape[1:])
        if self.reset_coefs.shape != expected:
            raise ValueError(
                f"reset_coefs_ must have shape {expected}, regressing on what coefs_ does, got {self.reset_coefs.shape}"
            )

    def initialize(self, coefs: np.ndarray, intercepts: np.ndarray, spread: np.ndarray) -> None:
        """Start each reset at the flow of the mode it enters, with the noise ``spread`` (D, D) of the
        data around their mean: a reset that knows little, so the first E-step puts a step no flow
        explains at a switch, where the M-step then learns the reset. (Starting with the flows'
        noise makes the model start as the plain ARHMM, whose modes take such steps by a stay: on
        the bouncing ball that is a local optimum of EM with two-step impacts.)"""
        self.reset_coefs = coefs[self.targets].copy()
        self.reset_intercepts = intercepts[self.targets].copy()
        self.reset_covariances = np.broadcast_to(spread, (self.n_resets, *spread.shape)).copy()

    # ------------------------------------------------------------------ algebra
    def _block(self) -> LinearDynamics:
        block = self.dynamics
        block.weights = self.weights
        block.ridge_columns = np.arange(block.weights.shape[2]) < self.reset_coefs.shape[2]  # not the intercepts
        block.covariances = self.reset_covariances
        return block

    def kernel_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float | None]:
        """What :mod:`~modeshift._kernels.pair_hmm` reads: weights [R_r, c_r] (R, D, m + 1), the
        inverse Cholesky factors of Q_r, the densities' constants (Gaussian, or Student-t's with
        ``dof``), the (K, K) reset index and the degrees of freedom (None: Gaussian)."""
        factors = inverse_cholesky(self.reset_covariances)
        log_dets = -2.0 * np.log(np.diagonal(factors, axis1=1, axis2=2)).sum(axis=1)
        n, nu = self.reset_covariances.shape[1], self.dof
        if nu is None:
            constants = -0.5 * (n * LOG_2PI + log_dets)
        else:
            nu = float(nu)
            constants = student_constant(nu, n, log_dets)
        return np.ascontiguousarray(self._block().weights), factors, constants, self.index, nu

    def statistics(self, outer: np.ndarray, counts: np.ndarray, n_responses: int) -> Statistics:
        """The regression's statistics from the kernel's weighted sums of [y, x] [y, x]^T."""
        d = n_responses
        return Statistics(yy=outer[:, :d, :d], yz=outer[:, :d, d:], zz=outer[:, d:, d:], count=counts)

    def _fixed(self, fixed: frozenset[str]) -> tuple[np.ndarray, bool]:
        columns = np.full(self.reset_coefs.shape[2] + 1, "reset_coefs" in fixed)
        columns[-1] = "reset_intercepts" in fixed
        return columns, "reset_covariances" in fixed

    def m_step(self, stats: Statistics, fixed: frozenset[str] = frozenset()) -> None:
        """Weighted ridge regression of each reset on its expected switches (a reset no switch
        reaches keeps its parameters)."""
        block = self._block()
        columns, fix_covariances = self._fixed(fixed)
        block.m_step(stats, fixed_columns=columns, fix_covariances=fix_covariances)
        self.reset_coefs, self.reset_intercepts = block.weights[:, :, :-1], block.weights[:, :, -1]
        self.reset_covariances = block.covariances

    def n_parameters(self, fixed: frozenset[str] = frozenset()) -> int:
        """The resets' free parameters: none with one mode, which never switches (its ``"destination"``
        reset is never read, so the data say nothing of it and BIC must not charge for it)."""
        if self.n_states == 1:
            return 0
        columns, fix_covariances = self._fixed(fixed)
        return self._block().n_parameters(columns, fix_covariances)

    def read_flows(self, transmat: np.ndarray | None) -> int:
        """How many of the K flows some step reads. A switch reads its reset, so a flow is read
        only where its mode stays: a mode the chain leaves at once (p_kk below :data:`STAY_TOL`; a
        bouncing ball's impact) has a flow no step reads, which the data say nothing of (BIC must
        not charge for it). All K when ``transmat`` is None (switches that depend on the state)."""
        if transmat is None:
            return self.n_states
        return int((np.diag(transmat) >= STAY_TOL).sum())

    def log_prior(self) -> float:
        return self._block().log_prior() if self.reset_coefs is not None else 0.0

    def noise_covariances(self) -> np.ndarray:
        """The covariance of each reset's noise (R, D, D): Q_r, or Q_r nu / (nu - 2) for Student-t noise."""
        if self.dof is None:
            return self.reset_covariances
        return self.reset_covariances * (self.dof / (self.dof - 2.0))

    def sample_rows(self, regressors: np.ndarray, sources: np.ndarray, targets: np.ndarray, rng: np.random.Generator):
        """Draws of y (n, D) at switches ``sources`` -> ``targets`` (n,), from regressors [x, 1] (n, m + 1)."""
        block, resets = self._block(), self.index[sources, targets]
        draws = block.sample_rows(regressors, resets, rng)
        if self.dof is None:
            return draws
        means = np.einsum("tij,tj->ti", block.weights[resets], regressors)
        return means + (draws - means) / np.sqrt(student_scales(np.full(len(draws), self.dof), rng))[:, None]

    def maps(self) -> dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]:
        """(source, target) -> (matrix, offset) for every switch (each of its resets' pairs)."""
        return {
            (i, j): (self.reset_coefs[self.index[i, j]], self.reset_intercepts[self.index[i, j]])
            for i in range(self.n_states)
            for j in range(self.n_states)
            if i != j
        }


def check_reset_dof(resets: str | None, reset_dof: float | None) -> None:
    """A model's ``reset_dof`` is its resets' noise: a clear error without ``resets``."""
    if reset_dof is not None and not resets:
        raise ValueError(f"reset_dof={reset_dof!r} is the resets' noise: it needs resets='destination' or 'pair'")


def scale_posterior(
    weights: np.ndarray, distances: np.ndarray, dim: int, dof: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """q(s) of Student-t noise as a Gaussian scale mixture, N(0, Q / s) with s ~ Gamma(nu/2, nu/2):
    for a law used with weight w whose residual e has E_q[e' Q^-1 e] = delta (``weights``,
    ``distances``, any shape; ``dim`` = n, ``dof`` = nu), the q(s) maximising
    w E_q log N(e | 0, Q / s) - KL(q(s) || p(s)) is Gamma(a, b) with a = nu/2 + w n/2 and
    b = nu/2 + w delta/2. Returns E[s] = a / b, E[log s] = psi(a) - log b and that KL.

    >>> expected, _, kl = scale_posterior(np.array([0.0, 1.0, 1.0]), np.array([0.0, 2.0, 400.0]), 2, 4.0)
    >>> expected.round(3).tolist(), float(kl[0])  # unused: the prior; an outlier: weighed ~0
    ([1.0, 1.0, 0.015], 0.0)
    """
    a0 = b0 = dof / 2.0
    a, b = a0 + weights * dim / 2.0, b0 + weights * distances / 2.0
    kl = (a - a0) * digamma(a) - gammaln(a) + gammaln(a0) + a0 * np.log1p(weights * distances / dof) + a * (b0 - b) / b
    return a / b, digamma(a) - np.log(b), kl


def student_scales(dofs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One draw of s ~ Gamma(nu/2, rate nu/2) per entry of ``dofs`` (1 where nu is infinite):
    mean + L z / sqrt(s), z standard normal, is Student-t with nu degrees of freedom and scale L L'."""
    dofs = np.asarray(dofs, dtype=float)
    finite = np.isfinite(dofs)
    shapes = np.where(finite, dofs / 2.0, 1.0)
    return np.where(finite, rng.gamma(shapes, 1.0 / shapes), 1.0)


def student_noise(factors: np.ndarray, dofs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draws (N, n) of noise whose covariance has the Cholesky ``factors`` (N, n, n), row i Student-t
    with ``dofs[i]`` > 2 degrees of freedom (Gaussian where infinite): L z sqrt((nu - 2) / (nu s))."""
    draws = np.einsum("tij,tj->ti", factors, rng.standard_normal(factors.shape[:2]))
    if np.isinf(dofs).all():
        return draws
    return draws * np.sqrt(scale_factors(dofs) / student_scales(dofs, rng))[:, None]


def scale_factors(dofs: np.ndarray | float) -> np.ndarray:
    """(nu - 2) / nu for each of ``dofs`` (1 where nu is infinite): a Student-t's scale matrix over
    its covariance."""
    dofs = np.asarray(dofs, dtype=float)
    finite = np.isfinite(dofs)
    return np.where(finite, 1.0 - 2.0 / np.where(finite, dofs, 1.0), 1.0)


def student_log_density(residuals: np.ndarray, scale: np.ndarray, dof: float) -> np.ndarray:
    """log t_nu(e | 0, S) of each row e of ``residuals`` (N, n), scale matrix ``scale`` (n, n):
    log Gamma((nu + n)/2) - log Gamma(nu/2) - n/2 log(nu pi) - log det S / 2 - (nu + n)/2 log(1 + e' S^-1 e / nu)."""
    n = residuals.shape[1]
    factor = np.linalg.cholesky(scale)
    whitened = np.linalg.solve(factor, residuals.T)
    distances = np.einsum("ij,ij->j", whitened, whitened)
    log_det = 2.0 * np.log(np.diag(factor)).sum()
    return student_constant(dof, n, log_det) - (dof + n) / 2 * np.log1p(distances / dof)


def student_constant(dof: float, n: int, log_dets: np.ndarray | float) -> np.ndarray | float:
    """The normalising constant of an n-variate Student-t with ``dof`` = nu degrees of freedom and
    scale matrices S of log-determinants ``log_dets``:
    log Gamma((nu + n)/2) - log Gamma(nu/2) - n/2 log(nu pi) - log det S / 2."""
    return gammaln((dof + n) / 2) - gammaln(dof / 2) - n / 2 * np.log(dof * np.pi) - np.asarray(log_dets) / 2
