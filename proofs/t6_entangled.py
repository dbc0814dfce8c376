"""T6: entangled skips. What survives of T1-T5 for each skip family of MAPPINGS.md.

Setting: k = 1, lambda_J, lambda_W > 0, any differentiable loss, critical points.
``kappa = lambda_W / lambda_J``; ``skew(X) = X - X^T``.

General skips M_l (all sizes):
  (G1) ``J_L M_L^T`` is symmetric, for *any* M_L (the spec states it for orthogonal
       M_L only; orthogonality is needed only for the corollary v = M_L^T u).
  (G2) ``skew(J_l M_l^T) = skew(M_{l+1}^T J_{l+1})`` for l < L: the antisymmetric
       parts are transported down the network, but nothing forces them to vanish.
  T1 (rank <= C, C - 1 for cross-entropy) and T2 hold unchanged.

Orthogonal skips (identity, orthogonal, permutation, signed permutation,
block_orthogonal), with ``Q_l = M_L ... M_{l+1}`` (Q_L = I) and
``J'_l = Q_l J_l Q_{l-1}^T``:
  (O1) ``h_l = Q_l^T g_l`` with ``g_l = (I + J'_l) g_{l-1}``, ``g_0 = Q_0 x``: the
       network is an identity-skip network in rotated coordinates, and
       ``|J'_l|_F = |J_l|_F``.
  (O2) The J'_l satisfy the identity-skip chain identities
       ``J'_l (I + J'_l)^T = (I + J'_{l+1})^T J'_{l+1}`` and
       ``J'_L (I + J'_L)^T = kappa W^T W``. Hence (by T3's algebra, unconditionally)
       every J'_l is symmetric with ``J'_l + J'_l^2 = kappa W^T W``, and every
       ``J_l M_l^T = Q_l^T J'_l Q_l`` is symmetric -- at every layer, not only L.
  (O3) If every J'_l has eigenvalues above -1/2 (T3's hypothesis, in the rotated
       frame): ``J'_l = J* = f(kappa W^T W)`` for all l, so ``J_l = Q_l^T J* Q_{l-1}``:
       all J_l have the same singular values (those of J*), ``J_l M_l^T`` is PSD, the
       right singular vectors are ``v = M_l^T u`` (no sign ambiguity), and the left
       singular vectors of layer l are the right ones of layer l+1.
  (O4) Binary cross-entropy (J* = sigma u* u*^T):
       ``h_l = M_l ... M_1 x + a_l (u*^T Q_0 x) Q_l^T u*`` with T5's a_l. The trajectory
       is a line with constant step ratio in the g-frame, not in general in the
       h-frame: RA1 holds up to the known rotations Q_l.
No skip (M_l = 0):
  (N1) ``J_l J_l^T = J_{l+1}^T J_{l+1}`` and ``lambda_J J_L J_L^T = lambda_W W^T W``:
       all J_l share their singular values, ``sigma_i(J_L) = sqrt(kappa) sigma_i(W)``
       (deep-linear-network balancedness). From a small initial point the solver
       usually stops at the saddle J = W = 0, where everything holds trivially.
Correlation skips (M symmetric positive definite):
  (C1) with R = M_L^{1/2}: ``R^{-1} J_L R = R^{-1} (J_L M_L) R^{-1}`` is symmetric, so
       J_L is diagonalisable with real eigenvalues.
Sparse unipotent skips: only (G1), (G2), T1, T2.

Numerical counterexamples (measured, not theorems): for correlation and
sparse-unipotent skips the singular values differ across layers and
``J_l M_l^T`` is not symmetric for l < L, so (O2)/(O3) do not extend beyond
orthogonal skips. The numbers are recorded by :func:`observations`.
"""

from __future__ import annotations

import numpy as np
import sympy as sp
from sympy import Identity, MatrixSymbol

from . import _numerics as nm
from . import t2_chain as t2
from . import t3_identity_skips as t3
from . import t5_trajectories as t5
from ._exact import ProofLog, ProofResult, Rules, require_nc_zero, skew

__all__ = ["prove", "check_simulation", "observations", "rotated_jacobians", "rotate", "DEFAULT_CASES"]

