"""AWQ INT4 LLMs: ``AWQConfig`` (the checkpoint's quantization config), ``W4A16Linear`` and the
loaders that build a LLaMA with it from an AutoAWQ checkpoint. The storage format and the
quantizer arithmetic are in ``vilau_rt.model.awq_format``.
"""

from __future__ import annotations

import json
import weakref
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError, CheckpointNotFoundError, ConfigError
from ..ops import kernels
from .awq_format import pack_gemm, quantize_tensor, unpack_gemv
from .linear16 import loaded_dtype
from .llama import LlamaConfig, LlamaForCausalLM
from .safetensors_io import DTYPE_NAMES, TensorSource

SUPPORTED_GROUP_SIZES = (32, 64, 128)
# The linears AutoAWQ quantizes in a LLaMA block; lm_head and the embeddings stay float.
LLAMA_QUANT_LINEARS = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)
QUANT_BUFFERS = ("qweight", "qzeros", "scales")


# ---------------------------------------------------------------------------- config


# Keys transformers' AwqConfig writes that say how to *run* the model, not how it is stored.
_HF_RUNTIME_KEYS = {"backend", "do_fuse", "fuse_max_seq_len", "modules_to_fuse", "exllama_config"}


@dataclass
class AWQConfig:
    bits: int = 4
    group_size: int = 128
    zero_point: bool = True  # False: symmetric, stored as code = q + 8 with zero point 8
    version: str = "gemm"  # storage layout: "gemm" (what we write) or "gemv" (read only)
    modules_to_not_convert: list[str] | None = None  # substrings of module names kept float

    def __post_init__(self):
        if self.bits != 4:
            raise ConfigError(f"AWQ bits={self.bits} is not supported: only 4-bit weights")
        if self.group_size not in SUPPORTED_GROUP_SIZES:
            raise ConfigError(
                f"AWQ group_size={self.group_size} is not supported: use one of "
                f"{SUPPORTED_GROUP_SIZES} (128 is AutoAWQ's default)"
            )
        self.version = str(self.version).lower()
        if self.version not in ("gemm", "gemv"):
            raise ConfigError(
                f"AWQ version={self.version!r} is not supported: 'gemm' (or 'gemv' to read old "
                "AutoAWQ checkpoints); Marlin/exllama layouts must be converted with AutoAWQ first"
            )

    @classmethod
    def from_hf(cls, d: dict) -> AWQConfig:
        """From HF ``quantization_config`` or an old AutoAWQ ``quant_config.json`` dict."""
        d = dict(d)
        method = d.pop("quant_method", "awq")
        if str(method).lower() != "awq":
            raise ConfigError(
                f"quantization_config quant_method={method!r} is not AWQ; only 'awq' is supported"
            )
        old = {"w_bit": "bits", "q_group_size": "group_size"}
        for o, new in old.items():
            if o in d:
                if new in d and d[new] != d[o]:
                    raise ConfigError(f"AWQ config gives both {o}={d[o]} and {new}={d[new]}")
                d[new] = d.pop(o)
        for k in _HF_RUNTIME_KEYS:
            d.pop(k, None)
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(
                f"AWQ config has unknown keys {unknown}; known: {sorted(known | set(old))}"
            )
        return cls(**d)

    def to_hf(self) -> dict:
        """The ``quantization_config`` entry of an HF ``config.json``."""
        return {
            "quant_method": "awq",
            "bits": self.bits,
            "group_size": self.group_size,
            "zero_point": self.zero_point,
            "version": self.version,
            "modules_to_not_convert": self.modules_to_not_convert,
        }

    def converts(self, module_name: str) -> bool:
        """Whether ``module_name`` is quantized; substring match, as transformers and AutoAWQ
        interpret ``modules_to_not_convert`` (exact matching would misread their checkpoints)."""
        return not any(s in module_name for s in self.modules_to_not_convert or ())


def read_awq_config(folder: str | Path) -> AWQConfig | None:
    """AWQ settings of an HF model folder: ``config.json`` -> ``quantization_config``, else an
    old ``quant_config.json`` beside it; None when the folder holds a float model."""
    folder = Path(folder)
    path = folder / "config.json"
    if not path.is_file():
        raise CheckpointNotFoundError(f"{path} not found: not a Hugging Face model folder")
    cfg = _read_json(path)
    if cfg.get("quantization_config") is not None:
        try:
            return AWQConfig.from_hf(cfg["quantization_config"])
        except ConfigError as e:
            raise ConfigError(f"{path} quantization_config: {e}") from e
    old = folder / "quant_config.json"
    if old.is_file():
        try:
            return AWQConfig.from_hf(_read_json(old))
        except ConfigError as e:
            raise ConfigError(f"{old}: {e}") from e
    return None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e})") from e


