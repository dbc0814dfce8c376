"""Self-contained one-page HTML reports: metric tables with the figures embedded as PNG.

Design constraints, in order:

1. A page is one file that opens anywhere, offline: no scripts, no style sheets or
   fonts from elsewhere, and every figure inline as a ``data:image/png;base64`` URI.
   It can be mailed, attached to a CI run or archived next to the data it describes.
2. The page reads the result objects (``Simulation``, ``RAReport``, ``TheoryReport``,
   ``JacobianSet``) through their public fields and their own ``_repr_html_`` tables,
   so a notebook and the page show the same numbers.
3. Figures come from :mod:`ramodel.plots` (fresh ``Figure`` objects, no pyplot state);
   the two theory panels that :mod:`ramodel.plots` does not have are built here.
4. Output is deterministic for a given input (no timestamps), and
   :func:`write_html` writes atomically (temporary file in the target folder, then
   ``os.replace``).

Sources are anything shaped like ``spec/FORMAT.md``, read by attribute or by key:
``jacobians`` ``(L, d, d)`` or ``(L, N, d, d)``, or factors ``U (L, N, d, k)``,
``S (L, N, k)``, ``V (L, N, d, k)``; ``labels (N,)``; ``classes``; optionally
``representations (L+1, N, d)``.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._format import html_table, number, verdict_word
from ._io import atomic_write_text
from ._source import as_source, get_field
from .backend import to_numpy

__all__ = [
    "figure_png",
    "figure_data_uri",
    "layer_spectra",
    "ra_figures",
    "theory_figures",
    "ra_comparison_rows",
    "theory_comparison_rows",
    "simulation_page",
    "analysis_page",
    "theory_page",
    "write_html",
    "SPECTRUM_INPUTS",
]

#: Inputs whose spectra are averaged for the RA3 figure of per-input Jacobians: enough for
#: a stable mean, and it keeps the figure's cost at ``L * 64`` SVDs for any N.
SPECTRUM_INPUTS = 64

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 70em;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.25em; border-bottom: 1px solid #ccc; padding-bottom: .2em; }
h3 { font-size: 1.05em; }
table { border-collapse: collapse; margin: .6em 0 1em 0; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.pass { color: #176d2c; } .fail { color: #b00020; font-weight: bold; } .na { color: #777; }
figure { display: inline-block; margin: .5em 1em .5em 0; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .85em; color: #555; max-width: 40em; }
p.meta, p.note { color: #555; font-size: .9em; }
pre { background: #f7f7f7; padding: .6em; overflow-x: auto; font-size: .85em; }
"""