d, C, N = sp.symbols("d C N", integer=True, positive=True)
lam_J, lam_W = sp.symbols("lambda_J lambda_W", positive=True)
kappa = lam_W / lam_J


def rotate(J, Q_left, Q_right):
    """The rotated Jacobian ``J' = Q_left J Q_right^T`` (``J'_l = Q_l J_l Q_{l-1}^T``).

    Used by the symbolic proof and by :func:`rotated_jacobians`, so a wrong rotation
    fails both.
    """
    return Q_left * J * Q_right.T


def _general(log: ProofLog) -> None:
    J0, J1, M0, M1 = (MatrixSymbol(n, d, d) for n in ("J_l", "J_next", "M_l", "M_next"))
    W = MatrixSymbol("W", C, d)
    rho_top = lam_J * (J0 * (M0 + J0).T - t2.S_of(W))  # T2 at the top (its S), with J0 = J_L
    require_nc_zero(skew(J0 * M0.T) - skew(rho_top) / lam_J, "skew(J_L M_L^T) = skew(rho_L)/lambda_J")
    log.claim("(G1) J_L M_L^T is symmetric at every critical point, for ANY skip M_L", "all sizes",
              "free-algebra certificate with T2's top residual")
    rho = t2.chain_residual(J0, M0 + J0, J1, M1 + J1)  # T2's residual
    require_nc_zero(skew(J0 * M0.T) - skew(M1.T * J1) - skew(rho), "skew(J_l M_l^T) = skew(M_{l+1}^T J_{l+1})")
    log.claim("(G2) skew(J_l M_l^T) = skew(M_{l+1}^T J_{l+1}) for l < L, any skips", "all sizes",
              "free-algebra certificate with T2's residual")
    orth = Rules.make(orthogonal=["M_l"])
    require_nc_zero(J0 - (J0 * M0.T) * M0, "J_L = (J_L M_L^T) M_L", orth)
    log.claim(
        "orthogonal M_L: J_L = S M_L with S = J_L M_L^T symmetric; if S = U Lambda U^T then J_L = U |Lambda| "
        "(sign(Lambda) U^T M_L), so v_i = +-M_L^T u_i (sign + where the eigenvalue of S is positive)",
        "all sizes", "free-algebra identity modulo M_L^T M_L = I; SVD read off (stated)",
    )


def _orthogonal(log: ProofLog) -> None:
    I = Identity(d)
    Qn, M1, M0 = (MatrixSymbol(n, d, d) for n in ("Q_next", "M_next", "M_l"))  # Q_{l+1}, M_{l+1}, M_l
    J0, J1 = MatrixSymbol("J_l", d, d), MatrixSymbol("J_next", d, d)
    W = MatrixSymbol("W", C, d)
    orth = Rules.make(orthogonal=["Q_next", "M_next", "M_l"])
    Ql, Qprev = Qn * M1, Qn * M1 * M0  # Q_l = Q_{l+1} M_{l+1}, Q_{l-1} = Q_l M_l
    Jp0, Jp1 = rotate(J0, Ql, Qprev), rotate(J1, Qn, Ql)  # J'_l, J'_{l+1}
    rho = t2.chain_residual(J0, M0 + J0, J1, M1 + J1)  # T2's residual
    require_nc_zero(Jp0 * (I + Jp0).T - (I + Jp1).T * Jp1 - Ql * rho * Ql.T,
                    "rotated chain identity = Q_l rho_l Q_l^T", orth)
    top_orth = Rules.make(orthogonal=["M_l"])  # Q_L = I, Q_{L-1} = M_L
    JpL = rotate(J0, Identity(d), M0)
    require_nc_zero(JpL * (I + JpL).T - t2.S_of(W) - (J0 * (M0 + J0).T - t2.S_of(W)),
                    "rotated top identity", top_orth)
    log.claim(
        "(O2) orthogonal skips: J'_l = Q_l J_l Q_{l-1}^T satisfy the identity-skip chain identities, so (T3's "
        "algebra) every J'_l is symmetric and J'_l + J'_l^2 = kappa W^T W, unconditionally",
        "all sizes",
        "free-algebra certificates modulo M^T M = M M^T = I and Q_{l+1} orthogonal (a product of orthogonal "
        "skips), any depth (Q_{l+1} free)",
    )
    require_nc_zero(Ql.T * Jp0 * Ql - J0 * M0.T, "J_l M_l^T = Q_l^T J'_l Q_l", orth)
    require_nc_zero(Ql.T * Jp0 * Qprev - J0, "J_l = Q_l^T J'_l Q_{l-1}", orth)
    log.claim(
        "(O2) J_l M_l^T = Q_l^T J'_l Q_l is symmetric at every layer; (O3) under T3's hypothesis on J'_l, "
        "J_l = Q_l^T J* Q_{l-1}: equal singular values across layers, J_l M_l^T PSD, v_l = M_l^T u_l, and the left "
        "singular vectors of layer l are the right ones of layer l+1",
        "all sizes",
        "free-algebra identities modulo orthogonality + T3 (spectral step stated there)",
    )
    h = MatrixSymbol("h_prev", d, 1)
    require_nc_zero(Ql * ((M0 + J0) * h) - (I + Jp0) * (Qprev * h), "Q_l h_l = (I + J'_l) Q_{l-1} h_{l-1}", orth)
    require_nc_zero(Jp0.T * Jp0 - Qprev * J0.T * J0 * Qprev.T, "|J'_l|_F = |J_l|_F (Gram matrices conjugate)", orth)
    require_nc_zero(Ql.T * Qprev - M0, "Q_l^T Q_{l-1} = M_l, so Q_l^T Q_0 = M_l ... M_1", orth)
    log.claim(
        "(O1) h_l = Q_l^T g_l with g_l = (I + J'_l) g_{l-1}, g_0 = Q_0 x, |J'_l|_F = |J_l|_F; (O4) with T5, "
        "h_l = M_l...M_1 x + a_l (u*^T Q_0 x) Q_l^T u* in the rank-one case",
        "all sizes",
        "free-algebra identities modulo orthogonality, induction over l (Q_l^T Q_{l-1} = M_l)",
    )


