"""The one atomic writer of the package: reports, HTML pages, sweep CSVs, Jacobian files, checkpoints.

Design constraints, in order:

1. An interrupted write never leaves a partial file under the final name. The data goes
   to a temporary file in the target folder, which is flushed and fsynced, then moved
   over the target with ``os.replace`` (and the folder is fsynced, where possible).
2. Temporary files are recognisable and do not pile up. A write in progress is named
   ``.<name>.ramodel-tmp.<pid>.<random>`` next to ``<name>``. A failed write removes its
   own; a killed process (``kill -9``, power loss) cannot, so every write first removes
   the temporary files of the *same destination* whose process (``<pid>``) no longer
   runs on this machine. Files of other destinations, and of live writers, are never
   touched.
3. One file mode: an existing target keeps its permission bits; a new file gets the
   mode a plain ``open()`` would give it (``0o666`` minus the umask, usually ``0o644``).
   ``mkstemp``'s private ``0o600`` never leaks to the result.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import secrets
import stat
from collections.abc import Callable
from typing import BinaryIO

__all__ = ["atomic_write", "atomic_write_text", "atomic_write_bytes", "temporary_name", "TEMP_MARKER",
           "remove_stale_temporaries"]

#: The part of every temporary file name that says ramodel wrote it.
TEMP_MARKER = ".ramodel-tmp."


def temporary_name(path: str | os.PathLike) -> pathlib.Path:
    """A fresh temporary path for a write to ``path``: ``.<name>.ramodel-tmp.<pid>.<random>``."""
    path = pathlib.Path(path)
    return path.with_name(f".{path.name}{TEMP_MARKER}{os.getpid()}.{secrets.token_hex(4)}")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's live process, or we cannot tell: leave its file alone
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> list[pathlib.Path]:
    """Remove the temporary files left by killed writes to ``path``; returns those removed.

    A temporary file is stale when the process named in it no longer runs. Temporary
    files of live processes (a concurrent writer) and of other destinations are kept.
    """
    path = pathlib.Path(path)
    folder = path.parent
    pattern = re.compile(re.escape(f".{path.name}{TEMP_MARKER}") + r"(\d+)\.[0-9a-f]+")
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = pattern.fullmatch(entry.name)
        if m is None or _pid_alive(int(m.group(1))):
            continue
        with contextlib.suppress(OSError):
            if entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed.append(pathlib.Path(entry.path))
    return removed


def _new_file_mode() -> int:
    umask = None
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    umask = int(line.split()[1], 8)
    if umask is None:  # not Linux: read the umask by setting it (and restoring it at once)
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


def _target_mode(path: pathlib.Path) -> int:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return _new_file_mode()


def _fsync_folder(folder: pathlib.Path) -> None:
    # Makes the rename durable on POSIX; not possible (nor needed) on every platform.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_destination(path, *, action: str = "write", argument: str = "path") -> pathlib.Path:
    """``path`` as a Path if a file can be written there, else a clear error naming it.

    Raises
    ------
    TypeError
        If ``path`` is not a str or os.PathLike (e.g. None).
    ValueError
        If ``path`` is empty.
    FileNotFoundError
        If its folder does not exist.
    IsADirectoryError
        If ``path`` is a folder.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{argument} must be a file path (str or os.PathLike), got {path!r}")
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if text == "":
        raise ValueError(f"{argument} must be a file path, got an empty string")
    path = pathlib.Path(text)
    folder = path.parent
    if path.is_dir() or text.endswith(("/", os.sep)):
        raise IsADirectoryError(f"cannot {action} {text!r}: it is a folder; give a file name inside it")
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot {action} {text!r}: folder {str(folder)!r} does not exist")
    return path


def atomic_write(path, write: Callable[[BinaryIO], object], *, action: str = "write",
                 argument: str = "path") -> pathlib.Path:
    """Write a file atomically: ``write(fh)`` fills a temporary binary file, then it replaces ``path``.

    Parameters
    ----------
    path : str or os.PathLike
        Destination; its folder must exist.
    write : callable
        Called with the open temporary file (binary mode).
    action : str, default "write"
        Verb phrase for error messages, e.g. ``"save the report to"``.
    argument : str, default "path"
        Name of the argument in error messages.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    TypeError, ValueError, FileNotFoundError, IsADirectoryError
        See :func:`check_destination`; nothing is written.
    """
    path = check_destination(path, action=action, argument=argument)
    remove_stale_temporaries(path)
    mode = _target_mode(path)
    tmp = temporary_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_folder(path.parent)
    return path


def atomic_write_bytes(path, data: bytes, **kwargs) -> pathlib.Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda fh: fh.write(data), **kwargs)


def atomic_write_text(path, text: str, *, action: str = "write", argument: str = "path") -> pathlib.Path:
    """Write ``text`` (UTF-8) to ``path`` atomically, keeping an existing file's permissions.

    Parameters
    ----------
    path : str or os.PathLike
    text : str
    action : str, default "write"
        Verb phrase for error messages, e.g. ``"save the report to"``.
    argument : str, default "path"
        Name of the argument in error messages.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    FileNotFoundError
        If the folder does not exist (nothing is written).
    IsADirectoryError
        If ``path`` is a folder.
    """
    return atomic_write_bytes(path, text.encode("utf-8"), action=action, argument=argument)
