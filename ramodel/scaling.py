"""RA4 across models: the depth law ``sigma_bar_1 ~ 1/L`` (``spec/METRICS.md``, "RA4").

Design constraints, in order:

1. RA4 is a law **across models of different depth**. One model never gives an RA4
   verdict; :func:`depth_scaling` fits ``log sigma_bar_1 = a + b log L`` over several
   models and says True, False or None (undetermined), always with a one-line reason.
2. Any source the rest of the package produces can be fitted: :class:`Simulation`,
   :class:`JacobianSet`, a path to a FORMAT.md ``.npz`` file, or a
   :class:`SweepResult`. Sources are grouped by everything that describes the model
   except its depth (and seed: seeds are replicates), so one call can fit several
   families at once.
3. :func:`fit_depth_law` is a pure function of two 1-D arrays (NumPy only; SciPy is
   imported inside it for the Student-t quantile).
4. Results are frozen dataclasses with ``to_dict()`` (plain JSON) and ``__str__``.

Verdict rules (each documented with its reason)
-----------------------------------------------
- ``None`` with fewer than :data:`MIN_DEPTHS` = 3 distinct depths: two points always lie on
  a line, so a slope from two depths has no error estimate and cannot be told from noise.
- ``None`` when any model's branches are numerically inactive: its ``sigma_1(J_l)`` lies
  below :data:`ACTIVE_FLOOR` = 1e-6 times ``max(1, |M_l|_2)`` for some layer (the
  Jacobians are dimensionless, and against a skip of norm ~1 a branch of gain < 1e-6
  changes the layer map by less than one part in a million; float32 rounding is
  ~6e-8, so the floor sits a factor ~16 above it), or the run is a trivial critical point
  (``Simulation.is_trivial``). A dead branch has ``sigma_1`` set by the weight decay or
  by rounding, not by depth, and its "slope" is meaningless.
- ``None`` when the confidence interval of the slope contains 0: the data cannot then
  exclude "no depth dependence at all", whatever the point estimate is.
- Otherwise ``True`` when ``slope_range[0] <= b <= slope_range[1]`` (default
  ``[-1.3, -0.7]``, METRICS.md) and ``False`` when not.
"""

from __future__ import annotations

import math
import os
import pathlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from . import _source
from ._validation import check_positive_float
from .backend import to_numpy

__all__ = ["ACTIVE_FLOOR", "MIN_DEPTHS", "DepthLawFit", "DepthScaling", "depth_scaling", "fit_depth_law"]

#: Relative floor below which a branch counts as inactive (see module docstring).
ACTIVE_FLOOR = _source.ACTIVE_FLOOR
#: Distinct depths RA4 needs before it gives a verdict.
MIN_DEPTHS = 3

# Keys of a simulation's config that describe the model (not its depth, seed or solver).
_SIM_KEYS = ("classes", "width", "loss", "branch_factors", "skip", "skip_params", "skip_shared",
             "weight_decay", "mean_scale", "noise", "samples_per_class", "data", "dtype")
# FORMAT.md meta keys that describe a trained model's family (not its depth or provenance).
_META_KEYS = ("architecture", "skip_family", "dataset", "loss", "activation", "weight_decay",
              "branch_factors", "jacobian", "optimizer")
# Sweep columns that are not part of a model's identity.
_NOT_MODEL = ("depth", "seed")


def _json(v: Any) -> Any:
    if isinstance(v, float):
        if math.isnan(v):
            return None
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
    return v


@dataclass(frozen=True)
class DepthLawFit:
    """Least-squares fit of ``log sigma_bar_1 = a + b log L`` over models (RA4).

    Attributes
    ----------
    slope : float
        ``b``; RA4 predicts ``b = -1``.
    intercept : float
        ``a``.
    stderr : float
        OLS standard error of ``b``.
    ci_low, ci_high : float
        Two-sided confidence interval of ``b`` from Student's t with ``dof`` degrees of
        freedom.
    confidence : float
        Confidence level of the interval, e.g. 0.95.
    dof : int
        ``n - 2``.
    n : int
        Number of models (repeated depths, e.g. seeds, each count).
    r2 : float
        Coefficient of determination of the log-log fit.
    """

    slope: float
    intercept: float
    stderr: float
    ci_low: float
    ci_high: float
    confidence: float
    dof: int
    n: int
    r2: float

    def within(self, low: float = -1.3, high: float = -0.7) -> bool:
        """True when ``low <= slope <= high`` (METRICS.md default acceptance)."""
        return bool(low <= self.slope <= high)

    def to_dict(self) -> dict:
        """Plain JSON-ready dict."""
        return {k: (v if isinstance(v, int) else _json(float(v))) for k, v in self.__dict__.items()}


