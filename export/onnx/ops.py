"""How our torch ops become ONNX nodes.

| torch op                     | ONNX node                 | notes                                      |
|------------------------------|---------------------------|--------------------------------------------|
| ``vilau::rvq_encode``        | ``vilau::RVQEncode``      | attributes n_embed, depth                  |
| ``vilau::rvq_lookup``        | ``vilau::RVQLookup``      |                                            |
| ``vilau::depth_decode``      | ``vilau::DepthDecode``    | attributes n_layer, n_head, embed_dim, depth |
| ``vilau::kv_cache_write``    | ``TensorScatter`` (opset 24) | in place when past and present share a buffer |
| ``vilau::matmul_nbits``      | ``com.microsoft::MatMulNBits`` | AWQ INT4 linears (``matmul_nbits.py``)     |

``translation_table("tensorrt")`` targets TensorRT 10.3's parser (default-domain opset <= 20, no
``com.microsoft`` importer; see ``tensorrt_lint.py``): every ``vilau`` node also carries
``plugin_version`` / ``plugin_namespace``, and two rows change:

| torch op                     | ONNX node (tensorrt target)   | notes                                  |
|------------------------------|-------------------------------|----------------------------------------|
| ``vilau::kv_cache_write``    | ``ScatterElements`` (opset 11+) | indices write_index[b] + t; exact    |
| ``vilau::w4a16_linear``      | ``vilau::W4A16Gemm``          | AutoAWQ GEMM buffers as they are, attribute group_size |

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
TRT_OPSET = 20  # the newest opset TensorRT 10.3's ONNX parser imports
TARGETS = ("onnxruntime", "tensorrt")
PLUGIN_VERSION, PLUGIN_NAMESPACE = "1", ""  # of every creator in libvilau_trt_plugins.so

_FLOATS = ["tensor(float)", "tensor(float16)", "tensor(bfloat16)"]


def _plugin_attributes() -> list[OpSchema.Attribute]:
    """Optional on every ``vilau`` op: TensorRT's parser reads them to pick the creator."""
    A, STRING = OpSchema.Attribute, OpSchema.AttrType.STRING
    return [
        A("plugin_version", STRING, "TensorRT plugin creator version", required=False),
        A("plugin_namespace", STRING, "TensorRT plugin creator namespace", required=False),
    ]


