"""vilau_rt: an edge inference runtime for VILA-U (image understanding and generation)."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["Pipeline", "__version__"]


def __getattr__(name: str):
    # Imported on first use so that `import vilau_rt` (and its CLI's --help) stays quick.
    if name == "Pipeline":
        from .pipeline import Pipeline

        return Pipeline
    raise AttributeError(f"module 'vilau_rt' has no attribute {name!r}")
