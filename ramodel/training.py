"""Train and evaluate the PyTorch networks of :mod:`ramodel.nets` on a :class:`~ramodel.datasets.Dataset`.

Design constraints, in order:

1. Reproducible: a seed fixes the shuffling and the stochastic-depth masks, and a run
   resumed from a checkpoint ends with exactly the weights of an uninterrupted run.
   Same seed, same machine, same torch build and same thread count
   (``torch.get_num_threads()``) give bitwise the same weights; a different thread
   count may change the order of floating-point reductions and hence the last bits.
   A ``callback`` runs under a forked RNG, so measuring during training does not
   change the run.
2. Plain PyTorch: SGD with momentum and weight decay (coupled L2 or decoupled), a
   learning rate with linear warmup then cosine, step or constant, stepped once per
   batch; optional gradient-norm clipping; cross-entropy or squared loss.
3. The data set is small and lives in memory: batches are index slices of whole
   tensors, shuffled with ``torch.randperm`` and a seeded ``torch.Generator`` (a
   ``DataLoader`` would index and collate sample by sample, a Python loop over
   samples, for no gain here).
4. Checkpoints are written atomically (temporary file in the same folder, then
   ``os.replace``) and read with ``torch.load(..., weights_only=True)``: no pickle.
5. The caller's global torch RNG state is restored when :func:`train` returns.
6. Honest about the regime: the result carries ``init_cosine``, the cosine between
   the final and the initial branch weights, and :func:`train` warns
   (:class:`InitialisationWarning`) when it ends above 0.5. With SGD and weight decay
   ``lambda`` the part of the weights left from the initialisation shrinks roughly like
   ``(1 - lr_eff lambda)^steps``; RA measured before it is gone is a measurement of the
   random initialisation. ``protocol="terminal"`` (:data:`PROTOCOLS`) is a set of
   defaults measured to remove it on digits and MNIST-5k within minutes on a CPU.
"""

from __future__ import annotations

import math
import os
import time
import types
import warnings
from dataclasses import dataclass, fields

import numpy as np

try:
    import torch
    from torch import nn
    from torch.nn import functional
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError(f"ramodel.training needs PyTorch ({exc}); install it with: pip install 'ramodel[torch]'") from exc

from ._io import atomic_write
from ._progress import progress_bar
from ._validation import check_choice, check_int, check_positive_float
from .optimize import DivergenceError

__all__ = [
    "CHECKPOINT_FORMAT",
    "DECAY_ON",
    "LOSSES",
    "PROTOCOLS",
    "SCHEDULES",
    "InitialisationWarning",
    "TrainResult",
    "TrainStep",
    "TrainedExport",
    "branch_weights",
    "check_export",
    "evaluate",
    "init_cosine",
    "train",
    "train_and_export",
]

SCHEDULES = ("cosine", "step", "constant")
LOSSES = ("cross_entropy", "mse")
DECAY_ON = ("all", "weights")
CHECKPOINT_FORMAT = "ramodel.checkpoint/2"
#: Settings that must match for a checkpoint to be resumed (they fix the run).
_RUN_SETTINGS = ("epochs", "steps", "batch_size", "lr", "momentum", "weight_decay", "schedule", "warmup",
                 "grad_clip", "decoupled_decay", "decay_on", "seed", "loss", "n_train")
#: Above this final init_cosine the run warns (RA would be measured on the initialisation).
INIT_COSINE_WARNING = 0.5

#: Defaults of each protocol; an option passed explicitly to :func:`train` overrides them.
#:
#: ``"default"``: the short protocol of earlier releases (10 epochs in the CLI, lr 0.1,
#: batch 128, coupled weight decay 5e-4, cosine, no warmup, no clipping). On digits and
#: MNIST-5k such short runs end with branch weights at cosine 0.8-0.9 with their
#: initialisation (0.81 / 0.86 after 30 / 15 epochs at batch 64, depth 8).
#:
#: ``"terminal"``: reaches the regime where weight decay has removed the initialisation
#: (``init_cosine <= 0.25``) on digits and MNIST-5k in seconds to minutes on one CPU core.
#: Measured with bias-free ``ResidualMLP`` (width 32-64, depth 4-32, seed 0), see
#: ``simulations/RESULTS_trained.md``. Each value and why:
#:
#: - ``steps=3000``: the length is counted in optimizer steps, not epochs, because the
#:   decay acts per step; 3000 steps at the rates below bring init_cosine from 1 to
#:   0.18-0.23 with identity skips at width 32 (digits and MNIST-5k, depth 4-32; 0.11-0.15
#:   at width 64-128) and cost 5 s (depth 8) to 14 s (depth 32) on digits on one idle core.
#: - ``batch_size=256``: large batches on these small sets (5 steps per epoch on digits,
#:   16 on MNIST-5k) make each step cheap relative to Python overhead and the gradient
#:   less noisy, so a large lr is stable.
#: - ``lr=0.1`` with ``momentum=0.9``: the effective step ``lr / (1 - momentum) = 1``
#:   times ``weight_decay`` sets the decay rate per step (1e-2 here).
#: - ``weight_decay=1e-2`` (coupled L2 on every parameter): 5e-3 needs about twice the
#:   steps for the same init_cosine (0.22 after 6000 steps at lr 0.1); 5e-2 drives the
#:   branches to zero instead, which is not RA.
#: - ``warmup=0.05``: a fraction, 5 % of the steps (150 of 3000) of linear warmup: the large
#:   lr on a fresh deep net otherwise spikes the loss in the first steps. (A protocol's
#:   ``warmup`` below 1 is a fraction of the run's steps; the ``warmup`` argument of
#:   :func:`train` is always a number of steps.)
#: - ``schedule="cosine"``: anneals to 0, so the end point is a converged network.
#: - ``grad_clip=5.0`` (global gradient norm): a safeguard against loss spikes at lr 0.1 in
#:   deep nets; how often it is active was not recorded, and the study ran with it.
PROTOCOLS = types.MappingProxyType({
    "default": types.MappingProxyType({
        "steps": None, "batch_size": 128, "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "cosine",
        "warmup": 0, "grad_clip": None, "decoupled_decay": False, "decay_on": "all",
    }),
    "terminal": types.MappingProxyType({
        "steps": 3000, "batch_size": 256, "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-2, "schedule": "cosine",
        "warmup": 0.05, "grad_clip": 5.0, "decoupled_decay": False, "decay_on": "all",
    }),
})  # fmt: skip


