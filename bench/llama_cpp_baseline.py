"""llama.cpp as a CPU peer for bench/cpu_llm.py: GGUF conversions of one HF LLaMA folder, timed.

    PYTHON bench/llama_cpp_baseline.py --hf DIR [--prompt-ids FILE | --prompt-len 100]
        [--new-tokens 64] [--types f32 f16 q4_0] [--threads N] [--repeat 3] [--warmup 1]
        [--kv-type f16|f32] [--out results.json] [--workdir DIR]
        [--converter convert_hf_to_gguf.py]

PYTHON is an interpreter that has ``llama_cpp`` (llama-cpp-python) and the converter's needs
(``torch`` CPU, ``numpy``, ``sentencepiece``, ``transformers``, ``safetensors``); this script
imports nothing from vilau_rt, so it runs in that separate venv:

    python -m venv /work/venv-llamacpp
    CMAKE_ARGS="-DLLAVA_BUILD=OFF" /work/venv-llamacpp/bin/pip install llama-cpp-python
    /work/venv-llamacpp/bin/pip install torch==2.13.0 sentencepiece transformers safetensors \
        "protobuf<5"
    # the converter ships in the sdist, not in the wheel:
    /work/venv-llamacpp/bin/pip download --no-binary :all: --no-deps -d /tmp/sd llama-cpp-python
    tar xzf /tmp/sd/llama_cpp_python-*.tar.gz -C /work
    export LLAMA_CPP_CONVERTER=/work/llama_cpp_python-<ver>/vendor/llama.cpp/convert_hf_to_gguf.py

Without ``--converter`` / ``$LLAMA_CPP_CONVERTER`` (or ``$LLAMA_CPP_DIR``), an unpacked sdist one
or two folders below the venv's parent folder or the current folder is found by itself.

``--hf`` is a HF LLaMA folder (config.json, safetensors, tokenizer.model / tokenizer.json), e.g.
the ``llm/`` folder of a VILA-U checkpoint. For each ``--types`` entry the folder is converted
with llama.cpp's convert_hf_to_gguf.py (``f32``, ``f16``, ``bf16`` and ``q8_0`` directly; any
other llama.cpp file type such as ``q4_0``, ``q4_k_m`` or ``q5_0`` is quantized from the F32 GGUF
with ``llama_cpp.llama_model_quantize``, no CLI binary needed), loaded with ``llama_cpp.Llama``
and run greedily on the prompt ids:

- ttft_ms: ``eval`` of the whole prompt (n_batch 512) and the argmax of the last logits;
- decode_tok_s: the remaining ``--new-tokens - 1`` tokens, one ``eval`` of one token each;
- end_to_end_tok_s: ``--new-tokens`` / (ttft + decode time).

The KV cache is llama.cpp's default F16 (``--kv-type f32`` for closer parity with an fp32
reference: with near-tied logits, as in random-weight models, F16 K/V can flip a greedy token).

There is no stop at EOS: exactly ``--new-tokens`` tokens are produced, as in cpu_llm.py. Each
figure is the median of ``--repeat`` runs after ``--warmup`` untimed runs (page faults on the
mmapped weights, thread-pool start). One JSON line per type goes to stdout, then a markdown
table; ``--out`` gets the JSON list of the types that ran. A type that fails (conversion,
quantization, load) is reported on stdout/stderr and skipped; the exit status is 1 only when no
type ran.

``--threads`` counts: ggml's worker threads spin while they wait for each other, so on a loaded
machine (load average above the core count) ``--threads`` equal to the core count can be several
times slower than ``--threads 1``; quote the load average with the figures.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

CONVERTER_TYPES = ("f32", "f16", "bf16", "q8_0")


def default_prompt_ids(vocab: int, n: int, seed: int = 2026) -> list[int]:
    """Deterministic ids in [3, vocab - 4): no BOS/EOS/unk, none of VILA-U's added tokens."""
    rng = random.Random(seed)
    return [rng.randrange(3, max(4, vocab - 4)) for _ in range(n)]


