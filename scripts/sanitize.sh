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

MOE_BUILD_DIR="$build" MOE_CMAKE_ARGS="-DMOE_SANITIZE=address,undefined" \
  bash "$root/scripts/build.sh"

# Debian's MLIR is not instrumented: user poisoning and container-overflow
# checks would report its (correct) use of its own containers.
export ASAN_OPTIONS=allow_user_poisoning=0:detect_container_overflow=0:detect_leaks=0:abort_on_error=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# The Python tests load the instrumented libmoe_runtime.so into an
# uninstrumented python3: the ASan runtime must be loaded first.
LD_PRELOAD="$(c++ -print-file-name=libasan.so)"
export LD_PRELOAD
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
