"""NativeBackend against the torch reference backend and the official fixture (CPU; CUDA with
graphs on a GPU machine): greedy tokens and codes identical, the depth op equal to
DepthTransformer.generate, seeded sampling reproducible."""

from __future__ import annotations

import functools
import logging
import sys

import pytest
import torch
from fixture_runs import gen_inputs, greedy_caption, ref

from vilau_rt.backends import TorchBackend
from vilau_rt.backends.native_backend import CodeSampling, NativeBackend
from vilau_rt.generate import ImageSettings, generate_codes
from vilau_rt.model.checkpoint import load_vilau
from vilau_rt.ops import kernels
from vilau_rt.ops import native as native_ops
from vilau_rt.sampling import sample_codes

DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
    ),
]


def _load(root, device):
    return load_vilau(root, device=device, siglip_config=root / "reference" / "siglip_config")


@pytest.fixture(scope="module")
def fixture_model(tiny_fixture):
    return _load(tiny_fixture, "cpu")


@pytest.fixture(scope="module", params=DEVICES)
def model(request, tiny_fixture, fixture_model):
    return fixture_model if request.param == "cpu" else _load(tiny_fixture, request.param)


def image_loop(backend, ids, mask, pos, num_positions, cfg_scale, sample):
    """generate_codes' loop with the sampler passed through unchanged (generate_codes wraps
    its sampler in a closure, which the native backend can only run eagerly)."""
    B, T = ids.shape
    dev = backend.device
    backend.setup_cache(B, T + num_positions)
    key_valid = torch.ones(B, T + num_positions, dtype=torch.bool, device=dev)
    key_valid[:, :T] = mask.bool()
    hidden = backend.forward(backend.embed_tokens(ids.clamp(min=0)), pos, 0, key_valid)[:, -1]
    rope, cache_pos, out = pos[:, -1:] + 1, T, []
    for i in range(num_positions):
        codes, nxt = backend.depth_generate(hidden, cfg_scale, sample)
        out.append(codes)
        if i + 1 < num_positions:
            x = nxt.repeat(2, 1).unsqueeze(1)
            hidden = backend.forward(x, rope, cache_pos, key_valid)[:, -1]
            rope, cache_pos = rope + 1, cache_pos + 1
    return torch.stack(out, dim=1)


# ---------------------------------------------------------------- understanding


def test_encoded_codes_equal_the_official_codes(model, tiny_fixture):
    native = NativeBackend.from_model(model)
    pixels = ref(tiny_fixture, "pixel_values.npy").to(model.device)
    codes, embeds = native.encode_images(pixels)
    assert torch.equal(codes.cpu(), ref(tiny_fixture, "codes.npy"))
    _, torch_embeds = TorchBackend(model).encode_images(pixels)
    torch.testing.assert_close(embeds, torch_embeds, rtol=1e-5, atol=1e-5)


def test_decoded_pixels_match_the_torch_backend(model, tiny_fixture):
    codes = ref(tiny_fixture, "codes.npy").to(model.device)
    raw = NativeBackend.from_model(model).decode_codes(codes)
    assert float((raw - TorchBackend(model).decode_codes(codes)).abs().max()) < 1e-4


def test_greedy_text_tokens_equal_the_torch_backend(model, tiny_fixture):
    native = greedy_caption(NativeBackend.from_model(model), tiny_fixture)
    assert native == greedy_caption(TorchBackend(model), tiny_fixture)
    assert native == ref(tiny_fixture, "und_greedy_ids.npy")[0, 1:].tolist()


# ---------------------------------------------------------------- generation


def test_greedy_image_codes_through_generate_codes_equal_torch(model, tiny_fixture, caplog):
    ids, mask, pos = gen_inputs(tiny_fixture, model.device)
    settings = ImageSettings(cfg_scale=3.0, top_k=1)
    expected = generate_codes(TorchBackend(model), ids, mask, pos, 16, settings)
    native = NativeBackend.from_model(model)
    with caplog.at_level(logging.WARNING):
        codes = generate_codes(native, ids, mask, pos, 16, settings)
    assert torch.equal(codes, expected)
    assert torch.equal(codes.view(4, 4, 4).cpu(), ref(tiny_fixture, "gen_codes.npy"))
    # generate_codes hands over the sampling settings (a CodeSampler): the device sampler runs
    assert native.stats["depth_path"].startswith("device sampler")
    assert "cannot run on the device" not in caplog.text


