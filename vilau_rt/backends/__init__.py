"""Backends: one interface, several engines.

The Pipeline and the generation loops talk to a backend only through ``Backend``'s calls: encode
images to codes and LLM embeddings, decode codes to pixels, embed tokens, run the LLM over new
positions with a static KV cache, project hidden states to logits, and produce the D codes of one
image position (depth transformer + CFG + sampling). ``torch`` is the reference; others
(``native``, ``onnxruntime``, ``tensorrt``) implement the same calls.
"""

from __future__ import annotations

from .base import Backend
from .torch_backend import TorchBackend

__all__ = ["Backend", "TorchBackend"]
