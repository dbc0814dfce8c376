"""The model's theorems as closed forms and as measurable predictions.

Closed forms (MODEL.md §3): :func:`closed_form_jacobian` (T3), :func:`depth_singular_values`
(T4), :func:`rank_one_trajectory` (T5). Measures (METRICS.md, "Measuring the theorems"):
each takes a known value exactly where the theorem's conclusion holds (0 for residuals
and asymmetries, 1 for linearity), so it can be read on a simulation, on a trained
network and on a random baseline alike. :func:`check` computes all of them on a
``Simulation``, a ``JacobianSet`` or plain arrays, with the chance level of each, and
returns a :class:`TheoryReport`.

Layout: Jacobians are ``(L, d, d)`` or per input ``(L, N, d, d)``; skips ``(L, d, d)``,
``(d, d)`` or None for identity skips. Every measure is batched over the input axis and
returns one value per layer (and per input when there is one). :func:`check` also takes
top-k factors ``U, S, V`` and computes every measure from them without forming
``d x d`` matrices (see its Notes for when that is exact).

Design decisions of :func:`check` (details in its docstring):

1. The chance baseline rotates ``J_l -> Q1_l J_l Q2_l^T`` with Haar ``Q1_l, Q2_l`` drawn per
   layer and shared by all inputs, keeping skips, classifier and representations.
2. Summaries are over every (layer, input) sample: median, spread, per-layer medians,
   and the worst sample; undefined samples (0/0) are excluded and counted.
3. Predictions are those of the k = 1 UJM at a critical point; a measure whose theorem
   says nothing for the model (T3 with non-identity skips) has ``predicted = None``.
"""

from __future__ import annotations

import html
import json
import math
import os
import pathlib
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from ._validation import as_generator, check_int, check_positive_float
from .backend import asarray, get_namespace, namespace_name, to_numpy
from ._io import atomic_write_text
from ._source import ACTIVE_FLOOR as _ACTIVE_FLOOR
from ._source import ORDER_FACTOR, ORTHONORMAL_FACTOR, RANK_TAU, as_source, get_field, is_simulation
from ._source import THEOREM_TOL as _THEOREM_TOL
from .metrics import Spread
from .spectra import top_singular

__all__ = [
    "asymmetry",
    "chain_residuals",
    "classifier_residual",
    "depth_spread",
    "psd_defect",
    "closed_form_jacobian",
    "closed_form_error",
    "depth_singular_values",
    "gain_share_error",
    "skip_asymmetry",
    "linearity",
    "rank_one_trajectory",
    "rank_bound",
    "check",
    "TheoryReport",
    "TheoryMeasure",
    "DEFAULT_TAU",
    "MAX_CHANCE_DRAWS",
    "THEOREMS",
]


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


# =====================================================================================
# check(): every measure of METRICS.md "Measuring the theorems", with its chance level
# =====================================================================================

#: Numerical-rank threshold (METRICS.md RA3 default), also the completeness rule of factors.
DEFAULT_TAU = RANK_TAU
#: Factor sets up to this width are rotated by full Haar matrices per layer (shared by
#: every input, as for dense sets); wider ones by independent Haar frames per input.
_SHARED_ROTATION_MAX_WIDTH = 512
# Orthonormality and ordering tolerances of stored factors (as in JacobianSet).
_ORTHONORMAL_FACTOR = ORTHONORMAL_FACTOR
_ORDER_FACTOR = ORDER_FACTOR


def _mT(x, xp):
    return xp.matrix_transpose(x)


def _lr_fro(A, B, xp):
    """``|A B^T|_F`` for batched ``A (..., d, r)``, ``B (..., d, s)`` without forming d x d.

    With thin QRs ``A = Z_A R_A`` and ``B = Z_B R_B``, ``|A B^T|_F = |R_A R_B^T|_F`` since
    ``Z_A``, ``Z_B`` have orthonormal columns. This keeps relative accuracy where
    ``A B^T`` nearly vanishes; the Gram form ``tr(A^T A B^T B)`` would lose half the digits.
    """
    RA = xp.linalg.qr(A)[1]
    RB = xp.linalg.qr(B)[1]
    return _fro(RA @ _mT(RB, xp), xp)


def _nan_divide(num, den, xp):
    """``num / den`` with NaN where ``den == 0`` (an undefined measure, later excluded)."""
    ok = den > 0
    return xp.where(ok, num / xp.where(ok, den, xp.ones_like(den)), xp.full_like(num, float("nan")))


def _closed_form_factors(W, weight_decay, xp):
    """``J* = F diag(t) F^T`` with ``F (d, C)`` orthonormal: T3's closed form without d x d.

    From ``W W^T = E diag(mu) E^T`` (C x C): ``W^T W = F diag(mu) F^T`` with
    ``F = W^T E diag(mu)^{-1/2}``. Directions with ``mu <= C eps mu_max`` are dropped: their
    share of ``J*`` is ``t(mu) <= kappa mu``, below rounding.
    """
    lambda_J, lambda_W = weight_decay
    kappa = lambda_W / lambda_J
    mu, E = xp.linalg.eigh(W @ _mT(W, xp))
    eps = float(xp.finfo(W.dtype).eps)
    keep = mu > W.shape[0] * eps * xp.max(mu)
    root = xp.sqrt(xp.where(keep, mu, xp.ones_like(mu)))
    F = (_mT(W, xp) @ E) / root
    F = xp.where(keep, F, xp.zeros_like(F))
    mu = xp.where(keep, mu, xp.zeros_like(mu))
    t = 2.0 * kappa * mu / (1.0 + xp.sqrt(1.0 + 4.0 * kappa * mu))
    return F, t


# ------------------------------------------------------------------ Jacobian layouts
class _Dense:
    """Dense Jacobians ``J (L, N, d, d)`` (``N = 1`` when they do not depend on the input)."""

    layout = "dense"

    def __init__(self, J, shared, xp):
        self.J, self.shared, self.xp = J, shared, xp
        # Measures that do not change when J is scaled (asymmetry, spread, PSD defect,
        # spectrum ratios, T5, T6) use Js = J / 2**e, so Jacobians of size 1e300 give
        # them without overflow; the others mix J with the skips and use J itself.
        self.scale = _power_of_two_scale(J, xp)
        self.Js = J if self.scale == 1.0 else J * (1.0 / self.scale)

    @property
    def L(self):
        return int(self.J.shape[0])

    def rotate(self, Q1, Q2, rng):
        xp = self.xp
        return _Dense(Q1[:, None, ...] @ self.J @ _mT(Q2, xp)[:, None, ...], self.shared, xp)

    def top(self, k):
        U, S, V = top_singular(self.Js, k)
        return U, S * self.scale, V

    def spectrum(self):
        """Singular values divided by ``self.scale`` (only ratios of them are used)."""
        return _svdvals(self.Js, self.xp)

    def asymmetry(self):
        return asymmetry(self.Js)

    def chain(self, M):
        return chain_residuals(self.J, M)

    def depth_spread(self):
        return depth_spread(self.Js)[None, ...]

    def psd_defect(self):
        return psd_defect(self.Js)

    def closed_form_error(self, W, wd):
        return closed_form_error(self.J[-1, ...], W, wd)[None, ...]

    def classifier_residual(self, W, wd, M):
        return classifier_residual(self.J[-1, ...], W, wd, None if M is None else M[-1, ...])[None, ...]

    def gain_share(self, classes, M):
        return gain_share_error(self.J, classes, M)

    def linearity(self, R, M):
        return linearity(R, self.Js[:, 0, ...] if self.shared else self.Js, M)

    def skip_asymmetry(self, M):
        J_L = self.Js[-1, ...]
        return asymmetry(J_L if M is None else J_L @ _mT(M[-1, ...], self.xp))[None, ...]


