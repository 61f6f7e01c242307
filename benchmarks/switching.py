"""Benchmark modeshift's switching models against dynamax, statsmodels and ssm.

Three cases, each library given the same data:

- arhmm: an autoregressive HMM on one simulated sequence of a 3-mode bivariate
  AR(2) (the well-separated model of the test suite; T = 10,000, seeded).
  modeshift's ``ARHMM(n_states=3, order=2)`` vs dynamax's
  ``LinearAutoregressiveHMM`` and ssm's ``HMM(3, 2, observations="ar")``, each
  running exactly 50 EM iterations (no early stop) from the SAME starting
  parameters: the true model perturbed (seeded noise on the lag matrices and
  intercepts, covariances 0.2 I, a 0.9-diagonal transition matrix, a uniform
  initial distribution).  Conventions, aligned: the first ``lags`` = 2
  observations are conditioned on everywhere.  dynamax gets ``y[2:]`` with the
  lagged values of the full series as inputs (its ``compute_inputs(y)[2:]``,
  not zero padding); modeshift gets dynamax's default Dirichlet(1.1) prior on
  the initial and transition probabilities (with the flat prior, concentration
  1, dynamax's EM turns NaN after two iterations on these data; ssm has no
  such prior, a negligible difference at this T); the lag matrices
  ``[A_1, A_2]`` are laid out as modeshift's ``coefs_``, as are ssm's ``As``.
  What remains different is where the chain starts: modeshift's and ssm's
  initial distribution is that of the mode at step 1 (modeshift's first two
  steps carry no evidence; ssm models them with an extra Gaussian), dynamax's,
  given y_3..T, that of the mode at step 3.  The "log-likelihood" column
  therefore scores every library's fitted parameters with modeshift's
  ``score`` (log p(y_3..T | y_1, y_2), the chain starting at step 1), and
  each library's own final value is shown beside it.  Mode accuracy is
  ``modeshift.metrics.mode_accuracy`` of each library's own Viterbi path
  against the simulated modes, from step 3 on.
- msar: Hamilton's (1989) Markov-switching AR(4) of US real GNP growth (2
  regimes, switching mean, constant AR coefficients and variance).  modeshift's
  ``MarkovAutoregression(n_states=2, order=4, switching_ar=False,
  random_state=0)`` vs statsmodels' ``MarkovAutoregression(y, k_regimes=2,
  order=4, switching_ar=False).fit()``, both with their defaults (each chooses
  its own starts).  Both maximise the same likelihood (first 4 values
  conditioned on, chain started from its stationary distribution); the report
  gives both maxima and the largest absolute difference of the parameters
  (transition probabilities, regime means, variance, AR coefficients) after
  ordering the regimes by mean.  As an accuracy score, the smoothed regime
  (argmax) is also compared with the NBER recession dates.
- tvtp: Filardo's (1994) MS-AR(4) of US industrial production growth with
  time-varying transition probabilities driven by the leading indicator
  (``exog_tvtp=[1, leading growth of the month before]``), both libraries with
  their defaults; judged by the maximised log-likelihood (published -586.5718).
- slds: a recurrent switching linear dynamical system on the NASCAR data
  (``modeshift.datasets.simulators.nascar(2000, random_state=0)``: 4 modes, a
  2-D latent state, 10-D observations).  modeshift's ``SwitchingLDS(n_states=4,
  state_dim=2, recurrent=True, random_state=0)`` (``modeshift.models.slds``)
  with its defaults (at most 50 iterations, tol 1e-3; ``--slds-iters-modeshift``
  sets ``n_iter``) vs ssm's rSLDS, ``SLDS(10, 4, 2, transitions="recurrent_only",
  emissions="gaussian_orthog")`` fit by ``method="laplace_em"`` with its
  structured mean-field posterior, its own initialisation and ``--slds-iters``
  iterations (default 100, ssm's default).  dynamax has no switching LDS.
  Mode accuracy against the true modes (each library's most likely modes).

Targets: modeshift at least 3x faster than each peer, with equal or better
accuracy (mode accuracy at most 0.001 below the peer's; for msar, a
log-likelihood at most 1e-3 below statsmodels').

Each timing is the best of ``--repeats`` runs (one run when it takes over
``--max-seconds``).  For the JIT-compiled libraries compilation is kept out of
those runs and reported on its own: modeshift's as the first calls in fresh
processes on tiny inputs (empty and filled Numba cache), dynamax's as
``jax.jit(f).lower(...).compile()`` on the real data.  Decoding and scoring
after a fit are not timed.  Missing libraries show as "n/a".

Usage::

    python benchmarks/switching.py                  # full size
    python benchmarks/switching.py --quick          # ARHMM T = 2,000, for a smoke run
    python benchmarks/switching.py --only arhmm,msar --libs modeshift,dynamax --repeats 5

The markdown report goes to stdout and to ``benchmarks/results/switching.md``.

Install the peers with::

    pip install -e . dynamax jax jaxlib statsmodels
    pip install git+https://github.com/lindermanlab/ssm   # needs Cython and a C compiler
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from common import (
    add_common_arguments,
    best_of,
    comma_list,
    compile_paragraph,
    log,
    modeshift_compile_times,
    publish,
    seconds,
    table,
    timed,
    versions,
)

LIBRARIES = ("modeshift", "dynamax", "statsmodels", "ssm")
CASES = {"arhmm": ("dynamax", "ssm"), "msar": ("statsmodels",), "tvtp": ("statsmodels",), "slds": ("ssm",)}
LIKELIHOOD_CASES = ("msar", "tvtp")  # judged by the maximised log-likelihood, not by mode accuracy
NOT_OFFERED = {("slds", "dynamax"): "dynamax has no switching LDS"}
TARGET_SPEEDUP = 3.0
ACCURACY_SLACK = {"accuracy": 1e-3, "loglik": 1e-3}  # how far below the peer still counts as "equal"
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "switching.md"
LAGS, ARHMM_ITERS = 2, 50
DIRICHLET = 1.1  # dynamax's default prior on the initial and transition probabilities (with 1.0 its EM gives NaN)


# --------------------------------------------------------------------------
# Problems
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ArParams:
    startprob: np.ndarray  # (K,)
    transmat: np.ndarray  # (K, K)
    coefs: np.ndarray  # (K, D, lags D): [A_1, ..., A_lags]
    intercepts: np.ndarray  # (K, D)
    covars: np.ndarray  # (K, D, D)


@dataclass(frozen=True)
class ArhmmProblem:
    start: ArParams
    X: np.ndarray  # (T, D)
    modes: np.ndarray  # (T,)


def arhmm_model(q: ArParams, **options: Any) -> Any:
    """A modeshift ARHMM holding the parameters ``q`` (the start of a fit, or a scorer)."""
    from modeshift import ARHMM

    m = ARHMM(n_states=len(q.transmat), order=LAGS, **options)
    m.startprob_, m.transmat_ = q.startprob.copy(), q.transmat.copy()
    m.coefs_, m.intercepts_, m.covars_ = q.coefs.copy(), q.intercepts.copy(), q.covars.copy()
    return m


def make_arhmm(seed: int, length: int) -> ArhmmProblem:
    """The 3-mode bivariate AR(2) of ``tests/conftest.py``, and a perturbed copy to start EM from."""
    rotations = [np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) for a in (0.3, -0.6, 1.2)]
    true = ArParams(
        startprob=np.ones(3) / 3,
        transmat=np.full((3, 3), 0.01) + 0.97 * np.eye(3),
        coefs=np.array([np.hstack([0.7 * r, -0.2 * np.eye(2)]) for r in rotations]),
        intercepts=np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]),
        covars=np.stack([0.05 * np.eye(2)] * 3),
    )
    rng = np.random.default_rng([seed, 11])
    X, modes = arhmm_model(true).sample(length, random_state=rng)
    start = ArParams(
        startprob=np.ones(3) / 3,
        transmat=np.full((3, 3), 0.05) + 0.85 * np.eye(3),
        coefs=true.coefs + 0.2 * rng.standard_normal(true.coefs.shape),
        intercepts=true.intercepts + 0.5 * rng.standard_normal(true.intercepts.shape),
        covars=np.stack([0.2 * np.eye(2)] * 3),
    )
    return ArhmmProblem(start=start, X=np.ascontiguousarray(X), modes=np.asarray(modes))


@dataclass(frozen=True)
class GnpProblem:
    y: Any  # pandas Series of quarterly growth rates
    recession: np.ndarray  # NBER indicator per quarter


def make_gnp() -> GnpProblem:
    from modeshift.datasets import load_hamilton_gnp

    frame = load_hamilton_gnp()
    return GnpProblem(y=frame["rgnp_growth"], recession=frame["nber_recession"].to_numpy().astype(int))


@dataclass(frozen=True)
class FilardoProblem:
    y: np.ndarray  # monthly growth of industrial production, dlip[1:]
    tvtp: np.ndarray  # [1, leading indicator growth of the month before]


def make_filardo() -> FilardoProblem:
    from modeshift.datasets import load_filardo

    frame = load_filardo()
    y = frame["dlip"].to_numpy(dtype=float)[1:]
    return FilardoProblem(y=y, tvtp=np.c_[np.ones(len(y)), frame["dmdlleading"].to_numpy(dtype=float)[:-1]])


def tvtp_modeshift(pr: FilardoProblem, args: argparse.Namespace) -> Job:
    from modeshift.models.markov_switching import MarkovAutoregression

    model = lambda: MarkovAutoregression(n_states=2, order=4, switching_ar=False, random_state=0)  # noqa: E731
    return Job(lambda: model().fit(pr.y, exog_tvtp=pr.tvtp), lambda m: {"loglik": m.log_likelihood_}, jit=True)


def tvtp_statsmodels(pr: FilardoProblem, args: argparse.Namespace) -> Job:
    from statsmodels.tsa.api import MarkovAutoregression

    model = MarkovAutoregression(pr.y, k_regimes=2, order=4, switching_ar=False, exog_tvtp=pr.tvtp)
    return Job(lambda: model.fit(disp=False), lambda res: {"loglik": float(res.llf)})


def make_nascar(seed: int, length: int = 2000) -> Any:
    from modeshift.datasets.simulators import nascar

    return nascar(n_steps=length, random_state=seed)


# --------------------------------------------------------------------------
# Jobs: one per (case, library)
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """``run`` is timed; ``check`` (untimed) turns its result into the values reported."""

    run: Callable[[], Any]
    check: Callable[[Any], dict[str, Any]]
    compile: Callable[[], Any] | None = None
    jit: bool = False  # a first call may compile: keep it out of the best-of


def accuracy_after_lags(pr: ArhmmProblem, path: np.ndarray) -> float:
    from modeshift.metrics import mode_accuracy

    path = np.asarray(path)
    return mode_accuracy(pr.modes[LAGS:], path[len(path) - len(pr.X) + LAGS :])


def require_iterations(done: int, wanted: int, library: str) -> None:
    if done != wanted:
        raise RuntimeError(f"{library} ran {done} EM iterations, not {wanted}")


def arhmm_modeshift(pr: ArhmmProblem, args: argparse.Namespace) -> Job:
    def check(m: Any) -> dict[str, Any]:
        require_iterations(len(m.history_), ARHMM_ITERS, "modeshift")
        ll = m.score(pr.X)
        return {"loglik": ll, "own_loglik": ll, "accuracy": accuracy_after_lags(pr, m.predict(pr.X))}

    options = {"n_iter": ARHMM_ITERS, "tol": -np.inf, "transition_concentration": DIRICHLET}
    return Job(lambda: arhmm_model(pr.start, **options).fit(pr.X), check, jit=True)


def arhmm_dynamax(pr: ArhmmProblem, args: argparse.Namespace) -> Job:
    """dynamax in float64, ``fit_em`` under one ``jax.jit`` (it would otherwise re-jit on every call)."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from dynamax.hidden_markov_model import LinearAutoregressiveHMM

    K, D = pr.start.transmat.shape[0], pr.X.shape[1]
    model = LinearAutoregressiveHMM(K, D, num_lags=LAGS)  # Dirichlet(1.1) priors, as given to modeshift
    q = pr.start
    params, props = model.initialize(
        initial_probs=jnp.asarray(q.startprob), transition_matrix=jnp.asarray(q.transmat),
        emission_weights=jnp.asarray(q.coefs), emission_biases=jnp.asarray(q.intercepts),
        emission_covariances=jnp.asarray(q.covars),
    )  # fmt: skip
    y = jnp.asarray(pr.X[LAGS:])
    inputs = model.compute_inputs(jnp.asarray(pr.X))[LAGS:]  # [y_t-1, y_t-2] from the series itself
    fit = jax.jit(lambda p, y, u: model.fit_em(p, props, y, u, num_iters=ARHMM_ITERS, verbose=False))

    def check(result: Any) -> dict[str, Any]:
        fitted, log_probs = result
        require_iterations(int(log_probs.shape[0]), ARHMM_ITERS, "dynamax")
        e = fitted.emissions
        as_numpy = ArParams(*(np.asarray(a) for a in (fitted.initial.probs, fitted.transitions.transition_matrix,
                                                       e.weights, e.biases, e.covs)))  # fmt: skip
        return {
            "loglik": arhmm_model(as_numpy).score(pr.X),
            "own_loglik": float(model.marginal_log_prob(fitted, y, inputs)),
            "accuracy": accuracy_after_lags(pr, model.most_likely_states(fitted, y, inputs)),
        }

    args_ = (params, y, inputs)
    return Job(lambda: jax.block_until_ready(fit(*args_)), check, lambda: fit.lower(*args_).compile(), jit=True)


