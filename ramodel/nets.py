"""PyTorch residual networks with entangled skips ``h <- M h + F(h)``.

Architectures: :class:`ResidualMLP` (fully connected), :class:`ConvResNet` (``M`` on
channels), :class:`VisionTransformer` (pre-LayerNorm, ``M`` on the embedding axis of
every token) and :class:`ResidualRNN` (``h_t = M h_{t-1} + f(h_{t-1}, x_t)``, one ``M``
shared over time).

Design constraints, in order:

1. Optional: this module imports torch at the top and nothing else in ``ramodel``
   imports it (``pip install 'ramodel[torch]'``).
2. One registry: a skip named by family is drawn by :mod:`ramodel.mappings` on the
   host in float64 (same seed, same matrix as :func:`ramodel.mappings.draw_stack`),
   then cast to torch's default dtype and held as a non-trainable buffer.
3. Exactness where it matters: ``skip="identity"`` returns ``h`` itself and
   ``skip="none"`` returns zeros, without a matmul; a signed permutation is an index
   gather, a block-diagonal matrix a batched product of its blocks, a banded Toeplitz
   matrix a sum of shifted copies (one per diagonal) and a block equicorrelation
   matrix a scaled copy plus block sums. Anything else is ``h @ M.T`` on the feature
   axis (for a conv feature map that is a 1x1 conv over channels, for a token sequence
   a product per token, never a dense ``(C H W)**2`` or ``(T dim)**2`` matrix).
4. Exportable: every same-shape residual block is in ``model.blocks`` and has
   ``.skip`` (an :class:`EntangledSkip`, ``.skip.M`` the matrix) and ``.branch`` (the
   residual function ``F``), and ``block(h) == block.skip(h) + block.branch(h)`` in
   eval mode, so ``J_l = dF_l/dh`` is ``block.branch``'s Jacobian. The recurrent cell
   follows the same protocol with a second argument, ``cell(h, x) = cell.skip(h) +
   cell.branch(h, x)``; it is called once per step, so its step Jacobians come from
   :meth:`ResidualRNN.step_jacobians` rather than :func:`ramodel.torch.export_jacobians`.

Seeds: ``seed=`` draws the skips only. Weights are initialised by PyTorch's global
generator, as for any ``nn.Module``, unless ``init_seed=`` is given (then the global
generator is left untouched).
"""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import ClassVar

import numpy as np

try:
    import torch
    from torch import nn
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError(f"ramodel.nets needs PyTorch ({exc}); install it with: pip install 'ramodel[torch]'") from exc

from . import mappings
from ._validation import check_choice, check_int

__all__ = [
    "EntangledSkip",
    "ResidualBlock",
    "ResidualMLP",
    "ConvResNet",
    "SelfAttention",
    "VisionTransformer",
    "RecurrentBranch",
    "RecurrentCell",
    "ResidualRNN",
    "ACTIVATIONS",
    "NORMS",
    "Architecture",
    "ARCHITECTURES",
    "architecture",
    "build",
]

ACTIVATIONS = ("relu", "gelu", "tanh", "silu", "linear")
NORMS = ("none", "layernorm", "batchnorm")
_ACTIVATION = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU, "linear": nn.Identity}


# ----------------------------------------------------------------------------- skips


def _as_host_matrix(skip, name: str = "skip") -> np.ndarray:
    """An explicit skip (tensor or array) as a host float64 array, validated finite."""
    if isinstance(skip, torch.Tensor):
        skip = skip.detach().cpu().numpy()
    try:
        M = np.asarray(skip)
    except Exception as exc:  # e.g. a CuPy array: refuses implicit host transfer
        raise TypeError(f"{name} must be a family name, a LinearMap, a tensor or an array, got {type(skip).__name__}") from exc
    if M.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {M.dtype}")
    M = M.astype(np.float64)
    if not np.all(np.isfinite(M)):
        raise ValueError(f"{name} must be finite, but it contains NaN or Inf")
    return M


class EntangledSkip(nn.Module):
    """The fixed skip ``h -> M h`` of an entangled residual block.

    ``M`` is never trained: it is a buffer (in ``state_dict``, moved by ``.to()``,
    not in ``parameters()``).

    Parameters
    ----------
    width : int
        Size n of the feature axis ``M`` acts on (features of an FC layer, channels of
        a conv feature map).
    skip : str, LinearMap, tensor or array, default "identity"
        A family name of :mod:`ramodel.mappings` (``"identity"``, ``"none"``,
        ``"orthogonal"``, ``"permutation"``, ...), a structured draw
        (``mappings.get(name).structured(...)``), or an explicit ``(width, width)``
        matrix.
    skip_params : mapping, optional
        The family's parameters (only with a family name).
    seed : int, SeedSequence, Generator or None
        Seed of the draw; ``EntangledSkip(n, name, seed=s).M`` equals
        ``mappings.get(name)(n, seed=s)`` cast to torch's default dtype.
    dim : int, default -1
        Feature axis of the input: ``-1`` for ``(..., width)`` FC features, ``1`` for
        ``(B, C, H, W)`` feature maps.

    Attributes
    ----------
    M : Tensor, shape (width, width)
        The matrix, buffer, torch's default dtype at construction.
    structure : str
        How ``forward`` applies it: ``"identity"`` (returns ``h``), ``"zero"``,
        ``"permutation"`` (gather and signs; buffers ``perm``, ``signs``),
        ``"block_diagonal"`` (buffers ``blocks (k, b, b)``, ``tail (r, r)``),
        ``"diagonal"`` (buffer ``diagonal``), ``"banded"`` (symmetric banded Toeplitz,
        one shifted copy per diagonal; buffer ``band``, the coefficient of each lag),
        ``"block_equicorrelation"`` (``a h + b * block sums``; buffer ``coefficients``
        ``(a, b)``, attribute ``block``) or ``"dense"``. Read off the structured draw
        (a ``scaled(...)`` family folds its factor into the buffers); the identity and
        zero are detected from the matrix, so an explicit identity matrix is also
        applied exactly.

    Examples
    --------
    >>> import torch
    >>> skip = EntangledSkip(4, "permutation", seed=0)
    >>> skip.structure
    'permutation'
    >>> h = torch.randn(3, 4)
    >>> bool(torch.equal(skip(h), h @ skip.M.T))
    True
    >>> EntangledSkip(4)(h) is h
    True
    """

    def __init__(self, width: int, skip="identity", *, skip_params: Mapping | None = None, seed=None, dim: int = -1):
        super().__init__()
        self.width = check_int("width", width, minimum=1)
        self.dim = check_int("dim", dim)
        self.family = skip if isinstance(skip, str) else "explicit"
        if isinstance(skip, str):
            skip = mappings.get(skip).structured(self.width, seed=seed, **dict(skip_params or {}))
        elif skip_params:
            raise ValueError("skip_params is only valid with a family name for skip, got an explicit matrix")
        lmap = skip if isinstance(skip, mappings.LinearMap) else None
        M = lmap.dense() if lmap is not None else _as_host_matrix(skip)
        if M.shape != (self.width, self.width):
            raise ValueError(f"skip must have shape (width, width) = ({self.width}, {self.width}), got {M.shape}")
        dtype = torch.get_default_dtype()
        self.register_buffer("M", torch.as_tensor(M, dtype=dtype))
        self.structure = "dense"
        if np.array_equal(M, np.eye(self.width)):
            self.structure = "identity"
        elif not M.any():
            self.structure = "zero"
        elif lmap is not None:
            self._register_structure(lmap, dtype)

    def _register_structure(self, lmap, dtype) -> None:
        """Buffers of the torch form the map provides (``LinearMap.torch_form``); none: dense."""
        form = lmap.torch_form()
        if form is None:
            return
        self.structure = form.structure
        self._torch_apply = form.apply
        for name, value in form.buffers.items():
            value = np.asarray(value)
            kind = torch.long if value.dtype.kind in "iu" else dtype
            self.register_buffer(name, torch.as_tensor(value, dtype=kind))
        for name, value in form.settings.items():
            setattr(self, name, value)

    def extra_repr(self) -> str:
        return f"width={self.width}, family={self.family!r}, structure={self.structure!r}, dim={self.dim}"

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """``M`` applied along ``dim``: ``out[..., i, ...] = sum_j M[i, j] h[..., j, ...]``; shape of ``h``."""
        if h.ndim == 0 or not -h.ndim <= self.dim < h.ndim or h.shape[self.dim] != self.width:
            raise ValueError(
                f"EntangledSkip(width={self.width}, dim={self.dim}) got an input of shape {tuple(h.shape)}; "
                f"its axis {self.dim} must have size {self.width}"
            )
        if self.structure == "identity":
            return h
        if self.structure == "zero":
            return torch.zeros_like(h)
        x = h.movedim(self.dim, -1)
        out = x @ self.M.T if self.structure == "dense" else self._torch_apply(x, self)
        return out.movedim(-1, self.dim)


