"""Choosing the number of modes from data."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["check_n_states", "select_n_states", "selection_table"]


def check_n_states(n_states: int | str, max_states: int) -> int | str:
    """A positive integer, or ``"auto"`` with ``max_states >= 1``."""
    if n_states == "auto":
        if int(max_states) < 1:
            raise ValueError(f"max_states must be a positive integer, got {max_states!r}")
        return "auto"
    if isinstance(n_states, str) or int(n_states) < 1:
        raise ValueError(f"n_states must be a positive integer or 'auto', got {n_states!r}")
    return int(n_states)


def select_n_states(make: Callable[[int], Any], X: Any, lengths: Any, max_states: int) -> tuple[Any, pd.DataFrame]:
    """Fit ``make(k)`` for k = 1, 2, ... and keep the one with the smallest BIC.

    BIC = -2 log-likelihood + n_parameters log(n_observations) approximates -2 log
    marginal likelihood; for hidden Markov models penalised-likelihood estimators of
    this kind are consistent for the number of states (Gassiat & Boucheron 2003),
    and it needs one fit per candidate and no held-out data. Every candidate up to
    ``max_states`` is fitted (a poor local optimum at one size must not end the
    search early). Returns the
    chosen fitted model and a table (one row per candidate: ``n_states``,
    ``log_likelihood`` (``elbo`` for a model that only bounds it), ``n_parameters``, ``aic``,
    ``bic``, ``chosen``).
    """
    rows, models = [], []
    for k in range(1, int(max_states) + 1):
        model = make(k).fit(X, lengths)
        bound = model.objective == "ELBO"
        rows.append(
            {
                "n_states": k,
                "elbo" if bound else "log_likelihood": model.elbo(X, lengths) if bound else model.score(X, lengths),
                "n_parameters": model.n_parameters,
                "aic": model.aic(X, lengths),
                "bic": model.bic(X, lengths),
            }
        )
        models.append(model)
    table = pd.DataFrame(rows)
    best = int(np.argmin(table["bic"].to_numpy()))
    table["chosen"] = np.arange(len(table)) == best
    return models[best], table


_ORDER = ("n_states", "log_likelihood", "elbo", "n_parameters", "aic", "bic", "chosen")


def selection_table(saved: dict[str, list[Any]]) -> pd.DataFrame:
    """The table of :func:`select_n_states` from its saved form (a dict of columns, in any order)."""
    return pd.DataFrame(saved)[[name for name in _ORDER if name in saved]]
