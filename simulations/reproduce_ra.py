"""Reproduce Residual Alignment in trained networks: the paper's study on offline data (issue 16).

Every network is trained with ``protocol="terminal"`` (:data:`ramodel.training.PROTOCOLS`:
3000 SGD steps, batch 256, lr 0.1 with 150 warmup steps and cosine decay, momentum 0.9,
coupled weight decay 1e-2, gradient clip 5), long enough for weight decay to remove the
random initialisation (``init_cosine``, the cosine between final and initial branch weights,
is recorded for every run). Fully connected nets are bias-free
:class:`ramodel.nets.ResidualMLP` (ReLU branches ``W_2 relu(W_1 h)``, width 32 unless
stated). Then the dense residual Jacobians of 150 train and 150 test inputs (seeded random
subsets) are exported (:func:`ramodel.torch.export_jacobians`) and analysed with
:func:`ramodel.analyze`'s default thresholds; RA4 across depth is
:func:`ramodel.depth_scaling` (slope of ``log sigma_bar_1`` on ``log L`` with a 95 % CI).

Studies (default run, 71 networks):

- ``depth``: digits and MNIST-5k, C = 10, depths 4, 8, 16, 32; identity skips with seeds
  0, 1, 2 on both data sets; no skips with seeds 0, 1, 2 on digits and seed 0 on MNIST-5k;
- ``width``: depth 8, identity, widths 64 and 128 (32 is in ``depth``), both data sets;
- ``classes``: depth 8, C = 2 and 5 (10 is in ``depth``), identity and no skips, both sets;
- ``counterfactual``: depth 8, C = 10, both sets: stochastic depth at drop rates 0.1 and
  0.3 (block l of L drops its branch with probability rate * l / L), orthogonal and
  permutation skips, BatchNorm in the branch (``W_2 relu(BN(W_1 h))``);
- ``conv``: a one-stage :class:`ramodel.nets.ConvResNet` (8 channels, 8x8 digits, branches
  conv-BN-ReLU-conv-BN) at depths 2, 4, 8 with seeds 0, 1 and no skips at depth 4; 1000
  steps at batch 128 (BatchNorm makes the weights scale-free, so decay acts faster: the
  init cosine is <= 0.2 after 1000 steps); Jacobians matrix-free (top C triplets), so
  RA1, RA2 and RA4 only (RA3 is not claimed for conv nets);
- ``short``: the earlier short protocol (30 epochs digits / 15 MNIST-5k, batch 64, lr 0.05,
  weight decay 5e-4, no warmup) at depth 8, identity: the old null result, for comparison;
- ``trace``: RA against training step (every 100 steps, 100 test inputs) for the digits
  depth-8 identity and no-skip networks of seed 0, with ``init_cosine`` beside it (the
  callback runs under a forked RNG, so these are the same networks as in ``depth``).

``--quick`` (under a minute, run by the tests): digits, width 16, 600 steps, depths 2, 4, 8,
one seed, every study with one or two networks, 60 evaluation inputs.

Resumable: each finished network is stored in ``--out/runs/<name>.json`` (+ ``.npz``) and
skipped when the script is run again; tables and figures are rebuilt from those files at the
end (also with ``--report-only``). A progress bar (tqdm, on stderr) counts networks.

Writes into ``--out``: ``runs.csv`` (one row per network and split), ``table_<study>.md``,
``ra4.csv`` / ``table_ra4.md`` (depth scaling per data set, skip and split), ``trace.csv``,
``summary.json``, ``timing.json`` and the figures ``fig_ra1_trajectories.png``,
``fig_ra2_alignment.png``, ``fig_ra3_spectra.png``, ``fig_ra4_depth.png`` (the paper's four,
identity against no skips), ``fig_ra_vs_step.png``, ``fig_counterfactuals.png``,
``fig_rank_vs_classes.png`` and ``fig_conv.png``.

    python simulations/reproduce_ra.py --out out/reproduce
    python simulations/reproduce_ra.py --quick --out out/reproduce_quick
"""

from __future__ import annotations

import _trained  # noqa: F401  (sets the thread variables before torch loads)

# isort: split

import json
import math
import pathlib
import sys
import tempfile
import time
import warnings

import numpy as np

from _common import out_dir, parser
from _trained import markdown_table, write_csv

