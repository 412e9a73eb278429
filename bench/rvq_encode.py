"""RVQ encode on the CPU (``vilau::rvq_encode``, what the native backend runs for every image it
reads) against the torch backend's search (``ResidualQuantizer.encode``: ``torch.addmm`` over
the whole codebook, then ``argmin``), at VILA-U 7B's quantizer shapes.

Floor (counted first): each depth compares every row's residual with every code, N x n_embed
dots of C values: 2 * N * D * n_embed * C flops (a 7B-256 image: 256 rows, D = 4, 16384 codes of
1024: 34.4 GFLOP; 7B-384: 729 rows, D = 16, 1152 wide: 440 GFLOP). The codebooks (D x 16384 x
C float32, 268 MB at 7B-256) are read once per depth, ~10 ms at 30 GB/s: compute-bound. The
compute floor is the flops over the float32 FMA peak measured in the same run
(``bench/fma_peak.c``); ``peak`` is the share of it reached.

Timing: median of ``--calls`` calls after a warm-up, same features and codebooks each call;
``--device cuda``: the CUDA kernel (one block per row, which reads the whole codebook a row and
depth: 256 x 4 x 16384 x 1024 values a 7B-256 image, 69 GB in float32 as timed here, 34 GB in
16 bits; counted) against the same torch search on the GPU, CUDA events over the calls back to
back, no peak.
``same codes``: how many of ours equal the torch search's (the two sum the dots in different
orders, so a near-tie can go either way; random features make that rare).

Usage: ``python bench/rvq_encode.py [--device cpu|cuda] [--threads N] [--calls 5] [--images 1 8]
[--json FILE] [--smoke]``
"""

from __future__ import annotations

import argparse
import json
import platform

import torch
from gemm import fma_peak  # bench/ is this script's folder, first on sys.path
from w4a16 import timed

from vilau_rt.model.rvq import ResidualQuantizer, RVQConfig
from vilau_rt.ops import kernels

# name: (rows per image, depth, n_embed, C)
SHAPES = {"7b-256": (256, 4, 16384, 1024), "7b-384": (729, 16, 16384, 1152)}
SMOKE_SHAPES = {"smoke": (16, 3, 300, 64)}


def quantizer(depth: int, n_embed: int, dim: int, seed: int) -> ResidualQuantizer:
    """Random codebooks of the trained ones' scale (rows of norm ~1)."""
    q = ResidualQuantizer(RVQConfig(n_embed=n_embed, embed_dim=dim, depth=depth)).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for cb in q.codebooks:
            cb.weight.copy_(torch.randn(cb.weight.shape, generator=g) / dim**0.5)
    return q


def measure(name, rows, depth, n_embed, dim, images, threads, calls, peak, device) -> dict:
    q = quantizer(depth, n_embed, dim, seed=rows + depth).to(device)
    books = q.stacked_codebooks().detach().contiguous()
    g = torch.Generator().manual_seed(7)
    x = (torch.randn(images * rows, dim, generator=g) / dim**0.5 * 2).to(device)
    torch.set_num_threads(threads)
    with torch.no_grad():
        ours_codes, _ = kernels.rvq_encode(x, books, n_embed, depth)
        torch_codes, _ = q.encode(x)
        ours = timed(lambda i: kernels.rvq_encode(x, books, n_embed, depth), device, calls)
        ref = timed(lambda i: q.encode(x), device, calls)
    gflop = 2 * images * rows * depth * n_embed * dim / 1e9
    return {
        "shape": name, "images": images, "rows": images * rows, "gflop": round(gflop, 2),
        "ours_ms": round(ours * 1e3, 2), "torch_ms": round(ref * 1e3, 2),
        "torch_over_ours": round(ref / ours, 2), "ours_gflops": round(gflop / ours, 1),
        "peak": round(gflop / ours / peak, 2) if peak else None,
        "same_codes": f"{int((ours_codes == torch_codes).sum())}/{ours_codes.numel()}",
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu, or cuda: the CUDA kernel, CUDA events")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--calls", type=int, default=5)
    p.add_argument("--images", type=int, nargs="+", default=[1, 8])
    p.add_argument("--json", help="also write the rows as JSON here")
    p.add_argument("--smoke", action="store_true", help="tiny shapes, 2 calls: a dry run")
    args = p.parse_args()
    shapes, calls = (SMOKE_SHAPES, 2) if args.smoke else (SHAPES, args.calls)
    device = torch.device(args.device)
    peak = fma_peak(args.threads) if device.type == "cpu" else None  # the CPU's FMA peak only
    meta = {"machine": platform.machine(), "processor": platform.processor() or "?",
            "device": str(device), "gpu": torch.cuda.get_device_name(device)
            if device.type == "cuda" else None, "threads": args.threads,
            "torch": torch.__version__, "peak_gflops": peak, "calls": calls}  # fmt: skip
    print(json.dumps(meta), flush=True)
    rows = []
    for name, (n, depth, n_embed, dim) in shapes.items():
        for images in args.images:
            if name == "7b-384" and images > 1:
                continue  # 440 GFLOP an image: one is enough to time
            row = measure(name, n, depth, n_embed, dim, images, args.threads, calls, peak,
                          device)  # fmt: skip
            print(json.dumps(row), flush=True)
            rows.append(row)
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
