"""modeshift.compat.hmmlearn against hmmlearn itself (a test-only dependency).

Each class is tried as hmmlearn's own tests try theirs: a model with hand-set parameters
scores, decodes and samples; ``fit`` honours ``params`` and ``init_params``; attributes keep
hmmlearn's shapes. Every number is compared with the hmmlearn class of the same name given
the same parameters: scores, posteriors and Viterbi log-probabilities to 1e-8, paths exactly,
EM from the same start step for step where both run the same M-step (and to at least
hmmlearn's log-likelihood where modeshift's is exact and hmmlearn's is not, GMMHMM's).
"""

from __future__ import annotations

import logging
import pickle
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

hmm = pytest.importorskip("hmmlearn.hmm")

from modeshift.compat import hmmlearn as compat  # noqa: E402
from modeshift.models.em import ConvergenceWarning  # noqa: E402

logging.getLogger("hmmlearn").setLevel(logging.ERROR)  # MultinomialHMM's note on its history

RTOL = 1e-8
STEP_RTOL = 1e-6  # parameters after several EM steps
K, D, M, N_SYMBOLS = 3, 2, 2, 4
LENGTHS = [70, 1, 90, 39]  # a one-step sequence among them
COVARIANCE_TYPES = ["spherical", "diag", "full", "tied"]
ignore_cap = pytest.mark.filterwarnings("ignore::modeshift.models.em.ConvergenceWarning")


# --------------------------------------------------------------------- parameters
def _chain(rng: np.random.Generator) -> dict[str, np.ndarray]:
    transmat = rng.dirichlet(np.ones(K), size=K) + 3.0 * np.eye(K)
    return {"startprob_": rng.dirichlet(2.0 * np.ones(K)), "transmat_": transmat / transmat.sum(axis=1, keepdims=True)}


def _spd(rng: np.random.Generator, *lead: int) -> np.ndarray:
    a = rng.normal(size=(*lead, D, D))
    return a @ np.swapaxes(a, -1, -2) / D + 0.5 * np.eye(D)


def _covars(rng: np.random.Generator, covariance_type: str, lead: tuple[int, ...]) -> np.ndarray:
    """Random covariances in hmmlearn's compact form; ``lead`` is (K,) or (K, M)."""
    return {
        "spherical": lambda: rng.uniform(0.4, 1.5, lead),
        "diag": lambda: rng.uniform(0.4, 1.5, (*lead, D)),
        "full": lambda: _spd(rng, *lead),
        "tied": lambda: _spd(rng, *lead[:-1]),
    }[covariance_type]()


