"""Benchmark ``ramodel.spectra.top_singular`` against its peers (issues 7 and 20).

Two suites, both measured in one process with every baseline and peer timed in the same
run, interleaved (one call of each method per round, median over ``--repeats`` rounds after
``--warmup`` rounds), so load from other jobs on a shared machine hits all methods alike.

``--suite peers`` (default, issue 20): top-``k`` triplets of stacks of ``batch`` matrices of
``size x size`` (float64) by

* ``numpy.linalg.svd(J, full_matrices=False)`` (the baseline of every speed-up);
* ``ramodel`` ``top_singular(J, k)`` (``method="auto"``: certified block Krylov with
  per-matrix exact fallback);
* ``scipy.sparse.linalg.svds(J[i], k)`` (ARPACK), one matrix at a time;
* ``sklearn.utils.extmath.randomized_svd(J[i], k, random_state=0)``, one matrix at a time;
* ``fbpca.pca(J[i], k, raw=True)`` (Li, Kluger and Tygert's Algorithm 971), one at a time;

on the stacks

* ``gapped``: ``J = U diag(s) V^T`` with Haar ``U``, ``V``, ``s_1..s_10`` evenly from 1 to
  0.5, then ``s_{10+i} = 0.05 exp(-i/30)`` (i = 0, 1, ...);
* ``nogap``: ``s_i = exp(-i/8)`` (i = 0, 1, ...);
* ``trained``: residual Jacobians ``d F_l / d h`` of a ``ramodel.nets.ResidualMLP``
  (width ``size``) trained for a few seconds on the digits data set, at ``batch / depth``
  test inputs, exported with ``ramodel.torch.export_jacobians`` (or loaded with
  ``--jacobians FILE``, a ``FORMAT.md`` file with dense Jacobians);

at every thread count of ``--threads`` (set with ``threadpoolctl`` around each call; the
peers loop over matrices in Python, ``svd`` and ``ramodel`` make batched calls).

``--suite operator``: ``top_singular_operator(..., method="krylov")`` against ARPACK ``svds``
on a ``scipy.sparse.linalg.LinearOperator``, on the Jacobians of two conv blocks (``--conv``):

* ``random``: ``x -> conv2(relu(conv1 x))`` (``--channels`` channels, ``--hw`` square maps,
  3x3 kernels, no bias) at ``--operators`` random inputs, ``J = C2 diag(relu'(C1 x)) C1``;
* ``trained``: the first residual branch (conv-BN-ReLU-conv-BN) of a ``ConvResNet`` with
  ``--trained-channels`` channels trained for a few seconds on digits, linearised at
  ``--operators`` test inputs (BatchNorm in eval mode), checked against ``torch.func.jacrev``;

both applied with ``torch`` convolutions (``J^T`` with transposed convolutions), exact, never
formed. The reference singular values come from the dense Jacobian (formed once, untimed).

``--suite ideas``: variants of ``auto`` (the thin-block path's block size, basis and check
schedule; the batched block Krylov alone) and the certified subspace iteration it replaced,
on the peers suite's stacks.

``--suite methods``: the issue-7 table, every ``method`` of ``top_singular`` against the SVD.

Columns: ``CPU s`` is ``time.process_time`` (all threads of the process), ``wall s``
``time.perf_counter``, both medians; ``x svd`` the CPU-time speed-up over
``numpy.linalg.svd``; ``err S`` the largest relative error ``|S_i - s_i| / s_1`` over
``i <= k`` and the stack; ``sinT`` the largest sine of the principal angles between the
top-k left and right subspaces and the exact ones; ``res`` the largest
``sqrt(|J v - s u|^2 + |J^T u - s v|^2) / s_1``.

Usage::

    python benchmarks/bench_spectra.py --threads 1,2            # the issue-20 table
    python benchmarks/bench_spectra.py --suite operator --threads 1,2
    python benchmarks/bench_spectra.py --batch 8 --size 128 --repeats 1 --stacks gapped   # quick

The peers are benchmark-only dependencies: ``pip install -e ".[bench]"``.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np

from ramodel.backend import get_namespace, to_numpy
from ramodel.spectra import (
    METHODS,
    TopSingular,
    top_singular,
    top_singular_operator,
    triplet_residual,
)

PEER_STACKS = ("gapped", "nogap", "trained")
METHOD_STACKS = ("jacobian", "gaussian")
ACCURATE = 1e-8  # "within 1e-8 relative of exact" (issue 20): err S <= this
VECTORS_ACCURATE = 1e-6  # subspaces within this sine of the exact ones


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
        load = os.getloadavg()
        lines.append(f"- load average at the end: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min)")
    except OSError:
        pass
    try:
        from threadpoolctl import threadpool_info

        for info in threadpool_info():
            if info.get("user_api") == "blas":
                lines.append(
                    f"- BLAS: {info.get('internal_api')} {info.get('version')} "
                    f"({info.get('architecture')}, {info.get('num_threads')} threads by default)"
                )
    except ImportError:
        blas = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
        lines.append(f"- BLAS: {blas.get('name')} {blas.get('version')}")
    from importlib import metadata

    for name, dist in (("scipy", "scipy"), ("sklearn", "scikit-learn"), ("fbpca", "fbpca"), ("torch", "torch")):
        try:
            lines.append(f"- {name} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            lines.append(f"- {name}: not installed")
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


def peer_spectrum(kind: str, d: int) -> np.ndarray:
    if kind == "gapped":
        return np.concatenate([np.linspace(1.0, 0.5, 10), 0.05 * np.exp(-np.arange(d - 10) / 30)])
    if kind == "nogap":
        return np.exp(-np.arange(d) / 8)
    raise ValueError(kind)


def _from_spectrum(s: np.ndarray, batch: int, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    U, V = _haar(rng, batch, size), _haar(rng, batch, size)
    return np.ascontiguousarray((U * s) @ np.swapaxes(V, -1, -2))


def make_stack(kind: str, batch: int, size: int, seed: int) -> np.ndarray:
    """A host float64 stack (batch, size, size) of the named synthetic kind."""
    if kind == "jacobian":
        return _from_spectrum(jacobian_spectrum(size), batch, size, seed)
    if kind in ("gapped", "nogap"):
        return _from_spectrum(peer_spectrum(kind, size), batch, size, seed)
    if kind == "gaussian":
        return np.random.default_rng(seed).standard_normal((batch, size, size)) / np.sqrt(size)
    raise ValueError(f"unknown stack {kind!r}")


def trained_jacobians(batch: int, size: int, seed: int, *, depth: int = 4, steps: int = 400,
                      path: str | None = None) -> tuple[np.ndarray, str]:
    """``batch`` residual Jacobians (size x size) of a ResidualMLP trained on digits.

    ``depth`` blocks at ``batch // depth`` test inputs, exported densely in float64 with
    ``ramodel.torch.export_jacobians``; or the dense Jacobians of the file ``path``."""
    from ramodel.jacobian_set import JacobianSet

    if path is not None:
        js = JacobianSet.load(path)
        if js.jacobians is None:
            raise SystemExit(f"bench_spectra: {path} holds no dense Jacobians")
        J = np.asarray(js.jacobians, dtype=np.float64)
        J = J.reshape((-1,) + J.shape[-2:])[:batch]
        return np.ascontiguousarray(J), f"loaded from {path}: {J.shape[0]} Jacobians {J.shape[-2]}x{J.shape[-1]}"
    import torch

    from ramodel.datasets import digits
    from ramodel.nets import ResidualMLP
    from ramodel.torch import export_jacobians
    from ramodel.training import evaluate, train

    torch.manual_seed(seed)
    ds = digits(seed=seed)
    model = ResidualMLP(ds.n_features, 10, width=size, depth=depth, init_seed=seed, bias=False)
    t0 = time.perf_counter()
    train(model, ds, steps=steps, seed=seed, protocol="terminal", progress=False)
    t_train = time.perf_counter() - t0
    acc = evaluate(model, ds.x_test, ds.y_test)
    n = max(1, batch // depth)
    with tempfile.TemporaryDirectory() as tmp:
        js = export_jacobians(model, ds.x_test[:n], ds.y_test[:n], os.path.join(tmp, "j.npz"), method="dense")
    J = np.asarray(js.jacobians, dtype=np.float64)
    J = np.ascontiguousarray(J.reshape((-1,) + J.shape[-2:]))
    note = (f"ResidualMLP(width={size}, depth={depth}, bias=False) trained {steps} SGD steps (protocol=terminal) "
            f"({t_train:.1f} s) on digits, test accuracy {acc:.3f}; residual Jacobians at {n} test "
            f"inputs x {depth} blocks = {J.shape[0]} matrices")
    return J, note


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
    """Wall-clock and process-CPU seconds of each timed call, and the last output."""
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


def interleaved(fns: dict, *, repeats: int, warmup: int, threads: int | None, limits: dict | None = None):
    """Time every callable of ``fns`` once per round: {name: (wall list, cpu list, last output)}.

    ``limits`` maps a name to the number of rounds (warm-up included) it takes part in
    (e.g. one for a slow baseline)."""
    limits = limits or {}
    from contextlib import nullcontext

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = None
    if threads is not None and threadpool_limits is None:
        raise SystemExit("bench_spectra: --threads needs threadpoolctl (pip install threadpoolctl)")
    limit = (lambda: threadpool_limits(threads)) if threads is not None else nullcontext
    out = {name: ([], [], None) for name in fns}
    for rnd in range(warmup + repeats):
        for name, fn in fns.items():
            if rnd >= limits.get(name, warmup + repeats):
                continue
            with limit():
                torch_threads = _torch_threads(threads)
                c0, t0 = time.process_time(), time.perf_counter()
                res = fn()
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                _torch_threads(torch_threads)
            w, c, _ = out[name]
            if rnd >= min(warmup, limits.get(name, warmup + repeats) - 1):
                w.append(wall)
                c.append(cpu)
            out[name] = (w, c, res)
    return out


def _torch_threads(threads):
    """Set torch's intra-op threads (if torch is loaded); return the previous value."""
    torch = sys.modules.get("torch")
    if torch is None or threads is None:
        return None
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    return prev


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
    rel_res = to_numpy(triplet_residual(J, TopSingular(*T))) / S0[..., :1]
    return {
        "err_S": float(np.max(np.abs(S - S0) / S0[..., :1])),
        "sin_theta": max(_max_sin_theta(U, U0), _max_sin_theta(V, V0)),
        "res": float(np.max(rel_res)),
    }


