"""Backend selection."""

import numpy as np
import pytest

from ramodel import backend


def test_numpy_is_the_default_and_arrays_pick_their_namespace():
    assert backend.get_namespace() is np
    assert backend.get_namespace(np.zeros(2), None) is np
    assert backend.get_namespace(backend="numpy") is np


def test_array_api_strict_arrays_pick_their_namespace():
    xps = pytest.importorskip("array_api_strict")
    assert backend.get_namespace(xps.asarray([1.0])) is xps
    with pytest.raises(TypeError, match="different namespaces"):
        backend.get_namespace(xps.asarray([1.0]), np.zeros(1))
    x = backend.asarray(np.arange(3.0), xp=xps, dtype="float64")
    np.testing.assert_array_equal(backend.to_numpy(x), np.arange(3.0))


def test_unknown_backend_and_non_arrays_are_refused():
    with pytest.raises(ValueError, match=r"backend must be one of \('numpy', 'cupy'\)"):
        backend.get_namespace(backend="tensorflow")
    with pytest.raises(TypeError, match="expected an array"):
        backend.get_namespace("not an array")


def test_dtypes_are_checked_not_changed():
    assert backend.resolve_dtype("float32", np) is np.float32
    assert backend.resolve_dtype(np.float64, np) is np.float64
    with pytest.raises(ValueError, match="dtype must be one of"):
        backend.resolve_dtype("int64", np)


def test_cupy_is_not_imported_unless_asked():
    import sys

    backend.get_namespace(np.zeros(1))
    assert "cupy" not in sys.modules or sys.modules.get("cupy") is not None


def test_cupy_request_without_cupy_explains(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "cupy":
            raise ImportError("No module named 'cupy'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(RuntimeError, match=r"CuPy could not be imported.*ramodel\[gpu\]"):
        backend.get_namespace(backend="cupy")
