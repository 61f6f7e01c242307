"""Choosing the number of modes from data."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Protocol

import numpy as np
import pandas as pd

__all__ = [
    "VANISHED",
    "check_n_states",
    "fit_auto",
    "occupancy_terms",
    "prune_n_states",
    "restored_fit",
    "saved_fit",
    "select_n_states",
    "selection_table",
]

#: A mode whose mean posterior probability over the steps is below this has vanished.
VANISHED = 0.01


class Elsewhere(Protocol):
    """Fits candidates on data held elsewhere (shards on a cluster: :mod:`modeshift.distributed`)."""

    def fit_all(self, models: list[Any]) -> list[Any]:
        """The models, each fitted (at once, where they can)."""

    def criteria(self, model: Any) -> dict[str, Any]:
        """A fitted candidate's row of the selection table (as :func:`select_n_states` makes it)."""

    def occupancy(self, model: Any) -> np.ndarray:
        """A fitted candidate's mean posterior probability of each mode over the steps (:func:`prune_n_states`)."""


_elsewhere: ContextVar[Elsewhere | None] = ContextVar("modeshift_selection_elsewhere", default=None)


@contextmanager
def elsewhere(data: Elsewhere) -> Iterator[None]:
    """Inside this block :func:`select_n_states` fits and scores its candidates on ``data``
    (its ``X`` is then only what the model keeps a schema from)."""
    token = _elsewhere.set(data)
    try:
        yield
    finally:
        _elsewhere.reset(token)


def check_n_states(n_states: int | str, max_states: int) -> int | str:
    """A positive integer, or ``"auto"`` with ``max_states >= 1``."""
    if n_states == "auto":
        if int(max_states) < 1:
            raise ValueError(f"max_states must be a positive integer, got {max_states!r}")
        return "auto"
    if isinstance(n_states, str) or int(n_states) < 1:
        raise ValueError(f"n_states must be a positive integer or 'auto', got {n_states!r}")
    return int(n_states)


def fit_auto(
    model: Any, seqs: Any, extra: Sequence[str] = (), keep_modes: Callable[[Any, np.ndarray], Any] | None = None
) -> Any:
    """What ``fit`` does for ``n_states="auto"``: candidates ``type(model)`` with ``model``'s other
    hyper-parameters and k = 1 .. ``max_states`` modes fitted to ``seqs``, chosen by BIC
    (:func:`select_n_states`), or by pruning with ``keep_modes`` (:func:`prune_n_states`). ``model``
    gets the table as ``selection_``, the choice as ``n_states_``, and the chosen candidate's fit
    (``history_``, ``converged_``, ``n_iter_``), parameters (its ``parameter_names``) and the ``extra``
    attributes its fit set; returns the candidate."""
    params = {**model.get_params(), "warm_start": False}

    def make(k: int) -> Any:
        return type(model)(**{**params, "n_states": k})

    if keep_modes is None:
        winner, model.selection_ = select_n_states(make, seqs, None, model.max_states)
    else:
        winner, model.selection_ = prune_n_states(make, keep_modes, seqs, None, model.max_states)
    model.n_states_ = winner.n_states
    recorded = [name for name in extra if name in winner.__dict__]  # those the winner's fit set
    for name in ("history_", "converged_", "n_iter_", *recorded, *getattr(winner, "parameter_names", ())):
        setattr(model, name, getattr(winner, name))
    return winner


def select_n_states(make: Callable[[int], Any], X: Any, lengths: Any, max_states: int) -> tuple[Any, pd.DataFrame]:
    """Fit ``make(k)`` for k = 1, 2, ... and keep the one with the smallest BIC.

    BIC = -2 log-likelihood + n_parameters log(n_observations) approximates -2 log
    marginal likelihood; for hidden Markov models penalised-likelihood estimators of
    this kind are consistent for the number of states (Gassiat & Boucheron 2003),
    and it needs one fit per candidate and no held-out data. Every candidate up to
    ``max_states`` is fitted (a poor local optimum at one size must not end the
    search early). Inside :func:`elsewhere`, the candidates are fitted and scored there. Returns the
    chosen fitted model and a table (one row per candidate: ``n_states``,
    ``log_likelihood`` (``elbo`` for a model that only bounds it), ``n_parameters``, ``aic``,
    ``bic``, ``chosen``).
    """
    candidates = [make(k) for k in range(1, int(max_states) + 1)]
    remote = _elsewhere.get()
    if remote is None:
        models = [model.fit(X, lengths) for model in candidates]
        rows = [_criteria(model, X, lengths) for model in models]
    else:
        models = remote.fit_all(candidates)
        rows = [remote.criteria(model) for model in models]
    table = pd.DataFrame(rows)
    best = int(np.argmin(table["bic"].to_numpy()))
    table["chosen"] = np.arange(len(table)) == best
    return models[best], table