def _host_1d(name: str, a: Any) -> np.ndarray:
    if a is None:
        raise TypeError(f"{name} is required, got None")
    x = np.asarray(to_numpy(a) if hasattr(a, "__array_namespace__") else a, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {x.shape}")
    if not np.all(np.isfinite(x)) or not np.all(x > 0):
        raise ValueError(f"{name} must hold finite values > 0 (they are log-transformed), got {x.tolist()}")
    return x


def fit_depth_law(depths, sigma1, *, confidence: float = 0.95) -> DepthLawFit:
    """RA4 across models: fit ``log sigma_bar_1 = a + b log L`` by ordinary least squares.

    The confidence interval of ``b`` is ``b +- t_{(1+confidence)/2, n-2} * stderr`` with
    the usual OLS standard error ``sqrt(SSR / (n-2) / Sxx)``. RA4 predicts ``b = -1``.

    Parameters
    ----------
    depths : array_like, shape (n,)
        Depth ``L`` of each model, > 0; at least two distinct values. Repeated depths
        (several seeds) are allowed.
    sigma1 : array_like, shape (n,)
        ``sigma_bar_1`` of each model (mean top singular value over layers), > 0.
    confidence : float, default 0.95
        In (0, 1).

    Returns
    -------
    DepthLawFit

    Raises
    ------
    ValueError
        Fewer than 3 models (no confidence interval), fewer than 2 distinct depths,
        arrays of different lengths, or values that are not finite and > 0.

    Examples
    --------
    >>> fit = fit_depth_law([2, 4, 8, 16], [0.5, 0.25, 0.125, 0.0625])
    >>> round(fit.slope, 12), fit.within()
    (-1.0, True)
    """
    x = _host_1d("depths", depths)
    y = _host_1d("sigma1", sigma1)
    if x.shape != y.shape:
        raise ValueError(f"depths and sigma1 must have the same length, got {x.size} and {y.size}")
    if x.size < 3:
        raise ValueError(f"fit_depth_slope needs at least 3 models for a confidence interval, got {x.size}")
    if np.unique(x).size < 2:
        raise ValueError("depths must hold at least two distinct values")
    confidence = check_positive_float("confidence", confidence)
    if confidence >= 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    from scipy import stats

    lx, ly = np.log(x), np.log(y)
    xm, ym = lx.mean(), ly.mean()
    sxx = float(np.sum((lx - xm) ** 2))
    b = float(np.sum((lx - xm) * (ly - ym)) / sxx)
    a = float(ym - b * xm)
    resid = ly - (a + b * lx)
    dof = int(x.size - 2)
    ssr = float(np.sum(resid**2))
    sst = float(np.sum((ly - ym) ** 2))
    stderr = math.sqrt(ssr / dof / sxx)
    half = float(stats.t.ppf(0.5 + confidence / 2, dof)) * stderr
    r2 = 1.0 - ssr / sst if sst > 0 else 1.0
    return DepthLawFit(b, a, stderr, b - half, b + half, float(confidence), dof, int(x.size), r2)


# ------------------------------------------------------------------ one model
@dataclass(frozen=True)
class _Model:
    name: str
    depth: int
    sigma1: float | None  # sigma_bar_1; None when unusable
    cv: float | None  # within-model CV of sigma_1 over layers ("equal share")
    key: dict
    inactive: str  # "" or why the branches are inactive
    excluded: str  # "" or why the model is left out of the fit


def _layer_sigma1(J: np.ndarray) -> np.ndarray:
    """sigma_1 per layer and input, (L, N), scale-safe (power-of-2 rescaling)."""
    m = float(np.max(np.abs(J))) if J.size else 0.0
    if m == 0.0:
        return np.zeros(J.shape[:-2])
    e = math.frexp(m)[1]
    s = np.linalg.norm(np.ldexp(J.astype(np.float64), -e), ord=2, axis=(-2, -1))
    return np.ldexp(s, e)


def _summarise(name: str, depth: int, s1: np.ndarray, key: dict, skip_norm: np.ndarray | None,
               trivial: bool = False, excluded: str = "") -> _Model:
    """``s1`` is (L, N) or (L,); ``skip_norm`` (L,) or None (identity: 1)."""
    s1 = np.asarray(s1, dtype=np.float64)
    if s1.ndim == 1:
        s1 = s1[:, None]
    per_layer = s1.mean(axis=1)
    ref = np.ones_like(per_layer) if skip_norm is None else np.maximum(1.0, np.asarray(skip_norm, dtype=np.float64))
    inactive = ""
    if trivial:
        inactive = f"{name} is a trivial critical point (J = 0)"
    else:
        low = per_layer < ACTIVE_FLOOR * ref
        if low.any():
            l = int(np.argmax(low))
            inactive = (f"branches inactive in {name}: sigma_1(J_{l + 1}) = {per_layer[l]:.3g} < "
                        f"floor {ACTIVE_FLOOR:g} x max(1, |M_l|)")
    sigma = float(s1.mean())
    top = float(s1.max()) if s1.size else 0.0
    s1 = s1 / top if top > 0 and math.isfinite(top) else s1  # the CV is scale-free; avoid overflow
    mean = s1.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        cvs = np.where(mean > 0, s1.std(axis=0) / np.where(mean > 0, mean, 1.0), np.nan)
    cv = float(np.nanmedian(cvs)) if np.isfinite(cvs).any() else None
    return _Model(name, int(depth), sigma if sigma > 0 and math.isfinite(sigma) else None, cv, key,
                  inactive, excluded)


def _from_simulation(sim: Any, name: str) -> _Model:
    J = np.asarray(to_numpy(sim.jacobians), dtype=np.float64)
    M = np.asarray(to_numpy(sim.skips), dtype=np.float64)
    cfg = dict(getattr(sim, "config", {}) or {})
    key = {"source": "simulation", "classes": int(sim.classes), "width": int(sim.width)}
    key.update({k: cfg[k] for k in _SIM_KEYS if k in cfg and k not in key})
    excluded = "" if sim.converged else f"{name} did not converge (|grad Phi| = {sim.grad_norm:.2g})"
    return _summarise(name, sim.depth, _layer_sigma1(J), key, np.linalg.norm(M, ord=2, axis=(-2, -1)),
                      trivial=bool(sim.is_trivial), excluded=excluded)


def _from_jacobian_set(js: Any, name: str) -> _Model:
    src = _source.as_source(js)
    if src.require_jacobians() == "dense":
        s1 = _layer_sigma1(np.asarray(src.jacobians))
    else:
        s1 = np.asarray(src.S, dtype=np.float64)[..., 0]
    skip_norm = None
    if src.skips is not None:
        M = np.asarray(src.skips, dtype=np.float64)
        n = np.linalg.norm(M, ord=2, axis=(-2, -1))
        skip_norm = np.broadcast_to(n, (js.depth,)) if np.ndim(n) == 0 else n
    meta = dict(src.provenance.meta)
    key = {"source": "network", "classes": int(src.classes_or()), "width": int(js.width)}
    key.update({k: meta[k] for k in _META_KEYS if k in meta})
    return _summarise(name, js.depth, s1, key, skip_norm)


def _hashable(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_hashable(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, _hashable(x)) for k, x in v.items()))
    return v


