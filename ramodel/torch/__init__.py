"""Export the residual Jacobians of a trained PyTorch network (``spec/FORMAT.md``).

Design constraints, in order:

1. PyTorch is an optional extra. Nothing in ``ramodel`` imports this module; a user
   who has torch imports ``ramodel.torch`` explicitly.
2. The user's model is never modified. It is put in eval mode for the export and
   every submodule's previous ``training`` flag is restored afterwards, also on
   error. Computation in another precision goes through
   :func:`torch.func.functional_call` with cast *copies* of the parameters and
   buffers, so the model's own tensors are untouched.
3. Per-sample semantics by construction: every Jacobian is taken of a function of
   one input, ``vmap``-ed over inputs and probe vectors, so no batch statistic can
   leak between samples.
4. Matrix-free for large ``d``: the top-k triplets come from the randomized range
   finder of :func:`ramodel.spectra.top_singular_operator` (same test matrix for a
   seed, same iterations, residual test and signs), run in torch on the model's
   device and fed by batched ``torch.func.jvp`` / ``vjp`` products. No ``d x d``
   matrix is formed. (Torch rather than the shared NumPy code: host round trips of
   every probe block, and OpenBLAS threads contending with torch's OpenMP threads,
   made the NumPy route 5x slower on 2 cores.)
5. A failed export leaves no file: every argument is checked before the heavy work
   and :meth:`ramodel.jacobian_set.JacobianSet.save` is atomic.

What is exported
----------------
For blocks ``1..L`` with inputs ``h_{l-1}`` (per-sample shape ``s``, ``d = prod(s)``,
flattened in C order, so a conv feature map is ``channels*height*width``):

- ``representations[0]`` is the input of block 1 and ``representations[l]`` the
  output of block ``l``;
- ``J_l(x_n) = d(block_l(h) - M_l h)/dh`` at ``h`` = the input of block ``l`` for
  input ``x_n``: the Jacobian of the **effective residual**, the part of the block's
  output that is not the skip path. For a pre-activation block
  ``block(h) = M h + F(h)`` this is exactly ``dF/dh``. For a post-activation block
  such as torchvision's ``BasicBlock`` (``relu(F(h) + h)``) it is
  ``D (F'(h) + I) - I`` with ``D`` the ReLU mask, which is what makes
  ``h_l - M h_{l-1}`` (the step RA1 and the T5 linearity measure see) the
  effective residual's value.

The skip protocol
-----------------
A block's skip ``M`` (a linear map on its input) is found, in this order:

1. ``block.skip_matrix()``, a method returning an array or tensor, or None for
   the identity;
2. ``block.skip.matrix`` or ``block.skip.M`` (as :class:`ramodel.nets.EntangledSkip`
   has it), an array, tensor or buffer (or a callable returning one); ``block.skip``
   may also be None or ``nn.Identity`` (the identity);
3. otherwise the skip is **not guessed**: the export raises a ``ValueError`` that
   names the block and the three ways to declare its skip (``skips=`` with a matrix,
   ``"identity"`` or ``"none"``; a ``skip`` attribute; a ``skip_matrix()`` method).
   A plain block ``h -> F(h)`` taken for ``h + F(h)`` would be stored as
   ``dF/dh - I`` and analysed as an identity-skip network. ``skips="identity"``
   declares every block ``h + F(h)``, ``skips="none"`` every block ``F(h)``.

``M`` is ``(d, d)`` acting on the flattened feature, or ``(n, n)`` acting on one
axis of the per-sample feature of shape ``s``: ``(M h)[.., i, ..] = sum_j M[i, j]
h[.., j, ..]``. That axis is the channel axis ``s[0]`` unless ``block.skip.dim``
names another in PyTorch's batched convention (``EntangledSkip``'s ``dim``: ``1`` is
the channel axis of ``(B, C, H, W)``, ``-1`` the last axis). An exact identity
matrix counts as the identity skip. A block whose ``skip`` attribute is something
else raises a ``TypeError``: guessing would give a wrong ``J``. The ``skips``
argument of :func:`export_jacobians` overrides discovery (on the channel axis).
Every matrix, an identity matrix included, must fit the block: ``(d, d)`` or
``(n, n)`` with ``n`` the size of its axis; anything else is a ``ValueError``.

Which Jacobian (``residual=``)
------------------------------
- ``"effective"`` (default): ``d(block(h) - M h)/dh``. Defined for every block, equal
  to ``dF/dh`` for pre-activation blocks ``M h + F(h)``, and the Jacobian of the step
  ``h_l - M h_{l-1}`` that RA1 and the T5 linearity measure see, so every measure of
  one file refers to the same residual.
- ``"post_activation"``: the paper's residual Jacobian of a post-activation block
  ``block(h) = relu(F(h) + M h)`` (torchvision's ``BasicBlock``), ``D dF/dh`` with
  ``D = diag(relu'(F(h) + M h))``, computed as ``d block/dh - D M`` with the ReLU mask
  ``D = [block(h) > 0]``. It is exact only for a ReLU applied after the addition;
  for such blocks it leaves out the ``(D - I) M`` part that the effective residual
  attributes to the branch.
"""

from __future__ import annotations

import datetime
import json
import numbers
import os
import pathlib
import platform
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, jacrev, jvp, vjp, vmap

from .._blocks import BlockRecorder, eval_mode, resolve_blocks
from .._validation import as_generator, check_choice, check_int
from ..jacobian_set import JacobianSet
from ..spectra import TopSingular
from ._skips import (
    _as_skip,
    _discover_skip,
    _named_skip,
    _resolve_skips,
    _Skip,
    _skip_family,
    skip_matrix,
)

__all__ = [
    "METHODS",
    "RESIDUALS",
    "export_jacobians",
    "compute_jacobians",
    "skip_matrix",
    "block_jacobians",
    "block_top_singular",
]

