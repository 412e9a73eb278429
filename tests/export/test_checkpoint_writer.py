"""The random-weight checkpoint writer and the shape presets."""

from __future__ import annotations

import json

import pytest
import torch
from vilau_export import checkpoint_writer
from vilau_export.checkpoint_writer import write_checkpoint

from vilau_rt.errors import ConfigError
from vilau_rt.model.checkpoint import load_vilau
from vilau_rt.model.config import preset, read_config
from vilau_rt.model.vilau import VilaU


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_checkpoint(preset("tiny-256"), tmp_path_factory.mktemp("w") / "tiny")


def test_written_checkpoint_has_the_official_layout_and_loads(tiny):
    for f in ("config.json", "llm/config.json", "llm/tokenizer.model", "llm/added_tokens.json",
              "llm/tokenizer_config.json", "llm/special_tokens_map.json",
              "llm/generation_config.json", "vision_tower/config.json",
              "vision_tower/preprocessor_config.json", "vision_tower/model.safetensors",
              "mm_projector/config.json", "mm_projector/model.safetensors"):  # fmt: skip
        assert (tiny / f).is_file(), f
    ignored = []
    model = load_vilau(tiny, ignored=ignored)
    assert any("logit_scale" in k for k in ignored) and any("_ema" in k for k in ignored)
    assert any("encoder.layers.2." in k for k in ignored)  # the unused last SigLIP layer
    codes, _ = model.encode_images(torch.randn(2, 3, 32, 32))
    assert codes.shape == (2, 4, 4, 4) and int(codes.max()) < 128


def test_added_tokens_take_the_last_four_ids(tiny):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(tiny / "llm" / "tokenizer.model"))
    added = json.loads((tiny / "llm" / "added_tokens.json").read_text())
    V = preset("tiny-256").llm.vocab_size
    assert sp.get_piece_size() == V - 4
    assert added == {"<im_start>": V - 4, "<im_end>": V - 3, "<vi_start>": V - 2, "<vi_end>": V - 1}


def test_config_round_trips_through_the_official_files(tiny):
    cfg = read_config(tiny)
    ref = preset("tiny-256")
    assert cfg.llm.hidden_size == ref.llm.hidden_size and cfg.rvq == ref.rvq
    assert cfg.depth == ref.depth and cfg.decoder == ref.decoder and cfg.vision == ref.vision


def test_sharded_write_loads_like_single_file(tmp_path):
    cfg = preset("tiny-256")
    a = write_checkpoint(cfg, tmp_path / "a", seed=3)
    b = write_checkpoint(cfg, tmp_path / "b", seed=3, shard_bytes=200_000)
    assert (b / "llm" / "model.safetensors.index.json").is_file()
    sa, sb = load_vilau(a).state_dict(), load_vilau(b).state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(checkpoint_writer, "_write_tokenizer", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        write_checkpoint(preset("tiny-256"), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_existing_folder_is_not_overwritten_by_default(tiny):
    with pytest.raises(FileExistsError):
        write_checkpoint(preset("tiny-256"), tiny)


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_7b_presets_have_the_published_part_sizes():
    """vila-u.md: LLaMA-2-7B 6.7B, depth transformer ~527M, projector ~21M, decoder ~42M."""
    with torch.device("meta"):
        m = VilaU(preset("7b-256"))
    assert 6.6e9 < _count(m.llm) < 6.8e9
    assert 0.50e9 < _count(m.depth_transformer) < 0.55e9
    assert 20e6 < _count(m.mm_projector) < 22e6
    assert 38e6 < _count(m.pixel_decoder) < 46e6
    assert preset("7b-256").tokens_per_image == 256
    c384 = preset("7b-384")
    assert c384.tokens_per_image == 729 and c384.rvq.depth == 16


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ConfigError, match="tiny-256.*7b-256.*7b-384"):
        preset("7b")
