"""LLaMA decoder with a static KV cache (the VILA-U language model).

| name           | shape          | dtype          | notes                                          |
|----------------|----------------|----------------|------------------------------------------------|
| inputs_embeds  | [B, T, H]      | model dtype    | token or projected image embeddings            |
| rope_pos       | [B, T]         | int64          | RoPE positions, per row (left padding shifts)  |
| cache_pos      | int            |                | first KV-cache slot written by this call       |
| key_valid      | [B, S] or None | bool           | False on padding slots (never attended to)     |
| returns        | [B, T, H]      | model dtype    | hidden states after the final RMSNorm          |

Module names equal the Hugging Face ``LlamaForCausalLM`` keys (``model.layers.{i}.self_attn.q_proj``
...), so the official ``llm/`` safetensors load with strict key matching. The arithmetic follows
transformers 4.36 as patched by VILA-U: RMSNorm in float32, RoPE tables built in float32 then cast,
attention softmax in float32, logits cast to float32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .fields import check_fields


@dataclass
class LlamaConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    max_position_embeddings: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None  # {"type": "linear" | "dynamic", "factor": float}
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    hidden_act: str = "silu"
    bos_token_id: int = 1
    eos_token_id: int = 2
    pad_token_id: int = 0
    model_max_length: int | None = None
    extra: dict = field(
        default_factory=dict, repr=False
    )  # the rest of the HF config, kept verbatim

    def __post_init__(self):
        check_fields(self, "llm/config.json")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"LLaMA hidden_size {self.hidden_size} is not divisible by "
                f"num_attention_heads {self.num_attention_heads}"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(
                f"LLaMA num_attention_heads {self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads {self.num_key_value_heads}"
            )
        if self.hidden_act != "silu":
            raise ConfigError(
                f"LLaMA hidden_act {self.hidden_act!r} is not supported (only 'silu')"
            )
        if self.rope_scaling is not None:
            kind = self.rope_scaling.get("type", self.rope_scaling.get("rope_type"))
            if kind not in ("linear", "dynamic") or "factor" not in self.rope_scaling:
                raise ConfigError(
                    f"LLaMA rope_scaling {self.rope_scaling} is not supported: VILA-U uses "
                    "{'type': 'linear' | 'dynamic', 'factor': F} or null"
                )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def rope_kind(self) -> str | None:
        if self.rope_scaling is None:
            return None
        return self.rope_scaling.get("type", self.rope_scaling.get("rope_type"))

    @property
    def context_length(self) -> int:
        """The longest sequence the model was trained for (prompt + generated tokens)."""
        if self.model_max_length:
            return int(self.model_max_length)
        if self.rope_kind == "linear":
            return int(self.max_position_embeddings * float(self.rope_scaling["factor"]))
        return self.max_position_embeddings

    @classmethod
    def from_hf(cls, d: dict) -> LlamaConfig:
        """Parse an HF ``LlamaConfig`` dict (``llm/config.json``)."""
        required = (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "max_position_embeddings",
        )
        missing = [k for k in required if k not in d]
        if missing:
            raise ConfigError(f"llm/config.json lacks {missing}")
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        kwargs = {k: d[k] for k in known if k in d and d[k] is not None}
        kwargs.setdefault("num_key_value_heads", d["num_attention_heads"])
        if isinstance(kwargs.get("eos_token_id"), list):
            kwargs["eos_token_id"] = kwargs["eos_token_id"][0]
        kwargs["extra"] = {k: v for k, v in d.items() if k not in known}
        return cls(**kwargs)

    def to_hf(self) -> dict:
        d = dict(self.extra)
        for k in self.__dataclass_fields__:
            if k != "extra":
                d[k] = getattr(self, k)
        d.setdefault("architectures", ["LlamaForCausalLM"])
        d.setdefault("model_type", "llama")
        return d


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


class RotaryEmbedding(nn.Module):
    """cos/sin tables [S, head_dim], built in float32 as transformers 4.36 does."""

    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.cfg = cfg
        self.dim = cfg.head_dim
        self._len = 0  # the length the current tables were built for
        self.register_buffer("cos", torch.empty(0), persistent=False)
        self.register_buffer("sin", torch.empty(0), persistent=False)

    def _inv_freq(self, base: float, device) -> torch.Tensor:
        exps = torch.arange(0, self.dim, 2, device=device).float() / self.dim
        return 1.0 / (base**exps)

    def build(self, length: int, device) -> None:
        cfg = self.cfg
        base = cfg.rope_theta
        kind = cfg.rope_kind
        if kind == "dynamic" and length > cfg.max_position_embeddings:
            f = float(cfg.rope_scaling["factor"])
            ratio = f * length / cfg.max_position_embeddings - (f - 1)
            base = base * ratio ** (self.dim / (self.dim - 2))
        inv_freq = self._inv_freq(base, device)
        t = torch.arange(length, device=device, dtype=torch.float32)
        if kind == "linear":
            t = t / float(cfg.rope_scaling["factor"])
        freqs = torch.outer(t, inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        self.cos, self.sin = emb.cos(), emb.sin()
        self._len = length

    def forward(self, rope_pos: torch.Tensor, total_len: int, dtype: torch.dtype):
        """Tables gathered at ``rope_pos`` [B, T] -> cos, sin [B, 1, T, head_dim] in ``dtype``."""
        need = max(total_len, int(rope_pos.max()) + 1)
        if self.cfg.rope_kind == "dynamic":
            # transformers 4.36 rebuilds the table (with a larger base) whenever the sequence
            # grows past what it has cached, and keeps it afterwards.
            if need > max(self._len, self.cfg.max_position_embeddings) or self._len == 0:
                self.build(max(need, self.cfg.max_position_embeddings), rope_pos.device)
        elif need > self._len or self.cos.device != rope_pos.device:
            self.build(max(need, self.cfg.max_position_embeddings), rope_pos.device)
        cos = self.cos[rope_pos].to(dtype).unsqueeze(1)
        sin = self.sin[rope_pos].to(dtype).unsqueeze(1)
        return cos, sin


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class KVCache(nn.Module):
    """Static cache [B, n_kv_heads, S, head_dim], allocated once and written in place."""

    def __init__(self, batch: int, n_kv_heads: int, length: int, head_dim: int, dtype, device):
        super().__init__()
        shape = (batch, n_kv_heads, length, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(self, cache_pos: int, k: torch.Tensor, v: torch.Tensor):
        """Write k, v [B, n_kv, T, hd] at slots cache_pos.. and return the filled prefix."""
        end = cache_pos + k.shape[2]
        self.k[:, :, cache_pos:end] = k
        self.v[:, :, cache_pos:end] = v
        return self.k[:, :, :end], self.v[:, :, :end]


class LlamaAttention(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.n_head, self.n_kv, self.head_dim = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
        )
        bias = cfg.attention_bias
        self.q_proj = nn.Linear(cfg.hidden_size, self.n_head * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(cfg.hidden_size, self.n_kv * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(cfg.hidden_size, self.n_kv * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.n_head * self.head_dim, cfg.hidden_size, bias=bias)
        self.kv_cache: KVCache | None = None

    def forward(self, x, cos, sin, cache_pos: int, mask):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if self.kv_cache is not None:
            k, v = self.kv_cache.update(cache_pos, k, v)  # [B, n_kv, S, hd]
        return self.o_proj(attend(q, k, v, mask))


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """q [B, nh, T, hd], k/v [B, n_kv, S, hd], mask [B|1, 1, T, S] -> [B, T, nh*hd].

    Scores in the model dtype, softmax in float32 (transformers 4.36 eager attention); grouped
    KV heads are repeated to the query heads.
    """
    B, n_head, T, hd = q.shape
    if k.shape[1] != n_head:
        k = k.repeat_interleave(n_head // k.shape[1], dim=1)
        v = v.repeat_interleave(n_head // v.shape[1], dim=1)
    att = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(hd)  # [B, nh, T, S]
    att = att.masked_fill(~mask, torch.finfo(att.dtype).min)
    att = F.softmax(att, dim=-1, dtype=torch.float32).to(q.dtype)
    return torch.matmul(att, v).transpose(1, 2).reshape(B, T, -1)


class LlamaMLP(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = LlamaAttention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = LlamaMLP(cfg)

    def forward(self, x, cos, sin, cache_pos, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache_pos, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(LlamaDecoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class LlamaForCausalLM(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.config = cfg
        self.model = LlamaModel(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.rotary = RotaryEmbedding(cfg)
        self.cache_batch = 0
        self.cache_len = 0

    # -- cache -------------------------------------------------------------------------
    def setup_cache(self, batch: int, length: int) -> None:
        """Allocate the static KV cache once; later calls with a fitting size reuse it."""
        if length > self.config.context_length:
            raise ValueError(
                f"KV cache length {length} exceeds the model context {self.config.context_length}"
            )
        if batch == self.cache_batch and length <= self.cache_len:
            return
        p = self.model.norm.weight  # the compute dtype (an lm_head may keep 16 bits: Linear16)
        for layer in self.model.layers:
            layer.self_attn.kv_cache = KVCache(
                batch,
                self.config.num_key_value_heads,
                length,
                self.config.head_dim,
                p.dtype,
                p.device,
            )
        self.cache_batch, self.cache_len = batch, length

    def drop_cache(self) -> None:
        for layer in self.model.layers:
            layer.self_attn.kv_cache = None
        self.cache_batch = self.cache_len = 0

    # -- forward -----------------------------------------------------------------------
    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.embed_tokens(ids)

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        rope_pos: torch.Tensor,
        cache_pos: int = 0,
        key_valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run the decoder stack; returns hidden states after the final norm [B, T, H]."""
        T = inputs_embeds.shape[1]
        total = cache_pos + T
        if self.model.layers and self.model.layers[0].self_attn.kv_cache is None:
            if cache_pos:
                raise RuntimeError("cache_pos > 0 needs a KV cache: call setup_cache() first")
        elif total > self.cache_len:
            raise ValueError(
                f"sequence of {total} tokens does not fit the KV cache of {self.cache_len}"
            )
        mask = attention_mask(cache_pos, T, key_valid, inputs_embeds.device)  # [B|1, 1, T, S]
        cos, sin = self.rotary(rope_pos, total, inputs_embeds.dtype)
        x = inputs_embeds
        for layer in self.model.layers:
            x = layer(x, cos, sin, cache_pos, mask)
        return self.model.norm(x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden).float()


def attention_mask(cache_pos: int, T: int, key_valid: torch.Tensor | None, device) -> torch.Tensor:
    """Causal mask over cache slots [0, cache_pos + T), AND the per-row key validity."""
    S = cache_pos + T
    q_slot = torch.arange(cache_pos, S, device=device).unsqueeze(1)
    k_slot = torch.arange(S, device=device).unsqueeze(0)
    mask = (k_slot <= q_slot).view(1, 1, T, S)
    if key_valid is not None:
        mask = mask & key_valid[:, :S].view(-1, 1, 1, S).to(torch.bool)
    return mask
