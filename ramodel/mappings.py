"""Skip mappings ``M``: the identity and the entangled families of MAPPINGS.md.

An entangled residual block is ``h_{l+1} = M_l h_l + F_l(h_l)``, with ``M_l`` a fixed
``width x width`` matrix drawn once from a seed.

Design constraints, in order:

1. One registry serves :func:`ramodel.simulate`, the PyTorch blocks and the tests:
   ``get(name)(width, seed=..., **params)`` draws a matrix; :func:`draw_stack` draws
   one per block.
2. Randomness is drawn on the host with NumPy from one seed, then moved to the
   requested backend and dtype (see :mod:`ramodel.backend`), so a seed gives the same
   matrix everywhere. A draw is always made in float64 and then cast.
3. A new family is a few lines: a function ``(width, rng, **params) -> matrix``
   registered with :func:`register`, which declares its attributes and its parameters
   (:class:`Param`). The registry validates the parameters before the function runs
   and validates the matrix after (square, real, finite).
4. Attribute checks (:func:`check`) are exact where structure allows it and otherwise
   use tolerances derived from rounding-error bounds. Spectra and determinants are read
   off the irreducible diagonal blocks of the Frobenius normal form (strongly connected
   components of the nonzero pattern), a permutation similarity, so a hidden
   triangular matrix is certified exactly instead of through the ``eps**(1/n)``
   error of an eigensolver or LU on a defective matrix.

Usage
-----
``get(name)`` returns the :class:`Family`; calling it draws a dense matrix,
``.structured(...)`` the same draw as a :class:`LinearMap`, ``.attributes(...)`` the
declared attributes. ``"scaled(NAME)"`` (see :func:`scaled`) is a derived family
resolved by name, not stored. A user family in five lines:

>>> import numpy as np
>>> @register("reflection", attributes=("orthogonal", "sparse(1)", "determinant_pm1"))
... def reflection(width, rng):
...     return np.diag(rng.choice([-1.0, 1.0], size=width))
>>> check(get("reflection")(6, seed=0), attributes("reflection")).passed
True
>>> unregister("reflection")

Then ``ramodel.testing.assert_family_invariants("reflection")`` property-tests it.

Axis convention
---------------
``apply(M, h)`` takes ``h`` of shape ``(..., width)`` and returns
``out[..., i] = sum_j M[i, j] h[..., j]``: ``M h`` for a column vector, ``h @ M.T``
for a stack of rows. Structured forms (:class:`LinearMap`) apply in
``O(width)`` to ``O(width * block)`` per row instead of ``O(width**2)``.

Which attributes each family provably keeps
-------------------------------------------
Implications used (any real ``n x n`` ``M``):

(a) ``orthogonal`` implies ``spectral_norm_one`` (all singular values are 1),
    ``frobenius_sqrt_n`` (``|M|_F**2 = tr(M^T M) = n``), ``unit_modulus_spectrum``
    (``|M v| = |v|`` for complex ``v`` too) and ``determinant_pm1``
    (``det(M)**2 = det(M^T M) = 1``).
(b) ``unipotent`` implies ``unit_modulus_spectrum`` and ``det M = 1``.
(c) ``unit_diagonal`` implies ``trace_n``.
(d) ``symmetric_psd`` and ``unit_diagonal`` together give ``lambda_max >= 1``,
    ``|M|_F >= sqrt(n)`` and ``det M <= 1`` (Hadamard), each with equality only for
    ``M = I``: a correlation matrix keeps none of ``spectral_norm_one``,
    ``frobenius_sqrt_n``, ``determinant_pm1`` unless it is the identity.
(e) Similarity by a signed permutation ``P`` keeps every attribute of the table:
    spectrum, singular values, symmetry, definiteness, nonzero count, and the
    diagonal (permuted; the signs cancel as ``s_i**2 = 1``).

Per family (declared = provably kept for every width, seed and valid parameter):

- ``identity``: all ten, with ``sparse(1)``.
- ``none``: ``sparse(0)`` and ``symmetric_psd`` (``0 = 0^T``, eigenvalues 0 >= 0; the
  spec lists only ``sparse(0)``). Spectrum {0}, det 0, trace 0: nothing else.
- ``orthogonal``: ``orthogonal`` and (a). Dense; ``unipotent``, ``trace_n`` and
  ``unit_diagonal`` each hold with probability 0 for ``n >= 2``.
- ``permutation``: one ``+-1`` per row and column, so ``P^T P = I``: ``orthogonal``,
  (a), and ``sparse(1)`` (exactly ``n`` nonzeros).
- ``block_orthogonal``: block diagonal of orthogonal blocks is orthogonal: (a), and
  ``sparse(block)`` (a row has at most ``min(block, n)`` nonzeros).
- ``sparse_unipotent``: ``U = I + N`` is unit upper triangular, so ``unipotent`` and
  ``unit_diagonal``; (e) carries both to ``P U P^T``; (b) and (c) give
  ``unit_modulus_spectrum``, ``determinant_pm1`` (``det = 1``) and ``trace_n``.
  ``sparse(nnz/n)`` with the realised count ``nnz = n + nnz(N)``, whose expectation is
  ``n + density * n (n - 1) / 2`` (MAPPINGS.md's ``1 + density * n`` per row is an
  upper bound, about twice the expected off-diagonal part).
- ``correlation``: ``symmetric_psd`` (even positive definite: AR(1) Toeplitz is the
  correlation of a stationary AR(1) process with ``|rho| < 1``; the banded triangle
  kernel has the Fejer symbol ``>= 0``; the equicorrelation block has eigenvalues
  ``1 - rho`` and ``1 + (b - 1) rho``), ``unit_diagonal``, and ``trace_n`` by (c).
  Also ``sparse(2 * bandwidth - 1)`` for ``kind="banded"`` and ``sparse(block)`` for
  ``kind="block"`` (not in the spec's table, but true).
- ``scaled(F)``: ``M / c`` with ``c = |M|_2 > 0`` (``norm="frobenius"``:
  ``c = |M|_F / sqrt(n)``) keeps ``spectral_norm_one`` (resp. ``frobenius_sqrt_n``)
  and, of F's attributes, ``symmetric_psd`` and ``sparse(k)`` (a positive scale keeps
  symmetry, definiteness and the zero pattern). If F's attributes imply the target
  norm (e.g. F orthogonal), ``c = 1`` and the matrix is returned unchanged, so all of
  F's attributes survive. Otherwise everything else is lost in general: eigenvalues,
  diagonal and trace scale by ``1/c``, the determinant by ``c**-n``.
"""

from __future__ import annotations

import inspect
import math
import numbers
import re
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from fractions import Fraction
from functools import cached_property
from typing import Any

import numpy as np

from ._random import haar
from ._validation import as_generator, check_choice, check_int
from .backend import asarray, get_namespace, resolve_dtype, to_numpy

__all__ = [
    "ATTRIBUTES",
    "NORMS",
    "Param",
    "Family",
    "register",
    "unregister",
    "get",
    "families",
    "attributes",
    "scaled",
    "draw_stack",
    "apply",
    "check",
    "Verdict",
    "CheckReport",
    "LinearMap",
    "DenseMap",
    "DiagonalMap",
    "PermutationMap",
    "BlockDiagonalMap",
    "BandedToeplitzMap",
    "BlockEquicorrelationMap",
    "ScaledMap",
]

ATTRIBUTES = (
    "orthogonal",
    "unit_modulus_spectrum",
    "unipotent",
    "spectral_norm_one",
    "frobenius_sqrt_n",
    "trace_n",
    "unit_diagonal",
    "symmetric_psd",
    "sparse(k)",
    "determinant_pm1",
)
NORMS = ("spectral", "frobenius")

