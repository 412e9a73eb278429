"""backend="tensorrt": where the plugin library is found (setup.py's header finder, the package's
``plugin_library``), clear errors without TensorRT, the engine cache key and the KV buffer sets;
and, where TensorRT and a GPU exist, engines built from a --target tensorrt bundle giving the
torch backend's greedy tokens and image codes.

TensorRT cannot be installed on the development machines: the tests that need it skip there
with the import error as the reason. None of them has run yet.
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
