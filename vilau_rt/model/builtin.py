"""Built-in models: checkpoints shipped inside the package, found by name.

``Pipeline.from_pretrained("shapes-demo")`` and every CLI command that takes a checkpoint go
through ``resolve_checkpoint``: a built-in name wins over a path of the same spelling; anything
else is a path. A bare name that is neither a built-in nor an existing path is an error that
lists the built-ins.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import CheckpointNotFoundError

MODELS_DIR = Path(__file__).parent.parent / "data" / "models"


def builtin_names() -> list[str]:
    """Names of the shipped checkpoints (folders of ``vilau_rt/data/models`` with a config)."""
    if not MODELS_DIR.is_dir():
        return []
    return sorted(p.name for p in MODELS_DIR.iterdir() if (p / "config.json").is_file())


def resolve_checkpoint(name_or_path: str | os.PathLike) -> Path:
    """The folder of built-in model ``name_or_path``, else ``name_or_path`` as a path."""
    if isinstance(name_or_path, str) and name_or_path in builtin_names():
        return MODELS_DIR / name_or_path
    path = Path(name_or_path)
    bare = isinstance(name_or_path, str) and os.sep not in name_or_path and "/" not in name_or_path
    if bare and not path.exists() and not name_or_path.startswith("."):
        raise CheckpointNotFoundError(
            f"{name_or_path!r} is neither a built-in model nor an existing path; "
            f"built-in models: {builtin_names()}"
        )
    return path
