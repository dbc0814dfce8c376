"""``ramodel sweep``: a grid of simulations into a resumable CSV (:func:`ramodel.sweeps.sweep`).

Only parsing and printing: the work is done by the library functions named in the help.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from collections.abc import Mapping
from typing import Any

from ..sweeps import RUN_KEY_EXCLUDED  # noqa: F401 - ramodel.cli.RUN_KEY_EXCLUDED
from ._common import (
    EXIT_INTERRUPTED,
    EXIT_NEGATIVE,
    EXIT_OK,
    CLIError,
    _add_model_options,
    _json_text,
    _model_kwargs,
    _positive_int,
    _print,
)

NAME = 'sweep'
HELP = 'run a grid of simulations into a resumable CSV'
DESCRIPTION = (
    "Run ramodel.simulate over the Cartesian product of the grid axes and write one row per run "
    "(config, convergence, T1-T3, RA verdicts, every metric) to a CSV, then fit RA4's depth slope."
)
EXAMPLES = """\
examples:
  ramodel sweep --depths 2 4 8 16 --classes 3 --widths 8 --seeds 0 1 2 --branch-factors 2 --out ra4.csv
  ramodel sweep --config grid.toml --out grid.csv --workers 4
  ramodel sweep --config grid.toml --out grid.csv --dask tcp://scheduler:8786

grid.toml: the grid axes depths, classes, widths, skips, seeds (a value or a list) and any
other option of ramodel.simulate, in its spelling; command-line options override it:
  depths = [2, 4, 8, 16]
  classes = 3
  widths = 8
  seeds = [0, 1, 2]
  branch_factors = 2
  skip_params = { signed = true }

