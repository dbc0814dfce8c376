"""The RA report: every metric of ``spec/METRICS.md`` with a verdict per property.

Design constraints, in order:

1. :func:`analyze` takes anything shaped like ``spec/FORMAT.md``: an object with
   attributes (``Simulation``, ``JacobianSet``) or a mapping with keys ``jacobians``
   (or ``U``, ``S``, ``V``), ``labels``, ``classes`` and optionally ``representations``,
   ``skips``, ``classifier``. Every field is validated and an error names the key.
2. Each property's verdict is True, False, or None when it cannot be computed (RA1
   without representations, RA2 across depth with one layer, RA3 from factors that do
   not hold the spectrum); the reason is kept in :attr:`RAReport.reasons`.
3. Thresholds are the defaults of METRICS.md, recorded in :class:`Thresholds`, and the
   caller may override any of them. The report stores the thresholds it used.
4. The report is a frozen value: ``to_dict()`` is plain JSON, ``save()`` writes it
   atomically (temporary file in the target folder, then ``os.replace``).

RA4 in a single report is the within-model check (the CV of ``sigma_1`` over layers).
The across-model verdict, ``-1.3 <= b <= -0.7`` for the slope ``b`` of
``log sigma_bar_1`` against ``log L``, needs a depth sweep: feed each model's
``metrics["sigma1_mean"].value`` to :func:`ramodel.metrics.fit_depth_slope` and use
``fit.within(thresholds.ra4_slope_low, thresholds.ra4_slope_high)``.
"""

from __future__ import annotations

import html
import json
import math
import os
import pathlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from . import metrics as _m
from ._validation import check_int, check_positive_float
from .backend import get_namespace, namespace_name, to_numpy
from ._io import atomic_write_text
from .metrics import DEFAULT_TAU, Metric

__all__ = ["Thresholds", "Check", "RAReport", "analyze", "PROPERTIES"]

PROPERTIES = ("RA1", "RA2", "RA3", "RA4")

# Display order of the metrics, by property ("NC" has no verdict).
_GROUPS = {
    "RA1": ("collinearity", "equispacing", "step_ratio", "progress_r2"),
    "RA2": ("A_left", "A_right", "A_left_adjacent", "A_right_adjacent", "a_lr", "cos_lr", "K", "K_adjacent",
            "across_inputs_left", "across_inputs_right"),
    "RA3": ("numerical_rank", "energy_top_C", "stable_rank"),
    "RA4": ("sigma1_cv", "sigma1_mean"),
    "NC": ("nc1", "nc2_equinorm", "nc2_etf", "nc3", "nc4"),
}


