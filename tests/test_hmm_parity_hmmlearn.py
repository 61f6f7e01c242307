"""Parity of :class:`modeshift.HMM` with hmmlearn (a test-only dependency).

With the same parameters, ``score`` must equal hmmlearn's to 1e-8 relative for
every emission type both libraries support (Gaussian with the four covariance
types, categorical, Poisson, Gaussian mixtures), and so must the posteriors,
the Viterbi path and its log-probability. One EM step from the same starting
point must give the same parameters to 1e-6, with hmmlearn's priors set so
that its M-step is plain maximum likelihood (modeshift: ``reg_covar=0``).

The data are drawn here with numpy from the true parameters, independently of
both libraries' samplers.
"""

from __future__ import annotations

import numpy as np
import pytest

hmmlearn_hmm = pytest.importorskip("hmmlearn.hmm")

from modeshift import HMM  # noqa: E402

SCORE_RTOL = 1e-8
POSTERIOR_ATOL = 1e-8
EM_RTOL = 1e-6
EM_ATOL = 1e-10  # for entries that are (near) zero, e.g. unused transitions

CASES = [
    ("gaussian", "full"),
    ("gaussian", "diag"),
    ("gaussian", "spherical"),
    ("gaussian", "tied"),
    ("categorical", None),
    ("poisson", None),
    ("gmm", "full"),
    ("gmm", "diag"),
    ("gmm", "spherical"),
    ("gmm", "tied"),
]
CASE_IDS = [e if c is None else f"{e}-{c}" for e, c in CASES]

K, D, M, N_SYMBOLS = 3, 2, 2, 5
LENGTHS = [180, 1, 95, 60]  # includes a one-step sequence


# --------------------------------------------------------------------- helpers
def _random_spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.3 * np.eye(d)


def _compact_covariances(rng: np.random.Generator, covariance: str, shape: tuple[int, ...], d: int) -> np.ndarray:
    """Random covariances in hmmlearn's compact form; ``shape`` is (K,) or (K, M)."""
    if covariance == "full":
        return np.stack([_random_spd(rng, d) for _ in range(int(np.prod(shape)))]).reshape(*shape, d, d)
    if covariance == "diag":
        return rng.uniform(0.3, 2.0, size=(*shape, d))
    if covariance == "spherical":
        return rng.uniform(0.3, 2.0, size=shape)
    raise AssertionError(covariance)


def _full(compact: np.ndarray, covariance: str, lead: tuple[int, ...], d: int) -> np.ndarray:
    """hmmlearn's compact covariances -> full matrices with leading shape ``lead``."""
    if covariance == "full":
        return compact.reshape(*lead, d, d)
    if covariance == "diag":
        return compact[..., :, None] * np.eye(d)
    if covariance == "spherical":
        return compact[..., None, None] * np.eye(d)
    if covariance == "tied":
        return (
            np.broadcast_to(compact, (*lead, d, d))
            if compact.ndim == 2
            else np.broadcast_to(compact[:, None], (*lead, d, d))
        )
    raise AssertionError(covariance)


def _random_params(emission: str, covariance: str | None, seed: int) -> dict[str, np.ndarray]:
    """Well-conditioned random parameters (hmmlearn's compact forms)."""
    rng = np.random.default_rng(seed)
    transmat = rng.dirichlet(np.ones(K), size=K) + 3.0 * np.eye(K)
    params = {
        "startprob_": rng.dirichlet(2.0 * np.ones(K)),
        "transmat_": transmat / transmat.sum(axis=1, keepdims=True),
    }
    if emission == "gaussian":
        params["means_"] = rng.normal(0.0, 2.0, size=(K, D))
        params["covars_"] = (
            _random_spd(rng, D) if covariance == "tied" else _compact_covariances(rng, covariance, (K,), D)
        )
    elif emission == "gmm":
        params["weights_"] = rng.dirichlet(3.0 * np.ones(M), size=K)
        params["means_"] = rng.normal(0.0, 2.0, size=(K, M, D))
        params["covars_"] = (
            np.stack([_random_spd(rng, D) for _ in range(K)])
            if covariance == "tied"
            else _compact_covariances(rng, covariance, (K, M), D)
        )
    elif emission == "categorical":
        params["emissionprob_"] = rng.dirichlet(np.ones(N_SYMBOLS), size=K)
    elif emission == "poisson":
        params["lambdas_"] = rng.uniform(0.5, 8.0, size=(K, 3))
    return params


