"""Prompt building against the official fixture (und_input_ids, gen_input_ids / mask) and the
upstream rules (vicuna_v1 template, tokenizer_image_token, left padding, chat prefixes)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from vilau_rt.prompts import (
    IMAGE_PLACEHOLDER_ID,
    build_chat_prompt,
    build_generation_prompts,
    build_understanding_prompt,
    chat_continuation_ids,
    generation_batch,
    tokenize_chat,
    tokenize_with_images,
    user_message,
)
from vilau_rt.tokenizer import Tokenizer

SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives "
    "helpful, detailed, and polite answers to the user's questions."
)
APPLE = "a red apple on a wooden table"


@pytest.fixture(scope="module")
def tok(tiny_fixture) -> Tokenizer:
    return Tokenizer.from_folder(tiny_fixture / "llm")


def _ref(tiny_fixture, name):
    return np.load(tiny_fixture / "reference" / name)


# -- understanding -------------------------------------------------------------------------------
def test_understanding_prompt_text_matches_readme():
    prompt = build_understanding_prompt("What is shown in this image?", num_images=1)
    assert prompt == f"{SYSTEM} USER: <image>\nWhat is shown in this image? ASSISTANT:"


def test_understanding_ids_match_fixture(tok, tiny_fixture):
    ref = _ref(tiny_fixture, "und_input_ids.npy")[0].tolist()
    prompt = build_understanding_prompt("What is shown in this image?", num_images=1)
    ids = tokenize_with_images(tok, prompt)
    assert ids == ref
    assert ids.index(IMAGE_PLACEHOLDER_ID) == 85 and len(ids) == 101  # README


def test_message_is_stripped_and_media_come_first():
    # tokenize_conversation strips the whole message "<image>\n<image>\n  hi \n", so the
    # query's leading spaces stay.
    assert build_understanding_prompt("  hi \n", num_images=2) == (
        f"{SYSTEM} USER: <image>\n<image>\n  hi ASSISTANT:"
    )
    assert build_understanding_prompt("  hi \n") == f"{SYSTEM} USER: hi ASSISTANT:"
    # An image without a question: "<image>\n" stripped to "<image>" (generate_content([image])).
    assert build_understanding_prompt("", num_images=1) == f"{SYSTEM} USER: <image> ASSISTANT:"


def test_video_frames_are_image_placeholders(tok):
    # extract_media: a video adds "<image>\n" per frame; no <vi_start>/<vi_end> in understanding.
    prompt = build_understanding_prompt("What happens?", num_video_frames=8)
    assert prompt == f"{SYSTEM} USER: " + "<image>\n" * 8 + "What happens? ASSISTANT:"
    assert prompt == build_understanding_prompt("What happens?", num_images=8)
    ids = tokenize_with_images(tok, prompt)
    assert ids.count(IMAGE_PLACEHOLDER_ID) == 8
    assert tok.vi_start_id not in ids and tok.vi_end_id not in ids
    # Between two frames sits the chunk "\n", tokenized on its own with the prefix space.
    first = ids.index(IMAGE_PLACEHOLDER_ID)
    assert ids[first + 1 : first + 4] == [*tok.encode("\n", add_bos=False), IMAGE_PLACEHOLDER_ID]


def _official_tokenizer_image_token(hf_tok, prompt):
    """Upstream mm_utils.tokenizer_image_token with transformers' own tokenizer."""
    ids = [hf_tok.bos_token_id]
    for k, chunk in enumerate(prompt.split("<image>")):
        if k:
            ids.append(IMAGE_PLACEHOLDER_ID)
        ids.extend(hf_tok(chunk).input_ids[1:])
    return ids


