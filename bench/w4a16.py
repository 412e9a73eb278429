"""W4A16 GEMV / GEMM at LLaMA-2-7B layer shapes: our kernel vs torch matmul vs dequantize+matmul.

Floor (counted first): a W4A16 layer must read its packed weights once,
  K*N/2 B (codes) + K/G*N*2 B (fp16 scales) + K/G*N/2 B (4-bit zeros) + activations,
and that over the memory bandwidth measured in the same run (a 1 GiB tensor copy: read + write
bytes / time) is the shortest possible time at small M (GEMV). At large M the arithmetic
(2*M*K*N flops) dominates instead; the table gives the bytes floor and the ratio floor / ours.

Caches: a 7B layer (8.4 to 22.5 MB packed) fits in a CPU's L3 or an H200's L2, while a real
decode streams 32 layers from memory. Every timed call therefore reads a different copy of the
layer, rotating over enough copies to exceed ``--cold-bytes`` (default 256 MiB).

Timing: CUDA events around ``--calls`` back-to-back calls (default 50) after a warm-up, per
call = total / calls; on the CPU the median of ``--calls`` individually timed calls.
On the CPU the GEMV rows also time each instruction-set path of the kernel (``scalar`` is the
reference implementation every SIMD path is tested against), with the thread count printed;
rows below ``W4A16_CPU_BLAS_MIN_M`` also time each path of the packed-layout GEMV
(``packed_<isa>_ms``, on codes repacked once per layer copy, outside the timing), and each path
of the opt-in W4A8 GEMV (``w4a8_<isa>_ms``: int8-quantized activations, csrc/w4a8/w4a8.h; the
activation quantization is inside the timing; larger M: its fastest path only, which
``int8_activations`` runs for prefill too), whose bytes floor (codes + fp16 scales + 8-bit zeros)
is within 0.2% of W4A16's; ``floor/w4a8`` is the floor over its fastest path.

Columns: ``ours_ms`` is what ``W4A16Linear`` runs (on the CPU below the BLAS rows with
group_size % 32 == 0: ``vilau::w4a16_linear_packed``; otherwise ``vilau::w4a16_linear``), and
``awq_op_ms`` is ``vilau::w4a16_linear`` on the AutoAWQ buffers; floor/ours and floor/awq_op
divide the bytes floor by each.

Usage: ``python bench/w4a16.py [--device cpu|cuda] [--rows 1 16] [--json FILE] [--smoke]``
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from vilau_rt import _C
from vilau_rt.ops import kernels, w4a8

SHAPES = [(4096, 4096), (4096, 11008), (11008, 4096)]  # (K, N): q/k/v/o, gate/up, down
SMOKE_SHAPES = [(256, 128), (512, 256)]
ROWS = [1, 2, 16, 128]


def bandwidth(device: torch.device, n_bytes: int) -> float:
    """Bytes / s of a large copy (read + write counted), median of 5."""
    src = torch.ones(n_bytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    return 2 * n_bytes / timed(lambda i: dst.copy_(src), device, 5)


def timed(fn, device: torch.device, calls: int) -> float:
    """Seconds per call of fn(i), i = 0..calls-1 (see the module docstring)."""
    fn(0)  # warm-up (and, on CUDA, lazy initialisation)
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        for i in range(calls):
            fn(i)
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / calls
    times = []
    for i in range(calls):
        t0 = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def random_layer(k: int, n: int, group: int, device: torch.device, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
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


def clone(v):
    """A copy of a layer buffer: a tensor, or W4A8Weights (its tensors copied)."""
    if isinstance(v, w4a8.W4A8Weights):
        return w4a8.W4A8Weights(v.codes.clone(), v.zeros.clone(), v.scales.clone(), None, v.k,
                                v.n, v.group_size)  # fmt: skip
    return v.clone()


def gemv_isa(isa: str, x: torch.Tensor, layer: dict, group: int, threads: int) -> torch.Tensor:
    """One forced instruction-set path of the CPU GEMV (x float32 [M, K], M <= GEMV max)."""
    m, k = x.shape
    n = layer["scales"].shape[1]
    y = torch.empty(m, n)
    _C.w4a16_gemv_cpu(
        x.data_ptr(), layer["qweight"].data_ptr(), layer["qzeros"].data_ptr(),
        layer["scales"].data_ptr(), 0, y.data_ptr(), m, k, n, group, 0, threads, isa,
    )  # fmt: skip
    return y


def packed_route(x: torch.Tensor, group: int) -> bool:
    """Whether W4A16Linear takes the packed GEMV for x (see its docstring)."""
    return x.device.type == "cpu" and group % 32 == 0 and x.shape[0] < kernels.W4A16_CPU_BLAS_MIN_M


def packed_isa(isa: str, x: torch.Tensor, layer: dict, group: int) -> torch.Tensor:
    """One forced instruction-set path of the packed CPU GEMV."""
    y = torch.empty(x.shape[0], layer["scales"].shape[1], dtype=x.dtype)
    kernels.w4a16_linear_packed_into(
        y, x, layer["packed"], layer["qzeros"], layer["scales"], None, group, isa
    )
    return y


def measure(x, layers, w_float, group, isas, threads, calls, baselines) -> dict:
    """Milliseconds per call of our op (and baselines, and each CPU GEMV path) on x."""
    dev, act, copies = x.device, x.dtype, len(layers)
    packed = packed_route(x, group)

    def awq_op(i):
        layer = layers[i % copies]
        return kernels.w4a16_linear(
            x, layer["qweight"], layer["qzeros"], layer["scales"], None, group
        )

    def ours(i):
        if not packed:
            return awq_op(i)
        layer = layers[i % copies]
        return kernels.w4a16_linear_packed(
            x, layer["packed"], layer["qzeros"], layer["scales"], None, group
        )

    def matmul(i):  # one float weight: it stays in cache, a flattering baseline
        return x @ w_float

    def two_step(i):
        layer = layers[i % copies]
        w = kernels.w4a16_dequantize(
            layer["qweight"], layer["qzeros"], layer["scales"], group, out_dtype=act
        )
        return x @ w

    row = {"ours_ms": 1e3 * timed(ours, dev, calls), "awq_op_ms": 1e3 * timed(awq_op, dev, calls)}
    if baselines:
        row["torch_matmul_ms"] = 1e3 * timed(matmul, dev, calls)
        row["dequant_matmul_ms"] = 1e3 * timed(two_step, dev, calls)
    if x.shape[0] <= _C.W4A16_GEMV_MAX_M:
        for isa in isas:
            t = timed(lambda i, isa=isa: gemv_isa(isa, x, layers[i % copies], group, threads),
                      dev, calls)  # fmt: skip
            row[f"gemv_{isa}_ms"] = 1e3 * t
    if packed:
        for isa in _C.w4a16_packed_cpu_isas():
            t = timed(lambda i, isa=isa: packed_isa(isa, x, layers[i % copies], group), dev, calls)
            row[f"packed_{isa}_ms"] = 1e3 * t
    if x.dtype == torch.float32 and "w4a8" in layers[0]:  # every M: int8_activations' prefill too
        isas8 = _C.w4a8_cpu_isas() if packed else _C.w4a8_cpu_isas()[:1]
        for isa in isas8:
            t = timed(lambda i, isa=isa: w4a8.linear(x, layers[i % copies]["w4a8"], isa),
                      dev, calls)  # fmt: skip
            row[f"w4a8_{isa}_ms"] = 1e3 * t
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--calls", type=int, default=50, help="timed calls per measurement")
    p.add_argument("--group-size", type=int, default=128)
    p.add_argument("--rows", type=int, nargs="*", default=ROWS, help="values of M")
    p.add_argument("--cold-bytes", type=float, default=256 * 2**20,
                   help="rotate over layer copies totalling at least this many bytes")  # fmt: skip
    p.add_argument("--no-baselines", action="store_true", help="time our kernel only")
    p.add_argument("--smoke", action="store_true", help="tiny shapes, 3 calls: a dry run")
    p.add_argument("--json", help="also write the rows as JSON here")
    args = p.parse_args()
    dev = torch.device(args.device)
    shapes = SMOKE_SHAPES if args.smoke else SHAPES
    calls = 3 if args.smoke else args.calls
    group = 64 if args.smoke else args.group_size
    cold = 4 * 2**20 if args.smoke else args.cold_bytes
    act = torch.float16 if dev.type == "cuda" else torch.float32
    threads = torch.get_num_threads()
    bw = bandwidth(dev, (16 if args.smoke else 1024) * 2**20)
    isas = _C.w4a16_cpu_isas() if dev.type == "cpu" else []
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor()
    head = {"machine": f"{platform.machine()} {name or ''}".strip(), "device": str(dev),
            "threads": threads, "torch": torch.__version__, "activations": str(act),
            "bandwidth_GBs": bw / 1e9, "cpu_isas": isas, "build": _C.build_info(),
            "calls": calls, "group_size": group}  # fmt: skip
    print(json.dumps(head))
    rows = []
    for k, n in shapes:
        packed_bytes = k * n // 2 + (k // group) * n * 2.5
        copies = max(1, min(64, int(cold // packed_bytes) + 1))
        first = random_layer(k, n, group, dev, seed=k * 7 + n)
        if dev.type == "cpu" and group % 32 == 0:  # what W4A16Linear builds on its first call
            first["packed"] = kernels.w4a16_repack(first["qweight"])
            if n % 16 == 0:
                first["w4a8"] = w4a8.W4A8Weights.from_awq(
                    first["qweight"], first["qzeros"], first["scales"], None, group
                )
        layers = [first] + [{key: clone(t) for key, t in first.items()} for _ in range(copies - 1)]
        w_float = kernels.w4a16_dequantize(
            first["qweight"], first["qzeros"], first["scales"], group, out_dtype=act
        )
        for m in args.rows:
            x = torch.randn(m, k, device=dev, dtype=act)
            floor = (packed_bytes + (m * k + m * n) * x.element_size()) / bw
            row = {"K": k, "N": n, "M": m, "copies": copies, "bytes_floor_ms": 1e3 * floor,
                   **measure(x, layers, w_float, group, isas, threads, calls,
                             not args.no_baselines)}  # fmt: skip
            row["floor_over_ours"] = floor / (row["ours_ms"] / 1e3)
            row["floor_over_awq_op"] = floor / (row["awq_op_ms"] / 1e3)
            best_w4a8 = min((v for c, v in row.items() if c.startswith("w4a8_")), default=None)
            if best_w4a8:
                row["floor_over_w4a8"] = floor / (best_w4a8 / 1e3)
            rows.append(row)
            print(json.dumps({key: round(v, 4) if isinstance(v, float) else v
                              for key, v in row.items()}))  # fmt: skip
            if args.json:  # rewritten after every row: a run cut short keeps what it measured
                with open(args.json, "w") as f:
                    json.dump({**head, "rows": rows}, f, indent=2)
    packed_isas = _C.w4a16_packed_cpu_isas() if dev.type == "cpu" else []
    w4a8_isas = _C.w4a8_cpu_isas() if dev.type == "cpu" else []
    cols = ["ours_ms", "awq_op_ms", "torch_matmul_ms", "dequant_matmul_ms",
            *(f"gemv_{i}_ms" for i in isas), *(f"packed_{i}_ms" for i in packed_isas),
            *(f"w4a8_{i}_ms" for i in w4a8_isas)]  # fmt: skip
    cols = [c for c in cols if any(c in r for r in rows)]
    print("| K x N | M | bytes floor ms | " + " | ".join(cols) +
          " | floor/ours | floor/awq_op | floor/w4a8 |")  # fmt: skip
    print("|" + "---|" * (len(cols) + 6))
    for r in rows:
        vals = " | ".join(f"{r[c]:.3f}" if c in r else "-" for c in cols)
        w4a8_ratio = f"{r['floor_over_w4a8']:.2f}" if "floor_over_w4a8" in r else "-"
        print(f"| {r['K']}x{r['N']} | {r['M']} | {r['bytes_floor_ms']:.3f} | {vals} | "
              f"{r['floor_over_ours']:.2f} | {r['floor_over_awq_op']:.2f} | {w4a8_ratio} |")  # fmt: skip


if __name__ == "__main__":
    main()
