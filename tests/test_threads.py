"""One Pipeline shared by threads: requests take turns, every answer equals the answer the same
request gets alone, and an open stream keeps the Pipeline until it ends or is closed."""

from __future__ import annotations

import random
import threading

import numpy as np
import pytest

from vilau_rt import Pipeline
from vilau_rt.errors import PipelineBusyError

N_THREADS = 4
BACKENDS = ["torch", "native", "onnxruntime"]


@pytest.fixture(scope="module", params=BACKENDS)
def pipe(request, tiny_fixture, tmp_path_factory):
    if request.param == "onnxruntime":
        pytest.importorskip("onnxruntime_extensions")
    cache = tmp_path_factory.getbasetemp() / "vilau-rt-cache"  # shared with the ORT tests
    return Pipeline.from_pretrained(
        tiny_fixture,
        backend=request.param,
        siglip_config=tiny_fixture / "reference" / "siglip_config",
        cache_dir=cache,
    )


def _image(i: int) -> np.ndarray:
    return np.random.default_rng(i).integers(0, 256, (32, 32, 3), dtype=np.uint8)


def _requests(i: int):
    """Thread i's requests: (name, callable(pipe) -> comparable answer)."""
    img = _image(i)

    def caption(p):
        return p.caption(img, "What is this?", max_new_tokens=6)

    def sampled(p):
        kw = {"max_new_tokens": 6, "do_sample": True, "seed": i}
        return p.generate(f"Tell me about picture {i}.", images=[img], **kw).token_ids

    def stream(p):
        return "".join(p.generate("Describe it.", images=[img], max_new_tokens=6, stream=True))

    def codes(p):
        return p.generate_image_codes(f"a shape number {i}", top_k=1).tolist()

    def encode(p):
        return p.encode_image(img).tolist()

    def chat(p):
        session = p.chat_session()
        a = session.ask("What is it?", images=[img], max_new_tokens=4).token_ids
        return a + session.ask("Sure?", max_new_tokens=4).token_ids

    return [(f.__name__, f) for f in (caption, sampled, stream, codes, encode, chat)]


def test_threads_sharing_a_pipeline_get_the_single_thread_answers(pipe):
    alone = {(i, name): run(pipe) for i in range(N_THREADS) for name, run in _requests(i)}
    got, errors = {}, []

    def worker(i):
        try:
            todo = _requests(i)
            random.Random(i).shuffle(todo)
            for name, run in todo:
                got.setdefault((i, name), []).append(run(pipe))
        except Exception as e:  # noqa: BLE001  (reported below, with the thread index)
            errors.append((i, repr(e)))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(N_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors
    for key, answers in got.items():
        assert answers == [alone[key]], key


def test_a_paused_stream_keeps_the_pipeline_until_closed(pipe):
    img = _image(0)
    want = pipe.generate("Describe it.", images=[img], max_new_tokens=8).text
    other_want = pipe.caption(_image(1), "What is this?", max_new_tokens=6)
    stream = pipe.generate("Describe it.", images=[img], max_new_tokens=8, stream=True)
    first = next(stream)
    # the same thread cannot start another request while its stream is open ...
    with pytest.raises(PipelineBusyError, match="open streaming request"):
        pipe.caption(_image(1), "What is this?", max_new_tokens=6)
    # ... another thread waits for it, and then gets its own answer
    other = {}
    t = threading.Thread(
        target=lambda: other.update(text=pipe.caption(_image(1), "What is this?", max_new_tokens=6))
    )
    t.start()
    t.join(timeout=0.5)
    assert t.is_alive() and not other  # still waiting for the stream
    assert first + "".join(stream) == want  # resumed over an untouched cache
    t.join(timeout=120)
    assert other["text"] == other_want


def test_closing_a_stream_early_frees_the_pipeline(pipe):
    img = _image(2)
    want = pipe.caption(img, "What is this?", max_new_tokens=6)
    with pipe.generate("Describe it.", images=[img], max_new_tokens=8, stream=True) as stream:
        next(stream)
    assert pipe.caption(img, "What is this?", max_new_tokens=6) == want
    dropped = pipe.generate("Describe it.", images=[img], max_new_tokens=8, stream=True)
    del dropped  # garbage-collected without close(): the Pipeline is free again
    assert pipe.caption(img, "What is this?", max_new_tokens=6) == want
