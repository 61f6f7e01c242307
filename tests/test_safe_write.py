"""Writes that never destroy (modeshift.safe_write), through the API (``save``, ``write_atomically``)
and the command line: no output over an input, no special file replaced, symbolic links followed to
regular files only, permissions kept, temporary files removed (and orphans cleaned), the output
checked before a fit, messages naming the user's path; and never a saved model that cannot be
loaded (never-observed columns, non-finite parameters)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import modeshift
from modeshift import HMM, LinearGaussianSSM
from modeshift.cli import app
from modeshift.models import em
from modeshift.safe_write import check_output, write_atomically

runner = CliRunner()


def _run(*args: object):
    return runner.invoke(app, [str(arg) for arg in args])


@pytest.fixture(scope="module")
def model() -> HMM:
    rng = np.random.default_rng(0)
    return HMM(2, n_iter=5, random_state=0).fit(np.r_[rng.normal(0, 1, 40), rng.normal(4, 1, 40)])


@pytest.fixture(scope="module")
def files(tmp_path_factory, model):
    directory = tmp_path_factory.mktemp("outputs")
    rng = np.random.default_rng(1)
    pd.DataFrame({"y": np.r_[rng.normal(0, 1, 50), rng.normal(4, 1, 50)]}).to_csv(directory / "d.csv", index=False)
    model.save(directory / "m.msz")
    return directory


def _temporaries(directory: Path) -> list[str]:
    return [name for name in os.listdir(directory) if name.endswith(".tmp")]


# ------------------------------------------------------------------------------ API
def test_special_files_are_refused(model, tmp_path):
    with pytest.raises(ValueError, match=f"{tmp_path} is a directory, not a regular file"):
        model.save(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="is a FIFO"):
        model.save(fifo)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    with pytest.raises(ValueError, match="/dev/null is a character device"):
        check_output("/dev/null")


def test_a_symbolic_link_is_followed_to_a_regular_file_and_kept(model, tmp_path):
    target = tmp_path / "real.msz"
    target.write_bytes(b"old")
    link = tmp_path / "link.msz"
    link.symlink_to(target)
    model.save(link)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert type(modeshift.load(target)) is HMM
    dangling = tmp_path / "dangling.msz"
    dangling.symlink_to(tmp_path / "nowhere.msz")
    with pytest.raises(ValueError, match="symbolic link .* does not exist"):
        model.save(dangling)
    to_directory = tmp_path / "to_directory"
    to_directory.symlink_to(tmp_path)
    with pytest.raises(ValueError, match="is a directory"):
        model.save(to_directory)


def test_a_replaced_file_keeps_its_permissions(model, tmp_path):
    path = tmp_path / "private.msz"
    path.write_bytes(b"old")
    path.chmod(0o600)
    model.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o640)
    model.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "out.csv"
    path.write_bytes(b"old")

    def failing(file):
        file.write(b"half")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        write_atomically(path, failing)
    assert path.read_bytes() == b"old"
    assert _temporaries(tmp_path) == []


def test_errors_name_the_users_path_not_the_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "out.csv"

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / ".out.csv.modeshift-1-ab.tmp"))

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(PermissionError) as caught:
        write_atomically(path, lambda file: file.write(b"x"))
    assert caught.value.filename == str(path)
    assert ".tmp" not in str(caught.value)
    assert _temporaries(tmp_path) == []


def test_orphaned_temporaries_of_dead_processes_are_removed(model, tmp_path):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(finished.stdout)
    orphan = tmp_path / f".m.msz.modeshift-{dead}-0badc0de.tmp"
    alive = tmp_path / f".m.msz.modeshift-{os.getppid()}-0badc0de.tmp"  # a running process: maybe still writing
    other = tmp_path / f".other.msz.modeshift-{dead}-0badc0de.tmp"  # another target's: not ours to judge
    for path in (orphan, alive, other):
        path.write_bytes(b"partial")
    model.save(tmp_path / "m.msz")
    assert not orphan.exists()
    assert alive.exists() and other.exists()


def test_output_over_an_input_is_refused_by_path_and_by_inode(tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("y\n1\n")
    link = tmp_path / "hard.csv"
    os.link(data, link)
    for output in (data, tmp_path / "." / "d.csv", link):
        with pytest.raises(ValueError, match="is also an input of this command"):
            write_atomically(output, lambda file: file.write(b"x"), inputs=[data])
    assert data.read_text() == "y\n1\n"


def test_missing_or_read_only_directory_is_refused(tmp_path):
    with pytest.raises(ValueError, match="the directory .*missing does not exist"):
        check_output(tmp_path / "missing" / "m.msz")
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(ValueError, match="is not writable"):
        check_output(locked / "m.msz")


# ------------------------------------------------------------------ never unloadable
def test_fit_refuses_a_column_never_observed_naming_it():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=60), "b": np.nan})
    with pytest.raises(ValueError, match="column 'b' is never observed"):
        HMM(2, n_iter=3).fit(frame)


def test_fit_ending_with_a_non_finite_parameter_raises_with_a_cause(monkeypatch):
    original = em.run

    def diverging(model, *args, **kwargs):
        original(model, *args, **kwargs)
        model._blocks[1].means[0, 0] = np.nan  # as a diverged M-step would leave it

    monkeypatch.setattr(em, "run", diverging)
    X = np.random.default_rng(0).normal(size=(60, 1))
    with pytest.raises(ValueError, match=r"HMM.fit: means_\[0, 0\] is nan, not a finite number \(.*reg_covar"):
        HMM(2, n_iter=3, random_state=0).fit(X)


def test_save_refuses_non_finite_parameters_and_keeps_the_good_file(tmp_path):
    X = np.random.default_rng(0).normal(size=(60, 1))
    good = LinearGaussianSSM(state_dim=1, n_iter=3).fit(X)
    path = tmp_path / "m.msz"
    good.save(path)
    before = path.read_bytes()
    good.__dict__["dynamics_matrix_"] = np.array([[np.inf]])  # bypassing the setter's check
    with pytest.raises(ValueError, match=r"cannot save this LinearGaussianSSM to .*m.msz: dynamics_matrix_"):
        good.save(path)
    assert path.read_bytes() == before
    assert _temporaries(tmp_path) == []


# ---------------------------------------------------------------------- command line
def test_cli_fit_refuses_to_write_over_its_data(files):
    before = (files / "d.csv").read_bytes()
    result = _run("fit", files / "d.csv", "-o", files / "d.csv", "--seed", 0)
    assert result.exit_code == 1
    assert "is also an input of this command" in result.output
    assert (files / "d.csv").read_bytes() == before


@pytest.mark.parametrize("command", ["segment", "forecast", "report"])
def test_cli_refuses_to_write_over_the_model_or_the_data(files, command):
    for output in ("m.msz", "d.csv"):
        before = (files / output).read_bytes()
        result = _run(command, files / "m.msz", files / "d.csv", "-o", files / output)
        assert result.exit_code == 1, result.output
        assert "input of this command" in result.output or "not a directory" in result.output
        assert (files / output).read_bytes() == before


def test_cli_simulate_refuses_to_write_over_the_model(files):
    before = (files / "m.msz").read_bytes()
    result = _run("simulate", files / "m.msz", "-o", files / "m.msz")
    assert result.exit_code == 1 and "is also an input" in result.output
    assert (files / "m.msz").read_bytes() == before


def test_cli_checks_the_output_before_fitting(files, monkeypatch):
    fitted = []
    monkeypatch.setattr(HMM, "fit", lambda self, *a, **k: fitted.append(1))
    result = _run("fit", files / "d.csv", "-o", files / "missing" / "m.msz", "--seed", 0)
    assert result.exit_code == 1
    assert "missing does not exist" in result.output
    assert ".tmp" not in result.output
    result = _run("fit", files / "d.csv", "-o", files, "--seed", 0)
    assert result.exit_code == 1 and "is a directory" in result.output
    assert fitted == []


def test_cli_writes_a_table_atomically_keeping_permissions(files):
    output = files / "runs.csv"
    output.write_text("old")
    output.chmod(0o600)
    result = _run("segment", files / "m.msz", files / "d.csv", "-o", output)
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(output.stat().st_mode) == 0o600
    assert "mode" in output.read_text()
    assert _temporaries(files) == []


def test_cli_info_refuses_special_files(files, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (Path("/dev/zero"), fifo, tmp_path):
        result = _run("info", path)
        assert result.exit_code == 1
        assert f"error: {path} is" in result.output


def test_cli_fit_exits_non_zero_on_a_column_never_observed(tmp_path):
    rng = np.random.default_rng(0)
    pd.DataFrame({"a": rng.normal(size=50), "b": np.nan}).to_csv(tmp_path / "d.csv", index=False)
    result = _run("fit", tmp_path / "d.csv", "-o", tmp_path / "m.msz", "--seed", 0)
    assert result.exit_code == 1
    assert "column 'b' is never observed" in result.output
    assert not (tmp_path / "m.msz").exists()


def test_cli_refuses_a_fifo_and_writes_through_a_link(files, tmp_path):
    fifo = tmp_path / "fifo.csv"
    os.mkfifo(fifo)
    result = _run("segment", files / "m.msz", files / "d.csv", "-o", fifo)
    assert result.exit_code == 1 and "is a FIFO" in result.output
    target, link = tmp_path / "runs.csv", tmp_path / "link.csv"
    target.write_text("old")
    link.symlink_to(target)
    result = _run("simulate", files / "m.msz", "--seed", 0, "-n", 5, "-o", link)
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and len(pd.read_csv(target)) == 5
