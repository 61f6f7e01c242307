"""Negative-binomial durations as a chain of phases: an HSMM run on the HMM's kernels.

A duration d with d - 1 ~ NB(r, p) (r a whole number) is the number of steps a mode lasts when,
after each step, trials that succeed with probability p are run until one fails (one more step)
or the r-th success ends the segment. Its state is the number s = 0 .. r-1 of successes so far,
its phase: a segment starts in phase 0, and from phase s it moves to phase s' >= s with
p^(s' - s) (1 - p) or ends with p^(r - s), the next mode j then following ``transmat_[k, j]``
into its phase 0. The HSMM is thus an HMM on the sum_k r_k (mode, phase) states, exactly, with
no ``max_duration``: :func:`phase_type_hmm` builds it (geometric durations are r = 1).

Which to use. The explicit-duration recursions (:mod:`modeshift._kernels.hsmm`) cost
O(T K D + T K^2) for durations up to D; the phase chain O(T S^2), S = sum_k r_k, on the HMM's
kernels (with everything an HMM offers: streaming, forecasts). Long durations of moderate
dispersion (a shape r of a few, means in the hundreds) favour the phases, S^2 << K D; short or
sharply peaked durations (large r, a Poisson-like law) or other laws favour the explicit form,
which also fits them: the HMM returned here is for inference, its EM would not keep the phase
structure (fit the HSMM, with ``fixed={"duration_shapes_"}`` to hold whole-number shapes).

>>> import numpy as np
>>> from modeshift import HSMM
>>> model = HSMM(n_states=2, duration="negative_binomial", max_duration=400)
>>> model.startprob_, model.transmat_ = np.array([0.5, 0.5]), np.array([[0.0, 1.0], [1.0, 0.0]])
>>> model.duration_shapes_, model.duration_probs_ = np.array([2.0, 3.0]), np.array([0.1, 0.2])
>>> model.means_, model.covars_ = np.array([[0.0], [2.0]]), np.ones((2, 1, 1))
>>> hmm, modes = phase_type_hmm(model)
>>> modes
array([0, 0, 1, 1, 1])
>>> X, _ = model.sample(500, random_state=0)
>>> bool(np.isclose(hmm.score(X), model.score(X)))
True
>>> mode_probabilities = hmm.predict_proba(X) @ np.eye(2)[modes]  # p(z_t | X) of the HSMM
"""

from __future__ import annotations

import numpy as np

from modeshift.models.arhmm import ARHMM
from modeshift.models.hmm import HMM
from modeshift.models.hsmm import HSMM

__all__ = ["phase_matrix", "phase_type_hmm"]


def phase_matrix(shapes: np.ndarray, probs: np.ndarray, transition_matrix: np.ndarray) -> np.ndarray:
    """The transition matrix (S, S) of the (mode, phase) chain, S = sum(shapes), mode k's phases
    in a block of ``shapes[k]`` states: negative-binomial durations d - 1 ~ NB(shapes[k], probs[k])
    and switches ``transition_matrix`` (K, K) (see the module)."""
    shapes = np.asarray(shapes, dtype=np.int64)
    starts = np.r_[0, np.cumsum(shapes)[:-1]]  # phase 0 of each mode
    matrix = np.zeros((shapes.sum(), shapes.sum()))
    for k, (r, p, first) in enumerate(zip(shapes, probs, starts)):
        for s in range(r):
            matrix[first + s, first + s : first + r] = p ** np.arange(r - s) * (1.0 - p)
            matrix[first + s, starts] += p ** (r - s) * transition_matrix[k]
    return matrix


def phase_type_hmm(model: HSMM, max_phases: int = 1000) -> tuple[HMM, np.ndarray]:
    """The HMM (an :class:`~modeshift.models.arhmm.ARHMM` for an AR-HSMM) equal to a fitted ``model``
    with negative-binomial (whole-number shapes) or geometric durations, and the mode of each of its
    states (S,). Equal without truncation: the HSMM's results agree with it when its ``max_duration``
    covers the duration laws. The HSMM must right-censor (``right_censoring=True``, as an HMM does),
    start its first segment afresh (``left_censoring=False``) and have switches without inputs.
    ``max_phases`` bounds S (the HMM costs O(T S^2))."""
    model._check_fitted()
    problems = {
        "duration": model.duration not in ("negative_binomial", "geometric"),
        "right_censoring=False": not model.right_censoring,
        "left_censoring=True": model.left_censoring,
        "input_dim > 0": model.input_dim > 0,
    }
    refused = [name for name, bad in problems.items() if bad]
    if refused:
        raise ValueError(
            f"a phase-type HMM needs negative-binomial or geometric durations, right_censoring=True, "
            f"left_censoring=False and no inputs; this HSMM has {', '.join(refused)}"
            + (f" ({model.duration!r})" if problems["duration"] else "")
        )
    if model.duration == "geometric":
        shapes, probs = np.ones(model._k, dtype=np.int64), model.duration_probs_
    else:
        shapes, probs = np.rint(model.duration_shapes_).astype(np.int64), model.duration_probs_
        fractional = np.flatnonzero(np.abs(model.duration_shapes_ - shapes) > 1e-9 * np.maximum(shapes, 1))
        if fractional.size:
            k = int(fractional[0])
            raise ValueError(
                f"mode {k} has duration shape {model.duration_shapes_[k]:.6g}: a chain of phases needs whole-number "
                "shapes (set them by hand and fit with fixed={'duration_shapes_'})"
            )
    if shapes.sum() > max_phases:
        raise ValueError(f"the duration shapes {shapes} make {shapes.sum()} phases, above max_phases={max_phases}")
    modes = np.repeat(np.arange(model._k), shapes)
    if model.emission == "autoregressive":
        hmm = ARHMM(n_states=len(modes), order=model.order, reg_covar=model.reg_covar)
    else:
        hmm = HMM(
            n_states=len(modes),
            emission=model.emission,
            covariance=model.covariance,
            n_mix=model.n_mix,
            n_symbols=model.n_symbols,
            reg_covar=model.reg_covar,
        )
    starts = np.zeros(len(modes))
    starts[np.r_[0, np.cumsum(shapes)[:-1]]] = model.startprob_
    hmm.startprob_ = starts
    hmm.transmat_ = phase_matrix(shapes, probs, model.transmat_)
    for name in model._blocks[1].parameters:
        setattr(hmm, name, np.repeat(getattr(model, name), shapes, axis=0))
    return hmm, modes
