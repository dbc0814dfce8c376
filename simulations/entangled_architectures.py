"""Entangled residual mappings in conv nets, Vision Transformers and RNNs: accuracy, refinement, RA.

Tests the three claims of "Entangled Residual Mappings" (arXiv 2206.01261) on offline data:

(a) entangled skips can preserve iterative feature refinement;
(b) in CNNs and ViTs, sparse entangled skips can help generalisation, orthogonal ones hurt;
(c) in RNNs, orthogonal skips help time-variant tasks and hurt time-invariant ones.

Grid: skip families (identity, none, orthogonal, permutation, sparse_unipotent, correlation,
each with its registry defaults, plus ``scaled(sparse_unipotent)`` and ``scaled(correlation)``,
the same draws divided by their spectral norm; ``--families`` takes any registered name) x
tasks x seeds (default 5; ``--quick``: the first six families, one seed):

- ``conv/digits``: :class:`ramodel.nets.ConvResNet`, one stage of 16 channels, 6 blocks;
- ``vit/digits``: :class:`ramodel.nets.VisionTransformer`, 2x2 patches, dim 32, 3 layers
  (6 residual blocks), 4 heads, class token;
- ``rnn/sequential_digits``, ``rnn/majority`` (time-invariant), ``rnn/first_marker``
  (time-variant): :class:`ramodel.nets.ResidualRNN`, 32 units (sequences of 8, 24, 24 steps);
- with ``--mnist``, also ``conv/mnist5k`` and ``vit/mnist5k`` (slow: not in the default run).

Hyperparameters were chosen once, on the identity skip with seed 0, to get off the
ceiling and train stably, and are the same for every family (the RNN on the synthetic
tasks diverges with identity skips at lr 0.01, hence lr 0.003). Each run: SGD (momentum
0.9, weight decay 5e-4, cosine schedule, batch 64) by :func:`ramodel.training.train`;
skip draw, weight init and shuffling all seeded by the run's seed; then, on the test
split, :func:`ramodel.refinement.collect`/``measure`` (norm ratio, gradient cosine and
lesion accuracy per block), and :func:`ramodel.report.analyze` on the first
``--ra-inputs`` test inputs: for conv and ViT blocks the top-C singular triplets of
``J_l = dF_l/dh`` (:func:`ramodel.torch.block_top_singular`, 2 power iterations), for the
RNN the dense ``d x d`` step Jacobians. A run whose training loss becomes NaN/Inf is
recorded as ``diverged`` (no accuracy) and kept in the table.

Writes into ``--out``: ``runs.csv`` (one row per task, family and seed: accuracies,
per-block refinement measures joined by ';', RA metrics, timings), ``summary.csv`` and
``summary.md`` (mean +- std over seeds), ``claims.md`` (each claim with the measured
verdict), ``timing.json``, and per task ``accuracy_<task>.png`` and
``refinement_<task>.png``. Torch runs with one thread per process; ``--jobs`` processes.

    python simulations/entangled_architectures.py --out out/erm
    python simulations/entangled_architectures.py --quick --out out/erm_quick
"""

from __future__ import annotations

import os

# One thread per process, set before torch loads: the cores are shared.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import csv
import functools
import json
import math
import multiprocessing
import resource
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from matplotlib.figure import Figure
from scipy import stats

from _common import out_dir, parser

FAMILIES = ("identity", "none", "orthogonal", "permutation", "sparse_unipotent", "correlation")
#: The default run adds the two families whose spectral norm exceeds 1 divided by it: their
#: unscaled forms amplify the stream at every block or step (see RESULTS).
DEFAULT_FAMILIES = FAMILIES + ("scaled(sparse_unipotent)", "scaled(correlation)")
ENTANGLED = ("orthogonal", "permutation", "sparse_unipotent", "correlation", "scaled(sparse_unipotent)",
             "scaled(correlation)")
ALPHA = 0.05

