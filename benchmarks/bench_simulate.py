"""Benchmark: one objective-and-gradient evaluation and one full solve of the UJM.

Baselines measured in the same run:

- the peer: the same objective written in PyTorch, with autograd for the gradient
  (CPU, same thread count);
- the GEMM floor: the flop count over this machine's measured float64 matmul rate. MODEL.md
  counts ``2 (2L+1) d^2 N`` flops. The sweeps actually need ``(3L-1)`` products of
  ``d x d`` by ``d x N`` (L forward, L-1 backward propagations and L gradient products),
  and both counts are reported.

Usage::

    python benchmarks/bench_simulate.py            # both sizes, eval + solve of the small one
    python benchmarks/bench_simulate.py --solve-large
    python benchmarks/bench_simulate.py --threads 1 --depth-table        # issue 19 table
    python benchmarks/bench_simulate.py --threads 1 --depth-table --depths 16,64 --ks 1 --skips identity

The depth table solves the default problem (C = 3, d = 16, 8 points per class, seed 0)
to tol = 1e-8 for every (skip family, k, L) and prints CPU time, steps, Hessian
products, |∇Φ|, whether it converged, the solver used and whether the point is trivial
(J = 0). ``--peer`` adds the PyTorch L-BFGS peer (autograd gradient,
``torch.optim.LBFGS`` with a strong-Wolfe line search) at the small depths.

Prints a table. Timings are medians over repeats after a warm-up.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time


def _threads_from_argv() -> str | None:
    # BLAS reads its thread count when NumPy loads, so --threads must act before the import.
    for i, a in enumerate(sys.argv):
        if a == "--threads" and i + 1 < len(sys.argv):
            return sys.argv[i + 1]
        if a.startswith("--threads="):
            return a.split("=", 1)[1]
    return None


if _threads_from_argv():
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = _threads_from_argv()

import numpy as np  # noqa: E402

import ramodel
from ramodel import model
from ramodel.simulation import simulate

SIZES = [(64, 10, 1000, 32), (256, 10, 2000, 64)]


def median_time(fn, *, repeats: int, warmup: int = 1, cpu: bool = False) -> float:
    """Median wall time (or process CPU time, which a shared machine disturbs far less)."""
    clock = time.process_time if cpu else time.perf_counter
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return statistics.median(times)


def gemm_rate(n: int = 1536, repeats: int = 5) -> float:
    """Measured float64 GEMM rate (flop/s) of this machine's BLAS."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, n, n))
    t = median_time(lambda: a @ b, repeats=repeats)
    return 2 * n**3 / t


