"""Residual quantizer (RQ-VAE bottleneck) of the VILA-U vision tower.

| name      | shape        | dtype       | notes                                              |
|-----------|--------------|-------------|----------------------------------------------------|
| features  | [..., C]     | model dtype | SigLIP features of layer L-2                       |
| codes     | [..., D]     | int64       | one code per depth, in [0, n_embed)                |
| z_q       | [..., C]     | model dtype | sum of the chosen code embeddings                  |

Codebook d is ``codebooks.{d}.weight`` [n_embed + 1, C]; the last row is the padding row and is
never a valid code. With ``shared_codebook`` one table serves every depth. The arithmetic mirrors
the official quantizer (distances ``||r||^2 + ||e||^2 - 2 r.e`` with ``addmm`` in the model dtype,
residual updated in place), because exact code parity with a bf16 model needs the same rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .fields import check_fields


@dataclass
class RVQConfig:
    n_embed: int  # valid codes per codebook (the table has one more, padding, row)
    embed_dim: int  # C
    depth: int  # D
    shared_codebook: bool = False
    grid: tuple[int, int] = (16, 16)  # (h, w) code positions per image

    def __post_init__(self):
        check_fields(self, "vision_tower/config.json rqvaesiglip")

    @property
    def num_codebooks(self) -> int:
        return 1 if self.shared_codebook else self.depth


class ResidualQuantizer(nn.Module):
    def __init__(self, cfg: RVQConfig):
        super().__init__()
        self.cfg = cfg
        self.codebooks = nn.ModuleList(
            nn.Embedding(cfg.n_embed + 1, cfg.embed_dim) for _ in range(cfg.num_codebooks)
        )

    def codebook(self, d: int) -> torch.Tensor:
        """Weight [n_embed + 1, C] used at depth d."""
        return self.codebooks[0 if self.cfg.shared_codebook else d].weight

    def stacked_codebooks(self) -> torch.Tensor:
        """[num_codebooks, n_embed + 1, C], the layout of the vilau::rvq_* kernels: a view of
        the codebooks where they already lie one after another in one tensor (``load_vilau``
        reads them so), else a stacked copy."""
        ws = [cb.weight for cb in self.codebooks]
        first = ws[0]
        size = first.numel()
        if all(
            w.is_contiguous()
            and w.dtype == first.dtype
            and w.device == first.device
            and w.untyped_storage().data_ptr() == first.untyped_storage().data_ptr()
            and w.storage_offset() == first.storage_offset() + d * size
            for d, w in enumerate(ws)
        ):
            return first.as_strided((len(ws), *first.shape), (size, *first.stride()))
        return torch.stack(ws)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features [..., C] -> (codes [..., D], z_q [..., C]) (z_q in straight-through form)."""
        shape = x.shape[:-1]
        flat = x.reshape(-1, x.shape[-1])
        residual = flat.clone()
        aggregated = torch.zeros_like(flat)
        codes = []
        for d in range(self.cfg.depth):
            table = self.codebook(d)
            valid = table[:-1]
            dist = torch.addmm(
                residual.pow(2.0).sum(dim=1, keepdim=True) + valid.pow(2.0).sum(dim=1)[None],
                residual,
                valid.t(),
                alpha=-2.0,
            )
            code = dist.argmin(dim=-1)
            quant = F.embedding(code, table)
            residual.sub_(quant)
            aggregated.add_(quant)
            codes.append(code)
        codes = torch.stack(codes, dim=-1).view(*shape, self.cfg.depth)
        # the official encoder returns x + (z_q - x).detach(); keep its rounding
        z_q = (flat + (aggregated - flat)).view(*shape, -1)
        return codes, z_q

    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [..., D] -> per-depth embeddings [..., D, C]."""
        if codes.shape[-1] != self.cfg.depth:
            raise ValueError(f"codes last dim {codes.shape[-1]} != RVQ depth {self.cfg.depth}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.cfg.n_embed):
            raise ValueError(
                f"codes must lie in [0, {self.cfg.n_embed}); got range "
                f"[{int(codes.min())}, {int(codes.max())}]"
            )
        per_depth = [F.embedding(codes[..., d], self.codebook(d)) for d in range(self.cfg.depth)]
        return torch.stack(per_depth, dim=-2)

    def embed_sum(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [..., D] -> summed embedding [..., C] (cumulative sum, as upstream decodes)."""
        return self.embed(codes).cumsum(dim=-2)[..., -1, :]
