"""``simulate``: solve the Unconstrained Jacobians Model to a critical point.

Random choices (data, initial point, skip matrices) come from one seed, split with
``numpy.random.Generator.spawn`` into independent streams, and are drawn on the host,
so a seed gives the same problem on every backend.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
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
from .optimize import DivergenceError, Phase, describe_phases, minimize

__all__ = ["Simulation", "simulate", "DivergenceError", "DEFAULT_TOL", "SOLVERS", "estimate_memory"]

# Gauss–Newton preconditioning of the trust-region CG where the skips are nonzero (issue 19;
# in a depth continuation only for k = 1, where it measured faster); a module switch so that
# benchmarks and tests can measure the solver without it.
_PRECONDITION = True
#: Choices of ``simulate(solver=...)``.
SOLVERS = ("auto", "lbfgs-newton", "trust-region", "continuation")

#: Depth continuation starts from a direct solve at a depth of at most this many blocks.
CONTINUATION_BASE = 32

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
        Optimiser steps taken, all phases together.
    message : str
        Every solver phase, which one stopped last and why.
    config : dict
        Every option of the call, for provenance and sweeps. ``config["seed"]`` is the
        integer entropy actually used, also when ``seed`` was None or a Generator, so
        ``simulate(..., seed=config["seed"])`` rebuilds the run.
    phases : tuple of ramodel.optimize.Phase
        The solver phases in order (name, depth, steps, Hessian products, index of the
        phase's first value in ``loss_history``, gradient norm and stopping reason).
        With depth continuation, ``loss_history`` concatenates the solves at every depth
        and each phase names its depth.
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
    phases: tuple = ()

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

    def to_dict(self, *, top: int | None = None) -> dict:
        """The run as plain JSON values: configuration, convergence, solver message, phases,
        final Φ, the top singular values of every ``J_l`` and the theorem checks.

        Parameters
        ----------
        top : int, optional
            How many singular values per layer; default ``min(d, C + 2)``.

        Returns
        -------
        dict
            JSON-safe (NaN as None, infinities as strings), what ``ramodel simulate --json``
            prints under ``"simulation"``.

        Examples
        --------
        >>> import ramodel
        >>> d = ramodel.simulate(depth=2, classes=2, width=3, samples_per_class=2, seed=0).to_dict()
        >>> d["converged"], len(d["singular_values"]), len(d["singular_values"][0])
        (True, 2, 3)
        """
        import dataclasses

        from ._format import jsonable
        from .summary import theorem_checks

        top = min(self.width, self.classes + 2) if top is None else int(top)
        S = np.linalg.svd(np.asarray(to_numpy(self.jacobians), dtype=np.float64), compute_uv=False)[:, :top]
        return jsonable({
            "config": self.config,
            "converged": self.converged,
            "grad_norm": self.grad_norm,
            "steps": self.steps,
            "message": self.message,
            "phases": [dataclasses.asdict(ph) for ph in self.phases],
            "trivial": self.is_trivial,
            "loss": float(self.loss_history[-1]) if len(self.loss_history) else None,
            "singular_values": S,
            "theorems": [c.to_dict() for c in theorem_checks(self)],
        })

    def to_jacobian_set(self, *, meta: dict | None = None):
        """The simulation as a FORMAT.md :class:`~ramodel.jacobian_set.JacobianSet`.

        FORMAT.md stores per-input Jacobians ``(L, N, d, d)``; a UJM's are the same for every
        input, so each ``J_l`` is repeated ``N`` times. ``meta`` (merged last) records the loss,
        weight decays, branch factors and configuration (``ramodel theory`` reads the weight
        decays).
        """
        from ._format import jsonable
        from .jacobian_set import JacobianSet

        J = np.asarray(to_numpy(self.jacobians))
        N = int(self.labels.shape[0])
        info = {
            "source": "ramodel.simulate",
            "loss": self.config.get("loss"),
            "weight_decay": list(self.weight_decay),
            "branch_factors": self.config.get("branch_factors"),
            "converged": self.converged,
            "grad_norm": self.grad_norm,
            "config": jsonable(self.config),
            **dict(meta or {}),
        }
        return JacobianSet(
            labels=np.asarray(to_numpy(self.labels)),
            classes=self.classes,
            meta=info,
            jacobians=np.ascontiguousarray(np.broadcast_to(J[:, None], (J.shape[0], N, *J.shape[1:]))),
            representations=np.asarray(to_numpy(self.representations)),
            skips=np.asarray(to_numpy(self.skips)),
            classifier=np.asarray(to_numpy(self.classifier)),
        )

    def save(self, path, *, meta: dict | None = None):
        """Write :meth:`to_jacobian_set` to ``path`` (FORMAT.md ``.npz``, written atomically) and
        return the path; ``ramodel analyze`` / ``ramodel theory`` and :func:`ramodel.depth_scaling`
        read it back."""
        return self.to_jacobian_set(meta=meta).save(path)

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
            f"loss={html.escape(str(c.get('loss')))}, branch_factors={c.get('branch_factors')}, "
            f"skip={html.escape(str(c.get('skip')))}<br>"
            f"{'converged' if self.converged else '<b>not converged</b>'} after {self.steps} steps, "
            f"|&nabla;&Phi;| = {self.grad_norm:.2e}"
        )
        rows = []
        for chk in theorem_checks(self):
            if chk.holds is None:
                why = html.escape(str(chk.measured.get("reason", "")))
                verdict = ("undetermined" if chk.applies else "n/a") + (f" ({why})" if why else "")
            else:
                verdict = "holds" if chk.holds else "<b>fails</b>"
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
            f"N={self.inputs.shape[1]}, loss={c.get('loss')!r}, branch_factors={c.get('branch_factors')}, "
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
    solver: str = "auto",
) -> Simulation:
    """Solve the Unconstrained Jacobians Model to a critical point.

    Minimises Φ (MODEL.md §1) over the branch factors and the classifier until
    ``|grad Φ| <= tol``, with exact gradients and Hessian-vector products. Up to
    depth 32: L-BFGS, then Newton–MINRES steps, then (if those stall) trust-region
    Newton–CG. Deeper models with identity skips: depth continuation (solve at depth
    <= 32, split every block ``I + J = (I + J')²``, re-solve with trust-region
    Newton–CG, double again). Deeper models with other skips: trust-region Newton–CG
    from the start. With nonzero skips the trust-region CG is preconditioned by the
    weight decay plus the Gauss–Newton term (``ramodel.model.gauss_newton_preconditioner``;
    in a continuation only for ``k = 1``), which keeps its iterations per step from
    growing with depth. See ``solver``.

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
        small start converges to the useless ``J = 0``. With skips, a start drawn at a
        depth ``L > 32`` gets ``0.1 sqrt(32 / L)``: the end-to-end map of random blocks
        grows like ``exp(L init_scale² / 2)``, and the shrunken start keeps it bounded
        (measured at L = 1024 with orthogonal skips: converged in 258 trust-region steps,
        against no convergence in 10 minutes from 0.1). Depth continuation draws its
        start at the base depth (<= 32), so it uses 0.1.
    backend : {"numpy", "cupy"} or module, default "numpy"
    dtype : {"float64", "float32"}, default "float64"
    seed : int, SeedSequence, Generator or None, default 0
        Drives the data, the initial point and the skip matrices. None draws fresh OS
        entropy and a Generator gives one integer draw; either way the integer used is
        recorded in ``config["seed"]``.
    tol : float, optional
        Target gradient norm. Default 1e-10 (float64) or 1e-5 (float32).
    max_steps : int, default 100000
        L-BFGS iteration budget (Newton–MINRES adds at most 50 steps). Well-conditioned
        problems stop at ``tol`` after a few hundred steps; skips with spectral norm near 3
        (e.g. banded correlation, bandwidth 3) at depth 8 need about 40,000. It is also
        the budget of trust-region steps.
    solver : {"auto", "lbfgs-newton", "trust-region", "continuation"}, default "auto"
        ``"lbfgs-newton"``: L-BFGS to ``|grad| <= 1e-6``, Newton–MINRES, then
        trust-region Newton–CG if Newton stalls. ``"trust-region"``: trust-region
        Newton–CG (Steihaug, exact Hessian products) from the start. ``"continuation"``
        (identity skips only): solve at depth ``ceil(L / 2^m) <= 32``, then repeatedly
        split each block into two with the same product (:func:`ramodel.model.split_depth`)
        and re-solve by trust region, to depth ``L``. ``"auto"``: ``"lbfgs-newton"`` up
        to depth 32, else ``"continuation"`` with identity skips and ``"trust-region"``
        with any other skips. Continuation starts from its own initial point at the
        base depth, so it can reach a different critical point than a direct solve.

    Returns
    -------
    Simulation

    Raises
    ------
    DivergenceError
        If Φ or its gradient becomes NaN or Inf; the message names the step.
    ValueError
        If the estimated memory (:func:`estimate_memory`) exceeds this machine's
        physical memory; the message gives the estimate.

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
    resolve_dtype(dtype_name, xp)  # refuse a dtype the namespace lacks before any work
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
    solver = check_choice("solver", solver, SOLVERS)
    n_in = int(np.shape(inputs)[0]) if inputs is not None and np.ndim(inputs) == 2 else classes * samples_per_class
    _check_memory(depth=depth, width=width, classes=classes, n_inputs=n_in, branch_factors=branch_factors,
                  itemsize=np.dtype(dtype_name).itemsize)

    seed = _seed_entropy(seed)
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
    if init_scale is not None:
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
    identity = _all_identity(skips, xp)
    if solver == "auto":
        if depth <= CONTINUATION_BASE:
            solver_used = "lbfgs-newton"
        else:
            solver_used = "continuation" if identity else "trust-region"
    else:
        solver_used = solver
    if solver_used == "continuation" and not identity:
        raise ValueError("solver='continuation' needs identity skips (skip='identity'); use 'trust-region'")
    levels = _continuation_depths(depth) if solver_used == "continuation" else [depth]
    if init_scale is None:
        init_scale = _default_init_scale(levels[0], bool(xp.any(skips != 0)))
    scale = init_scale / math.sqrt(width)
    factors0 = init_rng.standard_normal((levels[0], branch_factors, width, width)) * scale
    W0 = init_rng.standard_normal((classes, width)) * scale
    theta0 = asarray(np.concatenate([factors0.ravel(), W0.ravel()]), xp=xp, dtype=dtype_name)

    if solver_used == "continuation":
        result = _solve_by_continuation(problem, theta0, levels, tol=tol, max_steps=max_steps, xp=xp)
    else:
        result = minimize(
            lambda th: model.value_and_grad(th, problem),
            lambda th, v: model.hvp(th, v, problem),
            theta0,
            tol=tol,
            max_steps=max_steps,
            method=solver_used,
            operator=lambda th: model.hvp_operator(th, problem),
            retract=model.valley_retraction(problem) if bool(xp.any(skips != 0)) else None,
            preconditioner=(lambda th: model.gauss_newton_preconditioner(th, problem))
            if _PRECONDITION and bool(xp.any(skips != 0)) else None,
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
        "seed": seed if isinstance(seed, int) else repr(seed),
        "tol": tol,
        "max_steps": max_steps,
        "solver": solver,
        "solver_used": solver_used,
    }
    sim = Simulation(
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
        phases=result.phases,
    )
    if sim.is_trivial:
        sim = replace(sim, message=sim.message + "; " + _trivial_note(branch_factors, identity, skips, xp, depth))
    return sim


def _trivial_note(k, identity, skips, xp, depth) -> str:
    """Why the solve ended at ``J = 0``, where the maths says so."""
    note = "the point reached is the trivial critical point J = 0 (Simulation.is_trivial)"
    if k >= 3:
        return note + (
            f": with k = {k} branch factors the data term is O(|B|^{k}) near B = 0, so J = 0 is a strict "
            "local minimum that attracts small starts, and the weight-decay cost of an end-to-end gain p "
            f"grows like L^(1-2/k) (log p)^(2/k) with depth, so deep models may have no non-trivial minimum"
        )
    if not bool(xp.any(skips != 0)) and depth >= 3:
        return note + (
            f": without skips the data term is O(|J|^{depth}) near J = 0, so J = 0 is a strict local minimum; "
            "from this start the products of the blocks shrink to it"
        )
    return note


def unpack_copy(theta, problem, xp):
    """Owned copies of ``factors`` and ``W`` (the result must not alias the optimiser's buffer)."""
    factors, W = model.unpack(theta, problem)
    return xp.asarray(factors, copy=True), xp.asarray(W, copy=True)


def _seed_entropy(seed):
    """The integer entropy a seed stands for, so that ``config["seed"]`` rebuilds the run.

    Integers pass through; None draws fresh OS entropy; a Generator gives one draw (it
    advances, as any use of it would); a SeedSequence without a spawn key gives its
    entropy. A spawned SeedSequence is used as is and recorded by its repr (it cannot be
    written as one integer).
    """
    if seed is None:
        return int(np.random.SeedSequence().entropy)
    if isinstance(seed, np.random.Generator):
        return int(seed.integers(2**63 - 1))
    if isinstance(seed, np.random.SeedSequence):
        if not seed.spawn_key and isinstance(seed.entropy, int) and seed.pool_size == 4:
            return int(seed.entropy)
        return seed
    as_generator(seed)  # type and range checks
    return int(seed)


def estimate_memory(*, depth: int, width: int, classes: int, n_inputs: int, branch_factors: int = 1,
                    itemsize: int = 8) -> int:
    """Approximate peak memory of :func:`simulate`, in bytes.

    Counts the parameter vector and the optimiser's vectors (L-BFGS keeps 2 x 10
    curvature pairs; the trust region a handful of Krylov vectors), the skips, Jacobians
    and partial products ``(L, d, d)``, and the forward, backward and tangent sweeps
    ``(L + 1, d, N)``. Within a factor of about two of the measured peak.

    Examples
    --------
    >>> estimate_memory(depth=8, width=16, classes=3, n_inputs=24) < 10 * 2**20
    True
    """
    L, d, C, N, k = depth, width, classes, n_inputs, branch_factors
    n = L * k * d * d + C * d
    vectors = 32 * n
    matrices = (6 + 3 * k) * L * d * d
    sweeps = 8 * (L + 1) * d * N
    return int(itemsize * (vectors + matrices + sweeps))


def _physical_memory() -> int | None:
    try:
        import os

        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def _check_memory(**sizes) -> None:
    need = estimate_memory(**sizes)
    have = _physical_memory()
    if have is not None and need > have:
        raise ValueError(
            f"simulate(depth={sizes['depth']}, width={sizes['width']}, classes={sizes['classes']}, "
            f"N={sizes['n_inputs']}, branch_factors={sizes['branch_factors']}) needs about "
            f"{need / 2**30:.3g} GiB, more than this machine's {have / 2**30:.3g} GiB of memory; "
            f"reduce width or depth (the memory grows like depth * branch_factors * width^2)"
        )


def _default_init_scale(init_depth: int, has_skips: bool) -> float:
    """The default ``init_scale`` for a start drawn at ``init_depth`` (see :func:`simulate`)."""
    if not has_skips:
        return 1.0
    return 0.1 * math.sqrt(min(1.0, CONTINUATION_BASE / init_depth))


def _all_identity(skips, xp) -> bool:
    d = skips.shape[-1]
    return bool(xp.all(skips == xp.eye(d, dtype=skips.dtype)))


def _continuation_depths(depth: int) -> list[int]:
    """``[L_0, ..., L]`` with ``L_{i+1} = L_i`` doubled or nearly, ``L_0 <= CONTINUATION_BASE``."""
    levels = [depth]
    while levels[-1] > CONTINUATION_BASE:
        levels.append(-(-levels[-1] // 2))
    return levels[::-1]


def _solve_by_continuation(problem, theta0, levels, *, tol, max_steps, xp):
    """Depth continuation: solve at ``levels[0]``, split every block, re-solve, up to ``levels[-1]``.

    Intermediate depths are solved to ``max(tol, 1e-6)`` (a trust-region step from the
    split point then needs few steps); the last to ``tol``. ``problem`` is the full-depth
    problem; its skips are identities, so its first ``L_i`` blocks are the problem at ``L_i``.
    """
    from .optimize import OptimizeResult

    k, d = problem.branch_factors, problem.width
    mid_tol = max(tol, 1e-6)
    history: list = []
    phases: list = []
    steps = 0
    theta = theta0
    result = None
    for i, Li in enumerate(levels):
        sub = model.make_problem(
            problem.X, problem.Y, problem.skips[:Li, ...], loss=problem.loss,
            weight_decay=(problem.lambda_J, problem.lambda_W), branch_factors=k,
        )
        if i > 0:
            m = levels[i - 1] * k * d * d
            factors = xp.reshape(result.x[:m], (levels[i - 1], k, d, d))
            theta = xp.concat([xp.reshape(model.split_depth(factors, Li), (-1,)), result.x[m:]])
        last = i == len(levels) - 1
        result = minimize(
            lambda th, sub=sub: model.value_and_grad(th, sub),
            lambda th, v, sub=sub: model.hvp(th, v, sub),
            theta,
            tol=tol if last else mid_tol,
            max_steps=max_steps,
            method="lbfgs-newton" if i == 0 else "trust-region",
            operator=lambda th, sub=sub: model.hvp_operator(th, sub),
            depth=Li,
            retract=model.valley_retraction(sub),
            # k >= 2: the preconditioned CG meets spurious negative curvature near the
            # gauge-singular optimum at L = 1024 (217 against 82 products), so only k = 1.
            preconditioner=(lambda th, sub=sub: model.gauss_newton_preconditioner(th, sub))
            if _PRECONDITION and k == 1 else None,
        )
        offset = len(history)
        history.extend(result.history)
        phases.extend(Phase(p.name, p.steps, p.products, p.start + offset, p.grad_norm, p.reason, p.depth)
                      for p in result.phases)
        steps += result.steps
        # An intermediate depth that stops short of mid_tol still gives a starting point
        # for the next one; its phase records why it stopped.
    return OptimizeResult(
        x=result.x, value=result.value, grad_norm=result.grad_norm, converged=result.converged,
        steps=steps, history=tuple(history), message=describe_phases(phases), phases=tuple(phases),
    )
