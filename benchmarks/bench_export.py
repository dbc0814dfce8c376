"""Benchmark: dense vs matrix-free top-k residual Jacobians of a conv block.

The block acts on 16 channels of 16x16 maps, so ``d = 16*16*16 = 4096``, at N = 4
inputs in one batch, k = 10, float64. Paths compared, each in its own subprocess so
that its peak RSS is clean:

- ``dense_exact``: ``block_jacobians`` (``vmap(jacrev)``, the dense ``(N, d, d)``
  Jacobians) then the exact batched LAPACK SVD (``top_singular(method="svd")``).
  Its triplets are the reference for the error columns.
- ``dense_auto``: the same dense Jacobians, then ``top_singular(J, k)`` with
  ``method="auto"`` (a certified randomized SVD of the dense matrix, exact fallback).
- ``matrix_free``: ``block_top_singular`` (randomized range finder on batched
  ``jvp``/``vjp`` products; no ``d x d`` matrix), the path ``export_jacobians`` takes
  for large ``d``. Timed cold (first call in the process: torch loads its forward-AD
  decompositions) and warm.
- ``export_mf``: ``export_jacobians(..., method="matrix_free")`` end to end, one block,
  including the forward pass, validation and the atomic file write; ``export_mf_b1``
  the same with ``batch_size=1`` (memory of one input's probes at a time).

Cases (the Jacobian's spectrum decides how fast a range finder converges):

- ``ra`` (default): the spectrum RA3 reports for trained networks, about C = 10
  large singular values over a small tail. The branch is
  ``b(tanh(a(h))) + 0.02 c2(tanh(c1(h)))``: ``a`` a conv whose kernel covers the
  whole map (16 channels -> 10 of size 1x1), ``b`` its transpose back to 16x16x16,
  ``c1``, ``c2`` ordinary 3x3 convs (the tail).
- ``decay``: a slowly decaying spectrum without a gap at k: the branch
  ``2 b(tanh(a(h)))`` has 5x5 Gaussian-blur convs times channel matrices with
  singular values ``0.5**i``.
- ``flat``: a randomly initialised torchvision-style post-activation ``BasicBlock``;
  its effective residual has a flat top spectrum, so the top-k subspace is
  ill-conditioned (this shows what the range finder does when it cannot converge).

Peak memory is the growth of ``ru_maxrss`` over the process's RSS after imports,
model construction and a warm-up call on a tiny block of the same kind (which loads
torch's vmap / forward-AD machinery once; its time and RSS are reported apart). Timings are
wall-clock seconds; the machine's cores are shared, so each path is repeated in fresh processes
and min / median / max are reported.

Usage::

    python benchmarks/bench_export.py                 # the ra case, prints the table
    python benchmarks/bench_export.py --case flat --n 1 --dense-repeats 1
    python benchmarks/bench_export.py --markdown out.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

C_CH, HW, K, SEED = 16, 16, 10, 0  # defaults; --channels / --size override (smoke tests)


def _rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def _current_rss_kib() -> int:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


def build(case: str, n: int, channels: int = C_CH, size: int = HW):
    import torch
    from torch import nn

    torch.manual_seed(SEED)

    def blur(c, sx, sy, seed, size=5, decay=0.5):
        g = np.random.default_rng(seed)
        r = np.arange(size) - size // 2
        ker = np.exp(-(r[:, None] ** 2) / (2 * sy**2) - r[None, :] ** 2 / (2 * sx**2))
        ker /= ker.sum()
        q1, _ = np.linalg.qr(g.standard_normal((c, c)))
        q2, _ = np.linalg.qr(g.standard_normal((c, c)))
        mix = q1 @ np.diag(decay ** np.arange(c)) @ q2.T
        conv = nn.Conv2d(c, c, size, padding=size // 2, bias=False)
        with torch.no_grad():
            conv.weight.copy_(torch.as_tensor(mix[:, :, None, None] * ker[None, None]))
        return conv

    class DecayBlock(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.a, self.b = blur(c, 1.6, 1.1, 1), blur(c, 1.3, 0.9, 2)

        def forward(self, h):
            return h + 2 * self.b(torch.tanh(self.a(h)))

    class BasicBlock(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(c)
            self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(c)

        def forward(self, x):
            out = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(out)) + x)

    class RABlock(nn.Module):
        def __init__(self, c, size, r=K, tail=0.02):
            super().__init__()
            d = c * size * size
            self.a = nn.Conv2d(c, r, size, bias=False)
            self.b = nn.ConvTranspose2d(r, c, size, bias=False)
            g = torch.Generator().manual_seed(SEED + 2)
            with torch.no_grad():
                spread = torch.linspace(1.0, 0.5, r)[:, None, None, None]  # distinct top values
                self.a.weight.copy_(torch.randn(self.a.weight.shape, generator=g) / d**0.5 * spread)
                self.b.weight.copy_(torch.randn(self.b.weight.shape, generator=g) / d**0.5)
            self.c1 = nn.Conv2d(c, c, 3, padding=1)
            self.c2 = nn.Conv2d(c, c, 3, padding=1)
            self.tail = tail

        def forward(self, h):
            return h + self.b(torch.tanh(self.a(h))) + self.tail * self.c2(torch.tanh(self.c1(h)))

    if case == "ra":
        block = RABlock(channels, size, r=min(K, channels))
    else:
        block = DecayBlock(channels) if case == "decay" else BasicBlock(channels)
    h = torch.randn(n, channels, size, size, generator=torch.Generator().manual_seed(SEED + 1))
    return block, h


def worker(path: str, case: str, n: int, repeats: int, ref: str | None, channels: int, size: int) -> dict:
    import torch

    from ramodel.spectra import top_singular
    from ramodel.torch import block_jacobians, block_top_singular, export_jacobians

    base0 = _current_rss_kib()

    block, h = build(case, n, channels, size)
    # Warm-up on a small block of the same kind: torch loads its vmap / forward-AD
    # machinery once per process (~100 MiB of RSS, seconds), which is not the
    # algorithm's memory or time. Measured and reported separately.
    small, hs = build(case, 1, 2, 4)
    t0 = time.perf_counter()
    if path.startswith("dense"):
        top_singular(block_jacobians(small, hs), 2, method="svd" if path == "dense_exact" else "auto")
    else:
        block_top_singular(small, hs, 2, seed=SEED)
    warmup_s = time.perf_counter() - t0
    base = _current_rss_kib()
    out: dict = {"path": path, "torch_threads": torch.get_num_threads(), "warmup_s": warmup_s,
                 "warmup_rss_mib": (base - base0) / 1024}
    if path == "dense_exact":
        t0 = time.perf_counter()
        J = block_jacobians(block, h)
        t1 = time.perf_counter()
        T = top_singular(J, K, method="svd")
        t2 = time.perf_counter()
        out.update(materialise_s=t1 - t0, svd_s=t2 - t1, total_s=[t2 - t0])
        if ref:
            np.savez(ref, U=T.U, S=T.S, V=T.V)
    elif path == "dense_auto":
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            J = block_jacobians(block, h)
            T = top_singular(J, K, seed=SEED)
            times.append(time.perf_counter() - t0)
            del J
        out.update(total_s=times)
    elif path == "matrix_free":
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            T = block_top_singular(block, h, K, seed=SEED)
            times.append(time.perf_counter() - t0)
        out.update(total_s=times)
    elif path in ("export_mf", "export_mf_b1"):
        from torch import nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.blocks = nn.ModuleList([block])

            def forward(self, x):
                return self.blocks[0](x).mean(dim=(1, 2, 3))

        net = Net()
        labels = np.arange(n) % 2
        with tempfile.TemporaryDirectory() as tmp:
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                js = export_jacobians(net, h, labels, os.path.join(tmp, "b.npz"), method="matrix_free",
                                      k=K, classes=2, seed=SEED, batch_size=1 if path == "export_mf_b1" else n)
                times.append(time.perf_counter() - t0)
        T = (js.U[0], js.S[0], js.V[0])
        out.update(total_s=times)
    else:
        raise ValueError(path)
    out["peak_mib"] = (_rss_kib() - base) / 1024
    if ref and path != "dense_exact":
        R = np.load(ref)
        U, S, V = T
        out["S_rel_err"] = float(np.max(np.abs(S - R["S"]) / R["S"]))
        proj = lambda Q: Q @ np.swapaxes(Q, -1, -2)  # noqa: E731
        out["U_subspace_err"] = float(np.abs(proj(U) - proj(R["U"])).max())
        out["V_subspace_err"] = float(np.abs(proj(V) - proj(R["V"])).max())
    if path == "dense_exact" or not ref:
        out["S_top"] = np.asarray(T[1])[0].tolist()
    return out


def run(path, case, n, repeats, ref, channels, size):
    cmd = [sys.executable, __file__, "--worker", path, "--case", case, "--n", str(n),
           "--repeats", str(repeats), "--ref", ref, "--channels", str(channels), "--size", str(size)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"{path} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _spread(xs):
    return f"{min(xs):.2f} / {statistics.median(xs):.2f} / {max(xs):.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--case", choices=("ra", "decay", "flat"), default="ra")
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per process")
    ap.add_argument("--processes", type=int, default=2, help="processes per matrix-free path")
    ap.add_argument("--dense-repeats", type=int, default=2,
                    help="timed calls of dense + top_singular(auto), one process (dense + exact SVD runs once)")
    ap.add_argument("--channels", type=int, default=C_CH)
    ap.add_argument("--size", type=int, default=HW, help="height = width of the feature maps")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--ref", default="", help=argparse.SUPPRESS)
    ap.add_argument("--markdown", default=None, help="append the table to this file")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.case, args.n, args.repeats, args.ref or None,
                                args.channels, args.size)))
        return

    import torch

    import ramodel

    d = args.channels * args.size**2
    with tempfile.TemporaryDirectory() as tmp:
        ref = os.path.join(tmp, "ref.npz")
        def go(path, repeats):
            return run(path, args.case, args.n, repeats, ref, args.channels, args.size)

        results = {"dense_exact": [go("dense_exact", 1)], "dense_auto": [go("dense_auto", args.dense_repeats)]}
        for path in ("matrix_free", "export_mf", "export_mf_b1"):
            results[path] = [go(path, args.repeats) for _ in range(args.processes)]

    ex = results["dense_exact"][0]
    lines = [
        f"### case `{args.case}`: d = {d} ({args.channels} channels, {args.size}x{args.size}), "
        f"N = {args.n}, k = {K}, float64",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared), torch threads "
        f"{ex['torch_threads']}; Python {platform.python_version()}, torch {torch.__version__}, "
        f"numpy {np.__version__}, ramodel {ramodel.__version__}.",
        f"Reference sigma_1..sigma_{K} of input 0: " + ", ".join(f"{s:.4g}" for s in ex["S_top"]),
        "",
        "| path | time s (min / median / max) | peak RSS growth MiB | max rel. err sigma_1..k "
        "| max |P_U - P_U*| | max |P_V - P_V*| |",
        "|---|---|---|---|---|---|",
        f"| dense: jacrev + exact SVD | {ex['total_s'][0]:.2f} (jacrev {ex['materialise_s']:.2f}, SVD "
        f"{ex['svd_s']:.2f}) | {ex['peak_mib']:.0f} | reference | reference | reference |",
    ]
    names = {
        "dense_auto": "dense: jacrev + top_singular(auto)",
        "matrix_free": "matrix-free: block_top_singular (warm)",
        "export_mf": "export_jacobians(method='matrix_free'), L=1",
        "export_mf_b1": "same, batch_size=1",
    }
    for path, label in names.items():
        rs = results[path]
        times = [t for r in rs for t in r["total_s"]]
        peak = max(r["peak_mib"] for r in rs)
        lines.append(
            f"| {label} | {_spread(times)} | {peak:.0f} | {max(r['S_rel_err'] for r in rs):.1e} | "
            f"{max(r['U_subspace_err'] for r in rs):.1e} | {max(r['V_subspace_err'] for r in rs):.1e} |"
        )
    cold = [r["warmup_s"] for r in results["matrix_free"]]
    cold_rss = [r["warmup_rss_mib"] for r in results["matrix_free"]]
    mf_med = statistics.median([t for r in results["matrix_free"] for t in r["total_s"]])
    mf_peak = max(r["peak_mib"] for r in results["matrix_free"])
    auto_med = statistics.median([t for r in results["dense_auto"] for t in r["total_s"]])
    auto_peak = max(r["peak_mib"] for r in results["dense_auto"])
    b1_peak = max(r["peak_mib"] for r in results["export_mf_b1"])
    b1_med = statistics.median([t for r in results["export_mf_b1"] for t in r["total_s"]])
    lines += [
        "",
        f"One-time first use in a process (a tiny block; torch loads its vmap/forward-AD machinery), "
        f"excluded above: matrix-free {_spread(cold)} s and {max(cold_rss):.0f} MiB RSS; dense "
        f"{_spread([r['warmup_s'] for r in results['dense_auto']])} s and "
        f"{max(r['warmup_rss_mib'] for r in results['dense_auto']):.0f} MiB.",
        f"Speed-up of matrix-free (median, warm) over dense + exact SVD: {ex['total_s'][0] / mf_med:.0f}x; "
        f"over dense + top_singular(auto): {auto_med / mf_med:.1f}x. Memory ratio (peak RSS growth): "
        f"{ex['peak_mib'] / max(mf_peak, 1e-9):.0f}x and {auto_peak / max(mf_peak, 1e-9):.0f}x. "
        f"With batch_size=1: {ex['total_s'][0] / b1_med:.0f}x faster and "
        f"{ex['peak_mib'] / max(b1_peak, 1e-9):.0f}x smaller than dense + exact SVD.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    print(json.dumps(results), file=sys.stderr)
    if args.markdown:
        with open(args.markdown, "a") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