#: Default tasks. ``data``: loader name and arguments; ``model``: architecture arguments.
TASKS = {
    "conv/digits": dict(arch="conv", data=("digits", {}), epochs=10, lr=0.05,
                        model=dict(channels=(16,), blocks_per_stage=6)),
    "vit/digits": dict(arch="vit", data=("digits", {}), epochs=20, lr=0.1,
                       model=dict(patch=2, dim=32, depth=3, heads=4)),
    "rnn/sequential_digits": dict(arch="rnn", data=("sequential_digits", {}), epochs=20, lr=0.01,
                                  model=dict(hidden=32)),
    "rnn/majority": dict(arch="rnn", data=("majority_symbols", dict(steps=24, bias=0.1)), epochs=20, lr=0.003,
                         model=dict(hidden=32)),
    "rnn/first_marker": dict(arch="rnn", data=("first_marker", dict(steps=24)), epochs=20, lr=0.003,
                             model=dict(hidden=32)),
}  # fmt: skip
MNIST_TASKS = {
    "conv/mnist5k": dict(arch="conv", data=("mnist5k", {}), epochs=6, lr=0.05,
                         model=dict(channels=(8, 16), blocks_per_stage=(1, 4))),
    "vit/mnist5k": dict(arch="vit", data=("mnist5k", {}), epochs=10, lr=0.1,
                        model=dict(patch=4, dim=32, depth=3, heads=4)),
}  # fmt: skip
#: ``--quick``: the same tasks, tiny, one epoch or two: a smoke test of the whole pipeline.
QUICK = {
    "conv/digits": dict(arch="conv", data=("digits", {}), epochs=1, lr=0.05,
                        model=dict(channels=(4,), blocks_per_stage=2)),
    "vit/digits": dict(arch="vit", data=("digits", {}), epochs=1, lr=0.1,
                       model=dict(patch=4, dim=8, depth=1, heads=2)),
    "rnn/sequential_digits": dict(arch="rnn", data=("sequential_digits", {}), epochs=1, lr=0.01,
                                  model=dict(hidden=8)),
    "rnn/majority": dict(arch="rnn", data=("majority_symbols", dict(steps=6, train_size=200, test_size=100)),
                         epochs=2, lr=0.003, model=dict(hidden=8)),
    "rnn/first_marker": dict(arch="rnn", data=("first_marker", dict(steps=6, train_size=200, test_size=100)),
                             epochs=2, lr=0.003, model=dict(hidden=8)),
}  # fmt: skip
#: Claims (b) and (c): (task, family, claimed sign of accuracy(family) - accuracy(identity)).
#: Primary families: sparse_unipotent (sparse) and orthogonal (Haar); secondary: the scaled
#: sparse family, and permutation, which is orthogonal and sparse at once.
COMPARISONS = {
    "b": [(t, f, sign) for t in ("conv/digits", "vit/digits", "conv/mnist5k", "vit/mnist5k")
          for f, sign in (("sparse_unipotent", +1), ("scaled(sparse_unipotent)", +1), ("orthogonal", -1))],
    "c": [(t, f, sign) for f in ("orthogonal", "permutation")
          for t, sign in (("rnn/first_marker", +1), ("rnn/majority", -1))],
}  # fmt: skip


# --------------------------------------------------------------------------- one run


@functools.lru_cache(maxsize=8)
def _dataset(name: str, items: tuple):
    from ramodel import datasets, sequences

    kwargs = dict(items)
    loader = getattr(sequences, name, None) or getattr(datasets, name)
    return loader(seed=0, **kwargs)


def _model(arch: str, ds, family: str, seed: int, options: dict):
    from ramodel.nets import ConvResNet, ResidualRNN, VisionTransformer

    common = dict(skip=family, seed=seed, init_seed=seed)
    if arch == "conv":
        return ConvResNet(1, ds.classes, **options, **common)
    if arch == "vit":
        return VisionTransformer(ds.image_shape, ds.classes, **options, **common)
    return ResidualRNN(ds.features, ds.classes, steps=ds.steps, **options, **common)


def _joined(values) -> str:
    return ";".join("nan" if not np.isfinite(v) else f"{v:.6g}" for v in np.asarray(values, dtype=float))


