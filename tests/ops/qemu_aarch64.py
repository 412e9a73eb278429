"""Build a C++ check program for aarch64 and run it under qemu-user (the NEON paths on an x86
machine). Tests skip where the cross compiler (apt: g++-aarch64-linux-gnu) or qemu-aarch64
(apt: qemu-user) is missing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CXX = shutil.which("aarch64-linux-gnu-g++")
QEMU = shutil.which("qemu-aarch64")

needs_qemu = pytest.mark.skipif(
    not (CXX and QEMU), reason="needs aarch64-linux-gnu-g++ and qemu-aarch64"
)


def build_and_run(
    exe: Path, sources: list[str], extra_flags: tuple[str, ...] = (), args: tuple[str, ...] = ()
) -> str:
    """Compile ``sources`` (paths from the repository root) statically for aarch64 into ``exe``,
    run it under qemu with ``args``, assert both succeed, and return its standard output."""
    build = subprocess.run(
        [CXX, "-std=gnu++17", "-O2", "-fopenmp", *extra_flags, "-static", "-Icsrc", *sources,
         "-o", str(exe)],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-3000:]
    run = subprocess.run(
        [QEMU, str(exe), *args], capture_output=True, text=True, timeout=300, check=False
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout
