"""Our LLaMA against transformers' LlamaForCausalLM with the same random weights."""

from __future__ import annotations

import pytest
import torch

from vilau_rt.model.llama import LlamaConfig, LlamaForCausalLM

transformers = pytest.importorskip("transformers")


def _pair(rope_scaling=None, n_kv=4, dtype=torch.float32, seed=0):
    cfg = LlamaConfig(
        vocab_size=101, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=n_kv, max_position_embeddings=32,
        rms_norm_eps=1e-5, rope_scaling=rope_scaling,
    )  # fmt: skip
    hf_cfg = transformers.LlamaConfig(**{k: v for k, v in cfg.to_hf().items() if k != "extra"})
    hf_cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    hf = transformers.LlamaForCausalLM(hf_cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0, 0.2)
    ours = LlamaForCausalLM(cfg)
    missing = ours.load_state_dict(hf.state_dict(), strict=False)
    assert not missing.missing_keys and not missing.unexpected_keys, missing
    return cfg, hf.to(dtype), ours.to(dtype).eval()


@pytest.mark.parametrize(
    "rope_scaling,n_kv",
    [(None, 4), (None, 2), ({"type": "linear", "factor": 2.0}, 4)],
)
def test_prefill_logits_match_transformers(rope_scaling, n_kv):
    cfg, hf, ours = _pair(rope_scaling, n_kv)
    ids = torch.randint(0, cfg.vocab_size, (2, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(ids).logits
        pos = torch.arange(20).expand(2, 20)
        got = ours.logits(ours(ours.embed(ids), pos))
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


def test_kv_cached_decode_equals_full_forward():
    cfg, hf, ours = _pair(n_kv=2)
    ids = torch.randint(0, cfg.vocab_size, (1, 24), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = hf(ids).logits[0]
        ours.setup_cache(1, 24)
        h = ours(ours.embed(ids[:, :10]), torch.arange(10)[None], 0)
        steps = [ours.logits(h)[0]]
        for t in range(10, 24):
            h = ours(ours.embed(ids[:, t : t + 1]), torch.tensor([[t]]), t)
            steps.append(ours.logits(h)[0])
    torch.testing.assert_close(torch.cat(steps), ref, rtol=1e-4, atol=1e-4)


def test_left_padded_rows_match_unpadded_runs():
    """A left-padded row with shifted positions gives the logits of the same row run alone."""
    cfg, hf, ours = _pair()
    g = torch.Generator().manual_seed(3)
    short = torch.randint(3, cfg.vocab_size, (1, 7), generator=g)
    long = torch.randint(3, cfg.vocab_size, (1, 12), generator=g)
    ids = torch.cat([torch.cat([torch.zeros(1, 5, dtype=torch.long), short], 1), long])
    mask = (torch.arange(12) >= 5).long().expand(2, 12).clone()
    mask[1] = 1
    pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    with torch.no_grad():
        got = ours.logits(ours(ours.embed(ids), pos, 0, mask.bool()))
        ref_short = hf(short).logits[0]
        ref_long = hf(long).logits[0]
    torch.testing.assert_close(got[0, 5:], ref_short, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got[1], ref_long, rtol=1e-4, atol=1e-4)


def test_dynamic_rope_beyond_trained_length_matches_transformers():
    cfg, hf, ours = _pair({"type": "dynamic", "factor": 2.0})
    ids = torch.randint(0, cfg.vocab_size, (1, 40), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref = hf(ids).logits
        got = ours.logits(ours(ours.embed(ids), torch.arange(40)[None]))
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


def test_bfloat16_close_to_float32_reference():
    cfg, hf, ours = _pair()
    ids = torch.randint(0, cfg.vocab_size, (1, 16), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = hf(ids).logits
        ours = ours.to(torch.bfloat16)
        got = ours.logits(ours(ours.embed(ids), torch.arange(16)[None]))
    rel = (got - ref).norm() / ref.norm()
    assert rel < 0.03, rel


def test_unsupported_rope_scaling_is_rejected():
    with pytest.raises(ValueError, match="rope_scaling"):
        LlamaConfig(10, 8, 16, 1, 2, 2, 16, rope_scaling={"type": "yarn", "factor": 4.0})
