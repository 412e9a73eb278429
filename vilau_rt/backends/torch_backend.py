"""The reference backend: the PyTorch modules of ``vilau_rt.model``, eager, CPU or CUDA."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..model.vilau import VilaU
from .base import Backend


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, model: VilaU):
        self.model = model
        self.cfg = model.cfg

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @torch.no_grad()
    def encode_images(self, pixel_values):
        codes, z_q = self.model.encode_images(pixel_values)
        return codes, self.model.image_embeddings(z_q)

    def decode_codes(self, codes):
        return self.model.decode_codes(codes)

    @torch.no_grad()
    def embed_tokens(self, ids):
        return self.model.llm.embed(ids)

    def setup_cache(self, batch, length):
        self.model.llm.setup_cache(batch, length)

    @torch.no_grad()
    def forward(self, embeds, rope_pos, cache_pos, key_valid=None):
        return self.model.llm(embeds, rope_pos, cache_pos, key_valid)

    @torch.no_grad()
    def logits(self, hidden):
        return self.model.llm.logits(hidden)

    @torch.no_grad()
    def depth_generate(self, hidden, cfg_scale, sample, on_logits=None):
        rvq = self.model.quantizer

        def code_embedding(d, codes):
            return F.embedding(codes, rvq.codebook(d))

        codes, summed = self.model.depth_transformer.generate(
            hidden, code_embedding, cfg_scale, sample, on_logits
        )
        return codes, self.model.mm_projector(summed)
