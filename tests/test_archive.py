"""Saving and loading models: exact round trips, the file format, and failure modes."""

from __future__ import annotations

import io
import json
import os
import stat
import zipfile

import numpy as np
import pytest

import modeshift
from modeshift import HMM
from modeshift.archive import FORMAT_VERSION, read_archive, write_archive

# ------------------------------------------------------------------------ fixtures


def _gaussian_data(rng, d=2):
    return [
        np.r_[rng.normal(0.0, 1.0, (40, d)), rng.normal(4.0, 1.5, (30, d))],
        rng.normal(2.0, 1.0, (25, d)),
    ]


def _fitted(kind):
    rng = np.random.default_rng(0)
    if kind.startswith("gaussian-"):
        covariance = kind.split("-")[1]
        X = _gaussian_data(rng)
        return HMM(2, covariance=covariance, n_iter=15, random_state=0).fit(X), X
    if kind.startswith("gmm-"):
        covariance = kind.split("-")[1]
        X = _gaussian_data(rng)
        return HMM(2, emission="gmm", n_mix=2, covariance=covariance, n_iter=10, random_state=0).fit(X), X
    if kind == "categorical":
        X = [rng.integers(0, 4, 60), rng.integers(0, 3, 30)]
        return HMM(3, emission="categorical", n_iter=15, random_state=0).fit(X), X
    if kind == "poisson":
        X = [rng.poisson([2.0, 7.0], (50, 2)), rng.poisson([9.0, 1.0], (30, 2))]
        return HMM(2, emission="poisson", n_iter=15, random_state=0).fit(X), X
    raise AssertionError(kind)


KINDS = [
    "gaussian-full",
    "gaussian-diag",
    "gaussian-spherical",
    "gaussian-tied",
    "gmm-full",
    "gmm-diag",
    "gmm-spherical",
    "gmm-tied",
    "categorical",
    "poisson",
]


# ----------------------------------------------------------------------- round trip


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_is_exact(kind, tmp_path):
    model, X = _fitted(kind)
    path = tmp_path / "model.msz"
    model.save(path)
    loaded = modeshift.load(path)
    assert type(loaded) is HMM
    assert loaded.get_params() == model.get_params()
    assert loaded.parameter_names == model.parameter_names
    for name in model.parameter_names:
        original, restored = np.asarray(getattr(model, name)), np.asarray(getattr(loaded, name))
        assert restored.shape == original.shape, name
        np.testing.assert_array_equal(restored, original, err_msg=name)
    assert loaded.score(X) == model.score(X)
    np.testing.assert_array_equal(np.concatenate(loaded.predict(X)), np.concatenate(model.predict(X)))
    assert loaded.history_ == model.history_
    assert loaded.converged_ == model.converged_
    assert loaded.n_parameters == model.n_parameters
    # and a second generation is the same again
    loaded.save(tmp_path / "again.msz")
    again = modeshift.load(tmp_path / "again.msz")
    for name in model.parameter_names:
        np.testing.assert_array_equal(getattr(again, name), getattr(model, name), err_msg=name)


def test_round_trip_with_string_path_and_hyperparameters(tmp_path):
    rng = np.random.default_rng(1)
    X = _gaussian_data(rng)
    model = HMM(
        2,
        n_iter=5,
        tol=1e-3,
        fixed=("startprob_",),
        stickiness=2.0,
        transition_concentration=1.5,
        random_state=np.random.default_rng(3),  # a generator cannot be stored
    )
    model.startprob_ = [0.25, 0.75]
    model.fit(X)
    path = str(tmp_path / "model.msz")
    model.save(path)
    loaded = modeshift.load(path)
    assert loaded.fixed == ("startprob_",)
    assert loaded.stickiness == 2.0 and loaded.transition_concentration == 1.5 and loaded.tol == 1e-3
    assert loaded.random_state is None
    np.testing.assert_array_equal(loaded.startprob_, [0.25, 0.75])
    assert loaded.score(X) == model.score(X)


