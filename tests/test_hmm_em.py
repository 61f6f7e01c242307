"""EM for :class:`modeshift.HMM`: monotonicity, recovery of known models, missing
data, fixed parameters, restarts and sampling.

Data are simulated here with numpy (not with ``HMM.sample``) so that a bug in the
sampler cannot hide a bug in the fit, and vice versa.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment

from modeshift import HMM
from modeshift.data import Sequences
from modeshift.models.hmm import check_evidence

COVARIANCES = ("full", "diag", "spherical", "tied")
EMISSIONS = ("gaussian", "gmm", "categorical", "poisson")


# ---------------------------------------------------------------------- helpers
def simulate_chain(startprob: np.ndarray, transmat: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """A Markov chain path drawn by inverse-CDF lookups (independent of modeshift)."""
    uniforms = rng.random(n)
    start_cdf = np.cumsum(startprob)
    cdf = np.cumsum(transmat, axis=1)
    states = np.empty(n, dtype=np.int64)
    state = min(int(np.searchsorted(start_cdf, uniforms[0], side="right")), len(startprob) - 1)
    states[0] = state
    for t in range(1, n):
        state = min(int(np.searchsorted(cdf[state], uniforms[t], side="right")), len(startprob) - 1)
        states[t] = state
    return states


def simulate_gaussian(means: np.ndarray, covars: np.ndarray, states: np.ndarray, rng) -> np.ndarray:
    chol = np.linalg.cholesky(covars)
    noise = rng.standard_normal((len(states), means.shape[1]))
    return means[states] + np.einsum("nij,nj->ni", chol[states], noise)


def simulate_categorical(probs: np.ndarray, states: np.ndarray, rng) -> np.ndarray:
    cdf = np.cumsum(probs, axis=1)[states]
    symbols = (cdf <= rng.random(len(states))[:, None]).sum(axis=1)
    return np.minimum(symbols, probs.shape[1] - 1)[:, None].astype(float)


def match_states(true_states: np.ndarray, learned_states: np.ndarray, n_states: int) -> tuple[np.ndarray, float]:
    """Hungarian matching on the confusion matrix.

    Returns ``perm`` with ``perm[k]`` the learned state matched to true state k,
    and the accuracy of the learned path under that matching.
    """
    confusion = np.zeros((n_states, n_states))
    np.add.at(confusion, (true_states, learned_states), 1.0)
    rows, cols = linear_sum_assignment(-confusion)
    perm = np.empty(n_states, dtype=np.int64)
    perm[rows] = cols
    return perm, confusion[rows, cols].sum() / len(true_states)


def transition_counts(states: np.ndarray, n_states: int, lengths=None) -> np.ndarray:
    counts = np.zeros((n_states, n_states))
    if lengths is None:
        lengths = [len(states)]
    start = 0
    for n in lengths:
        seq = states[start : start + n]
        np.add.at(counts, (seq[:-1], seq[1:]), 1.0)
        start += n
    return counts


def log_prior(model: HMM) -> float:
    """The documented penalties, up to a constant: Dirichlet priors on the chain
    (``transition_concentration``, ``stickiness``) and -reg_covar/2 tr(inv(covariance))
    per distinct covariance matrix."""
    k = model.n_states
    extra = model.transition_concentration - 1.0
    weights = extra + model.stickiness * np.eye(k)
    with np.errstate(divide="ignore"):
        log_a, log_pi = np.log(model.transmat_), np.log(model.startprob_)
    total = float(np.sum(weights * np.where(weights > 0, log_a, 0.0)))
    total += float(extra * log_pi.sum()) if extra and model.init == "learned" else 0.0  # a stationary start: no prior
    if model.emission in ("gaussian", "gmm") and model.reg_covar:
        covars = np.asarray(model.covars_)
        if model.emission == "gaussian":
            matrices = covars[:1] if model.covariance == "tied" else covars
        else:  # tied: one matrix per state, shared by its components
            matrices = covars[:, 0] if model.covariance == "tied" else covars.reshape(-1, *covars.shape[-2:])
        total -= 0.5 * model.reg_covar * float(np.trace(np.linalg.inv(matrices), axis1=1, axis2=2).sum())
    return total


def objective(model: HMM, X, lengths=None) -> float:
    return model.score(X, lengths) + log_prior(model)


# ------------------------------------------------------- EM never decreases
@st.composite
def em_problems(draw):
    emission = draw(st.sampled_from(EMISSIONS))
    covariance = draw(st.sampled_from(COVARIANCES))
    n_states = draw(st.integers(1, 4))
    n_features = 1 if emission == "categorical" else draw(st.integers(1, 3))
    n_mix = draw(st.integers(1, 2)) if emission == "gmm" else 1
    lengths = draw(st.lists(st.integers(1, 90), min_size=1, max_size=3).filter(lambda ls: sum(ls) >= 30))
    missing = draw(st.sampled_from([0.0, 0.0, 0.1, 0.25]))
    whole_rows = draw(st.booleans())
    concentration = draw(st.sampled_from([1.0, 1.0, 1.5, 3.0]))
    stickiness = draw(st.sampled_from([0.0, 0.0, 2.0]))
    reg_covar = draw(st.sampled_from([1e-6, 1e-3, 0.1]))
    init = draw(st.sampled_from(["learned", "learned", "stationary"]))
    seed = draw(st.integers(0, 2**32 - 1))
    return dict(
        init=init,
        emission=emission,
        covariance=covariance,
        n_states=n_states,
        n_features=n_features,
        n_mix=n_mix,
        lengths=lengths,
        missing=missing,
        whole_rows=whole_rows,
        concentration=concentration,
        stickiness=stickiness,
        reg_covar=reg_covar,
        seed=seed,
    )


def _problem_data(p: dict) -> np.ndarray:
    """Data from a random 3-regime chain (not necessarily of the fitted model's kind)."""
    rng = np.random.default_rng(p["seed"])
    n, d = sum(p["lengths"]), p["n_features"]
    transmat = 0.8 * np.eye(3) + 0.2 * rng.dirichlet(np.ones(3), size=3)
    states = simulate_chain(np.ones(3) / 3, transmat, n, rng)
    if p["emission"] in ("gaussian", "gmm"):
        X = rng.normal(0.0, 3.0, (3, d))[states] + rng.standard_normal((n, d)) * rng.uniform(0.3, 2.0, (3, d))[states]
    elif p["emission"] == "categorical":
        X = simulate_categorical(rng.dirichlet(np.ones(4), size=3), states, rng)
    else:
        X = rng.poisson(rng.uniform(0.2, 10.0, (3, d))[states]).astype(float)
    if p["missing"]:
        if p["whole_rows"] or d == 1:
            X[rng.random(n) < p["missing"]] = np.nan
        else:
            X[rng.random((n, d)) < p["missing"]] = np.nan
        # keep enough observed rows to initialise from
        X[: min(10, n)] = np.where(np.isnan(X[: min(10, n)]), 1.0, X[: min(10, n)])
    return X


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(em_problems())
def test_em_never_decreases_the_objective(p):
    X = _problem_data(p)
    model = HMM(
        p["n_states"],
        emission=p["emission"],
        covariance=p["covariance"],
        n_mix=p["n_mix"],
        init=p["init"],
        n_iter=25,
        tol=0.0,
        random_state=p["seed"] % 1000,
        transition_concentration=p["concentration"],
        stickiness=p["stickiness"],
        reg_covar=p["reg_covar"],
    ).fit(X, p["lengths"])
    history = np.asarray(model.log_likelihood_history_)
    assert np.all(np.isfinite(history))
    # the parameters left after the last M-step are at least as good as the last recorded ones
    final = objective(model, X, p["lengths"])
    values = np.r_[history, final]
    slack = 1e-8 * np.maximum(np.abs(values[:-1]), 1.0)
    drops = np.diff(values)
    assert np.all(drops >= -slack), f"objective decreased: steps {drops[drops < -slack]} in {values}"


@pytest.mark.parametrize(
    ("emission", "covariance"),
    [
        ("gaussian", "full"),
        ("gaussian", "tied"),
        ("gaussian", "spherical"),
        ("gmm", "diag"),
        ("gmm", "tied"),
        ("categorical", "full"),
        ("poisson", "full"),
    ],
)
def test_history_is_log_likelihood_plus_log_prior(emission, covariance):
    """``log_likelihood_history_[0]`` is the objective at the hand-set starting point.

    The prior is documented "up to a constant", so differences between two
    starting points are compared; they must equal differences of
    ``score + log prior`` computed from the documented penalties.
    """
    rng = np.random.default_rng(11)
    k, d, m = 2, 2, 2
    states = simulate_chain(np.array([0.5, 0.5]), np.array([[0.9, 0.1], [0.2, 0.8]]), 300, rng)
    if emission == "categorical":
        X = simulate_categorical(np.array([[0.6, 0.3, 0.1], [0.1, 0.2, 0.7]]), states, rng)
    elif emission == "poisson":
        X = rng.poisson(np.array([[1.0, 4.0], [6.0, 2.0]])[states]).astype(float)
    else:
        X = simulate_gaussian(np.array([[0.0, 0.0], [3.0, 1.0]]), np.array([np.eye(2), 0.5 * np.eye(2)]), states, rng)
    X[rng.random(len(X)) < 0.1] = np.nan

    def start(seed):
        r = np.random.default_rng(seed)
        params = {"startprob_": r.dirichlet(np.ones(k)), "transmat_": r.dirichlet(np.ones(k), size=k)}
        if emission == "categorical":
            params["emissionprob_"] = r.dirichlet(np.ones(3), size=k)
        elif emission == "poisson":
            params["lambdas_"] = r.uniform(0.5, 6.0, (k, d))
        else:
            lead = (k,) if emission == "gaussian" else (k, m)
            params["means_"] = r.normal(0, 2, (*lead, d))
            if covariance == "tied":
                shared = np.array([[1.0, 0.3], [0.3, 0.8]]) * r.uniform(0.5, 2.0)
                covars = np.broadcast_to(shared, (*lead, d, d))
                if emission == "gmm":  # tied: shared by the components of a state
                    covars = np.stack([shared * r.uniform(0.5, 2.0) for _ in range(k)])[:, None].repeat(m, axis=1)
            elif covariance == "spherical":
                covars = r.uniform(0.5, 2.0, lead)[..., None, None] * np.eye(d)
            elif covariance == "diag":
                covars = r.uniform(0.5, 2.0, (*lead, d))[..., :, None] * np.eye(d)
            else:
                covars = np.broadcast_to(np.array([[1.0, 0.3], [0.3, 0.8]]), (*lead, d, d)) * r.uniform(0.5, 2.0)
            params["covars_"] = np.array(covars)
            if emission == "gmm":
                params["weights_"] = r.dirichlet(np.ones(m), size=k)
        return params

    recorded, computed = [], []
    for seed in (1, 2):
        model = HMM(
            k,
            emission=emission,
            covariance=covariance,
            n_mix=m if emission == "gmm" else 1,
            n_iter=1,
            transition_concentration=2.0,
            stickiness=3.0,
            reg_covar=0.5,
            n_symbols=3 if emission == "categorical" else None,
        )
        for name, value in start(seed).items():
            setattr(model, name, value)
        computed.append(objective(model, X))
        recorded.append(model.fit(X).log_likelihood_history_[0])
    assert computed[0] != pytest.approx(computed[1], rel=1e-3)  # two genuinely different points
    assert recorded[0] - recorded[1] == pytest.approx(computed[0] - computed[1], rel=1e-8, abs=1e-8)


# ------------------------------------------------------------- recovery
TRUE_STARTPROB = np.array([0.5, 0.3, 0.2])
TRUE_TRANSMAT = np.array([[0.95, 0.03, 0.02], [0.04, 0.92, 0.04], [0.03, 0.05, 0.92]])
TRUE_MEANS = np.array([[0.0, 0.0], [4.0, 1.0], [-1.0, 4.5]])
TRUE_COVARS = np.array([[[1.0, 0.5], [0.5, 1.5]], [[0.8, -0.3], [-0.3, 0.6]], [[1.2, 0.0], [0.0, 0.4]]])
N_STEPS = 20_000

# Tolerances: 5 standard errors. Given the true state path the emission estimates
# are sample moments of n_k (independent) observations and the transition-row
# estimates are multinomial proportions over n_i observed transitions, so
#   SE(mean_kd)    = sqrt(S_dd / n_k),
#   SE(cov_kij)    = sqrt((S_ii S_jj + S_ij^2) / n_k)     (Wishart variance),
#   SE(a_ij)       = sqrt(a_ij (1 - a_ij) / n_i).
# With these well separated states (Mahalanobis distances >= 4) the posteriors are
# nearly 0/1 and EM's estimates are close to these complete-data ones, so the
# observed-data standard errors are barely larger; 5 SE (two-sided p ~ 6e-7 per
# entry) leaves room for that and for the few misclassified steps. ``n_eff``
# scales the counts down when data are missing (see the missing-data tests).
Z = 5.0


def _check_gaussian_recovery(model: HMM, X, states, *, n_eff_emission=1.0, n_eff_transitions=1.0):
    learned_path = model.predict(X)
    perm, accuracy = match_states(states, learned_path, 3)
    # the fitted model should classify about as well as the true model does
    true_model = HMM(3, covariance="full")
    true_model.startprob_, true_model.transmat_ = TRUE_STARTPROB, TRUE_TRANSMAT
    true_model.means_, true_model.covars_ = TRUE_MEANS, TRUE_COVARS
    true_accuracy = (true_model.predict(X) == states).mean()
    assert true_accuracy > 0.97  # the problem is well posed
    assert accuracy >= true_accuracy - 0.005
    # maximum likelihood: at least as likely as the truth
    assert model.score(X) >= true_model.score(X)

    n_k = np.bincount(states, minlength=3) * n_eff_emission
    means, covars = model.means_[perm], model.covars_[perm]
    se_means = np.sqrt(np.einsum("kii->ki", TRUE_COVARS) / n_k[:, None])
    np.testing.assert_array_less(np.abs(means - TRUE_MEANS), Z * se_means)
    diag = np.einsum("kii->ki", TRUE_COVARS)
    se_covars = np.sqrt((diag[:, :, None] * diag[:, None, :] + TRUE_COVARS**2) / n_k[:, None, None])
    np.testing.assert_array_less(np.abs(covars - TRUE_COVARS), Z * se_covars)

    n_i = transition_counts(states, 3).sum(axis=1) * n_eff_transitions
    transmat = model.transmat_[np.ix_(perm, perm)]
    se_a = np.sqrt(TRUE_TRANSMAT * (1 - TRUE_TRANSMAT) / n_i[:, None])
    np.testing.assert_array_less(np.abs(transmat - TRUE_TRANSMAT), Z * se_a)


@pytest.fixture(scope="module")
def gaussian_data():
    rng = np.random.default_rng(2024)
    states = simulate_chain(TRUE_STARTPROB, TRUE_TRANSMAT, N_STEPS, rng)
    return simulate_gaussian(TRUE_MEANS, TRUE_COVARS, states, rng), states


def test_recovers_gaussian_full_covariance_model(gaussian_data):
    X, states = gaussian_data
    model = HMM(3, covariance="full", n_iter=300, tol=1e-6, n_restarts=2, random_state=0).fit(X)
    assert model.converged_
    _check_gaussian_recovery(model, X, states)


def test_recovers_gaussian_model_with_20_percent_missing_steps(gaussian_data):
    X, states = gaussian_data
    X = X.copy()
    missing = np.random.default_rng(7).random(len(X)) < 0.2
    X[missing] = np.nan
    model = HMM(3, covariance="full", n_iter=300, tol=1e-6, n_restarts=2, random_state=1).fit(X)
    assert model.converged_
    # Emission moments come only from observed steps: n_k -> 0.8 n_k. A transition is
    # directly seen only when both its ends are observed (0.8^2 = 0.64 of them); an
    # estimator using just those has SE with 0.64 n_i, and EM uses strictly more.
    _check_gaussian_recovery(model, X, states, n_eff_emission=0.8, n_eff_transitions=0.64)
    # missing steps are still assigned states (by the chain) and mostly correctly
    perm, _ = match_states(states[~missing], model.predict(X)[~missing], 3)
    inverse = np.argsort(perm)
    assert (inverse[model.predict(X)[missing]] == states[missing]).mean() > 0.85


def test_recovers_gaussian_model_with_20_percent_missing_entries(gaussian_data):
    X, states = gaussian_data
    X = X.copy()
    X[np.random.default_rng(8).random(X.shape) < 0.2] = np.nan
    assert np.isnan(X).any(axis=1).mean() > 0.3  # many partially observed rows
    model = HMM(3, covariance="full", n_iter=300, tol=1e-6, n_restarts=2, random_state=2).fit(X)
    assert model.converged_
    # Each entry is observed w.p. 0.8 and each pair of entries (for covariances) or of
    # consecutive rows w.p. >= 0.64; using 0.64 throughout is conservative.
    _check_gaussian_recovery(model, X, states, n_eff_emission=0.64, n_eff_transitions=0.64)


CAT_TRANSMAT = np.array([[0.95, 0.03, 0.02], [0.03, 0.95, 0.02], [0.02, 0.03, 0.95]])
CAT_EMISSIONPROB = np.array([[0.7, 0.2, 0.05, 0.05], [0.05, 0.15, 0.7, 0.1], [0.1, 0.05, 0.15, 0.7]])


@pytest.mark.parametrize("missing_fraction", [0.0, 0.2])
def test_recovers_categorical_model(missing_fraction):
    rng = np.random.default_rng(99)
    states = simulate_chain(TRUE_STARTPROB, CAT_TRANSMAT, N_STEPS, rng)
    X = simulate_categorical(CAT_EMISSIONPROB, states, rng)
    missing = rng.random(N_STEPS) < missing_fraction
    X[missing] = np.nan
    model = HMM(3, emission="categorical", n_iter=500, tol=1e-7, n_restarts=4, random_state=3).fit(X)
    true_model = HMM(3, emission="categorical")
    true_model.startprob_, true_model.transmat_, true_model.emissionprob_ = (
        TRUE_STARTPROB,
        CAT_TRANSMAT,
        CAT_EMISSIONPROB,
    )
    assert model.score(X) >= true_model.score(X)

    perm, accuracy = match_states(states, model.predict(X), 3)
    true_accuracy = (true_model.predict(X) == states).mean()
    assert true_accuracy > 0.85
    assert accuracy >= true_accuracy - 0.01

    # Symbols do not identify the state at a single step (smoothed posteriors are far
    # from 0/1: ~5 % of steps are misclassified even with the true model), so the
    # observed-data standard errors exceed the complete-data ones used here (Louis'
    # missing-information identity). In offline runs with six other data seeds the
    # largest error over all entries was 3.2 complete-data SEs; we allow 6, i.e. still
    # ~4 observed-data SEs if the variance inflation is as large as 2.
    keep = 1.0 - missing_fraction
    n_k = np.bincount(states[~missing], minlength=3)
    b = CAT_EMISSIONPROB
    se_b = np.sqrt(b * (1 - b) / n_k[:, None])
    np.testing.assert_array_less(np.abs(model.emissionprob_[perm] - b), 6.0 * se_b)
    n_i = transition_counts(states, 3).sum(axis=1) * keep**2
    se_a = np.sqrt(CAT_TRANSMAT * (1 - CAT_TRANSMAT) / n_i[:, None])
    np.testing.assert_array_less(np.abs(model.transmat_[np.ix_(perm, perm)] - CAT_TRANSMAT), 6.0 * se_a)


# ------------------------------------------------- missing values are integrated out
def test_missing_values_are_marginalised_exactly():
    """A NaN column scores like the model without that dimension; a trailing NaN
    step adds nothing (the marginal of a step sums to one)."""
    rng = np.random.default_rng(21)
    states = simulate_chain(TRUE_STARTPROB, TRUE_TRANSMAT, 200, rng)
    X = simulate_gaussian(TRUE_MEANS, TRUE_COVARS, states, rng)
    full = SAMPLE_MODELS["gaussian"]()
    marginal = _set(
        HMM(3, covariance="full"),
        startprob_=TRUE_STARTPROB,
        transmat_=TRUE_TRANSMAT,
        means_=TRUE_MEANS[:, :1],
        covars_=TRUE_COVARS[:, :1, :1],
    )
    X_nan = X.copy()
    X_nan[:, 1] = np.nan
    assert full.score(X_nan) == pytest.approx(marginal.score(X[:, :1]), rel=1e-10)
    np.testing.assert_allclose(full.predict_proba(X_nan), marginal.predict_proba(X[:, :1]), atol=1e-10)
    # some entries only: the rows with a NaN score as the marginal of their observed part
    X_part = X.copy()
    X_part[::3, 0] = np.nan
    assert full.score(X_part) != pytest.approx(full.score(X), rel=1e-6)
    assert full.score(np.r_[X_part, [[np.nan, np.nan]]]) == pytest.approx(full.score(X_part), rel=1e-12)

    gmm = SAMPLE_MODELS["gmm"]()
    Y, _ = gmm.sample(100, random_state=1)
    assert gmm.score(np.r_[Y, [[np.nan]]], [50, 51]) == pytest.approx(gmm.score(Y, [50, 50]), rel=1e-12)

    poisson = SAMPLE_MODELS["poisson"]()
    C, _ = poisson.sample(150, random_state=2)
    C = C.astype(float)
    dropped = _set(
        HMM(2, emission="poisson"),
        startprob_=poisson.startprob_,
        transmat_=poisson.transmat_,
        lambdas_=poisson.lambdas_[:, :2],
    )
    C_nan = C.copy()
    C_nan[:, 2] = np.nan
    assert poisson.score(C_nan) == pytest.approx(dropped.score(C[:, :2]), rel=1e-10)

    cat = SAMPLE_MODELS["categorical"]()
    S, _ = cat.sample(120, random_state=3)
    S = S.astype(float)
    assert cat.score(np.r_[S, [[np.nan]]]) == pytest.approx(cat.score(S), rel=1e-12)


# ------------------------------------------------------------ fixed parameters
def _two_state_data(seed=0, n=600):
    rng = np.random.default_rng(seed)
    states = simulate_chain(np.array([0.5, 0.5]), np.array([[0.9, 0.1], [0.15, 0.85]]), n, rng)
    return simulate_gaussian(np.array([[0.0, 0.0], [3.0, 2.0]]), np.array([np.eye(2), 0.7 * np.eye(2)]), states, rng)


@pytest.mark.parametrize("n_restarts", [1, 3])
def test_fixed_transmat_is_kept_exactly(n_restarts):
    X = _two_state_data()
    hand = np.array([[0.6, 0.4], [0.3, 0.7]])  # far from the data's 0.9 / 0.85 persistence
    model = HMM(2, fixed=("transmat_",), n_restarts=n_restarts, n_iter=50, random_state=0)
    model.transmat_ = hand
    model.fit(X)
    np.testing.assert_array_equal(model.transmat_, hand)
    # the free parameters were fitted: the means found the two clusters
    found = np.sort(model.means_[:, 0])
    assert abs(found[0] - 0.0) < 0.3 and abs(found[1] - 3.0) < 0.3
    free = HMM(2, n_iter=50, random_state=0).fit(X)
    assert np.abs(free.transmat_ - hand).max() > 0.1  # the data would have moved it
    assert np.all(np.diff(model.log_likelihood_history_) >= -1e-8 * np.abs(model.log_likelihood_history_[1:]))


def test_fixed_emission_parameters_are_kept_exactly():
    X = _two_state_data(1)
    means = np.array([[0.5, 0.5], [2.0, 1.0]])
    model = HMM(2, fixed=("means_", "startprob_"), n_iter=30, random_state=0)
    model.means_ = means
    model.startprob_ = np.array([0.25, 0.75])
    model.fit(X)
    np.testing.assert_array_equal(model.means_, means)
    np.testing.assert_array_equal(model.startprob_, [0.25, 0.75])

    rng = np.random.default_rng(3)
    symbols = simulate_categorical(np.array([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8]]), rng.integers(0, 2, 400), rng)
    probs = np.array([[0.5, 0.25, 0.25], [0.2, 0.2, 0.6]])
    cat = HMM(2, emission="categorical", fixed=("emissionprob_",), n_iter=20, n_restarts=2, random_state=0)
    cat.emissionprob_ = probs
    cat.fit(symbols)
    np.testing.assert_array_equal(cat.emissionprob_, probs)


