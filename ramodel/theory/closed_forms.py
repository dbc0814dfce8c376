"""Closed forms and measures of the theorems T1-T6 on dense arrays (MODEL.md §3)."""

from __future__ import annotations

from ..backend import get_namespace


def _svdvals(X, xp):
    """Singular values, descending, through whichever spelling ``xp`` offers."""
    svdvals = getattr(xp.linalg, "svdvals", None)
    return svdvals(X) if svdvals is not None else xp.linalg.svd(X, compute_uv=False)


def _fro(X, xp):
    return xp.sqrt(xp.sum(X * X, axis=(-2, -1)))


def _skips_like(J, skips, xp):
    """Skips broadcastable against ``J (L, [N,] d, d)``; identity when None."""
    L, d = J.shape[0], J.shape[-1]
    if skips is None:
        M = xp.eye(d, dtype=J.dtype)
        M = xp.broadcast_to(M, (L, d, d))
    else:
        M = skips
        if M.ndim == 2:
            M = xp.broadcast_to(M, (L, d, d))
        if M.shape != (L, d, d):
            raise ValueError(f"skips must have shape ({L}, {d}, {d}) or ({d}, {d}), got {tuple(skips.shape)}")
    if J.ndim == 4:
        M = M[:, None, ...]
    return M


def asymmetry(X):
    """``asym(X) = |X - X^T|_F / (2 |X|_F)``, in [0, 1]: 0 for symmetric X.

    Parameters
    ----------
    X : array, shape (..., d, d)

    Returns
    -------
    array, shape (...)

    Examples
    --------
    >>> import numpy as np
    >>> float(asymmetry(np.array([[1.0, 2.0], [2.0, 3.0]])))
    0.0
    >>> float(asymmetry(np.array([[0.0, 1.0], [-1.0, 0.0]])))
    1.0
    """
    xp = get_namespace(X)
    return _fro(X - xp.matrix_transpose(X), xp) / (2.0 * _fro(X, xp))


def chain_residuals(J, skips=None):
    """T2: ``|J_l A_l^T - A_{l+1}^T J_{l+1}|_F / (|J_l A_l^T|_F + |A_{l+1}^T J_{l+1}|_F)``.

    Parameters
    ----------
    J : array, shape (L, d, d) or (L, N, d, d)
    skips : array, shape (L, d, d) or (d, d), optional
        ``M_l``; identity when None.

    Returns
    -------
    array, shape (L-1,) or (L-1, N)
        One residual per consecutive pair; 0 where the chain identity holds.
    """
    xp = get_namespace(J, skips)
    T = xp.matrix_transpose
    A = _skips_like(J, skips, xp) + J
    left = J[:-1, ...] @ T(A[:-1, ...])
    right = T(A[1:, ...]) @ J[1:, ...]
    return _fro(left - right, xp) / (_fro(left, xp) + _fro(right, xp))


def classifier_residual(J_L, W, weight_decay, skip_L=None):
    """T2's last identity ``lambda_W W^T W = lambda_J J_L A_L^T``, as a relative residual.

    Parameters
    ----------
    J_L : array, shape (d, d) or (N, d, d)
    W : array, shape (C, d)
    weight_decay : (float, float)
        ``(lambda_J, lambda_W)``.
    skip_L : array, shape (d, d), optional
        ``M_L``; identity when None.

    Returns
    -------
    float, or array of shape (N,) for per-input Jacobians
    """
    xp = get_namespace(J_L, W, skip_L)
    lambda_J, lambda_W = weight_decay
    M = xp.eye(J_L.shape[-1], dtype=J_L.dtype) if skip_L is None else skip_L
    lhs = lambda_W * (xp.matrix_transpose(W) @ W)
    rhs = lambda_J * (J_L @ xp.matrix_transpose(M + J_L))
    out = _fro(lhs - rhs, xp) / (_fro(lhs, xp) + _fro(rhs, xp))
    return float(out) if J_L.ndim == 2 else out


