"""The result types of :func:`ramodel.theory.check`: :class:`TheoryMeasure` and :class:`TheoryReport`."""

from __future__ import annotations

import html
import json
import os
import pathlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from .._format import (
    frozen_copy,
    html_table,
    json_array,
    json_float,
    number,
    text_table,
)
from .._io import atomic_write_text
from ..metrics import Spread

# ------------------------------------------------------------------------- results
# JSON-safe numbers and frozen copies: one copy, in ramodel._format.
_json_float = json_float
_json_array = json_array
_frozen = frozen_copy


@dataclass(frozen=True, eq=False)
class TheoryMeasure:
    """One theorem measure of METRICS.md ("Measuring the theorems"), with its chance level.

    Samples are one per row (a layer, a pair of layers, or the whole depth) and input.

    Attributes
    ----------
    name : str
        e.g. ``"asymmetry"``.
    theorem : str
        ``"T1"`` .. ``"T6"``, or ``"fit"`` for the comparison with the fitted model.
    formula : str
        The definition, in METRICS.md notation.
    value : float
        Median over every (row, input) sample.
    spread : Spread
        Distribution of all samples: over inputs and over layers.
    worst : float
        The sample farthest from ``predicted`` (the largest when ``relation`` is ``"<="``
        or nothing is predicted).
    per_layer : ndarray, shape (rows,)
        Median over inputs of each row (NaN where every input is undefined).
    per_input : ndarray, shape (n,)
        Median over rows of each input (``n = 1`` for input-independent Jacobians).
    rows : tuple of str
        What each row is: ``"3"`` (layer 3), ``"3,4"`` (layers 3 and 4), ``"1..L"``.
    samples : ndarray, shape (rows, n)
        Every sample, NaN where undefined (a zero Jacobian, a zero vector).
    chance : float or None
        Mean over the baseline draws of ``value`` with every ``J_l`` replaced by
        ``Q1 J_l Q2^T`` (see :func:`check`); None when not drawn.
    chance_std : float or None
        Standard deviation of that value over the draws.
    predicted : float or None
        The value where the theorem's conclusion holds; None when the theorem says nothing
        for this model (e.g. T3 with non-identity skips).
    relation : {"=", "<="}
        How a sample compares with ``predicted`` where the theorem holds.
    condition : str
        The hypotheses under which ``predicted`` holds.
    excluded : int
        Undefined samples (NaN) left out of every statistic.
    note : str
        Provenance that changes how to read the number (e.g. "from factors").
    """

    name: str
    theorem: str
    formula: str
    value: float
    spread: Spread
    worst: float
    per_layer: np.ndarray
    per_input: np.ndarray
    rows: tuple
    samples: np.ndarray
    chance: float | None
    chance_std: float | None
    predicted: float | None
    relation: str
    condition: str
    excluded: int = 0
    note: str = ""

    @property
    def deviation(self) -> float | None:
        """Largest distance of a sample from ``predicted`` (0 when every sample satisfies ``relation``)."""
        if self.predicted is None:
            return None
        s = self.samples[~np.isnan(self.samples)]
        if self.relation == "<=":
            return float(max(0.0, np.max(s) - self.predicted))
        return float(np.max(np.abs(s - self.predicted)))

    def to_dict(self) -> dict:
        """Plain JSON-ready dict (NaN as None, inf as ``"inf"``)."""
        return {
            "name": self.name,
            "theorem": self.theorem,
            "formula": self.formula,
            "value": _json_float(self.value),
            "spread": self.spread.to_dict(),
            "worst": _json_float(self.worst),
            "per_layer": _json_array(self.per_layer),
            "per_input": _json_array(self.per_input),
            "rows": list(self.rows),
            "samples": _json_array(self.samples),
            "chance": _json_float(self.chance),
            "chance_std": _json_float(self.chance_std),
            "predicted": _json_float(self.predicted),
            "relation": self.relation,
            "condition": self.condition,
            "deviation": _json_float(self.deviation),
            "excluded": self.excluded,
            "note": self.note,
        }


def _fmt(v) -> str:
    return number(v, digits=3, sci_digits=2, high=1e4, zero="0")


def _predicted_text(m: TheoryMeasure) -> str:
    if m.predicted is None:
        return "n/a"
    return ("<= " if m.relation == "<=" else "") + _fmt(m.predicted)