METHODS = ("auto", "dense", "matrix_free")
_DTYPES = {"float32": torch.float32, "float64": torch.float64}

#: ``method="auto"`` stores dense Jacobians when ``d`` is at most this and the whole
#: ``(L, N, d, d)`` array fits in ``_AUTO_DENSE_MAX_BYTES``. Up to ``d = 1024`` a dense
#: Jacobian costs ``d`` VJPs per input, within a small factor of the ~``16 (k + 10)``
#: products of the matrix-free path, and keeps the full ``J`` that the T2/T3 measures
#: and the ``K`` matrix of RA2 need; beyond it storage (8 MiB per input and block in
#: float64) and the exact SVD at analysis time (``O(d^3)``) dominate.
_AUTO_DENSE_MAX_WIDTH = 1024
_AUTO_DENSE_MAX_BYTES = 1 << 30
#: Skip matrices are stored (expanded to ``(L, d, d)``) under the same two limits.
#: Channel matrices of larger widths go into ``meta`` when they hold at most this
#: many entries in all.
_META_MAX_SKIP_ENTRIES = 1 << 16
#: Probe vectors per vmapped VJP pass of the dense path: ``probes * d`` elements
#: per activation tensor, i.e. 128 MiB in float64.
_DENSE_CHUNK_ELEMENTS = 1 << 24
#: A matrix-free triplet whose residual ``|J v - s u| / s_1`` exceeds this factor
#: times ``sqrt(eps)`` triggers a warning (the range finder hit its iteration cap).
_RESIDUAL_WARN_FACTOR = 100.0
#: Keys of ``meta`` the exporter owns: a user value that disagrees is an error.
_FACT_KEYS = (
    "blocks", "depth", "width", "classes", "feature_shape", "method", "k", "dtype", "n_inputs",
    "jacobian", "export_seed",
)


# ----------------------------------------------------------------------------- helpers


_eval_mode = eval_mode  # ramodel._blocks: one copy for export and refinement


def _device_of(module: nn.Module) -> torch.device:
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


