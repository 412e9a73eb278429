"""The backend interface.

| call            | in                                              | out                              |
|-----------------|-------------------------------------------------|----------------------------------|
| encode_images   | pixel_values [B, 3, S, S] float32 in [-1, 1]    | codes [B, h, w, D] int64, embeds [B, h*w, H] |
| decode_codes    | codes [B, h, w, D] int64                        | raw pixels [B, 3, H_img, W_img]  |
| embed_tokens    | ids [B, T] int64                                | [B, T, H]                        |
| setup_cache     | batch, length                                   | (static KV cache, allocated once)|
| forward         | embeds [B, T, H], rope_pos [B, T], cache_pos, key_valid [B, S] or None | hidden [B, T, H] |
| logits          | hidden [B, H]                                   | [B, V] float32                   |
| depth_generate  | hidden [2n, H], cfg_scale, sample(logits)->codes | codes [n, D], next embeds [n, H] |
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import torch

from ..model.config import VilaUConfig


class Backend(ABC):
    name: str = "abstract"
    cfg: VilaUConfig
    device: torch.device
    dtype: torch.dtype

    @abstractmethod
    def encode_images(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    @abstractmethod
    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def setup_cache(self, batch: int, length: int) -> None: ...

    @abstractmethod
    def forward(
        self,
        embeds: torch.Tensor,
        rope_pos: torch.Tensor,
        cache_pos: int,
        key_valid: torch.Tensor | None = None,
    ) -> torch.Tensor: ...

    @abstractmethod
    def logits(self, hidden: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def depth_generate(
        self,
        hidden: torch.Tensor,
        cfg_scale: float,
        sample: Callable[[torch.Tensor], torch.Tensor],
        on_logits: Callable[[int, torch.Tensor], None] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


def check_cache_length(cfg: VilaUConfig, length: int) -> None:
    """setup_cache's bound for the graph backends, whose graphs hold the model context at most."""
    if length > cfg.llm.context_length:
        raise ValueError(
            f"KV cache length {length} exceeds the model context {cfg.llm.context_length}"
        )


def check_step(cfg: VilaUConfig, cache_batch: int, cache_length: int, embeds, rope_pos,
               cache_pos: int) -> None:  # fmt: skip
    """forward's checks for the graph backends (onnxruntime, tensorrt): the step must fit the
    static KV cache, and its RoPE positions the table that was exported into the graphs."""
    B, T, _ = embeds.shape
    if B != cache_batch:
        raise ValueError(f"batch {B} does not match the KV cache's batch {cache_batch}")
    if cache_pos + T > cache_length:
        raise ValueError(
            f"sequence of {cache_pos + T} tokens does not fit the KV cache of {cache_length}"
        )
    lc = cfg.llm
    table = max(lc.context_length, lc.max_position_embeddings)  # the exported RoPE table
    if int(rope_pos.min()) < 0 or int(rope_pos.max()) >= table:
        raise ValueError(f"rope_pos must lie in [0, {table}), got {rope_pos.tolist()}")
