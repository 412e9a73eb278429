"""The native runtime's device-side sampling op and the depth transformer's whole loop for one
image position.

``vilau::sample_codes(logits, with_cfg, cfg_scale, temperature, top_k, top_p, rng, subsequence)``

| arg         | type / shape                   | notes                                          |
|-------------|--------------------------------|------------------------------------------------|
| logits      | [2n, V] (with_cfg) or [n, V]   | float32 / float16 / bfloat16            |
| with_cfg    | bool                           | rows [cond, uncond]; u + cfg * (c - u)  |
| temperature | float > 0                      |                                                |
| top_k       | int                            | <= 0 or >= V: off; 1: argmax (no randomness)   |
| top_p       | float in (0, 1]                | 1.0: off; keeps the token that crosses top_p   |
| rng         | int64 [2], logits' device      | (seed, counter), read on the device     |
| subsequence | int                            | Philox word 3 (the depth index in depth_decode) |
| returns     | codes int64 [n]                |                                                |

``depth_decode(hidden, weights, codebooks, n_head, cfg_scale, temperature, top_k, top_p, seed,
counter) -> codes int64 [n, D]``, a plain function over ``depth_loop``: aten ops plus
``vilau::sample_codes``, so torch.export traces it and a CUDA graph captures it. (The torch op
``vilau::depth_decode`` is ``vilau_rt.ops.depth_decode``', the ONNX ``vilau::DepthDecode`` reference;
it takes packed weights and draws with splitmix64, so its sampled codes differ from these.)

| arg         | type / shape            | notes                                                 |
|-------------|-------------------------|-------------------------------------------------------|
| hidden      | [2n, H_llm]             | final LLM hidden states, rows [cond..., uncond...]    |
| weights     | list of tensors         | ``depth_weights(model.depth_transformer)``, order below |
| codebooks   | [Dc, n_embed + 1, C]    | ``quantizer.stacked_codebooks()`` (Dc = D or 1)       |
| n_head      | int                     | depth transformer heads                               |
| cfg_scale   | float                   | CFG at every depth; the same code feeds both halves   |
| temperature, top_k, top_p | as above  | RQ-Transformer semantics (official: 1.0, 900, 0.96)   |
| seed        | int                     | Philox key                                            |
| counter     | int                     | the image position; depth d: subsequence d            |
| returns     | codes int64 [n, D]      |                                                       |

``weights`` order: in_mlp_1.{weight,bias}, in_mlp_2.{weight,bias}, pos_emb_d [1, D, E], then for
each block ln1.{w,b}, attn.query.{w,b}, attn.key.{w,b}, attn.value.{w,b}, attn.proj.{w,b},
ln2.{w,b}, mlp.0.{w,b}, mlp.2.{w,b} (16 per block), then classifier_mlp.layer_norm.{w,b},
classifier_mlp.linear.{w,b}.

The depth loop is written with torch ops that mirror ``vilau_rt.model.depth`` operation by operation
(the same rounding, so greedy codes equal the reference), keeps a KV cache across depths, and
never synchronises with the host: on CUDA ``NativeBackend`` captures it in a CUDA graph.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..model.depth import guided_logits
from .kernels import (
    _DTYPE_CODES,
    _check_cpu,
    _check_device,
    _check_dtype,
    _check_ndim,
    _native,
    cpu_gemm_is_fast,
)

WEIGHTS_PER_BLOCK = 16


# ---------------------------------------------------------------------------- float GEMV


_GEMV_WEIGHT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _cpu_rows(x: Tensor, weight: Tensor) -> int:
    """Rows of ``x`` when the native float kernels can read both operands in place (x CPU
    float32; weight a contiguous CPU float32 / float16 / bfloat16 matrix), else 0."""
    if x.device.type != "cpu" or x.dtype != torch.float32 or not x.dim() or not x.shape[-1]:
        return 0
    if weight.device.type != "cpu" or weight.dtype not in _GEMV_WEIGHT_DTYPES or weight.dim() != 2:
        return 0
    return x.numel() // x.shape[-1] if weight.is_contiguous() else 0


def gemv_rows(x: Tensor, weight: Tensor) -> int:
    """Rows of ``x`` that ``linear`` sends to the native GEMV (0: not): x CPU float32, weight CPU
    float32 (``_C.gemv_f32_cpu``) or float16 / bfloat16 (``_C.gemv_w16_cpu``), contiguous,
    K % 32 == 0 and at most ``_C.GEMV_F32_MAX_M`` rows (decode steps, CFG pairs). Larger M
    (prefill): ``gemm_rows``."""
    m = _cpu_rows(x, weight)
    return m if 1 <= m <= _native().GEMV_F32_MAX_M and x.shape[-1] % 32 == 0 else 0


def gemm_rows(x: Tensor, weight: Tensor) -> int:
    """Rows of ``x`` that ``linear`` sends to the native GEMM (0: not): x CPU float32, more rows
    than the GEMV serves (prefill), weight CPU, 2-D, contiguous, and either float16 / bfloat16
    (``_C.gemm_w16_cpu``: widened while packed; the alternative builds a float32 copy of W on
    every call) or float32 where ``kernels.cpu_gemm_is_fast`` (``_C.gemm_f32_cpu``: measured
    1.1-2.1x torch's MKL sgemm on AVX-512, bench/RESULTS.md; elsewhere torch's BLAS is kept)."""
    m = _cpu_rows(x, weight)
    if m <= _native().GEMV_F32_MAX_M:
        return 0
    if weight.dtype == torch.float32 and not cpu_gemm_is_fast():
        return 0
    return m


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear(x, weight, bias)``; on CPU float32 x, decode-shaped calls (``gemv_rows``) run
    ``_C.gemv_f32_cpu`` (csrc/gemv: reads W at memory bandwidth with the threads; its summation
    order is fixed and every instruction-set path returns the same bits) and prefill-shaped ones
    (``gemm_rows``) ``_C.gemm_f32_cpu`` (csrc/gemm: W packed per block, register tiles of 8 x 32;
    one FMA chain per output, the same bits on every path and for a row alone or in a batch);
    other shapes and devices BLAS.

    A float16 or bfloat16 ``weight`` with a float32 ``x`` means ``F.linear(x, weight.float(),
    bias)``, computed in float32. The GEMV (``_C.gemv_w16_cpu``) and the GEMM
    (``_C.gemm_w16_cpu``) widen each weight exactly and return the bits of their float32 runs on
    ``weight.float()`` while reading half the bytes; any other case falls back to ``F.linear(x,
    weight.float(), bias)``: the same values up to BLAS rounding, but it builds a float32 copy of
    the weight on each call, so it is slow. Other dtype pairs go to ``F.linear`` unchanged."""
    w16 = x.dtype == torch.float32 and weight.dtype in (torch.float16, torch.bfloat16)
    m = gemv_rows(x, weight)
    gemm = 0 if m else gemm_rows(x, weight)
    n = weight.shape[0] if m or gemm else 0
    bias_ok = bias is None or (
        bias.dtype == x.dtype and bias.device == x.device and bias.shape == (n,)
    )
    if not (m or gemm) or x.shape[-1] != weight.shape[1] or not bias_ok:
        return F.linear(x, weight.float() if w16 else weight, bias)
    x = x.contiguous()
    bias = None if bias is None else bias.contiguous()  # held: its address must outlive the call
    y = torch.empty(*x.shape[:-1], n, dtype=x.dtype)
    args = (0 if bias is None else bias.data_ptr(), y.data_ptr(), m or gemm, x.shape[-1], n)
    ext, threads = _native(), torch.get_num_threads()
    if w16:
        kernel = ext.gemv_w16_cpu if m else ext.gemm_w16_cpu
        kernel(x.data_ptr(), weight.data_ptr(), _DTYPE_CODES[weight.dtype], *args, threads)
    else:
        kernel = ext.gemv_f32_cpu if m else ext.gemm_f32_cpu
        kernel(x.data_ptr(), weight.data_ptr(), *args, threads)
    return y