def test_hand_set_model_round_trip(tmp_path):
    model = HMM(2, emission="categorical")
    model.startprob_ = [0.5, 0.5]
    model.transmat_ = [[0.8, 0.2], [0.3, 0.7]]
    model.emissionprob_ = [[0.1, 0.2, 0.7], [0.6, 0.3, 0.1]]
    model.save(tmp_path / "hand.msz")
    loaded = modeshift.load(tmp_path / "hand.msz")
    np.testing.assert_array_equal(loaded.emissionprob_, model.emissionprob_)
    X = np.array([0, 2, 2, 1, 0])
    assert loaded.score(X) == model.score(X)
    assert not hasattr(loaded, "history_")


def test_overwrite_replaces_previous_file(tmp_path):
    path = tmp_path / "model.msz"
    first, X = _fitted("gaussian-diag")
    first.save(path)
    second, _ = _fitted("poisson")
    second.save(path)
    loaded = modeshift.load(path)
    assert loaded.emission == "poisson"
    np.testing.assert_array_equal(loaded.lambdas_, second.lambdas_)
    assert sorted(os.listdir(tmp_path)) == ["model.msz"]


# ---------------------------------------------------------------------- file format


def test_file_is_a_zip_of_json_and_npy_without_pickle(tmp_path):
    model, _ = _fitted("gmm-full")
    path = tmp_path / "model.msz"
    model.save(path)
    assert zipfile.is_zipfile(path)
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        assert "metadata.json" in names
        metadata = json.loads(archive.read("metadata.json"))
        arrays = {}
        for name in names:
            if name == "metadata.json":
                continue
            assert name.startswith("arrays/") and name.endswith(".npy"), name
            # every array must load without pickle (no object arrays)
            arrays[name[7:-4]] = np.load(io.BytesIO(archive.read(name)), allow_pickle=False)
    assert metadata["format"] == "modeshift"
    assert metadata["version"] == FORMAT_VERSION == 1
    assert metadata["model"] == "modeshift.models.hmm.HMM"
    assert metadata["hyperparameters"]["emission"] == "gmm"
    assert metadata["hyperparameters"]["n_mix"] == 2
    assert set(arrays) == set(model.parameter_names)
    for name, array in arrays.items():
        assert array.dtype != object
        np.testing.assert_array_equal(array, getattr(model, name))
    assert isinstance(metadata["attributes"]["history_"], list)


def test_write_and_read_archive_directly(tmp_path):
    arrays = {"a": np.arange(6.0).reshape(2, 3), "b": np.array([1, 2, 3], dtype=np.int64)}
    write_archive(tmp_path / "x.msz", {"model": "Thing", "note": "hi"}, arrays)
    metadata, loaded = read_archive(tmp_path / "x.msz")
    assert metadata["note"] == "hi" and metadata["version"] == FORMAT_VERSION
    assert set(loaded) == {"a", "b"}
    np.testing.assert_array_equal(loaded["a"], arrays["a"])
    assert loaded["b"].dtype == np.int64
    with pytest.raises(ValueError, match="unknown model type 'Thing'"):
        modeshift.load(tmp_path / "x.msz")


def test_saved_file_permissions_follow_the_umask(tmp_path):
    """A model file is an ordinary file: mode 0o666 & ~umask, like open() would create."""
    model, _ = _fitted("poisson")
    old = os.umask(0o022)
    try:
        model.save(tmp_path / "model.msz")
    finally:
        os.umask(old)
    mode = stat.S_IMODE(os.stat(tmp_path / "model.msz").st_mode)
    assert mode == 0o644, oct(mode)


# -------------------------------------------------------------- unreadable files


def _rewrite(path, target, edit):
    """Copy the zip at ``path`` to ``target`` with metadata.json passed through ``edit``."""
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(target, "w") as out:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "metadata.json":
                data = edit(data)
            out.writestr(item, data)


@pytest.fixture
def saved(tmp_path):
    model, X = _fitted("gaussian-full")
    path = tmp_path / "model.msz"
    model.save(path)
    return path, model, X