def test_unknown_fixed_name_is_rejected():
    with pytest.raises(ValueError, match="lambdas_"):
        HMM(2, fixed=("lambdas_",)).fit(_two_state_data())


def test_warm_start_continues_from_the_current_parameters():
    """With warm_start=True the parameters left by a fit are the next fit's start, so EM continues."""
    X = _two_state_data(2)
    model = HMM(2, n_iter=4, tol=0.0, random_state=0, warm_start=True).fit(X)
    first = list(model.history_)
    after_first = objective(model, X)
    model.fit(X)
    assert model.history_[0] == pytest.approx(after_first, rel=1e-10)
    assert model.history_[0] >= first[-1]


def test_warm_start_after_a_changed_structure_starts_afresh():
    """warm_start reuses parameters only for the same model: with another n_states the old ones cannot serve."""
    X = _two_state_data(2)
    model = HMM(2, n_iter=4, random_state=0, warm_start=True).fit(X)
    model.set_params(n_states=3).fit(X)
    fresh = HMM(3, n_iter=4, random_state=0, warm_start=True).fit(X)
    assert model.transmat_.shape == (3, 3) and model.n_parameters == fresh.n_parameters
    assert model.history_ == fresh.history_


def test_refit_starts_afresh():
    """Without warm_start a second fit forgets the first: it repeats a fresh model's fit exactly."""
    X, Y = _two_state_data(2), _two_state_data(3)
    model = HMM(2, n_iter=4, tol=0.0, random_state=0).fit(X).fit(Y)
    fresh = HMM(2, n_iter=4, tol=0.0, random_state=0).fit(Y)
    assert model.history_ == fresh.history_
    np.testing.assert_array_equal(model.means_, fresh.means_)


