"""The shapes world: the renderer follows its spec and the non-learned classifier reads it back."""

from __future__ import annotations

import numpy as np
import pytest

from vilau_rt import shapes_world as world


def test_there_are_24_classes_with_the_exact_caption_form():
    assert len(world.CLASSES) == 24
    assert world.CLASSES[0].caption == "a red circle on a black background"
    assert {s.caption for s in world.CLASSES} == {
        f"a {c} {s} on a {b} background"
        for c in world.COLOURS
        for s in world.SHAPES
        for b in world.BACKGROUNDS
    }
    assert world.parse_caption(" a blue triangle on a white background ") == world.Scene(
        "blue", "triangle", "white"
    )
    assert world.parse_caption("a blue triangle") is None


def test_renders_are_32px_rgb_with_the_background_on_the_border():
    rng = np.random.default_rng(0)
    for scene in world.CLASSES:
        img = world.render(scene, rng)
        assert img.shape == (32, 32, 3) and img.dtype == np.uint8
        border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]]).astype(float)
        grey = world.BACKGROUNDS[scene.background]
        # 1 px margin: the border is background grey (+-4) plus noise of sigma 3
        assert abs(np.median(border) - grey) <= 4 + 2


@pytest.mark.parametrize("shape, area", [("square", 1.0), ("circle", np.pi / 4), ("triangle", 0.5)])
def test_coverage_has_the_area_of_the_shape(shape, area):
    for side in (13, 17, 22):
        cov = world.coverage(shape, 3, 5, side)
        assert cov.sum() / side**2 == pytest.approx(area, abs=0.02)
        rows, cols = np.flatnonzero(cov.sum(1)), np.flatnonzero(cov.sum(0))
        assert rows[0] == 5 and rows[-1] == 5 + side - 1  # the box is whole pixels
        assert cols[0] == 3 and cols[-1] == 3 + side - 1
    edge = world.coverage("circle", 2, 2, 20)
    assert ((edge > 0) & (edge < 1)).any()  # anti-aliased


def test_classifier_reads_back_fresh_renders():
    scenes, images = world.fresh_renders(per_class=20, seed=7)
    right = sum(world.classify(im) == s for s, im in zip(scenes, images))
    assert right == len(scenes)  # 480/480 measured; the world is meant to be unambiguous


def test_classifier_accepts_pil_images_and_rejects_other_sizes():
    from PIL import Image

    _, images = world.fresh_renders(per_class=1, seed=1)
    assert world.classify(Image.fromarray(images[5])) == world.CLASSES[5]
    with pytest.raises(ValueError, match="32, 32, 3"):
        world.classify(np.zeros((16, 16, 3), np.uint8))


def test_classifier_is_robust_to_blur_like_a_decoder_gives():
    # generated images come out of a conv decoder, softer than renders: a Gaussian blur of
    # sigma 1.5 px must not change what the classifier reads
    scenes, images = world.fresh_renders(per_class=5, seed=9)
    k = np.exp(-(np.arange(-3, 4) ** 2) / (2 * 1.5**2))
    k /= k.sum()
    padded = np.pad(images.astype(np.float64), ((0, 0), (3, 3), (3, 3), (0, 0)), mode="edge")
    rows = sum(k[i] * padded[:, i : i + 32] for i in range(7))
    blurred = sum(k[j] * rows[:, :, j : j + 32] for j in range(7))
    blurred = np.clip(np.rint(blurred), 0, 255).astype(np.uint8)
    assert sum(world.classify(im) == s for s, im in zip(scenes, blurred)) == len(scenes)
