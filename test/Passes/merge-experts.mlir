// --moe-merge-experts (issue 12): MC-SMoE / HC-SMoE merging over a
// calibration profile, on a planted layer (planted_experts.py: 16 noisy
// copies, sigma = 1%, of 4 prototypes, router rows likewise).
// REQUIRES: numpy
// RUN: rm -rf %t && mkdir -p %t
// RUN: %python %S/Inputs/planted_experts.py write %t/m --kind redundant --sigma 0.01 --moe-run %moe_obj/bin/moe-run
// RUN: moe-opt %t/m/model.mlir --mlir-print-op-on-diagnostic=false --moe-merge-experts="profile=%t/m/profile.safetensors groups=4 cluster=hierarchical" -o %t/m/merged.mlir 2>&1 | FileCheck %s --check-prefix=REPORT
// RUN: FileCheck %s --check-prefix=IR < %t/m/merged.mlir
// RUN: test -f %t/m/merged.merge.safetensors

// REPORT: remark: moe-merge-experts: layer 0: hierarchical clustering on cosine of centred router-logit columns (logit_gram, logit_sum); groups {0,1,2,3} {4,5,6,7} {8,9,10,11} {12,13,14,15}; weights averaged by expert_count
// REPORT: remark: moe-merge-experts: layer 0: experts 16 -> 4, routed expert parameters 24576 -> 6144, bytes 98304 -> 24576

// The router is kept (16 rows); the remap sits before the dispatch, whose
// ids and the permute/combine weights are its results.
// IR: %[[W:.*]] = moe.weight ["router.weight"] from ["model.safetensors"] : tensor<16x32xf32>
// IR: moe.router_linear %{{.*}}, %[[W]] : (tensor<?x32xf32>, tensor<16x32xf32>) -> tensor<?x16xf32>
// IR: %[[IDS:.*]], %[[VALS:.*]] = moe.topk
// IR: %[[NW:.*]] = moe.normalize %[[VALS]]
// IR: %[[MI:.*]], %[[MW:.*]] = moe.remap_experts %[[IDS]], %[[NW]] mapping = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]
// IR: moe.dispatch %[[MI]] {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
// IR: moe.permute %{{.*}}, %{{.*}}, %[[MW]]
// IR: moe.weight ["layer.0.merged.gate"] from ["merged.merge.safetensors"] : tensor<4x16x32xf32>
// IR: moe.weight ["layer.0.merged.up"] from ["merged.merge.safetensors"] : tensor<4x16x32xf32>
// IR: moe.weight ["layer.0.merged.down"] from ["merged.merge.safetensors"] : tensor<4x32x16xf32>
// IR: moe.combine %{{.*}}, %{{.*}}, %[[MW]]
// IR-NOT: e.0.gate

// Merging the merged model again: its profile (moe-run on merged.mlir) is
// over the 4 merged experts and has no logit_gram, so router-logits refuses;
// expert-output merges the merged experts, composing the layer's one remap.
// RUN: %moe_obj/bin/moe-run %t/m/merged.mlir --layer 0 --input %t/m/calib.npy --record-profile %t/m/merged.profile.safetensors --profile-expert-outputs
// RUN: moe-opt %t/m/merged.mlir --mlir-print-op-on-diagnostic=false --moe-merge-experts="profile=%t/m/merged.profile.safetensors groups=2" -o %t/m/again.mlir 2>&1 | FileCheck %s --check-prefix=AGAIN-REFUSED
// AGAIN-REFUSED: remark: moe-merge-experts: layer 0 not merged: profile '{{.*}}merged.profile.safetensors' has no layer.0.logit_gram (a profile of a layer whose experts were already merged records none
// RUN: moe-opt %t/m/merged.mlir --mlir-print-op-on-diagnostic=false --moe-merge-experts="profile=%t/m/merged.profile.safetensors groups=2 similarity=expert-output" -o %t/m/again.mlir 2>&1 | FileCheck %s --check-prefix=AGAIN-REPORT
// AGAIN-REPORT: remark: moe-merge-experts: layer 0: experts 4 -> 2
// RUN: FileCheck %s --check-prefix=AGAIN < %t/m/again.mlir
// AGAIN: moe.remap_experts %{{.*}}, %{{.*}} mapping = [0, 0, 0, 0, [[B:(0|1)]], [[B]], [[B]], [[B]], [[C:(0|1)]], [[C]], [[C]], [[C]], [[D:(0|1)]], [[D]], [[D]], [[D]]
// AGAIN-NOT: moe.remap_experts
// AGAIN: moe.dispatch %{{.*}} {num_experts = 2 : i64}

