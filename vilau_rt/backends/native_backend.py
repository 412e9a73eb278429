"""The native backend: the model's weights, our csrc kernels, a static KV cache and CUDA graphs.

| piece          | CPU                                    | CUDA                            |
|----------------|----------------------------------------|---------------------------------|
| vision tower   | torch modules                          | torch modules                   |
| RVQ encode/sum | ``vilau::rvq_encode`` / ``rvq_lookup`` | the same ops, CUDA kernels      |
| LLM            | static-shape forward over the cache    | same; T=1 step: a graph / batch |
| LLM linears    | torch, or ``W4A16Linear``              | same (W4A16 GEMV kernel)        |
| depth position | ``native.depth_loop``, C++ sampler | same + projector, one graph     |

The KV cache is allocated once per (batch, length) request that does not fit the current one and
written in place; the LLM step attends over the whole cache with a mask computed on the device
from a device-side position, so its shapes never change and it can be replayed as a graph.

Sampling: ``depth_generate`` runs the device sampler (``vilau::sample_codes``, Philox, reproducible
per seed) when ``sample`` is ``functools.partial(vilau_rt.sampling.sample_codes, ...)``, a
``vilau_rt.ops.depth_decode.CodeSampler`` or a ``CodeSampling``; the seed is the generator's
``initial_seed()`` (else ``torch.initial_seed()``) and the counter is the image position since
the last ``setup_cache``. Any other callable cannot run on the device: the depth loop then runs
eagerly and calls it, with a warning and ``stats["depth_path"]`` saying so.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import BackendError
from ..model.llama import RotaryEmbedding, rotate_half
from ..model.vilau import VilaU
from ..ops import kernels, native
from ..ops.depth_decode import CodeSampler
from ..sampling import check_sampling, sample_codes
from .base import Backend

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CodeSampling:
    """Depth-sampler settings the device can run (RQ-Transformer semantics)."""

    temperature: float = 1.0
    top_k: int | None = 900
    top_p: float | None = 0.96
    seed: int | None = None


def _device_sampling(sample) -> CodeSampling | None:
    if isinstance(sample, CodeSampling):
        return sample
    if isinstance(sample, CodeSampler):
        gen = sample.generator
        seed = None if gen is None else int(gen.initial_seed())
        return CodeSampling(sample.temperature, sample.top_k, sample.top_p, seed)
    if isinstance(sample, functools.partial) and sample.func is sample_codes and not sample.args:
        kw = dict(sample.keywords)
        gen = kw.pop("generator", None)
        if set(kw) - {"temperature", "top_k", "top_p"}:
            return None
        return CodeSampling(
            float(kw.get("temperature", 1.0)),
            kw.get("top_k"),
            kw.get("top_p"),
            None if gen is None else int(gen.initial_seed()),
        )
    return None


class NativeBackend(Backend):
    name = "native"

    def __init__(self, model: VilaU, *, use_graphs: bool | None = None):
        self.model = model
        self.cfg = model.cfg
        self.use_graphs = self.device.type == "cuda" if use_graphs is None else use_graphs
        if self.use_graphs and self.device.type != "cuda":
            raise BackendError(f"CUDA graphs need a CUDA model, this one is on {self.device}")
        self.stats: dict = {"depth_path": None, "llm_graphs": 0, "depth_graphs": 0}
        self._depth_weights = native.depth_weights(model.depth_transformer)
        self._codebooks = model.quantizer.stacked_codebooks().detach().contiguous()
        self._batch = self._len = 0
        self._k: list[torch.Tensor] = []
        self._v: list[torch.Tensor] = []
        self._pos = torch.zeros(1, dtype=torch.long, device=self.device)  # first slot written
        self._llm_graphs: dict = {}
        self._depth_graphs: dict = {}
        self._position = 0  # image positions decoded since setup_cache (the Philox counter)
        self._warned_opaque = False

    @classmethod
    def from_model(
        cls, model: VilaU, *, quantize_llm: bool = False, group_size: int = 128, **kw
    ) -> NativeBackend:
        """A backend over ``model`` (its modules are used in place). ``quantize_llm`` swaps the
        LLM's q/k/v/o/gate/up/down linears for ``W4A16Linear`` quantized by round-to-nearest
        (``vilau_rt.model.awq.quantize_tensor``, no activation-aware search: for a checkpoint that
        was AWQ-quantized offline, load it with ``vilau_rt.model.awq`` instead)."""
        if quantize_llm:
            quantize_llm_linears(model.llm, group_size)
        backend = cls(model, **kw)
        backend.stats["llm_weights"] = f"W4A16 RTN g{group_size}" if quantize_llm else "float"
        return backend

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    # ---------------------------------------------------------------- images <-> codes

    @torch.no_grad()
    def encode_images(self, pixel_values):
        m = self.model
        B = pixel_values.shape[0]
        h, w = self.cfg.grid
        feats = m.vision_tower(pixel_values.to(self.dtype)).view(B, h, w, -1)
        rvq = self.cfg.rvq
        codes, z_q = kernels.rvq_encode(feats, self._codebooks, rvq.n_embed, rvq.depth)
        return codes, m.mm_projector(z_q.flatten(1, 2))

    @torch.no_grad()
    def decode_codes(self, codes):
        return self.model.pixel_decoder(kernels.rvq_lookup(codes, self._codebooks))

    @torch.no_grad()
    def embed_tokens(self, ids):
        return self.model.llm.embed(ids)

    # ---------------------------------------------------------------- LLM

    def setup_cache(self, batch: int, length: int) -> None:
        llm_cfg = self.cfg.llm
        if length > llm_cfg.context_length:
            raise ValueError(
                f"KV cache length {length} exceeds the model context {llm_cfg.context_length}"
            )
        self._position = 0
        if batch == self._batch and length <= self._len:
            return
        if llm_cfg.rope_kind == "dynamic" and length > llm_cfg.max_position_embeddings:
            raise BackendError(
                f"dynamic RoPE scaling past {llm_cfg.max_position_embeddings} positions changes "
                "the tables with the sequence length; the native backend keeps them static"
            )
        shape = (batch, llm_cfg.num_key_value_heads, length, llm_cfg.head_dim)
        n = llm_cfg.num_hidden_layers
        self._k = self._v = []  # free the old cache first
        self._llm_graphs.clear()
        self._k = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in range(n)]
        self._v = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in range(n)]
        rotary = RotaryEmbedding(llm_cfg)
        rotary.build(max(length, llm_cfg.max_position_embeddings), self.device)
        self._cos, self._sin = rotary.cos, rotary.sin
        self._slots = torch.arange(length, device=self.device)
        self._valid = torch.ones(batch, length, dtype=torch.bool, device=self.device)
        self._batch, self._len = batch, length

    def _llm_step(self, x, rope_pos, slots, valid):
        """x [B, T, H] at cache slots ``slots`` [T] -> hidden [B, T, H]; attends over the whole
        cache with mask (slot <= query slot) & valid [B, L]. Mirrors llama.py op for op."""
        llm = self.model.llm
        cfg = self.cfg.llm
        B, T, _ = x.shape
        nh, nkv, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        mask = (self._slots[None, :] <= slots[:, None]).view(1, 1, T, -1) & valid[:, None, None]
        cos = self._cos[rope_pos].to(x.dtype).unsqueeze(1)
        sin = self._sin[rope_pos].to(x.dtype).unsqueeze(1)
        for layer, kc, vc in zip(llm.model.layers, self._k, self._v):
            attn = layer.self_attn
            a = layer.input_layernorm(x)
            q = attn.q_proj(a).view(B, T, nh, hd).transpose(1, 2)
            k = attn.k_proj(a).view(B, T, nkv, hd).transpose(1, 2)
            v = attn.v_proj(a).view(B, T, nkv, hd).transpose(1, 2)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            kc.index_copy_(2, slots, k)
            vc.index_copy_(2, slots, v)
            keys, values = kc, vc
            if nkv != nh:
                keys = keys.repeat_interleave(nh // nkv, dim=1)
                values = values.repeat_interleave(nh // nkv, dim=1)
            att = torch.matmul(q, keys.transpose(2, 3)) / math.sqrt(hd)  # [B, nh, T, L]
            att = att.masked_fill(~mask, torch.finfo(att.dtype).min)
            att = F.softmax(att, dim=-1, dtype=torch.float32).to(q.dtype)
            y = torch.matmul(att, values).transpose(1, 2).reshape(B, T, -1)
            x = x + attn.o_proj(y)
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return llm.model.norm(x)

    @torch.no_grad()
    def forward(self, embeds, rope_pos, cache_pos, key_valid=None):
        B, T, _ = embeds.shape
        if B != self._batch:
            raise ValueError(f"batch {B} does not match the KV cache batch {self._batch}")
        if cache_pos + T > self._len:
            raise ValueError(
                f"sequence of {cache_pos + T} tokens does not fit the KV cache of {self._len}"
            )
        if key_valid is None:
            self._valid.fill_(True)
        else:
            n = min(key_valid.shape[1], self._len)
            self._valid[:, :n].copy_(key_valid[:, :n])
            self._valid[:, n:].fill_(True)
        self._pos.fill_(cache_pos)
        if T != 1 or not self.use_graphs:
            slots = self._pos + torch.arange(T, device=self.device)
            return self._llm_step(embeds, rope_pos, slots, self._valid)
        graph = self._llm_graphs.get(B)
        if graph is None:
            graph = self._llm_graphs[B] = self._capture(
                lambda x, r: self._llm_step(x, r, self._pos, self._valid), embeds, rope_pos
            )
            self.stats["llm_graphs"] += 1
        return graph(embeds, rope_pos)

    @torch.no_grad()
    def logits(self, hidden):
        return self.model.llm.logits(hidden)

    # ---------------------------------------------------------------- depth transformer

    @torch.no_grad()
    def depth_generate(self, hidden, cfg_scale, sample, on_logits=None):
        sampling = _device_sampling(sample)
        if sampling is None:
            return self._depth_generate_opaque(hidden, cfg_scale, sample, on_logits)
        check_sampling(sampling.temperature, sampling.top_k, sampling.top_p)
        seed = torch.initial_seed() if sampling.seed is None else sampling.seed
        settings = (
            float(cfg_scale),
            float(sampling.temperature),
            int(sampling.top_k or 0),
            float(1.0 if sampling.top_p is None else sampling.top_p),
        )
        counter = self._position
        self._position += 1
        if on_logits is not None or not self.use_graphs:
            self.stats["depth_path"] = "device sampler, eager" + (
                " (on_logits)" if on_logits is not None else ""
            )
            rng = native.rng_state(seed, counter, self.device)
            return self._depth_position(hidden, settings, rng, on_logits)
        self.stats["depth_path"] = "device sampler, CUDA graph"
        key = (hidden.shape[0], settings)
        graph = self._depth_graphs.get(key)
        if graph is None:
            rng = native.rng_state(seed, counter, self.device)
            graph = self._depth_graphs[key] = self._capture(
                lambda h, r: self._depth_position(h, settings, r), hidden, rng
            )
            self.stats["depth_graphs"] += 1
        graph.inputs[1][0].fill_(seed)
        graph.inputs[1][1].fill_(counter)
        return graph(hidden, None)

    def _depth_position(self, hidden, settings, rng, on_logits=None):
        cfg_scale, temperature, top_k, top_p = settings
        codes, summed = native.depth_loop(
            hidden, self._depth_weights, self._codebooks, self.cfg.depth.n_head, cfg_scale,
            temperature, top_k, top_p, rng, on_logits,
        )  # fmt: skip
        return codes, self.model.mm_projector(summed)

    def _depth_generate_opaque(self, hidden, cfg_scale, sample, on_logits):
        if not self._warned_opaque:
            log.warning(
                "native depth_generate got a sampler it cannot run on the device (%r); the depth "
                "loop runs eagerly and calls it. Pass functools.partial(sample_codes, ...) or "
                "CodeSampling for the device sampler.",
                sample,
            )
            self._warned_opaque = True
        self.stats["depth_path"] = "opaque sampler, eager"
        rvq = self.model.quantizer

        def code_embedding(d, codes):
            return F.embedding(codes, rvq.codebook(d))

        codes, summed = self.model.depth_transformer.generate(
            hidden, code_embedding, cfg_scale, sample, on_logits
        )
        return codes, self.model.mm_projector(summed)

    # ---------------------------------------------------------------- CUDA graphs

    def _capture(self, fn, *example):
        """A CUDA graph of fn(*static inputs), after one eager warm-up run on them. Each graph
        has its own memory pool (the intermediates are small), so replay order is free."""
        static = [None if t is None else t.clone() for t in example]
        stream = torch.cuda.Stream(device=self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            fn(*static)  # warm-up: kernels loaded, workspaces sized (same inputs, same writes)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = fn(*static)
        return _Graph(graph, static, out)


@torch.no_grad()
def quantize_llm_linears(llm, group_size: int = 128) -> None:
    """Replace the LLM's quantizable linears by RTN-quantized ``W4A16Linear``, one at a time
    (each float weight is freed as soon as its replacement exists)."""
    try:
        from ..model.awq import AWQConfig, W4A16Linear, quantized_linear_names
    except ImportError as e:
        raise BackendError(f"quantize_llm needs vilau_rt.model.awq (W4A16Linear): {e!r}") from e
    for name in quantized_linear_names(llm, AWQConfig(group_size=group_size)):
        parent_name, child = name.rsplit(".", 1)
        parent = llm.get_submodule(parent_name)
        setattr(parent, child, W4A16Linear.from_linear(getattr(parent, child), group_size))


class _Graph:
    """A captured graph with its static inputs and outputs; calling copies inputs in (None:
    already in place), replays, and returns copies of the outputs."""

    def __init__(self, graph, inputs, outputs):
        self.graph, self.inputs, self.outputs = graph, inputs, outputs

    def __call__(self, *inputs):
        for static, new in zip(self.inputs, inputs):
            if new is not None:
                static.copy_(new)
        self.graph.replay()
        if isinstance(self.outputs, tuple):
            return tuple(t.clone() for t in self.outputs)
        return self.outputs.clone()
