"""Does a batched vision pass pay for `vilau-rt batch`? 32 images one at a time vs one pass.

python bench/batch_vision.py CKPT [--images 32] [--tokens 8] [--repeat 3]

encode:  32 x Pipeline.encode_image  vs  Pipeline.encode_images (one [32, 3, S, S] vision pass)
caption: 32 x Pipeline.caption       vs  Pipeline.caption_batch (one vision pass, then the LLM
         decodes each caption on its own); the vision share (stats["vision_ms"]) is printed too
Best of --repeat for each, interleaved; the first call of each kind is a warm-up.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from vilau_rt import Pipeline


def best_of(one, batched, repeat: int) -> tuple[float, float]:
    """Best wall seconds of each, the runs interleaved so that load from other processes on a
    shared machine falls on both alike; the best CPU seconds (this process, all threads) are
    printed too, as they depend less on that load."""
    one(), batched()  # warm-up
    wall, cpu = ([], []), ([], [])
    for _ in range(repeat):
        for i, fn in enumerate((one, batched)):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[i].append(time.perf_counter() - t0)
            cpu[i].append(time.process_time() - c0)
    print(f"  cpu s: one at a time {min(cpu[0]):.3f}, batched {min(cpu[1]):.3f}, "
          f"ratio {min(cpu[0]) / min(cpu[1]):.2f}x")  # fmt: skip
    return min(wall[0]), min(wall[1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("checkpoint")
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--tokens", type=int, default=8)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    pipe = Pipeline.from_pretrained(args.checkpoint, device="cpu")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(args.images)]
    n = args.images
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {n} images "
          f"of 48x64 -> {pipe.cfg.image_size} px")  # fmt: skip

    one, batched = best_of(
        lambda: [pipe.encode_image(im) for im in images],
        lambda: pipe.encode_images(images),
        args.repeat,
    )
    a = np.stack([pipe.encode_image(im) for im in images])
    b = pipe.encode_images(images)
    print(f"encode   one at a time {1000 * one / n:7.2f} ms/image   one batched pass "
          f"{1000 * batched / n:7.2f} ms/image   speed-up {one / batched:.2f}x   "
          f"codes differ: {int((a != b).sum())} of {a.size}")  # fmt: skip

    vision = []

    def captions():
        vision.clear()
        for im in images:
            pipe.caption(im, max_new_tokens=args.tokens)
            vision.append(pipe.stats.get("vision_ms", 0.0) / 1000)

    cap, cap_b = best_of(
        captions, lambda: pipe.caption_batch(images, max_new_tokens=args.tokens), args.repeat
    )
    share = sum(vision) / cap  # of the last one-at-a-time run
    same = pipe.caption_batch(images, max_new_tokens=args.tokens) == [
        pipe.caption(im, max_new_tokens=args.tokens) for im in images
    ]
    print(f"caption  one at a time {1000 * cap / n:7.2f} ms/image ({args.tokens} tokens, vision "
          f"share {100 * share:.1f}%)   caption_batch {1000 * cap_b / n:7.2f} ms/image   "
          f"speed-up {cap / cap_b:.2f}x   same captions: {same}")  # fmt: skip


if __name__ == "__main__":
    main()
