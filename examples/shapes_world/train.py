"""Train ``shapes-demo``, a tiny VILA-U, on the shapes world, and write it in the official layout.

    python examples/shapes_world/train.py --out vilau_rt/data/models/shapes-demo

retrains from scratch (fixed seeds) and replaces the shipped folder atomically. Two stages, both
on the runtime's own modules (``vilau_rt.model``), so the trained weights mean exactly what the
runtime computes:

1. Image tokenizer: SigLIP tower -> residual quantizer (straight-through estimator, codebook and
   commitment losses, data-initialised codebooks with dead-code restarts) -> pixel decoder,
   trained for reconstruction. The runtime's ``ResidualQuantizer.encode`` gives the same codes.
2. LLM + mm_projector + depth transformer (tower frozen), on both directions of VILA-U:
   understanding (vicuna_v1 prompt with the image's projected RVQ embeddings, several questions;
   answer = the caption + ``</s>``), and generation (the ``generate_image`` prompt ending in
   ``<im_start>``, then the image positions in raster order: input mm_projector(sum of code
   embeddings), target the D codes through the depth transformer), with unconditional rows
   so that classifier-free guidance works.

Measured on the development machine (2 shared CPU cores): see ``README.md`` in this folder.
"""

from __future__ import annotations

import argparse
import logging
import math
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from vilau_export.checkpoint_writer import write_checkpoint, write_tokenizer

from vilau_rt import shapes_world as world
from vilau_rt.model.builtin import resolve_checkpoint
from vilau_rt.model.config import VilaUConfig, resolve_siglip_config
from vilau_rt.model.depth import DepthTransformerConfig
from vilau_rt.model.llama import LlamaConfig
from vilau_rt.model.pixel_decoder import PixelDecoderConfig
from vilau_rt.model.projector import ProjectorConfig
from vilau_rt.model.rvq import RVQConfig
from vilau_rt.model.siglip import SiglipVisionConfig, normalize_uint8
from vilau_rt.model.vilau import VilaU
from vilau_rt.prompts import (
    IMAGE_PLACEHOLDER_ID,
    VICUNA_V1,
    build_generation_prompts,
    build_understanding_prompt,
    tokenize_with_images,
)
from vilau_rt.tokenizer import Tokenizer

log = logging.getLogger("shapes_world.train")

SIGLIP = "vilau-rt/siglip-tiny-p8-32"  # 32 px, 8 px patches: a 4x4 grid, C = 64
VOCAB = 512
QUESTIONS = (
    "Please describe this image in detail.",  # Pipeline.caption's default
    "What is in the image?",
    "What is shown in this image?",
    "Describe the image.",
    "What do you see?",
    "Caption this picture.",
)


def shapes_config() -> VilaUConfig:
    """The architecture of shapes-demo: VILA-U's parts at toy widths (LLM sizes multiples of 64
    so that AWQ with group 64 applies)."""
    siglip = resolve_siglip_config(SIGLIP)
    vision = SiglipVisionConfig.from_siglip_config(siglip)
    C, H = vision.hidden_size, 128
    llm = LlamaConfig(
        vocab_size=VOCAB, hidden_size=H, intermediate_size=384, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        rms_norm_eps=1e-5,
    )  # fmt: skip
    ddconfig = {
        "ch": 32, "ch_mult": [1, 1, 2, 2], "num_res_blocks": 1, "attn_resolutions": [],
        "z_channels": 64, "resolution": 32, "in_channels": 3, "out_ch": 3, "dropout": 0.0,
        "double_z": False,
    }  # fmt: skip
    return VilaUConfig(
        llm=llm,
        vision=vision,
        rvq=RVQConfig(n_embed=64, embed_dim=C, depth=4, grid=(vision.grid, vision.grid)),
        decoder=PixelDecoderConfig.from_ddconfig(ddconfig, C),
        depth=DepthTransformerConfig(128, 2, 4, 64, 4, C, H),
        projector=ProjectorConfig("mlp2x_gelu", C, H),
        siglip_name=SIGLIP,
        model_dtype="torch.float32",
        siglip_dict=siglip,
    ).validate()


def tokenizer_corpus() -> list[str]:
    """Every text the model reads or writes: the prompts of both directions and the captions."""
    lines = [VICUNA_V1.system]
    for scene in world.CLASSES:
        lines += [scene.caption, *build_generation_prompts(scene.caption)]
        lines += [f"{build_understanding_prompt(q)} {scene.caption}" for q in QUESTIONS]
    return lines


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def cosine_lr(step: int, steps: int, peak: float, warmup: int = 100) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


# -- stage 1: the image tokenizer ---------------------------------------------------------------


