// Round trip of every moe op and router variant: print, parse again, print.
// RUN: moe-opt %s | moe-opt | FileCheck %s
// RUN: moe-opt %s --mlir-print-op-generic | moe-opt | FileCheck %s

// CHECK-LABEL: func.func @weights
// CHECK: moe.weight ["w"] from ["model.safetensors"] : tensor<8x64xbf16>
// CHECK: moe.weight ["e0", "e1"] from ["a.safetensors", "b.safetensors"] : tensor<2x16x64xf16>
func.func @weights() -> (tensor<8x64xbf16>, tensor<2x16x64xf16>) {
  %0 = moe.weight ["w"] from ["model.safetensors"] : tensor<8x64xbf16>
  %1 = moe.weight ["e0", "e1"] from ["a.safetensors", "b.safetensors"] : tensor<2x16x64xf16>
  return %0, %1 : tensor<8x64xbf16>, tensor<2x16x64xf16>
}

// CHECK-LABEL: func.func @scoring
// CHECK: moe.router_linear %{{.*}}, %{{.*}} : (tensor<?x64xbf16>, tensor<8x64xbf16>) -> tensor<?x8xf32>
// CHECK: moe.router_linear %{{.*}}, %{{.*}} bias %{{.*}} : (tensor<?x64xf32>, tensor<8x64xf32>, tensor<8xf32>) -> tensor<?x8xf32>
// CHECK: moe.softmax %{{.*}} : tensor<?x8xf32>
// CHECK: moe.sigmoid %{{.*}} : tensor<?x8xf32>
// CHECK: moe.relu %{{.*}} : tensor<?x8xf32>
// CHECK: moe.rms_norm %{{.*}} : tensor<?x8xf32>
// CHECK: moe.rms_norm %{{.*}} weight %{{.*}} : tensor<8xf32> {epsilon = 9.99999974E-6 : f32} : tensor<?x8xf32>
// CHECK: moe.bias_add %{{.*}}, %{{.*}} : tensor<?x8xf32>, tensor<8xf32>
func.func @scoring(%x: tensor<?x64xbf16>, %w: tensor<8x64xbf16>, %xf: tensor<?x64xf32>,
                   %wf: tensor<8x64xf32>, %b: tensor<8xf32>) -> tensor<?x8xf32> {
  %0 = moe.router_linear %x, %w : (tensor<?x64xbf16>, tensor<8x64xbf16>) -> tensor<?x8xf32>
  %1 = moe.router_linear %xf, %wf bias %b : (tensor<?x64xf32>, tensor<8x64xf32>, tensor<8xf32>) -> tensor<?x8xf32>
  %2 = moe.softmax %0 : tensor<?x8xf32>
  %3 = moe.sigmoid %1 : tensor<?x8xf32>
  %4 = moe.relu %2 : tensor<?x8xf32>
  %5 = moe.rms_norm %4 : tensor<?x8xf32>
  %6 = moe.rms_norm %5 weight %b : tensor<8xf32> {epsilon = 1.0e-5 : f32} : tensor<?x8xf32>
  %7 = moe.bias_add %6, %b : tensor<?x8xf32>, tensor<8xf32>
  return %7 : tensor<?x8xf32>
}

