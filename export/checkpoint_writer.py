"""Write a random-weight VILA-U checkpoint in the official Hugging Face layout.

Used by tests, ``vilau-rt demo`` and the GPU benchmarks (the real 7B shapes, where real weights
cannot be downloaded). The folder matches what ``VILAUMetaModel.save_pretrained`` writes: the
four config files, a slow-LlamaTokenizer ``llm/`` folder with the four VILA-U tokens, sharded
safetensors with an index when large, and the stored-but-unused tensors the loader must skip
(logit scale/bias aliases, EMA buffers, the last SigLIP layer). The SigLIP text tower is not
written.

Tensors are generated and written one shard at a time, so a 7B checkpoint never sits in RAM.
The folder appears only when complete: it is written under a temporary name and renamed.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import torch
from safetensors.torch import save_file

from vilau_rt.model.checkpoint import to_checkpoint_key
from vilau_rt.model.config import VilaUConfig
from vilau_rt.model.vilau import VilaU
from vilau_rt.staging import staged_folder

SHARD_BYTES = 2 << 30
ADDED_TOKENS = ("<im_start>", "<im_end>", "<vi_start>", "<vi_end>")
CORPUS = resources.files("vilau_rt") / "data" / "texts.txt"


def write_checkpoint(
    cfg: VilaUConfig,
    out: str | Path,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    shard_bytes: int = SHARD_BYTES,
    overwrite: bool = False,
    weights: dict[str, torch.Tensor] | None = None,
    tokenizer_lines: list[str] | None = None,
) -> Path:
    """Write ``cfg`` with random weights to the folder ``out``; returns its path.

    ``weights`` (a ``VilaU`` state dict) replaces the random tensors of the parts the runtime
    uses (trained models); ``tokenizer_lines`` replaces the corpus the tokenizer is trained on.
    """
    out = Path(out)
    with staged_folder(out, overwrite=overwrite) as tmp:
        _write(cfg, tmp, seed, dtype, shard_bytes, weights, tokenizer_lines)
    return out


def _write(
    cfg: VilaUConfig, root: Path, seed, dtype, shard_bytes, weights=None, tokenizer_lines=None
) -> None:
    for sub in ("llm", "vision_tower", "mm_projector"):
        (root / sub).mkdir(parents=True)
    gen = torch.Generator().manual_seed(seed)
    folders: dict[str, list[tuple[str, tuple, str]]] = {
        "llm": [],
        "vision_tower": [],
        "mm_projector": [],
    }
    with torch.device("meta"):
        model = VilaU(cfg)
    for name, t in model.state_dict().items():
        folder, key = to_checkpoint_key(name)
        folders[folder].append((key, tuple(t.shape), name))
    folders["vision_tower"] += _unused_vision_tensors(cfg, folders["vision_tower"])
    for folder, items in folders.items():
        _write_tensors(root / folder, items, gen, dtype, shard_bytes, weights)
    _write_configs(cfg, root, dtype)
    _write_tokenizer(root / "llm", cfg.llm.vocab_size, cfg.llm.context_length, tokenizer_lines)


def _unused_vision_tensors(cfg: VilaUConfig, used: list) -> list:
    """What official checkpoints also store: aliases, EMA buffers, the layers after select_layer."""
    extra = [(k, (1,), k) for k in ("rqvaesiglip.logit_scale", "rqvaesiglip.logit_bias")]
    extra += [(f"rqvaesiglip.siglip_model.logit_{s}", (1,), "alias") for s in ("scale", "bias")]
    for d in range(cfg.rvq.num_codebooks):
        extra.append(
            (f"rqvaesiglip.quantizer.codebooks.{d}.cluster_size_ema", (cfg.rvq.n_embed,), "ema")
        )
        extra.append(
            (
                f"rqvaesiglip.quantizer.codebooks.{d}.embed_ema",
                (cfg.rvq.n_embed, cfg.rvq.embed_dim),
                "ema",
            )
        )
    prefix = "rqvaesiglip.siglip_model.vision_model.encoder.layers."
    first = cfg.vision.num_hidden_layers + cfg.select_layer + 1
    layer0 = [(k[len(prefix) + 2 :], s) for k, s, _ in used if k.startswith(prefix + "0.")]
    for i in range(first, cfg.vision.num_hidden_layers):
        extra += [(f"{prefix}{i}.{rest}", s, "unused layer") for rest, s in layer0]
    return extra


def _random(key: str, shape: tuple, gen: torch.Generator) -> torch.Tensor:
    leaf = key.rsplit(".", 1)[-1]
    if "norm" in key or ".ln" in key or "layer_norm" in key:
        return torch.ones(shape) if leaf == "weight" else torch.zeros(shape)
    if leaf == "bias" or "logit_" in key or "cluster_size" in key:
        return torch.zeros(shape)
    if "codebooks" in key or "embed_ema" in key:
        t = torch.randn(shape, generator=gen)
        if leaf == "weight":
            t[-1] = 0  # the padding row
        return t
    if len(shape) == 1 or "pos_emb" in key or "position_embedding" in key:
        return torch.randn(shape, generator=gen) * 0.02
    fan_in = 1
    for s in shape[1:]:
        fan_in *= s
    if "embed_tokens" in key:
        fan_in = shape[1]
    return torch.randn(shape, generator=gen) / fan_in**0.5


def _shards(items, dtype, shard_bytes) -> Iterator[list]:
    shard, size = [], 0
    for item in items:
        n = dtype.itemsize
        for s in item[1]:
            n *= s
        if shard and size + n > shard_bytes:
            yield shard
            shard, size = [], 0
        shard.append(item)
        size += n
    if shard:
        yield shard


def _write_tensors(folder: Path, items, gen, dtype, shard_bytes, weights=None) -> None:
    shards = list(_shards(items, dtype, shard_bytes))
    weight_map = {}
    for i, shard in enumerate(shards):
        name = (
            "model.safetensors"
            if len(shards) == 1
            else f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        )
        tensors = {
            k: (weights[name] if weights and name in weights else _random(k, shape, gen))
            .detach()
            .to("cpu", dtype)
            .contiguous()
            for k, shape, name in shard
        }
        save_file(tensors, str(folder / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in tensors})
        del tensors
    if len(shards) > 1:
        total = sum(dtype.itemsize * int(torch.tensor(shape).prod()) for _, shape, _ in items)
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def _dump(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _write_configs(cfg: VilaUConfig, root: Path, dtype: torch.dtype) -> None:
    dtype_name = str(dtype).replace("torch.", "")
    llm_cfg = cfg.llm.to_hf() | {"torch_dtype": dtype_name, "use_cache": True}
    _dump(root / "llm" / "config.json", llm_cfg)
    _dump(
        root / "llm" / "generation_config.json",
        {"bos_token_id": cfg.llm.bos_token_id, "eos_token_id": cfg.llm.eos_token_id,
         "pad_token_id": cfg.llm.pad_token_id, "do_sample": True, "temperature": 0.9,
         "top_p": 0.6, "max_length": cfg.llm.context_length},
    )  # fmt: skip
    d, g = cfg.decoder, cfg.rvq.grid
    rqvaesiglip = {
        "architectures": ["RQVAESiglipModel"],
        "pretrained_model": cfg.siglip_name,
        "embed_dim": cfg.rvq.embed_dim,
        "n_embed": cfg.rvq.n_embed,
        "latent_shape": [g[0], g[1], cfg.rvq.embed_dim],
        "code_shape": [g[0], g[1], cfg.rvq.depth],
        "shared_codebook": cfg.rvq.shared_codebook,
        "decoder_latent_shape": list(d.decoder_latent_shape) if d.decoder_latent_shape else None,
        "ddconfig": {
            "ch": d.ch, "ch_mult": list(d.ch_mult), "num_res_blocks": d.num_res_blocks,
            "attn_resolutions": list(d.attn_resolutions), "z_channels": d.z_channels,
            "resolution": d.resolution, "in_channels": d.in_channels, "out_ch": d.out_ch,
            "dropout": d.dropout, "double_z": d.double_z,
        },
        "decay": 0.99, "latent_loss_weight": 0.25, "restart_unused_codes": True,
    }  # fmt: skip
    t = cfg.depth
    rqtransformer = {
        "architectures": ["RQTransformer"],
        "block_size": [g[0], g[1], t.depth],
        "embed_dim": t.embed_dim,
        "head": {"block": {"n_head": t.n_head}, "n_layer": t.n_layer},
        "input_embed_dim_1": t.code_dim,
        "input_embed_dim_2": t.llm_dim,
        "vocab_size": t.vocab_size,
    }
    vision_tower = {
        "architectures": ["RQVAESIGLIPTransformer"],
        "model_type": "rqvaesigliptransformer_model",
        "hidden_size": cfg.vision.hidden_size,
        "rqvaesiglip": rqvaesiglip,
        "rqtransformer": rqtransformer,
        "torch_dtype": dtype_name,
    }
    _dump(root / "vision_tower" / "config.json", vision_tower)
    s = cfg.image_size
    _dump(
        root / "vision_tower" / "preprocessor_config.json",
        {"size": {"height": s, "width": s}, "crop_size": {"height": s, "width": s},
         "resample": 3, "do_resize": True, "do_center_crop": True, "do_rescale": True,
         "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.5] * 3,
         "image_std": [0.5] * 3, "do_convert_rgb": True},
    )  # fmt: skip
    projector = {
        "architectures": ["MultimodalProjector"],
        "model_type": "v2l_projector",
        "mm_projector_type": cfg.projector.projector_type,
    }
    _dump(root / "mm_projector" / "config.json", projector)
    _dump(
        root / "config.json",
        {"architectures": ["VILAULlamaModel"], "model_type": "vila_u_llama",
         "hidden_size": cfg.llm.hidden_size, "mm_hidden_size": cfg.vision.hidden_size,
         "llm_cfg": llm_cfg, "vision_tower_cfg": vision_tower, "mm_projector_cfg": projector,
         "mm_vision_select_layer": cfg.select_layer, "num_video_frames": cfg.num_video_frames,
         "model_dtype": f"torch.{dtype_name}", "image_aspect_ratio": "resize",
         "mm_use_im_start_end": True, "mm_use_vi_start_end": True,
         "mm_use_im_patch_token": False},
    )  # fmt: skip


def write_tokenizer(
    folder: str | Path, vocab_size: int, context: int, lines: list[str] | None = None
) -> Path:
    """Only the tokenizer files of ``llm/`` into ``folder`` (created); returns ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _write_tokenizer(folder, vocab_size, context, lines)
    return folder


