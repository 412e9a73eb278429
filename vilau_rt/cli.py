"""``vilau-rt``: the command line.

vilau-rt demo                              built-in shapes-demo model: captions, tokenizer, generation
vilau-rt caption CKPT IMAGE [--prompt P]   describe an image
vilau-rt generate CKPT PROMPT --out DIR    text -> PNG files
vilau-rt encode CKPT IMAGE --out F.npy     image -> RVQ codes
vilau-rt decode CKPT F.npy --out F.png     RVQ codes -> image
vilau-rt write-checkpoint PRESET OUT       random-weight checkpoint in the official layout
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from .cli_args import pipeline_from_args as _pipeline
from .cli_args import positive_int
from .errors import CodesError, ConfigError, VilaURTError
from .model.builtin import resolve_checkpoint


def _progress(total: int | None, desc: str, quiet: bool):
    """(bar, tick): a tqdm bar on stderr that appears at the first tick, so a request that
    fails its checks prints its one error line and nothing else."""
    from tqdm import tqdm

    class LazyBar:
        bar = None

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            if self.bar is not None:
                self.bar.close()

        def update(self, n=1):
            if self.bar is None:
                self.bar = tqdm(total=total, desc=desc, unit="pos", disable=quiet, file=sys.stderr)
            self.bar.update(n)

    bar = LazyBar()
    return bar, (lambda i: bar.update(1))


def _out_file(path: str) -> Path:
    """An output file path whose folder exists (created if missing)."""
    out = Path(path)
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give a file name")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def _emit(args, payload: dict, human: str) -> None:
    print(json.dumps(payload) if args.json else human)


def cmd_caption(args) -> None:
    pipe = _pipeline(args)
    res = pipe.generate(
        args.prompt or "Please describe this image in detail.",
        images=[args.image],
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
    )
    _emit(args, {"text": res.text, "token_ids": res.token_ids, "stats": res.stats}, res.text)


def cmd_generate(args) -> None:
    pipe = _pipeline(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bar, tick = _progress(args.num_images and pipe.cfg.tokens_per_image, "image", args.json)
    with bar:
        images = pipe.generate_image(
            args.prompt, cfg_scale=args.cfg_scale, seed=args.seed, num_images=args.num_images,
            progress=tick,
        )  # fmt: skip
    paths = []
    for i, im in enumerate(images):
        p = out / f"image_{i:03d}.png"
        im.save(p)
        paths.append(str(p))
    _emit(args, {"files": paths, "stats": pipe.stats}, "\n".join(paths))


def cmd_encode(args) -> None:
    pipe = _pipeline(args)
    codes = pipe.encode_image(args.image)
    np.save(_out_file(args.out), codes)
    _emit(args, {"file": args.out, "shape": list(codes.shape)}, f"{args.out} {codes.shape}")


def cmd_decode(args) -> None:
    codes = _load_codes(args.codes)
    pipe = _pipeline(args)
    image = pipe.decode_codes(codes)
    images = image if isinstance(image, list) else [image]
    out = _out_file(args.out)
    paths = []
    for i, im in enumerate(images):
        p = out if len(images) == 1 else out.with_name(f"{out.stem}_{i:03d}{out.suffix}")
        im.save(p)
        paths.append(str(p))
    _emit(args, {"files": paths}, "\n".join(paths))


def _load_codes(path: str) -> np.ndarray:
    """A .npy file of codes; never unpickles (a pickle can run code)."""
    if not Path(path).is_file():
        raise CodesError(f"codes file {path} not found")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:  # a pickled object array, or not an .npy file at all
        raise CodesError(
            f"{path} is not a plain .npy array of codes ({e}); write it with "
            "`vilau-rt encode` or numpy.save of an integer array"
        ) from e
    except (OSError, EOFError) as e:
        raise CodesError(f"cannot read {path} as a .npy file ({e})") from e


def cmd_write_checkpoint(args) -> None:
    import torch
    from vilau_export.checkpoint_writer import write_checkpoint

    from .model.config import preset

    path = write_checkpoint(
        preset(args.preset), args.out, seed=args.seed, dtype=getattr(torch, args.dtype),
        overwrite=args.overwrite,
    )  # fmt: skip
    _emit(args, {"checkpoint": str(path)}, f"wrote {args.preset} checkpoint to {path}")


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff"}


def _image_path(line: str) -> Path | None:
    """The line as an image path, if it names one (an existing file, or a single token ending in
    an image suffix); None for a question. Long lines are questions: no path probe at all."""
    if len(line) > 4096 or "\n" in line:
        return None
    path = Path(line.strip("'\""))  # paths pasted from a file manager come quoted
    try:
        if path.is_file():
            return path
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        return None
    if path.suffix.lower() in IMAGE_SUFFIXES and " " not in line.strip():
        return path
    return None


def cmd_chat(args) -> None:
    pipe = _pipeline(args)
    session = pipe.chat_session()
    pending: list[str] = []
    print(
        "vilau-rt chat: type a question; an image path queues that image for the next "
        "question; 'reset' starts over; 'exit' or Ctrl-D quits.",
        file=sys.stderr,
    )
    while True:
        try:
            line = input("> ").strip()
        except EOFError:
            break
        if not line:
            continue
        if line in ("exit", "quit"):
            break
        if line == "reset":
            session.reset()
            pending.clear()
            print("(conversation reset)")
            continue
        image = _image_path(line)
        if image is not None:
            if image.is_file():
                pending.append(str(image))
                print(f"(image {image} queued)")
            else:
                print(f"error: image {image} not found (nothing was sent)", file=sys.stderr)
            continue
        try:
            answer = session.ask(
                line, images=pending, stream=True, max_new_tokens=args.max_new_tokens
            )
            for piece in answer:
                print(piece, end="", flush=True)
            print()
        except VilaURTError as e:
            print(f"error: {e}", file=sys.stderr)
        pending = []


def cmd_bench(args) -> None:
    pipe = _pipeline(args)
    image = demo_image()
    rows = []
    for _ in range(args.repeat):  # >= 1 (argparse)
        res = pipe.generate("Describe the image.", images=[image], max_new_tokens=args.tokens)
        rows.append(res.stats)
    pipe.generate_image_codes("a red apple on a wooden table", seed=0)
    img_s = pipe.stats["image_generation_s"]
    best = {k: min(r[k] for r in rows) for k in ("vision_ms", "time_to_first_token_ms")}
    decode = max(r.get("decode_tok_s", 0.0) for r in rows)
    payload = {
        **best,
        "decode_tok_s": decode,
        "image_s": img_s,
        "backend": pipe.backend.name,
        "device": str(pipe.device),
        "prompt_tokens": rows[0]["prompt_tokens"],
    }
    human = "\n".join(
        [
            f"backend {payload['backend']} on {payload['device']}",
            f"vision encoder   {best['vision_ms']:.1f} ms",
            (
                f"first token      {best['time_to_first_token_ms']:.1f} ms "
                f"({payload['prompt_tokens']} prompt tokens)"
            ),
            f"decode           {decode:.1f} tok/s",
            f"one image        {img_s:.2f} s",
        ]
    )
    _emit(args, payload, human)


def _non_negative_int(text: str) -> int:
    return 0 if text.strip() == "0" else positive_int(text)


def _image_files(folder: str | None) -> list[str] | None:
    if folder is None:
        return None
    exts = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
    files = sorted(str(p) for p in Path(folder).iterdir() if p.suffix.lower() in exts)
    if not files:
        raise ConfigError(f"--calib-images {folder} holds no .png/.jpg/.jpeg/.bmp/.webp file")
    return files


def cmd_quantize(args) -> None:
    from vilau_export.quantize.quantize_checkpoint import (
        compare_llms,
        preflight,
        quantize_checkpoint,
    )

    if args.method != "awq" or args.bits != 4:
        raise ConfigError(
            f"only --method awq --bits 4 is supported, got --method {args.method} "
            f"--bits {args.bits}"
        )
    preflight(args.checkpoint, args.out, args.group_size, args.calib)  # fail fast
    bar, _ = _progress(None, "AWQ scale groups", args.json)
    with bar:
        out = quantize_checkpoint(
            args.checkpoint, args.out, group_size=args.group_size,
            zero_point=not args.no_zero_point, calib=args.calib,
            images=_image_files(args.calib_images), image_prompts=args.image_prompts,
            siglip_config=args.siglip_config,
            progress=lambda choice: bar.update(1),
        )  # fmt: skip
    report = compare_llms(Path(args.checkpoint) / "llm", out / "llm")
    human = (
        f"wrote {out}\nheld-out texts: {report['texts']} ({report['tokens']} tokens)\n"
        f"mean KL(float || int4) {report['mean_kl']:.4f}, perplexity "
        f"{report['perplexity_float']:.3f} -> {report['perplexity_quantized']:.3f} "
        f"(ratio {report['perplexity_ratio']:.4f})"
    )
    _emit(args, {"checkpoint": str(out), **report}, human)


def demo_image() -> np.ndarray:
    """A 64x64 test card: a colour gradient with a filled circle."""
    y, x = np.mgrid[0:64, 0:64]
    img = np.stack([x * 4, y * 4, 255 - x * 2], axis=-1).astype(np.uint8)
    img[(x - 32) ** 2 + (y - 32) ** 2 < 15**2] = (240, 200, 40)
    return img


def cmd_demo(args) -> None:
    from .demo import run_demo
    from .pipeline import Pipeline

    pipe = Pipeline.from_pretrained(args.model, backend=args.backend, device=args.device)
    bar, tick = _progress(6, "generating", args.json)
    with bar:
        payload = run_demo(pipe, Path(args.out), progress=lambda: tick(0))
    payload = {"checkpoint": str(pipe.path), "device": str(pipe.device),
               "backend": pipe.backend.name, **payload}  # fmt: skip
    lines = [f"model       {args.model} ({pipe.path})",
             f"device      {pipe.device}, backend {pipe.backend.name}"]  # fmt: skip
    lines += [f"caption     {'ok ' if c['right'] else 'BAD'} {c['caption']!r}  (truth: "
              f"{c['truth']!r})" for c in payload["captions"]]  # fmt: skip
    lines += [f"generated   {'ok ' if g['right'] else 'BAD'} {g['prompt']!r}  (classified: "
              f"{g['classified']!r})" for g in payload["generations"]]  # fmt: skip
    lines += [
        (
            f"tokenizer   codes {payload['codes_shape']} -> reconstruction classified as "
            f"{payload['reconstruction_classified']!r}"
        ),
        (
            f"accuracy    captions {payload['caption_accuracy']:.0%}, generated images "
            f"{payload['generation_accuracy']:.0%} (judged by the shapes-world classifier)"
        ),
        f"picture     {payload['outputs']['contact_sheet']}",
    ]
    _emit(args, payload, "\n".join(lines))


class ArgumentParser(argparse.ArgumentParser):
    """argparse with errors in one line (the usage is one --help away)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="vilau-rt",
        description="VILA-U inference runtime: understanding and generation from the command line.",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp, checkpoint=True):
        if checkpoint:
            sp.add_argument("checkpoint", help="VILA-U checkpoint folder (official layout)")
            sp.add_argument("--siglip-config", help="folder with the SigLIP config.json, when "
                            "the checkpoint names a tower not shipped with vilau_rt")  # fmt: skip
            sp.add_argument("--dtype", choices=["float32", "float16", "bfloat16"],
                            help="weights dtype (default: bfloat16 on CUDA, float32 on CPU)")  # fmt: skip
            sp.add_argument("--backend", default="auto",
                            choices=["auto", "torch", "native", "onnxruntime", "tensorrt"],
                            help="engine: auto (default: native on the CPU, torch on CUDA), "
                            "torch (reference), native (our kernels, CUDA graphs), "
                            "onnxruntime (exported ONNX bundle), tensorrt (bundle exported with "
                            "--target tensorrt)")  # fmt: skip
            sp.add_argument("--int8-activations", action="store_true",
                            help="INT4 checkpoints on the native CPU backend: int8 activations "
                            "and an int8 lm_head (faster, approximate; see README)")  # fmt: skip
        sp.add_argument("--device", help="cpu or cuda[:N] (default: cuda when available)")
        sp.add_argument("--json", action="store_true", help="print one JSON object for scripts")

    sp = sub.add_parser("demo", help="run the built-in shapes-demo model end to end")
    common(sp, checkpoint=False)
    sp.add_argument("--model", default="shapes-demo", help="built-in model or checkpoint folder")
    sp.add_argument("--backend", default="auto",
                    choices=["auto", "torch", "native", "onnxruntime"],
                    help="engine (see caption --help)")  # fmt: skip
    sp.add_argument("--out", default="vilau_rt_demo", help="folder for the demo's pictures")
    sp.set_defaults(fn=cmd_demo)

    sp = sub.add_parser("caption", help="describe an image")
    common(sp)
    sp.add_argument("image", help="image file")
    sp.add_argument("--prompt", help="question or instruction (default: describe the image)")
    sp.add_argument("--max-new-tokens", type=positive_int,
                    help="answer length limit (default: 128, or what the context leaves)")  # fmt: skip
    sp.add_argument("--seed", type=int, help="random seed (sampling only)")
    sp.set_defaults(fn=cmd_caption)

    sp = sub.add_parser("generate", help="text -> images (PNG files)")
    common(sp)
    sp.add_argument("prompt", help="what to draw")
    sp.add_argument("--out", required=True, help="output folder")
    sp.add_argument("--num-images", type=positive_int, default=1, help="images to generate")
    sp.add_argument("--cfg-scale", type=float, default=3.0, help="classifier-free guidance")
    sp.add_argument("--seed", type=int, help="random seed; the same seed gives the same images")
    sp.set_defaults(fn=cmd_generate)

    sp = sub.add_parser("encode", help="image -> RVQ codes (.npy, int64 [h, w, D])")
    common(sp)
    sp.add_argument("image", help="image file")
    sp.add_argument("--out", required=True, help="output .npy file")
    sp.set_defaults(fn=cmd_encode)

    sp = sub.add_parser("decode", help="RVQ codes (.npy) -> image (.png)")
    common(sp)
    sp.add_argument("codes", help=".npy file of codes [h, w, D] or [N, h, w, D]")
    sp.add_argument("--out", required=True, help="output .png file")
    sp.set_defaults(fn=cmd_decode)

    sp = sub.add_parser("chat", help="interactive multi-turn chat about images")
    common(sp)
    sp.add_argument("--max-new-tokens", type=positive_int,
                    help="answer length limit (default: 128, or what the context leaves)")  # fmt: skip
    sp.set_defaults(fn=cmd_chat)

    sp = sub.add_parser("bench", help="time the vision encoder, first token, decode and one image")
    common(sp)
    sp.add_argument("--repeat", type=positive_int, default=3,
                    help="understanding runs (best is shown)")  # fmt: skip
    sp.add_argument("--tokens", type=positive_int, default=32,
                    help="new tokens per understanding run")  # fmt: skip
    sp.set_defaults(fn=cmd_bench)

    sp = sub.add_parser("quantize", help="AWQ INT4 LLM (AutoAWQ GEMM format), rest copied")
    sp.add_argument("checkpoint", help="float VILA-U checkpoint folder")
    sp.add_argument("out", help="output checkpoint folder (must not exist)")
    sp.add_argument("--method", default="awq", help="quantization method (awq)")
    sp.add_argument("--bits", type=int, default=4, help="weight bits (4)")
    sp.add_argument("--group-size", type=int, default=128, choices=[32, 64, 128],
                    help="weights per scale; must divide the LLM's hidden and MLP sizes")  # fmt: skip
    sp.add_argument("--siglip-config", help="folder with the SigLIP config.json, when "
                    "the checkpoint names a tower not shipped with vilau_rt")  # fmt: skip
    sp.add_argument("--no-zero-point", action="store_true",
                    help="symmetric weights (what TensorRT's native INT4 needs)")  # fmt: skip
    sp.add_argument("--calib", help="calibration texts, one per line (default: built-in set)")
    sp.add_argument("--calib-images", help="folder of images for the image-conditioned "
                    "calibration prompts (default: built-in procedural pictures)")  # fmt: skip
    sp.add_argument("--image-prompts", type=_non_negative_int, default=16,
                    help="image-conditioned calibration prompts (0: text only)")  # fmt: skip
    sp.add_argument("--json", action="store_true", help="print one JSON object for scripts")
    sp.set_defaults(fn=cmd_quantize)

    from vilau_export.cli import add_export_parser

    add_export_parser(sub)

    from .serving.cli import add_serving_parsers

    add_serving_parsers(sub, common)

    from .integrations.batch_cli import add_batch_parser

    add_batch_parser(sub, common)

    sp = sub.add_parser("write-checkpoint", help="write a random-weight checkpoint of a preset")
    sp.add_argument("preset", help="tiny-256, 7b-256 or 7b-384")
    sp.add_argument("out", help="output folder")
    sp.add_argument("--seed", type=int, default=0, help="random seed of the weights")
    sp.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    sp.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    sp.add_argument("--json", action="store_true", help="print one JSON object for scripts")
    sp.set_defaults(fn=cmd_write_checkpoint)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one command. A user error (a vilau_rt error, a file that is missing or cannot be
    written) prints one line and returns 2; ``--debug`` shows the traceback instead."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted anywhere on the line
    args = build_parser().parse_args([a for a in argv if a != "--debug"])
    args.debug = debug
    try:
        if getattr(args, "checkpoint", None) is not None:  # built-in names, e.g. shapes-demo
            args.checkpoint = resolve_checkpoint(str(args.checkpoint))
        args.fn(args) if hasattr(args, "fn") else args.func(args)
    except (VilaURTError, OSError) as e:
        if args.debug:
            raise
        print(f"vilau-rt: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("vilau-rt: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
