"""AutoAWQ GEMM / GEMV formats and the pseudo-quantizer, against tensors written by AutoAWQ 0.2.9
(fixture ``autoawq/format_*.safetensors``) and independent float64 / numpy references."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from vilau_rt.errors import ConfigError
from vilau_rt.model import awq
from vilau_rt.model.awq import AWQConfig, W4A16Linear, replace_linears_with_w4a16
from vilau_rt.model.awq_format import (
    dequantize_gemm,
    pack_gemm,
    quantize_tensor,
    unpack_gemm,
    unpack_gemv,
)
from vilau_rt.model.llama import LlamaConfig, LlamaForCausalLM


@pytest.fixture(scope="module")
def fmt(awq_fixture):
    meta = json.loads((awq_fixture / "format_meta.json").read_text())
    layers = {m["name"]: m for m in meta["layers"]}
    gemm = load_file(awq_fixture / "format_gemm.safetensors")
    gemv = load_file(awq_fixture / "format_gemv.safetensors")
    return layers, gemm, gemv


LAYERS = ["layer0", "layer1", "layer2", "pattern"]
FLOAT_LAYERS = ["layer0", "layer1", "layer2"]  # the ones with an original float weight


@pytest.mark.parametrize("name", LAYERS)
def test_pack_reproduces_autoawq_bytes(fmt, name):
    _, t, _ = fmt
    qweight, qzeros, scales = pack_gemm(
        t[f"{name}.iweight_in_out"], t[f"{name}.izeros"], t[f"{name}.scales"]
    )
    assert torch.equal(qweight, t[f"{name}.qweight"])
    assert torch.equal(qzeros, t[f"{name}.qzeros"])
    assert torch.equal(scales, t[f"{name}.scales"])


def test_pattern_layer_nibble_order(fmt):
    """The pattern layer's codes are known in closed form: code[o, i] = (o + 2i) mod 16."""
    _, t, _ = fmt
    o = torch.arange(32).view(32, 1)
    i = torch.arange(128).view(1, 128)
    codes_out_in = (o + 2 * i) % 16
    assert torch.equal(codes_out_in.to(torch.uint8), t["pattern.codes_out_in"])
    zeros = (3 * torch.arange(32).view(32, 1) + torch.arange(2).view(1, 2)) % 16  # [out, groups]
    qweight, qzeros, _ = pack_gemm(codes_out_in.t(), zeros.t(), torch.ones(2, 32))
    # row 0, columns 0..7 hold codes 0..7; nibble k holds column [0, 2, 4, 6, 1, 3, 5, 7][k]
    assert qweight[0, 0].item() & 0xFFFFFFFF == 0x75316420
    assert torch.equal(qweight, t["pattern.qweight"])
    assert torch.equal(qzeros, t["pattern.qzeros"])


@pytest.mark.parametrize("name", LAYERS)
def test_unpack_reproduces_autoawq_codes(fmt, name):
    _, t, _ = fmt
    codes, zeros = unpack_gemm(t[f"{name}.qweight"], t[f"{name}.qzeros"])
    assert torch.equal(codes, t[f"{name}.iweight_in_out"])
    assert torch.equal(zeros, t[f"{name}.izeros"])


@pytest.mark.parametrize("name", LAYERS)
def test_dequantize_matches_autoawq_exactly(fmt, name):
    layers, t, _ = fmt
    g = layers[name]["group_size"]
    w_t = dequantize_gemm(t[f"{name}.qweight"], t[f"{name}.qzeros"], t[f"{name}.scales"], g)
    assert w_t.dtype == torch.float16
    assert torch.equal(w_t, t[f"{name}.dequant_in_out"])
    assert torch.equal(w_t.t(), t[f"{name}.fake_quant_weight_fp16"])
    # float32 is the exact product; fp16 is that product rounded once
    exact = dequantize_gemm(
        t[f"{name}.qweight"], t[f"{name}.qzeros"], t[f"{name}.scales"], g, torch.float32
    )
    assert torch.equal(exact.half(), w_t)


@pytest.mark.parametrize("name", FLOAT_LAYERS)
def test_quantize_fp16_reproduces_autoawq_codes(fmt, name):
    layers, t, _ = fmt
    g = layers[name]["group_size"]
    codes, zeros, scales = quantize_tensor(t[f"{name}.weight_fp32"], g)
    assert torch.equal(codes.t(), t[f"{name}.iweight_in_out"])
    assert torch.equal(zeros.t(), t[f"{name}.izeros"])
    assert torch.equal(scales.t(), t[f"{name}.scales"])


