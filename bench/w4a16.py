"""W4A16 GEMV / GEMM at LLaMA-2-7B layer shapes: our kernel vs torch matmul vs dequantize+matmul.

Floor (counted first): a W4A16 layer must read its packed weights once,
  K*N/2 B (codes) + K/G*N*2 B (fp16 scales) + K/G*N/2 B (4-bit zeros) + activations,
and that over the memory bandwidth measured in the same run (a large tensor copy: read + write
bytes / time) is the shortest possible time at small M (GEMV). At large M the arithmetic
(2*M*K*N flops) dominates instead; the table gives both and the ratio floor / ours.

Baselines in the same run: torch float32 matmul with a float weight (4x the bytes of fp16 INT4's
8x), and the two-step path a runtime without a W4A16 kernel takes (our dequantize to the
activation dtype, then torch matmul).

Usage: ``python bench/w4a16.py [--device cpu|cuda] [--repeat N] [--json FILE]``
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from vilau_rt.ops import kernels

SHAPES = [(4096, 4096), (4096, 11008), (11008, 4096)]  # (K, N): q/k/v/o, gate/up, down
ROWS = [1, 2, 16, 128]


def bandwidth(device: torch.device) -> float:
    """Bytes / s of a large copy (read + write counted)."""
    src = torch.empty(256 << 20, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    t = timed(lambda: dst.copy_(src), device, 5)
    return 2 * src.numel() / t


def timed(fn, device: torch.device, repeat: int) -> float:
    """Best-of-repeat wall time of fn() in seconds."""
    best = float("inf")
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def random_layer(k: int, n: int, group: int, device: torch.device) -> dict:
    g = torch.Generator().manual_seed(k * 7 + n)
    qweight = torch.randint(-(2**31), 2**31 - 1, (k, n // 8), generator=g, dtype=torch.int32)
    qzeros = torch.randint(
        -(2**31), 2**31 - 1, (k // group, n // 8), generator=g, dtype=torch.int32
    )
    scales = (torch.rand(k // group, n, generator=g) * 0.01 + 1e-3).half()
    return {
        "qweight": qweight.to(device),
        "qzeros": qzeros.to(device),
        "scales": scales.to(device),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--group-size", type=int, default=128)
    p.add_argument("--rows", type=int, nargs="*", default=ROWS)
    p.add_argument("--json", help="also write the rows as JSON here")
    args = p.parse_args()
    dev = torch.device(args.device)
    act = torch.float16 if dev.type == "cuda" else torch.float32
    bw = bandwidth(dev)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor()
    print(f"machine: {platform.machine()} {name or ''}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, activations {act}, copy bandwidth {bw / 1e9:.1f} GB/s")  # fmt: skip
    rows = []
    for k, n in SHAPES:
        layer = random_layer(k, n, args.group_size, dev)
        w_float = kernels.w4a16_dequantize(**layer, group_size=args.group_size, out_dtype=act)
        packed_bytes = k * n // 2 + (k // args.group_size) * n * 2.5
        for m in args.rows:
            x = torch.randn(m, k, device=dev, dtype=act)

            def ours(x=x, layer=layer, g=args.group_size):
                return kernels.w4a16_linear(x, **layer, bias=None, group_size=g)

            def matmul(x=x, w=w_float):
                return x @ w

            def two_step(x=x, layer=layer, g=args.group_size):
                return x @ kernels.w4a16_dequantize(**layer, group_size=g, out_dtype=act)

            t_ours, t_mm, t_two = (timed(f, dev, args.repeat) for f in (ours, matmul, two_step))
            floor = (packed_bytes + (m * k + m * n) * x.element_size()) / bw
            rows.append(
                {"K": k, "N": n, "M": m, "ours_ms": 1e3 * t_ours, "torch_matmul_ms": 1e3 * t_mm,
                 "dequant_matmul_ms": 1e3 * t_two, "bytes_floor_ms": 1e3 * floor,
                 "floor_over_ours": floor / t_ours, "matmul_over_ours": t_mm / t_ours}
            )  # fmt: skip
    head = "| K x N | M | ours ms | torch matmul ms | dequant+matmul ms | bytes floor ms | floor/ours | matmul/ours |"
    print(head)
    print("|" + "---|" * 8)
    for r in rows:
        print(f"| {r['K']}x{r['N']} | {r['M']} | {r['ours_ms']:.3f} | {r['torch_matmul_ms']:.3f} | "
              f"{r['dequant_matmul_ms']:.3f} | {r['bytes_floor_ms']:.3f} | "
              f"{r['floor_over_ours']:.2f} | {r['matmul_over_ours']:.2f} |")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"bandwidth_GBs": bw / 1e9, "device": str(dev), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
