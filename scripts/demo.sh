#!/usr/bin/env bash
# The main job on a built-in default: installs what is missing, builds,
# generates a small built-in MoE model in Hugging Face layout, imports it,
# shows its IR before and after the optimisation passes, and runs every MoE
# layer on the reference backend.
#
#   MOE_DEMO_ARCH=deepseek_v3 bash scripts/demo.sh   # another architecture
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${MOE_BUILD_DIR:-$root/build}
arch=${MOE_DEMO_ARCH:-qwen2_moe}
tokens=${MOE_DEMO_TOKENS:-16}

bash "$root/scripts/build.sh" > "$build.demo-build.log" 2>&1 || {
  cat "$build.demo-build.log"; exit 1; }
echo "== built moe-opt (log: $build.demo-build.log)"

bin="$build/bin"
work=$(mktemp -d "${TMPDIR:-/tmp}/moe-demo.XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "== built-in model: synthetic $arch (deterministic, seed 0)"
"$bin/moe-import" --synthetic "$arch" --seed 0 -o "$work/model"
echo
echo "== moe-import $arch -> IR (first MoE layer shown)"
"$bin/moe-import" "$work/model" -o "$work/model.mlir"
first=$(grep -o 'moe.layer = [0-9]*' "$work/model.mlir" | head -1 | grep -o '[0-9]*$')
awk -v l="@layer_$first(" 'index($0, l) {p=1} p {print} p && /^  }/ {exit}' "$work/model.mlir" | cut -c1-160
echo
echo "== after moe-opt --moe-optimize (op and kernel counts per layer first)"
"$bin/moe-opt" "$work/model.mlir" --moe-optimize=stats=true -o "$work/opt.mlir"
awk -v l="@layer_$first(" 'index($0, l) {p=1} p {print} p && /^  }/ {exit}' "$work/opt.mlir" | cut -c1-160
echo
echo "== running every MoE layer on the reference backend, $tokens tokens"
/usr/bin/python3 - "$work" "$tokens" <<'PY'
import sys, numpy as np
work, tokens = sys.argv[1], int(sys.argv[2])
import re
text = open(work + "/model.mlir").read()
hidden = int(re.search(r"tensor<\?x(\d+)x", text).group(1))
np.save(work + "/x.npy", np.random.default_rng(0).standard_normal((tokens, hidden)).astype(np.float32))
PY
for layer in $(grep -o 'moe.layer = [0-9]*' "$work/opt.mlir" | grep -o '[0-9]*$'); do
  start=$(date +%s%N)
  "$bin/moe-run" "$work/opt.mlir" --layer "$layer" --input "$work/x.npy" \
    --output "$work/y$layer.npy" --routing-out "$work/r$layer"
  end=$(date +%s%N)
  /usr/bin/python3 - "$work" "$layer" "$(( (end - start) / 1000000 ))" <<'PY'
import sys, numpy as np
work, layer, ms = sys.argv[1], sys.argv[2], sys.argv[3]
y = np.load(f"{work}/y{layer}.npy"); ids = np.load(f"{work}/r{layer}.ids.npy")
w = np.load(f"{work}/r{layer}.weights.npy")
used = np.unique(ids[ids >= 0])
print(f"layer {layer}: y {y.shape} |y|max {np.abs(y).max():.4f}, "
      f"experts used {len(used)}, token 0 -> experts {ids[0].tolist()} "
      f"weights {np.round(w[0], 4).tolist()} ({ms} ms)")
PY
done
echo "== done"