def test_a_changed_hyperparameter_takes_effect():
    X = _two_state_data(2)
    model = HMM(2, n_iter=5, random_state=0).fit(X)
    model.set_params(covariance="spherical").fit(X)
    covariance = model.covars_[0]
    assert covariance[0, 1] == 0.0 and covariance[0, 0] == covariance[1, 1]


def test_hand_set_parameters_start_the_first_fit():
    X = _two_state_data(2)
    start = {
        "startprob_": np.array([0.5, 0.5]),
        "transmat_": np.array([[0.6, 0.4], [0.3, 0.7]]),
        "means_": np.array([[0.5, 0.0], [2.0, 2.0]]),
        "covars_": np.array([np.eye(2), 2 * np.eye(2)]),
    }
    reference, model = HMM(2), HMM(2, n_iter=1, random_state=0)
    for name, value in start.items():
        setattr(reference, name, value)
        setattr(model, name, value)
    model.fit(X)
    assert model.history_[0] == pytest.approx(objective(reference, X), rel=1e-12)


# ------------------------------------------------------------------ restarts
@pytest.mark.parametrize("seed", [0, 1])
def test_restarts_keep_the_best_objective(seed):
    rng = np.random.default_rng(seed)
    # overlapping clusters and K=4: EM has several local optima
    states = simulate_chain(np.ones(3) / 3, 0.7 * np.eye(3) + 0.1, 400, rng)
    X = simulate_gaussian(np.array([[0.0, 0.0], [1.5, 0.0], [0.0, 1.5]]), np.array([np.eye(2)] * 3), states, rng)
    single = HMM(4, n_iter=40, n_restarts=1, random_state=seed, reg_covar=1e-3).fit(X)
    several = HMM(4, n_iter=40, n_restarts=3, random_state=seed, reg_covar=1e-3).fit(X)
    # the first restart of `several` is the same run as `single` (same seed)
    assert several.log_likelihood_history_[-1] >= single.log_likelihood_history_[-1]
    # the kept parameters are those of the reported history: their objective is at
    # least its last entry (one more M-step was taken after it)
    assert objective(several, X) >= several.log_likelihood_history_[-1] - 1e-8 * abs(objective(several, X))