@pytest.mark.parametrize("name", FLOAT_LAYERS)
def test_quantize_fp32_matches_autoawq_fp32_path(fmt, name):
    """In float32 arithmetic the quantizer gives AutoAWQ's fp32-path scales and zeros, and its codes
    differ from the packed (fp16-path) ones in the few places format_meta.json counts."""
    layers, t, _ = fmt
    g = layers[name]["group_size"]
    codes, zeros, scales = quantize_tensor(t[f"{name}.weight_fp32"], g, compute_dtype=torch.float32)
    ref_scales = t[f"{name}.fp32path.scales"]
    assert torch.equal(zeros.float(), t[f"{name}.fp32path.zeros"])
    assert torch.equal(scales, ref_scales.half())
    checks = layers[name]["checks"]
    assert (codes.t() != t[f"{name}.iweight_in_out"]).sum() == checks[
        "fp32path_vs_fp16path_code_mismatches"
    ]
    assert (zeros.t() != t[f"{name}.izeros"]).sum() == checks[
        "fp32path_vs_fp16path_zero_mismatches"
    ]


def _numpy_symmetric(w: np.ndarray, g: int):
    """Independent float64 reference of the symmetric quantizer: q in [-8, 7], w ~ q * scale."""
    n, k = w.shape
    wg = w.reshape(n, k // g, g)
    scale = np.maximum(np.abs(wg).max(-1, keepdims=True), 1e-5) / 7
    q = np.clip(np.round(wg / scale), -8, 7)  # np.round is half to even
    return q.reshape(n, k), scale[..., 0]


def test_symmetric_quantizer_against_float64_reference():
    w = torch.randn(48, 256, generator=torch.Generator().manual_seed(3))
    codes, zeros, scales = quantize_tensor(w, 64, zero_point=False, compute_dtype=torch.float32)
    q, scale = _numpy_symmetric(w.double().numpy(), 64)
    assert torch.all(zeros == 8)
    assert np.array_equal(codes.numpy().astype(np.int64) - 8, q.astype(np.int64))
    np.testing.assert_allclose(scales.float().numpy(), scale, rtol=2**-10)
    # stored in the GEMM layout with zero 8: dequantize gives q * scale
    qw, qz, sc = pack_gemm(codes.t(), zeros.t(), scales.t())
    w_t = dequantize_gemm(qw, qz, sc, 64, torch.float32)
    ref = q * np.repeat(scales.double().numpy(), 64, axis=1)
    np.testing.assert_allclose(w_t.t().double().numpy(), ref, rtol=1e-6, atol=0)


@pytest.mark.parametrize("name", LAYERS)
def test_gemv_checkpoint_decodes_to_the_same_codes(fmt, name):
    layers, t, v = fmt
    g = layers[name]["group_size"]
    codes, zeros, scales = unpack_gemv(
        v[f"{name}.qweight"], v[f"{name}.qzeros"], v[f"{name}.scales"], g
    )
    assert torch.equal(codes, t[f"{name}.iweight_in_out"])
    assert torch.equal(zeros, t[f"{name}.izeros"])
    assert torch.equal(scales, t[f"{name}.scales"])


@pytest.mark.parametrize("name", FLOAT_LAYERS)
def test_from_linear_packs_like_autoawq(fmt, name):
    layers, t, _ = fmt
    info = layers[name]
    lin = nn.Linear(info["in_features"], info["out_features"], bias=info["bias"])
    with torch.no_grad():
        lin.weight.copy_(t[f"{name}.weight_fp32"])
        if info["bias"]:
            lin.bias.copy_(t[f"{name}.bias_fp32"])
    q = W4A16Linear.from_linear(lin, info["group_size"])
    assert torch.equal(q.qweight, t[f"{name}.qweight"])
    assert torch.equal(q.qzeros, t[f"{name}.qzeros"])
    assert torch.equal(q.scales, t[f"{name}.scales"])
    if info["bias"]:
        assert torch.equal(q.bias, t[f"{name}.bias"])
    # codes re-derived from given scales / zeros (AutoAWQ's from_linear signature) agree too
    _, zeros, scales = quantize_tensor(lin.weight, info["group_size"])
    q2 = W4A16Linear.from_linear(lin, info["group_size"], scales=scales, zeros=zeros)
    assert torch.equal(q2.qweight, t[f"{name}.qweight"])


@pytest.mark.parametrize("name", LAYERS)
def test_forward_matches_autoawq_and_float64(fmt, name, monkeypatch):
    layers, t, _ = fmt
    info = layers[name]
    q = W4A16Linear(info["in_features"], info["out_features"], info["group_size"], info["bias"])
    q.qweight.copy_(t[f"{name}.qweight"])
    q.qzeros.copy_(t[f"{name}.qzeros"])
    q.scales.copy_(t[f"{name}.scales"])
    if info["bias"]:
        q.bias.copy_(t[f"{name}.bias"])
    calls = []
    for op in ("w4a16_linear", "w4a16_linear_packed"):
        real = getattr(awq.kernels, op)
        monkeypatch.setattr(
            awq.kernels, op, lambda *a, op=op, real=real: calls.append(op) or real(*a)
        )
    x = t[f"{name}.x"]
    y = q(x)
    # one op per call: the packed CPU GEMV below the BLAS rows (group_size % 32 == 0), else
    # w4a16_linear
    rows = x.numel() // x.shape[-1]
    packed = info["group_size"] % 32 == 0 and rows <= awq.kernels.w4a16_cpu_packed_max_rows(x)
    assert calls == ["w4a16_linear_packed" if packed else "w4a16_linear"], calls
    assert y.dtype == torch.float16 and y.shape == t[f"{name}.y_gemm_forward"].shape
    ref = x.double() @ t[f"{name}.dequant_in_out"].double()
    if info["bias"]:
        ref = ref + t[f"{name}.bias"].double()
    scale = ref.abs().max().item()
    # ours: exact dequant, fp32 sums, one fp16 rounding of the output; AutoAWQ: fp16 weights,
    # fp16 matmul. Both sit within a few fp16 ulps of the float64 result.
    assert (y.double() - ref).abs().max().item() <= 2 * 2**-11 * scale
    assert (
        y.double() - t[f"{name}.y_gemm_forward"].double()
    ).abs().max().item() <= 4 * 2**-11 * scale


def test_pack_rejects_bad_input():
    with pytest.raises(ValueError, match="multiple of 8"):
        pack_gemm(torch.zeros(128, 12, dtype=torch.uint8), torch.zeros(1, 12), torch.ones(1, 12))
    with pytest.raises(ValueError, match="0..15"):
        pack_gemm(torch.full((128, 8), 16), torch.zeros(1, 8, dtype=torch.int64), torch.ones(1, 8))
    with pytest.raises(ValueError, match="group_size=128"):
        W4A16Linear(100, 64, 128)


def test_awq_config_reads_both_config_styles():
    hf = {
        "bits": 4,
        "group_size": 128,
        "modules_to_not_convert": None,
        "quant_method": "awq",
        "version": "gemm",
        "zero_point": True,
    }
    cfg = AWQConfig.from_hf(hf)
    assert cfg == AWQConfig()
    assert cfg.to_hf() == hf
    old = {"w_bit": 4, "q_group_size": 64, "zero_point": True, "version": "GEMM"}
    assert AWQConfig.from_hf(old) == AWQConfig(group_size=64)
    with pytest.raises(ConfigError, match="bits=8"):
        AWQConfig.from_hf({**hf, "bits": 8})
    with pytest.raises(ConfigError, match="unknown keys"):
        AWQConfig.from_hf({**hf, "sym": True})
    with pytest.raises(ConfigError, match="gptq"):
        AWQConfig.from_hf({**hf, "quant_method": "gptq"})
    with pytest.raises(ConfigError, match="marlin"):
        AWQConfig.from_hf({**hf, "version": "marlin"})


def test_replace_linears_keeps_lm_head_and_skipped_modules_float():
    cfg = LlamaConfig(
        vocab_size=64,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    with torch.device("meta"):
        llm = LlamaForCausalLM(cfg)
    replace_linears_with_w4a16(llm, AWQConfig(modules_to_not_convert=["layers.1.mlp"]))
    quantized = {n for n, m in llm.named_modules() if isinstance(m, W4A16Linear)}
    assert len(quantized) == 7 + 4
    assert "model.layers.0.self_attn.k_proj" in quantized
    assert isinstance(llm.model.layers[1].mlp.down_proj, nn.Linear)
    assert isinstance(llm.lm_head, nn.Linear)
    k = llm.model.layers[0].self_attn.k_proj
    assert k.qweight.is_meta and tuple(k.qweight.shape) == (128, 64 // 8)
    assert tuple(k.scales.shape) == (1, 64) and k.scales.dtype == torch.float16
