"""T5 (RA1): rank-one Jacobians give straight, geometrically spaced trajectories.

Statement. For ``J = sigma u v^T`` with ``c = v^T u``:

    (I + sigma u v^T)^l = I + a_l u v^T,   a_l = ((1 + sigma c)^l - 1)/c  (c != 0),   a_l = l sigma  (c = 0),

so ``h_l = x + a_l (v^T x) u``: all representations of one input lie on the line
``x + R u``; consecutive steps are ``h_l - h_{l-1} = sigma (1 + sigma c)^{l-1} (v^T x) u``,
with constant ratio ``1 + sigma c`` (exactly equal steps when c = 0). In the binary
case (J = sigma u u^T, |u| = 1, sigma >= 0) the end-to-end map has top singular value
``p = (1 + sigma)^L``, so the ratio is ``1 + sigma = p^{1/L}`` (-> 1 as L grows, T4).

What is proven (all sizes, every l): the closed form by induction (base l = 0, step
l -> l+1 in the free algebra modulo the contraction ``v^T u = c``, with
``(1 + sigma c)^l`` a free symbol q); the step and ratio formulas; the c = 0 case (its
own induction) and its agreement with the c -> 0 limit; ``p = (1+sigma)^L`` from the
closed form at c = 1 (P has eigenvalue (1+sigma)^L on u and 1 on u-perp).

When the hypothesis holds at a UJM critical point: binary cross-entropy with identity
skips, k = 1 (T1's cross-entropy refinement gives rank J_l <= C - 1 = 1; T3 gives
J_l = J symmetric PSD, so J = sigma u u^T). With MSE, binary J can have rank 2.
"""

from __future__ import annotations

import numpy as np
import sympy as sp
from sympy import Identity, MatrixSymbol

from . import _numerics as nm
from ._exact import ProofLog, ProofResult, Rules, require, require_nc_zero, require_scalar_zero

__all__ = ["prove", "check_simulation", "a_expr", "sigma", "c", "l_sym", "DEFAULT_CONFIGS"]

d = sp.Symbol("d", integer=True, positive=True)
sigma, c = sp.symbols("sigma c", real=True)
l_sym = sp.Symbol("l", integer=True, nonnegative=True)
#: Coefficient of u v^T in (I + sigma u v^T)^l for c != 0.
a_expr = ((1 + sigma * c) ** l_sym - 1) / c


def _symbolic(log: ProofLog) -> None:
    I = Identity(d)
    u, v, x = (MatrixSymbol(n, d, 1) for n in ("u", "v", "x"))
    contract = Rules.make(pairs={(("v", True), ("u", False)): c})
    a, a_next = sp.symbols("a a_next")
    # Step: (I + sigma u v^T)(I + a u v^T) = I + (sigma + a + sigma a c) u v^T.
    require_nc_zero((I + sigma * u * v.T) * (I + a * u * v.T) - (I + (sigma + a + sigma * a * c) * u * v.T),
                    "(I + s u v^T)(I + a u v^T) = I + (s + a(1 + s c)) u v^T", contract)
    # Scalar recursion a_{l+1} = sigma + a_l (1 + sigma c) with q = (1 + sigma c)^l free.
    q = sp.Symbol("q")
    a_l = (q - 1) / c
    a_l1 = (q * (1 + sigma * c) - 1) / c
    require_scalar_zero(a_l1 - (sigma + a_l * (1 + sigma * c)), "a_{l+1} = sigma + a_l (1 + sigma c)")
    require(a_expr.subs(l_sym, 0) == 0, "a_0 = 0")
    require_scalar_zero(a_expr.subs(l_sym, 1) - sigma, "a_1 = sigma")
    require(sp.expand_power_exp(a_expr.subs(l_sym, l_sym + 1)).subs((1 + sigma * c) ** l_sym, q) == a_l1,
            "a_{l+1} is the closed form at l + 1")
    log.claim(
        "(I + sigma u v^T)^l = I + ((1 + sigma c)^l - 1)/c u v^T for c = v^T u != 0, every l >= 0",
        "all sizes",
        "induction: base l = 0 exact, step in the free algebra modulo v^T u = c, scalar recursion by cancel",
    )
    zero = Rules.make(pairs={(("v", True), ("u", False)): 0})
    require_nc_zero((I + sigma * u * v.T) * (I + a * u * v.T) - (I + (sigma + a) * u * v.T), "c = 0 step", zero)
    require(sp.limit(a_expr, c, 0) == l_sym * sigma, "c -> 0 limit of a_l is l sigma")
    log.claim("c = 0: (I + sigma u v^T)^l = I + l sigma u v^T (the c -> 0 limit of the closed form)",
              "all sizes", "induction (a_{l+1} = a_l + sigma) in the free algebra with v^T u = 0; sympy.limit")
    require_nc_zero((I + a * u * v.T) * x - (x + u * (a * v.T * x)), "h_l = x + a_l (v^T x) u")
    step = sp.expand_power_exp(a_expr - a_expr.subs(l_sym, l_sym - 1)).subs((1 + sigma * c) ** l_sym, q)
    require_scalar_zero(step - sigma * q / (1 + sigma * c), "a_l - a_{l-1} = sigma (1 + sigma c)^{l-1}")
    nxt = sp.expand_power_exp(a_expr.subs(l_sym, l_sym + 1) - a_expr).subs((1 + sigma * c) ** l_sym, q)
    require_scalar_zero(nxt / step - (1 + sigma * c), "consecutive step ratio = 1 + sigma c")
    log.claim(
        "h_l = x + a_l (v^T x) u lies on the line x + R u; steps sigma (1 + sigma c)^{l-1} (v^T x) u, "
        "constant ratio 1 + sigma c; equal steps sigma (v^T x) u when c = 0",
        "all sizes",
        "free-algebra identity and exact rational identities in q = (1 + sigma c)^l",
    )
    # Binary case: J = sigma u u^T, |u| = 1, P = I + ((1 + sigma)^L - 1) u u^T.
    unit = Rules.make(pairs={(("u", True), ("u", False)): 1})
    P = I + (q - 1) * u * u.T  # q = (1 + sigma)^L here
    require_nc_zero(P * u - q * u, "P u = (1 + sigma)^L u", unit)
    log.claim(
        "binary case J = sigma u u^T, |u| = 1: P = (I + J)^L has eigenvalue (1 + sigma)^L on u and 1 on "
        "u-perp, so p = sigma_1(P) = (1 + sigma)^L for sigma >= 0 and the step ratio 1 + sigma = p^{1/L}",
        "all sizes",
        "closed form at c = 1 in the free algebra modulo u^T u = 1; u-perp part: P w = w when u^T w = 0",
    )


