"""The C++ CPU decode step (csrc/decode, ``CpuDecoder``) against transformers' LlamaForCausalLM:
every token of a sequence fed through the decoder one step at a time must give the logits of
transformers' full forward, for MHA and GQA, batches of several rows, left padding, and AWQ INT4
weights (reference: transformers with the dequantized weights), and the opt-in W4A8 layers
(reference: transformers whose linears quantize their input to int8 as csrc/w4a8/w4a8.h says,
emulated here in float64)."""

from __future__ import annotations

import pytest
import torch

from vilau_rt.backends.cpu_decoder import CpuDecoder
from vilau_rt.backends.native_linears import _FusedLayer, quantize_llm_linears
from vilau_rt.model.awq import W4A16Linear
from vilau_rt.model.awq_format import dequantize_gemm, unpack_gemm
from vilau_rt.model.linear16 import keep_linears_16bit
from vilau_rt.model.llama import LlamaConfig, LlamaForCausalLM, RotaryEmbedding
from vilau_rt.ops import kernels, w4a8

transformers = pytest.importorskip("transformers")


def _pair(n_kv=4, seed=0):
    cfg = LlamaConfig(
        vocab_size=101, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=n_kv, max_position_embeddings=64,
        rms_norm_eps=1e-5,
    )  # fmt: skip
    hf_cfg = transformers.LlamaConfig(**{k: v for k, v in cfg.to_hf().items() if k != "extra"})
    hf_cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    hf = transformers.LlamaForCausalLM(hf_cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0, 0.2)
    ours = LlamaForCausalLM(cfg)
    ours.load_state_dict(hf.state_dict(), strict=False)
    return cfg, hf, ours.eval()


class _Run:
    """A decoder over ``llm`` with its own cache, fed one token per row per step."""

    def __init__(self, llm, batch, length, w4a8_layers=None):
        self.llm = llm
        self.fused = [_FusedLayer.of(layer) for layer in llm.model.layers]
        self.decoder, why = CpuDecoder.of(llm, self.fused, w4a8_layers)
        assert self.decoder is not None, why
        c = llm.config
        shape = (batch, c.num_key_value_heads, length, c.head_dim)
        self.k = [torch.zeros(shape) for _ in range(c.num_hidden_layers)]
        self.v = [torch.zeros(shape) for _ in range(c.num_hidden_layers)]
        self.decoder.set_cache(self.k, self.v)
        rotary = RotaryEmbedding(c)
        rotary.build(max(length, c.max_position_embeddings), torch.device("cpu"))
        self.cos, self.sin = rotary.cos, rotary.sin
        self.valid = torch.ones(batch, length, dtype=torch.bool)

    @torch.no_grad()
    def logits(self, ids, pos):
        """ids, pos [B, S] -> logits [B, S, V], slot t for token t."""
        steps = []
        for t in range(ids.shape[1]):
            x = self.llm.embed(ids[:, t : t + 1])
            p = pos[:, t]
            h = self.decoder.step(x, self.cos[p], self.sin[p], self.valid, t)
            steps.append(self.llm.logits(h))
        return torch.cat(steps, 1)


