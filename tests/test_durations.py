"""Duration laws: pmfs against their formulas, M-steps against the maximum they promise, draws, censoring."""

from __future__ import annotations

import math

import numpy as np
import pytest

from modeshift.durations import DURATIONS, NegativeBinomial, censored_counts, make_duration, survival_of

D = 60
PARAMETERS = {
    "poisson": {"rates": np.array([3.0, 11.5])},
    "negative_binomial": {"shapes": np.array([2.5, 0.7]), "probs": np.array([0.4, 0.2])},
    "geometric": {"probs": np.array([0.3, 0.08])},
    "nonparametric": {"probabilities": np.random.default_rng(0).dirichlet(np.ones(D), size=2)},
}


def _law(name: str, max_duration: int = D):
    """The law with PARAMETERS (a nonparametric one on 1 .. D whatever ``max_duration``)."""
    law = make_duration(name, 2, D if name == "nonparametric" else max_duration)
    for attr, value in PARAMETERS[name].items():
        law.set(attr, value)
    return law


def _formula(name: str, d: int, k: int) -> float:
    """The untruncated shifted pmf, written out."""
    x = d - 1
    if name == "poisson":
        lam = PARAMETERS[name]["rates"][k]
        return math.exp(-lam) * lam**x / math.factorial(x)
    if name == "negative_binomial":
        r, p = PARAMETERS[name]["shapes"][k], PARAMETERS[name]["probs"][k]
        return math.gamma(x + r) / (math.gamma(r) * math.factorial(x)) * p**r * (1 - p) ** x
    if name == "geometric":
        p = PARAMETERS[name]["probs"][k]
        return p * (1 - p) ** x
    return PARAMETERS[name]["probabilities"][k, x]


@pytest.mark.parametrize("name", DURATIONS)
def test_pmf_is_the_formula_truncated_and_renormalised(name):
    law = _law(name, 25)
    n = law.max_duration
    expected = np.array([[_formula(name, d, k) for d in range(1, n + 1)] for k in range(2)])
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(law.pmf(), expected, rtol=1e-10)
    survival = law.survival()
    np.testing.assert_allclose(survival[:, 0], 1.0)
    np.testing.assert_allclose(survival[:, :-1] - survival[:, 1:], law.pmf()[:, :-1], atol=1e-15)
    np.testing.assert_allclose(law.mean(), law.pmf() @ np.arange(1, law.max_duration + 1))


@pytest.mark.parametrize("name", DURATIONS)
def test_m_step_recovers_the_law_from_its_expected_counts(name):
    """Counts N p(d) of a law that D covers: the maximiser is the law itself."""
    truth = _law(name, 400)
    counts = 1000.0 * truth.pmf()
    law = make_duration(name, 2, truth.max_duration)
    law.initialize(np.array([5.0, 20.0]))
    law.m_step(counts)
    np.testing.assert_allclose(law.pmf(), truth.pmf(), atol=1e-8)
    for attr, value in PARAMETERS[name].items():
        np.testing.assert_allclose(getattr(law, attr), value, rtol=1e-6)


@pytest.mark.parametrize("name", DURATIONS)
def test_m_step_maximises_the_expected_log_likelihood(name):
    """Any nearby parameter scores lower on the same counts (random, noisy counts)."""
    rng = np.random.default_rng(1)
    counts = rng.gamma(1.0, size=(2, 120)) * np.exp(-np.arange(120) / 15)
    law = make_duration(name, 2, 120)
    law.initialize(np.array([4.0, 9.0]))
    law.m_step(counts)
    best = float((counts * law.log_pmf()).sum())
    for attr in law.parameters.values():
        for _ in range(5):
            value = getattr(law, attr).copy()
            moved = value * np.exp(rng.normal(0, 0.05, size=value.shape))
            if name == "nonparametric":
                moved /= moved.sum(axis=1, keepdims=True)
            elif attr == "probs":
                moved = np.minimum(moved, 1.0)
            setattr(law, attr, moved)
            assert float((counts * law.log_pmf()).sum()) <= best + 1e-9
            setattr(law, attr, value)


def test_negative_binomial_without_overdispersion_goes_to_the_poisson_limit():
    law = NegativeBinomial(1, 40)
    law.initialize(np.array([6.0]))
    counts = np.zeros((1, 40))
    counts[0, 5] = 10.0  # every segment lasts 6: variance 0 < mean
    law.m_step(counts)
    assert law.shapes[0] == NegativeBinomial._SHAPES[1]
    assert law.mean()[0] == pytest.approx(6.0, rel=1e-4)


@pytest.mark.parametrize("name", DURATIONS)
def test_draws_follow_the_pmf(name):
    law = _law(name, 30)
    n = law.max_duration
    states = np.repeat([0, 1], 20_000)
    draws = law.sample(states, np.random.default_rng(2))
    assert draws.min() >= 1 and draws.max() <= n
    for k in range(2):
        freq = np.bincount(draws[states == k] - 1, minlength=n) / 20_000
        pmf = law.pmf()[k]
        assert (np.abs(freq - pmf) < 4 * np.sqrt(pmf / 20_000) + 2 / 20_000).all()


@pytest.mark.parametrize("name", DURATIONS)
def test_initial_laws_have_the_requested_means(name):
    law = make_duration(name, 2, 200)
    law.initialize(np.array([3.0, 12.0]))
    expected = [3.0, 12.0] if name != "nonparametric" else 0.5 * np.array([3.0, 12.0]) + 0.5 * 100.5
    np.testing.assert_allclose(law.mean(), expected, rtol=1e-6)


def test_censored_counts_spread_a_seen_length_over_the_longer_ones():
    pmf = np.random.default_rng(3).dirichlet(np.ones(6), size=2)
    seen = np.random.default_rng(4).random((2, 6))
    expected = np.zeros_like(seen)
    for k in range(2):
        for d in range(1, 7):
            for full in range(d, 7):
                expected[k, full - 1] += seen[k, d - 1] * pmf[k, full - 1] / pmf[k, d - 1 :].sum()
    np.testing.assert_allclose(censored_counts(seen, pmf), expected, rtol=1e-12)
    np.testing.assert_allclose(censored_counts(seen, pmf).sum(axis=1), seen.sum(axis=1))
    np.testing.assert_allclose(survival_of(pmf)[:, 0], 1.0)


@pytest.mark.parametrize(
    ("name", "attr", "value", "message"),
    [
        ("poisson", "rates", [-1.0, 2.0], "duration_rates_ must be >= 0"),
        ("geometric", "probs", [0.0, 0.5], r"duration_probs_ must be in \(0, 1\]"),
        ("negative_binomial", "shapes", [1.0, -2.0], "duration_shapes_ must be > 0"),
        ("nonparametric", "probabilities", np.ones((2, 5)), "duration_pmf_"),
        ("poisson", "rates", [1.0, 2.0, 3.0], "duration_rates_"),
    ],
)
def test_bad_parameters_are_refused_by_name(name, attr, value, message):
    with pytest.raises(ValueError, match=message):
        make_duration(name, 2, 5).set(attr, np.asarray(value))
