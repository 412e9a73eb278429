"""bench/gemv_float.py --smoke runs end to end and writes a row per shape and weight dtype
(float32, float16, bfloat16 and int8 with a scale per row)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("vilau_rt._C")

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_gemv_bench_smoke_writes_every_row(tmp_path):
    out = tmp_path / "rows.json"
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "gemv_float.py"), "--smoke", "--threads", "1",
         "--json", str(out)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    rows = result["rows"]
    weights = ("float32", "float16", "bfloat16", "int8")
    assert [(r["K"], r["N"], r["weights"]) for r in rows] == [
        (k, n, w) for k, n in [(256, 96), (512, 40)] for w in weights
    ]
    for r in rows:
        assert r["ms"] > 0 and r["GBs"] > 0
        per_weight = {"float32": 4, "float16": 2, "bfloat16": 2, "int8": 1}[r["weights"]]
        scales = 4 * r["N"] if r["weights"] == "int8" else 0  # a float32 scale per row
        expect = r["K"] * r["N"] * per_weight + scales + 4 * (r["K"] + r["N"])
        assert r["MB"] * 1e6 == pytest.approx(expect)
        assert ("torch_ms" in r) == (r["weights"] == "float32")
    assert "| 256x96 | 1 | float16 |" in proc.stdout


def test_gemv_bench_times_the_shapes_asked_for(tmp_path):
    out = tmp_path / "rows.json"
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "gemv_float.py"), "--shapes", "64x24",
         "96x8", "--weights", "bfloat16", "--calls", "2", "--cold-bytes", "1e5", "--threads",
         "1", "--json", str(out)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(r["K"], r["N"], r["weights"]) for r in rows] == [
        (64, 24, "bfloat16"),
        (96, 8, "bfloat16"),
    ]
    bad = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "gemv_float.py"), "--shapes", "64by24"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert bad.returncode == 2 and "'64by24' is not KxN" in bad.stderr
