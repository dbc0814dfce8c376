"""The ``ramodel`` command line: simulate, sweep, analyze, theory, train, prove, families.

Design constraints, in order:

1. Every subcommand is a thin layer over the public API (:func:`ramodel.simulate`,
   :func:`ramodel.sweeps.run_one`, :func:`ramodel.analyze`, :func:`ramodel.theory.check`,
   :func:`ramodel.fit.fit_ujm`, :mod:`ramodel.html_report`, ...): the command line adds
   parsing, files and formatting, never numbers of its own.
2. Bad input ends in one line on stderr, ``ramodel CMD: error: ...``, and exit status 2;
   a traceback only with ``--debug``. Argument errors from argparse are one line too.
3. ``--json`` prints exactly one JSON document on stdout (strict JSON: NaN is ``null``,
   infinities are ``"inf"``/``"-inf"``); everything else (progress, warnings) goes to
   stderr, so ``ramodel ... --json | jq`` always works.
4. Files are written atomically (temporary file in the target folder, then
   ``os.replace``), so an interrupted command never leaves a half-written file.
5. Heavy and optional imports (Matplotlib, torch, SymPy, tomllib) happen inside the
   subcommand that needs them: ``ramodel --help`` and ``ramodel families`` are quick,
   and ``ramodel train`` without torch says how to install it.

Exit status: 0 success; 1 the command ran but its outcome is negative (``simulate``
did not converge, a ``sweep`` run failed, a proof failed); 2 bad input or an error;
130 interrupted.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import inspect
import io
import json
import math
import os
import pathlib
import sys
import textwrap
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["main", "build_parser", "CLIError", "run_key", "RUN_KEY_EXCLUDED", "simulation_jacobian_set",
           "find_checkout"]


class CLIError(Exception):
    """Bad input the command line detected itself; its message is shown as one line."""


#: ``simulate`` options that are not part of a sweep's run key (arrays, never set by the CLI).
RUN_KEY_EXCLUDED = ("inputs", "labels")

_EXIT_OK, _EXIT_NEGATIVE, _EXIT_ERROR, _EXIT_INTERRUPTED = 0, 1, 2, 130


# ============================================================================ parsing
class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (usage goes to ``--help``)."""

    def error(self, message):  # noqa: D401 - argparse API
        self.exit(_EXIT_ERROR, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


_Formatter = argparse.RawDescriptionHelpFormatter


def _key_value(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE read as JSON (``0.5``, ``true``, ``[1, 2]``) or else a string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE with KEY a name, got {text!r}")
    raw = raw.strip()
    if raw in ("True", "False"):
        return key, raw == "True"
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("common options")
    g.add_argument("--json", action="store_true",
                   help="print one JSON document on stdout instead of text (strict JSON: NaN as null)")
    g.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show the full traceback on errors")
    g.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import MODULE first (e.g. one that registers your own skip family); repeatable")
    return p


def _simulate_defaults() -> dict[str, Any]:
    from .simulation import simulate

    return {n: p.default for n, p in inspect.signature(simulate).parameters.items()
            if p.default is not inspect.Parameter.empty}


def _add_model_options(p: argparse.ArgumentParser, *, sweep: bool) -> None:
    """The options of :func:`ramodel.simulate` shared by ``simulate`` and ``sweep``.

    Every default is None: only the options the user gives are passed on, so the
    library's defaults (documented in :func:`ramodel.simulate`) apply.
    """
    g = p.add_argument_group("model options (passed to ramodel.simulate; defaults are its own)")
    if not sweep:
        g.add_argument("--depth", type=int, help="L, residual blocks (default 8)")
        g.add_argument("--classes", type=int, help="C, classes (default 3)")
        g.add_argument("--width", type=int, help="d (default max(16, C))")
        g.add_argument("--skip", help="skip family name (see 'ramodel families'), or a .npy file holding "
                                      "(d, d) or (L, d, d) matrices (default identity)")
        g.add_argument("--seed", type=int, help="seed of data, initial point and skips (default 0)")
    g.add_argument("--samples-per-class", type=int, metavar="N", help="Gaussian-mixture points per class (default 8)")
    g.add_argument("--branch-factors", type=int, metavar="K", help="k, factors per branch J = B_k..B_1 (default 1)")
    g.add_argument("--loss", choices=("mse", "cross_entropy"), help="loss (default mse)")
    g.add_argument("--weight-decay", type=float, nargs="+", metavar="LAMBDA",
                   help="lambda_J [lambda_W]; one value sets both (default 1e-2 1e-2)")
    g.add_argument("--skip-param", action="append", type=_key_value, metavar="KEY=VALUE",
                   help="a parameter of the skip family, e.g. signed=true or kind=banded; repeatable")
    g.add_argument("--skip-shared", action="store_true", default=None, help="one skip draw for all blocks")
    g.add_argument("--mean-scale", type=float, metavar="X", help="Gaussian-mixture class-mean norm (default 1.0)")
    g.add_argument("--noise", type=float, metavar="X", help="Gaussian-mixture within-class spread (default 0.1)")
    g.add_argument("--init-scale", type=float, metavar="X",
                   help="scale of the random initial point (default: see simulate)")
    g.add_argument("--tol", type=float, metavar="X",
                   help="target gradient norm (default 1e-10 in float64, 1e-5 in float32)")
    g.add_argument("--max-steps", type=int, metavar="N", help="L-BFGS step budget (default 100000)")
    g.add_argument("--dtype", choices=("float64", "float32"), help="precision (default float64)")
    g.add_argument("--backend", metavar="NAME", help="array backend: numpy or cupy (default numpy)")


_MODEL_OPTIONS = ("samples_per_class", "branch_factors", "loss", "weight_decay", "skip_shared", "mean_scale",
                  "noise", "init_scale", "tol", "max_steps", "dtype", "backend")


def _model_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The simulate() options the user gave, in simulate's spelling."""
    out: dict[str, Any] = {}
    for name in _MODEL_OPTIONS:
        v = getattr(args, name, None)
        if v is not None:
            out[name] = v
    wd = out.get("weight_decay")
    if wd is not None:
        if len(wd) > 2:
            raise CLIError(f"--weight-decay takes one or two values (lambda_J [lambda_W]), got {len(wd)}")
        out["weight_decay"] = wd[0] if len(wd) == 1 else list(wd)
    if getattr(args, "skip_param", None):
        out["skip_params"] = dict(args.skip_param)
    return out


EXAMPLES = {
    "simulate": """\
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
exit status: 0 converged, 1 not converged or trivial (J = 0), 2 bad input.""",
    "sweep": """\
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
exit status: 0 every run succeeded, 1 some run failed (its row holds the error), 2 bad input.""",
    "analyze": """\
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
  ramodel analyze net_L4.npz net_L8.npz net_L16.npz""",
    "theory": """\
examples:
  ramodel theory net.npz                  # with the UJM fitted to the net's own features
  ramodel theory net.npz --no-fit --chance-draws 16
  ramodel theory a.npz b.npz --html theory.html --json > theory.json

The fit (ramodel.fit.fit_ujm) needs representations in the file; without them the fit is
skipped with a note. --weight-decay enables the closed-form measures (default: the file's
meta["weight_decay"] when it is a pair, as 'ramodel simulate --save-jacobians' writes).""",
    "train": """\
examples:
  ramodel train --out out/mlp                         # ResidualMLP on digits, 10 epochs
  ramodel train --dataset digits --classes 3 --depth 8 --width 32 --skip orthogonal --out out/orth
  ramodel train --arch conv --channels 8 --depth 2 --inputs 50 --method matrix_free --k 4 --out out/conv
  ramodel train --out out/mlp --epochs 20 --resume     # continue from out/mlp/checkpoint.pt
  ramodel train --protocol terminal --dataset mnist5k --depth 8 --pick random --out out/ra
                                                      # long enough for weight decay to remove the init

--protocol terminal fills every training option not given with defaults measured to reach the
regime where weight decay has removed the initialisation (ramodel.training.PROTOCOLS: 3000
steps, batch 256, lr 0.1, warmup 5% of the steps, weight decay 1e-2, gradient clip 5); the short default
protocol leaves the branch weights at cosine 0.8-0.9 with their initial values, and RA measured
then measures the initialisation (train.json: init_cosine; a warning above 0.5).

files written to --out DIR: jacobians.npz (FORMAT.md: Jacobians, representations, skips,
classifier and meta of --inputs test inputs), train.json (what --json prints) and
checkpoint.pt. Then: ramodel analyze DIR/jacobians.npz. Needs torch: pip install 'ramodel[torch]'.""",
    "prove": """\
examples:
  ramodel prove                     # SymPy derivations of the gradient and T1-T6, with numerical checks
  ramodel prove --symbolic-only --json

Runs proofs/ of a source checkout (found next to the installed ramodel package, or in the
current folder or one of its parents). Exit status 1 if any proof fails.""",
    "families": """\
examples:
  ramodel families
  ramodel families correlation --param kind=banded --param bandwidth=2
  ramodel families --import mypkg.skips householder --json""",
}


def build_parser() -> argparse.ArgumentParser:
    """The ``ramodel`` argument parser, with one subparser per subcommand."""
    from . import __version__

    parser = _Parser(
        prog="ramodel", formatter_class=_Formatter,
        description="Residual Alignment: solve the Unconstrained Jacobians Model, measure RA and the "
                    "theorems on simulations and on Jacobians exported from trained networks.",
        epilog="run 'ramodel COMMAND --help' for the options and examples of each command.",
    )
    parser.add_argument("--version", action="version", version=f"ramodel {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    common = _common()

    def add(name: str, help_: str, description: str):
        return sub.add_parser(name, help=help_, description=description, parents=[common],
                              epilog=EXAMPLES[name], formatter_class=_Formatter)

    p = add("simulate", "solve one model; print its summary and RA report",
            "Solve the Unconstrained Jacobians Model (ramodel.simulate) and print the solution's summary "
            "(convergence, singular values, rank, T1-T3) and its RA report.")
    _add_model_options(p, sweep=False)
    p.add_argument("--out", type=pathlib.Path, metavar="DIR", help="write report.json, report.html and figures here")
    p.add_argument("--save-jacobians", action="store_true", help="also write DIR/jacobians.npz (needs --out)")
    p.set_defaults(func=_cmd_simulate)

    p = add("sweep", "run a grid of simulations into a resumable CSV",
            "Run ramodel.simulate over the Cartesian product of the grid axes and write one row per run "
            "(config, convergence, T1-T3, RA verdicts, every metric) to a CSV, then fit RA4's depth slope.")
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
    p.set_defaults(func=_cmd_sweep)

    p = add("analyze", "RA reports of exported Jacobian files, side by side",
            "Measure RA1-RA4 and neural collapse (ramodel.analyze) on Jacobian files (spec/FORMAT.md).")
    p.add_argument("files", nargs="+", type=pathlib.Path, metavar="FILE")
    p.add_argument("--k", type=int, help="dimension of the RA2 subspaces (default C)")
    p.add_argument("--tau", type=float, help="relative threshold of the numerical rank (default 1e-3)")
    p.add_argument("--threshold", action="append", type=_key_value, metavar="NAME=VALUE",
                   help="override a verdict threshold of ramodel.Thresholds, e.g. ra1_collinearity=0.95")
    p.add_argument("--html", type=pathlib.Path, metavar="PATH", help="also write a self-contained HTML page")
    p.set_defaults(func=_cmd_analyze)

    p = add("theory", "theorem measures of exported Jacobian files, with the fitted UJM",
            "Measure every theorem of MODEL.md (ramodel.theory.check) on Jacobian files, next to the "
            "random-rotation chance level and the values of the UJM fitted to the same features.")
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
    p.set_defaults(func=_cmd_theory)

    p = add("train", "train a network from ramodel.nets and export its Jacobians",
            "Train a ResNet from ramodel.nets on a data set bundled offline (ramodel.training.train), then "
            "export the residual Jacobians of test inputs (ramodel.torch.export_jacobians).")
    p.add_argument("--out", type=pathlib.Path, required=True, metavar="DIR",
                   help="writes jacobians.npz, train.json and checkpoint.pt here")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=("digits", "mnist5k"), default="digits", help="(default digits)")
    g.add_argument("--classes", type=int, help="keep classes 0..C-1 (default all 10)")
    g = p.add_argument_group("network")
    g.add_argument("--arch", choices=("mlp", "conv"), default="mlp",
                   help="ResidualMLP or a one-stage ConvResNet (default mlp)")
    g.add_argument("--width", type=int, default=32, help="MLP residual width d (default 32)")
    g.add_argument("--channels", type=int, default=8, help="conv channels (default 8)")
    g.add_argument("--depth", type=int, default=4, help="residual blocks L (default 4)")
    g.add_argument("--activation", default="relu", help="MLP branch activation (default relu)")
    g.add_argument("--norm", default="none", help="MLP branch normalisation: none, layernorm, batchnorm (default none)")
    g.add_argument("--skip", default="identity", help="skip family (default identity)")
    g.add_argument("--skip-param", action="append", type=_key_value, metavar="KEY=VALUE")
    g.add_argument("--skip-shared", action="store_true")
    g = p.add_argument_group("training")
    g.add_argument("--protocol", choices=("default", "terminal"), default="default",
                   help="defaults of the options below (ramodel.training.PROTOCOLS); 'terminal' trains until "
                        "weight decay has removed the initialisation (default: default)")
    g.add_argument("--epochs", type=int, help="length in epochs (default 10 with --protocol default)")
    g.add_argument("--steps", type=int, help="length in optimizer steps (default 3000 with --protocol terminal)")
    g.add_argument("--batch-size", type=int, help="(default 128; terminal 256)")
    g.add_argument("--lr", type=float, help="peak learning rate (default 0.05; terminal 0.1)")
    g.add_argument("--momentum", type=float, help="SGD momentum (default 0.9)")
    g.add_argument("--weight-decay", type=float, help="weight decay (default 5e-4; terminal 1e-2)")
    g.add_argument("--schedule", help="cosine, step or constant (default cosine)")
    g.add_argument("--warmup", type=int, help="linear warmup steps (default 0; terminal 5%% of the steps)")
    g.add_argument("--grad-clip", type=float, help="clip the gradient norm (default none; terminal 5)")
    g.add_argument("--decoupled-decay", action=argparse.BooleanOptionalAction, default=None,
                   help="decoupled weight decay w <- (1 - lr wd) w instead of L2 in the gradient (default off)")
    g.add_argument("--decay-on", choices=("all", "weights"), help="decay all parameters or weights only (default all)")
    g.add_argument("--eval-every", type=int, help="test accuracy every N epochs (default: at the end only)")
    g.add_argument("--loss", default="cross_entropy", help="cross_entropy or mse (default cross_entropy)")
    g.add_argument("--seed", type=int, default=0,
                   help="seed of the split, the weights, shuffling and skips (default 0)")
    g.add_argument("--device", default="cpu", help="torch device (default cpu)")
    g.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.pt when present")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: when stderr is a terminal)")
    g = p.add_argument_group("export")
    g.add_argument("--inputs", type=int, default=100, help="test inputs to export (default 100; capped at the split)")
    g.add_argument("--split", choices=("test", "train"), default="test", help="(default test)")
    g.add_argument("--pick", choices=("first", "random"), default="first",
                   help="the first --inputs of the split, or a seeded random subset (default first; mnist5k's "
                        "test split is sorted by class, so its first inputs hold only classes 0 and 1)")
    g.add_argument("--method", default="auto", help="auto, dense or matrix_free (default auto)")
    g.add_argument("--k", type=int, help="singular triplets for matrix_free (default C)")
    g.add_argument("--export-dtype", default="float64", help="float64 or float32 (default float64)")
    p.set_defaults(func=_cmd_train)

    p = add("prove", "run the SymPy proofs of proofs/",
            "Run the SymPy derivations of the gradient formula and of T1-T6 (proofs/), each checked against "
            "converged simulations.")
    p.add_argument("--symbolic-only", action="store_true", help="skip the numerical checks")
    p.add_argument("--verbose", action="store_true", help="print every claim, its scope and method")
    p.set_defaults(func=_cmd_prove)

    p = add("families", "list the registered skip families and their attributes",
            "List the skip-mapping families of ramodel.mappings with their parameters and the attributes "
            "each declares (at the default parameters, or at --param values).")
    p.add_argument("names", nargs="*", metavar="NAME", help="only these families (default all)")
    p.add_argument("--param", action="append", type=_key_value, metavar="KEY=VALUE",
                   help="parameter values for the attributes (needs exactly one NAME)")
    p.set_defaults(func=_cmd_families)
    return parser


# ============================================================================ output
def _jsonable(obj: Any) -> Any:
    """Plain JSON values: NaN -> None, +-inf -> "inf"/"-inf", arrays -> lists."""
    import numpy as np

    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        if math.isnan(v):
            return None
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return v
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, pathlib.PurePath):
        return str(obj)
    if obj is None or isinstance(obj, str):
        return obj
    return str(obj)


