"""Prompts of VILA-U: the ``vicuna_v1`` conversation, image placeholders, and the padded
[conditional, unconditional] batch of text-to-image generation.

Upstream (github.com/mit-han-lab/vila-u, commit 096623c): ``vila_u/conversation.py``
(``conv_vicuna_v1``), ``vila_u/utils/tokenizer.py`` (``tokenize_conversation``),
``vila_u/mm_utils.py`` (``tokenizer_image_token``), ``vila_u/utils/media.py``
(``extract_media``) and ``generate_content`` / ``generate_image_content`` /
``generate_video_content`` in ``vila_u/model/vila_u_arch.py``.

Understanding, one image (the line break after ``<image>`` is a real "\\n")::

    <system> USER: <image>\\nWhat is shown in this image? ASSISTANT:

Each image is ``<image>\\n`` in front of the text; a video is its frames, each frame its own
``<image>\\n`` (``<vi_start>``/``<vi_end>`` never appear in understanding prompts). In the ids
every ``<image>`` becomes ``IMAGE_PLACEHOLDER_ID`` (-200), later replaced by h*w embeddings.

Generation: ``<system> USER: {prompt} ASSISTANT: <im_start>`` and the unconditional
``<system> USER:ASSISTANT: <im_start>`` (``<vi_start>`` for video), left-padded with id 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import PromptError
from .tokenizer import IM_START, VI_START, Tokenizer

IMAGE_TOKEN = "<image>"
IMAGE_PLACEHOLDER_ID = -200
# generate_image_content pads with torch.zeros, whatever the tokenizer's pad token is.
GENERATION_PAD_ID = 0


@dataclass(frozen=True)
class Conversation:
    """A conversation template (upstream ``Conversation`` with ``SeparatorStyle.TWO``)."""

    system: str
    roles: tuple[str, str]
    seps: tuple[str, str]  # after a user turn, after an assistant turn

    def format(self, messages: list[str | None], *, first_turn: int = 0) -> str:
        """Turns ``messages`` (user, assistant, user, ...) without the system text.

        ``first_turn`` is the index of ``messages[0]`` in the whole conversation (it picks the
        role and separator). An empty or None message writes ``ROLE:`` with no separator: that is
        how the generation prompt ends, and also what upstream does with an empty reply.
        """
        out = ""
        for i, message in enumerate(messages, start=first_turn):
            role = self.roles[i % 2]
            out += f"{role}: {message}{self.seps[i % 2]}" if message else f"{role}:"
        return out

    def prompt(self, messages: list[str | None]) -> str:
        return self.system + self.seps[0] + self.format(messages)


VICUNA_V1 = Conversation(
    system="A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions.",
    roles=("USER", "ASSISTANT"),
    seps=(" ", "</s>"),
)


def user_message(query: str, num_images: int = 0, num_video_frames: int = 0) -> str:
    """One user turn: ``<image>\\n`` per image and per video frame, then ``query``.

    The placeholders come first, as ``generate_content([image, ..., query])`` builds them; the
    text does not depend on which are images and which are frames, only the order of the pixel
    inputs does (images, then frames, as the placeholders are filled left to right).
    """
    if not isinstance(query, str):
        raise TypeError(f"query must be a str, got {type(query).__name__}")
    for name, n in (("num_images", num_images), ("num_video_frames", num_video_frames)):
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValueError(f"{name} must be an int >= 0, got {n!r}")
    if IMAGE_TOKEN in query:
        raise PromptError(
            f"the query contains the reserved text {IMAGE_TOKEN!r}; pass images with "
            "num_images instead of writing the placeholder into the text"
        )
    return (IMAGE_TOKEN + "\n") * (num_images + num_video_frames) + query


def build_chat_prompt(turns: list[tuple[str, str | None]]) -> str:
    """vicuna_v1 prompt of a conversation: ``turns`` = [(user, assistant), ...] with the last
    assistant ``None`` (the generation prompt). Messages are stripped, as upstream does.

    User messages may hold ``<image>`` placeholders (see ``user_message``).
    """
    if not turns:
        raise PromptError("turns is empty: give at least one (user message, None) turn")
    messages: list[str | None] = []
    for k, turn in enumerate(turns):
        if not (isinstance(turn, tuple) and len(turn) == 2):
            raise TypeError(f"turn {k} must be a (user, assistant) tuple, got {turn!r}")
        user, reply = turn
        last = k == len(turns) - 1
        if not isinstance(user, str):
            raise TypeError(f"turn {k}: user message must be a str, got {type(user).__name__}")
        if last and reply is not None:
            raise PromptError(
                f"the last turn must have assistant None (the model answers it), got {reply!r}"
            )
        if not last and not isinstance(reply, str):
            raise TypeError(f"turn {k}: assistant reply must be a str, got {reply!r}")
        if reply is not None and IMAGE_TOKEN in reply:
            raise PromptError(
                f"turn {k}: the assistant reply contains {IMAGE_TOKEN!r}, which would become an "
                "image placeholder with no image; remove it from the reply"
            )
        messages += [user.strip(), None if reply is None else reply.strip()]
    return VICUNA_V1.prompt(messages)


def build_understanding_prompt(query: str, num_images: int = 0, num_video_frames: int = 0) -> str:
    """Single-turn prompt of ``generate_content``: media first, then the query (stripped)."""
    message = user_message(query, num_images, num_video_frames)
    if not message.strip():
        raise PromptError("the query is empty and there is no image: give a question")
    return build_chat_prompt([(message, None)])


def tokenize_with_images(tokenizer: Tokenizer, prompt: str) -> list[int]:
    """Ids of ``prompt`` with ``IMAGE_PLACEHOLDER_ID`` for each ``<image>`` (upstream
    ``tokenizer_image_token``): one BOS, then each text chunk between placeholders encoded on
    its own (so each chunk gets the prefix space) with its BOS dropped."""
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    ids = [tokenizer.bos_id]
    for k, chunk in enumerate(prompt.split(IMAGE_TOKEN)):
        if k:
            ids.append(IMAGE_PLACEHOLDER_ID)
        ids += tokenizer.encode(chunk, add_bos=False)
    return ids


def tokenize_chat(tokenizer: Tokenizer, turns: list[tuple[str, str | None]]) -> list[int]:
    """Ids of ``build_chat_prompt(turns)`` (with image placeholders)."""
    return tokenize_with_images(tokenizer, build_chat_prompt(turns))


def chat_continuation_ids(
    tokenizer: Tokenizer, turns: list[tuple[str, str | None]], reply: str, next_user: str
) -> list[int]:
    """Ids to append to ``tokenize_chat(turns)`` (a prompt ending in ``ASSISTANT:``) so that the
    result is ``tokenize_chat`` of the conversation in which the assistant answered ``reply``
    and the user then said ``next_user``: what upstream gets by re-tokenizing the whole text.

    ``reply`` must be the text upstream puts into the history,
    ``decode(generated, skip_special_tokens=True)`` (it is stripped here). The ids start with
    the encoding of the reply as it sits after ``ASSISTANT:``, then ``</s>``, then
    ``USER: ... ASSISTANT:`` (no prefix space after ``</s>``; one after each ``<image>``).

    KV-cache reuse: the cache holds the prompt plus the generated ids (``</s>`` is sampled but
    not fed). It stays valid up to the first position where the generated ids differ from the
    returned ids; drop the cache past it and feed the rest. They differ when the model's
    tokenization is not the canonical one, when ``strip`` removed leading/trailing whitespace,
    when the reply held special-token text or byte pieces that decode to U+FFFD.

    An empty reply makes upstream write ``ASSISTANT:USER:`` with no ``</s>``; whether the old
    ids stay a prefix then depends on the vocabulary (":" + "US" must not merge). PromptError
    when the old ids are not a prefix: re-prefill the whole conversation then.
    """
    if not turns or turns[-1][1] is not None:
        raise PromptError("turns must end with the pending (user message, None) turn")
    before = tokenize_chat(tokenizer, turns)
    after = tokenize_chat(tokenizer, [*turns[:-1], (turns[-1][0], reply), (next_user, None)])
    if after[: len(before)] != before:
        raise PromptError(
            f"the prompt ids before the reply {reply!r} are not a prefix of the next prompt's "
            "ids; re-prefill the whole conversation (tokenize_chat) instead"
        )
    return after[len(before) :]


def build_generation_prompts(prompt: str, *, video: bool = False) -> tuple[str, str]:
    """(conditional, unconditional) prompt strings of ``generate_image_content`` (or
    ``generate_video_content`` with ``video=True``)."""
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    if not prompt.strip():
        raise PromptError("a prompt is needed to generate an image: describe the image in text")
    start = VI_START if video else IM_START
    # The unconditional message is " ", stripped to "", so the template writes "USER:" bare.
    cond, uncond = (VICUNA_V1.prompt([m.strip(), None]) for m in (prompt, " "))
    return f"{cond} {start}", f"{uncond} {start}"


@dataclass
class GenerationBatch:
    """LLM inputs of image generation; rows [cond] * n + [uncond] * n, left-padded.

    | name | shape | dtype |
    |---|---|---|
    | input_ids | [2n, T] | int64, padding = 0 |
    | attention_mask | [2n, T] | int64, 0 on padding |
    | position_ids | [2n, T] | int64, cumsum(mask) - 1, 1 on padding (as HF generate) |
    """

    input_ids: np.ndarray
    attention_mask: np.ndarray
    position_ids: np.ndarray

    @property
    def num_images(self) -> int:
        return self.input_ids.shape[0] // 2


def generation_batch(
    tokenizer: Tokenizer, prompt: str, num_images: int = 1, video: bool = False
) -> GenerationBatch:
    """Tokenized, left-padded [cond * num_images, uncond * num_images] batch."""
    if not isinstance(num_images, int) or isinstance(num_images, bool) or num_images < 1:
        raise ValueError(f"num_images must be an int >= 1, got {num_images!r}")
    rows = [
        tokenize_with_images(tokenizer, p) for p in build_generation_prompts(prompt, video=video)
    ]
    rows = [rows[0]] * num_images + [rows[1]] * num_images
    length = max(len(r) for r in rows)
    input_ids = np.full((len(rows), length), GENERATION_PAD_ID, dtype=np.int64)
    mask = np.zeros((len(rows), length), dtype=np.int64)
    for i, r in enumerate(rows):
        input_ids[i, length - len(r) :] = r
        mask[i, length - len(r) :] = 1
    # LlamaForCausalLM.prepare_inputs_for_generation: positions count real tokens only.
    positions = np.where(mask == 1, np.cumsum(mask, axis=1) - 1, 1)
    return GenerationBatch(input_ids, mask, positions.astype(np.int64))