class _Factors:
    """Top-k factors ``J = U diag(S) V^T``, every measure from ``(d, k)`` blocks.

    Each measure is a Frobenius norm of a sum of low-rank terms (:func:`_lr_fro`), an
    eigenvalue problem of size ``2k`` (PSD defect) or of size ``<= 2Lk`` (T4's
    end-to-end gains), so nothing of size ``d x d`` is formed except the skips
    themselves. The identities used: ``J J^T = P P^T`` and ``J^T J = V S^2 V^T`` with
    ``P = U S`` (orthonormal ``U``, ``V``).
    """

    layout = "factors"

    def __init__(self, U, S, V, shared, xp):
        self.U, self.S, self.V, self.shared, self.xp = U, S, V, shared, xp
        self.P = U * S[..., None, :]

    @property
    def L(self):
        return int(self.U.shape[0])

    def rotate(self, Q1, Q2, rng):
        xp = self.xp
        if Q1 is not None:
            return _Factors(Q1[:, None, ...] @ self.U, self.S, Q2[:, None, ...] @ self.V, self.shared, xp)
        # Wide factors: Q U for a Haar Q is a Haar frame, independent per input here.
        U = asarray(_haar(rng, tuple(self.U.shape[:-2]), self.U.shape[-2], self.U.shape[-1]), xp=xp)
        V = asarray(_haar(rng, tuple(self.V.shape[:-2]), self.V.shape[-2], self.V.shape[-1]), xp=xp)
        return _Factors(xp.astype(U, self.U.dtype), self.S, xp.astype(V, self.V.dtype), self.shared, xp)

    def top(self, k):
        return self.U[..., :k], self.S[..., :k], self.V[..., :k]

    def spectrum(self):
        return self.S

    def _fro(self):
        return self.xp.sqrt(self.xp.sum(self.S * self.S, axis=-1))

    def _MV(self, M):
        return self.V if M is None else M[:, None, ...] @ self.V

    def asymmetry(self):
        xp, P, V = self.xp, self.P, self.V
        skew = _lr_fro(xp.concat([P, -V], axis=-1), xp.concat([V, P], axis=-1), xp)
        return _nan_divide(skew, 2.0 * self._fro(), xp)

    def chain(self, M):
        xp, P, V, S = self.xp, self.P, self.V, self.S
        Bl = self._MV(M) + P  # J_l A_l^T = P_l Bl_l^T
        MtP = P if M is None else _mT(M, xp)[:, None, ...] @ P
        Ar = MtP + V * (S * S)[..., None, :]  # A_l^T J_l = Ar_l V_l^T
        left = _lr_fro(P[:-1, ...], Bl[:-1, ...], xp)
        right = _lr_fro(Ar[1:, ...], V[1:, ...], xp)
        diff = _lr_fro(
            xp.concat([P[:-1, ...], -Ar[1:, ...]], axis=-1), xp.concat([Bl[:-1, ...], V[1:, ...]], axis=-1), xp
        )
        return _nan_divide(diff, left + right, xp)

    def depth_spread(self):
        xp, L = self.xp, self.L
        k = self.P.shape[-1]
        Pc = xp.concat([self.P[l, ...] for l in range(L)], axis=-1)  # (N, d, Lk)
        Vc = xp.concat([self.V[l, ...] for l in range(L)], axis=-1)
        mean_norm = _lr_fro(Pc / L, Vc, xp)
        # J_l - Jbar = sum_m (delta_lm - 1/L) P_m V_m^T: scale the blocks of Pc.
        coef = np.full((L, L * k), -1.0 / L)
        for l in range(L):
            coef[l, l * k : (l + 1) * k] += 1.0
        coef = xp.astype(asarray(coef, xp=xp), Pc.dtype)
        dev = _lr_fro(Pc[None, ...] * coef[:, None, None, :], Vc[None, ...], xp)  # (L, N)
        return _nan_divide(xp.mean(dev, axis=0), mean_norm, xp)[None, ...]

    def psd_defect(self):
        xp, P, V = self.xp, self.P, self.V
        k, d = P.shape[-1], P.shape[-2]
        R = xp.linalg.qr(xp.concat([P, V], axis=-1))[1]  # sym(J) = Z (R C R^T) Z^T, C = [[0, I], [I, 0]]/2
        RC = 0.5 * xp.concat([R[..., k:], R[..., :k]], axis=-1)
        H = RC @ _mT(R, xp)
        lam = xp.linalg.eigvalsh(0.5 * (H + _mT(H, xp)))[..., 0]
        if 2 * k < d:  # sym(J) vanishes on the complement of span[P, V]
            lam = xp.minimum(lam, xp.zeros_like(lam))
        return _nan_divide(xp.maximum(-lam, xp.zeros_like(lam)), self.S[..., 0], xp)

    def closed_form_error(self, W, wd):
        xp = self.xp
        F, t = _closed_form_factors(W, wd, xp)
        PL, VL = self.P[-1, ...], self.V[-1, ...]
        N = PL.shape[0]
        Ft = xp.broadcast_to((F * t)[None, ...], (N,) + tuple(F.shape))
        Fb = xp.broadcast_to(F[None, ...], (N,) + tuple(F.shape))
        diff = _lr_fro(xp.concat([PL, -Ft], axis=-1), xp.concat([VL, Fb], axis=-1), xp)
        return _nan_divide(diff, _lr_fro(Ft, Fb, xp), xp)[None, ...]

    def classifier_residual(self, W, wd, M):
        xp = self.xp
        lambda_J, lambda_W = wd
        PL = self.P[-1, ...]
        BL = (self._MV(M) + self.P)[-1, ...]
        N = PL.shape[0]
        Wt = xp.broadcast_to(_mT(W, xp)[None, ...], (N,) + (W.shape[1], W.shape[0]))
        lhs = _lr_fro(lambda_W * Wt, Wt, xp)
        rhs = _lr_fro(lambda_J * PL, BL, xp)
        diff = _lr_fro(xp.concat([lambda_W * Wt, -lambda_J * PL], axis=-1), xp.concat([Wt, BL], axis=-1), xp)
        return _nan_divide(diff, lhs + rhs, xp)[None, ...]

    def gain_share(self, classes, M):
        if M is not None:  # _plan never calls this with non-identity skips
            raise ValueError("gain_share_error from factors needs identity skips")
        xp, L = self.xp, self.L
        d = self.P.shape[-2]
        # A_l ... A_1 = I + Px Qx^T, updated by X <- X + J_l (I + X).
        Px, Qx = self.P[0, ...], self.V[0, ...]
        for l in range(1, L):
            Pl, Vl = self.P[l, ...], self.V[l, ...]
            Qn = Vl + Qx @ (_mT(Px, xp) @ Vl)
            Px, Qx = xp.concat([Px, Pl], axis=-1), xp.concat([Qx, Qn], axis=-1)
        Z = xp.linalg.qr(xp.concat([Px, Qx], axis=-1))[0]  # I + PQ^T is I on span(Z)^perp
        r = Z.shape[-1]
        T = xp.eye(r, dtype=Z.dtype) + (_mT(Z, xp) @ Px) @ _mT(_mT(Z, xp) @ Qx, xp)
        p = _svdvals(T, xp)
        if r < d:
            p = xp.concat([p, xp.ones(tuple(p.shape[:-1]) + (min(classes, d - r),), dtype=p.dtype)], axis=-1)
            p = -xp.sort(-p, axis=-1)
        C = min(classes, d)
        predicted = depth_singular_values(p[..., :C], L)
        sigma = _pad(self.S, C, xp)[..., :C]
        err = xp.max(xp.abs(sigma - predicted[None, ...]), axis=-1)
        return _nan_divide(err, xp.broadcast_to(predicted[None, ..., 0], err.shape), xp)

    def linearity(self, R, M):
        xp = self.xp
        h_prev = R[:-1, ...]
        coeff = (h_prev[..., None, :] @ self.V) * self.S[..., None, :]  # (L, N, 1, k)
        branch = (coeff @ _mT(self.U, xp))[..., 0, :]
        skip_part = h_prev if M is None else h_prev @ _mT(M, xp)
        step = R[1:, ...] - skip_part
        num = xp.sum(step * branch, axis=-1)
        den = xp.sqrt(xp.sum(step * step, axis=-1) * xp.sum(branch * branch, axis=-1))
        return _nan_divide(num, den, xp)

    def skip_asymmetry(self, M):
        xp = self.xp
        PL, BL = self.P[-1, ...], self._MV(M)[-1, ...]
        skew = _lr_fro(xp.concat([PL, -BL], axis=-1), xp.concat([BL, PL], axis=-1), xp)
        return _nan_divide(skew, 2.0 * _lr_fro(PL, BL, xp), xp)[None, ...]


def _pad(S, n, xp):
    """Singular values padded with zeros to at least ``n`` (complete factors: the rest are ~0)."""
    k = S.shape[-1]
    if k >= n:
        return S
    return xp.concat([S, xp.zeros(tuple(S.shape[:-1]) + (n - k,), dtype=S.dtype)], axis=-1)


def _haar(rng, batch, d, k=None):
    """Haar-distributed ``(d, k)`` frames (``k = d``: orthogonal matrices), shape ``batch + (d, k)``."""
    G = rng.standard_normal(tuple(batch) + (d, d if k is None else k))
    Q, R = np.linalg.qr(G)
    # Without the sign fix LAPACK's convention for R biases Q away from Haar.
    s = np.sign(np.diagonal(R, axis1=-2, axis2=-1))
    s = np.where(s == 0, 1.0, s)
    return Q * s[..., None, :]


