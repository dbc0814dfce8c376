"""Entangled skips on the UJM: which RA properties each skip family keeps, and why.

Derived (``proofs/t6_entangled.py``, k = 1, at every critical point):

- T1 (rank <= C) and T2 (the chain identity) hold for **every** skip family, so RA3 survives.
- ``J_L M_L^T`` is symmetric for every family (T6, general form).
- **Orthogonal families** (orthogonal, permutation, block_orthogonal): with
  ``Q_l = M_L ... M_{l+1}`` the rotated Jacobians ``Q_l J_l Q_{l-1}^T`` satisfy the
  identity-skip equations, so ``J_l M_l^T`` is symmetric at *every* layer, all ``J_l`` have
  the **same singular values** (RA4 within a model: CV of sigma_1 = 0), and
  ``v_l = M_l^T u_l``: left and right vectors are aligned *through the skip*, so the
  plain RA2 alignment ``U^T V`` and cross-depth alignment ``U_i^T U_j`` are lost in general.
  Trajectories are lines only in the rotated frame, so RA1 (collinearity) breaks.
- **none** (M = 0): balancedness; all ``J_l`` share their singular values, no symmetry.
- **correlation, sparse_unipotent**: only the last-layer symmetry of ``J_L M_L^T``;
  singular values differ across layers and RA2/RA1 are not protected (measured).

This script measures all of that: RA1-RA4 from ``RAReport``, plus the theorem measures
``skip_asym_L`` (T6), ``skip_asym_inner`` (max over l < L of ``asym(J_l M_l^T)``) and
``sigma_spread`` (max over l, i <= C of ``|sigma_i(J_l) - sigma_i(J_1)| / sigma_1(J_1)``).

Writes ``entangled.csv`` (one row per family and seed), ``entangled_summary.csv`` (means
over seeds) and ``entangled.png`` into ``--out``. Default: 11 families x 3 seeds, L = 8,
C = 3, d = 12, in well under 5 minutes on 2 cores.

    python simulations/entangled.py --out out/entangled
"""

from __future__ import annotations

import csv
import sys

import numpy as np
from matplotlib.figure import Figure

from _common import out_dir, parser
from ramodel import simulate, theory

FAMILIES = [
    ("identity", {}),
    ("none", {}),
    ("orthogonal", {}),
    ("permutation", {}),
    ("permutation", {"signed": True}),
    ("block_orthogonal", {"block": 4}),
    ("sparse_unipotent", {"density": 0.2}),
    ("correlation", {"kind": "toeplitz", "rho": 0.5}),
    ("correlation", {"kind": "banded", "bandwidth": 3}),
    ("correlation", {"kind": "block", "rho": 0.5, "block": 4}),
    ("scaled(correlation)", {}),
]
METRICS = ("collinearity", "equispacing", "a_lr", "A_left", "A_right", "numerical_rank", "energy_top_C", "sigma1_cv")


def measure(skip, params, seed, *, depth, classes, width):
    s = simulate(depth=depth, classes=classes, width=width, samples_per_class=6, skip=skip, skip_params=params, seed=seed)
    rep = s.report()
    J, M = s.jacobians, s.skips
    sv = np.linalg.svd(J, compute_uv=False)[:, :classes]
    row = {
        "family": skip + ("" if not params else "(" + ", ".join(f"{k}={v}" for k, v in params.items()) + ")"),
        "seed": seed, "converged": s.converged, "grad_norm": s.grad_norm,
        "skip_asym_L": float(theory.skip_asymmetry(J[-1], M[-1])) if np.any(M[-1]) else 0.0,
        "skip_asym_inner": float(max(theory.skip_asymmetry(J[l], M[l]) for l in range(depth - 1))) if np.any(M) else 0.0,
        "sigma_spread": float(np.max(np.abs(sv - sv[0])) / sv[0, 0]) if sv[0, 0] > 0 else float("nan"),
        "chain_residual": float(np.max(theory.chain_residuals(J, M))),
    }
    for name in METRICS:
        row[name] = float(rep.metrics[name].value) if name in rep.metrics else float("nan")
    row.update({v: rep.verdicts.get(v) for v in ("RA1", "RA2", "RA3", "RA4")})
    return row


def main(argv=None) -> int:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    out = out_dir(args.out)
    families = FAMILIES[:4] if args.quick else FAMILIES
    seeds = [0] if args.quick else [0, 1, 2]
    depth, classes, width = (4, 3, 8) if args.quick else (8, 3, 12)
    rows = [measure(f, p, s, depth=depth, classes=classes, width=width) for f, p in families for s in seeds]
    with open(out / "entangled.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    names = list(dict.fromkeys(r["family"] for r in rows))
    numeric = [k for k, v in rows[0].items() if isinstance(v, float) and k != "grad_norm"]
    summary = []
    for name in names:
        rs = [r for r in rows if r["family"] == name]
        summary.append({"family": name, **{k: float(np.mean([r[k] for r in rs])) for k in numeric},
                        **{v: "/".join(str(r[v])[0] for r in rs) for v in ("RA1", "RA2", "RA3", "RA4")}})
    with open(out / "entangled_summary.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(summary[0]))
        w.writeheader()
        w.writerows(summary)

    shown = ["collinearity", "A_left", "a_lr", "numerical_rank", "sigma_spread", "skip_asym_inner"]
    fig = Figure(figsize=(12, 6.5), layout="constrained")
    for i, key in enumerate(shown):
        ax = fig.add_subplot(2, 3, i + 1)
        means = [np.mean([r[key] for r in rows if r["family"] == n]) for n in names]
        ax.barh(range(len(names)), means, color="C0")
        ax.set_yticks(range(len(names)), names if i % 3 == 0 else [""] * len(names), fontsize="x-small")
        ax.invert_yaxis()
        ax.set_title(key, fontsize="small")
        if key == "numerical_rank":
            ax.axvline(classes, color="k", ls=":")
    fig.suptitle(f"UJM with entangled skips (L={depth}, C={classes}, d={width}; mean over {len(seeds)} seeds)")
    fig.savefig(out / "entangled.png", dpi=110)

    cols = ["family", "collinearity", "A_left", "a_lr", "numerical_rank", "sigma1_cv", "sigma_spread", "skip_asym_L",
            "skip_asym_inner", "RA1", "RA2", "RA3", "RA4"]
    print(" | ".join(cols))
    for s in summary:
        print(" | ".join(f"{s[c]:.3g}" if isinstance(s[c], float) else str(s[c]) for c in cols))
    print(f"all converged: {all(r['converged'] for r in rows)}; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
