"""The vilau-rt command line, run as users run it (subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image


def run(args, tmp_path, check=True):
    env = dict(os.environ, VILAU_RT_CACHE=str(tmp_path / "cache"))
    proc = subprocess.run(
        [sys.executable, "-m", "vilau_rt.cli", *args],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300, check=False,
    )  # fmt: skip
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    out = tmp / "tiny"
    proc = run(["write-checkpoint", "tiny-256", str(out), "--json"], tmp)
    assert json.loads(proc.stdout)["checkpoint"] == str(out)
    return out


def test_demo_writes_its_outputs_and_reuses_the_cached_model(tmp_path):
    proc = run(["demo", "--json", "--out", str(tmp_path / "demo")], tmp_path)
    payload = json.loads(proc.stdout)
    for path in payload["outputs"].values():
        assert Image.open(path).size[0] > 0
    assert payload["codes_shape"] == [4, 4, 4]
    mtime = os.path.getmtime(os.path.join(payload["checkpoint"], "config.json"))
    again = json.loads(run(["demo", "--json", "--out", str(tmp_path / "d2")], tmp_path).stdout)
    assert again["caption_tokens"] == payload["caption_tokens"]
    assert os.path.getmtime(os.path.join(payload["checkpoint"], "config.json")) == mtime


def test_caption_generate_encode_decode(ckpt, tmp_path):
    img = tmp_path / "in.png"
    Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(img)
    cap = json.loads(
        run(["caption", str(ckpt), str(img), "--max-new-tokens", "4", "--json"], tmp_path).stdout
    )
    assert isinstance(cap["text"], str) and len(cap["token_ids"]) <= 4
    gen = json.loads(
        run(
            ["generate", str(ckpt), "a cat", "--out", str(tmp_path / "g"), "--seed", "3", "--json"],
            tmp_path,
        ).stdout
    )
    assert len(gen["files"]) == 1 and Image.open(gen["files"][0]).size == (32, 32)
    codes = tmp_path / "codes.npy"
    run(["encode", str(ckpt), str(img), "--out", str(codes)], tmp_path)
    assert np.load(codes).shape == (4, 4, 4)
    out = tmp_path / "back.png"
    run(["decode", str(ckpt), str(codes), "--out", str(out)], tmp_path)
    assert Image.open(out).size == (32, 32)


def test_errors_are_one_line_with_exit_code_2(tmp_path):
    proc = run(["caption", str(tmp_path / "missing"), "x.png"], tmp_path, check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("vilau-rt: error:") and "does not exist" in proc.stderr


def test_help_lists_every_command(tmp_path):
    out = run(["--help"], tmp_path).stdout
    for cmd in ("demo", "caption", "generate", "encode", "decode", "write-checkpoint"):
        assert cmd in out


def test_chat_reads_images_questions_and_reset(ckpt, tmp_path):
    img = tmp_path / "in.png"
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(img)
    env = dict(os.environ, VILAU_RT_CACHE=str(tmp_path / "cache"))
    proc = subprocess.run(
        [sys.executable, "-m", "vilau_rt.cli", "chat", str(ckpt), "--max-new-tokens", "3"],
        input=f"{img}\nWhat is it?\nreset\nAnd now?\nexit\n", capture_output=True, text=True,
        env=env, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"(image {img} queued)" in proc.stdout and "(conversation reset)" in proc.stdout
    assert "error" not in proc.stderr.lower()


def test_bench_reports_every_figure(ckpt, tmp_path):
    out = json.loads(
        run(["bench", str(ckpt), "--repeat", "1", "--tokens", "4", "--json"], tmp_path).stdout
    )
    for key in ("vision_ms", "time_to_first_token_ms", "decode_tok_s", "image_s"):
        assert out[key] >= 0
    assert out["backend"] == "torch"


def test_native_and_onnxruntime_backends_from_the_cli(ckpt, tmp_path):
    pytest.importorskip("onnxruntime_extensions", reason="the [onnx] extra is not installed")
    img = tmp_path / "in.png"
    Image.fromarray(np.full((40, 40, 3), 60, np.uint8)).save(img)
    results = {}
    for backend in ("torch", "native", "onnxruntime"):
        args = [
            "caption",
            str(ckpt),
            str(img),
            "--max-new-tokens",
            "5",
            "--json",
            "--backend",
            backend,
        ]
        results[backend] = json.loads(run(args, tmp_path).stdout)["token_ids"]
    assert results["native"] == results["torch"] == results["onnxruntime"]


def test_quantize_prints_the_comparison_and_writes_a_loadable_checkpoint(tmp_path):
    from dataclasses import replace

    from vilau_export.checkpoint_writer import write_checkpoint

    from vilau_rt.model.config import preset
    from vilau_rt.model.llama import LlamaConfig

    cfg = preset("tiny-256")
    llm = LlamaConfig(516, 128, 256, 1, 4, 4, 256, rms_norm_eps=1e-5)
    cfg = replace(cfg, llm=llm, projector=replace(cfg.projector, out_features=128),
                  depth=replace(cfg.depth, llm_dim=128))  # fmt: skip
    src = write_checkpoint(cfg, tmp_path / "float")
    out = tmp_path / "int4"
    args = ["quantize", str(src), str(out), "--group-size", "64", "--image-prompts", "4", "--json"]
    report = json.loads(run(args, tmp_path).stdout)
    assert report["checkpoint"] == str(out) and report["mean_kl"] >= 0
    assert 0.5 < report["perplexity_ratio"] < 2
    assert (out / "llm" / "config.json").is_file()
    again = run(args, tmp_path, check=False)
    assert again.returncode == 2 and "exists" in again.stderr