def exact_16bit(weight: Tensor, chunk: int = 1 << 22) -> torch.dtype | None:
    """The 16-bit float dtype that holds every value of the float32 ``weight`` exactly (so that
    ``weight.to(dtype)`` is lossless and ``linear`` on it returns the same bits), or None.

    torch.float16 when every value round-trips through float16 bit for bit, else torch.bfloat16
    when every value round-trips through bfloat16, else None. float16 is preferred where both
    hold: the two are the same size and give the same GEMV result, and float16 is the one more
    hardware and formats (F16C, NEON, older GPUs, numpy) convert natively. Only finite values
    count: a tensor with an inf or a nan gives None. float16 covers magnitudes up to 65504
    (larger values overflow: not exact) and down to its subnormals (multiples of 2**-24: a
    smaller or finer value is not exact); bfloat16 has float32's range with 8 significant bits,
    float32 subnormals included. -0.0 stays -0.0. Checked ``chunk`` elements at a time, so the
    temporary copies stay small next to a large weight.

    :raises TypeError: ``weight`` is not float32.
    """
    if weight.dtype != torch.float32:
        raise TypeError(f"exact_16bit: weight is {weight.dtype}; expected torch.float32")
    flat = weight.detach().reshape(-1)
    candidates = [torch.float16, torch.bfloat16]
    for start in range(0, flat.numel(), chunk):
        part = flat[start : start + chunk]
        if not bool(torch.isfinite(part).all()):
            return None
        bits = part.view(torch.int32)
        candidates = [
            dt for dt in candidates if torch.equal(part.to(dt).float().view(torch.int32), bits)
        ]
        if not candidates:
            return None
    return candidates[0]


