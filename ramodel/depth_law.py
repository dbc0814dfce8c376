"""The depth law (T7): the optimal per-layer gain ``sigma_1(L)`` of the reduced UJM.

With identity skips, orthogonal class means ``x_c = m e_c`` (no within-class noise) and
the MSE loss, the UJM restricted to its symmetric critical points (T3) with the
class-symmetric ansatz ``J_l = s Q Q^T``, ``W = w Q^T`` is one scalar problem: every class
mode is the same. With ``p = (1 + s)^L`` and ``t = log p``, and after eliminating ``w``
(a ridge problem), Phi equals

    k = 1:  F_L(t) = D(t) + (a/2) L (e^{t/L} - 1)^2,
    k = 2:  F_L(t) = D(t) +  a    L (e^{t/L} - 1)        (t >= 0; nuclear-norm penalty),
    D(t)   = (y^2/2) b / (x^2 e^{2t} + b),

with ``x = m``, ``y = 1``, ``a = C lambda_J`` and ``b = C lambda_W`` (see
:func:`reduced_parameters`). ``sigma_1 = e^{t*/L} - 1`` at the minimiser ``t*``. The
proofs (``proofs/t7_depth_law.py``) show:

* k = 1: every stationary point with ``t > 0`` has
  ``W0(2 c' L)/2 <= t <= W0(2 c L)/2`` with ``c = y^2 b / (a x^2)`` and
  ``c' = c (1 + b/x^2)^{-2} e^{-2 t_max / L}``, so
  ``L sigma_1 = log(L)/2 + O(log log L)``: **Theta(log L)**, not ``c/L``;
* k = 2: ``L sigma_1 -> t_inf`` (a constant), ``t_inf = log(q_+ / x^2)/2`` with
  ``q_+`` the larger root of ``a (q + b)^2 = y^2 b q``, when that branch beats
  ``t = 0`` (otherwise ``J = 0`` is optimal and ``sigma_1 = 0``).

Everything here is plain NumPy (no SciPy needed).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "asymptotic_L_sigma1",
    "lambert_w0",
    "optimal_log_gain",
    "predicted_sigma1",
    "reduced_objective",
    "reduced_parameters",
]


def _check_positive(name, value):
    value = float(value)
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


def _check_k(branch_factors):
    if branch_factors not in (1, 2):
        raise ValueError(f"branch_factors must be 1 or 2, got {branch_factors!r}")
    return int(branch_factors)


def _depths(depths):
    L = np.atleast_1d(np.asarray(depths, dtype=float))
    if L.ndim != 1 or not np.all(np.isfinite(L)) or np.any(L < 1) or np.any(L != np.round(L)):
        raise ValueError(f"depths must be integers >= 1, got {depths!r}")
    return L


def reduced_parameters(*, classes: int, weight_decay=(1e-2, 1e-2), input_norm: float = 1.0) -> dict:
    """Parameters ``(x, y, a, b)`` of the per-mode problem for orthogonal class means.

    Parameters
    ----------
    classes : int
        ``C``; the inputs are ``x_c = input_norm * e_c`` (any number of copies per class).
    weight_decay : (float, float)
        ``(lambda_J, lambda_W)``.
    input_norm : float
        ``m = |x_c|``.

    Returns
    -------
    dict
        ``{"x": m, "y": 1.0, "a": C lambda_J, "b": C lambda_W}``.

    Examples
    --------
    >>> reduced_parameters(classes=2, weight_decay=(0.01, 0.02))
    {'x': 1.0, 'y': 1.0, 'a': 0.02, 'b': 0.04}
    """
    if int(classes) != classes or classes < 1:
        raise ValueError(f"classes must be an integer >= 1, got {classes!r}")
    lJ, lW = weight_decay
    return {"x": _check_positive("input_norm", input_norm), "y": 1.0,
            "a": classes * _check_positive("weight_decay[0]", lJ),
            "b": classes * _check_positive("weight_decay[1]", lW)}


def reduced_objective(t, *, depth: int, branch_factors: int = 1, x: float = 1.0, y: float = 1.0,
                      a: float = 0.02, b: float = 0.02):
    """``F_L(t)`` of the module docstring (``t = log p``, vectorised over ``t``).

    Examples
    --------
    >>> float(reduced_objective(0.0, depth=4, x=1.0, y=1.0, a=0.1, b=0.1))  # D(0) = b/(2(x^2+b))
    0.045454545454545456
    """
    k = _check_k(branch_factors)
    t = np.asarray(t, dtype=float)
    L = float(depth)
    data = 0.5 * y**2 * b / (x**2 * np.exp(2 * t) + b)
    e = np.expm1(t / L)
    pen = 0.5 * a * L * e**2 if k == 1 else a * L * np.abs(e)
    return data + pen


def _derivative(t, L, k, x, y, a, b):
    q = x**2 * np.exp(2 * t)
    dD = -(y**2) * b * q / (q + b) ** 2
    e = np.expm1(t / L)
    return dD + (a * e * (1 + e) if k == 1 else a * (1 + e))


def _bisect(f, lo, hi, iters=200):
    flo = f(lo)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        fm = f(mid)
        if (fm > 0) == (flo > 0):
            lo, flo = mid, fm
        else:
            hi = mid
        if hi - lo <= 1e-15 * max(1.0, abs(hi)):
            break
    return 0.5 * (lo + hi)


def optimal_log_gain(depths, *, branch_factors: int = 1, x: float = 1.0, y: float = 1.0, a: float = 0.02,
                     b: float = 0.02, grid: int = 4000) -> np.ndarray:
    """Global minimiser ``t*(L) = log p*(L)`` of the reduced problem, for each depth.

    Every stationary point in ``[0, t_max]`` is bracketed on a grid and refined by
    bisection; the one with the smallest ``F_L`` (or ``t = 0``) is returned. ``t_max`` is
    the proven a-priori bound on stationary points (``t e^{2t} <= c L``, i.e. ``t <=
    max(1, log(cL)/2)`` for k = 1, ``t <= log(c)/2`` for k = 2 with ``c = y^2 b/(a x^2)``).

    Parameters
    ----------
    depths : array of int
        Depths L >= 1.
    branch_factors : {1, 2}
        ``k``: squared (k = 1) or nuclear-norm (k = 2) penalty per mode.
    x, y, a, b : float
        The per-mode problem (all > 0); :func:`reduced_parameters` gives them for
        orthogonal class means.
    grid : int, default 4000
        Bracketing grid on ``[0, t_max]``. ``F_L'`` changes sign at most a few times
        there (k = 2: at most twice, proven), so 4000 points separate the roots with a
        wide margin; the bisection then reaches full float64 precision.

    Returns
    -------
    ndarray, shape (len(depths),)
        ``t*`` for each depth; ``sigma_1 = expm1(t*/L)``.
    """
    k = _check_k(branch_factors)
    x, y, a, b = (_check_positive(n, v) for n, v in (("x", x), ("y", y), ("a", a), ("b", b)))
    c = y**2 * b / (a * x**2)
    out = []
    for L in _depths(depths):
        tmax = max(1.0, 0.5 * np.log(c * L)) if k == 1 else 0.5 * np.log(c) if c > 1 else 0.0
        cands = [0.0]
        if tmax > 0:
            ts = np.linspace(0.0, tmax * (1 + 1e-9) + 1e-12, grid)
            g = _derivative(ts, L, k, x, y, a, b)
            for i in np.nonzero(np.sign(g[:-1]) != np.sign(g[1:]))[0]:
                cands.append(_bisect(lambda s, L=L: _derivative(s, L, k, x, y, a, b), ts[i], ts[i + 1]))
        vals = [float(reduced_objective(s, depth=int(L), branch_factors=k, x=x, y=y, a=a, b=b)) for s in cands]
        out.append(cands[int(np.argmin(vals))])
    return np.asarray(out)


def predicted_sigma1(depths, *, branch_factors: int = 1, classes: int = 2, weight_decay=(1e-2, 1e-2),
                     input_norm: float = 1.0) -> np.ndarray:
    """Predicted ``sigma_1(J_l)`` at the optimum of the reduced problem (orthogonal means, MSE).

    Parameters
    ----------
    depths : array of int
    branch_factors : {1, 2}
    classes : int
    weight_decay : (float, float)
    input_norm : float
        Norm of every class mean (the means are orthogonal, no within-class noise).

    Returns
    -------
    ndarray
        ``e^{t*/L} - 1`` per depth.

    Examples
    --------
    >>> s = predicted_sigma1([1, 1024], branch_factors=1, classes=2)
    >>> bool(1024 * s[1] > 2 * s[0])  # L sigma_1 keeps growing for k = 1
    True
    """
    prm = reduced_parameters(classes=classes, weight_decay=weight_decay, input_norm=input_norm)
    L = _depths(depths)
    t = optimal_log_gain(L, branch_factors=branch_factors, **prm)
    return np.expm1(t / L)


def lambert_w0(z):
    """Principal branch ``W0(z)`` for ``z >= 0`` (Halley iterations; NumPy only).

    Examples
    --------
    >>> w = lambert_w0(np.array([0.0, 1.0, 1e6]))
    >>> bool(np.allclose(w * np.exp(w), [0.0, 1.0, 1e6]))
    True
    """
    z = np.asarray(z, dtype=float)
    if np.any(z < 0) or not np.all(np.isfinite(z)):
        raise ValueError("lambert_w0: z must be finite and >= 0")
    w = np.where(z < 3, z / (1 + z), np.log(np.maximum(z, 3)) - np.log(np.log(np.maximum(z, 3))))
    for _ in range(60):
        ew = np.exp(w)
        f = w * ew - z
        step = f / (ew * (w + 1) - (w + 2) * f / (2 * w + 2))
        w = w - step
        if np.all(np.abs(step) <= 1e-15 * (1 + np.abs(w))):
            break
    return w


def asymptotic_L_sigma1(depths, *, branch_factors: int = 1, x: float = 1.0, y: float = 1.0, a: float = 0.02,
                        b: float = 0.02) -> np.ndarray:
    """Closed-form large-L value of ``L sigma_1``.

    k = 1: ``W0(2 c L)/2`` with ``c = y^2 b/(a x^2)`` (the upper bound of T7; the exact
    value differs by O(1/log L) relatively). k = 2: the constant limit
    ``log(q_+/x^2)/2`` (or 0 when ``J = 0`` wins), the same for every L.

    Parameters
    ----------
    depths : array of int
    branch_factors : {1, 2}
    x, y, a, b : float
        As in :func:`optimal_log_gain`.

    Returns
    -------
    ndarray, shape (len(depths),)

    Examples
    --------
    >>> prm = reduced_parameters(classes=2, input_norm=0.5)
    >>> round(float(asymptotic_L_sigma1([10**6], branch_factors=2, **prm)[0]), 6)
    0.672519
    """
    k = _check_k(branch_factors)
    L = _depths(depths)
    if k == 1:
        return 0.5 * lambert_w0(2 * y**2 * b / (a * x**2) * L)
    disc = y**2 * (y**2 - 4 * a)
    if disc < 0:
        return np.zeros_like(L)
    q = b * ((y**2 - 2 * a) + np.sqrt(disc)) / (2 * a)
    t = 0.5 * np.log(q / x**2)
    if not t > 0:
        return np.zeros_like(L)
    def g_inf(s):
        return 0.5 * y**2 * b / (x**2 * np.exp(2 * s) + b) + a * s

    return np.full_like(L, t if g_inf(t) < g_inf(0.0) else 0.0)