def test_tokenize_with_images_matches_transformers(tok, tiny_fixture):
    pytest.importorskip("transformers", reason="transformers is a test-only dependency")
    pytest.importorskip("google.protobuf", reason="LlamaTokenizer(legacy=False) needs protobuf")
    from transformers import LlamaTokenizer

    hf_tok = LlamaTokenizer.from_pretrained(tiny_fixture / "llm", legacy=False, use_fast=False)
    rng = random.Random(5)
    words = ["What", "is", "this?", "  ", "\n", "é", "中文", "<s>", "</s>", "<im_start>", "x"]
    for _ in range(100):
        query = " ".join(rng.choice(words) for _ in range(rng.randint(0, 8)))
        n, f = rng.randint(0, 3), rng.choice([0, 0, 4])
        if not (query.strip() or n or f):
            continue
        prompt = build_understanding_prompt(query, num_images=n, num_video_frames=f)
        assert tokenize_with_images(tok, prompt) == _official_tokenizer_image_token(hf_tok, prompt)


def test_understanding_prompt_rejects_bad_input():
    with pytest.raises(ValueError, match="empty"):
        build_understanding_prompt("   ")
    with pytest.raises(ValueError, match="<image>"):
        build_understanding_prompt("look: <image>", num_images=1)
    with pytest.raises(ValueError, match="num_images"):
        build_understanding_prompt("hi", num_images=-1)
    with pytest.raises(TypeError, match="str"):
        build_understanding_prompt(b"hi")


# -- multi-turn chat -----------------------------------------------------------------------------
def test_chat_prompt_follows_vicuna_v1():
    # conv_vicuna_v1.get_prompt: sep " " after a user turn, "</s>" after an assistant turn,
    # an empty (None) message writes "ROLE:" with no separator.
    turns = [(user_message("q1", 1), " a1 "), ("q2", None)]
    assert build_chat_prompt(turns) == (
        f"{SYSTEM} USER: <image>\nq1 ASSISTANT: a1</s>USER: q2 ASSISTANT:"
    )


def _random_message(rng):
    words = ["hello", "world", "What?", "é", "中文", "😀", "\n", "  ", "42", "</s>", "<im_start>"]
    return " ".join(rng.choice(words) for _ in range(rng.randint(0, 6)))


def test_chat_prompt_ids_are_prefixes_of_the_next_turn(tok):
    """Prompt of turns 1..k, then the reply and </s>, is a prefix of the prompt of turns 1..k+1
    (texts and ids), so the chat session can keep its KV cache."""
    rng = random.Random(17)
    for _ in range(300):
        turns = [(user_message(_random_message(rng), rng.randint(0, 2)), None)]
        for _ in range(rng.randint(1, 3)):
            reply = _random_message(rng)
            if not reply.strip():
                reply = "ok"
            before_text, before = build_chat_prompt(turns), tokenize_chat(tok, turns)
            nxt = user_message(_random_message(rng), rng.randint(0, 1))
            grown = [*turns[:-1], (turns[-1][0], reply), (nxt, None)]
            after_text, after = build_chat_prompt(grown), tokenize_chat(tok, grown)
            assert after_text.startswith(f"{before_text} {reply.strip()}</s>")
            assert after[: len(before)] == before
            cont = chat_continuation_ids(tok, turns, reply, nxt)
            assert before + cont == after
            assert tok.eos_id in cont
            turns = grown


def test_chat_continuation_layout(tok):
    # The reply as encoded after "ASSISTANT:", </s>, then "USER:" with no prefix space.
    turns = [("hello", None)]
    cont = chat_continuation_ids(tok, turns, " fine thanks \n", "and you?")
    reply = tok.encode("fine thanks", add_bos=False)
    assert cont[: len(reply) + 1] == [*reply, tok.eos_id]
    tail = tok.encode("</s>USER: and you? ASSISTANT:", add_bos=False)
    assert tail[0] == tok.eos_id and cont[len(reply) :] == tail
    # Unlike a text start, "USER" after </s> carries no prefix space.
    assert tail[1:] != tok.encode("USER: and you? ASSISTANT:", add_bos=False)