def check_closed_form(log: ProofLog, *, seed: int = 0) -> None:
    """Lambdified closed form against matrix powers, c != 0 and c = 0."""
    rng = np.random.default_rng(seed)
    for dd in (3, 6):
        u, v = rng.standard_normal(dd), rng.standard_normal(dd)
        for orth in (False, True):
            if orth:
                v = v - (v @ u) / (u @ u) * u
            cv, s = float(v @ u), 0.37
            for l in (1, 2, 5, 9):
                ref = np.linalg.matrix_power(np.eye(dd) + s * np.outer(u, v), l)
                if orth:
                    coef = l * s
                else:
                    coef, _ = nm.lambdify_eval((sigma, c, l_sym), a_expr, (s, cv, l))
                got = np.eye(dd) + float(coef) * np.outer(u, v)
                log.deviation(f"closed form vs matrix power (d={dd}, l={l}, c={'0' if orth else 'c'})",
                              nm.rel(got, ref), 1e-12)


def check_simulation(sim, log: ProofLog) -> None:
    """Binary cross-entropy, identity skips, k = 1: rank one, closed-form trajectories."""
    if not (sim.classes == 2 and sim.config["loss"] == "cross_entropy" and sim.config["branch_factors"] == 1):
        raise ValueError("T5's check needs a binary cross-entropy simulation with k = 1")
    if nm.trivial(sim):
        log.note(f"{sim!r}: J ~ 0 (trivial critical point); T5 not checked there")
        return
    tol = nm.tolerance(sim)
    J = nm.as_numpy(sim.jacobians)
    U, S, Vt = np.linalg.svd(J[-1])
    log.deviation(f"sigma_2/sigma_1 of J_L ({sim!r})", S[1] / S[0], tol)
    u = U[:, 0] * np.sign(U[:, 0] @ Vt[0])  # J symmetric PSD: u = v
    s = S[0]
    for l in range(J.shape[0]):
        log.deviation(f"|J_l - sigma u u^T| rel, l = {l + 1}", nm.rel(J[l], s * np.outer(u, u)), tol)
    Hs = np.swapaxes(nm.as_numpy(sim.representations), 1, 2)  # (L+1, d, N)
    x = Hs[0]
    scale = np.abs(Hs).max()
    for l in range(1, J.shape[0] + 1):
        a_l, _ = nm.lambdify_eval((sigma, c, l_sym), a_expr, (s, 1.0, l))
        pred = x + float(a_l) * np.outer(u, u @ x)
        log.deviation(f"trajectory closed form, l = {l}", np.abs(Hs[l] - pred).max() / scale, tol)
    steps = np.diff(Hs, axis=0)
    for l in range(1, steps.shape[0]):
        log.deviation(f"step ratio 1 + sigma, l = {l}",
                      np.abs(steps[l] - (1 + s) * steps[l - 1]).max() / scale, tol)


DEFAULT_CONFIGS = (
    dict(depth=4, classes=2, width=5, samples_per_class=3, loss="cross_entropy"),
    dict(depth=7, classes=2, width=3, samples_per_class=2, loss="cross_entropy", weight_decay=(0.03, 0.01)),
)


def prove(*, numerical: bool = True) -> ProofResult:
    """Prove T5 symbolically and check it numerically."""
    log = ProofLog("T5", "rank-one J: h_l = x + a_l (v^T x) u, step ratio 1 + sigma c")
    _symbolic(log)
    if numerical:
        check_closed_form(log)
        log.claim("closed form = matrix power (relative 1e-12), c != 0 and c = 0", "numerical", "lambdified a_l")
        if nm.simulate_available():
            for cfg in DEFAULT_CONFIGS:
                check_simulation(nm.converged(**cfg), log)
            log.claim("binary CE simulations: rank one, J_l = sigma u u^T, trajectories and step ratios match "
                      "the closed form", "numerical", "ramodel.simulate representations")
        else:
            log.note("ramodel.simulate unavailable: simulation checks skipped")
    return log.result()
