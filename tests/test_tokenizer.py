"""Tokenizer parity: the ids the official code (transformers 4.36.2 slow LlamaTokenizer,
legacy=False) wrote into the fixture, and transformers' own slow LlamaTokenizer on random text."""

from __future__ import annotations

import random
import shutil

import numpy as np
import pytest

from vilau_rt.tokenizer import StreamDecoder, Tokenizer

SPECIALS = ["<s>", "</s>", "<unk>", "<im_start>", "<im_end>", "<vi_start>", "<vi_end>"]
WORDS = ["a", "chat", "USER:", "ASSISTANT:", "hello", "world", "the", "assistant", "Apple", "red",
         "table", "questions.", "don't", "x", "<image>", "<", ">", "s>", "</", "<im", "_start>"]  # fmt: skip
UNICODE = ["é", "ü", "ñ", "中文", "日本", "😀", "👍🏽", "€", "ß", "Ω", "한국어", "🇫🇷", "\u2581",
           "\u00a0", "\t", "\r"]  # fmt: skip
SPACES = [" ", "  ", "   ", "\n", "\n\n", " \n", "\n ", "\t"]
# Multi-byte characters the tiny vocabulary spells with byte-fallback pieces.
MULTIBYTE = ["é", "中", "😀", "€", "👍🏽", "한"]


def random_text(rng: random.Random) -> str:
    """ASCII words, digits, unicode, runs of spaces/newlines and special tokens, anywhere."""
    parts = []
    for _ in range(rng.randint(0, 12)):
        r = rng.random()
        if r < 0.4:
            parts.append(rng.choice(WORDS))
        elif r < 0.55:
            parts.append(str(rng.randint(0, 100000)))
        elif r < 0.7:
            parts.append(rng.choice(UNICODE))
        elif r < 0.85:
            parts.append(rng.choice(SPECIALS))
        else:
            parts.append(rng.choice(SPACES))
        parts.append(rng.choice(["", " ", " ", "  ", "\n"]))
    text = "".join(parts)
    if rng.random() < 0.3:
        text = rng.choice(SPACES) + text
    if rng.random() < 0.3:
        text += rng.choice(SPACES)
    return text


EDGE_TEXTS = ["", " ", "  ", "\n", "\u2581", "\u2581\u2581", " \u2581", "<s>", " <s>", "<s> ",
              "a<s>b", "a <s> b", "<s><s>", "</s></s>", "<im_start><im_end>", " <im_start> ",
              "\n<im_start>", "\u2581<im_start>", "<unk>", "x<unk>", "<image>"]  # fmt: skip


@pytest.fixture(scope="module")
def tok(tiny_fixture) -> Tokenizer:
    return Tokenizer.from_folder(tiny_fixture / "llm")


@pytest.fixture(scope="module")
def hf_tok(tiny_fixture):
    """transformers' slow LlamaTokenizer as the official code loads it (legacy=False)."""
    pytest.importorskip("transformers", reason="transformers is a test-only dependency")
    # legacy=False edits the sentencepiece proto (add_dummy_prefix off) through protobuf.
    pytest.importorskip("google.protobuf", reason="LlamaTokenizer(legacy=False) needs protobuf")
    from transformers import LlamaTokenizer

    return LlamaTokenizer.from_pretrained(tiny_fixture / "llm", legacy=False, use_fast=False)


def _ref(tiny_fixture, name):
    return np.load(tiny_fixture / "reference" / name)


# -- fixture ids written by the official code --------------------------------------------------
def test_special_token_ids_match_fixture_table(tok):
    # README "Tokenizer and special tokens".
    assert (tok.unk_id, tok.bos_id, tok.eos_id, tok.pad_id) == (0, 1, 2, 0)
    assert (tok.im_start_id, tok.im_end_id, tok.vi_start_id, tok.vi_end_id) == (512, 513, 514, 515)
    assert tok.vocab_size == 516 == len(tok)


def test_understanding_prompt_chunks_match_fixture(tok, tiny_fixture):
    ref = _ref(tiny_fixture, "und_input_ids.npy")[0].tolist()
    cut = ref.index(-200)
    system = (
        "A chat between a curious user and an artificial intelligence assistant. The assistant "
        "gives helpful, detailed, and polite answers to the user's questions."
    )
    # tokenizer_image_token: each chunk tokenized on its own, its BOS dropped.
    assert tok.encode(f"{system} USER: ") == [1, *ref[1:cut]]
    assert tok.encode("\nWhat is shown in this image? ASSISTANT:") == [1, *ref[cut + 1 :]]


