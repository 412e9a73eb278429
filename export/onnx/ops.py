"""How our torch ops become ONNX nodes.

| torch op                     | ONNX node                 | notes                                      |
|------------------------------|---------------------------|--------------------------------------------|
| ``vilau::rvq_encode``        | ``vilau::RVQEncode``      | attributes n_embed, depth                  |
| ``vilau::rvq_lookup``        | ``vilau::RVQLookup``      |                                            |
| ``vilau::depth_decode``      | ``vilau::DepthDecode``    | attributes n_layer, n_head, embed_dim, depth |
| ``vilau::kv_cache_write``    | ``TensorScatter`` (opset 24) | in place when past and present share a buffer |
| ``vilau::matmul_nbits``      | ``com.microsoft::MatMulNBits`` | AWQ INT4 linears (``matmul_nbits.py``)     |

The ``vilau`` schemas are registered with ``onnx.defs`` so that onnxscript can build the nodes
(it looks ops up by schema) and ``onnx.checker`` / shape inference type-check them.
"""

from __future__ import annotations

import onnx
import onnxscript
import torch
from onnx.defs import OpSchema
from torch import Tensor

# imported for their registrations: torch.ops.vilau.depth_decode, torch.ops.vilau.rvq_*
import vilau_rt.ops.depth_decode
import vilau_rt.ops.kernels  # noqa: F401

DOMAIN = "vilau"
DOMAIN_VERSION = 1
OPSET = 24  # TensorScatter (the in-place KV-cache write) is new in opset 24

_FLOATS = ["tensor(float)", "tensor(float16)", "tensor(bfloat16)"]


def _schemas() -> list[OpSchema]:
    P, A, INT = OpSchema.FormalParameter, OpSchema.Attribute, OpSchema.AttrType.INT
    floats = [("T", _FLOATS, "float tensors")]
    return [
        OpSchema(
            "RVQEncode", DOMAIN, DOMAIN_VERSION,
            doc="Residual quantization: features [..., C] -> codes [..., D], z_q [..., C].",
            inputs=[P("features", "T"), P("codebooks", "T")],
            outputs=[P("codes", "tensor(int64)"), P("z_q", "T")],
            type_constraints=floats,
            attributes=[A("n_embed", INT, "valid codes per codebook"), A("depth", INT, "D")],
        ),
        OpSchema(
            "RVQLookup", DOMAIN, DOMAIN_VERSION,
            doc="Summed code embeddings: codes [..., D] -> [..., C].",
            inputs=[P("codes", "tensor(int64)"), P("codebooks", "T")],
            outputs=[P("z", "T")],
            type_constraints=floats,
        ),
        OpSchema(
            "DepthDecode", DOMAIN, DOMAIN_VERSION,
            doc="The D codes of one image position: depth transformer, CFG and sampling.",
            inputs=[
                P("hidden", "T"), P("weights", "T"), P("codebooks", "T"),
                P("cfg_scale", "tensor(float)"), P("temperature", "tensor(float)"),
                P("top_k", "tensor(int64)"), P("top_p", "tensor(float)"),
                P("seed", "tensor(int64)"), P("forced_codes", "tensor(int64)"),
            ],
            outputs=[P("codes", "tensor(int64)"), P("logits", "tensor(float)")],
            type_constraints=floats,
            attributes=[
                A("n_layer", INT, "blocks"), A("n_head", INT, "attention heads"),
                A("embed_dim", INT, "E"), A("depth", INT, "D"),
            ],
        ),
    ]  # fmt: skip


def register_onnx_schemas() -> None:
    """Registers the ``vilau`` schemas (and MatMulNBits') with ``onnx.defs`` (idempotent)."""
    from .matmul_nbits import schema as matmul_nbits_schema

    for schema in [*_schemas(), matmul_nbits_schema()]:
        if not onnx.defs.has(schema.name, schema.domain):
            onnx.defs.register_schema(schema)


# ---------------------------------------------------------------------------- KV-cache write


@torch.library.custom_op("vilau::kv_cache_write", mutates_args=())
def kv_cache_write(cache: Tensor, update: Tensor, write_index: Tensor) -> Tensor:
    """cache [B, n_kv, S, hd] with update [B, n_kv, T, hd] written at slots write_index[b]..

    Functional here (returns a new tensor); exported as ``TensorScatter``, which ONNX Runtime
    runs in place when the caller binds past and present to one buffer.
    """
    out = cache.clone()
    T = update.shape[2]
    for b in range(cache.shape[0]):
        start = int(write_index[b])
        if start < 0 or start + T > cache.shape[2]:
            raise ValueError(
                f"kv_cache_write: slots {start}..{start + T} do not fit a cache of {cache.shape[2]}"
            )
        out[b, :, start : start + T] = update[b]
    return out


@kv_cache_write.register_fake
def _(cache: Tensor, update: Tensor, write_index: Tensor) -> Tensor:
    return torch.empty_like(cache)


# ---------------------------------------------------------------------------- translations

_vilau = onnxscript.values.Opset(DOMAIN, DOMAIN_VERSION)
_std = onnxscript.values.Opset("", OPSET)


def _rvq_encode(features, codebooks, n_embed: int, depth: int):
    return _vilau.RVQEncode(features, codebooks, n_embed=n_embed, depth=depth)


def _rvq_lookup(codes, codebooks):
    return _vilau.RVQLookup(codes, codebooks)


def _depth_decode(
    hidden, weights, codebooks, cfg_scale, temperature, top_k, top_p, seed, forced_codes,
    n_layer: int, n_head: int, embed_dim: int, depth: int,
):  # fmt: skip
    return _vilau.DepthDecode(
        hidden, weights, codebooks, cfg_scale, temperature, top_k, top_p, seed, forced_codes,
        n_layer=n_layer, n_head=n_head, embed_dim=embed_dim, depth=depth,
    )  # fmt: skip


def _kv_cache_write(cache, update, write_index):
    return _std.TensorScatter(cache, update, write_index, axis=2)


def translation_table() -> dict:
    """``custom_translation_table`` for ``torch.onnx.export(dynamo=True)``."""
    from .matmul_nbits import translations as awq_translations

    register_onnx_schemas()
    return {
        torch.ops.vilau.rvq_encode.default: _rvq_encode,
        torch.ops.vilau.rvq_lookup.default: _rvq_lookup,
        torch.ops.vilau.depth_decode.default: _depth_decode,
        torch.ops.vilau.kv_cache_write.default: _kv_cache_write,
        **awq_translations(),
    }
