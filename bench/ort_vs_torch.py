"""ONNX Runtime backend vs torch backend on the CPU: vision ms, prefill ms, decode tok/s, s/image.

    python bench/ort_vs_torch.py [--fixture DIR] [--preset tiny-256] [--threads N] [--repeat R]

Runs the official tiny fixture (``--fixture``, default ``$VILAU_RT_FIXTURES/vilau-official-tiny``
or ``../shared/fixtures/vilau-official-tiny``) and, with ``--preset``, a random-weight checkpoint
of that preset shape. Each figure is the median of ``--repeat`` runs after one warm-up. Image
generation is greedy (top_k = 1) with CFG 3; the ONNX Runtime backend gets a ``CodeSampler`` so
that it takes its one-run-per-position depth path.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from vilau_rt.backends import TorchBackend
from vilau_rt.backends.onnxruntime_backend import OnnxRuntimeBackend
from vilau_rt.generate import ImageSettings, generate_codes
from vilau_rt.model.checkpoint import load_vilau
from vilau_rt.ops.depth_decode import CodeSampler

ROOT = Path(__file__).resolve().parent.parent
PROMPT_LEN = 64
DECODE_STEPS = 32


def median_ms(fn, repeat: int) -> float:
    fn()  # warm-up: session creation, allocator growth
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def measure(backend, cfg, repeat: int) -> dict[str, float]:
    S = cfg.image_size
    px = torch.rand(1, 3, S, S) * 2 - 1
    H = cfg.llm.hidden_size
    prompt = torch.randn(1, PROMPT_LEN, H).to(backend.dtype) * 0.02

    def prefill():
        backend.setup_cache(1, PROMPT_LEN + DECODE_STEPS)
        backend.forward(prompt, torch.arange(PROMPT_LEN)[None], 0)

    def decode():
        prefill()
        x = prompt[:, :1]
        for i in range(DECODE_STEPS):
            h = backend.forward(x, torch.tensor([[PROMPT_LEN + i]]), PROMPT_LEN + i)
            backend.logits(h[:, -1])

    n_pos = cfg.tokens_per_image
    ids = torch.randint(3, cfg.llm.vocab_size, (2, 24))
    mask = torch.ones_like(ids)
    pos = torch.arange(24).expand(2, -1)
    settings = ImageSettings(cfg_scale=3.0, top_k=1)

    def image():
        if isinstance(backend, OnnxRuntimeBackend):
            # generate_codes still passes a plain function, which costs the ORT backend D + 1
            # depth runs per position; hand it a CodeSampler (its one-run path) until it does
            sampler = CodeSampler(top_k=1)
            depth = backend.depth_generate
            backend.depth_generate = lambda h, c, s, o=None: depth(h, c, sampler, o)
            try:
                generate_codes(backend, ids, mask, pos, n_pos, settings)
            finally:
                del backend.depth_generate
        else:
            generate_codes(backend, ids, mask, pos, n_pos, settings)

    prefill_ms = median_ms(prefill, repeat)
    decode_ms = median_ms(decode, repeat) - prefill_ms
    return {
        "vision ms": median_ms(lambda: backend.encode_images(px), repeat),
        f"prefill ms ({PROMPT_LEN} tok)": prefill_ms,
        "decode tok/s": DECODE_STEPS / (decode_ms / 1e3),
        f"s / image ({n_pos} pos)": median_ms(image, max(1, repeat // 2)) / 1e3,
    }


def run(name: str, ckpt: Path, siglip_config, repeat: int, out: Path, threads: int) -> list[tuple]:
    from vilau_export.onnx.export import export_bundle

    model = load_vilau(ckpt, siglip_config=siglip_config)
    bundle = export_bundle(ckpt, out / f"{name}-bundle", siglip_config=siglip_config)
    t = measure(TorchBackend(model), model.cfg, repeat)
    o = measure(OnnxRuntimeBackend(bundle, threads=threads), model.cfg, repeat)
    rows = []
    for key in t:
        higher_is_better = "tok/s" in key
        ratio = o[key] / t[key] if higher_is_better else t[key] / o[key]
        rows.append((name, key, t[key], o[key], ratio))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default = Path(os.environ.get("VILAU_RT_FIXTURES", ROOT.parent / "shared" / "fixtures"))
    p.add_argument("--fixture", type=Path, default=default / "vilau-official-tiny")
    p.add_argument("--preset", help="also a random checkpoint of this preset (e.g. tiny-256)")
    p.add_argument(
        "--threads",
        type=int,
        default=torch.get_num_threads(),
        help="torch threads and ONNX Runtime intra-op threads",
    )
    p.add_argument("--repeat", type=int, default=5, help="timed runs per figure (median)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    import onnxruntime

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        siglip = args.fixture / "reference" / "siglip_config"
        rows += run("official-tiny", args.fixture, siglip, args.repeat, tmp, args.threads)
        if args.preset:
            from vilau_export.checkpoint_writer import write_checkpoint

            from vilau_rt.model.config import preset

            ckpt = tmp / f"{args.preset}-ckpt"
            write_checkpoint(preset(args.preset), ckpt)
            rows += run(args.preset, ckpt, None, args.repeat, tmp, args.threads)

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"{args.threads} threads each, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}"
    )
    print("| model | figure | torch | onnxruntime | ort speed-up |")
    print("|---|---|---:|---:|---:|")
    for name, key, t, o, ratio in rows:
        print(f"| {name} | {key} | {t:.2f} | {o:.2f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
