#!/usr/bin/env bash
# CPU-side preparation of the GPU check and benchmark (any machine with the
# project built; no GPU): writes bench/gpu/prepared/, which bench/gpu/run.sh
# uses on the GPU machine (carry that folder: git ignores it).
#
#   shapes/  the five benchmark layer shapes (the shapes list below), each a
#            shape-only package (moe-compile --weights none: kernels and
#            sm_90a cubin for that shape, no weights; the GPU side binds the
#            weights of a Hugging Face module built there) and the HF
#            config.json it was compiled from; index.json lists them.
#            Beside each, NAME.gemm-mma: the same layer with moe-compile
#            --gemm=mma (the single-stage mma.sync k loop the pipelined
#            default replaced), listed in the entry's "compare" with the
#            token counts at which the grouped kernels run (bench.py times
#            both paths there, on the same bound weights), and
#            NAME.gemm-wgmma: --gemm=wgmma (the warpgroup wgmma.mma_async
#            k loop, sm_90a), and NAME.gemm-tma: --gemm=tma (weight tiles
#            by TMA tensor copies into an mbarrier pipeline), each compared
#            with the pipelined default the same way.
#   small/   the built-in small models of the same architectures, packages
#            with their weights, the model folders (for the HF modules) and
#            the reference executor's outputs for several token counts;
#            index.json lists them.
#   quant/   block-scaled experts as released: shape-only packages of
#            DeepSeek-V3 FP8 (128 x 128 f32 scales) and gpt-oss-20b MXFP4
#            at the shapes above (run.sh times them with moe-bench
#            --random-weights, the decode floor from the quantized bytes),
#            and small FP8 / MXFP4 packages with weights and the reference
#            executor's outputs (moe-bench --check). index.json lists the
#            shapes (bench.py binds random codes on the GPU and times them);
#            deepseek-v3-fp8.fp8-activations is the FP8 shape compiled from
#            IR optimized with --moe-optimize="fp8-activations=true" (FP8
#            tensor cores on the grouped path), compared there with the
#            default (codes dequantized to bf16), and
#            deepseek-v3-fp8.fp8-activations.gemm-mma the same with the
#            single-stage k loop (--gemm=mma), compared with the pipelined
#            one.
#
# Every shapes/ and small/ package has bf16 weights and bf16 activations (what is timed).
# Environment: MOE_BIN (default build/bin), MOE_PREPARED (default
# bench/gpu/prepared), MOE_BENCH_TOKENS (small models' token counts),
# MOE_BENCH_SHAPES (a subset of the shape names).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${MOE_BIN:-$root/build/bin}
out=${MOE_PREPARED:-$root/bench/gpu/prepared}
tokens=${MOE_BENCH_TOKENS:-1 8 64 512}
py=/usr/bin/python3
for tool in moe-import moe-opt moe-compile moe-run; do
  [ -x "$bin/$tool" ] || { echo "prepare.sh: $bin/$tool is missing: build first (bash scripts/build.sh)" >&2; exit 1; }
done

# The token counts of a shape (bench.py times every path at these).
shape_tokens="1 8 64 512 4096 16384"

# The token counts among $shape_tokens at which package $1 runs its grouped
# (prefill) expert kernels: the launches of moe.fused_experts without an
# upper slot gate, active once T * slots_per_token reaches min_slots. The
# other paths (--gemm, fp8-activations) change only those kernels.
grouped_tokens() {
  $py - "$1/manifest.json" $shape_tokens <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
gates = [(l["min_slots"], l["slots_per_token"]) for layer in m["layers"]
         for l in layer["launches"] if l["origin"].startswith("moe.fused_experts")
         and l["max_slots"] is None]
if not gates:
    sys.exit("%s: no grouped expert launch" % sys.argv[1])
print(",".join(t for t in sys.argv[2:]
               if any(int(t) * per >= low for low, per in gates)))
PY
}

# The shared experts' total intermediate width of a config.json.
shared_intermediate() {
  $py -c "import json,sys; c=json.load(open(sys.argv[1])); print(c.get('n_shared_experts', 0) * c.get('moe_intermediate_size', 0) if c['model_type'].startswith('deepseek') else c.get('shared_expert_intermediate_size', 0))" "$1"
}

