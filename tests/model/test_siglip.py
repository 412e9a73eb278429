"""SigLIP vision encoder and preprocessing against independent references: transformers'
own SiglipVisionModel (same random weights) and the official VILA-U fixture outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from vilau_rt.model.siglip import SiglipVisionConfig, SiglipVisionEncoder, preprocess

PREFIX = "rqvaesiglip.siglip_model.vision_model."
IMAGES = ("img0_gradient_circle.png", "img1_stripes_wide.png", "img2_noise.png")

# (hidden, heads, layers, image, patch, intermediate)
SHAPES = [(64, 4, 3, 32, 8, 128), (48, 3, 4, 48, 16, 96)]


def _hf_pair(shape, seed=0):
    """transformers' SiglipVisionModel with random weights, and our encoder holding the same."""
    transformers = pytest.importorskip("transformers")
    hidden, heads, layers, image, patch, inter = shape
    hf_cfg = transformers.SiglipVisionConfig(
        hidden_size=hidden,
        num_attention_heads=heads,
        num_hidden_layers=layers,
        image_size=image,
        patch_size=patch,
        intermediate_size=inter,
        attn_implementation="eager",  # the arithmetic VILA-U's copy of SigLIP uses
    )
    torch.manual_seed(seed)
    hf = transformers.SiglipVisionModel(hf_cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():  # move LayerNorm scales / biases off their 1 / 0 init
            p.add_(0.05 * torch.randn_like(p))
    cfg = SiglipVisionConfig.from_siglip_config(hf_cfg.to_dict())
    ours = SiglipVisionEncoder(cfg).eval()
    hf_sd = hf.vision_model.state_dict()
    used = SiglipVisionEncoder.used_keys(cfg)
    ignored = SiglipVisionEncoder.ignored_keys(cfg)
    # Every key transformers stores is either loaded or deliberately ignored, never both.
    assert set(used) | set(ignored) == set(hf_sd)
    assert not set(used) & set(ignored)
    ours.load_state_dict({k: hf_sd[k] for k in used}, strict=True)
    return hf, ours, cfg


@pytest.mark.parametrize("shape", SHAPES)
def test_matches_transformers_layer_l_minus_2_fp32(shape):
    hf, ours, cfg = _hf_pair(shape)
    torch.manual_seed(1)
    pixels = torch.rand(2, 3, cfg.image_size, cfg.image_size) * 2 - 1
    with torch.no_grad():
        hidden_states = hf(pixel_values=pixels, output_hidden_states=True).hidden_states
        got = ours(pixels)
    # hidden_states[0] is the embedding output, so layer index L-2's output is hidden_states[L-1].
    want = hidden_states[cfg.num_hidden_layers - 1]
    assert got.shape == (2, cfg.num_patches, cfg.hidden_size)
    assert got.dtype == torch.float32
    err = (got - want).abs().max().item()
    assert err < 1e-5, f"max abs error {err}"


def test_select_layer_minus_one_is_last_layer_before_post_layernorm():
    hf, _, cfg = _hf_pair(SHAPES[0])
    ours = SiglipVisionEncoder(cfg, select_layer=-1).eval()
    ours.load_state_dict(
        {k: v for k, v in hf.vision_model.state_dict().items() if k in ours.state_dict()},
        strict=True,
    )
    pixels = torch.rand(1, 3, cfg.image_size, cfg.image_size) * 2 - 1
    with torch.no_grad():
        want = hf(pixel_values=pixels, output_hidden_states=True).hidden_states[-1]
        got = ours(pixels)
    assert (got - want).abs().max().item() < 1e-5


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_transformers_half_precision(shape, dtype):
    hf, ours, cfg = _hf_pair(shape)
    hf, ours = hf.to(dtype), ours.to(dtype)
    torch.manual_seed(2)
    pixels = torch.rand(2, 3, cfg.image_size, cfg.image_size) * 2 - 1
    with torch.no_grad():
        want = hf(pixel_values=pixels.to(dtype), output_hidden_states=True).hidden_states[
            cfg.num_hidden_layers - 1
        ]
        got = ours(pixels)  # float32 pixels are cast to the model dtype inside
    assert got.dtype == dtype
    assert torch.isfinite(got).all()
    # Same ops in the same order as transformers' eager path (bit-identical here); allow about
    # one bf16 unit in the last place at the output's scale for other CPU kernels.
    scale = want.float().abs().max().item()
    err = (got.float() - want.float()).abs().max().item()
    assert err <= 1e-2 * scale, f"max abs error {err} (scale {scale})"


def _fixture_encoder(tiny_fixture):
    siglip_cfg = json.loads((tiny_fixture / "reference/siglip_config/config.json").read_text())
    cfg = SiglipVisionConfig.from_siglip_config(siglip_cfg)
    state = load_file(tiny_fixture / "vision_tower/model.safetensors")
    vision = {k[len(PREFIX) :]: v for k, v in state.items() if k.startswith(PREFIX)}
    used = SiglipVisionEncoder.used_keys(cfg)
    ignored = SiglipVisionEncoder.ignored_keys(cfg)
    assert set(used) | set(ignored) == set(vision), "a vision_model key is neither used nor ignored"
    encoder = SiglipVisionEncoder(cfg).eval()
    encoder.load_state_dict({k: vision[k] for k in used}, strict=True)
    return encoder, cfg


def test_fixture_siglip_features(tiny_fixture):
    encoder, cfg = _fixture_encoder(tiny_fixture)
    assert (cfg.grid, cfg.hidden_size, len(encoder.encoder.layers)) == (4, 64, 2)
    ref = tiny_fixture / "reference"
    pixels = torch.from_numpy(np.load(ref / "pixel_values.npy"))
    want = np.load(ref / "siglip_features.npy").reshape(3, 16, 64)
    with torch.no_grad():
        got = encoder(pixels).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)


