"""The NEON path of the CPU W4A16 GEMV on an x86 machine: cross-compiled for aarch64 and run under
qemu-user, it must return the scalar reference's bits (tests/ops/w4a16_isa_check.cpp); so must the
packed-layout GEMV's NEON path (its own scalar reference: fma per term, fixed 32-way tree).
Skips where the cross compiler (apt: g++-aarch64-linux-gnu) or qemu-aarch64 (apt: qemu-user)
is missing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CXX = shutil.which("aarch64-linux-gnu-g++")
QEMU = shutil.which("qemu-aarch64")


@pytest.mark.skipif(not (CXX and QEMU), reason="needs aarch64-linux-gnu-g++ and qemu-aarch64")
def test_neon_gemv_returns_the_scalar_bits_under_qemu(tmp_path):
    exe = tmp_path / "w4a16_isa_check"
    sources = ["tests/ops/w4a16_isa_check.cpp", "csrc/w4a16/w4a16_cpu.cpp",
               "csrc/w4a16/w4a16_cpu_simd.cpp", "csrc/w4a16/w4a16_packed_cpu.cpp",
               "csrc/w4a16/w4a16_packed_simd.cpp", "csrc/w4a16/w4a16_args.cpp",
               "csrc/common/cpu_isa.cpp", "csrc/common/dtype.cpp"]  # fmt: skip
    build = subprocess.run(
        [CXX, "-std=gnu++17", "-O2", "-fopenmp", "-ffp-contract=off", "-static", "-Icsrc",
         *sources, "-o", str(exe)],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-3000:]
    run = subprocess.run([QEMU, str(exe)], capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "isas: neon scalar" in run.stdout
    assert "0 of 40 cases differ" in run.stdout
    assert "packed isas: neon scalar" in run.stdout
    assert "0 of 135 packed cases differ" in run.stdout
