"""Generation loops of the torch reference backend: text after a multimodal prefill, and
images / videos as RVQ codes with classifier-free guidance.

Both keep a static KV cache sized once per request. Image generation follows the official
``generate_image_content``: rows [conditional..., unconditional...] left-padded, RoPE positions
``cumsum(mask) - 1`` per row; at every image position the final LLM hidden state of every row goes
to the depth transformer (KV-cached over depths), CFG mixes the two halves, the SAME codes go to
both halves, and ``mm_projector(sum of code embeddings)`` is the next LLM input.

One deliberate difference: upstream also samples a throw-away text token from ``lm_head`` at
every image step and, if the last row happens to draw ``<im_start>``/``<vi_start>``, embeds that
token instead of the image (or stops early when all rows draw ``</s>``, which then crashes its
final reshape). We always feed the image embedding and skip that ``lm_head`` pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from . import arguments
from .backends.base import Backend
from .errors import GenerationError
from .ops.depth_decode import CodeSampler
from .prompts import IMAGE_PLACEHOLDER_ID
from .sampling import check_sampling, sample_text


def splice_images(
    backend: Backend, input_ids: list[int], image_embeds: list[torch.Tensor]
) -> torch.Tensor:
    """Token ids with ``-200`` placeholders + one [h*w, H] tensor per placeholder -> [1, T', H]."""
    n_slots = sum(1 for t in input_ids if t == IMAGE_PLACEHOLDER_ID)
    if n_slots != len(image_embeds):
        raise ValueError(f"prompt has {n_slots} image placeholders but {len(image_embeds)} images")
    parts, run, images = [], [], iter(image_embeds)
    for t in input_ids:
        if t == IMAGE_PLACEHOLDER_ID:
            if run:
                parts.append(_embed(backend, run))
                run = []
            parts.append(next(images).to(backend.dtype))
        else:
            run.append(t)
    if run:
        parts.append(_embed(backend, run))
    return torch.cat(parts, dim=0).unsqueeze(0)


def _embed(backend: Backend, ids: list[int]) -> torch.Tensor:
    return backend.embed_tokens(torch.tensor([ids], device=backend.device))[0]


DEFAULT_MAX_NEW_TOKENS = 128


@dataclass
class TextSettings:
    max_new_tokens: int | None = DEFAULT_MAX_NEW_TOKENS  # None: see text_settings
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float = 1.0


@dataclass
class GenerationResult:
    text: str
    token_ids: list[int]
    stats: dict = field(default_factory=dict)


def text_settings(
    max_new_tokens, do_sample, temperature, top_k, top_p, repetition_penalty
) -> TextSettings:
    """Validated text-generation settings (GenerationError names the bad one).

    ``max_new_tokens=None`` leaves the budget to the request: up to ``DEFAULT_MAX_NEW_TOKENS``,
    and no more than the context has room for after the prompt.
    """
    max_new_tokens = arguments.integer("max_new_tokens", max_new_tokens, low=1, none_ok=True)
    if not isinstance(do_sample, bool):
        raise GenerationError(f"do_sample must be True or False, got {do_sample!r}")
    temperature, top_k, top_p = check_sampling(temperature, top_k, top_p)
    repetition_penalty = arguments.real("repetition_penalty", repetition_penalty)
    if not repetition_penalty > 0:
        raise GenerationError(f"repetition_penalty must be > 0, got {repetition_penalty}")
    return TextSettings(max_new_tokens, do_sample, temperature, top_k, top_p, repetition_penalty)


@torch.no_grad()
def generate_text(
    backend: Backend,
    inputs_embeds: torch.Tensor,
    settings: TextSettings,
    *,
    eos_id: int,
    generator: torch.Generator | None = None,
    cache_pos: int = 0,
    on_logits: Callable[[torch.Tensor], None] | None = None,
    fed: list[int] | None = None,
) -> Iterator[int]:
    """Prefill ``inputs_embeds`` [1, T, H] at KV slot ``cache_pos`` (the cache must already hold
    the slots before it), then yield new token ids until EOS (not yielded) or the budget ends.

    A yielded token enters the KV cache only when the caller asks for the next one; ``fed``, if
    given, receives each token as it is written to the cache (chat sessions reuse the cache).
    """
    T = inputs_embeds.shape[1]
    dev = backend.device
    if cache_pos == 0:
        backend.setup_cache(1, T + settings.max_new_tokens)
    pos = cache_pos
    rope = torch.arange(pos, pos + T, device=dev).unsqueeze(0)
    hidden = backend.forward(inputs_embeds, rope, pos)
    pos += T
    history: list[int] = []
    for _ in range(settings.max_new_tokens):
        logits = backend.logits(hidden[:, -1])
        if on_logits is not None:
            on_logits(logits)
        penalize = history and settings.repetition_penalty != 1.0  # else not read: not built
        prev = torch.tensor([history], device=dev) if penalize else None
        nxt = int(
            sample_text(
                logits,
                do_sample=settings.do_sample,
                temperature=settings.temperature,
                top_k=settings.top_k,
                top_p=settings.top_p,
                repetition_penalty=settings.repetition_penalty,
                previous=prev,
                generator=generator,
            )[0]
        )
        if nxt == eos_id:
            return
        history.append(nxt)
        yield nxt
        if len(history) == settings.max_new_tokens:
            return
        emb = backend.embed_tokens(torch.tensor([[nxt]], device=dev))
        hidden = backend.forward(emb, torch.tensor([[pos]], device=dev), pos)
        if fed is not None:
            fed.append(nxt)
        pos += 1


@dataclass
class ImageSettings:
    cfg_scale: float = 3.0
    temperature: float = 1.0
    top_k: int | None = 900
    top_p: float | None = 0.96


@torch.no_grad()
def generate_codes(
    backend: Backend,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    num_positions: int,
    settings: ImageSettings,
    *,
    generator: torch.Generator | None = None,
    on_position: Callable[[int], None] | None = None,
    trace: dict | None = None,
) -> torch.Tensor:
    """Codes [n, num_positions, D] for the [cond * n, uncond * n] batch ``input_ids`` [2n, T].

    ``trace`` (a dict, optional) collects the depth transformer's inputs (``hidden``) and raw
    logits (``depth_logits``) per position, for parity checks against the official code.
    """
    B, T = input_ids.shape
    n = B // 2
    dev = backend.device
    backend.setup_cache(B, T + num_positions)
    key_valid = torch.ones(B, T + num_positions, dtype=torch.bool, device=dev)
    key_valid[:, :T] = attention_mask.bool()
    embeds = backend.embed_tokens(input_ids.clamp(min=0))
    hidden = backend.forward(embeds, position_ids, 0, key_valid)[:, -1]
    rope = position_ids[:, -1:] + 1
    cache_pos = T
    out = torch.empty(n, num_positions, backend.cfg.rvq.depth, dtype=torch.long, device=dev)

    # settings rather than a closure, so graph backends can sample inside their graphs
    sample = CodeSampler(settings.temperature, settings.top_k, settings.top_p, generator)

    for i in range(num_positions):
        if trace is not None:
            trace.setdefault("hidden", []).append(hidden.clone())
            trace.setdefault("depth_logits", []).append([])
            on_logits = lambda d, lg: trace["depth_logits"][-1].append(lg.clone())
        else:
            on_logits = None
        codes, next_embeds = backend.depth_generate(hidden, settings.cfg_scale, sample, on_logits)
        out[:, i] = codes
        if on_position is not None:
            on_position(i)
        if i + 1 == num_positions:
            break
        x = next_embeds.repeat(2, 1).unsqueeze(1)  # the same codes feed both halves [2n, 1, H]
        hidden = backend.forward(x, rope, cache_pos, key_valid)[:, -1]
        rope = rope + 1
        cache_pos += 1
    return out