def arhmm_ssm(pr: ArhmmProblem, args: argparse.Namespace) -> Job:
    import ssm

    K, D = pr.start.transmat.shape[0], pr.X.shape[1]

    def run() -> tuple[Any, list[float]]:
        hmm = ssm.HMM(K, D, observations="ar", observation_kwargs={"lags": LAGS})
        q = pr.start
        hmm.init_state_distn.log_pi0 = np.log(q.startprob)
        hmm.transitions.log_Ps = np.log(q.transmat)
        obs = hmm.observations
        obs.As, obs.bs, obs.Sigmas = q.coefs.copy(), q.intercepts.copy(), q.covars.copy()
        lls = hmm.fit(pr.X, method="em", num_em_iters=ARHMM_ITERS, tolerance=-np.inf, initialize=False)
        return hmm, lls

    def check(result: tuple[Any, list[float]]) -> dict[str, Any]:
        hmm, lls = result
        require_iterations(len(lls) - 1, ARHMM_ITERS, "ssm")  # lls starts with the starting point's
        obs = hmm.observations
        fitted = ArParams(np.exp(hmm.init_state_distn.log_pi0), hmm.transitions.transition_matrix,
                          obs.As, obs.bs, obs.Sigmas)  # fmt: skip
        return {
            "loglik": arhmm_model(fitted).score(pr.X),
            "own_loglik": float(hmm.log_likelihood(pr.X)),
            "accuracy": accuracy_after_lags(pr, hmm.most_likely_states(pr.X)),
        }

    return Job(run, check)


