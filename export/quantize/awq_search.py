"""AWQ INT4 quantization of a LLaMA (the VILA-U language model) into AutoAWQ's GEMM format.

Activation-aware Weight Quantization (arXiv 2306.00978) as AutoAWQ 0.2.9 runs it, with the CPU
aliasing bug of its scale search fixed (each candidate starts from a real copy of the weights):

1. Calibration: texts -> token ids (BOS first), texts longer than ``seq_len`` dropped, at most
   ``max_samples`` texts, concatenated and cut into blocks of ``seq_len`` (``calibration_blocks``).
2. One decoder block at a time. The block runs with its *original* weights on the float model's
   activations; its output is the next block's input (AutoAWQ's variant: no block ever sees the
   quantization error of an earlier one).
3. Scale search per group of linears sharing an input: input_layernorm -> q,k,v (scored on the
   attention output); v_proj -> o_proj (only when their shapes match, i.e. no GQA);
   post_attention_layernorm -> gate,up (scored on the MLP output); up_proj -> down_proj.
   Grid ratio = i / n_grid; s = x_mean^r / (w_mean^(1-r) + 1e-4) (duo scaling) or x_mean^r,
   normalised by sqrt(max s * min s); score = MSE of the module output with W' = Q(W * s) / s.
   All groups are searched on the unscaled block, then folded: the previous op's weight (norm, or
   the previous linear's output rows) / s, the group's input columns * s.
4. Clip search (every linear but q/k): per output row and group, max |w| * (1 - i / n_grid) for
   i < max_shrink * n_grid, scored by the MSE of the group's partial dot products on ~512
   sampled tokens. AutoAWQ needs out_features % 64 == 0 here; this implementation takes any shape.
5. Quantize each linear in fp16 arithmetic (AutoAWQ's codes) and pack it as GEMM.

The search runs in ``AWQSearchConfig.compute_dtype``: float32 by default, so on near-ties it may
pick a neighbouring grid point; float16 (AutoAWQ's arithmetic) picks AutoAWQ's ratios on the
fixture model. Weights are read one block at a time
from a ``TensorSource`` (memory-mapped), so peak memory is one float block plus the calibration
activations: about ``(4 * hidden + intermediate) * tokens * 4`` bytes in float32
(~7 GB for LLaMA-7B with 128 x 512 tokens; use ``act_dtype=torch.float16`` to halve it).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from vilau_rt.errors import CheckpointError, ConfigError
from vilau_rt.model.awq import LLAMA_QUANT_LINEARS, AWQConfig
from vilau_rt.model.awq_format import fake_quantize, pack_gemm, quantize_tensor
from vilau_rt.model.llama import (
    LlamaConfig,
    LlamaDecoderLayer,
    LlamaForCausalLM,
    RotaryEmbedding,
    attention_mask,
)
from vilau_rt.model.safetensors_io import TensorSource
from vilau_rt.staging import staged_folder

from .calibration import calibration_blocks, read_calib_texts, sentencepiece_encoder

log = logging.getLogger(__name__)


@dataclass
class AWQSearchConfig:
    seq_len: int = 512  # tokens per calibration block
    max_samples: int = 128  # texts read for calibration
    n_grid: int = 20  # scale-search grid: ratio = i / n_grid, i < n_grid
    duo_scaling: bool = True  # s = x_mean^r / w_mean^(1-r); False: s = x_mean^r (llm-awq)
    apply_clip: bool = True
    clip_grid: int = 20
    max_shrink: float = 0.5  # clip thresholds down to (1 - max_shrink) * max |w|
    clip_tokens: int = 512  # tokens sampled for the clip search
    batch_size: int = 8  # calibration blocks per forward call (bounds attention memory)
    compute_dtype: torch.dtype = torch.float32  # dtype of the search forward passes
    act_dtype: torch.dtype | None = None  # dtype the recorded activations are kept in
    device: str = "cpu"
    out_dtype: torch.dtype = torch.float16  # float tensors written (embeddings, norms, lm_head)

    def __post_init__(self):
        for name in ("seq_len", "max_samples", "n_grid", "clip_grid", "clip_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"AWQSearchConfig.{name}={getattr(self, name)} must be >= 1")
        if not 0 < self.max_shrink < 1:
            raise ConfigError(f"AWQSearchConfig.max_shrink={self.max_shrink} must be in (0, 1)")


@dataclass
class ScaleChoice:
    """One scale-search group's outcome (reported through ``progress``)."""

    block: int
    prev_op: str
    linears: list[str]
    ratio: float
    losses: list[float]
    scales: torch.Tensor = field(repr=False)
    x_mean: torch.Tensor = field(repr=False)
    w_mean: torch.Tensor = field(repr=False)


