"""Tests of ramodel.sequences: the sequence data sets, their generators and their invariances."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ramodel import datasets
from ramodel.sequences import (
    SequenceDataset,
    first_marker,
    first_marker_label,
    majority_label,
    majority_symbols,
    one_hot,
    sequential_digits,
)


def _symbols(ds, split="train"):
    x = ds.sequences(split)
    assert np.array_equal(x.sum(-1), np.ones(x.shape[:2]))  # exactly one-hot at every step
    return x.argmax(-1)


def _counts(s, K):
    return np.stack([(s == k).sum(1) for k in range(K)], axis=1)


# --------------------------------------------------------------------------- labels


def test_majority_label_by_brute_force():
    rng = np.random.default_rng(0)
    s = rng.integers(3, size=(500, 5))
    expected = []
    for row in s:  # an independent per-row count
        c = [int(np.sum(row == k)) for k in range(3)]
        expected.append(c.index(max(c)) if c.count(max(c)) == 1 else -1)
    np.testing.assert_array_equal(majority_label(s, 3), expected)


def test_first_marker_label_by_brute_force():
    rng = np.random.default_rng(1)
    s = rng.integers(2, size=(200, 6))
    pos = np.argsort(rng.random((200, 6)), axis=1)[:, :2]
    s[np.arange(200), pos[:, 0]] = 2
    s[np.arange(200), pos[:, 1]] = 3
    expected = [0 if list(row).index(2) < list(row).index(3) else 1 for row in s]
    np.testing.assert_array_equal(first_marker_label(s, 2), expected)


# ------------------------------------------------------------------------- data sets


def test_majority_symbols_generator():
    ds = majority_symbols(steps=9, symbols=4, bias=0.2, train_size=300, test_size=120, seed=3)
    assert ds.x_train.shape == (300, 36) and ds.x_test.shape == (120, 36)
    assert (ds.steps, ds.features, ds.classes, ds.task) == (9, 4, 4, "time_invariant")
    for split in ("train", "test"):
        s = _symbols(ds, split)
        y = getattr(ds, f"y_{split}")
        c = _counts(s, 4)
        top = np.sort(c, axis=1)
        assert (top[:, -1] > top[:, -2]).all()  # never a tie
        np.testing.assert_array_equal(c.argmax(1), y)
    assert set(np.unique(ds.y_train)) == {0, 1, 2, 3}
    assert not ds.x_train.flags.writeable and not ds.y_test.flags.writeable


def test_first_marker_generator():
    ds = first_marker(steps=7, distractors=3, train_size=400, test_size=100, seed=2)
    assert (ds.steps, ds.features, ds.classes, ds.task) == (7, 5, 2, "time_variant")
    s = _symbols(ds)
    np.testing.assert_array_equal(_counts(s, 5)[:, 3:], np.ones((400, 2)))  # exactly one A and one B
    np.testing.assert_array_equal(first_marker_label(s, 3), ds.y_train)
    assert 0.4 < ds.y_train.mean() < 0.6
    # The distractor counts carry no information about the label: same mean in both classes.
    c = _counts(s, 3)
    assert np.abs(c[ds.y_train == 0].mean(0) - c[ds.y_train == 1].mean(0)).max() < 0.35


@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(2, 12))
def test_permuting_time_steps_keeps_invariant_labels_and_changes_variant_ones(seed, steps):
    rng = np.random.default_rng(seed)
    inv = majority_symbols(steps=steps, symbols=3, train_size=40, test_size=1, seed=seed)
    var = first_marker(steps=steps, distractors=2, train_size=40, test_size=1, seed=seed)
    perm = rng.permutation(steps)
    s_inv, s_var = _symbols(inv), _symbols(var)
    np.testing.assert_array_equal(majority_label(s_inv[:, perm], 3), inv.y_train)
    # Reversal swaps the order of the two markers in every sequence.
    np.testing.assert_array_equal(first_marker_label(s_var[:, ::-1], 2), 1 - var.y_train)
    # A random permutation changes the label exactly where it swaps the markers' order.
    a, b = np.argmax(s_var == 2, axis=1), np.argmax(s_var == 3, axis=1)
    where = np.argsort(perm)  # new position of old step t
    swapped = (where[a] < where[b]) != (a < b)
    np.testing.assert_array_equal(first_marker_label(s_var[:, perm], 2) != var.y_train, swapped)


def test_seeded_and_splits_independent():
    a, b = first_marker(seed=5, train_size=50, test_size=20), first_marker(seed=5, train_size=50, test_size=20)
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_test, b.y_test)
    c = first_marker(seed=6, train_size=50, test_size=20)
    assert not np.array_equal(a.x_train, c.x_train)
    m1 = majority_symbols(seed=np.random.SeedSequence(1), train_size=20, test_size=5)
    m2 = majority_symbols(seed=np.random.SeedSequence(1), train_size=20, test_size=5)
    assert np.array_equal(m1.x_test, m2.x_test)
    np.testing.assert_array_equal(a.test_index, np.arange(50, 70))


def test_sequential_digits_rows_are_time_steps():
    ds = sequential_digits(classes=4, seed=1)
    ref = datasets.digits(classes=4, seed=1)
    np.testing.assert_array_equal(ds.x_train, ref.x_train)
    np.testing.assert_array_equal(ds.y_test, ref.y_test)
    images = ref.x_train.reshape(-1, *ref.image_shape)
    np.testing.assert_array_equal(ds.sequences("train")[:, 3], images[:, 3, :])  # step t is image row t
    assert (ds.steps, ds.features, ds.task, ds.image_shape, ds.name) == (8, 8, "mixed", (8, 8), "sequential_digits")
    assert ds.to_dict()["steps"] == 8 and ds.to_dict()["n_features"] == 64


def test_one_hot():
    np.testing.assert_array_equal(one_hot(np.array([[2, 0]]), 3), [[[0, 0, 1], [1, 0, 0]]])
    with pytest.raises(ValueError, match=r"symbols must be in \[0, 3\)"):
        one_hot(np.array([[3]]), 3)


def test_errors():
    with pytest.raises(ValueError, match=r"shape \(N, steps\).*rank-3"):
        majority_label(np.zeros((2, 3, 1), dtype=int), 2)
    with pytest.raises(ValueError, match=r"shape \(N, steps\).*rank-1"):
        first_marker_label(np.zeros(4, dtype=int), 2)
    with pytest.raises(TypeError, match="integer symbols"):
        majority_label(np.zeros((2, 3)), 2)
    with pytest.raises(ValueError, match="both markers"):
        first_marker_label(np.array([[0, 2, 1]]), 2)
    with pytest.raises(ValueError, match="steps must be >= 2"):
        first_marker(steps=1)
    with pytest.raises(ValueError, match=r"bias must be in \[0, 1\]"):
        majority_symbols(bias=1.5)
    with pytest.raises(ValueError, match="symbols must be >= 2"):
        majority_symbols(symbols=1)
    with pytest.raises(ValueError, match="train_size"):
        first_marker(train_size=0)
    with pytest.raises(ValueError, match="split must be one of"):
        first_marker(train_size=2, test_size=2).sequences("val")
    ds = first_marker(train_size=4, test_size=2, steps=3, distractors=1)
    fields = {k: getattr(ds, k) for k in SequenceDataset.__dataclass_fields__}
    with pytest.raises(ValueError, match=r"steps \* features must equal the row length 9"):
        SequenceDataset(**{**fields, "steps": 4})
    with pytest.raises(ValueError, match="task must be one of"):
        SequenceDataset(**{**fields, "task": "other"})
