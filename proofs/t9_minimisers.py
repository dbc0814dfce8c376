"""T9, minimisers versus critical points (identity skips, k = 1, lambda_J, lambda_W > 0).

Theorem (all sizes, every L, any differentiable loss).
(a) Classification of the critical points. At every critical point each J_l is symmetric with
    ``(I + 2 J_l)^2 = I + 4 S`` (S = kappa W^T W, T2/T3), so ``I + 2 J_l = R (I - 2 Pi_l)`` with
    ``R = (I + 4S)^{1/2}`` and ``Pi_l`` an orthogonal projector commuting with S, i.e.

        J_l = f(S) - (I + 2 f(S)) Pi_l :

    on each eigenvector of S (eigenvalue mu) layer l takes the branch ``f(mu) >= 0`` or the
    branch ``-1 - f(mu) <= -1``. T3's hypothesis holds iff every Pi_l = 0. The saddle points
    the audit found (d = 3, C = 2, L = 2) are critical points with some Pi_l != 0.
(b) Competitor. For any point (J, W) (not only critical points) and any layer l, write the polar
    decomposition ``A_l = I + J_l = U |A_l|``. The point ``A'_l = |A_l|``, ``A'_m = U^T A_m U`` (m > l),
    ``A'_m = A_m`` (m < l), ``W' = W U`` has the same outputs ``W' P' = W P`` (so the same data term, for
    any loss), the same ``|W|_F`` and ``|J_m|_F`` (m != l), and
    ``|J'_l|_F^2 - |J_l|_F^2 = 2 (tr A_l - tr |A_l|) <= 0``, with equality iff A_l is symmetric PSD.
(c) Kernel step. At a critical point, if A_l is symmetric PSD but singular, ``J'_l = J_l + Pi0``
    (Pi0 the projector on ker A_l) keeps ``W P`` (ker A_l is inside ker S = ker W and every A_m commutes
    with S) and lowers ``|J_l|_F^2`` by rank Pi0.
(d) Hence at every **global** minimiser (one exists: Phi is continuous and coercive) every
    ``I + J_l`` is symmetric positive definite, so every eigenvalue of J_l is ``f(mu) >= 0 > -1/2``:
    **T3's hypothesis holds at every global minimiser**, and ``J_1 = ... = J_L = f(S)`` there. Every
    critical point with some Pi_l != 0 (in particular each audit saddle) is not a global minimiser.

(e) Partial result towards local minimisers: a critical point where some I + J_l has two orthonormal
    directions with e^T A_l e + e'^T A_l e' < 0 (two eigenvalues on the -1 - f branch, or one with
    f(mu) > 1 + f(mu')) is a strict saddle (second variation along (b)'s orbit with U = exp(eps K)).

Conjecture (not proven): the same holds at every *local* minimiser, i.e. every critical point with
some Pi_l != 0 is a strict saddle. The competitor of (b) uses a reflection, det U = -1, which is not
connected to the identity, and (e) does not cover a single negative eigenvalue -f(mu) of A_l with
f(mu) <= 1 + f(mu') (every saddle found is of that kind). Evidence: see :func:`saddle_search`.

Stated facts: polar decomposition; ``tr(U |A|) <= tr |A|`` with equality iff ``U v = v`` on the
range of |A| (Cauchy-Schwarz on ``sum_i sigma_i v_i^T U v_i``), i.e. iff A = |A|; symmetric square roots
of a positive definite matrix are exactly ``R (I - 2 Pi)`` (spectral theorem); trace invariance
``tr(U^T X U) = tr X``; existence of a minimiser of a coercive continuous function.
"""

from __future__ import annotations

import functools

import numpy as np
import sympy as sp
from sympy import Identity, MatrixSymbol

from . import _numerics as nm
from . import gradient
from . import t2_chain as t2
from . import t3_identity_skips as t3
from ._exact import ProofFailure, ProofLog, ProofResult, Rules, require, require_nc_zero

__all__ = ["FULL_SEARCH", "SADDLE_STARTS", "ReducedProblem", "competitor", "conjugate", "prove", "saddle_search"]

d, C, N = sp.symbols("d C N", integer=True, positive=True)


def conjugate(A, U):
    """How the competitor moves a layer above l: ``A -> U^T A U``."""
    return U.T * A * U


