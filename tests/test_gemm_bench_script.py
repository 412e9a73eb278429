"""bench/gemm.py --smoke runs end to end and writes a row per shape and row count, with the
float32 GEMM, torch's BLAS, the AWQ GEMM and dequantize + BLAS each timed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("vilau_rt._C")

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_gemm_bench_smoke_writes_every_row(tmp_path):
    out = tmp_path / "rows.json"
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "gemm.py"), "--smoke", "--threads", "1",
         "--calls", "2", "--json", str(out)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert [(r["K"], r["N"], r["M"]) for r in rows] == [
        (k, n, m) for k, n in [(256, 96), (384, 64)] for m in (3, 17)
    ]
    for r in rows:
        assert r["GFLOP"] * 1e9 == pytest.approx(2 * r["M"] * r["K"] * r["N"])
        for key in ("ours_ms", "torch_ms", "awq_ms", "deq_blas_ms"):
            assert r[key] > 0
        if result["meta"]["peak_gflops"] is not None:  # a C compiler built bench/fma_peak.c
            assert (
                0
                < r["ours_peak"]
                == pytest.approx(r["ours_gflops"] / result["meta"]["peak_gflops"])
            )
    assert "| 256x96 | 17 |" in proc.stdout