METRICS = ("collinearity", "equispacing", "A_left", "a_lr", "numerical_rank", "energy_top_C", "sigma1_mean",
           "sigma1_cv", "nc1")
VERDICTS = ("RA1", "RA2", "RA3", "RA4")
SPLITS = ("train", "test")
SHORT = {"digits": 30, "mnist5k": 15}  # epochs of the earlier short protocol


# ----------------------------------------------------------------------------- grid


def _cfg(study, data, *, depth=8, skip="identity", classes=10, width=32, seed=0, norm="none", drop_path=0.0,
         arch="mlp", protocol="terminal", steps=None, batch_size=None, n_eval=150, trace=False):
    return {"study": study, "data": data, "depth": depth, "skip": skip, "classes": classes, "width": width,
            "seed": seed, "norm": norm, "drop_path": drop_path, "arch": arch, "protocol": protocol, "steps": steps,
            "batch_size": batch_size, "n_eval": n_eval, "trace": trace}


def name_of(c: dict) -> str:
    base = f"{c['arch']}_{c['data']}_C{c['classes']}_L{c['depth']}_w{c['width']}_{c['skip']}"
    if c["norm"] != "none":
        base += f"_{c['norm']}"
    if c["drop_path"]:
        base += f"_dp{c['drop_path']:g}"
    if c["protocol"] != "terminal":
        base += f"_{c['protocol']}"
    return base + f"_s{c['seed']}"


def grid(quick: bool) -> list[dict]:
    """The networks of the study, in run order (duplicates of one network are merged)."""
    g: list[dict] = []
    if quick:
        q = {"width": 16, "steps": 600, "n_eval": 60}
        for skip in ("identity", "none"):
            for L in (2, 4, 8):
                g.append(_cfg("depth", "digits", depth=L, skip=skip, trace=(L == 4), **q))
        g.append(_cfg("width", "digits", depth=4, **{**q, "width": 32}))
        g.append(_cfg("classes", "digits", depth=4, classes=2, **q))
        for kw in ({"drop_path": 0.3}, {"skip": "orthogonal"}, {"skip": "permutation"}, {"norm": "batchnorm"}):
            g.append(_cfg("counterfactual", "digits", depth=4, **{**q, **kw}))
        for L in (2, 3, 4):
            g.append(_cfg("conv", "digits", arch="conv", depth=L, width=4, steps=100, batch_size=128, n_eval=12))
        g.append(_cfg("conv", "digits", arch="conv", depth=2, width=4, skip="none", steps=100, batch_size=128,
                      n_eval=12))
        g.append(_cfg("short", "digits", depth=4, width=16, protocol="short", n_eval=60))
        return _merge(g)
    for data in ("digits", "mnist5k"):
        for L in (4, 8, 16, 32):
            for seed in (0, 1, 2):
                g.append(_cfg("depth", data, depth=L, seed=seed, trace=(data == "digits" and L == 8 and seed == 0)))
                if data == "digits" or seed == 0:
                    g.append(_cfg("depth", data, depth=L, seed=seed, skip="none",
                                  trace=(data == "digits" and L == 8 and seed == 0)))
    for data in ("digits", "mnist5k"):
        for W in (64, 128):
            g.append(_cfg("width", data, width=W))
        for C in (2, 5):
            for skip in ("identity", "none"):
                g.append(_cfg("classes", data, classes=C, skip=skip))
        for kw in ({"drop_path": 0.1}, {"drop_path": 0.3}, {"skip": "orthogonal"}, {"skip": "permutation"},
                   {"norm": "batchnorm"}):
            g.append(_cfg("counterfactual", data, **kw))
        g.append(_cfg("short", data, protocol="short"))
    for L in (2, 4, 8):
        for seed in (0, 1):
            g.append(_cfg("conv", "digits", arch="conv", depth=L, width=8, seed=seed, steps=1000, batch_size=128,
                          n_eval=100))
    g.append(_cfg("conv", "digits", arch="conv", depth=4, width=8, skip="none", steps=1000, batch_size=128,
                  n_eval=100))
    return _merge(g)


def _merge(g: list[dict]) -> list[dict]:
    out: dict[str, dict] = {}
    for c in g:
        n = name_of(c)
        if n in out:
            out[n]["studies"].append(c["study"])
            out[n]["trace"] = out[n]["trace"] or c["trace"]
        else:
            out[n] = {**c, "studies": [c["study"]], "name": n}
    return list(out.values())


