"""The native backend's CPU decode step: every LLM layer of a T = 1 step in one native call.

``_C.LlamaDecoder`` (csrc/decode) runs RMSNorm, the fused q/k/v GEMV, RoPE, the KV-cache write,
attention over the filled slots, the o GEMV, the fused gate/up GEMV, SiLU and the down GEMV of
every layer, then the final norm, without returning to Python: the op-by-op step spends ~45
framework ops per layer around its GEMVs (bench/RESULTS.md). This module builds one from a
model's float32 ``nn.Linear``, ``Linear16`` (16-bit weights, model/linear16.py) or CPU
``W4A16Linear`` layers (float q/k/v and gate/up as the checkpoint maps them, W4A16 ones through
the backend's fused packed GEMV, or, when the backend runs with int8 activations, through their
W4A8 copies) and points it at the backend's KV cache.

The decoder holds addresses: ``CpuDecoder`` keeps every tensor it handed over alive, and, like
the backend's fused linears, serves the weights it was built with.
"""

from __future__ import annotations

import torch

from ..model.awq import W4A16Linear
from ..model.linear16 import Linear16
from ..ops import kernels


class CpuDecoder:
    """A ``_C.LlamaDecoder`` over a model's LLM, or the reason it cannot be built (``of``)."""

    def __init__(self, decoder, keep: list[torch.Tensor]):
        self._decoder = decoder
        self._keep = keep  # every tensor whose address the decoder holds
        self._cache: tuple = ()

    @classmethod
    @torch.no_grad()
    def of(cls, llm, fused_layers, w4a8_layers=None) -> tuple[CpuDecoder | None, str]:
        """(decoder, "") for a CPU float32 LLM of float32 ``nn.Linear``, ``Linear16`` or
        ``W4A16Linear`` layers (q/k/v and gate/up fused where ``fused_layers`` has them; a layer with an entry
        in ``w4a8_layers``, {module: ``W4A8Weights``}, runs that), else (None, why not)."""
        cfg = llm.config
        norm = llm.model.norm.weight
        if norm.device.type != "cpu" or norm.dtype != torch.float32:
            return None, f"the LLM is {norm.dtype} on {norm.device}, the decoder needs CPU float32"
        ext = kernels._native()
        keep: list[torch.Tensor] = []

        def addr(t: torch.Tensor) -> int:
            t = t.detach()
            if not t.is_contiguous():
                raise _NotServed("a weight is not contiguous")
            keep.append(t)
            return t.data_ptr()

        def linear(module):
            w = (w4a8_layers or {}).get(module)
            if w is not None:
                bias = 0 if w.bias is None else addr(w.bias)
                return ext.DecodeLinear.w4a8(
                    addr(w.codes), addr(w.zeros), addr(w.scales), bias, w.n, w.k, w.group_size
                )
            if type(module) is torch.nn.Linear and module.weight.dtype == torch.float32:
                bias = 0 if module.bias is None else addr(module.bias)
                n, k = module.weight.shape
                return ext.DecodeLinear.float32(addr(module.weight), bias, n, k)
            if type(module) is Linear16 and module.weight.device.type == "cpu":
                bias = 0 if module.bias is None else addr(module.bias)
                n, k = module.weight.shape
                code = kernels._DTYPE_CODES[module.weight.dtype]
                return ext.DecodeLinear.w16(addr(module.weight), code, bias, n, k)
            if isinstance(module, W4A16Linear) and module.qweight.device.type == "cpu":
                bias = 0 if module.bias is None else addr(module.bias)
                return ext.DecodeLinear.w4a16_packed(
                    addr(module.packed_weight()), addr(module.qzeros), addr(module.scales), bias,
                    module.out_features, module.in_features, module.group_size,
                )  # fmt: skip
            raise _NotServed(f"{type(module).__name__} linears")

        def parts(fused, *modules):
            """The backend's fused packed W4A16 GEMV, or the modules side by side (on the CPU
            only W4A16 layers are fused, see native_linears._FusedLinear)."""
            if fused is None or any(m in (w4a8_layers or {}) for m in modules):
                return [linear(m) for m in modules]
            first = fused.linears[0]
            return [
                ext.DecodeLinear.w4a16_packed(
                    addr(fused.packed), addr(fused.qzeros), addr(fused.scales), 0,
                    sum(fused.sizes), first.in_features, first.group_size,
                )
            ]  # fmt: skip

        try:
            decoder = ext.LlamaDecoder(
                cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim,
                cfg.intermediate_size, float(llm.model.norm.eps), addr(norm),
            )  # fmt: skip
            for layer, fused in zip(llm.model.layers, fused_layers):
                attn, mlp = layer.self_attn, layer.mlp
                decoder.add_layer(
                    addr(layer.input_layernorm.weight), addr(layer.post_attention_layernorm.weight),
                    parts(fused.qkv, attn.q_proj, attn.k_proj, attn.v_proj), linear(attn.o_proj),
                    parts(fused.gate_up, mlp.gate_proj, mlp.up_proj), linear(mlp.down_proj),
                )  # fmt: skip
        except (_NotServed, ValueError) as e:  # ValueError: the C++ checks (invalid_argument)
            return None, str(e)
        return cls(decoder, keep), ""

    @property
    def max_batch(self) -> int:
        """Rows a step serves: the float GEMV's limit, or for packed W4A16 layers the rows
        below which the packed GEMV beats BLAS (``kernels.W4A16_CPU_BLAS_MIN_M``)."""
        return min(self._decoder.max_batch, kernels.W4A16_CPU_BLAS_MIN_M - 1)

    def release_cache(self) -> None:
        """Let go of the KV cache (the backend frees it before allocating the next one); steps
        are refused until ``set_cache``."""
        self._cache = ()

    def set_cache(self, k_caches: list[torch.Tensor], v_caches: list[torch.Tensor]) -> None:
        """Point every layer at its cache, float32 [B, kv_heads, L, head_dim] (kept alive)."""
        for i, (k, v) in enumerate(zip(k_caches, v_caches)):
            if k.dtype != torch.float32 or not k.is_contiguous() or not v.is_contiguous():
                raise ValueError(f"layer {i} KV cache must be contiguous float32")
            self._decoder.set_cache(i, k.data_ptr(), v.data_ptr(), k.shape[0], k.shape[2])
        self._cache = (list(k_caches), list(v_caches))

    def step(self, x, cos, sin, valid, slot: int) -> torch.Tensor:
        """x [B, 1, H] at cache slot ``slot``; cos, sin [B, head_dim]; valid bool [B, L] ->
        the final-normed hidden [B, 1, H]."""
        if not self._cache:
            raise RuntimeError("CpuDecoder.step: no KV cache (set_cache first)")
        x = x.contiguous()
        cos, sin = cos.contiguous(), sin.contiguous()
        out = torch.empty_like(x)
        B = x.shape[0]
        self._decoder.step(
            x.data_ptr(), out.data_ptr(), B, cos.data_ptr(), sin.data_ptr(), valid.data_ptr(),
            valid.stride(0), slot, torch.get_num_threads(),
        )  # fmt: skip
        return out


class _NotServed(Exception):
    pass
