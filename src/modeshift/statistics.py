"""Statistics: expected sufficient statistics that add up across shards of data, and the tests of
residual diagnostics (Ljung-Box, Jarque-Bera, a break in the variance)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import stats

__all__ = [
    "Kept",
    "Moments",
    "Stacked",
    "Statistics",
    "bind_rows",
    "combine",
    "holds_kept",
    "keep_rows",
    "heteroskedasticity",
    "jarque_bera",
    "ljung_box",
]


class Statistics(dict):
    """Named sufficient statistics (arrays, numbers or nested ``Statistics``).

    Statistics of disjoint batches of sequences add up to the statistics of the
    whole, so an E-step can run on shards anywhere and be reduced with ``sum``
    (field by field, by :func:`combine`).

    >>> import numpy as np
    >>> a = Statistics(counts=np.ones(2), total=1.0)
    >>> (a + a)["counts"]
    array([2., 2.])
    """

    def __add__(self, other: Any) -> Statistics:
        if isinstance(other, int) and other == 0:  # sum() starts from 0
            return self
        if not isinstance(other, Statistics) or other.keys() != self.keys():
            raise ValueError("only statistics with the same fields can be added")
        return combine(self, other)

    __radd__ = __add__


class Stacked:
    """Per-step rows that batches contribute by stacking rather than summing, for an
    M-step that must see the data itself (an iterative one, such as a logistic regression).

    >>> (Stacked(np.zeros((2, 3))) + Stacked(np.ones((1, 3)))).array.shape
    (3, 3)
    """

    def __init__(self, *blocks: np.ndarray):
        self.blocks = blocks

    def __add__(self, other: Stacked) -> Stacked:
        return Stacked(*self.blocks, *other.blocks)

    @property
    def array(self) -> np.ndarray:
        """The rows of every block, one after another: joined on first use, and kept as the one
        block (an iterative M-step reads them at every step; one block: itself, not a copy)."""
        if len(self.blocks) > 1:
            self.blocks = (np.concatenate(self.blocks),)
        return self.blocks[0]

    def __sizeof__(self) -> int:  # the rows included: what a client that receives them holds
        return object.__sizeof__(self) + sum(block.nbytes for block in self.blocks)

    def terms(self, function: Callable[..., Any], *others: Stacked) -> Any:
        """``function(rows, *other rows)``: the rows in hand, all at once (on a cluster, a :class:`Kept`
        gives the same sum over the shards where the rows lie)."""
        return function(self.array, *(other.array for other in others))


class Kept:
    """Where a :class:`Stacked` of a sharded E-step went: its rows stay in the workspace of their
    shard (:func:`keep_rows`), and the statistics that reach the client hold this stand-in, named
    by its ``path`` among them. ``terms(function, *others)`` is, as for ``Stacked``, the sum of
    ``function(rows, *other rows)``, here over the shards (one pass over them per call, by the
    ``reader`` the EM driver binds: :func:`bind_rows`)."""

    def __init__(self, path: tuple[Any, ...], reader: Callable[..., Any] | None = None):
        self.path, self.reader = path, reader

    def __add__(self, other: Kept) -> Kept:
        if other.path != self.path:
            raise ValueError(f"kept rows of {self.path} and {other.path} do not add up")
        return self

    def terms(self, function: Callable[..., Any], *others: Kept) -> Any:
        if self.reader is None:
            raise ValueError(f"the rows of {self.path} were kept on the shards but nothing reads them there")
        return self.reader(function, [self.path, *(other.path for other in others)])


def keep_rows(statistics: Any, kept: dict[tuple[Any, ...], np.ndarray]) -> Any:
    """``statistics`` with every :class:`Stacked` put in ``kept`` by its path (a tuple of keys and
    indices) and replaced by a :class:`Kept` of that path: what a shard sends instead of its rows."""

    def keep(value: Any, path: tuple[Any, ...]) -> Any:
        kept[path] = value.array
        return Kept(path)

    return _replaced(statistics, Stacked, keep)


def bind_rows(statistics: Any, reader: Callable[..., Any]) -> Any:
    """``statistics`` with every :class:`Kept` read by ``reader(function, paths)`` (the sum over the
    shards of ``function(*rows kept at paths)``)."""
    return _replaced(statistics, Kept, lambda value, path: Kept(path, reader))


def holds_kept(statistics: Any) -> bool:
    """Whether ``statistics`` hold a :class:`Kept` anywhere (rows that :func:`keep_rows` left on a shard),
    found by the walk :func:`keep_rows` and :func:`bind_rows` make."""
    paths: list[tuple[Any, ...]] = []
    _replaced(statistics, Kept, lambda value, path: paths.append(path))
    return bool(paths)


def _replaced(value: Any, kind: type, replace: Callable[[Any, tuple[Any, ...]], Any], path: tuple = ()) -> Any:
    if isinstance(value, kind):
        return replace(value, path)
    if isinstance(value, dict):
        return type(value)({key: _replaced(item, kind, replace, (*path, key)) for key, item in value.items()})
    if isinstance(value, tuple):
        return tuple(_replaced(item, kind, replace, (*path, i)) for i, item in enumerate(value))
    return value


class Moments:
    """The count, mean and scatter (sum of squared deviations from the mean) of a batch of
    vectors; batches add up by Chan, Golub & LeVeque's (1979) update, which never subtracts
    large raw moments, so a variance far smaller than the mean's square keeps its digits.

    >>> x = 1e6 + np.arange(4.0)[:, None]
    >>> total = Moments.of(x[:1]) + Moments.of(x[1:])
    >>> total.mean, total.scatter
    (array([1000001.5]), array([[5.]]))
    """

    def __init__(self, count: float, mean: np.ndarray, scatter: np.ndarray):
        self.count, self.mean, self.scatter = count, mean, scatter

    @classmethod
    def of(cls, vectors: np.ndarray) -> Moments:
        """The moments of the rows of ``vectors`` (n, d)."""
        mean = vectors.mean(axis=0)
        centred = vectors - mean
        return cls(len(vectors), mean, centred.T @ centred)

    def __add__(self, other: Moments) -> Moments:
        count = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / count)
        scatter = self.scatter + other.scatter + np.outer(delta, delta) * (self.count * other.count / count)
        return Moments(count, mean, scatter)


def combine(a: Any, b: Any) -> Any:
    """The statistics of two disjoint batches of sequences added up: dicts (:class:`Statistics`
    among them) key by key, tuples entry by entry, arrays and numbers by ``+``,
    :class:`Stacked` rows stacked, :class:`Moments` pooled. The reduction of a sharded
    E-step (:mod:`modeshift.models.em`).

    >>> combine((1.0, {"counts": np.ones(2)}), (2.0, {"counts": np.ones(2)}))
    (3.0, {'counts': array([2., 2.])})
    """
    if isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
        return type(a)({key: combine(a[key], b[key]) for key in a})
    if isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b):
        return tuple(combine(x, y) for x, y in zip(a, b))
    numeric = (int, float, np.number, np.ndarray)
    if isinstance(a, numeric) and isinstance(b, numeric) and np.shape(a) == np.shape(b):
        return a + b
    if isinstance(a, (Stacked, Kept, Moments)) and type(a) is type(b):
        return a + b
    raise TypeError(
        "statistics of shards must have the same fields, shapes and types to add up, got "
        f"{type(a).__name__} {np.shape(a)} and {type(b).__name__} {np.shape(b)}"
    )


# ------------------------------------------------------------ residual diagnostics
def _finite(residuals: Any) -> np.ndarray:
    x = np.asarray(residuals, dtype=float).ravel()
    return x[np.isfinite(x)]


def ljung_box(residuals: Any, lags: int = 10, model_df: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Ljung-Box portmanteau test of no autocorrelation up to each lag 1..``lags``.

        Q(L) = n (n + 2) sum_{k=1..L} r_k^2 / (n - k),   r_k the lag-k autocorrelation,

    referred to chi^2(L - ``model_df``) (Ljung & Box 1978). Missing values (NaN) are dropped.
    Returns the statistics and p-values, one per lag (NaN where L <= model_df).

    >>> q, p = ljung_box(np.random.default_rng(0).normal(size=500), lags=5)
    >>> q.shape, bool(p[-1] > 0.01)
    ((5,), True)
    """
    x = _finite(residuals)
    n, lags = len(x), int(lags)
    if not 1 <= lags < n:
        raise ValueError(f"lags must be an integer in [1, {n - 1}] for {n} residuals, got {lags}")
    centred = x - x.mean()
    denominator = centred @ centred
    r = np.array([centred[k:] @ centred[:-k] for k in range(1, lags + 1)]) / denominator
    k = np.arange(1, lags + 1)
    q = n * (n + 2) * np.cumsum(r**2 / (n - k))
    df = k - int(model_df)
    p = np.where(df > 0, stats.chi2.sf(q, np.maximum(df, 1)), np.nan)
    return q, p


