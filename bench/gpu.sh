#!/usr/bin/env bash
# One GPU run: build vilau_rt with CUDA, prove the module has CUDA, run the CUDA kernel and
# fixture parity tests, then bench/gpu.py (7B-256 timings), bench/w4a16.py (kernel table) and
# bench/rvq_encode.py (the RVQ search).
# Every step is time-boxed inside one overall deadline, a failing step does not stop the later ones, and
# results are written as they come. Files in $OUT (default ./bench_out), at most 7:
#   run.log      everything this script and its steps print (build output included)
#   bench.json   gpu.py results, rewritten after every section
#   bench.log    gpu.py's own log
#   pytest.log   the CUDA kernel and fixture parity tests
#   w4a16.json   the W4A16 kernel table
#   rvq.json     the RVQ encode table
#   trt_harness.log  the TensorRT plugin harness (GPU runs with TensorRT headers only)
#
# Usage: bench/gpu.sh [--dry-run] [--skip-build] [-- ARGS for gpu.py]
#   --dry-run     the same steps on the CPU with tiny shapes (gpu.py --cpu-smoke); no CUDA needed
#   --skip-build  use the vilau_rt already installed for $PYTHON (CI's dry run does this)
# Environment: PYTHON (default python3), OUT, VILAU_RT_CUDA_ARCHS (default: the card's, else 90),
#   BENCH_DEADLINE_S (default 540: inside the device tool's 600 s per call).
#
# The GPU machine has no network. Before the run, on a machine with network:
#   mkdir -p bench/.wheels && python3 -m pip download pybind11 cmake ninja setuptools wheel \
#     --python-version 3.12 --only-binary=:all: --platform manylinux2014_x86_64 -d bench/.wheels
#   cp -r ../shared/fixtures bench/.fixtures
# and name bench/.wheels and bench/.fixtures in the device tool's carry list (both git-ignored).
# Each wheel is installed only if what it provides is missing, one at a time, so a wheel for the
# wrong Python cannot stop the others.
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=0
BUILD=1
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1; shift ;;
    --skip-build) BUILD=0; shift ;;
    --) shift; break ;;
    *) break ;;
  esac
done

PY="${PYTHON:-python3}"
OUT="${OUT:-$PWD/bench_out}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
export OUT PYTHONUNBUFFERED=1
export PATH="/usr/local/cuda/bin:$PATH"
DEADLINE=$(( $(date +%s) + ${BENCH_DEADLINE_S:-540} ))
exec > >(tee -a "$OUT/run.log") 2>&1
TEE_PID=$!
# let tee write the last lines before the script's exit status is reported
trap 'exec >&- 2>&-; wait "$TEE_PID" 2>/dev/null' EXIT

say() { echo "[gpu.sh $(date +%H:%M:%S)] $*"; }
left() { echo $(( DEADLINE - $(date +%s) )); }
# step NAME BUDGET_S RESERVE_S CMD...: runs CMD under timeout min(BUDGET, time left - RESERVE),
# where RESERVE is kept for the steps after it. Returns CMD's status (124: timed out).
step() {
  local name="$1" budget="$2" reserve="$3"
  shift 3
  local t=$(( $(left) - reserve ))
  [ "$t" -gt "$budget" ] && t="$budget"
  if [ "$t" -lt 10 ]; then
    say "$name: skipped, $(left) s left"
    return 124
  fi
  say "$name: start (timeout ${t} s): $*"
  local t0 rc
  t0=$(date +%s)
  timeout --kill-after=10 "$t" "$@"
  rc=$?
  say "$name: exit $rc after $(( $(date +%s) - t0 )) s"
  return "$rc"
}

say "python: $(command -v "$PY") ($("$PY" --version 2>&1)); out: $OUT; dry run: $DRY"
# console scripts of wheels installed below (cmake, ninja) land next to this Python's others
PATH="$("$PY" -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"

