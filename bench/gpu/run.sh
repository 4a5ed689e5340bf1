#!/usr/bin/env bash
# The GPU check, in one call on the GPU machine (CUDA, CMake, a C++ compiler,
# Python with PyTorch and transformers; no MLIR), within 8 minutes
# (MOE_RUN_LIMIT_S, default 480: bench.py gets what the build and the tests
# left, less a reserve for its last worker's kill margin and step 4):
#   1. builds the runtime alone (cmake -S runtime, Release, all cores):
#      libmoe_runtime.so, RuntimeTests and moe-bench;
#   2. runs the runtime's unit tests (RuntimeTests), the real-GPU ones included;
#   3. runs bench/gpu/bench.py on bench/gpu/prepared (written by prepare.sh on
#      the development machine): ceilings, correctness of the small packages
#      and of every shape against the Hugging Face block, and timings of ours,
#      HF eager, torch.compile, cuBLAS and grouped_mm side by side, the old
#      kernel paths beside the new ones (--gemm=mma vs pipelined, pipelined
#      vs --gemm=wgmma; FP8
#      DeepSeek-V3 dequantized to bf16 vs fp8-activations=true) with their
#      ratios, and the quantized shapes (DeepSeek-V3 FP8, gpt-oss MXFP4) on
#      random codes;
#   4. moe-bench --check on the small FP8 / MXFP4 packages against the
#      reference executor's outputs.
# Logs, results.json, table.md (full) and summary.md (short) go to $OUT
# (default bench/results/<date>-<gpu>/); the short table is printed last,
# whatever failed before it.
#
#   bash bench/gpu/run.sh [bench.py options, e.g. --shapes mixtral-8x7b --tokens 1,64]
#
# Environment: OUT, MOE_RUNTIME_BUILD (build folder, default
# /tmp/moe-runtime-build), PYTHON (default python3), MOE_RUN_LIMIT_S (the
# whole call, default 480), MOE_BENCH_BUDGET_S (bench.py --budget-s; default
# what is left of MOE_RUN_LIMIT_S after steps 1-2, less 120 s), MOE_CACHE_DIR
# (kernel cache).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
prepared=$root/bench/gpu/prepared
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr ' ' '_' || true)
out=${OUT:-$root/bench/results/$(date +%Y-%m-%d)-${gpu:-unknown}}
mkdir -p "$out"
rm -f "$out/summary.md"  # never print an older run's table
build=${MOE_RUNTIME_BUILD:-/tmp/moe-runtime-build}
python=${PYTHON:-python3}
export MOE_CACHE_DIR=${MOE_CACHE_DIR:-/tmp/moe-kernel-cache}
start=$(date +%s)
limit=${MOE_RUN_LIMIT_S:-480}
# Kept for after bench.py's deadline: its last worker may run 45 s past it
# (bench.py's kill margin), step 4 runs 2 small packages of at most 30 s
# each, 15 s for the tables and the summary.
reserve=$((45 + 2 * 30 + 15))
status=0
notes=()

# Printed on every exit, set -e aborts included: the short table last.
finish() {
  local rc=$?
  [ "$rc" -ne 0 ] && status=$rc
  echo
  for n in ${notes[@]+"${notes[@]}"}; do echo "$n"; done
  if [ -f "$out/summary.md" ]; then
    cat "$out/summary.md"
  else
    echo "(no summary.md: see the logs in $out)"
  fi
  echo "run.sh: $(( $(date +%s) - start )) s, exit status $status; logs and tables in $out"
  exit "$status"
}
trap finish EXIT

step() { echo "[$(( $(date +%s) - start )) s] $*"; }

[ -d "$prepared" ] || { notes+=("FAILED: $prepared is missing: run bench/gpu/prepare.sh on the development machine and carry bench/gpu/prepared"); exit 1; }

# 1. Build the runtime alone.
step "building the runtime in $build"
generator=()
command -v ninja > /dev/null 2>&1 && generator=(-G Ninja)
if [ -f "$build/CMakeCache.txt" ] && ! grep -q "CMAKE_HOME_DIRECTORY:INTERNAL=$root/runtime\$" "$build/CMakeCache.txt"; then
  rm -rf "$build"  # configured for another checkout