_BASE_ATTRIBUTES = tuple(a for a in ATTRIBUTES if a != "sparse(k)") + ("sparse",)
_IMPLIES = {
    "orthogonal": ("spectral_norm_one", "frobenius_sqrt_n", "unit_modulus_spectrum", "determinant_pm1"),
    "unipotent": ("unit_modulus_spectrum", "determinant_pm1"),
    "unit_diagonal": ("trace_n",),
}
_SCALE_INVARIANT = ("symmetric_psd", "sparse")
# Names that the draw / strategy signatures use themselves.
_RESERVED = frozenset(
    {"width", "seed", "dtype", "backend", "rng", "M", "family", "params", "name", "max_examples", "derandomize"}
)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SPARSE = re.compile(r"sparse\(\s*([^()]+?)\s*\)")
_SCALED = re.compile(r"scaled\((.*)\)")
_SCALED_ARGS = re.compile(r"(.*?)(?:\s*,\s*norm\s*=\s*['\"]?(\w+)['\"]?)?")


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class Param:
    """Declaration of one family parameter: its type, default and valid range.

    Build one with :meth:`integer`, :meth:`real`, :meth:`boolean` or :meth:`choice`.
    The registry validates every call against it, :mod:`ramodel.testing` draws valid
    values from it and builds invalid ones (just outside each finite end).

    Attributes
    ----------
    kind : {"int", "float", "bool", "choice"}
    default : object
        Used when the caller does not pass the parameter.
    low, high : float or None
        Ends of the valid range (None: unbounded). Numeric kinds only.
    low_open, high_open : bool
        Whether each end is excluded.
    choices : tuple of str
        Allowed values, ``kind="choice"`` only.
    sample : tuple (lo, hi) or None
        Finite range that strategies draw from (within the valid range); defaults to
        the valid range, with a span of 16 (int) or 10 (float) past an unbounded end.
    doc : str
        One line for error messages and documentation.

    Examples
    --------
    >>> p = Param.real(0.5, low=-1, high=1, low_open=True, high_open=True)
    >>> p.interval()
    '(-1, 1)'
    >>> p.validate("rho", 0.25)
    0.25
    """

    kind: str
    default: Any
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple = ()
    sample: tuple | None = None
    doc: str = ""

    def __post_init__(self):
        check_choice("kind", self.kind, ("int", "float", "bool", "choice"))
        if self.kind == "choice" and not self.choices:
            raise ValueError("a choice parameter needs a non-empty tuple of choices")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError(f"low must be <= high, got low={self.low}, high={self.high}")
        if self.sample is not None:
            lo, hi = self.sample
            if lo > hi:
                raise ValueError(f"sample must be (lo, hi) with lo <= hi, got {self.sample}")
            for end in (lo, hi):
                if self._end_ok(end):
                    self.validate("sample", end)
        self.validate("default", self.default)

    def _end_ok(self, value) -> bool:
        # A sample end may sit on an open bound: strategies exclude it.
        return not (value == self.low and self.low_open) and not (value == self.high and self.high_open)

    @classmethod
    def integer(cls, default: int, *, low: int | None = None, high: int | None = None, sample=None, doc: str = ""):
        """An integer parameter in the closed range ``[low, high]``."""
        return cls("int", default, low=low, high=high, sample=sample, doc=doc)

    @classmethod
    def real(
        cls,
        default: float,
        *,
        low: float | None = None,
        high: float | None = None,
        low_open: bool = False,
        high_open: bool = False,
        sample=None,
        doc: str = "",
    ):
        """A finite real parameter; each end is closed unless ``*_open``."""
        return cls("float", default, low=low, high=high, low_open=low_open, high_open=high_open, sample=sample, doc=doc)

    @classmethod
    def boolean(cls, default: bool, *, doc: str = ""):
        """A bool parameter (``True``/``False`` only; ``0``/``1`` are refused)."""
        return cls("bool", default, doc=doc)

    @classmethod
    def choice(cls, choices: Iterable[str], default: str, *, doc: str = ""):
        """One of a fixed tuple of strings."""
        return cls("choice", default, choices=tuple(choices), doc=doc)

    def interval(self) -> str:
        """The valid range in interval notation, e.g. ``'[0, 1]'`` or ``"one of ('a', 'b')"``."""
        if self.kind == "bool":
            return "True or False"
        if self.kind == "choice":
            return f"one of {self.choices}"
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        left = "(" if self.low is None or self.low_open else "["
        right = ")" if self.high is None or self.high_open else "]"
        return f"{left}{lo}, {hi}{right}"

    def validate(self, name: str, value: Any):
        """Return ``value`` normalised (int, float, bool or str), or raise naming ``name``.

        Raises
        ------
        TypeError
            Wrong type (a bool for a number, a float for an int, ...).
        ValueError
            Outside the valid range, not finite, or not one of the choices.
        """
        if self.kind == "bool":
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"{name} must be a bool (True or False), got {value!r} ({type(value).__name__})")
            return bool(value)
        if self.kind == "choice":
            return check_choice(name, value, self.choices)
        if self.kind == "int":
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
                raise TypeError(
                    f"{name} must be an integer in {self.interval()}, got {value!r} ({type(value).__name__})"
                )
            value = int(value)
        else:
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
                raise TypeError(f"{name} must be a real number in {self.interval()}, got {value!r} ({type(value).__name__})")
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number in {self.interval()}, got {value!r}")
        below = self.low is not None and (value < self.low or (self.low_open and value == self.low))
        above = self.high is not None and (value > self.high or (self.high_open and value == self.high))
        if below or above:
            raise ValueError(f"{name} must be in {self.interval()}, got {value!r}")
        return value

    def sample_range(self) -> tuple:
        """Finite ``(lo, hi)`` that strategies draw from (see ``sample``)."""
        if self.sample is not None:
            return tuple(self.sample)
        span = 16 if self.kind == "int" else 10.0
        lo = self.low if self.low is not None else (self.high - span if self.high is not None else -span)
        hi = self.high if self.high is not None else lo + span
        return lo, hi

    def invalid_values(self) -> tuple:
        """Values that must be refused, each with the exception types allowed.

        Returns
        -------
        tuple of (value, tuple of exception types)
            Range violations (just past each finite end: the end itself when open, the
            next float or integer when closed) must raise ``ValueError``; wrong types
            ``TypeError``.
        """
        out: list = []
        if self.kind == "bool":
            return (("yes", (TypeError,)), (1, (TypeError,)))
        if self.kind == "choice":
            return (("__not_a_choice__", (ValueError,)),)
        if self.kind == "int":
            if self.low is not None:
                out.append((int(self.low) - 1, (ValueError,)))
            if self.high is not None:
                out.append((int(self.high) + 1, (ValueError,)))
            out.append((1.5, (TypeError,)))
            out.append((True, (TypeError,)))
            return tuple(out)
        if self.low is not None:
            out.append((float(self.low) if self.low_open else float(np.nextafter(self.low, -np.inf)), (ValueError,)))
        if self.high is not None:
            out.append((float(self.high) if self.high_open else float(np.nextafter(self.high, np.inf)), (ValueError,)))
        out.append((float("nan"), (ValueError,)))
        out.append(("0.5", (TypeError,)))
        return tuple(out)

    def to_dict(self) -> dict:
        """Plain-data description (for configs and reports)."""
        return {
            "kind": self.kind,
            "default": self.default,
            "interval": self.interval(),
            "doc": self.doc,
        }


# --------------------------------------------------------------------- linear maps


def _check_h(h, xp, width: int) -> None:
    try:
        resolve_dtype(h.dtype, xp)  # a real floating dtype: no silent cast
    except ValueError:
        raise TypeError(f"h must be a real floating array (float32 or float64), got dtype {h.dtype}") from None
    if h.ndim < 1 or h.shape[-1] != width:
        raise ValueError(f"h must have shape (..., {width}), got {tuple(h.shape)}")


def _concat(xp, arrays):
    # array-API name first; older CuPy only has ``concatenate``.
    concat = getattr(xp, "concat", None) or xp.concatenate
    return concat(arrays, axis=-1)


def _move(a: np.ndarray, h):
    """Host array ``a`` in ``h``'s namespace, with ``h``'s dtype for floating ``a``."""
    xp = get_namespace(h)
    dtype = h.dtype if a.dtype.kind == "f" else None
    return asarray(a, xp=xp, dtype=dtype)


@dataclass(frozen=True)
class TorchForm:
    """How a torch module (:class:`ramodel.nets.EntangledSkip`) applies a structured map.

    Returned by :meth:`LinearMap.torch_form`; holds host arrays only, so this module
    imports no torch.

    Attributes
    ----------
    structure : str
        The form's name (``EntangledSkip.structure``).
    buffers : mapping of str to ndarray
        Host arrays the module registers as buffers under these names: integer arrays
        as ``torch.long``, floating ones in the module's dtype.
    apply : callable
        ``apply(x, module) -> out`` for a tensor ``x`` with the map's axis last; it
        reads the buffers (and ``settings``) as attributes of ``module``, so ``.to()``
        and ``state_dict`` see them.
    settings : mapping of str to int
        Plain attributes the module sets (e.g. ``block``).
    """

    structure: str
    buffers: Mapping[str, np.ndarray]
    apply: Callable
    settings: Mapping[str, int] = field(default_factory=lambda: types.MappingProxyType({}))