# ---------------------------------------------------------------------------- weights


class _ModelWeights:
    """A float LlamaForCausalLM seen through the TensorSource interface (names / get)."""

    def __init__(self, llm: LlamaForCausalLM):
        self.state = llm.state_dict()
        self.folder = "<in-memory model>"

    def names(self) -> list[str]:
        return list(self.state)

    def get(self, key: str) -> torch.Tensor:
        return self.state[key]

    def file_of(self, key: str) -> str:
        return self.folder


def _open(model_or_source, llama_config: LlamaConfig | None):
    if isinstance(model_or_source, LlamaForCausalLM):
        return _ModelWeights(model_or_source), model_or_source.config
    if isinstance(model_or_source, (str, Path)):
        folder = Path(model_or_source)
        cfg = llama_config or LlamaConfig.from_hf(json.loads((folder / "config.json").read_text()))
        if cfg.extra.get("quantization_config") is not None:
            raise CheckpointError(f"{folder} is already quantized; AWQ needs the float model")
        return TensorSource(folder), cfg
    if isinstance(model_or_source, TensorSource):
        if llama_config is None:
            raise ValueError("a TensorSource needs llama_config (LlamaConfig.from_hf(config.json))")
        return model_or_source, llama_config
    raise TypeError(
        f"model_or_source is {type(model_or_source).__name__}; pass a LlamaForCausalLM, a "
        "TensorSource with llama_config, or an HF LLaMA folder"
    )


def _tensor(src, key: str, shape: tuple | None = None) -> torch.Tensor:
    if key not in set(src.names()):
        raise CheckpointError(f"{src.folder} lacks tensor {key!r}, which the LLaMA config implies")
    t = src.get(key)
    if shape is not None and tuple(t.shape) != tuple(shape):
        raise CheckpointError(
            f"tensor {key!r} in {src.file_of(key)} has shape {list(t.shape)}, the config implies "
            f"{list(shape)}"
        )
    if not t.dtype.is_floating_point:
        raise CheckpointError(f"tensor {key!r} in {src.file_of(key)} is {t.dtype}, not float")
    return t


def _load_block(src, cfg: LlamaConfig, i: int, device, dtype) -> LlamaDecoderLayer:
    with torch.device("meta"):
        layer = LlamaDecoderLayer(cfg)
    # copy=True: the scales are folded in place, and the caller's model must stay untouched
    state = {
        name: _tensor(src, f"model.layers.{i}.{name}", like.shape).to(
            device=device, dtype=dtype, copy=True
        )
        for name, like in layer.state_dict().items()
    }
    layer.load_state_dict(state, strict=True, assign=True)
    return layer.eval()


# ---------------------------------------------------------------------------- one block


def _batched(x: torch.Tensor, size: int):
    return x.split(size, dim=0)


@torch.no_grad()
def _run_recording(layer: LlamaDecoderLayer, x, cos, sin, mask, batch: int, act_dtype):
    """Block output and the inputs of its linears (recorded with the original weights)."""
    taps = {
        "attn": layer.self_attn.q_proj,  # = input of k_proj, v_proj
        "o": layer.self_attn.o_proj,
        "mlp": layer.mlp.gate_proj,  # = input of up_proj
        "down": layer.mlp.down_proj,
    }
    feats: dict[str, list[torch.Tensor]] = {k: [] for k in taps}
    hooks = [
        m.register_forward_pre_hook(lambda _m, args, k=k: feats[k].append(args[0].to(act_dtype)))
        for k, m in taps.items()
    ]
    try:
        out = torch.cat([layer(xb, cos, sin, 0, mask).to(act_dtype) for xb in _batched(x, batch)])
    finally:
        for h in hooks:
            h.remove()
    return out, {k: torch.cat(v) for k, v in feats.items()}


