"""Numerical side of the proofs: converged simulations and independent NumPy references.

Design constraints
------------------
* Every quantity a theorem talks about is recomputed here from the raw arrays of a
  ``ramodel.Simulation`` (inputs, labels, skips, jacobians, classifier) with plain
  NumPy, not with ``ramodel``'s own model code, so the checks are independent of it.
* The derived SymPy expressions are evaluated through ``sympy.lambdify`` on NumPy and,
  when CuPy and a CUDA device are present, on CuPy as well (never imported otherwise).
* Tolerances: a critical point is only accepted at ``|grad Phi| <= GRAD_MAX`` (1e-8).
  The theorems' conclusions are exact at a critical point and move to first order in
  the gradient residual divided by the weight decay, so each check uses
  ``tolerance(sim) = BASE_TOL + SLOPE * |grad Phi| / min(lambda_J, lambda_W)`` on a
  dimensionless (relative) deviation. ``BASE_TOL`` (1e-9) covers float64 rounding
  through SVDs/eigendecompositions of small matrices; ``SLOPE`` (1e3) covers the norms
  of the A_l and H_l that multiply the residual.
"""

from __future__ import annotations

import functools
import importlib.util
from typing import Any

import numpy as np
import sympy as sp

from ._exact import ProofFailure

__all__ = [
    "GRAD_MAX",
    "BASE_TOL",
    "SLOPE",
    "simulate_available",
    "converged",
    "tolerance",
    "trivial",
    "skip_stack",
    "SKIP_FAMILIES",
    "ORTHOGONAL_FAMILIES",
    "forward",
    "loss_G",
    "asym",
    "rel",
    "backends",
    "lambdify_eval",
    "sym_sqrt_psd",
]

GRAD_MAX = 1e-8
BASE_TOL = 1e-9
SLOPE = 1e3

SKIP_FAMILIES = (
    "identity",
    "none",
    "orthogonal",
    "permutation",
    "signed_permutation",
    "block_orthogonal",
    "sparse_unipotent",
    "correlation",
)
ORTHOGONAL_FAMILIES = ("identity", "orthogonal", "permutation", "signed_permutation", "block_orthogonal")


def simulate_available() -> bool:
    """True when ``ramodel.simulate`` can be imported."""
    try:
        from ramodel import simulate  # noqa: F401
    except Exception:
        return False
    return True


def _haar(d: int, rng: np.random.Generator) -> np.ndarray:
    Q, R = np.linalg.qr(rng.standard_normal((d, d)))
    return Q * np.sign(np.diag(R))


def skip_stack(family: str, depth: int, width: int, seed: int) -> np.ndarray:
    """Skip matrices ``(L, d, d)`` of one family of MAPPINGS.md (own constructions).

    Built here rather than through ``ramodel.mappings`` so the checks do not depend
    on that module. ``block_orthogonal`` uses blocks of 2; ``sparse_unipotent`` uses
    density 0.5 and scale 0.5; ``correlation`` is Toeplitz AR(1) with rho = 0.5.

    Examples
    --------
    >>> M = skip_stack("orthogonal", 3, 4, seed=0)
    >>> M.shape, bool(np.allclose(M[1].T @ M[1], np.eye(4)))
    ((3, 4, 4), True)
    """
    rng = np.random.default_rng(seed)
    d = width
    out = []
    for _ in range(depth):
        if family == "identity":
            M = np.eye(d)
        elif family == "none":
            M = np.zeros((d, d))
        elif family == "orthogonal":
            M = _haar(d, rng)
        elif family in ("permutation", "signed_permutation"):
            M = np.eye(d)[rng.permutation(d)]
            if family == "signed_permutation":
                M = M * rng.choice([-1.0, 1.0], size=d)
        elif family == "block_orthogonal":
            M = np.zeros((d, d))
            for s in range(0, d, 2):
                b = min(2, d - s)
                M[s : s + b, s : s + b] = _haar(b, rng)
        elif family == "sparse_unipotent":
            N = np.triu(rng.standard_normal((d, d)) * 0.5 * (rng.random((d, d)) < 0.5), 1)
            P = np.eye(d)[rng.permutation(d)]
            M = P @ (np.eye(d) + N) @ P.T
        elif family == "correlation":
            i = np.arange(d)
            M = 0.5 ** np.abs(i[:, None] - i[None, :])
        else:
            raise ValueError(f"family must be one of {SKIP_FAMILIES}, got {family!r}")
        out.append(M)
    return np.stack(out)


@functools.lru_cache(maxsize=256)
def _converged_cached(depth, classes, width, samples_per_class, loss, branch_factors, lam_J, lam_W, skip, seed,
                      init_scale):
    from ramodel import simulate

    skips = "identity" if skip == "identity" else skip_stack(skip, depth, width, seed + 7919)
    return simulate(
        depth=depth,
        classes=classes,
        width=width,
        samples_per_class=samples_per_class,
        branch_factors=branch_factors,
        loss=loss,
        weight_decay=(lam_J, lam_W),
        skip=skips,
        seed=seed,
        init_scale=init_scale,
        tol=1e-11,
    )


