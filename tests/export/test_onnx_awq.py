"""AWQ INT4 checkpoints exported with --quant awq-int4: W4A16 linears as MatMulNBits nodes."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

pytest.importorskip("onnxruntime_extensions", reason="the [onnx] extra is not installed")

from vilau_export.checkpoint_writer import write_checkpoint
from vilau_export.onnx.export import export_bundle
from vilau_export.onnx.matmul_nbits import MatMulNBitsLinear

from vilau_rt.errors import ConfigError
from vilau_rt.model.awq import W4A16Linear, load_awq_llm
from vilau_rt.model.config import preset
from vilau_rt.model.llama import LlamaConfig


@pytest.fixture(scope="module")
def awq_ckpt(awq_fixture, tmp_path_factory):
    """A VILA-U checkpoint whose llm/ is AutoAWQ's own quantized folder."""
    q = awq_fixture / "quantized"
    llm = LlamaConfig.from_hf(json.loads((q / "config.json").read_text()))
    cfg = preset("tiny-256")
    cfg = replace(cfg, llm=llm, projector=replace(cfg.projector, out_features=llm.hidden_size),
                  depth=replace(cfg.depth, llm_dim=llm.hidden_size))  # fmt: skip
    root = write_checkpoint(cfg, tmp_path_factory.mktemp("oa") / "ck")
    for f in ("config.json", "model.safetensors", "generation_config.json"):
        shutil.copy2(q / f, root / "llm" / f)
    return root


def test_repacked_linear_computes_the_unrounded_awq_weight(awq_fixture):
    llm = load_awq_llm(awq_fixture / "quantized", torch.float32)
    lin = llm.model.layers[0].mlp.down_proj
    assert isinstance(lin, W4A16Linear)
    nbits = MatMulNBitsLinear(lin, torch.float32)
    x = torch.randn(3, lin.in_features, generator=torch.Generator().manual_seed(0))
    # float64 reference straight from the AutoAWQ buffers, without the fp16 rounding
    from vilau_rt.model.awq_format import unpack_gemm

    codes, zeros = unpack_gemm(lin.qweight, lin.qzeros)
    g = lin.group_size
    w_t = (
        codes.double() - zeros.double().repeat_interleave(g, 0)
    ) * lin.scales.double().repeat_interleave(g, 0)
    torch.testing.assert_close(nbits(x).double(), x.double() @ w_t, rtol=1e-5, atol=1e-5)
    ours = lin(x)
    assert float((nbits(x) - ours).abs().max() / ours.abs().max()) < 2e-3


def test_awq_bundle_runs_in_onnxruntime_close_to_the_reference(awq_ckpt, awq_fixture, tmp_path):
    import onnx

    from vilau_rt.backends.onnxruntime_backend import OnnxRuntimeBackend

    out = export_bundle(awq_ckpt, tmp_path / "bundle", quant="awq-int4")
    for graph in sorted(out.glob("*.onnx")):
        onnx.checker.check_model(str(graph), full_check=True)
    proto = onnx.load(out / "llm_decode.onnx", load_external_data=False)
    ops = {(n.domain, n.op_type) for n in proto.graph.node}
    assert ("com.microsoft", "MatMulNBits") in ops
    assert json.loads((out / "manifest.json").read_text())["quantization"] == "awq-int4"
    ort = OnnxRuntimeBackend(out)
    ref = load_file(awq_fixture / "reference_logits.safetensors")
    for i in (0, 1):
        ids = ref[f"input_ids.{i}"][None]
        ort.setup_cache(1, ids.shape[1])
        hidden = ort.forward(ort.embed_tokens(ids), torch.arange(ids.shape[1])[None], 0)
        got = torch.as_tensor(np.asarray(ort.logits(hidden[0])))
        want = ref[f"logits.awq_dequant_fp32.{i}"]
        # MatMulNBits dequantizes without AutoAWQ's fp16 rounding of each weight: ~1e-3
        assert float((got - want).abs().max() / want.abs().max()) < 5e-3
    # end to end, greedy: the same tokens and image codes as the torch backend's W4A16 layers
    from vilau_rt import Pipeline

    torch_pipe = Pipeline.from_pretrained(awq_ckpt, device="cpu")
    ort_pipe = Pipeline.from_pretrained(out, backend="onnxruntime")
    # a checkpoint path exports on first use, with --quant chosen from the checkpoint
    direct = Pipeline.from_pretrained(awq_ckpt, backend="onnxruntime", cache_dir=tmp_path / "c")
    assert direct.backend.manifest["quantization"] == "awq-int4"
    img = np.full((32, 32, 3), 100, np.uint8)
    ids = [p.generate("What is this?", images=[img], max_new_tokens=12).token_ids
           for p in (torch_pipe, ort_pipe)]  # fmt: skip
    assert ids[0] == ids[1]
    codes = [p.generate_image_codes("a dog", top_k=1, seed=0) for p in (torch_pipe, ort_pipe)]
    assert np.array_equal(codes[0], codes[1])


def test_quant_option_must_match_the_checkpoint(awq_ckpt, tmp_path):
    with pytest.raises(ConfigError, match="--quant awq-int4"):
        export_bundle(awq_ckpt, tmp_path / "b1", quant="none")
    float_ckpt = write_checkpoint(preset("tiny-256"), tmp_path / "float")
    with pytest.raises(ConfigError, match="quantize it first"):
        export_bundle(float_ckpt, tmp_path / "b2", quant="awq-int4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["float"]