class InitialisationWarning(UserWarning):
    """Training ended with branch weights still close to their initialisation (``init_cosine > 0.5``)."""


class _Unset:
    def __repr__(self) -> str:
        return "<protocol default>"


_UNSET = _Unset()


@dataclass(frozen=True)
class TrainResult:
    """History and outcome of :func:`train`.

    Attributes
    ----------
    loss : tuple of float, one per epoch
        Mean training loss of each epoch (over its batches, weighted by size). With
        ``steps=`` the last epoch may be partial.
    train_accuracy : tuple of float, one per epoch
        Accuracy on the epoch's training batches as they were seen (train mode, so with
        stochastic depth and BatchNorm batch statistics).
    test_accuracy : tuple of float or None, one per epoch
        Test accuracy (eval mode) after the epochs where it was evaluated (every
        ``eval_every`` epochs, and always the last), None elsewhere.
    lr : tuple of float, one per epoch
        Learning rate at the start of each epoch.
    lr_steps : tuple of float, one per step
        Learning rate used by every optimizer step.
    final_train_accuracy : float
        Eval-mode accuracy on the whole training split at the end.
    final_test_accuracy : float
        Eval-mode accuracy on the test split at the end.
    seconds : float
        Wall-clock time of this call.
    epochs : int
        Epochs completed in total (the history's length).
    epochs_run : int
        Epochs run by this call (fewer than ``epochs`` after a resume).
    steps : int
        Optimizer steps in total.
    steps_run : int
        Steps run by this call.
    init_cosine : float
        Cosine between the final and the initial branch weights, all blocks together
        (:func:`init_cosine`): 1 at the start; near 1 means the weights are still
        mostly their random initialisation.
    init_cosine_blocks : tuple of float
        The same per residual block.
    settings : mapping
        The resolved training options (protocol defaults filled in), as a read-only
        mapping; ``protocol`` names the protocol.
    """

    loss: tuple[float, ...]
    train_accuracy: tuple[float, ...]
    test_accuracy: tuple[float | None, ...]
    lr: tuple[float, ...]
    lr_steps: tuple[float, ...]
    final_train_accuracy: float
    final_test_accuracy: float
    seconds: float
    epochs: int
    epochs_run: int
    steps: int
    steps_run: int
    init_cosine: float
    init_cosine_blocks: tuple[float, ...]
    settings: types.MappingProxyType

    def to_dict(self, *, lr_steps: bool = True) -> dict:
        """Plain-Python copy (lists for the histories), JSON-serialisable.

        ``lr_steps=False`` leaves out the per-step learning rates (long for long runs).
        """
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "lr_steps" and not lr_steps:
                continue
            out[f.name] = dict(v) if isinstance(v, types.MappingProxyType) else list(v) if isinstance(v, tuple) else v
        return out


@dataclass(frozen=True)
class TrainStep:
    """What a :func:`train` callback receives.

    Attributes
    ----------
    step : int
        Optimizer steps done (0: before the first).
    epoch : int
        Epochs completed before this step's epoch (0-based epoch of the step).
    lr : float
        Learning rate of the last step (of the first, at step 0).
    loss : float or None
        Loss of the last batch (None at step 0).
    init_cosine : float
        :func:`init_cosine` of the model now, all blocks together.
    init_cosine_blocks : tuple of float
    model : nn.Module
        The model, in eval mode during the call (restored afterwards). Do not change
        its parameters.
    """

    step: int
    epoch: int
    lr: float
    loss: float | None
    init_cosine: float
    init_cosine_blocks: tuple[float, ...]
    model: nn.Module


# ------------------------------------------------------------------------- helpers


def _model_dtype_device(model: nn.Module) -> tuple[torch.dtype, torch.device]:
    for p in model.parameters():
        return p.dtype, p.device
    raise ValueError("model has no parameters to train")


def _as_tensor(name: str, a, *, dtype, device) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a.detach().to(device=device, dtype=dtype)
    return torch.tensor(np.asarray(a), device=device, dtype=dtype)  # a copy: Dataset arrays are read-only