def test_newer_format_version_is_refused(saved, tmp_path):
    path, _, _ = saved
    newer = tmp_path / "newer.msz"

    def bump(data):
        metadata = json.loads(data)
        metadata["version"] = 999
        return json.dumps(metadata).encode()

    _rewrite(path, newer, bump)
    with pytest.raises(ValueError, match=r"version 999.*upgrade"):
        modeshift.load(newer)


def test_not_a_modeshift_file(saved, tmp_path):
    path, _, _ = saved
    other = tmp_path / "other.msz"
    _rewrite(path, other, lambda data: json.dumps({"format": "something-else", "version": 1}).encode())
    with pytest.raises(ValueError, match="not a modeshift model file"):
        modeshift.load(other)
    broken = tmp_path / "broken.msz"
    _rewrite(path, broken, lambda data: data[: len(data) // 2])  # invalid JSON
    with pytest.raises(ValueError, match="member metadata.json is not valid JSON"):
        modeshift.load(broken)
    no_metadata = tmp_path / "no_metadata.msz"
    with zipfile.ZipFile(no_metadata, "w") as archive:
        archive.writestr("arrays/x.npy", b"")
    with pytest.raises(ValueError, match=r"not a modeshift model file \(no metadata.json\)"):
        modeshift.load(no_metadata)


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.9, 0.99])
def test_truncated_file(saved, tmp_path, fraction):
    path, _, _ = saved
    data = path.read_bytes()
    truncated = tmp_path / "truncated.msz"
    truncated.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        modeshift.load(truncated)


def test_garbage_file(tmp_path):
    garbage = tmp_path / "garbage.msz"
    garbage.write_bytes(b"this is not a zip file at all" * 10)
    with pytest.raises(ValueError, match="corrupt or truncated"):
        modeshift.load(garbage)


def _member_data_span(path, member):
    """Byte range of a member's compressed data inside the zip file."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
    raw = path.read_bytes()
    header = info.header_offset
    name_length = int.from_bytes(raw[header + 26 : header + 28], "little")
    extra_length = int.from_bytes(raw[header + 28 : header + 30], "little")
    start = header + 30 + name_length + extra_length
    return start, start + info.compress_size


@pytest.mark.parametrize("member", ["metadata.json", "arrays/covars_.npy", "arrays/means_.npy"])
def test_corrupted_member_data(saved, tmp_path, member):
    """Bytes damaged inside a compressed member: a clear ValueError, never a zlib error."""
    path, _, _ = saved
    start, stop = _member_data_span(path, member)
    assert stop - start >= 8
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    for trial in range(20):
        damaged = bytearray(data)
        position = start + int(rng.integers(0, stop - start - 4))
        damaged[position : position + 4] = bytes(b ^ 0xA5 for b in damaged[position : position + 4])
        target = tmp_path / f"damaged{trial}.msz"
        target.write_bytes(bytes(damaged))
        with pytest.raises(ValueError, match="corrupt|not a readable"):
            modeshift.load(target)


def test_every_single_byte_corruption_gives_value_error_or_loads(saved, tmp_path):
    """Flip one byte at many places: load must raise ValueError or give back the intact model."""
    path, model, X = saved
    data = path.read_bytes()
    target = tmp_path / "flip.msz"
    problems = []
    for position in range(0, len(data), max(1, len(data) // 150)):
        damaged = bytearray(data)
        damaged[position] ^= 0xFF
        target.write_bytes(bytes(damaged))
        try:
            loaded = modeshift.load(target)
        except ValueError:
            continue
        except Exception as error:  # noqa: BLE001
            problems.append((position, type(error).__name__, str(error)[:60]))
            continue
        # a flip in bytes the format does not check (e.g. a timestamp) may load: then it is intact
        for name in model.parameter_names:
            value = getattr(loaded, name, None)
            if value is None or not np.array_equal(value, getattr(model, name)):
                problems.append((position, "loaded a damaged model", name))
    assert not problems, problems[:5]


def test_missing_array_is_refused(saved, tmp_path):
    """A file that lacks a parameter's array must not load as a silently incomplete model."""
    path, _, _ = saved
    target = tmp_path / "incomplete.msz"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(target, "w") as out:
        for item in source.infolist():
            if item.filename != "arrays/transmat_.npy":
                out.writestr(item, source.read(item.filename))
    with pytest.raises(ValueError, match="transmat_"):
        modeshift.load(target)


