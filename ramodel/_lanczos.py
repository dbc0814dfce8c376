"""Certified top-k singular triplets by thin-block Lanczos: dense NumPy matrices one at a
time (:func:`top_k`), and operators known only by batched products (:func:`top_k_operators_numpy`,
:func:`top_k_operators`).

This is the first stage of ``top_singular(method="auto")`` on NumPy for matrices large
enough that a Python loop over the stack costs little (:func:`applies`), and of
``top_singular_operator(method="krylov")``. Each matrix is
worked on alone, so it stays in cache for every product. The products take blocks of
``BLOCK = 2`` vectors: that is a memory-bound kernel that reads ``J`` once, like a
matrix-vector product, and it costs about as much as one. So two Krylov vectors come
for the price of one (measured in ``benchmarks/RESULTS_spectra.md``). A thin block
gains more Krylov degree per pass over ``J`` than the ``k + 2``-wide blocks of the
batched path.

The method is block Lanczos on ``A = J^T J`` with full reorthogonalisation and thick
restarts:

* ``P`` is an orthonormal basis of the block Krylov space of ``A`` started from ``P_1``;
  the raw products ``J P`` and ``A P = J^T (J P)`` are kept;
* ``T = P^T A P`` is assembled from the Gram-Schmidt coefficients of each new product
  (no extra pass); its top eigenpairs ``(theta_i, y_i)`` give ``v_i = P y_i``,
  ``s_i = sqrt(theta_i)`` and ``u_i = J v_i / s_i``;
* a residual estimate ``|R y_i| / s_i`` (``R`` the newest block's QR factor) costs no
  product. A check passes when the estimate is below ``tol * s_1``. Then ``U`` is
  polished to orthonormal columns (one Cholesky QR) and the explicit certificate is
  computed from the stored products and small matrices: both residuals
  ``J v_i - s_i u_i`` and ``J^T u_i - s_i v_i``, and the orthonormality of ``U`` and
  ``V`` (see :func:`_certificate`);
* the basis is compressed to its ``keep`` best Ritz vectors when it would exceed
  ``max_cols`` columns (thick restart; Wu and Simon 2000).

The method never guesses. It returns ``None`` with a reason, and the caller then uses
the batched ``k + 2``-wide block method, when any of these holds:

* ``cluster``: ``b`` consecutive top-k values agree to ``cluster_tol``. A Krylov space
  grown from ``b`` vectors holds at most ``b`` directions of an exactly repeated
  singular value. A run of ``b`` equal values inside the top ``k - 1`` may therefore
  hide a missing copy. Below that, none can be missing; see :func:`_hides_copy`;
* ``certificate``: the free estimate passed but the explicit certificate did not. The
  usual cause is a tiny ``s_k`` (rank-deficient ``J``): ``u = J v / s`` is then not
  accurately orthonormal;
* ``stalled``: the residual estimates stagnate, or their geometric pace cannot reach
  ``tol`` within the product budget;
* ``budget``: ``max_products`` products were made without a certificate;
* ``overflow``: a product overflowed. The path squares ``J``, so it needs
  ``s_1`` within about ``1e-70 .. 1e70`` in float64 (``1e-8 .. 1e8`` in float32); beyond,
  products overflow or underflow (the latter shows as ``certificate``). The caller
  retries such a matrix once, scaled by a power of two (exact), before sending it on.
"""

from __future__ import annotations

import contextlib
import math
import threading

import numpy as np

from .backend import asarray, to_numpy
from .backend import matrix_transpose as mT

#: Vectors per product (see the module docstring).
BLOCK = 2

#: Smallest ``min(m, n)`` and ``m * n`` for which the per-matrix path is used. Below,
#: the Python overhead per Lanczos step (~50 us) starts to outweigh the cache gain: on
#: 64 gapped 96 x 96 matrices the batched path was 1.2x faster, on 128 x 128 1.15x, and
#: the thin path 1.2x faster from 160 x 160 (2-3x on a gapless spectrum at every size;
#: benchmarks/RESULTS_spectra.md).
MIN_SIDE = 128
MIN_ENTRIES = 128 * 128

