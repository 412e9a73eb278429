"""Pixel decoder: summed code embeddings -> RGB image (the RQ-VAE / taming conv decoder).

| name     | shape             | dtype       | notes                                                  |
|----------|-------------------|-------------|--------------------------------------------------------|
| z        | [B, h, w, C]      | float       | sum over depth of the code embeddings, raster order    |
| returns  | [B, 3, H, W]      | model dtype | raw image, roughly [-1, 1]; H = h' * 2^(levels-1)      |

h' x w' is ``decoder_latent_shape`` when the config sets it (z is resized bilinearly to it
first), else h x w. Module names equal the checkpoint keys under ``rqvaesiglip.``
(``post_quant_conv.*``, ``decoder.*``), so those load with ``strict=True``.

Graph, as the official ``RQVAESiglipModel.decode`` and ``rqvaesiglip/modules.py`` compute it:
[bilinear resize] -> post_quant_conv (1x1, C -> z_channels) -> conv_in (3x3) ->
mid (ResnetBlock, AttnBlock, ResnetBlock) -> for level = levels-1 .. 0: num_res_blocks+1
ResnetBlocks (each followed by an AttnBlock when the level's resolution is in attn_resolutions),
then nearest x2 + 3x3 conv for level >= 1 -> GroupNorm -> SiLU -> conv_out (3x3).
GroupNorm has 32 groups and eps 1e-6. Dropout is a training-time op and is not built.

Dtypes: upstream casts to bfloat16 after the bilinear resize and after every nearest upsample
(its released models are bf16). Here both cast back to the input dtype instead: bit-identical for
a bf16 model (nearest copies values; the resize runs in float32 in both), and it keeps a float32
or float16 model in its own dtype. The AttnBlock softmax runs in the model dtype, as upstream.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .fields import check_fields


@dataclass
class PixelDecoderConfig:
    embed_dim: int  # C, width of the code embeddings fed in
    z_channels: int  # width after post_quant_conv
    ch: int  # base channel count; level i has ch * ch_mult[i] channels
    ch_mult: tuple  # one entry per resolution level
    num_res_blocks: int  # ResnetBlocks per level in the encoder; the decoder has one more
    attn_resolutions: tuple  # resolutions (in pixels of `resolution`) that get AttnBlocks
    resolution: int  # output side the decoder was built for; places the AttnBlocks
    out_ch: int = 3
    in_channels: int = 3  # encoder-only; kept so a ddconfig round-trips
    dropout: float = 0.0  # training-only
    double_z: bool = False  # encoder-only
    decoder_latent_shape: tuple | None = None  # (h', w') to resize z to, or None

    def __post_init__(self):
        check_fields(self, "vision_tower/config.json rqvaesiglip.ddconfig")
        self.ch_mult = tuple(self.ch_mult)
        self.attn_resolutions = tuple(self.attn_resolutions)
        if self.decoder_latent_shape is not None:
            self.decoder_latent_shape = tuple(self.decoder_latent_shape)
            if len(self.decoder_latent_shape) != 2 or not all(
                _positive_int(v) for v in self.decoder_latent_shape
            ):
                raise ConfigError(
                    f"decoder_latent_shape {self.decoder_latent_shape!r} must be [h, w] of "
                    "positive ints, or null"
                )
        for name in ("embed_dim", "z_channels", "ch", "num_res_blocks", "resolution", "out_ch"):
            if not _positive_int(getattr(self, name)):
                raise ConfigError(
                    f"pixel decoder {name} must be a positive int, got {getattr(self, name)!r}"
                )
        if not self.ch_mult or not all(_positive_int(m) for m in self.ch_mult):
            raise ConfigError(f"pixel decoder ch_mult {self.ch_mult!r} must be positive ints")
        for m in self.ch_mult:
            if (self.ch * m) % 32:
                raise ConfigError(
                    f"pixel decoder channels ch*mult = {self.ch}*{m} are not a multiple of the "
                    "32 GroupNorm groups"
                )
        if self.resolution % 2 ** (self.num_levels - 1):
            raise ConfigError(
                f"pixel decoder resolution {self.resolution} is not divisible by "
                f"2^(len(ch_mult)-1) = {2 ** (self.num_levels - 1)}"
            )

    @property
    def num_levels(self) -> int:
        return len(self.ch_mult)

    @property
    def upsample_factor(self) -> int:
        """Output pixels per latent position along each side."""
        return 2 ** (self.num_levels - 1)

    @classmethod
    def from_ddconfig(
        cls, ddconfig: dict, embed_dim: int, decoder_latent_shape=None
    ) -> PixelDecoderConfig:
        """Build from ``vision_tower/config.json`` -> ``rqvaesiglip.ddconfig``, ``embed_dim`` and
        ``decoder_latent_shape``."""
        if not isinstance(ddconfig, dict):
            raise ConfigError(f"ddconfig must be a dict, got {type(ddconfig).__name__}")
        # Upstream Decoder arguments that VILA-U leaves at their defaults; other values would
        # change the graph, so they are rejected rather than ignored.
        fixed = {"resamp_with_conv": True, "give_pre_end": False}
        for key, value in fixed.items():
            if key in ddconfig and ddconfig[key] != value:
                raise ConfigError(
                    f"ddconfig {key}={ddconfig[key]!r} is not supported (only {value!r})"
                )
        known = set(cls.__dataclass_fields__) - {"embed_dim", "decoder_latent_shape"}
        unknown = sorted(set(ddconfig) - known - set(fixed))
        if unknown:
            raise ConfigError(f"ddconfig has unknown keys {unknown}; known: {sorted(known)}")
        required = (
            "z_channels",
            "ch",
            "ch_mult",
            "num_res_blocks",
            "attn_resolutions",
            "resolution",
        )
        missing = [k for k in required if k not in ddconfig]
        if missing:
            raise ConfigError(f"ddconfig lacks {missing}")
        kwargs = {k: v for k, v in ddconfig.items() if k in known}
        return cls(embed_dim=embed_dim, decoder_latent_shape=decoder_latent_shape, **kwargs)


def _positive_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def Normalize(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """x + conv2(silu(norm2(conv1(silu(norm1(x)))))), with a 1x1 nin_shortcut on x when the
    channel count changes."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1 = Normalize(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm2 = Normalize(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.nin_shortcut = None
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        if self.nin_shortcut is not None:
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the h*w positions, 1x1 convs for q/k/v/proj_out."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = Normalize(channels)
        self.q = nn.Conv2d(channels, channels, kernel_size=1)
        self.k = nn.Conv2d(channels, channels, kernel_size=1)
        self.v = nn.Conv2d(channels, channels, kernel_size=1)
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = x.shape
        h = self.norm(x)
        q = self.q(h).reshape(b, c, hh * ww).transpose(1, 2)  # [B, N, c]
        k = self.k(h).reshape(b, c, hh * ww)  # [B, c, N]
        v = self.v(h).reshape(b, c, hh * ww)  # [B, c, N]
        att = torch.bmm(q, k) * c**-0.5  # [B, N(query), N(key)]
        att = F.softmax(att, dim=2)  # model dtype, as upstream
        out = torch.bmm(v, att.transpose(1, 2)).reshape(
            b, c, hh, ww
        )  # out[:, :, i] = sum_j v_j a_ij
        return x + self.proj_out(out)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Nearest x2 copies values, so running it in the input dtype equals upstream's
        # float32 round trip.
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UpLevel(nn.Module):
    """One resolution level: ResnetBlocks, optional AttnBlocks, optional Upsample."""

    def __init__(self, block_in: int, block_out: int, n_blocks: int, attn: bool, upsample: bool):
        super().__init__()
        self.block = nn.ModuleList()
        self.attn = nn.ModuleList()
        for _ in range(n_blocks):
            self.block.append(ResnetBlock(block_in, block_out))
            block_in = block_out
            if attn:
                self.attn.append(AttnBlock(block_out))
        self.upsample = Upsample(block_out) if upsample else None

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.block):
            h = block(h)
            if len(self.attn):
                h = self.attn[i](h)
        if self.upsample is not None:
            h = self.upsample(h)
        return h


