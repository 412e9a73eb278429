"""The modules exported as ONNX graphs: thin wrappers over the parts of a loaded ``VilaU``.

| graph          | inputs                                                     | outputs |
|----------------|------------------------------------------------------------|---------|
| vision         | pixel_values [B, 3, S, S] float32                          | codes [B, h, w, D] int64, embeds [B, h*w, H] |
| pixel_decoder  | codes [B, h, w, D] int64                                   | pixels [B, 3, Hi, Wi] (raw, ~[-1, 1]) |
| llm_*          | inputs_embeds [B, T, H], rope_pos [B, T] int64, write_index [B] int64, key_valid [B, S] bool, past_{key,value}_{i} [B, n_kv, S, hd] | hidden [B, T, H], present_{key,value}_{i} |
| lm_head        | hidden [N, H]                                              | logits [N, V] float32 |
| depth_decode   | hidden [2n, H], cfg_scale, temperature, top_k, top_p, seed, forced_codes [n, D] | codes [n, D], next_embeds [n, H], logits [D, 2n, V] |

Custom-op operands (features, codebooks, depth weights) are float32 in every precision: the
ONNX Runtime route runs the ``vilau`` ops as Python ops, which move float32 only.

The LLM wrapper restates ``LlamaAttention.forward`` around an explicit cache: the new keys and
values are written with ``kv_cache_write`` (ONNX ``TensorScatter``; ``ScatterElements`` for the
tensorrt target, same inputs and outputs) at ``write_index`` and the
attention reads the whole static buffer [0, S) under the mask ``causal AND key_valid``; the
slots past the current position are masked, so the sums equal the reference's over [0, pos + T).
"""

from __future__ import annotations

import torch
from torch import nn

from vilau_rt.errors import ConfigError
from vilau_rt.model.llama import LlamaForCausalLM, RotaryEmbedding, attend, rotate_half
from vilau_rt.model.vilau import VilaU
from vilau_rt.ops.depth_decode import pack_depth_weights

from .ops import kv_cache_write

OPS_DTYPE = torch.float32


class VisionGraph(nn.Module):
    def __init__(self, model: VilaU):
        super().__init__()
        cfg = model.cfg
        self.vision_tower = model.vision_tower
        self.mm_projector = model.mm_projector
        self.register_buffer(
            "codebooks", model.quantizer.stacked_codebooks().detach().to(OPS_DTYPE)
        )
        self.grid, self.n_embed, self.depth = cfg.grid, cfg.rvq.n_embed, cfg.rvq.depth
        self.dtype = model.dtype

    def forward(self, pixel_values):
        B = pixel_values.shape[0]
        h, w = self.grid
        feats = self.vision_tower(pixel_values.to(self.dtype))  # [B, h*w, C]
        codes, z_q = torch.ops.vilau.rvq_encode(
            feats.view(B, h, w, -1).to(OPS_DTYPE), self.codebooks, self.n_embed, self.depth
        )
        return codes, self.mm_projector(z_q.to(self.dtype).flatten(1, 2))


class PixelDecoderGraph(nn.Module):
    def __init__(self, model: VilaU):
        super().__init__()
        self.pixel_decoder = model.pixel_decoder
        self.register_buffer(
            "codebooks", model.quantizer.stacked_codebooks().detach().to(OPS_DTYPE)
        )
        self.dtype = model.dtype

    def forward(self, codes):
        z = torch.ops.vilau.rvq_lookup(codes, self.codebooks)  # [B, h, w, C]
        return self.pixel_decoder(z.to(self.dtype))


