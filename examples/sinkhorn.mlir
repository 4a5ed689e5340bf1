// Balanced assignment (S-BASE / Megatron-LM Sinkhorn routing): 4 Sinkhorn iterations rebalance the batch's router logits
// so that every expert's column sums to T/E, the top-2 of each token is taken on the balanced scores, and its weights
// are the unbalanced softmax probabilities of the chosen experts, renormalised. Cross-token: the routing kernel's last
// block runs the iterations over the whole batch, then the top-2 per token, then the dispatch plan.
module attributes {moe.weight_root = "."} {
  func.func @layer_0(%x: tensor<?x64xbf16>) -> tensor<?x64xbf16> attributes {moe.layer = 0 : i64} {
    %wg = moe.weight ["model.layers.0.mlp.gate.weight"] from ["model.safetensors"] : tensor<4x64xbf16>
    %logits = moe.router_linear %x, %wg : (tensor<?x64xbf16>, tensor<4x64xbf16>) -> tensor<?x4xf32>
    %p = moe.softmax %logits : tensor<?x4xf32>
    %balanced = moe.sinkhorn %logits {iterations = 4 : i64, epsilon = 1.0 : f32} : tensor<?x4xf32>
    %ids, %b = moe.topk %balanced {k = 2 : i64} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    %g = moe.gather_scores %p, %ids : tensor<?x4xf32>, tensor<?x2xi32> -> tensor<?x2xf32>
    %w = moe.normalize %g : tensor<?x2xf32>
    %counts, %offsets, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
    %xs = moe.permute %x, %rows, %w : (tensor<?x64xbf16>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x64xbf16>
    %w_gate = moe.weight ["model.layers.0.mlp.experts.0.gate_proj.weight", "model.layers.0.mlp.experts.1.gate_proj.weight", "model.layers.0.mlp.experts.2.gate_proj.weight", "model.layers.0.mlp.experts.3.gate_proj.weight"] from ["model.safetensors"] : tensor<4x128x64xbf16>
    %w_up = moe.weight ["model.layers.0.mlp.experts.0.up_proj.weight", "model.layers.0.mlp.experts.1.up_proj.weight", "model.layers.0.mlp.experts.2.up_proj.weight", "model.layers.0.mlp.experts.3.up_proj.weight"] from ["model.safetensors"] : tensor<4x128x64xbf16>
    %w_down = moe.weight ["model.layers.0.mlp.experts.0.down_proj.weight", "model.layers.0.mlp.experts.1.down_proj.weight", "model.layers.0.mlp.experts.2.down_proj.weight", "model.layers.0.mlp.experts.3.down_proj.weight"] from ["model.safetensors"] : tensor<4x64x128xbf16>
    %ys = moe.expert_ffn %xs, %offsets gate(%w_gate) up(%w_up) down(%w_down) {activation = #moe.activation<silu>} : (tensor<?x64xbf16>, tensor<5xi32>, tensor<4x128x64xbf16>, tensor<4x128x64xbf16>, tensor<4x64x128xbf16>) -> tensor<?x64xbf16>
    %y = moe.combine %ys, %rows, %w : (tensor<?x64xbf16>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x64xbf16>
    return %y : tensor<?x64xbf16>
  }
}
