"""The GEMV on int8 weights with a float32 scale per output row (csrc/gemv ``gemv_w8_cpu``,
``native.gemv_w8``) and its quantizer (``native.quantize_rows_int8``): every instruction-set path
returns the bits of the float32 GEMV on the codes as float32, times the scale, plus the bias, each
step rounded by torch in float32; the NEON path under qemu returns the x86-64 bits; the result is
within the quantization bound of a float64 matmul on the original weights; the quantizer agrees
with hand-checked values and an independent numpy computation; bad arguments are refused by
name."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gemv_calls import gemv_f32, gemv_w8
from qemu_aarch64 import build_and_run, needs_qemu

from vilau_rt.ops import native

_C = pytest.importorskip("vilau_rt._C")

U = 2.0**-24  # float32 unit roundoff


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit for bit (torch.equal would take -0.0 for 0.0)."""
    return a.shape == b.shape and torch.equal(a.view(torch.int32), b.view(torch.int32))


def reference(x, w8, scale, bias):
    """The spec: the float32 GEMV's scalar bits on the codes as float32 (no bias), then ``*
    scale``, then ``+ bias``, each a float32 torch op (one rounding)."""
    s = gemv_f32(x, w8.float(), None, "scalar")
    y = s * scale
    return y if bias is None else y + bias


