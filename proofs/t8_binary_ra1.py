"""T8, the paper's binary theorem in the UJM: RA2 + RA3 + RA4 => RA1, with unequal sigma_l.

Hypotheses (no stronger than the paper's): rank-one Jacobians with aligned singular
vectors, ``J_l = sigma_l u v^T`` (RA3: rank one; RA2: the same u, v in every layer),
``c = v^T u``, and per-layer gains ``sigma_l`` that may all differ (RA4 only says they are
close to c/L). No criticality is assumed: this is a statement about any such network.

Theorem (all sizes, every L).
(a) ``(I + sigma_l u v^T) ... (I + sigma_1 u v^T) = I + a_l u v^T`` with
    ``a_l = (q_l - 1)/c``, ``q_l = prod_{j<=l} (1 + c sigma_j)`` (c != 0), and ``a_l = sum_{j<=l} sigma_j``
    (c = 0). So ``h_l = x + a_l (v^T x) u``: **every trajectory is a straight line** x + R u (RA1's
    geometry holds with any sigma_l).
(b) The steps are ``h_l - h_{l-1} = sigma_l q_{l-1} (v^T x) u``; consecutive ratio
    ``(sigma_{l+1}/sigma_l)(1 + c sigma_l)``.
(c) Binary/RA2 case ``u = v``, |u| = 1 (c = 1), sigma_l > 0, ``p = prod (1 + sigma_j) = sigma_1(P)``:
    for all l, m   ``(s_min/s_max) / p  <=  |step_l| / |step_m|  <=  (s_max/s_min) p  <=  (s_max/s_min) e^{sum sigma}``.
    Under RA4, ``sigma_l in [(1-eps) g/L, (1+eps) g/L]``: ratio <= ``(1+eps)/(1-eps) e^{(1+eps) g}``, and
    consecutive ratios are within ``[(1-eps)/(1+eps), (1+eps)/(1-eps) (1 + (1+eps) g/L)]``.
    The bound is attained up to the factor (1 + sigma) by equal sigma (T5: ratio (1+sigma)^{L-1} = p/(1+sigma)).
    So the steps are **not** asymptotically equal: they stay within a factor ~p of each other, and
    consecutive steps become equal only when the sigma_l do (eps -> 0) and L -> inf.

Stated textbook facts: ``1 + s <= e^s`` (convexity of exp).
"""

from __future__ import annotations

import numpy as np
import sympy as sp
from sympy import Identity, MatrixSymbol

from ._exact import ProofLog, ProofResult, Rules, require_nc_zero, require_scalar_zero

__all__ = ["coefficient", "prove", "step_ratio_bound", "trajectory_check"]

d = sp.Symbol("d", integer=True, positive=True)
c, sig, a, qv = sp.symbols("c sigma a q", real=True)


def coefficient(q, cval):
    """``a_l`` from ``q_l = prod_{j<=l}(1 + c sigma_j)``: ``(q - 1)/c``."""
    return (q - 1) / cval


