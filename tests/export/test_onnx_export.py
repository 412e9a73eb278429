"""ONNX export of the official tiny fixture: every graph passes the ONNX checker and matches the
torch reference (and the official outputs) within 1e-4 when run by ONNX Runtime; an
interrupted export leaves nothing behind.

The bundle is exported once per test session into a cache under pytest's base temp folder
(through ``load_bundle_or_export``, which test_onnxruntime_backend.py shares).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime_extensions")
pytest.importorskip("onnxscript")

import onnx
import onnxruntime as ort
from vilau_export.onnx import export as onnx_export
from vilau_export.onnx.ops import register_onnx_schemas

from vilau_rt.backends.onnxruntime_backend import load_bundle_or_export
from vilau_rt.errors import ConfigError
from vilau_rt.model import bundle
from vilau_rt.model.checkpoint import load_vilau
from vilau_rt.model.config import read_config
from vilau_rt.ops.onnxruntime import session_options


def siglip(root):
    return root / "reference" / "siglip_config"


def ref(root, name):
    return np.load(root / "reference" / name)


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def bundle_dir(tiny_fixture, tmp_path_factory):
    cache = tmp_path_factory.getbasetemp() / "vilau-rt-cache"
    return load_bundle_or_export(tiny_fixture, cache, siglip_config=siglip(tiny_fixture)).root


@pytest.fixture(scope="module")
def model(tiny_fixture):
    return load_vilau(tiny_fixture, siglip_config=siglip(tiny_fixture))


@pytest.fixture(scope="module")
def sessions(bundle_dir):
    opts = session_options()
    return {
        g: ort.InferenceSession(
            str(bundle_dir / f"{g}.onnx"), opts, providers=["CPUExecutionProvider"]
        )
        for g in bundle.GRAPHS
    }


def test_every_graph_passes_the_full_onnx_check(bundle_dir):
    register_onnx_schemas()  # type-checks the vilau nodes too
    for graph in bundle.GRAPHS:
        onnx.checker.check_model(str(bundle_dir / f"{graph}.onnx"), full_check=True)


def test_custom_ops_are_vilau_domain_nodes(bundle_dir):
    def ops(graph):
        m = onnx.load(str(bundle_dir / f"{graph}.onnx"), load_external_data=False)
        return {(n.domain, n.op_type) for n in m.graph.node}

    assert ("vilau", "RVQEncode") in ops("vision")
    assert ("vilau", "RVQLookup") in ops("pixel_decoder")
    assert {("vilau", "DepthDecode"), ("vilau", "RVQLookup")} <= ops("depth_decode")
    for graph in ("llm_prefill", "llm_decode"):
        assert ("", "TensorScatter") in ops(graph)


def test_manifest_rebuilds_the_config_and_lists_every_file(bundle_dir, tiny_fixture):
    manifest = bundle.read_manifest(bundle_dir)
    assert bundle.config_from_dict(manifest["config"]) == read_config(
        tiny_fixture, siglip(tiny_fixture)
    )
    on_disk = {
        p.relative_to(bundle_dir).as_posix()
        for p in bundle_dir.rglob("*")
        if p.is_file() and p.name != bundle.MANIFEST
    }
    assert set(manifest["files"]) == on_disk
    assert {"tokenizer/tokenizer.model", "tokenizer/added_tokens.json"} <= on_disk
    vision = manifest["graphs"]["vision"]
    assert vision["inputs"] == [
        {"name": "pixel_values", "shape": ["batch", 3, 32, 32], "dtype": "float32"}
    ]
    assert [o["name"] for o in vision["outputs"]] == ["codes", "embeds"]
    assert vision["outputs"][0]["dtype"] == "int64"
    decode = {i["name"]: i for i in manifest["graphs"]["llm_decode"]["inputs"]}
    assert decode["past_key_0"]["shape"] == ["batch", 4, "cache_len", 24]
    assert decode["inputs_embeds"]["shape"] == ["batch", 1, 96]
    prefill = {i["name"]: i for i in manifest["graphs"]["llm_prefill"]["inputs"]}
    assert prefill["inputs_embeds"]["shape"] == ["batch", "seq", 96]


def test_llm_graphs_store_their_weights_once(bundle_dir, model):
    llm_bytes = sum(p.numel() * 4 for n, p in model.llm.named_parameters() if "embed" not in n)
    lm_head = model.llm.lm_head.weight.numel() * 4
    assert (bundle_dir / onnx_export.LLM_WEIGHTS).stat().st_size < llm_bytes - lm_head + 200_000
    for graph in ("llm_prefill", "llm_decode"):
        assert (bundle_dir / f"{graph}.onnx").stat().st_size < 200_000


def test_vision_graph_matches_torch_and_official(sessions, model, tiny_fixture):
    px = ref(tiny_fixture, "pixel_values.npy")
    codes, embeds = sessions["vision"].run(None, {"pixel_values": px})
    t_codes, z_q = model.encode_images(torch.from_numpy(px))
    assert np.array_equal(codes, ref(tiny_fixture, "codes.npy"))
    assert np.array_equal(codes, t_codes.numpy())
    assert rel_err(embeds, model.image_embeddings(z_q)) < 1e-4
    assert rel_err(embeds, ref(tiny_fixture, "mm_projector_out.npy")) < 1e-4


def test_pixel_decoder_graph_matches_torch_and_official(sessions, model, tiny_fixture):
    codes = ref(tiny_fixture, "codes.npy")
    (raw,) = sessions["pixel_decoder"].run(None, {"codes": codes})
    assert np.abs(raw - model.decode_codes(torch.from_numpy(codes)).numpy()).max() < 1e-4
    assert np.abs(raw - ref(tiny_fixture, "decoded_raw.npy")).max() < 1e-4


def _llm_feeds(embeds, rope, write_index, valid, kv):
    feeds = {"inputs_embeds": embeds, "rope_pos": rope, "write_index": write_index}
    feeds["key_valid"] = valid
    for i, (k, v) in enumerate(kv):
        feeds[f"past_key_{i}"], feeds[f"past_value_{i}"] = k, v
    return feeds


@torch.no_grad()
def test_llm_prefill_decode_and_lm_head_match_torch_and_official(sessions, model, tiny_fixture):
    embeds = ref(tiny_fixture, "und_inputs_embeds.npy")  # [1, T, H], the official prefill input
    T, S = embeds.shape[1], embeds.shape[1] + 1
    lc = model.cfg.llm
    kv = [
        (np.zeros((1, lc.num_key_value_heads, S, lc.head_dim), np.float32),) * 2
        for _ in range(lc.num_hidden_layers)
    ]
    valid = np.ones((1, S), bool)
    hidden, *present = sessions["llm_prefill"].run(
        None, _llm_feeds(embeds, np.arange(T)[None], np.zeros(1, np.int64), valid, kv)
    )
    (logits,) = sessions["lm_head"].run(None, {"hidden": hidden[0]})
    assert rel_err(logits, ref(tiny_fixture, "und_prefill_logits.npy")[0]) < 1e-4

    model.llm.setup_cache(1, S)
    t_hidden = model.llm(torch.from_numpy(embeds), torch.arange(T)[None], 0)
    assert rel_err(hidden, t_hidden) < 1e-4
    step = model.llm.embed(torch.tensor([[int(logits[-1].argmax())]]))
    t_next = model.llm(step, torch.tensor([[T]]), T)
    kv = list(zip(present[0::2], present[1::2]))
    (h_next, *_) = sessions["llm_decode"].run(
        None, _llm_feeds(step.numpy(), np.array([[T]]), np.array([T]), valid, kv)
    )
    assert rel_err(h_next, t_next) < 1e-4
    model.llm.drop_cache()


def _depth_feeds(hidden, forced, top_k=1):
    scalar = np.array
    return {
        "hidden": hidden.astype(np.float32),
        "cfg_scale": scalar(3.0, np.float32),
        "temperature": scalar(1.0, np.float32),
        "top_k": scalar(top_k, np.int64),
        "top_p": scalar(1.0, np.float32),
        "seed": scalar(0, np.int64),
        "forced_codes": forced,
    }


def test_depth_graph_teacher_forced_logits_match_official(sessions, tiny_fixture):
    hidden = ref(tiny_fixture, "depth_in_hidden.npy")[0]  # [P, H]
    codes = ref(tiny_fixture, "depth_in_codes.npy")[0]  # [P, D]
    expected = ref(tiny_fixture, "depth_logits.npy")[0]  # [P, D, V]
    for p in range(hidden.shape[0]):
        rows = np.stack([hidden[p], hidden[p]])  # cond = uncond: CFG leaves the logits as they are
        out_codes, _, logits = sessions["depth_decode"].run(
            None, _depth_feeds(rows, codes[p : p + 1])
        )
        assert np.array_equal(out_codes[0], codes[p])
        assert rel_err(logits[:, 0], expected[p]) < 1e-4


def test_depth_graph_greedy_codes_and_next_embeds_match_official(sessions, model, tiny_fixture):
    hidden = ref(tiny_fixture, "depth_gen_in_hidden.npy")[
        :, 0
    ]  # [cond_a, cond_b, uncond_a, uncond_b]
    forced = np.full((2, model.cfg.rvq.depth), -1, np.int64)
    codes, next_embeds, _ = sessions["depth_decode"].run(None, _depth_feeds(hidden, forced))
    assert np.array_equal(codes, ref(tiny_fixture, "depth_gen_codes.npy")[:2, 0])
    features = torch.from_numpy(ref(tiny_fixture, "depth_gen_features.npy")[:2, 0])
    assert rel_err(next_embeds, model.mm_projector(features).detach()) < 1e-4


def test_export_refuses_unsupported_options(tiny_fixture, tmp_path):
    with pytest.raises(ConfigError, match="quant 'int8' is not known"):
        onnx_export.export_bundle(tiny_fixture, tmp_path / "b", quant="int8")
    with pytest.raises(ConfigError, match="precision 'int8'"):
        onnx_export.export_bundle(tiny_fixture, tmp_path / "b", precision="int8")
    assert list(tmp_path.iterdir()) == []


def test_interrupted_export_leaves_nothing_behind(tiny_fixture, tmp_path, monkeypatch):
    real, calls = onnx_export.export_graph, []

    def fail_on_second_graph(spec, *args):
        calls.append(spec.name)
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated interruption")
        return real(spec, *args)

    monkeypatch.setattr(onnx_export, "export_graph", fail_on_second_graph)
    with pytest.raises(KeyboardInterrupt):
        onnx_export.export_bundle(
            tiny_fixture, tmp_path / "bundle", siglip_config=siglip(tiny_fixture)
        )
    assert calls == ["vision", "pixel_decoder"]
    assert list(tmp_path.iterdir()) == []