def _ra(model, arch: str, data, x_sub, classes: int) -> dict:
    """RA metrics of the residual Jacobians at the first inputs (square: d x d per block)."""
    import torch

    from ramodel.report import analyze

    n = x_sub.shape[0]
    labels = data.labels[:n]
    reps = data.representations[:, :n]
    if arch == "rnn":
        source = {"jacobians": model.step_jacobians(x_sub).double().numpy()}
    else:
        from ramodel.torch import block_top_singular

        d = data.h_in.shape[-1]
        k = min(classes, d)
        shape = data.feature_shape
        tops = [
            block_top_singular(b, torch.from_numpy(h[:n]).float().reshape(n, *shape), k, dtype="float64",
                               power_iters=2, seed=0)
            for b, h in zip(model.blocks, data.h_in)
        ]  # fmt: skip
        source = {key: np.stack([getattr(t, key) for t in tops]) for key in ("U", "S", "V")}
    rep = analyze({**source, "labels": labels, "classes": classes, "representations": reps})
    out = {}
    for name in ("collinearity", "equispacing", "A_left", "A_right", "a_lr", "numerical_rank", "energy_top_C",
                 "sigma1_cv", "sigma1_mean"):
        m = rep.metrics.get(name)
        out[f"ra_{name}"] = float(m.value) if m is not None else math.nan
    out["ra_k"] = int(rep.info["k"])
    out["ra_chance"] = rep.info["k"] / rep.info["width"]  # A_left of random subspaces: k / d
    for prop, verdict in rep.verdicts.items():
        out[f"ra_{prop}"] = "" if verdict is None else str(bool(verdict))
    return out


def run_one(task: str, cfg: dict, family: str, seed: int, ra_inputs: int) -> dict:
    """Train one network and measure it; never raises (errors go into the row)."""
    import torch

    from ramodel.optimize import DivergenceError
    from ramodel.refinement import collect, measure
    from ramodel.training import train

    torch.set_num_threads(1)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    name, kwargs = cfg["data"]
    row = {"task": task, "architecture": cfg["arch"], "dataset": name, "family": family, "seed": seed,
           "epochs": cfg["epochs"], "lr": cfg["lr"], "status": "ok", "error": ""}  # fmt: skip
    try:
        ds = _dataset(name, tuple(sorted(kwargs.items())))
        model = _model(cfg["arch"], ds, family, seed, cfg["model"])
        try:
            result = train(model, ds, epochs=cfg["epochs"], batch_size=64, lr=cfg["lr"], seed=seed, progress=False)
        except DivergenceError as exc:
            row.update(status="diverged", error=str(exc))
            return row
        row.update(train_accuracy=result.final_train_accuracy, test_accuracy=result.final_test_accuracy)
        x = torch.tensor(np.array(ds.x_test), dtype=torch.get_default_dtype())  # a copy: Dataset arrays are read-only
        if getattr(model, "expects_images", False):
            x = x.reshape(len(x), 1, *ds.image_shape)
        data = collect(model, x, np.array(ds.y_test), batch_size=512)
        r = measure(data)
        L, _, d = data.h_in.shape
        lesion = r.lesion_accuracy
        with np.errstate(invalid="ignore"):
            row.update(
                blocks=L, d=d, chance_accuracy=r.chance_accuracy, cosine_chance_std=r.cosine_chance_std,
                norm_ratio_mean=float(np.nanmean(r.norm_ratio_blocks.mean)),
                gradient_cosine_mean=float(np.nanmean(r.gradient_cosine_blocks.mean)),
                lesion_accuracy_mean=float(lesion.mean()), lesion_accuracy_min=float(lesion.min()),
                norm_ratio_blocks=_joined(r.norm_ratio_blocks.mean),
                gradient_cosine_blocks=_joined(r.gradient_cosine_blocks.mean),
                gradient_cosine_excluded=int(r.gradient_cosine_blocks.excluded.sum()),
                lesion_accuracy_blocks=_joined(lesion),
            )  # fmt: skip
        n = min(ra_inputs, len(x))
        try:
            row.update(ra_inputs=n, **_ra(model, cfg["arch"], data, x[:n], ds.classes))
        except Exception as exc:  # RA is a side measurement: keep the run, say why it is missing
            row["error"] = f"RA: {type(exc).__name__}: {exc}"
    except Exception as exc:
        row.update(status="error", error=f"{type(exc).__name__}: {exc}")
    finally:
        row.update(cpu_seconds=time.process_time() - cpu0, wall_seconds=time.perf_counter() - wall0)
    return row