def canonical_msar(transmat: np.ndarray, means: np.ndarray, sigma2: float, ar: np.ndarray) -> np.ndarray:
    """Transition probabilities P[i, j] (j < K-1), means, variance, AR coefficients; regimes ordered by mean."""
    order = np.argsort(means)
    P = np.asarray(transmat)[np.ix_(order, order)]
    return np.concatenate([P[:, :-1].ravel(), np.asarray(means)[order], [sigma2], np.ravel(ar)])


def regime_accuracy(pr: GnpProblem, smoothed: np.ndarray, order: int = 4) -> float:
    from modeshift.metrics import mode_accuracy

    return mode_accuracy(pr.recession[order:], np.argmax(np.asarray(smoothed)[-(len(pr.y) - order) :], axis=1))


def msar_modeshift(pr: GnpProblem, args: argparse.Namespace) -> Job:
    from modeshift.models.markov_switching import MarkovAutoregression

    def check(m: Any) -> dict[str, Any]:
        params = canonical_msar(m.transmat_, m.means_, float(np.ravel(m.variances_)[0]), m.ar_coef_[0])
        accuracy = regime_accuracy(pr, m.smoothed_probabilities_)
        return {"loglik": m.log_likelihood_, "params": params, "accuracy": accuracy}

    model = lambda: MarkovAutoregression(n_states=2, order=4, switching_ar=False, random_state=0)  # noqa: E731
    return Job(lambda: model().fit(pr.y), check, jit=True)


