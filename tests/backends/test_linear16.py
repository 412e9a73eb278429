"""16-bit weights kept 16-bit on the CPU (``load_vilau(keep_16bit=True)``, ``Linear16``, ``Embedding16``).

Every float16 / bfloat16 value is exact in float32, so a model whose checkpoint stores 16-bit
weights must answer the same when those weights stay 16-bit as when they are converted to float32
on load: the references here are the float32 load of the same files (the float32 path is the one
tested against the official fixture and transformers elsewhere) and, for the C++ decode step,
transformers' LLaMA on the upcast weights."""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest
import torch
from fixture_runs import gen_inputs, greedy_caption, ref
from safetensors.torch import load_file, save_file

from vilau_rt.backends import TorchBackend
from vilau_rt.backends.native_backend import CodeSampling, NativeBackend
from vilau_rt.generate import ImageSettings, generate_codes
from vilau_rt.model.checkpoint import load_vilau
from vilau_rt.model.linear16 import (
    Embedding16,
    Linear16,
    keep_embedding_16bit,
    keep_linears_16bit,
)
from vilau_rt.ops import kernels, native

LLM_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
DEPTH_LINEARS = ("attn.query", "attn.key", "attn.value", "attn.proj", "mlp.0", "mlp.2")
VISION_LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                  "self_attn.out_proj", "mlp.fc1", "mlp.fc2")  # fmt: skip


def _copy_16bit(fixture, out, dtype):
    """The official tiny checkpoint with its float tensors stored in ``dtype`` (as official
    VILA-U checkpoints store them)."""
    shutil.copytree(fixture, out)
    for folder in ("llm", "vision_tower", "mm_projector"):
        path = out / folder / "model.safetensors"
        tensors = load_file(path)
        path.unlink()  # the copy is read-only like its source
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
        save_file(tensors, path, metadata={"format": "pt"})
    return out


def _load(root, **kw):
    return load_vilau(root, siglip_config=root / "reference" / "siglip_config", **kw)