# ------------------------------------------------------------------- sample
def _set(model: HMM, **params) -> HMM:
    for name, value in params.items():
        setattr(model, name, value)
    return model


SAMPLE_MODELS = {
    "gaussian": lambda: _set(
        HMM(3, covariance="full"),
        startprob_=TRUE_STARTPROB,
        transmat_=TRUE_TRANSMAT,
        means_=TRUE_MEANS,
        covars_=TRUE_COVARS,
    ),
    "gmm": lambda: _set(
        HMM(2, emission="gmm", n_mix=2, covariance="diag"),
        startprob_=np.array([0.4, 0.6]),
        transmat_=np.array([[0.8, 0.2], [0.3, 0.7]]),
        weights_=np.array([[0.3, 0.7], [0.5, 0.5]]),
        means_=np.array([[[0.0], [3.0]], [[-2.0], [5.0]]]),
        covars_=np.array([[[1.0], [0.5]], [[0.3], [2.0]]]),
    ),
    "categorical": lambda: _set(
        HMM(3, emission="categorical"),
        startprob_=TRUE_STARTPROB,
        transmat_=CAT_TRANSMAT,
        emissionprob_=CAT_EMISSIONPROB,
    ),
    "poisson": lambda: _set(
        HMM(2, emission="poisson"),
        startprob_=np.array([0.3, 0.7]),
        transmat_=np.array([[0.9, 0.1], [0.2, 0.8]]),
        lambdas_=np.array([[1.0, 5.0, 0.0], [7.0, 2.0, 3.0]]),
    ),
}
N_FEATURES = {"gaussian": 2, "gmm": 1, "categorical": 1, "poisson": 3}


