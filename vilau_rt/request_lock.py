"""One request at a time per Pipeline.

A Pipeline owns mutable state that every request rewrites: the backend's static KV cache, the
chat session that the cache belongs to, ``stats``. Requests from several threads therefore take
turns: ``RequestLock`` admits one request at a time and makes the others wait. A streaming
request holds the Pipeline from the call that creates it until its iterator is exhausted,
closed, or garbage-collected (``LockedStream``), so a paused stream can never be resumed over
a cache that another request has rewritten.

The one case that would wait forever is refused instead: a thread that holds an open stream
and starts another request on the same Pipeline gets ``PipelineBusyError`` at once.
Nested calls inside one request (``generate_image`` -> ``decode_codes``) re-enter freely.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from .errors import PipelineBusyError


class RequestLock:
    """A re-entrant lock whose hold can be handed to a stream and released from any thread."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._owner: int | None = None  # thread id of the request that holds the Pipeline
        self._depth = 0
        self._streaming = False  # the hold belongs to an open stream

    def acquire(self) -> None:
        me = threading.get_ident()
        with self._cond:
            if self._owner == me:
                if self._streaming:
                    raise PipelineBusyError(
                        "this thread has an open streaming request on this Pipeline: exhaust "
                        "it or call its close() before starting another request (or use a "
                        "second Pipeline)"
                    )
                self._depth += 1
                return
            while self._owner is not None:
                self._cond.wait()
            self._owner, self._depth = me, 1

    def release(self) -> None:
        with self._cond:
            self._depth -= 1
            if self._depth <= 0:
                self._owner, self._depth, self._streaming = None, 0, False
                self._cond.notify()

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def stream(self, pieces: Iterator[str]) -> LockedStream:
        """Hand the current hold (taken by the caller, outermost) to ``pieces``."""
        with self._cond:
            if self._depth != 1:
                raise RuntimeError("a stream can only be opened by the outermost request")
            self._streaming = True
        return LockedStream(pieces, self)


class LockedStream:
    """An iterator of text pieces that holds its Pipeline until it ends or is closed.

    Also a context manager: ``with pipe.generate(..., stream=True) as s: for p in s: ...``.
    """

    def __init__(self, pieces: Iterator[str], lock: RequestLock) -> None:
        self._pieces = pieces
        self._lock: RequestLock | None = lock

    def __iter__(self) -> LockedStream:
        return self

    def __next__(self) -> str:
        if self._lock is None:
            raise StopIteration
        try:
            return next(self._pieces)
        except BaseException:  # StopIteration included: the request is over either way
            self.close()
            raise

    def close(self) -> None:
        """Stop generating and free the Pipeline for the next request (idempotent)."""
        lock, self._lock = self._lock, None
        if lock is None:
            return
        try:
            close = getattr(self._pieces, "close", None)
            if close is not None:
                close()
        finally:
            lock.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()
