"""An OpenAI-compatible HTTP server over one Pipeline (FastAPI + uvicorn, the ``[serve]`` extra).

| endpoint | does |
|---|---|
| ``GET /health`` | 200 ``{"status": "ok", ...}`` with the queue's counters |
| ``GET /v1/models`` | the one model: the checkpoint folder's name (or the built-in name) |
| ``POST /v1/chat/completions`` | text + ``image_url`` parts; ``stream`` as SSE ending ``data: [DONE]`` |
| ``POST /v1/images/generations`` | ``b64_json`` PNGs; extras ``guidance_scale`` (CFG), ``seed`` |

The model runs in one worker thread, one request at a time (they share the KV cache). At most
``max_queue`` requests wait behind the running one; past that the answer is 429 with
Retry-After. A client that disconnects stops its generation between two tokens (or two image
positions). Client mistakes are 4xx OpenAI error objects; a 5xx means a server fault.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from ..errors import VilaURTError
from ..generate import text_settings
from ..prompts import IMAGE_PLACEHOLDER_ID, tokenize_with_images
from .openai_schema import (
    ChatCompletionRequest,
    ImageGenerationRequest,
    conversation,
    error_body,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 256  # when a request gives none, capped by what the context leaves


class Cancelled(Exception):
    """The client went away; the worker stopped its job."""


class ModelNotFound(Exception):
    pass


class Job:
    """One request in the worker: events flow to the event loop through an asyncio queue."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.events: asyncio.Queue = asyncio.Queue()
        self.cancelled = threading.Event()
        self.finished = False

    def emit(self, kind: str, value=None) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))

    def check(self, *_) -> None:
        if self.cancelled.is_set():
            raise Cancelled()


class Worker:
    """One thread runs the model; ``submit`` refuses (None) when ``max_queue`` jobs wait."""

    def __init__(self, max_queue: int):
        if max_queue < 0:
            raise ValueError(f"max_queue must be >= 0, got {max_queue}")
        self.max_queue = max_queue
        self.active = 0  # running + waiting
        self.served = 0
        self.cancelled = 0
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vilau-model")

    def submit(self, fn) -> Job | None:
        with self._lock:
            if self.active > self.max_queue:
                return None
            self.active += 1
        job = Job(asyncio.get_running_loop())
        self._pool.submit(self._run, job, fn)
        return job

    def _run(self, job: Job, fn) -> None:
        try:
            job.check()
            fn(job)
        except Cancelled:
            with self._lock:
                self.cancelled += 1
            job.emit("error", Cancelled())
        except Exception as e:  # noqa: BLE001 - handed to the request, mapped to a status
            job.emit("error", e)
        else:
            with self._lock:
                self.served += 1
        finally:
            with self._lock:
                self.active -= 1

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _error(status: int, message: str, type_: str = "invalid_request_error", code=None, **kw):
    return JSONResponse(error_body(message, type_, code=code), status_code=status, **kw)


def _exception_response(e: BaseException) -> JSONResponse:
    if isinstance(e, VilaURTError):
        return _error(400, str(e))
    if isinstance(e, ModelNotFound):
        return _error(404, str(e), code="model_not_found")
    if isinstance(e, Cancelled):
        return _error(499, "the client closed the request")
    log.error("request failed", exc_info=e)
    return _error(500, f"internal error: {type(e).__name__}: {e}", "server_error")


def chat_pieces(pipe, text: str, images: list, req: ChatCompletionRequest):
    """Start generating the answer to a vicuna_v1 prompt; an iterator of text pieces (closing it
    stops decoding). Raises PromptError now when the prompt does not fit the context."""
    t0 = time.perf_counter()
    ids = tokenize_with_images(pipe.tokenizer, text)
    prompt_len = len(ids) + ids.count(IMAGE_PLACEHOLDER_ID) * (pipe.cfg.tokens_per_image - 1)
    max_new = req.max_completion_tokens or req.max_tokens
    if max_new is None:
        max_new = max(1, min(DEFAULT_MAX_TOKENS, pipe.max_context - prompt_len))
    temperature = 1.0 if req.temperature is None else req.temperature
    # temperature 0 is greedy, as in the OpenAI API
    settings = text_settings(max_new, temperature > 0, temperature or 1.0, None, req.top_p, 1.0)
    stop = [req.stop] if isinstance(req.stop, str) else req.stop

    def run():
        embeds = pipe.image_embeddings(images)
        pipe._cache_owner = None  # a chat session's cache, if any, is overwritten
        return pipe._run(ids, embeds, 0, settings, req.seed, stop, True, t0)

    # one request at a time on the Pipeline, held until the stream ends or is closed, as for
    # Pipeline.generate(stream=True): safe even if the application shares this Pipeline
    return pipe._request(run, stream=True), max_new


