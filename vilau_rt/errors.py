"""Exceptions raised by vilau_rt.

Each names the problem and the fix. They subclass the built-in exception a caller
would already catch (ValueError, FileNotFoundError, RuntimeError), so code that does
not know vilau_rt still handles them sensibly.
"""

from __future__ import annotations


class VilaURTError(Exception):
    """Base class of every vilau_rt error."""


class CheckpointError(VilaURTError, ValueError):
    """A checkpoint folder or file is malformed: bad JSON, missing or unexpected
    keys, wrong shapes or dtypes, truncated safetensors."""


class CheckpointNotFoundError(VilaURTError, FileNotFoundError):
    """A checkpoint path, sub-folder or shard does not exist."""


class ConfigError(VilaURTError, ValueError):
    """A configuration value is missing, unknown or out of range."""


class ImageError(VilaURTError, ValueError):
    """An image cannot be read or has an unsupported shape, mode or dtype."""


class PromptError(VilaURTError, ValueError):
    """A prompt is empty where one is needed, or longer than the context."""


class GenerationError(VilaURTError, ValueError):
    """A generation setting (cfg_scale, top_k, top_p, temperature, ...) is out of range."""


class CodesError(VilaURTError, ValueError):
    """RVQ codes have the wrong shape, dtype or range for this model."""


class BackendError(VilaURTError, RuntimeError):
    """A backend cannot run here (missing extension, device, or library)."""


class PipelineBusyError(VilaURTError, RuntimeError):
    """A request was started on a Pipeline by the thread that still holds an open stream on it
    (it would wait for itself forever)."""
