"""The Pipeline end to end: official fixture parity, streaming, seeds, inputs, bad requests."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from vilau_export.checkpoint_writer import write_checkpoint

from vilau_rt import Pipeline
from vilau_rt.config import preset
from vilau_rt.errors import GenerationError, ImageError, PromptError


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
