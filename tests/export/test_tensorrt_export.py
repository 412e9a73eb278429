"""``export --target tensorrt``: graphs TensorRT 10.3's ONNX parser would take (checked by our lint,
not by TensorRT, which cannot be installed here), a manifest with plugins and shape profiles, a
build_engines.sh that calls trtexec once per graph, and the same bundle on the onnxruntime backend
giving the same RVQ codes, greedy tokens and greedy CFG image codes as the torch backend and the
official references (float: the tiny fixture; AWQ INT4: AutoAWQ's tiny LLaMA).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime_extensions", reason="the [onnx] extra is not installed")

import onnx
from onnx import TensorProto, helper
from vilau_export.checkpoint_writer import write_checkpoint
from vilau_export.onnx.export import export_bundle
from vilau_export.onnx.ops import register_onnx_schemas
from vilau_export.onnx.tensorrt_lint import CREATORS, lint

from vilau_rt.backends import TorchBackend
from vilau_rt.backends.onnxruntime_backend import OnnxRuntimeBackend
from vilau_rt.generate import (
    ImageSettings,
    TextSettings,
    generate_codes,
    generate_text,
    splice_images,
)
from vilau_rt.model.checkpoint import load_vilau
from vilau_rt.model.config import preset
from vilau_rt.model.llama import LlamaConfig

REPO_ROOT = Path(__file__).resolve().parents[2]
GRAPHS = ("vision", "pixel_decoder", "llm_prefill", "llm_decode", "lm_head", "depth_decode")


def siglip(root):
    return root / "reference" / "siglip_config"


def ref(root, name):
    return torch.from_numpy(np.load(root / "reference" / name))


@pytest.fixture(scope="module")
def trt_bundle(tiny_fixture, tmp_path_factory):
    out = tmp_path_factory.mktemp("trt") / "bundle"
    return export_bundle(tiny_fixture, out, siglip_config=siglip(tiny_fixture), target="tensorrt")


@pytest.fixture(scope="module")
def awq_ckpt(awq_fixture, tmp_path_factory):
    """A VILA-U checkpoint whose llm/ is AutoAWQ's own quantized folder (as test_onnx_awq.py)."""
    q = awq_fixture / "quantized"
    llm = LlamaConfig.from_hf(json.loads((q / "config.json").read_text()))
    cfg = preset("tiny-256")
    cfg = replace(cfg, llm=llm, projector=replace(cfg.projector, out_features=llm.hidden_size),
                  depth=replace(cfg.depth, llm_dim=llm.hidden_size))  # fmt: skip
    root = write_checkpoint(cfg, tmp_path_factory.mktemp("trt-awq") / "ck")
    for f in ("config.json", "model.safetensors", "generation_config.json"):
        shutil.copy2(q / f, root / "llm" / f)
    return root


@pytest.fixture(scope="module")
def awq_bundle(awq_ckpt):
    return export_bundle(awq_ckpt, awq_ckpt.parent / "bundle", quant="awq-int4", target="tensorrt")


@pytest.fixture(scope="module")
def awq_fp16_bundle(awq_ckpt):
    """What a Jetson user exports: --quant awq-int4 --precision fp16 --target tensorrt."""
    out = awq_ckpt.parent / "bundle-fp16"
    return export_bundle(awq_ckpt, out, quant="awq-int4", precision="fp16", target="tensorrt")


def _protos(root: Path):
    manifest = json.loads((root / "manifest.json").read_text())
    for graph, entry in manifest["graphs"].items():
        yield graph, onnx.load(str(root / entry["file"]), load_external_data=False)


# ---------------------------------------------------------------------------- the graphs


@pytest.mark.parametrize("which", ["trt_bundle", "awq_bundle", "awq_fp16_bundle"])
def test_every_graph_passes_the_parser_lint_and_the_onnx_checker(which, request):
    root = request.getfixturevalue(which)
    register_onnx_schemas()
    seen = set()
    for graph, proto in _protos(root):
        assert lint(proto) == [], graph
        assert {o.domain: o.version for o in proto.opset_import}[""] == 20
        onnx.checker.check_model(str(root / f"{graph}.onnx"), full_check=True)
        for node in proto.graph.node:
            seen.add(node.op_type)
            assert node.op_type not in ("TensorScatter", "MatMulNBits"), graph
            if node.domain == "vilau":
                attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
                assert attrs["plugin_version"] == b"1" and attrs["plugin_namespace"] == b""
                assert set(attrs) == {*CREATORS[node.op_type], "plugin_version", "plugin_namespace"}
            if node.op_type == "W4A16Gemm":  # AutoAWQ's group size, its GEMM buffers as they are
                assert graph.startswith("llm_") and attrs["group_size"] == 128
    assert "ScatterElements" in seen
    assert ("W4A16Gemm" in seen) == (which != "trt_bundle")