def test_device_sampler_greedy_image_equals_the_official_codes(model, tiny_fixture):
    ids, mask, pos = gen_inputs(tiny_fixture, model.device)
    native = NativeBackend.from_model(model)
    greedy = functools.partial(sample_codes, temperature=1.0, top_k=1, top_p=0.96)
    codes = image_loop(native, ids, mask, pos, 16, 3.0, greedy)
    assert native.stats["depth_path"].startswith("device sampler")
    assert torch.equal(codes.view(4, 4, 4).cpu(), ref(tiny_fixture, "gen_codes.npy"))


def test_depth_decode_op_equals_depth_transformer_generate(model):
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(6, model.cfg.llm.hidden_size, generator=g).to(model.device)
    expected, _ = TorchBackend(model).depth_generate(
        hidden, 2.0, functools.partial(sample_codes, top_k=1)
    )
    codes = native_ops.depth_decode(
        hidden,
        native_ops.depth_weights(model.depth_transformer),
        model.quantizer.stacked_codebooks(),
        model.cfg.depth.n_head,
        2.0,
        top_k=1,
    )
    assert codes.shape == (3, model.cfg.rvq.depth) and torch.equal(codes, expected)


def depth_logits(hidden, run) -> list[torch.Tensor]:
    """The raw logits of every depth that ``run(hidden, on_logits)`` reports."""
    out = []
    run(hidden, lambda d, lg: out.append(lg.clone()))
    return out


@pytest.mark.parametrize("rows", [2, 6])
def test_depth_loop_logits_follow_the_depth_transformer_on_the_cpu(fixture_model, rows):
    """The CPU depth loop runs its linears through native.linear (our GEMV for a CFG pair, the
    GEMM above 4 rows): other summation orders than torch's BLAS, the same values to float32
    rounding at every depth."""
    model = fixture_model
    hidden = torch.randn(rows, model.cfg.llm.hidden_size,
                         generator=torch.Generator().manual_seed(rows))  # fmt: skip
    greedy = functools.partial(sample_codes, top_k=1)
    expected = depth_logits(
        hidden, lambda h, cb: TorchBackend(model).depth_generate(h, 2.0, greedy, cb)
    )
    ours = depth_logits(
        hidden, lambda h, cb: native_ops.depth_loop(
            h, native_ops.depth_weights(model.depth_transformer),
            model.quantizer.stacked_codebooks(), model.cfg.depth.n_head, 2.0, 1.0, 1, 1.0,
            native_ops.rng_state(0, 0, "cpu"), cb,
        ),
    )  # fmt: skip
    assert len(ours) == len(expected) == model.cfg.rvq.depth
    for d, (a, b) in enumerate(zip(ours, expected)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=f"depth {d}")


def test_an_opaque_sampler_runs_in_the_native_depth_loop(fixture_model, caplog):
    """A sampler the device cannot run (any callable) is called by native.depth_loop on the
    guided logits, as DepthTransformer.generate calls it: the torch backend's codes, and the
    same raw logits and next embeddings to float32 rounding."""
    model = fixture_model
    hidden = torch.randn(4, model.cfg.llm.hidden_size, generator=torch.Generator().manual_seed(9))
    seen = []

    def pick(guided):  # a plain callable: greedy, and it records what it was given
        seen.append(guided.clone())
        return guided.argmax(dim=-1)

    native = NativeBackend.from_model(model)
    native.setup_cache(4, 4)
    got_logits, want_logits = [], []
    with caplog.at_level(logging.WARNING):
        codes, nxt = native.depth_generate(hidden, 2.5, pick, lambda d, lg: got_logits.append(lg))
    assert native.stats["depth_path"] == "opaque sampler, eager"
    assert "cannot run on the device" in caplog.text
    ours = seen[:]
    seen.clear()
    want, want_nxt = TorchBackend(model).depth_generate(
        hidden, 2.5, pick, lambda d, lg: want_logits.append(lg)
    )
    assert torch.equal(codes, want) and len(ours) == len(seen) == model.cfg.rvq.depth
    for a, b in [*zip(got_logits, want_logits), *zip(ours, seen), (nxt, want_nxt)]:
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_seeded_image_sampling_is_reproducible(model, tiny_fixture):
    ids, mask, pos = gen_inputs(tiny_fixture, model.device)
    native = NativeBackend.from_model(model)

    def run(seed):
        sampling = CodeSampling(temperature=1.0, top_k=50, top_p=0.9, seed=seed)
        return image_loop(native, ids, mask, pos, 16, 3.0, sampling)

    a, b, c = run(5), run(5), run(6)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert ((a >= 0) & (a < model.cfg.rvq.n_embed)).all()