// The planted groups, errors and random groups against the numpy oracle,
// emu == reference on the merged (fused) model, the error curve's knee,
// align=weight. Profiles are recorded by moe-run --record-profile and
// checked against numpy's.
// RUN: %python %S/Inputs/check_merge.py --bin %moe_obj/bin --work %t/oracle | FileCheck %s --check-prefix=ORACLE
// ORACLE-NOT: FAIL
// ORACLE: sigma=0.01 hierarchical frequency router-logits groups recovered
// ORACLE: sigma=0.01 hierarchical frequency expert-output groups recovered
// ORACLE: sigma=0.01 hierarchical random groups: {{.*}} clearly worse
// ORACLE: sigma=0.01 dominant     uniform   router-logits groups recovered
// ORACLE: sigma=0.01 dominant     uniform   expert-output groups recovered
// ORACLE: sigma=0 hierarchical frequency router-logits groups recovered, {{.*}} ok
// ORACLE: error curve {{.*}} knee at 4
// ORACLE: sigma=0.01 permuted neurons: {{.*}} ok
// ORACLE: all merge checks passed

// Refusals (remarks; the IR is left as it was).
// RUN: moe-opt %t/m/model.mlir --moe-merge-experts="groups=4" -o %t/none.mlir 2>&1 | FileCheck %s --check-prefix=NOPROFILE
// NOPROFILE: remark: moe-merge-experts: no profile given (profile=P.safetensors, recorded by moe-run --record-profile); nothing merged
// RUN: moe-opt %t/m/model.mlir --moe-merge-experts="profile=%t/missing.safetensors groups=4" -o %t/none.mlir 2>&1 | FileCheck %s --check-prefix=BADPROFILE
// BADPROFILE: remark: moe-merge-experts: cannot use the profile: {{.*}}missing.safetensors{{.*}}; nothing merged
// RUN: %python %S/Inputs/planted_experts.py write %t/nomean --kind redundant --drop expert_output_mean --moe-run %moe_obj/bin/moe-run
// RUN: moe-opt %t/nomean/model.mlir --mlir-print-op-on-diagnostic=false --moe-merge-experts="profile=%t/nomean/profile.safetensors groups=4 similarity=expert-output" -o %t/nomean/out.mlir 2>&1 | FileCheck %s --check-prefix=NOMEAN
// NOMEAN: remark: moe-merge-experts: layer 0 not merged: profile '{{.*}}profile.safetensors' has no layer.0.expert_output_mean
// RUN: not moe-opt %t/m/model.mlir --moe-merge-experts="profile=%t/m/profile.safetensors groups=4" 2>&1 | FileCheck %s --check-prefix=NOFILE
// NOFILE: error: moe-merge-experts: the new weights need a file: give moe-opt -o FILE.mlir (they go beside it) or weights-out=FILE.safetensors
// RUN: not moe-opt %t/m/model.mlir --moe-merge-experts="profile=%t/m/profile.safetensors groups=4 cluster=kmeans" 2>&1 | FileCheck %s --check-prefix=OPTION
// OPTION: moe-merge-experts: cluster must be dominant or hierarchical, got 'kmeans'
// RUN: moe-opt %s --split-input-file --mlir-print-op-on-diagnostic=false --verify-diagnostics --moe-merge-experts="profile=%t/m/profile.safetensors groups=4" -o /dev/null

// expected-remark @+1 {{moe-merge-experts: layer not merged: the layer is fused (moe.fused_route / moe.fused_experts): run before --moe-optimize}}
func.func @fused(%x: tensor<?x32xf32>) -> tensor<?x32xf32> attributes {moe.layer = 0 : i64} {
  %ids, %w, %c, %o, %r = moe.fused_route %x {num_experts = 16 : i64} : tensor<?x32xf32> -> tensor<?x2xi32>, tensor<?x2xf32>, tensor<16xi32>, tensor<17xi32>, tensor<?xi32> {
  ^bb0(%a: tensor<?x32xf32>):
    %wg = moe.weight ["router.weight"] from ["model.safetensors"] : tensor<16x32xf32>
    %l = moe.router_linear %a, %wg : (tensor<?x32xf32>, tensor<16x32xf32>) -> tensor<?x16xf32>
    %i, %v = moe.topk %l {k = 2 : i64} : tensor<?x16xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    moe.yield %i, %v : tensor<?x2xi32>, tensor<?x2xf32>
  }
  return %x : tensor<?x32xf32>
}

