"""CPU LLM speed, one table: transformers eager fp32 (the baseline), our backends in float and
AWQ INT4, and llama.cpp as an optional peer, all on the same checkpoint in the same run.

    python bench/cpu_llm.py [--checkpoint DIR] [--int4 DIR] [--workdir DIR] [--threads N]
                            [--prompt-len 100] [--new-tokens 64] [--repeat 3] [--rounds 1]
                            [--engines ...] [--llama-cpp PYTHON] [--llama-cpp-types ...]
                            [--no-image] [--json OUT]

Without ``--checkpoint`` a random-weight ``llm150m-32`` checkpoint (a 150M-parameter LLaMA,
hidden 1024, 12 layers, inside tiny VILA-U parts) is written into ``--workdir``; without
``--int4`` it is quantized there by ``vilau-rt quantize`` (AWQ, group 128). Each engine runs in
its own process (its peak RSS is its own), greedy, on the same ``--prompt-len`` token ids:

- ttft_ms: prefill of the prompt and the first greedy token;
- decode tok/s: the remaining ``--new-tokens - 1`` tokens, one step each;
- image s: one CFG-3 greedy image (every position of the grid), our engines only;
- same tokens: the engine's greedy tokens equal transformers' fp32 tokens (float engines; INT4
  tokens are compared with the float tokens of the same backend for information only, and
  ``native-int4-a8``'s, an approximation of the INT4 model, with ``native-int4``'s: how many
  leading tokens agree).

Each figure is the median of ``--repeat`` runs after one warm-up run; with ``--rounds R`` every
engine (llama.cpp included) runs R times in turn and the table gives the median over rounds, with
each round's decode tok/s: the shared machine's bandwidth drifts by tens of percent over minutes. ``--llama-cpp PYTHON``
names an interpreter with ``llama_cpp`` installed (see bench/llama_cpp_baseline.py); its F32,
F16 and Q4_0 conversions of the same ``llm/`` folder are timed on the same prompt ids, with a
float32 KV cache like ours (llama.cpp's default float16 cache can flip near-tied greedy tokens).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FLOAT_ENGINES = ("transformers", "torch", "native", "onnxruntime")
# native-f32 (on request): native on 16-bit checkpoint weights converted to float32 on load,
# where native keeps them 16-bit (vilau_rt/model/linear16.py): the same tokens, twice the bytes
CONVERTED_ENGINES = ("native-f32",)
# native-int4-a8: the INT4 checkpoint with int8_activations (int8 activations, int8 lm_head)
INT4_ENGINES = ("torch-int4", "native-int4", "native-int4-a8", "onnxruntime-int4")
IMAGE_ENGINES = ("torch", "native", "native-f32", "torch-int4", "native-int4", "native-int4-a8")


def prompt_ids(vocab: int, n: int) -> list[int]:
    import torch

    gen = torch.Generator().manual_seed(2026)
    return torch.randint(3, vocab - 4, (n,), generator=gen).tolist()  # no BOS/EOS/special ids


# ------------------------------------------------------------------ one engine, in a child


def _time_runs(fn, repeat: int) -> list:
    fn()  # warm-up: allocator growth, ORT session arenas, page faults on the weights
    return [fn() for _ in range(repeat)]


def run_transformers(ckpt: Path, ids: list[int], new: int, repeat: int) -> dict:
    import torch
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(
        ckpt / "llm", torch_dtype=torch.float32, attn_implementation="eager"
    ).eval()
    x = torch.tensor([ids])

    @torch.no_grad()
    def once():
        t0 = time.perf_counter()
        out = model(x, use_cache=True)
        tok = int(out.logits[0, -1].argmax())
        t1 = time.perf_counter()
        toks, past = [tok], out.past_key_values
        for _ in range(new - 1):
            out = model(torch.tensor([[tok]]), past_key_values=past, use_cache=True)
            past, tok = out.past_key_values, int(out.logits[0, -1].argmax())
            toks.append(tok)
        return t1 - t0, time.perf_counter() - t1, toks

    return {"runs": _time_runs(once, repeat)}


def run_ours(
    ckpt: Path, backend: str, ids: list[int], new: int, repeat: int, image: bool, int8: bool,
    converted: bool = False,
):  # fmt: skip
    import torch

    from vilau_rt import Pipeline
    from vilau_rt.generate import ImageSettings, TextSettings, generate_codes, generate_text

    if converted:  # every weight float32, as Pipeline loaded 16-bit checkpoints before
        from vilau_rt.backends.native_backend import NativeBackend
        from vilau_rt.model.checkpoint import load_vilau
        from vilau_rt.tokenizer import Tokenizer

        nb = NativeBackend.from_model(load_vilau(ckpt))
        pipe = Pipeline(nb, Tokenizer.from_folder(ckpt / "llm"), ckpt)
    else:
        pipe = Pipeline.from_pretrained(
            ckpt, backend=backend, cache_dir=ckpt.parent / "ort-cache", int8_activations=int8
        )
    be = pipe.backend
    settings = TextSettings(max_new_tokens=new, do_sample=False)

    @torch.no_grad()
    def once():
        t0 = time.perf_counter()
        emb = be.embed_tokens(torch.tensor([ids]))
        it = generate_text(be, emb, settings, eos_id=-1)
        toks = [next(it)]
        t1 = time.perf_counter()
        toks += list(it)
        return t1 - t0, time.perf_counter() - t1, toks

    out = {"runs": _time_runs(once, repeat)}
    if image:
        n = len(ids[:24])
        cond = torch.tensor([ids[:24], [0] * (n - 1) + [ids[0]]])
        mask = torch.ones_like(cond, dtype=torch.bool)
        mask[1, : n - 1] = False  # the unconditional row: left padding, then one token
        pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
        h, w = pipe.cfg.grid
        greedy = ImageSettings(cfg_scale=3.0, top_k=1, top_p=None)

        def one_image():
            t = time.perf_counter()
            codes = generate_codes(be, cond, mask, pos, h * w, greedy)
            return time.perf_counter() - t, codes.flatten().tolist()

        out["image_runs"] = _time_runs(one_image, repeat)
    return out


def peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM; getrusage's maxrss would include the parent's peak,
    which survives fork + exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    ckpt = Path(args.ckpt)
    ids = json.loads(args.ids)
    engine = args.child
    if engine == "transformers":
        res = run_transformers(ckpt, ids, args.new_tokens, args.repeat)
    else:
        res = run_ours(
            ckpt, engine.split("-")[0], ids, args.new_tokens, args.repeat,
            image=engine in IMAGE_ENGINES and not args.no_image, int8=engine.endswith("-a8"),
            converted=engine in CONVERTED_ENGINES,
        )  # fmt: skip
    res["peak_rss_mb"] = peak_rss_mb()
    print("RESULT " + json.dumps(res))


# ------------------------------------------------------------------ the driver


def summarize(engine: str, res: dict) -> dict:
    runs = res["runs"]
    new = len(runs[0][2])
    ttft = statistics.median(r[0] for r in runs)
    rest = statistics.median(r[1] for r in runs)
    row = {
        "engine": engine,
        "ttft_ms": ttft * 1e3,
        "decode_tok_s": (new - 1) / rest,
        "end_to_end_tok_s": new / (ttft + rest),
        "tokens": runs[0][2],
        "tokens_stable": all(r[2] == runs[0][2] for r in runs),
        "peak_rss_mb": res["peak_rss_mb"],
    }
    if "image_runs" in res:
        row["image_s"] = statistics.median(r[0] for r in res["image_runs"])
        row["image_codes"] = res["image_runs"][0][1]
    return row


def run_child(engine: str, ckpt: Path, ids: list[int], args) -> dict | None:
    cmd = [
        sys.executable, __file__, "--child", engine, "--ckpt", str(ckpt), "--ids", json.dumps(ids),
        "--new-tokens", str(args.new_tokens), "--repeat", str(args.repeat),
        "--threads", str(args.threads), *(["--no-image"] if args.no_image else []),
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    if p.returncode or not lines:
        print(f"{engine}: failed (rc {p.returncode}):\n{p.stderr[-3000:]}", file=sys.stderr)
        return None
    return summarize(engine, json.loads(lines[-1][len("RESULT ") :]))


def llama_cpp_rows(python: str, ckpt: Path, ids: list[int], args, workdir: Path) -> list[dict]:
    ids_file = workdir / "prompt_ids.json"
    ids_file.write_text(json.dumps(ids))
    out = workdir / "llama_cpp.json"
    cmd = [
        python, str(HERE / "llama_cpp_baseline.py"), "--hf", str(ckpt / "llm"),
        "--prompt-ids", str(ids_file), "--new-tokens", str(args.new_tokens),
        "--threads", str(args.threads), "--repeat", str(args.repeat), "--out", str(out),
        "--workdir", str(workdir / "gguf"), "--kv-type", "f32",  # our backends' cache is fp32
        "--types", *args.llama_cpp_types,
    ]  # fmt: skip
    p = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if p.returncode or not out.is_file():
        print(f"llama.cpp: failed (rc {p.returncode}):\n{p.stderr[-3000:]}", file=sys.stderr)
        return []
    rows = []
    for r in json.loads(out.read_text()):
        rows.append(dict(r, engine=f"llama.cpp {r['type'].upper()}"))
    return rows


def prepare(args, workdir: Path) -> tuple[Path, Path | None]:
    ckpt = Path(args.checkpoint) if args.checkpoint else workdir / "llm150m-32"
    if not ckpt.is_dir():
        subprocess.run(
            ["vilau-rt", "write-checkpoint", "llm150m-32", str(ckpt)], check=True
        )  # fmt: skip
    if not any("-int4" in e for e in args.engines):
        return ckpt, None
    int4 = Path(args.int4) if args.int4 else workdir / "llm150m-32-int4"
    if not int4.is_dir():
        t = time.perf_counter()
        subprocess.run(
            ["vilau-rt", "quantize", str(ckpt), str(int4), "--group-size", "128"], check=True
        )  # fmt: skip
        print(f"quantize: {time.perf_counter() - t:.0f} s", file=sys.stderr)
    return ckpt, int4


def copy_bandwidth_gbs() -> float:
    """Read + write bytes per second of a 1 GiB copy: bench/w4a16.py's yardstick, so the two
    benchmarks' floors compare."""
    import torch
    from w4a16 import bandwidth  # bench/ is this script's folder, first on sys.path

    return bandwidth(torch.device("cpu"), 1 << 30) / 1e9


