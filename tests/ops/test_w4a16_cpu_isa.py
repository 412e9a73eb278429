"""Every instruction-set path of the CPU W4A16 GEMV (AVX-512, AVX2, NEON: those this machine
runs) against the scalar reference loop, bit for bit: all paths dequantize to the same float16
weights and sum the rows in the same ascending order with one float32 multiply and one add per
term (no fused multiply-add), so even the float32 sums must agree exactly."""

from __future__ import annotations

import pytest
import torch
from test_w4a16_ops import DTYPE_CODES, assert_close_to_ref, make_layer

from vilau_rt import _C
from vilau_rt.ops import kernels

ISAS = _C.w4a16_cpu_isas()
SIMD = [isa for isa in ISAS if isa != "scalar"]
# (K, N, G): odd and even packed-word counts, chunk tails (64 words per chunk), one group and many
SHAPES = [(128, 8, 64), (192, 24, 64), (256, 136, 128), (384, 520, 128), (512, 1032, 32),
          (96, 40, 96)]  # fmt: skip


def gemv(isa: str, x: torch.Tensor, layer: dict, group: int, threads: int = 2) -> torch.Tensor:
    m, k = x.shape
    n = layer["scales"].shape[1]
    y = torch.full((m, n), float("nan"), dtype=x.dtype)
    bias = 0 if layer["bias"] is None else layer["bias"].data_ptr()
    _C.w4a16_gemv_cpu(
        x.data_ptr(), layer["qweight"].data_ptr(), layer["qzeros"].data_ptr(),
        layer["scales"].data_ptr(), bias, y.data_ptr(), m, k, n, group, DTYPE_CODES[x.dtype],
        threads, isa,
    )  # fmt: skip
    return y


def test_scalar_reference_is_always_listed_last():
    assert ISAS[-1] == "scalar" and ISAS.count("scalar") == 1


@pytest.mark.skipif(not SIMD, reason=f"no SIMD path on this machine (paths: {ISAS})")
@pytest.mark.parametrize("isa", SIMD)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES)
def test_simd_gemv_returns_the_scalar_bits(isa, dtype, shape):
    k, n, group = shape
    for m in range(1, _C.W4A16_GEMV_MAX_M + 1):
        layer, _ = make_layer(m * 31 + k, k, n, group, with_bias=m % 2 == 0)
        x = torch.randn(m, k, generator=torch.Generator().manual_seed(m)).to(dtype)
        assert torch.equal(gemv(isa, x, layer, group), gemv("scalar", x, layer, group)), m


@pytest.mark.parametrize("threads", [1, 3])
def test_auto_path_is_the_first_listed_and_thread_count_does_not_change_bits(threads):
    layer, w_t = make_layer(5, 256, 136, 128, True)
    x = torch.randn(3, 256, generator=torch.Generator().manual_seed(6))
    y = gemv("auto", x, layer, 128, threads)
    assert torch.equal(y, gemv(ISAS[0], x, layer, 128))
    assert_close_to_ref(y, x.double() @ w_t + layer["bias"].double(), torch.float32)


@pytest.mark.parametrize("m", [9, 16, 17, 64])
def test_gemm_rows_through_gemv_slabs_equal_row_by_row_scalar(m):
    """Up to 64 rows the GEMM path runs SIMD GEMV slabs of 8 rows: every row's bits must be those
    of the scalar GEMV on that row alone (both sum rows of W_T in ascending order)."""
    k, n, group = 384, 520, 128
    layer, _ = make_layer(m, k, n, group, True)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(m))
    y = torch.empty(m, n)
    _C.w4a16_linear_cpu(
        x.data_ptr(), layer["qweight"].data_ptr(), layer["qzeros"].data_ptr(),
        layer["scales"].data_ptr(), layer["bias"].data_ptr(), y.data_ptr(), m, k, n, group, 0, 2,
    )  # fmt: skip
    rows = torch.cat([gemv("scalar", x[r : r + 1], layer, group) for r in range(m)])
    assert torch.equal(y, rows)


def test_prefill_rows_take_dequantize_and_blas_within_float32_noise():
    m = kernels.W4A16_CPU_BLAS_MIN_M
    layer, w_t = make_layer(8, 256, 136, 128, True)
    x = torch.randn(m, 256, generator=torch.Generator().manual_seed(9)).half()
    y = kernels.w4a16_linear(x, **layer, group_size=128)
    assert y.dtype == torch.float16
    assert_close_to_ref(y, x.double() @ w_t + layer["bias"].double(), torch.float16)


def test_unknown_isa_names_the_available_ones():
    layer, _ = make_layer(1, 128, 8, 64, False)
    with pytest.raises(ValueError, match="isa 'sse9' is not available here \\(.*scalar, auto\\)"):
        gemv("sse9", torch.randn(1, 128), layer, 64)
