"""Train and evaluate the PyTorch networks of :mod:`ramodel.nets` on a :class:`~ramodel.datasets.Dataset`.

Design constraints, in order:

1. Reproducible: a seed fixes the shuffling and the stochastic-depth masks, and a run
   resumed from a checkpoint ends with exactly the weights of an uninterrupted run.
   Same seed, same machine, same torch build and same thread count
   (``torch.get_num_threads()``) give bitwise the same weights; a different thread
   count may change the order of floating-point reductions and hence the last bits.
2. Plain PyTorch: SGD with momentum and weight decay, a cosine or step learning-rate
   schedule stepped once per batch, cross-entropy or squared loss.
3. The data set is small and lives in memory: batches are index slices of whole
   tensors, shuffled with ``torch.randperm`` and a seeded ``torch.Generator`` (a
   ``DataLoader`` would index and collate sample by sample, a Python loop over
   samples, for no gain here).
4. Checkpoints are written atomically (temporary file in the same folder, then
   ``os.replace``) and read with ``torch.load(..., weights_only=True)``: no pickle.
5. The caller's global torch RNG state is restored when :func:`train` returns.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass

import numpy as np

try:
    import torch
    from torch import nn
    from torch.nn import functional
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError(f"ramodel.training needs PyTorch ({exc}); install it with: pip install 'ramodel[torch]'") from exc

from ._validation import check_choice, check_int, check_positive_float
from .optimize import DivergenceError

__all__ = ["TrainResult", "train", "evaluate", "SCHEDULES", "LOSSES", "CHECKPOINT_FORMAT"]

SCHEDULES = ("cosine", "step")
LOSSES = ("cross_entropy", "mse")
CHECKPOINT_FORMAT = "ramodel.checkpoint/1"
#: Settings that must match for a checkpoint to be resumed (they fix the run).
_RUN_SETTINGS = ("epochs", "batch_size", "lr", "momentum", "weight_decay", "schedule", "seed", "loss", "n_train")


@dataclass(frozen=True)
class TrainResult:
    """History and outcome of :func:`train`.

    Attributes
    ----------
    loss : tuple of float, length epochs
        Mean training loss of each epoch (over its batches, weighted by size).
    train_accuracy : tuple of float, length epochs
        Accuracy on the epoch's training batches as they were seen (train mode, so with
        stochastic depth and BatchNorm batch statistics).
    test_accuracy : tuple of float, length epochs
        Test accuracy (eval mode) after each epoch.
    lr : tuple of float, length epochs
        Learning rate at the start of each epoch.
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
    """

    loss: tuple[float, ...]
    train_accuracy: tuple[float, ...]
    test_accuracy: tuple[float, ...]
    lr: tuple[float, ...]
    final_train_accuracy: float
    final_test_accuracy: float
    seconds: float
    epochs: int
    epochs_run: int

    def to_dict(self) -> dict:
        """Plain-Python copy (lists for the histories), JSON-serialisable."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


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


