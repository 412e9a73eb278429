"""``vilau-rt demo``: the built-in ``shapes-demo`` model end to end, with its accuracy.

Captions a few fresh renders of the shapes world, round-trips one through the image tokenizer,
generates one image per prompt, and writes everything into one contact sheet (inputs with their
captions, the reconstruction, the generations; upscaled, labelled). Accuracy is judged by the
world's own non-learned classifier (``vilau_rt.shapes_world.classify``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from . import shapes_world as world

DEMO_MODEL = "shapes-demo"
SCALE = 4  # contact-sheet upscaling (nearest), 32 px -> 128 px
LABEL_H = 28  # label band under each tile


def run_demo(pipe, out: Path, *, n_captions: int = 6, n_generations: int = 6, seed: int = 0,
             progress=None) -> dict:  # fmt: skip
    """Run the demo on ``pipe``; writes ``out/contact_sheet.png``; returns the JSON payload."""
    rng = np.random.default_rng(seed)
    scenes, images = world.sample(rng, n_captions)
    captions = []
    first = None
    for scene, image in zip(scenes, images):
        res = pipe.generate(
            "Please describe this image in detail.", images=[image], max_new_tokens=24
        )
        first = first or res
        captions.append({"truth": scene.caption, "caption": res.text,
                         "right": res.text == scene.caption})  # fmt: skip
    codes = pipe.encode_image(images[0])
    recon = pipe.decode_codes(codes)
    prompts = [world.CLASSES[int(i)] for i in rng.permutation(len(world.CLASSES))[:n_generations]]
    generations, gen_images = [], []
    for scene in prompts:
        img = pipe.generate_image(scene.caption, cfg_scale=3.0, top_k=1, seed=seed)[0]
        got = world.classify(img)
        gen_images.append(img)
        generations.append(
            {"prompt": scene.caption, "classified": got.caption, "right": got == scene}
        )
        if progress is not None:
            progress()
    out.mkdir(parents=True, exist_ok=True)
    sheet = out / "contact_sheet.png"
    contact_sheet(
        [("input", [(Image.fromarray(im), c["caption"], c["right"])
                    for im, c in zip(images, captions)]),
         ("tokenizer", [(Image.fromarray(images[0]), "input", True),
                        (recon, "reconstruction", world.classify(recon) == scenes[0])]),
         ("generated", [(im, g["prompt"], g["right"])
                        for im, g in zip(gen_images, generations)])],
    ).save(sheet)  # fmt: skip
    return {
        "captions": captions,
        "caption_accuracy": sum(c["right"] for c in captions) / len(captions),
        "caption_tokens": first.token_ids,
        "codes_shape": list(codes.shape),
        "reconstruction_classified": world.classify(recon).caption,
        "generations": generations,
        "generation_accuracy": sum(g["right"] for g in generations) / len(generations),
        "outputs": {"contact_sheet": str(sheet)},
    }


def contact_sheet(rows: list[tuple[str, list[tuple[Image.Image, str, bool]]]]) -> Image.Image:
    """Rows of (title, [(image, label, right)]) -> one sheet; labels green if right, else red."""
    tile = 32 * SCALE
    title_w = 90
    width = title_w + max(len(r[1]) for r in rows) * (tile + 8)
    height = len(rows) * (tile + LABEL_H + 8)
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, (title, tiles) in enumerate(rows):
        y = r * (tile + LABEL_H + 8) + 4
        draw.text((4, y + tile // 2), title, fill=(0, 0, 0))
        for c, (image, label, right) in enumerate(tiles):
            x = title_w + c * (tile + 8)
            sheet.paste(image.convert("RGB").resize((tile, tile), Image.Resampling.NEAREST), (x, y))
            colour = (0, 120, 0) if right else (200, 0, 0)
            words = label.replace(" background", "").split(" on a ")
            for k, line in enumerate(words):
                draw.text((x, y + tile + 2 + 12 * k), line, fill=colour)
    return sheet
