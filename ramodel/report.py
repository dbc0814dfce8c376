"""The RA report: every metric of ``spec/METRICS.md`` with a verdict per property.

Design constraints, in order:

1. :func:`analyze` takes anything shaped like ``spec/FORMAT.md``: an object with
   attributes (``Simulation``, ``JacobianSet``), a mapping with keys ``jacobians``
   (or ``U``, ``S``, ``V``), ``labels``, ``classes`` and optionally ``representations``,
   ``skips``, ``classifier``, or a bare array of Jacobians ``(L, d, d)`` /
   ``(L, N, d, d)`` with ``classes=``. Every field is validated and an error names the key.
2. Every verdict is three-valued, True, False or None (undetermined), and always
   carries a one-line reason in :attr:`RAReport.reasons`. A verdict is None, never
   True, when the test cannot tell the data from chance ("Verdicts: three-valued, never
   vacuous" in METRICS.md); the rules, each with the reason for its number, are listed
   under "When a verdict is undetermined" below.
3. Thresholds are the defaults of METRICS.md, recorded in :class:`Thresholds`, and the
   caller may override any of them. The report stores the thresholds it used.
4. The report is a frozen value: ``to_dict()`` is plain JSON, ``save()`` writes it
   atomically (temporary file in the target folder, then ``os.replace``).

When a verdict is undetermined
------------------------------
- **Trivial critical point** (a ``Simulation`` with ``is_trivial``): RA1-RA3 are None.
- **Branches inactive**: the median over matrices of ``sigma_1(J_l) / max(1, |M_l|_2)``
  is below ``Thresholds.active_floor`` = 1e-6, or the median relative step
  ``|h_l - M_l h_{l-1}| / |h_{l-1}|`` is below ``Thresholds.step_floor`` = 1e-6. Against
  a skip of norm about 1 such a branch changes the layer map by less than one part in a
  million (16 times float32's rounding, 6e-8): its singular vectors and its rank are set
  by rounding or by the weight decay, not by training. RA1-RA3 are None. Single inactive
  matrices of an otherwise active model are left out of RA2 and counted.
- **RA1 with L < 3** (``Thresholds.ra1_min_depth``): one step is always a line with
  equal steps, and two steps always lie in a plane.
- **RA2 near chance**: the required alignment must exceed chance ``k/d`` by at least
  ``Thresholds.ra2_margin`` = 0.1 and by ``Thresholds.ra2_chance_z`` = 3 standard
  deviations of the mean alignment of random subspaces over the ``L (L - 1) / 2`` layer
  pairs of one input (one pair of independent uniform k-subspaces of R^d has standard
  deviation ``sqrt(2) (d - k) / (d sqrt((d - 1)(d + 2)))``, and the pair terms are
  uncorrelated; inputs are not counted as independent, since one network's Jacobians
  at different inputs are correlated).
  Otherwise the test cannot tell alignment from chance; ``C >= d`` gives ``k/d = 1``.
- **RA2's k** is taken from the data: ``k = C`` (``C - 1`` for cross-entropy, where T1
  gives ``rank J_l <= C - 1``), never above the median numerical rank of the active
  matrices, and ``info["k_rule"]`` says which applied. Matrices whose k-th and
  (k+1)-th singular values tie at rounding level (``sigma_k - sigma_{k+1} <=
  Thresholds.tie_factor * sqrt(d) * eps * sigma_1``, 100 as for the orthonormality
  tolerance of FORMAT.md factors) have no defined top-k subspace: they are left out of
  RA2 and counted in ``info["ra2_excluded"]``.
- **RA3 with C >= d** (more precisely, the accepted rank >= d): every d x d matrix has
  rank <= d, so "rank <= C" holds for any matrix.
- **RA4 always**, in one report: RA4 is a law across models of different depth
  (:func:`ramodel.depth_scaling`). The within-model CV of ``sigma_1`` is shown as the
  "equal share" diagnostic; it is never a verdict (a network without skips has a small
  CV too).
"""

from __future__ import annotations

import html
import json
import math
import os
import pathlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from types import MappingProxyType
from typing import Any

import numpy as np

