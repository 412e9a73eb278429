"""The VILA-U model: its parts, composed by attribute, and the computations that join them.

| method               | in                              | out                                   |
|----------------------|---------------------------------|---------------------------------------|
| encode_images        | pixel_values [B, 3, S, S]       | codes [B, h, w, D] int64, z_q [B, h, w, C] |
| image_embeddings     | z_q [B, h, w, C]                | [B, h*w, H] LLM input embeddings      |
| codes_to_embeddings  | codes [..., D]                  | [..., H] (RVQ sum -> mm_projector)    |
| decode_codes         | codes [B, h, w, D]              | raw pixels [B, 3, H_img, W_img] ~[-1, 1] |

The generation loops (text and images) live in ``generate.py``; this module only holds weights.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import VilaUConfig
from .depth import DepthTransformer
from .llama import LlamaForCausalLM
from .pixel_decoder import PixelDecoder
from .projector import Projector
from .rvq import ResidualQuantizer
from .siglip import SiglipVisionEncoder


class VilaU(nn.Module):
    def __init__(self, cfg: VilaUConfig):
        super().__init__()
        self.cfg = cfg
        self.vision_tower = SiglipVisionEncoder(cfg.vision, cfg.select_layer)
        self.quantizer = ResidualQuantizer(cfg.rvq)
        self.pixel_decoder = PixelDecoder(cfg.decoder)
        self.depth_transformer = DepthTransformer(cfg.depth)
        self.mm_projector = Projector(cfg.projector)
        self.llm = LlamaForCausalLM(cfg.llm)

    @property
    def dtype(self) -> torch.dtype:
        return self.llm.model.norm.weight.dtype  # the compute dtype (a Linear16 keeps 16 bits)

    @property
    def device(self) -> torch.device:
        return self.llm.lm_head.weight.device

    @torch.no_grad()
    def encode_images(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B = pixel_values.shape[0]
        h, w = self.cfg.grid
        feats = self.vision_tower(pixel_values.to(self.dtype))  # [B, h*w, C]
        codes, z_q = self.quantizer.encode(feats.view(B, h, w, -1))
        return codes, z_q

    @torch.no_grad()
    def image_embeddings(self, z_q: torch.Tensor) -> torch.Tensor:
        return self.mm_projector(z_q.flatten(1, 2))

    @torch.no_grad()
    def codes_to_embeddings(self, codes: torch.Tensor) -> torch.Tensor:
        return self.mm_projector(self.quantizer.embed_sum(codes))

    @torch.no_grad()
    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        return self.pixel_decoder(self.quantizer.embed_sum(codes))
