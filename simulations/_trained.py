"""Helpers shared by ``trained_resnets.py`` and ``theory_vs_trained.py``.

One run: build a bias-free :class:`ramodel.nets.ResidualMLP`, train it with SGD and weight
decay (:func:`ramodel.training.train`), export the dense residual Jacobians of ``n_eval``
inputs, a seeded random subset of the test split (:func:`ramodel.torch.export_jacobians`),
and time every stage in wall-clock and CPU seconds (the cores are shared).
"""

from __future__ import annotations

import os

# One thread, set before torch loads: the two cores are shared with other engineers.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import csv
import math
import pathlib
import tempfile
import time
import warnings
from contextlib import contextmanager

import numpy as np

__all__ = ["Timer", "load_data", "train_export", "ra_columns", "write_csv", "fmt", "markdown_table"]

#: RA metrics copied into the tables, in METRICS.md order.
RA_METRICS = ("collinearity", "equispacing", "A_left", "a_lr", "numerical_rank", "energy_top_C", "sigma1_cv",
              "sigma1_mean")
NC_METRICS = ("nc1", "nc2_equinorm", "nc2_etf", "nc3", "nc4")
VERDICTS = ("RA1", "RA2", "RA3", "RA4")

_DATA_CACHE: dict = {}


class Timer:
    """Wall and CPU (this process) seconds of a ``with`` block, accumulated by key."""

    def __init__(self):
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    @contextmanager
    def __call__(self, key: str):
        w, c = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.wall[key] = self.wall.get(key, 0.0) + time.perf_counter() - w
            self.cpu[key] = self.cpu.get(key, 0.0) + time.process_time() - c


def load_data(name: str, classes: int, seed: int = 0):
    """``digits`` or ``mnist5k`` restricted to the first ``classes`` classes (cached)."""
    from ramodel import datasets

    key = (name, classes, seed)
    if key not in _DATA_CACHE:
        loader = {"digits": datasets.digits, "mnist5k": datasets.mnist5k}[name]
        _DATA_CACHE[key] = loader(classes=classes, seed=seed)
    return _DATA_CACHE[key]


def train_export(cfg: dict, *, timer: Timer | None = None):
    """Train one network of configuration ``cfg`` and export its Jacobians.

    ``cfg`` keys: data, classes, depth, skip, width, epochs, lr, weight_decay, batch_size,
    n_eval, seed; optional ``protocol`` (``"terminal"``: :data:`ramodel.training.PROTOCOLS`,
    length ``steps`` instead of ``epochs``; ``cfg["init_cosine"]`` records the final cosine of
    the branch weights with their initialisation). Returns ``(net, dataset, train_result or None, jset or None, error)``;
    a run whose loss became NaN/Inf gives ``error = "diverged"`` and no Jacobians.
    """
    import torch

    from ramodel.nets import ResidualMLP
    from ramodel.optimize import DivergenceError
    from ramodel.torch import export_jacobians
    from ramodel.training import train

    torch.set_num_threads(1)
    timer = timer or Timer()
    ds = load_data(cfg["data"], cfg["classes"], cfg["seed"])
    res = None
    # A fixed rule, the same for every configuration: a run whose loss becomes NaN/Inf is
    # restarted once from the same initialisation at lr / 5 (``cfg["lr_used"]`` records it).
    for lr in (cfg["lr"], cfg["lr"] / 5):
        net = ResidualMLP(ds.x_train.shape[1], ds.classes, width=cfg["width"], depth=cfg["depth"],
                          skip=cfg["skip"], seed=cfg["seed"], init_seed=cfg["seed"], bias=False)
        if cfg.get("protocol") == "terminal":
            length = {"protocol": "terminal", "steps": cfg.get("steps")}
        else:
            length = {"epochs": cfg["epochs"]}
        try:
            with timer("train"), warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # InitialisationWarning: init_cosine is recorded
                res = train(net, ds, **length, batch_size=cfg["batch_size"], lr=lr,
                            weight_decay=cfg["weight_decay"], seed=cfg["seed"], progress=False)
            cfg["init_cosine"] = res.init_cosine
            cfg["lr_used"] = lr
            break
        except DivergenceError:
            cfg["lr_used"] = float("nan")
    if res is None:
        return net, ds, None, None, "diverged"
    n = min(cfg["n_eval"], len(ds.y_test))
    # A seeded random subset, not the first n: mnist5k's test split is sorted by class (its
    # first 150 inputs hold only classes 0 and 1). Fancy indexing also gives writable copies.
    idx = np.sort(np.random.default_rng(cfg["seed"]).permutation(len(ds.y_test))[:n])
    x, y = np.asarray(ds.x_test)[idx], np.asarray(ds.y_test)[idx]
    meta = {"dataset": cfg["data"], "train_accuracy": res.final_train_accuracy,
            "test_accuracy": res.final_test_accuracy, "seed": cfg["seed"], "skip_family": cfg["skip"],
            "weight_decay": cfg["weight_decay"]}
    with timer("export"), tempfile.TemporaryDirectory() as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            jset = export_jacobians(net, x, y, pathlib.Path(tmp) / "jacobians.npz", classes=ds.classes,
                                    method="dense", meta=meta)
    return net, ds, res, jset, None


def ra_columns(report) -> dict:
    """RA1-RA4 and NC metric values and the four verdicts of an :class:`RAReport`."""
    row = {}
    for name in RA_METRICS + NC_METRICS:
        m = report.metrics.get(name)
        row[name] = float("nan") if m is None else float(m.value)
    row["A_chance"] = float(report.metrics["A_left"].chance) if "A_left" in report.metrics else float("nan")
    for prop in VERDICTS:
        v = report.verdicts.get(prop)
        row[prop] = "n/a" if v is None else ("pass" if v else "FAIL")
    return row


def write_csv(path: pathlib.Path, rows: list[dict]) -> None:
    """All rows (union of keys, first-seen order) to ``path``, atomically."""
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys, restval="")
        w.writeheader()
        for r in rows:
            w.writerow({k: (fmt(v) if isinstance(v, float) else v) for k, v in r.items()})
    os.replace(tmp, path)


def fmt(v) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.4g}"
    return str(v)


def markdown_table(rows: list[dict], cols: list[str]) -> str:
    """A GitHub markdown table of ``cols`` (missing entries as '')."""
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |")
    return "\n".join(out)