def _full_covariances(emission: str, covariance: str, params: dict[str, np.ndarray]) -> np.ndarray:
    lead = (K,) if emission == "gaussian" else (K, M)
    return np.array(_full(params["covars_"], covariance, lead, D))


def _simulate(emission: str, covariance: str | None, params: dict[str, np.ndarray], n: int, rng) -> np.ndarray:
    """Draw one sequence with numpy (independent of both libraries)."""
    states = np.empty(n, dtype=np.int64)
    states[0] = rng.choice(K, p=params["startprob_"])
    for t in range(1, n):
        states[t] = rng.choice(K, p=params["transmat_"][states[t - 1]])
    if emission == "categorical":
        return np.array([[rng.choice(N_SYMBOLS, p=params["emissionprob_"][s])] for s in states])
    if emission == "poisson":
        return rng.poisson(params["lambdas_"][states])
    covs = _full_covariances(emission, covariance, params)
    if emission == "gaussian":
        return np.array([rng.multivariate_normal(params["means_"][s], covs[s]) for s in states])
    out = []
    for s in states:
        m = rng.choice(M, p=params["weights_"][s])
        out.append(rng.multivariate_normal(params["means_"][s, m], covs[s, m]))
    return np.array(out)


def _data(emission: str, covariance: str | None, params: dict[str, np.ndarray], seed: int):
    rng = np.random.default_rng(seed)
    X = np.concatenate([_simulate(emission, covariance, params, n, rng) for n in LENGTHS])
    return X, np.array(LENGTHS)


def _hmmlearn(emission: str, covariance: str | None, params: dict[str, np.ndarray], **kwargs):
    """An hmmlearn model with these parameters, no initialisation, ML M-step (neutral priors)."""
    common = dict(n_components=K, init_params="", startprob_prior=1.0, transmat_prior=1.0, **kwargs)
    if emission == "gaussian":
        # means_weight = 0 removes the normal prior on the means; covars_prior = 0 and
        # covars_weight = 0 make the denominators max(w - 1, 0) + N (diag, spherical)
        # and max(w - D, 0) + N (full, tied) equal to N: the ML covariance.
        model = hmmlearn_hmm.GaussianHMM(
            covariance_type=covariance,
            params="stmc",
            means_prior=0.0,
            means_weight=0.0,
            covars_prior=0.0,
            covars_weight=0.0,
            **common,
        )
    elif emission == "gmm":
        # hmmlearn's GMM M-step divides by N + 1 + nu + D + 1 (full), N + 1 + 2(alpha + 1)
        # (diag), D (N + 1) + 2(alpha + 1) (spherical), N_state + M + nu + D + 1 (tied),
        # with zero scale matrices these choices make every denominator N: plain ML.
        # (hmmlearn's default alpha for spherical is -(M + 2) / 2, which is neutral only
        # when M == D, so it is set explicitly here.)
        weight = {
            "full": -(D + 2.0),
            "diag": 0.0,
            "spherical": 0.0,
            "tied": -(M + D + 1.0),
        }[covariance]
        prior = {"full": 0.0, "diag": -1.5, "spherical": -(D + 2.0) / 2.0, "tied": 0.0}[covariance]
        model = hmmlearn_hmm.GMMHMM(
            n_mix=M,
            covariance_type=covariance,
            params="stmcw",
            weights_prior=1.0,
            means_prior=0.0,
            means_weight=0.0,
            covars_prior=prior,
            covars_weight=weight,
            **common,
        )
    elif emission == "categorical":
        model = hmmlearn_hmm.CategoricalHMM(n_features=N_SYMBOLS, params="ste", emissionprob_prior=1.0, **common)
    else:
        model = hmmlearn_hmm.PoissonHMM(params="stl", lambdas_prior=0.0, lambdas_weight=0.0, **common)
    for name, value in params.items():
        setattr(model, name, np.array(value, copy=True))
    return model