def _model(nodes, opset=20, domains=(("vilau", 1),)):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )  # fmt: skip
    imports = [helper.make_opsetid("", opset), *(helper.make_opsetid(d, v) for d, v in domains)]
    return helper.make_model(graph, opset_imports=imports)


def test_lint_reports_what_the_parser_would_reject():
    plugin = {"plugin_version": "1", "plugin_namespace": ""}
    assert lint(_model([helper.make_node("Relu", ["x"], ["y"])])) == []
    ok = helper.make_node("W4A16Gemm", ["x"], ["y"], domain="vilau", group_size=32, **plugin)
    assert lint(_model([ok])) == []
    cases = {
        "default-domain opset 24": _model([helper.make_node("Relu", ["x"], ["y"])], opset=24),
        "not in the opset-20 standard set": _model(
            [helper.make_node("TensorScatter", ["x", "x", "x"], ["y"])]
        ),
        "the parser has no importer": _model([helper.make_node("Unique", ["x"], ["y"])]),
        "axes must be an initializer": _model([helper.make_node("ReduceMean", ["x", "x"], ["y"])]),
        "Resize mode 'cubic'": _model(
            [helper.make_node("Resize", ["x", "", "x"], ["y"], mode="cubic")]
        ),
        "domain 'com.microsoft' has no importer": _model(
            [helper.make_node("MatMulNBits", ["x"], ["y"], domain="com.microsoft")],
            domains=(("com.microsoft", 1),),
        ),
        "no plugin creator named 'Attention'": _model(
            [helper.make_node("Attention", ["x"], ["y"], domain="vilau", **plugin)]
        ),
        "field 'group_size' missing": _model(
            [helper.make_node("W4A16Gemm", ["x"], ["y"], domain="vilau", **plugin)]
        ),
        "not an INT attribute": _model(
            [helper.make_node("W4A16Gemm", ["x"], ["y"], domain="vilau", group_size=32.0, **plugin)]
        ),
        "'bits' is not a field": _model(
            [
                helper.make_node(
                    "W4A16Gemm", ["x"], ["y"], domain="vilau", group_size=32, bits=4, **plugin
                )
            ]
        ),
        "plugin_version is '2'": _model(
            [
                helper.make_node(
                    "RVQLookup",
                    ["x"],
                    ["y"],
                    domain="vilau",
                    plugin_version="2",
                    plugin_namespace="",
                )
            ]
        ),
        "plugin_namespace missing": _model(
            [helper.make_node("RVQLookup", ["x"], ["y"], domain="vilau", plugin_version="1")]
        ),
    }
    for want, model in cases.items():
        problems = lint(model)
        assert any(want in p for p in problems), (want, problems)


def test_creator_table_matches_the_plugin_library_sources():
    # csrc/trt/plugins/*.h declare each creator's kName and field_names()
    found = {}
    for header in sorted((REPO_ROOT / "csrc" / "trt" / "plugins").glob("*.h")):
        text = header.read_text()
        name = re.search(r'kName\s*=\s*"(\w+)"', text)
        fields = re.search(r"field_names\(\)\s*\{\s*return\s*\{([^}]*)\}", text)
        assert name and fields, header
        found[name.group(1)] = tuple(re.findall(r'"(\w+)"', fields.group(1)))
    assert found == CREATORS
    common = (REPO_ROOT / "csrc" / "trt" / "plugin_common.h").read_text()
    assert 'kPluginVersion = "1"' in common and 'kPluginNamespace = ""' in common


# ---------------------------------------------------------------------------- manifest and script


