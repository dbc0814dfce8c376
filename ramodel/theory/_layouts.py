"""The two layouts of the Jacobians that the theorem measures run on: dense, and top-k factors.

Each layout computes every measure's samples its own way (factors without forming
``d x d`` matrices) and rotates itself for the chance baseline.
"""

from __future__ import annotations

import numpy as np

from ..backend import asarray, matrix_transpose
from ..metrics._stack import _power_of_two_scale as _stack_scale  # one copy
from ..spectra import top_singular
from .chance import _haar
from .closed_forms import (
    _fro,
    _svdvals,
    asymmetry,
    chain_residuals,
    classifier_residual,
    closed_form_error,
    depth_singular_values,
    depth_spread,
    gain_share_error,
    linearity,
    psd_defect,
)

_mT = matrix_transpose  # ramodel.backend


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


def _power_of_two_scale(x, xp) -> float:
    """``2**e`` near ``max|x|`` when squares of ``x`` would overflow or underflow, else 1."""
    del xp  # the namespace of x
    return _stack_scale(x)
