// --moe-prune-experts (issue 12): frequency, REAP and NAEE (output-error)
// pruning over a calibration profile.
// REQUIRES: numpy
// RUN: rm -rf %t && mkdir -p %t
// RUN: %python %S/Inputs/planted_experts.py write %t/q --kind quiet --moe-run %moe_obj/bin/moe-run

// A loud router and a quiet expert (3): reap drops it.
// RUN: moe-opt %t/q/model.mlir --mlir-print-op-on-diagnostic=false --moe-prune-experts="profile=%t/q/profile.safetensors keep=7 criterion=reap" -o %t/q/reap.mlir 2>&1 | FileCheck %s --check-prefix=REPORT
// RUN: FileCheck %s --check-prefix=IR < %t/q/reap.mlir
// RUN: test -f %t/q/reap.prune.safetensors
// REPORT: remark: moe-prune-experts: layer 0: kept experts [0, 1, 2, 4, 5, 6, 7] (original indices) by mean gate x ||output|| (reap)
// REPORT: remark: moe-prune-experts: layer 0: experts 8 -> 7, routed expert parameters 12288 -> 10752, bytes 49152 -> 43008
// IR: func.func @layer_0({{.*}}) {{.*}} attributes {moe.expert_origin = array<i64: 0, 1, 2, 4, 5, 6, 7>, moe.layer = 0 : i64}
// IR: moe.weight ["layer.0.pruned.router"] from ["reap.prune.safetensors"] : tensor<7x32xf32>
// IR: moe.router_linear {{.*}} -> tensor<?x7xf32>
// IR: moe.softmax %{{.*}} : tensor<?x7xf32>
// IR: moe.topk %{{.*}} {k = 2 : i64} : tensor<?x7xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
// IR: moe.dispatch %{{.*}} {num_experts = 7 : i64} : tensor<?x2xi32> -> tensor<7xi32>, tensor<8xi32>, tensor<?xi32>
// IR: moe.weight ["layer.0.pruned.gate"] from ["reap.prune.safetensors"] : tensor<7x16x32xf32>
// IR: moe.weight ["layer.0.pruned.down"] from ["reap.prune.safetensors"] : tensor<7x32x16xf32>

// Frequency keeps the quiet expert; reap and output-error drop it;
// output-error equals a numpy brute force at E = 8; the pruned IR equals
// the numpy layer of the kept experts; greedy past max-subsets; pruning
// twice composes moe.expert_origin.
// RUN: %python %S/Inputs/check_prune.py --bin %moe_obj/bin --work %t/oracle | FileCheck %s --check-prefix=ORACLE
// ORACLE-NOT: FAIL
// ORACLE: keep=7 frequency    quiet expert 3 kept
// ORACLE: keep=7 reap         quiet expert 3 pruned
// ORACLE: keep=7 output-error quiet expert 3 pruned
// ORACLE: keep=4 output-error ok
// ORACLE: keep=5 output-error ok
// ORACLE: all prune checks passed

// DeepSeek-V3 router: the correction bias loses the pruned entries, the
// four groups stay equally large (2 each), or the pass refuses.
// RUN: %python %S/Inputs/planted_experts.py write %t/ds --kind redundant --router deepseek --moe-run %moe_obj/bin/moe-run
// RUN: moe-opt %t/ds/model.mlir --mlir-print-op-on-diagnostic=false --moe-prune-experts="profile=%t/ds/profile.safetensors keep=8" -o %t/ds/p8.mlir 2>&1 | FileCheck %s --check-prefix=DSREPORT
// RUN: FileCheck %s --check-prefix=DS < %t/ds/p8.mlir
// DSREPORT: experts 16 -> 8
// DS: moe.weight ["layer.0.pruned.router"] {{.*}} : tensor<8x32xf32>
// DS: moe.sigmoid %{{.*}} : tensor<?x8xf32>
// DS: moe.weight ["layer.0.pruned.score_bias"] {{.*}} : tensor<8xf32>
// DS: moe.bias_add %{{.*}}, %{{.*}} : tensor<?x8xf32>, tensor<8xf32>
// DS: moe.group_limit %{{.*}} {{{.*}}num_groups = 4 : i64} : tensor<?x8xf32>
// DS: moe.gather_scores %{{.*}}, %{{.*}} : tensor<?x8xf32>, tensor<?x2xi32> -> tensor<?x2xf32>
// DS: moe.dispatch %{{.*}} {num_experts = 8 : i64}
// RUN: moe-opt %t/ds/model.mlir --mlir-print-op-on-diagnostic=false --moe-prune-experts="profile=%t/ds/profile.safetensors keep=6" -o %t/ds/p6.mlir 2>&1 | FileCheck %s --check-prefix=GROUPS
// GROUPS: remark: moe-prune-experts: layer 0 not pruned: moe.group_limit has 4 groups: keep=6 cannot leave them equally large
// RUN: FileCheck %s --check-prefix=UNCHANGED < %t/ds/p6.mlir
// UNCHANGED: moe.weight ["router.weight"] from ["model.safetensors"] : tensor<16x32xf32>
// UNCHANGED-NOT: expert_origin

