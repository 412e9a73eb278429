"""The depth transformer of one image position on the CPU (``native.depth_loop``, what the native
backend runs for every position of a generated image), at the 7B checkpoints' depth shapes:
its linears through torch's ``F.linear`` (the path before 2026-12-02) against ``native.linear``
(our GEMV for the CFG pair), with float32 weights and with the bfloat16 weights an official
checkpoint stores (``native.linear`` reads them as stored; ``F.linear`` needs a float32 copy).

Floor: a position runs D depth steps, and each reads every weight of the attention stack, the
classifier and ``in_mlp_1`` once (``in_mlp_2`` once a position): those bytes over the copy
bandwidth measured in the same run (``bench/w4a16.py``'s ``bandwidth()``) is the shortest time.
The weights of one depth step (1.9 GB in float32 at 7B) are far beyond any CPU cache, so every
step streams them from memory, as a real image does.

Timing: median of ``--repeat`` positions after one warm-up, greedy (top_k = 1), rows = one CFG
pair. ``same codes``: every engine's codes equal the ``torch`` float32 engine's.

Usage: ``python bench/depth_cpu.py [--preset 7b-256] [--threads N] [--repeat 5]
[--engines torch native native-bf16 ...] [--json FILE] [--smoke]``
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
import torch.nn.functional as F
from w4a16 import bandwidth  # bench/ is this script's folder, first on sys.path

from vilau_rt.model.config import preset
from vilau_rt.model.depth import DepthTransformer, DepthTransformerConfig
from vilau_rt.ops import native

# engine -> (linear of the loop, weight dtype)
ENGINES = {
    "torch": ("torch", torch.float32),
    "native": ("native", torch.float32),
    "torch-bf16": ("torch", torch.bfloat16),
    "native-bf16": ("native", torch.bfloat16),
}


def torch_linear(x, weight, bias=None):
    """The loop's linears before: F.linear (a float32 copy of a 16-bit weight per call)."""
    return F.linear(x, weight.float() if weight.dtype != x.dtype else weight, bias)


def position_bytes(cfg: DepthTransformerConfig, weights: list[torch.Tensor]) -> int:
    """Weight bytes one position reads: D x (everything but in_mlp_2) + in_mlp_2 once."""
    total = sum(t.numel() * t.element_size() for t in weights)
    in2 = sum(t.numel() * t.element_size() for t in weights[2:4])
    return cfg.depth * (total - in2) + in2


def run(engine: str, dt: DepthTransformer, codebooks, hidden, n_head: int, repeat: int) -> dict:
    kind, dtype = ENGINES[engine]
    weights = native.depth_weights(dt)
    if dtype != torch.float32:  # the linears' weight matrices as a 16-bit checkpoint holds them
        weights = [w.to(dtype) if w.dim() == 2 else w for w in weights]
    saved = native.linear
    native.linear = torch_linear if kind == "torch" else saved  # depth_loop's module global
    try:
        rng = native.rng_state(0, 0, "cpu")

        def once():
            t = time.perf_counter()
            codes, _ = native.depth_loop(hidden, weights, codebooks, n_head, 3.0, 1.0, 1, 1.0, rng)
            return time.perf_counter() - t, codes

        once()  # warm-up: page faults, allocator
        runs = [once() for _ in range(repeat)]
    finally:
        native.linear = saved
    return {
        "engine": engine,
        "ms": 1e3 * statistics.median(t for t, _ in runs),
        "ms_runs": [round(1e3 * t, 2) for t, _ in runs],
        "MB": position_bytes(dt.cfg, weights) / 1e6,
        "codes": runs[-1][1].tolist(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="7b-256", help="whose depth shapes (vilau-rt presets)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--repeat", type=int, default=5, help="timed positions per engine")
    p.add_argument("--engines", nargs="*", default=list(ENGINES), choices=list(ENGINES))
    p.add_argument("--smoke", action="store_true", help="tiny-256's depth shapes, 2 positions")
    p.add_argument("--json", help="also write the rows as JSON here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    preset_name = "tiny-256" if args.smoke else args.preset
    cfg = preset(preset_name)
    repeat = 2 if args.smoke else args.repeat
    torch.manual_seed(0)
    with torch.no_grad():
        dt = DepthTransformer(cfg.depth).eval()
        for t in dt.parameters():
            t.normal_(0.0, 0.02)
    codebooks = torch.randn(1, cfg.rvq.n_embed + 1, cfg.rvq.embed_dim) * 0.1
    hidden = torch.randn(2, cfg.llm.hidden_size)
    bw = bandwidth(torch.device("cpu"), (16 if args.smoke else 1024) * 2**20)
    head = {"machine": f"{platform.machine()} {platform.processor()}".strip(),
            "threads": args.threads, "torch": torch.__version__, "preset": preset_name,
            "bandwidth_GBs": bw / 1e9, "repeat": repeat}  # fmt: skip
    print(json.dumps(head), flush=True)
    rows = []
    for engine in args.engines:
        row = run(engine, dt, codebooks, hidden, cfg.depth.n_head, repeat)
        row["floor_ms"] = 1e3 * row["MB"] * 1e6 / bw
        row["GBs"] = row["MB"] / row["ms"]
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "codes"}), flush=True)
    base = next((r for r in rows if r["engine"] == "torch"), None)
    print(f"\ncopy bandwidth {bw / 1e9:.1f} GB/s, {args.threads} threads, depth shapes of "
          f"{head['preset']}: E = {cfg.depth.embed_dim}, {cfg.depth.n_layer} layers, "
          f"D = {cfg.depth.depth}, V = {cfg.depth.vocab_size}")  # fmt: skip
    print(
        "| engine | MB read | floor ms | ms per position | GB/s | floor/ours | x torch | same codes |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        speedup = f"{base['ms'] / r['ms']:.2f}x" if base else "-"
        same = "-" if base is None else ("yes" if r["codes"] == base["codes"] else "NO")
        print(
            f"| {r['engine']} | {r['MB']:.1f} | {r['floor_ms']:.1f} | {r['ms']:.1f} | "
            f"{r['GBs']:.1f} | {r['floor_ms'] / r['ms']:.2f} | {speedup} | {same} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**head, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