def msar_statsmodels(pr: GnpProblem, args: argparse.Namespace) -> Job:
    from statsmodels.tsa.api import MarkovAutoregression

    def check(res: Any) -> dict[str, Any]:
        p = res.params
        transmat = res.model.regime_transition_matrix(p.to_numpy())[:, :, 0].T  # statsmodels' [to, from]
        means = np.array([p["const[0]"], p["const[1]"]])
        params = canonical_msar(transmat, means, p["sigma2"], p[[f"ar.L{i}" for i in range(1, 5)]].to_numpy())
        return {"loglik": float(res.llf), "params": params,
                "accuracy": regime_accuracy(pr, res.smoothed_marginal_probabilities)}  # fmt: skip

    return Job(lambda: MarkovAutoregression(pr.y, k_regimes=2, order=4, switching_ar=False).fit(), check)


def slds_modeshift(sim: Any, args: argparse.Namespace) -> Job:
    from modeshift.metrics import mode_accuracy
    from modeshift.models.slds import SwitchingLDS

    options = {"n_states": 4, "state_dim": 2, "recurrent": True, "random_state": 0}
    if args.slds_iters_modeshift:
        options["n_iter"] = args.slds_iters_modeshift
    y = np.asarray(sim.observations)

    def check(m: Any) -> dict[str, Any]:
        return {"accuracy": mode_accuracy(sim.modes, m.predict(y)), "iterations": len(m.history_)}

    return Job(lambda: SwitchingLDS(**options).fit(y), check, jit=True)


