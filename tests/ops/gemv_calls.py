"""The float GEMVs and GEMMs called on tensors: ``_C.gemv_f32_cpu``, ``_C.gemv_w16_cpu``,
``_C.gemv_w8_cpu``, ``_C.gemm_f32_cpu`` and ``_C.gemm_w16_cpu`` into a new float32 [M, N] (tests
of csrc/gemv and csrc/gemm; no checks beyond the kernel's own)."""

from __future__ import annotations

import torch

from vilau_rt.ops.kernels import _DTYPE_CODES, _native


def gemv_f32(x, w, bias=None, isa="auto", threads=2):
    y = torch.empty(x.shape[0], w.shape[0])
    _native().gemv_f32_cpu(
        x.data_ptr(), w.data_ptr(), 0 if bias is None else bias.data_ptr(), y.data_ptr(),
        x.shape[0], x.shape[1], w.shape[0], threads, isa,
    )  # fmt: skip
    return y


def gemv_w16(x, w, bias=None, isa="auto", threads=2):
    y = torch.empty(x.shape[0], w.shape[0])
    _native().gemv_w16_cpu(
        x.data_ptr(), w.data_ptr(), _DTYPE_CODES[w.dtype], 0 if bias is None else bias.data_ptr(),
        y.data_ptr(), x.shape[0], x.shape[1], w.shape[0], threads, isa,
    )  # fmt: skip
    return y


def gemv_w8(x, w8, scale, bias=None, isa="auto", threads=2):
    y = torch.empty(x.shape[0], w8.shape[0])
    _native().gemv_w8_cpu(
        x.data_ptr(), w8.data_ptr(), scale.data_ptr(), 0 if bias is None else bias.data_ptr(),
        y.data_ptr(), x.shape[0], x.shape[1], w8.shape[0], threads, isa,
    )  # fmt: skip
    return y


def gemm_f32(x, w, bias=None, isa="auto", threads=2):
    """``_C.gemm_f32_cpu`` (float32 W) or ``_C.gemm_w16_cpu`` (16-bit W) into a new [M, N]."""
    y = torch.empty(x.shape[0], w.shape[0])
    args = (0 if bias is None else bias.data_ptr(), y.data_ptr(), x.shape[0], x.shape[1],
            w.shape[0], threads, isa)  # fmt: skip
    if w.dtype == torch.float32:
        _native().gemm_f32_cpu(x.data_ptr(), w.data_ptr(), *args)
    else:
        _native().gemm_w16_cpu(x.data_ptr(), w.data_ptr(), _DTYPE_CODES[w.dtype], *args)
    return y


def gemm_awq(x, qweight, qzeros, scales, group_size, bias=None, isa="auto", threads=2):
    """``_C.gemm_awq_cpu`` on AutoAWQ GEMM-format buffers into a new [M, N]."""
    n = qweight.shape[1] * 8
    y = torch.empty(x.shape[0], n)
    _native().gemm_awq_cpu(
        x.data_ptr(), qweight.data_ptr(), qzeros.data_ptr(), scales.data_ptr(),
        0 if bias is None else bias.data_ptr(), y.data_ptr(), x.shape[0], x.shape[1], n,
        group_size, threads, isa,
    )  # fmt: skip
    return y
