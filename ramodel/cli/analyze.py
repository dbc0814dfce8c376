"""``ramodel analyze``: RA reports of Jacobian files (:func:`ramodel.analyze`), side by side.

Only parsing and printing: the work is done by the library functions named in the help.
"""

from __future__ import annotations

import argparse
import pathlib

from ._common import (
    EXIT_OK,
    CLIError,
    _html_target,
    _json_text,
    _key_value,
    _load_sets,
    _names_for,
    _print,
    _table_text,
)

NAME = 'analyze'
HELP = 'RA reports of exported Jacobian files, side by side'
DESCRIPTION = (
    'Measure RA1-RA4 and neural collapse (ramodel.analyze) on Jacobian files (spec/FORMAT.md).'
)
EXAMPLES = """\
examples:
  ramodel analyze net.npz
  ramodel analyze plain.npz entangled.npz --html report.html      # side by side
  ramodel analyze net.npz --k 2 --threshold ra2_alignment=0.6 --json

FILE is a Jacobian file (spec/FORMAT.md), e.g. from 'ramodel train', from
ramodel.torch.export_jacobians, or 'ramodel simulate --save-jacobians'.

RA4 is a law across depths: one file's RA4 verdict is undetermined (its CV of sigma_1 is
shown as the "equal share" diagnostic). Given files that differ in depth, analyze also
prints the fit of log sigma_bar_1 on log L (ramodel.depth_scaling) with its confidence
interval, L * sigma_bar_1 per file and the RA4 verdict:
  ramodel analyze net_L4.npz net_L8.npz net_L16.npz"""


def configure(p: argparse.ArgumentParser) -> None:
    """Add the options of ``ramodel analyze`` to ``p``."""
    p.add_argument("files", nargs="+", type=pathlib.Path, metavar="FILE")
    p.add_argument("--k", type=int, help="dimension of the RA2 subspaces (default C)")
    p.add_argument("--tau", type=float, help="relative threshold of the numerical rank (default 1e-3)")
    p.add_argument("--threshold", action="append", type=_key_value, metavar="NAME=VALUE",
                   help="override a verdict threshold of ramodel.Thresholds, e.g. ra1_collinearity=0.95")
    p.add_argument("--html", type=pathlib.Path, metavar="PATH", help="also write a self-contained HTML page")

def run(args: argparse.Namespace) -> int:
    from ..report import Thresholds, analyze

    html_path = _html_target(args.html)
    thresholds = None
    if args.threshold:
        fields = set(Thresholds.__dataclass_fields__)
        bad = sorted(k for k, _ in args.threshold if k not in fields)
        if bad:
            raise CLIError(f"--threshold: unknown name(s) {bad}; valid names are {sorted(fields)}")
        thresholds = Thresholds(**dict(args.threshold))
    kwargs = {"k": args.k, "thresholds": thresholds}
    if args.tau is not None:
        kwargs["tau"] = args.tau
    sets = _load_sets(args.files)
    names = _names_for(args.files)
    reports = []
    for name, js in zip(names, sets):
        try:
            reports.append(analyze(js, **kwargs))
        except (ValueError, TypeError) as exc:
            raise CLIError(f"{name}: {exc}") from None
    payload = {"command": "analyze", "files": [
        {"path": str(f), "jacobian_set": js.to_dict(), "report": rep.to_dict()}
        for f, js, rep in zip(args.files, sets, reports)]}
    scaling = []
    if len({js.depth for js in sets}) > 1:
        from ..scaling import depth_scaling

        fits = depth_scaling(sets, names=names)
        scaling = fits if isinstance(fits, list) else [fits]
        payload["depth_scaling"] = [f.to_dict() for f in scaling]
    if html_path is not None:
        from .. import html_report

        title = "ramodel RA report: " + ", ".join(names)
        html_report.write_html(html_report.analysis_page(list(zip(names, sets, reports)), title=title,
                                                         depth_scaling=scaling), html_path)
        payload["html"] = str(html_path)
    if args.json:
        _print(_json_text(payload))
        return EXIT_OK
    from ..html_report import ra_comparison_rows

    parts = []
    for name, js, rep in zip(names, sets, reports):
        parts.append(f"== {name}: {js!r}\n{rep}")
    if len(reports) > 1:
        parts.append("== side by side\n" + _table_text(ra_comparison_rows(reports, names), "  "))
    for fit in scaling:
        parts.append(f"== RA4 across depths\n{fit}")
    if html_path is not None:
        parts.append(f"wrote {html_path}")
    _print("\n\n".join(parts))
    return EXIT_OK
