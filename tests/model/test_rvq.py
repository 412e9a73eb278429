"""Residual quantizer module: official codes on the fixture features, float64 properties."""

from __future__ import annotations

import numpy as np
import torch

from vilau_rt.model.rvq import ResidualQuantizer, RVQConfig
from vilau_rt.model.safetensors_io import SafetensorsFile


def _fixture_rvq(root):
    f = SafetensorsFile(root / "vision_tower" / "model.safetensors")
    rvq = ResidualQuantizer(RVQConfig(n_embed=128, embed_dim=64, depth=4, grid=(4, 4)))
    rvq.load_state_dict(
        {
            f"codebooks.{d}.weight": f.get(f"rqvaesiglip.quantizer.codebooks.{d}.weight")
            for d in range(4)
        }
    )
    return rvq


def test_codes_and_z_q_match_official(tiny_fixture):
    rvq = _fixture_rvq(tiny_fixture)
    ref = tiny_fixture / "reference"
    feats = torch.from_numpy(np.load(ref / "siglip_features.npy"))
    codes, z_q = rvq.encode(feats)
    assert torch.equal(codes, torch.from_numpy(np.load(ref / "codes.npy")))
    torch.testing.assert_close(z_q, torch.from_numpy(np.load(ref / "z_q.npy")), rtol=0, atol=1e-6)
    summed = rvq.embed_sum(codes)
    cumsum_ref = torch.from_numpy(np.load(ref / "decode_input_cumsum.npy"))
    torch.testing.assert_close(summed, cumsum_ref, rtol=0, atol=1e-6)


def test_encode_is_the_float64_residual_argmin():
    g = torch.Generator().manual_seed(0)
    cfg = RVQConfig(n_embed=40, embed_dim=12, depth=3)
    rvq = ResidualQuantizer(cfg).double()
    with torch.no_grad():
        for cb in rvq.codebooks:
            cb.weight.copy_(torch.randn(41, 12, generator=g, dtype=torch.float64))
    x = torch.randn(30, 12, generator=g, dtype=torch.float64)
    codes, z_q = rvq.encode(x)
    r = x.clone()
    for d in range(3):
        table = rvq.codebooks[d].weight[:-1]
        k = ((r[:, None, :] - table[None]) ** 2).sum(-1).argmin(-1)
        assert torch.equal(codes[:, d], k)
        r = r - table[k]
    torch.testing.assert_close(z_q, x - r)


def test_padding_row_is_never_chosen():
    cfg = RVQConfig(n_embed=8, embed_dim=4, depth=2)
    rvq = ResidualQuantizer(cfg)
    x = torch.randn(5, 4)
    with torch.no_grad():
        for cb in rvq.codebooks:
            cb.weight.copy_(torch.randn(9, 4) + 10.0)
            cb.weight[-1] = 0.0  # the padding row is the nearest to everything small
    codes, _ = rvq.encode(x * 0.01)
    assert int(codes.max()) < 8


def test_shared_codebook_uses_one_table_at_every_depth():
    rvq = ResidualQuantizer(RVQConfig(n_embed=16, embed_dim=4, depth=3, shared_codebook=True))
    assert len(rvq.codebooks) == 1
    codes = torch.tensor([[1, 2, 3]])
    w = rvq.codebooks[0].weight
    torch.testing.assert_close(rvq.embed_sum(codes)[0], w[1] + w[2] + w[3])


def test_stacked_codebooks_of_separate_tables_is_a_copy_in_the_kernel_layout():
    rvq = ResidualQuantizer(RVQConfig(n_embed=6, embed_dim=4, depth=3))
    stacked = rvq.stacked_codebooks()
    assert stacked.shape == (3, 7, 4) and stacked.is_contiguous()
    for d, cb in enumerate(rvq.codebooks):
        assert torch.equal(stacked[d], cb.weight)
    assert stacked.data_ptr() != rvq.codebooks[0].weight.data_ptr()


def test_loaded_codebooks_lie_in_one_tensor_and_stack_without_a_copy(tiny_fixture):
    """load_vilau reads the codebooks into one [D, R, C] tensor: stacked_codebooks() is a view
    of the model's own tables (no second copy, counted 1.2 GB at 7B-384) holding the file's values."""
    from vilau_rt.model.checkpoint import load_vilau

    model = load_vilau(tiny_fixture, siglip_config=tiny_fixture / "reference" / "siglip_config")
    books = model.quantizer.codebooks
    stacked = model.quantizer.stacked_codebooks()
    assert stacked.shape == (4, 129, 64) and stacked.is_contiguous()
    assert stacked.data_ptr() == books[0].weight.data_ptr()
    f = SafetensorsFile(tiny_fixture / "vision_tower" / "model.safetensors")
    for d in range(4):
        stored = f.get(f"rqvaesiglip.quantizer.codebooks.{d}.weight")
        assert torch.equal(stacked[d], stored) and torch.equal(books[d].weight, stored)
    with torch.no_grad():
        books[2].weight[5, 1] = 123.0  # one storage: the view follows the table
    assert float(model.quantizer.stacked_codebooks()[2, 5, 1]) == 123.0
