"""The model file format: a zip archive of JSON metadata and ``.npy`` arrays, never pickle.

Layout of a ``.msz`` file (format version 1)::

    metadata.json   {"format": "modeshift", "version": 1, "model": <class name>,
                     "hyperparameters": {...}, "attributes": {...},
                     "schema": {...}}   (for a model fit on a data frame: its columns and
                                         time axis, :meth:`modeshift.data.Schema.to_json`)
    arrays/<name>.npy   one array per learned parameter (loaded with allow_pickle=False)

The schema is optional and ignored by readers that predate it, so it needs no new version.

Files are written by :func:`modeshift.safe_write.write_atomically`: to a temporary file
beside the target, flushed to disk, then renamed over it, so an interrupted save leaves
any previous file intact (its rules on symbolic links, special files and permissions apply).

A file is read as possibly hostile: only a regular file is opened; the member count, the
sizes (those the zip directory declares, and the bytes actually inflated, counted while
reading, since a size field may lie), the metadata's size and nesting depth and each
array's header (dtype and shape, before any memory is allocated for it) are checked
against :class:`ArchiveLimits`, whose defaults hold any real model; pass larger ones to
read a larger file. Every failure is one ``ValueError`` naming the file and the member.
"""

from __future__ import annotations

import io
import json
import os
import re
import stat
import zipfile
import zlib
from dataclasses import dataclass
from os import PathLike
from typing import Any, BinaryIO

import numpy as np

from modeshift.safe_write import write_atomically

__all__ = ["FORMAT_VERSION", "ArchiveLimits", "read_archive", "write_archive"]

FORMAT_VERSION = 1
_METADATA = "metadata.json"
_ARRAY = re.compile(r"arrays/([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\.npy")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ArchiveLimits:
    """How large a model file :func:`read_archive` (and :func:`modeshift.load`) accepts.

    The defaults hold any real model (a fitted model's arrays are its parameters, a few
    kilobytes, or per-step probabilities of the fitted series); raise them to read a larger
    file, e.g. ``load(path, limits=ArchiveLimits(max_bytes=4 << 30))``.

    Attributes
    ----------
    max_members : int
        Members of the zip archive.
    max_bytes : int
        Bytes of all members together, uncompressed (and of the file itself).
    max_metadata_bytes : int
        Bytes of ``metadata.json``.
    max_depth : int
        Nesting of lists and objects in ``metadata.json``.
    """

    max_members: int = 1024
    max_bytes: int = 1 << 30
    max_metadata_bytes: int = 64 << 20
    max_depth: int = 32


