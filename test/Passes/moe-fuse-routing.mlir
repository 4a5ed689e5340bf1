// RUN: moe-opt %s --moe-fuse-routing --split-input-file --verify-diagnostics | FileCheck %s

// Softmax, top-k, renormalise (Mixtral): the whole chain and its weight move
// into the body; dispatch planning is done by the fused op.
// CHECK-LABEL: func.func @softmax_topk
// CHECK-SAME: (%[[X:.*]]: tensor<?x16xf32>)
// CHECK: %[[IDS:.*]], %[[W:.*]], %{{.*}}, %[[OFF:.*]], %[[ROWS:.*]] = moe.fused_route %[[X]] {num_experts = 4 : i64} : tensor<?x16xf32> -> tensor<?x2xi32>, tensor<?x2xf32>, tensor<4xi32>, tensor<5xi32>, tensor<?xi32> {
// CHECK-NEXT: ^bb0(%[[A:.*]]: tensor<?x16xf32>):
// CHECK-NEXT: %[[WG:.*]] = moe.weight ["gate"]
// CHECK-NEXT: %[[L:.*]] = moe.router_linear %[[A]], %[[WG]]
// CHECK-NEXT: %[[P:.*]] = moe.softmax %[[L]]
// CHECK-NEXT: %[[I:.*]], %[[V:.*]] = moe.topk %[[P]] {k = 2 : i64}
// CHECK-NEXT: %[[N:.*]] = moe.normalize %[[V]]
// CHECK-NEXT: moe.yield %[[I]], %[[N]] : tensor<?x2xi32>, tensor<?x2xf32>
// CHECK-NEXT: }
// CHECK-NOT: moe.dispatch
// CHECK-NOT: moe.router_linear
// CHECK: moe.permute %[[X]], %[[ROWS]], %[[W]]
// CHECK: moe.combine %{{.*}}, %[[ROWS]], %[[W]]
func.func @softmax_topk(%x: tensor<?x16xf32>) -> tensor<?x16xf32> {
  %wg = moe.weight ["gate"] from ["m.safetensors"] : tensor<4x16xf32>
  %l = moe.router_linear %x, %wg : (tensor<?x16xf32>, tensor<4x16xf32>) -> tensor<?x4xf32>
  %p = moe.softmax %l : tensor<?x4xf32>
  %ids, %v = moe.topk %p {k = 2 : i64} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  %w = moe.normalize %v : tensor<?x2xf32>
  %c, %off, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
  %xs = moe.permute %x, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  %y = moe.combine %xs, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// DeepSeek-V3: selection on the biased score, weights from the unbiased one,
// group limit, scaling: the composition moves as it is.
// CHECK-LABEL: func.func @deepseek_v3
// CHECK: moe.fused_route %{{.*}} {num_experts = 8 : i64}
// CHECK: %[[S:.*]] = moe.sigmoid
// CHECK-NEXT: moe.weight ["bias"]
// CHECK-NEXT: %[[C:.*]] = moe.bias_add %[[S]]
// CHECK-NEXT: %[[G:.*]] = moe.group_limit %[[C]]
// CHECK-NEXT: %[[I:.*]], %{{.*}} = moe.topk %[[G]]
// CHECK-NEXT: moe.gather_scores %[[S]], %[[I]]
// CHECK-NEXT: moe.normalize
// CHECK-NEXT: %[[W:.*]] = moe.scale
// CHECK-NEXT: moe.yield %[[I]], %[[W]]
// CHECK-NOT: moe.dispatch
func.func @deepseek_v3(%x: tensor<?x16xf32>) -> tensor<?x16xf32> {
  %wg = moe.weight ["gate"] from ["m.safetensors"] : tensor<8x16xf32>
  %l = moe.router_linear %x, %wg : (tensor<?x16xf32>, tensor<8x16xf32>) -> tensor<?x8xf32>
  %s = moe.sigmoid %l : tensor<?x8xf32>
  %b = moe.weight ["bias"] from ["m.safetensors"] : tensor<8xf32>
  %c = moe.bias_add %s, %b : tensor<?x8xf32>, tensor<8xf32>
  %g = moe.group_limit %c {group_score = #moe.group_score<top2_sum>, keep_groups = 2 : i64, num_groups = 4 : i64} : tensor<?x8xf32>
  %ids, %v = moe.topk %g {k = 2 : i64} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  %gw = moe.gather_scores %s, %ids : tensor<?x8xf32>, tensor<?x2xi32> -> tensor<?x2xf32>
  %n = moe.normalize %gw {epsilon = 1.0e-20 : f32} : tensor<?x2xf32>
  %w = moe.scale %n {factor = 2.5 : f32} : tensor<?x2xf32>
  %cn, %off, %rows = moe.dispatch %ids {num_experts = 8 : i64} : tensor<?x2xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<?xi32>
  %xs = moe.permute %x, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  %y = moe.combine %xs, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// Seed-method routers fuse the same way: null experts, top-p, threshold,
// expert choice.
// CHECK-LABEL: func.func @seed_routers
// CHECK: moe.fused_route {{.*}}num_experts = 4
// CHECK: moe.drop_null_experts
// CHECK: moe.fused_route {{.*}}num_experts = 4
// CHECK: moe.top_p
// CHECK: moe.fused_route {{.*}}num_experts = 4
// CHECK: moe.threshold
// CHECK: moe.fused_route {{.*}}num_experts = 4
// CHECK: moe.expert_choice
// CHECK-NOT: moe.dispatch
func.func @seed_routers(%x: tensor<?x16xf32>) -> (tensor<?x16xf32>, tensor<?x16xf32>, tensor<?x16xf32>, tensor<?x16xf32>) {
  %w6 = moe.weight ["g6"] from ["m.safetensors"] : tensor<6x16xf32>
  %w4 = moe.weight ["g4"] from ["m.safetensors"] : tensor<4x16xf32>
  %l6 = moe.router_linear %x, %w6 : (tensor<?x16xf32>, tensor<6x16xf32>) -> tensor<?x6xf32>
  %p6 = moe.softmax %l6 : tensor<?x6xf32>
  %i0, %v0 = moe.topk %p6 {k = 2 : i64} : tensor<?x6xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  %n0 = moe.normalize %v0 : tensor<?x2xf32>
  %ri, %rw = moe.drop_null_experts %i0, %n0 {num_experts = 4 : i64} : tensor<?x2xi32>, tensor<?x2xf32>
  %c0, %o0, %r0 = moe.dispatch %ri {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
  %y0 = moe.combine %x, %r0, %rw : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>

  %l4 = moe.router_linear %x, %w4 : (tensor<?x16xf32>, tensor<4x16xf32>) -> tensor<?x4xf32>
  %p4 = moe.softmax %l4 : tensor<?x4xf32>
  %i1, %v1 = moe.top_p %p4 {p = 0.7 : f32, max_k = 3 : i64} : tensor<?x4xf32> -> tensor<?x3xi32>, tensor<?x3xf32>
  %c1, %o1, %r1 = moe.dispatch %i1 {num_experts = 4 : i64} : tensor<?x3xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
  %y1 = moe.combine %x, %r1, %v1 : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x3xf32>) -> tensor<?x16xf32>

  %rl = moe.relu %l4 : tensor<?x4xf32>
  %i2, %v2 = moe.threshold %rl {max_k = 4 : i64} : tensor<?x4xf32> -> tensor<?x4xi32>, tensor<?x4xf32>
  %c2, %o2, %r2 = moe.dispatch %i2 {num_experts = 4 : i64} : tensor<?x4xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
  %y2 = moe.combine %x, %r2, %v2 : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x4xf32>) -> tensor<?x16xf32>

  %i3, %v3 = moe.expert_choice %p4 {capacity = 3 : i64} : tensor<?x4xf32> -> tensor<?x4xi32>, tensor<?x4xf32>
  %c3, %o3, %r3 = moe.dispatch %i3 {num_experts = 4 : i64} : tensor<?x4xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
  %y3 = moe.combine %x, %r3, %v3 : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x4xf32>) -> tensor<?x16xf32>
  return %y0, %y1, %y2, %y3 : tensor<?x16xf32>, tensor<?x16xf32>, tensor<?x16xf32>, tensor<?x16xf32>
}

// -----

// The router of a LoRA mixture is fused too; the mixture reads its routing.
// CHECK-LABEL: func.func @lora_router
// CHECK: %[[IDS:.*]], %[[W:.*]], %{{.*}}, %{{.*}}, %{{.*}} = moe.fused_route %{{.*}} {num_experts = 3 : i64}
// CHECK: moe.lora_mixture {{.*}} routing(%[[IDS]], %[[W]])
func.func @lora_router(%x: tensor<?x16xf32>, %base: tensor<8x16xf32>,
                       %a: tensor<3x4x16xf32>, %b: tensor<3x8x4xf32>) -> tensor<?x8xf32> {
  %wr = arith.constant dense<0.5> : tensor<3x16xf32>
  %l = moe.router_linear %x, %wr : (tensor<?x16xf32>, tensor<3x16xf32>) -> tensor<?x3xf32>
  %p = moe.softmax %l : tensor<?x3xf32>
  %ids, %v = moe.topk %p {k = 2 : i64} : tensor<?x3xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  %y = moe.lora_mixture %x base(%base) lora(%a, %b) routing(%ids, %v) {scales = [1.0 : f32, 1.0 : f32, 1.0 : f32]} : (tensor<?x16xf32>, tensor<8x16xf32>, tensor<3x4x16xf32>, tensor<3x8x4xf32>, tensor<?x2xi32>, tensor<?x2xf32>) -> tensor<?x8xf32>
  return %y : tensor<?x8xf32>
}

// -----

// Refused: the router reads two tensors that are neither weights nor
// constants (the tokens and a bias passed in at run time).
func.func @two_inputs(%x: tensor<?x16xf32>, %bias: tensor<4xf32>) -> tensor<?x16xf32> {
  %wg = moe.weight ["gate"] from ["m.safetensors"] : tensor<4x16xf32>
  %l = moe.router_linear %x, %wg : (tensor<?x16xf32>, tensor<4x16xf32>) -> tensor<?x4xf32>
  %sum = moe.bias_add %l, %bias : tensor<?x4xf32>, tensor<4xf32>
  %ids, %v = moe.topk %sum {k = 2 : i64} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  // expected-remark @+1 {{moe-fuse-routing: not fused: the router reads more than one tensor that is neither a weight nor a constant}}
  %c, %off, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
  %y = moe.combine %x, %rows, %v : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// Refused: an arith op between router ops (a user scaling the logits) is
// named, with the router op it reads; the IR is left as it was.
// CHECK-LABEL: func.func @arith_in_router
// CHECK: arith.mulf
// CHECK: moe.dispatch
func.func @arith_in_router(%x: tensor<?x16xf32>) -> tensor<?x16xf32> {
  %wg = moe.weight ["gate"] from ["m.safetensors"] : tensor<4x16xf32>
  %l = moe.router_linear %x, %wg : (tensor<?x16xf32>, tensor<4x16xf32>) -> tensor<?x4xf32>
  // expected-note @+1 {{the op is here}}
  %s = arith.mulf %l, %l : tensor<?x4xf32>
  %p = moe.softmax %s : tensor<?x4xf32>
  %ids, %v = moe.topk %p {k = 2 : i64} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  // expected-remark @+1 {{moe-fuse-routing: not fused: 'arith.mulf' is part of the router (it reads the result of 'moe.router_linear') but is not a router op: only router ops, moe.weight and constants fuse (a constant factor is moe.scale)}}
  %c, %off, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
  %y = moe.combine %x, %rows, %v : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// Refused: permute and combine disagree on the routing weights.
func.func @two_weights(%x: tensor<?x16xf32>) -> tensor<?x16xf32> {
  %wg = moe.weight ["gate"] from ["m.safetensors"] : tensor<4x16xf32>
  %l = moe.router_linear %x, %wg : (tensor<?x16xf32>, tensor<4x16xf32>) -> tensor<?x4xf32>
  %ids, %v = moe.topk %l {k = 2 : i64} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  %n = moe.normalize %v : tensor<?x2xf32>
  // expected-remark @+1 {{moe-fuse-routing: not fused: moe.permute and moe.combine use different routing weights}}
  %c, %off, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
  %xs = moe.permute %x, %rows, %v : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  %y = moe.combine %xs, %rows, %n : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// A router that starts from scores computed elsewhere (not from router ops:
// an op between router ops is refused, @arith_in_router) fuses from there:
// the fused op reads that one tensor.
// CHECK-LABEL: func.func @from_scores
// CHECK: %[[S:.*]] = arith.addf
// CHECK: moe.fused_route %[[S]] {num_experts = 4 : i64} : tensor<?x4xf32>
func.func @from_scores(%x: tensor<?x16xf32>, %extra: tensor<?x4xf32>) -> tensor<?x16xf32> {
  %sum = arith.addf %extra, %extra : tensor<?x4xf32>
  %ids, %v = moe.topk %sum {k = 2 : i64} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  %c, %off, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
  %y = moe.combine %x, %rows, %v : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// Refused: nothing applies the routing weights.
func.func @no_weights(%ids: tensor<?x2xi32>) -> tensor<4xi32> {
  // expected-remark @+1 {{moe-fuse-routing: not fused: its rows feed no moe.permute or moe.combine, so the routing weights are unknown}}
  %c, %off, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
  return %c : tensor<4xi32>
}

// -----

// Refused by the matcher the verifier and the emitter share: a second
// cross-token selection; the remark names the op and the IR is left alone.
// CHECK-LABEL: func.func @two_expert_choices
// CHECK-NOT: moe.fused_route
// CHECK: moe.dispatch
func.func @two_expert_choices(%x: tensor<?x16xf32>) -> tensor<?x16xf32> {
  %wg = moe.weight ["gate"] from ["m.safetensors"] : tensor<4x16xf32>
  %l = moe.router_linear %x, %wg : (tensor<?x16xf32>, tensor<4x16xf32>) -> tensor<?x4xf32>
  %i, %v = moe.expert_choice %l {capacity = 2 : i64} : tensor<?x4xf32> -> tensor<?x4xi32>, tensor<?x4xf32>
  // expected-note @+1 {{the op is here}}
  %i2, %v2 = moe.expert_choice %v {capacity = 2 : i64} : tensor<?x4xf32> -> tensor<?x4xi32>, tensor<?x4xf32>
  // expected-remark @+1 {{moe-fuse-routing: not fused: 'moe.expert_choice' is a second cross-token selection in one router (the routing kernel ranks the batch once, after 'moe.expert_choice')}}
  %c, %off, %rows = moe.dispatch %i2 {num_experts = 4 : i64} : tensor<?x4xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
  %y = moe.combine %x, %rows, %v2 : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x4xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// Router ops after moe.expert_choice fuse (the kernel runs them per token
// once the batch is ranked).
// CHECK-LABEL: func.func @normalize_after_expert_choice
// CHECK: moe.fused_route
// CHECK: moe.expert_choice
// CHECK: moe.normalize
// CHECK: moe.yield
func.func @normalize_after_expert_choice(%x: tensor<?x16xf32>) -> tensor<?x16xf32> {
  %wg = moe.weight ["gate"] from ["m.safetensors"] : tensor<4x16xf32>
  %l = moe.router_linear %x, %wg : (tensor<?x16xf32>, tensor<4x16xf32>) -> tensor<?x4xf32>
  %p = moe.softmax %l : tensor<?x4xf32>
  %i, %v = moe.expert_choice %p {capacity = 2 : i64} : tensor<?x4xf32> -> tensor<?x4xi32>, tensor<?x4xf32>
  %w = moe.normalize %v : tensor<?x4xf32>
  %c, %off, %rows = moe.dispatch %i {num_experts = 4 : i64} : tensor<?x4xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
  %y = moe.combine %x, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x4xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// Issue 12: the remap of merged experts is a router op: it moves into the
// body and the fused op plans the dispatch over the merged experts.
// CHECK-LABEL: func.func @remap_experts
// CHECK: %[[IDS:.*]], %[[W:.*]], %{{.*}}, %{{.*}}, %[[ROWS:.*]] = moe.fused_route %{{.*}} {num_experts = 2 : i64}
// CHECK: %[[I:.*]], %[[V:.*]] = moe.topk
// CHECK-NEXT: %[[N:.*]] = moe.normalize %[[V]]
// CHECK-NEXT: %[[MI:.*]], %[[MW:.*]] = moe.remap_experts %[[I]], %[[N]] mapping = [0, 1, 1, 0]
// CHECK-NEXT: moe.yield %[[MI]], %[[MW]]
// CHECK-NOT: moe.remap_experts
// CHECK: moe.permute %{{.*}}, %[[ROWS]], %[[W]]
func.func @remap_experts(%x: tensor<?x16xf32>) -> tensor<?x16xf32> {
  %wg = moe.weight ["gate"] from ["m.safetensors"] : tensor<4x16xf32>
  %l = moe.router_linear %x, %wg : (tensor<?x16xf32>, tensor<4x16xf32>) -> tensor<?x4xf32>
  %p = moe.softmax %l : tensor<?x4xf32>
  %ids, %v = moe.topk %p {k = 2 : i64} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  %w = moe.normalize %v : tensor<?x2xf32>
  %mi, %mw = moe.remap_experts %ids, %w mapping = [0, 1, 1, 0] : tensor<?x2xi32>, tensor<?x2xf32>
  %c, %off, %rows = moe.dispatch %mi {num_experts = 2 : i64} : tensor<?x2xi32> -> tensor<2xi32>, tensor<3xi32>, tensor<?xi32>
  %xs = moe.permute %x, %rows, %mw : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  %y = moe.combine %xs, %rows, %mw : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// A given routing (an engine's dispatch of physical slots, one rank's
// share): the remap of the function's ids and weights arguments moves into
// the body, which takes them as block arguments; the combine reads the
// fused op's weights, not the argument.
// CHECK-LABEL: func.func @given_remap
// CHECK-SAME: (%[[X:.*]]: tensor<?x16xf32>, %[[GI:.*]]: tensor<?x2xi32>, %[[GW:.*]]: tensor<?x2xf32>)
// CHECK: %[[IDS:.*]], %[[W:.*]], %{{.*}}, %[[OFF:.*]], %[[ROWS:.*]] = moe.fused_route %[[X]] given(%[[GI]], %[[GW]] : tensor<?x2xi32>, tensor<?x2xf32>) {num_experts = 2 : i64}
// CHECK-NEXT: ^bb0(%{{.*}}: tensor<?x16xf32>, %[[I:.*]]: tensor<?x2xi32>, %[[G:.*]]: tensor<?x2xf32>):
// CHECK-NEXT: %[[RI:.*]], %[[RW:.*]] = moe.remap_experts %[[I]], %[[G]] mapping = [-1, 0, 1, -1]
// CHECK-NEXT: moe.yield %[[RI]], %[[RW]]
// CHECK-NOT: moe.dispatch
// CHECK-NOT: moe.remap_experts
// CHECK: moe.permute %[[X]], %[[ROWS]], %[[W]]
// CHECK: moe.combine %{{.*}}, %[[ROWS]], %[[W]]
func.func @given_remap(%x: tensor<?x16xf32>, %gi: tensor<?x2xi32>, %gw: tensor<?x2xf32>) -> tensor<?x16xf32> {
  %ids, %w = moe.remap_experts %gi, %gw mapping = [-1, 0, 1, -1] : tensor<?x2xi32>, tensor<?x2xf32>
  %c, %off, %rows = moe.dispatch %ids {num_experts = 2 : i64} : tensor<?x2xi32> -> tensor<2xi32>, tensor<3xi32>, tensor<?xi32>
  %xs = moe.permute %x, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  %y = moe.combine %xs, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// The arguments dispatched directly: no router to fuse; the dispatch of
// the given ids stays (moe.fused_experts reads it and the arguments).
// CHECK-LABEL: func.func @given_direct
// CHECK-SAME: (%[[X:.*]]: tensor<?x16xf32>, %[[GI:.*]]: tensor<?x2xi32>, %[[GW:.*]]: tensor<?x2xf32>)
// CHECK-NOT: moe.fused_route
// CHECK: %{{.*}}, %{{.*}}, %[[ROWS:.*]] = moe.dispatch %[[GI]] {num_experts = 4 : i64}
// CHECK-NOT: moe.fused_route
// CHECK: moe.combine %{{.*}}, %[[ROWS]], %[[GW]]
func.func @given_direct(%x: tensor<?x16xf32>, %gi: tensor<?x2xi32>, %gw: tensor<?x2xf32>) -> tensor<?x16xf32> {
  %c, %off, %rows = moe.dispatch %gi {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
  %xs = moe.permute %x, %rows, %gw : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  %y = moe.combine %xs, %rows, %gw : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// The given ids with weights computed from the tokens: not one of the
// given-routing forms (a router reads one token tensor).
func.func @given_mixed(%x: tensor<?x16xf32>, %gi: tensor<?x2xi32>, %gw: tensor<?x2xf32>) -> tensor<?x16xf32> {
  %e = arith.negf %x : tensor<?x16xf32>
  %w = moe.gather_scores %e, %gi : tensor<?x16xf32>, tensor<?x2xi32> -> tensor<?x2xf32>
  // expected-remark @+1 {{moe-fuse-routing: not fused: the router reads the given routing (the function's ids and weights arguments) and a value computed in the function}}
  %c, %off, %rows = moe.dispatch %gi {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
  %xs = moe.permute %x, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  %y = moe.combine %xs, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// A router-only function (moe.role = "router") has no dispatch: the routing
// it returns is fused (over the selection's experts) and returned.
// CHECK-LABEL: func.func @router_only
// CHECK: %[[IDS:.*]], %[[W:.*]], %{{.*}}, %{{.*}}, %{{.*}} = moe.fused_route %{{.*}} {num_experts = 4 : i64}
// CHECK: moe.topk
// CHECK: moe.normalize
// CHECK: return %[[IDS]], %[[W]]
func.func @router_only(%x: tensor<?x16xf32>) -> (tensor<?x2xi32>, tensor<?x2xf32>) attributes {moe.layer = 0 : i64, moe.role = "router"} {
  %wg = moe.weight ["gate"] from ["m.safetensors"] : tensor<4x16xf32>
  %l = moe.router_linear %x, %wg : (tensor<?x16xf32>, tensor<4x16xf32>) -> tensor<?x4xf32>
  %p = moe.softmax %l : tensor<?x4xf32>
  %ids, %v = moe.topk %p {k = 2 : i64} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  %w = moe.normalize %v : tensor<?x2xf32>
  return %ids, %w : tensor<?x2xi32>, tensor<?x2xf32>
}

// -----

// DynMoLE: softmax, top_p (min_k, `within`) and the entropy fallback all move
// into one fused router (the entropy test runs in the routing kernel); the
// fused op's routing has one slot per expert, like the fallback's.
// CHECK-LABEL: func.func @dynmole
// CHECK: %[[IDS:.*]], %[[W:.*]], %{{.*}}, %{{.*}}, %{{.*}} = moe.fused_route %{{.*}} {num_experts = 4 : i64} : tensor<?x16xf32> -> tensor<?x4xi32>, tensor<?x4xf32>
// CHECK: %[[P:.*]] = moe.softmax
// CHECK-NEXT: %[[I:.*]], %[[V:.*]] = moe.top_p %[[P]] {max_k = 3 : i64, min_k = 2 : i64, p = 5.000000e-01 : f32, prefix = #moe.top_p_prefix<within>}
// CHECK-NEXT: %[[FI:.*]], %[[FW:.*]] = moe.entropy_fallback %[[P]], %[[I]], %[[V]] {normalized, q = 1.500000e+00 : f32, threshold = 5.000000e-01 : f32}
// CHECK-NEXT: moe.yield %[[FI]], %[[FW]]
// CHECK-NOT: moe.dispatch
// CHECK-NOT: moe.entropy_fallback
// CHECK: moe.combine %{{.*}}, %{{.*}}, %[[W]]
func.func @dynmole(%x: tensor<?x16xf32>) -> tensor<?x16xf32> {
  %wg = moe.weight ["gate"] from ["m.safetensors"] : tensor<4x16xf32>
  %l = moe.router_linear %x, %wg : (tensor<?x16xf32>, tensor<4x16xf32>) -> tensor<?x4xf32>
  %p = moe.softmax %l : tensor<?x4xf32>
  %i, %v = moe.top_p %p {p = 0.5 : f32, max_k = 3 : i64, min_k = 2 : i64, prefix = #moe.top_p_prefix<within>} : tensor<?x4xf32> -> tensor<?x3xi32>, tensor<?x3xf32>
  %ids, %w = moe.entropy_fallback %p, %i, %v {q = 1.5 : f32, threshold = 0.5 : f32, normalized} : tensor<?x4xf32>, tensor<?x3xi32>, tensor<?x3xf32> -> tensor<?x4xi32>, tensor<?x4xf32>
  %c, %o, %r = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x4xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
  %y = moe.combine %x, %r, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x4xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// Capacity limits (GShard top-2): the cross-token moe.capacity and the
// normalisation before it move into the fused router, whose kernel enforces
// the capacity in its last block before the dispatch plan.
// CHECK-LABEL: func.func @capacity
// CHECK: %[[IDS:.*]], %[[W:.*]], %{{.*}}, %{{.*}}, %{{.*}} = moe.fused_route %{{.*}} {num_experts = 4 : i64} : tensor<?x16xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
// CHECK: %[[I:.*]], %[[V:.*]] = moe.topk
// CHECK-NEXT: %[[N:.*]] = moe.normalize %[[V]]
// CHECK-NEXT: %[[CI:.*]], %[[CW:.*]] = moe.capacity %[[I]], %[[N]] {capacity_factor = 1.250000e+00 : f32, num_experts = 4 : i64}
// CHECK-NEXT: moe.yield %[[CI]], %[[CW]]
// CHECK-NOT: moe.dispatch
// CHECK-NOT: moe.capacity
// CHECK: moe.combine %{{.*}}, %{{.*}}, %[[W]]
func.func @capacity(%x: tensor<?x16xf32>) -> tensor<?x16xf32> {
  %wg = moe.weight ["gate"] from ["m.safetensors"] : tensor<4x16xf32>
  %l = moe.router_linear %x, %wg : (tensor<?x16xf32>, tensor<4x16xf32>) -> tensor<?x4xf32>
  %p = moe.softmax %l : tensor<?x4xf32>
  %i, %v = moe.topk %p {k = 2 : i64} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  %n = moe.normalize %v : tensor<?x2xf32>
  %ids, %w = moe.capacity %i, %n {capacity_factor = 1.25 : f32, num_experts = 4 : i64} : tensor<?x2xi32>, tensor<?x2xf32>
  %c, %o, %r = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
  %y = moe.combine %x, %r, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// Balanced assignment (S-BASE): the cross-token moe.sinkhorn, the top-k on
// its result and the weights gathered from the softmax all move into the
// fused router.
// CHECK-LABEL: func.func @sinkhorn
// CHECK: %[[IDS:.*]], %[[W:.*]], %{{.*}}, %{{.*}}, %{{.*}} = moe.fused_route %{{.*}} {num_experts = 4 : i64} : tensor<?x16xf32> -> tensor<?x1xi32>, tensor<?x1xf32>
// CHECK: %[[L:.*]] = moe.router_linear
// CHECK-NEXT: %[[P:.*]] = moe.softmax %[[L]]
// CHECK-NEXT: %[[B:.*]] = moe.sinkhorn %[[L]] {epsilon = 1.000000e+00 : f32, iterations = 3 : i64}
// CHECK-NEXT: %[[I:.*]], %{{.*}} = moe.topk %[[B]] {k = 1 : i64}
// CHECK-NEXT: %[[G:.*]] = moe.gather_scores %[[P]], %[[I]]
// CHECK-NEXT: moe.yield %[[I]], %[[G]]
// CHECK-NOT: moe.dispatch
// CHECK-NOT: moe.sinkhorn
// CHECK: moe.combine %{{.*}}, %{{.*}}, %[[W]]
func.func @sinkhorn(%x: tensor<?x16xf32>) -> tensor<?x16xf32> {
  %wg = moe.weight ["gate"] from ["m.safetensors"] : tensor<4x16xf32>
  %l = moe.router_linear %x, %wg : (tensor<?x16xf32>, tensor<4x16xf32>) -> tensor<?x4xf32>
  %p = moe.softmax %l : tensor<?x4xf32>
  %b = moe.sinkhorn %l {iterations = 3 : i64, epsilon = 1.0 : f32} : tensor<?x4xf32>
  %ids, %v = moe.topk %b {k = 1 : i64} : tensor<?x4xf32> -> tensor<?x1xi32>, tensor<?x1xf32>
  %w = moe.gather_scores %p, %ids : tensor<?x4xf32>, tensor<?x1xi32> -> tensor<?x1xf32>
  %c, %o, %r = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x1xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
  %y = moe.combine %x, %r, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x1xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// Graph of Tokens: moe.similarity_mix reads the routed tokens (the fused
// op's input, the body argument) and the softmax; both move into the body.
// CHECK-LABEL: func.func @similarity_mix
// CHECK: moe.fused_route %{{.*}} {num_experts = 4 : i64} : tensor<?x16xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
// CHECK-NEXT: ^bb0(%[[T:.*]]: tensor<?x16xf32>):
// CHECK: %[[L:.*]] = moe.router_linear %[[T]]
// CHECK-NEXT: %[[P:.*]] = moe.softmax %[[L]]
// CHECK-NEXT: %[[M:.*]] = moe.similarity_mix %[[T]], %[[P]] {causal, temperature = 4.000000e+00 : f32}
// CHECK-NEXT: moe.topk %[[M]] {k = 2 : i64}
// CHECK-NOT: moe.dispatch
// CHECK-NOT: moe.similarity_mix
func.func @similarity_mix(%x: tensor<?x16xf32>) -> tensor<?x16xf32> {
  %wg = moe.weight ["gate"] from ["m.safetensors"] : tensor<4x16xf32>
  %l = moe.router_linear %x, %wg : (tensor<?x16xf32>, tensor<4x16xf32>) -> tensor<?x4xf32>
  %p = moe.softmax %l : tensor<?x4xf32>
  %m = moe.similarity_mix %x, %p {temperature = 4.0 : f32, causal} : tensor<?x16xf32>, tensor<?x4xf32>
  %ids, %w = moe.topk %m {k = 2 : i64} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  %c, %o, %r = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
  %y = moe.combine %x, %r, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// GLIDER: the sequence scores and map (extra layer inputs) become the fused
// op's extra operands and the body's last arguments; the cosine projection
// and the sequence-score add move into the body.
// CHECK-LABEL: func.func @sequence_scores
// CHECK-SAME: (%[[X:.*]]: tensor<?x16xf32>, %[[G:.*]]: tensor<?x4xf32> {moe.input = "seq_scores"}, %[[M:.*]]: tensor<?xi32> {moe.input = "seq_map"})
// CHECK: moe.fused_route %[[X]] inputs(%[[G]], %[[M]] : tensor<?x4xf32>, tensor<?xi32>) {num_experts = 4 : i64}
// CHECK-NEXT: ^bb0(%[[T:.*]]: tensor<?x16xf32>, %[[BG:.*]]: tensor<?x4xf32>, %[[BM:.*]]: tensor<?xi32>):
// CHECK: %[[L:.*]] = moe.router_linear %[[T]], %{{.*}} {normalize = #moe.router_normalize<both>, scale = 4.000000e+00 : f32}
// CHECK-NEXT: %[[S:.*]] = moe.add_sequence_scores %[[L]], %[[BG]], %[[BM]]
// CHECK-NEXT: moe.softmax %[[S]]
// CHECK-NOT: moe.dispatch
func.func @sequence_scores(%x: tensor<?x16xf32>, %g: tensor<?x4xf32> {moe.input = "seq_scores"}, %m: tensor<?xi32> {moe.input = "seq_map"}) -> tensor<?x16xf32> {
  %wr = arith.constant dense<0.5> : tensor<4x16xf32>
  %l = moe.router_linear %x, %wr {normalize = #moe.router_normalize<both>, scale = 4.0 : f32} : (tensor<?x16xf32>, tensor<4x16xf32>) -> tensor<?x4xf32>
  %s = moe.add_sequence_scores %l, %g, %m : tensor<?x4xf32>, tensor<?x4xf32>, tensor<?xi32>
  %p = moe.softmax %s : tensor<?x4xf32>
  %ids, %v = moe.topk %p {k = 2 : i64} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  %c, %o, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
  %xs = moe.permute %x, %rows, %v : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  %wg = arith.constant dense<0.1> : tensor<4x8x16xf32>
  %wd = arith.constant dense<0.1> : tensor<4x16x8xf32>
  %ys = moe.expert_ffn %xs, %o gate(%wg) up(%wg) down(%wd) {activation = #moe.activation<silu>} : (tensor<?x16xf32>, tensor<5xi32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x16x8xf32>) -> tensor<?x16xf32>
  %y = moe.combine %ys, %rows, %v : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}