def test_manifest_lists_the_plugins_used_and_a_profile_for_every_dynamic_input(
    trt_bundle, awq_bundle
):
    for root, creators in ((trt_bundle, {"RVQEncode", "RVQLookup", "DepthDecode"}),
                           (awq_bundle, {"RVQEncode", "RVQLookup", "DepthDecode", "W4A16Gemm"})):  # fmt: skip
        m = json.loads((root / "manifest.json").read_text())
        assert m["target"] == "tensorrt" and m["opset"] == 20
        t = m["tensorrt"]
        assert t["plugins"]["library"] == "libvilau_trt_plugins.so"
        assert (t["plugins"]["version"], t["plugins"]["namespace"]) == ("1", "")
        assert t["plugins"]["creators"] == {c: list(CREATORS[c]) for c in sorted(creators)}
        assert set(t["profiles"]) == set(GRAPHS) and t["build_script"] == "build_engines.sh"
        ctx = m["config"]["llm"]["max_position_embeddings"]
        for graph, entry in m["graphs"].items():
            dynamic = {i["name"] for i in entry["inputs"] if any(isinstance(d, str)
                                                                 for d in i["shape"])}  # fmt: skip
            assert set(t["profiles"][graph]) == dynamic, graph
            for name, p in t["profiles"][graph].items():
                assert all(a <= b <= c for a, b, c in zip(p["min"], p["opt"], p["max"])), name
        llm = t["profiles"]["llm_decode"]
        assert llm["inputs_embeds"]["max"][:2] == [t["max_batch"], 1]  # one position a step
        assert llm["inputs_embeds"]["opt"][0] == 2  # the CFG pair of image generation
        assert llm["past_key_0"]["max"][2] == llm["key_valid"]["max"][1] >= min(ctx, 256)
        assert t["profiles"]["llm_prefill"]["inputs_embeds"]["min"][:2] == [1, 1]


@pytest.mark.parametrize("which", ["trt_bundle", "awq_fp16_bundle"])
def test_build_script_calls_trtexec_once_per_graph_with_the_manifest_profiles(
    which, request, tmp_path
):
    root = request.getfixturevalue(which)
    m = json.loads((root / "manifest.json").read_text())
    log = tmp_path / "calls"
    fake = tmp_path / "trtexec"
    fake.write_text(f'#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done >> {log}\n'
                    f'echo END >> {log}\n')  # fmt: skip
    fake.chmod(0o755)
    plugins = tmp_path / "libvilau_trt_plugins.so"
    plugins.write_bytes(b"")
    # the default library path comes from `python -c ... plugin_library()`, which falls back on
    # VILAU_RT_TRT_PLUGINS here (no library was built into this checkout's package)
    env = {**os.environ, "TRTEXEC": str(fake), "ENGINES": str(tmp_path / "plans"),
           "PYTHON": sys.executable, "VILAU_RT_TRT_PLUGINS": str(plugins)}  # fmt: skip
    subprocess.run(["sh", str(root / "build_engines.sh")], env=env, check=True, timeout=60)
    calls = [c.strip().splitlines() for c in log.read_text().split("END") if c.strip()]
    assert len(calls) == len(GRAPHS)
    for graph, args in zip(m["graphs"], calls, strict=True):
        flags = dict(a.split("=", 1) for a in args if "=" in a)
        assert flags["--onnx"] == f"{graph}.onnx"
        assert flags["--saveEngine"] == f"{tmp_path / 'plans'}/{graph}.plan"
        assert flags["--dynamicPlugins"] == flags["--setPluginsToSerialize"] == str(plugins)
        assert ("--fp16" in args) == (m["precision"] == "fp16") != ("--noTF32" in args)
        profile = m["tensorrt"]["profiles"][graph]
        for flag, key in (("--minShapes", "min"), ("--optShapes", "opt"), ("--maxShapes", "max")):
            want = {n: "x".join(map(str, p[key])) for n, p in profile.items()}
            got = dict(s.split(":") for s in flags[flag].split(","))
            assert got == want, (graph, flag)
    assert (tmp_path / "plans").is_dir()


# ---------------------------------------------------------------------------- onnxruntime parity


@pytest.fixture(scope="module")
def trt_on_ort(trt_bundle):
    return OnnxRuntimeBackend(trt_bundle)


@pytest.fixture(scope="module")
def torch_backend(tiny_fixture):
    return TorchBackend(load_vilau(tiny_fixture, siglip_config=siglip(tiny_fixture)))


