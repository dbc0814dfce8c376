"""T1 (RA3): at a critical point ``lambda_J J_l = -A_{>l}^T W^T G H_{l-1}^T``, so rank J_l <= C.

Statement (k = 1, lambda_J > 0, any skips, any differentiable loss). At every critical
point ``J_l = -(1/lambda_J) A_{>l}^T W^T G H_{l-1}^T``; hence the column space of J_l
lies in that of ``A_{>l}^T W^T`` and ``rank J_l <= rank W <= min(C, d)``.

Extensions proven here (not in the spec):
* any number k of branch factors: ``J_l = -(1/lambda_J) grad_l R^T R`` with
  ``R = B_{l,k-1}..B_{l,1}``, so again ``rank J_l <= rank W <= C``;
* cross-entropy (any loss invariant to adding a constant to all logits):
  ``1^T G = 0`` and, with lambda_W > 0, ``1^T W = 0``; so ``rank W <= C - 1`` and
  ``rank J_l <= C - 1``. Binary cross-entropy therefore gives rank-one Jacobians.

The rank inequality itself (rank XY <= rank X) is standard linear algebra and is not
re-derived; what is proven is the factorisation through ``W^T``.
"""

from __future__ import annotations

import numpy as np
import sympy as sp
from sympy import Identity, MatrixSymbol

from . import _numerics as nm
from . import gradient
from ._exact import ProofLog, ProofResult, require, require_nc_zero

__all__ = ["prove", "check_simulation", "rank_bound", "ce_certificate", "DEFAULT_CONFIGS"]

d, C, N = sp.symbols("d C N", integer=True, positive=True)
lam_J, lam_W = sp.symbols("lambda_J lambda_W", positive=True)


def _symbolic(log: ProofLog) -> None:
    Agt, J, Rm, Bk = (MatrixSymbol(n, d, d) for n in ("A_gt", "J_l", "R", "B_k"))
    W, G = MatrixSymbol("W", C, d), MatrixSymbol("G", C, N)
    H, HL = MatrixSymbol("H_prev", d, N), MatrixSymbol("H_L", d, N)
    grad = gradient.data_grad_at(Agt, W, G, H)
    # k = 1: rho = grad + lambda J is the full gradient (zero at a critical point).
    rho = grad + lam_J * J
    require_nc_zero(J - (-(Agt.T * W.T) * (G * H.T) / lam_J) - rho / lam_J,
                    "J_l = -(1/lambda_J) (A_{>l}^T W^T)(G H_{l-1}^T) + rho/lambda_J")
    log.claim(
        "k = 1: at a critical point J_l = -(1/lambda_J) A_{>l}^T W^T G H_{l-1}^T = (A_{>l}^T W^T) K_l, "
        "so col(J_l) is inside col(A_{>l}^T W^T) and rank J_l <= rank W <= min(C, d)",
        "all sizes",
        "free-algebra identity with the stationarity residual rho_l = grad_{J_l} Phi as certificate; "
        "rank(XY) <= rank(X) is the standard fact used",
    )
    # any k: J = B_k R, stationarity of B_k: rho_k = grad R^T + lambda B_k.
    rho_k = gradient.factor_grad(Identity(d), grad, Rm) + lam_J * Bk
    require_nc_zero(Bk * Rm - (-(grad * Rm.T * Rm) / lam_J) - rho_k * Rm / lam_J,
                    "J = B_k R = -(1/lambda) grad R^T R + rho_k R / lambda")
    log.claim(
        "any k: at a critical point J_l = -(1/lambda_J) grad_{J_l}Phi_data R^T R with "
        "R = B_{l,k-1}..B_{l,1}, so rank J_l <= rank W <= C",
        "all sizes",
        "free-algebra identity (stationarity of B_{l,k} as certificate)",
    )
    # cross-entropy: 1^T G = 0 for symbolic C ...
    c, k = sp.symbols("c k", integer=True)
    E = sp.IndexedBase("E")
    S = sp.Sum(E[k], (k, 1, C))
    total = sp.factor_terms(sp.Sum(E[c] / S, (c, 1, C)))
    # Renaming the bound index c -> k (alpha-equivalence) makes numerator and denominator
    # the same object; SymPy then cancels them exactly.
    require(total.xreplace({c: k}) == 1, "sum_c softmax_c = 1")
    log.claim(
        "cross-entropy: the columns of G = (softmax(Z) - Y)/N sum to zero, 1^T G = 0 "
        "(softmax sums to one, one-hot targets sum to one)",
        "all sizes",
        "SymPy Sum over a symbolic number of classes C",
    )
    # ... hence 1^T W = 0 at a critical point: 1^T (lambda_W W + G H_L^T) certificate.
    one = MatrixSymbol("one", C, 1)
    rho_W = lam_W * W + gradient.grad_W_expr.subs({gradient.G: G, gradient.HL: HL})
    require_nc_zero(ce_certificate(one, W, rho_W, G, HL), "lambda_W 1^T W = 1^T rho_W - (1^T G) H_L^T")
    log.claim(
        "cross-entropy with lambda_W > 0: 1^T W = 0 at a critical point, so rank W <= C - 1 and "
        "rank J_l <= C - 1 (rank one for binary classification)",
        "all sizes",
        "free-algebra identity with certificate 1^T G = 0 and rho_W = grad_W Phi",
    )


