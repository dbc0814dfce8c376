"""One reader for anything shaped like ``spec/FORMAT.md``.

Design constraints, first:

- Every consumer of Jacobian data (:func:`ramodel.analyze`, :func:`ramodel.theory.check`,
  :func:`ramodel.fit.fit_ujm`, :func:`ramodel.depth_scaling`, the HTML report) reads its
  input through :func:`as_source`: fields are looked up here once, by key for a mapping
  and by attribute otherwise, a bare array is taken as the Jacobians, and the layout
  (dense or factors, shared or per input) is decided once, with one set of messages.
- Provenance (a simulation's config, gradient norm, convergence, a file's ``meta``) is
  read by duck typing, so this module imports neither :mod:`ramodel.simulation` nor
  :mod:`ramodel.jacobian_set` (that import was the package's only cycle:
  theory -> simulation -> summary -> theory).
- Nothing here copies, converts or validates the arrays' values: each metric family
  checks dtype, finiteness and shapes at its own door, on the arrays found here.
- The numerical constants shared by the metrics and the theorem checks live here, once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

__all__ = [
    "ACTIVE_FLOOR",
    "FIELDS",
    "ORDER_FACTOR",
    "ORTHONORMAL_FACTOR",
    "RANK_TAU",
    "THEOREM_TOL",
    "Provenance",
    "Source",
    "as_source",
    "check_factor_values",
    "get_field",
    "is_bare_array",
    "is_simulation",
    "resolve_classes",
]

#: Relative threshold of the numerical rank, ``sigma_i > tau sigma_1`` (METRICS.md default).
RANK_TAU = 1e-3
#: Factors are orthonormal when ``max |Q^T Q - I| <= ORTHONORMAL_FACTOR sqrt(d) eps``.
ORTHONORMAL_FACTOR = 100.0
#: Singular values may rise along their axis by at most ``ORDER_FACTOR eps sigma_1``.
ORDER_FACTOR = 100.0
#: Default tolerance of the theorem verdicts for float64 input.
THEOREM_TOL = 1e-6
#: Branches whose relative gain ``sigma_1(J_l) / max(1, |M_l|_2)`` is below this are inactive.
ACTIVE_FLOOR = 1e-6

#: The FORMAT.md keys (plus ``classifier_bias``) that a source may give.
FIELDS = ("jacobians", "U", "S", "V", "labels", "classes", "representations", "skips", "classifier",
          "classifier_bias")

_SIMULATION_ATTRS = ("config", "grad_norm", "converged", "is_trivial", "jacobians")


def get_field(obj: Any, name: str) -> Any:
    """``obj[name]`` for a mapping, ``obj.name`` otherwise; None when absent."""
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def is_bare_array(obj: Any) -> bool:
    """True for an array of Jacobians given as such (not a mapping, not a JacobianSet)."""
    return (not isinstance(obj, Mapping) and hasattr(obj, "shape") and hasattr(obj, "dtype")
            and not hasattr(obj, "jacobians"))


def is_simulation(obj: Any) -> bool:
    """Duck-typed :class:`ramodel.Simulation`: a solved model with its config and convergence."""
    return (not isinstance(obj, Mapping) and all(hasattr(obj, a) for a in _SIMULATION_ATTRS)
            and isinstance(getattr(obj, "config", None), Mapping))


def resolve_classes(own: Any, given: int | None = None) -> int:
    """The number of classes C from the source's ``own`` value and the caller's ``given`` one.

    ``own`` may be an int or a 0-d integer array (an ``.npz`` file's). Both, when given,
    must agree.
    """
    from ._validation import check_int

    if own is not None:
        own = _integer_scalar(own)
    if given is not None:
        given = check_int("classes", given, minimum=2)
        if own is not None and own != given:
            raise ValueError(f"classes={given} disagrees with the source's classes = {own}")
        return given
    if own is None:
        raise ValueError("the number of classes C is unknown: the source has no 'classes'; pass classes= "
                         "(always needed for a bare array of Jacobians)")
    return check_int("classes", own, minimum=2)


def _integer_scalar(value: Any) -> int:
    if hasattr(value, "shape") and not isinstance(value, (int, np.generic)):
        from .backend import to_numpy

        arr = np.asarray(to_numpy(value))
        if arr.ndim != 0 or arr.dtype.kind not in "iu":
            raise TypeError(
                f"'classes' must be an integer scalar, got an array of shape {arr.shape} and dtype {arr.dtype}"
            )
        return int(arr)
    return value


@dataclass(frozen=True)
class Provenance:
    """Where a source came from, read by duck typing.

    Attributes
    ----------
    kind : str
        ``"simulation"``, ``"arrays"`` (a mapping) or the type's name (``"JacobianSet"``).
    config : Mapping
        A simulation's options (empty otherwise).
    meta : Mapping
        A file's ``meta`` (empty otherwise).
    loss : str or None
        The training loss: the config's ``loss``, else ``meta["loss"]``, else a ``loss`` field.
    grad_norm : float or None
        A simulation's final ``|grad Phi|``.
    converged : bool or None
        A simulation's ``converged``.
    trivial : bool
        The source says it sits at the trivial critical point ``J = 0``.
    """

    kind: str
    config: Mapping = field(default_factory=lambda: MappingProxyType({}))
    meta: Mapping = field(default_factory=lambda: MappingProxyType({}))
    loss: str | None = None
    grad_norm: float | None = None
    converged: bool | None = None
    trivial: bool = False

    @property
    def is_simulation(self) -> bool:
        return self.kind == "simulation"


def _provenance(obj: Any) -> Provenance:
    sim = is_simulation(obj)
    kind = "simulation" if sim else ("arrays" if isinstance(obj, Mapping) else type(obj).__name__)
    cfg = getattr(obj, "config", None) if not isinstance(obj, Mapping) else None
    cfg = cfg if isinstance(cfg, Mapping) else {}
    meta = get_field(obj, "meta")
    meta = meta if isinstance(meta, Mapping) else {}
    loss = None
    for cand in (cfg.get("loss"), meta.get("loss"), get_field(obj, "loss")):
        if isinstance(cand, str):
            loss = cand
            break
    return Provenance(
        kind=kind,
        config=MappingProxyType(dict(cfg)),
        meta=MappingProxyType(dict(meta)),
        loss=loss,
        grad_norm=float(obj.grad_norm) if sim else None,
        converged=bool(obj.converged) if sim else None,
        trivial=getattr(obj, "is_trivial", False) is True,
    )


@dataclass(frozen=True)
class Source:
    """The fields of one FORMAT.md-shaped input, found once.

    The arrays are the caller's own objects (never copied); each may be None.

    Attributes
    ----------
    layout : {"dense", "factors"} or None
        ``jacobians`` given, or ``U, S, V``; None when the source has no Jacobians
        (:meth:`require_jacobians` raises then).
    jacobians : array, shape (L, N, d, d) or (L, d, d), or None
    U, V : array, shape (L, N, d, k) or (L, d, k), or None
    S : array, shape (L, N, k) or (L, k), or None
    labels : array, shape (N,), or None
    classes : int, 0-d array or None
        As the source gives it; :meth:`classes_or` resolves it.
    representations : array, shape (L+1, N, d), or None
    skips : array, shape (L, d, d) or (d, d), or None
    classifier : array, shape (C, d), or None
    classifier_bias : array, shape (C,), or None
    depth : int or None
        The source's own ``depth`` when it states one.
    provenance : Provenance
    bare : bool
        The source was a bare array of Jacobians.
    """

    layout: str | None
    jacobians: Any = None
    U: Any = None
    S: Any = None
    V: Any = None
    labels: Any = None
    classes: Any = None
    representations: Any = None
    skips: Any = None
    classifier: Any = None
    classifier_bias: Any = None
    depth: Any = None
    provenance: Provenance = field(default_factory=lambda: Provenance("arrays"))
    bare: bool = False

    @property
    def kind(self) -> str:
        return self.provenance.kind

    @property
    def namespace(self) -> Any:
        """The array namespace of the Jacobians (NumPy, CuPy, any array-API library), or None."""
        from .backend import get_namespace

        lead = self.jacobians if self.layout == "dense" else self.U
        return None if lead is None or not hasattr(lead, "shape") else get_namespace(lead)

    @property
    def factors(self) -> tuple | None:
        return None if self.layout != "factors" else (self.U, self.S, self.V)

    @property
    def shared(self) -> bool | None:
        """True when the Jacobians do not depend on the input (``(L, d, d)`` / ``(L, d, k)``)."""
        lead = self.jacobians if self.layout == "dense" else self.U
        return None if lead is None else getattr(lead, "ndim", None) == 3

    @property
    def arrays(self) -> dict:
        """Every FORMAT.md array the source gives, by key."""
        return {k: getattr(self, k) for k in FIELDS if k != "classes" and getattr(self, k) is not None}

    def require_jacobians(self) -> str:
        """The layout; raises when the source holds no Jacobians."""
        if self.layout is None:
            raise ValueError("the source has no Jacobians: give 'jacobians' (dense) or 'U', 'S', 'V' (top-k "
                             "factors), or pass the array of Jacobians itself")
        return self.layout

    def classes_or(self, classes: int | None = None) -> int:
        """C from the source and/or ``classes``; see :func:`resolve_classes`."""
        return resolve_classes(self.classes, classes)


def as_source(obj: Any, *, name: str = "source", expected: str | None = None) -> Source:
    """Read ``obj`` (a Simulation, a JacobianSet, a mapping of FORMAT.md arrays or a bare
    array of Jacobians) into a :class:`Source`.

    Parameters
    ----------
    obj : object, Mapping or array
    name : str, default "source"
        The argument's name in messages.
    expected : str, optional
        What the argument may be, for the message on None.

    Raises
    ------
    TypeError
        ``obj`` is None.
    ValueError
        Both ``jacobians`` and factors are given, or only some of ``U, S, V``.

    Examples
    --------
    >>> import numpy as np
    >>> src = as_source(np.zeros((2, 3, 3)))
    >>> src.layout, src.shared, src.bare, src.kind, src.namespace.__name__
    ('dense', True, True, 'arrays', 'numpy')
    """
    if obj is None:
        expected = expected or "an object or a mapping with FORMAT.md fields, or an array of Jacobians"
        raise TypeError(f"{name} must be {expected}, got None")
    if isinstance(obj, Source):
        return obj
    bare = is_bare_array(obj)
    if bare:
        obj = {"jacobians": obj}
    prov = _provenance(obj)
    found = {key: get_field(obj, key) for key in FIELDS}
    J = found["jacobians"]
    given = [key for key in ("U", "S", "V") if found[key] is not None]
    if J is not None and given:
        raise ValueError(f"give exactly one of 'jacobians' (dense) or 'U', 'S', 'V' (factors), got both ({given})")
    if given:
        missing = [key for key in ("U", "S", "V") if found[key] is None]
        if missing:
            raise ValueError(f"the factor form needs 'U', 'S' and 'V'; missing {missing}")
    layout = "dense" if J is not None else ("factors" if given else None)
    return Source(layout=layout, depth=get_field(obj, "depth"), provenance=prov, bare=bare, **found)


def _eps(a: Any) -> float:
    return float(np.finfo(np.dtype(str(a.dtype).split(".")[-1])).eps)


def check_factor_values(U: Any, S: Any, V: Any, *, names: tuple[str, str, str] = ("'U'", "'S'", "'V'")) -> None:
    """The FORMAT.md rule for top-k factors of well-shaped, finite arrays, in their namespace.

    ``S`` is non-negative and non-increasing along its last axis up to
    ``ORDER_FACTOR * eps * |S[..., 0]|``; ``U`` and ``V`` have orthonormal columns up to
    ``ORTHONORMAL_FACTOR * sqrt(d) * eps`` (each array's own ``eps``). The message names
    the array (as ``names`` spell it: quoted keys by default, the metrics' argument names
    unquoted), the worst deviation, where it is and the tolerance. The one copy of the
    check behind :class:`ramodel.JacobianSet`, the metrics and the theorem measures.

    Raises
    ------
    ValueError

    Examples
    --------
    >>> Q = np.linalg.qr(np.random.default_rng(0).standard_normal((2, 5, 3)))[0]
    >>> check_factor_values(Q, np.array([[3.0, 2.0, 1.0]] * 2), Q)
    >>> check_factor_values(1.1 * Q, np.array([[3.0, 2.0, 1.0]] * 2), Q)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: 'U' must have orthonormal columns: max |U^T U - I| = 0.21 at layer 0, above the tolerance 4.97e-14 ...
    """
    from .backend import get_namespace, matrix_transpose, to_numpy

    nU, nS, nV = names
    xp = get_namespace(U, S, V)
    tol = ORDER_FACTOR * _eps(S) * xp.abs(S[..., :1])
    if bool(xp.any(S < -tol)):
        raise ValueError(f"{nS} holds singular values, which must be >= 0; found min {float(xp.min(S)):.3g}")
    if int(S.shape[-1]) > 1:
        bad = np.asarray(to_numpy(S[..., 1:] - S[..., :-1] > tol), dtype=bool)
        if bad.any():
            *lead, i = (int(j) for j in np.unravel_index(int(np.argmax(bad)), bad.shape))
            host = np.asarray(to_numpy(S))
            at = ", ".join(str(j) for j in lead)
            raise ValueError(
                f"{nS} must be non-increasing along its last axis (tolerance {ORDER_FACTOR:g} * eps * "
                f"S[..., 0]), but S[{at}, {i + 1}] = {float(host[(*lead, i + 1)]):.6g} > "
                f"S[{at}, {i}] = {float(host[(*lead, i)]):.6g}"
            )
    for name, Q in ((nU, U), (nV, V)):
        key = name.strip("'")
        d, k = int(Q.shape[-2]), int(Q.shape[-1])
        otol = ORTHONORMAL_FACTOR * math.sqrt(d) * _eps(Q)
        gram = xp.matmul(matrix_transpose(Q, xp), Q) - xp.eye(k, dtype=Q.dtype)
        err = np.asarray(to_numpy(xp.max(xp.abs(gram), axis=(-2, -1))), dtype=np.float64)
        worst = float(err.max())
        if not worst <= otol:
            where = tuple(int(j) for j in np.unravel_index(int(np.argmax(err)), err.shape))
            at = f"at layer {where[0]}" + (f", input {where[1]}" if len(where) > 1 else "")
            raise ValueError(
                f"{name} must have orthonormal columns: max |{key}^T {key} - I| = {worst:.3g} {at}, "
                f"above the tolerance {otol:.3g} (= {ORTHONORMAL_FACTOR:g} * sqrt(d) * "
                f"eps({str(Q.dtype).split('.')[-1]}))"
            )
