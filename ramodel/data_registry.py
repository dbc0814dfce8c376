"""The data sets a network can be trained on, by name: one table, loaders imported on first use.

Design constraints, in order:

1. One table (:data:`DATASETS`): ``ramodel train --dataset`` and Python code read the
   same entries, so a new data set is one loader and one entry here.
2. Light: a loader is named by ``"module:function"`` and looked up when it is called, so
   this module adds no import to ``import ramodel``, and a data set whose files come from
   an optional package (the ``data`` extra) needs it only when it is loaded.
3. Each entry says what it holds: its layout (flat rows, images, sequences), which
   keyword of its loader chooses the number of classes, and the loader's other options.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ._validation import check_choice

__all__ = ["DATASETS", "DatasetEntry", "dataset_entry", "load"]


@dataclass(frozen=True)
class DatasetEntry:
    """One entry of :data:`DATASETS`.

    Attributes
    ----------
    name : str
        The key (``ramodel train --dataset NAME``).
    loader : str
        ``"module:function"`` of the loader, imported by :meth:`load`.
    layouts : tuple of str
        What the data set offers: ``"flat"`` (always), ``"image"`` (it has
        ``image_shape``), ``"sequence"`` (a :class:`ramodel.sequences.SequenceDataset`).
        An architecture of :data:`ramodel.nets.ARCHITECTURES` needs its ``layout`` here.
    classes_option : str or None
        The loader keyword that sets the number of classes C (``"classes"``: keep
        classes ``0..C-1``; ``"symbols"``: an alphabet of C symbols), or None when C is
        fixed (``fixed_classes``).
    fixed_classes : int or None
        C of a data set whose loader has no ``classes_option``.
    doc : str
        One line for listings.
    """

    name: str
    loader: str
    layouts: tuple
    classes_option: str | None
    fixed_classes: int | None
    doc: str

    def function(self):
        """The loader function (imported now)."""
        module, _, attr = self.loader.partition(":")
        return getattr(importlib.import_module(module), attr)

    def options(self) -> dict[str, Any]:
        """The loader's keyword options and their defaults (``seed`` and the classes option included)."""
        return {n: p.default for n, p in inspect.signature(self.function()).parameters.items()
                if p.kind is inspect.Parameter.KEYWORD_ONLY}

    def load(self, *, classes: int | None = None, seed=0, **options):
        """Load the data set: ``classes`` through :attr:`classes_option`, ``seed``, and the loader's ``options``.

        Raises
        ------
        ValueError
            ``classes`` given for a data set whose number of classes is fixed.
        TypeError
            An option the loader does not take (the message lists those it takes).
        """
        fn = self.function()
        allowed = self.options()
        unknown = sorted(set(options) - set(allowed) - {"seed"} - ({self.classes_option} - {None}))
        if unknown or (self.classes_option is not None and self.classes_option in options):
            bad = unknown or [self.classes_option]
            raise TypeError(f"data set {self.name!r} takes no option(s) {bad}; its options are "
                            f"{sorted(k for k in allowed if k not in ('seed', self.classes_option))}"
                            + (f" (the number of classes is classes=, the loader's {self.classes_option}=)"
                               if self.classes_option not in (None, "classes") else ""))
        if classes is not None:
            if self.classes_option is None:
                raise ValueError(f"data set {self.name!r} has a fixed number of classes ({self.fixed_classes}); "
                                 f"got classes={classes!r}")
            options[self.classes_option] = classes
        return fn(seed=seed, **options)


def _entries(*entries: DatasetEntry) -> Mapping[str, DatasetEntry]:
    return MappingProxyType({e.name: e for e in entries})


#: The data sets, by name. All are bundled or generated offline.
DATASETS = _entries(
    DatasetEntry("digits", "ramodel.data.datasets:digits", ("flat", "image"), "classes", None,
                 "scikit-learn's 8x8 digits (1797 images, 10 classes)"),
    DatasetEntry("mnist5k", "ramodel.data.datasets:mnist5k", ("flat", "image"), "classes", None,
                 "5000 MNIST 28x28 images (10 classes)"),
    DatasetEntry("sequential_digits", "ramodel.data.sequences:sequential_digits", ("flat", "image", "sequence"),
                 "classes", None, "the 8x8 digits read row by row: 8 steps of 8 pixels (mixed task)"),
    DatasetEntry("majority_symbols", "ramodel.data.sequences:majority_symbols", ("flat", "sequence"), "symbols", None,
                 "the most frequent of C one-hot symbols (time-invariant task)"),
    DatasetEntry("first_marker", "ramodel.data.sequences:first_marker", ("flat", "sequence"), None, 2,
                 "which of two marker symbols comes first (time-variant task, 2 classes)"),
)


def dataset_entry(name: str) -> DatasetEntry:
    """The :data:`DATASETS` entry ``name``; ``ValueError`` listing the registered names otherwise."""
    check_choice("dataset", name, tuple(DATASETS))
    return DATASETS[name]


def load(name: str, *, classes: int | None = None, seed=0, **options):
    """Load the registered data set ``name`` (:meth:`DatasetEntry.load`).

    Examples
    --------
    >>> ds = load("majority_symbols", classes=3, steps=5, train_size=20, test_size=10)
    >>> ds.classes, ds.steps, ds.x_train.shape
    (3, 5, (20, 15))
    """
    return dataset_entry(name).load(classes=classes, seed=seed, **options)
