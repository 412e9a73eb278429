"""The TensorRT backend: engines built from a ``--target tensorrt`` bundle, run on a CUDA GPU.

NEVER RUN WITH TENSORRT: written against TensorRT 10's public Python API, which cannot be
installed on the development machines; its TensorRT test skips without ``import tensorrt``. Its
own logic runs in the tests on a stand-in ``tensorrt`` module that executes each graph with ONNX
Runtime (tests/backends/fake_tensorrt.py), and the bundle it reads is checked (parser lint,
ONNX Runtime parity); TensorRT's parsing, building and enqueue are not.

| step            | how                                                                       |
|-----------------|---------------------------------------------------------------------------|
| plugins         | ``plugin_library()`` loaded into TensorRT's plugin registry               |
| engines         | one per graph, built with ``trt.Builder`` + ``OnnxParser`` and the        |
|                 | manifest's shape profile, cached under ``cache_dir/engines/<key>/`` where |
|                 | key = bundle sha256 + plugin library sha256 + TensorRT version + GPU      |
|                 | compute capability; or the plans build_engines.sh wrote (``engines/``)    |
| I/O             | static device buffers per engine, sized once for the profile's maximum    |
| KV cache        | device memory, two buffer sets used in turn as past / present (the graph  |
|                 | writes its new slots with ScatterElements, out of place: TensorRT does    |
|                 | not promise that an output may alias an input)                            |

Known costs (open): each LLM step copies the whole cache into the other set (ScatterElements
out of place), and the prefill and decode engines each hold a copy of the LLM weights.

Same calls, shapes and semantics as ``TorchBackend``; tensors come back on the GPU.
(``device="cpu"`` serves only the stand-in ``tensorrt`` module of the tests, which runs each
graph with ONNX Runtime to exercise this file's logic; TensorRT itself needs CUDA.)
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import BackendError
from ..model import bundle
from ..model.depth import guided_logits
from ..ops.depth_decode import CodeSampler
from .base import Backend, check_cache_length, check_step

log = logging.getLogger(__name__)

PLUGIN_LIBRARY = "libvilau_trt_plugins.so"
_PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16}
DEFAULT_CACHE = Path(os.environ.get("VILAU_RT_CACHE", Path.home() / ".cache" / "vilau_rt"))


def plugin_library() -> Path:
    """Path of libvilau_trt_plugins.so: the one pip built into the package, else
    ``$VILAU_RT_TRT_PLUGINS``; a BackendError saying how to build it when neither exists."""
    installed = Path(__file__).resolve().parent.parent / PLUGIN_LIBRARY
    if installed.is_file():
        return installed
    env = os.environ.get("VILAU_RT_TRT_PLUGINS")
    if env:
        if not Path(env).is_file():
            raise BackendError(f"VILAU_RT_TRT_PLUGINS={env} is not a file")
        return Path(env)
    raise BackendError(
        f"the TensorRT plugin library {PLUGIN_LIBRARY} was not built: reinstall vilau-rt where "
        "TensorRT headers are found (JetPack: automatic; else set VILAU_RT_TENSORRT_INCLUDE), or "
        "build it with cmake -S csrc/trt -B build/trt -DTensorRT_INCLUDE_DIR=<include> && "
        "cmake --build build/trt, then set VILAU_RT_TRT_PLUGINS to build/trt/" + PLUGIN_LIBRARY
    )


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as e:
        raise BackendError(
            f"the tensorrt backend needs TensorRT's Python bindings ({e}); on JetPack 6 they "
            "come with the OS (python3-libnvinfer); use backend='onnxruntime' elsewhere"
        ) from e
    return trt


def engine_cache_key(bundle_root: Path, plugins: Path, trt_version: str, capability) -> str:
    """Engines depend on the bundle, the plugin library, TensorRT's version and the GPU."""
    # manifest.json holds every other file's sha256: its own hash stands for the bundle
    digest = hashlib.sha256(bundle.file_sha256(bundle_root / bundle.MANIFEST).encode())
    digest.update(bundle.file_sha256(plugins).encode())
    major, minor = capability
    return f"{digest.hexdigest()[:16]}-trt{trt_version}-sm{major}{minor}"


def build_engine(trt, logger, onnx_path: Path, profile: dict, fp16: bool, workspace_mib: int):
    """Serialized engine (plan bytes) of one bundle graph; the plugin library must be loaded."""
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch always
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # reads external data beside the file
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    else:  # an fp32 bundle means fp32 math: TF32 (on by default) would round the matmul inputs
        config.clear_flag(trt.BuilderFlag.TF32)
    if profile:
        p = builder.create_optimization_profile()
        for name, shapes in profile.items():
            p.set_shape(name, shapes["min"], shapes["opt"], shapes["max"])
        config.add_optimization_profile(p)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise BackendError(f"TensorRT could not build an engine for {onnx_path} (see its log)")
    return bytes(plan)


