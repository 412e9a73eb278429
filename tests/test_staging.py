"""Output folders appear whole or not at all: leftovers of killed writers are cleaned by the
next writer, and files get the permissions the umask allows."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import save_file

from vilau_rt.staging import remove_stale, staged_folder


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return int(proc.stdout)


def test_a_writer_killed_outright_leaves_a_folder_the_next_writer_removes(tmp_path):
    out = tmp_path / "ckpt"
    script = (
        "import os, signal, sys\n"
        "from vilau_rt.staging import staged_folder\n"
        "with staged_folder(sys.argv[1]) as tmp:\n"
        "    (tmp / 'weights').write_bytes(b'x' * 100)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(out)], check=False)
    assert proc.returncode == -9
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert len(leftovers) == 1 and leftovers[0].startswith(".ckpt.tmp-") and not out.exists()
    with staged_folder(out) as tmp:
        (tmp / "weights").write_bytes(b"y")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_leftovers_of_live_writers_and_fresh_legacy_ones_are_kept(tmp_path):
    out = tmp_path / "bundle"
    live = tmp_path / f".bundle.tmp-{os.getppid()}-0123abcd"
    dead = tmp_path / f".bundle.tmp-{_dead_pid()}-0123abcd"
    old_legacy, new_legacy = tmp_path / ".bundle.partial-1a2b3c4d", tmp_path / ".bundle.partial-ff"
    other = tmp_path / ".other.tmp-1"
    for p in (live, dead, old_legacy, new_legacy, other):
        p.mkdir()
    day_ago = time.time() - 2 * 24 * 3600
    os.utime(old_legacy, (day_ago, day_ago))
    assert sorted(p.name for p in remove_stale(out)) == [old_legacy.name, dead.name]
    assert live.exists() and new_legacy.exists() and other.exists()


def test_an_error_inside_leaves_nothing_and_an_existing_folder_is_kept(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="boom"), staged_folder(out) as tmp:
        (tmp / "a").write_text("1")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    out.mkdir()
    with pytest.raises(FileExistsError, match="exists"), staged_folder(out):
        pass
    with staged_folder(out, overwrite=True) as tmp:
        (tmp / "b").write_text("2")
    assert [p.name for p in out.iterdir()] == ["b"]


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_files_get_the_mode_the_umask_allows(tmp_path, umask):
    old = os.umask(umask)
    try:
        with staged_folder(tmp_path / "out") as tmp:
            save_file({"w": torch.ones(2)}, str(tmp / "model.safetensors"))  # written 0600
            (tmp / "config.json").write_text("{}")
    finally:
        os.umask(old)
    for f in ("model.safetensors", "config.json"):
        assert (tmp_path / "out" / f).stat().st_mode & 0o777 == 0o666 & ~umask, f
