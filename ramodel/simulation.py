"""``simulate``: solve the Unconstrained Jacobians Model to a critical point.

Random choices (data, initial point, skip matrices) come from one seed, split with
``numpy.random.Generator.spawn`` into independent streams, and are drawn on the host,
so a seed gives the same problem on every backend.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import model
from ._validation import (
    as_generator,
    check_choice,
    check_int,
    check_integer_labels,
    check_optional_mapping,
    check_positive_float,
    check_real_array,
)
from .backend import asarray, get_namespace, namespace_name, resolve_dtype, to_numpy
from .datasets import gaussian_mixture
from .optimize import DivergenceError, minimize

__all__ = ["Simulation", "simulate", "DivergenceError", "DEFAULT_TOL"]

#: Default target gradient norm per dtype. Float64 reaches ~1e-13 with the Newton
#: polish on small problems; float32's rounding floor is near 1e-6 relative.
DEFAULT_TOL = {"float64": 1e-10, "float32": 1e-5}


@dataclass(frozen=True, eq=False)
class Simulation:
    """A solved Unconstrained Jacobians Model (MODEL.md §1).

    Arrays live in the namespace the simulation ran on (NumPy or CuPy).

    Attributes
    ----------
    jacobians : array, shape (L, d, d)
        The residual Jacobians ``J_l = B_{l,k} ... B_{l,1}``.
    factors : array, shape (L, k, d, d)
        The branch factors; ``factors[l, 0]`` acts first.
    classifier : array, shape (C, d)
        ``W``.
    skips : array, shape (L, d, d)
        The skip matrices ``M_l``.
    inputs : array, shape (d, N)
        ``X``, one input per column.
    labels : array, shape (N,)
        Integer classes in ``[0, C)``.
    representations : array, shape (L+1, N, d)
        ``h_0 .. h_L`` for every input (FORMAT.md axis order).
    loss_history : ndarray, shape (steps+1,)
        Φ after every accepted optimiser step.
    grad_norm : float
        ``|grad Φ|`` at the returned point.
    converged : bool
        ``grad_norm <= tol``.
    steps : int
        Optimiser steps taken (L-BFGS iterations plus Newton steps).
    message : str
        Why the optimiser stopped.
    config : dict
        Every option of the call, for provenance and sweeps.
    """

    jacobians: Any
    factors: Any
    classifier: Any
    skips: Any
    inputs: Any
    labels: Any
    representations: Any
    loss_history: np.ndarray
    grad_norm: float
    converged: bool
    steps: int
    message: str
    config: dict = field(default_factory=dict)

    @property
    def depth(self) -> int:
        """``L``."""
        return self.jacobians.shape[0]

    @property
    def width(self) -> int:
        """``d``."""
        return self.jacobians.shape[-1]

    @property
    def classes(self) -> int:
        """``C``."""
        return self.classifier.shape[0]

    @property
    def is_trivial(self) -> bool:
        """True at the critical point ``J = 0`` (every Jacobian entry below 1e-8 of the
        classifier's scale). With ``k >= 2`` and a large ``lambda_J``, or with no skips
        from a small start, this can be a genuine local minimum rather than a failure."""
        J = to_numpy(self.jacobians)
        W = to_numpy(self.classifier)
        return bool(np.max(np.abs(J)) <= 1e-8 * max(1.0, float(np.max(np.abs(W)))))

    @property
    def weight_decay(self) -> tuple[float, float]:
        """``(lambda_J, lambda_W)``."""
        return tuple(self.config["weight_decay"])

    def report(self, **kwargs):
        """RA metrics of METRICS.md for this simulation (see :func:`ramodel.report.analyze`)."""
        from .report import analyze

        return analyze(self, **kwargs)

    def summary(self, *, top: int | None = None) -> str:
        """A plain-text summary: convergence, top singular values, rank, theorem checks."""
        from .summary import simulation_summary

        return simulation_summary(self, top=top)

    def __str__(self) -> str:
        return self.summary()

    def _repr_html_(self) -> str:
        """Compact notebook table: configuration, convergence and a verdict per theorem."""
        import html

        from .summary import theorem_checks

        c = self.config
        head = (
            f"<b>Simulation</b>: L={self.depth}, C={self.classes}, d={self.width}, N={self.inputs.shape[1]}, "
            f"loss={html.escape(str(c.get('loss')))}, k={c.get('branch_factors')}, skip={html.escape(str(c.get('skip')))}<br>"
            f"{'converged' if self.converged else '<b>not converged</b>'} after {self.steps} steps, "
            f"|&nabla;&Phi;| = {self.grad_norm:.2e}"
        )
        rows = []
        for chk in theorem_checks(self):
            verdict = "n/a" if chk.holds is None else ("holds" if chk.holds else "<b>fails</b>")
            nums = ", ".join(
                f"{html.escape(k)} = {v:.2e}" if isinstance(v, float) else f"{html.escape(k)}: {html.escape(str(v))}"
                for k, v in chk.measured.items()
            )
            rows.append(f"<tr><td>{chk.name}</td><td>{html.escape(chk.statement)}</td><td>{verdict}</td><td>{nums}</td></tr>")
        table = (
            "<table><thead><tr><th>theorem</th><th>statement</th><th>verdict</th><th>measured</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>"
        )
        return f"<div>{head}{table}</div>"

    def __repr__(self) -> str:
        c = self.config
        return (
            f"Simulation(depth={self.depth}, classes={self.classes}, width={self.width}, "
            f"N={self.inputs.shape[1]}, loss={c.get('loss')!r}, k={c.get('branch_factors')}, "
            f"skip={c.get('skip')!r}, converged={self.converged}, grad_norm={self.grad_norm:.2e})"
        )


def _resolve_skips(skip, *, depth, width, skip_params, skip_shared, rng, dtype, xp):
    """Skip matrices ``(L, d, d)`` from a family name or explicit matrices."""
    if isinstance(skip, str):
        if skip == "identity" and not skip_params:
            M = np.broadcast_to(np.eye(width), (depth, width, width))
        else:
            from . import mappings

            seed = int(rng.integers(2**63 - 1))
            M = to_numpy(
                mappings.draw_stack(
                    skip, width, depth=depth, shared=skip_shared, seed=seed, params=dict(skip_params or {})
                )
            )
        return asarray(np.ascontiguousarray(M, dtype=np.float64), xp=xp, dtype=dtype)
    M = skip
    try:
        M_np = np.asarray(to_numpy(M), dtype=np.float64)
    except Exception:
        raise TypeError(
            f"skip must be a family name or an array of shape ({width}, {width}) or "
            f"({depth}, {width}, {width}), got {type(skip).__name__}"
        ) from None
    if M_np.shape == (width, width):
        M_np = np.broadcast_to(M_np, (depth, width, width))
    elif M_np.shape != (depth, width, width):
        raise ValueError(
            f"skip matrices must have shape ({width}, {width}) or ({depth}, {width}, {width}) "
            f"(depth, width, width), got {M_np.shape}"
        )
    if not np.all(np.isfinite(M_np)):
        raise ValueError("skip matrices must be finite, but they contain NaN or Inf")
    return asarray(np.ascontiguousarray(M_np), xp=xp, dtype=dtype)


def _resolve_data(inputs, labels, *, classes, width, samples_per_class, mean_scale, noise, rng):
    """Inputs ``(N, d)`` float64 and labels ``(N,)`` on the host."""
    if inputs is None and labels is None:
        return gaussian_mixture(
            classes,
            width=width,
            samples_per_class=samples_per_class,
            mean_scale=mean_scale,
            noise=noise,
            seed=rng,
        )
    if inputs is None or labels is None:
        raise ValueError("inputs and labels must be given together (or neither, for a Gaussian mixture)")
    X = np.asarray(to_numpy(inputs), dtype=np.float64)
    y = np.asarray(to_numpy(labels))
    if y.ndim != 1:
        raise ValueError(f"labels must have shape (N,), got {y.shape}")
    if X.ndim != 2:
        raise ValueError(f"inputs must have shape (N, d) (one sample per row), got {X.shape}")
    if X.shape[0] != y.shape[0]:
        hint = " (inputs looks transposed: pass one sample per row, shape (N, d))" if X.shape[1] == y.shape[0] else ""
        raise ValueError(f"inputs has {X.shape[0]} rows but labels has {y.shape[0]} entries{hint}")
    if not np.all(np.isfinite(X)):
        raise ValueError("inputs must be finite, but they contain NaN or Inf")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise ValueError("labels must be integers")
        y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= classes):
        raise ValueError(f"labels must lie in [0, classes={classes}), got range [{y.min()}, {y.max()}]")
    return X, y.astype(np.int64)


def simulate(
    depth: int,
    classes: int,
    *,
    width: int | None = None,
    samples_per_class: int = 8,
    branch_factors: int = 1,
    loss: str = "mse",
    weight_decay=(1e-2, 1e-2),
    skip="identity",
    skip_params: dict | None = None,
    skip_shared: bool = False,
    mean_scale: float = 1.0,
    noise: float = 0.1,
    inputs=None,
    labels=None,
    init_scale: float | None = None,
    backend: str | None = "numpy",
    dtype: str = "float64",
    seed=0,
    tol: float | None = None,
    max_steps: int = 100_000,
) -> Simulation:
    """Solve the Unconstrained Jacobians Model to a critical point.

    Minimises Φ (MODEL.md §1) over the branch factors and the classifier with L-BFGS,
    then polishes with Newton–MINRES steps (exact Hessian-vector products) until
    ``|grad Φ| <= tol``.

    Parameters
    ----------
    depth : int
        ``L``, number of residual blocks, >= 1.
    classes : int
        ``C``, >= 2.
    width : int, optional
        ``d``, >= classes. Default ``max(16, classes)``; with ``inputs`` it is taken from them.
    samples_per_class : int, default 8
        Gaussian-mixture points per class (ignored with ``inputs``).
    branch_factors : int, default 1
        ``k``: each ``J_l`` is a product of ``k`` factors with weight decay on each.
        ``k = 1`` is the plain UJM; ``k = 2`` models a two-layer branch.
    loss : {"mse", "cross_entropy"}, default "mse"
    weight_decay : float or (float, float), default (1e-2, 1e-2)
        ``(lambda_J, lambda_W)``, each finite and > 0 (the theorems need both positive).
    skip : str or array, default "identity"
        A registered family name (see :mod:`ramodel.mappings`), or explicit skip
        matrices of shape ``(d, d)`` (shared) or ``(L, d, d)``.
    skip_params : dict, optional
        Parameters of the skip family.
    skip_shared : bool, default False
        One draw for all blocks instead of one per block.
    mean_scale, noise : float
        Gaussian-mixture class-mean norm and within-class spread (see
        :func:`ramodel.datasets.gaussian_mixture`).
    inputs : array, shape (N, d), optional
        Features to fit instead of a Gaussian mixture: one sample per row. ``labels`` is
        then required. Shape ``(d, N)`` is refused with a message.
    labels : array, shape (N,), optional
        Integer classes in ``[0, classes)``.
    init_scale : float, optional
        Standard deviation times sqrt(d) of the random initial factors and classifier.
        Default 0.1, or 1.0 when every skip is zero: without skips the data term is
        ``O(|J|^L)``, so for ``L >= 3`` the origin is a strict local minimum of Φ and a
        small start converges to the useless ``J = 0``.
    backend : {"numpy", "cupy"} or module, default "numpy"
    dtype : {"float64", "float32"}, default "float64"
    seed : int, SeedSequence or Generator, default 0
        Drives the data, the initial point and the skip matrices.
    tol : float, optional
        Target gradient norm. Default 1e-10 (float64) or 1e-5 (float32).
    max_steps : int, default 100000
        L-BFGS iteration budget (the Newton polish adds at most 50 steps). Well-conditioned
        problems stop at ``tol`` after a few hundred steps; skips with spectral norm near 3
        (e.g. banded correlation, bandwidth 3) at depth 8 need about 40,000.

    Returns
    -------
    Simulation

    Raises
    ------
    DivergenceError
        If Φ or its gradient becomes NaN or Inf; the message names the step.

    Examples
    --------
    >>> s = simulate(depth=4, classes=3, width=6, samples_per_class=4, seed=0)
    >>> s.converged, s.grad_norm <= 1e-10
    (True, True)
    >>> s.jacobians.shape, s.representations.shape
    ((4, 6, 6), (5, 12, 6))
    """
    # Arrays and mappings first, so bad ones fail here by name, not deep inside NumPy.
    skip_params = check_optional_mapping("skip_params", skip_params)
    if inputs is not None:
        inputs = check_real_array("inputs", inputs)
    if labels is not None:
        labels = check_integer_labels("labels", labels)
    if not isinstance(skip, str):
        skip = check_real_array("skip", skip)
    depth = check_int("depth", depth, minimum=1)
    classes = check_int("classes", classes, minimum=2)
    samples_per_class = check_int("samples_per_class", samples_per_class, minimum=1)
    branch_factors = check_int("branch_factors", branch_factors, minimum=1)
    loss = check_choice("loss", loss, model.LOSSES)
    lambda_J, lambda_W = model._check_weight_decay(weight_decay)
    max_steps = check_int("max_steps", max_steps, minimum=1)
    xp = get_namespace(backend=backend)
    dtype_name = resolve_dtype(dtype, np).__name__
    xdtype = resolve_dtype(dtype_name, xp)
    if tol is None:
        tol = DEFAULT_TOL[dtype_name]
    tol = check_positive_float("tol", tol)
    if inputs is not None:
        inferred = np.shape(inputs)[-1] if np.ndim(inputs) == 2 else None
        if width is not None and inferred is not None and width != inferred:
            raise ValueError(f"width={width} does not match inputs of shape {np.shape(inputs)} (N, d)")
        width = inferred if inferred is not None else width
    if width is None:
        width = max(16, classes)
    width = check_int("width", width, minimum=1)
    if width < classes:
        raise ValueError(f"width must be >= classes ({classes}), got {width}")
    if not isinstance(skip_shared, bool):
        raise TypeError(f"skip_shared must be a bool, got {skip_shared!r}")

    data_rng, init_rng, skip_rng = as_generator(seed).spawn(3)
    X, y = _resolve_data(
        inputs,
        labels,
        classes=classes,
        width=width,
        samples_per_class=samples_per_class,
        mean_scale=mean_scale,
        noise=noise,
        rng=data_rng,
    )
    skips = _resolve_skips(
        skip,
        depth=depth,
        width=width,
        skip_params=skip_params,
        skip_shared=skip_shared,
        rng=skip_rng,
        dtype=dtype_name,
        xp=xp,
    )
    if init_scale is None:
        init_scale = 1.0 if not bool(xp.any(skips != 0)) else 0.1
    init_scale = check_positive_float("init_scale", init_scale)
    Y = np.eye(classes)[:, y]
    problem = model.make_problem(
        asarray(np.ascontiguousarray(X.T), xp=xp, dtype=dtype_name),
        asarray(Y, xp=xp, dtype=dtype_name),
        skips,
        loss=loss,
        weight_decay=(lambda_J, lambda_W),
        branch_factors=branch_factors,
    )
    scale = init_scale / math.sqrt(width)
    factors0 = init_rng.standard_normal((depth, branch_factors, width, width)) * scale
    W0 = init_rng.standard_normal((classes, width)) * scale
    theta0 = asarray(np.concatenate([factors0.ravel(), W0.ravel()]), xp=xp, dtype=dtype_name)

    result = minimize(
        lambda th: model.value_and_grad(th, problem),
        lambda th, v: model.hvp(th, v, problem),
        theta0,
        tol=tol,
        max_steps=max_steps,
    )
    factors, W = unpack_copy(result.x, problem, xp)
    J = model.jacobians_from_factors(factors)
    H = model.forward(J, problem.skips, problem.X)
    representations = xp.permute_dims(H, (0, 2, 1))
    config = {
        "depth": depth,
        "classes": classes,
        "width": width,
        "samples_per_class": samples_per_class if inputs is None else None,
        "n_inputs": int(y.shape[0]),
        "branch_factors": branch_factors,
        "loss": loss,
        "weight_decay": [lambda_J, lambda_W],
        "skip": skip if isinstance(skip, str) else "explicit",
        "skip_params": dict(skip_params or {}),
        "skip_shared": skip_shared,
        "mean_scale": mean_scale,
        "noise": noise,
        "data": "gaussian_mixture" if inputs is None else "inputs",
        "init_scale": init_scale,
        "backend": namespace_name(xp),
        "dtype": dtype_name,
        "seed": seed if isinstance(seed, (int, np.integer)) else repr(seed),
        "tol": tol,
        "max_steps": max_steps,
    }
    return Simulation(
        jacobians=J,
        factors=factors,
        classifier=W,
        skips=problem.skips,
        inputs=problem.X,
        labels=asarray(y, xp=xp) if xp is not np else y,
        representations=representations,
        loss_history=np.asarray(result.history, dtype=np.float64),
        grad_norm=float(result.grad_norm),
        converged=bool(result.converged),
        steps=int(result.steps),
        message=result.message,
        config=config,
    )


def unpack_copy(theta, problem, xp):
    """Owned copies of ``factors`` and ``W`` (the result must not alias the optimiser's buffer)."""
    factors, W = model.unpack(theta, problem)
    return xp.asarray(factors, copy=True), xp.asarray(W, copy=True)
