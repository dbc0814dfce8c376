"""T3 (RA2): identity skips give equal, symmetric PSD Jacobians with a closed form.

Statement (k = 1, M_l = I, lambda_J, lambda_W > 0, any differentiable loss). Let
``kappa = lambda_W / lambda_J`` and ``S = kappa W^T W``. At every critical point:

(a) every J_l is symmetric and ``J_l + J_l^2 = S`` for every l -- with no spectral
    hypothesis at all;
(b) if moreover every J_l has its eigenvalues above -1/2, then
    ``J_1 = ... = J_L = J = f(S)`` with ``f(mu) = (-1 + sqrt(1 + 4 mu))/2``, i.e.
    ``J = (-I + (I + 4 kappa W^T W)^{1/2})/2``, and J is PSD.

Proof structure.
1. (all sizes) Write rho_l = J_l(I+J_l)^T - (I+J_{l+1})^T J_{l+1} (zero by T2) and
   rho_L = J_L(I+J_L)^T - S. The free-algebra identity
   ``skew(J_l) - skew(J_{l+1}) = skew(rho_l)`` holds because J J^T and J^T J are
   symmetric; with ``skew(J_L) = skew(rho_L)`` (S symmetric) a downward induction
   gives skew(J_l) = 0 for all l. This is the spec's sketch step
   "J_L + J_L J_L^T symmetric => J_L symmetric": it needs only that J_L J_L^T is
   symmetric, so there is no gap.
2. (all sizes) ``(J_l + J_l^2) - (J_{l+1} + J_{l+1}^2) = rho_l + J_l skew(J_l)
   - skew(J_{l+1}) J_{l+1}``, and the same at the top with S: so J_l + J_l^2 = S.
3. (scalar, exact) ``g(t) = t + t^2`` has ``g(t) - g(s) = (t - s)(1 + t + s)``, so g is
   injective on t > -1/2; ``f(mu)`` solves ``g(t) = mu``, ``f(mu) + 1/2 = sqrt(1+4mu)/2 > 0``
   and ``f(mu) = 2 mu / (1 + sqrt(1+4mu))`` has the sign of mu (so f >= 0 on mu >= 0);
   the other root is ``-1/2 - sqrt(1+4mu)/2 <= -1`` for mu >= 0.
4. (all sizes + one stated fact) ``(I + 2J)^2 - (I + 4S) = 4(J + J^2 - S)``, so a
   symmetric J_l with J_l + J_l^2 = S and eigenvalues above -1/2 makes I + 2J_l a
   positive definite square root of I + 4S; by uniqueness of the PSD square root
   (Horn & Johnson, Thm 7.2.6; recorded with ``log.assume``) I + 2J_l = (I + 4S)^{1/2},
   i.e. J_l = f(S) for every l. S is T2's (:func:`proofs.t2_chain.S_of`), re-certified
   here from the gradient by :func:`proofs.t2_chain.check_top`.
5. (all sizes) The matrix closed form: with R^2 = I + 4 kappa W^T W and J = (R - I)/2,
   ``J + J^2 - kappa W^T W = (R^2 - I - 4 kappa W^T W)/4``.

Extension (any k >= 2, identity skips): at every critical point every *data gradient*
grad_l = grad_{J_l} Phi_data is symmetric (all sizes; certificate below). For k = 2
the Jacobians themselves are observed (numerically only) to be symmetric PSD and equal
across depth; that is not proven here.
"""

from __future__ import annotations

import numpy as np
import sympy as sp
from sympy import Identity, MatrixSymbol

from . import _numerics as nm
from . import gradient
from . import t2_chain as t2
from ._exact import ProofLog, ProofResult, require, require_nc_zero, require_scalar_zero, skew

__all__ = ["prove", "check_simulation", "f_expr", "mu", "closed_form", "DEFAULT_CONFIGS"]

d, C, N = sp.symbols("d C N", integer=True, positive=True)
lam_J, lam_W = sp.symbols("lambda_J lambda_W", positive=True)
kappa = sp.Symbol("kappa", positive=True)
mu = sp.Symbol("mu", real=True)
#: The root of t + t^2 = mu above -1/2.
f_expr = (-1 + sp.sqrt(1 + 4 * mu)) / 2