def _cast_state(module: nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Detached copies (or views when the dtype already matches) of the floating
    parameters and buffers in ``dtype``; other buffers as they are."""
    state = dict(module.named_parameters())
    state.update(module.named_buffers())
    return {k: (v.detach().to(dtype) if v.is_floating_point() else v) for k, v in state.items()}


def _torch_dtype(dtype: Any) -> tuple[str, torch.dtype]:
    name = dtype if isinstance(dtype, str) else {torch.float32: "float32", torch.float64: "float64"}.get(dtype)
    if name is None and isinstance(dtype, (type, np.dtype)):
        name = np.dtype(dtype).name
    if name not in _DTYPES:
        raise ValueError(f"dtype must be one of {tuple(_DTYPES)}, got {dtype!r}")
    return name, _DTYPES[name]


RESIDUALS = ("effective", "post_activation")


def _residual_fn(block: nn.Module, state: dict, skip: _Skip, dtype: torch.dtype, device: torch.device,
                 residual: str = "effective"):
    """``F(h) = block(h) - M h`` for one sample ``h`` of shape ``s`` (module docstring);
    ``residual="post_activation"``: ``block(h) - D M h`` with the ReLU mask ``D`` held
    constant, whose derivative is ``d block/dh - D M = D dF/dh``."""
    apply_skip = skip.applier(dtype, device)

    def F(h):
        # A clone, because a block may modify its input in place (ReLU(inplace=True)),
        # which would change the "M h" subtracted below.
        out = functional_call(block, state, (h.clone().unsqueeze(0),)).squeeze(0)
        if residual == "post_activation":
            mask = (out > 0).detach().to(out.dtype)
            return out - mask * apply_skip(h)
        return out - apply_skip(h)

    return F


def _dense_jacobians(F, H: torch.Tensor) -> torch.Tensor:
    """``(B, *s) -> (B, d, d)``: vmapped reverse-mode Jacobians, chunked over probes."""
    B, d = H.shape[0], int(np.prod(H.shape[1:]))
    chunk = max(1, _DENSE_CHUNK_ELEMENTS // max(1, B * d))
    J = vmap(jacrev(F, chunk_size=None if chunk >= d else chunk))(H)
    return J.reshape(B, d, d)


def _operator(F, H: torch.Tensor):
    """``matvec``/``rmatvec`` of the ``B`` Jacobians at ``H``, on ``H``'s device.

    ``X (B, d, p) -> J X (B, d, p)`` through ``jvp`` and ``Y -> J^T Y`` through ``vjp``,
    both vmapped over the ``B`` inputs and the ``p`` probes (the primal pass runs once
    per input and is shared by its probes).
    """
    B, shape = H.shape[0], tuple(H.shape[1:])
    d = int(np.prod(shape))

    def to_probes(X: torch.Tensor) -> torch.Tensor:
        return X.transpose(1, 2).reshape(B, -1, *shape)  # (B, p, *s)

    def to_columns(T: torch.Tensor) -> torch.Tensor:
        return T.reshape(B, -1, d).transpose(1, 2)  # (B, d, p)

    def jvp_one(h, V):
        return vmap(lambda v: jvp(F, (h,), (v,))[1])(V)

    def vjp_one(h, Y):
        _, pull = vjp(F, h)
        return vmap(lambda y: pull(y)[0])(Y)

    jvp_all, vjp_all = vmap(jvp_one), vmap(vjp_one)

    def matvec(X):
        return to_columns(jvp_all(H, to_probes(X)))

    def rmatvec(Y):
        return to_columns(vjp_all(H, to_probes(Y)))

    return matvec, rmatvec


def _max_power_iters(power_iters, k: int, d: int, l: int) -> tuple[int, bool]:
    """(iteration cap, stop early?): the rule of ``ramodel.spectra``'s ``power_iters="auto"``."""
    if l >= d:
        return 0, False  # the sketch spans the whole space: one pass is exact
    if power_iters == "auto":
        return (7 if k < 0.1 * d else 4), True
    return int(power_iters), False


def _range_finder(matvec, rmatvec, B: int, d: int, k: int, *, oversample: int, power_iters, seed,
                  dtype: torch.dtype, device: torch.device):
    """Top-k triplets of ``B`` square ``d x d`` operators known by products, in torch.

    The algorithm of :func:`ramodel.spectra.top_singular_operator` (the same
    Gaussian test matrix for the same ``seed``, the same power iterations with a
    QR after every product, Rayleigh-Ritz extraction, residual test and sign
    convention), run with torch on the operator's device. The shared NumPy version
    would move every probe block to the host, and its OpenBLAS threads then contend
    with torch's OpenMP threads for the cores: measured 5x slower on 2 cores.

    Returns ``U (B, d, k)``, ``S (B, k)``, ``V (B, d, k)`` and the relative residuals
    ``|J v_i - s_i u_i| / s_1`` ``(B, k)`` of the returned triplets (``J^T u_i = s_i v_i``
    holds to rounding by construction).
    """
    l = min(k + oversample, d)
    max_iters, stop_early = _max_power_iters(power_iters, k, d, l)
    tol = float(np.sqrt(torch.finfo(dtype).eps))
    # Drawn on the host with NumPy (one seed, the same numbers on every device), as spectra does.
    omega = torch.as_tensor(as_generator(seed).standard_normal((d, l)), dtype=dtype, device=device)
    Q = torch.linalg.qr(matvec(omega.expand(B, d, l))).Q
    it = 0
    while True:
        P, R = torch.linalg.qr(rmatvec(Q))  # J^T Q = P R
        Ur, S, Vrh = torch.linalg.svd(R.mT, full_matrices=False)
        Ur, S, Vr = Ur[..., :k], S[..., :k], Vrh.mT[..., :k]
        U, V = Q @ Ur, P @ Vr
        Y = matvec(P)  # J P: the next sketch, and J V = Y Vr for the residual test
        res = torch.linalg.vector_norm(Y @ Vr - U * S[:, None, :], dim=-2)
        res = res / S[:, :1].clamp_min(torch.finfo(dtype).tiny)
        if it >= max_iters or (stop_early and bool((res <= tol).all())):
            break
        Q = torch.linalg.qr(Y).Q
        it += 1
    # Sign convention of ramodel.spectra.fix_signs: the largest-|.| entry of each u_i is positive.
    pivot = U.gather(-2, U.abs().argmax(dim=-2, keepdim=True))
    sign = torch.where(pivot < 0, -1.0, 1.0).to(dtype)
    return U * sign, S, V * sign, res


def _top_k(F, H: torch.Tensor, k: int, *, oversample: int, power_iters, seed):
    """Top-k triplets (NumPy) of the ``B`` Jacobians at ``H`` and their relative residuals."""
    B, d = H.shape[0], int(np.prod(H.shape[1:]))
    matvec, rmatvec = _operator(F, H)
    U, S, V, res = _range_finder(
        matvec, rmatvec, B, d, k, oversample=oversample, power_iters=power_iters, seed=seed,
        dtype=H.dtype, device=H.device,
    )
    host = lambda t: t.detach().cpu().numpy()  # noqa: E731
    if not (torch.isfinite(S).all() and torch.isfinite(U).all() and torch.isfinite(V).all()):
        raise ValueError("the block's Jacobian products are not finite (NaN/Inf in jvp/vjp)")
    return TopSingular(host(U), host(S), host(V)), host(res)


def _check_block_input(h: Any, name: str = "h") -> torch.Tensor:
    if not isinstance(h, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, *s), got {type(h).__name__}")
    if h.ndim < 2 or h.shape[0] < 1 or h.numel() == 0:
        raise ValueError(f"{name} must have shape (B, *s) with B >= 1 and non-empty s, got {tuple(h.shape)}")
    if not h.is_floating_point():
        raise TypeError(f"{name} must be floating, got dtype {h.dtype}")
    if not bool(torch.isfinite(h).all()):
        raise ValueError(f"{name} must be finite, but it holds NaN or Inf")
    return h


def _check_residual(residual: str) -> str:
    if residual not in RESIDUALS:
        raise ValueError(f"residual must be one of {RESIDUALS}, got {residual!r}")
    return residual


def _block_setup(block, h, skip, dtype, residual="effective"):
    if not isinstance(block, nn.Module):
        raise TypeError(f"block must be a torch.nn.Module, got {type(block).__name__}")
    residual = _check_residual(residual)
    h = _check_block_input(h)
    dtype_name, tdtype = _torch_dtype(dtype)
    shape = tuple(h.shape[1:])
    if isinstance(skip, str) and skip == "auto":
        try:
            M, dim = _discover_skip(block)
        except ValueError as exc:
            raise ValueError(f"{exc} (here: pass skip='identity', skip='none' or skip=<matrix>)") from None
        sk = _as_skip(M, shape, "skip", dim)
    else:
        sk = _named_skip(skip, shape, "skip")
    device = _device_of(block)
    H = h.detach().to(device=device, dtype=tdtype)
    with torch.no_grad():
        out = functional_call(block, _cast_state(block, tdtype), (H[:1],))
    if not isinstance(out, torch.Tensor) or tuple(out.shape[1:]) != shape:
        got = tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"block maps features of shape {shape} to {got}: it is not a residual block "
            "(its output must have the shape of its input)"
        )
    F = _residual_fn(block, _cast_state(block, tdtype), sk, tdtype, device, residual)
    return F, H, dtype_name


