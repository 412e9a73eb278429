"""The CPU packed-layout W4A16 GEMV (``vilau::w4a16_repack`` + ``vilau::w4a16_linear_packed``):
the layout byte for byte, the scalar reference against the documented summation order (32 fused
partial sums, fixed tree), every SIMD path this machine runs against the scalar bits, and
W4A16Linear's CPU routing and cache. The NEON path is checked under qemu
(test_w4a16_neon_qemu.py)."""

from __future__ import annotations

import pytest
import torch
from gemv_calls import gemm_f32
from test_w4a16_ops import DTYPE_CODES, assert_close_to_ref, make_layer

from vilau_rt import _C
from vilau_rt.model.awq import W4A16Linear
from vilau_rt.model.awq_format import unpack_gemm
from vilau_rt.ops import kernels

ISAS = _C.w4a16_packed_cpu_isas()
SIMD = [isa for isa in ISAS if isa != "scalar"]
# (K, N, G): K not a power of two (96, 384, 1248), one group and many, 8-column tiles split
# unevenly over threads (N = 24, 4104), G = 32 / 64 / 96 / 128
SHAPES = [(32, 8, 32), (96, 24, 96), (256, 136, 128), (384, 520, 64), (1248, 4104, 32),
          (512, 1032, 128)]  # fmt: skip


def packed_linear(isa: str, x: torch.Tensor, packed, layer: dict, group: int, threads: int = 2):
    m, k = x.shape
    n = layer["scales"].shape[1]
    y = torch.full((m, n), float("nan"), dtype=x.dtype)
    bias = 0 if layer["bias"] is None else layer["bias"].data_ptr()
    _C.w4a16_linear_packed_cpu(
        x.data_ptr(), packed.data_ptr(), layer["qzeros"].data_ptr(), layer["scales"].data_ptr(),
        bias, y.data_ptr(), m, k, n, group, DTYPE_CODES[x.dtype], threads, isa,
    )  # fmt: skip
    return y


def test_scalar_reference_is_always_listed_last():
    assert ISAS[-1] == "scalar" and ISAS.count("scalar") == 1


def test_repack_puts_two_k_halves_of_a_block_in_one_byte_per_column():
    layer, _ = make_layer(3, 96, 24, 32, False)
    codes = unpack_gemm(layer["qweight"], layer["qzeros"])[0]  # [K, N]
    packed = kernels.w4a16_repack(layer["qweight"])
    assert packed.shape == (3, 3, 8, 16) and packed.dtype == torch.uint8
    # [N/8, K/32, 8, 16]: byte i of (tile t, block b, column j) = code(32b+i) | code(32b+16+i) << 4
    blocks = codes.reshape(3, 2, 16, 3, 8).permute(3, 0, 4, 1, 2)  # [t, b, j, half, i]
    expect = (blocks[..., 0, :] | (blocks[..., 1, :] << 4)).to(torch.uint8)
    assert torch.equal(packed, expect)


def test_scalar_path_follows_the_documented_order():
    """Emulated in float64: each fused multiply-add rounds once to float32 (the product of two
    float32 values is exact in float64), then the tree over the 32 partial sums."""
    k, n, group = 160, 8, 32
    layer, w_t = make_layer(11, k, n, group, True)
    x = torch.randn(2, k, generator=torch.Generator().manual_seed(12))
    y = packed_linear("scalar", x, kernels.w4a16_repack(layer["qweight"]), layer, group)
    p = torch.zeros(2, 32, n, dtype=torch.float64)
    for kk in range(k):
        p[:, kk % 32] = (x[:, kk : kk + 1].double() * w_t[kk] + p[:, kk % 32]).float().double()
    w = 16
    while w >= 1:
        p[:, :w] = (p[:, :w] + p[:, w : 2 * w]).float().double()
        w //= 2
    ref = (p[:, 0].float() + layer["bias"].float()).float()
    assert torch.equal(y, ref)


@pytest.mark.skipif(not SIMD, reason=f"no SIMD path on this machine (paths: {ISAS})")
@pytest.mark.parametrize("isa", SIMD)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES)
def test_simd_packed_gemv_returns_the_scalar_bits(isa, dtype, shape):
    k, n, group = shape
    for m in [*range(1, 10), 17]:
        layer, w_t = make_layer(m * 31 + k, k, n, group, with_bias=m % 2 == 0)
        packed = kernels.w4a16_repack(layer["qweight"])
        x = torch.randn(m, k, generator=torch.Generator().manual_seed(m)).to(dtype)
        y = packed_linear(isa, x, packed, layer, group)
        assert torch.equal(y, packed_linear("scalar", x, packed, layer, group)), m
        bias = 0 if layer["bias"] is None else layer["bias"].double()
        assert_close_to_ref(y, x.double() @ w_t + bias, dtype)


@pytest.mark.parametrize("threads", [1, 3])
def test_auto_path_is_the_first_listed_and_thread_count_does_not_change_bits(threads):
    layer, _ = make_layer(5, 256, 136, 128, True)
    packed = kernels.w4a16_repack(layer["qweight"])
    x = torch.randn(3, 256, generator=torch.Generator().manual_seed(6))
    y = packed_linear("auto", x, packed, layer, 128, threads)
    assert torch.equal(y, packed_linear(ISAS[0], x, packed, layer, 128))


