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


def build(exe: Path, sources: list[str], extra_flags: tuple[str, ...] = ()) -> None:
    """Compile ``sources`` (paths from the repository root) statically for aarch64 into ``exe``
    and assert it succeeds."""
    result = subprocess.run(
        [CXX, "-std=gnu++17", "-O2", "-fopenmp", *extra_flags, "-static", "-Icsrc", *sources,
         "-o", str(exe)],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]


def run_qemu(exe: Path, args: tuple[str, ...] = (), cpu: str | None = None) -> str:
    """Run ``exe`` under qemu with ``args``, assert it succeeds and return its standard output.
    ``cpu``: qemu's ``-cpu`` model (``qemu-aarch64 -cpu help``), e.g. "max" (every extension qemu
    emulates, the Armv8.2 dot product included) or "cortex-a72" (Armv8.0, a Raspberry Pi 4);
    None: qemu's default."""
    qemu = [QEMU] if cpu is None else [QEMU, "-cpu", cpu]
    run = subprocess.run(
        [*qemu, str(exe), *args], capture_output=True, text=True, timeout=300, check=False
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


def build_and_run(
    exe: Path,
    sources: list[str],
    extra_flags: tuple[str, ...] = (),
    args: tuple[str, ...] = (),
    cpu: str | None = None,
) -> str:
    """``build`` then ``run_qemu``: the program's standard output."""
    build(exe, sources, extra_flags)
    return run_qemu(exe, args, cpu)