class LlmGraph(nn.Module):
    def __init__(self, llm: LlamaForCausalLM):
        super().__init__()
        cfg = llm.config
        self.layers = llm.model.layers
        self.norm = llm.model.norm
        self.n_head, self.n_kv, self.head_dim = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
        )
        length = cfg.context_length
        if cfg.rope_kind == "dynamic" and length > cfg.max_position_embeddings:
            # dynamic NTK changes every table entry once a sequence passes max_position_embeddings;
            # one fixed table cannot follow it
            raise ConfigError(
                f"rope_scaling {cfg.rope_scaling} with a context of {length} > "
                f"max_position_embeddings {cfg.max_position_embeddings} cannot be exported to "
                "ONNX (one fixed RoPE table); use the torch backend"
            )
        rotary = RotaryEmbedding(cfg)
        rotary.build(max(length, cfg.max_position_embeddings), "cpu")
        dtype = llm.lm_head.weight.dtype
        self.register_buffer("rope_cos", rotary.cos.to(dtype))
        self.register_buffer("rope_sin", rotary.sin.to(dtype))

    def forward(self, inputs_embeds, rope_pos, write_index, key_valid, *past):
        T, S = inputs_embeds.shape[1], key_valid.shape[1]
        q_slot = write_index.unsqueeze(1) + torch.arange(T, device=write_index.device)  # [B, T]
        k_slot = torch.arange(S, device=write_index.device)
        mask = (k_slot.view(1, 1, S) <= q_slot.unsqueeze(2)) & key_valid.unsqueeze(1)
        mask = mask.unsqueeze(1)  # [B, 1, T, S]
        cos = self.rope_cos[rope_pos].unsqueeze(1)  # [B, 1, T, hd]
        sin = self.rope_sin[rope_pos].unsqueeze(1)
        x, presents = inputs_embeds, []
        for i, layer in enumerate(self.layers):
            h, kv = self._attention(
                layer.self_attn, layer.input_layernorm(x), cos, sin, write_index, mask, past[2 * i],
                past[2 * i + 1],
            )  # fmt: skip
            presents += kv
            x = x + h
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return (self.norm(x), *presents)

    def _attention(self, attn, x, cos, sin, write_index, mask, past_k, past_v):
        B, T, _ = x.shape
        q = attn.q_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k = attn.k_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
        v = attn.v_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k_all = torch.ops.vilau.kv_cache_write(past_k, k, write_index)  # [B, n_kv, S, hd]
        v_all = torch.ops.vilau.kv_cache_write(past_v, v, write_index)
        return attn.o_proj(attend(q, k_all, v_all, mask)), [k_all, v_all]


class LmHeadGraph(nn.Module):
    def __init__(self, llm: LlamaForCausalLM):
        super().__init__()
        self.lm_head = llm.lm_head

    def forward(self, hidden):
        return self.lm_head(hidden).float()


class DepthDecodeGraph(nn.Module):
    def __init__(self, model: VilaU):
        super().__init__()
        self.cfg = model.cfg.depth
        self.mm_projector = model.mm_projector
        self.register_buffer("weights", pack_depth_weights(model.depth_transformer).to(OPS_DTYPE))
        self.register_buffer(
            "codebooks", model.quantizer.stacked_codebooks().detach().to(OPS_DTYPE)
        )
        self.dtype = model.dtype

    def forward(self, hidden, cfg_scale, temperature, top_k, top_p, seed, forced_codes):
        c = self.cfg
        codes, logits = torch.ops.vilau.depth_decode(
            hidden.to(OPS_DTYPE), self.weights, self.codebooks, cfg_scale, temperature, top_k,
            top_p, seed, forced_codes, c.n_layer, c.n_head, c.embed_dim, c.depth,
        )  # fmt: skip
        summed = torch.ops.vilau.rvq_lookup(codes, self.codebooks)  # [n, C]
        return codes, self.mm_projector(summed.to(self.dtype)), logits


# kv_cache_write is imported for its registration of torch.ops.vilau.kv_cache_write
__all__ = [
    "DepthDecodeGraph",
    "LlmGraph",
    "LmHeadGraph",
    "PixelDecoderGraph",
    "VisionGraph",
    "kv_cache_write",
]
