"""T4 (RA4): depth scaling of the singular values for a given end-to-end map.

Statement. Let J be symmetric PSD (as T3 gives for identity skips, k = 1, under its
spectral hypothesis) and P = (I + J)^L. Then

    sigma_i(J) = p_i^{1/L} - 1,    p_i = sigma_i(P),    and    L (p^{1/L} - 1) -> log p  (L -> inf, p > 0 fixed).

What is proven, exactly:
* (all sizes, all L) ``(I + Q D Q^T)^l = Q (I + D)^l Q^T`` for orthogonal Q by
  induction (base l = 0 and the step l -> l+1 as free-algebra identities modulo
  ``Q^T Q = Q Q^T = I``, with ``E = (I + D)^l`` a free symbol). With the spectral
  theorem (J = Q D Q^T, D >= 0 diagonal; stated) P is symmetric PSD with eigenvalues
  (1 + sigma_i)^L, so its singular values are p_i = (1 + sigma_i)^L, in the same order
  because t -> (1 + t)^L is increasing on t >= 0; and ``((1 + sigma)^L)^{1/L} = 1 + sigma``.
* (exact) ``p^{1/L} = exp(log p / L)``; with eps = 1/L, ``L (p^{1/L} - 1) =
  (exp(a eps) - 1)/eps`` (a = log p), whose Taylor coefficients at eps = 0 are
  ``a^{k+1}/(k+1)!`` (checked exactly for k <= 6); the value at eps = 0 is a = log p.
  ``sympy.limit`` gives the same. The remainder bound
  ``|L(p^{1/L} - 1) - log p| <= (log p)^2 e^{|log p|/L} / (2L)`` is Lagrange's form of
  Taylor's theorem (stated; checked numerically).

How the optimal P itself depends on L (k = 1: L sigma_1 = Theta(log L); k = 2: converges)
is T7 (:mod:`proofs.t7_depth_law`), proven there for the reduced problem.
"""

from __future__ import annotations

import numpy as np
import sympy as sp
from sympy import Identity, MatrixSymbol

from . import _numerics as nm
from ._exact import ProofLog, ProofResult, Rules, require, require_nc_zero, require_scalar_zero

__all__ = ["prove", "check_simulation", "share_expr", "p", "L_sym", "DEFAULT_CONFIGS"]

d = sp.Symbol("d", integer=True, positive=True)
p = sp.Symbol("p", positive=True)
L_sym = sp.Symbol("L", integer=True, positive=True)
#: Per-layer share of an end-to-end singular value p: ``p^{1/L} - 1``.
share_expr = p ** (1 / L_sym) - 1


def _matrix_part(log: ProofLog) -> None:
    I = Identity(d)
    Q, D, E = (MatrixSymbol(n, d, d) for n in ("Q", "D", "E"))
    orth = Rules.make(orthogonal=["Q"])
    require_nc_zero(I - Q * Q.T, "base: (I + J)^0 = I = Q (I+D)^0 Q^T", orth)
    require_nc_zero((I + Q * D * Q.T) * (Q * E * Q.T) - Q * ((I + D) * E) * Q.T,
                    "step: (I + Q D Q^T) Q (I+D)^l Q^T = Q (I+D)^{l+1} Q^T", orth)
    log.claim(
        "(I + Q D Q^T)^l = Q (I + D)^l Q^T for orthogonal Q, every l (induction)",
        "all sizes",
        "free-algebra identities modulo Q^T Q = Q Q^T = I (base l = 0, step l -> l+1)",
    )
    sigma = sp.Symbol("sigma", nonnegative=True)
    require(((1 + sigma) ** L_sym) ** (1 / L_sym) == 1 + sigma, "((1 + sigma)^L)^{1/L} = 1 + sigma")
    # expand_power_exp writes (1+s)^(L-1) as (1+s)^L/(1+s), so cancel decides it exactly.
    require_scalar_zero(sp.expand_power_exp(sp.diff((1 + sigma) ** L_sym, sigma) - L_sym * (1 + sigma) ** (L_sym - 1)),
                        "derivative of (1+t)^L")
    log.claim(
        "J symmetric PSD with eigenvalues sigma_i => sigma_i(J) = p_i^{1/L} - 1 with p_i = sigma_i((I+J)^L), "
        "order preserved (d/dt (1+t)^L = L (1+t)^{L-1} > 0)",
        "all sizes",
        "the induction above + spectral theorem (stated) + exact scalar identities",
    )


