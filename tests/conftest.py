"""Shared test setup: where the fixtures written by the official tools live.

One setting, ``VILAU_RT_FIXTURES`` (default ``../shared/fixtures`` relative to the
repository root), points at them. Under CI (``CI`` set to a true value) a missing
fixture fails the run; elsewhere the test is skipped with the reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(os.environ.get("VILAU_RT_FIXTURES", REPO_ROOT.parent / "shared" / "fixtures"))


def _under_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def require_fixture(name: str) -> Path:
    """Path of fixture folder ``name``; skip (or fail under CI) when it is absent."""
    path = FIXTURES / name
    if not path.exists():
        reason = f"fixture {path} not found (set VILAU_RT_FIXTURES to the fixtures folder)"
        if _under_ci():
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def tiny_fixture() -> Path:
    """The tiny VILA-U checkpoint saved by the official code, with reference outputs."""
    return require_fixture("vilau-official-tiny")


@pytest.fixture(scope="session")
def awq_fixture() -> Path:
    """Tensors and a tiny LLaMA quantized by AutoAWQ itself."""
    return require_fixture("autoawq")