def test_understanding_chunks_keep_lone_prefix_pieces(tok):
    # README: the trailing space of "USER: " is a lone "▁"; "\n" after the image is "▁", <0x0A>.
    assert tok.tokenize("x USER: ")[-1] == "\u2581"
    assert tok.tokenize("\nWhat")[:2] == ["\u2581", "<0x0A>"]


def test_generation_prompts_match_fixture(tok, tiny_fixture):
    ids, mask = (
        _ref(tiny_fixture, "gen_input_ids.npy"),
        _ref(tiny_fixture, "gen_attention_mask.npy"),
    )
    head = (
        "A chat between a curious user and an artificial intelligence assistant. The assistant "
        "gives helpful, detailed, and polite answers to the user's questions. USER:"
    )
    texts = [
        f"{head} a red apple on a wooden table ASSISTANT: <im_start>",
        f"{head}ASSISTANT: <im_start>",
    ]
    for row, m, text in zip(ids, mask, texts):
        assert tok.encode(text) == row[m.astype(bool)].tolist()
    # README: " <im_start>" tokenizes as "▁", <im_start>.
    assert tok.tokenize(texts[0])[-2:] == ["\u2581", "<im_start>"]


def test_decode_of_fixture_greedy_ids(tok, tiny_fixture):
    ids = _ref(tiny_fixture, "und_greedy_ids.npy")[0].tolist()
    # README: generate_content's decode (skip_special_tokens=True) of the returned ids.
    assert tok.decode(ids) == "ingen aF wooVing\ufffdes\u0010\ufffdn"
    assert tok.decode(ids[1:]) == tok.decode(ids)  # the leading BOS is skipped


# -- transformers' slow LlamaTokenizer -----------------------------------------------------------
def test_encode_matches_transformers_on_random_text(tok, hf_tok):
    rng = random.Random(20240904)
    texts = EDGE_TEXTS + [random_text(rng) for _ in range(200)]
    for text in texts:
        assert tok.encode(text) == hf_tok(text).input_ids, repr(text)
        assert tok.encode(text, add_bos=False) == hf_tok(text).input_ids[1:], repr(text)
        assert tok.tokenize(text) == hf_tok.tokenize(text), repr(text)


def _hf_436_differs(hf_tok, ids) -> bool:
    """transformers >= 4.38 inserts a space after a special token that opens a decode run when
    the next piece has no "▁" (convert_tokens_to_string, `prev_is_special and i == 1`); 4.36.2,
    which the official code runs, has no such rule (decodes <s> + "un" as "<s>un")."""
    pieces = hf_tok.convert_ids_to_tokens(ids)
    specials = set(hf_tok.all_special_tokens)
    run: list[str] = []
    for p in pieces:
        if p in ("<im_start>", "<im_end>", "<vi_start>", "<vi_end>"):
            run = []  # 4.36 "legacy added tokens" start a new run
            continue
        run.append(p)
        if len(run) == 2 and run[0] in specials and not p.startswith("\u2581"):
            return True
    return False


def test_decode_matches_transformers_on_random_ids(tok, hf_tok):
    rng = random.Random(7)
    for _ in range(500):
        ids = [rng.randrange(tok.vocab_size) for _ in range(rng.randint(0, 20))]
        assert tok.decode(ids) == hf_tok.decode(ids, skip_special_tokens=True), ids
        if not _hf_436_differs(hf_tok, ids):
            assert tok.decode(ids, skip_special_tokens=False) == hf_tok.decode(ids), ids


def test_decode_keeps_special_tokens_as_transformers_436(tok):
    # Worked out from the 4.36.2 source (tokenization_utils._decode and the patched
    # LlamaTokenizer.convert_tokens_to_string), independent of our code:
    # runs split at <im_start>... are joined with " "; each run loses its first "▁";
    # <s>/</s>/<unk> stay inside a run with no space added.
    x, space = tok.sp.piece_to_id("x"), tok.sp.piece_to_id("\u2581")
    assert tok.sp.id_to_piece(x) == "x" and tok.sp.id_to_piece(space) == "\u2581"
    assert tok.decode([1, x], skip_special_tokens=False) == "<s>x"
    assert tok.decode([x, 512, space, x], skip_special_tokens=False) == "x <im_start> x"
    assert tok.decode([512, space, space], skip_special_tokens=False) == "<im_start>  "
    assert tok.decode([x, 2, space, x], skip_special_tokens=False) == "x</s> x"


def test_round_trip_plain_text(tok):
    rng = random.Random(3)
    for _ in range(300):
        text = random_text(rng)
        for s in [*SPECIALS, "\u2581"]:
            text = text.replace(s, "")
        assert tok.decode(tok.encode(text)) == text, repr(text)