# ---------------------------------------------------------------------------- module


def _tracing() -> bool:
    """True under torch.jit tracing, torch.compile / torch.export or ONNX export: those keep the
    portable ``vilau::w4a16_linear`` op (the exporters map it), never the CPU packed route."""
    return (
        torch.jit.is_tracing()
        or torch.jit.is_scripting()
        or torch.compiler.is_compiling()
        or torch.onnx.is_in_onnx_export()
    )


def _version(t: torch.Tensor) -> int | None:
    """In-place write counter of t; None for inference-mode tensors, which keep none (those can
    only be written inside inference mode: replace the tensor instead, and the cache follows)."""
    try:
        return t._version
    except RuntimeError:
        return None


class W4A16Linear(nn.Module):
    """y = x @ W_T + bias with W_T stored as AutoAWQ GEMM INT4 buffers.

    | name    | shape      | dtype                          |
    |---------|------------|--------------------------------|
    | x       | [..., K]   | float32 / float16 / bfloat16   |
    | returns | [..., N]   | x's dtype                      |

    On the CPU, calls with 1 <= M <= ``kernels.w4a16_cpu_packed_max_rows(x)`` rows (decode, CFG
    pairs, short prefills: 16 for float32 x where csrc/gemm runs AVX-512, whose AWQ GEMM serves
    the op from 17 rows; else 64) and group_size % 32 == 0 run ``vilau::w4a16_linear_packed``
    on a k-contiguous copy of the codes, built on the first such call and cached outside the
    state dict (rebuilt when qweight is replaced, written in place or moved). Other calls, CUDA,
    and traced / compiled / exported graphs use ``vilau::w4a16_linear``. The two routes differ
    by float32 rounding only (the packed GEMV sums in a different fixed order)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        group_size: int,
        bias: bool = False,
        device: torch.device | str | None = None,
    ):
        super().__init__()
        if group_size < 1 or in_features % group_size:
            raise ValueError(
                f"in_features={in_features} is not a multiple of group_size={group_size}; "
                "pick a group_size that divides it or keep this layer float"
            )
        if out_features % 8:
            raise ValueError(
                f"out_features={out_features} is not a multiple of 8 (8 codes per int32 word); "
                "keep this layer float (modules_to_not_convert)"
            )
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        groups = in_features // group_size
        kw = {"device": device}
        self.register_buffer(
            "qweight", torch.zeros(in_features, out_features // 8, dtype=torch.int32, **kw)
        )
        self.register_buffer(
            "qzeros", torch.zeros(groups, out_features // 8, dtype=torch.int32, **kw)
        )
        self.register_buffer("scales", torch.zeros(groups, out_features, dtype=torch.float16, **kw))
        self.register_buffer(
            "bias", torch.zeros(out_features, dtype=torch.float16, **kw) if bias else None
        )
        # (weakref to the qweight it was built from, its _version, packed codes) or None. Not a
        # buffer: .to() would copy it to the GPU and state_dict / named_buffers would list it.
        # One tuple, swapped whole, so a reader never pairs one qweight's key with another's
        # codes; two threads building at once both build the same bytes.
        self._cpu_packed = None

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        group_size: int,
        zero_point: bool = True,
        scales: torch.Tensor | None = None,
        zeros: torch.Tensor | None = None,
    ) -> W4A16Linear:
        """Quantize and pack a float linear. With ``scales``/``zeros`` [N, K/G] given (e.g. from
        ``quantize_tensor`` on a clipped weight), the codes are derived from them instead."""
        w = linear.weight.detach()
        n, k = w.shape
        if scales is None:
            if zeros is not None:
                raise ValueError("zeros given without scales: pass both or neither")
            codes, zeros, scales = quantize_tensor(w, group_size, zero_point)
        else:
            if zeros is None:
                raise ValueError("scales given without zeros: pass both (symmetric: zeros = 8)")
            groups = k // group_size
            if tuple(scales.shape) != (n, groups) or tuple(zeros.shape) != (n, groups):
                raise ValueError(
                    f"scales {tuple(scales.shape)} and zeros {tuple(zeros.shape)} must be "
                    f"[out_features, in_features / group_size] = {(n, groups)}"
                )
            s = scales.half().repeat_interleave(group_size, 1)
            z = zeros.half().repeat_interleave(group_size, 1)
            codes = torch.clamp(torch.round(w.half() / s) + z, 0, 15).to(torch.uint8)
        module = cls(k, n, group_size, bias=linear.bias is not None, device=w.device)
        qweight, qzeros, sc = pack_gemm(codes.t(), zeros.t(), scales.t())
        module.qweight.copy_(qweight)
        module.qzeros.copy_(qzeros)
        module.scales.copy_(sc)
        if linear.bias is not None:
            module.bias.copy_(linear.bias.detach().half())
        return module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.uses_packed(x):
            return kernels.w4a16_linear_packed(
                x, self.packed_weight(), self.qzeros, self.scales, self.bias, self.group_size
            )
        return kernels.w4a16_linear(
            x, self.qweight, self.qzeros, self.scales, self.bias, self.group_size
        )

    def uses_packed(self, x: torch.Tensor) -> bool:
        """True when ``forward(x)`` runs the packed CPU GEMV (``w4a16_linear_packed``)."""
        if _tracing():  # first: the checks below would be baked into a traced graph
            return False
        rows = x.numel() // x.shape[-1] if x.dim() and x.shape[-1] else 0
        return (
            x.device.type == "cpu"
            and self.qweight.device.type == "cpu"
            and self.group_size % 32 == 0
            and 1 <= rows <= kernels.w4a16_cpu_packed_max_rows(x)
        )

    def packed_weight(self) -> torch.Tensor:
        """qweight's codes in the CPU packed layout (``kernels.w4a16_repack``), cached."""
        qweight = self.qweight
        version = _version(qweight)
        cached = self._cpu_packed
        if cached is not None and cached[0]() is qweight and cached[1] == version:
            return cached[2]
        packed = kernels.w4a16_repack(qweight)
        self._cpu_packed = (weakref.ref(qweight), version, packed)
        return packed

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"group_size={self.group_size}, bias={self.bias is not None}"
        )


