"""Model files read as hostile: crafted, corrupted and oversized files give one ValueError naming the
file (and the member at fault), never another exception, a crash or a huge allocation.

Every public estimator's saved file is attacked: bit flips, truncation, swapped members, lying size
fields, zip bombs (built small: highly compressible data under a low limit), deep or large
metadata, ``.npy`` headers declaring huge shapes or object dtypes, undeclared names, and for the
Markov chain out-of-range sparse indices.
"""

from __future__ import annotations

import io
import json
import os
import struct
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import modeshift
from modeshift.archive import ArchiveLimits, read_archive

sys.path.insert(0, str(Path(__file__).parent))
from test_contract import _fit, _public_estimators  # noqa: E402  (the contract suite's small fits)

ESTIMATORS = _public_estimators()


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, bytes]:
    """The bytes of a saved file of every public estimator (class name -> bytes)."""
    directory = tmp_path_factory.mktemp("saved")
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for cls in ESTIMATORS:
            path = directory / f"{cls.__name__}.msz"
            _fit(cls).save(path)
            out[cls.__name__] = path.read_bytes()
    return out


def _members(raw: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _zip(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _with_metadata(raw: bytes, change) -> bytes:
    members = _members(raw)
    metadata = json.loads(members["metadata.json"])
    change(metadata)
    return _zip({**members, "metadata.json": json.dumps(metadata).encode()})


def _with_array(raw: bytes, name: str, array: np.ndarray | None) -> bytes:
    members = _members(raw)
    if array is None:
        del members[f"arrays/{name}.npy"]
    else:
        members[f"arrays/{name}.npy"] = _npy(array)
    return _zip(members)


def _refused(path: Path, match: str = "", limits: ArchiveLimits | None = None) -> str:
    """Load ``path`` expecting one ValueError naming it (and matching ``match``); its message."""
    with pytest.raises(ValueError, match=match) as caught:
        modeshift.load(path, limits=limits)
    message = str(caught.value)
    assert str(path) in message, message
    return message


def _only_value_error(path: Path) -> None:
    """Loading either works or raises one ValueError naming the file: nothing else escapes."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            modeshift.load(path)
    except ValueError as error:
        assert str(path) in str(error), str(error)


# ---------------------------------------------------------------------- every model's file
@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda cls: cls.__name__)
def test_every_model_file_loads_and_declares_what_it_holds(cls, saved, tmp_path):
    path = tmp_path / "m.msz"
    path.write_bytes(saved[cls.__name__])
    assert type(modeshift.load(path)) is cls
    _, arrays = read_archive(path)
    declared = cls._file_attributes
    metadata = json.loads(_members(saved[cls.__name__])["metadata.json"])
    assert set(metadata["attributes"]) <= set(declared)
    model = modeshift.load(path)
    members = model._file_members()  # "<prefix>.*" declares the family "<prefix>.<key>"
    assert all(name in members or name.split(".")[0] + ".*" in members for name in arrays), sorted(arrays)


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda cls: cls.__name__)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_bit_flips_truncation_and_swaps_give_only_value_errors(cls, saved, tmp_path, data):
    raw = bytearray(saved[cls.__name__])
    attack = data.draw(st.sampled_from(["flip", "truncate", "swap", "foreign"]))
    if attack == "flip":
        for position in data.draw(st.lists(st.integers(0, len(raw) - 1), min_size=1, max_size=4)):
            raw[position] ^= 1 << data.draw(st.integers(0, 7))
    elif attack == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    else:
        members = _members(bytes(raw))
        names = sorted(members)
        if attack == "swap":  # two members exchange their contents
            a, b = data.draw(st.permutations(names))[:2]
            members[a], members[b] = members[b], members[a]
        else:  # an array of another model's file under this file's name
            other = _members(saved[data.draw(st.sampled_from(sorted(saved)))])
            source = data.draw(st.sampled_from(sorted(n for n in other if n.startswith("arrays/"))))
            arrays = [name for name in names if name.startswith("arrays/")]
            members[data.draw(st.sampled_from(arrays))] = other[source]
        raw = bytearray(_zip(members))
    path = tmp_path / f"{cls.__name__}-{attack}.msz"
    path.write_bytes(bytes(raw))
    _only_value_error(path)


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda cls: cls.__name__)
def test_undeclared_names_cannot_shadow_methods(cls, saved, tmp_path):
    raw = saved[cls.__name__]
    for name in ("score", "__dict__", "__class__", "fit"):
        path = tmp_path / "attribute.msz"
        path.write_bytes(_with_metadata(raw, lambda m, name=name: m["attributes"].update({name: [1]})))
        _refused(path, f"attribute '{name}' is not part of a {cls.__name__} file")
    path = tmp_path / "array.msz"
    path.write_bytes(_with_array(raw, "score", np.zeros(2)))
    _refused(path, "member arrays/score.npy is not part of")


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda cls: cls.__name__)
def test_non_finite_or_missing_parameters_are_refused(cls, saved, tmp_path):
    raw = saved[cls.__name__]
    path = _write(tmp_path / "m.msz", raw)
    _, arrays = read_archive(path)
    declared = modeshift.load(path)._file_members()
    finite = [name for name, kind in declared.items() if kind.startswith("finite") and np.size(arrays.get(name, ()))]
    for name in finite[:1]:
        bad = arrays[name].astype(float)
        bad.flat[0] = np.inf
        _refused(_write(tmp_path / "inf.msz", _with_array(raw, name, bad)), f"arrays/{name}.npy must hold finite")
    required = [name for name, kind in declared.items() if not kind.endswith("?")] or finite  # or the model's own rule
    _refused(_write(tmp_path / "missing.msz", _with_array(raw, required[0], None)), required[0])


def _write(path: Path, raw: bytes) -> Path:
    path.write_bytes(raw)
    return path


# ----------------------------------------------------------------------- the parameters
def test_wrong_shape_names_file_and_member(saved, tmp_path):
    path = _write(tmp_path / "m.msz", _with_array(saved["HMM"], "means_", np.zeros((3, 1))))
    message = _refused(path, "member arrays/means_.npy")
    assert "means_" in message


def test_non_stochastic_rows_are_refused(saved, tmp_path):
    path = _write(tmp_path / "m.msz", _with_array(saved["HMM"], "transmat_", np.array([[0.9, 0.9], [0.5, 0.5]])))
    _refused(path, "transmat_")


def test_wrong_attribute_type_is_refused(saved, tmp_path):
    path = _write(tmp_path / "m.msz", _with_metadata(saved["HMM"], lambda m: m["attributes"].update(history_="x")))
    _refused(path, "attribute 'history_' must be numbers")


def test_bad_hyperparameters_are_refused(saved, tmp_path):
    for change in ({"n_states": -2}, {"n_states": 2.5}, {"no_such": 1}):
        path = _write(
            tmp_path / "m.msz", _with_metadata(saved["HMM"], lambda m, c=change: m["hyperparameters"].update(c))
        )
        _refused(path, "member metadata.json: hyperparameters")


@pytest.mark.parametrize(
    "change, match",
    [
        ({"counts_indices": lambda a: a + 10**6}, "counts_indices must lie in"),
        ({"counts_indices": lambda a: -a - 1}, "counts_indices must lie in"),
        ({"counts_indices": lambda a: a[::-1].copy()}, "increase strictly"),
        ({"counts_indptr": lambda a: a * 1000}, "counts_data and counts_indices must be 1-D|row pointers"),
        ({"counts_indptr": lambda a: a[:-1]}, "row pointers"),
        ({"counts_data": lambda a: -a}, "positive counts"),
        ({"context_keys_": lambda a: a[::-1].copy()}, "strictly increasing"),
        ({"context_keys_": lambda a: a + 10**15}, r"in \[0, "),
    ],
)
@pytest.mark.parametrize("model", ["MarkovChain", "VariableOrderChain"])
def test_markov_chain_sparse_counts_are_checked(model, change, match, saved, tmp_path):
    raw = saved[model]
    _, arrays = read_archive(_write(tmp_path / "m.msz", raw))
    ((name, alter),) = change.items()
    path = _write(tmp_path / "bad.msz", _with_array(raw, name, alter(arrays[name])))
    _refused(path, match)


# ----------------------------------------------------------------- the archive and limits
def test_missing_version_is_not_a_modeshift_file(saved, tmp_path):
    path = _write(tmp_path / "m.msz", _with_metadata(saved["HMM"], lambda m: m.pop("version")))
    message = _refused(path, r"not a modeshift model file \(no format version\)")
    assert "upgrade" not in message


@pytest.mark.parametrize("metadata", [{"model": 3}, {"attributes": []}, {"hyperparameters": "x"}, {"version": "1"}])
def test_metadata_of_the_wrong_types(metadata, saved, tmp_path):
    path = _write(tmp_path / "m.msz", _with_metadata(saved["HMM"], lambda m: m.update(metadata)))
    _refused(path)


def test_deep_metadata_is_refused_before_parsing(saved, tmp_path):
    deep = "[" * 100_000 + "]" * 100_000
    members = _members(saved["HMM"])
    text = members["metadata.json"].decode().replace('"attributes": {', f'"attributes": {{"history_": {deep}, ', 1)
    path = _write(tmp_path / "m.msz", _zip({**members, "metadata.json": text.encode()}))
    _refused(path, "member metadata.json nests 100002 levels deep, more than max_depth=32")


def test_brackets_inside_strings_do_not_count_as_depth(saved, tmp_path):
    labels = ["[[[[" * 20, '"{{{{\\"' * 20, "]]}}" * 20]
    path = _write(
        tmp_path / "m.msz",
        _with_metadata(saved["MarkovChain"], lambda m: m["attributes"].update(vocabulary_=labels)),
    )
    assert list(modeshift.load(path).vocabulary_.symbols) == labels


def test_large_metadata_is_refused(saved, tmp_path):
    path = _write(tmp_path / "m.msz", _with_metadata(saved["HMM"], lambda m: m.update(padding="x" * 10_000)))
    _refused(
        path,
        "member metadata.json has .* bytes, more than max_metadata_bytes=1000",
        ArchiveLimits(max_metadata_bytes=1000),
    )


def test_zip_bomb_is_refused_under_its_limit(saved, tmp_path):
    bomb = _npy(np.zeros(2_000_000))  # 16 MB of zeros deflate to about 16 kB
    members = {**_members(saved["HMM"]), "arrays/means_.npy": bomb}
    path = _write(tmp_path / "bomb.msz", _zip(members))
    assert path.stat().st_size < 100_000
    _refused(path, "declares .* bytes uncompressed, more than max_bytes=1000000", ArchiveLimits(max_bytes=1_000_000))


def _lie_about_size(raw: bytes, member: str, size: int) -> bytes:
    """The archive with ``member``'s uncompressed size changed to ``size`` in the zip directory
    and its local header."""
    raw = bytearray(raw)
    encoded = member.encode()
    for signature, field, name_at in ((b"PK\x01\x02", 24, 46), (b"PK\x03\x04", 22, 30)):
        start = 0
        while (at := raw.find(signature, start)) >= 0:
            (name_length,) = struct.unpack_from("<H", raw, at + name_at - 18 if signature == b"PK\x01\x02" else at + 26)
            if raw[at + name_at : at + name_at + name_length] == encoded:
                struct.pack_into("<I", raw, at + field, size)
            start = at + 4
    return bytes(raw)


def test_lying_size_field_cannot_make_the_reader_inflate_more(saved, tmp_path):
    members = {**_members(saved["HMM"]), "arrays/means_.npy": _npy(np.zeros(2_000_000))}
    small = _write(tmp_path / "small.msz", _lie_about_size(_zip(members), "arrays/means_.npy", 200))
    _refused(small, "arrays/means_.npy")
    huge = _write(tmp_path / "huge.msz", _lie_about_size(_zip(members), "arrays/means_.npy", 2**32 - 1))
    _refused(huge, "more than max_bytes")


def test_encrypted_member_is_refused(saved, tmp_path):
    raw = bytearray(saved["HMM"])
    for signature, flags in ((b"PK\x01\x02", 8), (b"PK\x03\x04", 6)):
        start = 0
        while (at := raw.find(signature, start)) >= 0:
            raw[at + flags] |= 0x1
            start = at + 4
    _refused(_write(tmp_path / "m.msz", bytes(raw)), "is encrypted")


def test_too_many_members_are_refused(saved, tmp_path):
    members = {**_members(saved["HMM"]), **{f"arrays/x{i}.npy": b"" for i in range(20)}}
    _refused(_write(tmp_path / "m.msz", _zip(members)), "more than max_members=10", ArchiveLimits(max_members=10))


def test_unknown_member_is_refused(saved, tmp_path):
    members = {**_members(saved["HMM"]), "evil.py": b"print(1)"}
    _refused(_write(tmp_path / "m.msz", _zip(members)), "member evil.py is not part of a model file")


def _npy_with_header(header: str, body: bytes = b"") -> bytes:
    text = header.encode("latin1")
    padding = 64 - (10 + len(text) + 1) % 64
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text) + padding + 1) + text + b" " * padding + b"\n" + body


@pytest.mark.parametrize(
    "header, match",
    [
        ("{'descr': '<f8', 'fortran_order': False, 'shape': (10000000000000,), }", "header declares shape"),
        ("{'descr': '<f8', 'fortran_order': False, 'shape': (3037000500, 3037000500), }", "header declares shape"),
        ("{'descr': '|O', 'fortran_order': False, 'shape': (2,), }", "dtype object"),
        ("{'descr': [('a', '<f8')], 'fortran_order': False, 'shape': (2,), }", "model arrays hold numbers"),
        ("{'descr': '<U3', 'fortran_order': False, 'shape': (2,), }", "model arrays hold numbers"),
        ("not a header", "not a valid .npy array"),
    ],
)
def test_npy_header_is_checked_before_allocating(header, match, saved, tmp_path):
    members = {**_members(saved["HMM"]), "arrays/means_.npy": _npy_with_header(header, b"\0" * 16)}
    _refused(_write(tmp_path / "m.msz", _zip(members)), f"member arrays/means_.npy.*{match}|{match}")


def test_limits_can_be_raised(saved, tmp_path):
    path = _write(tmp_path / "m.msz", saved["MarkovRegression"])
    _refused(path, "max_bytes", ArchiveLimits(max_bytes=1000))
    assert modeshift.load(path, limits=ArchiveLimits(max_bytes=10**7)) is not None


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_special_files_are_refused_fast(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path, match in ((fifo, "not a regular file"), (tmp_path, "is a directory"), (Path("/dev/zero"), "regular")):
        _refused(path, match)  # refused before opening: reading /dev/zero or a FIFO would never end


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**12), 10**12) | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=10,
)


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda cls: cls.__name__)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_metadata_values_give_only_value_errors(cls, saved, tmp_path, data):
    """A hyper-parameter, attribute or the schema replaced by random JSON: loaded, or one ValueError."""
    raw = saved[cls.__name__]
    metadata = json.loads(_members(raw)["metadata.json"])
    section = data.draw(st.sampled_from(["hyperparameters", "attributes", "schema"]))
    if section == "schema":
        metadata["schema"] = data.draw(_JSON)
    elif metadata[section]:
        metadata[section][data.draw(st.sampled_from(sorted(metadata[section])))] = data.draw(_JSON)
    path = _write(tmp_path / "m.msz", _zip({**_members(raw), "metadata.json": json.dumps(metadata).encode()}))
    _only_value_error(path)


@pytest.mark.parametrize("cls", [modeshift.HMM, modeshift.SwitchingLDS], ids=lambda cls: cls.__name__)
def test_a_model_that_chose_its_number_of_modes_round_trips(cls, tmp_path):
    """Its file names n_states="auto" and records n_states_: the declared arrays do not depend on it."""
    X = np.r_[np.random.default_rng(0).normal(0, 1, (40, 1)), np.random.default_rng(1).normal(5, 1, (40, 1))]
    extra = {"state_dim": 1} if cls is modeshift.SwitchingLDS else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = cls("auto", max_states=2, n_iter=3, random_state=0, **extra).fit(X)
    model.save(tmp_path / "auto.msz")
    loaded = modeshift.load(tmp_path / "auto.msz")
    assert loaded.n_states_ == model.n_states_
    np.testing.assert_array_equal(loaded.transmat_, model.transmat_)


@pytest.mark.parametrize(
    "model, name, alter",
    [
        ("HMM", "covars_", lambda a: -a),
        ("HMM", "startprob_", lambda a: a + 0.5),
        ("ARHMM", "covars_", lambda a: -a),
        ("HSMM", "duration_rates_", lambda a: -a - 1),
        ("LinearGaussianSSM", "transition_covariance_", lambda a: -a - 1),
        ("MarkovRegression", "variances_", lambda a: -a),
        ("MarkovAutoregression", "transmat_", lambda a: a * 2),
        ("SwitchingLDS", "transmat_", lambda a: a * 2 + 0.1),
        ("SwitchingLDS", "dynamics_covariances_", lambda a: -a - 1),
        ("SwitchingLDS", "observation_covariance_", lambda a: np.eye(3)),
        ("SwitchingLDS", "dynamics_matrices_", lambda a: a[:1]),
        ("StructuralModel", "params_", lambda a: -a - 1),
        ("SymbolHMM", "emissionprob_", lambda a: a * 2),
        ("MarkovChainMixture", "transmat_", lambda a: a * 2),
        ("MarkovJumpProcess", "rate_matrix_", lambda a: a * 2 + 0.1),
    ],
)
def test_parameters_are_checked_as_when_set_by_hand(model, name, alter, saved, tmp_path):
    """Covariances positive semi-definite, rows stochastic (rates summing to 0), variances >= 0,
    shapes those of the hyper-parameters: a file breaking one is refused, naming the array."""
    _, arrays = read_archive(_write(tmp_path / "m.msz", saved[model]))
    path = _write(tmp_path / "bad.msz", _with_array(saved[model], name, alter(arrays[name])))
    _refused(path, name)


@pytest.mark.parametrize("model, name", [("MarkovChain", "order"), ("VariableOrderChain", "max_order")])
def test_an_order_whose_contexts_overflow_is_refused(model, name, saved, tmp_path):
    """Found by fuzzing: order=10**12 made loading compute 5**(10**12) (a hang), now one ValueError."""
    path = _write(
        tmp_path / "m.msz", _with_metadata(saved[model], lambda m: m["hyperparameters"].update({name: 10**12}))
    )
    _refused(path, "do not fit 64-bit keys")
