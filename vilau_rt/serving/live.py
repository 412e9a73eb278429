"""The live loop: describe the newest camera frame, over and over, with low latency.

A reader thread pulls frames from the source and keeps only the newest one; frames that arrive
while the model is busy are dropped and counted (NanoLLM's "drop old inputs"). The caller's
thread takes the newest frame, answers ``prompt`` about it, and yields a LiveResult.

```python
with pipe.live("clip.mp4", max_new_tokens=32) as results:
    for r in results:
        print(r.frame, f"{r.time:.2f}s", r.latency_ms, r.dropped, r.text)
```

``realtime``: None paces a file at its own frame rate and reads live sources as they come;
True paces a file (a Python source is never paced: it produces at its own speed); False is the
offline mode: no pacing and no dropping, each frame waits for the model, so every frame of a
clip is answered. ``window=N`` answers about the last N frames read (dropped ones included) as a
video instead of the newest frame alone.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass

from .sources import open_source


@dataclass
class LiveResult:
    frame: int  # index of the answered frame in the source (0-based)
    time: float  # its timestamp in the source, seconds
    text: str
    latency_ms: float  # from the frame's arrival to the finished answer
    dropped: int  # frames dropped so far

    def to_dict(self) -> dict:
        return asdict(self)


class LiveLoop:
    """Iterator and context manager of LiveResult; ``stop()`` ends it from any thread."""

    def __init__(
        self,
        pipe,
        source,
        prompt: str,
        *,
        realtime: bool | None = None,
        window: int | None = None,
        retries: int = 3,
        retry_delay_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
        **gen,
    ):
        if window is not None and (not isinstance(window, int) or window < 1):
            raise ValueError(f"window must be an int >= 1 or None, got {window!r}")
        self.pipe = pipe
        self.prompt = prompt
        self.gen = gen
        self.window = window
        self.dropped = 0
        self._source = open_source(source, retries=retries, retry_delay_s=retry_delay_s,
                                   clock=clock)  # fmt: skip
        file = getattr(self._source, "live", True) is False
        self._paced = file and realtime is not False and bool(self._source.fps)
        self._lockstep = realtime is False
        self._clock = clock
        self._stop = threading.Event()
        self._sleep = sleep or self._stop.wait  # stop() interrupts the default pacing wait
        self._cond = threading.Condition()
        self._latest = None  # (index, timestamp, frame, arrival, window frames)
        self._recent: deque = deque(maxlen=window or 1)
        self._done = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._read, name="vilau-live-reader", daemon=True)
        self._thread.start()

    # -- reader thread -----------------------------------------------------------------------
    def _read(self) -> None:
        try:
            start = None
            for index, (t, frame) in enumerate(self._source.frames()):
                if self._stop.is_set():
                    break
                if self._paced:
                    # a file behaves like a camera: frame t arrives t seconds after the first
                    start = self._clock() - t if start is None else start
                    delay = start + t - self._clock()
                    if delay > 0:
                        self._sleep(delay)
                    if self._stop.is_set():
                        break
                self._put(index, t, frame)
        except Exception as e:  # noqa: BLE001 - handed to the consumer, raised by __next__
            self._error = e
        finally:
            self._source.close()
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def _put(self, index: int, t: float, frame) -> None:
        with self._cond:
            if self._lockstep:
                self._cond.wait_for(lambda: self._latest is None or self._stop.is_set())
            self._recent.append(frame)
            if self._latest is not None:
                self.dropped += 1
            recent = list(self._recent) if self.window else None
            self._latest = (index, t, frame, self._clock(), recent)
            self._cond.notify_all()

    # -- consumer ----------------------------------------------------------------------------
    def __iter__(self):
        return self

    def __next__(self) -> LiveResult:
        with self._cond:
            self._cond.wait_for(
                lambda: self._latest is not None or self._done or self._stop.is_set()
            )
            if self._latest is None or self._stop.is_set():
                if self._error is not None and not self._stop.is_set():
                    error, self._error = self._error, None
                    raise error
                raise StopIteration
            index, t, frame, arrival, recent = self._latest
            self._latest = None
            self._cond.notify_all()
        if recent is not None:
            res = self.pipe.generate(self.prompt, videos=[recent], **self.gen)
        else:
            res = self.pipe.generate(self.prompt, images=[frame], **self.gen)
        latency = 1000 * (self._clock() - arrival)
        return LiveResult(index, t, res.text, latency, self.dropped)

    def stop(self) -> None:
        """End the loop: the reader stops, the current answer finishes, iteration ends."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        self.stop()
        self._thread.join(timeout=5.0)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def live(pipe, source, prompt: str, **kwargs) -> LiveLoop:
    """``Pipeline.live``: see LiveLoop."""
    return LiveLoop(pipe, source, prompt, **kwargs)
