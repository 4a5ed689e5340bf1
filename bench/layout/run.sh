#!/usr/bin/env bash
# Expert placement measurements (issue 13): balance, duplicate replicas,
# out-of-sample balance, incremental re-planning, cross-GPU fraction,
# solver times and simulated step time, through moe-opt's passes
# (--moe-plan-placement, --moe-simulate-layout) on:
#   - zipf:   planted Zipf loads (planted.py zipf), E = 64/128/256 experts
#             over G = 8/16/32 GPUs, exponents 1.0 to 1.5, R = G;
#   - chains: planted layer-to-layer chains (planted.py chains, p = 0.8),
#             L = 32 layers, E = 8 and 64, G = 8;
#   - models: 3-layer synthetic Mixtral, Qwen3-MoE and DeepSeek-V3
#             (moe-import --synthetic), profiled with moe-run on random
#             inputs, as imported and with a planted router skew.
#
#   bench/layout/run.sh [--quick] [WORK_DIR]     (default: a fresh temp dir)
#
# --quick: small sizes and short solver limits (a few seconds in all;
# test/Bench/layout.test runs it). The tables (markdown) go to stdout, and
# to WORK_DIR/tables.md; every step is echoed on stderr, and any failure
# stops the script. WORK_DIR keeps every IR, profile, placement, report and
# the passes' remarks (*.remarks).
#
# Environment: MOE_BIN (the tools; default build/bin of this checkout),
# MOE_BENCH_TIME_LIMIT (GLPK's and CBC's limit for the chains, default 60 s,
# 2 with --quick), MOE_BENCH_MODEL_TIME_LIMIT (for the synthetic models,
# default 10 s, 2 with --quick), MOE_BENCH_SECTIONS (default "zipf chains
# models": the sections to run), MOE_BENCH_CHAINS (the chain cases,
# L:E:G ..., instead of the defaults below).
set -euo pipefail
quick=0
if [ "${1:-}" = --quick ]; then
  quick=1
  shift
fi
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${MOE_BIN:-$root/build/bin}
work=${1:-$(mktemp -d /tmp/moe-layout.XXXXXX)}
python=/usr/bin/python3
here=$root/bench/layout
mkdir -p "$work"
work=$(cd "$work" && pwd)
for tool in moe-import moe-run moe-opt; do
  [ -x "$bin/$tool" ] || { echo "run.sh: $bin/$tool not found (set MOE_BIN)" >&2; exit 1; }
done
echo "run.sh: working in $work" >&2

if [ $quick = 1 ]; then
  zipf_cases="64:8"
  zipf_exponents="1.0 1.5"
  zipf_layers=2
  chain_cases="4:8:4 8:16:4"          # layers:experts:gpus
  time_limit=${MOE_BENCH_TIME_LIMIT:-2}
  model_time_limit=${MOE_BENCH_MODEL_TIME_LIMIT:-2}
  models="mixtral:8:2 qwen3_moe:16:4 deepseek_v3:16:4"   # arch:experts:top-k
  tokens=128
  topologies="1x4"
else
  zipf_cases="64:8 128:16 256:32"
  zipf_exponents="1.0 1.1 1.2 1.3 1.4 1.5"
  zipf_layers=4
  chain_cases="32:8:8 32:64:8"
  time_limit=${MOE_BENCH_TIME_LIMIT:-60}
  model_time_limit=${MOE_BENCH_MODEL_TIME_LIMIT:-10}
  models="mixtral:8:2 qwen3_moe:128:8 deepseek_v3:256:8"
  tokens=512
  topologies="1x4 2x4"
fi

chain_cases=${MOE_BENCH_CHAINS:-$chain_cases}
sections=" ${MOE_BENCH_SECTIONS:-zipf chains models} "
[[ $sections == *" zipf "* ]] || zipf_cases=""
[[ $sections == *" chains "* ]] || chain_cases=""
[[ $sections == *" models "* ]] || models=""

step() { echo "+ $*" >&2; "$@"; }

# topology FILE NODES GPUS_PER_NODE: H100-class numbers (NVLink within a
# node, 400 Gbit/s InfiniBand between nodes).
topology() {
  cat > "$1" <<EOF
{"nodes": $2, "gpus_per_node": $3, "hbm_bytes": 60e9, "gpu_flops": 4e14,
 "intra_node": {"bandwidth": 4.5e11, "latency": 3e-6},
 "inter_node": {"bandwidth": 5e10, "latency": 1e-5}}
EOF
}

# plan SECTION CASE NAME IR TOPOLOGY PROFILE SCORE_PROFILE PASS_OPTIONS...
# Plans with PROFILE (placement file NAME.place.json, IR NAME.mlir, remarks
# NAME.remarks, wall seconds of the plan alone), then simulates the placed
# IR on PROFILE (NAME.in.json) and on SCORE_PROFILE (NAME.out.json).
plan() {
  local section=$1 case=$2 name=$3 ir=$4 topo=$5 prof=$6 score=$7
  shift 7
  local pre=$work/$section/$name
  mkdir -p "$work/$section"
  local t0 t1
  t0=$(date +%s.%N)
  step "$bin/moe-opt" "$ir" \
    "--moe-plan-placement=profile=$prof topology=$topo out=$pre.place.json $*" \
    -o "$pre.mlir" 2> "$pre.remarks"
  t1=$(date +%s.%N)
  step "$bin/moe-opt" "$pre.mlir" \
    "--moe-simulate-layout=profile=$prof topology=$topo report=$pre.in.json" \
    "--moe-simulate-layout=profile=$score topology=$topo report=$pre.out.json" \
    -o /dev/null 2> "$pre.sim.txt"
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$section" "$case" "$name" "$*" \
    "$(awk "BEGIN { printf \"%.3f\", $t1 - $t0 }")" "$pre" >> "$work/runs.tsv"
}

