"""``ramodel simulate``: solve one model (:func:`ramodel.simulate`), print its summary and RA report.

Only parsing and printing: the work is done by the library functions named in the help.
"""

from __future__ import annotations

import argparse
import pathlib
from collections.abc import Mapping

from ._common import (
    EXIT_NEGATIVE,
    EXIT_OK,
    CLIError,
    _add_model_options,
    _atomic_write,
    _json_text,
    _model_kwargs,
    _out_dir,
    _print,
)

NAME = 'simulate'
HELP = 'solve one model; print its summary and RA report'
DESCRIPTION = (
    "Solve the Unconstrained Jacobians Model (ramodel.simulate) and print the solution's summary "
    "(convergence, singular values, rank, T1-T3) and its RA report."
)
EXAMPLES = """\
examples:
  ramodel simulate                                   # depth 8, 3 classes: summary and RA report
  ramodel simulate --depth 16 --classes 5 --branch-factors 2 --out out/sim
  ramodel simulate --skip permutation --skip-param signed=true --json
  ramodel simulate --out out/sim --save-jacobians && ramodel analyze out/sim/jacobians.npz

files written to --out DIR: report.json (what --json prints), report.txt, report.html (one
self-contained page), alignment.png, spectra.png, trajectories.png and, with
--save-jacobians, jacobians.npz (FORMAT.md, the Jacobians broadcast over inputs).
A trivial critical point (J = 0, e.g. deep nets with --skip none) is said in the summary,
its theorem and RA verdicts are undetermined, and it exits 1.
exit status: 0 converged, 1 not converged or trivial (J = 0), 2 bad input."""


def configure(p: argparse.ArgumentParser) -> None:
    """Add the options of ``ramodel simulate`` to ``p``."""
    _add_model_options(p, sweep=False)
    p.add_argument("--out", type=pathlib.Path, metavar="DIR", help="write report.json, report.html and figures here")
    p.add_argument("--save-jacobians", action="store_true", help="also write DIR/jacobians.npz (needs --out)")
def _load_skip(value: str):
    """A family name, or explicit matrices from a ``.npy`` file."""
    if value.endswith(".npy"):
        import numpy as np

        path = pathlib.Path(value)
        if not path.is_file():
            raise CLIError(f"--skip {value!r}: no such file")
        try:
            return np.load(path, allow_pickle=False)
        except Exception as exc:  # noqa: BLE001 - whatever makes the file unreadable is bad input
            raise CLIError(f"--skip {value!r}: not a readable .npy file ({exc})") from None
    return value


def _simulation_dict(sim) -> dict:
    return sim.to_dict()


def simulation_jacobian_set(sim, *, meta: Mapping | None = None):
    """:meth:`ramodel.simulation.Simulation.to_jacobian_set` (the old CLI name, kept)."""
    return sim.to_jacobian_set(meta=None if meta is None else dict(meta))


def run(args: argparse.Namespace) -> int:
    from ..simulation import simulate

    if args.save_jacobians and args.out is None:
        raise CLIError("--save-jacobians needs --out DIR")
    out = _out_dir(args.out) if args.out is not None else None
    kwargs = _model_kwargs(args)
    for name in ("width", "seed"):
        if getattr(args, name) is not None:
            kwargs[name] = getattr(args, name)
    if args.skip is not None:
        kwargs["skip"] = _load_skip(args.skip)
    depth = 8 if args.depth is None else args.depth
    classes = 3 if args.classes is None else args.classes
    sim = simulate(depth, classes, **kwargs)
    report = sim.report()
    payload = {"command": "simulate", "simulation": _simulation_dict(sim), "report": report.to_dict()}
    text = f"{sim.summary()}\n\n{report}\n"
    if out is not None:
        from .. import html_report

        files = {"report.json": out / "report.json", "report.txt": out / "report.txt",
                 "report.html": out / "report.html"}
        # Rendered once, for the PNG files and the page alike.
        figures = [(caption, html_report.figure_png(fig)) for caption, fig in html_report.ra_figures(sim, report)]
        for caption, png in figures:
            name = {"RA1": "trajectories.png", "RA2": "alignment.png", "RA3": "spectra.png"}[caption[:3]]
            files[name] = _atomic_write(out / name, png)
        if args.save_jacobians:
            files["jacobians.npz"] = simulation_jacobian_set(sim).save(out / "jacobians.npz")
        payload["files"] = {k: str(v) for k, v in files.items()}
        _atomic_write(files["report.txt"], text)
        html_report.write_html(html_report.simulation_page(sim, report=report, figures=figures), files["report.html"])
        _atomic_write(files["report.json"], _json_text(payload))
        text += f"\nwrote {', '.join(sorted(files))} to {out}\n"
    _print(_json_text(payload) if args.json else text)
    return EXIT_OK if sim.converged and not sim.is_trivial else EXIT_NEGATIVE
