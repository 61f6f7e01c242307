"""Multinomial-logit transitions: move probabilities driven by per-step covariates.

At step t a chain in mode i moves to mode j with probability

    p(z_t = j | z_t-1 = i, x_t) = exp(eta_t[i, j]) / sum_m exp(eta_t[i, m]),

the logits eta linear in coefficients and in the covariates x_t of the step moved into:
row t of the covariates drives the move z_t-1 -> z_t, and a sequence's first row moves
nothing (Markov switching reads it for its stationary start, as statsmodels does).
Two forms of the logits:

* **per source** (statsmodels' ``exog_tvtp``): eta_t[i, j] = x_t . B[i, j] for j < K-1 and
  eta_t[i, K-1] = 0, coefficients B (K, K-1, C) with the last mode the reference. Every
  source mode has its own multinomial logistic regression: a slope per (source, destination).
  A constant column in x gives each pair its baseline log-odds. Moves that cannot happen
  (``allowed`` False: a semi-Markov chain's switches never stay) get probability 0, the others
  share the row; a row that cannot reach K-1 takes its last allowed destination as reference.
  The coefficients of excluded moves and of such a reference stay 0.
* **shared**: eta_t[i, j] = r_ij + w_j . u_t, biases r (K, K) and one slope per destination
  w (K, F) shared by every source: the log-odds of j against m move by (w_j - w_m) . u_t from
  any source. It is over-parameterised (a common shift of a row of r, or of every w_j, changes
  nothing), so it needs the L2 prior to pick one point.

EM's M-step. With time-varying matrices, forward-backward keeps the pair posteriors
xi_t[i, j] = p(z_t-1 = i, z_t = j | y) of every step, (T, K, K) (the regression's weights
differ step by step, so no sum over steps suffices; the kernels return them with zeros at
sequence starts). The transitions' part of the expected complete-data log-likelihood,

    Q = sum_t sum_ij xi_t[i, j] log p_t[i, j]  -  ridge / 2 |coefficients|^2,

is concave, with gradient sum_t (xi_t[i, j] - n_t[i] p_t[i, j]) x_t, n_t[i] = sum_j xi_t[i, j],
in the per-source form. :func:`fit_per_source` maximises it by Newton's method, one system
of (K-1) C unknowns per source, each step halved until Q rises; :func:`fit_shared` too, on all
coefficients at once (the shared slopes tie the sources together), its gradient and Hessian
those of the per-source form mapped through the shared parameters (:func:`shared_map`).
Q, its gradient and its Hessian are sums over the steps, so both read the rows through
:data:`Rows`: the sum of a function over blocks of them, the rows in hand (:func:`in_hand`)
or every shard's where it lies on a cluster (:mod:`modeshift.distributed`), whence only sums
reach the optimiser.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> x = np.c_[np.ones(5000), rng.normal(size=5000)]
>>> truth = np.array([[[2.0, 1.0]], [[-1.0, -2.0]]])  # (K=2, K-1, C)
>>> matrices = per_source_matrices(truth, x)
>>> path = [0]
>>> for t in range(1, 5000):
...     path.append(int(rng.random() > matrices[t, path[-1], 0]))
>>> pairs = np.zeros((5000, 2, 2))
>>> pairs[np.arange(1, 5000), path[:-1], path[1:]] = 1.0
>>> fit_per_source(pairs, x, np.zeros((2, 1, 2))).round(1)  # close to the truth
array([[[ 2.1,  1. ]],
<BLANKLINE>
       [[-1. , -2. ]]])
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.special import log_softmax

__all__ = [
    "expected_log_probability",
    "Rows",
    "fit_per_source",
    "fit_shared",
    "frozen_coefficients",
    "in_hand",
    "maximise_per_source",
    "newton_solve",
    "newton_terms",
    "per_source_gradient",
    "per_source_logits",
    "per_source_matrices",
    "shared_logits",
    "shared_map",
]

#: ``rows(function)``: the sum over the blocks of per-step rows (in hand: one; on a cluster: every
#: shard's, where it lies) of ``function(pairs, covariates)``, for an M-step that needs every step
Rows = Callable[[Callable[..., Any]], Any]


# ------------------------------------------------------------------- the logits
def per_source_logits(coef: np.ndarray, covariates: np.ndarray, allowed: np.ndarray | None = None) -> np.ndarray:
    """(n, K, K) logits eta_t[i, j] = x_t . coef[i, j], the last column 0, for coef (K, K-1, C), x (n, C);
    -inf where ``allowed`` (K, K) is False."""
    k = coef.shape[0]
    logits = np.zeros((len(covariates), k, k))
    logits[:, :, :-1] = np.einsum("tc,ijc->tij", covariates, coef)
    if allowed is not None:
        logits[:, ~allowed] = -np.inf
    return logits


def per_source_matrices(coef: np.ndarray, covariates: np.ndarray, allowed: np.ndarray | None = None) -> np.ndarray:
    """(n, K, K) row-stochastic matrices, entry t = p(z_t | z_t-1, x_t), in the per-source form."""
    logits = per_source_logits(coef, covariates, allowed)
    weights = np.exp(logits - logits.max(axis=2, keepdims=True))  # scipy's softmax, without its dispatch
    return weights / weights.sum(axis=2, keepdims=True)


def shared_logits(biases: np.ndarray, weights: np.ndarray, features: np.ndarray) -> np.ndarray:
    """(n, K, K) logits eta_t[i, j] = r_ij + w_j . u_t for biases (K, K), weights (K, F), u (n, F)."""
    return biases[None] + (features @ weights.T)[:, None, :]


# ------------------------------------------------------------ Q and its gradient
def expected_log_probability(pairs: np.ndarray, log_matrices: np.ndarray) -> float:
    """sum_t sum_ij xi_t[i, j] log p_t[i, j] for pair posteriors and log matrices (n, K, K);
    a move with no posterior mass adds nothing, even if impossible."""
    with np.errstate(invalid="ignore"):
        return float(np.where(pairs > 0, pairs * log_matrices, 0.0).sum())


def per_source_gradient(pairs: np.ndarray, matrices: np.ndarray, covariates: np.ndarray) -> np.ndarray:
    """Gradient (K, K-1, C) of :func:`expected_log_probability` in the per-source coefficients:
    d log p_t[i, j] / d B[i, m] = (1[j = m] - p_t[i, m]) x_t."""
    leaving = pairs.sum(axis=2, keepdims=True)
    residual = pairs[:, :, :-1] - matrices[:, :, :-1] * leaving  # (n, K, K-1)
    return np.einsum("tim,tc->imc", residual, covariates)


# ---------------------------------------------------------------------- M-steps
def frozen_coefficients(allowed: np.ndarray) -> np.ndarray:
    """(K, K-1) True where a per-source coefficient stays 0 under ``allowed`` (K, K): an excluded
    destination, and the reference of a row that cannot reach K-1 (its last allowed destination)."""
    frozen = ~allowed[:, :-1]
    for i in np.flatnonzero(~allowed[:, -1]):
        destinations = np.flatnonzero(allowed[i, :-1])
        if destinations.size:
            frozen[i, destinations[-1]] = True
    return frozen


def newton_terms(pairs: np.ndarray, matrices: np.ndarray, covariates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The gradient (K, (K-1) C) and minus the Hessian (K, (K-1) C, (K-1) C) of
    sum_t sum_ij xi_t[i, j] log p_t[i, j] in the per-source coefficients, one system per source: sums
    over the steps, so over blocks of them (:func:`newton_solve` takes their sum). The Hessian of
    source i is -sum_t n_t[i] (diag(p) - p p') (x) x_t x_t' (p = p_t[i, :K-1]); its negative is
    returned, positive semi-definite."""
    k, n_cov = matrices.shape[1], covariates.shape[1]
    size = (k - 1) * n_cov
    p = matrices[:, :, :-1]
    leaving = pairs.sum(axis=2)  # (n, K)
    residual = pairs[:, :, :-1] - p * leaving[:, :, None]
    gradient = np.einsum("tia,tc->iac", residual, covariates).reshape(k, size)
    curvature = leaving[:, :, None, None] * (p[:, :, :, None] * np.eye(k - 1) - p[:, :, :, None] * p[:, :, None, :])
    hessian = np.einsum("tiab,tc,td->iacbd", curvature, covariates, covariates).reshape(k, size, size)
    return gradient, hessian


