#!/usr/bin/env bash
# The GPU check, in one call on the GPU machine (CUDA, CMake, a C++
# compiler; no MLIR), well under 8 minutes:
#   1. builds the runtime alone (cmake -S runtime) with moe-bench;
#   2. runs the runtime's unit tests, the real-GPU one included;
#   3. for each package prepared by bench/gpu/prepare.sh: checks the cuda
#      backend against the reference executor's outputs and times every
#      layer for several token counts (median of repeats, warm-up first,
#      random inputs, never zeros).
# Logs and the table go to $OUT (default bench/results/<date>-<gpu>/).
#
# Not yet here (see the issue's closing note): the Hugging Face module,
# torch.compile and cuBLAS baselines and the memory/matrix floors at the
# shapes of shared/reference/performance.md.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
prepared=$root/bench/gpu/prepared
[ -d "$prepared" ] || { echo "run bench/gpu/prepare.sh on the development machine first (and carry bench/gpu/prepared)"; exit 1; }
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr ' ' '_' || echo unknown)
out=${OUT:-$root/bench/results/$(date +%Y-%m-%d)-$gpu}
mkdir -p "$out"
build=${MOE_RUNTIME_BUILD:-/tmp/moe-runtime-build}
cmake -S "$root/runtime" -B "$build" -DCMAKE_BUILD_TYPE=Release > "$out/cmake.log" 2>&1
cmake --build "$build" -j "$(nproc)" > "$out/build.log" 2>&1
if [ -x "$build/RuntimeTests" ]; then
  "$build/RuntimeTests" > "$out/runtime-tests.log" 2>&1 && echo "runtime tests: passed" || echo "runtime tests: FAILED (see runtime-tests.log)"
fi
export MOE_CACHE_DIR=$out/kernel-cache
status=0
{
  echo "# moe-opt GPU check, $(date -u +%Y-%m-%dT%H:%MZ), $gpu"
  for pkg in "$prepared"/*/; do
    pkg=${pkg%/}
    case "$pkg" in *.check) continue;; esac
    echo
    echo "## $(basename "$pkg")"
    "$build/bin/moe-bench" "$pkg" --backend cuda --tokens 1,8,64,512 --repeat 50 --check "$pkg.check" || status=1
  done
} 2>&1 | tee "$out/table.md"
exit $status
