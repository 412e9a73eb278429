"""AWQ INT4 linears in ONNX: ``W4A16Linear`` -> ``com.microsoft::MatMulNBits`` (ONNX Runtime).

| torch op               | ONNX node                      | weights                                    |
|------------------------|--------------------------------|--------------------------------------------|
| ``vilau::matmul_nbits``| ``com.microsoft::MatMulNBits`` | B uint8 [N, K/bs, bs/2], scales [N*K/bs],  |
|                        | (bits 4, block_size = group)   | zero_points uint8 [N * ceil(K/bs / 2)]     |

Before export each ``W4A16Linear`` (AutoAWQ GEMM layout) is swapped for ``MatMulNBitsLinear``,
which holds the same integer codes, zero points and scales repacked once into MatMulNBits' layout
(per output row, K along the row, two codes a byte, the even index in the low nibble) and runs
``vilau::matmul_nbits``. That op's eager implementation is MatMulNBits' arithmetic
(``(q - zero) * scale`` in float32, then ``x @ W^T``), so the exported node and the module it
came from compute the same thing. It differs from ``vilau::w4a16_linear`` only in not rounding
the dequantized weight to float16 (AutoAWQ's definition): ~1e-3 relative in logits.
"""

from __future__ import annotations

import onnxscript
import torch
from onnx.defs import OpSchema
from torch import Tensor, nn

from vilau_rt.model.awq import W4A16Linear
from vilau_rt.model.awq_format import unpack_gemm

MS_DOMAIN = "com.microsoft"


@torch.library.custom_op("vilau::matmul_nbits", mutates_args=(), device_types=("cpu", "cuda"))
def matmul_nbits(
    x: Tensor, b: Tensor, scales: Tensor, zero_points: Tensor, k: int, n: int, block_size: int
) -> Tensor:
    """x [..., K] @ W^T with W [N, K] = (q - zero) * scale in MatMulNBits' packed layout."""
    w = dequantize_nbits(b, scales, zero_points, k, n, block_size)
    return (x.float() @ w.t()).to(x.dtype)


@matmul_nbits.register_fake
def _(x, b, scales, zero_points, k: int, n: int, block_size: int) -> Tensor:
    return x.new_empty((*x.shape[:-1], n))


def _unpack_nibbles(packed: Tensor, count: int) -> Tensor:
    """uint8 [..., m] -> int [..., count]: element 2i in the low nibble of byte i."""
    low, high = packed & 0xF, packed >> 4
    return torch.stack([low, high], dim=-1).flatten(-2)[..., :count].to(torch.int32)


def dequantize_nbits(b: Tensor, scales: Tensor, zero_points: Tensor, k: int, n: int, bs: int):
    blocks = k // bs
    q = _unpack_nibbles(b.view(n, blocks, bs // 2), bs)  # [N, blocks, bs]
    z = _unpack_nibbles(zero_points.view(n, -1), blocks)  # [N, blocks]
    s = scales.view(n, blocks).float()
    return ((q - z[..., None]).float() * s[..., None]).view(n, k)


def _pack_nibbles(values: Tensor) -> Tensor:
    """int [..., m] (m even after padding) -> uint8 [..., ceil(m/2)], even index low."""
    if values.shape[-1] % 2:
        values = torch.cat([values, values.new_zeros((*values.shape[:-1], 1))], dim=-1)
    v = values.to(torch.uint8)
    return v[..., 0::2] | (v[..., 1::2] << 4)


class MatMulNBitsLinear(nn.Module):
    def __init__(self, lin: W4A16Linear, dtype: torch.dtype):
        super().__init__()
        k, n, bs = lin.in_features, lin.out_features, lin.group_size
        if bs < 16 or bs & (bs - 1):
            raise ValueError(f"MatMulNBits needs a power-of-two block size >= 16, got {bs}")
        codes, zeros = unpack_gemm(lin.qweight.cpu(), lin.qzeros.cpu())  # [K, N], [K/bs, N]
        self.k, self.n, self.block_size = k, n, bs
        self.register_buffer("b", _pack_nibbles(codes.t().reshape(n, k // bs, bs)).contiguous())
        self.register_buffer("scales", lin.scales.t().contiguous().to(dtype).reshape(-1).cpu())
        self.register_buffer("zero_points", _pack_nibbles(zeros.t()).reshape(-1).contiguous())
        self.bias = None if lin.bias is None else nn.Parameter(lin.bias.to(dtype).cpu(), False)

    def forward(self, x: Tensor) -> Tensor:
        y = torch.ops.vilau.matmul_nbits(
            x, self.b, self.scales, self.zero_points, self.k, self.n, self.block_size
        )
        return y if self.bias is None else y + self.bias


def to_matmul_nbits(module: nn.Module, dtype: torch.dtype) -> int:
    """Swap every W4A16Linear below ``module`` for a MatMulNBitsLinear; returns how many."""
    swapped = 0
    for name, child in list(module.named_children()):
        if isinstance(child, W4A16Linear):
            setattr(module, name, MatMulNBitsLinear(child, dtype))
            swapped += 1
        else:
            swapped += to_matmul_nbits(child, dtype)
    return swapped


def schema() -> OpSchema:
    """com.microsoft::MatMulNBits as far as our graphs use it (for onnxscript and the checker)."""
    P, A = OpSchema.FormalParameter, OpSchema.Attribute
    INT = OpSchema.AttrType.INT
    return OpSchema(
        "MatMulNBits", MS_DOMAIN, 1,
        doc="ONNX Runtime's blockwise-quantized MatMul (A @ dequant(B)^T).",
        inputs=[P("A", "T1"), P("B", "T2"), P("scales", "T1"), P("zero_points", "T2")],
        outputs=[P("Y", "T1")],
        type_constraints=[
            ("T1", ["tensor(float)", "tensor(float16)"], "activations"),
            ("T2", ["tensor(uint8)"], "packed codes"),
        ],
        attributes=[A("K", INT, "in"), A("N", INT, "out"), A("bits", INT, "4"),
                    A("block_size", INT, "group")],
    )  # fmt: skip


_ms = onnxscript.values.Opset(MS_DOMAIN, 1)


def _matmul_nbits(x, b, scales, zero_points, k: int, n: int, block_size: int):
    return _ms.MatMulNBits(x, b, scales, zero_points, K=k, N=n, bits=4, block_size=block_size)


def translations() -> dict:
    return {torch.ops.vilau.matmul_nbits.default: _matmul_nbits}