# ----------------------------------------------------------------------------- peers


def _stack_peer(fn, J: np.ndarray, k: int):
    """Run a one-matrix peer over the stack: TopSingular of stacked (U, S, V), S descending."""

    def call():
        Us, Ss, Vs = [], [], []
        for A in J:
            U, S, V = fn(A, k)
            order = np.argsort(-S)
            Us.append(U[:, order])
            Ss.append(S[order])
            Vs.append(V[:, order])
        return TopSingular(np.stack(Us), np.stack(Ss), np.stack(Vs))

    return call


def peer_functions(k: int, seed: int) -> dict:
    """{name: fn(A, k) -> (U (m,k), S (k,), V (n,k))} for the installed peers."""
    peers = {}
    try:
        from scipy.sparse.linalg import svds

        def arpack(A, k):
            U, S, Vt = svds(A, k=k, random_state=seed)
            return U, S, Vt.T

        peers["scipy svds (ARPACK), per matrix"] = arpack
    except ImportError:
        pass
    try:
        from sklearn.utils.extmath import randomized_svd

        def sk(A, k):
            U, S, Vt = randomized_svd(A, k, random_state=seed)
            return U, S, Vt.T

        peers["sklearn randomized_svd, per matrix"] = sk
    except ImportError:
        pass
    try:
        import fbpca

        def fb(A, k):
            U, S, Vt = fbpca.pca(A, k, raw=True)
            return U, S, Vt.T

        peers["fbpca.pca(raw=True), per matrix"] = fb
    except ImportError:
        pass
    return peers


