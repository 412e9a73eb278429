"""Checks of the arguments users pass to a Pipeline, each naming the argument and the fix.

Numbers may be Python or numpy numbers (``np.int64(3)`` is a fine seed); strings where numbers
belong, booleans, NaN and infinity are refused rather than coerced or left to fail deep inside.
"""

from __future__ import annotations

import math
import numbers
import operator
from pathlib import Path

from .errors import GenerationError, PromptError


def integer(name: str, value, *, low: int | None = None, none_ok: bool = False) -> int | None:
    if value is None and none_ok:
        return None
    if isinstance(value, bool):
        raise GenerationError(f"{name} must be an integer, got {value!r}")
    try:
        n = operator.index(value)  # int and numpy integers, not floats or strings
    except TypeError:
        raise GenerationError(
            f"{name} must be an integer, got {value!r} ({type(value).__name__})"
        ) from None
    if low is not None and n < low:
        raise GenerationError(f"{name} must be >= {low}, got {n}")
    return n


def real(name: str, value, *, none_ok: bool = False) -> float | None:
    if value is None and none_ok:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise GenerationError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    x = float(value)
    if not math.isfinite(x):
        raise GenerationError(f"{name} must be finite, got {x}")
    return x


def seed(value) -> int | None:
    """None (a fresh random seed) or an integer in [0, 2**63)."""
    n = integer("seed", value, low=0, none_ok=True)
    if n is not None and n >= 2**63:
        raise GenerationError(f"seed must be < 2**63, got {n}")
    return n


def stop_strings(value) -> list[str]:
    """None, one string, or a list of strings (a lone string is one stop string, not a list of
    its characters)."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(s, str) for s in value):
        raise GenerationError(f"stop must be a string or a list of strings, got {value!r}")
    if any(s == "" for s in value):
        raise GenerationError("stop strings must not be empty (an empty one would stop at once)")
    return list(value)


def text(name: str, value, *, empty_ok: bool = False) -> str:
    """A prompt: a str that is valid Unicode (no lone surrogates, which cannot be tokenized)."""
    if not isinstance(value, str):
        raise PromptError(f"{name} must be a string, got {type(value).__name__}")
    if not empty_ok and not value.strip():
        raise PromptError(f"{name} is empty: pass the question or instruction as text")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise PromptError(
            f"{name} holds a character that is not valid Unicode ({value[e.start]!r} at index "
            f"{e.start}, a lone surrogate); decode the text with errors='replace' first"
        ) from None
    return value


def media_list(value, name: str) -> list:
    """``images=`` / ``videos=``: None, one item, or a list of items."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, (str, Path)) or hasattr(value, "shape") or hasattr(value, "mode"):
        return [value]  # one path, array, tensor or PIL image
    raise PromptError(
        f"{name} must be a list of {name} (paths, PIL images, arrays or tensors), got "
        f"{type(value).__name__}"
    )