def block_jacobians(block: nn.Module, h: torch.Tensor, *, skip: Any = "auto", dtype: str = "float64",
                    residual: str = "effective") -> np.ndarray:
    """Dense Jacobians ``d(block(h) - M h)/dh`` of one block at a batch of inputs.

    Parameters
    ----------
    block : nn.Module
        Maps ``(B, *s)`` to ``(B, *s)``. Evaluated in eval mode (its previous modes
        are restored).
    h : torch.Tensor, shape (B, *s)
        Points at which to differentiate, one per sample.
    skip : "auto", None, "identity", "none" or matrix, default "auto"
        ``M``: "auto" follows the skip protocol (:func:`skip_matrix`; a block that
        declares none is an error), None or "identity" the identity, "none" the zero
        skip (a plain block), or a ``(d, d)`` / ``(c, c)`` matrix.
    dtype : {"float64", "float32"}, default "float64"
        Precision of the computation (the block's parameters are cast copies).
    residual : {"effective", "post_activation"}, default "effective"
        Which residual Jacobian (module docstring, "Which Jacobian").

    Returns
    -------
    ndarray, shape (B, d, d)
        ``d = prod(s)``, rows and columns flattened in C order.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> torch.manual_seed(0) is not None
    True
    >>> class Block(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.lin = nn.Linear(3, 3, bias=False)
    ...     def forward(self, h):
    ...         return h + self.lin(h)
    >>> block = Block()
    >>> J = block_jacobians(block, torch.randn(2, 3), skip="identity")   # h + F(h), declared
    >>> W = block.lin.weight.detach().double().numpy()
    >>> J.shape, bool(abs(J[1] - W).max() < 1e-15)
    ((2, 3, 3), True)
    """
    with _eval_mode(block):
        F, H, _ = _block_setup(block, h, skip, dtype, residual)
        return _dense_jacobians(F, H).detach().cpu().numpy()


def block_top_singular(
    block: nn.Module,
    h: torch.Tensor,
    k: int,
    *,
    skip: Any = "auto",
    dtype: str = "float64",
    oversample: int = 10,
    power_iters: int | str = "auto",
    seed=0,
    residual: str = "effective",
) -> TopSingular:
    """Top-k singular triplets of ``d(block(h) - M h)/dh``, matrix-free.

    The randomized range finder of :func:`ramodel.spectra.top_singular_operator`,
    run in torch on the block's device, on batched ``jvp``/``vjp`` products; no
    ``d x d`` matrix is formed. Memory is ``O(B (k + oversample))`` activations of the
    block.

    Parameters
    ----------
    block, h, skip, dtype, residual
        As in :func:`block_jacobians`.
    k : int
        Number of triplets, ``1 <= k <= d``.
    oversample, power_iters, seed
        As in :func:`ramodel.spectra.top_singular`. ``power_iters="auto"`` stops when
        every ``|J v_i - s_i u_i| <= sqrt(eps) s_1``.

    Returns
    -------
    TopSingular
        ``U (B, d, k)``, ``S (B, k)``, ``V (B, d, k)`` as NumPy arrays, signs fixed.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from torch import nn
    >>> torch.manual_seed(0) is not None
    True
    >>> class Block(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.conv = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.Tanh(), nn.Conv2d(2, 2, 3, padding=1))
    ...     def forward(self, h):
    ...         return h + self.conv(h)
    >>> block, h = Block(), torch.randn(3, 2, 5, 5)
    >>> T = block_top_singular(block, h, 2, skip="identity")   # h + F(h), declared
    >>> S_dense = np.linalg.svd(block_jacobians(block, h, skip="identity"), compute_uv=False)[:, :2]
    >>> bool(np.allclose(T.S, S_dense, rtol=1e-8))
    True
    """
    oversample, power_iters = _check_finder_args(oversample, power_iters)
    with _eval_mode(block):
        F, H, _ = _block_setup(block, h, skip, dtype, residual)
        d = int(np.prod(H.shape[1:]))
        k = check_int("k", k, minimum=1, maximum=d)
        T, _ = _top_k(F, H, k, oversample=oversample, power_iters=power_iters, seed=seed)
        return T


# ----------------------------------------------------------------------------- export


def _check_path(path: Any) -> pathlib.Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    p = pathlib.Path(os.fspath(path))
    if not p.parent.is_dir():
        raise FileNotFoundError(f"cannot export to {str(p)!r}: the folder {str(p.parent)!r} does not exist")
    if p.is_dir():
        raise IsADirectoryError(f"cannot export to {str(p)!r}: it is a folder; give a file name such as 'net.npz'")
    return p


def _as_inputs(inputs: Any) -> torch.Tensor:
    if isinstance(inputs, torch.Tensor):
        x = inputs.detach()
    else:
        try:
            # A copy: torch cannot wrap read-only arrays (e.g. a JacobianSet's or a memmap's).
            x = torch.from_numpy(np.array(inputs))
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(f"inputs must be a tensor or array of shape (N, ...), got {type(inputs).__name__}") from exc
    if x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(f"inputs must have shape (N, ...) with N >= 1, got {tuple(x.shape)}")
    if (x.is_floating_point() or x.is_complex()) and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).reshape(x.shape[0], -1).any(dim=1).nonzero()[0, 0])
        raise ValueError(f"inputs must be finite, but input {bad} (and maybe others) holds NaN or Inf")
    return x


def _as_labels(labels: Any, N: int) -> np.ndarray:
    y = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if y.dtype.kind not in "iu":
        raise ValueError(f"labels must be integers, got dtype {y.dtype}")
    if y.ndim != 1:
        raise ValueError(f"labels must have shape (N,), got {y.shape}")
    if y.shape[0] != N:
        raise ValueError(f"labels and inputs must have the same length: {y.shape[0]} labels for N = {N} inputs")
    return y.astype(np.int64)


_resolve_blocks = resolve_blocks  # ramodel._blocks: one resolution for export and refinement