def _symbolic(log: ProofLog) -> None:
    I = Identity(d)
    J, J2, Pi, R = (MatrixSymbol(n, d, d) for n in ("J_l", "J_m", "Pi", "R"))
    W = MatrixSymbol("W", C, d)
    S = t2.S_of(W)
    # (a) (I + 2J)^2 = I + 4S modulo J + J^2 = S; J = (R(I - 2 Pi) - I)/2 = f(S) - R Pi.
    require_nc_zero((I + 2 * J) * (I + 2 * J) - (I + 4 * S) - 4 * (J + J * J - S), "(I+2J)^2 = I + 4S")
    require_nc_zero((R * (I - 2 * Pi) - I) / 2 - ((R - I) / 2 - R * Pi), "J = f(S) - R Pi, f(S) = (R - I)/2")
    require_nc_zero(R - (I + 2 * (R - I) / 2), "R = I + 2 f(S)")
    log.claim("(a) at every critical point J_l = f(S) - (I + 2 f(S)) Pi_l with Pi_l an orthogonal projector commuting "
              "with S: per eigenvector of S the branch f(mu) or -1 - f(mu); T3's hypothesis <=> all Pi_l = 0",
              "all sizes", "free-algebra identities (T3(a) gives J_l symmetric with J_l + J_l^2 = S, S from T2); "
              "symmetric square roots of I + 4S are R(I - 2Pi) (stated)")
    log.assume("the symmetric square roots of a symmetric positive definite matrix R^2 are exactly R(I - 2 Pi), Pi an "
               "orthogonal projector commuting with R", "spectral theorem; Higham, Functions of Matrices, Thm 1.26")
    # (b) competitor.
    U, Agt, Alt, Pabs, Bm, Bn = (MatrixSymbol(n, d, d) for n in ("U", "A_gt", "A_lt", "Pabs", "B_m", "B_n"))
    orth = Rules.make(orthogonal=["U"], symmetric=["Pabs"])
    require_nc_zero(conjugate(Bm, U) * conjugate(Bn, U) - conjugate(Bm * Bn, U), "conjugation is multiplicative",
                    orth)
    Al_polar = U * Pabs
    P = Agt * Al_polar * Alt
    P_new = conjugate(Agt, U) * Pabs * Alt
    require_nc_zero(P_new - U.T * P, "P' = U^T P", orth)
    require_nc_zero((W * U) * P_new - W * P, "W' P' = W P: the outputs, hence the data term, are unchanged", orth)
    require_nc_zero((W * U) * (W * U).T - W * W.T, "|W U|_F = |W|_F", orth)
    require_nc_zero(conjugate(Bm, U).T * conjugate(Bm, U) - U.T * (Bm.T * Bm) * U,
                    "Gram of U^T J_m U is similar to that of J_m", orth)
    diff = (Pabs - I).T * (Pabs - I) - (Al_polar - I).T * (Al_polar - I)
    require_nc_zero(diff - (U * Pabs + Pabs * U.T - 2 * Pabs), "|(|A| - I)|^2 - |A - I|^2 integrand", orth)
    log.claim("(b) any point, any layer l, A_l = U|A_l|: A'_l = |A_l|, A'_m = U^T A_m U (m > l), W' = W U give W'P' = W P, "
              "the same |W|, |J_m| (m != l), and |J'_l|^2 - |J_l|^2 = tr(U|A| + |A|U^T - 2|A|) = 2(tr A_l - tr|A_l|) "
              "<= 0, = 0 iff A_l is symmetric PSD", "all sizes",
              "free-algebra identities modulo U^T U = U U^T = I, |A| symmetric; trace inequality (stated); any depth "
              "(A_{>l} a free symbol, conjugation multiplicative: induction)")
    log.assume("tr(U|A|) <= tr|A| for orthogonal U, with equality iff U v_i = v_i for every right singular vector with "
               "sigma_i > 0, i.e. iff A = |A|", "Cauchy-Schwarz on sum_i sigma_i v_i^T U v_i; von Neumann's trace "
               "inequality, Horn & Johnson, Topics in Matrix Analysis, Thm 3.3.13")
    log.assume("tr(U^T X U) = tr X; polar decomposition A = U|A| exists for every square A",
               "Horn & Johnson, Matrix Analysis, 2nd ed., Thm 7.3.1")
    # (c) kernel step.
    v = MatrixSymbol("v", d, 1)
    jv = J * v + v  # zero when J v = -v
    require_nc_zero((J + J * J) * v - J * jv, "S v = (J + J^2) v = J (J v + v) = 0 when J v = -v")
    require_nc_zero(J2 * (J2 + J2 * J2) - (J2 + J2 * J2) * J2, "every J_m commutes with S = J_m + J_m^2")
    E, F = J * Pi + Pi, Pi * Pi - Pi
    sym = Rules.make(symmetric=["J_l", "Pi"])
    require_nc_zero((J + Pi).T * (J + Pi) - J.T * J + Pi - E - E.T - F, "|J + Pi0|^2 = |J|^2 - tr Pi0", sym)
    WA = W * Agt * Pi
    require_nc_zero(WA.T * WA - Pi.T * Agt.T * Agt * (W.T * W) * Pi - Pi.T * Agt.T * (W.T * W * Agt - Agt * W.T * W) * Pi,
                    "|W A_{>l} Pi0|^2 = Pi0 A^T A (W^T W) Pi0 + Pi0 A^T [W^T W, A] Pi0")
    log.claim("(c) at a critical point with A_l symmetric PSD and singular: ker A_l is in ker S = ker W (J v = -v => "
              "S v = 0), A_{>l} commutes with S, so W A_{>l} Pi0 = 0 and J'_l = J_l + Pi0 keeps W P while "
              "|J'_l|^2 = |J_l|^2 - rank Pi0", "all sizes", "free-algebra certificates (J, Pi symmetric, Pi^2 = Pi, "
              "J Pi = -Pi as residuals)")
    # (d) the negative branch is <= -1: (-1 - f(mu)) + 1 = -(r - 1)/2 <= 0 with r = sqrt(1 + 4 mu) >= 1 (mu >= 0).
    r = sp.Symbol("r", positive=True)
    f_r = t3.f_expr.subs(t3.mu, (r**2 - 1) / 4)
    require(sp.cancel(f_r - (r - 1) / 2) == 0, "f = (r - 1)/2")
    require(sp.cancel((-1 - f_r) + 1 + (r - 1) / 2) == 0, "(-1 - f) + 1 = -(r - 1)/2")
    log.claim("(d) at every global minimiser every I + J_l is symmetric positive definite, so every eigenvalue of J_l "
              "is f(mu) >= 0 > -1/2 (the branch -1 - f(mu) > -1 is impossible): T3's hypothesis holds and "
              "J_1 = ... = J_L = f(S); every critical point with some Pi_l != 0 is not a global minimiser",
              "all sizes", "(b) strictly improves any non-symmetric-PSD layer, (c) any singular one; a minimiser "
              "exists (coercive, stated)")
    # (e) second variation along the data-preserving orbit of (b) with U = exp(eps K), K = e' e^T - e e'^T.
    e, e2 = MatrixSymbol("e", d, 1), MatrixSymbol("e2", d, 1)
    unit = Rules.make(pairs={(("e", True), ("e", False)): 1, (("e2", True), ("e2", False)): 1,
                             (("e", True), ("e2", False)): 0, (("e2", True), ("e", False)): 0})
    K = e2 * e.T - e * e2.T
    require_nc_zero(K * K + e * e.T + e2 * e2.T, "K^2 = -(e e^T + e' e'^T) for orthonormal e, e'", unit)
    require_nc_zero(K + K.T, "K is skew", unit)
    log.claim("(e) at any critical point, if some layer has orthonormal e, e' with e^T A_l e + e'^T A_l e' < 0 (e.g. two "
              "eigenvalues of J_l on the -1 - f branch with f > 0, or one with f(mu) > 1 + f(mu') for another "
              "eigenvalue), the point is a strict saddle: along the orbit of (b) with U = exp(eps K), "
              "K = e' e^T - e e'^T, the data term is constant and Phi changes by "
              "lambda_J (tr A_l - tr(U^T A_l)) = (lambda_J eps^2/2)(e^T A_l e + e'^T A_l e') + O(eps^3), so the Hessian "
              "has a negative eigenvalue", "all sizes",
              "free-algebra identities modulo orthonormality; (b)'s output identities; exp series, tr(KA) = 0 for K "
              "skew and A symmetric, cyclicity of the trace (stated)")