def run_peers(args) -> tuple[list[dict], list[str]]:
    rows, notes = [], []
    k = args.k
    for kind in args.stacks:
        if kind == "trained":
            J, note = trained_jacobians(args.batch, args.size, args.seed, path=args.jacobians)
            notes.append(f"- trained: {note}")
        else:
            J = make_stack(kind, args.batch, args.size, args.seed)
        U0, S0, V0h = np.linalg.svd(J, full_matrices=False)  # reference (untimed)
        ref = (U0[..., :k], S0[..., :k], np.swapaxes(V0h[..., :k, :], -1, -2))
        if kind == "trained":
            s = S0 / S0[..., :1]
            notes.append(
                f"- trained spectra (median over the stack, relative to s_1): s_{k} = {np.median(s[:, k - 1]):.3g}, "
                f"s_{k + 1} = {np.median(s[:, k]):.3g}, s_{2 * k} = {np.median(s[:, 2 * k - 1]):.3g}"
            )
        del U0, V0h
        fns = {"numpy.linalg.svd (full, thin)": lambda J=J: np.linalg.svd(J, full_matrices=False),
               "ramodel top_singular (auto)": lambda J=J: top_singular(J, k, seed=args.seed)}
        for name, fn in peer_functions(k, args.seed).items():
            fns[name] = _stack_peer(fn, J, k)
        for threads in args.threads:
            print(f"# {kind}, {threads} thread(s) ...", file=sys.stderr, flush=True)
            out = interleaved(fns, repeats=args.repeats, warmup=args.warmup, threads=threads,
                              limits={"numpy.linalg.svd (full, thin)": args.svd_rounds})
            base = statistics.median(out["numpy.linalg.svd (full, thin)"][1])
            for name, (wall, cpu, res) in out.items():
                row = {"stack": kind, "threads": threads, "method": name, "wall": statistics.median(wall),
                       "cpu": statistics.median(cpu), "cpu_all": cpu}
                row["speedup"] = base / row["cpu"]
                if name.startswith("numpy"):
                    row.update(err_S=0.0, sin_theta=0.0, res=float("nan"))
                else:
                    row.update(accuracy(J, res, ref))
                rows.append(row)
                print(f"#   {name}: cpu {row['cpu']:.3f} s, err S {row['err_S']:.1e}", file=sys.stderr, flush=True)
        del J
    return rows, notes