def _block_seeds(seed, count: int, shared: bool):
    """Seed of each block's draw, by the rule of :func:`ramodel.mappings.draw_stack`.

    Not shared: ``SeedSequence(seed).spawn(count)`` (a Generator: ``seed.spawn``);
    shared: ``seed`` itself for every block. ``None`` is fixed to one fresh
    SeedSequence first, so shared blocks of different widths still draw from one seed.
    """
    if seed is None:
        seed = np.random.SeedSequence()
    if shared:
        if isinstance(seed, np.random.Generator):  # each draw would advance it
            seed = np.random.SeedSequence(seed.integers(2**63, size=4))
        return [seed] * count
    if not isinstance(seed, (np.random.Generator, np.random.SeedSequence)):
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise TypeError(f"seed must be None, an int, a SeedSequence or a Generator, got {type(seed).__name__}")
        if seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}")
        seed = int(seed)
    return mappings._spawn(seed, count)  # the same rule as draw_stack, in one place


def _make_skips(widths: Sequence[int], skip, *, skip_params, shared: bool, seed, dim: int) -> list[EntangledSkip]:
    """One :class:`EntangledSkip` per block of the given widths."""
    count = len(widths)
    if isinstance(skip, str):
        mappings.get(skip)  # an unknown name fails here, with the registry's message
        if not isinstance(shared, bool):
            raise TypeError(f"skip_shared must be a bool, got {shared!r}")
        seeds = _block_seeds(seed, count, shared)
        return [EntangledSkip(w, skip, skip_params=skip_params, seed=s, dim=dim) for w, s in zip(widths, seeds)]
    if skip_params:
        raise ValueError("skip_params is only valid with a family name for skip, got an explicit matrix")
    if isinstance(skip, mappings.LinearMap):
        return [EntangledSkip(w, skip, dim=dim) for w in widths]
    M = _as_host_matrix(skip)
    if M.ndim == 2:
        stack = [M] * count
    elif M.ndim == 3 and M.shape[0] == count:
        stack = list(M)
    else:
        raise ValueError(
            f"skip must be a family name, one (width, width) matrix or a stack of {count} matrices "
            f"(one per block), got an array of shape {M.shape}"
        )
    return [EntangledSkip(w, m, dim=dim) for w, m in zip(widths, stack)]


# ---------------------------------------------------------------------------- blocks


class ResidualBlock(nn.Module):
    """``h -> skip(h) + branch(h)``, with optional stochastic depth on the branch.

    Parameters
    ----------
    skip : EntangledSkip
    branch : nn.Module
        The residual function ``F``; same input and output shape.
    drop_path : float, default 0.0
        Probability in [0, 1) of dropping the branch for a sample, in training mode
        only; kept branches are scaled by ``1 / (1 - drop_path)`` so the expectation is
        unchanged. Eval mode is exactly ``skip(h) + branch(h)``.
    """

    def __init__(self, skip: EntangledSkip, branch: nn.Module, *, drop_path: float = 0.0):
        super().__init__()
        if not 0.0 <= drop_path < 1.0:
            raise ValueError(f"drop_path must be in [0, 1), got {drop_path!r}")
        self.skip = skip
        self.branch = branch
        self.drop_path = float(drop_path)

    def extra_repr(self) -> str:
        return f"drop_path={self.drop_path:g}"

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        F = self.branch(h)
        if self.training and self.drop_path > 0.0:
            keep = 1.0 - self.drop_path
            mask = torch.rand((h.shape[0],) + (1,) * (h.ndim - 1), dtype=F.dtype, device=F.device) < keep
            F = F * mask / keep
        return self.skip(h) + F


def _drop_rates(drop_path: float, count: int) -> list[float]:
    """Linearly increasing drop probability: block ``l`` (1-based) gets ``drop_path * l / count``."""
    if isinstance(drop_path, bool) or not isinstance(drop_path, numbers.Real) or not 0.0 <= drop_path < 1.0:
        raise ValueError(f"drop_path must be a number in [0, 1), got {drop_path!r}")
    return [float(drop_path) * (i + 1) / count for i in range(count)]


