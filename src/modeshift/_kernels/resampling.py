"""Resampling for sequential Monte Carlo: which particles survive, and how many times.

Given normalised weights w (N,), a scheme returns M ancestor indices a_1..a_M such that
particle i is copied N_i = #{m : a_m = i} times with E[N_i] = M w_i. The schemes differ in
the variance of N_i (lower is better; all are unbiased):

- ``multinomial``: a_m iid from w; Var N_i = M w_i (1 - w_i).
- ``stratified``: one uniform in each stratum [m/M, (m+1)/M) of the cumulative weights.
- ``systematic``: the same points shifted by a single uniform; N_i is always
  floor(M w_i) or ceil(M w_i).
- ``residual``: floor(M w_i) deterministic copies, the remaining R = M - sum floor(M w_i)
  drawn multinomially from the residuals M w_i - floor(M w_i).

Each scheme maps sorted points in [0, 1) through the inverse of the cumulative weights in
one O(N + M) sweep, so the ancestors come back sorted ascending. Randomness is passed in as
U(0, 1) variates, so a caller's ``numpy.random.Generator`` fixes the result; ``resample``
draws them for you.

Example::

    import numpy as np
    from modeshift._kernels import normalise_log_weights, effective_sample_size, resample

    rng = np.random.default_rng(0)
    log_weights = rng.normal(size=1000)
    weights, log_mean_weight = normalise_log_weights(log_weights)  # log-likelihood increment
    if effective_sample_size(weights) < 500:
        ancestors = resample("systematic", weights, rng)
"""

from __future__ import annotations

import math

import numpy as np

from modeshift._kernels.compile import kernel

__all__ = [
    "effective_sample_size",
    "multinomial",
    "normalise_log_weights",
    "particle_moments",
    "resample",
    "residual",
    "stratified",
    "systematic",
]

SCHEMES = ("multinomial", "stratified", "systematic", "residual")