#: A run is given up when its extrapolated residual misses ``tol`` by this factor, or
#: when the estimate falls by less than this ratio per step (stagnation).
GIVE_UP_FACTOR = 1e3
STALL_RATE = 0.97

#: Checks (an ``eigh`` of ``T``, ~0.1 ms at 40 columns) are scheduled at the number of
#: steps the residual estimate needs at its pace since the previous check, divided by
#: ``CHECK_SAFETY`` (Krylov convergence is superlinear, so the pace predicts late) and
#: at most ``CHECK_MAX_STEPS`` steps apart.
CHECK_SAFETY = 1.5
CHECK_MAX_STEPS = 4

#: The operator drivers: checks at most this many steps apart. A check costs an ``eigh``
#: of every operator's 60-column ``T`` (~0.7 ms for 4 operators), about as much as a
#: product call of a small conv block.
OPERATOR_CHECK_MAX_STEPS = 12


_BLAS_LOCK = threading.Lock()
_BLAS_USERS = 0
_BLAS_LIMITER = None


@contextlib.contextmanager
def one_blas_thread():
    """BLAS on one thread while the block runs (``threadpoolctl``), restored after.

    The limit is process-wide. Calls from several Python threads share one limit: the
    first to enter sets it, and the last to leave restores the original. Each thread
    restoring what it saw on entry would race, and could leave the process on one
    thread for good."""
    global _BLAS_USERS, _BLAS_LIMITER
    with _BLAS_LOCK:
        if _BLAS_USERS == 0:
            from threadpoolctl import threadpool_limits

            _BLAS_LIMITER = threadpool_limits(1, user_api="blas")
        _BLAS_USERS += 1
    try:
        yield
    finally:
        with _BLAS_LOCK:
            _BLAS_USERS -= 1
            if _BLAS_USERS == 0:
                _BLAS_LIMITER.restore_original_limits()
                _BLAS_LIMITER = None


def applies(m: int, n: int, k: int) -> bool:
    """True when :func:`top_k` is worth running on an ``(m, n)`` matrix for ``k`` triplets."""
    r = min(m, n)
    return r >= MIN_SIDE and m * n >= MIN_ENTRIES and 2 * sizes(k, r)[0] <= r