def prune_n_states(
    make: Callable[[int], Any],
    keep_modes: Callable[[Any, np.ndarray], Any],
    X: Any,
    lengths: Any,
    max_states: int,
) -> tuple[Any, pd.DataFrame]:
    """Candidates from ``max_states`` modes down to one, each K started twice; the smallest BIC
    among those without a vanished mode wins.

    Over-complete fits of switching models leave modes with little posterior mass (their
    occupancy, the mean posterior probability over the steps, vanishes). Going down from
    ``max_states``, K modes are fitted from scratch (``make(K)``) and from the best candidate
    with K + 1 modes without its least occupied mode (``keep_modes(model, kept)``: a model of
    the kept modes started from their fitted parameters), and the fit with the larger objective
    (log-likelihood or ELBO) is K's candidate. The pruned start carries what the larger fit
    learned (on NASCAR it finds the four sections where fits from scratch stall); the fresh
    start guards against a poor over-complete fit. Costs two fits per K. A candidate with a
    vanished mode is not chosen (unless all have one): such a mode fits a few steps with a
    collapsing covariance, which the likelihood rewards without bound, so its ELBO gain is no
    evidence for another mode. The table is that of
    :func:`select_n_states`, with each candidate's ``smallest_occupancy``, the modes with
    occupancy below :data:`VANISHED` (``vanished``) and its ``start`` ("scratch" or "pruned").
    Inside :func:`elsewhere`, K's two fits run there at once, and are scored there.
    """
    remote = _elsewhere.get()
    rows, models, best, occupancy = [], [], None, np.ones(0)
    for k in range(int(max_states), 0, -1):
        starts = {"scratch": make(k)}
        if best is not None:
            kept = np.setdiff1d(np.arange(k + 1), [int(np.argmin(occupancy))])
            starts["pruned"] = keep_modes(best, kept)
        if remote is None:
            starts = {name: model.fit(X, lengths) for name, model in starts.items()}
            scored = {name: _criteria(model, X, lengths) for name, model in starts.items()}
        else:
            starts = dict(zip(starts, remote.fit_all(list(starts.values()))))
            scored = {name: remote.criteria(model) for name, model in starts.items()}
        start = max(scored, key=lambda name: scored[name].get("elbo", scored[name].get("log_likelihood")))
        best = starts[start]
        occupancy = np.divide(*occupancy_terms(best, X, lengths)) if remote is None else remote.occupancy(best)
        vanished = int((occupancy < VANISHED).sum())
        rows.append(
            {**scored[start], "smallest_occupancy": float(occupancy.min()), "vanished": vanished, "start": start}
        )
        models.append(best)
    table = pd.DataFrame(rows)
    bic = table["bic"].to_numpy()
    eligible = table["vanished"].to_numpy() == 0
    chosen = int(np.argmin(np.where(eligible, bic, np.inf))) if eligible.any() else int(np.argmin(bic))
    table["chosen"] = np.arange(len(table)) == chosen
    return models[chosen], table


def occupancy_terms(model: Any, X: Any, lengths: Any = None) -> tuple[np.ndarray, float]:
    """The sum over the steps of ``X`` of each mode's posterior probability, and the number of
    steps: their ratio is the mode's occupancy (sums add up over the shards of a cluster fit)."""
    probabilities = model.predict_proba(X, lengths)
    stacked = np.concatenate(probabilities) if isinstance(probabilities, list) else np.asarray(probabilities)
    return stacked.sum(axis=0), float(len(stacked))


def _criteria(model: Any, X: Any, lengths: Any) -> dict[str, Any]:
    """The candidate's row: its objective once, AIC = -2 objective + 2 n_parameters from it (as
    every model's ``aic``), and its ``bic`` (whose n is the model's own)."""
    bound = model.objective == "ELBO"
    value = model.elbo(X, lengths) if bound else model.score(X, lengths)
    return {
        "n_states": model._k,
        "elbo" if bound else "log_likelihood": value,
        "n_parameters": model.n_parameters,
        "aic": -2.0 * value + 2.0 * model.n_parameters,
        "bic": model.bic(X, lengths),
    }


_ORDER = (
    "n_states",
    "log_likelihood",
    "elbo",
    "n_parameters",
    "aic",
    "bic",
    "smallest_occupancy",
    "vanished",
    "start",
    "chosen",
)


def selection_table(saved: dict[str, list[Any]]) -> pd.DataFrame:
    """The table of :func:`select_n_states` from its saved form (a dict of columns, in any order)."""
    return pd.DataFrame(saved)[[name for name in _ORDER if name in saved]]


#: What a fit by EM with ``n_states="auto"`` records, for a model's file (:func:`saved_fit`).
FIT_RESULTS = ("history_", "converged_", "n_iter_", "n_states_", "selection_")


def saved_fit(model: Any, names: Iterable[str] = FIT_RESULTS) -> dict[str, Any]:
    """The attributes ``names`` that ``model`` has, for its file (``selection_`` as its dict of columns)."""
    out = {name: model.__dict__[name] for name in names if name in model.__dict__}
    if "selection_" in out:
        out["selection_"] = out["selection_"].to_dict(orient="list")
    return out


def restored_fit(name: str, value: Any) -> Any:
    """An attribute of :func:`saved_fit` as the model holds it (``selection_`` as a table again)."""
    return selection_table(value) if name == "selection_" else value
