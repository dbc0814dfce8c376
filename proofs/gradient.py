"""The gradient formula of MODEL.md §2.

Statement. With ``A_{>l} = A_L ... A_{l+1}``, ``H_{l-1}`` the layer inputs and
``G = d(mean loss)/dZ``,

    grad_{J_l} Phi_data = A_{>l}^T W^T G H_{l-1}^T,      grad_W Phi_data = G H_L^T,

for every skip ``M_l`` and every differentiable loss; with ``k`` branch factors
``J_l = L_i B_{l,i} R_i`` (``L_i = B_{l,k}..B_{l,i+1}``, ``R_i = B_{l,i-1}..B_{l,1}``),
``grad_{B_{l,i}} Phi_data = L_i^T (grad_{J_l} Phi_data) R_i^T``. For the
cross-entropy ``G = (softmax(Z) - Y) / N``; for MSE ``G = (Z - Y) / N``.

Proof parts
-----------
1. All sizes (SymPy matrix calculus on ``MatrixSymbol``\\ s, compared in the free
   algebra): the derivative of ``tr(G^T Z)`` (the chain rule's linear term, G frozen)
   and of the MSE objective, for J_l, W and a factor B_i inside ``L_i B_i R_i``.
   ``A_{>l}`` and ``H_{l-1}`` are symbols: they do not depend on ``J_l``.
2. All C: the cross-entropy derivative ``d/dz_j (log sum_k exp z_k - z_y)
   = exp(z_j)/sum_k exp z_k - [j = y]`` with a symbolic number of classes.
3. Fixed sizes (SymPy's own derivative of the complete Phi, every entry a symbol,
   including a general skip M): MSE with d = C = N = 2, L = 3; cross-entropy with
   d = C = N = 2, L = 2 (exp(z) replaced by free generators after differentiating,
   then decided in an exact rational-function field); k = 2 factors with MSE,
   d = C = N = 2, L = 2. Weight-decay terms included.
4. The gradient chain identity ``grad_l A_l^T = A_{l+1}^T grad_{l+1}`` and
   ``grad_L A_L^T = W^T grad_W`` at *every* point (all sizes): T2's engine.

Numerical: the lambdified formula against central finite differences of an
independent NumPy Phi (MSE and cross-entropy, k = 1 and 2, random skips), and the
gradient norm recomputed from the formula at converged ``ramodel.simulate`` points.
"""

from __future__ import annotations

import functools

import numpy as np
import sympy as sp
from sympy import Identity, MatrixSymbol, Trace
from sympy.polys.domains import QQ, ZZ
from sympy.polys.fields import field
from sympy.polys.rings import ring

from . import _numerics as nm
from ._exact import ProofLog, ProofResult, require, require_nc_zero

__all__ = ["prove", "grad_J_expr", "grad_W_expr", "factor_grad", "data_grad_at", "SYMBOLS", "data_gradients",
           "check_simulation"]

d, C, N = sp.symbols("d C N", integer=True, positive=True)
lam_J, lam_W = sp.symbols("lambda_J lambda_W", positive=True)
Agt = MatrixSymbol("A_gt", d, d)  # A_{>l}
Al = MatrixSymbol("A_l", d, d)
Ml = MatrixSymbol("M_l", d, d)
Jl = MatrixSymbol("J_l", d, d)
Hprev = MatrixSymbol("H_prev", d, N)  # H_{l-1}
HL = MatrixSymbol("H_L", d, N)
W = MatrixSymbol("W", C, d)
G = MatrixSymbol("G", C, N)
Y = MatrixSymbol("Y", C, N)

#: The symbols of the §2 formula, for lambdify.
SYMBOLS = (Agt, W, G, Hprev)
#: ``A_{>l}^T W^T G H_{l-1}^T``.
grad_J_expr = Agt.T * W.T * G * Hprev.T
#: ``G H_L^T``.
grad_W_expr = G * HL.T


