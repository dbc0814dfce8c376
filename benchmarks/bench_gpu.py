"""GPU benchmark for issue 7 (CuPy only; exits cleanly with a message without a GPU).

Three parts, each printed as soon as it is measured (so a time limit still leaves the
earlier tables):

1. ``top_singular`` (every method) against ``cupy.linalg.svd`` on the stacks of
   ``bench_spectra.py`` (64 x 512 x 512, k = 10, Jacobian-like and Gaussian).
2. The "within 5x of one large GEMM" goal: the flops of the randomized method's
   products with ``J`` (counted by running the matrix-free twin
   ``top_singular_operator`` with the same seed: ``P`` products of ``(m, n)`` by
   ``(n, l)`` per matrix, ``2 P B m n l`` flops; the skinny QRs and small SVDs are
   extra work that does not count) and the time of one GEMM with that flop count,
   (a) square ``N x N @ N x N`` and (b) the same products fused into one skinny GEMM
   ``(B m, n) @ (n, P l)``.
3. ``ramodel.simulate`` at ``(d, C, N, L) = (512, 10, 10000, 64)``: one
   objective-and-gradient evaluation (``ramodel.model.value_and_grad``) on CuPy and
   on NumPy, and the full ``simulate`` on CuPy. The full NumPy run is far too slow
   at this size (each evaluation is ~1e12 flops; L-BFGS then Newton-MINRES take
   thousands), so its time is estimated from the CuPy run and the ratio of the
   evaluation times unless ``--numpy-simulate`` is given.

Usage::

    python benchmarks/bench_gpu.py                         # everything, library defaults
    python benchmarks/bench_gpu.py --sim-max-steps 2000    # bound the simulate run
    python benchmarks/bench_gpu.py --skip-simulate         # spectra and GEMM only
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

import numpy as np

import bench_spectra as bs
from ramodel.spectra import top_singular_operator


def cupy_or_none() -> tuple[object | None, str]:
    try:
        import cupy
    except Exception as exc:  # ImportError, or a broken CUDA install raising at import
        return None, f"CuPy is not importable ({type(exc).__name__}: {exc})"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return None, f"CuPy imported but no usable CUDA GPU ({type(exc).__name__}: {exc})"
    if n < 1:
        return None, "CuPy imported but CUDA reports 0 GPUs"
    return cupy, ""


# ----------------------------------------------------------------------------- part 2


def count_products(cp, J, k: int, *, seed: int, power_iters) -> tuple[int, int]:
    """(number of products with J or J^T, sketch width l) of ``method="randomized"``.

    Counted on the matrix-free twin, which runs the same iterations for the same seed.
    """
    calls = [0]

    def matvec(X):
        calls[0] += 1
        return J @ X

    def rmatvec(Y):
        calls[0] += 1
        return (Y.swapaxes(-1, -2) @ J).swapaxes(-1, -2)

    m, n = J.shape[-2:]
    top_singular_operator(matvec, rmatvec, tuple(J.shape), k, seed=seed, power_iters=power_iters, xp=cp)
    return calls[0], min(k + 10, min(m, n))


def gemm_part(cp, args, spectra_rows) -> str:
    """Rows for ``method="randomized"`` only: ``auto`` is the same computation when
    every matrix converges (Jacobian-like stack) and adds an exact fallback otherwise."""
    sync = bs.synchronizer(cp)
    lines = [
        "| stack | method | products P | Gflop (2 P B m n l) | method s | square GEMM s (N) | x square | "
        "fused GEMM s | x fused |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    variants = [("top_singular(randomized)", "auto")] + [
        (f"top_singular(randomized, power_iters={q})", q) for q in args.fixed_q
    ]
    for kind in args.stacks:
        J = cp.asarray(bs.make_stack(kind, args.batch, args.size, args.seed))
        B, m, n = J.shape
        for label, q in variants:
            rows = [r for r in spectra_rows if r["stack"] == kind and r["method"] == label]
            if not rows:
                continue
            P, l = count_products(cp, J, args.k, seed=args.seed, power_iters=q)
            flops = 2.0 * P * B * m * n * l
            N = max(1, round((flops / 2.0) ** (1.0 / 3.0)))
            A = cp.asarray(np.random.default_rng(0).standard_normal((N, N)))
            # noqa F821: the lambdas run inside time_calls, before the del below.
            t_sq, _ = bs.time_calls(lambda: A @ A, repeats=max(args.repeats, 5), warmup=1, sync=sync)  # noqa: F821
            Jflat = J.reshape(B * m, n)
            X = cp.asarray(np.random.default_rng(1).standard_normal((n, P * l)))
            t_fused, _ = bs.time_calls(lambda: Jflat @ X, repeats=max(args.repeats, 5), warmup=1, sync=sync)  # noqa: F821
            t_sq, t_fused = statistics.median(t_sq), statistics.median(t_fused)
            t = statistics.median(rows[0]["times"])
            lines.append(
                f"| {kind} | {label} | {P} | {flops / 1e9:.3g} | {t:.4f} | {t_sq:.5f} ({N}) | "
                f"{t / t_sq:.1f}x | {t_fused:.5f} | {t / t_fused:.1f}x |"
            )
            del A, X, Jflat
        del J
    return "\n".join(lines)


# ----------------------------------------------------------------------------- part 3


SIM = {"width": 512, "classes": 10, "n_inputs": 10_000, "depth": 64}


def make_problem(xp_name: str, *, seed: int):
    """The UJM problem at the benchmark size on one backend, and a random theta."""
    from ramodel import model
    from ramodel.backend import asarray, get_namespace
    from ramodel.datasets import gaussian_mixture

    xp = get_namespace(backend=xp_name)
    d, C, N, L = SIM["width"], SIM["classes"], SIM["n_inputs"], SIM["depth"]
    X, y = gaussian_mixture(C, width=d, samples_per_class=N // C, seed=seed)
    Y = np.eye(C)[:, y]
    skips = np.broadcast_to(np.eye(d), (L, d, d))
    problem = model.make_problem(
        asarray(np.ascontiguousarray(X.T), xp=xp, dtype="float64"),
        asarray(Y, xp=xp, dtype="float64"),
        asarray(np.ascontiguousarray(skips), xp=xp, dtype="float64"),
    )
    rng = np.random.default_rng(seed + 1)
    theta = asarray(rng.standard_normal(model.n_params(problem)) * (0.1 / math.sqrt(d)), xp=xp, dtype="float64")
    return xp, model, problem, theta


def simulate_part(cp, args) -> str:
    import ramodel

    d, C, N, L = SIM["width"], SIM["classes"], SIM["n_inputs"], SIM["depth"]
    out = [f"(d, C, N, L) = ({d}, {C}, {N}, {L}), float64, identity skips, MSE", ""]
    evals = {}
    for name, repeats in (("cupy", max(args.repeats, 5)), ("numpy", args.numpy_repeats)):
        xp, model, problem, theta = make_problem(name, seed=args.seed)
        sync = bs.synchronizer(xp)
        # noqa F821: the lambda runs inside time_calls, before the del below.
        times, _ = bs.time_calls(lambda: model.value_and_grad(theta, problem), repeats=repeats, warmup=1, sync=sync)  # noqa: F821
        evals[name] = statistics.median(times)
        out.append(f"- value_and_grad on {name}: median {evals[name]:.4f} s (min-max {min(times):.4f}-{max(times):.4f}, "
                   f"{repeats} repeats)")
        print(out[-1], file=sys.stderr, flush=True)
        del problem, theta
    out.append(f"- value_and_grad speed-up cupy vs numpy: {evals['numpy'] / evals['cupy']:.1f}x")

    kwargs = dict(depth=L, classes=C, width=d, samples_per_class=N // C, seed=args.seed)
    if args.sim_max_steps is not None:
        kwargs["max_steps"] = args.sim_max_steps
    runs = {}
    for name in ("cupy", "numpy") if args.numpy_simulate else ("cupy",):
        t0 = time.perf_counter()
        sim = ramodel.simulate(backend=name, **kwargs)
        if name == "cupy":
            cp.cuda.Device().synchronize()
        runs[name] = time.perf_counter() - t0
        out.append(f"- simulate on {name}: {runs[name]:.1f} s, steps={sim.steps}, converged={sim.converged}, "
                   f"grad_norm={sim.grad_norm:.2e} (max_steps={kwargs.get('max_steps', 'default')})")
        print(out[-1], file=sys.stderr, flush=True)
        del sim
    if "numpy" in runs:
        out.append(f"- simulate speed-up cupy vs numpy: {runs['numpy'] / runs['cupy']:.1f}x (measured)")
    else:
        est = runs["cupy"] * evals["numpy"] / evals["cupy"]
        out.append(f"- simulate on numpy: not run; estimated {est:.0f} s "
                   f"(= cupy time x evaluation-time ratio; pass --numpy-simulate to measure)")
    return "\n".join(out)


# ----------------------------------------------------------------------------- main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stacks", type=lambda s: s.split(","), default=list(bs.STACKS))
    p.add_argument("--methods", type=lambda s: s.split(","), default=["svd", "gram", "randomized", "auto"])
    p.add_argument("--fixed-q", type=lambda s: [int(x) for x in s.split(",") if x], default=[2],
                   help="extra rows: method='randomized' with these fixed power_iters")
    p.add_argument("--skip-simulate", action="store_true", help="only parts 1 and 2")
    p.add_argument("--sim-max-steps", type=int, default=None, help="max_steps for simulate (default: library's)")
    p.add_argument("--numpy-repeats", type=int, default=2, help="repeats of the NumPy evaluation (slow)")
    p.add_argument("--numpy-simulate", action="store_true", help="also run the full simulate on NumPy (hours)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    cp, why = cupy_or_none()
    if cp is None:
        print(f"bench_gpu: no CuPy GPU, nothing to measure: {why}. "
              "Run it on a machine with CUDA and `pip install 'ramodel[gpu]'`.", file=sys.stderr)
        return 0
    args.backend = "cupy"
    print(f"## GPU benchmark (issue 7): k={args.k}, {args.batch} x {args.size} x {args.size} float64")
    print()
    print("\n".join(bs.machine_lines(cp)))
    print(f"- repeats={args.repeats} (median, min-max), warmup={args.warmup}, seed={args.seed}")
    print()
    print("### 1. top_singular vs cupy.linalg.svd")
    print()
    rows = bs.run(args)
    print(bs.table(rows))
    print(flush=True)
    print("### 2. randomized vs one GEMM of the same flop count")
    print()
    print(gemm_part(cp, args, rows))
    print(flush=True)
    if not args.skip_simulate:
        print("### 3. simulate, cupy vs numpy")
        print()
        print(simulate_part(cp, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