def _schemas() -> list[OpSchema]:
    P, A, INT = OpSchema.FormalParameter, OpSchema.Attribute, OpSchema.AttrType.INT
    floats = [("T", _FLOATS, "float tensors")]
    plugin = _plugin_attributes()
    return [
        OpSchema(
            "RVQEncode", DOMAIN, DOMAIN_VERSION,
            doc="Residual quantization: features [..., C] -> codes [..., D], z_q [..., C].",
            inputs=[P("features", "T"), P("codebooks", "T")],
            outputs=[P("codes", "tensor(int64)"), P("z_q", "T")],
            type_constraints=floats,
            attributes=[A("n_embed", INT, "valid codes per codebook"), A("depth", INT, "D"),
                        *plugin],
        ),
        OpSchema(
            "RVQLookup", DOMAIN, DOMAIN_VERSION,
            doc="Summed code embeddings: codes [..., D] -> [..., C].",
            inputs=[P("codes", "tensor(int64)"), P("codebooks", "T")],
            outputs=[P("z", "T")],
            type_constraints=floats,
            attributes=plugin,
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
                A("embed_dim", INT, "E"), A("depth", INT, "D"), *plugin,
            ],
        ),
        OpSchema(
            "W4A16Gemm", DOMAIN, DOMAIN_VERSION,
            doc="x [..., K] @ dequantized AutoAWQ GEMM weight [K, N] (+ bias) -> [..., N].",
            inputs=[
                P("x", "T"), P("qweight", "tensor(int32)"), P("qzeros", "tensor(int32)"),
                P("scales", "tensor(float16)"),
                P("bias", "tensor(float16)", param_option=OpSchema.FormalParameterOption.Optional),
            ],
            outputs=[P("y", "T")],
            type_constraints=floats,
            attributes=[A("group_size", INT, "input rows per scale and zero point"), *plugin],
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
_std20 = onnxscript.values.Opset("", TRT_OPSET)


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


# -- the tensorrt target: plugin attributes on every vilau node, opset-20 KV-cache writes

_PLUGIN = {"plugin_version": PLUGIN_VERSION, "plugin_namespace": PLUGIN_NAMESPACE}


def _rvq_encode_trt(features, codebooks, n_embed: int, depth: int):
    return _vilau.RVQEncode(features, codebooks, n_embed=n_embed, depth=depth, **_PLUGIN)


def _rvq_lookup_trt(codes, codebooks):
    return _vilau.RVQLookup(codes, codebooks, **_PLUGIN)


def _depth_decode_trt(
    hidden, weights, codebooks, cfg_scale, temperature, top_k, top_p, seed, forced_codes,
    n_layer: int, n_head: int, embed_dim: int, depth: int,
):  # fmt: skip
    return _vilau.DepthDecode(
        hidden, weights, codebooks, cfg_scale, temperature, top_k, top_p, seed, forced_codes,
        n_layer=n_layer, n_head=n_head, embed_dim=embed_dim, depth=depth, **_PLUGIN,
    )  # fmt: skip


def _w4a16_gemm_trt(x, qweight, qzeros, scales, bias, group_size: int):
    if bias is None:
        return _vilau.W4A16Gemm(x, qweight, qzeros, scales, group_size=group_size, **_PLUGIN)
    return _vilau.W4A16Gemm(x, qweight, qzeros, scales, bias, group_size=group_size, **_PLUGIN)


def _kv_cache_write_scatter(cache, update, write_index):
    """cache [B, n_kv, S, hd] with update [B, n_kv, T, hd] at slots write_index[b] + t.

    ScatterElements (opset 11+): its indices have the update's shape, so the slot numbers
    [B, T] are broadcast over heads and head dims. Plain copies of the update's values: exact.
    """
    t = _std20.Squeeze(_std20.Shape(update, start=2, end=3))  # T, 0-d
    steps = _std20.Range(
        _std20.Constant(value_int=0), _std20.Cast(t, to=onnx.TensorProto.INT64),
        _std20.Constant(value_int=1),
    )  # fmt: skip
    slots = _std20.Add(_std20.Unsqueeze(write_index, _std20.Constant(value_ints=[1])), steps)
    slots = _std20.Unsqueeze(slots, _std20.Constant(value_ints=[1, 3]))  # [B, 1, T, 1]
    indices = _std20.Expand(slots, _std20.Shape(update))
    return _std20.ScatterElements(cache, indices, update, axis=2)


def translation_table(target: str = "onnxruntime") -> dict:
    """``custom_translation_table`` for ``torch.onnx.export(dynamo=True)``.

    ``target``: ``onnxruntime`` (opset 24, TensorScatter, AWQ as MatMulNBits) or ``tensorrt``
    (opset 20, ScatterElements, AWQ as ``vilau::W4A16Gemm``, plugin attributes).
    """
    from .matmul_nbits import translations as awq_translations

    if target not in TARGETS:
        raise ValueError(f"target {target!r} is not known; choose one of {list(TARGETS)}")
    register_onnx_schemas()
    if target == "tensorrt":
        return {
            torch.ops.vilau.rvq_encode.default: _rvq_encode_trt,
            torch.ops.vilau.rvq_lookup.default: _rvq_lookup_trt,
            torch.ops.vilau.depth_decode.default: _depth_decode_trt,
            torch.ops.vilau.kv_cache_write.default: _kv_cache_write_scatter,
            torch.ops.vilau.w4a16_linear.default: _w4a16_gemm_trt,
        }
    return {
        torch.ops.vilau.rvq_encode.default: _rvq_encode,
        torch.ops.vilau.rvq_lookup.default: _rvq_lookup,
        torch.ops.vilau.depth_decode.default: _depth_decode,
        torch.ops.vilau.kv_cache_write.default: _kv_cache_write,
        **awq_translations(),
    }
