"""The recorder of the export: each block's input and output for one forward pass.

One forward pass of the model with hooks on the listed blocks; a block must be
called once per pass, with one tensor, in the order listed, and keep its feature
shape (FORMAT.md's residual block). The hooks are removed on exit, also on error.
"""

from __future__ import annotations

import torch
from torch import nn


class _Recorder:
    """Forward hooks that record each block's input and output for one batch."""

    def __init__(self, blocks: list[nn.Module], names: list[str]):
        self.blocks, self.names = blocks, names
        self.index = {id(b): i for i, b in enumerate(blocks)}
        self.handles = []
        self.reset()

    def reset(self):
        self.calls: list[int] = []
        self.inputs: dict[int, torch.Tensor] = {}
        self.outputs: dict[int, torch.Tensor] = {}

    def __enter__(self):
        for b in self.blocks:
            self.handles.append(b.register_forward_pre_hook(self._pre, with_kwargs=True))
            self.handles.append(b.register_forward_hook(self._post))
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.handles = []

    def _pre(self, module, args, kwargs):
        i = self.index[id(module)]
        name = self.names[i]
        self.calls.append(i)
        if i in self.inputs:
            raise ValueError(f"block {name!r} runs more than once per forward pass; list each call site's block once")
        if kwargs or len(args) != 1 or not isinstance(args[0], torch.Tensor):
            raise ValueError(
                f"block {name!r} must be called with one tensor argument (its features h), got "
                f"{len(args)} positional and {len(kwargs)} keyword argument(s)"
            )
        # Clones: a later in-place op (ReLU(inplace=True)) could overwrite these.
        self.inputs[i] = args[0].detach().clone()

    def _post(self, module, args, output):
        i = self.index[id(module)]
        name = self.names[i]
        if not isinstance(output, torch.Tensor):
            raise ValueError(f"block {name!r} must return one tensor, got {type(output).__name__}")
        if output.shape != self.inputs[i].shape:
            raise ValueError(
                f"block {name!r} maps features of shape {tuple(self.inputs[i].shape[1:])} to "
                f"{tuple(output.shape[1:])}: it is not a residual block in the sense of FORMAT.md "
                "(downsampling or width change); leave it out of blocks"
            )
        self.outputs[i] = output.detach().clone()

    def check(self):
        L = len(self.blocks)
        missing = [self.names[i] for i in range(L) if i not in self.inputs]
        if missing:
            raise ValueError(f"blocks {missing} were not reached by the forward pass of the model")
        if self.calls != list(range(L)):
            order = [self.names[i] for i in self.calls]
            raise ValueError(f"blocks must be listed in forward order; the forward pass runs them as {order}")
