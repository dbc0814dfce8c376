"""The UJM fitted to a network's own features (METRICS.md, "Measuring the theorems").

:func:`fit_ujm` solves the Unconstrained Jacobians Model on the features ``h_0`` a
network feeds its first residual block, with the network's labels, depth, width and
skips. :func:`ramodel.theory.check` then compares the network's Jacobians with the
fitted ones (``check(jacobian_set, fitted=fit_ujm(jacobian_set))``): the alignment of
their top singular subspaces per layer and the ratios of their singular values.

Design constraints:

1. Everything the set determines (depth, width, classes, inputs, labels, skips) comes
   from the set; ``simulate``'s other options pass through unchanged.
2. Bad input fails before the solver runs, with an error that names the key.
3. The result is an ordinary :class:`~ramodel.simulation.Simulation`, so every tool that
   reads one (``summary``, ``report``, ``theory.check``) reads the fitted model.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

from ._source import as_source, get_field
from .backend import to_numpy
from .simulation import Simulation, simulate

__all__ = ["fit_ujm"]

# Options of simulate() that the set fixes.
_FIXED = ("depth", "classes", "width", "inputs", "labels", "samples_per_class")


_field = get_field  # the reader of ramodel._source (kept under its old name)


def fit_ujm(
    jacobian_set,
    *,
    branch_factors: int = 1,
    weight_decay=(1e-2, 1e-2),
    loss: str = "mse",
    tol: float = 1e-10,
    seed=0,
    **simulate_kwargs,
) -> Simulation:
    """Solve the UJM on a network's input features ``h_0`` and labels.

    Parameters
    ----------
    jacobian_set : JacobianSet, Simulation or Mapping
        Gives ``representations (L+1, N, d)`` (only ``representations[0]`` is used),
        ``labels (N,)``, ``classes`` and optionally ``skips (L, d, d)`` or ``(d, d)``.
    branch_factors : int, default 1
        ``k`` of the fitted model (1: the plain UJM, whose theorems T1-T6 are proven).
    weight_decay : float or (float, float), default (1e-2, 1e-2)
        ``(lambda_J, lambda_W)`` of the fitted model; MODEL.md's measured facts use 1e-2.
    loss : {"mse", "cross_entropy"}, default "mse"
    tol : float, default 1e-10
        Target gradient norm; the theorem checks need 1e-8 or below (MODEL.md §3).
    seed : int, SeedSequence or Generator, default 0
        Initial point of the solver.
    **simulate_kwargs
        Any other option of :func:`ramodel.simulate` (``dtype``, ``backend``,
        ``init_scale``, ``max_steps``, ``skip`` to override the set's skips...). Options
        the set fixes (``depth``, ``classes``, ``width``, ``inputs``, ``labels``,
        ``samples_per_class``) are refused.

    Returns
    -------
    Simulation
        Its ``config`` records ``fit_ujm = {"n_inputs", "skips"}`` besides the usual
        options. A run that stops above ``tol`` warns (``RuntimeWarning``).

    Raises
    ------
    ValueError
        If the set has no representations, they are not ``(L+1, N, d)`` or hold
        NaN/Inf, or labels and inputs differ in length (``simulate``'s check).
    TypeError
        If an option the set fixes is passed.

    Examples
    --------
    >>> import numpy as np
    >>> from ramodel.jacobian_set import JacobianSet
    >>> rng = np.random.default_rng(0)
    >>> js = JacobianSet(labels=np.arange(8) % 2, classes=2, jacobians=np.zeros((2, 8, 4, 4)),
    ...                  representations=rng.standard_normal((3, 8, 4)))
    >>> fit = fit_ujm(js)
    >>> fit.converged, fit.jacobians.shape
    (True, (2, 4, 4))
    """
    fixed = sorted(set(simulate_kwargs) & set(_FIXED))
    if fixed:
        raise TypeError(
            f"fit_ujm takes {fixed} from jacobian_set (depth, width, classes, h_0 and labels of the "
            "network); do not pass them"
        )
    src = as_source(jacobian_set, name="jacobian_set", expected="a JacobianSet, a Simulation or a mapping")
    R = src.representations
    if R is None:
        raise ValueError(
            "jacobian_set has no 'representations': fit_ujm needs the features h_0 = representations[0] "
            "(shape (L+1, N, d)); export the representations with the Jacobians (FORMAT.md)"
        )
    R = np.asarray(to_numpy(R))
    if R.ndim != 3 or min(R.shape) < 1 or R.shape[0] < 2:
        raise ValueError(f"'representations' must have shape (L+1, N, d) with L >= 1, got {R.shape}")
    if R.dtype.kind != "f":
        raise ValueError(f"'representations' must be float32 or float64, got dtype {R.dtype}")
    h0 = R[0]
    if not np.all(np.isfinite(h0)):
        bad = int(np.sum(~np.isfinite(h0)))
        raise ValueError(f"'representations'[0] (the features h_0) must be finite, but it holds {bad} NaN/Inf value(s)")
    depth, d = int(R.shape[0]) - 1, int(R.shape[2])
    set_depth = src.depth
    if set_depth is not None and int(set_depth) != depth:
        raise ValueError(f"'representations' has L+1 = {R.shape[0]} rows but the set has depth {set_depth}")
    labels = src.labels
    if labels is None:
        raise ValueError("jacobian_set has no 'labels' (N,): the UJM fits the network's classes")
    classes = src.classes
    if classes is None:
        raise ValueError("jacobian_set has no 'classes' (C)")
    if hasattr(classes, "shape"):
        classes = int(np.asarray(to_numpy(classes)))
    skips = src.skips
    skip = simulate_kwargs.pop("skip", None)
    source = "skip= argument" if skip is not None else ("the set's skips" if skips is not None else "identity")
    if skip is None:
        skip = "identity" if skips is None else np.asarray(to_numpy(skips), dtype=np.float64)
    sim = simulate(
        depth,
        classes,
        width=d,
        inputs=h0,
        labels=np.asarray(to_numpy(labels)),
        skip=skip,
        branch_factors=branch_factors,
        weight_decay=weight_decay,
        loss=loss,
        tol=tol,
        seed=seed,
        **simulate_kwargs,
    )
    if not sim.converged:
        warnings.warn(
            f"fit_ujm: the solver stopped at |grad Phi| = {sim.grad_norm:.2e} > tol = {sim.config['tol']:.0e} "
            f"({sim.message}); the theorem measures of the fit hold only to that accuracy",
            RuntimeWarning,
            stacklevel=2,
        )
    if sim.is_trivial:
        warnings.warn(
            "fit_ujm: the fitted model sits at the trivial critical point J = 0 (every residual "
            f"Jacobian vanishes). With branch_factors={branch_factors} and weight_decay="
            f"{tuple(weight_decay) if not isinstance(weight_decay, (int, float)) else weight_decay} "
            "the penalty outweighs the features' signal; try a smaller lambda_J or init_scale=1.0",
            RuntimeWarning,
            stacklevel=2,
        )
    config = {**sim.config, "fit_ujm": {"n_inputs": int(h0.shape[0]), "skips": source}}
    return dataclasses.replace(sim, config=config)
