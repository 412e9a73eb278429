"""One GPU run: kernel checks, then VILA-U 7B-256 timings with random weights (native vs eager).

Floors, counted before running (bytes that must cross device memory / measured copy bandwidth;
H100 SXM copy bandwidth ~3.0 TB/s is the lead, the script measures its own):
- decode, batch 1, INT4 LLM: 32 layers x (4 x 4096^2 + 3 x 4096 x 11008) = 6.48e9 weights x
  (0.5 B + 2.5 B / 128 for fp16 scales and 4-bit zeros) = 3.37 GB, + fp16 lm_head 32004 x 4096
  x 2 B = 0.26 GB -> 3.63 GB / token -> 1.2 ms at 3.0 TB/s (~830 tok/s). fp16: 13.2 GB -> 4.4 ms.
- one 256 px image with CFG: 256 positions x (LLM at batch 2: 3.63 GB + 4 depth steps x 1.05 GB
  fp16 depth transformer) = 256 x 7.8 GB = 2.0 TB -> 0.67 s at 3.0 TB/s.
- time to first token (one image + 32 text tokens, ~330 positions of prefill): SigLIP-L 0.6 GB
  + LLM 3.63 GB read once -> ~1.4 ms of bytes; 330 x 2 x 6.7e9 = 4.4 TFLOP -> ~5 ms at ~900
  dense fp16 TFLOP/s: the floor is the arithmetic, ~5 ms.
The script measures the copy bandwidth (large ``Tensor.copy_``, read + write bytes) and reports
each time against its floor. Targets (the issue): decode >= 50% of the floor and >= 4x torch fp16
eager; one image <= 1.0 s and >= 10x the official-shaped eager loop; TTFT <= 25 ms.

Sections run under time budgets (SIGALRM); a section that runs out is reported as such. The
eager image baseline (official shape: no KV cache in the depth loop) runs a subset of positions
and is extrapolated to 256 (the table says so).

Usage: ``python bench/gpu.py [--out DIR] [--cpu-smoke]``; ``bench/gpu.sh`` builds first and keeps
logs under ``$OUT``. ``--cpu-smoke`` runs the same path on the CPU with preset "tiny-256".
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from vilau_rt import _C
from vilau_rt.backends import TorchBackend
from vilau_rt.backends.native_backend import CodeSampling, NativeBackend
from vilau_rt.generate import TextSettings, generate_text, splice_images
from vilau_rt.model.config import preset
from vilau_rt.model.vilau import VilaU
from vilau_rt.sampling import sample_codes

log = logging.getLogger("bench")
OFFICIAL = {"cfg_scale": 3.0, "temperature": 1.0, "top_k": 900, "top_p": 0.96}


class SectionTimeout(Exception):
    pass


def save(results: dict, out: Path) -> None:
    """(Re)write bench.json, so that a run cut short still leaves every finished section."""
    tmp = out / "bench.json.tmp"
    tmp.write_text(json.dumps(results, indent=2, default=str))
    tmp.replace(out / "bench.json")


@contextlib.contextmanager
def budget(results: dict, name: str, seconds: float, out: Path):
    """Run a section for at most ``seconds``; record its status and wall time in results and
    rewrite bench.json in ``out``."""

    def expire(signum, frame):
        raise SectionTimeout(f"{name} ran past its {seconds:.0f} s budget")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    t0 = time.perf_counter()
    status = "ok"
    log.info("section %s (budget %.0f s)", name, seconds)
    try:
        yield
    except SectionTimeout as e:
        status = f"timeout: {e}"
        log.warning(status)
    except Exception as e:  # a failed section must not hide the others' numbers
        status = f"error: {type(e).__name__}: {e}"
        log.exception("section %s failed", name)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        log.info("section %s: %s in %.2f s", name, status, time.perf_counter() - t0)
        results.setdefault("sections", {})[name] = {
            "status": status,
            "wall_s": round(time.perf_counter() - t0, 2),
        }
        save(results, out)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------- model with random weights


@torch.no_grad()
def random_model(cfg, device, dtype) -> VilaU:
    """VilaU(cfg) built on meta, materialised on ``device`` and filled with random values."""
    with torch.device("meta"):
        model = VilaU(cfg)
    model = model.to(dtype).to_empty(device=device).eval()
    fill_random_(model, torch.Generator(device=device).manual_seed(0))
    return model


@torch.no_grad()
def fill_random_(module: torch.nn.Module, gen: torch.Generator) -> None:
    """Random values that keep activations O(1) through every layer (fp16 must not overflow)."""
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        if not t.is_floating_point() or t.numel() == 0:
            continue
        if ("norm" in name or ".ln" in name) and name.endswith("weight"):  # norm1, layer_norm2..
            t.normal_(1.0, 0.02, generator=gen)
        elif "codebooks" in name:
            t.normal_(0.0, 0.5, generator=gen)
        elif t.dim() == 1:  # biases and the like: small, as export/checkpoint_writer.py does
            t.normal_(0.0, 0.02, generator=gen)
        else:
            # fan-in is every input of one output: in_channels x kernel for a conv. The kernel
            # width alone let the pixel decoder's activations grow to ~1e12 and overflow fp16.
            t.normal_(0.0, t[0].numel() ** -0.5, generator=gen)


def prompt_ids(n_tokens: int, vocab: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, min(vocab, 32000), (n_tokens,), generator=g)


# ---------------------------------------------------------------- measurements


def copy_bandwidth(device, n_bytes: int) -> float:
    """Bytes/s of a large device copy (read + write counted)."""
    src = torch.randn(n_bytes // 4, device=device)
    dst = torch.empty_like(src)
    for _ in range(2):
        dst.copy_(src)
    sync(device)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        dst.copy_(src)
        sync(device)
        times.append(time.perf_counter() - t0)
    times.sort()
    return 2 * src.numel() * 4 / times[len(times) // 2]


def decode_rate(backend, embeds, n_tokens: int) -> dict:
    """Greedy decode of n_tokens after a prefill of ``embeds``; tok/s over tokens 2..n."""
    stamps = []
    settings = TextSettings(max_new_tokens=n_tokens)
    t0 = time.perf_counter()
    for _ in generate_text(backend, embeds, settings, eos_id=-1):
        stamps.append(time.perf_counter())
    decode_s = stamps[-1] - stamps[0]
    return {
        "tokens": len(stamps),
        "first_token_s": stamps[0] - t0,
        "decode_tok_s": (len(stamps) - 1) / decode_s if decode_s > 0 else float("nan"),
    }


def time_to_first_token(backend, pixels, text_ids) -> float:
    """Pixels + text -> first generated token on the host (vision, RVQ, projector, prefill)."""
    sync(backend.device)
    t0 = time.perf_counter()
    _, img = backend.encode_images(pixels)
    ids = [1, -200, *text_ids]
    embeds = splice_images(backend, ids, [img[0]])
    next(generate_text(backend, embeds, TextSettings(max_new_tokens=1), eos_id=-1))
    return time.perf_counter() - t0


def image_prompt(cfg, device, n: int = 1, length: int = 40):
    ids = prompt_ids(length, cfg.llm.vocab_size, 7).to(device)
    uncond = prompt_ids(length // 2, cfg.llm.vocab_size, 8).to(device)
    batch = torch.zeros(2 * n, length, dtype=torch.long, device=device)
    mask = torch.zeros_like(batch)
    batch[:n], mask[:n] = ids, 1
    batch[n:, length - uncond.numel() :], mask[n:, length - uncond.numel() :] = uncond, 1
    pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    return batch, mask, pos


def image_codes(backend, prompt, num_positions: int, sample, depth_fn=None) -> torch.Tensor:
    """The image loop of generate_codes; ``depth_fn`` replaces backend.depth_generate."""
    ids, mask, pos = prompt
    B, T = ids.shape
    backend.setup_cache(B, T + num_positions)
    key_valid = torch.ones(B, T + num_positions, dtype=torch.bool, device=backend.device)
    key_valid[:, :T] = mask.bool()
    hidden = backend.forward(backend.embed_tokens(ids.clamp(min=0)), pos, 0, key_valid)[:, -1]
    rope, cache_pos, out = pos[:, -1:] + 1, T, []
    depth = depth_fn or (lambda h: backend.depth_generate(h, OFFICIAL["cfg_scale"], sample))
    for i in range(num_positions):
        codes, nxt = depth(hidden)
        out.append(codes)
        if i + 1 < num_positions:
            hidden = backend.forward(nxt.repeat(2, 1).unsqueeze(1), rope, cache_pos, key_valid)
            hidden, rope, cache_pos = hidden[:, -1], rope + 1, cache_pos + 1
    return torch.stack(out, dim=1)


def official_depth_step(model, hidden, sample):
    """The official depth loop: no KV cache, the whole depth sequence recomputed per depth."""
    dt, rvq = model.depth_transformer, model.quantizer
    n, D = hidden.shape[0] // 2, model.cfg.rvq.depth
    codes = torch.empty(n, D, dtype=torch.long, device=hidden.device)
    embeds = []
    cumsum = hidden.new_zeros(2 * n, 1, model.cfg.rvq.embed_dim)
    for d in range(D):
        logits = dt(hidden, cumsum)[:, -1]  # [2n, V] from a sequence of d + 1
        guided = logits[n:] + OFFICIAL["cfg_scale"] * (logits[:n] - logits[n:])
        codes[:, d] = sample(guided)
        embeds.append(F.embedding(codes[:, d], rvq.codebook(d)))
        running = torch.stack(embeds, dim=1).cumsum(dim=1)
        cumsum = torch.cat([running, running[:, -1:]], dim=1).repeat(2, 1, 1)
    return codes, model.mm_projector(running[:, -1])


# ---------------------------------------------------------------- the run


def run_checks(results, args):
    """The kernel tests on this device (fresh random inputs, poisoned outputs, float64 refs)."""
    tests = [
        "tests/test_rvq_ops.py",
        "tests/test_w4a16_ops.py",
        "tests/test_sampling_kernels.py",
        "tests/test_native_backend.py",
    ]
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests]
    proc = subprocess.run(
        cmd, check=False, cwd=REPO, capture_output=True, text=True, timeout=args.pytest_timeout
    )
    (args.out / "pytest.log").write_text(proc.stdout + proc.stderr)
    summary = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
    results["checks"] = {"returncode": proc.returncode, "summary": summary}
    if proc.returncode != 0:
        raise RuntimeError(f"kernel checks failed: {summary} (see pytest.log)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--out",
        type=Path,
        default=Path(os.environ.get("OUT", "bench_out")),
        help="folder for bench.json and logs (default $OUT or ./bench_out)",
    )
    p.add_argument(
        "--cpu-smoke",
        action="store_true",
        help="tiny-256 preset on the CPU: the same code path in < 60 s",
    )
    p.add_argument("--skip-checks", action="store_true", help="do not run the kernel tests")
    p.add_argument("--pytest-timeout", type=float, default=120, help="seconds for the tests")
    p.add_argument(
        "--eager-positions",
        type=int,
        default=12,
        help="image positions of the eager baseline (extrapolated to the image)",
    )
    args = p.parse_args(argv)  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        handlers=[logging.FileHandler(args.out / "bench.log"), logging.StreamHandler()],
        force=True,
    )
    smoke = args.cpu_smoke
    if not smoke and not torch.cuda.is_available():
        log.error("no CUDA device; use --cpu-smoke for the CPU path")
        return 2
    device = torch.device("cpu" if smoke else "cuda")
    dtype = torch.float32 if smoke else torch.float16
    cfg = preset("tiny-256" if smoke else "7b-256")
    group = 32 if smoke else 128
    n_decode = 8 if smoke else 64
    results: dict = {
        "mode": "cpu-smoke" if smoke else "gpu",
        "device": torch.cuda.get_device_name(device) if not smoke else "cpu",
        "torch": torch.__version__,
        "build": _C.build_info(),
        "preset": "tiny-256" if smoke else "7b-256",
        "complete": False,
    }
    section = functools.partial(budget, results, out=args.out)
    S = 1.0 if not smoke else 0.5  # section budgets scale

    if not (smoke or args.skip_checks):
        with section("checks", args.pytest_timeout + 10):
            run_checks(results, args)

    with section("bandwidth", 30):
        bw = copy_bandwidth(device, (1 << 20) * (16 if smoke else 2048))
        results["copy_bandwidth_GBps"] = bw / 1e9

    with section("build_model", 45 * S):
        torch.manual_seed(0)
        model = random_model(cfg, device, dtype)
        sync(device)
    eager = TorchBackend(model)
    text = prompt_ids(32, cfg.llm.vocab_size, 1).tolist()
    prefill = eager.embed_tokens(torch.tensor([[1, *text]], device=device))
    pixels = torch.rand(1, 3, cfg.image_size, cfg.image_size, device=device) * 2 - 1
    prompt = image_prompt(cfg, device)
    greedy_codes = functools.partial(sample_codes, top_k=1)
    official = functools.partial(
        sample_codes, temperature=1.0, top_k=900, top_p=0.96,
        generator=torch.Generator(device=device).manual_seed(0),
    )  # fmt: skip

    with section("eager_decode", 40 * S):
        decode_rate(eager, prefill, 4)  # warm-up
        results["eager_fp16"] = decode_rate(eager, prefill, n_decode // 2)
    with section("eager_ttft", 15 * S):
        time_to_first_token(eager, pixels, text)
        results["eager_ttft_s"] = time_to_first_token(eager, pixels, text)
    with section("eager_image", 45 * S):
        n_pos = min(args.eager_positions, cfg.tokens_per_image)
        step = functools.partial(official_depth_step, model, sample=official)
        image_codes(eager, prompt, 2, official, step)  # warm-up
        sync(device)
        t0 = time.perf_counter()
        image_codes(eager, prompt, n_pos, official, step)
        sync(device)
        per_pos = (time.perf_counter() - t0) / n_pos
        results["eager_image"] = {
            "positions_timed": n_pos,
            "s_per_position": per_pos,
            "image_s_extrapolated": per_pos * cfg.tokens_per_image,
        }

    with section("quantize", 60 * S):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        native = NativeBackend.from_model(model, quantize_llm=True, group_size=group)
        sync(device)
    with section("native_check", 25 * S):
        # the native depth loop (graph on CUDA) gives the eager module's greedy codes
        hidden = torch.randn(2, cfg.llm.hidden_size, device=device, dtype=dtype)
        ref_codes, _ = TorchBackend(model).depth_generate(hidden, 3.0, greedy_codes)
        for _ in range(2):  # first call captures, second replays
            codes, _ = native.depth_generate(hidden, 3.0, greedy_codes)
        results["native_depth_greedy_equal"] = bool(torch.equal(codes, ref_codes))
    with section("native_decode", 40 * S):
        # one batch-1 cache that fits the decode and the TTFT prompt: no reallocation (and no
        # graph recapture) inside a timed region
        native.setup_cache(1, 1 + cfg.tokens_per_image + len(text) + n_decode)
        decode_rate(native, prefill, n_decode)  # captures the batch-1 graph
        results["native_int4"] = decode_rate(native, prefill, n_decode)
    with section("native_ttft", 15 * S):
        time_to_first_token(native, pixels, text)
        results["native_ttft_s"] = min(time_to_first_token(native, pixels, text) for _ in range(3))
    with section("native_image", 60 * S):
        sampling = CodeSampling(temperature=1.0, top_k=900, top_p=0.96, seed=0)
        native.setup_cache(prompt[0].shape[0], prompt[0].shape[1] + cfg.tokens_per_image)
        image_codes(native, prompt, 2, sampling)  # captures the batch-2 and depth graphs
        sync(device)
        t0 = time.perf_counter()
        codes = image_codes(native, prompt, cfg.tokens_per_image, sampling)
        raw = native.decode_codes(codes.view(1, *cfg.grid, -1))
        sync(device)
        results["native_image_s"] = time.perf_counter() - t0
        again = image_codes(native, prompt, 4, sampling)
        results["native_image_seed_reproducible"] = bool(torch.equal(again, codes[:, :4]))
        results["native_image_pixels_finite"] = bool(torch.isfinite(raw).all())
        results["native_depth_path"] = native.stats["depth_path"]
    if device.type == "cuda":
        results["peak_gpu_memory_GiB"] = torch.cuda.max_memory_allocated(device) / 2**30

    results["complete"] = True
    summarise(results, cfg, args.out)
    return 0 if all(s["status"] == "ok" for s in results["sections"].values()) else 1


def summarise(results: dict, cfg, out: Path) -> None:
    """Floors, ratios and targets; writes bench.json and prints the table last."""
    llm = cfg.llm
    per_layer = 4 * llm.hidden_size**2 + 3 * llm.hidden_size * llm.intermediate_size
    n_w = llm.num_hidden_layers * per_layer
    int4_bytes = n_w * (0.5 + 2.5 / 128) + llm.vocab_size * llm.hidden_size * 2
    E, dcfg = cfg.depth.embed_dim, cfg.depth
    depth_bytes = 2 * (dcfg.n_layer * 12 * E * E + E * dcfg.vocab_size + E * dcfg.llm_dim)
    bw = results.get("copy_bandwidth_GBps", float("nan")) * 1e9
    floor_tok_s = bw / int4_bytes
    floor_image_s = cfg.tokens_per_image * (int4_bytes + cfg.rvq.depth * depth_bytes) / bw
    r = results

    def g(*keys):
        return functools.reduce(lambda d, k: d.get(k, {}) if isinstance(d, dict) else {}, keys, r)

    nat = g("native_int4", "decode_tok_s") or float("nan")
    eag = g("eager_fp16", "decode_tok_s") or float("nan")
    img = r.get("native_image_s", float("nan"))
    eimg = g("eager_image", "image_s_extrapolated") or float("nan")
    ttft = r.get("native_ttft_s", float("nan"))
    r["floors"] = {"int4_bytes_per_token": int4_bytes, "decode_tok_s": floor_tok_s,
                   "image_s": floor_image_s}  # fmt: skip
    r["targets"] = {
        "decode_ge_50pct_floor": nat >= 0.5 * floor_tok_s,
        "decode_ge_4x_eager": nat >= 4 * eag,
        "image_le_1s": img <= 1.0,
        "image_ge_10x_eager": eimg >= 10 * img,
        "ttft_le_25ms": ttft <= 0.025,
    }
    save(r, out)
    rows = [
        ("copy bandwidth", f"{bw / 1e9:.0f} GB/s", ""),
        ("decode native INT4 (tok/s)", f"{nat:.1f}",
         f"{nat / floor_tok_s:.0%} of floor {floor_tok_s:.0f}; {nat / eag:.1f}x eager"),
        ("decode torch fp16 eager (tok/s)", f"{eag:.1f}", ""),
        ("TTFT native, 1 image + 32 tok", f"{ttft * 1e3:.1f} ms",
         f"eager {r.get('eager_ttft_s', float('nan')) * 1e3:.1f} ms; target 25 ms"),
        ("image 256 px CFG native", f"{img:.2f} s", f"floor {floor_image_s:.2f} s"),
        ("image eager, official shape", f"{eimg:.2f} s",
         (f"extrapolated from {g('eager_image', 'positions_timed') or '?'} positions; "
         f"{eimg / img:.1f}x native")),
        ("peak GPU memory", f"{r.get('peak_gpu_memory_GiB', float('nan')):.1f} GiB", ""),
        ("checks", str(g("checks", "summary") or "skipped"), ""),
        ("native depth greedy == eager", str(r.get("native_depth_greedy_equal")),
         f"path: {r.get('native_depth_path')}"),
        ("targets met", ", ".join(k for k, v in r["targets"].items() if v) or "none", ""),
        ("targets missed", ", ".join(k for k, v in r["targets"].items() if not v) or "none", ""),
        ("sections not ok", ", ".join(k for k, v in r["sections"].items()
                                      if v["status"] != "ok") or "none", ""),
    ]  # fmt: skip
    width = max(len(a) for a, _, _ in rows)
    print(f"\n== vilau_rt bench ({r['mode']}, {r['device']}, {r['preset']}) ==")
    for a, b, c in rows:
        print(f"{a:<{width}}  {b:>12}  {c}")


if __name__ == "__main__":
    sys.exit(main())
