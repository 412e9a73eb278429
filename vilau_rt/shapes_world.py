"""The shapes world of the built-in ``shapes-demo`` model: a renderer and a non-learned classifier.

Every image is 32x32 RGB with one shape (circle, axis-aligned square, or upward isosceles
triangle with base = height) whose bounding box side is a whole number of pixels in [13, 22],
placed anywhere with at least 1 px to each edge; edges anti-aliased (4x4 supersampling). Colours
with a uniform +-12 per-channel jitter per image; background black (12) or white (243) with a
grey +-4 jitter; Gaussian pixel noise of sigma 3. The caption is exactly
``a {colour} {shape} on a {background} background`` (24 classes).

The classifier reads an image of this world without learning anything: background from the
border, the blob as the pixels far from it, colour from the blob's mean, shape from the blob's
geometry (fill of its bounding box, and how its width grows from top to bottom). It is the
yardstick that the demo, the tests and ``bench/shapes_yardstick.py`` apply to captions and to
generated images.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

SIZE = 32
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (40, 80, 230),
    "yellow": (235, 210, 40),
}
SHAPES = ("circle", "square", "triangle")
BACKGROUNDS = {"black": 12, "white": 243}
SIDE_RANGE = (13, 22)  # bounding-box side in whole pixels, both ends included
COLOUR_JITTER, GREY_JITTER, NOISE_SIGMA = 12, 4, 3.0
SUPERSAMPLE = 4


@dataclass(frozen=True)
class Scene:
    colour: str
    shape: str
    background: str

    @property
    def caption(self) -> str:
        return caption(self.colour, self.shape, self.background)


def caption(colour: str, shape: str, background: str) -> str:
    return f"a {colour} {shape} on a {background} background"


CLASSES = tuple(Scene(c, s, b) for c in COLOURS for s in SHAPES for b in BACKGROUNDS)


def parse_caption(text: str) -> Scene | None:
    """The scene a caption names exactly (surrounding whitespace ignored), else None."""
    for scene in CLASSES:
        if text.strip() == scene.caption:
            return scene
    return None


@functools.cache
def _sample_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel sample centres (y, x), each [size * 4, size * 4], in pixel units."""
    c = (np.arange(size * SUPERSAMPLE, dtype=np.float64) + 0.5) / SUPERSAMPLE
    return np.meshgrid(c, c, indexing="ij")


def coverage(shape: str, x0: int, y0: int, side: int, size: int = SIZE) -> np.ndarray:
    """Fraction of each pixel inside the shape, float32 [size, size] (4x4 supersampling)."""
    y, x = _sample_grid(size)
    if shape == "square":
        inside = (x >= x0) & (x < x0 + side) & (y >= y0) & (y < y0 + side)
    elif shape == "circle":
        r = side / 2
        inside = (x - x0 - r) ** 2 + (y - y0 - r) ** 2 <= r * r
    elif shape == "triangle":
        # apex at the top centre, base on the bottom edge: half-width grows linearly with depth
        t = (y - y0) / side
        inside = (t >= 0) & (t <= 1) & (np.abs(x - x0 - side / 2) <= t * side / 2)
    else:
        raise ValueError(f"unknown shape {shape!r}; shapes: {SHAPES}")
    cov = inside.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).mean(axis=(1, 3))
    return cov.astype(np.float32)


