"""AutoAWQ's INT4 GEMM format and its quantizer arithmetic, on torch tensors.

The format is the one AutoAWQ ``save_quantized`` writes and vLLM, transformers and TensorRT-LLM
read (K = in_features, N = out_features, G = group_size):

| tensor  | dtype   | shape     | content                                                     |
|---------|---------|-----------|-------------------------------------------------------------|
| qweight | int32   | [K, N/8]  | codes 0..15, eight output columns per word (order below)    |
| qzeros  | int32   | [K/G, N/8]| zero points 0..15, packed like qweight                      |
| scales  | float16 | [K/G, N]  | one scale per (group, output column)                        |
| bias    | float16 | [N]       | only if the float linear had one                            |

W_T[i, o] = (code[i, o] - zero[i // G, o]) * scale[i // G, o], and y = x @ W_T + bias.
Nibble k (bits 4k..4k+3) of a word holds column ``8c + PACK_ORDER[k]`` of its group of eight.
Older AutoAWQ "GEMV" checkpoints (qweight [N, K/8], packed along K in plain order) are read by
``unpack_gemv`` and repacked to GEMM at load time.

A symmetric quantizer (``zero_point=False``, q in [-8, 7]) is stored in the same layout with
code = q + 8 and an explicit zero point of 8, so every GEMM reader decodes it unchanged.
``vilau_rt.model.awq`` builds the runtime on it: ``AWQConfig``, ``W4A16Linear`` and loading.
"""

from __future__ import annotations

import torch

# Nibble k of a packed word holds column 8c + PACK_ORDER[k]; column 8c + j sits in nibble
# UNPACK_ORDER[j]. AutoAWQ interleaves so that its CUDA kernel can dequantize 8 values with
# two shifts into paired fp16 lanes.
PACK_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
UNPACK_ORDER = (0, 4, 1, 5, 2, 6, 3, 7)
SHIFTS = tuple(range(0, 32, 4))


# ---------------------------------------------------------------------------- packing