def quantize_ste(quantizer, feats: torch.Tensor):
    """RVQ of feats [N, C] with the runtime's argmin -> (z_q straight-through [N, C], codes
    [N, D], codebook loss, commitment loss, residual at each depth)."""
    residual = feats.detach()
    partial = torch.zeros_like(feats)
    cb_loss = commit = 0.0
    codes, residuals = [], []
    for d in range(quantizer.cfg.depth):
        table = quantizer.codebook(d)[:-1]
        residuals.append(residual)
        dist = (
            residual.pow(2).sum(1, keepdim=True)
            + table.pow(2).sum(1)[None]
            - 2 * residual @ table.detach().t()
        )
        code = dist.argmin(dim=-1)
        q = F.embedding(code, table)
        cb_loss = cb_loss + F.mse_loss(q, residual)
        partial = partial + q
        commit = commit + F.mse_loss(feats, partial.detach())
        residual = residual - q.detach()
        codes.append(code)
    z_q = feats + (partial - feats).detach()
    return z_q, torch.stack(codes, -1), cb_loss, commit, residuals


def train_image_tokenizer(model: VilaU, pixels: torch.Tensor, steps: int, batch: int, lr, gen):
    cfg = model.cfg
    h, w = cfg.grid
    params = [
        *model.vision_tower.parameters(),
        *model.quantizer.parameters(),
        *model.pixel_decoder.parameters(),
    ]
    peak = lr
    opt = torch.optim.AdamW(params, lr=peak, weight_decay=0.0, betas=(0.9, 0.99))
    n_embed, D = cfg.rvq.n_embed, cfg.rvq.depth
    usage = torch.zeros(D, n_embed)
    for step in range(steps):
        idx = torch.randint(0, len(pixels), (batch,), generator=gen)
        x = normalize_uint8(pixels[idx])
        feats = model.vision_tower(x).reshape(-1, cfg.rvq.embed_dim)  # [B*h*w, C]
        if step == 0:
            _init_codebooks(model.quantizer, feats.detach(), gen)
        z_q, codes, cb_loss, commit, residuals = quantize_ste(model.quantizer, feats)
        recon = model.pixel_decoder(z_q.view(batch, h, w, -1))
        rec = F.mse_loss(recon, x) + F.l1_loss(recon, x)
        loss = rec + cb_loss + 0.25 * commit
        lr = cosine_lr(step, steps, peak)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            for d in range(D):
                usage[d] += torch.bincount(codes[:, d], minlength=n_embed).float()
            if (step + 1) % 100 == 0 and step < 0.8 * steps:
                _restart_dead_codes(model.quantizer, usage, residuals, gen)
                usage.zero_()
        if step % 100 == 0 or step == steps - 1:
            log.info(
                "tokenizer step %4d  recon %.4f  codebook %.4f  commit %.4f  lr %.2e",
                step, rec.item(), cb_loss.item(), commit.item(), lr,
            )  # fmt: skip


@torch.no_grad()
def _init_codebooks(quantizer, feats: torch.Tensor, gen) -> None:
    """Each depth's codebook starts as random residuals of the first batch at that depth."""
    residual = feats.clone()
    for d in range(quantizer.cfg.depth):
        table = quantizer.codebook(d)
        pick = torch.randint(0, len(residual), (quantizer.cfg.n_embed,), generator=gen)
        table[:-1] = residual[pick]
        table[-1] = 0
        dist = torch.cdist(residual, table[:-1])
        residual -= table[dist.argmin(-1)]


@torch.no_grad()
def _restart_dead_codes(quantizer, usage, residuals, gen) -> None:
    """Codes unused for 100 steps move to random residuals of the current batch."""
    for d in range(quantizer.cfg.depth):
        dead = torch.nonzero(usage[d] == 0).flatten()
        if len(dead):
            src = residuals[d]
            pick = torch.randint(0, len(src), (len(dead),), generator=gen)
            noise = 0.01 * torch.randn(len(dead), src.shape[1], generator=gen)
            quantizer.codebook(d)[dead] = src[pick] + noise


# -- stage 2: LLM + projector + depth transformer ---------------------------------------------


class Samples:
    """Token ids of every prompt and answer, built with the runtime's prompt code."""

    def __init__(self, tok: Tokenizer):
        self.eos = tok.eos_id
        self.questions = []
        for q in QUESTIONS:
            ids = tokenize_with_images(tok, build_understanding_prompt(q, num_images=1))
            self.questions.append(ids)
        self.answers = []  # per class, per question: the answer ids (+ </s>)
        for scene in world.CLASSES:
            per_q = []
            for q, ids in zip(QUESTIONS, self.questions):
                full = tokenize_with_images(
                    tok, f"{build_understanding_prompt(q, num_images=1)} {scene.caption}"
                )
                if full[: len(ids)] != ids:
                    raise RuntimeError(f"the answer changes the prompt's ids for {q!r}")
                per_q.append(full[len(ids) :] + [self.eos])
            self.answers.append(per_q)
        self.cond = [
            tokenize_with_images(tok, build_generation_prompts(s.caption)[0]) for s in world.CLASSES
        ]
        self.uncond = tokenize_with_images(tok, build_generation_prompts("x")[1])