# ------------------------------------------------------------------------- results
def _json_float(v):
    if v is None:
        return None
    v = float(v)
    if math.isnan(v):
        return None
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v


def _json_array(a):
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 0:
        return _json_float(a)
    return [_json_array(x) for x in a]


def _frozen(a):
    out = np.array(a, dtype=np.float64, copy=True)
    out.setflags(write=False)
    return out


@dataclass(frozen=True, eq=False)
class TheoryMeasure:
    """One theorem measure of METRICS.md ("Measuring the theorems"), with its chance level.

    Samples are one per row (a layer, a pair of layers, or the whole depth) and input.

    Attributes
    ----------
    name : str
        e.g. ``"asymmetry"``.
    theorem : str
        ``"T1"`` .. ``"T6"``, or ``"fit"`` for the comparison with the fitted model.
    formula : str
        The definition, in METRICS.md notation.
    value : float
        Median over every (row, input) sample.
    spread : Spread
        Distribution of all samples: over inputs and over layers.
    worst : float
        The sample farthest from ``predicted`` (the largest when ``relation`` is ``"<="``
        or nothing is predicted).
    per_layer : ndarray, shape (rows,)
        Median over inputs of each row (NaN where every input is undefined).
    per_input : ndarray, shape (n,)
        Median over rows of each input (``n = 1`` for input-independent Jacobians).
    rows : tuple of str
        What each row is: ``"3"`` (layer 3), ``"3,4"`` (layers 3 and 4), ``"1..L"``.
    samples : ndarray, shape (rows, n)
        Every sample, NaN where undefined (a zero Jacobian, a zero vector).
    chance : float or None
        Mean over the baseline draws of ``value`` with every ``J_l`` replaced by
        ``Q1 J_l Q2^T`` (see :func:`check`); None when not drawn.
    chance_std : float or None
        Standard deviation of that value over the draws.
    predicted : float or None
        The value where the theorem's conclusion holds; None when the theorem says nothing
        for this model (e.g. T3 with non-identity skips).
    relation : {"=", "<="}
        How a sample compares with ``predicted`` where the theorem holds.
    condition : str
        The hypotheses under which ``predicted`` holds.
    excluded : int
        Undefined samples (NaN) left out of every statistic.
    note : str
        Provenance that changes how to read the number (e.g. "from factors").
    """

    name: str
    theorem: str
    formula: str
    value: float
    spread: Spread
    worst: float
    per_layer: np.ndarray
    per_input: np.ndarray
    rows: tuple
    samples: np.ndarray
    chance: float | None
    chance_std: float | None
    predicted: float | None
    relation: str
    condition: str
    excluded: int = 0
    note: str = ""

    @property
    def deviation(self) -> float | None:
        """Largest distance of a sample from ``predicted`` (0 when every sample satisfies ``relation``)."""
        if self.predicted is None:
            return None
        s = self.samples[~np.isnan(self.samples)]
        if self.relation == "<=":
            return float(max(0.0, np.max(s) - self.predicted))
        return float(np.max(np.abs(s - self.predicted)))

    def to_dict(self) -> dict:
        """Plain JSON-ready dict (NaN as None, inf as ``"inf"``)."""
        return {
            "name": self.name,
            "theorem": self.theorem,
            "formula": self.formula,
            "value": _json_float(self.value),
            "spread": self.spread.to_dict(),
            "worst": _json_float(self.worst),
            "per_layer": _json_array(self.per_layer),
            "per_input": _json_array(self.per_input),
            "rows": list(self.rows),
            "samples": _json_array(self.samples),
            "chance": _json_float(self.chance),
            "chance_std": _json_float(self.chance_std),
            "predicted": _json_float(self.predicted),
            "relation": self.relation,
            "condition": self.condition,
            "deviation": _json_float(self.deviation),
            "excluded": self.excluded,
            "note": self.note,
        }


def _fmt(v) -> str:
    if v is None:
        return "-"
    v = float(v)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v == 0:
        return "0"
    return f"{v:.3g}" if 1e-3 <= abs(v) < 1e4 else f"{v:.2e}"


def _predicted_text(m: TheoryMeasure) -> str:
    if m.predicted is None:
        return "n/a"
    return ("<= " if m.relation == "<=" else "") + _fmt(m.predicted)


