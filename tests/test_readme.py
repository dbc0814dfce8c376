"""Every Python example in README.md runs (blocks after a `<!-- not-run -->` line are skipped)."""

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _blocks():
    text = README.read_text()
    out = []
    for m in re.finditer(r"(<!-- not-run -->\s*)?```python\n(.*?)```", text, re.S):
        if not m.group(1):
            line = text[: m.start()].count("\n") + 1
            out.append(pytest.param(m.group(2), id=f"README.md:{line}"))
    return out


@pytest.mark.parametrize("code", _blocks())
def test_readme_example_runs(code, tmp_path, monkeypatch):
    from ramodel import mappings

    if "import torch" in code:
        pytest.importorskip("torch")
    monkeypatch.chdir(tmp_path)
    before = set(mappings.families())
    try:
        exec(compile(code, str(README), "exec"), {"__name__": "__readme__"})
    finally:
        for name in set(mappings.families()) - before:  # examples register families: undo it
            mappings.unregister(name)
