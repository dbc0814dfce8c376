"""Top-k singular triplets of stacks of matrices.

Every metric that needs singular vectors goes through :func:`top_singular`, so the
sign convention is fixed in one place: the largest-magnitude entry of each left
singular vector is made positive (the right vector is flipped with it), which makes
alignments independent of LAPACK's arbitrary sign choice.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ._validation import check_choice, check_finite_array, check_int
from .backend import get_namespace

__all__ = ["TopSingular", "top_singular", "fix_signs"]

METHODS = ("auto", "svd")


class TopSingular(NamedTuple):
    """Top-k singular triplets of a stack ``(..., m, n)``.

    Attributes
    ----------
    U : array, shape (..., m, k)
        Left singular vectors, orthonormal columns.
    S : array, shape (..., k)
        Singular values, non-increasing.
    V : array, shape (..., n, k)
        Right singular vectors, orthonormal columns, with ``J V = U diag(S)``.
    """

    U: Any
    S: Any
    V: Any


def fix_signs(U, V, xp):
    """Flip each pair ``(u_i, v_i)`` so the largest-magnitude entry of ``u_i`` is positive.

    Parameters
    ----------
    U : array, shape (..., m, k)
    V : array, shape (..., n, k)

    Returns
    -------
    U, V : arrays of the same shapes (new arrays; inputs untouched).
    """
    idx = xp.argmax(xp.abs(U), axis=-2, keepdims=True)  # (..., 1, k)
    pivot = xp.take_along_axis(U, idx, axis=-2)
    sign = xp.where(pivot < 0, -1.0, 1.0)
    sign = xp.astype(sign, U.dtype) if hasattr(xp, "astype") else sign.astype(U.dtype)
    return U * sign, V * sign


def top_singular(J, k: int, *, method: str = "auto") -> TopSingular:
    """Top-k singular triplets of every matrix in a stack.

    Parameters
    ----------
    J : array, shape (..., m, n)
        Real floating stack; any leading batch shape.
    k : int
        Number of triplets, ``1 <= k <= min(m, n)``.
    method : {"auto", "svd"}
        ``"svd"`` is the exact batched LAPACK SVD. ``"auto"`` currently means ``"svd"``.

    Returns
    -------
    TopSingular
        ``U (..., m, k)``, ``S (..., k)``, ``V (..., n, k)`` with fixed signs.

    Examples
    --------
    >>> import numpy as np
    >>> J = np.diag([3.0, 2.0, 1.0])
    >>> U, S, V = top_singular(J, 2)
    >>> S.tolist()
    [3.0, 2.0]
    """
    xp = get_namespace(J)
    if J.ndim < 2:
        raise ValueError(f"J must have shape (..., m, n), got ndim={J.ndim}")
    m, n = J.shape[-2], J.shape[-1]
    k = check_int("k", k, minimum=1, maximum=min(m, n))
    check_choice("method", method, METHODS)
    check_finite_array("J", J, xp)
    U, S, Vh = xp.linalg.svd(J, full_matrices=False)
    U = U[..., :k]
    S = S[..., :k]
    V = xp.matrix_transpose(Vh)[..., :k]
    U, V = fix_signs(U, V, xp)
    return TopSingular(U, S, V)