@dataclass(frozen=True, eq=False)
class TheoryReport:
    """The theorems of MODEL.md §3 measured on one model, each next to its chance level.

    Attributes
    ----------
    measures : Mapping[str, TheoryMeasure]
        In table order: T1 ``numerical_rank``, ``energy_top_C``; T2 ``chain_residual``,
        ``classifier_residual``; T3 ``asymmetry``, ``depth_spread``, ``psd_defect``,
        ``closed_form_error``; T4 ``gain_share_error``; T5 ``linearity``; T6
        ``skip_asymmetry``. Those that could not be computed are in ``unavailable``.
    unavailable : Mapping[str, str]
        Measure name -> why it was not computed.
    fit : Mapping[str, TheoryMeasure]
        With a fitted model: ``subspace_alignment_left``, ``subspace_alignment_right``
        and ``sigma_ratio_i`` for ``i <= k``; empty otherwise.
    fitted : TheoryReport or None
        The fitted model's own measures (no chance draws).
    info : Mapping[str, Any]
        Sizes, layout, skips, loss, weight decays, the baseline's draws and seed,
        ``dtype`` (of the input) and ``computed_in``, ``tol`` (of the verdicts).
    verdicts : Mapping[str, bool or None]
        ``"T1"`` .. ``"T6"``: True when every measure of the theorem lies within ``tol``
        of its prediction, False when one does not, None (undetermined) when the
        theorem says nothing here or the test cannot tell (see :func:`check`, Notes).
    reasons : Mapping[str, str]
        One line per verdict saying why.
    """

    measures: Mapping[str, TheoryMeasure]
    unavailable: Mapping[str, str]
    fit: Mapping[str, TheoryMeasure]
    fitted: TheoryReport | None
    info: Mapping[str, Any]
    verdicts: Mapping[str, bool | None] = field(default_factory=lambda: MappingProxyType({}))
    reasons: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    # ------------------------------------------------------------------ export
    def to_dict(self) -> dict:
        """JSON-ready dict: plain floats, ints, strings, lists, None (NaN), ``"inf"``."""
        return {
            "info": json.loads(json.dumps(dict(self.info), default=str)),
            "verdicts": dict(self.verdicts),
            "reasons": dict(self.reasons),
            "measures": {k: m.to_dict() for k, m in self.measures.items()},
            "unavailable": dict(self.unavailable),
            "fit": {k: m.to_dict() for k, m in self.fit.items()},
            "fitted": None if self.fitted is None else self.fitted.to_dict(),
        }

    def save(self, path: str | os.PathLike) -> pathlib.Path:
        """Write :meth:`to_dict` as JSON to ``path``, atomically.

        The text is written to a temporary file in the target folder, flushed and
        fsynced, then moved over ``path`` with ``os.replace``: an interrupted save never
        leaves a partial file under the final name.

        Raises
        ------
        FileNotFoundError
            If the folder does not exist.
        IsADirectoryError
            If ``path`` is a folder.
        """
        from .report import _save_path

        target = _save_path(path)
        text = json.dumps(self.to_dict(), indent=2, allow_nan=False)  # before touching the disk
        atomic_write_text(target, text, action="save the report to")
        return pathlib.Path(path)

    # ----------------------------------------------------------------- display
    def _verdict_lines(self) -> list[str]:
        if not self.verdicts:
            return []
        word = {True: "holds", False: "fails", None: "undetermined"}
        lines = [f"verdicts (tol {_fmt(self.info.get('tol'))}): "
                 + ", ".join(f"{t} {word[v]}" for t, v in self.verdicts.items())]
        lines += [f"  {t} {word[v]}: {self.reasons.get(t, '')}" for t, v in self.verdicts.items()]
        return lines

    def _header(self) -> str:
        i = self.info
        dep = "per-input" if i["input_dependent"] else "input-independent"
        return (
            f"Theorem measures ({i['source']}): L={i['depth']}, N={i['inputs']}, d={i['width']}, "
            f"C={i['classes']}, {i['layout']} {dep} Jacobians, skips {i['skips']}, "
            f"k={i['branch_factors']}, loss {i['loss']}"
        )

    def _table(self) -> list[tuple[str, ...]]:
        head = ["theorem", "measure", "value", "worst", "chance", "predicted"]
        if self.fitted is not None:
            head.append("fitted")
        rows = [tuple(head)]
        for name, m in self.measures.items():
            row = [m.theorem, name, _fmt(m.value), _fmt(m.worst), _fmt(m.chance), _predicted_text(m)]
            if self.fitted is not None:
                f = self.fitted.measures.get(name)
                row.append(_fmt(None if f is None else f.value))
            rows.append(tuple(row))
        return rows

    def _layer_table(self) -> list[tuple[str, ...]]:
        per = [(n, m) for n, m in self.measures.items() if len(m.rows) > 1 and n != "chain_residual"]
        L = self.info["depth"]
        if not per:
            return []
        rows = [("layer",) + tuple(n for n, _ in per)]
        for l in range(L):
            rows.append((str(l + 1),) + tuple(_fmt(m.per_layer[l]) for _, m in per))
        return rows

    def _fit_table(self) -> list[tuple[str, ...]]:
        if not self.fit:
            return []
        names = list(self.fit)
        rows = [("layer",) + tuple(names)]
        for l in range(self.info["depth"]):
            rows.append((str(l + 1),) + tuple(_fmt(self.fit[n].per_layer[l]) for n in names))
        rows.append(("chance",) + tuple(_fmt(self.fit[n].chance) for n in names))
        return rows

    @staticmethod
    def _lines(rows) -> list[str]:
        widths = [max(len(r[j]) for r in rows) for j in range(len(rows[0]))]
        return ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]

    def __str__(self) -> str:
        i = self.info
        lines = [self._header()]
        if i["chance_draws"]:
            lines.append(
                f"chance: mean of {i['chance_draws']} draws (seed {i['seed']}) with J_l -> Q1 J_l Q2^T, "
                f"Haar Q1, Q2 {i['rotation']}"
            )
        lines.append("value = median over layers and inputs; worst = sample farthest from the prediction")
        table = self._table()
        lines += self._lines(table) if len(table) > 1 else ["  (no measure could be computed)"]
        layer = self._layer_table()
        if layer:
            lines.append("per layer (median over inputs):")
            lines += self._lines(layer)
        chain = self.measures.get("chain_residual")
        if chain is not None:
            lines.append("chain_residual per pair (l, l+1): " + ", ".join(_fmt(v) for v in chain.per_layer))
        fit = self._fit_table()
        if fit:
            lines.append(f"fitted UJM (k = {i['fit_k']}, chance k/d = {_fmt(i['fit_k'] / i['width'])}; "
                         "median over inputs):")
            lines += self._lines(fit)
        by_reason: dict[str, list[str]] = {}
        for name, why in self.unavailable.items():
            by_reason.setdefault(why, []).append(name)
        for why, names in by_reason.items():
            lines.append(f"  n/a: {', '.join(names)}: {why}")
        by_note: dict[str, list[str]] = {}
        for name, m in {**self.measures, **self.fit}.items():
            if m.note:
                by_note.setdefault(m.note, []).append(name)
        for note, names in by_note.items():
            lines.append(f"  note: {', '.join(names)}: {note}")
        lines += self._verdict_lines()
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"TheoryReport(L={self.info['depth']}, N={self.info['inputs']}, d={self.info['width']}, "
            f"measures={len(self.measures)}, unavailable={len(self.unavailable)}, fitted={self.fitted is not None})"
        )

    def _repr_html_(self) -> str:
        esc = html.escape

        def table(rows):
            out = ["<table><thead><tr>" + "".join(f"<th>{esc(c)}</th>" for c in rows[0]) + "</tr></thead><tbody>"]
            for r in rows[1:]:
                out.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>")
            out.append("</tbody></table>")
            return "".join(out)

        parts = [f"<div><p><b>{esc(self._header())}</b></p>", table(self._table())]
        if self.verdicts:
            word = {True: "holds", False: "fails", None: "undetermined"}
            parts.append(table([("theorem", "verdict", "reason")]
                               + [(t, word[v], self.reasons.get(t, "")) for t, v in self.verdicts.items()]))
        if self._layer_table():
            parts += ["<p>per layer (median over inputs)</p>", table(self._layer_table())]
        if self.fit:
            parts += [f"<p>fitted UJM (k = {self.info['fit_k']})</p>", table(self._fit_table())]
        if self.unavailable:
            parts.append(table([("measure", "not computed because")] + list(self.unavailable.items())))
        parts.append("</div>")
        return "".join(parts)


# --------------------------------------------------------------------- the source
@dataclass(frozen=True)
class _Source:
    xp: Any
    jac: Any  # _Dense or _Factors
    shared: bool
    L: int
    N: int
    d: int
    k: int | None  # stored factors
    R: Any
    M: Any  # (L, d, d) or None for identity skips
    skip_kind: str
    W: Any
    weight_decay: tuple | None
    classes: int
    loss: str | None
    branch_factors: int | None
    kind: str
    grad_norm: float | None
    upcast_from: str | None = None  # "float16": computed in float32
    trivial: bool = False  # a Simulation at the critical point J = 0
    converged: bool | None = None  # a Simulation's solver reached its tol


_field = get_field  # the reader of ramodel._source (kept under its old name)


def _as_float(key, a, ndims, doc):
    if isinstance(a, (list, tuple)):
        a = np.asarray(a, dtype=np.float64)
    if not hasattr(a, "shape") or not hasattr(a, "dtype"):
        raise TypeError(f"{key!r} must be an array of shape {doc}, got {type(a).__name__}")
    xp = get_namespace(a)
    try:
        is_float = np.dtype(a.dtype).kind == "f"
    except TypeError:
        is_float = bool(xp.isdtype(a.dtype, "real floating"))
    if not is_float:
        raise ValueError(f"{key!r} must be a float32 or float64 array, got dtype {a.dtype}")
    if a.ndim not in ndims:
        raise ValueError(f"{key!r} must have shape {doc}, got {tuple(a.shape)}")
    if not bool(xp.all(xp.isfinite(a))):
        raise ValueError(f"{key!r} must be finite, but it contains NaN or Inf")
    if str(a.dtype).split(".")[-1] == "float16":  # LAPACK has no half precision: computed in float32
        a = xp.astype(a, xp.float32)
    return a


def _half(a) -> bool:
    return a is not None and hasattr(a, "dtype") and str(a.dtype).split(".")[-1] == "float16"


def _expect(key, a, shape, doc):
    if tuple(int(s) for s in a.shape) != tuple(shape):
        raise ValueError(f"{key!r} must have shape {doc} = {tuple(shape)}, got {tuple(a.shape)}")


def _check_factor_arrays(U, S, V, shared, xp):
    names = "(L, d, k)" if shared else "(L, N, d, k)"
    d, k = int(U.shape[-2]), int(U.shape[-1])
    if k > d:
        raise ValueError(f"'U' must have k <= d columns, got shape {tuple(U.shape)}")
    _expect("V", V, U.shape, f"{names} like 'U'")
    _expect("S", S, tuple(U.shape[:-2]) + (k,), "(L, k)" if shared else "(L, N, k)")
    eps = float(xp.finfo(U.dtype).eps)
    tol = _ORDER_FACTOR * eps * S[..., :1]
    if bool(xp.any(S < -tol)) or (k > 1 and bool(xp.any(S[..., 1:] - S[..., :-1] > tol))):
        raise ValueError("'S' must hold non-negative, non-increasing singular values along its last axis")
    eye = xp.eye(k, dtype=U.dtype)
    otol = _ORTHONORMAL_FACTOR * math.sqrt(d) * eps
    for name, Q in (("U", U), ("V", V)):
        err = float(xp.max(xp.abs(_mT(Q, xp) @ Q - eye)))
        if not err <= otol:
            raise ValueError(
                f"{name!r} must have orthonormal columns: max |{name}^T {name} - I| = {err:.3g} > {otol:.3g}"
            )


def _same(a, b, xp) -> bool:
    return tuple(a.shape) == tuple(b.shape) and bool(xp.all(a == b))


