"""SymPy derivations of the theorems of spec/MODEL.md (§2 gradient, T1-T10).

One module per theorem; each exposes ``prove(*, numerical=True) -> ProofResult``.
Exact claims are decided (free-algebra normal forms, ``sympy.cancel``, exact
polynomial rings/fields), never by heuristic simplification; numerical claims are
checked against converged ``ramodel.simulate`` runs. See ``proofs/README.md`` for
what is proven, for which sizes, and what is only checked numerically.

Run everything with ``python -m proofs`` or ``python proofs/run_all.py``.
This package is not installed with ``ramodel``; import it with the repository root
on ``sys.path``.
"""

from ._exact import Claim, ProofFailure, ProofResult
from .run_all import THEOREMS, run_all

__all__ = ["Claim", "ProofFailure", "ProofResult", "THEOREMS", "run_all"]
