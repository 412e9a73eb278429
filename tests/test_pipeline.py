"""The Pipeline end to end: official fixture parity, streaming, seeds, inputs, bad requests."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from vilau_export.checkpoint_writer import write_checkpoint

from vilau_rt import Pipeline
from vilau_rt.errors import ConfigError, GenerationError, ImageError, PromptError
from vilau_rt.model.config import preset


@pytest.fixture(scope="module")
def official(tiny_fixture):
    return Pipeline.from_pretrained(
        tiny_fixture, siglip_config=tiny_fixture / "reference" / "siglip_config"
    )


@pytest.fixture(scope="module")
def random_pipe(tmp_path_factory):
    path = write_checkpoint(preset("tiny-256"), tmp_path_factory.mktemp("p") / "tiny", seed=1)
    return Pipeline.from_pretrained(path, device="cpu")


def ref(root, name):
    return np.load(root / "reference" / name)


def test_defaults_pick_cpu_float32_here(official):
    assert official.device.type == "cpu" and official.backend.dtype == torch.float32


def test_greedy_answer_matches_the_official_generate(official, tiny_fixture):
    image = tiny_fixture / "reference" / "img0_gradient_circle.png"
    res = official.generate("What is shown in this image?", images=[image], max_new_tokens=12)
    assert res.token_ids == ref(tiny_fixture, "und_greedy_ids.npy")[0, 1:].tolist()
    assert res.text == "ingen aF wooVing\ufffdes\u0010\ufffdn"
    assert res.stats["prompt_tokens"] == 116


def test_streaming_equals_non_streaming(official, tiny_fixture):
    image = tiny_fixture / "reference" / "img1_stripes_wide.png"
    kwargs = {"images": [image], "max_new_tokens": 20, "do_sample": True, "seed": 7}
    full = official.generate("Describe it.", **kwargs)
    pieces = list(official.generate("Describe it.", stream=True, **kwargs))
    assert "".join(pieces) == full.text


def test_greedy_cfg_image_codes_match_the_official(official, tiny_fixture):
    codes = official.generate_image_codes("a red apple on a wooden table", top_k=1, seed=0)
    assert codes.shape == (1, 4, 4, 4) and codes.dtype == np.int64
    assert np.array_equal(codes[0], ref(tiny_fixture, "gen_codes.npy"))
    image = official.decode_codes(codes[0])
    expected = ref(tiny_fixture, "gen_uint8.npy")[0].astype(int)
    assert np.abs(np.asarray(image).astype(int) - expected).max() <= 1


def test_seeded_generation_is_reproducible_and_seeds_differ(random_pipe):
    a = random_pipe.generate_image_codes("a cat", seed=1, top_k=50, num_images=2)
    b = random_pipe.generate_image_codes("a cat", seed=1, top_k=50, num_images=2)
    c = random_pipe.generate_image_codes("a cat", seed=2, top_k=50, num_images=2)
    assert a.shape == (2, 4, 4, 4)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    images = random_pipe.generate_image("a cat", seed=1, top_k=50, num_images=2)
    assert len(images) == 2 and images[0].size == (32, 32)


def test_encode_decode_round_trip_has_the_model_size(random_pipe, tmp_path):
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8))
    codes = random_pipe.encode_image(img)
    assert codes.shape == (4, 4, 4) and codes.dtype == np.int64
    out = random_pipe.decode_codes(codes)
    assert isinstance(out, Image.Image) and out.size == (32, 32)
    many = random_pipe.decode_codes(np.stack([codes, codes]))
    assert len(many) == 2


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((20, 30, 3), np.uint8),
        np.zeros((20, 30), np.uint8),
        np.zeros((20, 30, 4), np.uint8),
        torch.zeros(3, 20, 30, dtype=torch.uint8),
        torch.zeros(20, 30, 3, dtype=torch.uint8),
        Image.new("L", (10, 12)),
        Image.new("RGBA", (10, 12)),
        Image.new("P", (10, 12)),
    ],
)
def test_image_inputs_of_every_supported_kind(random_pipe, image):
    assert random_pipe.encode_image(image).shape == (4, 4, 4)


def test_bad_inputs_raise_named_errors_and_the_pipeline_still_works(random_pipe, tmp_path):
    broken = tmp_path / "broken.png"
    good = tmp_path / "good.png"
    Image.new("RGB", (16, 16), (10, 20, 30)).save(good)
    broken.write_bytes(good.read_bytes()[:40])
    not_image = tmp_path / "notes.png"
    not_image.write_text("hello")
    cases = [
        (ImageError, "corrupt", lambda: random_pipe.encode_image(broken)),
        (ImageError, "not an image|corrupt", lambda: random_pipe.encode_image(not_image)),
        (ImageError, "not found", lambda: random_pipe.encode_image(tmp_path / "missing.png")),
        (ImageError, "zero size", lambda: random_pipe.encode_image(np.zeros((0, 5, 3), np.uint8))),
        (ImageError, "dtype", lambda: random_pipe.encode_image(np.zeros((5, 5, 3), np.float32))),
        (ImageError, "shape", lambda: random_pipe.encode_image(np.zeros((5, 5, 7), np.uint8))),
        (PromptError, "empty", lambda: random_pipe.generate("  ", images=[good])),
        (PromptError, "empty|prompt", lambda: random_pipe.generate_image_codes("")),
        (GenerationError, "num_images", lambda: random_pipe.generate_image_codes("x", num_images=0)),
        (GenerationError, "cfg_scale", lambda: random_pipe.generate_image_codes("x", cfg_scale=-1)),
        (GenerationError, "top_p", lambda: random_pipe.generate_image_codes("x", top_p=1.5)),
        (GenerationError, "top_k", lambda: random_pipe.generate_image_codes("x", top_k=0)),
        (GenerationError, "temperature", lambda: random_pipe.generate_image_codes("x", temperature=0)),
        (PromptError, r"exceeds the model context of 256",
         lambda: random_pipe.generate("hi", images=[good], max_new_tokens=10_000)),
        (ValueError, "expected", lambda: random_pipe.decode_codes(np.zeros((3, 3, 4), np.int64))),
        (ValueError, r"\[0, 128\)", lambda: random_pipe.decode_codes(np.full((4, 4, 4), 500))),
    ]  # fmt: skip
    for exc, pattern, call in cases:
        with pytest.raises(exc, match=pattern):
            call()
        # the next good request still works
        assert random_pipe.encode_image(good).shape == (4, 4, 4)
    res = random_pipe.generate("What is this?", images=[good], max_new_tokens=3)
    assert len(res.token_ids) <= 3


def test_missing_checkpoint_path_is_explained(tmp_path):
    from vilau_rt.errors import CheckpointNotFoundError

    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        Pipeline.from_pretrained(tmp_path / "nowhere")


def _fresh_answer(pipe, turns, images, max_new_tokens):
    """Greedy answer from a fresh prefill of the whole conversation (no cache reuse)."""
    from vilau_rt.generate import text_settings
    from vilau_rt.prompts import tokenize_chat

    ids = tokenize_chat(pipe.tokenizer, turns)
    embeds = pipe.image_embeddings(images)
    pipe._cache_owner = None
    settings = text_settings(max_new_tokens, False, 1.0, None, None, 1.0)
    return pipe._run(ids, embeds, 0, settings, None, None, False, 0.0).token_ids


def test_chat_turns_reuse_the_cache_and_equal_a_fresh_prefill(official, tiny_fixture):
    from vilau_rt.prompts import user_message

    img = Image.open(tiny_fixture / "reference" / "img2_noise.png")
    chat = official.chat_session()
    first = chat.ask("What is in the picture?", images=[img], max_new_tokens=6)
    assert first.stats["cached_tokens"] == 0
    second = chat.ask("And the colours?", max_new_tokens=6)
    assert second.stats["cached_tokens"] >= first.stats["prompt_tokens"]
    turns = [(user_message("What is in the picture?", 1), first.text), ("And the colours?", None)]
    assert second.token_ids == _fresh_answer(official, turns, [img], 6)
    # a one-off request in between overwrites the cache: the session notices and re-prefills
    official.generate("Unrelated.", max_new_tokens=2)
    third = chat.ask("Thanks, anything else?", max_new_tokens=5)
    assert third.stats["cached_tokens"] == 0
    turns = [*turns[:-1], ("And the colours?", second.text), ("Thanks, anything else?", None)]
    assert third.token_ids == _fresh_answer(official, turns, [img], 5)
    chat.reset()
    assert chat.history == [] and chat.ask("Hi", max_new_tokens=2).stats["cached_tokens"] == 0


def test_video_frames_are_sampled_uniformly_and_each_is_an_image(random_pipe):
    from vilau_rt.video import sample_indices

    assert sample_indices(80, 8) == [0, 11, 23, 34, 45, 56, 68, 79]
    assert sample_indices(3, 8) == [0, 1, 2]
    frames = [np.full((24, 24, 3), 10 * i, np.uint8) for i in range(20)]
    res = random_pipe.generate("What happens?", videos=[frames], max_new_tokens=2)
    text_only = random_pipe.generate("What happens?", max_new_tokens=2)
    assert res.stats["prompt_tokens"] - text_only.stats["prompt_tokens"] == 8 * (16 + 2)


def test_video_file_is_decoded(random_pipe, tmp_path):
    av = pytest.importorskip("av", reason="PyAV (the [video] extra) is not installed")
    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(12):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 20 * i, np.uint8), "rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    from vilau_rt.video import load_video

    frames = load_video(path, 8)
    assert len(frames) == 8 and frames[0].size == (32, 32)
    assert np.asarray(frames[-1]).mean() > np.asarray(frames[0]).mean()
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(ImageError, match="cannot decode video"):
        load_video(bad)


def test_video_generation_gives_frames(random_pipe):
    videos = random_pipe.generate_video("a bird flying", seed=0, top_k=20, num_frames=8)
    assert len(videos) == 1 and len(videos[0]) == 8 and videos[0][0].size == (32, 32)


def _layer0_keys(backend):
    if backend.name == "torch":
        return backend.model.llm.model.layers[0].self_attn.kv_cache.k
    return backend._k[0]  # native: the backend's own static cache


@pytest.mark.parametrize("backend", ["torch", "native"])
def test_kv_cache_is_allocated_once_for_the_context(random_pipe, backend):
    pipe = Pipeline.from_pretrained(random_pipe.path, backend=backend, device="cpu")
    pipe.generate("Hello there", max_new_tokens=3)
    keys = _layer0_keys(pipe.backend)
    ptr, length = keys.data_ptr(), keys.shape[2]
    assert length == pipe.cfg.llm.context_length
    pipe.generate("A longer prompt than the one before, with more words", max_new_tokens=5)
    assert _layer0_keys(pipe.backend).data_ptr() == ptr


def test_max_context_caps_requests(tmp_path):
    path = write_checkpoint(preset("tiny-256"), tmp_path / "t")
    pipe = Pipeline.from_pretrained(path, device="cpu", max_context=64)
    with pytest.raises(PromptError, match="context of 64"):
        pipe.generate("hi", max_new_tokens=60)
    assert pipe.backend.model.llm.cache_len in (0, 64)
    with pytest.raises(ValueError, match="max_context"):
        Pipeline.from_pretrained(path, device="cpu", max_context=10_000)


def test_logits_and_perplexity_match_transformers(official, tiny_fixture):
    transformers = pytest.importorskip("transformers")
    hf = transformers.LlamaForCausalLM.from_pretrained(tiny_fixture / "llm").eval()
    text = "A chat between a curious user and an artificial intelligence assistant."
    ids = official.tokenizer.encode(text)
    with torch.no_grad():
        out = hf(torch.tensor([ids]), labels=torch.tensor([ids]))
    ours = torch.from_numpy(official.logits(text))
    torch.testing.assert_close(ours, out.logits[0], rtol=1e-4, atol=1e-4)
    assert official.perplexity([text]) == pytest.approx(float(out.loss.exp()), rel=1e-4)


def test_model_sized_tensors_skip_pil_and_give_the_same_pixels(random_pipe):
    rng = np.random.default_rng(3)
    hwc = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    via_pil = random_pipe._pixels([Image.fromarray(hwc)])
    for t in (torch.from_numpy(hwc), torch.from_numpy(hwc).permute(2, 0, 1)):
        assert torch.equal(random_pipe._pixels([t]), via_pil)
    assert np.array_equal(random_pipe.encode_image(torch.from_numpy(hwc)),
                          random_pipe.encode_image(hwc))  # fmt: skip


# -- user errors and defaults (issue: no raw exceptions, defaults that fit the model) ----------


def test_caption_default_fits_a_small_context(random_pipe):
    # tiny-256: 130 prompt tokens + the old fixed 128 new tokens overflowed its 256 context
    img = np.full((32, 32, 3), 80, np.uint8)
    random_pipe.caption(img)
    assert random_pipe.stats["prompt_tokens"] + random_pipe.stats["new_tokens"] <= 256
    with pytest.raises(PromptError, match="exceeds the model context"):
        random_pipe.caption(img, max_new_tokens=200)


def test_numpy_seeds_single_images_and_a_lone_stop_string_are_understood(random_pipe):
    img = np.full((32, 32, 3), 120, np.uint8)
    kw = {"max_new_tokens": 6, "do_sample": True}
    a = random_pipe.generate("Describe.", images=[img], seed=3, **kw)
    b = random_pipe.generate("Describe.", images=img, seed=np.int64(3), **kw)
    assert a.token_ids == b.token_ids
    text = a.text
    if len(text) > 2:
        stop = text[1:3]
        got = random_pipe.generate("Describe.", images=[img], seed=3, stop=stop, **kw).text
        assert got == text[: text.index(stop)]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"temperature": "0.5", "do_sample": True},
            GenerationError,
            "temperature must be a number",
        ),
        ({"top_k": 2.5}, GenerationError, "top_k must be an integer"),
        ({"seed": -1}, GenerationError, "seed must be >= 0"),
        ({"seed": 1.5}, GenerationError, "seed must be an integer"),
        ({"stop": ["a", 3]}, GenerationError, "stop must be a string or a list"),
        ({"max_new_tokens": 0}, GenerationError, "max_new_tokens must be >= 1"),
        ({"prompt": "bad \ud800 text"}, PromptError, "lone surrogate"),
        ({"images": 42}, PromptError, "images must be a list"),
    ],
)
def test_bad_generate_arguments_name_the_argument(random_pipe, kwargs, error, message):
    kwargs = {"prompt": "Describe.", **kwargs}
    with pytest.raises(error, match=message):
        random_pipe.generate(**kwargs)


def test_bad_image_generation_arguments_name_the_argument(random_pipe):
    with pytest.raises(GenerationError, match="cfg_scale must be finite"):
        random_pipe.generate_image_codes("x", cfg_scale=float("inf"))
    with pytest.raises(GenerationError, match="num_images must be an integer"):
        random_pipe.generate_image_codes("x", num_images="2")
    codes = random_pipe.generate_image_codes("x", top_k=1, seed=np.uint8(1))
    assert codes.shape == (1, 4, 4, 4)


def test_bad_codes_are_codes_errors(random_pipe):
    from vilau_rt.errors import CodesError

    with pytest.raises(CodesError, match=r"shape \[4, 4\] do not fit"):
        random_pipe.decode_codes(np.zeros((4, 4), np.int64))
    with pytest.raises(CodesError, match="must be integers"):
        random_pipe.decode_codes(np.zeros((4, 4, 4), np.float32))
    with pytest.raises(CodesError, match=r"must lie in \[0, 128\)"):
        random_pipe.decode_codes(np.full((4, 4, 4), 128))


def test_cuda_without_cuda_is_a_backend_error(random_pipe):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from vilau_rt.errors import BackendError

    with pytest.raises(BackendError, match="no CUDA device"):
        Pipeline.from_pretrained(random_pipe.path, device="cuda")
    with pytest.raises(ConfigError, match="not a device name"):
        Pipeline.from_pretrained(random_pipe.path, device="gpu0")


def test_model_sized_tensor_frames_reach_the_model_without_pil(random_pipe, monkeypatch):
    # a camera frame already at the model size (a CUDA tensor on a GPU) is not copied to the host
    import vilau_rt.pipeline as pipeline_module

    frame = torch.randint(0, 256, (32, 32, 3), dtype=torch.uint8)
    want = random_pipe.caption(frame, max_new_tokens=4)

    def no_pil(image):
        raise AssertionError("a model-sized tensor went through PIL")

    monkeypatch.setattr(pipeline_module, "load_image", no_pil)
    assert random_pipe._media([frame], None)[0] is frame
    assert random_pipe.caption(frame, max_new_tokens=4) == want
