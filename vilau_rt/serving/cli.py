"""``vilau-rt live`` and ``vilau-rt serve``, registered by ``vilau_rt.cli.build_parser``.

vilau-rt live CKPT SOURCE [--prompt P] [--json]    describe the newest frame, one line per answer
vilau-rt serve CKPT [--host H] [--port N]          OpenAI-compatible HTTP server
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import ConfigError


def cmd_live(args) -> None:
    from ..cli_args import pipeline_from_args as _pipeline
    from ..pipeline import DEFAULT_CAPTION_PROMPT

    pipe = _pipeline(args)
    realtime = {"auto": None, "on": True, "off": False}[args.realtime]
    loop = pipe.live(
        args.source, args.prompt or DEFAULT_CAPTION_PROMPT, realtime=realtime,
        max_new_tokens=args.max_new_tokens, window=args.window, seed=args.seed,
    )  # fmt: skip
    with loop:
        try:
            for n, r in enumerate(loop, start=1):
                if args.json:
                    line = json.dumps(r.to_dict())
                else:
                    line = (f"[frame {r.frame} {r.time:.2f}s {r.latency_ms:.0f} ms, "
                            f"{r.dropped} dropped] {r.text}")  # fmt: skip
                print(line, flush=True)
                if args.max_answers and n >= args.max_answers:
                    break
        except KeyboardInterrupt:
            pass


def cmd_serve(args) -> None:
    try:
        from .server import create_app, serve
    except ImportError as e:
        raise ConfigError(
            f"the server needs FastAPI and uvicorn ({e}): pip install 'vilau-rt[serve]'"
        ) from e
    from ..cli_args import pipeline_from_args as _pipeline

    allowed = args.allowed_local_media_path
    if allowed is not None and not Path(allowed).is_dir():
        raise ConfigError(f"--allowed-local-media-path {allowed} is not a folder")
    if args.max_queue < 0:
        raise ConfigError(f"--max-queue must be >= 0, got {args.max_queue}")
    pipe = _pipeline(args)
    model_id = Path(args.checkpoint).name
    app = create_app(pipe, model_id, max_queue=args.max_queue, allowed_media_dir=allowed)
    print(f"vilau-rt: serving {model_id} on http://{args.host}:{args.port}/v1", file=sys.stderr,
          flush=True)  # fmt: skip
    serve(app, args.host, args.port, exit_after_s=args.exit_after)


def add_serving_parsers(sub, common) -> None:
    """Add ``live`` and ``serve`` to the ``vilau-rt`` subparsers; ``common(sp)`` adds the
    checkpoint, backend, device, dtype and --json arguments every model command has."""
    sp = sub.add_parser("live", help="describe the newest frame of a camera, stream or clip")
    common(sp)
    sp.add_argument("source", help="video file, rtsp/http(s) stream URL or /dev/video* device")
    sp.add_argument("--prompt", help="question asked about each frame (default: describe it)")
    sp.add_argument("--max-new-tokens", type=int, default=32, help="answer length limit")
    sp.add_argument("--realtime", choices=["auto", "on", "off"], default="auto",
                    help="auto: a file plays at its frame rate, streams as they come; off: "
                    "every frame answered, none dropped")  # fmt: skip
    sp.add_argument("--window", type=int, help="answer about the last N frames as a video")
    sp.add_argument("--max-answers", type=int, help="stop after this many answers")
    sp.add_argument("--seed", type=int, help="random seed (sampling only)")
    sp.set_defaults(fn=cmd_live)

    sp = sub.add_parser("serve", help="OpenAI-compatible HTTP server (FastAPI + uvicorn)")
    common(sp)
    sp.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    sp.add_argument("--port", type=int, default=8000, help="TCP port")
    sp.add_argument("--max-queue", type=int, default=8,
                    help="requests that may wait behind the running one; more get 429")  # fmt: skip
    sp.add_argument("--allowed-local-media-path", metavar="DIR",
                    help="image_url file paths are read only under this folder (default: none)")  # fmt: skip
    sp.add_argument("--exit-after", type=float, metavar="SECONDS",
                    help="stop the server after this many seconds (tests, batch jobs)")  # fmt: skip
    sp.set_defaults(fn=cmd_serve)
