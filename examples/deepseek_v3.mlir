// DeepSeek-V3: sigmoid scores; the correction bias steers selection only (sum-of-top-2 group score, 1 of 2 groups kept); weights from the unbiased sigmoid, renormalised, x 2.5; a shared expert.
module attributes {moe.weight_root = "."} {
  func.func @layer_0(%x: tensor<?x64xbf16>) -> tensor<?x64xbf16> attributes {moe.layer = 0 : i64} {
    %wg = moe.weight ["model.layers.0.mlp.gate.weight"] from ["model.safetensors"] : tensor<4x64xbf16>
    %logits = moe.router_linear %x, %wg : (tensor<?x64xbf16>, tensor<4x64xbf16>) -> tensor<?x4xf32>
    %bias = moe.weight ["model.layers.0.mlp.gate.e_score_correction_bias"] from ["model.safetensors"] : tensor<4xf32>
    %s = moe.sigmoid %logits : tensor<?x4xf32>
    %c = moe.bias_add %s, %bias : tensor<?x4xf32>, tensor<4xf32>
    %masked = moe.group_limit %c {group_score = #moe.group_score<top2_sum>, keep_groups = 1 : i64, num_groups = 2 : i64} : tensor<?x4xf32>
    %ids, %choice = moe.topk %masked {k = 2 : i64} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    %g = moe.gather_scores %s, %ids : tensor<?x4xf32>, tensor<?x2xi32> -> tensor<?x2xf32>
    %n = moe.normalize %g {epsilon = 9.99999968E-21 : f32} : tensor<?x2xf32>
    %w = moe.scale %n {factor = 2.500000e+00 : f32} : tensor<?x2xf32>
    %counts, %offsets, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
    %xs = moe.permute %x, %rows, %w : (tensor<?x64xbf16>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x64xbf16>
    %w_gate = moe.weight ["model.layers.0.mlp.experts.0.gate_proj.weight", "model.layers.0.mlp.experts.1.gate_proj.weight", "model.layers.0.mlp.experts.2.gate_proj.weight", "model.layers.0.mlp.experts.3.gate_proj.weight"] from ["model.safetensors"] : tensor<4x128x64xbf16>
    %w_up = moe.weight ["model.layers.0.mlp.experts.0.up_proj.weight", "model.layers.0.mlp.experts.1.up_proj.weight", "model.layers.0.mlp.experts.2.up_proj.weight", "model.layers.0.mlp.experts.3.up_proj.weight"] from ["model.safetensors"] : tensor<4x128x64xbf16>
    %w_down = moe.weight ["model.layers.0.mlp.experts.0.down_proj.weight", "model.layers.0.mlp.experts.1.down_proj.weight", "model.layers.0.mlp.experts.2.down_proj.weight", "model.layers.0.mlp.experts.3.down_proj.weight"] from ["model.safetensors"] : tensor<4x64x128xbf16>
    %ys = moe.expert_ffn %xs, %offsets gate(%w_gate) up(%w_up) down(%w_down) {activation = #moe.activation<silu>} : (tensor<?x64xbf16>, tensor<5xi32>, tensor<4x128x64xbf16>, tensor<4x128x64xbf16>, tensor<4x64x128xbf16>) -> tensor<?x64xbf16>
    %y = moe.combine %ys, %rows, %w : (tensor<?x64xbf16>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x64xbf16>
    %s_gate = moe.weight ["model.layers.0.mlp.shared_experts.gate_proj.weight"] from ["model.safetensors"] : tensor<128x64xbf16>
    %s_up = moe.weight ["model.layers.0.mlp.shared_experts.up_proj.weight"] from ["model.safetensors"] : tensor<128x64xbf16>
    %s_down = moe.weight ["model.layers.0.mlp.shared_experts.down_proj.weight"] from ["model.safetensors"] : tensor<64x128xbf16>
    %sh = moe.ffn %x gate(%s_gate) up(%s_up) down(%s_down) {activation = #moe.activation<silu>} : (tensor<?x64xbf16>, tensor<128x64xbf16>, tensor<128x64xbf16>, tensor<64x128xbf16>) -> tensor<?x64xbf16>
    %out = arith.addf %y, %sh : tensor<?x64xbf16>
    return %out : tensor<?x64xbf16>
  }
}
