"""The GEMV on float16 / bfloat16 weights (csrc/gemv ``gemv_w16_cpu``, ``native.linear`` with a
16-bit weight): every instruction-set path returns the bits of the float32 GEMV on the weights
upcast by torch (``w.float()``), across tails, bias or none, subnormal and large weights; the
result agrees with a float64 matmul; bad sizes and dtypes are refused by name; ``native.linear``
runs it for decode shapes and ``F.linear(x, w.float(), b)`` otherwise; ``native.exact_16bit``
picks the 16-bit dtype on hand-checked values. (The NEON path: test_gemv_f32.py under qemu.)"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from gemv_calls import gemv_f32, gemv_w16

from vilau_rt.ops import native

_C = pytest.importorskip("vilau_rt._C")

W16 = [torch.float16, torch.bfloat16]


@pytest.mark.parametrize("dtype", W16)
@pytest.mark.parametrize("m", [1, 2, 3, 4])
# K = 2080: rows over 4 KiB, read 8 at a time at M = 1 (shorter ones one at a time: plan_for)
@pytest.mark.parametrize("k", [32, 96, 1024, 2080])
@pytest.mark.parametrize("n", [1, 7, 8, 9, 100])
@pytest.mark.parametrize("with_bias", [True, False])
def test_every_isa_returns_the_f32_bits_on_the_upcast_weights(dtype, m, k, n, with_bias):
    gen = torch.Generator().manual_seed(m * 1000 + k + n + 7 * with_bias)
    x = torch.randn(m, k, generator=gen)
    w = torch.randn(n, k, generator=gen).to(dtype)
    b = torch.randn(n, generator=gen) if with_bias else None
    ref = gemv_f32(x, w.float(), b, "scalar")  # torch's upcast, the float32 scalar reference
    for isa in _C.gemv_f32_isas():
        for threads in (1, 2):
            assert torch.equal(gemv_w16(x, w, b, isa, threads), ref), (isa, threads)
    exact = x.double() @ w.double().T + (0 if b is None else b.double())
    torch.testing.assert_close(ref.double(), exact, rtol=0, atol=2e-6 * k**0.5 * 4)


# Row o of W is normal * 2**exps[o % len]: float16 subnormal rows (2**-24: multiples of the
# smallest subnormal) up to rows clamped at the largest half; bfloat16 rows of float32 subnormals
# (2**-133) up to 2**100. Each row's output depends on its own weights' conversion only.
EXPONENTS = {torch.float16: [0, -24, -16, 14, -5], torch.bfloat16: [0, -133, -120, 100, 7]}


@pytest.mark.parametrize("dtype", W16)
@pytest.mark.parametrize("m", [1, 4])
def test_subnormal_and_large_weights_convert_exactly(dtype, m):
    n, k = 40, 256
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(m, k, generator=gen)
    exps = torch.tensor(EXPONENTS[dtype] * (n // 5), dtype=torch.float64)
    w = torch.randn(n, k, generator=gen, dtype=torch.float64) * torch.exp2(exps)[:, None]
    if dtype == torch.float16:
        w = w.clamp(-65504, 65504)
    w = w.to(dtype)
    assert torch.isfinite(w.float()).all()
    if dtype == torch.float16:
        assert (w[1].float().abs() < 2**-14).float().mean() > 0.9  # mostly subnormal halves
    else:
        assert (w[1].float().abs() < 2**-126).all()  # float32 subnormals
    ref = gemv_f32(x, w.float(), None, "scalar")
    assert (ref[:, 1] != 0).all()
    for isa in _C.gemv_f32_isas():
        assert torch.equal(gemv_w16(x, w, None, isa), ref), isa


@pytest.mark.parametrize("dtype", W16)
def test_bias_is_optional_and_added_last(dtype):
    x, w, b = torch.randn(2, 64), torch.randn(9, 64).to(dtype), torch.randn(9)
    assert torch.equal(gemv_w16(x, w, b), gemv_w16(x, w) + b)


@pytest.mark.parametrize(
    ("m", "k", "n", "isa", "threads", "code", "match"),
    [
        (5, 64, 8, "auto", 1, 1, "gemv_w16: M = 5"),
        (0, 64, 8, "auto", 1, 2, "gemv_w16: M = 0"),
        (1, 48, 8, "auto", 1, 1, "gemv_w16: K = 48"),
        (1, 64, 0, "auto", 1, 2, "gemv_w16: N = 0"),
        (1, 64, 8, "sve9", 1, 1, "gemv_w16: isa 'sve9'"),
        (1, 64, 8, "auto", 0, 1, "gemv_w16: num_threads = 0"),
        (1, 64, 8, "auto", 1, 0, "gemv_w16: weight dtype float32 is not a 16-bit float"),
        (1, 64, 8, "auto", 1, 3, "dtype code 3"),
    ],
)
def test_bad_sizes_isas_and_dtypes_are_refused_by_name(m, k, n, isa, threads, code, match):
    x, w = torch.zeros(max(m, 1), k), torch.zeros(max(n, 1), k, dtype=torch.float16)
    y = torch.empty(max(m, 1), max(n, 1))
    with pytest.raises(ValueError, match=match):
        _C.gemv_w16_cpu(x.data_ptr(), w.data_ptr(), code, 0, y.data_ptr(), m, k, n, threads, isa)


# ------------------------------------------------------------------------ native.linear


def test_gemv_rows_takes_16bit_weights_with_float32_x():
    x = torch.randn(1, 1, 64)
    for dtype in W16:
        w = torch.randn(8, 64).to(dtype)
        assert native.gemv_rows(x, w) == 1
        assert native.gemv_rows(torch.randn(4, 64), w) == 4
        assert native.gemv_rows(x.to(dtype), w) == 0  # 16-bit x: F.linear as before
        assert native.gemv_rows(torch.randn(5, 64), w) == 0  # prefill
        assert native.gemv_rows(x, w.t().contiguous().t()) == 0  # strided W
    assert native.gemv_rows(x, torch.randn(8, 64, dtype=torch.float64)) == 0
    assert native.gemv_rows(x, torch.randn(64)) == 0  # 1-D weight: F.linear


class _Spy:
    """Stands for the extension in native.linear, recording the GEMV it calls."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        attr = getattr(_C, name)
        if name.startswith("gemv_"):
            return lambda *a: (self.calls.append(name), attr(*a))[1]
        return attr


