#!/usr/bin/env bash
# Bytes saved against held-out error for pruning, merging and compressing
# experts (issue 12), side by side, on:
#   - the planted models of planted.py: redundant (16 noisy copies, sigma
#     1 %, of 4 prototypes), redundant-exact (sigma 0), lowrank (rank 4 on
#     skewed inputs) and loud (a most-selected expert with a tiny output);
#   - 3-layer synthetic Mixtral and Qwen3-MoE (moe-import --synthetic).
#
#   bench/compression/run.sh [WORK_DIR]      (default: a fresh temp dir)
#
# For each model: import (moe-import), calibration and held-out inputs
# (numpy; 256 tokens each), a calibration profile (moe-run --record-profile
# with expert outputs and the input Gram), each method at a few settings
# (moe-opt with the pass options of issue 12, new weights beside the output
# IR), then moe-report compare on the held-out input (--all-layers: each
# layer on the held-out input, and the whole chain). table.py prints the
# table from the reports: mean layer error, end-to-end error, agreement.
# Every step must succeed (set -euo pipefail): a pass that refuses a layer
# says so on stderr and the table shows what it saved.
#
# Environment: MOE_BIN (the tools; default build/bin of this checkout),
# MOE_BENCH_TOKENS (tokens of each input; default 256).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${MOE_BIN:-$root/build/bin}
tokens=${MOE_BENCH_TOKENS:-256}
work=${1:-$(mktemp -d /tmp/moe-compression.XXXXXX)}
python=/usr/bin/python3
here=$root/bench/compression
mkdir -p "$work"
for tool in moe-import moe-run moe-opt moe-report; do
  [ -x "$bin/$tool" ] || { echo "run.sh: $bin/$tool not found (set MOE_BIN)" >&2; exit 1; }
done
echo "run.sh: working in $work"

step() { echo "+ $*" >&2; "$@"; }

# A model folder M: M/model.mlir, M/calib.npy, M/heldout.npy, M/profile.safetensors.
prepare() {
  local m=$1
  step "$bin/moe-import" "$m/model" -o "$m/model.mlir"
  step "$bin/moe-run" "$m/model.mlir" --all-layers --input "$m/calib.npy" \
    --output "$m/calib.out.npy" --record-profile "$m/profile.safetensors" \
    --profile-expert-outputs --profile-input-gram
}

# rewrite M METHOD SETTING PASS-FLAG: moe-opt, then moe-report.
rewrite() {
  local m=$1 method=$2 setting=$3 flag=$4
  local name=$method.${setting//[^A-Za-z0-9.]/_}
  local out=$m/out/$name
  mkdir -p "$m/out"
  step "$bin/moe-opt" "$m/model.mlir" "$flag" -o "$out.mlir" 2> "$out.remarks"
  step "$bin/moe-report" compare "$m/model.mlir" "$out.mlir" \
    --input "$m/heldout.npy" --all-layers --format json > "$out.json"
  printf '%s\t%s\t%s\t%s\n' "$(basename "$m")" "$method" "$setting" \
    "$out" >> "$work/runs.tsv"
}

prune() { # M KEEP CRITERION
  local extra=""
  [ "$3" = output-error ] && extra=" calibration=$1/calib.npy"
  rewrite "$1" "prune-$3" "keep=$2" \
    "--moe-prune-experts=profile=$1/profile.safetensors keep=$2 criterion=$3$extra"
}
merge() { # M GROUPS SIMILARITY CLUSTER
  rewrite "$1" "merge-$3-$4" "groups=$2" \
    "--moe-merge-experts=profile=$1/profile.safetensors groups=$2 similarity=$3 cluster=$4 weighting=frequency align=none"
}
compress() { # M RANK WHITEN
  if [ "$3" = gram ]; then
    rewrite "$1" "compress-whiten" "rank=$2" \
      "--moe-compress-experts=rank=$2 profile=$1/profile.safetensors whiten=gram"
  else
    rewrite "$1" "compress" "rank=$2" "--moe-compress-experts=rank=$2"
  fi
}

: > "$work/runs.tsv"

# The planted models.
step $python "$here/planted.py" redundant "$work/redundant" --tokens "$tokens"
step $python "$here/planted.py" redundant "$work/redundant-exact" --sigma 0 --tokens "$tokens"
step $python "$here/planted.py" lowrank "$work/lowrank" --tokens "$tokens"
step $python "$here/planted.py" loud "$work/loud" --tokens "$tokens"

# The synthetic models, with inputs of their hidden size.
seed=1
for arch in mixtral qwen3_moe; do
  m=$work/$arch
  step "$bin/moe-import" --synthetic "$arch" --layers 3 --seed $seed --force \
    -o "$m/model"
  seed=$((seed + 1))
  step $python - "$m" "$tokens" <<'EOF'
import json, sys
import numpy as np
m, t = sys.argv[1], int(sys.argv[2])
h = json.load(open(m + "/model/config.json"))["hidden_size"]
rng = np.random.default_rng(7)
for name in ("calib", "heldout"):
    np.save("%s/%s.npy" % (m, name),
            rng.standard_normal((t, h)).astype(np.float32))
EOF
done

for m in redundant redundant-exact lowrank loud mixtral qwen3_moe; do
  prepare "$work/$m"
done

# Redundant: merging at the planted count (4) and around it (the knee of
# the error curve), each similarity with each clustering at 4, against
# pruning to the same counts.
for m in redundant redundant-exact; do
  for g in 2 3 4 6 8; do
    merge "$work/$m" $g router-logits hierarchical
  done
  merge "$work/$m" 4 router-logits dominant
  merge "$work/$m" 4 expert-output hierarchical
  merge "$work/$m" 4 expert-output dominant
  for keep in 4 8; do
    prune "$work/$m" $keep frequency
    prune "$work/$m" $keep reap
  done
done

# Low rank: below, at and above the planted rank, plain and whitened.
for r in 2 4 8; do
  compress "$work/lowrank" $r none
  compress "$work/lowrank" $r gram
done

# Loud router, quiet expert: which criterion drops it (E = 8, keep 7 and 4;
# output-error enumerates every subset at E = 8).
for keep in 7 4; do
  for c in frequency reap output-error; do
    prune "$work/loud" $keep $c
  done
done

# The synthetic models: every method at half and a quarter of the experts,
# and ranks of 1/4 and 1/16 of the width (I = 128).
for m in mixtral qwen3_moe; do
  for keep in 4 2; do
    prune "$work/$m" $keep frequency
    prune "$work/$m" $keep reap
    merge "$work/$m" $keep router-logits dominant
    merge "$work/$m" $keep expert-output hierarchical
  done
  for r in 32 8; do
    compress "$work/$m" $r none
    compress "$work/$m" $r gram
  done
done

step $python "$here/table.py" "$work/runs.tsv" | tee "$work/table.txt"
echo "run.sh: table in $work/table.txt"
