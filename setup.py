"""Builds vilau_rt and its one native extension, ``vilau_rt._C``, through CMake.

Environment variables:
  VILAU_RT_CUDA=0|1          0: CPU kernels only. 1: require CUDA (fail if no nvcc).
                             Unset: CUDA kernels when nvcc is found (CUDA_HOME/bin or PATH).
  VILAU_RT_CUDA_ARCHS        CUDA architectures, CMake syntax (default "80;86;87;89;90").
  CMAKE_BUILD_PARALLEL_LEVEL parallel compile jobs (default: number of CPUs).
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
        if shutil.which("ninja") and not (build_dir / "CMakeCache.txt").exists():
            args += ["-G", "Ninja"]
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL") or str(os.cpu_count() or 1)
        subprocess.run([cmake, "-S", str(ROOT), "-B", str(build_dir), *args], check=True)
        subprocess.run([cmake, "--build", str(build_dir), "--parallel", jobs], check=True)


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