# --------------------------------------------------------------------------------------
# numerics: a small identity-skip problem, its critical points, competitors and Hessians
# --------------------------------------------------------------------------------------


class ReducedProblem:
    """Phi, its gradient (lambdified §2 formula) and a finite-difference Hessian, k = 1, identity skips, MSE."""

    def __init__(self, X, labels, depth, classes, weight_decay):
        self.X, self.labels = np.asarray(X, float), np.asarray(labels)
        self.L, self.d, self.C = depth, self.X.shape[0], classes
        self.lJ, self.lW = weight_decay
        self.M = np.broadcast_to(np.eye(self.d), (depth, self.d, self.d))

    def unpack(self, th):
        n = self.L * self.d * self.d
        return th[:n].reshape(self.L, self.d, self.d), th[n:].reshape(self.C, self.d)

    def pack(self, J, W):
        return np.concatenate([np.ravel(J), np.ravel(W)])

    def data(self, th):
        J, W = self.unpack(th)
        Z = W @ nm.forward(J, self.M, self.X)[-1]
        return 0.5 * np.sum((Z - np.eye(self.C)[:, self.labels]) ** 2) / self.X.shape[1]

    def phi(self, th):
        J, W = self.unpack(th)
        return self.data(th) + self.lJ / 2 * np.sum(J**2) + self.lW / 2 * np.sum(W**2)

    def grad(self, th):
        J, W = self.unpack(th)
        me = self

        class _S:
            jacobians, skips, inputs, classifier, labels = J, me.M, me.X, W, me.labels
            config = {"loss": "mse"}

        gJ, gW, _ = gradient.data_gradients(_S)
        return self.pack(gJ + self.lJ * J, gW + self.lW * W)

    def hessian(self, th, h=1e-5):
        n = th.size
        H = np.empty((n, n))
        for i in range(n):
            e = np.zeros(n)
            e[i] = h
            H[:, i] = (self.grad(th + e) - self.grad(th - e)) / (2 * h)
        return (H + H.T) / 2

    def critical_point(self, th, iters=200):
        """Levenberg-Marquardt on |grad Phi|^2: converges to critical points of any index."""
        mu = 1e-3
        g = self.grad(th)
        ng = np.linalg.norm(g)
        for _ in range(iters):
            if ng < 1e-13:
                break
            H = self.hessian(th)
            step = np.linalg.solve(H @ H + mu * np.eye(th.size), H @ g)
            tn = th - step
            gn = self.grad(tn)
            if np.linalg.norm(gn) < ng:
                th, g, ng, mu = tn, gn, np.linalg.norm(gn), max(mu / 3, 1e-12)
            else:
                mu *= 4
        return th, ng


