"""bench/depth_cpu.py --smoke runs end to end: a row per engine, the bytes each position reads
(every weight once per depth step, in_mlp_2 once a position), and every engine's greedy codes
equal torch's."""

from __future__ import annotations

import pytest
from bench_scripts import run_json

from vilau_rt.model.config import preset
from vilau_rt.model.depth import DepthTransformer

pytest.importorskip("vilau_rt._C")


def position_bytes(matrix_bytes: int) -> int:
    """Counted from the module's parameters: linear weight matrices at ``matrix_bytes`` each,
    every other parameter float32."""
    cfg = preset("tiny-256").depth
    per_step = once = 0
    for name, t in DepthTransformer(cfg).named_parameters():
        size = t.numel() * (matrix_bytes if name.endswith("weight") and t.dim() == 2 else 4)
        if name.startswith("in_mlp_2."):
            once += size
        else:
            per_step += size
    return cfg.depth * per_step + once


def test_depth_bench_smoke_writes_every_engine(tmp_path):
    proc, result = run_json("depth_cpu.py", tmp_path / "rows.json", "--smoke", "--threads", "1")
    rows = {r["engine"]: r for r in result["rows"]}
    assert list(rows) == ["torch", "native", "torch-bf16", "native-bf16"]
    for name, r in rows.items():
        assert r["MB"] * 1e6 == position_bytes(2 if name.endswith("bf16") else 4)
        assert r["ms"] > 0 and r["floor_ms"] > 0
        assert r["codes"] == rows["torch"]["codes"]
    assert "| native-bf16 |" in proc.stdout and "| NO |" not in proc.stdout