def _torch_permutation(x, m):
    return x.index_select(-1, m.perm) * m.signs


def _torch_block_diagonal(x, m):
    import torch

    k, b, _ = m.blocks.shape
    head = x[..., : k * b].unflatten(-1, (k, b))
    out = torch.einsum("kij,...kj->...ki", m.blocks, head).flatten(-2)
    if m.tail.shape[0]:
        out = torch.cat([out, x[..., k * b :] @ m.tail.T], dim=-1)
    return out


def _torch_diagonal(x, m):
    return x * m.diagonal


def _torch_banded(x, m):
    from torch.nn import functional

    out = m.band[0] * x
    # One shifted copy per diagonal of the band (at most the bandwidth), never per sample.
    for lag in range(1, m.band.shape[0]):
        ahead = functional.pad(x[..., lag:], (0, lag))  # x[i + lag], zero past the end
        behind = functional.pad(x[..., :-lag], (lag, 0))  # x[i - lag]
        out = out + m.band[lag] * (ahead + behind)
    return out


def _torch_block_sums(x, block: int):
    """Each entry replaced by the sum over its block of ``block`` features (last block shorter)."""
    import torch

    k, r = divmod(x.shape[-1], block)
    head = x[..., : k * block].unflatten(-1, (k, block))
    out = head.sum(-1, keepdim=True).expand_as(head).flatten(-2)
    if r:
        tail = x[..., k * block :]
        out = torch.cat([out, tail.sum(-1, keepdim=True).expand_as(tail)], dim=-1)
    return out


def _torch_block_equicorrelation(x, m):
    return m.coefficients[0] * x + m.coefficients[1] * _torch_block_sums(x, m.block)


class LinearMap:
    """A skip matrix held in a structured form.

    Subclasses hold host NumPy float64 arrays and implement :meth:`dense` (the
    ``(width, width)`` host matrix) and ``_apply`` (the fast product). :meth:`apply`
    moves the small structure arrays to ``h``'s namespace and dtype on each call.
    A subclass with a fast torch product also implements :meth:`torch_form`, which
    :class:`ramodel.nets.EntangledSkip` uses as it is (no branch per class there).
    """

    @property
    def width(self) -> int:
        raise NotImplementedError

    def dense(self) -> np.ndarray:
        """The matrix ``M``, shape ``(width, width)``, host float64."""
        raise NotImplementedError

    def apply(self, h):
        """``out[..., i] = sum_j M[i, j] h[..., j]`` for ``h`` of shape ``(..., width)``."""
        xp = get_namespace(h)
        _check_h(h, xp, self.width)
        return self._apply(h, xp)

    def _apply(self, h, xp):
        raise NotImplementedError

    def torch_form(self, factor: float = 1.0) -> TorchForm | None:
        """The torch form of ``factor * M``, or None: apply the dense matrix.

        Parameters
        ----------
        factor : float, default 1.0
            Folded into the form's floating buffers (how :class:`ScaledMap` passes its
            factor down).
        """
        return None


@dataclass(frozen=True, eq=False)
class DenseMap(LinearMap):
    """A plain matrix. ``matrix``: shape ``(width, width)``."""

    matrix: np.ndarray

    @property
    def width(self) -> int:
        return self.matrix.shape[0]

    def dense(self) -> np.ndarray:
        return self.matrix

    def _apply(self, h, xp):
        return h @ _move(self.matrix, h).T


@dataclass(frozen=True, eq=False)
class DiagonalMap(LinearMap):
    """``M = diag(diagonal)``; ``diagonal``: shape ``(width,)``."""

    diagonal: np.ndarray

    @property
    def width(self) -> int:
        return self.diagonal.shape[0]

    def dense(self) -> np.ndarray:
        return np.diag(self.diagonal)

    def _apply(self, h, xp):
        return h * _move(self.diagonal, h)

    def torch_form(self, factor: float = 1.0) -> TorchForm:
        return TorchForm("diagonal", {"diagonal": factor * self.diagonal}, _torch_diagonal)


@dataclass(frozen=True, eq=False)
class PermutationMap(LinearMap):
    """Signed permutation: ``M[i, perm[i]] = signs[i]``, so ``(M h)_i = signs[i] h[perm[i]]``.

    ``perm``: integer array ``(width,)``, a permutation; ``signs``: ``(width,)`` of +-1.
    """

    perm: np.ndarray
    signs: np.ndarray

    @property
    def width(self) -> int:
        return self.perm.shape[0]

    def dense(self) -> np.ndarray:
        M = np.zeros((self.width, self.width))
        M[np.arange(self.width), self.perm] = self.signs
        return M

    def _apply(self, h, xp):
        return _move(self.signs, h) * xp.take(h, _move(self.perm, h), axis=-1)

    def torch_form(self, factor: float = 1.0) -> TorchForm:
        # A gather and signs: exact.
        perm = np.asarray(self.perm).astype(np.int64, copy=False)
        signs = factor * np.asarray(self.signs, dtype=np.float64)
        return TorchForm("permutation", {"perm": perm, "signs": signs}, _torch_permutation)


@dataclass(frozen=True, eq=False)
class BlockDiagonalMap(LinearMap):
    """``M = blockdiag(blocks[0], ..., blocks[k-1], tail)``.

    ``blocks``: shape ``(k, b, b)``; ``tail``: shape ``(r, r)`` with ``0 <= r < b``
    (``r = 0``: no tail), so ``width = k b + r``.
    """

    blocks: np.ndarray
    tail: np.ndarray

    @property
    def width(self) -> int:
        k, b, _ = self.blocks.shape
        return k * b + self.tail.shape[0]

    def dense(self) -> np.ndarray:
        k, b, _ = self.blocks.shape
        M = np.zeros((self.width, self.width))
        idx = np.arange(k * b).reshape(k, b)
        M[idx[:, :, None], idx[:, None, :]] = self.blocks
        M[k * b :, k * b :] = self.tail
        return M

    def _apply(self, h, xp):
        k, b, _ = self.blocks.shape
        batch = tuple(h.shape[:-1])
        head = xp.reshape(h[..., : k * b], batch + (k, b, 1))
        out = xp.reshape(xp.matmul(_move(self.blocks, h), head), batch + (k * b,))
        if self.tail.shape[0] == 0:
            return out
        return _concat(xp, [out, h[..., k * b :] @ _move(self.tail, h).T])

    def torch_form(self, factor: float = 1.0) -> TorchForm:
        buffers = {"blocks": factor * self.blocks, "tail": factor * self.tail}
        return TorchForm("block_diagonal", buffers, _torch_block_diagonal)


@dataclass(frozen=True, eq=False)
class BandedToeplitzMap(LinearMap):
    """Symmetric banded Toeplitz: ``M[i, j] = coefficients[|i - j|]`` if ``|i - j| < len(coefficients)``, else 0."""

    coefficients: np.ndarray
    size: int

    @property
    def width(self) -> int:
        return self.size

    def dense(self) -> np.ndarray:
        lag = np.abs(np.subtract.outer(np.arange(self.size), np.arange(self.size)))
        c = np.concatenate([self.coefficients, np.zeros(self.size)])
        return c[lag]

    def _apply(self, h, xp):
        c = [float(v) for v in self.coefficients]
        n = self.size
        out = c[0] * h
        # One term per diagonal (at most the bandwidth), never per sample.
        for lag in range(1, min(len(c), n)):
            pad = xp.zeros(tuple(h.shape[:-1]) + (lag,), dtype=h.dtype)
            ahead = _concat(xp, [h[..., lag:], pad])  # h[i + lag]
            behind = _concat(xp, [pad, h[..., : n - lag]])  # h[i - lag]
            out = out + c[lag] * (ahead + behind)
        return out

    def torch_form(self, factor: float = 1.0) -> TorchForm:
        # The coefficient of each lag that fits in the width.
        band = factor * np.asarray(self.coefficients, dtype=np.float64)[: self.size]
        return TorchForm("banded", {"band": band}, _torch_banded)


