"""The linearised ResNet model (Unconstrained Jacobians Model, MODEL.md §1–2).

Notation follows the spec: ``d`` width, ``C`` classes, ``N`` inputs, ``L`` depth,
``k`` branch factors. Columns are samples::

    h_0 = x,   h_l = A_l h_{l-1},   A_l = M_l + J_l,   J_l = B_{l,k} ... B_{l,1},   z = W h_L

    Phi = (1/N) sum_n loss(z_n, y_n) + (lambda_J/2) sum_{l,i} |B_{l,i}|_F^2 + (lambda_W/2) |W|_F^2

Design constraints:

- Parameters live in one flat vector ``theta`` (factors first, then ``W``) so that one
  optimiser serves every backend; :func:`unpack` gives zero-copy views.
- Everything is batched over inputs: the only Python loops are over depth (the model
  is sequential) and over the ``k`` branch factors (small).
- The gradient is one forward and one backward sweep (MODEL.md §2). The Hessian-vector
  product is exact (forward-over-reverse, written out by hand), which the Newton polish
  of :mod:`ramodel.optimize` needs to reach gradient norms near 1e-13.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._validation import check_choice, check_int, check_positive_float
from .backend import get_namespace, quiet_overflow

__all__ = [
    "LOSSES",
    "Problem",
    "make_problem",
    "n_params",
    "pack",
    "unpack",
    "jacobians_from_factors",
    "forward",
    "objective",
    "value_and_grad",
    "hvp",
    "hvp_operator",
    "split_depth",
    "valley_retraction",
    "gauss_newton_preconditioner",
]

LOSSES = ("mse", "cross_entropy")


@dataclass(frozen=True, eq=False)
class Problem:
    """The fixed data of one UJM instance.

    Attributes
    ----------
    X : array, shape (d, N)
        Inputs as columns.
    Y : array, shape (C, N)
        One-hot targets.
    skips : array, shape (L, d, d)
        Skip matrices ``M_l`` (the identity for a plain ResNet).
    loss : {"mse", "cross_entropy"}
    lambda_J, lambda_W : float
        Weight decays on the branch factors and on the classifier.
    branch_factors : int
        ``k``, the number of factors per Jacobian.
    """

    X: Any
    Y: Any
    skips: Any
    loss: str
    lambda_J: float
    lambda_W: float
    branch_factors: int

    @property
    def depth(self) -> int:
        return self.skips.shape[0]

    @property
    def width(self) -> int:
        return self.X.shape[0]

    @property
    def classes(self) -> int:
        return self.Y.shape[0]

    @property
    def n_inputs(self) -> int:
        return self.X.shape[1]


_overflow_is_a_result = quiet_overflow  # see ramodel.backend.quiet_overflow


def make_problem(X, Y, skips, *, loss="mse", weight_decay=(1e-2, 1e-2), branch_factors=1) -> Problem:
    """Validate and bundle the model's data.

    Parameters
    ----------
    X : array, shape (d, N)
    Y : array, shape (C, N)
        One-hot targets, same namespace and dtype as ``X``.
    skips : array, shape (L, d, d)
    loss : {"mse", "cross_entropy"}, default "mse"
    weight_decay : (float, float), default (1e-2, 1e-2)
        ``(lambda_J, lambda_W)``, each finite and > 0.
    branch_factors : int, default 1

    Returns
    -------
    Problem
    """
    xp = get_namespace(X, Y, skips)
    check_choice("loss", loss, LOSSES)
    lambda_J, lambda_W = _check_weight_decay(weight_decay)
    k = check_int("branch_factors", branch_factors, minimum=1)
    if X.ndim != 2:
        raise ValueError(f"X must have shape (d, N), got {tuple(X.shape)}")
    d, N = X.shape
    if Y.ndim != 2 or Y.shape[1] != N:
        raise ValueError(f"Y must have shape (C, N={N}), got {tuple(Y.shape)}")
    if skips.ndim != 3 or skips.shape[1:] != (d, d):
        raise ValueError(f"skips must have shape (L, {d}, {d}), got {tuple(skips.shape)}")
    if X.dtype != Y.dtype or X.dtype != skips.dtype:
        raise TypeError(f"X, Y and skips must share one dtype, got {X.dtype}, {Y.dtype}, {skips.dtype}")
    del xp
    return Problem(X, Y, skips, loss, lambda_J, lambda_W, k)


def _check_weight_decay(weight_decay) -> tuple[float, float]:
    if isinstance(weight_decay, (int, float)) and not isinstance(weight_decay, bool):
        weight_decay = (weight_decay, weight_decay)
    try:
        lambda_J, lambda_W = weight_decay
    except (TypeError, ValueError):
        raise TypeError(
            f"weight_decay must be a number or a pair (lambda_J, lambda_W), got {weight_decay!r}"
        ) from None
    return (
        check_positive_float("weight_decay[0] (lambda_J)", lambda_J),
        check_positive_float("weight_decay[1] (lambda_W)", lambda_W),
    )


# ----------------------------------------------------------------------------- parameters


def n_params(problem: Problem) -> int:
    """Length of the flat parameter vector: ``L*k*d*d + C*d``."""
    L, k, d, C = problem.depth, problem.branch_factors, problem.width, problem.classes
    return L * k * d * d + C * d


def pack(factors, W, xp=None):
    """Flatten ``factors (L, k, d, d)`` and ``W (C, d)`` into one vector ``theta``."""
    xp = xp or get_namespace(factors, W)
    return xp.concat([xp.reshape(factors, (-1,)), xp.reshape(W, (-1,))])


def unpack(theta, problem: Problem):
    """Views ``factors (L, k, d, d)`` and ``W (C, d)`` into a flat ``theta``."""
    xp = get_namespace(theta)
    L, k, d, C = problem.depth, problem.branch_factors, problem.width, problem.classes
    m = L * k * d * d
    return xp.reshape(theta[:m], (L, k, d, d)), xp.reshape(theta[m:], (C, d))


# ----------------------------------------------------------------------------- forward


def _prefix_suffix(factors, xp):
    """Partial products of the branch factors, batched over depth.

    ``pre[i] = B_{i-1} ... B_0`` (``pre[0] = I``) and ``suf[i] = B_{k-1} ... B_{i+1}``
    (``suf[k-1] = I``), so that ``J = suf[i] @ B_i @ pre[i]`` for every ``i``.
    Identities are returned as None to save the products.
    """
    k = factors.shape[1]
    pre = [None] * k
    suf = [None] * k
    for i in range(1, k):
        B = factors[:, i - 1, ...]
        pre[i] = B if pre[i - 1] is None else B @ pre[i - 1]
    for i in range(k - 2, -1, -1):
        B = factors[:, i + 1, ...]
        suf[i] = B if suf[i + 1] is None else suf[i + 1] @ B
    return pre, suf


def jacobians_from_factors(factors):
    """``J_l = B_{l,k} ... B_{l,1}`` for every layer.

    Parameters
    ----------
    factors : array, shape (L, k, d, d)
        ``factors[l, i]`` is ``B_{l, i+1}``: index 0 acts first on ``h``.

    Returns
    -------
    J : array, shape (L, d, d)

    Examples
    --------
    >>> import numpy as np
    >>> B = np.stack([np.eye(2) * 2, np.eye(2) * 3])[None]  # L=1, k=2
    >>> jacobians_from_factors(B)[0].tolist()
    [[6.0, 0.0], [0.0, 6.0]]
    """
    k = factors.shape[1]
    J = factors[:, 0, ...]
    for i in range(1, k):
        J = factors[:, i, ...] @ J
    return J


def forward(J, skips, X):
    """All representations ``H_0 .. H_L`` of the linear network.

    Parameters
    ----------
    J : array, shape (L, d, d)
    skips : array, shape (L, d, d)
    X : array, shape (d, N)

    Returns
    -------
    H : array, shape (L+1, d, N)
        ``H[l]`` is ``h_l`` for every input, as columns.
    """
    xp = get_namespace(J, skips, X)
    A = skips + J
    H = [X]
    for l in range(A.shape[0]):
        H.append(A[l, ...] @ H[-1])
    return xp.stack(H)


def _loss_value_and_G(Z, Y, loss, xp):
    """Mean loss and ``G = d(mean loss)/dZ`` (already divided by N)."""
    N = Z.shape[1]
    if loss == "mse":
        R = Z - Y
        return 0.5 * float(xp.sum(R * R)) / N, R / N, None
    shifted = Z - xp.max(Z, axis=0, keepdims=True)
    E = xp.exp(shifted)
    denom = xp.sum(E, axis=0, keepdims=True)
    P = E / denom
    nll = xp.sum(Y * (xp.log(denom) - shifted))
    return float(nll) / N, (P - Y) / N, P


def _loss_tangent(Zdot, P, loss, N, xp):
    """Directional derivative of ``G`` along ``Zdot``."""
    if loss == "mse":
        return Zdot / N
    PZ = P * Zdot
    return (PZ - P * xp.sum(PZ, axis=0, keepdims=True)) / N


def _sq(x, xp) -> float:
    return float(xp.sum(x * x))


@_overflow_is_a_result
def objective(theta, problem: Problem) -> float:
    """The objective Φ at ``theta`` (a Python float).

    Parameters
    ----------
    theta : array, shape (n_params,)
    problem : Problem
    """
    xp = get_namespace(theta)
    factors, W = unpack(theta, problem)
    H = forward(jacobians_from_factors(factors), problem.skips, problem.X)
    data, _, _ = _loss_value_and_G(W @ H[-1, ...], problem.Y, problem.loss, xp)
    return data + 0.5 * problem.lambda_J * _sq(factors, xp) + 0.5 * problem.lambda_W * _sq(W, xp)


def _factor_grads(factors, gJ, pre, suf, xp):
    """``dPhi/dB_i = suf[i]^T gJ pre[i]^T`` for every factor, batched over depth."""
    k = factors.shape[1]
    if k == 1:
        return gJ[:, None, ...]
    T = xp.matrix_transpose
    out = []
    for i in range(k):
        g = gJ if suf[i] is None else T(suf[i]) @ gJ
        g = g if pre[i] is None else g @ T(pre[i])
        out.append(g)
    return xp.stack(out, axis=1)


def _backward(A, H, W, G, xp):
    """Backward sweep: ``Delta_l = A_{>l}^T W^T G`` for l = L..1, as a stack (L, d, N)."""
    L = A.shape[0]
    Delta = [None] * L
    D = W.T @ G
    for l in range(L - 1, -1, -1):
        Delta[l] = D
        if l > 0:
            D = A[l, ...].T @ D
    return xp.stack(Delta)


@_overflow_is_a_result
def value_and_grad(theta, problem: Problem):
    """Φ and its analytic gradient (MODEL.md §2) in one forward and one backward sweep.

    ``grad_{J_l} Phi_data = A_{>l}^T W^T G H_{l-1}^T`` and ``grad_W Phi_data = G H_L^T``;
    factor gradients follow by the product rule.

    Parameters
    ----------
    theta : array, shape (n_params,)
    problem : Problem

    Returns
    -------
    value : float
    grad : array, shape (n_params,)
    """
    xp = get_namespace(theta)
    factors, W = unpack(theta, problem)
    pre, suf = _prefix_suffix(factors, xp)
    J = jacobians_from_factors(factors)
    A = problem.skips + J
    H = forward(J, problem.skips, problem.X)
    data, G, _ = _loss_value_and_G(W @ H[-1, ...], problem.Y, problem.loss, xp)
    value = data + 0.5 * problem.lambda_J * _sq(factors, xp) + 0.5 * problem.lambda_W * _sq(W, xp)
    Delta = _backward(A, H, W, G, xp)
    gJ = Delta @ xp.matrix_transpose(H[:-1, ...])
    g_factors = _factor_grads(factors, gJ, pre, suf, xp) + problem.lambda_J * factors
    g_W = G @ H[-1, ...].T + problem.lambda_W * W
    return value, pack(g_factors, g_W, xp)


@_overflow_is_a_result
def hvp(theta, v, problem: Problem):
    """Exact Hessian-vector product ``∇²Φ(theta) v`` (forward-over-reverse, by hand).

    Parameters
    ----------
    theta, v : array, shape (n_params,)

    Returns
    -------
    Hv : array, shape (n_params,)

    See Also
    --------
    hvp_operator : the same product with the sweeps at ``theta`` computed once, for many ``v``.
    """
    return hvp_operator(theta, problem)(v)


def hvp_operator(theta, problem: Problem):
    """``v -> ∇²Φ(theta) v``, with everything that does not depend on ``v`` computed once.

    A Newton–Krylov step takes tens to hundreds of products at one point. The forward
    sweep ``H``, the backward sweep ``Delta = A_{>l}^T W^T G``, the partial products of
    the factors and the loss curvature depend on ``theta`` only; each product then costs
    one tangent sweep forward and one backward (``2L`` small products in sequence)
    instead of four sweeps.

    Parameters
    ----------
    theta : array, shape (n_params,)
    problem : Problem

    Returns
    -------
    callable
        ``matvec(v) -> Hv`` for ``v`` of shape ``(n_params,)``.

    Examples
    --------
    >>> import numpy as np
    >>> p = make_problem(np.eye(2), np.eye(2), np.eye(2)[None])
    >>> th = np.full(n_params(p), 0.1)
    >>> v = np.arange(n_params(p), dtype=float)
    >>> bool(np.allclose(hvp_operator(th, p)(v), hvp(th, v, p)))
    True
    """
    xp = get_namespace(theta)
    T = xp.matrix_transpose
    factors, W = unpack(theta, problem)
    k = factors.shape[1]
    L = factors.shape[0]
    N = problem.n_inputs

    pre, suf = _prefix_suffix(factors, xp)
    J = jacobians_from_factors(factors)
    A = problem.skips + J
    AT = T(A)
    H = forward(J, problem.skips, problem.X)
    HT = T(H[:-1, ...])
    Z = W @ H[-1, ...]
    _, G, P = _loss_value_and_G(Z, problem.Y, problem.loss, xp)
    Delta = _backward(A, H, W, G, xp)
    gJ = Delta @ HT
    sT_g = [gJ if suf[i] is None else T(suf[i]) @ gJ for i in range(k)]
    lam_J, lam_W = problem.lambda_J, problem.lambda_W

    def matvec(v):
        dfactors, dW = unpack(v, problem)
        # Tangents of the partial products: pre[i+1] = B_i pre[i], suf[i-1] = suf[i] B_i.
        dpre = [None] * k
        for i in range(1, k):
            B, dB = factors[:, i - 1, ...], dfactors[:, i - 1, ...]
            term = dB if pre[i - 1] is None else dB @ pre[i - 1]
            dpre[i] = term if dpre[i - 1] is None else term + B @ dpre[i - 1]
        dsuf = [None] * k
        for i in range(k - 2, -1, -1):
            B, dB = factors[:, i + 1, ...], dfactors[:, i + 1, ...]
            term = dB if suf[i + 1] is None else suf[i + 1] @ dB
            dsuf[i] = term if dsuf[i + 1] is None else term + dsuf[i + 1] @ B
        dJ = None
        for i in range(k):
            t = dfactors[:, i, ...]
            t = t if pre[i] is None else t @ pre[i]
            t = t if suf[i] is None else suf[i] @ t
            dJ = t if dJ is None else dJ + t

        # Forward tangent sweep: dH_l = dJ_l H_{l-1} + A_l dH_{l-1}.
        R = dJ @ H[:-1, ...]
        dH = [xp.zeros_like(problem.X)]
        for l in range(L):
            dH.append(R[l, ...] + A[l, ...] @ dH[-1])
        dH = xp.stack(dH)

        dZ = dW @ H[-1, ...] + W @ dH[-1, ...]
        dG = _loss_tangent(dZ, P, problem.loss, N, xp)

        # Backward tangent sweep: dDelta_{l-1} = dJ_l^T Delta_l + A_l^T dDelta_l.
        S = T(dJ) @ Delta
        dDelta = [None] * L
        dD = T(dW) @ G + T(W) @ dG
        for l in range(L - 1, -1, -1):
            dDelta[l] = dD
            if l > 0:
                dD = S[l, ...] + AT[l, ...] @ dD
        dDelta = xp.stack(dDelta)

        dgJ = dDelta @ HT + Delta @ T(dH[:-1, ...])

        # Tangent of dPhi/dB_i = suf[i]^T gJ pre[i]^T.
        out = []
        for i in range(k):
            s, ds, p, dp = suf[i], dsuf[i], pre[i], dpre[i]
            sT_dg = dgJ if s is None else T(s) @ dgJ
            t = sT_dg if p is None else sT_dg @ T(p)
            if ds is not None:
                dsT_g = T(ds) @ gJ
                t = t + (dsT_g if p is None else dsT_g @ T(p))
            if dp is not None:
                t = t + sT_g[i] @ T(dp)
            out.append(t)
        h_factors = xp.stack(out, axis=1) + lam_J * dfactors
        h_W = dG @ T(H[-1, ...]) + G @ T(dH[-1, ...]) + lam_W * dW
        return pack(h_factors, h_W, xp)

    return matvec


def split_depth(factors, depth: int):
    """Factors for ``depth`` blocks whose product equals that of the given ones (identity skips).

    Depth continuation (issue 19): block ``l`` with ``I + J_l`` becomes two blocks with
    ``I + J' = (I + J_l)^{1/2}`` (the principal square root), so the end-to-end map
    ``prod_l (I + J_l)`` is unchanged; ``J'`` is refactored into ``k`` balanced factors
    ``U Σ^{1/k}, Σ^{1/k}, ..., Σ^{1/k} V^T`` from its SVD (every critical point is balanced,
    ``B_{i+1}^T B_{i+1} = B_i B_i^T``). For the T3 solution ``J`` is symmetric with all
    blocks equal, and the split is exact. When ``depth < 2 L`` only the first
    ``depth - L`` blocks are split.

    Parameters
    ----------
    factors : array, shape (L, k, d, d)
    depth : int
        New number of blocks, in ``[L, 2L]``.

    Returns
    -------
    array, shape (depth, k, d, d)

    Examples
    --------
    >>> import numpy as np
    >>> J = np.diag([0.21, 0.0])[None, None]                 # L = 1, k = 1
    >>> S = split_depth(J, 2)
    >>> np.allclose((np.eye(2) + S[1, 0]) @ (np.eye(2) + S[0, 0]), np.eye(2) + J[0, 0])
    True
    """
    xp = get_namespace(factors)
    L, k, d = factors.shape[0], factors.shape[1], factors.shape[-1]
    if not L <= depth <= 2 * L:
        raise ValueError(f"depth must be in [L, 2L] = [{L}, {2 * L}], got {depth}")
    n_split = depth - L
    if n_split == 0:
        return xp.asarray(factors, copy=True)
    J = jacobians_from_factors(factors[:n_split, ...])
    eye = xp.eye(d, dtype=factors.dtype)
    root = _sqrtm_near_identity(eye + J, xp) - eye
    if k == 1:
        half = root[:, None, ...]
    else:
        U, s, Vh = xp.linalg.svd(root, full_matrices=False)
        r = s ** (1.0 / k)
        parts = [r[:, :, None] * Vh]
        for _ in range(k - 2):
            parts.append(r[:, :, None] * eye)
        parts.append(U * r[:, None, :])
        half = xp.stack(parts, axis=1)
    # Block l becomes blocks 2l and 2l+1 (both `half[l]`); the rest follow unsplit.
    doubled = xp.reshape(xp.stack([half, half], axis=1), (2 * n_split, k, d, d))
    return xp.concat([doubled, factors[n_split:, ...]], axis=0)


def _sqrtm_near_identity(A, xp, *, max_iter: int = 60):
    """Principal square roots of a stack of matrices (Denman–Beavers iteration).

    Converges quadratically for matrices with no eigenvalue on the closed negative real
    axis; the blocks of a solved ResNet are near the identity.
    """
    Y = A
    Z = xp.broadcast_to(xp.eye(A.shape[-1], dtype=A.dtype), A.shape)
    for _ in range(max_iter):
        Y_new = 0.5 * (Y + xp.linalg.inv(Z))
        Z = 0.5 * (Z + xp.linalg.inv(Y))
        delta = float(xp.max(xp.abs(Y_new - Y)))
        Y = Y_new
        if delta <= 1e-15 * max(1.0, float(xp.max(xp.abs(Y)))):
            break
    return Y


def valley_retraction(problem: Problem):
    """A curvilinear trial point for trust-region steps that keeps ``E = W P`` on its line.

    The data term sees the classifier only through ``E = W P`` with ``P = A_L ... A_1`` the
    end-to-end map, and at depth the minimiser lies along the curved valley ``W P ≈ const``
    (P grows while W shrinks). A straight step ``(dB, dW)`` leaves that valley at second
    order, which limits the trust region to short steps. This retraction moves the factors
    by ``dB`` but sets the classifier to ``W' = (E + dE) P'^{-1}`` with
    ``dE = dW P + W dP`` (the first-order change of ``E``) and ``P'`` the end-to-end map
    after the step. It agrees with ``theta + p`` to first order. When ``P'`` is singular
    or the result is not finite it returns ``theta + p``.

    Parameters
    ----------
    problem : Problem

    Returns
    -------
    callable
        ``retract(theta, p) -> theta_new``.
    """

    def retract(theta, p):
        xp = get_namespace(theta, p)
        factors, W = unpack(theta, problem)
        dfactors, dW = unpack(p, problem)
        k = factors.shape[1]
        pre, suf = _prefix_suffix(factors, xp)
        dJ = None
        for i in range(k):
            t = dfactors[:, i, ...]
            t = t if pre[i] is None else t @ pre[i]
            t = t if suf[i] is None else suf[i] @ t
            dJ = t if dJ is None else dJ + t
        A = problem.skips + jacobians_from_factors(factors)
        d = problem.width
        Q = xp.eye(d, dtype=theta.dtype)
        dQ = xp.zeros_like(Q)
        for l in range(A.shape[0]):
            dQ = dJ[l, ...] @ Q + A[l, ...] @ dQ
            Q = A[l, ...] @ Q
        E_new = (W + dW) @ Q + W @ dQ
        new_factors = factors + dfactors
        A_new = problem.skips + jacobians_from_factors(new_factors)
        Q_new = xp.eye(d, dtype=theta.dtype)
        for l in range(A_new.shape[0]):
            Q_new = A_new[l, ...] @ Q_new
        fallback = theta + p
        try:
            W_new = xp.matrix_transpose(xp.linalg.solve(xp.matrix_transpose(Q_new), xp.matrix_transpose(E_new)))
        except Exception:  # noqa: BLE001  (singular end-to-end map: take the straight step)
            return fallback
        if not bool(xp.all(xp.isfinite(W_new))):
            return fallback
        return pack(new_factors, W_new, xp)

    return retract


def gauss_newton_preconditioner(theta, problem: Problem):
    """``v -> M^{-1} v`` for ``M = D + J_Z^T S J_Z``, the weight decay plus the Gauss–Newton term.

    A preconditioner for the trust-region CG (issue 19). ``Z = W P X`` (shape ``(C, N)``)
    is linear in each factor, and ``dZ_{cn}/dB_{l,i} = u_{l,i,c} h_{l,i,n}^T`` with
    ``u_{l,i} = suf_i^T A_{>l}^T W^T`` (``d x C``) and ``h_{l,i} = pre_i H_{l-1}``
    (``d x N``), so the Jacobian ``J_Z`` of the outputs has rank at most ``C N`` and its
    Gram matrix ``K = J_Z D^{-1} J_Z^T`` costs one backward sweep with ``C`` columns and
    one product of ``(Lk, C^2)`` by ``(Lk, N^2)``. ``D`` is ``lambda_J`` on the factors and
    ``lambda_W`` on ``W``; ``S`` is the Hessian of the mean loss in ``Z`` (``I/N`` for MSE,
    the per-sample softmax curvature for cross-entropy). ``M`` is symmetric positive
    definite and carries the stiff directions that grow with depth (the Gauss–Newton
    part has eigenvalues growing like ``L`` beside a bulk at ``lambda_J``). Woodbury:
    ``M^{-1} = D^{-1} - D^{-1} J_Z^T (I + S K)^{-1} S J_Z D^{-1}``; one application is
    a few batched products (no sequential sweep), cheaper than a Hessian product.

    Parameters
    ----------
    theta : array, shape (n_params,)
    problem : Problem

    Returns
    -------
    callable
        ``solve(v) -> M^{-1} v`` for ``v`` of shape ``(n_params,)``.

    Examples
    --------
    >>> import numpy as np
    >>> p = make_problem(np.eye(2), np.eye(2), np.eye(2)[None])
    >>> th = np.full(n_params(p), 0.1)
    >>> solve = gauss_newton_preconditioner(th, p)
    >>> v = np.arange(n_params(p), dtype=float)
    >>> bool(np.all(np.isfinite(solve(v))))
    True
    """
    xp = get_namespace(theta)
    T = xp.matrix_transpose
    factors, W = unpack(theta, problem)
    L, k = factors.shape[0], factors.shape[1]
    C, N = problem.classes, problem.n_inputs
    pre, suf = _prefix_suffix(factors, xp)
    J = jacobians_from_factors(factors)
    A = problem.skips + J
    H = forward(J, problem.skips, problem.X)
    Hl = H[:-1, ...]
    Ul = _backward(A, H, W, xp.eye(C, dtype=theta.dtype), xp)  # (L, d, C)
    Us = xp.stack([Ul if suf[i] is None else T(suf[i]) @ Ul for i in range(k)], axis=1)  # (L, k, d, C)
    Hs = xp.stack([Hl if pre[i] is None else pre[i] @ Hl for i in range(k)], axis=1)  # (L, k, d, N)
    HL = H[-1, ...]
    lam_J, lam_W = problem.lambda_J, problem.lambda_W
    UU = xp.reshape(T(Us) @ Us, (L * k, C * C))
    HH = xp.reshape(T(Hs) @ Hs, (L * k, N * N))
    K = xp.reshape(T(UU) @ HH, (C, C, N, N)) / lam_J
    K = xp.reshape(xp.permute_dims(K, (0, 2, 1, 3)), (C * N, C * N))
    eyeC = xp.eye(C, dtype=theta.dtype)
    K = K + xp.reshape(eyeC[:, None, :, None] * (T(HL) @ HL)[None, :, None, :], (C * N, C * N)) / lam_W
    if problem.loss == "mse":
        S = xp.eye(C * N, dtype=theta.dtype) / N
    else:
        Zout = W @ HL
        _, _, P = _loss_value_and_G(Zout, problem.Y, problem.loss, xp)
        eyeN = xp.eye(N, dtype=theta.dtype)
        # S[(c,n),(c',n')] = delta_nn' (p_cn delta_cc' - p_cn p_c'n) / N
        S4 = (eyeC[:, None, :, None] * P[:, :, None, None] - P[:, :, None, None] * P[None, None, :, :]) * eyeN[None, :, None, :]
        S = xp.reshape(S4, (C * N, C * N)) / N
    core = xp.linalg.solve(xp.eye(C * N, dtype=theta.dtype) + S @ K, S)  # (I + S K)^{-1} S

    def solve(v):
        dfactors, dW = unpack(v, problem)
        a, aW = dfactors / lam_J, dW / lam_W
        # J_Z a: sum over (l, i) of u^T a h, plus aW H_L.
        Jz = xp.sum(xp.reshape(T(Us) @ a @ Hs, (L * k, C, N)), axis=0) + aW @ HL
        w = xp.reshape(core @ xp.reshape(Jz, (C * N,)), (C, N))
        return pack(a - (Us @ w @ T(Hs)) / lam_J, aW - (w @ T(HL)) / lam_W, xp)

    return solve
