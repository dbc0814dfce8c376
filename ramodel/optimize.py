"""Solving the model to a critical point: L-BFGS, Newton–MINRES, trust-region Newton–CG.

Design constraints:

- Written once against the array namespace of ``x0``: the same code runs on NumPy,
  CuPy and any array-API library. Only scalars (dot products, norms) come back to the
  host, once per vector operation.
- L-BFGS with a strong-Wolfe line search gets within ~1e-6 of a critical point. Below
  that, changes in Φ fall under its rounding error, so a line search on Φ stalls
  (MODEL.md §5). The polish therefore takes Newton steps, solving ``H p = -g`` by
  MINRES (the Hessian may be indefinite away from a minimum, and is singular along
  symmetries of the factorisation when ``k > 1``), with exact Hessian-vector products,
  and accepts a step on the *gradient norm*, not on Φ.
- Deep models (issue 19) need a second-order method from the start: the gradient of
  block l carries the product of the other L - 1 blocks, so a few Hessian eigenvalues
  grow with depth beside many near lambda_J, and the minimiser lies in a narrow curved
  valley. :func:`trust_region_newton` (Steihaug–CG on the exact Hessian-vector product,
  steps judged by actual against predicted decrease of Φ) handles both; L-BFGS took
  33,550 steps at L = 1000 without converging. The gauge ``B_2 -> B_2 Q``,
  ``B_1 -> Q^T B_1`` of ``k >= 2`` makes the Hessian singular at critical points; CG
  from ``p = 0`` stays orthogonal to those null directions (the gradient is), so it
  needs no projection. The CG can be preconditioned (``M``-norm trust region): the
  weight decay plus the Gauss–Newton term (:func:`ramodel.model.gauss_newton_preconditioner`)
  carries the stiff directions, and CG iterations per step then stop growing with depth.
  :func:`minimize` records each phase (:class:`Phase`) and its
  stopping reason.
- Non-finite values are never returned: a trial point with NaN/Inf is treated as a
  step that is too long; if nothing finite can be found, :class:`DivergenceError`
  names the step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from .backend import get_namespace, quiet_overflow

__all__ = [
    "DivergenceError",
    "OptimizeResult",
    "lbfgs",
    "minres",
    "newton_polish",
    "steihaug_cg",
    "trust_region_newton",
    "minimize",
    "Phase",
    "describe_phases",
    "METHODS",
]


class DivergenceError(RuntimeError):
    """The objective or its gradient became NaN or Inf; the message names the step."""


@dataclass(frozen=True, eq=False)
class OptimizeResult:
    """Outcome of :func:`minimize`.

    Attributes
    ----------
    x : array, shape (n,)
        Final point (finite).
    value : float
        Objective at ``x``.
    grad_norm : float
        Euclidean norm of the gradient at ``x``.
    converged : bool
        ``grad_norm <= tol``.
    steps : int
        L-BFGS iterations plus Newton steps taken.
    history : tuple of float
        Objective after every accepted step (first entry: the starting point).
    message : str
        Every phase, which one stopped last and why (:func:`describe_phases`).
    phases : tuple of Phase
        The phases in order.
    """

    x: object
    value: float
    grad_norm: float
    converged: bool
    steps: int
    history: tuple
    message: str
    phases: tuple = ()


@dataclass(frozen=True)
class Phase:
    """One phase of a solve: which method ran, for how long, and why it stopped.

    Attributes
    ----------
    name : str
        ``"L-BFGS"``, ``"Newton-MINRES"`` or ``"trust-region Newton-CG"``.
    steps : int
        Accepted steps (L-BFGS iterations, Newton or trust-region steps).
    products : int
        Hessian-vector products (0 for L-BFGS).
    start : int
        Index into the history (``loss_history``) of the phase's starting value.
    grad_norm : float
        Gradient norm when the phase stopped.
    reason : str
        Why it stopped.
    depth : int or None
        The model depth the phase ran at (depth continuation solves several), else None.
    """

    name: str
    steps: int
    products: int
    start: int
    grad_norm: float
    reason: str
    depth: int | None = None

    def describe(self) -> str:
        at = f" at L={self.depth}" if self.depth is not None else ""
        prods = f", {self.products} Hessian products" if self.products else ""
        return f"{self.name}{at}: {self.reason} after {self.steps} steps{prods} (|grad| = {self.grad_norm:.2e})"


def describe_phases(phases) -> str:
    """The final message of a solve: every phase, which one stopped last and why."""
    return "; ".join(p.describe() for p in phases)


def _dot(a, b, xp) -> float:
    return float(xp.sum(a * b))


def _finite(value: float, g, xp) -> bool:
    return math.isfinite(value) and bool(xp.all(xp.isfinite(g)))


def _cubic_min(a, fa, da, b, fb, db):
    """Minimiser of the cubic interpolating (a, fa, da), (b, fb, db); None if undefined."""
    d1 = da + db - 3.0 * (fa - fb) / (a - b)
    disc = d1 * d1 - da * db
    if disc < 0:
        return None
    d2 = math.copysign(math.sqrt(disc), b - a)
    denom = db - da + 2.0 * d2
    if denom == 0:
        return None
    return b - (b - a) * (db + d2 - d1) / denom


def _wolfe_search(phi, f0, d0, alpha0, *, c1=1e-4, c2=0.9, max_evals=30):
    """Strong-Wolfe line search (Nocedal & Wright, Alg. 3.5–3.6).

    ``phi(alpha)`` returns ``(value, slope, payload)`` or None when non-finite.
    Returns ``(alpha, value, payload)`` or None on failure.
    """
    evals = 0
    a_prev, f_prev, d_prev = 0.0, f0, d0
    a = alpha0
    best = None

    def zoom(lo, f_lo, d_lo, hi, f_hi, d_hi):
        nonlocal evals, best
        while evals < max_evals:
            width = hi - lo
            trial = _cubic_min(lo, f_lo, d_lo, hi, f_hi, d_hi)
            lo_b, hi_b = sorted((lo + 0.1 * width, hi - 0.1 * width))
            if trial is None or not (lo_b <= trial <= hi_b):
                trial = lo + 0.5 * width
            out = phi(trial)
            evals += 1
            if out is None:
                hi, f_hi, d_hi = trial, math.inf, 0.0
                continue
            f_t, d_t, payload = out
            if f_t > f0 + c1 * trial * d0 or f_t >= f_lo:
                hi, f_hi, d_hi = trial, f_t, d_t
            else:
                best = (trial, f_t, payload)
                if abs(d_t) <= -c2 * d0:
                    return best
                if d_t * (hi - lo) >= 0:
                    hi, f_hi, d_hi = lo, f_lo, d_lo
                lo, f_lo, d_lo = trial, f_t, d_t
            if abs(hi - lo) <= 1e-14 * max(1.0, abs(lo)):
                break
        return best

    while evals < max_evals:
        out = phi(a)
        evals += 1
        if out is None:  # non-finite: the step is too long
            a = a_prev + 0.1 * (a - a_prev) if a_prev > 0 else 0.1 * a
            continue
        f_a, d_a, payload = out
        if f_a > f0 + c1 * a * d0 or (a_prev > 0 and f_a >= f_prev):
            return zoom(a_prev, f_prev, d_prev, a, f_a, d_a)
        if abs(d_a) <= -c2 * d0:
            return a, f_a, payload
        best = (a, f_a, payload)
        if d_a >= 0:
            return zoom(a, f_a, d_a, a_prev, f_prev, d_prev)
        a_prev, f_prev, d_prev = a, f_a, d_a
        a = 2.0 * a
    return best


@quiet_overflow
def lbfgs(
    fun: Callable,
    x0,
    *,
    tol: float,
    max_steps: int,
    memory: int = 10,
    history: list | None = None,
):
    """Limited-memory BFGS with a strong-Wolfe line search.

    Parameters
    ----------
    fun : callable
        ``fun(x) -> (value: float, grad: array (n,))``.
    x0 : array, shape (n,)
    tol : float
        Stop when the gradient norm is at most ``tol``.
    max_steps : int
    memory : int, default 10
        Number of curvature pairs kept (the usual 5–20 range; 10 is scipy's default too).
    history : list, optional
        Appended with the objective after each accepted step.

    Returns
    -------
    x, value, grad, steps, message
    """
    xp = get_namespace(x0)
    x = x0
    f, g = fun(x)
    if not _finite(f, g, xp):
        raise DivergenceError("objective or gradient is not finite at the starting point (step 0)")
    if history is not None:
        history.append(f)
    S, Y, rho = [], [], []
    gnorm = math.sqrt(_dot(g, g, xp))
    for step in range(max_steps):
        if gnorm <= tol:
            return x, f, g, step, "gradient norm below tol"
        # Two-loop recursion.
        q = g
        alphas = []
        for s, y, r in zip(reversed(S), reversed(Y), reversed(rho)):
            a = r * _dot(s, q, xp)
            alphas.append(a)
            q = q - a * y
        gamma = _dot(S[-1], Y[-1], xp) / _dot(Y[-1], Y[-1], xp) if S else 1.0
        p = gamma * q
        for (s, y, r), a in zip(zip(S, Y, rho), reversed(alphas)):
            b = r * _dot(y, p, xp)
            p = p + (a - b) * s
        p = -p
        d0 = _dot(g, p, xp)
        if not d0 < 0:  # not a descent direction: restart from steepest descent
            S, Y, rho = [], [], []
            p = -g
            d0 = -gnorm * gnorm
        alpha0 = 1.0 if S else min(1.0, 1.0 / gnorm)

        trials = {"finite": 0, "nonfinite": 0}

        def phi(alpha, x=x, p=p):
            x_new = x + alpha * p
            f_new, g_new = fun(x_new)
            if not _finite(f_new, g_new, xp):
                trials["nonfinite"] += 1
                return None
            trials["finite"] += 1
            return f_new, _dot(g_new, p, xp), (x_new, g_new)

        found = _wolfe_search(phi, f, d0, alpha0)
        if found is None:
            if trials["finite"] == 0:
                raise DivergenceError(
                    f"objective or gradient is NaN/Inf at every trial point of step {step + 1} "
                    f"({trials['nonfinite']} trials, from a point with |grad| = {gnorm:.3g})"
                )
            return x, f, g, step, f"line search failed at step {step + 1}"
        _, f_new, (x_new, g_new) = found
        s, y = x_new - x, g_new - g
        sy = _dot(s, y, xp)
        if sy > 1e-12 * math.sqrt(_dot(s, s, xp) * _dot(y, y, xp)):
            S.append(s)
            Y.append(y)
            rho.append(1.0 / sy)
            if len(S) > memory:
                S.pop(0), Y.pop(0), rho.pop(0)
        x, f, g = x_new, f_new, g_new
        gnorm = math.sqrt(_dot(g, g, xp))
        if history is not None:
            history.append(f)
    return x, f, g, max_steps, "max_steps reached"


def minres(matvec: Callable, b, *, rtol: float, maxiter: int):
    """MINRES for a symmetric (possibly indefinite or singular) system ``A x = b``.

    Paige & Saunders (1975); written against the namespace of ``b``.

    Parameters
    ----------
    matvec : callable
        ``matvec(v) -> A v``.
    b : array, shape (n,)
    rtol : float
        Stop when the residual estimate is at most ``rtol * |b|``.
    maxiter : int

    Returns
    -------
    x : array, shape (n,)
    iterations : int

    Examples
    --------
    >>> import numpy as np
    >>> A = np.array([[2.0, 1.0], [1.0, -3.0]])
    >>> x, _ = minres(lambda v: A @ v, np.array([1.0, 2.0]), rtol=1e-12, maxiter=10)
    >>> np.allclose(A @ x, [1.0, 2.0])
    True
    """
    xp = get_namespace(b)
    beta1 = math.sqrt(_dot(b, b, xp))
    x = xp.zeros_like(b)
    if beta1 == 0.0:
        return x, 0
    # Lanczos vectors (unnormalised r1, r2) and the QR of the tridiagonal by rotations.
    r1 = b
    r2 = b
    y = b
    oldb, beta = 0.0, beta1
    dbar = epsln = 0.0
    phibar = beta1
    cs, sn = -1.0, 0.0
    w = xp.zeros_like(b)
    w2 = xp.zeros_like(b)
    for it in range(1, maxiter + 1):
        v = y / beta
        y = matvec(v)
        if it >= 2:
            y = y - (beta / oldb) * r1
        alfa = _dot(v, y, xp)
        y = y - (alfa / beta) * r2
        r1, r2 = r2, y
        oldb, beta = beta, math.sqrt(_dot(y, y, xp))
        oldeps = epsln
        delta = cs * dbar + sn * alfa
        gbar = sn * dbar - cs * alfa
        epsln = sn * beta
        dbar = -cs * beta
        gamma = max(math.hypot(gbar, beta), 1e-300)
        cs, sn = gbar / gamma, beta / gamma
        phi = cs * phibar
        phibar = sn * phibar
        w1, w2 = w2, w
        w = (v - oldeps * w1 - delta * w2) / gamma
        x = x + phi * w
        if phibar <= rtol * beta1 or beta == 0.0:
            return x, it
    return x, maxiter


@quiet_overflow
def newton_polish(
    fun: Callable,
    hessp: Callable,
    x,
    f,
    g,
    *,
    tol: float,
    max_steps: int,
    history: list | None = None,
    minres_maxiter: int = 500,
):
    """Newton steps solved by MINRES, accepted when the gradient norm falls.

    Returns ``x, value, grad, steps, message``.
    """
    xp = get_namespace(x)
    gnorm = math.sqrt(_dot(g, g, xp))
    for step in range(max_steps):
        if gnorm <= tol:
            return x, f, g, step, "gradient norm below tol"
        # Inexact Newton: forcing term min(0.1, |g|) keeps convergence superlinear.
        p, _ = minres(lambda v: hessp(x, v), -g, rtol=min(0.1, gnorm), maxiter=minres_maxiter)
        accepted = False
        any_finite = False
        alpha = 1.0
        for _ in range(8):
            x_new = x + alpha * p
            f_new, g_new = fun(x_new)
            if _finite(f_new, g_new, xp):
                any_finite = True
                gn_new = math.sqrt(_dot(g_new, g_new, xp))
                if gn_new < gnorm:
                    accepted = True
                    break
            alpha *= 0.5
        if not any_finite:
            raise DivergenceError(f"objective or gradient is NaN/Inf at every trial point of Newton step {step + 1}")
        if not accepted:
            return x, f, g, step, f"Newton polish stalled at gradient norm {gnorm:.3g}"
        x, f, g, gnorm = x_new, f_new, g_new, gn_new
        if history is not None:
            history.append(f)
    return x, f, g, max_steps, "max_steps reached in Newton polish"


def steihaug_cg(matvec: Callable, g, radius: float, *, rtol: float, maxiter: int, precond: Callable | None = None):
    """Truncated conjugate gradients for the trust-region subproblem (Steihaug 1983).

    Approximately minimises the quadratic model ``m(p) = g·p + ½ p·Hp`` subject to
    ``|p| <= radius``. CG runs from ``p = 0`` until the residual ``|Hp + g|`` falls to
    ``rtol |g|``; it stops on the boundary when a step would leave the region or when
    it meets a direction of non-positive curvature (which an indefinite Hessian has away
    from a minimum). Directions of zero curvature, such as the gauge ``B_2 -> B_2 Q``,
    ``B_1 -> Q^T B_1`` of ``k >= 2`` branch factors, are never entered from ``p = 0``:
    the gradient is orthogonal to them, and so is the Krylov space while they stay exact
    null vectors.

    With a preconditioner ``precond(r) = M^{-1} r`` (``M`` symmetric positive definite)
    this is preconditioned Steihaug–Toint CG: the region is the ``M``-norm ball
    ``sqrt(p·Mp) <= radius`` (Conn, Gould & Toint 2000, Alg. 7.5.1), in which the iterates'
    ``M``-norms increase monotonically, so the boundary rule stays exact.

    Parameters
    ----------
    matvec : callable
        ``matvec(v) -> H v`` (symmetric).
    g : array, shape (n,)
        The gradient (the linear term of the model).
    radius : float
        Trust-region radius, > 0 (in the ``M``-norm when ``precond`` is given).
    rtol : float
        Relative (Euclidean) residual at which CG stops.
    maxiter : int
    precond : callable, optional
        ``precond(r) -> M^{-1} r``.

    Returns
    -------
    p : array, shape (n,)
    decrease : float
        ``-m(p)``, the decrease the model predicts (>= 0).
    iterations : int
    status : {"converged", "boundary", "negative curvature", "maxiter"}

    Examples
    --------
    >>> import numpy as np
    >>> H = np.diag([1.0, 4.0])
    >>> p, dec, _, status = steihaug_cg(lambda v: H @ v, np.array([1.0, 4.0]), 10.0, rtol=1e-12, maxiter=10)
    >>> np.allclose(p, [-1.0, -1.0]), status
    (True, 'converged')
    """
    return _steihaug(matvec, g, radius, rtol=rtol, maxiter=maxiter, precond=precond)[:4]


def _steihaug(matvec, g, radius, *, rtol, maxiter, precond=None):
    """:func:`steihaug_cg`, also returning the step's norm in the region's metric."""
    xp = get_namespace(g)
    z = xp.zeros_like(g)
    r = g
    y = g if precond is None else precond(g)
    d = -y
    ry = _dot(r, y, xp)
    gnorm = math.sqrt(_dot(r, r, xp))
    zz = zd = 0.0
    dd = ry  # d·Md with d = -M^{-1} g
    gz = 0.0  # g·z, tracked to evaluate the model without another product

    def boundary(z, zz, zd, dd):
        # Positive root of |z + tau d|_M = radius.
        disc = max(zd * zd + dd * (radius * radius - zz), 0.0)
        return (-zd + math.sqrt(disc)) / dd

    if gnorm == 0.0:
        return z, 0.0, 0, "converged", 0.0
    for it in range(1, maxiter + 1):
        Hd = matvec(d)
        dHd = _dot(d, Hd, xp)
        gd = _dot(g, d, xp)
        if not dHd > 1e-300 * dd:
            tau = boundary(z, zz, zd, dd)
            z_new = z + tau * d
            # m(z + tau d) = m(z) + tau (r·d) + ½ tau² d·Hd, with r = Hz + g.
            rd = _dot(r, d, xp)
            m = 0.5 * (_dot(z, r, xp) + gz) + tau * rd + 0.5 * tau * tau * dHd
            return z_new, max(-m, 0.0), it, "negative curvature", radius
        alpha = ry / dHd
        if zz + 2.0 * alpha * zd + alpha * alpha * dd >= radius * radius:
            tau = boundary(z, zz, zd, dd)
            rd = _dot(r, d, xp)
            m = 0.5 * (_dot(z, r, xp) + gz) + tau * rd + 0.5 * tau * tau * dHd
            return z + tau * d, max(-m, 0.0), it, "boundary", radius
        z = z + alpha * d
        gz = gz + alpha * gd
        r = r + alpha * Hd
        zz = zz + 2.0 * alpha * zd + alpha * alpha * dd
        rr_new = _dot(r, r, xp)
        if math.sqrt(rr_new) <= rtol * gnorm:
            m = 0.5 * (_dot(z, r, xp) + gz)
            return z, max(-m, 0.0), it, "converged", math.sqrt(max(zz, 0.0))
        y = r if precond is None else precond(r)
        ry_new = rr_new if precond is None else _dot(r, y, xp)
        beta = ry_new / ry
        ry = ry_new
        # d_new = -y + beta d; update d·Md and z·Md by recurrences (z is already updated).
        zd = beta * (zd + alpha * dd)
        dd = ry + beta * beta * dd
        d = -y + beta * d
    m = 0.5 * (_dot(z, r, xp) + gz)
    return z, max(-m, 0.0), maxiter, "maxiter", math.sqrt(max(zz, 0.0))


# The radius doubles after a step on the boundary whose ratio rho exceeds this. The usual
# 0.75 held the radius near 5e-4 for ~30 accepted steps (rho between 0.25 and 0.75) while a
# deep random start with orthogonal skips escapes its saddle region; 0.5 took L = 1024,
# k = 1 from 57 to 25 steps (issue 19, benchmarks/RESULTS.md).
_EXPAND_ABOVE = 0.5


@quiet_overflow
def trust_region_newton(
    fun: Callable,
    hessp: Callable,
    x,
    f,
    g,
    *,
    tol: float,
    max_steps: int,
    history: list | None = None,
    radius: float | None = None,
    cg_maxiter: int = 1000,
    operator: Callable | None = None,
    retract: Callable | None = None,
    preconditioner: Callable | None = None,
):
    """Trust-region Newton–CG (Steihaug) with exact Hessian-vector products.

    Each step solves the trust-region subproblem by :func:`steihaug_cg` to a relative
    residual ``min(0.5, sqrt(|g|))`` (superlinear convergence), relaxed to ``0.1 tol / |g|``
    when that is larger (the last step need not oversolve), and is judged by the ratio
    of the actual to the predicted decrease of Φ. The ratio stays meaningful far below
    the gradient norms where a line search on Φ stalls (MODEL.md §5; measured: actual and
    predicted decrease agree to 1% at 5e-16 with Φ ≈ 1e-3). Only when the predicted
    decrease falls below ``64 eps |Φ|``, Φ's own rounding, is a step accepted when it lowers
    the gradient norm instead. The radius shrinks to a quarter of the step below ``rho = 0.25``
    and doubles after a boundary (or negative-curvature) step with ``rho > 0.5``.

    Parameters
    ----------
    fun : callable
        ``fun(x) -> (value, grad)``.
    hessp : callable
        ``hessp(x, v) -> H v``.
    x, f, g
        Starting point, its value and gradient.
    tol : float
        Target gradient norm.
    max_steps : int
        Budget of outer (trust-region) steps.
    history : list, optional
        Appended with Φ after every accepted step.
    radius : float, optional
        Initial radius. Default ``max(1, |x|)``.
    cg_maxiter : int, default 1000
        Hessian-vector products per step at most.
    operator : callable, optional
        ``operator(x) -> (v -> H v)``: builds the Hessian at ``x`` once per step (so
        that the products can reuse the forward and backward sweeps). Overrides ``hessp``.
    retract : callable, optional
        ``retract(x, p) -> x_new``, the trial point for the step ``p``; default ``x + p``.
        Any map that agrees with ``x + p`` to first order keeps the convergence rate;
        one that follows the curved valley of the problem allows longer steps (see
        :func:`ramodel.model.valley_retraction`).
    preconditioner : callable, optional
        ``preconditioner(x) -> (r -> M^{-1} r)`` with ``M`` symmetric positive definite,
        built once per step: CG is preconditioned and the trust region is the ball
        ``|p|_M <= radius`` (see :func:`steihaug_cg`). At depth the Hessian has a few
        eigenvalues that grow with ``L`` beside a bulk near ``lambda_J``; a ``M`` that
        carries them (:func:`ramodel.model.gauss_newton_preconditioner`) keeps the CG
        iterations per step from growing with depth.

    Returns
    -------
    x, value, grad, steps, message, products
        ``products`` counts the Hessian-vector products.
    """
    xp = get_namespace(x)
    gnorm = math.sqrt(_dot(g, g, xp))
    if radius is None:
        radius = max(1.0, math.sqrt(_dot(x, x, xp)))
    products = 0
    step = 0
    rejected = 0
    eps = float(xp.finfo(x.dtype).eps)
    while step < max_steps:
        if gnorm <= tol:
            return x, f, g, step, "gradient norm below tol", products
        matvec = operator(x) if operator is not None else (lambda v, x=x: hessp(x, v))
        # Forcing term min(0.5, sqrt|g|) (superlinear), but no tighter than the last step
        # needs: a residual of 0.1 tol already meets the target.
        rtol = max(min(0.5, math.sqrt(gnorm)), min(0.5, 0.1 * tol / gnorm))
        precond = preconditioner(x) if preconditioner is not None else None
        p, pred, its, status, pnorm = _steihaug(matvec, g, radius, rtol=rtol, maxiter=cg_maxiter, precond=precond)
        products += its
        x_new = x + p if retract is None else retract(x, p)
        f_new, g_new = fun(x_new)
        if not _finite(f_new, g_new, xp):
            radius = 0.25 * pnorm
            rejected += 1
        else:
            gn_new = math.sqrt(_dot(g_new, g_new, xp))
            ared = f - f_new
            rounding = pred <= 64.0 * eps * max(abs(f), abs(f_new))
            rho = ared / pred if pred > 0 else -math.inf
            accept = (gn_new < gnorm) if rounding else (rho >= 0.1)
            if rounding:
                if not accept:
                    radius = 0.5 * pnorm
            elif rho < 0.25:
                radius = 0.25 * pnorm
            elif rho > _EXPAND_ABOVE and status in ("boundary", "negative curvature"):
                radius = 2.0 * radius
            if accept:
                x, f, g, gnorm = x_new, f_new, g_new, gn_new
                step += 1
                rejected = 0
                if history is not None:
                    history.append(f)
            else:
                rejected += 1
        if radius <= 1e-15 * max(1.0, math.sqrt(_dot(x, x, xp))) or rejected >= 30:
            if step == 0 and not _finite(f_new, g_new, xp) and rejected >= 30:
                raise DivergenceError(
                    f"objective or gradient is NaN/Inf at every trial point of trust-region step {step + 1}"
                )
            return x, f, g, step, f"trust region collapsed at gradient norm {gnorm:.3g}", products
    return x, f, g, max_steps, "max_steps reached", products


METHODS = ("lbfgs-newton", "trust-region")


@quiet_overflow
def minimize(
    fun: Callable,
    hessp: Callable | None,
    x0,
    *,
    tol: float,
    max_steps: int,
    polish_from: float | None = None,
    max_newton: int = 50,
    method: str = "lbfgs-newton",
    operator: Callable | None = None,
    depth: int | None = None,
    retract: Callable | None = None,
    preconditioner: Callable | None = None,
) -> OptimizeResult:
    """Minimise to a gradient norm of ``tol``, in phases.

    ``method="lbfgs-newton"``: L-BFGS to ``polish_from`` (or until it stalls), then
    Newton–MINRES; if that stalls or runs out of steps, a trust-region Newton–CG phase
    finishes. ``method="trust-region"``: trust-region Newton–CG (Steihaug) from ``x0``,
    which is what deep models need (the L-BFGS phase takes tens of thousands of steps at
    L = 1000).

    Parameters
    ----------
    fun : callable
        ``fun(x) -> (value, grad)``.
    hessp : callable or None
        ``hessp(x, v) -> H v``. None disables every second-order phase.
    x0 : array, shape (n,)
    tol : float
        Target gradient norm.
    max_steps : int
        Budget of L-BFGS iterations, and of trust-region steps; Newton–MINRES has its
        own ``max_newton``.
    polish_from : float, optional
        Gradient norm at which L-BFGS hands over to Newton. Default ``max(tol, 1e-6)``:
        L-BFGS is reliable down to there in float64.
    max_newton : int, default 50
    method : {"lbfgs-newton", "trust-region"}, default "lbfgs-newton"
    operator : callable, optional
        ``operator(x) -> (v -> H v)``, a Hessian built once per point (see
        :func:`ramodel.model.hvp_operator`); used by the trust-region phase.
    depth : int, optional
        Recorded in the phases (depth continuation runs several depths).
    retract : callable, optional
        ``retract(x, p) -> x_new`` for the trust-region phase (see :func:`trust_region_newton`).
    preconditioner : callable, optional
        ``preconditioner(x) -> (r -> M^{-1} r)`` for the trust-region phase's CG (see
        :func:`trust_region_newton`).

    Returns
    -------
    OptimizeResult
        ``message`` names every phase, the one that stopped last and why.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    xp = get_namespace(x0)
    history: list = []
    phases: list = []
    steps = 0
    if method == "trust-region" and hessp is None and operator is None:
        raise ValueError("method='trust-region' needs hessp or operator (Hessian-vector products)")
    if method == "trust-region":
        f, g = fun(x0)
        if not _finite(f, g, xp):
            raise DivergenceError("objective or gradient is not finite at the starting point (step 0)")
        history.append(f)
        x = x0
    else:
        second = hessp is not None or operator is not None
        handover = max(tol, 1e-6) if polish_from is None else max(tol, polish_from)
        target = handover if second else tol
        x, f, g, n, message = lbfgs(fun, x0, tol=target, max_steps=max_steps, history=history)
        gnorm = math.sqrt(_dot(g, g, xp))
        if message == "gradient norm below tol":
            message = f"gradient norm below {'the handover ' if second and target > tol else 'tol '}{target:.0e}"
        phases.append(Phase("L-BFGS", n, 0, 0, gnorm, message, depth))
        steps += n
        if second and gnorm > tol:
            base = hessp if hessp is not None else (lambda x, v: operator(x)(v))
            count = [0]

            def hp(x, v):
                count[0] += 1
                return base(x, v)

            start = len(history) - 1
            x, f, g, n, message = newton_polish(fun, hp, x, f, g, tol=tol, max_steps=max_newton, history=history)
            gnorm = math.sqrt(_dot(g, g, xp))
            if message == "gradient norm below tol":
                message = f"gradient norm below tol {tol:.0e}"
            phases.append(Phase("Newton-MINRES", n, count[0], start, gnorm, message, depth))
            steps += n
    gnorm = math.sqrt(_dot(g, g, xp))
    if (hessp is not None or operator is not None) and gnorm > tol:
        start = len(history) - 1
        x, f, g, n, message, products = trust_region_newton(
            fun, hessp, x, f, g, tol=tol, max_steps=max_steps, history=history, operator=operator,
            retract=retract, preconditioner=preconditioner,
        )
        gnorm = math.sqrt(_dot(g, g, xp))
        if message == "gradient norm below tol":
            message = f"gradient norm below tol {tol:.0e}"
        phases.append(Phase("trust-region Newton-CG", n, products, start, gnorm, message, depth))
        steps += n
    elif method == "trust-region":
        phases.append(Phase("trust-region Newton-CG", 0, 0, 0, gnorm, f"gradient norm below tol {tol:.0e} at the start", depth))
    return OptimizeResult(
        x=x,
        value=f,
        grad_norm=gnorm,
        converged=gnorm <= tol,
        steps=steps,
        history=tuple(history),
        message=describe_phases(phases),
        phases=tuple(phases),
    )
