"""Type and range checks of the part configs' fields, run before any of them is used.

A config value of the wrong type (``"hidden_size": "96"``) or an impossible size
(``"num_attention_heads": 0``) would otherwise surface later as a TypeError or a
ZeroDivisionError deep inside the model; here it is a ConfigError naming the field and its file.
"""

from __future__ import annotations

import dataclasses
import math

from ..errors import ConfigError

# int fields that may be 0 (token ids, counts that can be empty); every other int must be >= 1
NON_NEGATIVE = {"bos_token_id", "eos_token_id", "pad_token_id", "num_res_blocks"}


def check_fields(obj, where: str) -> None:
    """Raise ConfigError for the first field of dataclass ``obj`` whose value does not fit its
    annotation (``int``, ``float``, ``bool``, ``str``, optionally ``| None``)."""
    for f in dataclasses.fields(obj):
        kind = str(f.type)
        value = getattr(obj, f.name)
        if kind.endswith(" | None"):
            if value is None:
                continue
            kind = kind[: -len(" | None")]
        problem = _problem(f.name, kind, value)
        if problem:
            raise ConfigError(f"{where}: {f.name} {problem}, got {value!r}")


def _problem(name: str, kind: str, value) -> str | None:
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            return "must be an integer"
        low = 0 if name in NON_NEGATIVE else 1
        if value < low:
            return f"must be >= {low}"
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "must be a number"
        if not math.isfinite(value):
            return "must be finite"
    elif kind == "bool":
        if not isinstance(value, bool):
            return "must be true or false"
    elif kind == "str" and not isinstance(value, str):
        return "must be a string"
    return None