def test_array_of_wrong_shape_is_refused(saved, tmp_path):
    path, _, _ = saved
    target = tmp_path / "bad_shape.msz"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(target, "w") as out:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "arrays/transmat_.npy":
                buffer = io.BytesIO()
                np.save(buffer, np.full((3, 3), 1 / 3))
                data = buffer.getvalue()
            out.writestr(item, data)
    with pytest.raises(ValueError, match="transmat_|transition_matrix"):
        modeshift.load(target)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        modeshift.load(tmp_path / "nope.msz")


# ---------------------------------------------------------------- interrupted saves


class _Boom(RuntimeError):
    pass


def _fail_on_call(monkeypatch, target, attribute, n):
    """Make ``target.attribute`` raise on its n-th call (1-based)."""
    original = getattr(target, attribute)
    calls = {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise _Boom(f"interrupted on call {n}")
        return original(*args, **kwargs)

    monkeypatch.setattr(target, attribute, failing)
    return calls


@pytest.mark.parametrize(
    "where",
    [
        ("numpy", "save", 1),
        ("numpy", "save", 3),
        ("zipfile", "writestr", 1),
        ("zipfile", "writestr", 4),
        ("os", "fsync", 1),
        ("os", "replace", 1),
    ],
    ids=lambda w: f"{w[0]}.{w[1]}#{w[2]}",
)
def test_interrupted_save_leaves_previous_file_intact(saved, monkeypatch, where):
    path, model, X = saved
    before = path.read_bytes()
    other, _ = _fitted("gaussian-diag")
    module, attribute, n = where
    target = {"numpy": np, "zipfile": zipfile.ZipFile, "os": os}[module]
    calls = _fail_on_call(monkeypatch, target, attribute, n)
    with pytest.raises(_Boom):
        other.save(path)
    assert calls["n"] == n  # the failure really happened mid-save
    monkeypatch.undo()
    assert path.read_bytes() == before
    loaded = modeshift.load(path)
    assert loaded.score(X) == model.score(X)
    assert sorted(os.listdir(path.parent)) == ["model.msz"], "temporary files left behind"


def test_keyboard_interrupt_during_save_cleans_up(tmp_path, monkeypatch):
    model, _ = _fitted("categorical")
    path = tmp_path / "model.msz"

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "save", interrupt)
    with pytest.raises(KeyboardInterrupt):
        model.save(path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []  # no partial target, no temporary file


# ---------------------------------------------------------------------- the schema
def test_the_data_schema_is_saved_with_the_model(tmp_path):
    """A model fit on a data frame keeps its columns and time axis in the file; one fit on arrays has none."""
    import pandas as pd

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {"when": pd.period_range("1959Q1", periods=40, freq="Q").astype(str), "x": rng.normal(size=40), "y": 0.0}
    )
    model = HMM(2, n_iter=5, random_state=0).fit(frame, time_column="when", columns=["x"])
    model.save(tmp_path / "m.msz")
    metadata, _ = read_archive(tmp_path / "m.msz")
    assert metadata["schema"]["columns"] == ["x"] and metadata["schema"]["time"]["frequency"] == "Q-DEC"
    loaded = modeshift.load(tmp_path / "m.msz")
    assert loaded.schema_ == model.schema_
    assert loaded.score(loaded.schema_.read(frame)) == model.score(frame[["x"]].to_numpy())
    model.fit(frame[["x"]].to_numpy())  # refit on an array: the old schema is forgotten
    assert "schema_" not in model.__dict__
    model.save(tmp_path / "array.msz")
    assert "schema" not in read_archive(tmp_path / "array.msz")[0]