def _symbolic(log: ProofLog) -> None:
    I = Identity(d)
    u, v, x = (MatrixSymbol(n, d, 1) for n in ("u", "v", "x"))
    contract = Rules.make(pairs={(("v", True), ("u", False)): c})
    # Induction step with a layer-dependent sigma: (I + s u v^T)(I + a u v^T) = I + (s + a(1 + s c)) u v^T.
    require_nc_zero((I + sig * u * v.T) * (I + a * u * v.T) - (I + (sig + a + sig * a * c) * u * v.T),
                    "step with sigma_{l+1}", contract)
    require_scalar_zero(coefficient(qv * (1 + c * sig), c) - (sig + coefficient(qv, c) * (1 + sig * c)),
                        "a_{l+1} = sigma_{l+1} + a_l (1 + c sigma_{l+1}) with q_{l+1} = q_l (1 + c sigma_{l+1})")
    require_scalar_zero(coefficient(sp.Integer(1), c), "a_0 = 0 (q_0 = 1)")
    log.claim("(a) prod_l (I + sigma_l u v^T) = I + ((prod_{j<=l}(1 + c sigma_j) - 1)/c) u v^T for any sigma_1..sigma_L "
              "(c = v^T u != 0), every L", "all sizes",
              "induction: free-algebra step modulo v^T u = c with sigma_{l+1} free, scalar recursion by cancel")
    zero = Rules.make(pairs={(("v", True), ("u", False)): 0})
    require_nc_zero((I + sig * u * v.T) * (I + a * u * v.T) - (I + (sig + a) * u * v.T), "c = 0 step", zero)
    log.claim("(a) c = 0: the product is I + (sigma_1 + ... + sigma_l) u v^T", "all sizes",
              "induction in the free algebra modulo v^T u = 0")
    require_nc_zero((I + a * u * v.T) * x - (x + u * (a * v.T * x)), "h_l = x + a_l (v^T x) u")
    log.claim("(a) h_l = x + a_l (v^T x) u: every trajectory lies on the line x + R u (RA1), whatever the sigma_l",
              "all sizes", "free-algebra identity")
    # (b) steps: a_l - a_{l-1} = sigma_l q_{l-1}.
    q_prev = qv
    require_scalar_zero(coefficient(q_prev * (1 + c * sig), c) - coefficient(q_prev, c) - sig * q_prev,
                        "a_l - a_{l-1} = sigma_l q_{l-1}")
    s1, s2 = sp.symbols("sigma_l sigma_next", positive=True)
    step_l, step_n = s1 * q_prev, s2 * q_prev * (1 + c * s1)
    require_scalar_zero(step_n / step_l - s2 / s1 * (1 + c * s1), "consecutive ratio")
    log.claim("(b) step_l = sigma_l q_{l-1} (v^T x) u, consecutive ratio (sigma_{l+1}/sigma_l)(1 + c sigma_l)",
              "all sizes", "exact rational identities")
    # (c) bound: for m < l, |step_l|/|step_m| = (sigma_l/sigma_m) prod_{m<=j<l}(1 + sigma_j), a product of
    # factors >= 1 that divides p; so it lies in [ (s_min/s_max)/p, (s_max/s_min) p ].
    Pm, Pr, Pl = sp.symbols("P_before P_between P_after", positive=True)  # p = P_before * P_between * P_after
    ratio = (s2 * Pm * Pr) / (s1 * Pm)  # q_{l-1} = P_before P_between, q_{m-1} = P_before
    require_scalar_zero(ratio - s2 / s1 * Pr, "step_l/step_m = (sigma_l/sigma_m) prod_{m<=j<l}(1+sigma_j)")
    require_scalar_zero((Pm * Pr * Pl) / Pr - Pm * Pl, "p / P_between = P_before P_after >= 1")
    log.claim("(c) u = v unit, sigma_l > 0: step_l/step_m = (sigma_l/sigma_m) prod_{m<=j<l}(1+sigma_j), and "
              "1 <= prod_{m<=j<l}(1+sigma_j) <= p, so (s_min/s_max)/p <= |step_l|/|step_m| <= (s_max/s_min) p "
              "<= (s_max/s_min) exp(sum_j sigma_j)", "all sizes",
              "exact identities; every factor 1 + sigma_j >= 1; 1 + s <= e^s (stated)")
    log.assume("1 + s <= e^s for every real s", "convexity of exp; e.g. Hardy, Littlewood & Polya, Inequalities, 2.7")
    eps, g, L = sp.symbols("epsilon g L", positive=True)
    smax, smin = (1 + eps) * g / L, (1 - eps) * g / L
    require_scalar_zero(smax / smin - (1 + eps) / (1 - eps), "RA4 spread")
    log.claim("(c) under RA4, sigma_l in [(1-eps) g/L, (1+eps) g/L]: |step_l|/|step_m| <= (1+eps)/(1-eps) "
              "e^{(1+eps) g}; consecutive ratios lie in [(1-eps)/(1+eps), (1+eps)/(1-eps)(1 + (1+eps)g/L)]. "
              "Equal sigma (eps = 0) give the extreme ratio (1+sigma)^{L-1} = p/(1+sigma): the bound is tight up to "
              "1 + sigma, and the steps do not become equal as L grows (they spread by ~p)", "all sizes",
              "exact substitution; the rest follows from the previous claim")


