"""Caption and tokenize image sets on Ray Data: callable classes for ``Dataset.map_batches``,
one Pipeline per actor.

```python
import ray
from vilau_rt.integrations.ray import Captioner, read_image_folder

ds = read_image_folder("photos/")  # columns path, bytes: decoded in the actors
out = ds.map_batches(Captioner, fn_constructor_kwargs={"checkpoint": "vila-u-7b-256"},
                     batch_size=8, batch_format="numpy", num_gpus=1,
                     compute=ray.data.ActorPoolStrategy(size=2))
out.write_parquet("captions/")  # columns path, caption, error
```

Input batches (numpy or pandas format) hold a ``path`` column and/or an image column: ``bytes``
(encoded files, as ``ray.data.read_binary_files`` gives), or ``image``: encoded bytes, a
``{"bytes": ..., "path": ...}`` struct (Hugging Face datasets' Parquet layout), a numpy HWC uint8
array (``ray.data.read_images``) or a PIL image. A row with only a path is read in the actor.

Output rows (a pyarrow table per batch):

| column | type | |
|---|---|---|
| ``path`` | string | the input path (null when the input has none) |
| ``caption`` | string | Captioner: the model's answer; null when the row failed |
| ``codes`` | list<int32> | Encoder: RVQ codes of the [h, w, D] grid, flattened row-major; null on failure |
| ``shape`` | list<int32> | Encoder: [h, w, D]; ``np.reshape(codes, shape)`` is ``Pipeline.encode_image`` |
| ``error`` | string | null, or why the row failed (a corrupt or missing image, ...) |

A row whose image cannot be read gets its ``error`` and never fails the batch: an image set of a
million files has a few broken ones, and they should not cost the other rows their work.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image, UnidentifiedImageError

from ..errors import ImageError, VilaURTError
from ..images import MAX_PIXELS, load_image

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")
IMAGE_COLUMNS = ("image", "bytes")  # first present wins


def decode_image(data: bytes, name: str = "image") -> Image.Image:
    """Encoded image bytes -> RGB PIL image; ImageError for anything unreadable."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > MAX_PIXELS:
                raise ImageError(f"{name} of {im.width}x{im.height} pixels is over the limit "
                                 f"of {MAX_PIXELS} pixels (vilau_rt.images.MAX_PIXELS)")  # fmt: skip
            im.load()  # decode now: a truncated file fails here
            return load_image(im)
    except ImageError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:  # fmt: skip
        raise ImageError(
            f"cannot read {name}: {e}; the file is corrupt, truncated or not an image"
        ) from e


def _column(batch, name: str) -> list | None:
    """A column of a numpy (dict) or pandas batch as a list, or None when absent."""
    if name not in batch:
        return None
    return list(batch[name])


def _num_rows(batch) -> int:
    return len(next(iter(batch.values())) if isinstance(batch, dict) else batch)


def _image(value, path):
    """One row's image as something Pipeline accepts (PIL or numpy); raises ImageError."""
    name = f"image {path}" if path else "image"
    if value is None:
        if not path:
            raise ImageError("the row has neither an image nor a path")
        return load_image(str(path))
    if isinstance(value, dict):  # Hugging Face datasets: {"bytes": ..., "path": ...}
        if value.get("bytes") is None:
            return _image(None, value.get("path") or path)
        value = value["bytes"]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return decode_image(bytes(value), name)
    if isinstance(value, np.ndarray) and value.dtype == object:
        raise ImageError(f"{name}: a numpy array of Python objects is not an image")
    return load_image(value)


def read_rows(batch) -> tuple[list, list]:
    """(paths, images) of a batch: each image a PIL image or numpy array, or the ImageError
    (or other vilau_rt error) that reading it raised."""
    n = _num_rows(batch)
    paths = _column(batch, "path") or [None] * n
    paths = [None if p is None else str(p) for p in paths]
    values = next((c for c in (_column(batch, k) for k in IMAGE_COLUMNS) if c), [None] * n)
    images = []
    for value, path in zip(values, paths):
        try:
            images.append(_image(value, path))
        except VilaURTError as e:
            images.append(e)
    return paths, images