def multinomial(weights: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """M = len(uniforms) ancestors drawn iid from ``weights``, sorted ascending.

    The uniforms are turned into sorted uniforms in O(M) by exponential spacings (Rényi's
    representation of uniform order statistics) instead of being sorted.
    """
    return _multinomial(_as_float(weights), _as_float(uniforms))


def stratified(weights: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """M = len(uniforms) ancestors from the points (m + uniforms[m]) / M, sorted ascending."""
    uniforms = _as_float(uniforms)
    return _inverse_cdf(_as_float(weights), uniforms, uniforms.shape[0], True)


def systematic(weights: np.ndarray, uniform: float, n_samples: int | None = None) -> np.ndarray:
    """M = ``n_samples`` (default N) ancestors from the points (m + uniform) / M, sorted ascending."""
    weights = _as_float(weights)
    n_samples = weights.shape[0] if n_samples is None else int(n_samples)
    return _inverse_cdf(weights, np.array([float(uniform)]), n_samples, True)


def residual(weights: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """M = len(uniforms) ancestors by residual resampling, sorted ascending.

    Only the first R = M - sum floor(M w_i) uniforms are used, for the multinomial part.
    """
    return _residual(_as_float(weights), _as_float(uniforms))


def resample(scheme: str, weights: np.ndarray, rng: np.random.Generator, n_samples: int | None = None) -> np.ndarray:
    """Ancestors (``n_samples``, default N) by the named scheme, with uniforms drawn from ``rng``.

    ``scheme`` is one of "multinomial", "stratified", "systematic", "residual".
    """
    weights = _as_float(weights)
    n_samples = weights.shape[0] if n_samples is None else int(n_samples)
    if scheme == "systematic":
        return systematic(weights, rng.random(), n_samples)
    if scheme == "multinomial":
        return multinomial(weights, rng.random(n_samples))
    if scheme == "stratified":
        return stratified(weights, rng.random(n_samples))
    if scheme == "residual":
        return residual(weights, rng.random(n_samples))
    raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")


def effective_sample_size(weights: np.ndarray) -> float:
    """(sum w)^2 / sum w^2, which is 1 / sum w^2 for normalised weights: N when uniform, 1 for a point mass."""
    weights = _as_float(weights)
    return float(weights.sum() ** 2 / np.dot(weights, weights))


def normalise_log_weights(log_weights: np.ndarray) -> tuple[np.ndarray, float]:
    """Normalised weights exp(lw) / sum exp(lw), and log((1/N) sum exp(lw)).

    The second value is a particle filter's log-likelihood increment. Both are computed after
    shifting by max(lw), so log weights of any magnitude work. Raises ``ValueError`` if every
    log weight is -inf, or any is NaN or +inf.
    """
    log_weights = _as_float(log_weights)
    peak = float(log_weights.max())
    if not math.isfinite(peak):
        if math.isnan(peak):
            raise ValueError("NaN log weight: every log weight must be a number or -inf")
        if peak < 0:
            raise ValueError(f"all particles have zero weight: all {log_weights.shape[0]} log weights are -inf")
        raise ValueError("infinite log weight: log weights must be below +inf")
    weights = log_weights - peak
    np.exp(weights, out=weights)  # numpy's vectorised exp; a compiled loop calls a scalar one
    total = float(weights.sum())
    weights *= 1.0 / total
    return weights, peak + math.log(total / log_weights.shape[0])


@kernel(fastmath={"nnan", "reassoc", "contract"})
def particle_moments(weights: np.ndarray, particles: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Effective sample size 1 / sum w^2, weighted mean (d,) and variance (d,) of particles (N, d)
    under normalised weights, in two passes over the particles."""
    n, d = particles.shape
    squares = 0.0
    for i in range(n):
        squares += weights[i] * weights[i]
    mean, variance = np.empty(d), np.empty(d)
    for j in range(d):  # scalar accumulators, so the sums over particles vectorise
        total = 0.0
        for i in range(n):
            total += weights[i] * particles[i, j]
        spread = 0.0
        for i in range(n):
            deviation = particles[i, j] - total
            spread += weights[i] * deviation * deviation
        mean[j], variance[j] = total, spread
    return 1.0 / squares, mean, variance


def _as_float(values) -> np.ndarray:
    return np.ascontiguousarray(values, dtype=np.float64)


@kernel
def _inverse_cdf(weights: np.ndarray, uniforms: np.ndarray, n_points: int, stratify: bool) -> np.ndarray:
    """Index i with W_{i-1} <= p_m W_N < W_i for each of the sorted points p_m, W the cumulative weights.

    The points are the sorted ``uniforms`` themselves, or with ``stratify`` (m + u_m) / n_points,
    where u_m = uniforms[m], or uniforms[0] for every m when only one is given (systematic).
    Zero-weight particles are never selected, even when rounding puts a point past W_N.
    """
    last = weights.shape[0] - 1
    while last > 0 and weights[last] <= 0.0:
        last -= 1
    total = weights.sum()
    stride = total / n_points
    shared = uniforms.shape[0] == 1
    ancestors = np.empty(n_points, dtype=np.int64)
    i = 0
    cumulative = weights[0]
    for m in range(n_points):
        uniform = uniforms[0 if shared else m]
        target = (m + uniform) * stride if stratify else uniform * total
        while i < last and target >= cumulative:
            i += 1
            cumulative += weights[i]
        ancestors[m] = i
    return ancestors


@kernel
def _sorted_uniforms(uniforms: np.ndarray) -> np.ndarray:
    """The order statistics of n iid U(0, 1) from n iid U(0, 1) in O(n).

    Rényi: U_(k) = exp(-sum_{j >= k} E_j / j) with E_j = -log(u_j) iid Exp(1).
    """
    n = uniforms.shape[0]
    points = np.empty(n)
    log_point = 0.0
    for k in range(n, 0, -1):
        log_point += np.log(uniforms[k - 1]) / k
        points[k - 1] = np.exp(log_point)
    return points


@kernel
def _multinomial(weights: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    return _inverse_cdf(weights, _sorted_uniforms(uniforms), uniforms.shape[0], np.False_)  # bool, not Literal


@kernel
def _residual(weights: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    n_samples = uniforms.shape[0]
    scale = n_samples / weights.sum()
    counts = np.empty(weights.shape[0], dtype=np.int64)
    residuals = np.empty(weights.shape[0])
    n_deterministic = 0
    for i in range(weights.shape[0]):
        expected = scale * weights[i]
        counts[i] = np.int64(np.floor(expected))
        residuals[i] = expected - counts[i]
        n_deterministic += counts[i]
    n_random = max(n_samples - n_deterministic, 0)  # rounding can push sum floor(M w) past M
    if n_random > 0:
        for i in _multinomial(residuals, uniforms[:n_random]):
            counts[i] += 1
    ancestors = np.empty(n_samples, dtype=np.int64)
    m = 0
    for i in range(weights.shape[0]):
        for _ in range(counts[i]):
            if m == n_samples:
                return ancestors
            ancestors[m] = i
            m += 1
    return ancestors
