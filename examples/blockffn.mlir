// BlockFFN: ReLU router then RMSNorm; every expert with a non-zero score is active (threshold selection, no top-k).
// Experts are non-gated: E_i(x) = down_i(silu(up_i x)), weighted by the router score.
module attributes {moe.weight_root = "."} {
  func.func @layer_0(%x: tensor<?x64xbf16>) -> tensor<?x64xbf16> attributes {moe.layer = 0 : i64} {
    %wg = moe.weight ["model.layers.0.mlp.gate.weight"] from ["model.safetensors"] : tensor<4x64xbf16>
    %logits = moe.router_linear %x, %wg : (tensor<?x64xbf16>, tensor<4x64xbf16>) -> tensor<?x4xf32>
    %r = moe.relu %logits : tensor<?x4xf32>
    %g = moe.weight ["model.layers.0.mlp.router_norm.weight"] from ["model.safetensors"] : tensor<4xf32>
    %s = moe.rms_norm %r weight %g : tensor<4xf32> {epsilon = 9.99999997E-7 : f32} : tensor<?x4xf32>
    %ids, %w = moe.threshold %s {max_k = 4 : i64, threshold = 0.000000e+00 : f32} : tensor<?x4xf32> -> tensor<?x4xi32>, tensor<?x4xf32>
    %counts, %offsets, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x4xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
    %xs = moe.permute %x, %rows, %w : (tensor<?x64xbf16>, tensor<?xi32>, tensor<?x4xf32>) -> tensor<?x64xbf16>
    %w_up = moe.weight ["model.layers.0.mlp.experts.0.up_proj.weight", "model.layers.0.mlp.experts.1.up_proj.weight", "model.layers.0.mlp.experts.2.up_proj.weight", "model.layers.0.mlp.experts.3.up_proj.weight"] from ["model.safetensors"] : tensor<4x128x64xbf16>
    %w_down = moe.weight ["model.layers.0.mlp.experts.0.down_proj.weight", "model.layers.0.mlp.experts.1.down_proj.weight", "model.layers.0.mlp.experts.2.down_proj.weight", "model.layers.0.mlp.experts.3.down_proj.weight"] from ["model.safetensors"] : tensor<4x64x128xbf16>
    %ys = moe.expert_ffn %xs, %offsets non_gated up(%w_up) down(%w_down) {activation = #moe.activation<silu>} : (tensor<?x64xbf16>, tensor<5xi32>, tensor<4x128x64xbf16>, tensor<4x64x128xbf16>) -> tensor<?x64xbf16>
    %y = moe.combine %ys, %rows, %w : (tensor<?x64xbf16>, tensor<?xi32>, tensor<?x4xf32>) -> tensor<?x64xbf16>
    return %y : tensor<?x64xbf16>
  }
}
