"""The live loop: newest-frame answers, dropped frames counted, pacing, sources, the CLI."""

from __future__ import annotations

import itertools
import json
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from vilau_rt import Pipeline
from vilau_rt.serving.live import LiveResult
from vilau_rt.serving.sources import AVSource, SourceError

av = pytest.importorskip("av")

FPS = 10
CLIP_FRAMES = 15


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from vilau_export.checkpoint_writer import write_checkpoint

    from vilau_rt.model.config import preset

    return write_checkpoint(preset("tiny-256"), tmp_path_factory.mktemp("live") / "tiny", seed=0)


@pytest.fixture(scope="module")
def pipe(ckpt):
    return Pipeline.from_pretrained(ckpt, device="cpu")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 1.5 s, 10 fps mp4 whose frame i is a solid grey of level 10 * i."""
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=FPS)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for i in range(CLIP_FRAMES):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 10 * i, np.uint8), "rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def test_fast_source_drops_frames_and_answers_about_recent_ones(pipe):
    produced = 0

    def frames():
        nonlocal produced
        kinds = [
            lambda i: np.full((24, 40, 3), i % 256, np.uint8),  # numpy HWC
            lambda i: torch.full((3, 32, 32), i % 256, dtype=torch.uint8),  # torch CHW
            lambda i: Image.new("RGB", (20, 20), (i % 256, 0, 0)),  # PIL
        ]
        for i in range(100_000):
            produced = i + 1
            yield kinds[i % 3](i)
            time.sleep(0.002)

    results: list[LiveResult] = []
    seen_before: list[int] = []
    with pipe.live(frames(), max_new_tokens=2) as loop:
        for r in loop:
            results.append(r)
            seen_before.append(produced)
            if len(results) == 5:
                break
    assert [r.frame for r in results] == sorted({r.frame for r in results})
    assert results[-1].dropped > 0
    assert all(b.dropped >= a.dropped for a, b in itertools.pairwise(results))
    # each answer is about a frame read after the previous answer was handed out
    for prev_produced, r in zip(seen_before, results[1:]):
        assert r.frame >= prev_produced - 2, (r.frame, prev_produced)
    assert all(isinstance(r.text, str) and r.latency_ms > 0 for r in results)


def test_clip_is_paced_at_its_frame_rate(pipe, clip):
    t0 = time.monotonic()
    with pipe.live(clip, max_new_tokens=2) as loop:
        results = list(loop)
    elapsed = time.monotonic() - t0
    assert elapsed >= (CLIP_FRAMES - 1) / FPS * 0.9  # played like a camera, not read at once
    assert results and results[0].frame == 0
    for r in results:
        assert r.time == pytest.approx(r.frame / FPS, abs=1e-6)
    assert len(results) + results[-1].dropped <= CLIP_FRAMES


def test_realtime_off_answers_every_frame_of_a_clip(pipe, clip):
    with pipe.live(clip, realtime=False, max_new_tokens=1) as loop:
        results = list(loop)
    assert [r.frame for r in results] == list(range(CLIP_FRAMES))
    assert results[-1].dropped == 0


def test_window_answers_about_the_last_frames_as_a_video(pipe):
    frames = [np.full((32, 32, 3), 20 * i, np.uint8) for i in range(6)]
    with pipe.live(frames, realtime=False, window=3, max_new_tokens=1) as loop:
        results = list(loop)
    assert [r.frame for r in results] == list(range(6))


def test_stop_ends_an_endless_source_from_another_thread(pipe):
    loop = pipe.live(lambda: np.zeros((16, 16, 3), np.uint8), max_new_tokens=1)
    timer = threading.Timer(0.5, loop.stop)
    timer.start()
    with loop:
        n = sum(1 for _ in loop)
    timer.cancel()
    assert n >= 1


def test_stop_ends_the_loop_while_the_source_is_silent(pipe):
    gate = threading.Event()

    def frames():
        yield np.zeros((16, 16, 3), np.uint8)
        gate.wait(10)  # a camera that stops delivering

    loop = pipe.live(frames(), max_new_tokens=1)
    assert next(loop).frame == 0
    threading.Timer(0.2, loop.stop).start()
    t0 = time.monotonic()
    with pytest.raises(StopIteration):
        next(loop)
    assert time.monotonic() - t0 < 5
    gate.set()
    loop.close()


def test_unreadable_sources_are_clear_errors(pipe, tmp_path):
    with pytest.raises(SourceError, match="not found"):
        pipe.live(tmp_path / "missing.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video" * 100)
    with pytest.raises(SourceError, match="cannot open"):
        pipe.live(junk)
    with pytest.raises(SourceError, match="unsupported frame source"):
        pipe.live(42)


def test_bad_frame_ends_the_loop_with_its_error(pipe):
    frames = [np.zeros((16, 16, 3), np.uint8), np.zeros((16, 16, 3), np.float64)]
    with pipe.live(frames, realtime=False, max_new_tokens=1) as loop:
        assert next(loop).frame == 0
        with pytest.raises(ValueError, match="float64"):
            next(loop)


def test_dropped_stream_is_retried_then_ends_with_an_error(clip):
    # a live source that keeps ending: reopened `retries` times, then SourceError
    src = AVSource(str(clip), live=True, retries=2, retry_delay_s=0.0)
    count = 0
    with pytest.raises(SourceError, match="after 2 retries"):
        for _ in src.frames():
            count += 1
    assert count == 3 * CLIP_FRAMES


def test_cli_live_prints_one_json_object_per_answer(ckpt, clip, capsys):
    from vilau_rt.cli import main

    rc = main(["live", str(ckpt), str(clip), "--json", "--max-new-tokens", "2",
               "--realtime", "off", "--max-answers", "3", "--device", "cpu"])  # fmt: skip
    out, _ = capsys.readouterr()
    assert rc == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["frame"] for r in rows] == [0, 1, 2]
    for r in rows:
        assert isinstance(r["text"], str) and r["latency_ms"] > 0
        assert r["time"] == pytest.approx(r["frame"] / FPS)


def test_cli_live_unreadable_source_is_one_line_and_exit_2(ckpt, tmp_path, capsys):
    from vilau_rt.cli import main

    assert main(["live", str(ckpt), str(tmp_path / "nope.mp4"), "--device", "cpu"]) == 2
    _, err = capsys.readouterr()
    assert err.count("\n") == 1 and "not found" in err