def orbit_point(problem: ReducedProblem, th, layer: int, U):
    """(b)'s data-preserving orbit: A_l -> U^T A_l, A_m -> U^T A_m U (m > l), W -> W U."""
    J, W = problem.unpack(th)
    A = np.eye(problem.d) + J
    A2 = A.copy()
    A2[layer] = U.T @ A[layer]
    for m in range(layer + 1, problem.L):
        A2[m] = U.T @ A[m] @ U
    return problem.pack(A2 - np.eye(problem.d), W @ U)


def orbit_second_variation(problem: ReducedProblem, th, layer: int, e, e2, h=1e-3):
    """``d^2/d eps^2 Phi`` along U = exp(eps K), K = e2 e^T - e e2^T (central differences, exact rotation)."""
    def U(eps):
        P = np.outer(e, e) + np.outer(e2, e2)
        K = np.outer(e2, e) - np.outer(e, e2)
        return np.eye(len(e)) - P + np.cos(eps) * P + np.sin(eps) * K

    f0 = problem.phi(th)
    fp, fm = (problem.phi(orbit_point(problem, th, layer, U(s))) for s in (h, -h))
    return (fp - 2 * f0 + fm) / h**2


def competitor(problem: ReducedProblem, th, layer: int):
    """The point of (b) (numerically, with the lambdified :func:`conjugate`)."""
    J, W = problem.unpack(th)
    A = np.eye(problem.d) + J
    Uu, s, Vt = np.linalg.svd(A[layer])
    U = Uu @ Vt  # polar factor
    absA = Vt.T @ np.diag(s) @ Vt
    Us, As = MatrixSymbol("U", problem.d, problem.d), MatrixSymbol("A", problem.d, problem.d)
    conj = sp.lambdify((As, Us), conjugate(As, Us), "numpy")
    A2 = A.copy()
    A2[layer] = absA
    for m in range(layer + 1, problem.L):
        A2[m] = np.asarray(conj(A[m], U), dtype=float)
    return problem.pack(A2 - np.eye(problem.d), W @ U)


