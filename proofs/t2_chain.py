"""T2: the chain identity ``J_l A_l^T = A_{l+1}^T J_{l+1}`` and ``lambda_W W^T W = lambda_J J_L A_L^T``.

Statement (k = 1, lambda_J, lambda_W > 0, any skips M_l, any differentiable loss). At
every critical point, for l = 1..L-1,

    J_l A_l^T = A_{l+1}^T J_{l+1},        lambda_W W^T W = lambda_J J_L A_L^T.

Proof (all sizes, all depths). Write rho_l = grad_{J_l} Phi = grad_l + lambda_J J_l and
rho_W = grad_W Phi_data + lambda_W W (both zero at a critical point). The data gradients
obey the chain identity ``grad_l A_l^T = A_{l+1}^T grad_{l+1}`` at every point (proven
in :mod:`proofs.gradient` from ``A_{>l} = A_{>l+1} A_{l+1}`` and
``H_l = A_l H_{l-1}``). The certificate

    lambda_J (J_l A_l^T - A_{l+1}^T J_{l+1}) = rho_l A_l^T - A_{l+1}^T rho_{l+1}

is checked in the free algebra with ``A_{>l+1}`` and ``H_{l-1}`` as free symbols, so it
holds for every depth L and every l (these two products are the only place where L
enters). The top identity uses ``A_{>L} = I``. A fixed-depth cross-check expands
every product explicitly for L = 4.
"""

from __future__ import annotations

import numpy as np
import sympy as sp
from sympy import Identity, MatrixSymbol

from . import _numerics as nm
from . import gradient
from ._exact import ProofLog, ProofResult, require_nc_zero

__all__ = ["prove", "check_simulation", "chain_residuals", "chain_residual", "S_of", "check_top", "DEFAULT_CONFIGS"]

d, C, N = sp.symbols("d C N", integer=True, positive=True)
lam_J, lam_W = sp.symbols("lambda_J lambda_W", positive=True)


def S_of(W):
    """T2's right-hand side at the top: ``J_L A_L^T = S = (lambda_W/lambda_J) W^T W``.

    T3 takes its ``S`` from here (and :func:`check_top` certifies it), so a wrong ``S``
    fails T2 and everything built on it.
    """
    return (lam_W / lam_J) * W.T * W


def chain_residual(J_l, A_l, J_next, A_next):
    """``J_l A_l^T - A_{l+1}^T J_{l+1}``: zero at every critical point (T2)."""
    return J_l * A_l.T - A_next.T * J_next


def check_top(J_L, A_L, W, G, H_prev) -> None:
    """Certify ``J_L A_L^T = S_of(W)`` at a critical point, from the §2 gradient.

    ``lambda_J (J_L A_L^T - S) = rho_L A_L^T - W^T rho_W`` in the free algebra, with
    ``rho_L = grad_L + lambda_J J_L`` and ``rho_W = grad_W + lambda_W W`` built from
    :func:`proofs.gradient.data_grad_at` and ``grad_W_expr`` (``A_{>L} = I``).
    """
    rhoL = gradient.data_grad_at(Identity(J_L.shape[0]), W, G, H_prev) + lam_J * J_L
    rhoW = gradient.grad_W_expr.subs({gradient.G: G, gradient.HL: A_L * H_prev}) + lam_W * W
    require_nc_zero(
        lam_J * (J_L * A_L.T - S_of(W)) - (rhoL * A_L.T - W.T * rhoW),
        "lambda_J (J_L A_L^T - S) = rho_L A_L^T - W^T rho_W",
    )