@contextlib.contextmanager
def _init_rng(init_seed):
    """Layers built inside use ``init_seed`` (None: torch's global generator, which is then advanced)."""
    if init_seed is None:
        yield
        return
    init_seed = check_int("init_seed", init_seed, minimum=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        yield


# ------------------------------------------------------------------------------ MLP


class ResidualMLP(nn.Module):
    """Fully connected ResNet: ``h_0 = W_in x``, ``h_l = M_l h_{l-1} + F_l(h_{l-1})``, logits ``= W h_L + b``.

    Each branch is ``F(h) = W_2 phi(N(W_1 h))``, with ``N`` the optional
    normalisation, placed after the first linear layer and before the activation.
    With ``bias=False``, ``norm="none"`` and a positively homogeneous ``phi`` (relu,
    linear), ``F(h) = J(h) h`` exactly. There is no activation on the residual stream
    and none before the classifier, so the classifier acts on ``h_L`` itself.

    Parameters
    ----------
    d_in : int
        Input features.
    classes : int
        Outputs C.
    width : int, default 64
        Width d of the residual stream (the size of every ``M_l``).
    depth : int, default 4
        Number of residual blocks L.
    hidden : int, optional
        Inner width of each branch; default ``width``.
    activation : {"relu", "gelu", "tanh", "silu", "linear"}, default "relu"
    norm : {"none", "layernorm", "batchnorm"}, default "none"
    bias : bool, default True
        Biases of every linear layer of the branches and the input layer (and the
        LayerNorm shift). BatchNorm keeps its shift.
    skip, skip_params : default "identity", None
        Family name and parameters, one ``(width, width)`` matrix for every block, or
        a ``(depth, width, width)`` stack (see :class:`EntangledSkip`).
    skip_shared : bool, default False
        One draw for all blocks instead of one per block.
    seed : int, SeedSequence, Generator or None
        Seed of the skip draws: the blocks' ``M`` equal
        ``mappings.draw_stack(skip, width, depth=depth, shared=skip_shared, seed=seed)``.
    drop_path : float, default 0.0
        Stochastic depth: block l of L drops its branch with probability
        ``drop_path * l / L``, in training mode only.
    init_seed : int, optional
        Seed of the weight initialisation; None uses torch's global generator.
    init : {"auto", "torch", "he"}, default "auto"
        ``"torch"`` keeps PyTorch's default (uniform, std ``1/sqrt(3 fan_in)``): each branch
        then shrinks the signal, which suits residual nets but starves a skip-free one (a
        skip-free MLP of depth 3 stays at chance accuracy on digits). ``"he"`` draws both
        branch layers He-normal (the activation's gain on the first), which preserves the
        variance through a skip-free stack, with zero biases. ``"auto"``: ``"he"`` when every
        skip is zero, else ``"torch"``. Measured on digits (width 32, 3 epochs, lr 0.05):
        no skip at depth 3 reaches 0.91 test accuracy with ``"he"`` and 0.10 with
        ``"torch"``; identity skips at depth 16 reach 0.97 with ``"torch"`` and diverge with
        ``"he"``.

    Attributes
    ----------
    embed : nn.Linear
        ``x (B, d_in) -> h_0 (B, width)``.
    blocks : nn.ModuleList of ResidualBlock
    classifier : nn.Linear
        ``h_L (B, width) -> logits (B, classes)``.
    config : dict
        The constructor's arguments (skip as its family name or ``"explicit"``).

    Examples
    --------
    >>> import torch
    >>> net = ResidualMLP(10, 3, width=8, depth=2, skip="orthogonal", seed=0, init_seed=0)
    >>> net(torch.zeros(5, 10)).shape
    torch.Size([5, 3])
    >>> h = net.embed(torch.randn(5, 10))
    >>> b = net.blocks[0]
    >>> bool(torch.allclose(b(h), h @ b.skip.M.T + b.branch(h)))
    True
    """

    expects_images = False

    def __init__(
        self,
        d_in: int,
        classes: int,
        *,
        width: int = 64,
        depth: int = 4,
        hidden: int | None = None,
        activation: str = "relu",
        norm: str = "none",
        bias: bool = True,
        skip="identity",
        skip_params: Mapping | None = None,
        skip_shared: bool = False,
        seed=None,
        drop_path: float = 0.0,
        init_seed: int | None = None,
        init: str = "auto",
    ):
        super().__init__()
        check_choice("init", init, ("auto", "torch", "he"))
        d_in = check_int("d_in", d_in, minimum=1)
        classes = check_int("classes", classes, minimum=1)
        width = check_int("width", width, minimum=1)
        depth = check_int("depth", depth, minimum=1)
        hidden = width if hidden is None else check_int("hidden", hidden, minimum=1)
        check_choice("activation", activation, ACTIVATIONS)
        check_choice("norm", norm, NORMS)
        if not isinstance(bias, bool):
            raise TypeError(f"bias must be a bool, got {bias!r}")
        rates = _drop_rates(drop_path, depth)
        skips = _make_skips([width] * depth, skip, skip_params=skip_params, shared=skip_shared, seed=seed, dim=-1)
        self.d_in, self.width, self.depth, self.classes = d_in, width, depth, classes
        self.config = {
            "architecture": "ResidualMLP", "d_in": d_in, "classes": classes, "width": width, "depth": depth,
            "hidden": hidden, "activation": activation, "norm": norm, "bias": bias,
            "skip": skip if isinstance(skip, str) else "explicit",
            "skip_params": dict(skip_params or {}), "skip_shared": bool(skip_shared), "drop_path": float(drop_path),
            "init": init,
        }  # fmt: skip
        with _init_rng(init_seed):
            self.embed = nn.Linear(d_in, width, bias=bias)
            self.blocks = nn.ModuleList(
                ResidualBlock(s, self._branch(width, hidden, activation, norm, bias), drop_path=r)
                for s, r in zip(skips, rates)
            )
            self.classifier = nn.Linear(width, classes)
            if init == "auto":
                init = "he" if all(bool(torch.all(b.skip.M == 0)) for b in self.blocks) else "torch"
            if init == "he":
                self._he_init(activation)

    def _he_init(self, activation: str) -> None:
        """He-normal branch layers (activation gain on the first), zero biases."""
        gain = nn.init.calculate_gain({"gelu": "relu", "silu": "relu"}.get(activation, activation))
        for block in self.blocks:
            first, last = block.branch[0], block.branch[-1]
            nn.init.normal_(first.weight, std=gain / first.in_features**0.5)
            nn.init.normal_(last.weight, std=1.0 / last.in_features**0.5)
            for layer in (first, last):
                if layer.bias is not None:
                    nn.init.zeros_(layer.bias)

    @staticmethod
    def _branch(width, hidden, activation, norm, bias) -> nn.Sequential:
        normalise = {
            "none": nn.Identity,
            "layernorm": lambda n: nn.LayerNorm(n, bias=bias),
            "batchnorm": nn.BatchNorm1d,
        }[norm](hidden)
        return nn.Sequential(
            nn.Linear(width, hidden, bias=bias), normalise, _ACTIVATION[activation](), nn.Linear(hidden, width, bias=bias)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits, shape ``(B, classes)``, of inputs ``x`` of shape ``(B, d_in)``."""
        if x.ndim != 2 or x.shape[1] != self.d_in:
            hint = " (flatten images first: x.reshape(len(x), -1))" if x.ndim > 2 else ""
            raise ValueError(f"ResidualMLP expects flat inputs of shape (batch, {self.d_in}), got {tuple(x.shape)}{hint}")
        h = self.embed(x)
        for block in self.blocks:
            h = block(h)
        return self.classifier(h)


# ----------------------------------------------------------------------------- conv


def _conv_bn(c_in: int, c_out: int, *, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out)]


class ConvResNet(nn.Module):
    """Small convolutional ResNet for 8x8 (digits) and 28x28 (MNIST) images.

    ``stem -> stage 1 -> (down 2 -> stage 2) -> ... -> global average pool -> classifier``:

    - stem: 3x3 conv, BatchNorm, ReLU (``in_channels -> channels[0]``), full resolution;
    - stage s: ``blocks_per_stage`` same-shape residual blocks with ``channels[s]``
      channels, ``h <- M h + F(h)``, where ``F`` is conv3x3-BN-ReLU-conv3x3-BN and
      ``M`` (an :class:`EntangledSkip`) mixes channels at every pixel;
    - down s (between stages): 3x3 conv with stride 2, BN, ReLU, ``channels[s-1] ->
      channels[s]``. Not a residual block in the RA sense (its input and output
      shapes differ), so it is not in ``model.blocks``.

    Activation placement: ResNet v1's ReLU after the addition is dropped (the blocks
    are not post-activation), and there is no BN/ReLU before the pooling, so the
    residual stream is exactly ``h_{l+1} = M_l h_l + F_l(h_l)`` and the logits are
    linear in the last block's output: ``logits = classifier(mean_{H,W} h_L)``.

    Parameters
    ----------
    in_channels : int
        Image channels (1 for digits and MNIST).
    classes : int
    channels : sequence of int, default (16, 32)
        Channels of each stage; the number of stages is ``len(channels)``.
    blocks_per_stage : int or sequence of int, default 2
        Residual blocks per stage (a sequence gives one count per stage, each >= 1).
    skip, skip_params, skip_shared, seed, drop_path, init_seed
        As for :class:`ResidualMLP`, over the blocks in order (block l of L, over all
        stages). ``M`` of block l is drawn with ``width = its stage's channels`` and
        the l-th seed of the ``draw_stack`` rule; with ``skip_shared`` all blocks of
        equal width share one draw. An explicit matrix must match every stage's
        channels; a stack gives one matrix per block.

    Attributes
    ----------
    stem : nn.Sequential
    downsample : nn.ModuleList
        ``downsample[s - 1]`` leads into stage s.
    blocks : nn.ModuleList of ResidualBlock
        The same-shape residual blocks only, in forward order.
    block_stage : tuple of int
        Stage of each block.
    classifier : nn.Linear
        ``channels[-1] -> classes``, applied to the spatial mean of ``h_L``.
    config : dict

    Examples
    --------
    >>> import torch
    >>> net = ConvResNet(1, 10, channels=(4, 8), blocks_per_stage=1, skip="orthogonal", seed=0, init_seed=0)
    >>> net(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    >>> len(net.blocks), net.block_stage
    (2, (0, 1))
    """

    expects_images = True

    def __init__(
        self,
        in_channels: int,
        classes: int,
        *,
        channels: Sequence[int] = (16, 32),
        blocks_per_stage: int | Sequence[int] = 2,
        skip="identity",
        skip_params: Mapping | None = None,
        skip_shared: bool = False,
        seed=None,
        drop_path: float = 0.0,
        init_seed: int | None = None,
    ):
        super().__init__()
        in_channels = check_int("in_channels", in_channels, minimum=1)
        classes = check_int("classes", classes, minimum=1)
        if isinstance(channels, (str, bytes)) or not isinstance(channels, Sequence) or not channels:
            raise TypeError(f"channels must be a non-empty sequence of ints, got {channels!r}")
        channels = tuple(check_int("channels", c, minimum=1) for c in channels)
        if isinstance(blocks_per_stage, Sequence):
            counts = tuple(check_int("blocks_per_stage", n, minimum=1) for n in blocks_per_stage)
            if len(counts) != len(channels):
                raise ValueError(f"blocks_per_stage must have one count per stage ({len(channels)}), got {len(counts)}")
        else:
            counts = (check_int("blocks_per_stage", blocks_per_stage, minimum=1),) * len(channels)
        self.block_stage = tuple(s for s, n in enumerate(counts) for _ in range(n))
        widths = [channels[s] for s in self.block_stage]
        rates = _drop_rates(drop_path, len(widths))
        skips = _make_skips(widths, skip, skip_params=skip_params, shared=skip_shared, seed=seed, dim=1)
        self.in_channels, self.classes, self.channels = in_channels, classes, channels
        self.config = {
            "architecture": "ConvResNet", "in_channels": in_channels, "classes": classes,
            "channels": list(channels), "blocks_per_stage": list(counts),
            "skip": skip if isinstance(skip, str) else "explicit",
            "skip_params": dict(skip_params or {}), "skip_shared": bool(skip_shared), "drop_path": float(drop_path),
        }  # fmt: skip
        with _init_rng(init_seed):
            self.stem = nn.Sequential(*_conv_bn(in_channels, channels[0]), nn.ReLU())
            self.downsample = nn.ModuleList(
                nn.Sequential(*_conv_bn(a, b, stride=2), nn.ReLU()) for a, b in zip(channels[:-1], channels[1:])
            )
            self.blocks = nn.ModuleList(
                ResidualBlock(s, nn.Sequential(*_conv_bn(w, w), nn.ReLU(), *_conv_bn(w, w)), drop_path=r)
                for s, w, r in zip(skips, widths, rates)
            )
            self.classifier = nn.Linear(channels[-1], classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``h_0``: the stem's output, input of the first block, shape ``(B, channels[0], H, W)``."""
        self._check_input(x)
        return self.stem(x)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            hint = (
                " (reshape flat data with x.reshape(-1, 1, *dataset.image_shape); ramodel.training.train does this)"
                if x.ndim == 2 else ""
            )  # fmt: skip
            raise ValueError(
                f"ConvResNet expects images of shape (batch, {self.in_channels}, height, width), "
                f"got {tuple(x.shape)}{hint}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits, shape ``(B, classes)``, of images ``x`` of shape ``(B, in_channels, H, W)``."""
        h = self.embed(x)
        stage = 0
        for block, s in zip(self.blocks, self.block_stage):
            if s != stage:
                h, stage = self.downsample[s - 1](h), s
            h = block(h)
        return self.classifier(h.mean(dim=(-2, -1)))



# ------------------------------------------------------------------------------ ViT


class SelfAttention(nn.Module):
    """Multi-head self-attention, ``(B, T, dim) -> (B, T, dim)``.

    ``Q, K, V = split(x W_qkv^T + b_qkv)``, each cut into ``heads`` heads of
    ``dim / heads`` features; per head ``softmax(Q K^T / sqrt(dim / heads)) V``; the
    heads are concatenated and projected by ``proj``. Written out rather than
    ``nn.MultiheadAttention`` so that ``torch.func`` transforms (``vmap`` over single
    samples, ``jvp``) apply; it equals ``nn.MultiheadAttention(dim, heads,
    batch_first=True)`` with ``in_proj = qkv`` and ``out_proj = proj``.

    Parameters
    ----------
    dim : int
        Embedding size, divisible by ``heads``.
    heads : int
        Number of heads, >= 1.

    Examples
    --------
    >>> import torch
    >>> SelfAttention(8, 2)(torch.zeros(3, 5, 8)).shape
    torch.Size([3, 5, 8])
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        dim = check_int("dim", dim, minimum=1)
        heads = check_int("heads", heads, minimum=1)
        if dim % heads:
            raise ValueError(f"heads must divide dim, got dim={dim} and heads={heads}")
        self.dim, self.heads = dim, heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads={self.heads}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attention output, shape of ``x`` ``(B, T, dim)``."""
        q, k, v = self.qkv(x).unflatten(-1, (3, self.heads, self.dim // self.heads)).movedim(-3, 0).transpose(-2, -3)
        weights = torch.softmax(q @ k.transpose(-2, -1) * (self.dim // self.heads) ** -0.5, dim=-1)
        return self.proj((weights @ v).transpose(-2, -3).flatten(-2))


def _pair(name: str, value) -> tuple[int, int]:
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair (height, width), got {value!r}")
        return tuple(check_int(name, v, minimum=1) for v in value)
    v = check_int(name, value, minimum=1)
    return v, v


class VisionTransformer(nn.Module):
    """Small pre-LayerNorm Vision Transformer with entangled skips on the embedding axis.

    ``tokens -> [x <- M x + MSA(LN x); x <- M x + MLP(LN x)] x depth -> LN -> pool -> classifier``:

    - patch embedding: a ``patch x patch`` convolution with stride ``patch`` (one
      token of ``dim`` features per patch), then a class token (``pool="cls"``) in
      front, plus a learned position embedding: ``h_0``, shape ``(B, T, dim)`` with
      ``T = patches (+ 1)``;
    - ``2 depth`` residual blocks, alternately attention and MLP; each is a
      :class:`ResidualBlock` whose skip ``M`` (``dim x dim``) acts on every token's
      embedding and whose branch is ``LN -> SelfAttention`` or
      ``LN -> Linear -> GELU -> Linear``;
    - a final LayerNorm, then the class token (``"cls"``) or the mean over tokens
      (``"mean"``), then a linear classifier.

    Parameters
    ----------
    image_size : int or (int, int)
        Height and width of the input images.
    classes : int
    in_channels : int, default 1
    patch : int, default 2
        Side of a square patch; must divide both image sides (8x8 digits give 16
        tokens of 2x2 pixels).
    dim : int, default 32
        Embedding size, the width of every ``M``.
    depth : int, default 2
        Transformer layers; each is two residual blocks, so ``len(blocks) == 2 depth``.
    heads : int, default 4
        Attention heads, >= 1, dividing ``dim``.
    mlp_hidden : int, optional
        Hidden width of the MLP branch; default ``2 dim``.
    pool : {"cls", "mean"}, default "cls"
    skip, skip_params, skip_shared, seed, drop_path, init_seed
        As for :class:`ResidualMLP`, over the ``2 depth`` blocks in order: block ``l``
        has the ``l``-th draw of ``mappings.draw_stack(skip, dim, depth=2 depth, ...)``.

    Attributes
    ----------
    patch_embed : nn.Conv2d
    cls_token : nn.Parameter, shape (1, 1, dim), or None
    pos_embed : nn.Parameter, shape (1, T, dim)
    blocks : nn.ModuleList of ResidualBlock
    block_kind : tuple of str
        ``"attention"`` or ``"mlp"`` for each block.
    norm : nn.LayerNorm
    classifier : nn.Linear
    config : dict

    Examples
    --------
    >>> import torch
    >>> vit = VisionTransformer(8, 10, patch=2, dim=16, depth=1, heads=2, skip="permutation", seed=0, init_seed=0)
    >>> vit(torch.zeros(3, 1, 8, 8)).shape
    torch.Size([3, 10])
    >>> vit.embed(torch.zeros(3, 1, 8, 8)).shape, vit.block_kind
    (torch.Size([3, 17, 16]), ('attention', 'mlp'))
    """

    expects_images = True

    def __init__(
        self,
        image_size: int | Sequence[int],
        classes: int,
        *,
        in_channels: int = 1,
        patch: int = 2,
        dim: int = 32,
        depth: int = 2,
        heads: int = 4,
        mlp_hidden: int | None = None,
        pool: str = "cls",
        skip="identity",
        skip_params: Mapping | None = None,
        skip_shared: bool = False,
        seed=None,
        drop_path: float = 0.0,
        init_seed: int | None = None,
    ):
        super().__init__()
        size = _pair("image_size", image_size)
        classes = check_int("classes", classes, minimum=1)
        in_channels = check_int("in_channels", in_channels, minimum=1)
        patch = check_int("patch", patch, minimum=1)
        if size[0] % patch or size[1] % patch:
            raise ValueError(f"patch={patch} must divide the image size {size[0]}x{size[1]} (height and width)")
        dim = check_int("dim", dim, minimum=1)
        depth = check_int("depth", depth, minimum=1)
        heads = check_int("heads", heads, minimum=1)
        if dim % heads:
            raise ValueError(f"heads must divide dim, got dim={dim} and heads={heads}")
        mlp_hidden = 2 * dim if mlp_hidden is None else check_int("mlp_hidden", mlp_hidden, minimum=1)
        check_choice("pool", pool, ("cls", "mean"))
        count = 2 * depth
        rates = _drop_rates(drop_path, count)
        skips = _make_skips([dim] * count, skip, skip_params=skip_params, shared=skip_shared, seed=seed, dim=-1)
        self.image_size, self.in_channels, self.classes, self.patch = size, in_channels, classes, patch
        self.dim, self.depth, self.heads, self.pool = dim, depth, heads, pool
        self.block_kind = ("attention", "mlp") * depth
        tokens = (size[0] // patch) * (size[1] // patch) + (pool == "cls")
        self.config = {
            "architecture": "VisionTransformer", "image_size": list(size), "classes": classes,
            "in_channels": in_channels, "patch": patch, "dim": dim, "depth": depth, "heads": heads,
            "mlp_hidden": mlp_hidden, "pool": pool, "skip": skip if isinstance(skip, str) else "explicit",
            "skip_params": dict(skip_params or {}), "skip_shared": bool(skip_shared), "drop_path": float(drop_path),
        }  # fmt: skip
        with _init_rng(init_seed):
            self.patch_embed = nn.Conv2d(in_channels, dim, patch, stride=patch)
            self.cls_token = nn.Parameter(0.02 * torch.randn(1, 1, dim)) if pool == "cls" else None
            self.pos_embed = nn.Parameter(0.02 * torch.randn(1, tokens, dim))
            branches = []
            for kind in self.block_kind:
                if kind == "attention":
                    branches.append(nn.Sequential(nn.LayerNorm(dim), SelfAttention(dim, heads)))
                else:
                    branches.append(
                        nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, mlp_hidden), nn.GELU(), nn.Linear(mlp_hidden, dim))
                    )
            self.blocks = nn.ModuleList(ResidualBlock(s, f, drop_path=r) for s, f, r in zip(skips, branches, rates))
            self.norm = nn.LayerNorm(dim)
            self.classifier = nn.Linear(dim, classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``h_0``: tokens with position embedding, shape ``(B, T, dim)``, input of the first block."""
        if x.ndim != 4 or tuple(x.shape[1:]) != (self.in_channels, *self.image_size):
            hint = (
                " (reshape flat data with x.reshape(-1, 1, *dataset.image_shape); ramodel.training.train does this)"
                if x.ndim == 2 else ""
            )  # fmt: skip
            raise ValueError(
                f"VisionTransformer expects images of shape (batch, {self.in_channels}, {self.image_size[0]}, "
                f"{self.image_size[1]}), got {tuple(x.shape)}{hint}"
            )
        h = self.patch_embed(x).flatten(2).transpose(1, 2)
        if self.cls_token is not None:
            h = torch.cat([self.cls_token.expand(h.shape[0], -1, -1), h], dim=1)
        return h + self.pos_embed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits, shape ``(B, classes)``, of images ``x`` of shape ``(B, in_channels, H, W)``."""
        h = self.embed(x)
        for block in self.blocks:
            h = block(h)
        h = self.norm(h)
        return self.classifier(h[:, 0] if self.pool == "cls" else h.mean(dim=1))


# ------------------------------------------------------------------------------ RNN


class RecurrentBranch(nn.Module):
    """The residual function of :class:`ResidualRNN`: ``f(h, x) = W_out phi(W_h h + W_x x + b) + b_out``.

    One hidden layer of ``inner`` units fed by the state and the current input, then
    a linear read-out back to the state's width.

    Attributes
    ----------
    state_in : nn.Linear
        ``W_h``, ``b``: ``hidden -> inner``.
    input_in : nn.Linear
        ``W_x``: ``features -> inner``, no bias (``b`` is in ``state_in``).
    activation : nn.Module
    out : nn.Linear
        ``W_out``, ``b_out``: ``inner -> hidden``.
    """

    def __init__(self, hidden: int, features: int, inner: int, activation: str):
        super().__init__()
        self.state_in = nn.Linear(hidden, inner)
        self.input_in = nn.Linear(features, inner, bias=False)
        self.activation = _ACTIVATION[activation]()
        self.out = nn.Linear(inner, hidden)

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``f(h, x)``: ``h (B, hidden)``, ``x (B, features)`` -> ``(B, hidden)``."""
        return self.out(self.activation(self.state_in(h) + self.input_in(x)))


class RecurrentCell(nn.Module):
    """One step ``h_t = M h_{t-1} + f(h_{t-1}, x_t)``: ``.skip`` (an :class:`EntangledSkip`) plus ``.branch``."""

    def __init__(self, skip: EntangledSkip, branch: RecurrentBranch):
        super().__init__()
        self.skip = skip
        self.branch = branch

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``h_t``, shape ``(B, hidden)``, from ``h (B, hidden)`` and ``x (B, features)``."""
        return self.skip(h) + self.branch(h, x)


class ResidualRNN(nn.Module):
    """Residual recurrent network: ``h_0 = 0``, ``h_t = M h_{t-1} + f(h_{t-1}, x_t)``, logits ``= W h_T + c``.

    ``f`` is one hidden layer (:class:`RecurrentBranch`):
    ``f(h, x) = W_out phi(W_h h + W_x x + b) + b_out`` with ``inner`` units. The cell is
    shared over time, so one matrix ``M`` (``hidden x hidden``) acts at every step;
    unrolled, step ``t`` is residual block ``t`` with input ``h_{t-1}``. ``M = I`` makes
    the state an accumulator of the steps' contributions, ``M = 0`` a plain two-layer
    transition ``h_t = f(h_{t-1}, x_t)``.

    Parameters
    ----------
    features : int
        Input features F per step.
    classes : int
    steps : int
        Sequence length T. Flat inputs ``(B, T F)`` (a
        :class:`ramodel.sequences.SequenceDataset` row, as ``ramodel.training.train``
        passes it) are read as ``(B, T, F)`` in C order.
    hidden : int, default 64
        State width, the size of ``M``.
    inner : int, optional
        Hidden units of ``f``; default ``hidden``.
    activation : {"tanh", "relu", "gelu", "silu", "linear"}, default "tanh"
    skip, skip_params : default "identity", None
        Family name and parameters, or one explicit ``(hidden, hidden)`` matrix.
    seed : int, SeedSequence, Generator or None
        Seed of the one draw: ``cell.skip.M`` equals ``mappings.get(skip)(hidden, seed=seed)``.
    init_seed : int, optional
        Seed of the weight initialisation (PyTorch's default ``nn.Linear`` init).

    Attributes
    ----------
    cell : RecurrentCell
    blocks : nn.ModuleList
        ``[cell]``: the one residual module, called once per step (``T`` calls).
    classifier : nn.Linear
        ``h_T (B, hidden) -> logits (B, classes)``.
    config : dict

    Examples
    --------
    >>> import torch
    >>> rnn = ResidualRNN(3, 2, steps=5, hidden=8, skip="orthogonal", seed=0, init_seed=0)
    >>> x = torch.randn(4, 5, 3)
    >>> rnn(x).shape, rnn.trajectory(x).shape, rnn.step_jacobians(x).shape
    (torch.Size([4, 2]), torch.Size([6, 4, 8]), torch.Size([5, 4, 8, 8]))
    >>> bool(torch.equal(rnn(x.reshape(4, 15)), rnn(x)))
    True
    """

    expects_images = False

    def __init__(
        self,
        features: int,
        classes: int,
        *,
        steps: int,
        hidden: int = 64,
        inner: int | None = None,
        activation: str = "tanh",
        skip="identity",
        skip_params: Mapping | None = None,
        seed=None,
        init_seed: int | None = None,
    ):
        super().__init__()
        features = check_int("features", features, minimum=1)
        classes = check_int("classes", classes, minimum=1)
        steps = check_int("steps", steps, minimum=1)
        hidden = check_int("hidden", hidden, minimum=1)
        inner = hidden if inner is None else check_int("inner", inner, minimum=1)
        check_choice("activation", activation, ACTIVATIONS)
        if isinstance(skip, str):  # one draw: the family's own draw with this seed, not a spawned child
            skip_module = EntangledSkip(hidden, skip, skip_params=skip_params, seed=seed)
        else:
            (skip_module,) = _make_skips([hidden], skip, skip_params=skip_params, shared=False, seed=seed, dim=-1)
        self.features, self.classes, self.steps, self.hidden = features, classes, steps, hidden
        self.config = {
            "architecture": "ResidualRNN", "features": features, "classes": classes, "steps": steps,
            "hidden": hidden, "inner": inner, "activation": activation,
            "skip": skip if isinstance(skip, str) else "explicit", "skip_params": dict(skip_params or {}),
        }  # fmt: skip
        with _init_rng(init_seed):
            self.cell = RecurrentCell(skip_module, RecurrentBranch(hidden, features, inner, activation))
            self.classifier = nn.Linear(hidden, classes)
        self.blocks = nn.ModuleList([self.cell])

    def sequences(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as ``(B, T, F)``: flat ``(B, T F)`` rows reshaped, ``(B, T, F)`` checked."""
        T, F = self.steps, self.features
        if x.ndim == 2 and x.shape[1] == T * F:
            return x.reshape(x.shape[0], T, F)
        if x.ndim == 3 and tuple(x.shape[1:]) == (T, F):
            return x
        raise ValueError(
            f"ResidualRNN expects sequences of shape (batch, steps, features) = (batch, {T}, {F}) or flat "
            f"(batch, {T * F}), got a rank-{x.ndim} tensor of shape {tuple(x.shape)}"
        )

    def trajectory(self, x: torch.Tensor) -> torch.Tensor:
        """States ``h_0 .. h_T``, shape ``(T + 1, B, hidden)`` (``h_0 = 0``)."""
        x = self.sequences(x)
        h = x.new_zeros(x.shape[0], self.hidden)
        states = [h]
        for t in range(self.steps):
            h = self.cell(h, x[:, t])
            states.append(h)
        return torch.stack(states)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits, shape ``(B, classes)``, of ``x`` of shape ``(B, T, F)`` or ``(B, T F)``."""
        x = self.sequences(x)
        h = x.new_zeros(x.shape[0], self.hidden)
        for t in range(self.steps):
            h = self.cell(h, x[:, t])
        return self.classifier(h)

    def step_jacobians(self, x: torch.Tensor) -> torch.Tensor:
        """``J_t = df/dh`` at ``(h_{t-1}, x_t)`` for every step and input, shape ``(T, B, hidden, hidden)``.

        The Jacobian of the residual function alone (the skip ``M`` excluded), the
        square matrix the RA metrics take. Computed with ``torch.func`` (``vmap`` of
        ``jacrev``), detached.
        """
        from torch.func import jacrev, vmap

        x = self.sequences(x)
        with torch.no_grad():
            H = self.trajectory(x)[:-1]  # (T, B, hidden): the input of each step
        X = x.detach().transpose(0, 1)  # (T, B, F)
        branch = self.cell.branch

        def f(h, xt):
            return branch(h.unsqueeze(0), xt.unsqueeze(0)).squeeze(0)

        J = vmap(vmap(jacrev(f)))(H, X)
        return J.detach()

    def jacobian_set(self, x, labels, *, classes: int | None = None, meta: Mapping | None = None,
                     dtype: str = "float64"):
        """The unrolled network as a :class:`~ramodel.jacobian_set.JacobianSet` (``spec/FORMAT.md``).

        Step ``t`` is residual block ``t`` (``L = T``): ``jacobians`` are
        :meth:`step_jacobians` ``(T, N, hidden, hidden)``, ``representations`` the states
        :meth:`trajectory` ``h_0 .. h_T`` ``(T + 1, N, hidden)``, ``skips`` the one ``M``
        ``(hidden, hidden)`` (left out when it is the identity) and ``classifier`` the
        final layer's weight ``(C, hidden)``. Computed on a copy of the network cast to
        ``dtype``, in eval mode; the network itself is not changed.

        Parameters
        ----------
        x : tensor or array, shape (N, T, F) or (N, T F)
        labels : integer array or tensor, shape (N,)
        classes : int, optional
            Default: the classifier's outputs.
        meta : mapping, optional
            Stored in the file's ``meta`` after the keys this method sets
            (``architecture``, ``depth``, ``width``, ``method``, ``dtype``, ``skip_family``).
        dtype : {"float64", "float32"}, default "float64"
        """
        import copy

        from .jacobian_set import JacobianSet

        check_choice("dtype", dtype, ("float64", "float32"))
        net = copy.deepcopy(self).to(dtype=getattr(torch, dtype)).eval()
        x = (x if isinstance(x, torch.Tensor) else torch.as_tensor(np.array(x))).to(
            dtype=getattr(torch, dtype), device=next(net.parameters()).device)
        J = net.step_jacobians(x)
        with torch.no_grad():
            H = net.trajectory(x)
        M = net.cell.skip.M
        info = {"architecture": "ResidualRNN", "depth": self.steps, "width": self.hidden, "method": "dense",
                "dtype": dtype, "skip_family": self.config["skip"], "blocks": "the cell at each of the T steps",
                **dict(meta or {})}
        return JacobianSet(
            labels=np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels),
            classes=self.classes if classes is None else classes,
            meta=info,
            jacobians=J.cpu().numpy(),
            representations=H.cpu().numpy(),
            skips=None if self.config["skip"] == "identity" or M is None else M.detach().cpu().numpy(),
            classifier=net.classifier.weight.detach().cpu().numpy(),
        )


# ------------------------------------------------------------------------ registry
def _in_channels(dataset) -> int:
    shape = tuple(dataset.image_shape)
    return 1 if len(shape) == 2 else int(shape[0])


def _build_mlp(dataset, *, depth=4, width=32, activation="relu", norm="none", **common) -> ResidualMLP:
    return ResidualMLP(dataset.n_features, dataset.classes, width=width, depth=depth, activation=activation,
                       norm=norm, **common)


def _build_conv(dataset, *, depth=4, channels=8, **common) -> ConvResNet:
    return ConvResNet(_in_channels(dataset), dataset.classes, channels=(channels,), blocks_per_stage=depth, **common)


def _build_vit(dataset, *, depth=2, width=32, patch=2, heads=4, **common) -> VisionTransformer:
    return VisionTransformer(tuple(dataset.image_shape)[-2:], dataset.classes, in_channels=_in_channels(dataset),
                             patch=patch, dim=width, depth=depth, heads=heads, **common)


def _build_rnn(dataset, *, width=32, activation="tanh", skip_shared=False, **common) -> ResidualRNN:
    # skip_shared is accepted and has nothing to do: the one cell, and its one M, is shared over time.
    return ResidualRNN(dataset.features, dataset.classes, steps=dataset.steps, hidden=width, activation=activation,
                       **common)


@dataclass(frozen=True)
class Architecture:
    """One entry of :data:`ARCHITECTURES`: a network of this module and how to build it for a data set.

    Attributes
    ----------
    name : str
        The key (``ramodel train --arch NAME``).
    cls : type
        The ``nn.Module`` class built.
    layout : {"flat", "image", "sequence"}
        The data the network reads: any data set's flat rows, images (a data set with
        ``image_shape``), or sequences (a :class:`ramodel.sequences.SequenceDataset`).
    options : mapping of str to default
        The architecture's own options :meth:`build` accepts, with their defaults, on
        top of the skip options every one takes (``skip``, ``skip_params``,
        ``skip_shared``, ``seed``, ``init_seed``).
    export : {"blocks", "steps"}
        How its Jacobians are exported: ``"blocks"`` by
        :func:`ramodel.torch.export_jacobians` over ``model.blocks``, ``"steps"`` by
        :meth:`ResidualRNN.jacobian_set` (one cell called once per time step).
    doc : str
        One line for listings.
    constructor : callable
        ``constructor(dataset, **options) -> nn.Module``, called by :meth:`build` after
        the checks.
    """

    name: str
    cls: type
    layout: str
    options: Mapping
    export: str
    doc: str
    constructor: object = field(repr=False)

    #: The options every architecture takes: the skips and the seeds.
    COMMON: ClassVar[tuple] = ("skip", "skip_params", "skip_shared", "seed", "init_seed")

    def __post_init__(self):
        check_choice("layout", self.layout, ("flat", "image", "sequence"))
        check_choice("export", self.export, ("blocks", "steps"))
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))

    def check_dataset(self, dataset, *, name: str = "the data set") -> None:
        """Raise ``ValueError`` when ``dataset`` does not have this architecture's layout."""
        if self.layout == "image" and getattr(dataset, "image_shape", None) is None:
            raise ValueError(f"architecture {self.name!r} ({self.cls.__name__}) needs an image data set; "
                             f"{name} has no image_shape")
        if self.layout == "sequence" and not (hasattr(dataset, "steps") and hasattr(dataset, "features")):
            raise ValueError(f"architecture {self.name!r} ({self.cls.__name__}) needs a sequence data set "
                             f"(ramodel.sequences.SequenceDataset, with steps and features); {name} is "
                             f"{type(dataset).__name__}")

    def build(self, dataset, **options) -> nn.Module:
        """The network for ``dataset`` (its features, classes and image or sequence shape).

        Parameters
        ----------
        dataset : ramodel.datasets.Dataset
            Of this architecture's :attr:`layout`.
        **options
            Any of :attr:`options` and :attr:`COMMON`; left out, the defaults apply.

        Raises
        ------
        ValueError
            A data set of another layout.
        TypeError
            An option this architecture does not take (the message lists those it takes).
        """
        unknown = sorted(set(options) - set(self.options) - set(self.COMMON))
        if unknown:
            raise TypeError(f"architecture {self.name!r} takes no option(s) {unknown}; its options are "
                            f"{sorted(self.options)} and {list(self.COMMON)}")
        self.check_dataset(dataset)
        return self.constructor(dataset, **options)


#: The architectures, by name: each network of this module declared once (name, class,
#: data layout, options and their defaults, export protocol). ``ramodel train --arch``
#: offers exactly these; a new network is one class and one entry here.
ARCHITECTURES = MappingProxyType({a.name: a for a in (
    Architecture("mlp", ResidualMLP, constructor=_build_mlp, layout="flat", export="blocks",
                 options={"depth": 4, "width": 32, "activation": "relu", "norm": "none"},
                 doc="ResidualMLP: fully connected, d = width"),
    Architecture("conv", ConvResNet, constructor=_build_conv, layout="image", export="blocks",
                 options={"depth": 4, "channels": 8},
                 doc="ConvResNet with one stage of `depth` blocks; M mixes channels at every pixel"),
    Architecture("vit", VisionTransformer, constructor=_build_vit, layout="image", export="blocks",
                 options={"depth": 2, "width": 32, "patch": 2, "heads": 4},
                 doc="VisionTransformer: `depth` layers (2 blocks each), embedding size width, M on every token"),
    Architecture("rnn", ResidualRNN, constructor=_build_rnn, layout="sequence", export="steps",
                 options={"width": 32, "activation": "tanh"},
                 doc="ResidualRNN: one cell of state size width over the sequence's steps (L = T)"),
)})


def architecture(name: str) -> Architecture:
    """The :data:`ARCHITECTURES` entry ``name``; ``ValueError`` listing the registered names otherwise."""
    check_choice("arch", name, tuple(ARCHITECTURES))
    return ARCHITECTURES[name]


def build(name: str, dataset, **options) -> nn.Module:
    """Build the registered architecture ``name`` for ``dataset``: ``architecture(name).build(dataset, **options)``.

    Examples
    --------
    >>> from ramodel import datasets
    >>> net = build("mlp", datasets.digits(classes=3), depth=2, width=8, init_seed=0)
    >>> type(net).__name__, len(net.blocks)
    ('ResidualMLP', 2)
    """
    return architecture(name).build(dataset, **options)