@pytest.mark.parametrize("emission", list(SAMPLE_MODELS))
def test_sample_shapes_and_reproducibility(emission):
    model = SAMPLE_MODELS[emission]()
    X, states = model.sample(50, random_state=3)
    assert X.shape == (50, N_FEATURES[emission])
    assert states.shape == (50,)
    assert np.issubdtype(states.dtype, np.integer)
    assert states.min() >= 0 and states.max() < model.n_states
    assert np.all(np.isfinite(X))
    X2, states2 = model.sample(50, random_state=3)
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(states, states2)
    X3, states3 = model.sample(50, random_state=np.random.default_rng(3))
    np.testing.assert_array_equal(X3, X)  # an int seed and a Generator from it agree
    np.testing.assert_array_equal(states3, states)
    X4, _ = model.sample(50, random_state=4)
    assert not np.array_equal(X, X4)
    # the sample is valid input for the model
    assert np.isfinite(model.score(X))


def test_sample_before_fit_or_with_bad_length_raises():
    with pytest.raises((ValueError, AttributeError)):
        HMM(2).sample(10)
    with pytest.raises(ValueError):
        SAMPLE_MODELS["gaussian"]().sample(0)


@pytest.mark.parametrize("emission", list(SAMPLE_MODELS))
def test_long_sample_matches_the_model(emission):
    """Empirical frequencies and moments of a long sample are within 5 standard errors.

    Given the state path, transition counts out of state i are multinomial with n_i
    trials (SE sqrt(a(1-a)/n_i)) and emissions are independent draws, so sample means
    have SE sqrt(var / n_k); 5 SE makes a false alarm very unlikely (p ~ 6e-7 each).
    """
    model = SAMPLE_MODELS[emission]()
    X, states = model.sample(60_000, random_state=12)
    k = model.n_states
    counts = transition_counts(states, k)
    n_i = counts.sum(axis=1)
    a = model.transmat_
    assert np.all(np.abs(counts / n_i[:, None] - a) <= Z * np.sqrt(a * (1 - a) / n_i[:, None]) + 1e-12)

    n_k = np.bincount(states, minlength=k)
    if emission == "gaussian":
        mean_var = np.einsum("kii->ki", model.covars_)
        expected_mean = model.means_
    elif emission == "gmm":
        w, mu, var = model.weights_, model.means_[..., 0], model.covars_[..., 0, 0]
        expected_mean = (w * mu).sum(axis=1)[:, None]
        mean_var = ((w * (var + mu**2)).sum(axis=1) - expected_mean[:, 0] ** 2)[:, None]
    elif emission == "poisson":
        expected_mean, mean_var = model.lambdas_, model.lambdas_
    else:
        freq = np.stack([np.bincount(X[states == s, 0].astype(int), minlength=4) / n_k[s] for s in range(k)])
        b = model.emissionprob_
        assert np.all(np.abs(freq - b) <= Z * np.sqrt(b * (1 - b) / n_k[:, None]))
        return
    for s in range(k):
        got = X[states == s].mean(axis=0)
        assert np.all(np.abs(got - expected_mean[s]) <= Z * np.sqrt(mean_var[s] / n_k[s]) + 1e-12), (s, got)
    if emission == "gaussian":  # the covariance structure, not just the variances
        diag = np.einsum("kii->ki", model.covars_)
        for s in range(k):
            cov = np.cov(X[states == s], rowvar=False)
            se = np.sqrt((diag[s][:, None] * diag[s][None, :] + model.covars_[s] ** 2) / n_k[s])
            assert np.all(np.abs(cov - model.covars_[s]) <= Z * se), (s, cov)
    if emission == "poisson":  # a zero rate gives only zeros
        assert np.all(X[states == 0, 2] == 0)