def newton_solve(
    gradient: np.ndarray,
    hessian: np.ndarray,
    coef: np.ndarray | None = None,
    ridge: float = 0.0,
    allowed: np.ndarray | None = None,
) -> np.ndarray:
    """The Newton step (K, K-1, C) from :func:`newton_terms` summed over the steps, on Q - ridge / 2 |coef|^2
    (``coef`` (K, K-1, C) the current values); the K systems are solved as one batch. With ``allowed``,
    the :func:`frozen_coefficients` do not move."""
    k, size = gradient.shape
    n_cov = size // (k - 1)
    gradient, hessian = gradient.copy(), hessian.copy()
    trace = np.trace(hessian, axis1=1, axis2=2)
    hessian += 1e-8 * np.maximum(trace, 1.0)[:, None, None] * np.eye(size)  # a regime never left
    if ridge:
        gradient -= ridge * coef.reshape(k, size)
        hessian += ridge * np.eye(size)
    if allowed is not None:
        frozen = np.repeat(frozen_coefficients(allowed), n_cov, axis=1)  # (K, (K-1) C), as the systems' unknowns
        gradient[frozen] = 0.0
        hessian[frozen[:, :, None] | frozen[:, None, :]] = 0.0
        hessian += frozen[:, :, None] * np.eye(size)
    return np.linalg.solve(hessian, gradient[:, :, None])[:, :, 0].reshape(k, k - 1, n_cov)


