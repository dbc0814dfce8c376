"""T8 against trained binary networks: measured step ratios versus the proven bound.

Not part of ``python -m proofs`` (it needs torch and trains a network). Run from the
repository root:

    python proofs/evidence_t8_trained.py [--depth 8] [--width 16] [--steps 3000] [--seed 0]

It trains a bias-free ReLU ``ramodel.nets.ResidualMLP`` (identity skips, so each block is
exactly ``h + J_l(h) h``) on digits 0 vs 1, then for every test input measures, per block,
the top singular value sigma_l of the residual Jacobian at that input, how rank-one and
aligned the Jacobians are (sigma_2/sigma_1, |u_l . v_l|, |u_l . u_{l+1}|), the step lengths
``|h_l - h_{l-1}|``, the line defect of the trajectory (sigma_2/sigma_1 of the displacements
``h_l - h_0``), and T8's bound ``(s_max/s_min) prod (1 + sigma_l)`` on the max/min step ratio.
T8's hypotheses (exactly rank one, same u, v) hold only approximately in a trained net, so
the bound is compared, not asserted. Prints one summary line per quantity (medians and
quartiles over inputs).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def measure(*, depth=8, width=16, steps=3000, seed=0):
    """Train and measure; returns a dict of per-input arrays."""
    import torch

    from proofs import t8_binary_ra1 as t8
    from ramodel import datasets, nets, training

    torch.manual_seed(seed)
    data = datasets.digits(classes=(0, 1), seed=seed)
    model = nets.ResidualMLP(data.x_train.shape[1], 2, width=width, depth=depth, bias=False, norm="none",
                             activation="relu", init_seed=seed).double()
    training.train(model, data, steps=steps, protocol="terminal", lr=0.05, seed=seed)
    model.eval()
    x = torch.tensor(np.array(data.x_test), dtype=torch.float64)
    with torch.no_grad():
        h = [model.embed(x)]
        for blk in model.blocks:
            h.append(blk(h[-1]))
    H = torch.stack(h).numpy()  # (L+1, N, d)
    rows = {k: [] for k in ("ratio", "bound", "line_defect", "rank_one", "uv", "uu", "sigma_spread", "gain")}
    for n in range(x.shape[0]):
        sig, us, vs, r1 = [], [], [], []
        for l, blk in enumerate(model.blocks):
            J = torch.autograd.functional.jacobian(blk.branch, torch.as_tensor(H[l, n])).numpy()
            U, S, Vt = np.linalg.svd(J)
            sig.append(S[0])
            r1.append(S[1] / S[0])
            us.append(U[:, 0])
            vs.append(Vt[0])
        sig = np.asarray(sig)
        steps_n = np.linalg.norm(np.diff(H[:, n], axis=0), axis=1)
        disp = H[1:, n] - H[0, n]
        sv = np.linalg.svd(disp, compute_uv=False)
        rows["ratio"].append(steps_n.max() / steps_n.min())
        rows["bound"].append(t8.step_ratio_bound(sig))
        rows["line_defect"].append(sv[1] / sv[0])
        rows["rank_one"].append(max(r1))
        rows["uv"].append(min(abs(u @ v) for u, v in zip(us, vs)))
        rows["uu"].append(min(abs(us[l] @ us[l + 1]) for l in range(depth - 1)))
        rows["sigma_spread"].append(sig.max() / sig.min())
        rows["gain"].append(np.prod(1 + sig))
    out = {k: np.asarray(v) for k, v in rows.items()}
    out["test_accuracy"] = float(training.evaluate(model, data.x_test, data.y_test))
    out["train_steps"] = steps
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depth", type=int, default=8)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    m = measure(depth=args.depth, width=args.width, steps=args.steps, seed=args.seed)
    print(f"digits 0 vs 1, ResidualMLP depth {args.depth}, width {args.width}, {args.steps} steps, "
          f"test accuracy {m['test_accuracy']:.3f}, {m['ratio'].size} test inputs")
    for k in ("ratio", "bound", "line_defect", "rank_one", "uv", "uu", "sigma_spread", "gain"):
        q = np.quantile(m[k], [0.25, 0.5, 0.75])
        print(f"  {k:<13} median {q[1]:.4g}  [{q[0]:.4g}, {q[2]:.4g}]")
    print(f"  ratio <= bound on {np.mean(m['ratio'] <= m['bound']):.1%} of the inputs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