// CHECK-LABEL: func.func @selection
// CHECK: moe.group_limit %{{.*}} {group_score = #moe.group_score<max>, keep_groups = 2 : i64, num_groups = 4 : i64} : tensor<?x8xf32>
// CHECK: moe.group_limit %{{.*}} {group_score = #moe.group_score<top2_sum>, keep_groups = 1 : i64, num_groups = 2 : i64} : tensor<?x8xf32>
// CHECK: moe.topk %{{.*}} {k = 2 : i64} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
// CHECK: moe.top_p %{{.*}} {max_k = 4 : i64, p = 8.000000e-01 : f32} : tensor<?x8xf32> -> tensor<?x4xi32>, tensor<?x4xf32>
// CHECK: moe.threshold %{{.*}} {max_k = 8 : i64} : tensor<?x8xf32> -> tensor<?x8xi32>, tensor<?x8xf32>
// CHECK: moe.threshold %{{.*}} {max_k = 3 : i64, threshold = 1.000000e-01 : f32} : tensor<?x8xf32> -> tensor<?x3xi32>, tensor<?x3xf32>
// CHECK: moe.expert_choice %{{.*}} {capacity = 16 : i64} : tensor<?x8xf32> -> tensor<?x8xi32>, tensor<?x8xf32>
// CHECK: moe.gather_scores %{{.*}}, %{{.*}} : tensor<?x8xf32>, tensor<?x2xi32> -> tensor<?x2xf32>
// CHECK: moe.drop_null_experts %{{.*}}, %{{.*}} {num_experts = 6 : i64} : tensor<?x2xi32>, tensor<?x2xf32>
func.func @selection(%s: tensor<?x8xf32>) -> (tensor<?x2xi32>, tensor<?x2xf32>) {
  %0 = moe.group_limit %s {group_score = #moe.group_score<max>, keep_groups = 2 : i64, num_groups = 4 : i64} : tensor<?x8xf32>
  %1 = moe.group_limit %0 {group_score = #moe.group_score<top2_sum>, keep_groups = 1 : i64, num_groups = 2 : i64} : tensor<?x8xf32>
  %ids, %v = moe.topk %1 {k = 2 : i64} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  %pi, %pv = moe.top_p %s {p = 0.8 : f32, max_k = 4 : i64} : tensor<?x8xf32> -> tensor<?x4xi32>, tensor<?x4xf32>
  %ti, %tv = moe.threshold %s {max_k = 8 : i64} : tensor<?x8xf32> -> tensor<?x8xi32>, tensor<?x8xf32>
  %ti2, %tv2 = moe.threshold %s {max_k = 3 : i64, threshold = 0.1 : f32} : tensor<?x8xf32> -> tensor<?x3xi32>, tensor<?x3xf32>
  %ci, %cv = moe.expert_choice %s {capacity = 16 : i64} : tensor<?x8xf32> -> tensor<?x8xi32>, tensor<?x8xf32>
  %g = moe.gather_scores %s, %ids : tensor<?x8xf32>, tensor<?x2xi32> -> tensor<?x2xf32>
  %ri, %rw = moe.drop_null_experts %ids, %g {num_experts = 6 : i64} : tensor<?x2xi32>, tensor<?x2xf32>
  return %ri, %rw : tensor<?x2xi32>, tensor<?x2xf32>
}

// Issue 12: router slots mapped onto merged experts; the dispatch over the
// merged count accepts the remapped ids.
// CHECK-LABEL: func.func @remap_experts
// CHECK: moe.remap_experts %{{.*}}, %{{.*}} mapping = [0, 1, 0, 2, 1, 2, 0, 1] : tensor<?x2xi32>, tensor<?x2xf32>
// CHECK: moe.dispatch %{{.*}} {num_experts = 3 : i64}
func.func @remap_experts(%s: tensor<?x8xf32>) -> tensor<?xi32> {
  %ids, %v = moe.topk %s {k = 2 : i64} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  %mi, %mw = moe.remap_experts %ids, %v mapping = [0, 1, 0, 2, 1, 2, 0, 1] : tensor<?x2xi32>, tensor<?x2xf32>
  %c, %o, %r = moe.dispatch %mi {num_experts = 3 : i64} : tensor<?x2xi32> -> tensor<3xi32>, tensor<4xi32>, tensor<?xi32>
  return %r : tensor<?xi32>
}

// Issue 13: one rank's share: experts 0 and 3 served elsewhere, expert 1
// replicated twice (this rank holds replica 1); the dispatch counts the
// rank's 2 local experts.
// CHECK-LABEL: func.func @remap_rank
// CHECK: moe.remap_experts %{{.*}}, %{{.*}} mapping = [-1, 0, 1, -1] {replica_count = array<i64: 1, 2, 1, 1>, replica_index = array<i64: 0, 1, 0, 0>} : tensor<?x2xi32>, tensor<?x2xf32>
// CHECK: moe.dispatch %{{.*}} {num_experts = 2 : i64}
func.func @remap_rank(%s: tensor<?x4xf32>) -> tensor<?xi32> {
  %ids, %v = moe.topk %s {k = 2 : i64} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  %mi, %mw = moe.remap_experts %ids, %v mapping = [-1, 0, 1, -1] {replica_count = array<i64: 1, 2, 1, 1>, replica_index = array<i64: 0, 1, 0, 0>} : tensor<?x2xi32>, tensor<?x2xf32>
  %c, %o, %r = moe.dispatch %mi {num_experts = 2 : i64} : tensor<?x2xi32> -> tensor<2xi32>, tensor<3xi32>, tensor<?xi32>
  return %r : tensor<?xi32>
}

// CHECK-LABEL: func.func @post_processing
// CHECK: moe.normalize %{{.*}} : tensor<?x2xf32>
// CHECK: moe.normalize %{{.*}} {epsilon = 9.99999968E-21 : f32} : tensor<?x2xf32>
// CHECK: moe.scale %{{.*}} {factor = 2.500000e+00 : f32} : tensor<?x2xf32>
// CHECK: moe.softmax %{{.*}} : tensor<?x2xf32>
// CHECK: moe.sigmoid %{{.*}} : tensor<?x2xf32>
func.func @post_processing(%w: tensor<?x2xf32>) -> tensor<?x2xf32> {
  %0 = moe.normalize %w : tensor<?x2xf32>
  %1 = moe.normalize %0 {epsilon = 1.0e-20 : f32} : tensor<?x2xf32>
  %2 = moe.scale %1 {factor = 2.5 : f32} : tensor<?x2xf32>
  %3 = moe.softmax %2 : tensor<?x2xf32>
  %4 = moe.sigmoid %3 : tensor<?x2xf32>
  return %4 : tensor<?x2xf32>
}

// CHECK-LABEL: func.func @dispatch_combine
// CHECK: moe.dispatch %{{.*}} {num_experts = 8 : i64} : tensor<?x2xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>
// CHECK: moe.permute %{{.*}}, %{{.*}}, %{{.*}} : (tensor<?x64xbf16>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x64xbf16>
// CHECK: moe.permute %{{.*}}, %{{.*}}, %{{.*}} scale_by_weight : (tensor<?x64xbf16>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x64xbf16>
// CHECK: moe.combine %{{.*}}, %{{.*}}, %{{.*}} : (tensor<?x64xbf16>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x64xbf16>
// CHECK: moe.combine %{{.*}}, %{{.*}}, %{{.*}} unweighted : (tensor<?x64xbf16>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x64xbf16>
func.func @dispatch_combine(%x: tensor<?x64xbf16>, %ids: tensor<?x2xi32>, %w: tensor<?x2xf32>) -> (tensor<?x64xbf16>, tensor<?x64xbf16>) {
  %counts, %offsets, %rows = moe.dispatch %ids {num_experts = 8 : i64} : tensor<?x2xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>
  %xs = moe.permute %x, %rows, %w : (tensor<?x64xbf16>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x64xbf16>
  %xs2 = moe.permute %x, %rows, %w scale_by_weight : (tensor<?x64xbf16>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x64xbf16>
  %y = moe.combine %xs, %rows, %w : (tensor<?x64xbf16>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x64xbf16>
  %y2 = moe.combine %xs2, %rows, %w unweighted : (tensor<?x64xbf16>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x64xbf16>
  return %y, %y2 : tensor<?x64xbf16>, tensor<?x64xbf16>
}

// CHECK-LABEL: func.func @low_rank_experts
// CHECK: %[[G:.*]] = moe.low_rank %{{.*}}, %{{.*}} : tensor<4x32x8xbf16>, tensor<4x8x64xbf16> -> tensor<4x32x64xbf16>
// CHECK: %[[D:.*]] = moe.low_rank %{{.*}}, %{{.*}} : tensor<4x64x8xbf16>, tensor<4x8x32xbf16> -> tensor<4x64x32xbf16>
// CHECK: moe.expert_ffn %{{.*}}, %{{.*}} gate(%[[G]]) up(%[[G]]) down(%[[D]])
func.func @low_rank_experts(%xs: tensor<?x64xbf16>, %off: tensor<5xi32>,
                            %ga: tensor<4x32x8xbf16>, %gb: tensor<4x8x64xbf16>,
                            %da: tensor<4x64x8xbf16>, %db: tensor<4x8x32xbf16>) -> tensor<?x64xbf16> {
  %g = moe.low_rank %ga, %gb : tensor<4x32x8xbf16>, tensor<4x8x64xbf16> -> tensor<4x32x64xbf16>
  %d = moe.low_rank %da, %db : tensor<4x64x8xbf16>, tensor<4x8x32xbf16> -> tensor<4x64x32xbf16>
  %0 = moe.expert_ffn %xs, %off gate(%g) up(%g) down(%d) {activation = #moe.activation<silu>} : (tensor<?x64xbf16>, tensor<5xi32>, tensor<4x32x64xbf16>, tensor<4x32x64xbf16>, tensor<4x64x32xbf16>) -> tensor<?x64xbf16>
  return %0 : tensor<?x64xbf16>
}

// CHECK-LABEL: func.func @experts
// CHECK: moe.expert_ffn %{{.*}}, %{{.*}} gate(%{{.*}}) up(%{{.*}}) down(%{{.*}}) {activation = #moe.activation<silu>}
// CHECK: moe.expert_ffn %{{.*}}, %{{.*}} gate(%{{.*}}) up(%{{.*}}) down(%{{.*}}) gate_bias(%{{.*}}) up_bias(%{{.*}}) down_bias(%{{.*}}) {activation = #moe.activation<gelu>}
// CHECK: moe.expert_ffn %{{.*}}, %{{.*}} gate_up(%{{.*}}) down(%{{.*}}) {activation = #moe.activation<gelu_tanh>}
// CHECK: moe.expert_ffn %{{.*}}, %{{.*}} gate_up(%{{.*}}) down(%{{.*}}) gate_up_bias(%{{.*}}) down_bias(%{{.*}}) {activation = #moe.activation<swiglu_clamped>, alpha = 1.500000e+00 : f32, gate_up_layout = #moe.gate_up_layout<interleaved>, limit = 5.000000e+00 : f32, weight_layout = #moe.weight_layout<in_out>}
// CHECK: moe.ffn %{{.*}} gate(%{{.*}}) up(%{{.*}}) down(%{{.*}}) {activation = #moe.activation<silu>} : (tensor<?x64xf16>, tensor<32x64xf16>, tensor<32x64xf16>, tensor<64x32xf16>) -> tensor<?x64xf16>
// CHECK: moe.row_scale %{{.*}}, %{{.*}} : (tensor<?x64xf16>, tensor<?x1xf32>) -> tensor<?x64xf16>
func.func @experts(%xs: tensor<?x64xbf16>, %off: tensor<5xi32>,
                   %g: tensor<4x32x64xbf16>, %u: tensor<4x32x64xbf16>, %d: tensor<4x64x32xbf16>,
                   %gb: tensor<4x32xbf16>, %db: tensor<4x64xbf16>,
                   %gu: tensor<4x64x64xbf16>, %gub: tensor<4x64xbf16>, %d2: tensor<4x32x64xbf16>,
                   %guo: tensor<4x64x64xbf16>,
                   %x: tensor<?x64xf16>, %sg: tensor<32x64xf16>, %su: tensor<32x64xf16>, %sd: tensor<64x32xf16>,
                   %f: tensor<?x1xf32>) -> tensor<?x64xf16> {
  %0 = moe.expert_ffn %xs, %off gate(%g) up(%u) down(%d) {activation = #moe.activation<silu>} : (tensor<?x64xbf16>, tensor<5xi32>, tensor<4x32x64xbf16>, tensor<4x32x64xbf16>, tensor<4x64x32xbf16>) -> tensor<?x64xbf16>
  %1 = moe.expert_ffn %0, %off gate(%g) up(%u) down(%d) gate_bias(%gb) up_bias(%gb) down_bias(%db) {activation = #moe.activation<gelu>} : (tensor<?x64xbf16>, tensor<5xi32>, tensor<4x32x64xbf16>, tensor<4x32x64xbf16>, tensor<4x64x32xbf16>, tensor<4x32xbf16>, tensor<4x32xbf16>, tensor<4x64xbf16>) -> tensor<?x64xbf16>
  %2 = moe.expert_ffn %1, %off gate_up(%guo) down(%d) {activation = #moe.activation<gelu_tanh>} : (tensor<?x64xbf16>, tensor<5xi32>, tensor<4x64x64xbf16>, tensor<4x64x32xbf16>) -> tensor<?x64xbf16>
  %3 = moe.expert_ffn %2, %off gate_up(%gu) down(%d2) gate_up_bias(%gub) down_bias(%db) {activation = #moe.activation<swiglu_clamped>, alpha = 1.5 : f32, limit = 5.0 : f32, gate_up_layout = #moe.gate_up_layout<interleaved>, weight_layout = #moe.weight_layout<in_out>} : (tensor<?x64xbf16>, tensor<5xi32>, tensor<4x64x64xbf16>, tensor<4x32x64xbf16>, tensor<4x64xbf16>, tensor<4x64xbf16>) -> tensor<?x64xbf16>
  %4 = moe.ffn %x gate(%sg) up(%su) down(%sd) {activation = #moe.activation<silu>} : (tensor<?x64xf16>, tensor<32x64xf16>, tensor<32x64xf16>, tensor<64x32xf16>) -> tensor<?x64xf16>
  %5 = moe.row_scale %4, %f : (tensor<?x64xf16>, tensor<?x1xf32>) -> tensor<?x64xf16>
  return %5 : tensor<?x64xf16>
}

// Non-gated experts (BlockFFN, Switch/T5): up and down only, the keyword
// round-trips; relu also as a gated activation (ReGLU).
// CHECK-LABEL: func.func @non_gated
// CHECK: moe.expert_ffn %{{.*}}, %{{.*}} non_gated up(%{{.*}}) down(%{{.*}}) {activation = #moe.activation<silu>} : (tensor<?x64xbf16>, tensor<5xi32>, tensor<4x32x64xbf16>, tensor<4x64x32xbf16>) -> tensor<?x64xbf16>
// CHECK: moe.expert_ffn %{{.*}}, %{{.*}} non_gated up(%{{.*}}) down(%{{.*}}) up_bias(%{{.*}}) down_bias(%{{.*}}) {activation = #moe.activation<relu>}
// CHECK: moe.expert_ffn %{{.*}}, %{{.*}} non_gated up(%{{.*}}) down(%{{.*}}) {activation = #moe.activation<gelu>, weight_layout = #moe.weight_layout<in_out>}
// CHECK: moe.expert_ffn %{{.*}}, %{{.*}} gate(%{{.*}}) up(%{{.*}}) down(%{{.*}}) {activation = #moe.activation<relu>}
// CHECK: moe.ffn %{{.*}} non_gated up(%{{.*}}) down(%{{.*}}) up_bias(%{{.*}}) {activation = #moe.activation<gelu_tanh>} : (tensor<?x64xbf16>, tensor<32x64xbf16>, tensor<64x32xbf16>, tensor<32xbf16>) -> tensor<?x64xbf16>
func.func @non_gated(%xs: tensor<?x64xbf16>, %off: tensor<5xi32>,
                     %u: tensor<4x32x64xbf16>, %d: tensor<4x64x32xbf16>,
                     %ub: tensor<4x32xbf16>, %db: tensor<4x64xbf16>,
                     %ui: tensor<4x64x32xbf16>, %di: tensor<4x32x64xbf16>,
                     %su: tensor<32x64xbf16>, %sd: tensor<64x32xbf16>, %sb: tensor<32xbf16>) -> tensor<?x64xbf16> {
  %0 = moe.expert_ffn %xs, %off non_gated up(%u) down(%d) {activation = #moe.activation<silu>} : (tensor<?x64xbf16>, tensor<5xi32>, tensor<4x32x64xbf16>, tensor<4x64x32xbf16>) -> tensor<?x64xbf16>
  %1 = moe.expert_ffn %0, %off non_gated up(%u) down(%d) up_bias(%ub) down_bias(%db) {activation = #moe.activation<relu>} : (tensor<?x64xbf16>, tensor<5xi32>, tensor<4x32x64xbf16>, tensor<4x64x32xbf16>, tensor<4x32xbf16>, tensor<4x64xbf16>) -> tensor<?x64xbf16>
  %2 = moe.expert_ffn %1, %off non_gated up(%ui) down(%di) {activation = #moe.activation<gelu>, weight_layout = #moe.weight_layout<in_out>} : (tensor<?x64xbf16>, tensor<5xi32>, tensor<4x64x32xbf16>, tensor<4x32x64xbf16>) -> tensor<?x64xbf16>
  %3 = moe.expert_ffn %2, %off gate(%u) up(%u) down(%d) {activation = #moe.activation<relu>} : (tensor<?x64xbf16>, tensor<5xi32>, tensor<4x32x64xbf16>, tensor<4x32x64xbf16>, tensor<4x64x32xbf16>) -> tensor<?x64xbf16>
  %4 = moe.ffn %3 non_gated up(%su) down(%sd) up_bias(%sb) {activation = #moe.activation<gelu_tanh>} : (tensor<?x64xbf16>, tensor<32x64xbf16>, tensor<64x32xbf16>, tensor<32xbf16>) -> tensor<?x64xbf16>
  return %4 : tensor<?x64xbf16>
}

// Experts of unequal width (Duo-LLM): one width per expert, the widest
// may be narrower than the stack (in_out and a fused gate_up too).
// CHECK-LABEL: func.func @widths
// CHECK: moe.expert_ffn %{{.*}}, %{{.*}} gate(%{{.*}}) up(%{{.*}}) down(%{{.*}}) {activation = #moe.activation<silu>, widths = array<i64: 8, 32, 32, 16>} : (tensor<?x64xf32>, tensor<5xi32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>) -> tensor<?x64xf32>
// CHECK: moe.expert_ffn %{{.*}}, %{{.*}} non_gated up(%{{.*}}) down(%{{.*}}) {activation = #moe.activation<relu>, weight_layout = #moe.weight_layout<in_out>, widths = array<i64: 1, 2, 3, 4>}
// CHECK: moe.expert_ffn %{{.*}}, %{{.*}} gate_up(%{{.*}}) down(%{{.*}}) {activation = #moe.activation<silu>, gate_up_layout = #moe.gate_up_layout<interleaved>, widths = array<i64: 32, 24, 16, 8>}
func.func @widths(%xs: tensor<?x64xf32>, %off: tensor<5xi32>,
                  %g: tensor<4x32x64xf32>, %d: tensor<4x64x32xf32>,
                  %ui: tensor<4x64x32xf32>, %di: tensor<4x32x64xf32>,
                  %gu: tensor<4x64x64xf32>) -> tensor<?x64xf32> {
  %0 = moe.expert_ffn %xs, %off gate(%g) up(%g) down(%d) {activation = #moe.activation<silu>, widths = array<i64: 8, 32, 32, 16>} : (tensor<?x64xf32>, tensor<5xi32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>) -> tensor<?x64xf32>
  %1 = moe.expert_ffn %0, %off non_gated up(%ui) down(%di) {activation = #moe.activation<relu>, weight_layout = #moe.weight_layout<in_out>, widths = array<i64: 1, 2, 3, 4>} : (tensor<?x64xf32>, tensor<5xi32>, tensor<4x64x32xf32>, tensor<4x32x64xf32>) -> tensor<?x64xf32>
  %2 = moe.expert_ffn %1, %off gate_up(%gu) down(%d) {activation = #moe.activation<silu>, gate_up_layout = #moe.gate_up_layout<interleaved>, widths = array<i64: 32, 24, 16, 8>} : (tensor<?x64xf32>, tensor<5xi32>, tensor<4x64x64xf32>, tensor<4x64x32xf32>) -> tensor<?x64xf32>
  return %2 : tensor<?x64xf32>
}

// CHECK-LABEL: func.func @lora
// CHECK: moe.lora_mixture %{{.*}} base(%{{.*}}) base_bias(%{{.*}}) lora(%{{.*}}, %{{.*}}) routing(%{{.*}}, %{{.*}}) {scales = [2.000000e+00 : f32, 5.000000e-01 : f32, 1.000000e+00 : f32, 1.000000e+00 : f32]}
// CHECK: moe.lora_mixture %{{.*}} base(%{{.*}}) lora(%{{.*}}, %{{.*}}) {scales = [2.000000e+00 : f32]} : (tensor<?x64xf32>, tensor<48x64xf32>, tensor<1x8x64xf32>, tensor<1x48x8xf32>) -> tensor<?x48xf32>
func.func @lora(%x: tensor<?x64xf32>, %w: tensor<48x64xf32>, %b: tensor<48xf32>,
                %a: tensor<4x8x64xf32>, %bb: tensor<4x48x8xf32>, %ids: tensor<?x2xi32>,
                %rw: tensor<?x2xf32>, %a1: tensor<1x8x64xf32>, %b1: tensor<1x48x8xf32>) -> (tensor<?x48xf32>, tensor<?x48xf32>) {
  %0 = moe.lora_mixture %x base(%w) base_bias(%b) lora(%a, %bb) routing(%ids, %rw) {scales = [2.0 : f32, 0.5 : f32, 1.0 : f32, 1.0 : f32]} : (tensor<?x64xf32>, tensor<48x64xf32>, tensor<48xf32>, tensor<4x8x64xf32>, tensor<4x48x8xf32>, tensor<?x2xi32>, tensor<?x2xf32>) -> tensor<?x48xf32>
  %1 = moe.lora_mixture %x base(%w) lora(%a1, %b1) {scales = [2.0 : f32]} : (tensor<?x64xf32>, tensor<48x64xf32>, tensor<1x8x64xf32>, tensor<1x48x8xf32>) -> tensor<?x48xf32>
  return %0, %1 : tensor<?x48xf32>, tensor<?x48xf32>
}

// Inline constants work as weights (small tests).
// CHECK-LABEL: func.func @inline_weights
// CHECK: arith.constant dense<{{.*}}> : tensor<2x4xf32>
// CHECK: moe.router_linear
func.func @inline_weights(%x: tensor<?x4xf32>) -> tensor<?x2xf32> attributes {moe.layer = 3 : i64} {
  %w = arith.constant dense<[[1.0, 0.0, -1.0, 0.5], [0.25, 2.0, 0.0, -0.5]]> : tensor<2x4xf32>
  %0 = moe.router_linear %x, %w : (tensor<?x4xf32>, tensor<2x4xf32>) -> tensor<?x2xf32>
  return %0 : tensor<?x2xf32>
}

// CHECK-LABEL: func.func @fused
// CHECK: %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} = moe.fused_route %{{.*}} {num_experts = 4 : i64} : tensor<?x16xf32> -> tensor<?x2xi32>, tensor<?x2xf32>, tensor<4xi32>, tensor<5xi32>, tensor<?xi32> {
// CHECK: moe.yield %{{.*}}, %{{.*}} : tensor<?x2xi32>, tensor<?x2xf32>
// CHECK: moe.fused_experts %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} {layout = #moe.layout<per_token>} : (tensor<?x16xf32>, tensor<?x2xi32>, tensor<?x2xf32>, tensor<?xi32>, tensor<5xi32>) -> tensor<?x16xf32> {
// CHECK: moe.yield %{{.*}} : tensor<?x16xf32>
func.func @fused(%x: tensor<?x16xf32>) -> tensor<?x16xf32> {
  %ids, %w, %c, %off, %rows = moe.fused_route %x {num_experts = 4 : i64} : tensor<?x16xf32> -> tensor<?x2xi32>, tensor<?x2xf32>, tensor<4xi32>, tensor<5xi32>, tensor<?xi32> {
  ^bb0(%a: tensor<?x16xf32>):
    %wg = moe.weight ["gate"] from ["m.safetensors"] : tensor<4x16xf32>
    %l = moe.router_linear %a, %wg : (tensor<?x16xf32>, tensor<4x16xf32>) -> tensor<?x4xf32>
    %i, %v = moe.topk %l {k = 2 : i64} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    moe.yield %i, %v : tensor<?x2xi32>, tensor<?x2xf32>
  }
  %y = moe.fused_experts %x, %ids, %w, %rows, %off {layout = #moe.layout<per_token>} : (tensor<?x16xf32>, tensor<?x2xi32>, tensor<?x2xf32>, tensor<?xi32>, tensor<5xi32>) -> tensor<?x16xf32> {
  ^bb0(%bx: tensor<?x16xf32>, %bi: tensor<?x2xi32>, %bw: tensor<?x2xf32>, %br: tensor<?xi32>, %bo: tensor<5xi32>):
    %g = moe.weight ["g"] from ["m.safetensors"] : tensor<4x8x16xf32>
    %d = moe.weight ["d"] from ["m.safetensors"] : tensor<4x16x8xf32>
    %xs = moe.permute %bx, %br, %bw : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
    %ys = moe.expert_ffn %xs, %bo gate(%g) up(%g) down(%d) {activation = #moe.activation<silu>} : (tensor<?x16xf32>, tensor<5xi32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x16x8xf32>) -> tensor<?x16xf32>
    %out = moe.combine %ys, %br, %bw : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
    moe.yield %out : tensor<?x16xf32>
  }
  return %y : tensor<?x16xf32>
}

// CHECK-LABEL: func.func @stack_of_one
// CHECK: moe.weight stacked ["adapter.lora_A.weight"] from ["adapter_model.safetensors"] : tensor<1x8x64xf32>
func.func @stack_of_one() -> tensor<1x8x64xf32> {
  %0 = moe.weight stacked ["adapter.lora_A.weight"] from ["adapter_model.safetensors"] : tensor<1x8x64xf32>
  return %0 : tensor<1x8x64xf32>
}

// A given routing (an engine's dispatch): the body takes (input, ids,
// weights) and remaps the physical slots to the local experts.
// CHECK-LABEL: func.func @fused_given
// CHECK: moe.fused_route %{{.*}} given(%{{.*}}, %{{.*}} : tensor<?x4xi32>, tensor<?x4xf32>) {num_experts = 2 : i64} : tensor<?x16xf32> -> tensor<?x4xi32>, tensor<?x4xf32>, tensor<2xi32>, tensor<3xi32>, tensor<?xi32> {
// CHECK: ^bb0(%{{.*}}: tensor<?x16xf32>, %{{.*}}: tensor<?x4xi32>, %{{.*}}: tensor<?x4xf32>):
// CHECK: moe.remap_experts %{{.*}}, %{{.*}} mapping = [-1, 0, -1, 1, -1, -1]
func.func @fused_given(%x: tensor<?x16xf32>, %gi: tensor<?x4xi32>, %gw: tensor<?x4xf32>) -> (tensor<?x4xi32>, tensor<?x4xf32>) {
  %ids, %w, %c, %off, %rows = moe.fused_route %x given(%gi, %gw : tensor<?x4xi32>, tensor<?x4xf32>) {num_experts = 2 : i64} : tensor<?x16xf32> -> tensor<?x4xi32>, tensor<?x4xf32>, tensor<2xi32>, tensor<3xi32>, tensor<?xi32> {
  ^bb0(%a: tensor<?x16xf32>, %i: tensor<?x4xi32>, %g: tensor<?x4xf32>):
    %li, %lw = moe.remap_experts %i, %g mapping = [-1, 0, -1, 1, -1, -1] : tensor<?x4xi32>, tensor<?x4xf32>
    moe.yield %li, %lw : tensor<?x4xi32>, tensor<?x4xf32>
  }
  return %ids, %w : tensor<?x4xi32>, tensor<?x4xf32>
}

// The given routing as it is.
// CHECK-LABEL: func.func @fused_given_as_is
// CHECK: moe.fused_route %{{.*}} given(
// CHECK: ^bb0(%{{.*}}: tensor<?x16xf32>, %[[I:.*]]: tensor<?x2xi32>, %[[W:.*]]: tensor<?x2xf32>):
// CHECK-NEXT: moe.yield %[[I]], %[[W]] : tensor<?x2xi32>, tensor<?x2xf32>
func.func @fused_given_as_is(%x: tensor<?x16xf32>, %gi: tensor<?x2xi32>, %gw: tensor<?x2xf32>) -> tensor<?xi32> {
  %ids, %w, %c, %off, %rows = moe.fused_route %x given(%gi, %gw : tensor<?x2xi32>, tensor<?x2xf32>) {num_experts = 4 : i64} : tensor<?x16xf32> -> tensor<?x2xi32>, tensor<?x2xf32>, tensor<4xi32>, tensor<5xi32>, tensor<?xi32> {
  ^bb0(%a: tensor<?x16xf32>, %i: tensor<?x2xi32>, %g: tensor<?x2xf32>):
    moe.yield %i, %g : tensor<?x2xi32>, tensor<?x2xf32>
  }
  return %rows : tensor<?xi32>
}

// DynMoLE: top_p with a minimum count and the `within` prefix, and the
// Tsallis entropy fallback to every expert.
// CHECK-LABEL: func.func @dynmole
// CHECK: moe.top_p %{{.*}} {max_k = 8 : i64, min_k = 2 : i64, p = 7.500000e-01 : f32, prefix = #moe.top_p_prefix<within>} : tensor<?x8xf32> -> tensor<?x8xi32>, tensor<?x8xf32>
// CHECK: moe.top_p %{{.*}} {max_k = 3 : i64, p = 5.000000e-01 : f32} : tensor<?x8xf32> -> tensor<?x3xi32>, tensor<?x3xf32>
// CHECK: moe.entropy_fallback %{{.*}}, %{{.*}}, %{{.*}} {epsilon = 9.99999974E-6 : f32, normalized, q = 1.500000e+00 : f32, threshold = 0.899999976 : f32} : tensor<?x8xf32>, tensor<?x8xi32>, tensor<?x8xf32> -> tensor<?x8xi32>, tensor<?x8xf32>
// CHECK: moe.entropy_fallback %{{.*}}, %{{.*}}, %{{.*}} {q = 5.000000e-01 : f32, threshold = 1.000000e+00 : f32} : tensor<?x8xf32>, tensor<?x3xi32>, tensor<?x3xf32> -> tensor<?x8xi32>, tensor<?x8xf32>
func.func @dynmole(%p: tensor<?x8xf32>) -> (tensor<?x8xi32>, tensor<?x8xf32>, tensor<?x8xi32>, tensor<?x8xf32>) {
  %i, %v = moe.top_p %p {p = 0.75 : f32, max_k = 8 : i64, min_k = 2 : i64, prefix = #moe.top_p_prefix<within>} : tensor<?x8xf32> -> tensor<?x8xi32>, tensor<?x8xf32>
  %i2, %v2 = moe.top_p %p {p = 0.5 : f32, max_k = 3 : i64, min_k = 1 : i64, prefix = #moe.top_p_prefix<reach>} : tensor<?x8xf32> -> tensor<?x3xi32>, tensor<?x3xf32>
  %ids, %w = moe.entropy_fallback %p, %i, %v {q = 1.5 : f32, threshold = 0.9 : f32, normalized, epsilon = 1.0e-5 : f32} : tensor<?x8xf32>, tensor<?x8xi32>, tensor<?x8xf32> -> tensor<?x8xi32>, tensor<?x8xf32>
  %ids2, %w2 = moe.entropy_fallback %p, %i2, %v2 {q = 0.5 : f32, threshold = 1.0 : f32} : tensor<?x8xf32>, tensor<?x3xi32>, tensor<?x3xf32> -> tensor<?x8xi32>, tensor<?x8xf32>
  return %ids, %w, %ids2, %w2 : tensor<?x8xi32>, tensor<?x8xf32>, tensor<?x8xi32>, tensor<?x8xf32>
}

// Capacity limits (GShard, Switch, Tutel capacity_factor): a cross-token op
// after the selection; its ids are a selection over num_experts.
// CHECK-LABEL: func.func @capacity
// CHECK: %[[I:.*]], %[[W:.*]] = moe.capacity %{{.*}}, %{{.*}} {capacity_factor = 1.250000e+00 : f32, num_experts = 8 : i64} : tensor<?x2xi32>, tensor<?x2xf32>
// CHECK: moe.normalize %[[W]]
// CHECK: moe.dispatch %[[I]] {num_experts = 8 : i64}
func.func @capacity(%s: tensor<?x8xf32>) -> (tensor<?x2xf32>, tensor<?xi32>) {
  %ids, %v = moe.topk %s {k = 2 : i64} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  %ci, %cw = moe.capacity %ids, %v {capacity_factor = 1.25 : f32, num_experts = 8 : i64} : tensor<?x2xi32>, tensor<?x2xf32>
  %n = moe.normalize %cw : tensor<?x2xf32>
  %c, %o, %r = moe.dispatch %ci {num_experts = 8 : i64} : tensor<?x2xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>
  return %n, %r : tensor<?x2xf32>, tensor<?xi32>
}

// Balanced assignment: Sinkhorn iterations over the batch, then a per-token
// selection whose weights come from the unbalanced probabilities (S-BASE).
// CHECK-LABEL: func.func @sinkhorn
// CHECK: %[[B:.*]] = moe.sinkhorn %{{.*}} {epsilon = 5.000000e-01 : f32, iterations = 4 : i64} : tensor<?x8xf32>
// CHECK: moe.topk %[[B]] {k = 2 : i64}
func.func @sinkhorn(%l: tensor<?x8xf32>) -> (tensor<?x2xi32>, tensor<?x2xf32>) {
  %p = moe.softmax %l : tensor<?x8xf32>
  %b = moe.sinkhorn %l {iterations = 4 : i64, epsilon = 0.5 : f32} : tensor<?x8xf32>
  %ids, %v = moe.topk %b {k = 2 : i64} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  %w = moe.gather_scores %p, %ids : tensor<?x8xf32>, tensor<?x2xi32> -> tensor<?x2xf32>
  return %ids, %w : tensor<?x2xi32>, tensor<?x2xf32>
}

// Graph of Tokens: router probabilities mixed over similar tokens (causal).
// CHECK-LABEL: func.func @similarity_mix
// CHECK: moe.similarity_mix %{{.*}}, %{{.*}} {causal, temperature = 8.000000e+00 : f32} : tensor<?x64xbf16>, tensor<?x8xf32>
func.func @similarity_mix(%x: tensor<?x64xbf16>, %l: tensor<?x8xf32>) -> tensor<?x8xf32> {
  %p = moe.softmax %l : tensor<?x8xf32>
  %m = moe.similarity_mix %x, %p {temperature = 8.0 : f32, causal} : tensor<?x64xbf16>, tensor<?x8xf32>
  return %m : tensor<?x8xf32>
}

// RMoE's GRU router state, with and without biases.
// CHECK-LABEL: func.func @gru_cell
// CHECK: moe.gru_cell %{{.*}}, %{{.*}} weights(%{{.*}}, %{{.*}}) biases(%{{.*}}, %{{.*}}) : tensor<?x16xf32>, tensor<?x32xf32>, tensor<96x16xf32>, tensor<96x32xf32>, tensor<96xf32>, tensor<96xf32>
// CHECK: moe.gru_cell %{{.*}}, %{{.*}} weights(%{{.*}}, %{{.*}}) : tensor<?x16xbf16>, tensor<?x32xf32>, tensor<96x16xbf16>, tensor<96x32xf32>
func.func @gru_cell(%u: tensor<?x16xf32>, %h: tensor<?x32xf32>, %wi: tensor<96x16xf32>, %wh: tensor<96x32xf32>, %bi: tensor<96xf32>, %bh: tensor<96xf32>, %ub: tensor<?x16xbf16>, %wib: tensor<96x16xbf16>) -> (tensor<?x32xf32>, tensor<?x32xf32>) {
  %h1 = moe.gru_cell %u, %h weights(%wi, %wh) biases(%bi, %bh) : tensor<?x16xf32>, tensor<?x32xf32>, tensor<96x16xf32>, tensor<96x32xf32>, tensor<96xf32>, tensor<96xf32>
  %h2 = moe.gru_cell %ub, %h weights(%wib, %wh) : tensor<?x16xbf16>, tensor<?x32xf32>, tensor<96x16xbf16>, tensor<96x32xf32>
  return %h1, %h2 : tensor<?x32xf32>, tensor<?x32xf32>
}

// Cosine routers (GLIDER's local router): normalised input and/or weight
// rows, a scale.
// CHECK-LABEL: func.func @cosine_router
// CHECK: moe.router_linear %{{.*}}, %{{.*}} {normalize = #moe.router_normalize<both>, scale = 1.000000e+01 : f32} : (tensor<?x64xf32>, tensor<8x64xf32>) -> tensor<?x8xf32>
// CHECK: moe.router_linear %{{.*}}, %{{.*}} bias %{{.*}} {epsilon = 9.99999997E-7 : f32, normalize = #moe.router_normalize<input>} : (tensor<?x64xf32>, tensor<8x64xf32>, tensor<8xf32>) -> tensor<?x8xf32>
// CHECK: moe.router_linear %{{.*}}, %{{.*}} {normalize = #moe.router_normalize<weight>} : (tensor<?x64xf32>, tensor<8x64xf32>) -> tensor<?x8xf32>
func.func @cosine_router(%x: tensor<?x64xf32>, %w: tensor<8x64xf32>, %b: tensor<8xf32>) -> (tensor<?x8xf32>, tensor<?x8xf32>, tensor<?x8xf32>) {
  %0 = moe.router_linear %x, %w {normalize = #moe.router_normalize<both>, scale = 10.0 : f32} : (tensor<?x64xf32>, tensor<8x64xf32>) -> tensor<?x8xf32>
  %1 = moe.router_linear %x, %w bias %b {normalize = #moe.router_normalize<input>, epsilon = 1.0e-6 : f32} : (tensor<?x64xf32>, tensor<8x64xf32>, tensor<8xf32>) -> tensor<?x8xf32>
  %2 = moe.router_linear %x, %w {normalize = #moe.router_normalize<weight>} : (tensor<?x64xf32>, tensor<8x64xf32>) -> tensor<?x8xf32>
  return %0, %1, %2 : tensor<?x8xf32>, tensor<?x8xf32>, tensor<?x8xf32>
}

// GLIDER's global router: sequence scores added per token through a map.
// CHECK-LABEL: func.func @sequence_scores
// CHECK: moe.add_sequence_scores %{{.*}}, %{{.*}}, %{{.*}} : tensor<?x8xf32>, tensor<?x8xf32>, tensor<?xi32>
// CHECK: moe.add_sequence_scores %{{.*}}, %{{.*}}, %{{.*}} {factor = 5.000000e-01 : f32} : tensor<7x8xf32>, tensor<3x8xf32>, tensor<7xi32>
func.func @sequence_scores(%s: tensor<?x8xf32>, %g: tensor<?x8xf32>, %m: tensor<?xi32>, %s7: tensor<7x8xf32>, %g3: tensor<3x8xf32>, %m7: tensor<7xi32>) -> (tensor<?x8xf32>, tensor<7x8xf32>) {
  %0 = moe.add_sequence_scores %s, %g, %m : tensor<?x8xf32>, tensor<?x8xf32>, tensor<?xi32>
  %1 = moe.add_sequence_scores %s7, %g3, %m7 {factor = 0.5 : f32} : tensor<7x8xf32>, tensor<3x8xf32>, tensor<7xi32>
  return %0, %1 : tensor<?x8xf32>, tensor<7x8xf32>
}

// CHECK-LABEL: func.func @quantized_experts
// CHECK: moe.weight ["l.experts.gate_up_proj_blocks"] from ["m.safetensors"] : tensor<4x64x64xf4E2M1FN>
// CHECK: moe.weight ["l.experts.gate_up_proj_scales"] from ["m.safetensors"] : tensor<4x64x2xf8E8M0FNU>
// CHECK: moe.expert_ffn %{{.*}}, %{{.*}} gate(%{{.*}}) up(%{{.*}}) down(%{{.*}}) gate_scale(%{{.*}}) up_scale(%{{.*}}) down_scale(%{{.*}}) {activation = #moe.activation<silu>, quant_block = array<i64: 128, 128>} : (tensor<?x200xbf16>, tensor<3xi32>, tensor<2x136x200xf8E4M3FN>, tensor<2x136x200xf8E4M3FN>, tensor<2x200x136xf8E4M3FN>, tensor<2x2x2xf32>, tensor<2x2x2xf32>, tensor<2x2x2xf32>) -> tensor<?x200xbf16>
// CHECK: moe.expert_ffn %{{.*}}, %{{.*}} gate_up(%{{.*}}) down(%{{.*}}) gate_up_bias(%{{.*}}) down_bias(%{{.*}}) gate_up_scale(%{{.*}}) down_scale(%{{.*}}) {activation = #moe.activation<swiglu_clamped>, gate_up_layout = #moe.gate_up_layout<interleaved>, quant_block = array<i64: 1, 32>}
// CHECK: moe.ffn %{{.*}} gate(%{{.*}}) up(%{{.*}}) down(%{{.*}}) gate_scale(%{{.*}}) up_scale(%{{.*}}) down_scale(%{{.*}}) {activation = #moe.activation<silu>, quant_block = array<i64: 128, 128>}
func.func @quantized_experts(%xs: tensor<?x200xbf16>, %off: tensor<3xi32>,
    %g8: tensor<2x136x200xf8E4M3FN>, %d8: tensor<2x200x136xf8E4M3FN>,
    %sg: tensor<2x2x2xf32>, %sd: tensor<2x2x2xf32>,
    %xg: tensor<?x64xbf16>, %off4: tensor<5xi32>,
    %d4: tensor<4x64x32xf4E2M1FN>, %sd4: tensor<4x64x1xf8E8M0FNU>,
    %gub: tensor<4x64xbf16>, %db: tensor<4x64xbf16>,
    %fg: tensor<136x200xf8E4M3FN>, %fd: tensor<200x136xf8E4M3FN>,
    %fsg: tensor<2x2xf32>, %fsd: tensor<2x2xf32>)
    -> (tensor<?x200xbf16>, tensor<?x64xbf16>, tensor<?x200xbf16>) {
  %gu4 = moe.weight ["l.experts.gate_up_proj_blocks"] from ["m.safetensors"] : tensor<4x64x64xf4E2M1FN>
  %sgu4 = moe.weight ["l.experts.gate_up_proj_scales"] from ["m.safetensors"] : tensor<4x64x2xf8E8M0FNU>
  // DeepSeek-V3 FP8: 136 = 128 + 8 and 200 = 128 + 72 leave partial edge blocks.
  %0 = moe.expert_ffn %xs, %off gate(%g8) up(%g8) down(%d8) gate_scale(%sg) up_scale(%sg) down_scale(%sd) {activation = #moe.activation<silu>, quant_block = array<i64: 128, 128>} : (tensor<?x200xbf16>, tensor<3xi32>, tensor<2x136x200xf8E4M3FN>, tensor<2x136x200xf8E4M3FN>, tensor<2x200x136xf8E4M3FN>, tensor<2x2x2xf32>, tensor<2x2x2xf32>, tensor<2x2x2xf32>) -> tensor<?x200xbf16>
  // gpt-oss MXFP4: [E, out, in] blocks, 32 input values per E8M0 scale.
  %1 = moe.expert_ffn %xg, %off4 gate_up(%gu4) down(%d4) gate_up_bias(%gub) down_bias(%db) gate_up_scale(%sgu4) down_scale(%sd4) {activation = #moe.activation<swiglu_clamped>, gate_up_layout = #moe.gate_up_layout<interleaved>, quant_block = array<i64: 1, 32>} : (tensor<?x64xbf16>, tensor<5xi32>, tensor<4x64x64xf4E2M1FN>, tensor<4x64x32xf4E2M1FN>, tensor<4x64xbf16>, tensor<4x64xbf16>, tensor<4x64x2xf8E8M0FNU>, tensor<4x64x1xf8E8M0FNU>) -> tensor<?x64xbf16>
  %2 = moe.ffn %xs gate(%fg) up(%fg) down(%fd) gate_scale(%fsg) up_scale(%fsg) down_scale(%fsd) {activation = #moe.activation<silu>, quant_block = array<i64: 128, 128>} : (tensor<?x200xbf16>, tensor<136x200xf8E4M3FN>, tensor<136x200xf8E4M3FN>, tensor<200x136xf8E4M3FN>, tensor<2x2xf32>, tensor<2x2xf32>, tensor<2x2xf32>) -> tensor<?x200xbf16>
  return %0, %1, %2 : tensor<?x200xbf16>, tensor<?x64xbf16>, tensor<?x200xbf16>
}
