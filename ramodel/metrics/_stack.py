"""One normalised stack of Jacobians (dense or factors) with its top singular triplets.

Every Jacobian metric reads its input through :func:`_stack`, which calls
:func:`ramodel.spectra.top_singular` once on the whole stack.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._source import ORDER_FACTOR, ORTHONORMAL_FACTOR, check_factor_values
from .._validation import check_int
from ..backend import get_namespace
from ._arrays import _as_array, _astype, _float_array, _host, _top_singular

# Tolerances for factors given by the caller, in units of eps of their dtype (the same
# as ramodel.jacobian_set, so a JacobianSet that validated also validates here).
_ORTHONORMAL_FACTOR = ORTHONORMAL_FACTOR
_ORDER_FACTOR = ORDER_FACTOR


# --------------------------------------------------------------- Jacobian stacks
@dataclass(frozen=True)
class _Stack:
    """Top singular triplets of a stack of Jacobians, with an input axis always present."""

    xp: Any
    U: Any  # (L, N, d, kf)
    S: Any  # (L, N, kf)
    V: Any  # (L, N, d, kf)
    J: Any  # (L, N, d, d) or None for factors
    shared: bool  # the Jacobians do not depend on the input (N = 1 here)
    layout: str  # "dense" | "factors"
    complete: bool  # S holds every singular value
    frob2: Any = field(default=None)  # (L, N) |J|_F^2 for dense
    # J, S and frob2 are stored divided by ``scale`` (a power of two, so exactly): Jacobians
    # of size 1e200 would overflow |J|_F^2 and the CV of sigma_1. Only sigma_1 itself
    # (sigma1_mean, the per-layer detail) is multiplied back.
    scale: float = 1.0
    # Host bool (L, N) of matrices a caller leaves out (analyze: inactive branches, top-k
    # subspaces undefined at rounding level); None keeps every non-zero matrix.
    mask: Any = None
    upcast_from: str | None = None  # "float16" when the arrays were computed in float32

    @property
    def L(self) -> int:
        return int(self.U.shape[0])

    @property
    def d(self) -> int:
        return int(self.U.shape[2])

    @property
    def kf(self) -> int:
        return int(self.U.shape[3])


def _check_factors(U, S, V, names=("U", "S", "V")):
    nU, nS, nV = names
    U = _float_array(nU, U, (3, 4), "(L, N, d, k) or (L, d, k)")
    shape_doc = "(L, N, d, k)" if U.ndim == 4 else "(L, d, k)"
    V = _float_array(nV, V, (U.ndim,), f"{shape_doc} like {nU}")
    S = _float_array(nS, S, (U.ndim - 1,), "(L, N, k)" if U.ndim == 4 else "(L, k)")
    d, k = int(U.shape[-2]), int(U.shape[-1])
    if k > d:
        raise ValueError(f"{nU} must have k <= d columns, got shape {tuple(U.shape)}")
    if tuple(V.shape) != tuple(U.shape):
        raise ValueError(f"{nV} must have the shape of {nU} {tuple(U.shape)}, got {tuple(V.shape)}")
    if tuple(S.shape) != tuple(U.shape[:-2]) + (k,):
        raise ValueError(f"{nS} must have shape {tuple(U.shape[:-2]) + (k,)} to match {nU}, got {tuple(S.shape)}")
    check_factor_values(U, S, V, names=names)
    return U, S, V


def _is_factors(J) -> bool:
    return isinstance(J, tuple)


def _is_half(x) -> bool:
    return str(x.dtype).split(".")[-1] == "float16"


def _upcast(x):
    """float16 -> float32 (LAPACK has no half precision); other dtypes unchanged."""
    return _astype(x, get_namespace(x).float32, get_namespace(x)) if _is_half(x) else x


def _power_of_two_scale(x) -> float:
    """``2**e`` with ``max|x| / 2**e`` in [0.5, 1), or 1.0 when ``x`` is zero or already moderate.

    Only magnitudes whose squares could overflow or underflow (outside
    ``[tiny**0.25, max**0.25]`` of the dtype: 1e-77..1e77 in float64, 1e-9.5..1e9.5 in
    float32) are rescaled, so ordinary inputs are computed bit for bit as given.
    """
    xp = get_namespace(x)
    m = float(xp.max(xp.abs(x)))
    fi = np.finfo(np.dtype(str(x.dtype).split(".")[-1]))
    if m == 0.0 or (float(fi.tiny) ** 0.25 <= m <= float(fi.max) ** 0.25):
        return 1.0
    return math.ldexp(1.0, math.frexp(m)[1])


def _stack(J, *, k: int | None, full: bool, name: str = "J") -> _Stack:
    """Normalise dense Jacobians or factors to a :class:`_Stack`.

    Dense: ``top_singular`` is called once on the stack, with ``d`` triplets when
    ``full`` (RA3 needs the whole spectrum) and ``k`` otherwise. float16 inputs are
    computed in float32 (``upcast_from`` records it); huge or tiny magnitudes are
    divided by a power of two first (``scale``).
    """
    if isinstance(J, _Stack):
        return J
    if _is_factors(J):
        if len(J) != 3:
            raise TypeError(f"{name} as factors must be a tuple (U, S, V), got a tuple of length {len(J)}")
        half = any(_is_half(a) for a in J if hasattr(a, "dtype"))
        U, S, V = _check_factors(*(_upcast(_as_array(n, a)) for n, a in zip("USV", J)))
        xp = get_namespace(U, S, V)
        shared = U.ndim == 3
        if shared:
            U, S, V = (xp.expand_dims(a, axis=1) for a in (U, S, V))
        if k is not None:
            check_int("k", k, minimum=1, maximum=int(U.shape[-1]))
        complete = int(U.shape[-1]) == int(U.shape[-2])
        scale = _power_of_two_scale(S)
        if scale != 1.0:
            S = S * (1.0 / scale)
        return _Stack(xp, U, S, V, None, shared, "factors", complete, scale=scale,
                      upcast_from="float16" if half else None)
    half = hasattr(J, "dtype") and _is_half(J)
    J = _float_array(name, J, (3, 4), "(L, N, d, d) or (L, d, d)")
    J = _upcast(J)
    if J.shape[-1] != J.shape[-2]:
        raise ValueError(f"{name} must hold square d x d Jacobians, got shape {tuple(J.shape)}")
    xp = get_namespace(J)
    scale = _power_of_two_scale(J)
    if scale != 1.0:
        J = J * (1.0 / scale)  # a new array: the caller's is never modified
    shared = J.ndim == 3
    if shared:
        J = xp.expand_dims(J, axis=1)
    d = int(J.shape[-1])
    if full:
        kk = d
    else:
        if k is None:
            raise ValueError("k must be given for dense Jacobians (analyze uses k = classes); got None")
        kk = check_int("k", k, minimum=1, maximum=d)
    U, S, V = _top_singular(J, kk)
    frob2 = xp.sum(J * J, axis=(-2, -1))
    return _Stack(xp, U, S, V, J, shared, "dense", kk == d, frob2, scale=scale,
                  upcast_from="float16" if half else None)


def _resolve_k(stack: _Stack, k: int | None) -> int:
    if k is None:
        return stack.kf
    return check_int("k", k, minimum=1, maximum=stack.kf)


def _valid(stack: _Stack) -> np.ndarray:
    """Host bool (L, N): the Jacobian is non-zero, so its singular vectors mean something
    (and the caller's ``mask``, when set, keeps it)."""
    ok = _host(stack.S[..., 0]) > 0
    return ok if stack.mask is None else ok & np.asarray(stack.mask, dtype=bool)


def _with_nan(raw: np.ndarray, valid: np.ndarray) -> np.ndarray:
    out = np.array(raw, dtype=np.float64, copy=True)
    out[~valid] = np.nan
    return out


_ZERO_WHY = " (a zero Jacobian has no singular vectors)"
