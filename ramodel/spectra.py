"""Top-k singular triplets of stacks of matrices.

Every metric that needs singular vectors goes through :func:`top_singular` (dense
stacks) or :func:`top_singular_operator` (matrix-free, e.g. Jacobians available only
through JVPs/VJPs), so two things are fixed in one place:

* the sign convention: the largest-magnitude entry of each left singular vector is
  made positive (the right vector is flipped with it), which makes alignments
  independent of LAPACK's arbitrary sign choice (:func:`fix_signs`);
* the algorithm: RA analysis needs only the top ``k ~ C`` triplets of many
  Jacobians, and a full SVD of each is wasteful (and on CuPy, batched SVD of
  matrices larger than 32x32 loops over the matrices). Three algorithms are offered
  (see :data:`METHODS` and the cost model in :func:`top_singular`).

Design constraints:

1. Batched, except where a loop is measured to be faster: every step is one batched
   call (matmul, QR, eigh, SVD of small matrices) over the stack ``(..., m, n)``. The
   Python loops are over power iterations (or Krylov blocks) and, for the default
   ``method="auto"`` on NumPy only, over the matrices of the stack. Matrices of at
   least 128 on a side are worked on one at a time by the thin-block Lanczos of
   :mod:`ramodel._lanczos` (each stays in cache, and a product with 2 vectors costs what
   a matrix-vector product costs). The batched block Krylov that takes the matrices it
   declines runs on cache-sized chunks (about 8 MiB of ``J`` each). Both are measured in
   ``benchmarks/RESULTS_spectra.md``. Other namespaces get the whole stack at once.
2. Namespace-generic: the namespace comes from the input
   (:func:`ramodel.backend.get_namespace`), so NumPy, CuPy and any array-API library
   with the ``linalg`` extension work; nothing is imported to find out.
3. Randomness (the Gaussian test matrix of the randomized range finder) is drawn on
   the host with NumPy from ``seed`` and then moved, so one seed gives the same
   test matrix on every backend.
4. Never a silent NaN: zero or repeated singular values give orthonormal (if
   arbitrary) vectors, never a division by zero.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any, Callable, NamedTuple

import numpy as np

from . import _lanczos
from ._validation import as_generator, check_choice, check_finite_array, check_int
from .backend import asarray, astype, get_namespace, matrix_transpose, namespace_name, resolve_dtype, to_numpy

__all__ = [
    "METHODS",
    "TopSingular",
    "top_singular",
    "top_singular_operator",
    "triplet_residual",
    "fix_signs",
]

METHODS = ("auto", "svd", "gram", "randomized")

#: ``power_iters="auto"`` caps the power iterations at this many when ``k`` is small
#: relative to ``min(m, n)`` (``k < 0.1 * min(m, n)``), else at ``_AUTO_ITERS_LARGE_K``.
#: These are scikit-learn's ``randomized_svd`` defaults (see :func:`top_singular`).
_AUTO_ITERS_SMALL_K = 7
_AUTO_ITERS_LARGE_K = 4

#: ``method="auto"`` uses an exact method for matrices this small: SVD is cheap and
#: CuPy's batched SVD is a fast batched Jacobi kernel up to 32x32.
_AUTO_SMALL = 32

#: ``method="auto"`` uses the randomized method only when the sketch width
#: ``l = k + oversample`` is at most ``min(m, n) / _AUTO_SKETCH_RATIO``: below that the
#: ~2(q+1) passes over ``J`` cost about as much as one exact factorisation.
_AUTO_SKETCH_RATIO = 4

_SIDES = ("both", "right", "left")


class TopSingular(NamedTuple):
    """Top-k singular triplets of a stack ``(..., m, n)``.

    Attributes
    ----------
    U : array, shape (..., m, k)
        Left singular vectors, orthonormal columns.
    S : array, shape (..., k)
        Singular values, non-increasing, >= 0.
    V : array, shape (..., n, k)
        Right singular vectors, orthonormal columns, with ``J V ~= U diag(S)``
        (exactly, up to rounding, for ``method="svd"``; see :func:`top_singular`
        for the accuracy of the other methods).
    """

    U: Any
    S: Any
    V: Any

    def to_dict(self) -> dict[str, Any]:
        """``{"U": U, "S": S, "V": V}`` (the arrays themselves, not copies)."""
        return {"U": self.U, "S": self.S, "V": self.V}


# ----------------------------------------------------------------------------- helpers


_mT = matrix_transpose  # the array shims live once, in ramodel.backend
_astype = astype


def _diagonal(x, xp):
    linalg_diag = getattr(xp.linalg, "diagonal", None)
    if linalg_diag is not None:
        return linalg_diag(x)
    return xp.diagonal(x, axis1=-2, axis2=-1)


def _is_kind(dtype, kind: str, xp) -> bool:
    isdtype = getattr(xp, "isdtype", None)
    if isdtype is not None:
        return bool(isdtype(dtype, kind))
    letters = {"integral": "iu", "bool": "b", "complex floating": "c", "real floating": "f"}[kind]
    return np.dtype(dtype).kind in letters


def _as_real_float(J, xp, name: str = "J"):
    """Integer and boolean input becomes float64; complex is refused; float32 and float64
    are kept; narrower floats (float16) are computed in float32, with a warning, because
    LAPACK (numpy.linalg) has no half-precision routines."""
    dtype = J.dtype
    if _is_kind(dtype, "real floating", xp):
        if xp.finfo(dtype).bits < 32:
            warnings.warn(
                f"{name} has dtype {dtype}, which numpy.linalg/LAPACK cannot factorise: "
                "computing in float32 and returning float32 results",
                UserWarning,
                stacklevel=3,
            )
            return _astype(J, xp.float32, xp)
        return J
    if _is_kind(dtype, "integral", xp) or _is_kind(dtype, "bool", xp):
        return _astype(J, xp.float64, xp)
    raise TypeError(f"{name} must be a real (floating, integer or boolean) array, got dtype {dtype}")


def _eps(dtype, xp) -> float:
    return float(xp.finfo(dtype).eps)


def _col_norms(Y, xp):
    """Euclidean norm of each column: ``(..., m, k) -> (..., k)``."""
    return xp.sqrt(xp.sum(Y * Y, axis=-2))


def _safe_scale(c, xp):
    """``c`` with zeros replaced by ones (for dividing by a per-matrix scale)."""
    return xp.where(c > 0, c, xp.ones_like(c))


def _orth(Y, xp):
    """Orthonormal basis of the columns of ``Y`` (Householder QR: no division, so
    zero or dependent columns give an orthonormal completion, never NaN)."""
    Q, _ = xp.linalg.qr(Y)
    return Q


def _sign_of_diag(R, xp):
    d = _diagonal(R, xp)
    return xp.where(d < 0, -xp.ones_like(d), xp.ones_like(d))


def fix_signs(U, V, xp):
    """Flip each pair ``(u_i, v_i)`` so the largest-magnitude entry of ``u_i`` is positive.

    Parameters
    ----------
    U : array, shape (..., m, k)
    V : array, shape (..., n, k)
    xp : module
        The arrays' namespace.

    Returns
    -------
    U, V : arrays of the same shapes (new arrays; inputs untouched).

    Examples
    --------
    >>> import numpy as np
    >>> U, V = fix_signs(np.array([[-2.0], [1.0]]), np.array([[1.0], [3.0]]), np)
    >>> U.ravel().tolist(), V.ravel().tolist()
    ([2.0, -1.0], [-1.0, -3.0])
    """
    idx = xp.argmax(xp.abs(U), axis=-2, keepdims=True)  # (..., 1, k)
    pivot = xp.take_along_axis(U, idx, axis=-2)
    one = xp.ones_like(pivot)
    sign = xp.where(pivot < 0, -one, one)
    return U * sign, V * sign


def _check_power_iters(power_iters) -> int | str:
    if power_iters == "auto":
        return "auto"
    if isinstance(power_iters, str):
        raise ValueError(f"power_iters must be 'auto' or an integer >= 0, got {power_iters!r}")
    return check_int("power_iters", power_iters, minimum=0)


def _check_tol(tol) -> float | None:
    if tol is None:
        return None
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real):
        raise TypeError(f"tol must be a real number in (0, 1] or None, got {tol!r}")
    tol = float(tol)
    if not (0.0 < tol <= 1.0):
        raise ValueError(f"tol must be in (0, 1] or None, got {tol!r}")
    return tol


def _default_tol(tol, dtype, xp) -> float:
    return math.sqrt(_eps(dtype, xp)) if tol is None else tol


def _resolve_iters(power_iters, k: int, r: int, l: int) -> tuple[int, bool]:
    """(maximum number of power iterations, stop early on convergence?)."""
    if l >= r:
        # The sketch spans the whole row or column space: one pass is exact.
        return 0, False
    if power_iters == "auto":
        cap = _AUTO_ITERS_SMALL_K if k < 0.1 * r else _AUTO_ITERS_LARGE_K
        return cap, True
    return power_iters, False


def _exact_method(m: int, n: int, xp) -> str:
    """The exact method of a backend. CuPy's batched SVD is a batched Jacobi kernel
    only up to 32x32 and loops over the matrices above, while its batched eigh does
    not loop, so larger matrices get ``gram`` there."""
    if namespace_name(xp) == "cupy" and max(m, n) > _AUTO_SMALL:
        return "gram"
    return "svd"


def _choose_method(m: int, n: int, k: int, oversample: int, xp) -> str:
    r = min(m, n)
    if r > _AUTO_SMALL and _AUTO_SKETCH_RATIO * min(k + oversample, r) <= r:
        return "randomized"
    return _exact_method(m, n, xp)


def _gaussian_sketch(n: int, l: int, seed, dtype, xp):
    """The (n, l) Gaussian test matrix, drawn on the host and moved to ``xp``."""
    rng = as_generator(seed)
    omega = rng.standard_normal((n, l))
    return asarray(omega, xp=xp, dtype=dtype)


# ----------------------------------------------------------------------------- algorithms


def _svd(J, k: int, xp):
    U, S, Vh = xp.linalg.svd(J, full_matrices=False)
    return U[..., :k], S[..., :k], _mT(Vh, xp)[..., :k]


def _gram(J, k: int, xp):
    """Top-k triplets from the eigenvectors of the smaller Gram matrix."""
    m, n = J.shape[-2], J.shape[-1]
    if m < n:
        V, S, U = _gram_tall(_mT(J, xp), k, xp)
        return U, S, V
    return _gram_tall(J, k, xp)


def _gram_tall(J, k: int, xp):
    n = J.shape[-1]
    # Squaring overflows above ~1e154 and underflows below ~1e-154 (float64): work on
    # J / max|J| per matrix and scale S back.
    scale = _safe_scale(xp.max(xp.abs(J), axis=(-2, -1), keepdims=True), xp)
    Js = J / scale
    G = _mT(Js, xp) @ Js  # (..., n, n); eigh reads one triangle, so rounding asymmetry is harmless
    _, W = xp.linalg.eigh(G)  # ascending eigenvalues
    V = xp.flip(W[..., n - k :], axis=-1)
    Y = Js @ V  # = U diag(S) / scale in exact arithmetic
    # sigma_i = |J v_i| is a Rayleigh quotient, second-order accurate in the error of
    # v_i, and gives ~0 (not sqrt(eps)*sigma_1) for exactly rank-deficient J.
    S = _col_norms(Y, xp)
    order = xp.argsort(-S, axis=-1)
    S = xp.take_along_axis(S, order, axis=-1)
    idx = order[..., None, :]
    V = xp.take_along_axis(V, xp.broadcast_to(idx, V.shape), axis=-1)
    Y = xp.take_along_axis(Y, xp.broadcast_to(idx, Y.shape), axis=-1)
    # Y = Q R with R ~ diag(+-S): normalising by QR instead of dividing by S gives an
    # orthonormal U even where S_i = 0 (the QR completes the basis).
    Q, R = xp.linalg.qr(Y)
    U = Q * _sign_of_diag(R, xp)[..., None, :]
    return U, S * scale[..., 0], V


def _randomized(
    Y0, matvec, rmatvec, k: int, max_iters: int, *,
    stop_early: bool, certify: bool, tol: float, xp, give_up: bool = False,
):
    """Randomized range finder with power iterations and Rayleigh-Ritz extraction.

    ``Y0 = J Omega`` is the first sketch. Each power iteration applies ``J J^T`` to
    the basis, re-orthonormalised by a Householder QR after every product so small
    singular directions are not swamped by rounding. The Ritz triplets of the
    current basis come from ``J^T Q = P R`` and the small SVD ``R^T = Ur S Vr^T``:
    ``U = Q Ur`` and ``V = P Vr`` satisfy ``J^T U = V S`` exactly, and the other
    residual ``J V - U S = (J P) Vr - Q Ur S`` reuses the next iteration's product.

    ``give_up`` (for callers with an exact fallback) also stops once every matrix
    has either passed or, extrapolating its last residual decrease over the
    iterations left, cannot pass.

    Returns U, S, V and ``ok`` (batch-shaped bool): every right residual
    ``|J v_i - s_i u_i|`` is <= tol * s_1 (None when not ``certify``).
    """
    Q = _orth(Y0, xp)
    it = 0
    prev = None
    while True:
        Z = rmatvec(Q)  # J^T Q, (..., n, l)
        P, R = xp.linalg.qr(Z)
        Ur, S, Vrh = xp.linalg.svd(_mT(R, xp), full_matrices=False)
        Ur, S, Vr = Ur[..., :k], S[..., :k], _mT(Vrh, xp)[..., :k]
        last = it >= max_iters
        if last and not certify:
            return Q @ Ur, S, P @ Vr, None
        Y = matvec(P)  # J P, (..., m, l)
        if certify and (stop_early or last):
            U = Q @ Ur
            # relative to s_1 before squaring, so tiny or huge J neither under- nor overflow
            s1 = _safe_scale(S[..., :1], xp)[..., None, :]
            res = xp.max(_col_norms((Y @ Vr - U * S[..., None, :]) / s1, xp), axis=-1)
            ok = res <= tol
            done = ok
            if give_up and prev is not None:
                # geometric extrapolation of the residual over the iterations left
                rate = res / xp.where(prev > 0, prev, xp.ones_like(prev))
                left = max_iters - it
                hopeless = (rate >= 1.0) | (res * rate**left > tol)
                done = ok | hopeless
            if last or bool(xp.all(done)):
                return U, S, P @ Vr, ok
            prev = res
        Q = _orth(Y, xp)
        it += 1


def _dense_products(J, xp):
    def matvec(X):
        return J @ X

    def rmatvec(Y):
        # (Y^T J)^T rather than J^T Y: the stack J is read row-major, which BLAS
        # streams faster than the transposed view.
        return _mT(_mT(Y, xp) @ J, xp)

    return matvec, rmatvec


def _dense_randomized(J, k, oversample, power_iters, seed, tol, xp, *, certify: bool, give_up: bool = False):
    m, n = J.shape[-2], J.shape[-1]
    r = min(m, n)
    l = min(k + oversample, r)
    max_iters, stop_early = _resolve_iters(power_iters, k, r, l)
    omega = _gaussian_sketch(n, l, seed, J.dtype, xp)
    matvec, rmatvec = _dense_products(J, xp)
    # A full-width sketch (l == r) is exact: nothing to certify.
    certify = (certify or stop_early) and l < r
    return _randomized(
        matvec(omega), matvec, rmatvec, k, max_iters,
        stop_early=stop_early, certify=certify, tol=tol, xp=xp, give_up=give_up and stop_early,
    )


def _uses_krylov(m, n, k, oversample, power_iters, xp) -> bool:
    return power_iters == "auto" and _choose_method(m, n, k, oversample, xp) == "randomized"


def _auto(J, k, oversample, power_iters, seed, tol, xp):
    m, n = J.shape[-2], J.shape[-1]
    method = _choose_method(m, n, k, oversample, xp)
    if method == "svd":
        return _svd(J, k, xp)
    if method == "gram":
        return _gram(J, k, xp)
    if power_iters == "auto":
        return _dense_krylov(J, k, oversample, seed, tol, xp)
    U, S, V, ok = _dense_randomized(J, k, oversample, power_iters, seed, tol, xp, certify=True, give_up=True)
    if ok is None or bool(xp.all(ok)):
        return U, S, V
    return _patch_exact(J, k, U, S, V, ok, xp)


def _patch_exact(J, k, U, S, V, ok, xp):
    """Replace the triplets of the matrices that failed the residual test by exact ones."""
    m, n = J.shape[-2], J.shape[-1]
    exact = _svd if _exact_method(m, n, xp) == "svd" else _gram
    if not bool(xp.any(ok)):
        return exact(J, k, xp)
    batch = tuple(J.shape[:-2])
    bad = ~xp.reshape(ok, (-1,))
    Jf = xp.reshape(J, (-1, m, n))
    # U, S, V are fresh arrays of this call, so writing into them mutates nothing of the caller's.
    Uf, Sf, Vf = xp.reshape(U, (-1, m, k)), xp.reshape(S, (-1, k)), xp.reshape(V, (-1, n, k))
    Ue, Se, Ve = exact(Jf[bad], k, xp)
    Uf[bad], Sf[bad], Vf[bad] = Ue, Se, Ve
    return xp.reshape(Uf, batch + (m, k)), xp.reshape(Sf, batch + (k,)), xp.reshape(Vf, batch + (n, k))


# ----------------------------------------------------------------------------- block Krylov

#: ``method="auto"`` (with ``power_iters="auto"``) grows the block Krylov bases up to
#: ``min(m, n) // _KRYLOV_DIM_RATIO`` columns; matrices still uncertified then go to the
#: exact method.
_KRYLOV_DIM_RATIO = 4

#: On NumPy the stack is processed in chunks of about this many bytes of ``J``, each run
#: to convergence before the next, so every product after the first reads ``J`` from
#: cache instead of main memory (see benchmarks/RESULTS_spectra.md).
_CHUNK_BYTES = 8 * 2**20

#: A Krylov run is given up when its extrapolated residual misses ``tol`` by this factor.
_GIVE_UP_FACTOR = 1e3

#: Dense path: thick restart at this many blocks (0: none), product budget factor.
_DENSE_RESTART_BLOCKS = 5
_DENSE_PASS_FACTOR = 3

#: Buffers start with room for this many blocks and are widened on demand.
_KRYLOV_FIRST_CAP = 6

#: Until some matrix's residual estimate is within this factor of ``tol``, convergence is
#: checked only after products with ``J^T`` (one small SVD per two products).
_NEAR_FACTOR = 1e3

#: Checks are scheduled at (products the fastest matrix needs at its current pace) /
#: this factor; 1 would check exactly where the geometric pace predicts convergence.
_CHECK_SAFETY = 1.0

#: ``top_singular_operator(method="krylov")``: thick restart when the bases reach this many
#: blocks, and at most this many products (blocks of ``b`` vectors) in all.
_OPERATOR_RESTART_BLOCKS = 8
_OPERATOR_MAX_PASSES = 120
_OPERATOR_MAX_BLOCKS = 32
_OPERATOR_METHODS = ("randomized", "krylov")

#: Krylov block size ``b = k + min(oversample, _KRYLOV_EXTRA)``.
_KRYLOV_EXTRA = 2

#: Thin-block Lanczos (NumPy): ``BLOCK`` consecutive top-k values within
#: ``_THIN_CLUSTER_FACTOR * sqrt(tol)`` of each other (relative) send the matrix to the
#: batched ``k + 2``-wide blocks (see :mod:`ramodel._lanczos`).
_THIN_CLUSTER_FACTOR = 1.0

#: Thin-block Lanczos: a matrix it declines for overflow or its certificate is retried
#: once, scaled by a power of two to ``max |J| ~ 1``, when ``max |J|`` lies outside this
#: range (it squares ``J``; see :mod:`ramodel._lanczos`).
_THIN_SAFE_RANGE = (2.0**-16, 2.0**16)

#: NumPy: run the thin-block Lanczos first where :func:`ramodel._lanczos.applies` (False:
#: the batched block Krylov for every matrix, as on the other namespaces).
_THIN_LANCZOS = True


def _orth_block(W, Qprev, xp, local: int | None = None):
    """Orthonormalise the block ``W`` against the orthonormal columns ``Qprev`` (or None).

    Classical Gram-Schmidt twice (CGS2) against ``Qprev``, then a Householder QR of the
    block. With ``local``, the first pass projects out only the last ``local`` columns of
    ``Qprev`` (in exact arithmetic the Lanczos recurrence couples ``W`` to those alone;
    the other coefficients are rounding errors) and the second pass all of them: full
    reorthogonalisation at the cost of one full pass. Returns ``(Q, C, R)`` with ``W ~= Qprev C + Q R``, ``Q`` orthonormal and
    orthogonal to ``Qprev``. Where the projected block has (numerically) dependent
    columns, the QR's completion columns are projected out of ``Qprev`` and
    orthonormalised once more (then ``R = Q^T W``), so ``Q`` stays orthogonal to
    ``Qprev`` even when the Krylov space is exhausted (rank-deficient ``J``)."""
    C = None
    if Qprev is not None:
        scale = _safe_scale(xp.max(_col_norms(W, xp), axis=-1), xp)
        QpT = _mT(Qprev, xp)
        D = Qprev.shape[-1]
        if local is not None and local < D:
            Ql = Qprev[..., D - local :]
            C1 = _mT(Ql, xp) @ W
            W = W - Ql @ C1
            zeros = xp.zeros(tuple(C1.shape[:-2]) + (D - local, C1.shape[-1]), dtype=C1.dtype)
            C1 = xp.concat([zeros, C1], axis=-2)
        else:
            C1 = QpT @ W
            W = W - Qprev @ C1
        C2 = QpT @ W
        W = W - Qprev @ C2
        C = C1 + C2
    Q, R = xp.linalg.qr(W)
    if Qprev is not None:
        d = xp.min(xp.abs(_diagonal(R, xp)), axis=-1)
        if bool(xp.any(d <= 1e-6 * scale)):
            Q = Q - Qprev @ (QpT @ Q)
            Q, _ = xp.linalg.qr(Q)
            R = _mT(Q, xp) @ W
    return Q, C, R


_ALL_DONE = "all done"


def _take(x, ind, xp):
    return xp.take(x, ind, axis=0)


class _GKL:
    """Certified top-k triplets of a flat batch ``(c, m, n)`` by block Golub-Kahan-Lanczos.

    The bases grow by one block of ``b`` columns per product: ``P_1`` (the orthonormal
    start, shared by the batch), ``Q_1 = orth(J P_1)``, ``P_2 = orth(J^T Q_1)``,
    ``Q_2 = orth(J P_2)``, ..., each block orthogonalised against all earlier ones
    (CGS2), so after ``2s`` products ``P`` spans the block Krylov space
    ``[P_1, (J^T J) P_1, ..., (J^T J)^s P_1]`` of Musco and Musco (2015). The projected
    matrix ``B = Q^T J P`` is assembled from the Gram-Schmidt coefficients (no extra
    product). After a product where a check is due (see ``_check_step``) the Ritz
    triplets of ``B``, ``B = X S Y^T``, give a residual estimate for free: the newest block's ``R`` factor times the last block
    of ``Y`` (or ``X``). A matrix whose estimate passes gets the explicit certificate:
    with ``U = Q X`` and ``V = P Y``, the residuals ``J V - U S`` and ``J^T U - V S`` are
    computed from the stored raw products ``J P`` and ``J^T Q`` (no extra pass), and
    ``U``, ``V`` must be orthonormal. Certified matrices leave the batch (when
    ``compact``); so does a matrix whose residual, extrapolated geometrically over the
    products left, cannot reach ``tol`` within ``smax`` blocks (uncertified; only with
    ``give_up``, for callers with an exact fallback).
    """

    def __init__(self, J, matvec, rmatvec, P1, k, smax, tol, xp, *, compact, give_up=True,
                 max_passes=None, keep_cols=None):
        self.xp, self.k, self.tol, self.compact, self.give_up = xp, k, tol, compact, give_up
        # Without max_passes the bases grow to smax blocks and stop there. With it, they
        # are compressed (thick restart) to their keep_cols best Ritz vectors whenever
        # they would outgrow smax blocks, until max_passes products have been made.
        self.restart = max_passes is not None
        self.max_passes = max_passes if self.restart else 2 * smax + 1
        self.keep_cols = keep_cols
        self.J = J
        if J is not None:
            # (X^T J^T)^T rather than J X: BLAS streams J row-major either way, and on
            # OpenBLAS this form of the skinny product was ~17% faster (RESULTS_spectra.md).
            def matvec(X):
                return _mT(_mT(X, xp) @ _mT(self.J, xp), xp)

            def rmatvec(Y):
                return _mT(_mT(Y, xp) @ self.J, xp)
        self.matvec, self.rmatvec = matvec, rmatvec
        self.P1, self.smax = P1, smax
        self.results = []  # (original indices (host), U, S, V, ok (host bool))
        self.passes = 0

    # -------------------------------------------------------------- state handling
    def _alloc(self, W):
        xp, b = self.xp, self.P1.shape[-1]
        c, m = W.shape[0], W.shape[-2]
        n = self.P1.shape[-2]
        dt = W.dtype
        self.b, self.m, self.n = b, m, n
        self.idx = np.arange(c)
        self.finished = np.zeros(c, dtype=bool)
        # room for `cap` Q blocks (cap + 1 P blocks), widened on demand up to smax
        self.cap = cap = min(self.smax, _KRYLOV_FIRST_CAP)
        # only the written columns of the bases are ever read; B's unwritten entries are
        # the couplings that vanish in exact arithmetic, so B starts at zero
        self.Q = xp.empty((c, m, cap * b), dtype=dt)
        self.JP = xp.empty((c, m, (cap + 1) * b), dtype=dt)
        self.P = xp.empty((c, n, (cap + 1) * b), dtype=dt)
        self.JtQ = xp.empty((c, n, cap * b), dtype=dt)
        self.B = xp.zeros((c, cap * b, (cap + 1) * b), dtype=dt)
        self.P[:, :, :b] = xp.broadcast_to(self.P1, (c, n, b))
        self.hist = []  # (products so far, residual estimates) of the checks so far

    def _widen(self, q_cols):
        """Make room for ``q_cols`` Q columns (and one more P block)."""
        q_blocks = -(-q_cols // self.b)
        if q_blocks <= self.cap:
            return
        xp, b = self.xp, self.b
        new = min(self.smax, max(q_blocks, 2 * self.cap))
        extra = (new - self.cap) * b

        def cols(x):
            return xp.concat([x, xp.empty(tuple(x.shape[:-1]) + (extra,), dtype=x.dtype)], axis=-1)

        self.Q, self.JP, self.P, self.JtQ = cols(self.Q), cols(self.JP), cols(self.P), cols(self.JtQ)
        B = xp.concat([self.B, xp.zeros(tuple(self.B.shape[:-1]) + (extra,), dtype=self.B.dtype)], axis=-1)
        self.B = xp.concat([B, xp.zeros((B.shape[0], extra, B.shape[-1]), dtype=B.dtype)], axis=-2)
        self.cap = new

    def _keep(self, keep_host):
        """Drop the matrices not in ``keep_host`` (a host bool array) from the batch."""
        if keep_host.all():
            return
        xp = self.xp
        ind = xp.asarray(np.nonzero(keep_host)[0])
        for name in ("Q", "JP", "P", "JtQ", "B"):
            setattr(self, name, _take(getattr(self, name), ind, xp))
        if self.J is not None:
            self.J = _take(self.J, ind, xp)
        self.hist = [(p, _take(h, ind, xp)) for p, h in self.hist]
        self.idx = self.idx[keep_host]

    def _store(self, sel_host, U, S, V, ok_host):
        if sel_host.any():
            ind = self.xp.asarray(np.nonzero(sel_host)[0])
            self.results.append((self.idx[sel_host], _take(U, ind, self.xp), _take(S, ind, self.xp),
                                 _take(V, ind, self.xp), ok_host[sel_host]))

    # -------------------------------------------------------------- Ritz and certificate
    def _ritz(self, Dq, Dp):
        xp, k = self.xp, self.k
        X, S, Yh = xp.linalg.svd(self.B[:, :Dq, :Dp], full_matrices=False)
        Y = _mT(Yh, xp)
        self._svd = ((self.passes, Dq, Dp, X.shape[0]), X, S, Y)
        return X[..., :k], S[..., :k], Y[..., :k]

    def _restart(self, Dq, Dp):
        """Thick restart: compress the bases to the ``keep_cols`` best Ritz vectors.

        With ``B = X S Y^T`` (square: ``J P`` lies in span ``Q``), ``P' = P Y_l`` and
        ``Q' = Q X_l`` satisfy ``J P' = Q' S_l`` and ``J^T Q' = P' S_l + P_new (...)``, so
        ``B' = diag(S_l)`` and the iteration continues from the pending ``P_new`` with the
        same bookkeeping (Baglama and Reichel's augmented Lanczos bidiagonalisation)."""
        xp = self.xp
        key = (self.passes, Dq, Dp, self.B.shape[0])
        if getattr(self, "_svd", None) is not None and self._svd[0] == key:
            _, X, S, Y = self._svd
        else:
            X, S, Yh = xp.linalg.svd(self.B[:, :Dq, :Dp], full_matrices=False)
            Y = _mT(Yh, xp)
        ell = min(self.keep_cols, Dq)
        X, S, Y = X[..., :ell], S[..., :ell], Y[..., :ell]
        Q, P = self.Q[:, :, :Dq] @ X, self.P[:, :, :Dp] @ Y
        JP, JtQ = self.JP[:, :, :Dp] @ Y, self.JtQ[:, :, :Dq] @ X
        self.Q[:, :, :ell], self.P[:, :, :ell] = Q, P
        self.JP[:, :, :ell], self.JtQ[:, :, :ell] = JP, JtQ
        self.B = xp.zeros_like(self.B)
        self.B[:, :ell, :ell] = xp.eye(ell, dtype=S.dtype)[None, :, :] * S[:, None, :]
        self._svd = None
        return ell, ell

    def _certify(self, X, S, Y, Dq, Dp):
        xp, k = self.xp, self.k
        U = self.Q[:, :, :Dq] @ X
        V = self.P[:, :, :Dp] @ Y
        s1 = _safe_scale(S[..., :1], xp)[..., None]
        Sd = S[..., None, :]
        right = (self.JP[:, :, :Dp] @ Y - U * Sd) / s1
        left = (self.JtQ[:, :, :Dq] @ X - V * Sd) / s1
        res = xp.sqrt(xp.max(xp.sum(right * right, axis=-2) + xp.sum(left * left, axis=-2), axis=-1))
        eye = xp.eye(k, dtype=U.dtype)
        orth = xp.maximum(
            xp.max(xp.abs(_mT(U, xp) @ U - eye), axis=(-2, -1)),
            xp.max(xp.abs(_mT(V, xp) @ V - eye), axis=(-2, -1)),
        )
        return U, V, (res <= self.tol) & (orth <= self.tol)

    def _check(self, Dq, Dp, E_of, checks_left):
        """Estimate, certify the candidates, store and drop finished matrices.

        Returns None when the batch is unchanged, ``_ALL_DONE`` when every matrix has
        finished, else the host mask of the matrices kept (the batch was compacted)."""
        xp = self.xp
        X, S, Y = self._ritz(Dq, Dp)
        s1 = _safe_scale(S[..., :1], xp)[..., None]
        est = xp.max(_col_norms(E_of(X, Y) / s1, xp), axis=-1)
        cand = est <= self.tol
        ok = xp.zeros(est.shape, dtype=xp.bool)
        if bool(xp.any(cand)):
            U, V, ok = self._certify(X, S, Y, Dq, Dp)
            ok = ok & cand
        hopeless = xp.zeros(est.shape, dtype=xp.bool)
        old = [(p, h) for p, h in self.hist if self.passes - p >= 2]
        if self.give_up and len(self.hist) >= 4 and old:
            # Krylov convergence is superlinear, so a geometric extrapolation of the pace
            # over the last two or more products is pessimistic: give up only on
            # stagnation or when even that pace would miss tol by far.
            p0, h0 = old[-1]
            rate = (est / xp.where(h0 > 0, h0, xp.ones_like(h0))) ** (1.0 / (self.passes - p0))
            hopeless = (rate >= 0.95) | (est * rate**checks_left > _GIVE_UP_FACTOR * self.tol)
        self.hist.append((self.passes, est))
        self.near = bool(xp.any(est <= _NEAR_FACTOR * self.tol))
        self.next_check = self.passes + self._check_step(est)
        if checks_left <= 0:
            hopeless = xp.ones(est.shape, dtype=xp.bool)
        done = ok | hopeless
        if not bool(xp.any(done)):
            return None
        ok_h = np.asarray(_to_host(ok), dtype=bool)
        # without compaction, finished matrices stay in the batch: store each once
        done_h = np.asarray(_to_host(done), dtype=bool) & ~self.finished
        if not done_h.any():
            return None
        if not ok_h[done_h].all():  # uncertified ones keep their last Ritz triplets
            U, V = self.Q[:, :, :Dq] @ X, self.P[:, :, :Dp] @ Y
        self._store(done_h, U, S, V, ok_h)
        self.finished = self.finished | done_h
        keep = ~self.finished
        if not keep.any():
            return _ALL_DONE
        # Dropping matrices copies J and the bases: worth it once half the batch is done
        # (a finished matrix left in the batch costs its share of the remaining products).
        if self.compact and 2 * int(self.finished.sum()) >= keep.size:
            self._keep(keep)
            self.finished = self.finished[keep]
            return keep
        return None

    def _check_step(self, est) -> int:
        """Products until the next check: the fewest any matrix still above ``tol``
        needs at the pace of its last two estimates, divided by ``_CHECK_SAFETY``.

        Krylov convergence is superlinear, so the geometric pace underestimates it and
        the division makes the schedule conservative; a skipped check only saves a
        small SVD, and a matrix is certified by the same explicit residual whenever it
        is checked. Without two estimates yet: 2 (after products with ``J^T`` only)."""
        if len(self.hist) < 2:
            return 2
        p0, h0 = self.hist[-2]
        e = np.asarray(_to_host(est), dtype=np.float64)
        e0 = np.asarray(_to_host(h0), dtype=np.float64)
        live = (e > self.tol) & (e0 > 0) & np.isfinite(e) & ~self.finished
        if not live.any():
            return 1
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            rate = (e[live] / e0[live]) ** (1.0 / max(1, self.passes - p0))
            need = np.where(rate < 1.0, np.log(self.tol / e[live]) / np.log(rate), 2.0)
        need = float(np.min(need))
        if not math.isfinite(need):
            return 2
        return max(1, int(need / _CHECK_SAFETY))

    # -------------------------------------------------------------- the iteration
    def run(self, first=None):
        xp, k = self.xp, self.k
        W = self.matvec(self.P1) if first is None else first
        self.passes = 1
        self.near = False
        self.next_check = 0
        self.local_q = self.local_p = None
        self._alloc(W)
        b, smax = self.b, self.smax
        Dp, Dq = b, 0
        while True:
            # ---- the raw product W = J P_new is in hand
            self.JP[:, :, Dp - b : Dp] = W
            Qn, C, R = _orth_block(W, self.Q[:, :, :Dq] if Dq else None, xp, local=self.local_q)
            if Dq:
                self.B[:, :Dq, Dp - b : Dp] = C
            left = self.max_passes - self.passes  # products still possible after this one
            if Dq >= k and ((self.near and self.passes >= self.next_check) or left == 0):
                keep = self._check(Dq, Dp, lambda X, Y, R=R, lo=Dp - b, hi=Dp: R @ Y[:, lo:hi, :], left)
                if keep is _ALL_DONE:
                    break
                if keep is not None:
                    ind = xp.asarray(np.nonzero(keep)[0])
                    Qn, R = _take(Qn, ind, xp), _take(R, ind, xp)
            if left == 0:  # unreachable: the last check finishes every matrix
                break
            self._widen(Dq + b)
            self.local_q = b  # J P_new couples to the newest Q block only (after a restart: all)
            self.Q[:, :, Dq : Dq + b] = Qn
            self.B[:, Dq : Dq + b, Dp - b : Dp] = R
            Dq += b
            # ---- the product J^T Q_new
            Z = self.rmatvec(Qn)
            self.passes += 1
            self.JtQ[:, :, Dq - b : Dq] = Z
            Pn, Cp, Rp = _orth_block(Z, self.P[:, :, :Dp], xp, local=self.local_p)
            self.B[:, Dq - b : Dq, :Dp] = _mT(Cp, xp)
            left = self.max_passes - self.passes
            restarting = self.restart and Dq + b > smax * b  # the restart's SVD gives a free check
            if Dq >= k and (self.passes >= self.next_check or restarting or left == 0):
                keep = self._check(Dq, Dp, lambda X, Y, R=Rp, lo=Dq - b, hi=Dq: R @ X[:, lo:hi, :], left)
                if keep is _ALL_DONE:
                    break
                if keep is not None:
                    Pn = _take(Pn, xp.asarray(np.nonzero(keep)[0]), xp)
            self.local_p = b
            if self.restart and Dq + b > smax * b:
                Dq, Dp = self._restart(Dq, Dp)
                self.local_q = None  # the next product couples to every kept Q column
            self.P[:, :, Dp : Dp + b] = Pn
            Dp += b
            W = self.matvec(Pn)
            self.passes += 1
        return self.results


def _to_host(x):
    return to_numpy(x)


def _start_block(n: int, b: int, seed, dtype) -> np.ndarray:
    """Orthonormal ``(n, b)`` start of the Krylov bases, drawn on the host from ``seed``."""
    omega = as_generator(seed).standard_normal((n, b))
    Q, _ = np.linalg.qr(omega)
    return Q.astype(dtype)


def _krylov_sizes(k: int, r: int, oversample: int, cap_blocks: int | None = None) -> tuple[int, int]:
    """(block size b, largest number of Q blocks smax) for ``min(m, n) = r``."""
    b = min(k + min(oversample, _KRYLOV_EXTRA), r)
    smax = max(1, (r // _KRYLOV_DIM_RATIO) // b)
    if cap_blocks is not None:
        # no exact fallback: let the bases grow to nearly min(m, n)
        smax = max(1, min(r // b - 1, cap_blocks))
    smax = min(smax, r // b - 1) if r // b >= 2 else 1
    return b, smax


def _assemble(results, c: int, xp):
    """Concatenate the per-group results into batch order."""
    order = np.argsort(np.concatenate([r[0] for r in results]), kind="stable")
    ind = xp.asarray(order)
    U = _take(xp.concat([r[1] for r in results], axis=0), ind, xp)
    S = _take(xp.concat([r[2] for r in results], axis=0), ind, xp)
    V = _take(xp.concat([r[3] for r in results], axis=0), ind, xp)
    ok = np.concatenate([r[4] for r in results])[order]
    assert ok.shape == (c,)
    return U, S, V, ok


def _gkl_stack(Jf, k: int, oversample: int, seed, tol: float, xp):
    """Batched block Krylov on a flat stack ``(c, m, n)`` in cache-sized chunks (NumPy) or
    at once; returns ``U, S, V`` and the host mask of the certified matrices."""
    c, m, n = Jf.shape
    b, smax = _krylov_sizes(k, min(m, n), oversample)
    P1 = asarray(_start_block(n, b, seed, np.float64), xp=xp, dtype=Jf.dtype)
    if namespace_name(xp) == "numpy":
        chunk = max(1, _CHUNK_BYTES // (m * n * Jf.dtype.itemsize))
    else:
        chunk = c
    results = []
    for lo in range(0, c, chunk):
        hi = min(lo + chunk, c)
        Jc = Jf[lo:hi, ...]
        with np.errstate(invalid="ignore", over="ignore"):  # NumPy only; refused below
            first = _mT(_mT(P1, xp) @ _mT(Jc, xp), xp)
        # J's finiteness is checked on its first product (a NaN or Inf entry of J makes
        # its row of J P_1 non-finite, P_1 having no zero entry with probability 1):
        # no separate pass over J. Only then is J itself scanned, to tell a non-finite
        # J (refused) from an overflowing product (exact method).
        if not bool(xp.all(xp.isfinite(first))):
            check_finite_array("J", Jc, xp)
            results.append((np.arange(lo, hi), xp.zeros((hi - lo, m, k), dtype=Jf.dtype),
                            xp.zeros((hi - lo, k), dtype=Jf.dtype), xp.zeros((hi - lo, n, k), dtype=Jf.dtype),
                            np.zeros(hi - lo, dtype=bool)))
            continue
        if _DENSE_RESTART_BLOCKS:
            cap = max(2, min(smax, _DENSE_RESTART_BLOCKS))
            gkl = _GKL(Jc, None, None, P1, k, cap, tol, xp, compact=True, max_passes=2 * smax * _DENSE_PASS_FACTOR + 1,
                       keep_cols=max(k, (cap * b) // 2))
        else:
            gkl = _GKL(Jc, None, None, P1, k, smax, tol, xp, compact=True)
        with np.errstate(over="ignore"):  # a huge J: its scale estimates may overflow (NumPy)
            for idx, U, S, V, ok in gkl.run(first):
                results.append((idx + lo, U, S, V, ok))
    return _assemble(results, c, xp)


def _thin_stack(Jf, k: int, seed, tol: float):
    """NumPy only: :func:`ramodel._lanczos.top_k` matrix by matrix; returns ``U, S, V``,
    the mask of the certified matrices and the reasons of the others (one per matrix)."""
    c, m, n = Jf.shape
    dt = Jf.dtype
    P1T = np.ascontiguousarray(_start_block(n, _lanczos.BLOCK, seed, np.float64).T.astype(dt))
    U, S, V = np.zeros((c, m, k), dtype=dt), np.zeros((c, k), dtype=dt), np.zeros((c, n, k), dtype=dt)
    ok = np.zeros(c, dtype=bool)
    reasons = []
    cluster_tol = _THIN_CLUSTER_FACTOR * math.sqrt(tol)
    # Every BLAS call here is a memory-bound product or a tiny factorisation that gains
    # nothing from more threads, while idle OpenBLAS workers spin and double the CPU
    # time at 2 threads (RESULTS_spectra.md). The caller's limits are restored after.
    with _lanczos.one_blas_thread():
        for i in range(c):
            Ji = np.ascontiguousarray(Jf[i])
            u, si, v, _, reason = _lanczos.top_k(Ji, k, P1T, tol, cluster_tol=cluster_tol)
            if reason == "overflow":  # a NaN or Inf in J (refused), or a huge J
                check_finite_array("J", Ji, np)
            if u is None and reason in ("overflow", "certificate"):
                # the path squares J, so its products over- or underflow far from |J| ~ 1:
                # retry once with max |J| scaled into [1/2, 1) by a power of two (exact),
                # then scale S back
                amax = float(np.max(np.abs(Ji)))
                if amax > 0 and not _THIN_SAFE_RANGE[0] <= amax <= _THIN_SAFE_RANGE[1]:
                    e = -math.frexp(amax)[1]
                    u, si, v, _, reason = _lanczos.top_k(np.ldexp(Ji, e), k, P1T, tol, cluster_tol=cluster_tol)
                    if u is not None:
                        si = np.ldexp(si, -e)
            if u is not None:
                U[i], S[i], V[i], ok[i] = u, si, v, True
            reasons.append(reason)
    return U, S, V, ok, reasons


def _dense_krylov(J, k: int, oversample: int, seed, tol: float, xp):
    """``method="auto"``: on NumPy, thin-block Lanczos per matrix where it applies; the
    batched block Krylov for the rest (and on other namespaces); exact fallback per matrix."""
    m, n = J.shape[-2], J.shape[-1]
    batch = tuple(J.shape[:-2])
    Jf = xp.reshape(J, (-1, m, n))
    c = Jf.shape[0]
    if _THIN_LANCZOS and namespace_name(xp) == "numpy" and _lanczos.applies(m, n, k):
        U, S, V, ok, _ = _thin_stack(Jf, k, seed, tol)
        if not ok.all():
            bad = np.nonzero(~ok)[0]
            Ub, Sb, Vb, okb = _gkl_stack(Jf[bad], k, oversample, seed, tol, xp)
            U[bad], S[bad], V[bad], ok[bad] = Ub, Sb, Vb, okb
    else:
        U, S, V, ok = _gkl_stack(Jf, k, oversample, seed, tol, xp)
    if not ok.all():
        bad = np.nonzero(~ok)[0]
        exact = _svd if _exact_method(m, n, xp) == "svd" else _gram
        Ue, Se, Ve = exact(_take(Jf, xp.asarray(bad), xp), k, xp)
        good = np.nonzero(ok)[0]
        results = [(bad, Ue, Se, Ve, np.ones(bad.shape, dtype=bool))]
        if good.size:
            g = xp.asarray(good)
            results.append((good, _take(U, g, xp), _take(S, g, xp), _take(V, g, xp), ok[good]))
        U, S, V, _ = _assemble(results, c, xp)
    return xp.reshape(U, batch + (m, k)), xp.reshape(S, batch + (k,)), xp.reshape(V, batch + (n, k))


# ----------------------------------------------------------------------------- public API


def top_singular(
    J,
    k: int,
    *,
    method: str = "auto",
    oversample: int = 10,
    power_iters: int | str = "auto",
    seed=0,
    tol: float | None = None,
) -> TopSingular:
    """Top-k singular triplets of every matrix in a stack.

    Parameters
    ----------
    J : array, shape (..., m, n)
        Real stack with any leading batch shape. Floating input keeps its dtype
        (float32 stays float32), except float16, which LAPACK cannot factorise: it is
        computed in float32, with a ``UserWarning``, and the results are float32.
        Integer and boolean input is converted to float64. Must be finite.
    k : int
        Number of triplets, ``1 <= k <= min(m, n)``.
    method : {"auto", "svd", "gram", "randomized"}, default "auto"
        Algorithm; see Notes for cost and accuracy.

        - ``"svd"``: exact batched LAPACK/cuSOLVER SVD.
        - ``"gram"``: batched ``eigh`` of the smaller of ``J^T J`` (n x n) and
          ``J J^T`` (m x m); the other side follows by one matmul and a QR.
        - ``"randomized"``: Halko-Martinsson-Tropp range finder with power
          iterations, from batched matmuls, skinny QRs and an SVD of small
          ``(k + oversample)``-square matrices.
        - ``"auto"``: when ``min(m, n) > 32`` and ``4 (k + oversample) <= min(m, n)``,
          certified Krylov methods (below; with an integer ``power_iters``,
          ``"randomized"`` with the residual test instead), after which every
          matrix whose certificate fails (see ``tol``) is recomputed with the
          backend's exact method; otherwise that exact method directly. The exact method is
          ``"svd"``, except on CuPy for ``max(m, n) > 32`` where it is ``"gram"``
          (CuPy's batched SVD loops over matrices above 32x32; its batched eigh
          does not).
    oversample : int, default 10
        Extra sketch columns ``p`` for ``"randomized"``/``"auto"``, ``>= 0``. The sketch
        has ``l = min(k + p, min(m, n))`` columns. 10 is Halko, Martinsson and
        Tropp's (2011, §4.2) and scikit-learn's default: without power iterations
        the range error exceeds ``(1 + 11 sqrt((k + p) min(m, n))) sigma_{k+1}``
        with probability at most ``6 p^-p`` (< 1e-9 for ``p = 10``; their §1.5),
        and each power iteration shrinks the excess geometrically.
    power_iters : int >= 0 or "auto", default "auto"
        Power iterations ``q`` (applications of ``J J^T``) for ``"randomized"``. An
        integer runs exactly that many. ``"auto"`` runs at most 7 when
        ``k < 0.1 min(m, n)`` and at most 4 otherwise (scikit-learn's
        ``randomized_svd`` rule, which its authors found to improve precision
        when few components are requested; Halko et al. §4.5 note that a few
        iterations suffice unless the spectrum is flat), and stops as soon as
        every triplet passes the residual test, so the cap matters only for flat
        spectra, where ``"auto"`` then falls back to an exact method. Each
        iteration shrinks the error by about
        ``(sigma_{l+1} / sigma_k)^2``, so Jacobian-like spectra (a few large values
        above a small tail) need one to three. With ``l = min(m, n)`` no iteration
        is run: the sketch spans the whole space and the result is exact.
    seed : int, SeedSequence, numpy Generator or None, default 0
        Seed of the Gaussian test matrix (drawn on the host with NumPy, then moved
        to the backend). The default is fixed so that a metric computed twice on the
        same Jacobians gives bit-identical results; pass None for fresh randomness.
        One ``(n, l)`` matrix is shared by the whole stack, so a matrix gives the same
        triplets alone or inside a stack. Unused by ``"svd"``/``"gram"``.
    tol : float in (0, 1] or None, default None
        Residual test for ``power_iters="auto"`` and ``method="auto"``: a matrix
        passes when ``|J v_i - s_i u_i| <= tol * s_1`` for all ``i <= k`` (the block
        Krylov certificate also requires ``|J^T u_i - s_i v_i| <= tol * s_1`` and
        ``|U^T U - I|, |V^T V - I| <= tol`` entrywise). None
        means ``sqrt(eps)`` of the dtype (1.5e-8 for float64, 3.5e-4 for float32),
        the resolution of ``"gram"``.

    Returns
    -------
    TopSingular
        ``U (..., m, k)``, ``S (..., k)`` non-increasing, ``V (..., n, k)``; same
        namespace and floating dtype as ``J``; signs fixed by :func:`fix_signs`.

    Raises
    ------
    ValueError
        If ``J.ndim < 2``, ``k`` is outside ``[1, min(m, n)]``, ``method`` is
        unknown, ``oversample < 0``, ``power_iters`` is invalid, ``tol`` is outside
        ``(0, 1]``, or ``J`` holds NaN or Inf.
    TypeError
        If ``J`` is complex or not an array, or ``k``/``oversample`` are not integers.

    Notes
    -----
    **Cost model** (one ``m x n`` matrix, ``r = min(m, n)``, ``c = max(m, n)``,
    ``l = min(k + oversample, r)``, ``q`` power iterations; flops to leading order;
    memory beyond ``J``):

    =============  ===========================================  ===================
    method         flops                                        extra memory
    =============  ===========================================  ===================
    ``svd``        ``~ 4 c r^2 + 8 r^3`` (LAPACK gesdd, thin)   ``c r + r^2``
    ``gram``       ``2 c r^2`` (Gram) + ``~ 9 r^3`` (eigh)       ``2 r^2 + c k``
                   ``+ 2 c r k + 2 c k^2``
    ``randomized`` ``(2q + 2) 2 m n l`` (matmuls; one more       ``(m + n) l + l^2``
                   with a residual test) + ``(2q + 2) 4 c l^2``
                   (QRs) + ``O(q l^3)`` (small SVDs)
    =============  ===========================================  ===================

    The matmuls of ``"randomized"`` run at near-peak GEMM speed; LAPACK SVD and
    eigh do not, and cuSOLVER's batched SVD loops over matrices larger than 32x32.
    For ``m = n = 512``, ``k = 10``: ``svd`` is ~1.5 Gflop per matrix,
    ``randomized`` with ``q = 2`` ~0.07 Gflop.

    **Accuracy.**

    - ``"svd"``: backward stable; the reference.
    - ``"gram"``: forming ``J^T J`` squares the condition number. Singular values
      below about ``sqrt(eps) * sigma_1`` (1.5e-8 sigma_1 in float64, 3.5e-4 in
      float32) lose relative accuracy and their vectors are unreliable (any
      orthonormal vectors of the near-null space may come back); larger ones are
      accurate to about ``eps * sigma_1^2 / sigma_i`` (values) and
      ``eps * sigma_1^2 / gap_i`` (vectors, ``gap_i`` the distance from
      ``sigma_i^2`` to the other squared singular values, divided by ``sigma_i``).
      Zero singular values give ``S_i = 0`` and an orthonormal completion of
      ``U`` (never a division by zero).
    - ``"randomized"``: ``S`` never exceeds the true values (Rayleigh-Ritz); the
      error decays like ``(sigma_{l+1} / sigma_k)^(2q+1)``. With ``power_iters=
      "auto"`` it stops once ``|J v_i - s_i u_i| <= tol * s_1``; then every ``s_i``
      is within ``tol * s_1`` of a true singular value, and the top-k subspace is
      within ``~ tol * s_1 * sqrt(k) / (sigma_k - sigma_{k+1})`` (Wedin) of the
      exact one. On flat spectra (e.g. square Gaussian matrices) the cap is hit
      before the test passes; ``"auto"`` then falls back to the exact method for
      those matrices. ``J^T U = V diag(S)`` holds to rounding by construction.
    - ``"auto"`` on NumPy, for matrices with ``min(m, n) >= 128`` (thin-block Lanczos,
      :mod:`ramodel._lanczos`): each matrix alone, block Lanczos on ``J^T J`` with blocks
      of 2 vectors from a Gaussian start shared by the stack, full reorthogonalisation,
      thick restarts at 40 columns (``4 k`` for larger ``k``), a free residual estimate at
      checks scheduled from its pace, and the same explicit certificate (both residuals
      from the stored products ``J P`` and ``J^T J P``; ``U`` polished to orthonormal by
      one Cholesky QR). Its BLAS calls run on one thread (``threadpoolctl``; the limit
      is process-wide while the call runs, and restored after it). A block
      smaller than ``k`` holds at most 2 copies of an exactly repeated singular value,
      so a matrix with 2 top-k values within ``sqrt(tol)`` (relative) of each other,
      ending before position ``k``, is declined, as are matrices whose certificate fails
      (e.g. ``k`` above the rank), whose residual stalls, or that overflow: they go to the
      block Krylov below.
    - ``"auto"`` (block Krylov; every namespace): block Golub-Kahan-Lanczos with blocks of
      ``b = k + min(oversample, 2)`` vectors, started from one Gaussian block shared
      by the stack, with full reorthogonalisation (a Lanczos-local Gram-Schmidt pass
      then a full one), the projected matrix ``B = Q^T J P`` assembled from the
      Gram-Schmidt coefficients, and thick restarts that keep the bases within 5
      blocks (compressed to their best Ritz vectors). A free residual estimate is
      read off ``B`` after the products where a check is scheduled (from each
      matrix's pace since its previous check, at every restart and after the last
      product); a matrix whose estimate passes gets the
      explicit certificate (residuals from the stored products ``J P`` and
      ``J^T Q``, no extra pass, and orthonormality of ``U`` and ``V``) and leaves
      the batch. A matrix still uncertified after ``6 min(m, n) / (4 b)`` products,
      or whose residual stagnates, gets the exact method. The certificate bounds
      the same quantities as for ``"randomized"``; by construction ``S`` never
      exceeds the true values. On NumPy the stack is processed in chunks of about
      8 MiB of ``J``. Both are compared with ARPACK, scikit-learn and fbpca in
      ``benchmarks/RESULTS.md``.
    - For repeated or clustered singular values, individual vectors are not
      unique for any method; compare subspaces (projectors) instead.

    **For best performance**: leave ``method="auto"`` for the top ``k`` of
    Jacobian-like stacks (fast spectral decay, ``k + 10 <= min(m, n) / 4``); pass
    ``power_iters=1`` or ``2`` when the decay is known to be steep and
    certification is not needed; stack all matrices into one array (one batched
    call, no Python loop); keep ``J`` C-contiguous. Use ``"gram"`` on CuPy for
    ``k`` close to ``min(m, n)``. :func:`triplet_residual` certifies any result.

    Examples
    --------
    >>> import numpy as np
    >>> J = np.diag([3.0, 2.0, 1.0])
    >>> U, S, V = top_singular(J, 2)
    >>> S.tolist()
    [3.0, 2.0]
    >>> rng = np.random.default_rng(0)
    >>> A = rng.standard_normal((4, 200, 3)) @ rng.standard_normal((4, 3, 150))  # rank 3
    >>> T = top_singular(A, 3, method="randomized", seed=0)
    >>> T.U.shape, T.S.shape, T.V.shape
    ((4, 200, 3), (4, 3), (4, 150, 3))
    >>> exact = np.linalg.svd(A, compute_uv=False)[:, :3]
    >>> bool(np.allclose(T.S, exact, rtol=1e-10))
    True
    >>> bool((triplet_residual(A, T) <= 1e-10 * T.S[:, :1]).all())
    True
    """
    xp = get_namespace(J)
    if J.ndim < 2:
        raise ValueError(f"J must have shape (..., m, n) with ndim >= 2, got ndim={J.ndim}")
    check_choice("method", method, METHODS)
    m, n = J.shape[-2], J.shape[-1]
    k = check_int("k", k, minimum=1, maximum=min(m, n))
    oversample = check_int("oversample", oversample, minimum=0)
    power_iters = _check_power_iters(power_iters)
    J = _as_real_float(J, xp)
    tol = _default_tol(_check_tol(tol), J.dtype, xp)
    if not (method == "auto" and _uses_krylov(m, n, k, oversample, power_iters, xp)):
        # the block Krylov path checks J on its first product instead (no extra pass)
        check_finite_array("J", J, xp)
    if method == "svd":
        U, S, V = _svd(J, k, xp)
    elif method == "gram":
        U, S, V = _gram(J, k, xp)
    elif method == "randomized":
        U, S, V, _ = _dense_randomized(J, k, oversample, power_iters, seed, tol, xp, certify=False)
    else:
        U, S, V = _auto(J, k, oversample, power_iters, seed, tol, xp)
    U, V = fix_signs(U, V, xp)
    return TopSingular(U, S, V)


def top_singular_operator(
    matvec: Callable[[Any], Any],
    rmatvec: Callable[[Any], Any],
    shape: tuple[int, ...],
    k: int,
    *,
    oversample: int = 10,
    power_iters: int | str = "auto",
    seed=0,
    tol: float | None = None,
    xp=None,
    dtype="float64",
    method: str = "randomized",
) -> TopSingular:
    """Top-k singular triplets of a stack of linear operators known only by products.

    The randomized range finder of :func:`top_singular` (``method="randomized"``),
    using only blocks of matrix-vector products, e.g. JVPs and VJPs of a network.

    Parameters
    ----------
    matvec : callable
        ``matvec(X)`` returns ``J @ X``: it maps ``X`` of shape ``(..., n, p)`` to
        ``(..., m, p)``, where ``...`` is the batch shape ``shape[:-2]`` exactly
        (``p`` columns are ``p`` vectors per matrix, all pushed at once).
    rmatvec : callable
        ``rmatvec(Y)`` returns ``J^T @ Y``: ``(..., m, p) -> (..., n, p)``.
    shape : tuple of int
        ``(..., m, n)``: batch shape followed by the operator's shape.
    k : int
        Number of triplets, ``1 <= k <= min(m, n)``.
    oversample, power_iters, seed, tol
        As in :func:`top_singular`. With the same ``seed`` the test matrix is the
        same, so the result equals ``top_singular(J, k, method="randomized", ...)``
        up to rounding.
    xp : module or None, default None
        Namespace of the arrays ``matvec``/``rmatvec`` take and return. None: the
        first call ``matvec(Omega)`` receives a NumPy array and the namespace (and
        dtype) of its output is used from then on, which lets a wrapper move data
        to its device on first use.
    dtype : {"float32", "float64"}, default "float64"
        Dtype of the test matrix passed to ``matvec``; later blocks take the dtype
        ``matvec`` returns.
    method : {"randomized", "krylov"}, default "randomized"
        ``"randomized"``: the range finder above (the algorithm
        ``ramodel.torch.export_jacobians`` mirrors). ``"krylov"`` (with
        ``power_iters`` ignored): the certified Krylov methods of
        :func:`top_singular` (``method="auto"``) on products. First, where
        ``min(m, n) >= 128``, the thin-block Lanczos on ``J^T J`` for all operators at
        once: blocks of 2 vectors per operator and per call, thick restarts at 60
        columns (``6 k`` for larger ``k``), at most 600 products, and the same
        certificate and repeated-value rule. Then, for the operators it declines (and
        for every operator below that size), the block Krylov: blocks of
        ``b = k + min(oversample, 2)`` vectors, thick restarts at 8 blocks, at most
        120 products, stopping once every matrix passes the certificate (see
        ``tol``). It needs ``4 (k + oversample) <= min(m, n)`` (else
        ``"randomized"`` is used). Without the matrix there is no exact fallback:
        a matrix that does not pass within the budget comes back with its last Ritz
        triplets (orthonormal; values below the true ones); check them with
        :func:`triplet_residual` if needed.

    Returns
    -------
    TopSingular
        ``U (..., m, k)``, ``S (..., k)``, ``V (..., n, k)``, signs fixed.

    Notes
    -----
    Cost: ``q + 1`` calls of ``matvec`` and ``q + 1`` of ``rmatvec`` on blocks of
    ``l = min(k + oversample, min(m, n))`` vectors, ``q`` being the power
    iterations run (one more ``matvec`` when ``power_iters="auto"``, for the
    residual test), plus skinny QRs and an ``l x l`` SVD per iteration; memory
    ``O((m + n) l)`` per matrix. There is no exact fallback here (the matrix is not
    available): with an integer ``power_iters``, check convergence if needed with
    the residuals ``|J v_i - s_i u_i|``, computable from one more ``matvec(V)``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> J = rng.standard_normal((2, 60, 5)) @ rng.standard_normal((2, 5, 40))
    >>> T = top_singular_operator(lambda X: J @ X, lambda Y: np.swapaxes(J, -1, -2) @ Y,
    ...                           J.shape, 4, seed=0)
    >>> bool(np.allclose(T.S, np.linalg.svd(J, compute_uv=False)[:, :4]))
    True
    """
    if not callable(matvec) or not callable(rmatvec):
        raise TypeError("matvec and rmatvec must be callables mapping blocks of vectors")
    if not isinstance(shape, (tuple, list)):
        raise TypeError(f"shape must be a tuple of ints (..., m, n), got {shape!r}")
    shape = tuple(check_int(f"shape[{i}]", s, minimum=1) for i, s in enumerate(shape))
    if len(shape) < 2:
        raise ValueError(f"shape must be (..., m, n) with at least 2 entries, got {shape!r}")
    batch, m, n = shape[:-2], shape[-2], shape[-1]
    k = check_int("k", k, minimum=1, maximum=min(m, n))
    oversample = check_int("oversample", oversample, minimum=0)
    power_iters = _check_power_iters(power_iters)
    tol = _check_tol(tol)
    check_choice("method", method, _OPERATOR_METHODS)
    host_dtype = resolve_dtype(dtype, np)
    r = min(m, n)
    b, smax = _krylov_sizes(k, r, oversample, cap_blocks=_OPERATOR_MAX_BLOCKS)
    if method == "krylov" and _AUTO_SKETCH_RATIO * min(k + oversample, r) <= r:
        return _operator_krylov(matvec, rmatvec, batch, m, n, k, b, smax, seed, tol, xp, host_dtype, dtype)
    l = min(k + oversample, r)
    max_iters, stop_early = _resolve_iters(power_iters, k, r, l)

    # Same draw as top_singular's sketch for the same seed, repeated over the batch
    # (materialised: wrappers may need a writable, contiguous block).
    omega = as_generator(seed).standard_normal((n, l))
    omega = np.ascontiguousarray(np.broadcast_to(omega, batch + (n, l)), dtype=host_dtype)
    Y0, xp, tol = _first_product(matvec, omega, batch + (m, l), tol, xp, dtype)

    # Checked before LAPACK sees them: a NaN block would otherwise surface as an
    # opaque "SVD did not converge" from the small SVD.
    def checked_matvec(X):
        out = matvec(X)
        _check_block("matvec", out, batch + (m, X.shape[-1]), xp)
        check_finite_array("matvec(X)", out, xp)
        return out

    def checked_rmatvec(Y):
        out = rmatvec(Y)
        _check_block("rmatvec", out, batch + (n, Y.shape[-1]), xp)
        check_finite_array("rmatvec(Y)", out, xp)
        return out

    U, S, V, _ = _randomized(
        Y0, checked_matvec, checked_rmatvec, k, max_iters,
        stop_early=stop_early, certify=stop_early, tol=tol, xp=xp,
    )
    U, V = fix_signs(U, V, xp)
    return TopSingular(U, S, V)


def _flat_operators(matvec, rmatvec, batch, m, n, xp):
    """The user's products on flat stacks ``(c, n, p) -> (c, m, p)`` and back, checked."""
    c = math.prod(batch)

    def flat_matvec(X):
        out = matvec(xp.reshape(X, batch + (n, X.shape[-1])))
        _check_block("matvec", out, batch + (m, X.shape[-1]), xp)
        check_finite_array("matvec(X)", out, xp)
        return xp.reshape(out, (c, m, X.shape[-1]))

    def flat_rmatvec(Y):
        out = rmatvec(xp.reshape(Y, batch + (m, Y.shape[-1])))
        _check_block("rmatvec", out, batch + (n, Y.shape[-1]), xp)
        check_finite_array("rmatvec(Y)", out, xp)
        return xp.reshape(out, (c, n, Y.shape[-1]))

    return flat_matvec, flat_rmatvec


def _operator_krylov(matvec, rmatvec, batch, m, n, k, b, smax, seed, tol, xp, host_dtype, dtype):
    """``top_singular_operator(method="krylov")``: thin-block Lanczos on all operators at
    once where it applies, then the certified block Krylov for any it declines."""
    c = math.prod(batch)
    thin = None
    if _THIN_LANCZOS and _lanczos.operator_applies(m, n, k):
        bt = _lanczos.BLOCK
        X0 = np.ascontiguousarray(np.broadcast_to(_start_block(n, bt, seed, host_dtype), batch + (n, bt)))
        Y0, xp, tol = _first_product(matvec, X0, batch + (m, bt), tol, xp, dtype)
        mv, rmv = _flat_operators(matvec, rmatvec, batch, m, n, xp)
        X0x = xp.reshape(asarray(X0, xp=xp, dtype=Y0.dtype), (c, n, bt))
        cluster_tol = _THIN_CLUSTER_FACTOR * math.sqrt(tol)
        if namespace_name(xp) == "numpy":  # the per-matrix algorithm of the dense path, in lockstep
            thin = _lanczos.top_k_operators_numpy(mv, rmv, xp.reshape(Y0, (c, m, bt)), X0x, k, tol,
                                                  cluster_tol=cluster_tol)
        else:
            thin = _lanczos.top_k_operators(mv, rmv, xp.reshape(Y0, (c, m, bt)), X0x, k, tol, xp,
                                            cluster_tol=cluster_tol)
    if thin is not None and all(r == "certified" for r in thin[3]):
        U, S, V = thin[:3]
    else:
        U, S, V, xp = _operator_gkl(matvec, rmatvec, batch, m, n, k, b, seed, tol, xp, host_dtype, dtype)
        if thin is not None:  # keep the thin path's certified operators, the block Krylov's for the rest
            Ut, St, Vt, reasons, _ = thin
            for i, r in enumerate(reasons):
                if r == "certified":
                    U[i, ...], S[i, ...], V[i, ...] = Ut[i, ...], St[i, ...], Vt[i, ...]
    U, V = fix_signs(U, V, xp)
    return TopSingular(xp.reshape(U, batch + (m, k)), xp.reshape(S, batch + (k,)), xp.reshape(V, batch + (n, k)))


def _operator_gkl(matvec, rmatvec, batch, m, n, k, b, seed, tol, xp, host_dtype, dtype):
    """The certified block Krylov (``_GKL``) on operators: flat ``U (c, m, k)``, ``S``, ``V``
    and the namespace (found from the first product when ``xp`` is None)."""
    c = math.prod(batch)
    P1 = _start_block(n, b, seed, host_dtype)
    start = np.ascontiguousarray(np.broadcast_to(P1, batch + (n, b)))
    Y0, xp, tol = _first_product(matvec, start, batch + (m, b), tol, xp, dtype)
    flat_matvec, flat_rmatvec = _flat_operators(matvec, rmatvec, batch, m, n, xp)
    P1x = asarray(P1, xp=xp, dtype=Y0.dtype)
    # No exact fallback here: never give up early; keep the bases small by thick restarts
    # (orthogonalisation and the small SVDs grow with the basis) and stop after a budget
    # of products.
    r = min(m, n)
    cap = max(2, min(r // b - 1, _OPERATOR_RESTART_BLOCKS))
    keep = max(k, (cap * b) // 2)
    gkl = _GKL(None, flat_matvec, flat_rmatvec, P1x, k, cap, tol, xp, compact=False, give_up=False,
               max_passes=_OPERATOR_MAX_PASSES, keep_cols=keep)
    U, S, V, _ = _assemble(gkl.run(xp.reshape(Y0, (c, m, b))), c, xp)
    return U, S, V, xp


def _first_product(matvec, X0, expected: tuple[int, ...], tol, xp, dtype):
    """``matvec`` on the host start block ``X0``, checked; returns ``(Y0, xp, tol)``.

    Without ``xp`` the operator's own output names the namespace (``X0`` is passed as the
    NumPy array it is); ``tol`` gets its default from ``Y0``'s dtype.
    """
    if xp is None:
        Y0 = matvec(X0)
        xp = get_namespace(Y0)
    else:
        Y0 = matvec(asarray(X0, xp=xp, dtype=dtype))
    _check_block("matvec", Y0, expected, xp)
    check_finite_array("matvec(X)", Y0, xp)
    return Y0, xp, _default_tol(tol, Y0.dtype, xp)


def _check_block(name: str, out, expected: tuple[int, ...], xp) -> None:
    shape = tuple(getattr(out, "shape", ()))
    if shape != expected:
        raise ValueError(f"{name} must return an array of shape {expected}, got {shape}")
    if not _is_kind(out.dtype, "real floating", xp):
        raise TypeError(f"{name} must return a real floating array, got dtype {out.dtype}")


def triplet_residual(J, T: TopSingular, *, side: str = "both"):
    """Residuals of approximate singular triplets, one per triplet.

    ``right_i = |J v_i - s_i u_i|``, ``left_i = |J^T u_i - s_i v_i|`` (2-norms).
    With orthonormal ``U``, ``V``, some singular value of ``J`` lies within
    ``sqrt(right_i^2 + left_i^2) / sqrt(2)`` of ``s_i`` (the pair is an approximate
    eigenpair of ``[[0, J], [J^T, 0]]``), and small residuals over a spectral gap
    bound the subspace error (Wedin).

    Parameters
    ----------
    J : array, shape (..., m, n)
    T : TopSingular
        ``U (..., m, k)``, ``S (..., k)``, ``V (..., n, k)``.
    side : {"both", "right", "left"}, default "both"
        ``"both"`` gives ``sqrt(right^2 + left^2)``. ``"right"`` alone is ~0 by
        construction for ``method="gram"``, ``"left"`` alone for ``"randomized"``,
        so use ``"both"`` to compare methods.

    Returns
    -------
    array, shape (..., k)
        Absolute residuals (divide by ``T.S[..., :1]`` for relative ones).

    Examples
    --------
    >>> import numpy as np
    >>> J = np.diag([3.0, 2.0, 1.0])
    >>> triplet_residual(J, top_singular(J, 2)).tolist()
    [0.0, 0.0]
    """
    check_choice("side", side, _SIDES)
    U, S, V = T
    xp = get_namespace(J, U, S, V)
    J = _as_real_float(J, xp)
    if J.ndim < 2 or U.shape[-2] != J.shape[-2] or V.shape[-2] != J.shape[-1]:
        raise ValueError(
            f"shapes do not match: J {tuple(J.shape)}, U {tuple(U.shape)}, V {tuple(V.shape)}"
        )
    # Divide by a per-matrix scale before squaring: no overflow or underflow.
    c = _safe_scale(xp.max(xp.abs(S), axis=-1, keepdims=True), xp)[..., None, :]
    Sd = S[..., None, :]
    out = 0.0
    if side in ("both", "right"):
        right = (J @ V - U * Sd) / c
        out = out + xp.sum(right * right, axis=-2)
    if side in ("both", "left"):
        left = (_mT(J, xp) @ U - V * Sd) / c
        out = out + xp.sum(left * left, axis=-2)
    return xp.sqrt(out) * c[..., 0, :]
