"""Plain-text summary of a :class:`~ramodel.simulation.Simulation`.

It states convergence, the top singular values of every ``J_l``, their numerical rank,
and whether theorems T1–T3 of MODEL.md hold at the solution, each with the number
measured and the tolerance used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _source, theory
from .backend import to_numpy

__all__ = ["TheoremCheck", "theorem_checks", "simulation_summary", "THEOREM_TOL", "RANK_TAU"]

#: Tolerance on the relative residuals of T2 and T3 in the summary.
THEOREM_TOL = _source.THEOREM_TOL
#: Relative threshold of the numerical rank (METRICS.md default).
RANK_TAU = _source.RANK_TAU



@dataclass(frozen=True)
class TheoremCheck:
    """One theorem's verdict on a simulation.

    Attributes
    ----------
    name : str
        "T1", "T2" or "T3".
    statement : str
    applies : bool
        False when the theorem's assumptions do not hold (e.g. T3 needs identity skips).
    holds : bool or None
        None when it does not apply.
    measured : dict
        The numbers behind the verdict.
    tolerance : float
    """

    name: str
    statement: str
    applies: bool
    holds: bool | None
    measured: dict
    tolerance: float

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "statement": self.statement,
            "applies": self.applies,
            "holds": self.holds,
            "measured": dict(self.measured),
            "tolerance": self.tolerance,
        }


def theorem_checks(sim, *, tol: float = THEOREM_TOL) -> list[TheoremCheck]:
    """Check T1–T3 on a solved simulation.

    T1 uses the rigorous bound ``sigma_{C+1}(J_l) <= |grad Phi| / lambda_J`` (for k = 1;
    for k > 1 the outermost factor carries the same bound, checked here as the numerical
    rank at ``tol`` relative). T2 and T3 apply to k = 1; T3 also needs identity skips.
    At a trivial critical point (``sim.is_trivial``: J = 0) every theorem holds
    vacuously, so each verdict is None with the reason "trivial critical point".
    """
    if sim.is_trivial:
        why = "trivial critical point (J = 0): the theorem holds vacuously and says nothing"
        names = (("T1", f"rank J_l <= C = {sim.classes}"), ("T2", "chain identity"),
                 ("T3", "equal symmetric Jacobians"))
        return [TheoremCheck(n, st, True, None, {"reason": why}, tol) for n, st in names]
    J = to_numpy(sim.jacobians)
    M = to_numpy(sim.skips)
    W = to_numpy(sim.classifier)
    C, L, d = sim.classes, sim.depth, sim.width
    k = sim.config.get("branch_factors", 1)
    lambda_J, lambda_W = sim.weight_decay
    identity = bool(np.array_equal(M, np.broadcast_to(np.eye(d), M.shape)))
    checks = []

    s = np.linalg.svd(J, compute_uv=False)
    next_rel = float(np.max(s[:, C] / s[:, 0])) if d > C else 0.0
    if k == 1:
        sigma_next, bound = theory.rank_bound(J, sim.grad_norm, lambda_J, C)
        holds = bool(np.all(sigma_next <= bound + 1e3 * np.finfo(J.dtype).eps * s[:, 0]))
        measured = {"max_sigma_C+1": float(np.max(sigma_next)), "bound_grad_norm/lambda_J": bound}
    else:
        holds = next_rel <= tol
        measured = {"max_sigma_C+1/sigma_1": next_rel}
    checks.append(TheoremCheck("T1", f"rank J_l <= C = {C}", True, holds, measured, tol))

    if k == 1:
        chain = theory.chain_residuals(J, M) if L > 1 else np.zeros(0)
        cls = theory.classifier_residual(J[-1], W, (lambda_J, lambda_W), M[-1])
        worst = max([cls, *map(float, chain)])
        checks.append(
            TheoremCheck(
                "T2",
                "J_l A_l^T = A_{l+1}^T J_{l+1} and lambda_W W^T W = lambda_J J_L A_L^T",
                True,
                worst <= tol,
                {"max_chain_residual": float(np.max(chain)) if L > 1 else 0.0, "classifier_residual": cls},
                tol,
            )
        )
    else:
        checks.append(TheoremCheck("T2", "chain identity", False, None, {"reason": f"needs k = 1, got k = {k}"}, tol))

    if k == 1 and identity:
        measured = {
            "depth_spread": float(theory.depth_spread(J)),
            "max_asymmetry": float(np.max(theory.asymmetry(J))),
            "max_psd_defect": float(np.max(theory.psd_defect(J))),
            "closed_form_error": theory.closed_form_error(J[-1], W, (lambda_J, lambda_W)),
        }
        checks.append(
            TheoremCheck(
                "T3",
                "J_1 = ... = J_L = J* symmetric PSD (identity skips)",
                True,
                all(v <= tol for v in measured.values()),
                measured,
                tol,
            )
        )
    else:
        reason = f"needs k = 1, got k = {k}" if k != 1 else "needs identity skips"
        checks.append(TheoremCheck("T3", "equal symmetric Jacobians", False, None, {"reason": reason}, tol))
    return checks


def _fmt(x: float) -> str:
    return f"{x:.3e}" if (x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e4)) else f"{x:.4f}"


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
        f"loss={c['loss']}, k={c['branch_factors']}, skip={c['skip']}, "
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
