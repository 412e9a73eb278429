"""The TensorRT plugin library (csrc/trt) builds against TensorRT 10.3 and 11.1 headers, needs no
TensorRT library symbol, and its creators and build methods behave, checked by the C++ harness
(csrc/trt/tests/harness.cpp) without TensorRT or a GPU.

Each header set is built once per session with the architecture of its platform: 10.3 (JetPack
6) for sm_87, 11.1 (desktop) for sm_90. The headers are found under ``VILAU_TRT_HEADERS``
(default ``../shared/third_party`` next to the repository): ``tensorrt-10.3/include`` and
``tensorrt-11.1/include``. Without cmake, nvcc or the headers the tests skip; under CI (``CI``
set to a true value) a missing nvcc or header set fails instead, as fixtures do in conftest.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TRT_HEADERS = Path(os.environ.get("VILAU_TRT_HEADERS", REPO_ROOT.parent / "shared" / "third_party"))
BUILDS = {"trt10.3-sm87": ("tensorrt-10.3", "87"), "trt11.1-sm90": ("tensorrt-11.1", "90")}
LIBRARY = "libvilau_trt_plugins.so"


def _under_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def _nvcc() -> str | None:
    home = os.environ.get("CUDA_HOME")
    if home and (Path(home) / "bin" / "nvcc").is_file():
        return str(Path(home) / "bin" / "nvcc")
    return shutil.which("nvcc")


def _missing(reason: str, fail_under_ci: bool) -> None:
    if fail_under_ci and _under_ci():
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session", params=sorted(BUILDS))
def build(request, tmp_path_factory) -> Path:
    """Build folder of csrc/trt (library + harness) for one header set and architecture."""
    headers, arch = BUILDS[request.param]
    if shutil.which("cmake") is None:
        _missing("cmake not found: it builds csrc/trt", fail_under_ci=False)
    nvcc = _nvcc()
    if nvcc is None:
        _missing("nvcc not found (set CUDA_HOME): it compiles csrc/trt", fail_under_ci=True)
    include = TRT_HEADERS / headers / "include"
    if not (include / "NvInferRuntime.h").is_file():
        _missing(f"TensorRT headers {include} not found (set VILAU_TRT_HEADERS)", True)
    out = tmp_path_factory.mktemp(request.param)
    start = time.monotonic()
    configure = [
        "cmake", "-S", str(REPO_ROOT / "csrc" / "trt"), "-B", str(out),
        f"-DTensorRT_INCLUDE_DIR={include}", f"-DCMAKE_CUDA_ARCHITECTURES={arch}",
        f"-DCMAKE_CUDA_COMPILER={nvcc}", "-DVILAU_TRT_BUILD_HARNESS=ON",
    ]  # fmt: skip
    log = out / "build.log"
    with log.open("w") as f:
        for cmd in (configure, ["cmake", "--build", str(out), "-j2"]):
            proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=False)
            if proc.returncode:
                pytest.fail(f"{' '.join(cmd)} failed:\n{log.read_text()[-4000:]}")
    print(f"{request.param}: built in {time.monotonic() - start:.0f} s")
    return out


def _nm(args: list[str], library: Path) -> list[str]:
    if shutil.which("nm") is None:
        pytest.fail("nm (binutils) not found: needed to inspect the library's symbols")
    proc = subprocess.run(["nm", *args, str(library)], capture_output=True, text=True, check=True)
    return [line.split()[-1] for line in proc.stdout.splitlines() if line.strip()]


def test_library_builds_without_warnings(build):
    log = (build / "build.log").read_text()
    warnings = [line for line in log.splitlines() if "warning" in line.lower()]
    assert not warnings, "\n".join(warnings[:20])
    assert (build / LIBRARY).is_file()


def test_library_needs_no_tensorrt_symbol_and_exports_only_the_plugin_entry_points(build):
    library = build / LIBRARY
    undefined = _nm(["-D", "--undefined-only"], library)
    tensorrt = [s for s in undefined if "nvinfer" in s.lower() or "nvonnxparser" in s.lower()]
    assert not tensorrt, f"undefined TensorRT symbols: {tensorrt}"
    assert not [s for s in undefined if s.startswith("_ZN8nvinfer1")]
    exported = set(_nm(["-D", "--defined-only"], library))
    assert exported == {"getCreators", "setLoggerFinder"}, exported
    needed = subprocess.run(
        ["readelf", "-d", str(library)], capture_output=True, text=True, check=False
    ).stdout
    assert "nvinfer" not in needed and "nvonnxparser" not in needed, needed


def test_harness_checks_creators_fields_shapes_and_round_trip(build):
    proc = subprocess.run(
        [str(build / "harness"), str(build / LIBRARY)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "OK:" in proc.stdout and "0 failed" in proc.stdout, proc.stdout[-2000:]


def test_harness_gpu_mode_matches_the_cpu_references(build):
    if (
        shutil.which("nvidia-smi") is None
        or subprocess.run(["nvidia-smi", "-L"], capture_output=True, check=False).returncode
    ):
        pytest.skip("no GPU: harness --gpu runs from bench/gpu.sh on the GPU machine")
    proc = subprocess.run(
        [str(build / "harness"), str(build / LIBRARY), "--gpu"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
