"""RA3 on the UJM: the rank of every residual Jacobian tracks the number of classes.

T1 (MODEL.md) bounds ``rank J_l <= C`` at every critical point. The sweep solves the model
for C = 2..10 at fixed width and depth and records the numerical rank (sigma_i >= 1e-3
sigma_1), the share of energy in the top C singular values, and sigma_{C+1}/sigma_1.

Writes ``ra3_classes.csv`` and ``ra3_classes.png`` (rank against C, and the spectra of a
few runs) into ``--out``.

    python simulations/ra3_classes.py --out out/ra3
"""

from __future__ import annotations

import csv
import sys

import numpy as np
from matplotlib.figure import Figure

from _common import out_dir, parser
from ramodel import simulate
from ramodel.sweeps import sweep


def main(argv=None) -> int:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    out = out_dir(args.out)
    classes = [2, 3, 5] if args.quick else list(range(2, 11))
    seeds = [0] if args.quick else [0, 1, 2]
    width, depth = 16, 8
    res = sweep(depths=depth, classes=classes, widths=width, seeds=seeds, samples_per_class=6)
    with open(out / "ra3_classes.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(res.columns), extrasaction="ignore")
        w.writeheader()
        w.writerows(res.rows)

    fig = Figure(figsize=(9, 3.8), layout="constrained")
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    ok = [r for r in res.rows if not r["error"]]
    C = np.array([r["classes"] for r in ok])
    rank = np.array([r["numerical_rank"] for r in ok])
    ax1.plot(C, rank, "o", alpha=0.6, label="median numerical rank of J_l")
    ax1.plot(C, C, "k:", label="rank = C")
    ax1.set_xlabel("classes C")
    ax1.set_ylabel("numerical rank (tau = 1e-3)")
    ax1.set_title(f"RA3: rank tracks C (d={width}, L={depth})")
    ax1.legend(fontsize="small")
    for c in classes[:: max(1, len(classes) // 4)]:
        s = simulate(depth=depth, classes=c, width=width, samples_per_class=6, seed=0)
        sv = np.linalg.svd(s.jacobians, compute_uv=False).mean(axis=0)
        ax2.semilogy(np.arange(1, width + 1), np.maximum(sv, 1e-17), "o-", ms=3, label=f"C={c}")
    ax2.set_xlabel("index i")
    ax2.set_ylabel(r"mean over layers of $\sigma_i(J_l)$")
    ax2.set_title("spectra drop after index C")
    ax2.legend(fontsize="small")
    fig.savefig(out / "ra3_classes.png", dpi=120)
    agree = all(r["numerical_rank"] == r["classes"] for r in ok)
    for c in classes:
        rs = [r for r in ok if r["classes"] == c]
        print(f"C={c}: median rank {[r['numerical_rank'] for r in rs]}, energy_top_C "
              f"{min(r['energy_top_C'] for r in rs):.12f}, RA3 {[r['RA3'] for r in rs]}")
    print(f"rank == C in every run: {agree}; failed runs: {len(res.failed)}; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
