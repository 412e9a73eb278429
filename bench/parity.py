"""Parity figures of every backend against the official VILA-U fixture (CPU, float32).

Prints one table: for each quantity the official code produced, the largest difference of ours
(codes and token ids: number of mismatches). ``python bench/parity.py [FIXTURES_DIR]``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import torch

from vilau_rt.backends import TorchBackend
from vilau_rt.generate import (
    ImageSettings,
    TextSettings,
    generate_codes,
    generate_text,
    splice_images,
)
from vilau_rt.model.checkpoint import load_vilau


def main() -> None:
    default = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
    root = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("VILAU_RT_FIXTURES", default))
    root = root / "vilau-official-tiny"
    ref = lambda name: torch.from_numpy(np.load(root / "reference" / name))
    rel = lambda a, b: float((a - b).abs().max() / b.abs().max())
    model = load_vilau(root, siglip_config=root / "reference" / "siglip_config")
    be = TorchBackend(model)
    rows = []
    codes, z_q = model.encode_images(ref("pixel_values.npy"))
    rows.append(
        (
            "RVQ codes (3 images)",
            f"{int((codes != ref('codes.npy')).sum())} of {codes.numel()} differ",
        )
    )
    rows.append(("z_q max abs", f"{float((z_q - ref('z_q.npy')).abs().max()):.2e}"))
    emb = model.image_embeddings(z_q)
    rows.append(
        (
            "projected image embeddings max abs",
            f"{float((emb - ref('mm_projector_out.npy')).abs().max()):.2e}",
        )
    )
    raw = model.decode_codes(ref("codes.npy"))
    rows.append(
        (
            "decoded pixels (raw, [-1,1]) max abs",
            f"{float((raw - ref('decoded_raw.npy')).abs().max()):.2e}",
        )
    )
    ids = ref("und_input_ids.npy")[0].tolist()
    embeds = splice_images(be, ids, [emb[0]])
    with torch.no_grad():
        logits = model.llm.logits(model.llm(embeds, torch.arange(embeds.shape[1])[None]))
    rows.append(("prefill logits, max rel", f"{rel(logits, ref('und_prefill_logits.npy')):.2e}"))
    seen = []
    toks = list(
        generate_text(be, embeds, TextSettings(max_new_tokens=12), eos_id=2, on_logits=seen.append)
    )
    want = ref("und_greedy_ids.npy")[0, 1:].tolist()
    rows.append(
        (
            "greedy tokens (12)",
            f"{sum(a != b for a, b in zip(toks, want)) + abs(len(toks) - len(want))} differ",
        )
    )
    rows.append(
        (
            "greedy step logits, max rel",
            f"{rel(torch.cat(seen), ref('und_greedy_step_logits.npy')[0]):.2e}",
        )
    )
    gi, gm = ref("gen_input_ids.npy"), ref("gen_attention_mask.npy")
    pos = (gm.cumsum(-1) - 1).masked_fill(gm == 0, 1)
    trace = {}
    gen = generate_codes(be, gi, gm, pos, 16, ImageSettings(top_k=1), trace=trace)
    rows.append(
        (
            "CFG greedy image codes",
            f"{int((gen.view(4, 4, 4) != ref('gen_codes.npy')).sum())} of 64 differ",
        )
    )
    rows.append(
        (
            "depth-transformer inputs (LLM hidden), max rel",
            f"{rel(torch.stack(trace['hidden']), ref('gen_depth_in_hidden.npy')):.2e}",
        )
    )
    dl = torch.stack([torch.stack(p) for p in trace["depth_logits"]])
    rows.append(
        ("depth logits during generation, max rel", f"{rel(dl, ref('gen_depth_logits.npy')):.2e}")
    )
    px = (model.decode_codes(gen.view(1, 4, 4, 4)) + 1).mul(127.5).clamp(0, 255)
    rows.append(
        (
            "generated pixels (0..255) max abs",
            f"{float((px - ref('gen_pixels_float.npy')).abs().max()):.2e}",
        )
    )
    print("| quantity (vs official code) | ours |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