def in_hand(*arrays: np.ndarray) -> Rows:
    """The :data:`Rows` of arrays held here: ``rows(function)`` is ``function(*arrays)``."""
    return lambda function: function(*arrays)


def fit_per_source(
    pairs: np.ndarray,
    covariates: np.ndarray,
    coef: np.ndarray,
    ridge: float = 0.0,
    max_iter: int = 50,
    allowed: np.ndarray | None = None,
) -> np.ndarray:
    """The per-source coefficients that maximise Q (see the module) from ``coef``, for pair
    posteriors and covariates in hand: :func:`maximise_per_source` of them."""
    return maximise_per_source(in_hand(pairs, covariates), coef, ridge, max_iter, allowed)


def maximise_per_source(
    rows: Rows, coef: np.ndarray, ridge: float = 0.0, max_iter: int = 50, allowed: np.ndarray | None = None
) -> np.ndarray:
    """The per-source coefficients that maximise Q - ridge / 2 |coef|^2 from ``coef``, the pair
    posteriors and covariates where ``rows`` holds them: :func:`_newton_ascent` with the K systems
    of :func:`newton_solve`. With ``allowed`` (K, K), the moves it excludes have probability 0
    (the pairs must put no mass there)."""

    def evaluate(values: np.ndarray) -> tuple[float, tuple[np.ndarray, np.ndarray]]:
        log_probability, gradient, hessian = rows(functools.partial(_per_source_terms, coef=values, allowed=allowed))
        return log_probability - 0.5 * ridge * float(np.sum(values**2)), (gradient, hessian)

    def step(values: np.ndarray, terms: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, float]:
        gradient, hessian = terms
        direction = newton_solve(gradient, hessian, values, ridge, allowed)
        penalised = gradient - ridge * values.reshape(gradient.shape)
        return direction, 0.5 * float(np.sum(direction.reshape(gradient.shape) * penalised))

    if coef.size == 0:  # one mode: nothing to fit
        return coef
    return _newton_ascent(evaluate, step, coef, max_iter)


def _newton_ascent(
    evaluate: Callable[[np.ndarray], tuple[float, Any]],
    step: Callable[[np.ndarray, Any], tuple[np.ndarray, float]],
    x: np.ndarray,
    max_iter: int,
) -> np.ndarray:
    """The maximiser of a concave objective from ``x`` by Newton steps, ``evaluate(x)`` its value at
    x and the ``terms`` (gradient and Hessian) from which ``step(x, terms)`` makes the Newton step
    and the gain it predicts (half the Newton decrement g' H^-1 g).

    A step is halved until the objective rises, while the predicted gain is over :data:`_CLOSE`
    of |value|; from there on (the quadratic region, where a comparison of values sees only
    round-off) steps are taken as they come, until the predicted gain is under :data:`_DONE` of
    |value|, whose step is taken last. So the result is the maximiser to round-off, whatever the
    order of the sums (the rows in hand or on the shards of a cluster agree to 1e-10), and the
    objective never falls by more than round-off. Each point is evaluated once, terms included, so
    a step accepted costs one call of ``evaluate`` (one pass over a cluster's shards), as does each
    shortened step the halving tries.
    """
    value, terms = evaluate(x)
    for _ in range(max_iter):
        direction, predicted = step(x, terms)
        scale = max(abs(value), 1.0)
        if predicted <= _DONE * scale:
            return x + direction
        if predicted <= _CLOSE * scale:
            x = x + direction
            value, terms = evaluate(x)
            continue
        for fraction in 0.5 ** np.arange(30):
            candidate = x + fraction * direction
            candidate_value, candidate_terms = evaluate(candidate)
            if candidate_value >= value:
                break
        else:
            return x
        x, value, terms = candidate, candidate_value, candidate_terms
    return x