def _params(name: str, covariance_type: str | None, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    params = _chain(rng)
    if name == "GaussianHMM":
        params["means_"] = rng.normal(0.0, 3.0, (K, D))
        params["covars_"] = _covars(rng, covariance_type, (K,))
    elif name == "GMMHMM":
        params["weights_"] = rng.dirichlet(3.0 * np.ones(M), size=K)
        params["means_"] = rng.normal(0.0, 3.0, (K, M, D))
        params["covars_"] = _covars(rng, covariance_type, (K, M))
    elif name in ("CategoricalHMM", "MultinomialHMM"):
        params["emissionprob_"] = rng.dirichlet(np.ones(N_SYMBOLS), size=K)
    else:
        params["lambdas_"] = rng.uniform(0.5, 9.0, (K, 3))
    return params


def _options(name: str, covariance_type: str | None) -> dict:
    if name in ("GaussianHMM", "GMMHMM"):
        return {"covariance_type": covariance_type, **({"n_mix": M} if name == "GMMHMM" else {})}
    return {"n_trials": 6} if name == "MultinomialHMM" else {}


def _pair(name: str, covariance_type: str | None, params: dict[str, np.ndarray], **kwargs):
    """The compat model and hmmlearn's, with the same hyper-parameters and parameters."""
    kwargs = {"n_components": K, "init_params": "", **_options(name, covariance_type), **kwargs}
    pair = getattr(compat, name)(**kwargs), getattr(hmm, name)(**kwargs)
    for model in pair:
        for attribute, value in params.items():
            setattr(model, attribute, np.array(value, copy=True))
    return pair


def _stored(model, attribute: str) -> np.ndarray:
    """A parameter as stored: GaussianHMM keeps covars_ in the compact form (hmmlearn's ``_covars_``,
    whose spherical variances hmmlearn tiles to (K, D) after a fit)."""
    if attribute == "covars_" and type(model).__name__ == "GaussianHMM":
        stored = np.asarray(model._covars_)
        return stored[:, 0] if model.covariance_type == "spherical" and stored.ndim == 2 else stored
    return getattr(model, attribute)


def _data(model, seed: int) -> tuple[np.ndarray, list[int]]:
    return model.sample(sum(LENGTHS), random_state=seed)[0], LENGTHS


CASES = [("GaussianHMM", c) for c in COVARIANCE_TYPES] + [("GMMHMM", c) for c in COVARIANCE_TYPES]
CASES += [("CategoricalHMM", None), ("MultinomialHMM", None), ("PoissonHMM", None)]
CASE_IDS = [name if c is None else f"{name}-{c}" for name, c in CASES]
# where both libraries run the same M-step (GMMHMM's differs: hmmlearn's covariances are about the old means)
SAME_EM = [case for case in CASES if case[0] != "GMMHMM"]
SAME_EM_IDS = [i for i, case in zip(CASE_IDS, CASES) if case[0] != "GMMHMM"]


# ------------------------------------------------------------ inference parity
@pytest.mark.parametrize(("name", "covariance_type"), CASES, ids=CASE_IDS)
def test_score_samples_decode_and_predict_match_hmmlearn(name, covariance_type):
    ours, theirs = _pair(name, covariance_type, _params(name, covariance_type, seed=0))
    X, lengths = _data(ours, seed=1)
    for args in ((X,), (X, lengths)):
        assert ours.score(*args) == pytest.approx(theirs.score(*args), rel=RTOL, abs=0)
        log_prob, posteriors = ours.score_samples(*args)
        their_log_prob, their_posteriors = theirs.score_samples(*args)
        assert log_prob == pytest.approx(their_log_prob, rel=RTOL, abs=0)
        assert posteriors.shape == (len(X), K)
        assert_allclose(posteriors, their_posteriors, rtol=0, atol=1e-8)
        assert_allclose(ours.predict_proba(*args), their_posteriors, rtol=0, atol=1e-8)
        for algorithm in ("viterbi", "map"):
            value, path = ours.decode(*args, algorithm=algorithm)
            their_value, their_path = theirs.decode(*args, algorithm=algorithm)
            assert value == pytest.approx(their_value, rel=RTOL, abs=0)
            assert_array_equal(path, their_path)
        assert_array_equal(ours.predict(*args), theirs.predict(*args))
    # the cut matters: each sequence restarts from startprob_
    assert abs(ours.score(X) - ours.score(X, lengths)) > 1e-6


@pytest.mark.parametrize(("name", "covariance_type"), CASES, ids=CASE_IDS)
def test_information_criteria_count_every_parameter(name, covariance_type):
    ours, theirs = _pair(name, covariance_type, _params(name, covariance_type, seed=2))
    X, lengths = _data(ours, seed=3)
    n_parameters = (ours.aic(X, lengths) + 2 * ours.score(X, lengths)) / 2
    assert ours.bic(X, lengths) == pytest.approx(-2 * ours.score(X, lengths) + n_parameters * np.log(len(X)))
    if name == "GMMHMM":  # hmmlearn counts n_mix - 1 free weights in all, not per state
        d_free = {"spherical": 1, "diag": D, "full": D * (D + 1) // 2, "tied": D * (D + 1) // 2}[covariance_type]
        n_matrices = K if covariance_type == "tied" else K * M
        expected = (K - 1) + K * (K - 1) + K * (M - 1) + K * M * D + n_matrices * d_free
        assert n_parameters == pytest.approx(expected)
    else:
        theirs.score(X)  # hmmlearn learns n_features from its parameters there
        assert ours.aic(X, lengths) == pytest.approx(theirs.aic(X, lengths), rel=RTOL)
        assert ours.bic(X, lengths) == pytest.approx(theirs.bic(X, lengths), rel=RTOL)


def test_lists_of_lists_are_one_sequence_of_symbols():
    """hmmlearn's convention: [[0], [1], [2]] is X of shape (3, 1), one sequence of three symbols."""
    ours, theirs = _pair("CategoricalHMM", None, _params("CategoricalHMM", None, seed=4))
    X = [[0], [1], [2], [2], [3]]
    assert ours.score(X) == pytest.approx(theirs.score(X), rel=RTOL)
    assert ours.predict(X).shape == (5,)
    assert_array_equal(ours.predict(X), theirs.predict(X))
    assert ours.score(X, [2, 3]) == pytest.approx(ours.score(X[:2]) + ours.score(X[2:]), rel=RTOL)
    with pytest.raises(ValueError, match="2-D"):
        ours.score([0, 1, 2])


def test_multinomial_emission_against_scipy():
    """The multinomial block on its own: densities by scipy, the M-step as weighted frequencies."""
    from scipy import stats

    from modeshift.compat.multinomial import Multinomial

    probs = np.array([[0.2, 0.3, 0.5], [0.6, 0.4, 0.0]])
    emission = Multinomial(2)
    emission.set("emission_probs", probs)
    counts = np.array([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    expected = np.array([[stats.multinomial.logpmf(row, row.sum(), p) for p in probs] for row in counts])
    assert_allclose(emission.log_likelihoods(counts), expected, rtol=1e-12)
    assert emission.log_likelihoods(counts)[0, 1] == -np.inf  # an outcome state 1 never emits
    posteriors = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])
    emission.m_step(emission.statistics(counts, posteriors))
    weighted = posteriors.T @ counts
    assert_allclose(emission.emission_probs, weighted / weighted.sum(axis=1, keepdims=True), rtol=1e-12)


# ------------------------------------------------------------------- EM parity
def _start(name: str, covariance_type: str | None) -> dict[str, np.ndarray]:
    """A start away from the truth (seed 0), so EM has work to do."""
    return _params(name, covariance_type, seed=10)


@ignore_cap
@pytest.mark.parametrize(("name", "covariance_type"), SAME_EM, ids=SAME_EM_IDS)
def test_em_steps_match_hmmlearn(name, covariance_type):
    """From the same start, 5 EM steps give hmmlearn's log-likelihoods and parameters."""
    truth, _ = _pair(name, covariance_type, _params(name, covariance_type, seed=0))
    X, lengths = _data(truth, seed=5)
    neutral = {"covars_prior": 0.0} if name == "GaussianHMM" else {}  # maximum likelihood in both
    ours, theirs = _pair(name, covariance_type, _start(name, covariance_type), n_iter=5, tol=-np.inf, **neutral)
    ours.fit(X, lengths)
    theirs.fit(X, lengths)
    assert_allclose(ours.monitor_.history, list(theirs.monitor_.history), rtol=RTOL)
    assert ours.monitor_.iter == theirs.monitor_.iter == 5
    for attribute in _start(name, covariance_type):
        assert_allclose(
            _stored(ours, attribute), _stored(theirs, attribute), rtol=STEP_RTOL, atol=1e-10, err_msg=attribute
        )
    assert not np.allclose(ours.transmat_, _start(name, covariance_type)["transmat_"])  # EM moved


@ignore_cap
@pytest.mark.parametrize("covariance_type", ["spherical", "diag"])
def test_default_covariance_prior_runs_as_hmmlearn(covariance_type):
    """covars_prior=0.01 (the default) gives hmmlearn's steps; the history adds the prior's log density."""
    truth, _ = _pair("GaussianHMM", covariance_type, _params("GaussianHMM", covariance_type, seed=0))
    X, lengths = _data(truth, seed=6)
    start = _start("GaussianHMM", covariance_type)
    ours, theirs = _pair("GaussianHMM", covariance_type, start, n_iter=4, tol=-np.inf)
    ours.fit(X, lengths)
    theirs.fit(X, lengths)
    assert_allclose(ours.means_, theirs.means_, rtol=STEP_RTOL)
    assert_allclose(_stored(ours, "covars_"), _stored(theirs, "covars_"), rtol=STEP_RTOL)
    variances = np.diagonal(_pair("GaussianHMM", covariance_type, start)[0].covars_, axis1=1, axis2=2)
    log_prior = -0.5 * 1e-2 * (1.0 / variances).sum()
    assert ours.monitor_.history[0] == pytest.approx(theirs.monitor_.history[0] + log_prior, rel=RTOL)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_gmm_fit_reaches_hmmlearn_log_likelihood(covariance_type):
    """modeshift's exact GMM M-step converges, from hmmlearn's start, at least as high as hmmlearn's."""
    params = _params("GMMHMM", covariance_type, seed=0)
    params["means_"] = 3.0 * params["means_"]  # well apart: one optimum near the truth, reached in a few steps
    truth, _ = _pair("GMMHMM", covariance_type, params)
    X, lengths = _data(truth, seed=7)
    noise = np.random.default_rng(8).normal(0.0, 0.5, params["means_"].shape)
    start = {**params, "means_": params["means_"] + noise, "transmat_": _start("GMMHMM", covariance_type)["transmat_"]}
    ours, theirs = _pair("GMMHMM", covariance_type, start, n_iter=500, tol=1e-3)
    ours.fit(X, lengths)
    theirs.fit(X, lengths)
    assert ours.monitor_.converged
    expected = theirs.score(X, lengths)
    assert ours.score(X, lengths) >= expected - 1e-6 * abs(expected)
    assert not np.allclose(ours.means_, start["means_"], atol=1e-2)  # EM moved


@pytest.mark.parametrize(("name", "covariance_type"), SAME_EM, ids=SAME_EM_IDS)
def test_accelerated_fit_reaches_hmmlearn_log_likelihood(name, covariance_type):
    """``accelerate=True`` (SQUAREM) converges at least as high as hmmlearn's plain EM."""
    truth, _ = _pair(name, covariance_type, _params(name, covariance_type, seed=0))
    X, lengths = _data(truth, seed=9)
    ours, theirs = _pair(name, covariance_type, _start(name, covariance_type), n_iter=2000, tol=1e-6)
    ours.set_params(accelerate=True).fit(X, lengths)
    theirs.fit(X, lengths)
    assert ours.monitor_.converged
    expected = theirs.score(X, lengths)
    assert ours.score(X, lengths) >= expected - 1e-6 * abs(expected)


# ---------------------------------------------------- params and init_params
@ignore_cap
@pytest.mark.parametrize(("name", "covariance_type"), CASES, ids=CASE_IDS)
def test_a_parameter_not_in_params_stays_fixed(name, covariance_type):
    truth, _ = _pair(name, covariance_type, _params(name, covariance_type, seed=0))
    X, lengths = _data(truth, seed=11)
    start = _start(name, covariance_type)
    model = getattr(compat, name)(n_components=K, init_params="", n_iter=3, **_options(name, covariance_type))
    for letter, attribute in model._letters.items():
        model.set_params(params="".join(x for x in model._letters if x != letter))
        for key, value in start.items():
            setattr(model, key, np.array(value, copy=True))
        model.fit(X, lengths)
        assert_array_equal(_stored(model, attribute), start[attribute], err_msg=f"params without {letter!r}")
        others = [a for x, a in model._letters.items() if x != letter and a in ("transmat_", "means_", "lambdas_")]
        assert all(not np.allclose(getattr(model, a), start[a]) for a in others)  # the rest moved


@ignore_cap
@pytest.mark.parametrize(("name", "covariance_type"), CASES, ids=CASE_IDS)
def test_init_params_choose_what_fit_initialises(name, covariance_type):
    truth, _ = _pair(name, covariance_type, _params(name, covariance_type, seed=0))
    X, lengths = _data(truth, seed=12)
    start = _start(name, covariance_type)
    model = getattr(compat, name)(
        n_components=K, params="", n_iter=1, random_state=0, **_options(name, covariance_type)
    )
    emission = "".join(letter for letter in model._letters if letter not in "st")
    model.set_params(init_params=emission)
    for key, value in start.items():
        setattr(model, key, np.array(value, copy=True))
    model.fit(X, lengths)
    assert_array_equal(model.startprob_, start["startprob_"])  # kept: not in init_params
    assert_array_equal(model.transmat_, start["transmat_"])
    for attribute in (model._letters[letter] for letter in emission):
        assert _stored(model, attribute).shape == np.shape(start[attribute])
        assert not np.allclose(_stored(model, attribute), start[attribute]), attribute  # initialised from X


@ignore_cap
def test_unset_parameters_are_initialised_whatever_init_params_says():
    X = np.random.default_rng(13).normal(size=(50, D))
    model = compat.GaussianHMM(n_components=2, init_params="", n_iter=2, random_state=0).fit(X)
    assert model.means_.shape == (2, D) and model.startprob_.shape == (2,)


# ------------------------------------------------------------ attribute shapes
@ignore_cap
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_gaussian_attribute_shapes(covariance_type):
    X = np.random.default_rng(14).normal(size=(80, D))
    model = compat.GaussianHMM(K, covariance_type=covariance_type, n_iter=3, random_state=0).fit(X, [30, 50])
    compact = {"spherical": (K,), "diag": (K, D), "full": (K, D, D), "tied": (D, D)}[covariance_type]
    theirs = hmm.GaussianHMM(K, covariance_type=covariance_type, n_iter=1, random_state=0).fit(X, [30, 50])
    assert model._covars_.shape == compact
    assert model.covars_.shape == (K, D, D)
    if covariance_type != "spherical":  # hmmlearn's reads (K * D, D, D) after its spherical M-step
        assert theirs.covars_.shape == (K, D, D)
    assert model.means_.shape == theirs.means_.shape == (K, D)
    assert model.startprob_.shape == (K,) and model.transmat_.shape == (K, K)
    assert model.n_features == theirs.n_features == D
    model.covars_ = _stored(theirs, "covars_")  # compact in, full out, as hmmlearn
    spherical = _stored(theirs, "covars_")[:, None, None] * np.eye(D) if covariance_type == "spherical" else None
    assert_allclose(model.covars_, theirs.covars_ if spherical is None else spherical)


@ignore_cap
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_gmm_attribute_shapes(covariance_type):
    X = np.random.default_rng(15).normal(size=(120, D))
    model = compat.GMMHMM(2, n_mix=M, covariance_type=covariance_type, n_iter=3, random_state=0).fit(X)
    theirs = hmm.GMMHMM(2, n_mix=M, covariance_type=covariance_type, n_iter=1, random_state=0).fit(X)
    assert model.covars_.shape == theirs.covars_.shape
    assert model.weights_.shape == theirs.weights_.shape == (2, M)
    assert model.means_.shape == theirs.means_.shape == (2, M, D)


@ignore_cap
def test_discrete_attribute_shapes():
    rng = np.random.default_rng(16)
    categorical = compat.CategoricalHMM(2, n_iter=2, random_state=0).fit(rng.integers(0, 5, (60, 1)))
    assert categorical.emissionprob_.shape == (2, 5) and categorical.n_features == 5
    counts = rng.multinomial(4, [0.2, 0.3, 0.5], size=60)
    multinomial = compat.MultinomialHMM(2, n_trials=4, n_iter=2, random_state=0).fit(counts)
    assert multinomial.emissionprob_.shape == (2, 3) and multinomial.n_features == 3
    poisson = compat.PoissonHMM(2, n_iter=2, random_state=0).fit(rng.poisson(3.0, (60, 4)))
    assert poisson.lambdas_.shape == (2, 4) and poisson.n_features == 4


# ---------------------------------------------------------------------- sample
@pytest.mark.parametrize(("name", "covariance_type"), CASES, ids=CASE_IDS)
def test_sample_starts_in_currstate_and_follows_the_chain(name, covariance_type):
    params = _params(name, covariance_type, seed=17)
    params["transmat_"] = np.roll(np.eye(K), 1, axis=1)  # 0 -> 1 -> 2 -> 0
    model, theirs = _pair(name, covariance_type, params)
    X, states = model.sample(7, random_state=3, currstate=2)
    their_X, their_states = theirs.sample(7, random_state=3, currstate=2)
    assert_array_equal(states, [2, 0, 1, 2, 0, 1, 2])
    assert_array_equal(their_states, states)
    assert X.shape == their_X.shape and X.dtype.kind == their_X.dtype.kind
    again, _ = model.sample(7, random_state=3, currstate=2)
    assert_array_equal(X, again)  # a seed repeats the draw


def test_sampled_data_follow_the_emissions():
    model, _ = _pair("PoissonHMM", None, _params("PoissonHMM", None, seed=18))
    model.transmat_ = np.eye(K)
    X, states = model.sample(4000, random_state=0, currstate=1)
    assert (states == 1).all()
    assert_allclose(X.mean(axis=0), model.lambdas_[1], rtol=0.05)


# ---------------------------------------------------------------- monitor_ and warnings
def test_monitor_reports_convergence_and_a_cap_is_not_convergence():
    truth, _ = _pair("GaussianHMM", "diag", _params("GaussianHMM", "diag", seed=0))
    X, lengths = _data(truth, seed=19)
    model = compat.GaussianHMM(K, n_iter=200, tol=1e-3, random_state=0).fit(X, lengths)
    monitor = model.monitor_
    assert monitor.converged and monitor.iter == len(monitor.history) < 200
    assert monitor.history[-1] - monitor.history[-2] < 1e-3 and np.all(np.diff(monitor.history) > -1e-9)
    with pytest.warns(ConvergenceWarning, match="GaussianHMM"):
        capped = compat.GaussianHMM(K, n_iter=2, tol=1e-12, random_state=0).fit(X, lengths)
    assert not capped.monitor_.converged and capped.monitor_.iter == 2


def test_same_random_state_same_fit():
    X = np.random.default_rng(20).normal(size=(100, D))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        first = compat.GaussianHMM(2, random_state=1).fit(X)
        second = compat.GaussianHMM(2, random_state=np.random.RandomState(5)).fit(X)
        again = compat.GaussianHMM(2, random_state=1).fit(X)
    assert_array_equal(first.means_, again.means_)
    assert second.means_.shape == first.means_.shape


# ---------------------------------------------------------------------- priors
@ignore_cap
def test_chain_prior_runs_as_hmmlearn():
    """startprob_prior = c, transmat_prior = c + s * identity: hmmlearn's MAP steps."""
    truth, _ = _pair("CategoricalHMM", None, _params("CategoricalHMM", None, seed=0))
    X, lengths = _data(truth, seed=21)
    priors = {"startprob_prior": 2.0, "transmat_prior": 2.0 + 3.0 * np.eye(K), "emissionprob_prior": 1.5}
    ours, theirs = _pair("CategoricalHMM", None, _start("CategoricalHMM", None), n_iter=3, tol=-np.inf, **priors)
    ours.fit(X, lengths)
    theirs.fit(X, lengths)
    for attribute in ("startprob_", "transmat_", "emissionprob_"):
        assert_allclose(getattr(ours, attribute), getattr(theirs, attribute), rtol=STEP_RTOL, err_msg=attribute)


@pytest.mark.parametrize(
    ("name", "options", "match"),
    [
        ("GaussianHMM", {"startprob_prior": 2.0}, "chain prior"),
        ("GaussianHMM", {"transmat_prior": np.arange(9.0).reshape(3, 3) + 1}, "chain prior"),
        ("GaussianHMM", {"means_weight": 1.0}, "means"),
        ("GaussianHMM", {"covars_weight": 5.0}, "covars_weight"),
        ("GaussianHMM", {"covars_prior": np.array([0.1, 0.2, 0.3])}, "one number"),
        ("GMMHMM", {"covars_prior": 0.1}, "maximum likelihood"),
        ("CategoricalHMM", {"emissionprob_prior": 0.5}, ">= 1"),
        ("PoissonHMM", {"lambdas_prior": 1.0}, "prior"),
    ],
)
def test_priors_without_an_equivalent_are_refused_at_fit(name, options, match):
    model = getattr(compat, name)(n_components=K, **options)
    X = np.random.default_rng(22).poisson(2.0, (30, 1))
    with pytest.raises(ValueError, match=match):
        model.fit(X)


# ----------------------------------------------------------- hyper-parameters and input
def test_hyper_parameters_follow_scikit_learn():
    sklearn_base = pytest.importorskip("sklearn.base")
    model = compat.GaussianHMM(n_components=4, covariance_type="full", n_iter=7)
    assert model.get_params()["covariance_type"] == "full"
    twin = sklearn_base.clone(model)
    assert twin.get_params() == model.get_params() and twin is not model
    assert model.set_params(tol=0.5) is model and model.tol == 0.5
    assert repr(model) == "GaussianHMM(n_components=4, covariance_type='full', n_iter=7, tol=0.5)"
    with pytest.raises(ValueError, match="no hyper-parameter"):
        model.set_params(n_states=2)


@ignore_cap
def test_a_fitted_model_pickles_as_hmmlearn_users_expect():
    """The objects hold only hyper-parameters and arrays (the engine is rebuilt for each call)."""
    X = np.random.default_rng(26).normal(size=(60, D))
    model = compat.GaussianHMM(2, n_iter=3, random_state=0).fit(X)
    copy = pickle.loads(pickle.dumps(model))
    assert copy.score(X) == model.score(X)
    assert copy.monitor_ == model.monitor_


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"params": "stx"}, "params must be a string of the letters"),
        ({"init_params": "q"}, "init_params"),
        ({"algorithm": "forward"}, "algorithm"),
        ({"covariance_type": "banded"}, "covariance_type"),
        ({"n_components": 0}, "n_components"),
        ({"implementation": "fast"}, "implementation"),
    ],
)
def test_bad_hyper_parameters_are_named(options, match):
    with pytest.raises(ValueError, match=match):
        compat.GaussianHMM(**options).fit(np.zeros((10, 1)) + np.arange(10)[:, None])


