// Graph of Tokens (similarity-aware routing, Nguyen et al. 2025): each token's softmax router probabilities are mixed
// with those of the tokens it resembles, p'_t = sum_{j <= t} softmax_j(x_t . x_j / 64) p_j (causal: token t mixes with
// tokens 0..t), then the top-2 of the mixed probabilities, renormalised. The tokens of one call are one sequence
// (prefill); a decode step (T = 1) sees no earlier token, so its routing is unmixed (no cache). The routing kernel
// mixes on each token's warp: the lanes split the dots, the warp recomputes the other tokens' probabilities.
module attributes {moe.weight_root = "."} {
  func.func @layer_0(%x: tensor<?x64xbf16>) -> tensor<?x64xbf16> attributes {moe.layer = 0 : i64} {
    %wg = moe.weight ["model.layers.0.mlp.gate.weight"] from ["model.safetensors"] : tensor<4x64xbf16>
    %logits = moe.router_linear %x, %wg : (tensor<?x64xbf16>, tensor<4x64xbf16>) -> tensor<?x4xf32>
    %p = moe.softmax %logits : tensor<?x4xf32>
    %mixed = moe.similarity_mix %x, %p {temperature = 64.0 : f32, causal} : tensor<?x64xbf16>, tensor<?x4xf32>
    %ids, %v = moe.topk %mixed {k = 2 : i64} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    %w = moe.normalize %v : tensor<?x2xf32>
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