// Refusals.
// RUN: moe-opt %t/q/model.mlir --mlir-print-op-on-diagnostic=false --moe-prune-experts="profile=%t/q/profile.safetensors keep=1" -o %t/q/k1.mlir 2>&1 | FileCheck %s --check-prefix=TOPK
// TOPK: remark: moe-prune-experts: layer 0 not pruned: 'moe.topk' selects k = 2 experts but only 1 would remain
// RUN: moe-opt %t/q/model.mlir --moe-prune-experts="profile=%t/q/profile.safetensors keep=4 criterion=output-error" -o %t/q/oe.mlir 2>&1 | FileCheck %s --check-prefix=NOCALIB
// NOCALIB: remark: moe-prune-experts: criterion=output-error runs the layer on calibration tokens: give calibration=X.npy; nothing pruned
// RUN: moe-opt %t/q/model.mlir --moe-prune-experts="keep=4" -o %t/q/np.mlir 2>&1 | FileCheck %s --check-prefix=NOPROFILE
// NOPROFILE: remark: moe-prune-experts: no profile given (profile=P.safetensors, recorded by moe-run --record-profile); nothing pruned
// RUN: not moe-opt %t/q/model.mlir --moe-prune-experts="profile=%t/q/profile.safetensors criterion=frequency" 2>&1 | FileCheck %s --check-prefix=NOKEEP
// NOKEEP: moe-prune-experts: give keep=N (N >= 1) or ratio=R (0 < R <= 1)
// RUN: moe-opt %s --split-input-file --mlir-print-op-on-diagnostic=false --verify-diagnostics --moe-prune-experts="profile=%t/q/profile.safetensors keep=4" -o /dev/null

// expected-remark @+1 {{moe-prune-experts: layer not pruned: the layer is fused (moe.fused_route / moe.fused_experts): run before --moe-optimize}}
func.func @fused(%x: tensor<?x32xf32>) -> tensor<?x32xf32> attributes {moe.layer = 0 : i64} {
  %ids, %w, %c, %o, %r = moe.fused_route %x {num_experts = 8 : i64} : tensor<?x32xf32> -> tensor<?x2xi32>, tensor<?x2xf32>, tensor<8xi32>, tensor<9xi32>, tensor<?xi32> {
  ^bb0(%a: tensor<?x32xf32>):
    %wg = moe.weight ["router.weight"] from ["model.safetensors"] : tensor<8x32xf32>
    %l = moe.router_linear %a, %wg : (tensor<?x32xf32>, tensor<8x32xf32>) -> tensor<?x8xf32>
    %i, %v = moe.topk %l {k = 2 : i64} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    moe.yield %i, %v : tensor<?x2xi32>, tensor<?x2xf32>
  }
  return %x : tensor<?x32xf32>
}

// -----

