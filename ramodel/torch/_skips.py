"""Skip discovery: which linear map ``M`` a residual block applies on its skip path.

The protocol (``block.skip_matrix()``, else ``block.skip.matrix`` / ``block.skip.M``,
else an error; never a guess) is documented in :mod:`ramodel.torch`. Used by the
export (:func:`ramodel.torch.compute_jacobians`) and by the per-block functions.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["skip_matrix"]


@dataclass(frozen=True)
class _Skip:
    """A block's skip map: ``kind`` in {"identity", "features", "axis"}."""

    kind: str
    matrix: np.ndarray | None = None  # float64 host copy; (d, d) or (n, n)
    axis: int = 0  # per-sample axis of an "axis" skip

    def dense(self, shape: tuple[int, ...]) -> np.ndarray:
        """The ``(d, d)`` matrix on C-order flattened features."""
        d = int(np.prod(shape))
        if self.kind == "identity":
            return np.eye(d)
        if self.kind == "features":
            return self.matrix
        before, after = int(np.prod(shape[: self.axis])), int(np.prod(shape[self.axis + 1 :]))
        return np.kron(np.eye(before), np.kron(self.matrix, np.eye(after)))

    def describe(self, shape: tuple[int, ...]) -> str:
        if self.kind == "axis" and len(shape) > 1:
            return "channels" if self.axis == 0 else f"axis {self.axis} of the feature map"
        return self.kind if self.kind != "axis" else "features"

    def applier(self, dtype: torch.dtype, device: torch.device):
        """``h (s) -> M h (s)`` for one sample, in torch."""
        if self.kind == "identity":
            return lambda h: h
        M = torch.as_tensor(self.matrix, dtype=dtype, device=device)
        if self.kind == "features":
            return lambda h: (M @ h.reshape(-1)).reshape(h.shape)
        a = self.axis
        return lambda h: torch.tensordot(M, h, dims=([1], [a])).movedim(0, a)