def write_archive(path: str | PathLike[str], metadata: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Write metadata and arrays to ``path`` atomically (see :mod:`modeshift.safe_write`)."""
    header = {"format": "modeshift", "version": FORMAT_VERSION, **metadata}
    text = json.dumps(header, indent=2, sort_keys=True)

    def write(file: BinaryIO) -> None:
        with zipfile.ZipFile(file, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(_METADATA, text)
            for name, array in arrays.items():
                buffer = io.BytesIO()
                np.save(buffer, np.asarray(array), allow_pickle=False)
                archive.writestr(f"arrays/{name}.npy", buffer.getvalue())

    write_atomically(path, write)


def read_archive(
    path: str | PathLike[str], limits: ArchiveLimits | None = None
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Metadata and arrays of a model file; ``ValueError`` for a corrupt, too-new or too-large file."""
    limits = limits or ArchiveLimits()
    path = os.fspath(path)
    mode = os.stat(path).st_mode  # FileNotFoundError and PermissionError as they are
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file (a FIFO, device or socket)"
        raise ValueError(f"{path} is {kind}: a model file is a regular file")
    with open(path, "rb") as file:
        opened = os.fstat(file.fileno())
        if not stat.S_ISREG(opened.st_mode):  # replaced since the check
            raise ValueError(f"{path} is not a regular file: a model file is a regular file")
        size = opened.st_size
        if size > limits.max_bytes:
            raise ValueError(f"{path} has {size} bytes, more than max_bytes={limits.max_bytes} (ArchiveLimits)")
        try:
            archive = zipfile.ZipFile(file)
        except (zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError, ValueError, OSError) as error:
            raise ValueError(f"{path} is not a readable modeshift model file (corrupt or truncated): {error}") from None
        with archive:
            members = _members(path, archive, limits)
            metadata = _metadata(path, _read_member(path, archive, members[_METADATA], limits), limits)
            arrays = {
                found.group(1): _array(path, member.filename, _read_member(path, archive, member, limits))
                for member in members.values()
                if (found := _ARRAY.fullmatch(member.filename))
            }
    return metadata, arrays


def _members(path: str, archive: zipfile.ZipFile, limits: ArchiveLimits) -> dict[str, zipfile.ZipInfo]:
    """The members, checked from the zip directory: count, declared sizes, names, encryption."""
    members = archive.infolist()
    if len(members) > limits.max_members:
        raise ValueError(f"{path} has {len(members)} members, more than max_members={limits.max_members}")
    declared = sum(member.file_size for member in members)
    if declared > limits.max_bytes:
        raise ValueError(
            f"{path} declares {declared} bytes uncompressed, more than max_bytes={limits.max_bytes} (ArchiveLimits)"
        )
    by_name: dict[str, zipfile.ZipInfo] = {}
    for member in members:
        if member.filename in by_name:
            raise ValueError(f"{path}: member {member.filename} appears twice")
        if member.flag_bits & 0x1:
            raise ValueError(f"{path}: member {member.filename} is encrypted; model files never are")
        if member.filename != _METADATA and not _ARRAY.fullmatch(member.filename):
            raise ValueError(f"{path}: member {member.filename} is not part of a model file")
        by_name[member.filename] = member
    if _METADATA not in by_name:
        raise ValueError(f"{path} is not a modeshift model file (no {_METADATA})")
    if by_name[_METADATA].file_size > limits.max_metadata_bytes:
        raise ValueError(
            f"{path}: member {_METADATA} has {by_name[_METADATA].file_size} bytes, "
            f"more than max_metadata_bytes={limits.max_metadata_bytes}"
        )
    return by_name


def _read_member(path: str, archive: zipfile.ZipFile, member: zipfile.ZipInfo, limits: ArchiveLimits) -> bytes:
    """A member's bytes, read in chunks and abandoned past its declared size or the limits
    (so a size field that lies cannot make the reader inflate more than the limits allow)."""
    allowed = min(member.file_size, limits.max_metadata_bytes if member.filename == _METADATA else limits.max_bytes)
    chunks, total = [], 0
    try:
        with archive.open(member) as stream:
            while total <= allowed and (chunk := stream.read(_CHUNK)):
                total += len(chunk)
                chunks.append(chunk)
    except (zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError, RuntimeError, ValueError, OSError) as error:
        raise ValueError(f"{path}: member {member.filename} is corrupt or truncated: {error}") from None
    if total > allowed:
        raise ValueError(
            f"{path}: member {member.filename} inflates past its declared size {member.file_size} "
            "or the limits (a corrupt or hostile file)"
        )
    return b"".join(chunks)


def _metadata(path: str, raw: bytes, limits: ArchiveLimits) -> dict[str, Any]:
    """The metadata, its nesting depth checked before it is parsed, and its format and version."""
    where = f"{path}: member {_METADATA}"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{where} is not UTF-8 text") from None
    depth = _depth(text)
    if depth > limits.max_depth:
        raise ValueError(f"{where} nests {depth} levels deep, more than max_depth={limits.max_depth}")
    try:
        metadata = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise ValueError(f"{where} is not valid JSON: {error}") from None
    if not isinstance(metadata, dict) or metadata.get("format") != "modeshift":
        raise ValueError(f"{path} is not a modeshift model file")
    if "version" not in metadata:
        raise ValueError(f"{path} is not a modeshift model file (no format version)")
    version = metadata["version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"{where}: the format version must be a positive integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path} was written in model format version {version}; this modeshift "
            f"reads versions up to {FORMAT_VERSION}: upgrade modeshift to load it"
        )
    for key, kind in (("model", str), ("hyperparameters", dict), ("attributes", dict), ("schema", dict)):
        if key in metadata and not isinstance(metadata[key], kind) and not (key == "schema" and metadata[key] is None):
            raise ValueError(f"{where}: {key!r} must be a JSON {_JSON_NAMES[kind]}, got {type(metadata[key]).__name__}")
    return metadata


_JSON_NAMES = {str: "string", dict: "object"}


def _depth(text: str) -> int:
    """The deepest nesting of ``[`` and ``{`` in JSON text, outside strings (0 for a scalar)."""
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', "", text).encode("utf-8", "replace")
    codes = np.frombuffer(bare, dtype=np.uint8)
    steps = np.isin(codes, (ord("["), ord("{"))).astype(np.int64) - np.isin(codes, (ord("]"), ord("}")))
    return int(np.cumsum(steps).max(initial=0))


_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def _array(path: str, name: str, raw: bytes) -> np.ndarray:
    """An ``.npy`` member: its header read and checked (a plain numeric dtype, a shape whose
    bytes are those that follow) before the array is built from the bytes already read."""
    stream = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(stream)
        if version not in _HEADERS:
            raise ValueError(f"format version {version} (modeshift writes 1.0 and reads 2.0)")
        shape, fortran, dtype = _HEADERS[version](stream)
    except (ValueError, EOFError, SyntaxError, TypeError) as error:
        raise ValueError(f"{path}: member {name} is not a valid .npy array: {error}") from None
    if dtype.hasobject or dtype.fields is not None or dtype.kind not in "biufc":
        raise ValueError(f"{path}: member {name} has dtype {dtype}; model arrays hold numbers")
    count = int(np.prod(shape, dtype=object))
    body = raw[stream.tell() :]
    if count * dtype.itemsize != len(body):
        raise ValueError(
            f"{path}: member {name}: its header declares shape {shape} of {dtype} "
            f"({count * dtype.itemsize} bytes) but it holds {len(body)}"
        )
    flat = np.frombuffer(body, dtype=dtype, count=count)
    return flat.reshape(shape, order="F" if fortran else "C").copy()
