"""VILA-U configuration: parsed from an official checkpoint folder, or built from a preset.

An official checkpoint keeps its configuration in four files (``config.json``,
``llm/config.json``, ``vision_tower/config.json``, ``mm_projector/config.json``) plus a SigLIP
config that is NOT in the checkpoint: ``vision_tower/config.json`` names it by hub id
(``rqvaesiglip.pretrained_model``). The configs of the two released towers ship inside this
package (``vilau_rt/data/siglip_configs/``); any other name needs ``siglip_config=`` (a folder holding a
``config.json``, a path to one, or a dict).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import CheckpointError, CheckpointNotFoundError, ConfigError
from .depth import DepthTransformerConfig
from .llama import LlamaConfig
from .pixel_decoder import PixelDecoderConfig
from .projector import ProjectorConfig
from .rvq import RVQConfig
from .siglip import SiglipVisionConfig

SIGLIP_CONFIG_DIR = Path(__file__).parent.parent / "data" / "siglip_configs"


@dataclass
class VilaUConfig:
    llm: LlamaConfig
    vision: SiglipVisionConfig
    rvq: RVQConfig
    decoder: PixelDecoderConfig
    depth: DepthTransformerConfig
    projector: ProjectorConfig
    siglip_name: str
    select_layer: int = -2  # mm_vision_select_layer: features after encoder layer L-2
    num_video_frames: int = 8
    model_dtype: str = "torch.bfloat16"
    siglip_dict: dict = field(default_factory=dict, repr=False)  # full SiglipConfig dict

    @property
    def image_size(self) -> int:
        return self.vision.image_size

    @property
    def grid(self) -> tuple[int, int]:
        return self.rvq.grid

    @property
    def tokens_per_image(self) -> int:
        h, w = self.rvq.grid
        return h * w

    def validate(self) -> VilaUConfig:
        """Cross-part consistency; raises ConfigError naming both sides of a mismatch."""
        pairs = [
            ("SigLIP hidden_size", self.vision.hidden_size, "rqvaesiglip.embed_dim", self.rvq.embed_dim),
            ("SigLIP grid", (self.vision.grid,) * 2, "rqvaesiglip.latent_shape[:2]", tuple(self.rvq.grid)),
            ("rqvaesiglip.code_shape[2]", self.rvq.depth, "rqtransformer.block_size[2]", self.depth.depth),
            ("rqvaesiglip.n_embed", self.rvq.n_embed, "rqtransformer.vocab_size", self.depth.vocab_size),
            ("rqvaesiglip.embed_dim", self.rvq.embed_dim, "rqtransformer.input_embed_dim_1", self.depth.code_dim),
            ("llm hidden_size", self.llm.hidden_size, "rqtransformer.input_embed_dim_2", self.depth.llm_dim),
            ("mm_hidden_size", self.projector.in_features, "SigLIP hidden_size", self.vision.hidden_size),
            ("config hidden_size", self.projector.out_features, "llm hidden_size", self.llm.hidden_size),
            ("rqvaesiglip.embed_dim", self.rvq.embed_dim, "decoder embed_dim", self.decoder.embed_dim),
        ]  # fmt: skip
        for a_name, a, b_name, b in pairs:
            if a != b:
                raise ConfigError(
                    f"inconsistent checkpoint config: {a_name} = {a} but {b_name} = {b}"
                )
        n_layers = self.vision.num_hidden_layers
        if not -n_layers <= self.select_layer < 0:
            raise ConfigError(
                f"mm_vision_select_layer {self.select_layer} is outside [-{n_layers}, -1]"
            )
        return self


# -- reading an official checkpoint -------------------------------------------------------


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointNotFoundError(f"{path} not found: a VILA-U checkpoint needs this file")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); re-download or re-export it") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object, found {type(data).__name__}")
    return data


def _get(d: dict, key: str, where: str):
    if not isinstance(d, dict):
        raise ConfigError(f"{where} must be a JSON object, found {d!r}")
    if key not in d:
        raise CheckpointError(f"{where} lacks the field {key!r}")
    return d[key]


def resolve_siglip_config(name: str, siglip_config=None) -> dict:
    """The full SiglipConfig dict for hub id ``name``."""
    if siglip_config is not None:
        if isinstance(siglip_config, dict):
            return siglip_config
        p = Path(siglip_config)
        if p.is_dir():
            p = p / "config.json"
        return read_json(p)
    packaged = SIGLIP_CONFIG_DIR / (name.replace("/", "__") + ".json")
    if packaged.is_file():
        return json.loads(packaged.read_text())
    known = sorted(f.stem.replace("__", "/") for f in SIGLIP_CONFIG_DIR.glob("*.json"))
    raise ConfigError(
        f"the vision tower names SigLIP config {name!r}, which is not shipped with vilau_rt "
        f"(shipped: {known}); pass siglip_config= (a folder with its config.json, or a dict)"
    )


def read_config(path: str | Path, siglip_config=None) -> VilaUConfig:
    """Parse the configuration of the official checkpoint folder ``path``."""
    try:
        return _read_config(Path(path), siglip_config)
    except (CheckpointError, CheckpointNotFoundError, ConfigError):
        raise
    except (TypeError, ValueError, KeyError, IndexError, ZeroDivisionError) as e:
        # a value of the wrong type or shape that no named check caught
        raise ConfigError(
            f"{path}: a config value has the wrong type or shape ({type(e).__name__}: {e}); "
            "compare the config.json files with the official layout"
        ) from e


def _read_config(root: Path, siglip_config) -> VilaUConfig:
    if not root.exists():
        raise CheckpointNotFoundError(f"checkpoint path {root} does not exist")
    if not root.is_dir():
        raise CheckpointError(f"{root} is a file; a VILA-U checkpoint is a folder with config.json")
    top = read_json(root / "config.json")
    if top.get("model_type") != "vila_u_llama" and "VILAULlamaModel" not in top.get(
        "architectures", []
    ):
        raise CheckpointError(
            f"{root / 'config.json'} is not a VILA-U config (model_type "
            f"{top.get('model_type')!r}, expected 'vila_u_llama')"
        )
    llm = LlamaConfig.from_hf(read_json(root / "llm" / "config.json"))
    vt_path = root / "vision_tower" / "config.json"
    vt = read_json(vt_path)
    rq = _get(vt, "rqvaesiglip", str(vt_path))
    rt = _get(vt, "rqtransformer", str(vt_path))
    where_rq, where_rt = f"{vt_path} rqvaesiglip", f"{vt_path} rqtransformer"
    siglip_name = _get(rq, "pretrained_model", where_rq)
    siglip_dict = resolve_siglip_config(siglip_name, siglip_config)
    vision = SiglipVisionConfig.from_siglip_config(siglip_dict.get("vision_config", siglip_dict))
    latent = _get(rq, "latent_shape", where_rq)
    code_shape = _get(rq, "code_shape", where_rq)
    if list(latent[:2]) != list(code_shape[:2]):
        raise ConfigError(
            f"{where_rq}: latent_shape {latent} and code_shape {code_shape} differ in h, w; "
            "only one code per latent position is supported (as in the released models)"
        )
    rvq = RVQConfig(
        n_embed=_get(rq, "n_embed", where_rq),
        embed_dim=_get(rq, "embed_dim", where_rq),
        depth=int(code_shape[2]),
        shared_codebook=bool(rq.get("shared_codebook", False)),
        grid=(int(code_shape[0]), int(code_shape[1])),
    )
    dls = rq.get("decoder_latent_shape")
    decoder = PixelDecoderConfig.from_ddconfig(
        _get(rq, "ddconfig", where_rq), rvq.embed_dim, tuple(dls) if dls else None
    )
    head = _get(rt, "head", where_rt)
    depth = DepthTransformerConfig(
        embed_dim=_get(rt, "embed_dim", where_rt),
        n_layer=_get(head, "n_layer", where_rt + ".head"),
        n_head=_get(_get(head, "block", where_rt + ".head"), "n_head", where_rt + ".head.block"),
        vocab_size=_get(rt, "vocab_size", where_rt),
        depth=int(_get(rt, "block_size", where_rt)[2]),
        code_dim=_get(rt, "input_embed_dim_1", where_rt),
        llm_dim=_get(rt, "input_embed_dim_2", where_rt),
    )
    mp = read_json(root / "mm_projector" / "config.json")
    projector = ProjectorConfig(
        projector_type=_get(mp, "mm_projector_type", str(root / "mm_projector" / "config.json")),
        in_features=int(top.get("mm_hidden_size", vt.get("hidden_size", vision.hidden_size))),
        out_features=int(top.get("hidden_size", llm.hidden_size)),
    )
    cfg = VilaUConfig(
        llm=llm,
        vision=vision,
        rvq=rvq,
        decoder=decoder,
        depth=depth,
        projector=projector,
        siglip_name=siglip_name,
        select_layer=int(top.get("mm_vision_select_layer", -2)),
        num_video_frames=int(top.get("num_video_frames", 8)),
        model_dtype=str(top.get("model_dtype", "torch.bfloat16")),
        siglip_dict=siglip_dict,
    )
    return cfg.validate()


# -- presets (random-weight checkpoints for tests, the demo and benchmarks) ---------------


def _preset(
    *,
    llm: LlamaConfig,
    vision: SiglipVisionConfig,
    siglip_name: str,
    n_embed: int,
    depth: int,
    decoder: dict,
    decoder_latent_shape,
    depth_tf: tuple[int, int, int],
) -> VilaUConfig:
    C, g = vision.hidden_size, vision.grid
    E, n_layer, n_head = depth_tf
    return VilaUConfig(
        llm=llm,
        vision=vision,
        rvq=RVQConfig(n_embed=n_embed, embed_dim=C, depth=depth, grid=(g, g)),
        decoder=PixelDecoderConfig.from_ddconfig(decoder, C, decoder_latent_shape),
        depth=DepthTransformerConfig(E, n_layer, n_head, n_embed, depth, C, llm.hidden_size),
        projector=ProjectorConfig("mlp2x_gelu", C, llm.hidden_size),
        siglip_name=siglip_name,
        siglip_dict={"model_type": "siglip", "vision_config": asdict(vision)},
    ).validate()


def _llama_7b() -> LlamaConfig:
    return LlamaConfig(
        vocab_size=32004,
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
    )


# The released checkpoints' pixel-decoder ddconfig is not public in this workplace; these shapes
# follow the RQ-VAE decoder family at the stated ~42M parameters (ch 128, ch_mult 1,1,2,2,4). They
# are for random-weight benchmarks only; real checkpoints always bring their own config.
_DECODER_7B = {
    "ch": 128, "ch_mult": [1, 1, 2, 2, 4], "num_res_blocks": 2, "attn_resolutions": [16],
    "z_channels": 256, "resolution": 256, "in_channels": 3, "out_ch": 3, "dropout": 0.0,
    "double_z": False,
}  # fmt: skip


def preset(name: str) -> VilaUConfig:
    """A named shape: ``tiny-256`` (the official fixture's shape), ``7b-256``, ``7b-384``, and
    ``llm150m-32``: tiny-256's vision, depth and decoder parts around a 150M-parameter LLaMA
    (hidden 1024, 12 layers), the CPU benchmark shape of ``bench/cpu_llm.py``."""
    if name in ("tiny-256", "llm150m-32"):
        llm = LlamaConfig(516, 96, 256, 2, 4, 4, 256, rms_norm_eps=1e-5)
        if name == "llm150m-32":
            llm = LlamaConfig(32004, 1024, 2816, 12, 16, 16, 2048, rms_norm_eps=1e-5)
        return _preset(
            llm=llm,
            vision=SiglipVisionConfig(64, 128, 3, 4, image_size=32, patch_size=8),
            siglip_name="vilau-rt/siglip-tiny-p8-32",
            n_embed=128,
            depth=4,
            decoder={
                **_DECODER_7B,
                "ch": 32,
                "ch_mult": [1, 1, 1, 1],
                "num_res_blocks": 1,
                "attn_resolutions": [],
                "z_channels": 32,
                "resolution": 32,
            },
            decoder_latent_shape=None,
            depth_tf=(64, 2, 4),
        )
    if name == "7b-256":
        return _preset(
            llm=_llama_7b(),
            vision=SiglipVisionConfig.from_siglip_config(
                json.loads(
                    (SIGLIP_CONFIG_DIR / "google__siglip-large-patch16-256.json").read_text()
                )["vision_config"]
            ),
            siglip_name="google/siglip-large-patch16-256",
            n_embed=16384,
            depth=4,
            decoder=_DECODER_7B,
            decoder_latent_shape=None,
            depth_tf=(2560, 6, 40),
        )
    if name == "7b-384":
        return _preset(
            llm=_llama_7b(),
            vision=SiglipVisionConfig.from_siglip_config(
                json.loads(
                    (SIGLIP_CONFIG_DIR / "google__siglip-so400m-patch14-384.json").read_text()
                )["vision_config"]
            ),
            siglip_name="google/siglip-so400m-patch14-384",
            n_embed=16384,
            depth=16,
            decoder={**_DECODER_7B, "resolution": 384},
            decoder_latent_shape=(24, 24),  # 27x27 codes resized so that 4 x2 upsamplings give 384
            depth_tf=(2560, 6, 40),
        )
    raise ConfigError(f"unknown preset {name!r}; known presets: {PRESET_NAMES}")


PRESET_NAMES = ("tiny-256", "7b-256", "7b-384", "llm150m-32")