# ---- offline wheels: each only when its module or command is missing
if compgen -G "bench/.wheels/*.whl" >/dev/null; then
  for whl in bench/.wheels/*.whl; do
    name="$(basename "$whl")"
    name="${name%%-*}"
    case "$name" in
      cmake | ninja) have() { command -v "$name" >/dev/null; } ;;
      *) have() { "$PY" -c "import ${name,,}" >/dev/null 2>&1; } ;;
    esac
    if have; then
      say "wheel $name: already present, not installed"
    elif "$PY" -m pip install --no-index --no-deps "$whl" >/dev/null 2>&1; then
      say "wheel $(basename "$whl"): installed"
    else
      say "wheel $(basename "$whl"): pip refused it (wrong Python or platform?)"
    fi
  done
fi

# ---- build (CUDA forced outside the dry run: a build without nvcc must fail, not go CPU-only)
if [ "$DRY" = 1 ]; then
  export VILAU_RT_CUDA=0
else
  export VILAU_RT_CUDA=1
  if [ -z "${VILAU_RT_CUDA_ARCHS:-}" ]; then
    cc="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d '. ')" || true
    export VILAU_RT_CUDA_ARCHS="${cc:-90}"
  fi
  say "nvcc: $(command -v nvcc || echo MISSING); archs: $VILAU_RT_CUDA_ARCHS"
fi
if [ "$BUILD" = 1 ]; then
  if ! step build 300 150 "$PY" -m pip install -e . --no-build-isolation --no-deps; then
    say "build failed: nothing can be timed (see the build output above)"
    exit 1
  fi
fi

# ---- the module must have what we are about to time
if ! step build_info 60 120 "$PY" - "$DRY" <<'EOF'
import sys
from vilau_rt import _C
info = _C.build_info()
print("build info:", info, "CUDA devices:", _C.cuda_device_count())
if sys.argv[1] != "1" and not (info["cuda"] and _C.cuda_device_count() > 0):
    sys.exit("vilau_rt._C was built without CUDA or sees no device: refusing to time")
EOF
then
  exit 1
fi

status=0
fixtures=""
[ -d bench/.fixtures ] && fixtures="$PWD/bench/.fixtures"
[ -z "$fixtures" ] && [ -d ../shared/fixtures ] && fixtures="$(cd ../shared/fixtures && pwd)"
if [ -n "$fixtures" ]; then
  export VILAU_RT_FIXTURES="$fixtures"
  say "fixtures: $fixtures"
else
  say "fixtures: none (carry bench/.fixtures): fixture parity tests will skip"
fi

# ---- kernel and fixture parity tests on the device first (the CUDA-parametrized cases; on the
# CPU of a dry run they skip), then the timings: a wrong kernel makes its timing moot
step pytest 90 150 "$PY" -m pytest -q -p no:cacheprovider -k cuda \
  tests/ops/test_w4a16_ops.py tests/ops/test_w4a16_cuda_paths.py tests/ops/test_rvq_ops.py \
  tests/ops/test_sampling_kernels.py tests/backends/test_native_backend.py >"$OUT/pytest.log" 2>&1
rc=$?
tail -3 "$OUT/pytest.log"
# 5: no test selected; anything else non-zero is a failure (124: out of time)
[ "$rc" = 0 ] || [ "$rc" = 5 ] || status=1

# ---- gpu.py: the headline table (bench.json rewritten after every section)
if [ "$DRY" = 1 ]; then
  step gpu.py 120 60 "$PY" bench/gpu.py --out "$OUT" --skip-checks --cpu-smoke "$@" || status=1
else
  step gpu.py 330 80 "$PY" bench/gpu.py --out "$OUT" --skip-checks "$@" || status=1
fi

# ---- W4A16 kernel table (CUDA events over back-to-back calls)
if [ "$DRY" = 1 ]; then
  step w4a16.py 60 0 "$PY" bench/w4a16.py --device cpu --smoke --json "$OUT/w4a16.json" || status=1
else
  step w4a16.py 90 0 "$PY" bench/w4a16.py --device cuda --json "$OUT/w4a16.json" || status=1
fi

# ---- RVQ encode: the CUDA kernel (one block per row) against torch's search, 7B shapes
if [ "$DRY" = 1 ]; then
  step rvq_encode.py 30 0 "$PY" bench/rvq_encode.py --device cpu --smoke --json "$OUT/rvq.json" ||
    status=1
else
  step rvq_encode.py 40 0 "$PY" bench/rvq_encode.py --device cuda --json "$OUT/rvq.json" ||
    status=1
fi

# ---- TensorRT plugins (csrc/trt): harness --gpu enqueues each plugin against CPU references.
# Needs only TensorRT's headers (VILAU_TRT_INCLUDE, default: the 11.1 set in ../shared, which
# does not travel: carry it as bench/.trt-include); the last step, so it costs nothing else.
trt_inc="${VILAU_TRT_INCLUDE:-}"
[ -z "$trt_inc" ] && [ -d bench/.trt-include ] && trt_inc="$PWD/bench/.trt-include"
[ -z "$trt_inc" ] && trt_inc="$PWD/../shared/third_party/tensorrt-11.1/include"
if [ "$DRY" = 1 ]; then
  say "trt harness: skipped in a dry run (no GPU)"
elif [ -f "$trt_inc/NvInferRuntime.h" ]; then
  trt_build() {
    cmake -S csrc/trt -B build/trt-gpu -DTensorRT_INCLUDE_DIR="$trt_inc" \
      -DCMAKE_CUDA_ARCHITECTURES="${VILAU_RT_CUDA_ARCHS:-90}" -DVILAU_TRT_BUILD_HARNESS=ON &&
      cmake --build build/trt-gpu -j"$(nproc)" &&
      build/trt-gpu/harness build/trt-gpu/libvilau_trt_plugins.so --gpu
  }
  step trt-harness 150 0 bash -c "$(declare -f trt_build); trt_build" >"$OUT/trt_harness.log" 2>&1 ||
    status=1
  tail -3 "$OUT/trt_harness.log"
else
  say "trt harness: no TensorRT headers at $trt_inc (set VILAU_TRT_INCLUDE)"
fi

say "done: status $status; files: $(cd "$OUT" && ls | tr '\n' ' ')"
exit "$status"