def quantized_linear_names(llm: LlamaForCausalLM, cfg: AWQConfig) -> list[str]:
    """HF module names of the linears ``cfg`` quantizes (q/k/v/o/gate/up/down of every block)."""
    names = [
        f"model.layers.{i}.{sub}"
        for i in range(len(llm.model.layers))
        for sub in LLAMA_QUANT_LINEARS
    ]
    return [n for n in names if cfg.converts(n)]


def replace_linears_with_w4a16(llm: LlamaForCausalLM, cfg: AWQConfig) -> LlamaForCausalLM:
    """Swap each quantized nn.Linear for an empty W4A16Linear on the linear's device (use the
    ``meta`` device to build a model that a loader then fills). lm_head and embeddings stay float."""
    for name in quantized_linear_names(llm, cfg):
        parent_name, child = name.rsplit(".", 1)
        parent = llm.get_submodule(parent_name)
        lin = getattr(parent, child)
        q = W4A16Linear(
            lin.in_features,
            lin.out_features,
            cfg.group_size,
            bias=lin.bias is not None,
            device=lin.weight.device,
        )
        setattr(parent, child, q)
    return llm


# ---------------------------------------------------------------------------- loading


def load_awq_state(
    src: TensorSource,
    expected: dict[str, torch.Tensor],
    cfg: AWQConfig,
    quantized: list[str],
    dtype: torch.dtype,
    device: torch.device | str,
) -> dict[str, torch.Tensor]:
    """Tensors of ``src`` for a model whose state dict looks like ``expected`` (meta tensors).

    ``quantized`` names the W4A16Linear modules: their qweight/qzeros/scales/bias keep their
    stored dtypes (GEMV checkpoints are repacked to GEMM); every other tensor must be float and is
    cast to ``dtype``, except where ``expected`` holds it in 16 bits (a ``Linear16`` weight,
    built from the stored dtype): it stays as stored. Unknown, missing or mis-shaped tensors
    raise CheckpointError naming the file and the key.
    """
    state: dict[str, torch.Tensor] = {}
    quant_keys = {f"{m}.{b}": m for m in quantized for b in (*QUANT_BUFFERS, "bias")}
    names = set(src.names())
    for key in sorted(names):
        if key.endswith("rotary_emb.inv_freq"):
            continue  # stored by old transformers versions; recomputed from the config
        if key in quant_keys:
            if key.endswith(".qweight"):
                state.update(_load_quantized(src, quant_keys[key], expected, cfg, device))
            continue
        if key not in expected:
            hint = (
                " (a quantized buffer of a module the config keeps float: check "
                "modules_to_not_convert)"
                if key.rsplit(".", 1)[-1] in QUANT_BUFFERS
                else ""
            )
            raise CheckpointError(
                f"unexpected tensor {key!r} in {src.file_of(key)}: the config has no such "
                f"weight{hint}"
            )
        like = expected[key]
        state[key] = src.get_float(key, like, loaded_dtype(like, dtype), device)
    return state