def find_converter(arg: str | None) -> Path:
    if arg:  # named explicitly: that file or nothing
        if not Path(arg).is_file():
            raise FileNotFoundError(f"--converter {arg}: no such file")
        return Path(arg).resolve()
    cands = [os.environ.get("LLAMA_CPP_CONVERTER")]
    if os.environ.get("LLAMA_CPP_DIR"):
        cands.append(os.path.join(os.environ["LLAMA_CPP_DIR"], "convert_hf_to_gguf.py"))
    # an unpacked llama-cpp-python sdist next to this interpreter's venv or in the cwd
    venv_parent = Path(sys.prefix).parent
    for root in (venv_parent, Path.cwd()):
        cands += sorted(glob.glob(str(root / "*/vendor/llama.cpp/convert_hf_to_gguf.py")))
        cands += sorted(glob.glob(str(root / "*/*/vendor/llama.cpp/convert_hf_to_gguf.py")))
    for c in cands:
        if c and Path(c).is_file():
            return Path(c).resolve()
    raise FileNotFoundError(
        "llama.cpp's convert_hf_to_gguf.py not found: pass --converter or set LLAMA_CPP_CONVERTER "
        "(it is in the llama-cpp-python sdist: pip download --no-binary :all: --no-deps "
        "llama-cpp-python, unpack, vendor/llama.cpp/convert_hf_to_gguf.py)"
    )


def convert(hf: Path, outtype: str, dst: Path, converter: Path, python: str) -> float:
    t = time.perf_counter()
    part = dst.with_name(dst.name + ".part")  # renamed on success: no half file is reused
    cmd = [python, str(converter), str(hf), "--outtype", outtype, "--outfile", str(part)]
    p = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if p.returncode or not part.is_file():
        part.unlink(missing_ok=True)
        tail = (p.stderr or p.stdout)[-4000:]
        raise RuntimeError(
            f"convert_hf_to_gguf.py --outtype {outtype} failed (rc {p.returncode}):\n{tail}"
        )
    part.replace(dst)
    return time.perf_counter() - t


def quantize(src: Path, dst: Path, type_name: str, threads: int) -> float:
    import llama_cpp

    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{type_name.upper()}", None)
    if ftype is None:
        raise ValueError(f"llama.cpp has no file type LLAMA_FTYPE_MOSTLY_{type_name.upper()}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads
    t = time.perf_counter()
    part = dst.with_name(dst.name + ".part")
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(part).encode(), params)
    if rc != 0 or not part.is_file():
        part.unlink(missing_ok=True)
        raise RuntimeError(f"llama_model_quantize to {type_name} failed (rc {rc})")
    part.replace(dst)
    return time.perf_counter() - t


def hf_key(hf: Path) -> str:
    """Short key of the folder's path and files (name, size, mtime): a reused --workdir never
    hands out a GGUF converted from another checkpoint."""
    h = hashlib.sha1(str(hf).encode())
    for f in sorted(hf.iterdir()):
        if f.is_file():
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:10]


def gguf_for(
    type_name: str, hf: Path, work: Path, converter: str | None, python: str, threads: int
) -> tuple[Path, float]:
    """GGUF of ``type_name`` in ``work`` (reused when already there); returns (path, seconds)."""
    dst = work / f"{hf.name}-{hf_key(hf)}-{type_name}.gguf"
    if dst.is_file():
        return dst, 0.0
    if type_name in CONVERTER_TYPES:
        return dst, convert(hf, type_name, dst, find_converter(converter), python)
    f32, secs = gguf_for("f32", hf, work, converter, python, threads)
    return dst, secs + quantize(f32, dst, type_name, threads)


def run_type(
    path: Path,
    ids: list[int],
    new: int,
    threads: int,
    repeat: int,
    warmup: int,
    kv_type: str = "f16",
) -> dict:
    import llama_cpp
    import numpy as np

    kv = getattr(llama_cpp, f"GGML_TYPE_{kv_type.upper()}")
    llm = llama_cpp.Llama(
        model_path=str(path), n_ctx=len(ids) + new + 8, n_threads=threads,
        n_threads_batch=threads, n_batch=512, logits_all=False, verbose=False,
        type_k=kv, type_v=kv,
    )  # fmt: skip
    n_vocab = llm.n_vocab()

    def argmax_last() -> int:
        # logits_all=False: Llama.eval keeps no scores, the context holds the last row only
        ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
        return int(np.argmax(np.ctypeslib.as_array(ptr, shape=(n_vocab,))))

    def once(prompt: list[int], n: int) -> tuple[float, float, list[int]]:
        llm.reset()  # n_tokens = 0; eval() drops the KV cache from there on
        t0 = time.perf_counter()
        llm.eval(prompt)
        tok = argmax_last()
        ttft = time.perf_counter() - t0
        toks = [tok]
        t1 = time.perf_counter()
        for _ in range(n - 1):
            llm.eval([tok])
            tok = argmax_last()
            toks.append(tok)
        return ttft, time.perf_counter() - t1, toks

    try:
        for _ in range(warmup):
            once(ids, min(new, 8))
        runs = [once(ids, new) for _ in range(repeat)]
    finally:
        llm.close()
    toks = runs[0][2]
    ttft = statistics.median(r[0] for r in runs)
    rest = statistics.median(r[1] for r in runs)
    return {
        "ttft_ms": ttft * 1e3,
        "decode_tok_s": (new - 1) / rest if new > 1 and rest > 0 else float("nan"),
        "end_to_end_tok_s": new / (ttft + rest),
        "tokens": toks,
        "repeat_tokens_equal": all(r[2] == toks for r in runs),
        "runs_ttft_ms": [round(r[0] * 1e3, 3) for r in runs],
        "runs_decode_s": [round(r[1], 4) for r in runs],
    }