# ----------------------------------------------------------------------- summaries


def _values(rows, task, family, key="test_accuracy"):
    return np.array([r[key] for r in rows if r["task"] == task and r["family"] == family and r["status"] == "ok"
                     and isinstance(r.get(key), (int, float)) and np.isfinite(r[key])], dtype=float)  # fmt: skip


def _ms(v) -> str:
    if v.size == 0:
        return "n/a"
    return f"{v.mean():.3f} ± {v.std(ddof=1):.3f}" if v.size > 1 else f"{v.mean():.3f}"


def _compare(a, b, sign: int) -> tuple[str, float, float]:
    """Verdict on ``sign * (mean a - mean b) > 0`` by Welch's t-test at ALPHA: (verdict, difference, p)."""
    if a.size < 2 or b.size < 2:
        return "inconclusive (fewer than 2 runs)", math.nan, math.nan
    diff = float(a.mean() - b.mean())
    if a.std() == 0 and b.std() == 0:
        p = 0.0 if diff != 0 else 1.0
    else:
        p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    if p < ALPHA:
        return ("agrees" if sign * diff > 0 else "disagrees"), diff, p
    return "inconclusive", diff, p


def _positive(v) -> tuple[bool, float]:
    """One-sample t-test of mean > 0 (one-sided, ALPHA)."""
    if v.size < 2:
        return False, math.nan
    if v.std() == 0:
        return bool(v.mean() > 0), 0.0 if v.mean() > 0 else 1.0
    p = float(stats.ttest_1samp(v, 0.0, alternative="greater").pvalue)
    return p < ALPHA, p


