"""What ``int8_activations`` costs in accuracy, next to what INT4 itself costs: teacher-forced
log-probabilities of the float checkpoint, its INT4 (AWQ) checkpoint run exactly, and the same
INT4 checkpoint with int8 activations (W4A8 layers, W8A8 lm_head), on the package's texts
(vilau_rt/data/texts.txt). Prints mean KL per predicted token between each pair, top-1 agreement
and perplexity, so the int8 rounding can be read against the 4-bit rounding it rides on.

Greedy token runs are a poor yardstick on random-weight checkpoints (near-tied logits: llama.cpp
F16 and F32 part ways within 64 tokens there, bench/RESULTS.md); these per-token figures are not.

    python bench/a8_accuracy.py --float CKPT --int4 CKPT_INT4 [--texts 40] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from vilau_rt import Pipeline

TEXTS = Path(__file__).resolve().parents[1] / "vilau_rt" / "data" / "texts.txt"
ROWS = 64  # logits rows per call: the int8 lm_head serves decode-sized calls (< 65 rows)


@torch.no_grad()
def log_probs(pipe: Pipeline, ids: list[list[int]]) -> list[torch.Tensor]:
    """log_softmax of the logits predicting tokens 1.. of each sequence, float64."""
    be, out = pipe.backend, []
    for seq in ids:
        be.setup_cache(1, len(seq))
        hidden = be.forward(be.embed_tokens(torch.tensor([seq])), torch.arange(len(seq))[None], 0)
        rows = [be.logits(h) for h in hidden[0, :-1].split(ROWS)]
        out.append(torch.log_softmax(torch.cat(rows).double(), dim=-1))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--float", required=True, help="float checkpoint")
    ap.add_argument("--int4", required=True, help="its AWQ INT4 checkpoint (vilau-rt quantize)")
    ap.add_argument("--texts", type=int, default=40, help="first N lines of the texts")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    texts = [t for t in TEXTS.read_text().splitlines() if t.strip()][: args.texts]
    runs = {"float": (args.float, False), "int4": (args.int4, False), "int4-a8": (args.int4, True)}
    lp, ids = {}, None
    for name, (path, a8) in runs.items():
        pipe = Pipeline.from_pretrained(path, backend="native", device="cpu", int8_activations=a8)
        if ids is None:
            ids = [s for s in (pipe.tokenizer.encode(t, add_bos=True) for t in texts) if len(s) > 1]
        lp[name] = log_probs(pipe, ids)
        del pipe
    targets = [torch.tensor(s[1:]) for s in ids]
    n = sum(len(t) for t in targets)
    result = {"machine": platform.machine(), "texts": len(ids), "tokens": n}
    for a, b in (("float", "int4"), ("float", "int4-a8"), ("int4", "int4-a8")):
        kl = sum(float((p.exp() * (p - q)).sum()) for p, q in zip(lp[a], lp[b]))
        top1 = sum(int((p.argmax(-1) == q.argmax(-1)).sum()) for p, q in zip(lp[a], lp[b]))
        result[f"KL({a} || {b})"] = kl / n
        result[f"top-1 {a} = {b}"] = top1 / n
    for name, logp in lp.items():
        nll = -sum(float(p[torch.arange(len(t)), t].sum()) for p, t in zip(logp, targets))
        result[f"perplexity {name}"] = float(torch.tensor(nll / n).exp())
    for key, value in result.items():
        print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
