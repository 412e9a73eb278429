"""W4A8 on the CPU: AutoAWQ 4-bit weights times int8-quantized activations (csrc/w4a8/w4a8.h).

The opt-in fast path of an INT4 model on the CPU (``Pipeline.from_pretrained(...,
int8_activations=True)``): it sums 4-bit codes times int8 activations with integer dot products, as
llama.cpp's Q4_0 does, and is an approximation of the W4A16 layer it is built from (each block
of 32 activations is rounded to int8 against its own absolute maximum; see the header for the
arithmetic and the error bound). The exact W4A16 path stays the default.

``W4A8Weights.from_awq`` repacks a layer once; ``linear`` runs it on float32 rows.
``W8A8Weights`` / ``linear8`` are the same with 8-bit weights and a scale per output row: the
lm_head of that decode path (``native.quantize_rows_int8`` codes). Plain
functions, not torch ops: the callers are the native backend (its op-by-op step, and its C++
decode step, which takes the buffers by address: ``vilau_rt.backends.cpu_decoder``), the tests
and bench/w4a16.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .kernels import _native
from .native import quantize_rows_int8

BLOCK = 32  # activations per int8 scale (kW4A8Block)


@dataclass(frozen=True)
class W4A8Weights:
    """One layer in the W4A8 layout: codes uint8 [N/16, K/8, 16, 4], zeros uint8 [N/16, K/G, 16],
    scales float16 [N/16, K/G, 16], bias float16 [N] or None."""

    codes: Tensor
    zeros: Tensor
    scales: Tensor
    bias: Tensor | None
    k: int
    n: int
    group_size: int

    @classmethod
    @torch.no_grad()
    def from_awq(
        cls, qweight: Tensor, qzeros: Tensor, scales: Tensor, bias: Tensor | None, group_size: int
    ) -> W4A8Weights:
        """Repacks AutoAWQ GEMM buffers (CPU): qweight int32 [K, N/8], qzeros int32 [K/G, N/8],
        scales float16 [K/G, N], bias float16 [N] or None. Needs K % 32 == 0, N % 16 == 0 and
        group_size a multiple of 32 (ValueError naming the size otherwise)."""
        for name, t, dtype in (("qweight", qweight, torch.int32), ("qzeros", qzeros, torch.int32),
                               ("scales", scales, torch.float16)):  # fmt: skip
            if t.dtype != dtype or t.dim() != 2 or t.device.type != "cpu":
                raise ValueError(
                    f"w4a8: {name} must be a 2-D CPU {dtype} tensor, got {t.dtype} "
                    f"{tuple(t.shape)} on {t.device}"
                )
        k, n = qweight.shape[0], qweight.shape[1] * 8
        groups = k // group_size if group_size > 0 else 0
        if tuple(qzeros.shape) != (groups, n // 8) or tuple(scales.shape) != (groups, n):
            raise ValueError(
                f"w4a8: qzeros {tuple(qzeros.shape)} / scales {tuple(scales.shape)} do not match "
                f"qweight [K, N/8] = {tuple(qweight.shape)} with group_size {group_size}"
            )
        if bias is not None and (bias.dtype != torch.float16 or tuple(bias.shape) != (n,)):
            raise ValueError(
                f"w4a8: bias must be float16 [{n}], got {bias.dtype} {tuple(bias.shape)}"
            )
        tiles = max(n // 16, 0)
        codes = torch.empty(tiles, k // 8, 16, 4, dtype=torch.uint8)
        zeros = torch.empty(tiles, groups, 16, dtype=torch.uint8)
        sc = torch.empty(tiles, groups, 16, dtype=torch.float16)
        qweight, qzeros, scales = (t.contiguous() for t in (qweight, qzeros, scales))
        _native().w4a8_repack_cpu(
            qweight.data_ptr(), qzeros.data_ptr(), scales.data_ptr(), codes.data_ptr(),
            zeros.data_ptr(), sc.data_ptr(), k, n, group_size, torch.get_num_threads(),
        )  # fmt: skip
        bias = None if bias is None else bias.contiguous()
        return cls(codes, zeros, sc, bias, k, n, group_size)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.codes, self.zeros, self.scales))


@dataclass(frozen=True)
class W8A8Weights:
    """int8 weights [N, K] with a float32 scale per row, repacked: codes8 uint8 [ceil(N/16),
    K/4, 16, 4] (w + 128), scale float32 [N], bias float32 [N] or None."""

    codes8: Tensor
    scale: Tensor
    bias: Tensor | None
    k: int
    n: int

    @classmethod
    @torch.no_grad()
    def from_float(cls, weight: Tensor, bias: Tensor | None = None) -> W8A8Weights:
        """Quantizes a float [N, K] weight per row (``native.quantize_rows_int8``: scale =
        max|w| / 127, codes rounded to nearest) and repacks it; K % 32 == 0."""
        codes, scale = quantize_rows_int8(weight)
        n, k = codes.shape
        codes8 = torch.empty((n + 15) // 16, k // 4, 16, 4, dtype=torch.uint8)
        _native().w8a8_repack_cpu(
            codes.data_ptr(), codes8.data_ptr(), n, k, torch.get_num_threads()
        )
        if bias is not None:
            bias = bias.detach().float().contiguous()
            if tuple(bias.shape) != (n,):
                raise ValueError(f"w8a8: bias must be [{n}], got {tuple(bias.shape)}")
        return cls(codes8, scale, bias, k, n)

    @property
    def nbytes(self) -> int:
        return self.codes8.numel() + self.scale.numel() * 4


def quantize_x(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """x float32 [M, K] (CPU) -> (xq int8 [M, K], d float32 [M, K/32], s int32 [M, K/32]): per
    block of 32, d = max|x| / 127, xq = round(x * 127 / max|x|), s = the block's sum of xq."""
    if x.dtype != torch.float32 or x.dim() != 2 or x.device.type != "cpu":
        raise ValueError(f"w4a8: x must be 2-D CPU float32, got {x.dtype} {tuple(x.shape)}")
    m, k = x.shape
    x = x.contiguous()
    xq = torch.empty(m, k, dtype=torch.int8)
    d = torch.empty(m, k // BLOCK, dtype=torch.float32)
    s = torch.empty(m, k // BLOCK, dtype=torch.int32)
    _native().w4a8_quantize_x(x.data_ptr(), xq.data_ptr(), d.data_ptr(), s.data_ptr(), m, k)
    return xq, d, s


def linear(x: Tensor, w: W4A8Weights, isa: str = "auto") -> Tensor:
    """y float32 [M, N] = the W4A8 GEMV of x float32 [M, K] on one instruction-set path (an
    entry of ``_C.w4a8_cpu_isas()`` or "auto")."""
    if x.dim() != 2 or x.shape[1] != w.k:
        raise ValueError(f"w4a8: x must be [M, K = {w.k}], got {tuple(x.shape)}")
    xq, d, s = quantize_x(x)
    y = torch.empty(x.shape[0], w.n, dtype=torch.float32)
    _native().w4a8_gemv_cpu(
        xq.data_ptr(), d.data_ptr(), s.data_ptr(), w.codes.data_ptr(), w.zeros.data_ptr(),
        w.scales.data_ptr(), 0 if w.bias is None else w.bias.data_ptr(), y.data_ptr(),
        x.shape[0], w.k, w.n, w.group_size, torch.get_num_threads(), isa,
    )  # fmt: skip
    return y


def linear8(x: Tensor, w: W8A8Weights, isa: str = "auto") -> Tensor:
    """y float32 [M, N] = the W8A8 GEMV of x float32 [M, K] (``linear`` for 8-bit weights)."""
    if x.dim() != 2 or x.shape[1] != w.k:
        raise ValueError(f"w8a8: x must be [M, K = {w.k}], got {tuple(x.shape)}")
    xq, d, s = quantize_x(x)
    y = torch.empty(x.shape[0], w.n, dtype=torch.float32)
    _native().w8a8_gemv_cpu(
        xq.data_ptr(), d.data_ptr(), s.data_ptr(), w.codes8.data_ptr(), w.scale.data_ptr(),
        0 if w.bias is None else w.bias.data_ptr(), y.data_ptr(), x.shape[0], w.k, w.n,
        torch.get_num_threads(), isa,
    )  # fmt: skip
    return y