def factor_grad(left, grad_J, right):
    """``grad_{B_i} Phi_data = left^T grad_J right^T`` for ``J = left B_i right`` (proven below, any k, i).

    Downstream proofs build every factor gradient through this function, so a wrong
    formula here (e.g. a dropped transpose) fails them as well.
    """
    return left.T * grad_J * right.T


def ce_gradient_entry(exp_zj, sum_exp, delta):
    """The claimed cross-entropy derivative ``softmax_j - [j = y]`` (``exp(z_j)/sum_k exp(z_k) - delta``)."""
    return exp_zj / sum_exp - delta


def data_grad_at(A_gt, W_, G_, H_prev):
    """The §2 data gradient ``A_{>l}^T W^T G H_{l-1}^T`` with the symbols replaced.

    Built from :data:`grad_J_expr` by substitution (read at call time, so a planted
    mutant of ``grad_J_expr`` propagates to every proof that uses this).
    """
    return grad_J_expr.subs({Agt: A_gt, W: W_, G: G_, Hprev: H_prev})


def _all_sizes(log: ProofLog) -> None:
    Z = W * Agt * (Ml + Jl) * Hprev
    # (1) generic loss: the chain rule's linear term <G, Z(theta)> with G frozen.
    lin = Trace(G.T * Z)
    require_nc_zero(lin.diff(Jl) - data_grad_at(Agt, W, G, Hprev), "d tr(G^T Z)/dJ_l = A_{>l}^T W^T G H_{l-1}^T")
    HL_expr = Agt * (Ml + Jl) * Hprev
    require_nc_zero(lin.diff(W) - grad_W_expr.subs(HL, HL_expr), "d tr(G^T Z)/dW = G H_L^T")
    log.claim(
        "grad_{J_l} Phi_data = A_{>l}^T W^T G H_{l-1}^T and grad_W Phi_data = G H_L^T for any "
        "differentiable loss (G = dloss/dZ) and any skip M_l",
        "all sizes",
        "SymPy matrix calculus on MatrixSymbols, compared in the free algebra with transpose",
    )
    # (1b) MSE directly, with G = (Z - Y)/N substituted.
    R = Z - Y
    mse = Trace(R.T * R) / (2 * N)
    require_nc_zero(mse.diff(Jl) - data_grad_at(Agt, W, R / N, Hprev), "MSE gradient in J_l")
    require_nc_zero(mse.diff(W) - (R / N) * HL_expr.T, "MSE gradient in W")
    # (1c) weight decay.
    require_nc_zero(
        (lam_J / 2 * Trace(Jl.T * Jl)).diff(Jl) - lam_J * Jl, "d (lambda/2)|J|^2 / dJ = lambda J"
    )
    log.claim("MSE: G = (Z - Y)/N; weight decay adds lambda_J J_l and lambda_W W", "all sizes",
              "SymPy matrix calculus")
    # (1d) branch factors: J = Lf B Rf for the i-th factor B of any k.
    Lf, B, Rf = (MatrixSymbol(n, d, d) for n in ("L_i", "B_i", "R_i"))
    Zk = W * Agt * (Ml + Lf * B * Rf) * Hprev
    require_nc_zero(
        Trace(G.T * Zk).diff(B) - factor_grad(Lf, grad_J_expr, Rf),
        "d/dB_i = (B_k..B_{i+1})^T grad_J (B_{i-1}..B_1)^T",
    )
    log.claim(
        "k factors: grad_{B_{l,i}} Phi_data = (B_{l,k}..B_{l,i+1})^T grad_{J_l} Phi_data (B_{l,i-1}..B_{l,1})^T",
        "all sizes",
        "SymPy matrix calculus with the neighbours of B_i as single symbols (any k, any i)",
    )
    # (4) gradient chain identity at every point.
    P, A1, A0 = (MatrixSymbol(n, d, d) for n in ("A_gt_next", "A_next", "A_cur"))
    g_l = data_grad_at(P * A1, W, G, Hprev)  # A_{>l} = A_{>l+1} A_{l+1}
    g_next = data_grad_at(P, W, G, A0 * Hprev)  # H_l = A_l H_{l-1}
    require_nc_zero(g_l * A0.T - A1.T * g_next, "grad_l A_l^T = A_{l+1}^T grad_{l+1}")
    g_L = data_grad_at(Identity(d), W, G, Hprev)  # A_{>L} = I
    require_nc_zero(g_L * A0.T - W.T * grad_W_expr.subs(HL, A0 * Hprev), "grad_L A_L^T = W^T grad_W")
    log.claim(
        "gradient chain identity at every point: grad_l A_l^T = A_{l+1}^T grad_{l+1} (l < L), "
        "grad_L A_L^T = W^T grad_W (any loss, any skip)",
        "all sizes",
        "free-algebra normal form, with A_{>l} = A_{>l+1} A_{l+1} and H_l = A_l H_{l-1}",
    )