def _matrix_part(log: ProofLog) -> None:
    I = Identity(d)
    J0, J1 = MatrixSymbol("J_l", d, d), MatrixSymbol("J_next", d, d)
    W, G, H = MatrixSymbol("W", C, d), MatrixSymbol("G", C, N), MatrixSymbol("H_prev", d, N)
    # S and both residuals come from T2 (identity skips: A_l = I + J_l); check_top
    # re-certifies J_L A_L^T = S from the gradient in this setting.
    t2.check_top(J0, I + J0, W, G, H)
    S = t2.S_of(W)
    rho = t2.chain_residual(J0, I + J0, J1, I + J1)
    rho_top = J0 * (I + J0).T - S
    require_nc_zero(skew(J0) - skew(J1) - skew(rho), "skew(J_l) - skew(J_{l+1}) = skew(rho_l)")
    require_nc_zero(skew(J0) - skew(rho_top), "skew(J_L) = skew(J_L (I + J_L)^T - S)")
    log.claim(
        "identity skips: every J_l is symmetric at every critical point (downward induction: "
        "skew(J_l) = skew(J_{l+1}) + skew(rho_l), skew(J_L) = skew(rho_L)); no spectral hypothesis",
        "all sizes",
        "free-algebra identities; rho_l = 0 is T2",
    )
    require_nc_zero(
        (J0 + J0 * J0) - (J1 + J1 * J1) - rho - J0 * skew(J0) + skew(J1) * J1,
        "(J_l + J_l^2) - (J_{l+1} + J_{l+1}^2) = rho_l + J_l skew(J_l) - skew(J_{l+1}) J_{l+1}",
    )
    require_nc_zero((J0 + J0 * J0) - S - rho_top - J0 * skew(J0), "J_L + J_L^2 - S = rho_L + J_L skew(J_L)")
    log.claim(
        "identity skips: J_l + J_l^2 = (lambda_W/lambda_J) W^T W for every l at every critical point",
        "all sizes",
        "free-algebra certificates using rho_l = 0 (T2) and skew(J_l) = 0",
    )
    R = MatrixSymbol("R", d, d)
    J = (R - I) / 2
    require_nc_zero(J + J * J - S - (R * R - I - 4 * S) / 4, "closed form with R^2 = I + 4 kappa W^T W")
    log.claim(
        "J = (-I + (I + 4 kappa W^T W)^{1/2})/2 satisfies J + J^2 = kappa W^T W",
        "all sizes",
        "free-algebra identity modulo R^2 = I + 4 kappa W^T W",
    )
    # The lift (formerly a stated lemma): (I + 2 J_l)^2 = I + 4 S exactly when J_l + J_l^2 = S.
    require_nc_zero((I + 2 * J0) * (I + 2 * J0) - (I + 4 * S) - 4 * (J0 + J0 * J0 - S),
                    "(I + 2 J)^2 - (I + 4 S) = 4 (J + J^2 - S)")
    log.claim(
        "lift to matrices: if J_l is symmetric with J_l + J_l^2 = S then (I + 2 J_l)^2 = I + 4 S; when moreover the "
        "eigenvalues of J_l exceed -1/2, I + 2 J_l is symmetric positive definite, hence the principal square root "
        "(I + 4 S)^{1/2} (uniqueness, assumed below), so J_l = ((I + 4 S)^{1/2} - I)/2 = f(S) for every l: equal, PSD",
        "all sizes",
        "free-algebra identity modulo J + J^2 = S (certificate 4 (J + J^2 - S)) + the stated uniqueness theorem",
    )
    log.assume("a symmetric positive semidefinite matrix has exactly one symmetric positive semidefinite square root",
               "Horn & Johnson, Matrix Analysis, 2nd ed., Thm 7.2.6")