def _source(obj, *, skips, classes, weight_decay) -> _Source:
    src = as_source(obj, name="obj", expected="a Simulation, a JacobianSet or a mapping of FORMAT.md arrays")
    prov = src.provenance
    is_sim = prov.is_simulation
    kind = prov.kind
    half = any(_half(getattr(src, key)) for key in ("jacobians", "U", "S", "V"))
    classes = src.classes_or(classes)

    J = src.jacobians
    fac = {key: getattr(src, key) for key in ("U", "S", "V")}
    if J is not None:
        J = _as_float("jacobians", J, (3, 4), "(L, N, d, d) or (L, d, d)")
        if J.shape[-1] != J.shape[-2] or min(J.shape) < 1:
            raise ValueError(f"'jacobians' must hold square d x d matrices, got shape {tuple(J.shape)}")
        xp = get_namespace(J)
        shared = J.ndim == 3
        if shared:
            J = xp.expand_dims(J, axis=1)
        L, N, d = int(J.shape[0]), int(J.shape[1]), int(J.shape[-1])
        k = None
        jac = _Dense(J, shared, xp)
    elif src.require_jacobians() == "factors":
        U = _as_float("U", fac["U"], (3, 4), "(L, N, d, k) or (L, d, k)")
        shared = U.ndim == 3
        V = _as_float("V", fac["V"], (U.ndim,), "like 'U'")
        S = _as_float("S", fac["S"], (U.ndim - 1,), "(L, N, k) or (L, k)")
        xp = get_namespace(U, S, V)
        _check_factor_arrays(U, S, V, shared, xp)
        if shared:
            U, S, V = (xp.expand_dims(a, axis=1) for a in (U, S, V))
        L, N, d, k = (int(s) for s in U.shape)
        jac = _Factors(U, S, V, shared, xp)

    R = src.representations
    if R is not None:
        R = _as_float("representations", R, (3,), "(L+1, N, d)")
        if shared:
            if int(R.shape[0]) != L + 1 or int(R.shape[2]) != d:
                raise ValueError(
                    f"'representations' must have shape (L+1, N, d) = ({L + 1}, N, {d}), got {tuple(R.shape)}"
                )
        else:
            _expect("representations", R, (L + 1, N, d), "(L+1, N, d)")
    n_inputs = int(R.shape[1]) if (R is not None and shared) else N
    labels = src.labels
    if labels is not None:
        lab = np.asarray(to_numpy(labels))
        if lab.ndim != 1 or (not shared or R is not None) and lab.shape[0] != n_inputs:
            raise ValueError(f"'labels' must have shape (N,) = ({n_inputs},), got {lab.shape}")

    M_obj = src.skips
    M = None
    for key, cand in (("skips", skips), ("the source's skips", M_obj)):
        if cand is None:
            continue
        cand = _as_float("skips", cand, (2, 3), "(L, d, d) or (d, d)")
        _expect("skips", cand, (L, d, d) if cand.ndim == 3 else (d, d), "(L, d, d)" if cand.ndim == 3 else "(d, d)")
        cand = xp.broadcast_to(cand, (L, d, d)) if cand.ndim == 2 else cand
        if M is None:
            M = cand
        elif not _same(M, cand, xp):
            raise ValueError("skips= disagrees with the source's own skips; pass one of them")
    skip_kind = "identity"
    if M is not None:
        eye = xp.eye(d, dtype=M.dtype)
        if bool(xp.all(M == eye)):
            M = None
        elif bool(xp.all(M == 0)):
            skip_kind = "zero"
        else:
            orth = float(xp.max(xp.abs(_mT(M, xp) @ M - eye))) <= 1e-10
            skip_kind = "orthogonal" if orth else "general"

    W = src.classifier
    if W is not None:
        W = _as_float("classifier", W, (2,), "(C, d)")
        _expect("classifier", W, (classes, d), "(C, d)")

    config = dict(prov.config) if is_sim else {}
    wd_obj = tuple(float(v) for v in config["weight_decay"]) if "weight_decay" in config else None
    if weight_decay is not None:
        if isinstance(weight_decay, (int, float)) and not isinstance(weight_decay, bool):
            weight_decay = (weight_decay, weight_decay)
        try:
            lj, lw = weight_decay
        except (TypeError, ValueError):
            raise TypeError(f"weight_decay must be (lambda_J, lambda_W), got {weight_decay!r}") from None
        weight_decay = (check_positive_float("lambda_J", lj), check_positive_float("lambda_W", lw))
        if wd_obj is not None and wd_obj != weight_decay:
            raise ValueError(f"weight_decay={weight_decay} disagrees with the simulation's {wd_obj}")
    else:
        weight_decay = wd_obj
    loss = prov.loss
    branch_factors = int(config["branch_factors"]) if "branch_factors" in config else None
    return _Source(
        xp=xp,
        jac=jac,
        shared=shared,
        L=L,
        N=n_inputs,
        d=d,
        k=k,
        R=R,
        M=M,
        skip_kind=skip_kind,
        W=W,
        weight_decay=weight_decay,
        classes=classes,
        loss=loss if loss in ("mse", "cross_entropy") else None,
        branch_factors=branch_factors,
        kind=kind,
        grad_norm=prov.grad_norm,
        upcast_from="float16" if half else None,
        trivial=prov.trivial if is_sim else False,
        converged=prov.converged,
    )


# ----------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class _Spec:
    theorem: str
    formula: str
    rows: tuple
    predicted: float | None
    relation: str
    condition: str
    compute: Callable
    note: str = ""


def _plan(src: _Source, *, tau: float, allow_truncated: bool):
    """Which measures to compute, with their predictions; and why the others are not."""
    L, C, M, xp = src.L, src.classes, src.M, src.xp
    k1 = src.branch_factors in (None, 1)
    identity = src.skip_kind == "identity"
    layers = tuple(str(l + 1) for l in range(L))
    last = (str(L),)
    cond_k = "k = 1" + ("" if src.branch_factors is not None else " (assumed: the k = 1 UJM's prediction)")
    t3 = f"critical point, {cond_k}, identity skips"
    rank_bound = C - 1 if src.loss == "cross_entropy" else C
    unavailable: dict[str, str] = {}
    specs: dict[str, _Spec] = {}
    note = ""
    blocked = None
    if src.jac.layout == "factors":
        S = src.jac.S
        ratio = float(xp.max(_nan_divide(S[..., -1], S[..., 0], xp))) if src.k < src.d else 0.0
        ratio = 0.0 if math.isnan(ratio) else ratio
        if src.k == src.d:
            note = "from factors (the whole spectrum is stored)"
        elif ratio <= tau:
            note = f"from factors (k = {src.k}; omitted singular values are below tau * sigma_1, tau = {tau:g})"
        elif allow_truncated:
            note = (f"from the rank-{src.k} truncation U S V^T only: the stored factors omit singular values up to "
                    f"{ratio:.3g} sigma_1")
        else:
            blocked = (
                f"needs dense Jacobians, or factors that hold the numerical rank (k = d, or "
                f"S[..., -1] <= tau * S[..., 0] with tau = {tau:g}); the {src.k} stored triplets leave "
                f"sigma_k / sigma_1 up to {ratio:.3g}. Pass allow_truncated=True to measure the rank-{src.k} truncation"
            )

    def add(name, spec):
        if blocked is not None:
            unavailable[name] = blocked
        else:
            specs[name] = spec if not note else _Spec(**{**spec.__dict__, "note": note})

    add("numerical_rank", _Spec(
        "T1", "#{i: sigma_i(J_l) >= tau sigma_1(J_l)}", layers, float(rank_bound), "<=",
        f"critical point, lambda_J > 0, any skips, any k; C - 1 for cross-entropy (tau = {tau:g})",
        lambda j: _rank(j, tau, src)))
    add("energy_top_C", _Spec(
        "T1", "sum_{i<=C} sigma_i^2 / sum_i sigma_i^2", layers, 1.0, "=",
        "critical point, lambda_J > 0, any skips, any k", lambda j: _energy(j, C, src)))
    if L < 2:
        unavailable["chain_residual"] = "needs depth >= 2 (one residual per pair of consecutive layers)"
    else:
        add("chain_residual", _Spec(
            "T2", "|J_l A_l^T - A_{l+1}^T J_{l+1}|_F / (|J_l A_l^T|_F + |A_{l+1}^T J_{l+1}|_F)",
            tuple(f"{l + 1},{l + 2}" for l in range(L - 1)), 0.0 if k1 else None, "=",
            f"critical point, {cond_k}, any skips", lambda j: j.chain(M)))
    needs_w = []
    if src.W is None:
        needs_w.append("the classifier W")
    if src.weight_decay is None:
        needs_w.append("the weight decays (pass weight_decay=(lambda_J, lambda_W))")
    why_w = "needs " + " and ".join(needs_w) if needs_w else None
    if why_w:
        unavailable["classifier_residual"] = why_w
    else:
        add("classifier_residual", _Spec(
            "T2", "|lambda_W W^T W - lambda_J J_L A_L^T|_F / (|lambda_W W^T W|_F + |lambda_J J_L A_L^T|_F)",
            last, 0.0 if k1 else None, "=", f"critical point, {cond_k}, any skips",
            lambda j: j.classifier_residual(src.W, src.weight_decay, M)))
    add("asymmetry", _Spec(
        "T3", "|J_l - J_l^T|_F / (2 |J_l|_F)", layers, 0.0 if (k1 and identity) else None, "=", t3,
        lambda j: j.asymmetry()))
    if L < 2:
        unavailable["depth_spread"] = "needs depth >= 2"
    else:
        add("depth_spread", _Spec(
            "T3", "mean_l |J_l - Jbar|_F / |Jbar|_F", (f"1..{L}",), 0.0 if (k1 and identity) else None, "=",
            t3 + ", spectra of J_l above -1/2", lambda j: j.depth_spread()))
    add("psd_defect", _Spec(
        "T3", "max(0, -lambda_min((J_l + J_l^T)/2)) / sigma_1(J_l)", layers, 0.0 if (k1 and identity) else None,
        "=", t3 + ", spectra of J_l above -1/2", lambda j: j.psd_defect()))
    if why_w:
        unavailable["closed_form_error"] = why_w
    else:
        add("closed_form_error", _Spec(
            "T3", "|J_L - J*|_F / |J*|_F, J* = (-I + (I + 4 (lambda_W/lambda_J) W^T W)^{1/2}) / 2", last,
            0.0 if (k1 and identity) else None, "=", t3 + ", spectra of J_l above -1/2",
            lambda j: j.closed_form_error(src.W, src.weight_decay)))
    if src.jac.layout == "factors" and M is not None:
        unavailable["gain_share_error"] = (
            "needs dense Jacobians when the skips are not the identity (the end-to-end map "
            "prod_l (M_l + J_l) is computed from factors only for M_l = I)"
        )
    elif blocked is None and src.jac.layout == "factors" and src.k < min(C, src.d) and "truncation" in note:
        unavailable["gain_share_error"] = f"needs the top C = {C} singular values; the factors hold k = {src.k}"
    else:
        add("gain_share_error", _Spec(
            "T4", "max_{i<=C} |sigma_i(J_l) - (p_i^{1/L} - 1)| / (p_1^{1/L} - 1), p_i = sigma_i(A_L...A_1)",
            layers, 0.0 if (k1 and identity) else None, "=", t3 + ", spectra of J_l above -1/2",
            lambda j: j.gain_share(C, M)))
    if src.R is None:
        unavailable["linearity"] = "needs representations (L+1, N, d)"
    else:
        add("linearity", _Spec(
            "T5", "cos(h_l - M_l h_{l-1}, J_l h_{l-1})", layers, 1.0, "=",
            "the linearised model (exactly 1 for the UJM and for bias-free ReLU branches)",
            lambda j: j.linearity(src.R, M)))
    if src.skip_kind == "zero":
        unavailable["skip_asymmetry"] = "the skips are zero, so J_L M_L^T = 0 has no asymmetry"
    else:
        add("skip_asymmetry", _Spec(
            "T6", "|J_L M_L^T - M_L J_L^T|_F / (2 |J_L M_L^T|_F)", last, 0.0 if k1 else None, "=",
            f"critical point, {cond_k}, any skips (T2 at the last layer)",
            lambda j: j.skip_asymmetry(M)))
    order = ("numerical_rank", "energy_top_C", "chain_residual", "classifier_residual", "asymmetry",
             "depth_spread", "psd_defect", "closed_form_error", "gain_share_error", "linearity", "skip_asymmetry")
    return {n: specs[n] for n in order if n in specs}, {n: unavailable[n] for n in order if n in unavailable}


