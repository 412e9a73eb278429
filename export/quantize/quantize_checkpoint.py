"""``vilau-rt quantize``: a VILA-U checkpoint -> the same checkpoint with an AWQ INT4 ``llm/``.

The vision tower and the projector are copied untouched; ``llm/`` is quantized block by block by
``vilau_export.quantize.awq_search`` into the AutoAWQ GEMM format (readable by AutoAWQ, vLLM, transformers and
us). Calibration uses text blocks and, because the LLM of VILA-U reads image tokens in real use,
image-conditioned prompts: understanding prompts whose ``<image>`` is the projected RVQ embedding
of a calibration image (the user's, or built-in procedural test pictures). The output appears only when complete (temporary folder, renamed at the end). When done,
the quantized LLM is compared with the float one on held-out texts (not the calibration set):
mean KL(float || quantized) of the next-token distributions and the perplexity ratio.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import torch

from vilau_rt.errors import CheckpointNotFoundError, ConfigError
from vilau_rt.model.awq import AWQConfig, load_llm
from vilau_rt.model.config import read_json
from vilau_rt.model.llama import LlamaConfig
from vilau_rt.staging import staged_folder
from vilau_rt.tokenizer import Tokenizer

from .awq_search import AWQSearchConfig, quantize_llm_folder
from .calibration import image_conditioned_blocks, read_calib_texts

HELD_OUT = resources.files("vilau_rt") / "data" / "texts.txt"


def quantize_checkpoint(
    ckpt: str | Path,
    out: str | Path,
    *,
    group_size: int = 128,
    zero_point: bool = True,
    calib: str | Path | None = None,
    images: list | None = None,
    image_prompts: int = 16,
    search: AWQSearchConfig | None = None,
    progress: Callable | None = None,
    siglip_config=None,
) -> Path:
    """Quantize ``ckpt``'s LLM into the new checkpoint ``out``.

    ``calib``: a text file (one calibration text a line; default: the built-in set). ``images``:
    calibration images for the image-conditioned prompts (default: procedural test pictures);
    ``image_prompts``: how many such prompts (0 = text only). ``siglip_config``: as for
    ``Pipeline.from_pretrained``, for a tower whose config is not shipped.
    """
    ckpt, out = Path(ckpt), Path(out)
    s = search or AWQSearchConfig()
    texts = preflight(ckpt, out, group_size, calib)
    with staged_folder(out) as tmp:
        shutil.copy2(ckpt / "config.json", tmp / "config.json")
        shutil.copytree(ckpt / "vision_tower", tmp / "vision_tower")
        shutil.copytree(ckpt / "mm_projector", tmp / "mm_projector")
        tok = Tokenizer.from_folder(ckpt / "llm")
        extra = None
        if image_prompts > 0:
            extra = image_conditioned_blocks(
                ckpt, texts, s.seq_len, image_prompts, images, siglip_config
            )
        quantize_llm_folder(
            ckpt / "llm",
            tmp / "llm",
            AWQConfig(group_size=group_size, zero_point=zero_point),
            texts=texts,
            search=s,
            encode=lambda text: tok.encode(text, add_bos=True),
            progress=progress,
            extra_embeds=extra,
        )
    return out


def preflight(ckpt: Path, out: Path, group_size: int, calib) -> list[str]:
    """Every check that can fail before any work; returns the calibration texts."""
    ckpt, out = Path(ckpt), Path(out)
    for part in ("config.json", "llm", "vision_tower", "mm_projector"):
        if not (ckpt / part).exists():
            raise CheckpointNotFoundError(
                f"{ckpt / part} not found: {ckpt} is not a VILA-U checkpoint"
            )
    if out.exists():
        raise FileExistsError(f"{out} exists; choose a new output folder or remove it")
    _check_group_size(ckpt, group_size)
    return read_calib_texts(calib)


def _check_group_size(ckpt: Path, group_size: int) -> None:
    """Every quantized linear's input width (hidden and MLP sizes) must be a multiple of the
    group size; say so before any work, with the sizes that would fit."""
    cfg = LlamaConfig.from_hf(read_json(ckpt / "llm" / "config.json"))
    widths = {"hidden_size": cfg.hidden_size, "intermediate_size": cfg.intermediate_size}
    bad = {k: v for k, v in widths.items() if v % group_size}
    if bad:
        fits = [g for g in (32, 64, 128) if all(v % g == 0 for v in widths.values())]
        hint = (
            f"use --group-size {fits[-1]}"
            if fits
            else "no supported group size (32, 64, 128) divides them"
        )
        sizes = ", ".join(f"{k} {v}" for k, v in bad.items())
        raise ConfigError(
            f"{ckpt / 'llm'}: {sizes} is not a multiple of the group size {group_size}; {hint}"
        )


def _compare_dtype(folder: Path) -> torch.dtype:
    """float32 where the float model fits comfortably in RAM (< 2B parameters), else bfloat16."""
    import json

    c = json.loads((folder / "config.json").read_text())
    h, n_layers = c["hidden_size"], c["num_hidden_layers"]
    params = n_layers * (4 * h * h + 3 * h * c["intermediate_size"]) + 2 * c["vocab_size"] * h
    return torch.float32 if params < 2e9 else torch.bfloat16


@torch.no_grad()
def _log_probs(folder: Path, ids: list[list[int]], dtype: torch.dtype) -> list[torch.Tensor]:
    llm = load_llm(folder, dtype=dtype)
    out = []
    for seq in ids:
        t = torch.tensor([seq])
        hidden = llm(llm.embed(t), torch.arange(len(seq))[None])
        out.append(torch.log_softmax(llm.logits(hidden[0, :-1]).double(), dim=-1))
    del llm
    return out


def compare_llms(float_llm: Path, quant_llm: Path, texts: list[str] | None = None) -> dict:
    """Mean KL(float || quant) per predicted token and perplexities on held-out texts.

    The float model runs first and is freed before the quantized one loads, so peak memory is
    one model plus the log-probabilities.
    """
    tok = Tokenizer.from_folder(float_llm)
    texts = texts or [t for t in HELD_OUT.read_text().splitlines() if t.strip()]
    ids = [s for s in (tok.encode(t, add_bos=True) for t in texts) if len(s) > 1]
    dtype = _compare_dtype(float_llm)
    ref = _log_probs(float_llm, ids, dtype)
    got = _log_probs(quant_llm, ids, dtype)
    kl, nll_f, nll_q, n = 0.0, 0.0, 0.0, 0
    for seq, lf, lq in zip(ids, ref, got):
        target = torch.tensor(seq[1:])
        kl += float((lf.exp() * (lf - lq)).sum())
        rows = torch.arange(len(target))
        nll_f -= float(lf[rows, target].sum())
        nll_q -= float(lq[rows, target].sum())
        n += len(target)
    ppl_f, ppl_q = float(torch.tensor(nll_f / n).exp()), float(torch.tensor(nll_q / n).exp())
    return {
        "texts": len(ids),
        "tokens": n,
        "mean_kl": kl / n,
        "perplexity_float": ppl_f,
        "perplexity_quantized": ppl_q,
        "perplexity_ratio": ppl_q / ppl_f,
    }
