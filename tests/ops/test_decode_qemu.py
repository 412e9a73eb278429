"""csrc/decode's LlamaDecoder built for aarch64 (Jetson, Raspberry Pi; run under qemu) gives the
values of the same program built for this machine: float32 and packed W4A16 layers, GQA, a
left-padded row (tests/ops/decode_check.cpp); and on this machine its attention's SIMD clones
give the baseline build's bits."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from qemu_aarch64 import REPO, build_and_run, needs_qemu

SOURCES = [
    "tests/ops/decode_check.cpp", "csrc/decode/llama_decode_cpu.cpp", "csrc/gemv/gemv_f32_cpu.cpp",
    "csrc/w4a16/w4a16_packed_cpu.cpp", "csrc/w4a16/w4a16_packed_simd.cpp",
    "csrc/w4a16/w4a16_args.cpp", "csrc/w4a16/w4a16_cpu.cpp", "csrc/w4a16/w4a16_cpu_simd.cpp",
    "csrc/w4a8/w4a8_cpu.cpp", "csrc/w4a8/w4a8_x86.cpp", "csrc/w4a8/w4a8_neon.cpp",
    "csrc/common/cpu_isa.cpp", "csrc/common/dtype.cpp",
]  # fmt: skip


def _values(out: str, name: str) -> np.ndarray:
    block = out.split(f"{name}\n", 1)[1].split(f"{name} sum", 1)[0]
    return np.array([float(v) for v in block.split()])


def _host_run(exe, *flags: str) -> str:
    """decode_check built for this machine with ``flags``, run; its standard output."""
    host_cxx = shutil.which("g++")
    if host_cxx is None:
        pytest.skip("needs g++ for the host build")
    build = subprocess.run(
        [host_cxx, "-std=gnu++17", "-O2", "-fopenmp", "-ffp-contract=off", *flags, "-Icsrc",
         *SOURCES, "-o", str(exe)],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-3000:]
    return subprocess.run(
        [str(exe)], capture_output=True, text=True, timeout=120, check=True
    ).stdout


def test_attention_clones_return_the_baseline_bits(tmp_path):
    """The attention is compiled for AVX-512 / AVX2 / baseline x86-64 and picked at load time
    (llama_decode_cpu.cpp): the clone this machine runs prints the same values, to the last
    digit, as a build with the baseline only."""
    clones = _host_run(tmp_path / "clones")
    plain = _host_run(tmp_path / "plain", "-DVILAU_NO_TARGET_CLONES")
    assert "float32 sum" in clones and clones == plain


@needs_qemu
def test_aarch64_decoder_matches_this_machine(tmp_path):
    host = _host_run(tmp_path / "decode_check_host")
    arm = build_and_run(tmp_path / "decode_check_arm", SOURCES, ("-ffp-contract=off",))
    for name in ("float32", "w4a16"):
        h, a = _values(host, name), _values(arm, name)
        assert h.shape == a.shape == (12 * 2 * 64,)
        assert np.isfinite(h).all() and np.abs(h).max() > 0.1  # a live model, not zeros
        np.testing.assert_allclose(a, h, rtol=1e-5, atol=1e-5)