#: The audit's setting: d = 3, C = 2, L = 2, identity skips, MSE, lambda = 1e-2, 4 points per class.
AUDIT_CONFIG = (("depth", 2), ("classes", 2), ("width", 3), ("samples_per_class", 4), ("seed", 0))


@functools.lru_cache(maxsize=8)
def _problem(config=AUDIT_CONFIG):
    cfg = dict(config)
    sim = nm.converged(**cfg)
    return ReducedProblem(nm.as_numpy(sim.inputs), nm.as_numpy(sim.labels), cfg["depth"], cfg["classes"],
                          sim.weight_decay), sim


#: (flip layer or None, perturbation seed or None): starts of the default saddle search around the minimiser.
SADDLE_STARTS = ((0, None), (None, 24))
#: The 30 starts of the recorded search (the slow test re-runs it).
FULL_SEARCH = ((0, None), (1, None)) + tuple((None, s) for s in range(28))


def _start(problem, sim, flip, seed):
    J = nm.as_numpy(sim.jacobians).copy()
    W = nm.as_numpy(sim.classifier)
    if flip is not None:
        w, V = np.linalg.eigh(J[flip])
        J[flip] -= (1 + 2 * w[-1]) * np.outer(V[:, -1], V[:, -1])  # the -1 - f branch on the top direction
    th = problem.pack(J, W)
    if seed is not None:
        th = th + 0.3 * np.random.default_rng(seed).standard_normal(th.size)
    return th


def saddle_search(starts=SADDLE_STARTS, *, config=AUDIT_CONFIG):
    """Critical points reached from ``starts``; each row is a dict of measured facts.

    ``config`` is a tuple of ``(name, value)`` pairs for :func:`proofs._numerics.converged`
    (identity skips, MSE, k = 1).
    """
    problem, sim = _problem(config)
    th_min = problem.pack(nm.as_numpy(sim.jacobians), nm.as_numpy(sim.classifier))
    rows = []
    for flip, seed in starts:
        th, ng = problem.critical_point(_start(problem, sim, flip, seed))
        J, W = problem.unpack(th)
        S = problem.lW / problem.lJ * W.T @ W
        mus = np.linalg.eigvalsh(S)
        f = (-1 + np.sqrt(1 + 4 * np.clip(mus, 0, None))) / 2
        branches = sorted(np.concatenate([f, -1 - f]))
        ev = np.stack([np.linalg.eigvalsh((x + x.T) / 2) for x in J])
        rows.append(dict(
            start=(flip, seed), grad=float(ng), phi=float(problem.phi(th)), phi_min=float(problem.phi(th_min)),
            eigs=ev, asym=max(nm.asym(x) for x in J),
            branch_error=float(max(np.min(np.abs(e - np.asarray(branches))) for e in ev.ravel())),
            hypothesis=bool(ev.min() > -0.5), layer_spread=float(np.linalg.norm(J[0] - J[-1])),
            hess_min=float(np.linalg.eigvalsh(problem.hessian(th))[0]), theta=th,
        ))
    return rows, problem