// expected-remark @+1 {{moe-prune-experts: layer not pruned: cross-token routing (moe.expert_choice) is not supported}}
func.func @expert_choice(%x: tensor<?x32xf32>, %wg: tensor<8x32xf32>, %g: tensor<8x16x32xf32>, %d: tensor<8x32x16xf32>) -> tensor<?x32xf32> attributes {moe.layer = 0 : i64} {
  %l = moe.router_linear %x, %wg : (tensor<?x32xf32>, tensor<8x32xf32>) -> tensor<?x8xf32>
  %ids, %w = moe.expert_choice %l {capacity = 4 : i64} : tensor<?x8xf32> -> tensor<?x8xi32>, tensor<?x8xf32>
  %c, %o, %r = moe.dispatch %ids {num_experts = 8 : i64} : tensor<?x8xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>
  %xs = moe.permute %x, %r, %w : (tensor<?x32xf32>, tensor<?xi32>, tensor<?x8xf32>) -> tensor<?x32xf32>
  %ys = moe.expert_ffn %xs, %o gate(%g) up(%g) down(%d) {activation = #moe.activation<silu>} : (tensor<?x32xf32>, tensor<9xi32>, tensor<8x16x32xf32>, tensor<8x16x32xf32>, tensor<8x32x16xf32>) -> tensor<?x32xf32>
  %y = moe.combine %ys, %r, %w : (tensor<?x32xf32>, tensor<?xi32>, tensor<?x8xf32>) -> tensor<?x32xf32>
  return %y : tensor<?x32xf32>
}

// -----

// The routed experts are not a moe.expert_ffn (LoRA adapters).
// expected-remark @+1 {{moe-prune-experts: layer not pruned: the routed experts are LoRA adapters (moe.lora_mixture), not moe.expert_ffn}}
func.func @lora(%x: tensor<?x32xf32>, %w: tensor<32x32xf32>, %a: tensor<8x4x32xf32>, %b: tensor<8x32x4xf32>, %wg: tensor<8x32xf32>) -> tensor<?x32xf32> attributes {moe.layer = 0 : i64} {
  %l = moe.router_linear %x, %wg : (tensor<?x32xf32>, tensor<8x32xf32>) -> tensor<?x8xf32>
  %i, %v = moe.topk %l {k = 2 : i64} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  %y = moe.lora_mixture %x base(%w) lora(%a, %b) routing(%i, %v) {scales = [1.0 : f32, 1.0 : f32, 1.0 : f32, 1.0 : f32, 1.0 : f32, 1.0 : f32, 1.0 : f32, 1.0 : f32]} : (tensor<?x32xf32>, tensor<32x32xf32>, tensor<8x4x32xf32>, tensor<8x32x4xf32>, tensor<?x2xi32>, tensor<?x2xf32>) -> tensor<?x32xf32>
  return %y : tensor<?x32xf32>
}

// -----

// The profile records 8 experts for layer 0; this layer routes 4.
// expected-remark @+1 {{layer.0.expert_count has 8 experts but the layer routes 4}}
func.func @other_model(%x: tensor<?x32xf32>, %wg: tensor<4x32xf32>, %g: tensor<4x16x32xf32>, %d: tensor<4x32x16xf32>) -> tensor<?x32xf32> attributes {moe.layer = 0 : i64} {
  %l = moe.router_linear %x, %wg : (tensor<?x32xf32>, tensor<4x32xf32>) -> tensor<?x4xf32>
  %ids, %w = moe.topk %l {k = 2 : i64} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  %c, %o, %r = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
  %xs = moe.permute %x, %r, %w : (tensor<?x32xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x32xf32>
  %ys = moe.expert_ffn %xs, %o gate(%g) up(%g) down(%d) {activation = #moe.activation<silu>} : (tensor<?x32xf32>, tensor<5xi32>, tensor<4x16x32xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> tensor<?x32xf32>
  %y = moe.combine %ys, %r, %w : (tensor<?x32xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x32xf32>
  return %y : tensor<?x32xf32>
}

// -----

// expected-remark @+1 {{moe-prune-experts: layer 0 not pruned: the layer's experts were merged (moe.remap_experts): its router chooses among the experts before merging; prune before merging}}
func.func @merged(%x: tensor<?x32xf32>, %wg: tensor<16x32xf32>, %g: tensor<8x16x32xf32>, %d: tensor<8x32x16xf32>) -> tensor<?x32xf32> attributes {moe.layer = 0 : i64} {
  %l = moe.router_linear %x, %wg : (tensor<?x32xf32>, tensor<16x32xf32>) -> tensor<?x16xf32>
  %i, %v = moe.topk %l {k = 2 : i64} : tensor<?x16xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  %ids, %w = moe.remap_experts %i, %v mapping = [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7] : tensor<?x2xi32>, tensor<?x2xf32>
  %c, %o, %r = moe.dispatch %ids {num_experts = 8 : i64} : tensor<?x2xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>
  %xs = moe.permute %x, %r, %w : (tensor<?x32xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x32xf32>
  %ys = moe.expert_ffn %xs, %o gate(%g) up(%g) down(%d) {activation = #moe.activation<silu>} : (tensor<?x32xf32>, tensor<9xi32>, tensor<8x16x32xf32>, tensor<8x16x32xf32>, tensor<8x32x16xf32>) -> tensor<?x32xf32>
  %y = moe.combine %ys, %r, %w : (tensor<?x32xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x32xf32>
  return %y : tensor<?x32xf32>
}

// -----

// DynMoLE's entropy fallback has one slot per expert: pruning would change
// the width of its routing.
// expected-remark @+1 {{not pruned: 'moe.entropy_fallback' has one slot per expert of its probabilities: pruning would change its width (not supported)}}
func.func @entropy_fallback(%x: tensor<?x32xf32>, %wg: tensor<8x32xf32>, %g: tensor<8x16x32xf32>, %d: tensor<8x32x16xf32>) -> tensor<?x32xf32> attributes {moe.layer = 0 : i64} {
  %l = moe.router_linear %x, %wg : (tensor<?x32xf32>, tensor<8x32xf32>) -> tensor<?x8xf32>
  %p = moe.softmax %l : tensor<?x8xf32>
  %ti, %tv = moe.top_p %p {p = 0.5 : f32, max_k = 2 : i64, min_k = 2 : i64} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  %ids, %w = moe.entropy_fallback %p, %ti, %tv {q = 1.5 : f32, threshold = 0.5 : f32, normalized} : tensor<?x8xf32>, tensor<?x2xi32>, tensor<?x2xf32> -> tensor<?x8xi32>, tensor<?x8xf32>
  %c, %o, %r = moe.dispatch %ids {num_experts = 8 : i64} : tensor<?x8xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>
  %xs = moe.permute %x, %r, %w : (tensor<?x32xf32>, tensor<?xi32>, tensor<?x8xf32>) -> tensor<?x32xf32>
  %ys = moe.expert_ffn %xs, %o gate(%g) up(%g) down(%d) {activation = #moe.activation<silu>} : (tensor<?x32xf32>, tensor<9xi32>, tensor<8x16x32xf32>, tensor<8x16x32xf32>, tensor<8x32x16xf32>) -> tensor<?x32xf32>
  %y = moe.combine %ys, %r, %w : (tensor<?x32xf32>, tensor<?xi32>, tensor<?x8xf32>) -> tensor<?x32xf32>
  return %y : tensor<?x32xf32>
}