def _cross_entropy_all_C(log: ProofLog) -> None:
    z = sp.IndexedBase("z")
    k, j, y = sp.symbols("k j y", integer=True)
    S = sp.Sum(sp.exp(z[k]), (k, 1, C))
    dl = (sp.log(S) - z[y]).diff(z[j]).doit()
    in_range = sp.And(C >= j, j >= 1)

    def branch(e):
        # Take the in-range branch of SymPy's Piecewise, and only that exact condition.
        require(e.args[0][1] == in_range, "Piecewise condition is 1 <= j <= C")
        return e.args[0][0]

    dl = dl.replace(lambda e: isinstance(e, sp.Piecewise), branch)
    residue = dl - ce_gradient_entry(sp.exp(z[j]), S, sp.KroneckerDelta(j, y))
    require(sp.expand(residue) == 0, "d CE/dz_j = softmax_j - [j = y]")
    log.claim(
        "cross-entropy: d/dz_j [log sum_k exp z_k - z_y] = softmax(z)_j - [j = y], so "
        "G = (softmax(Z) - Y)/N",
        "all sizes",
        "SymPy derivative with symbolic class count C and index 1 <= j <= C",
    )


def _ring_network(L: int, k: int, dd: int = 2, CC: int = 2, NN: int = 2, extra=()):
    """Symbolic-entry network in a polynomial ring: object arrays of ``PolyElement``."""
    names = [f"M{l}_{i}{j}" for l in range(L) for i in range(dd) for j in range(dd)]
    names += [f"B{l}{f}_{i}{j}" for l in range(L) for f in range(k) for i in range(dd) for j in range(dd)]
    names += [f"W_{i}{j}" for i in range(CC) for j in range(dd)]
    names += [f"X_{i}{j}" for i in range(dd) for j in range(NN)]
    # Integer coefficients suffice (the objective is scaled by 4 below) and ZZ is faster than QQ.
    R, *gens = ring(list(names) + list(extra), ZZ)
    g = dict(zip(list(names) + list(extra), gens))

    def grid(p, r, c):
        return np.array([[g[f"{p}_{i}{j}"] for j in range(c)] for i in range(r)], dtype=object)

    Ms = [grid(f"M{l}", dd, dd) for l in range(L)]
    Bs = [[grid(f"B{l}{f}", dd, dd) for f in range(k)] for l in range(L)]
    Js = []
    for fac in Bs:
        J = fac[0]
        for Bi in fac[1:]:
            J = Bi @ J
        Js.append(J)
    A = [M + J for M, J in zip(Ms, Js)]
    H = [grid("X", dd, NN)]
    for a in A:
        H.append(a @ H[-1])
    return R, g, Bs, Js, A, H, grid("W", CC, dd)


def _A_gt(A, l, R, dd):
    P = np.array([[R(int(i == j)) for j in range(dd)] for i in range(dd)], dtype=object)
    for a in A[l + 1 :]:
        P = a @ P
    return P


@functools.lru_cache(maxsize=8)
def _lambdify(args, expr):
    return sp.lambdify(args, expr, "numpy")


def _lambdified_grad_J():
    """:data:`grad_J_expr` (read now, so a planted mutant is used) as a function of arrays.

    Works on object arrays of exact ring elements as well as on floats.
    """
    return _lambdify(SYMBOLS, grad_J_expr)


def _lambdified_grad_W():
    return _lambdify((G, HL), grad_W_expr)