def test_generator_seed_drives_the_device_sampler(model):
    hidden = torch.randn(4, model.cfg.llm.hidden_size, generator=torch.Generator().manual_seed(1))
    hidden = hidden.to(model.device)
    native = NativeBackend.from_model(model)

    def draw(seed):
        native.setup_cache(4, 8)  # resets the position counter
        sample = functools.partial(
            sample_codes, top_k=64, top_p=0.95, generator=torch.Generator().manual_seed(seed)
        )
        return native.depth_generate(hidden, 3.0, sample)[0]

    assert torch.equal(draw(3), draw(3))
    assert not torch.equal(draw(3), draw(4))


def test_quantize_llm_swaps_in_w4a16_and_follows_the_dequantized_model(tiny_fixture):
    from vilau_rt.model.awq import W4A16Linear

    model = _load(tiny_fixture, "cpu")
    native = NativeBackend.from_model(model, quantize_llm=True, group_size=32)
    layer = model.llm.model.layers[0]
    assert isinstance(layer.self_attn.q_proj, W4A16Linear)
    assert isinstance(layer.mlp.down_proj, W4A16Linear)
    assert native.stats["llm_weights"] == "W4A16 RTN g32"
    # reference: the same model with each W4A16Linear replaced by its dequantized float linear
    reference = _load(tiny_fixture, "cpu")
    for name, mod in model.llm.named_modules():
        if isinstance(mod, W4A16Linear):
            parent, child = name.rsplit(".", 1)
            w = torch.ops.vilau.w4a16_dequantize(
                mod.qweight, mod.qzeros, mod.scales, mod.group_size, torch.float32
            )
            getattr(reference.llm.get_submodule(parent), child).weight.data = w.t().contiguous()
    embeds = torch.randn(
        1, 5, model.cfg.llm.hidden_size, generator=torch.Generator().manual_seed(2)
    )
    rope = torch.arange(5)[None]
    native.setup_cache(1, 5)
    TorchBackend(reference).setup_cache(1, 5)
    out = native.forward(embeds, rope, 0)
    ref_out = TorchBackend(reference).forward(embeds, rope, 0)
    torch.testing.assert_close(out, ref_out, rtol=1e-4, atol=1e-4)
    # decode steps (the fused packed q/k/v and gate/up GEMVs), one row and a CFG pair
    step = embeds[:, :1] * 0.5
    native.setup_cache(1, 6)
    TorchBackend(reference).setup_cache(1, 6)
    native.forward(embeds, rope, 0)
    TorchBackend(reference).forward(embeds, rope, 0)
    out = native.forward(step, torch.tensor([[5]]), 5)
    ref_out = TorchBackend(reference).forward(step, torch.tensor([[5]]), 5)
    torch.testing.assert_close(out, ref_out, rtol=1e-4, atol=1e-4)
    assert native._fused[0].qkv.packed is not None  # the fused INT4 path ran, not the layers
    pair = torch.cat([embeds[:, :3], embeds[:, 2:5]])
    native.setup_cache(2, 3)
    TorchBackend(reference).setup_cache(2, 3)
    torch.testing.assert_close(
        native.forward(pair, torch.arange(3).expand(2, 3), 0),
        TorchBackend(reference).forward(pair, torch.arange(3).expand(2, 3), 0),
        rtol=1e-4, atol=1e-4,
    )  # fmt: skip


def _int8_activations(x: torch.Tensor) -> torch.Tensor:
    """x rounded as csrc/w4a8/w4a8.h rounds it (per block of 32: int8 against max |x|), in
    float64."""
    xb = x.float().reshape(*x.shape[:-1], -1, 32)
    amax = xb.abs().amax(-1, keepdim=True)
    inv = torch.where(amax > 0, 127 / amax, torch.zeros_like(amax))
    xq = torch.round(xb * inv).clamp(-127, 127)
    return (xq.double() * (amax / 127).double()).reshape(x.shape)


