"""Torch custom ops (namespace ``vilau``) over the native kernels in ``vilau_rt._C``.

| op | inputs | output |
|---|---|---|
| ``vilau::rvq_lookup`` | codes int64 [..., D], codebooks [Dc, R, C] | [..., C], codebooks' dtype |
| ``vilau::rvq_encode`` | features [..., C], codebooks [Dc, R, C], n_embed, depth | codes int64 [..., D], z_q [..., C] |
| ``vilau::w4a16_linear`` | x [..., K], qweight, qzeros, scales, bias?, group_size | [..., N], x's dtype |
| ``vilau::w4a16_dequantize`` | qweight, qzeros, scales, group_size, out_dtype? | W_T [K, N] |
| ``vilau::w4a16_repack`` | qweight | packed uint8 [N/8, K/32, 8, 16] (CPU) |
| ``vilau::w4a16_linear_packed`` | x [..., K], packed, qzeros, scales, bias?, group_size | [..., N] (CPU) |

Codebooks: Dc is D (one per depth) or 1 (shared), R = n_embed + 1 rows (the last row is
padding, never a valid code). W4A16 buffers are AutoAWQ's GEMM layout: qweight int32
[K, N/8], qzeros int32 [K/G, N/8], scales float16 [K/G, N], bias float16 [N].
The packed layout (csrc/w4a16/w4a16.h) is the CPU GEMV's k-contiguous copy of qweight's codes,
built once per layer (``W4A16Linear`` does it on its first CPU forward); its GEMV sums in a
different, fixed order (fused multiply-adds into 32 partial sums, then a tree), so its bits
differ from ``w4a16_linear``'s by float32 rounding.
Float tensors may be float32, float16 or bfloat16; sums are float32. Every op runs on CPU
(OpenMP), all but the packed ones on CUDA too (current stream), has a fake implementation for
torch.export / tracing,
and is inference only (no autograd). An out-of-range code raises ValueError on CPU; on CUDA
its output row is NaN (checking would need a device sync).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

try:
    from vilau_rt import _C
except ImportError as exc:  # reported when an op is called, so importing this module works
    _C = None
    _C_IMPORT_ERROR: ImportError | None = exc
else:
    _C_IMPORT_ERROR = None

# dtype codes of csrc/common/dtype.h
_DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


def _native():
    if _C is None:
        raise RuntimeError(
            f"vilau_rt._C (the native kernels) could not be imported: {_C_IMPORT_ERROR!r}. "
            "Build it: reinstall with pip install -e . from the repository root."
        )
    return _C


def _run(kernel: str, device: torch.device, *args) -> None:
    """Calls ``<kernel>_cpu(*args, threads)`` or ``<kernel>_cuda(*args, stream)``."""
    ext = _native()
    if device.type == "cpu":
        getattr(ext, f"{kernel}_cpu")(*args, torch.get_num_threads())
        return
    with torch.cuda.device(device):
        getattr(ext, f"{kernel}_cuda")(*args, torch.cuda.current_stream(device).cuda_stream)


def _check_device(op: str, **tensors: Tensor | None) -> torch.device:
    named = {name: t for name, t in tensors.items() if t is not None}
    devices = {t.device for t in named.values()}
    if len(devices) != 1:
        where = ", ".join(f"{name} on {t.device}" for name, t in named.items())
        raise ValueError(f"{op}: all tensors must be on one device, got {where}")
    device = devices.pop()
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"{op}: device {device} is not supported (cpu or cuda)")
    return device


def _check_dtype(op: str, name: str, t: Tensor, allowed) -> None:
    if t.dtype not in allowed:
        names = ", ".join(str(d).removeprefix("torch.") for d in allowed)
        raise TypeError(f"{op}: {name} has dtype {t.dtype}; supported: {names}")


def _check_ndim(op: str, name: str, t: Tensor, ndim: int, layout: str) -> None:
    if t.dim() != ndim:
        raise ValueError(f"{op}: {name} must be {layout}, got shape {tuple(t.shape)}")


# ---------------------------------------------------------------------------- RVQ


def _check_codebooks(op: str, codebooks: Tensor, depth: int) -> tuple[int, int, int]:
    _check_dtype(op, "codebooks", codebooks, _DTYPE_CODES)
    _check_ndim(op, "codebooks", codebooks, 3, "[Dc, n_embed + 1, C]")
    n_books, rows, dim = codebooks.shape
    if n_books not in (depth, 1):
        raise ValueError(
            f"{op}: codebooks has {n_books} codebooks; expected one per depth ({depth}) or 1 shared"
        )
    if rows < 2:
        raise ValueError(f"{op}: codebooks has {rows} rows; expected n_embed + 1 >= 2")
    return n_books, rows, dim


def _check_lookup(codes: Tensor, codebooks: Tensor) -> tuple[int, int, int]:
    op = "rvq_lookup"
    _check_dtype(op, "codes", codes, (torch.int64,))
    if codes.dim() < 1 or codes.shape[-1] < 1:
        raise ValueError(f"{op}: codes must be [..., D] with D >= 1, got {tuple(codes.shape)}")
    return _check_codebooks(op, codebooks, codes.shape[-1])


@torch.library.custom_op("vilau::rvq_lookup", mutates_args=(), device_types=("cpu", "cuda"))
def _rvq_lookup_op(codes: Tensor, codebooks: Tensor) -> Tensor:
    n_books, rows, dim = _check_lookup(codes, codebooks)
    device = _check_device("rvq_lookup", codes=codes, codebooks=codebooks)
    depth = codes.shape[-1]
    # The kernels read dense row-major buffers: a strided view costs one copy here.
    codes = codes.contiguous()
    codebooks = codebooks.contiguous()
    out = torch.empty(*codes.shape[:-1], dim, dtype=codebooks.dtype, device=device)
    n_rows = codes.numel() // depth
    if n_rows:
        _run(
            "rvq_lookup", device, codes.data_ptr(), codebooks.data_ptr(), out.data_ptr(),
            n_rows, depth, n_books, rows, dim, _DTYPE_CODES[codebooks.dtype],
        )  # fmt: skip
    return out


@_rvq_lookup_op.register_fake
def _(codes: Tensor, codebooks: Tensor) -> Tensor:
    dim = _check_lookup(codes, codebooks)[2]
    return codes.new_empty((*codes.shape[:-1], dim), dtype=codebooks.dtype)


def _check_encode(
    features: Tensor, codebooks: Tensor, n_embed: int, depth: int
) -> tuple[int, int, int]:
    op = "rvq_encode"
    if depth < 1:
        raise ValueError(f"{op}: depth = {depth} must be >= 1")
    n_books, rows, dim = _check_codebooks(op, codebooks, depth)
    if rows != n_embed + 1:
        raise ValueError(
            f"{op}: codebooks has {rows} rows per codebook; expected n_embed + 1 = {n_embed + 1}"
            " (the last row is padding)"
        )
    _check_dtype(op, "features", features, _DTYPE_CODES)
    if features.dtype != codebooks.dtype:
        raise TypeError(
            f"{op}: features ({features.dtype}) and codebooks ({codebooks.dtype}) must share a dtype"
        )
    if features.dim() < 1 or features.shape[-1] != dim:
        raise ValueError(
            f"{op}: features must be [..., C] with C = {dim} (codebooks' width), "
            f"got {tuple(features.shape)}"
        )
    return n_books, rows, dim


@torch.library.custom_op("vilau::rvq_encode", mutates_args=(), device_types=("cpu", "cuda"))
def _rvq_encode_op(
    features: Tensor, codebooks: Tensor, n_embed: int, depth: int
) -> tuple[Tensor, Tensor]:
    n_books, rows, dim = _check_encode(features, codebooks, n_embed, depth)
    device = _check_device("rvq_encode", features=features, codebooks=codebooks)
    features = features.contiguous()  # dense row-major buffers, see rvq_lookup
    codebooks = codebooks.contiguous()
    lead = features.shape[:-1]
    codes = torch.empty(*lead, depth, dtype=torch.int64, device=device)
    z_q = torch.empty_like(features)
    n_rows = features.numel() // dim
    if n_rows:
        _run(
            "rvq_encode", device, features.data_ptr(), codebooks.data_ptr(), codes.data_ptr(),
            z_q.data_ptr(), n_rows, depth, n_books, rows, dim, n_embed,
            _DTYPE_CODES[features.dtype],
        )  # fmt: skip
    return codes, z_q


@_rvq_encode_op.register_fake
def _(features: Tensor, codebooks: Tensor, n_embed: int, depth: int) -> tuple[Tensor, Tensor]:
    _check_encode(features, codebooks, n_embed, depth)
    codes = features.new_empty((*features.shape[:-1], depth), dtype=torch.int64)
    return codes, torch.empty_like(features)


# ---------------------------------------------------------------------------- W4A16


def _check_packed(
    op: str, qweight: Tensor, qzeros: Tensor, scales: Tensor, group_size: int
) -> tuple[int, int]:
    """Checks AutoAWQ GEMM buffers; returns (K, N)."""
    _check_dtype(op, "qweight", qweight, (torch.int32,))
    _check_dtype(op, "qzeros", qzeros, (torch.int32,))
    _check_dtype(op, "scales", scales, (torch.float16,))
    _check_ndim(op, "qweight", qweight, 2, "[K, N/8]")
    _check_ndim(op, "qzeros", qzeros, 2, "[K/group_size, N/8]")
    _check_ndim(op, "scales", scales, 2, "[K/group_size, N]")
    k, n = qweight.shape[0], qweight.shape[1] * 8
    if k < 1 or n < 8:
        raise ValueError(
            f"{op}: qweight must be [K, N/8] with K, N/8 >= 1, got {tuple(qweight.shape)}"
        )
    if group_size < 1 or k % group_size != 0:
        raise ValueError(
            f"{op}: group_size = {group_size} must be >= 1 and divide in_features K = {k}"
        )
    _check_groups(op, qzeros, scales, k, n, group_size)
    return k, n


def _check_groups(op: str, qzeros: Tensor, scales: Tensor, k: int, n: int, group_size: int) -> None:
    groups = k // group_size
    if tuple(qzeros.shape) != (groups, n // 8):
        raise ValueError(
            f"{op}: qzeros must be [K/group_size, N/8] = {(groups, n // 8)}, "
            f"got {tuple(qzeros.shape)}"
        )
    if tuple(scales.shape) != (groups, n):
        raise ValueError(
            f"{op}: scales must be [K/group_size, N] = {(groups, n)}, got {tuple(scales.shape)}"
        )


def _check_input(op: str, x: Tensor, bias: Tensor | None, k: int, n: int) -> None:
    _check_dtype(op, "x", x, _DTYPE_CODES)
    if x.dim() < 1 or x.shape[-1] != k:
        raise ValueError(f"{op}: x must be [..., K] with K = {k}, got {tuple(x.shape)}")
    if bias is not None:
        _check_dtype(op, "bias", bias, (torch.float16,))
        if tuple(bias.shape) != (n,):
            raise ValueError(f"{op}: bias must be [N] = [{n}], got {tuple(bias.shape)}")


def _check_linear(
    x: Tensor,
    qweight: Tensor,
    qzeros: Tensor,
    scales: Tensor,
    bias: Tensor | None,
    group_size: int,
) -> tuple[int, int]:
    op = "w4a16_linear"
    k, n = _check_packed(op, qweight, qzeros, scales, group_size)
    _check_input(op, x, bias, k, n)
    return k, n


# Rows of x from which the CPU op dequantizes to float32 and calls BLAS; below, the kernel's
# SIMD GEMV slabs win (bench/RESULTS.md, 2026-12-01).
W4A16_CPU_BLAS_MIN_M = 65

# Rows of float32 x from which the CPU op runs csrc/gemm's AWQ GEMM (weights dequantized while a
# panel is packed, 8 x 32 FMA tiles) where that GEMM's path is AVX-512 (``cpu_gemm_is_fast``):
# 1.6-3.6x dequantize + BLAS and the tiled kernel from 9 to 128 rows, level with the packed GEMV
# at 16 rows and ahead above (bench/RESULTS.md, 2026-12-02).
W4A16_CPU_GEMM_MIN_M = 17


@functools.cache
def cpu_gemm_is_fast() -> bool:
    """True where csrc/gemm's first path is AVX-512, the one measured faster than torch's BLAS
    (MKL sgemm) and than dequantize + BLAS. Its AVX2 and NEON paths return the same bits but
    have not been measured against those, so there the previous routes stay."""
    return _native().gemm_f32_isas()[0] == "avx512"


def w4a16_cpu_packed_max_rows(x: Tensor) -> int:
    """Most rows of ``x`` that a CPU W4A16 linear runs on the packed GEMV: 16 for float32 x where
    ``cpu_gemm_is_fast`` (the AWQ GEMM takes over from 17 rows), else 64 (BLAS from 65)."""
    if x.dtype == torch.float32 and cpu_gemm_is_fast():
        return W4A16_CPU_GEMM_MIN_M - 1
    return W4A16_CPU_BLAS_MIN_M - 1


@torch.library.custom_op("vilau::w4a16_linear", mutates_args=(), device_types=("cpu", "cuda"))
def _w4a16_linear_op(
    x: Tensor,
    qweight: Tensor,
    qzeros: Tensor,
    scales: Tensor,
    bias: Tensor | None,
    group_size: int,
) -> Tensor:
    k, n = _check_linear(x, qweight, qzeros, scales, bias, group_size)
    device = _check_device(
        "w4a16_linear", x=x, qweight=qweight, qzeros=qzeros, scales=scales, bias=bias
    )
    # The kernels read dense row-major buffers: a strided view costs one copy here.
    x, qweight, qzeros, scales = (t.contiguous() for t in (x, qweight, qzeros, scales))
    bias_ptr = 0 if bias is None else bias.contiguous().data_ptr()
    y = torch.empty(*x.shape[:-1], n, dtype=x.dtype, device=device)
    m = x.numel() // k
    gemm = device.type == "cpu" and x.dtype == torch.float32 and m >= W4A16_CPU_GEMM_MIN_M
    if gemm and cpu_gemm_is_fast():  # prefill: float16-exact weights dequantized per packed panel
        b = None if bias is None else bias.float().contiguous()  # held past the call
        _native().gemm_awq_cpu(
            x.data_ptr(), qweight.data_ptr(), qzeros.data_ptr(), scales.data_ptr(),
            0 if b is None else b.data_ptr(), y.data_ptr(), m, k, n, group_size,
            torch.get_num_threads(),
        )  # fmt: skip
    elif m and device.type == "cpu" and m >= W4A16_CPU_BLAS_MIN_M:
        # Prefill on the CPU: float16-exact weights in float32, then BLAS, one rounding at the end
        w = _w4a16_dequantize_op(qweight, qzeros, scales, group_size, torch.float32)
        x2 = x.reshape(m, k).float()
        out = x2 @ w if bias is None else torch.addmm(bias.float(), x2, w)
        y.view(m, n).copy_(out)
    elif m and device.type == "cuda":  # split-K partial sums or cuBLAS tiles live here
        ext = _native()
        with torch.cuda.device(device):
            ws = torch.empty(
                ext.w4a16_linear_cuda_workspace_bytes(m, k, n, group_size, _DTYPE_CODES[x.dtype]),
                dtype=torch.uint8, device=device,
            )  # fmt: skip
            ext.w4a16_linear_cuda(
                x.data_ptr(), qweight.data_ptr(), qzeros.data_ptr(), scales.data_ptr(), bias_ptr,
                y.data_ptr(), m, k, n, group_size, _DTYPE_CODES[x.dtype],
                torch.cuda.current_stream(device).cuda_stream, ws.data_ptr(), ws.numel(),
            )  # fmt: skip
    elif m:
        _run(
            "w4a16_linear", device, x.data_ptr(), qweight.data_ptr(), qzeros.data_ptr(),
            scales.data_ptr(), bias_ptr, y.data_ptr(), m, k, n, group_size,
            _DTYPE_CODES[x.dtype],
        )  # fmt: skip
    return y


@_w4a16_linear_op.register_fake
def _(
    x: Tensor,
    qweight: Tensor,
    qzeros: Tensor,
    scales: Tensor,
    bias: Tensor | None,
    group_size: int,
) -> Tensor:
    n = _check_linear(x, qweight, qzeros, scales, bias, group_size)[1]
    return x.new_empty((*x.shape[:-1], n))


def _dequant_dtype(out_dtype: torch.dtype | None) -> torch.dtype:
    dtype = torch.float16 if out_dtype is None else out_dtype
    if dtype not in _DTYPE_CODES:
        raise TypeError(
            f"w4a16_dequantize: out_dtype {dtype} is not supported (float32, float16, bfloat16)"
        )
    return dtype


@torch.library.custom_op("vilau::w4a16_dequantize", mutates_args=(), device_types=("cpu", "cuda"))
def _w4a16_dequantize_op(
    qweight: Tensor,
    qzeros: Tensor,
    scales: Tensor,
    group_size: int,
    out_dtype: torch.dtype | None = None,
) -> Tensor:
    k, n = _check_packed("w4a16_dequantize", qweight, qzeros, scales, group_size)
    dtype = _dequant_dtype(out_dtype)
    device = _check_device("w4a16_dequantize", qweight=qweight, qzeros=qzeros, scales=scales)
    qweight, qzeros, scales = (t.contiguous() for t in (qweight, qzeros, scales))
    w_t = torch.empty(k, n, dtype=dtype, device=device)
    _run(
        "w4a16_dequantize", device, qweight.data_ptr(), qzeros.data_ptr(), scales.data_ptr(),
        w_t.data_ptr(), k, n, group_size, _DTYPE_CODES[dtype],
    )  # fmt: skip
    return w_t


@_w4a16_dequantize_op.register_fake
def _(
    qweight: Tensor,
    qzeros: Tensor,
    scales: Tensor,
    group_size: int,
    out_dtype: torch.dtype | None = None,
) -> Tensor:
    k, n = _check_packed("w4a16_dequantize", qweight, qzeros, scales, group_size)
    return qweight.new_empty((k, n), dtype=_dequant_dtype(out_dtype))


# ---------------------------------------------------------------------------- W4A16, packed (CPU)


def _check_repack(op: str, qweight: Tensor) -> tuple[int, int]:
    _check_dtype(op, "qweight", qweight, (torch.int32,))
    _check_ndim(op, "qweight", qweight, 2, "[K, N/8]")
    k, n = qweight.shape[0], qweight.shape[1] * 8
    if k < 32 or k % 32 or n < 8:
        raise ValueError(
            f"{op}: qweight must be [K, N/8] with K a positive multiple of 32 and N/8 >= 1, "
            f"got {tuple(qweight.shape)}"
        )
    return k, n


def _check_cpu(op: str, **tensors: Tensor | None) -> None:
    for name, t in tensors.items():
        if t is not None and t.device.type != "cpu":
            raise ValueError(f"{op}: {name} is on {t.device}; this op runs on the CPU only")


@torch.library.custom_op("vilau::w4a16_repack", mutates_args=(), device_types=("cpu",))
def _w4a16_repack_op(qweight: Tensor) -> Tensor:
    k, n = _check_repack("w4a16_repack", qweight)
    _check_cpu("w4a16_repack", qweight=qweight)
    qweight = qweight.contiguous()
    packed = torch.empty(n // 8, k // 32, 8, 16, dtype=torch.uint8)
    _native().w4a16_repack_cpu(qweight.data_ptr(), packed.data_ptr(), k, n, torch.get_num_threads())
    return packed


@_w4a16_repack_op.register_fake
def _(qweight: Tensor) -> Tensor:
    k, n = _check_repack("w4a16_repack", qweight)
    return qweight.new_empty((n // 8, k // 32, 8, 16), dtype=torch.uint8)


def _check_linear_packed(
    x: Tensor,
    packed: Tensor,
    qzeros: Tensor,
    scales: Tensor,
    bias: Tensor | None,
    group_size: int,
) -> tuple[int, int]:
    op = "w4a16_linear_packed"
    _check_dtype(op, "packed", packed, (torch.uint8,))
    if packed.dim() != 4 or tuple(packed.shape[2:]) != (8, 16) or packed.numel() == 0:
        raise ValueError(
            f"{op}: packed must be [N/8, K/32, 8, 16] (from w4a16_repack), "
            f"got shape {tuple(packed.shape)}"
        )
    k, n = packed.shape[1] * 32, packed.shape[0] * 8
    if group_size < 32 or group_size % 32 or k % group_size:
        raise ValueError(
            f"{op}: group_size = {group_size} must be a multiple of 32 that divides "
            f"in_features K = {k} (other group sizes: w4a16_linear)"
        )
    _check_dtype(op, "qzeros", qzeros, (torch.int32,))
    _check_dtype(op, "scales", scales, (torch.float16,))
    _check_groups(op, qzeros, scales, k, n, group_size)
    _check_input(op, x, bias, k, n)
    return k, n


def w4a16_linear_packed_into(
    y: Tensor,
    x: Tensor,
    packed: Tensor,
    qzeros: Tensor,
    scales: Tensor,
    bias: Tensor | None,
    group_size: int,
    isa: str = "auto",
) -> None:
    """The packed GEMV into y [..., N] (x's dtype) on one instruction-set path: an entry of
    ``_C.w4a16_packed_cpu_isas()`` or ``"auto"``; for tests and bench/w4a16.py. Dense CPU
    tensors only."""
    n = _check_linear_packed(x, packed, qzeros, scales, bias, group_size)[1]
    _check_cpu(
        "w4a16_linear_packed", x=x, packed=packed, qzeros=qzeros, scales=scales, bias=bias, y=y
    )
    if y.dtype != x.dtype or tuple(y.shape) != (*x.shape[:-1], n) or not y.is_contiguous():
        raise ValueError(
            f"w4a16_linear_packed: y must be a contiguous {x.dtype} {(*x.shape[:-1], n)}, "
            f"got {y.dtype} {tuple(y.shape)}"
        )
    run_w4a16_packed(y, x, packed, qzeros, scales, bias, group_size, isa)


def run_w4a16_packed(y, x, packed, qzeros, scales, bias, group_size, isa="auto") -> None:
    """The packed CPU GEMV into y, without the checks: for callers that checked already (the
    op, ``w4a16_linear_packed_into``) or built the buffers themselves (the native backend's
    decode step, where the op's dispatch and checks cost more than a small layer's kernel)."""
    k = packed.shape[1] * 32
    m = x.numel() // k
    if m:
        x, packed, qzeros, scales = (t.contiguous() for t in (x, packed, qzeros, scales))
        _native().w4a16_linear_packed_cpu(
            x.data_ptr(), packed.data_ptr(), qzeros.data_ptr(), scales.data_ptr(),
            0 if bias is None else bias.contiguous().data_ptr(), y.data_ptr(), m, k,
            packed.shape[0] * 8, group_size, _DTYPE_CODES[x.dtype], torch.get_num_threads(), isa,
        )  # fmt: skip


@torch.library.custom_op("vilau::w4a16_linear_packed", mutates_args=(), device_types=("cpu",))
def _w4a16_linear_packed_op(
    x: Tensor,
    packed: Tensor,
    qzeros: Tensor,
    scales: Tensor,
    bias: Tensor | None,
    group_size: int,
) -> Tensor:
    n = _check_linear_packed(x, packed, qzeros, scales, bias, group_size)[1]
    _check_cpu("w4a16_linear_packed", x=x, packed=packed, qzeros=qzeros, scales=scales, bias=bias)
    y = torch.empty(*x.shape[:-1], n, dtype=x.dtype)
    run_w4a16_packed(y, x, packed, qzeros, scales, bias, group_size)
    return y


@_w4a16_linear_packed_op.register_fake
def _(
    x: Tensor,
    packed: Tensor,
    qzeros: Tensor,
    scales: Tensor,
    bias: Tensor | None,
    group_size: int,
) -> Tensor:
    n = _check_linear_packed(x, packed, qzeros, scales, bias, group_size)[1]
    return x.new_empty((*x.shape[:-1], n))


# ---------------------------------------------------------------------------- public names


def rvq_lookup(codes: Tensor, codebooks: Tensor) -> Tensor:
    """Summed code embeddings: codes int64 [..., D], codebooks [Dc, R, C] -> [..., C]."""
    return torch.ops.vilau.rvq_lookup(codes, codebooks)


def rvq_encode(
    features: Tensor, codebooks: Tensor, n_embed: int, depth: int
) -> tuple[Tensor, Tensor]:
    """Residual quantization: features [..., C] -> (codes int64 [..., D], z_q [..., C])."""
    return torch.ops.vilau.rvq_encode(features, codebooks, n_embed, depth)


def w4a16_linear(
    x: Tensor,
    qweight: Tensor,
    qzeros: Tensor,
    scales: Tensor,
    bias: Tensor | None,
    group_size: int,
) -> Tensor:
    """x [..., K] @ dequantized AutoAWQ GEMM weight [K, N] (+ bias) -> [..., N] in x's dtype."""
    return torch.ops.vilau.w4a16_linear(x, qweight, qzeros, scales, bias, group_size)


def w4a16_dequantize(
    qweight: Tensor,
    qzeros: Tensor,
    scales: Tensor,
    group_size: int,
    out_dtype: torch.dtype | None = None,
) -> Tensor:
    """W_T [K, N] = (code - zero) * scale from AutoAWQ GEMM buffers (float16 unless out_dtype)."""
    return torch.ops.vilau.w4a16_dequantize(qweight, qzeros, scales, group_size, out_dtype)


def w4a16_repack(qweight: Tensor) -> Tensor:
    """AutoAWQ qweight int32 [K, N/8] (CPU, K % 32 == 0) -> packed uint8 [N/8, K/32, 8, 16]: the
    k-contiguous layout of the CPU GEMV (w4a16_linear_packed), built once per layer."""
    return torch.ops.vilau.w4a16_repack(qweight)


def w4a16_linear_packed(
    x: Tensor,
    packed: Tensor,
    qzeros: Tensor,
    scales: Tensor,
    bias: Tensor | None,
    group_size: int,
) -> Tensor:
    """x [..., K] @ W_T (+ bias) -> [..., N] on the CPU with W_T's codes from w4a16_repack;
    group_size a multiple of 32. Sums: 32 fused partial sums per output, then a fixed tree."""
    return torch.ops.vilau.w4a16_linear_packed(x, packed, qzeros, scales, bias, group_size)