@dataclass(frozen=True, eq=False)
class BlockEquicorrelationMap(LinearMap):
    """``M = (1 - rho) I + rho * blockdiag(ones(b, b), ..., ones(r, r))`` (last block ``r = size mod b``)."""

    size: int
    block: int
    rho: float

    @property
    def width(self) -> int:
        return self.size

    def dense(self) -> np.ndarray:
        label = np.arange(self.size) // self.block
        M = np.where(label[:, None] == label[None, :], self.rho, 0.0)
        np.fill_diagonal(M, 1.0)
        return M

    def _apply(self, h, xp):
        k, r = divmod(self.size, self.block)
        b, rho = self.block, self.rho
        batch = tuple(h.shape[:-1])
        head = xp.reshape(h[..., : k * b], batch + (k, b))
        head = (1.0 - rho) * head + rho * xp.sum(head, axis=-1, keepdims=True)
        out = xp.reshape(head, batch + (k * b,))
        if r == 0:
            return out
        tail = h[..., k * b :]
        tail = (1.0 - rho) * tail + rho * xp.sum(tail, axis=-1, keepdims=True)
        return _concat(xp, [out, tail])

    def torch_form(self, factor: float = 1.0) -> TorchForm:
        # factor M = factor ((1 - rho) I + rho * blockdiag(ones)): a scaled copy plus block sums.
        coefficients = np.array([factor * (1.0 - self.rho), factor * self.rho])
        return TorchForm(
            "block_equicorrelation", {"coefficients": coefficients}, _torch_block_equicorrelation,
            types.MappingProxyType({"block": int(self.block)}),
        )


@dataclass(frozen=True, eq=False)
class ScaledMap(LinearMap):
    """``M = factor * base``."""

    base: LinearMap
    factor: float

    @property
    def width(self) -> int:
        return self.base.width

    def dense(self) -> np.ndarray:
        return self.base.dense() * self.factor

    def _apply(self, h, xp):
        return self.factor * self.base._apply(h, xp)

    def torch_form(self, factor: float = 1.0) -> TorchForm | None:
        # The factor is folded into the base's buffers.
        return self.base.torch_form(factor * float(self.factor))


# ------------------------------------------------------------------------ registry


def _attribute_base(attribute: str) -> tuple[str, Fraction | None]:
    """Split ``'sparse(3/2)'`` into ``('sparse', Fraction(3, 2))``; others into ``(name, None)``."""
    if not isinstance(attribute, str):
        raise TypeError(f"an attribute must be a string, got {attribute!r} ({type(attribute).__name__})")
    m = _SPARSE.fullmatch(attribute.strip())
    if m:
        try:
            k = Fraction(m.group(1))
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"sparse(k) needs a number k >= 0 (e.g. 'sparse(2)', 'sparse(3/2)'), got {attribute!r}") from None
        if k < 0:
            raise ValueError(f"sparse(k) needs k >= 0, got {attribute!r}")
        return "sparse", k
    if attribute in _BASE_ATTRIBUTES and attribute != "sparse":
        return attribute, None
    raise ValueError(f"unknown attribute {attribute!r}; valid attributes are {ATTRIBUTES}")


def _implied(attrs: Iterable[str]) -> set[str]:
    """Base names of ``attrs`` closed under the implications (a)-(c) of the module docstring."""
    out = {_attribute_base(a)[0] for a in attrs}
    for a in list(out):
        out.update(_IMPLIES.get(a, ()))
    return out


@dataclass(frozen=True, eq=False)
class Family:
    """A registered mapping family. Calling it draws a matrix.

    Attributes
    ----------
    name : str
    function : callable
        ``function(width, rng, **params)`` returning a ``(width, width)`` array or a
        :class:`LinearMap`, on the host.
    params : mapping of str to Param
    declared : tuple of str, or callable
        Declared attributes, or ``declared(M, **params) -> tuple of str`` where ``M`` is
        the drawn matrix (host NumPy) or None when asked without a matrix; then only
        the attributes that hold for every draw are returned.
    constraint : callable or None
        ``constraint(params)`` raises ``ValueError`` naming a parameter when a
        combination of individually valid values is invalid.
    invalid : tuple of (dict, str)
        Parameter combinations that must be refused, with the parameter the error names.
    doc : str

    Examples
    --------
    >>> fam = get("block_orthogonal")
    >>> fam(5, seed=0, block=2).shape, fam.attributes(block=2)[-1]
    ((5, 5), 'sparse(2)')
    >>> fam.structured(5, seed=0, block=2).blocks.shape
    (2, 2, 2)
    """

    name: str
    function: Callable
    params: Mapping[str, Param]
    declared: Any
    constraint: Callable | None = None
    invalid: tuple = ()
    doc: str = ""

    def resolve_params(self, params: Mapping[str, Any]) -> dict:
        """Validate ``params`` and fill defaults; returns a new dict.

        Raises
        ------
        TypeError
            An unknown parameter name, or a wrong type.
        ValueError
            A value outside its range, or an invalid combination.
        """
        if not isinstance(params, Mapping):
            raise TypeError(f"params must be a mapping of parameter names to values, got {type(params).__name__}")
        unknown = sorted(set(params) - set(self.params))
        if unknown:
            valid = tuple(self.params) or "none"
            raise TypeError(f"family {self.name!r} got unknown parameter(s) {unknown}; its parameters are {valid}")
        out = {name: spec.validate(name, params.get(name, spec.default)) for name, spec in self.params.items()}
        if self.constraint is not None:
            self.constraint(out)
        return out

    def attributes(self, M=None, **params) -> tuple[str, ...]:
        """Declared attributes for ``params`` (and for the drawn ``M``, when the declaration depends on it)."""
        params = self.resolve_params(params)
        if callable(self.declared):
            host = None if M is None else to_numpy(M)
            attrs = tuple(self.declared(host, **params))
        else:
            attrs = tuple(self.declared)
        for a in attrs:
            _attribute_base(a)
        return attrs

    def _draw(self, width: int, rng: np.random.Generator, params: dict) -> tuple[LinearMap, np.ndarray]:
        """Run the family function and validate its output; returns (map, host float64 matrix)."""
        out = self.function(width, rng, **params)
        lmap = out if isinstance(out, LinearMap) else None
        M = np.asarray(out.dense() if lmap is not None else out)
        if M.dtype.kind == "c":
            raise TypeError(f"family {self.name!r} returned a complex matrix (width={width}); mappings must be real")
        if M.dtype.kind not in "biuf":
            raise TypeError(f"family {self.name!r} returned an array of dtype {M.dtype}, expected real numbers")
        if M.shape != (width, width):
            raise ValueError(
                f"family {self.name!r} returned an array of shape {M.shape}; a mapping must be square "
                f"with shape (width, width) = ({width}, {width})"
            )
        M = np.array(M, dtype=np.float64)  # a copy: the caller may own (and later mutate) what it returned
        if not np.all(np.isfinite(M)):
            raise ValueError(f"family {self.name!r} returned a matrix with NaN or Inf entries (width={width}, params={params})")
        return (lmap if lmap is not None else DenseMap(M)), M

    def __call__(self, width: int, *, seed=None, dtype="float64", backend=None, **params):
        """Draw ``M``, shape ``(width, width)``, in ``backend`` and ``dtype``.

        Parameters
        ----------
        width : int
            ``n >= 1``.
        seed : int, SeedSequence, Generator or None
            Same seed, same matrix (on every backend: drawn on the host in float64).
        dtype : {"float64", "float32"}
        backend : {"numpy", "cupy"}, module or None
            None means NumPy.
        **params
            The family's parameters (see ``self.params``).
        """
        width = check_int("width", width, minimum=1)
        params = self.resolve_params(params)
        xp = get_namespace(backend=backend)
        resolve_dtype(dtype, xp)
        _, M = self._draw(width, as_generator(seed), params)
        return asarray(M, xp=xp, dtype=dtype)

    def structured(self, width: int, *, seed=None, **params) -> LinearMap:
        """The same draw as ``self(width, seed=seed, **params)``, as a :class:`LinearMap` (host)."""
        width = check_int("width", width, minimum=1)
        params = self.resolve_params(params)
        lmap, _ = self._draw(width, as_generator(seed), params)
        return lmap


_REGISTRY: dict[str, Family] = {}