def _from_sweep(res: Any) -> list[_Model]:
    out = []
    cols = [c for c in res.config_columns if c not in _NOT_MODEL]
    for i, r in enumerate(res.rows):
        depth = r.get("depth")
        name = f"row {i} (L = {depth})"
        key = {"source": "simulation", **{c: r.get(c) for c in cols}}
        excluded = ""
        if r.get("error"):
            excluded = f"{name} failed: {r['error']}"
        elif r.get("converged") is False:
            excluded = f"{name} did not converge"
        s1 = r.get("sigma1_mean")
        trivial = bool(r.get("trivial") or r.get("is_trivial"))
        inactive = ""
        if trivial:
            inactive = f"{name} is a trivial critical point (J = 0)"
        elif s1 is not None and not excluded and s1 < ACTIVE_FLOOR:
            inactive = f"branches inactive in {name}: sigma_bar_1 = {s1:.3g} < floor {ACTIVE_FLOOR:g}"
        if s1 is None and not excluded:
            excluded = f"{name} has no sigma1_mean"
        cv = r.get("sigma1_cv")
        out.append(_Model(name, int(depth) if depth is not None else 0,
                          float(s1) if s1 is not None and s1 > 0 else None,
                          float(cv) if cv is not None else None, key, inactive, excluded))
    return out


