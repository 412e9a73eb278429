"""Prefill GEMM on the CPU (csrc/gemm): float32 weights against torch's BLAS, and AWQ INT4
weights (dequantized while packed) against the route the W4A16 op took before it (dequantize to
float32, then BLAS), at the 150M benchmark model's and LLaMA-2-7B's layer shapes.

Floor (counted first): a prefill of M rows through a [N, K] layer is 2*M*K*N flops, and the
weights (K*N*4 B float32, ~K*N/2 B INT4) are read once, a few ms at most at these sizes: it is
compute-bound from ~16 rows. The compute floor is the flops over the CPU's float32 FMA peak
measured in the same run (``bench/fma_peak.c``, compiled here with ``cc -march=native``; 12
independent vector FMA chains a thread, best of 5); ``peak`` is the share of it reached.

Timing: median of ``--calls`` calls after a warm-up, each on the same (warm) weights: a
prefill reads each layer once per call, but the time is in the arithmetic (the weights of one
layer move in 1-3 ms at ~30 GB/s against 5-150 ms of flops at 100+ rows).
Columns: ``ours_ms`` ``_C.gemm_f32_cpu`` (what ``native.linear`` runs for prefill rows on an
AVX-512 machine), ``torch_ms`` ``F.linear`` (MKL sgemm in the x86 wheels), ``awq_ms``
``_C.gemm_awq_cpu`` (what the W4A16 op runs for float32 prefill rows there), ``deq_blas_ms``
``w4a16_dequantize`` to float32 then ``x @ W_T`` (the op's route before).

Usage: ``python bench/gemm.py [--threads N] [--rows 16 100 512] [--calls 7] [--json FILE]
[--smoke]``
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from w4a16 import random_layer, timed  # bench/ is this script's folder, first on sys.path

from vilau_rt import _C
from vilau_rt.ops import kernels

SHAPES = [(1024, 1024), (1024, 2816), (2816, 1024), (4096, 4096), (4096, 11008), (11008, 4096)]
SMOKE_SHAPES = [(256, 96), (384, 64)]
GROUP = 128


def fma_peak(threads: int) -> float | None:
    """GFLOP/s of bench/fma_peak.c with ``threads`` threads, or None without a C compiler."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    src = Path(__file__).with_name("fma_peak.c")
    with tempfile.TemporaryDirectory() as tmp:
        exe = Path(tmp) / "fma_peak"
        flags = ["-O2", "-fopenmp", "-march=native", "-ffp-contract=fast"]
        cmd = [cc, *flags, str(src), "-o", str(exe)]
        if subprocess.run(cmd, capture_output=True, check=False).returncode:
            return None
        out = subprocess.run([str(exe), str(threads)], capture_output=True, text=True, check=True)
    return float(out.stdout.split()[0])


def gemm_f32(x: torch.Tensor, w: torch.Tensor, y: torch.Tensor, threads: int) -> None:
    m, k = x.shape
    _C.gemm_f32_cpu(x.data_ptr(), w.data_ptr(), 0, y.data_ptr(), m, k, w.shape[0], threads)


def gemm_awq(x: torch.Tensor, layer: dict, y: torch.Tensor, threads: int) -> None:
    m, k = x.shape
    _C.gemm_awq_cpu(
        x.data_ptr(), layer["qweight"].data_ptr(), layer["qzeros"].data_ptr(),
        layer["scales"].data_ptr(), 0, y.data_ptr(), m, k, y.shape[1], GROUP, threads,
    )  # fmt: skip


def deq_blas(x: torch.Tensor, layer: dict) -> torch.Tensor:
    w_t = kernels.w4a16_dequantize(
        layer["qweight"], layer["qzeros"], layer["scales"], GROUP, torch.float32
    )
    return x @ w_t


def measure(k: int, n: int, m: int, threads: int, calls: int, peak: float | None) -> dict:
    gen = torch.Generator().manual_seed(k + n + m)
    x = torch.randn(m, k, generator=gen)
    w = torch.randn(n, k, generator=gen) / k**0.5
    layer = random_layer(k, n, GROUP, torch.device("cpu"), seed=k + n)
    y = torch.empty(m, n)
    cpu = torch.device("cpu")
    row = {"K": k, "N": n, "M": m, "GFLOP": 2 * m * k * n / 1e9}
    row["ours_ms"] = timed(lambda i: gemm_f32(x, w, y, threads), cpu, calls) * 1e3
    row["torch_ms"] = timed(lambda i: F.linear(x, w), cpu, calls) * 1e3
    row["awq_ms"] = timed(lambda i: gemm_awq(x, layer, y, threads), cpu, calls) * 1e3
    row["deq_blas_ms"] = timed(lambda i: deq_blas(x, layer), cpu, calls) * 1e3
    for key in ("ours", "awq"):
        row[f"{key}_gflops"] = row["GFLOP"] / row[f"{key}_ms"] * 1e3
        row[f"{key}_peak"] = None if peak is None else row[f"{key}_gflops"] / peak
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--rows", type=int, nargs="+", default=[16, 100, 512])
    ap.add_argument("--calls", type=int, default=7)
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes and rows (CI)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    shapes, rows = (SMOKE_SHAPES, [3, 17]) if args.smoke else (SHAPES, args.rows)
    peak = fma_peak(args.threads)
    print(
        f"machine: {platform.machine()} {platform.processor() or ''}, {args.threads} threads, "
        f"gemm path {_C.gemm_f32_isas()[0]}, torch {torch.__version__}, float32 FMA peak "
        + ("n/a (no C compiler)" if peak is None else f"{peak:.1f} GFLOP/s (bench/fma_peak.c)")
    )
    print(
        "| K x N | M | GFLOP | ours ms | torch (BLAS) ms | torch / ours | ours GFLOP/s | peak "
        "| awq ms | dequantize + BLAS ms | deq / awq | awq GFLOP/s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    out = []
    for k, n in shapes:
        for m in rows:
            r = measure(k, n, m, args.threads, args.calls, peak)
            out.append(r)
            share = "-" if r["ours_peak"] is None else f"{r['ours_peak']:.2f}"
            print(
                f"| {k}x{n} | {m} | {r['GFLOP']:.3f} | {r['ours_ms']:.3f} | {r['torch_ms']:.3f} "
                f"| {r['torch_ms'] / r['ours_ms']:.2f} | {r['ours_gflops']:.0f} | {share} "
                f"| {r['awq_ms']:.3f} | {r['deq_blas_ms']:.3f} "
                f"| {r['deq_blas_ms'] / r['awq_ms']:.2f} | {r['awq_gflops']:.0f} |",
                flush=True,
            )
    if args.json:
        meta = {"threads": args.threads, "isa": _C.gemm_f32_isas()[0], "peak_gflops": peak}
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": out}, indent=1))


if __name__ == "__main__":
    main()
