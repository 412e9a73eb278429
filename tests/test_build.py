"""The native extension vilau_rt._C: it imports, reports how it was built, and the torch ops
fail with a clear message when it is missing."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent


def _nvcc() -> str | None:
    home = os.environ.get("CUDA_HOME")
    if home and (Path(home) / "bin" / "nvcc").is_file():
        return str(Path(home) / "bin" / "nvcc")
    return shutil.which("nvcc")


def test_extension_imports_and_reports_build():
    from vilau_rt import _C

    info = _C.build_info()
    assert set(info) == {"cuda", "cuda_archs", "cublas", "openmp", "version"}
    assert not info["cublas"] or info["cuda"], info  # cuBLAS only serves the CUDA kernels
    assert isinstance(info["cuda"], bool) and isinstance(info["openmp"], bool)
    assert bool(info["cuda_archs"]) == info["cuda"], info
    assert info["version"] == importlib.metadata.version("vilau-rt")


def test_cuda_kernels_compiled_when_nvcc_is_present():
    if _nvcc() is None:
        pytest.skip("no nvcc on this machine")
    if os.environ.get("VILAU_RT_CUDA", "").lower() in ("0", "off", "false", "no"):
        pytest.skip("VILAU_RT_CUDA=0 asks for a CPU-only build")
    from vilau_rt import _C

    info = _C.build_info()
    assert info["cuda"], f"nvcc at {_nvcc()} but the CUDA kernels were not compiled: {info}"
    assert all(arch.strip() for arch in info["cuda_archs"].split(",")), info


def test_cuda_device_count_agrees_with_torch_and_never_raises():
    from vilau_rt import _C

    count = _C.cuda_device_count()
    assert count >= 0
    if not _C.build_info()["cuda"]:
        assert count == 0
    elif torch.cuda.is_available():
        # A mismatch means our statically linked runtime is newer than the driver.
        assert count == torch.cuda.device_count()


def test_every_binding_has_a_docstring_and_named_arguments():
    from vilau_rt import _C

    functions = [getattr(_C, name) for name in dir(_C) if callable(getattr(_C, name))]
    functions = [f for f in functions if type(f).__name__ == "builtin_function_or_method"]
    assert len(functions) >= 10
    for fn in functions:
        signature, _, text = (fn.__doc__ or "").partition("\n")
        assert text.strip(), f"{fn.__name__} has no docstring"
        assert "arg0" not in signature, f"{fn.__name__} lacks py::arg names: {signature}"


def test_ops_raise_a_rebuild_hint_when_the_extension_is_missing():
    # A fresh interpreter, so that blocking vilau_rt._C does not touch this process's ops.
    script = (
        "import sys; sys.modules['vilau_rt._C'] = None\n"
        "import torch\n"
        "from vilau_rt.ops import kernels\n"
        "try:\n"
        "    kernels.rvq_lookup(torch.zeros(2, 1, dtype=torch.int64), torch.zeros(1, 3, 4))\n"
        "except RuntimeError as exc:\n"
        "    print('RAISED', exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        check=False,
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "RAISED" in result.stdout and "pip install -e ." in result.stdout, result.stdout