def test_user_typed_special_tokens_become_ids(tok):
    # As in the official tokenizer: added tokens are cut out of the text before sentencepiece.
    ids = tok.encode("a<im_start>b</s>", add_bos=False)
    assert 512 in ids and ids[-1] == 2


def test_rejects_ids_outside_vocabulary(tok):
    with pytest.raises(ValueError, match="-200"):
        tok.decode([5, -200])
    with pytest.raises(ValueError, match="516"):
        tok.decode([516])


# -- streaming -----------------------------------------------------------------------------------
def _stream(tok, ids):
    dec = StreamDecoder(tok)
    pieces = [dec.push(i) for i in ids]
    return pieces, dec.flush()


def _random_ids(tok, rng):
    ids = []
    for _ in range(rng.randint(0, 30)):
        r = rng.random()
        if r < 0.3:  # a multi-byte character as byte-fallback pieces <0xNN> (ids 3 + byte)
            ids += [3 + b for b in rng.choice(MULTIBYTE).encode()]
        elif r < 0.45:  # any byte, often an invalid sequence
            ids.append(3 + rng.randrange(256))
        elif r < 0.5:
            ids.append(rng.choice([0, 1, 2, 512, 513, 514, 515]))
        else:
            ids.append(rng.randrange(tok.vocab_size))
    return ids


def test_stream_concatenation_equals_decode(tok):
    assert tok.sp.id_to_piece(3 + 0xE2) == "<0xE2>"  # byte pieces sit at 3 + byte
    rng = random.Random(11)
    for _ in range(3000):
        ids = _random_ids(tok, rng)
        pieces, rest = _stream(tok, ids)
        full = tok.decode(ids)
        assert "".join(pieces) + rest == full, ids
        assert all(full.startswith("".join(pieces[: k + 1])) for k in range(len(pieces))), ids


def test_stream_holds_partial_utf8(tok):
    for char in MULTIBYTE:
        ids = [tok.sp.piece_to_id("a"), *(3 + b for b in char.encode())]
        pieces, rest = _stream(tok, ids)
        assert "".join(pieces) == "a" + char and rest == ""
        assert not any("\ufffd" in p for p in pieces), pieces
        if len(char) == 1:  # one code point: nothing before its last byte
            assert pieces[1:-1] == [""] * (len(ids) - 2) and pieces[-1] == char
    # A special token between byte pieces does not cut the character (decode skips it).
    pieces, rest = _stream(tok, [3 + 0xE2, 2, 3 + 0x82, 3 + 0xAC])
    assert "".join(pieces) == "€" and rest == ""


def test_stream_strips_only_the_first_prefix_space(tok):
    sp = tok.sp
    ids = [sp.piece_to_id("\u2581"), sp.piece_to_id("\u2581w"), sp.piece_to_id("\u2581")]
    assert 0 not in ids
    pieces, rest = _stream(tok, ids)
    assert "".join(pieces) + rest == tok.decode(ids) == " w "


def test_stream_flush_emits_unfinished_bytes(tok):
    pieces, rest = _stream(tok, [3 + 0xE2, 3 + 0x82])
    assert pieces == ["", ""] and rest == tok.decode([3 + 0xE2, 3 + 0x82])
    assert "\ufffd" in rest


# -- loading -------------------------------------------------------------------------------------
@pytest.mark.parametrize("missing", ["tokenizer.model", "tokenizer_config.json"])
def test_missing_file_names_file_and_folder(tiny_fixture, tmp_path, missing):
    for f in (tiny_fixture / "llm").iterdir():
        if f.name != missing and f.suffix in (".json", ".model"):
            shutil.copy(f, tmp_path / f.name)
    with pytest.raises(FileNotFoundError) as err:
        Tokenizer.from_folder(tmp_path)
    assert missing in str(err.value) and str(tmp_path) in str(err.value)


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        Tokenizer.from_folder(tmp_path / "nowhere")


@pytest.mark.parametrize("content", [b"", b"this is not a sentencepiece model", b"\x0a\x00"])
def test_not_a_sentencepiece_model(tiny_fixture, tmp_path, content):
    for f in (tiny_fixture / "llm").glob("*.json"):
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "tokenizer.model").write_bytes(content)
    with pytest.raises(ValueError, match="tokenizer.model"):
        Tokenizer.from_folder(tmp_path)


def test_conflicting_added_tokens_files(tiny_fixture, tmp_path):
    for f in (tiny_fixture / "llm").iterdir():
        if f.suffix in (".json", ".model"):
            shutil.copy(f, tmp_path / f.name)
    (tmp_path / "added_tokens.json").write_text('{"<im_start>": 513, "<im_end>": 512}')
    with pytest.raises(ValueError, match="disagree"):
        Tokenizer.from_folder(tmp_path)
