"""Loading HF LLaMA folders: the tiny model AutoAWQ quantized (``autoawq/quantized``) and its float
original, against the logits the fixture computed with transformers and AutoAWQ."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from vilau_rt.errors import CheckpointError
from vilau_rt.model.awq import AWQConfig, W4A16Linear, load_awq_llm, load_llm
from vilau_rt.model.awq_format import dequantize_gemm, unpack_gemm


@pytest.fixture(scope="module")
def ref(awq_fixture):
    return load_file(awq_fixture / "reference_logits.safetensors")


def logits(llm, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        h = llm(llm.embed(ids[None]), torch.arange(ids.numel())[None])
        return llm.logits(h)[0]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


def mean_kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> float:
    """Mean over tokens of KL(P || Q), log-softmax in float64 (as the fixture computes it)."""
    lp = torch.log_softmax(p_logits.double(), -1)
    lq = torch.log_softmax(q_logits.double(), -1)
    return (lp.exp() * (lp - lq)).sum(-1).mean().item()


def dequantized_copy(llm, dtype: torch.dtype):
    """Swap every W4A16Linear for an fp32 nn.Linear holding (code - zero) * scale in ``dtype``."""
    for name, m in list(llm.named_modules()):
        if isinstance(m, W4A16Linear):
            parent, child = name.rsplit(".", 1)
            lin = nn.Linear(m.in_features, m.out_features, bias=False)
            w_t = dequantize_gemm(m.qweight, m.qzeros, m.scales, m.group_size, dtype)
            lin.weight.data = w_t.t().float().contiguous()
            setattr(llm.get_submodule(parent), child, lin)
    return llm


def test_quantized_folder_loads_as_w4a16(awq_fixture):
    llm = load_awq_llm(awq_fixture / "quantized", torch.float32)
    q = [n for n, m in llm.named_modules() if isinstance(m, W4A16Linear)]
    assert len(q) == 2 * 7
    assert isinstance(llm.lm_head, nn.Linear) and llm.lm_head.weight.dtype == torch.float32
    src = load_file(awq_fixture / "quantized" / "model.safetensors")
    down = llm.model.layers[1].mlp.down_proj
    assert torch.equal(down.qweight, src["model.layers.1.mlp.down_proj.qweight"])
    assert torch.equal(down.scales, src["model.layers.1.mlp.down_proj.scales"])


@pytest.mark.parametrize("i", [0, 1])
def test_dequantized_logits_match_autoawq_fp32_reference(awq_fixture, ref, i):
    """Weights decoded by AutoAWQ's rule (fp16 product) in an fp32 model: the fixture's target
    for an fp32 re-implementation, which transformers reproduces to < 1e-4."""
    llm = dequantized_copy(load_awq_llm(awq_fixture / "quantized", torch.float32), torch.float16)
    assert rel_err(logits(llm, ref[f"input_ids.{i}"]), ref[f"logits.awq_dequant_fp32.{i}"]) < 1e-4


@pytest.mark.parametrize("i", [0, 1])
def test_w4a16_op_forward_fp32(awq_fixture, ref, i):
    """Through the W4A16 op (which dequantizes as AutoAWQ does: the fp16 product), logits match
    AutoAWQ's dequantize-then-fp32 reference to 1e-4 relative, and the KL to the float model is
    AutoAWQ's."""
    llm = load_awq_llm(awq_fixture / "quantized", torch.float32)
    ids = ref[f"input_ids.{i}"]
    ours = logits(llm, ids)
    assert rel_err(ours, ref[f"logits.awq_dequant_fp32.{i}"]) < 1e-4
    original = ref[f"logits.original_fp32.{i}"]
    kl_ref = mean_kl(original, ref[f"logits.awq_dequant_fp32.{i}"])
    assert abs(mean_kl(original, ours) - kl_ref) < 0.01 * kl_ref


@pytest.mark.parametrize("i", [0, 1])
def test_w4a16_op_forward_fp16(awq_fixture, ref, i):
    """fp16 activations: our error to the fp32 reference is at most twice AutoAWQ's own fp16
    forward's error to it (both are fp16 rounding of activations; neither is the truth)."""
    llm = load_awq_llm(awq_fixture / "quantized", torch.float16)
    target = ref[f"logits.awq_dequant_fp32.{i}"]
    theirs = (ref[f"logits.awq_autoawq_forward_fp16.{i}"].double() - target).abs().max().item()
    ours = (logits(llm, ref[f"input_ids.{i}"]).double() - target).abs().max().item()
    assert ours <= 2 * theirs