@dataclass(frozen=True, eq=False)
class TheoryReport:
    """The theorems of MODEL.md §3 measured on one model, each next to its chance level.

    Attributes
    ----------
    measures : Mapping[str, TheoryMeasure]
        In table order: T1 ``numerical_rank``, ``energy_top_C``; T2 ``chain_residual``,
        ``classifier_residual``; T3 ``asymmetry``, ``depth_spread``, ``psd_defect``,
        ``closed_form_error``; T4 ``gain_share_error``; T5 ``linearity``; T6
        ``skip_asymmetry``. Those that could not be computed are in ``unavailable``.
    unavailable : Mapping[str, str]
        Measure name -> why it was not computed.
    fit : Mapping[str, TheoryMeasure]
        With a fitted model: ``subspace_alignment_left``, ``subspace_alignment_right``
        and ``sigma_ratio_i`` for ``i <= k``; empty otherwise.
    fitted : TheoryReport or None
        The fitted model's own measures (no chance draws).
    info : Mapping[str, Any]
        Sizes, layout, skips, loss, weight decays, the baseline's draws and seed,
        ``dtype`` (of the input) and ``computed_in``, ``tol`` (of the verdicts).
    verdicts : Mapping[str, bool or None]
        ``"T1"`` .. ``"T6"``: True when every measure of the theorem lies within ``tol``
        of its prediction, False when one does not, None (undetermined) when the
        theorem says nothing here or the test cannot tell (see :func:`check`, Notes).
    reasons : Mapping[str, str]
        One line per verdict saying why.
    """

    measures: Mapping[str, TheoryMeasure]
    unavailable: Mapping[str, str]
    fit: Mapping[str, TheoryMeasure]
    fitted: TheoryReport | None
    info: Mapping[str, Any]
    verdicts: Mapping[str, bool | None] = field(default_factory=lambda: MappingProxyType({}))
    reasons: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    # ------------------------------------------------------------------ export
    def to_dict(self) -> dict:
        """JSON-ready dict: plain floats, ints, strings, lists, None (NaN), ``"inf"``."""
        return {
            "info": json.loads(json.dumps(dict(self.info), default=str)),
            "verdicts": dict(self.verdicts),
            "reasons": dict(self.reasons),
            "measures": {k: m.to_dict() for k, m in self.measures.items()},
            "unavailable": dict(self.unavailable),
            "fit": {k: m.to_dict() for k, m in self.fit.items()},
            "fitted": None if self.fitted is None else self.fitted.to_dict(),
        }

    def save(self, path: str | os.PathLike) -> pathlib.Path:
        """Write :meth:`to_dict` as JSON to ``path``, atomically.

        The text is written to a temporary file in the target folder, flushed and
        fsynced, then moved over ``path`` with ``os.replace``: an interrupted save never
        leaves a partial file under the final name.

        Raises
        ------
        FileNotFoundError
            If the folder does not exist.
        IsADirectoryError
            If ``path`` is a folder.
        """
        from ..report import _save_path

        target = _save_path(path)
        text = json.dumps(self.to_dict(), indent=2, allow_nan=False)  # before touching the disk
        atomic_write_text(target, text, action="save the report to")
        return pathlib.Path(path)

    # ----------------------------------------------------------------- display
    def _verdict_lines(self) -> list[str]:
        if not self.verdicts:
            return []
        word = {True: "holds", False: "fails", None: "undetermined"}
        lines = [f"verdicts (tol {_fmt(self.info.get('tol'))}): "
                 + ", ".join(f"{t} {word[v]}" for t, v in self.verdicts.items())]
        lines += [f"  {t} {word[v]}: {self.reasons.get(t, '')}" for t, v in self.verdicts.items()]
        return lines

    def _header(self) -> str:
        i = self.info
        dep = "per-input" if i["input_dependent"] else "input-independent"
        return (
            f"Theorem measures ({i['source']}): L={i['depth']}, N={i['inputs']}, d={i['width']}, "
            f"C={i['classes']}, {i['layout']} {dep} Jacobians, skips {i['skips']}, "
            f"k={i['branch_factors']}, loss {i['loss']}"
        )

    def _table(self) -> list[tuple[str, ...]]:
        head = ["theorem", "measure", "value", "worst", "chance", "predicted"]
        if self.fitted is not None:
            head.append("fitted")
        rows = [tuple(head)]
        for name, m in self.measures.items():
            row = [m.theorem, name, _fmt(m.value), _fmt(m.worst), _fmt(m.chance), _predicted_text(m)]
            if self.fitted is not None:
                f = self.fitted.measures.get(name)
                row.append(_fmt(None if f is None else f.value))
            rows.append(tuple(row))
        return rows

    def _layer_table(self) -> list[tuple[str, ...]]:
        per = [(n, m) for n, m in self.measures.items() if len(m.rows) > 1 and n != "chain_residual"]
        L = self.info["depth"]
        if not per:
            return []
        rows = [("layer",) + tuple(n for n, _ in per)]
        for l in range(L):
            rows.append((str(l + 1),) + tuple(_fmt(m.per_layer[l]) for _, m in per))
        return rows

    def _fit_table(self) -> list[tuple[str, ...]]:
        if not self.fit:
            return []
        names = list(self.fit)
        rows = [("layer",) + tuple(names)]
        for l in range(self.info["depth"]):
            rows.append((str(l + 1),) + tuple(_fmt(self.fit[n].per_layer[l]) for n in names))
        rows.append(("chance",) + tuple(_fmt(self.fit[n].chance) for n in names))
        return rows

    @staticmethod
    def _lines(rows) -> list[str]:
        return text_table(rows, indent="  ")

    def __str__(self) -> str:
        i = self.info
        lines = [self._header()]
        if i["chance_draws"]:
            lines.append(
                f"chance: mean of {i['chance_draws']} draws (seed {i['seed']}) with J_l -> Q1 J_l Q2^T, "
                f"Haar Q1, Q2 {i['rotation']}"
            )
        lines.append("value = median over layers and inputs; worst = sample farthest from the prediction")
        table = self._table()
        lines += self._lines(table) if len(table) > 1 else ["  (no measure could be computed)"]
        layer = self._layer_table()
        if layer:
            lines.append("per layer (median over inputs):")
            lines += self._lines(layer)
        chain = self.measures.get("chain_residual")
        if chain is not None:
            lines.append("chain_residual per pair (l, l+1): " + ", ".join(_fmt(v) for v in chain.per_layer))
        fit = self._fit_table()
        if fit:
            lines.append(f"fitted UJM (k = {i['fit_k']}, chance k/d = {_fmt(i['fit_k'] / i['width'])}; "
                         "median over inputs):")
            lines += self._lines(fit)
        by_reason: dict[str, list[str]] = {}
        for name, why in self.unavailable.items():
            by_reason.setdefault(why, []).append(name)
        for why, names in by_reason.items():
            lines.append(f"  n/a: {', '.join(names)}: {why}")
        by_note: dict[str, list[str]] = {}
        for name, m in {**self.measures, **self.fit}.items():
            if m.note:
                by_note.setdefault(m.note, []).append(name)
        for note, names in by_note.items():
            lines.append(f"  note: {', '.join(names)}: {note}")
        lines += self._verdict_lines()
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"TheoryReport(L={self.info['depth']}, N={self.info['inputs']}, d={self.info['width']}, "
            f"measures={len(self.measures)}, unavailable={len(self.unavailable)}, fitted={self.fitted is not None})"
        )

    def _repr_html_(self) -> str:
        esc = html.escape

        table = html_table
        parts = [f"<div><p><b>{esc(self._header())}</b></p>", table(self._table())]
        if self.verdicts:
            word = {True: "holds", False: "fails", None: "undetermined"}
            parts.append(table([("theorem", "verdict", "reason")]
                               + [(t, word[v], self.reasons.get(t, "")) for t, v in self.verdicts.items()]))
        if self._layer_table():
            parts += ["<p>per layer (median over inputs)</p>", table(self._layer_table())]
        if self.fit:
            parts += [f"<p>fitted UJM (k = {self.info['fit_k']})</p>", table(self._fit_table())]
        if self.unavailable:
            parts.append(table([("measure", "not computed because")] + list(self.unavailable.items())))
        parts.append("</div>")
        return "".join(parts)