def merge_rounds(rounds: list[list[dict]]) -> list[dict]:
    """One row per engine: the median over rounds of each time (the engines take turns each
    round, so a slow spell of the shared machine does not land on one engine only), the largest
    peak RSS, the tokens of the first round (``tokens_stable`` false if a round differed)."""
    merged = []
    for first in rounds[0]:
        same = [r for rows in rounds for r in rows if r["engine"] == first["engine"]]
        row = dict(first)
        for key in ("ttft_ms", "decode_tok_s", "end_to_end_tok_s", "image_s"):
            if all(key in r for r in same):
                row[key] = statistics.median(r[key] for r in same)
        row["decode_rounds"] = [round(r["decode_tok_s"], 1) for r in same]
        rss = [r["peak_rss_mb"] for r in same if "peak_rss_mb" in r]
        if rss:
            row["peak_rss_mb"] = max(rss)
        row["tokens_stable"] = all(r["tokens"] == first["tokens"] for r in same) and all(
            r.get("tokens_stable", True) for r in same
        )
        merged.append(row)
    return merged


def table(rows: list[dict], base: dict | None, machine: str) -> str:
    out = [
        machine,
        "",
        (
            "| engine | ttft ms | decode tok/s | x transformers decode | end-to-end tok/s "
            "| image s | same tokens | peak RSS MB | decode tok/s per round |"
        ),
        "|---|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for r in rows:
        ratio = r["decode_tok_s"] / base["decode_tok_s"] if base else float("nan")
        img = f"{r['image_s']:.2f}" if "image_s" in r else "-"
        out.append(
            f"| {r['engine']} | {r['ttft_ms']:.0f} | {r['decode_tok_s']:.1f} | {ratio:.2f}x "
            f"| {r['end_to_end_tok_s']:.1f} | {img} | {r.get('same', '-')} "
            f"| {r.get('peak_rss_mb', float('nan')):.0f} "
            f"| {' / '.join(str(v) for v in r.get('decode_rounds', []))} |"
        )
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", help="float VILA-U checkpoint (default: llm150m-32, random)")
    ap.add_argument("--int4", help="its AWQ INT4 checkpoint (default: vilau-rt quantize it)")
    ap.add_argument("--workdir", help="where generated checkpoints go (default: a temp folder)")
    ap.add_argument("--engines", nargs="+", default=[*FLOAT_ENGINES, *INT4_ENGINES])
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--prompt-len", type=int, default=100)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=1,
                    help="run every engine this many times, in turn; figures: the median")  # fmt: skip
    ap.add_argument("--llama-cpp", metavar="PYTHON", help="interpreter that has llama_cpp")
    ap.add_argument("--llama-cpp-types", nargs="+", default=["f32", "f16", "q4_0"],
                    help="llama.cpp file types to time (bench/llama_cpp_baseline.py --types)")  # fmt: skip
    ap.add_argument("--json", help="write the rows here as well")
    ap.add_argument("--no-image", action="store_true", help="skip the image generation timing")
    # internal: one engine in a child process
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--ckpt", help=argparse.SUPPRESS)
    ap.add_argument("--ids", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    with tempfile.TemporaryDirectory(prefix="cpu_llm-") as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        ckpt, int4 = prepare(args, workdir)
        cfg = json.loads((ckpt / "llm" / "config.json").read_text())
        ids = prompt_ids(cfg["vocab_size"], args.prompt_len)
        bw = copy_bandwidth_gbs()
        rounds: list[list[dict]] = []
        for _ in range(args.rounds):
            rows: list[dict] = []
            for engine in args.engines:
                path = int4 if "-int4" in engine else ckpt
                row = run_child(engine, path, ids, args)
                if row is not None:
                    rows.append(row)
                    brief = {k: v for k, v in row.items() if "codes" not in k and k != "tokens"}
                    print(json.dumps(brief), flush=True)
            if args.llama_cpp:
                rows += llama_cpp_rows(args.llama_cpp, ckpt, ids, args, workdir)
            rounds.append(rows)
        rows = merge_rounds(rounds)
        by = {r["engine"]: r for r in rows}
        base = by.get("transformers")
        for r in rows:
            if r["engine"] in (*FLOAT_ENGINES[1:], *CONVERTED_ENGINES) or r["engine"].startswith(
                "llama.cpp F32"
            ):
                if base:  # else nothing to compare with: "-"
                    r["same"] = "yes" if r["tokens"] == base["tokens"] else "NO"
            elif r["engine"].endswith("-a8") and r["engine"][:-3] in by:
                exact = by[r["engine"][:-3]]["tokens"]  # the same INT4 model, exact W4A16
                n = next((i for i, (a, b) in enumerate(zip(r["tokens"], exact)) if a != b), None)
                r["same"] = "= INT4" if n is None else f"INT4's first {n} tokens"
            elif r["engine"] in INT4_ENGINES and r["engine"][:-5] in by:
                same = r["tokens"] == by[r["engine"][:-5]]["tokens"]
                r["same"] = "= float" if same else "differs from float"
        load = os.getloadavg()
        machine = (
            f"{platform.machine()}, {os.cpu_count()} CPUs, {args.threads} threads, load average "
            f"{load[0]:.2f} at the end; copy bandwidth {bw:.1f} GB/s; prompt {args.prompt_len}, "
            f"{args.new_tokens} greedy tokens, median of {args.repeat} runs, median of "
            f"{args.rounds} rounds (engines in turn); {ckpt.name}"
        )
        print(table(rows, base, machine))
        if args.json:
            Path(args.json).write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
