"""``python -m ramodel``: solve one model and print its summary (the README's main job)."""

from __future__ import annotations

import argparse
import sys

from .simulation import simulate


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ramodel",
        description="Solve the Unconstrained Jacobians Model and print convergence, "
        "the top singular values per layer, the rank, and whether T1-T3 hold.",
    )
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--samples-per-class", type=int, default=8)
    parser.add_argument("--branch-factors", type=int, default=1)
    parser.add_argument("--loss", default="mse", choices=["mse", "cross_entropy"])
    parser.add_argument("--skip", default="identity")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        sim = simulate(
            depth=args.depth,
            classes=args.classes,
            width=args.width,
            samples_per_class=args.samples_per_class,
            branch_factors=args.branch_factors,
            loss=args.loss,
            skip=args.skip,
            seed=args.seed,
        )
    except (ValueError, TypeError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(sim.summary())
    return 0 if sim.converged else 1


if __name__ == "__main__":
    sys.exit(main())
