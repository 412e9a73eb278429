"""The LLM linears of the native backend: how each runs, and the copies it keeps for that.

| helper                 | what it does                                                     |
|------------------------|------------------------------------------------------------------|
| ``_linear``            | one linear: ``native.linear`` for float / ``Linear16``; the      |
|                        | packed W4A16 GEMV for ``W4A16Linear`` where it serves x, else    |
|                        | the module's own forward                                         |
| ``_FusedLayer``        | q/k/v and gate/up of a layer as one matmul each                  |
| ``_w4a8_layers``       | the W4A8 copies ``int8_activations`` runs                        |
| ``_lm_head_16bit``     | an exact 16-bit copy of a float32 lm_head for decode             |
| ``quantize_llm_linears`` | round-to-nearest INT4 in place (``quantize_llm=True``)         |

``NativeBackend`` (native_backend.py) runs them for prefill and the op-by-op step; the C++
decode step (cpu_decoder.py) reads the same fused weights.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from ..errors import BackendError
from ..model.awq import AWQConfig, W4A16Linear, quantized_linear_names
from ..model.linear16 import Linear16
from ..ops import kernels, native, w4a8


@torch.no_grad()
def _w4a8_layers(llm, device) -> dict:
    """{W4A16Linear: its W4A8Weights} for every INT4 linear of a CPU float32 LLM; BackendError
    naming what stands in the way otherwise."""
    need = "int8_activations runs an INT4 (AWQ) LLM on the CPU"
    if device.type != "cpu" or llm.model.norm.weight.dtype != torch.float32:
        raise BackendError(
            f"{need} in float32; this one is {llm.model.norm.weight.dtype} on {device}"
        )
    out = {}
    for name, m in llm.named_modules():
        if not isinstance(m, W4A16Linear):
            continue
        if m.out_features % 16 or m.group_size % 32 or m.in_features % 32:
            raise BackendError(
                f"int8_activations: {name} is [{m.out_features}, {m.in_features}] with group size "
                f"{m.group_size}; the W4A8 GEMV needs out_features % 16, in_features % 32 and "
                "group_size % 32 to be 0 (run without int8_activations)"
            )
        out[m] = w4a8.W4A8Weights.from_awq(m.qweight, m.qzeros, m.scales, m.bias, m.group_size)
    if not out:
        raise BackendError(
            f"{need}; this LLM has no INT4 layers (quantize it: vilau-rt quantize, or "
            "NativeBackend.from_model(model, quantize_llm=True))"
        )
    return out


def _is_float_linear(module) -> bool:
    """An ``nn.Linear`` or a ``Linear16`` (16-bit weight, float32 arithmetic): the linears
    ``native.linear`` computes."""
    return type(module) is torch.nn.Linear or type(module) is Linear16


def _lm_head_16bit(head) -> torch.Tensor | None:
    """A float16 / bfloat16 copy of a CPU float32 lm_head whose values that dtype holds exactly
    (a checkpoint saved in 16 bits, e.g. AWQ's fp16 lm_head, loaded as float32), or None. Decode
    steps read it instead: the same logits bit for bit (``native.linear``), half the bytes; the
    float32 weight stays for prefill and for other backends over the model. A ``Linear16``
    lm_head (loaded with keep_16bit) is read as it is: None."""
    w = head.weight
    if type(head) is not torch.nn.Linear or w.device.type != "cpu" or w.dtype != torch.float32:
        return None
    dtype = native.exact_16bit(w)
    return None if dtype is None else w.detach().to(dtype).contiguous()


def _linear(module, x):
    """One linear of a decode step: float ``nn.Linear`` and ``Linear16`` through
    ``native.linear`` (the float32 GEMV / GEMM, 16-bit weights widened in registers),
    ``W4A16Linear`` through ``_w4a16_packed`` where its packed CPU GEMV serves x."""
    if _is_float_linear(module):
        return native.linear(x, module.weight, module.bias)
    if isinstance(module, W4A16Linear) and module.uses_packed(x):
        return _w4a16_packed(x, module.packed_weight(), module.qzeros, module.scales, module.bias,
                             module.group_size)  # fmt: skip
    return module(x)


def _w4a16_packed(x, packed, qzeros, scales, bias, group_size):
    """``kernels.w4a16_linear_packed`` without the custom-op dispatch and checks (a decode step
    makes ~7 calls per layer; the backend built these buffers itself)."""
    y = torch.empty(*x.shape[:-1], packed.shape[0] * 8, dtype=x.dtype)
    kernels.run_w4a16_packed(y, x, packed, qzeros, scales, bias, group_size)
    return y


class _FusedLinear:
    """Linears that read the same input (q/k/v; gate/up) as one matmul, outputs split back.

    Float ``nn.Linear`` on CUDA: one [sum N, K] weight; the model's linears keep working, their
    weights become row views of it (no memory duplicated; a torch backend over the same model
    sees the same values). Not on the CPU (see ``of``).

    ``W4A16Linear`` (CPU, group % 32 == 0): one packed weight for the CPU GEMV built from the
    concatenated codes (the layers' own packed caches are then never built); rows the packed
    GEMV does not serve (prefill) go through the layers one by one. The packed codes are read
    when the backend is built: a backend serves the INT4 weights it was created with."""

    def __init__(self, linears, weight=None, bias=None, packed=None, qzeros=None, scales=None):
        self.linears = linears
        self.sizes = [m.out_features for m in linears]
        self.weight, self.bias = weight, bias
        self.packed, self.qzeros, self.scales = packed, qzeros, scales

    @classmethod
    @torch.no_grad()
    def of(cls, linears) -> _FusedLinear | None:
        """The fused form, or None when the linears differ in kind, dtype, device, K or group."""
        first = linears[0]
        if all(type(m) is torch.nn.Linear for m in linears):
            if first.weight.device.type == "cpu":
                # CPU weights are mapped from the checkpoint file: a fused copy would hold them
                # twice (+18 GB for a float32 7B); the CPU decode step reads the parts in place.
                return None
            w0 = first.weight
            if any(m.weight.dtype != w0.dtype or m.weight.device != w0.device for m in linears):
                return None
            if len({m.bias is None for m in linears}) != 1:
                return None
            bias = None if first.bias is None else _fuse_rows(linears, "bias")
            return cls(linears, weight=_fuse_rows(linears, "weight"), bias=bias)
        if not all(isinstance(m, W4A16Linear) for m in linears):
            return None
        if len({(m.in_features, m.group_size, m.qweight.device.type) for m in linears}) != 1:
            return None
        if first.qweight.device.type != "cpu" or first.group_size % 32:  # packed: G % 32 == 0
            return None
        if any(m.bias is not None for m in linears):
            return None
        cat = functools.partial(torch.cat, dim=1)
        return cls(
            linears,
            packed=kernels.w4a16_repack(cat([m.qweight for m in linears])),
            qzeros=cat([m.qzeros for m in linears]).contiguous(),
            scales=cat([m.scales for m in linears]).contiguous(),
        )

    def __call__(self, x) -> list[torch.Tensor]:
        if self.weight is not None:
            return native.linear(x, self.weight, self.bias).split(self.sizes, dim=-1)
        if self.linears[0].uses_packed(x):
            g = self.linears[0].group_size
            y = _w4a16_packed(x, self.packed, self.qzeros, self.scales, None, g)
            return y.split(self.sizes, dim=-1)
        return [m(x) for m in self.linears]


@dataclass
class _FusedLayer:
    """A decoder layer's q/k/v and gate/up, each fused when possible (see _FusedLinear)."""

    qkv: _FusedLinear | None
    gate_up: _FusedLinear | None

    @classmethod
    def of(cls, layer) -> _FusedLayer:
        attn, mlp = layer.self_attn, layer.mlp
        return cls(
            _FusedLinear.of([attn.q_proj, attn.k_proj, attn.v_proj]),
            _FusedLinear.of([mlp.gate_proj, mlp.up_proj]),
        )


def _fuse_rows(linears, name: str) -> torch.Tensor:
    """Concatenate the linears' ``name`` tensors along dim 0 and make each a view of its rows.
    Tensors that already lie back to back in one storage (a second backend over the same model)
    are returned as one view of it, without a copy."""
    parts = [getattr(m, name).detach() for m in linears]
    rows = sum(p.shape[0] for p in parts)
    first = parts[0]
    step = first.element_size()
    offset, adjacent = first.data_ptr(), True
    for p in parts:
        adjacent &= p.is_contiguous() and p.data_ptr() == offset
        adjacent &= p.untyped_storage().data_ptr() == first.untyped_storage().data_ptr()
        offset += p.numel() * step
    if adjacent:
        return first.new_empty(0).set_(
            first.untyped_storage(), first.storage_offset(), (rows, *first.shape[1:])
        )
    fused = torch.cat(parts)
    start = 0
    for m, p in zip(linears, parts):
        stop = start + p.shape[0]
        setattr(m, name, torch.nn.Parameter(fused[start:stop], requires_grad=False))
        start = stop
    return fused


@torch.no_grad()
def quantize_llm_linears(llm, group_size: int = 128) -> None:
    """Replace the LLM's quantizable linears by RTN-quantized ``W4A16Linear``, one at a time
    (each float weight is freed as soon as its replacement exists)."""
    for name in quantized_linear_names(llm, AWQConfig(group_size=group_size)):
        parent_name, child = name.rsplit(".", 1)
        parent = llm.get_submodule(parent_name)
        lin = getattr(parent, child)
        if type(lin) is Linear16:  # quantized from its float32 values, as a float32 load would be
            lin = lin.widened()
        setattr(parent, child, W4A16Linear.from_linear(lin, group_size))