def test_op_checks_name_the_bad_argument():
    layer, _ = make_layer(1, 96, 8, 96, False)
    packed = kernels.w4a16_repack(layer["qweight"])
    x = torch.randn(1, 96)
    with pytest.raises(ValueError, match="group_size = 48 must be a multiple of 32"):
        kernels.w4a16_linear_packed(x, packed, layer["qzeros"], layer["scales"], None, 48)
    with pytest.raises(ValueError, match="packed must be \\[N/8, K/32, 8, 16\\]"):
        kernels.w4a16_linear_packed(x, packed.view(1, 3, 128), layer["qzeros"], layer["scales"],
                                    None, 96)  # fmt: skip
    with pytest.raises(ValueError, match="x must be \\[..., K\\] with K = 96"):
        kernels.w4a16_linear_packed(x[:, :64], packed, layer["qzeros"], layer["scales"], None, 96)
    with pytest.raises(ValueError, match="qweight must be \\[K, N/8\\] with K a positive multiple"):
        kernels.w4a16_repack(layer["qweight"][:40])
    with pytest.raises(ValueError, match="isa 'sse9' is not available here \\(.*scalar, auto\\)"):
        packed_linear("sse9", x, packed, layer, 96)


def layer_module(k=256, n=136, group=128, seed=7) -> W4A16Linear:
    layer, _ = make_layer(seed, k, n, group, True)
    lin = W4A16Linear(k, n, group, bias=True)
    for name in ("qweight", "qzeros", "scales", "bias"):
        getattr(lin, name).copy_(layer[name])
    return lin


@pytest.mark.parametrize("rows", [1, 2, 5, kernels.W4A16_CPU_BLAS_MIN_M - 1])
def test_module_runs_the_packed_op_below_the_blas_rows(rows):
    lin = layer_module()
    x = torch.randn(rows, 256, generator=torch.Generator().manual_seed(rows)).half()
    y = lin(x)
    packed = kernels.w4a16_repack(lin.qweight)
    assert torch.equal(packed, lin.packed_weight())
    expect = kernels.w4a16_linear_packed(x, packed, lin.qzeros, lin.scales, lin.bias, 128)
    assert torch.equal(y, expect)
    assert_close_to_ref(y, kernels.w4a16_linear(x, lin.qweight, lin.qzeros, lin.scales, lin.bias,
                                                128).double(), torch.float16)  # fmt: skip


@pytest.mark.skipif(not kernels.cpu_gemm_is_fast(), reason="the AWQ GEMM route is AVX-512 only")
def test_float32_prefill_rows_take_the_awq_gemm_from_17_rows():
    """Float32 x: the module keeps the packed GEMV up to 16 rows; from 17 the op runs
    csrc/gemm's AWQ GEMM, whose bits are gemm_f32 on the float16-exact weights."""
    lin = layer_module()
    assert kernels.w4a16_cpu_packed_max_rows(torch.zeros(1, 256)) == 16
    assert kernels.w4a16_cpu_packed_max_rows(torch.zeros(1, 256).half()) == 64
    x = torch.randn(kernels.W4A16_CPU_GEMM_MIN_M, 256, generator=torch.Generator().manual_seed(3))
    y = lin(x)
    w = kernels.w4a16_dequantize(lin.qweight, lin.qzeros, lin.scales, 128, torch.float32)
    assert torch.equal(y, gemm_f32(x, w.T.contiguous(), lin.bias.float(), "scalar"))
    short = lin(x[:16])
    packed = kernels.w4a16_linear_packed(x[:16], lin.packed_weight(), lin.qzeros, lin.scales,
                                         lin.bias, 128)  # fmt: skip
    assert torch.equal(short, packed)


def test_module_keeps_the_awq_route_for_blas_rows_and_other_group_sizes():
    lin = layer_module()
    x = torch.randn(kernels.W4A16_CPU_BLAS_MIN_M, 256)
    assert torch.equal(
        lin(x), kernels.w4a16_linear(x, lin.qweight, lin.qzeros, lin.scales, lin.bias, 128)
    )
    odd = layer_module(k=192, n=24, group=48)  # not a multiple of 32
    x = torch.randn(1, 192)
    assert torch.equal(
        odd(x), kernels.w4a16_linear(x, odd.qweight, odd.qzeros, odd.scales, odd.bias, 48)
    )
    assert odd._cpu_packed is None


def test_module_cache_is_not_state_and_follows_qweight():
    lin = layer_module()
    x = torch.randn(1, 256)
    lin(x)
    first = lin.packed_weight()
    assert lin.packed_weight() is first  # built once
    assert set(lin.state_dict()) == {"qweight", "qzeros", "scales", "bias"}
    assert all(t is not first for t in lin.buffers())
    other = layer_module(seed=8)
    lin.load_state_dict(other.state_dict())  # in-place copy: rebuilt
    assert torch.equal(lin(x), other(x))
    lin.qweight = other.qweight.clone()  # replaced: rebuilt
    assert torch.equal(lin.packed_weight(), kernels.w4a16_repack(other.qweight))


def test_traced_module_keeps_the_portable_op():
    lin = layer_module()
    x = torch.randn(1, 256)
    graph = torch.jit.trace(lin, x).graph
    kinds = {node.kind() for node in graph.nodes()}
    assert "vilau::w4a16_linear" in kinds and "vilau::w4a16_linear_packed" not in kinds
