// Issue 13: one rank's share (--moe-shard-experts) fused into the routing
// kernel: router experts 1, 4 and 6 are dropped (served by other ranks),
// the others renumbered to 4 local experts; replicated experts keep a
// token's slot only when its row mod replica_count is this rank's
// replica_index (row-dependent, so the kernel's token index matters).
// ROUTERS: 1
module attributes {moe.weight_root = "."} {
  func.func @layer_0(%x: tensor<?x64xf32>) -> tensor<?x64xf32> attributes {moe.layer = 0 : i64} {
    %wg = moe.weight ["router.weight"] from ["model.safetensors"] : tensor<8x64xf32>
    %l = moe.router_linear %x, %wg : (tensor<?x64xf32>, tensor<8x64xf32>) -> tensor<?x8xf32>
    %p = moe.softmax %l : tensor<?x8xf32>
    %ids, %v = moe.topk %p {k = 4 : i64} : tensor<?x8xf32> -> tensor<?x4xi32>, tensor<?x4xf32>
    %w = moe.normalize %v : tensor<?x4xf32>
    %mids, %mw = moe.remap_experts %ids, %w mapping = [0, -1, 1, 2, -1, 1, -1, 3] {replica_count = array<i64: 1, 3, 2, 1, 2, 2, 1, 2>, replica_index = array<i64: 0, 2, 1, 0, 0, 1, 0, 1>} : tensor<?x4xi32>, tensor<?x4xf32>
    %cnt, %off, %rows = moe.dispatch %mids {num_experts = 4 : i64} : tensor<?x4xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
    %g = moe.weight ["e.0.gate", "e.1.gate", "e.2.gate", "e.3.gate"] from ["model.safetensors"] : tensor<4x32x64xf32>
    %u = moe.weight ["e.0.up", "e.1.up", "e.2.up", "e.3.up"] from ["model.safetensors"] : tensor<4x32x64xf32>
    %d = moe.weight ["e.0.down", "e.1.down", "e.2.down", "e.3.down"] from ["model.safetensors"] : tensor<4x64x32xf32>
    %xs = moe.permute %x, %rows, %mw : (tensor<?x64xf32>, tensor<?xi32>, tensor<?x4xf32>) -> tensor<?x64xf32>
    %ys = moe.expert_ffn %xs, %off gate(%g) up(%u) down(%d) {activation = #moe.activation<silu>} : (tensor<?x64xf32>, tensor<5xi32>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>) -> tensor<?x64xf32>
    %y = moe.combine %ys, %rows, %mw : (tensor<?x64xf32>, tensor<?xi32>, tensor<?x4xf32>) -> tensor<?x64xf32>
    return %y : tensor<?x64xf32>
  }
}