def table(rows: list[dict]) -> str:
    out = ["| engine | type | GGUF MB | ttft ms | decode tok/s | end-to-end tok/s |",
           "| --- | --- | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for r in rows:
        out.append(
            f"| llama.cpp | {r['type'].upper()} | {r['gguf_mb']:.0f} | {r['ttft_ms']:.0f} "
            f"| {r['decode_tok_s']:.1f} | {r['end_to_end_tok_s']:.1f} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--hf",
        required=True,
        type=Path,
        help="HF LLaMA folder (config.json, safetensors, tokenizer)",
    )
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--prompt-ids", type=Path, help="JSON file: a list of token ids")
    g.add_argument(
        "--prompt-len", type=int, default=100, help="deterministic ids of this length (default 100)"
    )
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--types", nargs="+", default=["f32", "f16", "q4_0"])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs before the timed ones")
    ap.add_argument(
        "--kv-type",
        choices=["f16", "f32"],
        default="f16",
        help="KV-cache type (llama.cpp's default f16; f32 for bit-closer parity checks)",
    )
    ap.add_argument("--out", type=Path, help="write the JSON list of results here")
    ap.add_argument(
        "--workdir", type=Path, help="GGUF folder, kept (default: a temp folder, removed)"
    )
    ap.add_argument("--converter", help="path of llama.cpp's convert_hf_to_gguf.py")
    ap.add_argument(
        "--converter-python", default=sys.executable, help="interpreter for the converter"
    )
    args = ap.parse_args(argv)

    import llama_cpp  # fail early, before any conversion

    hf = args.hf.resolve()
    cfg = json.loads((hf / "config.json").read_text())
    if args.prompt_ids:
        ids = [int(i) for i in json.loads(args.prompt_ids.read_text())]
    else:
        ids = default_prompt_ids(int(cfg["vocab_size"]), args.prompt_len)
    if not ids or args.new_tokens < 1:
        ap.error("need a non-empty prompt and --new-tokens >= 1")

    tmp = None
    if args.workdir:
        work = args.workdir
        work.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.mkdtemp(prefix="llama_cpp_baseline-")
        work = Path(tmp)
    try:
        rows: list[dict] = []
        for type_name in args.types:
            type_name = type_name.lower()
            try:
                path, conv_s = gguf_for(
                    type_name, hf, work, args.converter, args.converter_python, args.threads
                )
                res = run_type(
                    path, ids, args.new_tokens, args.threads, args.repeat, args.warmup, args.kv_type
                )
            except Exception as e:  # noqa: BLE001 - one type failing does not stop the others
                msg = f"{type(e).__name__}: {e}"
                print(f"llama.cpp {type_name}: FAILED: {msg}", file=sys.stderr)
                if not isinstance(e, (RuntimeError, FileNotFoundError, ValueError)):
                    traceback.print_exc()
                print(
                    json.dumps({"engine": "llama.cpp", "type": type_name, "error": msg[-500:]}),
                    flush=True,
                )
                continue
            row = {
                "engine": "llama.cpp",
                "type": type_name,
                **res,
                "gguf_mb": path.stat().st_size / 2**20,
                "convert_s": round(conv_s, 2),
                "prompt_len": len(ids),
                "new_tokens": args.new_tokens,
                "threads": args.threads,
                "kv_type": args.kv_type,
                "repeat": args.repeat,
                "llama_cpp_version": getattr(llama_cpp, "__version__", "?"),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)

    if rows:
        load = os.getloadavg()
        print()
        print(table(rows))
        print(
            f"\n{platform.machine()}, {os.cpu_count()} CPUs, {args.threads} threads, load average "
            f"{load[0]:.2f}; prompt {len(ids)}, {args.new_tokens} greedy tokens, median of "
            f"{args.repeat}; llama-cpp-python {rows[0]['llama_cpp_version']}; {hf}"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=1) + "\n")
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
