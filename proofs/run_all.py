"""Run every proof and print one line per theorem.

Usage: ``python -m proofs [--symbolic-only] [--verbose] [--json PATH]`` or
``python proofs/run_all.py ...`` from the repository root. Exit status 1 if any
exact identity or numerical check fails.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
import time
import traceback
from typing import TextIO

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    __package__ = "proofs"

__all__ = ["THEOREMS", "run_all", "main"]

#: Proof modules in the order they are run (the gradient formula first: every theorem uses it).
THEOREMS = (
    "gradient",
    "t1_rank",
    "t2_chain",
    "t3_identity_skips",
    "t4_depth_scaling",
    "t5_trajectories",
    "t6_entangled",
    "t7_depth_law",
    "t8_binary_ra1",
    "t9_minimisers",
    "t10_two_factor",
)


def run_all(*, numerical: bool = True, stream: TextIO | None = None, verbose: bool = False,
            raise_on_failure: bool = True):
    """Run every proof module's ``prove``.

    Parameters
    ----------
    numerical : bool, default True
        Also run the numerical checks (needs ``ramodel.simulate`` for the simulation parts).
    stream : text stream, optional
        Where to print one line per theorem (nothing is printed when None).
    verbose : bool, default False
        Also print every claim and note.
    raise_on_failure : bool, default True
        Re-raise the first failure after printing it; otherwise record it and go on.

    Returns
    -------
    tuple
        ``(results, failures)``: the ``ProofResult`` of every module that passed, and
        ``(module, message)`` for every module that failed.
    """
    results, failures = [], []
    for name in THEOREMS:
        module = importlib.import_module(f"proofs.{name}")
        start = time.perf_counter()
        try:
            res = module.prove(numerical=numerical)
        except Exception as exc:  # report every failure, not only the first
            failures.append((name, f"{type(exc).__name__}: {exc}"))
            if stream is not None:
                print(f"{name:<9} FAILED after {time.perf_counter() - start:.2f} s: {type(exc).__name__}: {exc}",
                      file=stream)
                if verbose:
                    traceback.print_exc(file=stream)
            if raise_on_failure:
                raise
            continue
        results.append(res)
        if stream is not None:
            print(res.line(), file=stream)
            if verbose:
                for c in res.claims:
                    print(f"    [{c.scope}] {c.statement}\n        ({c.method})", file=stream)
                for n in res.details:
                    print(f"    note: {n}", file=stream)
                for a in res.assumptions:
                    print(f"    assumed (textbook): {a}", file=stream)
                for c in res.conjectures:
                    print(f"    {c}", file=stream)
    return tuple(results), tuple(failures)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m proofs", description=__doc__.splitlines()[0])
    parser.add_argument("--symbolic-only", action="store_true", help="skip the numerical checks")
    parser.add_argument("--verbose", action="store_true", help="print every claim, its scope and method")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    results, failures = run_all(numerical=not args.symbolic_only, stream=sys.stdout, verbose=args.verbose,
                                raise_on_failure=False)
    print(f"total {time.perf_counter() - start:.2f} s; {len(results)} passed, {len(failures)} failed")
    if args.json:
        payload = {"results": [r.to_dict() for r in results], "failures": [list(f) for f in failures]}
        folder = os.path.dirname(os.path.abspath(args.json))
        with tempfile.NamedTemporaryFile("w", dir=folder, delete=False, suffix=".tmp") as fh:
            json.dump(payload, fh, indent=2)
        os.replace(fh.name, args.json)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