# ------------------------------------------------------------------------------ one run


def _subset(n_total: int, n: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).permutation(n_total)[: min(n, n_total)])


def _build(c: dict, ds):
    from ramodel.nets import ConvResNet, ResidualMLP

    if c["arch"] == "conv":
        return ConvResNet(1, ds.classes, channels=(c["width"],), blocks_per_stage=c["depth"], skip=c["skip"],
                          seed=c["seed"], init_seed=c["seed"])
    return ResidualMLP(ds.x_train.shape[1], ds.classes, width=c["width"], depth=c["depth"], skip=c["skip"],
                       norm=c["norm"], drop_path=c["drop_path"], seed=c["seed"], init_seed=c["seed"], bias=False)


def _export(net, c, ds, split, n, seed, device):
    from ramodel.torch import export_jacobians

    x_all, y_all = np.asarray(getattr(ds, f"x_{split}")), np.asarray(getattr(ds, f"y_{split}"))
    idx = _subset(len(y_all), n, seed)
    x, y = x_all[idx], y_all[idx]
    if c["arch"] == "conv":
        x = x.reshape(len(y), 1, *ds.image_shape)
    meta = {"dataset": c["data"], "split": split, "seed": c["seed"], "skip_family": c["skip"],
            "norm": c["norm"], "drop_path": c["drop_path"], "protocol": c["protocol"]}
    method = "matrix_free" if c["arch"] == "conv" else "dense"
    with warnings.catch_warnings(), tempfile.TemporaryDirectory() as tmp:
        warnings.simplefilter("ignore", UserWarning)
        js = export_jacobians(net, x, y, pathlib.Path(tmp) / "j.npz", classes=ds.classes, method=method,
                              k=ds.classes if method == "matrix_free" else None, meta=meta, seed=seed)
    return js


def _light(js):
    """A small JacobianSet (top-1 factors) with the same sigma_1 per layer and input, for depth_scaling."""
    from ramodel import JacobianSet

    if js.has_dense:
        U, S, Vt = np.linalg.svd(np.asarray(js.jacobians, dtype=np.float64))
        U1, S1, V1 = U[..., :1], S[..., :1], np.swapaxes(Vt[..., :1, :], -1, -2)
    else:
        U1, S1, V1 = np.asarray(js.U)[..., :1], np.asarray(js.S)[..., :1], np.asarray(js.V)[..., :1]
    return JacobianSet(labels=js.labels, classes=js.classes, meta=dict(js.meta), U=U1, S=S1, V=V1,
                       skips=js.skips)


def _ra(js) -> tuple[dict, object]:
    import ramodel

    rep = ramodel.analyze(js)
    row = {}
    for m in METRICS:
        v = rep.metrics.get(m)
        row[m] = float("nan") if v is None else float(v.value)
    row["A_chance"] = float(rep.metrics["A_left"].chance) if "A_left" in rep.metrics else float("nan")
    reasons = getattr(rep, "reasons", {}) or {}
    for p in VERDICTS:
        v = rep.verdicts.get(p)
        row[p] = "n/a" if v is None else ("pass" if v else "FAIL")  # n/a: undetermined
        row[f"{p}_reason"] = str(reasons.get(p, ""))
    return row, rep


