#!/usr/bin/env bash
# CPU-side preparation of the GPU check (any machine with the project built):
# compiles the built-in model of each architecture into a package with
# sm_90a cubins, and writes reference inputs and outputs (the reference
# executor's) for several token counts. Everything goes to
# bench/gpu/prepared/, which bench/gpu/run.sh uses on the GPU machine (carry
# that folder: it is ignored by git).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${MOE_BIN:-$root/build/bin}
out=$root/bench/gpu/prepared
tokens=${MOE_BENCH_TOKENS:-1 8 64 512}
rm -rf "$out" && mkdir -p "$out"
for arch in mixtral qwen3_moe olmoe deepseek_v3 gpt_oss; do
  work=$(mktemp -d)
  "$bin/moe-import" --synthetic "$arch" --seed 1 -o "$work/model" > /dev/null
  "$bin/moe-compile" "$work/model" --arch sm_90a -o "$out/$arch" -q > /dev/null
  mkdir -p "$out/$arch.check"
  hidden=$(/usr/bin/python3 -c "import json,sys; m=json.load(open(sys.argv[1])); print(m['layers'][0]['input_width'])" "$out/$arch/manifest.json")
  for t in $tokens; do
    /usr/bin/python3 - "$work/x.npy" "$out/$arch.check/x_$t.f32" "$t" "$hidden" <<'PY'
import sys
import numpy as np
x = np.random.default_rng(int(sys.argv[3])).standard_normal(
    (int(sys.argv[3]), int(sys.argv[4]))).astype(np.float32)
np.save(sys.argv[1], x)
x.tofile(sys.argv[2])
PY
    for layer in $(/usr/bin/python3 -c "import json,sys; print(' '.join(str(l['layer']) for l in json.load(open(sys.argv[1]))['layers']))" "$out/$arch/manifest.json"); do
      "$bin/moe-run" "$out/$arch" --layer "$layer" --input "$work/x.npy" \
        --output "$work/y.npy" --backend reference
      /usr/bin/python3 -c "import numpy as np,sys; np.load(sys.argv[1]).astype(np.float32).tofile(sys.argv[2])" \
        "$work/y.npy" "$out/$arch.check/y_${layer}_$t.f32"
    done
  done
  rm -rf "$work"
  echo "prepared $arch"
done
du -sh "$out"
