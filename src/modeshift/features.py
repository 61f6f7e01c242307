"""Feature maps: the fixed nonlinear bases that keep a nonlinear flow a linear regression.

A mode's flow ``y_t = W_k phi(y_t-1, ..., y_t-p) + b_k + e_t`` is nonlinear in the past
but linear in the weights W_k, so its M-step stays a weighted least-squares (ridge)
regression on the features ``phi`` and EM stays exact (:class:`~modeshift.ARHMM` with
``features=``). A map is fit once to the data (it chooses its centres and scales from
them, deterministically given ``random_state``), then only transforms.

Every built-in map first standardises each input column, ``u = (x - location) / scale``
(the data's mean and standard deviation), so one set of defaults suits data in any units:

- :class:`Polynomial` — all monomials of u of total degree 1 .. ``degree`` (cross terms
  included); ``degree=1`` is the linear map u itself. The default, with ``degree=3``:
  cubic flows (Duffing, Van der Pol) and quadratic ones (Lorenz, Roessler) are exact.
  With ``degree`` > 1, u is first clamped to the data's range widened by half its width
  on each side, so a simulated path that leaves the data cannot run away to infinity.
- :class:`RadialBasis` — u followed by ``exp(-|u - c_j|^2 / (2 width^2))`` for centres c_j
  from k-means on the standardised data; ``width`` defaults to the median distance
  between centres (the median heuristic), so neighbouring bumps overlap.
- :class:`RandomFourier` — u followed by ``sqrt(2 / m) cos(omega_j . u + b_j)``, omega_j ~
  N(0, I / lengthscale^2), b_j ~ U(0, 2 pi): random features of a Gaussian kernel
  (Rahimi and Recht, 2007), drawn from ``random_state``.
- :class:`Custom` — a user's function of an (n, d) array returning an (n, m) array,
  used as given (no standardisation). It cannot be saved: a function is code, not data.

The bumps and waves of the radial and Fourier maps come after the linear terms, so a
flow close to linear needs small weights only. A map's state is plain data,
``(config, arrays)`` from :meth:`FeatureMap.state` (JSON and arrays; no pickle), and
:func:`feature_map` rebuilds it.

>>> import numpy as np
>>> x = np.random.default_rng(0).normal(size=(200, 2))
>>> phi = Polynomial(degree=2).fit(x)
>>> phi.transform(x).shape  # u1, u2, u1^2, u1 u2, u2^2
(200, 5)
>>> config, arrays = phi.state()
>>> np.allclose(feature_map(config, arrays).transform(x), phi.transform(x))
True
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from modeshift.emissions.kmeans import kmeans

__all__ = ["Custom", "FeatureMap", "Polynomial", "RadialBasis", "RandomFourier", "feature_map"]


class FeatureMap:
    """A map phi from (n, d) inputs to (n, m) features; ``fit`` then ``transform``."""

    kind: ClassVar[str]

    location_: np.ndarray | None = None
    scale_: np.ndarray | None = None

    def config(self) -> dict[str, Any]:
        """The map's options as JSON-ready values (with ``kind``)."""
        raise NotImplementedError

    def fit(self, x: Any) -> FeatureMap:
        """Choose the standardisation (and centres or frequencies) from data x (n, d); returns ``self``."""
        x = _inputs(x, None, type(self).__name__)
        if len(x) < 2:
            raise ValueError(f"{type(self).__name__}.fit needs at least 2 rows, got {len(x)}")
        self.location_ = x.mean(axis=0)
        self.scale_ = np.where(x.std(axis=0) > 1e-12, x.std(axis=0), 1.0)
        self._fit_standardised((x - self.location_) / self.scale_)
        return self

    def _fit_standardised(self, u: np.ndarray) -> None:
        """What the map learns beyond the standardisation."""

    def transform(self, x: Any) -> np.ndarray:
        """The features phi(x), shape (n, n_outputs)."""
        if self.location_ is None:
            raise ValueError(f"this {type(self).__name__} is not fit: call fit(x) first")
        x = _inputs(x, len(self.location_), type(self).__name__)
        return self._features((x - self.location_) / self.scale_)

    def _features(self, u: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    @property
    def n_inputs(self) -> int:
        return len(self.location_)

    @property
    def n_outputs(self) -> int:
        """m, the number of features (after ``fit``), from the map's options and inputs alone."""
        raise NotImplementedError

    @property
    def linear_columns(self) -> int:
        """How many leading features are the standardised inputs u themselves (0: none are)."""
        return self.n_inputs

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The fitted map as data: its config (JSON) and its arrays."""
        if self.location_ is None:
            raise ValueError(f"this {type(self).__name__} is not fit: there is no state to save")
        arrays = {name: getattr(self, name) for name in self._arrays()}
        return self.config(), arrays

    def _arrays(self) -> tuple[str, ...]:
        return ("location_", "scale_")

    def __eq__(self, other: object) -> bool:  # the options, as for any hyper-parameter
        return isinstance(other, FeatureMap) and self.config() == other.config()

    def __hash__(self) -> int:
        return hash(str(sorted(self.config().items())))

    def __repr__(self) -> str:
        options = {k: v for k, v in self.config().items() if k != "kind"}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in options.items())})"


class Polynomial(FeatureMap):
    """All monomials of the standardised inputs of total degree 1 .. ``degree``."""

    kind = "polynomial"
    bounds_: np.ndarray | None = None

    def __init__(self, degree: int = 3):
        if not isinstance(degree, (int, np.integer)) or isinstance(degree, bool) or degree < 1:
            raise ValueError(f"degree must be an integer >= 1, got {degree!r}")
        self.degree = int(degree)

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, "degree": self.degree}

    def _fit_standardised(self, u: np.ndarray) -> None:
        width = u.max(axis=0) - u.min(axis=0)
        self.bounds_ = np.stack([u.min(axis=0) - width / 2, u.max(axis=0) + width / 2])

    def _arrays(self) -> tuple[str, ...]:
        return (*super()._arrays(), "bounds_")

    @property
    def n_outputs(self) -> int:
        """The monomials of d inputs of degree 1 .. D: C(d + D, D) - 1."""
        return math.comb(self.n_inputs + self.degree, self.degree) - 1

    def _features(self, u: np.ndarray) -> np.ndarray:
        if self.degree > 1:  # beyond the data a polynomial flow would run away: hold it at the edge
            u = np.clip(u, *self.bounds_)
        monomials = {(i,): u[:, i] for i in range(u.shape[1])}
        for degree in range(2, self.degree + 1):  # each monomial is a lower one times one input
            for powers in itertools.combinations_with_replacement(range(u.shape[1]), degree):
                monomials[powers] = monomials[powers[:-1]] * u[:, powers[-1]]
        return np.stack(list(monomials.values()), axis=1)


class RadialBasis(FeatureMap):
    """The standardised inputs, then Gaussian bumps at ``n_centres`` k-means centres."""

    kind = "rbf"
    centres_: np.ndarray | None = None
    width_: float | None = None

    def __init__(self, n_centres: int = 20, width: float | None = None, random_state: int = 0):
        if not isinstance(n_centres, (int, np.integer)) or n_centres < 1:
            raise ValueError(f"n_centres must be an integer >= 1, got {n_centres!r}")
        if width is not None and not width > 0:
            raise ValueError(f"width must be positive (or None for the median heuristic), got {width!r}")
        self.n_centres, self.width, self.random_state = int(n_centres), width, int(random_state)

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, "n_centres": self.n_centres, "width": self.width, "random_state": self.random_state}

    def _fit_standardised(self, u: np.ndarray) -> None:
        distinct = np.unique(u, axis=0)
        n_centres = min(self.n_centres, len(distinct))
        self.centres_, _ = kmeans(distinct, n_centres, np.random.default_rng(self.random_state))
        if self.width is not None:
            self.width_ = float(self.width)
        else:
            gaps = np.linalg.norm(self.centres_[:, None] - self.centres_[None], axis=2)
            off_diagonal = gaps[~np.eye(n_centres, dtype=bool)]
            self.width_ = float(np.median(off_diagonal)) if off_diagonal.size else 1.0

    def _features(self, u: np.ndarray) -> np.ndarray:
        squared = np.square(u[:, None, :] - self.centres_[None]).sum(axis=2)
        return np.hstack([u, np.exp(-squared / (2.0 * self.width_**2))])

    @property
    def n_outputs(self) -> int:
        return self.n_inputs + len(self.centres_)

    def _arrays(self) -> tuple[str, ...]:
        return (*super()._arrays(), "centres_", "width_")


class RandomFourier(FeatureMap):
    """The standardised inputs, then ``n_features`` random cosine features of a Gaussian kernel."""

    kind = "fourier"
    frequencies_: np.ndarray | None = None
    phases_: np.ndarray | None = None

    def __init__(self, n_features: int = 50, lengthscale: float = 1.0, random_state: int = 0):
        if not isinstance(n_features, (int, np.integer)) or n_features < 1:
            raise ValueError(f"n_features must be an integer >= 1, got {n_features!r}")
        if not lengthscale > 0:
            raise ValueError(f"lengthscale must be positive, got {lengthscale!r}")
        self.n_features, self.lengthscale, self.random_state = int(n_features), float(lengthscale), int(random_state)

    def config(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "n_features": self.n_features,
            "lengthscale": self.lengthscale,
            "random_state": self.random_state,
        }

    def _fit_standardised(self, u: np.ndarray) -> None:
        rng = np.random.default_rng(self.random_state)
        self.frequencies_ = rng.standard_normal((u.shape[1], self.n_features)) / self.lengthscale
        self.phases_ = rng.uniform(0.0, 2.0 * np.pi, self.n_features)

    def _features(self, u: np.ndarray) -> np.ndarray:
        return np.hstack([u, np.sqrt(2.0 / self.n_features) * np.cos(u @ self.frequencies_ + self.phases_)])

    @property
    def n_outputs(self) -> int:
        return self.n_inputs + self.n_features

    def _arrays(self) -> tuple[str, ...]:
        return (*super()._arrays(), "frequencies_", "phases_")


class Custom(FeatureMap):
    """A user's function of an (n, d) array returning an (n, m) array, used as given."""

    kind = "custom"
    _n_outputs: int | None = None

    def __init__(self, function: Callable[[np.ndarray], Any]):
        if not callable(function):
            raise TypeError(f"a custom feature map needs a function, got {type(function).__name__}")
        self.function = function

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, "function": getattr(self.function, "__qualname__", repr(self.function))}

    def fit(self, x: Any) -> Custom:
        """Record the input width, check the function's output on x and record its width."""
        x = _inputs(x, None, "Custom")
        self.location_, self.scale_ = np.zeros(x.shape[1]), np.ones(x.shape[1])
        self._n_outputs = self._features(x).shape[1]
        return self

    def _features(self, u: np.ndarray) -> np.ndarray:
        name = self.config()["function"]
        try:
            out = np.asarray(self.function(u), dtype=float)
        except (TypeError, ValueError) as error:
            shape = f"({u.shape[0]}, {u.shape[1]})"
            raise ValueError(f"the feature function {name} failed on an {shape} array: {error}") from None
        if out.ndim != 2 or out.shape[0] != u.shape[0]:
            raise ValueError(f"the feature function {name} must return an ({u.shape[0]}, m) array, got {out.shape}")
        if not np.isfinite(out).all():
            raise ValueError(f"the feature function {name} returned non-finite features")
        return out

    @property
    def n_outputs(self) -> int:
        """The width of the function's output on the data it was fit to (running it on other
        inputs, such as a row of zeros, could fail where the data did not)."""
        return self._n_outputs

    @property
    def linear_columns(self) -> int:
        return 0

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        raise TypeError(
            f"a custom feature map (the function {self.config()['function']}) cannot be saved: a function is "
            "code, not data. Use a built-in map (Polynomial, RadialBasis, RandomFourier) to save the model."
        )