@pytest.mark.parametrize("i", [0, 1])
def test_original_float_folder_matches_transformers(awq_fixture, ref, i):
    llm = load_llm(awq_fixture / "original", torch.float32)
    assert not any(isinstance(m, W4A16Linear) for m in llm.modules())
    ids = ref[f"input_ids.{i}"]
    assert rel_err(logits(llm, ids), ref[f"logits.original_fp32.{i}"]) < 1e-5
    fp16 = logits(load_llm(awq_fixture / "original", torch.float16), ids)
    floor = (ref[f"logits.original_fp16.{i}"].double() - ref[f"logits.original_fp32.{i}"]).abs()
    assert (fp16.double() - ref[f"logits.original_fp32.{i}"]).abs().max() <= 2 * floor.max()


def _copy_quantized(awq_fixture, tmp_path, edit_config=None, edit_tensors=None):
    dst = tmp_path / "q"
    shutil.copytree(awq_fixture / "quantized", dst)
    if edit_config:
        cfg = json.loads((dst / "config.json").read_text())
        edit_config(cfg)
        (dst / "config.json").write_text(json.dumps(cfg))
    if edit_tensors:
        t = load_file(dst / "model.safetensors")
        edit_tensors(t)
        save_file(t, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


def test_old_quant_config_json_is_read(awq_fixture, tmp_path, ref):
    def to_old(cfg):
        qc = cfg.pop("quantization_config")
        old = {"w_bit": qc["bits"], "q_group_size": qc["group_size"], "zero_point": True}
        (tmp_path / "q" / "quant_config.json").write_text(json.dumps({**old, "version": "GEMM"}))

    folder = _copy_quantized(awq_fixture, tmp_path, edit_config=to_old)
    llm = load_awq_llm(folder, torch.float32)
    ids = ref["input_ids.0"]
    assert rel_err(logits(llm, ids), ref["logits.awq_dequant_fp32.0"]) < 5e-3


def test_gemv_checkpoint_is_repacked(awq_fixture, tmp_path):
    """A GEMV folder (the GEMM one rewritten with the GEMV rules that test_awq_format checks on
    AutoAWQ's own GEMV tensors) loads to the same buffers."""
    key = "model.layers.0.self_attn.o_proj"

    def to_gemv(t):
        for name in [k[: -len(".qweight")] for k in t if k.endswith(".qweight")]:
            codes_t, zeros_t = unpack_gemm(t[f"{name}.qweight"], t[f"{name}.qzeros"])
            codes, zeros, scales = codes_t.t(), zeros_t.t(), t[f"{name}.scales"].t()
            n, k = codes.shape
            shifts = torch.arange(0, 32, 4)
            words = (codes.long().view(n, k // 8, 8) << shifts).sum(-1)
            zw = (F.pad(zeros.long(), (0, 8 - zeros.shape[1])) << shifts).sum(-1)
            t[f"{name}.qweight"] = torch.where(words >= 2**31, words - 2**32, words).int()
            t[f"{name}.qzeros"] = zw.int().view(n, 1)
            t[f"{name}.scales"] = F.pad(scales, (0, 8 - scales.shape[1])).contiguous()

    gemv = _copy_quantized(
        awq_fixture,
        tmp_path,
        edit_config=lambda c: c["quantization_config"].update(version="gemv"),
        edit_tensors=to_gemv,
    )
    a = load_awq_llm(awq_fixture / "quantized", torch.float32).get_submodule(key)
    b = load_awq_llm(gemv, torch.float32).get_submodule(key)
    assert torch.equal(a.qweight, b.qweight) and torch.equal(a.qzeros, b.qzeros)
    assert torch.equal(a.scales, b.scales)


def test_strict_key_checks_name_file_and_key(awq_fixture, tmp_path):
    key = "model.layers.0.mlp.up_proj.qzeros"
    folder = _copy_quantized(awq_fixture, tmp_path, edit_tensors=lambda t: t.pop(key))
    with pytest.raises(CheckpointError, match=r"up_proj.qzeros"):
        load_awq_llm(folder)
    shutil.rmtree(folder)
    folder = _copy_quantized(
        awq_fixture, tmp_path, edit_tensors=lambda t: t.update({key: t[key].float()})
    )
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*F32"):
        load_awq_llm(folder)
    shutil.rmtree(folder)
    folder = _copy_quantized(
        awq_fixture,
        tmp_path,
        edit_config=lambda c: c["quantization_config"].update(modules_to_not_convert=["mlp"]),
    )
    with pytest.raises(CheckpointError, match="modules_to_not_convert"):
        load_awq_llm(folder)
    with pytest.raises(CheckpointError, match="float model"):
        load_awq_llm(awq_fixture / "original")


def test_awq_config_of_fixture(awq_fixture):
    cfg = json.loads((awq_fixture / "quantized" / "config.json").read_text())
    assert AWQConfig.from_hf(cfg["quantization_config"]) == AWQConfig()
