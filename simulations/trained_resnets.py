"""RA in trained fully connected ResNets, with its counterfactuals (issue 6), under the short protocol.

This is the short-protocol study whose null result ``simulations/RESULTS_trained.md`` keeps
as its short-protocol row: 15-30 epochs at weight decay 5e-4 leave the branch weights at
cosine 0.81 (digits) / 0.86 (MNIST-5k) with their random initialisation (measured at depth
8 by ``reproduce_ra.py``'s ``short`` study), and every RA measure at chance. The
reproduction of the paper, with the protocol that reaches the terminal regime, is
``simulations/reproduce_ra.py`` (issue 16).

Trains bias-free :class:`ramodel.nets.ResidualMLP` networks (width 32, ReLU branches
``W_2 relu(W_1 h)``, no normalisation) and measures RA1-RA4 and neural collapse on their
exported Jacobians. The paper predicts RA with identity skips, no RA without skips, and
RA3's rank tracking the number of classes C. Entangled skips (every registered family
but ``identity``/``none``, registry defaults) show what other skips do.

Default grid (31 networks, about 5 minutes on 2 busy cores, under 15):

- ``digits``, C = 10: every family (identity, none, orthogonal, permutation,
  block_orthogonal, sparse_unipotent, correlation) at depths 8, 16 and 32 (21 nets);
- ``digits``, depth 16, C = 2 and 5: identity and none (4 nets);
- ``mnist5k``, depth 16: C = 10 with identity, none and orthogonal; C = 2 and 5 with
  identity (5 nets); depth 8, C = 10, identity (1 net).

``--quick`` (under a minute, run by the test): ``digits`` at depth 4 with identity, none and
orthogonal (C = 10) and identity with C = 2; 3 epochs, 40 evaluation inputs.

Protocol, fixed once before looking at any RA number: SGD (momentum 0.9, cosine schedule,
batch 64, weight decay 5e-4) by :func:`ramodel.training.train`, 30 epochs on ``digits`` and
15 on ``mnist5k``; lr 0.05 for every skip family except ``none``, which gets lr 0.01: with
lr 0.05 a skip-free net of depth 8 stays at chance (train accuracy 0.10) and one of depth
32 diverges, while lr 0.01 trains depth 8 to 0.97 (measured on digits, seed 0). A run whose
loss becomes NaN/Inf is restarted once from the same initialisation at lr / 5 (column
``lr_used``; at lr 0.05 identity, orthogonal and permutation skips diverge at depth 32). Skip draws,
weight initialisation and shuffling are all seeded by seed 0 (``init="auto"``: He init
without skips, PyTorch's default otherwise). Then the dense Jacobians ``J_l = dF_l/dh`` of
150 test inputs (``--n-eval``; a seeded random subset: mnist5k's test split is class-sorted) are
exported (:func:`ramodel.torch.export_jacobians`) and analysed with the default thresholds of
:func:`ramodel.analyze`. A run that diverges at both rates is kept in the table as ``diverged``.

Writes into ``--out``: ``runs.csv`` (one row per network), ``table.md``, ``reports/*.json``
(each RAReport), ``timing.json``, and the figures ``accuracy_by_family.png``,
``alignment_by_family.png`` (A_left and collinearity against depth, per family),
``rank_vs_classes.png`` and ``K_identity.png`` / ``K_none.png`` (RA2 alignment matrix at
depth 16 on digits; depth 4 with ``--quick``).

    python simulations/trained_resnets.py --out out/trained
    python simulations/trained_resnets.py --quick --out out/trained_quick
"""

from __future__ import annotations

import _trained  # noqa: F401  (sets the thread variables before torch loads)

# isort: split

import json
import time

import numpy as np
from matplotlib.figure import Figure

from _common import out_dir, parser
from _trained import NC_METRICS, RA_METRICS, VERDICTS, Timer, markdown_table, ra_columns, train_export, write_csv