@pytest.fixture(scope="module", params=[torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def stored(request, tiny_fixture, tmp_path_factory):
    """(root, dtype, 16-bit-kept model, float32 model) of one 16-bit copy of the fixture."""
    root = _copy_16bit(tiny_fixture, tmp_path_factory.mktemp("ckpt") / "m", request.param)
    return root, request.param, _load(root, keep_16bit=True), _load(root)


def test_keep_16bit_loads_linears_and_token_embeddings_as_stored_and_the_rest_as_float32(stored):
    _, dtype, kept, full = stored
    names = [n for n, m in kept.named_modules() if type(m) is Linear16]
    embeddings = [n for n, m in kept.named_modules() if type(m) is Embedding16]
    assert embeddings == ["llm.model.embed_tokens"]
    layers = len(kept.llm.model.layers)
    llm = [f"llm.model.layers.{i}.{p}.{n}" for i in range(layers)
           for p, ns in (("self_attn", LLM_LINEARS[:4]), ("mlp", LLM_LINEARS[4:])) for n in ns]  # fmt: skip
    blocks = len(kept.depth_transformer.head_transformer.blocks)
    depth = [f"depth_transformer.head_transformer.blocks.{i}.{n}" for i in range(blocks)
             for n in DEPTH_LINEARS]  # fmt: skip
    depth += ["depth_transformer.in_mlp_1", "depth_transformer.in_mlp_2",
              "depth_transformer.classifier_mlp.linear"]  # fmt: skip
    vision = [f"vision_tower.encoder.layers.{i}.{n}"
              for i in range(len(kept.vision_tower.encoder.layers)) for n in VISION_LINEARS]  # fmt: skip
    projector = [f"mm_projector.layers.{i}" for i, m in enumerate(kept.mm_projector.layers)
                 if hasattr(m, "weight")]  # fmt: skip
    assert len(projector) == 2
    assert sorted(names) == sorted([*llm, "llm.lm_head", *depth, *vision, *projector])
    assert kept.dtype == torch.float32
    full_state = full.state_dict()
    for name, t in kept.state_dict().items():
        want = dtype if any(name == f"{n}.weight" for n in names + embeddings) else torch.float32
        assert t.dtype == want, name
        assert torch.equal(t.float(), full_state[name]), name  # the same values, none lost
    kept_bytes = sum(kept.get_submodule(n).weight.nbytes for n in names + embeddings)
    full_bytes = sum(full.get_submodule(n).weight.nbytes for n in names + embeddings)
    assert kept_bytes * 2 == full_bytes


def test_keep_16bit_changes_nothing_for_a_float32_checkpoint(tiny_fixture):
    model = _load(tiny_fixture, keep_16bit=True)
    assert not any(type(m) is Linear16 for m in model.modules())


@pytest.mark.parametrize("kw", [{"dtype": torch.bfloat16}, {"device": "meta"}])
def test_keep_16bit_is_refused_outside_cpu_float32(tiny_fixture, kw):
    with pytest.raises(ValueError, match="keep_16bit serves a float32 model on the CPU"):
        _load(tiny_fixture, keep_16bit=True, **kw)


@pytest.mark.parametrize("shape", [(3, 40), (2, 20, 40)], ids=["gemv-rows", "gemm-rows"])
def test_linear16_forward_is_native_linear_on_the_upcast(shape):
    """float32 x: ``native.linear`` on the 16-bit bytes, the bits of its run on the float32
    upcast (our GEMV / GEMM on the CPU), near float64; other dtypes: F.linear on the upcast."""
    torch.manual_seed(0)
    lin = Linear16(40, 24, True, torch.bfloat16)
    lin.weight.data.normal_()
    lin.bias.data.normal_()
    x = torch.randn(*shape)
    assert torch.equal(lin(x), native.linear(x, lin.weight.float(), lin.bias))
    ref = x.double() @ lin.weight.double().T + lin.bias.double()
    torch.testing.assert_close(lin(x).double(), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lin(x), lin.widened()(x), rtol=1e-5, atol=1e-5)
    xb = x.bfloat16()
    assert torch.equal(lin(xb), torch.nn.functional.linear(xb, lin.weight, lin.bias.bfloat16()))
    with pytest.raises(TypeError, match="expected float16 or bfloat16"):
        Linear16(4, 4, False, torch.float32)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_embedding16_returns_the_float32_rows(dtype):
    emb = Embedding16(10, 6, dtype)
    emb.weight.data.normal_()
    ids = torch.tensor([[3, 0, 9, 3]])
    out = emb(ids)
    assert out.dtype == torch.float32 and torch.equal(out, emb.weight.float()[ids])
    with pytest.raises(TypeError, match="expected float16 or bfloat16"):
        Embedding16(4, 4, torch.float32)


def test_keep_embedding_16bit_swaps_only_a_16bit_nn_embedding():
    net = torch.nn.Module()
    net.emb = torch.nn.Embedding(5, 3)
    assert not keep_embedding_16bit(net, "emb", torch.float32)
    assert not keep_embedding_16bit(net, "emb", None)  # not in the file: reported as missing
    assert type(net.emb) is torch.nn.Embedding
    assert keep_embedding_16bit(net, "emb", torch.float16)
    assert type(net.emb) is Embedding16 and net.emb.weight.dtype == torch.float16


def test_tied_token_embeddings_stay_float32_with_their_lm_head(stored, tmp_path):
    """A tied lm_head (no lm_head.weight in the file) takes the embeddings' tensor: both stay
    float32 so that the lm_head stays an nn.Linear of float32 weights."""
    root, _, _, full = stored
    tied = tmp_path / "tied"
    shutil.copytree(root, tied)
    cfg_path = tied / "llm" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tie_word_embeddings"] = True
    cfg_path.unlink()
    cfg_path.write_text(json.dumps(cfg))
    path = tied / "llm" / "model.safetensors"
    tensors = load_file(path)
    tensors.pop("lm_head.weight")
    path.unlink()
    save_file(tensors, path, metadata={"format": "pt"})
    model = _load(tied, keep_16bit=True)
    assert type(model.llm.model.embed_tokens) is torch.nn.Embedding
    assert type(model.llm.lm_head) is torch.nn.Linear
    assert model.llm.lm_head.weight.dtype == torch.float32
    assert torch.equal(model.llm.lm_head.weight, full.llm.model.embed_tokens.weight)
    assert type(model.llm.model.layers[0].mlp.down_proj) is Linear16  # the rest as before


def test_keep_linears_16bit_swaps_only_16bit_linears():
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2, bias=False))
    swapped = keep_linears_16bit(net, {"0.weight": torch.float32, "1.weight": torch.float16})
    assert swapped == ["1"] and type(net[0]) is torch.nn.Linear
    assert type(net[1]) is Linear16 and net[1].weight.dtype == torch.float16
    assert net[1].bias is None


# ---------------------------------------------------------------- the native backend on it


def _logits_and_steps(backend, ids, steps=6):
    """Prefill logits of ``ids`` [1, T], then the logits of ``steps`` greedy decode steps."""
    backend.setup_cache(1, ids.shape[1] + steps)
    pos = torch.arange(ids.shape[1])[None]
    h = backend.forward(backend.embed_tokens(ids), pos, 0)
    out = [backend.logits(h)[0]]
    cache_pos = ids.shape[1]
    for _ in range(steps):
        nxt = out[-1][-1].argmax().view(1, 1)
        h = backend.forward(backend.embed_tokens(nxt), torch.tensor([[cache_pos]]), cache_pos)
        out.append(backend.logits(h)[0])
        cache_pos += 1
    return out


def test_native_backend_on_16bit_weights_returns_the_bits_of_the_float32_load(stored):
    root, dtype, kept, full = stored
    native16 = NativeBackend.from_model(kept)
    native32 = NativeBackend.from_model(full)
    assert native16.stats["decode_step"] == "C++ LlamaDecoder"
    assert f"{dtype} linears read in 16 bits" in native16.stats["llm_weights"]
    ids = ref(root, "und_input_ids.npy")[:1].clamp(min=0)
    got, want = _logits_and_steps(native16, ids), _logits_and_steps(native32, ids)
    # decode steps: the 16-bit GEMV returns the float32 GEMV's bits on every ISA path
    for g, w in zip(got[1:], want[1:]):
        assert torch.equal(g, w)
    if kernels.cpu_gemm_is_fast():  # prefill: our GEMM on both (else BLAS reads the float32)
        assert torch.equal(got[0], want[0])
    else:
        torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-5)


