"""``ramodel prove``: run the SymPy proofs of a source checkout's ``proofs/``.

Only parsing and printing: the work is done by the library functions named in the help.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import pathlib
import sys

from ._common import EXIT_NEGATIVE, EXIT_OK, CLIError, _json_text, _print

NAME = 'prove'
HELP = 'run the SymPy proofs of proofs/'
DESCRIPTION = (
    'Run the SymPy derivations of the gradient formula and of T1-T6 (proofs/), each checked against converged simulations.'
)
EXAMPLES = """\
examples:
  ramodel prove                     # SymPy derivations of the gradient and T1-T6, with numerical checks
  ramodel prove --symbolic-only --json

Runs proofs/ of a source checkout (found next to the installed ramodel package, or in the
current folder or one of its parents). Exit status 1 if any proof fails."""


def configure(p: argparse.ArgumentParser) -> None:
    """Add the options of ``ramodel prove`` to ``p``."""
    p.add_argument("--symbolic-only", action="store_true", help="skip the numerical checks")
    p.add_argument("--verbose", action="store_true", help="print every claim, its scope and method")
def find_checkout() -> pathlib.Path | None:
    """The source checkout holding ``proofs/``: next to the ramodel package, else the cwd or a parent."""
    here = pathlib.Path(__file__).resolve().parents[2]  # ramodel/cli/prove.py -> the checkout
    cwd = pathlib.Path.cwd().resolve()
    for root in (here, cwd, *cwd.parents):
        if (root / "proofs" / "__init__.py").is_file() and (root / "proofs" / "run_all.py").is_file():
            return root
    return None


def run(args: argparse.Namespace) -> int:
    import time

    from .. import (
        cli,  # through the package, so ramodel.cli.find_checkout (the public name) is what runs
    )

    root = cli.find_checkout()
    if root is None:
        raise CLIError("proofs/ is not installed with ramodel: run 'ramodel prove' from a source checkout "
                       "(the folder holding proofs/ and ramodel/)")
    if importlib.util.find_spec("sympy") is None:
        raise CLIError("the proofs need SymPy, which is not installed: "
                       "python -m pip install 'ramodel[proofs]' (or pip install sympy)")
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
    return EXIT_NEGATIVE if failures else EXIT_OK
