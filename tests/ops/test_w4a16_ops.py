"""vilau::w4a16_linear and vilau::w4a16_dequantize on AutoAWQ GEMM buffers: against a float64
dequantize + matmul of codes packed by an independent packer, and against AutoAWQ's own output."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from vilau_rt import _C
from vilau_rt.ops import kernels

DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
    ),
]
DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
EPS = {torch.float32: 2**-23, torch.float16: 2**-10, torch.bfloat16: 2**-7}

# Nibble k of a packed word holds output column 8c + PACK_ORDER[k] (AutoAWQ GEMM layout).
PACK_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]


def pack(values: torch.Tensor) -> torch.Tensor:
    """int [rows, N] in 0..15 -> int32 [rows, N/8], following PACK_ORDER."""
    rows, n = values.shape
    v = values.to(torch.int64).reshape(rows, n // 8, 8)
    word = torch.zeros(rows, n // 8, dtype=torch.int64)
    for k, col in enumerate(PACK_ORDER):
        word |= v[:, :, col] << (4 * k)
    return torch.where(word >= 2**31, word - 2**32, word).to(torch.int32)  # raw bit pattern


def ref_weight(codes, zeros, scales, group_size) -> torch.Tensor:
    """W_T [K, N] in float64 from codes [K, N], zeros [K/G, N], scales [K/G, N].

    The format's weight is AutoAWQ's fp16 dequantization, (code - zero) * scale rounded once
    to float16; the product itself is exact in float64, so rounding it gives that value.
    """
    z = zeros.double().repeat_interleave(group_size, 0)
    s = scales.double().repeat_interleave(group_size, 0)
    return ((codes.double() - z) * s).half().double()


def make_layer(seed: int, k: int, n: int, group_size: int, with_bias: bool):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(16, (k, n), generator=g)
    zeros = torch.randint(16, (k // group_size, n), generator=g)
    scales = (torch.rand(k // group_size, n, generator=g) * 0.02 + 0.001).half()
    bias = (torch.randn(n, generator=g) * 0.1).half() if with_bias else None
    layer = {"qweight": pack(codes), "qzeros": pack(zeros), "scales": scales, "bias": bias}
    return layer, ref_weight(codes, zeros, scales, group_size)


def to(layer: dict, device: str) -> dict:
    return {key: None if t is None else t.to(device) for key, t in layer.items()}


def assert_close_to_ref(y: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype) -> None:
    """One rounding to dtype per element, plus float32 summation noise scaled to the output."""
    scale = ref.abs().max().item()
    torch.testing.assert_close(
        y.cpu().double(), ref, rtol=EPS[dtype], atol=max(EPS[dtype], 1e-5) * scale
    )


# ---------------------------------------------------------------- random layers

SHAPES = [(128, 8, 64), (128, 8, 128), (192, 24, 64), (256, 128, 64), (256, 128, 128),
          (384, 72, 64), (384, 72, 128)]  # fmt: skip
ROWS = [1, 2, 5, 8, 9, 33]


def test_row_counts_straddle_the_gemv_gemm_switch():
    assert _C.W4A16_GEMV_MAX_M in ROWS and _C.W4A16_GEMV_MAX_M + 1 in ROWS


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("m", ROWS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_bias", [False, True])
def test_linear_matches_float64_dequantize_matmul(shape, m, dtype, device, with_bias):
    k, n, group_size = shape
    seed = hash((shape, m, with_bias)) % 2**31
    layer, w_t = make_layer(seed, k, n, group_size, with_bias)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(seed + 1)).to(dtype)
    layer = to(layer, device)
    y = kernels.w4a16_linear(x.to(device), **layer, group_size=group_size)
    assert y.shape == (m, n) and y.dtype == dtype and y.device.type == device
    ref = x.double() @ w_t
    if with_bias:
        ref = ref + layer["bias"].cpu().double()
    assert_close_to_ref(y, ref, dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES)
def test_dequantize_matches_float64_reference(shape, dtype, device):
    k, n, group_size = shape
    layer, w_t = make_layer(hash(shape) % 2**31, k, n, group_size, False)
    layer = to(layer, device)
    out = kernels.w4a16_dequantize(
        layer["qweight"], layer["qzeros"], layer["scales"], group_size, out_dtype=dtype
    )
    assert out.shape == (k, n) and out.dtype == dtype
    # (code - zero) * scale is exact in float32: one rounding to dtype at most.
    assert torch.equal(out.cpu(), w_t.to(dtype))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("m", [3, 40])
def test_linear_keeps_leading_dims_and_reads_strided_x(device, m):
    layer, w_t = make_layer(9, 128, 16, 64, True)
    x = torch.randn(128, 2, m, generator=torch.Generator().manual_seed(10)).permute(1, 2, 0)
    y = kernels.w4a16_linear(x.to(device), **to(layer, device), group_size=64)
    assert y.shape == (2, m, 16)
    ref = x.double() @ w_t + layer["bias"].double()
    assert_close_to_ref(y, ref, torch.float32)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("m", [4, 17])
def test_kernel_writes_every_element_of_a_poisoned_buffer(device, m):
    layer, w_t = make_layer(12, 192, 40, 64, False)
    layer = to(layer, device)
    x = torch.randn(m, 192, generator=torch.Generator().manual_seed(13)).half().to(device)
    y = torch.full((m, 40), float("nan"), dtype=torch.float16, device=device)
    args = (x.data_ptr(), layer["qweight"].data_ptr(), layer["qzeros"].data_ptr(),
            layer["scales"].data_ptr(), 0, y.data_ptr(), m, 192, 40, 64, 1)  # fmt: skip
    if device == "cpu":
        _C.w4a16_linear_cpu(*args, 2)
    else:
        _C.w4a16_linear_cuda(*args, torch.cuda.current_stream().cuda_stream)
    assert_close_to_ref(y, x.cpu().double() @ w_t, torch.float16)


# ---------------------------------------------------------------- AutoAWQ's own buffers

FIXTURE_LAYERS = ["layer0", "layer1", "layer2", "pattern"]


@pytest.fixture(scope="module")
def awq_format(awq_fixture):
    tensors = load_file(str(awq_fixture / "format_gemm.safetensors"))
    meta = json.loads((awq_fixture / "format_meta.json").read_text())
    groups = {layer["name"]: layer["group_size"] for layer in meta["layers"]}
    return tensors, groups


def test_packer_reproduces_autoawq_buffers(awq_format):
    """Grounds the random tests: our test packer writes AutoAWQ's exact words."""
    tensors, _ = awq_format
    assert tensors["pattern.qweight"][0, 0].item() == 0x75316420
    for name in FIXTURE_LAYERS:
        assert torch.equal(pack(tensors[f"{name}.iweight_in_out"]), tensors[f"{name}.qweight"])
        assert torch.equal(pack(tensors[f"{name}.izeros"]), tensors[f"{name}.qzeros"])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", FIXTURE_LAYERS)
