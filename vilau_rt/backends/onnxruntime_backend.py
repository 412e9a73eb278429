"""The ONNX Runtime backend: the graphs of an engine bundle (``vilau_rt.model.bundle``), run by
``onnxruntime`` with the ``vilau`` ops of ``vilau_rt.ops.onnxruntime``.

Same calls, shapes and semantics as ``TorchBackend``; tensors in and out are torch CPU tensors.

Bundles exported with ``--target tensorrt`` run here too: their KV-cache writes are
``ScatterElements`` (opset 20) instead of ``TensorScatter``, same inputs and outputs and the
same binding of past and present to one buffer (tests/export/test_tensorrt_export.py checks the
buffer holds the writes); their ``W4A16Gemm`` nodes are rewritten to float32 at load
(``float_w4a16_gemm``).

KV cache: ``setup_cache`` allocates one numpy buffer per layer and per K/V, [B, n_kv, S, hd],
wraps each in an OrtValue (no copy) and binds it, through IO binding, both as the ``past_*``
input and as the ``present_*`` output of the two LLM graphs. The graphs write the new slots with
``TensorScatter``, which ONNX Runtime then runs in place: no cache copy and no allocation per step.

Providers: ``CPUExecutionProvider``, or ``CUDAExecutionProvider`` first where onnxruntime-gpu is
installed. The CUDA path is untested (onnxruntime-gpu cannot be installed on the development
machines), the KV buffers stay in host memory, and the ``vilau`` Python ops always run on the CPU.

Depth decoding: given a ``CodeSampler`` (settings, no code), ``depth_generate`` is one run of
``depth_decode.onnx`` (CFG and sampling inside the ``vilau::DepthDecode`` node). Given any other
``sample`` callable it keeps the interface's meaning (the callable picks every code): it runs the
graph once per depth with the codes chosen so far forced, reads that depth's logits and calls
``sample``, then once more for the next embeddings; ``stats["depth_path"]`` records which ran.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..errors import BackendError, CheckpointError, CheckpointNotFoundError
from ..model import bundle
from ..model.config import read_config
from ..model.depth import guided_logits
from ..ops.depth_decode import CodeSampler
from ..ops.onnxruntime import _import_extensions, float_w4a16_gemm, session_options
from .base import Backend, check_cache_length, check_step

log = logging.getLogger(__name__)

_DTYPES = {"fp32": (torch.float32, np.float32), "fp16": (torch.float16, np.float16)}
DEFAULT_CACHE = Path(os.environ.get("VILAU_RT_CACHE", Path.home() / ".cache" / "vilau_rt"))


def default_providers() -> list[str]:
    ort, _ = _import_extensions()
    if "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(
        self,
        bundle_dir: str | Path,
        *,
        providers: list[str] | None = None,
        threads: int | None = None,
        verify_hashes: bool = True,
    ):
        self.root = Path(bundle_dir)
        self.manifest = bundle.read_manifest(self.root, verify_hashes=verify_hashes)
        self.cfg = bundle.config_from_dict(
            self.manifest["config"], where=str(self.root / bundle.MANIFEST)
        )
        precision = self.manifest["precision"]
        if precision not in _DTYPES:
            raise BackendError(f"{self.root}: precision {precision!r} is not known to this runtime")
        self.dtype, self._np_dtype = _DTYPES[precision]
        self.device = torch.device("cpu")
        self.providers = providers or default_providers()
        self._threads = threads
        self._options = session_options(threads)
        self._sessions: dict = {}
        self._embed = np.load(self.root / bundle.EMBED_TOKENS, mmap_mode="r")
        self._cache: _KVCache | None = None
        self.stats: dict = {}

    def _session(self, graph: str):
        if graph not in self._sessions:
            ort, _ = _import_extensions()
            path = self.root / self.manifest["graphs"][graph]["file"]
            model, options = str(path), self._options
            if self.manifest.get("target") == "tensorrt":
                model, options = self._float_w4a16(path)
            self._sessions[graph] = ort.InferenceSession(model, options, providers=self.providers)
        return self._sessions[graph]

    def _float_w4a16(self, path: Path):
        """A tensorrt-target graph as ONNX Runtime runs it: its W4A16Gemm nodes (float16 scales,
        for the TensorRT plugin) rewritten to float32 by ``float_w4a16_gemm``. The rewritten
        graph goes to ONNX Runtime as bytes; its external data is still read from the bundle."""
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
        if not float_w4a16_gemm(proto.graph, self._np_dtype):
            return str(path), self._options
        options = session_options(self._threads)
        options.add_session_config_entry(
            "session.model_external_initializers_file_folder_path", str(self.root)
        )
        return proto.SerializeToString(), options

    # -- images ---------------------------------------------------------------------------
    def encode_images(self, pixel_values):
        S = self.cfg.image_size
        if pixel_values.dim() != 4 or tuple(pixel_values.shape[1:]) != (3, S, S):
            raise ValueError(
                f"pixel_values must be [B, 3, {S}, {S}], got {tuple(pixel_values.shape)}"
            )
        px = pixel_values.detach().float().cpu().numpy()
        codes, embeds = self._session("vision").run(None, {"pixel_values": px})
        return torch.from_numpy(codes), torch.from_numpy(embeds)

    def decode_codes(self, codes):
        h, w = self.cfg.grid
        D, n_embed = self.cfg.rvq.depth, self.cfg.rvq.n_embed
        if codes.dim() != 4 or tuple(codes.shape[1:]) != (h, w, D):
            raise ValueError(f"codes must be [B, {h}, {w}, {D}], got {tuple(codes.shape)}")
        _check_range("codes", codes, n_embed)
        (pixels,) = self._session("pixel_decoder").run(None, {"codes": _np(codes, np.int64)})
        return torch.from_numpy(pixels)

    # -- LLM ------------------------------------------------------------------------------
    def embed_tokens(self, ids):
        _check_range("token ids", ids, self.cfg.llm.vocab_size)
        return torch.from_numpy(np.take(self._embed, _np(ids, np.int64), axis=0))

    def setup_cache(self, batch, length):
        check_cache_length(self.cfg, length)
        c = self._cache
        if c is not None and c.batch == batch and length <= c.length:
            return
        self._cache = _KVCache(self, batch, length)

    def forward(self, embeds, rope_pos, cache_pos, key_valid=None):
        B, T, _ = embeds.shape
        cache = self._cache
        if cache is None:
            if cache_pos:
                raise RuntimeError("cache_pos > 0 needs a KV cache: call setup_cache() first")
            cache = _KVCache(self, B, T)  # a one-off cache, as the torch model runs uncached
        check_step(self.cfg, cache.batch, cache.length, embeds, rope_pos, cache_pos)
        valid = np.ones((B, cache.length), dtype=bool)
        if key_valid is not None:
            kv = _np(key_valid, bool)[:, : cache.length]
            valid[:, : kv.shape[1]] = kv
        return torch.from_numpy(
            cache.run(T, _np(embeds, self._np_dtype), rope_pos, cache_pos, valid)
        )

    def logits(self, hidden):
        (out,) = self._session("lm_head").run(None, {"hidden": _np(hidden, self._np_dtype)})
        return torch.from_numpy(out)

    # -- depth transformer ----------------------------------------------------------------
    def depth_generate(self, hidden, cfg_scale, sample, on_logits=None):
        N = hidden.shape[0]
        if N % 2:
            raise ValueError(f"CFG needs [cond, uncond] rows, got an odd batch of {N}")
        n, D = N // 2, self.cfg.rvq.depth
        forced = np.full((n, D), -1, dtype=np.int64)
        if isinstance(sample, CodeSampler):
            self.stats["depth_path"] = "fused"
            codes, nxt, logits = self._depth(hidden, cfg_scale, sample, sample.next_seed(), forced)
            if on_logits is not None:
                for d in range(D):
                    on_logits(d, torch.from_numpy(logits[d]))
            return torch.from_numpy(codes), torch.from_numpy(nxt)
        # An opaque sampler: the graph cannot call it, so force the codes it picks one depth at
        # a time (D + 1 runs instead of 1; pass a CodeSampler for the one-run path).
        self.stats["depth_path"] = "per-depth"
        greedy = CodeSampler(top_k=1)  # the graph's own draws are overridden; skip the RNG
        for d in range(D):
            _, _, logits = self._depth(hidden, cfg_scale, greedy, 0, forced)
            lg = torch.from_numpy(logits[d])
            if on_logits is not None:
                on_logits(d, lg)
            forced[:, d] = sample(guided_logits(lg, cfg_scale)).numpy()
        codes, nxt, _ = self._depth(hidden, cfg_scale, greedy, 0, forced)
        return torch.from_numpy(codes), torch.from_numpy(nxt)

    def _depth(self, hidden, cfg_scale, sampler: CodeSampler, seed: int, forced: np.ndarray):
        f32, i64 = np.float32, np.int64
        feeds = {
            "hidden": _np(hidden, self._np_dtype),
            "cfg_scale": np.array(cfg_scale, f32),
            "temperature": np.array(sampler.temperature, f32),
            "top_k": np.array(sampler.top_k or 0, i64),
            "top_p": np.array(1.0 if sampler.top_p is None else sampler.top_p, f32),
            "seed": np.array(seed, i64),
            "forced_codes": forced,
        }
        return self._session("depth_decode").run(None, feeds)


class _KVCache:
    """Static KV buffers bound as both past and present of the LLM graphs (see module doc)."""

    def __init__(self, backend: OnnxRuntimeBackend, batch: int, length: int):
        ort, _ = _import_extensions()
        lc = backend.cfg.llm
        self.batch, self.length = batch, length
        self.backend = backend
        shape = (batch, lc.num_key_value_heads, length, lc.head_dim)
        self.buffers = {}
        for i in range(lc.num_hidden_layers):
            for part in ("key", "value"):
                self.buffers[f"{part}_{i}"] = np.zeros(shape, dtype=backend._np_dtype)
        self.values = {k: ort.OrtValue.ortvalue_from_numpy(v) for k, v in self.buffers.items()}
        self.bindings = {}
        for graph in ("llm_prefill", "llm_decode"):
            io = backend._session(graph).io_binding()
            for k, v in self.values.items():
                io.bind_ortvalue_input(f"past_{k}", v)
                io.bind_ortvalue_output(f"present_{k}", v)
            self.bindings[graph] = io

    def run(self, T, embeds, rope_pos, cache_pos, key_valid) -> np.ndarray:
        graph = "llm_decode" if T == 1 else "llm_prefill"
        io = self.bindings[graph]
        io.bind_cpu_input("inputs_embeds", np.ascontiguousarray(embeds))
        io.bind_cpu_input("rope_pos", _np(rope_pos, np.int64))
        io.bind_cpu_input("write_index", np.full(self.batch, cache_pos, dtype=np.int64))
        io.bind_cpu_input("key_valid", key_valid)
        # The output is bound anew at every call with this call's shape: a binding left to
        # ONNX Runtime keeps the shape of the first run, so the next prefill of another length
        # would fail.
        hidden = np.empty((self.batch, T, self.backend.cfg.llm.hidden_size), self.backend._np_dtype)
        io.bind_output(
            "hidden", "cpu", element_type=hidden.dtype, shape=hidden.shape,
            buffer_ptr=hidden.ctypes.data,
        )  # fmt: skip
        self.backend._session(graph).run_with_iobinding(io)
        return hidden


def _np(t, dtype) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        t = t.detach().cpu().numpy()
    return np.ascontiguousarray(t, dtype=dtype)


def _check_range(what: str, t: torch.Tensor, upper: int) -> None:
    if t.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{what} must be int64, got {t.dtype}")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= upper):
        raise ValueError(
            f"{what} must lie in [0, {upper}); got range [{int(t.min())}, {int(t.max())}]"
        )


# ---------------------------------------------------------------------------- export on first use


def load_bundle_or_export(
    path: str | Path,
    cache_dir: str | Path | None = None,
    *,
    precision: str = "fp32",
    quant: str = "none",
    siglip_config=None,
    **backend_kwargs,
) -> OnnxRuntimeBackend:
    """An ``OnnxRuntimeBackend`` for a bundle folder, or for a checkpoint folder exported on
    first use into ``cache_dir`` (default ``$VILAU_RT_CACHE`` or ``~/.cache/vilau_rt``).

    The cache entry is keyed by the model config, a fingerprint of the checkpoint's files (names,
    sizes, modification times), the export options and the library versions, so a changed
    checkpoint or an upgraded exporter gets a fresh bundle.
    """
    p = Path(path)
    if (p / bundle.MANIFEST).is_file():
        return OnnxRuntimeBackend(p, **backend_kwargs)
    cfg = read_config(p, siglip_config)  # raises the checkpoint errors for a bad path
    target = Path(cache_dir or DEFAULT_CACHE) / "bundles" / _cache_key(p, cfg, precision, quant)
    if (target / bundle.MANIFEST).is_file():
        try:
            return OnnxRuntimeBackend(target, **backend_kwargs)
        except (CheckpointError, CheckpointNotFoundError) as e:  # damaged: export it again
            log.warning("cached bundle %s is damaged (%s); exporting it again", target, e)
            shutil.rmtree(target)
    if not (target / bundle.MANIFEST).is_file():
        try:
            from vilau_export.onnx.export import export_bundle
        except ImportError as e:
            raise BackendError(
                f"{p} is a checkpoint, and exporting it needs vilau_export with onnx and "
                f"onnxscript ({e}); install pip install 'vilau-rt[onnx]' or pass a bundle"
            ) from e
        target.parent.mkdir(parents=True, exist_ok=True)
        log.info("exporting %s to %s (first use)", p, target)
        try:
            export_bundle(p, target, precision=precision, quant=quant, siglip_config=siglip_config)
        except FileExistsError:
            if not (target / bundle.MANIFEST).is_file():  # another process won the race
                raise
    return OnnxRuntimeBackend(target, **backend_kwargs)


def _cache_key(ckpt: Path, cfg, precision: str, quant: str) -> str:
    import onnx  # the exporter's version shapes the graphs

    ort, _ = _import_extensions()
    files = sorted(
        (f.relative_to(ckpt).as_posix(), f.stat().st_size, f.stat().st_mtime_ns)
        for f in ckpt.rglob("*")
        if f.is_file()
    )
    key = {
        "config": bundle.config_hash(cfg),
        "files": files,
        "precision": precision,
        "quant": quant,
        "format": bundle.FORMAT_VERSION,
        "versions": [__version__, torch.__version__, onnx.__version__, ort.__version__],
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return f"{ckpt.resolve().name}-{precision}-{quant}-{digest}"