def _none_and_correlation(log: ProofLog) -> None:
    J0, J1 = MatrixSymbol("J_l", d, d), MatrixSymbol("J_next", d, d)
    Z = sp.ZeroMatrix(d, d)
    rho = t2.chain_residual(J0, Z + J0, J1, Z + J1)
    require_nc_zero(rho - (J0 * J0.T - J1.T * J1), "T2 with M = 0 is J_l J_l^T = J_{l+1}^T J_{l+1}")
    log.claim(
        "(N1) no skip: J_l J_l^T = J_{l+1}^T J_{l+1} and lambda_J J_L J_L^T = lambda_W W^T W, so every J_l has the "
        "singular values of J_L, sigma_i(J_L) = sqrt(kappa) sigma_i(W)",
        "all sizes",
        "T2 specialised (free algebra); eig(X X^T) = eig(X^T X) (stated)",
    )
    R, Ri = MatrixSymbol("R", d, d), MatrixSymbol("R_inv", d, d)
    inv = Rules.make(symmetric=["R", "R_inv"],
                     pairs={(("R", False), ("R_inv", False)): 1, (("R_inv", False), ("R", False)): 1})
    T = J0 * (R * R)  # J_L M_L with M_L = R^2
    require_nc_zero(Ri * J0 * R - Ri * T * Ri, "R^{-1} J_L R = R^{-1} (J_L M_L) R^{-1}", inv)
    require_nc_zero(skew(Ri * T * Ri) - Ri * skew(T) * Ri, "congruence keeps symmetry", inv)
    log.claim(
        "(C1) symmetric positive definite M_L = R^2: R^{-1} J_L R = R^{-1} (J_L M_L) R^{-1} is symmetric (by G1), so "
        "J_L is diagonalisable with a real spectrum",
        "all sizes",
        "free-algebra identities modulo R R^{-1} = R^{-1} R = I, R, R^{-1} symmetric",
    )


def rotated_jacobians(J: np.ndarray, M: np.ndarray) -> np.ndarray:
    """``J'_l = Q_l J_l Q_{l-1}^T`` with ``Q_l = M_L ... M_{l+1}``."""
    L, dd = J.shape[0], J.shape[1]
    Q = [None] * (L + 1)
    Q[L] = np.eye(dd)
    for l in range(L, 0, -1):
        Q[l - 1] = Q[l] @ M[l - 1]
    Jq = MatrixSymbol("J", dd, dd)
    Ql, Qr = MatrixSymbol("Q_left", dd, dd), MatrixSymbol("Q_right", dd, dd)
    f = sp.lambdify((Jq, Ql, Qr), rotate(Jq, Ql, Qr), "numpy")
    return np.stack([np.asarray(f(J[l - 1], Q[l], Q[l - 1]), dtype=float) for l in range(1, L + 1)]), Q


