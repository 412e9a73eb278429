"""backend="tensorrt": where the plugin library is found (setup.py's header finder, the package's
``plugin_library``), clear errors without TensorRT, the engine cache key and the KV buffer sets;
and, where TensorRT and a GPU exist, engines built from a --target tensorrt bundle giving the
torch backend's greedy tokens and image codes.

TensorRT cannot be installed on the development machines: the test that needs it skips there
with the import error as the reason (it has never run). The backend's own logic runs on a
stand-in ``tensorrt`` module (fake_tensorrt.py: each graph executed by ONNX Runtime).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import setuptools
import torch

from vilau_rt.backends import tensorrt_backend as tb
from vilau_rt.errors import BackendError
from vilau_rt.model.config import preset

REPO_ROOT = Path(__file__).resolve().parents[2]
TRT_HEADERS = Path(os.environ.get("VILAU_TRT_HEADERS", REPO_ROOT.parent / "shared" / "third_party"))


@pytest.fixture(scope="module")
def setup_py():
    """setup.py as a module, without running setup()."""
    mp = pytest.MonkeyPatch()
    mp.setattr(setuptools, "setup", lambda **kwargs: None)
    try:
        spec = importlib.util.spec_from_file_location("vilau_setup", REPO_ROOT / "setup.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        mp.undo()
    return module


def test_setup_finds_the_tensorrt_headers_it_is_pointed_at(setup_py, tmp_path):
    include = TRT_HEADERS / "tensorrt-10.3" / "include"
    if not (include / "NvInferRuntime.h").is_file():
        pytest.skip(f"TensorRT 10.3 headers {include} not found (set VILAU_TRT_HEADERS)")
    find = setup_py.find_tensorrt_include
    empty = tmp_path / "none"
    empty.mkdir()
    assert find({"VILAU_RT_TENSORRT_INCLUDE": str(include)}, system_dirs=()) == include
    # TENSORRT_ROOT/include, then the JetPack / Debian folders, in that order
    root = tmp_path / "TensorRT-10.3"
    (root / "include").mkdir(parents=True)
    (root / "include" / "NvInferRuntime.h").write_text("")
    assert find({"TENSORRT_ROOT": str(root)}, system_dirs=(str(include),)) == root / "include"
    assert find({}, system_dirs=(str(empty), str(include))) == include
    assert find({}, system_dirs=(str(empty),)) is None
    with pytest.raises(RuntimeError, match="has no NvInferRuntime.h"):
        find({"VILAU_RT_TENSORRT_INCLUDE": str(empty)}, system_dirs=(str(include),))


def test_jetpack_header_folder_is_searched_by_default(setup_py):
    assert "/usr/include/aarch64-linux-gnu" in setup_py.TRT_SYSTEM_INCLUDES


def test_plugin_library_comes_from_the_package_or_the_environment(monkeypatch, tmp_path):
    if (Path(tb.__file__).resolve().parent.parent / tb.PLUGIN_LIBRARY).is_file():
        pytest.skip("this checkout's package holds a built plugin library")
    monkeypatch.delenv("VILAU_RT_TRT_PLUGINS", raising=False)
    with pytest.raises(BackendError, match="cmake -S csrc/trt"):
        tb.plugin_library()
    lib = tmp_path / tb.PLUGIN_LIBRARY
    monkeypatch.setenv("VILAU_RT_TRT_PLUGINS", str(lib))
    with pytest.raises(BackendError, match="is not a file"):
        tb.plugin_library()
    lib.write_bytes(b"")
    assert tb.plugin_library() == lib


def test_without_tensorrt_the_backend_says_what_is_missing(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError
    with pytest.raises(BackendError, match="TensorRT's Python bindings"):
        tb.TensorRTBackend(tmp_path)
    from vilau_rt import Pipeline

    with pytest.raises(BackendError, match="TensorRT's Python bindings"):
        Pipeline.from_pretrained(tmp_path, backend="tensorrt")


def test_engine_cache_key_follows_bundle_plugins_tensorrt_and_gpu(tmp_path):
    (tmp_path / "manifest.json").write_text("{}")
    lib = tmp_path / "lib.so"
    lib.write_bytes(b"a")
    key = tb.engine_cache_key(tmp_path, lib, "10.3.0", (8, 7))
    assert key.endswith("-trt10.3.0-sm87")
    assert tb.engine_cache_key(tmp_path, lib, "10.3.0", (8, 7)) == key
    assert tb.engine_cache_key(tmp_path, lib, "10.4.0", (8, 7)) != key
    assert tb.engine_cache_key(tmp_path, lib, "10.3.0", (9, 0)) != key
    lib.write_bytes(b"b")
    assert tb.engine_cache_key(tmp_path, lib, "10.3.0", (8, 7)) != key
    lib.write_bytes(b"a")
    (tmp_path / "manifest.json").write_text('{"x": 1}')
    assert tb.engine_cache_key(tmp_path, lib, "10.3.0", (8, 7)) != key


def test_kv_buffer_sets_alternate_as_past_and_present():
    cfg = preset("tiny-256")
    backend = SimpleNamespace(cfg=cfg, dtype=torch.float32, device=torch.device("cpu"))
    cache = tb._KVCache(backend, 2, 16)
    first = cache.bindings()
    assert first["past_key_0"].shape == (2, cfg.llm.num_key_value_heads, 16, cfg.llm.head_dim)
    assert first["past_key_0"] is not first["present_key_0"]
    assert len(first) == 4 * cfg.llm.num_hidden_layers
    assert cache.bindings()["past_key_0"] is first["past_key_0"]  # no swap without a run
    cache.swap()
    second = cache.bindings()
    assert second["past_key_0"] is first["present_key_0"]
    assert second["present_value_1"] is first["past_value_1"]


# ---------------------------------------------------------------------------- with TensorRT


@pytest.fixture(scope="module")
def trt_pipe(tiny_fixture, tmp_path_factory):
    try:
        import tensorrt  # noqa: F401
    except ImportError as e:
        pytest.skip(f"TensorRT is not installed ({e}); it cannot be on the development machines")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    try:
        tb.plugin_library()
    except BackendError as e:
        pytest.skip(str(e))
    from vilau_export.onnx.export import export_bundle

    from vilau_rt import Pipeline

    out = export_bundle(
        tiny_fixture, tmp_path_factory.mktemp("trt-engine") / "bundle", target="tensorrt",
        siglip_config=tiny_fixture / "reference" / "siglip_config",
    )  # fmt: skip
    return Pipeline.from_pretrained(out, backend="tensorrt", cache_dir=out.parent / "cache")


def test_tensorrt_engines_give_the_reference_codes_tokens_and_image_codes(trt_pipe, tiny_fixture):
    from vilau_rt import Pipeline

    ref = tiny_fixture / "reference"
    torch_pipe = Pipeline.from_pretrained(tiny_fixture, siglip_config=ref / "siglip_config",
                                          device="cpu")  # fmt: skip
    codes, _ = trt_pipe.backend.encode_images(
        torch.from_numpy(np.load(ref / "pixel_values.npy")).cuda()
    )
    assert torch.equal(codes.cpu(), torch.from_numpy(np.load(ref / "codes.npy")))
    image = ref / "img0_gradient_circle.png"
    got = trt_pipe.generate("What is shown?", images=[image], max_new_tokens=8).token_ids
    assert got == torch_pipe.generate("What is shown?", images=[image], max_new_tokens=8).token_ids
    a = trt_pipe.generate_image_codes("a red circle", top_k=1, seed=0)
    b = torch_pipe.generate_image_codes("a red circle", top_k=1, seed=0)
    assert np.array_equal(a, b)


# ---------------------------------------------------------------------------- stand-in tensorrt


@pytest.fixture(scope="module")
def stand_in(tiny_fixture, tmp_path_factory):
    """(stand-in tensorrt module, --target tensorrt bundle of the tiny fixture)."""
    pytest.importorskip("onnxruntime_extensions", reason="the [onnx] extra is not installed")
    from vilau_export.onnx.export import export_bundle

    spec = importlib.util.spec_from_file_location(
        "fake_tensorrt", Path(__file__).parent / "fake_tensorrt.py"
    )
    fake = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fake)
    out = export_bundle(
        tiny_fixture, tmp_path_factory.mktemp("trt-stand-in") / "bundle", target="tensorrt",
        siglip_config=tiny_fixture / "reference" / "siglip_config",
    )  # fmt: skip
    return fake, out


def _ref(root, name):
    return torch.from_numpy(np.load(root / "reference" / name))


def test_backend_logic_on_a_stand_in_tensorrt_gives_the_reference_results(
    stand_in, tiny_fixture, monkeypatch, tmp_path
):
    """Not TensorRT: each engine is the ONNX graph run by ONNX Runtime through the buffers' raw
    addresses. Checks profiles, static buffers, the KV buffer sets, both depth paths and the
    engine cache, against the official references."""
    from vilau_rt.generate import (
        ImageSettings,
        TextSettings,
        generate_codes,
        generate_text,
        splice_images,
    )
    from vilau_rt.ops.depth_decode import CodeSampler
    from vilau_rt.sampling import sample_codes

    fake, bundle = stand_in
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    lib = tmp_path / tb.PLUGIN_LIBRARY
    lib.write_bytes(b"stand-in")
    monkeypatch.setenv("VILAU_RT_TRT_PLUGINS", str(lib))
    fake.Builder.built.clear()
    backend = tb.TensorRTBackend(bundle, cache_dir=tmp_path / "cache", device="cpu")
    assert fake.get_plugin_registry().loaded[-1] == str(lib)
    px = _ref(tiny_fixture, "pixel_values.npy")
    codes, embeds = backend.encode_images(px)
    assert torch.equal(codes, _ref(tiny_fixture, "codes.npy"))
    raw = backend.decode_codes(codes)
    assert float((raw - _ref(tiny_fixture, "decoded_raw.npy")).abs().max()) < 1e-4
    ids = _ref(tiny_fixture, "und_input_ids.npy")[0].tolist()
    text = list(generate_text(backend, splice_images(backend, ids, [embeds[0]]),
                              TextSettings(max_new_tokens=12), eos_id=2))  # fmt: skip
    assert text == _ref(tiny_fixture, "und_greedy_ids.npy")[0, 1:].tolist()
    gen_ids, mask = (
        _ref(tiny_fixture, "gen_input_ids.npy"),
        _ref(tiny_fixture, "gen_attention_mask.npy"),
    )
    pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    image = generate_codes(backend, gen_ids, mask, pos, 16, ImageSettings(cfg_scale=3.0, top_k=1))
    assert torch.equal(image.view(4, 4, 4), _ref(tiny_fixture, "gen_codes.npy"))
    # the opaque-sampler path forces each depth's code: same greedy codes as the fused one
    hidden = _ref(tiny_fixture, "gen_depth_in_hidden.npy")[0]
    fused = backend.depth_generate(hidden, 3.0, CodeSampler(top_k=1))
    per_depth = backend.depth_generate(hidden, 3.0, lambda lg: sample_codes(lg, top_k=1))
    assert backend.stats["depth_path"] == "per-depth"
    assert torch.equal(fused[0], per_depth[0]) and torch.allclose(fused[1], per_depth[1])
    # engines were built once, into the cache key's folder, and are loaded from there next time
    assert sorted(Path(p).name for p in fake.Builder.built) == sorted(
        f"{g}.onnx" for g in ("vision", "pixel_decoder", "llm_prefill", "llm_decode", "lm_head",
                              "depth_decode")
    )  # fmt: skip
    (plans,) = (tmp_path / "cache" / "engines").iterdir()
    assert plans.name.endswith("-trt0.0-fake-sm00") and len(list(plans.glob("*.plan"))) == 6
    again = tb.TensorRTBackend(bundle, cache_dir=tmp_path / "cache", device="cpu")
    assert torch.equal(again.encode_images(px)[0], codes)
    assert len(fake.Builder.built) == 6
    # beyond the profile: a clear error, and the cache is left as it was
    with pytest.raises(ValueError, match="profile maximum"):
        backend.encode_images(px.repeat(5, 1, 1, 1))  # 10 images > 8
