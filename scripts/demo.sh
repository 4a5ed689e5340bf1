#!/usr/bin/env bash
# The main job on a built-in default: installs what is missing, builds,
# generates a small built-in MoE model in Hugging Face layout, compiles it
# ahead of time into a package (import, --moe-optimize, CUDA kernels, NVRTC
# for sm_90a), runs every layer with the best backend available (cuda on a
# GPU, the CPU emulation of the same kernels otherwise), checks the result
# against the reference executor and prints a short report.
#
#   MOE_DEMO_ARCH=deepseek_v3 bash scripts/demo.sh   # another architecture
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${MOE_BUILD_DIR:-$root/build}
arch=${MOE_DEMO_ARCH:-qwen2_moe}
tokens=${MOE_DEMO_TOKENS:-16}
started=$(date +%s)

# The build log goes inside the (ignored) build folder: the demo leaves the
# work tree as it found it.
mkdir -p "$build"
echo "== building moe-opt (log: $build/demo-build.log)"
bash "$root/scripts/build.sh" > "$build/demo-build.log" 2>&1 || {
  tail -50 "$build/demo-build.log"; exit 1; }
bin="$build/bin"
work=$(mktemp -d "${TMPDIR:-/tmp}/moe-demo.XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "== built-in model: synthetic $arch (deterministic, seed 0)"
"$bin/moe-import" --synthetic "$arch" --seed 0 -o "$work/model"

echo "== what --moe-optimize does to each MoE layer"
"$bin/moe-import" "$work/model" -o "$work/model.mlir"
"$bin/moe-opt" "$work/model.mlir" --moe-optimize=stats=true -o /dev/null

echo "== moe-compile: import, optimise, generate kernels, compile, package"
cuda_home=${CUDA_HOME:-/usr/local/cuda}
if [ -e "$cuda_home/lib64/libnvrtc.so" ]; then archs=sm_90a; else
  archs=none; echo "(no NVRTC under $cuda_home: package without cubins)"; fi
# f32 activations (moe-compile's default is the checkpoint's bf16): the
# report compares the kernels with the reference executor to 1e-4.
"$bin/moe-compile" "$work/model" --arch "$archs" --activation-type f32 \
  -o "$work/pkg" -q

backend=emu
if command -v nvidia-smi > /dev/null 2>&1 && nvidia-smi -L > /dev/null 2>&1; then
  backend=cuda
fi
echo "== running every MoE layer on the $backend backend, $tokens tokens"
/usr/bin/python3 - "$work" "$tokens" <<'PY'
import re, sys
import numpy as np
work, tokens = sys.argv[1], int(sys.argv[2])
hidden = int(re.search(r"tensor<\?x(\d+)x", open(work + "/model.mlir").read()).group(1))
x = np.random.default_rng(0).standard_normal((tokens, hidden)).astype(np.float32)
np.save(work + "/x.npy", x)
PY
"$bin/moe-run" "$work/pkg" --all-layers --backend "$backend" --input "$work/x.npy" \
  --output "$work/y.npy" --routing-out "$work/r" --repeat 5 --time
"$bin/moe-run" "$work/pkg" --all-layers --backend reference --input "$work/x.npy" \
  --output "$work/ref.npy"

echo "== report"
/usr/bin/python3 - "$work" "$backend" "$(( $(date +%s) - started ))" <<'PY'
import glob, json, os, sys
import numpy as np
work, backend, elapsed = sys.argv[1], sys.argv[2], sys.argv[3]
m = json.load(open(work + "/pkg/manifest.json"))
y, ref = np.load(work + "/y.npy"), np.load(work + "/ref.npy")
err = float(np.abs(y - ref).max() / max(np.abs(ref).max(), 1e-30))
layers = [l["layer"] for l in m["layers"]]
size = sum(os.path.getsize(f) for f in glob.glob(work + "/pkg/*"))
print(f"model      : {m['model'].get('model_type')} ({len(layers)} MoE layers: {layers})")
print(f"package    : {len(m['kernels'])} kernels, cubins for {[c['arch'] for c in m['cubins']] or 'none'}, {size / 1e6:.1f} MB")
print(f"backend    : {backend}")
print(f"max error  : {err:.2e} relative to the reference executor ({'OK' if err < 1e-4 else 'TOO LARGE'})")
ids = np.load(sorted(glob.glob(work + '/r.L*.ids.npy'))[0])
print(f"routing    : token 0 -> experts {ids[0].tolist()} in layer {layers[0]}")
print(f"wall time  : {elapsed} s (build included)")
sys.exit(0 if err < 1e-4 else 1)
PY
