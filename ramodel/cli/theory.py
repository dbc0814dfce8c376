"""``ramodel theory``: theorem measures of Jacobian files (:func:`ramodel.theory.check`) next to the fitted UJM.

Only parsing and printing: the work is done by the library functions named in the help.
"""

from __future__ import annotations

import argparse
import pathlib
import warnings
from collections.abc import Mapping

from ._common import (
    EXIT_OK,
    CLIError,
    _html_target,
    _json_text,
    _load_sets,
    _names_for,
    _print,
    _table_text,
)

NAME = 'theory'
HELP = 'theorem measures of exported Jacobian files, with the fitted UJM'
DESCRIPTION = (
    'Measure every theorem of MODEL.md (ramodel.theory.check) on Jacobian files, next to the '
    'random-rotation chance level and the values of the UJM fitted to the same features.'
)
EXAMPLES = """\
examples:
  ramodel theory net.npz                  # with the UJM fitted to the net's own features
  ramodel theory net.npz --no-fit --chance-draws 16
  ramodel theory a.npz b.npz --html theory.html --json > theory.json

The fit (ramodel.fit.fit_ujm) needs representations in the file; without them the fit is
skipped with a note. --weight-decay enables the closed-form measures (default: the file's
meta["weight_decay"] when it is a pair, as 'ramodel simulate --save-jacobians' writes)."""


def configure(p: argparse.ArgumentParser) -> None:
    """Add the options of ``ramodel theory`` to ``p``."""
    p.add_argument("files", nargs="+", type=pathlib.Path, metavar="FILE")
    p.add_argument("--fit", action=argparse.BooleanOptionalAction, default=True,
                   help="fit the UJM to each file's features h_0 and compare (default: on)")
    p.add_argument("--chance-draws", type=int, default=8, help="random-rotation draws (default 8; 0 skips)")
    p.add_argument("--seed", type=int, default=0, help="seed of the chance draws and of the fit (default 0)")
    p.add_argument("--tau", type=float, default=1e-3, help="relative threshold of the numerical rank (default 1e-3)")
    p.add_argument("--weight-decay", type=float, nargs=2, metavar=("LAMBDA_J", "LAMBDA_W"),
                   help="the model's weight decays, for closed_form_error and classifier_residual")
    p.add_argument("--allow-truncated", action="store_true", help="measure rank-k truncations of incomplete factors")
    p.add_argument("--fit-loss", choices=("mse", "cross_entropy"),
                   help="loss of the fitted UJM (default: the file's meta['loss'] if valid, else mse)")
    p.add_argument("--fit-branch-factors", type=int, default=1, help="k of the fitted UJM (default 1)")
    p.add_argument("--fit-tol", type=float, default=1e-10, help="gradient tolerance of the fit (default 1e-10)")
    p.add_argument("--html", type=pathlib.Path, metavar="PATH", help="also write a self-contained HTML page")
def _meta_weight_decay(meta: Mapping) -> list[float] | None:
    wd = meta.get("weight_decay")
    if (isinstance(wd, list) and len(wd) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in wd)):
        return [float(v) for v in wd]
    return None


def run(args: argparse.Namespace) -> int:
    from .. import theory
    from ..fit import fit_ujm

    html_path = _html_target(args.html)
    sets = _load_sets(args.files)
    names = _names_for(args.files)
    entries, notes = [], {}
    for name, js in zip(names, sets):
        wd = list(args.weight_decay) if args.weight_decay else _meta_weight_decay(js.meta)
        fitted = None
        if args.fit:
            if js.representations is None:
                notes[name] = "no representations in the file: the UJM fit was skipped"
            else:
                loss = args.fit_loss or (js.meta.get("loss") if js.meta.get("loss") in ("mse", "cross_entropy")
                                         else "mse")
                fit_kwargs = {"branch_factors": args.fit_branch_factors, "loss": loss, "tol": args.fit_tol,
                              "seed": args.seed}
                if wd is not None:
                    fit_kwargs["weight_decay"] = tuple(wd)
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", RuntimeWarning)
                    try:
                        fitted = fit_ujm(js, **fit_kwargs)
                    except (ValueError, TypeError) as exc:
                        raise CLIError(f"{name}: cannot fit the UJM: {exc}") from None
                for w in caught:
                    notes[name] = f"fit: {w.message}"
        try:
            rep = theory.check(js, fitted=fitted, chance_draws=args.chance_draws, seed=args.seed, tau=args.tau,
                               weight_decay=None if wd is None else tuple(wd), allow_truncated=args.allow_truncated)
        except (ValueError, TypeError) as exc:
            raise CLIError(f"{name}: {exc}") from None
        entries.append((name, js, rep))
    payload = {"command": "theory", "files": [
        {"path": str(f), "jacobian_set": js.to_dict(), "theory": rep.to_dict(), "note": notes.get(name)}
        for f, (name, js, rep) in zip(args.files, entries)]}
    if html_path is not None:
        from .. import html_report

        title = "ramodel theorem measures: " + ", ".join(names)
        html_report.write_html(html_report.theory_page(entries, title=title), html_path)
        payload["html"] = str(html_path)
    if args.json:
        _print(_json_text(payload))
        return EXIT_OK
    from ..html_report import theory_comparison_rows

    parts = []
    for name, js, rep in entries:
        note = f"\n  note: {notes[name]}" if name in notes else ""
        parts.append(f"== {name}: {js!r}\n{rep}{note}")
    if len(entries) > 1:
        parts.append("== side by side: value [chance]\n"
                     + _table_text(theory_comparison_rows([e[2] for e in entries], names), "  "))
    if html_path is not None:
        parts.append(f"wrote {html_path}")
    _print("\n\n".join(parts))
    return EXIT_OK