def build_batch(samples: Samples, labels, rng: np.random.Generator, n_und: int, p_uncond: float):
    """Rows 0..n_und-1 understanding, the rest generation. Returns ids [B, T] (placeholders 0),
    image slot index [B, T] (-1 = text; k = image position k of the row's image), text targets
    [B, T] (-100 = none), generation start per row (-1 for understanding rows)."""
    rows, slots, targets, gen_start = [], [], [], []
    n_pos = 16
    for r, label in enumerate(labels):
        if r < n_und:
            qi = int(rng.integers(len(samples.questions)))
            prompt, answer = samples.questions[qi], samples.answers[label][qi]
            ids, slot = [], []
            for t in prompt:
                if t == IMAGE_PLACEHOLDER_ID:
                    ids += [0] * n_pos
                    slot += list(range(n_pos))
                else:
                    ids.append(t)
                    slot.append(-1)
            tgt = [-100] * (len(ids) - 1) + answer
            ids += answer[:-1]
            slot += [-1] * (len(answer) - 1)
            gen_start.append(-1)
        else:
            prompt = samples.uncond if rng.random() < p_uncond else samples.cond[label]
            ids = list(prompt) + [0] * (n_pos - 1)
            slot = [-1] * len(prompt) + list(range(n_pos - 1))
            tgt = [-100] * len(ids)
            gen_start.append(len(prompt) - 1)  # hidden here predicts image position 0
        rows.append(ids)
        slots.append(slot)
        targets.append(tgt)
    T = max(len(r) for r in rows)
    pad = lambda x, v: [r + [v] * (T - len(r)) for r in x]
    return (
        torch.tensor(pad(rows, 0)),
        torch.tensor(pad(slots, -1)),
        torch.tensor(pad(targets, -100)),
        torch.tensor(gen_start),
    )


def train_llm(model: VilaU, samples, codes, labels, steps, batch, peak, rng):
    for part in (model.vision_tower, model.quantizer, model.pixel_decoder):
        part.requires_grad_(False)
    parts = (model.llm, model.mm_projector, model.depth_transformer)
    params = [p for part in parts for p in part.parameters()]
    opt = torch.optim.AdamW(params, lr=peak, weight_decay=0.01, betas=(0.9, 0.98))
    h, w = model.cfg.grid
    D = model.cfg.rvq.depth
    n_und = batch // 4  # understanding is learnt fast; generation needs most of the rows
    for step in range(steps):
        idx = rng.integers(0, len(codes), batch)
        c = codes[idx].view(batch, h * w, D)  # [B, P, D]
        ids, slot, tgt, gen_start = build_batch(samples, labels[idx], rng, n_und, 0.2)
        img = model.mm_projector(model.quantizer.embed_sum(c))  # [B, P, H]
        tok = model.llm.embed(ids)
        gathered = torch.gather(img, 1, slot.clamp(min=0)[..., None].expand(-1, -1, img.shape[-1]))
        x = torch.where((slot >= 0)[..., None], gathered, tok)
        pos = torch.arange(ids.shape[1])[None].expand(batch, -1)
        hidden = model.llm(x, pos)  # [B, T, H]
        answer = tgt[:n_und] >= 0  # lm_head only where an answer token is predicted
        text_loss = F.cross_entropy(model.llm.logits(hidden[:n_und][answer]), tgt[:n_und][answer])
        g_rows = torch.arange(n_und, batch)
        at = gen_start[n_und:, None] + torch.arange(h * w)[None]  # [G, P]
        hs = hidden[g_rows[:, None], at].flatten(0, 1)  # [G*P, H]
        gc = c[n_und:].flatten(0, 1)  # [G*P, D]
        logits = model.depth_transformer(hs, model.quantizer.embed(gc).cumsum(dim=-2))
        code_loss = F.cross_entropy(logits.flatten(0, 1), gc.flatten())
        loss = text_loss + code_loss
        lr = cosine_lr(step, steps, peak)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            log.info(
                "llm step %4d  text %.4f  codes %.4f  lr %.2e",
                step, text_loss.item(), code_loss.item(), lr,
            )  # fmt: skip


