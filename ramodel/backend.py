"""Array backends: which namespace (NumPy, CuPy, any array-API library) a call runs on.

Design constraints, in order:

1. NumPy is the default and the reference implementation.
2. CuPy is imported only when a caller asks for it by name (``backend="cupy"``).
   An array argument selects its own namespace through ``__array_namespace__``,
   so nothing is imported just to find out where an array lives.
3. Nothing is swapped globally; every function takes its namespace explicitly.
4. Random numbers are always drawn with NumPy on the host and then moved, so one
   seed gives the same numbers on every backend.

The surface is small: :func:`get_namespace`, :func:`resolve_dtype`,
:func:`to_numpy`, :func:`asarray` and :func:`is_numpy_namespace`.
"""

from __future__ import annotations

import functools
import types
from typing import Any

import numpy as np

__all__ = [
    "BACKENDS",
    "quiet_overflow",
    "DTYPES",
    "get_namespace",
    "resolve_dtype",
    "to_numpy",
    "asarray",
    "is_numpy_namespace",
    "namespace_name",
]

BACKENDS = ("numpy", "cupy")
DTYPES = ("float32", "float64")


def _import_cupy() -> types.ModuleType:
    try:
        import cupy
    except Exception as exc:  # ImportError, or a broken CUDA install raising at import
        raise RuntimeError(
            "backend='cupy' was requested but CuPy could not be imported "
            f"({type(exc).__name__}: {exc}). Install the wheel matching your CUDA "
            "driver, e.g. `pip install 'ramodel[gpu]'` (CUDA 12) or "
            "`pip install 'ramodel[gpu-cuda13]'` (CUDA 13)."
        ) from exc
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        raise RuntimeError(
            "backend='cupy' was requested and CuPy imported, but no usable CUDA GPU "
            f"was found ({type(exc).__name__}: {exc})."
        ) from exc
    if count < 1:
        raise RuntimeError("backend='cupy' was requested but CUDA reports 0 GPUs.")
    return cupy


def _namespace_of(x: Any) -> types.ModuleType:
    if isinstance(x, (np.ndarray, np.generic, int, float, bool)):
        return np
    get_ns = getattr(x, "__array_namespace__", None)
    if get_ns is None:
        raise TypeError(
            f"expected an array (NumPy, CuPy or array-API compatible), got {type(x).__name__}"
        )
    return get_ns()


def quiet_overflow(fn):
    """Run ``fn`` with NumPy's overflow/invalid/divide warnings off.

    Used on the model's Φ, gradient and HVP and on the solvers: a non-finite value at a
    trial point is an answer the solver acts on (it backtracks, or raises
    :class:`~ramodel.optimize.DivergenceError` naming the step); as a ``RuntimeWarning`` it
    only reached the user's stderr as noise ("overflow encountered in multiply"). Other
    namespaces (CuPy) do not warn.
    """

    @functools.wraps(fn)
    def quiet(*args, **kwargs):
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return fn(*args, **kwargs)

    return quiet


def get_namespace(*arrays: Any, backend: str | types.ModuleType | None = None) -> types.ModuleType:
    """Return the array namespace for a call.

    Parameters
    ----------
    *arrays : array_like
        Arrays whose namespace decides, when ``backend`` is None. ``None``
        entries are ignored. All arrays must share one namespace.
    backend : {"numpy", "cupy"}, module or None, optional
        Explicit choice. A module (for example ``array_api_strict``) is used
        as given. Default None: taken from ``arrays``, else NumPy.

    Returns
    -------
    module
        The namespace, e.g. ``numpy``.

    Raises
    ------
    ValueError
        If ``backend`` is an unknown name.
    RuntimeError
        If ``backend="cupy"`` but CuPy or a GPU is not usable; the message says why.
    TypeError
        If the arrays come from different namespaces.

    Examples
    --------
    >>> import numpy as np
    >>> get_namespace(np.zeros(3)).__name__
    'numpy'
    >>> get_namespace(backend="numpy").__name__
    'numpy'
    """
    if backend is not None:
        if isinstance(backend, types.ModuleType):
            return backend
        if backend == "numpy":
            return np
        if backend == "cupy":
            return _import_cupy()
        raise ValueError(f"backend must be one of {BACKENDS} or a namespace module, got {backend!r}")
    namespaces = {_namespace_of(a) for a in arrays if a is not None}
    if not namespaces:
        return np
    if len(namespaces) > 1:
        names = sorted(ns.__name__ for ns in namespaces)
        raise TypeError(f"arrays come from different namespaces: {names}; convert them to one first")
    return namespaces.pop()


def is_numpy_namespace(xp: types.ModuleType) -> bool:
    """True when ``xp`` is NumPy itself (fast paths such as scipy may be used)."""
    return xp is np


def namespace_name(xp: types.ModuleType) -> str:
    """Short name of a namespace, for configs and reports: 'numpy', 'cupy', ..."""
    return xp.__name__.split(".")[0]


def resolve_dtype(dtype: Any, xp: types.ModuleType):
    """Map ``"float32"``/``"float64"`` (or a dtype object) to ``xp``'s dtype.

    Only real floating dtypes are accepted: precision is never changed silently.

    Examples
    --------
    >>> import numpy as np
    >>> resolve_dtype("float64", np)
    <class 'numpy.float64'>
    """
    name = dtype if isinstance(dtype, str) else getattr(dtype, "name", None) or getattr(dtype, "__name__", None)
    if name is None:
        name = str(dtype)
    name = str(name).split(".")[-1].strip("'>")
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    return getattr(xp, name)


def to_numpy(x: Any) -> np.ndarray:
    """Copy an array of any supported namespace to a NumPy array on the host."""
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, (np.generic, int, float)):
        return np.asarray(x)
    get = getattr(x, "get", None)  # CuPy
    if callable(get) and type(x).__module__.startswith("cupy"):
        return get()
    try:
        return np.from_dlpack(x)
    except Exception:
        return np.asarray(x)


def asarray(x: Any, *, xp: types.ModuleType, dtype: Any = None):
    """Move a host array (or anything array-like) into namespace ``xp``."""
    if dtype is not None:
        dtype = resolve_dtype(dtype, xp)
    if xp is np:
        return np.asarray(x, dtype=dtype)
    if isinstance(x, np.ndarray) and xp.__name__.startswith("array_api_strict"):
        return xp.asarray(x.tolist() if x.ndim == 0 else x, dtype=dtype)
    return xp.asarray(x, dtype=dtype)


# ----------------------------------------------------------------- array shims
# The few calls whose spelling differs between NumPy < 2, CuPy and the array API; one
# copy each, used by the metrics and the theorem measures.
def matrix_transpose(x: Any, xp: types.ModuleType):
    """``x`` with its last two axes swapped, in namespace ``xp``."""
    f = getattr(xp, "matrix_transpose", None)
    return f(x) if f is not None else xp.swapaxes(x, -1, -2)


def astype(x: Any, dtype: Any, xp: types.ModuleType):
    """``x`` cast to ``dtype``, in namespace ``xp``."""
    f = getattr(xp, "astype", None)
    return f(x, dtype) if f is not None else x.astype(dtype)


def permute_dims(x: Any, axes: tuple[int, ...], xp: types.ModuleType):
    """``x`` with its axes permuted, in namespace ``xp``."""
    f = getattr(xp, "permute_dims", None)
    return f(x, axes) if f is not None else xp.transpose(x, axes)