def register(
    name: str,
    *,
    attributes,
    params: Mapping[str, Param] | None = None,
    constraint: Callable | None = None,
    invalid: Iterable = (),
    replace: bool = False,
    doc: str | None = None,
):
    """Decorator registering ``function(width, rng, **params) -> matrix`` as family ``name``.

    Parameters
    ----------
    name : str
        A Python identifier, not yet registered (unless ``replace=True``).
    attributes : tuple of str or callable
        The attributes the family keeps for every draw (names in :data:`ATTRIBUTES`,
        with ``sparse(k)`` written e.g. ``"sparse(2)"`` or ``"sparse(3/2)"``), or a
        callable ``attributes(M, **params)`` when they depend on the parameters or on
        the draw (``M`` is the host matrix, or None when asked without one).
    params : mapping of str to Param, optional
        One :class:`Param` per keyword of ``function``. None: no parameters.
    constraint : callable, optional
        ``constraint(params)`` raising ``ValueError`` that names a parameter, for
        combinations of individually valid values that are invalid.
    invalid : iterable of (dict, str), optional
        Combinations that must be refused and the parameter named in the error;
        :func:`ramodel.testing.assert_family_invariants` checks them.
    replace : bool, default False
        Allow overwriting an existing family.
    doc : str, optional
        Defaults to the function's docstring.

    Returns
    -------
    callable
        The decorator; it returns ``function`` unchanged.

    Examples
    --------
    >>> import numpy as np
    >>> @register("reflection", attributes=("orthogonal", "sparse(1)"))
    ... def reflection(width, rng):
    ...     return np.diag(rng.choice([-1.0, 1.0], size=width))
    >>> get("reflection")(3, seed=0).shape
    (3, 3)
    >>> unregister("reflection")
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"family name must be a Python identifier (letters, digits, _), got {name!r}")
    if not isinstance(replace, bool):
        raise TypeError(f"replace must be a bool, got {replace!r}")
    if name in _REGISTRY and not replace:
        raise ValueError(f"family {name!r} is already registered; pass replace=True to overwrite it")
    params = dict(params or {})
    for pname, spec in params.items():
        if not isinstance(spec, Param):
            raise TypeError(f"params[{pname!r}] must be a ramodel.mappings.Param, got {type(spec).__name__}")
        if not _NAME.fullmatch(pname) or pname in _RESERVED:
            raise ValueError(f"parameter name {pname!r} is invalid or reserved ({sorted(_RESERVED)})")
    if isinstance(attributes, str):
        attributes = (attributes,)
    if not callable(attributes):
        given = attributes
        attributes = tuple(attributes) if isinstance(attributes, Iterable) else None
        if attributes is None or any(not isinstance(a, str) for a in attributes):
            raise TypeError(
                f"attributes must be a tuple of attribute names (from {sorted(ATTRIBUTES)}; () for none) "
                f"or a callable attributes(M, **params), got {given!r}"
            )
        for a in attributes:
            _attribute_base(a)
    invalid = tuple((dict(p), str(which)) for p, which in invalid)

    def decorator(function: Callable) -> Callable:
        try:
            inspect.signature(function).bind(1, None, **{k: p.default for k, p in params.items()})
        except TypeError as exc:
            raise TypeError(
                f"family function {getattr(function, '__name__', function)!r} must accept "
                f"(width, rng, {', '.join(params) or 'no parameters'}): {exc}"
            ) from None
        _REGISTRY[name] = Family(
            name=name,
            function=function,
            params=types.MappingProxyType(params),
            declared=attributes,
            constraint=constraint,
            invalid=invalid,
            doc=doc if doc is not None else inspect.getdoc(function) or "",
        )
        return function

    return decorator


def unregister(name: str) -> None:
    """Remove family ``name`` from the registry (ValueError if it is not registered)."""
    if name not in _REGISTRY:
        raise ValueError(f"family {name!r} is not registered; registered families are {families()}")
    del _REGISTRY[name]


def families() -> tuple[str, ...]:
    """Registered family names, sorted. Any ``"scaled(NAME)"`` is also accepted by :func:`get`.

    Examples
    --------
    >>> "orthogonal" in families()
    True
    """
    return tuple(sorted(_REGISTRY))


def get(name: str) -> Family:
    """The family ``name``; call it to draw: ``get(name)(width, seed=..., **params)``.

    ``name`` is a registered name or ``"scaled(NAME)"`` /
    ``"scaled(NAME, norm=frobenius)"`` (see :func:`scaled`).

    Raises
    ------
    ValueError
        Unknown name; the message lists the registered ones.

    Examples
    --------
    >>> M = get("orthogonal")(4, seed=0)
    >>> bool(abs(M.T @ M - __import__("numpy").eye(4)).max() < 1e-12)
    True
    """
    if not isinstance(name, str):
        raise TypeError(f"family name must be a string, got {type(name).__name__}")
    if name in _REGISTRY:
        return _REGISTRY[name]
    m = _SCALED.fullmatch(name.strip())
    if m:
        base, norm = _SCALED_ARGS.fullmatch(m.group(1)).groups()
        return _scaled_family(get(base.strip()), check_choice("norm", norm or "spectral", NORMS))
    raise ValueError(f"unknown mapping family {name!r}; registered families are {families()} (and 'scaled(NAME)')")


def attributes(name: str, M=None, **params) -> tuple[str, ...]:
    """Declared attributes of family ``name`` with ``params``.

    Pass the drawn matrix ``M`` for families whose declaration depends on the draw
    (``sparse_unipotent`` then adds its realised ``sparse(k)``).

    Examples
    --------
    >>> attributes("block_orthogonal", block=2)[-1]
    'sparse(2)'
    """
    return get(name).attributes(M, **params)


def scaled(family: str, *, norm: str = "spectral") -> str:
    """Name of the derived family ``family`` divided by its norm.

    ``norm="spectral"`` divides by ``|M|_2`` (declares ``spectral_norm_one``);
    ``norm="frobenius"`` by ``|M|_F / sqrt(width)`` (declares ``frobenius_sqrt_n``).
    The derived family has the base family's parameters; it is not stored in the
    registry but resolved by name, e.g. ``get("scaled(correlation)")``. Which of the
    base family's attributes survive is derived in the module docstring. Drawing a zero
    matrix raises ``ValueError`` (it cannot be scaled).

    Examples
    --------
    >>> import numpy as np
    >>> name = scaled("correlation")
    >>> name
    'scaled(correlation)'
    >>> round(float(np.linalg.norm(get(name)(5, rho=0.3), 2)), 12)
    1.0
    """
    check_choice("norm", norm, NORMS)
    base = get(family).name
    return f"scaled({base})" if norm == "spectral" else f"scaled({base}, norm={norm})"


def _scaled_family(base: Family, norm: str) -> Family:
    target = "spectral_norm_one" if norm == "spectral" else "frobenius_sqrt_n"
    name = f"scaled({base.name})" if norm == "spectral" else f"scaled({base.name}, norm={norm})"

    def function(width, rng, **params):
        lmap, M = base._draw(width, rng, params)
        if target in _implied(base.attributes(M, **params)):
            return lmap  # already normalised exactly: scaling by a rounded 1 would only add error
        size = float(np.linalg.norm(M, 2)) if norm == "spectral" else float(np.linalg.norm(M)) / math.sqrt(width)
        if size == 0.0:
            raise ValueError(f"family {name!r}: the drawn {base.name!r} matrix is zero (width={width}), "
                             f"it cannot be scaled to {target}")
        return ScaledMap(lmap, 1.0 / size)

    def declared(M, **params):
        attrs = base.attributes(M, **params)
        if target in _implied(attrs):
            return attrs if target in attrs else (target,) + attrs
        return (target,) + tuple(a for a in attrs if _attribute_base(a)[0] in _SCALE_INVARIANT)

    return Family(
        name=name,
        function=function,
        params=base.params,
        declared=declared,
        constraint=base.constraint,
        invalid=base.invalid,
        doc=f"{base.name} divided by its {norm} norm" + (" (times sqrt(width))" if norm == "frobenius" else ""),
    )


def _spawn(seed, depth: int) -> list:
    """``depth`` independent child seeds of ``seed`` (SeedSequence.spawn); never mutates ``seed``."""
    if isinstance(seed, np.random.Generator):
        return seed.spawn(depth)
    if isinstance(seed, np.random.SeedSequence):
        seq = np.random.SeedSequence(
            seed.entropy, spawn_key=seed.spawn_key, pool_size=seed.pool_size, n_children_spawned=seed.n_children_spawned
        )
        return seq.spawn(depth)
    as_generator(seed)  # validates ints / None with the library's messages
    return np.random.SeedSequence(seed).spawn(depth)


def draw_stack(
    name: str,
    width: int,
    *,
    depth: int,
    shared: bool = False,
    seed=None,
    dtype="float64",
    backend=None,
    params: Mapping[str, Any] | None = None,
):
    """One skip matrix per block: shape ``(depth, width, width)``.

    Parameters
    ----------
    name : str
        Family name (see :func:`families`, or ``"scaled(NAME)"``).
    width, depth : int
        ``>= 1``.
    shared : bool, default False
        True: one draw, ``get(name)(width, seed=seed, **params)``, repeated for every
        block. False: block ``l`` is ``get(name)(width, seed=children[l], **params)``
        with ``children = SeedSequence(seed).spawn(depth)`` (for a Generator seed,
        ``seed.spawn(depth)``).
    seed : int, SeedSequence, Generator or None
        A SeedSequence argument is not mutated.
    dtype : {"float64", "float32"}
    backend : {"numpy", "cupy"}, module or None
    params : mapping, optional
        The family's parameters.

    Returns
    -------
    array, shape (depth, width, width)

    Examples
    --------
    >>> S = draw_stack("orthogonal", 3, depth=2, seed=0)
    >>> S.shape, bool((S[0] != S[1]).any())
    ((2, 3, 3), True)
    >>> bool((draw_stack("orthogonal", 3, depth=2, seed=0, shared=True)[1] == get("orthogonal")(3, seed=0)).all())
    True
    """
    family = get(name)
    width = check_int("width", width, minimum=1)
    depth = check_int("depth", depth, minimum=1)
    if not isinstance(shared, (bool, np.bool_)):
        raise TypeError(f"shared must be a bool, got {shared!r}")
    params = family.resolve_params({} if params is None else params)
    xp = get_namespace(backend=backend)
    resolve_dtype(dtype, xp)
    if shared:
        M = family._draw(width, as_generator(seed), params)[1]
        stack = np.repeat(M[None], depth, axis=0)
    else:
        stack = np.stack([family._draw(width, as_generator(s), params)[1] for s in _spawn(seed, depth)])
    return asarray(stack, xp=xp, dtype=dtype)


def apply(M, h):
    """Apply the skip ``M`` along the last axis of ``h``.

    Parameters
    ----------
    M : LinearMap or array, shape (width, width)
        A structured form (``get(name).structured(...)``) or a dense matrix.
    h : array, shape (..., width)
        Real floating; any leading batch shape.

    Returns
    -------
    array, shape (..., width)
        ``out[..., i] = sum_j M[i, j] h[..., j]`` (``M h`` per column vector,
        ``h @ M.T`` per row), in ``h``'s namespace. A structured form computes in
        ``h``'s dtype; a dense ``M`` follows the usual promotion of the two dtypes.

    Examples
    --------
    >>> import numpy as np
    >>> P = get("permutation").structured(4, seed=1)
    >>> h = np.arange(8.0).reshape(2, 4)
    >>> bool(np.array_equal(apply(P, h), h @ P.dense().T))
    True
    """
    if isinstance(M, LinearMap):
        return M.apply(h)
    xp = get_namespace(M, h)
    if M.ndim != 2 or M.shape[0] != M.shape[1]:
        raise ValueError(f"M must be a square matrix (width, width), got shape {tuple(M.shape)}")
    _check_h(h, xp, M.shape[0])
    return h @ M.T


# ------------------------------------------------------------------ built-in families


def _haar(rng: np.random.Generator, count: int, size: int) -> np.ndarray:
    """``count`` Haar-orthogonal ``size x size`` matrices, shape ``(count, size, size)``."""
    return haar(rng, (count,), size)


_ALL = (
    "orthogonal",
    "unit_modulus_spectrum",
    "unipotent",
    "spectral_norm_one",
    "frobenius_sqrt_n",
    "trace_n",
    "unit_diagonal",
    "symmetric_psd",
    "sparse(1)",
    "determinant_pm1",
)
_ORTHOGONAL = ("orthogonal", "unit_modulus_spectrum", "spectral_norm_one", "frobenius_sqrt_n", "determinant_pm1")


@register("identity", attributes=_ALL)
def _identity(width, rng):
    """``M = I``: the ordinary ResNet."""
    return DiagonalMap(np.ones(width))


@register("none", attributes=("sparse(0)", "symmetric_psd"))
def _none(width, rng):
    """``M = 0``: no skip connection."""
    return DiagonalMap(np.zeros(width))


@register("orthogonal", attributes=_ORTHOGONAL)
def _orthogonal(width, rng):
    """Haar orthogonal: ``Q, R = qr(G)``, ``Q <- Q diag(sign(diag R))``."""
    return DenseMap(_haar(rng, 1, width)[0])


@register(
    "permutation",
    attributes=_ORTHOGONAL + ("sparse(1)",),
    params={"signed": Param.boolean(False, doc="multiply each row by an independent random sign")},
)
def _permutation(width, rng, *, signed):
    """Uniform random permutation matrix, optionally with random signs."""
    perm = rng.permutation(width)
    signs = rng.choice(np.array([-1.0, 1.0]), size=width) if signed else np.ones(width)
    return PermutationMap(perm, signs)


@register(
    "block_orthogonal",
    attributes=lambda M, *, block: _ORTHOGONAL + (f"sparse({block})",),
    params={"block": Param.integer(
        4, low=1, sample=(1, 16), doc="block size; the last block is smaller when it does not divide width")},
)
def _block_orthogonal(width, rng, *, block):
    """Block diagonal of independent Haar-orthogonal blocks (one block when ``block >= width``)."""
    b = min(block, width)
    k, r = divmod(width, b)
    blocks = _haar(rng, k, b)
    tail = _haar(rng, 1, r)[0] if r else np.zeros((0, 0))
    return BlockDiagonalMap(blocks, tail)


_UNIPOTENT = ("unipotent", "unit_modulus_spectrum", "unit_diagonal", "trace_n", "determinant_pm1")


def _sparse_unipotent_attributes(M, *, density, scale):
    if M is None:
        return _UNIPOTENT
    return _UNIPOTENT + (f"sparse({Fraction(int(np.count_nonzero(M)), M.shape[-1])})",)


@register(
    "sparse_unipotent",
    attributes=_sparse_unipotent_attributes,
    params={
        "density": Param.real(0.1, low=0.0, high=1.0, doc="probability of each strictly upper entry of N"),
        "scale": Param.real(1.0, low=0.0, low_open=True, sample=(1e-3, 1e3), doc="standard deviation of the entries of N"),
    },
)
def _sparse_unipotent(width, rng, *, density, scale):
    """``P (I + N) P^T``: N strictly upper triangular, Bernoulli(density) mask times N(0, scale^2); P a random permutation."""
    mask = np.triu(rng.random((width, width)) < density, k=1)
    N = np.where(mask, scale * rng.standard_normal((width, width)), 0.0)
    perm = rng.permutation(width)
    # (P U P^T)[i, j] = U[perm[i], perm[j]]: indexing keeps the unit diagonal exact.
    return DenseMap((np.eye(width) + N)[np.ix_(perm, perm)])


def _correlation_constraint(params):
    if params["kind"] == "block" and params["block"] >= 2:
        b, rho = params["block"], params["rho"]
        if not 1.0 + (b - 1) * rho > 0.0:
            raise ValueError(
                f"rho must be in (-1/(block-1), 1) = ({-1.0 / (b - 1):.6g}, 1) for kind='block' with "
                f"block={b} (the smallest eigenvalue 1 + (block-1)*rho must be > 0), got {rho!r}"
            )


def _correlation_attributes(M, *, kind, rho, bandwidth, block):
    attrs = ("symmetric_psd", "unit_diagonal", "trace_n")
    if kind == "banded":
        return attrs + (f"sparse({2 * bandwidth - 1})",)
    if kind == "block":
        return attrs + (f"sparse({block})",)
    return attrs


@register(
    "correlation",
    attributes=_correlation_attributes,
    params={
        "kind": Param.choice(("toeplitz", "banded", "block"), "toeplitz", doc="correlation structure"),
        "rho": Param.real(0.5, low=-1.0, high=1.0, low_open=True, high_open=True, doc="AR(1) / within-block correlation"),
        "bandwidth": Param.integer(3, low=1, sample=(1, 16), doc="triangle-kernel half width (kind='banded')"),
        "block": Param.integer(4, low=1, sample=(1, 16), doc="block size (kind='block'); the last block may be smaller"),
    },
    constraint=_correlation_constraint,
    invalid=[({"kind": "block", "block": 4, "rho": -0.5}, "rho"), ({"kind": "block", "block": 3, "rho": -0.5}, "rho")],
)
def _correlation(width, rng, *, kind, rho, bandwidth, block):
    """Structural correlation: SPD with unit diagonal (toeplitz AR(1), banded triangle kernel, block equicorrelation)."""
    if kind == "toeplitz":
        lag = np.abs(np.subtract.outer(np.arange(width), np.arange(width)))
        return DenseMap(rho**lag)
    if kind == "banded":
        lags = np.arange(min(bandwidth, width))
        return BandedToeplitzMap(1.0 - lags / bandwidth, width)
    return BlockEquicorrelationMap(width, min(block, width), rho)


# ----------------------------------------------------------------------- checking


@dataclass(frozen=True)
class Verdict:
    """One attribute checked on one matrix.

    Attributes
    ----------
    attribute : str
        As requested, e.g. ``"orthogonal"`` or ``"sparse(2)"``.
    deviation : float
        Measured distance from the attribute (0 is exact); for ``sparse(k)`` the
        measured nonzeros per row, ``count / n``.
    tolerance : float
        Largest deviation accepted (for ``sparse(k)``: ``k``).
    passed : bool
        ``deviation <= tolerance`` (for ``sparse(k)`` an exact integer comparison).
    measure : str
        What ``deviation`` measures.
    """

    attribute: str
    deviation: float
    tolerance: float
    passed: bool
    measure: str

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class CheckReport:
    """Result of :func:`check`.

    Attributes
    ----------
    width : int
    dtype : str
        dtype of the checked matrix; its eps sets the rounding allowances.
    verdicts : tuple of Verdict
        One per requested attribute, in request order.
    """

    width: int
    dtype: str
    verdicts: tuple

    @property
    def passed(self) -> bool:
        """All verdicts passed (True for no attributes)."""
        return all(v.passed for v in self.verdicts)

    @property
    def failures(self) -> tuple:
        return tuple(v for v in self.verdicts if not v.passed)

    def __getitem__(self, attribute: str) -> Verdict:
        for v in self.verdicts:
            if v.attribute == attribute:
                return v
        raise KeyError(f"{attribute!r} was not checked; checked: {[v.attribute for v in self.verdicts]}")

    def to_dict(self) -> dict:
        return {"width": self.width, "dtype": self.dtype, "passed": self.passed, "verdicts": [v.to_dict() for v in self.verdicts]}


def _irreducible_blocks(support: np.ndarray) -> list[np.ndarray]:
    """Index sets of the strongly connected components of the digraph ``i -> j iff support[i, j]``.

    In a topological order of the components, the matrix is block upper triangular
    (a permutation similarity): its eigenvalues and determinant are those of the
    diagonal blocks.
    """
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    count, labels = connected_components(csr_matrix(support), directed=True, connection="strong")
    order = np.argsort(labels, kind="stable")
    return np.split(order, np.cumsum(np.bincount(labels, minlength=count))[:-1])


def _grouped(A: np.ndarray, blocks: list[np.ndarray]):
    """Yield stacks ``(k, s, s)`` of the diagonal blocks of ``A``, grouped by size ``s``."""
    by_size: dict[int, list] = {}
    for idx in blocks:
        by_size.setdefault(idx.size, []).append(idx)
    for idxs in by_size.values():
        I = np.stack(idxs)
        yield A[I[:, :, None], I[:, None, :]]


_PRIME = 33554393  # largest prime below 2**25: s * p**2 < 2**63, so int64 products cannot overflow
_MODULAR_MAX_SIZE = 512  # int64 matrix products (not BLAS) above this size take seconds each
_EXACT_MAX_SIZE = 128  # exact big-integer powers above this block size would take minutes
_EXACT_MAX_BITS = 50_000


def _integer_form(B: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Write a float64 block exactly as integers: ``B * 2**-e0 = mant * 2**shift`` and ``1 * 2**-e0 = 2**one``."""
    frac, exp = np.frexp(B)
    mant = np.ldexp(frac, 53).astype(np.int64)  # exact: 53-bit significands
    exp = exp.astype(np.int64) - 53
    e0 = min(int(np.min(np.where(mant != 0, exp, 0))), 0)  # e0 <= 0 keeps 2**-e0 (the scaled 1) an integer
    return mant, np.where(mant != 0, exp - e0, 0), -e0


