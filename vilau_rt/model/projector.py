"""mm_projector: vision width C -> LLM width H.

| name | shape     | dtype       |
|------|-----------|-------------|
| x    | [..., C]  | model dtype |
| out  | [..., H]  | model dtype |

Types the official ``mm_projector_cfg`` can name: ``identity``, ``linear``, ``mlp{N}x_gelu``
(Linear(C,H) then N-1 times GELU + Linear(H,H), GELU the exact erf form). Keys are
``layers.*`` as in ``mm_projector/model.safetensors``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

from ..errors import ConfigError
from .fields import check_fields


@dataclass
class ProjectorConfig:
    projector_type: str
    in_features: int
    out_features: int

    def __post_init__(self):
        check_fields(self, "mm_projector/config.json")
        t = self.projector_type
        if t not in ("identity", "linear") and not re.fullmatch(r"mlp(\d+)x_gelu", t):
            raise ConfigError(
                f"mm_projector_type {t!r} is not known; expected identity, linear or mlpNx_gelu"
            )
        if t == "identity" and self.in_features != self.out_features:
            raise ConfigError(
                f"identity projector needs mm_hidden_size == hidden_size, "
                f"got {self.in_features} and {self.out_features}"
            )


class Projector(nn.Module):
    def __init__(self, cfg: ProjectorConfig):
        super().__init__()
        t, c, h = cfg.projector_type, cfg.in_features, cfg.out_features
        if t == "identity":
            self.layers = nn.Identity()
        elif t == "linear":
            self.layers = nn.Linear(c, h)
        else:
            depth = int(re.fullmatch(r"mlp(\d+)x_gelu", t).group(1))
            modules = [nn.Linear(c, h)]
            for _ in range(1, depth):
                modules += [nn.GELU(), nn.Linear(h, h)]
            self.layers = nn.Sequential(*modules)

    def forward(self, x):
        return self.layers(x)