def make_problem(d, C, N, L, seed=0):
    rng = np.random.default_rng(seed)
    X, y = ramodel.datasets.gaussian_mixture(C, width=d, samples_per_class=N // C, seed=seed)
    N = y.size
    Y = np.eye(C)[:, y]
    skips = np.broadcast_to(np.eye(d), (L, d, d)).copy()
    p = model.make_problem(np.ascontiguousarray(X.T), Y, skips)
    theta = rng.standard_normal(model.n_params(p)) * (0.1 / np.sqrt(d))
    return p, theta


def torch_value_and_grad(p, theta):
    """The same Φ in PyTorch; gradient by autograd. Returns a callable doing one evaluation."""
    import torch

    X = torch.from_numpy(p.X)
    Y = torch.from_numpy(p.Y)
    M = torch.from_numpy(p.skips)
    L, d, C = p.depth, p.width, p.classes
    lam_J, lam_W = p.lambda_J, p.lambda_W
    N = p.n_inputs
    J0 = torch.from_numpy(theta[: L * d * d].reshape(L, d, d).copy())
    W0 = torch.from_numpy(theta[L * d * d :].reshape(C, d).copy())

    def run():
        J = J0.clone().requires_grad_(True)
        W = W0.clone().requires_grad_(True)
        h = X
        A = M + J
        for l in range(L):
            h = A[l] @ h
        R = W @ h - Y
        phi = 0.5 * (R * R).sum() / N + 0.5 * lam_J * (J * J).sum() + 0.5 * lam_W * (W * W).sum()
        phi.backward()
        return float(phi.detach()), J.grad, W.grad

    return run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--solve-large", action="store_true", help="also time the full solve at the large size")
    parser.add_argument("--threads", type=int, default=None, help="BLAS and torch threads (default: all cores)")
    parser.add_argument("--depth-table", action="store_true", help="only the issue-19 depth table")
    parser.add_argument("--depths", default="16,64,256,1024")
    parser.add_argument("--ks", default="1,2,3")
    parser.add_argument("--skips", default="identity,orthogonal,permutation,none")
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--peer", action="store_true", help="add the PyTorch L-BFGS peer at L <= 16")
    parser.add_argument("--no-precondition", action="store_true",
                        help="depth table without the Gauss-Newton preconditioner of the trust-region CG (A/B)")
    args = parser.parse_args(argv)
    if args.depth_table:
        return depth_table(args)

    threads = str(args.threads) if args.threads else (os.environ.get("OMP_NUM_THREADS") or str(os.cpu_count()))
    try:
        import torch

        torch.set_num_threads(int(threads))
        torch_version = torch.__version__
    except ImportError:
        torch = None
        torch_version = "not installed"
    rate = gemm_rate()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, threads={threads}")
    print(f"numpy {np.__version__}, torch {torch_version}, python {sys.version.split()[0]}")
    print(f"measured float64 GEMM rate: {rate / 1e9:.1f} GFLOP/s")
    print()
    header = (
        f"{'(d, C, N, L)':>22} {'clock':>6} {'ramodel [s]':>12} {'torch [s]':>10} {'torch/ours':>11} "
        f"{'floor spec [s]':>15} {'ours/floor':>11} {'floor exact [s]':>16} {'ours/exact':>11}"
    )
    print("objective + gradient, float64 (floors use the wall-clock GEMM rate, so read them against 'wall')")
    print(header)
    rows = []
    for d, C, N, L in SIZES:
        p, theta = make_problem(d, C, N, L)
        # Check both implementations agree before timing them.
        f_ours, g_ours = model.value_and_grad(theta, p)
        run = None
        if torch is not None:
            run = torch_value_and_grad(p, theta)
            f_t, gJ_t, _ = run()
            assert abs(f_t - f_ours) <= 1e-10 * abs(f_ours)
            gJ = g_ours[: L * d * d].reshape(L, d, d)
            assert np.allclose(gJ_t.numpy(), gJ, rtol=1e-9, atol=1e-14)
        floor_spec = 2 * (2 * L + 1) * d * d * N / rate
        floor_exact = 2 * (3 * L - 1) * d * d * N / rate
        for cpu in (False, True):
            ours = median_time(lambda: model.value_and_grad(theta, p), repeats=args.repeats, cpu=cpu)
            peer = median_time(run, repeats=args.repeats, cpu=cpu) if run is not None else float("nan")
            rows.append((d, C, N, L, "cpu" if cpu else "wall", ours, peer))
            print(
                f"{str((d, C, N, L)):>22} {'cpu' if cpu else 'wall':>6} {ours:>12.4f} {peer:>10.4f} {peer / ours:>11.2f} "
                f"{floor_spec:>15.4f} {ours / floor_spec:>11.2f} {floor_exact:>16.4f} {ours / floor_exact:>11.2f}"
            )
    print()
    print("full solve (simulate, solver='auto'), float64, Gaussian mixture, seed 0")
    print(f"{'(d, C, N, L)':>22} {'tol':>8} {'time [s]':>10} {'steps':>7} {'|grad|':>10} {'s/step':>8} {'converged':>10}")
    for i, (d, C, N, L) in enumerate(SIZES):
        if i == 1 and not args.solve_large:
            print(f"{str((d, C, N, L)):>22}  (skipped; pass --solve-large)")
            continue
        tol = 1e-8
        t0 = time.perf_counter()
        s = simulate(depth=L, classes=C, width=d, samples_per_class=N // C, tol=tol, seed=0)
        t = time.perf_counter() - t0
        print(
            f"{str((d, C, N, L)):>22} {tol:>8.0e} {t:>10.2f} {s.steps:>7} {s.grad_norm:>10.2e} "
            f"{t / max(s.steps, 1):>8.3f} {str(s.converged):>10}"
        )
    return 0


def torch_lbfgs_solve(L, C, k, *, tol=1e-8, max_iter=20000):
    """The peer: a user's own PyTorch solve of the same problem (k = 1 and 2), CPU seconds."""
    import torch

    from ramodel._validation import as_generator

    d = max(16, C)
    data_rng, init_rng, _ = as_generator(0).spawn(3)
    X, y = ramodel.datasets.gaussian_mixture(C, width=d, samples_per_class=8, seed=data_rng)
    N = y.size
    Xt = torch.from_numpy(np.ascontiguousarray(X.T))
    Y = torch.from_numpy(np.eye(C)[:, y])
    scale = 0.1 / np.sqrt(d)
    B = torch.tensor(init_rng.standard_normal((L, k, d, d)) * scale, requires_grad=True)
    W = torch.tensor(init_rng.standard_normal((C, d)) * scale, requires_grad=True)
    eye = torch.eye(d, dtype=torch.float64)
    opt = torch.optim.LBFGS([B, W], lr=1, max_iter=max_iter, tolerance_grad=tol / 10, tolerance_change=0,
                            history_size=10, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        h = Xt
        for l in range(L):
            J = B[l, 0]
            for i in range(1, k):
                J = B[l, i] @ J
            h = (eye + J) @ h
        R = W @ h - Y
        phi = 0.5 * (R * R).sum() / N + 0.005 * (B * B).sum() + 0.005 * (W * W).sum()
        phi.backward()
        return phi

    t0 = time.process_time()
    opt.step(closure)
    t = time.process_time() - t0
    closure()
    gn = float(torch.sqrt((B.grad ** 2).sum() + (W.grad ** 2).sum()))
    return t, opt.state[opt._params[0]]["n_iter"], gn


def depth_table(args) -> int:
    depths = [int(x) for x in args.depths.split(",")]
    ks = [int(x) for x in args.ks.split(",")]
    skips = args.skips.split(",")
    if args.no_precondition:
        import ramodel.simulation

        ramodel.simulation._PRECONDITION = False
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"threads={os.environ.get('OMP_NUM_THREADS')}; numpy {np.__version__}; CPU seconds (process_time)")
    print(f"default problem: C={args.classes}, d={max(16, args.classes)}, 8 per class, seed 0, tol 1e-8, float64; "
          f"trust-region CG {'not ' if args.no_precondition else ''}preconditioned")
    print(f"{'skip':>12} {'k':>2} {'L':>5} {'cpu [s]':>8} {'steps':>6} {'H prods':>8} {'|grad|':>9} "
          f"{'conv':>5} {'trivial':>7} {'solver':>13}")
    for skip in skips:
        for k in ks:
            for L in depths:
                t0 = time.process_time()
                s = simulate(depth=L, classes=args.classes, branch_factors=k, skip=skip, tol=1e-8, seed=0)
                t = time.process_time() - t0
                prods = sum(p.products for p in s.phases)
                print(f"{skip:>12} {k:>2} {L:>5} {t:>8.2f} {s.steps:>6} {prods:>8} {s.grad_norm:>9.2e} "
                      f"{str(s.converged):>5} {str(s.is_trivial):>7} {s.config['solver_used']:>13}", flush=True)
                if args.peer and L <= 16 and skip == "identity" and k <= 2:
                    tp, n, gn = torch_lbfgs_solve(L, args.classes, k)
                    print(f"{'torch LBFGS':>12} {k:>2} {L:>5} {tp:>8.2f} {n:>6} {'-':>8} {gn:>9.2e} "
                          f"{str(gn <= 1e-8):>5} {'':>7} {'peer':>13}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
