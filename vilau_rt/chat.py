"""Multi-turn chat that keeps the KV cache between turns.

Each turn tokenizes the WHOLE conversation as upstream would (vicuna_v1, replies decoded with
special tokens skipped and stripped), finds how much of it the cache already holds (the ids fed
so far: earlier prompts and generated tokens), and prefills only the rest. Where the model's own
tokens differ from the canonical tokenization of its decoded reply, the cache is kept up to the
first difference, so the result always equals a fresh prefill of the whole conversation.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import torch

from . import arguments
from .generate import GenerationResult, text_settings
from .prompts import IMAGE_PLACEHOLDER_ID, tokenize_chat, user_message


class ChatSession:
    def __init__(self, pipe):  # a vilau_rt.Pipeline (not imported: pipeline.py imports this)
        self.pipe = pipe
        self.reset()

    def reset(self) -> None:
        """Forget the conversation (the next turn prefills from scratch)."""
        self.turns: list[tuple[str, str]] = []
        self._cached: list[int] = []  # ids whose KV entries are in the cache (-200 = one image)
        self._images: list[torch.Tensor] = []  # embeddings of every image so far, in order

    @property
    def history(self) -> list[tuple[str, str]]:
        return list(self.turns)

    def ask(self, text: str, images=None, *, stream: bool = False, seed: int | None = None,
            stop: list[str] | None = None, **gen) -> GenerationResult | Iterator[str]:  # fmt: skip
        """One user turn (text + optional images) -> the assistant's answer."""

        pipe = self.pipe
        settings = text_settings(
            gen.pop("max_new_tokens", None), gen.pop("do_sample", False),
            gen.pop("temperature", 0.9), gen.pop("top_k", None), gen.pop("top_p", 0.6),
            gen.pop("repetition_penalty", 1.0),
        )  # fmt: skip
        if gen:
            raise TypeError(f"unknown generation options {sorted(gen)}")
        text = arguments.text("text", text, empty_ok=True)  # an image alone is a turn too
        stop, seed = arguments.stop_strings(stop), arguments.seed(seed)

        def run():
            t0 = time.perf_counter()
            media = pipe._media(images, None)
            user = user_message(text, num_images=len(media))
            if not user.strip():
                from .errors import PromptError

                raise PromptError("the message is empty: type a question or pass an image")
            target = tokenize_chat(pipe.tokenizer, [*self.turns, (user, None)])
            new_images = pipe.image_embeddings(media)
            all_images = self._images + new_images

            if pipe._cache_owner is not self:
                self._cached = []  # another request wrote over the cache
            keep = 0
            for a, b in zip(self._cached, target):
                if a != b:
                    break
                keep += 1
            tokens_per_image = pipe.cfg.tokens_per_image
            kept_images = sum(1 for t in target[:keep] if t == IMAGE_PLACEHOLDER_ID)
            cache_pos = keep + kept_images * (tokens_per_image - 1)
            if cache_pos == 0:
                pipe.backend.setup_cache(1, pipe.max_context)
            pipe._cache_owner = self
            self._cached = self._cached[:keep]  # slots past `keep` are about to be overwritten

            def done(out_ids: list[int], fed: list[int]) -> None:
                reply = pipe.tokenizer.decode(out_ids, skip_special_tokens=True)
                self.turns.append((user, reply))
                self._cached = target + fed
                self._images = all_images

            return pipe._run(
                target[keep:], all_images[kept_images:], cache_pos, settings, seed, stop, stream, t0,
                on_done=done,
            )  # fmt: skip

        return pipe._request(run, stream)