def converged(
    *,
    depth: int,
    classes: int,
    width: int,
    samples_per_class: int = 2,
    loss: str = "mse",
    branch_factors: int = 1,
    weight_decay=(1e-2, 1e-2),
    skip: str = "identity",
    seed: int = 0,
    init_scale: float = 0.1,
):
    """A ``ramodel.simulate`` result at ``|grad Phi| <= GRAD_MAX`` (asserted), cached.

    ``skip`` is a family name of :data:`SKIP_FAMILIES`; its matrices are drawn by
    :func:`skip_stack` (seeded from ``seed``) and passed to ``simulate`` explicitly.
    """
    sim = _converged_cached(
        depth, classes, width, samples_per_class, loss, branch_factors,
        float(weight_decay[0]), float(weight_decay[1]), skip, seed, float(init_scale),
    )
    if not (sim.grad_norm <= GRAD_MAX):
        raise ProofFailure(
            f"simulation not converged: grad_norm={sim.grad_norm:.2e} > {GRAD_MAX:g} ({sim!r})"
        )
    return sim


def trivial(sim) -> bool:
    """True at a critical point with ``J ~ 0`` (max entry <= 1e-8).

    Skip-free networks (M = 0) have the saddle J = W = 0, where every statement about
    the J_l holds trivially and relative deviations are meaningless rounding ratios.
    """
    return float(np.abs(as_numpy(sim.jacobians)).max()) <= 1e-8


def tolerance(sim) -> float:
    """Tolerance on a relative deviation at this simulation's gradient norm."""
    lam = min(sim.config["weight_decay"])
    return BASE_TOL + SLOPE * sim.grad_norm / lam


def forward(J: np.ndarray, M: np.ndarray, X: np.ndarray) -> np.ndarray:
    """``H`` of shape ``(L+1, d, N)``: ``H_0 = X``, ``H_l = (M_l + J_l) H_{l-1}``."""
    H = [X]
    for Ml, Jl in zip(M, J):
        H.append((Ml + Jl) @ H[-1])
    return np.stack(H)


def loss_G(Z: np.ndarray, labels: np.ndarray, loss: str) -> np.ndarray:
    """``G = d(mean loss)/dZ`` of shape ``(C, N)`` for MSE or cross-entropy."""
    C, N = Z.shape
    Y = np.eye(C)[:, labels]
    if loss == "mse":
        return (Z - Y) / N
    E = np.exp(Z - Z.max(axis=0, keepdims=True))
    return (E / E.sum(axis=0, keepdims=True) - Y) / N


def asym(X: np.ndarray) -> float:
    """``|X - X^T|_F / (2 |X|_F)`` (0 for symmetric X; 0 for X = 0).

    Examples
    --------
    >>> asym(np.array([[1.0, 2.0], [2.0, 3.0]])), asym(np.array([[0.0, 1.0], [-1.0, 0.0]]))
    (0.0, 1.0)
    """
    n = np.linalg.norm(X)
    return 0.0 if n == 0 else float(np.linalg.norm(X - X.T) / (2 * n))


def rel(a: np.ndarray, b: np.ndarray, scale: float | None = None) -> float:
    """``|a - b| / scale`` with ``scale = max(|a|, |b|, 1e-300)`` by default."""
    s = scale if scale is not None else max(np.linalg.norm(a), np.linalg.norm(b), 1e-300)
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / s)


def sym_sqrt_psd(S: np.ndarray) -> np.ndarray:
    """Principal square root of a symmetric PSD matrix by eigendecomposition."""
    w, V = np.linalg.eigh((S + S.T) / 2)
    return (V * np.sqrt(np.clip(w, 0, None))) @ V.T


@functools.lru_cache(maxsize=1)
def backends() -> tuple[tuple[str, Any], ...]:
    """``(("numpy", numpy),)`` plus ``("cupy", cupy)`` when CuPy and a GPU are usable."""
    out: list[tuple[str, Any]] = [("numpy", np)]
    if importlib.util.find_spec("cupy") is not None:
        try:
            import cupy

            if cupy.cuda.runtime.getDeviceCount() > 0:
                out.append(("cupy", cupy))
        except Exception:  # a broken CUDA install must not break the proofs
            pass
    return tuple(out)


@functools.lru_cache(maxsize=None)
def _lambdified(args: tuple, expr, module_name: str):
    return sp.lambdify(args, expr, modules=module_name)


def lambdify_eval(args: tuple, expr, values: tuple) -> tuple[np.ndarray, float | None]:
    """Evaluate a derived SymPy expression with ``lambdify`` on every backend.

    Returns the NumPy value and the largest relative difference between the CuPy
    and NumPy values (``None`` when CuPy is not available).
    """
    ref = np.asarray(_lambdified(args, expr, "numpy")(*values), dtype=np.float64)
    worst = None
    for name, xp in backends()[1:]:
        moved = tuple(xp.asarray(v) if isinstance(v, np.ndarray) else v for v in values)
        out = _lambdified(args, expr, name)(*moved)
        out = np.asarray(out.get() if hasattr(out, "get") else out, dtype=np.float64)
        d = rel(out, ref)
        worst = d if worst is None else max(worst, d)
    return ref, worst


def as_numpy(x) -> np.ndarray:
    """Host copy of a NumPy or CuPy array."""
    return np.asarray(x.get() if hasattr(x, "get") else x)