@torch.no_grad()
def test_int8_activations_follows_an_int8_activation_emulation_of_the_int4_model(tiny_fixture):
    """int8_activations: prefill of a prompt (op-by-op W4A8), decode steps (the C++ decoder's
    W4A8 parts) and the lm_head (W8A8) against the torch backend on a copy of the model whose
    INT4 linears and lm_head compute in float64 on int8-rounded inputs (the header's arithmetic
    written independently), and away from the exact INT4 model."""
    from vilau_rt.model.awq import W4A16Linear
    from vilau_rt.model.awq_format import unpack_gemm

    model = _load(tiny_fixture, "cpu")
    native = NativeBackend.from_model(
        model, quantize_llm=True, group_size=32, int8_activations=True
    )
    assert native.stats["llm_weights"] == "W4A16 RTN g32, int8 activations (W4A8)"
    assert "W8A8" in native.stats["lm_head"] and native._decoder is not None
    exact = NativeBackend.from_model(model)  # the same INT4 layers, exact
    reference = _load(tiny_fixture, "cpu")

    def emulate(weight_kn: torch.Tensor):
        return lambda _m, inputs, _out: (_int8_activations(inputs[0]) @ weight_kn).float()

    for name, mod in model.llm.named_modules():
        if isinstance(mod, W4A16Linear):
            codes, zeros = unpack_gemm(mod.qweight, mod.qzeros)
            g = mod.group_size
            w = (
                codes.double() - zeros.double().repeat_interleave(g, 0)
            ) * mod.scales.double().repeat_interleave(g, 0)  # [K, N], unrounded
            reference.llm.get_submodule(name).register_forward_hook(emulate(w))
    codes, scale = native_ops.quantize_rows_int8(model.llm.lm_head.weight)
    reference.llm.lm_head.register_forward_hook(
        emulate((codes.double() * scale.double()[:, None]).T)
    )
    torch_ref = TorchBackend(reference)
    # a prompt of 70 rows: more than the exact path's BLAS threshold, W4A8 all the same
    T = kernels.W4A16_CPU_BLAS_MIN_M + 5
    embeds = torch.randn(
        1, T, model.cfg.llm.hidden_size, generator=torch.Generator().manual_seed(2)
    )
    rope = torch.arange(T)[None]
    for backend in (native, torch_ref, exact):
        backend.setup_cache(1, T + 3)
    out = native.forward(embeds, rope, 0)
    ref_out = torch_ref.forward(embeds, rope, 0)
    torch.testing.assert_close(out, ref_out, rtol=1e-4, atol=1e-4)
    step = embeds[:, :1] * 0.5
    got = native.logits(native.forward(step, torch.tensor([[T]]), T)[:, -1])
    want = torch_ref.logits(torch_ref.forward(step, torch.tensor([[T]]), T)[:, -1])
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    exact.forward(embeds, rope, 0)
    exact_logits = exact.logits(exact.forward(step, torch.tensor([[T]]), T)[:, -1])
    assert (exact_logits - got).abs().max() > 10 * 1e-4  # the test can tell the two apart


def test_int8_activations_is_refused_where_it_cannot_run(tiny_fixture):
    from vilau_rt import Pipeline
    from vilau_rt.errors import BackendError

    with pytest.raises(BackendError, match="no INT4 layers"):
        NativeBackend(_load(tiny_fixture, "cpu"), int8_activations=True)
    with pytest.raises(BackendError, match="int8_activations runs on backend 'native'"):
        Pipeline.from_pretrained(tiny_fixture, backend="torch", device="cpu", int8_activations=True)


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


@pytest.mark.skipif(sys.platform != "linux", reason="reads VmRSS from /proc/self/status")
def test_cpu_kv_cache_is_zero_and_costs_memory_only_where_written():
    """The CPU cache is mapped lazily: 512 MiB of cache in a [B, heads, L, head_dim] layout grows
    the process by the pages of the slots written, not by the whole context; reads are zeros."""
    from vilau_rt.backends.native_backend import _zeros

    before = _rss_mib()
    caches = [_zeros((1, 32, 4096, 128), torch.float32, torch.device("cpu")) for _ in range(8)]
    assert all(c.shape == (1, 32, 4096, 128) and c.dtype == torch.float32 for c in caches)
    for c in caches:
        c[:, :, :64] = 1.0  # a 64-token prompt in every layer: 64 slots x 32 heads
    grown = _rss_mib() - before
    assert grown < 128, f"{grown:.0f} MiB committed for 8 x 64 slots of a 512 MiB cache"
    assert float(caches[3][:, :, 64:].abs().max()) == 0.0
    assert float(caches[3][:, :, :64].min()) == 1.0
    small = _zeros((2, 3), torch.bfloat16, torch.device("cpu"))
    assert small.dtype == torch.bfloat16 and not small.float().any()


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_cpu_kv_cache_is_private_to_a_forked_process():
    """A server that forks workers after loading must not share one KV cache between them: a
    child's write stays in the child (copy on write, as for any private memory)."""
    import ctypes
    import os

    from vilau_rt.backends.native_backend import _zeros

    cache = _zeros((1, 8, 1024, 64), torch.float32, torch.device("cpu"))
    cache[0, 0, 0, 0] = 1.0
    pid = os.fork()
    if pid == 0:  # the child writes raw bytes (no torch call after fork) and leaves at once
        ctypes.memset(cache.data_ptr(), 0x7F, 4096)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert float(cache[0, 0, 0, 0]) == 1.0 and float(cache[0, 0, 0, 1:].abs().max()) == 0.0
