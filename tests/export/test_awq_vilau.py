"""AWQ INT4 inside a VILA-U checkpoint: AutoAWQ's own llm/ folder loads through the Pipeline,
and `vilau-rt quantize` writes a checkpoint that loads and is close to its float original."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from vilau_export.checkpoint_writer import write_checkpoint

from vilau_rt import Pipeline
from vilau_rt.model.awq import W4A16Linear
from vilau_rt.model.config import preset
from vilau_rt.model.llama import LlamaConfig


def vilau_config_with_llm(llm: LlamaConfig):
    """The tiny preset around another LLM (projector and depth transformer resized to it)."""
    cfg = preset("tiny-256")
    return replace(
        cfg,
        llm=llm,
        projector=replace(cfg.projector, out_features=llm.hidden_size),
        depth=replace(cfg.depth, llm_dim=llm.hidden_size),
    )


@pytest.fixture(scope="module")
def autoawq_vilau(awq_fixture, tmp_path_factory):
    """A VILA-U checkpoint whose llm/ is the folder AutoAWQ's save_quantized wrote."""
    q = awq_fixture / "quantized"
    llm = LlamaConfig.from_hf(json.loads((q / "config.json").read_text()))
    root = write_checkpoint(vilau_config_with_llm(llm), tmp_path_factory.mktemp("awq") / "ck")
    for f in ("config.json", "model.safetensors", "generation_config.json"):
        shutil.copy2(q / f, root / "llm" / f)  # the tokenizer written beside it stays
    return root


def test_autoawq_llm_folder_loads_and_matches_reference_logits(autoawq_vilau, awq_fixture):
    pipe = Pipeline.from_pretrained(autoawq_vilau, device="cpu")
    layers = pipe.backend.model.llm.model.layers
    assert isinstance(layers[0].self_attn.q_proj, W4A16Linear)
    ref = load_file(awq_fixture / "reference_logits.safetensors")
    for i in (0, 1):
        got = torch.from_numpy(pipe.logits(ref[f"input_ids.{i}"].tolist()))
        want = ref[f"logits.awq_dequant_fp32.{i}"]
        assert float((got - want).abs().max() / want.abs().max()) < 1e-4


def test_autoawq_checkpoint_generates_text_and_images(autoawq_vilau):
    pipe = Pipeline.from_pretrained(autoawq_vilau, device="cpu")
    res = pipe.generate("What is this?", images=[np.zeros((32, 32, 3), np.uint8)], max_new_tokens=4)
    assert len(res.token_ids) <= 4
    codes = pipe.generate_image_codes("a dog", seed=0, top_k=5)
    assert codes.shape == (1, 4, 4, 4)


def test_old_quant_config_json_folder_loads(autoawq_vilau, tmp_path):
    """Older AutoAWQ folders keep the settings in quant_config.json, not config.json."""
    root = tmp_path / "old"
    shutil.copytree(autoawq_vilau, root)
    cfg_path = root / "llm" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    q = cfg.pop("quantization_config")
    cfg_path.write_text(json.dumps(cfg))
    old = {"w_bit": q["bits"], "q_group_size": q["group_size"], "zero_point": q["zero_point"],
           "version": "GEMM"}  # fmt: skip
    (root / "llm" / "quant_config.json").write_text(json.dumps(old))
    pipe = Pipeline.from_pretrained(root, device="cpu")
    assert isinstance(pipe.backend.model.llm.model.layers[1].mlp.down_proj, W4A16Linear)


def test_quantize_cli_writes_a_loadable_checkpoint_close_to_the_float_one(tmp_path):
    from vilau_export.quantize.awq_search import AWQSearchConfig
    from vilau_export.quantize.quantize_checkpoint import compare_llms, quantize_checkpoint

    llm = LlamaConfig(516, 128, 256, 2, 4, 4, 256, rms_norm_eps=1e-5)
    src = write_checkpoint(vilau_config_with_llm(llm), tmp_path / "float", seed=2)
    out = quantize_checkpoint(
        src, tmp_path / "int4", group_size=64, search=AWQSearchConfig(seq_len=128, max_samples=64)
    )
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())
    qcfg = json.loads((out / "llm" / "config.json").read_text())["quantization_config"]
    assert qcfg["quant_method"] == "awq" and qcfg["group_size"] == 64
    assert (out / "llm" / "tokenizer.model").is_file()
    for part in ("vision_tower/model.safetensors", "mm_projector/model.safetensors"):
        assert (out / part).read_bytes() == (src / part).read_bytes()
    report = compare_llms(src / "llm", out / "llm")
    assert 0 <= report["mean_kl"] < 0.05 and 0.9 < report["perplexity_ratio"] < 1.1
    pipe = Pipeline.from_pretrained(out, device="cpu")
    assert pipe.generate("Hello", max_new_tokens=2).token_ids is not None


def test_image_conditioned_calibration_blocks_hold_projected_image_rows(tmp_path):
    from vilau_export.quantize.calibration import calibration_images, image_conditioned_blocks

    src = write_checkpoint(preset("tiny-256"), tmp_path / "float")
    pics = calibration_images(3)
    blocks = image_conditioned_blocks(src, ["Describe the picture."], 64, 3, pics)
    assert blocks.shape[1:] == (64, 96) and blocks.shape[0] >= 1
    pipe = Pipeline.from_pretrained(src, device="cpu")
    image_rows = pipe.image_embeddings(pics[:1])[0]  # [16, 96]
    flat = blocks.reshape(-1, 96)
    # the first prompt's 16 image positions appear, in order, in the calibration stream (a
    # picture with repeated patches has equal rows, so a row alone does not fix the start)
    n = len(image_rows)
    starts = [
        s for s in range(flat.shape[0] - n + 1)
        if float((flat[s : s + n] - image_rows).abs().max()) < 1e-6
    ]  # fmt: skip
    assert starts, "the image rows do not appear in order in the calibration blocks"


def test_interrupted_quantize_leaves_nothing(tmp_path, monkeypatch):
    from vilau_export.quantize import quantize_checkpoint as qc

    llm = LlamaConfig(516, 128, 256, 1, 4, 4, 256, rms_norm_eps=1e-5)
    src = write_checkpoint(vilau_config_with_llm(llm), tmp_path / "float")

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(qc, "quantize_llm_folder", boom)
    with pytest.raises(KeyboardInterrupt):
        qc.quantize_checkpoint(src, tmp_path / "int4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["float"]