def jarque_bera(residuals: Any) -> tuple[float, float, float, float]:
    """Jarque-Bera test of normality: JB = n/6 (S^2 + (K - 3)^2 / 4) against chi^2(2), with S and K
    the sample skewness and kurtosis (moments about the mean, divided by n). Missing values are
    dropped. Returns (JB, p-value, S, K).

    >>> jb, p, skew, kurtosis = jarque_bera(np.random.default_rng(0).normal(size=2000))
    >>> bool(p > 0.01), round(kurtosis)
    (True, 3)
    """
    x = _finite(residuals)
    n = len(x)
    if n < 3:
        raise ValueError(f"the Jarque-Bera test needs at least 3 residuals, got {n}")
    centred = x - x.mean()
    variance = np.mean(centred**2)
    skewness = float(np.mean(centred**3) / variance**1.5)
    kurtosis = float(np.mean(centred**4) / variance**2)
    statistic = n / 6.0 * (skewness**2 + (kurtosis - 3.0) ** 2 / 4.0)
    return float(statistic), float(stats.chi2.sf(statistic, 2)), skewness, kurtosis


def heteroskedasticity(residuals: Any, subset_length: int | None = None) -> tuple[float, float]:
    """Test for a break in the variance (Harvey 1990, "breakvar"): the sum of squares of the last
    h residuals over that of the first h, h = round(n / 3) by default,

        H(h) = sum_{t > n - h} v_t^2 / sum_{t <= h} v_t^2,

    referred two-sided to F(m_last, m_first) after scaling by m_first / m_last (m the observed
    residuals in each part). ``residuals`` are in time order; missing values (NaN) count for h
    but not for m. Returns (H, p-value).

    >>> h, p = heteroskedasticity(np.r_[np.ones(50), 3 * np.ones(50)] * np.random.default_rng(0).normal(size=100))
    >>> bool(h > 4), bool(p < 0.001)
    (True, True)
    """
    squares = np.asarray(residuals, dtype=float).ravel() ** 2
    h = int(np.round(len(squares) / 3)) if subset_length is None else int(subset_length)
    first, last = squares[:h], squares[-h:]
    m_first, m_last = int(np.isfinite(first).sum()), int(np.isfinite(last).sum())
    if min(m_first, m_last) < 2:
        raise ValueError(f"each third of the residuals needs 2 observed values, got {m_first} and {m_last}")
    statistic = float(np.nansum(last) / np.nansum(first))
    scaled = statistic * m_first / m_last
    tails = stats.f.cdf(scaled, m_last, m_first), stats.f.sf(scaled, m_last, m_first)
    return statistic, float(min(1.0, 2.0 * min(tails)))