def _mse_fixed(L: int, k: int, log: ProofLog) -> None:
    dd = 2
    R, g, Bs, Js, A, H, Wm = _ring_network(L, k, extra=("lJ", "lW"))
    lj, lw = g["lJ"], g["lW"]
    Res = Wm @ H[-1] - np.eye(2, dtype=int)  # labels (0, 1): Y = I
    sq = lambda M: sum(M.ravel() ** 2)  # noqa: E731
    # 4 Phi = 4 [ |Z - Y|^2 / (2N) + lambda_J/2 |B|^2 + lambda_W/2 |W|^2 ] with N = 2; so the
    # claimed gradient is compared after the same scaling by 4 (4 G = 2 (Z - Y), 4 lambda B).
    phi = sq(Res) + 2 * lj * sum(sq(Bi) for fac in Bs for Bi in fac) + 2 * lw * sq(Wm)
    Gm = Res * 2
    lj, lw = lj * 4, lw * 4
    for l in range(L):
        gJ = _lambdified_grad_J()(_A_gt(A, l, R, dd), Wm, Gm, H[l])  # the §2 formula itself, on ring entries
        if k == 1:
            targets = [(Bs[l][0], gJ + Bs[l][0] * lj)]
        else:
            B1, B2 = Bs[l]
            targets = [(B2, gJ @ B1.T + B2 * lj), (B1, B2.T @ gJ + B1 * lj)]
        for Bi, formula in targets:
            for (i, j), x in np.ndenumerate(Bi):
                require(phi.diff(x) == formula[i, j], f"dPhi/dB (layer {l + 1}, k={k})[{i},{j}]")
    formula = _lambdified_grad_W()(Gm, H[-1]) + Wm * lw
    for (i, j), x in np.ndenumerate(Wm):
        require(phi.diff(x) == formula[i, j], f"dPhi/dW[{i},{j}] (k={k})")


def _fixed_sizes(log: ProofLog) -> None:
    _mse_fixed(3, 1, log)
    log.claim(
        "SymPy's derivative of the full MSE Phi equals the §2 formula (+ weight decay), with "
        "general symbolic skips M_l and symbolic X, W, J",
        "fixed sizes: d = C = N = 2, L = 3 (cross-check)",
        "4 Phi built in the polynomial ring ZZ[entries] (sympy.polys.rings), differentiated there",
    )
    _mse_fixed(2, 2, log)
    log.claim(
        "k = 2: SymPy's derivative in B_{l,2}, B_{l,1} equals grad_J B_{l,1}^T + lambda_J B_{l,2} and "
        "B_{l,2}^T grad_J + lambda_J B_{l,1}",
        "fixed sizes: d = C = N = 2, L = 2 (cross-check)",
        "polynomial identity in ZZ[entries] (after scaling by 4)",
    )
    # Cross-entropy: exp/log are not polynomial, so differentiate the expression, then
    # replace every exp(z_cn) by a free generator and decide in an exact rational field.
    L, dd = 2, 2
    mat = lambda p, r, c: sp.Matrix(r, c, lambda i, j: sp.Symbol(f"{p}_{i}{j}"))  # noqa: E731
    Ms = [mat(f"M{l}", dd, dd) for l in range(L)]
    Js = [mat(f"J{l}", dd, dd) for l in range(L)]
    Wm, X = mat("W", 2, dd), mat("X", dd, 2)
    A = [M + J for M, J in zip(Ms, Js)]
    H = [X]
    for a in A:
        H.append(a * H[-1])
    labels = (0, 1)
    Z = Wm * H[-1]
    phi = sum(sp.log(sum(sp.exp(Z[c, n]) for c in range(2))) - Z[labels[n], n] for n in range(2)) / 2
    E = mat("E", 2, 2)
    to_gen = {sp.exp(Z[c, n]): E[c, n] for c in range(2) for n in range(2)}
    Gm = sp.Matrix(2, 2, lambda c, n: ce_gradient_entry(E[c, n], E[0, n] + E[1, n], int(c == labels[n]))) / 2
    fld = field(sorted(phi.free_symbols | set(E), key=str), QQ)[0]
    for l in range(L):
        P = sp.eye(dd)
        for a in A[l + 1 :]:
            P = a * P
        formula = sp.Matrix(_lambdified_grad_J()(np.array(P, dtype=object), np.array(Wm, dtype=object),
                                                  np.array(Gm, dtype=object), np.array(H[l], dtype=object)))
        for i in range(dd):
            for j in range(dd):
                got = sp.diff(phi, Js[l][i, j]).xreplace(to_gen)
                require(not got.has(sp.exp), "every exp(z) replaced by its generator")
                require(fld.from_expr(got) == fld.from_expr(formula[i, j]), f"CE dPhi/dJ{l + 1}[{i},{j}]")
    for i in range(2):
        for j in range(dd):
            got = sp.diff(phi, Wm[i, j]).xreplace(to_gen)
            gw = _lambdified_grad_W()(np.array(Gm, dtype=object), np.array(H[-1], dtype=object))
            require(fld.from_expr(got) == fld.from_expr(gw[i, j]), f"CE dPhi/dW[{i},{j}]")
    log.claim(
        "SymPy's derivative of the full cross-entropy Phi equals the §2 formula with "
        "G = (softmax(Z) - Y)/N, general symbolic skips",
        "fixed sizes: d = C = N = 2, L = 2 (cross-check)",
        "after differentiating, exp(z_cn) -> free generator E_cn; identity decided in the exact "
        "field QQ(entries, E), hence valid for every substitution E_cn = exp(z_cn)",
    )