# name arch hidden intermediate experts top_k layers extra-flags
shapes="
mixtral-8x7b mixtral 4096 14336 8 2 1
qwen3-30b-a3b qwen3_moe 2048 768 128 8 1
deepseek-v3 deepseek_v3 7168 2048 256 8 2 --n-group=8 --topk-group=4
olmoe-1b-7b olmoe 2048 1024 64 8 1
gpt-oss-20b gpt_oss 2880 2880 32 4 1
"
wanted=${MOE_BENCH_SHAPES:-}

rm -rf "$out"
mkdir -p "$out/shapes" "$out/small"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The package's first MoE layer and its input width, from manifest.json.
first_layer() {
  $py -c "import json,sys; m=json.load(open(sys.argv[1])); l=[x for x in m['layers'] if x['target']==''][0]; print(l['layer'], l['input_width'])" "$1/manifest.json"
}

entries=()
while read -r name arch hidden inter experts k layers extra; do
  [ -n "$name" ] || continue
  if [ -n "$wanted" ] && ! [[ " $wanted " == *" $name "* ]]; then continue; fi
  # shellcheck disable=SC2086
  "$bin/moe-import" --synthetic "$arch" --shapes-only --fused-experts \
    --dtype bf16 --layers "$layers" --hidden "$hidden" \
    --intermediate "$inter" --experts "$experts" --top-k "$k" $extra \
    -o "$work/$name" > /dev/null
  "$bin/moe-compile" "$work/$name" --weights none --activation-type bf16 \
    --arch sm_90a -o "$out/shapes/$name" -q > "$out/shapes/$name.compile.txt"
  "$bin/moe-compile" "$work/$name" --weights none --activation-type bf16 \
    --arch sm_90a --gemm=mma -o "$out/shapes/$name.gemm-mma" -q \
    > "$out/shapes/$name.gemm-mma.compile.txt"
  "$bin/moe-compile" "$work/$name" --weights none --activation-type bf16 \
    --arch sm_90a --gemm=wgmma -o "$out/shapes/$name.gemm-wgmma" -q \
    > "$out/shapes/$name.gemm-wgmma.compile.txt"
  "$bin/moe-compile" "$work/$name" --weights none --activation-type bf16 \
    --arch sm_90a --gemm=tma -o "$out/shapes/$name.gemm-tma" -q \
    > "$out/shapes/$name.gemm-tma.compile.txt"
  grouped=$(grouped_tokens "$out/shapes/$name")
  cp "$work/$name/config.json" "$out/shapes/$name.config.json"
  read -r layer width < <(first_layer "$out/shapes/$name")
  shared=$(shared_intermediate "$out/shapes/$name.config.json")
  entries+=("{\"name\": \"$name\", \"arch\": \"$arch\", \"package\": \"$name\", \"config\": \"$name.config.json\", \"layer\": $layer, \"hidden\": $width, \"intermediate\": $inter, \"experts\": $experts, \"top_k\": $k, \"shared_intermediate\": $shared, \"tokens\": [$(echo $shape_tokens | tr ' ' ',')], \"compare\": [{\"what\": \"grouped GEMM k loop\", \"new\": {\"label\": \"gemm=pipelined\", \"package\": \"$name\"}, \"old\": {\"label\": \"gemm=mma\", \"package\": \"$name.gemm-mma\"}, \"tokens\": [$grouped]}, {\"what\": \"grouped GEMM multiply\", \"new\": {\"label\": \"gemm=wgmma\", \"package\": \"$name.gemm-wgmma\"}, \"old\": {\"label\": \"gemm=pipelined\", \"package\": \"$name\"}, \"tokens\": [$grouped]}, {\"what\": \"grouped GEMM weight loads\", \"new\": {\"label\": \"gemm=tma\", \"package\": \"$name.gemm-tma\"}, \"old\": {\"label\": \"gemm=pipelined\", \"package\": \"$name\"}, \"tokens\": [$grouped]}]}")
  echo "prepared shape $name ($(grep -c '"offset": null' "$out/shapes/$name/manifest.json") weight tensors to bind; gemm=mma, gemm=wgmma and gemm=tma beside it, grouped at T $grouped)"
  rm -rf "${work:?}/$name"
