"""Atomic text writes, shared by every writer of JSON, CSV and HTML in the package.

The text goes to a temporary file in the target folder, which is flushed and fsynced and
then moved over the target with ``os.replace``. An interrupted write never leaves a
partial file under the final name, and a failed one leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import tempfile

__all__ = ["atomic_write_text"]


def atomic_write_text(path, text: str, *, action: str = "write") -> pathlib.Path:
    """Write ``text`` (UTF-8) to ``path`` atomically, keeping an existing file's permissions.

    Parameters
    ----------
    path : str or os.PathLike
    text : str
    action : str, default "write"
        Verb phrase for error messages, e.g. ``"save the report to"``.

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
    path = pathlib.Path(path)
    folder = path.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot {action} {str(path)!r}: folder {str(folder)!r} does not exist")
    if path.is_dir():
        raise IsADirectoryError(f"cannot {action} {str(path)!r}: it is a folder")
    mode = (path.stat().st_mode & 0o777) if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path
