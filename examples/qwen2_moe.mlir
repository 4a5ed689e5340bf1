// Qwen2-MoE (norm_topk_prob = false): softmax, top-k, no renormalisation; a shared expert scaled by sigmoid(x w_sg).
module attributes {moe.weight_root = "."} {
  func.func @layer_0(%x: tensor<?x64xbf16>) -> tensor<?x64xbf16> attributes {moe.layer = 0 : i64} {
    %wg = moe.weight ["model.layers.0.mlp.gate.weight"] from ["model.safetensors"] : tensor<4x64xbf16>
    %logits = moe.router_linear %x, %wg : (tensor<?x64xbf16>, tensor<4x64xbf16>) -> tensor<?x4xf32>
    %p = moe.softmax %logits : tensor<?x4xf32>
    %ids, %vals = moe.topk %p {k = 2 : i64} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    %counts, %offsets, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
    %xs = moe.permute %x, %rows, %vals : (tensor<?x64xbf16>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x64xbf16>
    %w_gate = moe.weight ["model.layers.0.mlp.experts.0.gate_proj.weight", "model.layers.0.mlp.experts.1.gate_proj.weight", "model.layers.0.mlp.experts.2.gate_proj.weight", "model.layers.0.mlp.experts.3.gate_proj.weight"] from ["model.safetensors"] : tensor<4x128x64xbf16>
    %w_up = moe.weight ["model.layers.0.mlp.experts.0.up_proj.weight", "model.layers.0.mlp.experts.1.up_proj.weight", "model.layers.0.mlp.experts.2.up_proj.weight", "model.layers.0.mlp.experts.3.up_proj.weight"] from ["model.safetensors"] : tensor<4x128x64xbf16>
    %w_down = moe.weight ["model.layers.0.mlp.experts.0.down_proj.weight", "model.layers.0.mlp.experts.1.down_proj.weight", "model.layers.0.mlp.experts.2.down_proj.weight", "model.layers.0.mlp.experts.3.down_proj.weight"] from ["model.safetensors"] : tensor<4x64x128xbf16>
    %ys = moe.expert_ffn %xs, %offsets gate(%w_gate) up(%w_up) down(%w_down) {activation = #moe.activation<silu>} : (tensor<?x64xbf16>, tensor<5xi32>, tensor<4x128x64xbf16>, tensor<4x128x64xbf16>, tensor<4x64x128xbf16>) -> tensor<?x64xbf16>
    %y = moe.combine %ys, %rows, %vals : (tensor<?x64xbf16>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x64xbf16>
    %s_gate = moe.weight ["model.layers.0.mlp.shared_expert.gate_proj.weight"] from ["model.safetensors"] : tensor<256x64xbf16>
    %s_up = moe.weight ["model.layers.0.mlp.shared_expert.up_proj.weight"] from ["model.safetensors"] : tensor<256x64xbf16>
    %s_down = moe.weight ["model.layers.0.mlp.shared_expert.down_proj.weight"] from ["model.safetensors"] : tensor<64x256xbf16>
    %sh = moe.ffn %x gate(%s_gate) up(%s_up) down(%s_down) {activation = #moe.activation<silu>} : (tensor<?x64xbf16>, tensor<256x64xbf16>, tensor<256x64xbf16>, tensor<64x256xbf16>) -> tensor<?x64xbf16>
    %s_gw = moe.weight ["model.layers.0.mlp.shared_expert_gate.weight"] from ["model.safetensors"] : tensor<1x64xbf16>
    %sg_logit = moe.router_linear %x, %s_gw : (tensor<?x64xbf16>, tensor<1x64xbf16>) -> tensor<?x1xf32>
    %sg = moe.sigmoid %sg_logit : tensor<?x1xf32>
    %sh_gated = moe.row_scale %sh, %sg : (tensor<?x64xbf16>, tensor<?x1xf32>) -> tensor<?x64xbf16>
    %out = arith.addf %y, %sh_gated : tensor<?x64xbf16>
    return %out : tensor<?x64xbf16>
  }
}
