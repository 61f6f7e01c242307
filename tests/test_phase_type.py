"""The phase-type HMM: its chain has the negative-binomial duration law, and it gives the
explicit-duration HSMM's results when max_duration covers the laws."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import stats

from modeshift import HSMM
from modeshift.models.em import ConvergenceWarning
from modeshift.models.phase_type import phase_matrix, phase_type_hmm


@pytest.mark.parametrize(("shape", "prob"), [(1, 0.3), (3, 0.3), (4, 0.05), (2, 1.0)])
def test_the_chain_of_phases_has_the_negative_binomial_duration_law(shape, prob):
    """P(d) = a Q^(d-1) e: start in phase 0, move within the mode by Q, leave by e (to the other mode)."""
    matrix = phase_matrix(np.array([shape, 2]), np.array([prob, 0.5]), np.array([[0.0, 1.0], [1.0, 0.0]]))
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, rtol=1e-14)
    within = matrix[:shape, :shape]
    leave = matrix[:shape, shape]
    np.testing.assert_allclose(matrix[:shape, shape + 1 :], 0.0)  # into the next mode's phase 0 only
    law, state = [], np.eye(shape)[0]
    for _ in range(200):
        law.append(state @ leave)
        state = state @ within
    np.testing.assert_allclose(law, stats.nbinom.pmf(np.arange(200), shape, prob), atol=1e-14)


def _fitted(emission: str, duration: str = "negative_binomial", **options) -> tuple[HSMM, np.ndarray]:
    """A small HSMM of each emission (three EM steps from data, then durations set by hand) and data from it."""
    rng = np.random.default_rng(0)
    data = {
        "gaussian": rng.normal(size=(200, 2)),
        "gmm": rng.normal(size=(200, 2)),
        "categorical": rng.integers(0, 4, size=200),
        "poisson": rng.poisson(3.0, size=200),
        "autoregressive": np.cumsum(rng.normal(size=200))[:, None],
    }[emission]
    model = HSMM(
        n_states=3, duration=duration, max_duration=300, emission=emission, n_iter=3, random_state=0, **options
    )
    if emission == "gmm":
        model.n_mix = 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(data)
    if duration == "geometric":
        model.duration_probs_ = np.array([0.2, 0.3, 0.1])
    else:
        model.duration_shapes_, model.duration_probs_ = np.array([2.0, 1.0, 4.0]), np.array([0.3, 0.2, 0.4])
    X, _ = model.sample(150, random_state=1)
    return model, X


@pytest.mark.parametrize("emission", ["gaussian", "gmm", "categorical", "poisson", "autoregressive"])
def test_the_phase_type_hmm_is_the_hsmm(emission):
    """0.8^300 ~ 1e-29: max_duration = 300 covers the laws, so the HSMM's results are the HMM's."""
    model, X = _fitted(emission)
    hmm, modes = phase_type_hmm(model)
    to_modes = np.eye(3)[modes]
    assert len(modes) == 7
    assert hmm.score(X) == pytest.approx(model.score(X), rel=1e-12)
    np.testing.assert_allclose(hmm.predict_proba(X) @ to_modes, model.predict_proba(X), atol=1e-10)
    np.testing.assert_allclose(hmm.filter_proba(X) @ to_modes, model.filter_proba(X), atol=1e-10)
    ours, theirs = hmm.forecast(X, 4), model.forecast(X, 4)
    np.testing.assert_allclose(ours.mode_probabilities @ to_modes, theirs.mode_probabilities, atol=1e-10)
    np.testing.assert_allclose(ours.means, theirs.means, atol=1e-10)


def test_geometric_durations_are_one_phase_each():
    model, X = _fitted("gaussian", duration="geometric")
    hmm, modes = phase_type_hmm(model)
    np.testing.assert_array_equal(modes, [0, 1, 2])
    np.testing.assert_allclose(np.diag(hmm.transmat_), 1.0 - model.duration_probs_, rtol=1e-14)
    assert hmm.score(X) == pytest.approx(model.score(X), rel=1e-12)


def test_what_a_chain_of_phases_cannot_hold_is_refused():
    model, _ = _fitted("gaussian")
    model.duration_shapes_ = np.array([2.0, 1.5, 4.0])
    with pytest.raises(ValueError, match="mode 1 has duration shape 1.5: a chain of phases needs whole-number"):
        phase_type_hmm(model)
    model.duration_shapes_ = np.array([2.0, 1.0, 4.0])
    with pytest.raises(ValueError, match="above max_phases=5"):
        phase_type_hmm(model, max_phases=5)
    poisson = HSMM(n_states=2, duration="poisson", max_duration=10)
    poisson.startprob_, poisson.transmat_ = np.array([0.5, 0.5]), np.array([[0.0, 1.0], [1.0, 0.0]])
    poisson.duration_rates_, poisson.means_, poisson.covars_ = np.ones(2), np.zeros((2, 1)), np.ones((2, 1, 1))
    with pytest.raises(ValueError, match="this HSMM has duration .'poisson'."):
        phase_type_hmm(poisson)
    censored, _ = _fitted("gaussian", left_censoring=True)
    with pytest.raises(ValueError, match="left_censoring=True"):
        phase_type_hmm(censored)
