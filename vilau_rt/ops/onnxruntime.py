"""The ``vilau`` domain ops for ONNX Runtime, as onnxruntime-extensions Python ops.

| ONNX node              | runs                               | inputs / outputs dtypes          |
|------------------------|------------------------------------|----------------------------------|
| ``vilau::RVQEncode``   | ``torch.ops.vilau.rvq_encode``     | float32, float32 -> int64, float32 |
| ``vilau::RVQLookup``   | ``torch.ops.vilau.rvq_lookup``     | int64, float32 -> float32        |
| ``vilau::DepthDecode`` | ``torch.ops.vilau.depth_decode``   | see ``vilau_rt.ops.depth_decode``|
| ``vilau::W4A16Gemm``   | ``torch.ops.vilau.w4a16_linear``   | float32, int32, int32, float32 -> float32 |

``W4A16Gemm`` is the AWQ linear of ``--target tensorrt`` bundles (the TensorRT plugin's op, whose
scales are float16). Python ops cannot take float16 tensors, so ``float_w4a16_gemm`` rewrites
those nodes before a session is made: ``Cast``s to float32 around them (exact for the scales,
which are float16 values; an fp16 bundle's activations are computed in float32 here). Only the
four-input form (no bias) is registered: LLaMA's linears have none. The ``plugin_version`` /
``plugin_namespace`` attributes of those bundles' nodes are for TensorRT and are not read here.

Why Python ops: they need no compiled library against ONNX Runtime's C API (whose headers the
``onnxruntime`` wheel does not ship) and they call the very kernels the torch backend calls
(``vilau_rt._C`` through ``vilau_rt.ops.kernels``). The price: the ops run on the CPU, and
onnxruntime-extensions copies every input into a fresh numpy array per call (the codebooks and
the packed depth weights included). That is fine for the CPU and for parity checks; a GPU
deployment of these graphs needs a native custom-op library (or the TensorRT plugins).

onnxruntime-extensions hands a Python op's outputs back to C++ as ``tolist()`` (slow, and it
loses float16). ``register`` installs an invocation hook that returns the arrays themselves,
which the C++ side accepts as they are (same protocol: id, then shape and data per output).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import BackendError
from . import (
    depth_decode,  # noqa: F401  (registers torch.ops.vilau.depth_decode)
    kernels,
)

_registered = False


def _import_extensions():
    try:
        import onnxruntime as ort
        import onnxruntime_extensions as ortx
    except ImportError as e:
        raise BackendError(
            f"the onnxruntime backend needs onnxruntime and onnxruntime-extensions ({e}); "
            "install them with pip install 'vilau-rt[onnx]'"
        ) from e
    return ort, ortx


def _invoke(op_id, feed, attributes):
    # Same contract as onnxruntime_extensions._ocos._on_pyop_invocation, minus tolist().
    opdef = _opdefs()[op_id]
    # torch's OpenMP pool, entered from inside an ONNX Runtime run, is pathologically slow
    # (measured 45x on the tiny depth transformer with 2 threads, 2 cores): run ops on 1 thread.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = opdef.body(*feed, **opdef.cast_attributes(attributes))
    finally:
        torch.set_num_threads(threads)
    outputs = result if isinstance(result, tuple) else (result,)
    reply = [op_id]
    for r in outputs:
        r = np.ascontiguousarray(r)  # C++ memcpy's the buffer as is
        reply += [r.shape, r]
    return tuple(reply)


def _opdefs():
    from onnxruntime_extensions._ocos import Opdef

    return Opdef._odlist


def _rvq_encode(features, codebooks, n_embed, depth):
    codes, z_q = kernels.rvq_encode(
        torch.from_numpy(features), torch.from_numpy(codebooks), n_embed, depth
    )
    return codes.numpy(), z_q.numpy()


def _rvq_lookup(codes, codebooks):
    return kernels.rvq_lookup(torch.from_numpy(codes), torch.from_numpy(codebooks)).numpy()


def _depth_decode(
    hidden, weights, codebooks, cfg_scale, temperature, top_k, top_p, seed, forced_codes,
    n_layer, n_head, embed_dim, depth,
):  # fmt: skip
    t = torch.from_numpy
    codes, logits = torch.ops.vilau.depth_decode(
        t(hidden), t(weights), t(codebooks), t(cfg_scale), t(temperature), t(top_k), t(top_p),
        t(seed), t(forced_codes), n_layer, n_head, embed_dim, depth,
    )  # fmt: skip
    return codes.numpy(), logits.numpy()


def _w4a16_gemm(x, qweight, qzeros, scales, group_size):
    t = torch.from_numpy
    scales = t(scales).half()  # float16 values carried as float32 (see float_w4a16_gemm)
    return kernels.w4a16_linear(t(x), t(qweight), t(qzeros), scales, None, group_size).numpy()


def float_w4a16_gemm(graph, activation_dtype: np.dtype) -> int:
    """Rewrites each ``vilau::W4A16Gemm`` node of the ``onnx.GraphProto`` to take and give float32
    (Casts around it, the output cast back to ``activation_dtype``, the graph's float type);
    returns how many nodes changed."""
    import onnx
    from onnx import TensorProto, helper

    out_type = helper.np_dtype_to_tensor_dtype(np.dtype(activation_dtype))
    nodes, changed = [], 0
    for node in graph.node:
        if (node.domain, node.op_type) != ("vilau", "W4A16Gemm"):
            nodes.append(node)
            continue
        if len(node.input) != 4:
            raise BackendError(
                f"node {node.name}: W4A16Gemm with a bias is not supported by the onnxruntime "
                "backend's Python ops (LLaMA linears have none)"
            )
        x, qweight, qzeros, scales = node.input
        (y,) = node.output
        name = node.name or y
        x32, s32, y32 = f"{name}/x_f32", f"{name}/scales_f32", f"{name}/y_f32"
        nodes.append(helper.make_node("Cast", [x], [x32], to=TensorProto.FLOAT))
        nodes.append(helper.make_node("Cast", [scales], [s32], to=TensorProto.FLOAT))
        new = onnx.NodeProto()
        new.CopyFrom(node)
        new.input[:] = [x32, qweight, qzeros, s32]
        new.output[:] = [y32]
        nodes.append(new)
        nodes.append(helper.make_node("Cast", [y32], [y], to=out_type))
        changed += 1
    if changed:
        del graph.node[:]
        graph.node.extend(nodes)
    return changed


def register():
    """Registers the ``vilau`` ops with onnxruntime-extensions (once per process)."""
    global _registered
    if _registered:
        return
    _, ortx = _import_extensions()
    from onnxruntime_extensions import PyCustomOpDef as T

    f32, i64 = T.dt_float, T.dt_int64
    ints = dict.fromkeys
    ortx.onnx_op(
        op_type="vilau::RVQEncode", inputs=[f32, f32], outputs=[i64, f32],
        attrs=ints(["n_embed", "depth"], T.dt_int64),
    )(_rvq_encode)  # fmt: skip
    ortx.onnx_op(op_type="vilau::RVQLookup", inputs=[i64, f32], outputs=[f32])(_rvq_lookup)
    ortx.onnx_op(
        op_type="vilau::DepthDecode",
        inputs=[f32, f32, f32, f32, f32, i64, f32, i64, i64],
        outputs=[i64, f32],
        attrs=ints(["n_layer", "n_head", "embed_dim", "depth"], T.dt_int64),
    )(_depth_decode)
    ortx.onnx_op(
        op_type="vilau::W4A16Gemm", inputs=[f32, T.dt_int32, T.dt_int32, f32],
        outputs=[f32], attrs={"group_size": T.dt_int64},
    )(_w4a16_gemm)  # fmt: skip
    T.install_hooker(_invoke)
    _registered = True


def session_options(threads: int | None = None):
    """``SessionOptions`` that know the ``vilau`` domain."""
    ort, ortx = _import_extensions()
    register()
    so = ort.SessionOptions()
    so.register_custom_ops_library(ortx.get_library_path())
    # The Python ops run torch / OpenMP work while ONNX Runtime waits for them: spinning ORT
    # workers would take the cores that work needs (measured: 20x slower ops on 2 cores).
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads is not None:
        so.intra_op_num_threads = threads
    return so
