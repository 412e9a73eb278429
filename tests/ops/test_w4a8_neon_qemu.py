"""The aarch64 paths of the CPU W4A8 and W8A8 GEMVs (csrc/w4a8) on an x86 machine: cross-compiled
and run under qemu-user, every path the emulated CPU lists must return the scalar reference's
bits (tests/ops/w4a8_isa_check.cpp). With qemu's "max" CPU (the Armv8.2 dot product of Jetson
Orin and Raspberry Pi 5) those are "neon-dotprod" and "neon"; on a Cortex-A72 (Raspberry Pi 4,
no dot product) the same program lists "neon" alone and must still run. Skips where the cross
compiler (apt: g++-aarch64-linux-gnu) or qemu-aarch64 (apt: qemu-user) is missing."""

from __future__ import annotations

from qemu_aarch64 import build, needs_qemu, run_qemu

SOURCES = [
    "tests/ops/w4a8_isa_check.cpp", "csrc/w4a8/w4a8_cpu.cpp", "csrc/w4a8/w4a8_x86.cpp",
    "csrc/w4a8/w4a8_neon.cpp", "csrc/common/cpu_isa.cpp",
]  # fmt: skip
# as CMakeLists.txt builds csrc/w4a8
FLAGS = ("-ffp-contract=off", "-DVILAU_WITH_OPENMP=1")
W4A8_CASES = 6 * 9  # shapes x M = 1..9, per non-scalar path
W8A8_CASES = 5 * 9


@needs_qemu
def test_neon_paths_return_the_scalar_bits_under_qemu(tmp_path):
    exe = tmp_path / "w4a8_isa_check"
    build(exe, SOURCES, FLAGS)
    out = run_qemu(exe, cpu="max")
    isas = out.split("w4a8 isas:", 1)[1].split("\n", 1)[0].split()
    assert isas[:2] == ["neon-dotprod", "neon"] and isas[-1] == "scalar", out
    paths = len(isas) - 1
    assert f"w4a8: 0 of {W4A8_CASES * paths} cases differ" in out, out
    assert f"w8a8: 0 of {W8A8_CASES * paths} cases differ" in out, out

    out = run_qemu(exe, cpu="cortex-a72")  # Armv8.0: no dot product, and no SIGILL
    assert "w4a8 isas: neon scalar\n" in out, out
    assert f"w4a8: 0 of {W4A8_CASES} cases differ" in out, out
    assert f"w8a8: 0 of {W8A8_CASES} cases differ" in out, out
