"""Linear-Gaussian state-space models (Kalman filter models) fit by maximum likelihood (EM, then quasi-Newton)."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from modeshift import _kernels as kernels
from modeshift.data import Sequences, as_sequences, check_array, check_covariances
from modeshift.dynamics import LinearDynamics, ensure_positive_definite, observation_statistics
from modeshift.models import em, lds_mle, online_em
from modeshift.models.base import Forecast, Model, NotFittedError, check_future_inputs, simulated
from modeshift.models.params import Boolean, Integer, OneOf, either
from modeshift.models.streaming import (
    DiffuseKalmanRecursion,
    FilterState,
    KalmanRecursion,
    StreamingFilters,
    check_input_row,
    check_row,
)
from modeshift.statistics import Moments, Statistics

if TYPE_CHECKING:
    from modeshift.smc.adapters import LinearGaussian

__all__ = ["FilterResult", "LinearGaussianSSM", "SmootherResult", "predictive_moments"]

PerStep = np.ndarray | list[np.ndarray]  # one array, or one per sequence for list input

# model attribute -> its key in the parameter dictionaries of the inference code
_PARAMETERS = {
    "dynamics_matrix_": "A",
    "transition_covariance_": "Q",
    "observation_matrix_": "C",
    "observation_covariance_": "R",
    "initial_state_mean_": "m0",
    "initial_state_covariance_": "P0",
    "control_matrix_": "B",
    "feedthrough_matrix_": "D",
}
_NEGLIGIBLE = 1e-9  # a variance below this fraction of y's one-step variance is taken as 0
_FIT_RESULTS = ("history_", "converged_", "n_iter_", "log_likelihood_")


def predictive_moments(
    mean: np.ndarray, cov: np.ndarray, params: dict[str, np.ndarray], future_inputs: np.ndarray
) -> Forecast:
    """The predictive law of y_T+1..T+h from the filtered state N(mean, cov) at T:
    x_T+h|T = A x_T+h-1|T + B u_T+h, P_T+h|T = A P_T+h-1|T A' + Q, and y_T+h has mean
    C x_T+h|T + D u_T+h and covariance C P_T+h|T C' + R (``params`` keys A, Q, C, R, B, D;
    ``future_inputs`` (h, m), m = 0 without inputs)."""
    A, Q, C, R, B, D = (params[k] for k in "AQCRBD")
    horizon, p = len(future_inputs), C.shape[0]
    means, covs = np.empty((horizon, p)), np.empty((horizon, p, p))
    x, P = mean, cov
    for h, u in enumerate(future_inputs):
        x = A @ x + B @ u
        P = A @ P @ A.T + Q
        P = 0.5 * (P + P.T)
        means[h] = C @ x + D @ u
        y_cov = C @ P @ C.T + R
        covs[h] = 0.5 * (y_cov + y_cov.T)
    return Forecast(means, covs)


@dataclass(frozen=True)
class FilterResult:
    """Moments of p(x_t | y_0..t) per step (in the form the data came in) and the total log-likelihood."""

    means: np.ndarray | list[np.ndarray]
    covariances: np.ndarray | list[np.ndarray]
    log_likelihood: float


@dataclass(frozen=True)
class SmootherResult:
    """Moments of p(x_t | all observations) per step, Cov(x_t, x_t-1 | y) (zero at a sequence's
    first step) and the total log-likelihood."""

    means: np.ndarray | list[np.ndarray]
    covariances: np.ndarray | list[np.ndarray]
    cross_covariances: np.ndarray | list[np.ndarray]
    log_likelihood: float


class LinearGaussianSSM(Model, StreamingFilters):
    """A linear-Gaussian state-space model, fit by maximum likelihood: EM (Shumway & Stoffer;
    Ghahramani & Hinton), then quasi-Newton on the exact log-likelihood.

        x_0 ~ N(m0, P0),   x_t = A x_t-1 + B u_t + w_t,   y_t = C x_t + D u_t + v_t,
        w_t ~ N(0, Q),     v_t ~ N(0, R)

    Parameters
    ----------
    state_dim : int
        Dimension n of the hidden state x.
    obs_dim : int, optional
        Dimension p of the observations y (default: from the data, or from a hand-set
        ``observation_matrix_``).
    input_dim : int
        Dimension m of the inputs u (0: no inputs; then B and D are absent).
    method : {"mle", "em"}
        "mle" (default): EM to get close, then L-BFGS-B on the exact log-likelihood with its
        analytic gradient (:mod:`modeshift.models.lds_mle`), which reaches the maximum, also
        one where a variance is 0, where EM crawls. "em": EM alone.
    n_iter, tol : int, float
        EM stops after ``n_iter`` iterations or when the log-likelihood improves by less
        than ``tol`` (see :mod:`modeshift.models.em`); ``n_iter=0`` only initialises (no
        polish either). With "mle", EM only has to find the basin and the polish climbs
        to its top, hence the loose default ``tol``; with "em", lower it (e.g. 1e-4).
    n_iter_polish : int
        At most this many L-BFGS-B iterations after EM with ``method="mle"`` (0: none).
    random_state : int or numpy Generator, optional
        Used by the initialisation when ``state_dim > obs_dim``.
    fixed : iterable of str
        Parameters held fixed during ``fit`` (e.g. ``("observation_matrix_",)``). Values
        set by hand are kept by every ``fit`` (they are settings, not estimates); a fixed
        parameter not set keeps its data-driven starting value.
    diagonal_observation_cov : bool
        Constrain R to be diagonal.
    diffuse : bool or sequence of bool
        State components with an exact diffuse prior (Durbin & Koopman 2012, ch. 5; statsmodels'
        ``initialization="diffuse"``, R's KFAS): ``True`` for all, or one flag per component.
        Their entries of m0 and rows of P0 are ignored (the other components keep N(m0, P0)),
        and each sequence starts with the exact diffuse steps (:mod:`modeshift._kernels.diffuse`)
        until they are identified. See Notes for the log-likelihood reported.
    warm_start : bool
        Start ``fit`` from the current parameters (learned or set by hand) instead of afresh.
    verbose : bool
        Show a live progress bar of the EM iterations (drawn by :mod:`modeshift.progress`).
    callback : callable, optional
        ``callback(iteration, log_likelihood)`` at every EM iteration (not saved with the model).

    Attributes
    ----------
    dynamics_matrix_ (A), transition_covariance_ (Q), observation_matrix_ (C),
    observation_covariance_ (R), initial_state_mean_ (m0), initial_state_covariance_ (P0),
    control_matrix_ (B) and feedthrough_matrix_ (D) when ``input_dim > 0`` : arrays
        m0 and P0 are the prior of the state at a sequence's first observation.
        ``transition_matrix_`` is the old name of ``dynamics_matrix_`` (deprecated).
    history_ : list of float
        log p(Y) at each EM iteration (non-decreasing), before the polish.
    converged_ : bool
        Whether EM met its convergence rule and, with "mle", the polish reached a stationary
        point (largest entry of the projected gradient in its scaled free vector below
        ``lds_mle.GTOL``).
    n_iter_ : int
        EM iterations.
    log_likelihood_ : float
        log p(Y) at the estimate.

    Notes
    -----
    Missing values (NaN) are integrated out exactly everywhere: the filter uses only the
    observed entries of a step; in the M-step, a wholly missing step contributes only to
    the dynamics statistics, and the missing entries of a partially observed step enter
    through their conditional moments given the state and the observed entries.
    The parameters are identified only up to a change of state basis x -> T x.
    Q, R and P0 may be positive semi-definite (zero or rank-deficient: ARMA and structural models)
    as long as every innovation covariance C P_t|t-1 C' + R is positive definite; the smoother is
    in Durbin & Koopman's form, which inverts no state covariance. With ``method="mle"``, a
    variance whose maximum lies at 0 ends at exactly 0; :meth:`standard_errors` treats it as on
    the boundary.
    With ``diffuse``, the log-likelihood reported (``score``, ``log_likelihood_``, ``history_``)
    is the diffuse log-likelihood (Durbin & Koopman 2012, eq. 7.2-7.3): each observed entry that
    tells about a diffuse direction contributes -(log 2 pi + log F_inf) / 2, F_inf its variance
    per unit of diffuse variance, i.e. lim_k [log p(Y | P0 = P_* + k P_inf) + (d / 2) log k] with
    d the number of diffuse components per sequence; statsmodels' ``use_exact_diffuse=True``
    ``llf`` and KFAS's ``logLik`` are this number. A sequence must be long enough to identify
    its diffuse components.
    Parameters set by hand on a model never fitted (or, with ``warm_start``, learned
    before) are the starting point of ``fit``; the others start from a PCA of the data.
    Inputs come as ``inputs`` (an (n_steps, m) array, or a list of them for a list of
    sequences) or from the ``inputs`` of a :class:`~modeshift.data.Sequences` (e.g. a data
    frame's ``input_columns``).

    Examples
    --------
    >>> import numpy as np
    >>> from modeshift import LinearGaussianSSM
    >>> truth = LinearGaussianSSM(state_dim=1)
    >>> truth.dynamics_matrix_, truth.transition_covariance_ = np.array([[0.9]]), np.array([[0.1]])
    >>> truth.observation_matrix_, truth.observation_covariance_ = np.array([[1.0], [2.0]]), 0.1 * np.eye(2)
    >>> truth.initial_state_mean_, truth.initial_state_covariance_ = np.zeros(1), np.eye(1)
    >>> Y, states = truth.sample(2000, random_state=0)
    >>> model = LinearGaussianSSM(state_dim=1).fit(Y)
    >>> round(float(model.dynamics_matrix_[0, 0]), 1)
    0.9
    >>> means, covariances = model.forecast(Y, horizon=3)
    >>> means.shape, covariances.shape
    ((3, 2), (3, 2, 2))
    """

    def __init__(
        self,
        state_dim: int = 1,
        obs_dim: int | None = None,
        input_dim: int = 0,
        method: str = "mle",
        n_iter: int = 100,
        tol: float = 0.1,
        n_iter_polish: int = 500,
        random_state: int | np.random.Generator | None = None,
        fixed: Iterable[str] = (),
        diagonal_observation_cov: bool = False,
        diffuse: bool | Sequence[bool] = False,
        warm_start: bool = False,
        verbose: bool = False,
        callback: Callable[[int, float], Any] | None = None,
    ):
        self.state_dim = state_dim
        self.obs_dim = obs_dim
        self.input_dim = input_dim
        self.method = method
        self.n_iter = n_iter
        self.tol = tol
        self.n_iter_polish = n_iter_polish
        self.random_state = random_state
        self.fixed = fixed
        self.diagonal_observation_cov = diagonal_observation_cov
        self.diffuse = diffuse
        self.warm_start = warm_start
        self.verbose = verbose
        self.callback = callback

    _constraints = {
        "state_dim": Integer(1),
        "obs_dim": either(Integer(1), OneOf((None,))),
        "input_dim": Integer(0),
        "method": OneOf(("mle", "em")),
        "n_iter_polish": Integer(0),
        "diagonal_observation_cov": Boolean(),
    }
    _renamed = {"log_likelihood_history_": "history_", "transition_matrix_": "dynamics_matrix_"}
    _file_attributes = {**Model._file_attributes, "log_likelihood_": "number"}

    # ------------------------------------------------- structural time-series models
    @classmethod
    def local_level(cls, diffuse_variance: float | None = None, **options: Any) -> LinearGaussianSSM:
        """The local-level model (Durbin & Koopman 2012, ch. 2), ready to fit.

            y_t = mu_t + eps_t,  mu_t = mu_{t-1} + eta_t,  eps_t ~ N(0, R),  eta_t ~ N(0, Q)

        A = C = 1 are held fixed, and so is the initial level: exactly diffuse by default
        (``diffuse=True``), or, given a ``diffuse_variance``, the approximation N(0, diffuse_variance).
        ``fit`` estimates the two variances. Other keyword arguments go to the constructor
        (``n_iter``, ``tol``, ...).

        On the Nile, ``fit`` gives Durbin & Koopman's MLE, 15098.5 and 1469.18, and the diffuse
        log-likelihood -633.4646, statsmodels' ``UnobservedComponents(y, "llevel",
        use_exact_diffuse=True)`` value (see the class Notes).
        """
        return cls._structural(np.array([[1.0]]), np.array([[1.0]]), diffuse_variance, options)

    @classmethod
    def local_linear_trend(cls, diffuse_variance: float | None = None, **options: Any) -> LinearGaussianSSM:
        """The local-linear-trend model, state (level, slope), ready to fit.

            y_t = mu_t + eps_t,  mu_t = mu_{t-1} + nu_{t-1} + eta_t,  nu_t = nu_{t-1} + zeta_t

        A, C and the initial state, exactly diffuse (or N(0, diffuse_variance I) when given), are
        held fixed; ``fit`` estimates R and the 2 x 2 disturbance covariance Q (which EM leaves
        free to correlate eta and zeta; the textbook model takes it diagonal).
        """
        return cls._structural(np.array([[1.0, 1.0], [0.0, 1.0]]), np.array([[1.0, 0.0]]), diffuse_variance, options)

    @classmethod
    def _structural(
        cls, dynamics: np.ndarray, observation: np.ndarray, diffuse_variance: float | None, options: dict[str, Any]
    ) -> LinearGaussianSSM:
        n = dynamics.shape[0]
        held = ("dynamics_matrix_", "observation_matrix_", "initial_state_mean_", "initial_state_covariance_")
        exact = diffuse_variance is None
        model = cls(state_dim=n, obs_dim=1, fixed=held + tuple(options.pop("fixed", ())), diffuse=exact, **options)
        model.dynamics_matrix_ = dynamics
        model.observation_matrix_ = observation
        model.initial_state_mean_ = np.zeros(n)
        model.initial_state_covariance_ = (0.0 if exact else diffuse_variance) * np.eye(n)
        return model

    # ------------------------------------------------------------ parameters
    @property
    def parameter_names(self) -> tuple[str, ...]:
        names = tuple(_PARAMETERS)
        return names if self.input_dim > 0 else names[:6]

    def _obs_dim(self) -> int | None:
        if self.obs_dim is not None:
            return self.obs_dim
        C = self.__dict__.get("observation_matrix_")
        if C is not None:
            shape = np.shape(C)
            if len(shape) == 2:
                return int(shape[0])
        return None

    def _check_parameters(self) -> dict[str, np.ndarray]:
        """The parameters, validated, as float arrays (keys: A, Q, C, R, m0, P0, B, D)."""
        self._check_params()
        missing = [name for name in self.parameter_names if self.__dict__.get(name) is None]
        if missing:
            raise NotFittedError(f"this LinearGaussianSSM has no {', '.join(missing)}: call fit, or set them by hand")
        n, m = self.state_dim, self.input_dim
        get = self.__dict__.get
        out = {
            "A": check_array("dynamics_matrix_", get("dynamics_matrix_"), (n, n)),
            "C": check_array("observation_matrix_", get("observation_matrix_"), (self._obs_dim(), n)),
            "m0": check_array("initial_state_mean_", get("initial_state_mean_"), (n,)),
        }
        p = out["C"].shape[0]
        for key, name, size in (
            ("Q", "transition_covariance_", n),
            ("R", "observation_covariance_", p),
            ("P0", "initial_state_covariance_", n),
        ):
            value = check_covariances(name, get(name), size, semidefinite=True)
            if value.ndim != 2:
                raise ValueError(f"{name} must be one {size} x {size} matrix, got shape {value.shape}")
            out[key] = value
        if m > 0:
            out["B"] = check_array("control_matrix_", get("control_matrix_"), (n, m))
            out["D"] = check_array("feedthrough_matrix_", get("feedthrough_matrix_"), (p, m))
        else:
            out["B"], out["D"] = np.zeros((n, 0)), np.zeros((p, 0))
        return out

    def _parameter_arrays(self) -> dict[str, np.ndarray]:
        """The parameters as :meth:`_check_parameters` gives them, not checked again: for the M-step,
        whose E-step has just checked these very values (EM changes them in the M-step only)."""
        names = self.parameter_names
        out = {key: np.array(self.__dict__[name], dtype=float) for name, key in _PARAMETERS.items() if name in names}
        if self.input_dim == 0:
            out["B"], out["D"] = np.zeros((self.state_dim, 0)), np.zeros((len(out["C"]), 0))
        return out

    def _diffuse_mask(self) -> np.ndarray | None:
        """The diffuse state components as a boolean (state_dim,) array, or None for none."""
        value = self.diffuse
        if isinstance(value, (bool, np.bool_)):
            return np.ones(self.state_dim, dtype=bool) if value else None
        try:
            mask = np.asarray(value)
        except ValueError:  # a ragged nesting
            mask = np.zeros(0)
        if mask.shape != (self.state_dim,) or mask.dtype != bool:
            raise ValueError(
                f"diffuse must be a bool or {self.state_dim} bools (one per state component), got {value!r}"
            )
        return mask if mask.any() else None

    def _fixed(self) -> frozenset[str]:
        """The names in ``fixed``, old names translated (with a DeprecationWarning), checked."""
        names = set()
        for name in self.fixed:
            new = self._renamed.get(name, name)
            if new != name:
                warnings.warn(
                    f"fixed names {name!r}, which is renamed {new!r}; the old name goes in the next release",
                    DeprecationWarning,
                    stacklevel=3,
                )
            names.add(new)
        unknown = sorted(names - set(self.parameter_names))
        if unknown:
            raise ValueError(f"fixed names unknown parameters {unknown}; known: {list(self.parameter_names)}")
        return frozenset(names)

    # ------------------------------------------------------------------- data
    def _sequences(self, X: Any, lengths: Sequence[int] | None, inputs: Any, p: int | None) -> Sequences:
        seqs = as_sequences(X, lengths)
        seqs.require(allow_missing=True, n_features=p, model="this LinearGaussianSSM")
        return seqs.with_inputs(inputs, self.input_dim, "this LinearGaussianSSM")

    def _kernel_arguments(self, seqs: Sequences, params: dict[str, np.ndarray]) -> tuple[tuple, dict[str, Any]]:
        """The arguments of :func:`kernels.kalman_filter` (and of the score's one compiled pass)."""
        m = self.input_dim
        arguments = (seqs.values, seqs.offsets, *(params[key] for key in ("m0", "P0", "A", "Q", "C", "R")))
        options = {
            "inputs": seqs.inputs if m > 0 else None,
            "input_matrices": params["B"] if m > 0 else None,
            "feedthrough_matrices": params["D"] if m > 0 else None,
            "diffuse": self._diffuse_mask(),
        }
        return arguments, options

    def _run_filter(self, seqs: Sequences, params: dict[str, np.ndarray]) -> tuple:
        arguments, options = self._kernel_arguments(seqs, params)
        return kernels.kalman_filter(*arguments, **options)

    def _run_smoother(self, seqs: Sequences, params: dict[str, np.ndarray]) -> tuple:
        """The filter, then the smoother: (log p(Y), filter outputs, smoother outputs)
        (:func:`kernels.rts_smoother`)."""
        log_lik, *filtered = self._run_filter(seqs, params)
        m = self.input_dim
        smoothed = kernels.rts_smoother(
            seqs.values,
            seqs.offsets,
            *filtered,
            params["A"],
            params["C"],
            params["R"],
            inputs=seqs.inputs if m > 0 else None,
            feedthrough_matrices=params["D"] if m > 0 else None,
            diffuse=self._diffuse_mask(),
        )
        return float(log_lik.sum()), filtered, smoothed

    def _smooth(self, seqs: Sequences, params: dict[str, np.ndarray]) -> tuple:
        log_lik, _, smoothed = self._run_smoother(seqs, params)
        return (log_lik, *smoothed)

    def _score(
        self, seqs: Sequences, params: dict[str, np.ndarray], score_rows: np.ndarray | None = None
    ) -> tuple[float, dict[str, np.ndarray]]:
        """log p(Y) and its gradient in every parameter (keys of ``params``), in one compiled pass
        (:func:`modeshift._kernels.lds_score.log_likelihood_and_score`, the Fisher identity), in A
        on the ``score_rows`` only (all by default; 0 on the others)."""
        arguments, options = self._kernel_arguments(seqs, params)
        R = params["R"]
        if options["diffuse"] is not None and len(R) > 1 and np.any(R != np.diag(np.diag(R))):
            raise NotImplementedError(
                "the analytic score of a model with an exact diffuse start needs a diagonal observation_covariance_"
            )
        log_lik, gradient = kernels.log_likelihood_and_score(*arguments, **options, score_rows=score_rows)
        return float(log_lik.sum()), gradient

    def standard_errors(
        self, X: Any, lengths: Sequence[int] | None = None, *, inputs: Any = None
    ) -> dict[str, np.ndarray]:
        """Standard errors of the parameters not held ``fixed``, from the observed information at
        the current parameters (meant at the maximum-likelihood estimate): per attribute name, an
        array shaped like the parameter, NaN where undefined (a variance on the boundary 0 and its
        covariance's row and column; every entry where the information is singular, as in a
        model whose state basis is free). See :func:`lds_mle.standard_errors`."""
        params = self._check_parameters()
        seqs = self._sequences(as_sequences(X, lengths), None, inputs, params["C"].shape[0])
        free = [name for name in self.parameter_names if name not in self._fixed()]
        diagonal = frozenset({"R"} if self.diagonal_observation_cov else ())
        layout = lds_mle.Parameterisation(params, [_PARAMETERS[name] for name in free], diagonal)
        # a variance is on the boundary (the polish left it at 0) when it is negligible in the units of y
        C = params["C"]
        scale = float(np.trace(C @ params["Q"] @ C.T + params["R"])) / len(C)
        in_y_units = {
            "Q": np.diag(params["Q"]) * np.square(C).sum(axis=0),
            "R": np.diag(params["R"]),
            "P0": np.diag(params["P0"]) * np.square(C).sum(axis=0),
        }
        on_boundary = {key: value <= _NEGLIGIBLE * scale for key, value in in_y_units.items()}
        errors = lds_mle.standard_errors(lambda shifted: self._score(seqs, shifted), params, layout, on_boundary)
        return {name: errors[_PARAMETERS[name]] for name in free}

    # -------------------------------------------------------------- inference
    def filter(self, X: Any, lengths: Sequence[int] | None = None, *, inputs: Any = None) -> FilterResult:
        """Kalman filter: moments of p(x_t | y_0..t)."""
        params = self._check_parameters()
        seqs = self._sequences(X, lengths, inputs, params["C"].shape[0])
        log_lik, fm, fc, _, _ = self._run_filter(seqs, params)
        return FilterResult(seqs.restore(fm), seqs.restore(fc), float(log_lik.sum()))

    def smooth(self, X: Any, lengths: Sequence[int] | None = None, *, inputs: Any = None) -> SmootherResult:
        """Rauch-Tung-Striebel smoother: moments of p(x_t | all observations)."""
        params = self._check_parameters()
        seqs = self._sequences(X, lengths, inputs, params["C"].shape[0])
        log_lik, sm, sc, cc = self._smooth(seqs, params)
        return SmootherResult(seqs.restore(sm), seqs.restore(sc), seqs.restore(cc), log_lik)

    def score(self, X: Any, lengths: Sequence[int] | None = None, *, inputs: Any = None) -> float:
        """Total log-likelihood log p(Y) over all sequences (missing values integrated out)."""
        params = self._check_parameters()
        seqs = self._sequences(X, lengths, inputs, params["C"].shape[0])
        return float(self._run_filter(seqs, params)[0].sum())

    # -------------------------------------------------------------- streaming
    def _stream_recursion(self) -> KalmanRecursion:
        """The Kalman steps under the current parameters (with ``diffuse``, the exact diffuse steps
        first), checked once while they and ``diffuse`` stay equal."""
        mask = self._diffuse_mask()
        given = [self.__dict__.get(name) for name in self.parameter_names] + [mask]
        cached = self.__dict__.get("_stream_cache")
        if cached is None or not all(np.array_equal(a, b) for a, b in zip(cached[0], given, strict=True)):
            params = self._check_parameters()
            recursion = (
                KalmanRecursion(params) if mask is None or not mask.any() else DiffuseKalmanRecursion(params, mask)
            )
            cached = ([None if value is None else np.array(value) for value in given], recursion)
            self.__dict__["_stream_cache"] = cached
        return cached[1]

    def _stream_evidence(self, state: FilterState, y: Any, inputs: Any) -> tuple[tuple, np.ndarray, np.ndarray]:
        """(y_t, u_t) checked, u_t as the move into step t, the (empty) history."""
        row = check_row(y, self._obs_dim() or np.shape(self.observation_matrix_)[0])
        u = check_input_row(inputs, self.input_dim, "this LinearGaussianSSM")
        return (row, u), u, state.history

    def filter_forecast(self, state: FilterState, horizon: int, future_inputs: Any = None) -> Forecast:
        """The predictive law of the ``horizon`` observations after those a filter state has seen
        (``future_inputs`` (horizon, input_dim) for a model with inputs)."""
        if not state.filtered:
            raise ValueError("the filter state has seen no observation yet")
        params = self._check_parameters()
        future = check_future_inputs(future_inputs, int(horizon), 1, self.input_dim, "this LinearGaussianSSM")[0]
        mean, cov = DiffuseKalmanRecursion.proper(state.filtered)
        return predictive_moments(mean, cov, params, future)

    def forecast(
        self,
        X: Any,
        horizon: int,
        lengths: Sequence[int] | None = None,
        *,
        inputs: Any = None,
        future_inputs: Any = None,
    ) -> Forecast:
        """Predictive means (horizon, p) and covariances (horizon, p, p) of y after each sequence's end.

        From the filtered state at the end, x_T+h|T = A x_T+h-1|T + B u_T+h and
        P_T+h|T = A P_T+h-1|T A' + Q; then y_T+h has mean C x_T+h|T + D u_T+h and covariance
        C P_T+h|T C' + R. ``future_inputs`` (horizon, m), or a list of them (one per sequence),
        are required when ``input_dim > 0``. Returns a :class:`~modeshift.models.base.Forecast`
        (without mode probabilities), which unpacks as ``means, covariances``; lists for
        several sequences.
        """
        params = self._check_parameters()
        horizon = int(horizon)
        seqs = self._sequences(X, lengths, inputs, params["C"].shape[0])
        _, fm, fc, _, _ = self._run_filter(seqs, params)
        futures = check_future_inputs(
            future_inputs, horizon, seqs.n_sequences, self.input_dim, "this LinearGaussianSSM"
        )
        ends = seqs.offsets[1:] - 1
        return Forecast.of_sequences(
            [predictive_moments(fm[end], fc[end], params, future) for end, future in zip(ends, futures)]
        )

    def sample(
        self,
        n_steps: int,
        n_sequences: int = 1,
        random_state: int | np.random.Generator | None = None,
        *,
        inputs: Any = None,
    ) -> tuple[PerStep, PerStep]:
        """Simulate ``n_sequences`` sequences of ``n_steps`` steps: observations (n_steps, p) and
        states (n_steps, n), or lists of them for several sequences. A ``diffuse`` component has
        no distribution to draw from: it starts at its ``initial_state_mean_``.

        ``inputs`` (n_steps, m), one array for every sequence or a list with one per
        sequence, are required when ``input_dim > 0``.
        """
        params = self._check_parameters()
        T, n = int(n_steps), self.state_dim
        every = check_future_inputs(
            inputs, T, int(n_sequences), self.input_dim, "this LinearGaussianSSM", name="inputs"
        )
        rng = np.random.default_rng(random_state)
        A, Q, C, R, B, D = (params[k] for k in "AQCRBD")
        mask = self._diffuse_mask()
        if mask is not None:  # a diffuse component starts at its initial_state_mean_
            params["P0"] = np.where(mask[:, None] | mask[None, :], 0.0, params["P0"])
        LQ, LR, LP = (lds_mle.cholesky_factor(params[k]) for k in ("Q", "R", "P0"))
        draws = []
        for u in every:
            state_noise, obs_noise = rng.standard_normal((T, n)), rng.standard_normal((T, C.shape[0]))
            states = np.empty((T, n))
            x = params["m0"] + LP @ state_noise[0]
            for t in range(T):
                if t > 0:
                    x = A @ x + B @ u[t] + LQ @ state_noise[t]
                states[t] = x
            draws.append((states @ C.T + u @ D.T + obs_noise @ LR.T, states))
        return simulated(draws)

    # ------------------------------------------------------------------ fitting
    def fit(
        self, X: Any, lengths: Sequence[int] | None = None, *, inputs: Any = None, **columns: Any
    ) -> LinearGaussianSSM:
        """Maximum-likelihood estimates: EM (:func:`modeshift.models.em.run`), then, with
        ``method="mle"``, L-BFGS-B on the exact log-likelihood; returns ``self``.

        ``X`` is any form :func:`~modeshift.data.as_sequences` accepts (``columns`` name a
        data frame's ``id_column``, ``time_column``, ...).
        """
        self._start_fit()
        return self._fit_em(self._em_data(X, lengths, inputs=inputs, **columns))

    def _start_fit(self) -> None:
        held = self.__dict__.get("_held", {})  # values set by hand of fixed parameters: settings, not estimates
        super()._start_fit()
        for name in self._fixed() & held.keys():
            self.__dict__.setdefault(name, held[name])

    def _em_data(
        self, X: Any, lengths: Sequence[int] | None = None, *, inputs: Any = None, **columns: Any
    ) -> Sequences:
        """What EM reads, from ``fit``'s arguments (or one shard of them: :mod:`modeshift.distributed`)."""
        return self._sequences(as_sequences(X, lengths, **columns), None, inputs, self._obs_dim()).require_observed()

    def _fit_em(self, seqs: Sequences, over: em.Over | None = None) -> LinearGaussianSSM:
        """EM, then the polish, from the starting parameters; ``over`` runs every pass over the data
        on shards held elsewhere, ``seqs`` being then a sample of them to start from."""
        fixed = self._fixed()
        self.__dict__["_held"] = {name: self.__dict__[name] for name in fixed if self.__dict__.get(name) is not None}
        self.__dict__["_fixed_now"] = fixed
        em.run(self, seqs, label=f"LinearGaussianSSM n={self.state_dim}", over=over)
        over = over or em.in_memory(seqs)
        if self.method == "mle" and self.n_iter > 0 and self.n_iter_polish > 0:
            self._polish(over, fixed)
        self.log_likelihood_ = float(over(_log_likelihood, self))
        self._finish_fit(seqs)
        return self

    def partial_fit(
        self,
        X: Any,
        lengths: Sequence[int] | None = None,
        *,
        inputs: Any = None,
        step_exponent: float = online_em.DEFAULT_EXPONENT,
    ) -> LinearGaussianSSM:
        """Learn from one more chunk of a stream by online EM (:mod:`modeshift.models.online_em`):
        the running expected statistics of the dynamics and the observations move towards the
        chunk's by gamma_n = n^-step_exponent, then the M-step of EM. The initial state's law
        stays at its starting value (one draw per stream says little about it); no quasi-Newton
        polish. Starts from the current parameters, else from a batch :meth:`fit` of the first chunk."""
        self._check_params()
        if self._diffuse_mask() is not None:
            raise NotImplementedError("online EM of a model with an exact diffuse start is not implemented")
        online_em.step_size(1, step_exponent)  # checks the exponent
        seqs = self._sequences(as_sequences(X, lengths), None, inputs, self._obs_dim()).require_observed()
        online_em.online_em_step(self, seqs, seqs.n_steps, step_exponent)
        self._finish_fit()
        return self

    def _online_start(self, seqs: Sequences) -> None:
        if any(self.__dict__.get(name) is None for name in self.parameter_names):
            self.fit(seqs)  # EM crawls away from a variance near 0, where the PCA start can put R
        self.__dict__["_fixed_now"] = self._fixed() | {"initial_state_mean_", "initial_state_covariance_"}

    def _online_statistics(self, seqs: Sequences) -> tuple[float, dict]:
        log_lik, stats = self._expected_statistics(seqs, self._check_parameters())
        return log_lik, {"dynamics": stats["dynamics"], "observation": stats["observation"]}

    def _online_maximize(self, seqs: Sequences, stats: dict) -> None:
        params = self._parameter_arrays()  # by _online_statistics
        self._set(self._maximize({**stats, "initial": (None, None)}, params, self.__dict__["_fixed_now"]))

    def _online_parameters(self) -> dict[str, np.ndarray]:
        return {name: np.array(self.__dict__[name]) for name in self.parameter_names}

    def _polish(self, over: em.Over, fixed: frozenset[str]) -> None:
        """Climb the exact log-likelihood, summed ``over`` the data, from EM's estimate (:func:`lds_mle.polish`)."""
        start = self._check_parameters()
        free = [_PARAMETERS[name] for name in self.parameter_names if name not in fixed]
        diagonal = frozenset({"R"} if self.diagonal_observation_cov else ())
        layout = lds_mle.Parameterisation(start, free, diagonal)
        if layout.size == 0:
            return

        def value_and_gradient(params: dict[str, np.ndarray]) -> tuple[float, dict[str, np.ndarray]]:
            return over(functools.partial(_score, params=params), self)

        params, capped, gradient = lds_mle.polish(value_and_gradient, start, layout, self.n_iter_polish)
        self._set(params)
        at_maximum = gradient < lds_mle.GTOL
        self.converged_ = bool(self.converged_ and at_maximum)
        if capped and not at_maximum:
            warnings.warn(
                f"{self!r} stopped its quasi-Newton polish at its cap of n_iter_polish={self.n_iter_polish} "
                f"iterations before converging (largest projected gradient entry {gradient:.3g}); "
                "raise n_iter_polish to go on",
                em.ConvergenceWarning,
                stacklevel=3,
            )

    def _em_initialize(self, seqs: Sequences, rng: np.random.Generator, restart: int) -> None:
        """PCA starting values for every parameter not already set."""
        if all(self.__dict__.get(name) is not None for name in self.parameter_names):
            return
        n, m = self.state_dim, self.input_dim
        Y = seqs.values.copy()
        p = Y.shape[1]
        column_means = np.nanmean(Y, axis=0)
        holes = np.isnan(Y)
        Y[holes] = np.take(column_means, np.nonzero(holes)[1])
        U = seqs.inputs if m > 0 else np.zeros((len(Y), 0))
        D = np.zeros((p, m))
        if m > 0:
            D = np.linalg.lstsq(U, Y, rcond=None)[0].T
        residual = Y - U @ D.T
        scatter = residual.T @ residual / len(residual)
        eigenvalues, eigenvectors = np.linalg.eigh(scatter)
        order = np.argsort(eigenvalues)[::-1]
        C = eigenvectors[:, order[: min(n, p)]]
        if n > p:
            C = np.hstack([C, 0.1 * rng.standard_normal((p, n - p))])
        states = np.linalg.lstsq(C, residual.T, rcond=None)[0].T
        total_var = max(float(np.trace(scatter)) / p, 1e-12)
        noise = residual - states @ C.T
        R = np.diag(np.maximum(noise.var(axis=0), 1e-2 * total_var))
        rows = seqs.linked_rows
        if rows.size > n + m:
            Z = np.hstack([states[rows - 1], U[rows]])
            W = np.linalg.lstsq(Z, states[rows], rcond=None)[0].T
            A, B = W[:, :n], W[:, n:]
            eig = np.abs(np.linalg.eigvals(A))
            if eig.max() >= 1.0:
                A = A * (0.99 / eig.max())
            innov = states[rows] - Z @ np.hstack([A, B]).T
            Q = np.cov(innov.T, bias=True).reshape(n, n)
        else:
            A, B = 0.9 * np.eye(n), np.zeros((n, m))
            Q = np.cov(states.T, bias=True).reshape(n, n)
        Q = ensure_positive_definite(0.5 * (Q + Q.T) + 1e-6 * total_var * np.eye(n))
        m0 = states[seqs.starts].mean(axis=0)
        state_var = float(np.trace(np.atleast_2d(np.cov(states.T, bias=True)))) / n
        P0 = max(state_var, 1e-6 * total_var) * np.eye(n)
        starting = {"A": A, "Q": Q, "C": C, "R": R, "m0": m0, "P0": P0, "B": B, "D": D}
        for name in self.parameter_names:
            if self.__dict__.get(name) is None:
                setattr(self, name, starting[_PARAMETERS[name]])

    def _e_step(self, seqs: Sequences, workspace: dict[str, Any]) -> tuple[float, dict]:
        return self._expected_statistics(seqs, self._check_parameters())

    def _m_step(self, seqs: Sequences, stats: dict) -> None:
        self._set(self._maximize(stats, self._parameter_arrays(), self.__dict__["_fixed_now"]))

    def _em_snapshot(self) -> dict[str, np.ndarray]:
        return {name: np.array(self.__dict__[name]) for name in self.parameter_names}

    def _em_restore(self, snapshot: dict[str, np.ndarray]) -> None:
        self.__dict__.update(snapshot)

    def _set(self, params: dict[str, np.ndarray]) -> None:
        for name in self.parameter_names:
            setattr(self, name, np.array(params[_PARAMETERS[name]]))

    def _expected_statistics(self, seqs: Sequences, params: dict[str, np.ndarray]) -> tuple[float, dict]:
        """E-step: log p(Y) and the expected sufficient statistics of (x, y)."""
        log_lik, means, covs, cross = self._smooth(seqs, params)
        n, m = self.state_dim, self.input_dim
        Y = seqs.values
        U = seqs.inputs if m > 0 else np.zeros((len(Y), 0))
        starts = seqs.starts
        ends = seqs.offsets[1:] - 1

        def second_moment(rows: Any = slice(None)) -> np.ndarray:
            """sum over rows of E[x_t x_t^T]."""
            return covs[rows].sum(axis=0) + means[rows].T @ means[rows]

        # dynamics: regress x_t on z_t = [x_t-1; u_t] over steps with a predecessor;
        # x_t-1 runs over every step but each sequence's last, x_t over every step but its first
        t = seqs.linked_rows
        x_prev, x_now, u_now = means[t - 1], means[t], U[t]
        Szz = np.zeros((n + m, n + m))
        Szz[:n, :n] = second_moment() - second_moment(ends)
        Szz[:n, n:] = x_prev.T @ u_now
        Szz[n:, :n] = Szz[:n, n:].T
        Szz[n:, n:] = u_now.T @ u_now
        Sxz = np.zeros((n, n + m))
        Sxz[:, :n] = cross.sum(axis=0) + x_now.T @ x_prev  # cross-covariances are 0 at sequence starts
        Sxz[:, n:] = x_now.T @ u_now
        Sxx = second_moment() - second_moment(starts)
        dynamics = (Sxx, Sxz, Szz, len(t))

        # observations: regress y_t on z_t = [x_t; u_t], over steps with any observed entry
        observation = observation_statistics(Y, means, covs, U, params["C"], params["D"], params["R"])

        initial = (Moments.of(means[starts]), covs[starts].sum(axis=0))
        return log_lik, {"dynamics": dynamics, "observation": observation, "initial": initial}

    def _maximize(self, stats: dict, params: dict[str, np.ndarray], fixed: frozenset[str]) -> dict[str, np.ndarray]:
        """M-step: closed-form updates of the parameters not held fixed."""
        n = self.state_dim
        new = dict(params)
        equations = (
            ("dynamics", "A", "B", "Q", "full"),
            ("observation", "C", "D", "R", "diag" if self.diagonal_observation_cov else "full"),
        )
        names = {key: name for name, key in _PARAMETERS.items()}
        for key, matrix, inputs, noise, structure in equations:
            yy, yz, zz, count = stats[key]
            if count == 0:
                continue
            block = LinearDynamics(1, noise=structure)
            block.weights = np.hstack([params[matrix], params[inputs]])[None]
            block.covariances = params[noise][None]
            fixed_columns = np.r_[np.full(n, names[matrix] in fixed), np.full(self.input_dim, names[inputs] in fixed)]
            block.m_step(
                Statistics(yy=yy[None], yz=yz[None], zz=zz[None], count=np.array([count])),
                fixed_columns=fixed_columns,
                fix_covariances=names[noise] in fixed,
            )
            (W,), (new[noise],) = block.weights, block.covariances
            new[matrix], new[inputs] = W[:, :n], W[:, n:]
        first_means, first_covs = stats["initial"]  # moments of E[x_0], sum of Cov[x_0] over sequences
        proper = np.ones(n, dtype=bool) if self._diffuse_mask() is None else ~self._diffuse_mask()
        if "initial_state_mean_" not in fixed:  # the diffuse components have no prior to learn
            new["m0"] = np.where(proper, first_means.mean, params["m0"])
        if "initial_state_covariance_" not in fixed and proper.any():
            offset = first_means.mean - new["m0"]
            P0 = (first_covs + first_means.scatter) / first_means.count + np.outer(offset, offset)
            block = np.ix_(proper, proper)
            new["P0"] = np.array(params["P0"], dtype=float)
            new["P0"][block] = ensure_positive_definite(P0[block])
        return new

    # ----------------------------------------------------------- model selection
    @property
    def n_parameters(self) -> int:
        """Number of free parameters: the entries of A, C, m0 (and B, D), the distinct entries of
        the symmetric Q, P0 and R (p of them for a diagonal R); those held ``fixed`` are not
        counted. The n^2 of the state-basis freedom x -> T x is not subtracted."""
        params = self._check_parameters()
        n, m, p = self.state_dim, self.input_dim, params["C"].shape[0]
        sizes = {
            "dynamics_matrix_": n * n,
            "transition_covariance_": n * (n + 1) // 2,
            "observation_matrix_": p * n,
            "observation_covariance_": p if self.diagonal_observation_cov else p * (p + 1) // 2,
            "initial_state_mean_": n,
            "initial_state_covariance_": n * (n + 1) // 2,
            "control_matrix_": n * m,
            "feedthrough_matrix_": p * m,
        }
        fixed = self._fixed()
        return sum(sizes[name] for name in self.parameter_names if name not in fixed)

    def aic(self, X: Any, lengths: Sequence[int] | None = None, *, inputs: Any = None) -> float:
        """Akaike information criterion, -2 log-likelihood + 2 n_parameters."""
        return -2.0 * self.score(X, lengths, inputs=inputs) + 2.0 * self.n_parameters

    def bic(self, X: Any, lengths: Sequence[int] | None = None, *, inputs: Any = None) -> float:
        """Bayesian information criterion, -2 log-likelihood + n_parameters log(n_steps)."""
        seqs = as_sequences(X, lengths)
        return -2.0 * self.score(seqs, inputs=inputs) + self.n_parameters * np.log(seqs.n_steps)

    # ------------------------------------------------------------ persistence
    def _learned_arrays(self) -> dict[str, np.ndarray]:
        self._check_parameters()
        return {name: np.asarray(self.__dict__[name], dtype=float) for name in self.parameter_names}

    def _learned_attributes(self) -> dict[str, Any]:
        return {name: self.__dict__[name] for name in _FIT_RESULTS if name in self.__dict__}

    def _restore(self, arrays: dict[str, np.ndarray], attributes: dict[str, Any]) -> None:
        """Read the parameters and the fit's record (also under their old names); parameters
        held ``fixed`` count as set by hand."""
        missing = [name for name in self.parameter_names if name not in arrays]
        if missing:
            raise ValueError(f"the model file lacks the parameter array(s) {missing}")
        for name in self.parameter_names:
            setattr(self, name, np.array(arrays[name]))
        for name, value in attributes.items():
            setattr(self, name, value)
        self._check_parameters()
        self.__dict__["_held"] = {name: self.__dict__[name] for name in self._fixed()}

    def as_state_space_model(self, inputs: Any = None) -> LinearGaussian:
        """This model (fitted, or set by hand) as a model for the particle methods of :mod:`modeshift.smc`:
        x_0 ~ N(m0, P0), x_t = A x_t-1 + B u_t + N(0, Q), y_t = C x_t + D u_t + N(0, R), with
        ``inputs`` (n_steps, input_dim) when ``input_dim > 0``. The exact Kalman answers then
        check a particle method (and a particle method's variants run on a known model)."""
        from modeshift.smc.adapters import LinearGaussian  # smc builds on the models: imported when asked

        return LinearGaussian(self, inputs)


def _log_likelihood(model: LinearGaussianSSM, seqs: Sequences) -> float:
    """log p(Y) of ``seqs`` under the model's parameters (one shard's part of the total)."""
    return float(model._run_filter(seqs, model._check_parameters())[0].sum())


def _score(model: LinearGaussianSSM, seqs: Sequences, params: dict[str, np.ndarray]) -> tuple[float, dict]:
    """log p(Y) of ``seqs`` and its gradient at ``params`` (one shard's part of the total)."""
    return model._score(seqs, params)
