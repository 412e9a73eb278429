"""The shapes-demo yardstick on every backend and precision: what the model still *means*.

    python bench/shapes_yardstick.py [--model shapes-demo] [--backends torch,native,onnxruntime]
                                     [--threads 1] [--int4 DIR]

For each precision (float, and INT4 after ``vilau-rt quantize --group-size 64``, written to a
temporary folder unless ``--int4`` names an existing one) and each backend: greedy captions of
2 fresh renders per class (exact matches of 48) and one generated image per class (cfg 3.0,
greedy depth codes) read back by the non-learned classifier (of 24). Prints a Markdown table;
bench/RESULTS.md records it.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch

from vilau_rt import Pipeline
from vilau_rt import shapes_world as world
from vilau_rt.cli import main as cli_main
from vilau_rt.model.builtin import resolve_checkpoint

FLOORS = {"float": (46, 21), "int4 (AWQ g64)": (45, 20)}


def score(ckpt: Path, backend: str, cache: Path) -> dict:
    t0, c0 = time.perf_counter(), time.process_time()
    pipe = Pipeline.from_pretrained(ckpt, backend=backend, device="cpu", cache_dir=cache)
    caps, gens = world.caption_score(pipe), world.generation_score(pipe)
    recon = world.reconstruction_score(pipe)
    return {
        "round_trip": f"{recon['right']}/{recon['total']}",
        "captions": f"{caps['right']}/{caps['total']}",
        "generated": f"{gens['right']}/{gens['total']}",
        "ok": (caps["right"], gens["right"]),
        "wrong": [
            {k: v for k, v in r.items() if k != "right"}
            for r in caps["rows"] + gens["rows"] + recon["rows"]
            if not r["right"]
        ],
        "wall_s": time.perf_counter() - t0,
        "cpu_s": time.process_time() - c0,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="shapes-demo", help="built-in name or checkpoint folder")
    p.add_argument("--backends", default="torch,native,onnxruntime", help="comma-separated")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--int4", help="an existing INT4 checkpoint (default: quantize one now)")
    p.add_argument("--precisions", default="float,int4", help="float, int4 or both")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    float_ckpt = resolve_checkpoint(args.model)
    with tempfile.TemporaryDirectory(prefix="shapes-yardstick-") as tmp:
        tmp = Path(tmp)
        int4 = Path(args.int4) if args.int4 else tmp / "int4"
        precisions = [("float", float_ckpt)]
        if "int4" in args.precisions:
            precisions.append(("int4 (AWQ g64)", int4))
        if "int4" in args.precisions and not args.int4:
            t0 = time.perf_counter()
            cli_main(["quantize", str(float_ckpt), str(int4), "--group-size", "64", "--json"])
            print(f"quantized in {time.perf_counter() - t0:.0f} s -> {int4}")
        rows = []
        for precision, ckpt in precisions:
            for backend in args.backends.split(","):
                r = score(ckpt, backend, tmp / f"ort-{precision[:5]}")
                floor = FLOORS[precision]
                meets = r["ok"][0] >= floor[0] and r["ok"][1] >= floor[1]
                rows.append((backend, precision, r, floor, meets))
                for row in r["wrong"]:
                    print(f"  wrong: {row}")
                print(f"{backend:12s} {precision:15s} captions {r['captions']}  generated "
                      f"{r['generated']}  ({r['wall_s']:.0f} s wall)", flush=True)  # fmt: skip
    print(f"\nmodel {float_ckpt}; {platform.machine()}, torch {torch.__version__}, "
          f"{args.threads} thread(s)\n")  # fmt: skip
    print("| backend | precision | captions exact | generated as prompted | floor | "
          "meets | tokenizer round trip | wall s (load + eval) | CPU s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for backend, precision, r, floor, meets in rows:
        print(f"| {backend} | {precision} | {r['captions']} | {r['generated']} | "
              f">= {floor[0]}/48, >= {floor[1]}/24 | {'yes' if meets else 'NO'} | "
              f"{r['round_trip']} | {r['wall_s']:.0f} | {r['cpu_s']:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
