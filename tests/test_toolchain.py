"""Issue 18 item 6 (toolchain): the docstring examples of ramodel/ are part of the default run."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_default_run_collects_the_docstring_examples():
    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert options["testpaths"] == ["tests", "ramodel"]
    assert "--doctest-modules" in options["addopts"].split()


def test_examples_are_collected_once_from_their_module():
    # ramodel/datasets.py and ramodel/sequences.py are aliases of ramodel.data.*: their
    # examples are collected from ramodel/data/ only, each once.
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "ramodel"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    items = [line for line in proc.stdout.splitlines() if "::" in line]
    assert "ramodel/data/datasets.py::ramodel.data.datasets.digits" in items
    assert "ramodel/data/sequences.py::ramodel.data.sequences.first_marker" in items
    assert len(items) == len(set(items))
    assert not any(line.startswith(("ramodel/datasets.py", "ramodel/sequences.py")) for line in items)