from . import metrics as _m
from ._format import html_table, number, text_table, verdict_word
from ._io import atomic_write_text
from ._source import ACTIVE_FLOOR, as_source, get_field, is_bare_array, resolve_classes
from ._validation import check_choice, check_int, check_positive_float
from .backend import get_namespace, namespace_name, to_numpy
from .metrics import DEFAULT_TAU, Metric
from .metrics import registry as _registry

__all__ = ["Thresholds", "Check", "RAReport", "analyze", "PROPERTIES"]

PROPERTIES = ("RA1", "RA2", "RA3", "RA4")

# Display order of the metrics, by property ("NC" has no verdict): from the one table.
_GROUPS = _registry.groups()


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
        Reference shown next to the "equal share" diagnostic (the CV of ``sigma_1`` over
        layers): below it, layer gains differ by less than about +-25 %. It is **not** a
        verdict: RA4 needs models of several depths (:func:`ramodel.depth_scaling`).
    ra4_slope_low, ra4_slope_high : float, default -1.3, -0.7
        RA4 across models: the fitted slope must lie in ``[low, high]``; pass
        ``slope_range=(low, high)`` to :func:`ramodel.depth_scaling`. Not used by one report.
    ra1_min_depth : int, default 3
        RA1 is undetermined below this depth: one step is always a line with equal
        steps and two steps always lie in a plane.
    ra2_margin : float, default 0.1
        RA2 is undetermined unless the required alignment exceeds chance ``k/d`` by at
        least this much ...
    ra2_chance_z : float, default 3.0
        ... and by this many standard deviations of the mean alignment of random
        subspaces over the measured pairs (false pass on noise below ~0.2 %).
    active_floor : float, default 1e-6
        Branches are inactive, and RA1-RA3 undetermined, when the median over matrices of
        ``sigma_1(J_l) / max(1, |M_l|_2)`` is below this. Single matrices below it are left
        out of RA2.
    step_floor : float, default 1e-6
        ... or when the median relative step ``|h_l - M_l h_{l-1}| / |h_{l-1}|`` is below this.
    tie_factor : float, default 100.0
        A matrix with ``sigma_k - sigma_{k+1} <= tie_factor * sqrt(d) * eps * sigma_1`` has
        no defined top-k subspace and is left out of RA2 (and counted).

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
    ra1_min_depth: int = 3
    ra2_margin: float = 0.1
    ra2_chance_z: float = 3.0
    active_floor: float = ACTIVE_FLOOR
    step_floor: float = 1e-6
    tie_factor: float = 100.0

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
        check_int("ra1_min_depth", self.ra1_min_depth, minimum=1)
        for name in ("ra2_margin", "ra2_chance_z", "active_floor", "step_floor", "tie_factor"):
            check_positive_float(name, getattr(self, name), allow_zero=True)
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
    return number(v, digits=4)


_verdict_word = verdict_word


def _save_path(path: Any) -> pathlib.Path:
    """Validate the ``path`` argument of a ``save`` (one rule for every report)."""
    if path is None or (isinstance(path, (str, os.PathLike)) and os.fspath(path) == ""):
        raise ValueError(f"path must be the file to write, e.g. 'report.json', got {path!r}")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or path-like file name, got {type(path).__name__}")
    p = pathlib.Path(path)
    if p.is_dir():
        raise _PathIsFolderError(f"path must be a file, but {str(p)!r} is a folder; give a file name in it, "
                                 f"e.g. {str(p / 'report.json')!r}")
    return p


