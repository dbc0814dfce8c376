"""Sequence data sets for recurrent networks: offline, seeded, flat rows.

Design constraints, in order:

1. :func:`ramodel.training.train` works unchanged: a :class:`SequenceDataset` is a
   :class:`ramodel.datasets.Dataset` whose rows are sequences of ``steps`` steps of
   ``features`` features flattened in C order (row ``n`` is ``x[n, t, f]`` at column
   ``t * features + f``). A recurrent model (:class:`ramodel.nets.ResidualRNN`)
   reshapes a flat row itself; :meth:`SequenceDataset.sequences` gives the
   ``(N, T, F)`` view.
2. Labels come from documented generators whose invariances are exact and tested:
   :func:`majority_symbols` is **time-invariant** (the label is a function of the
   symbol counts only, so every permutation of the time steps keeps it) and
   :func:`first_marker` is **time-variant** (the label is the order of two markers;
   the symbol counts carry no information about it).
3. Pure NumPy, no torch. Everything random is drawn from one ``seed`` through
   :func:`ramodel._validation.as_generator`; the train and test splits are drawn
   one after the other from the same generator, so they are independent samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._format import freeze
from .._validation import as_generator, check_int, check_positive_float
from . import datasets

__all__ = [
    "SequenceDataset",
    "sequential_digits",
    "majority_symbols",
    "first_marker",
    "majority_label",
    "first_marker_label",
    "one_hot",
]


@dataclass(frozen=True, eq=False)
class SequenceDataset(datasets.Dataset):
    """A :class:`~ramodel.datasets.Dataset` whose rows are flattened sequences.

    Attributes
    ----------
    steps : int
        Sequence length T.
    features : int
        Features F per step; ``steps * features == n_features``.
    task : str
        ``"time_invariant"``, ``"time_variant"`` or ``"mixed"`` (real data whose
        label depends on both, e.g. the rows of an image).

    All :class:`~ramodel.datasets.Dataset` attributes are kept: ``x_train`` is
    ``(N_train, T F)`` float64, read-only.

    Examples
    --------
    >>> ds = first_marker(steps=6, distractors=3, train_size=10, test_size=4, seed=0)
    >>> ds.x_train.shape, ds.sequences("train").shape, ds.task
    ((10, 30), (10, 6, 5), 'time_variant')
    """

    steps: int = 1
    features: int = 1
    task: str = "mixed"

    def __post_init__(self):
        steps = check_int("steps", self.steps, minimum=1)
        features = check_int("features", self.features, minimum=1)
        if steps * features != self.x_train.shape[1]:
            raise ValueError(
                f"steps * features must equal the row length {self.x_train.shape[1]}, got {steps} * {features}"
            )
        if self.task not in ("time_invariant", "time_variant", "mixed"):
            raise ValueError(f"task must be one of ('time_invariant', 'time_variant', 'mixed'), got {self.task!r}")

    def sequences(self, split: str = "train") -> np.ndarray:
        """Read-only view of a split as ``(N, steps, features)``; ``split`` is ``"train"`` or ``"test"``."""
        if split not in ("train", "test"):
            raise ValueError(f"split must be one of ('train', 'test'), got {split!r}")
        x = getattr(self, f"x_{split}")
        return x.reshape(x.shape[0], self.steps, self.features)

    def to_dict(self) -> dict:
        """:meth:`Dataset.to_dict` plus ``steps``, ``features`` and ``task``."""
        return {**super().to_dict(), "steps": self.steps, "features": self.features, "task": self.task}


_frozen = freeze  # ramodel._format


def _symbols(name: str, symbols) -> np.ndarray:
    s = np.asarray(symbols)
    if s.ndim != 2:
        raise ValueError(f"{name} must be integer symbols of shape (N, steps), got a rank-{s.ndim} array of shape {s.shape}")
    if s.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer symbols, got dtype {s.dtype}")
    if s.shape[1] < 1:
        raise ValueError(f"{name} must have at least one step, got shape {s.shape}")
    return s


def one_hot(symbols, size: int) -> np.ndarray:
    """One-hot features of integer symbols.

    Parameters
    ----------
    symbols : int array, shape (N, steps)
        Values in ``[0, size)``.
    size : int
        Alphabet size, the feature count F.

    Returns
    -------
    ndarray, shape (N, steps, size), float64

    Examples
    --------
    >>> one_hot([[0, 2]], 3).tolist()
    [[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]]
    """
    size = check_int("size", size, minimum=1)
    s = _symbols("symbols", symbols)
    if s.size and (s.min() < 0 or s.max() >= size):
        raise ValueError(f"symbols must be in [0, {size}), got values in [{s.min()}, {s.max()}]")
    return (s[..., None] == np.arange(size)).astype(np.float64)


def majority_label(symbols, symbol_count: int) -> np.ndarray:
    """The most frequent symbol of each sequence: the time-invariant label.

    Parameters
    ----------
    symbols : int array, shape (N, steps)
        Values in ``[0, symbol_count)``.
    symbol_count : int
        Alphabet size K >= 2.

    Returns
    -------
    ndarray, shape (N,), int64
        ``argmax_k count_k``; ``-1`` where the largest count is shared (a tie, which
        :func:`majority_symbols` never emits). A function of the counts only, so it is
        unchanged by any permutation of the steps.

    Examples
    --------
    >>> majority_label([[1, 0, 1], [0, 1, 2]], 3).tolist()
    [1, -1]
    """
    K = check_int("symbol_count", symbol_count, minimum=2)
    counts = one_hot(symbols, K).sum(axis=1)
    top = counts.max(axis=1)
    unique = (counts == top[:, None]).sum(axis=1) == 1
    return np.where(unique, counts.argmax(axis=1), -1).astype(np.int64)


def first_marker_label(symbols, distractors: int) -> np.ndarray:
    """Which marker comes first: the time-variant label.

    The markers are the symbols ``A = distractors`` and ``B = distractors + 1``.

    Parameters
    ----------
    symbols : int array, shape (N, steps)
        Values in ``[0, distractors + 2)``; each row holds A and B.
    distractors : int
        Number of distractor symbols, >= 1.

    Returns
    -------
    ndarray, shape (N,), int64
        0 if the first A comes before the first B, else 1.

    Raises
    ------
    ValueError
        A row without an A or without a B.

    Examples
    --------
    >>> first_marker_label([[0, 1, 2, 0], [2, 0, 1, 0]], 1).tolist()
    [0, 1]
    """
    K = check_int("distractors", distractors, minimum=1)
    s = _symbols("symbols", symbols)
    is_a, is_b = s == K, s == K + 1
    missing = ~(is_a.any(axis=1) & is_b.any(axis=1))
    if missing.any():
        raise ValueError(f"every sequence must hold both markers {K} and {K + 1}; "
                         f"rows {np.flatnonzero(missing)[:5].tolist()} do not")
    return (is_b.argmax(axis=1) < is_a.argmax(axis=1)).astype(np.int64)


def _sizes(train_size, test_size) -> tuple[int, int]:
    return check_int("train_size", train_size, minimum=1), check_int("test_size", test_size, minimum=1)


def _dataset(name, x, y, n_train, classes, *, steps, features, task) -> SequenceDataset:
    N = y.size
    return SequenceDataset(
        name=name,
        x_train=_frozen(np.ascontiguousarray(x[:n_train].reshape(n_train, -1))),
        y_train=_frozen(y[:n_train].copy()),
        x_test=_frozen(np.ascontiguousarray(x[n_train:].reshape(N - n_train, -1))),
        y_test=_frozen(y[n_train:].copy()),
        classes=classes,
        image_shape=None,
        class_ids=tuple(range(classes)),
        train_index=_frozen(np.arange(n_train, dtype=np.int64)),
        test_index=_frozen(np.arange(n_train, N, dtype=np.int64)),
        steps=steps,
        features=features,
        task=task,
    )


def majority_symbols(
    *,
    steps: int = 16,
    symbols: int = 4,
    bias: float = 0.25,
    train_size: int = 1000,
    test_size: int = 500,
    seed=0,
) -> SequenceDataset:
    """Time-invariant task: the label is the most frequent of ``symbols`` one-hot symbols.

    Generator, per sequence: draw a favoured symbol ``c`` uniformly; at each of the
    ``steps`` steps independently, emit ``c`` with probability ``bias``, else a symbol
    drawn uniformly from all ``symbols`` (``c`` included). The label is the realised
    plurality symbol (:func:`majority_label`), usually but not always ``c``;
    sequences whose largest count is tied are discarded and redrawn (in vectorised
    rounds). The label depends only on which symbols occur how often, so permuting
    the steps never changes it.

    Parameters
    ----------
    steps : int, default 16
        Sequence length T.
    symbols : int, default 4
        Alphabet size K >= 2, which is also the number of classes and of features.
    bias : float, default 0.25
        Extra probability of the favoured symbol, in [0, 1]. 0 gives uniform i.i.d.
        symbols (a hard counting task); 1 gives constant sequences. At 0.25 with
        T = 16 and K = 4, the favoured symbol is expected 7 times and each other
        symbol 3 times, so the plurality is clear but must be counted.
    train_size, test_size : int, default 1000, 500
    seed : int, SeedSequence or Generator, default 0

    Returns
    -------
    SequenceDataset
        ``task="time_invariant"``, ``features = classes = symbols``, one-hot rows.

    Examples
    --------
    >>> ds = majority_symbols(steps=5, symbols=3, train_size=8, test_size=4, seed=0)
    >>> s = ds.sequences("train").argmax(-1)
    >>> bool((majority_label(s, 3) == ds.y_train).all())
    True
    """
    T = check_int("steps", steps, minimum=1)
    K = check_int("symbols", symbols, minimum=2)
    bias = check_positive_float("bias", bias, allow_zero=True)
    if bias > 1:
        raise ValueError(f"bias must be in [0, 1], got {bias!r}")
    n_train, n_test = _sizes(train_size, test_size)
    rng = as_generator(seed)
    n = n_train + n_test
    kept_s, kept_y, got = [], [], 0
    while got < n:
        m = 2 * (n - got) + 16
        c = rng.integers(K, size=m)
        favoured = rng.random((m, T)) < bias
        other = rng.integers(K, size=(m, T))
        s = np.where(favoured, c[:, None], other)
        y = majority_label(s, K)
        keep = y >= 0
        kept_s.append(s[keep])
        kept_y.append(y[keep])
        got += int(keep.sum())
    s, y = np.concatenate(kept_s)[:n], np.concatenate(kept_y)[:n]
    return _dataset("majority_symbols", one_hot(s, K), y, n_train, K, steps=T, features=K, task="time_invariant")


def first_marker(
    *,
    steps: int = 16,
    distractors: int = 4,
    train_size: int = 1000,
    test_size: int = 500,
    seed=0,
) -> SequenceDataset:
    """Time-variant task: which of two marker symbols comes first.

    Generator, per sequence: every step is a distractor drawn uniformly from
    ``distractors`` symbols; then two distinct steps are drawn uniformly without
    replacement and hold the markers A (symbol ``distractors``) and B
    (``distractors + 1``), once each. The label is 0 if A comes first, 1 if B does
    (:func:`first_marker_label`); the two classes are equally likely. Every sequence
    holds exactly one A and one B and the distractors are independent of the label,
    so the symbol counts carry no information: only the order does. Reversing the
    steps flips every label.

    Parameters
    ----------
    steps : int, default 16
        Sequence length T >= 2.
    distractors : int, default 4
        Distractor symbols, >= 1; features ``F = distractors + 2``.
    train_size, test_size : int, default 1000, 500
    seed : int, SeedSequence or Generator, default 0

    Returns
    -------
    SequenceDataset
        ``task="time_variant"``, ``classes=2``, one-hot rows.

    Examples
    --------
    >>> ds = first_marker(steps=5, distractors=2, train_size=8, test_size=4, seed=0)
    >>> s = ds.sequences("test").argmax(-1)
    >>> bool((first_marker_label(s, 2) == ds.y_test).all()), bool((first_marker_label(s[:, ::-1], 2) != ds.y_test).all())
    (True, True)
    """
    T = check_int("steps", steps, minimum=2)
    K = check_int("distractors", distractors, minimum=1)
    n_train, n_test = _sizes(train_size, test_size)
    rng = as_generator(seed)
    n = n_train + n_test
    s = rng.integers(K, size=(n, T))
    # Two distinct positions per row: the first two entries of a random permutation of the steps.
    positions = np.argsort(rng.random((n, T)), axis=1)[:, :2]
    rows = np.arange(n)
    s[rows, positions[:, 0]] = K
    s[rows, positions[:, 1]] = K + 1
    y = (positions[:, 1] < positions[:, 0]).astype(np.int64)
    return _dataset("first_marker", one_hot(s, K + 2), y, n_train, 2, steps=T, features=K + 2, task="time_variant")


def sequential_digits(*, classes=None, test_fraction: float = 0.25, seed=0, standardize: bool = True) -> SequenceDataset:
    """scikit-learn's 8x8 digits read row by row: 8 steps of 8 pixels.

    The same data, split and standardisation as :func:`ramodel.datasets.digits` with
    the same arguments (an image's C-order row ``t`` is step ``t``), so the flat rows
    are identical; only ``steps=8``, ``features=8`` and ``task="mixed"`` are added.
    ``image_shape`` stays ``(8, 8)``, so image models can use it too.

    Parameters
    ----------
    classes, test_fraction, seed, standardize
        As for :func:`ramodel.datasets.digits`.

    Returns
    -------
    SequenceDataset

    Examples
    --------
    >>> ds = sequential_digits(classes=3, seed=0)
    >>> ds.sequences("train").shape, ds.name
    ((402, 8, 8), 'sequential_digits')
    """
    ds = datasets.digits(classes=classes, test_fraction=test_fraction, seed=seed, standardize=standardize)
    fields = {k: getattr(ds, k) for k in datasets.Dataset.__dataclass_fields__}
    fields["name"] = "sequential_digits"
    return SequenceDataset(**fields, steps=8, features=8, task="mixed")
