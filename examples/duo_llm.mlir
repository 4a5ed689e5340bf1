// Duo-LLM: each FFN layer holds a small and a big module and a token goes through one of them or skips the layer (a router
// over 3 choices, top-1, the chosen module's output as it is). Experts of unequal width: small (32) and big (128) stacked at 128,
// the small one's padding never read; skip is a null expert (id 2), whose token adds nothing (the residual carries it).
module attributes {moe.weight_root = "."} {
  func.func @layer_0(%x: tensor<?x64xf32>) -> tensor<?x64xf32> attributes {moe.layer = 0 : i64} {
    %wg = moe.weight ["model.layers.0.mlp.router.weight"] from ["model.safetensors"] : tensor<3x64xf32>
    %logits = moe.router_linear %x, %wg : (tensor<?x64xf32>, tensor<3x64xf32>) -> tensor<?x3xf32>
    %p = moe.softmax %logits : tensor<?x3xf32>
    %ids, %vals = moe.topk %p {k = 1 : i64} : tensor<?x3xf32> -> tensor<?x1xi32>, tensor<?x1xf32>
    %one = moe.normalize %vals : tensor<?x1xf32>
    %ids_ffn, %w = moe.drop_null_experts %ids, %one {num_experts = 2 : i64} : tensor<?x1xi32>, tensor<?x1xf32>
    %counts, %offsets, %rows = moe.dispatch %ids_ffn {num_experts = 2 : i64} : tensor<?x1xi32> -> tensor<2xi32>, tensor<3xi32>, tensor<?xi32>
    %xs = moe.permute %x, %rows, %w : (tensor<?x64xf32>, tensor<?xi32>, tensor<?x1xf32>) -> tensor<?x64xf32>
    %w_gate = moe.weight ["model.layers.0.mlp.small.gate_proj.weight", "model.layers.0.mlp.big.gate_proj.weight"] from ["model.safetensors"] : tensor<2x128x64xf32>
    %w_up = moe.weight ["model.layers.0.mlp.small.up_proj.weight", "model.layers.0.mlp.big.up_proj.weight"] from ["model.safetensors"] : tensor<2x128x64xf32>
    %w_down = moe.weight ["model.layers.0.mlp.small.down_proj.weight", "model.layers.0.mlp.big.down_proj.weight"] from ["model.safetensors"] : tensor<2x64x128xf32>
    %ys = moe.expert_ffn %xs, %offsets gate(%w_gate) up(%w_up) down(%w_down) {activation = #moe.activation<silu>, widths = array<i64: 32, 128>} : (tensor<?x64xf32>, tensor<3xi32>, tensor<2x128x64xf32>, tensor<2x128x64xf32>, tensor<2x64x128xf32>) -> tensor<?x64xf32>
    %y = moe.combine %ys, %rows, %w : (tensor<?x64xf32>, tensor<?xi32>, tensor<?x1xf32>) -> tensor<?x64xf32>
    return %y : tensor<?x64xf32>
  }
}