def _models(sources: Any, names: Sequence[str] | None = None) -> list[_Model]:
    from .jacobian_set import JacobianSet
    from .sweeps import SweepResult

    if isinstance(sources, SweepResult):
        return _from_sweep(sources)
    if isinstance(sources, (str, os.PathLike, JacobianSet)) or hasattr(sources, "jacobians"):
        sources = [sources]
    if not isinstance(sources, Sequence) or isinstance(sources, (str, bytes)):
        try:
            sources = list(sources)
        except TypeError:
            raise TypeError(
                "sources must be a sequence of Simulation, JacobianSet or .npz paths, or a SweepResult; "
                f"got {type(sources).__name__}"
            ) from None
    if names is not None:
        names = [str(n) for n in names]
        if len(names) != len(sources):
            raise ValueError(f"names must give one name per source: {len(sources)} sources, {len(names)} names")
    out: list[_Model] = []
    for i, s in enumerate(sources):
        label = None if names is None else names[i]
        if isinstance(s, SweepResult):
            out.extend(_from_sweep(s))
        elif isinstance(s, (str, os.PathLike)):
            p = pathlib.Path(s)
            out.append(_from_jacobian_set(JacobianSet.load(p), label or p.name))
        elif isinstance(s, JacobianSet):
            out.append(_from_jacobian_set(s, label or f"source {i} (L = {s.depth})"))
        elif _source.is_simulation(s):
            out.append(_from_simulation(s, label or f"source {i} (L = {s.depth})"))
        else:
            raise TypeError(
                f"sources[{i}] must be a Simulation, a JacobianSet, a path to a FORMAT.md .npz file or a "
                f"SweepResult, got {type(s).__name__}"
            )
    if not out:
        raise ValueError("sources must not be empty")
    return out