_CLOSE = 1e-8  # of |value|: a Newton step predicted to gain less is in the quadratic region
_DONE = 1e-14  # of |value|: a Newton step predicted to gain less is the last


def _per_source_log_matrices(covariates: np.ndarray, coef: np.ndarray, allowed: np.ndarray | None) -> np.ndarray:
    with np.errstate(invalid="ignore"):  # a row of excluded moves only: no law, and no pairs either
        return log_softmax(per_source_logits(coef, covariates, allowed), axis=2)


def _per_source_terms(
    pairs: np.ndarray, covariates: np.ndarray, coef: np.ndarray, allowed: np.ndarray | None
) -> tuple[float, np.ndarray, np.ndarray]:
    """One block's part of Q at ``coef``, and of its gradient and Hessian (:func:`newton_terms`)."""
    log_matrices = _per_source_log_matrices(covariates, coef, allowed)
    return (expected_log_probability(pairs, log_matrices), *newton_terms(pairs, np.exp(log_matrices), covariates))


def shared_map(n_states: int, n_features: int) -> np.ndarray:
    """The linear map A (K, (K-1)(1+F), K K + K F) from the shared form's parameters
    theta = (biases r (K, K), weights w (K, F)) flattened to the per-source coefficients of the same
    logits, coef[i] = A[i] theta: the log-odds against the last mode, whose baseline is
    coef[i, j, 0] = r_ij - r_i,K-1 and slopes coef[i, j, 1:] = w_j - w_K-1, with covariates (1, u)."""
    k, f = n_states, n_features
    unit = np.eye(k * k + k * f)
    biases, weights = unit[: k * k].reshape(k, k, -1), unit[k * k :].reshape(k, f, -1)
    a = np.empty((k, k - 1, 1 + f, len(unit)))
    a[:, :, 0] = biases[:, :-1] - biases[:, -1:]
    a[:, :, 1:] = weights[:-1] - weights[-1:]
    return a.reshape(k, (k - 1) * (1 + f), len(unit))


def fit_shared(
    rows: Rows,
    biases: np.ndarray,
    weights: np.ndarray,
    penalty: float,
    free: tuple[bool, bool] = (True, True),
    max_iter: int = 100,
) -> tuple[np.ndarray, np.ndarray]:
    """The shared-form biases and weights that maximise Q - penalty / 2 |theta|^2, ``penalty`` > 0
    (a weighted multinomial logistic regression of the pair posteriors on the inputs; ``rows``
    as :func:`maximise_per_source` reads them, covariates (1, u)), from the given values; ``free``
    says whether the biases and the weights may move.

    Newton's method (:func:`_newton_ascent`) through the per-source form: Q depends on theta only
    through coef = A theta (:func:`shared_map`), so its gradient and minus its Hessian are A' g and
    A' blockdiag(H_i) A from the per-source ones (:func:`newton_terms`, covariates (1, u)), and the
    penalty's curvature makes the system positive definite (A is not one to one). The fixed part of
    theta keeps its values: the free part solves its own block of the system."""
    k, f = weights.shape
    a = shared_map(k, f)
    free_mask = np.r_[np.full(k * k, free[0]), np.full(k * f, free[1])]
    free_map, prior = a[:, :, free_mask], penalty * np.eye(free_mask.sum())  # the prior's curvature

    def evaluate(theta: np.ndarray) -> tuple[float, tuple[np.ndarray, np.ndarray]]:
        coef = (a @ theta).reshape(k, k - 1, 1 + f)
        log_probability, gradient, hessian = rows(functools.partial(_per_source_terms, coef=coef, allowed=None))
        return log_probability - 0.5 * penalty * float(theta @ theta), (gradient, hessian)

    def step(theta: np.ndarray, terms: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, float]:
        gradient = np.einsum("isp,is->p", free_map, terms[0]) - penalty * theta[free_mask]
        hessian = np.einsum("isp,ist,itq->pq", free_map, terms[1], free_map, optimize=True) + prior
        direction = np.zeros_like(theta)
        direction[free_mask] = np.linalg.solve(hessian, gradient)
        return direction, 0.5 * float(direction[free_mask] @ gradient)

    theta = _newton_ascent(evaluate, step, np.r_[biases.ravel(), weights.ravel()], max_iter)
    return theta[: k * k].reshape(k, k), theta[k * k :].reshape(k, f)