@dataclass(frozen=True)
class Thresholds:
    """Acceptance thresholds of the RA verdicts (defaults from ``spec/METRICS.md``).

    Attributes
    ----------
    ra1_collinearity : float, default 0.9
        RA1 holds when the median collinearity over inputs is ``>=`` this ...
    ra1_equispacing : float, default 0.7
        ... and the median equispacing is ``>=`` this.
    ra2_alignment : float, default 0.5
        RA2 holds when the mean cross-depth alignment (``A_left`` and ``A_right``, mean
        over ``i != j``) is ``>=`` this ...
    ra2_chance_multiple : float, default 5.0
        ... and ``>= ra2_chance_multiple * chance`` with ``chance = k/d`` ...
    ra2_chance_cap : float or None, default 0.5
        ... where the chance requirement is capped at
        ``chance + ra2_chance_cap * (1 - chance)``: 5 x chance exceeds 1 once
        ``k/d > 0.2`` (e.g. d = 6, C = 3), and an uncapped rule would reject even
        perfectly aligned Jacobians. The cap only bites when ``k/d > 1/9``. None applies
        the spec's rule literally.
    ra3_max_rank : int or None, default None
        RA3 holds when the median numerical rank is ``<=`` this (None: the number of
        classes C) ...
    ra3_energy : float, default 0.9
        ... and the median ``energy_top_C`` is ``>=`` this.
    ra4_sigma1_cv : float, default 0.25
        RA4 (within one model) holds when the CV of ``sigma_1`` over layers is ``<=``
        this. The spec gives no number; 0.25 lets layer gains differ by about +-25 %.
    ra4_slope_low, ra4_slope_high : float, default -1.3, -0.7
        RA4 across a depth sweep: the fitted slope must lie in ``[low, high]``. Recorded
        here for :meth:`ramodel.metrics.DepthSlopeFit.within`; not used by one report.

    Examples
    --------
    >>> Thresholds(ra1_collinearity=0.95).ra1_collinearity
    0.95
    >>> round(Thresholds().ra2_required(0.5), 12)   # capped: (1 + 0.5) / 2
    0.75
    """

    ra1_collinearity: float = 0.9
    ra1_equispacing: float = 0.7
    ra2_alignment: float = 0.5
    ra2_chance_multiple: float = 5.0
    ra2_chance_cap: float | None = 0.5
    ra3_max_rank: int | None = None
    ra3_energy: float = 0.9
    ra4_sigma1_cv: float = 0.25
    ra4_slope_low: float = -1.3
    ra4_slope_high: float = -0.7

    def __post_init__(self) -> None:
        for name in ("ra1_collinearity", "ra1_equispacing", "ra2_alignment", "ra3_energy"):
            v = check_positive_float(name, getattr(self, name), allow_zero=True)
            if v > 1:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        check_positive_float("ra2_chance_multiple", self.ra2_chance_multiple, allow_zero=True)
        if self.ra2_chance_cap is not None:
            v = check_positive_float("ra2_chance_cap", self.ra2_chance_cap, allow_zero=True)
            if v > 1:
                raise ValueError(f"ra2_chance_cap must be in [0, 1] or None, got {v}")
        if self.ra3_max_rank is not None:
            check_int("ra3_max_rank", self.ra3_max_rank, minimum=0)
        check_positive_float("ra4_sigma1_cv", self.ra4_sigma1_cv, allow_zero=True)
        for name in ("ra4_slope_low", "ra4_slope_high"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
        if self.ra4_slope_low > self.ra4_slope_high:
            raise ValueError(
                f"ra4_slope_low must be <= ra4_slope_high, got {self.ra4_slope_low} > {self.ra4_slope_high}"
            )

    def ra2_required(self, chance: float) -> float:
        """Mean cross-depth alignment RA2 requires, given ``chance = k/d``."""
        need = self.ra2_chance_multiple * chance
        if self.ra2_chance_cap is not None:
            need = min(need, chance + self.ra2_chance_cap * (1.0 - chance))
        return max(self.ra2_alignment, need)

    def max_rank(self, classes: int) -> int:
        """Largest median numerical rank RA3 accepts."""
        return classes if self.ra3_max_rank is None else self.ra3_max_rank

    def to_dict(self) -> dict:
        """Plain dict of the thresholds."""
        return asdict(self)


@dataclass(frozen=True)
class Check:
    """One threshold test of a verdict.

    Attributes
    ----------
    property : str
        ``"RA1"`` .. ``"RA4"``.
    metric : str
        Key of the metric in :attr:`RAReport.metrics`.
    op : {">=", "<="}
        Comparison of the metric's value with ``threshold``.
    threshold : float
        The number the value is compared with.
    rule : str
        The rule in words, e.g. ``"median >= 0.9"``.
    value : float or None
        The metric's value; None when it could not be computed.
    passed : bool or None
        None when ``value`` is None.
    """

    property: str
    metric: str
    op: str
    threshold: float
    rule: str
    value: float | None
    passed: bool | None

    def to_dict(self) -> dict:
        """Plain JSON-ready dict."""
        d = asdict(self)
        d["value"] = None if self.value is None else _m._json_float(self.value)
        return d


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v)
    v = float(v)
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.4g}"


def _verdict_word(v: bool | None) -> str:
    return "n/a" if v is None else ("holds" if v else "fails")


