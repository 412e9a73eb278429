"""Output folders that appear whole or not at all.

Every writer of a folder (checkpoint writer, quantizer, ONNX export, the bundle cache) builds it
under a hidden sibling ``.NAME.tmp-PID-XXXXXXXX`` and renames it into place when complete, so an
error or Ctrl-C leaves nothing that looks finished. A process killed outright (SIGKILL, power
loss) cannot clean up after itself: the next writer of the same name removes such leftovers,
recognised by the PID in their name no longer running (or, for the older ``.NAME.partial-*``
names that carry no PID, by being a day old).

Files are given the permissions the process umask allows (safetensors writes its files 0600,
while everything else in the folder is 0644 under the usual umask 022).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

_STALE_AGE_S = 24 * 3600  # leftovers without a PID in their name


@contextmanager
def staged_folder(out: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh hidden folder next to ``out``; on success it becomes ``out``."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; choose a new output folder or remove it")
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(out)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        apply_umask(tmp)
        _move_into_place(tmp, out, overwrite)
    except BaseException:  # KeyboardInterrupt too: never leave a half-written folder
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _move_into_place(tmp: Path, out: Path, overwrite: bool) -> None:
    if not out.exists():
        try:
            os.rename(tmp, out)
            return
        except OSError:  # another process finished the same folder first
            if not out.exists():
                raise
    if not overwrite:
        raise FileExistsError(f"{out} appeared while it was being written; remove it or overwrite")
    old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
    os.rename(out, old)
    os.rename(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def remove_stale(out: Path) -> list[Path]:
    """Remove ``out``'s leftover temporary siblings from processes that no longer run."""
    removed = []
    pattern = re.compile(rf"\.{re.escape(out.name)}\.(tmp-(\d+)(-[0-9a-f]+)?|partial-[0-9a-f]+)")
    for p in out.parent.glob(f".{out.name}.*"):
        m = pattern.fullmatch(p.name)
        if m is None or not p.is_dir():
            continue
        pid = m.group(2)
        if pid is not None:
            stale = not _alive(int(pid))
        else:
            stale = time.time() - p.stat().st_mtime > _STALE_AGE_S
        if stale:
            log.info("removing %s, left by an interrupted writer", p)
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _umask() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # no /proc: read it the only portable way, and put it back
    os.umask(mask)
    return mask


def apply_umask(folder: Path) -> None:
    """Give every file under ``folder`` mode 0666 & ~umask (folders keep theirs)."""
    mode = 0o666 & ~_umask()
    for root, _, files in os.walk(folder):
        for name in files:
            os.chmod(os.path.join(root, name), mode)