@pytest.mark.parametrize("dtype", W16)
@pytest.mark.parametrize("shape", [(1, 1, 96), (2, 1, 96), (1, 4, 96), (96,), (3, 96)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_runs_the_w16_gemv_with_the_bits_of_the_float_weight(
    dtype, shape, with_bias, monkeypatch
):
    gen = torch.Generator().manual_seed(len(shape) + with_bias)
    x = torch.randn(*shape, generator=gen)
    w = torch.randn(24, 96, generator=gen).to(dtype)
    b = torch.randn(24, generator=gen) if with_bias else None
    ref = native.linear(x, w.float(), b)  # the float32 GEMV
    spy = _Spy()
    monkeypatch.setattr(native, "_native", lambda: spy)
    y = native.linear(x, w, b)
    assert spy.calls == ["gemv_w16_cpu"]
    assert y.shape == ref.shape and y.dtype == torch.float32
    assert torch.equal(y, ref)
    torch.testing.assert_close(y, F.linear(x, w.float(), b), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", W16)
@pytest.mark.parametrize(
    ("x_shape", "w_shape", "strided"),
    [((1, 1, 40), (24, 40), False), ((1, 1, 96), (24, 96), True), ((1, 5, 96), (24, 96), True)],
)
def test_linear_falls_back_to_f_linear_on_the_upcast_weight(dtype, x_shape, w_shape, strided):
    """Shapes neither the GEMV nor the GEMM serves (K % 32 for the GEMV, a strided W for both;
    prefill rows on a contiguous W go to the GEMM: tests/ops/test_gemm_f32.py)."""
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(*x_shape, generator=gen)
    w = torch.randn(*w_shape, generator=gen).to(dtype)
    if strided:
        w = w.t().contiguous().t()
    b = torch.randn(w_shape[0], generator=gen)
    assert native.gemv_rows(x, w) == 0
    assert torch.equal(native.linear(x, w, b), F.linear(x, w.float(), b))


def test_linear_with_a_mismatched_bias_raises_like_f_linear():
    x, w = torch.randn(1, 64), torch.randn(8, 64).half()
    with pytest.raises(RuntimeError):
        F.linear(x, w.float(), torch.randn(5))
    with pytest.raises(RuntimeError):
        native.linear(x, w, torch.randn(5))


# ------------------------------------------------------------------------ exact_16bit


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0.0, -0.0, 1.0, -2.5, 65504.0], torch.float16),  # both; float16 preferred
        ([1 + 2**-10, 3 * 2**-24, 2**-24, -(2**-14)], torch.float16),  # 11 bits, subnormals
        ([1 + 2**-7, 2**-25], torch.bfloat16),  # below the smallest half
        ([65536.0, 1.0], torch.bfloat16),  # overflows float16
        ([2.0**-130, 3.0 * 2**100], torch.bfloat16),  # float32 subnormal, large
        ([1 + 2**-10, 2**-25], None),  # needs float16's bits and bfloat16's range
        ([1 + 2**-11], None),  # 12 significant bits
        ([65520.0], None),  # rounds to inf in float16, 12 bits for bfloat16
        ([1.0, float("inf")], None),  # finite values only
        ([float("nan")], None),
        ([], torch.float16),
    ],
)
def test_exact_16bit_on_hand_checked_values(values, expected):
    assert native.exact_16bit(torch.tensor(values, dtype=torch.float32)) is expected


def test_exact_16bit_checks_every_chunk():
    half_only = torch.full((6,), 1 + 2**-10)
    bf16_only = torch.full((6,), 2.0**-25)
    # chunk = 4: the deciding values sit in a later chunk than the first
    assert native.exact_16bit(torch.cat([half_only, bf16_only]), chunk=4) is None
    assert native.exact_16bit(torch.cat([torch.ones(5), bf16_only]), chunk=4) is torch.bfloat16
    assert native.exact_16bit(torch.cat([torch.ones(5), half_only]), chunk=4) is torch.float16
    assert native.exact_16bit(torch.cat([torch.ones(9), torch.tensor([0.1])]), chunk=4) is None


def test_exact_16bit_on_weights_and_refuses_other_dtypes():
    gen = torch.Generator().manual_seed(5)
    w = torch.randn(64, 96, generator=gen)
    assert native.exact_16bit(w) is None
    assert native.exact_16bit(w.half().float()) is torch.float16
    assert native.exact_16bit(w.bfloat16().float() * 2**20) is torch.bfloat16  # past 65504
    assert native.exact_16bit(w.half().float().t()) is torch.float16  # strided
    with pytest.raises(TypeError, match="float32"):
        native.exact_16bit(w.half())
