"""Fit progress: every model reports each iteration's objective to its callback and its progress bar."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest
from rich.console import Console

import modeshift
from modeshift import ARHMM, HMM, LinearGaussianSSM, MarkovAutoregression, SwitchingLDS
from modeshift.models import em
from modeshift.progress import live


def _two_regimes(d=1, seed=0):
    rng = np.random.default_rng(seed)
    return np.r_[rng.normal(0.0, 1.0, (60, d)), rng.normal(4.0, 1.0, (40, d))]


def _recorder():
    seen = []
    return seen, lambda iteration, objective: seen.append((iteration, objective))


@pytest.mark.parametrize(
    "make, history",
    [
        (lambda callback: HMM(2, n_iter=15, random_state=0, callback=callback), "history_"),
        (lambda callback: ARHMM(2, n_iter=15, random_state=0, callback=callback), "history_"),
        (lambda callback: LinearGaussianSSM(1, n_iter=15, callback=callback), "log_likelihood_history_"),
        (lambda callback: SwitchingLDS(2, state_dim=1, n_iter=5, random_state=0, callback=callback), "elbo_history_"),
    ],
    ids=["hmm", "arhmm", "lds", "slds"],
)
def test_callback_receives_every_iteration(make, history):
    seen, callback = _recorder()
    model = make(callback).fit(_two_regimes(d=2))
    assert [iteration for iteration, _ in seen] == list(range(1, len(seen) + 1))
    assert [objective for _, objective in seen] == getattr(model, history)


def test_callback_sees_every_restart_and_candidate():
    seen, callback = _recorder()
    model = HMM(2, n_iter=10, n_restarts=3, random_state=0, callback=callback).fit(_two_regimes())
    assert sum(iteration == 1 for iteration, _ in seen) == 3
    assert max(objective for _, objective in seen) == pytest.approx(max(model.history_))

    seen.clear()
    HMM("auto", max_states=3, n_iter=5, random_state=0, callback=callback).fit(_two_regimes())
    assert sum(iteration == 1 for iteration, _ in seen) == 3  # one fit per candidate K = 1, 2, 3


def test_markov_switching_reports_its_em_iterations():
    seen, callback = _recorder()
    model = MarkovAutoregression(2, order=1, n_restarts=2, random_state=0, callback=callback).fit(_two_regimes())
    assert seen and all(np.isfinite(objective) for _, objective in seen)
    assert max(objective for _, objective in seen) <= model.log_likelihood_ + 1e-6  # the polish only climbs


def test_verbose_draws_a_bar_per_restart():
    buffer = io.StringIO()
    with live(Console(file=buffer, width=120)):
        model = HMM(2, n_iter=30, n_restarts=2, random_state=0, verbose=True).fit(_two_regimes())
    shown = buffer.getvalue()
    assert "HMM K=2 restart 1/2" in shown and "HMM K=2 restart 2/2" in shown
    assert f"log-likelihood {model.history_[-1]:.6g}" in shown
    iterations = len(model.history_)
    assert f"{iterations}/{iterations}" in shown  # converged early: the bar is full


@pytest.mark.parametrize(
    "model",
    [
        LinearGaussianSSM(1, n_iter=3, verbose=True),
        SwitchingLDS(2, state_dim=1, n_iter=2, random_state=0, verbose=True),
        MarkovAutoregression(2, order=1, n_restarts=2, random_state=0, verbose=True),
    ],
    ids=["lds", "slds", "markov-switching"],
)
def test_verbose_renders_for_every_model(model):
    buffer = io.StringIO()
    with live(Console(file=buffer, width=120)):
        model.fit(_two_regimes(d=2 if isinstance(model, SwitchingLDS) else 1))
    assert type(model).__name__ in buffer.getvalue()


def test_silent_fits_need_no_display(monkeypatch):
    monkeypatch.setitem(sys.modules, "rich.progress", None)  # any attempt to draw would fail
    HMM(2, n_iter=5, random_state=0).fit(_two_regimes())
    with pytest.raises(ImportError, match="pip install rich"):
        HMM(2, n_iter=5, random_state=0, verbose=True).fit(_two_regimes())


def test_models_do_not_import_the_display():
    """Drawing is the interface layer's job: the models reach it only through the display hook."""
    import modeshift.models.hmm as hmm

    assert "progress" not in vars(hmm) and "rich" not in vars(hmm)


def test_monitor_without_bar_passes_reports_to_the_callback():
    seen, callback = _recorder()
    with em.monitor(verbose=False, callback=callback) as monitor:
        report = monitor.task("fit", total=10)
        report(1, -3.0)
    assert report is callback and seen == [(1, -3.0)]


def test_a_callback_is_not_saved(tmp_path):
    seen, callback = _recorder()
    X = _two_regimes()
    model = HMM(2, n_iter=5, random_state=0, callback=callback).fit(X)
    model.save(tmp_path / "model.msz")
    loaded = modeshift.load(tmp_path / "model.msz")
    assert loaded.callback is None
    assert loaded.score(X) == model.score(X)