def data_gradients(sim) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Data gradients of a simulation from the lambdified §2 formula.

    Returns ``(gJ (L, d, d), gW (C, d), G (C, N))``, recomputed from the simulation's
    raw arrays with NumPy (see :mod:`proofs._numerics`).
    """
    J, M = nm.as_numpy(sim.jacobians), nm.as_numpy(sim.skips)
    X, Wn = nm.as_numpy(sim.inputs), nm.as_numpy(sim.classifier)
    H = nm.forward(J, M, X)
    G_ = nm.loss_G(Wn @ H[-1], nm.as_numpy(sim.labels), sim.config["loss"])
    L, dd = J.shape[0], J.shape[1]
    out = []
    P = np.eye(dd)
    for l in range(L - 1, -1, -1):
        g, _ = nm.lambdify_eval(SYMBOLS, grad_J_expr, (P, Wn, G_, H[l]))
        out.append(g)
        P = P @ (M[l] + J[l])
    gW, _ = nm.lambdify_eval((G, HL), grad_W_expr, (G_, H[-1]))
    return np.stack(out[::-1]), gW, G_


def full_gradient_norm(sim) -> float:
    """``|grad Phi|`` over the factors and W, from the lambdified formula."""
    gJ, gW, _ = data_gradients(sim)
    lJ, lW = sim.weight_decay
    F = nm.as_numpy(sim.factors)
    k = F.shape[1]
    sq = 0.0
    for l in range(F.shape[0]):
        for i in range(k):
            left = np.eye(F.shape[-1])
            for b in F[l, i + 1 :]:
                left = b @ left
            right = np.eye(F.shape[-1])
            for b in F[l, :i]:
                right = b @ right
            sq += np.sum((left.T @ gJ[l] @ right.T + lJ * F[l, i]) ** 2)
    sq += np.sum((gW + lW * nm.as_numpy(sim.classifier)) ** 2)
    return float(np.sqrt(sq))


def check_simulation(sim, log: ProofLog) -> None:
    """The formula's gradient norm at a converged simulation is <= 1e-8."""
    g = full_gradient_norm(sim)
    scale = 1.0 + float(np.linalg.norm(nm.as_numpy(sim.classifier)))
    log.deviation(f"recomputed |grad Phi| ({sim!r})", g / scale, nm.GRAD_MAX)