@dataclass(frozen=True, eq=False)
class RAReport:
    """Residual Alignment metrics of one model, with a verdict per property.

    Attributes
    ----------
    metrics : Mapping[str, Metric]
        Every computed metric by name (read-only): RA1 ``collinearity``,
        ``equispacing``, ``step_ratio``, ``progress_r2``; RA2 ``a_lr``, ``cos_lr``,
        ``A_left``, ``A_right`` (and ``_adjacent``), ``K``, ``K_adjacent``,
        ``across_inputs_left``/``_right``; RA3 ``numerical_rank``, ``stable_rank``,
        ``energy_top_C``; RA4 ``sigma1_cv``, ``sigma1_mean``; NC ``nc1``,
        ``nc2_equinorm``, ``nc2_etf``, ``nc3``, ``nc4``.
    unavailable : Mapping[str, str]
        Metrics that could not be computed, with the reason.
    checks : tuple of Check
        Every threshold test, in order.
    verdicts : Mapping[str, bool or None]
        ``"RA1"`` .. ``"RA4"``: True when every check of the property passes, None
        when one of its metrics is unavailable.
    reasons : Mapping[str, str]
        Why a verdict is None.
    thresholds : Thresholds
        The thresholds used.
    info : Mapping[str, Any]
        ``depth``, ``inputs``, ``width``, ``classes``, ``k``, ``tau``, ``layout``
        (``"dense"``/``"factors"``), ``input_dependent``, ``dtype``, ``namespace``.
    """

    metrics: Mapping[str, Metric]
    unavailable: Mapping[str, str]
    checks: tuple[Check, ...]
    verdicts: Mapping[str, bool | None]
    reasons: Mapping[str, str]
    thresholds: Thresholds
    info: Mapping[str, Any]

    # ------------------------------------------------------------------ export
    def to_dict(self) -> dict:
        """JSON-ready dict: plain floats, ints, strings, lists, None (NaN), ``"inf"``."""
        return {
            "info": dict(self.info),
            "thresholds": self.thresholds.to_dict(),
            "verdicts": dict(self.verdicts),
            "reasons": dict(self.reasons),
            "checks": [c.to_dict() for c in self.checks],
            "metrics": {name: m.to_dict() for name, m in self.metrics.items()},
            "unavailable": dict(self.unavailable),
        }

    def save(self, path: str | os.PathLike) -> pathlib.Path:
        """Write :meth:`to_dict` as JSON to ``path``, atomically.

        The text is written to a temporary file in the target folder, flushed and
        fsynced, then moved over ``path`` with ``os.replace``: an interrupted save never
        leaves a partial file under the final name, and a failed one leaves nothing.

        Parameters
        ----------
        path : str or path-like
            Target file; its folder must exist.

        Returns
        -------
        pathlib.Path
            ``path``.

        Raises
        ------
        FileNotFoundError
            If the folder does not exist.
        IsADirectoryError
            If ``path`` is a folder.
        """
        text = json.dumps(self.to_dict(), indent=2, allow_nan=False)  # before touching the disk
        return atomic_write_text(path, text, action="save the report to")

    # ------------------------------------------------------------------ display
    def _rows(self) -> list[tuple[str, str, str, str, str, str]]:
        checks = {c.metric: c for c in self.checks}
        rows = []
        for prop, names in _GROUPS.items():
            for name in names:
                c = checks.get(name)
                if name not in self.metrics and c is None:
                    continue
                m = self.metrics.get(name)
                measure = name if m is None or m.statistic == "value" else f"{name} ({m.statistic})"
                value = _fmt(m.value) if m is not None else "n/a"
                chance = _fmt(m.chance) if m is not None else "-"
                threshold = f"{c.op} {_fmt(c.threshold)}" if c is not None else "-"
                verdict = "-" if c is None else {True: "pass", False: "FAIL", None: "n/a"}[c.passed]
                rows.append((prop, measure, value, chance, threshold, verdict))
        return rows

    def _header(self) -> str:
        i = self.info
        dep = "per-input" if i["input_dependent"] else "input-independent"
        return (f"RA report: L={i['depth']}, N={i['inputs']}, d={i['width']}, C={i['classes']}, "
                f"k={i['k']}, {i['layout']} {dep} Jacobians, tau={i['tau']:g}")

    def __str__(self) -> str:
        head = ("property", "measure", "value", "chance", "threshold", "verdict")
        rows = [head] + self._rows()
        widths = [max(len(r[j]) for r in rows) for j in range(len(head))]
        lines = [self._header()]
        for r in rows:
            lines.append("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
        lines.append("verdicts: " + ", ".join(f"{p} {_verdict_word(v)}" for p, v in self.verdicts.items()))
        for p, why in self.reasons.items():
            lines.append(f"  {p} n/a: {why}")
        lines.append("  RA4 here is within-model (CV of sigma_1); the depth slope needs a sweep (fit_depth_slope).")
        return "\n".join(lines)

    def __repr__(self) -> str:
        verdicts = ", ".join(f"{p}={v}" for p, v in self.verdicts.items())
        return f"RAReport({verdicts}, metrics={len(self.metrics)})"

    def _repr_html_(self) -> str:
        esc = html.escape
        head = ("property", "measure", "value", "chance", "threshold", "verdict")
        out = [f"<div><p><b>{esc(self._header())}</b></p>", "<table>",
               "<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr></thead><tbody>"]
        for r in self._rows():
            out.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>")
        out.append("</tbody></table><table><thead><tr><th>property</th><th>verdict</th>"
                   "<th>reason</th></tr></thead><tbody>")
        for p, v in self.verdicts.items():
            out.append(f"<tr><td>{esc(p)}</td><td>{esc(_verdict_word(v))}</td>"
                       f"<td>{esc(self.reasons.get(p, ''))}</td></tr>")
        out.append("</tbody></table></div>")
        return "".join(out)


# ---------------------------------------------------------------------- analyze
def _field(source: Any, name: str) -> Any:
    if isinstance(source, Mapping):
        return source.get(name)
    return getattr(source, name, None)


def _classes(value: Any) -> int:
    if value is None:
        raise ValueError("source must give 'classes' (the number of classes C)")
    if hasattr(value, "shape") and not isinstance(value, (int, np.generic)):
        arr = np.asarray(to_numpy(value))
        if arr.ndim != 0 or arr.dtype.kind not in "iu":
            raise TypeError(
                f"'classes' must be an integer scalar, got an array of shape {arr.shape} and dtype {arr.dtype}"
            )
        value = int(arr)
    return check_int("classes", value, minimum=2)


def _labels(value: Any, classes: int) -> np.ndarray:
    if value is None:
        raise ValueError("source must give 'labels' (N,) with the class of each input")
    lab = np.asarray(to_numpy(value) if hasattr(value, "__array_namespace__") else value)
    if lab.dtype.kind not in "iu":
        raise TypeError(f"'labels' must be an integer array, got dtype {lab.dtype}")
    if lab.ndim != 1 or lab.size == 0:
        raise ValueError(f"'labels' must have shape (N,) with N >= 1, got {lab.shape}")
    lo, hi = int(lab.min()), int(lab.max())
    if lo < 0 or hi >= classes:
        raise ValueError(f"'labels' must lie in [0, classes) = [0, {classes}), got values in [{lo}, {hi}]")
    return lab.astype(np.int64)


def _expect(key: str, a: Any, shape: tuple[int, ...], doc: str) -> None:
    if tuple(int(s) for s in a.shape) != shape:
        raise ValueError(f"'{key}' must have shape {doc} = {shape}, got {tuple(a.shape)}")


def analyze(source: Any, *, k: int | None = None, thresholds: Thresholds | None = None,
            tau: float = DEFAULT_TAU) -> RAReport:
    """Measure RA1-RA4 and neural collapse on ``source`` and give a verdict per property.

    Parameters
    ----------
    source : object or Mapping
        Anything shaped like ``spec/FORMAT.md``, read by attribute or by key:

        - ``jacobians`` ``(L, N, d, d)`` or ``(L, d, d)`` (input-independent, e.g. a
          ``Simulation``), or the factors ``U (L, [N,] d, k)``, ``S (L, [N,] k)``,
          ``V (L, [N,] d, k)``;
        - ``labels`` ``(N,)`` integers in ``[0, C)``; ``classes`` C >= 2;
        - optional ``representations`` ``(L+1, N, d)`` (RA1 and NC need them),
          ``skips`` ``(L, d, d)`` or ``(d, d)`` (validated, not used by RA1-RA4),
          ``classifier`` ``(C, d)`` (NC3, NC4) and ``classifier_bias`` ``(C,)`` (NC4;
          not a FORMAT.md key).
    k : int, optional
        Dimension of the top singular subspaces of RA2. Default ``C``, capped at ``d``
        and at the stored k of factors.
    thresholds : Thresholds, optional
        Default ``Thresholds()`` (METRICS.md).
    tau : float, default 1e-3
        Relative threshold of the numerical rank.

    Returns
    -------
    RAReport

    Raises
    ------
    ValueError, TypeError
        Naming the key, for a missing field, a wrong rank, dtype or shape, sizes that
        disagree across keys, NaN/Inf, or labels outside ``[0, C)``.

    Notes
    -----
    Dense Jacobians go through one ``top_singular`` call with all ``d`` triplets (RA3
    needs the whole spectrum); RA2 uses the first k. RA4's verdict here is the
    within-model CV of ``sigma_1``; the depth-slope verdict comes from a sweep (module
    docstring).

    Examples
    --------
    >>> import numpy as np
    >>> J = np.stack([np.diag([0.5, 0.25, 0.0])] * 4)          # identical, symmetric, rank 2
    >>> x = np.array([[1.0, 2.0, 0.0], [-1.0, 1.0, 0.0], [0.5, -1.0, 0.0]])
    >>> h = np.stack([x + l * np.array([0.1, 0.0, 0.0]) for l in range(5)])   # lines
    >>> rep = analyze({"jacobians": J, "labels": np.array([0, 1, 1]), "classes": 2,
    ...                "representations": h})
    >>> dict(rep.verdicts)
    {'RA1': True, 'RA2': True, 'RA3': True, 'RA4': True}
    >>> rep.metrics["numerical_rank"].value
    2.0
    """
    if source is None:
        raise TypeError("source must be an object or a mapping with FORMAT.md fields, got None")
    thresholds = Thresholds() if thresholds is None else thresholds
    if not isinstance(thresholds, Thresholds):
        raise TypeError(f"thresholds must be a ramodel.report.Thresholds, got {type(thresholds).__name__}")
    tau = _m._check_tau(tau)
    C = _classes(_field(source, "classes"))
    labels = _labels(_field(source, "labels"), C)
    N = int(labels.size)

    J = _field(source, "jacobians")
    factors = {key: _field(source, key) for key in ("U", "S", "V")}
    given = [key for key, v in factors.items() if v is not None]
    if J is not None and given:
        raise ValueError(f"give exactly one of 'jacobians' (dense) or 'U', 'S', 'V' (factors), got both ({given})")
    if J is not None:
        st = _m._stack(J, k=None, full=True, name="jacobians")
        layout_key = "jacobians"
    elif given:
        missing = [key for key in ("U", "S", "V") if factors[key] is None]
        if missing:
            raise ValueError(f"the factor form needs 'U', 'S' and 'V'; missing {missing}")
        st = _m._stack((factors["U"], factors["S"], factors["V"]), k=None, full=True)
        layout_key = "U"
    else:
        raise ValueError("source has no Jacobians: give 'jacobians' (dense) or 'U', 'S', 'V' (top-k factors)")
    L, d = st.L, st.d
    if not st.shared and int(st.U.shape[1]) != N:
        raise ValueError(f"'{layout_key}' has N = {int(st.U.shape[1])} inputs (axis 1) but 'labels' has N = {N}")

    R = _field(source, "representations")
    if R is not None:
        R = _m._float_array("representations", R, (3,), "(L+1, N, d)")
        _expect("representations", R, (L + 1, N, d), "(L+1, N, d)")
    skips = _field(source, "skips")
    if skips is not None:
        skips = _m._float_array("skips", skips, (2, 3), "(L, d, d) or (d, d)")
        if skips.ndim == 3:
            _expect("skips", skips, (L, d, d), "(L, d, d)")
        else:
            _expect("skips", skips, (d, d), "(d, d)")
    W = _field(source, "classifier")
    if W is not None:
        W = _m._float_array("classifier", W, (2,), "(C, d)")
        _expect("classifier", W, (C, d), "(C, d)")
    bias = _field(source, "classifier_bias")
    if bias is not None:
        bias = _m._float_array("classifier_bias", bias, (1,), "(C,)")
        _expect("classifier_bias", bias, (C,), "(C,)")
    xp = get_namespace(st.U, R, skips, W, bias)

    if k is None:
        k = min(C, d, st.kf)
    else:
        k = check_int("k", k, minimum=1, maximum=min(d, st.kf))

    metrics: dict[str, Metric] = {}
    unavailable: dict[str, str] = {}
    if R is None:
        for name in _GROUPS["RA1"] + _GROUPS["NC"]:
            unavailable[name] = "no representations given"
    else:
        raw = _m._trajectory_raw(R)
        for name, values in raw.items():
            _m._attempt(metrics, unavailable, name, lambda n=name, v=values: _m._ra1_metric(n, v))
    for out, missing in (_m._alignment_group(st, k), _m._rank_group(st, C, tau)):
        metrics.update(out)
        unavailable.update(missing)
    _m._attempt(metrics, unavailable, "sigma1_cv", lambda: _m._sigma1_cv_metric(st))
    _m._attempt(metrics, unavailable, "sigma1_mean", lambda: _m._sigma1_mean_metric(st))
    if R is not None:
        out, missing = _m._collapse_group(R[-1, ...], labels, C, W, bias)
        metrics.update(out)
        unavailable.update(missing)

    chance = k / d
    need = thresholds.ra2_required(chance)
    ra2_rule = f"mean >= max({thresholds.ra2_alignment:g}, {thresholds.ra2_chance_multiple:g} x chance"
    cap = thresholds.ra2_chance_cap
    ra2_rule += ")" if cap is None else f" capped at chance + {cap:g}(1 - chance))"
    max_rank = thresholds.max_rank(C)
    specs = (
        ("RA1", "collinearity", ">=", thresholds.ra1_collinearity, f"median >= {thresholds.ra1_collinearity:g}"),
        ("RA1", "equispacing", ">=", thresholds.ra1_equispacing, f"median >= {thresholds.ra1_equispacing:g}"),
        ("RA2", "A_left", ">=", need, ra2_rule),
        ("RA2", "A_right", ">=", need, ra2_rule),
        ("RA3", "numerical_rank", "<=", float(max_rank), f"median <= {max_rank}"),
        ("RA3", "energy_top_C", ">=", thresholds.ra3_energy, f"median >= {thresholds.ra3_energy:g}"),
        ("RA4", "sigma1_cv", "<=", thresholds.ra4_sigma1_cv, f"<= {thresholds.ra4_sigma1_cv:g}"),
    )
    checks = []
    for prop, name, op, thr, rule in specs:
        m = metrics.get(name)
        if m is None:
            checks.append(Check(prop, name, op, float(thr), rule, None, None))
            continue
        passed = m.value >= thr if op == ">=" else m.value <= thr
        checks.append(Check(prop, name, op, float(thr), rule, float(m.value), bool(passed)))
    verdicts: dict[str, bool | None] = {}
    reasons: dict[str, str] = {}
    for prop in PROPERTIES:
        mine = [c for c in checks if c.property == prop]
        if any(c.passed is None for c in mine):
            verdicts[prop] = None
            reasons[prop] = "; ".join(f"{c.metric}: {unavailable.get(c.metric, 'not computed')}"
                                      for c in mine if c.passed is None)
        else:
            verdicts[prop] = all(c.passed for c in mine)

    info = {
        "depth": L,
        "inputs": N,
        "width": d,
        "classes": C,
        "k": k,
        "tau": tau,
        "layout": st.layout,
        "input_dependent": not st.shared,
        "dtype": str(st.U.dtype).split(".")[-1],
        "namespace": namespace_name(xp),
    }
    return RAReport(
        metrics=MappingProxyType(metrics),
        unavailable=MappingProxyType(unavailable),
        checks=tuple(checks),
        verdicts=MappingProxyType(verdicts),
        reasons=MappingProxyType(reasons),
        thresholds=thresholds,
        info=MappingProxyType(info),
    )