@pytest.mark.parametrize("n_kv,batch", [(4, 1), (2, 1), (2, 3), (4, 4)])
def test_decode_steps_match_transformers(n_kv, batch):
    cfg, hf, ours = _pair(n_kv)
    ids = torch.randint(0, cfg.vocab_size, (batch, 18), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(ids).logits
    got = _Run(ours, batch, 24).logits(ids, torch.arange(18).expand(batch, 18))
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


def test_left_padded_row_matches_it_run_alone():
    """Slots marked invalid are not attended: a row padded by 5 gives the unpadded logits."""
    cfg, hf, ours = _pair(n_kv=2)
    g = torch.Generator().manual_seed(3)
    short = torch.randint(3, cfg.vocab_size, (1, 7), generator=g)
    long = torch.randint(3, cfg.vocab_size, (1, 12), generator=g)
    ids = torch.cat([torch.cat([torch.zeros(1, 5, dtype=torch.long), short], 1), long])
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[0, :5] = False
    pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
    run = _Run(ours, 2, 12)
    run.valid.copy_(mask)
    got = run.logits(ids, pos)
    with torch.no_grad():
        torch.testing.assert_close(got[0, 5:], hf(short).logits[0], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(got[1], hf(long).logits[0], rtol=1e-4, atol=1e-4)


@torch.no_grad()
def test_w4a16_decode_steps_match_transformers_on_the_dequantized_weights():
    cfg, hf, ours = _pair(n_kv=2)
    quantize_llm_linears(ours, group_size=32)
    for name, module in ours.named_modules():  # the reference gets AutoAWQ's fp16 dequantization
        if isinstance(module, W4A16Linear):
            w_t = dequantize_gemm(module.qweight, module.qzeros, module.scales, 32, torch.float16)
            hf.get_submodule(name).weight.copy_(w_t.t().float())
    ids = torch.randint(0, cfg.vocab_size, (2, 16), generator=torch.Generator().manual_seed(5))
    run = _Run(ours, 2, 16)
    assert run.decoder.max_batch == 64  # every layer linear is packed W4A16
    got = run.logits(ids, torch.arange(16).expand(2, 16))
    torch.testing.assert_close(got, hf(ids).logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@torch.no_grad()
def test_16bit_decode_steps_match_transformers_on_the_upcast_weights(dtype):
    """Linear16 layers (16-bit weights kept as stored) run the 16-bit GEMV; the reference is
    transformers with the same weights rounded to dtype and held in float32."""
    cfg, hf, ours = _pair(n_kv=2)
    state = dict(ours.named_modules())
    stored = {f"{n}.weight": dtype for n, m in state.items() if type(m) is torch.nn.Linear}
    old = {n: m for n, m in state.items() if type(m) is torch.nn.Linear}
    assert keep_linears_16bit(ours, stored)
    for name, lin in old.items():
        new = ours.get_submodule(name)
        new.weight.copy_(lin.weight.to(dtype))
        hf.get_submodule(name).weight.copy_(lin.weight.to(dtype).float())
    ids = torch.randint(0, cfg.vocab_size, (2, 16), generator=torch.Generator().manual_seed(5))
    run = _Run(ours, 2, 16)
    assert run.decoder.max_batch == 4  # the 16-bit GEMV serves up to 4 rows, as float32 does
    got = run.logits(ids, torch.arange(16).expand(2, 16))
    torch.testing.assert_close(got, hf(ids).logits, rtol=1e-4, atol=1e-4)


def test_a_16bit_linear_must_be_float16_or_bfloat16():
    ext = kernels._native()
    w = torch.zeros(64, 64, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="DecodeLinear.w16 w_dtype"):
        ext.DecodeLinear.w16(w.data_ptr(), 7, 0, 64, 64)
    norm = torch.ones(64)
    n = norm.data_ptr()
    dec = ext.LlamaDecoder(64, 4, 4, 16, 160, 1e-5, n)
    f32 = {(r, k): torch.zeros(r, k) for r, k in [(192, 64), (320, 64), (64, 160)]}

    def lin(r, k):
        return ext.DecodeLinear.float32(f32[(r, k)].data_ptr(), 0, r, k)

    bad = ext.DecodeLinear.w16(w.data_ptr(), 0, 0, 64, 64)  # code 0: float32
    with pytest.raises(ValueError, match="layer 0 o_proj: a 16-bit weight must be float16 or "
                       "bfloat16, not float32"):  # fmt: skip
        dec.add_layer(n, n, [lin(192, 64)], bad, [lin(320, 64)], lin(64, 160))
    with pytest.raises(ValueError, match="weight"):
        ext.DecodeLinear.w16(0, 2, 0, 64, 64)


def _w4a8_emulation(module: W4A16Linear):
    """The W4A8 linear in float64, from the header's definition: each block of 32 inputs rounded
    to int8 against its own max |x|, times the unrounded (code - zero) * scale."""
    codes, zeros = unpack_gemm(module.qweight, module.qzeros)
    g = module.group_size
    w = (
        codes.double() - zeros.double().repeat_interleave(g, 0)
    ) * module.scales.double().repeat_interleave(g, 0)  # [K, N]

    def hook(_, inputs, _out):
        x = inputs[0].float()
        xb = x.reshape(*x.shape[:-1], -1, 32)
        amax = xb.abs().amax(-1, keepdim=True)
        inv = torch.where(amax > 0, 127 / amax, torch.zeros_like(amax))
        xq = torch.round(xb * inv).clamp(-127, 127)
        x_deq = (xq.double() * (amax / 127).double()).reshape(x.shape)
        return (x_deq @ w).float()

    return hook


@torch.no_grad()
def test_w4a8_decode_steps_match_an_int8_activation_emulation_of_transformers():
    cfg, hf, ours = _pair(n_kv=2)
    quantize_llm_linears(ours, group_size=32)
    layers = {}
    for name, module in ours.named_modules():
        if isinstance(module, W4A16Linear):
            layers[module] = w4a8.W4A8Weights.from_awq(
                module.qweight, module.qzeros, module.scales, module.bias, module.group_size
            )
            hf.get_submodule(name).register_forward_hook(_w4a8_emulation(module))
    ids = torch.randint(0, cfg.vocab_size, (2, 16), generator=torch.Generator().manual_seed(5))
    run = _Run(ours, 2, 16, layers)
    got = run.logits(ids, torch.arange(16).expand(2, 16))
    ref = hf(ids).logits
    # float32 noise (measured 5e-7 here); an activation that the two float32 computations round
    # to different int8 values would move an output by ~d * |w| and fail this seed loudly
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    # ... and the emulation is a different model from W4A16 (measured 0.014 apart): the test
    # would see the decoder running the exact layers instead
    exact = _Run(ours, 2, 16).logits(ids, torch.arange(16).expand(2, 16))
    assert (exact - got).abs().max() > 10 * 1e-4


def test_a_bfloat16_model_is_refused_with_the_reason():
    _, _, ours = _pair()
    ours = ours.to(torch.bfloat16)
    decoder, why = CpuDecoder.of(ours, [_FusedLayer.of(layer) for layer in ours.model.layers])
    assert decoder is None and "bfloat16" in why and "float32" in why


def test_bad_sizes_name_the_layer_and_the_linear():
    ext = kernels._native()
    norm = torch.ones(64)
    dec = ext.LlamaDecoder(64, 4, 4, 16, 160, 1e-5, norm.data_ptr())
    w = {(n, k): torch.zeros(n, k) for n, k in [(192, 64), (64, 64), (320, 64), (64, 160)]}

    def lin(n, k):
        return ext.DecodeLinear.float32(w[(n, k)].data_ptr(), 0, n, k)

    n = norm.data_ptr()
    with pytest.raises(ValueError, match=r"layer 0 o_proj is \[64, 32\]"):
        dec.add_layer(n, n, [lin(192, 64)], ext.DecodeLinear.float32(w[(64, 64)].data_ptr(), 0,
                      64, 32), [lin(320, 64)], lin(64, 160))  # fmt: skip
    with pytest.raises(ValueError, match="layer 0 q/k/v has 128 output rows in all; .* 192"):
        dec.add_layer(n, n, [lin(64, 64), lin(64, 64)], lin(64, 64), [lin(320, 64)], lin(64, 160))
    with pytest.raises(ValueError, match="layer 0 gate/up has 0 parts"):
        dec.add_layer(n, n, [lin(192, 64)], lin(64, 64), [], lin(64, 160))
    buf = torch.zeros(64 * 64)  # W4A8 parts: N % 16, G % 32, no mixing with other kinds
    ptr = buf.data_ptr()
    with pytest.raises(ValueError, match="layer 0 q/k/v part 1: w4a8: N must be a multiple of 16"):
        dec.add_layer(n, n, [ext.DecodeLinear.w4a8(ptr, ptr, ptr, 0, rows, 64, 32)
                             for rows in (176, 8, 8)],
                      lin(64, 64), [lin(320, 64)], lin(64, 160))  # fmt: skip
    with pytest.raises(ValueError, match="W4A8 parts cannot be mixed"):
        dec.add_layer(n, n, [ext.DecodeLinear.w4a8(ptr, ptr, ptr, 0, 128, 64, 32), lin(64, 64)],
                      lin(64, 64), [lin(320, 64)], lin(64, 160))  # fmt: skip
    dec.add_layer(n, n, [lin(192, 64)], lin(64, 64), [lin(320, 64)], lin(64, 160))
    x = torch.zeros(1, 64)
    cs = torch.zeros(1, 16)
    valid = torch.ones(1, 8, dtype=torch.bool)
    args = (x.data_ptr(), x.data_ptr(), 1, cs.data_ptr(), cs.data_ptr(), valid.data_ptr(), 8)
    with pytest.raises(ValueError, match="layer 0 cache"):
        dec.step(*args, 0, 1)  # no cache yet
    k = torch.zeros(1, 4, 8, 16)
    dec.set_cache(0, k.data_ptr(), k.data_ptr(), 1, 8)
    with pytest.raises(ValueError, match="slot 8"):
        dec.step(*args, 8, 1)
    with pytest.raises(ValueError, match="batch 5 outside 1..4"):
        dec.step(x.data_ptr(), x.data_ptr(), 5, cs.data_ptr(), cs.data_ptr(), valid.data_ptr(),
                 8, 0, 1)  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, None])
def test_lm_head_saved_in_16_bits_is_read_in_16_bits_with_the_same_logits(tmp_path, dtype):
    """A float32 lm_head whose values a 16-bit dtype holds exactly (a checkpoint saved in 16
    bits) is read from a 16-bit copy at decode: the float32 weight's logits, bit for bit."""
    from vilau_export.checkpoint_writer import write_checkpoint

    from vilau_rt.backends.native_backend import NativeBackend
    from vilau_rt.model.checkpoint import load_vilau
    from vilau_rt.model.config import preset
    from vilau_rt.ops import native

    model = load_vilau(write_checkpoint(preset("tiny-256"), tmp_path / "t"), device="cpu")
    head = model.llm.lm_head.weight
    with torch.no_grad():
        if dtype is not None:
            head.copy_(head.to(dtype).float())
        else:  # a value no 16-bit dtype holds: the float32 weight is read
            head[0, 0] = 1.0 + 2.0**-20
    backend = NativeBackend(model)
    assert (backend._lm_head16 is None) == (dtype is None)
    assert ("lm_head" in backend.stats) == (dtype is not None)
    if dtype is not None:
        assert backend._lm_head16.dtype == dtype or dtype == torch.bfloat16
    hidden = torch.randn(2, head.shape[1])
    ref = native.linear(hidden, head)  # float32 weight, the same GEMV order
    assert torch.equal(backend.logits(hidden), ref)
    torch.testing.assert_close(ref, hidden.double().matmul(head.double().T).float())


def test_a_larger_cache_frees_the_old_one_first_and_a_released_decoder_refuses_steps(
    tmp_path, monkeypatch
):
    """The decoder keeps the cache it points at alive; the backend has it let go before it
    allocates the next one (no old + new peak), and a step without a cache is refused."""
    import weakref

    from vilau_export.checkpoint_writer import write_checkpoint

    from vilau_rt.backends.native_backend import NativeBackend
    from vilau_rt.model.checkpoint import load_vilau
    from vilau_rt.model.config import preset

    model = load_vilau(write_checkpoint(preset("tiny-256"), tmp_path / "t"), device="cpu")
    backend = NativeBackend(model)
    assert backend._decoder is not None
    backend.setup_cache(1, 16)
    old = weakref.ref(backend._k[0])
    alive_at_allocation = []
    zeros = torch.zeros

    def spy(*args, **kw):
        alive_at_allocation.append(old() is not None)
        return zeros(*args, **kw)

    monkeypatch.setattr(torch, "zeros", spy)
    backend.setup_cache(1, 32)
    monkeypatch.undo()
    assert alive_at_allocation and not any(alive_at_allocation)
    backend._decoder.release_cache()
    H = model.cfg.llm.hidden_size
    x, cs = torch.zeros(1, 1, H), torch.zeros(1, model.cfg.llm.head_dim)
    with pytest.raises(RuntimeError, match="no KV cache"):
        backend._decoder.step(x, cs, cs, backend._valid, 0)