def check_simulation(sim, family: str, log: ProofLog) -> None:
    """What survives for ``family`` at a converged k = 1 simulation."""
    if nm.trivial(sim):
        log.note(f"{sim!r}: J ~ 0 (trivial critical point); T6 not checked there")
        return
    tol = nm.tolerance(sim)
    J, M = nm.as_numpy(sim.jacobians), nm.as_numpy(sim.skips)
    Wn = nm.as_numpy(sim.classifier)
    lJ, lW = sim.weight_decay
    L = J.shape[0]
    tag = f"[{family}] {sim!r}"
    log.deviation(f"(G1) asym(J_L M_L^T) {tag}", nm.asym(J[-1] @ M[-1].T), tol)
    for l in range(L - 1):
        a, b = J[l] @ M[l].T, M[l + 1].T @ J[l + 1]
        den = np.linalg.norm(a) + np.linalg.norm(b)
        dev = 0.0 if den == 0 else np.linalg.norm((a - a.T) - (b - b.T)) / den
        log.deviation(f"(G2) skew transport, l = {l + 1} {tag}", dev, tol)
    if family in nm.ORTHOGONAL_FAMILIES:
        Jp, Q = rotated_jacobians(J, M)
        for l in range(L):
            log.deviation(f"(O2) asym(J'_{l + 1}) {tag}", nm.asym(Jp[l]), tol)
            log.deviation(f"(O2) asym(J_l M_l^T), l = {l + 1}", nm.asym(J[l] @ M[l].T), tol)
        lo = np.linalg.eigvalsh((Jp + np.swapaxes(Jp, 1, 2)) / 2).min()
        if not lo > -0.5 + 1e-6:
            log.note(f"rotated spectral hypothesis fails for {tag}; (O3) not checked")
            return
        Jstar = t3.closed_form(Wn, lW / lJ)
        ref = np.linalg.norm(Jstar) or 1.0
        sv = np.linalg.svd(J, compute_uv=False)
        for l in range(L):
            log.deviation(f"(O3) J'_l = J*, l = {l + 1}", nm.rel(Jp[l], Jstar, ref), tol)
            log.deviation(f"(O3) singular values equal across layers, l = {l + 1}",
                          np.abs(sv[l] - sv[-1]).max() / max(sv[-1, 0], 1e-300), tol)
            U, S, Vt = np.linalg.svd(J[l])
            gap = (S[0] - S[1]) / S[0] if len(S) > 1 else 1.0
            if gap > 1e-3:
                # Singular vectors move by (perturbation / gap): scale the deviation back by the gap.
                log.deviation(f"(O3) v_1 = M_l^T u_1 (times relative gap), l = {l + 1}",
                              np.linalg.norm(Vt[0] - M[l].T @ U[:, 0]) * gap, tol)
        if sim.classes == 2 and sim.config["loss"] == "cross_entropy":
            w, V = np.linalg.eigh(Jstar)
            s, u = w[-1], V[:, -1]
            H = np.swapaxes(nm.as_numpy(sim.representations), 1, 2)
            x = H[0]
            scale = np.abs(H).max()
            skip_only = x
            for l in range(1, L + 1):
                skip_only = M[l - 1] @ skip_only
                a_l, _ = nm.lambdify_eval((t5.sigma, t5.c, t5.l_sym), t5.a_expr, (s, 1.0, l))
                pred = skip_only + float(a_l) * np.outer(Q[l].T @ u, u @ (Q[0] @ x))
                log.deviation(f"(O4) trajectory formula, l = {l}", np.abs(H[l] - pred).max() / scale, tol)
    elif family == "none":
        gram = np.linalg.norm(J[-1] @ J[-1].T)
        for l in range(L - 1):
            log.deviation(f"(N1) balancedness, l = {l + 1} {tag}",
                          np.linalg.norm(J[l] @ J[l].T - J[l + 1].T @ J[l + 1]) / gram, tol)
        log.deviation("(N1) lambda_J J_L J_L^T = lambda_W W^T W",
                      nm.rel(lJ * J[-1] @ J[-1].T, lW * Wn.T @ Wn), tol)
        sv = np.linalg.svd(J, compute_uv=False)
        log.deviation("(N1) singular values equal across layers", np.abs(sv - sv[-1]).max() / sv[-1, 0], tol)
    elif family == "correlation":
        R = nm.sym_sqrt_psd(M[-1])
        log.deviation(f"(C1) asym(R^-1 J_L R) {tag}", nm.asym(np.linalg.solve(R, J[-1] @ R)), tol)


