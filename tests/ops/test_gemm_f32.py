"""The float32 prefill GEMM (csrc/gemm, ``vilau_rt.ops.native.linear`` above the GEMV's rows):
the scalar reference is the documented FMA chain (checked against exact rational arithmetic),
every instruction-set path returns its bits on shapes that cut the tiles, panels and k blocks,
16-bit weights give the bits of their float32 upcast, a row's result does not depend on the
batch around it, bad sizes are refused by name, and ``native.linear`` routes prefill rows to it."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gemv_calls import gemm_awq, gemm_f32
from qemu_aarch64 import build_and_run, needs_qemu
from safetensors.torch import load_file

from vilau_rt.model.awq_format import pack_gemm
from vilau_rt.ops import native

_C = pytest.importorskip("vilau_rt._C")

W16 = [torch.float16, torch.bfloat16]


def _round_f32(q: Fraction) -> np.float32:
    """q rounded to the nearest float32, ties to even (exact: no double rounding)."""
    c = np.float32(float(q))
    best = c
    for cand in (np.nextafter(c, np.float32(-np.inf)), np.nextafter(c, np.float32(np.inf))):
        d_best, d_cand = abs(Fraction(float(best)) - q), abs(Fraction(float(cand)) - q)
        if d_cand < d_best or (d_cand == d_best and int(cand.view(np.int32)) % 2 == 0):
            best = cand
    return np.float32(best)


def _fma_chain(x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """gemm_f32.h's order in exact rationals: a = +0; a = fma(x[k], w[k], a) (one rounding per
    term) for k ascending; then a + b (one rounding)."""
    m, n = x.shape[0], w.shape[0]
    y = np.zeros((m, n), np.float32)
    for r in range(m):
        for o in range(n):
            a = np.float32(0.0)
            for xk, wk in zip(x[r], w[o]):
                a = _round_f32(Fraction(float(xk)) * Fraction(float(wk)) + Fraction(float(a)))
            y[r, o] = a if b is None else _round_f32(Fraction(float(a)) + Fraction(float(b[o])))
    return y


@pytest.mark.parametrize("bias", [True, False])
def test_the_scalar_reference_is_the_documented_fma_chain(bias):
    gen = torch.Generator().manual_seed(3)
    x, w, b = torch.randn(3, 37, generator=gen), torch.randn(5, 37, generator=gen), torch.randn(5)
    want = _fma_chain(x.numpy(), w.numpy(), b.numpy() if bias else None)
    got = gemm_f32(x, w, b if bias else None, "scalar")
    assert np.array_equal(got.numpy().view(np.int32), want.view(np.int32))
    # Float32 sums in another order land elsewhere in the last bits on some of these outputs,
    # so the comparison above tells the orders apart.
    assert not torch.equal(
        torch.from_numpy(want), (x.double() @ w.double().T).float() + (b if bias else 0)
    )


@pytest.mark.parametrize("m", [1, 7, 8, 9, 16, 17, 100])
@pytest.mark.parametrize(("k", "n"), [(1, 1), (16, 32), (300, 33), (513, 70), (256, 130)])
def test_every_isa_returns_the_scalar_bits(m, k, n):
    gen = torch.Generator().manual_seed(m * 1000 + k + n)
    x, w, b = (torch.randn(*s, generator=gen) for s in ((m, k), (n, k), (n,)))
    for bias in (b, None):
        ref = gemm_f32(x, w, bias, "scalar")
        for isa in _C.gemm_f32_isas():
            for threads in (1, 3):
                assert torch.equal(gemm_f32(x, w, bias, isa, threads), ref), (isa, threads)


@pytest.mark.parametrize("dtype", W16)
@pytest.mark.parametrize("m", [5, 16, 19])  # the small-M path (AVX-512, M <= 16) and the packed
def test_16bit_weights_give_the_bits_of_their_float32_upcast(dtype, m):
    gen = torch.Generator().manual_seed(5)
    x, b = torch.randn(m, 272, generator=gen), torch.randn(70, generator=gen)
    w = (torch.randn(70, 272, generator=gen) * torch.logspace(-6, 3, 70)[:, None]).to(dtype)
    ref = gemm_f32(x, w.float(), b, "scalar")
    for isa in _C.gemm_f32_isas():
        assert torch.equal(gemm_f32(x, w, b, isa), ref), isa


def test_the_reference_is_near_float64_on_a_prefill_shape():
    gen = torch.Generator().manual_seed(1)
    x, w, b = (torch.randn(*s, generator=gen) for s in ((100, 1024), (96, 1024), (96,)))
    exact = x.double() @ w.double().T + b.double()
    y = gemm_f32(x, w, b, "scalar").double()
    # A chain of K roundings: error <= K * 2^-24 * sum |x w| (+ the bias add), far below here.
    bound = 1024 * 2.0**-24 * (x.double().abs() @ w.double().abs().T) + 2.0**-24 * exact.abs()
    assert bool(((y - exact).abs() <= bound).all())
    torch.testing.assert_close(y, exact, rtol=0, atol=5e-4)


def test_a_row_gets_the_same_bits_alone_and_in_a_batch():
    gen = torch.Generator().manual_seed(2)
    x, w = torch.randn(21, 520, generator=gen), torch.randn(67, 520, generator=gen)
    for isa in _C.gemm_f32_isas():
        batch = gemm_f32(x, w, None, isa)
        for r in (0, 8, 20):
            assert torch.equal(gemm_f32(x[r : r + 1].contiguous(), w, None, isa)[0], batch[r])


def test_nan_and_inf_propagate_to_their_row():
    x, w = torch.randn(10, 64), torch.randn(40, 64)
    x[3, 5], x[7, 0] = float("nan"), float("inf")
    for isa in _C.gemm_f32_isas():
        y = gemm_f32(x, w, None, isa)
        assert bool(y[3].isnan().all()) and not bool(y[7].isfinite().any())
        assert bool(torch.cat([y[:3], y[4:7], y[8:]]).isfinite().all())


@pytest.mark.parametrize(
    ("m", "k", "n", "isa", "match"),
    [
        (0, 64, 8, "auto", "M = 0"),
        (1, 0, 8, "auto", "K = 0"),
        (1, 64, 0, "auto", "N = 0"),
        (1, 64, 8, "sve9", "isa 'sve9'"),
    ],
)
def test_bad_sizes_and_isas_are_refused_by_name(m, k, n, isa, match):
    x, w, y = torch.zeros(2, 64), torch.zeros(8, 64), torch.empty(2, 8)
    with pytest.raises(ValueError, match=match):
        _C.gemm_f32_cpu(x.data_ptr(), w.data_ptr(), 0, y.data_ptr(), m, k, n, 1, isa)


def test_null_buffers_and_16bit_dtypes_are_refused_by_name():
    x, w, y = torch.zeros(2, 64), torch.zeros(8, 64), torch.empty(2, 8)
    with pytest.raises(ValueError, match="gemm_f32: w is null"):
        _C.gemm_f32_cpu(x.data_ptr(), 0, 0, y.data_ptr(), 2, 64, 8, 1)
    with pytest.raises(ValueError, match="gemm_w16: weight dtype float32"):
        _C.gemm_w16_cpu(x.data_ptr(), w.data_ptr(), 0, 0, y.data_ptr(), 2, 64, 8, 1)


# ------------------------------------------------------------------------ AWQ weights


def _awq_layer(k: int, n: int, group: int, seed: int):
    """Random AutoAWQ GEMM buffers and their weights W [N, K] as float16 values in float32,
    dequantized here in float64 and rounded once (independent of the kernel's unpacking)."""
    gen = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 16, (k, n), generator=gen)
    zeros = torch.randint(0, 16, (k // group, n), generator=gen)
    scales = (torch.rand(k // group, n, generator=gen) * 0.05 + 1e-3).half()
    qweight, qzeros, scales = pack_gemm(codes, zeros, scales)
    z = zeros.double().repeat_interleave(group, 0)
    s = scales.double().repeat_interleave(group, 0)
    w = ((codes.double() - z) * s).half().float().T.contiguous()
    return (qweight, qzeros, scales), w


@pytest.mark.parametrize(("m", "k", "n", "group"), [(9, 256, 64, 128), (100, 384, 96, 64),
                                                     (3, 128, 40, 32), (17, 512, 136, 128)])  # fmt: skip
def test_awq_gives_the_bits_of_its_float16_weights(m, k, n, group):
    buffers, w = _awq_layer(k, n, group, seed=m + k + n)
    gen = torch.Generator().manual_seed(4)
    x, b = torch.randn(m, k, generator=gen), torch.randn(n, generator=gen)
    ref = gemm_f32(x, w, b, "scalar")
    for isa in _C.gemm_f32_isas():
        for bias in (b, None):
            want = ref if bias is not None else gemm_f32(x, w, None, "scalar")
            assert torch.equal(gemm_awq(x, *buffers, group, bias, isa), want), isa


def test_awq_on_autoawq_buffers_gives_the_bits_of_autoawq_weights(awq_fixture):
    """AutoAWQ's own buffers (format_gemm.safetensors) against its own float16 weights."""
    tensors = load_file(str(awq_fixture / "format_gemm.safetensors"))
    layers = {key.split(".")[0] for key in tensors if key.endswith(".qweight")}
    assert layers
    for name in sorted(layers):
        qweight, qzeros = tensors[f"{name}.qweight"], tensors[f"{name}.qzeros"]
        scales = tensors[f"{name}.scales"].contiguous()
        k = qweight.shape[0]
        group = k // qzeros.shape[0]
        w = tensors[f"{name}.fake_quant_weight_fp16"].float().contiguous()  # [N, K]
        x = tensors[f"{name}.x"].float().reshape(-1, k).contiguous()
        for isa in _C.gemm_f32_isas():
            got = gemm_awq(x, qweight, qzeros, scales, group, None, isa)
            assert torch.equal(got, gemm_f32(x, w, None, "scalar")), (name, isa)


@pytest.mark.parametrize(
    ("k", "n", "group", "match"),
    [(256, 60, 128, "N"), (200, 64, 128, "K"), (0, 64, 128, "K = 0")],
)
def test_awq_sizes_the_format_forbids_are_refused_by_name(k, n, group, match):
    buf = torch.zeros(4096, dtype=torch.int32)
    x, y = torch.zeros(2, 256), torch.empty(2, 64)
    with pytest.raises(ValueError, match=match):
        _C.gemm_awq_cpu(x.data_ptr(), buf.data_ptr(), buf.data_ptr(), buf.data_ptr(), 0,
                        y.data_ptr(), 2, k, n, group, 1)  # fmt: skip


# ------------------------------------------------------------------------ native.linear


def test_gemm_rows_takes_prefill_shapes_only():
    w = torch.randn(24, 96)
    fast = _C.gemm_f32_isas()[0] == "avx512"
    assert native.gemm_rows(torch.randn(1, 7, 96), w) == (7 if fast else 0)
    assert native.gemm_rows(torch.randn(1, 7, 96), w.half()) == 7  # 16-bit: every path
    assert native.gemm_rows(torch.randn(1, 1, 96), w.half()) == 0  # decode: the GEMV
    assert native.gemm_rows(torch.randn(7, 96), w.t().contiguous().t()) == 0  # strided W
    assert native.gemm_rows(torch.randn(7, 96).double(), w.double()) == 0
    assert native.gemm_rows(torch.randn(7, 0), torch.randn(24, 0)) == 0


@pytest.mark.parametrize("dtype", [torch.float32, *W16])
def test_linear_runs_the_gemm_on_prefill_rows(dtype):
    gen = torch.Generator().manual_seed(9)
    x, b = torch.randn(2, 13, 96, generator=gen), torch.randn(40, generator=gen)
    w = torch.randn(40, 96, generator=gen).to(dtype)
    if not native.gemm_rows(x, w):
        pytest.skip(f"float32 weights take torch's BLAS on {_C.gemm_f32_isas()[0]}")
    y = native.linear(x, w, b)
    assert torch.equal(y.view(26, 40), gemm_f32(x.view(26, 96), w, b))
    torch.testing.assert_close(y, F.linear(x, w.float(), b), rtol=1e-5, atol=1e-5)


@needs_qemu
def test_neon_gemm_returns_the_scalar_bits_under_qemu(tmp_path):
    sources = ["tests/ops/gemm_isa_check.cpp", "csrc/gemm/gemm_f32_cpu.cpp",
               "csrc/common/cpu_isa.cpp", "csrc/common/dtype.cpp", "csrc/w4a16/w4a16_args.cpp"]  # fmt: skip
    out = build_and_run(tmp_path / "gemm_isa_check", sources)
    assert "isas: neon scalar" in out
    # 4 M x 3 K x 4 N x (bias, none) x 2 isas; 16-bit: x 2 dtypes
    assert "\n0 of 192 cases differ" in out
    assert "w16: 0 of 384 cases differ" in out