class _PathIsFolderError(IsADirectoryError, ValueError):
    """``save(folder)``: a ValueError about the argument, and the OS error it would become."""


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
        ``energy_top_C``; RA4 diagnostics ``sigma1_cv`` ("equal share"),
        ``sigma1_mean``; NC ``nc1``, ``nc2_equinorm``, ``nc2_etf``, ``nc3``, ``nc4``.
    unavailable : Mapping[str, str]
        Metrics that could not be computed, with the reason.
    checks : tuple of Check
        Every threshold test, in order (RA1-RA3; RA4 has none in one report).
    verdicts : Mapping[str, bool or None]
        ``"RA1"`` .. ``"RA4"``: True when every check of the property passes, False when
        one fails, None (undetermined) when the test cannot tell the data from chance or
        a metric is unavailable (module docstring). RA4 is always None here.
    reasons : Mapping[str, str]
        One line per verdict saying why it is what it is.
    thresholds : Thresholds
        The thresholds used.
    info : Mapping[str, Any]
        ``depth``, ``inputs``, ``width``, ``classes``, ``k`` (the k used by RA2),
        ``k_rule``, ``tau``, ``layout`` (``"dense"``/``"factors"``), ``input_dependent``,
        ``dtype``, ``computed_in`` (the dtype of the arithmetic: float32 for float16
        input), ``namespace``, ``ra2_excluded`` (matrices left out of RA2:
        ``{"tied": n, "inactive": m}``), ``inactive`` (the reason, or None).
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
            "info": json.loads(json.dumps(dict(self.info), default=str)),
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
        ValueError
            If ``path`` is None, empty, or an existing folder (the last is also an
            :class:`IsADirectoryError`).
        FileNotFoundError
            If the folder does not exist.
        """
        target = _save_path(path)
        text = json.dumps(self.to_dict(), indent=2, allow_nan=False)  # before touching the disk
        atomic_write_text(target, text, action="save the report to")
        return pathlib.Path(path)

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
                if name == "sigma1_cv":
                    measure += " [equal-share diagnostic]"
                value = _fmt(m.value) if m is not None else "n/a"
                chance = _fmt(m.chance) if m is not None else "-"
                threshold = f"{c.op} {_fmt(c.threshold)}" if c is not None else "-"
                if c is None:
                    verdict = "-"
                elif self.verdicts.get(prop) is None:
                    verdict = "undetermined"
                else:
                    verdict = {True: "pass", False: "FAIL", None: "n/a"}[c.passed]
                rows.append((prop, measure, value, chance, threshold, verdict))
        return rows

    def _header(self) -> str:
        i = self.info
        dep = "per-input" if i["input_dependent"] else "input-independent"
        dtype = i["dtype"] if i.get("computed_in", i["dtype"]) == i["dtype"] else f"{i['dtype']} computed in {i['computed_in']}"
        return (f"RA report: L={i['depth']}, N={i['inputs']}, d={i['width']}, C={i['classes']}, "
                f"k={i['k']}, {i['layout']} {dep} Jacobians, tau={i['tau']:g}, {dtype}")

    def __str__(self) -> str:
        head = ("property", "measure", "value", "chance", "threshold", "verdict")
        lines = [self._header(), *text_table([head, *self._rows()])]
        lines.append("verdicts: " + ", ".join(f"{p} {_verdict_word(v)}" for p, v in self.verdicts.items()))
        for p, v in self.verdicts.items():
            lines.append(f"  {p} {_verdict_word(v)}: {self.reasons.get(p, '')}")
        lines.append(f"  k = {self.info['k']} ({self.info.get('k_rule', '')})")
        return "\n".join(lines)

    def __repr__(self) -> str:
        verdicts = ", ".join(f"{p}={v}" for p, v in self.verdicts.items())
        return f"RAReport({verdicts}, metrics={len(self.metrics)})"

    def _repr_html_(self) -> str:
        esc = html.escape
        head = ("property", "measure", "value", "chance", "threshold", "verdict")
        verdicts = [(p, _verdict_word(v), self.reasons.get(p, "")) for p, v in self.verdicts.items()]
        return (f"<div><p><b>{esc(self._header())}</b></p>" + html_table([head, *self._rows()])
                + html_table([("property", "verdict", "reason"), *verdicts]) + "</div>")


# ---------------------------------------------------------------------- analyze
_field = get_field  # the reader of ramodel._source (kept under its old name)


def _classes(value: Any) -> int:
    if value is None:
        raise ValueError("source must give 'classes' (the number of classes C)")
    return resolve_classes(value)


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


_is_bare_array = is_bare_array


def _loss_of(source: Any) -> str | None:
    return as_source(source).provenance.loss


def _host_norms(M: Any, L: int) -> np.ndarray:
    """Spectral norm of each skip, (L,); 1 for identity skips (``M`` None)."""
    if M is None:
        return np.ones(L)
    m = np.asarray(to_numpy(M), dtype=np.float64)
    top = float(np.max(np.abs(m))) if m.size else 0.0
    if top == 0.0:
        return np.zeros(L)
    n = np.linalg.norm(m / top, ord=2, axis=(-2, -1)) * top
    return np.broadcast_to(n, (L,)) if np.ndim(n) == 0 else n


def _relative_steps(R: Any, M: Any) -> np.ndarray:
    """``|h_l - M_l h_{l-1}| / |h_{l-1}|`` per (layer, input), NaN where ``h_{l-1} = 0``."""
    h = np.asarray(to_numpy(R), dtype=np.float64)
    top = float(np.max(np.abs(h)))
    if top == 0.0:
        return np.full(h.shape[:2], np.nan)[1:]
    h = h / top  # relative steps are scale-free; avoids overflow of the squares
    prev = h[:-1]
    if M is None:
        moved = prev
    else:
        m = np.asarray(to_numpy(M), dtype=np.float64)
        moved = np.einsum("...ij,lnj->lni", m, prev) if m.ndim == 2 else np.einsum("lij,lnj->lni", m, prev)
    step = np.linalg.norm(h[1:] - moved, axis=-1)
    base = np.linalg.norm(prev, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(base > 0, step / np.where(base > 0, base, 1.0), np.nan)


def _pair_sd(k: int, d: int) -> float:
    """Standard deviation of ``|P^T Q|_F^2 / k`` for independent uniform k-subspaces of R^d.

    ``|P^T Q|_F^2 = tr(P P^T Q Q^T)`` has mean ``k^2/d`` and variance
    ``2 k^2 (d - k)^2 / (d^2 (d - 1)(d + 2))`` (moments of a Haar rotation).
    """
    if d < 2:
        return 0.0
    return math.sqrt(2.0) * (d - k) / (d * math.sqrt((d - 1) * (d + 2)))


def _describe(checks: list[Check], ok: bool) -> str:
    shown = [c for c in checks if c.passed is bool(ok)]
    return " and ".join(f"{c.metric} {_fmt(c.value)} {c.op} {_fmt(c.threshold)}"
                        if ok else f"{c.metric} {_fmt(c.value)} not {c.op} {_fmt(c.threshold)}" for c in shown)


def analyze(source: Any, *, classes: int | None = None, labels: Any = None, k: int | None = None,
            thresholds: Thresholds | None = None, tau: float = DEFAULT_TAU, loss: str | None = None) -> RAReport:
    """Measure RA1-RA4 and neural collapse on ``source`` and give a verdict per property.

    Parameters
    ----------
    source : object, Mapping or array
        Anything shaped like ``spec/FORMAT.md``, read by attribute or by key:

        - ``jacobians`` ``(L, N, d, d)`` or ``(L, d, d)`` (input-independent, e.g. a
          ``Simulation``), or the factors ``U (L, [N,] d, k)``, ``S (L, [N,] k)``,
          ``V (L, [N,] d, k)``;
        - ``labels`` ``(N,)`` integers in ``[0, C)``; ``classes`` C >= 2;
        - optional ``representations`` ``(L+1, N, d)`` (RA1 and NC need them),
          ``skips`` ``(L, d, d)`` or ``(d, d)`` (the activity floor and the steps
          ``h_l - M_l h_{l-1}`` use them; identity when absent),
          ``classifier`` ``(C, d)`` (NC3, NC4) and ``classifier_bias`` ``(C,)`` (NC4;
          not a FORMAT.md key).

        Or a bare array of Jacobians ``(L, d, d)`` / ``(L, N, d, d)``, with ``classes=``
        (and optionally ``labels=``).
    classes : int, optional
        C, for a source that does not give it (a bare array); must agree with the
        source's own when both are given.
    labels : array_like, shape (N,), optional
        For a source without labels (a bare array); not needed by RA2-RA3.
    k : int, optional
        Dimension of the top singular subspaces of RA2. Default: from the data, ``C``
        (``C - 1`` for cross-entropy, by T1), never above the median numerical rank of
        the active matrices, ``d`` or the stored k of factors (``info["k_rule"]``).
    thresholds : Thresholds, optional
        Default ``Thresholds()`` (METRICS.md).
    tau : float, default 1e-3
        Relative threshold of the numerical rank.
    loss : {"mse", "cross_entropy"}, optional
        The training loss, for the default k; default: the simulation's config or the
        file's ``meta["loss"]``.

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
    needs the whole spectrum); RA2 uses the first k. float16 arrays are computed in
    float32 (``info["computed_in"]``); Jacobians whose squares would overflow or
    underflow are divided by a power of two first, so every verdict is unchanged by a
    global scale. RA4 is None in one report; see :func:`ramodel.depth_scaling`.

    Examples
    --------
    >>> import numpy as np
    >>> J = np.stack([np.diag([0.5, 0.25, 0.0, 0.0, 0.0, 0.0])] * 4)   # identical, symmetric, rank 2
    >>> x = np.eye(6)[:3] + 1.0
    >>> h = np.stack([x + l * np.array([0.1, 0, 0, 0, 0, 0]) for l in range(5)])  # lines
    >>> rep = analyze({"jacobians": J, "labels": np.array([0, 1, 1]), "classes": 2,
    ...                "representations": h})
    >>> dict(rep.verdicts)
    {'RA1': True, 'RA2': True, 'RA3': True, 'RA4': None}
    >>> rep.reasons["RA4"][:39]
    'RA4 is a law across models of different'
    >>> analyze(J, classes=2).verdicts["RA2"]       # a bare array of Jacobians
    True
    """
    src = as_source(source)
    thresholds = Thresholds() if thresholds is None else thresholds
    if not isinstance(thresholds, Thresholds):
        raise TypeError(f"thresholds must be a ramodel.report.Thresholds, got {type(thresholds).__name__}")
    tau = _m._check_tau(tau)
    C = src.classes_or(classes)
    if labels is not None and src.labels is not None:
        raise ValueError("labels= given, but the source has its own 'labels'; pass one of them")
    lab = src.labels if src.labels is not None else labels
    bare = src.bare or (isinstance(source, Mapping) and set(source) == {"jacobians"})
    labels_arr = None if (lab is None and bare) else _labels(lab, C)
    if loss is not None:
        loss = check_choice("loss", loss, ("mse", "cross_entropy"))
    else:
        loss = src.provenance.loss

    if src.require_jacobians() == "dense":
        st = _m._stack(src.jacobians, k=None, full=True, name="jacobians")
        layout_key = "jacobians"
    else:
        st = _m._stack(src.factors, k=None, full=True)
        layout_key = "U"
    L, d = st.L, st.d
    N = int(labels_arr.size) if labels_arr is not None else (1 if st.shared else int(st.U.shape[1]))
    if not st.shared and int(st.U.shape[1]) != N:
        raise ValueError(f"'{layout_key}' has N = {int(st.U.shape[1])} inputs (axis 1) but 'labels' has N = {N}")

    def optional(key, ndims, doc):
        a = getattr(src, key)
        if a is None:
            return None
        return _m._upcast(_m._float_array(key, a, ndims, doc))

    R = optional("representations", (3,), "(L+1, N, d)")
    if R is not None:
        _expect("representations", R, (L + 1, N, d), "(L+1, N, d)")
    skips = optional("skips", (2, 3), "(L, d, d) or (d, d)")
    if skips is not None:
        if skips.ndim == 3:
            _expect("skips", skips, (L, d, d), "(L, d, d)")
        else:
            _expect("skips", skips, (d, d), "(d, d)")
    W = optional("classifier", (2,), "(C, d)")
    if W is not None:
        _expect("classifier", W, (C, d), "(C, d)")
    bias = optional("classifier_bias", (1,), "(C,)")
    if bias is not None:
        _expect("classifier_bias", bias, (C,), "(C,)")
    xp = get_namespace(st.U, R, skips, W, bias)

    # ---- activity: trivial point, inactive branches (module docstring)
    s1 = _m._host(st.S[..., 0]) * st.scale  # (L, N)
    ref = np.maximum(1.0, _host_norms(skips, L))[:, None]
    with np.errstate(over="ignore", invalid="ignore"):
        gain = s1 / ref
    active = gain >= thresholds.active_floor
    inactive = None
    if src.provenance.trivial:
        inactive = "trivial critical point (J = 0): the theorems and RA say nothing about it"
    elif float(np.median(gain)) < thresholds.active_floor:
        inactive = (f"branches inactive: median sigma_1 = {float(np.median(s1)):.3g} < floor "
                    f"{thresholds.active_floor:g} x max(1, |M_l|)")
    elif R is not None and L >= 1:
        rel = _relative_steps(R, skips)
        if np.isfinite(rel).any() and float(np.nanmedian(rel)) < thresholds.step_floor:
            inactive = (f"branches inactive: median step |h_l - M_l h_(l-1)| / |h_(l-1)| = "
                        f"{float(np.nanmedian(rel)):.3g} < floor {thresholds.step_floor:g}")

    # ---- k from the data
    S_host = _m._host(st.S)  # (L, N, kf), divided by st.scale
    ranks = _m._rank_raw(S_host, tau)
    k_C, k_C_text = (C - 1, "C - 1: cross-entropy gives rank J_l <= C - 1 (T1)") if loss == "cross_entropy" \
        else (C, "C")
    if k is None:
        r_med = int(np.median(ranks[active])) if active.any() else k_C
        k = max(1, min(k_C, d, st.kf, r_med))
        if k == k_C:
            k_rule = f"k = {k_C_text}"
        elif k == r_med and r_med < min(k_C, d, st.kf):
            k_rule = f"k = the median numerical rank {r_med} < {k_C_text.split(':')[0]} = {k_C}"
        else:
            k_rule = f"k = {k_C_text.split(':')[0]} = {k_C} capped at d = {d} / the stored k = {st.kf}"
    else:
        k = check_int("k", k, minimum=1, maximum=min(d, st.kf))
        k_rule = "k given by the caller"
    # Rounding level of the data as given: float16 input is computed in float32 but was
    # rounded at float16's eps.
    eps = float(np.finfo(np.float16).eps) if st.upcast_from == "float16" else _m._eps(st.S)
    if st.kf > k:
        gap = S_host[..., k - 1] - S_host[..., k]
        tied = gap <= thresholds.tie_factor * math.sqrt(d) * eps * S_host[..., 0]
    else:
        tied = np.zeros_like(active)
    tied &= S_host[..., 0] > 0
    keep = active & ~tied if inactive is None else ~tied
    st_ra2 = replace(st, mask=keep)
    n_tied = int(tied.sum())
    n_inactive = int((~active & ~tied & (S_host[..., 0] > 0)).sum()) if inactive is None else 0

    metrics: dict[str, Metric] = {}
    unavailable: dict[str, str] = {}
    if R is None:
        for name in _registry.needing("representations"):
            unavailable[name] = "no representations given"
    else:
        raw = _m._trajectory_raw(R)
        for name, values in raw.items():
            _m._attempt(metrics, unavailable, name, lambda n=name, v=values: _m._ra1_metric(n, v))
    for out, missing in (_m._alignment_group(st_ra2, k), _m._rank_group(st, C, tau)):
        metrics.update(out)
        unavailable.update(missing)
    if n_tied:
        for name in list(unavailable):
            if name in _GROUPS["RA2"] and "undefined for every" in unavailable[name]:
                unavailable[name] += (f" ({n_tied} matrices left out: sigma_{k} and sigma_{k + 1} tie at "
                                      "rounding level, so their top-k subspace is undefined)")
    _m._attempt(metrics, unavailable, "sigma1_cv", lambda: _m._sigma1_cv_metric(st))
    _m._attempt(metrics, unavailable, "sigma1_mean", lambda: _m._sigma1_mean_metric(st))
    if R is not None:
        if labels_arr is None:
            for name in _registry.needing("labels"):
                unavailable[name] = "no labels given"
        else:
            out, missing = _m._collapse_group(R[-1, ...], labels_arr, C, W, bias)
            metrics.update(out)
            unavailable.update(missing)

    chance = k / d
    need = thresholds.ra2_required(chance)
    max_rank = thresholds.max_rank(C)
    ctx = {"C": C, "chance": chance}
    checks = []
    for spec in _registry.METRICS:
        if spec.verdict is None:
            continue
        prop, name, op = spec.property, spec.name, spec.verdict.op
        thr, rule = spec.verdict.threshold(thresholds, ctx), spec.verdict.rule(thresholds, ctx)
        m = metrics.get(name)
        if m is None:
            checks.append(Check(prop, name, op, float(thr), rule, None, None))
            continue
        passed = m.value >= thr if op == ">=" else m.value <= thr
        checks.append(Check(prop, name, op, float(thr), rule, float(m.value), bool(passed)))

    # ---- RA2 vacuity: the threshold must stand clear of chance
    # Pairs of layers per input; inputs are not counted as independent (the Jacobians of
    # different inputs of one network are correlated, or identical when broadcast), so
    # the standard deviation is that of a mean over the layer pairs of one input.
    kept = keep.sum(axis=0)
    pairs = kept * (kept - 1) / 2.0
    used = pairs[pairs > 0]
    sd_mean = _pair_sd(k, d) / math.sqrt(float(np.median(used))) if used.size else 0.0
    margin_needed = max(thresholds.ra2_margin, thresholds.ra2_chance_z * sd_mean)
    vacuous: dict[str, str] = {}
    if L < thresholds.ra1_min_depth:
        vacuous["RA1"] = (f"needs L >= {thresholds.ra1_min_depth} steps, got L = {L}: one step is always a line "
                          "with equal steps, two always lie in a plane")
    if need - chance < margin_needed:
        why = f"C = {C} >= d = {d}: " if C >= d else ""
        vacuous["RA2"] = (f"{why}the required alignment {_fmt(need)} is not clearly above chance k/d = "
                          f"{_fmt(chance)} (k = {k}, d = {d}; needs a margin of {_fmt(margin_needed)}: "
                          f"max({thresholds.ra2_margin:g}, {thresholds.ra2_chance_z:g} sd of chance))")
    if max_rank >= d:
        vacuous["RA3"] = (f"C = {C} >= d = {d}: rank <= C holds for any matrix" if max_rank == C
                          else f"max rank {max_rank} >= d = {d}: holds for any matrix")

    verdicts: dict[str, bool | None] = {}
    reasons: dict[str, str] = {}
    for prop in PROPERTIES[:3]:
        mine = [c for c in checks if c.property == prop]
        if inactive is not None:
            verdicts[prop], reasons[prop] = None, inactive
        elif any(c.passed is None for c in mine):
            verdicts[prop] = None
            reasons[prop] = "; ".join(f"{c.metric}: {unavailable.get(c.metric, 'not computed')}"
                                      for c in mine if c.passed is None)
        elif prop in vacuous:
            verdicts[prop], reasons[prop] = None, vacuous[prop]
        else:
            ok = all(c.passed for c in mine)
            verdicts[prop] = ok
            reasons[prop] = _describe(mine, ok)
            if prop == "RA2":
                reasons[prop] += f" (k = {k}, chance k/d = {_fmt(chance)})"
    verdicts["RA4"] = None
    cv = metrics.get("sigma1_cv")
    reasons["RA4"] = ("RA4 is a law across models of different depth; one model cannot show it: fit several "
                      "with ramodel.depth_scaling" + ("" if cv is None else
                                                      f" (equal-share CV of sigma_1 here: {_fmt(cv.value)})"))

    computed = str(st.U.dtype).split(".")[-1]
    info = {
        "depth": L,
        "inputs": N,
        "width": d,
        "classes": C,
        "k": k,
        "k_rule": k_rule,
        "tau": tau,
        "layout": st.layout,
        "input_dependent": not st.shared,
        "dtype": st.upcast_from or computed,
        "computed_in": computed,
        "namespace": namespace_name(xp),
        "loss": loss,
        "ra2_excluded": {"tied": n_tied, "inactive": n_inactive},
        "inactive": inactive,
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
