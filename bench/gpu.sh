#!/usr/bin/env bash
# Build vilau_rt on the GPU machine (no network: only the preinstalled torch is used) and run
# bench/gpu.py; every log and bench.json land in $OUT (default ./bench_out).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/bench_out}"
mkdir -p "$OUT"
export OUT
start=$(date +%s)
if ! pip install -e . --no-build-isolation --no-deps >"$OUT/build.log" 2>&1; then
  echo "build failed; last lines of $OUT/build.log:" >&2
  tail -30 "$OUT/build.log" >&2
  exit 1
fi
echo "build: $(( $(date +%s) - start )) s" | tee -a "$OUT/build.log"
python bench/gpu.py --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_stdout.log"
exit "${PIPESTATUS[0]}"
