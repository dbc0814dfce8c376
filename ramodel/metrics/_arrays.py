"""Array shims over NumPy and the array API, and the checks of array arguments."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from ..backend import (
    asarray,
    astype,
    get_namespace,
    matrix_transpose,
    permute_dims,
    to_numpy,
)


def _top_singular(*args, **kwargs):
    """:func:`ramodel.spectra.top_singular`, looked up on :mod:`ramodel.metrics` at call time.

    The one seam through which every metric gets singular triplets: patching
    ``ramodel.metrics.top_singular`` (as the tests do, to count calls) reaches them all.
    """
    from . import top_singular

    return top_singular(*args, **kwargs)


# Namespace shims: one copy each, in ramodel.backend.
_mT = matrix_transpose
_astype = astype
_permute = permute_dims


def _host(x) -> np.ndarray:
    return np.array(to_numpy(x), dtype=np.float64, copy=True)


def _to_xp(a: np.ndarray, like):
    """Move a small host array into the namespace and dtype of ``like``."""
    xp = get_namespace(like)
    if xp is np:
        return np.asarray(a, dtype=like.dtype)
    return _astype(asarray(np.asarray(a, dtype=np.float64), xp=xp), like.dtype, xp)


def _is_real_floating(x) -> bool:
    try:
        return np.dtype(x.dtype).kind == "f"
    except TypeError:  # dtypes that NumPy does not know (e.g. array_api_strict's)
        xp = get_namespace(x)
        return bool(xp.isdtype(x.dtype, "real floating"))


def _as_array(name: str, x: Any):
    if x is None:
        raise TypeError(f"{name} is required, got None")
    if isinstance(x, (list, tuple)) or isinstance(x, numbers.Number):
        x = np.asarray(x)
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{name} must be an array, got {type(x).__name__}")
    return x


def _float_array(name: str, x: Any, ndims: tuple[int, ...], shape_doc: str):
    x = _as_array(name, x)
    if x.ndim not in ndims:
        raise ValueError(f"{name} must have shape {shape_doc}, got shape {tuple(x.shape)} (ndim={x.ndim})")
    if not _is_real_floating(x):
        raise TypeError(f"{name} must be a real floating array (float32 or float64), got dtype {x.dtype}")
    if any(int(s) < 1 for s in x.shape):
        raise ValueError(f"{name} must have every size >= 1, got shape {tuple(x.shape)}")
    xp = get_namespace(x)
    if not bool(xp.all(xp.isfinite(x))):
        raise ValueError(f"{name} must be finite, but it contains NaN or Inf")
    return x


def _eps(x) -> float:
    return float(np.finfo(np.dtype(str(x.dtype).split(".")[-1])).eps)
