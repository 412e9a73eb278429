"""``vilau-rt serve`` as users run it: a subprocess on a free loopback port, driven by the
official ``openai`` client and by raw HTTP."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from pathlib import Path

import pytest
from PIL import Image
from serve_helpers import running_server

httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

MODEL = "tiny"
MAX_QUEUE = 2


def _png(color=(200, 10, 10), size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def _data_url(raw: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(raw).decode()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from vilau_export.checkpoint_writer import write_checkpoint

    from vilau_rt.model.config import preset

    tmp = tmp_path_factory.mktemp("serve")
    ckpt = write_checkpoint(preset("tiny-256"), tmp / MODEL, seed=0)
    media = tmp / "media"
    media.mkdir()
    (media / "red.png").write_bytes(_png())
    (tmp / "secret.png").write_bytes(_png())
    args = ["--max-queue", str(MAX_QUEUE), "--allowed-local-media-path", str(media)]
    with running_server(tmp, str(ckpt), *args) as base:
        yield {"base": base, "media": media, "outside": tmp / "secret.png"}


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server["base"] + "/v1", api_key="none", max_retries=0)


def _post(server, path, body, **kw):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    headers = {"content-type": "application/json"}
    return httpx.post(server["base"] + path, content=data, headers=headers, timeout=60, **kw)


def _wait_idle(server, timeout=30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        health = httpx.get(server["base"] + "/health", timeout=5).json()
        if health["active"] == 0 or time.monotonic() > deadline:
            return health
        time.sleep(0.05)


def test_health_and_models_name_the_checkpoint_folder(server, client):
    health = httpx.get(server["base"] + "/health").json()
    assert health["status"] == "ok" and health["model"] == MODEL
    assert [m.id for m in client.models.list().data] == [MODEL]


def test_chat_with_an_image_counts_usage(client):
    res = client.chat.completions.create(
        model=MODEL, max_tokens=6, temperature=0,
        messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": _data_url(_png())}},
            {"type": "text", "text": "What colour is it?"},
        ]}],
    )  # fmt: skip
    choice = res.choices[0]
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert 1 <= res.usage.completion_tokens <= 6
    # the image's 16 embeddings count as prompt tokens
    assert res.usage.prompt_tokens > 16
    assert res.usage.total_tokens == res.usage.prompt_tokens + res.usage.completion_tokens
    assert choice.finish_reason in ("stop", "length")


def test_local_files_are_read_only_under_the_allowed_folder(server, client):
    for url in (str(server["media"] / "red.png"), (server["media"] / "red.png").as_uri()):
        res = client.chat.completions.create(
            model=MODEL, max_tokens=2, temperature=0,
            messages=[{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": url}},
                {"type": "text", "text": "Describe."},
            ]}],
        )  # fmt: skip
        assert res.usage.prompt_tokens > 16


def test_streaming_equals_non_streaming(client):
    kwargs = {
        "model": MODEL, "max_tokens": 12, "temperature": 0,
        "messages": [
            {"role": "system", "content": "You are a robot."},
            {"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": _data_url(_png((0, 0, 255)))}},
                {"type": "text", "text": "Describe the scene."},
            ]},
            {"role": "assistant", "content": "A blue square."},
            {"role": "user", "content": "And its size?"},
        ],
    }  # fmt: skip
    full = client.chat.completions.create(**kwargs)
    chunks = list(
        client.chat.completions.create(
            **kwargs, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == full.choices[0].finish_reason


def test_raw_sse_ends_with_done(server):
    body = {"model": MODEL, "max_tokens": 3, "temperature": 0, "stream": True,
            "messages": [{"role": "user", "content": "hi"}]}  # fmt: skip
    res = _post(server, "/v1/chat/completions", body)
    assert res.status_code == 200
    assert res.headers["content-type"].startswith("text/event-stream")
    events = [e for e in res.text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"


def test_sampling_with_a_seed_repeats(client):
    kwargs = {"model": MODEL, "max_tokens": 8, "temperature": 1.0, "top_p": 0.9, "seed": 7,
              "messages": [{"role": "user", "content": "Say something."}]}  # fmt: skip
    a = client.chat.completions.create(**kwargs).choices[0].message.content
    b = client.chat.completions.create(**kwargs).choices[0].message.content
    assert a == b


def test_image_generation_returns_pngs_of_the_model_size(client):
    def draw():
        res = client.images.generate(
            model=MODEL, prompt="a red circle", n=2, size="32x32", response_format="b64_json",
            extra_body={"guidance_scale": 2.0, "seed": 3},
        )  # fmt: skip
        return [base64.b64decode(d.b64_json) for d in res.data]

    pngs = draw()
    assert len(pngs) == 2
    assert all(Image.open(io.BytesIO(p)).size == (32, 32) for p in pngs)
    assert draw() == pngs  # the same seed draws the same images


def _user(*parts):
    return {"model": MODEL, "max_tokens": 2, "messages": [{"role": "user", "content": list(parts)}]}


def _image(url):
    return {"type": "image_url", "image_url": {"url": url}}


TEXT = {"type": "text", "text": "What is it?"}
CHAT = "/v1/chat/completions"
IMAGES = "/v1/images/generations"
BAD_PAYLOADS = {
    "bad JSON": (CHAT, b'{"model": "tiny", "messages": [', 400),
    "body is a list": (CHAT, [1, 2], 400),
    "no messages": (CHAT, {"model": MODEL}, 400),
    "empty messages": (CHAT, {"model": MODEL, "messages": []}, 400),
    "unknown role": (CHAT, {"model": MODEL, "messages": [{"role": "robot", "content": "x"}]}, 400),
    "unknown part type": (CHAT, _user({"type": "audio", "audio": "x"}), 400),
    "bad base64": (CHAT, _user(_image("data:image/png;base64,@@@notbase64"), TEXT), 400),
    "base64 of no image": (CHAT, _user(_image(_data_url(b"hello world")), TEXT), 400),
    "http image URL": (CHAT, _user(_image("https://example.com/cat.png"), TEXT), 400),
    "file outside the folder": (CHAT, None, 400),
    "missing file in the folder": (CHAT, None, 400),
    "unknown model": (CHAT, {**_user(TEXT), "model": "gpt-4o"}, 404),
    "prompt past the context": (CHAT, {**_user(TEXT), "max_tokens": 5000}, 400),
    "streamed prompt past the context": (
        CHAT,
        {**_user(TEXT), "max_tokens": 5000, "stream": True},
        400,
    ),
    "long prompt past the context": (CHAT, _user({"type": "text", "text": "word " * 400}), 400),
    "negative temperature": (CHAT, {**_user(TEXT), "temperature": -1}, 400),
    "top_p of 0": (CHAT, {**_user(TEXT), "top_p": 0}, 400),
    "n = 2": (CHAT, {**_user(TEXT), "n": 2}, 400),
    "max_tokens 0": (CHAT, {**_user(TEXT), "max_tokens": 0}, 400),
    "image placeholder in text": (CHAT, _user({"type": "text", "text": "<image> hi"}), 400),
    "ends with assistant": (
        CHAT,
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
        },
        400,
    ),
    "images n = 0": (IMAGES, {"prompt": "a cat", "n": 0}, 400),
    "images wrong size": (IMAGES, {"prompt": "a cat", "size": "1024x1024"}, 400),
    "images url format": (IMAGES, {"prompt": "a cat", "response_format": "url"}, 400),
    "images empty prompt": (IMAGES, {"prompt": ""}, 400),
    "images unknown model": (IMAGES, {"prompt": "a cat", "model": "dall-e-3"}, 404),
    "unknown route": ("/v1/embeddings", {"input": "x"}, 404),
}


@pytest.mark.parametrize("name", list(BAD_PAYLOADS))
def test_client_mistakes_are_4xx_error_objects(server, name):
    path, body, status = BAD_PAYLOADS[name]
    if name == "file outside the folder":
        body = _user(_image(str(server["outside"])), TEXT)
    if name == "missing file in the folder":
        body = _user(_image(str(server["media"] / "nope.png")), TEXT)
    res = _post(server, path, body)
    assert res.status_code == status, res.text
    error = res.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert "type" in error


def test_openai_client_sees_bad_requests_as_bad_request_errors(client):
    with pytest.raises(openai.BadRequestError, match="context"):
        client.chat.completions.create(
            model=MODEL, max_tokens=5000, messages=[{"role": "user", "content": "hi"}]
        )
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])


def test_burst_gets_only_200_or_429(server):
    _wait_idle(server)
    body = {"model": MODEL, "max_tokens": 24, "temperature": 0,
            "messages": [{"role": "user", "content": "Count to ten."}]}  # fmt: skip
    n = 10
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def shoot(i):
        barrier.wait()
        results[i] = _post(server, CHAT, body)

    threads = [threading.Thread(target=shoot, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    codes = sorted(r.status_code for r in results)
    assert set(codes) <= {200, 429}, codes
    assert 200 in codes and 429 in codes, codes
    assert codes.count(200) >= MAX_QUEUE + 1 - 1  # the running one and the waiting ones
    for r in results:
        if r.status_code == 429:
            assert r.headers["retry-after"] == "1"
            assert r.json()["error"]["type"] == "rate_limit_error"


def test_dropped_stream_stops_generation_then_next_request_works(server, client):
    before = _wait_idle(server)
    body = {"model": MODEL, "max_tokens": 120, "temperature": 0, "stream": True,
            "messages": [{"role": "user", "content": "Tell me a story."}]}  # fmt: skip
    with httpx.stream("POST", server["base"] + CHAT, json=body, timeout=60) as res:
        assert res.status_code == 200
        lines = res.iter_lines()
        got = [next(lines) for _ in range(4)]  # the role chunk, a blank line, one piece
        assert got[0].startswith("data: ")
    # the connection is closed: the worker stops at its next token instead of finishing
    after = _wait_idle(server)
    assert after["active"] == 0
    assert after["cancelled"] == before["cancelled"] + 1
    res = client.chat.completions.create(
        model=MODEL, max_tokens=3, temperature=0, messages=[{"role": "user", "content": "hi"}]
    )
    assert res.usage.completion_tokens >= 1


def test_relative_image_path_resolves_outside_the_allowed_folder_and_is_refused(server):
    # resolved against the server's working folder (the repository), not the allowed one
    res = _post(server, CHAT, _user(_image(Path("red.png").as_posix()), TEXT))
    assert res.status_code == 400


def test_client_that_gives_up_on_a_non_streamed_answer_stops_it(server):
    before = _wait_idle(server)
    # 150 tokens (the prompt is 101 of the 256) take ~0.15 s on an idle CPU; the client gives up
    # after 0.02 s and the server notices within one 0.02 s poll
    body = {"model": MODEL, "max_tokens": 150, "temperature": 0,
            "messages": [{"role": "user", "content": "Tell me a story."}]}  # fmt: skip
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server["base"] + CHAT, json=body, timeout=httpx.Timeout(5.0, read=0.02))
    after = _wait_idle(server)
    assert after["cancelled"] == before["cancelled"] + 1
    assert after["served"] == before["served"]