def render(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """One image of ``scene``, uint8 [32, 32, 3]; position, size and jitter drawn from ``rng``."""
    side = int(rng.integers(SIDE_RANGE[0], SIDE_RANGE[1] + 1))
    x0 = int(rng.integers(1, SIZE - side))  # leaves >= 1 px on both sides
    y0 = int(rng.integers(1, SIZE - side))
    fg = np.array(COLOURS[scene.colour], np.float32)
    fg = fg + rng.uniform(-COLOUR_JITTER, COLOUR_JITTER, 3).astype(np.float32)
    bg = BACKGROUNDS[scene.background] + rng.uniform(-GREY_JITTER, GREY_JITTER)
    alpha = coverage(scene.shape, x0, y0, side)[..., None]
    img = alpha * fg + (1 - alpha) * np.float32(bg)
    img = img + rng.normal(0.0, NOISE_SIGMA, img.shape).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def sample(rng: np.random.Generator, n: int) -> tuple[list[Scene], np.ndarray]:
    """n scenes drawn uniformly over the 24 classes and their renders [n, 32, 32, 3]."""
    scenes = [CLASSES[int(i)] for i in rng.integers(0, len(CLASSES), n)]
    return scenes, np.stack([render(s, rng) for s in scenes]) if n else np.zeros((0, 32, 32, 3))


def fresh_renders(per_class: int, seed: int) -> tuple[list[Scene], np.ndarray]:
    """``per_class`` renders of every class, in class order (the yardstick's test set)."""
    rng = np.random.default_rng(seed)
    scenes = [s for s in CLASSES for _ in range(per_class)]
    return scenes, np.stack([render(s, rng) for s in scenes])


# -- the classifier ---------------------------------------------------------------------------


def classify(image) -> Scene:
    """The scene of one image of this world (uint8 [32, 32, 3] or anything ``np.asarray`` turns
    into it, e.g. a PIL image). Never fails: a blank image still gets its nearest class."""
    img = np.asarray(image, dtype=np.float32)[..., :3]
    if img.shape != (SIZE, SIZE, 3):
        raise ValueError(f"shapes-world images are [{SIZE}, {SIZE}, 3], got {img.shape}")
    border = np.concatenate([img[0], img[-1], img[1:-1, 0], img[1:-1, -1]])  # [124, 3]
    bg_rgb = np.median(border, axis=0)
    background = "white" if bg_rgb.mean() > 127.5 else "black"
    # the blob: pixels far from the background colour; its core (far enough to be mostly
    # shape) gives the colour, a softer cut gives the geometry
    dist = np.abs(img - bg_rgb).max(axis=-1)
    core = dist > 0.6 * max(float(dist.max()), 1.0)
    colour = _nearest_colour(img[core].mean(axis=0) if core.any() else bg_rgb)
    fg_rgb = np.array(COLOURS[colour], np.float32)
    span = fg_rgb - bg_rgb
    alpha = np.clip(((img - bg_rgb) @ span) / max(float(span @ span), 1.0), 0.0, 1.0)
    return Scene(colour, _shape_of(alpha), background)


def _nearest_colour(rgb: np.ndarray) -> str:
    names = list(COLOURS)
    d = [float(((rgb - np.array(COLOURS[n], np.float32)) ** 2).sum()) for n in names]
    return names[int(np.argmin(d))]


def _shape_features(alpha: np.ndarray) -> np.ndarray | None:
    """Geometry of the blob alpha [32, 32] (cut at 0.5, so blur moves no straight edge):
    fill of its bounding box, mean of the box's top corners, of its bottom corners, and the
    ratio of its width in the top third to the bottom third. None when there is no blob."""
    mask = alpha >= 0.5
    rows = np.flatnonzero(mask.sum(axis=1) >= 2)
    cols = np.flatnonzero(mask.sum(axis=0) >= 2)
    if len(rows) < 3 or len(cols) < 3:
        return None
    box = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].astype(np.float32)
    h, w = box.shape
    ch, cw = max(1, round(h / 5)), max(1, round(w / 5))
    top = (box[:ch, :cw].mean() + box[:ch, -cw:].mean()) / 2
    bottom = (box[-ch:, :cw].mean() + box[-ch:, -cw:].mean()) / 2
    third = max(1, h // 3)
    taper = box[:third].sum(axis=1).mean() / max(box[-third:].sum(axis=1).mean(), 1e-6)
    return np.array([box.mean(), top, bottom, taper], np.float32)


@functools.cache
def _shape_prototypes() -> dict[str, np.ndarray]:
    """Features of each ideal shape, from the spec's geometry (averaged over the sizes)."""
    return {
        shape: np.mean(
            [_shape_features(coverage(shape, 5, 5, side)) for side in range(13, 23)], axis=0
        )
        for shape in SHAPES
    }


def _shape_of(alpha: np.ndarray) -> str:
    """The shape whose ideal geometry is nearest (L1) to the blob's."""
    f = _shape_features(alpha)
    if f is None:
        return "circle"
    protos = _shape_prototypes()
    return min(SHAPES, key=lambda s: float(np.abs(f - protos[s]).sum()))


# -- the yardstick: what a model of this world gets right -------------------------------------

YARDSTICK_SEED = 2026  # fresh renders: training draws from other seeds
CAPTION_TOKENS = 24  # a caption is ~10 tokens; room for a wrong, longer answer


def caption_score(pipe, per_class: int = 2, seed: int = YARDSTICK_SEED) -> dict:
    """Greedy captions (the default caption prompt) of ``per_class`` fresh renders per class;
    ``right`` counts exact captions."""
    scenes, images = fresh_renders(per_class, seed)
    rows = []
    for scene, image in zip(scenes, images):
        text = pipe.caption(image, max_new_tokens=CAPTION_TOKENS)
        rows.append({"truth": scene.caption, "caption": text, "right": text == scene.caption})
    return {"right": sum(r["right"] for r in rows), "total": len(rows), "rows": rows}


def reconstruction_score(pipe, per_class: int = 2, seed: int = YARDSTICK_SEED) -> dict:
    """Fresh renders through the image tokenizer (encode -> decode); ``right`` counts
    reconstructions the classifier reads as the rendered class."""
    scenes, images = fresh_renders(per_class, seed)
    rows = []
    for scene, image in zip(scenes, images):
        got = classify(pipe.decode_codes(pipe.encode_image(image)))
        rows.append({"truth": scene.caption, "classified": got.caption, "right": got == scene})
    return {"right": sum(r["right"] for r in rows), "total": len(rows), "rows": rows}


def generation_score(pipe, cfg_scale: float = 3.0, seed: int = 0) -> dict:
    """One image per class from its caption (CFG ``cfg_scale``, greedy depth codes); ``right``
    counts images the classifier reads back as the prompted class."""
    rows, images = [], []
    for scene in CLASSES:
        image = pipe.generate_image(scene.caption, cfg_scale=cfg_scale, top_k=1, seed=seed)[0]
        got = classify(image)
        images.append(image)
        rows.append({"prompt": scene.caption, "classified": got.caption, "right": got == scene})
    return {"right": sum(r["right"] for r in rows), "total": len(rows), "rows": rows,
            "images": images}  # fmt: skip
