"""``Pipeline``: the one object users hold. Understanding (caption, generate), image generation
and the image tokenizer, on top of one backend.

```python
from vilau_rt import Pipeline
pipe = Pipeline.from_pretrained("path/to/vila-u-7b-256")
print(pipe.caption("frame.jpg"))
images = pipe.generate_image("a red apple on a wooden table", seed=0)
```
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import arguments
from .backends import Backend, TorchBackend
from .chat import ChatSession
from .errors import BackendError, CodesError, ConfigError, GenerationError, PromptError
from .generate import (
    DEFAULT_MAX_NEW_TOKENS,
    GenerationResult,
    ImageSettings,
    generate_codes,
    generate_text,
    splice_images,
    text_settings,
)
from .images import load_image, to_pil
from .model.builtin import resolve_checkpoint
from .model.checkpoint import load_vilau
from .model.pixel_decoder import to_uint8
from .model.siglip import normalize_uint8, preprocess
from .prompts import build_understanding_prompt, generation_batch, tokenize_with_images
from .request_lock import RequestLock
from .sampling import check_sampling
from .tokenizer import StreamDecoder, Tokenizer
from .video import load_video

BACKENDS = ("auto", "torch", "native", "onnxruntime", "tensorrt")
DEFAULT_CAPTION_PROMPT = "Please describe this image in detail."


def _square_uint8_chw(image, size: int) -> torch.Tensor | None:
    """The image as a uint8 [3, size, size] tensor view if it is a torch tensor in that shape
    (CHW or HWC), else None."""
    if not isinstance(image, torch.Tensor) or image.dtype != torch.uint8 or image.dim() != 3:
        return None
    if tuple(image.shape) == (3, size, size):
        return image
    if tuple(image.shape) == (size, size, 3):
        return image.permute(2, 0, 1)
    return None


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process: CUDA allocator peak on GPUs, max RSS on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def exclusive(method):
    """Run ``method`` as one request: other threads wait until the Pipeline is free."""

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return run


def _device(device) -> torch.device:
    """The requested device, checked: a CUDA device needs CUDA here."""
    if device is None:
        return default_device()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"device {device!r} is not a device name: use 'cpu' or 'cuda[:N]'") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise BackendError(
                f"device {device!r} asks for CUDA, but this torch sees no CUDA device "
                "(torch.cuda.is_available() is False); use device='cpu'"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise BackendError(
                f"device {device!r}: there are {torch.cuda.device_count()} CUDA devices"
            )
    elif dev.type != "cpu":
        raise ConfigError(f"device {device!r} is not supported: use 'cpu' or 'cuda[:N]'")
    return dev


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


class Pipeline:
    def __init__(
        self,
        backend: Backend,
        tokenizer: Tokenizer,
        path: Path | None = None,
        max_context: int | None = None,
    ):
        self.backend = backend
        self.tokenizer = tokenizer
        self.path = path
        self.cfg = backend.cfg
        ctx = self.cfg.llm.context_length
        if max_context is not None and not 1 <= max_context <= ctx:
            raise ValueError(
                f"max_context must be in [1, {ctx}] (the model context), got {max_context}"
            )
        # KV caches are allocated once per batch size for this many positions (the model context
        # unless lowered, e.g. to fit an 8 GB Jetson) and reused by every later request.
        self.max_context = max_context or ctx
        self.stats: dict = {}
        self._cache_owner = None  # the ChatSession whose turns the KV cache holds, if any
        self._lock = RequestLock()  # one request at a time (see request_lock.py)

    @property
    def device(self) -> torch.device:
        return self.backend.device

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        backend: str = "auto",
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        siglip_config=None,
        cache_dir: str | Path | None = None,
        max_context: int | None = None,
        check_finite: bool = True,
        int8_activations: bool = False,
    ) -> Pipeline:
        """Load an official VILA-U checkpoint folder (or, for ``backend="onnxruntime"``, an
        exported bundle; a checkpoint is then exported on first use into ``cache_dir``).

        Backends: ``torch`` (the eager reference), ``native`` (static KV cache, our C++/CUDA
        kernels, CUDA graphs on GPUs), ``onnxruntime`` (the exported ONNX graphs), ``auto``
        (the default: ``native`` on the CPU, where it is the fastest and is tested against the
        official fixtures; ``torch`` on CUDA until the native CUDA path has been timed on a
        GPU, see bench/RESULTS.md). device
        defaults to CUDA when available, else CPU; dtype to bfloat16 (float16 where bf16 is
        unsupported) on CUDA and float32 on the CPU. ``max_context`` caps the positions the
        static KV cache holds (default: the model's context length). ``check_finite=False``
        loads weights that hold NaN or infinity instead of refusing them.
        ``int8_activations=True`` (``native`` on the CPU, INT4 checkpoints only) runs the INT4
        layers on int8-rounded activations and the lm_head's decode rows on an int8 copy, as
        llama.cpp's Q4_0 does: faster, and an approximation of the INT4 model (bench/RESULTS.md
        has its speed and its distance from exact INT4).
        """
        path = resolve_checkpoint(path)  # a built-in name ("shapes-demo") or a folder
        if backend not in BACKENDS:
            raise BackendError(f"backend {backend!r} is not available; choose one of {BACKENDS}")
        if int8_activations and backend not in ("auto", "native"):
            raise BackendError(f"int8_activations runs on backend 'native' (CPU), not {backend!r}")
        if backend == "tensorrt":  # a bundle exported with --target tensorrt
            from .backends.tensorrt_backend import TensorRTBackend

            trt = TensorRTBackend(path, cache_dir=cache_dir)
            return cls(trt, Tokenizer.from_folder(trt.root / "tokenizer"), Path(path), max_context)
        if backend == "onnxruntime":
            from .backends.onnxruntime_backend import load_bundle_or_export
            from .model.awq import read_awq_config

            llm_dir = Path(path) / "llm"
            quant = "awq-int4" if llm_dir.is_dir() and read_awq_config(llm_dir) else "none"
            ort = load_bundle_or_export(path, cache_dir, quant=quant, siglip_config=siglip_config)
            return cls(ort, Tokenizer.from_folder(ort.root / "tokenizer"), Path(path), max_context)
        device = _device(device)
        if isinstance(dtype, str):
            name, dtype = dtype, getattr(torch, dtype.replace("torch.", ""), None)
            if not isinstance(dtype, torch.dtype):
                raise TypeError(f"dtype {name!r} is not float32, float16 or bfloat16")
        dtype = dtype or default_dtype(device)
        if backend == "auto":
            backend = "native" if device.type == "cpu" else "torch"
        if int8_activations and (backend != "native" or device.type != "cpu"):  # checked early too
            raise BackendError(
                f"int8_activations runs on backend 'native' on the CPU; this is {backend!r} on {device}"
            )
        # native on the CPU in float32: 16-bit LLM linears stay 16-bit (model/linear16.py)
        keep_16bit = backend == "native" and device.type == "cpu" and dtype == torch.float32
        model = load_vilau(
            path, dtype=dtype, device=device, siglip_config=siglip_config,
            check_finite=check_finite, keep_16bit=keep_16bit,
        )  # fmt: skip
        tokenizer = Tokenizer.from_folder(Path(path) / "llm")
        if backend == "native":
            from .backends.native_backend import NativeBackend

            nb = NativeBackend.from_model(model, int8_activations=int8_activations)
            return cls(nb, tokenizer, Path(path), max_context)
        return cls(TorchBackend(model), tokenizer, Path(path), max_context)

    # -- image tokenizer ------------------------------------------------------------------
    def _pixels(self, images) -> torch.Tensor:
        """pixel_values [B, 3, S, S]. A uint8 tensor already S x S (CHW or HWC, on any device) is
        normalized where it lies; anything else goes through PIL's bicubic resize, which is
        what the official preprocessing does (torch's bicubic is a different filter)."""
        S = self.cfg.image_size
        out = []
        for im in images:
            chw = _square_uint8_chw(im, S)
            if chw is not None:
                out.append(normalize_uint8(chw.to(self.device)))
            else:
                out.append(preprocess([load_image(im)], S)[0].to(self.device))
        return torch.stack(out)

    @exclusive
    def encode_image(self, image) -> np.ndarray:
        """Image -> RVQ codes, int64 [h, w, D]."""
        codes, _ = self.backend.encode_images(self._pixels([image]))
        return codes[0].cpu().numpy()

    @exclusive
    def encode_images(self, images: list) -> np.ndarray:
        """Images -> RVQ codes, int64 [N, h, w, D]: ``encode_image`` of each, in one vision pass
        (for Ray Data actors and other batch jobs; the gain is measured in bench/RESULTS.md)."""
        images = list(images)
        if not images:
            h, w = self.cfg.grid
            return np.zeros((0, h, w, self.cfg.rvq.depth), dtype=np.int64)
        codes, _ = self.backend.encode_images(self._pixels(images))
        return codes.cpu().numpy()

    @exclusive
    def decode_codes(self, codes) -> Image.Image | list[Image.Image]:
        """Codes [h, w, D] -> an image; [N, h, w, D] -> a list of images."""
        c = self._check_codes(codes)
        single = c.dim() == 3
        if single:
            c = c.unsqueeze(0)
        images = to_pil(to_uint8(self.backend.decode_codes(c)))
        return images[0] if single else images

    def _check_codes(self, codes) -> torch.Tensor:
        """Codes as an int64 tensor on the device; CodesError for a wrong shape, dtype or range."""
        if isinstance(codes, torch.Tensor):
            codes = codes.detach().cpu().numpy()
        a = np.asarray(codes)
        h, w = self.cfg.grid
        D, n = self.cfg.rvq.depth, self.cfg.rvq.n_embed
        if a.dtype.kind not in "iu":
            raise CodesError(f"codes must be integers, got dtype {a.dtype}")
        if a.ndim not in (3, 4) or tuple(a.shape[-3:]) != (h, w, D):
            raise CodesError(
                f"codes of shape {list(a.shape)} do not fit this model: expected "
                f"[{h}, {w}, {D}] or [N, {h}, {w}, {D}]"
            )
        if a.size and (a.min() < 0 or a.max() >= n):
            raise CodesError(f"codes must lie in [0, {n}); got {a.min()}..{a.max()}")
        return torch.as_tensor(a.astype(np.int64), device=self.device)

    # -- quality measures -----------------------------------------------------------------
    @exclusive
    def logits(self, text_or_ids) -> np.ndarray:
        """Teacher-forced next-token logits, float32 [T, V] (BOS added to text)."""
        if isinstance(text_or_ids, str):
            ids = self.tokenizer.encode(text_or_ids, add_bos=True)
        else:
            ids = [int(i) for i in text_or_ids]
        if not ids:
            raise PromptError("no tokens to score: pass a non-empty text or id list")
        limit = self.max_context
        if len(ids) > limit:
            raise PromptError(f"{len(ids)} tokens exceed the context of {limit}")
        vocab = self.cfg.llm.vocab_size
        if min(ids) < 0 or max(ids) >= vocab:
            raise PromptError(f"token ids must lie in [0, {vocab}); got {min(ids)}..{max(ids)}")
        self._cache_owner = None
        t = torch.tensor([ids], device=self.device)
        self.backend.setup_cache(1, self.max_context)
        hidden = self.backend.forward(
            self.backend.embed_tokens(t), torch.arange(len(ids))[None].to(self.device), 0
        )
        return self.backend.logits(hidden[0]).cpu().numpy()

    @exclusive
    def perplexity(self, texts: list[str]) -> float:
        """exp(mean negative log-likelihood) of every token after the first, over ``texts``."""
        nll, count = 0.0, 0
        for text in texts:
            ids = self.tokenizer.encode(text, add_bos=True)
            if len(ids) < 2:
                continue
            logp = torch.log_softmax(torch.from_numpy(self.logits(ids)[:-1]).double(), dim=-1)
            nll -= float(logp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].sum())
            count += len(ids) - 1
        if count == 0:
            raise PromptError("the texts hold no token to predict")
        return float(np.exp(nll / count))

    # -- understanding --------------------------------------------------------------------
    def caption(self, image, prompt: str | None = None, **gen) -> str:
        return self.generate(prompt or DEFAULT_CAPTION_PROMPT, images=[image], **gen).text

    @exclusive
    def caption_batch(
        self, images: list, prompt: str | None = None, *, max_new_tokens: int | None = None
    ) -> list[str]:
        """Greedy ``caption`` of each image: one vision pass for all of them, then one answer
        at a time (the KV cache holds one sequence)."""
        prompt = arguments.text("prompt", prompt or DEFAULT_CAPTION_PROMPT)
        settings = text_settings(max_new_tokens, False, 0.9, None, 0.6, 1.0)
        embeds = self.image_embeddings(self._media(list(images), None))
        ids = tokenize_with_images(self.tokenizer, build_understanding_prompt(prompt, num_images=1))
        captions = []
        for e in embeds:
            self._cache_owner = None
            captions.append(
                self._run(ids, [e], 0, settings, None, [], False, time.perf_counter()).text
            )
        return captions

    def generate(
        self,
        prompt: str,
        images=None,
        videos=None,
        *,
        max_new_tokens: int | None = None,
        do_sample: bool = False,
        temperature: float = 0.9,
        top_p: float | None = 0.6,
        top_k: int | None = None,
        repetition_penalty: float = 1.0,
        stop: str | list[str] | None = None,
        seed: int | None = None,
        stream: bool = False,
    ) -> GenerationResult | Iterator[str]:
        """Answer ``prompt`` about ``images`` and ``videos`` (vicuna_v1, media first).

        Returns a GenerationResult (``.text``, ``.token_ids``, ``.stats``), or with
        ``stream=True`` an iterator of text pieces whose concatenation is that text.
        """
        prompt = arguments.text("prompt", prompt)
        settings = text_settings(
            max_new_tokens, do_sample, temperature, top_k, top_p, repetition_penalty
        )
        stop, seed = arguments.stop_strings(stop), arguments.seed(seed)

        def run():
            t0 = time.perf_counter()
            media = self._media(images, videos)
            embeds_img = self.image_embeddings(media)
            text = build_understanding_prompt(prompt, num_images=len(media))
            ids = tokenize_with_images(self.tokenizer, text)
            self._cache_owner = None  # any chat session's cache is overwritten below
            return self._run(ids, embeds_img, 0, settings, seed, stop, stream, t0)

        return self._request(run, stream)

    def _request(self, run, stream: bool):
        """Run ``run()`` as one request; a stream keeps the Pipeline until it ends or closes."""
        self._lock.acquire()
        try:
            out = run()
        except BaseException:
            self._lock.release()
            raise
        if stream:
            return self._lock.stream(out)
        self._lock.release()
        return out

    def _media(self, images, videos) -> list:
        S = self.cfg.image_size
        # model-sized uint8 tensors stay as they are (on their device: no host round trip for
        # CUDA frames); everything else becomes an RGB PIL image
        media = [
            im if _square_uint8_chw(im, S) is not None else load_image(im)
            for im in arguments.media_list(images, "images")
        ]
        for v in arguments.media_list(videos, "videos"):
            media += load_video(v, self.cfg.num_video_frames)
        return media

    @exclusive
    def image_embeddings(self, images: list) -> list[torch.Tensor]:
        """LLM input embeddings [h*w, H] of each image (RVQ-quantized, projected)."""
        if not images:
            return []
        return list(self.backend.encode_images(self._pixels(images))[1])

    def _run(self, ids, image_embeds, cache_pos, settings, seed, stop, stream, t0, on_done=None):
        """Splice, check the context, generate; the shared tail of generate() and chat turns."""
        t_vision = time.perf_counter()
        embeds = splice_images(self.backend, ids, image_embeds)
        limit = self.max_context
        total = cache_pos + embeds.shape[1]
        if settings.max_new_tokens is None:  # the default: what the context has room for
            room = limit - total
            if room < 1:
                raise PromptError(
                    f"prompt of {total} tokens (images included) fills the model context of "
                    f"{limit} tokens; shorten the prompt or use fewer images"
                )
            settings = dataclasses.replace(
                settings, max_new_tokens=min(DEFAULT_MAX_NEW_TOKENS, room)
            )
        if total + settings.max_new_tokens > limit:
            raise PromptError(
                f"prompt of {total} tokens (images included) + max_new_tokens "
                f"{settings.max_new_tokens} exceeds the model context of {limit} tokens; "
                "shorten the prompt, use fewer images or lower max_new_tokens"
            )
        if cache_pos == 0:
            self.backend.setup_cache(1, limit)  # allocated once, reused by later requests
        fed: list[int] = []
        tokens = generate_text(
            self.backend, embeds, settings, eos_id=self.tokenizer.eos_id,
            generator=self._rng(seed), cache_pos=cache_pos, fed=fed,
        )  # fmt: skip
        stats = {
            "vision_ms": 1000 * (t_vision - t0),
            "prompt_tokens": int(total),
            "cached_tokens": int(cache_pos),
        }
        done = None if on_done is None else (lambda out_ids: on_done(out_ids, fed))
        pieces = self._stream(tokens, stop or [], stats, t_vision, done)
        if stream:
            return pieces
        text = "".join(pieces)
        return GenerationResult(text, list(stats["token_ids"]), self.stats)

    def live(self, source, prompt: str = DEFAULT_CAPTION_PROMPT, *, realtime=None,
             max_new_tokens: int = 32, **gen):  # fmt: skip
        """Answer ``prompt`` about the newest frame of a camera, stream, file or Python frame
        source, again and again; an iterator and context manager of LiveResult (see
        ``vilau_rt.serving.live``)."""
        from .serving.live import LiveLoop

        return LiveLoop(self, source, prompt, realtime=realtime, max_new_tokens=max_new_tokens,
                        **gen)  # fmt: skip

    def chat_session(self) -> ChatSession:
        """A multi-turn conversation that reuses the KV cache of earlier turns."""
        return ChatSession(self)

    def _stream(self, tokens, stop, stats, t_start, on_done=None) -> Iterator[str]:
        dec = StreamDecoder(self.tokenizer)
        out_ids: list[int] = []
        stats["token_ids"] = out_ids
        text = ""
        first = None
        for tok in tokens:
            first = first or time.perf_counter()
            out_ids.append(tok)
            piece = dec.push(tok)
            text += piece
            hit = next((s for s in stop if s in text), None)
            if hit is not None:
                cut = text.index(hit)
                if cut > len(text) - len(piece):
                    yield piece[: cut - (len(text) - len(piece))]
                break
            if piece:
                yield piece
        else:
            rest = dec.flush()
            if rest:
                yield rest
        end = time.perf_counter()
        ttft = (first or end) - t_start
        stats["time_to_first_token_ms"] = 1000 * ttft
        stats["prefill_tok_s"] = stats["prompt_tokens"] / max(ttft, 1e-9)
        n = len(out_ids)
        stats["new_tokens"] = n
        if n > 1 and first is not None:
            stats["decode_tok_s"] = (n - 1) / max(end - first, 1e-9)
        stats["peak_memory_mb"] = peak_memory_mb(self.device)
        self.stats = {k: v for k, v in stats.items() if k != "token_ids"}
        if on_done is not None:
            on_done(out_ids)

    # -- generation -----------------------------------------------------------------------
    @exclusive
    def generate_image_codes(
        self,
        prompt: str,
        *,
        cfg_scale: float = 3.0,
        temperature: float = 1.0,
        top_k: int | None = 900,
        top_p: float | None = 0.96,
        seed: int | None = None,
        num_images: int = 1,
        progress=None,
    ) -> np.ndarray:
        """Text -> RVQ codes, int64 [num_images, h, w, D] (CFG over [cond, uncond] rows).

        Sampling defaults are upstream's hard-coded ones (temperature 1, top-k 900, top-p 0.96);
        ``top_k=1`` is greedy. The same seed gives the same codes on the same backend/device.
        ``progress(i)`` is called after each of the h*w positions.
        """
        codes = self._generate_codes(
            prompt, 1, cfg_scale, temperature, top_k, top_p, seed, num_images, progress
        )
        return codes[:, 0]

    @exclusive
    def generate_video_codes(self, prompt: str, *, num_frames: int = 8, **kwargs) -> np.ndarray:
        """Text -> codes [num_videos, num_frames, h, w, D] (``<vi_start>``, upstream: 8 frames)."""
        num_videos = kwargs.pop("num_videos", 1)
        return self._generate_codes(
            prompt, num_frames, kwargs.pop("cfg_scale", 3.0), kwargs.pop("temperature", 1.0),
            kwargs.pop("top_k", 900), kwargs.pop("top_p", 0.96), kwargs.pop("seed", None),
            num_videos, kwargs.pop("progress", None), **kwargs,
        )  # fmt: skip

    def _generate_codes(
        self, prompt, frames, cfg_scale, temperature, top_k, top_p, seed, num, progress
    ) -> np.ndarray:
        prompt = arguments.text("prompt", prompt, empty_ok=True)  # empty: unconditional
        num = arguments.integer("num_images", num, low=1)
        frames = arguments.integer("num_frames", frames, low=1)
        cfg_scale = arguments.real("cfg_scale", cfg_scale)
        if not cfg_scale >= 0:
            raise GenerationError(f"cfg_scale must be >= 0, got {cfg_scale}")
        temperature, top_k, top_p = check_sampling(temperature, top_k, top_p)
        seed = arguments.seed(seed)
        if top_k is not None:
            top_k = min(top_k, self.cfg.rvq.n_embed)
        batch = generation_batch(self.tokenizer, prompt, num_images=num, video=frames > 1)
        dev = self.device
        n_pos = self.cfg.tokens_per_image * frames
        need = batch.input_ids.shape[1] + n_pos
        if need > self.max_context:
            raise PromptError(
                f"prompt of {batch.input_ids.shape[1]} tokens + {n_pos} image tokens exceeds "
                f"the model context of {self.max_context}; shorten the prompt"
            )
        self.backend.setup_cache(2 * num, self.max_context)
        self._cache_owner = None
        t0 = time.perf_counter()
        codes = generate_codes(
            self.backend,
            torch.as_tensor(batch.input_ids, device=dev),
            torch.as_tensor(batch.attention_mask, device=dev),
            torch.as_tensor(batch.position_ids, device=dev),
            n_pos,
            ImageSettings(cfg_scale, temperature, top_k, top_p),
            generator=self._rng(seed),
            on_position=progress,
        )
        self.stats = {
            "image_generation_s": time.perf_counter() - t0,
            "images": num * frames,
            "peak_memory_mb": peak_memory_mb(dev),
        }
        h, w = self.cfg.grid
        return codes.view(num, frames, h, w, -1).cpu().numpy()

    @exclusive
    def generate_video(self, prompt: str, **kwargs) -> list[list[Image.Image]]:
        """Text -> videos, each a list of frames (PIL images)."""
        codes = self.generate_video_codes(prompt, **kwargs)
        return [self.decode_codes(v) for v in codes]

    def _rng(self, seed: int | None) -> torch.Generator:
        gen = torch.Generator(device=self.device)
        seed = arguments.seed(seed)
        gen.manual_seed(seed if seed is not None else torch.seed() % 2**63)
        return gen

    @exclusive
    def generate_image(self, prompt: str, **kwargs) -> list[Image.Image]:
        codes = self.generate_image_codes(prompt, **kwargs)
        return self.decode_codes(codes)
