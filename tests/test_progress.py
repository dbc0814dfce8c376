"""The package's one progress bar (ramodel._progress), used by train() and sweep()."""

from __future__ import annotations

import builtins
import sys

import pytest

from ramodel._progress import LineProgress, progress_bar


def test_none_only_on_a_terminal(monkeypatch):
    assert progress_bar(None, total=3, desc="x", unit="run") is None  # pytest's stderr is no terminal
    assert progress_bar(False, total=3, desc="x", unit="run") is None
    assert progress_bar(True, total=0, desc="x", unit="run") is None
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    bar = progress_bar(None, total=3, desc="x", unit="run")
    assert bar is not None
    bar.close()


def test_without_tqdm_one_line_per_update(monkeypatch, capsys):
    real_import = builtins.__import__

    def no_tqdm(name, *args, **kwargs):
        if name.startswith("tqdm"):
            raise ImportError("no tqdm here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tqdm)
    bar = progress_bar(True, total=2, desc="sweep", unit="run")
    assert isinstance(bar, LineProgress)
    bar.update()
    bar.update()
    bar.close()
    assert capsys.readouterr().err.splitlines() == ["sweep: 1/2 runs done", "sweep: 2/2 runs done"]


@pytest.mark.parametrize("bad", ["yes", 1, 0.5])
def test_bad_progress_names_the_argument(bad):
    with pytest.raises(TypeError, match="progress must be None, True or False"):
        progress_bar(bad, total=3, desc="x", unit="run")
