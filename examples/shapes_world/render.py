"""Render samples of the shapes world into a folder of PNGs (one per class, caption as name).

    python examples/shapes_world/render.py --out shapes_samples [--per-class 2] [--seed 0]

The renderer itself lives in the package (``vilau_rt.shapes_world``), because ``vilau-rt demo``
and the yardstick need it at runtime.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from vilau_rt.shapes_world import fresh_renders


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="render the shapes world to PNG files")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--per-class", type=int, default=1, help="images per class (24 classes)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scenes, images = fresh_renders(args.per_class, args.seed)
    for i, (scene, image) in enumerate(zip(scenes, images)):
        Image.fromarray(image).save(out / f"{i:03d}_{scene.caption.replace(' ', '_')}.png")
    print(f"wrote {len(images)} images to {out}")


if __name__ == "__main__":
    main()
