#!/usr/bin/env bash
# Configures and builds moe-opt into ${MOE_BUILD_DIR:-build}
# (MOE_CMAKE_ARGS: more options for the first configure, e.g. -DMOE_SANITIZE).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${MOE_BUILD_DIR:-$root/build}

bash "$root/scripts/install-deps.sh"

# ccache hits across clones in other folders only with a base directory.
export CCACHE_BASEDIR="$root"
export CCACHE_DIR=${CCACHE_DIR:-${HOME:-/root}/.cache/moe-opt-ccache}

if [ ! -f "$build/build.ninja" ]; then
  cmake -G Ninja -S "$root" -B "$build" \
    -DCMAKE_BUILD_TYPE=Release \
    -DMLIR_DIR=/usr/lib/llvm-22/lib/cmake/mlir \
    -DLLVM_USE_LINKER=lld \
    -DLLVM_EXTERNAL_LIT=/usr/lib/llvm-22/bin/lit ${MOE_CMAKE_ARGS:-}
fi
# Two jobs: the machine has 2 cores and MLIR-heavy files take ~750 MB each.
cmake --build "$build" -j "${MOE_JOBS:-2}"
