"""Image inputs and outputs: anything a user may hand us -> an RGB PIL image, and pixels back.

Accepted: a path (str or Path), a ``PIL.Image.Image`` of any mode (converted to RGB; 16-bit
grey scaled to 8 bits), a numpy array HxWx3 / HxWx4 / HxW uint8, a torch tensor uint8 CHW or HWC
(CPU or CUDA), or a float tensor with every value in [0, 1] (NaN, infinity or values outside are
refused, not clamped). Images over ``MAX_PIXELS`` (width x height) are refused before they are
decoded or converted. Anything else raises ImageError saying what is supported.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import ImageError

MAX_PIXELS = 64 * 2**20  # 67 megapixels: an 8K frame fits four times; larger input is refused


def load_image(image) -> Image.Image:
    """Return an RGB PIL image for any supported input."""
    if isinstance(image, (str, Path)):
        return _open(Path(image))
    if isinstance(image, Image.Image):
        if image.width == 0 or image.height == 0:
            raise ImageError(f"image has zero size {image.size}")
        return image.convert("RGB") if image.mode != "RGB" else image
    if isinstance(image, np.ndarray):
        return _from_array(image, "numpy array")
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        torch = None
    if torch is not None and isinstance(image, torch.Tensor):
        t = image.detach()
        if t.is_floating_point():
            _check_unit_range(t)  # before the permute: min/max of a strided view copies it
        if t.dim() == 3 and t.shape[0] in (1, 3, 4) and t.shape[-1] not in (1, 3, 4):
            t = t.permute(1, 2, 0)  # CHW -> HWC
        if t.dim() >= 2:
            _check_pixels(t.shape[1], t.shape[0], "tensor")
        if t.is_floating_point():
            t = _float_to_uint8(t)
        return _from_array(t.cpu().numpy(), "tensor")
    raise ImageError(
        f"unsupported image type {type(image).__name__}: pass a path, a PIL image, a numpy "
        "HxWx3 uint8 array or a torch uint8 tensor (CHW or HWC)"
    )


def _check_pixels(width: int, height: int, what: str) -> None:
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"{what} of {width}x{height} pixels is over the limit of {MAX_PIXELS} pixels "
            "(vilau_rt.images.MAX_PIXELS); downscale it first: the model sees it at "
            "a few hundred pixels a side anyway"
        )


def _check_unit_range(t) -> None:
    lo, hi = float(t.min()), float(t.max())  # NaN propagates into both
    if not (0.0 <= lo and hi <= 1.0):
        raise ImageError(
            f"float image values must lie in [0, 1]; got min {lo}, max {hi} (NaN or infinity "
            "included); scale it to [0, 1] or pass uint8 pixels"
        )


def _float_to_uint8(t):
    """[0, 1] floats -> uint8 (round half to even, as torch.round), a band of rows at a time so
    that a large image never needs a float copy of itself."""
    import torch

    out = torch.empty(t.shape, dtype=torch.uint8, device=t.device)
    band = max(1, (1 << 22) // max(1, t[0].numel()))  # ~4M values per step
    for r in range(0, t.shape[0], band):
        out[r : r + band] = (t[r : r + band] * 255).round()
    return out


def _open(path: Path) -> Image.Image:
    if not path.is_file():
        raise ImageError(f"image file {path} not found")
    try:
        with Image.open(path) as im:
            _check_pixels(im.width, im.height, f"image {path}")
            im.load()  # decode now, so truncated files fail here and not later
            return _as_rgb(im)
    except Image.DecompressionBombError as e:  # PIL's own guard, past twice its limit
        raise ImageError(f"image {path} is over the pixel limit, not decoded ({e})") from e
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ImageError(
            f"cannot read image {path}: {e}; the file is corrupt, truncated or not an image"
        ) from e


def _as_rgb(im: Image.Image) -> Image.Image:
    if im.width == 0 or im.height == 0:
        raise ImageError(f"image has zero size {im.size}")
    if im.mode.startswith("I;16") or im.mode == "I":
        # 16-bit (or 32-bit integer) grey: PIL's convert() clips at 255, which turns almost
        # every pixel white; scale the 16-bit range down to 8 bits instead.
        a = np.asarray(im, dtype=np.int64)
        if im.mode == "I" and a.max(initial=0) <= 255:
            grey = a.clip(0, 255).astype(np.uint8)
        else:
            grey = (a.clip(0, 65535) >> 8).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    return im if im.mode == "RGB" else im.convert("RGB")


def _from_array(a: np.ndarray, what: str) -> Image.Image:
    if a.dtype != np.uint8:
        raise ImageError(f"{what} of dtype {a.dtype} is not supported: pass uint8 pixels (0..255)")
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (3, 4))):
        raise ImageError(
            f"{what} of shape {tuple(a.shape)} is not an image: expected HxW, HxWx3 or HxWx4"
        )
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ImageError(f"{what} has zero size {tuple(a.shape)}")
    _check_pixels(a.shape[1], a.shape[0], what)
    return _as_rgb(Image.fromarray(np.ascontiguousarray(a)))


def to_pil(pixels: np.ndarray) -> list[Image.Image]:
    """uint8 [N, H, W, 3] -> list of PIL images."""
    return [Image.fromarray(p) for p in pixels]
