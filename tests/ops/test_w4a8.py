"""The CPU W4A8 GEMV (csrc/w4a8): the activation quantizer against numpy, the GEMV against a
float64 evaluation of the documented arithmetic on codes unpacked independently (AutoAWQ's own
buffers from the fixtures and random layers), every SIMD path against the scalar bits, the error
bound against the exact W4A16 layer, NaN propagation and the size checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_w4a16_ops import make_layer, pack

from vilau_rt import _C
from vilau_rt.model.awq_format import unpack_gemm
from vilau_rt.ops import w4a8

ISAS = _C.w4a8_cpu_isas()
SIMD = [isa for isa in ISAS if isa != "scalar"]
# (K, N, G): one group and many, tiles split unevenly over 2 threads (N = 48), G = 32 .. 256
SHAPES = [(32, 16, 32), (96, 48, 96), (256, 144, 128), (384, 64, 64), (1024, 272, 128),
          (512, 32, 256)]  # fmt: skip


def weights(seed: int, k: int, n: int, group: int, with_bias: bool = False):
    layer, w_t = make_layer(seed, k, n, group, with_bias)
    w = w4a8.W4A8Weights.from_awq(
        layer["qweight"], layer["qzeros"], layer["scales"], layer["bias"], group
    )
    return layer, w_t, w


def numpy_quantize(x: np.ndarray):
    """float32 [M, K] -> xq, d, s, written from the header's definition."""
    xb = x.reshape(x.shape[0], -1, 32).astype(np.float32)
    amax = np.abs(xb).max(axis=2)
    with np.errstate(divide="ignore"):
        inv = np.where(amax > 0, np.float32(127) / amax, np.float32(0)).astype(np.float32)
    xq = np.clip(np.rint((xb * inv[..., None]).astype(np.float32)), -127, 127).astype(np.int64)
    d = (amax / np.float32(127)).astype(np.float32)
    return xq.reshape(x.shape), d, xq.sum(axis=2)


def reference(x: torch.Tensor, layer: dict, group: int) -> np.ndarray:
    """The header's arithmetic in float64 (exact integers, then the two scalings) on codes and
    zeros unpacked from AutoAWQ's words by awq_format, not by the repack under test."""
    codes, zeros = (
        t.numpy().astype(np.int64) for t in unpack_gemm(layer["qweight"], layer["qzeros"])[:2]
    )
    scales = layer["scales"].float().numpy().astype(np.float64)
    xq, d, _ = numpy_quantize(x.numpy())
    k, n = codes.shape
    blocks = k // 32
    z = np.repeat(zeros, group, axis=0)  # [K, N]
    # D[r, b, n] = sum over the block of (code - zero) * xq
    D = np.einsum("rbi,bin->rbn", xq.reshape(-1, blocks, 32), (codes - z).reshape(blocks, 32, n))
    a = D * d.astype(np.float64)[..., None]  # [M, blocks, N]
    per_group = a.reshape(a.shape[0], k // group, group // 32, n).sum(axis=2)
    y = (per_group * scales[None]).sum(axis=1)
    if layer["bias"] is not None:
        y = y + layer["bias"].float().numpy()
    return y


def test_scalar_reference_is_listed_last():
    assert ISAS[-1] == "scalar" and ISAS.count("scalar") == 1


def test_quantize_x_follows_the_definition():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 256, generator=g) * torch.logspace(-3, 3, 256)
    x[1, 32:64] = 0.0  # a block of zeros: d = 0, xq = 0
    x[2, 5] = -x[2, :32].abs().max() * 2  # the block's max is negative
    xq, d, s = w4a8.quantize_x(x)
    exq, ed, es = numpy_quantize(x.numpy())
    assert np.array_equal(xq.numpy(), exq) and np.array_equal(s.numpy(), es)
    assert np.array_equal(d.numpy(), ed)
    assert d[1, 1] == 0 and not xq[1, 32:64].any()
    assert xq[2, 5] == -127


@pytest.mark.parametrize("shape", SHAPES)
def test_scalar_gemv_matches_the_float64_arithmetic(shape):
    k, n, group = shape
    for m in (1, 3):
        layer, _, w = weights(k + n + m, k, n, group, with_bias=m == 3)
        x = torch.randn(m, k, generator=torch.Generator().manual_seed(m))
        y = w4a8.linear(x, w, isa="scalar").double().numpy()
        ref = reference(x, layer, group)
        # float32 roundings: one per block fma and per group fma, each relative to its sum
        np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


@pytest.mark.skipif(not SIMD, reason=f"no SIMD path on this machine (paths: {ISAS})")
@pytest.mark.parametrize("isa", SIMD)
@pytest.mark.parametrize("shape", SHAPES)
def test_simd_paths_return_the_scalar_bits(isa, shape):
    k, n, group = shape
    for m in (1, 2, 3, 4, 5, 9):
        _, _, w = weights(m * 7 + k, k, n, group, with_bias=m % 2 == 0)
        x = torch.randn(m, k, generator=torch.Generator().manual_seed(m)) * 3
        for threads in (1, 2):
            torch.set_num_threads(threads)
            try:
                assert torch.equal(w4a8.linear(x, w, isa=isa), w4a8.linear(x, w, isa="scalar"))
            finally:
                torch.set_num_threads(2)


