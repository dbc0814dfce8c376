"""The ``ramodel`` command line: simulate, sweep, analyze, theory, train, prove, families.

One module per command (``ramodel/cli/<command>.py``: ``NAME``, ``HELP``, ``DESCRIPTION``,
``EXAMPLES``, ``configure(parser)`` and ``run(args)``), declared once in :data:`COMMANDS`;
shared parser pieces, errors and printing live in :mod:`ramodel.cli._common`. A new
command is a new module plus one entry in :data:`COMMANDS`.

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

import importlib
import sys
import warnings
from collections.abc import Sequence

from . import analyze, families, prove, simulate, sweep, theory, train
from ._common import (  # noqa: F401 - the names of the single-module CLI stay importable
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_NEGATIVE,
    EXIT_OK,
    CLIError,
    _add_model_options,
    _atomic_write,
    _common,
    _Formatter,
    _html_target,
    _json_text,
    _jsonable,
    _key_value,
    _load_sets,
    _model_kwargs,
    _names_for,
    _one_line,
    _out_dir,
    _Parser,
    _positive_int,
    _print,
    _table_text,
)
from .prove import find_checkout
from .simulate import simulation_jacobian_set
from .sweep import RUN_KEY_EXCLUDED, run_key

__all__ = [
    "COMMANDS",
    "EXAMPLES",
    "RUN_KEY_EXCLUDED",
    "CLIError",
    "build_parser",
    "find_checkout",
    "main",
    "run_key",
    "simulation_jacobian_set",
]

_EXIT_OK, _EXIT_NEGATIVE, _EXIT_ERROR, _EXIT_INTERRUPTED = EXIT_OK, EXIT_NEGATIVE, EXIT_ERROR, EXIT_INTERRUPTED

#: The commands, in the order ``ramodel --help`` lists them: one module each.
COMMANDS = (simulate, sweep, analyze, theory, train, prove, families)

#: Each command's examples (its ``--help`` epilog), by name.
EXAMPLES = {mod.NAME: mod.EXAMPLES for mod in COMMANDS}


def build_parser():
    """The ``ramodel`` argument parser, with one subparser per entry of :data:`COMMANDS`."""
    from .. import __version__

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
    for mod in COMMANDS:
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.DESCRIPTION, parents=[common],
                           epilog=mod.EXAMPLES, formatter_class=_Formatter)
        mod.configure(p)
        p.set_defaults(func=mod.run)
    return parser


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
        return EXIT_ERROR
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
            return EXIT_INTERRUPTED
        except Exception as exc:
            if debug:
                raise
            print(f"ramodel {args.command}: error: {_one_line(exc)}", file=sys.stderr)
            return EXIT_ERROR