def test_sample_start_distribution():
    model = SAMPLE_MODELS["gaussian"]()
    first = np.array([model.sample(1, random_state=seed)[1][0] for seed in range(3000)])
    freq = np.bincount(first, minlength=3) / len(first)
    p = model.startprob_
    assert np.all(np.abs(freq - p) <= Z * np.sqrt(p * (1 - p) / len(first)))


def test_a_mode_whose_covariance_collapses_is_a_clear_error_not_a_division_by_zero():
    """reg_covar = 0 on a stretch of identical points (a stuck sensor): the M-step says which
    mode collapsed and what to do, before any kernel divides by a zero variance."""
    values = np.r_[np.zeros(40), np.random.default_rng(0).normal(5.0, 1.0, 40)][:, None]
    with pytest.raises(ValueError, match=r"covariance of mode \d collapsed onto one point in feature 0.*reg_covar"):
        HMM(2, reg_covar=0.0, n_iter=20, random_state=0).fit(values)
    assert np.isfinite(HMM(2, n_iter=20, random_state=0).fit(values).score(values))  # the default is fine


def _leaves(stats):
    if isinstance(stats, dict):
        return [leaf for key in sorted(stats) for leaf in _leaves(stats[key])]
    if isinstance(stats, tuple):
        return [leaf for part in stats for leaf in _leaves(part)]
    return [np.asarray(stats, dtype=float)]


