"""The part of the residual-block protocol that needs no torch import.

Design constraints, first: :mod:`ramodel.torch` (Jacobian export) and
:mod:`ramodel.refinement` (iterative-refinement measures) run a user's network the same
way; what they share lives here once. This module imports nothing from torch, so
:mod:`ramodel.refinement`'s array measures stay usable without it.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

__all__ = ["eval_mode"]


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