# -- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="checkpoint folder to (re)write")
    p.add_argument("--seed", type=int, default=0, help="seed of data, initialisation and order")
    p.add_argument("--images", type=int, default=20000, help="training renders")
    p.add_argument("--tokenizer-steps", type=int, default=700, help="stage 1 steps")
    p.add_argument("--llm-steps", type=int, default=3000, help="stage 2 steps")
    p.add_argument("--batch", type=int, default=32, help="batch size of both stages")
    p.add_argument("--tokenizer-from", help="skip stage 1: take the image tokenizer of this "
                   "checkpoint (for experiments on stage 2)")  # fmt: skip
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate of both stages")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1 is fastest on a shared 2-core machine)",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    t0, c0 = time.perf_counter(), cpu_seconds()
    cfg = shapes_config()
    model = VilaU(cfg)
    _init_weights(model, gen)

    scenes, images = world.sample(rng, args.images)
    labels = np.array([world.CLASSES.index(s) for s in scenes])
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # uint8 [N, 3, 32, 32]
    log.info("rendered %d images in %.1f s", len(images), time.perf_counter() - t0)

    model.train()
    if args.tokenizer_from:  # iterate on stage 2 only; the shipped model trains both stages
        from vilau_rt.model.checkpoint import load_vilau

        trained = load_vilau(resolve_checkpoint(args.tokenizer_from), dtype=torch.float32)
        for part in ("vision_tower", "quantizer", "pixel_decoder"):
            getattr(model, part).load_state_dict(getattr(trained, part).state_dict())
    else:
        train_image_tokenizer(model, pixels, args.tokenizer_steps, args.batch, args.lr, gen)
    t1, c1 = time.perf_counter(), cpu_seconds()
    log.info("stage 1 done: %.0f s wall, %.0f s CPU", t1 - t0, c1 - c0)

    model.eval()
    with torch.no_grad():
        codes = torch.cat([model.encode_images(normalize_uint8(b))[0] for b in pixels.split(512)])
    used = [len(torch.unique(codes[..., d])) for d in range(cfg.rvq.depth)]
    log.info("codes in use per depth: %s of %d", used, cfg.rvq.n_embed)
    _log_reconstruction(model, pixels[:240], labels[:240])

    tmp = Path(tempfile.mkdtemp(prefix="shapes-tok-"))
    try:
        corpus = tokenizer_corpus()
        write_tokenizer(tmp, cfg.llm.vocab_size, cfg.llm.context_length, corpus)
        tok = Tokenizer.from_folder(tmp)
        samples = Samples(tok)
        model.llm.train()
        train_llm(model, samples, codes, labels, args.llm_steps, args.batch, args.lr, rng)
        log.info("sequence lengths: understanding %d + answer, generation %d + %d",
                 len(samples.questions[0]) - 1 + model.cfg.tokens_per_image,
                 len(samples.cond[0]), model.cfg.tokens_per_image)  # fmt: skip
        model.eval()
        t2, c2 = time.perf_counter(), cpu_seconds()
        log.info("stage 2 done: %.0f s wall, %.0f s CPU", t2 - t1, c2 - c1)
        out = write_checkpoint(
            cfg, args.out, seed=args.seed, overwrite=True,
            weights=model.state_dict(), tokenizer_lines=corpus,
        )  # fmt: skip
        written = (out / "llm" / "tokenizer.model").read_bytes()
        if written != (tmp / "tokenizer.model").read_bytes():
            raise RuntimeError("the written tokenizer differs from the one trained with")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    log.info(
        "wrote %s (%.2f MB); total %.0f s wall, %.0f s CPU",
        out, size / 1e6, time.perf_counter() - t0, cpu_seconds() - c0,
    )  # fmt: skip
    return 0


@torch.no_grad()
def _init_weights(model: VilaU, gen: torch.Generator) -> None:
    """Small normal init for linears and embeddings (torch's defaults elsewhere)."""
    for name, p in model.named_parameters():
        if p.dim() >= 2 and "codebooks" not in name and "patch_embedding" not in name:
            if "conv" in name or p.dim() == 4:
                continue
            p.normal_(0.0, 0.02, generator=gen)
    model.depth_transformer.pos_emb_d.normal_(0.0, 0.02, generator=gen)


@torch.no_grad()
def _log_reconstruction(model: VilaU, pixels: torch.Tensor, labels) -> None:
    from vilau_rt.model.pixel_decoder import to_uint8

    codes, _ = model.encode_images(normalize_uint8(pixels))
    recon = to_uint8(model.decode_codes(codes))
    right = sum(world.classify(r) == world.CLASSES[int(k)] for r, k in zip(recon, labels))
    err = np.abs(recon.astype(np.float32) - pixels.permute(0, 2, 3, 1).numpy()).mean()
    log.info(
        "reconstructions: %d/%d classified right, mean abs error %.1f", right, len(pixels), err
    )


if __name__ == "__main__":
    sys.exit(main())
