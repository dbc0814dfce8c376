"""One progress bar for the package: tqdm on stderr when it is installed, else a line per update.

Design constraints: tqdm stays optional (the ``progress`` extra); ``progress=None`` shows a bar
only when stderr is a terminal, so logs, CI and tests stay quiet; the caller's loop only calls
``update``/``close`` on what it gets, or skips both when it gets None.
"""

from __future__ import annotations

import sys

__all__ = ["LineProgress", "progress_bar"]


class LineProgress:
    """A progress bar without tqdm: one line on stderr per update, e.g. ``sweep: 3/20 runs done``."""

    def __init__(self, total: int, *, desc: str, unit: str):
        self.total, self.n, self.desc, self.unit = total, 0, desc, unit

    def update(self, k: int = 1) -> None:
        self.n += k
        print(f"{self.desc}: {self.n}/{self.total} {self.unit}s done", file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


def progress_bar(progress: bool | None, *, total: int, desc: str, unit: str):
    """A bar counting ``total`` units, or None when none is wanted.

    Parameters
    ----------
    progress : bool or None
        True: always (tqdm, or :class:`LineProgress` without it); False: never; None: only
        when stderr is a terminal.
    total : int
        Units to count; a bar for 0 units is None.
    desc, unit : str
        What is counted (``desc="sweep", unit="run"``).

    Examples
    --------
    >>> progress_bar(False, total=10, desc="sweep", unit="run") is None
    True
    """
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"progress must be None, True or False, got {progress!r}")
    if progress is None:
        progress = bool(getattr(sys.stderr, "isatty", lambda: False)())
    if not progress or total <= 0:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return LineProgress(total, desc=desc, unit=unit)
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True)
