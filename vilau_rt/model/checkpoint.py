"""Load an official VILA-U checkpoint folder into a ``VilaU`` model.

Layout: ``config.json``, ``llm/`` (HF LlamaForCausalLM, sharded or not), ``vision_tower/``
(SigLIP + RQ-VAE + depth transformer in one ``model.safetensors``), ``mm_projector/``.

The model is built on the ``meta`` device and every parameter is assigned a tensor mapped from the
files (converted to the requested dtype/device one tensor at a time), so weights are never held
twice. Loading is strict: a key we do not know is an error, unless it is one of the stored parts
inference never uses (SigLIP text tower, pooling head, post-layernorm, the encoder layers after
the selected one, logit scale/bias aliases, EMA buffers); a missing key, a wrong shape or a
non-float dtype is an error naming the file and the key.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ..errors import CheckpointError
from .awq import (
    AWQConfig,
    load_awq_state,
    quantized_linear_names,
    read_awq_config,
    replace_linears_with_w4a16,
)
from .config import read_config
from .linear16 import keep_embedding_16bit, keep_linears_16bit, loaded_dtype
from .safetensors_io import TensorSource
from .vilau import VilaU

# (folder, checkpoint key prefix, model key prefix): the one rename table.
RENAMES = (
    ("vision_tower", "rqvaesiglip.siglip_model.vision_model.", "vision_tower."),
    ("vision_tower", "rqvaesiglip.quantizer.", "quantizer."),
    ("vision_tower", "rqvaesiglip.post_quant_conv.", "pixel_decoder.post_quant_conv."),
    ("vision_tower", "rqvaesiglip.decoder.", "pixel_decoder.decoder."),
    ("vision_tower", "rqtransformer.", "depth_transformer."),
    ("llm", "model.", "llm.model."),
    ("llm", "lm_head.", "llm.lm_head."),
    ("mm_projector", "layers.", "mm_projector.layers."),
)

# Stored but never used at inference.
IGNORED = {
    "vision_tower": re.compile(
        r"rqvaesiglip\.siglip_model\.text_model\..*"
        r"|rqvaesiglip\.siglip_model\.vision_model\.(post_layernorm|head)\..*"
        r"|rqvaesiglip\.(siglip_model\.)?logit_(scale|bias)"
        r"|rqvaesiglip\.quantizer\.codebooks\.\d+\.(cluster_size_ema|embed_ema)"
    ),
    "mm_projector": re.compile(r"$^"),
}
_ENCODER_LAYER = re.compile(r"rqvaesiglip\.siglip_model\.vision_model\.encoder\.layers\.(\d+)\.")
_CODEBOOK = re.compile(r"rqvaesiglip\.quantizer\.codebooks\.(\d+)\.weight")


def to_model_key(folder: str, key: str) -> str | None:
    for f, ckpt, ours in RENAMES:
        if f == folder and key.startswith(ckpt):
            return ours + key[len(ckpt) :]
    return None


def to_checkpoint_key(model_key: str) -> tuple[str, str]:
    for f, ckpt, ours in RENAMES:
        if model_key.startswith(ours):
            return f, ckpt + model_key[len(ours) :]
    raise KeyError(model_key)


# The model parts whose 16-bit linears keep_16bit keeps as stored (the convolutions, norms, RVQ
# codebooks and the pixel decoder are float32 in any case).
KEPT_16BIT_PARTS = ("llm", "depth_transformer", "vision_tower", "mm_projector")


def load_vilau(
    path: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    siglip_config=None,
    ignored: list[str] | None = None,
    check_finite: bool = True,
    keep_16bit: bool = False,
) -> VilaU:
    """Build the model described by ``path`` and assign it the checkpoint's weights.

    ``ignored``, if given, receives the checkpoint keys that were skipped as unused.
    ``check_finite`` (default) refuses a float weight holding NaN or infinity, naming it: such
    a checkpoint otherwise loads and answers with empty or garbage text. It reads every weight
    once; ``False`` skips it.
    ``keep_16bit`` (CPU, float32 only) keeps each linear of the LLM, the depth transformer, the
    vision tower and the projector whose weight the file stores as float16 / bfloat16 in those 16
    bits, as a ``Linear16``, and the LLM's token embeddings (when the lm_head is not tied to them)
    as an ``Embedding16`` (model/linear16.py): half the memory of a float32 copy; the results on
    them are ``ops.native.linear``'s on the float32 load, bit for bit.
    """
    if keep_16bit and (dtype != torch.float32 or torch.device(device).type != "cpu"):
        raise ValueError(
            f"keep_16bit serves a float32 model on the CPU; this load is {dtype} on {device}"
        )
    root = Path(path)
    cfg = read_config(root, siglip_config)
    awq = read_awq_config(root / "llm")  # an AutoAWQ-format llm/ (ours or AutoAWQ's own)
    with torch.device("meta"):
        model = VilaU(cfg)
        if awq is not None:
            replace_linears_with_w4a16(model.llm, awq)
    sources = {f: TensorSource(root / f) for f in ("vision_tower", "llm", "mm_projector")}
    if keep_16bit:
        for part in KEPT_16BIT_PARTS:
            stored = _stored_dtypes(sources, part)
            keep_linears_16bit(model.get_submodule(part), stored)
            if part == "llm" and not cfg.llm.tie_word_embeddings:
                keep_embedding_16bit(model.llm.model, "embed_tokens",
                                     stored.get("model.embed_tokens.weight"))  # fmt: skip
    expected = dict(model.state_dict())
    state: dict[str, torch.Tensor] = {}
    used_layers = cfg.vision.num_hidden_layers + cfg.select_layer + 1

    skipped = [] if ignored is None else ignored
    # The RVQ codebooks are read into one [Dc, R, C] tensor: the rvq kernels' layout, which
    # ResidualQuantizer.stacked_codebooks() then returns without a copy (a 1.2 GB copy at 7B-384,
    # counted from its shapes).
    books = model.quantizer.codebooks
    stack = torch.empty(len(books), *books[0].weight.shape, dtype=dtype, device=device)
    llm_expected = {k[4:]: v for k, v in expected.items() if k.startswith("llm.")}
    quantized = quantized_linear_names(model.llm, awq) if awq is not None else []
    llm_state = load_awq_state(
        sources.pop("llm"), llm_expected, awq or AWQConfig(), quantized, dtype, device
    )
    state.update({"llm." + k: v for k, v in llm_state.items()})
    for folder, src in sources.items():
        for key in src.names():
            m = _ENCODER_LAYER.match(key)
            if IGNORED[folder].fullmatch(key) or (
                m and used_layers <= int(m.group(1)) < cfg.vision.num_hidden_layers
            ):
                skipped.append(key)
                continue
            m = _CODEBOOK.fullmatch(key)
            if m and cfg.rvq.shared_codebook and int(m.group(1)) > 0:
                _check_shared_copy(src, key)
                skipped.append(key)
                continue
            name = to_model_key(folder, key)
            if name is None or name not in expected:
                raise CheckpointError(
                    f"unexpected tensor {key!r} in {src.file_of(key)}: this VILA-U configuration "
                    "has no such weight (wrong config.json for these weights?)"
                )
            like = expected[name]
            out = stack[int(m.group(1))] if m else None  # m: this key is codebook m.group(1)
            state[name] = src.get_float(key, like, loaded_dtype(like, dtype), device, out=out)

    if "llm.lm_head.weight" not in state and cfg.llm.tie_word_embeddings:
        state["llm.lm_head.weight"] = state.get("llm.model.embed_tokens.weight")
    missing = [k for k in expected if k not in state or state[k] is None]
    if missing:
        lines = []
        for k in missing[:10]:
            folder, ckpt_key = to_checkpoint_key(k)
            lines.append(f"{ckpt_key!r} (in {root / folder})")
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise CheckpointError(f"checkpoint {root} lacks tensors: {', '.join(lines)}{more}")
    if check_finite:
        _check_finite(state, root)
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def _stored_dtypes(sources: dict, prefix: str) -> dict[str, torch.dtype]:
    """{key relative to model part ``prefix`` -> the dtype its file stores} for that part's
    tensors (the names ``keep_linears_16bit`` looks up)."""
    out = {}
    for folder, src in sources.items():
        for key in src.names():
            name = to_model_key(folder, key)
            if name is not None and name.startswith(prefix + "."):
                out[name[len(prefix) + 1 :]] = src.meta(key)[0]
    return out


def _check_finite(state: dict[str, torch.Tensor], root: Path) -> None:
    for name, t in state.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            folder, key = _checkpoint_key_of(name)
            bad = int((~torch.isfinite(t)).sum())
            raise CheckpointError(
                f"tensor {key!r} in {root / folder} holds {bad} NaN or infinite values of "
                f"{t.numel()}; the checkpoint is damaged (re-download or re-export it), or "
                "pass check_finite=False to load it anyway"
            )


def _checkpoint_key_of(model_key: str) -> tuple[str, str]:
    try:
        return to_checkpoint_key(model_key)
    except KeyError:  # AWQ buffers (qweight, scales, ...) keep the llm/ names
        return "llm", model_key.removeprefix("llm.")


def _check_shared_copy(src: TensorSource, key: str) -> None:
    first = "rqvaesiglip.quantizer.codebooks.0.weight"
    if first not in src.names():
        return  # reported as missing later
    if not torch.equal(src.get(key), src.get(first)):
        raise CheckpointError(
            f"shared_codebook is true but {key!r} in {src.file_of(key)} differs from {first!r}; "
            "the vision_tower config and weights disagree"
        )
