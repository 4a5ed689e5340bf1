// original.mlir with experts 0 and 2, 1 and 3 merged: the router still
// scores 4 slots, moe.remap_experts maps them onto the 2 merged experts of
// merged.safetensors: 32 + 3 * 64 = 224 parameters, 896 bytes.
module {
  func.func @layer_0(%x: tensor<?x8xf32>) -> tensor<?x8xf32> attributes {moe.layer = 0 : i64} {
    %wg = moe.weight ["router"] from ["merged.safetensors"] : tensor<4x8xf32>
    %logits = moe.router_linear %x, %wg : (tensor<?x8xf32>, tensor<4x8xf32>) -> tensor<?x4xf32>
    %p = moe.softmax %logits : tensor<?x4xf32>
    %ids, %vals = moe.topk %p {k = 2 : i64} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    %w = moe.normalize %vals : tensor<?x2xf32>
    %mids, %mw = moe.remap_experts %ids, %w mapping = [0, 1, 0, 1] : tensor<?x2xi32>, tensor<?x2xf32>
    %counts, %offsets, %rows = moe.dispatch %mids {num_experts = 2 : i64} : tensor<?x2xi32> -> tensor<2xi32>, tensor<3xi32>, tensor<?xi32>
    %xs = moe.permute %x, %rows, %mw : (tensor<?x8xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x8xf32>
    %gate = moe.weight ["gate"] from ["merged.safetensors"] : tensor<2x4x8xf32>
    %up = moe.weight ["up"] from ["merged.safetensors"] : tensor<2x4x8xf32>
    %down = moe.weight ["down"] from ["merged.safetensors"] : tensor<2x8x4xf32>
    %ys = moe.expert_ffn %xs, %offsets gate(%gate) up(%up) down(%down) {activation = #moe.activation<silu>} : (tensor<?x8xf32>, tensor<3xi32>, tensor<2x4x8xf32>, tensor<2x4x8xf32>, tensor<2x8x4xf32>) -> tensor<?x8xf32>
    %y = moe.combine %ys, %rows, %mw : (tensor<?x8xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x8xf32>
    return %y : tensor<?x8xf32>
  }
}
