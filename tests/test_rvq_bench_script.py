"""bench/rvq_encode.py --smoke runs end to end: a row per shape and image count, our encode and
the torch search both timed, the flops counted from the shape, and the codes compared."""

from __future__ import annotations

import pytest
from bench_scripts import run_json

pytest.importorskip("vilau_rt._C")


def test_rvq_encode_bench_smoke_writes_every_row(tmp_path):
    proc, result = run_json("rvq_encode.py", tmp_path / "rows.json", "--smoke", "--threads", "1")
    rows = result["rows"]
    assert [(r["shape"], r["images"], r["rows"]) for r in rows] == [
        ("smoke", 1, 16),
        ("smoke", 8, 128),
    ]
    for r in rows:
        assert r["gflop"] == pytest.approx(2 * r["rows"] * 3 * 300 * 64 / 1e9, abs=0.005)
        assert r["ours_ms"] > 0 and r["torch_ms"] > 0
        matched, total = map(int, r["same_codes"].split("/"))
        assert total == r["rows"] * 3 and matched == total  # unambiguous at these sizes
        if result["meta"]["peak_gflops"] is not None:
            assert r["peak"] > 0
    assert "| smoke | 8 | 128 |" in proc.stdout
