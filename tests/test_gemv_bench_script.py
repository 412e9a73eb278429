"""bench/gemv_float.py --smoke runs end to end and writes a row per shape and weight dtype
(float32, float16, bfloat16 and int8 with a scale per row)."""

from __future__ import annotations

import pytest
from bench_scripts import run_json, run_script

pytest.importorskip("vilau_rt._C")


def test_gemv_bench_smoke_writes_every_row(tmp_path):
    proc, result = run_json("gemv_float.py", tmp_path / "rows.json", "--smoke", "--threads", "1")
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
    _, result = run_json(
        "gemv_float.py", tmp_path / "rows.json", "--shapes", "64x24", "96x8", "--weights",
        "bfloat16", "--calls", "2", "--cold-bytes", "1e5", "--threads", "1",
    )  # fmt: skip
    rows = result["rows"]
    assert [(r["K"], r["N"], r["weights"]) for r in rows] == [
        (64, 24, "bfloat16"),
        (96, 8, "bfloat16"),
    ]
    bad = run_script("gemv_float.py", "--shapes", "64by24")
    assert bad.returncode == 2 and "'64by24' is not KxN" in bad.stderr