# ---------------------------------------------------------------------------- int8 GEMV
# A weight read by decode steps only (the lm_head: vocab x hidden, the largest single read of a
# step) at a quarter of its float32 bytes: int8 codes with one float32 scale per output row.


def quantize_rows_int8(weight: Tensor, chunk: int = 1 << 22) -> tuple[Tensor, Tensor]:
    """``(codes, scale)`` of ``weight`` [N, K] (float32, float16 or bfloat16) for ``gemv_w8``:
    codes int8 [N, K] and scale float32 [N], on ``weight``'s device, so that
    ``scale[:, None] * codes`` approximates ``weight`` to within half a scale per value.

    ``scale[n] = amax_n / 127`` rounded to float32, ``amax_n`` the row's largest magnitude;
    ``codes[n, k] = weight[n, k] / scale[n]`` rounded to the nearest integer, ties to even, and
    clamped to [-127, 127]. The quotient is taken in float64, where it is near enough to the exact
    one that its rounding is the exact quotient's (float32 division could round a quotient onto a
    half and then to the wrong side of it). Hence ``|weight - codes * scale| <= scale / 2`` for
    every value of a row with a normal scale (amax_n >= 127 * 2**-126); a smaller scale is a
    float32 subnormal with fewer bits and the clamp can cut its largest values. -128 is not used,
    so ``-weight`` quantizes to ``-codes``. A row whose scale is 0 (a row of zeros, or amax_n
    below about 2**-143, where amax_n / 127 underflows) gets codes 0. Done ``chunk`` elements
    (whole rows) at a time, so the float64 temporaries stay small next to an lm_head.

    :raises TypeError: ``weight``'s dtype is not float32, float16 or bfloat16.
    :raises ValueError: ``weight`` is not [N, K] with N, K >= 1, or has a nan or an inf (its row
        is named).
    """
    op = "quantize_rows_int8"
    _check_dtype(op, "weight", weight, _DTYPE_CODES)
    _check_ndim(op, "weight", weight, 2, "[N, K]")
    n, k = weight.shape
    if n < 1 or k < 1:
        raise ValueError(f"{op}: weight must be [N, K] with N, K >= 1, got {(n, k)}")
    codes = torch.empty(n, k, dtype=torch.int8, device=weight.device)
    scale = torch.empty(n, dtype=torch.float32, device=weight.device)
    rows = max(1, chunk // k)
    for start in range(0, n, rows):
        part = weight[start : start + rows].detach().double()  # exact: every value fits
        finite = torch.isfinite(part).all(dim=1)
        if not bool(finite.all()):
            row = start + int((~finite).nonzero()[0])
            raise ValueError(
                f"{op}: weight row {row} has a nan or an inf; int8 needs finite values"
            )
        part_scale = (part.abs().amax(dim=1) / 127).float()  # one rounding of amax / 127
        s64 = part_scale.double()[:, None]
        q = torch.round(part / s64).clamp_(-127, 127)  # torch.round: ties to even
        codes[start : start + rows] = torch.where(s64 > 0, q, 0.0).to(torch.int8)  # 0 / 0: nan
        scale[start : start + rows] = part_scale
    return codes, scale


def gemv_w8(x: Tensor, w8: Tensor, scale: Tensor, bias: Tensor | None = None) -> Tensor:
    """``y[M, N] = x @ (scale[:, None] * w8.float()).T + bias`` on the CPU through
    ``_C.gemv_w8_cpu`` with ``torch.get_num_threads()`` threads: x float32 [M, K] with
    1 <= M <= ``_C.GEMV_F32_MAX_M`` and K % 32 == 0, ``w8`` int8 [N, K] and ``scale`` float32 [N]
    (``quantize_rows_int8``), bias float32 [N] or None, all contiguous.

    Exactly: ``S = linear(x, w8.float())`` (the float32 GEMV's bits), then ``S * scale``, then
    ``+ bias``, each rounded to float32, on every instruction-set path.

    :raises TypeError: a dtype other than the above (the argument is named).
    :raises ValueError: a tensor off the CPU, a shape that does not fit, a strided tensor, or sizes
        the GEMV does not serve (M, K: the kernel's message).
    """
    op = "gemv_w8"
    _check_cpu(op, x=x, w8=w8, scale=scale, bias=bias)
    _check_dtype(op, "x", x, (torch.float32,))
    _check_dtype(op, "w8", w8, (torch.int8,))
    _check_dtype(op, "scale", scale, (torch.float32,))
    if bias is not None:
        _check_dtype(op, "bias", bias, (torch.float32,))
    _check_ndim(op, "x", x, 2, "[M, K]")
    _check_ndim(op, "w8", w8, 2, "[N, K]")
    n, k = w8.shape
    if x.shape[1] != k:
        raise ValueError(f"{op}: x must be [M, K] with K = {k} (w8 is [N, K] = {(n, k)}), "
                         f"got {tuple(x.shape)}")  # fmt: skip
    for name, t in (("scale", scale), ("bias", bias)):
        if t is not None and tuple(t.shape) != (n,):
            raise ValueError(f"{op}: {name} must be [N] = [{n}], got {tuple(t.shape)}")
    for name, t in (("x", x), ("w8", w8), ("scale", scale), ("bias", bias)):
        if t is not None and not t.is_contiguous():
            raise ValueError(f"{op}: {name} must be contiguous (strides {t.stride()})")
    y = torch.empty(x.shape[0], n)
    _native().gemv_w8_cpu(
        x.data_ptr(), w8.data_ptr(), scale.data_ptr(), 0 if bias is None else bias.data_ptr(),
        y.data_ptr(), x.shape[0], k, n, torch.get_num_threads(),
    )  # fmt: skip
    return y


# ---------------------------------------------------------------------------- sample_codes


def _check_sample(
    logits: Tensor, with_cfg: bool, temperature: float, top_k: int, top_p: float, rng: Tensor
) -> tuple[int, int]:
    op = "sample_codes"
    _check_dtype(op, "logits", logits, _DTYPE_CODES)
    if logits.dim() != 2:
        raise ValueError(f"{op}: logits must be [rows, V], got shape {tuple(logits.shape)}")
    rows, vocab = logits.shape
    if with_cfg and rows % 2:
        raise ValueError(f"{op}: with_cfg needs [cond..., uncond...] rows, got an odd {rows}")
    if not temperature > 0 or math.isinf(temperature):
        raise ValueError(f"{op}: temperature = {temperature} must be > 0 and finite")
    if not top_p > 0:
        raise ValueError(f"{op}: top_p = {top_p} must be in (0, 1]")
    _check_dtype(op, "rng", rng, (torch.int64,))
    if tuple(rng.shape) != (2,):
        raise ValueError(f"{op}: rng must be int64 [2] (seed, counter), got {tuple(rng.shape)}")
    return (rows // 2 if with_cfg else rows), vocab


@torch.library.custom_op("vilau::sample_codes", mutates_args=(), device_types=("cpu", "cuda"))
def _sample_codes_op(
    logits: Tensor,
    with_cfg: bool,
    cfg_scale: float,
    temperature: float,
    top_k: int,
    top_p: float,
    rng: Tensor,
    subsequence: int,
) -> Tensor:
    n, vocab = _check_sample(logits, with_cfg, temperature, top_k, top_p, rng)
    device = _check_device("sample_codes", logits=logits, rng=rng)
    logits, rng = logits.contiguous(), rng.contiguous()
    codes = torch.empty(n, dtype=torch.int64, device=device)
    if n == 0:
        return codes
    ext = _native()
    args = (with_cfg, cfg_scale, temperature, top_k, top_p, rng.data_ptr(), subsequence)
    dtype = _DTYPE_CODES[logits.dtype]
    if device.type == "cpu":
        ext.sample_codes_cpu(
            logits.data_ptr(), codes.data_ptr(), n, vocab, *args, dtype, torch.get_num_threads()
        )
    else:
        workspace = torch.empty(
            ext.sample_workspace_bytes(n, vocab), dtype=torch.uint8, device=device
        )
        with torch.cuda.device(device):
            stream = torch.cuda.current_stream(device).cuda_stream
            ext.sample_codes_cuda(
                logits.data_ptr(), codes.data_ptr(), workspace.data_ptr(), n, vocab, *args,
                dtype, stream,
            )  # fmt: skip
    return codes


@_sample_codes_op.register_fake
def _(logits, with_cfg, cfg_scale, temperature, top_k, top_p, rng, subsequence):
    n, _ = _check_sample(logits, with_cfg, temperature, top_k, top_p, rng)
    return logits.new_empty((n,), dtype=torch.int64)


def rng_state(seed: int, counter: int, device) -> Tensor:
    """The int64 [2] (seed, counter) buffer the samplers read (uint64 values wrap to int64)."""
    as_i64 = [v - (1 << 64) if v >= (1 << 63) else v for v in (seed, counter)]
    return torch.tensor(as_i64, dtype=torch.int64, device=device)


def sample_codes(
    logits: Tensor,
    *,
    cfg_scale: float | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    counter: int = 0,
    subsequence: int = 0,
) -> Tensor:
    """Codes [n] from logits [n, V], or from [2n, V] with ``cfg_scale`` (CFG fused).

    Same semantics as ``vilau_rt.sampling.sample_codes`` (top_k=1 is exactly its argmax),
    drawn from Philox4x32-10 at (seed, counter, row, subsequence): reproducible per seed."""
    rng = rng_state(seed, counter, logits.device)
    return torch.ops.vilau.sample_codes(
        logits, cfg_scale is not None, float(cfg_scale or 0.0), float(temperature),
        int(top_k or 0), float(1.0 if top_p is None else top_p), rng, int(subsequence),
    )  # fmt: skip


# ---------------------------------------------------------------------------- depth_decode


def depth_weights(depth_transformer) -> list[Tensor]:
    """The ``weights`` list of ``vilau::depth_decode`` from a ``DepthTransformer``."""
    dt = depth_transformer
    out = [dt.in_mlp_1.weight, dt.in_mlp_1.bias, dt.in_mlp_2.weight, dt.in_mlp_2.bias, dt.pos_emb_d]
    for b in dt.head_transformer.blocks:
        a = b.attn
        out += [b.ln1.weight, b.ln1.bias, a.query.weight, a.query.bias, a.key.weight, a.key.bias]
        out += [a.value.weight, a.value.bias, a.proj.weight, a.proj.bias]
        out += [b.ln2.weight, b.ln2.bias, b.mlp[0].weight, b.mlp[0].bias]
        out += [b.mlp[2].weight, b.mlp[2].bias]
    cls = dt.classifier_mlp
    out += [cls.layer_norm.weight, cls.layer_norm.bias, cls.linear.weight, cls.linear.bias]
    return [t.detach() for t in out]


def _check_depth(hidden: Tensor, weights: list[Tensor], codebooks: Tensor, n_head: int):
    op = "depth_decode"
    if (len(weights) - 9) % WEIGHTS_PER_BLOCK or len(weights) < 9:
        raise ValueError(
            f"{op}: weights has {len(weights)} tensors; expected 9 + 16 per block "
            "(see depth_weights)"
        )
    pos = weights[4]
    if pos.dim() != 3 or pos.shape[0] != 1:
        raise ValueError(f"{op}: weights[4] (pos_emb_d) must be [1, D, E], got {tuple(pos.shape)}")
    depth, embed = pos.shape[1], pos.shape[2]
    if n_head < 1 or embed % n_head:
        raise ValueError(f"{op}: n_head = {n_head} must divide the embedding width E = {embed}")
    if hidden.dim() != 2 or hidden.shape[0] % 2:
        raise ValueError(
            f"{op}: hidden must be [2n, H] rows [cond..., uncond...], got {tuple(hidden.shape)}"
        )
    if codebooks.dim() != 3 or codebooks.shape[0] not in (1, depth):
        raise ValueError(
            f"{op}: codebooks must be [D or 1, n_embed + 1, C] with D = {depth}, "
            f"got {tuple(codebooks.shape)}"
        )
    return hidden.shape[0] // 2, depth


def depth_loop(
    hidden: Tensor,
    weights: list[Tensor],
    codebooks: Tensor,
    n_head: int,
    cfg_scale: float,
    temperature: float,
    top_k: int,
    top_p: float,
    rng: Tensor | None,
    on_logits: Callable[[int, Tensor], None] | None = None,
    sample: Callable[[Tensor], Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """The D-step depth loop of one position: (codes [n, D], summed code embedding [n, C]).

    Its linears go through ``linear``: on the CPU the native GEMV for a CFG pair (torch's BLAS
    read a 7B-shaped depth transformer at a quarter of the memory bandwidth there,
    bench/RESULTS.md), 16-bit weights read as stored; elsewhere ``F.linear``.

    ``rng`` is a device int64 [2] (seed, counter); depth d samples with subsequence d. No host
    synchronisation (capturable) unless ``on_logits`` is given. ``sample``, if given, picks each
    depth's codes [n] instead, from the guided logits [n, V] as ``DepthTransformer.generate``
    forms them (temperature, top_k, top_p and rng are then unused): any host callable."""
    n, depth = _check_depth(hidden, weights, codebooks, n_head)
    in1_w, in1_b, in2_w, in2_b, pos = weights[:5]
    blocks = weights[5:-4]
    cls_ln_w, cls_ln_b, cls_w, cls_b = weights[-4:]
    N, E = hidden.shape[0], pos.shape[2]
    hd = E // n_head
    n_layer = len(blocks) // WEIGHTS_PER_BLOCK
    kv = [(hidden.new_empty(N, n_head, depth, hd), hidden.new_empty(N, n_head, depth, hd))
          for _ in range(n_layer)]  # fmt: skip
    scale = 1.0 / math.sqrt(hd)
    x = linear(hidden, in2_w, in2_b)
    codes = torch.empty(n, depth, dtype=torch.int64, device=hidden.device)
    embeds = []
    for d in range(depth):
        h = (x + pos[:, d]).unsqueeze(1)  # [N, 1, E]
        for layer in range(n_layer):
            w = blocks[layer * WEIGHTS_PER_BLOCK : (layer + 1) * WEIGHTS_PER_BLOCK]
            ln1_w, ln1_b, q_w, q_b, k_w, k_b, v_w, v_b = w[:8]
            p_w, p_b, ln2_w, ln2_b, f1_w, f1_b, f2_w, f2_b = w[8:]  # fmt: skip
            a = F.layer_norm(h, (E,), ln1_w, ln1_b)
            q = linear(a, q_w, q_b).view(N, 1, n_head, hd).transpose(1, 2)
            k = linear(a, k_w, k_b).view(N, 1, n_head, hd).transpose(1, 2)
            v = linear(a, v_w, v_b).view(N, 1, n_head, hd).transpose(1, 2)
            kc, vc = kv[layer]
            kc[:, :, d : d + 1] = k
            vc[:, :, d : d + 1] = v
            # one query over depths 0..d: the causal mask is all true (as in depth.py)
            att = torch.matmul(q, kc[:, :, : d + 1].transpose(-2, -1) * scale)  # [N, nh, 1, d+1]
            y = torch.matmul(F.softmax(att, dim=-1), vc[:, :, : d + 1])
            h = h + linear(y.transpose(1, 2).reshape(N, 1, E), p_w, p_b)
            m = F.gelu(linear(F.layer_norm(h, (E,), ln2_w, ln2_b), f1_w, f1_b))
            h = h + linear(m, f2_w, f2_b)
        logits = linear(F.layer_norm(h[:, 0], (E,), cls_ln_w, cls_ln_b), cls_w, cls_b)
        if on_logits is not None:
            on_logits(d, logits)
        if sample is None:
            codes[:, d] = torch.ops.vilau.sample_codes(
                logits, True, cfg_scale, temperature, top_k, top_p, rng, d
            )
        else:
            codes[:, d] = sample(guided_logits(logits, cfg_scale))
        embeds.append(F.embedding(codes[:, d], codebooks[d if codebooks.shape[0] > 1 else 0]))
        # the running sum as depth.py forms it (cumsum in the model dtype)
        running = torch.stack(embeds, dim=1).cumsum(dim=1)[:, -1]
        if d + 1 < depth:
            x = linear(running, in1_w, in1_b).repeat(2, 1)
    return codes, running


def depth_decode(
    hidden: Tensor,
    weights: list[Tensor],
    codebooks: Tensor,
    n_head: int,
    cfg_scale: float,
    temperature: float = 1.0,
    top_k: int | None = 900,
    top_p: float | None = 0.96,
    seed: int = 0,
    counter: int = 0,
) -> Tensor:
    """Codes [n, D] of one image position from LLM hidden states [2n, H] (see the table above)."""
    rng = rng_state(seed, counter, hidden.device)
    top_k, top_p = int(top_k or 0), float(1.0 if top_p is None else top_p)
    return depth_loop(
        hidden, weights, codebooks, n_head, float(cfg_scale), float(temperature), top_k, top_p, rng
    )[0]