def step_ratio_bound(sigmas) -> float:
    """``(max sigma / min sigma) * prod(1 + sigma)``: the proven bound on max/min step (u = v, c = 1)."""
    s = np.asarray(sigmas, dtype=float)
    return float(s.max() / s.min() * np.prod(1 + s))


def trajectory_check(sigmas, u, v, x) -> tuple[float, float, float]:
    """Matrix products against (a), and (measured max/min step, bound) for one profile.

    Returns ``(closed-form error, measured max/min step ratio, bound)``; the ratio and bound
    are meaningful for u = v.
    """
    s = np.asarray(sigmas, dtype=float)
    dd = u.shape[0]
    cval = float(v @ u)
    h = [x]
    prod = np.eye(dd)
    err = 0.0
    q = 1.0
    for sl in s:
        prod = (np.eye(dd) + sl * np.outer(u, v)) @ prod
        q *= 1 + cval * sl
        coef = coefficient(q, cval) if abs(cval) > 1e-12 else None
        if coef is None:
            coef = float(np.sum(s[: len(h)]))
        closed = np.eye(dd) + coef * np.outer(u, v)
        err = max(err, float(np.linalg.norm(prod - closed) / np.linalg.norm(prod)))
        h.append(prod @ x)
    steps = np.linalg.norm(np.diff(np.stack(h), axis=0), axis=1)
    return err, float(steps.max() / steps.min()), step_ratio_bound(s)


def _numerical(log: ProofLog, *, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    worst_err, slack = 0.0, []
    for dd in (3, 7):
        for L in (2, 8, 64):
            for trial in range(4):
                u = rng.standard_normal(dd)
                u /= np.linalg.norm(u)
                v = rng.standard_normal(dd) if trial % 2 else u.copy()
                x = rng.standard_normal(dd)
                g = rng.uniform(0.2, 2.0)
                sig = g / L * rng.uniform(0.5, 1.5, L)
                err, ratio, bound = trajectory_check(sig, u, v, x)
                worst_err = max(worst_err, err)
                if np.allclose(u, v):
                    log.deviation(f"step ratio above the bound (d={dd}, L={L})", max(0.0, ratio / bound - 1), 1e-12)
                    slack.append(ratio / bound)
    log.deviation("closed form (a) vs matrix products, unequal sigma_l", worst_err, 1e-12)
    log.claim("(a) against matrix products (random unequal sigma_l, c != 0 and c = 1) to 1e-12; (c) measured "
              "max/min step ratio <= the bound", "numerical", "NumPy float64")
    log.note(f"measured max/min step ratio / bound over random RA4 profiles: {min(slack):.3f} .. {max(slack):.3f}")


def prove(*, numerical: bool = True) -> ProofResult:
    """Prove T8 (lines for unequal sigma_l, step-inequality bound); check it numerically."""
    log = ProofLog("T8", "binary RA1 from RA2-RA4: straight lines for unequal sigma_l, steps within (s_max/s_min) p")
    _symbolic(log)
    log.note("trained binary nets (proofs/evidence_t8_trained.py, needs torch, not part of this run): digits 0 vs 1, "
             "bias-free ReLU ResidualMLP width 16, terminal protocol: median max/min step ratio 16.72 vs bound 16.91 "
             "(depth 8), 3.29 vs 3.33 (depth 16); ratio <= bound on 100% of 91 test inputs")
    if numerical:
        _numerical(log)
    return log.result()