class Decoder(nn.Module):
    def __init__(self, cfg: PixelDecoderConfig):
        super().__init__()
        n = cfg.num_levels
        block_in = cfg.ch * cfg.ch_mult[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, block_in, kernel_size=3, padding=1)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in)
        self.mid.attn_1 = AttnBlock(block_in)
        self.mid.block_2 = ResnetBlock(block_in, block_in)

        # Levels are built from the lowest resolution (index n-1) up, as they run, but stored by
        # level index so that up.{i} matches the checkpoint. The AttnBlocks' placement uses the
        # nominal resolution from the config, never the actual input size (as upstream).
        levels = {}
        curr_res = cfg.resolution // cfg.upsample_factor
        for i in reversed(range(n)):
            block_out = cfg.ch * cfg.ch_mult[i]
            levels[i] = UpLevel(
                block_in,
                block_out,
                n_blocks=cfg.num_res_blocks + 1,
                attn=curr_res in cfg.attn_resolutions,
                upsample=i != 0,
            )
            block_in = block_out
            if i != 0:
                curr_res *= 2
        self.up = nn.ModuleList(levels[i] for i in range(n))

        self.norm_out = Normalize(block_in)
        self.conv_out = nn.Conv2d(block_in, cfg.out_ch, kernel_size=3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)  # [B, ch*ch_mult[-1], h', w']
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        for level in reversed(self.up):  # lowest resolution first
            h = level(h)
        h = self.conv_out(F.silu(self.norm_out(h)))  # [B, out_ch, H, W]
        return h