def create_app(pipe, model_id: str, *, max_queue: int = 8, allowed_media_dir=None) -> FastAPI:
    allowed = Path(allowed_media_dir) if allowed_media_dir is not None else None
    worker = Worker(max_queue)

    @asynccontextmanager
    async def lifespan(app):
        yield
        worker.shutdown()

    app = FastAPI(title="vilau_rt", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.worker = worker
    size = f"{pipe.cfg.image_size}x{pipe.cfg.image_size}"

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError):
        errs = e.errors()
        first = errs[0] if errs else {}
        if first.get("type") == "json_invalid":
            err = first.get("ctx", {}).get("error", "")
            return _error(400, f"the request body is not valid JSON: {err}")
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        msg = first.get("msg", "invalid request")
        return _error(400, f"{where}: {msg}" if where else msg)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, e: HTTPException):
        return _error(e.status_code, str(e.detail), headers=getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def _fault(request: Request, e: Exception):
        return _exception_response(e)

    def check_model(name: str | None) -> None:
        if name is not None and name != model_id:
            raise ModelNotFound(f"model {name!r} does not exist; this server has {model_id!r}")

    def busy() -> JSONResponse:
        return _error(
            429, f"the queue is full ({worker.max_queue} waiting); retry later",
            "rate_limit_error", headers={"Retry-After": "1"},
        )  # fmt: skip

    async def watch(request: Request, job: Job) -> None:
        while not job.finished:
            if await request.is_disconnected():
                job.cancelled.set()
                return
            await asyncio.sleep(0.02)  # a dropped client stops within a few tokens

    @app.get("/health")
    async def health():
        return {
            "status": "ok", "model": model_id, "active": worker.active,
            "max_queue": worker.max_queue, "served": worker.served,
            "cancelled": worker.cancelled,
        }  # fmt: skip

    @app.get("/v1/models")
    async def models():
        return {
            "object": "list",
            "data": [{"id": model_id, "object": "model", "created": 0, "owned_by": "vilau_rt"}],
        }

    @app.post("/v1/chat/completions")
    async def chat(req: ChatCompletionRequest, request: Request):
        try:
            check_model(req.model)
            text, images = await asyncio.to_thread(conversation, req.messages, allowed)
        except (VilaURTError, ModelNotFound) as e:
            return _exception_response(e)

        def work(job: Job) -> None:
            pieces, max_new = chat_pieces(pipe, text, images, req)
            job.emit("start")
            try:
                for piece in pieces:
                    job.check()
                    job.emit("piece", piece)
            finally:
                pieces.close()
            job.check()
            stats = pipe.stats
            n = stats.get("new_tokens", 0)
            usage = {
                "prompt_tokens": stats.get("prompt_tokens", 0), "completion_tokens": n,
                "total_tokens": stats.get("prompt_tokens", 0) + n,
            }  # fmt: skip
            job.emit("done", (usage, "length" if n >= max_new else "stop"))

        job = worker.submit(work)
        if job is None:
            return busy()
        cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        head = {"id": cid, "created": created, "model": model_id}
        watcher = asyncio.create_task(watch(request, job))
        try:
            kind, value = await job.events.get()
        except BaseException:
            job.cancelled.set()
            watcher.cancel()
            raise
        if kind == "error":
            job.finished = True
            return _exception_response(value)
        if req.stream:
            watcher.cancel()  # the streaming response notices the disconnect itself
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(
                sse(job, head, include_usage), media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )  # fmt: skip
        text_out: list[str] = []
        try:
            while True:
                kind, value = await job.events.get()
                if kind == "piece":
                    text_out.append(value)
                elif kind == "error":
                    return _exception_response(value)
                else:
                    usage, finish = value
                    break
        finally:
            job.finished = True
            job.cancelled.set()  # no-op when done; stops the worker when the client is gone
            watcher.cancel()
        return {
            **head, "object": "chat.completion",
            "choices": [{
                "index": 0, "message": {"role": "assistant", "content": "".join(text_out)},
                "finish_reason": finish,
            }],
            "usage": usage,
        }  # fmt: skip

    async def sse(job: Job, head: dict, include_usage: bool):
        def chunk(delta: dict, finish=None) -> str:
            body = {**head, "object": "chat.completion.chunk",
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip
            return f"data: {json.dumps(body)}\n\n"

        try:
            yield chunk({"role": "assistant", "content": ""})
            while True:
                kind, value = await job.events.get()
                if kind == "piece":
                    yield chunk({"content": value})
                elif kind == "error":
                    e = value
                    yield f"data: {json.dumps(error_body(str(e), 'server_error'))}\n\n"
                    break
                else:
                    usage, finish = value
                    yield chunk({}, finish)
                    if include_usage:
                        body = {**head, "object": "chat.completion.chunk", "choices": [],
                                "usage": usage}  # fmt: skip
                        yield f"data: {json.dumps(body)}\n\n"
                    break
            yield "data: [DONE]\n\n"
        finally:
            # also reached when the client disconnects: the worker stops at the next token
            job.finished = True
            job.cancelled.set()

    @app.post("/v1/images/generations")
    async def images(req: ImageGenerationRequest, request: Request):
        try:
            check_model(req.model)
        except ModelNotFound as e:
            return _exception_response(e)
        if req.size is not None and req.size != size:
            return _error(400, f"size {req.size!r} is not supported: this model draws {size}")

        def work(job: Job) -> None:
            pics = pipe.generate_image(
                req.prompt, cfg_scale=req.guidance_scale, seed=req.seed, num_images=req.n,
                progress=job.check,
            )  # fmt: skip
            data = []
            for im in pics:
                buf = io.BytesIO()
                im.save(buf, format="PNG")
                data.append({"b64_json": base64.b64encode(buf.getvalue()).decode("ascii")})
            job.emit("done", data)

        job = worker.submit(work)
        if job is None:
            return busy()
        watcher = asyncio.create_task(watch(request, job))
        try:
            kind, value = await job.events.get()
        finally:
            job.finished = True
            job.cancelled.set()
            watcher.cancel()
        if kind == "error":
            return _exception_response(value)
        return {"created": int(time.time()), "data": value}

    return app


def serve(app: FastAPI, host: str = "127.0.0.1", port: int = 8000,
          exit_after_s: float | None = None) -> None:  # fmt: skip
    """Run ``app`` with uvicorn until Ctrl-C (or for ``exit_after_s`` seconds)."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    if exit_after_s is not None:
        timer = threading.Timer(exit_after_s, lambda: setattr(server, "should_exit", True))
        timer.daemon = True
        timer.start()
    server.run()
