"""Frame sources of the live loop: a video file, a stream URL or a V4L2 device (PyAV), or any
Python iterable / callable of frames. Each gives ``(timestamp_s, frame)`` pairs in source order.

| source | opened with | timestamps | pacing by default |
|---|---|---|---|
| video file | PyAV | the frame's pts, seconds | its own frame rate (a clip behaves like a camera) |
| ``rtsp://``, ``rtmp://``, ``http(s)://``, ``udp://`` URL | PyAV | the frame's pts | none (the stream is live) |
| ``/dev/video*`` | PyAV, format ``v4l2`` | the frame's pts | none |
| iterable or callable (``None`` ends it) | Python | seconds since the first frame | none |

Frames stay as the source gives them: numpy HWC uint8 from PyAV, anything ``load_image`` takes
from Python sources (torch tensors, CUDA ones included, are not copied here).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import VilaURTError

log = logging.getLogger(__name__)

# A reopened stream that then runs this long gets its full count of retries back.
STABLE_S = 10.0
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")


class SourceError(VilaURTError, RuntimeError):
    """A frame source cannot be opened or read (missing file, unreachable stream, lost device)."""


def is_stream(source) -> bool:
    return isinstance(source, str) and source.lower().startswith(STREAM_SCHEMES)


def is_device(source) -> bool:
    return isinstance(source, (str, Path)) and str(source).startswith("/dev/video")


def _import_av():
    try:
        import av
    except ImportError as e:
        raise SourceError(
            "reading video files, streams and cameras needs PyAV: pip install 'vilau-rt[video]' "
            "(or pass a Python iterable of frames)"
        ) from e
    return av


class AVSource:
    """Frames decoded by PyAV. A live stream or device that drops is reopened up to ``retries``
    times in a row (``retry_delay_s`` apart) before the loop ends with SourceError; a file just
    ends."""

    def __init__(self, url: str, *, live: bool, retries: int = 3, retry_delay_s: float = 1.0):
        self.url = url
        self.live = live
        self.retries = retries
        self.retry_delay_s = retry_delay_s
        self.fps: float | None = None
        self._container = self._open()  # fail now, in the caller's thread, if unreadable

    def _open(self):
        av = _import_av()
        if not self.live and not Path(self.url).is_file():
            raise SourceError(f"video source {self.url} not found (not a file, URL or device)")
        options = {"format": "v4l2"} if is_device(self.url) else {}
        try:
            container = av.open(self.url, timeout=10.0, **options)
            stream = container.streams.video[0]
        except (av.error.FFmpegError, OSError, IndexError) as e:
            raise SourceError(f"cannot open video source {self.url}: {e}") from e
        rate = stream.average_rate or stream.base_rate
        self.fps = float(rate) if rate else None
        return container

    def frames(self) -> Iterator[tuple[float, object]]:
        av = _import_av()
        failures = 0
        while True:
            opened = time.monotonic()
            try:
                container = self._container or self._open()
                self._container = container
                for frame in container.decode(video=0):
                    if failures and time.monotonic() - opened > STABLE_S:
                        failures = 0  # the stream came back for good
                    t = float(frame.time) if frame.time is not None else time.monotonic()
                    yield t, frame.to_ndarray(format="rgb24")
                if not self.live:
                    return
                err: Exception = SourceError(f"stream {self.url} ended")
            except (av.error.FFmpegError, OSError, SourceError) as e:
                if not self.live:
                    raise SourceError(f"cannot decode video {self.url}: {e}") from e
                err = e
            self.close()
            failures += 1
            if failures > self.retries:
                raise SourceError(
                    f"stream {self.url} dropped and did not come back after {self.retries} "
                    f"retries: {err}"
                )
            log.warning("stream %s dropped (%s); reopening, try %d", self.url, err, failures)
            time.sleep(self.retry_delay_s)

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None


def _calls(fn) -> Iterator:
    # not iter(fn, None): that compares frames with ==, which numpy arrays answer elementwise
    while (frame := fn()) is not None:
        yield frame


class PythonSource:
    """Frames from an iterable, or from a callable called until it returns None."""

    def __init__(self, source, clock: Callable[[], float] = time.monotonic):
        self.fps = None
        self._clock = clock
        if callable(source) and not hasattr(source, "__iter__"):
            self._it = _calls(source)
        else:
            try:
                self._it = iter(source)
            except TypeError as e:
                raise SourceError(
                    f"unsupported frame source {type(source).__name__}: pass a video file, a "
                    "stream URL, a /dev/video* device, an iterable or a callable of frames"
                ) from e

    def frames(self) -> Iterator[tuple[float, object]]:
        t0 = None
        for frame in self._it:
            now = self._clock()
            t0 = now if t0 is None else t0
            yield now - t0, frame

    def close(self) -> None:
        close = getattr(self._it, "close", None)
        if close is not None:
            close()


def open_source(source, *, retries: int = 3, retry_delay_s: float = 1.0, clock=time.monotonic):
    """An AVSource or a PythonSource for ``source``; SourceError if it cannot be opened."""
    if isinstance(source, (str, Path)):
        s = str(source)
        live = is_stream(s) or is_device(s)
        return AVSource(s, live=live, retries=retries, retry_delay_s=retry_delay_s)
    return PythonSource(source, clock=clock)