def slds_ssm(sim: Any, args: argparse.Namespace) -> Job:
    import ssm

    from modeshift.metrics import mode_accuracy

    y = np.asarray(sim.observations)

    def run() -> tuple[Any, Any, Any]:
        npr_state = np.random.get_state()
        np.random.seed(args.seed)  # ssm draws from numpy's global generator
        try:
            slds = ssm.SLDS(y.shape[1], 4, 2, transitions="recurrent_only", emissions="gaussian_orthog")
            slds.initialize(y)
            elbos, posterior = slds.fit(y, method="laplace_em", variational_posterior="structured_meanfield",
                                        num_iters=args.slds_iters, initialize=False, alpha=0.0)  # fmt: skip
        finally:
            np.random.set_state(npr_state)
        return slds, posterior, elbos

    def check(result: tuple[Any, Any, Any]) -> dict[str, Any]:
        slds, posterior, elbos = result
        path = slds.most_likely_states(posterior.mean_continuous_states[0], y)
        return {"accuracy": mode_accuracy(sim.modes, path), "iterations": len(elbos) - 1}

    return Job(run, check)


JOBS = {
    "arhmm": {"modeshift": arhmm_modeshift, "dynamax": arhmm_dynamax, "ssm": arhmm_ssm},
    "msar": {"modeshift": msar_modeshift, "statsmodels": msar_statsmodels},
    "tvtp": {"modeshift": tvtp_modeshift, "statsmodels": tvtp_statsmodels},
    "slds": {"modeshift": slds_modeshift, "ssm": slds_ssm},
}


