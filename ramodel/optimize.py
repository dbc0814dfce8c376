"""Solving the model to a critical point: L-BFGS, then a Newton–MINRES polish.

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
- Non-finite values are never returned: a trial point with NaN/Inf is treated as a
  step that is too long; if nothing finite can be found, :class:`DivergenceError`
  names the step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from .backend import get_namespace

__all__ = ["DivergenceError", "OptimizeResult", "lbfgs", "minres", "newton_polish", "minimize"]


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
        Why the solver stopped.
    """

    x: object
    value: float
    grad_norm: float
    converged: bool
    steps: int
    history: tuple
    message: str


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


def minimize(
    fun: Callable,
    hessp: Callable | None,
    x0,
    *,
    tol: float,
    max_steps: int,
    polish_from: float | None = None,
    max_newton: int = 50,
) -> OptimizeResult:
    """L-BFGS to ``polish_from`` (or until it stalls), then Newton–MINRES down to ``tol``.

    Parameters
    ----------
    fun : callable
        ``fun(x) -> (value, grad)``.
    hessp : callable or None
        ``hessp(x, v) -> H v``. None disables the polish.
    x0 : array, shape (n,)
    tol : float
        Target gradient norm.
    max_steps : int
        Budget of L-BFGS iterations; the polish has its own ``max_newton``.
    polish_from : float, optional
        Gradient norm at which L-BFGS hands over to Newton. Default ``max(tol, 1e-6)``:
        L-BFGS is reliable down to there in float64.
    max_newton : int, default 50
    """
    xp = get_namespace(x0)
    history: list = []
    handover = max(tol, 1e-6) if polish_from is None else max(tol, polish_from)
    x, f, g, steps, message = lbfgs(fun, x0, tol=handover if hessp else tol, max_steps=max_steps, history=history)
    gnorm = math.sqrt(_dot(g, g, xp))
    if hessp is not None and gnorm > tol:
        x, f, g, n_newton, message = newton_polish(
            fun, hessp, x, f, g, tol=tol, max_steps=max_newton, history=history
        )
        steps += n_newton
        gnorm = math.sqrt(_dot(g, g, xp))
    return OptimizeResult(
        x=x,
        value=f,
        grad_norm=gnorm,
        converged=gnorm <= tol,
        steps=steps,
        history=tuple(history),
        message=message,
    )