def _modeshift(emission: str, covariance: str | None, params: dict[str, np.ndarray], **kwargs) -> HMM:
    model = HMM(
        K,
        emission=emission,
        covariance=covariance or "full",
        n_mix=M if emission == "gmm" else 1,
        n_symbols=N_SYMBOLS if emission == "categorical" else None,
        **kwargs,
    )
    # means_ before covars_: a spherical compact form needs the dimension.
    for name in ("startprob_", "transmat_", "weights_", "means_", "covars_", "emissionprob_", "lambdas_"):
        if name in params:
            setattr(model, name, np.array(params[name], copy=True))
    return model


def _case(emission, covariance, seed=0):
    params = _random_params(emission, covariance, seed)
    X, lengths = _data(emission, covariance, params, seed + 100)
    return params, X, lengths


# ------------------------------------------------------------------ inference
@pytest.mark.parametrize(("emission", "covariance"), CASES, ids=CASE_IDS)
def test_score_matches_hmmlearn(emission, covariance):
    params, X, lengths = _case(emission, covariance)
    ours = _modeshift(emission, covariance, params)
    theirs = _hmmlearn(emission, covariance, params)
    # one sequence
    assert ours.score(X) == pytest.approx(theirs.score(X), rel=SCORE_RTOL, abs=0)
    # several sequences
    expected = theirs.score(X, lengths)
    assert ours.score(X, lengths) == pytest.approx(expected, rel=SCORE_RTOL, abs=0)
    # splitting matters (the start distribution applies at each start): the check is not vacuous
    assert abs(theirs.score(X) - expected) > 1e-6 * abs(expected)
    # a list of arrays is the same data as (X, lengths)
    pieces = np.split(X, np.cumsum(lengths)[:-1])
    assert ours.score(pieces) == pytest.approx(expected, rel=SCORE_RTOL, abs=0)


@pytest.mark.parametrize(("emission", "covariance"), CASES, ids=CASE_IDS)
def test_posteriors_and_viterbi_match_hmmlearn(emission, covariance):
    params, X, lengths = _case(emission, covariance, seed=1)
    ours = _modeshift(emission, covariance, params)
    theirs = _hmmlearn(emission, covariance, params)

    posteriors = ours.predict_proba(X, lengths)
    assert posteriors.shape == (len(X), K)
    np.testing.assert_allclose(posteriors, theirs.predict_proba(X, lengths), rtol=0, atol=POSTERIOR_ATOL)

    log_prob, path = ours.decode(X, lengths)
    their_log_prob, their_path = theirs.decode(X, lengths, algorithm="viterbi")
    assert log_prob == pytest.approx(their_log_prob, rel=SCORE_RTOL, abs=0)
    np.testing.assert_array_equal(path, their_path)
    np.testing.assert_array_equal(ours.predict(X, lengths), theirs.predict(X, lengths))

    # single sequence too
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), rtol=0, atol=POSTERIOR_ATOL)
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))


def test_left_to_right_chain_with_outlier_matches_hmmlearn():
    """Structural zeros in the chain and an observation only a barely reachable state explains.

    This is the hard case for a scaled forward pass (the step's evidence underflows
    relative to every reachable state); hmmlearn works in log space throughout.
    """
    startprob = np.array([1.0, 0.0, 0.0])
    transmat = np.array([[0.95, 0.05, 0.0], [0.0, 0.9, 0.1], [0.0, 0.0, 1.0]])
    means = np.array([[0.0, 0.0], [4.0, 0.0], [60.0, 60.0]])
    covars = np.stack([np.eye(2), np.array([[1.0, 0.3], [0.3, 0.5]]), 0.05 * np.eye(2)])
    params = {"startprob_": startprob, "transmat_": transmat, "means_": means, "covars_": covars}
    rng = np.random.default_rng(5)
    X = np.r_[rng.normal(0, 1, (30, 2)), rng.normal([4, 0], 0.7, (30, 2)), [[60.0, 60.0]], rng.normal(0, 1, (5, 2))]
    # the outlier row is ~40 standard deviations from states 0 and 1; after it, state 2 is absorbing
    X[-5:] = means[2] + rng.normal(0, 0.2, (5, 2))
    lengths = np.array([40, len(X) - 40])
    ours = _modeshift("gaussian", "full", params)
    theirs = _hmmlearn("gaussian", "full", params)
    for args in ((X,), (X, lengths)):
        assert np.isfinite(theirs.score(*args))
        assert ours.score(*args) == pytest.approx(theirs.score(*args), rel=SCORE_RTOL, abs=0)
        np.testing.assert_allclose(ours.predict_proba(*args), theirs.predict_proba(*args), rtol=0, atol=POSTERIOR_ATOL)
        log_prob, path = ours.decode(*args)
        their_log_prob, their_path = theirs.decode(*args)
        assert log_prob == pytest.approx(their_log_prob, rel=SCORE_RTOL, abs=0)
        np.testing.assert_array_equal(path, their_path)


