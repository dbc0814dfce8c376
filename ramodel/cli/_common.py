"""Pieces shared by the ``ramodel`` commands: errors, exit codes, parser pieces, output.

A command module imports from here and from the library only; nothing here computes.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from .._format import jsonable


class CLIError(Exception):
    """Bad input the command line detected itself; its message is shown as one line."""


#: ``simulate`` options that are not part of a sweep's run key (arrays, never set by the CLI).

EXIT_OK, EXIT_NEGATIVE, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130

# ============================================================================ parsing
class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (usage goes to ``--help``)."""

    def error(self, message):
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


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



# ============================================================================ output
_jsonable = jsonable  # one JSON-safe converter, in ramodel._format


def _json_text(payload: Mapping) -> str:
    from .. import __version__

    return json.dumps(_jsonable({"ramodel": __version__, **payload}), indent=2, allow_nan=False) + "\n"


def _atomic_write(path: pathlib.Path, data: str | bytes) -> pathlib.Path:
    from .._io import atomic_write_bytes

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


def _load_sets(files: Sequence[pathlib.Path]):
    from ..jacobian_set import JacobianSet

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


def _one_line(exc: BaseException) -> str:
    """An exception as the one line ``main`` prints (its type named unless it is bad input)."""
    text = " ".join(str(exc).split())
    if isinstance(exc, (CLIError, ValueError, TypeError, OSError, ImportError, KeyError)):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text} (rerun with --debug for the traceback)"