def _dtype(src):
    j = src.jac
    return j.J.dtype if j.layout == "dense" else j.U.dtype


def _rank(jac, tau, src):
    xp = src.xp
    s = jac.spectrum()
    count = xp.sum(xp.astype(s >= tau * s[..., :1], s.dtype), axis=-1)
    return _nan_divide(count, xp.astype(s[..., 0] > 0, s.dtype), xp)


def _energy(jac, C, src):
    xp = src.xp
    s = jac.spectrum()
    s = _nan_divide(s, s[..., :1], xp)  # scale-free: sigma_i / sigma_1 (0/0 for a zero matrix)
    s2 = s * s
    return _nan_divide(xp.sum(s2[..., :C], axis=-1), xp.sum(s2, axis=-1), xp)


def _power_of_two_scale(x, xp) -> float:
    """``2**e`` near ``max|x|`` when squares of ``x`` would overflow or underflow, else 1."""
    m = float(xp.max(xp.abs(x)))
    fi = np.finfo(np.dtype(str(x.dtype).split(".")[-1]))
    if m == 0.0 or (float(fi.tiny) ** 0.25 <= m <= float(fi.max) ** 0.25):
        return 1.0
    return math.ldexp(1.0, math.frexp(m)[1])


def _evaluate(specs, jac, xp, failed=None):
    """Every measure's samples; a measure that overflows (or whose LAPACK call fails on
    the overflowed numbers) is recorded in ``failed`` with the reason instead of raising."""
    out = {}
    failed = {} if failed is None else failed
    # 0/0 (a zero Jacobian or vector) is an undefined sample: NaN, excluded and counted later.
    for name, spec in specs.items():
        if name in failed:
            continue
        try:
            with np.errstate(invalid="ignore", divide="ignore", over="raise"):
                v = np.asarray(to_numpy(spec.compute(jac)), dtype=np.float64)
        except (FloatingPointError, np.linalg.LinAlgError) as exc:
            failed[name] = (f"overflows {_dtype_name(jac)} ({type(exc).__name__}: {exc}): the measure multiplies "
                            "Jacobians with the skips, which is not scale-free; rescale the Jacobians")
            continue
        out[name] = v.reshape(len(spec.rows), -1)
    return out


def _dtype_name(jac) -> str:
    return str((jac.J if jac.layout == "dense" else jac.U).dtype).split(".")[-1]