def test_dequantize_reproduces_autoawq_exactly(awq_format, name, device):
    tensors, groups = awq_format
    out = kernels.w4a16_dequantize(
        tensors[f"{name}.qweight"].to(device),
        tensors[f"{name}.qzeros"].to(device),
        tensors[f"{name}.scales"].to(device),
        groups[name],
    )
    assert out.dtype == torch.float16
    assert torch.equal(out.cpu(), tensors[f"{name}.dequant_in_out"])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", FIXTURE_LAYERS)
def test_linear_matches_autoawq_forward(awq_format, name, device):
    tensors, groups = awq_format
    bias = tensors.get(f"{name}.bias")
    y = kernels.w4a16_linear(
        tensors[f"{name}.x"].to(device),
        tensors[f"{name}.qweight"].to(device),
        tensors[f"{name}.qzeros"].to(device),
        tensors[f"{name}.scales"].to(device),
        None if bias is None else bias.to(device),
        groups[name],
    )
    expected = tensors[f"{name}.y_gemm_forward"]
    assert y.shape == expected.shape and y.dtype == torch.float16
    # Both sum in float32 and round once to float16: allow two float16 ulps of the largest output.
    atol = 2 * 2**-10 * expected.abs().max().item()
    torch.testing.assert_close(y.cpu().float(), expected.float(), rtol=2**-10, atol=atol)


