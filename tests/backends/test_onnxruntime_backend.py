"""The ONNX Runtime backend against the torch backend and the official references (tiny fixture):
greedy text and greedy image codes identical, KV cache updated in place, corrupt bundles refused,
checkpoints exported once into the cache.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime_extensions")
pytest.importorskip("onnxscript")

from vilau_rt.backends import TorchBackend
from vilau_rt.backends.onnxruntime_backend import (
    OnnxRuntimeBackend,
    load_bundle_or_export,
)
from vilau_rt.errors import CheckpointError, CheckpointNotFoundError
from vilau_rt.generate import (
    ImageSettings,
    TextSettings,
    generate_codes,
    generate_text,
    splice_images,
)
from vilau_rt.model.checkpoint import load_vilau
from vilau_rt.ops.depth_decode import CodeSampler
from vilau_rt.sampling import sample_codes


def siglip(root):
    return root / "reference" / "siglip_config"


def ref(root, name):
    return torch.from_numpy(np.load(root / "reference" / name))


def rel_err(a, b):
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "vilau-rt-cache"  # shared with test_onnx_export.py


@pytest.fixture(scope="module")
def ort_backend(tiny_fixture, cache_dir):
    return load_bundle_or_export(tiny_fixture, cache_dir, siglip_config=siglip(tiny_fixture))


@pytest.fixture(scope="module")
def torch_backend(tiny_fixture):
    return TorchBackend(load_vilau(tiny_fixture, siglip_config=siglip(tiny_fixture)))


def test_encode_and_decode_match_torch_and_official(ort_backend, torch_backend, tiny_fixture):
    px = ref(tiny_fixture, "pixel_values.npy")
    codes, embeds = ort_backend.encode_images(px)
    t_codes, t_embeds = torch_backend.encode_images(px)
    assert torch.equal(codes, t_codes) and torch.equal(codes, ref(tiny_fixture, "codes.npy"))
    assert rel_err(embeds, t_embeds) < 1e-4
    raw = ort_backend.decode_codes(codes)
    assert float((raw - torch_backend.decode_codes(codes)).abs().max()) < 1e-4
    assert float((raw - ref(tiny_fixture, "decoded_raw.npy")).abs().max()) < 1e-4


def _understanding_embeds(backend, root):
    _, embeds = backend.encode_images(ref(root, "pixel_values.npy")[:1])
    ids = ref(root, "und_input_ids.npy")[0].tolist()
    return splice_images(backend, ids, [embeds[0]])


def test_greedy_text_matches_torch_and_official(ort_backend, torch_backend, tiny_fixture):
    embeds = _understanding_embeds(ort_backend, tiny_fixture)
    assert rel_err(embeds, ref(tiny_fixture, "und_inputs_embeds.npy")) < 1e-4
    seen = []
    settings = TextSettings(max_new_tokens=12)
    ids = list(generate_text(ort_backend, embeds, settings, eos_id=2, on_logits=seen.append))
    t_embeds = _understanding_embeds(torch_backend, tiny_fixture)
    assert ids == list(generate_text(torch_backend, t_embeds, settings, eos_id=2))
    assert ids == ref(tiny_fixture, "und_greedy_ids.npy")[0, 1:].tolist()
    assert rel_err(torch.cat(seen), ref(tiny_fixture, "und_greedy_step_logits.npy")[0]) < 1e-4


def _gen_inputs(root):
    ids = ref(root, "gen_input_ids.npy")
    mask = ref(root, "gen_attention_mask.npy")
    return ids, mask, (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)


def test_greedy_image_codes_match_torch_and_official(ort_backend, torch_backend, tiny_fixture):
    ids, mask, pos = _gen_inputs(tiny_fixture)
    settings = ImageSettings(cfg_scale=3.0, top_k=1)
    trace = {}
    codes = generate_codes(ort_backend, ids, mask, pos, 16, settings, trace=trace)
    assert torch.equal(codes, generate_codes(torch_backend, ids, mask, pos, 16, settings))
    assert torch.equal(codes.view(4, 4, 4), ref(tiny_fixture, "gen_codes.npy"))
    assert (
        rel_err(torch.stack(trace["hidden"]), ref(tiny_fixture, "gen_depth_in_hidden.npy")) < 1e-4
    )
    logits = torch.stack([torch.stack(p) for p in trace["depth_logits"]])
    assert rel_err(logits, ref(tiny_fixture, "gen_depth_logits.npy")) < 1e-4


def test_fused_depth_decode_greedy_matches_torch(ort_backend, torch_backend, tiny_fixture):
    for hidden in ref(tiny_fixture, "gen_depth_in_hidden.npy")[:4]:  # [2, H] per position
        codes, nxt = ort_backend.depth_generate(hidden, 3.0, CodeSampler(top_k=1))
        assert ort_backend.stats["depth_path"] == "fused"
        t_codes, t_nxt = torch_backend.depth_generate(
            hidden, 3.0, lambda lg: sample_codes(lg, top_k=1)
        )
        assert torch.equal(codes, t_codes)
        assert rel_err(nxt, t_nxt) < 1e-4


def test_seeded_sampling_is_reproducible_and_stays_in_top_k(ort_backend, tiny_fixture):
    hidden = ref(tiny_fixture, "gen_depth_in_hidden.npy")[0]
    gen = torch.Generator().manual_seed(7)
    draws = [ort_backend.depth_generate(hidden, 3.0, CodeSampler(top_k=5, generator=gen))[0]]
    gen.manual_seed(7)
    seen = []
    sampler = CodeSampler(top_k=5, generator=gen)
    again = ort_backend.depth_generate(hidden, 3.0, sampler, lambda d, lg: seen.append(lg))[0]
    assert torch.equal(draws[0], again)
    codes = again[0]
    # depth 0 does not depend on earlier draws: its code is among the 5 best guided logits
    guided = seen[0][1:] + 3.0 * (seen[0][:1] - seen[0][1:])
    assert int(codes[0]) in guided.topk(5).indices[0].tolist()
    many = {
        tuple(ort_backend.depth_generate(hidden, 3.0, sampler)[0][0].tolist()) for _ in range(8)
    }
    assert len(many) > 1  # it does sample


def test_kv_cache_is_written_in_place(ort_backend):
    ort_backend.setup_cache(1, 8)
    cache = ort_backend._cache
    before = {k: v.ctypes.data for k, v in cache.buffers.items()}
    embeds = ort_backend.embed_tokens(torch.tensor([[1, 5, 9]]))
    ort_backend.forward(embeds, torch.arange(3)[None], 0)
    ort_backend.forward(embeds[:, :1], torch.tensor([[3]]), 3)
    for name, buf in cache.buffers.items():
        assert buf.ctypes.data == before[name]
        assert np.abs(buf[:, :, :4]).sum(axis=(0, 1, 3)).all()  # slots 0..3 written
        assert not buf[:, :, 4:].any()  # untouched slots
    with pytest.raises(ValueError, match="does not fit the KV cache of 8"):
        ort_backend.forward(embeds, torch.arange(3)[None] + 6, 6)


def test_out_of_range_inputs_are_refused(ort_backend):
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 128\)"):
        ort_backend.decode_codes(torch.full((1, 4, 4, 4), 128))
    with pytest.raises(ValueError, match="token ids"):
        ort_backend.embed_tokens(torch.tensor([[516]]))


@pytest.fixture
def bundle_copy(ort_backend, tmp_path):
    dst = tmp_path / "bundle"
    shutil.copytree(ort_backend.root, dst)
    return dst


def test_a_bundle_file_that_does_not_match_its_hash_is_refused(bundle_copy):
    path = bundle_copy / "lm_head.onnx"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # same size, different content
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"lm_head\.onnx does not match its sha256"):
        OnnxRuntimeBackend(bundle_copy)


def test_a_truncated_or_missing_bundle_file_is_refused(bundle_copy):
    weights = bundle_copy / "llm.weights"
    weights.write_bytes(weights.read_bytes()[:-4])
    with pytest.raises(CheckpointError, match=r"llm\.weights has \d+ bytes, the manifest says"):
        OnnxRuntimeBackend(bundle_copy)
    weights.unlink()
    with pytest.raises(CheckpointNotFoundError, match=r"llm\.weights is listed in .* but missing"):
        OnnxRuntimeBackend(bundle_copy)


def test_a_checkpoint_is_exported_once_then_loaded_from_the_cache(
    tiny_fixture, cache_dir, ort_backend, monkeypatch
):
    from vilau_export.onnx import export as onnx_export

    def no_export(*args, **kwargs):
        raise AssertionError("exported again instead of using the cache")

    monkeypatch.setattr(onnx_export, "export_bundle", no_export)
    again = load_bundle_or_export(tiny_fixture, cache_dir, siglip_config=siglip(tiny_fixture))
    assert again.root == ort_backend.root
    assert load_bundle_or_export(ort_backend.root).root == ort_backend.root  # a bundle as is


@pytest.fixture(scope="module")
def ort_pipe(tiny_fixture, cache_dir, ort_backend):
    from vilau_rt import Pipeline

    return Pipeline.from_pretrained(
        tiny_fixture, backend="onnxruntime", cache_dir=cache_dir, siglip_config=siglip(tiny_fixture)
    )


@pytest.fixture(scope="module")
def torch_pipe(tiny_fixture):
    from vilau_rt import Pipeline

    return Pipeline.from_pretrained(tiny_fixture, siglip_config=siglip(tiny_fixture))


def test_prefills_of_different_lengths_follow_each_other(ort_pipe, torch_pipe, tiny_fixture):
    # the LLM output used to be bound once with the first prefill's shape
    image = tiny_fixture / "reference" / "img0_gradient_circle.png"
    requests = [
        ("Hi", None),
        ("What is shown in this image?", [image]),
        ("Describe the picture in many words, please, with every detail you see.", [image]),
        ("Hi", None),
        ("Two images?", [image, image]),
    ]
    for prompt, images in requests:
        got = ort_pipe.generate(prompt, images=images, max_new_tokens=5)
        want = torch_pipe.generate(prompt, images=images, max_new_tokens=5)
        assert got.token_ids == want.token_ids, prompt


def test_multi_turn_chat_equals_torch(ort_pipe, torch_pipe, tiny_fixture):
    image = tiny_fixture / "reference" / "img2_noise.png"
    turns = [("What is in the picture?", [image]), ("And the colours?", None), ("Why?", None)]
    ort_chat, torch_chat = ort_pipe.chat_session(), torch_pipe.chat_session()
    for text, images in turns:
        got = ort_chat.ask(text, images=images, max_new_tokens=6)
        want = torch_chat.ask(text, images=images, max_new_tokens=6)
        assert got.token_ids == want.token_ids, text
    assert got.stats["cached_tokens"] > 0  # later turns reuse the cache


def test_a_damaged_cached_bundle_is_exported_again(tiny_fixture, cache_dir, ort_backend):
    root = ort_backend.root
    onnx_file = root / "lm_head.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes()[:-10])  # e.g. a disk filled up mid-copy
    again = load_bundle_or_export(tiny_fixture, cache_dir, siglip_config=siglip(tiny_fixture))
    assert again.root == root
    hidden = torch.randn(2, ort_backend.cfg.llm.hidden_size)
    assert torch.allclose(again.logits(hidden), ort_backend.logits(hidden), atol=1e-5)