def peer_table(rows: list[dict]) -> str:
    head = ("| stack | threads | method | CPU s | wall s | x svd (CPU) | err S | sinT | res | accurate |\n"
            "|---|---:|---|---:|---:|---:|---:|---:|---:|---|")
    lines = [head]
    for r in rows:
        res = "-" if r["res"] != r["res"] else f"{r['res']:.1e}"
        acc = "S and vectors" if r["err_S"] <= ACCURATE and r["sin_theta"] <= VECTORS_ACCURATE else (
            "S only" if r["err_S"] <= ACCURATE else "**no**")
        lines.append(
            f"| {r['stack']} | {r['threads']} | {r['method']} | {r['cpu']:.3f} | {r['wall']:.3f} "
            f"| {r['speedup']:.1f}x | {r['err_S']:.1e} | {r['sin_theta']:.1e} | {res} | {acc} |"
        )
    return "\n".join(lines)


def peer_summary(rows: list[dict]) -> str:
    """Per (stack, threads): ramodel's CPU time against the fastest accurate peer."""
    head = ("| stack | threads | ramodel auto CPU s | x svd | fastest peer with err S <= 1e-8 | its CPU s "
            "| ramodel speed-up over it | fastest peer also with sinT <= 1e-6 | ramodel speed-up over it |\n"
            "|---|---:|---:|---:|---|---:|---:|---|---:|")
    lines = [head]
    keys = sorted({(r["stack"], r["threads"]) for r in rows}, key=lambda t: (PEER_STACKS.index(t[0]), t[1]))
    for stack, threads in keys:
        group = [r for r in rows if r["stack"] == stack and r["threads"] == threads]
        ours = next(r for r in group if r["method"].startswith("ramodel"))
        peers = [r for r in group if not r["method"].startswith(("ramodel", "numpy"))]
        s_ok = [r for r in peers if r["err_S"] <= ACCURATE]
        v_ok = [r for r in s_ok if r["sin_theta"] <= VECTORS_ACCURATE]

        def cell(cands, ours=ours):
            if not cands:
                return "none", "-", "-"
            best = min(cands, key=lambda row: row["cpu"])
            return best["method"], f"{best['cpu']:.3f}", f"{best['cpu'] / ours['cpu']:.2f}x"

        a, b, c = cell(s_ok)
        d, _, e = cell(v_ok)
        lines.append(f"| {stack} | {threads} | {ours['cpu']:.3f} | {ours['speedup']:.1f}x | {a} | {b} | {c} | {d} | {e} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- ideas suite


def run_ideas(args) -> tuple[list[dict], list[str]]:
    """Variants of the ``auto`` default against the batched block Krylov and the subspace
    iteration it replaced."""
    import ramodel._lanczos as lz
    import ramodel.spectra as sp

    k, notes, rows = args.k, [], []

    def patched(J, module=sp, **consts):
        old = {name: getattr(module, name) for name in consts}
        for name, value in consts.items():
            setattr(module, name, value)
        try:
            return top_singular(J, k, seed=args.seed)
        finally:
            for name, value in old.items():
                setattr(module, name, value)

    def wide_basis(k_, r):  # the thin path with a 60-column basis (restart to 30)
        return 60, 30, 180

    def subspace(J):  # the issue-7 default: certified subspace iteration, exact fallback
        tol = math.sqrt(np.finfo(J.dtype).eps)
        U, S, V, ok = sp._dense_randomized(J, k, 10, "auto", args.seed, tol, np, certify=True, give_up=True)
        if ok is not None and not ok.all():
            U, S, V = sp._patch_exact(J, k, U, S, V, ok, np)
        U, V = sp.fix_signs(U, V, np)
        return TopSingular(U, S, V)

    for kind in args.stacks:
        if kind == "trained":
            J, note = trained_jacobians(args.batch, args.size, args.seed, path=args.jacobians)
            notes.append(f"- trained: {note}")
        else:
            J = make_stack(kind, args.batch, args.size, args.seed)
        U0, S0, V0h = np.linalg.svd(J, full_matrices=False)
        ref = (U0[..., :k], S0[..., :k], np.swapaxes(V0h[..., :k, :], -1, -2))
        fns = {
            "auto (thin-block Lanczos per matrix, b = 2, 40-column basis)": lambda J=J: top_singular(J, k, seed=args.seed),
            "auto, thin block b = 4": lambda J=J: patched(J, lz, BLOCK=4),
            "auto, thin path with a 60-column basis": lambda J=J: patched(J, lz, sizes=wide_basis),
            "auto, thin path checks at the geometric pace (safety 1, no cap)":
                lambda J=J: patched(J, lz, CHECK_SAFETY=1.0, CHECK_MAX_STEPS=10**6),
            "auto without the thin path (batched block Krylov, b = k + 2, 8 MiB chunks)":
                lambda J=J: patched(J, _THIN_LANCZOS=False),
            "batched block Krylov, one chunk (the whole stack per product)":
                lambda J=J: patched(J, _THIN_LANCZOS=False, _CHUNK_BYTES=1 << 62),
            "previous auto (subspace iteration + residual test)": lambda J=J: subspace(J),
        }
        for threads in args.threads:
            out = interleaved(fns, repeats=args.repeats, warmup=args.warmup, threads=threads)
            for name, (wall, cpu, res) in out.items():
                row = {"stack": kind, "threads": threads, "method": name, "wall": statistics.median(wall),
                       "cpu": statistics.median(cpu), "speedup": float("nan")}
                row.update(accuracy(J, res, ref))
                rows.append(row)
                print(f"#   {kind} {name}: cpu {row['cpu']:.3f} s", file=sys.stderr, flush=True)
    return rows, notes


def ideas_table(rows: list[dict]) -> str:
    head = ("| stack | threads | variant | CPU s | wall s | err S | sinT | res |\n"
            "|---|---:|---|---:|---:|---:|---:|---:|")
    return "\n".join([head] + [
        f"| {r['stack']} | {r['threads']} | {r['method']} | {r['cpu']:.3f} | {r['wall']:.3f} "
        f"| {r['err_S']:.1e} | {r['sin_theta']:.1e} | {r['res']:.1e} |" for r in rows])


# ----------------------------------------------------------------------------- operator suite


def conv_operator(channels: int, hw: int, count: int, seed: int):
    """Jacobians of ``x -> conv2(relu(conv1 x))`` at ``count`` random inputs (He-scaled random
    3x3 kernels, no bias): the untrained, flat-spectrum case. See :func:`linear_conv_block`."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    c = channels
    w1 = torch.randn(c, c, 3, 3, generator=g, dtype=torch.float64) * math.sqrt(2.0 / (9 * c))
    w2 = torch.randn(c, c, 3, 3, generator=g, dtype=torch.float64) * math.sqrt(1.0 / (9 * c))
    x = torch.randn(count, c, hw, hw, generator=g, dtype=torch.float64)
    mask = (F.conv2d(x, w1, padding=1) > 0).to(torch.float64)  # relu' at each input
    one = torch.ones(c, dtype=torch.float64)
    return linear_conv_block(w1, one, w2, one, mask)


def trained_conv_operator(channels: int, count: int, seed: int, *, steps: int = 300):
    """The first residual branch ``conv-BN-ReLU-conv-BN`` of a ``ramodel.nets.ConvResNet``
    trained on digits (8x8 maps), linearised at ``count`` test inputs: ``J v = a_2 conv_2(m
    (a_1 conv_1 v))`` with the BatchNorm (eval) scales ``a = gamma / sqrt(var + eps)`` and the
    ReLU mask ``m`` at the block's real input. Checked against ``torch.func.jacrev`` of the
    branch at the first input. Returns :func:`linear_conv_block`'s tuple and a note."""
    import torch
    import torch.nn.functional as F

    from ramodel.datasets import digits
    from ramodel.nets import ConvResNet
    from ramodel.training import evaluate, train

    torch.manual_seed(seed)
    ds = digits(seed=seed)
    model = ConvResNet(1, 10, channels=(channels,), blocks_per_stage=2, init_seed=seed)
    t0 = time.perf_counter()
    train(model, ds, steps=steps, seed=seed, protocol="terminal", progress=False)
    t_train = time.perf_counter() - t0
    images = np.asarray(ds.x_test).reshape(-1, 1, *ds.image_shape)
    acc = evaluate(model, images, ds.y_test)
    model = model.double().eval()
    x = torch.tensor(images[:count], dtype=torch.float64)
    branch = model.blocks[0].branch
    conv1, bn1, _, conv2, bn2 = branch
    with torch.no_grad():
        h = model.embed(x)
        a1 = bn1.weight / torch.sqrt(bn1.running_var + bn1.eps)
        a2 = bn2.weight / torch.sqrt(bn2.running_var + bn2.eps)
        mask = (bn1(F.conv2d(h, conv1.weight, padding=1)) > 0).to(torch.float64)
    out = linear_conv_block(conv1.weight.detach(), a1.detach(), conv2.weight.detach(), a2.detach(), mask)
    d = out[3]
    ref = torch.func.jacrev(lambda v: branch(v[None])[0])(h[0]).reshape(d, d).detach().numpy()
    err = float(np.max(np.abs(ref - out[4][0])) / np.max(np.abs(ref)))
    if err > 1e-10:
        raise SystemExit(f"bench_spectra: the linearised trained conv block disagrees with autograd ({err:.1e})")
    note = (f"ConvResNet(1, 10, channels=({channels},), blocks_per_stage=2) trained {steps} steps (protocol=terminal, "
            f"{t_train:.1f} s) on digits, test accuracy {acc:.3f}; branch of block 0 at {count} test inputs, "
            f"d = {d}; the linearised operator matches torch.func.jacrev to {err:.0e}")
    return out, note


def linear_conv_block(w1, a1, w2, a2, mask):
    """The linear map ``v -> a_2 conv_2(m (a_1 conv_1 v))`` (3x3 kernels, padding 1), one per
    mask ``m (count, c, hw, hw)``, and its transpose, as products.

    Returns (matvec, rmatvec on batched blocks (count, d, p)), (per-operator matvec,
    rmatvec on vectors), d, and the dense Jacobians (count, d, d) for reference."""
    import torch.nn.functional as F

    count, c, hw = mask.shape[0], mask.shape[1], mask.shape[-1]
    d = c * hw * hw
    s1, s2 = a1.reshape(1, c, 1, 1), a2.reshape(1, c, 1, 1)

    def apply(v, mk):  # v (cnt, p, c, hw, hw), mk (cnt, c, hw, hw): operator i on its p vectors
        cnt, p = v.shape[:2]
        y = (F.conv2d(v.reshape(cnt * p, c, hw, hw), w1, padding=1) * s1).reshape(cnt, p, c, hw, hw)
        y = (y * mk[:, None]).reshape(cnt * p, c, hw, hw)
        return (F.conv2d(y, w2, padding=1) * s2).reshape(cnt, p, c, hw, hw)

    def apply_t(v, mk):
        cnt, p = v.shape[:2]
        y = F.conv_transpose2d(v.reshape(cnt * p, c, hw, hw) * s2, w2, padding=1).reshape(cnt, p, c, hw, hw)
        y = (y * mk[:, None]).reshape(cnt * p, c, hw, hw)
        return F.conv_transpose2d(y * s1, w1, padding=1).reshape(cnt, p, c, hw, hw)

    def batched(fn):
        def op(X):  # X (count, d, p) -> (count, d, p): one pair of conv calls for all operators
            Xt = torch.as_tensor(np.asarray(X))
            p = Xt.shape[-1]
            out = fn(Xt.permute(0, 2, 1).reshape(count, p, c, hw, hw), mask)
            return out.reshape(count, p, d).permute(0, 2, 1).contiguous().numpy()

        return op

    def vec(fn, i):
        def op(v):  # v (d,) or (d, p) -> J_i v, for scipy's LinearOperator
            V = np.asarray(v, dtype=np.float64)
            Vt = torch.as_tensor(V.reshape(d, -1).T.copy()).reshape(1, -1, c, hw, hw)
            out = fn(Vt, mask[i : i + 1]).reshape(-1, d).T.numpy()
            return out.reshape(V.shape)

        return op

    import torch

    eye = np.eye(d)
    dense = np.stack([vec(apply, i)(eye) for i in range(count)])  # J_i = J_i I
    return batched(apply), batched(apply_t), [(vec(apply, i), vec(apply_t, i)) for i in range(count)], d, dense


def run_operator(args) -> tuple[list[dict], list[str]]:
    rows, notes = [], []
    for kind in args.conv:
        if kind == "random":
            ops = conv_operator(args.channels, args.hw, args.operators, args.seed)
            what = f"random conv block: {args.channels} channels, {args.hw}x{args.hw} maps"
        else:
            ops, note = trained_conv_operator(args.trained_channels, args.operators, args.seed)
            what = f"trained conv block ({note})"
        rows += _run_operator(args, kind, ops, what, notes)
    return rows, notes


def _run_operator(args, kind, ops, what, notes) -> list[dict]:
    from scipy.sparse.linalg import LinearOperator, svds

    k = args.k
    mv, rmv, per_op, d, dense = ops
    U0, S0, V0h = np.linalg.svd(dense)
    ref = (U0[..., :k], S0[..., :k], np.swapaxes(V0h[..., :k, :], -1, -2))
    s = S0 / S0[..., :1]
    notes.append(f"- {kind}: {what}, d = {d}, {args.operators} operators; s_{k}/s_1 = {np.median(s[:, k - 1]):.3g}, "
                 f"s_{k + 1}/s_1 = {np.median(s[:, k]):.3g} (median)")
    count = {"ramodel": [0], "arpack": [0]}

    def counted(fn, key):
        def g(X):
            count[key][0] += 1
            return fn(X)

        return g

    def ours():
        return top_singular_operator(counted(mv, "ramodel"), counted(rmv, "ramodel"), dense.shape, k,
                                     seed=args.seed, method="krylov")

    def ours_rand():
        return top_singular_operator(mv, rmv, dense.shape, k, seed=args.seed)

    def arpack():
        Us, Ss, Vs = [], [], []
        for f, ft in per_op:
            op = LinearOperator((d, d), matvec=counted(f, "arpack"), rmatvec=counted(ft, "arpack"),
                                dtype=np.float64)
            U, S, Vt = svds(op, k=k, random_state=args.seed)
            o = np.argsort(-S)
            Us.append(U[:, o])
            Ss.append(S[o])
            Vs.append(Vt.T[:, o])
        return TopSingular(np.stack(Us), np.stack(Ss), np.stack(Vs))

    fns = {"ramodel top_singular_operator(method='krylov')": ours,
           "ramodel top_singular_operator (default 'randomized')": ours_rand,
           "scipy svds (ARPACK) on a LinearOperator, per operator": arpack}
    rows = []
    for threads in args.threads:
        for c in count.values():
            c[0] = 0
        print(f"# operator {kind}, {threads} thread(s) ...", file=sys.stderr, flush=True)
        out = interleaved(fns, repeats=args.repeats, warmup=args.warmup, threads=threads)
        rounds = args.repeats + args.warmup
        for name, (wall, cpu, res) in out.items():
            row = {"stack": f"conv ({kind})", "threads": threads, "method": name, "wall": statistics.median(wall),
                   "cpu": statistics.median(cpu)}
            row.update(accuracy(dense, res, ref))
            key = "ramodel" if "krylov" in name else ("arpack" if "ARPACK" in name else None)
            row["calls"] = count[key][0] / rounds if key else float("nan")
            rows.append(row)
            print(f"#   {name}: cpu {row['cpu']:.3f} s, err S {row['err_S']:.1e}", file=sys.stderr, flush=True)
    return rows


def operator_table(rows: list[dict]) -> str:
    head = ("| operator | threads | method | CPU s | wall s | product calls | err S | sinT | res |\n"
            "|---|---:|---|---:|---:|---:|---:|---:|---:|")
    lines = [head]
    for r in rows:
        calls = "-" if r["calls"] != r["calls"] else f"{r['calls']:.0f}"
        lines.append(f"| {r['stack']} | {r['threads']} | {r['method']} | {r['cpu']:.3f} | {r['wall']:.3f} "
                     f"| {calls} | {r['err_S']:.1e} | {r['sin_theta']:.1e} | {r['res']:.1e} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- methods suite (issue 7)


def run_methods(args) -> list[dict]:
    xp = get_namespace(backend=args.backend)
    sync = synchronizer(xp)
    rows = []
    for kind in args.stacks:
        J = xp.asarray(make_stack(kind, args.batch, args.size, args.seed))
        sync()
        base_name = f"{xp.__name__}.linalg.svd"
        times, cpu, (U, S, Vh) = time_calls_cpu(
            lambda J=J: xp.linalg.svd(J, full_matrices=False), repeats=args.repeats, warmup=args.warmup, sync=sync
        )
        k = args.k
        ref = (to_numpy(U[..., :k]), to_numpy(S[..., :k]), np.swapaxes(to_numpy(Vh[..., :k, :]), -1, -2))
        del U, S, Vh
        t_base, c_base = statistics.median(times), statistics.median(cpu)
        rows.append({"stack": kind, "method": f"{base_name} (full, thin)", "times": times, "cpu": cpu,
                     "speedup": 1.0, "speedup_cpu": 1.0, "err_S": 0.0, "sin_theta": 0.0, "res": float("nan")})
        variants = [(m, "auto") for m in args.methods] + [("randomized", q) for q in args.fixed_q]
        for method, q in variants:
            times, cpu, T = time_calls_cpu(
                lambda J=J, k=k, method=method, q=q: top_singular(J, k, method=method, power_iters=q, seed=args.seed),
                repeats=args.repeats, warmup=args.warmup, sync=sync,
            )
            label = method if q == "auto" else f"{method}, power_iters={q}"
            row = {"stack": kind, "method": f"top_singular({label})", "times": times, "cpu": cpu,
                   "speedup": t_base / statistics.median(times),
                   "speedup_cpu": c_base / statistics.median(cpu)}
            row.update(accuracy(J, T, ref))
            rows.append(row)
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


# ----------------------------------------------------------------------------- main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=("peers", "ideas", "operator", "methods"), default="peers")
    p.add_argument("--backend", choices=("numpy", "cupy"), default="numpy", help="methods suite only")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=lambda s: [int(x) for x in s.split(",") if x], default=None,
                   help="BLAS threads (threadpoolctl), a comma list, e.g. 1,2; default: the library's")
    p.add_argument("--stacks", type=lambda s: s.split(","), default=None)
    p.add_argument("--svd-rounds", type=int, default=None,
                   help="peers suite: rounds (warm-up included) in which the numpy.linalg.svd baseline "
                        "runs; default all (with 1 it is timed once, cold)")
    p.add_argument("--jacobians", default=None, help="peers suite: a FORMAT.md file with dense Jacobians")
    p.add_argument("--channels", type=int, default=8, help="operator suite: conv channels")
    p.add_argument("--hw", type=int, default=16, help="operator suite: map height = width")
    p.add_argument("--operators", type=int, default=4, help="operator suite: inputs (operators)")
    p.add_argument("--conv", type=lambda s: s.split(","), default=["random", "trained"],
                   help="operator suite: conv blocks, 'random' and/or 'trained'")
    p.add_argument("--trained-channels", type=int, default=32,
                   help="operator suite: channels of the trained ConvResNet (8x8 maps: d = 64 x channels)")
    p.add_argument("--methods", type=lambda s: s.split(","), default=list(METHODS[1:]) + ["auto"])
    p.add_argument("--fixed-q", type=lambda s: [int(x) for x in s.split(",") if x], default=[2],
                   help="methods suite: extra rows, method='randomized' with these fixed power_iters")
    args = p.parse_args(argv)
    allowed = PEER_STACKS if args.suite in ("peers", "ideas") else METHOD_STACKS
    if args.stacks is None:
        args.stacks = list(allowed)
    for s in args.stacks:
        if s not in allowed and args.suite != "operator":
            p.error(f"--stacks: unknown stack {s!r} for --suite {args.suite}; choose from {allowed}")
    for mth in args.methods:
        if mth not in METHODS:
            p.error(f"--methods: unknown method {mth!r}; choose from {METHODS}")
    if args.threads is None:
        args.threads = [None]
    if args.svd_rounds is None:
        args.svd_rounds = args.warmup + args.repeats
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        xp = get_namespace(backend=args.backend)
    except RuntimeError as exc:
        print(f"bench_spectra: {exc}", file=sys.stderr)
        return 2
    if args.suite == "methods":
        if args.threads != [None]:
            from threadpoolctl import threadpool_limits

            threadpool_limits(args.threads[0])
        rows = run_methods(args)
        print(f"## top_singular, k={args.k}, {args.batch} x {args.size} x {args.size} float64, backend={args.backend}")
        print()
        print("\n".join(machine_lines(xp)))
        print(f"- repeats={args.repeats} (median, min-max), warmup={args.warmup}, seed={args.seed}, "
              f"BLAS threads={args.threads[0] if args.threads[0] is not None else 'default'}")
        print()
        print(table(rows))
        return 0
    if args.suite == "peers":
        rows, notes = run_peers(args)
        title = f"## top-{args.k} of {args.batch} x {args.size} x {args.size} float64: ramodel against its peers"
        body = peer_table(rows) + "\n\n" + peer_summary(rows)
    elif args.suite == "ideas":
        rows, notes = run_ideas(args)
        title = f"## top-{args.k} of {args.batch} x {args.size} x {args.size} float64: variants of auto"
        body = ideas_table(rows)
    else:
        rows, notes = run_operator(args)
        title = f"## top-{args.k} of conv-block Jacobians, matrix-free: ramodel against ARPACK"
        body = operator_table(rows)
    print(title)
    print()
    print("\n".join(machine_lines(xp)))
    print(f"- rounds: {args.warmup} warm-up + {args.repeats} timed, interleaved (median), seed={args.seed}, "
          f"threads={','.join(str(t) for t in args.threads)}")
    print("\n".join(notes))
    print()
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
