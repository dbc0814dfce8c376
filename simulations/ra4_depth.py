"""RA4 on the UJM: a depth sweep for one and two branch factors.

T4 (MODEL.md) predicts ``sigma_i(J) = p_i^{1/L} - 1``. With ``k = 1`` the optimal
end-to-end gains ``p_i`` still grow with depth, so ``L sigma_1`` grows like ``log L`` and
the log-log slope of ``sigma_1`` against ``L`` is shallower than -1. With ``k = 2``
(a two-layer branch, a nuclear-norm-like penalty) the gains converge, ``L sigma_1``
levels off, and the slope is close to -1.

Writes ``ra4_depth.csv`` (one row per run), ``ra4_fits.csv`` (one slope fit per k) and
two figures into ``--out``. Default size: L = 2..1024 (doubling), 3 seeds. Depths above
32 are solved by depth continuation (issue 19), so L = 1024 takes well under a minute
of CPU time per run; the whole default grid takes about ten minutes on 2 cores.

    python simulations/ra4_depth.py --out out/ra4
    python simulations/ra4_depth.py --out out/ra4 --max-depth 64      # the earlier grid
"""

from __future__ import annotations

import csv
import sys

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from _common import out_dir, parser
from ramodel import plots
from ramodel.sweeps import sweep


def main(argv=None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--max-depth", type=int, default=1024, help="deepest L of the doubling grid (default 1024)")
    args = p.parse_args(argv)
    out = out_dir(args.out)
    depths = [2, 4, 8] if args.quick else [2**i for i in range(1, 64) if 2**i <= args.max_depth]
    seeds = [0] if args.quick else [0, 1, 2]
    common = dict(depths=depths, classes=3, widths=8, seeds=seeds, samples_per_class=8)
    results = {k: sweep(**common, branch_factors=k) for k in (1, 2)}
    rows = [r for k in (1, 2) for r in results[k].rows]
    columns = list(results[1].columns)
    with open(out / "ra4_depth.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)

    fig = Figure(figsize=(9, 3.8), layout="constrained")
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    fits = []
    for k, marker in ((1, "o"), (2, "s")):
        res = results[k]
        ok = [r for r in res.rows if not r["error"]]
        L = np.array([r["depth"] for r in ok], float)
        s1 = np.array([r["sigma1_mean"] for r in ok])
        (_, fit), = res.depth_slope()
        fits.append({"branch_factors": k, **fit.to_dict(), "within_[-1.3,-0.7]": fit.within()})
        ax1.loglog(L, s1, marker, ms=4, alpha=0.7, label=f"k={k}: slope {fit.slope:.3f} [{fit.ci_low:.3f}, {fit.ci_high:.3f}]")
        grid = np.geomspace(L.min(), L.max(), 50)
        ax1.loglog(grid, np.exp(fit.intercept) * grid**fit.slope, "-", color=ax1.lines[-1].get_color())
        ax2.semilogx(L, L * s1, marker, ms=4, alpha=0.7, label=f"k={k}")
        print(f"k={k}: slope {fit.slope:.3f}, {int(fit.confidence * 100)}% CI [{fit.ci_low:.3f}, {fit.ci_high:.3f}], "
              f"r2 {fit.r2:.4f}, n={fit.n}; L*sigma1 by depth: "
              + ", ".join(f"{d}: {np.mean(L[L == d] * s1[L == d]):.3f}" for d in sorted(set(L.astype(int)))))
    for ax in (ax1, ax2):
        ax.set_xticks(depths, [str(d) for d in depths])
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax1.set_xlabel("depth L")
    ax1.set_ylabel(r"mean $\sigma_1(J_l)$")
    ax1.set_title("RA4: top singular value against depth")
    ax1.legend(fontsize="small")
    ax2.set_xlabel("depth L")
    ax2.set_ylabel(r"$L\,\sigma_1$")
    ax2.set_title("T4: k=1 grows like log L, k=2 levels off")
    ax2.legend(fontsize="small")
    fig.savefig(out / "ra4_depth.png", dpi=120)
    plots.depth_scaling(
        np.array([r["depth"] for r in results[2].rows], float),
        np.array([r["sigma1_mean"] for r in results[2].rows]),
        slope=fits[1]["slope"], intercept=fits[1]["intercept"], ci=(fits[1]["ci_low"], fits[1]["ci_high"]),
        label="UJM, k=2",
    ).savefig(out / "ra4_k2_fit.png", dpi=120)
    with open(out / "ra4_fits.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(fits[0]))
        w.writeheader()
        w.writerows(fits)
    failed = sum(len(results[k].failed) for k in (1, 2))
    print(f"wrote {out}/ra4_depth.csv, ra4_fits.csv, ra4_depth.png, ra4_k2_fit.png; failed runs: {failed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