FAMILIES = ("identity", "none", "orthogonal", "permutation", "block_orthogonal", "sparse_unipotent", "correlation")
WIDTH = 32
WEIGHT_DECAY = 5e-4
EPOCHS = {"digits": 30, "mnist5k": 15}


def _cfg(data, depth, skip, classes, *, epochs=None, n_eval=150):
    return dict(data=data, depth=depth, skip=skip, classes=classes, width=WIDTH,
                epochs=EPOCHS[data] if epochs is None else epochs, lr=0.01 if skip == "none" else 0.05,
                weight_decay=WEIGHT_DECAY, batch_size=64, n_eval=n_eval, seed=0)


def grid(quick: bool, n_eval: int) -> list[dict]:
    if quick:
        return [_cfg("digits", 4, s, c, epochs=3, n_eval=40)
                for s, c in (("identity", 10), ("none", 10), ("orthogonal", 10), ("identity", 2))]
    g = [_cfg("digits", L, s, 10, n_eval=n_eval) for s in FAMILIES for L in (8, 16, 32)]
    g += [_cfg("digits", 16, s, c, n_eval=n_eval) for s in ("identity", "none") for c in (2, 5)]
    g += [_cfg("mnist5k", 16, s, 10, n_eval=n_eval) for s in ("identity", "none", "orthogonal")]
    g += [_cfg("mnist5k", 16, "identity", c, n_eval=n_eval) for c in (2, 5)]
    g += [_cfg("mnist5k", 8, "identity", 10, n_eval=n_eval)]
    return g


def run_one(cfg: dict, out) -> tuple[dict, np.ndarray | None]:
    import ramodel

    timer = Timer()
    net, ds, res, jset, err = train_export(cfg, timer=timer)
    row = {k: cfg[k] for k in ("data", "depth", "skip", "classes", "lr", "epochs")}
    row["C"] = row.pop("classes")
    if err is not None:
        row.update(status=err, train_acc=float("nan"), test_acc=float("nan"))
        row.update({p: "n/a" for p in VERDICTS})
        K = None
    else:
        with timer("analyze"):
            rep = ramodel.analyze(jset)
        name = f"{cfg['data']}_L{cfg['depth']}_{cfg['skip']}_C{cfg['classes']}"
        rep.save(out / "reports" / f"{name}.json")
        row["lr_used"] = cfg["lr_used"]
        row.update(status="ok", train_acc=res.final_train_accuracy, test_acc=res.final_test_accuracy,
                   n_eval=int(jset.labels.shape[0]))
        row.update(ra_columns(rep))
        K = rep.metrics["K"].detail if "K" in rep.metrics else None
    row["wall_s"] = sum(timer.wall.values())
    row["cpu_s"] = sum(timer.cpu.values())
    return row, K


