"""Classify images of the shapes world with the non-learned classifier, or self-test it.

    python examples/shapes_world/classify.py IMAGE.png ...      # prints each image's caption
    python examples/shapes_world/classify.py --self-test [--per-class 50]

The classifier itself lives in the package (``vilau_rt.shapes_world.classify``).
"""

from __future__ import annotations

import argparse

from PIL import Image

from vilau_rt.shapes_world import classify, fresh_renders


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="classify shapes-world images")
    p.add_argument("images", nargs="*", help="32x32 PNG files")
    p.add_argument("--self-test", action="store_true", help="accuracy on fresh renders")
    p.add_argument("--per-class", type=int, default=50, help="self-test renders per class")
    p.add_argument("--seed", type=int, default=1, help="self-test seed")
    args = p.parse_args(argv)
    for path in args.images:
        print(f"{path}: {classify(Image.open(path).convert('RGB')).caption}")
    if args.self_test:
        scenes, images = fresh_renders(args.per_class, args.seed)
        wrong = [(s, classify(im)) for s, im in zip(scenes, images) if classify(im) != s]
        for truth, got in wrong:
            print(f"wrong: {truth.caption!r} read as {got.caption!r}")
        print(f"self-test: {len(scenes) - len(wrong)}/{len(scenes)} right")


if __name__ == "__main__":
    main()
