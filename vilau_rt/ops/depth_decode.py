"""``vilau::depth_decode``: the whole depth loop of one image position as one op.

| input / attribute | shape / type      | notes                                                        |
|-------------------|-------------------|--------------------------------------------------------------|
| hidden            | [2n, H] float     | final LLM hidden states, rows [conditional..., unconditional...] |
| weights           | [P] float         | the depth transformer's tensors packed by ``pack_depth_weights`` |
| codebooks         | [Dc, R, C] float  | RVQ codebooks (Dc = D, or 1 when shared), R = n_embed + 1    |
| cfg_scale         | [] float32        | classifier-free guidance: ``l_u + cfg * (l_c - l_u)``        |
| temperature       | [] float32        | > 0                                                          |
| top_k             | [] int64          | 0 = no top-k filter; 1 = greedy (argmax, no random draw)      |
| top_p             | [] float32        | 1.0 = no nucleus filter                                      |
| seed              | [] int64          | seeds the counter-based generator (one uniform per row and depth) |
| forced_codes      | [n, D] int64      | -1 = sample this code; >= 0 = use it (teacher forcing)       |
| n_layer, n_head, embed_dim, depth | int | the depth transformer's shape (attributes in ONNX)      |
| -> codes          | [n, D] int64      | shared by both halves                                        |
| -> logits         | [D, 2n, V] float32| raw per-depth logits before CFG (for traces and parity checks) |

The computation is ``DepthTransformer.generate`` itself (KV-cached over depths, CFG at every
depth), run on a module whose parameters are views into ``weights``, so the op and the torch
reference cannot drift apart. Only the random draw differs from ``sample_codes``: a graph op
cannot carry a ``torch.Generator``, so a draw is ``u = hash(seed, depth, row)`` (splitmix64, a
counter-based generator any backend can reproduce) mapped through the filtered CDF. Greedy
(top_k = 1) takes the argmax and is identical to ``sample_codes``.

Same name in PyTorch (``torch.ops.vilau.depth_decode``), ONNX (``vilau::DepthDecode``) and
ONNX Runtime (``vilau_rt.ops.onnxruntime``).
"""

from __future__ import annotations

import functools
from dataclasses import astuple, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..model.depth import DepthTransformer, DepthTransformerConfig
from ..sampling import check_sampling, sample_codes

_MASK64 = (1 << 64) - 1


@dataclass
class CodeSampler:
    """The depth sampler as settings, so that a graph backend can sample inside its graph.

    Calling it is ``sample_codes`` (what the torch backend runs); a graph backend reads the fields
    and draws a per-position seed from ``generator``.
    """

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    generator: torch.Generator | None = None

    def __post_init__(self):
        check_sampling(self.temperature, self.top_k, self.top_p)

    def __call__(self, logits: Tensor) -> Tensor:
        return sample_codes(logits, self.temperature, self.top_k, self.top_p, self.generator)

    def next_seed(self) -> int:
        """A 62-bit seed drawn from ``generator`` (torch's default generator when None)."""
        return int(torch.randint(0, 1 << 62, (1,), generator=self.generator))


# ---------------------------------------------------------------------------- weight packing


