"""``vilau-rt export CKPT OUT``: the CLI's export subcommand (wired in by ``vilau_rt.cli``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_export_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "export", help="export a checkpoint to an engine bundle of ONNX graphs"
    )
    p.add_argument("checkpoint", type=Path, help="official VILA-U checkpoint folder")
    p.add_argument("out", type=Path, help="bundle folder to create (must not exist)")
    p.add_argument("--precision", choices=("fp32", "fp16"), default="fp32", help="graph dtype")
    p.add_argument(
        "--quant", choices=("none", "awq-int4"), default="none",
        help="LLM weights: none (float) or awq-int4 (an AWQ checkpoint from vilau-rt quantize "
        "or AutoAWQ; its linears become com.microsoft::MatMulNBits, or vilau::W4A16Gemm for "
        "--target tensorrt)",
    )  # fmt: skip
    p.add_argument(
        "--target", choices=("onnxruntime", "tensorrt"), default="onnxruntime",
        help="graphs for onnxruntime (opset 24) or for TensorRT 10.3's ONNX parser (opset 20, "
        "our plugins; also runs on onnxruntime) with build_engines.sh for trtexec",
    )  # fmt: skip
    p.add_argument(
        "--max-batch", type=int, default=2,
        help="tensorrt: largest LLM batch of the engines' shape profiles (2 = one image with CFG)",
    )  # fmt: skip
    p.add_argument("--siglip-config", type=Path, help="SigLIP config folder or config.json")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--json", action="store_true", help="print one JSON object for scripts")
    p.set_defaults(func=run_export)
    return p


def run_export(args: argparse.Namespace) -> None:
    from .onnx.export import export_bundle

    def progress(graph: str, done: int, total: int) -> None:
        if not args.json:
            print(f"[{done}/{total}] {graph}.onnx", file=sys.stderr)

    out = export_bundle(
        args.checkpoint, args.out, precision=args.precision, quant=args.quant,
        siglip_config=args.siglip_config, progress=progress, overwrite=args.overwrite,
        target=args.target, max_batch=args.max_batch,
    )  # fmt: skip
    if args.json:
        files = sorted(str(f.relative_to(out)) for f in out.rglob("*") if f.is_file())
        print(json.dumps({"bundle": str(out), "files": files}))
    else:
        print(out)
