"""Peak RAM of `vilau_export.quantize.awq_search` on LLaMA-2-7B-shaped blocks (random weights, CPU).

The quantizer claims memory bounded by one decoder block plus the calibration activations, not
the model. Counted first, for hidden 4096 / MLP 11008 in float32 compute: one block is 202M
weights = 0.81 GB in fp32 (0.40 GB as stored fp16), its input/output activations for T
calibration tokens 2 x T x 4096 x 4 B (T = 4096: 0.13 GB), plus the search's temporaries
(a fake-quantized copy of the group's weights, the MLP's T x 11008 intermediate), so a few GB,
flat in the number of layers. The embedding and lm_head (32000 x 4096 each) are read as needed.

This script writes the LLM of a VILA-U checkpoint at 7B width with N layers (default 2 and 4),
quantizes each in a fresh process and reports that process's peak RSS: if memory is bounded by
a block, the two peaks are about equal while the checkpoint size grows.

Usage: ``python bench/awq_memory.py [--layers 2 4] [--work DIR] [--seq-len 512]`` (minutes per
layer on a 2-core CPU).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

QUANTIZE = """
import sys, time, json, resource
from vilau_rt.model.awq import AWQConfig
from vilau_export.quantize.awq_search import AWQSearchConfig
from vilau_export.quantize.awq_search import quantize_llm_folder
from vilau_rt.tokenizer import Tokenizer
src, dst, seq_len = sys.argv[1], sys.argv[2], int(sys.argv[3])
tok = Tokenizer.from_folder(src)
t0 = time.time()
quantize_llm_folder(src, dst, AWQConfig(), search=AWQSearchConfig(seq_len=seq_len),
                    encode=lambda t: tok.encode(t, add_bos=True))
print(json.dumps({"seconds": time.time() - t0,
                  "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
"""


def write_llm(layers: int, root: Path) -> Path:
    from vilau_export.checkpoint_writer import write_checkpoint

    from vilau_rt.model.config import preset

    cfg = preset("7b-256")
    tiny = preset("tiny-256")
    llm = replace(cfg.llm, num_hidden_layers=layers)
    small = replace(
        tiny,
        llm=llm,
        projector=replace(tiny.projector, out_features=llm.hidden_size),
        depth=replace(tiny.depth, llm_dim=llm.hidden_size),
    )
    import torch

    return write_checkpoint(small, root / f"ckpt-{layers}", dtype=torch.float16) / "llm"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--layers", type=int, nargs="*", default=[2, 4])
    p.add_argument("--work", help="folder for the checkpoints (default: a temporary one)")
    p.add_argument("--seq-len", type=int, default=512)
    args = p.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="awq-mem-"))
    rows = []
    for n in args.layers:
        src = write_llm(n, work)
        size = sum(f.stat().st_size for f in src.glob("*.safetensors")) / 1e9
        dst = work / f"int4-{n}"
        t0 = time.time()
        out = subprocess.run(
            [sys.executable, "-c", QUANTIZE, str(src), str(dst), str(args.seq_len)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append({"layers": n, "checkpoint_gb": size, **r, "wall_s": time.time() - t0})
    print(f"children peak RSS (max over runs): "
          f"{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20:.2f} GB")  # fmt: skip
    print("| layers (7B width) | fp16 llm/ GB | peak RSS GB | quantize s |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['layers']} | {r['checkpoint_gb']:.2f} | {r['peak_rss_gb']:.2f} | "
              f"{r['seconds']:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
