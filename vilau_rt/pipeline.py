"""``Pipeline``: the one object users hold. Understanding (caption, generate), image generation
and the image tokenizer, on top of one backend.

```python
from vilau_rt import Pipeline
pipe = Pipeline.from_pretrained("path/to/vila-u-7b-256")
print(pipe.caption("frame.jpg"))
images = pipe.generate_image("a red apple on a wooden table", seed=0)
```
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .backends import Backend, TorchBackend
from .checkpoint import load_vilau
from .errors import BackendError, GenerationError, PromptError
from .generate import ImageSettings, TextSettings, generate_codes, generate_text, splice_images
from .images import load_image, to_pil
from .pixel_decoder import to_uint8
from .prompts import build_understanding_prompt, generation_batch, tokenize_with_images
from .sampling import check_sampling
from .siglip import preprocess
from .tokenizer import StreamDecoder, Tokenizer

BACKENDS = ("torch",)
DEFAULT_CAPTION_PROMPT = "Please describe this image in detail."


@dataclass
class GenerationResult:
    text: str
    token_ids: list[int]
    stats: dict = field(default_factory=dict)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


class Pipeline:
    def __init__(self, backend: Backend, tokenizer: Tokenizer, path: Path | None = None):
        self.backend = backend
        self.tokenizer = tokenizer
        self.path = path
        self.cfg = backend.cfg
        self.stats: dict = {}

    @property
    def device(self) -> torch.device:
        return self.backend.device

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        backend: str = "torch",
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        siglip_config=None,
    ) -> Pipeline:
        """Load an official VILA-U checkpoint folder.

        device defaults to CUDA when available, else CPU; dtype to bfloat16 (float16 where bf16
        is unsupported) on CUDA and float32 on the CPU.
        """
        if backend not in BACKENDS:
            raise BackendError(f"backend {backend!r} is not available; choose one of {BACKENDS}")
        device = torch.device(device) if device is not None else default_device()
        if isinstance(dtype, str):
            name, dtype = dtype, getattr(torch, dtype.replace("torch.", ""), None)
            if not isinstance(dtype, torch.dtype):
                raise TypeError(f"dtype {name!r} is not float32, float16 or bfloat16")
        dtype = dtype or default_dtype(device)
        model = load_vilau(path, dtype=dtype, device=device, siglip_config=siglip_config)
        tokenizer = Tokenizer.from_folder(Path(path) / "llm")
        return cls(TorchBackend(model), tokenizer, Path(path))

    # -- image tokenizer ------------------------------------------------------------------
    def _pixels(self, images) -> torch.Tensor:
        pil = [load_image(im) for im in images]
        return preprocess(pil, self.cfg.image_size).to(self.device)

    def encode_image(self, image) -> np.ndarray:
        """Image -> RVQ codes, int64 [h, w, D]."""
        codes, _ = self.backend.encode_images(self._pixels([image]))
        return codes[0].cpu().numpy()

    def decode_codes(self, codes) -> Image.Image | list[Image.Image]:
        """Codes [h, w, D] -> an image; [N, h, w, D] -> a list of images."""
        c = torch.as_tensor(np.asarray(codes), dtype=torch.long, device=self.device)
        h, w = self.cfg.grid
        D = self.cfg.rvq.depth
        single = c.dim() == 3
        if single:
            c = c.unsqueeze(0)
        if c.dim() != 4 or tuple(c.shape[1:]) != (h, w, D):
            raise ValueError(
                f"codes of shape {tuple(np.shape(codes))} do not fit this model: expected "
                f"[{h}, {w}, {D}] or [N, {h}, {w}, {D}]"
            )
        images = to_pil(to_uint8(self.backend.decode_codes(c)))
        return images[0] if single else images

    # -- understanding --------------------------------------------------------------------
    def caption(self, image, prompt: str | None = None, **gen) -> str:
        return self.generate(prompt or DEFAULT_CAPTION_PROMPT, images=[image], **gen).text

    def generate(
        self,
        prompt: str,
        images=None,
        *,
        max_new_tokens: int = 128,
        do_sample: bool = False,
        temperature: float = 0.9,
        top_p: float | None = 0.6,
        top_k: int | None = None,
        repetition_penalty: float = 1.0,
        stop: list[str] | None = None,
        seed: int | None = None,
        stream: bool = False,
    ) -> GenerationResult | Iterator[str]:
        """Answer ``prompt`` about ``images`` (vicuna_v1 template, images first)."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise PromptError("prompt is empty: pass the question or instruction as text")
        if max_new_tokens < 1:
            raise GenerationError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if do_sample:
            check_sampling(temperature, top_k, top_p)
        if repetition_penalty <= 0:
            raise GenerationError(f"repetition_penalty must be > 0, got {repetition_penalty}")
        images = list(images or [])
        t0 = time.perf_counter()
        pixels = self._pixels(images) if images else None
        text = build_understanding_prompt(prompt, num_images=len(images))
        ids = tokenize_with_images(self.tokenizer, text)
        embeds_img = list(self.backend.encode_images(pixels)[1]) if pixels is not None else []
        t_vision = time.perf_counter()
        embeds = splice_images(self.backend, ids, embeds_img)
        limit = self.cfg.llm.context_length
        if embeds.shape[1] + max_new_tokens > limit:
            raise PromptError(
                f"prompt of {embeds.shape[1]} tokens (images included) + max_new_tokens "
                f"{max_new_tokens} exceeds the model context of {limit} tokens; shorten the "
                "prompt, use fewer images or lower max_new_tokens"
            )
        settings = TextSettings(
            max_new_tokens, do_sample, temperature, top_k, top_p, repetition_penalty
        )
        tokens = generate_text(
            self.backend, embeds, settings, eos_id=self.tokenizer.eos_id, generator=self._rng(seed)
        )
        stats = {"vision_ms": 1000 * (t_vision - t0), "prompt_tokens": int(embeds.shape[1])}
        pieces = self._stream(tokens, stop or [], stats, t_vision)
        if stream:
            return pieces
        text = "".join(pieces)
        return GenerationResult(text, stats.pop("token_ids"), stats)

    def _stream(self, tokens, stop, stats, t_start) -> Iterator[str]:
        dec = StreamDecoder(self.tokenizer)
        out_ids: list[int] = []
        stats["token_ids"] = out_ids
        text = ""
        first = None
        for tok in tokens:
            first = first or time.perf_counter()
            out_ids.append(tok)
            piece = dec.push(tok)
            text += piece
            hit = next((s for s in stop if s in text), None)
            if hit is not None:
                cut = text.index(hit)
                if cut > len(text) - len(piece):
                    yield piece[: cut - (len(text) - len(piece))]
                break
            if piece:
                yield piece
        else:
            rest = dec.flush()
            if rest:
                yield rest
        end = time.perf_counter()
        stats["time_to_first_token_ms"] = 1000 * ((first or end) - t_start)
        n = len(out_ids)
        stats["new_tokens"] = n
        if n > 1 and first is not None:
            stats["decode_tok_s"] = (n - 1) / max(end - first, 1e-9)
        self.stats = dict(stats)

    # -- generation -----------------------------------------------------------------------
    def generate_image_codes(
        self,
        prompt: str,
        *,
        cfg_scale: float = 3.0,
        temperature: float = 1.0,
        top_k: int | None = 900,
        top_p: float | None = 0.96,
        seed: int | None = None,
        num_images: int = 1,
        progress=None,
    ) -> np.ndarray:
        """Text -> RVQ codes, int64 [num_images, h, w, D] (CFG over [cond, uncond] rows)."""
        if num_images < 1:
            raise GenerationError(f"num_images must be >= 1, got {num_images}")
        if not cfg_scale >= 0:
            raise GenerationError(f"cfg_scale must be >= 0, got {cfg_scale}")
        check_sampling(temperature, top_k, top_p)
        if top_k is not None:
            top_k = min(top_k, self.cfg.rvq.n_embed)
        batch = generation_batch(self.tokenizer, prompt, num_images=num_images)
        dev = self.device
        n_pos = self.cfg.tokens_per_image
        need = batch.input_ids.shape[1] + n_pos
        if need > self.cfg.llm.context_length:
            raise PromptError(
                f"prompt of {batch.input_ids.shape[1]} tokens + {n_pos} image tokens exceeds "
                f"the model context of {self.cfg.llm.context_length}; shorten the prompt"
            )
        t0 = time.perf_counter()
        codes = generate_codes(
            self.backend,
            torch.as_tensor(batch.input_ids, device=dev),
            torch.as_tensor(batch.attention_mask, device=dev),
            torch.as_tensor(batch.position_ids, device=dev),
            n_pos,
            ImageSettings(cfg_scale, temperature, top_k, top_p),
            generator=self._rng(seed),
            on_position=progress,
        )
        self.stats = {"image_generation_s": time.perf_counter() - t0, "images": num_images}
        h, w = self.cfg.grid
        return codes.view(num_images, h, w, -1).cpu().numpy()

    def _rng(self, seed: int | None) -> torch.Generator:
        gen = torch.Generator(device=self.device)
        gen.manual_seed(seed if seed is not None else torch.seed() % 2**63)
        return gen

    def generate_image(self, prompt: str, **kwargs) -> list[Image.Image]:
        codes = self.generate_image_codes(prompt, **kwargs)
        return self.decode_codes(codes)