resuming: the CSV is rewritten after every finished run. Run again with the same --out and
rows already there with no error are kept and not recomputed; failed rows are recomputed.
A run is identified by its run key: every option of ramodel.simulate except inputs and
labels, with the library's defaults filled in (width max(16, C), tol by dtype) and values compared
as numbers/literals, so 1e-2 and 0.01 are the same run. --no-resume starts afresh.
exit status: 0 every run succeeded, 1 some run failed (its row holds the error), 2 bad input."""


def configure(p: argparse.ArgumentParser) -> None:
    """Add the options of ``ramodel sweep`` to ``p``."""
    g = p.add_argument_group("grid (each a list; command line overrides --config)")
    g.add_argument("--config", type=pathlib.Path, metavar="TOML", help="grid and options from a TOML file")
    g.add_argument("--depths", type=int, nargs="+", metavar="L")
    g.add_argument("--classes", type=int, nargs="+", metavar="C")
    g.add_argument("--widths", type=int, nargs="+", metavar="D", help="default: simulate's max(16, C)")
    g.add_argument("--skips", nargs="+", metavar="FAMILY", help="default identity")
    g.add_argument("--seeds", type=int, nargs="+", metavar="SEED", help="default 0")
    _add_model_options(p, sweep=True)
    g = p.add_argument_group("execution")
    g.add_argument("--out", type=pathlib.Path, required=True, metavar="CSV", help="the output CSV (resumed if present)")
    g.add_argument("--no-resume", action="store_true", help="ignore (and overwrite) an existing --out")
    g.add_argument("--allow-unconverged", action="store_true",
                   help="keep runs that stopped above --tol as successful rows (default: failed rows, exit 1)")
    g.add_argument("--workers", type=_positive_int, metavar="N",
                   help="local processes (default: one per core; 1 runs in this process)")
    g.add_argument("--dask", metavar="ADDRESS", help="run on a Dask cluster at ADDRESS (needs dask[distributed])")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: when stderr is a terminal)")
def run_key(config: Mapping[str, Any]) -> str:
    """The identity of one sweep run (:func:`ramodel.sweeps.run_key`, where resume lives).

    Examples
    --------
    >>> run_key({"depth": 4, "classes": 3, "seed": 0}) == run_key(
    ...     {"depth": "4", "classes": "3", "width": "16", "seed": "0", "skip": "identity",
    ...      "weight_decay": "[0.01, 0.01]", "RA1": "True"})
    True
    """
    from ..sweeps import run_key as key

    return key(config)


def _sweep_grid(args: argparse.Namespace) -> tuple[dict[str, list], dict[str, Any]]:
    """Grid axes and per-run options, from --config (:func:`ramodel.sweeps.load_grid`) then the command line."""
    from ..sweeps import GRID_AXES, load_grid

    grid: dict[str, list] = {"widths": [None], "skips": ["identity"], "seeds": [0]}
    options: dict[str, Any] = {}
    if args.config is not None:
        try:
            axes, options = load_grid(args.config)
        except ValueError as exc:
            raise CLIError(f"--config {exc}") from None
        grid.update(axes)
    for axis in GRID_AXES:
        v = getattr(args, axis)
        if v is not None:
            grid[axis] = list(v)
    options.update(_model_kwargs(args))
    for axis in ("depths", "classes"):
        if axis not in grid:
            raise CLIError(f"the grid needs --{axis} (on the command line or in --config)")
    for axis, values in grid.items():
        if not values:
            raise CLIError(f"grid axis {axis} is empty")
    return grid, options


def _describe(cfg: Mapping) -> str:
    return ", ".join(f"{k}={v}" for k, v in cfg.items() if k in ("depth", "classes", "width", "skip", "seed"))


def run(args: argparse.Namespace) -> int:
    from .. import sweeps

    grid, options = _sweep_grid(args)
    configs = sweeps.grid_configs(**grid, **options)
    out = args.out
    if out.is_dir():
        raise CLIError(f"--out {str(out)!r} is a folder; give a CSV file name")
    if not out.parent.is_dir():
        raise CLIError(f"--out {str(out)!r}: folder {str(out.parent)!r} does not exist")
    keys = [run_key(c) for c in configs]
    if not args.no_resume:
        try:
            sweeps.check_resume(out)
        except ValueError as exc:
            raise CLIError(str(exc).replace("out=", "--out ").replace("pass resume=False", "use --no-resume")) from None
    try:
        sweeps.check_runs(configs)  # the whole grid is refused when one group of runs is invalid
    except (ValueError, TypeError) as exc:
        raise CLIError(str(exc)) from None

    close = None
    try:
        # The library writes every finished row to --out (and its typed record) as it completes.
        try:
            executor, close = sweeps.make_executor(workers=args.workers, dask=args.dask, imports=args.imports,
                                                   runs=len(configs))
        except ImportError:
            raise CLIError("--dask needs Dask: pip install 'dask[distributed]'") from None
        result = sweeps.sweep(depths=grid["depths"], classes=grid["classes"], widths=grid["widths"],
                              skips=grid["skips"], seeds=grid["seeds"], executor=executor,
                              progress=args.progress, out=out, resume=not args.no_resume,
                              allow_unconverged=args.allow_unconverged, **options)
    except KeyboardInterrupt:
        if close is not None:
            close(now=True)
            close = None
        print(f"ramodel sweep: interrupted; every finished run is in {out}: run the same command again to resume",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if close is not None:
            close()

    shown = result.as_read()  # kept and new rows with the same cell types
    parsed = list(shown.rows)
    grid_rows = parsed[: len(configs)]
    failed = [r for r in grid_rows if r.get("error")]
    not_converged = [r for r in failed if str(r["error"]).startswith(sweeps.NOT_CONVERGED)]
    trivial = [r for r in grid_rows if r.get("trivial") is True]
    fits = shown.depth_slope()
    payload = {
        "command": "sweep",
        "csv": str(out),
        "record": str(sweeps.record_path(out)),
        "runs": len(configs),
        "kept": result.kept,
        "computed": len(configs) - result.kept,
        "failed": len(failed),
        "not_converged": len(not_converged),
        "trivial": len(trivial),
        "other_rows_kept": len(result.other_rows),
        "run_key": [n for n in json.loads(keys[0])] if keys else [],
        "depth_slope": [{"group": g, "fit": f.to_dict(), "within_ra4_range": f.within()} for g, f in fits],
        "rows": parsed,
    }
    if args.json:
        _print(_json_text(payload))
    else:
        lines = [str(shown), ""]
        for g, f in fits:
            group = ", ".join(f"{k}={v}" for k, v in g.items())
            lines.append(f"RA4 depth slope {f.slope:.3f}, {round(f.confidence * 100)}% CI "
                         f"[{f.ci_low:.3f}, {f.ci_high:.3f}], r2 {f.r2:.4f}, n={f.n} ({group})")
        lines.append(f"{len(configs)} runs: {result.kept} kept from {out}, {len(configs) - result.kept} computed, "
                     f"{len(failed)} failed"
                     + (f" ({len(not_converged)} did not converge)" if not_converged else "")
                     + (f"; {len(trivial)} at the trivial critical point J = 0" if trivial else "")
                     + (f"; {len(result.other_rows)} other rows kept" if result.other_rows else "")
                     + f"; wrote {out}")
        for r in failed:
            lines.append(f"  failed: {_describe(r)}: {r['error']}")
        for r in trivial:
            lines.append(f"  trivial: {_describe(r)}: J = 0 is a critical point; the theorems hold vacuously there")
        _print("\n".join(lines))
    return EXIT_NEGATIVE if failed else EXIT_OK