def _json_text(payload: Mapping) -> str:
    from . import __version__

    return json.dumps(_jsonable({"ramodel": __version__, **payload}), indent=2, allow_nan=False) + "\n"


def _atomic_write(path: pathlib.Path, data: str | bytes) -> pathlib.Path:
    from ._io import atomic_write_bytes

    return atomic_write_bytes(path, data.encode("utf-8") if isinstance(data, str) else data)


def _out_dir(path: pathlib.Path) -> pathlib.Path:
    if path.exists() and not path.is_dir():
        raise CLIError(f"--out {str(path)!r} exists and is not a folder")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _html_target(path: pathlib.Path | None) -> pathlib.Path | None:
    """Check an ``--html`` path before any work, so a typo fails fast."""
    if path is None:
        return None
    if path.is_dir():
        raise CLIError(f"--html {str(path)!r} is a folder; give a file name such as report.html")
    if not path.parent.is_dir():
        raise CLIError(f"--html {str(path)!r}: folder {str(path.parent)!r} does not exist")
    return path


def _table_text(rows: Sequence[Sequence[str]], indent: str = "") -> str:
    widths = [max(len(str(r[j])) for r in rows) for j in range(len(rows[0]))]
    return "\n".join(indent + "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _print(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def _info(args: argparse.Namespace, text: str) -> None:
    print(f"ramodel {args.command}: {text}", file=sys.stderr)


# ========================================================================== simulate
def _load_skip(value: str):
    """A family name, or explicit matrices from a ``.npy`` file."""
    if value.endswith(".npy"):
        import numpy as np

        path = pathlib.Path(value)
        if not path.is_file():
            raise CLIError(f"--skip {value!r}: no such file")
        try:
            return np.load(path, allow_pickle=False)
        except Exception as exc:
            raise CLIError(f"--skip {value!r}: not a readable .npy file ({exc})") from None
    return value


def _singular_values(sim, top: int):
    import numpy as np

    from .backend import to_numpy

    S = np.linalg.svd(np.asarray(to_numpy(sim.jacobians), dtype=float), compute_uv=False)
    return S[:, :top]


def _simulation_dict(sim) -> dict:
    from .summary import theorem_checks

    return {
        "config": sim.config,
        "converged": sim.converged,
        "grad_norm": sim.grad_norm,
        "steps": sim.steps,
        "message": sim.message,
        "trivial": sim.is_trivial,
        "loss": float(sim.loss_history[-1]) if len(sim.loss_history) else None,
        "singular_values": _singular_values(sim, min(sim.width, sim.classes + 2)),
        "theorems": [c.to_dict() for c in theorem_checks(sim)],
    }


def simulation_jacobian_set(sim, *, meta: Mapping | None = None):
    """A :class:`~ramodel.jacobian_set.JacobianSet` of a simulation, Jacobians broadcast over inputs.

    FORMAT.md stores per-input Jacobians ``(L, N, d, d)``; a UJM's are the same for every
    input, so each ``J_l`` is repeated ``N`` times. ``meta`` records the loss, weight
    decays, branch factors and configuration (``ramodel theory`` reads the weight decays).
    """
    import numpy as np

    from .backend import to_numpy
    from .jacobian_set import JacobianSet

    J = np.asarray(to_numpy(sim.jacobians))
    N = int(sim.labels.shape[0])
    info = {
        "source": "ramodel.simulate",
        "loss": sim.config.get("loss"),
        "weight_decay": list(sim.weight_decay),
        "branch_factors": sim.config.get("branch_factors"),
        "converged": sim.converged,
        "grad_norm": sim.grad_norm,
        "config": _jsonable(sim.config),
        **dict(meta or {}),
    }
    return JacobianSet(
        labels=np.asarray(to_numpy(sim.labels)),
        classes=sim.classes,
        meta=info,
        jacobians=np.ascontiguousarray(np.broadcast_to(J[:, None], (J.shape[0], N, *J.shape[1:]))),
        representations=np.asarray(to_numpy(sim.representations)),
        skips=np.asarray(to_numpy(sim.skips)),
        classifier=np.asarray(to_numpy(sim.classifier)),
    )


def _cmd_simulate(args: argparse.Namespace) -> int:
    from .simulation import simulate

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
        from . import html_report

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
    return _EXIT_OK if sim.converged and not sim.is_trivial else _EXIT_NEGATIVE


# ============================================================================= sweep
_GRID_AXES = {"depths": "depth", "classes": "classes", "widths": "width", "skips": "skip", "seeds": "seed"}


def _canonical(value: Any) -> Any:
    from .sweeps import _canonical as canonical

    return canonical(value)


def run_key(config: Mapping[str, Any]) -> str:
    """The identity of one sweep run (:func:`ramodel.sweeps.run_key`, where resume lives).

    Examples
    --------
    >>> run_key({"depth": 4, "classes": 3, "seed": 0}) == run_key(
    ...     {"depth": "4", "classes": "3", "width": "16", "seed": "0", "skip": "identity",
    ...      "weight_decay": "[0.01, 0.01]", "RA1": "True"})
    True
    """
    from .sweeps import run_key as key

    return key(config)


def _load_toml(path: pathlib.Path) -> dict:
    import tomllib

    if not path.is_file():
        raise CLIError(f"--config {str(path)!r}: no such file")
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise CLIError(f"--config {str(path)!r}: not valid TOML ({exc})") from None


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _sweep_grid(args: argparse.Namespace) -> tuple[dict[str, list], dict[str, Any]]:
    """Grid axes and per-run options, from --config then the command line."""
    from .simulation import simulate

    params = set(inspect.signature(simulate).parameters) - set(RUN_KEY_EXCLUDED)
    grid: dict[str, list] = {"widths": [None], "skips": ["identity"], "seeds": [0]}
    options: dict[str, Any] = {}
    if args.config is not None:
        data = _load_toml(args.config)
        unknown = sorted(k for k in data if k not in _GRID_AXES and k not in params - set(_GRID_AXES.values()))
        if unknown:
            raise CLIError(
                f"--config {str(args.config)!r}: unknown key(s) {unknown}; use the grid axes "
                f"{sorted(_GRID_AXES)} and options of ramodel.simulate "
                f"{sorted(params - set(_GRID_AXES.values()))}"
            )
        for k, v in data.items():
            if k in _GRID_AXES:
                grid[k] = _as_list(v)
            else:
                options[k] = v
    for axis in _GRID_AXES:
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


def _sweep_configs(grid: Mapping[str, list], options: Mapping[str, Any]) -> list[dict]:
    import itertools

    configs = []
    # The order of ramodel.sweeps.sweep: depths, classes, widths, skips, seeds.
    for depth, classes, width, skip, seed in itertools.product(*(grid[a] for a in _GRID_AXES)):
        cfg = {"depth": depth, "classes": classes, "skip": skip, "seed": seed, **options}
        if width is not None:
            cfg["width"] = width
        configs.append(cfg)
    return configs


def _preflight(configs: Sequence[dict]) -> None:
    """Fail fast, as one line, on options any run would reject (a typo, a bad range).

    Stricter than the library's check (which refuses only what makes every run invalid):
    the command line refuses the whole grid when one group of runs is invalid.
    """
    from .sweeps import probe

    seen = set()
    for cfg in configs:
        probe_cfg = {k: v for k, v in cfg.items() if k not in ("depth",)}
        sig = json.dumps(_canonical({k: v for k, v in probe_cfg.items() if k != "seed"}), sort_keys=True)
        if sig in seen:
            continue
        seen.add(sig)
        try:
            probe(cfg)
        except (ValueError, TypeError) as exc:
            raise CLIError(f"run {_describe(cfg)} is invalid: {exc}") from None


def _describe(cfg: Mapping) -> str:
    return ", ".join(f"{k}={v}" for k, v in cfg.items() if k in ("depth", "classes", "width", "skip", "seed"))


def _columns(rows: Sequence[Mapping], extra: Sequence[str] = ()) -> list[str]:
    from .sweeps import _order_columns

    return _order_columns(rows, extra)


def _fill_defaults(row: Mapping[str, Any], columns: Sequence[str]) -> dict:
    from .sweeps import _fill_defaults as fill

    return fill(row, columns)


def _parse_cell(text: str) -> Any:
    from .sweeps import _parse_cell as parse

    return parse(text)


def _executor(args: argparse.Namespace, pending: int, imports: Sequence[str]):
    """``(executor, close)`` for the pending runs; ``close()`` releases what this command started."""
    import concurrent.futures as cf

    from .sweeps import SerialExecutor

    if args.dask:
        try:
            from dask.distributed import Client
        except ImportError:
            raise CLIError("--dask needs Dask: pip install 'dask[distributed]'") from None
        client = Client(args.dask)
        if imports:
            client.run(_import_modules, list(imports))
        # close(), never shutdown(): the cluster is not ours to stop.
        return client.get_executor(), client.close
    workers = args.workers if args.workers is not None else (os.cpu_count() or 1)
    workers = min(workers, max(pending, 1))
    if workers == 1:
        return SerialExecutor(), lambda: None
    # Workers import the --import modules too: under spawn/forkserver they start empty.
    pool = cf.ProcessPoolExecutor(max_workers=workers, initializer=_import_modules, initargs=(list(imports),))
    return pool, lambda: pool.shutdown(cancel_futures=True)


def _import_modules(names: Sequence[str]) -> None:
    for name in names:
        importlib.import_module(name)


def _progress_bar(args: argparse.Namespace, total: int):
    show = args.progress if args.progress is not None else sys.stderr.isatty()
    if not show or total == 0:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _LineProgress(total)
    return tqdm(total=total, desc="sweep", unit="run", file=sys.stderr)


class _LineProgress:
    """A progress bar without tqdm: one line per finished run on stderr."""

    def __init__(self, total: int):
        self.total, self.n = total, 0

    def update(self, k: int = 1) -> None:
        self.n += k
        print(f"sweep: {self.n}/{self.total} runs done", file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


def _cmd_sweep(args: argparse.Namespace) -> int:
    from . import sweeps

    grid, options = _sweep_grid(args)
    configs = _sweep_configs(grid, options)
    out = args.out
    if out.is_dir():
        raise CLIError(f"--out {str(out)!r} is a folder; give a CSV file name")
    if not out.parent.is_dir():
        raise CLIError(f"--out {str(out)!r}: folder {str(out.parent)!r} does not exist")
    keys = [run_key(c) for c in configs]
    if out.exists() and not args.no_resume:
        try:
            sweeps._read_csv_rows(out)
        except ValueError as exc:
            raise CLIError(str(exc).replace("out=", "--out ").replace("pass resume=False", "use --no-resume")) from None
    _preflight(configs)

    close = None
    try:
        # The library writes every finished row to --out (and its typed record) as it completes.
        executor, close = _executor(args, len(configs), args.imports)
        result = sweeps.sweep(depths=grid["depths"], classes=grid["classes"], widths=grid["widths"],
                              skips=grid["skips"], seeds=grid["seeds"], executor=executor,
                              progress=args.progress, out=out, resume=not args.no_resume,
                              allow_unconverged=args.allow_unconverged, **options)
    except KeyboardInterrupt:
        if close is not None and hasattr(executor, "_processes"):
            sweeps._stop_pool(executor)
            close = None
        print(f"ramodel sweep: interrupted; every finished run is in {out}: run the same command again to resume",
              file=sys.stderr)
        return _EXIT_INTERRUPTED
    finally:
        if close is not None:
            close()

    # Read the table back from the CSV text so kept and new rows have the same types.
    done = list(result.rows) + list(result.other_rows)
    cols = _columns(done)
    text = sweeps.SweepResult(rows=tuple(_fill_defaults(r, cols) for r in done), columns=tuple(cols)).to_csv()
    reader = csv.DictReader(io.StringIO(text))
    parsed = [{k: _parse_cell(v) for k, v in r.items()} for r in reader]
    shown = sweeps.SweepResult(rows=tuple(parsed), columns=tuple(reader.fieldnames or ()), kept=result.kept)
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
            lines.append(f"RA4 depth slope {f.slope:.3f}, {int(round(f.confidence * 100))}% CI "
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
    return _EXIT_NEGATIVE if failed else _EXIT_OK


# ============================================================================ analyze
def _load_sets(files: Sequence[pathlib.Path]):
    from .jacobian_set import JacobianSet

    sets = []
    for f in files:
        if not f.exists():
            raise CLIError(f"{str(f)!r}: no such file")
        if f.is_dir():
            raise CLIError(f"{str(f)!r} is a folder, not a Jacobian file")
        sets.append(JacobianSet.load(f))
    return sets


def _names_for(files: Sequence[pathlib.Path]) -> list[str]:
    names = [f.name for f in files]
    return names if len(set(names)) == len(names) else [str(f) for f in files]


def _cmd_analyze(args: argparse.Namespace) -> int:
    from .report import Thresholds, analyze

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
        from .scaling import depth_scaling

        fits = depth_scaling(sets, names=names)
        scaling = fits if isinstance(fits, list) else [fits]
        payload["depth_scaling"] = [f.to_dict() for f in scaling]
    if html_path is not None:
        from . import html_report

        title = "ramodel RA report: " + ", ".join(names)
        html_report.write_html(html_report.analysis_page(list(zip(names, sets, reports)), title=title,
                                                         depth_scaling=scaling), html_path)
        payload["html"] = str(html_path)
    if args.json:
        _print(_json_text(payload))
        return _EXIT_OK
    from .html_report import ra_comparison_rows

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
    return _EXIT_OK


# ============================================================================= theory
def _meta_weight_decay(meta: Mapping) -> list[float] | None:
    wd = meta.get("weight_decay")
    if (isinstance(wd, list) and len(wd) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in wd)):
        return [float(v) for v in wd]
    return None


def _cmd_theory(args: argparse.Namespace) -> int:
    from . import theory
    from .fit import fit_ujm

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
        from . import html_report

        title = "ramodel theorem measures: " + ", ".join(names)
        html_report.write_html(html_report.theory_page(entries, title=title), html_path)
        payload["html"] = str(html_path)
    if args.json:
        _print(_json_text(payload))
        return _EXIT_OK
    from .html_report import theory_comparison_rows

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
    return _EXIT_OK


# ============================================================================== train
def _torch_modules():
    try:
        import torch  # noqa: F401

        from . import nets, training
        from . import torch as ra_torch
    except ImportError as exc:
        raise CLIError(f"'ramodel train' needs PyTorch, which could not be imported ({exc}): "
                       "pip install 'ramodel[torch]'") from None
    return nets, training, ra_torch


def _cmd_train(args: argparse.Namespace) -> int:
    import numpy as np

    from . import datasets

    for name in ("depth", "inputs", "width", "channels"):
        if getattr(args, name) < 1:
            raise CLIError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for name in ("epochs", "steps", "batch_size", "eval_every", "k"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise CLIError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.warmup is not None and args.warmup < 0:
        raise CLIError(f"--warmup must be >= 0, got {args.warmup}")
    if args.epochs is not None and args.steps is not None:
        raise CLIError(f"give --epochs or --steps, not both (got --epochs {args.epochs} and --steps {args.steps})")
    nets, training, ra_torch = _torch_modules()
    # Export options are checked before training, so a typo does not cost a training run.
    if args.method not in ra_torch.METHODS:
        raise CLIError(f"--method must be one of {', '.join(ra_torch.METHODS)}, got {args.method!r}")
    if args.export_dtype not in ("float32", "float64"):
        raise CLIError(f"--export-dtype must be float32 or float64, got {args.export_dtype!r}")
    if args.schedule is not None and args.schedule not in training.SCHEDULES:
        raise CLIError(f"--schedule must be one of {', '.join(training.SCHEDULES)}, got {args.schedule!r}")
    width = args.width if args.arch == "mlp" else args.channels
    if args.k is not None and args.arch == "mlp" and args.k > width:
        raise CLIError(f"--k must be <= the residual width {width}, got {args.k}")
    options = {"batch_size": args.batch_size, "lr": args.lr, "momentum": args.momentum,
               "weight_decay": args.weight_decay, "schedule": args.schedule, "warmup": args.warmup,
               "grad_clip": args.grad_clip, "decoupled_decay": args.decoupled_decay, "decay_on": args.decay_on}
    options = {k: v for k, v in options.items() if v is not None}
    if args.protocol == "default":
        options.setdefault("lr", 0.05)  # the command's default since its first release
        if args.steps is None and args.epochs is None:
            args.epochs = 10
    created = not args.out.exists()
    out = _out_dir(args.out)
    try:
        return _train_and_export(args, out, options, nets, training, ra_torch, datasets, np)
    finally:
        # A failed run leaves no empty --out folder behind (a checkpoint, if any, is kept for --resume).
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()


def _train_and_export(args, out, options, nets, training, ra_torch, datasets, np) -> int:
    loader = {"digits": datasets.digits, "mnist5k": datasets.mnist5k}[args.dataset]
    ds = loader(classes=args.classes, seed=args.seed)
    skip_params = dict(args.skip_param or [])
    common = {"skip": args.skip, "skip_params": skip_params or None, "skip_shared": args.skip_shared,
              "seed": args.seed, "init_seed": args.seed}
    if args.arch == "mlp":
        model = nets.ResidualMLP(ds.n_features, ds.classes, width=args.width, depth=args.depth,
                                 activation=args.activation, norm=args.norm, **common)
    else:
        if ds.image_shape is None:
            raise CLIError(f"--arch conv needs an image data set; {args.dataset} has no image shape")
        model = nets.ConvResNet(1, ds.classes, channels=(args.channels,), blocks_per_stage=args.depth, **common)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", training.InitialisationWarning)
        result = training.train(
            model, ds, epochs=args.epochs, steps=args.steps, protocol=args.protocol, **options, seed=args.seed,
            checkpoint=out / "checkpoint.pt", resume=args.resume, progress=args.progress, device=args.device,
            loss=args.loss, eval_every=args.eval_every,
        )
    for w in caught:
        if issubclass(w.category, training.InitialisationWarning):
            print(f"ramodel train: warning: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    x = ds.x_test if args.split == "test" else ds.x_train
    y = ds.y_test if args.split == "test" else ds.y_train
    n = min(args.inputs, len(y))
    if args.pick == "random":
        idx = np.sort(np.random.default_rng(args.seed).permutation(len(y))[:n])
    else:
        idx = np.arange(n)
    x, y = np.array(x)[idx], np.array(y)[idx]  # writable copies: torch refuses read-only arrays
    missing = sorted(set(range(ds.classes)) - {int(c) for c in y})
    if missing:
        print(f"ramodel train: warning: the {n} exported {args.split} inputs hold no example of class(es) "
              f"{missing}; RA and NC measures then miss those classes (try --pick random)", file=sys.stderr)
    if getattr(model, "expects_images", False):
        x = x.reshape(n, 1, *ds.image_shape)
    settings = dict(result.settings)
    meta = {
        "dataset": args.dataset,
        "split": args.split,
        "class_ids": list(ds.class_ids),
        "train_accuracy": result.final_train_accuracy,
        "test_accuracy": result.final_test_accuracy,
        "seed": args.seed,
        "loss": args.loss,
        "model": model.config,
        "training": {"epochs": result.epochs, "steps": result.steps, "protocol": args.protocol,
                     "batch_size": settings["batch_size"], "lr": settings["lr"],
                     "weight_decay": settings["weight_decay"], "schedule": settings["schedule"],
                     "warmup": settings["warmup"], "grad_clip": settings["grad_clip"],
                     "decoupled_decay": settings["decoupled_decay"], "decay_on": settings["decay_on"],
                     "init_cosine": result.init_cosine},
    }
    js = ra_torch.export_jacobians(model, x, y, out / "jacobians.npz", k=args.k, classes=ds.classes, meta=meta,
                                   dtype=args.export_dtype, method=args.method, seed=args.seed)
    payload = {"command": "train", "model": model.config, "dataset": ds.to_dict(),
               "training": result.to_dict(lr_steps=False), "init_cosine": result.init_cosine,
               "init_cosine_blocks": list(result.init_cosine_blocks),
               "export": js.to_dict(),
               "files": {"jacobians.npz": str(out / "jacobians.npz"), "train.json": str(out / "train.json"),
                         "checkpoint.pt": str(out / "checkpoint.pt")}}
    _atomic_write(out / "train.json", _json_text(payload))
    if args.json:
        _print(_json_text(payload))
    else:
        form = "dense" if js.has_dense else f"top-{js.k} factors"
        _print(
            f"trained {model.config['architecture']} (L={args.depth}, skip {args.skip}) on {args.dataset} "
            f"(C={ds.classes}) for {result.steps} steps, {result.epochs} epochs ({result.steps_run} steps run now, "
            f"{result.seconds:.1f} s, protocol {args.protocol}): train accuracy {result.final_train_accuracy:.4f}, "
            f"test accuracy {result.final_test_accuracy:.4f}, init_cosine {result.init_cosine:.3f}\n"
            f"exported the Jacobians of {n} {args.split} inputs ({form}, L={js.depth}, d={js.width}) to "
            f"{out / 'jacobians.npz'}\n"
            f"next: ramodel analyze {out / 'jacobians.npz'}   or   ramodel theory {out / 'jacobians.npz'}"
        )
    return _EXIT_OK


# ============================================================================== prove
def find_checkout() -> pathlib.Path | None:
    """The source checkout holding ``proofs/``: next to the ramodel package, else the cwd or a parent."""
    here = pathlib.Path(__file__).resolve().parent.parent
    cwd = pathlib.Path.cwd().resolve()
    for root in (here, cwd, *cwd.parents):
        if (root / "proofs" / "__init__.py").is_file() and (root / "proofs" / "run_all.py").is_file():
            return root
    return None


def _cmd_prove(args: argparse.Namespace) -> int:
    import time

    root = find_checkout()
    if root is None:
        raise CLIError("proofs/ is not installed with ramodel: run 'ramodel prove' from a source checkout "
                       "(the folder holding proofs/ and ramodel/)")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    proofs = importlib.import_module("proofs")
    where = pathlib.Path(proofs.__file__).resolve().parent
    if where != root / "proofs":
        raise CLIError(f"'import proofs' found {where}, not {root / 'proofs'}: another package named "
                       "'proofs' shadows the checkout's")
    start = time.perf_counter()
    stream = None if args.json else sys.stdout
    results, failures = proofs.run_all(numerical=not args.symbolic_only, stream=stream, verbose=args.verbose,
                                       raise_on_failure=False)
    seconds = time.perf_counter() - start
    if args.json:
        _print(_json_text({"command": "prove", "checkout": str(root), "numerical": not args.symbolic_only,
                           "seconds": seconds, "passed": len(results), "failed": len(failures),
                           "results": [r.to_dict() for r in results],
                           "failures": [{"module": m, "error": e} for m, e in failures]}))
    else:
        _print(f"total {seconds:.2f} s; {len(results)} passed, {len(failures)} failed")
    return _EXIT_NEGATIVE if failures else _EXIT_OK


# =========================================================================== families
def _family_dict(name: str, params: Mapping[str, Any]) -> dict:
    from . import mappings

    fam = mappings.get(name)
    out = {
        "name": name,
        "doc": (fam.doc.strip().splitlines() or [""])[0],
        "params": {p: {"kind": s.kind, "default": s.default, "valid": s.interval(), "doc": s.doc}
                   for p, s in fam.params.items()},
        "at": dict(params) if params else "defaults",
    }
    try:
        out["attributes"] = list(fam.attributes(**params))
    except (ValueError, TypeError) as exc:
        if params:
            raise CLIError(f"family {name!r}: {exc}") from None
        out["attributes"], out["error"] = None, f"{type(exc).__name__}: {exc}"
    return out


def _cmd_families(args: argparse.Namespace) -> int:
    from . import mappings

    names = list(args.names) or list(mappings.families())
    params = dict(args.param or [])
    if params and len(names) != 1:
        raise CLIError("--param needs exactly one family NAME")
    for name in names:
        mappings.get(name)  # an unknown name raises, listing the registered ones
    items = [_family_dict(n, params) for n in names]
    if args.json:
        _print(_json_text({"command": "families", "families": items}))
        return _EXIT_OK
    lines = []
    for it in items:
        at = "" if it["at"] == "defaults" else " at " + ", ".join(f"{k}={v!r}" for k, v in it["at"].items())
        lines.append(f"{it['name']}: {it['doc']}" if it["doc"] else it["name"])
        if it["attributes"] is None:
            lines.append(f"    attributes: n/a ({it['error']})")
        else:
            lines.append(textwrap.fill(", ".join(it["attributes"]) or "(none)", width=100,
                                       initial_indent=f"    attributes{at}: ", subsequent_indent=" " * 8))
        for p, s in it["params"].items():
            doc = f": {s['doc']}" if s["doc"] else ""
            lines.append(f"    {p} ({s['kind']}, default {s['default']!r}, {s['valid']}){doc}")
    lines.append("also: scaled(NAME) and scaled(NAME, norm=frobenius) of any family (ramodel.mappings.scaled)")
    _print("\n".join(lines))
    return _EXIT_OK


# =============================================================================== main
def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, (CLIError, ValueError, TypeError, OSError, ImportError, KeyError)):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text} (rerun with --debug for the traceback)"


def main(argv: Sequence[str] | None = None, *, default_command: str | None = None) -> int:
    """Run the ``ramodel`` command line; returns the exit status.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name (default ``sys.argv[1:]``).
    default_command : str, optional
        Subcommand to run when ``argv`` names none (``python -m ramodel`` passes
        ``"simulate"``, so ``python -m ramodel --depth 4`` is ``ramodel simulate --depth 4``).

    Examples
    --------
    >>> main(["families", "identity", "--json"]) == 0  # doctest: +ELLIPSIS
    {...
    True
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    commands = set(EXAMPLES)
    if default_command is not None and not any(a in commands for a in argv[:1]) and not (
            set(argv[:1]) & {"-h", "--help", "--version"}):
        argv = [default_command, *argv]
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        print("ramodel: error: a COMMAND is required", file=sys.stderr)
        return _EXIT_ERROR
    debug = bool(getattr(args, "debug", False))

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"ramodel {args.command}: warning: {' '.join(str(message).split())}", file=sys.stderr)

    with warnings.catch_warnings():
        if not debug:
            warnings.showwarning = show
        try:
            for name in args.imports:
                try:
                    importlib.import_module(name)
                except ImportError as exc:
                    raise CLIError(f"--import {name}: {exc}") from None
            return args.func(args)
        except KeyboardInterrupt:
            print(f"ramodel {args.command}: interrupted", file=sys.stderr)
            return _EXIT_INTERRUPTED
        except Exception as exc:
            if debug:
                raise
            print(f"ramodel {args.command}: error: {_one_line(exc)}", file=sys.stderr)
            return _EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
