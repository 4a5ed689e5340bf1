#!/usr/bin/env bash
# Peak host memory of running a package on the CPU emulation, against the
# package's weight bytes (issue 10, "weights stay bytes"): the executor runs
# on weights.bin's bytes as read (one copy, no f32), and moe-run holds one
# layer's executor at a time, so the peak resident set should stay under
# the weights plus a small constant, not weights plus f32 copies (measured
# in docs/package.md, "Weights stay bytes").
#
#   bash bench/memory/rss.sh [BUILD_DIR] [-- extra moe-import flags]
#
# Writes a synthetic bf16 Mixtral-like model big enough that weights
# dominate (4 layers, hidden 1024, intermediate 2048, 8 experts: ~400 MB),
# compiles it (--arch none), runs every layer with
# `moe-run PKG --all-layers --backend emu` under /usr/bin/time -v, and prints
# the peak RSS, the weight bytes and their ratio (goal: under 1.3). Not a
# timed test; the work folder is $MOE_RSS_WORK (default: a temporary folder,
# removed at the end).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build}
[ $# -gt 0 ] && shift
[ "${1:-}" = "--" ] && shift
bin=$build/bin
for tool in moe-import moe-compile moe-run; do
  [ -x "$bin/$tool" ] || { echo "rss.sh: $bin/$tool not found (build first)" >&2; exit 1; }
done
[ -x /usr/bin/time ] || { echo "rss.sh: /usr/bin/time (GNU time) not found" >&2; exit 1; }

work=${MOE_RSS_WORK:-}
if [ -z "$work" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
fi
mkdir -p "$work"
tokens=${MOE_RSS_TOKENS:-16}

if [ ! -f "$work/pkg/manifest.json" ]; then
  rm -rf "$work/model" "$work/pkg"
  "$bin/moe-import" --synthetic mixtral --layers 4 --hidden 1024 \
    --intermediate 2048 --experts 8 "$@" -o "$work/model" > /dev/null
  "$bin/moe-compile" "$work/model" --arch none -o "$work/pkg" -q > /dev/null
fi
python3 - "$work/x.npy" "$tokens" "$work/pkg/manifest.json" <<'PY'
import json, struct, sys
path, tokens, manifest = sys.argv[1], int(sys.argv[2]), sys.argv[3]
m = json.load(open(manifest))
hidden = next(l["input_width"] for l in m["layers"] if l["target"] == "")
header = "{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d), }" % (tokens, hidden)
header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
with open(path, "wb") as f:
    f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
    f.write(b"".join(struct.pack("<f", ((i * 7) % 13 - 6) / 8.0)
                     for i in range(tokens * hidden)))
PY

# Once untimed: the emulation compiles (and caches) the kernels.
"$bin/moe-run" "$work/pkg" --all-layers --backend emu --input "$work/x.npy" \
  --output "$work/y.npy"
/usr/bin/time -v "$bin/moe-run" "$work/pkg" --all-layers --backend emu \
  --input "$work/x.npy" --output "$work/y.npy" 2> "$work/time.txt"

python3 - "$work/time.txt" "$work/pkg/manifest.json" "$tokens" <<'PY'
import json, re, sys
text = open(sys.argv[1]).read()
rss_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))
m = json.load(open(sys.argv[2]))
weights = m["weights"]["bytes"]
dtypes = sorted(set(t["dtype"] for t in m["weights"]["tensors"]))
layers = sum(1 for l in m["layers"] if l["target"] == "")
ratio = rss_kib * 1024.0 / weights
print("moe-run --all-layers --backend emu: %d layers, %s tokens, weights %s"
      % (layers, sys.argv[3], "/".join(dtypes)))
print("weight bytes:  %12d (%.1f MiB)" % (weights, weights / 2.0 ** 20))
print("peak RSS:      %12d (%.1f MiB)" % (rss_kib * 1024, rss_kib / 1024.0))
print("peak RSS / weight bytes: %.3f (goal: under 1.3: %s)"
      % (ratio, "met" if ratio < 1.3 else "NOT met"))
PY
