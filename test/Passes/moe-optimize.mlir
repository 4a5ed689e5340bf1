// The pipeline leaves two fused ops per layer: route and experts.
// RUN: moe-opt %s --moe-optimize | FileCheck %s
// RUN: moe-opt %s --moe-optimize=stats=true -o /dev/null 2>&1 | FileCheck %s --check-prefix=STATS

// STATS: moe-stats before: @layer_0 (layer 0): 9 ops, 9 top-level ops: router_linear, softmax, topk, normalize, scale, dispatch, permute, expert_ffn, combine; kernel launches: none (not every op is fused)
// STATS: moe-stats after: @layer_0 (layer 0): 7 ops, 2 top-level ops: fused_route, fused_experts; kernel launches: 3 at decode (T = 1), 5 at prefill (T = 4096)

// Canonicalisation runs first: the scale by 1 disappears from the router.
// CHECK-LABEL: func.func @layer_0
// CHECK-SAME: (%[[X:.*]]: tensor<?x16xf32>)
// CHECK: %[[IDS:.*]], %[[W:.*]], %{{.*}}, %[[OFF:.*]], %[[ROWS:.*]] = moe.fused_route %[[X]]
// CHECK-NOT: moe.scale
// CHECK: moe.yield
// CHECK: %[[Y:.*]] = moe.fused_experts %[[X]], %[[IDS]], %[[W]], %[[ROWS]], %[[OFF]] {layout = #moe.layout<runtime>}
// CHECK: moe.yield
// CHECK-NEXT: }
// CHECK-NEXT: return %[[Y]]
func.func @layer_0(%x: tensor<?x16xf32>) -> tensor<?x16xf32> attributes {moe.layer = 0 : i64} {
  %wg = moe.weight ["gate"] from ["m.safetensors"] : tensor<4x16xf32>
  %l = moe.router_linear %x, %wg : (tensor<?x16xf32>, tensor<4x16xf32>) -> tensor<?x4xf32>
  %p = moe.softmax %l : tensor<?x4xf32>
  %ids, %v = moe.topk %p {k = 2 : i64} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  %n = moe.normalize %v : tensor<?x2xf32>
  %w = moe.scale %n {factor = 1.0 : f32} : tensor<?x2xf32>
  %c, %off, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
  %xs = moe.permute %x, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  %g = moe.weight ["g"] from ["m.safetensors"] : tensor<4x8x16xf32>
  %d = moe.weight ["d"] from ["m.safetensors"] : tensor<4x16x8xf32>
  %ys = moe.expert_ffn %xs, %off gate(%g) up(%g) down(%d) {activation = #moe.activation<silu>} : (tensor<?x16xf32>, tensor<5xi32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x16x8xf32>) -> tensor<?x16xf32>
  %y = moe.combine %ys, %rows, %w : (tensor<?x16xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}