def _exactly_nilpotent(B: np.ndarray) -> bool | None:
    """Whether ``B - I`` is nilpotent in exact arithmetic on the stored entries of ``B (s, s)``.

    True/False are certain; None means undecided (too large for the exact test).
    Filters, each sound for rejection: ``tr(B - I) = 0`` exactly (``math.fsum`` is
    exact); ``tr((B - I)^2) = 0``, rejected when its float value exceeds the summation
    error bound ``gamma_{s^2+1} sum |D_ij D_ji|`` (twice); ``(B - I)^m`` modulo a prime
    (``m = 2^q >= s``, for ``s <= 512``). Then the exact big-integer power decides
    (``s <= 128``).
    """
    s = B.shape[0]
    if math.fsum(np.concatenate([np.diagonal(B), -np.ones(s)])) != 0.0:
        return False
    D = B - np.eye(s)  # off-diagonal copied exactly; D_ii may round (relative u), inside the bound below
    terms = D * D.T
    u = np.finfo(np.float64).eps / 2
    if abs(float(np.sum(terms))) > 4 * (s * s + 1) * u * float(np.sum(np.abs(terms))):
        return False
    if s > _MODULAR_MAX_SIZE:
        return None
    mant, shift, one = _integer_form(B)
    q = max(1, math.ceil(math.log2(s)))
    pow2 = np.ones(max(int(shift.max(initial=0)), one) + 1, dtype=np.int64)
    for i in range(1, pow2.size):
        pow2[i] = pow2[i - 1] * 2 % _PRIME
    K = np.mod(np.mod(mant, _PRIME) * pow2[shift], _PRIME)
    K[np.diag_indices(s)] = np.mod(K[np.diag_indices(s)] - pow2[one], _PRIME)
    for _ in range(q):
        K = np.mod(K @ K, _PRIME)
    if K.any():
        return False
    bits = 53 + max(int(shift.max(initial=0)), one)
    if s > _EXACT_MAX_SIZE or bits * 2**q > _EXACT_MAX_BITS:
        return None
    K = np.array([[int(v) << int(t) for v, t in zip(row, trow)] for row, trow in zip(mant, shift)], dtype=object)
    K[np.diag_indices(s)] -= 1 << one
    for _ in range(q):
        K = K @ K
        if not K.any():
            return True
    return False