def ce_certificate(one, W, rho_W, G, HL):
    """``lambda_W 1^T W - (1^T rho_W - (1^T G) H_L^T)``: must reduce to zero exactly.

    With ``rho_W = 0`` (stationarity) and ``1^T G = 0`` (cross-entropy) it gives ``1^T W = 0``.
    """
    return lam_W * one.T * W - one.T * rho_W + (one.T * G) * HL.T


def rank_bound(sim) -> int:
    """The proven bound: ``C`` (MSE) or ``C - 1`` (cross-entropy), capped at ``d``."""
    C_ = sim.classes - (1 if sim.config["loss"] == "cross_entropy" else 0)
    return min(C_, sim.width)


def check_simulation(sim, log: ProofLog) -> None:
    """Rank and the stationarity formula at a converged simulation.

    The rank check allows for the gradient residual exactly (Weyl): with
    ``rho = grad_{B_k} Phi`` and ``R = B_{k-1}..B_1``, ``J = -(1/lambda) grad R^T R
    + rho R / lambda``, the first term has rank <= r, so
    ``sigma_{r+1}(J) <= |rho R|_2 / lambda_J``. The deviation is the excess over that
    bound, relative to sigma_1(J).
    """
    if nm.trivial(sim):
        log.note(f"{sim!r}: J ~ 0 (trivial critical point); T1 holds trivially")
        return
    tol = nm.tolerance(sim)
    J, F = nm.as_numpy(sim.jacobians), nm.as_numpy(sim.factors)
    lam = sim.weight_decay[0]
    gJ, _, _ = gradient.data_gradients(sim)
    r = rank_bound(sim)
    s = np.linalg.svd(J, compute_uv=False)
    for l in range(J.shape[0]):
        R = np.eye(J.shape[1])
        for b in F[l, :-1]:
            R = b @ R
        weyl = np.linalg.norm((gJ[l] @ R.T + lam * F[l, -1]) @ R, 2) / lam
        dev = 0.0 if r >= s.shape[1] else max(0.0, s[l, r] - weyl) / s[l, 0]
        log.deviation(f"sigma_(r+1)/sigma_1 of J_{l + 1} beyond the Weyl bound, r = {r} ({sim!r})", dev, tol)
    if sim.config["branch_factors"] == 1:
        for l in range(J.shape[0]):
            log.deviation(f"|J_l + grad_l/lambda_J| / |J_l|, l = {l + 1}", nm.rel(J[l], -gJ[l] / lam), tol)


DEFAULT_CONFIGS = (
    dict(depth=3, classes=3, width=6, samples_per_class=3),
    dict(depth=2, classes=2, width=5, samples_per_class=3, loss="cross_entropy"),
    dict(depth=3, classes=3, width=5, loss="cross_entropy", skip="orthogonal"),
    dict(depth=2, classes=3, width=5, branch_factors=2, skip="sparse_unipotent"),
    dict(depth=3, classes=2, width=4, skip="correlation"),
)


def prove(*, numerical: bool = True) -> ProofResult:
    """Prove T1 symbolically and check it on converged simulations."""
    log = ProofLog("T1", "rank J_l <= C (C - 1 for cross-entropy)")
    _symbolic(log)
    if numerical and nm.simulate_available():
        for cfg in DEFAULT_CONFIGS:
            check_simulation(nm.converged(**cfg), log)
        log.claim("sigma_{r+1}(J_l) <= tol * sigma_1(J_l) (r = C for MSE, C - 1 for CE) and the "
                  "stationarity formula, at converged simulations", "numerical",
                  f"tolerance BASE_TOL + SLOPE*|grad|/lambda ({nm.BASE_TOL:g}, {nm.SLOPE:g})")
    elif numerical:
        log.note("ramodel.simulate unavailable: numerical checks skipped")
    return log.result()