@pytest.mark.filterwarnings("ignore:.*stopped at its cap")
def test_e_step_in_blocks_adds_up_to_the_whole(monkeypatch):
    """The E-step runs over blocks of whole sequences (cache-sized); the sums equal one pass over
    all of them, and impossible data are named by their place in the whole data, not in a block."""
    import modeshift.models.hmm as hmm_module

    rng = np.random.default_rng(3)
    X, lengths = rng.normal(size=(540, 2)), [50, 60, 30, 200, 200]
    model = HMM(3, covariance="full", n_iter=2, random_state=0).fit(X, lengths)
    seqs = model._sequences(X, lengths)
    whole = model._expected_statistics(seqs)
    monkeypatch.setattr(hmm_module, "BLOCK_CELLS", 3 * 130)  # blocks of at most 130 steps
    assert [block.n_sequences for block in seqs.blocks(130)] == [2, 1, 1, 1]
    value, blocked = model._e_step(seqs, {})
    assert value == pytest.approx(float(whole["log_likelihood"]) + model._log_prior(), rel=1e-12)
    for a, b in zip(_leaves(whole), _leaves(blocked), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12)
    far = X.copy()
    far[470] = 1e200  # no mode can emit it: row 470 is step 130 of sequence 4, alone in its block
    with pytest.raises(ValueError, match="sequence 4, time step 130"):
        model._e_step(model._sequences(far, lengths), {})