def _figures(rows, Ks, out, quick):
    ok = [r for r in rows if r["status"] == "ok"]
    # Accuracy and RA2 alignment by family at one depth on digits (C = 10).
    L0 = 4 if quick else 16
    fam = [r for r in ok if r["data"] == "digits" and r["depth"] == L0 and r["C"] == 10]
    fig = Figure(figsize=(9, 3.5))
    ax1, ax2 = fig.subplots(1, 2)
    x = np.arange(len(fam))
    ax1.bar(x - 0.2, [r["train_acc"] for r in fam], 0.4, label="train")
    ax1.bar(x + 0.2, [r["test_acc"] for r in fam], 0.4, label="test")
    ax1.set_ylim(0, 1.05)
    ax1.set_title(f"accuracy, digits, depth {L0}")
    ax1.legend(fontsize=7)
    ax2.bar(x - 0.2, [r["A_left"] for r in fam], 0.4, label="A_left")
    ax2.bar(x + 0.2, [r["collinearity"] for r in fam], 0.4, label="collinearity")
    if fam:
        ax2.axhline(fam[0]["A_chance"], color="k", ls="--", lw=1, label="A chance k/d")
    ax2.set_ylim(0, 1.05)
    ax2.set_title("RA2 alignment, RA1 collinearity")
    ax2.legend(fontsize=7)
    for ax in (ax1, ax2):
        ax.set_xticks(x, [r["skip"] for r in fam], rotation=35, ha="right", fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "accuracy_by_family.png", dpi=110)

    fig = Figure(figsize=(9, 3.5))
    axes = fig.subplots(1, 3)
    for skip in FAMILIES:
        sel = sorted((r for r in ok if r["data"] == "digits" and r["C"] == 10 and r["skip"] == skip),
                     key=lambda r: r["depth"])
        if not sel:
            continue
        for ax, key in zip(axes, ("A_left", "collinearity", "sigma1_mean")):
            ax.plot([r["depth"] for r in sel], [r[key] for r in sel], "o-", label=skip)
    for ax, key in zip(axes, ("A_left (RA2)", "collinearity (RA1)", "sigma1_mean (RA4)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("depth L")
        ax.set_title(key)
    axes[2].set_yscale("log")
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "alignment_by_family.png", dpi=110)

    fig = Figure(figsize=(4.5, 3.5))
    ax = fig.subplots()
    for data, skip, marker in (("digits", "identity", "o-"), ("mnist5k", "identity", "s-"),
                               ("digits", "none", "x--")):
        sel = sorted((r for r in ok if r["data"] == data and r["skip"] == skip and r["depth"] == L0),
                     key=lambda r: r["C"])
        if sel:
            ax.plot([r["C"] for r in sel], [r["numerical_rank"] for r in sel], marker, label=f"{data}, {skip}")
    ax.plot([2, 10], [2, 10], "k:", lw=1, label="rank = C")
    ax.set_xlabel("classes C")
    ax.set_ylabel("median numerical rank of J_l")
    ax.set_title(f"RA3: rank against C (depth {L0})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "rank_vs_classes.png", dpi=110)

    from ramodel.plots import alignment_heatmap

    for skip in ("identity", "none"):
        K = Ks.get(("digits", L0, skip, 10))
        if K is not None:
            alignment_heatmap(np.asarray(K), title=f"K[i, j], digits, depth {L0}, skip {skip}").savefig(
                out / f"K_{skip}.png", dpi=110)


COLUMNS = (["data", "depth", "skip", "C", "lr_used", "status", "train_acc", "test_acc"] + list(RA_METRICS) + ["A_chance"]
           + list(NC_METRICS) + list(VERDICTS))


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--n-eval", type=int, default=150, help="test inputs whose Jacobians are exported")
    args = p.parse_args(argv)
    out = out_dir(args.out)
    (out / "reports").mkdir(exist_ok=True)
    t0w, t0c = time.perf_counter(), time.process_time()
    rows, Ks = [], {}
    for cfg in grid(args.quick, args.n_eval):
        row, K = run_one(cfg, out)
        rows.append(row)
        Ks[(cfg["data"], cfg["depth"], cfg["skip"], cfg["classes"])] = K
        print(f"[{len(rows)}] {row['data']} L={row['depth']} {row['skip']} C={row['C']}: {row['status']} "
              f"train {row['train_acc']:.3f} test {row['test_acc']:.3f} "
              + " ".join(f"{p}={row[p]}" for p in VERDICTS) + f" ({row['wall_s']:.1f}s wall, {row['cpu_s']:.1f}s cpu)",
              flush=True)
        write_csv(out / "runs.csv", rows)  # after every run, so a cut-off run keeps what finished
    _figures(rows, Ks, out, args.quick)
    table = markdown_table(rows, COLUMNS)
    (out / "table.md").write_text(table + "\n")
    timing = {"wall_s": time.perf_counter() - t0w, "cpu_s": time.process_time() - t0c, "runs": len(rows)}
    (out / "timing.json").write_text(json.dumps(timing, indent=2))
    print(table)
    print(f"total: {timing['wall_s']:.1f}s wall, {timing['cpu_s']:.1f}s cpu, {len(rows)} networks")


if __name__ == "__main__":
    main()