def test_native_greedy_tokens_and_codes_on_16bit_weights_equal_the_torch_backend(stored):
    root, _, kept, full = stored
    native = greedy_caption(NativeBackend.from_model(kept), root)
    assert native == greedy_caption(TorchBackend(full), root)
    gen_ids, mask, pos = gen_inputs(root, "cpu")
    settings = ImageSettings(cfg_scale=3.0, top_k=1)
    want = generate_codes(TorchBackend(full), gen_ids, mask, pos, 16, settings)
    got = generate_codes(NativeBackend.from_model(kept), gen_ids, mask, pos, 16, settings)
    assert torch.equal(got, want)


def _depth_run(model, hidden, sampler):
    """Codes and the raw logits of every depth of the native backend's depth loop."""
    logits = []
    backend = NativeBackend.from_model(model)
    backend.setup_cache(hidden.shape[0], 4)
    codes, _ = backend.depth_generate(hidden, 3.0, sampler, lambda d, lg: logits.append(lg))
    return codes, logits


@pytest.mark.parametrize(
    "sampler",
    [CodeSampling(top_k=1, top_p=None), lambda guided: guided.argmax(dim=-1)],
    ids=["device-sampler", "opaque-sampler"],
)
@pytest.mark.parametrize("rows", [2, 6])
def test_native_depth_loop_on_16bit_weights_returns_the_bits_of_the_float32_load(
    stored, rows, sampler
):
    """The depth transformer's linears kept 16-bit: native.linear widens each weight exactly, so
    every depth's raw logits are the float32 load's bits, for a CFG pair (GEMV) and 3 pairs
    (GEMM where it is AVX-512, else BLAS on the float32 side), with the device sampler and with
    a host callable."""
    _, _, kept, full = stored
    hidden = torch.randn(rows, kept.cfg.llm.hidden_size,
                         generator=torch.Generator().manual_seed(rows))  # fmt: skip
    (codes16, got), (codes32, want) = (_depth_run(m, hidden, sampler) for m in (kept, full))
    assert torch.equal(codes16, codes32) and len(got) == len(want) == kept.cfg.rvq.depth
    for g, w in zip(got, want):
        if rows == 2 or kernels.cpu_gemm_is_fast():
            assert torch.equal(g, w)
        else:
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


def test_torch_backend_over_16bit_weights_returns_the_float32_load_to_rounding(stored):
    """The torch backend's modules call ``Linear16.forward`` (``native.linear``, our GEMM) where
    the float32 load calls ``F.linear`` (BLAS): the same values summed in another order."""
    root, _, kept, full = stored
    ids = ref(root, "und_input_ids.npy")[:1].clamp(min=0)
    out = []
    for model in (kept, full):
        backend = TorchBackend(model)
        backend.setup_cache(1, ids.shape[1])
        h = backend.forward(backend.embed_tokens(ids), torch.arange(ids.shape[1])[None], 0)
        out.append(backend.logits(h))
    torch.testing.assert_close(out[0], out[1], rtol=1e-5, atol=1e-5)


def test_native_vision_pass_on_16bit_weights_gives_the_float32_load_codes(stored):
    """The vision tower and projector kept 16-bit: the fixture's images get the float32 load's
    RVQ codes, and image embeddings equal to float32 rounding."""
    root, _, kept, full = stored
    pixels = ref(root, "pixel_values.npy")
    (codes16, emb16), (codes32, emb32) = (
        NativeBackend.from_model(m).encode_images(pixels) for m in (kept, full)
    )
    assert torch.equal(codes16, codes32)
    torch.testing.assert_close(emb16, emb32, rtol=1e-5, atol=1e-5)


def test_quantize_llm_on_16bit_weights_quantizes_their_float32_values(stored):
    _, _, kept, full = stored

    a = NativeBackend.from_model(copy.deepcopy(kept), quantize_llm=True, group_size=32)
    b = NativeBackend.from_model(copy.deepcopy(full), quantize_llm=True, group_size=32)
    qa = a.model.llm.model.layers[0].mlp.down_proj
    qb = b.model.llm.model.layers[0].mlp.down_proj
    assert torch.equal(qa.qweight, qb.qweight) and torch.equal(qa.scales, qb.scales)


def test_pipeline_keeps_16bit_weights_for_the_native_backend_on_the_cpu_only(stored):
    from vilau_rt import Pipeline

    root = stored[0]
    kw = {"device": "cpu", "siglip_config": root / "reference" / "siglip_config"}
    native = Pipeline.from_pretrained(root, backend="native", **kw)
    assert any(type(m) is Linear16 for m in native.backend.model.modules())
    eager = Pipeline.from_pretrained(root, backend="torch", **kw)
    assert not any(type(m) is Linear16 for m in eager.backend.model.modules())
    assert np.allclose(native.logits("a red square"), eager.logits("a red square"), atol=1e-4)