def _scheduler(kind: str, optimizer, total_steps: int):
    if kind == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    # Step: lr / 10 after half and again after three quarters of all steps.
    milestones = sorted({max(1, total_steps // 2), max(1, (3 * total_steps) // 4)})
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)


def _progress_bar(progress, total: int):
    """A tqdm bar on stderr, or None. ``progress=None``: only if stderr is a terminal and tqdm is installed."""
    if progress is None:
        progress = bool(getattr(sys.stderr, "isatty", lambda: False)())
        if not progress:
            return None
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return None
    elif not isinstance(progress, bool):
        raise TypeError(f"progress must be None, True or False, got {progress!r}")
    elif not progress:
        return None
    else:
        try:
            from tqdm.auto import tqdm
        except ImportError as exc:
            raise ImportError("progress=True needs tqdm: pip install tqdm") from exc
    return tqdm(total=total, file=sys.stderr, unit="batch", dynamic_ncols=True)


def _save(path: str, state: dict) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


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
    epochs: int,
    batch_size: int = 128,
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    schedule: str = "cosine",
    seed: int = 0,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool | None = None,
    device="cpu",
    loss: str = "cross_entropy",
) -> TrainResult:
    """Train ``model`` in place on ``dataset`` with SGD; return the history.

    Parameters
    ----------
    model : nn.Module
        E.g. :class:`ramodel.nets.ResidualMLP` (flat inputs ``(N, d)``) or
        :class:`ramodel.nets.ConvResNet`; a model with ``expects_images = True`` gets
        the split's rows reshaped to ``(N, 1, H, W)`` from ``dataset.image_shape``
        (``(N, C, H, W)`` for a 3-tuple). Moved to ``device``; left in eval mode.
    dataset : ramodel.datasets.Dataset
        Float features are cast to the model's parameter dtype.
    epochs : int
        Total epochs, >= 1 (with ``resume``, the total including those already done).
    batch_size : int, default 128
        A trailing batch of a single sample is dropped each epoch (BatchNorm cannot
        use it).
    lr : float, default 0.1
        Initial learning rate, > 0.
    momentum : float, default 0.9
        SGD momentum, in [0, 1).
    weight_decay : float, default 5e-4
        L2 penalty coefficient (PyTorch's coupled weight decay), >= 0.
    schedule : {"cosine", "step"}, default "cosine"
        Stepped after every batch: cosine annealing from ``lr`` to 0 over all steps, or
        ``lr / 10`` after 1/2 and ``lr / 100`` after 3/4 of the steps.
    seed : int, default 0
        Seeds the shuffling generator and the global torch generator used by
        stochastic depth (two independent streams derived from it). Weights come
        from the model's construction (see ``init_seed`` in :mod:`ramodel.nets`).
    checkpoint : path, optional
        Written atomically after every epoch: model, optimizer, scheduler, epoch, RNG
        states, settings and history.
    resume : bool, default False
        Continue from ``checkpoint`` if that file exists (its settings must equal this
        call's; the model's state is loaded from it); start afresh if it does not.
        Without ``resume`` an existing checkpoint is overwritten.
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

    Examples
    --------
    >>> from ramodel.datasets import digits
    >>> from ramodel.nets import ResidualMLP
    >>> ds = digits(classes=3, seed=0)
    >>> net = ResidualMLP(64, 3, width=16, depth=2, init_seed=0)
    >>> result = train(net, ds, epochs=2, batch_size=64, lr=0.05, progress=False)
    >>> result.epochs, result.final_test_accuracy > 0.9
    (2, True)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    _check_dataset(dataset)
    settings = {
        "epochs": check_int("epochs", epochs, minimum=1),
        "batch_size": check_int("batch_size", batch_size, minimum=1),
        "lr": check_positive_float("lr", lr),
        "momentum": check_positive_float("momentum", momentum, allow_zero=True),
        "weight_decay": check_positive_float("weight_decay", weight_decay, allow_zero=True),
        "schedule": check_choice("schedule", schedule, SCHEDULES),
        "seed": check_int("seed", seed, minimum=0),
        "loss": check_choice("loss", loss, LOSSES),
    }
    if not settings["momentum"] < 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    if not isinstance(resume, bool):
        raise TypeError(f"resume must be a bool, got {resume!r}")
    if resume and checkpoint is None:
        raise ValueError("resume=True needs a checkpoint path")
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
    optimizer = torch.optim.SGD(
        model.parameters(), lr=settings["lr"], momentum=settings["momentum"], weight_decay=settings["weight_decay"]
    )
    scheduler = _scheduler(settings["schedule"], optimizer, settings["epochs"] * steps_per_epoch)
    # Two independent streams, so shuffling and drop-path masks are not the same numbers.
    shuffle_seed, global_seed = (int(s) for s in np.random.SeedSequence(settings["seed"]).generate_state(2, np.uint64) >> 1)
    shuffle = torch.Generator().manual_seed(shuffle_seed)
    history = {"loss": [], "train_accuracy": [], "test_accuracy": [], "lr": []}
    cuda = [device] if device.type == "cuda" else []

    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(global_seed)
        start = 0
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
            start = int(state["epoch"])
        bar = _progress_bar(progress, (settings["epochs"] - start) * steps_per_epoch)
        try:
            for epoch in range(start, settings["epochs"]):
                history["lr"].append(float(optimizer.param_groups[0]["lr"]))
                model.train()
                loss_sum = torch.zeros((), dtype=torch.float64, device=device)
                correct = torch.zeros((), dtype=torch.long, device=device)
                seen = 0
                for idx in _batches(n, settings["batch_size"], torch.randperm(n, generator=shuffle)):
                    idx = idx.to(device)
                    logits = model(x_train[idx])
                    value = _loss(settings["loss"], logits, y_train[idx], dataset.classes)
                    optimizer.zero_grad(set_to_none=True)
                    value.backward()
                    optimizer.step()
                    scheduler.step()
                    loss_sum += value.detach().double() * len(idx)
                    correct += (logits.detach().argmax(dim=1) == y_train[idx]).sum()
                    seen += len(idx)
                    if bar is not None:
                        bar.update(1)
                mean_loss = float(loss_sum) / seen
                if not math.isfinite(mean_loss):
                    raise DivergenceError(
                        f"training loss became {mean_loss} in epoch {epoch + 1}; try a smaller lr (lr={settings['lr']})"
                    )
                history["loss"].append(mean_loss)
                history["train_accuracy"].append(int(correct) / seen)
                history["test_accuracy"].append(evaluate(model, x_test, y_test))
                if bar is not None:
                    bar.set_postfix(epoch=epoch + 1, loss=f"{mean_loss:.4g}", test_acc=f"{history['test_accuracy'][-1]:.3f}")
                if checkpoint is not None:
                    state = {
                        "format": CHECKPOINT_FORMAT,
                        "epoch": epoch + 1,
                        "settings": settings,
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "shuffle_rng": shuffle.get_state(),
                        "rng": torch.get_rng_state(),
                        "history": history,
                    }
                    if cuda:
                        state["cuda_rng"] = torch.cuda.get_rng_state(device)
                    _save(checkpoint, state)
        finally:
            if bar is not None:
                bar.close()
        epochs_run = settings["epochs"] - start
        final_train = evaluate(model, x_train, y_train)
        final_test = evaluate(model, x_test, y_test)
    model.eval()
    return TrainResult(
        loss=tuple(history["loss"]),
        train_accuracy=tuple(history["train_accuracy"]),
        test_accuracy=tuple(history["test_accuracy"]),
        lr=tuple(history["lr"]),
        final_train_accuracy=final_train,
        final_test_accuracy=final_test,
        seconds=time.perf_counter() - start_time,
        epochs=len(history["loss"]),
        epochs_run=epochs_run,
    )