# --------------------------------------------------------------------------- figures
def figure_png(fig, *, dpi: int = 100) -> bytes:
    """A Matplotlib figure as PNG bytes, without a ``Software`` chunk (deterministic bytes).

    Examples
    --------
    >>> from matplotlib.figure import Figure
    >>> figure_png(Figure(figsize=(1, 1)), dpi=20)[:8]
    b'\\x89PNG\\r\\n\\x1a\\n'
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


def figure_data_uri(fig, *, dpi: int = 100) -> str:
    """A Matplotlib figure (or PNG bytes) as a ``data:image/png;base64,...`` URI.

    Parameters
    ----------
    fig : matplotlib.figure.Figure or bytes
        A figure, or the PNG bytes of one (e.g. from :func:`figure_png`, to render once
        for both a file and a page).
    dpi : int, default 100
        Resolution of a figure; 100 keeps a page with a dozen figures near 1 MB.

    Returns
    -------
    str

    Examples
    --------
    >>> import base64
    >>> from matplotlib.figure import Figure
    >>> fig = Figure(figsize=(1, 1))
    >>> uri = figure_data_uri(fig, dpi=20)
    >>> uri.startswith("data:image/png;base64,"), base64.b64decode(uri.split(",", 1)[1])[:8]
    (True, b'\\x89PNG\\r\\n\\x1a\\n')
    """
    png = bytes(fig) if isinstance(fig, (bytes, bytearray)) else figure_png(fig, dpi=dpi)
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("fig must be a Matplotlib figure or PNG bytes")
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


_field = get_field  # the reader of ramodel._source (kept under its old name)


def _host(a: Any) -> np.ndarray | None:
    return None if a is None else np.asarray(to_numpy(a), dtype=float)


def layer_spectra(source: Any, *, max_inputs: int = SPECTRUM_INPUTS) -> np.ndarray | None:
    """Singular values of every layer's Jacobian, averaged over inputs: shape ``(L, r)``.

    Dense per-input Jacobians use ``max_inputs`` inputs spread evenly over N; factors give
    their stored ``S`` (``r = k``). None when the source holds no Jacobians.
    """
    # Lenient on purpose (any partial source draws what it has): fields, not as_source.
    J = _host(_field(source, "jacobians"))
    if J is not None:
        if J.ndim == 3:
            return np.linalg.svd(J, compute_uv=False)
        pick = np.unique(np.linspace(0, J.shape[1] - 1, min(max_inputs, J.shape[1])).round().astype(int))
        return np.linalg.svd(J[:, pick], compute_uv=False).mean(axis=1)
    S = _host(_field(source, "S"))
    if S is None:
        return None
    return S if S.ndim == 2 else S.mean(axis=1)


def ra_figures(source: Any, report) -> list[tuple[str, Any]]:
    """The RA figures of one model, as ``(caption, Figure)`` pairs.

    - RA2: the alignment matrix ``K`` (``report.metrics["K"].detail``, when ``L >= 2``);
    - RA3: singular values per layer (see :func:`layer_spectra`);
    - RA1: trajectories of four inputs (when the source has representations).

    Parameters
    ----------
    source : Simulation, JacobianSet or Mapping
        What ``report`` was computed from.
    report : RAReport

    Returns
    -------
    list of (str, matplotlib.figure.Figure)
    """
    from . import plots

    src = as_source(source)
    out = []
    K = report.metrics.get("K")
    if K is not None and K.detail is not None:
        out.append((
            "RA2: alignment K[i, j] of the top singular pair of layer i with the Jacobian of layer j "
            "(1 = perfectly aligned; averaged over inputs).",
            plots.alignment_heatmap(K.detail),
        ))
    S = layer_spectra(src)
    if S is not None:
        note = "" if S.shape[1] >= report.info["width"] else f" (the stored top {S.shape[1]})"
        out.append((
            f"RA3: singular values of every J_l{note}, mean over inputs; the dotted line marks C = "
            f"{report.info['classes']}.",
            plots.singular_value_spectra(S, classes=int(report.info["classes"])),
        ))
    R = src.representations
    if R is not None:
        out.append((
            "RA1: trajectories h_0 .. h_L of four inputs, each on its own top two principal directions.",
            # Four panels, not plots' default six: the figure's layout dominates a page's cost.
            plots.trajectories(R, labels=src.labels, inputs=4),
        ))
    return out


def theory_figures(report) -> list[tuple[str, Any]]:
    """Per-layer theorem measures against their chance levels, as ``(caption, Figure)`` pairs.

    - the measures that vanish where their theorem holds (asymmetry, PSD defect, ...), per
      layer on a log axis, each with its chance level dashed;
    - with a fitted model: the subspace alignments with the fitted UJM per layer, against
      the chance ``k/d``.

    Parameters
    ----------
    report : TheoryReport

    Returns
    -------
    list of (str, matplotlib.figure.Figure)
    """
    from matplotlib.figure import Figure

    out = []
    L = int(report.info["depth"])
    layers = np.arange(1, L + 1)
    zero = [(n, m) for n, m in report.measures.items()
            if m.predicted == 0 and len(m.per_layer) == L and np.isfinite(m.per_layer).any()]
    if zero:
        fig = Figure(figsize=(6.4, 3.8))
        ax = fig.add_subplot()
        finite = np.concatenate([m.per_layer[np.isfinite(m.per_layer)] for _, m in zero])
        positive = finite[finite > 0]
        # 0 is what a converged model gives: draw it at a floor below every measured value.
        floor = max(float(positive.min()) / 10 if positive.size else 1e-16, 1e-300)
        for name, m in zero:
            line, = ax.semilogy(layers, np.maximum(m.per_layer, floor), "o-", ms=4, label=f"{m.theorem} {name}")
            if m.chance is not None and math.isfinite(m.chance) and m.chance > 0:
                ax.axhline(m.chance, ls="--", lw=0.8, color=line.get_color())
        ax.set_xlabel("layer l")
        ax.set_ylabel("median over inputs")
        ax.set_xticks(layers if L <= 16 else np.unique(np.linspace(1, L, 9).round()))
        ax.set_title("Theorem measures per layer (dashed: chance)")
        ax.legend(fontsize="x-small", ncol=2)
        fig.tight_layout()
        out.append(("Measures that are 0 where their theorem holds, per layer (solid), against the "
                    "random-rotation baseline (dashed, same colour). Zeros are drawn at a floor.", fig))
    aligned = [(n, m) for n, m in report.fit.items() if n.startswith("subspace_alignment")]
    if aligned:
        fig = Figure(figsize=(5.2, 3.6))
        ax = fig.add_subplot()
        for name, m in aligned:
            ax.plot(layers, m.per_layer, "o-", ms=4, label=name.replace("subspace_alignment_", ""))
        k = report.info.get("fit_k")
        if k:
            chance = k / report.info["width"]
            ax.axhline(chance, color="gray", ls=":", label=f"chance k/d = {chance:.3g}")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("layer l")
        ax.set_ylabel("alignment with the fitted UJM")
        ax.set_xticks(layers if L <= 16 else np.unique(np.linspace(1, L, 9).round()))
        ax.set_title("Top-k subspaces: network vs fitted UJM")
        ax.legend(fontsize="small")
        fig.tight_layout()
        out.append(("Alignment |U^T U*|_F^2 / k of each layer's top-k singular subspaces with those of the "
                    "UJM fitted to the same features (1 = identical, k/d = chance).", fig))
    return out


# ---------------------------------------------------------------------------- tables
def _fmt(v: Any) -> str:
    return number(v, digits=4, sci_digits=3, high=1e5, zero="0")


_verdict = verdict_word


def ra_comparison_rows(reports: Sequence, names: Sequence[str], *, reasons: bool = False) -> list[tuple[str, ...]]:
    """Side-by-side table of several RA reports: one row per metric, one column per report.

    Returns a header row ``("measure", "threshold", *names)`` followed by one row per
    metric present in any report (in the reports' order), then one row per verdict
    (``holds``, ``fails`` or ``undetermined``) and, with ``reasons``, one row with each
    verdict's reason. A value under a threshold test is suffixed ``(pass)`` / ``(FAIL)``.

    Examples
    --------
    >>> import numpy as np
    >>> from ramodel.report import analyze
    >>> rep = analyze({"jacobians": np.stack([np.diag([1.0, 0.5, 0.0])] * 3),
    ...                "labels": np.array([0, 1]), "classes": 2})
    >>> rows = ra_comparison_rows([rep, rep], ["a", "b"])
    >>> rows[0], rows[-1]
    (('measure', 'threshold', 'a', 'b'), ('RA4', 'verdict', 'undetermined', 'undetermined'))
    """
    if len(reports) != len(names):
        raise ValueError(f"give one name per report: {len(reports)} reports, {len(names)} names")
    order: list[str] = []
    for rep in reports:
        for name in rep.metrics:
            if name not in order:
                order.append(name)
    checks = [{c.metric: c for c in rep.checks} for rep in reports]
    rule = {}
    for ch in checks:
        for name, c in ch.items():
            rule.setdefault(name, f"{c.op} {_fmt(c.threshold)}")
    rows = [("measure", "threshold", *names)]
    for name in order:
        cells = []
        for rep, ch in zip(reports, checks):
            m = rep.metrics.get(name)
            if m is None:
                cells.append("n/a")
                continue
            c = ch.get(name)
            mark = "" if c is None or c.passed is None else (" (pass)" if c.passed else " (FAIL)")
            cells.append(_fmt(m.value) + mark)
        stat = next((rep.metrics[name].statistic for rep in reports if name in rep.metrics), "value")
        label = name if stat == "value" else f"{name} ({stat})"
        rows.append((label, rule.get(name, "-"), *cells))
    props = []
    for rep in reports:
        for p in rep.verdicts:
            if p not in props:
                props.append(p)
    for p in props:
        rows.append((p, "verdict", *(_verdict(rep.verdicts.get(p)) for rep in reports)))
        if reasons:
            rows.append((p, "reason", *(rep.reasons.get(p, "") for rep in reports)))
    return rows


def depth_scaling_html(fit) -> str:
    """HTML of one :class:`~ramodel.scaling.DepthScaling`: its models, the fit and the RA4 verdict."""
    esc = html.escape
    rows = [("model", "L", "sigma_bar_1", "L * sigma_bar_1", "equal-share CV")]
    for i in sorted(range(len(fit.depths)), key=lambda i: fit.depths[i]):
        cv = fit.equal_share_cv[i]
        rows.append((fit.names[i], str(fit.depths[i]), _fmt(fit.sigma1[i]), _fmt(fit.L_sigma1[i]),
                     "-" if cv is None else _fmt(cv)))
    group = ", ".join(f"{k}={v}" for k, v in fit.group.items() if k != "source")
    parts = [f"<p>{esc(group)}</p>", _table(rows)]
    if fit.fit is not None:
        f = fit.fit
        parts.append(f"<p>slope b = {_fmt(f.slope)}, {100 * f.confidence:g}% CI [{_fmt(f.ci_low)}, "
                     f"{_fmt(f.ci_high)}], R<sup>2</sup> = {_fmt(f.r2)}, n = {f.n}; accepted "
                     f"{fit.slope_range[0]:g} &le; b &le; {fit.slope_range[1]:g}</p>")
    cls = {True: "pass", False: "fail", None: "na"}[fit.verdict]
    parts.append(f'<p>RA4 <span class="{cls}">{esc(_verdict(fit.verdict))}</span>: {esc(fit.reason)}</p>')
    for why in fit.excluded:
        parts.append(f"<p class=\"note\">excluded: {esc(why)}</p>")
    return "".join(parts)


def theory_comparison_rows(reports: Sequence, names: Sequence[str]) -> list[tuple[str, ...]]:
    """Side-by-side table of several theory reports: ``value [chance]`` per measure and report.

    Returns a header row ``("theorem", "measure", "predicted", *names)``, one row per
    measure present in any report, one ``verdict`` row per theorem, and the fitted
    comparisons (``fit``) last.
    """
    if len(reports) != len(names):
        raise ValueError(f"give one name per report: {len(reports)} reports, {len(names)} names")
    order: list[tuple[str, str]] = []
    for rep in reports:
        for group in ("measures", "fit"):
            for name in getattr(rep, group):
                if (group, name) not in order:
                    order.append((group, name))
    order.sort(key=lambda gn: gn[0] == "fit")
    rows = [("theorem", "measure", "predicted", *names)]
    theorems: list[str] = []
    for rep in reports:
        for t in getattr(rep, "verdicts", {}):
            if t not in theorems:
                theorems.append(t)
    verdict_rows = [(t, "verdict", "-", *(_verdict(rep.verdicts[t]) if t in rep.verdicts else "n/a"
                                          for rep in reports)) for t in theorems]
    for group, name in order:
        if group == "fit" and verdict_rows:  # the verdicts close the measures; the fit comes last
            rows += verdict_rows
            verdict_rows = []
        first = next(getattr(r, group)[name] for r in reports if name in getattr(r, group))
        pred = "n/a" if first.predicted is None else ("<= " if first.relation == "<=" else "") + _fmt(first.predicted)
        cells = []
        for rep in reports:
            m = getattr(rep, group).get(name)
            if m is None:
                cells.append("n/a")
            else:
                cells.append(_fmt(m.value) + ("" if m.chance is None else f" [{_fmt(m.chance)}]"))
        rows.append((first.theorem, name, pred, *cells))
    return rows + verdict_rows


def _table(rows: Sequence[Sequence[str]], *, marks: bool = False) -> str:
    return html_table(rows, marks=marks)


def _figures_html(figures: Sequence[tuple[str, Any]], dpi: int) -> str:
    parts = []
    for caption, fig in figures:
        alt = html.escape(caption.split(":", 1)[0], quote=True)
        parts.append(f'<figure><img alt="{alt}" src="{figure_data_uri(fig, dpi=dpi)}">'
                     f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    return "".join(parts)


def _page(title: str, body: Sequence[str]) -> str:
    from . import __version__

    esc = html.escape
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<meta name=\"generator\" content=\"ramodel {esc(__version__)}\">\n"
        f"<title>{esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<h1>{esc(title)}</h1>\n<p class=\"meta\">Written by ramodel {esc(__version__)}. Self-contained: "
        "every figure is embedded in this file.</p>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )


def _names(entries: Sequence) -> list[str]:
    return [str(e[0]) for e in entries]


# ----------------------------------------------------------------------------- pages
def simulation_page(sim, *, report=None, figures=None, title: str | None = None, dpi: int = 100) -> str:
    """One page for a solved UJM: configuration, theorem checks, RA table and figures.

    Parameters
    ----------
    sim : Simulation
    report : RAReport, optional
        Default ``sim.report()``.
    figures : sequence of (caption, Figure or PNG bytes), optional
        Default ``ra_figures(sim, report)``; pass them to reuse figures already rendered.
    title : str, optional
    dpi : int, default 100

    Returns
    -------
    str
        A complete HTML document.
    """
    report = sim.report() if report is None else report
    title = title or f"ramodel simulation: L={sim.depth}, C={sim.classes}, d={sim.width}"
    config = [("option", "value")] + [(str(k), str(v)) for k, v in sim.config.items()]
    body = [
        "<h2>Solution and theorems T1-T3</h2>", sim._repr_html_(),
        "<h2>Residual Alignment (RA1-RA4) and neural collapse</h2>", report._repr_html_(),
        "<h2>Figures</h2>", _figures_html(ra_figures(sim, report) if figures is None else figures, dpi),
        "<h2>Configuration</h2>", _table(config),
    ]
    return _page(title, body)


def analysis_page(entries: Sequence[tuple[str, Any, Any]], *, title: str = "ramodel RA report",
                  dpi: int = 100, depth_scaling: Sequence | None = None) -> str:
    """One page of RA reports for one or more models, side by side.

    Parameters
    ----------
    entries : sequence of (name, source, RAReport)
        ``source`` is what the report was computed from (a ``JacobianSet``, a
        ``Simulation`` or a FORMAT.md mapping); it feeds the figures.
    title : str
    dpi : int, default 100
    depth_scaling : sequence of DepthScaling, optional
        RA4 across the entries' depths (:func:`ramodel.depth_scaling`), shown first.

    Returns
    -------
    str
        A complete HTML document: the RA4 depth fit (when given), a comparison table
        (with two or more entries), then per entry its description, its metric table
        and its figures.
    """
    if not entries:
        raise ValueError("entries must hold at least one (name, source, report)")
    body = []
    for fit in depth_scaling or ():
        body += ["<h2>RA4 across depths</h2>", depth_scaling_html(fit)]
    if len(entries) > 1:
        body += ["<h2>Side by side</h2>",
                 _table(ra_comparison_rows([e[2] for e in entries], _names(entries), reasons=True), marks=True)]
    for name, source, report in entries:
        body.append(f"<h2>{html.escape(str(name))}</h2>")
        describe = getattr(source, "_repr_html_", None)
        if describe is not None:
            body.append(describe())
        body += [report._repr_html_(), _figures_html(ra_figures(source, report), dpi)]
    return _page(title, body)


def theory_page(entries: Sequence[tuple[str, Any, Any]], *, title: str = "ramodel theorem measures",
                dpi: int = 100) -> str:
    """One page of theorem measures (:class:`~ramodel.theory.TheoryReport`) for one or more models.

    Parameters
    ----------
    entries : sequence of (name, source, TheoryReport)
        ``source`` (a ``JacobianSet``, ``Simulation`` or mapping, or None) adds its
        description and the RA2/RA3 figures.
    title : str
    dpi : int, default 100

    Returns
    -------
    str
        A complete HTML document.
    """
    if not entries:
        raise ValueError("entries must hold at least one (name, source, report)")
    body = []
    if len(entries) > 1:
        body += ["<h2>Side by side</h2>",
                 "<p class=\"note\">value [chance]; value = median over layers and inputs.</p>",
                 _table(theory_comparison_rows([e[2] for e in entries], _names(entries)))]
    for name, source, report in entries:
        body.append(f"<h2>{html.escape(str(name))}</h2>")
        describe = getattr(source, "_repr_html_", None)
        if describe is not None:
            body.append(describe())
        body.append(report._repr_html_())
        figures = theory_figures(report)
        if source is not None and _field(source, "labels") is not None:
            from .report import analyze

            try:
                ra = analyze(source)
            except (ValueError, TypeError):  # the RA figures are extras: the theory tables stand alone
                ra = None
            if ra is not None:
                figures += [f for f in ra_figures(source, ra) if not f[0].startswith("RA1")]
        body.append(_figures_html(figures, dpi))
    return _page(title, body)


def write_html(text: str, path: str | os.PathLike) -> pathlib.Path:
    """Write ``text`` to ``path`` (UTF-8), atomically.

    Raises
    ------
    FileNotFoundError
        If the folder of ``path`` does not exist (nothing is written).
    IsADirectoryError
        If ``path`` is a folder.
    """
    return atomic_write_text(path, text)