MAPS: dict[str, type[FeatureMap]] = {cls.kind: cls for cls in (Polynomial, RadialBasis, RandomFourier)}


def feature_map(spec: Any, arrays: dict[str, np.ndarray] | None = None) -> FeatureMap:
    """A fresh, unfitted map from a spec: a name (``"polynomial"``, ``"rbf"``, ``"fourier"``), a
    config dict, a :class:`FeatureMap` (copied, so fitting never changes the given one) or a
    function. With ``arrays`` (from :meth:`FeatureMap.state`) the map comes back fitted."""
    if isinstance(spec, FeatureMap):
        return Custom(spec.function) if isinstance(spec, Custom) else feature_map(spec.config())
    if callable(spec):
        return Custom(spec)
    if isinstance(spec, str):
        spec = {"kind": spec}
    if not isinstance(spec, dict) or spec.get("kind") not in MAPS:
        known = sorted(MAPS)
        raise ValueError(f"features must be one of {known}, a FeatureMap, a config dict or a function; got {spec!r}")
    options = {name: value for name, value in spec.items() if name != "kind"}
    try:
        out = MAPS[spec["kind"]](**options)
    except TypeError as error:
        raise ValueError(f"bad options for the {spec['kind']!r} feature map: {error}") from None
    for name, value in (arrays or {}).items():
        setattr(out, name, float(value) if np.ndim(value) == 0 else np.asarray(value, dtype=float))
    return out


def _inputs(x: Any, width: int | None, where: str) -> np.ndarray:
    try:
        x = np.asarray(x, dtype=float)
    except (TypeError, ValueError):
        raise TypeError(f"{where}: inputs must be a numeric (n, d) array") from None
    if x.ndim != 2:
        raise ValueError(f"{where}: inputs must be an (n, d) array, got shape {x.shape}")
    if width is not None and x.shape[1] != width:
        raise ValueError(f"{where}: the map was fit on {width} input column(s), got {x.shape[1]}")
    if not np.isfinite(x).all():
        raise ValueError(f"{where}: inputs have non-finite entries")
    return x