def sizes(k: int, r: int) -> tuple[int, int, int]:
    """``(max_cols, keep, max_products)`` for ``k`` triplets of a matrix with ``min(m, n) = r``.

    The basis holds at most ``max_cols = max(40, 4 k)`` columns, rounded to whole blocks
    and below ``r``. A restart keeps ``keep = max(k + BLOCK, max_cols / 2)`` Ritz vectors.
    The budget is ``max_products = 3 max_cols`` products, which is 60 Lanczos steps at
    ``k <= 10``; the slowest trained-net matrices measured need 23."""
    b = BLOCK
    max_cols = max(40, 4 * k)
    max_cols = min(max_cols, r - 2 * b)
    max_cols -= max_cols % b
    keep = max(k + b, max_cols // 2)
    keep -= keep % b
    return max_cols, keep, 3 * max_cols


def _hides_copy(S: np.ndarray, b: int, k: int, cluster_tol: float) -> bool:
    """True when ``b`` consecutive values ending before position ``k`` agree to ``cluster_tol``.

    Suppose the true value ``sigma`` has multiplicity above ``b`` and first sits at
    position ``q``. The Krylov space holds only ``b`` of its copies, at ``q, ..., q + b - 1``.
    A copy is missing from the top ``k`` only if ``q + b <= k``. The ``b`` copies then form
    a run inside the first ``k - 1`` positions. So a run of fewer than ``b`` values there,
    or a run that reaches position ``k``, cannot hide a missing copy. A run can reach ``k``
    when the repeated value straddles the cut, and then any ``k`` of its copies are right.
    """
    for i in range(0, k - b):  # runs S[i .. i + b - 1] with i + b <= k - 1 (0-indexed)
        if S[i] - S[i + b - 1] <= cluster_tol * S[i]:
            return True
    return False


def _orth(PT, W, T, D: int, b: int, local: bool):
    """Orthonormalise the rows of ``W (b, n)`` against ``PT[:D + b]`` (CGS2, then a QR).

    Writes the coefficients into ``T[:D + b, D:D + b]`` and returns ``(Qn (b, n), R (b, b))``
    (or ``(None, None)`` when ``W`` is not finite), with
    ``W^T = PT[:D + b]^T T[:D + b, D:D + b] + Qn^T R``. With ``local``, the first pass
    projects out only the last two blocks, the only ones the Lanczos recurrence couples
    ``W`` to in exact arithmetic; the second pass projects out all of them. A block whose
    projection has (numerically) dependent rows gets fresh directions: the QR's
    completion columns, projected out of the basis once more. Lanczos then continues
    past an invariant subspace (for example a rank-deficient ``J``). ``W`` itself is not
    modified."""
    Pall = PT[: D + b]
    scale = float(np.vdot(W, W))  # the raw block's squared Frobenius norm (NaN-propagating)
    if not math.isfinite(scale):
        return None, None
    if local:
        Pl = PT[D - b : D + b]
        C = Pl @ W.T
        W = W - C.T @ Pl
        T[D - b : D + b, D : D + b] = C
    else:
        C = Pall @ W.T
        W = W - C.T @ Pall
        T[: D + b, D : D + b] = C
    C = Pall @ W.T
    W -= C.T @ Pall
    T[: D + b, D : D + b] += C
    if b == 2 and scale > 0:
        QR = _chol_qr2(W, scale)
        if QR is not None:
            return QR
    Q, R = np.linalg.qr(W.T)
    if not scale > 0 or min(abs(R[i, i]) for i in range(b)) ** 2 <= _DEPENDENT * scale:
        Q = Q - Pall.T @ (Pall @ Q)
        Q = Q - Pall.T @ (Pall @ Q)
        Q, _ = np.linalg.qr(Q)
        R = Q.T @ W.T
    return Q.T, R


#: A projected block whose squared QR diagonal falls below this fraction of the raw
#: block's squared norm (Frobenius in the dense path, largest column in the batched
#: operator path) is treated as dependent (fresh directions).
_DEPENDENT = 1e-12


def _chol2(W):
    """Upper ``R (2, 2)`` and ``R^-T`` with ``W W^T = R^T R`` for two rows, or None when the
    rows are too close to dependent for a Gram-based QR (``r_22^2 <= 1e-8 g_22``)."""
    G = W @ W.T
    g11, g12, g22 = float(G[0, 0]), float(G[0, 1]), float(G[1, 1])
    if not g11 > 0:
        return None
    r11 = math.sqrt(g11)
    r12 = g12 / r11
    d = g22 - r12 * r12
    if not d > 1e-8 * g22:
        return None
    r22 = math.sqrt(d)
    R = np.array([[r11, r12], [0.0, r22]])
    Rit = np.array([[1.0 / r11, 0.0], [-r12 / (r11 * r22), 1.0 / r22]])
    return R, Rit


def _chol_qr2(W, scale: float):
    """CholeskyQR2 of the rows of ``W (2, n)``: ``(Q (2, n), R (2, 2))`` with ``W = R^T Q``
    and orthonormal rows ``Q``, or None (ill-conditioned or dependent: the caller's
    Householder QR handles those). Two Gram-based passes: the second restores the
    orthogonality the first loses to rounding (Fukaya et al. 2014)."""
    first = _chol2(W)
    if first is None or min(first[0][0, 0], first[0][1, 1]) ** 2 <= _DEPENDENT * scale:
        return None
    R1, R1it = first
    Q1 = (R1it @ W).astype(W.dtype, copy=False)
    second = _chol2(Q1)
    if second is None:
        return None
    R2, R2it = second
    Q = (R2it @ Q1).astype(W.dtype, copy=False)
    return Q, (R2 @ R1).astype(W.dtype, copy=False)


def _certificate(PT, YT, ZT, Yk, s, xp=np, where=None):
    """The explicit certificate of the Ritz triplets ``(s_i, v_i = P y_i)`` from the stored
    products, for one matrix or a stack; returns ``(U (..., m, k), V (..., n, k), res (...),
    orth (...))``.

    ``PT (..., D, n)``, ``YT (..., D, m)`` and ``ZT (..., D, n)`` hold the rows of ``P``,
    ``J P`` and ``J^T J P``; ``Yk (..., D, k)`` and ``s (..., k)`` (positive) are the Ritz
    vectors and values. ``U_0 = (J P) Y_k / s`` is ``J V / s`` exactly, but it is
    orthonormal only to about ``eps (s_1 / s_k)^2``, so it is polished once by Cholesky
    QR: ``U = U_0 R^-1`` with ``R^T R = U_0^T U_0``. The residuals are then those of the
    returned ``U``, from the stored products and small matrices only:
    ``J V - U S = U_0 S - U S`` and ``J^T U = (J^T J P) Y_k S^-1 R^-1``. ``res`` is the
    largest ``sqrt(|J v_i - s_i u_i|^2 + |J^T u_i - s_i v_i|^2) / s_1`` and ``orth`` the
    largest entry of ``|U^T U - I|`` and ``|V^T V - I|``; both are ``inf`` when ``U_0`` is
    not of full rank. With ``where`` (bool ``(...)``), only those matrices are factorised,
    and the others' results are meaningless."""
    k = s.shape[-1]
    sd = s[..., None, :]
    V = mT(PT, xp) @ Yk
    U0 = (mT(YT, xp) @ Yk) / sd
    JtU0 = (mT(ZT, xp) @ Yk) / sd
    G = mT(U0, xp) @ U0
    eye = xp.eye(k, dtype=U0.dtype)
    if where is not None:  # the others' Gram matrices may be singular
        G = xp.where(xp.reshape(asarray(where, xp=xp), tuple(where.shape) + (1, 1)), G, xp.broadcast_to(eye, G.shape))
    try:
        L = xp.linalg.cholesky(G)
    except Exception:  # noqa: BLE001 - the backend's "not positive definite"
        inf = xp.full(tuple(s.shape[:-1]), math.inf, dtype=U0.dtype)
        return U0, V, inf, inf
    Rinv = xp.linalg.inv(mT(L, xp))
    U = U0 @ Rinv
    right = (U0 - U) * sd
    left = JtU0 @ Rinv - V * sd
    res = xp.sqrt(xp.max(xp.sum(right * right, axis=-2) + xp.sum(left * left, axis=-2), axis=-1)) / s[..., 0]
    orth = xp.maximum(xp.max(xp.abs(mT(U, xp) @ U - eye), axis=(-2, -1)), xp.max(xp.abs(mT(V, xp) @ V - eye), axis=(-2, -1)))
    res = xp.where(xp.isfinite(res), res, xp.full_like(res, math.inf))
    return U, V, res, orth


def top_k(J, k: int, P1T, tol: float, *, cluster_tol: float):
    """Certified top-``k`` triplets of one matrix, or ``None`` and the reason.

    Parameters
    ----------
    J : numpy.ndarray, shape (m, n)
        Real floating matrix, finite (checked by the caller).
    k : int
        Number of triplets, ``1 <= k`` with ``2 sizes(k, min(m, n))[0] <= min(m, n)``.
    P1T : numpy.ndarray, shape (BLOCK, n)
        Orthonormal rows: the start block, in ``J``'s dtype.
    tol : float
        The certificate: ``sqrt(|J v_i - s_i u_i|^2 + |J^T u_i - s_i v_i|^2) <= tol * s_1``
        for every ``i``, and ``|U^T U - I|``, ``|V^T V - I| <= tol`` entrywise.
    cluster_tol : float
        Relative tolerance of the ``cluster`` rule (module docstring).

    Returns
    -------
    tuple
        ``(U (m, k), S (k,), V (n, k), products, reason)``; ``U``, ``S`` and ``V`` are None
        when the matrix is declined, and ``reason`` is then one of ``"cluster"``,
        ``"certificate"``, ``"stalled"``, ``"budget"``, ``"overflow"`` (else
        ``"certified"``).
    """
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        JT = J.T
        steps = _steps(J.shape[0], J.shape[1], J.dtype, k, P1T, tol, cluster_tol, sizes(k, min(J.shape)),
                       give_up=True, check_max_steps=CHECK_MAX_STEPS)
        try:
            side, X, out = next(steps)
            while True:
                np.matmul(X, JT if side == "J" else J, out=out)
                side, X, out = steps.send(None)
        except StopIteration as stop:
            return stop.value


def _steps(m: int, n: int, dt, k: int, P1T, tol: float, cluster_tol: float, size: tuple[int, int, int], *,
           give_up: bool, check_max_steps: int):
    """The thin-block Lanczos of one ``(m, n)`` matrix, driven by its products.

    A generator: it yields ``(side, X, out)`` and expects ``out`` to hold the product when
    it is resumed, ``X J^T`` (``side == "J"``, ``X (b, n)``, ``out (b, m)``) or ``X J``
    (``side == "JT"``, ``X (b, m)``, ``out (b, n)``). Its return value (``StopIteration.value``)
    is :func:`top_k`'s. So one algorithm serves a dense matrix (:func:`top_k`) and
    operators known only by batched products (:func:`top_k_operators_numpy`).
    ``size = (max_cols, keep, max_products)``; without ``give_up`` a run never stops for
    ``"stalled"``, only at the budget."""
    b = P1T.shape[0]
    max_cols, keep, max_products = size
    PT = np.empty((max_cols + b, n), dtype=dt)  # basis rows
    ZT = np.empty((max_cols, n), dtype=dt)  # rows of (J^T J P)^T
    YT = np.empty((max_cols, m), dtype=dt)  # rows of (J P)^T
    T = np.zeros((max_cols, max_cols), dtype=dt)  # upper triangle of P^T J^T J P
    PT[:b] = P1T
    D, local, products = 0, False, 0
    hist: list[tuple[int, float]] = []
    next_check = 0
    while True:
        # the products go straight into their rows of YT and ZT
        Y = YT[D : D + b]
        yield "J", PT[D : D + b], Y
        W = ZT[D : D + b]
        yield "JT", Y, W
        products += 2
        # a NaN or Inf of J (or an overflow) makes W non-finite: checked on the first
        # product here, and on every later one through the norms _orth computes
        if products == 2 and not np.isfinite(W).all():
            return None, None, None, products, "overflow"
        Qn, R = _orth(PT, W, T, D, b, local)
        if Qn is None:
            return None, None, None, products, "overflow"
        D += b
        local = True
        restart = D + b > max_cols
        last = products + 2 > max_products
        if not (D >= k + b and (products >= next_check or restart or last)):
            PT[D : D + b] = Qn
            continue
        theta, Yv = np.linalg.eigh(T[:D, :D], UPLO="U")
        theta, Yv = theta[::-1], Yv[:, ::-1]
        th = np.maximum(theta[:k], 0.0)
        s = np.sqrt(th)
        s1 = float(s[0])
        if not s1 > 0:  # J P = 0 so far: J vanishes on the Krylov space
            return None, None, None, products, "certificate"
        est = float(np.max(np.sqrt(np.sum((R @ Yv[D - b : D, :k]) ** 2, axis=0)) / s)) / s1
        if not math.isfinite(est):
            est = math.inf
        if est <= tol:
            # the estimate passed: the explicit certificate decides, once
            if not float(s[-1]) > 0:
                return None, None, None, products, "certificate"
            U, V, res, orth = _certificate(PT[:D], YT[:D], ZT[:D], Yv[:, :k], s)
            if not (float(res) <= tol and float(orth) <= tol):
                return None, None, None, products, "certificate"
            if _hides_copy(s, b, k, cluster_tol):
                return None, None, None, products, "cluster"
            return U, s, V, products, "certified"
        left_products = max_products - products
        if left_products < 2:
            return None, None, None, products, "budget"
        if hist:
            p0, e0 = hist[-1]
            rate = (est / e0) ** (2.0 / (products - p0)) if e0 > 0 and math.isfinite(est) else 1.0  # per step
            if give_up and len(hist) >= 3 and (
                    rate >= STALL_RATE or est * rate ** (left_products / 2) > GIVE_UP_FACTOR * tol):
                return None, None, None, products, "stalled"
            need = math.log(tol / est) / math.log(rate) if 0 < rate < 1 and est > tol else 1.0
            next_check = products + 2 * max(1, min(int(need / CHECK_SAFETY), check_max_steps))
        else:
            next_check = products + 2
        hist.append((products, est))
        if restart:
            Yl = Yv[:, :keep]
            PT[:keep] = Yl.T @ PT[:D]
            YT[:keep] = Yl.T @ YT[:D]
            ZT[:keep] = Yl.T @ ZT[:D]
            T[:] = 0.0
            ind = np.arange(keep)
            T[ind, ind] = theta[:keep]
            D, local = keep, False
        PT[D : D + b] = Qn


# ----------------------------------------------------------------------------- operators


def operator_sizes(k: int, r: int) -> tuple[int, int, int]:
    """``(max_cols, keep, max_products)`` for :func:`top_k_operators`.

    Operators have no exact fallback, so the basis is larger than for dense matrices
    (``max(60, 6 k)`` columns, below ``r``), and the budget is 600 products (1200 vectors
    per operator; ARPACK needed about 310 on the conv block of the benchmark, this path
    260)."""
    b = BLOCK
    max_cols = min(max(60, 6 * k), r - 2 * b)
    max_cols -= max_cols % b
    keep = max(k + b, max_cols // 2)
    keep -= keep % b
    return max_cols, keep, 600


def operator_applies(m: int, n: int, k: int) -> bool:
    """True when :func:`top_k_operators` can run on ``(m, n)`` operators for ``k`` triplets."""
    r = min(m, n)
    max_cols, keep, _ = operator_sizes(k, r)
    return r >= MIN_SIDE and max_cols >= 2 * (k + BLOCK) and keep + 2 * BLOCK <= max_cols


def top_k_operators_numpy(matvec, rmatvec, Y0, X0, k: int, tol: float, *, cluster_tol: float):
    """:func:`top_k_operators` for NumPy operators: the per-matrix algorithm of :func:`top_k`
    (:func:`_steps`), one run per operator, all advanced in lockstep so that every call of
    ``matvec``/``rmatvec`` carries one block per operator. Same arguments (NumPy arrays)
    and return value; a finished operator's slot in later calls holds zeros."""
    c, m, b = Y0.shape
    n = X0.shape[-2]
    dt = Y0.dtype
    size = operator_sizes(k, min(m, n))
    P1T = np.ascontiguousarray(X0[0].T)
    runs = [_steps(m, n, dt, k, P1T, tol, cluster_tol, size, give_up=False, check_max_steps=OPERATOR_CHECK_MAX_STEPS)
            for _ in range(c)]
    results: list = [None] * c
    products = 1
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        requests = [next(r) for r in runs]  # every run first asks for X J^T with X = P_1^T
        for i in range(c):
            requests[i][2][...] = Y0[i].T

        def advance(i):
            try:
                requests[i] = runs[i].send(None)
            except StopIteration as stop:
                results[i], requests[i] = stop.value, None

        for i in range(c):
            advance(i)
        while any(r is not None for r in requests):
            side = next(r[0] for r in requests if r is not None)
            rows = n if side == "J" else m
            block = np.zeros((c, rows, b), dtype=dt)
            for i, r in enumerate(requests):
                if r is not None:
                    assert r[0] == side  # the runs make the same sequence of products
                    block[i] = r[1].T
            out = matvec(block) if side == "J" else rmatvec(block)
            products += 1
            for i, r in enumerate(requests):
                if r is not None:
                    r[2][...] = out[i].T
                    advance(i)
    U = np.zeros((c, m, k), dtype=dt)
    S = np.zeros((c, k), dtype=dt)
    V = np.zeros((c, n, k), dtype=dt)
    reasons = []
    for i, (u, si, v, _, reason) in enumerate(results):
        if u is not None:
            U[i], S[i], V[i] = u, si, v
        reasons.append(reason)
    return U, S, V, reasons, products


def top_k_operators(matvec, rmatvec, Y0, X0, k: int, tol: float, xp, *, cluster_tol: float):
    """Thin-block Lanczos on ``c`` operators at once, known only by batched products.

    Parameters
    ----------
    matvec, rmatvec : callable
        ``(c, n, b) -> (c, m, b)`` and ``(c, m, b) -> (c, n, b)`` in namespace ``xp``,
        checked (shape, dtype, finiteness) by the caller.
    Y0 : array, shape (c, m, BLOCK)
        ``matvec(X0)``, already computed by the caller.
    X0 : array, shape (c, n, BLOCK)
        The start block (orthonormal columns, the same for every operator).
    k, tol, cluster_tol
        As in :func:`top_k`; the certificate is the same, per operator.
    xp : module
        Array namespace (NumPy, CuPy, any array-API library with ``linalg``).

    Returns
    -------
    tuple
        ``(U (c, m, k), S (c, k), V (c, n, k), reasons, products)``; ``reasons`` is a list
        of ``"certified"``, ``"cluster"``, ``"certificate"`` or ``"budget"`` per operator.
        Rows of a declined operator are zeros.
    """
    c, m, b = Y0.shape
    n = X0.shape[-2]
    dt = Y0.dtype
    max_cols, keep, max_products = operator_sizes(k, min(m, n))
    PT = xp.zeros((c, max_cols + b, n), dtype=dt)
    ZT = xp.zeros((c, max_cols, n), dtype=dt)
    YT = xp.zeros((c, max_cols, m), dtype=dt)
    T = xp.zeros((c, max_cols, max_cols), dtype=dt)
    U_out = xp.zeros((c, m, k), dtype=dt)
    S_out = xp.zeros((c, k), dtype=dt)
    V_out = xp.zeros((c, n, k), dtype=dt)
    reasons = [None] * c
    Xb = X0
    PT[:, :b, :] = mT(X0, xp)
    Y = Y0
    D, local, products = 0, False, 1
    next_check = 0
    hist = None
    while True:
        W = rmatvec(Y)
        products += 1
        YT[:, D : D + b, :] = mT(Y, xp)
        ZT[:, D : D + b, :] = mT(W, xp)
        Pall = PT[:, : D + b, :]
        lo = D - b if local else 0
        Pl = PT[:, lo : D + b, :]
        C1 = Pl @ W
        W = W - mT(Pl, xp) @ C1
        C2 = Pall @ W
        W = W - mT(Pall, xp) @ C2
        if local:
            col = xp.concat([C2[:, :lo, :], C2[:, lo:, :] + C1], axis=-2)
        else:
            col = C2 + C1
        T[:, : D + b, D : D + b] = col
        T[:, D : D + b, : D + b] = mT(col, xp)
        blk = T[:, D : D + b, D : D + b]
        T[:, D : D + b, D : D + b] = (blk + mT(blk, xp)) / 2
        Q, R = xp.linalg.qr(W)
        # the raw block's largest squared column norm, by Pythagoras from the coefficients
        scale = xp.max(xp.sum(col * col, axis=-2) + xp.sum(R * R, axis=-2), axis=-1)
        dmin = xp.min(xp.abs(xp.stack([R[:, i, i] for i in range(b)], axis=-1)), axis=-1)
        if bool(xp.any(dmin * dmin <= _DEPENDENT * scale)):
            Q = Q - mT(Pall, xp) @ (Pall @ Q)
            Q = Q - mT(Pall, xp) @ (Pall @ Q)
            Q, _ = xp.linalg.qr(Q)
            R = mT(Q, xp) @ W
        D += b
        local = True
        restart = D + b > max_cols
        last = products + 2 > max_products
        if D >= k + b and (products >= next_check or restart or last):
            theta, Yv = xp.linalg.eigh(T[:, :D, :D])
            theta, Yv = xp.flip(theta, axis=-1), xp.flip(Yv, axis=-1)
            th = xp.where(theta[:, :k] > 0, theta[:, :k], xp.zeros_like(theta[:, :k]))
            s = xp.sqrt(th)
            s1 = s[:, :1]
            safe_s = xp.where(s > 0, s, xp.ones_like(s))
            safe_s1 = xp.where(s1 > 0, s1, xp.ones_like(s1))
            E = R @ Yv[:, D - b : D, :k]
            est = xp.max(xp.sqrt(xp.sum(E * E, axis=-2)) / safe_s, axis=-1) / safe_s1[:, 0]
            est = xp.where((s[:, -1] > 0) & xp.isfinite(est), est, xp.full_like(est, math.inf))
            est_h = np.asarray(_host(est), dtype=np.float64)
            open_ = np.array([r is None for r in reasons])
            cand = open_ & (est_h <= tol)
            if cand.any():
                # candidates have s > 0, so safe_s is s for every matrix that counts
                U, V, res, orth = _certificate(PT[:, :D, :], YT[:, :D, :], ZT[:, :D, :], Yv[:, :, :k], safe_s, xp,
                                               where=cand)
                res_h = np.asarray(_host(res), dtype=np.float64)
                orth_h = np.asarray(_host(orth), dtype=np.float64)
                S_h = np.asarray(_host(s), dtype=np.float64)
                for i in np.nonzero(cand)[0]:
                    if not (res_h[i] <= tol and orth_h[i] <= tol):
                        reasons[i] = "certificate"
                    elif _hides_copy(S_h[i], b, k, cluster_tol):
                        reasons[i] = "cluster"
                    else:
                        reasons[i] = "certified"
                        U_out[i, ...], S_out[i, ...], V_out[i, ...] = U[i, ...], s[i, ...], V[i, ...]
            if all(r is not None for r in reasons):
                break
            if max_products - products < 2:
                for i in range(c):
                    if reasons[i] is None:
                        reasons[i] = "budget"
                break
            live = np.array([r is None for r in reasons]) & np.isfinite(est_h) & (est_h > 0)
            step = 1
            if hist is not None and live.any():
                p0, e0 = hist
                with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                    rate = (est_h[live] / e0[live]) ** (2.0 / max(1, products - p0))
                    need = np.where(rate < 1.0, np.log(tol / est_h[live]) / np.log(rate), 1.0)
                need_min = float(np.min(need))
                if math.isfinite(need_min):
                    step = max(1, min(int(need_min / CHECK_SAFETY), OPERATOR_CHECK_MAX_STEPS))
            next_check = products + 2 * step
            hist = (products, est_h)
            if restart:
                Yl = Yv[:, :, :keep]
                PT[:, :keep, :] = mT(Yl, xp) @ PT[:, :D, :]
                YT[:, :keep, :] = mT(Yl, xp) @ YT[:, :D, :]
                ZT[:, :keep, :] = mT(Yl, xp) @ ZT[:, :D, :]
                T = xp.zeros_like(T)
                T[:, :keep, :keep] = xp.eye(keep, dtype=dt)[None, :, :] * theta[:, None, :keep]
                D, local = keep, False
        PT[:, D : D + b, :] = mT(Q, xp)
        Xb = Q
        Y = matvec(Xb)
        products += 1
    return U_out, S_out, V_out, reasons, products


def _host(x) -> np.ndarray:
    return to_numpy(x)
