"""Image inputs and outputs: anything a user may hand us -> an RGB PIL image, and pixels back.

Accepted: a path (str or Path), a ``PIL.Image.Image`` of any mode (converted to RGB), a numpy
array HxWx3 / HxWx4 / HxW uint8, a torch tensor uint8 CHW or HWC (CPU or CUDA; float tensors are
taken as [0, 1]). Anything else raises ImageError saying what is supported.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import ImageError


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
        if t.dim() == 3 and t.shape[0] in (1, 3, 4) and t.shape[-1] not in (1, 3, 4):
            t = t.permute(1, 2, 0)  # CHW -> HWC
        if t.is_floating_point():
            t = (t.clamp(0, 1) * 255).round().to(torch.uint8)
        return _from_array(t.cpu().numpy(), "tensor")
    raise ImageError(
        f"unsupported image type {type(image).__name__}: pass a path, a PIL image, a numpy "
        "HxWx3 uint8 array or a torch uint8 tensor (CHW or HWC)"
    )


def _open(path: Path) -> Image.Image:
    if not path.is_file():
        raise ImageError(f"image file {path} not found")
    try:
        with Image.open(path) as im:
            im.load()  # decode now, so truncated files fail here and not later
            return _as_rgb(im)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ImageError(
            f"cannot read image {path}: {e}; the file is corrupt, truncated or not an image"
        ) from e


def _as_rgb(im: Image.Image) -> Image.Image:
    if im.width == 0 or im.height == 0:
        raise ImageError(f"image has zero size {im.size}")
    return im.convert("RGB")


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
    return _as_rgb(Image.fromarray(np.ascontiguousarray(a)))


def to_pil(pixels: np.ndarray) -> list[Image.Image]:
    """uint8 [N, H, W, 3] -> list of PIL images."""
    return [Image.fromarray(p) for p in pixels]