done <<< "$shapes"
(IFS=,; echo "[${entries[*]}]") | $py -c "import json,sys; print(json.dumps(json.loads(sys.stdin.read()), indent=1))" > "$out/shapes/index.json"

entries=()
for arch in mixtral qwen3_moe olmoe deepseek_v3 gpt_oss; do
  small=$out/small
  "$bin/moe-import" --synthetic "$arch" --seed 1 --fused-experts --dtype bf16 \
    -o "$small/$arch.model" > /dev/null
  "$bin/moe-compile" "$small/$arch.model" --activation-type bf16 \
    --arch sm_90a -o "$small/$arch" -q > "$small/$arch.compile.txt"
  mkdir -p "$small/$arch.check"
  read -r first hidden < <(first_layer "$small/$arch")
  moe_layers=$($py -c "import json,sys; print(' '.join(str(l['layer']) for l in json.load(open(sys.argv[1]))['layers'] if l['target']==''))" "$small/$arch/manifest.json")
  for t in $tokens; do
    $py - "$work/x.npy" "$small/$arch.check/x_$t.f32" "$t" "$hidden" <<'PY'
import sys
import numpy as np
t, h = int(sys.argv[3]), int(sys.argv[4])
x = np.random.default_rng(t).standard_normal((t, h)).astype(np.float32)
np.save(sys.argv[1], x)
x.tofile(sys.argv[2])
PY
    for layer in $moe_layers; do
      "$bin/moe-run" "$small/$arch" --layer "$layer" --input "$work/x.npy" \
        --output "$work/y.npy" --backend reference
      $py -c "import numpy as np,sys; np.load(sys.argv[1]).astype(np.float32).tofile(sys.argv[2])" \
        "$work/y.npy" "$small/$arch.check/y_${layer}_$t.f32"
    done
  done
  layer_list=$(echo "$moe_layers" | tr ' ' ',')
  token_list=$(echo $tokens | tr ' ' ',')
  entries+=("{\"name\": \"$arch\", \"arch\": \"$arch\", \"package\": \"$arch\", \"check\": \"$arch.check\", \"model\": \"$arch.model\", \"layers\": [$layer_list], \"hidden\": $hidden, \"tokens\": [$token_list]}")
  echo "prepared small $arch (layers $moe_layers)"
done
(IFS=,; echo "[${entries[*]}]") | $py -c "import json,sys; print(json.dumps(json.loads(sys.stdin.read()), indent=1))" > "$out/small/index.json"

