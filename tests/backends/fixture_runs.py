"""The official tiny fixture's reference inputs, and the runs the backend tests make on them."""

from __future__ import annotations

import numpy as np
import torch

from vilau_rt.generate import TextSettings, generate_text, splice_images


def ref(root, name):
    """A reference array of the fixture at ``root`` as a tensor."""
    return torch.from_numpy(np.load(root / "reference" / name))


def gen_inputs(root, device):
    """(ids, mask, position ids) of the fixture's CFG generation prompt on ``device``."""
    ids = ref(root, "gen_input_ids.npy").to(device)
    mask = ref(root, "gen_attention_mask.npy").to(device)
    pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    return ids, mask, pos


def greedy_caption(backend, root, new_tokens: int = 12) -> list[int]:
    """The greedy tokens ``backend`` answers the fixture's understanding prompt with (its first
    image spliced in; EOS, id 2, ends them)."""
    pixels = ref(root, "pixel_values.npy")[:1].to(backend.device)
    ids = ref(root, "und_input_ids.npy")[0].tolist()
    _, img = backend.encode_images(pixels)
    embeds = splice_images(backend, ids, [img[0]])
    settings = TextSettings(max_new_tokens=new_tokens)
    return list(generate_text(backend, embeds, settings, eos_id=2))