def _symbolic(log: ProofLog) -> None:
    P = MatrixSymbol("A_gt_next", d, d)  # A_{>l+1}
    M0, M1, J0, J1 = (MatrixSymbol(n, d, d) for n in ("M_l", "M_next", "J_l", "J_next"))
    W, G, H = MatrixSymbol("W", C, d), MatrixSymbol("G", C, N), MatrixSymbol("H_prev", d, N)
    A0, A1 = M0 + J0, M1 + J1
    grad0 = gradient.data_grad_at(P * A1, W, G, H)  # A_{>l} = A_{>l+1} A_{l+1}
    grad1 = gradient.data_grad_at(P, W, G, A0 * H)  # H_l = A_l H_{l-1}
    rho0, rho1 = grad0 + lam_J * J0, grad1 + lam_J * J1
    require_nc_zero(
        lam_J * chain_residual(J0, A0, J1, A1) - (rho0 * A0.T - A1.T * rho1),
        "lambda_J (J_l A_l^T - A_{l+1}^T J_{l+1}) = rho_l A_l^T - A_{l+1}^T rho_{l+1}",
    )
    log.claim(
        "J_l A_l^T = A_{l+1}^T J_{l+1} at every critical point, l = 1..L-1, for any skips and any loss",
        "all sizes",
        "free-algebra certificate in terms of the stationarity residuals; A_{>l+1}, H_{l-1} free symbols",
    )
    # top: A_{>L} = I, grad_L = W^T G H_{L-1}^T, grad_W = G H_L^T.
    check_top(J0, A0, W, G, H)
    log.claim("lambda_W W^T W = lambda_J J_L A_L^T at every critical point", "all sizes",
              "free-algebra certificate")
    # Cross-check at a fixed depth with every product written out.
    L = 4
    Ms = [MatrixSymbol(f"M{l}", d, d) for l in range(1, L + 1)]
    Js = [MatrixSymbol(f"J{l}", d, d) for l in range(1, L + 1)]
    X = MatrixSymbol("X", d, N)
    A = [m + j for m, j in zip(Ms, Js)]
    Hs = [X]
    for a in A:
        Hs.append(a * Hs[-1])
    def A_gt(l):  # noqa: E306
        out = Identity(d)
        for a in A[l + 1 :]:
            out = a * out
        return out
    rho = [gradient.data_grad_at(A_gt(l), W, G, Hs[l]) + lam_J * Js[l] for l in range(L)]
    for l in range(L - 1):
        require_nc_zero(lam_J * (Js[l] * A[l].T - A[l + 1].T * Js[l + 1]) - (rho[l] * A[l].T - A[l + 1].T * rho[l + 1]),
                        f"chain identity, L = 4, l = {l + 1}")
    log.claim("the same certificates with all products expanded", "fixed sizes: L = 4, any d, C, N (cross-check)",
              "free-algebra normal form")


def chain_residuals(sim) -> np.ndarray:
    """``chain_residual_l`` of METRICS.md for l = 1..L-1, plus the top residual last."""
    J, M = nm.as_numpy(sim.jacobians), nm.as_numpy(sim.skips)
    Wn = nm.as_numpy(sim.classifier)
    lJ, lW = sim.weight_decay
    A = M + J
    out = []
    for l in range(J.shape[0] - 1):
        a, b = J[l] @ A[l].T, A[l + 1].T @ J[l + 1]
        den = np.linalg.norm(a) + np.linalg.norm(b)
        out.append(0.0 if den == 0 else np.linalg.norm(a - b) / den)
    a, b = lJ * J[-1] @ A[-1].T, lW * Wn.T @ Wn
    out.append(np.linalg.norm(a - b) / (np.linalg.norm(a) + np.linalg.norm(b)))
    return np.asarray(out)


def check_simulation(sim, log: ProofLog) -> None:
    """Chain residuals at a converged k = 1 simulation."""
    if nm.trivial(sim):
        log.note(f"{sim!r}: J ~ 0 (trivial critical point); T2 not checked there")
        return
    tol = nm.tolerance(sim)
    for l, r in enumerate(chain_residuals(sim), start=1):
        log.deviation(f"chain residual {l} ({sim!r})", r, tol)


DEFAULT_CONFIGS = (
    dict(depth=4, classes=3, width=6, samples_per_class=3),
    dict(depth=3, classes=2, width=4, loss="cross_entropy", skip="orthogonal"),
    dict(depth=3, classes=3, width=5, skip="sparse_unipotent"),
    dict(depth=3, classes=3, width=5, skip="correlation", loss="cross_entropy"),
    dict(depth=3, classes=2, width=4, skip="block_orthogonal"),
)


def prove(*, numerical: bool = True) -> ProofResult:
    """Prove T2 symbolically and check it on converged simulations."""
    log = ProofLog("T2", "chain identity J_l A_l^T = A_{l+1}^T J_{l+1}")
    _symbolic(log)
    if numerical and nm.simulate_available():
        for cfg in DEFAULT_CONFIGS:
            check_simulation(nm.converged(**cfg), log)
        log.claim("chain residuals (METRICS.md) <= tol at converged simulations, several skip families",
                  "numerical", "NumPy recomputation")
    elif numerical:
        log.note("ramodel.simulate unavailable: numerical checks skipped")
    return log.result()
