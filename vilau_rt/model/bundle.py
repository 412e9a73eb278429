"""Engine bundles: the folder ``vilau_export.onnx.export.export_bundle`` writes and the graph
backends read.

```
manifest.json        format, versions, opset, precision, quantization, the model config,
                     each graph's inputs/outputs (names, shapes with named symbolic dims, dtypes),
                     and every other file of the folder with its size and sha256
vision.onnx          pixel_values -> codes, image embeddings        (vilau::RVQEncode)
pixel_decoder.onnx   codes -> raw pixels                            (vilau::RVQLookup)
llm_prefill.onnx     LLM over T new positions, explicit KV cache    (weights in llm.weights)
llm_decode.onnx      the same at T = 1                              (weights in llm.weights)
llm.weights          ONNX external data shared by both LLM graphs
lm_head.onnx         hidden -> float32 logits
depth_decode.onnx    hidden [2n, H] -> codes, next embeddings       (vilau::DepthDecode)
embed_tokens.npy     the token embedding table, memory-mapped by the runtime
tokenizer/           tokenizer.model and its JSON files, copied from the checkpoint's llm/
build_engines.sh     --target tensorrt only: one trtexec line per graph (manifest "tensorrt":
                     plugins, shape profiles); engines/ is where it writes the plans
```
Reading a manifest checks every listed file: a missing file, a size or a sha256 that differs
from the manifest is an error naming the file (the bundle is corrupt or was edited).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from ..errors import CheckpointError, CheckpointNotFoundError
from .config import VilaUConfig
from .depth import DepthTransformerConfig
from .llama import LlamaConfig
from .pixel_decoder import PixelDecoderConfig
from .projector import ProjectorConfig
from .rvq import RVQConfig
from .siglip import SiglipVisionConfig

FORMAT = "vilau-rt-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
GRAPHS = ("vision", "pixel_decoder", "llm_prefill", "llm_decode", "lm_head", "depth_decode")
EMBED_TOKENS = "embed_tokens.npy"
TOKENIZER_DIR = "tokenizer"
TOKENIZER_FILES = (
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
)


# ---------------------------------------------------------------------------- config


def config_to_dict(cfg: VilaUConfig) -> dict:
    return json.loads(json.dumps(asdict(cfg)))  # tuples -> lists: what the JSON will hold


def config_from_dict(d: dict, where: str = "manifest") -> VilaUConfig:
    """Rebuilds a VilaUConfig from ``config_to_dict``'s output."""
    try:
        parts = {
            "llm": LlamaConfig(**d["llm"]),
            "vision": SiglipVisionConfig(**d["vision"]),
            "rvq": RVQConfig(**{**d["rvq"], "grid": tuple(d["rvq"]["grid"])}),
            "decoder": PixelDecoderConfig(**d["decoder"]),
            "depth": DepthTransformerConfig(**d["depth"]),
            "projector": ProjectorConfig(**d["projector"]),
        }
        rest = {k: v for k, v in d.items() if k not in parts}
        return VilaUConfig(**parts, **rest).validate()
    except (KeyError, TypeError) as e:
        raise CheckpointError(
            f"{where}: the model config cannot be rebuilt ({e!r}); the bundle was written by an "
            "incompatible vilau_rt version: export it again"
        ) from e


def config_hash(cfg: VilaUConfig) -> str:
    text = json.dumps(config_to_dict(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------------------- files


def file_sha256(path: Path, chunk: int = 1 << 24) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def describe_files(root: Path) -> dict[str, dict]:
    """{relative posix path: {size, sha256}} for every file under ``root`` except the manifest."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and rel != MANIFEST:
            out[rel] = {"size": p.stat().st_size, "sha256": file_sha256(p)}
    return out


def write_manifest(root: Path, manifest: dict) -> Path:
    """Adds ``files`` (sizes and hashes of everything under ``root``) and writes manifest.json."""
    manifest = {**manifest, "files": describe_files(root)}
    path = root / MANIFEST
    path.write_text(json.dumps(manifest, indent=1, sort_keys=False) + "\n")
    return path


# ---------------------------------------------------------------------------- reading


def read_manifest(root: str | Path, *, verify_hashes: bool = True) -> dict:
    """Loads ``root/manifest.json`` and checks the listed files.

    Sizes are always checked; sha256 too unless ``verify_hashes`` is False (hashing a 7B bundle
    reads every byte once, tens of seconds on an edge device).
    """
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        raise CheckpointNotFoundError(
            f"{path} not found: {root} is not an engine bundle (export one with "
            "vilau-rt export CHECKPOINT OUT)"
        )
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); export the bundle again") from e
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format {manifest.get('format')!r} v{manifest.get('format_version')!r} is "
            f"not {FORMAT!r} v{FORMAT_VERSION}; export the bundle again with this vilau_rt"
        )
    for rel, meta in manifest.get("files", {}).items():
        f = root / rel
        if not f.is_file():
            raise CheckpointNotFoundError(
                f"bundle file {f} is listed in {path} but missing; copy the whole bundle folder "
                "or export it again"
            )
        size = f.stat().st_size
        if size != meta["size"]:
            raise CheckpointError(
                f"bundle file {f} has {size} bytes, the manifest says {meta['size']}: the file "
                "is truncated or was replaced; export the bundle again"
            )
        if verify_hashes and file_sha256(f) != meta["sha256"]:
            raise CheckpointError(
                f"bundle file {f} does not match its sha256 in {path}: the file is corrupt or "
                "was edited; export the bundle again"
            )
    return manifest
