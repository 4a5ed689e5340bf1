#!/usr/bin/env bash
# Compile-time benchmark: ahead-of-time compilation of a full-size,
# shape-only DeepSeek-V3 (61 layers, the first 3 dense, 256 experts of
# 7168 x 2048, bf16) with moe-compile, cold (empty kernel cache) and warm
# (same cache), against a 1-layer model compiled cold in the same run (what
# the kernels of one layer cost). Prints times, NVRTC calls, cache hits,
# kernels against launch sites, peak RSS, and the goals as PASS/MISS lines.
# A benchmark, not a test: run it by hand after `bash scripts/build.sh`.
#
#   bash bench/compile/run.sh [--layers N] [--arch sm_90a[,sm_80]]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${MOE_BUILD_DIR:-$root/build}/bin
layers=61
arch=sm_90a
while [ $# -gt 0 ]; do
  case "$1" in
    --layers) layers=$2; shift 2 ;;
    --arch) arch=$2; shift 2 ;;
    *) echo "run.sh: unknown argument '$1' (--layers N, --arch LIST)" >&2; exit 2 ;;
  esac
done
for tool in moe-import moe-compile; do
  [ -x "$bin/$tool" ] || { echo "run.sh: $bin/$tool is missing: build first (bash scripts/build.sh)" >&2; exit 1; }
done
[ -x /usr/bin/time ] || { echo "run.sh: /usr/bin/time is missing (apt-get install time)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

model() { # name layers dense
  "$bin/moe-import" --synthetic deepseek_v3 --shapes-only --fused-experts \
    --dtype bf16 --layers "$2" --dense-layers "$3" --hidden 7168 \
    --intermediate 2048 --experts 256 --top-k 8 --n-group 8 --topk-group 4 \
    -o "$work/$1" > /dev/null
}

# compile NAME MODEL CACHE: runs moe-compile, leaves its summary in
# $work/NAME.txt and "seconds peak_kib" in $work/NAME.time.
compile() {
  MOE_CACHE_DIR="$3" /usr/bin/time -f "%e %M" -o "$work/$1.time" \
    "$bin/moe-compile" "$work/$2" --weights none --activation-type bf16 \
    --arch "$arch" -o "$work/$1.pkg" -q > "$work/$1.txt"
}
field() { # NAME regex -> first capture group of the summary
  sed -nE "s/.*$2.*/\\1/p" "$work/$1.txt" | head -n 1
}

echo "compile benchmark: DeepSeek-V3 shapes, $layers layers (3 dense), arch $arch"
model one 4 3        # one MoE layer (layer 3) after the 3 dense ones
model full "$layers" 3
compile one one "$work/cache-one"
compile cold full "$work/cache"
compile warm full "$work/cache"

printf "\n| run | seconds | peak RSS MiB | NVRTC calls | cache hits | kernels | launch sites |\n"
printf "|---|---|---|---|---|---|---|\n"
for run in one cold warm; do
  read -r secs kib < "$work/$run.time"
  printf "| %s | %s | %d | %s | %s | %s | %s |\n" "$run" "$secs" $((kib / 1024)) \
    "$(field $run 'NVRTC calls: ([0-9]+)')" \
    "$(field $run 'cache hits: ([0-9]+ of [0-9]+)')" \
    "$(field $run 'kernels: ([0-9]+) distinct')" \
    "$(field $run 'distinct for ([0-9]+) launch sites')"
done
read -r one_s _ < "$work/one.time"
read -r cold_s _ < "$work/cold.time"
read -r warm_s _ < "$work/warm.time"
/usr/bin/python3 - "$one_s" "$cold_s" "$warm_s" "$layers" <<'PY'
import sys
one, cold, warm, layers = map(float, sys.argv[1:])
print(f"\ncold {int(layers)}-layer / cold 1-layer: {cold / one:.2f}x "
      f"(without kernel sharing the kernels alone would cost ~{layers - 3:.0f}x)")
print(f"warm / cold: {warm / cold:.3f}")
print(f"goal cold < 30 s: {'PASS' if cold < 30 else 'MISS'} ({cold:.1f} s)")
print(f"goal warm < 1 s: {'PASS' if warm < 1 else 'MISS'} ({warm:.2f} s)")
PY
