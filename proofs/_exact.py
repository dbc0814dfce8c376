"""Exact decision procedures shared by the proofs, and the result objects.

Design constraints
------------------
* A claim is accepted only when it reduces to an identity that is *decided*,
  never to a heuristic: ``sympy.simplify(...) == 0`` and ``Expr.equals`` are not
  used anywhere in ``proofs/``.
* Matrix statements "for all sizes" are decided in the free associative algebra
  with involution (transpose) over the field of rational functions in the scalar
  symbols. :func:`nc_terms` expands a SymPy matrix expression into its unique
  normal form there: a dictionary ``word -> coefficient``, where a word is a
  tuple of ``(name, transposed)`` letters. Two expressions are equal in that
  algebra if and only if their normal forms agree, so an identity proven this
  way holds for every size and every substitution of matrices.
* Side relations (``Q^T Q = I`` for an orthogonal ``Q``, ``v^T u = c``) enter
  only as length-reducing rewrite rules on adjacent letters (:class:`Rules`).
  The rules used here are confluent (their only overlaps, ``Q Q^T Q`` and
  ``Q^T Q Q^T``, reduce to the same word both ways), so the reduced normal form
  is unique and a zero result is a proof modulo those relations.
* Scalar statements are decided with ``sympy.cancel`` on rational functions,
  or in SymPy's polynomial rings/fields (``sympy.polys``), which are exact.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Iterable

import sympy as sp
from sympy.matrices.expressions import (
    Identity,
    MatAdd,
    MatMul,
    MatPow,
    MatrixSymbol,
    Transpose,
    ZeroMatrix,
)

__all__ = [
    "ProofFailure",
    "Claim",
    "ProofResult",
    "Rules",
    "nc_terms",
    "nc_is_zero",
    "require_nc_zero",
    "require_scalar_zero",
    "require",
    "ProofLog",
    "skew",
]

Letter = tuple[str, bool]
Word = tuple[Letter, ...]


class ProofFailure(AssertionError):
    """An exact identity that a proof relies on did not reduce to zero."""


@dataclass(frozen=True)
class Claim:
    """One checked statement.

    Attributes
    ----------
    statement : str
        What is claimed, in the notation of ``spec/MODEL.md``.
    scope : str
        ``"all sizes"`` (symbolic, any d, C, N, L), ``"fixed sizes: ..."``
        (exact, only for the sizes named) or ``"numerical"``. A fixed-size scope
        ending in ``"(cross-check)"`` re-derives, at explicit sizes, a claim that
        is also proven for all sizes.
    method : str
        How it was decided (normal form in the free algebra, ``cancel``, ...).
    """

    statement: str
    scope: str
    method: str


@dataclass(frozen=True)
class ProofResult:
    """Outcome of one theorem module's :func:`prove`.

    Attributes
    ----------
    name : str
        Theorem label, e.g. ``"T3"``.
    title : str
        Short title.
    status : str
        ``"proven"`` (every exact claim holds for all sizes), ``"proven for fixed
        sizes"`` (some exact claim was decided only for the sizes named in its
        scope) or ``"checked-only"`` (no exact proof, numerical evidence only).
    seconds : float
        Wall time of the symbolic and numerical parts together.
    max_deviation : float or None
        Largest numerical deviation over all numerical checks (each a relative,
        dimensionless measure; see ``details``), or ``None`` when no numerical
        check ran (e.g. ``ramodel.simulate`` is unavailable).
    claims : tuple of Claim
        Every claim that was decided or checked.
    details : tuple of str
        Free-text notes: tolerances, sizes, skipped parts.
    assumptions : tuple of str
        Textbook facts the proof rests on without machine-checking them, each with a
        citation (:meth:`ProofLog.assume`).
    conjectures : tuple of str
        Statements that are *not* proven, each with its numerical evidence and the
        counterexample search that failed (:meth:`ProofLog.conjecture`). They never
        count towards ``status``; :meth:`line` prints how many there are.
    """

    name: str
    title: str
    status: str
    seconds: float
    max_deviation: float | None
    claims: tuple[Claim, ...]
    details: tuple[str, ...]
    assumptions: tuple[str, ...] = ()
    conjectures: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        """Plain-Python view (JSON-serialisable)."""
        return asdict(self)

    def line(self) -> str:
        """One-line summary as printed by ``python -m proofs``."""
        dev = "n/a" if self.max_deviation is None else f"{self.max_deviation:.2e}"
        status = self.status
        if self.conjectures:
            n = len(self.conjectures)
            status = f"{status} + {n} conjecture" + ("s" if n > 1 else "")
        return (
            f"{self.name:<9} {status:<24} {self.seconds:7.2f} s   "
            f"max deviation {dev:<9} {self.title}"
        )


@dataclass
class ProofLog:
    """Mutable accumulator used inside one ``prove()`` call (never returned)."""

    name: str
    title: str
    claims: list[Claim] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    deviations: list[float] = field(default_factory=list)
    assumptions: list[str] = field(default_factory=list)
    conjectures: list[str] = field(default_factory=list)
    start: float = field(default_factory=time.perf_counter)

    def assume(self, fact: str, citation: str) -> None:
        """Record a textbook fact used without a machine check, with where it is proven."""
        self.assumptions.append(f"{fact} [{citation}]")

    def conjecture(self, statement: str, evidence: str) -> None:
        """Record an unproven statement with its numerical evidence (never part of the status)."""
        self.conjectures.append(f"CONJECTURE: {statement} EVIDENCE: {evidence}")

    def claim(self, statement: str, scope: str, method: str) -> None:
        self.claims.append(Claim(statement, scope, method))

    def note(self, text: str) -> None:
        self.details.append(text)

    def deviation(self, label: str, value: float, tol: float) -> None:
        """Record a numerical deviation and fail if it exceeds ``tol``."""
        value = float(value)
        if not value <= tol:  # also catches NaN
            raise ProofFailure(f"{self.name}: {label} = {value:.3e} exceeds tolerance {tol:.1e}")
        self.deviations.append(value)

    def result(self) -> ProofResult:
        # Cross-checks (explicit small sizes of a claim also proven for all sizes)
        # do not lower the status.
        exact = [c for c in self.claims if c.scope != "numerical" and "cross-check" not in c.scope]
        if not exact:
            status = "checked-only"
        elif all(c.scope == "all sizes" for c in exact):
            status = "proven"
        else:
            status = "proven for fixed sizes"
        return ProofResult(
            name=self.name,
            title=self.title,
            status=status,
            seconds=time.perf_counter() - self.start,
            max_deviation=max(self.deviations) if self.deviations else None,
            claims=tuple(self.claims),
            details=tuple(self.details),
            assumptions=tuple(self.assumptions),
            conjectures=tuple(self.conjectures),
        )


# ---------------------------------------------------------------------------
# Free algebra with involution
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Rules:
    """Relations applied as rewrite rules on adjacent letters.

    Parameters
    ----------
    orthogonal : iterable of str
        Names ``Q`` with ``Q^T Q = Q Q^T = I``.
    symmetric : iterable of str
        Names ``S`` with ``S^T = S``.
    pairs : dict
        ``{(left_letter, right_letter): scalar}``: the adjacent pair is replaced
        by the scalar (e.g. ``{(("v", True), ("u", False)): c}`` for ``v^T u = c``).
    """

    orthogonal: frozenset = frozenset()
    symmetric: frozenset = frozenset()
    pairs: tuple = ()

    @staticmethod
    def make(orthogonal: Iterable[str] = (), symmetric: Iterable[str] = (), pairs=None) -> "Rules":
        return Rules(frozenset(orthogonal), frozenset(symmetric), tuple((pairs or {}).items()))

    def reduce(self, word: Word) -> tuple[sp.Expr, Word]:
        """Reduce a word to its normal form; return ``(scalar, word)``."""
        pair_map = dict(self.pairs)
        coeff = sp.Integer(1)
        letters = [(n, False) if n in self.symmetric else (n, t) for n, t in word]
        out: list[Letter] = []
        for letter in letters:
            out.append(letter)
            # A stack reduction suffices: every rule rewrites the last two letters.
            while len(out) >= 2:
                a, b = out[-2], out[-1]
                if a[0] == b[0] and a[0] in self.orthogonal and a[1] != b[1]:
                    del out[-2:]
                elif (a, b) in pair_map:
                    coeff = coeff * pair_map[(a, b)]
                    del out[-2:]
                else:
                    break
        return coeff, tuple(out)


_NO_RULES = Rules()


def _mul(x: dict, y: dict) -> dict:
    out: dict = {}
    for wx, cx in x.items():
        for wy, cy in y.items():
            w = wx + wy
            out[w] = out.get(w, 0) + cx * cy
    return out


def _add(x: dict, y: dict, scale=1) -> dict:
    out = dict(x)
    for w, c in y.items():
        out[w] = out.get(w, 0) + scale * c
    return out


def _transpose(x: dict) -> dict:
    return {tuple((n, not t) for n, t in reversed(w)): c for w, c in x.items()}


def _expand(expr) -> dict:
    """Expand a matrix expression into ``{word: coefficient}`` (no reduction)."""
    if isinstance(expr, MatrixSymbol):
        return {((expr.name, False),): sp.Integer(1)}
    if isinstance(expr, Identity):
        return {(): sp.Integer(1)}
    if isinstance(expr, ZeroMatrix):
        return {}
    if isinstance(expr, Transpose):
        return _transpose(_expand(expr.arg))
    if isinstance(expr, MatAdd):
        out: dict = {}
        for a in expr.args:
            out = _add(out, _expand(a))
        return out
    if isinstance(expr, MatMul):
        out = {(): sp.Integer(1)}
        for a in expr.args:
            if getattr(a, "is_Matrix", False):
                out = _mul(out, _expand(a))
            else:
                out = {w: c * a for w, c in out.items()}
        return out
    if isinstance(expr, MatPow) and expr.exp.is_Integer and expr.exp >= 0:
        base = _expand(expr.base)
        out = {(): sp.Integer(1)}
        for _ in range(int(expr.exp)):
            out = _mul(out, base)
        return out
    raise TypeError(f"nc_terms: unsupported matrix expression {type(expr).__name__}: {expr}")


def nc_terms(expr, rules: Rules = _NO_RULES) -> dict[Word, sp.Expr]:
    """Normal form of a matrix expression in the free algebra with transpose.

    Parameters
    ----------
    expr : sympy MatrixExpr
        Built from ``MatrixSymbol``, ``Identity``, ``ZeroMatrix``, sums, products,
        scalar multiples, transposes and non-negative integer powers.
    rules : Rules, optional
        Relations to reduce by (orthogonal / symmetric letters, pair contractions).

    Returns
    -------
    dict
        ``{word: coefficient}`` with every coefficient non-zero after
        ``sympy.cancel``; the empty dict means ``expr == 0`` identically.

    Examples
    --------
    >>> import sympy as sp
    >>> n = sp.Symbol("n", integer=True, positive=True)
    >>> A, B = sp.MatrixSymbol("A", n, n), sp.MatrixSymbol("B", n, n)
    >>> nc_terms((A * B).T - B.T * A.T)
    {}
    >>> nc_terms(A * B - B * A)
    {(('A', False), ('B', False)): 1, (('B', False), ('A', False)): -1}
    """
    raw = _expand(expr)
    out: dict = {}
    for w, c in raw.items():
        k, w2 = rules.reduce(w)
        out[w2] = out.get(w2, 0) + k * c
    return {w: c for w, c in out.items() if sp.cancel(sp.together(c)) != 0}


def nc_is_zero(expr, rules: Rules = _NO_RULES) -> bool:
    """True iff ``expr`` reduces to 0 in the free algebra (modulo ``rules``).

    Examples
    --------
    >>> import sympy as sp
    >>> n = sp.Symbol("n", integer=True, positive=True)
    >>> Q = sp.MatrixSymbol("Q", n, n)
    >>> nc_is_zero(Q.T * Q - sp.Identity(n))
    False
    >>> nc_is_zero(Q.T * Q - sp.Identity(n), Rules.make(orthogonal=["Q"]))
    True
    """
    return not nc_terms(expr, rules)


def require_nc_zero(expr, what: str, rules: Rules = _NO_RULES) -> None:
    """Raise :class:`ProofFailure` unless ``expr`` reduces to zero exactly."""
    rest = nc_terms(expr, rules)
    if rest:
        shown = ", ".join(f"{c}*{w}" for w, c in list(rest.items())[:4])
        raise ProofFailure(f"not an identity: {what}; remaining terms: {shown}")


def require_scalar_zero(expr, what: str) -> None:
    """Raise unless the rational expression ``expr`` cancels to exactly 0."""
    if sp.cancel(sp.together(expr)) != 0:
        raise ProofFailure(f"not an identity: {what}; residue {sp.cancel(expr)}")


def require(condition: bool, what: str) -> None:
    """Raise :class:`ProofFailure` unless ``condition`` is exactly True."""
    if condition is not True:
        raise ProofFailure(f"failed: {what}")


def skew(X):
    """``X - X^T`` (twice the antisymmetric part), as a matrix expression."""
    return X - X.T

