"""Float decode GEMV on the CPU (csrc/gemv): float32 weights against float16 / bfloat16 weights and
int8 ones with a float32 scale per row (the w8 GEMV) at LLaMA-2-7B layer shapes and its lm_head,
x float32, against the bytes floor.

Floor: a GEMV must read its weights once, K*N*4 B (float32), K*N*2 B (16-bit) or K*N + N*4 B
(int8 codes and their scales), plus x and y (M*K*4 + M*N*4 B); over the copy bandwidth measured
in the same run (``bench/w4a16.py``'s ``bandwidth()``: a 1 GiB tensor copy, read + write bytes /
time, median of 5) that is the shortest possible time. ``GBs`` is those bytes over the measured
time and ``floor/ours`` the floor's share of it. The 16-bit GEMV (``_C.gemv_w16_cpu``) returns
the bits of the float32 one on the upcast weights, so a lower time is a free win where the
checkpoint's weights are 16-bit. The int8 GEMV (``_C.gemv_w8_cpu``, rows ``int8``) reads the
weight quantized per output row by ``native.quantize_rows_int8``: a quarter of the float32
bytes, paid for with that quantization's error (tests/ops/test_gemv_w8.py bounds it).

Caches: every timed call reads a different copy of the weight, rotating over enough copies to
exceed ``--cold-bytes`` (default 256 MiB, eight times this CPU's 32 MiB L3), as a decode step
streams every layer from memory. Timing: median of ``--calls`` individually timed calls after a
warm-up (``bench/w4a16.py``'s ``timed()``). ``torch_ms`` (float32 rows): ``F.linear`` (torch's
BLAS) on the same rotating copies.

Usage: ``python bench/gemv_float.py [--threads N] [--rows 1] [--weights float32 float16 int8]
[--isa auto] [--shapes KxN ...] [--json FILE] [--smoke]``
"""

from __future__ import annotations

import argparse
import json
import platform
from functools import partial

import torch
import torch.nn.functional as F
from w4a16 import bandwidth, timed  # bench/ is this script's folder, first on sys.path

from vilau_rt import _C
from vilau_rt.ops.native import quantize_rows_int8

SHAPES = [(4096, 4096), (4096, 11008), (11008, 4096), (4096, 32000)]  # (K, N); last: lm_head
SMOKE_SHAPES = [(256, 96), (512, 40)]
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
          "int8": torch.int8}  # fmt: skip
W16_CODES = {torch.float16: 1, torch.bfloat16: 2}


def gemv(
    x: torch.Tensor, w: torch.Tensor, y: torch.Tensor, threads: int, isa: str, scale=None
) -> None:
    """y = x @ w.T through the float32, 16-bit or int8 GEMV, by w's dtype (int8: times scale)."""
    m, k = x.shape
    n = w.shape[0]
    if w.dtype == torch.float32:
        _C.gemv_f32_cpu(x.data_ptr(), w.data_ptr(), 0, y.data_ptr(), m, k, n, threads, isa)
    elif w.dtype == torch.int8:
        _C.gemv_w8_cpu(
            x.data_ptr(), w.data_ptr(), scale.data_ptr(), 0, y.data_ptr(), m, k, n, threads, isa
        )
    else:
        _C.gemv_w16_cpu(
            x.data_ptr(), w.data_ptr(), W16_CODES[w.dtype], 0, y.data_ptr(), m, k, n, threads, isa
        )


def time_ms(fn, ws: list[torch.Tensor], calls: int) -> float:
    """Median milliseconds of fn(w), w rotating over the copies ws."""
    return 1e3 * timed(lambda i: fn(ws[i % len(ws)]), torch.device("cpu"), calls)