def _write_tokenizer(
    folder: Path, vocab_size: int, context: int, lines: list[str] | None = None
) -> None:
    """A sentencepiece BPE trained on ``lines`` (default: the package's small corpus), padded
    with control symbols to ``vocab_size - 4`` pieces so that the VILA-U tokens get ids V-4..V-1
    as upstream."""
    import sentencepiece as spm

    if lines is None:
        lines = CORPUS.read_text().splitlines()
    lines = [ln for ln in lines if ln.strip()]
    target = vocab_size - len(ADDED_TOKENS)
    base = min(target, 512)

    def train(size: int, controls: int) -> bytes:
        buf = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines), model_writer=buf, vocab_size=size, model_type="bpe",
            byte_fallback=True, split_digits=True, add_dummy_prefix=True,
            remove_extra_whitespaces=False, normalization_rule_name="identity",
            unk_id=0, bos_id=1, eos_id=2, pad_id=-1, hard_vocab_limit=False,
            control_symbols=[f"<ctrl_{i}>" for i in range(controls)], minloglevel=2,
            num_threads=1,
        )  # fmt: skip
        return buf.getvalue()

    proto = train(base, 0)
    have = spm.SentencePieceProcessor(model_proto=proto).get_piece_size()
    if have < target:
        proto = train(target, target - have)
    got = spm.SentencePieceProcessor(model_proto=proto).get_piece_size()
    if got != target:
        raise RuntimeError(f"tokenizer training gave {got} pieces, wanted {target}")
    (folder / "tokenizer.model").write_bytes(proto)
    added = {tok: target + i for i, tok in enumerate(ADDED_TOKENS)}
    _dump(folder / "added_tokens.json", added)
    special = {"content": None, "lstrip": False, "normalized": False, "rstrip": False,
               "single_word": False, "special": True}  # fmt: skip
    decoder = {str(i): special | {"content": c} for i, c in enumerate(("<unk>", "<s>", "</s>"))}
    decoder |= {str(i): special | {"content": c} for c, i in added.items()}
    _dump(
        folder / "tokenizer_config.json",
        {"add_bos_token": True, "add_eos_token": False, "add_prefix_space": True,
         "added_tokens_decoder": decoder, "additional_special_tokens": list(ADDED_TOKENS),
         "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<unk>",
         "clean_up_tokenization_spaces": False, "legacy": False, "padding_side": "right",
         "model_max_length": context, "sp_model_kwargs": {},
         "spaces_between_special_tokens": False, "tokenizer_class": "LlamaTokenizer"},
    )  # fmt: skip
    _dump(
        folder / "special_tokens_map.json",
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<unk>",
         "additional_special_tokens": list(ADDED_TOKENS)},
    )  # fmt: skip
