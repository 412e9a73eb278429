"""The NEON path of the CPU W4A16 GEMV on an x86 machine: cross-compiled for aarch64 and run under
qemu-user, it must return the scalar reference's bits (tests/ops/w4a16_isa_check.cpp); so must the
packed-layout GEMV's NEON path (its own scalar reference: fma per term, fixed 32-way tree).
Skips where the cross compiler (apt: g++-aarch64-linux-gnu) or qemu-aarch64 (apt: qemu-user)
is missing."""

from __future__ import annotations

from qemu_aarch64 import build_and_run, needs_qemu


@needs_qemu
def test_neon_gemv_returns_the_scalar_bits_under_qemu(tmp_path):
    sources = ["tests/ops/w4a16_isa_check.cpp", "csrc/w4a16/w4a16_cpu.cpp",
               "csrc/w4a16/w4a16_cpu_simd.cpp", "csrc/w4a16/w4a16_packed_cpu.cpp",
               "csrc/w4a16/w4a16_packed_simd.cpp", "csrc/w4a16/w4a16_args.cpp",
               "csrc/common/cpu_isa.cpp", "csrc/common/dtype.cpp"]  # fmt: skip
    out = build_and_run(tmp_path / "w4a16_isa_check", sources, ("-ffp-contract=off",))
    assert "isas: neon scalar" in out
    assert "0 of 40 cases differ" in out
    assert "packed isas: neon scalar" in out
    assert "0 of 135 packed cases differ" in out
