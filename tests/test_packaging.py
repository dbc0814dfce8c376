"""Packaging: one version source, the PEP 561 marker, and extras that match the imports.

Read from the source tree (``pyproject.toml`` and the modules' syntax trees), so no build
or install is needed.
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys
import tomllib

import ramodel

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ramodel"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _requirement_names(reqs: list[str]) -> set[str]:
    names = set()
    for r in reqs:
        name = r.split(";")[0]
        for sep in "<>=!~[ ":
            name = name.split(sep)[0]
        names.add(name.strip().lower())
    return names


def _module_level_imports(path: pathlib.Path) -> set[str]:
    """Top-level package names imported when the module is imported (not inside functions)."""

    def walk(body):
        for s in body:
            if isinstance(s, ast.Import):
                yield from (a.name.split(".")[0] for a in s.names)
            elif isinstance(s, ast.ImportFrom) and s.level == 0 and s.module:
                yield s.module.split(".")[0]
            elif isinstance(s, (ast.Try, ast.If)):
                yield from walk(s.body + s.orelse + [x for h in getattr(s, "handlers", []) for x in h.body])

    return set(walk(ast.parse(path.read_text()).body))


def _all_imports(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _modules():
    return sorted(PACKAGE.rglob("*.py"))


def test_one_version_source():
    project = PYPROJECT["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "ramodel.__version__"}
    # The literal setuptools reads statically is the one the package reports.
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    literal = [
        n.value.value for n in tree.body
        if isinstance(n, ast.Assign) and any(getattr(t, "id", None) == "__version__" for t in n.targets)
    ]
    assert literal == [ramodel.__version__]


def test_py_typed_is_shipped():
    assert (PACKAGE / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["ramodel"]


def test_extras_match_imports():
    project = PYPROJECT["project"]
    core = _requirement_names(project["dependencies"])
    extras = {k: _requirement_names(v) for k, v in project["optional-dependencies"].items()}
    # sympy is used by proofs/ only; the library never imports it.
    assert "sympy" not in core and "sympy" in extras["proofs"] and "sympy" in extras["test"]
    assert not any("sympy" in _all_imports(p) for p in _modules())
    # hypothesis: only ramodel.testing, whose extra is `testing`.
    assert "hypothesis" not in core and "hypothesis" in extras["testing"] and "hypothesis" in extras["test"]
    users = {p.relative_to(PACKAGE).as_posix() for p in _modules() if "hypothesis" in _all_imports(p)}
    assert users == {"testing.py"}, users
    # tqdm: optional, imported inside functions only, named by `progress` and `torch`.
    assert "tqdm" not in core and {"progress", "torch", "test"} <= {k for k, v in extras.items() if "tqdm" in v}
    assert not any("tqdm" in _module_level_imports(p) for p in _modules())
    # threadpoolctl: core (top_singular's thin-block path), imported inside a function only.
    assert "threadpoolctl" in core
    assert not any("threadpoolctl" in _module_level_imports(p) for p in _modules())
    # The notebook test runs (not skips) under the test extra.
    assert {"nbclient", "nbformat", "ipykernel"} <= extras["test"]


def test_import_ramodel_imports_no_optional_or_heavy_package():
    code = (
        "import sys, ramodel; "
        "bad = sorted({m.split('.')[0] for m in sys.modules} & "
        "{'torch', 'scipy', 'sympy', 'matplotlib', 'cupy', 'hypothesis', 'tqdm', 'threadpoolctl'}); "
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]"


def test_moved_modules_keep_their_old_paths():
    import importlib

    import ramodel.data
    import ramodel.data.datasets
    import ramodel.data.sequences
    import ramodel.datasets
    import ramodel.sequences
    from ramodel import datasets, sequences

    # One module object per concept: a patch or cache on either path is seen by both.
    assert ramodel.datasets is ramodel.data.datasets is datasets
    assert ramodel.sequences is ramodel.data.sequences is sequences
    assert importlib.import_module("ramodel.sequences").sequential_digits is ramodel.data.sequential_digits
    assert issubclass(ramodel.sequences.SequenceDataset, ramodel.datasets.Dataset)
    assert set(ramodel.data.__all__) >= set(datasets.__all__) | set(sequences.__all__)