class _Measured:
    """Lazily computed quantities of one float64 host matrix, shared between verdicts."""

    def __init__(self, A: np.ndarray, eps: float):
        self.A, self.eps, self.n = A, eps, A.shape[0]
        self.floor = 50.0 * self.n * eps  # the spec's orthogonality allowance, used as rounding floor

    @cached_property
    def blocks(self) -> list:
        """``(indices, exactly_unipotent)`` per irreducible diagonal block.

        ``M`` and ``M - I`` have the same off-diagonal pattern, hence the same blocks.
        """
        out = []
        for idx in _irreducible_blocks(self.A != 0):
            B = self.A[np.ix_(idx, idx)]
            out.append((idx, bool(B[0, 0] == 1.0) if idx.size == 1 else _exactly_nilpotent(B)))
        return out

    def _numeric(self) -> list[np.ndarray]:
        return [idx for idx, exact in self.blocks if not exact]

    @cached_property
    def eigenvalues(self) -> np.ndarray:
        """Spectrum; blocks with exactly nilpotent ``B - I`` contribute exact ones."""
        exact = sum(idx.size for idx, ok in self.blocks if ok)
        numeric = [np.linalg.eigvals(B).ravel() for B in _grouped(self.A, self._numeric())]
        return np.concatenate([np.ones(exact, dtype=complex)] + numeric)

    @cached_property
    def spectral_norm(self) -> float:
        return float(np.linalg.norm(self.A, 2))

    def orthogonal(self, k):
        dev = np.max(np.abs(self.A.T @ self.A - np.eye(self.n)))
        return dev, self.floor, "max|M^T M - I|"

    def unit_modulus_spectrum(self, k):
        dev = np.max(np.abs(np.abs(self.eigenvalues) - 1.0))
        return dev, max(1e-8, self.floor), "max | |lambda| - 1 | (per irreducible diagonal block)"

    def unipotent(self, k):
        dev = np.max(np.abs(self.eigenvalues - 1.0))
        return dev, max(1e-8, self.floor), "max |lambda - 1|; 0 on blocks where (B - I) is exactly nilpotent"

    def spectral_norm_one(self, k):
        return abs(self.spectral_norm - 1.0), max(1e-10, self.floor), "| |M|_2 - 1 |"

    def frobenius_sqrt_n(self, k):
        return abs(np.linalg.norm(self.A) / math.sqrt(self.n) - 1.0), max(1e-10, self.floor), "| |M|_F / sqrt(n) - 1 |"

    def trace_n(self, k):
        return abs(np.trace(self.A) - self.n) / self.n, max(1e-10, self.floor), "|tr M - n| / n"

    def unit_diagonal(self, k):
        return np.max(np.abs(np.diagonal(self.A) - 1.0)), 0.0, "max|M_ii - 1| (exact)"

    def symmetric_psd(self, k):
        asym = np.max(np.abs(self.A - self.A.T))
        lam_min = np.linalg.eigvalsh((self.A + self.A.T) / 2)[0]
        dev = max(asym, -lam_min, 0.0) / max(1.0, self.spectral_norm)
        return dev, max(1e-10, self.floor), "max(|M - M^T|_max, -lambda_min) / max(1, |M|_2)"

    def sparse(self, k):
        count = int(np.count_nonzero(self.A))
        return count / self.n, float(k), "nonzeros / n (tolerance: k)", count <= k * self.n

    def determinant_pm1(self, k):
        logabs = 0.0  # exactly unipotent blocks have det 1
        for B in _grouped(self.A, self._numeric()):
            logabs += float(np.sum(np.linalg.slogdet(B)[1]))
        dev = abs(math.expm1(logabs)) if logabs < 700 else math.inf
        return dev, max(1e-8, self.floor), "| |det M| - 1 | (product over irreducible diagonal blocks)"


