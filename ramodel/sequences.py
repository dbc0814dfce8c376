"""Moved to :mod:`ramodel.data.sequences`; this path stays importable.

``import ramodel.sequences`` gives the very module object of :mod:`ramodel.data.sequences`, so
attributes set on either (a test's ``monkeypatch``, a loader's cache) are shared.
"""

import sys

from .data import sequences as _moved

sys.modules[__name__] = _moved
