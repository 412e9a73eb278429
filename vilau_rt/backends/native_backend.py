"""The native backend: the model's weights, our csrc kernels, a static KV cache and CUDA graphs.

| piece          | CPU                                    | CUDA                            |
|----------------|----------------------------------------|---------------------------------|
| vision tower   | torch modules                          | torch modules                   |
| RVQ encode/sum | ``vilau::rvq_encode`` / ``rvq_lookup`` | the same ops, CUDA kernels      |
| LLM            | static-shape forward over the cache;   | same; T=1 step: a graph / batch |
|                | T=1 step: one C++ call (cpu_decoder)   |                                 |
| LLM linears    | our GEMVs / GEMM (float32, 16-bit      | torch, W4A16 GEMV kernel        |
|                | weights as stored, packed W4A16)       |                                 |
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
import mmap
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import BackendError
from ..model.awq import W4A16Linear
from ..model.linear16 import Linear16
from ..model.llama import RotaryEmbedding, rotate_half
from ..model.vilau import VilaU
from ..ops import kernels, native, w4a8
from ..ops.depth_decode import CodeSampler
from ..sampling import check_sampling, sample_codes
from .base import Backend
from .cpu_decoder import CpuDecoder
from .native_linears import (
    _FusedLayer,
    _is_float_linear,
    _linear,
    _lm_head_16bit,
    _w4a8_layers,
    quantize_llm_linears,
)

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

    def __init__(
        self, model: VilaU, *, use_graphs: bool | None = None, int8_activations: bool = False
    ):
        """``int8_activations`` (opt-in, CPU, INT4 LLMs): the LLM's W4A16 layers run on
        activations rounded to int8 (W4A8, csrc/w4a8/w4a8.h), in prefill and decode, and the
        lm_head's decode rows on an int8 copy of it (W8A8), as llama.cpp's Q4_0 does: faster, and
        an approximation of the W4A16 model."""
        self.model = model
        self.cfg = model.cfg
        self.use_graphs = self.device.type == "cuda" if use_graphs is None else use_graphs
        if self.use_graphs and self.device.type != "cuda":
            raise BackendError(f"CUDA graphs need a CUDA model, this one is on {self.device}")
        self.stats: dict = {"depth_path": None, "llm_graphs": 0, "depth_graphs": 0}
        self.int8_activations = int8_activations
        self._w4a8 = _w4a8_layers(model.llm, self.device) if int8_activations else {}
        if int8_activations:  # each layer reads its W4A8 copy; no fused W4A16 copies besides
            self._fused = [_FusedLayer(None, None) for _ in model.llm.model.layers]
        else:
            self._fused = [_FusedLayer.of(layer) for layer in model.llm.model.layers]
        self._decoder, why = None, "CUDA graphs" if self.use_graphs else ""
        if not self.use_graphs:
            self._decoder, why = CpuDecoder.of(model.llm, self._fused, self._w4a8)
        self.stats["decode_step"] = "C++ LlamaDecoder" if self._decoder else f"torch ops ({why})"
        head = model.llm.lm_head
        self._lm_head16 = None if int8_activations else _lm_head_16bit(head)
        if self._lm_head16 is not None:
            self.stats["lm_head"] = f"{self._lm_head16.dtype} copy (exact) for decode"
        self._lm_head8 = None  # int8_activations: W8A8 (int8 per row, as llama.cpp quantizes it)
        if int8_activations and _is_float_linear(head) and head.in_features % 32 == 0:
            self._lm_head8 = w4a8.W8A8Weights.from_float(head.weight, head.bias)
            self.stats["lm_head"] = "int8 per row, int8 activations (W8A8, approximate) for decode"
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
    ) -> NativeBackend:  # kw: __init__'s (use_graphs, int8_activations)
        """A backend over ``model`` (its modules are used in place). ``quantize_llm`` swaps the
        LLM's q/k/v/o/gate/up/down linears for ``W4A16Linear`` quantized by round-to-nearest
        (``vilau_rt.model.awq_format.quantize_tensor``, no activation-aware search: for a
        checkpoint that was AWQ-quantized offline, load it with ``vilau_rt.model.awq``
        instead)."""
        if quantize_llm:
            quantize_llm_linears(model.llm, group_size)
        backend = cls(model, **kw)
        if quantize_llm:
            backend.stats["llm_weights"] = f"W4A16 RTN g{group_size}"
        else:  # as loaded: float, or an AWQ checkpoint's W4A16 layers
            int4 = next((m for m in model.llm.modules() if isinstance(m, W4A16Linear)), None)
            backend.stats["llm_weights"] = f"W4A16 g{int4.group_size}" if int4 else "float"
        kept = sorted({str(m.weight.dtype) for m in model.llm.modules() if type(m) is Linear16})
        if kept:  # loaded with keep_16bit
            backend.stats["llm_weights"] += f", {'/'.join(kept)} linears read in 16 bits (exact)"
        if backend.int8_activations:
            backend.stats["llm_weights"] += ", int8 activations (W4A8)"
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
        if self._decoder is not None:
            self._decoder.release_cache()
        self._llm_graphs.clear()
        self._k = [_zeros(shape, self.dtype, self.device) for _ in range(n)]
        self._v = [_zeros(shape, self.dtype, self.device) for _ in range(n)]
        if self._decoder is not None:
            self._decoder.set_cache(self._k, self._v)
        rotary = RotaryEmbedding(llm_cfg)
        rotary.build(max(length, llm_cfg.max_position_embeddings), self.device)
        self._cos, self._sin = rotary.cos, rotary.sin
        self._slots = torch.arange(length, device=self.device)
        self._valid = torch.ones(batch, length, dtype=torch.bool, device=self.device)
        self._batch, self._len = batch, length

    def _llm_step(self, x, rope_pos, slots, valid, end: int | None = None, masked: bool = True):
        """x [B, T, H] at cache slots ``slots`` [T] -> hidden [B, T, H]. Attends over cache slots
        [0, end) (graphs: the whole cache, ``end`` None) with mask (slot <= query slot) & valid
        [B, L]; ``masked=False`` (eager, T = 1, every slot valid) skips the all-true mask.
        Mirrors llama.py op for op, with q/k/v and gate/up as one matmul each (see _FusedLinear)."""
        llm = self.model.llm
        cfg = self.cfg.llm
        B, T, _ = x.shape
        nh, nkv, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        L = self._len if end is None else end
        mask = None
        if masked:
            mask = (self._slots[None, :L] <= slots[:, None]).view(1, 1, T, L)
            mask = mask & valid[:, None, None, :L]
        cos = self._cos[rope_pos].to(x.dtype).unsqueeze(1)
        sin = self._sin[rope_pos].to(x.dtype).unsqueeze(1)
        for layer, fused, kc, vc in zip(llm.model.layers, self._fused, self._k, self._v):
            attn = layer.self_attn
            a = layer.input_layernorm(x)
            if fused.qkv is not None:
                q, k, v = fused.qkv(a)
            else:
                q, k, v = (self._linear(m, a) for m in (attn.q_proj, attn.k_proj, attn.v_proj))
            q = q.view(B, T, nh, hd).transpose(1, 2)
            k = k.view(B, T, nkv, hd).transpose(1, 2)
            v = v.view(B, T, nkv, hd).transpose(1, 2)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            kc.index_copy_(2, slots, k)
            vc.index_copy_(2, slots, v)
            keys, values = kc[:, :, :L], vc[:, :, :L]
            if nkv != nh:
                keys = keys.repeat_interleave(nh // nkv, dim=1)
                values = values.repeat_interleave(nh // nkv, dim=1)
            att = torch.matmul(q, keys.transpose(2, 3)) / math.sqrt(hd)  # [B, nh, T, L]
            if mask is not None:
                att = att.masked_fill(~mask, torch.finfo(att.dtype).min)
            att = F.softmax(att, dim=-1, dtype=torch.float32).to(q.dtype)
            y = torch.matmul(att, values).transpose(1, 2).reshape(B, T, -1)
            x = x + self._linear(attn.o_proj, y)
            h = layer.post_attention_layernorm(x)
            mlp = layer.mlp
            if fused.gate_up is not None:
                gate, up = fused.gate_up(h)
            else:
                gate, up = self._linear(mlp.gate_proj, h), self._linear(mlp.up_proj, h)
            x = x + self._linear(mlp.down_proj, F.silu(gate) * up)
        return llm.model.norm(x)

    def _linear(self, module, x):
        """One LLM linear of the op-by-op step: its W4A8 copy (int8_activations; at every row
        count, prefill included: it beats dequantize + BLAS 2-6x up to 256 rows, bench/RESULTS.md),
        else ``_linear``."""
        w = self._w4a8.get(module)
        if w is not None and x.numel():
            return w4a8.linear(x.reshape(-1, x.shape[-1]), w).view(*x.shape[:-1], w.n)
        return _linear(module, x)

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
        if T == 1 and self._decoder is not None and B <= self._decoder.max_batch:
            cos = self._cos[rope_pos].view(B, -1)
            sin = self._sin[rope_pos].view(B, -1)
            return self._decoder.step(embeds, cos, sin, self._valid, cache_pos)
        if T != 1 or not self.use_graphs:  # eager: attend over the filled slots only
            slots = torch.arange(cache_pos, cache_pos + T, device=self.device)
            masked = T > 1 or key_valid is not None
            return self._llm_step(embeds, rope_pos, slots, self._valid, cache_pos + T, masked)
        graph = self._llm_graphs.get(B)
        if graph is None:
            graph = self._llm_graphs[B] = self._capture(
                lambda x, r: self._llm_step(x, r, self._pos, self._valid), embeds, rope_pos
            )
            self.stats["llm_graphs"] += 1
        return graph(embeds, rope_pos)

    @torch.no_grad()
    def logits(self, hidden):
        head = self.model.llm.lm_head
        rows = hidden.numel() // hidden.shape[-1]
        if self._lm_head8 is not None and 1 <= rows < kernels.W4A16_CPU_BLAS_MIN_M:
            h = hidden.reshape(rows, -1).float()
            return w4a8.linear8(h, self._lm_head8).view(*hidden.shape[:-1], -1)
        if self._lm_head16 is not None and native.gemv_rows(hidden, self._lm_head16):
            return native.linear(hidden, self._lm_head16, head.bias)
        return _linear(head, hidden).float()

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
        codes, summed = native.depth_loop(  # the device sampler's settings: unused
            hidden, self._depth_weights, self._codebooks, self.cfg.depth.n_head, cfg_scale,
            temperature=1.0, top_k=0, top_p=1.0, rng=None, on_logits=on_logits, sample=sample,
        )  # fmt: skip
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


def _zeros(shape: tuple, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``torch.zeros``; on the CPU from 1 MiB up, an anonymous memory map (zero by definition,
    and the OS's shared zero pages until written), so that a KV cache sized for the whole context
    costs memory only for the slots a request fills (a 7B cache of 4096 tokens is 4 GiB in
    float32). Not numpy's calloc: it asks for huge pages, and a layer's [B, heads, L, head_dim]
    tensor then commits 2 MiB per head at its first slot."""
    nbytes = math.prod(shape) * dtype.itemsize
    if device.type == "cpu" and nbytes >= 1 << 20 and hasattr(mmap, "MAP_PRIVATE"):
        # private: a process forked after loading (a pre-fork server) gets its own copy on write;
        # Python's default for an anonymous map is shared, and the processes would share a cache
        buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        if hasattr(mmap, "MADV_NOHUGEPAGE"):  # where transparent huge pages are "always", a
            buf.madvise(mmap.MADV_NOHUGEPAGE)  # 2 MiB page per head would commit it all again
        return torch.frombuffer(buf, dtype=dtype).view(shape)
    return torch.zeros(shape, dtype=dtype, device=device)


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