# --------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------


@dataclass
class Outcome:
    best: float | None = None
    runs: int = 0
    first: float | None = None  # first call on the real data (modeshift, dynamax)
    compile: float | None = None  # dynamax: lower().compile() alone
    values: dict[str, Any] = field(default_factory=dict)
    note: str = ""


def measure(job: Job, repeats: int, max_seconds: float) -> Outcome:
    out = Outcome()
    if job.compile is not None:
        out.compile = timed(job.compile)[0]
    if job.jit:
        out.first = timed(job.run)[0]
    out.best, out.runs, result = best_of(job.run, repeats, max_seconds)
    out.values = job.check(result)
    return out


def compile_probe() -> dict[str, float]:
    """First fits of modeshift's switching models on tiny data (in a fresh process); missing models are left out."""
    start = time.perf_counter()
    import modeshift  # noqa: F401

    times = {"import": time.perf_counter() - start}
    pr = make_arhmm(0, 100)
    times["arhmm"] = timed(lambda: arhmm_model(pr.start, n_iter=2, tol=-np.inf).fit(pr.X))[0]
    try:
        job = msar_modeshift(make_gnp(), argparse.Namespace())
        times["msar"] = timed(job.run)[0]
    except ImportError:
        pass
    try:
        job = slds_modeshift(make_nascar(0, 100), argparse.Namespace(slds_iters_modeshift=2))
        times["slds"] = timed(job.run)[0]
    except ImportError:
        pass
    return times


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def time_cell(o: Outcome | None, repeats: int) -> str:
    if o is None:
        return "—"
    return seconds(o.best) + ("" if o.runs in (0, repeats) else f" ({o.runs} run{'s' * (o.runs > 1)})")


def value_cell(o: Outcome | None, key: str, fmt: str) -> str:
    return "n/a" if o is None or key not in o.values else format(o.values[key], fmt)


def verdicts(case: str, row: dict[str, Outcome]) -> list[list[str]]:
    """One row per peer: speed-up and accuracy against the targets."""
    ours = row.get("modeshift", Outcome())
    key = "loglik" if case in LIKELIHOOD_CASES else "accuracy"
    rows = []
    for peer in CASES[case]:
        theirs = row.get(peer)
        if theirs is None:
            rows.append([case, peer, "n/a", "n/a", "n/a", "n/a"])
            continue
        if ours.best is None or theirs.best is None:
            speed, speed_verdict = "n/a", "n/a"
        else:
            ratio = theirs.best / ours.best
            speed, speed_verdict = f"{ratio:.1f}x", "met" if ratio >= TARGET_SPEEDUP else "MISSED"
        if key in ours.values and key in theirs.values:
            a, b = ours.values[key], theirs.values[key]
            fmt = ".3f" if case in LIKELIHOOD_CASES else ".4f"
            quality = f"{a:{fmt}} vs {b:{fmt}}"
            quality_verdict = "met" if a >= b - ACCURACY_SLACK[key] else "MISSED"
        else:
            quality, quality_verdict = "n/a", "n/a"
        rows.append([case, peer, speed, speed_verdict, quality, quality_verdict])
    return rows