def _pack_rows(values: torch.Tensor) -> torch.Tensor:
    """int [R, N] in 0..15 -> int32 [R, N/8] in AutoAWQ's interleaved nibble order."""
    r, n = values.shape
    v = values.to(torch.int64).reshape(r, n // 8, 8)[:, :, list(PACK_ORDER)]
    word = (v << torch.tensor(SHIFTS, dtype=torch.int64, device=v.device)).sum(-1)
    # int32 holds the raw bit pattern: a word whose top nibble is >= 8 reads as negative.
    return torch.where(word >= 2**31, word - 2**32, word).to(torch.int32)


def _unpack_rows(words: torch.Tensor, order=UNPACK_ORDER) -> torch.Tensor:
    """int32 [R, W] -> uint8 [R, 8W]; column 8c + j comes from nibble order[j]."""
    w = words.to(torch.int64) & 0xFFFFFFFF  # as uint32, so the shifts see no sign bits
    nib = (w.unsqueeze(-1) >> torch.tensor(SHIFTS, dtype=torch.int64, device=w.device)) & 0xF
    return nib[:, :, list(order)].reshape(words.shape[0], -1).to(torch.uint8)


def pack_gemm(codes: torch.Tensor, zeros: torch.Tensor, scales: torch.Tensor):
    """codes [K, N], zeros [K/G, N] (integers 0..15), scales [K/G, N]
    -> (qweight int32 [K, N/8], qzeros int32 [K/G, N/8], scales float16 [K/G, N])."""
    if codes.dim() != 2 or codes.shape[1] % 8:
        raise ValueError(
            f"codes must be [K, N] with N a multiple of 8, got {tuple(codes.shape)}; "
            "pad out_features or keep this layer float (modules_to_not_convert)"
        )
    k, n = codes.shape
    if zeros.dim() != 2 or zeros.shape[1] != n or zeros.shape[0] < 1 or k % zeros.shape[0]:
        raise ValueError(f"zeros must be [K/G, N] for codes {(k, n)}, got {tuple(zeros.shape)}")
    if tuple(scales.shape) != tuple(zeros.shape):
        raise ValueError(f"scales {tuple(scales.shape)} must match zeros {tuple(zeros.shape)}")
    for name, t in (("codes", codes), ("zeros", zeros)):
        if t.dtype.is_floating_point or t.dtype == torch.bool:
            raise TypeError(f"{name} must be an integer tensor, got {t.dtype}")
        if t.numel() and (int(t.min()) < 0 or int(t.max()) > 15):
            raise ValueError(
                f"{name} must lie in 0..15, got {int(t.min())}..{int(t.max())} "
                "(symmetric codes are stored as q + 8)"
            )
    return _pack_rows(codes), _pack_rows(zeros), scales.to(torch.float16).contiguous()


def unpack_gemm(qweight: torch.Tensor, qzeros: torch.Tensor):
    """(qweight int32 [K, N/8], qzeros int32 [K/G, N/8]) -> (codes uint8 [K, N], zeros [K/G, N])."""
    for name, t in (("qweight", qweight), ("qzeros", qzeros)):
        if t.dtype != torch.int32 or t.dim() != 2:
            raise TypeError(f"{name} must be a 2-D int32 tensor, got {t.dtype} {tuple(t.shape)}")
    return _unpack_rows(qweight), _unpack_rows(qzeros)


def dequantize_gemm(
    qweight: torch.Tensor,
    qzeros: torch.Tensor,
    scales: torch.Tensor,
    group_size: int,
    dtype: torch.dtype = torch.float16,
) -> torch.Tensor:
    """W_T [K, N] = (code - zero) * scale, computed in ``dtype``. float16 reproduces AutoAWQ's
    dequantization bit for bit (the product is rounded to fp16); float32 is exact."""
    codes, zeros = unpack_gemm(qweight, qzeros)
    k = codes.shape[0]
    if group_size < 1 or k % group_size or zeros.shape[0] != k // group_size:
        raise ValueError(
            f"group_size={group_size} does not fit qweight {tuple(qweight.shape)} and "
            f"qzeros {tuple(qzeros.shape)}"
        )
    z = zeros.to(dtype).repeat_interleave(group_size, 0)
    s = scales.to(dtype).repeat_interleave(group_size, 0)
    return (codes.to(dtype) - z) * s


def unpack_gemv(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, group_size: int):
    """AutoAWQ GEMV buffers -> (codes [K, N], zeros [K/G, N], scales float16 [K/G, N]).

    GEMV: qweight [N, K/8] packed along K in plain order (nibble k = column 8c + k); qzeros
    [N, Wz] with group g in word g // 8, nibble g % 8; scales [N, Wz * 8] whose columns past
    K/G are padding.
    """
    n, k8 = qweight.shape
    k = k8 * 8
    if group_size < 1 or k % group_size:
        raise ValueError(f"group_size={group_size} does not divide in_features {k} (GEMV qweight)")
    groups = k // group_size
    if qzeros.shape[0] != n or qzeros.shape[1] * 8 < groups or scales.shape[0] != n:
        raise ValueError(
            f"GEMV qzeros {tuple(qzeros.shape)} / scales {tuple(scales.shape)} do not fit "
            f"qweight {tuple(qweight.shape)} with group_size {group_size}"
        )
    plain = tuple(range(8))
    codes = _unpack_rows(qweight, plain)  # [N, K]
    zeros = _unpack_rows(qzeros, plain)[:, :groups]  # [N, K/G]
    return (
        codes.t().contiguous(),
        zeros.t().contiguous(),
        scales[:, :groups].t().half().contiguous(),
    )


# ---------------------------------------------------------------------------- quantizer


def quantize_tensor(
    w: torch.Tensor,
    group_size: int,
    zero_point: bool = True,
    compute_dtype: torch.dtype = torch.float16,
):
    """AutoAWQ's pseudo-quantizer on w [N, K] -> (codes uint8 [N, K], zeros uint8 [N, K/G],
    scales float16 [N, K/G]), one group = ``group_size`` consecutive input columns.

    zero_point: scale = max(max - min, 1e-5) / 15, zero = clamp(-round(min / scale), 0, 15),
    code = clamp(round(w / scale) + zero, 0, 15). Symmetric: scale = max(max|w|, 1e-5) / 7,
    q = clamp(round(w / scale), -8, 7), stored as code = q + 8 with zero 8. ``round`` is half to
    even. Every op is rounded to ``compute_dtype``: float16 (AutoAWQ's arithmetic) is needed for
    bit-identical codes; float32 flips up to ~1% of them.
    """
    if w.dim() != 2 or group_size < 1 or w.shape[1] % group_size:
        raise ValueError(
            f"weight {tuple(w.shape)} cannot be split into groups of {group_size} input columns; "
            "use a group_size that divides in_features or keep this layer float"
        )
    n, k = w.shape
    g = w.to(compute_dtype).reshape(-1, group_size)
    if zero_point:
        hi = g.amax(dim=1, keepdim=True)
        lo = g.amin(dim=1, keepdim=True)
        scales = (hi - lo).clamp(min=1e-5) / 15
        zeros = (-torch.round(lo / scales)).clamp(0, 15)
        codes = torch.clamp(torch.round(g / scales) + zeros, 0, 15)
    else:
        scales = g.abs().amax(dim=1, keepdim=True).clamp(min=1e-5) / 7
        zeros = torch.full_like(scales, 8)
        codes = torch.clamp(torch.round(g / scales), -8, 7) + 8
    return (
        codes.reshape(n, k).to(torch.uint8),
        zeros.reshape(n, -1).to(torch.uint8),
        scales.reshape(n, -1).to(torch.float16),
    )


def fake_quantize(
    w: torch.Tensor,
    group_size: int,
    zero_point: bool = True,
    compute_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Q(w): quantize then dequantize [N, K], returned in w's dtype (the AWQ search's inner step)."""
    dtype = compute_dtype or w.dtype
    codes, zeros, scales = quantize_tensor(w, group_size, zero_point, dtype)
    n, k = w.shape
    c = codes.to(dtype).reshape(n, -1, group_size)
    deq = (c - zeros.to(dtype).unsqueeze(-1)) * scales.to(dtype).unsqueeze(-1)
    return deq.reshape(n, k).to(w.dtype)