def depth_weight_layout(cfg: DepthTransformerConfig) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every depth-transformer tensor, in packing order (state_dict order)."""
    return _layout(astuple(cfg))


@functools.cache  # the op asks at every call; building the meta module costs milliseconds
def _layout(fields: tuple) -> list[tuple[str, tuple[int, ...]]]:
    with torch.device("meta"):
        module = DepthTransformer(DepthTransformerConfig(*fields))
    return [(name, tuple(t.shape)) for name, t in module.state_dict().items()]


def pack_depth_weights(module: DepthTransformer) -> Tensor:
    """All tensors of ``module`` flattened into one [P] tensor (the op's ``weights`` input)."""
    return torch.cat([t.detach().reshape(-1) for t in module.state_dict().values()])


def unpack_depth_weights(weights: Tensor, cfg: DepthTransformerConfig) -> DepthTransformer:
    """A DepthTransformer whose parameters are views into ``weights`` (no copy)."""
    layout = depth_weight_layout(cfg)
    total = sum(_numel(shape) for _, shape in layout)
    if weights.dim() != 1 or weights.numel() != total:
        raise ValueError(
            f"depth_decode: weights must be the packed [P = {total}] tensor of this depth "
            f"transformer shape {cfg}, got {tuple(weights.shape)} (re-export the bundle)"
        )
    state, offset = {}, 0
    for name, shape in layout:
        n = _numel(shape)
        state[name] = weights[offset : offset + n].view(shape)
        offset += n
    with torch.device("meta"):
        module = DepthTransformer(cfg)
    module.load_state_dict(state, strict=True, assign=True)
    return module.eval()


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


# ---------------------------------------------------------------------------- sampling


def counter_uniform(seed: int, depth: int, n: int) -> Tensor:
    """n uniforms in [0, 1) (float64) for one depth: splitmix64 of (seed, depth, row)."""
    out = []
    for row in range(n):
        x = (seed * 0x9E3779B97F4A7C15 + (depth * n + row + 1) * 0xBF58476D1CE4E5B9) & _MASK64
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
        x ^= x >> 31
        out.append((x >> 11) * (1.0 / (1 << 53)))
    return torch.tensor(out, dtype=torch.float64)


def filtered_probs(logits: Tensor, temperature: float, top_k: int, top_p: float) -> Tensor:
    """``sample_codes``'s distribution before its draw (top_k 0 = off, top_p 1.0 = off)."""
    logits = logits.float() / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
        remove = sorted_probs.cumsum(dim=-1) >= top_p
        remove[..., 1:] = remove[..., :-1].clone()  # keep the token that crosses top_p
        remove[..., 0] = False
        probs = probs.masked_fill(remove.scatter(-1, order, remove), 0.0)
    return probs


def draw(probs: Tensor, u: Tensor) -> Tensor:
    """Inverse-CDF draw: the first index whose cumulative mass exceeds u * total."""
    cdf = probs.double().cumsum(dim=-1)
    target = (u * cdf[:, -1]).unsqueeze(1)
    idx = torch.searchsorted(cdf, target, right=True).view(-1)
    # u * total can round onto the last plateau; fall back to the last code with mass
    last = (probs > 0).cumsum(dim=-1).argmax(dim=-1)
    return torch.minimum(idx, last)


# ---------------------------------------------------------------------------- the op


def _check_inputs(hidden, weights, codebooks, forced_codes, depth):
    op = "depth_decode"
    if hidden.dim() != 2 or hidden.shape[0] % 2:
        raise ValueError(
            f"{op}: hidden must be [2n, H] rows [cond..., uncond...], got {tuple(hidden.shape)}"
        )
    if weights.dtype != hidden.dtype or codebooks.dtype != hidden.dtype:
        raise TypeError(
            f"{op}: hidden ({hidden.dtype}), weights ({weights.dtype}) and codebooks "
            f"({codebooks.dtype}) must share a dtype"
        )
    n = hidden.shape[0] // 2
    if forced_codes.dtype != torch.int64 or tuple(forced_codes.shape) != (n, depth):
        raise ValueError(
            f"{op}: forced_codes must be int64 [n, D] = [{n}, {depth}], "
            f"got {forced_codes.dtype} {tuple(forced_codes.shape)}"
        )
    if codebooks.dim() != 3 or codebooks.shape[0] not in (1, depth):
        raise ValueError(
            f"{op}: codebooks must be [D or 1, n_embed + 1, C], got {tuple(codebooks.shape)}"
        )


@torch.library.custom_op("vilau::depth_decode", mutates_args=(), device_types=("cpu", "cuda"))
def _depth_decode_op(
    hidden: Tensor,
    weights: Tensor,
    codebooks: Tensor,
    cfg_scale: Tensor,
    temperature: Tensor,
    top_k: Tensor,
    top_p: Tensor,
    seed: Tensor,
    forced_codes: Tensor,
    n_layer: int,
    n_head: int,
    embed_dim: int,
    depth: int,
) -> tuple[Tensor, Tensor]:
    _check_inputs(hidden, weights, codebooks, forced_codes, depth)
    n_embed = codebooks.shape[1] - 1
    cfg = DepthTransformerConfig(
        embed_dim=embed_dim,
        n_layer=n_layer,
        n_head=n_head,
        vocab_size=n_embed,
        depth=depth,
        code_dim=codebooks.shape[2],
        llm_dim=hidden.shape[1],
    )
    module = unpack_depth_weights(weights, cfg)
    scale, temp, k, p = float(cfg_scale), float(temperature), int(top_k), float(top_p)
    check_sampling(temp, k if k > 0 else None, p)
    seed_value = int(seed) & _MASK64
    n = hidden.shape[0] // 2
    forced = forced_codes.to(hidden.device)
    if forced.numel() and int(forced.max()) >= n_embed:
        raise ValueError(f"depth_decode: forced_codes must be < n_embed = {n_embed} (or -1)")
    raw_logits: list[Tensor] = []

    def on_logits(d: int, logits: Tensor) -> None:
        raw_logits.append(logits.float())

    def sample(guided: Tensor) -> Tensor:
        d = len(raw_logits) - 1  # on_logits runs just before sample at every depth
        if k == 1:
            chosen = guided.float().argmax(dim=-1)  # as sample_codes: no draw for greedy
        else:
            probs = filtered_probs(guided, temp, k, p)
            chosen = draw(probs, counter_uniform(seed_value, d, n).to(probs.device))
        return torch.where(forced[:, d] >= 0, forced[:, d], chosen)

    def code_embedding(d: int, codes: Tensor) -> Tensor:
        return F.embedding(codes, codebooks[0 if codebooks.shape[0] == 1 else d])

    with torch.no_grad():
        codes, _ = module.generate(hidden, code_embedding, scale, sample, on_logits)
    return codes, torch.stack(raw_logits)


@_depth_decode_op.register_fake
def _(
    hidden, weights, codebooks, cfg_scale, temperature, top_k, top_p, seed, forced_codes,
    n_layer, n_head, embed_dim, depth,
):  # fmt: skip
    _check_inputs(hidden, weights, codebooks, forced_codes, depth)
    n = hidden.shape[0] // 2
    codes = hidden.new_empty((n, depth), dtype=torch.int64)
    logits = hidden.new_empty((depth, hidden.shape[0], codebooks.shape[1] - 1), dtype=torch.float32)
    return codes, logits


def depth_decode(
    hidden: Tensor,
    weights: Tensor,
    codebooks: Tensor,
    cfg: DepthTransformerConfig,
    *,
    cfg_scale: float,
    sampler: CodeSampler,
    seed: int,
    forced_codes: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """codes [n, D] and raw logits [D, 2n, V] of one position (see the table above)."""
    n = hidden.shape[0] // 2
    if forced_codes is None:
        forced_codes = torch.full((n, cfg.depth), -1, dtype=torch.int64, device=hidden.device)
    return torch.ops.vilau.depth_decode(
        hidden,
        weights,
        codebooks,
        torch.tensor(cfg_scale, dtype=torch.float32),
        torch.tensor(sampler.temperature, dtype=torch.float32),
        torch.tensor(sampler.top_k or 0, dtype=torch.int64),
        torch.tensor(1.0 if sampler.top_p is None else sampler.top_p, dtype=torch.float32),
        torch.tensor(seed, dtype=torch.int64),
        forced_codes,
        cfg.n_layer,
        cfg.n_head,
        cfg.embed_dim,
        cfg.depth,
    )