def _scalar_part(log: ProofLog) -> None:
    t, s = sp.symbols("t s", real=True)
    # Radicals are decided exactly by parametrising mu > -1/4 through r = sqrt(1 + 4 mu) > 0:
    # every expression below becomes rational in r.
    r = sp.Symbol("r", positive=True)
    at_r = lambda e: e.subs(mu, (r**2 - 1) / 4)  # noqa: E731
    require(at_r(sp.sqrt(1 + 4 * mu)) == r, "sqrt(1 + 4 mu) = r under the parametrisation")
    g = lambda x: x + x**2  # noqa: E731
    require_scalar_zero(g(t) - g(s) - (t - s) * (1 + t + s), "g(t) - g(s) = (t - s)(1 + t + s)")
    require_scalar_zero(at_r(g(f_expr) - mu), "f(mu) + f(mu)^2 = mu")
    other = (-1 - sp.sqrt(1 + 4 * mu)) / 2
    require_scalar_zero(at_r(g(other) - mu), "the other root also solves g = mu")
    require_scalar_zero(at_r(f_expr + sp.Rational(1, 2)) - r / 2, "f + 1/2 = r/2 > 0")
    require_scalar_zero(at_r(other + sp.Rational(1, 2)) + r / 2, "other root + 1/2 = -r/2 < 0")
    require_scalar_zero(at_r(f_expr - 2 * mu / (1 + sp.sqrt(1 + 4 * mu))), "f = 2 mu/(1 + r): sign of f = sign of mu")
    log.claim(
        "t + t^2 = mu has exactly one root above -1/2 for mu > -1/4, namely f(mu) = (-1 + sqrt(1+4mu))/2 "
        "(g injective there since g(t)-g(s) = (t-s)(1+t+s)); f(mu) >= 0 iff mu >= 0; the other root is <= -1 "
        "for mu >= 0",
        "all sizes",
        "sympy.cancel on exact expressions",
    )


def _gradient_symmetry_any_k(log: ProofLog) -> None:
    I = Identity(d)
    G0, G1 = MatrixSymbol("grad_l", d, d), MatrixSymbol("grad_next", d, d)
    Bk0, Rm0, B10 = (MatrixSymbol(n, d, d) for n in ("Bk_l", "Rm_l", "B1_l"))
    Bk1, Rm1, B11 = (MatrixSymbol(n, d, d) for n in ("Bk_next", "Rm_next", "B1_next"))
    J0, J1 = Bk0 * Rm0 * B10, Bk1 * Rm1 * B11
    chi = G0 * (I + J0).T - (I + J1).T * G1  # zero at every point (gradient chain identity)
    rho_top0 = gradient.factor_grad(I, G0, Rm0 * B10) + lam_J * Bk0  # stationarity of B_{l,k}
    rho_bot1 = gradient.factor_grad(Bk1 * Rm1, G1, I) + lam_J * B11  # stationarity of B_{l+1,1}
    require_nc_zero(
        skew(G0) - skew(G1) - skew(chi) + skew(rho_top0 * Bk0.T) - skew(B11.T * rho_bot1),
        "skew(grad_l) - skew(grad_{l+1}) in terms of chi and the stationarity residuals",
    )
    W, GW = MatrixSymbol("W", C, d), MatrixSymbol("grad_W", C, d)
    chi_top = G0 * (I + J0).T - W.T * GW
    rho_W = GW + lam_W * W
    require_nc_zero(skew(G0) - skew(chi_top) + skew(rho_top0 * Bk0.T) - skew(W.T * rho_W), "top layer")
    log.claim(
        "identity skips, any k >= 2: every data gradient grad_{J_l} Phi_data is symmetric at every critical "
        "point (J_l = B_{l,k} R B_{l,1} with R the middle factors)",
        "all sizes",
        "free-algebra certificates (gradient chain identity + stationarity of the outer factors)",
    )


def closed_form(W: np.ndarray, kappa_value: float) -> np.ndarray:
    """``f(S)`` with T2's ``S`` (lambdified :func:`proofs.t2_chain.S_of`) and the lambdified root, spectrally."""
    Wsym = MatrixSymbol("W", *W.shape)
    S_num = sp.lambdify((Wsym, t2.lam_J, t2.lam_W), t2.S_of(Wsym), "numpy")(W, 1.0, float(kappa_value))
    w, V = np.linalg.eigh(np.asarray(S_num, dtype=float))
    fw, _ = nm.lambdify_eval((mu,), f_expr, (np.clip(w, 0.0, None),))
    return (V * fw) @ V.T