# Quantized experts (docs/codegen.md, "Quantized experts"): bf16 activations.
mkdir -p "$out/quant"
entries=()
while read -r name arch quant hidden inter experts k layers extra; do
  [ -n "$name" ] || continue
  if [ -n "$wanted" ] && ! [[ " $wanted " == *" ${name%-*} "* ]]; then continue; fi
  # shellcheck disable=SC2086
  "$bin/moe-import" --synthetic "$arch" --quant "$quant" --shapes-only \
    --dtype bf16 --layers "$layers" --hidden "$hidden" \
    --intermediate "$inter" --experts "$experts" --top-k "$k" $extra \
    -o "$work/$name" > /dev/null
  "$bin/moe-compile" "$work/$name" --weights none --activation-type bf16 \
    --arch sm_90a -o "$out/quant/$name" -q > "$out/quant/$name.compile.txt"
  read -r layer width < <(first_layer "$out/quant/$name")
  shared=$(shared_intermediate "$work/$name/config.json")
  compare=""
  if [ "$quant" = fp8 ]; then
    # FP8 tensor cores: the option is --moe-optimize's, so the variant is
    # compiled from IR optimized with it (moe-compile keeps the fused ops).
    "$bin/moe-import" "$work/$name" --activation-type bf16 -o "$work/$name.mlir"
    "$bin/moe-opt" --moe-optimize="fp8-activations=true" "$work/$name.mlir" \
      -o "$work/$name.fp8.mlir"
    grep -q moe.fp8_activations "$work/$name.fp8.mlir" || {
      echo "prepare.sh: $name: --moe-optimize=fp8-activations=true marked no fused op" >&2; exit 1; }
    "$bin/moe-compile" "$work/$name.fp8.mlir" --weights none \
      --activation-type bf16 --arch sm_90a -o "$out/quant/$name.fp8-activations" \
      -q > "$out/quant/$name.fp8-activations.compile.txt"
    # The same FP8 tensor-core GEMMs on the single-stage k loop.
    "$bin/moe-compile" "$work/$name.fp8.mlir" --weights none \
      --activation-type bf16 --arch sm_90a --gemm=mma \
      -o "$out/quant/$name.fp8-activations.gemm-mma" \
      -q > "$out/quant/$name.fp8-activations.gemm-mma.compile.txt"
    grouped=$(grouped_tokens "$out/quant/$name")
    compare="{\"what\": \"FP8 grouped GEMMs\", \"new\": {\"label\": \"fp8-activations=true\", \"package\": \"$name.fp8-activations\"}, \"old\": {\"label\": \"dequantized to bf16\", \"package\": \"$name\"}, \"tokens\": [$grouped]}"
    compare+=", {\"what\": \"FP8 grouped GEMM k loop\", \"new\": {\"label\": \"fp8-activations=true\", \"package\": \"$name.fp8-activations\"}, \"old\": {\"label\": \"fp8-activations=true gemm=mma\", \"package\": \"$name.fp8-activations.gemm-mma\"}, \"tokens\": [$grouped]}"
    echo "prepared quantized shape $name (fp8-activations=true and its gemm=mma beside it, grouped at T $grouped)"
  else
    echo "prepared quantized shape $name"
  fi
  entries+=("{\"name\": \"$name\", \"arch\": \"$arch\", \"quant\": \"$quant\", \"package\": \"$name\", \"layer\": $layer, \"hidden\": $width, \"intermediate\": $inter, \"experts\": $experts, \"top_k\": $k, \"shared_intermediate\": $shared, \"tokens\": [$(echo $shape_tokens | tr ' ' ',')], \"compare\": [$compare]}")
  rm -rf "${work:?}/$name" "$work/$name".*mlir
done <<< "
deepseek-v3-fp8 deepseek_v3 fp8 7168 2048 256 8 2 --n-group=8 --topk-group=4
gpt-oss-20b-mxfp4 gpt_oss mxfp4 2880 2880 32 4 1
"
(IFS=,; echo "[${entries[*]}]") | $py -c "import json,sys; print(json.dumps(json.loads(sys.stdin.read()), indent=1))" > "$out/quant/index.json"
for spec in deepseek_v3:fp8 gpt_oss:mxfp4; do
  arch=${spec%%:*} quant=${spec##*:}
  name=small-$arch-$quant
  "$bin/moe-import" --synthetic "$arch" --quant "$quant" --seed 1 \
    --dtype bf16 -o "$work/$name.model" > /dev/null
  "$bin/moe-compile" "$work/$name.model" --activation-type bf16 \
    --arch sm_90a -o "$out/quant/$name" -q > "$out/quant/$name.compile.txt"
  mkdir -p "$out/quant/$name.check"
  read -r first hidden < <(first_layer "$out/quant/$name")
  moe_layers=$($py -c "import json,sys; print(' '.join(str(l['layer']) for l in json.load(open(sys.argv[1]))['layers'] if l['target']==''))" "$out/quant/$name/manifest.json")
  for t in $tokens; do
    $py -c "import numpy as np,sys; t,h=int(sys.argv[3]),int(sys.argv[4]); x=np.random.default_rng(t).standard_normal((t,h)).astype(np.float32); np.save(sys.argv[1],x); x.tofile(sys.argv[2])" \
      "$work/x.npy" "$out/quant/$name.check/x_$t.f32" "$t" "$hidden"
    for layer in $moe_layers; do
      "$bin/moe-run" "$out/quant/$name" --layer "$layer" --input "$work/x.npy" \
        --output "$work/y.npy" --backend reference
      $py -c "import numpy as np,sys; np.load(sys.argv[1]).astype(np.float32).tofile(sys.argv[2])" \
        "$work/y.npy" "$out/quant/$name.check/y_${layer}_$t.f32"
    done
  done
  echo "prepared small quantized $name (layers $moe_layers)"
done
du -sh "$out"