@pytest.mark.parametrize("covariance", ["full", "diag", "spherical", "tied"])
@pytest.mark.parametrize("emission", ["gaussian", "gmm"])
def test_compact_and_full_covariance_forms_agree(emission, covariance):
    """Setting covars_ in hmmlearn's compact form or as full matrices is the same model."""
    params, X, lengths = _case(emission, covariance, seed=2)
    compact = _modeshift(emission, covariance, params)
    full_params = dict(params, covars_=_full_covariances(emission, covariance, params))
    full = _modeshift(emission, covariance, full_params)
    expected_shape = (K, D, D) if emission == "gaussian" else (K, M, D, D)
    assert compact.covars_.shape == expected_shape
    np.testing.assert_array_equal(compact.covars_, full_params["covars_"])
    np.testing.assert_array_equal(full.covars_, full_params["covars_"])
    assert compact.score(X, lengths) == full.score(X, lengths)


@pytest.mark.parametrize("emission", ["gaussian", "gmm"])
def test_tied_covariances_must_be_shared(emission):
    """covariance='tied' means one matrix (per state for gmm, as in hmmlearn).

    Full matrices that differ where they must be shared are rejected, as non-diagonal
    matrices are for covariance='diag'; accepting them would make score() use
    covariances the model cannot represent (and n_parameters and the log prior count
    only one of them).
    """
    lead = (K,) if emission == "gaussian" else (K, M)
    model = HMM(K, emission=emission, covariance="tied", n_mix=M if emission == "gmm" else 1)
    model.means_ = np.zeros((*lead, D))
    covars = np.broadcast_to(np.eye(D), (*lead, D, D)).copy()
    covars[(0,) * len(lead)] *= 2.0  # first state (first component) differs
    with pytest.raises(ValueError):
        model.covars_ = covars
    # shared matrices in full form are fine
    model.covars_ = np.broadcast_to(np.eye(D), (*lead, D, D))
    np.testing.assert_array_equal(model.covars_, np.broadcast_to(np.eye(D), (*lead, D, D)))


# ------------------------------------------------------------------ one EM step
def _hmmlearn_covariances_about_new_means(theirs, covariance: str, old_means: np.ndarray) -> np.ndarray:
    """hmmlearn's GMM covariance update, re-centred on the updated means.

    hmmlearn accumulates the GMM scatter ``sum_t r_tkm (x_t - mu_km)(x_t - mu_km)^T``
    in the E-step, i.e. about the *old* means, and divides it by N_km in the M-step;
    the exact M-step (modeshift's) uses the *updated* means. The two differ by
    construction, by exactly N_km (mu_new - mu_old)(mu_new - mu_old)^T (the parallel-axis
    identity), so we remove that term from hmmlearn's result and compare the rest
    to 1e-6 like every other parameter. The shift is checked to be non-negligible,
    so the correction is not vacuous.
    """
    shift = theirs.means_ - old_means  # (K, M, D)
    outer = shift[..., :, None] * shift[..., None, :]  # (K, M, D, D)
    full = _full(theirs.covars_, covariance, (K, M), D)
    if covariance == "full":
        correction = outer
    elif covariance == "diag":
        correction = np.einsum("kmii->kmi", outer)[..., :, None] * np.eye(D)
    elif covariance == "spherical":
        correction = (np.einsum("kmii->km", outer) / D)[..., None, None] * np.eye(D)
    else:  # tied within a state: pooled over components with weights N_km / N_k = new weights_
        pooled = np.einsum("km,kmij->kij", theirs.weights_, outer)
        correction = np.broadcast_to(pooled[:, None], (K, M, D, D))
    assert np.abs(correction).max() > 1e-4
    return full - correction


