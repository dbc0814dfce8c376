"""RA1 on the UJM: the representations of one input across depth.

For identity skips, T3 makes every block the same symmetric map ``I + J``, and T5 says
that along each top singular direction ``u_i`` a trajectory moves with the constant step
ratio ``1 + sigma_i``. So trajectories are nearly straight (collinearity near 1), but the
steps grow geometrically: the largest over the smallest step is about
``(1 + sigma_1)^(L-1) = p_1^((L-1)/L)``, which tends to the end-to-end gain ``p_1``, not to 1,
as L grows. With ``k = 1`` the gain ``p_1`` itself grows with depth (T4), so equispacing
gets *worse* with depth; with ``k = 2`` ``p_1`` converges and equispacing levels off.
This script measures collinearity, equispacing, the step ratio and the progress R² of
RA1 for C = 2 and 3, depths 8 and 32, and k = 1 and 2, and draws the trajectories.

Writes ``ra1_trajectories.csv`` and ``ra1_C{C}_L{L}_k{k}.png`` into ``--out``.

    python simulations/ra1_trajectories.py --out out/ra1
"""

from __future__ import annotations

import csv
import sys

from _common import out_dir, parser
from ramodel import plots, simulate


def main(argv=None) -> int:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    out = out_dir(args.out)
    cases = [(2, 8, 1), (3, 8, 2)] if args.quick else [(C, L, k) for k in (1, 2) for C in (2, 3) for L in (8, 32)]
    rows = []
    for C, L, k in cases:
        s = simulate(depth=L, classes=C, width=16, samples_per_class=8, branch_factors=k, seed=0)
        rep = s.report()
        row = {"classes": C, "depth": L, "branch_factors": k, "converged": s.converged, "grad_norm": s.grad_norm,
               "RA1": rep.verdicts["RA1"]}
        for name in ("collinearity", "equispacing", "step_ratio", "progress_r2"):
            m = rep.metrics[name]
            row[name] = m.value
            row[name + "_min"] = m.spread.min if m.spread is not None else m.value
        rows.append(row)
        plots.trajectories(s.representations, labels=s.labels, inputs=6).savefig(out / f"ra1_C{C}_L{L}_k{k}.png", dpi=110)
        print(", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    with open(out / "ra1_trajectories.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
