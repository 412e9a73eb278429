"""bench/gemm.py --smoke runs end to end and writes a row per shape and row count, with the
float32 GEMM, torch's BLAS, the AWQ GEMM and dequantize + BLAS each timed."""

from __future__ import annotations

import pytest
from bench_scripts import run_json

pytest.importorskip("vilau_rt._C")


def test_gemm_bench_smoke_writes_every_row(tmp_path):
    proc, result = run_json(
        "gemm.py", tmp_path / "rows.json", "--smoke", "--threads", "1", "--calls", "2"
    )
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
