"""Running a bench/ script as a user does, for the tests that keep the scripts working."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def run_script(script: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python bench/<script> <args>``, output captured; its return code is not checked."""
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / script), *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def run_json(script: str, out: Path, *args: str, timeout: int = 300):
    """``run_script`` with ``--json out``: asserts it exited 0 (the message: its stderr's tail)
    and returns (the process, the JSON it wrote)."""
    proc = run_script(script, *args, "--json", str(out), timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, json.loads(out.read_text())
