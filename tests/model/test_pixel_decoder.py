"""Pixel decoder against the official VILA-U fixture, plus float64 re-derivations of its blocks
written here with torch.nn.functional calls only."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from vilau_rt.model.pixel_decoder import PixelDecoder, PixelDecoderConfig, to_uint8

PREFIX = "rqvaesiglip."


def _fixture_decoder(tiny_fixture):
    tower = json.loads((tiny_fixture / "vision_tower/config.json").read_text())["rqvaesiglip"]
    cfg = PixelDecoderConfig.from_ddconfig(
        tower["ddconfig"], tower["embed_dim"], tower["decoder_latent_shape"]
    )
    state = load_file(tiny_fixture / "vision_tower/model.safetensors")
    wanted = {
        k[len(PREFIX) :]: v
        for k, v in state.items()
        if k.startswith((PREFIX + "post_quant_conv.", PREFIX + "decoder."))
    }
    decoder = PixelDecoder(cfg).eval()
    decoder.load_state_dict(wanted, strict=True)
    return decoder


def test_fixture_decode_matches_official(tiny_fixture):
    decoder = _fixture_decoder(tiny_fixture)
    ref = tiny_fixture / "reference"
    z = torch.from_numpy(np.load(ref / "decode_input_cumsum.npy"))  # [3, 4, 4, 64]
    with torch.no_grad():
        raw = decoder(z)
    want = np.load(ref / "decoded_raw.npy")
    assert raw.shape == want.shape == (3, 3, 32, 32)
    err = np.abs(raw.numpy() - want).max()
    assert err < 1e-4, f"max abs error {err}"

    pixels = to_uint8(raw)
    want_u8 = np.load(ref / "decoded_uint8.npy")
    assert pixels.shape == want_u8.shape and pixels.dtype == np.uint8
    diff = np.abs(pixels.astype(np.int16) - want_u8.astype(np.int16))
    assert diff.max() <= 1
    # Truncation flips a pixel only when the float sits within ~1e-4 of an integer.
    assert np.count_nonzero(diff) <= 3, f"{np.count_nonzero(diff)} pixels differ by 1"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fixture_decode_half_precision(tiny_fixture, dtype):
    decoder = _fixture_decoder(tiny_fixture).to(dtype)
    ref = tiny_fixture / "reference"
    z = torch.from_numpy(np.load(ref / "decode_input_cumsum.npy"))
    with torch.no_grad():
        raw = decoder(z)
    assert raw.dtype == dtype
    want = np.load(ref / "decoded_raw.npy")
    # Measured: 2.6% (bf16) and 1.2% (fp16) of the output range after ~20 rounded convs.
    assert np.abs(raw.float().numpy() - want).max() < 0.05 * np.abs(want).max()


def test_to_uint8_clamps_and_truncates():
    raw = torch.tensor([-2.0, -1.0, 0.0, 0.999, 1.0, 3.0]).reshape(1, 3, 1, 2)
    # (x+1)*127.5 = [-127.5, 0, 127.5, 254.87, 255, 510] -> clamp -> truncate
    got = to_uint8(raw)
    assert got.shape == (1, 1, 2, 3)
    assert got.transpose(0, 3, 1, 2).ravel().tolist() == [0, 0, 127, 254, 255, 255]


def _wide_config(**overrides):
    # Two levels with a channel change (64 at level 1 -> 32 at level 0) and attention at both
    # resolutions: exercises nin_shortcut, up-level AttnBlocks and the upsample.
    dd = {
        "ch": 32,
        "ch_mult": [1, 2],
        "num_res_blocks": 1,
        "attn_resolutions": [8, 16],
        "resolution": 16,
        "z_channels": 32,
        "out_ch": 3,
        "in_channels": 3,
        "dropout": 0.0,
        "double_z": False,
    }
    dd.update(overrides)
    return PixelDecoderConfig.from_ddconfig(dd, embed_dim=48, decoder_latent_shape=None)


def _randomize(module, seed=0):
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.2 * torch.randn_like(p) + (1.0 if p.ndim == 1 and p.numel() > 0 else 0.0))
    return module


def test_channel_change_and_attention_levels():
    cfg = _wide_config()
    decoder = _randomize(PixelDecoder(cfg).eval())
    keys = set(decoder.state_dict())
    for key in (
        "decoder.up.0.block.0.nin_shortcut.weight",  # 64 -> 32
        "decoder.up.0.attn.1.proj_out.weight",  # level 0 has resolution 16
        "decoder.up.1.attn.0.q.weight",  # level 1 has resolution 8
        "decoder.up.1.upsample.conv.weight",
    ):
        assert key in keys, key
    assert not any(k.startswith("decoder.up.0.upsample") for k in keys)
    assert not any("nin_shortcut" in k for k in keys if k.startswith("decoder.up.1."))
    assert decoder.state_dict()["decoder.conv_in.weight"].shape == (64, 32, 3, 3)
    assert decoder.state_dict()["decoder.up.0.block.0.nin_shortcut.weight"].shape == (32, 64, 1, 1)
    with torch.no_grad():
        out = decoder(torch.randn(2, 8, 8, 48))
    assert out.shape == (2, 3, 16, 16)
    assert torch.isfinite(out).all()


def test_attention_placement_follows_nominal_resolution():
    # Only the lowest level (resolution 16 // 2 = 8) gets AttnBlocks.
    keys = set(PixelDecoder(_wide_config(attn_resolutions=[8])).state_dict())
    assert any(k.startswith("decoder.up.1.attn.") for k in keys)
    assert not any(k.startswith("decoder.up.0.attn.") for k in keys)
    keys = set(PixelDecoder(_wide_config(attn_resolutions=[])).state_dict())
    assert not any(".attn." in k for k in keys) and "decoder.mid.attn_1.q.weight" in keys


def _resnet_reference(block, x):
    """Float64 ResnetBlock written from the maths: GN -> SiLU -> conv3x3 -> GN -> SiLU ->
    conv3x3, plus a 1x1 shortcut when the width changes."""
    p = {k: v.double() for k, v in block.state_dict().items()}
    h = F.group_norm(x, 32, p["norm1.weight"], p["norm1.bias"], eps=1e-6)
    h = h * torch.sigmoid(h)
    h = F.conv2d(h, p["conv1.weight"], p["conv1.bias"], padding=1)
    h = F.group_norm(h, 32, p["norm2.weight"], p["norm2.bias"], eps=1e-6)
    h = h * torch.sigmoid(h)
    h = F.conv2d(h, p["conv2.weight"], p["conv2.bias"], padding=1)
    if "nin_shortcut.weight" in p:
        x = F.conv2d(x, p["nin_shortcut.weight"], p["nin_shortcut.bias"])
    return x + h


def _attn_reference(block, x):
    """Float64 AttnBlock: out_i = x_i + W_o sum_j softmax_j(q_i . k_j / sqrt(c)) v_j."""
    p = {k: v.double() for k, v in block.state_dict().items()}
    b, c, hh, ww = x.shape
    h = F.group_norm(x, 32, p["norm.weight"], p["norm.bias"], eps=1e-6)
    q, k, v = (F.conv2d(h, p[f"{n}.weight"], p[f"{n}.bias"]).flatten(2) for n in "qkv")
    scores = torch.einsum("bci,bcj->bij", q, k) / c**0.5
    a = torch.softmax(scores, dim=-1)
    out = torch.einsum("bij,bcj->bci", a, v).reshape(b, c, hh, ww)
    return x + F.conv2d(out, p["proj_out.weight"], p["proj_out.bias"])


def test_blocks_match_float64_rederivation():
    decoder = _randomize(PixelDecoder(_wide_config()).eval()).double()
    torch.manual_seed(3)
    resnet = decoder.decoder.up[0].block[0]  # 64 -> 32, has nin_shortcut
    attn = decoder.decoder.up[1].attn[0]  # 64 channels at 8x8
    x_res = torch.randn(2, 64, 16, 16, dtype=torch.float64)
    x_att = torch.randn(2, 64, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        assert (resnet(x_res) - _resnet_reference(resnet, x_res)).abs().max() < 1e-10
        assert (attn(x_att) - _attn_reference(attn, x_att)).abs().max() < 1e-10


def test_decoder_latent_shape_resizes_bilinearly_before_decoding():
    cfg = _wide_config()
    resized_cfg = PixelDecoderConfig(**{**cfg.__dict__, "decoder_latent_shape": (6, 6)})
    plain = _randomize(PixelDecoder(cfg).eval())
    resized = PixelDecoder(resized_cfg).eval()
    resized.load_state_dict(plain.state_dict(), strict=True)
    z = torch.randn(1, 4, 4, 48)
    with torch.no_grad():
        got = resized(z)
        z6 = F.interpolate(z.permute(0, 3, 1, 2), size=(6, 6), mode="bilinear", align_corners=False)
        want = plain(z6.permute(0, 2, 3, 1))
    assert got.shape == (1, 3, 12, 12)
    assert (got - want).abs().max() < 1e-5


def test_config_and_input_errors():
    with pytest.raises(ValueError, match="unknown keys"):
        _wide_config(mystery=1)
    with pytest.raises(ValueError, match="resamp_with_conv"):
        _wide_config(resamp_with_conv=False)
    with pytest.raises(ValueError, match="GroupNorm"):
        _wide_config(ch=48)
    with pytest.raises(ValueError, match="decoder_latent_shape"):
        PixelDecoderConfig(**{**_wide_config().__dict__, "decoder_latent_shape": [3]})
    decoder = PixelDecoder(_wide_config())
    with pytest.raises(ValueError, match="channels last"):
        decoder(torch.zeros(1, 48, 4, 4))
    with pytest.raises(ValueError, match="B, 3, H, W"):
        to_uint8(torch.zeros(1, 4, 4, 3))