def _limit_part(log: ProofLog) -> None:
    eps, a = sp.Symbol("epsilon", positive=True), sp.Symbol("a", real=True)
    require(sp.expand_log(sp.log(p ** (1 / L_sym))) == sp.log(p) / L_sym,
            "log p^{1/L} = log(p)/L, so p^{1/L} = exp(log p / L)")
    h = (sp.exp(a * eps) - 1) / eps
    require_scalar_zero((L_sym * (sp.exp(a / L_sym) - 1)).subs(L_sym, 1 / eps) - h, "L (e^{a/L} - 1) at L = 1/eps")
    order = 7
    series = sp.series(h, eps, 0, order).removeO()
    for k in range(order):
        require_scalar_zero(series.coeff(eps, k) - a ** (k + 1) / sp.factorial(k + 1), f"Taylor coefficient {k}")
    require(series.subs(eps, 0) == a, "value at eps = 0 is a = log p")
    require(sp.limit(L_sym * share_expr, L_sym, sp.oo) == sp.log(p), "sympy.limit L (p^{1/L} - 1) = log p")
    log.claim(
        "L (p^{1/L} - 1) -> log p as L -> inf for fixed p > 0: exact Taylor coefficients a^{k+1}/(k+1)! "
        "(k <= 6) of (e^{a eps} - 1)/eps, constant term log p; sympy.limit agrees",
        "all sizes",
        "sympy.series coefficients compared with sympy.cancel; analyticity of (e^x - 1)/x (stated)",
    )


def gain_share_errors(sim) -> np.ndarray:
    """``gain_share_error_l`` of METRICS.md (all i <= d), through the lambdified share."""
    J, M = nm.as_numpy(sim.jacobians), nm.as_numpy(sim.skips)
    L = J.shape[0]
    P = np.eye(J.shape[1])
    for Ml, Jl in zip(M, J):
        P = (Ml + Jl) @ P
    pv = np.linalg.svd(P, compute_uv=False)
    share, _ = nm.lambdify_eval((p, L_sym), share_expr, (pv, L))
    s = np.linalg.svd(J, compute_uv=False)
    denom = share[0] if share[0] > 0 else 1.0
    return np.max(np.abs(s - share[None, :]), axis=1) / denom


def check_simulation(sim, log: ProofLog) -> None:
    """Per-layer share of the end-to-end singular values (identity skips, k = 1)."""
    if nm.trivial(sim):
        log.note(f"{sim!r}: J ~ 0 (trivial critical point); T4 not checked there")
        return
    J = nm.as_numpy(sim.jacobians)
    lo = np.linalg.eigvalsh((J + np.swapaxes(J, 1, 2)) / 2).min()
    if not lo > -0.5 + 1e-6:
        log.note(f"T3 hypothesis fails for {sim!r}; T4 not checked there")
        return
    tol = nm.tolerance(sim)
    for l, e in enumerate(gain_share_errors(sim), start=1):
        log.deviation(f"gain share error, l = {l} ({sim!r})", e, tol)


def check_limit(log: ProofLog) -> None:
    """``L (p^{1/L} - 1)`` against ``log p`` and Lagrange's remainder bound."""
    pv = np.array([0.3, 1.0, 2.5, 40.0])
    lp = np.log(pv)
    for L in (1, 4, 64, 4096, 2**20):
        share, _ = nm.lambdify_eval((p, L_sym), share_expr, (pv, L))
        bound = lp**2 * np.exp(np.abs(lp) / L) / (2 * L)
        excess = np.max((np.abs(L * share - lp) - bound) / (1 + np.abs(lp)))
        log.deviation(f"remainder bound exceeded by (L = {L})", max(excess, 0.0), 1e-9)


DEFAULT_CONFIGS = (
    dict(depth=4, classes=3, width=6, samples_per_class=3),
    dict(depth=6, classes=2, width=4, samples_per_class=3, loss="cross_entropy"),
    dict(depth=2, classes=3, width=5, weight_decay=(0.05, 0.02)),
)


def prove(*, numerical: bool = True) -> ProofResult:
    """Prove T4's per-layer formula and limit; check them numerically."""
    log = ProofLog("T4", "sigma_i(J) = p_i^{1/L} - 1, L sigma_i -> log p_i (fixed P)")
    _matrix_part(log)
    _limit_part(log)
    log.note("how the optimal P depends on L is T7 (proofs/t7_depth_law.py): proven for the reduced problem")
    if numerical:
        check_limit(log)
        log.claim("|L(p^{1/L}-1) - log p| within Lagrange's bound for p in {0.3, 1, 2.5, 40}, L up to 2^20",
                  "numerical", "lambdified share, NumPy")
        if nm.simulate_available():
            for cfg in DEFAULT_CONFIGS:
                check_simulation(nm.converged(**cfg), log)
            log.claim("gain share error (METRICS.md) <= tol at converged identity-skip simulations",
                      "numerical", "lambdified p^{1/L} - 1")
        else:
            log.note("ramodel.simulate unavailable: simulation checks skipped")
    return log.result()
