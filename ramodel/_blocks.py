"""The part of the residual-block protocol that needs no torch import.

Design constraints, first: :mod:`ramodel.torch` (Jacobian export) and
:mod:`ramodel.refinement` (iterative-refinement measures) run a user's network the same
way; what they share lives here once. This module imports nothing from torch, so
:mod:`ramodel.refinement`'s array measures stay usable without it.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

__all__ = ["eval_mode", "resolve_blocks"]


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