class _Actor:
    """One Pipeline, loaded once per actor (Ray calls ``__init__`` once per actor process)."""

    def __init__(self, checkpoint: str, backend: str = "auto", device: str | None = None,
                 dtype: str | None = None, siglip_config=None, int8_activations: bool = False):  # fmt: skip
        from ..pipeline import Pipeline

        self.pipe = Pipeline.from_pretrained(
            checkpoint, backend=backend, device=device, dtype=dtype, siglip_config=siglip_config,
            int8_activations=int8_activations,
        )  # fmt: skip

    def _batched(self, images, batch_fn, fn) -> tuple[list, list]:
        """(results, errors): batch_fn over the readable rows at once; should it refuse one of
        them, fn row by row, so that only that row gets the error."""
        ok = [i for i, im in enumerate(images) if not isinstance(im, Exception)]
        try:
            out = batch_fn([images[i] for i in ok])
        except VilaURTError:
            return self._each(images, fn)
        results = [None] * len(images)
        for i, r in zip(ok, out):
            results[i] = r
        return results, [str(im) if isinstance(im, Exception) else None for im in images]

    def _each(self, images, fn) -> tuple[list, list]:
        """(results, errors): fn(image) per readable row; an error message per failed row."""
        results, errors = [], []
        for im in images:
            if isinstance(im, Exception):
                results.append(None)
                errors.append(str(im))
                continue
            try:
                results.append(fn(im))
                errors.append(None)
            except VilaURTError as e:  # e.g. an image the model refuses; the batch goes on
                results.append(None)
                errors.append(str(e))
        return results, errors


class Captioner(_Actor):
    """``map_batches`` callable: a caption per image, equal to ``Pipeline.caption`` (greedy),
    the readable images of a batch in one vision pass (``Pipeline.caption_batch``)."""

    def __init__(self, checkpoint: str, prompt: str | None = None,
                 max_new_tokens: int | None = None, **pipeline_kwargs):  # fmt: skip
        super().__init__(checkpoint, **pipeline_kwargs)
        self.prompt = prompt
        self.max_new_tokens = max_new_tokens

    def __call__(self, batch) -> pa.Table:
        paths, images = read_rows(batch)
        captions, errors = self._batched(
            images,
            lambda ims: self.pipe.caption_batch(
                ims, self.prompt, max_new_tokens=self.max_new_tokens
            ),
            lambda im: self.pipe.caption(im, self.prompt, max_new_tokens=self.max_new_tokens),
        )
        return pa.table(
            {"path": paths, "caption": captions, "error": errors},
            schema=CAPTION_SCHEMA,
        )


class Encoder(_Actor):
    """``map_batches`` callable: the RVQ codes of each image (``Pipeline.encode_image``), the
    readable images of a batch in one vision pass (``Pipeline.encode_images``)."""

    def __call__(self, batch) -> pa.Table:
        paths, images = read_rows(batch)
        codes, errors = self._batched(images, self.pipe.encode_images, self.pipe.encode_image)
        return pa.table(
            {
                "path": paths,
                "codes": [None if c is None else c.reshape(-1).astype(np.int32) for c in codes],
                "shape": [None if c is None else list(c.shape) for c in codes],
                "error": errors,
            },
            schema=CODES_SCHEMA,
        )


CAPTION_SCHEMA = pa.schema(
    [("path", pa.string()), ("caption", pa.string()), ("error", pa.string())]
)
CODES_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("codes", pa.list_(pa.int32())),
        ("shape", pa.list_(pa.int32())),
        ("error", pa.string()),
    ]
)


def read_image_folder(folder: str | Path, **kwargs):
    """The image files under ``folder`` (recursively) as a Dataset of ``path`` and ``bytes``;
    decoding happens in the actors, so a corrupt file is that row's error, not a failed read.

    Reads ask for no CPU (``num_cpus=0`` unless given): they only move bytes, and actors that
    hold every CPU of a small cluster would otherwise leave the read waiting forever."""
    import ray.data

    exts = [s.lstrip(".") for s in IMAGE_SUFFIXES]  # Ray matches them case-insensitively
    kwargs.setdefault("num_cpus", 0)
    return ray.data.read_binary_files(
        str(folder), include_paths=True, file_extensions=exts, **kwargs
    )
