"""bench/gpu.sh --dry-run: the GPU run's every step (wheels, build check, tests, gpu.py, w4a16.py)
on the CPU with tiny shapes, so that the next GPU run does not fail on a script error."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent


def _bench_gpu():
    spec = importlib.util.spec_from_file_location("bench_gpu", REPO_ROOT / "bench" / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dry_run_runs_every_step_and_leaves_few_files(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path), "BENCH_DEADLINE_S": "400"}
    proc = subprocess.run(
        ["bash", str(REPO_ROOT / "bench" / "gpu.sh"), "--dry-run", "--skip-build"],
        check=False,
        capture_output=True,
        text=True,
        timeout=420,
        env=env,
    )
    log = (tmp_path / "run.log").read_text()
    assert proc.returncode == 0, log[-4000:] + proc.stderr[-2000:]
    for step in ("build_info", "pytest", "gpu.py", "w4a16.py", "rvq_encode.py"):
        assert f"{step}: exit 0" in log, step
    assert "done: status 0" in log
    # the device tool brings back at most 8 files
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "bench.json", "bench.log", "pytest.log", "run.log", "rvq.json", "w4a16.json",
    ]  # fmt: skip

    table = log[log.index("== vilau_rt bench") :]
    for row in ("decode native INT4", "decode torch fp16 eager", "TTFT native", "image 256 px"):
        assert row in table
    results = json.loads((tmp_path / "bench.json").read_text())
    assert results["mode"] == "cpu-smoke" and results["complete"] is True
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

    kernel = json.loads((tmp_path / "w4a16.json").read_text())
    assert kernel["bandwidth_GBs"] > 0 and kernel["rows"]
    assert all(r["ours_ms"] > 0 for r in kernel["rows"])
    gemv_rows = [r for r in kernel["rows"] if r["M"] == 1]
    assert all(f"gemv_{isa}_ms" in r for r in gemv_rows for isa in kernel["cpu_isas"])
    rvq = json.loads((tmp_path / "rvq.json").read_text())
    assert rvq["rows"] and all(r["ours_ms"] > 0 and r["torch_ms"] > 0 for r in rvq["rows"])


def test_dry_run_refuses_to_time_a_module_without_cuda_outside_the_dry_run(tmp_path):
    """Without --dry-run the script demands CUDA in the built module, and says so."""
    from vilau_rt import _C

    if _C.build_info()["cuda"] and _C.cuda_device_count() > 0:
        pytest.skip("this machine can run the real thing")
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path)}
    proc = subprocess.run(
        ["bash", str(REPO_ROOT / "bench" / "gpu.sh"), "--skip-build"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 1
    assert "refusing to time" in (tmp_path / "run.log").read_text()


def test_a_failed_section_still_leaves_bench_json(tmp_path):
    gpu = _bench_gpu()
    results: dict = {"mode": "test"}
    with gpu.budget(results, "broken", 5, out=tmp_path):
        raise RuntimeError("boom")
    written = json.loads((tmp_path / "bench.json").read_text())
    assert written["sections"]["broken"]["status"] == "error: RuntimeError: boom"


def test_random_weights_keep_pixel_decoder_activations_small():
    """The conv fan-in is in_channels x kernel; the kernel width alone let activations reach
    ~1e12 at the 7B preset (3e5 at tiny), beyond float16."""
    from vilau_rt.model.config import preset
    from vilau_rt.model.vilau import VilaU

    gpu = _bench_gpu()
    cfg = preset("tiny-256")
    with torch.device("meta"):
        model = VilaU(cfg)
    parts = torch.nn.ModuleDict({"q": model.quantizer, "d": model.pixel_decoder})
    parts = parts.to_empty(device="cpu").eval()
    gpu.fill_random_(parts, torch.Generator().manual_seed(0))
    peak = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: peak.append(o.abs().max().item()))
        for m in parts.modules()
        if isinstance(m, torch.nn.Conv2d)
    ]
    codes = torch.randint(0, cfg.rvq.n_embed, (1, *cfg.grid, cfg.rvq.depth))
    with torch.no_grad():
        parts["d"](parts["q"].embed_sum(codes))
    for h in hooks:
        h.remove()
    assert peak and max(peak) < 100, max(peak)
