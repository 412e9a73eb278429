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
exit "$status"
