"""hmmlearn's hidden Markov models on modeshift's engine: change the import, keep the code.

    from modeshift.compat.hmmlearn import GaussianHMM  # was: from hmmlearn.hmm import GaussianHMM

The five classes take hmmlearn's constructor arguments, keep its attribute names and shapes
and answer its methods; :class:`~modeshift.models.hmm.HMM` does the work underneath, with
its emission blocks, compiled forward-backward and Viterbi kernels and the EM driver of
:mod:`modeshift.models.em`.

A hidden chain z_1 .. z_T starts in state k with probability ``startprob_[k]`` and moves from
i to j with probability ``transmat_[i, j]``; each step's observation depends on its state:

- ``GaussianHMM``: N(``means_[k]``, ``covars_[k]``);
- ``GMMHMM``: sum_m ``weights_[k, m]`` N(``means_[k, m]``, ``covars_[k, m]``);
- ``CategoricalHMM``: one symbol, s with probability ``emissionprob_[k, s]``;
- ``MultinomialHMM``: the counts of ``n_features`` outcomes in ``n_trials`` draws from ``emissionprob_[k]``;
- ``PoissonHMM``: independent Poisson counts with rates ``lambdas_[k]``.

Data take hmmlearn's form: one 2-D array X (n_samples, n_features), several sequences stacked
and cut by ``lengths``. So ``[[0], [1], [2]]`` is one sequence of three symbols (modeshift's own
``HMM`` reads a list as a list of sequences).

``params`` and ``init_params`` name parameters by letter: s startprob_, t transmat_, m means_,
c covars_, w weights_, e emissionprob_, l lambdas_. ``fit`` initialises from the data those in
``init_params`` (the others keep the value they have, or are initialised if they have none) and
updates only those in ``params``: the others stay fixed.

>>> import numpy as np
>>> from modeshift.compat.hmmlearn import GaussianHMM
>>> rng = np.random.default_rng(0)
>>> X = np.r_[rng.normal(0.0, 1.0, (150, 1)), rng.normal(5.0, 1.0, (150, 1))]
>>> model = GaussianHMM(n_components=2, n_iter=100, random_state=0).fit(X)
>>> np.sort(model.means_.ravel()).round()
array([0., 5.])
>>> model.monitor_.converged
True

Differences from hmmlearn 0.3 that remain (docs/compat.md explains each):

- ``monitor_.converged`` is True only when the last gain fell below ``tol``; hmmlearn also calls
  a fit that reached ``n_iter`` converged. Such a fit emits a ``ConvergenceWarning`` here.
- ``monitor_.history`` records the objective EM increases: the log-likelihood plus the log
  density of the priors in use (hmmlearn records the log-likelihood alone); ``tol`` applies to it.
- Initialisation is modeshift's (k-means++ means, within-cluster covariances, a chain near
  "stay"), so a seed does not reproduce hmmlearn's starting point, and ``min_covar`` (which
  hmmlearn adds to its initial covariances only) is not used. ``sample`` draws from a numpy
  ``Generator``: the same seed gives other draws than hmmlearn.
- Priors run where modeshift has the same maximisation step; any other value is a ValueError
  at ``fit`` saying so: startprob_prior = c and transmat_prior = c + s * identity (c >= 1,
  s >= 0); GaussianHMM: one number covars_prior, added to the diagonal of every scatter matrix
  (hmmlearn adds a number to every entry of a full or tied one), ``covars_weight`` <= 1
  (diag, spherical) or <= n_features (full, tied), ``means_weight`` = 0; GMMHMM:
  ``weights_prior`` = 1, ``means_weight`` = 0 and the covariance priors left None, run as
  maximum likelihood with a 1e-6 ridge; CategoricalHMM: one number ``emissionprob_prior`` >= 1;
  PoissonHMM: ``lambdas_prior`` = ``lambdas_weight`` = 0.
- GMMHMM's M-step is exact: its covariances are taken about the updated means (hmmlearn's about
  the previous ones), so every step is a true EM step and cannot lower the likelihood.
- ``aic`` and ``bic`` count GMMHMM's free weights as n_components * (n_mix - 1) (hmmlearn counts
  n_mix - 1); the other counts are hmmlearn's.
- ``decode(algorithm="map")`` returns, as hmmlearn does, the sum over steps of the largest
  posterior probability as its first value: not a log-probability.
- Missing values (NaN) are integrated out; hmmlearn refuses them. Categorical symbols and counts
  may be floats holding integers. ``implementation`` is accepted and changes nothing: the
  kernels always run the scaled recursions, guarded against underflow. ``verbose`` draws a
  progress bar instead of printing each iteration.
- One keyword-only addition, ``accelerate=False``: True runs EM with SQUAREM
  (:mod:`modeshift.models.em`), the same fixed points in far fewer iterations where EM crawls.

Layer: this module is a model-level adapter (layer 4, with ``models``). It builds concrete
``HMM`` engines and emission blocks and reads their parameters, which is model code, not
interface code that may only use the capability protocols; it draws and prints nothing.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from modeshift.chain_analysis import stationary_distribution
from modeshift.compat.multinomial import Multinomial
from modeshift.emissions import COVARIANCE_TYPES, Categorical, Emission, Gaussian, GaussianMixture, Poisson
from modeshift.models import params as rules
from modeshift.models.em import ConvergenceWarning
from modeshift.models.hmm import HMM

__all__ = ["GMMHMM", "CategoricalHMM", "ConvergenceMonitor", "GaussianHMM", "MultinomialHMM", "PoissonHMM"]

_CHAIN = {"s": "startprob_", "t": "transmat_"}
_ALGORITHMS = rules.OneOf(("viterbi", "map"))
#: the ridge GMMHMM's maximum-likelihood covariances get (hmmlearn's default priors have none)
_GMM_RIDGE = 1e-6


@dataclass
class ConvergenceMonitor:
    """How an EM fit went (``model.monitor_``), in hmmlearn's terms.

    ``history`` holds the objective at each iteration (before its update), ``iter`` counts the
    iterations and ``converged`` says whether the last gain fell below ``tol`` (reaching the
    ``n_iter`` cap does not count, as it does in hmmlearn).
    """

    tol: float
    n_iter: int
    verbose: bool
    history: list[float] = field(default_factory=list)
    iter: int = 0
    converged: bool = False


class ModeshiftHMM(HMM):
    """modeshift's HMM with the emission block an adapter hands it as ``emission_block``
    (for emissions and priors HMM's own options do not offer); one fit per engine."""

    def _make_emission(self) -> Emission:
        return self.emission_block


class _Letters(rules.Rule):
    """A string of parameter letters from ``allowed``."""

    def __init__(self, allowed: str):
        self.allowed = allowed

    def allows(self, value: Any) -> bool:
        return isinstance(value, str) and set(value) <= set(self.allowed)

    def describe(self) -> str:
        return f"a string of the letters {self.allowed!r}"


class _Seed(rules.Rule):
    def allows(self, value: Any) -> bool:
        return isinstance(value, np.random.RandomState) or rules.COMMON["random_state"].allows(value)

    def describe(self) -> str:
        return "None, a non-negative integer seed, a numpy RandomState or Generator"


class _BaseHMM:
    """What the five models share: hyper-parameters, data, the engine and hmmlearn's methods."""

    #: hmmlearn's letter of each emission parameter -> its attribute, in the order they are set
    _emission_letters: ClassVar[dict[str, str]] = {}
    _constraints: ClassVar[dict[str, rules.Rule]] = {}
    #: the dtype of the observations ``sample`` returns, as hmmlearn's (counts are integers)
    _sample_dtype: ClassVar[type] = np.float64

    # ------------------------------------------------------------ hyper-parameters
    @classmethod
    def _hyperparameters(cls) -> dict[str, inspect.Parameter]:
        return _signature(cls)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Hyper-parameters, as given to ``__init__`` (scikit-learn's convention)."""
        return {name: getattr(self, name) for name in self._hyperparameters()}

    def set_params(self, **values: Any) -> _BaseHMM:
        """Change hyper-parameters; returns ``self``."""
        unknown = sorted(set(values) - set(self._hyperparameters()))
        if unknown:
            raise ValueError(f"{type(self).__name__} has no hyper-parameter(s) {unknown}")
        for name, value in values.items():
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        given = self.get_params()
        shown = [f"{n}={given[n]!r}" for n, p in self._hyperparameters().items() if not _same(given[n], p.default)]
        return f"{type(self).__name__}({', '.join(shown)})"

    @property
    def _letters(self) -> dict[str, str]:
        return {**_CHAIN, **self._emission_letters}

    def _check_hyperparameters(self) -> None:
        letters = _Letters("".join(self._letters))
        own = {
            "n_components": rules.Integer(1),
            "algorithm": _ALGORITHMS,
            "implementation": rules.OneOf(("log", "scaling")),
            "params": letters,
            "init_params": letters,
            "random_state": _Seed(),
            **self._constraints,
        }
        common = {name: rules.COMMON[name] for name in ("n_iter", "tol", "accelerate")}
        rules.check(type(self).__name__, self.get_params(), {**common, **own})

    # ----------------------------------------------------------------------- data
    def _check_X(self, X: Any) -> np.ndarray:
        array = np.asarray(X)
        if array.ndim != 2:
            raise ValueError(
                f"{type(self).__name__}: X must be 2-D (n_samples, n_features), got shape {array.shape}; "
                "one feature is X.reshape(-1, 1)"
            )
        return array

    # ------------------------------------------------------------------ the engine
    def _emission(self, **prior: Any) -> Emission:
        """The engine's emission block (with the given modeshift priors)."""
        raise NotImplementedError

    def _emission_prior(self) -> dict[str, Any]:
        """hmmlearn's emission priors as the emission block's, or a ValueError where there is no equivalent."""
        return {}

    def _engine(self, letters: str, emission: Emission, **options: Any) -> ModeshiftHMM:
        """An engine holding those of this model's parameters named by ``letters`` that are set."""
        engine = ModeshiftHMM(self.n_components, **options)
        engine.emission_block = emission
        for letter, name in self._letters.items():
            if letter in letters and hasattr(self, name):
                setattr(engine, name, self._engine_form(name))
        return engine

    def _model(self) -> ModeshiftHMM:
        """An engine holding every parameter: what scoring, decoding and sampling use."""
        self._check_hyperparameters()
        return self._engine("".join(self._letters), self._emission())

    def _engine_form(self, name: str) -> np.ndarray:
        return getattr(self, name)

    def _hmmlearn_form(self, name: str, value: np.ndarray) -> np.ndarray:
        return np.array(value)

    def _take_features(self, X: np.ndarray) -> None:
        """Record the data's dimension at ``fit``, as hmmlearn does."""
        self.n_features = X.shape[1]

    # ------------------------------------------------------------------------- fit
    def fit(self, X: Any, lengths: Any = None) -> _BaseHMM:
        """Estimate the parameters in ``params`` by EM, after initialising those in ``init_params``;
        returns ``self``. ``lengths`` cut X into sequences (default: one)."""
        X = self._check_X(X)
        self._check_hyperparameters()
        self._take_features(X)
        concentration, stickiness = _chain_prior(
            type(self).__name__, self.startprob_prior, self.transmat_prior, self.n_components
        )
        engine = self._engine(
            "".join(letter for letter in self._letters if letter not in self.init_params),
            self._emission(**self._emission_prior()),
            fixed=tuple(name for letter, name in self._letters.items() if letter not in self.params),
            n_iter=self.n_iter,
            tol=self.tol,
            random_state=_generator_seed(self.random_state),
            verbose=bool(self.verbose),
            accelerate=self.accelerate,
            transition_concentration=concentration,
            stickiness=stickiness,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # told below, in this model's words
            engine.fit(X, lengths)
        for name in self._letters.values():
            setattr(self, name, self._hmmlearn_form(name, getattr(engine, name)))
        history = list(engine.history_)
        self.monitor_ = ConvergenceMonitor(
            self.tol, self.n_iter, self.verbose, history, len(history), engine.converged_
        )
        if self.n_iter > 0 and not engine.converged_:
            gain = history[-1] - history[-2] if len(history) > 1 else float("nan")
            warnings.warn(
                f"{self!r} stopped at n_iter={self.n_iter} EM iterations with a last gain of {gain:.3g} "
                f"(tol={self.tol:g}): not converged; raise n_iter to go on",
                ConvergenceWarning,
                stacklevel=2,
            )
        return self

    # ------------------------------------------------------------------- inference
    def score(self, X: Any, lengths: Any = None) -> float:
        """Log-likelihood log p(X) of all sequences."""
        return self._model().score(self._check_X(X), lengths)

    def score_samples(self, X: Any, lengths: Any = None) -> tuple[float, np.ndarray]:
        """Log-likelihood of X and the state posteriors p(z_t | its sequence) (n_samples, n_components)."""
        X = self._check_X(X)
        engine = self._model()
        return engine.score(X, lengths), engine.predict_proba(X, lengths)

    def predict_proba(self, X: Any, lengths: Any = None) -> np.ndarray:
        """State posteriors p(z_t | its sequence), (n_samples, n_components)."""
        return self._model().predict_proba(self._check_X(X), lengths)

    def decode(self, X: Any, lengths: Any = None, algorithm: str | None = None) -> tuple[float, np.ndarray]:
        """The most likely states: ``"viterbi"``, the best path and its log p(X, path); ``"map"``,
        the most likely state of each step and (as hmmlearn) the sum of their posterior probabilities.
        ``algorithm`` defaults to the model's."""
        algorithm = self.algorithm if algorithm is None else algorithm
        rules.check(type(self).__name__, {"algorithm": algorithm}, {"algorithm": _ALGORITHMS})
        X = self._check_X(X)
        engine = self._model()
        if algorithm == "viterbi":
            return engine.decode(X, lengths)
        posteriors = engine.predict_proba(X, lengths)
        return float(posteriors.max(axis=1).sum()), posteriors.argmax(axis=1)

    def predict(self, X: Any, lengths: Any = None) -> np.ndarray:
        """The state of each step by the model's ``algorithm``."""
        return self.decode(X, lengths)[1]

    def sample(
        self, n_samples: int = 1, random_state: Any = None, currstate: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Draw one sequence of ``n_samples`` steps: observations (n_samples, n_features) and states.

        ``currstate`` is the state of the first step (default: drawn from ``startprob_``);
        ``random_state`` defaults to the model's.
        """
        engine = self._model()
        if currstate is not None:
            if not 0 <= currstate < self.n_components:
                raise ValueError(f"currstate must be a state in 0 .. {self.n_components - 1}, got {currstate!r}")
            engine.startprob_ = np.eye(self.n_components)[currstate]
        seed = self.random_state if random_state is None else random_state
        X, states = engine.sample(n_samples, random_state=_generator_seed(seed))
        return X.astype(self._sample_dtype, copy=False), states

    # ----------------------------------------------------------- model selection
    def aic(self, X: Any, lengths: Any = None) -> float:
        """Akaike information criterion, -2 log-likelihood + 2 n_parameters (every parameter counted)."""
        return self._model().aic(self._check_X(X), lengths)

    def bic(self, X: Any, lengths: Any = None) -> float:
        """Bayesian information criterion, -2 log-likelihood + n_parameters log(n_samples)."""
        return self._model().bic(self._check_X(X), lengths)

    def get_stationary_distribution(self) -> np.ndarray:
        """The long-run share of time in each state, pi with pi transmat_ = pi."""
        return stationary_distribution(self.transmat_)


class GaussianHMM(_BaseHMM):
    """Gaussian emissions: y_t | z_t = k ~ N(means_[k], covars_[k]).

    ``covariance_type`` is "spherical", "diag" (the default), "full" or "tied". ``covars_`` reads
    as full (n_components, n_features, n_features) matrices and is set, and stored, in the type's
    compact form: (n_components,), (n_components, n_features), the full matrices, or one
    (n_features, n_features) matrix. The covariance prior runs as modeshift's ``reg_covar`` (see
    the module's notes); the other arguments are hmmlearn's.

    >>> import numpy as np
    >>> model = GaussianHMM(n_components=2, covariance_type="spherical", init_params="")
    >>> model.startprob_ = np.array([0.5, 0.5])
    >>> model.transmat_ = np.array([[0.9, 0.1], [0.2, 0.8]])
    >>> model.means_ = np.array([[0.0, 0.0], [3.0, 3.0]])
    >>> model.covars_ = np.array([1.0, 2.0])
    >>> model.covars_.shape
    (2, 2, 2)
    >>> model.predict([[0.1, -0.2], [2.9, 3.3], [3.1, 2.8]])
    array([0, 1, 1])
    """

    _emission_letters = {"m": "means_", "c": "covars_"}
    _constraints = {"covariance_type": rules.OneOf(COVARIANCE_TYPES)}

    def __init__(
        self,
        n_components: int = 1,
        covariance_type: str = "diag",
        min_covar: float = 1e-3,
        startprob_prior: Any = 1.0,
        transmat_prior: Any = 1.0,
        means_prior: Any = 0,
        means_weight: Any = 0,
        covars_prior: Any = 1e-2,
        covars_weight: Any = 1,
        algorithm: str = "viterbi",
        random_state: Any = None,
        n_iter: int = 10,
        tol: float = 1e-2,
        verbose: bool = False,
        params: str = "stmc",
        init_params: str = "stmc",
        implementation: str = "log",
        *,
        accelerate: bool = False,
    ):
        _store(self, locals())

    @property
    def covars_(self) -> np.ndarray:
        """Full covariance matrices (n_components, n_features, n_features)."""
        n_features = self.means_.shape[1] if hasattr(self, "means_") else getattr(self, "n_features", None)
        return _full("covars_", self._covars_, self.covariance_type, (self.n_components,), n_features)

    @covars_.setter
    def covars_(self, value: Any) -> None:
        self._covars_ = np.array(value, dtype=float)

    def _emission(self, reg_covar: float = 0.0) -> Emission:
        return Gaussian(self.n_components, self.covariance_type, reg_covar)

    def _emission_prior(self) -> dict[str, Any]:
        model = type(self).__name__
        if _one_number(model, "means_weight", self.means_weight) != 0:
            raise ValueError(f"{model}: modeshift has no normal prior on the means; means_weight must be 0")
        reg_covar = _one_number(model, "covars_prior", self.covars_prior)
        limit = 1 if self.covariance_type in ("diag", "spherical") else self.n_features
        if reg_covar < 0 or _one_number(model, "covars_weight", self.covars_weight) > limit:
            raise ValueError(
                f"{model}: modeshift's covariance prior adds covars_prior >= 0 to the scatter's diagonal and "
                f"nothing to its count: covars_weight must be <= {limit} for covariance_type="
                f"{self.covariance_type!r}; got covars_prior={self.covars_prior!r}, "
                f"covars_weight={self.covars_weight!r}"
            )
        return {"reg_covar": reg_covar}

    def _hmmlearn_form(self, name: str, value: np.ndarray) -> np.ndarray:
        return _compact(value, self.covariance_type) if name == "covars_" else np.array(value)


class GMMHMM(_BaseHMM):
    """Gaussian-mixture emissions: y_t | z_t = k ~ sum_m weights_[k, m] N(means_[k, m], covars_[k, m]).

    ``covars_`` is hmmlearn's compact form for ``covariance_type``: (n_components, n_mix) spherical,
    (n_components, n_mix, n_features) diag, (n_components, n_mix, n_features, n_features) full,
    or one matrix per state, (n_components, n_features, n_features), tied. The M-step is the
    exact maximum-likelihood one (with a 1e-6 ridge; the priors must keep hmmlearn's defaults).
    """

    _emission_letters = {"w": "weights_", "m": "means_", "c": "covars_"}
    _constraints = {"covariance_type": rules.OneOf(COVARIANCE_TYPES), "n_mix": rules.Integer(1)}

    def __init__(
        self,
        n_components: int = 1,
        n_mix: int = 1,
        min_covar: float = 1e-3,
        startprob_prior: Any = 1.0,
        transmat_prior: Any = 1.0,
        weights_prior: Any = 1.0,
        means_prior: Any = 0.0,
        means_weight: Any = 0.0,
        covars_prior: Any = None,
        covars_weight: Any = None,
        algorithm: str = "viterbi",
        covariance_type: str = "diag",
        random_state: Any = None,
        n_iter: int = 10,
        tol: float = 1e-2,
        verbose: bool = False,
        params: str = "stmcw",
        init_params: str = "stmcw",
        implementation: str = "log",
        *,
        accelerate: bool = False,
    ):
        _store(self, locals())

    def _emission(self, reg_covar: float = 0.0) -> Emission:
        return GaussianMixture(self.n_components, self.n_mix, self.covariance_type, reg_covar)

    def _emission_prior(self) -> dict[str, Any]:
        model = type(self).__name__
        neutral = (
            _one_number(model, "weights_prior", self.weights_prior) == 1
            and _one_number(model, "means_weight", self.means_weight) == 0
            and self.covars_prior is None
            and self.covars_weight is None
        )
        if not neutral:
            raise ValueError(
                f"{model}: modeshift fits mixtures by maximum likelihood: weights_prior must be 1, "
                "means_weight 0 and covars_prior, covars_weight None"
            )
        return {"reg_covar": _GMM_RIDGE}

    def _engine_form(self, name: str) -> np.ndarray:
        if name != "covars_":
            return getattr(self, name)
        n_features = self.means_.shape[2] if hasattr(self, "means_") else getattr(self, "n_features", None)
        lead = (self.n_components, self.n_mix)
        return _full("covars_", self.covars_, self.covariance_type, lead, n_features)

    def _hmmlearn_form(self, name: str, value: np.ndarray) -> np.ndarray:
        return _compact(value, self.covariance_type) if name == "covars_" else np.array(value)


class CategoricalHMM(_BaseHMM):
    """Categorical emissions: one symbol per step, y_t | z_t = k ~ Categorical(emissionprob_[k]).

    X is one column of symbols 0 .. n_features - 1 (``n_features`` defaults to the largest symbol
    seen by ``fit`` plus one). ``emissionprob_prior`` is the Dirichlet concentration of every
    emission probability (1: none).

    >>> import numpy as np
    >>> model = CategoricalHMM(n_components=2, init_params="")
    >>> model.startprob_ = np.array([1.0, 0.0])
    >>> model.transmat_ = np.array([[0.8, 0.2], [0.2, 0.8]])
    >>> model.emissionprob_ = np.array([[0.9, 0.1, 0.0], [0.0, 0.1, 0.9]])
    >>> model.predict([[0], [0], [2], [2], [1]])  # one sequence of five symbols
    array([0, 0, 1, 1, 1])
    """

    _emission_letters = {"e": "emissionprob_"}
    _sample_dtype = np.int64
    _constraints = {"n_features": rules.either(rules.Integer(1), rules.OneOf((None,)))}

    def __init__(
        self,
        n_components: int = 1,
        startprob_prior: Any = 1.0,
        transmat_prior: Any = 1.0,
        *,
        emissionprob_prior: Any = 1.0,
        n_features: int | None = None,
        algorithm: str = "viterbi",
        random_state: Any = None,
        n_iter: int = 10,
        tol: float = 1e-2,
        verbose: bool = False,
        params: str = "ste",
        init_params: str = "ste",
        implementation: str = "log",
        accelerate: bool = False,
    ):
        _store(self, locals())

    def _check_X(self, X: Any) -> np.ndarray:
        X = super()._check_X(X)
        if X.shape[1] != 1:
            raise ValueError(f"{type(self).__name__}: X must be one column of symbols, got {X.shape[1]} columns")
        return X

    def _emission(self, concentration: float = 1.0) -> Emission:
        return Categorical(self.n_components, self.n_features, concentration)

    def _emission_prior(self) -> dict[str, Any]:
        concentration = _one_number(type(self).__name__, "emissionprob_prior", self.emissionprob_prior)
        if concentration < 1:
            raise ValueError(
                f"{type(self).__name__}: emissionprob_prior must be >= 1 (a Dirichlet concentration whose "
                f"mode exists), got {self.emissionprob_prior!r}"
            )
        return {"concentration": concentration}

    def _take_features(self, X: np.ndarray) -> None:
        """``n_features`` is a hyper-parameter here: None until ``fit`` learns the alphabet."""

    def fit(self, X: Any, lengths: Any = None) -> CategoricalHMM:
        super().fit(X, lengths)
        self.n_features = self.emissionprob_.shape[1]  # as hmmlearn: the alphabet fit used
        return self


class MultinomialHMM(_BaseHMM):
    """Multinomial emissions: the counts y_t of ``n_features`` outcomes in n_t trials,
    y_t | z_t = k ~ Multinomial(n_t, emissionprob_[k]).

    ``n_trials`` (one number, or one per row of X) is checked against the rows' totals by ``fit``,
    which sets it to those totals when None; the likelihood reads each row's own total, and
    ``sample`` needs one number of trials.
    """

    _emission_letters = {"e": "emissionprob_"}
    _sample_dtype = np.int64

    def __init__(
        self,
        n_components: int = 1,
        n_trials: Any = None,
        startprob_prior: Any = 1.0,
        transmat_prior: Any = 1.0,
        algorithm: str = "viterbi",
        random_state: Any = None,
        n_iter: int = 10,
        tol: float = 1e-2,
        verbose: bool = False,
        params: str = "ste",
        init_params: str = "ste",
        implementation: str = "log",
        *,
        accelerate: bool = False,
    ):
        _store(self, locals())

    def _emission(self) -> Emission:
        trials = () if self.n_trials is None else np.unique(self.n_trials)
        return Multinomial(self.n_components, int(trials[0]) if len(trials) == 1 else None)

    def _take_features(self, X: np.ndarray) -> None:
        self.n_features = X.shape[1]
        totals = X.sum(axis=1)
        if self.n_trials is None:
            self.n_trials = totals
            return
        trials = np.asarray(self.n_trials).reshape(-1)
        if trials.size not in (1, len(X)):
            raise ValueError(
                f"{type(self).__name__}: n_trials must be one number or one per row of X ({len(X)}), "
                f"got {trials.size} numbers"
            )
        wrong = np.flatnonzero(totals != np.broadcast_to(trials, totals.shape))
        if wrong.size:
            raise ValueError(
                f"{type(self).__name__}: row {wrong[0]} of X counts {totals[wrong[0]]:g} trials; n_trials "
                f"(one number, or one per row of X) is {self.n_trials!r}"
            )


class PoissonHMM(_BaseHMM):
    """Poisson emissions: independent counts y_td | z_t = k ~ Poisson(lambdas_[k, d]).

    The rates' gamma prior has no modeshift equivalent: ``lambdas_prior`` and ``lambdas_weight``
    must stay 0 (maximum likelihood).
    """

    _emission_letters = {"l": "lambdas_"}
    _sample_dtype = np.int64

    def __init__(
        self,
        n_components: int = 1,
        startprob_prior: Any = 1.0,
        transmat_prior: Any = 1.0,
        lambdas_prior: Any = 0.0,
        lambdas_weight: Any = 0.0,
        algorithm: str = "viterbi",
        random_state: Any = None,
        n_iter: int = 10,
        tol: float = 1e-2,
        verbose: bool = False,
        params: str = "stl",
        init_params: str = "stl",
        implementation: str = "log",
        *,
        accelerate: bool = False,
    ):
        _store(self, locals())

    def _emission(self) -> Emission:
        return Poisson(self.n_components)

    def _emission_prior(self) -> dict[str, Any]:
        model = type(self).__name__
        if _one_number(model, "lambdas_prior", self.lambdas_prior) or _one_number(
            model, "lambdas_weight", self.lambdas_weight
        ):
            raise ValueError(
                f"{model}: modeshift has no prior on the Poisson rates; lambdas_prior and lambdas_weight must be 0"
            )
        return {}


# ------------------------------------------------------------------------- helpers
@functools.cache
def _signature(cls: type) -> dict[str, inspect.Parameter]:
    """The arguments of ``cls.__init__``: its hyper-parameters (read once per class)."""
    return {name: p for name, p in inspect.signature(cls.__init__).parameters.items() if name != "self"}


def _store(model: _BaseHMM, arguments: dict[str, Any]) -> None:
    """Keep every argument of ``__init__`` unchanged (scikit-learn's rule, so ``clone`` works)."""
    for name in model._hyperparameters():
        setattr(model, name, arguments[name])


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a is b or (type(a) is type(b) and a == b))
    except (TypeError, ValueError):  # arrays
        return False


def _one_number(model: str, name: str, value: Any) -> float:
    """A prior given as one number (or an array of one repeated number), or a ValueError."""
    array = np.asarray(value, dtype=float)
    if array.size == 0 or not np.all(array == array.flat[0]):
        raise ValueError(f"{model}: {name} must be one number (the modeshift equivalent has one), got {value!r}")
    return float(array.flat[0])


def _chain_prior(model: str, startprob_prior: Any, transmat_prior: Any, n_states: int) -> tuple[float, float]:
    """hmmlearn's Dirichlet priors on the chain as modeshift's (concentration, stickiness).

    modeshift puts one concentration c >= 1 on startprob_ and on every entry of transmat_, and s >= 0
    more on its diagonal: startprob_prior = c, transmat_prior = c + s * identity.
    """
    try:
        start = np.broadcast_to(np.asarray(startprob_prior, dtype=float), (n_states,))
        rows = np.broadcast_to(np.asarray(transmat_prior, dtype=float), (n_states, n_states))
    except ValueError as error:
        raise ValueError(
            f"{model}: startprob_prior must be a number or ({n_states},), transmat_prior a number or "
            f"({n_states}, {n_states})"
        ) from error
    concentration = float(start[0])
    stickiness = float(rows[0, 0]) - concentration
    expected = concentration + stickiness * np.eye(n_states)
    if not (concentration >= 1 and stickiness >= 0 and np.all(start == concentration) and np.all(rows == expected)):
        raise ValueError(
            f"{model}: modeshift's chain prior is one Dirichlet concentration c >= 1 on startprob_ and on every "
            "entry of transmat_, plus s >= 0 on its diagonal (startprob_prior=c, transmat_prior=c + s * identity); "
            f"got startprob_prior={startprob_prior!r}, transmat_prior={transmat_prior!r}"
        )
    return concentration, stickiness


def _generator_seed(random_state: Any) -> int | np.random.Generator | None:
    """What modeshift takes for hmmlearn's ``random_state``: a RandomState gives a seed drawn from it."""
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(2**31 - 1))
    return random_state


def _full(
    name: str, covars: np.ndarray, covariance_type: str, lead: tuple[int, ...], n_features: int | None
) -> np.ndarray:
    """hmmlearn's compact covariances as full matrices (*lead, D, D); ``lead`` is (K,) or (K, M)."""
    covars = np.asarray(covars, dtype=float)
    if n_features is None:
        if covariance_type == "spherical":
            raise ValueError(f"set means_ before spherical {name} (the dimension is unknown)")
        n_features = covars.shape[-1] if covars.ndim else 0
    d = n_features
    expected = {
        "spherical": lead,
        "diag": (*lead, d),
        "full": (*lead, d, d),
        "tied": (*lead[:-1], d, d),
    }[covariance_type]
    if covars.shape != expected:
        raise ValueError(
            f"{name} must have shape {expected} for covariance_type={covariance_type!r}, got {covars.shape}"
        )
    if covariance_type == "spherical":
        return covars[..., None, None] * np.eye(d)
    if covariance_type == "diag":
        return covars[..., :, None] * np.eye(d)
    if covariance_type == "tied":
        return np.broadcast_to(np.expand_dims(covars, -3), (*lead, d, d)).copy()
    return covars


def _compact(full: np.ndarray, covariance_type: str) -> np.ndarray:
    """Full matrices (*lead, D, D) in hmmlearn's compact form for ``covariance_type``."""
    if covariance_type == "spherical":
        return full[..., 0, 0].copy()
    if covariance_type == "diag":
        return np.diagonal(full, axis1=-2, axis2=-1).copy()
    if covariance_type == "tied":
        return full[..., 0, :, :].copy()
    return np.array(full)