def run_one(c: dict, runs: pathlib.Path, device: str) -> dict:
    """Train, export and analyse one network; store ``<name>.json`` and ``<name>.npz`` in ``runs``."""
    import torch

    from _trained import load_data
    from ramodel.optimize import DivergenceError
    from ramodel.training import InitialisationWarning, train

    torch.set_num_threads(1)
    ds = load_data(c["data"], c["classes"], 0)
    t0w, t0c = time.perf_counter(), time.process_time()
    trace: list[dict] = []
    res, lr_used, status = None, float("nan"), "ok"
    if c["protocol"] == "short":
        base = {"epochs": SHORT[c["data"]], "batch_size": 64, "weight_decay": 5e-4}
    else:
        base = dict(protocol="terminal", steps=c["steps"],
                    **({"batch_size": c["batch_size"]} if c["batch_size"] else {}))

    def measure(state):
        js = _export(state.model, c, ds, "test", min(100, c["n_eval"]), 1, device)
        row, _ = _ra(js)
        trace.append({"step": state.step, "init_cosine": state.init_cosine,
                      **{k: row[k] for k in ("collinearity", "equispacing", "A_left", "a_lr", "numerical_rank",
                                             "sigma1_mean")}, "A_chance": row["A_chance"]})

    lr0 = 0.05 if c["protocol"] == "short" else 0.1
    # One fixed rule for every network: a run whose loss becomes NaN/Inf restarts once at lr / 5.
    for lr in (lr0, lr0 / 5):
        net = _build(c, ds)
        trace.clear()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", InitialisationWarning)
                every = max(1, (c["steps"] or 3000) // 30)
                res = train(net, ds, **base, lr=lr, seed=c["seed"], device=device, progress=False,
                            callback=measure if c["trace"] else None, every=every if c["trace"] else None)
            lr_used = lr
            break
        except DivergenceError:
            res = None
    row = {k: c[k] for k in ("name", "data", "arch", "depth", "width", "skip", "norm", "drop_path", "classes",
                             "seed", "protocol")}
    row["studies"] = "+".join(c["studies"])
    if res is None:
        row.update(status="diverged")
        (runs / f"{c['name']}.json").write_text(json.dumps(row, indent=1))
        return row
    net.to("cpu")
    with torch.no_grad():
        norms = [float(torch.cat([p.reshape(-1) for p in b.branch.parameters() if p.ndim >= 2]).norm())
                 for b in net.blocks]
    row.update(status=status, lr_used=lr_used, steps=res.steps, train_acc=res.final_train_accuracy,
               test_acc=res.final_test_accuracy, init_cosine=res.init_cosine,
               init_cosine_max=max(res.init_cosine_blocks), branch_norm=float(np.mean(norms)),
               train_s=res.seconds)
    arrays = {}
    for split in SPLITS:
        js = _export(net, c, ds, split, c["n_eval"], c["seed"], "cpu")
        m, rep = _ra(js)
        row[split] = m
        light = _light(js)
        arrays[f"{split}_U"], arrays[f"{split}_S"], arrays[f"{split}_V"] = light.U, light.S, light.V
        arrays[f"{split}_labels"] = np.asarray(js.labels)
        if js.skips is not None:
            arrays[f"{split}_skips"] = np.asarray(js.skips)
        if split == "test":
            if js.representations is not None:
                arrays["test_reps"] = np.asarray(js.representations, dtype=np.float32)
            if js.has_dense:
                J = np.asarray(js.jacobians, dtype=np.float64)
                arrays["test_spectra"] = np.median(np.linalg.svd(J, compute_uv=False), axis=1)  # (L, d)
                arrays["test_J0"] = J[:, 0]
            else:
                arrays["test_spectra"] = np.median(np.asarray(js.S), axis=1)
            if "K" in rep.metrics and rep.metrics["K"].detail is not None:
                arrays["test_K"] = np.asarray(rep.metrics["K"].detail, dtype=np.float64)
    row["meta"] = dict(js.meta)
    row["trace"] = trace
    row["wall_s"] = time.perf_counter() - t0w
    row["cpu_s"] = time.process_time() - t0c
    np.savez_compressed(runs / f"{c['name']}.npz", **arrays)
    tmp = runs / f".{c['name']}.json.tmp"
    tmp.write_text(json.dumps(row, indent=1, default=float))
    tmp.replace(runs / f"{c['name']}.json")  # the .json marks the run as done (written last)
    return row


# ------------------------------------------------------------------------------ report


def _load_rows(runs: pathlib.Path, names: list[str]) -> list[dict]:
    rows = []
    for n in names:
        p = runs / f"{n}.json"
        if p.exists():
            rows.append(json.loads(p.read_text()))
    return rows


def _flat(rows: list[dict]) -> list[dict]:
    """One row per network and split."""
    out = []
    for r in rows:
        base = {k: r.get(k) for k in ("name", "studies", "data", "arch", "depth", "width", "skip", "norm",
                                      "drop_path", "classes", "seed", "protocol", "status", "lr_used", "steps",
                                      "train_acc", "test_acc", "init_cosine", "init_cosine_max", "branch_norm",
                                      "wall_s")}
        if r.get("status") != "ok":
            out.append(base)
            continue
        for split in SPLITS:
            out.append({**base, "split": split, **r[split]})
    return out


def _variant(r: dict) -> str:
    if r["protocol"] == "short":
        return "identity, short protocol"
    if r["norm"] != "none":
        return f"{r['skip']} + {r['norm']}"
    if r["drop_path"]:
        return f"{r['skip']} + drop path {r['drop_path']:g}"
    return r["skip"]


def _ra4(rows: list[dict], runs: pathlib.Path) -> list[dict]:
    """depth_scaling per (arch, data, skip, split) over the depth study."""
    import ramodel
    from ramodel import JacobianSet

    groups: dict = {}
    for r in rows:
        if r.get("status") != "ok" or not ({"depth", "conv"} & set(r["studies"].split("+"))):
            continue
        if r["norm"] != "none" or r["drop_path"] or r["protocol"] != "terminal" or r["classes"] != 10:
            continue
        groups.setdefault((r["arch"], r["data"], r["skip"], r["width"]), []).append(r)
    out = []
    scalings = {}
    for (arch, data, skip, width), members in sorted(groups.items()):
        if len({m["depth"] for m in members}) < 2:
            continue
        for split in SPLITS:
            sources = []
            for m in members:
                z = np.load(runs / f"{m['name']}.npz")
                sources.append(JacobianSet(labels=z[f"{split}_labels"], classes=m["classes"],
                                           meta={"dataset": data, "skip_family": skip, "architecture": arch},
                                           U=z[f"{split}_U"], S=z[f"{split}_S"], V=z[f"{split}_V"],
                                           skips=z.get(f"{split}_skips")))
            ds = ramodel.depth_scaling(sources)
            ds = ds[0] if isinstance(ds, (list, tuple)) else ds
            scalings[(arch, data, skip, split)] = ds
            ci = ds.ci
            out.append({"arch": arch, "data": data, "skip": skip, "width": width, "split": split,
                        "models": len(members), "depths": "/".join(str(d) for d in sorted({m["depth"] for m in members})),
                        "slope": float("nan") if ds.slope is None else ds.slope,
                        "ci_low": float("nan") if ci is None else ci[0], "ci_high": float("nan") if ci is None else ci[1],
                        "verdict": {True: "pass", False: "FAIL", None: "undetermined"}[ds.verdict],
                        "reason": ds.reason,
                        "L_sigma1": " ".join(f"{L}:{v:.3g}" for L, v in sorted(zip(ds.depths, ds.L_sigma1)))})
    return out, scalings


def _mean_std(vals):
    v = np.asarray([x for x in vals if x is not None and not (isinstance(x, float) and math.isnan(x))], dtype=float)
    if not v.size:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def _aggregate(rows, keys, cols=("test_acc", "init_cosine")) -> list[dict]:
    """Mean (and std over seeds) per configuration ``keys`` and split."""
    groups: dict = {}
    for r in rows:
        if r.get("status") != "ok":
            continue
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    out = []
    for key, members in groups.items():
        for split in SPLITS:
            row = dict(zip(keys, key))
            row["split"] = split
            row["n"] = len(members)
            for c in cols:
                row[c] = _mean_std([m[c] for m in members])[0]
            for m in ("collinearity", "equispacing", "A_left", "A_chance", "numerical_rank", "energy_top_C",
                      "sigma1_mean", "sigma1_cv"):
                mu, sd = _mean_std([x[split][m] for x in members])
                row[m] = mu
                if len(members) > 1 and m in ("A_left", "sigma1_mean", "collinearity"):
                    row[f"{m}_sd"] = sd
            for p in VERDICTS:
                row[p] = f"{sum(x[split][p] == 'pass' for x in members)}/{len(members)}"
            out.append(row)
    return out


TABLE_COLS = ["split", "n", "test_acc", "init_cosine", "collinearity", "equispacing", "A_left", "A_chance",
              "numerical_rank", "energy_top_C", "sigma1_mean", "sigma1_cv", "RA1", "RA2", "RA3", "RA4"]


def report(out: pathlib.Path, names: list[str], quick: bool) -> dict:
    from matplotlib.figure import Figure

    from ramodel import plots

    runs = out / "runs"
    rows = _load_rows(runs, names)
    for r in rows:
        r["variant"] = _variant(r)
    write_csv(out / "runs.csv", _flat(rows))
    ok = [r for r in rows if r.get("status") == "ok"]

    def study(s):
        return [r for r in ok if s in r["studies"].split("+")]

    tables = {}
    tables["depth"] = _aggregate(study("depth"), ("data", "skip", "depth"))
    tables["width"] = _aggregate([r for r in ok if r["arch"] == "mlp" and r["depth"] == (4 if quick else 8)
                                  and r["skip"] == "identity" and r["classes"] == 10 and r["variant"] == "identity"
                                  and r["seed"] == 0], ("data", "width"))
    tables["classes"] = _aggregate([r for r in ok if r["arch"] == "mlp" and r["depth"] == (4 if quick else 8)
                                    and r["variant"] in ("identity", "none") and r["width"] == (16 if quick else 32)
                                    and r["seed"] == 0], ("data", "skip", "classes"))
    tables["counterfactual"] = _aggregate([r for r in ok if r["arch"] == "mlp" and r["depth"] == (4 if quick else 8)
                                           and r["classes"] == 10 and r["width"] == (16 if quick else 32)
                                           and r["seed"] == 0], ("data", "variant"))
    tables["conv"] = _aggregate(study("conv"), ("skip", "depth"))
    key_cols = {"depth": ["data", "skip", "depth"], "width": ["data", "width"], "classes": ["data", "skip", "classes"],
                "counterfactual": ["data", "variant"], "conv": ["skip", "depth"]}
    for s, t in tables.items():
        extra = [c for c in ("A_left_sd", "sigma1_mean_sd") if any(c in r for r in t)]
        (out / f"table_{s}.md").write_text(markdown_table(t, key_cols[s] + TABLE_COLS + extra) + "\n")
    ra4_rows, scalings = _ra4(ok, runs)
    write_csv(out / "ra4.csv", ra4_rows)
    (out / "table_ra4.md").write_text(markdown_table(ra4_rows, ["arch", "data", "skip", "split", "models", "depths",
                                                                "slope", "ci_low", "ci_high", "verdict",
                                                                "L_sigma1"]) + "\n")
    trace_rows = [{"name": r["name"], "skip": r["skip"], **t} for r in ok for t in r.get("trace") or []]
    write_csv(out / "trace.csv", trace_rows)
    (out / "table_trace.md").write_text(markdown_table(trace_rows, ["skip", "step", "init_cosine", "collinearity",
                                                                    "equispacing", "A_left", "A_chance",
                                                                    "numerical_rank", "sigma1_mean"]) + "\n")
    short = [r for r in ok if r["protocol"] == "short"]
    (out / "table_short.md").write_text(markdown_table(_aggregate(short, ("data", "variant")),
                                                       ["data", "variant"] + TABLE_COLS) + "\n")

    # ------------------------------------------------------------------ figures
    L0, W0 = (4, 16) if quick else (8, 32)

    def pick(data="digits", skip="identity", depth=L0, classes=10, width=W0, arch="mlp"):
        for r in ok:
            if (r["data"], r["skip"], r["depth"], r["classes"], r["width"], r["arch"], r["seed"], r["variant"]) == (
                    data, skip, depth, classes, width, arch, 0, skip):
                return r, np.load(runs / f"{r['name']}.npz")
        return None, None

    pairs = {}
    for skip, title in (("identity", "identity skips"), ("none", "no skips")):
        r, z = pick(skip=skip)
        if r is not None:
            pairs[title] = (r, z)
    figures = []
    if pairs:
        fig = plots.ra_trajectories({f"{t} (L={r['depth']}, digits)": (z["test_reps"], z["test_labels"])
                                     for t, (r, z) in pairs.items()})
        fig.savefig(out / "fig_ra1_trajectories.png", dpi=90)
        k = 6  # the RA2 k analyze chose for these nets (the median numerical rank, below C - 1 = 9)
        fig = plots.ra_alignment({t: plots.alignment_blocks(z["test_J0"], k) for t, (r, z) in pairs.items()}, k=k)
        fig.savefig(out / "fig_ra2_alignment.png", dpi=90)
        panels = {}
        for C in (2, 5):
            r, z = pick(classes=C)
            if r is not None:
                panels[f"identity, C = {C}"] = z["test_spectra"]
        for t, (r, z) in pairs.items():
            panels[f"{t}, C = 10"] = z["test_spectra"]
        fig = plots.ra_spectra(panels, top=W0 // 2)
        fig.savefig(out / "fig_ra3_spectra.png", dpi=90)
        figures += ["fig_ra1_trajectories.png", "fig_ra2_alignment.png", "fig_ra3_spectra.png"]
    dpanels = {}
    for data in ("digits", "mnist5k"):
        for skip, t in (("identity", "identity"), ("none", "no skips")):
            s = scalings.get(("mlp", data, skip, "test"))
            if s is None:
                continue
            if s.verdict is None:  # e.g. dead branches: draw the models, not a meaningless fit
                why = "inactive branches" if "inactive" in s.reason else s.reason.split(":")[0][:30]
                dpanels[f"{data}, {t}\n(RA4 undetermined: {why})"] = {
                    "depths": s.depths, "sigma1": s.sigma1}
            else:
                dpanels[f"{data}, {t}"] = s
    if dpanels:
        plots.ra_depth(dpanels).savefig(out / "fig_ra4_depth.png", dpi=90)
        figures.append("fig_ra4_depth.png")

    if trace_rows:
        fig = Figure(figsize=(10, 3.2), layout="constrained")
        axes = fig.subplots(1, 4)
        for skip, style in (("identity", "o-"), ("none", "x--")):
            tr = sorted((t for t in trace_rows if t["skip"] == skip), key=lambda t: t["step"])
            if not tr:
                continue
            steps = [t["step"] for t in tr]
            for ax, key in zip(axes, ("A_left", "collinearity", "numerical_rank", "init_cosine")):
                ax.plot(steps, [t[key] for t in tr], style, ms=3, label=skip)
            # k (and so chance k/d) follows the numerical rank, which changes during training.
            axes[0].plot(steps, [t["A_chance"] for t in tr], ":", color="k" if skip == "identity" else "0.5",
                         lw=1, label=f"chance k/d ({skip})")
        for ax, title in zip(axes, ("RA2: A_left", "RA1: collinearity", "RA3: numerical rank", "init_cosine")):
            ax.set_title(title, fontsize="small")
            ax.set_xlabel("training step", fontsize="small")
            ax.tick_params(labelsize="x-small")
        axes[0].legend(fontsize="x-small")
        fig.suptitle("RA against training step (digits, test inputs), with the init cosine", fontsize="medium")
        fig.savefig(out / "fig_ra_vs_step.png", dpi=90)
        figures.append("fig_ra_vs_step.png")

    cf = [r for r in tables["counterfactual"] if r["split"] == "test"]
    if cf:
        fig = Figure(figsize=(10, 3.4), layout="constrained")
        axes = fig.subplots(1, 3)
        labels = [f"{r['data']}\n{r['variant']}" for r in cf]
        x = np.arange(len(cf))
        for ax, key, title in zip(axes, ("A_left", "collinearity", "test_acc"),
                                  ("RA2: A_left (test)", "RA1: collinearity (test)", "test accuracy")):
            ax.bar(x, [r[key] for r in cf], color=["C0" if r["variant"] == "identity" else "C1" for r in cf])
            if key == "A_left":
                ax.axhline(cf[0]["A_chance"], color="k", ls=":", lw=1)
            ax.set_xticks(x, labels, rotation=60, ha="right", fontsize=6)
            ax.set_title(title, fontsize="small")
            ax.set_ylim(0, 1.02)
        fig.savefig(out / "fig_counterfactuals.png", dpi=90)
        figures.append("fig_counterfactuals.png")

    cl = [r for r in tables["classes"] if r["split"] == "test"]
    if cl:
        fig = Figure(figsize=(4.4, 3.4), layout="constrained")
        ax = fig.add_subplot()
        for data, skip, style in (("digits", "identity", "o-"), ("mnist5k", "identity", "s-"),
                                  ("digits", "none", "x--"), ("mnist5k", "none", "+--")):
            sel = sorted((r for r in cl if r["data"] == data and r["skip"] == skip), key=lambda r: r["classes"])
            if sel:
                ax.plot([r["classes"] for r in sel], [r["numerical_rank"] for r in sel], style, label=f"{data}, {skip}")
        ax.plot([2, 10], [1, 9], "k:", lw=1, label="C - 1 (T1, cross-entropy)")
        ax.set_xlabel("classes C")
        ax.set_ylabel("median numerical rank of J_l")
        ax.set_title(f"RA3: rank against C (depth {L0}, test)", fontsize="small")
        ax.legend(fontsize="x-small")
        fig.savefig(out / "fig_rank_vs_classes.png", dpi=90)
        figures.append("fig_rank_vs_classes.png")

    cv = [r for r in tables["conv"] if r["split"] == "test"]
    if cv:
        fig = Figure(figsize=(7, 3.2), layout="constrained")
        axes = fig.subplots(1, 2)
        for skip, style in (("identity", "o-"), ("none", "x")):
            sel = sorted((r for r in cv if r["skip"] == skip), key=lambda r: r["depth"])
            if sel:
                axes[0].plot([r["depth"] for r in sel], [r["A_left"] for r in sel], style, label=skip)
                axes[1].loglog([r["depth"] for r in sel], [r["sigma1_mean"] for r in sel], style, label=skip)
        axes[0].axhline(cv[0]["A_chance"], color="k", ls=":", lw=1, label="chance k/d")
        axes[0].set_title("conv RA2: A_left (test)", fontsize="small")
        axes[1].set_title(r"conv RA4: mean $\sigma_1$", fontsize="small")
        for ax in axes:
            ax.set_xlabel("depth L", fontsize="small")
            ax.legend(fontsize="x-small")
        fig.savefig(out / "fig_conv.png", dpi=90)
        figures.append("fig_conv.png")

    summary = {"networks": len(rows), "ok": len(ok), "diverged": [r["name"] for r in rows if r.get("status") != "ok"],
               "missing": [n for n in names if not (runs / f"{n}.json").exists()], "figures": figures,
               "ra4": ra4_rows}
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    return summary


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", help="torch device for training (default cpu)")
    p.add_argument("--report-only", action="store_true", help="rebuild tables and figures from --out/runs only")
    p.add_argument("--only", help="comma-separated studies to run (default all)")
    p.add_argument("--progress", action=__import__("argparse").BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: when stderr is a terminal)")
    args = p.parse_args(argv)
    out = out_dir(args.out)
    runs = out / "runs"
    runs.mkdir(exist_ok=True)
    cfgs = grid(args.quick)
    if args.only:
        keep = set(args.only.split(","))
        cfgs = [c for c in cfgs if keep & set(c["studies"])]
    t0w, t0c = time.perf_counter(), time.process_time()
    todo = [c for c in cfgs if not (runs / f"{c['name']}.json").exists()]
    if not args.report_only:
        bar = None
        show = sys.stderr.isatty() if args.progress is None else args.progress
        if show:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(cfgs), initial=len(cfgs) - len(todo), unit="net", file=sys.stderr)
        for c in todo:
            try:
                row = run_one(c, runs, args.device)
            except Exception as exc:  # noqa: BLE001 (one broken network must not stop the study; rerun retries it)
                row = {"status": f"error ({type(exc).__name__}: {exc})"}
            msg = (f"{c['name']}: {row['status']}" + (
                f", train {row['train_acc']:.3f} test {row['test_acc']:.3f} init_cos {row['init_cosine']:.2f} "
                f"A_left {row['test']['A_left']:.2f}/{row['test']['A_chance']:.2f} "
                f"coll {row['test']['collinearity']:.2f} rank {row['test']['numerical_rank']:g} "
                f"({row['wall_s']:.0f}s)" if row["status"] == "ok" else ""))
            if bar is not None:
                bar.update(1)
                bar.write(msg)
            else:
                print(msg, flush=True)
        if bar is not None:
            bar.close()
    summary = report(out, [c["name"] for c in cfgs], args.quick)
    timing = {"wall_s": time.perf_counter() - t0w, "cpu_s": time.process_time() - t0c, "networks": len(cfgs),
              "run_now": 0 if args.report_only else len(todo)}
    (out / "timing.json").write_text(json.dumps(timing, indent=2))
    print((out / "table_ra4.md").read_text())
    print(f"{summary['ok']}/{summary['networks']} networks ok; figures: {', '.join(summary['figures'])}; "
          f"{timing['wall_s']:.0f}s wall, {timing['cpu_s']:.0f}s cpu")


if __name__ == "__main__":
    main()