def report(results: dict[str, dict[str, Outcome]], notes: dict[str, str], compile_times: Any,
           args: argparse.Namespace, T: int) -> str:  # fmt: skip
    libs = [lib for lib in LIBRARIES if lib in args.libs]
    rows = []
    for case, row in results.items():
        cells = [case]
        for lib in libs:
            if lib == "modeshift" or lib in CASES[case]:
                cells.append(time_cell(row.get(lib), args.repeats))
            else:
                cells.append("—")
        rows.append(cells)
    targets = [v for case, row in results.items() for v in verdicts(case, row)]
    reasons = sorted({f"{lib}: {o.note}" for row in results.values() for lib, o in row.items() if o.note}
                     | {f"{lib}: {why}" for lib, why in notes.items()}
                     | {f"{lib} ({case}): {why}" for (case, lib), why in NOT_OFFERED.items()
                        if case in results})  # fmt: skip

    lines = [
        "# Switching-model benchmark: modeshift vs dynamax vs statsmodels vs ssm",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M')}{' (--quick size)' if args.quick else ''}; best of "
        f"{args.repeats} runs each (one run when it takes over {args.max_seconds:g} s); float64 everywhere.",
        "",
        f"arhmm: 3 modes, D = 2, AR(2), one sequence of T={T:,}, {ARHMM_ITERS} EM iterations from a common start. "
        "msar: Hamilton's GNP, 2 regimes, AR(4), each library's default fit. "
        f"slds: NASCAR, 4 modes, latent dim 2, 10-D observations, T=2,000 (ssm: {args.slds_iters} Laplace-EM "
        "iterations).",
        "",
        "## Times (fit, after JIT compilation)",
        "",
        *table(["case", *(f"{lib} (s)" for lib in libs)], rows),
        "",
        "## Targets: ≥ 3x faster than each peer, equal or better accuracy",
        "",
        "Accuracy is mode accuracy (arhmm, slds; met when at most 0.001 below the peer) or the maximised",
        "log-likelihood (msar, tvtp; met when at most 1e-3 below).",
        "",
        *table(
            [
                "case",
                "peer",
                "speed-up (peer / modeshift)",
                "speed target",
                "accuracy (modeshift vs peer)",
                "accuracy target",
            ],
            targets,
        ),  # fmt: skip
        *([""] + [f"- n/a {r}" for r in reasons] if reasons else []),
        "",
    ]
    if "arhmm" in results:
        row = results["arhmm"]
        body = [[lib, time_cell(o, args.repeats), seconds(None if o.best is None else o.best / ARHMM_ITERS),
                 value_cell(o, "loglik", ".4f"), value_cell(o, "own_loglik", ".4f"), value_cell(o, "accuracy", ".4f")]
                for lib, o in row.items()]  # fmt: skip
        lines += [
            "## arhmm: do they compute the same thing?",
            "",
            "Log-likelihood: log p(y_3..T | y_1, y_2) of each library's fitted parameters, scored by modeshift;",
            "own: the library's own value for its fit (dynamax's chain starts at step 3, not 1; ssm's includes",
            "its model of the first two observations).",
            "",
            *table(
                ["library", "fit (s)", "s / EM iteration", "log-likelihood", "own log-likelihood", "mode accuracy"],
                body,
            ),  # fmt: skip
            "",
        ]
    if "msar" in results:
        row = results["msar"]
        ref = row.get("statsmodels", Outcome()).values.get("params")
        body = []
        for lib, o in row.items():
            params = o.values.get("params")
            gap = "n/a" if ref is None or params is None else f"{float(np.max(np.abs(params - ref))):.1e}"
            body.append([lib, time_cell(o, args.repeats), value_cell(o, "loglik", ".6f"), gap,
                         value_cell(o, "accuracy", ".4f")])  # fmt: skip
        lines += [
            "## msar: do they compute the same thing?",
            "",
            "Max abs. difference of (P[i, 0], regime means, sigma2, AR coefficients) from statsmodels', regimes",
            "ordered by mean; NBER agreement: the smoothed regime's accuracy against the NBER recession dates.",
            "",
            *table(["library", "fit (s)", "log-likelihood", "max abs. param. diff.", "NBER agreement"], body),
            "",
        ]
    if "slds" in results:
        row = results["slds"]
        body = [[lib, time_cell(o, args.repeats), value_cell(o, "iterations", "d"), value_cell(o, "accuracy", ".4f")]
                for lib, o in row.items()]  # fmt: skip
        lines += ["## slds", "", *table(["library", "fit (s)", "iterations", "mode accuracy"], body), ""]
    lines += ["## JIT compilation", "", *compile_paragraph(compile_times)]
    jit_rows = [[case, seconds(row.get("modeshift", Outcome()).first), seconds(row.get("dynamax", Outcome()).compile)]
                for case, row in results.items()]  # fmt: skip
    lines += [
        *table(["case", "modeshift first call on the data (s)", "dynamax jit compile (s)"], jit_rows),
        "",
        f"Machine: {os.cpu_count()} cores; Python {sys.version.split()[0]}.  ",
        "Versions: " + versions(("numpy", "numba", "statsmodels", "jax", "dynamax", "ssm", "modeshift"), notes) + ".",
        "",
    ]  # fmt: skip
    return "\n".join(lines)


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="ARHMM T = 2,000 (smoke run)")
    parser.add_argument("--length", type=int, default=10_000, help="ARHMM sequence length T")
    parser.add_argument("--libs", type=comma_list(LIBRARIES), default=list(LIBRARIES), help="e.g. modeshift,dynamax")
    parser.add_argument("--only", type=comma_list(list(CASES)), default=list(CASES), help="cases, e.g. arhmm,msar")
    parser.add_argument("--max-seconds", type=float, default=10.0, help="stop repeating after a run this long")
    parser.add_argument("--slds-iters", type=int, default=100, help="ssm's Laplace-EM iterations on NASCAR")
    parser.add_argument("--slds-iters-modeshift", type=int, default=None,
                        help="modeshift SwitchingLDS n_iter (default: its own)")  # fmt: skip
    add_common_arguments(parser, DEFAULT_OUTPUT)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.compile_probe:
        print(json.dumps(compile_probe()))
        return 0
    notes: dict[str, str] = {}
    for lib in args.libs:
        try:
            __import__(lib)
        except Exception as error:  # noqa: BLE001 -- ImportError, or a broken install
            notes[lib] = f"not available ({type(error).__name__}: {error})"
            log(f"skipping {lib}: {notes[lib]}")

    compile_times: Any = "modeshift not benchmarked" if "modeshift" not in args.libs else "skipped"
    if "modeshift" in args.libs and "modeshift" not in notes and not args.no_compile_probe:
        log("modeshift: compile time in fresh processes")
        try:
            compile_times = modeshift_compile_times(__file__)
        except (subprocess.CalledProcessError, ValueError) as error:
            log(f"  compile probe failed: {error}\n{(getattr(error, 'stderr', '') or '')[-2000:]}")
            compile_times = "the fresh-process probe failed; see stderr"

    T = 2_000 if args.quick else args.length
    problems = {
        "arhmm": lambda: make_arhmm(args.seed, T),
        "msar": make_gnp,
        "tvtp": make_filardo,
        "slds": lambda: make_nascar(0),
    }
    results: dict[str, dict[str, Outcome]] = {}
    for case in args.only:
        log(f"{case}: preparing the data")
        problem = problems[case]()
        row = results.setdefault(case, {})
        for lib in args.libs:
            if lib != "modeshift" and lib not in CASES[case]:
                continue
            if lib in notes:
                row[lib] = Outcome()
                continue
            log(f"{case}: {lib}")
            try:
                row[lib] = measure(JOBS[case][lib](problem, args), args.repeats, args.max_seconds)
            except ImportError as error:  # e.g. a model not written yet
                row[lib] = Outcome(note=f"{case}: not available ({type(error).__name__}: {error})")
            except Exception as error:  # noqa: BLE001 -- report it, go on with the others
                summary = (str(error).strip().splitlines() or [""])[0][:160]
                row[lib] = Outcome(note=f"error in {case} ({type(error).__name__}: {summary})")
            log(f"  {row[lib].note or f'best {row[lib].best:.4g} s'}")
    markdown = report(results, notes, compile_times, args, T)
    publish(markdown, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