def check(M, attributes) -> CheckReport:
    """Check a matrix against attributes; one :class:`Verdict` per attribute.

    The matrix is copied to the host in float64 (so only its storage rounding counts)
    and the rounding allowances use the eps of its own dtype. With ``n = width``,
    ``eps`` that eps and ``floor = 50 n eps`` (MAPPINGS.md's orthogonality bound,
    used as the rounding allowance wherever the spec gives a fixed float64 number, so
    float32 and very large ``n`` are judged fairly; in float64 the spec's numbers win
    for ``n < 9000``):

    ==========================  ==================================================  ====================
    attribute                   deviation                                           tolerance
    ==========================  ==================================================  ====================
    ``orthogonal``              ``max|M^T M - I|``                                  ``50 n eps``
    ``unit_modulus_spectrum``   ``max| |lambda| - 1 |``                             ``max(1e-8, floor)``
    ``unipotent``               ``max|lambda - 1|`` (0 on exactly unipotent blocks)  ``max(1e-8, floor)``
    ``spectral_norm_one``       ``| |M|_2 - 1 |``                                   ``max(1e-10, floor)``
    ``frobenius_sqrt_n``        ``| |M|_F / sqrt(n) - 1 |``                         ``max(1e-10, floor)``
    ``trace_n``                 ``|tr M - n| / n``                                  ``max(1e-10, floor)``
    ``unit_diagonal``           ``max|M_ii - 1|``                                   ``0`` (exact)
    ``symmetric_psd``           ``max(|M - M^T|_max, -lambda_min) / max(1, |M|_2)``  ``max(1e-10, floor)``
    ``sparse(k)``               nonzeros / n                                        ``k`` (exact count)
    ``determinant_pm1``         ``| |det M| - 1 |``                                 ``max(1e-8, floor)``
    ==========================  ==================================================  ====================

    Spectra and determinants are taken per irreducible diagonal block ``B`` of the
    Frobenius normal form (strongly connected components of the nonzero pattern; ``M``
    is block triangular after a permutation). A block whose ``B - I`` is nilpotent in
    exact arithmetic on the stored numbers has all eigenvalues exactly 1 and
    determinant exactly 1: a 1x1 block when its entry is 1, a larger one when an exact
    test says so (traces of ``B - I`` and its square, then the power ``(B - I)^m``,
    ``m >= s``, modulo a prime and finally in big integers; undecided above ``s = 128``,
    where the eigenvalue criterion applies). The other blocks use LAPACK (``eigvals``,
    ``slogdet``). So a permuted
    unit-triangular matrix is certified with deviation 0, where ``slogdet`` of the whole
    matrix returns ``log|det|`` of median 8.5 (``n = 32``) and 67 (``n = 64``) instead of
    0 (``sparse_unipotent``, ``density=1``, ``scale=10``, seeds 0-19).

    Why no floating-point tolerance on ``|(M - I)^n|``: a sound rounding bound is
    elementwise, ``|fl(D^m) - D^m| <= ((1 + gamma_s)^q - 1) |D|^m`` (``q``
    squarings), but the ratio ``|D^m| / | |D|^m |`` decays like
    ``(rho(D) / rho(|D|))^m`` for every ``D``, so that test passes ``I + 0.01 G``
    (``G`` Gaussian, ``n = 32``: ratio below 1e-18). Unipotency is not a stable property
    either (a Jordan block of size ``s`` moves its eigenvalues by ``delta^(1/s)``): a
    matrix that is unipotent only before rounding, e.g. ``Q (I + N) Q^T`` formed in
    floating point, is judged by its eigenvalues (the spec's ``|lambda - 1| <= 1e-8``)
    and fails for ``s >= 3``.

    ``symmetric_psd`` is relative to ``max(1, |M|_2)`` because a symmetric
    eigensolver's error scales with ``|M|_2`` (Weyl).

    Parameters
    ----------
    M : array, shape (n, n)
        Any backend; real, finite.
    attributes : str or iterable of str
        Names from :data:`ATTRIBUTES`; ``sparse(k)`` as e.g. ``"sparse(2)"``.

    Returns
    -------
    CheckReport

    Examples
    --------
    >>> import numpy as np
    >>> c, s = np.cos(0.3), np.sin(0.3)
    >>> report = check(np.array([[c, -s], [s, c]]), ["unit_modulus_spectrum", "symmetric_psd"])
    >>> [v.passed for v in report.verdicts]
    [True, False]
    """
    A0 = to_numpy(M)
    if A0.ndim != 2 or A0.shape[0] != A0.shape[1] or A0.shape[0] < 1:
        raise ValueError(f"M must be a square matrix of shape (n, n) with n >= 1, got shape {A0.shape}")
    if A0.dtype.kind not in "biuf":
        raise TypeError(f"M must be a real matrix, got dtype {A0.dtype}")
    eps = float(np.finfo(A0.dtype).eps) if A0.dtype.kind == "f" else float(np.finfo(np.float64).eps)
    A = np.asarray(A0, dtype=np.float64)
    if not np.all(np.isfinite(A)):
        raise ValueError("M must be finite, but it contains NaN or Inf")
    if isinstance(attributes, str):
        attributes = (attributes,)
    parsed = [(a, *_attribute_base(a)) for a in attributes]
    measured = _Measured(A, eps)
    verdicts = []
    for attribute, base, k in parsed:
        out = getattr(measured, base)(k)
        dev, tol, measure = float(out[0]), float(out[1]), out[2]
        passed = bool(out[3]) if len(out) > 3 else bool(dev <= tol)
        verdicts.append(Verdict(attribute, dev, tol, passed, measure))
    return CheckReport(width=A.shape[0], dtype=str(A0.dtype), verdicts=tuple(verdicts))