def observations(sim) -> dict:
    """Measured quantities that no theorem here predicts (non-orthogonal skips).

    Returns the relative spread of the singular values across layers, the largest
    ``asym(J_l M_l^T)`` over l < L, and the largest ``line_defect`` over inputs
    (``sigma_2/sigma_1`` of the displacements ``h_l - h_0``; 0 for a straight line).
    """
    J, M = nm.as_numpy(sim.jacobians), nm.as_numpy(sim.skips)
    sv = np.linalg.svd(J, compute_uv=False)
    H = np.swapaxes(nm.as_numpy(sim.representations), 1, 2)  # (L+1, d, N)
    # Straightness of each input's trajectory: sigma_2/sigma_1 of [h_1 - h_0, ..., h_L - h_0].
    D = np.moveaxis(H[1:] - H[:1], 2, 0)  # (N, L, d)
    s = np.linalg.svd(D, compute_uv=False)
    line_defect = float(np.max(s[:, 1] / s[:, 0])) if s.shape[1] > 1 else 0.0
    return {
        "singular_value_spread": float(np.abs(sv - sv[-1]).max() / sv[-1, 0]),
        "max_asym_lower": float(max((nm.asym(J[l] @ M[l].T) for l in range(J.shape[0] - 1)), default=0.0)),
        "line_defect": line_defect,
    }


DEFAULT_CASES = (
    ("orthogonal", dict(depth=4, classes=3, width=6, samples_per_class=3)),
    ("permutation", dict(depth=3, classes=3, width=5, loss="cross_entropy")),
    ("signed_permutation", dict(depth=3, classes=2, width=4)),
    ("block_orthogonal", dict(depth=3, classes=3, width=5)),
    ("orthogonal", dict(depth=4, classes=2, width=4, samples_per_class=3, loss="cross_entropy")),
    ("none", dict(depth=3, classes=3, width=5, samples_per_class=3, init_scale=1.0)),
    ("none", dict(depth=3, classes=3, width=5, samples_per_class=3)),
    ("correlation", dict(depth=3, classes=3, width=5, samples_per_class=3)),
    ("sparse_unipotent", dict(depth=3, classes=3, width=5, samples_per_class=3, loss="cross_entropy")),
)


def prove(*, numerical: bool = True) -> ProofResult:
    """Prove T6 and the per-family statements; check them numerically."""
    log = ProofLog("T6", "entangled skips: J_L M_L^T symmetric (any M); orthogonal M reduce to T3")
    _general(log)
    _orthogonal(log)
    _none_and_correlation(log)
    if numerical and nm.simulate_available():
        for family, cfg in DEFAULT_CASES:
            sim = nm.converged(skip=family, **cfg)
            check_simulation(sim, family, log)
            if family in ("correlation", "sparse_unipotent") or sim.config["loss"] == "cross_entropy":
                obs = observations(sim)
                log.note(f"measured [{family}, {sim.config['loss']}, C={sim.classes}] singular-value spread across "
                         f"layers {obs['singular_value_spread']:.3g}, max_(l<L) asym(J_l M_l^T) "
                         f"{obs['max_asym_lower']:.3g}, trajectory line defect {obs['line_defect']:.3g}")
        log.claim("(G1), (G2) for every family; (O2)-(O4) for orthogonal families; (N1); (C1) at converged "
                  "simulations", "numerical", "NumPy recomputation, lambdified f and a_l")
    elif numerical:
        log.note("ramodel.simulate unavailable: numerical checks skipped")
    return log.result()