def test_chat_empty_reply_has_no_eos(tok):
    # Upstream writes "ASSISTANT:USER:" for an empty reply: no </s> in the history.
    turns = [("hello", None)]
    assert build_chat_prompt([("hello", "  "), ("again", None)]).endswith(
        "USER: hello ASSISTANT:USER: again ASSISTANT:"
    )
    cont = chat_continuation_ids(tok, turns, "", "again")
    assert tok.eos_id not in cont


def test_chat_prompt_rejects_bad_turns():
    with pytest.raises(ValueError, match="last turn"):
        build_chat_prompt([("q", "a")])
    with pytest.raises(TypeError, match="reply"):
        build_chat_prompt([("q", None), ("q2", None)])
    with pytest.raises(ValueError, match="<image>"):
        build_chat_prompt([("q", "see <image>"), ("q2", None)])
    with pytest.raises(ValueError, match="empty"):
        build_chat_prompt([])


# -- text-to-image -------------------------------------------------------------------------------
def test_generation_prompt_strings_match_readme():
    cond, uncond = build_generation_prompts(APPLE)
    assert cond == f"{SYSTEM} USER: {APPLE} ASSISTANT: <im_start>"
    assert uncond == f"{SYSTEM} USER:ASSISTANT: <im_start>"


def test_video_generation_prompts_end_with_vi_start(tok):
    # generate_video_content: tokenize_conversation(..., video_generation=True) -> " <vi_start>".
    cond, uncond = build_generation_prompts(APPLE, video=True)
    assert cond == f"{SYSTEM} USER: {APPLE} ASSISTANT: <vi_start>"
    assert uncond == f"{SYSTEM} USER:ASSISTANT: <vi_start>"
    batch = generation_batch(tok, APPLE, video=True)
    assert batch.input_ids[:, -2:].tolist() == [[tok.encode(" ", add_bos=False)[0], 514]] * 2


def test_generation_batch_matches_fixture(tok, tiny_fixture):
    batch = generation_batch(tok, APPLE)
    ids, mask = (
        _ref(tiny_fixture, "gen_input_ids.npy"),
        _ref(tiny_fixture, "gen_attention_mask.npy"),
    )
    assert batch.input_ids.dtype == np.int64 and batch.attention_mask.dtype == np.int64
    np.testing.assert_array_equal(batch.input_ids, ids)
    np.testing.assert_array_equal(batch.attention_mask, mask.astype(np.int64))
    # LlamaForCausalLM.prepare_inputs_for_generation (transformers 4.36):
    # position_ids = mask.cumsum(-1) - 1, then masked_fill(mask == 0, 1).
    torch = pytest.importorskip("torch")
    m = torch.as_tensor(mask).long()
    expected = m.cumsum(-1) - 1
    expected.masked_fill_(m == 0, 1)
    np.testing.assert_array_equal(batch.position_ids, expected.numpy())
    assert batch.position_ids.dtype == np.int64
    assert [row[m_.astype(bool)][0] for row, m_ in zip(batch.position_ids, mask)] == [0, 0]


def test_generation_batch_orders_rows_cond_then_uncond(tok, tiny_fixture):
    ids = _ref(tiny_fixture, "gen_input_ids.npy")
    batch = generation_batch(tok, APPLE, num_images=3)
    assert batch.input_ids.shape == (6, ids.shape[1]) and batch.num_images == 3
    for row, want in zip(batch.input_ids, [0, 0, 0, 1, 1, 1]):
        np.testing.assert_array_equal(row, ids[want])


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t"])
def test_generation_needs_a_prompt(tok, prompt):
    with pytest.raises(ValueError, match="prompt is needed"):
        generation_batch(tok, prompt)


def test_generation_batch_rejects_bad_num_images(tok):
    with pytest.raises(ValueError, match="num_images"):
        generation_batch(tok, APPLE, num_images=0)
