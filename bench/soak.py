"""Soak: many mixed requests on one Pipeline per backend, from several threads, with the
process's RSS sampled as it goes. A robot runs for days: memory must stay flat, no request may
fail, and every answer must equal the answer the same request gets alone.

    python bench/soak.py [CKPT] [--calls 500] [--threads 4] [--backends torch native onnxruntime]

CKPT defaults to a tiny-256 random-weight checkpoint written to a temporary folder. Prints one
row per backend: calls, wrong answers, errors, RSS at the start (after a warm-up round), at
the end and its maximum, and the request rate.
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def requests(seed: int):
    """The mixed request kinds: (name, callable(pipe) -> comparable answer)."""
    img = np.random.default_rng(seed).integers(0, 256, (48, 40, 3), dtype=np.uint8)

    def caption(p):
        return p.caption(img, "What is this?", max_new_tokens=8)

    def sampled(p):
        return p.generate("Describe.", images=[img], max_new_tokens=8, do_sample=True,
                          seed=seed).token_ids  # fmt: skip

    def stream(p):
        return "".join(p.generate("Describe it.", images=img, max_new_tokens=8, stream=True))

    def codes(p):
        return p.generate_image_codes(f"picture {seed}", top_k=1, seed=seed).tolist()

    def roundtrip(p):
        return np.asarray(p.decode_codes(p.encode_image(img))).tolist()

    def chat(p):
        s = p.chat_session()
        return s.ask("What?", images=[img], max_new_tokens=4).text + s.ask("Sure?").text[:20]

    return [caption, sampled, stream, codes, roundtrip, chat]


def soak(pipe, calls: int, threads: int) -> dict:
    kinds = [(s, f) for s in range(4) for f in requests(s)]
    expected = {(s, f.__name__): f(pipe) for s, f in kinds}  # warm-up and reference answers
    start = rss_mb()
    peak, wrong, errors, done = start, 0, [], 0
    lock = threading.Lock()

    def worker(w: int):
        nonlocal peak, wrong, done
        rng = random.Random(w)
        for _ in range(calls // threads):
            s, f = rng.choice(kinds)
            try:
                ok = f(pipe) == expected[(s, f.__name__)]
            except Exception as e:  # noqa: BLE001  (counted and reported)
                with lock:
                    errors.append(f"{f.__name__}: {e!r}")
                continue
            with lock:
                wrong += not ok
                done += 1
                if done % 10 == 0:
                    peak = max(peak, rss_mb())

    t0 = time.perf_counter()
    pool = [threading.Thread(target=worker, args=(w,)) for w in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - t0
    end = rss_mb()
    return {
        "calls": done + len(errors), "wrong": wrong, "errors": len(errors),
        "first_error": errors[0] if errors else "", "rss_start_mb": start, "rss_end_mb": end,
        "rss_max_mb": max(peak, end), "calls_per_s": (done + len(errors)) / elapsed,
    }  # fmt: skip


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", nargs="?", help="checkpoint (default: tiny-256, random)")
    ap.add_argument("--calls", type=int, default=500)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--backends", nargs="+", default=["torch", "native", "onnxruntime"])
    args = ap.parse_args(argv)

    from vilau_rt import Pipeline

    tmp = tempfile.TemporaryDirectory()
    ckpt = args.checkpoint
    if ckpt is None:
        from vilau_export.checkpoint_writer import write_checkpoint

        from vilau_rt.model.config import preset

        ckpt = write_checkpoint(preset("tiny-256"), Path(tmp.name) / "tiny", seed=0)
    print(f"soak: {ckpt}, {args.calls} calls per backend from {args.threads} threads")
    print("| backend | calls | wrong | errors | RSS start MB | RSS end MB | RSS max MB | calls/s |")
    print("|---|---|---|---|---|---|---|---|")
    failed = False
    for backend in args.backends:
        pipe = Pipeline.from_pretrained(ckpt, backend=backend, device="cpu",
                                        cache_dir=Path(tmp.name) / "cache")  # fmt: skip
        r = soak(pipe, args.calls, args.threads)
        print(f"| {backend} | {r['calls']} | {r['wrong']} | {r['errors']} | "
              f"{r['rss_start_mb']:.0f} | {r['rss_end_mb']:.0f} | {r['rss_max_mb']:.0f} | "
              f"{r['calls_per_s']:.1f} |", flush=True)  # fmt: skip
        if r["errors"]:
            print(f"  first error: {r['first_error']}")
        failed |= bool(r["wrong"] or r["errors"])
        del pipe
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
