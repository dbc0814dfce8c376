"""Iterative-refinement measures of residual networks (Jastrzebski et al. 2017).

"Residual connections encourage iterative inference" reads a residual block
``h_l = h_{l-1} + F_l(h_{l-1})`` as one step of an iterative optimiser of the loss:
to first order ``loss(h_{l-1} + F) ~ loss(h_{l-1}) + F . grad``, so a block *refines*
when its step is small and points down the loss gradient, and the network keeps its
accuracy when a (later) block is removed. Three measures make this checkable, for
entangled blocks ``h_l = M_l h_{l-1} + F_l(h_{l-1})`` too:

- :func:`norm_ratio`: ``|F_l(h_{l-1})| / |h_{l-1}|``, the relative step size;
- :func:`gradient_cosine`: ``cos(F_l(h_{l-1}), -g_l)`` with ``g_l = d loss / d h_l``
  at the block's output; chance level ``0 +- 1/sqrt(d)`` (:func:`cosine_chance`);
- :func:`lesion_accuracy`: the accuracy when block ``l`` alone is replaced by its
  skip, ``h_l <- M_l h_{l-1}``.

Which gradient, when ``M != I``
-------------------------------
``F_l`` is added to ``M_l h_{l-1}``, in the space of the block's *output*, and the
rest of the network sees only ``h_l``. With ``loss_l(z)`` the loss of the layers above
block ``l`` applied to ``z``, ``loss_l(M h + F) = loss_l(M h) + F . grad loss_l + O(|F|^2)``:
the first-order effect of the branch is ``F . g`` with ``g`` the gradient at the
output, ``g_l = d loss / d h_l`` (at ``M h + F`` rather than ``M h``, a second-order
difference, and the gradient autograd gives). The gradient at the input,
``d loss / d h_{l-1} = (M + J_l)^T g_l``, lives in the input space and would mix the
skip's rotation into the comparison: for an orthogonal ``M`` it compares ``F`` with
``M^T g``, a rotated vector, and measures ``M`` rather than refinement. With ``M = I``
the two differ by ``J_l^T g_l``, the term Jastrzebski et al.'s expansion drops, so the
output gradient is their measure in both cases.

Design constraints, in order:

1. Pure functions of arrays ``(L, N, d)``: block ``l``, input ``n``, flattened
   features (a conv feature map is ``C H W``, a token sequence ``T dim``). Outputs are
   ``(L, N)`` or ``(L,)``. The namespace comes from the inputs
   (:func:`ramodel.backend.get_namespace`), so NumPy, CuPy and array-API arrays work;
   nothing is modified in place.
2. Undefined values are explicit: a ratio or a cosine with a zero norm in the
   denominator is NaN (``on_zero="nan"``, documented) or an error
   (``on_zero="raise"``). Summaries (:func:`per_block`) leave NaN out and count it.
   A zero gradient is common in practice: a float32 softmax that saturates at
   probability 1 has an exactly zero cross-entropy gradient.
3. torch is imported only inside :func:`collect`, which runs a model and records
   the arrays the measures take; ``import ramodel.refinement`` never imports torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._blocks import BlockRecorder, eval_mode, resolve_blocks
from ._validation import check_choice, check_int
from .backend import get_namespace, to_numpy

__all__ = [
    "norm_ratio",
    "gradient_cosine",
    "accuracy",
    "lesion_accuracy",
    "cosine_chance",
    "chance_accuracy",
    "BlockSummary",
    "per_block",
    "RefinementData",
    "Refinement",
    "measure",
    "collect",
]

_ON_ZERO = ("nan", "raise")


def _stack(name: str, a: Any, xp=None):
    """``a`` as a real floating ``(L, N, d)`` array of its own namespace, finite, non-empty."""
    xp = get_namespace(a) if xp is None else xp
    if not hasattr(a, "shape") or not hasattr(a, "dtype"):
        a = xp.asarray(a)
    if a.ndim != 3:
        raise ValueError(f"{name} must have shape (L, N, d) (blocks, inputs, features), got shape {tuple(a.shape)}")
    if 0 in tuple(a.shape):
        raise ValueError(f"{name} must be non-empty, got shape {tuple(a.shape)}")
    if a.dtype not in (xp.float32, xp.float64):
        raise TypeError(f"{name} must be real floating, got dtype {a.dtype}")
    if not bool(xp.all(xp.isfinite(a))):
        raise ValueError(f"{name} must be finite, but it contains NaN or Inf")
    return a


def _pair(names: tuple[str, str], a, b):
    xp = get_namespace(a, b)
    a, b = _stack(names[0], a, xp), _stack(names[1], b, xp)
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"{names[0]} and {names[1]} must have the same shape (L, N, d), "
                         f"got {tuple(a.shape)} and {tuple(b.shape)}")
    return xp, a, b


def _scaled(a, xp):
    """``(m, a / m)`` with ``m = max |a_i|`` over the last axis (1 where ``a = 0``)."""
    m = xp.max(xp.abs(a), axis=-1, keepdims=True)
    safe = xp.where(m > 0, m, xp.ones_like(m))
    return m[..., 0], a / safe


def _norm(a, xp):
    # Scaled by the largest entry first, so squares neither underflow nor overflow.
    m, b = _scaled(a, xp)
    return m * xp.sqrt(xp.sum(b * b, axis=-1))


def _unit(a, xp):
    """``a / |a|`` (0 where ``a = 0``) and ``|a|``."""
    _, b = _scaled(a, xp)
    n = xp.sqrt(xp.sum(b * b, axis=-1))
    safe = xp.where(n > 0, n, xp.ones_like(n))
    return b / safe[..., None], _norm(a, xp)


def _divide(num, den, xp, on_zero: str, what: str):
    zero = den == 0
    if bool(xp.any(zero)):
        if on_zero == "raise":
            where = np.argwhere(to_numpy(zero))[0].tolist()
            raise ValueError(f"{what} is zero at (block, input) = {tuple(where)}; the ratio is undefined there")
        return xp.where(zero, xp.asarray(math.nan, dtype=num.dtype), num / xp.where(zero, xp.ones_like(den), den))
    return num / den


def norm_ratio(F, h, *, on_zero: str = "nan"):
    """Relative step size ``|F_l(h_{l-1})| / |h_{l-1}|`` per block and input.

    Parameters
    ----------
    F : array, shape (L, N, d)
        Branch outputs ``F_l(h_{l-1})``, flattened per input.
    h : array, shape (L, N, d)
        The blocks' inputs ``h_{l-1}``.
    on_zero : {"nan", "raise"}, default "nan"
        Where ``|h_{l-1}| = 0`` (e.g. a recurrent net's ``h_0 = 0``): NaN, or a
        ``ValueError`` naming the first such (block, input).

    Returns
    -------
    array, shape (L, N)
        Euclidean norms' ratio, in the namespace and dtype of the inputs. A block that
        scales its input, ``F = c h``, gives ``|c|``.

    Examples
    --------
    >>> import numpy as np
    >>> h = np.random.default_rng(0).standard_normal((2, 3, 4))
    >>> norm_ratio(0.5 * h, h).round(12).tolist()
    [[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]]
    """
    check_choice("on_zero", on_zero, _ON_ZERO)
    xp, F, h = _pair(("F", "h"), F, h)
    return _divide(_norm(F, xp), _norm(h, xp), xp, on_zero, "|h_{l-1}|")


def gradient_cosine(F, grad, *, on_zero: str = "nan"):
    """``cos(F_l(h_{l-1}), -g_l)`` per block and input, with ``g_l = d loss / d h_l``.

    1 means the block steps straight down the loss gradient (a gradient-descent step),
    -1 straight up, 0 orthogonally. For random directions the cosine is
    ``0 +- 1/sqrt(d)`` (:func:`cosine_chance`). Why the gradient at the block's output
    ``h_l`` (not its input) when ``M != I``: see the module docstring.

    Parameters
    ----------
    F : array, shape (L, N, d)
        Branch outputs.
    grad : array, shape (L, N, d)
        ``g_l``: the gradient of each input's own loss with respect to the block's
        output ``h_l``.
    on_zero : {"nan", "raise"}, default "nan"
        Where ``|F| = 0`` or ``|g| = 0`` (a saturated softmax): NaN, or a ``ValueError``.

    Returns
    -------
    array, shape (L, N)
        In ``[-1, 1]``.

    Examples
    --------
    >>> import numpy as np
    >>> g = np.random.default_rng(0).standard_normal((1, 2, 5))
    >>> gradient_cosine(-0.1 * g, g).round(12).tolist(), gradient_cosine(0.1 * g, g).round(12).tolist()
    ([[1.0, 1.0]], [[-1.0, -1.0]])
    """
    check_choice("on_zero", on_zero, _ON_ZERO)
    xp, F, grad = _pair(("F", "grad"), F, grad)
    (u, nF), (v, ng) = _unit(F, xp), _unit(grad, xp)
    cos = -xp.sum(u * v, axis=-1)
    zero = (nF == 0) | (ng == 0)
    cos = _divide(cos, xp.where(zero, xp.zeros_like(nF), xp.ones_like(nF)), xp, on_zero, "|F| |grad|")
    return xp.clip(cos, -1.0, 1.0)


def _labels(labels, N: int, C: int) -> np.ndarray:
    y = to_numpy(labels)
    if y.ndim != 1 or y.shape[0] != N:
        raise ValueError(f"labels must have shape (N,) = ({N},), got {y.shape}")
    if y.dtype.kind not in "iu":
        raise TypeError(f"labels must be integers, got dtype {y.dtype}")
    if y.size and (y.min() < 0 or y.max() >= C):
        raise ValueError(f"labels must be in [0, {C}) (the logits' classes), got values in [{y.min()}, {y.max()}]")
    return y.astype(np.int64)


def _logits(name: str, logits, ndim: int) -> np.ndarray:
    z = to_numpy(logits)
    if z.ndim != ndim or 0 in z.shape:
        shape = "(N, C)" if ndim == 2 else "(L, N, C)"
        raise ValueError(f"{name} must be a non-empty array of shape {shape}, got shape {z.shape}")
    if z.dtype.kind != "f" or not np.all(np.isfinite(z)):
        raise ValueError(f"{name} must be finite real floating numbers")
    return z


def accuracy(logits, labels) -> float:
    """Fraction of inputs whose largest logit is the label.

    Parameters
    ----------
    logits : array, shape (N, C)
    labels : int array, shape (N,)

    Returns
    -------
    float
        In [0, 1]. Ties go to the lowest class index (``argmax``).

    Examples
    --------
    >>> import numpy as np
    >>> accuracy(np.array([[2.0, 1.0], [0.0, 3.0]]), np.array([0, 0]))
    0.5
    """
    z = _logits("logits", logits, 2)
    y = _labels(labels, z.shape[0], z.shape[1])
    return float(np.mean(z.argmax(axis=1) == y))


def lesion_accuracy(lesion_logits, labels) -> np.ndarray:
    """Accuracy of the network with block ``l`` replaced by its skip, one block at a time.

    Parameters
    ----------
    lesion_logits : array, shape (L, N, C)
        ``lesion_logits[l]``: the logits when block ``l`` outputs ``M_l h_{l-1}``
        (its branch removed) and every other block is intact (:func:`collect`).
    labels : int array, shape (N,)

    Returns
    -------
    ndarray, shape (L,), float64
        Compare with :func:`accuracy` of the intact network and with
        :func:`chance_accuracy`. A block whose branch is exactly zero leaves the
        logits, hence the accuracy, unchanged.

    Examples
    --------
    >>> import numpy as np
    >>> z = np.array([[[2.0, 1.0], [0.0, 3.0]], [[0.0, 1.0], [0.0, 3.0]]])
    >>> lesion_accuracy(z, np.array([0, 1])).tolist()
    [1.0, 0.5]
    """
    z = _logits("lesion_logits", lesion_logits, 3)
    y = _labels(labels, z.shape[1], z.shape[2])
    return np.mean(z.argmax(axis=2) == y[None, :], axis=1).astype(np.float64)


def cosine_chance(d: int) -> tuple[float, float]:
    """Mean and standard deviation of the cosine of two independent random directions in ``R^d``.

    For ``u`` uniform on the sphere and any fixed unit ``v``, ``E cos = 0`` and
    ``E cos^2 = 1/d``, so the chance level of :func:`gradient_cosine` is ``0 +- 1/sqrt(d)``.

    Examples
    --------
    >>> cosine_chance(100)
    (0.0, 0.1)
    """
    d = check_int("d", d, minimum=1)
    return 0.0, 1.0 / math.sqrt(d)


def chance_accuracy(labels) -> float:
    """Accuracy of always predicting the most frequent label (``1/C`` when balanced).

    Examples
    --------
    >>> chance_accuracy([0, 1, 1, 2])
    0.5
    """
    y = np.asarray(to_numpy(labels) if hasattr(labels, "shape") else labels)
    if y.ndim != 1 or y.size == 0 or y.dtype.kind not in "iu" or y.min() < 0:
        raise ValueError(f"labels must be a non-empty 1-D array of non-negative integers, got shape {y.shape}, dtype {y.dtype}")
    return float(np.bincount(y).max() / y.size)


@dataclass(frozen=True)
class BlockSummary:
    """Per-block summary of a ``(L, N)`` measure over inputs, NaN (undefined) entries left out.

    Attributes
    ----------
    mean, std : ndarray, shape (L,)
        Over the defined entries (population std); NaN for a block with none.
    count : ndarray, shape (L,), int
        Defined entries per block.
    excluded : ndarray, shape (L,), int
        NaN entries per block (undefined: a zero norm).
    """

    mean: np.ndarray
    std: np.ndarray
    count: np.ndarray
    excluded: np.ndarray

    def to_dict(self) -> dict:
        """Lists; NaN as None."""
        return {
            k: [None if isinstance(v, float) and math.isnan(v) else v for v in getattr(self, k).tolist()]
            for k in ("mean", "std", "count", "excluded")
        }


def per_block(values) -> BlockSummary:
    """Summarise a measure of shape ``(L, N)`` per block, leaving NaN out.

    Examples
    --------
    >>> import numpy as np
    >>> s = per_block(np.array([[1.0, 3.0], [np.nan, 2.0]]))
    >>> s.mean.tolist(), s.excluded.tolist()
    ([2.0, 2.0], [0, 1])
    """
    v = np.asarray(to_numpy(values), dtype=np.float64)
    if v.ndim != 2 or 0 in v.shape:
        raise ValueError(f"values must have shape (L, N), got {v.shape}")
    defined = ~np.isnan(v)
    count = defined.sum(axis=1)
    safe = np.where(defined, v, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, safe.sum(axis=1) / np.maximum(count, 1), np.nan)
        var = np.where(defined, (v - mean[:, None]) ** 2, 0.0).sum(axis=1) / np.maximum(count, 1)
    std = np.where(count > 0, np.sqrt(var), np.nan)
    return BlockSummary(mean=mean, std=std, count=count.astype(np.int64), excluded=(~defined).sum(axis=1).astype(np.int64))


@dataclass(frozen=True, eq=False)
class RefinementData:
    """What a network did on a batch, as the refinement measures take it.

    Block ``l`` (0-based here) is the ``l``-th *call* of a residual module in forward
    order: the blocks of a feed-forward net, or the steps of a recurrent cell.

    Attributes
    ----------
    h_in : ndarray, shape (L, N, d)
        Block inputs ``h_{l-1}``, flattened per input.
    h_out : ndarray, shape (L, N, d)
        Block outputs ``h_l = M_l h_{l-1} + F_l(h_{l-1})``.
    F : ndarray, shape (L, N, d)
        Branch outputs ``F_l(h_{l-1})``.
    grad : ndarray, shape (L, N, d)
        ``d loss_n / d h_l``: gradient of each input's own loss at the block output.
    logits : ndarray, shape (N, C)
        Of the intact network.
    lesion_logits : ndarray, shape (L, N, C) or None
        ``lesion_logits[l]``: logits with block ``l`` replaced by its skip.
    labels : ndarray, shape (N,), int64
    feature_shape : tuple of int
        Per-input shape of ``h`` before flattening (e.g. ``(C, H, W)``).
    """

    h_in: np.ndarray
    h_out: np.ndarray
    F: np.ndarray
    grad: np.ndarray
    logits: np.ndarray
    lesion_logits: np.ndarray | None
    labels: np.ndarray
    feature_shape: tuple[int, ...]

    @property
    def representations(self) -> np.ndarray:
        """``h_0 .. h_L``, shape ``(L + 1, N, d)``: the first input, then every output."""
        return np.concatenate([self.h_in[:1], self.h_out])


@dataclass(frozen=True, eq=False)
class Refinement:
    """The refinement measures of one network (:func:`measure`).

    Attributes
    ----------
    norm_ratio : ndarray, shape (L, N)
        :func:`norm_ratio`; NaN where ``h_{l-1} = 0``.
    gradient_cosine : ndarray, shape (L, N)
        :func:`gradient_cosine`; NaN where ``F`` or the gradient is zero.
    lesion_accuracy : ndarray, shape (L,) or None
    accuracy : float
        Of the intact network on these inputs.
    chance_accuracy : float
        Of always guessing the most frequent label.
    cosine_chance_std : float
        ``1/sqrt(d)``: the standard deviation of the cosine of random directions.
    norm_ratio_blocks, gradient_cosine_blocks : BlockSummary
        Per-block means over inputs.
    """

    norm_ratio: np.ndarray
    gradient_cosine: np.ndarray
    lesion_accuracy: np.ndarray | None
    accuracy: float
    chance_accuracy: float
    cosine_chance_std: float
    norm_ratio_blocks: BlockSummary
    gradient_cosine_blocks: BlockSummary

    def to_dict(self) -> dict:
        """Per-block summaries and scalars (no per-input arrays), JSON-ready."""
        return {
            "accuracy": self.accuracy,
            "chance_accuracy": self.chance_accuracy,
            "cosine_chance_std": self.cosine_chance_std,
            "lesion_accuracy": None if self.lesion_accuracy is None else self.lesion_accuracy.tolist(),
            "norm_ratio": self.norm_ratio_blocks.to_dict(),
            "gradient_cosine": self.gradient_cosine_blocks.to_dict(),
        }


def measure(data: RefinementData) -> Refinement:
    """All refinement measures of a :class:`RefinementData`.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> h, g = rng.standard_normal((2, 3, 2, 4))
    >>> data = RefinementData(h_in=h, h_out=0.9 * h, F=-0.1 * h, grad=h, logits=np.eye(2),
    ...                       lesion_logits=np.stack([np.eye(2)] * 3), labels=np.array([0, 1]), feature_shape=(4,))
    >>> r = measure(data)
    >>> r.norm_ratio_blocks.mean.round(12).tolist(), r.gradient_cosine_blocks.mean.round(12).tolist()
    ([0.1, 0.1, 0.1], [1.0, 1.0, 1.0])
    """
    if not isinstance(data, RefinementData):
        raise TypeError(f"data must be a RefinementData (from ramodel.refinement.collect), got {type(data).__name__}")
    ratio = to_numpy(norm_ratio(data.F, data.h_in))
    cos = to_numpy(gradient_cosine(data.F, data.grad))
    lesion = None if data.lesion_logits is None else lesion_accuracy(data.lesion_logits, data.labels)
    return Refinement(
        norm_ratio=ratio,
        gradient_cosine=cos,
        lesion_accuracy=lesion,
        accuracy=accuracy(data.logits, data.labels),
        chance_accuracy=chance_accuracy(data.labels),
        cosine_chance_std=cosine_chance(int(data.F.shape[-1]))[1],
        norm_ratio_blocks=per_block(ratio),
        gradient_cosine_blocks=per_block(cos),
    )


# ----------------------------------------------------------------------------- torch


_eval_mode = eval_mode  # ramodel._blocks: one copy for export and refinement


def _check_blocks(model, blocks):
    from torch import nn

    blocks, _ = resolve_blocks(model, blocks)
    for i, b in enumerate(blocks):
        if not isinstance(getattr(b, "skip", None), nn.Module) or not isinstance(getattr(b, "branch", None), nn.Module):
            raise TypeError(
                f"blocks[{i}] ({type(b).__name__}) must have modules .skip (h -> M h) and .branch (F), with "
                "forward(h, ...) = skip(h) + branch(h, ...), as the blocks of ramodel.nets have"
            )
    return blocks


def collect(
    model, x, y, *, blocks=None, loss: str = "cross_entropy", batch_size: int = 256, lesion: bool = True
) -> RefinementData:
    """Run a torch model on ``x`` and record the inputs of the refinement measures.

    Every call of a module in ``blocks`` is one block (a recurrent cell called at
    ``T`` steps gives ``T`` blocks). Each such module must have ``.skip`` and
    ``.branch`` submodules with ``forward(h, ...) = skip(h) + branch(h, ...)`` (every
    block of :mod:`ramodel.nets`); its first positional argument is the residual
    stream ``h``.

    Parameters
    ----------
    model : torch.nn.Module
        Maps ``x`` to logits ``(N, C)``. Run in eval mode (every submodule's mode is
        restored afterwards); its parameters and their ``.grad`` are not touched.
    x : tensor or array, shape (N, ...)
        Inputs as the model takes them (e.g. ``(N, 1, H, W)`` for image models).
    y : int tensor or array, shape (N,)
    blocks : sequence of nn.Module, optional
        Default ``model.blocks``. All calls must have the same feature size ``d``
        (for a multi-stage :class:`~ramodel.nets.ConvResNet`, pass one stage).
    loss : {"cross_entropy", "mse"}, default "cross_entropy"
        The loss whose gradient :func:`gradient_cosine` compares with (as in
        :func:`ramodel.training.train`). Summed over inputs, so ``grad[l, n]`` is the
        gradient of input ``n``'s own loss: in eval mode no input affects another.
    batch_size : int, default 256
        Inputs per forward pass.
    lesion : bool, default True
        Also record the logits with each block replaced by its skip (L more passes).

    Returns
    -------
    RefinementData
        Host float64 arrays.

    Examples
    --------
    >>> import torch
    >>> from ramodel.nets import ResidualMLP
    >>> net = ResidualMLP(4, 3, width=5, depth=2, skip="orthogonal", seed=0, init_seed=0)
    >>> data = collect(net, torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2]))
    >>> data.h_in.shape, data.lesion_logits.shape
    ((2, 6, 5), (2, 6, 3))
    """
    import torch
    from torch.nn import functional

    blocks = _check_blocks(model, blocks)
    check_choice("loss", loss, ("cross_entropy", "mse"))
    batch_size = check_int("batch_size", batch_size, minimum=1)
    if not isinstance(lesion, bool):
        raise TypeError(f"lesion must be a bool, got {lesion!r}")
    param = next(iter(model.parameters()), None)
    dtype = param.dtype if param is not None else torch.get_default_dtype()
    device = param.device if param is not None else torch.device("cpu")
    # Copies of host arrays: Dataset arrays are read-only, which torch refuses to wrap.
    x = (x if isinstance(x, torch.Tensor) else torch.tensor(np.array(x))).detach().to(device=device, dtype=dtype)
    y = (y if isinstance(y, torch.Tensor) else torch.tensor(np.array(y))).detach().to(device=device)
    if y.ndim != 1 or x.ndim < 1 or x.shape[0] != y.shape[0] or y.shape[0] == 0:
        raise ValueError(f"x must be (N, ...) and y (N,) with N >= 1, got {tuple(x.shape)} and {tuple(y.shape)}")
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise TypeError(f"y must hold integer labels, got dtype {y.dtype}")

    # Every call of a block: (h, F, out) in the autograd graph; replace_at lesions one call.
    with BlockRecorder(blocks, strict=False, branch=True) as rec:
        parts = {k: [] for k in ("h_in", "h_out", "F", "grad")}
        logits_all, lesion_all, shape = [], [], None
        with _eval_mode(model):
            for start in range(0, x.shape[0], batch_size):
                xb, yb = x[start : start + batch_size].clone().requires_grad_(True), y[start : start + batch_size]
                rec.reset()
                with torch.enable_grad():
                    logits = model(xb)
                    if logits.ndim != 2 or logits.shape[0] != xb.shape[0]:
                        raise ValueError(f"model must return logits of shape (batch, C), got {tuple(logits.shape)}")
                    if yb.numel() and (int(yb.min()) < 0 or int(yb.max()) >= logits.shape[1]):
                        raise ValueError(f"y must be in [0, {logits.shape[1]}) (the model's classes)")
                    if loss == "cross_entropy":
                        value = functional.cross_entropy(logits, yb, reduction="sum")
                    else:
                        target = functional.one_hot(yb, logits.shape[1]).to(logits.dtype)
                        value = (logits - target).square().sum()
                    outs = [c[2] for c in rec.calls]
                    if not outs:
                        raise ValueError("no block was called in the forward pass: are blocks= the model's residual modules?")
                    grads = torch.autograd.grad(value, outs, allow_unused=True)
                L = len(rec.calls)
                for l, ((h, F, out), g) in enumerate(zip(rec.calls, grads)):
                    s = tuple(h.shape[1:])
                    shape = s if shape is None else shape
                    if s != shape or tuple(out.shape[1:]) != shape or tuple(F.shape[1:]) != shape:
                        raise ValueError(
                            f"block {l} has features of shape {s} (output {tuple(out.shape[1:])}), but block 0 has "
                            f"{shape}: all blocks must share one shape (pass the blocks of one stage)"
                        )
                    g = torch.zeros_like(out) if g is None else g
                    for key, t in zip(("h_in", "F", "h_out", "grad"), (h, F, out, g)):
                        parts[key].append((l, t.detach().reshape(t.shape[0], -1).to("cpu", torch.float64).numpy()))
                logits_all.append(logits.detach().to("cpu", torch.float64).numpy())
                if lesion:
                    per = []
                    with torch.no_grad():
                        for l in range(L):
                            rec.reset()
                            rec.replace_at = l
                            per.append(model(xb.detach()).to("cpu", torch.float64).numpy())
                    rec.replace_at = None
                    lesion_all.append(np.stack(per))

    def assemble(key):
        L = max(l for l, _ in parts[key]) + 1
        rows = [[] for _ in range(L)]
        for l, a in parts[key]:
            rows[l].append(a)
        if len({len(r) for r in rows}) != 1:
            raise ValueError("the number of block calls changed between batches; "
                             "the model must run its blocks the same way for every input")
        return np.stack([np.concatenate(r) for r in rows])

    return RefinementData(
        h_in=assemble("h_in"),
        h_out=assemble("h_out"),
        F=assemble("F"),
        grad=assemble("grad"),
        logits=np.concatenate(logits_all),
        lesion_logits=np.concatenate(lesion_all, axis=1) if lesion else None,
        labels=y.to("cpu").numpy().astype(np.int64),
        feature_shape=tuple(int(s) for s in shape),
    )
