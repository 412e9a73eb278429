"""Token samplers.

Two families, because upstream uses two:
- ``sample_codes``: the depth transformer's sampler (RQ-Transformer ``sample_from_logits``):
  float32 logits / temperature, keep logits >= the k-th largest, softmax, then top-p with the
  first token always kept, renormalise, one multinomial draw.
- ``sample_text``: Hugging Face ``generate`` warpers in their order: repetition penalty,
  temperature, top-k, top-p (ascending cumulative mass <= 1 - top_p removed, one token kept).
Both take a ``torch.Generator`` so a seed gives the same draws on the same device.
"""

from __future__ import annotations

import torch

from . import arguments
from .errors import GenerationError


def check_sampling(temperature, top_k, top_p) -> tuple[float, int | None, float | None]:
    """The sampling knobs checked and normalised (numpy numbers become Python ones)."""
    temperature = arguments.real("temperature", temperature)
    if not temperature > 0:
        raise GenerationError(
            f"temperature must be > 0, got {temperature} (use top_k=1 for greedy)"
        )
    top_k = arguments.integer("top_k", top_k, low=1, none_ok=True)
    top_p = arguments.real("top_p", top_p, none_ok=True)
    if top_p is not None and not 0 < top_p <= 1:
        raise GenerationError(f"top_p must be in (0, 1], got {top_p}")
    return temperature, top_k, top_p


def sample_codes(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """logits [N, V] -> codes [N] int64 (RQ-Transformer semantics)."""
    if top_k == 1:
        # a one-hot distribution: the draw is the argmax, no random number needed
        return logits.float().argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if top_p is not None and top_p < 1.0:
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
        remove = sorted_probs.cumsum(dim=-1) >= top_p
        remove[..., 1:] = remove[..., :-1].clone()  # keep the token that crosses top_p
        remove[..., 0] = False
        probs = probs.masked_fill(remove.scatter(-1, order, remove), 0.0)
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return torch.multinomial(probs, 1, generator=generator).view(-1)


def sample_text(
    logits: torch.Tensor,
    *,
    do_sample: bool,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
    previous: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """logits [N, V] float32 -> next ids [N] (Hugging Face generate semantics)."""
    logits = logits.float()
    if repetition_penalty != 1.0 and previous is not None and previous.numel():
        seen = torch.gather(logits, 1, previous)
        seen = torch.where(seen < 0, seen * repetition_penalty, seen / repetition_penalty)
        logits = logits.scatter(1, previous, seen)
    if not do_sample:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=False)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove = cum <= (1 - top_p)
        remove[..., -1:] = False
        logits = logits.masked_fill(remove.scatter(1, order, remove), float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).view(-1)