: > "$work/runs.tsv"
mkdir -p "$work/inputs"

# Zipf loads: two windows (w0, w1) of one law per case; balanced plans on
# w0, scored on w0 and w1 (out of sample), re-planned on w1, and planned on
# w1 against w0's placement (previous=).
for c in $zipf_cases; do
  E=${c%%:*} G=${c##*:}
  ir=$work/inputs/zipf-E$E.mlir
  step $python "$here/planted.py" model "$ir" --layers $zipf_layers --experts $E
  topology "$work/inputs/zipf-1x$G.json" 1 $G
  topology "$work/inputs/zipf-2x$((G / 2)).json" 2 $((G / 2))
  for s in $zipf_exponents; do
    k=E$E-G$G-s$s
    for w in 0 1; do
      step $python "$here/planted.py" zipf --ir "$ir" \
        --out "$work/inputs/zipf-$k-w$w.safetensors" --experts $E \
        --exponent $s --layers $zipf_layers --law-seed $E --window $w
    done
    p0=$work/inputs/zipf-$k-w0.safetensors p1=$work/inputs/zipf-$k-w1.safetensors
    t1=$work/inputs/zipf-1x$G.json t2=$work/inputs/zipf-2x$((G / 2)).json
    plan zipf "$k" "$k.contiguous" "$ir" "$t1" "$p0" "$p1" policy=contiguous
    plan zipf "$k" "$k.global" "$ir" "$t1" "$p0" "$p1" policy=balanced redundant=$G
    plan zipf "$k" "$k.hierarchical" "$ir" "$t2" "$p0" "$p1" policy=balanced redundant=$G groups=8
    plan zipf "$k" "$k.replan" "$ir" "$t1" "$p1" "$p1" policy=balanced redundant=$G
    plan zipf "$k" "$k.previous" "$ir" "$t1" "$p1" "$p1" policy=balanced redundant=$G \
      "previous=$work/zipf/$k.global.place.json"
  done
done

# Planted chains: contiguous, affinity greedy, affinity GLPK and CBC.
for c in $chain_cases; do
  IFS=: read -r L E G <<< "$c"
  k=L$L-E$E-G$G
  ir=$work/inputs/chains-$k.mlir
  prof=$work/inputs/chains-$k.safetensors
  step $python "$here/planted.py" model "$ir" --layers $L --experts $E --top-k 1
  mkdir -p "$work/chains"
  step $python "$here/planted.py" chains --ir "$ir" --out "$prof" --experts $E --layers $L --stay 0.8 \
    --gpus $G --planted-out "$work/chains/$k.planted.json"
  topology "$work/inputs/chains-1x$G.json" 1 $G
  t=$work/inputs/chains-1x$G.json
  plan chains "$k" "$k.contiguous" "$ir" "$t" "$prof" "$prof" policy=contiguous
  plan chains "$k" "$k.greedy" "$ir" "$t" "$prof" "$prof" policy=affinity solver=greedy
  plan chains "$k" "$k.glpk" "$ir" "$t" "$prof" "$prof" policy=affinity solver=glpk time-limit=$time_limit
  plan chains "$k" "$k.cbc" "$ir" "$t" "$prof" "$prof" policy=affinity solver=cbc time-limit=$time_limit
done

# Synthetic models: import, calibration and held-out inputs, profiles, then
# every policy on each topology; planned on the calibration profile, scored
# on both.
seed=1
for c in $models; do
  IFS=: read -r arch E K <<< "$c"
  extra=()
  [ $arch = deepseek_v3 ] && extra=(--n-group 8 --topk-group 4)
  [ $arch = mixtral ] || extra+=(--dense-layers 0)
  for routing in uniform skewed; do
    m=$work/models/$arch-$routing
    step "$bin/moe-import" --synthetic $arch --layers 3 --experts $E --top-k $K \
      "${extra[@]}" --seed $seed --force -o "$m/model" >&2
    if [ $routing = skewed ]; then
      step $python "$here/synthetic.py" skew "$m/model" --exponent 0.5 --seed $seed >&2
    fi
    step "$bin/moe-import" "$m/model" -o "$m/model.mlir"
    step $python "$here/synthetic.py" input "$m/model" "$m/calib.npy" --tokens $tokens --seed 11
    step $python "$here/synthetic.py" input "$m/model" "$m/heldout.npy" --tokens $tokens --seed 12
    for x in calib heldout; do
      rm -f "$m/$x.safetensors"
      step "$bin/moe-run" "$m/model.mlir" --all-layers --input "$m/$x.npy" \
        --record-profile "$m/$x.safetensors" --backend reference >&2
    done
    for topo in $topologies; do
      n=${topo%x*} g=${topo#*x}
      G=$((n * g))
      t=$work/inputs/model-$topo.json
      topology "$t" $n $g
      k=$arch-$routing-$topo
      for p in "contiguous policy=contiguous" "balanced policy=balanced redundant=$G" \
               "greedy policy=affinity solver=greedy" \
               "glpk policy=affinity solver=glpk time-limit=$model_time_limit" \
               "cbc policy=affinity solver=cbc time-limit=$model_time_limit"; do
        plan models "$k" "$k.${p%% *}" "$m/model.mlir" "$t" "$m/calib.safetensors" \
          "$m/heldout.safetensors" ${p#* }
      done
    done
  done
  seed=$((seed + 1))
done

step $python "$here/table.py" "$work/runs.tsv" | tee "$work/tables.md"