def test_fixture_bf16_close_to_fp32_reference(tiny_fixture):
    encoder, _ = _fixture_encoder(tiny_fixture)
    ref = tiny_fixture / "reference"
    pixels = torch.from_numpy(np.load(ref / "pixel_values.npy"))
    want = np.load(ref / "siglip_features.npy").reshape(3, 16, 64)
    with torch.no_grad():
        got = encoder.to(torch.bfloat16)(pixels).float().numpy()
    # bf16 keeps 8 bits of mantissa; two layers of rounding stay within a few percent.
    assert np.abs(got - want).max() <= 0.05 * np.abs(want).max()


def test_preprocess_reproduces_official_pixels(tiny_fixture):
    ref = tiny_fixture / "reference"
    images = [Image.open(ref / name) for name in IMAGES]
    resized = np.stack([np.asarray(im.convert("RGB").resize((32, 32))) for im in images])
    np.testing.assert_array_equal(resized, np.load(ref / "images_resized_uint8.npy"))
    pixels = preprocess(images, 32)
    assert pixels.shape == (3, 3, 32, 32) and pixels.dtype == torch.float32
    want = np.load(ref / "pixel_values.npy")
    np.testing.assert_allclose(pixels.numpy(), want, atol=1e-6, rtol=0)


def test_preprocess_converts_mode_and_resizes():
    gray = Image.fromarray(np.arange(50 * 30, dtype=np.uint8).reshape(30, 50) % 251, mode="L")
    rgba = Image.new("RGBA", (7, 9), (255, 0, 0, 10))
    pixels = preprocess([gray, rgba], 16)
    assert pixels.shape == (2, 3, 16, 16)
    # Alpha is dropped (convert("RGB")), so the RGBA image is pure red: (255/255-0.5)/0.5 = 1.
    assert torch.equal(pixels[1, 0], torch.ones(16, 16))
    assert torch.equal(pixels[1, 1], -torch.ones(16, 16))


def test_config_defaults_match_transformers():
    transformers = pytest.importorskip("transformers")
    hf = transformers.SiglipVisionConfig()
    # A hub SigLIP config that omits every vision field equal to the default.
    cfg = SiglipVisionConfig.from_siglip_config({"model_type": "siglip", "vision_config": {}})
    for name in SiglipVisionConfig.__dataclass_fields__:
        assert getattr(cfg, name) == getattr(hf, name), name


def test_config_and_input_errors():
    with pytest.raises(ValueError, match="num_attention_heads"):
        SiglipVisionConfig(64, 128, 3, 5, 32, 8)
    with pytest.raises(ValueError, match="hidden_act"):
        SiglipVisionConfig(64, 128, 3, 4, 32, 8, hidden_act="relu")
    with pytest.raises(ValueError, match="model_type"):
        SiglipVisionConfig.from_siglip_config({"vision_config": {"model_type": "clip"}})
    cfg = SiglipVisionConfig(64, 128, 3, 4, 32, 8)
    with pytest.raises(ValueError, match="select_layer"):
        SiglipVisionEncoder(cfg, select_layer=1)
    with pytest.raises(ValueError, match="select_layer"):
        SiglipVisionEncoder(cfg, select_layer=-4)
    encoder = SiglipVisionEncoder(cfg)
    with pytest.raises(ValueError, match="preprocess"):
        encoder(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="list"):
        preprocess(Image.new("RGB", (4, 4)), 32)
