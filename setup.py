"""Builds vilau_rt and its one native extension, ``vilau_rt._C``, through CMake.

Environment variables:
  VILAU_RT_CUDA=0|1          0: CPU kernels only. 1: require CUDA (fail if no nvcc).
                             Unset: CUDA kernels when nvcc is found (CUDA_HOME/bin or PATH).
  VILAU_RT_CUDA_ARCHS        CUDA architectures, CMake syntax (default "80;86;87;89;90").
  VILAU_CUBLAS_HINTS         folders with include/cublas_v2.h and lib/libcublas* when the CUDA
                             toolkit has no cuBLAS (default: pip's nvidia/cu13 or nvidia/cublas).
  CMAKE_BUILD_PARALLEL_LEVEL parallel compile jobs (default: number of CPUs).
  VILAU_RT_TENSORRT_INCLUDE  TensorRT include folder (holding NvInferRuntime.h) for the TensorRT
                             plugin library; else $TENSORRT_ROOT/include, else JetPack's
                             /usr/include/aarch64-linux-gnu (or x86_64-linux-gnu). Where headers
                             and nvcc are found, libvilau_trt_plugins.so (csrc/trt) is built into
                             the package; otherwise it is skipped with a log line.
  VILAU_RT_TENSORRT=0        skip the TensorRT plugin library even where headers are found.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, find_namespace_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
DEFAULT_CUDA_ARCHS = "80;86;87;89;90"
_OFF = ("0", "off", "false", "no")
_ON = ("1", "on", "true", "yes")
TRT_HEADER = "NvInferRuntime.h"
# Debian packages of TensorRT (JetPack 6 among them) put NvInfer*.h here.
TRT_SYSTEM_INCLUDES = ("/usr/include/aarch64-linux-gnu", "/usr/include/x86_64-linux-gnu")


class CMakeExtension(Extension):
    """An extension whose sources are listed in CMakeLists.txt, not here."""

    def __init__(self, name: str) -> None:
        super().__init__(name, sources=[])


def _find_nvcc() -> str | None:
    for var in ("CUDA_HOME", "CUDA_PATH"):
        home = os.environ.get(var)
        if home and (Path(home) / "bin" / "nvcc").is_file():
            return str(Path(home) / "bin" / "nvcc")
    return shutil.which("nvcc")


def _cuda_compiler() -> str | None:
    """nvcc to build the CUDA kernels with, or None for a CPU-only build."""
    flag = os.environ.get("VILAU_RT_CUDA", "").strip().lower()
    if flag in _OFF:
        return None
    if flag and flag not in _ON:
        raise RuntimeError(f"VILAU_RT_CUDA={flag!r}: expected 0 or 1 (or unset)")
    nvcc = _find_nvcc()
    if nvcc is None and flag in _ON:
        raise RuntimeError("VILAU_RT_CUDA=1 but no nvcc was found in CUDA_HOME/bin or on PATH")
    return nvcc


def _cublas_hints() -> list[str]:
    """Folders of pip's nvidia wheels (torch's CUDA dependencies) that hold cuBLAS, for
    toolkits installed without it: nvidia/cu13 (CUDA 13 wheels) or nvidia/cublas (CUDA 12)."""
    import site
    import sysconfig

    roots = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    roots.update(site.getsitepackages())
    found = {h.parent.parent for r in roots for h in Path(r).glob("nvidia/*/include/cublas_v2.h")}
    return sorted(str(p) for p in found)


def find_tensorrt_include(environ=os.environ, system_dirs=TRT_SYSTEM_INCLUDES) -> Path | None:
    """The TensorRT include folder to build the plugins against, or None when there is none.

    ``VILAU_RT_TENSORRT_INCLUDE`` wins and must hold the headers (an error otherwise, since it was
    asked for); then ``$TENSORRT_ROOT/include``; then the Debian / JetPack system folders.
    """
    explicit = environ.get("VILAU_RT_TENSORRT_INCLUDE")
    if explicit:
        if not (Path(explicit) / TRT_HEADER).is_file():
            raise RuntimeError(f"VILAU_RT_TENSORRT_INCLUDE={explicit} has no {TRT_HEADER}")
        return Path(explicit)
    candidates = (
        [Path(environ["TENSORRT_ROOT"]) / "include"] if environ.get("TENSORRT_ROOT") else []
    )
    candidates += [Path(d) for d in system_dirs]
    return next((d for d in candidates if (d / TRT_HEADER).is_file()), None)


def _say(message: str) -> None:
    # setuptools hides log records below WARNING without -v: print so pip -v shows the choice.
    print(f"vilau_rt setup: {message}", file=sys.stderr)


class CMakeBuild(build_ext):
    """Configures and builds CMakeLists.txt, writing the module where setuptools expects it."""

    def build_extension(self, ext: Extension) -> None:
        import pybind11

        cmake = shutil.which("cmake")
        if cmake is None:
            raise RuntimeError("building vilau_rt._C needs CMake >= 3.22 on PATH")
        out_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        build_dir = Path(self.build_temp).resolve() / "cmake"
        nvcc = _cuda_compiler()
        args = [
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}",
            "-DCMAKE_BUILD_TYPE=Release",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            "-DPYBIND11_FINDPYTHON=ON",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-DVILAU_RT_VERSION={self.distribution.get_version()}",
            f"-DVILAU_WITH_CUDA={'ON' if nvcc else 'OFF'}",
        ]
        if nvcc:
            archs = os.environ.get("VILAU_RT_CUDA_ARCHS", DEFAULT_CUDA_ARCHS)
            args += [f"-DCMAKE_CUDA_COMPILER={nvcc}", f"-DVILAU_CUDA_ARCHS={archs}"]
            hints = os.environ.get("VILAU_CUBLAS_HINTS") or ";".join(_cublas_hints())
            if hints:
                args.append(f"-DVILAU_CUBLAS_HINTS={hints}")
        if shutil.which("ninja") and not (build_dir / "CMakeCache.txt").exists():
            args += ["-G", "Ninja"]
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL") or str(os.cpu_count() or 1)
        subprocess.run([cmake, "-S", str(ROOT), "-B", str(build_dir), *args], check=True)
        subprocess.run([cmake, "--build", str(build_dir), "--parallel", jobs], check=True)
        self._build_tensorrt_plugins(cmake, nvcc, out_dir, jobs)  # next to vilau_rt/_C

    def _build_tensorrt_plugins(self, cmake: str, nvcc: str | None, out: Path, jobs: str) -> None:
        """libvilau_trt_plugins.so (csrc/trt) into the package, where TensorRT headers exist."""
        if os.environ.get("VILAU_RT_TENSORRT", "").strip().lower() in _OFF:
            _say("VILAU_RT_TENSORRT=0: TensorRT plugin library skipped")
            return
        include = find_tensorrt_include()
        if include is None:
            _say("no TensorRT headers found (set VILAU_RT_TENSORRT_INCLUDE or TENSORRT_ROOT): "
                 "TensorRT plugin library skipped")  # fmt: skip
            return
        if nvcc is None:
            _say(f"TensorRT headers in {include} but a CPU-only build (no nvcc or "
                 "VILAU_RT_CUDA=0): TensorRT plugin library skipped")  # fmt: skip
            return
        _say(f"building the TensorRT plugin library against {include}")
        build_dir = Path(self.build_temp).resolve() / "cmake-trt"
        archs = os.environ.get("VILAU_RT_CUDA_ARCHS", DEFAULT_CUDA_ARCHS)
        args = [
            f"-DTensorRT_INCLUDE_DIR={include}",
            f"-DCMAKE_CUDA_COMPILER={nvcc}",
            f"-DCMAKE_CUDA_ARCHITECTURES={archs}",
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out}",
            "-DCMAKE_BUILD_TYPE=Release",
        ]
        src = ROOT / "csrc" / "trt"
        try:
            subprocess.run([cmake, "-S", str(src), "-B", str(build_dir), *args], check=True)
            subprocess.run([cmake, "--build", str(build_dir), "--parallel", jobs], check=True)
        except subprocess.CalledProcessError as e:
            raise RuntimeError(
                f"building the TensorRT plugin library against {include} failed ({e}); fix the "
                "build or set VILAU_RT_TENSORRT=0 to install without it"
            ) from e


def _packages() -> list[str]:
    # Namespace discovery so that data folders (vilau_rt/data/siglip_configs) count as packages.
    runtime = find_namespace_packages(include=["vilau_rt", "vilau_rt.*"], exclude=["*__pycache__"])
    export = find_namespace_packages("export", exclude=["*__pycache__"])
    return runtime + ["vilau_export", *(f"vilau_export.{p}" for p in export)]


# the built-in models (vilau_rt/data/models/<name>/, official checkpoint layout)
BUILTIN_MODEL_FILES = ["models/*/*.json", "models/*/*/*.json", "models/*/*/*.safetensors",
                       "models/*/*/tokenizer.model"]  # fmt: skip

setup(
    packages=_packages(),
    package_dir={"vilau_export": "export"},
    package_data={
        "vilau_rt.data": ["*.txt", *BUILTIN_MODEL_FILES],
        "vilau_rt.data.siglip_configs": ["*.json"],
    },
    ext_modules=[CMakeExtension("vilau_rt._C")],
    cmdclass={"build_ext": CMakeBuild},
    zip_safe=False,
)