def _numerical(log: ProofLog) -> None:
    rows, problem = saddle_search()
    saddles = 0
    for r in rows:
        if r["grad"] > 1e-10:
            raise ProofFailure(f"T9 critical point search did not converge: {r['start']}, |grad| = {r['grad']:.1e}")
        log.deviation(f"(a) J_l symmetric at the critical point from {r['start']}", r["asym"], 1e-9)
        log.deviation(f"(a) eigenvalues of J_l on the branches f(mu), -1-f(mu) ({r['start']})", r["branch_error"], 1e-7)
        if r["hypothesis"]:
            continue
        saddles += 1
        th = r["theta"]
        J, _ = problem.unpack(th)
        bad = int(np.argmin([np.linalg.eigvalsh(x).min() for x in J]))
        comp = competitor(problem, th, bad)
        log.deviation(f"(b) competitor keeps the data term ({r['start']})",
                      abs(problem.data(comp) - problem.data(th)) / max(problem.data(th), 1e-300), 1e-10)
        drop = problem.phi(th) - problem.phi(comp)
        if not drop > 0:
            raise ProofFailure(f"T9 competitor did not lower Phi at {r['start']}: drop {drop:.3e}")
        log.note(f"saddle from {r['start']}: Phi = {r['phi']:.5f} (minimum {r['phi_min']:.5f}), J_l eigenvalues "
                 f"{np.round(r['eigs'], 4).tolist()}, layer spread {r['layer_spread']:.3f}, Hessian min eigenvalue "
                 f"{r['hess_min']:.4f}, competitor lowers Phi by {drop:.2e}")
        # (e): the second variation along the orbit, by central differences, against lambda_J (a_e + a_e').
        A = np.eye(problem.d) + J[bad]
        w_, V_ = np.linalg.eigh(A)
        e_, e2_ = V_[:, 0], V_[:, 1]
        log.deviation(f"(e) second variation along the orbit ({r['start']})",
                      abs(orbit_second_variation(problem, th, bad, e_, e2_) - problem.lJ * (w_[0] + w_[1]))
                      / (problem.lJ * (abs(w_[0]) + abs(w_[1]))), 1e-5)
        if not r["hess_min"] < -1e-3:
            raise ProofFailure(f"T9 conjecture counterexample? critical point {r['start']} violates the hypothesis "
                               f"with Hessian min eigenvalue {r['hess_min']:.2e}")
    if saddles == 0:
        raise ProofFailure("T9: the saddle search found no hypothesis-violating critical point")
    log.claim("critical points found by Levenberg-Marquardt on |grad|^2 (d = 3, C = 2, L = 2, identity skips, MSE, "
              "lambda = 1e-2): J_l symmetric, eigenvalues on the two branches; at every one violating T3's hypothesis "
              "the competitor (b) keeps the data term and lowers Phi", "numerical",
              "NumPy, lambdified gradient, finite-difference Hessian")


def _conjecture(log: ProofLog) -> None:
    log.conjecture(
        "with identity skips and k = 1, T3's hypothesis also holds at every LOCAL minimiser: every critical point with "
        "a layer on the -1 - f branch is a strict saddle",
        "d = 3, C = 2, L = 2, lambda = 1e-2 (seed-0 mixture, 4 points per class). The 30 Levenberg-Marquardt searches "
        "of FULL_SEARCH (two flipped starts, 28 random perturbations of scale 0.3 around the minimiser; re-run by the "
        "slow test): 16 reach the minimiser (Phi = 0.01120, Hessian min eigenvalue +0.0035), 7 reach critical points "
        "(|grad| <= 1e-13) violating the hypothesis, Phi = 0.26559 (layers equal, J_l eigenvalue -1.125), 0.26256 "
        "(layers differ: eigenvalues -1.0003 and +0.0003 on one direction), 0.51001 (two directions killed), with "
        "Hessian min eigenvalues -0.25 to -0.78, and 7 stall at |grad| 2e-4 to 6e-4 (not counted). No local minimiser "
        "violating the hypothesis was found. Two more configurations (saddle_search with config=..., 16 starts each, "
        "run once, not in the tests): d = 3, C = 2, L = 2 on the data of seed 1: 7 reach the minimiser (Phi = 0.01532, "
        "Hessian +0.0030), 3 reach Phi = 0.26882 with layers different (eigenvalue -1.0001 in one layer) and Hessian "
        "min eigenvalue -1.264, 6 stall; d = 4, C = 3, L = 3, seed 0: 1 reaches the minimiser (0.01588, +0.0028), 4 "
        "reach Phi = 0.17751 or 0.18550 with Hessian -0.10 to -0.64, 11 stall. The audit's figures (Phi 0.26 vs 0.0126, "
        "Hessian -1.0 to -1.06, layers different) come from other data and match the seed-1 type: one layer on the "
        "-1 - f branch (eigenvalue ~ -1) kills a class mode")


def prove(*, numerical: bool = True) -> ProofResult:
    """Prove (a)-(d); classify constructed saddles numerically; record the local-minimiser conjecture."""
    log = ProofLog("T9", "T3's hypothesis holds at every global minimiser; saddles are the -1-f branch")
    _symbolic(log)
    _conjecture(log)
    if numerical and nm.simulate_available():
        _numerical(log)
    elif numerical:
        log.note("ramodel.simulate unavailable: numerical part skipped")
    return log.result()
