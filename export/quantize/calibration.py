"""Calibration data for AWQ: text blocks, and VILA-U's image-conditioned prompts.

- ``calibration_blocks``: AutoAWQ's set construction (encode each text, drop the too long, keep
  ``max_samples``, concatenate, cut into ``seq_len`` blocks) -> int64 [n, seq_len].
- ``image_conditioned_blocks``: understanding prompts whose ``<image>`` is the projected RVQ
  embedding of a calibration image, as input embeddings [m, seq_len, H] (the LLM of VILA-U reads
  image tokens in real use, so its activation statistics should include them).
The built-in texts ship in the package (``vilau_rt/data/calib_texts.txt``): no downloads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from vilau_rt.errors import ConfigError

CALIB_TEXTS = resources.files("vilau_rt") / "data" / "calib_texts.txt"


def read_calib_texts(path: str | Path | None = None) -> list[str]:
    """Non-empty lines of ``path``, or of the built-in set ``vilau_rt/data/calib_texts.txt``."""
    if path is None:
        text = CALIB_TEXTS.read_text()
    else:
        if not Path(path).is_file():
            raise ConfigError(f"calibration text file {path} not found")
        try:
            text = Path(path).read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(f"calibration text file {path} is not UTF-8 text ({e})") from e
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise ConfigError(f"calibration text file {path} holds no text: one text a line")
    return lines


def sentencepiece_encoder(model_path: str | Path, add_bos: bool = True) -> Callable:
    """text -> ids with a sentencepiece model (LLaMA's ``tokenizer.model``), BOS first."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(model_path))
    bos = [sp.bos_id()] if add_bos else []
    return lambda text: bos + sp.encode(text)


def calibration_blocks(
    texts: Iterable[str], encode: Callable[[str], list[int]], seq_len: int, max_samples: int
) -> torch.Tensor:
    """AutoAWQ's calibration set: encode each text, drop those longer than ``seq_len`` tokens,
    keep ``max_samples``, concatenate, cut into blocks -> int64 [n_blocks, seq_len]."""
    ids: list[int] = []
    used = 0
    for text in texts:
        tokens = list(encode(text.strip()))
        if not tokens or len(tokens) > seq_len:
            continue
        ids += tokens
        used += 1
        if used == max_samples:
            break
    n = len(ids) // seq_len
    if n == 0:
        raise ValueError(
            f"calibration texts give {len(ids)} tokens from {used} texts, fewer than one block of "
            f"seq_len={seq_len}: add texts or lower seq_len"
        )
    return torch.tensor(ids[: n * seq_len], dtype=torch.int64).view(n, seq_len)


def calibration_images(n: int) -> list[np.ndarray]:
    """``n`` procedural RGB pictures (gradients, discs, stripes, checkers, noise): no downloads."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:96, 0:96].astype(np.float32) / 95
    out = []
    for i in range(n):
        c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        kind = i % 5
        if kind == 0:
            t = x * np.cos(i) + y * np.sin(i)
        elif kind == 1:
            t = ((x - rng.uniform(0.2, 0.8)) ** 2 + (y - rng.uniform(0.2, 0.8)) ** 2 < 0.06) * 1.0
        elif kind == 2:
            t = (np.sin(x * rng.uniform(5, 40)) > 0) * 1.0
        elif kind == 3:
            t = ((np.floor(x * 8) + np.floor(y * 8)) % 2) * 1.0
        else:
            t = rng.uniform(0, 1, x.shape)
        img = c0 + (c1 - c0) * t[..., None]
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


@torch.no_grad()
def image_conditioned_blocks(
    ckpt: Path,
    texts: list[str],
    seq_len: int,
    n_prompts: int,
    images: list | None = None,
    siglip_config=None,
) -> torch.Tensor:
    """[m, seq_len, H] input-embedding blocks of understanding prompts with one image each.

    The model is loaded in its stored dtype, so its tensors stay memory-mapped views: only the
    vision tower, the projector and the embedding rows used are ever read (a 7B LLM is not).
    """
    from vilau_rt.generate import splice_images
    from vilau_rt.model.safetensors_io import TensorSource
    from vilau_rt.pipeline import Pipeline
    from vilau_rt.prompts import build_understanding_prompt, tokenize_with_images

    stored = TensorSource(ckpt / "llm").meta("model.embed_tokens.weight")[0]
    # check_finite=False: a finiteness pass would read the whole LLM, which this never touches
    pipe = Pipeline.from_pretrained(
        ckpt, device="cpu", dtype=stored, siglip_config=siglip_config, check_finite=False
    )
    pics = list(images) if images else calibration_images(n_prompts)
    parts = []
    for i in range(n_prompts):
        emb = pipe.image_embeddings([pics[i % len(pics)]])
        prompt = build_understanding_prompt(texts[i % len(texts)], num_images=1)
        ids = tokenize_with_images(pipe.tokenizer, prompt)
        parts.append(splice_images(pipe.backend, ids, emb)[0].float())
    stream = torch.cat(parts)
    n = stream.shape[0] // seq_len
    if n == 0:
        raise ConfigError(
            f"{n_prompts} image prompts give {stream.shape[0]} positions, fewer than one block of "
            f"{seq_len}: raise image_prompts (--image-prompts)"
        )
    return stream[: n * seq_len].view(n, seq_len, -1)
