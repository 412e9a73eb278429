"""The float32 decode GEMV (csrc/gemv, ``vilau_rt.ops.native.linear``): every instruction-set
path returns the scalar reference's bits, the reference agrees with a float64 matmul, bad sizes
are refused by name, and ``native.linear`` equals ``F.linear`` on every shape it is given."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from gemv_calls import gemv_f32
from qemu_aarch64 import build_and_run, needs_qemu

from vilau_rt.ops import native

_C = pytest.importorskip("vilau_rt._C")


@pytest.mark.parametrize("m", [1, 2, 3, 4])
@pytest.mark.parametrize(("k", "n"), [(32, 1), (96, 37), (1024, 300), (2816, 64)])
def test_every_isa_returns_the_scalar_bits_and_the_scalar_is_near_float64(m, k, n):
    gen = torch.Generator().manual_seed(m * 1000 + k + n)
    x, w, b = (torch.randn(*s, generator=gen) for s in ((m, k), (n, k), (n,)))
    ref = gemv_f32(x, w, b, "scalar")
    for isa in _C.gemv_f32_isas():
        for threads in (1, 2):
            assert torch.equal(gemv_f32(x, w, b, isa, threads), ref), (isa, threads)
    exact = x.double() @ w.double().T + b.double()
    torch.testing.assert_close(ref.double(), exact, rtol=0, atol=2e-6 * k**0.5 * 4)


def test_bias_is_optional_and_added_last():
    x, w = torch.randn(2, 64), torch.randn(9, 64)
    b = torch.randn(9)
    assert torch.equal(gemv_f32(x, w, b), gemv_f32(x, w) + b)


@pytest.mark.parametrize(
    ("m", "k", "n", "isa", "match"),
    [
        (5, 64, 8, "auto", "M = 5"),
        (0, 64, 8, "auto", "M = 0"),
        (1, 48, 8, "auto", "K = 48"),
        (1, 64, 0, "auto", "N = 0"),
        (1, 64, 8, "sve9", "isa 'sve9'"),
    ],
)
def test_bad_sizes_and_isas_are_refused_by_name(m, k, n, isa, match):
    x, w = torch.zeros(max(m, 1), k), torch.zeros(max(n, 1), k)
    y = torch.empty(max(m, 1), max(n, 1))
    with pytest.raises(ValueError, match=match):
        _C.gemv_f32_cpu(x.data_ptr(), w.data_ptr(), 0, y.data_ptr(), m, k, n, 1, isa)


@pytest.mark.parametrize(
    "shape", [(1, 1, 96), (2, 1, 96), (1, 3, 96), (1, 7, 96), (4, 96), (1, 1, 40), (96,)]
)
def test_linear_equals_f_linear_on_every_shape(shape):
    gen = torch.Generator().manual_seed(len(shape))
    x = torch.randn(*shape, generator=gen)
    w = torch.randn(24, shape[-1], generator=gen)
    b = torch.randn(24, generator=gen)
    torch.testing.assert_close(native.linear(x, w, b), F.linear(x, w, b), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(native.linear(x, w), F.linear(x, w), rtol=1e-5, atol=1e-5)


def test_linear_uses_the_gemv_only_for_decode_shapes():
    w = torch.randn(8, 64)
    assert native.gemv_rows(torch.randn(1, 1, 64), w) == 1
    assert native.gemv_rows(torch.randn(2, 1, 64), w) == 2
    assert native.gemv_rows(torch.randn(1, 5, 64), w) == 0  # prefill: BLAS
    assert native.gemv_rows(torch.randn(1, 1, 48), torch.randn(8, 48)) == 0  # K % 32
    assert native.gemv_rows(torch.randn(1, 1, 64).half(), w.half()) == 0  # float32 only
    assert native.gemv_rows(torch.randn(1, 1, 64), w.t().contiguous().t()) == 0  # strided W


@needs_qemu
def test_neon_gemv_returns_the_scalar_bits_under_qemu(tmp_path):
    """Also the 16-bit-weight GEMV's NEON path (vcvt_f32_f16, vshll_n_u16) against the float32
    scalar reference on the upcast weights (tests/ops/test_gemv_w16.py covers x86-64)."""
    sources = ["tests/ops/gemv_f32_isa_check.cpp", "csrc/gemv/gemv_f32_cpu.cpp",
               "csrc/common/cpu_isa.cpp", "csrc/common/dtype.cpp"]  # fmt: skip
    out = build_and_run(tmp_path / "gemv_f32_isa_check", sources)
    assert "isas: neon scalar" in out
    assert "\n0 of 72 cases differ" in out
    # 2 dtypes x 4 M x 3 K x 5 N x (bias, none) x 2 isas
    assert "w16: 0 of 480 cases differ" in out
