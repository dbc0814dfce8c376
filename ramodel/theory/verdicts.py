"""The theorem check: every measure next to its chance level, and a verdict per theorem."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from .._source import ACTIVE_FLOOR as _ACTIVE_FLOOR
from .._source import THEOREM_TOL as _THEOREM_TOL
from .._source import is_simulation
from .._validation import as_generator, check_int, check_positive_float
from ..backend import asarray, namespace_name, to_numpy
from .chance import _SHARED_ROTATION_MAX_WIDTH, MAX_CHANCE_DRAWS, _haar
from .closed_forms import (
    asymmetry,
    chain_residuals,
    classifier_residual,
    closed_form_error,
    depth_spread,
    psd_defect,
    rank_bound,
)
from .measures import (
    DEFAULT_TAU,
    _dtype,
    _evaluate,
    _fit_measures,
    _nanmedian,
    _plan,
    _Source,
    _source,
    _summarise,
)
from .report import TheoryReport, _fmt


def check(
    obj,
    *,
    skips=None,
    fitted=None,
    chance_draws: int = 8,
    seed=0,
    classes: int | None = None,
    weight_decay=None,
    tau: float = DEFAULT_TAU,
    allow_truncated: bool = False,
    tol: float | None = None,
) -> TheoryReport:
    """Measure every theorem of MODEL.md §3 on a model, next to its chance level.

    The measures are those of METRICS.md, "Measuring the theorems"; each takes a known
    value exactly where its theorem's conclusion holds, so the same report reads a
    converged simulation (at the value), a trained network (how UJM-like it is) and a
    random baseline (chance).

    Parameters
    ----------
    obj : Simulation, JacobianSet or Mapping
        Anything with the FORMAT.md fields, read by attribute or key: ``jacobians``
        ``(L, N, d, d)`` or ``(L, d, d)`` (input-independent, as in a ``Simulation``), or
        the factors ``U (L, [N,] d, k)``, ``S (L, [N,] k)``, ``V (L, [N,] d, k)``; optional
        ``representations (L+1, N, d)``, ``skips (L, d, d)`` or ``(d, d)``, ``classifier
        (C, d)``, ``labels (N,)``, ``classes``. A ``Simulation`` also gives its weight
        decays, loss and number of branch factors.
    skips : array, shape (L, d, d) or (d, d), optional
        The skips ``M_l`` when ``obj`` does not carry them (identity otherwise). Must
        agree with the source's own skips when both are given.
    fitted : Simulation, optional
        The UJM fitted to the network's own features (:func:`ramodel.fit.fit_ujm`), of the
        same depth and width. Adds ``fit`` (subspace alignments and singular-value ratios
        per layer) and ``fitted`` (its own measures, shown side by side).
    chance_draws : int, default 8
        Draws of the rotation baseline (METRICS.md: 8); 0 skips it. At most
        :data:`MAX_CHANCE_DRAWS` = 10,000: each draw re-evaluates every measure, and the
        baseline's mean is then known to far better than any reported digit.
    seed : int, SeedSequence or Generator, default 0
        Seed of the baseline's Haar draws.
    classes : int, optional
        ``C`` when the source does not give it.
    weight_decay : (float, float), optional
        ``(lambda_J, lambda_W)`` for ``closed_form_error`` and ``classifier_residual``
        of a source that is not a simulation (they also need its ``classifier``).
    tau : float, default 1e-3
        Relative threshold of the numerical rank; also the completeness rule of factors.
    allow_truncated : bool, default False
        With factors that do not hold the numerical rank, measure their rank-k truncation
        ``U S V^T`` (with a note) instead of reporting the measures unavailable.
    tol : float, optional
        Largest deviation from a prediction that still counts as "holds" in
        :attr:`TheoryReport.verdicts`. Default 1e-6 for float64 (the summary's
        ``THEOREM_TOL``: a solve to ``|grad Phi| <= 1e-10`` leaves residuals near 1e-9)
        and 1e-3 for float32 / float16 input (float32 solves stop near 1e-5).

    Returns
    -------
    TheoryReport

    Raises
    ------
    ValueError, TypeError
        Naming the key, for a missing or malformed field (wrong rank, shape or dtype,
        NaN/Inf, skips of the wrong shape), sizes that disagree across keys, or a
        ``fitted`` model of another depth or width.

    Notes
    -----
    **Samples and summaries.** Every measure is computed per input, along that input's
    own Jacobians, and per layer (or pair of layers, or the whole depth): ``samples`` is
    ``(rows, N)`` (``N = 1`` for input-independent Jacobians, except ``linearity``, which
    has one sample per input). ``value`` is the median over all samples, ``spread`` their
    distribution, ``per_layer`` the median over inputs, ``worst`` the sample farthest from
    the prediction. Undefined samples (a zero Jacobian, a zero vector: 0/0) are NaN and
    excluded, and counted in ``excluded``.

    **Chance.** Each draw replaces every ``J_l`` by ``Q1_l J_l Q2_l^T`` with independent
    Haar-orthogonal ``Q1_l, Q2_l``: singular values kept, singular vectors made random.
    The rotations are drawn per layer and shared by all inputs (METRICS.md), so the
    input-independent and the broadcast per-input layouts get the same baseline. Skips,
    classifier and representations are left as they are: the baseline asks what the
    measure gives when the Jacobians' singular vectors carry no relation to them or to
    each other. ``chance`` is the mean over draws of the baseline's ``value``. Consequences:

    - ``numerical_rank``, ``energy_top_C`` and the fitted ``sigma_ratio_i`` are invariant
      (the baseline tests vectors, not spectra): their chance equals their value.
    - ``linearity`` keeps the network's own ``h``: with ``J_l`` rotated, the cosine of
      ``h_l - M_l h_{l-1}`` with ``J_l' h_{l-1}`` is about ``0 +- 1/sqrt(d)``, which is the
      chance level; the representations are not regenerated (that would make it 1).
    - The fitted subspace alignments use the analytic chance ``k/d`` (the exact mean of
      ``|U^T U*|_F^2 / k`` for a Haar-random ``U``).
    - Factors wider than 512 are rotated by independent Haar frames per layer and
      input (a Haar ``Q`` maps a frame to a Haar frame): every measure is a function of
      one input's Jacobians, so each input's sample has the law of the shared-rotation
      baseline; only the correlation between inputs differs.

    **Factors.** From ``U, S, V`` every measure is computed without forming ``d x d``
    matrices (QR of ``(d, r)`` blocks, ``r <= (L + 1) k``; eigenproblems of size ``2k``
    and ``<= 2Lk``). They are exact when the factors hold the numerical rank: ``k = d``,
    or ``S[..., -1] <= tau * S[..., 0]`` (the omitted singular values are then below
    ``tau sigma_1``). Otherwise the J-measures are unavailable (or, with
    ``allow_truncated``, measure the truncation). ``gain_share_error`` from factors needs
    identity skips. The fitted comparison needs only the top-k vectors, always exact.

    **Verdicts.** Each theorem's verdict is None (undetermined), with its reason, at a
    trivial critical point (``Simulation.is_trivial``), for an unconverged simulation
    (not a critical point; T5 excepted), when the branches are inactive (median
    ``sigma_1(J_l) / max(1, |M_l|_2)`` below 1e-6, as in :func:`ramodel.analyze`), when
    none of its measures could be computed, when the theorem predicts nothing for the
    model (``predicted = None``), for T1 when ``C >= d`` (every matrix has rank <= d), and
    when a measure's chance level already meets the prediction within ``tol`` (the measure
    cannot tell). Otherwise it is True when every measure's ``deviation <= tol``.

    **Overflow.** Scale-free measures (rank, energy, asymmetry, depth spread, PSD defect,
    linearity, skip asymmetry) are computed on the Jacobians divided by a power of two,
    so entries of 1e300 are fine. Measures that mix the Jacobians with the skips
    (chain and classifier residuals, closed form, gain share) are not scale-free; when
    they overflow they are reported unavailable with the reason, never raised.

    **Predictions.** ``predicted`` is the value at a critical point of the UJM with
    ``k = 1`` (MODEL.md §3 and proofs/README.md): T1 rank ``<= C`` (``C - 1`` for
    cross-entropy) for any skips and any ``k``; T2 and T6 for any skips; T3 and T4 for
    identity skips only (None otherwise). For a source that is not a simulation the
    number of branch factors is unknown and ``k = 1`` is assumed; the loss is read from
    ``meta["loss"]`` when present.

    Examples
    --------
    >>> import ramodel
    >>> sim = ramodel.simulate(depth=3, classes=2, width=4, samples_per_class=3, seed=0)
    >>> rep = check(sim, chance_draws=2)
    >>> rep.measures["asymmetry"].deviation < 1e-8, rep.measures["linearity"].value
    (True, 1.0)
    >>> rep.measures["asymmetry"].chance > 0.1
    True
    """
    chance_draws = check_int("chance_draws", chance_draws, minimum=0, maximum=MAX_CHANCE_DRAWS)
    tau = check_positive_float("tau", tau)
    if not tau < 1:
        raise ValueError(f"tau must be in (0, 1), got {tau}")
    if not isinstance(allow_truncated, bool):
        raise TypeError(f"allow_truncated must be a bool, got {allow_truncated!r}")
    rng = as_generator(seed)
    src = _source(obj, skips=skips, classes=classes, weight_decay=weight_decay)
    if fitted is not None and not is_simulation(fitted):
        raise TypeError(f"fitted must be a Simulation (from ramodel.fit.fit_ujm), got {type(fitted).__name__}")
    specs, unavailable = _plan(src, tau=tau, allow_truncated=allow_truncated)
    xp = src.xp
    failed: dict[str, str] = {}
    values = _evaluate(specs, src.jac, xp, failed)

    draws = {name: [] for name in specs}
    shared_rotation = src.jac.layout == "dense" or src.d <= _SHARED_ROTATION_MAX_WIDTH
    for _ in range(chance_draws):
        if shared_rotation:
            Q = asarray(_haar(rng, (2, src.L), src.d), xp=xp)
            Q = xp.astype(Q, _dtype(src))
            rotated = src.jac.rotate(Q[0, ...], Q[1, ...], rng)
        else:
            rotated = src.jac.rotate(None, None, rng)
        for name, v in _evaluate(specs, rotated, xp, failed).items():
            draws[name].append(float(_nanmedian(v)))

    measures = {}
    for name, spec in specs.items():
        if name in failed:
            unavailable[name] = failed[name]
            continue
        m = _summarise(name, spec, values[name], draws[name])
        if m is None:
            unavailable[name] = "undefined for every sample (zero Jacobians or zero vectors: 0/0)"
        else:
            measures[name] = m

    fit, fit_k, fitted_report = {}, None, None
    if fitted is not None:
        fit, fit_k = _fit_measures(src, fitted, tau)
        fitted_report = check(fitted, chance_draws=0, tau=tau)

    info = {
        "source": src.kind,
        "depth": src.L,
        "inputs": src.N,
        "width": src.d,
        "classes": src.classes,
        "layout": src.jac.layout,
        "k_stored": src.k,
        "input_dependent": not src.shared,
        "skips": src.skip_kind,
        "loss": src.loss or "unknown",
        "branch_factors": src.branch_factors if src.branch_factors is not None else "unknown (1 assumed)",
        "weight_decay": None if src.weight_decay is None else list(src.weight_decay),
        "grad_norm": src.grad_norm,
        "tau": tau,
        "chance_draws": chance_draws,
        "seed": seed if isinstance(seed, (int, np.integer)) else repr(seed),
        "rotation": "per layer, shared by all inputs" if shared_rotation else "per layer and input (Haar frames)",
        "fit_k": fit_k,
        "dtype": src.upcast_from or str(_dtype(src)).split(".")[-1],
        "computed_in": str(_dtype(src)).split(".")[-1],
        "namespace": namespace_name(xp),
    }
    computed = info["computed_in"]
    if tol is None:
        tol = THEOREM_TOL if computed == "float64" and src.upcast_from is None else 1e-3
    else:
        tol = check_positive_float("tol", tol)
    info["tol"] = tol
    verdicts, reasons = _theorem_verdicts(src, measures, unavailable, tol)
    order = [n for n in ("numerical_rank", "energy_top_C", "chain_residual", "classifier_residual", "asymmetry",
                         "depth_spread", "psd_defect", "closed_form_error", "gain_share_error", "linearity",
                         "skip_asymmetry") if n in unavailable] + [n for n in unavailable if n not in _THEOREM_OF]
    return TheoryReport(
        measures=MappingProxyType(measures),
        unavailable=MappingProxyType({n: unavailable[n] for n in order}),
        fit=MappingProxyType(fit),
        fitted=fitted_report,
        info=MappingProxyType(info),
        verdicts=MappingProxyType(verdicts),
        reasons=MappingProxyType(reasons),
    )
#: Default tolerance of the theorem verdicts for float64 input.
THEOREM_TOL = _THEOREM_TOL
#: Branches below this relative gain are inactive (as ``Thresholds.active_floor``).
ACTIVE_FLOOR = _ACTIVE_FLOOR
THEOREMS = ("T1", "T2", "T3", "T4", "T5", "T6")
_THEOREM_OF = {
    "numerical_rank": "T1", "energy_top_C": "T1", "chain_residual": "T2", "classifier_residual": "T2",
    "asymmetry": "T3", "depth_spread": "T3", "psd_defect": "T3", "closed_form_error": "T3",
    "gain_share_error": "T4", "linearity": "T5", "skip_asymmetry": "T6",
}


def _inactive(src: _Source) -> str | None:
    """Why the branches are numerically inactive, or None (the rule of ``ramodel.analyze``)."""
    xp = src.xp
    if src.jac.layout == "dense":
        s1 = np.asarray(to_numpy(src.jac.spectrum()[..., 0]), dtype=np.float64) * src.jac.scale
    else:
        s1 = np.asarray(to_numpy(src.jac.S[..., 0]), dtype=np.float64)
    ref = np.ones(src.L)
    if src.M is not None:
        M = np.asarray(to_numpy(src.M), dtype=np.float64)
        ref = np.maximum(1.0, np.linalg.norm(M, ord=2, axis=(-2, -1)))
    del xp
    gain = s1 / ref[:, None]
    if float(np.median(gain)) < ACTIVE_FLOOR:
        return (f"branches inactive: median sigma_1 = {float(np.median(s1)):.3g} < floor {ACTIVE_FLOOR:g} "
                "x max(1, |M_l|)")
    return None


def _theorem_verdicts(src: _Source, measures, unavailable, tol: float) -> tuple[dict, dict]:
    verdicts: dict[str, bool | None] = {}
    reasons: dict[str, str] = {}
    inactive = None if src.trivial else _inactive(src)
    for t in THEOREMS:
        mine = [m for m in measures.values() if m.theorem == t]
        missing = {n: why for n, why in unavailable.items() if _THEOREM_OF.get(n) == t}
        why = None
        if src.trivial:
            why = "trivial critical point (J = 0): every theorem holds there vacuously"
        elif src.converged is False and t != "T5":
            why = f"not a critical point: the solver stopped at |grad Phi| = {src.grad_norm:.2g} above its tol"
        elif inactive is not None:
            why = inactive
        elif not mine:
            why = "; ".join(f"{n}: {w}" for n, w in missing.items()) or "not measured"
        elif any(m.predicted is None for m in mine):
            m = next(m for m in mine if m.predicted is None)
            why = f"the theorem predicts nothing for this model (it needs: {m.condition})"
        elif t == "T1" and (src.classes - 1 if src.loss == "cross_entropy" else src.classes) >= src.d:
            why = f"C = {src.classes} >= d = {src.d}: rank <= C holds for any matrix"
        else:
            blind = [m for m in mine if t != "T1" and m.chance is not None
                     and abs(m.chance - m.predicted) <= tol]
            if blind:
                why = (f"{blind[0].name}'s chance level {_fmt(blind[0].chance)} already meets the prediction "
                       f"{_fmt(blind[0].predicted)}: the measure cannot tell")
        if why is not None:
            verdicts[t], reasons[t] = None, why
            continue
        devs = {m.name: m.deviation for m in mine}
        bad = {n: v for n, v in devs.items() if not v <= tol}
        verdicts[t] = not bad
        if bad:
            reasons[t] = "; ".join(f"{n} deviates by {_fmt(v)} > tol" for n, v in bad.items())
        else:
            reasons[t] = "every measure within tol: " + ", ".join(f"{n} {_fmt(v)}" for n, v in devs.items())
        if missing:
            reasons[t] += " (not measured: " + ", ".join(missing) + ")"
    return verdicts, reasons


# ------------------------------------------------- the summary's checks of T1-T3
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
        sigma_next, bound = rank_bound(J, sim.grad_norm, lambda_J, C)
        holds = bool(np.all(sigma_next <= bound + 1e3 * np.finfo(J.dtype).eps * s[:, 0]))
        measured = {"max_sigma_C+1": float(np.max(sigma_next)), "bound_grad_norm/lambda_J": bound}
    else:
        holds = next_rel <= tol
        measured = {"max_sigma_C+1/sigma_1": next_rel}
    checks.append(TheoremCheck("T1", f"rank J_l <= C = {C}", True, holds, measured, tol))

    if k == 1:
        chain = chain_residuals(J, M) if L > 1 else np.zeros(0)
        cls = classifier_residual(J[-1], W, (lambda_J, lambda_W), M[-1])
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
            "depth_spread": float(depth_spread(J)),
            "max_asymmetry": float(np.max(asymmetry(J))),
            "max_psd_defect": float(np.max(psd_defect(J))),
            "closed_form_error": closed_form_error(J[-1], W, (lambda_J, lambda_W)),
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
