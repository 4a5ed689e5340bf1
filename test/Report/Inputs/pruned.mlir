// original.mlir with expert 1 pruned: the remaining experts 0, 2 and 3 are
// experts 0, 1 and 2 here (moe.expert_origin), with their router rows, in
// pruned.safetensors: 312 parameters, 1248 bytes.
module {
  func.func @layer_0(%x: tensor<?x8xf32>) -> tensor<?x8xf32> attributes {moe.layer = 0 : i64, moe.expert_origin = array<i64: 0, 2, 3>} {
    %wg = moe.weight ["router"] from ["pruned.safetensors"] : tensor<3x8xf32>
    %logits = moe.router_linear %x, %wg : (tensor<?x8xf32>, tensor<3x8xf32>) -> tensor<?x3xf32>
    %p = moe.softmax %logits : tensor<?x3xf32>
    %ids, %vals = moe.topk %p {k = 2 : i64} : tensor<?x3xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    %w = moe.normalize %vals : tensor<?x2xf32>
    %counts, %offsets, %rows = moe.dispatch %ids {num_experts = 3 : i64} : tensor<?x2xi32> -> tensor<3xi32>, tensor<4xi32>, tensor<?xi32>
    %xs = moe.permute %x, %rows, %w : (tensor<?x8xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x8xf32>
    %gate = moe.weight ["gate"] from ["pruned.safetensors"] : tensor<3x4x8xf32>
    %up = moe.weight ["up"] from ["pruned.safetensors"] : tensor<3x4x8xf32>
    %down = moe.weight ["down"] from ["pruned.safetensors"] : tensor<3x8x4xf32>
    %ys = moe.expert_ffn %xs, %offsets gate(%gate) up(%up) down(%down) {activation = #moe.activation<silu>} : (tensor<?x8xf32>, tensor<4xi32>, tensor<3x4x8xf32>, tensor<3x4x8xf32>, tensor<3x8x4xf32>) -> tensor<?x8xf32>
    %y = moe.combine %ys, %rows, %w : (tensor<?x8xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x8xf32>
    return %y : tensor<?x8xf32>
  }
}
