"""The CUDA W4A16 paths that shapes, alignment and the workspace choose between (split-K GEMV,
one-split GEMV, the generic GEMV for misaligned buffers, cuBLAS prefill, tiled GEMM): each against
the float64 reference. CUDA only; the CPU build has none of these paths."""

from __future__ import annotations

import pytest
import torch
from test_w4a16_ops import DTYPE_CODES, assert_close_to_ref, make_layer

from vilau_rt import _C

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def run(x, layer, group, workspace_bytes=None, qweight=None):
    """_C.w4a16_linear_cuda with a workspace of the size asked for (None: what it needs)."""
    m, k = x.shape
    n = layer["scales"].shape[1]
    code = DTYPE_CODES[x.dtype]
    if workspace_bytes is None:
        workspace_bytes = _C.w4a16_linear_cuda_workspace_bytes(m, k, n, group, code)
    ws = torch.empty(workspace_bytes, dtype=torch.uint8, device="cuda")
    y = torch.full((m, n), float("nan"), dtype=x.dtype, device="cuda")
    qw = layer["qweight"] if qweight is None else qweight
    bias = 0 if layer["bias"] is None else layer["bias"].data_ptr()
    _C.w4a16_linear_cuda(
        x.data_ptr(), qw.data_ptr(), layer["qzeros"].data_ptr(), layer["scales"].data_ptr(),
        bias, y.data_ptr(), m, k, n, group, code, torch.cuda.current_stream().cuda_stream,
        ws.data_ptr(), ws.numel(),
    )  # fmt: skip
    torch.cuda.synchronize()
    return y


def cuda_layer(seed, k, n, group, bias=True):
    layer, w_t = make_layer(seed, k, n, group, bias)
    return {key: None if t is None else t.cuda() for key, t in layer.items()}, w_t


@pytest.mark.parametrize("m", range(1, 9))
@pytest.mark.parametrize("n", [1024, 520, 264])  # words % 4 == 0, % 2 == 0 only, odd
def test_gemv_split_k_and_one_split_match_the_reference(m, n):
    k, group = 2048, 128
    layer, w_t = cuda_layer(m + n, k, n, group)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(m)).half()
    ref = x.double() @ w_t + layer["bias"].cpu().double()
    if n == 1024:  # enough rows and columns to split K on any GPU
        assert _C.w4a16_linear_cuda_workspace_bytes(m, k, n, group, 1) > 0
    for workspace in (None, 0):  # split-K, then one split (no room for partial sums)
        assert_close_to_ref(run(x.cuda(), layer, group, workspace), ref, torch.float16)


@pytest.mark.parametrize("m", [1, 3, 8])
def test_gemv_on_misaligned_qweight_takes_the_generic_kernel(m):
    k, n, group = 512, 256, 128
    layer, w_t = cuda_layer(7, k, n, group)
    flat = torch.empty(layer["qweight"].numel() + 1, dtype=torch.int32, device="cuda")
    qweight = flat[1:].view_as(layer["qweight"])  # 4 bytes past a 16-byte boundary
    qweight.copy_(layer["qweight"])
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(8)).half()
    y = run(x.cuda(), layer, group, qweight=qweight)
    assert_close_to_ref(y, x.double() @ w_t + layer["bias"].cpu().double(), torch.float16)


@pytest.mark.parametrize("m", [16, 17, 100])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_prefill_paths_match_the_reference(m, dtype):
    """float16 from W4A16_CUBLAS_MIN_M rows: cuBLAS on dequantized tiles (K = 6144 spans two
    tiles of 16 MiB); below it, and bfloat16, the tiled kernel; both with and without room."""
    k, n, group = 6144, 1376, 128
    layer, w_t = cuda_layer(m, k, n, group)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(m)).to(dtype)
    ref = x.double() @ w_t + layer["bias"].cpu().double()
    needs = _C.w4a16_linear_cuda_workspace_bytes(m, k, n, group, DTYPE_CODES[dtype])
    uses_cublas = (
        dtype == torch.float16 and m >= _C.W4A16_CUBLAS_MIN_M and _C.build_info()["cublas"]
    )
    assert (needs > 0) == uses_cublas
    for workspace in (None, 0):
        assert_close_to_ref(run(x.cuda(), layer, group, workspace), ref, dtype)
