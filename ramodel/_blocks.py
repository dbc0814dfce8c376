"""The residual-block protocol shared by the export and the refinement measures.

Design constraints, first: :mod:`ramodel.torch` (Jacobian export) and
:mod:`ramodel.refinement` (iterative-refinement measures) run a user's network the same
way; what they share lives here once: resolving the blocks (:func:`resolve_blocks`),
the eval-mode guard (:func:`eval_mode`) and the recorder of block calls
(:class:`BlockRecorder`). This module imports nothing from torch at import time, so
:mod:`ramodel.refinement`'s array measures stay usable without it. (Skip discovery, which
reads a block's skip matrix, lives in :mod:`ramodel.torch`; the refinement measures call
a block's ``skip`` module instead.)
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

__all__ = ["BlockRecorder", "eval_mode", "resolve_blocks"]


@contextmanager
def eval_mode(module: Any):
    """Eval mode inside; every submodule's own ``training`` flag restored after (also on error)."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def resolve_blocks(model: Any, blocks: Any) -> tuple[list, list[str]]:
    """The residual blocks of ``model`` and their qualified names, in the order given.

    ``blocks`` None means ``model.blocks``; one module (not a ``ModuleList`` or
    ``Sequential``) is one block. Each must be a distinct submodule of ``model`` (not
    the model itself, not a copy).
    """
    from torch import nn

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if blocks is None:
        blocks = getattr(model, "blocks", None)
        if blocks is None:
            raise ValueError(
                f"{type(model).__name__} has no attribute 'blocks': pass blocks=[...] (the residual "
                "block modules, in forward order)"
            )
    if isinstance(blocks, nn.Module) and not isinstance(blocks, (nn.ModuleList, nn.Sequential)):
        blocks = [blocks]
    blocks = list(blocks)
    if not blocks:
        raise ValueError("blocks must hold at least one residual block, got none")
    names_of = {}
    for name, m in model.named_modules(remove_duplicate=False):
        names_of.setdefault(id(m), name)
    names = []
    for i, b in enumerate(blocks):
        if not isinstance(b, nn.Module):
            raise TypeError(f"blocks[{i}] must be a torch.nn.Module, got {type(b).__name__}")
        if id(b) not in names_of:
            raise ValueError(
                f"blocks[{i}] ({type(b).__name__}) is not a submodule of the model: pass the model's own "
                "block modules (e.g. model.layer1[0]), not copies"
            )
        if b is model:
            raise ValueError(f"blocks[{i}] is the model itself; pass its residual blocks")
        names.append(names_of[id(b)])
    if len({id(b) for b in blocks}) != len(blocks):
        raise ValueError(f"blocks must be distinct modules, got repeats among {names}")
    return blocks, names


class BlockRecorder:
    """Forward hooks on the residual blocks that record their calls in one forward pass.

    Installed on ``with`` and removed on exit (also on error). :meth:`reset` before each
    pass. ``order`` holds the block index of each call, in call order.

    Parameters
    ----------
    blocks : list of nn.Module
    names : list of str, optional
        The blocks' names for error messages (default ``"0"``, ``"1"``, ...).
    strict : bool, default True
        The export's blocks (FORMAT.md): each block runs once per pass, with one tensor
        argument, and returns a tensor of its input's shape; :meth:`check` asks that
        every block ran, in the order listed. ``inputs[i]`` and ``outputs[i]`` are
        detached clones (a later in-place op such as ``ReLU(inplace=True)`` cannot
        overwrite them). With ``strict=False`` (the refinement measures) a block may run
        any number of times (a recurrent cell); ``calls`` holds ``(h, F, out)`` for each
        call, as the forward pass made them (in the autograd graph): ``h`` the first
        positional argument, ``F`` the output of ``block.branch`` (``branch=True``; else
        None), ``out`` the block's output.
    branch : bool, default False
        Record ``block.branch``'s output (``strict=False`` only).

    Attributes
    ----------
    replace_at : int or None
        ``strict=False`` only: the call (position in the pass) whose output is replaced by
        ``block.skip(h)``, the block lesioned; None replaces nothing.
    """

    def __init__(self, blocks: list, names: list[str] | None = None, *, strict: bool = True, branch: bool = False):
        import torch

        self._tensor = torch.Tensor
        self.blocks = list(blocks)
        self.names = [str(i) for i in range(len(self.blocks))] if names is None else list(names)
        self.strict, self.branch = strict, branch
        if strict and branch:
            raise ValueError("branch=True needs strict=False")
        self.index = {id(b): i for i, b in enumerate(self.blocks)}
        self.replace_at: int | None = None
        self.handles: list = []
        self.reset()

    def reset(self) -> None:
        """Forget the calls recorded so far (call before each forward pass)."""
        self.order: list[int] = []
        self.inputs: dict[int, Any] = {}
        self.outputs: dict[int, Any] = {}
        self.calls: list[tuple] = []
        self._pending: dict[int, Any] = {}

    def __enter__(self):
        for b in self.blocks:
            if self.strict:
                self.handles.append(b.register_forward_pre_hook(self._pre, with_kwargs=True))
                self.handles.append(b.register_forward_hook(self._post))
            else:
                if self.branch:
                    self.handles.append(b.branch.register_forward_hook(self._branch_output))
                self.handles.append(b.register_forward_hook(self._call))
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.handles = []
        if not self.strict:
            self.reset()  # drop the references into the autograd graph

    # ---- strict: the export's blocks
    def _pre(self, module, args, kwargs):
        i = self.index[id(module)]
        name = self.names[i]
        self.order.append(i)
        if i in self.inputs:
            raise ValueError(f"block {name!r} runs more than once per forward pass; list each call site's block once")
        if kwargs or len(args) != 1 or not isinstance(args[0], self._tensor):
            raise ValueError(
                f"block {name!r} must be called with one tensor argument (its features h), got "
                f"{len(args)} positional and {len(kwargs)} keyword argument(s)"
            )
        # Clones: a later in-place op (ReLU(inplace=True)) could overwrite these.
        self.inputs[i] = args[0].detach().clone()

    def _post(self, module, args, output):
        i = self.index[id(module)]
        name = self.names[i]
        if not isinstance(output, self._tensor):
            raise ValueError(f"block {name!r} must return one tensor, got {type(output).__name__}")
        if output.shape != self.inputs[i].shape:
            raise ValueError(
                f"block {name!r} maps features of shape {tuple(self.inputs[i].shape[1:])} to "
                f"{tuple(output.shape[1:])}: it is not a residual block in the sense of FORMAT.md "
                "(downsampling or width change); leave it out of blocks"
            )
        self.outputs[i] = output.detach().clone()

    def check(self) -> None:
        """Raise unless every block ran, in the order listed (``strict=True``)."""
        L = len(self.blocks)
        missing = [self.names[i] for i in range(L) if i not in self.inputs]
        if missing:
            raise ValueError(f"blocks {missing} were not reached by the forward pass of the model")
        if self.order != list(range(L)):
            order = [self.names[i] for i in self.order]
            raise ValueError(f"blocks must be listed in forward order; the forward pass runs them as {order}")

    # ---- not strict: every call, in the graph
    def _branch_output(self, module, args, out):
        self._pending[id(module)] = out

    def _call(self, module, args, out):
        position = len(self.calls)
        h = args[0]
        self.order.append(self.index[id(module)])
        self.calls.append((h, self._pending.pop(id(module.branch)) if self.branch else None, out))
        if self.replace_at == position:
            return module.skip(h)
        return None
