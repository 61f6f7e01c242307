"""Writing a file without ever destroying one: the rules every output of modeshift follows.

A model file, a CSV table or a report page is written to a temporary file beside its
target, flushed to disk, then renamed over the target, so the target is either the old
file or the complete new one, never half of each. Before anything is written:

- the target must not be an input of the same command (compared by path and by inode,
  so a hard link or another spelling of the path counts): ``modeshift fit d.csv -o d.csv``
  is refused rather than replacing the data by the model;
- the target must be a regular file or not exist yet: a directory, FIFO, socket or device
  is refused. A symbolic link is followed: the file it points to is replaced and the link
  kept; a link to nothing or to a special file is refused;
- its directory must exist and be writable (so the command line can say so before a fit).

A replaced file keeps its permissions (a 0600 file stays 0600); a new file gets
``0666 & ~umask``, as ``open`` would give it. Error messages name the target, never the
temporary file.

The temporary file is ``.<target name>.modeshift-<pid>-<random>.tmp``. It is removed on
every error; a process killed outright (SIGKILL, power loss) leaves it behind, so each
write to a target first removes that target's temporary files whose process ``<pid>`` is
no longer running on this machine.

Example::

    write_atomically("table.csv", lambda file: file.write(b"a,b\\n1,2\\n"), inputs=["data.csv"])
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
from collections.abc import Callable, Iterable
from os import PathLike
from typing import BinaryIO

__all__ = ["check_output", "write_atomically"]

Path = str | PathLike[str]


def check_output(path: Path, inputs: Iterable[Path] = (), *, directory: bool = False) -> str:
    """Raise ``ValueError`` if writing ``path`` could destroy something (see the module's rules);
    return the path of the regular file to write (a symbolic link's target).

    ``inputs`` are the files the same command reads. ``directory=True`` checks an output
    directory instead (a report's): it may exist (as a directory) or be created.
    """
    shown = os.fspath(path)
    target = os.path.realpath(shown) if os.path.islink(shown) else os.path.abspath(shown)
    for given in inputs:
        if _same_file(target, os.fspath(given)):
            raise ValueError(
                f"{shown} is also an input of this command ({os.fspath(given)}): refusing to write over it; "
                "choose another output"
            )
    if os.path.islink(shown) and not os.path.exists(target):
        raise ValueError(f"{shown} is a symbolic link to {target}, which does not exist: refusing to write through it")
    if os.path.exists(target):
        mode = os.stat(target).st_mode
        if directory and not stat.S_ISDIR(mode):
            raise ValueError(f"{shown} exists and is not a directory")
        if not directory and not stat.S_ISREG(mode):
            raise ValueError(f"{shown} is {_kind(mode)}, not a regular file: refusing to write over it")
    parent = os.path.dirname(target)
    if directory:
        while not os.path.exists(parent):  # created with its missing parents: check the first that exists
            parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(f"{shown}: the directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{shown}: the directory {parent} is not writable")
    return target


def write_atomically(path: Path, write: Callable[[BinaryIO], object], inputs: Iterable[Path] = ()) -> None:
    """Write ``path`` by ``write(file)`` (a binary file open on the temporary file), atomically and
    following the module's rules; ``inputs`` as for :func:`check_output`."""
    shown = os.fspath(path)
    target = check_output(shown, inputs)
    directory, name = os.path.split(target)
    _remove_orphans(directory, name)
    existing = os.stat(target) if os.path.exists(target) else None
    temporary = os.path.join(directory, f".{name}.modeshift-{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        try:
            handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if existing else 0o666)
            with os.fdopen(handle, "wb") as file:
                write(file)
                file.flush()
                os.fsync(file.fileno())
            if existing is not None:
                os.chmod(temporary, stat.S_IMODE(existing.st_mode))
            os.replace(temporary, target)
        except OSError as error:  # name the user's path, not the temporary file
            raise type(error)(error.errno, f"{error.strerror or error} (writing {shown})", shown) from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise


def _same_file(target: str, other: str) -> bool:
    if os.path.realpath(target) == os.path.realpath(other):
        return True
    try:
        return os.path.samefile(target, other)
    except OSError:  # one of them does not exist
        return False


def _kind(mode: int) -> str:
    kinds = {
        stat.S_ISDIR: "a directory",
        stat.S_ISFIFO: "a FIFO (named pipe)",
        stat.S_ISCHR: "a character device",
        stat.S_ISBLK: "a block device",
        stat.S_ISSOCK: "a socket",
    }
    return next((text for test, text in kinds.items() if test(mode)), "a special file")


def _remove_orphans(directory: str, name: str) -> None:
    """Remove the temporary files of earlier writes to ``name`` whose process is no longer running."""
    pattern = re.compile(rf"\.{re.escape(name)}\.modeshift-(\d+)-[0-9a-f]+\.tmp")
    with contextlib.suppress(OSError):
        for entry in os.scandir(directory):
            found = pattern.fullmatch(entry.name)
            if found and not _running(int(found.group(1))):
                with contextlib.suppress(OSError):
                    os.remove(entry.path)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except PermissionError:  # another user's process
        return True
    except (ProcessLookupError, OverflowError):  # none has that number (or could have)
        return False
    return True
