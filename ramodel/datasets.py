"""Moved to :mod:`ramodel.data.datasets`; this path stays importable.

``import ramodel.datasets`` gives the very module object of :mod:`ramodel.data.datasets`, so
attributes set on either (a test's ``monkeypatch``, a loader's cache) are shared.
"""

import sys

from .data import datasets as _moved

sys.modules[__name__] = _moved
