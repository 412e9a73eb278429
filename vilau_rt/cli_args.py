"""What every ``vilau-rt`` command shares: argparse types and the Pipeline a command's
arguments describe. Its own module so that the sub-CLIs (``serving/cli.py``,
``integrations/batch_cli.py``) and ``cli.py`` all import it, and not each other."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (argparse prints the error and exits 2)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def pipeline_from_args(args):
    """The Pipeline of a command's --checkpoint/--backend/--device/--dtype/--siglip-config/
    --int8-activations."""
    import torch

    from .pipeline import Pipeline

    dtype = getattr(torch, args.dtype) if args.dtype else None
    return Pipeline.from_pretrained(
        args.checkpoint, backend=args.backend, device=args.device, dtype=dtype,
        siglip_config=args.siglip_config, int8_activations=getattr(args, "int8_activations", False),
    )  # fmt: skip