def depth_spread(J):
    """T3: ``mean_l |J_l - Jbar|_F / |Jbar|_F`` with ``Jbar`` the mean over layers.

    Parameters
    ----------
    J : array, shape (L, d, d) or (L, N, d, d)

    Returns
    -------
    array, shape () or (N,)
    """
    xp = get_namespace(J)
    Jbar = xp.mean(J, axis=0)
    return xp.mean(_fro(J - Jbar, xp), axis=0) / _fro(Jbar, xp)


def psd_defect(J):
    """T3: ``max(0, -lambda_min((J + J^T)/2)) / sigma_1(J)``; 0 for a PSD Jacobian.

    Parameters
    ----------
    J : array, shape (..., d, d)

    Returns
    -------
    array, shape (...)
    """
    xp = get_namespace(J)
    sym = 0.5 * (J + xp.matrix_transpose(J))
    lam_min = xp.linalg.eigvalsh(sym)[..., 0]
    sigma1 = _svdvals(J, xp)[..., 0]
    return xp.maximum(-lam_min, 0.0) / sigma1


def closed_form_jacobian(W, weight_decay):
    """T3's optimum for identity skips: ``J* = (-I + (I + 4 (lambda_W/lambda_J) W^T W)^{1/2}) / 2``.

    Evaluated through the eigendecomposition of ``W^T W`` with the cancellation-free
    form ``t = 2 kappa mu / (1 + sqrt(1 + 4 kappa mu))`` of the root of ``t + t^2 = kappa mu``.

    Parameters
    ----------
    W : array, shape (C, d)
    weight_decay : (float, float)
        ``(lambda_J, lambda_W)``.

    Returns
    -------
    J_star : array, shape (d, d), symmetric PSD with rank <= C

    Examples
    --------
    >>> import numpy as np
    >>> J = closed_form_jacobian(np.array([[1.0, 0.0]]), (1.0, 2.0))
    >>> bool(np.allclose(J + J @ J, 2.0 * np.diag([1.0, 0.0])))
    True
    """
    xp = get_namespace(W)
    lambda_J, lambda_W = weight_decay
    kappa = lambda_W / lambda_J
    mu, Q = xp.linalg.eigh(W.T @ W)
    mu = xp.maximum(mu, 0.0)
    t = 2.0 * kappa * mu / (1.0 + xp.sqrt(1.0 + 4.0 * kappa * mu))
    return (Q * t) @ Q.T


def closed_form_error(J_L, W, weight_decay):
    """T3: ``|J_L - J*|_F / |J*|_F`` (needs ``W`` and the weight decays).

    Parameters
    ----------
    J_L : array, shape (d, d) or (N, d, d)
    W : array, shape (C, d)
    weight_decay : (float, float)

    Returns
    -------
    float, or array of shape (N,) for per-input Jacobians
    """
    xp = get_namespace(J_L, W)
    J_star = closed_form_jacobian(W, weight_decay)
    out = _fro(J_L - J_star, xp) / _fro(J_star, xp)
    return float(out) if J_L.ndim == 2 else out


def depth_singular_values(p, depth):
    """T4: ``sigma_i(J) = p_i^{1/L} - 1`` for the end-to-end gains ``p_i``.

    Computed as ``expm1(log(p)/L)`` to keep digits when ``L`` is large.

    Examples
    --------
    >>> import numpy as np
    >>> depth_singular_values(np.array([4.0]), 2).tolist()
    [1.0]
    """
    xp = get_namespace(p)
    return xp.expm1(xp.log(p) / depth)