def _resolve_classes(classes, classifier, model, y) -> int:
    if classes is not None:
        return check_int("classes", classes, minimum=2)
    if isinstance(classifier, nn.Linear):
        return check_int("classes (rows of classifier)", classifier.out_features, minimum=2)
    if classifier is not None:
        shape = tuple(getattr(classifier, "shape", ()))
        if len(shape) == 2:
            return check_int("classes (rows of classifier)", shape[0], minimum=2)
    for attr in ("classifier", "fc"):
        head = getattr(model, attr, None)
        if isinstance(head, nn.Linear) and head.out_features >= 2:
            return int(head.out_features)
    C = int(y.max()) + 1
    if C < 2:
        raise ValueError("cannot infer classes from labels that are all 0: pass classes=C (>= 2)")
    return C


def _short_repr(model: nn.Module, limit: int = 400) -> str:
    text = " ".join(repr(model).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _versions() -> dict:
    from .. import __version__

    return {
        "ramodel": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def _merge_meta(user: Mapping, auto: dict) -> dict:
    out = dict(user)
    for key, value in auto.items():
        if key in _FACT_KEYS and key in user and json.dumps(user[key]) != json.dumps(value):
            raise ValueError(
                f"meta[{key!r}] = {user[key]!r} contradicts the export ({value!r}); remove it: the "
                "exporter records this key itself"
            )
        if key in _FACT_KEYS or key not in user:
            out[key] = value
    return out


def _check_finder_args(oversample, power_iters):
    oversample = check_int("oversample", oversample, minimum=0)
    if isinstance(power_iters, str):
        if power_iters != "auto":
            raise ValueError(f"power_iters must be 'auto' or an integer >= 0, got {power_iters!r}")
        return oversample, power_iters
    return oversample, check_int("power_iters", power_iters, minimum=0)


def _normalise_seed(seed):
    if isinstance(seed, np.random.Generator):
        # One draw, reused for every chunk and block, so the result does not depend on batch_size.
        return int(seed.integers(2**63)), "generator"
    if seed is None or isinstance(seed, np.random.SeedSequence):
        return seed, None if seed is None else "SeedSequence"
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, SeedSequence, numpy Generator or None, got {seed!r}")
    return int(seed), int(seed)


def _compute_jacobians(
    model: nn.Module,
    inputs: Any,
    labels: Any,
    *,
    blocks: Sequence[nn.Module] | None = None,
    k: int | None = None,
    classes: int | None = None,
    skips: Any = None,
    classifier: Any = None,
    meta: Mapping | None = None,
    batch_size: int = 32,
    dtype: str = "float64",
    method: str = "auto",
    seed=0,
    oversample: int = 10,
    power_iters: int | str = "auto",
    residual: str = "effective",
    stacklevel: int = 3,
) -> JacobianSet:
    """The body of :func:`compute_jacobians` (``stacklevel`` points warnings at the user's call)."""
    t_start = time.perf_counter()
    # ---- cheap checks first: nothing heavy runs on arguments that will fail.
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_choice("method", method, METHODS)
    dtype_name, tdtype = _torch_dtype(dtype)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    oversample, power_iters = _check_finder_args(oversample, power_iters)
    residual = _check_residual(residual)
    seed, seed_meta = _normalise_seed(seed)
    if meta is not None and not isinstance(meta, Mapping):
        raise TypeError(f"meta must be a mapping (JSON object), got {type(meta).__name__}")
    user_meta = dict(meta or {})
    try:
        json.dumps(user_meta, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"meta must be JSON-serialisable (strict JSON, no NaN/Inf): {exc}") from exc
    if k is not None:
        k = check_int("k", k, minimum=1)
    x = _as_inputs(inputs)
    N = int(x.shape[0])
    y = _as_labels(labels, N)
    blocks, names = _resolve_blocks(model, blocks)
    L = len(blocks)
    C = _resolve_classes(classes, classifier, model, y)
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= C:
        raise ValueError(f"labels must lie in [0, classes) = [0, {C}), got values in [{lo}, {hi}]")

    device = _device_of(model)
    if x.is_floating_point():
        x = x.to(dtype=tdtype)

    with _eval_mode(model):
        state = _cast_state(model, tdtype)
        # ---- forward passes: representations, block inputs, checks.
        reps = None
        block_inputs: list[list[torch.Tensor | None]] = [[] for _ in range(L)]
        contiguous = [True] * L
        correct, scored = 0, 0
        with BlockRecorder(blocks, names) as rec, torch.no_grad():
            for start in range(0, N, batch_size):
                xb = x[start : start + batch_size].to(device)
                rec.reset()
                out = functional_call(model, state, (xb,))
                rec.check()
                if reps is None:
                    shape = tuple(rec.inputs[0].shape[1:])
                    d = int(np.prod(shape))
                    groups: dict[tuple, list[str]] = {}
                    for i in range(L):
                        groups.setdefault(tuple(rec.inputs[i].shape[1:]), []).append(names[i])
                    if len(groups) > 1:
                        listing = "; ".join(f"{list(s)}: {g}" for s, g in groups.items())
                        raise ValueError(
                            "all blocks must act on features of one shape (one d per file), but they act on "
                            f"{listing}. Export each stage separately with blocks=[...]"
                        )
                    reps = np.empty((L + 1, N, d), dtype=dtype_name)
                B = xb.shape[0]
                reps[0, start : start + B] = rec.inputs[0].reshape(B, d).cpu().numpy()
                block_inputs[0].append(None)
                for i in range(L):
                    reps[i + 1, start : start + B] = rec.outputs[i].reshape(B, d).cpu().numpy()
                    if i > 0:
                        same = torch.equal(rec.inputs[i], rec.outputs[i - 1])
                        contiguous[i] &= same
                        block_inputs[i].append(None if same else rec.inputs[i].cpu())
                if isinstance(out, torch.Tensor) and out.ndim == 2 and out.shape == (B, C):
                    pred = out.argmax(dim=1).cpu().numpy()
                    correct += int((pred == y[start : start + B]).sum())
                    scored += B

        # ---- everything that needs d.
        kmax = d
        if k is None:
            k = min(C, d)
        elif k > kmax:
            raise ValueError(f"k must be in [1, d] = [1, {d}], got {k}")
        itemsize = np.dtype(dtype_name).itemsize
        small = d <= _AUTO_DENSE_MAX_WIDTH
        used = method
        if method == "auto":
            used = "dense" if small and L * N * d * d * itemsize <= _AUTO_DENSE_MAX_BYTES else "matrix_free"
        skip_list = _resolve_skips(skips, blocks, names, shape)
        W, classifier_note = _resolve_classifier(classifier, model, C, d, dtype_name)

        # ---- the Jacobians.
        if used == "dense":
            J = np.empty((L, N, d, d), dtype=dtype_name)
        else:
            U = np.empty((L, N, d, k), dtype=dtype_name)
            V = np.empty((L, N, d, k), dtype=dtype_name)
            S = np.empty((L, N, k), dtype=dtype_name)
            worst = 0.0
        for i, (block, sk) in enumerate(zip(blocks, skip_list)):
            F = _residual_fn(block, _cast_state(block, tdtype), sk, tdtype, device, residual)
            for b, start in enumerate(range(0, N, batch_size)):
                stored = block_inputs[i][b]
                src = reps[i, start : start + batch_size] if stored is None else stored.reshape(-1, d).numpy()
                H = torch.as_tensor(np.ascontiguousarray(src), device=device).reshape(-1, *shape)
                stop = start + H.shape[0]
                if used == "dense":
                    J[i, start:stop] = _dense_jacobians(F, H).detach().cpu().numpy()
                else:
                    T, res = _top_k(F, H, k, oversample=oversample, power_iters=power_iters, seed=seed)
                    U[i, start:stop], S[i, start:stop], V[i, start:stop] = T.U, T.S, T.V
                    worst = max(worst, float(res.max()))

    # ---- skips, meta, file.
    nonidentity = any(s.kind != "identity" for s in skip_list)
    skip_note: dict[str, Any] = {"stored": False}
    M_all = None
    if nonidentity:
        acts_on = sorted({s.describe(shape) for s in skip_list if s.kind != "identity"})
        skip_note["acts_on"] = acts_on[0] if len(acts_on) == 1 else "mixed: " + ", ".join(acts_on)
        if small and L * d * d * itemsize <= _AUTO_DENSE_MAX_BYTES:
            M_all = np.stack([s.dense(shape) for s in skip_list]).astype(dtype_name)
            skip_note["stored"] = True
        else:
            skip_note["reason"] = f"d = {d} is too large to store (L, d, d) skips (FORMAT.md has no per-axis form)"
            if acts_on == ["channels"]:
                # The small per-block (c, c) channel matrices still fit in meta.
                c = shape[0]
                if L * c * c <= _META_MAX_SKIP_ENTRIES:
                    skip_note["channel_matrices"] = [
                        (np.eye(c) if s.kind == "identity" else s.matrix).tolist() for s in skip_list
                    ]
    if contiguous.count(False):
        broken = [names[i] for i in range(1, L) if not contiguous[i]]
        warnings.warn(
            f"the input of block(s) {broken} is not the output of the block before it: something "
            "runs in between. Each J_l is taken at its block's own input, but representations[l-1] "
            "is then not that input (RA1 steps and the T5 linearity measure assume it is)",
            UserWarning,
            stacklevel=stacklevel,
        )
    auto = {
        "exporter": "ramodel.torch.export_jacobians",
        "architecture": type(model).__name__,
        "architecture_repr": _short_repr(model),
        "blocks": names,
        "block_types": [type(b).__name__ for b in blocks],
        "feature_shape": list(shape),
        "depth": L,
        "width": d,
        "classes": C,
        "n_inputs": N,
        "skip_family": _skip_family(skip_list, blocks),
        "skips": skip_note,
        "jacobian": ("d(block(h) - M h)/dh at the block's input h (the effective residual)"
                     if residual == "effective" else
                     "D dF/dh = d block/dh - D M, D = [block(h) > 0], at the block's input h "
                     "(the post-activation residual)"),
        "residual": residual,
        "contiguous": all(contiguous),
        "method": used,
        "k": k,
        "dtype": dtype_name,
        "export_seed": seed_meta,
        "classifier": classifier_note,
        "accuracy_on_inputs": (correct / scored) if scored == N else None,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions(),
    }
    if used == "matrix_free":
        auto.update({"oversample": oversample, "power_iters": power_iters, "max_relative_residual": worst})
        limit = _RESIDUAL_WARN_FACTOR * float(np.sqrt(np.finfo(dtype_name).eps))
        if worst > limit:
            warnings.warn(
                f"the matrix-free top-{k} triplets did not fully converge: max |J v - s u| / s_1 = "
                f"{worst:.2g} > {limit:.2g}; pass a larger power_iters or oversample",
                UserWarning,
                stacklevel=stacklevel,
            )
    full_meta = _merge_meta(user_meta, auto)
    full_meta["export_seconds"] = round(time.perf_counter() - t_start, 3)
    arrays = {"jacobians": J} if used == "dense" else {"U": U, "S": S, "V": V}
    js = JacobianSet(
        labels=y, classes=C, meta=full_meta, representations=reps, skips=M_all, classifier=W, **arrays,
    )
    return js


def compute_jacobians(
    model: nn.Module,
    inputs: Any,
    labels: Any,
    *,
    blocks: Sequence[nn.Module] | None = None,
    k: int | None = None,
    classes: int | None = None,
    skips: Any = None,
    classifier: Any = None,
    meta: Mapping | None = None,
    batch_size: int = 32,
    dtype: str = "float64",
    method: str = "auto",
    seed=0,
    oversample: int = 10,
    power_iters: int | str = "auto",
    residual: str = "effective",
) -> JacobianSet:
    """The residual Jacobians of a trained network as a :class:`~ramodel.jacobian_set.JacobianSet`,
    in memory: :func:`export_jacobians` without the file.

    Takes every argument of :func:`export_jacobians` but ``path``, with the same
    meaning, checks and result (``js.save(path)`` then writes the same file).

    Examples
    --------
    >>> import torch
    >>> from ramodel.nets import ResidualMLP
    >>> net = ResidualMLP(4, 3, width=5, depth=2, skip="orthogonal", seed=0, init_seed=0)
    >>> js = compute_jacobians(net, torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2]))
    >>> js.jacobians.shape, js.representations.shape
    ((2, 6, 5, 5), (3, 6, 5))
    """
    return _compute_jacobians(model, inputs, labels, blocks=blocks, k=k, classes=classes, skips=skips,
                              classifier=classifier, meta=meta, batch_size=batch_size, dtype=dtype, method=method,
                              seed=seed, oversample=oversample, power_iters=power_iters, residual=residual)


def export_jacobians(
    model: nn.Module,
    inputs: Any,
    labels: Any,
    path: str | os.PathLike,
    *,
    blocks: Sequence[nn.Module] | None = None,
    k: int | None = None,
    classes: int | None = None,
    skips: Any = None,
    classifier: Any = None,
    meta: Mapping | None = None,
    batch_size: int = 32,
    dtype: str = "float64",
    method: str = "auto",
    seed=0,
    oversample: int = 10,
    power_iters: int | str = "auto",
    residual: str = "effective",
) -> JacobianSet:
    """Export the residual Jacobians of a trained network to a ``FORMAT.md`` file.

    Runs ``model`` on ``inputs`` with forward hooks on ``blocks`` to record the
    representations ``h_0 .. h_L``, then computes each block's effective-residual
    Jacobian ``J_l(x_n) = d(block_l(h) - M_l h)/dh`` at its input (dense, or its top-k
    triplets matrix-free), and writes a :class:`~ramodel.jacobian_set.JacobianSet`
    to ``path`` atomically: :func:`compute_jacobians`, then :meth:`JacobianSet.save`.

    Parameters
    ----------
    model : nn.Module
        The trained network. It is run in eval mode; the ``training`` flag of every
        submodule is restored afterwards (also on error). Its tensors are not
        modified: ``dtype`` is applied to cast copies of its registered parameters
        and buffers (a tensor kept as a plain attribute is not cast: register it as
        a buffer). Inference must treat samples independently in eval mode (true of
        standard layers; BatchNorm uses its running statistics).
    inputs : tensor or array, shape (N, ...)
        Network inputs, finite. Floating inputs are cast to ``dtype``.
    labels : integer array or tensor, shape (N,)
        Classes, in ``[0, classes)``.
    path : str or os.PathLike
        Destination file (its folder must exist). Written exactly there.
    blocks : sequence of nn.Module, optional
        The residual blocks, in forward order, each a submodule of ``model`` run
        exactly once per forward pass with one tensor argument, and each mapping
        features of shape ``s`` to ``s`` (all blocks share ``s``; leave out
        downsampling blocks). Default ``model.blocks``.
    k : int, optional
        Number of singular triplets for the matrix-free method, ``1 <= k <= d``.
        Default ``min(C, d)``. Recorded in ``meta`` for the dense method too.
    classes : int, optional
        C. Default: the rows of ``classifier``, else the ``out_features`` of a
        ``model.classifier``/``model.fc`` ``nn.Linear``, else ``max(labels) + 1``.
    skips : optional
        Overrides the skip protocol (module docstring): ``"identity"`` (every block
        is ``h + F(h)``), ``"none"`` (every block is ``F(h)``), one matrix for every
        block, an ``(L, ., .)`` array, or a list of L matrices, None / ``"identity"``
        or ``"none"``. Each matrix is ``(d, d)`` or ``(c, c)`` on the channel axis.
        Default None: discovery, and a block that declares no skip is an error
        (skips are never guessed).
    residual : {"effective", "post_activation"}, default "effective"
        ``"effective"``: ``d(block(h) - M h)/dh``, defined for any block and
        consistent with the stored steps ``h_l - M h_{l-1}``; ``"post_activation"``:
        the paper's ``D dF/dh`` for ``relu(F(h) + M h)`` blocks (module docstring,
        "Which Jacobian").
    classifier : nn.Linear or array (C, d), optional
        Final linear layer to store. Default: ``model.classifier`` or ``model.fc``
        when it is an ``nn.Linear`` with ``in_features == d`` and ``out_features ==
        C``; otherwise none is stored and ``meta["classifier"]`` says why.
    meta : mapping, optional
        JSON-serialisable descriptions to store: ``dataset``, ``train_accuracy``,
        ``test_accuracy``, ``seed`` (of training), ``architecture``, ``skip_family``
        (these two override the exporter's guesses), anything else. Keys the exporter
        computes itself (``depth``, ``width``, ``k``, ...) must agree with it.
    batch_size : int, default 32
        Inputs per forward pass and per Jacobian pass; working memory grows with it.
        The dense method vmaps ``batch_size * d`` VJPs in chunks of at most
        ``2^24 / (batch_size d)`` probes per input; the matrix-free method pushes
        ``batch_size * (k + oversample)`` probes at once.
    dtype : {"float64", "float32"}, default "float64"
        Precision of the computation and of every stored array.
    method : {"auto", "dense", "matrix_free"}, default "auto"
        - ``"dense"``: ``jacobians (L, N, d, d)`` by ``vmap(jacrev)``: ``d`` VJPs per
          input and block, memory ``L N d^2``.
        - ``"matrix_free"``: ``U, S, V`` of the top ``k`` triplets, by a randomized
          range finder on ``jvp``/``vjp`` products: ``2q + 3`` blocks of
          ``k + oversample`` products per input and block (``q`` power iterations,
          at most 7, or 4 when ``k >= d / 10``; fewer once every triplet passes the
          residual test ``|J v_i - s_i u_i| <= sqrt(eps) s_1``). Stored memory
          ``O(L N d k)``; working memory the block's activations for
          ``batch_size * (k + oversample)`` probes. No ``d x d`` matrix is formed.
        - ``"auto"``: ``"dense"`` when ``d <= 1024`` and ``L N d^2`` values take at most
          1 GiB, else ``"matrix_free"``.
    seed : int, SeedSequence, numpy Generator or None, default 0
        Seed of the range finder's Gaussian test matrix (one matrix, reused for every
        block and input, so results do not depend on ``batch_size``).
    oversample, power_iters
        Of the range finder, as in :func:`ramodel.spectra.top_singular`.

    Returns
    -------
    JacobianSet
        The set written to ``path``, with ``representations (L+1, N, d)``, ``skips``
        ``(L, d, d)`` when some ``M_l`` is not the identity and ``d`` is small enough
        (see ``meta["skips"]``), and ``classifier`` when found.

    Raises
    ------
    FileNotFoundError
        If the folder of ``path`` does not exist.
    ValueError
        For non-finite inputs, labels outside ``[0, C)``, inputs and labels of
        different lengths, blocks that are not submodules, not reached, run twice,
        listed out of order, or not shape-preserving, an invalid ``k``, ``method``,
        ``dtype`` or ``batch_size``. Nothing is written.
    TypeError
        For arguments of the wrong type, or a ``block.skip`` of unknown protocol.

    Warns
    -----
    UserWarning
        When the input of block ``l+1`` is not the output of block ``l`` (something
        runs between them; ``J_l`` is still taken at block ``l``'s own input), and
        when a matrix-free triplet did not converge (``meta["max_relative_residual"]``).

    Notes
    -----
    **For best performance**: keep ``method="auto"``; everything, the range finder
    included, runs on the model's device; raise ``batch_size`` until memory is the
    limit (on the ``bench_export.py`` conv block, d = 4096, k = 10: about 100 MiB of
    working memory for 4 inputs per batch, 40 MiB for 1). Check
    ``meta["max_relative_residual"]``: a flat top spectrum (e.g. an untrained
    network) leaves the top-k subspace ill-defined and the range finder
    unconverged, and a warning says so.

    Examples
    --------
    >>> import os, tempfile, torch
    >>> from torch import nn
    >>> class Block(nn.Module):
    ...     def __init__(self, d):
    ...         super().__init__()
    ...         self.lin = nn.Linear(d, d)
    ...         self.skip = None           # declares the identity skip: h + F(h)
    ...     def forward(self, h):
    ...         return h + torch.tanh(self.lin(h))
    >>> class Net(nn.Module):
    ...     def __init__(self, d=6, L=3, C=3):
    ...         super().__init__()
    ...         self.blocks = nn.Sequential(*[Block(d) for _ in range(L)])
    ...         self.fc = nn.Linear(d, C)
    ...     def forward(self, x):
    ...         return self.fc(self.blocks(x))
    >>> _ = torch.manual_seed(0)
    >>> net = Net()
    >>> x, y = torch.randn(5, 6), torch.tensor([0, 1, 2, 0, 1])
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     js = export_jacobians(net, x, y, os.path.join(tmp, "net.npz"))
    ...     loaded = JacobianSet.load(os.path.join(tmp, "net.npz"))
    >>> js.jacobians.shape, js.representations.shape, js.classifier.shape
    ((3, 5, 6, 6), (4, 5, 6), (3, 6))
    >>> js.meta["blocks"], js.meta["method"], net.training
    (['blocks.0', 'blocks.1', 'blocks.2'], 'dense', True)
    """
    # Cheap checks first (the destination before anything heavy runs), then
    # compute_jacobians, then the one atomic save.
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    out_path = _check_path(path)
    js = _compute_jacobians(model, inputs, labels, blocks=blocks, k=k, classes=classes, skips=skips,
                            classifier=classifier, meta=meta, batch_size=batch_size, dtype=dtype, method=method,
                            seed=seed, oversample=oversample, power_iters=power_iters, residual=residual)
    js.save(out_path)
    return js


def _resolve_classifier(classifier, model, C, d, dtype_name):
    if classifier is not None:
        if isinstance(classifier, nn.Linear):
            W = classifier.weight
        else:
            W = classifier
        if isinstance(W, torch.Tensor):
            W = W.detach().to("cpu", torch.float64).numpy()
        W = np.asarray(W, dtype=np.float64)
        if W.shape != (C, d):
            raise ValueError(f"classifier must have shape (C, d) = ({C}, {d}), got {W.shape}")
        if not np.isfinite(W).all():
            raise ValueError("classifier must be finite, but it holds NaN or Inf")
        return W.astype(dtype_name), "given"
    for attr in ("classifier", "fc"):
        head = getattr(model, attr, None)
        if isinstance(head, nn.Linear):
            if head.in_features == d and head.out_features == C:
                return head.weight.detach().to("cpu", torch.float64).numpy().astype(dtype_name), f"model.{attr}"
            return None, (
                f"not stored: model.{attr} maps {head.in_features} -> {head.out_features} features, "
                f"not d = {d} -> C = {C} (pooling or other layers sit in between)"
            )
    return None, "not stored: no classifier given and no nn.Linear model.classifier / model.fc"
