// DeepSeek-V2 (topk_method = group_limited_greedy, n_group = 2, topk_group = 1, routed_scaling_factor = 16): softmax, max-of-group limit, top-k, scaled; 2 shared experts as one FFN.
module attributes {moe.weight_root = "."} {
  func.func @layer_0(%x: tensor<?x64xbf16>) -> tensor<?x64xbf16> attributes {moe.layer = 0 : i64} {
    %wg = moe.weight ["model.layers.0.mlp.gate.weight"] from ["model.safetensors"] : tensor<4x64xbf16>
    %logits = moe.router_linear %x, %wg : (tensor<?x64xbf16>, tensor<4x64xbf16>) -> tensor<?x4xf32>
    %p = moe.softmax %logits : tensor<?x4xf32>
    %masked = moe.group_limit %p {group_score = #moe.group_score<max>, keep_groups = 1 : i64, num_groups = 2 : i64} : tensor<?x4xf32>
    %ids, %vals = moe.topk %masked {k = 2 : i64} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    %w = moe.scale %vals {factor = 1.600000e+01 : f32} : tensor<?x2xf32>
    %counts, %offsets, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
    %xs = moe.permute %x, %rows, %w : (tensor<?x64xbf16>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x64xbf16>
    %w_gate = moe.weight ["model.layers.0.mlp.experts.0.gate_proj.weight", "model.layers.0.mlp.experts.1.gate_proj.weight", "model.layers.0.mlp.experts.2.gate_proj.weight", "model.layers.0.mlp.experts.3.gate_proj.weight"] from ["model.safetensors"] : tensor<4x128x64xbf16>
    %w_up = moe.weight ["model.layers.0.mlp.experts.0.up_proj.weight", "model.layers.0.mlp.experts.1.up_proj.weight", "model.layers.0.mlp.experts.2.up_proj.weight", "model.layers.0.mlp.experts.3.up_proj.weight"] from ["model.safetensors"] : tensor<4x128x64xbf16>
    %w_down = moe.weight ["model.layers.0.mlp.experts.0.down_proj.weight", "model.layers.0.mlp.experts.1.down_proj.weight", "model.layers.0.mlp.experts.2.down_proj.weight", "model.layers.0.mlp.experts.3.down_proj.weight"] from ["model.safetensors"] : tensor<4x64x128xbf16>
    %ys = moe.expert_ffn %xs, %offsets gate(%w_gate) up(%w_up) down(%w_down) {activation = #moe.activation<silu>} : (tensor<?x64xbf16>, tensor<5xi32>, tensor<4x128x64xbf16>, tensor<4x128x64xbf16>, tensor<4x64x128xbf16>) -> tensor<?x64xbf16>
    %y = moe.combine %ys, %rows, %w : (tensor<?x64xbf16>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x64xbf16>
    %s_gate = moe.weight ["model.layers.0.mlp.shared_experts.gate_proj.weight"] from ["model.safetensors"] : tensor<256x64xbf16>
    %s_up = moe.weight ["model.layers.0.mlp.shared_experts.up_proj.weight"] from ["model.safetensors"] : tensor<256x64xbf16>
    %s_down = moe.weight ["model.layers.0.mlp.shared_experts.down_proj.weight"] from ["model.safetensors"] : tensor<64x256xbf16>
    %sh = moe.ffn %x gate(%s_gate) up(%s_up) down(%s_down) {activation = #moe.activation<silu>} : (tensor<?x64xbf16>, tensor<256x64xbf16>, tensor<256x64xbf16>, tensor<64x256xbf16>) -> tensor<?x64xbf16>
    %out = arith.addf %y, %sh : tensor<?x64xbf16>
    return %out : tensor<?x64xbf16>
  }
}