def _host_matrix(value: Any, where: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().to("cpu", torch.float64).numpy()
    try:
        M = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{where} must be a matrix (array or tensor), got {type(value).__name__}") from exc
    if M.ndim != 2 or M.shape[0] != M.shape[1]:
        raise ValueError(f"{where} must be a square matrix, got shape {M.shape}")
    if not np.isfinite(M).all():
        raise ValueError(f"{where} must be finite, but it holds NaN or Inf")
    return M


def skip_matrix(block: nn.Module) -> np.ndarray | None:
    """The skip matrix ``M`` a block declares, or None for the identity skip.

    Implements the skip protocol of the module docstring: ``block.skip_matrix()``,
    else ``block.skip.matrix`` or ``block.skip.M`` (array, tensor, buffer or a
    callable returning one); a block with neither is an error (skips are never
    guessed). ``block.skip`` set to None or ``nn.Identity`` is the identity. (An identity matrix is returned as it is; the
    exporter treats it as the identity skip.)

    Parameters
    ----------
    block : nn.Module

    Returns
    -------
    ndarray, shape (d, d) or (c, c), float64, or None
        A host copy (the block's tensors are not shared).

    Raises
    ------
    TypeError
        If ``block.skip`` exists but follows no known protocol, or the matrix is not
        an array.
    ValueError
        If the matrix is not square or not finite.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> class Block(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.register_buffer("M", 2 * torch.eye(3))
    ...     def skip_matrix(self):
    ...         return self.M
    ...     def forward(self, h):
    ...         return h @ self.M.T + torch.tanh(h)
    >>> skip_matrix(Block()).diagonal().tolist()
    [2.0, 2.0, 2.0]
    >>> skip_matrix(nn.Sequential()) is None      # a block that declares no skip
    Traceback (most recent call last):
    ...
    ValueError: block Sequential declares no skip, and ramodel does not guess one: ...
    """
    return _discover_skip(block)[0]


_SKIP_HELP = (
    "declare it in one of three ways: pass skips='identity' (every block is h + F(h)), "
    "skips='none' (every block is a plain h -> F(h)) or skips=[one matrix, None, 'identity' or 'none' per "
    "block] to export_jacobians; give the block a 'skip' attribute (None or nn.Identity() for the identity, "
    "a module with a 'matrix' otherwise); or give it a skip_matrix() method"
)


def _discover_skip(block: nn.Module, label: str | None = None) -> tuple[np.ndarray | None, int | None]:
    """``(M or None, the skip's batched ``dim`` attribute or None)``; raises when undeclared."""
    if not isinstance(block, nn.Module):
        raise TypeError(f"block must be a torch.nn.Module, got {type(block).__name__}")
    name = type(block).__name__
    method = getattr(block, "skip_matrix", None)
    if callable(method):
        value = method()
        return (None if value is None else _host_matrix(value, f"{name}.skip_matrix()")), None
    if not hasattr(block, "skip"):
        where = f"block {label!r} ({name})" if label else f"block {name}"
        raise ValueError(
            f"{where} declares no skip, and ramodel does not guess one: a plain block h -> F(h) taken "
            f"for h + F(h) would be exported as dF/dh - I. To export it, {_SKIP_HELP}"
        )
    skip = block.skip
    if skip is None or isinstance(skip, nn.Identity):
        return None, None
    attr = "matrix" if hasattr(skip, "matrix") else "M" if hasattr(skip, "M") else None
    if attr is None:
        raise TypeError(
            f"{name}.skip is a {type(skip).__name__} without a 'matrix' or 'M' attribute: ramodel cannot "
            "tell which linear map it applies. Give the skip a 'matrix' (d x d or channels x "
            "channels), give the block a skip_matrix() method, or pass skips=... to export_jacobians"
        )
    value = getattr(skip, attr)
    if callable(value) and not isinstance(value, torch.Tensor):
        value = value()
    dim = getattr(skip, "dim", None)
    dim = dim if isinstance(dim, numbers.Integral) and not isinstance(dim, bool) else None
    return (None if value is None else _host_matrix(value, f"{name}.skip.{attr}")), dim


def _as_skip(M: np.ndarray | None, shape: tuple[int, ...], where: str, dim: int | None = None) -> _Skip:
    if M is None:
        return _Skip("identity")
    n = M.shape[0]
    d = int(np.prod(shape))
    # dim is in the batched convention (axis 0 is the batch): per-sample axis dim - 1.
    axis = 0 if dim is None else (dim - 1 if dim > 0 else len(shape) + dim)
    if not 0 <= axis < len(shape):
        raise ValueError(f"{where}: the skip's dim={dim} is not an axis of (batch, *{shape})")
    # The size check comes first: an identity matrix of the wrong size is as wrong as any.
    if n not in (shape[axis], d):
        raise ValueError(
            f"{where} has shape {M.shape}, but a skip on features of shape {shape} must be "
            f"(d, d) = ({d}, {d}) or ({shape[axis]}, {shape[axis]}) on axis {axis}"
        )
    if np.array_equal(M, np.eye(n)):
        return _Skip("identity")
    if n == shape[axis]:
        return _Skip("axis", M, axis) if len(shape) > 1 else _Skip("features", M)
    return _Skip("features", M)


def _named_skip(value: Any, shape: tuple[int, ...], where: str) -> _Skip:
    """A skip given as None / "identity" (identity), "none" (zero) or a matrix."""
    if value is None or (isinstance(value, str) and value == "identity"):
        return _Skip("identity")
    if isinstance(value, str):
        if value == "none":
            n = shape[0]
            return _as_skip(np.zeros((n, n)), shape, where)
        raise ValueError(f"{where} must be a matrix, None, 'identity' or 'none', got {value!r}")
    return _as_skip(_host_matrix(value, where), shape, where)


def _resolve_skips(skips: Any, blocks: list[nn.Module], names: list[str], shape: tuple[int, ...]) -> list[_Skip]:
    L = len(blocks)
    if skips is None:
        found = [_discover_skip(b, n) for b, n in zip(blocks, names)]
        return [_as_skip(M, shape, f"the skip matrix of block {n!r}", dim) for (M, dim), n in zip(found, names)]
    if isinstance(skips, str):
        if skips not in ("identity", "none"):
            raise ValueError(f"skips must be 'identity', 'none', a matrix, an (L, ., .) array or a list, got {skips!r}")
        return [_named_skip(skips, shape, f"skips ({n!r})") for n in names]
    if isinstance(skips, (np.ndarray, torch.Tensor)):
        arr = skips.detach().cpu().numpy() if isinstance(skips, torch.Tensor) else skips
        if arr.ndim == 2:
            entries = [arr] * L
        elif arr.ndim == 3 and arr.shape[0] == L:
            entries = list(arr)
        else:
            raise ValueError(f"skips must be one matrix (2-d) or one per block (L={L}, ., .), got shape {arr.shape}")
    elif isinstance(skips, Sequence) and not isinstance(skips, str):
        if len(skips) != L:
            raise ValueError(f"skips must hold one entry per block (L={L}), got {len(skips)}")
        entries = list(skips)
    else:
        raise TypeError("skips must be None, a matrix, an (L, ., .) array or a list of L matrices/None, "
                        f"got {type(skips).__name__}")
    return [_named_skip(M, shape, f"skips[{i}]") for i, M in enumerate(entries)]


def _skip_family(skips: list[_Skip], blocks: list[nn.Module]) -> str:
    if all(s.kind == "identity" for s in skips):
        return "identity"
    families = set()
    for s, b in zip(skips, blocks):
        if s.kind == "identity":
            families.add("identity")
            continue
        if s.matrix is not None and not np.any(s.matrix):
            families.add("none")
            continue
        sk = getattr(b, "skip", None)
        fam = getattr(sk, "family", None) if sk is not None else None
        families.add(str(fam) if isinstance(fam, str) else ("custom" if sk is None else type(sk).__name__))
    return families.pop() if len(families) == 1 else "mixed:" + ",".join(sorted(families))
