"""Benchmark ``ramodel.spectra.top_singular`` against a full batched SVD (issue 7).

For each test stack, times ``xp.linalg.svd(J, full_matrices=False)`` (the baseline,
measured in the same run) and ``top_singular(J, k, method=...)`` for every method,
and reports the speed-up and the accuracy against the baseline's top-k triplets.
Extra rows (``--fixed-q``) time ``method="randomized"`` with a fixed number of power
iterations and no residual test (the "for best performance" setting).

Test stacks (``batch`` matrices of ``size x size``, built on the host from ``--seed``):

* ``jacobian``: Jacobian-like, ``J = U diag(s) V^T`` with Haar ``U``, ``V``: a rank-10
  signal ``s_i = 0.8^i`` (i < 10) over a decaying tail ``s_{10+j} = 0.01 exp(-j/50)``;
* ``gaussian``: full-rank Gaussian ``G / sqrt(size)``, whose flat spectrum is the
  hard case for randomized methods.

Usage::

    python benchmarks/bench_spectra.py                       # NumPy, 64 x 512 x 512, k = 10
    python benchmarks/bench_spectra.py --backend cupy        # same on the GPU
    python benchmarks/bench_spectra.py --batch 8 --size 128 --repeats 2   # quick

Timing: ``--warmup`` untimed calls, then the median (and min-max) of ``--repeats``
calls; on CuPy every call is followed by a device synchronisation.
Accuracy columns: ``err S`` = max relative error of the top-k singular values;
``sinT`` = max over matrices of the sine of the largest principal angle between the
top-k left (and right) subspaces and the baseline's; ``res`` = max of
``|J v_i - s_i u_i|, |J^T u_i - s_i v_i|`` (combined) divided by ``s_1``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np

from ramodel.backend import get_namespace, to_numpy
from ramodel.spectra import METHODS, top_singular, triplet_residual

STACKS = ("jacobian", "gaussian")


# ----------------------------------------------------------------------------- machine


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_lines(xp) -> list[str]:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    lines = [
        f"- CPU: {cpu_model()} ({cores} cores available to this process)",
        f"- Python {platform.python_version()}, NumPy {np.__version__}",
    ]
    try:
        from threadpoolctl import threadpool_info

        for info in threadpool_info():
            if info.get("user_api") == "blas":
                lines.append(
                    f"- BLAS: {info.get('internal_api')} {info.get('version')} "
                    f"({info.get('architecture')}, {info.get('num_threads')} threads)"
                )
    except ImportError:
        blas = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
        lines.append(f"- BLAS: {blas.get('name')} {blas.get('version')}")
    if xp.__name__.startswith("cupy"):
        dev = xp.cuda.Device()
        props = xp.cuda.runtime.getDeviceProperties(dev.id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        lines.append(
            f"- GPU: {name}, CuPy {xp.__version__}, CUDA runtime {xp.cuda.runtime.runtimeGetVersion()}"
        )
    return lines


# ----------------------------------------------------------------------------- data


def _haar(rng, batch: int, d: int) -> np.ndarray:
    Q, R = np.linalg.qr(rng.standard_normal((batch, d, d)))
    return Q * np.sign(np.diagonal(R, axis1=-2, axis2=-1))[..., None, :]


def jacobian_spectrum(d: int, signal_rank: int = 10) -> np.ndarray:
    signal = 0.8 ** np.arange(signal_rank)
    tail = 0.01 * np.exp(-np.arange(d - signal_rank) / 50)
    return np.concatenate([signal, tail])


def make_stack(kind: str, batch: int, size: int, seed: int) -> np.ndarray:
    """A host float64 stack (batch, size, size) of the named kind."""
    rng = np.random.default_rng(seed)
    if kind == "jacobian":
        s = jacobian_spectrum(size)
        U, V = _haar(rng, batch, size), _haar(rng, batch, size)
        return np.ascontiguousarray((U * s) @ np.swapaxes(V, -1, -2))
    if kind == "gaussian":
        return rng.standard_normal((batch, size, size)) / np.sqrt(size)
    raise ValueError(f"stack must be one of {STACKS}, got {kind!r}")


# ----------------------------------------------------------------------------- timing


def synchronizer(xp):
    if xp.__name__.startswith("cupy"):
        return lambda: xp.cuda.Device().synchronize()
    return lambda: None


def time_calls(fn, *, repeats: int, warmup: int, sync) -> tuple[list[float], object]:
    """Wall-clock seconds of ``repeats`` calls after ``warmup`` untimed ones, and the last output."""
    times, _, out = time_calls_cpu(fn, repeats=repeats, warmup=warmup, sync=sync)
    return times, out


def time_calls_cpu(fn, *, repeats: int, warmup: int, sync) -> tuple[list[float], list[float], object]:
    """Wall-clock and process-CPU seconds of each timed call, and the last output.

    On a shared CPU the wall time of multithreaded LAPACK calls swings widely with
    the other load; with ``--threads 1`` the process CPU time is the steadier figure.
    """
    out = None
    for _ in range(warmup):
        out = fn()
        sync()
    times, cpu = [], []
    for _ in range(repeats):
        sync()
        c0, t0 = time.process_time(), time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return times, cpu, out


# ----------------------------------------------------------------------------- accuracy


def _max_sin_theta(X: np.ndarray, X0: np.ndarray) -> float:
    """Largest principal-angle sine between column spaces, max over the stack.

    ``|X - X0 X0^T X|_2`` (not ``sqrt(1 - cos^2)``, which cannot resolve angles
    below ~1e-8)."""
    E = X - X0 @ (np.swapaxes(X0, -1, -2) @ X)
    return float(np.linalg.svd(E, compute_uv=False)[..., 0].max())


def accuracy(J, T, ref) -> dict[str, float]:
    U0, S0, V0 = ref
    U, S, V = (to_numpy(a) for a in T)
    rel_res = to_numpy(triplet_residual(J, T)) / S0[..., :1]
    return {
        "err_S": float(np.max(np.abs(S - S0) / S0[..., :1])),
        "sin_theta": max(_max_sin_theta(U, U0), _max_sin_theta(V, V0)),
        "res": float(np.max(rel_res)),
    }


# ----------------------------------------------------------------------------- main


def run(args) -> list[dict]:
    xp = get_namespace(backend=args.backend)
    sync = synchronizer(xp)
    rows = []
    for kind in args.stacks:
        J = xp.asarray(make_stack(kind, args.batch, args.size, args.seed))
        sync()
        base_name = f"{xp.__name__}.linalg.svd"
        times, cpu, (U, S, Vh) = time_calls_cpu(
            lambda: xp.linalg.svd(J, full_matrices=False), repeats=args.repeats, warmup=args.warmup, sync=sync
        )
        k = args.k
        ref = (to_numpy(U[..., :k]), to_numpy(S[..., :k]), np.swapaxes(to_numpy(Vh[..., :k, :]), -1, -2))
        del U, S, Vh
        t_base, c_base = statistics.median(times), statistics.median(cpu)
        rows.append({"stack": kind, "method": f"{base_name} (full, thin)", "times": times, "cpu": cpu,
                     "speedup": 1.0, "speedup_cpu": 1.0, "err_S": 0.0, "sin_theta": 0.0, "res": float("nan")})
        print(f"# {kind}: baseline {t_base:.3f} s", file=sys.stderr, flush=True)
        variants = [(m, "auto") for m in args.methods] + [("randomized", q) for q in args.fixed_q]
        for method, q in variants:
            times, cpu, T = time_calls_cpu(
                lambda: top_singular(J, k, method=method, power_iters=q, seed=args.seed),
                repeats=args.repeats, warmup=args.warmup, sync=sync,
            )
            label = method if q == "auto" else f"{method}, power_iters={q}"
            row = {"stack": kind, "method": f"top_singular({label})", "times": times, "cpu": cpu,
                   "speedup": t_base / statistics.median(times),
                   "speedup_cpu": c_base / statistics.median(cpu)}
            row.update(accuracy(J, T, ref))
            rows.append(row)
            print(f"# {kind}: {label} {statistics.median(times):.3f} s", file=sys.stderr, flush=True)
        del J
    return rows


def table(rows: list[dict]) -> str:
    head = ("| stack | method | median s | min-max s | speed-up vs svd | median CPU s | speed-up (CPU) "
            "| err S | sinT | res |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    lines = [head]
    for r in rows:
        t = r["times"]
        res = "-" if r["res"] != r["res"] else f"{r['res']:.1e}"
        lines.append(
            f"| {r['stack']} | {r['method']} | {statistics.median(t):.3f} | {min(t):.3f}-{max(t):.3f} "
            f"| {r['speedup']:.1f}x | {statistics.median(r['cpu']):.3f} | {r['speedup_cpu']:.1f}x "
            f"| {r['err_S']:.1e} | {r['sin_theta']:.1e} | {res} |"
        )
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=("numpy", "cupy"), default="numpy")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None,
                   help="limit BLAS/LAPACK threads (needs threadpoolctl); default: library default")
    p.add_argument("--stacks", type=lambda s: s.split(","), default=list(STACKS))
    p.add_argument("--methods", type=lambda s: s.split(","), default=list(METHODS[1:]) + ["auto"])
    p.add_argument("--fixed-q", type=lambda s: [int(x) for x in s.split(",") if x], default=[2],
                   help="extra rows: method='randomized' with these fixed power_iters (no residual test)")
    args = p.parse_args(argv)
    for s in args.stacks:
        if s not in STACKS:
            p.error(f"--stacks: unknown stack {s!r}; choose from {STACKS}")
    for mth in args.methods:
        if mth not in METHODS:
            p.error(f"--methods: unknown method {mth!r}; choose from {METHODS}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        xp = get_namespace(backend=args.backend)
    except RuntimeError as exc:
        print(f"bench_spectra: {exc}", file=sys.stderr)
        return 2
    if args.threads is not None:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)
    rows = run(args)
    print(f"## top_singular, k={args.k}, {args.batch} x {args.size} x {args.size} float64, backend={args.backend}")
    print()
    print("\n".join(machine_lines(xp)))
    print(f"- repeats={args.repeats} (median, min-max), warmup={args.warmup}, seed={args.seed}, "
          f"BLAS threads={args.threads if args.threads is not None else 'default'}")
    print()
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