class PixelDecoder(nn.Module):
    """post_quant_conv + Decoder; see the module docstring for the I/O table."""

    def __init__(self, cfg: PixelDecoderConfig):
        super().__init__()
        self.cfg = cfg
        self.post_quant_conv = nn.Conv2d(cfg.embed_dim, cfg.z_channels, kernel_size=1)
        self.decoder = Decoder(cfg)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        if z.ndim != 4 or z.shape[-1] != cfg.embed_dim:
            raise ValueError(
                f"pixel decoder input has shape {tuple(z.shape)}; expected [B, h, w, "
                f"{cfg.embed_dim}] (channels last: the summed code embeddings)"
            )
        if not z.is_floating_point():
            raise ValueError(
                f"pixel decoder input has dtype {z.dtype}; expected float code embeddings "
                "(look codes up in the codebooks first)"
            )
        dtype = self.post_quant_conv.weight.dtype
        x = z.permute(0, 3, 1, 2).contiguous()  # [B, C, h, w]
        if cfg.decoder_latent_shape is not None:
            # Upstream resizes in float32 (align_corners=False) and casts to the model dtype.
            x = F.interpolate(x.float(), size=cfg.decoder_latent_shape, mode="bilinear")
        x = self.post_quant_conv(x.to(dtype))  # [B, z_channels, h', w']
        return self.decoder(x)  # [B, out_ch, H, W]


def to_uint8(raw: torch.Tensor) -> np.ndarray:
    """Raw decoder output [B, 3, H, W] -> uint8 RGB [B, H, W, 3], as the official code saves
    images: float32 ``clamp((raw + 1) * 127.5, 0, 255)``, then truncation (numpy astype)."""
    if raw.ndim != 4 or raw.shape[1] != 3:
        raise ValueError(
            f"to_uint8 expects the decoder output [B, 3, H, W], got {tuple(raw.shape)}"
        )
    pixels = raw.detach().to(torch.float32).add(1).mul(127.5).clamp(0, 255)
    return pixels.permute(0, 2, 3, 1).cpu().numpy().astype(np.uint8)


__all__ = ["PixelDecoder", "PixelDecoderConfig", "to_uint8"]
