"""bench/gpu.py --cpu-smoke: the GPU benchmark's whole path on the CPU with the tiny preset."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_cpu_smoke_run_writes_the_table_and_the_json(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "bench" / "gpu.py"),
            "--cpu-smoke",
            "--out",
            str(tmp_path),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = proc.stdout[proc.stdout.index("== vilau_rt bench") :]
    for row in ("decode native INT4", "decode torch fp16 eager", "TTFT native", "image 256 px"):
        assert row in table
    results = json.loads((tmp_path / "bench.json").read_text())
    assert results["mode"] == "cpu-smoke"
    assert all(s["status"] == "ok" for s in results["sections"].values()), results["sections"]
    assert results["native_int4"]["decode_tok_s"] > 0
    assert results["eager_fp16"]["decode_tok_s"] > 0
    assert results["native_image_s"] > 0 and results["eager_image"]["image_s_extrapolated"] > 0
    assert results["native_depth_greedy_equal"] is True
    assert results["native_image_seed_reproducible"] is True
    assert results["native_image_pixels_finite"] is True
    assert set(results["targets"]) == {
        "decode_ge_50pct_floor", "decode_ge_4x_eager", "image_le_1s", "image_ge_10x_eager",
        "ttft_le_25ms",
    }  # fmt: skip
    assert (tmp_path / "bench.log").stat().st_size > 0