def gain_share_error(J, classes, skips=None):
    """T4: ``max_{i<=C} |sigma_i(J_l) - (p_i^{1/L} - 1)| / (p_1^{1/L} - 1)`` per layer.

    ``p_i = sigma_i(A_L ... A_1)``. Zero for identity skips at a critical point.

    Parameters
    ----------
    J : array, shape (L, d, d) or (L, N, d, d)
    classes : int
    skips : array, optional

    Returns
    -------
    array, shape (L,) or (L, N)
    """
    xp = get_namespace(J, skips)
    L = J.shape[0]
    A = _skips_like(J, skips, xp) + J
    P = A[0, ...]
    for l in range(1, L):
        P = A[l, ...] @ P
    p = _svdvals(P, xp)[..., :classes]
    predicted = depth_singular_values(p, L)
    sigma = _svdvals(J, xp)[..., :classes]
    return xp.max(xp.abs(sigma - predicted), axis=-1) / predicted[..., 0]


def skip_asymmetry(J_L, skip_L):
    """T6 (and T2 for any skip): ``asym(J_L M_L^T)``; 0 at a critical point."""
    xp = get_namespace(J_L, skip_L)
    return asymmetry(J_L @ xp.matrix_transpose(skip_L))


def linearity(representations, J, skips=None):
    """T5's premise: ``cos(h_l - M_l h_{l-1}, J_l h_{l-1})`` per layer and input.

    Exactly 1 for the linear model and for bias-free ReLU branches.

    Parameters
    ----------
    representations : array, shape (L+1, N, d)
    J : array, shape (L, d, d) or (L, N, d, d)
    skips : array, optional

    Returns
    -------
    array, shape (L, N)
    """
    xp = get_namespace(representations, J, skips)
    M = _skips_like(J, skips, xp)
    h_prev = representations[:-1, ...]
    if J.ndim == 3:
        branch = h_prev @ xp.matrix_transpose(J)
        skip_part = h_prev @ xp.matrix_transpose(M)
    else:
        branch = (J @ h_prev[..., None])[..., 0]
        skip_part = (M @ h_prev[..., None])[..., 0]
    step = representations[1:, ...] - skip_part
    num = xp.sum(step * branch, axis=-1)
    den = xp.sqrt(xp.sum(step * step, axis=-1) * xp.sum(branch * branch, axis=-1))
    return num / den


def rank_one_trajectory(x, u, v, sigma, depth):
    """T5: ``h_l = (I + sigma u v^T)^l x`` in closed form, for ``l = 0..L``.

    ``(I + sigma u v^T)^l = I + ((1 + sigma c)^l - 1)/c * u v^T`` with ``c = v^T u``
    (and ``l sigma u v^T`` when ``c = 0``).

    Parameters
    ----------
    x, u, v : array, shape (d,)
    sigma : float
    depth : int

    Returns
    -------
    H : array, shape (L+1, d)

    Examples
    --------
    >>> import numpy as np
    >>> u = np.array([1.0, 0.0])
    >>> rank_one_trajectory(np.array([1.0, 1.0]), u, u, 1.0, 2)[:, 0].tolist()
    [1.0, 2.0, 4.0]
    """
    xp = get_namespace(x, u, v)
    c = float(xp.sum(v * u))
    ls = xp.arange(depth + 1, dtype=x.dtype)
    if c == 0.0:
        gain = sigma * ls
    else:
        gain = xp.expm1(ls * xp.log1p(xp.asarray(sigma * c, dtype=x.dtype))) / c
    return x + gain[:, None] * float(xp.sum(v * x)) * u


def rank_bound(J, grad_norm, lambda_J, classes):
    """T1 made quantitative: ``sigma_{C+1}(J_l) <= |grad Phi| / lambda_J`` for k = 1.

    From ``lambda_J J_l + A_{>l}^T W^T G H_{l-1}^T = grad_{J_l} Phi``, where the second
    term has rank <= C (Weyl's inequality for singular values).

    Returns
    -------
    sigma_next : array, shape (L,)
        ``sigma_{C+1}(J_l)`` (0 when ``d == C``).
    bound : float
        ``grad_norm / lambda_J``.
    """
    xp = get_namespace(J)
    s = _svdvals(J, xp)
    sigma_next = s[..., classes] if s.shape[-1] > classes else xp.zeros(s.shape[:-1], dtype=s.dtype)
    return sigma_next, grad_norm / lambda_J