# ------------------------------------------------------------ working arrays reused
@pytest.mark.parametrize("kind", ["HMM", "ARHMM"])
def test_shard_e_steps_reuse_the_threads_arrays_and_agree_with_fresh_ones(kind):
    """The E-step of a shard (as on a Dask worker) writes its emission table and recursions into
    this thread's working arrays, kept from one shard to the next: the same memory each time, and
    the statistics of a shard the same whatever a shard before it left there (longer or shorter)."""
    from modeshift import ARHMM
    from modeshift.models import em

    rng = np.random.default_rng(3)
    model = (HMM(3, covariance="full") if kind == "HMM" else ARHMM(2, order=2)).set_params(n_iter=3, random_state=0)
    model.fit(rng.normal(size=(400, 2)))
    model.__dict__["_fixed_blocks"] = frozenset()
    shards = [model._em_data(rng.normal(size=(n, 2))) for n in (700, 300, 900)]
    if kind == "HMM":  # missing values: rows the reused table must reset to 0 (the ARHMM's first rows are)
        shards[1].values[[5, 17]] = np.nan
    tables = []
    for shard in shards:
        value, stats = em._shard_e_step(model, shard)
        tables.append(em._thread_scratch()["log_likelihoods"])
        fresh_value, fresh = model._e_step(shard, {})
        assert value + model._log_prior() == pytest.approx(fresh_value, rel=1e-12)
        for name in ("transitions", "emission"):
            for key, array in fresh[name].items():
                np.testing.assert_allclose(stats[name][key], array, rtol=1e-12, atol=1e-12)
    assert tables[0] is tables[1] and tables[2] is not tables[1]  # kept, grown for the longer shard


def test_a_shard_e_step_keeps_at_most_the_limit_of_arrays(monkeypatch):
    from modeshift._kernels.recursions import buffer
    from modeshift.models import em

    model = HMM(2, random_state=0).set_params(n_iter=2).fit(np.random.default_rng(0).normal(size=(300, 1)))
    model.__dict__["_fixed_blocks"] = frozenset()
    monkeypatch.setattr(em, "KEPT_SCRATCH_BYTES", 6000)  # 50 steps' arrays fit (about 4.8 kB), 100 steps' do not
    scratch = em._thread_scratch()
    scratch.clear()  # what earlier tests on this thread left
    em._shard_e_step(model, model._em_data(np.zeros((50, 1))))
    assert "log_likelihoods" in scratch and sum(a.nbytes for a in scratch.values()) <= 6000
    kept = len(scratch)
    em._shard_e_step(model, model._em_data(np.zeros((100, 1))))
    assert 0 < len(scratch) < kept and sum(a.nbytes for a in scratch.values()) <= 6000

    def failing(seqs, scratch=None):  # an E-step that fails after taking a large array
        buffer(scratch, "large", (1000, 2))
        raise ValueError("impossible data")

    monkeypatch.setattr(model, "_expected_statistics", failing)
    with pytest.raises(ValueError, match="impossible"):
        em._shard_e_step(model, model._em_data(np.zeros((50, 1))))
    assert "large" not in scratch and sum(a.nbytes for a in scratch.values()) <= 6000


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_an_emission_log_likelihood_that_is_nan_or_plus_inf_is_located(bad):
    """-inf (an impossible step) passes; NaN or +inf is named by sequence, step and mode."""
    seqs = Sequences.from_array(np.zeros((7, 1)), lengths=[3, 4])
    table = np.zeros((7, 2))
    table[1, 0] = -np.inf
    check_evidence(table, None, seqs, "HMM")
    table[5, 1] = bad
    with pytest.raises(ValueError, match="HMM: mode 1 gives no likelihood .* at sequence 1, time step 2"):
        check_evidence(table, None, seqs, "HMM")


def test_the_cap_warning_names_the_last_change_or_says_there_is_none():
    """After one iteration there is no change to judge convergence by: the warning says so
    (not "nan"); after two it gives the last change."""
    from modeshift.models.em import ConvergenceWarning

    X = np.random.default_rng(0).normal(size=(300, 1))
    with pytest.warns(ConvergenceWarning, match="one iteration: no change to judge by") as one:
        HMM(2, n_iter=1, random_state=0).fit(X)
    with pytest.warns(ConvergenceWarning, match=r"last change in the log-likelihood -?\d") as two:
        HMM(2, n_iter=2, tol=0.0, random_state=0).fit(X)
    assert "nan" not in str(one[0].message) + str(two[0].message)
