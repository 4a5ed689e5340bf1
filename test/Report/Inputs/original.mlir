// Four experts, top-2 softmax routing, f32 weights from weights.safetensors
// (written by make_weights.py): 416 parameters, 1664 bytes.
module {
  func.func @layer_0(%x: tensor<?x8xf32>) -> tensor<?x8xf32> attributes {moe.layer = 0 : i64} {
    %wg = moe.weight ["router"] from ["weights.safetensors"] : tensor<4x8xf32>
    %logits = moe.router_linear %x, %wg : (tensor<?x8xf32>, tensor<4x8xf32>) -> tensor<?x4xf32>
    %p = moe.softmax %logits : tensor<?x4xf32>
    %ids, %vals = moe.topk %p {k = 2 : i64} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    %w = moe.normalize %vals : tensor<?x2xf32>
    %counts, %offsets, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
    %xs = moe.permute %x, %rows, %w : (tensor<?x8xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x8xf32>
    %gate = moe.weight ["gate"] from ["weights.safetensors"] : tensor<4x4x8xf32>
    %up = moe.weight ["up"] from ["weights.safetensors"] : tensor<4x4x8xf32>
    %down = moe.weight ["down"] from ["weights.safetensors"] : tensor<4x8x4xf32>
    %ys = moe.expert_ffn %xs, %offsets gate(%gate) up(%up) down(%down) {activation = #moe.activation<silu>} : (tensor<?x8xf32>, tensor<5xi32>, tensor<4x4x8xf32>, tensor<4x4x8xf32>, tensor<4x8x4xf32>) -> tensor<?x8xf32>
    %y = moe.combine %ys, %rows, %w : (tensor<?x8xf32>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x8xf32>
    return %y : tensor<?x8xf32>
  }
}
