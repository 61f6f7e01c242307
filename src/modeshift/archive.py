"""The model file format: a zip archive of JSON metadata and ``.npy`` arrays, never pickle.

Layout of a ``.msz`` file (format version 1)::

    metadata.json   {"format": "modeshift", "version": 1, "model": <class name>,
                     "hyperparameters": {...}, "attributes": {...},
                     "schema": {...}}   (for a model fit on a data frame: its columns and
                                         time axis, :meth:`modeshift.data.Schema.to_json`)
    arrays/<name>.npy   one array per learned parameter (loaded with allow_pickle=False)

The schema is optional and ignored by readers that predate it, so it needs no new version.

Files are written to a temporary file in the target directory, flushed to disk,
then renamed over the target, so an interrupted save leaves any previous file intact.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
import zlib
from os import PathLike
from typing import Any

import numpy as np

__all__ = ["FORMAT_VERSION", "read_archive", "write_archive"]

FORMAT_VERSION = 1
_METADATA = "metadata.json"


def write_archive(path: str | PathLike[str], metadata: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Write metadata and arrays to ``path`` atomically."""
    path = os.fspath(path)
    header = {"format": "modeshift", "version": FORMAT_VERSION, **metadata}
    text = json.dumps(header, indent=2, sort_keys=True)
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=".modeshift-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(handle, "wb") as file:
            with zipfile.ZipFile(file, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                archive.writestr(_METADATA, text)
                for name, array in arrays.items():
                    buffer = io.BytesIO()
                    np.save(buffer, np.asarray(array), allow_pickle=False)
                    archive.writestr(f"arrays/{name}.npy", buffer.getvalue())
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp's 0600 would hide the file from others
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def read_archive(path: str | PathLike[str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Metadata and arrays of a model file; ``ValueError`` for a corrupt or too-new file."""
    path = os.fspath(path)
    try:
        with zipfile.ZipFile(path) as archive:
            metadata = json.loads(archive.read(_METADATA))
            arrays = {
                name[len("arrays/") : -len(".npy")]: np.load(io.BytesIO(archive.read(name)), allow_pickle=False)
                for name in archive.namelist()
                if name.startswith("arrays/") and name.endswith(".npy")
            }
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except (zipfile.BadZipFile, KeyError, EOFError, zlib.error, ValueError, NotImplementedError, OSError) as error:
        raise ValueError(f"{path} is not a readable modeshift model file (corrupt or truncated): {error}") from None
    if not isinstance(metadata, dict) or metadata.get("format") != "modeshift":
        raise ValueError(f"{path} is not a modeshift model file")
    version = metadata.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"{path} was written in model format version {version}; this modeshift "
            f"reads versions up to {FORMAT_VERSION}: upgrade modeshift to load it"
        )
    return metadata, arrays