def _hmmlearn_gaussian_covariances(theirs, covariance: str) -> np.ndarray:
    """GaussianHMM's covariances as full (K, D, D) matrices.

    hmmlearn's ``covars_`` property cannot be used after its spherical M-step: that
    stores the variances tiled to (K, D), which ``fill_covars`` then ravels into K * D
    matrices (an hmmlearn quirk). The stored ``_covars_`` are expanded here instead.
    """
    stored = np.asarray(theirs._covars_)
    if covariance == "spherical" and stored.ndim == 2:
        assert np.allclose(stored, stored[:, :1])
        stored = stored[:, 0]
    return np.array(_full(stored, covariance, (K,), D))


@pytest.mark.parametrize(("emission", "covariance"), CASES, ids=CASE_IDS)
def test_one_em_step_matches_hmmlearn(emission, covariance):
    params, X, lengths = _case(emission, covariance, seed=3)
    # start EM away from the generating parameters so the step moves them
    start = _random_params(emission, covariance, seed=33)
    ours = _modeshift(emission, covariance, start, n_iter=1, reg_covar=0.0)
    theirs = _hmmlearn(emission, covariance, start, n_iter=1, tol=0.0)
    if emission == "categorical":
        X = X.astype(np.int64)
    ours.fit(X, lengths)
    theirs.fit(X, lengths)

    # the objective recorded for the starting point is the log-likelihood (no prior here)
    assert len(ours.log_likelihood_history_) == 1
    assert ours.log_likelihood_history_[0] == pytest.approx(theirs.monitor_.history[0], rel=SCORE_RTOL, abs=0)

    def close(name, ours_value, theirs_value):
        np.testing.assert_allclose(ours_value, theirs_value, rtol=EM_RTOL, atol=EM_ATOL, err_msg=name)

    for name in ("startprob_", "transmat_"):
        close(name, getattr(ours, name), getattr(theirs, name))
        assert not np.allclose(getattr(ours, name), start[name], rtol=1e-3)  # the step did something
    if emission == "gaussian":
        close("means_", ours.means_, theirs.means_)
        close("covars_", ours.covars_, _hmmlearn_gaussian_covariances(theirs, covariance))
    elif emission == "gmm":
        close("weights_", ours.weights_, theirs.weights_)
        close("means_", ours.means_, theirs.means_)
        close("covars_", ours.covars_, _hmmlearn_covariances_about_new_means(theirs, covariance, start["means_"]))
    elif emission == "categorical":
        close("emissionprob_", ours.emissionprob_, theirs.emissionprob_)
    else:
        close("lambdas_", ours.lambdas_, theirs.lambdas_)


@pytest.mark.parametrize(
    ("emission", "covariance"),
    [c for c in CASES if c[0] != "gmm"],
    ids=[i for i, c in zip(CASE_IDS, CASES) if c[0] != "gmm"],
)
def test_three_em_steps_match_hmmlearn(emission, covariance):
    """Several steps in a row (each starting from the previous step's result) stay in step."""
    params, X, lengths = _case(emission, covariance, seed=4)
    start = _random_params(emission, covariance, seed=44)
    ours = _modeshift(emission, covariance, start, n_iter=3, tol=-np.inf, reg_covar=0.0)
    theirs = _hmmlearn(emission, covariance, start, n_iter=3, tol=-np.inf)
    if emission == "categorical":
        X = X.astype(np.int64)
    ours.fit(X, lengths)
    theirs.fit(X, lengths)
    np.testing.assert_allclose(ours.log_likelihood_history_, list(theirs.monitor_.history), rtol=SCORE_RTOL)
    for name in params:
        ours_value = getattr(ours, name)
        theirs_value = getattr(theirs, name)
        if name == "covars_":
            theirs_value = _hmmlearn_gaussian_covariances(theirs, covariance)
        np.testing.assert_allclose(ours_value, theirs_value, rtol=EM_RTOL, atol=EM_ATOL, err_msg=name)
