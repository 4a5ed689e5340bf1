// Non-gated experts, bf16 weights stored [in, out] (weight_layout in_out), gelu_tanh with an up bias; top-2; a non-gated
// relu shared expert with biases. Routed width 96 (1.5 grouped tiles), shared width 40.
module attributes {moe.weight_root = "."} {
  func.func @layer_0(%x: tensor<?x64xbf16>) -> tensor<?x64xbf16> attributes {moe.layer = 0 : i64} {
    %wg = moe.weight ["model.layers.0.mlp.gate.weight"] from ["model.safetensors"] : tensor<4x64xbf16>
    %logits = moe.router_linear %x, %wg : (tensor<?x64xbf16>, tensor<4x64xbf16>) -> tensor<?x4xf32>
    %p = moe.softmax %logits : tensor<?x4xf32>
    %ids, %vals = moe.topk %p {k = 2 : i64} : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    %w = moe.normalize %vals : tensor<?x2xf32>
    %counts, %offsets, %rows = moe.dispatch %ids {num_experts = 4 : i64} : tensor<?x2xi32> -> tensor<4xi32>, tensor<5xi32>, tensor<?xi32>
    %xs = moe.permute %x, %rows, %w : (tensor<?x64xbf16>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x64xbf16>
    %w_up = moe.weight ["model.layers.0.mlp.experts.up_proj"] from ["model.safetensors"] : tensor<4x64x96xbf16>
    %b_up = moe.weight ["model.layers.0.mlp.experts.up_proj_bias"] from ["model.safetensors"] : tensor<4x96xbf16>
    %w_down = moe.weight ["model.layers.0.mlp.experts.down_proj"] from ["model.safetensors"] : tensor<4x96x64xbf16>
    %ys = moe.expert_ffn %xs, %offsets non_gated up(%w_up) down(%w_down) up_bias(%b_up) {activation = #moe.activation<gelu_tanh>, weight_layout = #moe.weight_layout<in_out>} : (tensor<?x64xbf16>, tensor<5xi32>, tensor<4x64x96xbf16>, tensor<4x96x64xbf16>, tensor<4x96xbf16>) -> tensor<?x64xbf16>
    %y = moe.combine %ys, %rows, %w : (tensor<?x64xbf16>, tensor<?xi32>, tensor<?x2xf32>) -> tensor<?x64xbf16>
    %s_up = moe.weight ["model.layers.0.mlp.shared_expert.up_proj.weight"] from ["model.safetensors"] : tensor<40x64xbf16>
    %s_ub = moe.weight ["model.layers.0.mlp.shared_expert.up_proj.bias"] from ["model.safetensors"] : tensor<40xbf16>
    %s_down = moe.weight ["model.layers.0.mlp.shared_expert.down_proj.weight"] from ["model.safetensors"] : tensor<64x40xbf16>
    %s_db = moe.weight ["model.layers.0.mlp.shared_expert.down_proj.bias"] from ["model.safetensors"] : tensor<64xbf16>
    %sh = moe.ffn %x non_gated up(%s_up) down(%s_down) up_bias(%s_ub) down_bias(%s_db) {activation = #moe.activation<relu>} : (tensor<?x64xbf16>, tensor<40x64xbf16>, tensor<64x40xbf16>, tensor<40xbf16>, tensor<64xbf16>) -> tensor<?x64xbf16>
    %out = arith.addf %y, %sh : tensor<?x64xbf16>
    return %out : tensor<?x64xbf16>
  }
}