def _phi_numpy(B, Wn, M, X, labels, loss, lJ, lW):
    J = B[:, 0]
    for i in range(1, B.shape[1]):
        J = np.einsum("lij,ljk->lik", B[:, i], J)
    Z = Wn @ nm.forward(J, M, X)[-1]
    Nn = X.shape[1]
    if loss == "mse":
        data = 0.5 * np.sum((Z - np.eye(Wn.shape[0])[:, labels]) ** 2) / Nn
    else:
        m = Z.max(axis=0)
        data = np.sum(np.log(np.exp(Z - m).sum(axis=0)) + m - Z[labels, np.arange(Nn)]) / Nn
    return data + lJ / 2 * np.sum(B**2) + lW / 2 * np.sum(Wn**2)


def finite_difference_check(log: ProofLog, *, seed: int = 0) -> None:
    """The lambdified formula vs central differences at random points."""
    rng = np.random.default_rng(seed)
    for loss in ("mse", "cross_entropy"):
        for k in (1, 2):
            L, dd, CC, NN = 3, 4, 3, 5
            B = rng.standard_normal((L, k, dd, dd)) * 0.4
            Wn = rng.standard_normal((CC, dd))
            M = rng.standard_normal((L, dd, dd))
            X = rng.standard_normal((dd, NN))
            labels = rng.integers(0, CC, NN)
            lJ, lW = 0.03, 0.07
            J = B[:, 0]
            for i in range(1, k):
                J = np.einsum("lij,ljk->lik", B[:, i], J)

            class _S:  # the minimal Simulation surface data_gradients needs
                jacobians, skips, inputs, classifier, factors = J, M, X, Wn, B
                config = {"loss": loss}
                weight_decay = (lJ, lW)

            _S.labels = labels
            gJ, gW, _ = data_gradients(_S)
            analytic = []
            for l in range(L):
                for i in range(k):
                    left = np.eye(dd)
                    for b in B[l, i + 1 :]:
                        left = b @ left
                    right = np.eye(dd)
                    for b in B[l, :i]:
                        right = b @ right
                    analytic.append(left.T @ gJ[l] @ right.T + lJ * B[l, i])
            analytic = np.concatenate([a.ravel() for a in analytic] + [(gW + lW * Wn).ravel()])
            theta = np.concatenate([B.ravel(), Wn.ravel()])
            h = 1e-6
            fd = np.empty_like(theta)
            for p in range(theta.size):
                e = np.zeros_like(theta)
                e[p] = h
                vals = []
                for t in (theta + e, theta - e):
                    vals.append(_phi_numpy(t[: B.size].reshape(B.shape), t[B.size :].reshape(Wn.shape),
                                           M, X, labels, loss, lJ, lW))
                fd[p] = (vals[0] - vals[1]) / (2 * h)
            log.deviation(f"finite differences ({loss}, k={k})", nm.rel(analytic, fd), 1e-6)
    log.claim("lambdified formula = central finite differences (h = 1e-6), MSE and CE, k = 1, 2, "
              "random skips; relative tolerance 1e-6", "numerical", "NumPy float64")


DEFAULT_CONFIGS = (
    dict(depth=3, classes=3, width=5, loss="mse"),
    dict(depth=2, classes=2, width=4, loss="cross_entropy"),
    dict(depth=3, classes=3, width=5, branch_factors=2),
    dict(depth=3, classes=3, width=5, skip="orthogonal"),
    dict(depth=3, classes=3, width=5, skip="sparse_unipotent", loss="cross_entropy"),
)


def prove(*, numerical: bool = True) -> ProofResult:
    """Derive and check the §2 gradient formula; see the module docstring."""
    log = ProofLog("gradient", "§2 gradient formula")
    _all_sizes(log)
    _cross_entropy_all_C(log)
    _fixed_sizes(log)
    if numerical:
        finite_difference_check(log)
        if nm.simulate_available():
            for cfg in DEFAULT_CONFIGS:
                check_simulation(nm.converged(**cfg), log)
            log.claim("gradient norm recomputed from the formula at converged simulations <= 1e-8",
                      "numerical", "ramodel.simulate, NumPy recomputation")
        else:
            log.note("ramodel.simulate unavailable: simulation checks skipped")
    return log.result()
