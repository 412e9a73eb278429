"""Checkpoint loader: strict loading of the official layout, and every error case."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from vilau_rt.errors import CheckpointError, CheckpointNotFoundError, ConfigError
from vilau_rt.model.checkpoint import load_vilau


@pytest.fixture
def ckpt(tiny_fixture, tmp_path):
    """A writable copy of the official tiny checkpoint (without the reference folder)."""
    dst = tmp_path / "ckpt"
    shutil.copytree(tiny_fixture, dst, ignore=shutil.ignore_patterns("reference", "README.md"))
    return dst


@pytest.fixture
def siglip(tiny_fixture):
    return tiny_fixture / "reference" / "siglip_config"


def _edit(path, fn):
    sd = load_file(str(path))
    fn(sd)
    save_file(sd, str(path), metadata={"format": "pt"})


def _codes(model, root):
    pv = torch.from_numpy(np.load(root / "reference" / "pixel_values.npy"))
    return model.encode_images(pv)[0]


def test_official_checkpoint_loads_with_only_unused_keys_skipped(tiny_fixture, siglip):
    ignored = []
    load_vilau(tiny_fixture, siglip_config=siglip, ignored=ignored)
    kinds = {
        "text_model": sum(".text_model." in k for k in ignored),
        "head": sum(".vision_model.head." in k for k in ignored),
        "post_layernorm": sum("post_layernorm" in k for k in ignored),
        "last_layer": sum("encoder.layers.2." in k for k in ignored),
        "logit": sum("logit_" in k for k in ignored),
        "ema": sum("_ema" in k for k in ignored),
    }
    assert kinds == {"text_model": 22, "head": 11, "post_layernorm": 2, "last_layer": 16,
                     "logit": 4, "ema": 8}  # fmt: skip
    assert sum(kinds.values()) == len(ignored)  # nothing else skipped


def test_missing_tensor_names_key_and_folder(ckpt, siglip):
    _edit(ckpt / "mm_projector" / "model.safetensors", lambda sd: sd.pop("layers.2.bias"))
    with pytest.raises(CheckpointError, match=r"layers\.2\.bias.*mm_projector"):
        load_vilau(ckpt, siglip_config=siglip)


def test_unexpected_tensor_is_an_error(ckpt, siglip):
    def add(sd):
        sd["rqtransformer.extra.weight"] = torch.zeros(2)

    _edit(ckpt / "vision_tower" / "model.safetensors", add)
    with pytest.raises(CheckpointError, match=r"unexpected tensor 'rqtransformer\.extra\.weight'"):
        load_vilau(ckpt, siglip_config=siglip)


def test_wrong_shape_names_key_and_shapes(ckpt, siglip):
    def shrink(sd):
        sd["model.norm.weight"] = torch.ones(95)

    _edit(ckpt / "llm" / "model.safetensors", shrink)
    with pytest.raises(CheckpointError, match=r"'model\.norm\.weight'.*\[95\].*\[96\]"):
        load_vilau(ckpt, siglip_config=siglip)


def test_integer_weight_is_rejected(ckpt, siglip):
    def to_int(sd):
        sd["model.norm.weight"] = torch.ones(96, dtype=torch.int32)

    _edit(ckpt / "llm" / "model.safetensors", to_int)
    with pytest.raises(CheckpointError, match=r"model\.norm\.weight.*int32"):
        load_vilau(ckpt, siglip_config=siglip)


def test_truncated_file_is_reported_with_its_path(ckpt, siglip):
    f = ckpt / "vision_tower" / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointError, match=r"vision_tower/model\.safetensors is truncated"):
        load_vilau(ckpt, siglip_config=siglip)


def test_corrupt_header_is_reported(ckpt, siglip):
    f = ckpt / "mm_projector" / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[10:20] = b"\xff" * 10
    f.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"mm_projector/model\.safetensors"):
        load_vilau(ckpt, siglip_config=siglip)


def test_sharded_llm_loads_and_missing_shard_is_named(ckpt, siglip, tiny_fixture):
    llm = ckpt / "llm"
    sd = load_file(str(llm / "model.safetensors"))
    keys = sorted(sd)
    halves = {
        "model-00001-of-00002.safetensors": keys[:10],
        "model-00002-of-00002.safetensors": keys[10:],
    }
    for name, ks in halves.items():
        save_file({k: sd[k] for k in ks}, str(llm / name), metadata={"format": "pt"})
    index = {"weight_map": {k: n for n, ks in halves.items() for k in ks}}
    (llm / "model.safetensors.index.json").write_text(json.dumps(index))
    (llm / "model.safetensors").unlink()
    sharded = load_vilau(ckpt, siglip_config=siglip)
    single = load_vilau(tiny_fixture, siglip_config=siglip)
    for k, v in single.state_dict().items():
        assert torch.equal(v, sharded.state_dict()[k]), k
    (llm / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointNotFoundError, match="model-00002-of-00002.safetensors"):
        load_vilau(ckpt, siglip_config=siglip)


def test_bfloat16_file_loads_into_requested_dtype(ckpt, siglip):
    def to_bf16(sd):
        for k in sd:
            sd[k] = sd[k].to(torch.bfloat16)

    _edit(ckpt / "mm_projector" / "model.safetensors", to_bf16)
    model = load_vilau(ckpt, siglip_config=siglip, dtype=torch.float32)
    assert model.mm_projector.layers[0].weight.dtype == torch.float32


def test_shared_codebook_written_once_or_repeated(ckpt, siglip):
    cfg_path = ckpt / "vision_tower" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["rqvaesiglip"]["shared_codebook"] = True
    cfg_path.write_text(json.dumps(cfg))
    vt = ckpt / "vision_tower" / "model.safetensors"
    key = "rqvaesiglip.quantizer.codebooks.{}.weight"

    def repeat(sd):
        for d in range(1, 4):
            sd[key.format(d)] = sd[key.format(0)].clone()

    _edit(vt, repeat)
    repeated = load_vilau(ckpt, siglip_config=siglip)
    _edit(vt, lambda sd: [sd.pop(key.format(d)) for d in range(1, 4)])
    once = load_vilau(ckpt, siglip_config=siglip)
    w = repeated.quantizer.codebooks[0].weight
    assert len(once.quantizer.codebooks) == 1 and torch.equal(w, once.quantizer.codebooks[0].weight)

    def differ(sd):
        sd[key.format(2)] = sd[key.format(0)] + 1

    _edit(vt, differ)
    with pytest.raises(CheckpointError, match=r"codebooks\.2\.weight.*differs"):
        load_vilau(ckpt, siglip_config=siglip)


def test_logit_aliases_may_be_absent(ckpt, siglip, tiny_fixture):
    _edit(
        ckpt / "vision_tower" / "model.safetensors",
        lambda sd: [sd.pop(k) for k in list(sd) if k.startswith("rqvaesiglip.siglip_model.logit_")],
    )
    model = load_vilau(ckpt, siglip_config=siglip)
    ref = np.load(tiny_fixture / "reference" / "codes.npy")
    assert np.array_equal(_codes(model, tiny_fixture).numpy(), ref)


def test_unknown_siglip_name_without_config_is_explained(tiny_fixture):
    with pytest.raises(ConfigError, match=r"vilau-fixture/siglip-tiny-p8-32.*siglip_config="):
        load_vilau(tiny_fixture)


def test_siglip_config_as_dict(tiny_fixture, siglip):
    d = json.loads((siglip / "config.json").read_text())
    load_vilau(tiny_fixture, siglip_config=d)


def test_not_a_checkpoint(tmp_path, ckpt, siglip):
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        load_vilau(tmp_path / "nope")
    with pytest.raises(CheckpointNotFoundError, match="config.json"):
        load_vilau(tmp_path)
    top = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(
        json.dumps(top | {"model_type": "llama", "architectures": []})
    )
    with pytest.raises(CheckpointError, match="not a VILA-U config"):
        load_vilau(ckpt, siglip_config=siglip)


def test_missing_subfolder_and_bad_json(ckpt, siglip):
    (ckpt / "mm_projector" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"mm_projector/config\.json is not valid JSON"):
        load_vilau(ckpt, siglip_config=siglip)
    shutil.rmtree(ckpt / "mm_projector")
    with pytest.raises(CheckpointNotFoundError, match="mm_projector"):
        load_vilau(ckpt, siglip_config=siglip)


def test_inconsistent_configs_name_both_sides(ckpt, siglip):
    p = ckpt / "vision_tower" / "config.json"
    cfg = json.loads(p.read_text())
    cfg["rqtransformer"]["vocab_size"] = 64
    p.write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=r"n_embed = 128 but rqtransformer\.vocab_size = 64"):
        load_vilau(ckpt, siglip_config=siglip)


def test_nan_or_inf_weight_is_named_unless_the_check_is_off(ckpt, siglip):
    def poison(sd):
        sd["layers.0.weight"][1, 2] = float("nan")
        sd["layers.0.weight"][0, 0] = float("inf")

    _edit(ckpt / "mm_projector" / "model.safetensors", poison)
    with pytest.raises(CheckpointError, match=r"'layers\.0\.weight' in .*mm_projector holds 2 NaN"):
        load_vilau(ckpt, siglip_config=siglip)
    model = load_vilau(ckpt, siglip_config=siglip, check_finite=False)
    assert torch.isnan(model.mm_projector.layers[0].weight).any()


def _raw_safetensors(path, entries, data: bytes):
    """A safetensors file written by hand: header entries as given, then ``data``."""
    header = json.dumps(entries).encode()
    path.write_bytes(len(header).to_bytes(8, "little") + header + data)


@pytest.mark.parametrize(
    ("offsets", "message"),
    [
        ({"a": [-8, 8], "b": [8, 24]}, r"'a' has data offsets \[-8, 8\]"),  # into the header
        ({"a": [0, 16], "b": [8, 24]}, r"'a' \(bytes 0\.\.16\) and 'b' \(from byte 8\) overlap"),
        ({"a": [16, 0], "b": [0, 16]}, r"'a' has data offsets \[16, 0\]"),
        ({"a": [0, 12], "b": [12, 28]}, r"'a' declares 12 bytes for shape \[4\]"),
    ],
)
def test_safetensors_offsets_are_validated(tmp_path, offsets, message):
    from vilau_rt.model.safetensors_io import SafetensorsFile

    entries = {k: {"dtype": "F32", "shape": [4], "data_offsets": v} for k, v in offsets.items()}
    path = tmp_path / "bad.safetensors"
    _raw_safetensors(path, entries, bytes(32))
    with pytest.raises(CheckpointError, match=message):
        SafetensorsFile(path)


def test_index_naming_a_file_outside_the_folder_is_refused(ckpt, siglip, tmp_path):
    outside = tmp_path / "x.safetensors"
    save_file({"model.norm.weight": torch.ones(4)}, str(outside))
    index = {"metadata": {}, "weight_map": {"model.norm.weight": "../../x.safetensors"}}
    (ckpt / "llm" / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"names shard '\.\./\.\./x\.safetensors'"):
        load_vilau(ckpt, siglip_config=siglip)


@pytest.mark.parametrize(
    ("file", "path", "value", "message"),
    [
        ("llm/config.json", ["num_attention_heads"], 0, r"num_attention_heads must be >= 1, got 0"),
        ("llm/config.json", ["hidden_size"], "96", r"hidden_size must be an integer, got '96'"),
        ("llm/config.json", ["rms_norm_eps"], "x", r"rms_norm_eps must be a number"),
        ("vision_tower/config.json", ["rqvaesiglip", "n_embed"], "abc", r"n_embed must be an int"),
        ("vision_tower/config.json", ["rqtransformer", "head"], 3, r"head must be a JSON object"),
        ("vision_tower/config.json", ["rqvaesiglip", "code_shape"], "4x4", r"code_shape 4x4"),
        ("mm_projector/config.json", ["mm_projector_type"], 2, r"projector_type must be a string"),
    ],
)
def test_wrong_typed_config_values_are_named(ckpt, siglip, file, path, value, message):
    p = ckpt / file
    cfg = json.loads(p.read_text())
    node = cfg
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    p.write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=message):
        load_vilau(ckpt, siglip_config=siglip)