fi
configure() {
  cmake ${generator[@]+"${generator[@]}"} -S "$root/runtime" -B "$build" \
    -DCMAKE_BUILD_TYPE=Release > "$out/cmake.log" 2>&1
}
# A build folder left by another configuration (generator, checkout) is
# started afresh once.
if ! configure && ! { rm -rf "$build" && configure; }; then
  notes+=("FAILED: cmake configure (see cmake.log): $(tail -3 "$out/cmake.log" | tr '\n' ' ')")
  exit 1
fi
if ! cmake --build "$build" -j "$(nproc)" > "$out/build.log" 2>&1; then
  notes+=("FAILED: build (see build.log): $(grep -m3 -i 'error' "$out/build.log" | tr '\n' ' ')")
  exit 1
fi
# The standalone build writes the library into api/ (runtime/api/CMakeLists.txt
# sets no output directory); the full build into lib/.
lib=$build/api/libmoe_runtime.so
[ -f "$lib" ] || lib=$(find "$build" -name 'libmoe_runtime.so' -type f | head -1)
if [ -z "$lib" ] || [ ! -f "$lib" ]; then
  notes+=("FAILED: the build wrote no libmoe_runtime.so (see build.log)")
  exit 1
fi
step "built $lib"

# 2. The runtime's unit tests.
if [ -x "$build/RuntimeTests" ]; then
  step "RuntimeTests"
  if timeout 150 "$build/RuntimeTests" > "$out/runtime-tests.log" 2>&1; then
    notes+=("runtime tests: passed ($(grep -c '^\[       OK \]' "$out/runtime-tests.log" || true) tests; runtime-tests.log)")
  else
    notes+=("runtime tests: FAILED (runtime-tests.log): $(grep -E '^\[  FAILED  \]' "$out/runtime-tests.log" | head -5 | tr '\n' ' ')")
    status=1
  fi
else
  notes+=("runtime tests: RuntimeTests was not built (GoogleTest missing?); see cmake.log")
fi

# 3. The benchmark (it prints its own progress; summary.md is printed last).
budget=${MOE_BENCH_BUDGET_S:-$(( limit - ($(date +%s) - start) - reserve ))}
if [ "$budget" -lt 60 ]; then
  notes+=("bench: only ${budget} s left of MOE_RUN_LIMIT_S=${limit} after the build and the tests; ran with 60 s")
  budget=60
fi
step "bench.py (budget $budget s of the ${limit} s limit)"
if ! "$python" -c "import torch, transformers" > "$out/python-check.log" 2>&1; then
  notes+=("FAILED: $python cannot import torch and transformers (python-check.log)")
  exit 1
fi
if "$python" "$root/bench/gpu/bench.py" --prepared "$prepared" --lib "$lib" --out "$out" \
    --budget-s "$budget" "$@" > "$out/bench.log" 2>&1; then
  notes+=("bench: everything ran and every correctness check passed (bench.log, table.md, results.json)")
else
  notes+=("bench: FAILED or incomplete (bench.log, table.md, results.json; worker logs in logs/)")
  status=1
fi
grep -E '^\[ *[0-9.]+ s\]' "$out/bench.log" || true

# 4. Quantized experts: the small FP8 / MXFP4 packages (real weights) on the
# cuda backend against the reference executor's outputs (bench.py timed the
# quantized shapes on random codes, with their floors from the bytes as
# stored).
bench_bin=$(find "$build" -name moe-bench -type f -perm -u+x | head -1)
if [ -d "$prepared/quant" ] && [ -n "$bench_bin" ]; then
  step "moe-bench --check on the small quantized packages (quant.log)"
  for check in "$prepared"/quant/*.check; do
    [ -d "$check" ] || continue
    name=$(basename "$check" .check)
    echo "== $name" >> "$out/quant.log"
    if ! timeout 30 "$bench_bin" "$prepared/quant/$name" --backend cuda --repeat 20 \
        --check "$check" --tokens 1,8,64,512 --json "$out/quant-$name.json" \
        >> "$out/quant.log" 2>&1; then
      notes+=("quantized $name: FAILED (quant.log)")
      status=1
    fi
  done
  notes+=("quantized experts: small packages checked in quant.log and quant-*.json; shapes in table.md")
fi
exit "$status"