def _inputs(model: nn.Module, dataset, split: str, *, dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` of one split as tensors; images reshaped to ``(N, 1, H, W)`` for image models."""
    x = _as_tensor(f"dataset.x_{split}", getattr(dataset, f"x_{split}"), dtype=dtype, device=device)
    y = _as_tensor(f"dataset.y_{split}", getattr(dataset, f"y_{split}"), dtype=torch.long, device=device)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"dataset.x_{split} must be (N, d) and y_{split} (N,), got {tuple(x.shape)} and {tuple(y.shape)}")
    if getattr(model, "expects_images", False):
        shape = dataset.image_shape
        if shape is None:
            name = getattr(dataset, "name", type(dataset).__name__)
            raise ValueError(f"{type(model).__name__} needs images, but dataset {name!r} has image_shape=None")
        shape = (1, *shape) if len(shape) == 2 else tuple(shape)
        x = x.reshape(x.shape[0], *shape)
    return x, y


def _check_dataset(dataset) -> None:
    missing = [a for a in ("x_train", "y_train", "x_test", "y_test", "classes", "image_shape") if not hasattr(dataset, a)]
    if missing:
        raise TypeError(f"dataset must be a ramodel.datasets.Dataset, got {type(dataset).__name__} (missing {missing})")
    for split in ("train", "test"):
        y = np.asarray(getattr(dataset, f"y_{split}"))
        if y.size and (y.min() < 0 or y.max() >= dataset.classes):
            raise ValueError(f"dataset.y_{split} must hold labels in [0, {dataset.classes}), got [{y.min()}, {y.max()}]")


def _batches(n: int, batch_size: int, perm: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Index batches; a trailing batch of one sample is dropped (BatchNorm cannot train on it)."""
    batches = perm.split(batch_size)
    return batches[:-1] if len(batches) > 1 and len(batches[-1]) == 1 else batches


def _loss(kind: str, logits: torch.Tensor, y: torch.Tensor, classes: int) -> torch.Tensor:
    if logits.ndim != 2 or logits.shape[1] != classes:
        raise ValueError(f"model must output logits of shape (batch, {classes}) for this dataset, got {tuple(logits.shape)}")
    if kind == "cross_entropy":
        return functional.cross_entropy(logits, y)
    # Squared loss to one-hot targets, summed over classes and averaged over the batch.
    target = functional.one_hot(y, classes).to(logits.dtype)
    return (logits - target).square().sum(dim=1).mean()


def _lr_factor(kind: str, warmup: int, total_steps: int):
    """Multiplier of the base lr at step ``s`` (0-based): linear warmup, then the schedule.

    Warmup: ``(s + 1) / warmup`` for ``s < warmup`` (never 0). After it, over the
    ``T = total_steps - warmup`` remaining steps, ``t = s - warmup``: cosine
    ``(1 + cos(pi t / T)) / 2``; step ``0.1`` from ``t = T // 2`` and ``0.01`` from
    ``t = 3 T // 4`` (each at least 1); constant ``1``.
    """
    T = max(1, total_steps - warmup)
    milestones = sorted({max(1, T // 2), max(1, (3 * T) // 4)})

    def factor(s: int) -> float:
        if s < warmup:
            return (s + 1) / warmup
        t = s - warmup
        if kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(t, T) / T))
        if kind == "step":
            return 0.1 ** sum(t >= m for m in milestones)
        return 1.0

    return factor


# ------------------------------------------------------------------ init cosine


def _branch_params(model: nn.Module) -> list[list[torch.Tensor]]:
    """Weights (parameters with >= 2 dimensions) of each block's branch; see :func:`branch_weights`."""
    blocks = getattr(model, "blocks", None)
    groups = [model] if blocks is None else [getattr(b, "branch", b) for b in blocks]
    out = []
    for g in groups:
        params = list(g.parameters())
        weights = [p for p in params if p.ndim >= 2]
        out.append(weights or params)
    if not any(out):
        raise ValueError("model has no branch parameters to compare with their initialisation")
    return out


def branch_weights(model: nn.Module) -> list[torch.Tensor]:
    """Flat float64 copies of each residual block's branch weights.

    For a model with ``model.blocks`` (every net of :mod:`ramodel.nets`): one vector per
    block, the concatenation of the parameters of ``block.branch`` (the block itself if it
    has no ``branch``) with two or more dimensions, i.e. the linear and convolution
    weights; biases and normalisation gains and shifts are left out (they are not
    initialised at random). A block without such weights contributes all its
    parameters. A model without ``blocks`` gives one vector of all its weights.

    Parameters
    ----------
    model : nn.Module

    Returns
    -------
    list of Tensor
        Detached, on the CPU, float64.

    Examples
    --------
    >>> from ramodel.nets import ResidualMLP
    >>> net = ResidualMLP(4, 2, width=3, depth=2, hidden=5, init_seed=0)
    >>> [tuple(w.shape) for w in branch_weights(net)]   # W_1 (5x3) and W_2 (3x5) per block
    [(30,), (30,)]
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return [torch.cat([p.detach().reshape(-1).to("cpu", torch.float64) for p in ps]) for ps in _branch_params(model)]


def init_cosine(model: nn.Module, initial) -> tuple[float, tuple[float, ...]]:
    """Cosine between a model's branch weights now and ``initial`` (from :func:`branch_weights`).

    ``cos = <w, w_0> / (|w| |w_0|)``, per block and for all blocks concatenated. 1 before
    training; weight decay removes the initial component, so it falls towards the
    (small) cosine of two unrelated vectors. NaN where a norm is 0.

    Parameters
    ----------
    model : nn.Module
    initial : list of Tensor
        ``branch_weights(model)`` taken at initialisation.

    Returns
    -------
    (overall, per_block) : (float, tuple of float)

    Examples
    --------
    >>> import torch
    >>> from ramodel.nets import ResidualMLP
    >>> net = ResidualMLP(4, 2, width=3, depth=2, init_seed=0)
    >>> w0 = branch_weights(net)
    >>> init_cosine(net, w0)[0]
    1.0
    >>> with torch.no_grad():
    ...     _ = net.blocks[0].branch[0].weight.neg_()
    >>> -1.0 < init_cosine(net, w0)[1][0] < 1.0
    True
    """
    now = branch_weights(model)
    if not isinstance(initial, (list, tuple)) or len(initial) != len(now):
        raise ValueError(f"initial must be a list of {len(now)} vectors from branch_weights(model), got {type(initial).__name__}")
    initial = [torch.as_tensor(w, dtype=torch.float64).reshape(-1).cpu() for w in initial]
    for i, (a, b) in enumerate(zip(now, initial)):
        if a.shape != b.shape:
            raise ValueError(f"initial[{i}] has {b.numel()} entries, but block {i} has {a.numel()} branch weights")

    def cos(a, b):
        den = float(a.norm() * b.norm())
        return float(torch.dot(a, b)) / den if den > 0 else float("nan")

    per_block = tuple(min(1.0, max(-1.0, cos(a, b))) for a, b in zip(now, initial))
    overall = min(1.0, max(-1.0, cos(torch.cat(now), torch.cat(initial))))
    return overall, per_block


def _save(path: str, state: dict) -> None:
    atomic_write(path, lambda f: torch.save(state, f), action="save the checkpoint to", argument="checkpoint")


def _load(path: str, device: torch.device, settings: dict) -> dict:
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:
        raise ValueError(f"checkpoint {path!r} could not be read ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint {path!r} is not a {CHECKPOINT_FORMAT!r} file")
    saved = state["settings"]
    for key in _RUN_SETTINGS:
        if saved.get(key) != settings[key]:
            raise ValueError(
                f"checkpoint {path!r} was written with {key}={saved.get(key)!r}, but this call has "
                f"{key}={settings[key]!r}; resume with the same settings or start a new checkpoint"
            )
    return state


# --------------------------------------------------------------------------- public


@torch.no_grad()
def evaluate(model: nn.Module, x, y, *, batch_size: int = 1024) -> float:
    """Accuracy of ``model`` in eval mode.

    Parameters
    ----------
    model : nn.Module
        Maps ``x`` to logits ``(N, C)``. Its train/eval mode is restored afterwards.
    x : tensor or array, shape (N, ...)
        Inputs as the model takes them (``(N, 1, H, W)`` for a ConvResNet); moved to the
        model's device and dtype.
    y : tensor or array, shape (N,)
        Integer labels.
    batch_size : int, default 1024
        Evaluated in chunks of this many samples, to bound memory.

    Returns
    -------
    float
        Fraction of ``argmax(logits) == y``, in [0, 1].

    Examples
    --------
    >>> import torch
    >>> from ramodel.nets import ResidualMLP
    >>> net = ResidualMLP(4, 2, width=4, depth=1, init_seed=0)
    >>> 0.0 <= evaluate(net, torch.randn(10, 4), torch.zeros(10, dtype=torch.long)) <= 1.0
    True
    """
    batch_size = check_int("batch_size", batch_size, minimum=1)
    dtype, device = _model_dtype_device(model)
    x = _as_tensor("x", x, dtype=dtype, device=device)
    y = _as_tensor("y", y, dtype=torch.long, device=device)
    if y.ndim != 1 or x.shape[:1] != y.shape or len(y) == 0:
        raise ValueError(f"x must be (N, ...) and y (N,) with N >= 1, got {tuple(x.shape)} and {tuple(y.shape)}")
    was_training = model.training
    model.eval()
    try:
        correct = sum(int((model(xb).argmax(dim=1) == yb).sum()) for xb, yb in zip(x.split(batch_size), y.split(batch_size)))
    finally:
        model.train(was_training)
    return correct / len(y)


def train(
    model: nn.Module,
    dataset,
    *,
    epochs: int | None = None,
    steps: int | None = None,
    protocol: str = "default",
    batch_size=_UNSET,
    lr=_UNSET,
    momentum=_UNSET,
    weight_decay=_UNSET,
    schedule=_UNSET,
    warmup=_UNSET,
    grad_clip=_UNSET,
    decoupled_decay=_UNSET,
    decay_on=_UNSET,
    seed: int = 0,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    checkpoint_every: int | None = None,
    eval_every: int | None = None,
    callback=None,
    every: int | None = None,
    progress: bool | None = None,
    device="cpu",
    loss: str = "cross_entropy",
) -> TrainResult:
    """Train ``model`` in place on ``dataset`` with SGD; return the history.

    Options left out take the values of ``protocol`` (:data:`PROTOCOLS`, where each
    default of ``"terminal"`` says why); an option passed explicitly always wins.

    Parameters
    ----------
    model : nn.Module
        E.g. :class:`ramodel.nets.ResidualMLP` (flat inputs ``(N, d)``) or
        :class:`ramodel.nets.ConvResNet`; a model with ``expects_images = True`` gets
        the split's rows reshaped to ``(N, 1, H, W)`` from ``dataset.image_shape``
        (``(N, C, H, W)`` for a 3-tuple). Moved to ``device``; left in eval mode.
    dataset : ramodel.datasets.Dataset
        Float features are cast to the model's parameter dtype.
    epochs : int, optional
        Length in passes over the training split, >= 1 (with ``resume``, the total
        including those already done). Give ``epochs`` or ``steps``, not both.
    steps : int, optional
        Length in optimizer steps, >= 1; the last epoch may then be partial. Default:
        the protocol's (``"terminal"``: 3000; ``"default"`` has none, so ``epochs`` or
        ``steps`` is required).
    protocol : {"default", "terminal"}, default "default"
        The set of defaults for the options below (:data:`PROTOCOLS`).
    batch_size : int, default 128 ("terminal": 256)
        A trailing batch of a single sample is dropped each epoch (BatchNorm cannot
        use it).
    lr : float, default 0.1
        Peak learning rate, > 0.
    momentum : float, default 0.9
        SGD momentum, in [0, 1).
    weight_decay : float, default 5e-4 ("terminal": 1e-2)
        Weight-decay coefficient lambda, >= 0.
    schedule : {"cosine", "step", "constant"}, default "cosine"
        After the warmup, over the remaining steps: cosine annealing from ``lr`` to 0;
        ``lr / 10`` after 1/2 and ``lr / 100`` after 3/4 of them; or constant ``lr``.
        Stepped after every batch.
    warmup : int, default 0 ("terminal": 5 % of the steps, 150 of 3000)
        Linear warmup steps: step ``s < warmup`` uses ``lr (s + 1) / warmup``.
    grad_clip : float or None, default None ("terminal": 5.0)
        Clip the global gradient norm to this value before each step; None: no
        clipping.
    decoupled_decay : bool, default False
        False: PyTorch's coupled L2 (``lambda w`` added to the gradient, so it goes
        through momentum). True: decoupled decay, ``w <- (1 - lr_t lambda) w`` before
        each step with the scheduled ``lr_t``, outside momentum.
    decay_on : {"all", "weights"}, default "all"
        Decay every parameter, or only the weights (parameters with two or more
        dimensions: linear and convolution weights, not biases or normalisation
        gains and shifts).
    seed : int, default 0
        Seeds the shuffling generator and the global torch generator used by
        stochastic depth (two independent streams derived from it). Weights come
        from the model's construction (see ``init_seed`` in :mod:`ramodel.nets`).
    checkpoint : path, optional
        Written atomically at the end of epochs: model, optimizer, scheduler, epoch,
        step, RNG states, settings, history and the initial branch weights.
    resume : bool, default False
        Continue from ``checkpoint`` if that file exists (its settings must equal this
        call's; the model's state is loaded from it); start afresh if it does not.
        Without ``resume`` an existing checkpoint is overwritten.
    checkpoint_every : int, optional
        Write the checkpoint at the end of the first epoch after every
        ``checkpoint_every`` steps (and at the end) instead of after every epoch; for
        step-counted runs with short epochs.
    eval_every : int, optional
        Evaluate on the test split every ``eval_every`` epochs; by default only at the
        end (on small data sets test evaluation would dominate short epochs).
    callback : callable, optional
        ``callback(TrainStep)`` before the first step (fresh runs only), after every
        ``every``-th step and after the last step: to measure during training (e.g. RA
        metrics against step). It runs with the model in eval mode and under a forked
        torch RNG, so it does not change the run; it must not change the parameters.
    every : int, optional
        Steps between callback calls; default one epoch's steps.
    progress : bool or None, default None
        A tqdm progress bar on stderr. None: only if stderr is a terminal.
    device : str or torch.device, default "cpu"
    loss : {"cross_entropy", "mse"}, default "cross_entropy"
        ``"mse"``: squared distance of the logits to one-hot targets, summed over
        classes and averaged over the batch.

    Returns
    -------
    TrainResult

    Raises
    ------
    DivergenceError
        The training loss became NaN or Inf (the message names the epoch).

    Warns
    -----
    InitialisationWarning
        When the final ``init_cosine`` is above 0.5: the branch weights are still mostly
        their initialisation, and RA measured on them measures that.

    Examples
    --------
    >>> from ramodel.datasets import digits
    >>> from ramodel.nets import ResidualMLP
    >>> ds = digits(classes=3, seed=0)
    >>> net = ResidualMLP(64, 3, width=16, depth=2, init_seed=0)
    >>> result = train(net, ds, protocol="terminal", steps=1500, progress=False)
    >>> result.steps, result.final_test_accuracy > 0.9, result.init_cosine < 0.5
    (1500, True, True)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    _check_dataset(dataset)
    check_choice("protocol", protocol, tuple(PROTOCOLS))
    given = {"batch_size": batch_size, "lr": lr, "momentum": momentum, "weight_decay": weight_decay,
             "schedule": schedule, "warmup": warmup, "grad_clip": grad_clip, "decoupled_decay": decoupled_decay,
             "decay_on": decay_on}
    opts = {k: (PROTOCOLS[protocol][k] if v is _UNSET else v) for k, v in given.items()}
    if epochs is not None and steps is not None:
        raise ValueError(f"give epochs or steps, not both (got epochs={epochs!r}, steps={steps!r})")
    if epochs is None and steps is None:
        steps = PROTOCOLS[protocol]["steps"]
        if steps is None:
            raise ValueError(f"the length is missing: give epochs=... or steps=... (protocol={protocol!r} has no default)")
    settings = {
        "protocol": protocol,
        "epochs": None if epochs is None else check_int("epochs", epochs, minimum=1),
        "steps": None if steps is None else check_int("steps", steps, minimum=1),
        "batch_size": check_int("batch_size", opts["batch_size"], minimum=1),
        "lr": check_positive_float("lr", opts["lr"]),
        "momentum": check_positive_float("momentum", opts["momentum"], allow_zero=True),
        "weight_decay": check_positive_float("weight_decay", opts["weight_decay"], allow_zero=True),
        "schedule": check_choice("schedule", opts["schedule"], SCHEDULES),
        "warmup": opts["warmup"] if warmup is _UNSET else check_int("warmup", warmup, minimum=0),
        "grad_clip": None if opts["grad_clip"] is None else check_positive_float("grad_clip", opts["grad_clip"]),
        "decoupled_decay": opts["decoupled_decay"],
        "decay_on": check_choice("decay_on", opts["decay_on"], DECAY_ON),
        "seed": check_int("seed", seed, minimum=0),
        "loss": check_choice("loss", loss, LOSSES),
    }
    if not settings["momentum"] < 1:
        raise ValueError(f"momentum must be in [0, 1), got {opts['momentum']!r}")
    if not isinstance(settings["decoupled_decay"], bool):
        raise TypeError(f"decoupled_decay must be a bool, got {settings['decoupled_decay']!r}")
    if not isinstance(resume, bool):
        raise TypeError(f"resume must be a bool, got {resume!r}")
    if resume and checkpoint is None:
        raise ValueError("resume=True needs a checkpoint path")
    if checkpoint_every is not None:
        checkpoint_every = check_int("checkpoint_every", checkpoint_every, minimum=1)
    if eval_every is not None:
        eval_every = check_int("eval_every", eval_every, minimum=1)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable (it gets a TrainStep), got {type(callback).__name__}")
    if every is not None:
        every = check_int("every", every, minimum=1)
        if callback is None:
            raise ValueError("every is only valid with a callback")
    checkpoint = None if checkpoint is None else os.fspath(checkpoint)
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must name a torch device such as 'cpu' or 'cuda', got {device!r}") from exc
    start_time = time.perf_counter()

    model.to(device)
    dtype, _ = _model_dtype_device(model)
    x_train, y_train = _inputs(model, dataset, "train", dtype=dtype, device=device)
    x_test, y_test = _inputs(model, dataset, "test", dtype=dtype, device=device)
    n = settings["n_train"] = int(y_train.shape[0])
    steps_per_epoch = len(_batches(n, settings["batch_size"], torch.arange(n)))
    total_steps = settings["steps"] if settings["steps"] is not None else settings["epochs"] * steps_per_epoch
    total_epochs = -(-total_steps // steps_per_epoch)
    if isinstance(settings["warmup"], float):  # a protocol's fraction of the steps
        settings["warmup"] = round(settings["warmup"] * total_steps)
    if settings["warmup"] >= total_steps:
        raise ValueError(f"warmup must be < the number of steps ({total_steps}), got {settings['warmup']}")
    every = steps_per_epoch if every is None else every
    initial = branch_weights(model)

    params = [p for p in model.parameters() if p.requires_grad]
    decayed = [p for p in params if settings["decay_on"] == "all" or p.ndim >= 2]
    kept = [p for p in params if not (settings["decay_on"] == "all" or p.ndim >= 2)]
    wd = settings["weight_decay"]
    coupled = 0.0 if settings["decoupled_decay"] else wd
    groups = [{"params": decayed, "weight_decay": coupled}] + ([{"params": kept, "weight_decay": 0.0}] if kept else [])
    optimizer = torch.optim.SGD(groups, lr=settings["lr"], momentum=settings["momentum"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_factor(settings["schedule"], settings["warmup"], total_steps)
    )
    # Two independent streams, so shuffling and drop-path masks are not the same numbers.
    shuffle_seed, global_seed = (int(s) for s in np.random.SeedSequence(settings["seed"]).generate_state(2, np.uint64) >> 1)
    shuffle = torch.Generator().manual_seed(shuffle_seed)
    history = {"loss": [], "train_accuracy": [], "test_accuracy": [], "lr": [], "lr_steps": []}
    cuda = [device] if device.type == "cuda" else []

    def call_back(step: int, epoch: int, last_loss):
        overall, blocks = init_cosine(model, initial)
        lr_now = history["lr_steps"][-1] if history["lr_steps"] else float(optimizer.param_groups[0]["lr"])
        was_training = model.training
        model.eval()
        try:
            with torch.random.fork_rng(devices=cuda):
                callback(TrainStep(step=step, epoch=epoch, lr=lr_now, loss=last_loss, init_cosine=overall,
                                   init_cosine_blocks=blocks, model=model))
        finally:
            model.train(was_training)

    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(global_seed)
        start, step = 0, 0
        if resume and os.path.exists(checkpoint):
            state = _load(checkpoint, device, settings)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            shuffle.set_state(state["shuffle_rng"])
            torch.set_rng_state(state["rng"])
            if cuda:
                torch.cuda.set_rng_state(state["cuda_rng"], device)
            history = {k: list(v) for k, v in state["history"].items()}
            initial = [w.to("cpu", torch.float64) for w in state["initial"]]
            start, step = int(state["epoch"]), int(state["step"])
        start_step = step
        saved_step = step
        if callback is not None and step == 0:
            call_back(0, 0, None)
        bar = progress_bar(progress, total=total_steps - step, desc="train", unit="step")
        try:
            for epoch in range(start, total_epochs):
                history["lr"].append(float(optimizer.param_groups[0]["lr"]))
                model.train()
                loss_sum = torch.zeros((), dtype=torch.float64, device=device)
                correct = torch.zeros((), dtype=torch.long, device=device)
                seen = 0
                for idx in _batches(n, settings["batch_size"], torch.randperm(n, generator=shuffle)):
                    if step == total_steps:
                        break
                    idx = idx.to(device)
                    logits = model(x_train[idx])
                    value = _loss(settings["loss"], logits, y_train[idx], dataset.classes)
                    optimizer.zero_grad(set_to_none=True)
                    value.backward()
                    if settings["grad_clip"] is not None:
                        nn.utils.clip_grad_norm_(params, settings["grad_clip"])
                    lr_now = float(optimizer.param_groups[0]["lr"])
                    if settings["decoupled_decay"] and wd > 0:
                        with torch.no_grad():
                            torch._foreach_mul_(decayed, 1.0 - lr_now * wd)
                    optimizer.step()
                    scheduler.step()
                    step += 1
                    history["lr_steps"].append(lr_now)
                    loss_sum += value.detach().double() * len(idx)
                    correct += (logits.detach().argmax(dim=1) == y_train[idx]).sum()
                    seen += len(idx)
                    if bar is not None:
                        bar.update(1)
                    if callback is not None and (step % every == 0 or step == total_steps):
                        call_back(step, epoch, float(value.detach()))
                mean_loss = float(loss_sum) / seen
                if not math.isfinite(mean_loss):
                    raise DivergenceError(
                        f"training loss became {mean_loss} in epoch {epoch + 1}; try a smaller lr (lr={settings['lr']})"
                    )
                history["loss"].append(mean_loss)
                history["train_accuracy"].append(int(correct) / seen)
                last = epoch + 1 == total_epochs
                evaluate_now = last or (eval_every is not None and (epoch + 1) % eval_every == 0)
                history["test_accuracy"].append(evaluate(model, x_test, y_test) if evaluate_now else None)
                if bar is not None:
                    post = {"epoch": epoch + 1, "loss": f"{mean_loss:.4g}"}
                    if history["test_accuracy"][-1] is not None:
                        post["test_acc"] = f"{history['test_accuracy'][-1]:.3f}"
                    bar.set_postfix(**post)
                due = checkpoint_every is None or last or step // checkpoint_every > saved_step // checkpoint_every
                if checkpoint is not None and due:
                    state = {
                        "format": CHECKPOINT_FORMAT,
                        "epoch": epoch + 1,
                        "step": step,
                        "settings": settings,
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "shuffle_rng": shuffle.get_state(),
                        "rng": torch.get_rng_state(),
                        "history": history,
                        "initial": initial,
                    }
                    if cuda:
                        state["cuda_rng"] = torch.cuda.get_rng_state(device)
                    _save(checkpoint, state)
                    saved_step = step
        finally:
            if bar is not None:
                bar.close()
        epochs_run = total_epochs - start
        final_train = evaluate(model, x_train, y_train)
        final_test = evaluate(model, x_test, y_test)
    model.eval()
    overall, blocks = init_cosine(model, initial)
    if overall > INIT_COSINE_WARNING:
        warnings.warn(
            f"after {step} steps the branch weights still have cosine {overall:.3f} with their initialisation "
            f"(> {INIT_COSINE_WARNING}): RA measured on this network measures the random initialisation. Train "
            "longer or with more weight decay, e.g. protocol='terminal'",
            InitialisationWarning,
            stacklevel=2,
        )
    return TrainResult(
        loss=tuple(history["loss"]),
        train_accuracy=tuple(history["train_accuracy"]),
        test_accuracy=tuple(history["test_accuracy"]),
        lr=tuple(history["lr"]),
        lr_steps=tuple(history["lr_steps"]),
        final_train_accuracy=final_train,
        final_test_accuracy=final_test,
        seconds=time.perf_counter() - start_time,
        epochs=len(history["loss"]),
        epochs_run=epochs_run,
        steps=step,
        steps_run=step - start_step,
        init_cosine=overall,
        init_cosine_blocks=blocks,
        settings=types.MappingProxyType(dict(settings)),
    )


# ------------------------------------------------------------------ train, then export
@dataclass(frozen=True, eq=False)
class TrainedExport:
    """What :func:`train_and_export` made: the trained network, its run, and its exported Jacobians.

    Attributes
    ----------
    model : nn.Module
        The trained network (eval mode).
    dataset : ramodel.datasets.Dataset
    result : TrainResult
    jacobian_set : ramodel.jacobian_set.JacobianSet
        The file written to ``files["jacobians.npz"]``.
    split : {"test", "train"}
    indices : ndarray of int, shape (N,)
        The rows of ``split`` exported, sorted.
    missing_classes : tuple of int
        Classes with no example among the exported inputs (their RA and NC measures are missing).
    files : mapping of str to pathlib.Path
        ``jacobians.npz`` and ``checkpoint.pt``.
    """

    model: object
    dataset: object
    result: TrainResult
    jacobian_set: object
    split: str
    indices: np.ndarray
    missing_classes: tuple
    files: types.MappingProxyType

    def to_dict(self) -> dict:
        """JSON-ready: the model's config, the data set, the run (no per-step learning rates), the export."""
        return {"model": self.model.config, "dataset": self.dataset.to_dict(),
                "training": self.result.to_dict(lr_steps=False), "init_cosine": self.result.init_cosine,
                "init_cosine_blocks": list(self.result.init_cosine_blocks),
                "export": self.jacobian_set.to_dict(), "files": {k: str(v) for k, v in self.files.items()}}


def _export_protocol(model: nn.Module) -> str:
    from . import nets

    for arch in nets.ARCHITECTURES.values():
        if isinstance(model, arch.cls):
            return arch.export
    return "blocks"


def check_export(model: nn.Module, *, k: int | None = None, method: str = "auto", dtype: str = "float64") -> None:
    """Raise on export options ``model`` cannot be exported with, before it is trained.

    ``"steps"`` networks (:class:`ramodel.nets.ResidualRNN`) are exported dense by
    :meth:`~ramodel.nets.ResidualRNN.jacobian_set`: ``method="matrix_free"`` and ``k``
    do not apply. Others go through :func:`ramodel.torch.export_jacobians`.
    """
    from . import torch as ra_torch

    check_choice("method", method, ra_torch.METHODS)
    check_choice("export dtype", dtype, ("float32", "float64"))
    if k is not None:
        check_int("k", k, minimum=1)
    if _export_protocol(model) == "steps":
        if method == "matrix_free" or k is not None:
            raise ValueError(f"{type(model).__name__} exports its step Jacobians dense (ResidualRNN.jacobian_set); "
                             f"method='matrix_free' and k do not apply (got method={method!r}, k={k!r})")
        return
    width = model.config.get("width") if type(model).__name__ == "ResidualMLP" else None
    if k is not None and width is not None and k > width:
        raise ValueError(f"k must be <= the residual width {width}, got {k}")


def train_and_export(
    model: nn.Module,
    dataset,
    out: str | os.PathLike,
    *,
    inputs: int = 100,
    split: str = "test",
    pick: str = "first",
    k: int | None = None,
    method: str = "auto",
    export_dtype: str = "float64",
    dataset_name: str | None = None,
    seed: int = 0,
    resume: bool = False,
    protocol: str = "default",
    **train_options,
) -> TrainedExport:
    """Train ``model`` on ``dataset`` (:func:`train`), then export the Jacobians of ``inputs`` rows of a split.

    Writes ``out/checkpoint.pt`` (during training; resumable) and ``out/jacobians.npz``
    (``spec/FORMAT.md``, with the run in ``meta``). Export options are checked before
    training (:func:`check_export`), so a typo does not cost a training run. A run
    that fails leaves no empty ``out`` folder behind (a checkpoint, if any, is kept).

    Parameters
    ----------
    model : nn.Module
        E.g. from :func:`ramodel.nets.build`. Networks exported by blocks go through
        :func:`ramodel.torch.export_jacobians`, a :class:`ramodel.nets.ResidualRNN` through
        :meth:`~ramodel.nets.ResidualRNN.jacobian_set` (its step Jacobians, ``L = T``).
    dataset : ramodel.datasets.Dataset
    out : str or os.PathLike
        A folder (created when missing).
    inputs : int, default 100
        Rows to export, capped at the split's size.
    split : {"test", "train"}, default "test"
    pick : {"first", "random"}, default "first"
        The first ``inputs`` rows of the split, or a subset drawn with ``seed`` (sorted).
        Warns when the exported rows miss a class (``missing_classes``).
    k, method, export_dtype
        As ``k``, ``method`` and ``dtype`` of :func:`ramodel.torch.export_jacobians`.
    dataset_name : str, optional
        Recorded as ``meta["dataset"]``; default ``dataset.name``.
    seed : int, default 0
        Seed of the training run (:func:`train`), of the random pick and of the
        matrix-free export.
    resume, protocol, **train_options
        Passed to :func:`train` (``epochs``, ``steps``, ``lr``, ``progress``, ``device``, ...).

    Returns
    -------
    TrainedExport
    """
    import pathlib

    check_export(model, k=k, method=method, dtype=export_dtype)
    check_choice("split", split, ("test", "train"))
    check_choice("pick", pick, ("first", "random"))
    inputs = check_int("inputs", inputs, minimum=1)
    out = pathlib.Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out {str(out)!r} exists and is not a folder")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _train_and_export(model, dataset, out, inputs=inputs, split=split, pick=pick, k=k, method=method,
                                 export_dtype=export_dtype, dataset_name=dataset_name, seed=seed, resume=resume,
                                 protocol=protocol, **train_options)
    finally:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()


def _train_and_export(model, dataset, out, *, inputs, split, pick, k, method, export_dtype, dataset_name, seed,
                      resume, protocol, **train_options) -> TrainedExport:
    result = train(model, dataset, protocol=protocol, seed=seed, checkpoint=out / "checkpoint.pt", resume=resume,
                   **train_options)
    x = dataset.x_test if split == "test" else dataset.x_train
    y = dataset.y_test if split == "test" else dataset.y_train
    n = min(inputs, len(y))
    if pick == "random":
        idx = np.sort(np.random.default_rng(seed).permutation(len(y))[:n])
    else:
        idx = np.arange(n)
    x, y = np.array(x)[idx], np.array(y)[idx]  # writable copies: torch refuses read-only arrays
    missing = tuple(sorted(set(range(dataset.classes)) - {int(c) for c in y}))
    if missing:
        warnings.warn(f"the {n} exported {split} inputs hold no example of class(es) {list(missing)}; RA and NC "
                      "measures then miss those classes (try pick='random': ramodel train --pick random)",
                      UserWarning, stacklevel=3)
    if getattr(model, "expects_images", False):
        x = x.reshape(n, *((1,) if len(dataset.image_shape) == 2 else ()), *dataset.image_shape)
    settings = dict(result.settings)
    meta = {
        "dataset": dataset_name if dataset_name is not None else getattr(dataset, "name", None),
        "split": split,
        "class_ids": list(dataset.class_ids),
        "train_accuracy": result.final_train_accuracy,
        "test_accuracy": result.final_test_accuracy,
        "seed": seed,
        "loss": settings["loss"],
        "model": model.config,
        "training": {"epochs": result.epochs, "steps": result.steps, "protocol": protocol,
                     "batch_size": settings["batch_size"], "lr": settings["lr"],
                     "weight_decay": settings["weight_decay"], "schedule": settings["schedule"],
                     "warmup": settings["warmup"], "grad_clip": settings["grad_clip"],
                     "decoupled_decay": settings["decoupled_decay"], "decay_on": settings["decay_on"],
                     "init_cosine": result.init_cosine},
    }
    path = out / "jacobians.npz"
    if _export_protocol(model) == "steps":
        js = model.jacobian_set(x, y, classes=dataset.classes, meta=meta, dtype=export_dtype)
        js.save(path)
    else:
        from . import torch as ra_torch

        js = ra_torch.export_jacobians(model, x, y, path, k=k, classes=dataset.classes, meta=meta,
                                       dtype=export_dtype, method=method, seed=seed)
    return TrainedExport(model=model, dataset=dataset, result=result, jacobian_set=js, split=split, indices=idx,
                         missing_classes=missing,
                         files=types.MappingProxyType({"jacobians.npz": path, "checkpoint.pt": out / "checkpoint.pt"}))
