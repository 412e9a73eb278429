"""Image inputs that used to be accepted silently: 16-bit grey files, float tensors outside
[0, 1], images too large to decode, and the memory a large float tensor costs."""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from vilau_rt import images
from vilau_rt.errors import ImageError
from vilau_rt.images import load_image


def _png(path, width, height, bit_depth, colour_type, rows: bytes | None):
    """A PNG written by hand (``rows`` None: the header claims the size, no pixel data)."""

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    idat = chunk(b"IDAT", zlib.compress(rows)) if rows is not None else b""
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + idat + chunk(b"IEND", b""))
    return path


def test_16_bit_grey_png_is_scaled_to_8_bits(tmp_path):
    grey = (np.arange(16 * 16, dtype=np.uint32).reshape(16, 16) * 256).astype(">u2")
    rows = b"".join(b"\x00" + grey[i].tobytes() for i in range(16))
    path = _png(tmp_path / "grey16.png", 16, 16, 16, 0, rows)
    got = np.asarray(load_image(path))
    assert got.shape == (16, 16, 3)
    assert np.array_equal(got[..., 0], (grey.astype(np.int64) >> 8).astype(np.uint8))
    assert np.array_equal(got[..., 0], got[..., 2])


def test_16_bit_rgb_png_keeps_its_colours(tmp_path):
    rgb = np.empty((4, 4, 3), dtype=">u2")
    rgb[...] = (40000, 1000, 65535)
    rows = b"".join(b"\x00" + rgb[i].tobytes() for i in range(4))
    got = np.asarray(load_image(_png(tmp_path / "rgb16.png", 4, 4, 16, 2, rows)))
    assert got[0, 0].tolist() == [40000 >> 8, 1000 >> 8, 255]


@pytest.mark.parametrize(
    "bad", [1.5, -0.1, float("nan"), float("inf")], ids=["above", "below", "nan", "inf"]
)
def test_float_tensor_outside_0_1_is_refused_not_clamped(bad):
    t = torch.rand(3, 8, 8)
    t[1, 2, 3] = bad
    with pytest.raises(ImageError, match=r"must lie in \[0, 1\]"):
        load_image(t)


def test_float_tensor_in_range_equals_its_uint8_rounding():
    t = torch.rand(3, 9, 7, generator=torch.Generator().manual_seed(0))
    want = (t * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(np.asarray(load_image(t)), want)


def test_images_over_the_pixel_limit_are_refused(tmp_path, monkeypatch):
    # a 20000 x 20000 PNG header: refused before any pixel is decoded
    with pytest.raises(ImageError, match=r"huge\.png.* over the (pixel )?limit"):
        load_image(_png(tmp_path / "huge.png", 20000, 20000, 8, 2, None))
    monkeypatch.setattr(images, "MAX_PIXELS", 100)
    with pytest.raises(ImageError, match="11x10 pixels is over the limit of 100"):
        load_image(np.zeros((10, 11, 3), np.uint8))
    with pytest.raises(ImageError, match="11x10 pixels is over the limit"):
        load_image(torch.zeros(3, 10, 11))


def test_a_large_float_tensor_costs_less_than_its_own_size_again():
    # peak RSS while loading a 3 x 4000 x 4000 float32 tensor (192 MB); clamp/scale/round
    # temporaries used to add three float copies on top of it
    script = (
        "import resource, torch\n"
        "from vilau_rt.images import load_image\n"
        "t = torch.rand(3, 4000, 4000)\n"
        "load_image(torch.rand(3, 8, 8))\n"  # warm up (imports, allocator)
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "load_image(t)\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print((after - before) * 1024 / t.nbytes)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert float(out.stdout) < 1.0, f"peak grew by {float(out.stdout):.2f}x the input's size"


def test_a_pil_image_of_any_mode_still_loads():
    for mode in ("L", "LA", "P", "RGBA", "CMYK", "I;16"):
        im = Image.new(mode, (5, 4))
        assert load_image(im).mode == "RGB" and load_image(im).size == (5, 4)
