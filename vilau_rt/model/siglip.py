"""SigLIP vision encoder, truncated where VILA-U reads its features, and image preprocessing.

| name          | shape             | dtype        | notes                                            |
|---------------|-------------------|--------------|--------------------------------------------------|
| pixel_values  | [B, 3, S, S]      | float        | from ``preprocess``: RGB in [-1, 1], S = image_size |
| returns       | [B, h*w, C]       | model dtype  | output of encoder layer ``select_layer`` (L-2),  |
|               |                   |              | patches in raster order, h = w = S // patch      |

VILA-U takes the hidden state after encoder layer index L-2 (``encode_image`` in the official
``modeling_rqvaesiglip.py`` returns from inside the layer loop), so the last layer, the
post-layernorm and the attention-pooling head are never run; this module does not build them.
Submodule names equal the checkpoint keys under ``rqvaesiglip.siglip_model.vision_model.``, so
the used part of a state dict loads with ``strict=True``; ``used_keys`` / ``ignored_keys`` list
both halves so a loader can check that no key is left over.

Arithmetic follows the SigLIP code VILA-U ships (transformers 4.36 era): pre-LN blocks,
LayerNorm in the model dtype, attention ``(q @ k^T) * head_dim^-0.5`` with the softmax in float32
cast back to the model dtype, no attention mask, tanh-approximated GELU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..errors import ConfigError, ImageError
from .fields import check_fields

# transformers' SiglipVisionConfig.__init__ defaults (identical in 4.36.2, the version VILA-U
# pins, and 4.57.6). Hub config files omit fields equal to the default, so they must be filled.
HF_SIGLIP_VISION_DEFAULTS = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "num_channels": 3,
    "image_size": 224,
    "patch_size": 16,
    "hidden_act": "gelu_pytorch_tanh",
    "layer_norm_eps": 1e-6,
    "attention_dropout": 0.0,
}

# The activations HF's ACT2FN names that SigLIP checkpoints use, as torch calls.
_ACTIVATIONS = {
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu": F.gelu,
}


@dataclass
class SiglipVisionConfig:
    hidden_size: int  # C, the feature width
    intermediate_size: int  # MLP width
    num_hidden_layers: int  # L, layers in the checkpoint (not all are run)
    num_attention_heads: int
    image_size: int  # S, square input side in pixels
    patch_size: int
    num_channels: int = 3
    layer_norm_eps: float = 1e-6
    hidden_act: str = "gelu_pytorch_tanh"

    def __post_init__(self):
        check_fields(self, "the SigLIP vision config")
        for name in (
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "image_size",
            "patch_size",
            "num_channels",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"SigLIP {name} must be a positive int, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"SigLIP hidden_size {self.hidden_size} is not divisible by "
                f"num_attention_heads {self.num_attention_heads}"
            )
        # image_size need not be a multiple of patch_size: so400m-patch14-384 has a 27x27 grid
        # (the strided patch conv drops the last 6 pixel rows/columns), as in transformers.
        if self.hidden_act not in _ACTIVATIONS:
            raise ConfigError(
                f"SigLIP hidden_act {self.hidden_act!r} is not supported; "
                f"known: {sorted(_ACTIVATIONS)}"
            )
        if not self.layer_norm_eps > 0:
            raise ConfigError(f"SigLIP layer_norm_eps must be > 0, got {self.layer_norm_eps!r}")

    @property
    def grid(self) -> int:
        """h = w, patches per side."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid**2

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_siglip_config(cls, d: dict) -> SiglipVisionConfig:
        """Parse an HF ``SiglipConfig`` dict (its ``vision_config`` is used) or a bare
        ``SiglipVisionConfig`` dict; absent fields take transformers' defaults."""
        if not isinstance(d, dict):
            raise ConfigError(f"SigLIP config must be a dict, got {type(d).__name__}")
        if d.get("model_type") == "siglip" or "vision_config" in d:
            vision = d.get("vision_config")
            if vision is None:
                vision = {}  # SiglipConfig builds an all-default vision config from None
            if not isinstance(vision, dict):
                raise ConfigError(f"SigLIP vision_config must be a dict, got {vision!r}")
        else:
            vision = d
        model_type = vision.get("model_type", "siglip_vision_model")
        if model_type != "siglip_vision_model":
            raise ConfigError(
                f"SigLIP vision_config has model_type {model_type!r}; expected "
                "'siglip_vision_model' (pass the SigLIP config named by rqvaesiglip.pretrained_model)"
            )
        merged = {**HF_SIGLIP_VISION_DEFAULTS, **vision}
        dropout = merged["attention_dropout"]
        if dropout not in (0, 0.0):
            # Inference never applies dropout; a nonzero value means a training config was passed.
            raise ConfigError(f"SigLIP attention_dropout {dropout!r} is not 0.0 (inference only)")
        return cls(**{f: merged[f] for f in cls.__dataclass_fields__})