// -----

// expected-remark @+1 {{moe-merge-experts: layer not merged: cross-token routing (moe.expert_choice) is not supported}}
func.func @expert_choice(%x: tensor<?x32xf32>, %wg: tensor<16x32xf32>, %g: tensor<16x16x32xf32>, %d: tensor<16x32x16xf32>) -> tensor<?x32xf32> attributes {moe.layer = 0 : i64} {
  %l = moe.router_linear %x, %wg : (tensor<?x32xf32>, tensor<16x32xf32>) -> tensor<?x16xf32>
  %ids, %w = moe.expert_choice %l {capacity = 4 : i64} : tensor<?x16xf32> -> tensor<?x16xi32>, tensor<?x16xf32>
  %c, %o, %r = moe.dispatch %ids {num_experts = 16 : i64} : tensor<?x16xi32> -> tensor<16xi32>, tensor<17xi32>, tensor<?xi32>
  %xs = moe.permute %x, %r, %w : (tensor<?x32xf32>, tensor<?xi32>, tensor<?x16xf32>) -> tensor<?x32xf32>
  %ys = moe.expert_ffn %xs, %o gate(%g) up(%g) down(%d) {activation = #moe.activation<silu>} : (tensor<?x32xf32>, tensor<17xi32>, tensor<16x16x32xf32>, tensor<16x16x32xf32>, tensor<16x32x16xf32>) -> tensor<?x32xf32>
  %y = moe.combine %ys, %r, %w : (tensor<?x32xf32>, tensor<?xi32>, tensor<?x16xf32>) -> tensor<?x32xf32>
  return %y : tensor<?x32xf32>
}

// -----

// The profile records 16 experts for layer 0; this layer routes 8.
// expected-remark @+1 {{layer.0.expert_count has 16 experts but the layer routes 8 (a profile of another model, or of the model before pruning?)}}
func.func @other_model(%x: tensor<?x32xf32>, %wg: tensor<8x32xf32>, %g: tensor<8x16x32xf32>, %d: tensor<8x32x16xf32>) -> tensor<?x32xf32> attributes {moe.layer = 0 : i64} {
  %l = moe.router_linear %x, %wg : (tensor<?x32xf32>, tensor<8x32xf32>) -> tensor<?x8xf32>
  %ids, %w = moe.topk %l {k = 2 : i64} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  %c, %o, %r = moe.dispatch %ids {num_experts = 8 : i64} : tensor<?x2xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>
  %xs = moe.permute %x, %r, %w : (tensor<?x32xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x32xf32>
  %ys = moe.expert_ffn %xs, %o gate(%g) up(%g) down(%d) {activation = #moe.activation<silu>} : (tensor<?x32xf32>, tensor<9xi32>, tensor<8x16x32xf32>, tensor<8x16x32xf32>, tensor<8x32x16xf32>) -> tensor<?x32xf32>
  %y = moe.combine %ys, %r, %w : (tensor<?x32xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x32xf32>
  return %y : tensor<?x32xf32>
}

// -----

// expected-remark @+1 {{has no statistics of layer 3 (record it with moe-run --record-profile on that layer or --all-layers)}}
func.func @no_such_layer(%x: tensor<?x32xf32>, %wg: tensor<16x32xf32>, %g: tensor<16x16x32xf32>, %d: tensor<16x32x16xf32>) -> tensor<?x32xf32> attributes {moe.layer = 3 : i64} {
  %l = moe.router_linear %x, %wg : (tensor<?x32xf32>, tensor<16x32xf32>) -> tensor<?x16xf32>
  %ids, %w = moe.topk %l {k = 2 : i64} : tensor<?x16xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  %c, %o, %r = moe.dispatch %ids {num_experts = 16 : i64} : tensor<?x2xi32> -> tensor<16xi32>, tensor<17xi32>, tensor<?xi32>
  %xs = moe.permute %x, %r, %w : (tensor<?x32xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x32xf32>
  %ys = moe.expert_ffn %xs, %o gate(%g) up(%g) down(%d) {activation = #moe.activation<silu>} : (tensor<?x32xf32>, tensor<17xi32>, tensor<16x16x32xf32>, tensor<16x16x32xf32>, tensor<16x32x16xf32>) -> tensor<?x32xf32>
  %y = moe.combine %ys, %r, %w : (tensor<?x32xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x32xf32>
  return %y : tensor<?x32xf32>
}
