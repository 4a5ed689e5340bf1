// RUN: moe-opt %s --moe-fuse-experts --split-input-file --verify-diagnostics | FileCheck %s
// RUN: moe-opt %s --moe-fuse-experts=decode-max-tokens=2 --split-input-file --verify-diagnostics | FileCheck %s --check-prefix=SMALL

// Gather, experts and combine become one op; the weights move into its body.
// A dynamic token count keeps the layout a run-time choice.
// CHECK-LABEL: func.func @routed
// CHECK-SAME: (%[[X:.*]]: tensor<?x16xf32>, %[[IDS:.*]]: tensor<?x2xi32>, %[[W:.*]]: tensor<?x2xf32>)
// CHECK: %{{.*}}, %[[OFF:.*]], %[[ROWS:.*]] = moe.dispatch %[[IDS]]
// CHECK: %[[Y:.*]] = moe.fused_experts %[[X]], %[[IDS]], %[[W]], %[[ROWS]], %[[OFF]] {layout = #moe.layout<runtime>}
// CHECK-NEXT: ^bb0(%[[BX:.*]]: tensor<?x16xf32>, %{{.*}}: tensor<?x2xi32>, %[[BW:.*]]: tensor<?x2xf32>, %[[BR:.*]]: tensor<?xi32>, %[[BO:.*]]: tensor<5xi32>):
// CHECK-NEXT: %[[G:.*]] = moe.weight ["g"]
// CHECK-NEXT: %[[U:.*]] = moe.weight ["u"]
// CHECK-NEXT: %[[D:.*]] = moe.weight ["d"]
// CHECK-NEXT: %[[XS:.*]] = moe.permute %[[BX]], %[[BR]], %[[BW]]
// CHECK-NEXT: %[[YS:.*]] = moe.expert_ffn %[[XS]], %[[BO]] gate(%[[G]]) up(%[[U]]) down(%[[D]])
// CHECK-NEXT: %[[C:.*]] = moe.combine %[[YS]], %[[BR]], %[[BW]]
// CHECK-NEXT: moe.yield %[[C]]
// CHECK-NEXT: }
// CHECK-NOT: moe.weight
// CHECK: return %[[Y]]
func.func @routed(%x: tensor<?x16xf32>, %ids: tensor<?x2xi32>, %w: tensor<?x2xf32>) -> tensor<?x16xf32> {
  %c, %off, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
  %xs = moe.permute %x, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  %g = moe.weight ["g"] from ["m.safetensors"] : tensor<4x8x16xbf16>
  %u = moe.weight ["u"] from ["m.safetensors"] : tensor<4x8x16xbf16>
  %d = moe.weight ["d"] from ["m.safetensors"] : tensor<4x16x8xbf16>
  %ys = moe.expert_ffn %xs, %off gate(%g) up(%u) down(%d) {activation = #moe.activation<silu>} : (tensor<?x16xf32>, tensor<5xi32>, tensor<4x8x16xbf16>, tensor<4x8x16xbf16>, tensor<4x16x8xbf16>) -> tensor<?x16xf32>
  %y = moe.combine %ys, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// Shared experts with a sigmoid gate (Qwen2-MoE) join the same op; a static
// token count of 4 is a decode batch: per-token layout (grouped once the
// limit is below it).
// CHECK-LABEL: func.func @shared_gated
// CHECK: moe.fused_route
// CHECK: %[[Y:.*]] = moe.fused_experts {{.*}} {layout = #moe.layout<per_token>}
// CHECK: moe.combine
// CHECK-NEXT: moe.ffn
// CHECK-NEXT: moe.router_linear
// CHECK-NEXT: moe.sigmoid
// CHECK-NEXT: moe.row_scale
// CHECK-NEXT: %[[SUM:.*]] = arith.addf
// CHECK-NEXT: moe.yield %[[SUM]]
// CHECK: return %[[Y]]
// SMALL-LABEL: func.func @shared_gated
// SMALL: moe.fused_experts {{.*}} {layout = #moe.layout<grouped>}
func.func @shared_gated(%x: tensor<4x16xf32>) -> tensor<4x16xf32> {
  %ids, %w, %c, %off, %rows = moe.fused_route %x {num_experts = 4 : i64} : tensor<4x16xf32> -> tensor<4x2xi32>, tensor<4x2xf32>, tensor<4xi32>, tensor<5xi32>, tensor<?xi32> {
  ^bb0(%a: tensor<4x16xf32>):
    %wg = moe.weight ["gate"] from ["m.safetensors"] : tensor<4x16xf32>
    %l = moe.router_linear %a, %wg : (tensor<4x16xf32>, tensor<4x16xf32>) -> tensor<4x4xf32>
    %i, %v = moe.topk %l {k = 2 : i64} : tensor<4x4xf32> -> tensor<4x2xi32>, tensor<4x2xf32>
    moe.yield %i, %v : tensor<4x2xi32>, tensor<4x2xf32>
  }
  %xs = moe.permute %x, %rows, %w : (tensor<4x16xf32>, tensor<?xi32>, tensor<4x2xf32>) -> tensor<?x16xf32>
  %gu = moe.weight ["gu"] from ["m.safetensors"] : tensor<4x16x16xf32>
  %d = moe.weight ["d"] from ["m.safetensors"] : tensor<4x8x16xf32>
  %ys = moe.expert_ffn %xs, %off gate_up(%gu) down(%d) {activation = #moe.activation<silu>, weight_layout = #moe.weight_layout<in_out>} : (tensor<?x16xf32>, tensor<5xi32>, tensor<4x16x16xf32>, tensor<4x8x16xf32>) -> tensor<?x16xf32>
  %y = moe.combine %ys, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<4x2xf32>) -> tensor<4x16xf32>
  %sg = moe.weight ["sg"] from ["m.safetensors"] : tensor<32x16xf32>
  %su = moe.weight ["su"] from ["m.safetensors"] : tensor<32x16xf32>
  %sd = moe.weight ["sd"] from ["m.safetensors"] : tensor<16x32xf32>
  %s = moe.ffn %x gate(%sg) up(%su) down(%sd) {activation = #moe.activation<silu>} : (tensor<4x16xf32>, tensor<32x16xf32>, tensor<32x16xf32>, tensor<16x32xf32>) -> tensor<4x16xf32>
  %gw = moe.weight ["gw"] from ["m.safetensors"] : tensor<1x16xf32>
  %gl = moe.router_linear %x, %gw : (tensor<4x16xf32>, tensor<1x16xf32>) -> tensor<4x1xf32>
  %gs = moe.sigmoid %gl : tensor<4x1xf32>
  %scaled = moe.row_scale %s, %gs : (tensor<4x16xf32>, tensor<4x1xf32>) -> tensor<4x16xf32>
  %out = arith.addf %y, %scaled : tensor<4x16xf32>
  return %out : tensor<4x16xf32>
}

// -----

// Shared experts on other tokens are not folded in: only the routed part is.
// CHECK-LABEL: func.func @shared_other_tokens
// CHECK: %[[F:.*]] = moe.fused_experts
// CHECK: moe.yield
// CHECK: %[[S:.*]] = moe.ffn
// CHECK: arith.addf %[[F]], %[[S]]
func.func @shared_other_tokens(%x: tensor<?x16xf32>, %x2: tensor<?x16xf32>, %ids: tensor<?x2xi32>, %w: tensor<?x2xf32>) -> tensor<?x16xf32> {
  %g = moe.weight ["g"] from ["m.safetensors"] : tensor<4x8x16xf32>
  %d = moe.weight ["d"] from ["m.safetensors"] : tensor<4x16x8xf32>
  %sg = moe.weight ["sg"] from ["m.safetensors"] : tensor<8x16xf32>
  %sd = moe.weight ["sd"] from ["m.safetensors"] : tensor<16x8xf32>
  %c, %off, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
  %xs = moe.permute %x, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  %ys = moe.expert_ffn %xs, %off gate(%g) up(%g) down(%d) {activation = #moe.activation<silu>} : (tensor<?x16xf32>, tensor<5xi32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x16x8xf32>) -> tensor<?x16xf32>
  %y = moe.combine %ys, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  %s = moe.ffn %x2 gate(%sg) up(%sg) down(%sd) {activation = #moe.activation<silu>} : (tensor<?x16xf32>, tensor<8x16xf32>, tensor<8x16xf32>, tensor<16x8xf32>) -> tensor<?x16xf32>
  %out = arith.addf %y, %s : tensor<?x16xf32>
  return %out : tensor<?x16xf32>
}

// -----

// Refused: the expert outputs are also used elsewhere.
func.func @extra_use(%x: tensor<?x16xf32>, %ids: tensor<?x2xi32>, %w: tensor<?x2xf32>) -> (tensor<?x16xf32>, tensor<?x16xf32>) {
  %g = moe.weight ["g"] from ["m.safetensors"] : tensor<4x8x16xf32>
  %d = moe.weight ["d"] from ["m.safetensors"] : tensor<4x16x8xf32>
  %c, %off, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
  %xs = moe.permute %x, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  %ys = moe.expert_ffn %xs, %off gate(%g) up(%g) down(%d) {activation = #moe.activation<silu>} : (tensor<?x16xf32>, tensor<5xi32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x16x8xf32>) -> tensor<?x16xf32>
  // expected-remark @+1 {{moe-fuse-experts: not fused: an intermediate value (gathered rows or expert outputs) has other users}}
  %y = moe.combine %ys, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  return %y, %ys : tensor<?x16xf32>, tensor<?x16xf32>
}

// -----

// Refused: permute and combine walk different rows.
func.func @different_rows(%x: tensor<?x16xf32>, %ids: tensor<?x2xi32>, %ids2: tensor<?x2xi32>, %w: tensor<?x2xf32>) -> tensor<?x16xf32> {
  %g = moe.weight ["g"] from ["m.safetensors"] : tensor<4x8x16xf32>
  %d = moe.weight ["d"] from ["m.safetensors"] : tensor<4x16x8xf32>
  %c, %off, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
  %c2, %off2, %rows2 = moe.dispatch %ids2 {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
  %xs = moe.permute %x, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  %ys = moe.expert_ffn %xs, %off gate(%g) up(%g) down(%d) {activation = #moe.activation<silu>} : (tensor<?x16xf32>, tensor<5xi32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x16x8xf32>) -> tensor<?x16xf32>
  // expected-remark @+1 {{moe-fuse-experts: not fused: moe.permute and moe.combine use different rows}}
  %y = moe.combine %ys, %rows2, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// Refused: the combined rows were not computed by experts.
func.func @no_experts(%x: tensor<?x16xf32>, %ids: tensor<?x2xi32>, %w: tensor<?x2xf32>) -> tensor<?x16xf32> {
  %c, %off, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
  %xs = moe.permute %x, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  // expected-remark @+1 {{moe-fuse-experts: not fused: its input is not computed by moe.expert_ffn}}
  %y = moe.combine %xs, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// Refused: expert weights passed as function arguments cannot move into the
// isolated body.
func.func @weights_as_arguments(%x: tensor<?x16xf32>, %ids: tensor<?x2xi32>, %w: tensor<?x2xf32>,
                                %g: tensor<4x8x16xf32>, %d: tensor<4x16x8xf32>) -> tensor<?x16xf32> {
  %c, %off, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
  %xs = moe.permute %x, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  %ys = moe.expert_ffn %xs, %off gate(%g) up(%g) down(%d) {activation = #moe.activation<silu>} : (tensor<?x16xf32>, tensor<5xi32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x16x8xf32>) -> tensor<?x16xf32>
  // expected-remark @+1 {{moe-fuse-experts: not fused: 'moe.expert_ffn' reads a value that is neither a moe.weight, a constant nor the routing}}
  %y = moe.combine %ys, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// A shared-expert gate with a bias moves into the body whole (the kernels
// apply the bias).
// CHECK-LABEL: func.func @shared_gate_bias
// CHECK: moe.fused_experts
// CHECK: %[[GB:.*]] = moe.weight ["gb"]
// CHECK: moe.router_linear %{{.*}}, %{{.*}} bias %[[GB]]
// CHECK-NEXT: moe.sigmoid
// CHECK-NEXT: moe.row_scale
// CHECK-NEXT: arith.addf
// CHECK-NEXT: moe.yield
// CHECK-NOT: arith.addf
func.func @shared_gate_bias(%x: tensor<?x16xf32>, %ids: tensor<?x2xi32>, %w: tensor<?x2xf32>) -> tensor<?x16xf32> {
  %g = moe.weight ["g"] from ["m.safetensors"] : tensor<4x8x16xf32>
  %d = moe.weight ["d"] from ["m.safetensors"] : tensor<4x16x8xf32>
  %sg = moe.weight ["sg"] from ["m.safetensors"] : tensor<8x16xf32>
  %sd = moe.weight ["sd"] from ["m.safetensors"] : tensor<16x8xf32>
  %gw = moe.weight ["gw"] from ["m.safetensors"] : tensor<1x16xf32>
  %gb = moe.weight ["gb"] from ["m.safetensors"] : tensor<1xf32>
  %c, %off, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
  %xs = moe.permute %x, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  %ys = moe.expert_ffn %xs, %off gate(%g) up(%g) down(%d) {activation = #moe.activation<silu>} : (tensor<?x16xf32>, tensor<5xi32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x16x8xf32>) -> tensor<?x16xf32>
  %y = moe.combine %ys, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  %s = moe.ffn %x gate(%sg) up(%sg) down(%sd) {activation = #moe.activation<silu>} : (tensor<?x16xf32>, tensor<8x16xf32>, tensor<8x16xf32>, tensor<16x8xf32>) -> tensor<?x16xf32>
  %gl = moe.router_linear %x, %gw bias %gb : (tensor<?x16xf32>, tensor<1x16xf32>, tensor<1xf32>) -> tensor<?x1xf32>
  %gs = moe.sigmoid %gl : tensor<?x1xf32>
  %sc = moe.row_scale %s, %gs : (tensor<?x16xf32>, tensor<?x1xf32>) -> tensor<?x16xf32>
  %out = arith.addf %sc, %y : tensor<?x16xf32>
  return %out : tensor<?x16xf32>
}

// -----

// A shared-expert gate the kernels cannot generate (softmax instead of
// sigmoid): the remark names the op, the routed part is fused alone and the
// sum stays outside.
// CHECK-LABEL: func.func @shared_gate_softmax
// CHECK: %[[F:.*]] = moe.fused_experts
// CHECK: moe.combine
// CHECK-NEXT: moe.yield
// CHECK: moe.softmax
// CHECK: arith.addf %[[F]],
func.func @shared_gate_softmax(%x: tensor<?x16xf32>, %ids: tensor<?x2xi32>, %w: tensor<?x2xf32>) -> tensor<?x16xf32> {
  %g = moe.weight ["g"] from ["m.safetensors"] : tensor<4x8x16xf32>
  %d = moe.weight ["d"] from ["m.safetensors"] : tensor<4x16x8xf32>
  %sg = moe.weight ["sg"] from ["m.safetensors"] : tensor<8x16xf32>
  %sd = moe.weight ["sd"] from ["m.safetensors"] : tensor<16x8xf32>
  %gw = moe.weight ["gw"] from ["m.safetensors"] : tensor<1x16xf32>
  %c, %off, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
  %xs = moe.permute %x, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  %ys = moe.expert_ffn %xs, %off gate(%g) up(%g) down(%d) {activation = #moe.activation<silu>} : (tensor<?x16xf32>, tensor<5xi32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x16x8xf32>) -> tensor<?x16xf32>
  // expected-remark @+1 {{moe-fuse-experts: shared experts not fused: 'moe.softmax' computes the shared experts' gate; the kernels generate sigmoid(router_linear(x)) only}}
  %y = moe.combine %ys, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  %s = moe.ffn %x gate(%sg) up(%sg) down(%sd) {activation = #moe.activation<silu>} : (tensor<?x16xf32>, tensor<8x16xf32>, tensor<8x16xf32>, tensor<16x8xf32>) -> tensor<?x16xf32>
  %gl = moe.router_linear %x, %gw : (tensor<?x16xf32>, tensor<1x16xf32>) -> tensor<?x1xf32>
  %gs = moe.softmax %gl : tensor<?x1xf32>
  %sc = moe.row_scale %s, %gs : (tensor<?x16xf32>, tensor<?x1xf32>) -> tensor<?x16xf32>
  %out = arith.addf %y, %sc : tensor<?x16xf32>
  return %out : tensor<?x16xf32>
}

// -----

// Factored expert weights (--moe-compress-experts): each moe.low_rank moves
// into the body with its two factors; the expert op reads the products.
// CHECK-LABEL: func.func @low_rank
// CHECK: moe.fused_experts
// CHECK-DAG: %[[GA:.*]] = moe.weight ["ga"]
// CHECK-DAG: %[[GB:.*]] = moe.weight ["gb"]
// CHECK-DAG: %[[U:.*]] = moe.weight ["u"]
// CHECK-DAG: %[[DA:.*]] = moe.weight ["da"]
// CHECK-DAG: %[[DB:.*]] = moe.weight ["db"]
// CHECK-DAG: %[[G:.*]] = moe.low_rank %[[GA]], %[[GB]]
// CHECK-DAG: %[[D:.*]] = moe.low_rank %[[DA]], %[[DB]]
// CHECK: moe.expert_ffn %{{.*}}, %{{.*}} gate(%[[G]]) up(%[[U]]) down(%[[D]])
// CHECK: moe.yield
// CHECK-NOT: moe.low_rank
// CHECK: return
func.func @low_rank(%x: tensor<?x16xf32>, %ids: tensor<?x2xi32>, %w: tensor<?x2xf32>) -> tensor<?x16xf32> {
  %c, %off, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
  %xs = moe.permute %x, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  %ga = moe.weight ["ga"] from ["m.safetensors"] : tensor<4x8x2xf32>
  %gb = moe.weight ["gb"] from ["m.safetensors"] : tensor<4x2x16xf32>
  %g = moe.low_rank %ga, %gb : tensor<4x8x2xf32>, tensor<4x2x16xf32> -> tensor<4x8x16xf32>
  %u = moe.weight ["u"] from ["m.safetensors"] : tensor<4x8x16xf32>
  %da = moe.weight ["da"] from ["m.safetensors"] : tensor<4x16x2xf32>
  %db = moe.weight ["db"] from ["m.safetensors"] : tensor<4x2x8xf32>
  %d = moe.low_rank %da, %db : tensor<4x16x2xf32>, tensor<4x2x8xf32> -> tensor<4x16x8xf32>
  %ys = moe.expert_ffn %xs, %off gate(%g) up(%u) down(%d) {activation = #moe.activation<silu>} : (tensor<?x16xf32>, tensor<5xi32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x16x8xf32>) -> tensor<?x16xf32>
  %y = moe.combine %ys, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// Non-gated experts (BlockFFN, Switch/T5) and non-gated shared experts fuse
// like gated ones; the keyword and the up bias move into the body.
// CHECK-LABEL: func.func @non_gated
// CHECK: moe.fused_experts
// CHECK: moe.expert_ffn %{{.*}}, %{{.*}} non_gated up(%{{.*}}) down(%{{.*}}) up_bias(%{{.*}}) {activation = #moe.activation<relu>}
// CHECK: moe.combine
// CHECK-NEXT: moe.ffn %{{.*}} non_gated up(%{{.*}}) down(%{{.*}}) {activation = #moe.activation<gelu>}
// CHECK-NEXT: %[[SUM:.*]] = arith.addf
// CHECK-NEXT: moe.yield %[[SUM]]
// CHECK-NOT: moe.expert_ffn
// CHECK: return
func.func @non_gated(%x: tensor<?x16xf32>, %ids: tensor<?x2xi32>, %w: tensor<?x2xf32>) -> tensor<?x16xf32> {
  %c, %off, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
  %xs = moe.permute %x, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  %u = moe.weight ["u"] from ["m.safetensors"] : tensor<4x8x16xf32>
  %ub = moe.weight ["ub"] from ["m.safetensors"] : tensor<4x8xf32>
  %d = moe.weight ["d"] from ["m.safetensors"] : tensor<4x16x8xf32>
  %ys = moe.expert_ffn %xs, %off non_gated up(%u) down(%d) up_bias(%ub) {activation = #moe.activation<relu>} : (tensor<?x16xf32>, tensor<5xi32>, tensor<4x8x16xf32>, tensor<4x16x8xf32>, tensor<4x8xf32>) -> tensor<?x16xf32>
  %y = moe.combine %ys, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  %su = moe.weight ["su"] from ["m.safetensors"] : tensor<8x16xf32>
  %sd = moe.weight ["sd"] from ["m.safetensors"] : tensor<16x8xf32>
  %s = moe.ffn %x non_gated up(%su) down(%sd) {activation = #moe.activation<gelu>} : (tensor<?x16xf32>, tensor<8x16xf32>, tensor<16x8xf32>) -> tensor<?x16xf32>
  %out = arith.addf %y, %s : tensor<?x16xf32>
  return %out : tensor<?x16xf32>
}

// -----

// Factored weights of a non-gated expert: the factored kernels compute a
// gate, so the body is refused by name and nothing is fused.
// CHECK-LABEL: func.func @non_gated_low_rank
// CHECK-NOT: moe.fused_experts
// CHECK: moe.expert_ffn %{{.*}}, %{{.*}} non_gated up(
func.func @non_gated_low_rank(%x: tensor<?x16xf32>, %ids: tensor<?x2xi32>, %w: tensor<?x2xf32>) -> tensor<?x16xf32> {
  %c, %off, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
  %xs = moe.permute %x, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  %ua = moe.weight ["ua"] from ["m.safetensors"] : tensor<4x8x2xf32>
  %ub = moe.weight ["ub"] from ["m.safetensors"] : tensor<4x2x16xf32>
  %u = moe.low_rank %ua, %ub : tensor<4x8x2xf32>, tensor<4x2x16xf32> -> tensor<4x8x16xf32>
  %d = moe.weight ["d"] from ["m.safetensors"] : tensor<4x16x8xf32>
  %ys = moe.expert_ffn %xs, %off non_gated up(%u) down(%d) {activation = #moe.activation<silu>} : (tensor<?x16xf32>, tensor<5xi32>, tensor<4x8x16xf32>, tensor<4x16x8xf32>) -> tensor<?x16xf32>
  // expected-remark @+1 {{moe-fuse-experts: not fused: 'moe.low_rank' factored expert weights (moe.low_rank) of a non_gated moe.expert_ffn are not generated: the factored kernels compute a gate}}
  %y = moe.combine %ys, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// Experts of unequal width fuse; the widths move into the body with the
// expert op.
// CHECK-LABEL: func.func @widths
// CHECK: moe.fused_experts
// CHECK: moe.expert_ffn %{{.*}}, %{{.*}} gate(%{{.*}}) up(%{{.*}}) down(%{{.*}}) {activation = #moe.activation<silu>, widths = array<i64: 2, 8, 4, 6>}
// CHECK-NOT: moe.expert_ffn
// CHECK: return
func.func @widths(%x: tensor<?x16xf32>, %ids: tensor<?x2xi32>, %w: tensor<?x2xf32>) -> tensor<?x16xf32> {
  %c, %off, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
  %xs = moe.permute %x, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  %g = moe.weight ["g"] from ["m.safetensors"] : tensor<4x8x16xf32>
  %u = moe.weight ["u"] from ["m.safetensors"] : tensor<4x8x16xf32>
  %d = moe.weight ["d"] from ["m.safetensors"] : tensor<4x16x8xf32>
  %ys = moe.expert_ffn %xs, %off gate(%g) up(%u) down(%d) {activation = #moe.activation<silu>, widths = array<i64: 2, 8, 4, 6>} : (tensor<?x16xf32>, tensor<5xi32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x16x8xf32>) -> tensor<?x16xf32>
  %y = moe.combine %ys, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// Factored weights of experts of unequal width: the factored kernels have
// one width, so the body is refused by name and nothing is fused.
// CHECK-LABEL: func.func @widths_low_rank
// CHECK-NOT: moe.fused_experts
// CHECK: moe.expert_ffn
func.func @widths_low_rank(%x: tensor<?x16xf32>, %ids: tensor<?x2xi32>, %w: tensor<?x2xf32>) -> tensor<?x16xf32> {
  %c, %off, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
  %xs = moe.permute %x, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  %ga = moe.weight ["ga"] from ["m.safetensors"] : tensor<4x8x2xf32>
  %gb = moe.weight ["gb"] from ["m.safetensors"] : tensor<4x2x16xf32>
  %g = moe.low_rank %ga, %gb : tensor<4x8x2xf32>, tensor<4x2x16xf32> -> tensor<4x8x16xf32>
  %u = moe.weight ["u"] from ["m.safetensors"] : tensor<4x8x16xf32>
  %d = moe.weight ["d"] from ["m.safetensors"] : tensor<4x16x8xf32>
  %ys = moe.expert_ffn %xs, %off gate(%g) up(%u) down(%d) {activation = #moe.activation<silu>, widths = array<i64: 2, 8, 4, 6>} : (tensor<?x16xf32>, tensor<5xi32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x16x8xf32>) -> tensor<?x16xf32>
  // expected-remark @+1 {{moe-fuse-experts: not fused: 'moe.low_rank' factored expert weights (moe.low_rank) of a moe.expert_ffn with 'widths' are not generated: the factored kernels assume one intermediate size}}
  %y = moe.combine %ys, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}