def _num_used_layers(cfg: SiglipVisionConfig, select_layer: int) -> int:
    """Layers run for ``select_layer`` (a negative index into the encoder layers)."""
    n = cfg.num_hidden_layers
    if not isinstance(select_layer, int) or not -n <= select_layer <= -1:
        raise ConfigError(
            f"select_layer {select_layer!r} must be a negative layer index in [-{n}, -1] "
            "(VILA-U uses -2: the output of layer L-2)"
        )
    return n + select_layer + 1


class SiglipVisionEmbeddings(nn.Module):
    def __init__(self, cfg: SiglipVisionConfig):
        super().__init__()
        self.patch_embedding = nn.Conv2d(
            cfg.num_channels, cfg.hidden_size, kernel_size=cfg.patch_size, stride=cfg.patch_size
        )
        self.position_embedding = nn.Embedding(cfg.num_patches, cfg.hidden_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.patch_embedding(pixel_values)  # [B, C, h, w]
        x = x.flatten(2).transpose(1, 2)  # [B, h*w, C], raster order
        return x + self.position_embedding.weight  # learned position per patch


class SiglipAttention(nn.Module):
    def __init__(self, cfg: SiglipVisionConfig):
        super().__init__()
        self.n_head = cfg.num_attention_heads
        self.head_dim = cfg.head_dim
        self.scale = self.head_dim**-0.5
        c = cfg.hidden_size
        self.q_proj = nn.Linear(c, c)
        self.k_proj = nn.Linear(c, c)
        self.v_proj = nn.Linear(c, c)
        self.out_proj = nn.Linear(c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape

        def heads(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, self.n_head, self.head_dim).transpose(1, 2)  # [B, nh, T, hd]

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        # Explicit rather than scaled_dot_product_attention: upstream rounds the scores and the
        # probabilities to the model dtype at these exact points, which matters in bf16/fp16.
        att = torch.matmul(q, k.transpose(2, 3)) * self.scale  # [B, nh, T, T]
        att = F.softmax(att, dim=-1, dtype=torch.float32).to(q.dtype)
        y = torch.matmul(att, v)  # [B, nh, T, hd]
        y = y.transpose(1, 2).reshape(b, t, c)
        return self.out_proj(y)


class SiglipMLP(nn.Module):
    def __init__(self, cfg: SiglipVisionConfig):
        super().__init__()
        self.act = _ACTIVATIONS[cfg.hidden_act]
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SiglipEncoderLayer(nn.Module):
    def __init__(self, cfg: SiglipVisionConfig):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.self_attn = SiglipAttention(cfg)
        self.layer_norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = SiglipMLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        x = x + self.mlp(self.layer_norm2(x))
        return x


class SiglipEncoder(nn.Module):
    def __init__(self, cfg: SiglipVisionConfig, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(SiglipEncoderLayer(cfg) for _ in range(num_layers))


class SiglipVisionEncoder(nn.Module):
    """SigLIP patch embedding + encoder layers 0 .. L+select_layer; see the module docstring."""

    def __init__(self, cfg: SiglipVisionConfig, select_layer: int = -2):
        super().__init__()
        self.cfg = cfg
        self.select_layer = select_layer
        self.embeddings = SiglipVisionEmbeddings(cfg)
        self.encoder = SiglipEncoder(cfg, _num_used_layers(cfg, select_layer))

    @staticmethod
    def used_keys(cfg: SiglipVisionConfig, select_layer: int = -2) -> list[str]:
        """Checkpoint keys (relative to ``...vision_model.``) this module loads: exactly its
        state-dict keys."""
        keys = [
            "embeddings.patch_embedding.weight",
            "embeddings.patch_embedding.bias",
            "embeddings.position_embedding.weight",
        ]
        for i in range(_num_used_layers(cfg, select_layer)):
            keys += [f"encoder.layers.{i}.{name}" for name in _LAYER_PARAMS]
        return keys

    @staticmethod
    def ignored_keys(cfg: SiglipVisionConfig, select_layer: int = -2) -> list[str]:
        """Vision-model keys a SigLIP checkpoint holds that VILA-U never reads: the layers after
        ``select_layer``, ``post_layernorm`` and the attention-pooling ``head``."""
        first_unused = _num_used_layers(cfg, select_layer)
        keys = [
            f"encoder.layers.{i}.{name}"
            for i in range(first_unused, cfg.num_hidden_layers)
            for name in _LAYER_PARAMS
        ]
        keys += ["post_layernorm.weight", "post_layernorm.bias"]
        keys += [f"head.{name}" for name in _HEAD_PARAMS]
        return keys

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        expected = (cfg.num_channels, cfg.image_size, cfg.image_size)
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != expected:
            raise ImageError(
                f"pixel_values has shape {tuple(pixel_values.shape)}; expected "
                f"[B, {', '.join(map(str, expected))}] (resize with preprocess(images, "
                f"{cfg.image_size}); the position embedding has a fixed {cfg.grid}x{cfg.grid} grid)"
            )
        if not pixel_values.is_floating_point():
            raise ImageError(
                f"pixel_values has dtype {pixel_values.dtype}; expected a float tensor in [-1, 1] "
                "from preprocess()"
            )
        # The caller's float32 pixels are cast to the weights' dtype, as the official code does
        # before calling the tower.
        x = self.embeddings(pixel_values.to(self.embeddings.patch_embedding.weight.dtype))
        for layer in self.encoder.layers:
            x = layer(x)
        return x  # [B, h*w, C]


_LAYER_PARAMS = tuple(
    f"{module}.{p}"
    for module in (
        "layer_norm1",
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.out_proj",
        "layer_norm2",
        "mlp.fc1",
        "mlp.fc2",
    )
    for p in ("weight", "bias")
)

# transformers' SiglipMultiheadAttentionPoolingHead, as stored under vision_model.head.
_HEAD_PARAMS = (
    "probe",
    "attention.in_proj_weight",
    "attention.in_proj_bias",
    "attention.out_proj.weight",
    "attention.out_proj.bias",
    "layernorm.weight",
    "layernorm.bias",
    "mlp.fc1.weight",
    "mlp.fc1.bias",
    "mlp.fc2.weight",
    "mlp.fc2.bias",
)


def preprocess(images: list[Image.Image], size: int) -> torch.Tensor:
    """Images -> pixel_values [B, 3, size, size] float32 in [-1, 1], as VILA-U's
    ``process_images`` (image_aspect_ratio "resize") with its CLIPImageProcessor.

    Steps: convert to RGB; ``Image.resize((size, size))`` with BICUBIC (Pillow's default for RGB,
    named here so it does not depend on the Pillow version); then the processor's arithmetic in
    its dtypes: ``uint8 * (1/255)`` (numpy float64) cast to float32, ``(x - 0.5) / 0.5`` in
    float32. The processor's own resize and centre crop are no-ops on an already square image.
    """
    if isinstance(images, Image.Image):
        raise ImageError("preprocess takes a list of PIL images; wrap a single image in a list")
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise ImageError(f"preprocess size must be a positive int, got {size!r}")
    if len(images) == 0:
        raise ImageError("preprocess got an empty list of images")
    out = []
    for i, image in enumerate(images):
        if not isinstance(image, Image.Image):
            raise ImageError(
                f"images[{i}] is a {type(image).__name__}, not a PIL.Image.Image "
                "(open files with PIL.Image.open)"
            )
        rgb = image.convert("RGB").resize((size, size), resample=Image.Resampling.BICUBIC)
        pixels = np.asarray(rgb, dtype=np.uint8)  # [S, S, 3]
        x = (pixels.astype(np.float64) * (1 / 255)).astype(np.float32)  # rescale in float64
        x = (x - np.float32(0.5)) / np.float32(0.5)  # normalize with mean = std = 0.5
        out.append(x.transpose(2, 0, 1))  # [3, S, S]
    return torch.from_numpy(np.ascontiguousarray(np.stack(out)))


def normalize_uint8(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 [..., 3, S, S] already at the model size, on any device -> float32 in [-1, 1], with
    ``preprocess``'s arithmetic (float64 rescale, float32 normalize), without leaving the device."""
    x = (pixels.to(torch.float64) * (1 / 255)).to(torch.float32)
    return (x - 0.5) / 0.5


__all__ = [
    "HF_SIGLIP_VISION_DEFAULTS",
    "SiglipVisionConfig",
    "SiglipVisionEncoder",
    "normalize_uint8",
    "preprocess",
]