class _Engine:
    """One deserialized engine with static I/O buffers sized for its profile's maximum."""

    def __init__(self, trt, runtime, plan: bytes, name: str, device: torch.device):
        self.trt, self.name, self.device = trt, name, device
        self.engine = runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise BackendError(
                f"engine {name}: TensorRT could not deserialize the plan (built by another "
                "TensorRT version or for another GPU? run build_engines.sh again on this device)"
            )
        self.context = self.engine.create_execution_context()
        e = self.engine
        names = [e.get_tensor_name(i) for i in range(e.num_io_tensors)]
        self.inputs = [n for n in names if e.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self.dtypes = {n: _torch_dtype(trt, e.get_tensor_dtype(n)) for n in names}
        self.max_shapes = {}
        for n in self.inputs:
            shape = tuple(e.get_tensor_shape(n))
            if any(d < 0 for d in shape):
                shape = tuple(e.get_tensor_profile_shape(n, 0)[2])
            self.max_shapes[n] = shape
            self.context.set_input_shape(n, shape)
        for n in self.outputs:  # their largest shapes follow from the largest inputs
            self.max_shapes[n] = tuple(self.context.get_tensor_shape(n))
        self.buffers = {
            n: torch.empty(int(np.prod(s, dtype=np.int64)), dtype=self.dtypes[n], device=device)
            for n, s in self.max_shapes.items()
        }

    def run(self, feeds: dict, bound: dict | None = None) -> dict[str, torch.Tensor]:
        """Runs on torch's current stream. ``feeds`` are copied into the static input buffers;
        ``bound`` tensors (the KV cache) are used in place, inputs or outputs. Outputs not bound
        are views of static buffers, valid until the next run."""
        bound = bound or {}
        for n in self.inputs:
            t = bound[n] if n in bound else self._stage(n, feeds[n])
            self._check(n, t.shape)
            if not self.context.set_input_shape(n, tuple(t.shape)):
                raise ValueError(f"engine {self.name}: {n} {tuple(t.shape)} is outside its profile")
            self.context.set_tensor_address(n, t.data_ptr())
        out = {}
        for n in self.outputs:
            shape = tuple(self.context.get_tensor_shape(n))
            t = bound.get(n)
            if t is None:
                t = self.buffers[n][: int(np.prod(shape, dtype=np.int64))].view(shape)
            elif tuple(t.shape) != shape:
                raise BackendError(f"engine {self.name}: {n} is {shape}, bound {tuple(t.shape)}")
            self.context.set_tensor_address(n, t.data_ptr())
            out[n] = t
        stream = (
            torch.cuda.current_stream(self.device).cuda_stream if self.device.type == "cuda" else 0
        )
        if not self.context.execute_async_v3(stream):
            raise BackendError(f"engine {self.name}: execute_async_v3 failed (see TensorRT's log)")
        return out

    def _stage(self, name: str, value) -> torch.Tensor:
        t = torch.as_tensor(value)
        self._check(name, t.shape)
        dst = self.buffers[name][: t.numel()].view(t.shape)
        dst.copy_(t.to(self.dtypes[name]), non_blocking=True)
        return dst

    def _check(self, name: str, shape) -> None:
        most = self.max_shapes[name]
        if len(shape) != len(most) or any(s > m for s, m in zip(shape, most, strict=True)):
            raise ValueError(
                f"engine {self.name}: {name} of shape {tuple(shape)} exceeds the engine's "
                f"profile maximum {most}; export with a larger --max-batch"
            )


def _torch_dtype(trt, dtype) -> torch.dtype:
    T = trt.DataType
    table = {
        T.FLOAT: torch.float32, T.HALF: torch.float16, T.BF16: torch.bfloat16,
        T.INT32: torch.int32, T.INT64: torch.int64, T.BOOL: torch.bool,
        T.INT8: torch.int8, T.UINT8: torch.uint8,
    }  # fmt: skip
    if dtype not in table:
        raise BackendError(f"TensorRT tensor type {dtype} has no torch counterpart here")
    return table[dtype]


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(
        self,
        bundle_dir: str | Path,
        *,
        engine_dir: str | Path | None = None,
        cache_dir: str | Path | None = None,
        device: str | torch.device = "cuda",
        verify_hashes: bool = True,
    ):
        """Engines: ``<graph>.plan`` from ``engine_dir`` if given, else from the bundle's
        ``engines/`` (what build_engines.sh writes), else built on first use into ``cache_dir``
        (``$VILAU_RT_CACHE`` or ~/.cache/vilau_rt) under the cache key."""
        trt = import_tensorrt()
        self.root = Path(bundle_dir)
        self.manifest = bundle.read_manifest(self.root, verify_hashes=verify_hashes)
        section = self.manifest.get("tensorrt")
        if self.manifest.get("target") != "tensorrt" or section is None:
            raise BackendError(
                f"{self.root} was exported for {self.manifest.get('target', 'onnxruntime')}: "
                "export it with vilau-rt export CKPT OUT --target tensorrt"
            )
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise BackendError("the tensorrt backend needs a CUDA GPU; torch sees none")
        self.cfg = bundle.config_from_dict(self.manifest["config"], where=str(self.root))
        self.dtype = _PRECISIONS[self.manifest["precision"]]
        self.section = section
        self.plugins = plugin_library()
        self._trt = trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        # the parser's plugin fallback and deserialization both look creators up here
        self._plugin_handle = trt.get_plugin_registry().load_library(str(self.plugins))
        if self._plugin_handle is None:
            raise BackendError(f"TensorRT could not load the plugin library {self.plugins}")
        self._runtime = trt.Runtime(self._logger)
        self.engine_dir = Path(engine_dir) if engine_dir else None
        self._cache_dir = cache_dir
        self._engines: dict[str, _Engine] = {}
        self._embed = np.load(self.root / bundle.EMBED_TOKENS, mmap_mode="r")
        self._cache: _KVCache | None = None
        self.stats: dict = {}

    def _cached_engine_dir(self, cache_dir) -> Path:
        cuda = self.device.type == "cuda"
        capability = torch.cuda.get_device_capability(self.device) if cuda else (0, 0)
        key = engine_cache_key(self.root, self.plugins, self._trt.__version__, capability)
        return Path(cache_dir or DEFAULT_CACHE) / "engines" / key

    def _plan_path(self, graph: str) -> Path:
        if self.engine_dir is not None:
            return self.engine_dir / f"{graph}.plan"
        script_plan = self.root / self.section["engine_dir"] / f"{graph}.plan"
        if script_plan.is_file():
            return script_plan
        return self._cached_engine_dir(self._cache_dir) / f"{graph}.plan"

    def _engine(self, graph: str) -> _Engine:
        if graph not in self._engines:
            plan_path = self._plan_path(graph)
            if not plan_path.is_file():
                self._build(graph, plan_path)
            plan = plan_path.read_bytes()
            self._engines[graph] = _Engine(self._trt, self._runtime, plan, graph, self.device)
        return self._engines[graph]

    def _build(self, graph: str, plan_path: Path) -> None:
        onnx_path = self.root / self.manifest["graphs"][graph]["file"]
        log.info("building the TensorRT engine %s (minutes on a Jetson; cached)", plan_path)
        s = self.section
        plan = build_engine(
            self._trt, self._logger, onnx_path, s["profiles"].get(graph, {}), s["fp16"],
            s["workspace_mib"],
        )  # fmt: skip
        plan_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = plan_path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(plan)
        os.replace(tmp, plan_path)  # atomic: a concurrent reader sees all or nothing

    # -- images ---------------------------------------------------------------------------
    def encode_images(self, pixel_values):
        S = self.cfg.image_size
        if pixel_values.dim() != 4 or tuple(pixel_values.shape[1:]) != (3, S, S):
            raise ValueError(
                f"pixel_values must be [B, 3, {S}, {S}], got {tuple(pixel_values.shape)}"
            )
        out = self._engine("vision").run({"pixel_values": pixel_values.float()})
        return out["codes"].clone(), out["embeds"].clone()

    def decode_codes(self, codes):
        h, w = self.cfg.grid
        D, n_embed = self.cfg.rvq.depth, self.cfg.rvq.n_embed
        if codes.dim() != 4 or tuple(codes.shape[1:]) != (h, w, D):
            raise ValueError(f"codes must be [B, {h}, {w}, {D}], got {tuple(codes.shape)}")
        _check_range("codes", codes, n_embed)
        return self._engine("pixel_decoder").run({"codes": codes.long()})["pixels"].clone()

    # -- LLM ------------------------------------------------------------------------------
    def embed_tokens(self, ids):
        _check_range("token ids", ids, self.cfg.llm.vocab_size)
        rows = np.take(self._embed, ids.detach().cpu().numpy().astype(np.int64), axis=0)
        return torch.from_numpy(rows).to(self.device, self.dtype)

    def setup_cache(self, batch, length):
        check_cache_length(self.cfg, length)
        c = self._cache
        if c is not None and c.batch == batch and length <= c.length:
            return
        self._cache = None  # free the old buffers first: device memory is the limit on a Jetson
        self._cache = _KVCache(self, batch, length)

    def forward(self, embeds, rope_pos, cache_pos, key_valid=None):
        B, T, _ = embeds.shape
        cache = self._cache
        if cache is None:
            if cache_pos:
                raise RuntimeError("cache_pos > 0 needs a KV cache: call setup_cache() first")
            cache = _KVCache(self, B, T)  # a one-off cache, as the torch model runs uncached
        check_step(self.cfg, cache.batch, cache.length, embeds, rope_pos, cache_pos)
        valid = torch.ones(B, cache.length, dtype=torch.bool, device=self.device)
        if key_valid is not None:
            kv = key_valid[:, : cache.length].to(self.device, torch.bool)
            valid[:, : kv.shape[1]] = kv
        feeds = {
            "inputs_embeds": embeds.to(self.device, self.dtype),
            "rope_pos": rope_pos.to(self.device, torch.long),
            "write_index": torch.full((B,), cache_pos, dtype=torch.long, device=self.device),
            "key_valid": valid,
        }
        graph = "llm_decode" if T == 1 else "llm_prefill"
        hidden = self._engine(graph).run(feeds, cache.bindings())["hidden"].clone()
        cache.swap()  # only after a run that went through: a failed one leaves the cache as it was
        return hidden

    def logits(self, hidden):
        return self._engine("lm_head").run({"hidden": hidden.to(self.dtype)})["logits"].clone()

    # -- depth transformer ----------------------------------------------------------------
    def depth_generate(self, hidden, cfg_scale, sample, on_logits=None):
        N = hidden.shape[0]
        if N % 2:
            raise ValueError(f"CFG needs [cond, uncond] rows, got an odd batch of {N}")
        n, D = N // 2, self.cfg.rvq.depth
        forced = torch.full((n, D), -1, dtype=torch.long)
        if isinstance(sample, CodeSampler):
            self.stats["depth_path"] = "fused"
            out = self._depth(hidden, cfg_scale, sample, sample.next_seed(), forced)
            if on_logits is not None:
                for d in range(D):
                    on_logits(d, out["logits"][d].clone())
            return out["codes"].clone(), out["next_embeds"].clone()
        # an opaque sampler: force the codes it picks one depth at a time (as onnxruntime does)
        self.stats["depth_path"] = "per-depth"
        greedy = CodeSampler(top_k=1)
        for d in range(D):
            lg = self._depth(hidden, cfg_scale, greedy, 0, forced)["logits"][d].clone()
            if on_logits is not None:
                on_logits(d, lg)
            forced[:, d] = sample(guided_logits(lg, cfg_scale)).cpu()
        out = self._depth(hidden, cfg_scale, greedy, 0, forced)
        return out["codes"].clone(), out["next_embeds"].clone()

    def _depth(self, hidden, cfg_scale, sampler: CodeSampler, seed: int, forced):
        f32, i64 = torch.float32, torch.long
        feeds = {
            "hidden": hidden.to(self.dtype),
            "cfg_scale": torch.tensor(cfg_scale, dtype=f32),
            "temperature": torch.tensor(sampler.temperature, dtype=f32),
            "top_k": torch.tensor(sampler.top_k or 0, dtype=i64),
            "top_p": torch.tensor(1.0 if sampler.top_p is None else sampler.top_p, dtype=f32),
            "seed": torch.tensor(seed, dtype=i64),
            "forced_codes": forced,
        }
        return self._engine("depth_decode").run(feeds)


class _KVCache:
    """Two device buffer sets, [B, n_kv, S, hd] per layer and K/V, used in turn as the LLM
    graphs' past (read) and present (written): the run after each step swaps them."""

    def __init__(self, backend: TensorRTBackend, batch: int, length: int):
        lc = backend.cfg.llm
        self.batch, self.length = batch, length
        shape = (batch, lc.num_key_value_heads, length, lc.head_dim)
        names = [f"{part}_{i}" for i in range(lc.num_hidden_layers) for part in ("key", "value")]
        self.sets = [
            {n: torch.zeros(shape, dtype=backend.dtype, device=backend.device) for n in names}
            for _ in range(2)
        ]
        self.current = 0  # the set that holds the cache now

    def bindings(self) -> dict[str, torch.Tensor]:
        """past_* -> the current set, present_* -> the other (current after ``swap``)."""
        past, present = self.sets[self.current], self.sets[1 - self.current]
        return {
            **{f"past_{n}": t for n, t in past.items()},
            **{f"present_{n}": t for n, t in present.items()},
        }

    def swap(self) -> None:
        self.current = 1 - self.current


def _check_range(what: str, t: torch.Tensor, upper: int) -> None:
    if t.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{what} must be int64, got {t.dtype}")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= upper):
        raise ValueError(
            f"{what} must lie in [0, {upper}); got range [{int(t.min())}, {int(t.max())}]"
        )
