#!/usr/bin/env bash
# Build vilau_rt on the GPU machine (no network: only the preinstalled torch is used) and run
# bench/gpu.py; every log and bench.json land in $OUT (default ./bench_out).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/bench_out}"
mkdir -p "$OUT"
export OUT
# The GPU machine has no network. Build tools it lacks (pybind11, cmake) can travel with the tree
# as wheels in bench/.wheels (git-ignored; fill it here with
#   pip download pybind11 cmake ninja --only-binary=:all: -d bench/.wheels
# and name bench/.wheels in the device tool's carry list); they install offline.
if compgen -G "bench/.wheels/*.whl" >/dev/null; then
  pip install --no-index --no-deps bench/.wheels/*.whl >"$OUT/wheels.log" 2>&1 || true
fi
# Only the card in hand: one architecture compiles ~5x faster than the five of a release build.
if [ -z "${VILAU_RT_CUDA_ARCHS:-}" ] && command -v nvidia-smi >/dev/null; then
  cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d '.')
  [ -n "$cc" ] && export VILAU_RT_CUDA_ARCHS="$cc"
fi
start=$(date +%s)
if ! pip install -e . --no-build-isolation --no-deps >"$OUT/build.log" 2>&1; then
  echo "build failed; last lines of $OUT/build.log:" >&2
  tail -30 "$OUT/build.log" >&2
  exit 1
fi
echo "build: $(( $(date +%s) - start )) s" | tee -a "$OUT/build.log"
python bench/gpu.py --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_stdout.log"
status="${PIPESTATUS[0]}"
# W4A16 kernel table at LLaMA-2-7B layer shapes (short; after the main table so a slow run of
# it cannot cost the headline numbers).
timeout 90 python bench/w4a16.py --device cuda --json "$OUT/w4a16.json" 2>&1 | tee "$OUT/w4a16.log" || true
# TensorRT plugins (csrc/trt): harness --gpu enqueues each plugin against the CPU references.
# Only TensorRT's headers are needed (VILAU_TRT_INCLUDE; a failure never stops this script).
trt_inc="${VILAU_TRT_INCLUDE:-$PWD/../shared/third_party/tensorrt-11.1/include}"
if [ -f "$trt_inc/NvInferRuntime.h" ]; then
  { cmake -S csrc/trt -B build/trt-gpu -DTensorRT_INCLUDE_DIR="$trt_inc" \
      -DCMAKE_CUDA_ARCHITECTURES="${VILAU_RT_CUDA_ARCHS:-90}" -DVILAU_TRT_BUILD_HARNESS=ON &&
    cmake --build build/trt-gpu -j"$(nproc)" &&
    timeout 300 build/trt-gpu/harness build/trt-gpu/libvilau_trt_plugins.so --gpu; } 2>&1 |
    tee "$OUT/trt_harness.log" || true
else
  echo "no TensorRT headers at $trt_inc (set VILAU_TRT_INCLUDE): plugin harness skipped" |
    tee "$OUT/trt_harness.log"
fi
exit "$status"
