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
    assert payload["backend"] == "native"  # --backend auto on the CPU
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
    assert out["backend"] == "native"  # --backend auto on the CPU


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


def _bad_npy(kind: str, path):
    if kind == "pickled":
        np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif kind == "garbage":
        path.write_bytes(b"not a numpy file at all")
    elif kind == "wrong-shape":
        np.save(path, np.zeros((3, 3), np.int64))
    return path


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing", "not found"),
        ("pickled", "not a plain .npy array"),
        ("garbage", "not a plain .npy array|cannot read"),
        ("wrong-shape", r"shape \[3, 3\] do not fit"),
    ],
)
def test_decode_refuses_bad_code_files_in_one_line(ckpt, tmp_path, kind, message):
    codes = _bad_npy(kind, tmp_path / "codes.npy")
    proc = run(["decode", str(ckpt), str(codes), "--out", str(tmp_path / "x.png")], tmp_path,
               check=False)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("vilau-rt: error:")
    assert __import__("re").search(message, proc.stderr), proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["generate", "{ckpt}", "x", "--out", "o", "--cfg-scale", "inf"],
            "cfg_scale must be finite",
        ),
        (["bench", "{ckpt}", "--repeat", "0"], "must be >= 1"),
        (["caption", "{ckpt}", "x.png", "--device", "cuda"], "no CUDA device|cuda"),
        (
            ["quantize", "{ckpt}", "q", "--group-size", "32", "--calib", "missing.txt"],
            "missing.txt not found",
        ),
        (
            ["quantize", "{ckpt}", "q", "--group-size", "32", "--calib", "empty.txt"],
            "holds no text",
        ),
        (["quantize", "{ckpt}", "q"], r"hidden_size 96 is not a multiple .* use --group-size 32"),
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(ckpt, tmp_path, args, message):
    import re

    (tmp_path / "empty.txt").write_text("\n  \n")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "x.png")
    proc = run([a.format(ckpt=ckpt) for a in args], tmp_path, check=False)
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert re.search(message, last), proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr  # one line, nothing before it


def test_debug_shows_the_traceback(ckpt, tmp_path):
    proc = run(["decode", str(ckpt), "missing.npy", "--out", "x.png", "--debug"], tmp_path,
               check=False)  # fmt: skip
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_caption_defaults_fit_tiny_256_and_out_folders_are_created(ckpt, tmp_path):
    img = tmp_path / "in.png"
    Image.fromarray(np.full((40, 40, 3), 30, np.uint8)).save(img)
    out = json.loads(run(["caption", str(ckpt), str(img), "--json"], tmp_path).stdout)
    assert out["stats"]["prompt_tokens"] + out["stats"]["new_tokens"] <= 256
    codes = tmp_path / "new" / "folder" / "codes.npy"
    run(["encode", str(ckpt), str(img), "--out", str(codes)], tmp_path)
    assert np.load(codes).shape == (4, 4, 4)


def test_chat_takes_long_lines_as_questions_and_refuses_missing_images(ckpt, tmp_path):
    env = dict(os.environ, VILAU_RT_CACHE=str(tmp_path / "cache"))
    long_question = "why " * 80  # 320 bytes: used to be probed as a file name (OSError)
    proc = subprocess.run(
        [sys.executable, "-m", "vilau_rt.cli", "chat", str(ckpt), "--max-new-tokens", "2"],
        input=f"{long_question}\nmissing.png\nexit\n", capture_output=True, text=True,
        env=env, cwd=tmp_path, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "image missing.png not found (nothing was sent)" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_export_json(ckpt, tmp_path):
    pytest.importorskip("onnxscript", reason="the [onnx] extra is not installed")
    out = json.loads(run(["export", str(ckpt), str(tmp_path / "b"), "--json"], tmp_path).stdout)
    assert out["bundle"] == str(tmp_path / "b") and "manifest.json" in out["files"]


def test_quantize_takes_the_siglip_config_of_a_tower_not_shipped(tiny_fixture, tmp_path):
    # the official tiny fixture names a SigLIP tower whose config is not in the package
    out = tmp_path / "int4"
    args = ["quantize", str(tiny_fixture), str(out), "--group-size", "32", "--image-prompts",
            "4", "--json"]  # fmt: skip
    proc = run(args, tmp_path, check=False)
    assert proc.returncode == 2 and "--siglip-config" not in proc.stdout  # needs the config
    args += ["--siglip-config", str(tiny_fixture / "reference" / "siglip_config")]
    assert json.loads(run(args, tmp_path).stdout)["checkpoint"] == str(out)