def _check_meta(src: TensorSource, key: str, dtype: torch.dtype, shape: tuple) -> None:
    stored_dtype, stored_shape = src.meta(key)
    if stored_dtype != dtype or tuple(stored_shape) != tuple(shape):
        raise CheckpointError(
            f"tensor {key!r} in {src.file_of(key)} is {DTYPE_NAMES.get(stored_dtype)} "
            f"{list(stored_shape)}; AWQ expects {DTYPE_NAMES[dtype]} {list(shape)}"
        )


def _load_quantized(src, module: str, expected, cfg: AWQConfig, device) -> dict:
    k, n8 = expected[f"{module}.qweight"].shape
    n, groups = n8 * 8, k // cfg.group_size
    missing = [f"{module}.{b}" for b in QUANT_BUFFERS if f"{module}.{b}" not in src.names()]
    if missing:
        raise CheckpointError(f"{src.folder} lacks {missing} (AWQ linear {module!r})")
    out = {}
    if cfg.version == "gemm":
        for b, dt, shape in (
            ("qweight", torch.int32, (k, n // 8)),
            ("qzeros", torch.int32, (groups, n // 8)),
            ("scales", torch.float16, (groups, n)),
        ):
            _check_meta(src, f"{module}.{b}", dt, shape)
            out[f"{module}.{b}"] = src.get(f"{module}.{b}").to(device)
    else:  # GEMV: check what can be checked, then repack so one kernel serves both
        _check_meta(src, f"{module}.qweight", torch.int32, (n, k // 8))
        z_dtype, z_shape = src.meta(f"{module}.qzeros")
        s_dtype, s_shape = src.meta(f"{module}.scales")
        if z_dtype != torch.int32 or s_dtype != torch.float16 or z_shape[0] != n:
            raise CheckpointError(
                f"GEMV tensors of {module!r} in {src.file_of(module + '.qweight')} have "
                f"qzeros {z_dtype} {list(z_shape)}, scales {s_dtype} {list(s_shape)}"
            )
        codes, zeros, scales = unpack_gemv(
            src.get(f"{module}.qweight"),
            src.get(f"{module}.qzeros"),
            src.get(f"{module}.scales"),
            cfg.group_size,
        )
        qw, qz, sc = pack_gemm(codes, zeros, scales)
        out.update({f"{module}.qweight": qw, f"{module}.qzeros": qz, f"{module}.scales": sc})
        out = {key: t.to(device) for key, t in out.items()}
    bias_key = f"{module}.bias"
    if bias_key in expected:
        if bias_key not in src.names():
            raise CheckpointError(f"{src.folder} lacks {bias_key!r}")
        _check_meta(src, bias_key, torch.float16, (n,))
        out[bias_key] = src.get(bias_key).to(device)
    elif bias_key in src.names():
        raise CheckpointError(
            f"unexpected tensor {bias_key!r} in {src.file_of(bias_key)}: the config says "
            "attention_bias is false"
        )
    return out


def load_llm(
    folder: str | Path,
    dtype: torch.dtype = torch.float16,
    device: torch.device | str = "cpu",
) -> LlamaForCausalLM:
    """An HF LLaMA folder (``config.json`` + safetensors) as our model: float, or AWQ INT4 with
    W4A16Linear layers when the config says so. ``dtype`` is the activation / float-weight dtype
    (AWQ scales stay fp16). Tensors are memory-mapped and assigned, never held twice."""
    folder = Path(folder)
    awq = read_awq_config(folder)
    cfg = LlamaConfig.from_hf(_read_json(folder / "config.json"))
    with torch.device("meta"):
        llm = LlamaForCausalLM(cfg)
    quantized = []
    if awq is not None:
        replace_linears_with_w4a16(llm, awq)
        quantized = quantized_linear_names(llm, awq)
    expected = llm.state_dict()
    src = TensorSource(folder)
    state = load_awq_state(src, expected, awq or AWQConfig(), quantized, dtype, device)
    if "lm_head.weight" not in state and cfg.tie_word_embeddings:
        state["lm_head.weight"] = state.get("model.embed_tokens.weight")
    missing = [k for k in expected if state.get(k) is None]
    if missing:
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise CheckpointError(f"{folder} lacks tensors {missing[:10]}{more}")
    llm.load_state_dict(state, strict=True, assign=True)
    return llm.eval()


def load_awq_llm(
    folder: str | Path,
    dtype: torch.dtype = torch.float16,
    device: torch.device | str = "cpu",
) -> LlamaForCausalLM:
    """Like ``load_llm``, but the folder must be AWQ-quantized (AutoAWQ or vilau_export.quantize.awq_search)."""
    if read_awq_config(folder) is None:
        raise CheckpointError(
            f"{Path(folder) / 'config.json'} has no quantization_config and there is no "
            "quant_config.json: this is a float model; load it with load_llm"
        )
    return load_llm(folder, dtype, device)