def test_integer_sums_reach_their_extremes_without_overflow():
    """Codes 15 against zero 0 and activations at +-127 in every slot: the largest block sums
    (and the AVX2 path's int16 partial sums) the format allows."""
    k, n, group = 256, 32, 128
    codes = torch.full((k, n), 15)
    zeros = torch.zeros(k // group, n, dtype=torch.long)
    scales = torch.full((k // group, n), 0.5).half()
    layer = {"qweight": pack(codes), "qzeros": pack(zeros), "scales": scales, "bias": None}
    w = w4a8.W4A8Weights.from_awq(layer["qweight"], layer["qzeros"], scales, None, group)
    x = torch.ones(2, k)
    x[1] = -1.0
    for isa in ISAS:
        y = w4a8.linear(x, w, isa=isa)
        assert torch.equal(y, torch.tensor([[15 * 0.5 * k], [-15 * 0.5 * k]]).expand(2, n))


@pytest.mark.parametrize("shape", SHAPES[1:4])
def test_error_against_the_exact_w4a16_layer_is_within_the_activation_rounding(shape):
    k, n, group = shape
    _, w_t, w = weights(5, k, n, group)
    x = torch.randn(4, k, generator=torch.Generator().manual_seed(9)) * 2
    y = w4a8.linear(x, w).double()
    exact = x.double() @ w_t  # W4A16's float16 weights, in float64
    # |x - d * xq| <= d / 2 per element; the weights W4A8 uses are unrounded (q - z) * s, which
    # differ from float16's by at most half a float16 ulp (2^-11 relative)
    _, d, _ = w4a8.quantize_x(x)
    d_k = d.double().repeat_interleave(32, dim=1)  # [M, K]
    bound = (d_k / 2) @ w_t.abs() + (x.double().abs() @ w_t.abs()) * 2**-11
    err = (y - exact).abs()
    assert (err <= bound * (1 + 1e-6) + 1e-5 * exact.abs().max()).all()
    assert err.max() > 0  # it is an approximation: a test that sees none is not looking


def test_autoawq_fixture_layers(awq_fixture):
    """AutoAWQ's own buffers (format_gemm.safetensors) through the repack and the GEMV."""
    tensors = load_file(str(awq_fixture / "format_gemm.safetensors"))
    meta = json.loads((awq_fixture / "format_meta.json").read_text())
    tried = 0
    for layer_meta in meta["layers"]:
        name, group = layer_meta["name"], layer_meta["group_size"]
        qweight = tensors[f"{name}.qweight"]
        k, n = qweight.shape[0], qweight.shape[1] * 8
        if k % 32 or n % 16 or group % 32:
            continue
        layer = {"qweight": qweight, "qzeros": tensors[f"{name}.qzeros"],
                 "scales": tensors[f"{name}.scales"], "bias": tensors.get(f"{name}.bias")}  # fmt: skip
        w = w4a8.W4A8Weights.from_awq(*layer.values(), group)
        x = tensors[f"{name}.x"].float().reshape(-1, k)[:4]
        for isa in ISAS:
            y = w4a8.linear(x, w, isa=isa).double().numpy()
            ref = reference(x, layer, group)
            np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
        tried += 1
    assert tried, "no fixture layer has a W4A8 shape (K % 32, N % 16, G % 32)"


def test_nan_in_a_block_makes_the_row_nan_and_leaves_others():
    _, _, w = weights(3, 64, 16, 32)
    x = torch.randn(2, 64)
    x[0, 40] = float("nan")
    for isa in ISAS:
        y = w4a8.linear(x, w, isa=isa)
        assert torch.isnan(y[0]).all() and torch.isfinite(y[1]).all()


@pytest.mark.parametrize(
    ("k", "n", "built", "group", "match"),
    [(48, 16, 48, 48, "K must be a multiple of 32"), (64, 24, 32, 32, "N must be a multiple of 16"),
     (64, 16, 16, 16, "G must be a multiple of 32"), (64, 16, 32, 64, "do not match")],
)  # fmt: skip
def test_bad_sizes_are_refused_by_name(k, n, built, group, match):
    layer, _ = make_layer(1, k, n, built, False)
    with pytest.raises(ValueError, match=match):
        w4a8.W4A8Weights.from_awq(layer["qweight"], layer["qzeros"], layer["scales"], None, group)


def test_unknown_isa_and_wrong_x_are_refused():
    _, _, w = weights(3, 64, 16, 32)
    with pytest.raises(ValueError, match="isa 'sse9' is not available"):
        w4a8.linear(torch.randn(1, 64), w, isa="sse9")
    with pytest.raises(ValueError, match="x must be"):
        w4a8.linear(torch.randn(1, 32), w)
    with pytest.raises(ValueError, match="float32"):
        w4a8.linear(torch.randn(1, 64).half(), w)


# ---------------------------------------------------------------- W8A8 (8-bit weights, per row)


def w8a8_from_codes(codes: torch.Tensor, scale: torch.Tensor, bias=None) -> w4a8.W8A8Weights:
    """W8A8Weights from given int8 codes (bypassing the quantizer)."""
    n, k = codes.shape
    codes8 = torch.empty((n + 15) // 16, k // 4, 16, 4, dtype=torch.uint8)
    _C.w8a8_repack_cpu(codes.contiguous().data_ptr(), codes8.data_ptr(), n, k, 2)
    return w4a8.W8A8Weights(codes8, scale, bias, k, n)


def w8a8_reference(x: torch.Tensor, codes: torch.Tensor, scale: torch.Tensor, bias=None):
    """The header's W8A8 arithmetic in float64 on the numpy-quantized activations."""
    xq, d, _ = numpy_quantize(x.numpy())
    m, k = xq.shape
    D = np.einsum("rbi,nbi->rbn", xq.reshape(m, k // 32, 32),
                  codes.numpy().astype(np.int64).reshape(-1, k // 32, 32))  # fmt: skip
    y = (D * d.astype(np.float64)[..., None]).sum(axis=1) * scale.double().numpy()
    return y if bias is None else y + bias.double().numpy()


@pytest.mark.parametrize(("k", "n"), [(32, 16), (96, 7), (1024, 1000), (256, 33)])
def test_w8a8_scalar_matches_the_float64_arithmetic(k, n):
    g = torch.Generator().manual_seed(k + n)
    codes = torch.randint(-127, 128, (n, k), generator=g, dtype=torch.int8)
    scale = torch.rand(n, generator=g) * 0.01
    bias = torch.randn(n, generator=g)
    for m, b in ((1, None), (3, bias)):
        x = torch.randn(m, k, generator=g)
        y = w4a8.linear8(x, w8a8_from_codes(codes, scale, b), isa="scalar").double().numpy()
        ref = w8a8_reference(x, codes, scale, b)
        np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


@pytest.mark.skipif(not SIMD, reason=f"no SIMD path on this machine (paths: {ISAS})")
@pytest.mark.parametrize("isa", SIMD)
def test_w8a8_simd_paths_return_the_scalar_bits(isa):
    g = torch.Generator().manual_seed(4)
    for k, n in ((32, 16), (96, 7), (512, 1000), (1024, 33)):
        # every code, -128 included (the AVX2 path's |w| = 128 case)
        codes = torch.randint(-128, 128, (n, k), generator=g, dtype=torch.int8)
        codes.view(-1)[:256] = torch.arange(-128, 128, dtype=torch.int8)[: codes.numel()]
        w = w8a8_from_codes(codes, torch.rand(n, generator=g), torch.randn(n, generator=g))
        for m in (1, 2, 3, 4, 5, 9):
            x = torch.randn(m, k, generator=g) * 5
            x[0, :32] = 127.0  # a block at +-127 in every slot: the largest sums
            x[-1, -32:] = -127.0
            for threads in (1, 2):
                torch.set_num_threads(threads)
                try:
                    assert torch.equal(w4a8.linear8(x, w, isa), w4a8.linear8(x, w, "scalar"))
                finally:
                    torch.set_num_threads(2)


def test_w8a8_error_against_the_float_weights_is_within_both_roundings():
    g = torch.Generator().manual_seed(8)
    weight = torch.randn(300, 512, generator=g) * torch.rand(300, 1, generator=g)
    x = torch.randn(4, 512, generator=g) * 3
    w = w4a8.W8A8Weights.from_float(weight)
    y = w4a8.linear8(x, w).double()
    exact = x.double() @ weight.double().T
    _, d, _ = w4a8.quantize_x(x)
    d_k = d.double().repeat_interleave(32, dim=1)  # [M, K]
    half_w = w.scale.double()[None, :] / 2  # |w - code * scale| <= scale / 2
    # x w - xq d * c s = (x - xq d) w + xq d (w - c s): |.| <= d/2 |w| + |xq d| s/2
    x_deq = torch.round(x.double() / d_k.clamp(min=1e-30)).clamp(-127, 127) * d_k
    bound = (d_k / 2) @ weight.double().abs().T + x_deq.abs().sum(1, keepdim=True) * half_w
    err = (y - exact).abs()
    assert (err <= bound * (1 + 1e-6) + 1e-5 * exact.abs().max()).all()
    assert err.max() > 0


def test_w8a8_refuses_bad_sizes_and_isas():
    with pytest.raises(ValueError, match="K a multiple of 32"):
        w4a8.W8A8Weights.from_float(torch.randn(16, 48))
    w = w4a8.W8A8Weights.from_float(torch.randn(16, 64))
    with pytest.raises(ValueError, match="isa 'sse9' is not available"):
        w4a8.linear8(torch.randn(1, 64), w, isa="sse9")
    with pytest.raises(ValueError, match="x must be"):
        w4a8.linear8(torch.randn(1, 32), w)
