"""The aarch64 paths of the CPU W4A8 and W8A8 GEMVs (csrc/w4a8) on an x86 machine: cross-compiled
and run under qemu-user, every path the emulated CPU lists must return the scalar reference's
bits (tests/ops/w4a8_isa_check.cpp). With qemu's "max" CPU (the Armv8.2 dot product of Jetson
Orin and Raspberry Pi 5) that includes "neon-dotprod"; on a Cortex-A72 (Raspberry Pi 4, no dot
product) the same program must not list it and must still run. Skips where the cross compiler
(apt: g++-aarch64-linux-gnu) or qemu-aarch64 (apt: qemu-user) is missing."""

from __future__ import annotations

from qemu_aarch64 import build, needs_qemu, run_qemu

SOURCES = [
    "tests/ops/w4a8_isa_check.cpp", "csrc/w4a8/w4a8_cpu.cpp", "csrc/w4a8/w4a8_simd.cpp",
    "csrc/common/cpu_isa.cpp",
]  # fmt: skip
# as CMakeLists.txt builds csrc/w4a8 (thread_share splits the tiles only with VILAU_WITH_OPENMP)
FLAGS = ("-ffp-contract=off", "-DVILAU_WITH_OPENMP=1")
W4A8_CASES = 6 * 9  # shapes x M = 1..9, per non-scalar path
W8A8_CASES = 5 * 9


@needs_qemu
def test_neon_dotprod_returns_the_scalar_bits_under_qemu(tmp_path):
    exe = tmp_path / "w4a8_isa_check"
    build(exe, SOURCES, FLAGS)
    out = run_qemu(exe, cpu="max")
    isas = out.split("w4a8 isas:", 1)[1].split("\n", 1)[0].split()
    assert "neon-dotprod" in isas, out
    assert isas[-1] == "scalar", out
    paths = len(isas) - 1
    assert f"w4a8: 0 of {W4A8_CASES * paths} cases differ" in out, out
    assert f"w8a8: 0 of {W8A8_CASES * paths} cases differ" in out, out

    plain = run_qemu(exe, cpu="cortex-a72")  # Armv8.0: no dot product, no SIGILL
    assert "neon-dotprod" not in plain.split("w4a8 isas:", 1)[1].split("\n", 1)[0], plain