def _nanmedian(x, axis=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(x, axis=axis)


def _summarise(name, spec, samples, chances):
    bad = np.isnan(samples)
    if bad.all():
        return None
    vals = samples[~bad]
    if spec.predicted is None or spec.relation == "<=":
        worst = float(np.max(vals))
    else:
        worst = float(vals[np.argmax(np.abs(vals - spec.predicted))])
    chances = [c for c in chances if not math.isnan(c)]
    return TheoryMeasure(
        name=name,
        theorem=spec.theorem,
        formula=spec.formula,
        value=float(np.median(vals)),
        spread=Spread.of(vals),
        worst=worst,
        per_layer=_frozen(_nanmedian(samples, axis=1)),
        per_input=_frozen(_nanmedian(samples, axis=0)),
        rows=spec.rows,
        samples=_frozen(samples),
        chance=float(np.mean(chances)) if chances else None,
        chance_std=float(np.std(chances)) if chances else None,
        predicted=spec.predicted,
        relation=spec.relation,
        condition=spec.condition,
        excluded=int(bad.sum()),
        note=spec.note,
    )


def _fit_measures(src: _Source, fitted, tau):
    """Alignment of the network's top-k singular subspaces with the fitted model's."""
    xp = src.xp
    if int(fitted.depth) != src.L or int(fitted.width) != src.d:
        raise ValueError(
            f"fitted must have the depth and width of the source (L={src.L}, d={src.d}), got "
            f"L={fitted.depth}, d={fitted.width}"
        )
    floss = fitted.config.get("loss")
    # T1: cross-entropy gives rank <= C - 1, so the C-th direction would be an arbitrary null vector.
    k = src.classes - 1 if floss == "cross_entropy" else src.classes
    k = min(k, src.d)
    note = ""
    if src.k is not None and src.k < k:
        note = f"k = {src.k}, all the stored factors hold (C = {src.classes})"
        k = src.k
    Jf = asarray(to_numpy(fitted.jacobians), xp=xp)
    Jf = xp.astype(Jf, _dtype(src))
    Uf, Sf, Vf = top_singular(Jf, k)
    Un, Sn, Vn = src.jac.top(k)
    rows = tuple(str(l + 1) for l in range(src.L))
    left = xp.sum((_mT(Un, xp) @ Uf[:, None, ...]) ** 2, axis=(-2, -1)) / k
    right = xp.sum((_mT(Vn, xp) @ Vf[:, None, ...]) ** 2, axis=(-2, -1)) / k
    Sfb = xp.broadcast_to(Sf[:, None, :], Sn.shape)
    ratio = xp.where(Sfb > 0, Sn / xp.where(Sfb > 0, Sfb, xp.ones_like(Sfb)),
                     xp.where(Sn > 0, xp.full_like(Sn, float("inf")), xp.full_like(Sn, float("nan"))))
    chance = k / src.d
    specs = {
        "subspace_alignment_left": (_Spec("fit", "|U_l^T U*_l|_F^2 / k", rows, 1.0, "=",
                                          "the network's Jacobians are the fitted UJM's", None, note), left, chance),
        "subspace_alignment_right": (_Spec("fit", "|V_l^T V*_l|_F^2 / k", rows, 1.0, "=",
                                           "the network's Jacobians are the fitted UJM's", None, note), right, chance),
    }
    for i in range(k):
        specs[f"sigma_ratio_{i + 1}"] = (
            _Spec("fit", f"sigma_{i + 1}(J_l) / sigma_{i + 1}(J*_l)", rows, 1.0, "=",
                  "the network's Jacobians are the fitted UJM's", None,
                  note or "chance: the baseline keeps singular values, so it equals the value"),
            ratio[..., i], None)
    out = {}
    for name, (spec, vals, ch) in specs.items():
        samples = np.asarray(to_numpy(vals), dtype=np.float64).reshape(src.L, -1)
        m = _summarise(name, spec, samples, [] if ch is None else [ch])
        if m is not None:
            out[name] = m
    return out, k


def check(
    obj,
    *,
    skips=None,
    fitted=None,
    chance_draws: int = 8,
    seed=0,
    classes: int | None = None,
    weight_decay=None,
    tau: float = DEFAULT_TAU,
    allow_truncated: bool = False,
    tol: float | None = None,
) -> TheoryReport:
    """Measure every theorem of MODEL.md §3 on a model, next to its chance level.

    The measures are those of METRICS.md, "Measuring the theorems"; each takes a known
    value exactly where its theorem's conclusion holds, so the same report reads a
    converged simulation (at the value), a trained network (how UJM-like it is) and a
    random baseline (chance).

    Parameters
    ----------
    obj : Simulation, JacobianSet or Mapping
        Anything with the FORMAT.md fields, read by attribute or key: ``jacobians``
        ``(L, N, d, d)`` or ``(L, d, d)`` (input-independent, as in a ``Simulation``), or
        the factors ``U (L, [N,] d, k)``, ``S (L, [N,] k)``, ``V (L, [N,] d, k)``; optional
        ``representations (L+1, N, d)``, ``skips (L, d, d)`` or ``(d, d)``, ``classifier
        (C, d)``, ``labels (N,)``, ``classes``. A ``Simulation`` also gives its weight
        decays, loss and number of branch factors.
    skips : array, shape (L, d, d) or (d, d), optional
        The skips ``M_l`` when ``obj`` does not carry them (identity otherwise). Must
        agree with the source's own skips when both are given.
    fitted : Simulation, optional
        The UJM fitted to the network's own features (:func:`ramodel.fit.fit_ujm`), of the
        same depth and width. Adds ``fit`` (subspace alignments and singular-value ratios
        per layer) and ``fitted`` (its own measures, shown side by side).
    chance_draws : int, default 8
        Draws of the rotation baseline (METRICS.md: 8); 0 skips it. At most
        :data:`MAX_CHANCE_DRAWS` = 10,000: each draw re-evaluates every measure, and the
        baseline's mean is then known to far better than any reported digit.
    seed : int, SeedSequence or Generator, default 0
        Seed of the baseline's Haar draws.
    classes : int, optional
        ``C`` when the source does not give it.
    weight_decay : (float, float), optional
        ``(lambda_J, lambda_W)`` for ``closed_form_error`` and ``classifier_residual``
        of a source that is not a simulation (they also need its ``classifier``).
    tau : float, default 1e-3
        Relative threshold of the numerical rank; also the completeness rule of factors.
    allow_truncated : bool, default False
        With factors that do not hold the numerical rank, measure their rank-k truncation
        ``U S V^T`` (with a note) instead of reporting the measures unavailable.
    tol : float, optional
        Largest deviation from a prediction that still counts as "holds" in
        :attr:`TheoryReport.verdicts`. Default 1e-6 for float64 (the summary's
        ``THEOREM_TOL``: a solve to ``|grad Phi| <= 1e-10`` leaves residuals near 1e-9)
        and 1e-3 for float32 / float16 input (float32 solves stop near 1e-5).

    Returns
    -------
    TheoryReport

    Raises
    ------
    ValueError, TypeError
        Naming the key, for a missing or malformed field (wrong rank, shape or dtype,
        NaN/Inf, skips of the wrong shape), sizes that disagree across keys, or a
        ``fitted`` model of another depth or width.

    Notes
    -----
    **Samples and summaries.** Every measure is computed per input, along that input's
    own Jacobians, and per layer (or pair of layers, or the whole depth): ``samples`` is
    ``(rows, N)`` (``N = 1`` for input-independent Jacobians, except ``linearity``, which
    has one sample per input). ``value`` is the median over all samples, ``spread`` their
    distribution, ``per_layer`` the median over inputs, ``worst`` the sample farthest from
    the prediction. Undefined samples (a zero Jacobian, a zero vector: 0/0) are NaN and
    excluded, and counted in ``excluded``.

    **Chance.** Each draw replaces every ``J_l`` by ``Q1_l J_l Q2_l^T`` with independent
    Haar-orthogonal ``Q1_l, Q2_l``: singular values kept, singular vectors made random.
    The rotations are drawn per layer and shared by all inputs (METRICS.md), so the
    input-independent and the broadcast per-input layouts get the same baseline. Skips,
    classifier and representations are left as they are: the baseline asks what the
    measure gives when the Jacobians' singular vectors carry no relation to them or to
    each other. ``chance`` is the mean over draws of the baseline's ``value``. Consequences:

    - ``numerical_rank``, ``energy_top_C`` and the fitted ``sigma_ratio_i`` are invariant
      (the baseline tests vectors, not spectra): their chance equals their value.
    - ``linearity`` keeps the network's own ``h``: with ``J_l`` rotated, the cosine of
      ``h_l - M_l h_{l-1}`` with ``J_l' h_{l-1}`` is about ``0 +- 1/sqrt(d)``, which is the
      chance level; the representations are not regenerated (that would make it 1).
    - The fitted subspace alignments use the analytic chance ``k/d`` (the exact mean of
      ``|U^T U*|_F^2 / k`` for a Haar-random ``U``).
    - Factors wider than 512 are rotated by independent Haar frames per layer and
      input (a Haar ``Q`` maps a frame to a Haar frame): every measure is a function of
      one input's Jacobians, so each input's sample has the law of the shared-rotation
      baseline; only the correlation between inputs differs.

    **Factors.** From ``U, S, V`` every measure is computed without forming ``d x d``
    matrices (QR of ``(d, r)`` blocks, ``r <= (L + 1) k``; eigenproblems of size ``2k``
    and ``<= 2Lk``). They are exact when the factors hold the numerical rank: ``k = d``,
    or ``S[..., -1] <= tau * S[..., 0]`` (the omitted singular values are then below
    ``tau sigma_1``). Otherwise the J-measures are unavailable (or, with
    ``allow_truncated``, measure the truncation). ``gain_share_error`` from factors needs
    identity skips. The fitted comparison needs only the top-k vectors, always exact.

    **Verdicts.** Each theorem's verdict is None (undetermined), with its reason, at a
    trivial critical point (``Simulation.is_trivial``), for an unconverged simulation
    (not a critical point; T5 excepted), when the branches are inactive (median
    ``sigma_1(J_l) / max(1, |M_l|_2)`` below 1e-6, as in :func:`ramodel.analyze`), when
    none of its measures could be computed, when the theorem predicts nothing for the
    model (``predicted = None``), for T1 when ``C >= d`` (every matrix has rank <= d), and
    when a measure's chance level already meets the prediction within ``tol`` (the measure
    cannot tell). Otherwise it is True when every measure's ``deviation <= tol``.

    **Overflow.** Scale-free measures (rank, energy, asymmetry, depth spread, PSD defect,
    linearity, skip asymmetry) are computed on the Jacobians divided by a power of two,
    so entries of 1e300 are fine. Measures that mix the Jacobians with the skips
    (chain and classifier residuals, closed form, gain share) are not scale-free; when
    they overflow they are reported unavailable with the reason, never raised.

    **Predictions.** ``predicted`` is the value at a critical point of the UJM with
    ``k = 1`` (MODEL.md §3 and proofs/README.md): T1 rank ``<= C`` (``C - 1`` for
    cross-entropy) for any skips and any ``k``; T2 and T6 for any skips; T3 and T4 for
    identity skips only (None otherwise). For a source that is not a simulation the
    number of branch factors is unknown and ``k = 1`` is assumed; the loss is read from
    ``meta["loss"]`` when present.

    Examples
    --------
    >>> import ramodel
    >>> sim = ramodel.simulate(depth=3, classes=2, width=4, samples_per_class=3, seed=0)
    >>> rep = check(sim, chance_draws=2)
    >>> rep.measures["asymmetry"].deviation < 1e-8, rep.measures["linearity"].value
    (True, 1.0)
    >>> rep.measures["asymmetry"].chance > 0.1
    True
    """
    chance_draws = check_int("chance_draws", chance_draws, minimum=0, maximum=MAX_CHANCE_DRAWS)
    tau = check_positive_float("tau", tau)
    if not tau < 1:
        raise ValueError(f"tau must be in (0, 1), got {tau}")
    if not isinstance(allow_truncated, bool):
        raise TypeError(f"allow_truncated must be a bool, got {allow_truncated!r}")
    rng = as_generator(seed)
    src = _source(obj, skips=skips, classes=classes, weight_decay=weight_decay)
    if fitted is not None and not is_simulation(fitted):
        raise TypeError(f"fitted must be a Simulation (from ramodel.fit.fit_ujm), got {type(fitted).__name__}")
    specs, unavailable = _plan(src, tau=tau, allow_truncated=allow_truncated)
    xp = src.xp
    failed: dict[str, str] = {}
    values = _evaluate(specs, src.jac, xp, failed)

    draws = {name: [] for name in specs}
    shared_rotation = src.jac.layout == "dense" or src.d <= _SHARED_ROTATION_MAX_WIDTH
    for _ in range(chance_draws):
        if shared_rotation:
            Q = asarray(_haar(rng, (2, src.L), src.d), xp=xp)
            Q = xp.astype(Q, _dtype(src))
            rotated = src.jac.rotate(Q[0, ...], Q[1, ...], rng)
        else:
            rotated = src.jac.rotate(None, None, rng)
        for name, v in _evaluate(specs, rotated, xp, failed).items():
            draws[name].append(float(_nanmedian(v)))

    measures = {}
    for name, spec in specs.items():
        if name in failed:
            unavailable[name] = failed[name]
            continue
        m = _summarise(name, spec, values[name], draws[name])
        if m is None:
            unavailable[name] = "undefined for every sample (zero Jacobians or zero vectors: 0/0)"
        else:
            measures[name] = m

    fit, fit_k, fitted_report = {}, None, None
    if fitted is not None:
        fit, fit_k = _fit_measures(src, fitted, tau)
        fitted_report = check(fitted, chance_draws=0, tau=tau)

    info = {
        "source": src.kind,
        "depth": src.L,
        "inputs": src.N,
        "width": src.d,
        "classes": src.classes,
        "layout": src.jac.layout,
        "k_stored": src.k,
        "input_dependent": not src.shared,
        "skips": src.skip_kind,
        "loss": src.loss or "unknown",
        "branch_factors": src.branch_factors if src.branch_factors is not None else "unknown (1 assumed)",
        "weight_decay": None if src.weight_decay is None else list(src.weight_decay),
        "grad_norm": src.grad_norm,
        "tau": tau,
        "chance_draws": chance_draws,
        "seed": seed if isinstance(seed, (int, np.integer)) else repr(seed),
        "rotation": "per layer, shared by all inputs" if shared_rotation else "per layer and input (Haar frames)",
        "fit_k": fit_k,
        "dtype": src.upcast_from or str(_dtype(src)).split(".")[-1],
        "computed_in": str(_dtype(src)).split(".")[-1],
        "namespace": namespace_name(xp),
    }
    computed = info["computed_in"]
    if tol is None:
        tol = THEOREM_TOL if computed == "float64" and src.upcast_from is None else 1e-3
    else:
        tol = check_positive_float("tol", tol)
    info["tol"] = tol
    verdicts, reasons = _theorem_verdicts(src, measures, unavailable, tol)
    order = [n for n in ("numerical_rank", "energy_top_C", "chain_residual", "classifier_residual", "asymmetry",
                         "depth_spread", "psd_defect", "closed_form_error", "gain_share_error", "linearity",
                         "skip_asymmetry") if n in unavailable] + [n for n in unavailable if n not in _THEOREM_OF]
    return TheoryReport(
        measures=MappingProxyType(measures),
        unavailable=MappingProxyType({n: unavailable[n] for n in order}),
        fit=MappingProxyType(fit),
        fitted=fitted_report,
        info=MappingProxyType(info),
        verdicts=MappingProxyType(verdicts),
        reasons=MappingProxyType(reasons),
    )


#: Upper bound of ``chance_draws`` (see :func:`check`).
MAX_CHANCE_DRAWS = 10_000
#: Default tolerance of the theorem verdicts for float64 input.
THEOREM_TOL = _THEOREM_TOL
#: Branches below this relative gain are inactive (as ``Thresholds.active_floor``).
ACTIVE_FLOOR = _ACTIVE_FLOOR
THEOREMS = ("T1", "T2", "T3", "T4", "T5", "T6")
_THEOREM_OF = {
    "numerical_rank": "T1", "energy_top_C": "T1", "chain_residual": "T2", "classifier_residual": "T2",
    "asymmetry": "T3", "depth_spread": "T3", "psd_defect": "T3", "closed_form_error": "T3",
    "gain_share_error": "T4", "linearity": "T5", "skip_asymmetry": "T6",
}


def _inactive(src: _Source) -> str | None:
    """Why the branches are numerically inactive, or None (the rule of ``ramodel.analyze``)."""
    xp = src.xp
    if src.jac.layout == "dense":
        s1 = np.asarray(to_numpy(src.jac.spectrum()[..., 0]), dtype=np.float64) * src.jac.scale
    else:
        s1 = np.asarray(to_numpy(src.jac.S[..., 0]), dtype=np.float64)
    ref = np.ones(src.L)
    if src.M is not None:
        M = np.asarray(to_numpy(src.M), dtype=np.float64)
        ref = np.maximum(1.0, np.linalg.norm(M, ord=2, axis=(-2, -1)))
    del xp
    gain = s1 / ref[:, None]
    if float(np.median(gain)) < ACTIVE_FLOOR:
        return (f"branches inactive: median sigma_1 = {float(np.median(s1)):.3g} < floor {ACTIVE_FLOOR:g} "
                "x max(1, |M_l|)")
    return None


def _theorem_verdicts(src: _Source, measures, unavailable, tol: float) -> tuple[dict, dict]:
    verdicts: dict[str, bool | None] = {}
    reasons: dict[str, str] = {}
    inactive = None if src.trivial else _inactive(src)
    for t in THEOREMS:
        mine = [m for m in measures.values() if m.theorem == t]
        missing = {n: why for n, why in unavailable.items() if _THEOREM_OF.get(n) == t}
        why = None
        if src.trivial:
            why = "trivial critical point (J = 0): every theorem holds there vacuously"
        elif src.converged is False and t != "T5":
            why = f"not a critical point: the solver stopped at |grad Phi| = {src.grad_norm:.2g} above its tol"
        elif inactive is not None:
            why = inactive
        elif not mine:
            why = "; ".join(f"{n}: {w}" for n, w in missing.items()) or "not measured"
        elif any(m.predicted is None for m in mine):
            m = next(m for m in mine if m.predicted is None)
            why = f"the theorem predicts nothing for this model (it needs: {m.condition})"
        elif t == "T1" and (src.classes - 1 if src.loss == "cross_entropy" else src.classes) >= src.d:
            why = f"C = {src.classes} >= d = {src.d}: rank <= C holds for any matrix"
        else:
            blind = [m for m in mine if t != "T1" and m.chance is not None
                     and abs(m.chance - m.predicted) <= tol]
            if blind:
                why = (f"{blind[0].name}'s chance level {_fmt(blind[0].chance)} already meets the prediction "
                       f"{_fmt(blind[0].predicted)}: the measure cannot tell")
        if why is not None:
            verdicts[t], reasons[t] = None, why
            continue
        devs = {m.name: m.deviation for m in mine}
        bad = {n: v for n, v in devs.items() if not v <= tol}
        verdicts[t] = not bad
        if bad:
            reasons[t] = "; ".join(f"{n} deviates by {_fmt(v)} > tol" for n, v in bad.items())
        else:
            reasons[t] = "every measure within tol: " + ", ".join(f"{n} {_fmt(v)}" for n, v in devs.items())
        if missing:
            reasons[t] += " (not measured: " + ", ".join(missing) + ")"
    return verdicts, reasons
