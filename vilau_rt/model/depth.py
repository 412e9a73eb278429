"""Depth transformer ("RQTransformer" head): LLM hidden state -> the D codes of one position.

| name          | shape          | dtype       | notes                                         |
|---------------|----------------|-------------|-----------------------------------------------|
| hidden        | [N, H_llm]     | model dtype | final LLM hidden state (after the last norm)  |
| code_cumsum   | [N, D, C]      | model dtype | running sums of the chosen code embeddings    |
| logits        | [N, D, V]      | model dtype | V = n_embed                                   |

Input sequence at one position: ``[in_mlp_2(h), in_mlp_1(e_1), in_mlp_1(e_1 + e_2), ...] +
pos_emb_d``; a causal pre-LN stack (no final norm); ``classifier_mlp`` = LayerNorm + Linear.
The official generator recomputes the whole depth sequence at every depth; ``generate`` keeps a KV
cache across depths instead, which gives the same logits (causal attention: earlier positions
never see later ones). Keys equal ``rqtransformer.*`` in ``vision_tower/model.safetensors``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .fields import check_fields


@dataclass
class DepthTransformerConfig:
    embed_dim: int  # E
    n_layer: int
    n_head: int
    vocab_size: int  # = n_embed of the quantizer
    depth: int  # D (rows of pos_emb_d)
    code_dim: int  # C, input_embed_dim_1
    llm_dim: int  # H_llm, input_embed_dim_2

    def __post_init__(self):
        check_fields(self, "vision_tower/config.json rqtransformer")
        if self.embed_dim % self.n_head:
            raise ValueError(
                f"depth embed_dim {self.embed_dim} not divisible by n_head {self.n_head}"
            )


def guided_logits(logits: torch.Tensor, cfg_scale: float) -> torch.Tensor:
    """Classifier-free guidance on [2n, V] logits of rows [conditional..., unconditional...]:
    ``l_u + cfg_scale * (l_c - l_u)`` [n, V], the logits every depth sampler draws from."""
    n = logits.shape[0] // 2
    return logits[n:] + cfg_scale * (logits[:n] - logits[n:])


class SelfAttention(nn.Module):
    def __init__(self, cfg: DepthTransformerConfig):
        super().__init__()
        E = cfg.embed_dim
        self.n_head = cfg.n_head
        self.key = nn.Linear(E, E)
        self.query = nn.Linear(E, E)
        self.value = nn.Linear(E, E)
        self.proj = nn.Linear(E, E)

    def forward(self, x: torch.Tensor, cache: tuple | None = None, pos: int = 0) -> torch.Tensor:
        """x [N, T, E]; with ``cache`` (k, v buffers [N, nh, D, hd]) write slots pos..pos+T."""
        N, T, E = x.shape
        hd = E // self.n_head
        q = self.query(x).view(N, T, self.n_head, hd).transpose(1, 2)
        k = self.key(x).view(N, T, self.n_head, hd).transpose(1, 2)
        v = self.value(x).view(N, T, self.n_head, hd).transpose(1, 2)
        if cache is not None:
            kc, vc = cache
            kc[:, :, pos : pos + T] = k
            vc[:, :, pos : pos + T] = v
            k, v = kc[:, :, : pos + T], vc[:, :, : pos + T]
        S = k.shape[2]
        # upstream scales k before the product and runs softmax in the model dtype
        att = torch.matmul(q, k.transpose(-2, -1) * (1.0 / math.sqrt(hd)))  # [N, nh, T, S]
        causal = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(diagonal=S - T)
        att = F.softmax(att.masked_fill(~causal, float("-inf")), dim=-1)
        y = torch.matmul(att, v).transpose(1, 2).reshape(N, T, E)
        return self.proj(y)


class Block(nn.Module):
    def __init__(self, cfg: DepthTransformerConfig):
        super().__init__()
        E = cfg.embed_dim
        self.ln1 = nn.LayerNorm(E)
        self.attn = SelfAttention(cfg)
        self.ln2 = nn.LayerNorm(E)
        self.mlp = nn.Sequential(nn.Linear(E, 4 * E), nn.GELU(), nn.Linear(4 * E, E))

    def forward(self, x, cache=None, pos=0):
        x = x + self.attn(self.ln1(x), cache, pos)
        return x + self.mlp(self.ln2(x))


class AttentionStack(nn.Module):
    def __init__(self, cfg: DepthTransformerConfig):
        super().__init__()
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))


class DepthTransformer(nn.Module):
    def __init__(self, cfg: DepthTransformerConfig):
        super().__init__()
        self.cfg = cfg
        E = cfg.embed_dim
        self.in_mlp_1 = nn.Linear(cfg.code_dim, E)
        self.in_mlp_2 = nn.Linear(cfg.llm_dim, E)
        self.head_transformer = AttentionStack(cfg)
        self.pos_emb_d = nn.Parameter(torch.zeros(1, cfg.depth, E))
        self.classifier_mlp = nn.Sequential(
            OrderedDict(layer_norm=nn.LayerNorm(E), linear=nn.Linear(E, cfg.vocab_size))
        )

    def forward(self, hidden: torch.Tensor, code_cumsum: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits: hidden [N, H], code_cumsum [N, D, C] -> [N, D, V]."""
        D = code_cumsum.shape[1]
        x = torch.cat([self.in_mlp_2(hidden)[:, None], self.in_mlp_1(code_cumsum[:, :-1])], dim=1)
        x = x + self.pos_emb_d[:, :D]
        for block in self.head_transformer.blocks:
            x = block(x)
        return self.classifier_mlp(x)

    def new_cache(self, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        cfg, p = self.cfg, self.pos_emb_d
        shape = (n, cfg.n_head, cfg.depth, cfg.embed_dim // cfg.n_head)
        return [
            (p.new_empty(shape), p.new_empty(shape))
            for _ in range(len(self.head_transformer.blocks))
        ]

    def step(self, x: torch.Tensor, cache, depth: int) -> torch.Tensor:
        """One depth position: input embedding x [N, E] (before pos_emb) -> logits [N, V]."""
        h = (x + self.pos_emb_d[:, depth]).unsqueeze(1)
        for block, kv in zip(self.head_transformer.blocks, cache):
            h = block(h, kv, depth)
        return self.classifier_mlp(h[:, 0])

    @torch.no_grad()
    def generate(
        self,
        hidden: torch.Tensor,
        code_embedding: Callable[[int, torch.Tensor], torch.Tensor],
        cfg_scale: float,
        sample: Callable[[torch.Tensor], torch.Tensor],
        on_logits: Callable[[int, torch.Tensor], None] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes of one position with classifier-free guidance.

        hidden [2n, H]: rows [conditional..., unconditional...]. ``code_embedding(d, codes [n])``
        returns codebook d's rows [n, C]; ``sample(logits [n, V])`` picks codes [n]. Returns codes
        [n, D] (shared by both halves) and their summed embedding [n, C].
        """
        N = hidden.shape[0]
        if N % 2:
            raise ValueError(f"CFG needs [cond, uncond] rows, got an odd batch of {N}")
        n, D = N // 2, self.cfg.depth
        cache = self.new_cache(N)
        x = self.in_mlp_2(hidden)
        codes = torch.empty(n, D, dtype=torch.long, device=hidden.device)
        embeds = []
        for d in range(D):
            logits = self.step(x, cache, d)  # [2n, V]
            if on_logits is not None:
                on_logits(d, logits)
            codes[:, d] = sample(guided_logits(logits, cfg_scale))
            embeds.append(code_embedding(d, codes[:, d]))
            # upstream forms the running sum with cumsum in the model dtype
            running = torch.stack(embeds, dim=1).cumsum(dim=1)[:, -1]  # [n, C]
            if d + 1 < D:
                x = self.in_mlp_1(running).repeat(2, 1)
        return codes, running