# --------------------------------------------------------------- the result
@dataclass(frozen=True, eq=False)
class DepthScaling:
    """RA4 for one group of models that differ only in depth (and seed).

    Attributes
    ----------
    group : Mapping[str, Any]
        The values the models of this group share (``source``, ``classes``, ``width``,
        and the family keys: ``skip``, ``loss``, ``architecture``, ...).
    names : tuple of str
        One name per model used in the fit (file name or ``source i (L = ...)``).
    depths : tuple of int
        ``L`` of each model.
    sigma1 : tuple of float
        ``sigma_bar_1`` of each model: mean of ``sigma_1(J_l)`` over layers and inputs.
    L_sigma1 : tuple of float
        ``L * sigma_bar_1`` of each model; constant when RA4 holds exactly.
    equal_share_cv : tuple of float or None
        Within-model CV of ``sigma_1(J_l)`` over layers (the "equal share" diagnostic of
        METRICS.md); never the RA4 verdict.
    fit : DepthLawFit or None
        None when fewer than 3 models or 2 distinct depths were usable.
    verdict : bool or None
        RA4: True, False, or None (undetermined); see the module docstring.
    reason : str
        One line saying why the verdict is what it is.
    slope_range : tuple of float
        The acceptance interval of the slope.
    excluded : tuple of str
        Models left out of the fit, each with the reason (failed or unconverged runs).
    """

    group: Mapping[str, Any]
    names: tuple
    depths: tuple
    sigma1: tuple
    L_sigma1: tuple
    equal_share_cv: tuple
    fit: DepthLawFit | None
    verdict: bool | None
    reason: str
    slope_range: tuple
    excluded: tuple = field(default=())

    @property
    def slope(self) -> float | None:
        """The fitted slope ``b`` (None without a fit)."""
        return None if self.fit is None else self.fit.slope

    @property
    def ci(self) -> tuple[float, float] | None:
        """The confidence interval of the slope (None without a fit)."""
        return None if self.fit is None else (self.fit.ci_low, self.fit.ci_high)

    def to_dict(self) -> dict:
        """Plain JSON-ready dict."""
        return {
            "group": {k: _json(v) for k, v in self.group.items()},
            "models": [
                {"name": n, "depth": L, "sigma1_mean": _json(s), "L_sigma1": _json(ls),
                 "equal_share_cv": None if cv is None else _json(cv)}
                for n, L, s, ls, cv in zip(self.names, self.depths, self.sigma1, self.L_sigma1,
                                           self.equal_share_cv)
            ],
            "fit": None if self.fit is None else self.fit.to_dict(),
            "verdict": self.verdict,
            "reason": self.reason,
            "slope_range": list(self.slope_range),
            "excluded": list(self.excluded),
        }

    def __str__(self) -> str:
        g = ", ".join(f"{k}={v}" for k, v in self.group.items() if k != "source")
        lines = [f"RA4 depth scaling ({g}):"]
        lines.append(f"  {'model':<28} {'L':>5} {'sigma_bar_1':>12} {'L*sigma_bar_1':>14} {'equal-share CV':>15}")
        order = sorted(range(len(self.depths)), key=lambda i: self.depths[i])
        for i in order:
            cv = "-" if self.equal_share_cv[i] is None else f"{self.equal_share_cv[i]:.3g}"
            lines.append(f"  {self.names[i][:28]:<28} {self.depths[i]:>5} {self.sigma1[i]:>12.4g} "
                         f"{self.L_sigma1[i]:>14.4g} {cv:>15}")
        if self.fit is not None:
            f = self.fit
            lines.append(f"  slope b = {f.slope:.4g}, {100 * f.confidence:g}% CI [{f.ci_low:.4g}, {f.ci_high:.4g}], "
                         f"R^2 = {f.r2:.4g}, n = {f.n} (accept {self.slope_range[0]:g} <= b <= "
                         f"{self.slope_range[1]:g})")
        word = {True: "holds", False: "fails", None: "undetermined"}[self.verdict]
        lines.append(f"  RA4 {word}: {self.reason}")
        for why in self.excluded:
            lines.append(f"  excluded: {why}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        s = "None" if self.slope is None else f"{self.slope:.4g}"
        return f"DepthScaling(verdict={self.verdict}, slope={s}, depths={list(self.depths)})"


def _verdict(models: list[_Model], candidates: list[_Model], fit: DepthLawFit | None, low: float,
             high: float) -> tuple[bool | None, str]:
    dead = [m.inactive for m in candidates if m.inactive]
    if dead:
        more = f" (and {len(dead) - 1} more)" if len(dead) > 1 else ""
        return None, dead[0] + more
    depths = sorted({m.depth for m in models})
    if len(depths) < MIN_DEPTHS:
        return None, (f"needs >= {MIN_DEPTHS} distinct depths, got {len(depths)} "
                      f"(L = {', '.join(map(str, depths)) or 'none'})")
    if fit is None:
        return None, "no fit"
    if fit.ci_low <= 0.0 <= fit.ci_high:
        return None, (f"the {100 * fit.confidence:g}% CI of the slope [{fit.ci_low:.3g}, {fit.ci_high:.3g}] "
                      "contains 0: no depth dependence cannot be excluded")
    inside = low <= fit.slope <= high
    return inside, (f"slope b = {fit.slope:.3g} {'in' if inside else 'outside'} [{low:g}, {high:g}]")


def depth_scaling(
    sources: Any,
    *,
    by: Sequence[str] | None = None,
    confidence: float = 0.95,
    slope_range: tuple[float, float] = (-1.3, -0.7),
    include_unconverged: bool = False,
    names: Sequence[str] | None = None,
) -> DepthScaling | list[DepthScaling]:
    """RA4 across models: fit ``log sigma_bar_1 = a + b log L`` and give the verdict.

    Parameters
    ----------
    sources : sequence or SweepResult
        :class:`~ramodel.Simulation` objects, :class:`~ramodel.JacobianSet` objects,
        paths to FORMAT.md ``.npz`` files (mixed freely), or a
        :class:`~ramodel.SweepResult`.
    by : sequence of str, optional
        Keys that define a group. Default: every key that describes the model except
        its depth and seed: for simulations ``classes``, ``width`` and the config
        (``loss``, ``branch_factors``, ``skip``, ``weight_decay``, ...); for files
        ``classes``, ``width`` and the meta keys ``architecture``, ``skip_family``,
        ``dataset``, ``loss``, ... when present; for a sweep its config columns.
        ``by=()`` fits every source together.
    confidence : float, default 0.95
        Level of the slope's confidence interval.
    slope_range : (float, float), default (-1.3, -0.7)
        RA4 holds when the slope lies in it (METRICS.md default).
    include_unconverged : bool, default False
        Fit simulations that did not reach their ``tol`` too. By default they are left
        out and listed in :attr:`DepthScaling.excluded`: a run stopped early has not
        reached the critical point the law is about.
    names : sequence of str, optional
        One display name per source (default: the file name, or ``source i (L = ...)``).

    Returns
    -------
    DepthScaling or list of DepthScaling
        One result when all sources form one group, else one per group, in order of
        first appearance.

    Raises
    ------
    TypeError
        For a source of an unknown type.
    ValueError
        For empty sources, a bad ``slope_range`` or ``confidence``, or an unknown ``by``
        key.

    Notes
    -----
    The verdict is None (undetermined) with fewer than 3 distinct depths, when any
    model's branches are inactive (``sigma_1 < 1e-6 max(1, |M_l|)``, or a trivial
    critical point), or when the slope's confidence interval contains 0; see the
    module docstring for why each rule is there.

    Examples
    --------
    >>> import ramodel
    >>> sims = [ramodel.simulate(depth=L, classes=2, width=4, branch_factors=2) for L in (2, 4, 8)]
    >>> ra4 = ramodel.depth_scaling(sims)
    >>> ra4.verdict, round(ra4.slope, 1)
    (True, -0.9)
    """
    low, high = slope_range if isinstance(slope_range, (tuple, list)) and len(slope_range) == 2 else (None, None)
    if low is None or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                              for v in (low, high)) or low > high:
        raise ValueError(f"slope_range must be a pair (low, high) of finite numbers with low <= high, got {slope_range!r}")
    confidence = check_positive_float("confidence", confidence)
    if confidence >= 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    models = _models(sources, names)
    if by is not None:
        if isinstance(by, str):
            by = (by,)
        known = set().union(*(m.key for m in models))
        unknown = [b for b in by if b not in known]
        if unknown:
            raise ValueError(f"by has unknown keys {unknown}; the sources have {sorted(known)}")
    groups: dict[Any, list[_Model]] = {}
    keys: dict[Any, dict] = {}
    for m in models:
        key = m.key if by is None else {b: m.key.get(b) for b in by}
        h = _hashable(key)
        groups.setdefault(h, []).append(m)
        keys.setdefault(h, key)
    results = []
    for h, members in groups.items():
        def keep(m: _Model) -> bool:
            return not m.excluded or (include_unconverged and "did not converge" in m.excluded)

        excluded = [m.excluded for m in members if not keep(m)]
        candidates = [m for m in members if keep(m)]
        used = [m for m in candidates if m.sigma1 is not None]
        fit = None
        if len(used) >= 3 and len({m.depth for m in used}) >= 2:
            fit = fit_depth_law([m.depth for m in used], [m.sigma1 for m in used], confidence=confidence)
        verdict, reason = _verdict(used, candidates, fit, float(low), float(high))
        results.append(DepthScaling(
            group=MappingProxyType(dict(keys[h])),
            names=tuple(m.name for m in used),
            depths=tuple(m.depth for m in used),
            sigma1=tuple(m.sigma1 for m in used),
            L_sigma1=tuple(m.depth * m.sigma1 for m in used),
            equal_share_cv=tuple(m.cv for m in used),
            fit=fit,
            verdict=verdict,
            reason=reason,
            slope_range=(float(low), float(high)),
            excluded=tuple(excluded),
        ))
    return results[0] if len(results) == 1 else results