def test_float_bundle_on_onnxruntime_gives_the_reference_codes_tokens_and_image_codes(
    trt_on_ort, torch_backend, tiny_fixture
):
    px = ref(tiny_fixture, "pixel_values.npy")
    codes, embeds = trt_on_ort.encode_images(px)
    assert torch.equal(codes, ref(tiny_fixture, "codes.npy"))
    assert torch.equal(codes, torch_backend.encode_images(px)[0])
    # greedy text on the official understanding prompt
    ids = ref(tiny_fixture, "und_input_ids.npy")[0].tolist()
    settings = TextSettings(max_new_tokens=12)
    tokens = list(generate_text(trt_on_ort, splice_images(trt_on_ort, ids, [embeds[0]]),
                                settings, eos_id=2))  # fmt: skip
    t_embeds = torch_backend.encode_images(px[:1])[1]
    want = list(generate_text(torch_backend, splice_images(torch_backend, ids, [t_embeds[0]]),
                              settings, eos_id=2))  # fmt: skip
    assert tokens == want == ref(tiny_fixture, "und_greedy_ids.npy")[0, 1:].tolist()
    # greedy image codes with CFG (batch 2: conditional and unconditional rows, left-padded)
    gen_ids, mask = (
        ref(tiny_fixture, "gen_input_ids.npy"),
        ref(tiny_fixture, "gen_attention_mask.npy"),
    )
    pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    image = ImageSettings(cfg_scale=3.0, top_k=1)
    got = generate_codes(trt_on_ort, gen_ids, mask, pos, 16, image)
    assert torch.equal(got, generate_codes(torch_backend, gen_ids, mask, pos, 16, image))
    assert torch.equal(got.view(4, 4, 4), ref(tiny_fixture, "gen_codes.npy"))


def test_scatter_kv_writes_land_in_the_bound_cache_buffers(trt_on_ort):
    trt_on_ort.setup_cache(1, 8)
    cache = trt_on_ort._cache
    before = {k: v.ctypes.data for k, v in cache.buffers.items()}
    embeds = trt_on_ort.embed_tokens(torch.tensor([[1, 5, 9]]))
    trt_on_ort.forward(embeds, torch.arange(3)[None], 0)
    trt_on_ort.forward(embeds[:, :1], torch.tensor([[3]]), 3)
    for name, buf in cache.buffers.items():
        assert buf.ctypes.data == before[name]
        assert np.abs(buf[:, :, :4]).sum(axis=(0, 1, 3)).all()  # slots 0..3 written
        assert not buf[:, :, 4:].any()  # untouched slots


def test_awq_bundle_on_onnxruntime_gives_the_torch_tokens_and_image_codes(awq_ckpt, awq_bundle):
    from vilau_rt import Pipeline

    torch_pipe = Pipeline.from_pretrained(awq_ckpt, device="cpu")
    ort_pipe = Pipeline.from_pretrained(awq_bundle, backend="onnxruntime")
    img = np.full((32, 32, 3), 100, np.uint8)
    ids = [p.generate("What is this?", images=[img], max_new_tokens=12).token_ids
           for p in (torch_pipe, ort_pipe)]  # fmt: skip
    assert ids[0] == ids[1]
    codes = [p.generate_image_codes("a dog", top_k=1, seed=0) for p in (torch_pipe, ort_pipe)]
    assert np.array_equal(codes[0], codes[1])


def test_export_cli_takes_target_and_keeps_onnxruntime_as_default():
    import argparse

    from vilau_export.cli import add_export_parser

    parser = argparse.ArgumentParser()
    add_export_parser(parser.add_subparsers())
    args = parser.parse_args(["export", "ck", "out"])
    assert (args.target, args.max_batch) == ("onnxruntime", 2)
    args = parser.parse_args(["export", "ck", "out", "--target", "tensorrt", "--quant",
                              "awq-int4", "--precision", "fp16"])  # fmt: skip
    assert (args.target, args.quant, args.precision) == ("tensorrt", "awq-int4", "fp16")


def test_fp16_awq_bundle_runs_on_onnxruntime(awq_ckpt, awq_fp16_bundle):
    # W4A16Gemm's float16 scales reach the Python op through the Casts float_w4a16_gemm adds
    from vilau_rt import Pipeline

    img = np.full((32, 32, 3), 100, np.uint8)
    ids = [
        p.generate("What is this?", images=[img], max_new_tokens=12).token_ids
        for p in (Pipeline.from_pretrained(awq_ckpt, device="cpu"),
                  Pipeline.from_pretrained(awq_fp16_bundle, backend="onnxruntime"))
    ]  # fmt: skip
    assert ids[0] == ids[1]  # fp16 activations, same greedy tokens on this tiny model
