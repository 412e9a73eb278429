"""Depth transformer: official fixture logits and codes; KV cache vs full recomputation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vilau_rt.model.depth import DepthTransformer, DepthTransformerConfig
from vilau_rt.model.safetensors_io import SafetensorsFile
from vilau_rt.sampling import sample_codes


def _fixture_depth(root):
    f = SafetensorsFile(root / "vision_tower" / "model.safetensors")
    cfg = DepthTransformerConfig(64, 2, 4, 128, 4, 64, 96)
    model = DepthTransformer(cfg)
    sd = {k[len("rqtransformer.") :]: f.get(k) for k in f.names() if k.startswith("rqtransformer.")}
    model.load_state_dict(sd, strict=True)
    books = [f.get(f"rqvaesiglip.quantizer.codebooks.{d}.weight") for d in range(4)]
    return model.eval(), books


def _ref(root, name):
    return torch.from_numpy(np.load(root / "reference" / name))


def test_teacher_forced_logits_match_official(tiny_fixture):
    model, books = _fixture_depth(tiny_fixture)
    hidden = _ref(tiny_fixture, "depth_in_hidden.npy")[0]  # [P, 96]
    codes = _ref(tiny_fixture, "depth_in_codes.npy")[0]  # [P, D]
    emb = torch.stack([books[d][codes[:, d]] for d in range(4)], dim=1).cumsum(dim=1)
    with torch.no_grad():
        got = model(hidden, emb)
    ref = _ref(tiny_fixture, "depth_logits.npy")[0]
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)


def test_cfg_greedy_generation_matches_official(tiny_fixture):
    model, books = _fixture_depth(tiny_fixture)
    hidden = _ref(tiny_fixture, "depth_gen_in_hidden.npy")[:, 0]  # [4, 96]
    codes, summed = model.generate(
        hidden, lambda d, c: books[d][c], 3.0, lambda lg: sample_codes(lg, top_k=1)
    )
    ref_codes = _ref(tiny_fixture, "depth_gen_codes.npy")[:, 0]  # [4, D] rows a, b, a, b
    assert torch.equal(codes, ref_codes[:2])
    ref_feat = _ref(tiny_fixture, "depth_gen_features.npy")[:2, 0]
    torch.testing.assert_close(summed, ref_feat, rtol=1e-5, atol=1e-6)


def _recompute_logits(model, hidden, embeds):
    """Upstream's way: rebuild the whole depth sequence at every depth, no cache."""
    out = []
    D = len(embeds) + 1
    for d in range(D):
        seq = [model.in_mlp_2(hidden)]
        if d:
            cums = torch.stack(embeds[:d], 1).cumsum(1)
            seq += [model.in_mlp_1(cums[:, j]) for j in range(d)]
        x = torch.stack(seq, 1) + model.pos_emb_d[:, : d + 1]
        for block in model.head_transformer.blocks:
            x = block(x)
        out.append(model.classifier_mlp(x[:, -1]))
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kv_cache_gives_the_logits_of_full_recomputation(dtype):
    torch.manual_seed(0)
    cfg = DepthTransformerConfig(48, 3, 6, 50, 5, 16, 40)
    model = DepthTransformer(cfg).to(dtype).eval()
    with torch.no_grad():
        model.pos_emb_d.normal_()
    books = [torch.randn(51, 16, dtype=dtype) for _ in range(5)]
    hidden = torch.randn(6, 40, dtype=dtype)
    seen = []
    codes, _ = model.generate(
        hidden,
        lambda d, c: books[d][c],
        2.5,
        lambda lg: sample_codes(lg, top_k=1),
        on_logits=lambda d, lg: seen.append(lg),
    )
    embeds = [books[d][codes[:, d]].repeat(2, 1) for d in range(4)]
    with torch.no_grad():
        ref = _recompute_logits(model, hidden, embeds)
    for d in range(5):
        torch.testing.assert_close(seen[d], ref[d], rtol=1e-5, atol=1e-5)
