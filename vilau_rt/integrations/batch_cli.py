"""``vilau-rt batch caption|encode CKPT INPUT OUT.parquet``: an image set on Ray Data.

Registered by ``vilau_rt.cli.build_parser``. INPUT is a folder of images (read recursively) or a
Parquet file / folder with a ``path`` and/or ``image`` column. OUT is one Parquet file (schema in
``vilau_rt.integrations.ray``), written beside itself and renamed into place when complete.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import uuid
from pathlib import Path

from ..errors import BackendError, ConfigError

log = logging.getLogger(__name__)


def add_batch_parser(sub, common) -> None:
    """Add ``batch caption`` and ``batch encode``; ``common(sp)`` adds checkpoint, backend,
    device, dtype and --json."""
    sp = sub.add_parser("batch", help="caption or tokenize an image set on Ray Data (Parquet out)")
    tasks = sp.add_subparsers(dest="task", required=True)
    for task, help_text in (
        ("caption", "a caption per image"),
        ("encode", "RVQ codes per image (flattened, with their [h, w, D] shape)"),
    ):
        t = tasks.add_parser(task, help=help_text)
        common(t)
        t.add_argument("input", help="image folder, or Parquet file/folder with path/image columns")
        t.add_argument("out", help="output Parquet file (one file; must not exist)")
        t.add_argument("--workers", type=_positive, default=1,
                       help="actors, one Pipeline each (one GPU each where GPUs exist)")  # fmt: skip
        t.add_argument("--address", help="join this Ray cluster (e.g. auto or ray://HOST:10001) "
                       "instead of starting a local Ray")  # fmt: skip
        t.add_argument("--batch-size", type=_positive, default=8, help="images per actor call")
        t.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
        if task == "caption":
            t.add_argument("--prompt", help="question asked about each image (default: describe)")
            t.add_argument("--max-new-tokens", type=_positive,
                           help="caption length limit (default: 128, or what the context leaves)")  # fmt: skip
        t.set_defaults(fn=cmd_batch)


def _positive(text: str) -> int:
    from ..cli_args import positive_int

    return positive_int(text)


def _input_dataset(path: str):
    """The input as a Dataset with ``path`` and/or an image column."""
    import ray.data

    from .ray import IMAGE_COLUMNS, read_image_folder

    p = Path(path)
    parquet = p.suffix == ".parquet" or (p.is_dir() and any(p.glob("*.parquet")))
    if not parquet:
        return read_image_folder(path)
    ds = ray.data.read_parquet(path, num_cpus=0)  # see read_image_folder
    names = ds.schema().names
    keep = [c for c in ("path", *IMAGE_COLUMNS) if c in names]
    if not keep:
        raise ConfigError(f"Parquet input {path} has no path, image or bytes column: {names}")
    # columns= in the read, not select_columns: that would be a task needing a CPU the actors hold
    return ray.data.read_parquet(path, columns=keep, num_cpus=0)


def _start_ray(address: str | None) -> None:
    import ray

    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(include_dashboard=False, log_to_driver=False)


def run_batch(task: str, checkpoint: str, input_path: str, out: str | Path, *, workers: int = 1,
              batch_size: int = 8, prompt: str | None = None, max_new_tokens: int | None = None,
              address: str | None = None, overwrite: bool = False,
              **pipeline_kwargs) -> dict:  # fmt: skip
    """Caption or encode every image of ``input_path`` into the Parquet file ``out``; returns
    {"rows", "errors", "seconds", "out"}. Joins the running Ray (``ray.init`` first to choose),
    or ``address``, or starts a local one."""
    try:
        import pyarrow.parquet as pq
        import ray
    except ImportError as e:
        raise ConfigError(
            f"vilau-rt batch needs Ray Data ({e}): pip install 'vilau-rt[ray]'"
        ) from e
    from .ray import CAPTION_SCHEMA, CODES_SCHEMA, Captioner, Encoder

    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; choose a new output file or pass --overwrite")
    if address is None and pipeline_kwargs.get("backend") != "onnxruntime":
        # fail here, in one line, rather than in every actor (a cluster's path is on its nodes)
        from ..model.config import read_config

        read_config(checkpoint, pipeline_kwargs.get("siglip_config"))
    input_path = str(input_path)
    if not (Path(input_path).exists() or "://" in input_path):  # s3://, gs://: checked by Ray
        raise ConfigError(f"input {input_path} not found")
    _start_ray(address)
    t0 = time.perf_counter()
    ds = _input_dataset(input_path)
    device = pipeline_kwargs.get("device")
    use_gpu = ray.cluster_resources().get("GPU", 0) >= 1 and device != "cpu"
    # CPU actors leave one CPU to Ray Data's own tasks (listing and reading files): actors that
    # held every CPU of a small cluster would keep those tasks, and so the job, waiting forever
    cpus = ray.cluster_resources().get("CPU", 1.0)
    actor_cpus = min(1.0, max(cpus - 1.0, 0.0) / workers)
    if task == "caption":
        fn, schema = Captioner, CAPTION_SCHEMA
        kwargs = {"prompt": prompt, "max_new_tokens": max_new_tokens}
    else:
        fn, schema, kwargs = Encoder, CODES_SCHEMA, {}
    results = ds.map_batches(
        fn,
        fn_constructor_kwargs={
            "checkpoint": str(Path(checkpoint).resolve()),
            **kwargs,
            **pipeline_kwargs,
        },
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=workers),  # Pipelines load once per actor
        num_gpus=1 if use_gpu else 0,
        num_cpus=None if use_gpu else actor_cpus,
        udf_modifying_row_count=False,  # one output row per input row
    )
    # The rows come back to this process and go into one file: on a cluster, a local output
    # path written by Dataset.write_parquet would land on whichever node ran the write.
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    rows = errors = 0
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            for batch in results.iter_batches(batch_format="pyarrow", batch_size=None):
                batch = batch.cast(schema)
                writer.write_table(batch)
                rows += batch.num_rows
                errors += batch.num_rows - batch.column("error").null_count
        os.replace(tmp, out)
    except BaseException as e:  # Ctrl-C too: nothing half-written under OUT's name
        tmp.unlink(missing_ok=True)
        if isinstance(e, ray.exceptions.RayError):  # its message holds remote tracebacks
            lines = str(e).strip().splitlines() or [type(e).__name__]
            raise BackendError(f"the Ray job failed: {lines[-1]}") from e
        raise
    return {"rows": rows, "errors": errors, "seconds": time.perf_counter() - t0, "out": str(out)}


def cmd_batch(args) -> None:
    import json

    pipeline_kwargs = {"backend": args.backend, "device": args.device, "dtype": args.dtype,
                       "siglip_config": args.siglip_config, "int8_activations": args.int8_activations}  # fmt: skip
    summary = run_batch(
        args.task, args.checkpoint, args.input, args.out, workers=args.workers,
        batch_size=args.batch_size, prompt=getattr(args, "prompt", None),
        max_new_tokens=getattr(args, "max_new_tokens", None), address=args.address,
        overwrite=args.overwrite, **pipeline_kwargs,
    )  # fmt: skip
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{summary['rows']} rows, {summary['errors']} errors, "
              f"{summary['seconds']:.1f} s -> {summary['out']}")  # fmt: skip
    sys.stdout.flush()