@torch.no_grad()
def _run(module: Callable, inp: torch.Tensor, batch: int, dtype) -> list[torch.Tensor]:
    return [module(b.to(dtype)) for b in _batched(inp, batch)]


@torch.no_grad()
def _search_scale(
    linears: list[nn.Linear],
    module: Callable,
    inp: torch.Tensor,
    awq: AWQConfig,
    s: AWQSearchConfig,
):
    """Best input-channel scales for ``linears`` (which all read ``inp``); returns
    (scales [C], ratio, losses, x_mean, w_mean)."""
    dtype = linears[0].weight.dtype
    c = inp.shape[-1]
    x_mean = torch.zeros(c, dtype=torch.float64, device=inp.device)
    for b in _batched(inp.reshape(-1, c), 65536):
        x_mean += b.abs().double().sum(0)
    x_mean = (x_mean / (inp.numel() // c)).to(dtype)
    w = torch.cat([lin.weight for lin in linears])
    wg = w.abs().reshape(-1, awq.group_size)
    w_mean = (wg / (wg.amax(dim=1, keepdim=True) + 1e-6)).reshape(w.shape).mean(0)

    reference = _run(module, inp, s.batch_size, dtype)
    originals = [lin.weight.data.clone() for lin in linears]  # a real copy (AutoAWQ's CPU bug)
    losses, best = [], (float("inf"), None, None)
    try:
        for i in range(s.n_grid):
            ratio = i / s.n_grid
            if s.duo_scaling:
                sc = (x_mean.pow(ratio) / (w_mean.pow(1 - ratio) + 1e-4)).clamp(min=1e-4)
            else:
                sc = x_mean.pow(ratio).clamp(min=1e-4)
            sc = sc / (sc.max() * sc.min()).sqrt()
            sc[~torch.isfinite(sc)] = 1  # a dead channel must not poison the candidate
            for lin, w0 in zip(linears, originals):
                lin.weight.data = fake_quantize(w0 * sc, awq.group_size, awq.zero_point) / sc
            out = _run(module, inp, s.batch_size, dtype)
            sq = sum((o.double() - r.double()).pow(2).sum().item() for o, r in zip(out, reference))
            loss = sq / sum(r.numel() for r in reference)
            losses.append(loss)
            if loss < best[0]:  # strictly lower: the first of equal candidates wins
                best = (loss, ratio, sc.clone())
    finally:
        for lin, w0 in zip(linears, originals):
            lin.weight.data = w0
    if best[2] is None:
        raise FloatingPointError(
            f"AWQ scale search: every candidate gave a non-finite loss {losses}"
        )
    return best[2], best[1], losses, x_mean, w_mean


@torch.no_grad()
def _search_clip(w: torch.Tensor, inp: torch.Tensor, awq: AWQConfig, s: AWQSearchConfig):
    """Clip threshold per (output row, group) -> [N, n_groups, 1]."""
    n, k = w.shape
    g = awq.group_size
    ng = k // g
    x = inp.reshape(-1, k)
    x = x[:: max(1, x.shape[0] // s.clip_tokens)].to(w.dtype)
    t = x.shape[0]
    xg = x.view(t, ng, g).transpose(0, 1)  # [ng, t, G]
    # rows per chunk: keep the [ng, t, rows] partial products near 64M elements
    rows = max(1, min(n, (64 << 20) // max(1, ng * t)))
    best_all = []
    for w_rows in w.split(rows):
        r = w_rows.shape[0]
        wr = w_rows.view(r, ng, g)
        org_max = wr.abs().amax(dim=-1, keepdim=True)  # [r, ng, 1]
        org_out = torch.bmm(xg, wr.permute(1, 2, 0))  # [ng, t, r]
        best_max = org_max.clone()
        min_err = torch.full_like(org_max, float("inf"))
        for i in range(int(s.max_shrink * s.clip_grid)):
            m = org_max * (1 - i / s.clip_grid)
            qw = fake_quantize(torch.clamp(wr, -m, m).view(r, k), g, awq.zero_point).view(r, ng, g)
            out = torch.bmm(xg, qw.permute(1, 2, 0))
            err = (out - org_out).pow(2).mean(dim=1).t().unsqueeze(-1)  # [r, ng, 1]
            better = err < min_err
            min_err[better] = err[better]
            best_max[better] = m[better]
        best_all.append(best_max)
    return torch.cat(best_all)


def _quantize_block(
    layer: LlamaDecoderLayer,
    i: int,
    feats: dict,
    cos,
    sin,
    mask,
    awq: AWQConfig,
    s: AWQSearchConfig,
) -> list[ScaleChoice]:
    """Search and fold the scales, clip, in place on ``layer`` (float weights)."""
    attn, mlp = layer.self_attn, layer.mlp
    groups = [  # (prev op name, prev op, linears, inspected module, recorded input)
        (
            "input_layernorm",
            layer.input_layernorm,
            ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
            lambda h: attn(h, cos, sin, 0, mask),
            "attn",
        ),
    ]
    if attn.v_proj.weight.shape == attn.o_proj.weight.shape:
        groups.append(("self_attn.v_proj", attn.v_proj, ["self_attn.o_proj"], attn.o_proj, "o"))
    groups += [
        (
            "post_attention_layernorm",
            layer.post_attention_layernorm,
            ["mlp.gate_proj", "mlp.up_proj"],
            mlp,
            "mlp",
        ),
        ("mlp.up_proj", mlp.up_proj, ["mlp.down_proj"], mlp.down_proj, "down"),
    ]
    choices = []
    for prev_name, prev, names, module, feat in groups:
        linears = [layer.get_submodule(n) for n in names]
        sc, ratio, losses, x_mean, w_mean = _search_scale(linears, module, feats[feat], awq, s)
        choices.append(ScaleChoice(i, prev_name, names, ratio, losses, sc, x_mean, w_mean))
    with torch.no_grad():  # fold every group's scales only after all searches (AutoAWQ order)
        for (_, prev, names, _, feat), ch in zip(groups, choices):
            sc = ch.scales
            if isinstance(prev, nn.Linear):
                prev.weight.div_(sc.view(-1, 1))  # output rows of the previous linear
                if prev.bias is not None:
                    prev.bias.div_(sc)
            else:
                prev.weight.div_(sc)  # RMSNorm gain
            for n in names:
                layer.get_submodule(n).weight.mul_(sc.view(1, -1))
            feats[feat] = (feats[feat] / sc.to(feats[feat].dtype)).to(feats[feat].dtype)
    if s.apply_clip:
        clip_inputs = {
            "self_attn.v_proj": "attn",
            "self_attn.o_proj": "o",
            "mlp.gate_proj": "mlp",
            "mlp.up_proj": "mlp",
            "mlp.down_proj": "down",
        }
        for name, feat in clip_inputs.items():
            if not awq.converts(f"model.layers.{i}.{name}"):
                continue
            lin = layer.get_submodule(name)
            max_val = _search_clip(lin.weight.data, feats[feat], awq, s)
            n, k = lin.weight.shape
            w = lin.weight.data.view(n, -1, awq.group_size)
            lin.weight.data = torch.clamp(w, -max_val, max_val).view(n, k)
    return choices


def _pack_block(layer: LlamaDecoderLayer, i: int, awq: AWQConfig, out_dtype) -> dict:
    """HF-keyed tensors of one processed block: GEMM buffers for the quantized linears."""
    state = {}
    for name in ("input_layernorm", "post_attention_layernorm"):
        state[f"model.layers.{i}.{name}.weight"] = layer.get_submodule(name).weight.to(out_dtype)
    for name in LLAMA_QUANT_LINEARS:
        key = f"model.layers.{i}.{name}"
        lin = layer.get_submodule(name)
        if not awq.converts(key):
            state[f"{key}.weight"] = lin.weight.detach().to(out_dtype)
            if lin.bias is not None:
                state[f"{key}.bias"] = lin.bias.detach().to(out_dtype)
            continue
        # AutoAWQ casts to fp16 and quantizes in fp16 arithmetic: these are its codes.
        codes, zeros, scales = quantize_tensor(
            lin.weight.detach().half(), awq.group_size, awq.zero_point
        )
        qweight, qzeros, scales = pack_gemm(codes.t(), zeros.t(), scales.t())
        state[f"{key}.qweight"], state[f"{key}.qzeros"], state[f"{key}.scales"] = (
            qweight.cpu(),
            qzeros.cpu(),
            scales.cpu(),
        )
        if lin.bias is not None:
            state[f"{key}.bias"] = lin.bias.detach().half()
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def _check_shapes(cfg: LlamaConfig, awq: AWQConfig) -> None:
    kv = cfg.num_key_value_heads * cfg.head_dim
    shapes = {  # name: (in_features, out_features)
        "self_attn.q_proj": (cfg.hidden_size, cfg.num_attention_heads * cfg.head_dim),
        "self_attn.k_proj": (cfg.hidden_size, kv),
        "self_attn.v_proj": (cfg.hidden_size, kv),
        "self_attn.o_proj": (cfg.num_attention_heads * cfg.head_dim, cfg.hidden_size),
        "mlp.gate_proj": (cfg.hidden_size, cfg.intermediate_size),
        "mlp.up_proj": (cfg.hidden_size, cfg.intermediate_size),
        "mlp.down_proj": (cfg.intermediate_size, cfg.hidden_size),
    }
    for name, (k, n) in shapes.items():
        if k % awq.group_size or n % 8:
            raise ConfigError(
                f"{name} is [{n}, {k}]: AWQ GEMM needs in_features % group_size "
                f"({awq.group_size}) == 0 and out_features % 8 == 0; choose another group_size "
                f"or list {name!r} in modules_to_not_convert"
            )


# ---------------------------------------------------------------------------- public API


def awq_quantize_llama(
    model_or_source,
    token_blocks: torch.Tensor,
    cfg: AWQConfig,
    search: AWQSearchConfig | None = None,
    progress: Callable[[ScaleChoice], None] | None = None,
    llama_config: LlamaConfig | None = None,
    extra_embeds: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """AWQ-quantize a float LLaMA -> an HF state dict in AutoAWQ GEMM format (CPU tensors).

    ``model_or_source``: a float ``LlamaForCausalLM``, an HF LLaMA folder, or a ``TensorSource``
    with ``llama_config``. ``token_blocks``: int64 [n, L] calibration ids (``calibration_blocks``).
    ``extra_embeds``: more calibration blocks given as input embeddings [m, L, H], for inputs
    that are not token ids (VILA-U prompts with projected image embeddings spliced in).
    ``progress`` receives each scale group's choice as it is made.
    """
    s = search or AWQSearchConfig()
    if cfg.version != "gemm":
        raise ConfigError(f"AWQ version={cfg.version!r}: the quantizer writes 'gemm' only")
    src, lcfg = _open(model_or_source, llama_config)
    _check_shapes(lcfg, cfg)
    if token_blocks.dim() != 2 or token_blocks.dtype != torch.int64 or token_blocks.numel() == 0:
        raise ValueError(
            f"token_blocks must be a non-empty int64 [n, L] tensor, got {token_blocks.dtype} "
            f"{tuple(token_blocks.shape)}"
        )
    if int(token_blocks.max()) >= lcfg.vocab_size or int(token_blocks.min()) < 0:
        raise ValueError(
            f"token ids span {int(token_blocks.min())}..{int(token_blocks.max())}, outside the "
            f"vocabulary of {lcfg.vocab_size}: wrong tokenizer for this model?"
        )
    dev, dtype = torch.device(s.device), s.compute_dtype
    act_dtype = s.act_dtype or dtype
    hidden = lcfg.hidden_size
    embed = _tensor(src, "model.embed_tokens.weight", (lcfg.vocab_size, hidden))
    x = embed[token_blocks].to(device=dev, dtype=act_dtype)  # [n, L, H]
    length = token_blocks.shape[1]
    if extra_embeds is not None:
        if extra_embeds.dim() != 3 or tuple(extra_embeds.shape[1:]) != (length, hidden):
            raise ValueError(
                f"extra_embeds must be [m, {length}, {hidden}] like the token blocks, got "
                f"{tuple(extra_embeds.shape)}"
            )
        x = torch.cat([x, extra_embeds.to(device=dev, dtype=act_dtype)])
    rotary = RotaryEmbedding(lcfg)
    cos, sin = rotary(torch.arange(length, device=dev)[None], length, dtype)
    mask = attention_mask(0, length, None, dev)

    state = {"model.embed_tokens.weight": embed.to(s.out_dtype).contiguous()}
    for i in range(lcfg.num_hidden_layers):
        layer = _load_block(src, lcfg, i, dev, dtype)
        x_next, feats = _run_recording(layer, x, cos, sin, mask, s.batch_size, act_dtype)
        choices = _quantize_block(layer, i, feats, cos, sin, mask, cfg, s)
        for ch in choices:
            log.info("block %d: %s -> %s ratio %.2f", i, ch.prev_op, "+".join(ch.linears), ch.ratio)
            if progress is not None:
                progress(ch)
        state.update(_pack_block(layer, i, cfg, s.out_dtype))
        del layer, feats
        x = x_next
    state["model.norm.weight"] = _tensor(src, "model.norm.weight", (hidden,)).to(s.out_dtype)
    if "lm_head.weight" in set(src.names()):
        lm_head = _tensor(src, "lm_head.weight", (lcfg.vocab_size, hidden))
        state["lm_head.weight"] = lm_head.to(s.out_dtype).contiguous()
    elif not lcfg.tie_word_embeddings:
        raise CheckpointError(f"{src.folder} lacks 'lm_head.weight' and embeddings are not tied")
    return state


def save_awq_llm(
    folder: str | Path,
    state: dict[str, torch.Tensor],
    llama_config: LlamaConfig,
    cfg: AWQConfig,
    shard_bytes: int = 4 << 30,
    extra_files: Iterable[str | Path] = (),
) -> Path:
    """Write an HF LLaMA folder AutoAWQ / vLLM / transformers read: ``config.json`` with
    ``quantization_config``, safetensors (sharded with an index above ``shard_bytes``) and any
    ``extra_files`` (tokenizer, generation config) copied in. Written under a temporary name and
    renamed when complete; an existing ``folder`` is an error."""
    out = Path(folder)
    with staged_folder(out) as tmp:
        hf = llama_config.to_hf()
        hf.update(torch_dtype="float16", quantization_config=cfg.to_hf())
        (tmp / "config.json").write_text(json.dumps(hf, indent=2, sort_keys=True) + "\n")
        shards, cur, size = [], {}, 0
        for key in sorted(state):
            nbytes = state[key].numel() * state[key].element_size()
            if cur and size + nbytes > shard_bytes:
                shards.append(cur)
                cur, size = {}, 0
            cur[key] = state[key]
            size += nbytes
        shards.append(cur)
        if len(shards) == 1:
            save_file(shards[0], tmp / "model.safetensors", metadata={"format": "pt"})
        else:
            weight_map = {}
            for j, shard in enumerate(shards):
                name = f"model-{j + 1:05d}-of-{len(shards):05d}.safetensors"
                save_file(shard, tmp / name, metadata={"format": "pt"})
                weight_map.update({k: name for k in shard})
            total = sum(t.numel() * t.element_size() for t in state.values())
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
        for f in extra_files:
            shutil.copy2(f, tmp / Path(f).name)
    return out


# Files of an HF LLaMA folder that describe the tokenizer and generation, copied unchanged.
LLM_SIDE_FILES = (
    "generation_config.json",
    "tokenizer.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
)


def quantize_llm_folder(
    src: str | Path,
    dst: str | Path,
    cfg: AWQConfig,
    texts: list[str] | None = None,
    search: AWQSearchConfig | None = None,
    encode: Callable[[str], list[int]] | None = None,
    progress: Callable[[ScaleChoice], None] | None = None,
    extra_embeds: torch.Tensor | None = None,
) -> Path:
    """Float HF LLaMA folder ``src`` -> AWQ GEMM folder ``dst`` (tokenizer files copied).

    ``texts`` default to the built-in calibration set; ``encode`` to ``src/tokenizer.model``;
    ``extra_embeds`` as in ``awq_quantize_llama``.
    """
    src = Path(src)
    s = search or AWQSearchConfig()
    if encode is None:
        encode = sentencepiece_encoder(src / "tokenizer.model")
    blocks = calibration_blocks(texts or read_calib_texts(), encode, s.seq_len, s.max_samples)
    lcfg = LlamaConfig.from_hf(json.loads((src / "config.json").read_text()))
    state = awq_quantize_llama(src, blocks, cfg, s, progress, extra_embeds=extra_embeds)
    side = [src / f for f in LLM_SIDE_FILES if (src / f).is_file()]
    return save_awq_llm(dst, state, lcfg, cfg, extra_files=side)
