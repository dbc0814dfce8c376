"""The table of metrics: each one declared once, here.

:func:`ramodel.analyze` and the text report loop over :data:`METRICS`: the display
order, the groups by property, what each metric needs from the source and the verdict
rules of RA1-RA3 all come from it. A new metric is one function in its family's module
(``trajectory``, ``alignment``, ``rank``, ``scaling``, ``collapse``), computed in that
family's group helper, and one :class:`MetricSpec` row here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType
from typing import Any

from .alignment import (
    across_input_alignment,
    alignment_lr,
    cosine_lr,
    cross_depth_alignment,
    jacobian_alignment_matrix,
)
from .collapse import nc1, nc2_equinorm, nc2_etf, nc3, nc4
from .rank import energy_top_c, numerical_rank, stable_rank
from .scaling import sigma1_cv, sigma1_mean
from .trajectory import collinearity, equispacing, progress_r2, step_ratio

__all__ = ["FAMILIES", "METRICS", "MetricSpec", "Verdict", "by_name", "groups", "needing"]

#: The properties (and neural collapse, which has no verdict), in display order.
FAMILIES = ("RA1", "RA2", "RA3", "RA4", "NC")


@dataclass(frozen=True)
class Verdict:
    """How one metric enters its property's verdict: ``metric.value op threshold``.

    Attributes
    ----------
    op : {">=", "<="}
    threshold : callable
        ``threshold(thresholds, ctx) -> float``, with ``thresholds`` a
        :class:`ramodel.report.Thresholds` and ``ctx`` a mapping with ``C`` (classes) and
        ``chance`` (``k / d``).
    rule : callable
        ``rule(thresholds, ctx) -> str``, the rule in words (``Check.rule``).
    """

    op: str
    threshold: Callable[[Any, Any], float]
    rule: Callable[[Any, Any], str]


@dataclass(frozen=True)
class MetricSpec:
    """One metric: its key, property, function, inputs, chance level and verdict rule.

    Attributes
    ----------
    name : str
        The key in :attr:`ramodel.RAReport.metrics` (and a function of that name in
        :mod:`ramodel.metrics`).
    property : str
        One of :data:`FAMILIES`.
    function : callable
        Computes the metric on its own (the arguments of the family: ``J``,
        ``representations`` or ``features, labels, classes``).
    needs : tuple of str
        The FORMAT.md keys it reads.
    chance : str or None
        Its chance level, in words (None: no chance level).
    verdict : Verdict or None
        Its part in the property's verdict (None: reported, not tested).
    """

    name: str
    property: str
    function: Callable
    needs: tuple[str, ...]
    chance: str | None = None
    verdict: Verdict | None = None


def _ra2_rule(th: Any, ctx: Any) -> str:
    rule = f"mean >= max({th.ra2_alignment:g}, {th.ra2_chance_multiple:g} x chance"
    cap = th.ra2_chance_cap
    return rule + (")" if cap is None else f" capped at chance + {cap:g}(1 - chance))")


_RA1 = ("representations",)
_J = ("jacobians",)
_NC = ("representations", "labels")
_K_OVER_D = "k/d (independent uniformly random k-subspaces)"
_RA2 = Verdict(">=", lambda th, ctx: th.ra2_required(ctx["chance"]), _ra2_rule)

#: Every metric of :func:`ramodel.analyze`, in display order.
METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("collinearity", "RA1", collinearity, _RA1, verdict=Verdict(
        ">=", lambda th, ctx: th.ra1_collinearity, lambda th, ctx: f"median >= {th.ra1_collinearity:g}")),
    MetricSpec("equispacing", "RA1", equispacing, _RA1, verdict=Verdict(
        ">=", lambda th, ctx: th.ra1_equispacing, lambda th, ctx: f"median >= {th.ra1_equispacing:g}")),
    MetricSpec("step_ratio", "RA1", step_ratio, _RA1),
    MetricSpec("progress_r2", "RA1", progress_r2, _RA1),
    MetricSpec("A_left", "RA2", partial(cross_depth_alignment, side="left"), _J, _K_OVER_D, _RA2),
    MetricSpec("A_right", "RA2", partial(cross_depth_alignment, side="right"), _J, _K_OVER_D, _RA2),
    MetricSpec("A_left_adjacent", "RA2", partial(cross_depth_alignment, side="left", pairs="adjacent"), _J,
               _K_OVER_D),
    MetricSpec("A_right_adjacent", "RA2", partial(cross_depth_alignment, side="right", pairs="adjacent"), _J,
               _K_OVER_D),
    MetricSpec("a_lr", "RA2", alignment_lr, _J, _K_OVER_D),
    MetricSpec("cos_lr", "RA2", cosine_lr, _J, "0 (uniformly random unit vectors)"),
    MetricSpec("K", "RA2", jacobian_alignment_matrix, _J, _K_OVER_D + " when rank J_j <= k"),
    MetricSpec("K_adjacent", "RA2", partial(jacobian_alignment_matrix, pairs="adjacent"), _J,
               _K_OVER_D + " when rank J_j <= k"),
    MetricSpec("across_inputs_left", "RA2", partial(across_input_alignment, side="left"), _J, _K_OVER_D),
    MetricSpec("across_inputs_right", "RA2", partial(across_input_alignment, side="right"), _J, _K_OVER_D),
    MetricSpec("numerical_rank", "RA3", numerical_rank, _J, verdict=Verdict(
        "<=", lambda th, ctx: float(th.max_rank(ctx["C"])), lambda th, ctx: f"median <= {th.max_rank(ctx['C'])}")),
    MetricSpec("energy_top_C", "RA3", energy_top_c, _J, verdict=Verdict(
        ">=", lambda th, ctx: th.ra3_energy, lambda th, ctx: f"median >= {th.ra3_energy:g}")),
    MetricSpec("stable_rank", "RA3", stable_rank, _J),
    MetricSpec("sigma1_cv", "RA4", sigma1_cv, _J),
    MetricSpec("sigma1_mean", "RA4", sigma1_mean, _J),
    MetricSpec("nc1", "NC", nc1, _NC),
    MetricSpec("nc2_equinorm", "NC", nc2_equinorm, _NC),
    MetricSpec("nc2_etf", "NC", nc2_etf, _NC),
    MetricSpec("nc3", "NC", nc3, _NC + ("classifier",)),
    MetricSpec("nc4", "NC", nc4, _NC + ("classifier",)),
)

_BY_NAME = MappingProxyType({m.name: m for m in METRICS})


def by_name(name: str) -> MetricSpec:
    """The row of ``name``; ``KeyError`` lists the known names."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r}; known: {list(_BY_NAME)}") from None


def groups() -> dict[str, tuple[str, ...]]:
    """``{property: metric names}`` in display order."""
    return {p: tuple(m.name for m in METRICS if m.property == p) for p in FAMILIES}


def needing(key: str) -> tuple[str, ...]:
    """The metrics that read the FORMAT.md ``key``."""
    return tuple(m.name for m in METRICS if key in m.needs)