def shape_arg(text: str) -> tuple[int, int]:
    """A "KxN" argument (e.g. "1024x2816") as (K, N)."""
    try:
        k, n = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not KxN, e.g. 1024x2816") from None
    return k, n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--rows", type=int, nargs="*", default=[1], help="values of M (<= 4)")
    p.add_argument("--weights", nargs="*", default=["float32", "float16", "bfloat16", "int8"],
                   choices=list(DTYPES), help="weight dtypes to time")  # fmt: skip
    p.add_argument("--isa", default="auto", help="GEMV path: auto or one of _C.gemv_f32_isas()")
    p.add_argument("--calls", type=int, default=40, help="timed calls per measurement")
    p.add_argument("--cold-bytes", type=float, default=256 * 2**20,
                   help="rotate over weight copies totalling at least this many bytes")  # fmt: skip
    p.add_argument("--no-torch", action="store_true", help="skip the F.linear float32 baseline")
    p.add_argument("--shapes", nargs="*", type=shape_arg, metavar="KxN",
                   help="layer shapes to time (default: LLaMA-2-7B's and its lm_head)")  # fmt: skip
    p.add_argument("--smoke", action="store_true", help="tiny shapes, 3 calls: a dry run")
    p.add_argument("--json", help="also write the rows as JSON here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    shapes = SMOKE_SHAPES if args.smoke else (args.shapes or SHAPES)
    calls = 3 if args.smoke else args.calls
    cold = 4 * 2**20 if args.smoke else args.cold_bytes
    bw = bandwidth(cpu, (16 if args.smoke else 1024) * 2**20)
    head = {"machine": f"{platform.machine()} {platform.processor()}".strip(),
            "threads": args.threads, "torch": torch.__version__, "isa": args.isa,
            "cpu_isas": _C.gemv_f32_isas(), "bandwidth_GBs": bw / 1e9, "calls": calls,
            "cold_bytes": cold}  # fmt: skip
    print(json.dumps(head), flush=True)
    rows = []
    for k, n in shapes:
        base = torch.randn(n, k, generator=torch.Generator().manual_seed(k * 7 + n))
        for name in args.weights:
            dtype = DTYPES[name]
            # int8: the codes rotate like the other weights; the scales (N floats) are shared
            first, scale = (
                quantize_rows_int8(base) if dtype == torch.int8 else (base.to(dtype), None)
            )
            w_bytes = first.numel() * first.element_size() + (0 if scale is None else 4 * n)
            copies = max(1, min(64, int(cold // w_bytes) + 1))
            ws = [first] + [first.clone() for _ in range(copies - 1)]
            for m in args.rows:
                x = torch.randn(m, k)
                y = torch.empty(m, n)
                n_bytes = w_bytes + 4 * (m * k + m * n)
                fn = partial(gemv, x, y=y, threads=args.threads, isa=args.isa, scale=scale)
                ms = time_ms(fn, ws, calls)
                row = {"K": k, "N": n, "M": m, "weights": name, "copies": copies,
                       "MB": n_bytes / 1e6, "bytes_floor_ms": 1e3 * n_bytes / bw, "ms": ms,
                       "GBs": n_bytes / ms / 1e6}  # fmt: skip
                row["floor_over_ours"] = row["bytes_floor_ms"] / ms
                if dtype == torch.float32 and not args.no_torch:
                    row["torch_ms"] = time_ms(partial(F.linear, x), ws, calls)
                rows.append(row)
                print(json.dumps({key: round(v, 4) if isinstance(v, float) else v
                                  for key, v in row.items()}), flush=True)  # fmt: skip
                if args.json:  # rewritten after every row: a run cut short keeps what it measured
                    with open(args.json, "w") as f:
                        json.dump({**head, "rows": rows}, f, indent=2)
            del ws, first
    print(f"\ncopy bandwidth {bw / 1e9:.1f} GB/s, {args.threads} threads, isa {args.isa}")
    print("| K x N | M | weights | MB read | floor ms | ms | GB/s | floor/ours | F.linear ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        torch_ms = f"{r['torch_ms']:.3f}" if "torch_ms" in r else "-"
        print(f"| {r['K']}x{r['N']} | {r['M']} | {r['weights']} | {r['MB']:.1f} | "
              f"{r['bytes_floor_ms']:.3f} | {r['ms']:.3f} | {r['GBs']:.1f} | "
              f"{r['floor_over_ours']:.2f} | {torch_ms} |")  # fmt: skip


if __name__ == "__main__":
    main()
