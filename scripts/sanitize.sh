#!/usr/bin/env bash
# Builds moe-opt with AddressSanitizer and UndefinedBehaviorSanitizer
# (-DMOE_SANITIZE=address,undefined) into ${MOE_ASAN_BUILD_DIR:-build-asan}
# and runs the tests that the hostile-input fuzzers exercise: Import,
# Reference, Package, Fuzz, the emulation's cache and bad-input tests and the
# GoogleTest units. Any sanitizer report fails the run.
#
#   bash scripts/sanitize.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${MOE_ASAN_BUILD_DIR:-$root/build-asan}

bash "$root/scripts/install-deps.sh"
export CCACHE_BASEDIR="$root"
export CCACHE_DIR=${CCACHE_DIR:-${HOME:-/root}/.cache/moe-opt-ccache}
if [ ! -f "$build/build.ninja" ]; then
  cmake -G Ninja -S "$root" -B "$build" \
    -DCMAKE_BUILD_TYPE=Release \
    -DMOE_SANITIZE=address,undefined \
    -DMLIR_DIR=/usr/lib/llvm-22/lib/cmake/mlir \
    -DLLVM_USE_LINKER=lld \
    -DLLVM_EXTERNAL_LIT=/usr/lib/llvm-22/bin/lit
fi
cmake --build "$build" -j "${MOE_JOBS:-2}"

# Debian's MLIR is not instrumented: user poisoning and container-overflow
# checks would report its (correct) use of its own containers.
export ASAN_OPTIONS=allow_user_poisoning=0:detect_container_overflow=0:detect_leaks=0:abort_on_error=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
tests=(
  "$build/test/Import"
  "$build/test/Reference"
  "$build/test/Package"
  "$build/test/Fuzz"
  "$build/test/Backend/backend-errors.test"
  "$build/test/Backend/emu-cache.test"
  "$build/test/unit"
)
/usr/lib/llvm-22/bin/lit -sv "${tests[@]}"
