"""bench/cpu_llm.py on a tiny random checkpoint: the script runs end to end, and its own check
holds: the torch and native backends' greedy tokens equal transformers' LlamaForCausalLM
tokens on the same prompt (an independent implementation of the LLM)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from bench_scripts import run_json

pytest.importorskip("transformers")


def run_bench(ckpt, out, *args):
    """bench/cpu_llm.py on ``ckpt`` with tiny sizes -> (process, rows by engine)."""
    proc, result = run_json(
        "cpu_llm.py", out, "--checkpoint", str(ckpt), *args, "--prompt-len", "12",
        "--new-tokens", "6", "--repeat", "1", "--threads", "1", timeout=600,
    )  # fmt: skip
    return proc, {r["engine"]: r for r in result["rows"]}


def test_cpu_llm_bench_runs_and_our_tokens_equal_transformers(tmp_path):
    from vilau_export.checkpoint_writer import write_checkpoint

    from vilau_rt.model.config import preset

    ckpt = write_checkpoint(preset("tiny-256"), tmp_path / "tiny")
    proc, rows = run_bench(
        ckpt, tmp_path / "rows.json", "--engines", "transformers", "torch", "native"
    )
    assert set(rows) == {"transformers", "torch", "native"}, proc.stderr[-3000:]
    assert len(rows["transformers"]["tokens"]) == 6
    for name in ("torch", "native"):
        assert rows[name]["tokens"] == rows["transformers"]["tokens"], name
        assert rows[name]["same"] == "yes"
        assert rows[name]["image_s"] > 0 and len(rows[name]["image_codes"]) == 16 * 4
    assert rows["native"]["image_codes"] == rows["torch"]["image_codes"]  # greedy CFG codes
    assert "| native |" in proc.stdout


def test_cpu_llm_bench_times_native_on_16bit_weights_and_on_their_float32_copy(tmp_path):
    """A bfloat16 checkpoint: native keeps the LLM linears 16-bit, native-f32 converts them on
    load; both give transformers' tokens (it loads the same values as float32)."""
    from vilau_export.checkpoint_writer import write_checkpoint

    from vilau_rt.model.config import preset

    ckpt = write_checkpoint(preset("tiny-256"), tmp_path / "tiny", dtype=torch.bfloat16)
    _, rows = run_bench(
        ckpt, tmp_path / "rows.json", "--engines", "transformers", "native", "native-f32"
    )
    for name in ("native", "native-f32"):
        assert rows[name]["same"] == "yes", name
    assert rows["native"]["image_codes"] == rows["native-f32"]["image_codes"]


@pytest.fixture(scope="module")
def tiny_int4(tmp_path_factory):
    """(float checkpoint, its INT4 checkpoint by vilau-rt quantize), tiny-256."""
    from vilau_export.checkpoint_writer import write_checkpoint

    from vilau_rt.model.config import preset

    tmp = tmp_path_factory.mktemp("tiny-int4")
    ckpt = write_checkpoint(preset("tiny-256"), tmp / "tiny")
    int4 = tmp / "tiny-int4"
    quant = subprocess.run(
        [sys.executable, "-m", "vilau_rt.cli", "quantize", str(ckpt), str(int4),
         "--group-size", "32"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert quant.returncode == 0, quant.stderr[-3000:]
    return ckpt, int4


def test_cpu_llm_bench_times_the_int4_engines_with_and_without_int8_activations(
    tiny_int4, tmp_path
):
    ckpt, int4 = tiny_int4
    proc, rows = run_bench(
        ckpt, tmp_path / "rows.json", "--int4", str(int4), "--engines", "native-int4",
        "native-int4-a8",
    )  # fmt: skip
    assert set(rows) == {"native-int4", "native-int4-a8"}, proc.stderr[-3000:]
    agree = rows["native-int4-a8"]["same"]
    assert agree == "= INT4" or agree.startswith("INT4's first "), agree
    assert rows["native-int4-a8"]["image_s"] > 0
    assert "| native-int4-a8 |" in proc.stdout


def test_a8_accuracy_bench_compares_the_three_models(tiny_int4, tmp_path):
    ckpt, int4 = tiny_int4
    _, res = run_json(
        "a8_accuracy.py", tmp_path / "a8.json", "--float", str(ckpt), "--int4", str(int4),
        "--texts", "3", timeout=600,
    )  # fmt: skip
    assert res["texts"] == 3 and res["tokens"] > 0
    # KL is >= 0 and 0 only for identical distributions: int8 activations change the logits
    assert res["KL(int4 || int4-a8)"] > 0 and res["KL(float || int4)"] > 0
    assert 0 <= res["top-1 int4 = int4-a8"] <= 1
