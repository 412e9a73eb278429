"""The live loop and the server with the trained built-in model: the answers mean something.

shapes-demo captions fresh renders of its world exactly (tests/test_shapes_demo.py holds the
yardstick); here a camera that changes scene must be described as the new scene, and the
server's chat and image endpoints must say and draw what was asked.
"""

from __future__ import annotations

import base64
import io
import time

import numpy as np
import pytest
from PIL import Image
from serve_helpers import running_server

from vilau_rt import Pipeline
from vilau_rt.shapes_world import Scene, classify, render

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

BEFORE = Scene("yellow", "square", "black")
AFTER = Scene("red", "circle", "black")


@pytest.fixture(scope="module")
def pipe():
    return Pipeline.from_pretrained("shapes-demo", device="cpu")


def _renders(scene: Scene, n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [render(scene, rng) for _ in range(n)]


def test_live_loop_describes_the_scene_the_camera_shows_now(pipe):
    before, after = _renders(BEFORE, 4, 1), _renders(AFTER, 4, 2)
    switched_at = None
    frame = 0

    def camera():  # a callable source: the newest frame each call, the scene changes at 0.6 s
        nonlocal switched_at, frame
        time.sleep(0.01)
        frame += 1
        if frame * 0.01 < 0.6:
            return before[frame % 4]
        switched_at = switched_at or frame
        return after[frame % 4]

    answers = []
    with pipe.live(camera, max_new_tokens=24) as loop:
        for r in loop:
            answers.append(r)
            if switched_at is not None and r.frame > switched_at + 2:
                break
            if len(answers) > 200:
                pytest.fail("the loop never answered about a frame after the switch")
    first, last = answers[0], answers[-1]
    assert first.text == BEFORE.caption, first
    assert last.text == AFTER.caption, last


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("serve-shapes"), "shapes-demo") as base:
        yield base


def test_server_chat_captions_an_image_of_the_world(server):
    buf = io.BytesIO()
    Image.fromarray(_renders(AFTER, 1, 3)[0]).save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    body = {
        "model": "shapes-demo", "temperature": 0, "max_tokens": 24,
        "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": url}},
            {"type": "text", "text": "Please describe this image in detail."},
        ]}],
    }  # fmt: skip
    res = httpx.post(server + "/v1/chat/completions", json=body, timeout=60)
    assert res.status_code == 200, res.text
    assert res.json()["choices"][0]["message"]["content"] == AFTER.caption


def test_server_draws_what_was_asked(server):
    body = {"model": "shapes-demo", "prompt": BEFORE.caption, "n": 1, "size": "32x32",
            "response_format": "b64_json", "seed": 0, "guidance_scale": 3.0}  # fmt: skip
    res = httpx.post(server + "/v1/images/generations", json=body, timeout=120)
    assert res.status_code == 200, res.text
    png = base64.b64decode(res.json()["data"][0]["b64_json"])
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert classify(image) == BEFORE