# ---------------------------------------------------------------- boundary checks


def test_bad_arguments_name_the_culprit():
    layer, _ = make_layer(1, 128, 16, 64, True)
    x = torch.randn(3, 128)
    with pytest.raises(ValueError, match="group_size = 48 must be >= 1 and divide in_features"):
        kernels.w4a16_linear(x, **layer, group_size=48)
    with pytest.raises(ValueError, match="group_size = 0"):
        kernels.w4a16_linear(x, **layer, group_size=0)
    with pytest.raises(ValueError, match="qzeros must be \\[K/group_size, N/8\\] = \\(4, 2\\)"):
        kernels.w4a16_linear(x, **layer, group_size=32)
    with pytest.raises(ValueError, match="x must be \\[..., K\\] with K = 128"):
        kernels.w4a16_linear(torch.randn(3, 64), **layer, group_size=64)
    with pytest.raises(TypeError, match="scales has dtype torch.float32"):
        kernels.w4a16_linear(x, **{**layer, "scales": layer["scales"].float()}, group_size=64)
    with pytest.raises(TypeError, match="qweight has dtype torch.int64"):
        kernels.w4a16_linear(x, **{**layer, "qweight": layer["qweight"].long()}, group_size=64)
    with pytest.raises(ValueError, match="bias must be \\[N\\] = \\[16\\]"):
        kernels.w4a16_linear(x, **{**layer, "bias": layer["bias"][:8]}, group_size=64)
    with pytest.raises(TypeError, match="x has dtype torch.float64"):
        kernels.w4a16_linear(x.double(), **layer, group_size=64)
    with pytest.raises(TypeError, match="out_dtype torch.int8 is not supported"):
        kernels.w4a16_dequantize(layer["qweight"], layer["qzeros"], layer["scales"], 64, torch.int8)


def test_kernel_checks_sizes_on_the_cpp_side():
    layer, _ = make_layer(1, 128, 16, 64, False)
    ptrs = (layer["qweight"].data_ptr(), layer["qzeros"].data_ptr(), layer["scales"].data_ptr())
    x, y = torch.randn(2, 128), torch.empty(2, 16)
    with pytest.raises(ValueError, match="N = 12 must be a positive multiple of 8"):
        _C.w4a16_linear_cpu(x.data_ptr(), *ptrs, 0, y.data_ptr(), 2, 128, 12, 64, 0, 1)
    with pytest.raises(ValueError, match="K = 128 is not a multiple of group_size = 96"):
        _C.w4a16_linear_cpu(x.data_ptr(), *ptrs, 0, y.data_ptr(), 2, 128, 16, 96, 0, 1)
    with pytest.raises(ValueError, match="num_threads = 0"):
        _C.w4a16_dequantize_cpu(*ptrs, y.data_ptr(), 128, 16, 64, 0, 0)


# ---------------------------------------------------------------- registration


@pytest.mark.parametrize("device", DEVICES)
def test_ops_pass_opcheck(device):
    layer = to(make_layer(3, 192, 24, 64, True)[0], device)
    checks = ("test_schema", "test_faketensor", "test_aot_dispatch_static")  # inference only
    for m in (2, 11):
        x = torch.randn(m, 192, device=device).half()
        args = (x, layer["qweight"], layer["qzeros"], layer["scales"], layer["bias"], 64)
        torch.library.opcheck(torch.ops.vilau.w4a16_linear.default, args, test_utils=checks)
    args = (layer["qweight"], layer["qzeros"], layer["scales"], 64, torch.bfloat16)
    torch.library.opcheck(torch.ops.vilau.w4a16_dequantize.default, args, test_utils=checks)


def test_linear_traces_with_torch_export():
    layer = make_layer(4, 128, 32, 64, False)[0]

    class Linear(torch.nn.Module):
        def forward(self, x):
            return kernels.w4a16_linear(x, **layer, group_size=64)

    x = torch.randn(2, 5, 128)
    program = torch.export.export(Linear(), (x,))
    names = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert "vilau.w4a16_linear.default" in names
    assert torch.equal(program.module()(x), Linear()(x))
