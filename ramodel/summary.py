"""Plain-text summary of a :class:`~ramodel.simulation.Simulation`.

It states convergence, the top singular values of every ``J_l``, their numerical rank,
and whether theorems T1–T3 of MODEL.md hold at the solution, each with the number
measured and the tolerance used.
"""

from __future__ import annotations

import numpy as np

from . import _source
from ._format import number
from .backend import to_numpy
from .theory import (  # folded into ramodel.theory (issue 18)
    TheoremCheck,
    theorem_checks,
)

__all__ = ["TheoremCheck", "theorem_checks", "simulation_summary", "THEOREM_TOL", "RANK_TAU"]

#: Tolerance on the relative residuals of T2 and T3 in the summary.
THEOREM_TOL = _source.THEOREM_TOL
#: Relative threshold of the numerical rank (METRICS.md default).
RANK_TAU = _source.RANK_TAU


def _fmt(x: float) -> str:
    return number(x, digits=4, sci_digits=3, high=1e4, fixed=True)


def simulation_summary(sim, *, top: int | None = None) -> str:
    """Readable summary of a simulation (see module docstring)."""
    c = sim.config
    C, L = sim.classes, sim.depth
    J = to_numpy(sim.jacobians)
    s = np.linalg.svd(J, compute_uv=False)
    top = min(J.shape[-1], C + 1) if top is None else min(top, J.shape[-1])
    ranks = np.sum(s >= RANK_TAU * s[:, :1], axis=1)
    lines = [
        f"UJM simulation: depth L={L}, classes C={C}, width d={sim.width}, N={sim.inputs.shape[1]} inputs, "
        f"loss={c['loss']}, branch_factors={c['branch_factors']}, skip={c['skip']}, "
        f"weight decay (lambda_J, lambda_W)={tuple(c['weight_decay'])}, {c['backend']}/{c['dtype']}, seed={c['seed']}",
        f"solver: {'converged' if sim.converged else 'NOT converged'} after {sim.steps} steps, "
        f"|grad Phi| = {sim.grad_norm:.2e} (tol {c['tol']:.0e}), Phi = {sim.loss_history[-1]:.10g} ({sim.message})",
        "",
        f"top singular values of J_l (the first {top}; C = {C}):",
        "  layer " + "".join(f"{'s' + str(i + 1):>12}" for i in range(top)) + f"{'rank':>8}",
    ]
    for l in range(L):
        lines.append(f"  {l + 1:>5} " + "".join(f"{_fmt(v):>12}" for v in s[l, :top]) + f"{ranks[l]:>8}")
    lines.append(
        f"numerical rank (sigma_i >= {RANK_TAU:g} sigma_1): {sorted(set(ranks.tolist()))} across layers; "
        f"C = {C}; L * mean sigma_1 = {L * float(np.mean(s[:, 0])):.4f}"
    )
    if sim.is_trivial:
        lines += ["", "WARNING: trivial critical point J = 0 (every J_l vanishes): the theorems hold vacuously "
                      "and the RA verdicts are undetermined."]
    lines += ["", "theorems (MODEL.md §3):"]
    for chk in theorem_checks(sim):
        if chk.holds is None and chk.applies:
            verdict = f"undetermined ({chk.measured['reason']})"
        elif not chk.applies:
            verdict = f"n/a ({chk.measured['reason']})"
        else:
            nums = ", ".join(f"{k} = {v:.2e}" for k, v in chk.measured.items())
            verdict = ("holds" if chk.holds else "FAILS") + f"  [{nums}; tol {chk.tolerance:g}]"
        lines.append(f"  {chk.name} {chk.statement}: {verdict}")
    return "\n".join(lines)