def random_case(gen, m, k, n, with_bias):
    """x normal; codes over all of int8 (-128 included: the kernel sign-extends any code);
    scales spread over 2**-20 .. 2**4, one of them 0; bias normal or None."""
    x = torch.randn(m, k, generator=gen)
    w8 = torch.randint(-128, 128, (n, k), generator=gen, dtype=torch.int8)
    scale = torch.rand(n, generator=gen) * torch.exp2(torch.randint(-20, 5, (n,), generator=gen))
    scale[n // 2] = 0.0
    bias = torch.randn(n, generator=gen) if with_bias else None
    return x, w8, scale, bias


@pytest.mark.parametrize("m", [1, 2, 3, 4])
# K = 4128: rows over 4 KiB, read 8 at a time at M = 1 (shorter ones one at a time: plan_for)
@pytest.mark.parametrize("k", [32, 96, 1024, 4128])
@pytest.mark.parametrize("n", [1, 7, 33, 1000])
@pytest.mark.parametrize("with_bias", [True, False])
def test_every_isa_returns_the_f32_bits_times_the_scale_plus_the_bias(m, k, n, with_bias):
    gen = torch.Generator().manual_seed(m * 10007 + k * 13 + n + with_bias)
    x, w8, scale, bias = random_case(gen, m, k, n, with_bias)
    ref = reference(x, w8, scale, bias)
    for isa in _C.gemv_f32_isas():
        for threads in (1, 2):
            assert same_bits(gemv_w8(x, w8, scale, bias, isa, threads), ref), (isa, threads)


def test_the_scale_and_the_bias_round_separately():
    """Values where a fused multiply-add (one rounding) differs from the spec's two roundings:
    S = 1 + 2**-23 and scale = 1 + 2**-22 give S * scale = 1 + 3 * 2**-23 + 2**-45 exactly,
    which rounds to 1 + 3 * 2**-23; with bias = -1 the spec's result is 3 * 2**-23, a fused
    multiply-add's 3 * 2**-23 + 2**-45 (exact in float32)."""
    k = 32
    x = torch.zeros(1, k)
    x[0, 0] = 1 + 2**-23  # S = x[0, 0] * code 1, exact
    w8 = torch.zeros(1, k, dtype=torch.int8)
    w8[0, 0] = 1
    scale = torch.tensor([1 + 2**-22])
    bias = torch.tensor([-1.0])
    want = torch.tensor([[3 * 2**-23]])
    fused = torch.tensor([[3 * 2**-23 + 2**-45]])
    assert not torch.equal(want, fused)  # both exact in float32, and apart
    assert same_bits(reference(x, w8, scale, bias), want)
    for isa in _C.gemv_f32_isas():
        assert same_bits(gemv_w8(x, w8, scale, bias, isa), want), isa


# ------------------------------------------------------------------------ against float64


def weights(gen, n, k, dtype=torch.float32):
    """Normal rows times 2**e, e from -12 to 6 by row: rows of very different magnitudes."""
    exps = torch.arange(n, dtype=torch.float64) % 19 - 12
    return (torch.randn(n, k, generator=gen, dtype=torch.float64) * torch.exp2(exps)[:, None]).to(
        dtype
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("m", "k", "n"), [(1, 32, 7), (2, 96, 33), (4, 1024, 300), (3, 2048, 40)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_result_is_within_the_quantization_bound_of_float64(dtype, m, k, n, with_bias):
    """|y - x @ W^T - b| <= sum_k |x_k| * scale_n / 2 (each weight is at most half a step from
    its code's value) plus the float32 rounding of the GEMV: at most K/32 + 5 roundings of the
    sum of |x_k * code_k| (fused multiply-adds into 32 partial sums, then a 5-level tree), one of
    the product with the scale and one of the bias add."""
    gen = torch.Generator().manual_seed(m + k + n + with_bias)
    w = weights(gen, n, k, dtype)
    x = torch.randn(m, k, generator=gen)
    b = torch.randn(n, generator=gen) if with_bias else None
    w8, scale = native.quantize_rows_int8(w)
    y = native.gemv_w8(x, w8, scale, b).double()
    x64, s64 = x.double(), scale.double()
    exact = x64 @ w.double().T + (0 if b is None else b.double())
    quantization = x64.abs().sum(1, keepdim=True) * s64 / 2 * (1 + 1e-5)
    sums = (x64.abs() @ w8.double().abs().T) * s64
    rounding = (k / 32 + 8) * U * sums + U * (y.abs() + (0 if b is None else b.double().abs()))
    excess = (y - exact).abs() - (quantization + rounding)
    assert (excess <= 0).all(), float(excess.max())


def test_each_weight_is_within_half_a_step_of_its_code():
    """x = unit rows picks single weights: y[r, n] = code * scale exactly (one product), and it is
    within scale / 2 of the original weight, for every weight (rounding to the nearest code;
    truncation would miss by up to a whole step)."""
    gen = torch.Generator().manual_seed(17)
    n, k = 37, 96
    w = weights(gen, n, k)
    w8, scale = native.quantize_rows_int8(w)
    eye = torch.eye(k)
    for k0 in range(0, k, 4):
        y = native.gemv_w8(eye[k0 : k0 + 4].contiguous(), w8, scale)
        assert same_bits(y, (w8[:, k0 : k0 + 4].float() * scale[:, None]).T.contiguous())
        miss = (y.double().T - w[:, k0 : k0 + 4].double()).abs()
        assert (miss <= scale.double()[:, None] / 2).all(), k0


# ------------------------------------------------------------------------ quantize_rows_int8


def test_quantize_on_hand_checked_rows():
    w = torch.tensor(
        [
            [127.0, 63.5, -0.5, 1.5, 2.5, -2.5, -127.0, 0.49],  # scale 1: halves go to even
            [0.0] * 8,  # zeros: scale 0, codes 0
            [254.0, 3.0, 5.0, -1.0, 1.0, -7.0, 0.0, -254.0],  # scale 2: 1.5, 2.5, -0.5, ...
            [-0.25, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.125],  # amax from a negative value
        ]
    )
    w8, scale = native.quantize_rows_int8(w)
    assert w8.dtype == torch.int8 and scale.dtype == torch.float32
    assert scale[:3].tolist() == [1.0, 0.0, 2.0]
    assert scale[3].item() == np.float32(0.25 / 127)
    assert w8[:3].tolist() == [
        [127, 64, 0, 2, 2, -2, -127, 0],
        [0] * 8,
        [127, 2, 2, 0, 0, -4, 0, -127],
    ]
    assert w8[3, 0] == -127 and w8[3, 7] == round(0.125 / float(np.float32(0.25 / 127)))


def quantize_numpy(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The definition in numpy float64 (np.rint: ties to even)."""
    w64 = w.astype(np.float64)
    scale = (np.abs(w64).max(axis=1) / 127).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.rint(w64 / scale.astype(np.float64)[:, None])
    q = np.where(scale[:, None] > 0, np.clip(q, -127, 127), 0)
    return q.astype(np.int8), scale


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_quantize_equals_a_numpy_float64_computation(dtype):
    gen = torch.Generator().manual_seed(5)
    w = weights(gen, 64, 160, dtype)
    w[3] = 0
    w[9, ::3] = w[9, 0].abs()  # ties for the largest magnitude
    # exact halves of the step: code + 1/2 times the row's scale (127 * 2**-4 / 127 = 2**-4)
    w[20] = (torch.arange(160) % 254 - 127 + 0.5).clamp(max=126.5).to(dtype) * 2**-4
    w[20, 0] = 127 * 2**-4
    w8, scale = native.quantize_rows_int8(w)
    want_q, want_scale = quantize_numpy(w.float().numpy())
    assert np.array_equal(scale.numpy(), want_scale)
    assert np.array_equal(w8.numpy(), want_q)
    assert (w8[20, 1:].abs() % 2 == 0).all()  # every half went to an even code
    for chunk in (1, 160, 161, 1000):  # whole rows per chunk, one row to several
        c8, cs = native.quantize_rows_int8(w, chunk=chunk)
        assert torch.equal(c8, w8) and torch.equal(cs, scale), chunk


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_quantize_refuses_non_finite_weights_naming_the_row(bad):
    w = torch.randn(12, 64)
    w[7, 5] = bad
    for chunk in (64, 1 << 22):
        with pytest.raises(ValueError, match="weight row 7 has a nan or an inf"):
            native.quantize_rows_int8(w, chunk=chunk)


@pytest.mark.parametrize(
    ("weight", "error", "match"),
    [
        (torch.zeros(4, 32, dtype=torch.float64), TypeError, "weight has dtype torch.float64"),
        (torch.zeros(4, 32, dtype=torch.int8), TypeError, "weight has dtype torch.int8"),
        (torch.zeros(32), ValueError, r"weight must be \[N, K\], got shape \(32,\)"),
        (torch.zeros(0, 32), ValueError, r"weight must be \[N, K\] with N, K >= 1, got \(0, 32\)"),
        (torch.zeros(4, 0), ValueError, r"weight must be \[N, K\] with N, K >= 1, got \(4, 0\)"),
    ],
)
def test_quantize_refuses_bad_weights_by_name(weight, error, match):
    with pytest.raises(error, match="quantize_rows_int8: " + match):
        native.quantize_rows_int8(weight)


# ------------------------------------------------------------------------ refusals


@pytest.mark.parametrize(
    ("m", "k", "n", "isa", "threads", "match"),
    [
        (5, 64, 8, "auto", 1, "gemv_w8: M = 5"),
        (0, 64, 8, "auto", 1, "gemv_w8: M = 0"),
        (1, 48, 8, "auto", 1, "gemv_w8: K = 48"),
        (1, 64, 0, "auto", 1, "gemv_w8: N = 0"),
        (1, 64, 8, "sve9", 1, "gemv_w8: isa 'sve9'"),
        (1, 64, 8, "auto", 0, "gemv_w8: num_threads = 0"),
    ],
)
def test_bad_sizes_isas_and_threads_are_refused_by_name(m, k, n, isa, threads, match):
    x, w8 = torch.zeros(max(m, 1), k), torch.zeros(max(n, 1), k, dtype=torch.int8)
    scale, y = torch.ones(max(n, 1)), torch.empty(max(m, 1), max(n, 1))
    with pytest.raises(ValueError, match=match):
        _C.gemv_w8_cpu(
            x.data_ptr(), w8.data_ptr(), scale.data_ptr(), 0, y.data_ptr(), m, k, n, threads, isa
        )


@pytest.mark.parametrize("null", ["x", "w", "row_scale", "y"])
def test_null_buffers_are_refused_by_name(null):
    x, w8, scale, y = (
        torch.zeros(1, 64),
        torch.zeros(8, 64, dtype=torch.int8),
        torch.ones(8),
        torch.empty(1, 8),
    )
    ptrs = {"x": x, "w": w8, "row_scale": scale, "y": y}
    args = [0 if name == null else t.data_ptr() for name, t in ptrs.items()]
    with pytest.raises(ValueError, match=f"gemv_w8: {null} is null"):
        _C.gemv_w8_cpu(*args[:3], 0, args[3], 1, 64, 8, 1)


def good_args():
    return {
        "x": torch.zeros(2, 64),
        "w8": torch.zeros(8, 64, dtype=torch.int8),
        "scale": torch.ones(8),
        "bias": torch.zeros(8),
    }


@pytest.mark.parametrize(
    ("name", "bad", "error", "match"),
    [
        ("x", torch.zeros(2, 64, dtype=torch.float64), TypeError, "x has dtype torch.float64"),
        ("w8", torch.zeros(8, 64, dtype=torch.uint8), TypeError, "w8 has dtype torch.uint8"),
        ("w8", torch.zeros(8, 64), TypeError, "w8 has dtype torch.float32"),
        ("scale", torch.ones(8).half(), TypeError, "scale has dtype torch.float16"),
        ("bias", torch.zeros(8).half(), TypeError, "bias has dtype torch.float16"),
        ("x", torch.zeros(64), ValueError, r"x must be \[M, K\], got shape \(64,\)"),
        ("w8", torch.zeros(8, 64, 1, dtype=torch.int8), ValueError, r"w8 must be \[N, K\]"),
        ("x", torch.zeros(2, 96), ValueError, r"x must be \[M, K\] with K = 64"),
        ("scale", torch.ones(9), ValueError, r"scale must be \[N\] = \[8\], got \(9,\)"),
        ("bias", torch.zeros(1, 8), ValueError, r"bias must be \[N\] = \[8\], got \(1, 8\)"),
        ("x", torch.zeros(64, 2).t(), ValueError, "x must be contiguous"),
        ("w8", torch.zeros(64, 8, dtype=torch.int8).t(), ValueError, "w8 must be contiguous"),
        ("scale", torch.ones(16)[::2], ValueError, "scale must be contiguous"),
        ("bias", torch.zeros(16)[::2], ValueError, "bias must be contiguous"),
        ("x", torch.zeros(2, 64, device="meta"), ValueError, "x is on meta"),
        ("w8", torch.zeros(8, 64, dtype=torch.int8, device="meta"), ValueError, "w8 is on meta"),
        ("scale", torch.ones(8, device="meta"), ValueError, "scale is on meta"),
        ("x", torch.zeros(5, 64), ValueError, "gemv_w8: M = 5"),  # the kernel's own check
        ("x", torch.zeros(2, 48), ValueError, "gemv_w8: K = 48"),
    ],
)
def test_gemv_w8_refuses_bad_tensors_by_name(name, bad, error, match):
    args = good_args()
    args[name] = bad
    if name == "x" and bad.dim() == 2 and bad.shape[1] == 48:
        args["w8"] = torch.zeros(8, 48, dtype=torch.int8)
    with pytest.raises(error, match="gemv_w8: " + match.removeprefix("gemv_w8: ")):
        native.gemv_w8(**args)


def test_gemv_w8_bias_is_optional():
    gen = torch.Generator().manual_seed(2)
    x, w8, scale, bias = random_case(gen, 3, 64, 9, True)
    assert same_bits(native.gemv_w8(x, w8, scale), reference(x, w8, scale, None))
    assert same_bits(native.gemv_w8(x, w8, scale, bias), reference(x, w8, scale, bias))


# ------------------------------------------------------------------------ NEON under qemu


@needs_qemu
def test_neon_returns_the_x86_bits_under_qemu(tmp_path):
    """The aarch64 build's paths (neon, scalar) on the inputs written here against this machine's
    scalar path: the same bits (tests/ops/gemv_w8_check.cpp reads and writes raw buffers)."""
    gen = torch.Generator().manual_seed(23)
    cases = []
    for m in (1, 2, 3, 4):
        for k in (32, 96, 1024):
            for n in (1, 7, 33):
                with_bias = (m + k + n) % 2 == 0
                case = random_case(gen, m, k, n, with_bias)
                path = tmp_path / f"case_{m}_{k}_{n}.bin"
                head = np.array([m, k, n, with_bias], dtype="<i8")
                tensors = [t for t in case if t is not None]
                path.write_bytes(head.tobytes() + b"".join(t.numpy().tobytes() for t in tensors))
                cases.append((path, case))
    sources = ["tests/ops/gemv_w8_check.cpp", "csrc/gemv/gemv_f32_cpu.cpp",
               "csrc/common/cpu_isa.cpp", "csrc/common/dtype.cpp"]  # fmt: skip
    out = build_and_run(
        tmp_path / "gemv_w8_check", sources, ("-ffp-contract=off",), tuple(str(p) for p, _ in cases)
    )
    assert "isas: neon scalar" in out
    assert f"{len(cases)} cases" in out
    for path, (x, w8, scale, bias) in cases:
        x86 = gemv_w8(x, w8, scale, bias, "scalar")
        arm = torch.from_numpy(np.fromfile(f"{path}.out", dtype="<f4").copy()).view(2, *x86.shape)
        assert same_bits(arm[0], x86), ("neon", path.name)
        assert same_bits(arm[1], x86), ("scalar", path.name)