def check_simulation(sim, log: ProofLog, *, observe_k2: bool = True) -> None:
    """T3 at a converged identity-skip simulation (k = 1), or its k >= 2 extension."""
    M = nm.as_numpy(sim.skips)
    if not np.array_equal(M, np.broadcast_to(np.eye(sim.width), M.shape)):
        raise ValueError("T3 needs identity skips")
    if nm.trivial(sim):
        log.note(f"{sim!r}: J ~ 0 (trivial critical point); T3 not checked there")
        return
    tol = nm.tolerance(sim)
    J = nm.as_numpy(sim.jacobians)
    lJ, lW = sim.weight_decay
    if sim.config["branch_factors"] >= 2:
        gJ, _, _ = gradient.data_gradients(sim)
        for l in range(J.shape[0]):
            log.deviation(f"asym(grad_{l + 1}) (k >= 2)", nm.asym(gJ[l]), tol)
        if observe_k2:
            Jbar = J.mean(axis=0)
            log.note(
                f"observed only (k={sim.config['branch_factors']}, {sim!r}): max asym(J_l) = "
                f"{max(nm.asym(x) for x in J):.1e}, depth spread = "
                f"{max(nm.rel(x, Jbar, np.linalg.norm(Jbar) or 1.0) for x in J):.1e}"
            )
        return
    for l in range(J.shape[0]):
        log.deviation(f"asym(J_{l + 1}) ({sim!r})", nm.asym(J[l]), tol)
        Wn = nm.as_numpy(sim.classifier)
        log.deviation(f"|J_l + J_l^2 - kappa W^T W| rel, l = {l + 1}",
                      nm.rel(J[l] + J[l] @ J[l], lW / lJ * Wn.T @ Wn), tol)
    sym = (J + np.swapaxes(J, 1, 2)) / 2
    lo = np.linalg.eigvalsh(sym).min()
    if not lo > -0.5 + 1e-6:
        log.note(f"spectral hypothesis fails (min eigenvalue {lo:.3f}); (b) not checked for {sim!r}")
        return
    Jstar = closed_form(nm.as_numpy(sim.classifier), lW / lJ)
    s1 = max(np.linalg.norm(Jstar, 2), 1e-300)
    for l in range(J.shape[0]):
        log.deviation(f"closed-form error, l = {l + 1}", nm.rel(J[l], Jstar, np.linalg.norm(Jstar) or 1.0), tol)
        log.deviation(f"psd defect, l = {l + 1}", max(0.0, -np.linalg.eigvalsh(sym[l]).min()) / s1, tol)
    Jbar = J.mean(axis=0)
    log.deviation("depth spread", max(nm.rel(x, Jbar, np.linalg.norm(Jbar) or 1.0) for x in J), tol)


DEFAULT_CONFIGS = (
    dict(depth=4, classes=3, width=6, samples_per_class=3),
    dict(depth=3, classes=2, width=4, samples_per_class=3, loss="cross_entropy"),
    dict(depth=2, classes=3, width=5, weight_decay=(0.05, 0.02)),
    dict(depth=3, classes=3, width=5, samples_per_class=3, branch_factors=2),
)


def prove(*, numerical: bool = True) -> ProofResult:
    """Prove T3 (and its any-k gradient extension) and check it numerically."""
    log = ProofLog("T3", "identity skips: J_l = J = (-I + (I + 4 kappa W^T W)^{1/2})/2")
    _matrix_part(log)
    _scalar_part(log)
    _gradient_symmetry_any_k(log)
    if numerical and nm.simulate_available():
        for cfg in DEFAULT_CONFIGS:
            check_simulation(nm.converged(**cfg), log)
        log.claim("asymmetry, J + J^2 = kappa W^T W, closed-form error, PSD defect and depth spread <= tol "
                  "(k = 1); asym(grad_l) <= tol (k = 2)", "numerical", "lambdified f(mu), NumPy eigh")
    elif numerical:
        log.note("ramodel.simulate unavailable: numerical checks skipped")
    return log.result()