def test_bad_input_is_named():
    model, _ = _pair("GaussianHMM", "diag", _params("GaussianHMM", "diag", seed=23))
    X = np.zeros((10, D))
    with pytest.raises(ValueError, match="lengths sum to 9"):
        model.score(X, [4, 5])
    with pytest.raises(ValueError, match="2-D"):
        model.score(np.zeros(10))
    with pytest.raises(ValueError, match="algorithm"):
        model.decode(X, algorithm="posterior")
    with pytest.raises(ValueError, match="currstate"):
        model.sample(3, currstate=K)
    categorical, _ = _pair("CategoricalHMM", None, _params("CategoricalHMM", None, seed=23))
    with pytest.raises(ValueError, match="below 4"):
        categorical.score([[0], [4]])
    multinomial = compat.MultinomialHMM(2, n_trials=5)
    with pytest.raises(ValueError, match="row 1 of X counts 4 trials"):
        multinomial.fit([[2, 3], [1, 3]])
    with pytest.raises(ValueError, match="one number or one per row of X"):
        multinomial.set_params(n_trials=[5, 5, 5]).fit([[2, 3], [1, 4]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        varying = compat.MultinomialHMM(2, n_iter=1, random_state=0).fit([[2, 3], [1, 3], [0, 2]])
    assert_array_equal(varying.n_trials, [5, 4, 2])  # learned from the rows, as hmmlearn
    with pytest.raises(ValueError, match="one number of trials"):
        varying.sample(3)


def test_missing_values_are_integrated_out():
    """A difference from hmmlearn (which refuses NaN): a missing step carries no evidence."""
    model, _ = _pair("GaussianHMM", "full", _params("GaussianHMM", "full", seed=24))
    X, _ = _data(model, seed=25)
    gap = X[:40].copy()
    gap[-1] = np.nan  # the last step: its emission integrates to one
    assert model.score(gap) == pytest.approx(model.score(X[:39]), rel=RTOL)
    gap[20, 0] = np.nan  # one dimension of a step: its marginal
    assert np.isfinite(model.score(gap)) and model.score(gap) != model.score(X[:39])