def summarise(rows, tasks, families) -> tuple[list[dict], str, str]:
    table, lines = [], []
    lines.append("| task | family | runs ok | test accuracy | per seed | lesion accuracy (mean over blocks) | "
                 "gradient cosine (mean over blocks) | cos chance std | norm ratio (mean) | RA2 A_left | A_left chance k/d | "
                 "RA4 sigma1 CV |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for task in tasks:
        for fam in families:
            mine = [r for r in rows if r["task"] == task and r["family"] == fam]
            if not mine:
                continue
            ok = [r for r in mine if r["status"] == "ok"]
            entry = {"task": task, "family": fam, "runs": len(mine), "ok": len(ok),
                     "diverged": sum(r["status"] == "diverged" for r in mine),
                     "errors": sum(r["status"] == "error" for r in mine)}  # fmt: skip
            for key in ("test_accuracy", "train_accuracy", "lesion_accuracy_mean", "gradient_cosine_mean",
                        "norm_ratio_mean", "ra_A_left", "ra_chance", "ra_a_lr", "ra_sigma1_cv", "ra_collinearity"):
                v = _values(rows, task, fam, key)
                entry[f"{key}_mean"] = float(v.mean()) if v.size else math.nan
                entry[f"{key}_std"] = float(v.std(ddof=1)) if v.size > 1 else math.nan
            chance = [r["cosine_chance_std"] for r in ok if "cosine_chance_std" in r]
            entry["cosine_chance_std"] = float(np.mean(chance)) if chance else math.nan
            table.append(entry)
            status = f"{len(ok)}/{len(mine)}" + (f" ({entry['diverged']} diverged)" if entry["diverged"] else "")
            lines.append(
                f"| {task} | {fam} | {status} | {_ms(_values(rows, task, fam))} | "
                f"{' '.join(f'{v:.2f}' for v in _values(rows, task, fam))} | "
                f"{_ms(_values(rows, task, fam, 'lesion_accuracy_mean'))} | "
                f"{_ms(_values(rows, task, fam, 'gradient_cosine_mean'))} | {entry['cosine_chance_std']:.3f} | "
                f"{_ms(_values(rows, task, fam, 'norm_ratio_mean'))} | {_ms(_values(rows, task, fam, 'ra_A_left'))} | "
                f"{entry['ra_chance_mean']:.3f} | "
                f"{_ms(_values(rows, task, fam, 'ra_sigma1_cv'))} |"
            )
    return table, "\n".join(lines) + "\n", _claims(rows, tasks, families)


def _claims(rows, tasks, families) -> str:
    out = [f"Verdicts: Welch's t-test over seeds at alpha = {ALPHA}; 'inconclusive' when p >= {ALPHA}.", ""]
    out.append("## (a) entangled skips preserve iterative refinement")
    out.append("")
    out.append("A family shows refinement on a task when (i) its gradient cosine (mean over blocks) is > 0 "
               "(one-sided t-test over seeds) and (ii) its mean lesion accuracy is not significantly below the "
               "identity's (Welch). The claim holds on a task when some entangled family "
               f"({', '.join(f for f in ENTANGLED if f in families)}) does; it is untestable there when the identity "
               "itself does not show (i).")
    out.append("")
    out.append("| task | family | gradient cosine | cos > 0 (p) | lesion accuracy | vs identity (p) | refines |")
    out.append("|---|---|---|---|---|---|---|")
    for task in tasks:
        base_lesion = _values(rows, task, "identity", "lesion_accuracy_mean")
        for fam in families:
            cos = _values(rows, task, fam, "gradient_cosine_mean")
            if cos.size == 0:
                continue
            pos, p_pos = _positive(cos)
            lesion = _values(rows, task, fam, "lesion_accuracy_mean")
            if fam == "identity":
                worse, p_les = False, math.nan
            else:
                verdict, _, p_les = _compare(lesion, base_lesion, +1)
                worse = verdict == "disagrees"
            out.append(f"| {task} | {fam} | {_ms(cos)} | {pos} ({p_pos:.3g}) | {_ms(lesion)} | "
                       f"{'below' if worse else 'not below'} ({p_les:.3g}) | {pos and not worse} |")
    out.append("")
    for key, title in (("b", "(b) conv and ViT: sparse helps, orthogonal hurts (test accuracy vs identity)"),
                       ("c", "(c) RNN: orthogonal helps time-variant, hurts time-invariant (test accuracy vs identity)")):
        out.append(f"## {title}")
        out.append("")
        out.append("| task | family | claimed | family accuracy | identity accuracy | difference | p | verdict |")
        out.append("|---|---|---|---|---|---|---|---|")
        for task, fam, sign in COMPARISONS[key]:
            if task not in tasks or fam not in families or "identity" not in families:
                continue
            a, b = _values(rows, task, fam), _values(rows, task, "identity")
            verdict, diff, p = _compare(a, b, sign)
            out.append(f"| {task} | {fam} | {'higher' if sign > 0 else 'lower'} | {_ms(a)} | {_ms(b)} | "
                       f"{diff:+.3f} | {p:.3g} | {verdict} |")
        out.append("")
    return "\n".join(out)


# --------------------------------------------------------------------------- figures


def _figures(rows, tasks, families, out) -> list[str]:
    written = []
    colours = {f: f"C{i}" for i, f in enumerate(families)}
    for task in tasks:
        slug = task.replace("/", "_")
        fig = Figure(figsize=(1.2 * len(families) + 2, 3.6), layout="constrained")
        ax = fig.add_subplot(1, 1, 1)
        for i, fam in enumerate(families):
            v = _values(rows, task, fam)
            if v.size:
                ax.errorbar(i, v.mean(), yerr=v.std(ddof=1) if v.size > 1 else 0, fmt="o", color=colours[fam], capsize=4)
                ax.plot(np.full(v.size, i) + 0.12, v, ".", color=colours[fam], alpha=0.5)
            diverged = sum(r["status"] == "diverged" for r in rows if r["task"] == task and r["family"] == fam)
            if diverged:
                ax.annotate(f"{diverged} diverged", (i, 0.5), xycoords=("data", "axes fraction"), ha="center",
                            fontsize="small", color=colours[fam])
        chance = [r["chance_accuracy"] for r in rows if r["task"] == task and "chance_accuracy" in r]
        if chance:
            ax.axhline(np.mean(chance), color="k", ls=":", lw=1, label="chance (majority class)")
            ax.legend(fontsize="small")
        ax.set_xticks(range(len(families)), families, rotation=30, ha="right")
        ax.set_ylabel("test accuracy (mean ± std over seeds)")
        ax.set_title(f"{task}: accuracy by skip family")
        fig.savefig(out / f"accuracy_{slug}.png", dpi=110)
        written.append(f"accuracy_{slug}.png")

        fig = Figure(figsize=(13, 3.8), layout="constrained")
        axes = [fig.add_subplot(1, 3, i + 1) for i in range(3)]
        d_std = None
        for fam in families:
            ok = [r for r in rows if r["task"] == task and r["family"] == fam and r["status"] == "ok"
                  and r.get("gradient_cosine_blocks")]  # fmt: skip
            if not ok:
                continue
            d_std = ok[0]["cosine_chance_std"]
            for ax, key in zip(axes, ("gradient_cosine_blocks", "norm_ratio_blocks", "lesion_accuracy_blocks")):
                curves = np.array([[float(v) for v in r[key].split(";")] for r in ok])
                with warnings.catch_warnings():  # an all-NaN column (an RNN's first step) is expected
                    warnings.simplefilter("ignore", RuntimeWarning)
                    mean, std = np.nanmean(curves, axis=0), np.nanstd(curves, axis=0)
                depth = np.arange(1, curves.shape[1] + 1)
                ax.plot(depth, mean, "o-", ms=3, color=colours[fam], label=fam)
                ax.fill_between(depth, mean - std, mean + std, color=colours[fam], alpha=0.15)
        if d_std is not None:
            axes[0].axhspan(-d_std, d_std, color="k", alpha=0.1, label=r"chance $\pm 1/\sqrt{d}$")
        axes[0].axhline(0, color="k", lw=0.5)
        axes[0].set_ylabel(r"cos$(F_l, -\partial\ell/\partial h_l)$")
        axes[1].set_ylabel(r"$\|F_l\| / \|h_{l-1}\|$")
        axes[1].set_yscale("log")
        axes[2].set_ylabel("accuracy with block l replaced by its skip")
        for ax, title in zip(axes, ("gradient cosine", "norm ratio", "lesion accuracy")):
            ax.set_xlabel("block l (time step for the RNN)")
            ax.set_title(f"{task}: {title}")
        axes[0].legend(fontsize="x-small")
        fig.savefig(out / f"refinement_{slug}.png", dpi=110)
        written.append(f"refinement_{slug}.png")
    return written


# ------------------------------------------------------------------------------ main


def _write_csv(path, rows) -> None:
    columns = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def _write_text(path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _split_families(text: str) -> list[str]:
    """Split on commas outside parentheses: ``"a,scaled(b, norm=frobenius)"`` is two names."""
    names, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            names.append(text[start:i])
            start = i + 1
    return names + [text[start:]]


def main(argv=None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--families", default=None,
                   help=f"comma-separated registered family names (default: {','.join(DEFAULT_FAMILIES)}; "
                   f"with --quick: {','.join(FAMILIES)})")
    p.add_argument("--tasks", default=None, help=f"comma-separated subset of {', '.join(TASKS)} (and the --mnist ones)")
    p.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (default 5; 1 with --quick)")
    p.add_argument("--jobs", type=int, default=None, help="worker processes, one torch thread each (default 2; 1 with --quick)")
    p.add_argument("--ra-inputs", type=int, default=None, help="test inputs for the RA metrics (default 16; 8 with --quick)")
    p.add_argument("--mnist", action="store_true", help="also run conv and ViT on mnist5k")
    p.add_argument("--lr", default=None,
                   help="learning rates overriding the defaults, e.g. 'rnn/majority=0.001,rnn/first_marker=0.001' "
                   "(a sensitivity check; the default run uses the documented values)")
    args = p.parse_args(argv)
    out = out_dir(args.out)

    from ramodel import mappings

    names = args.families if args.families is not None else ",".join(FAMILIES if args.quick else DEFAULT_FAMILIES)
    families = [f.strip() for f in _split_families(names) if f.strip()]
    for f in families:
        mappings.get(f)  # an unknown name fails here, with the registry's list
    catalogue = dict(QUICK if args.quick else TASKS)
    if args.mnist and not args.quick:
        catalogue.update(MNIST_TASKS)
    tasks = list(catalogue) if args.tasks is None else [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in catalogue]
    if unknown:
        p.error(f"unknown task(s) {unknown}; choose from {list(catalogue)}")
    for item in [] if args.lr is None else [i for i in args.lr.split(",") if i.strip()]:
        task, _, value = item.partition("=")
        if task.strip() not in catalogue:
            p.error(f"--lr names unknown task {task.strip()!r}; choose from {list(catalogue)}")
        try:
            lr = float(value)
        except ValueError:
            p.error(f"--lr needs TASK=NUMBER items, got {item!r}")
        if not lr > 0:
            p.error(f"--lr values must be > 0, got {item!r}")
        catalogue[task.strip()] = {**catalogue[task.strip()], "lr": lr}
    seeds = list(range(args.seeds if args.seeds is not None else (1 if args.quick else 5)))
    jobs = args.jobs if args.jobs is not None else (1 if args.quick else 2)
    ra_inputs = args.ra_inputs if args.ra_inputs is not None else (8 if args.quick else 16)
    if not seeds or jobs < 1 or ra_inputs < 1:
        p.error("--seeds, --jobs and --ra-inputs must be >= 1")

    grid = [(t, catalogue[t], f, s, ra_inputs) for t in tasks for f in families for s in seeds]
    wall0, cpu0 = time.perf_counter(), time.process_time()
    if jobs == 1:
        import torch

        torch.set_num_threads(1)
        rows = [run_one(*g) for g in grid]
    else:
        # Spawned workers: a fork would inherit torch's thread pools mid-state.
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            rows = list(pool.map(run_one, *zip(*grid)))
    wall = time.perf_counter() - wall0
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = time.process_time() - cpu0 + (children.ru_utime + children.ru_stime if jobs > 1 else 0.0)

    _write_csv(out / "runs.csv", rows)
    table, markdown, claims = summarise(rows, tasks, families)
    _write_csv(out / "summary.csv", table)
    _write_text(out / "summary.md", markdown)
    _write_text(out / "claims.md", claims)
    figures = _figures(rows, tasks, families, out)
    timing = {"wall_seconds": wall, "cpu_seconds": cpu, "runs": len(rows), "jobs": jobs,
              "run_cpu_seconds_sum": float(sum(r["cpu_seconds"] for r in rows)), "quick": bool(args.quick),
              "tasks": tasks, "families": families, "seeds": seeds}  # fmt: skip
    _write_text(out / "timing.json", json.dumps(timing, indent=2) + "\n")
    print(markdown)
    print(claims)
    bad = [r for r in rows if r["status"] == "error" or r["error"].startswith("RA:")]
    for r in bad:
        print(f"{r['task']} {r['family']} seed {r['seed']}: {r['error']}", file=sys.stderr)
    print(f"{len(rows)} runs ({sum(r['status'] == 'ok' for r in rows)} ok, "
          f"{sum(r['status'] == 'diverged' for r in rows)} diverged, {sum(r['status'] == 'error' for r in rows)} errors) "
          f"in {wall:.1f} s wall, {cpu:.1f} s CPU ({jobs} process(es)); figures: {', '.join(figures)}")
    return 1 if any(r["status"] == "error" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
