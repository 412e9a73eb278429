"""Checkpoint -> engine bundle of ONNX graphs (the folder layout is in ``vilau_rt.model.bundle``).

``export_bundle`` loads the checkpoint with ``load_vilau``, exports each graph of
``onnx_graphs`` with ``torch.onnx.export(dynamo=True)`` (our torch ops become ``vilau`` domain
nodes through ``onnx_ops.translation_table``), writes the embedding table, copies the tokenizer
and writes the manifest last. Everything goes to a hidden temporary folder beside ``out_dir``
that is renamed into place at the end, so a failed or interrupted export leaves no half bundle.

The two LLM graphs hold the same weights: they are stored once, in ``llm.weights``, which both
graphs reference as ONNX external data.

``target="tensorrt"`` writes graphs for TensorRT 10.3's ONNX parser (``ops.translation_table``
and ``tensorrt_lint``; the export fails if the lint finds a problem), a ``tensorrt`` manifest
section (plugins, shape profiles) and ``build_engines.sh`` (``tensorrt_bundle``). The same
bundle runs on the onnxruntime backend.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import external_data_helper

import vilau_rt
from vilau_rt.errors import CheckpointNotFoundError, ConfigError
from vilau_rt.model import bundle
from vilau_rt.model.checkpoint import load_vilau
from vilau_rt.model.vilau import VilaU
from vilau_rt.staging import staged_folder

from .graphs import DepthDecodeGraph, LlmGraph, LmHeadGraph, PixelDecoderGraph, VisionGraph
from .ops import DOMAIN, DOMAIN_VERSION, OPSET, TARGETS, TRT_OPSET, translation_table

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16}
QUANTS = ("none", "awq-int4")
LLM_WEIGHTS = "llm.weights"
# Graphs whose initializers exceed this go to external data (protobuf cannot hold 2 GiB).
EXTERNAL_DATA_BYTES = 1 << 30
SHARE_MIN_BYTES = 1024  # smaller tensors stay inside each graph

Progress = Callable[[str, int, int], None]  # (graph name, graphs done, graphs in all)


@dataclass
class GraphSpec:
    name: str
    module: torch.nn.Module
    args: tuple
    inputs: list[str]
    outputs: list[str]
    dynamic_shapes: tuple


def export_bundle(
    ckpt_path: str | Path,
    out_dir: str | Path,
    *,
    precision: str = "fp32",
    quant: str = "none",
    siglip_config=None,
    progress: Progress | None = None,
    overwrite: bool = False,
    target: str = "onnxruntime",
    max_batch: int = 2,
) -> Path:
    """Exports the checkpoint folder ``ckpt_path`` to the bundle folder ``out_dir``.

    ``target``: ``onnxruntime`` or ``tensorrt`` (see the module doc). ``max_batch`` (tensorrt
    only): the largest LLM batch the engines' shape profiles admit; 2 = one image with CFG.
    """
    if target not in TARGETS:
        raise ConfigError(f"target {target!r} is not known; choose one of {list(TARGETS)}")
    if max_batch < 1:
        raise ConfigError(f"max_batch must be >= 1, got {max_batch}")
    if precision not in PRECISIONS:
        raise ConfigError(
            f"precision {precision!r} is not supported; choose one of {list(PRECISIONS)}"
        )
    if quant not in QUANTS:
        raise ConfigError(f"quant {quant!r} is not known; choose one of {list(QUANTS)}")
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; remove it or pass overwrite=True")
    if not out.parent.is_dir():
        raise CheckpointNotFoundError(f"the parent folder of {out} does not exist; create it first")

    model = load_vilau(ckpt_path, dtype=PRECISIONS[precision], siglip_config=siglip_config)
    _apply_quant(model, quant, Path(ckpt_path), PRECISIONS[precision], target)
    with staged_folder(out, overwrite=overwrite) as tmp:
        graphs = write_graphs(model, tmp, progress, target)
        _write_embeddings(model, tmp)
        _copy_tokenizer(Path(ckpt_path), tmp)
        manifest = _manifest(model, precision, quant, graphs, target)
        if target == "tensorrt":
            from .tensorrt_bundle import finish_tensorrt_bundle

            manifest["tensorrt"] = finish_tensorrt_bundle(tmp, model.cfg, graphs, precision,
                                                          max_batch)  # fmt: skip
        bundle.write_manifest(tmp, manifest)
    log.info("exported %s to %s", ckpt_path, out)
    return out


def _apply_quant(model: VilaU, quant: str, ckpt: Path, dtype: torch.dtype, target: str) -> None:
    """awq-int4: the checkpoint's W4A16 linears become com.microsoft::MatMulNBits nodes
    (onnxruntime target) or stay W4A16Linear, exported as vilau::W4A16Gemm (tensorrt)."""
    from vilau_rt.model.awq import W4A16Linear

    from .matmul_nbits import to_matmul_nbits

    is_awq = any(isinstance(m, W4A16Linear) for m in model.llm.modules())
    if quant == "none" and is_awq:
        raise ConfigError(f"{ckpt / 'llm'} holds AWQ INT4 weights: export it with --quant awq-int4")
    if quant == "awq-int4":
        if not is_awq:
            raise ConfigError(
                f"{ckpt / 'llm'} is a float LLM: quantize it first (vilau-rt quantize CKPT OUT), "
                "then export OUT with --quant awq-int4"
            )
        if target == "onnxruntime":
            to_matmul_nbits(model.llm, dtype)


# ---------------------------------------------------------------------------- graphs


def graph_specs(model: VilaU) -> list[GraphSpec]:
    """Example inputs and dynamic dims of every graph (dims named in the ONNX files)."""
    cfg = model.cfg
    Dim = torch.export.Dim
    B, N, T, S = Dim("batch"), Dim("rows"), Dim("seq"), Dim("cache_len")
    h, w = cfg.grid
    D, H = cfg.rvq.depth, cfg.llm.hidden_size
    dtype = model.dtype
    S_img = cfg.image_size
    pixels = torch.zeros(2, 3, S_img, S_img)
    codes = torch.zeros(2, h, w, D, dtype=torch.long)

    lc = cfg.llm
    n_kv, hd, L = lc.num_key_value_heads, lc.head_dim, lc.num_hidden_layers
    kv_names = [
        f"{kind}_{part}_{i}" for i in range(L) for part in ("key", "value") for kind in ["past"]
    ]
    present = [n.replace("past_", "present_") for n in kv_names]

    def llm_args(t: int):
        past = [torch.zeros(2, n_kv, 8, hd, dtype=dtype) for _ in range(2 * L)]
        return (
            torch.zeros(2, t, H, dtype=dtype),
            torch.zeros(2, t, dtype=torch.long),
            torch.zeros(2, dtype=torch.long),
            torch.ones(2, 8, dtype=torch.bool),
            *past,
        )

    def llm_dims(seq):
        kv = tuple({0: B, 2: S} for _ in range(2 * L))
        return ({0: B, 1: seq}, {0: B, 1: seq}, {0: B}, {0: B, 1: S}, kv)

    llm_in = ["inputs_embeds", "rope_pos", "write_index", "key_valid", *kv_names]
    scalar = torch.tensor  # the sampling settings are 0-d runtime inputs
    depth_args = (
        torch.zeros(2, H, dtype=dtype),
        scalar(3.0),
        scalar(1.0),
        scalar(1, dtype=torch.long),
        scalar(1.0),
        scalar(0, dtype=torch.long),
        torch.full((1, D), -1, dtype=torch.long),
    )
    return [
        GraphSpec("vision", VisionGraph(model), (pixels,), ["pixel_values"],
                  ["codes", "embeds"], ({0: B},)),
        GraphSpec("pixel_decoder", PixelDecoderGraph(model), (codes,), ["codes"], ["pixels"],
                  ({0: B},)),
        GraphSpec("llm_prefill", LlmGraph(model.llm), llm_args(3), llm_in, ["hidden", *present],
                  llm_dims(T)),
        GraphSpec("llm_decode", LlmGraph(model.llm), llm_args(1), llm_in, ["hidden", *present],
                  llm_dims(None)),
        GraphSpec("lm_head", LmHeadGraph(model.llm), (torch.zeros(2, H, dtype=dtype),),
                  ["hidden"], ["logits"], ({0: N},)),
        GraphSpec("depth_decode", DepthDecodeGraph(model), depth_args,
                  ["hidden", "cfg_scale", "temperature", "top_k", "top_p", "seed", "forced_codes"],
                  ["codes", "next_embeds", "logits"],
                  ({0: Dim("rows2")}, None, None, None, None, None, {0: Dim("images")})),
    ]  # fmt: skip


def export_graph(spec: GraphSpec, target: str = "onnxruntime") -> onnx.ModelProto:
    with torch.no_grad():
        program = torch.onnx.export(
            spec.module.eval(),
            spec.args,
            dynamo=True,
            opset_version=TRT_OPSET if target == "tensorrt" else OPSET,
            custom_translation_table=translation_table(target),
            input_names=spec.inputs,
            output_names=spec.outputs,
            dynamic_shapes=spec.dynamic_shapes,
            verbose=False,
        )
    proto = program.model_proto
    proto.producer_name = "vilau_rt"
    proto.producer_version = vilau_rt.__version__
    return proto


def write_graphs(
    model: VilaU, root: Path, progress: Progress | None = None, target: str = "onnxruntime"
) -> dict[str, dict]:
    """Exports every graph into ``root``; returns their manifest entries."""
    specs = graph_specs(model)
    entries: dict[str, dict] = {}
    shared: dict[str, onnx.TensorProto] = {}  # content hash -> tensor stored in llm.weights
    for i, spec in enumerate(specs):
        proto = export_graph(spec, target)
        if target == "tensorrt":
            from .tensorrt_lint import lint

            problems = lint(proto)
            if problems:
                raise ConfigError(
                    f"{spec.name}.onnx fails the TensorRT 10.3 parser check: " + "; ".join(problems)
                )
        path = root / f"{spec.name}.onnx"
        if spec.name == "llm_prefill":
            names = {t.name: _content_key(t) for t in proto.graph.initializer}
            onnx.save_model(
                proto, path, save_as_external_data=True, all_tensors_to_one_file=True,
                location=LLM_WEIGHTS, size_threshold=SHARE_MIN_BYTES,
            )  # fmt: skip
            stored = onnx.load(path, load_external_data=False).graph.initializer
            shared = {
                names[t.name]: t for t in stored if external_data_helper.uses_external_data(t)
            }
        elif spec.name == "llm_decode":
            _reference_shared_weights(proto, shared)
            _save(proto, path)
        else:
            _save(proto, path)
        entries[spec.name] = {"file": path.name, **_io_signature(proto)}
        log.info("exported %s (%d/%d)", path.name, i + 1, len(specs))
        if progress is not None:
            progress(spec.name, i + 1, len(specs))
    return entries


def _save(proto: onnx.ModelProto, path: Path) -> None:
    size = sum(len(t.raw_data) for t in proto.graph.initializer)
    if size > EXTERNAL_DATA_BYTES:
        onnx.save_model(
            proto, path, save_as_external_data=True, all_tensors_to_one_file=True,
            location=f"{path.name}.data", size_threshold=1024,
        )  # fmt: skip
    else:
        onnx.save_model(proto, path)


def _content_key(t: onnx.TensorProto) -> tuple:
    return (t.data_type, tuple(t.dims), hashlib.sha256(t.raw_data).hexdigest())


def _reference_shared_weights(
    proto: onnx.ModelProto, shared: dict[tuple, onnx.TensorProto]
) -> None:
    """Points ``proto``'s initializers at equal tensors already stored in ``llm.weights``.

    Matched by content (dtype, shape, sha256), not by name: the exporter's optimizer folds
    weight transposes into constants with generated names that differ between the two graphs.
    """
    for t in proto.graph.initializer:
        if len(t.raw_data) < SHARE_MIN_BYTES:
            continue
        ref = shared.get(_content_key(t))
        if ref is None:
            continue
        t.ClearField("raw_data")
        del t.external_data[:]
        t.external_data.extend(ref.external_data)
        t.data_location = onnx.TensorProto.EXTERNAL


def _io_signature(proto: onnx.ModelProto) -> dict:
    def describe(values):
        out = []
        for v in values:
            tt = v.type.tensor_type
            dims = [d.dim_param if d.dim_param else d.dim_value for d in tt.shape.dim]
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name
            out.append({"name": v.name, "shape": dims, "dtype": dtype})
        return out

    return {"inputs": describe(proto.graph.input), "outputs": describe(proto.graph.output)}


# ---------------------------------------------------------------------------- other files


def _write_embeddings(model: VilaU, root: Path) -> None:
    # A plain .npy beside the graphs, not a Gather graph: the runtime memory-maps it and picks
    # rows on the host (a few rows per step), which no graph launch can beat, and it keeps the
    # table out of RAM until rows are touched.
    table = model.llm.model.embed_tokens.weight.detach().cpu().numpy()
    np.save(root / bundle.EMBED_TOKENS, np.ascontiguousarray(table))


def _copy_tokenizer(ckpt: Path, root: Path) -> None:
    src = ckpt / "llm"
    if not (src / "tokenizer.model").is_file():
        raise CheckpointNotFoundError(
            f"{src / 'tokenizer.model'} not found: the bundle needs the checkpoint's tokenizer"
        )
    dst = root / bundle.TOKENIZER_DIR
    dst.mkdir()
    for name in bundle.TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)


def _manifest(model: VilaU, precision: str, quant: str, graphs: dict, target: str) -> dict:
    cfg = model.cfg
    return {
        "format": bundle.FORMAT,
        "format_version": bundle.FORMAT_VERSION,
        "vilau_rt_version": vilau_rt.__version__,
        "exported_with": {"torch": torch.__version__, "onnx": onnx.__version__},
        "target": target,
        "opset": TRT_OPSET if target == "tensorrt" else OPSET,
        "custom_domains": {DOMAIN: DOMAIN_VERSION},
        "precision": precision,
        "quantization": quant,
        "config": bundle.config_to_dict(cfg),
        "config_sha256": bundle.config_hash(cfg),
        "graphs": graphs,
        "embed_tokens": {
            "file": bundle.EMBED_TOKENS,
            "shape": [cfg.llm.vocab_size, cfg.llm.hidden_size],
            "dtype": str(model.dtype).removeprefix("torch."),
        },
        "tokenizer": bundle.TOKENIZER_DIR,
    }
